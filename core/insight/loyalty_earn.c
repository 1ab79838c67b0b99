/* loyalty_earn.c — earn rules on ingested events (see loyalty_earn.h). */
#include "insight/loyalty_earn.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/loyalty_rules.h"
#include "lua/luavm.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long g_points, g_entries, g_errors;

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_printf(out, "# HELP promod_loyalty_earn_points_total Points awarded by earn rules.\n"
                    "# TYPE promod_loyalty_earn_points_total counter\n"
                    "promod_loyalty_earn_points_total %ld\n"
                    "# HELP promod_loyalty_earn_entries_total Earn entries written by earn rules.\n"
                    "# TYPE promod_loyalty_earn_entries_total counter\n"
                    "promod_loyalty_earn_entries_total %ld\n"
                    "# HELP promod_loyalty_earn_errors_total Earn rule calls that failed (error, budget, bad result).\n"
                    "# TYPE promod_loyalty_earn_errors_total counter\n"
                    "promod_loyalty_earn_errors_total %ld\n",
               __atomic_load_n(&g_points, __ATOMIC_RELAXED), __atomic_load_n(&g_entries, __ATOMIC_RELAXED),
               __atomic_load_n(&g_errors, __ATOMIC_RELAXED));
}

void loyalty_earn_metrics_init(void) { metrics_register(collector, NULL); }

/* --- the thread's compiled rules ------------------------------------------ */

struct tstate {
    struct luavm *vm;
    uint64_t seq;
    int *refs;     /* earn function per file (LUA_NOREF: none) */
    int nrefs;
};

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void tstate_free(void *p)
{
    struct tstate *s = p;
    if (!s)
        return;
    if (s->vm)
        luavm_free(s->vm);
    free(s->refs);
    free(s);
}

static void make_key(void) { pthread_key_create(&g_key, tstate_free); }

static struct tstate *tstate_for(const struct loyalty_rules_gen *g)
{
    pthread_once(&g_once, make_key);
    struct tstate *s = pthread_getspecific(g_key);
    if (s && s->seq == g->seq)
        return s;
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return NULL;
        pthread_setspecific(g_key, s);
    }
    if (s->vm)
        luavm_free(s->vm);
    free(s->refs);
    s->vm = NULL;
    s->refs = NULL;
    s->nrefs = 0;
    char lib[1100];
    snprintf(lib, sizeof lib, "%s/lib", g_app ? g_app->cfg.rules_dir : "rules");
    struct luavm_opts o = { .instr_budget = g_app ? g_app->cfg.instr_budget : 0, .lib_dir = lib };
    if (luavm_new(&o, &s->vm) || !(s->refs = calloc((size_t)(g->nfiles ? g->nfiles : 1), sizeof *s->refs))) {
        s->seq = 0;
        return NULL;
    }
    lua_State *L = luavm_state(s->vm);
    s->nrefs = g->nfiles;
    for (int i = 0; i < g->nfiles; i++) {
        s->refs[i] = LUA_NOREF;
        const struct loyalty_rules_file *f = &g->files[i];
        if (!f->source || !f->has_earn)
            continue;
        char err[512];
        if (luavm_load_chunk(s->vm, f->path, f->source, f->len, err, sizeof err)) {
            log_warn("loyalty earn rule not compiled", "file=\"%s\" error=\"%s\"", f->path, err);
            continue;
        }
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "earn");
            if (lua_isfunction(L, -1))
                s->refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
            else
                lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    s->seq = g->seq;
    return s;
}

/* --- a chunk ------------------------------------------------------------------- */

struct change {
    char cust[129];
    struct loyalty_change ch;
};

struct loyalty_earn {
    struct loyalty_rules_gen *gen;
    struct tstate *ts;
    struct change *ch;
    int nch, capch;
};

struct loyalty_earn *loyalty_earn_begin(void)
{
    struct loyalty_rules_gen *g = loyalty_rules_acquire();
    if (!g || !g->nearn) {
        loyalty_rules_release(g);
        return NULL;
    }
    struct loyalty_earn *x = calloc(1, sizeof *x);
    if (!x || !(x->ts = tstate_for(g))) {
        free(x);
        loyalty_rules_release(g);
        return NULL;
    }
    x->gen = g;
    return x;
}

static void note_change(struct loyalty_earn *x, const char *cust, const struct loyalty_change *ch)
{
    for (int i = 0; i < x->nch; i++)
        if (!strcmp(x->ch[i].cust, cust)) { /* one event per customer and chunk: first from, last to */
            snprintf(x->ch[i].ch.to, sizeof x->ch[i].ch.to, "%s", ch->to);
            return;
        }
    if (x->nch == x->capch) {
        int cap = x->capch ? x->capch * 2 : 8;
        struct change *n = realloc(x->ch, sizeof *n * (size_t)cap);
        if (!n)
            return;
        x->ch = n;
        x->capch = cap;
    }
    struct change *c = &x->ch[x->nch++];
    snprintf(c->cust, sizeof c->cust, "%s", cust);
    c->ch = *ch;
}

