/*
 * segments_eval.c — what a segment is evaluated on (the view), which
 * segments a change can affect, and evaluating them: conditions through
 * the generation's condset, level by level so that `$segment` references
 * see the results of the level below, and Lua predicates in the calling
 * thread's own sandboxed state.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "engine/cond.h"
#include "engine/condset.h"
#include "engine/hooks.h"
#include "codec/mpread.h"
#include "lua/luavm.h"
#include "base/app.h"
#include "base/err.h"
#include "base/log.h"
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- the view ------------------------------------------------------------ */

static int is_key(const char *k, uint32_t kl, const char *name)
{
    return kl == strlen(name) && !memcmp(k, name, kl);
}

/* Read an integer-valued number (int or float) at p; 0 when not a number. */
static int mp_number(const char *p, size_t len, int64_t *v)
{
    const unsigned char *u = (const unsigned char *)p;
    if (!len)
        return 0;
    uint64_t x;
    if (mpread_uint(p, len, &x) == 0) {
        *v = (int64_t)x;
        return 1;
    }
    if (u[0] >= 0xe0) {
        *v = (int8_t)u[0];
        return 1;
    }
    if (u[0] == 0xd3 && len >= 9) {
        uint64_t y = 0;
        for (int i = 1; i <= 8; i++)
            y = y << 8 | u[i];
        *v = (int64_t)y;
        return 1;
    }
    if (u[0] == 0xcb && len >= 9) {
        uint64_t y = 0;
        for (int i = 1; i <= 8; i++)
            y = y << 8 | u[i];
        double d;
        memcpy(&d, &y, 8);
        if (d > -9e15 && d < 9e15) {
            *v = (int64_t)d;
            return 1;
        }
    }
    return 0;
}

static int64_t days_since(int64_t now, int64_t ts)
{
    return ts >= now ? 0 : (now - ts) / 86400;
}

/* Copy the map at p (count pairs, first pair at `at`), leaving out keys
 * named in `skip`; counts the pairs copied. */
static int copy_pairs(struct buf *out, const char *p, size_t len, uint32_t count, size_t at,
                      const char *const *skip, int nskip, uint32_t *copied)
{
    for (uint32_t i = 0; i < count; i++) {
        size_t kn, vn;
        if (mpread_skip(p + at, len - at, &kn) || mpread_skip(p + at + kn, len - at - kn, &vn))
            return ERR_PARSE;
        const char *k;
        uint32_t kl;
        size_t sn;
        int drop = 0;
        if (mpread_is_str(p + at, len - at) && mpread_str(p + at, len - at, &k, &kl, &sn) == 0)
            for (int s = 0; s < nskip && !drop; s++)
                drop = is_key(k, kl, skip[s]);
        if (!drop) {
            if (buf_add(out, p + at, kn + vn))
                return ERR_NOMEM;
            (*copied)++;
        }
        at += kn + vn;
    }
    return 0;
}

/* Patch a map header written as map32 at `hdr` with the real count. */
static void patch_count(struct buf *out, size_t hdr, uint32_t n)
{
    unsigned char *h = (unsigned char *)out->p + hdr;
    h[0] = 0xdf;
    h[1] = (unsigned char)(n >> 24);
    h[2] = (unsigned char)(n >> 16);
    h[3] = (unsigned char)(n >> 8);
    h[4] = (unsigned char)n;
}

static int put_map32(struct buf *out)
{
    static const unsigned char h[5] = { 0xdf, 0, 0, 0, 0 };
    return buf_add(out, h, 5);
}

