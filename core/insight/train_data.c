/* train_data.c — a model's examples, built from the event log and the
 * profiles: anchors (an impression of the campaign, or a snapshot time),
 * their labels (what happened within `within` after), and their features
 * as they were at the anchor.
 *
 * Point in time: p.stats at an anchor is replayed from the customer's
 * events before it, in the shape the live p.stats has (events.h), so a
 * label's own conversion never leaks into `stats.frequency`; profile
 * attributes are the stored ones (the store keeps no history of them).
 * The context of an example is the anchor event's: its channel, `now` =
 * its time, and the fields of its `properties`; a snapshot's context is
 * only `now`.  The features themselves are computed by models_features on
 * these tables, exactly as decide computes them.
 *
 * Customers are visited in key order of STORE_CUSTIDX (their event
 * index), in read transactions of at most CHUNK_CUSTOMERS customers so
 * that a long training does not pin old pages of a busy store. */
#include "insight/train.h"
#include "insight/train_internal.h"
#include "insight/events_log.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include "engine/models.h"
#include "lua/luavm.h"
#include "store/store.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_CUSTOMERS 20000
#define MAX_TYPES_SEEN 256

static const char *builtin[6] = { "impression", "click", "conversion", "send", "open", "dismiss" };

static int builtin_index(const char *t, size_t n)
{
    for (int i = 0; i < 6; i++)
        if (strlen(builtin[i]) == n && !memcmp(builtin[i], t, n))
            return i;
    return -1;
}

/* ---------------------------------------------------------------------- */
/* a minimal msgpack reader for the stored event map                       */

struct mp {
    const unsigned char *p, *e;
};

static int mp_need(struct mp *m, size_t n)
{
    return (size_t)(m->e - m->p) >= n ? 0 : -1;
}

static uint32_t be(const unsigned char *p, int n)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* A string: *s / *n point into the buffer.  -1 when not a string. */
static int mp_str(struct mp *m, const char **s, size_t *n)
{
    if (mp_need(m, 1))
        return -1;
    unsigned c = *m->p;
    size_t len, hl;
    if ((c & 0xe0) == 0xa0) {
        len = c & 0x1f;
        hl = 1;
    } else if (c == 0xd9 || c == 0xda || c == 0xdb) {
        int w = c == 0xd9 ? 1 : c == 0xda ? 2 : 4;
        if (mp_need(m, 1 + (size_t)w))
            return -1;
        len = be(m->p + 1, w);
        hl = 1 + (size_t)w;
    } else {
        return -1;
    }
    if (mp_need(m, hl + len))
        return -1;
    *s = (const char *)m->p + hl;
    *n = len;
    m->p += hl + len;
    return 0;
}

static int mp_skip(struct mp *m, int depth);

static int mp_skipn(struct mp *m, uint64_t n, int depth)
{
    for (uint64_t i = 0; i < n; i++)
        if (mp_skip(m, depth))
            return -1;
    return 0;
}

