/*
 * audience.c — campaign audiences and p.segments for one customer (see
 * audience.h).  Per thread it keeps: the condset scratch (the memory of
 * group values, so a tier or a country is judged once per thread, not per
 * decide), the view buffer, and, per channel, the map from the condset's
 * segment references to the live segment generation's indexes.
 */
#include "engine/audience.h"
#include "engine/cond.h"
#include "engine/condset.h"
#include "engine/formula.h"
#include "engine/rules.h"
#include "engine/segments.h"
#include "base/err.h"
#include "base/buf.h"
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct refmap {
    const struct condset *cs;  /* the set the map was made for ... */
    uint64_t rseq, sseq;       /* ... in these rules and segment generations */
    int *seg;                  /* ref k → segment index, -1 */
    int n;
};

struct tls {
    struct condset_scratch *cs;
    struct buf view;
    uint64_t *bits, *refs, *out, *bmask, *bout;
    size_t bitsw, refsw, outw, bmaskw, boutw;
    struct refmap maps[32];
    /* the Lua strings of the segment ids, per state and generation */
    struct lua_State *ids_L;
    int ids_ref;
    uint64_t ids_seq;
};

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static char g_marker; /* its address marks our id tables in a Lua registry */

static void tls_free(void *p)
{
    struct tls *x = p;
    if (!x)
        return;
    condset_scratch_free(x->cs);
    buf_free(&x->view);
    free(x->bits);
    free(x->refs);
    free(x->out);
    free(x->bmask);
    free(x->bout);
    for (int i = 0; i < 32; i++)
        free(x->maps[i].seg);
    free(x);
}

static void key_init(void)
{
    pthread_key_create(&g_key, tls_free);
}

static struct tls *tls(void)
{
    pthread_once(&g_once, key_init);
    struct tls *x = pthread_getspecific(g_key);
    if (x)
        return x;
    if (!(x = calloc(1, sizeof *x)) || !(x->cs = condset_scratch_new())) {
        free(x);
        return NULL;
    }
    x->ids_ref = LUA_NOREF;
    pthread_setspecific(g_key, x);
    return x;
}

static uint64_t *words(uint64_t **p, size_t *cap, size_t n)
{
    if (n > *cap) {
        uint64_t *q = realloc(*p, n * sizeof *q);
        if (!q)
            return NULL;
        *p = q;
        *cap = n;
    }
    return *p;
}

void audience_begin(struct audience_cust *ac, struct store_txn *t, const char *cust,
                    const void *prof, size_t plen, const void *stats, size_t slen, int64_t now)
{
    memset(ac, 0, sizeof *ac);
    ac->t = t;
    ac->cust = cust;
    ac->clen = strlen(cust);
    ac->prof = prof;
    ac->plen = plen;
    ac->stats = stats;
    ac->slen = slen;
    ac->now = now;
    ac->sg = segments_gen_acquire();
}

void audience_end(struct audience_cust *ac)
{
    segments_gen_release(ac->sg);
    ac->sg = NULL;
}

/* The customer's segments, read once. */
static int load_bits(struct audience_cust *ac, struct tls *x)
{
    if (ac->bits_state)
        return ac->bits_state;
    ac->bits_state = -1;
    if (!ac->sg || !ac->sg->nseg || !words(&x->bits, &x->bitsw, ac->sg->nw))
        return -1;
    int rc = segments_customer_bits(ac->t, ac->sg, ac->cust, ac->clen, x->bits);
    if (rc < 0)
        return -1;
    ac->bits = x->bits;
    ac->any = rc == 1;
    return ac->bits_state = 1;
}

