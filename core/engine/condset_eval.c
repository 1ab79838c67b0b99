/*
 * condset_eval.c — evaluating a built condition set on one profile: the
 * per-thread memory of group values and the evaluation itself (see
 * condset.h; the set is built by condset.c).
 */
#include "engine/condset.h"
#include "engine/condset_internal.h"
#include "engine/cond.h"
#include "codec/mpread.h"
#include "base/err.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- per-thread memory -------------------------------------------------- */

#define MEMO_KEYMAX 38      /* longer values are not remembered */
#define MEMO_BYTES (192u << 10) /* per group */
#define MEMO_RESETS 3       /* a group that fills up this often stops remembering */
#define MEMO_WINDOW 1024    /* look-ups per judgement of a group's hit rate ... */
#define MEMO_MINHITS 512    /* ... fewer hits than this in a window: stop remembering */
#define SCRATCH_SETS 8      /* sets remembered per thread */

/* One remembered value: its hash, key and the group's verdict bitset
 * inline, so a look-up touches one entry (one or two cache lines, fetched
 * ahead for every group before any is looked up: condset_eval). */
struct ment {
    uint64_t h;
    uint8_t used, klen;
    unsigned char key[MEMO_KEYMAX];
    uint64_t bits[];        /* nw words */
};

struct gmemo {
    uint32_t cap, n, maxcap;
    uint32_t looks, hits;   /* in the current window */
    uint8_t resets, off;
    size_t stride;          /* bytes per entry */
    unsigned char *tab;     /* cap entries */
};

#define ENT(m, i) ((struct ment *)((m)->tab + (size_t)(i) * (m)->stride))

struct setmemo {
    uint64_t serial;
    size_t nw;
    int ng;
    struct gmemo *g;
    uint64_t used;          /* for eviction: last use */
};

struct rootval {
    const char *p;          /* NULL: absent */
    size_t len;
};

/* A group's key for one evaluation. */
struct gkey {
    uint64_t h;
    uint8_t need, keyed, kl;
    unsigned char key[MEMO_KEYMAX];
};

struct condset_scratch {
    struct setmemo sets[SCRATCH_SETS];
    struct gkey *gk;
    int gcap;
    uint64_t tick;
    struct cond_attrs attrs;
    bool attrs_ready, attrs_ok;
    bool roots_ok;          /* rv holds this evaluation's root values */
    const char *attrs_mp;
    struct rootval *rv;
    int rvcap;
    uint64_t *tmp;          /* a group's result while it is computed */
    size_t tmpcap;
};

struct condset_scratch *condset_scratch_new(void)
{
    return calloc(1, sizeof(struct condset_scratch));
}

static void setmemo_clear(struct setmemo *sm)
{
    for (int i = 0; i < sm->ng; i++)
        free(sm->g[i].tab);
    free(sm->g);
    memset(sm, 0, sizeof *sm);
}

void condset_scratch_free(struct condset_scratch *sc)
{
    if (!sc)
        return;
    for (int i = 0; i < SCRATCH_SETS; i++)
        setmemo_clear(&sc->sets[i]);
    if (sc->attrs_ready && sc->attrs_ok)
        cond_attrs_free(&sc->attrs);
    free(sc->rv);
    free(sc->tmp);
    free(sc->gk);
    free(sc);
}

static struct setmemo *memo_for(struct condset_scratch *sc, const struct condset *cs)
{
    struct setmemo *victim = &sc->sets[0];
    sc->tick++;
    for (int i = 0; i < SCRATCH_SETS; i++) {
        struct setmemo *sm = &sc->sets[i];
        if (sm->serial == cs->serial) {
            sm->used = sc->tick;
            return sm;
        }
        if (sm->used < victim->used)
            victim = sm;
    }
    setmemo_clear(victim);
    if (cs->ng && !(victim->g = calloc((size_t)cs->ng, sizeof *victim->g)))
        return NULL;
    victim->serial = cs->serial;
    victim->nw = cs->nw;
    victim->ng = cs->ng;
    victim->used = sc->tick;
    size_t per = (sizeof(struct ment) + cs->nw * sizeof(uint64_t) + 15) & ~(size_t)15;
    uint32_t maxcap = 16;
    while ((size_t)maxcap * 2 * per <= MEMO_BYTES && maxcap < 8192)
        maxcap *= 2;
    for (int i = 0; i < cs->ng; i++) {
        victim->g[i].maxcap = maxcap;
        victim->g[i].stride = per;
    }
    return victim;
}