static int mp_skip(struct mp *m, int depth)
{
    if (mp_need(m, 1) || depth > 64)
        return -1;
    unsigned c = *m->p++;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 0;
    if ((c & 0xe0) == 0xa0)
        return mp_need(m, c & 0x1f) ? -1 : (m->p += c & 0x1f, 0);
    if ((c & 0xf0) == 0x90)
        return mp_skipn(m, c & 0x0f, depth + 1);
    if ((c & 0xf0) == 0x80)
        return mp_skipn(m, 2u * (c & 0x0f), depth + 1);
    size_t fixed = 0;
    switch (c) {
    case 0xcc: case 0xd0: fixed = 1; break;
    case 0xcd: case 0xd1: fixed = 2; break;
    case 0xca: case 0xce: case 0xd2: fixed = 4; break;
    case 0xcb: case 0xcf: case 0xd3: fixed = 8; break;
    case 0xd4: fixed = 2; break;
    case 0xd5: fixed = 3; break;
    case 0xd6: fixed = 5; break;
    case 0xd7: fixed = 9; break;
    case 0xd8: fixed = 17; break;
    default: break;
    }
    if (fixed)
        return mp_need(m, fixed) ? -1 : (m->p += fixed, 0);
    int w = 0, ext = 0;
    switch (c) {
    case 0xc4: case 0xd9: w = 1; break;
    case 0xc5: case 0xda: w = 2; break;
    case 0xc6: case 0xdb: w = 4; break;
    case 0xc7: w = 1; ext = 1; break;
    case 0xc8: w = 2; ext = 1; break;
    case 0xc9: w = 4; ext = 1; break;
    case 0xdc: case 0xde: w = 2; break;
    case 0xdd: case 0xdf: w = 4; break;
    default: return -1;
    }
    if (mp_need(m, (size_t)w))
        return -1;
    uint32_t n = be(m->p, w);
    m->p += w;
    if (c == 0xdc || c == 0xdd)
        return mp_skipn(m, n, depth + 1);
    if (c == 0xde || c == 0xdf)
        return mp_skipn(m, 2ull * n, depth + 1);
    size_t body = (size_t)n + (size_t)ext;
    return mp_need(m, body) ? -1 : (m->p += body, 0);
}

