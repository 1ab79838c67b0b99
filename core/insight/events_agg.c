/*
 * events_agg.c — per-chunk accumulators of aggregates and p.stats (see
 * events_agg.h).
 *
 * Why accumulate in memory per chunk: thousands of events of one campaign
 * and day hit the same cell, and one read-modify-write per cell per chunk
 * instead of one per event is what makes 100k events/s possible.  Why
 * write in key order: neighbouring updates share B-tree pages.
 */
#include "insight/events_agg.h"
#include "engine/segments.h"
#include "base/buf.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/hash.h"
#include "store/store.h"
#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* a small string-keyed hash map (per chunk accumulators)                 */

struct hent {
    char *key;
    size_t klen;
    void *val;
};

struct hmap {
    struct hent *v;
    size_t cap, n;
};

static void *hmap_get(struct hmap *m, const void *key, size_t klen)
{
    if (!m->cap)
        return NULL;
    size_t i = hash_fnv1a(key, klen, HASH_FNV_INIT) & (m->cap - 1);
    while (m->v[i].key) {
        if (m->v[i].klen == klen && !memcmp(m->v[i].key, key, klen))
            return m->v[i].val;
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

static int hmap_put(struct hmap *m, const void *key, size_t klen, void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        struct hent *nv = calloc(ncap, sizeof *nv);
        if (!nv)
            return ERR_NOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->v[i].key)
                continue;
            size_t j = hash_fnv1a(m->v[i].key, m->v[i].klen, HASH_FNV_INIT) & (ncap - 1);
            while (nv[j].key)
                j = (j + 1) & (ncap - 1);
            nv[j] = m->v[i];
        }
        free(m->v);
        m->v = nv;
        m->cap = ncap;
    }
    size_t i = hash_fnv1a(key, klen, HASH_FNV_INIT) & (m->cap - 1);
    while (m->v[i].key)
        i = (i + 1) & (m->cap - 1);
    m->v[i].key = malloc(klen ? klen : 1);
    if (!m->v[i].key)
        return ERR_NOMEM;
    memcpy(m->v[i].key, key, klen);
    m->v[i].klen = klen;
    m->v[i].val = val;
    m->n++;
    return 0;
}

static int hent_cmp(const void *a, const void *b)
{
    const struct hent *x = *(const struct hent *const *)a, *y = *(const struct hent *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* The entries in key order (a new array of m->n pointers; NULL when empty
 * or out of memory), so stores walk the B-tree front to back. */
static struct hent **hmap_sorted(struct hmap *m)
{
    struct hent **v = malloc(sizeof *v * (m->n ? m->n : 1));
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->v[i].key)
            v[k++] = &m->v[i];
    qsort(v, k, sizeof *v, hent_cmp);
    return v;
}

static void hmap_free(struct hmap *m, void (*free_val)(void *))
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->v[i].key) {
            free(m->v[i].key);
            if (free_val)
                free_val(m->v[i].val);
        }
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------------- */
/* aggregate cells and minutes                                            */

/* Counts of one aggregate cell or minute within a chunk. */
struct acc {
    long n[EVENTS_CUSTOM];  /* known kinds */
    json_t *custom;         /* custom type → count, or NULL */
    long u[EVENTS_NKINDS];  /* new unique customers per kind */
    long customers;
    double revenue;
};

static void acc_free(void *p)
{
    struct acc *a = p;
    if (a) {
        json_decref(a->custom);
        free(a);
    }
}

static struct acc *acc_get(struct hmap *m, const void *key, size_t klen, int *rc)
{
    struct acc *a = hmap_get(m, key, klen);
    if (a)
        return a;
    a = calloc(1, sizeof *a);
    if (!a || (*rc = hmap_put(m, key, klen, a))) {
        free(a);
        if (!*rc)
            *rc = ERR_NOMEM;
        return NULL;
    }
    return a;
}

static void inc_int(json_t *o, const char *k, json_int_t by)
{
    json_t *v = json_object_get(o, k);
    json_object_set_new(o, k, json_integer((json_is_integer(v) ? json_integer_value(v) : 0) + by));
}

static void inc_real(json_t *o, const char *k, double by)
{
    json_t *v = json_object_get(o, k);
    json_object_set_new(o, k, json_real((json_is_number(v) ? json_number_value(v) : 0) + by));
}

static json_t *obj_child(json_t *o, const char *k)
{
    json_t *c = json_object_get(o, k);
    if (!json_is_object(c)) {
        c = json_object();
        json_object_set_new(o, k, c);
    }
    return c;
}

