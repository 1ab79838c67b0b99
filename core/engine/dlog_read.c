/*
 * dlog_read.c — reading the decision log: chunked scans for replay, the
 * cursor listing of GET /api/v1/decisions, and a customer's entries for
 * export and erasure (see dlog.h).
 */
#include "engine/dlog.h"
#include "base/buf.h"
#include "base/err.h"
#include "store/store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_CHUNK 2048
#define KEY_MAX 511

static void entry_key(unsigned char key[12], int64_t ts_ms, uint32_t seq)
{
    store_be64((uint64_t)(ts_ms < 0 ? 0 : ts_ms), key);
    store_be32(seq, key + 8);
}

/* ---------------------------------------------------------------------- */
/* chunked scan                                                            */

/* One chunk of entries, copied out of a short read txn: the visitor runs
 * with no txn open (it may open its own: a replayed decide reads the store,
 * and LMDB allows one read txn per thread). */
struct scan {
    int64_t to_ms;
    unsigned char last[12];
    int started, end, n;
    struct buf data;      /* the chunk's entries, back to back */
    size_t off[SCAN_CHUNK + 1];
};

static int scan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct scan *s = ud;
    if (klen != 12)
        return 0;
    if ((int64_t)store_get_be64(key) > s->to_ms) {
        s->end = 1;
        return 1;
    }
    if (s->started && !memcmp(key, s->last, 12))
        return 0; /* where the previous chunk stopped */
    memcpy(s->last, key, 12);
    s->started = 1;
    if (buf_add(&s->data, val, vlen))
        return ERR_NOMEM;
    s->off[++s->n] = s->data.len;
    return s->n >= SCAN_CHUNK ? 1 : 0;
}

int dlog_scan(struct store *st, int64_t from_ms, int64_t to_ms, dlog_visit_fn fn, void *ud)
{
    if (!st)
        return ERR_STORE; /* the log's environment is not open */
    struct scan *s = calloc(1, sizeof *s);
    if (!s)
        return ERR_NOMEM;
    s->to_ms = to_ms;
    entry_key(s->last, from_ms, 0);
    int ret = 0;
    for (;;) {
        struct store_txn *t;
        int rc = store_rtxn_begin(st, &t);
        if (rc) {
            ret = rc;
            break;
        }
        unsigned char start[12];
        memcpy(start, s->last, 12);
        s->n = 0;
        s->off[0] = 0;
        buf_reset(&s->data);
        rc = store_scan(t, STORE_DLOG, NULL, 0, start, 12, scan_cb, s);
        store_txn_end(t);
        if (rc) {
            ret = rc;
            break;
        }
        int stop = 0;
        for (int i = 0; i < s->n && !stop; i++) {
            int r = fn(ud, s->data.p + s->off[i], s->off[i + 1] - s->off[i]);
            if (r)
                stop = 1, ret = r < 0 ? r : 0;
        }
        if (stop || s->end || s->n < SCAN_CHUNK)
            break;
    }
    buf_free(&s->data);
    free(s);
    return ret;
}

struct count {
    int64_t to_ms;
    long n;
};

static int count_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val, (void)vlen;
    struct count *c = ud;
    if (klen != 12)
        return 0;
    if ((int64_t)store_get_be64(key) > c->to_ms)
        return 1;
    c->n++;
    return 0;
}

long dlog_count(struct store *st, int64_t from_ms, int64_t to_ms)
{
    if (!st)
        return ERR_STORE;
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    unsigned char start[12];
    entry_key(start, from_ms, 0);
    struct count c = { to_ms, 0 };
    rc = store_scan(t, STORE_DLOG, NULL, 0, start, 12, count_cb, &c);
    store_txn_end(t);
    return rc ? rc : c.n;
}

/* ---------------------------------------------------------------------- */
/* a customer's entries: the batch index and the older per-entry index     */

struct keys {
    unsigned char (*k)[12];
    int n, cap;
};