static int mp_num(struct mp *m, double *v)
{
    if (mp_need(m, 1))
        return -1;
    unsigned c = *m->p;
    const unsigned char *q = m->p + 1;
    if (c <= 0x7f) {
        *v = c;
        m->p++;
        return 0;
    }
    if (c >= 0xe0) {
        *v = (int8_t)c;
        m->p++;
        return 0;
    }
    int w = c == 0xcc || c == 0xd0 ? 1 : c == 0xcd || c == 0xd1 ? 2
            : c == 0xce || c == 0xd2 || c == 0xca ? 4 : c == 0xcf || c == 0xd3 || c == 0xcb ? 8 : 0;
    if (!w || mp_need(m, 1 + (size_t)w))
        return -1;
    uint64_t u = 0;
    for (int i = 0; i < w; i++)
        u = u << 8 | q[i];
    if (c == 0xca) {
        uint32_t b32 = (uint32_t)u;
        float f;
        memcpy(&f, &b32, 4);
        *v = f;
    } else if (c == 0xcb) {
        double d;
        memcpy(&d, &u, 8);
        *v = d;
    } else if (c >= 0xd0) { /* signed */
        int64_t s = w == 1 ? (int8_t)u : w == 2 ? (int16_t)u : w == 4 ? (int32_t)u : (int64_t)u;
        *v = (double)s;
    } else {
        *v = (double)u;
    }
    m->p += 1 + (size_t)w;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* one customer's events                                                   */

struct cev {
    int64_t ts;                  /* seconds */
    int kind;                    /* builtin index, or -1 custom */
    int custom;                  /* index into the customer's custom types, or -1 */
    unsigned anchor : 1, outcome : 1, labeltype : 1, has_rev : 1;
    double revenue;
    unsigned char key[16];       /* STORE_EVENTS key: to read properties */
    char channel[33];
};

struct ctype {
    char name[33];
    long n;
    int64_t last;
};

/* p.stats being replayed */
struct replay {
    int64_t first, last, last_conv;
    long events, n[6];
    int64_t lastk[6];
    double revenue;
    int has_rev;
};

struct builder {
    const struct models_def *d;
    struct luavm *vm;
    lua_State *L;
    const int *fn_refs;
    struct store_txn *t;
    int64_t now, from, to;
    double rate;                 /* sampling rate of examples */
    int64_t *snaps;              /* snapshot times, ascending (churn / value) */
    int nsnaps;
    /* the customer being read */
    char cust[130];
    struct cev *ev;
    long nev, capev;
    struct ctype *ct;
    int nct, capct;
    /* output */
    struct train_rows *out;
    long cap;
    /* types seen (for the unknown-type check) */
    char (*seen)[33];
    int nseen;
    int stop_rc;
    char *err;
    size_t errlen;
    /* chunking */
    long in_chunk;
    unsigned char resume[160];
    size_t resume_len;
    int more;
};

static void seen_type(struct builder *b, const char *t, size_t n)
{
    if (n > 32)
        return;
    for (int i = 0; i < b->nseen; i++)
        if (strlen(b->seen[i]) == n && !memcmp(b->seen[i], t, n))
            return;
    if (b->nseen < MAX_TYPES_SEEN) {
        memcpy(b->seen[b->nseen], t, n);
        b->seen[b->nseen][n] = 0;
        b->nseen++;
    }
}

static int str_is(const char *s, size_t n, const char *z)
{
    return z && strlen(z) == n && !memcmp(s, z, n);
}

static int custom_index(struct builder *b, const char *t, size_t n)
{
    for (int i = 0; i < b->nct; i++)
        if (strlen(b->ct[i].name) == n && !memcmp(b->ct[i].name, t, n))
            return i;
    if (n > 32)
        return -1;
    if (b->nct == b->capct) {
        int nc = b->capct ? 2 * b->capct : 8;
        struct ctype *x = realloc(b->ct, sizeof *x * (size_t)nc);
        if (!x)
            return -1;
        b->ct = x;
        b->capct = nc;
    }
    struct ctype *c = &b->ct[b->nct++];
    memcpy(c->name, t, n);
    c->name[n] = 0;
    return b->nct - 1;
}

/* Read one stored event into e; 0, or -1 when unreadable (skipped). */
static int read_event(struct builder *b, const unsigned char key[16], struct cev *e)
{
    const void *v;
    size_t vl;
    if (store_get(b->t, STORE_EVENTS, key, 16, &v, &vl))
        return -1;
    struct mp m = { v, (const unsigned char *)v + vl };
    unsigned c = mp_need(&m, 1) ? 0 : *m.p;
    uint32_t n;
    if ((c & 0xf0) == 0x80) {
        n = c & 0x0f;
        m.p++;
    } else if (c == 0xde && !mp_need(&m, 3)) {
        n = be(m.p + 1, 2);
        m.p += 3;
    } else {
        return -1;
    }
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, 16);
    e->ts = (int64_t)(store_get_be64(key) / 1000);
    e->kind = -1;
    e->custom = -1;
    const char *type = NULL, *camp = NULL;
    size_t tl = 0, cl = 0;
    const struct models_label *lb = &b->d->label;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        size_t kl;
        if (mp_str(&m, &k, &kl))
            return -1;
        if (str_is(k, kl, "type")) {
            if (mp_str(&m, &type, &tl))
                return -1;
        } else if (str_is(k, kl, "campaign_id")) {
            if (mp_str(&m, &camp, &cl))
                return -1;
        } else if (str_is(k, kl, "channel")) {
            const char *s;
            size_t sl;
            if (mp_str(&m, &s, &sl))
                return -1;
            if (sl < sizeof e->channel) {
                memcpy(e->channel, s, sl);
                e->channel[sl] = 0;
            }
        } else if (str_is(k, kl, "revenue")) {
            if (mp_num(&m, &e->revenue))
                return -1;
            e->has_rev = 1;
        } else if (mp_skip(&m, 0)) {
            return -1;
        }
    }
    if (!type)
        return -1;
    seen_type(b, type, tl);
    e->kind = builtin_index(type, tl);
    if (e->kind < 0 && (e->custom = custom_index(b, type, tl)) < 0)
        return -1;
    if (lb->kind == MODELS_LABEL_EVENT) {
        int camp_ok = !lb->campaign || (camp && str_is(camp, cl, lb->campaign));
        e->anchor = camp_ok && str_is(type, tl, lb->after);
        e->outcome = camp_ok && str_is(type, tl, lb->event);
    } else {
        for (int i = 0; i < lb->ntypes; i++)
            if (str_is(type, tl, lb->types[i]))
                e->labeltype = 1;
    }
    return 0;
}