int loyalty_earn_event(struct loyalty_earn *x, struct store_txn *t, const json_t *ev,
                       const unsigned char key[16], int64_t now)
{
    const char *cust = json_string_value(json_object_get(ev, "customer_id"));
    if (!cust)
        return 0;
    lua_State *L = luavm_state(x->ts->vm);
    int top = lua_gettop(L);
    for (int i = 0; i < x->ts->nrefs; i++) {
        if (x->ts->refs[i] == LUA_NOREF)
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, x->ts->refs[i]);
        if (luavm_push_json(L, ev)) {
            lua_settop(L, top);
            continue;
        }
        /* p: the profile, p.id, p.stats, p.loyalty as of now in this txn */
        const void *pv;
        size_t pl;
        if (!(store_get(t, STORE_PROFILES, cust, strlen(cust), &pv, &pl) == 0 &&
              luavm_push_msgpack(L, pv, pl) == 0 && lua_istable(L, -1))) {
            lua_settop(L, top + 2);
            lua_createtable(L, 0, 2);
        }
        lua_pushstring(L, cust);
        lua_setfield(L, -2, "id");
        if (store_get(t, STORE_PSTATS, cust, strlen(cust), &pv, &pl) == 0 &&
            luavm_push_msgpack(L, pv, pl) == 0)
            lua_setfield(L, -2, "stats");
        if (loyalty_push_lua(L, t, cust))
            lua_setfield(L, -2, "loyalty");
        char err[512];
        int rc = luavm_call(x->ts->vm, 2, 2, err, sizeof err);
        if (rc) {
            __atomic_fetch_add(&g_errors, 1, __ATOMIC_RELAXED);
            log_warn("loyalty earn rule failed", "file=\"%s\" error=\"%s\"", x->gen->files[i].path, err);
            lua_settop(L, top);
            continue;
        }
        int ty = lua_type(L, -2);
        double pts = lua_tonumber(L, -2);
        char reason[LOYALTY_REASON_MAX + 1];
        snprintf(reason, sizeof reason, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : x->gen->files[i].path);
        lua_settop(L, top);
        if (ty == LUA_TNIL || (ty == LUA_TBOOLEAN && pts == 0))
            continue;
        if (ty != LUA_TNUMBER || !isfinite(pts) || pts < 0 || pts > (double)LOYALTY_MAX_POINTS) {
            __atomic_fetch_add(&g_errors, 1, __ATOMIC_RELAXED);
            log_warn("loyalty earn rule returned no points", "file=\"%s\" hint=\"return a number >= 0, "
                     "or nil\"", x->gen->files[i].path);
            continue;
        }
        int64_t p = (int64_t)floor(pts);
        if (p <= 0)
            continue;
        char txid[64];
        int n = snprintf(txid, sizeof txid, "e%d:", i);
        for (int k = 0; k < 16; k++)
            n += snprintf(txid + n, sizeof txid - (size_t)n, "%02x", key[k]);
        struct loyalty_tx tx = { .type = LOYALTY_EARN, .points = p, .txid = txid, .reason = reason };
        struct loyalty_entry en;
        struct loyalty_summary after;
        struct loyalty_change ch;
        struct reqerr e = { 0 };
        int replayed;
        rc = loyalty_apply(t, cust, &x->gen->prog, &tx, now, &en, &replayed, &after, &ch, &e);
        reqerr_clear(&e);
        if (rc && e.status >= 500)
            return rc; /* store trouble: the chunk goes back */
        if (rc)
            continue;
        if (!replayed) {
            __atomic_fetch_add(&g_points, p, __ATOMIC_RELAXED);
            __atomic_fetch_add(&g_entries, 1, __ATOMIC_RELAXED);
        }
        if (ch.tier_changed)
            note_change(x, cust, &ch);
    }
    return 0;
}

json_t *loyalty_earn_tier_event(const char *customer, const struct loyalty_change *ch,
                                const struct loyalty_program *p, int64_t now)
{
    int from = -1, to = -1;
    for (int i = 0; i < p->ntiers; i++) {
        if (!strcmp(p->tiers[i].name, ch->from))
            from = i;
        if (!strcmp(p->tiers[i].name, ch->to))
            to = i;
    }
    json_t *ev = json_object();
    json_object_set_new(ev, "type", json_string(to > from ? "tier_upgrade" : "tier_downgrade"));
    json_object_set_new(ev, "customer_id", json_string(customer));
    char id[128];
    snprintf(id, sizeof id, "tier:%lld:%s:%.60s", (long long)now, ch->to[0] ? ch->to : "-", customer);
    json_object_set_new(ev, "event_id", json_string(id));
    json_t *props = json_object();
    json_object_set_new(props, "from", ch->from[0] ? json_string(ch->from) : json_null());
    json_object_set_new(props, "to", ch->to[0] ? json_string(ch->to) : json_null());
    json_object_set_new(ev, "properties", props);
    return ev;
}

json_t *loyalty_earn_end(struct loyalty_earn *x, int committed)
{
    if (!x)
        return NULL;
    json_t *out = NULL;
    for (int i = 0; committed && i < x->nch; i++) {
        if (!strcmp(x->ch[i].ch.from, x->ch[i].ch.to))
            continue;
        if (!out)
            out = json_array();
        json_array_append_new(out, loyalty_earn_tier_event(x->ch[i].cust, &x->ch[i].ch, &x->gen->prog,
                                                           clock_now()));
    }
    free(x->ch);
    loyalty_rules_release(x->gen);
    free(x);
    return out;
}