static int keys_add(struct keys *c, const void *key)
{
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 64;
        unsigned char (*k)[12] = realloc(c->k, 12 * (size_t)cap);
        if (!k)
            return ERR_NOMEM;
        c->k = k;
        c->cap = cap;
    }
    memcpy(c->k[c->n++], key, 12);
    return 0;
}

static int key_cmp(const void *a, const void *b) { return memcmp(a, b, 12); }

/* The rows of a batch index record, or 0 when `v` is not one. */
static uint32_t batch_rows(const unsigned char *v, size_t vl)
{
    uint32_t n;
    if (vl < DLOG_BIDX_HDR || v[0] != DLOG_BIDX_VERSION)
        return 0;
    memcpy(&n, v + 4, 4);
    return (size_t)n <= (vl - DLOG_BIDX_HDR) / DLOG_BIDX_ROW ? n : 0;
}

static uint64_t row_hash(const unsigned char *v, uint32_t i)
{
    uint64_t h;
    memcpy(&h, v + DLOG_BIDX_HDR + (size_t)i * DLOG_BIDX_ROW, 8);
    return h;
}

/* The first row of hash h (rows are sorted by hash), or n. */
static uint32_t batch_find(const unsigned char *v, uint32_t n, uint64_t h)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (row_hash(v, mid) < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct bscan {
    uint64_t hash;
    int64_t to_ms;
    struct keys *out, *recs;
    size_t plen; /* the older index: the prefix's length */
};

static int bscan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct bscan *b = ud;
    const unsigned char *v = val;
    uint32_t n = klen == 12 ? batch_rows(v, vlen) : 0;
    if (!n)
        return 0;
    if ((int64_t)store_get_be64(v + 8) > b->to_ms)
        return 1; /* the batch's least entry is past the window */
    int found = 0, rc = 0;
    for (uint32_t i = batch_find(v, n, b->hash); !rc && i < n && row_hash(v, i) == b->hash; i++) {
        rc = keys_add(b->out, v + DLOG_BIDX_HDR + (size_t)i * DLOG_BIDX_ROW + 8);
        found = 1;
    }
    if (!rc && found && b->recs)
        rc = keys_add(b->recs, key);
    return rc;
}

static int old_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val, (void)vlen;
    struct bscan *b = ud;
    return klen == b->plen + 12 ? keys_add(b->out, (const char *)key + b->plen) : 0;
}

/* The keys of the customer's entries from `from` (NULL: all) up to the
 * batches that begin after to_ms, sorted, each once: candidates, whose
 * own customer id is checked by cust_entry.  `recs` (or NULL) gets the
 * keys of the batch index records that hold a candidate. */
static int cust_keys(struct store_txn *t, const char *customer, const unsigned char *from,
                     int64_t to_ms, struct keys *out, struct keys *recs)
{
    size_t cl = strlen(customer);
    struct bscan b = { dlog_cust_hash(customer, cl), to_ms, out, recs, cl + 1 };
    int rc = 0;
    if (cl + 13 <= KEY_MAX) { /* longer ids were never in the older index */
        char k[KEY_MAX + 1];
        memcpy(k, customer, cl + 1);
        if (from)
            memcpy(k + cl + 1, from, 12);
        rc = store_scan(t, STORE_DLOG_CUST, k, cl + 1, from ? k : NULL, from ? cl + 13 : 0,
                        old_cb, &b);
    }
    if (!rc)
        rc = store_scan(t, STORE_DLOG_BATCH, NULL, 0, from, from ? 12 : 0, bscan_cb, &b);
    if (rc || !out->n)
        return rc;
    qsort(out->k, (size_t)out->n, 12, key_cmp);
    int w = 0;
    for (int i = 0; i < out->n; i++)
        if ((!from || memcmp(out->k[i], from, 12) >= 0) &&
            (!w || memcmp(out->k[i], out->k[w - 1], 12)))
            memcpy(out->k[w++], out->k[i], 12);
    out->n = w;
    return 0;
}