static void replay_add(struct builder *b, struct replay *r, const struct cev *e)
{
    if (!r->events || e->ts < r->first)
        r->first = e->ts;
    if (!r->events || e->ts > r->last)
        r->last = e->ts;
    r->events++;
    if (e->kind >= 0) {
        r->n[e->kind]++;
        if (e->ts > r->lastk[e->kind])
            r->lastk[e->kind] = e->ts;
    } else if (e->custom >= 0) {
        struct ctype *c = &b->ct[e->custom];
        c->n++;
        if (e->ts > c->last)
            c->last = e->ts;
    }
    if (e->has_rev) {
        r->revenue += e->revenue;
        r->has_rev = 1;
    }
    if (e->kind == 2 && e->ts > r->last_conv)
        r->last_conv = e->ts;
}

/* Push p.stats as the events module stores it (events.h). */
static void push_stats(struct builder *b, const struct replay *r)
{
    lua_State *L = b->L;
    lua_createtable(L, 0, 12);
    lua_pushnumber(L, (lua_Number)r->first);
    lua_setfield(L, -2, "first_seen");
    lua_pushnumber(L, (lua_Number)r->last);
    lua_setfield(L, -2, "last_seen");
    lua_pushnumber(L, (lua_Number)r->events);
    lua_setfield(L, -2, "events");
    for (int k = 0; k < 6; k++)
        if (r->n[k] > 0) {
            lua_pushnumber(L, (lua_Number)r->n[k]);
            lua_setfield(L, -2, builtin[k]);
        }
    int anycustom = 0;
    for (int i = 0; i < b->nct; i++)
        anycustom |= b->ct[i].n > 0;
    if (anycustom) {
        lua_createtable(L, 0, b->nct);
        for (int i = 0; i < b->nct; i++)
            if (b->ct[i].n > 0) {
                lua_pushnumber(L, (lua_Number)b->ct[i].n);
                lua_setfield(L, -2, b->ct[i].name);
            }
        lua_setfield(L, -2, "custom");
    }
    lua_createtable(L, 0, 6);
    for (int k = 0; k < 6; k++)
        if (r->lastk[k] > 0) {
            lua_pushnumber(L, (lua_Number)r->lastk[k]);
            lua_setfield(L, -2, builtin[k]);
        }
    for (int i = 0; i < b->nct; i++)
        if (b->ct[i].n > 0) {
            lua_pushnumber(L, (lua_Number)b->ct[i].last);
            lua_setfield(L, -2, b->ct[i].name);
        }
    lua_setfield(L, -2, "last");
    if (r->has_rev) {
        lua_pushnumber(L, r->revenue);
        lua_setfield(L, -2, "revenue");
    }
    if (r->last_conv > 0) {
        lua_pushnumber(L, (lua_Number)r->last_conv);
        lua_setfield(L, -2, "last_conversion");
    }
}

/* Deterministic sampling: hash of customer and time against the rate. */
static int sampled(struct builder *b, int64_t t)
{
    if (b->rate >= 1)
        return 1;
    uint32_t h = hash_fnv1a(b->cust, strlen(b->cust), HASH_FNV_INIT);
    h = hash_fnv1a(&t, sizeof t, h);
    return (double)h / 4294967296.0 < b->rate;
}

static int grow(struct builder *b)
{
    struct train_rows *o = b->out;
    if (o->n < b->cap)
        return 0;
    long nc = b->cap ? 2 * b->cap : 4096;
    int nf = b->d->ncols;
    float *x = realloc(o->x, sizeof *x * (size_t)nc * (size_t)nf);
    if (x)
        o->x = x;
    float *y = realloc(o->y, sizeof *y * (size_t)nc);
    if (y)
        o->y = y;
    int64_t *t = realloc(o->t, sizeof *t * (size_t)nc);
    if (t)
        o->t = t;
    if (!x || !y || !t)
        return ERR_NOMEM;
    b->cap = nc;
    return 0;
}