static int acc_count(struct acc *a, const struct events_agg_ev *e)
{
    if (e->kind != EVENTS_CUSTOM) {
        a->n[e->kind]++;
    } else {
        if (!a->custom && !(a->custom = json_object()))
            return ERR_NOMEM;
        inc_int(a->custom, e->type, 1);
    }
    if (e->has_revenue)
        a->revenue += e->revenue;
    return 0;
}

/* Read-modify-write every accumulated cell / minute into STORE_AGGREGATES. */
static int flush_accs(struct store_txn *t, struct hmap *m, int with_uniques)
{
    struct buf b = BUF_INIT;
    int rc = 0;
    struct hent **sorted = hmap_sorted(m);
    if (!sorted)
        return ERR_NOMEM;
    for (size_t i = 0; i < m->n && !rc; i++) {
        struct hent *h = sorted[i];
        struct acc *a = h->val;
        const void *ov;
        size_t ol;
        json_t *cur = NULL;
        rc = store_get(t, STORE_AGGREGATES, h->key, h->klen, &ov, &ol);
        if (rc == 0)
            cur = codec_msgpack_to_json(ov, ol, NULL);
        else if (rc != ERR_NOTFOUND)
            break;
        rc = 0;
        if (!json_is_object(cur)) {
            json_decref(cur);
            cur = json_object();
        }
        json_t *n = obj_child(cur, "n");
        for (int kd = 0; kd < EVENTS_CUSTOM; kd++)
            if (a->n[kd])
                inc_int(n, events_kind_name((enum events_kind)kd), a->n[kd]);
        const char *k;
        json_t *v;
        json_object_foreach(a->custom, k, v)
            inc_int(n, k, json_integer_value(v));
        if (with_uniques) {
            json_t *u = obj_child(cur, "u");
            for (int kd = 0; kd < EVENTS_NKINDS; kd++)
                if (a->u[kd])
                    inc_int(u, events_kind_name((enum events_kind)kd), a->u[kd]);
            if (a->customers)
                inc_int(cur, "c", a->customers);
        }
        if (a->revenue)
            inc_real(cur, "r", a->revenue);
        buf_reset(&b);
        rc = codec_json_to_msgpack(cur, &b);
        json_decref(cur);
        if (!rc)
            rc = store_put(t, STORE_AGGREGATES, h->key, h->klen, b.p, b.len);
    }
    free(sorted);
    buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* p.stats                                                                */

static int mp_write(void *data, const char *p, size_t len)
{
    return buf_add(data, p, len) ? -1 : 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str_with_body(pk, s, n);
}

static void pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
    pack_str(pk, k);
    msgpack_pack_int64(pk, v);
}

/* p.stats of one customer: what this chunk adds, merged at flush time with
 * the stored map (so each customer costs one read and one write a chunk). */
struct ctype {
    char name[33];
    long n;
    int64_t last;
};

struct sacc {
    int64_t first, last;           /* first_seen, last_seen (0 = none yet) */
    long events;
    long n[EVENTS_CUSTOM];
    int64_t lastk[EVENTS_CUSTOM];  /* last[type] for known kinds */
    double revenue;
    int has_rev;
    int64_t last_conv;
    struct ctype *cust;            /* custom types */
    size_t ncust, capcust;
};

static void sacc_free(void *p)
{
    struct sacc *s = p;
    if (s) {
        free(s->cust);
        free(s);
    }
}

static int sacc_custom(struct sacc *s, const char *name, size_t nl, long n, int64_t last)
{
    if (nl > 32)
        return 0;
    for (size_t i = 0; i < s->ncust; i++)
        if (strlen(s->cust[i].name) == nl && !memcmp(s->cust[i].name, name, nl)) {
            s->cust[i].n += n;
            if (last > s->cust[i].last)
                s->cust[i].last = last;
            return 0;
        }
    if (s->ncust == s->capcust) {
        size_t nc = s->capcust ? s->capcust * 2 : 4;
        struct ctype *x = realloc(s->cust, nc * sizeof *x);
        if (!x)
            return ERR_NOMEM;
        s->cust = x;
        s->capcust = nc;
    }
    struct ctype *c = &s->cust[s->ncust++];
    memcpy(c->name, name, nl);
    c->name[nl] = 0;
    c->n = n;
    c->last = last;
    return 0;
}

static int sacc_apply(struct sacc *s, const struct events_agg_ev *e)
{
    int64_t ts = e->ts_ms / 1000;
    if (!s->events || ts < s->first)
        s->first = ts;
    if (!s->events || ts > s->last)
        s->last = ts;
    s->events++;
    if (e->kind != EVENTS_CUSTOM) {
        s->n[e->kind]++;
        if (ts > s->lastk[e->kind])
            s->lastk[e->kind] = ts;
    } else if (sacc_custom(s, e->type, strlen(e->type), 1, ts)) {
        return ERR_NOMEM;
    }
    if (e->has_revenue) {
        s->revenue += e->revenue;
        s->has_rev = 1;
    }
    if (e->kind == EVENTS_CONVERSION && ts > s->last_conv)
        s->last_conv = ts;
    return 0;
}