static int stats_view(struct buf *out, const char *s, size_t sl, int64_t now)
{
    uint32_t count;
    size_t at;
    if (mpread_map(s, sl, &count, &at))
        return ERR_PARSE;
    size_t hdr = out->len;
    if (put_map32(out))
        return ERR_NOMEM;
    static const char *const skip[] = { "recency_days", "days_since" };
    uint32_t n = 0;
    int rc = copy_pairs(out, s, sl, count, at, skip, 2, &n);
    if (rc)
        return rc;
    const char *v;
    size_t vl;
    int64_t ts;
    if (mpread_find(s, sl, "last_seen", 9, &v, &vl) == 1 && mp_number(v, vl, &ts)) {
        if (mpread_put_str(out, "recency_days", 12) || mpread_put_int(out, days_since(now, ts)))
            return ERR_NOMEM;
        n++;
    }
    if (mpread_find(s, sl, "last", 4, &v, &vl) == 1) {
        uint32_t lc;
        size_t la;
        if (mpread_map(v, vl, &lc, &la) == 0) {
            if (mpread_put_str(out, "days_since", 10))
                return ERR_NOMEM;
            size_t h2 = out->len;
            if (put_map32(out))
                return ERR_NOMEM;
            uint32_t m = 0;
            for (uint32_t i = 0; i < lc; i++) {
                size_t kn, vn;
                if (mpread_skip(v + la, vl - la, &kn) ||
                    mpread_skip(v + la + kn, vl - la - kn, &vn))
                    return ERR_PARSE;
                if (mpread_is_str(v + la, vl - la) && mp_number(v + la + kn, vn, &ts)) {
                    if (buf_add(out, v + la, kn) || mpread_put_int(out, days_since(now, ts)))
                        return ERR_NOMEM;
                    m++;
                }
                la += kn + vn;
            }
            patch_count(out, h2, m);
            n++;
        }
    }
    patch_count(out, hdr, n);
    return 0;
}

int segments_view(struct buf *out, const char *id, size_t idlen, const char *prof, size_t plen,
                  const char *stats, size_t slen, int64_t now)
{
    size_t hdr = out->len;
    if (put_map32(out))
        return ERR_NOMEM;
    uint32_t n = 0;
    if (prof) {
        uint32_t count;
        size_t at;
        if (mpread_map(prof, plen, &count, &at))
            return ERR_PARSE;
        static const char *const skip[] = { "id", "stats" };
        int rc = copy_pairs(out, prof, plen, count, at, skip, 2, &n);
        if (rc)
            return rc;
    }
    if (mpread_put_str(out, "id", 2) || mpread_put_str(out, id, idlen))
        return ERR_NOMEM;
    n++;
    if (stats) {
        if (mpread_put_str(out, "stats", 5))
            return ERR_NOMEM;
        int rc = stats_view(out, stats, slen, now);
        if (rc)
            return rc;
        n++;
    }
    patch_count(out, hdr, n);
    return 0;
}

/* ---- which paths a segment reads ------------------------------------------- */

/* "root" and "root.sub" → bitsets over segments: `any` (some path starts at
 * root), `whole` (a path is exactly root) and, per "root.sub", `sub`. */
struct dent {
    char *key;       /* "root" or "root\0sub" */
    size_t klen;
    uint64_t *any, *whole, *sub;
};

struct segments_deps {
    struct dent *e;
    size_t cap, n;
    size_t nw;
};

static uint64_t hkey(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static struct dent *dep_find(const struct segments_deps *d, const char *k, size_t n)
{
    if (!d->cap)
        return NULL;
    size_t i = hkey(k, n) & (d->cap - 1);
    while (d->e[i].key) {
        if (d->e[i].klen == n && !memcmp(d->e[i].key, k, n))
            return &d->e[i];
        i = (i + 1) & (d->cap - 1);
    }
    return NULL;
}

static struct dent *dep_add(struct segments_deps *d, const char *k, size_t n)
{
    struct dent *e = dep_find(d, k, n);
    if (e)
        return e;
    if ((d->n + 1) * 2 > d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 64;
        struct dent *ne = calloc(nc, sizeof *ne);
        if (!ne)
            return NULL;
        for (size_t i = 0; i < d->cap; i++) {
            if (!d->e[i].key)
                continue;
            size_t j = hkey(d->e[i].key, d->e[i].klen) & (nc - 1);
            while (ne[j].key)
                j = (j + 1) & (nc - 1);
            ne[j] = d->e[i];
        }
        free(d->e);
        d->e = ne;
        d->cap = nc;
    }
    size_t i = hkey(k, n) & (d->cap - 1);
    while (d->e[i].key)
        i = (i + 1) & (d->cap - 1);
    e = &d->e[i];
    e->key = malloc(n);
    e->any = calloc(3 * d->nw, sizeof(uint64_t));
    if (!e->key || !e->any) {
        free(e->key);
        free(e->any);
        e->key = NULL;
        e->any = NULL;
        return NULL;
    }
    memcpy(e->key, k, n);
    e->klen = n;
    e->whole = e->any + d->nw;
    e->sub = e->whole + d->nw;
    d->n++;
    return e;
}

void segments_deps_free(struct segments_deps *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->cap; i++) {
        free(d->e[i].key);
        free(d->e[i].any);
    }
    free(d->e);
    free(d);
}