/* The entry where the probe for hash `h` starts, to fetch it ahead. */
static inline const void *gmemo_home(const struct gmemo *m, uint64_t h)
{
    return m->cap ? ENT(m, (uint32_t)h & (m->cap - 1)) : NULL;
}

/* Look `key` up; NULL when absent. */
static const uint64_t *gmemo_get(const struct gmemo *m, uint64_t h, const unsigned char *key,
                                 size_t kl)
{
    if (!m->cap)
        return NULL;
    uint32_t mask = m->cap - 1, i = (uint32_t)h & mask;
    for (;;) {
        const struct ment *e = ENT(m, i);
        if (!e->used)
            return NULL;
        if (e->h == h && e->klen == kl && !memcmp(e->key, key, kl))
            return e->bits;
        i = (i + 1) & mask;
    }
}

static int gmemo_resize(struct gmemo *m, size_t nw, uint32_t cap)
{
    unsigned char *tab = calloc(cap, m->stride);
    if (!tab)
        return ERR_NOMEM;
    struct gmemo n = *m;
    n.tab = tab;
    n.cap = cap;
    for (uint32_t j = 0; j < m->cap; j++) {
        const struct ment *e = ENT(m, j);
        if (!e->used)
            continue;
        uint32_t i = (uint32_t)e->h & (cap - 1);
        while (ENT(&n, i)->used)
            i = (i + 1) & (cap - 1);
        memcpy(ENT(&n, i), e, sizeof *e + nw * sizeof(uint64_t));
    }
    free(m->tab);
    m->tab = tab;
    m->cap = cap;
    return 0;
}

static void gmemo_put(struct gmemo *m, size_t nw, uint64_t h, const unsigned char *key, size_t kl,
                      const uint64_t *bits)
{
    if (m->off)
        return;
    if ((m->n + 1) * 4 > m->cap * 3) {
        if (m->cap < m->maxcap) {
            if (gmemo_resize(m, nw, m->cap ? m->cap * 2 : 16))
                return;
        } else {
            /* full: the values do not repeat enough to be worth keeping */
            if (++m->resets >= MEMO_RESETS) {
                free(m->tab);
                m->tab = NULL;
                m->cap = m->n = 0;
                m->off = 1;
                return;
            }
            memset(m->tab, 0, m->cap * m->stride);
            m->n = 0;
        }
    }
    uint32_t mask = m->cap - 1, i = (uint32_t)h & mask;
    while (ENT(m, i)->used)
        i = (i + 1) & mask;
    struct ment *e = ENT(m, i);
    e->used = 1;
    e->h = h;
    e->klen = (uint8_t)kl;
    memcpy(e->key, key, kl);
    memcpy(e->bits, bits, nw * sizeof *bits);
    m->n++;
}

/* ---- evaluating --------------------------------------------------------- */

struct segctx {
    const struct condset *cs;
    const uint64_t *refs;
};

static int seg_cb(void *ud, const char *id, size_t idlen, const char *mp, size_t len)
{
    (void)mp;
    (void)len;
    const struct segctx *x = ud;
    int k = condset_ref_find(x->cs, id, idlen);
    return k >= 0 && x->refs && bit_get(x->refs, k);
}

/* A msgpack number at p (n bytes there) as cond reads it (cond_js.c):
 * 0 with *x, -1 when p is not a number. */