/* The entry under `key` if it is the customer's: 1 with its bytes, else 0. */
static int cust_entry(struct store_txn *t, const unsigned char key[12], const char *customer,
                      size_t cl, const void **v, size_t *vl)
{
    struct dlog_entry e;
    return store_get(t, STORE_DLOG, key, 12, v, vl) == 0 && dlog_entry_decode(*v, *vl, &e) == 0 &&
           e.customer_len == cl && memcmp(e.customer, customer, cl) == 0;
}

/* ---------------------------------------------------------------------- */
/* the listing                                                             */

struct list {
    struct store_txn *t;
    json_t *arr;
    int limit, more;
    int64_t to_ms;
    unsigned char after[12]; /* the cursor: skip keys <= this */
    int has_after;
    unsigned char last[12];
};

static int list_one(struct list *l, const unsigned char *key, const void *val, size_t vlen)
{
    if ((int64_t)store_get_be64(key) > l->to_ms)
        return 1;
    if (l->has_after && memcmp(key, l->after, 12) <= 0)
        return 0;
    if ((int)json_array_size(l->arr) >= l->limit) {
        l->more = 1;
        return 1;
    }
    struct dlog_entry e;
    if (dlog_entry_decode(val, vlen, &e) == 0)
        json_array_append_new(l->arr, dlog_entry_json(&e));
    memcpy(l->last, key, 12);
    return 0;
}

static int list_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct list *l = ud;
    if (klen != 12)
        return 0;
    return list_one(l, key, val, vlen);
}


static int parse_cursor(const char *c, unsigned char out[12])
{
    if (strlen(c) != 24)
        return ERR_INVAL;
    for (int i = 0; i < 12; i++) {
        unsigned v;
        if (sscanf(c + 2 * i, "%2x", &v) != 1)
            return ERR_INVAL;
        out[i] = (unsigned char)v;
    }
    return 0;
}

