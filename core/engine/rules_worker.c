/*
 * rules_worker.c — the worker side of rule generations: each worker
 * thread's Lua state, loading the files of a generation into it, adopting
 * new generations between requests, and the cache of hook function refs
 * (see rules.h).
 *
 * Why files are kept by path and hash: adopting a generation recompiles
 * only the files whose source changed, so a reload of one campaign costs
 * one compile per worker, not five hundred.
 */
#include "engine/rules.h"
#include "engine/content.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "lua/luavm.h"
#include <event2/event.h>
#include <pthread.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static __thread struct rules_worker *tl_rw;

/* ===================================================================== */
/* workers                                                               */

struct wfile {
    char *path;
    uint32_t hash;
    int ref;   /* registry ref of the table the file returned */
    int seen;
    struct content_prog **progs; /* its variants' content, [(variant * nloc + locale) * 2 + msgpack] */
    int nprogs;
    int nloc;  /* declared locales (1 when none) */
};

static void wfile_free(lua_State *L, struct wfile *w)
{
    luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
    for (int i = 0; i < w->nprogs; i++)
        content_free(w->progs[i]);
    free(w->progs);
    free(w->path);
}

/* Compile the content of every variant of the campaign table on top of the
 * stack, in both wire forms and for each of its declared `locales` (every
 * localized value resolved along that locale's chain, content.h), as the
 * file returned it: before any of its hooks has run.  A NULL entry (out
 * of memory) makes that variant fail to render.  Stack-neutral. */
static struct content_prog **compile_variants(lua_State *L, int *n, int *nloc)
{
    *n = 0;
    *nloc = 1;
    int top = lua_gettop(L);
    char *locales[RULES_MAX_LOCALES];
    int nl = 0;
    lua_pushliteral(L, "locales"); /* raw: C reads file tables unarmed (luavm.h) */
    lua_rawget(L, -2);
    for (int i = 1; lua_istable(L, -1) && i <= (int)lua_objlen(L, -1) && nl < RULES_MAX_LOCALES; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) == LUA_TSTRING)
            locales[nl++] = rules_xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    int per = nl ? nl : 1;
    lua_pushliteral(L, "variants");
    lua_rawget(L, -2);
    int nv = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    struct content_prog **progs = nv > 0 ? calloc((size_t)nv * (size_t)per * 2, sizeof *progs) : NULL;
    for (int v = 0; progs && v < nv; v++) {
        lua_rawgeti(L, top + 1, v + 1);
        if (lua_istable(L, -1)) {
            lua_pushliteral(L, "content");
            lua_rawget(L, -2);
        }
        int content = lua_gettop(L);
        for (int li = 0; li < per; li++) {
            if (nl)
                content_push_localized(L, content, locales, nl, li);
            for (int mp = 0; mp < 2; mp++)
                progs[(v * per + li) * 2 + mp] = content_compile(L, -1, mp);
            lua_settop(L, content);
        }
        lua_settop(L, top + 1);
    }
    if (progs) {
        *n = nv * per * 2;
        *nloc = per;
    }
    for (int i = 0; i < nl; i++)
        free(locales[i]);
    lua_settop(L, top);
    return progs;
}

/* The threads' own workers (rules_worker_start), for rules_workers_live():
 * which generation every one of them has adopted. */
#define LIVE_MAX 64
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rules_worker *live[LIVE_MAX];
static int nlive;