/* One example: p (with its stats set) at p_idx, ctx at ctx_idx. */
static int add_example(struct builder *b, int p_idx, int ctx_idx, int64_t t, float y)
{
    struct train_rows *o = b->out;
    int rc = grow(b);
    if (rc)
        return rc;
    float *x = o->x + o->n * b->d->ncols;
    struct models_feat_err fe;
    rc = models_features(b->vm, b->d, b->fn_refs, p_idx, ctx_idx, t, x, &fe);
    /* what is kept of a problem names no customer: it is stored with the
     * model's state, which a customer's erasure does not reach */
    if (rc) {
        o->fn_errors++;
        if (!o->fn_error[0])
            snprintf(o->fn_error, sizeof o->fn_error, "%s", fe.msg);
        return 0; /* the example is dropped; too many failures fail the training */
    }
    for (int i = 0; i < b->d->nfeats; i++)
        if (fe.bad[i]) {
            o->wrong_type[i]++;
            if (!o->wrong_example[i][0] && fe.feature == i)
                snprintf(o->wrong_example[i], sizeof o->wrong_example[i], "the first was a %s",
                         fe.got);
        }
    o->y[o->n] = y;
    o->t[o->n] = t;
    o->n++;
    return 0;
}

/* ctx of an anchor event: its properties, channel and now. */
static void push_anchor_ctx(struct builder *b, const struct cev *e)
{
    lua_State *L = b->L;
    int pushed = 0;
    const void *v;
    size_t vl;
    if (store_get(b->t, STORE_EVENTS, e->key, 16, &v, &vl) == 0) {
        struct mp m = { v, (const unsigned char *)v + vl };
        unsigned c = *m.p;
        uint32_t n = 0;
        if ((c & 0xf0) == 0x80) {
            n = c & 0x0f;
            m.p++;
        } else if (c == 0xde && !mp_need(&m, 3)) {
            n = be(m.p + 1, 2);
            m.p += 3;
        }
        for (uint32_t i = 0; i < n && !pushed; i++) {
            const char *k;
            size_t kl;
            if (mp_str(&m, &k, &kl))
                break;
            const unsigned char *vs = m.p;
            if (mp_skip(&m, 0))
                break;
            if (str_is(k, kl, "properties") &&
                luavm_push_msgpack(L, (const char *)vs, (size_t)(m.p - vs)) == 0) {
                if (lua_istable(L, -1))
                    pushed = 1;
                else
                    lua_pop(L, 1);
            }
        }
    }
    if (!pushed)
        lua_createtable(L, 0, 2);
    if (e->channel[0]) {
        lua_pushstring(L, e->channel);
        lua_setfield(L, -2, "channel");
    }
    lua_pushnumber(L, (lua_Number)e->ts);
    lua_setfield(L, -2, "now");
}