int segments_deps_build(struct segments_gen *g)
{
    struct segments_deps *d = calloc(1, sizeof *d);
    if (!d)
        return ERR_NOMEM;
    d->nw = g->nw;
    g->deps = d;
    for (int j = 0; j < g->nseg; j++) {
        const struct cond *c = g->segs[j].cond;
        for (size_t i = 0; c && i < cond_npaths(c); i++) {
            const char *p = cond_path(c, i);
            const char *dot = strchr(p, '.');
            size_t rl = dot ? (size_t)(dot - p) : strlen(p);
            struct dent *e = dep_add(d, p, rl);
            if (!e)
                return ERR_NOMEM;
            segbit_set(e->any, j);
            if (!dot) {
                segbit_set(e->whole, j);
                continue;
            }
            const char *q = dot + 1, *dot2 = strchr(q, '.');
            size_t ql = dot2 ? (size_t)(dot2 - q) : strlen(q);
            char key[512];
            if (rl + 1 + ql > sizeof key)
                return ERR_TOOBIG;
            memcpy(key, p, rl);
            key[rl] = 0;
            memcpy(key + rl + 1, q, ql);
            if (!(e = dep_add(d, key, rl + 1 + ql)))
                return ERR_NOMEM;
            segbit_set(e->sub, j);
        }
    }
    return 0;
}

/* A view's top-level pairs (or a nested map's), sorted by key. */
struct kv {
    const char *k, *v;
    uint32_t kl;
    size_t vl;
};

static int kv_cmp(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    int c = memcmp(x->k, y->k, x->kl < y->kl ? x->kl : y->kl);
    if (c)
        return c;
    return (x->kl > y->kl) - (x->kl < y->kl);
}

/* Pairs of a str-keyed map, sorted, the last of a repeated key kept.
 * Returns the number (<= max), or -1 when the map cannot be read so. */
static int kv_read(const char *p, size_t len, struct kv *out, int max)
{
    uint32_t count;
    size_t at;
    if (mpread_map(p, len, &count, &at) || count > (uint32_t)max)
        return -1;
    int n = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *k;
        uint32_t kl;
        size_t kn, vn;
        if (!mpread_is_str(p + at, len - at) || mpread_str(p + at, len - at, &k, &kl, &kn) ||
            mpread_skip(p + at + kn, len - at - kn, &vn))
            return -1;
        out[n++] = (struct kv){ k, p + at + kn, kl, vn };
        at += kn + vn;
    }
    /* stable order by key, then keep the last of each run */
    for (int i = 1; i < n; i++) { /* insertion sort: views are small and mostly short */
        struct kv x = out[i];
        int j = i - 1;
        while (j >= 0 && kv_cmp(&out[j], &x) > 0) {
            out[j + 1] = out[j];
            j--;
        }
        out[j + 1] = x;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m && !kv_cmp(&out[m - 1], &out[i]))
            out[m - 1] = out[i];
        else
            out[m++] = out[i];
    }
    return m;
}

#define DIFF_MAX 256

static void mark_root(const struct segments_gen *g, const char *k, size_t kl, uint64_t *out)
{
    const struct dent *e = dep_find(g->deps, k, kl);
    if (e)
        for (size_t w = 0; w < g->nw; w++)
            out[w] |= e->any[w];
}

static void mark_sub(const struct segments_gen *g, const char *root, size_t rl, const char *sub,
                     size_t sl, uint64_t *out)
{
    const struct dent *e = dep_find(g->deps, root, rl);
    if (e)
        for (size_t w = 0; w < g->nw; w++)
            out[w] |= e->whole[w];
    char key[512];
    if (rl + 1 + sl > sizeof key) {
        mark_root(g, root, rl, out);
        return;
    }
    memcpy(key, root, rl);
    key[rl] = 0;
    memcpy(key + rl + 1, sub, sl);
    if ((e = dep_find(g->deps, key, rl + 1 + sl)))
        for (size_t w = 0; w < g->nw; w++)
            out[w] |= e->sub[w];
}