static int64_t mp_int(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        return (int64_t)o->via.f64;
    return 0;
}

static double mp_num(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        return o->via.f64;
    return (double)mp_int(o);
}

static int mp_key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && !memcmp(k->via.str.ptr, s, n);
}

static int mp_kind(const msgpack_object *k)
{
    if (k->type != MSGPACK_OBJECT_STR || k->via.str.size > 32)
        return -1;
    char name[33];
    memcpy(name, k->via.str.ptr, k->via.str.size);
    name[k->via.str.size] = 0;
    return events_kind_of(name);
}

/* Merge the stored p.stats map into s (s holds this chunk's additions). */
static int sacc_merge_stored(struct sacc *s, const void *v, size_t vl)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, v, vl, &off) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&up);
        return 0; /* unreadable: start over rather than fail ingestion */
    }
    const msgpack_object_map *m = &up.data.via.map;
    int rc = 0;
    for (uint32_t i = 0; i < m->size && !rc; i++) {
        const msgpack_object *k = &m->ptr[i].key, *val = &m->ptr[i].val;
        if (mp_key_is(k, "first_seen")) {
            int64_t x = mp_int(val);
            if (x < s->first)
                s->first = x;
        } else if (mp_key_is(k, "last_seen")) {
            int64_t x = mp_int(val);
            if (x > s->last)
                s->last = x;
        } else if (mp_key_is(k, "events")) {
            s->events += (long)mp_int(val);
        } else if (mp_key_is(k, "revenue")) {
            s->revenue += mp_num(val);
            s->has_rev = 1;
        } else if (mp_key_is(k, "last_conversion")) {
            int64_t x = mp_int(val);
            if (x > s->last_conv)
                s->last_conv = x;
        } else if ((mp_key_is(k, "custom") || mp_key_is(k, "last")) &&
                   val->type == MSGPACK_OBJECT_MAP) {
            int is_last = mp_key_is(k, "last");
            for (uint32_t j = 0; j < val->via.map.size && !rc; j++) {
                const msgpack_object *ck = &val->via.map.ptr[j].key, *cv = &val->via.map.ptr[j].val;
                int kd = mp_kind(ck);
                if (kd < 0)
                    continue;
                if (kd != EVENTS_CUSTOM) {
                    if (is_last && mp_int(cv) > s->lastk[kd])
                        s->lastk[kd] = mp_int(cv);
                } else {
                    rc = sacc_custom(s, ck->via.str.ptr, ck->via.str.size, is_last ? 0 : (long)mp_int(cv),
                                     is_last ? mp_int(cv) : 0);
                }
            }
        } else {
            int kd = mp_kind(k);
            if (kd >= 0 && kd != EVENTS_CUSTOM)
                s->n[kd] += (long)mp_int(val);
        }
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

static int pack_stats(const struct sacc *s, struct buf *b)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, mp_write);
    size_t nk = 0, nlast = 0;
    for (int k = 0; k < EVENTS_CUSTOM; k++) {
        nk += s->n[k] > 0;
        nlast += s->lastk[k] > 0;
    }
    nlast += s->ncust;
    size_t n = 3 + nk + 1 + (s->ncust > 0) + s->has_rev + (s->last_conv > 0);
    msgpack_pack_map(&pk, n);
    pack_kv_int(&pk, "first_seen", s->first);
    pack_kv_int(&pk, "last_seen", s->last);
    pack_kv_int(&pk, "events", s->events);
    for (int k = 0; k < EVENTS_CUSTOM; k++)
        if (s->n[k] > 0)
            pack_kv_int(&pk, events_kind_name((enum events_kind)k), s->n[k]);
    if (s->ncust) {
        pack_str(&pk, "custom");
        msgpack_pack_map(&pk, s->ncust);
        for (size_t i = 0; i < s->ncust; i++)
            pack_kv_int(&pk, s->cust[i].name, s->cust[i].n);
    }
    pack_str(&pk, "last");
    msgpack_pack_map(&pk, nlast);
    for (int k = 0; k < EVENTS_CUSTOM; k++)
        if (s->lastk[k] > 0)
            pack_kv_int(&pk, events_kind_name((enum events_kind)k), s->lastk[k]);
    for (size_t i = 0; i < s->ncust; i++)
        pack_kv_int(&pk, s->cust[i].name, s->cust[i].last);
    if (s->has_rev) {
        pack_str(&pk, "revenue");
        msgpack_pack_double(&pk, s->revenue);
    }
    if (s->last_conv > 0)
        pack_kv_int(&pk, "last_conversion", s->last_conv);
    return b->p ? 0 : ERR_NOMEM;
}