static int mp_number(const unsigned char *p, size_t n, double *x)
{
    if (!n)
        return -1;
    unsigned c = p[0];
    if (c <= 0x7f) { *x = (double)c; return 0; }
    if (c >= 0xe0) { *x = (double)(int8_t)c; return 0; }
    static const uint8_t need[] = { [0xca - 0xca] = 4, [0xcb - 0xca] = 8, [0xcc - 0xca] = 1,
                                    [0xcd - 0xca] = 2, [0xce - 0xca] = 4, [0xcf - 0xca] = 8,
                                    [0xd0 - 0xca] = 1, [0xd1 - 0xca] = 2, [0xd2 - 0xca] = 4,
                                    [0xd3 - 0xca] = 8 };
    if (c < 0xca || c > 0xd3 || n < 1u + need[c - 0xca])
        return -1;
    uint64_t u = 0;
    for (unsigned i = 0; i < need[c - 0xca]; i++)
        u = u << 8 | p[1 + i];
    switch (c) {
    case 0xca: { float f; uint32_t w = (uint32_t)u; memcpy(&f, &w, 4); *x = (double)f; return 0; }
    case 0xcb: memcpy(x, &u, 8); return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: *x = (double)u; return 0;
    case 0xd0: *x = (double)(int8_t)u; return 0;
    case 0xd1: *x = (double)(int16_t)u; return 0;
    case 0xd2: *x = (double)(int32_t)u; return 0;
    default: *x = (double)(int64_t)u; return 0;
    }
}

/* A clause's native form (struct clause) on its root's value: 1 holds,
 * 0 not, -1 a value the form does not cover (then cond decides). */
static int eval_fast(const struct clause *c, const unsigned char *p, size_t n)
{
    if (c->fast == F_NUM) {
        double x;
        if (mp_number(p, n, &x))
            return -1;
        for (int k = 0; k < c->nops; k++) {
            double t = c->num[k];
            bool ok;
            switch (c->op[k]) {
            case FO_GT: ok = x > t; break;       /* NaN: false, as cond */
            case FO_GTE: ok = x >= t; break;
            case FO_LT: ok = x < t; break;
            case FO_LTE: ok = x <= t; break;
            case FO_EQ: ok = x == t; break;
            case FO_NE: ok = !(x == t); break;
            case FO_EXISTS: ok = true; break;    /* a number is not null */
            default: ok = false; break;          /* $exists: false */
            }
            if (!ok)
                return 0;
        }
        return 1;
    }
    /* F_ELEM: an array of strings and scalars (fixarray, array16/32) */
    uint32_t cnt;
    size_t at;
    if (!n)
        return -1;
    if (p[0] >= 0x90 && p[0] <= 0x9f) {
        cnt = p[0] & 0x0f;
        at = 1;
    } else if (p[0] == 0xdc && n >= 3) {
        cnt = (uint32_t)p[1] << 8 | p[2];
        at = 3;
    } else if (p[0] == 0xdd && n >= 5) {
        cnt = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        at = 5;
    } else {
        return -1; /* not an array (cond: false), or one to read with cond */
    }
    for (uint32_t i = 0; i < cnt; i++) {
        if (at >= n)
            return -1;
        unsigned t = p[at];
        size_t sl, hl;
        if (t >= 0xa0 && t <= 0xbf) {
            sl = t & 0x1f;
            hl = 1;
        } else if (t == 0xd9 && n - at >= 2) {
            sl = p[at + 1];
            hl = 2;
        } else if (t == 0xda && n - at >= 3) {
            sl = (size_t)p[at + 1] << 8 | p[at + 2];
            hl = 3;
        } else if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
            at++; /* a small number, nil, a boolean: never === a string */
            continue;
        } else {
            return -1; /* bin, ext (cond reads them as strings), containers, ... */
        }
        if (n - at < hl + sl)
            return -1;
        if (sl == c->slen && !memcmp(p + at + hl, c->str, sl))
            return 1; /* cond stops at the first match too */
        at += hl + sl;
    }
    return 0;
}

static int eval_clause(const struct condset *cs, struct condset_scratch *sc, int ci, const char *mp,
                       size_t len, const uint64_t *refs)
{
    const struct clause *cl = &cs->cl[ci];
    if (cl->fast && sc->roots_ok) {
        const struct rootval *v = &sc->rv[cs->g[cl->group].root];
        if (v->p) {
            int r = eval_fast(cl, (const unsigned char *)v->p, v->len);
            if (r >= 0)
                return r;
        }
    }
    if (!sc->attrs_ready) {
        sc->attrs_ready = true;
        sc->attrs_ok = cond_attrs_init(&sc->attrs, mp, len) == 0;
    }
    struct segctx x = { cs, refs };
    struct cond_env env = { .segment = seg_cb, .segment_ud = &x };
    const struct cond *c = cs->cl[ci].c;
    return sc->attrs_ok ? cond_eval_attrs(c, &sc->attrs, &env) : cond_eval(c, mp, len, &env);
}