/* Two values differ at key `k`: its paths, one level deeper when both are
 * str-keyed maps. */
static void diff_value(const struct segments_gen *g, const struct kv *a, const struct kv *b,
                       uint64_t *out)
{
    const struct kv *x = a ? a : b;
    if (a && b) {
        static __thread struct kv sa[DIFF_MAX], sb[DIFF_MAX];
        int na = kv_read(a->v, a->vl, sa, DIFF_MAX), nb = kv_read(b->v, b->vl, sb, DIFF_MAX);
        if (na >= 0 && nb >= 0) {
            int i = 0, j = 0;
            while (i < na || j < nb) {
                int c = i >= na ? 1 : j >= nb ? -1 : kv_cmp(&sa[i], &sb[j]);
                if (c < 0) {
                    mark_sub(g, x->k, x->kl, sa[i].k, sa[i].kl, out);
                    i++;
                } else if (c > 0) {
                    mark_sub(g, x->k, x->kl, sb[j].k, sb[j].kl, out);
                    j++;
                } else {
                    if (sa[i].vl != sb[j].vl || memcmp(sa[i].v, sb[j].v, sa[i].vl))
                        mark_sub(g, x->k, x->kl, sa[i].k, sa[i].kl, out);
                    i++;
                    j++;
                }
            }
            return;
        }
    }
    mark_root(g, x->k, x->kl, out);
}

void segments_affected(const struct segments_gen *g, const char *ov, size_t ol, const char *nv,
                       size_t nl, uint64_t *out)
{
    size_t nw = g->nw;
    static __thread struct kv a[DIFF_MAX], b[DIFF_MAX];
    int na = ov ? kv_read(ov, ol, a, DIFF_MAX) : -1;
    int nb = nv ? kv_read(nv, nl, b, DIFF_MAX) : -1;
    if (na < 0 || nb < 0) { /* no old view, or unreadable: everything */
        memset(out, 0, nw * sizeof *out);
        for (int j = 0; j < g->nseg; j++)
            segbit_set(out, j);
        return;
    }
    memcpy(out, g->lua, nw * sizeof *out);
    int i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i >= na ? 1 : j >= nb ? -1 : kv_cmp(&a[i], &b[j]);
        if (c < 0) {
            diff_value(g, &a[i], NULL, out);
            i++;
        } else if (c > 0) {
            diff_value(g, NULL, &b[j], out);
            j++;
        } else {
            if (a[i].vl != b[j].vl || memcmp(a[i].v, b[j].v, a[i].vl))
                diff_value(g, &a[i], &b[j], out);
            i++;
            j++;
        }
    }
    /* and whatever depends on an affected segment */
    for (int s = 0; s < g->nseg; s++)
        if (segbit_get(out, s))
            for (size_t w = 0; w < nw; w++)
                out[w] |= g->closure[(size_t)s * nw + w];
}

/* ---- per-thread state --------------------------------------------------------- */

static pthread_key_t g_tls_key;
static pthread_once_t g_tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p)
{
    struct segments_tls *x = p;
    if (!x)
        return;
    condset_scratch_free(x->cs);
    buf_free(&x->oview);
    buf_free(&x->nview);
    buf_free(&x->fview);
    free(x->match_ref);
    luavm_free(x->vm);
    free(x);
}

static void tls_init(void)
{
    pthread_key_create(&g_tls_key, tls_free);
}

struct segments_tls *segments_tls(void)
{
    pthread_once(&g_tls_once, tls_init);
    struct segments_tls *x = pthread_getspecific(g_tls_key);
    if (x)
        return x;
    x = calloc(1, sizeof *x);
    if (!x || !(x->cs = condset_scratch_new())) {
        free(x);
        return NULL;
    }
    pthread_setspecific(g_tls_key, x);
    return x;
}

/* Load the generation's Lua predicates into the thread's state (a fresh
 * state per generation: predicates are few and small).  Each file's table
 * gives its hook refs through the hook layer (engine/hooks.h). */