/* p.stats of each customer, and the segments that read it: membership
 * follows in the same transaction (core/engine/segments.h), with the old
 * stats still readable in the map when the segments look at them. */
static int flush_stats(struct store_txn *t, struct hmap *m)
{
    struct buf b = BUF_INIT;
    int rc = 0;
    struct hent **sorted = hmap_sorted(m);
    struct segments_batch *sb = segments_batch_begin(t);
    if (!sorted || !sb) {
        free(sorted);
        segments_batch_abort(sb);
        return ERR_NOMEM;
    }
    for (size_t i = 0; i < m->n && !rc; i++) {
        struct hent *h = sorted[i];
        struct sacc *s = h->val;
        const void *v = NULL, *pv = NULL;
        size_t vl = 0, pl = 0;
        rc = store_get(t, STORE_PSTATS, h->key, h->klen, &v, &vl);
        if (rc == 0)
            rc = sacc_merge_stored(s, v, vl);
        else if (rc == ERR_NOTFOUND) {
            v = NULL;
            rc = 0;
        }
        buf_reset(&b);
        if (!rc)
            rc = pack_stats(s, &b);
        if (!rc && (rc = store_get(t, STORE_PROFILES, h->key, h->klen, &pv, &pl)) == ERR_NOTFOUND) {
            pv = NULL;
            rc = 0;
        }
        if (!rc)
            rc = segments_batch_customer(sb, h->key, h->klen, pv, pl, pv, pl, v, vl, b.p, b.len);
        if (!rc)
            rc = store_put(t, STORE_PSTATS, h->key, h->klen, b.p, b.len);
    }
    if (rc)
        segments_batch_abort(sb);
    else
        rc = segments_batch_end(sb);
    free(sorted);
    buf_free(&b);
    return rc;
}

static size_t put_str0(unsigned char *p, const char *s, int nul)
{
    size_t l = s ? strlen(s) : 0;
    memcpy(p, s ? s : "", l);
    if (nul)
        p[l++] = 0;
    return l;
}

/* "a" campaign \0 day(be32) variant \0 channel */
static size_t cell_key(unsigned char *p, const struct events_agg_ev *e, int64_t day)
{
    size_t n = 0;
    p[n++] = 'a';
    n += put_str0(p + n, e->campaign, 1);
    store_be32((uint32_t)day, p + n);
    n += 4;
    n += put_str0(p + n, e->variant, 1);
    n += put_str0(p + n, e->channel, 0);
    return n;
}

/* ---------------------------------------------------------------------- */

struct events_agg {
    struct hmap cells, minutes, stats;
};

struct events_agg *events_agg_new(void)
{
    return calloc(1, sizeof(struct events_agg));
}

int events_agg_add(struct events_agg *g, const struct events_agg_ev *e, int new_customer,
                   int new_kind)
{
    int rc = 0;
    /* the aggregate cell */
    unsigned char cell[400];
    size_t celll = cell_key(cell, e, e->ts_ms / 86400000);
    struct acc *a = acc_get(&g->cells, cell, celll, &rc);
    if (!a || (rc = acc_count(a, e)))
        return rc;
    if (new_customer)
        a->customers++;
    if (new_kind)
        a->u[e->kind]++;
    /* the minute */
    unsigned char mk[9];
    mk[0] = 'm';
    store_be64((uint64_t)(e->ts_ms / 60000), mk + 1);
    struct acc *ma = acc_get(&g->minutes, mk, 9, &rc);
    if (!ma || (rc = acc_count(ma, e)))
        return rc;
    /* p.stats */
    size_t cl = strlen(e->customer);
    struct sacc *st = hmap_get(&g->stats, e->customer, cl);
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st || (rc = hmap_put(&g->stats, e->customer, cl, st))) {
            free(st);
            return rc ? rc : ERR_NOMEM;
        }
    }
    return sacc_apply(st, e);
}

int events_agg_write(struct events_agg *g, struct store_txn *wt)
{
    int rc = flush_accs(wt, &g->cells, 1);
    if (!rc)
        rc = flush_accs(wt, &g->minutes, 0);
    if (!rc)
        rc = flush_stats(wt, &g->stats);
    return rc;
}

void events_agg_free(struct events_agg *g)
{
    if (!g)
        return;
    hmap_free(&g->cells, acc_free);
    hmap_free(&g->minutes, acc_free);
    hmap_free(&g->stats, sacc_free);
    free(g);
}