json_t *dlog_list(struct store *st, const char *customer, int64_t from_ms, int64_t to_ms,
                  const char *cursor, int limit, int *rc)
{
    struct list l = { .arr = NULL, .limit = limit, .to_ms = to_ms };
    if (!st) {
        *rc = ERR_STORE; /* the log's environment is not open */
        return NULL;
    }
    if (cursor && *cursor) {
        if (parse_cursor(cursor, l.after)) {
            *rc = ERR_INVAL;
            return NULL;
        }
        l.has_after = 1;
    }
    unsigned char start[12];
    entry_key(start, from_ms, 0);
    if (l.has_after && memcmp(l.after, start, 12) > 0)
        memcpy(start, l.after, 12);
    if ((*rc = store_rtxn_begin(st, &l.t)))
        return NULL;
    l.arr = json_array();
    if (customer) {
        struct keys k = { 0 };
        size_t cl = strlen(customer);
        *rc = cust_keys(l.t, customer, start, to_ms, &k, NULL);
        for (int i = 0; !*rc && i < k.n; i++) {
            const void *v;
            size_t vl;
            if (cust_entry(l.t, k.k[i], customer, cl, &v, &vl) && list_one(&l, k.k[i], v, vl))
                break;
        }
        free(k.k);
    } else {
        *rc = store_scan(l.t, STORE_DLOG, NULL, 0, start, 12, list_cb, &l);
    }
    store_txn_end(l.t);
    if (*rc) {
        json_decref(l.arr);
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "decisions", l.arr);
    if (l.more) {
        char hex[25];
        for (int i = 0; i < 12; i++)
            snprintf(hex + 2 * i, 3, "%02x", l.last[i]);
        json_object_set_new(o, "next_cursor", json_string(hex));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    return o;
}

/* ---------------------------------------------------------------------- */
/* privacy                                                                 */

static void export_from(struct store_txn *t, const char *customer, json_t *arr)
{
    struct keys k = { 0 };
    size_t cl = strlen(customer);
    if (cust_keys(t, customer, NULL, INT64_MAX, &k, NULL) == 0)
        for (int i = 0; i < k.n; i++) {
            const void *v;
            size_t vl;
            struct dlog_entry e;
            if (cust_entry(t, k.k[i], customer, cl, &v, &vl) && dlog_entry_decode(v, vl, &e) == 0)
                json_array_append_new(arr, dlog_entry_json(&e));
        }
    free(k.k);
}

json_t *dlog_export_customer(struct store_txn *t, const char *customer)
{
    json_t *arr = json_array();
    struct store_txn *lt = NULL;
    if (t)
        export_from(t, customer, arr); /* older versions' entries: older than the others */
    if (dlog_store() && store_rtxn_begin(dlog_store(), &lt) == 0) {
        export_from(lt, customer, arr);
        store_txn_end(lt);
    }
    return arr;
}

long dlog_erase_customer(const char *customer)
{
    struct store *env = dlog_store();
    struct store_txn *t;
    if (!env)
        return 0;
    int rc = store_wtxn_begin(env, &t);
    if (rc)
        return rc;
    long n = dlog_erase_customer_txn(t, customer);
    if (n < 0) {
        store_txn_end(t);
        return n;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    return rc ? rc : n;
}

/* Rewrite the batch index record `rk` without the rows of hash h whose
 * entry is gone (the erased customer's; another customer of the same
 * hash keeps theirs), deleting it when no row is left. */
static int batch_drop(struct store_txn *t, const unsigned char rk[12], uint64_t h, struct buf *nb)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DLOG_BATCH, rk, 12, &v, &vl);
    if (rc)
        return rc == ERR_NOTFOUND ? 0 : rc;
    const unsigned char *p = v;
    uint32_t n = batch_rows(p, vl), kept = 0;
    buf_reset(nb);
    if (!n || buf_add(nb, p, DLOG_BIDX_HDR))
        return n ? ERR_NOMEM : 0;
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *row = p + DLOG_BIDX_HDR + (size_t)i * DLOG_BIDX_ROW;
        const void *ev;
        size_t evl;
        if (row_hash(p, i) == h && store_get(t, STORE_DLOG, row + 8, 12, &ev, &evl) != 0)
            continue;
        if (buf_add(nb, row, DLOG_BIDX_ROW))
            return ERR_NOMEM;
        kept++;
    }
    if (!kept)
        return store_del(t, STORE_DLOG_BATCH, rk, 12);
    memcpy(nb->p + 4, &kept, 4);
    return kept == n ? 0 : store_put(t, STORE_DLOG_BATCH, rk, 12, nb->p, nb->len);
}

long dlog_erase_customer_txn(struct store_txn *t, const char *customer)
{
    struct keys k = { 0 }, recs = { 0 };
    size_t cl = strlen(customer);
    int rc = cust_keys(t, customer, NULL, INT64_MAX, &k, &recs);
    long n = 0;
    for (int i = 0; !rc && i < k.n; i++) {
        const void *v;
        size_t vl;
        if (!cust_entry(t, k.k[i], customer, cl, &v, &vl))
            continue; /* swept, or another customer's of the same hash */
        if ((rc = store_del(t, STORE_DLOG, k.k[i], 12)) == 0)
            n++;
    }
    if (!rc && cl + 13 <= KEY_MAX) {
        char pre[KEY_MAX + 1];
        memcpy(pre, customer, cl + 1);
        long d = store_del_prefix(t, STORE_DLOG_CUST, pre, cl + 1);
        if (d < 0)
            rc = (int)d;
    }
    struct buf nb = { 0 };
    uint64_t h = dlog_cust_hash(customer, cl);
    for (int i = 0; !rc && i < recs.n; i++)
        rc = batch_drop(t, recs.k[i], h, &nb);
    buf_free(&nb);
    free(k.k);
    free(recs.k);
    return rc ? rc : n;
}