static int lua_ready(const struct segments_gen *g, struct segments_tls *x)
{
    if (x->vm && x->vm_seq == g->seq)
        return 0;
    luavm_free(x->vm);
    x->vm = NULL;
    free(x->match_ref);
    x->match_ref = NULL;
    const struct config *cfg = segments_cfg();
    struct luavm_opts o = { .instr_budget = cfg ? cfg->instr_budget : 0,
                            .mem_limit = cfg ? cfg->lua_mem_limit / 4 : 0 };
    int rc = luavm_new(&o, &x->vm);
    if (rc)
        return rc;
    if (!(x->match_ref = malloc((size_t)(g->nseg ? g->nseg : 1) * sizeof(int))))
        return ERR_NOMEM;
    x->nmatch = g->nseg;
    lua_State *L = luavm_state(x->vm);
    for (int j = 0; j < g->nseg; j++) {
        x->match_ref[j] = LUA_NOREF;
        const struct segment *s = &g->segs[j];
        if (!s->lua)
            continue;
        char err[512];
        if (luavm_load_chunk(x->vm, s->path, s->source, s->source_len, err, sizeof err)) {
            log_warn("segment predicate did not load in this thread", "segment=\"%s\" error=\"%s\"",
                     s->id, err);
            continue;
        }
        int tref = lua_istable(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : LUA_NOREF;
        if (tref == LUA_NOREF)
            lua_pop(L, 1);
        int refs[HOOKS_N];
        hooks_refs_resolve(L, HOOKS_SEGMENT, tref, refs);
        x->match_ref[j] = refs[HOOKS_MATCH];
        refs[HOOKS_MATCH] = LUA_NOREF; /* kept; the others (none today) released */
        hooks_refs_release(L, refs);
        if (tref != LUA_NOREF)
            luaL_unref(L, LUA_REGISTRYINDEX, tref);
    }
    x->vm_seq = g->seq;
    return 0;
}

/* match(p) for segment j, through the hook layer, with p at `p_idx` (the
 * view as a table, pushed once for every predicate of the evaluation, as
 * decide shares p between campaigns): 1 member, 0 not.  A call that fails
 * counts as "not a member"; the hook layer counts it
 * (promod_hook_errors_total{hook="match"}) and it is logged at most once
 * per 1000 failures per thread. */
static int lua_match(const struct segments_gen *g, struct segments_tls *x, int j, int p_idx)
{
    if (x->match_ref[j] == LUA_NOREF)
        return 0;
    lua_State *L = luavm_state(x->vm);
    int top = lua_gettop(L);
    int fn = x->match_ref[j];
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushvalue(L, p_idx);
    struct hooks_res res;
    enum hooks_verdict vd = hooks_call(x->vm, L, HOOKS_MATCH, fn, g->segs[j].id, &res);
    if (vd == HOOKS_FAILED) {
        if (x->lua_errors++ % 1000 == 0)
            log_warn("segment predicate failed (not a member)", "segment=\"%s\" error=\"%s\"",
                     g->segs[j].id, res.msg);
        lua_settop(L, top);
        return 0;
    }
    lua_settop(L, top);
    return vd == HOOKS_PASS;
}

int segments_eval_view(const struct segments_gen *g, struct segments_tls *x, const char *v,
                       size_t vl, const uint64_t *mask, const uint64_t *prev, uint64_t *out)
{
    size_t nw = g->nw;
    memcpy(out, prev, nw * sizeof *out);
    int nrefs = condset_nrefs(g->cs);
    uint64_t refs_stack[16], res_stack[16], m_stack[16];
    size_t nrw = CONDSET_WORDS(nrefs ? nrefs : 1);
    uint64_t *refs = nrw <= 16 ? refs_stack : calloc(nrw, sizeof *refs);
    uint64_t *res = nw <= 16 ? res_stack : calloc(nw, sizeof *res);
    uint64_t *m = nw <= 16 ? m_stack : calloc(nw, sizeof *m);
    int rc = 0, p_idx = -1, p_base = 0; /* p on the thread's Lua stack once a predicate needs it */
    if (!refs || !res || !m) {
        rc = ERR_NOMEM;
        goto out;
    }
    for (int L = 0; L < g->nlevels && !rc; L++) {
        bool anyl = false;
        for (size_t w = 0; w < nw; w++)
            anyl |= (m[w] = g->level[L][w] & mask[w]) != 0;
        if (!anyl)
            continue;
        memset(refs, 0, nrw * sizeof *refs);
        for (int k = 0; L > 0 && k < nrefs; k++) {
            int j = g->ref_seg[k];
            if (j >= 0 && segbit_get(out, j))
                refs[k >> 6] |= 1ull << (k & 63);
        }
        int n = condset_eval(g->cs, x->cs, v, vl, refs, m, res);
        if (n < 0) {
            rc = n;
            break;
        }
        for (size_t w = 0; w < nw; w++) {
            uint64_t lua = m[w] & g->lua[w] & res[w];
            while (lua) {
                int j = (int)(w * 64) + __builtin_ctzll(lua);
                lua &= lua - 1;
                if (p_idx < 0) { /* p, once for every predicate */
                    lua_State *Lp = lua_ready(g, x) ? NULL : luavm_state(x->vm);
                    if (!Lp || luavm_push_msgpack(Lp, v, vl)) {
                        p_idx = 0;
                    } else {
                        /* registered read-only, as decide's p: a predicate
                         * cannot change p for the next one */
                        p_base = lua_gettop(Lp);
                        p_idx = luavm_push_readonly(Lp, p_base, "profile");
                    }
                }
                if (!p_idx || !lua_match(g, x, j, p_idx))
                    res[w] &= ~(1ull << (j & 63));
            }
            out[w] = (out[w] & ~m[w]) | res[w];
        }
    }
out:
    if (p_base > 0)
        lua_settop(luavm_state(x->vm), p_base - 1);
    if (refs != refs_stack)
        free(refs);
    if (res != res_stack)
        free(res);
    if (m != m_stack)
        free(m);
    return rc;
}

/* ---- membership from the definitions (model features) ------------------------ */

/* Segment j and, transitively, every segment it references into `mask`. */
static void mask_with_deps(const struct segments_gen *g, int j, uint64_t *mask)
{
    if (segbit_get(mask, j))
        return;
    segbit_set(mask, j);
    for (int k = 0; k < g->segs[j].ndeps; k++)
        mask_with_deps(g, g->segs[j].deps[k], mask);
}

int segments_eval_ids(const char *id, size_t idlen, const char *prof, size_t plen,
                      const char *stats, size_t slen, int64_t now, const char *const *ids, int n,
                      int *out)
{
    for (int i = 0; i < n; i++)
        out[i] = -1;
    struct segments_gen *g = segments_gen_acquire();
    if (!g)
        return 0;
    struct segments_tls *x = segments_tls();
    uint64_t st_mask[16], st_prev[16], st_res[16];
    size_t nw = g->nw ? g->nw : 1;
    uint64_t *mask = nw <= 16 ? st_mask : calloc(nw, sizeof *mask);
    uint64_t *prev = nw <= 16 ? st_prev : calloc(nw, sizeof *prev);
    uint64_t *res = nw <= 16 ? st_res : calloc(nw, sizeof *res);
    int rc = 0;
    if (!x || !mask || !prev || !res) {
        rc = ERR_NOMEM;
        goto out;
    }
    memset(mask, 0, nw * sizeof *mask);
    memset(prev, 0, nw * sizeof *prev);
    int any = 0;
    for (int i = 0; i < n; i++) {
        int j = segments_find(g, ids[i], strlen(ids[i]));
        if (j >= 0) {
            mask_with_deps(g, j, mask);
            any = 1;
        }
    }
    if (!any)
        goto out;
    x->fview.len = 0;
    rc = segments_view(&x->fview, id, idlen, prof, plen, stats, slen, now);
    if (!rc)
        rc = segments_eval_view(g, x, x->fview.p, x->fview.len, mask, prev, res);
    for (int i = 0; !rc && i < n; i++) {
        int j = segments_find(g, ids[i], strlen(ids[i]));
        if (j >= 0)
            out[i] = segbit_get(res, j);
    }
out:
    if (mask != st_mask)
        free(mask);
    if (prev != st_prev)
        free(prev);
    if (res != st_res)
        free(res);
    segments_gen_release(g);
    return rc;
}