static void done_attrs(struct condset_scratch *sc)
{
    if (sc->attrs_ready && sc->attrs_ok)
        cond_attrs_free(&sc->attrs);
    sc->attrs_ready = false;
}

/* Find the value of every root in the top-level map (the last pair with
 * that key wins, as cond reads it).  false when the map cannot be read by
 * key bytes (not a map, a key that is not a str): then nothing is
 * remembered for this profile. */
static bool find_roots(const struct condset *cs, struct condset_scratch *sc, const char *mp,
                       size_t len)
{
    if (sc->rvcap < cs->nroots) {
        struct rootval *nr = realloc(sc->rv, (size_t)cs->nroots * sizeof *nr);
        if (!nr)
            return false;
        sc->rv = nr;
        sc->rvcap = cs->nroots;
    }
    for (int i = 0; i < cs->nroots; i++)
        sc->rv[i].p = NULL;
    uint32_t count;
    size_t at, n;
    if (mpread_map(mp, len, &count, &at))
        return false;
    for (uint32_t k = 0; k < count; k++) {
        if (!mpread_is_str(mp + at, len - at))
            return false;
        const char *key;
        uint32_t kl;
        if (mpread_str(mp + at, len - at, &key, &kl, &n))
            return false;
        at += n;
        if (mpread_skip(mp + at, len - at, &n))
            return false;
        /* roots are few: a linear scan of names beats hashing them */
        for (int i = 0; i < cs->nroots; i++)
            if (cs->roots[i].len == kl && cs->roots[i].name[0] == key[0] &&
                !memcmp(cs->roots[i].name, key, kl)) {
                sc->rv[i].p = mp + at;
                sc->rv[i].len = n;
                break;
            }
        at += n;
    }
    return true;
}

/* Does map `p` have only str keys?  (Then a key's bytes name it exactly.) */
static bool str_keyed_map(const char *p, size_t len)
{
    uint32_t count;
    size_t at, n;
    if (mpread_map(p, len, &count, &at))
        return false;
    for (uint32_t k = 0; k < count; k++) {
        if (!mpread_is_str(p + at, len - at) || mpread_skip(p + at, len - at, &n))
            return false;
        at += n;
        if (mpread_skip(p + at, len - at, &n))
            return false;
        at += n;
    }
    return true;
}

/* The bytes a group's clauses depend on, tagged: 'X' root absent, 'P' the
 * value there, 'M' key absent in the root map, 'N' the root is not a map
 * with str keys (then the whole root value).  false when too long to
 * remember. */
static bool group_key(const struct condset *cs, const struct group *g, const struct rootval *rv,
                      unsigned char *key, size_t *kl)
{
    (void)cs;
    if (!rv->p) {
        key[0] = 'X';
        *kl = 1;
        return true;
    }
    const char *v = rv->p;
    size_t vl = rv->len;
    char tag = 'P';
    if (g->sub) {
        const char *sv;
        size_t sl;
        int f = str_keyed_map(rv->p, rv->len) ? mpread_find(rv->p, rv->len, g->sub, g->sublen, &sv, &sl)
                                              : -1;
        if (f == 1) {
            v = sv;
            vl = sl;
        } else if (f == 0) {
            tag = 'M';
            vl = 0;
        } else {
            tag = 'N';
        }
    }
    if (vl + 1 > MEMO_KEYMAX)
        return false;
    key[0] = (unsigned char)tag;
    memcpy(key + 1, v, vl);
    *kl = vl + 1;
    return true;
}