void audience_push_segments(struct audience_cust *ac, lua_State *L, int p_idx)
{
    struct tls *x = tls();
    if (!x || load_bits(ac, x) != 1 || !ac->any)
        return;
    const struct segments_gen *sg = ac->sg;
    /* the ids as Lua strings, made once per state and generation */
    int ok = 0;
    if (x->ids_L == L && x->ids_seq == sg->seq && x->ids_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, x->ids_ref);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 0);
            ok = lua_touserdata(L, -1) == &g_marker;
            lua_pop(L, 1);
        }
        if (!ok)
            lua_pop(L, 1);
    }
    if (!ok) {
        if (x->ids_L == L && x->ids_ref != LUA_NOREF)
            luaL_unref(L, LUA_REGISTRYINDEX, x->ids_ref);
        lua_createtable(L, sg->nseg, 0);
        lua_pushlightuserdata(L, &g_marker);
        lua_rawseti(L, -2, 0);
        for (int j = 0; j < sg->nseg; j++) {
            lua_pushstring(L, sg->segs[j].id);
            lua_rawseti(L, -2, j + 1);
        }
        lua_pushvalue(L, -1);
        x->ids_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        x->ids_L = L;
        x->ids_seq = sg->seq;
    }
    int ids = lua_gettop(L);
    int n = 0;
    for (size_t w = 0; w < sg->nw; w++)
        n += __builtin_popcountll(ac->bits[w]);
    lua_createtable(L, 0, n);
    for (size_t w = 0; w < sg->nw; w++) {
        uint64_t b = ac->bits[w];
        while (b) {
            int j = (int)(w * 64) + __builtin_ctzll(b);
            b &= b - 1;
            lua_rawgeti(L, ids, j + 1);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
    }
    lua_setfield(L, p_idx, "segments");
    lua_settop(L, ids - 1);
}

/* The refs bitset of condset `cs` (channel `chi` of rules generation `g`)
 * for this customer; NULL when the set names no segment. */
static const uint64_t *refs_for(struct audience_cust *ac, struct tls *x, const struct rules_gen *g,
                                int chi, const struct condset *cs)
{
    int nrefs = condset_nrefs(cs);
    if (!nrefs)
        return NULL;
    size_t nw = CONDSET_WORDS(nrefs);
    if (!words(&x->refs, &x->refsw, nw))
        return NULL;
    memset(x->refs, 0, nw * sizeof *x->refs);
    if (load_bits(ac, x) != 1 || !ac->any)
        return x->refs;
    struct refmap *m = &x->maps[chi & 31];
    if (m->cs != cs || m->rseq != g->seq || m->sseq != ac->sg->seq) {
        int *seg = realloc(m->seg, (size_t)nrefs * sizeof *seg);
        if (!seg)
            return x->refs;
        m->seg = seg;
        for (int k = 0; k < nrefs; k++) {
            const char *id = condset_ref(cs, k);
            seg[k] = segments_find(ac->sg, id, strlen(id));
        }
        m->cs = cs;
        m->rseq = g->seq;
        m->sseq = ac->sg->seq;
        m->n = nrefs;
    }
    for (int k = 0; k < nrefs; k++) {
        int j = m->seg[k];
        if (j >= 0 && (ac->bits[j >> 6] >> (j & 63)) & 1)
            x->refs[k >> 6] |= 1ull << (k & 63);
    }
    return x->refs;
}

/* The attributes the conditions see; NULL when they cannot be built. */
static const char *view(struct audience_cust *ac, struct tls *x, size_t *len)
{
    if (ac->view_state == 0) {
        buf_reset(&x->view);
        ac->view_state = segments_view(&x->view, ac->cust, ac->clen, ac->prof, ac->plen,
                                       ac->stats, ac->slen, ac->now) ? -1 : 1;
    }
    if (ac->view_state < 0)
        return NULL;
    ac->view_p = x->view.p;
    ac->view_len = *len = x->view.len;
    return x->view.p;
}

const char *audience_view(struct audience_cust *ac, size_t *len)
{
    if (ac->view_state > 0) { /* built: no tls() look-up (one call per candidate) */
        *len = ac->view_len;
        return ac->view_p;
    }
    struct tls *x = tls();
    return x ? view(ac, x, len) : NULL;
}