static void live_add(struct rules_worker *rw)
{
    pthread_mutex_lock(&live_mu);
    if (nlive < LIVE_MAX)
        live[nlive++] = rw;
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(struct rules_worker *rw)
{
    pthread_mutex_lock(&live_mu);
    for (int i = 0; i < nlive; i++)
        if (live[i] == rw) {
            live[i] = live[--nlive];
            break;
        }
    pthread_mutex_unlock(&live_mu);
}

void rules_worker_on_demand(struct rules_worker *rw) { live_remove(rw); }

uint64_t rules_workers_live(int *nworkers)
{
    uint64_t min = UINT64_MAX;
    pthread_mutex_lock(&live_mu);
    for (int i = 0; i < nlive; i++) {
        uint64_t s = __atomic_load_n(&live[i]->live_seq, __ATOMIC_ACQUIRE);
        if (s < min)
            min = s;
    }
    if (nworkers)
        *nworkers = nlive;
    pthread_mutex_unlock(&live_mu);
    return nlive ? min : 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rules_worker_refresh(arg);
}

int rules_worker_start(struct event_base *base, struct rules_worker **out)
{
    struct rules_worker *rw = calloc(1, sizeof *rw);
    if (!rw)
        return ERR_NOMEM;
    char lib_dir[4096];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", g_app->cfg.rules_dir);
    struct luavm_opts o = rules_vm_opts(&g_app->cfg, lib_dir);
    if (luavm_new(&o, &rw->vm)) {
        free(rw);
        return ERR_NOMEM;
    }
    tl_rw = rw;
    rules_worker_refresh(rw);
    live_add(rw);
    rw->tick = event_new(base, -1, EV_PERSIST, on_tick, rw);
    struct timeval tv = { 0, 250000 };
    event_add(rw->tick, &tv);
    *out = rw;
    return 0;
}

void rules_worker_stop(struct rules_worker *rw)
{
    if (!rw)
        return;
    live_remove(rw);
    if (rw->tick)
        event_free(rw->tick);
    rules_gen_release(rw->gen);
    for (int i = 0; i < rw->nwfiles; i++)
        wfile_free(luavm_state(rw->vm), &rw->wfiles[i]);
    free(rw->wfiles);
    free(rw->refs);
    free(rw->chan_refs);
    free(rw->content);
    free(rw->hook_refs); /* the refs go with the state */
    free(rw->hook_true);
    free(rw->chan_hook_refs);
    if (rw->scratch_free)
        rw->scratch_free(rw->scratch);
    luavm_free(rw->vm);
    if (tl_rw == rw) /* a simulation's worker is not the thread's own */
        tl_rw = NULL;
    free(rw);
}

struct rules_worker *rules_worker_self(void) { return tl_rw; }

static int wfile_load(struct rules_worker *rw, const struct rules_file *f, struct rules_content *rc)
{
    for (int i = 0; i < rw->nwfiles; i++) {
        struct wfile *w = &rw->wfiles[i];
        if (!strcmp(w->path, f->path) && w->hash == f->hash) {
            w->seen = 1;
            if (rc)
                *rc = (struct rules_content){ w->progs, w->nprogs, w->nloc };
            return w->ref;
        }
    }
    lua_State *L = luavm_state(rw->vm);
    char err[512];
    int ref = LUA_NOREF, np = 0, nloc = 1;
    struct content_prog **cp = NULL;
    rw->ncompiled++;
    if (luavm_load_chunk(rw->vm, f->path, f->source, f->source_len, err, sizeof err) == 0) {
        if (lua_istable(L, -1)) {
            if (rc) /* campaigns only: a plugin's table has no variants */
                cp = compile_variants(L, &np, &nloc);
            ref = luaL_ref(L, LUA_REGISTRYINDEX);
        } else {
            lua_pop(L, 1);
        }
    } else {
        log_warn("worker could not load a validated file", "file=\"%s\" error=\"%s\"", f->path, err);
    }
    if (rw->nwfiles == rw->capwfiles) {
        rw->capwfiles = rw->capwfiles ? rw->capwfiles * 2 : 64;
        rw->wfiles = realloc(rw->wfiles, (size_t)rw->capwfiles * sizeof *rw->wfiles);
        if (!rw->wfiles)
            abort();
    }
    rw->wfiles[rw->nwfiles++] = (struct wfile){ rules_xstrdup(f->path), f->hash, ref, 1, cp, np, nloc };
    if (rc)
        *rc = (struct rules_content){ cp, np, nloc };
    return ref;
}

/* The hook function refs of every campaign and channel of `g` (hooks.h), so
 * a hook call is one registry read, no look-up by name; the previous
 * generation's are released. */
static void cache_hooks(struct rules_worker *rw, const struct rules_gen *g, const int *refs,
                        const int *crefs)
{
    lua_State *L = luavm_state(rw->vm);
    for (int i = 0; rw->gen && rw->hook_refs && i < rw->gen->ncamps; i++)
        hooks_refs_release(L, rw->hook_refs + (size_t)i * HOOKS_N);
    for (int i = 0; rw->gen && rw->chan_hook_refs && i < rw->gen->nchans; i++)
        hooks_refs_release(L, rw->chan_hook_refs + (size_t)i * HOOKS_N);
    free(rw->hook_refs);
    free(rw->chan_hook_refs);
    rw->hook_refs = malloc(sizeof(int) * HOOKS_N * (size_t)(g->ncamps + 1));
    rw->chan_hook_refs = malloc(sizeof(int) * HOOKS_N * (size_t)(g->nchans + 1));
    if (!rw->hook_refs || !rw->chan_hook_refs)
        abort();
    free(rw->hook_true);
    if (!(rw->hook_true = calloc((size_t)g->ncamps + 1, 1)))
        abort();
    for (int i = 0; i < g->ncamps; i++) {
        int *h = rw->hook_refs + (size_t)i * HOOKS_N;
        hooks_refs_resolve(L, HOOKS_CAMPAIGN, refs[i], h);
        if (luavm_fn_returns_true(rw->vm, h[HOOKS_ELIGIBLE]))
            rw->hook_true[i] |= HOOKS_BIT(HOOKS_ELIGIBLE);
    }
    for (int i = 0; i < g->nchans; i++)
        hooks_refs_resolve(L, HOOKS_CHANNEL, crefs[i], rw->chan_hook_refs + (size_t)i * HOOKS_N);
}

void rules_worker_refresh(struct rules_worker *rw)
{
    uint64_t seq = rules_gen_latest_seq();
    if (rw->gen && rw->gen->seq == seq)
        return;
    struct rules_gen *g = rules_gen_acquire();
    if (!g)
        return;
    if (rw->gen == g) {
        rules_gen_release(g);
        return;
    }
    rules_worker_adopt(rw, g);
}

void rules_worker_adopt(struct rules_worker *rw, struct rules_gen *g)
{
    uint64_t t0 = clock_mono_ns();
    rw->ncompiled = 0;
    for (int i = 0; i < rw->nwfiles; i++)
        rw->wfiles[i].seen = 0;
    if (rw->gen && rw->lib_hash != g->lib_hash)
        luavm_clear_modules(rw->vm); /* files reload (their hash mixes lib's); modules must too */
    rw->lib_hash = g->lib_hash;
    int *refs = malloc(sizeof(int) * (size_t)(g->ncamps + 1));
    int *crefs = malloc(sizeof(int) * (size_t)(g->nchans + 1));
    struct rules_content *content = malloc(sizeof *content * (size_t)(g->ncamps + 1));
    if (!refs || !crefs || !content)
        abort();
    for (int i = 0; i < g->nchans; i++)
        crefs[i] = wfile_load(rw, &g->files[g->chans[i].file], NULL);
    for (int i = 0; i < g->ncamps; i++)
        refs[i] = wfile_load(rw, &g->files[g->camps[i].file], &content[i]);
    cache_hooks(rw, g, refs, crefs);
    lua_State *L = luavm_state(rw->vm);
    /* drop files no longer live */
    int n = 0;
    for (int i = 0; i < rw->nwfiles; i++) {
        if (rw->wfiles[i].seen) {
            rw->wfiles[n++] = rw->wfiles[i];
        } else {
            wfile_free(L, &rw->wfiles[i]);
        }
    }
    rw->nwfiles = n;
    free(rw->refs);
    free(rw->chan_refs);
    free(rw->content);
    rw->refs = refs;
    rw->chan_refs = crefs;
    rw->content = content;
    rules_gen_release(rw->gen);
    rw->gen = g;
    __atomic_store_n(&rw->live_seq, g->seq, __ATOMIC_RELEASE);
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (!rw->sim)
        log_info("worker adopted rules", "generation=%llu compiled=%d ms=%.1f lua_kb=%zu",
             (unsigned long long)g->seq, rw->ncompiled,
             (double)(clock_mono_ns() - t0) / 1e6, luavm_mem_used(rw->vm) / 1024);
}