static int process_customer(struct builder *b)
{
    const struct models_def *d = b->d;
    const struct models_label *lb = &d->label;
    lua_State *L = b->L;
    int top = lua_gettop(L);
    b->out->customers++;
    /* is there anything to learn from this customer? */
    int any = 0;
    if (lb->kind == MODELS_LABEL_EVENT) {
        for (long i = 0; i < b->nev && !any; i++)
            any = b->ev[i].anchor && b->ev[i].ts >= b->from && b->ev[i].ts + lb->within <= b->to;
    } else {
        any = b->nev && b->nsnaps && b->ev[0].ts < b->snaps[b->nsnaps - 1];
    }
    if (!any)
        return 0;
    /* p: the stored profile, or { id = ... } */
    const void *pv;
    size_t pl;
    if (store_get(b->t, STORE_PROFILES, b->cust, strlen(b->cust), &pv, &pl) == 0 &&
        luavm_push_msgpack(L, pv, pl) == 0 && lua_istable(L, -1)) {
    } else {
        lua_settop(L, top);
        lua_createtable(L, 0, 2);
    }
    int p_idx = lua_gettop(L);
    lua_pushstring(L, b->cust);
    lua_setfield(L, p_idx, "id");
    struct replay r = { 0 };
    for (int i = 0; i < b->nct; i++) {
        b->ct[i].n = 0;
        b->ct[i].last = 0;
    }
    int rc = 0;
    if (lb->kind == MODELS_LABEL_EVENT) {
        int64_t last_taken = INT64_MIN / 2;
        for (long i = 0; i < b->nev && !rc; i++) {
            const struct cev *e = &b->ev[i];
            if (e->anchor && e->ts >= b->from && e->ts + lb->within <= b->to &&
                e->ts > last_taken + lb->within) {
                last_taken = e->ts;
                b->out->anchors++;
                if (sampled(b, e->ts)) {
                    float y = 0;
                    for (long j = i + 1; j < b->nev && b->ev[j].ts <= e->ts + lb->within; j++)
                        if (b->ev[j].outcome && b->ev[j].ts >= e->ts) {
                            y = 1;
                            break;
                        }
                    push_stats(b, &r);
                    lua_setfield(L, p_idx, "stats");
                    push_anchor_ctx(b, e);
                    rc = add_example(b, p_idx, lua_gettop(L), e->ts, y);
                    lua_settop(L, p_idx);
                }
            }
            replay_add(b, &r, e);
        }
    } else {
        long i = 0;
        for (int s = 0; s < b->nsnaps && !rc; s++) {
            int64_t at = b->snaps[s];
            while (i < b->nev && b->ev[i].ts < at)
                replay_add(b, &r, &b->ev[i++]);
            if (!r.events || (lb->active && r.last < at - lb->active))
                continue;
            b->out->anchors++;
            if (!sampled(b, at))
                continue;
            int hit = 0;
            double value = 0;
            for (long j = i; j < b->nev && b->ev[j].ts <= at + lb->within; j++)
                if (b->ev[j].labeltype && b->ev[j].ts > at) {
                    hit = 1;
                    value += b->ev[j].has_rev ? b->ev[j].revenue : 0;
                }
            float y = lb->kind == MODELS_LABEL_CHURN ? (hit ? 0.0f : 1.0f) : (float)value;
            push_stats(b, &r);
            lua_setfield(L, p_idx, "stats");
            lua_createtable(L, 0, 1);
            lua_pushnumber(L, (lua_Number)at);
            lua_setfield(L, -2, "now");
            rc = add_example(b, p_idx, lua_gettop(L), at, y);
            lua_settop(L, p_idx);
        }
    }
    lua_settop(L, top);
    return rc;
}

/* STORE_CUSTIDX: "<customer>\0e" ts(be64) seq(be64) → "" */
static int scan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct builder *b = ud;
    const char *k = key;
    size_t cl = strnlen(k, klen);
    if (cl == klen || cl >= sizeof b->cust)
        return 0;
    int same = strlen(b->cust) == cl && !memcmp(b->cust, k, cl);
    if (!same) {
        if (b->cust[0]) {
            int rc = process_customer(b);
            if (rc)
                return rc;
            b->in_chunk++;
            if (b->in_chunk >= CHUNK_CUSTOMERS) {
                /* end this read txn here: resume at this customer */
                memcpy(b->resume, k, cl);
                b->resume_len = cl;
                b->more = 1;
                b->cust[0] = 0;
                b->nev = 0;
                return 1;
            }
        }
        memcpy(b->cust, k, cl);
        b->cust[cl] = 0;
        b->nev = 0;
        b->nct = 0;
    }
    if (klen != cl + 2 + 16 || k[cl + 1] != 'e')
        return 0;
    if (b->nev == b->capev) {
        long nc = b->capev ? 2 * b->capev : 256;
        struct cev *x = realloc(b->ev, sizeof *x * (size_t)nc);
        if (!x)
            return ERR_NOMEM;
        b->ev = x;
        b->capev = nc;
    }
    if (read_event(b, (const unsigned char *)k + cl + 2, &b->ev[b->nev]) == 0)
        b->nev++;
    return 0;
}

/* ---------------------------------------------------------------------- */

struct ord {
    int64_t t;
    long i;
};