int condset_eval(const struct condset *cs, struct condset_scratch *sc, const char *mp, size_t len,
                 const uint64_t *refs, const uint64_t *mask, uint64_t *out)
{
    size_t nw = cs->nw;
    if (mask)
        memcpy(out, mask, nw * sizeof *out);
    else
        memset(out, 0xff, nw * sizeof *out);
    if (cs->n & 63)
        out[nw - 1] &= (1ull << (cs->n & 63)) - 1;
    if (!cs->n) {
        out[0] = 0;
        return 0;
    }
    /* membership tests: a few words per member that has them */
    for (int k = 0; k < cs->nsegm; k++) {
        int i = cs->segm_list[k];
        if (!bit_get(out, i))
            continue;
        const struct cmember *m = &cs->m[i];
        bool ok = true;
        for (size_t w = 0; w < cs->nrw && ok; w++) {
            uint64_t r = refs ? refs[w] : 0;
            if (m->all && (r & m->all[w]) != m->all[w])
                ok = false;
            if (m->none && (r & m->none[w]))
                ok = false;
        }
        if (ok && m->any)
            ok = refs && bits_meet(refs, m->any, cs->nrw);
        if (!ok)
            out[i >> 6] &= ~(1ull << (i & 63));
    }
    sc->attrs_ready = false;
    struct setmemo *sm = cs->ng ? memo_for(sc, cs) : NULL;
    if (cs->ng && !sm)
        return ERR_NOMEM;
    bool roots = cs->ng && find_roots(cs, sc, mp, len);
    sc->roots_ok = roots;
    if (sc->tmpcap < nw) {
        uint64_t *t = realloc(sc->tmp, nw * sizeof *t);
        if (!t)
            return ERR_NOMEM;
        sc->tmp = t;
        sc->tmpcap = nw;
    }
    /* the groups still needed: their keys and hashes first, each memory
     * entry fetched ahead, so the look-ups below overlap their misses */
    if (sc->gcap < cs->ng) {
        struct gkey *k = realloc(sc->gk, (size_t)cs->ng * sizeof *k);
        if (!k)
            return ERR_NOMEM;
        sc->gk = k;
        sc->gcap = cs->ng;
    }
    for (int gi = 0; gi < cs->ng; gi++) {
        const struct group *g = &cs->g[gi];
        struct gkey *gk = &sc->gk[gi];
        gk->need = bits_meet(g->users, out, nw);
        gk->keyed = 0;
        if (!gk->need || !roots || sm->g[gi].off)
            continue;
        size_t kl;
        if (group_key(cs, g, &sc->rv[g->root], gk->key, &kl)) {
            gk->keyed = 1;
            gk->kl = (uint8_t)kl;
            gk->h = fnv64(gk->key, kl, FNV64_INIT);
            const char *home = gmemo_home(&sm->g[gi], gk->h);
            if (home) {
                __builtin_prefetch(home);
                __builtin_prefetch(home + 64);
            }
        }
    }
    /* remembered groups first (a look-up each), so that the groups
     * evaluated clause by clause see only the members still in the running */
    for (int pass = 0; pass < 2; pass++)
    for (int gi = 0; gi < cs->ng; gi++) {
        const struct group *g = &cs->g[gi];
        const struct gkey *gk = &sc->gk[gi];
        if ((pass == 0) != (gk->keyed != 0) || !gk->need || !bits_meet(g->users, out, nw))
            continue;
        struct gmemo *gm = &sm->g[gi];
        if (gk->keyed && gm->looks == MEMO_WINDOW) {
            /* values that seldom repeat (a price, a list of interests):
             * remembering costs a whole-group evaluation per miss and buys
             * little, so then only the clauses still needed are evaluated */
            if (gm->hits < MEMO_MINHITS) {
                free(gm->tab);
                gm->tab = NULL;
                gm->cap = gm->n = 0;
                gm->off = 1;
            }
            gm->looks = gm->hits = 0;
        }
        if (gk->keyed && !gm->off) {
            const uint64_t *hit = gmemo_get(gm, gk->h, gk->key, gk->kl);
            gm->looks++;
            gm->hits += hit != NULL;
            if (hit) {
                for (size_t w = 0; w < nw; w++)
                    out[w] &= hit[w];
                continue;
            }
            /* the whole group, for every member, to remember it */
            uint64_t *r = sc->tmp;
            memset(r, 0xff, nw * sizeof *r);
            for (int k = 0; k < g->ncl; k++) {
                const struct clause *c = &cs->cl[g->cl[k]];
                if (eval_clause(cs, sc, g->cl[k], mp, len, refs) != 1)
                    for (size_t w = 0; w < nw; w++)
                        r[w] &= ~c->users[w];
            }
            gmemo_put(gm, nw, gk->h, gk->key, gk->kl, r);
            for (size_t w = 0; w < nw; w++)
                out[w] &= r[w];
            continue;
        }
        /* not remembered: only the clauses of members still in the running */
        for (int k = 0; k < g->ncl; k++) {
            const struct clause *c = &cs->cl[g->cl[k]];
            if (!bits_meet(c->users, out, nw))
                continue;
            if (eval_clause(cs, sc, g->cl[k], mp, len, refs) != 1)
                for (size_t w = 0; w < nw; w++)
                    out[w] &= ~c->users[w];
        }
    }
    for (int k = 0; k < cs->ncplx; k++) {
        const struct clause *c = &cs->cl[cs->cplx[k]];
        if (!bits_meet(c->users, out, nw))
            continue;
        if (eval_clause(cs, sc, cs->cplx[k], mp, len, refs) != 1)
            for (size_t w = 0; w < nw; w++)
                out[w] &= ~c->users[w];
    }
    done_attrs(sc);
    sc->roots_ok = false;
    int count = 0;
    for (size_t w = 0; w < nw; w++)
        count += __builtin_popcountll(out[w]);
    return count;
}

