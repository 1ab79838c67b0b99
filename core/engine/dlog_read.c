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
/* the listing                                                             */

struct list {
    struct store_txn *t;
    json_t *arr;
    int limit, more;
    int64_t to_ms;
    size_t plen;             /* customer index: prefix length, else 0 */
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

static int list_cust_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val, (void)vlen;
    struct list *l = ud;
    if (klen != l->plen + 12)
        return 0;
    const unsigned char *ek = (const unsigned char *)key + l->plen;
    const void *v;
    size_t vl;
    if (store_get(l->t, STORE_DLOG, ek, 12, &v, &vl))
        return 0; /* swept between the two reads of this txn cannot happen; a stale index row */
    return list_one(l, ek, v, vl);
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
        size_t cl = strlen(customer);
        char k[KEY_MAX + 1];
        if (cl + 13 <= KEY_MAX) {
            memcpy(k, customer, cl + 1);
            memcpy(k + cl + 1, start, 12);
            l.plen = cl + 1;
            *rc = store_scan(l.t, STORE_DLOG_CUST, k, cl + 1, k, cl + 13, list_cust_cb, &l);
        }
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

struct cust {
    size_t plen;
    unsigned char (*keys)[12];
    int n, cap;
};

static int cust_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val, (void)vlen;
    struct cust *c = ud;
    if (klen != c->plen + 12)
        return 0;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 64;
        unsigned char (*k)[12] = realloc(c->keys, 12 * (size_t)cap);
        if (!k)
            return ERR_NOMEM;
        c->keys = k;
        c->cap = cap;
    }
    memcpy(c->keys[c->n++], (const char *)key + c->plen, 12);
    return 0;
}

static int cust_keys(struct store_txn *t, const char *customer, struct cust *c)
{
    size_t n = strlen(customer);
    if (n + 13 > KEY_MAX)
        return 0; /* never indexed, never logged under the index */
    c->plen = n + 1;
    return store_scan(t, STORE_DLOG_CUST, customer, n + 1, NULL, 0, cust_cb, c);
}

static void export_from(struct store_txn *t, const char *customer, json_t *arr)
{
    struct cust c = { 0 };
    if (cust_keys(t, customer, &c) == 0)
        for (int i = 0; i < c.n; i++) {
            const void *v;
            size_t vl;
            struct dlog_entry e;
            if (store_get(t, STORE_DLOG, c.keys[i], 12, &v, &vl) == 0 &&
                dlog_entry_decode(v, vl, &e) == 0)
                json_array_append_new(arr, dlog_entry_json(&e));
        }
    free(c.keys);
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

long dlog_erase_customer_txn(struct store_txn *t, const char *customer)
{
    struct cust c = { 0 };
    int rc = cust_keys(t, customer, &c);
    long n = 0;
    for (int i = 0; !rc && i < c.n; i++) {
        rc = store_del(t, STORE_DLOG, c.keys[i], 12);
        if (rc == 0)
            n++;
        else if (rc == ERR_NOTFOUND)
            rc = 0;
    }
    if (!rc && c.plen) {
        long d = store_del_prefix(t, STORE_DLOG_CUST, customer, c.plen);
        if (d < 0)
            rc = (int)d;
    }
    free(c.keys);
    return rc ? rc : n;
}