static int ord_cmp(const void *a, const void *b)
{
    const struct ord *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Rows in time order (stable: a customer's examples keep their order). */
static int sort_rows(struct train_rows *o, int nf)
{
    struct ord *ord = malloc(sizeof *ord * (size_t)(o->n ? o->n : 1));
    float *x = malloc(sizeof *x * (size_t)(o->n ? o->n : 1) * (size_t)nf);
    float *y = malloc(sizeof *y * (size_t)(o->n ? o->n : 1));
    int64_t *t = malloc(sizeof *t * (size_t)(o->n ? o->n : 1));
    if (!ord || !x || !y || !t) {
        free(ord);
        free(x);
        free(y);
        free(t);
        return ERR_NOMEM;
    }
    for (long i = 0; i < o->n; i++)
        ord[i] = (struct ord){ o->t[i], i };
    qsort(ord, (size_t)o->n, sizeof *ord, ord_cmp);
    for (long i = 0; i < o->n; i++) {
        long s = ord[i].i;
        memcpy(x + i * nf, o->x + s * nf, sizeof *x * (size_t)nf);
        y[i] = o->y[s];
        t[i] = o->t[s];
    }
    free(ord);
    free(o->x);
    free(o->y);
    free(o->t);
    o->x = x;
    o->y = y;
    o->t = t;
    return 0;
}

struct anchor_count {
    const char *type;
    double n;
};

static int anchor_cb(void *ud, const struct events_log_cell *c)
{
    struct anchor_count *a = ud;
    a->n += (double)json_integer_value(json_object_get(c->n, a->type));
    return 0;
}

/* The share of the examples to keep under max_rows, from a cheap estimate
 * of how many there will be: for an event label the `after` events in the
 * window (the daily aggregates count them; an upper bound, before the
 * spacing of anchors), for snapshots the customers times the snapshots. */
static double sample_rate(struct store_txn *t, const struct models_def *d, int nsnaps,
                          int64_t from, int64_t to)
{
    if (d->max_rows <= 0)
        return 1;
    double est;
    if (d->label.kind == MODELS_LABEL_EVENT) {
        struct anchor_count a = { d->label.after, 0 };
        events_log_scan_cells(t, d->label.campaign, from / 86400, to / 86400, anchor_cb, &a);
        est = a.n > 0 ? a.n : (double)store_count(t, STORE_EVENTS);
    } else {
        est = (double)store_count(t, STORE_PSTATS) * nsnaps;
    }
    return est > (double)d->max_rows ? (double)d->max_rows / est : 1;
}

void train_rows_free(struct train_rows *r)
{
    if (!r)
        return;
    free(r->x);
    free(r->y);
    free(r->t);
    memset(r, 0, sizeof *r);
}

int train_data_build(struct store *s, const struct models_def *d, struct luavm *vm,
                     const int *fn_refs, int64_t now, const volatile int *cancel,
                     struct train_rows *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const struct models_label *lb = &d->label;
    struct builder b = { .d = d, .vm = vm, .L = luavm_state(vm), .fn_refs = fn_refs, .now = now,
                         .out = out, .err = err, .errlen = errlen };
    b.to = now;
    b.from = now - d->window;
    out->from = b.from;
    out->to = b.to;
    if (lb->kind != MODELS_LABEL_EVENT) {
        /* snapshots a step apart, the newest with its outcome window closed */
        int max = 512;
        b.snaps = malloc(sizeof *b.snaps * (size_t)max);
        if (!b.snaps)
            return ERR_NOMEM;
        for (int64_t at = b.to - lb->within; at > b.from && b.nsnaps < max; at -= lb->every)
            b.snaps[b.nsnaps++] = at;
        for (int i = 0; i < b.nsnaps / 2; i++) { /* ascending */
            int64_t x = b.snaps[i];
            b.snaps[i] = b.snaps[b.nsnaps - 1 - i];
            b.snaps[b.nsnaps - 1 - i] = x;
        }
        if (b.nsnaps < 2) {
            snprintf(err, errlen, "the window (%llds) holds fewer than two snapshots of %llds",
                     (long long)d->window, (long long)lb->every);
            free(b.snaps);
            return ERR_INVAL;
        }
    }
    b.seen = calloc(MAX_TYPES_SEEN, sizeof *b.seen);
    if (!b.seen) {
        free(b.snaps);
        return ERR_NOMEM;
    }
    int rc = 0;
    int first = 1;
    do {
        struct store_txn *t;
        if (cancel && *cancel) {
            snprintf(err, errlen, "cancelled");
            rc = ERR_BUSY;
            break;
        }
        if ((rc = store_rtxn_begin(s, &t)))
            break;
        b.t = t;
        if (first)
            b.rate = sample_rate(t, d, b.nsnaps, b.from, b.to);
        first = 0;
        b.more = 0;
        b.in_chunk = 0;
        unsigned char start[160];
        size_t sl = b.resume_len;
        memcpy(start, b.resume, sl);
        rc = store_scan(t, STORE_CUSTIDX, NULL, 0, sl ? start : NULL, sl, scan_cb, &b);
        if (!rc && !b.more && b.cust[0]) /* the last customer */
            rc = process_customer(&b);
        store_txn_end(t);
        b.t = NULL;
    } while (!rc && b.more);
    out->rate = b.rate;
    if (!rc) {
        /* a label naming a type no event has is a typo, not a model */
        const char *need[MODELS_MAX_TYPES + 2];
        int nn = 0;
        if (lb->kind == MODELS_LABEL_EVENT) {
            need[nn++] = lb->after;
            need[nn++] = lb->event;
        } else {
            for (int i = 0; i < lb->ntypes; i++)
                need[nn++] = lb->types[i];
        }
        for (int i = 0; i < nn && !rc; i++) {
            int found = 0;
            for (int k = 0; k < b.nseen && !found; k++)
                found = !strcmp(b.seen[k], need[i]);
            if (!found) {
                char list[600] = "";
                size_t at = 0;
                for (int k = 0; k < b.nseen && at < sizeof list - 40; k++)
                    at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", k ? ", " : "",
                                           b.seen[k]);
                snprintf(err, errlen, "label names event type '%s', which no stored event has "
                         "(types seen: %s)", need[i], b.nseen ? list : "none: the store has no events");
                rc = ERR_INVAL;
            }
        }
    }
    free(b.ev);
    free(b.ct);
    free(b.seen);
    if (!rc)
        rc = sort_rows(out, d->ncols);
    if (!rc && out->n) {
        /* the time split: validation = the latest examples; training = those
         * whose outcome window closed before validation starts */
        int64_t split;
        if (lb->kind == MODELS_LABEL_EVENT) {
            long k = (long)((double)out->n * (1 - d->validation));
            k = k < 0 ? 0 : k >= out->n ? out->n - 1 : k;
            split = out->t[k];
        } else {
            int nv = (int)(d->validation * b.nsnaps + 0.5);
            nv = nv < 1 ? 1 : nv >= b.nsnaps ? b.nsnaps - 1 : nv;
            split = b.snaps[b.nsnaps - nv];
        }
        out->split_at = split;
        long tr = 0, va = 0;
        for (long i = 0; i < out->n; i++) {
            if (out->t[i] >= split)
                va++;
            else if (out->t[i] + lb->within <= split)
                tr++;
        }
        /* rows are in time order: [training][purged][validation] */
        out->ntrain = tr;
        out->nval = va;
        out->val_start = out->n - va;
        out->purged = out->n - tr - va;
        for (long i = 0; i < out->n; i++) {
            int pos = d->regression ? out->y[i] > 0 : out->y[i] == 1;
            if (i < tr)
                out->pos_train += pos;
            else if (i >= out->val_start)
                out->pos_val += pos;
        }
    }
    free(b.snaps);
    if (rc && rc != ERR_INVAL && rc != ERR_BUSY)
        snprintf(err, errlen, "reading the store: %s", err_str(rc));
    return rc;
}