static void append(char *why, size_t len, size_t *at, const char *fmt, const char *s)
{
    if (*at >= len)
        return;
    int n = snprintf(why + *at, len - *at, fmt, s);
    if (n > 0)
        *at += (size_t)n;
    if (*at >= len)
        *at = len - 1;
}

/* "gold, vip" for the refs set in `mask` (and, with `refs`, set or not set
 * there as `want` says). */
static void list_refs(const struct condset *cs, const uint64_t *mask, const uint64_t *refs, int want,
                      char *why, size_t len, size_t *at)
{
    int first = 1;
    for (int k = 0; k < cs->nrefs; k++) {
        if (!bit_get(mask, k))
            continue;
        if (want >= 0 && (refs && bit_get(refs, k)) != want)
            continue;
        append(why, len, at, first ? "%s" : ", %s", cs->refs[k]);
        first = 0;
    }
}

int condset_explain(const struct condset *cs, struct condset_scratch *sc, int i, const char *mp,
                    size_t len, const uint64_t *refs, char *why, size_t whylen)
{
    if (whylen)
        why[0] = 0;
    if (i < 0 || i >= cs->n)
        return 1;
    const struct cmember *m = &cs->m[i];
    size_t at = 0;
    sc->attrs_ready = false;
    sc->roots_ok = false; /* explain evaluates with cond alone */
    int held = 1;
    for (int k = 0; k < m->nt && held; k++) {
        const struct ctest *t = &m->t[k];
        switch (t->kind) {
        case T_SEG:
            if (!(refs && bit_get(refs, t->idx))) {
                held = 0;
                append(why, whylen, &at, "%s: not in segment ", t->label);
                append(why, whylen, &at, "%s", cs->refs[t->idx]);
            }
            break;
        case T_ANY:
            if (!(refs && bits_meet(refs, m->any, cs->nrw))) {
                held = 0;
                append(why, whylen, &at, "%s", "segments: in none of ");
                list_refs(cs, m->any, NULL, -1, why, whylen, &at);
            }
            break;
        case T_NONE:
            if (refs && bits_meet(refs, m->none, cs->nrw)) {
                held = 0;
                append(why, whylen, &at, "%s", "exclude: in ");
                list_refs(cs, m->none, refs, 1, why, whylen, &at);
            }
            break;
        default:
            if (eval_clause(cs, sc, t->idx, mp, len, refs) != 1) {
                held = 0;
                append(why, whylen, &at, "conditions %s ", t->label);
                append(why, whylen, &at, "%s", cs->cl[t->idx].text);
            }
            break;
        }
    }
    done_attrs(sc);
    return held;
}