const uint64_t *audience_channel(struct audience_cust *ac, const struct rules_gen *g, int chi,
                                 const uint64_t *mask)
{
    const struct condset *cs = g->aud[chi];
    if (!cs)
        return NULL;
    struct tls *x = tls();
    int n = condset_nmembers(cs);
    size_t nw = CONDSET_WORDS(n ? n : 1);
    if (!x || !words(&x->out, &x->outw, nw))
        return NULL;
    size_t vl = 1;
    const char *v = condset_reads_attrs(cs) ? view(ac, x, &vl) : NULL;
    if (!v) { /* nothing to read (or no view): an empty map */
        v = "\x80";
        vl = 1;
    }
    const uint64_t *refs = refs_for(ac, x, g, chi, cs);
    if (condset_eval(cs, x->cs, v, vl, refs, mask, x->out) < 0)
        memset(x->out, 0, nw * sizeof *x->out); /* out of memory: nothing passes */
    return x->out;
}

void audience_boosts_forget(struct audience_cust *ac) { ac->boost_state = 0; }

const uint64_t *audience_boosts(struct audience_cust *ac, const struct rules_gen *g, int chi,
                                const uint64_t *mask)
{
    if (ac->boost_state) /* the first call's bits (no tls() look-up: one call per candidate) */
        return ac->boost_state > 0 && ac->boost_chi == chi ? ac->boost_bits : NULL;
    ac->boost_state = -1;
    ac->boost_chi = chi;
    const struct condset *cs = g->boost[chi];
    struct tls *x = tls();
    if (!cs || !x)
        return NULL;
    int n = condset_nmembers(cs), npos = g->nby_channel[chi];
    size_t nw = CONDSET_WORDS(n);
    if (!words(&x->bout, &x->boutw, nw) || (mask && !words(&x->bmask, &x->bmaskw, nw)))
        return NULL;
    const uint64_t *bm = NULL;
    if (mask) { /* positions -> their boosts' members */
        memset(x->bmask, 0, nw * sizeof *x->bmask);
        const int *first = g->boost_first[chi], *member = g->boost_member[chi];
        const struct rules_campaign *camps = g->camps;
        const int *list = g->by_channel[chi];
        for (size_t w = 0; w < CONDSET_WORDS(npos); w++)
            for (uint64_t bits = mask[w]; bits; bits &= bits - 1) {
                int j = (int)(w * 64) + __builtin_ctzll(bits);
                if (j >= npos || first[j] < 0)
                    continue;
                int k = formula_nboosts(camps[list[j]].score_formula);
                for (int i = first[j]; i < first[j] + k; i++)
                    x->bmask[member[i] >> 6] |= 1ull << (member[i] & 63);
            }
        bm = x->bmask;
    }
    size_t vl = 0;
    const char *v = view(ac, x, &vl);
    if (!v || condset_eval(cs, x->cs, v, vl, NULL, bm, x->bout) < 0)
        return NULL;
    ac->boost_state = 1;
    return ac->boost_bits = x->bout;
}

void audience_explain(struct audience_cust *ac, const struct rules_gen *g, int chi, int j,
                      char *why, size_t len)
{
    if (len)
        why[0] = 0;
    const struct condset *cs = g->aud[chi];
    struct tls *x = tls();
    if (!cs || !x || len < 16)
        return;
    size_t vl = 0;
    const char *v = view(ac, x, &vl);
    if (!v) {
        v = "\x80";
        vl = 1;
    }
    const uint64_t *refs = refs_for(ac, x, g, chi, cs);
    memcpy(why, "audience: ", 10);
    if (condset_explain(cs, x->cs, j, v, vl, refs, why + 10, len - 10) == 1)
        why[0] = 0;
}

int audience_campaign(struct audience_cust *ac, const struct rules_gen *g, int chi, int camp,
                      char *why, size_t len)
{
    if (len)
        why[0] = 0;
    if (!g->aud[chi] || !g->aud_pos[chi])
        return 1;
    int j = g->aud_pos[chi][camp];
    if (j < 0)
        return 1;
    size_t nw = CONDSET_WORDS(condset_nmembers(g->aud[chi]));
    uint64_t *m = calloc(nw, sizeof *m);
    if (!m)
        return 0;
    m[j >> 6] |= 1ull << (j & 63);
    const uint64_t *out = audience_channel(ac, g, chi, m);
    free(m);
    int held = out && (out[j >> 6] >> (j & 63)) & 1;
    if (!held)
        audience_explain(ac, g, chi, j, why, len);
    return held;
}
