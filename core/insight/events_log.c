/*
 * events_log.c — the stored side of events (see events_log.h): scans for
 * analytics, a customer's export and erasure, and retention (compaction
 * and its hourly timer).  Key layout: see events.h.
 */
#include "insight/events_log.h"
#include "insight/events.h"
#include "base/id.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/tz.h"
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long g_compacted; /* raw events removed by retention since start */

long events_log_compacted_total(void) { return __atomic_load_n(&g_compacted, __ATOMIC_RELAXED); }

static void inc_int(json_t *o, const char *k, json_int_t by)
{
    json_t *v = json_object_get(o, k);
    json_object_set_new(o, k, json_integer((json_is_integer(v) ? json_integer_value(v) : 0) + by));
}

/* An empty durable commit: waits until everything committed before is on disk. */
static int sync_tail(struct store *s)
{
    struct store_txn *w;
    int rc = store_wtxn_begin(s, &w);
    if (rc == 0)
        rc = store_txn_commit(w, STORE_DURABLE);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* reading                                                                */

static int fill_rec(const unsigned char key[16], const void *val, size_t vlen, json_t **hold,
                    struct events_log_rec *r)
{
    json_t *o = codec_msgpack_to_json(val, vlen, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return ERR_PARSE;
    }
    *hold = o;
    memset(r, 0, sizeof *r);
    memcpy(r->key, key, 16);
    r->ts_ms = (int64_t)store_get_be64(key);
#define S(k) (json_string_value(json_object_get(o, k)) ? json_string_value(json_object_get(o, k)) : "")
    r->type = S("type");
    r->customer = S("customer_id");
    r->campaign = S("campaign_id");
    r->variant = S("variant");
    r->channel = S("channel");
    r->currency = S("currency");
#undef S
    r->revenue = json_number_value(json_object_get(o, "revenue"));
    int k = events_kind_of(r->type);
    r->kind = k < 0 ? EVENTS_CUSTOM : (enum events_kind)k;
    return 0;
}

struct tscan {
    int64_t to_ms;
    events_log_rec_fn fn;
    void *ud;
};

static int tscan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct tscan *x = ud;
    if (klen != 16)
        return 0;
    if ((int64_t)store_get_be64(key) >= x->to_ms)
        return 1;
    json_t *hold;
    struct events_log_rec r;
    if (fill_rec(key, val, vlen, &hold, &r))
        return 0; /* an undecodable record is skipped, not fatal */
    int rc = x->fn(x->ud, &r);
    json_decref(hold);
    return rc;
}

int events_log_scan_time(struct store_txn *t, int64_t from_ms, int64_t to_ms,
                         events_log_rec_fn fn, void *ud)
{
    unsigned char start[16];
    store_be64((uint64_t)(from_ms < 0 ? 0 : from_ms), start);
    memset(start + 8, 0, 8);
    struct tscan x = { to_ms, fn, ud };
    return store_scan(t, STORE_EVENTS, NULL, 0, start, 16, tscan_cb, &x);
}

struct cscan {
    struct store_txn *t;
    const unsigned char *before;
    size_t plen;
    events_log_rec_fn fn;
    void *ud;
};

static int cscan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct cscan *x = ud;
    if (klen != x->plen + 16)
        return 0;
    const unsigned char *ek = (const unsigned char *)key + x->plen;
    if (x->before && memcmp(ek, x->before, 16) >= 0)
        return 1;
    const void *ev;
    size_t el;
    if (store_get(x->t, STORE_EVENTS, ek, 16, &ev, &el))
        return 0;
    json_t *hold;
    struct events_log_rec r;
    if (fill_rec(ek, ev, el, &hold, &r))
        return 0;
    int rc = x->fn(x->ud, &r);
    json_decref(hold);
    return rc;
}

static size_t cust_prefix(unsigned char *p, const char *cust, char fam)
{
    size_t cl = strlen(cust);
    memcpy(p, cust, cl);
    p[cl] = 0;
    p[cl + 1] = (unsigned char)fam;
    return cl + 2;
}

int events_log_scan_customer(struct store_txn *t, const char *customer, int64_t from_ms,
                             const unsigned char before[16], events_log_rec_fn fn, void *ud)
{
    if (!id_valid(customer))
        return 0;
    unsigned char pre[160], start[176];
    size_t pl = cust_prefix(pre, customer, 'e');
    memcpy(start, pre, pl);
    store_be64((uint64_t)(from_ms < 0 ? 0 : from_ms), start + pl);
    memset(start + pl + 8, 0, 8);
    struct cscan x = { t, before, pl, fn, ud };
    return store_scan(t, STORE_CUSTIDX, pre, pl, start, pl + 16, cscan_cb, &x);
}

struct cellscan {
    int64_t from_day, to_day;
    int one_campaign;
    events_log_cell_fn fn;
    void *ud;
};

static int cellscan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct cellscan *x = ud;
    const char *k = key;
    char buf[600];
    if (klen < 7 || klen >= sizeof buf || k[0] != 'a')
        return 0;
    memcpy(buf, k, klen);
    buf[klen] = 0;
    size_t cl = strnlen(buf + 1, klen - 1);
    if (1 + cl + 5 > klen)
        return 0;
    const unsigned char *dp = (const unsigned char *)buf + 1 + cl + 1;
    int64_t day = (int64_t)store_get_be32(dp);
    if (day > x->to_day)
        return x->one_campaign ? 1 : 0;
    if (day < x->from_day)
        return 0;
    struct events_log_cell c = { 0 };
    c.campaign = buf + 1;
    c.day = day;
    c.variant = (const char *)dp + 4;
    size_t vl = strnlen(c.variant, klen - (size_t)((const char *)dp + 4 - buf));
    c.channel = c.variant + vl + 1;
    if ((size_t)(c.channel - buf) > klen)
        c.channel = "";
    json_t *o = codec_msgpack_to_json(val, vlen, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    json_t *n = json_object_get(o, "n"), *u = json_object_get(o, "u");
    json_t *en = json_object(), *eu = json_object();
    c.n = json_is_object(n) ? n : en;
    c.u = json_is_object(u) ? u : eu;
    c.customers = (long)json_integer_value(json_object_get(o, "c"));
    c.revenue = json_number_value(json_object_get(o, "r"));
    int rc = x->fn(x->ud, &c);
    json_decref(en);
    json_decref(eu);
    json_decref(o);
    return rc;
}

int events_log_scan_cells(struct store_txn *t, const char *campaign, int64_t from_day,
                          int64_t to_day, events_log_cell_fn fn, void *ud)
{
    struct cellscan x = { from_day < 0 ? 0 : from_day, to_day, campaign != NULL, fn, ud };
    if (!campaign)
        return store_scan(t, STORE_AGGREGATES, "a", 1, NULL, 0, cellscan_cb, &x);
    size_t cl = strlen(campaign);
    if (cl > 128)
        return 0;
    unsigned char pre[140], start[150];
    pre[0] = 'a';
    memcpy(pre + 1, campaign, cl);
    pre[cl + 1] = 0;
    memcpy(start, pre, cl + 2);
    store_be32((uint32_t)x.from_day, start + cl + 2);
    return store_scan(t, STORE_AGGREGATES, pre, cl + 2, start, cl + 6, cellscan_cb, &x);
}

struct minscan {
    int64_t to_min;
    json_t *counts;
    double revenue;
};

static int minscan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct minscan *x = ud;
    if (klen != 9)
        return 0;
    if ((int64_t)store_get_be64((const unsigned char *)key + 1) > x->to_min)
        return 1;
    json_t *o = codec_msgpack_to_json(val, vlen, NULL);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "n"), k, v)
        inc_int(x->counts, k, json_integer_value(v));
    x->revenue += json_number_value(json_object_get(o, "r"));
    json_decref(o);
    return 0;
}

int events_log_sum_minutes(struct store_txn *t, int64_t from_min, int64_t to_min,
                           json_t **counts, double *revenue)
{
    unsigned char start[9];
    start[0] = 'm';
    store_be64((uint64_t)(from_min < 0 ? 0 : from_min), start + 1);
    struct minscan x = { to_min, json_object(), 0 };
    int rc = store_scan(t, STORE_AGGREGATES, "m", 1, start, 9, minscan_cb, &x);
    if (rc) {
        json_decref(x.counts);
        return rc;
    }
    *counts = x.counts;
    *revenue = x.revenue;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* per-customer export and erasure                                        */

struct keylist {
    unsigned char (*k)[16];
    size_t n, cap;
    size_t max;
};

static int keylist_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct keylist *l = ud;
    if (klen < 16)
        return 0;
    if (l->max && l->n >= l->max)
        return 1;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        void *nk = realloc(l->k, nc * 16);
        if (!nk)
            return ERR_NOMEM;
        l->k = nk;
        l->cap = nc;
    }
    memcpy(l->k[l->n++], (const unsigned char *)key + klen - 16, 16);
    return 0;
}

static int customer_keys(struct store_txn *t, const char *customer, size_t max, struct keylist *l)
{
    memset(l, 0, sizeof *l);
    l->max = max;
    unsigned char pre[160];
    size_t pl = cust_prefix(pre, customer, 'e');
    return store_scan(t, STORE_CUSTIDX, pre, pl, NULL, 0, keylist_cb, l);
}

/* Delete one raw event (and its event_id and order_id keys when they point
 * at it). */
static int delete_event(struct store_txn *t, const unsigned char key[16], char *cust_out,
                        size_t cust_cap)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_EVENTS, key, 16, &v, &vl);
    if (rc)
        return rc;
    json_t *o = codec_msgpack_to_json(v, vl, NULL);
    if (cust_out)
        snprintf(cust_out, cust_cap, "%s",
                 json_string_value(json_object_get(o, "customer_id")) ?
                     json_string_value(json_object_get(o, "customer_id")) : "");
    /* its idempotency keys: the event id and a conversion's order id */
    static const char *const idem[2][2] = { { "event_id", "ev:" }, { "order_id", "order:" } };
    for (int j = 0; j < 2; j++) {
        const char *id = json_string_value(json_object_get(o, idem[j][0]));
        if (!id)
            continue;
        char ik[140];
        int il = snprintf(ik, sizeof ik, "%s%s", idem[j][1], id);
        const void *iv;
        size_t ivl;
        if (il > 0 && (size_t)il < sizeof ik &&
            store_get(t, STORE_IDEM, ik, (size_t)il, &iv, &ivl) == 0 && ivl == 16 &&
            !memcmp(iv, key, 16))
            store_del(t, STORE_IDEM, ik, (size_t)il);
    }
    json_decref(o);
    return store_del(t, STORE_EVENTS, key, 16);
}

long events_log_erase_customer(struct store_txn *t, const char *customer)
{
    if (!id_valid(customer))
        return 0;
    struct keylist l;
    int rc = customer_keys(t, customer, 0, &l);
    long n = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        int d = delete_event(t, l.k[i], NULL, 0);
        if (d == 0)
            n++;
        else if (d != ERR_NOTFOUND)
            rc = d;
    }
    free(l.k);
    return rc ? rc : n;
}

json_t *events_log_customer_list(struct store_txn *t, const char *customer, size_t max)
{
    json_t *arr = json_array();
    if (!arr || !id_valid(customer))
        return arr;
    struct keylist l;
    int rc = customer_keys(t, customer, max, &l);
    for (size_t i = 0; !rc && i < l.n; i++) {
        const void *v;
        size_t vl;
        if (store_get(t, STORE_EVENTS, l.k[i], 16, &v, &vl))
            continue;
        json_t *o = codec_msgpack_to_json(v, vl, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        int64_t ms = (int64_t)json_integer_value(json_object_get(o, "ts_ms"));
        char iso[40], full[48];
        tz_format_iso8601(ms / 1000, iso, sizeof iso);
        size_t il = strlen(iso);
        if (il && iso[il - 1] == 'Z')
            iso[il - 1] = 0;
        snprintf(full, sizeof full, "%s.%03dZ", iso, (int)(ms % 1000));
        json_object_set_new(o, "ts", json_string(full));
        json_object_del(o, "ts_ms");
        json_int_t rcv = json_integer_value(json_object_get(o, "received"));
        tz_format_iso8601((int64_t)rcv, iso, sizeof iso);
        json_object_set_new(o, "received", json_string(iso));
        json_array_append_new(arr, o);
    }
    free(l.k);
    if (rc) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

struct actscan {
    size_t plen;
    json_t *arr;
};

static int act_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct actscan *x = ud;
    const char *k = key;
    char tail[600];
    if (klen < x->plen + 4 || klen - x->plen - 4 >= sizeof tail)
        return 0;
    size_t tl = klen - x->plen - 4;
    memcpy(tail, k + x->plen + 4, tl);
    tail[tl] = 0;
    const char *camp = tail;
    const char *var = camp + strlen(camp) + 1;
    const char *chn = (size_t)(var - tail) <= tl ? var + strlen(var) + 1 : "";
    if ((size_t)(var - tail) > tl)
        var = "";
    if ((size_t)(chn - tail) > tl)
        chn = "";
    char day[40];
    int64_t d = store_get_be32((const unsigned char *)k + x->plen);
    tz_format_iso8601(d * 86400, day, sizeof day);
    day[10] = 0;
    json_t *o = json_object();
    json_object_set_new(o, "day", json_string(day));
    json_object_set_new(o, "campaign_id", json_string(camp));
    json_object_set_new(o, "variant", json_string(var));
    json_object_set_new(o, "channel", json_string(chn));
    json_t *types = json_array();
    unsigned bits = vlen ? *(const unsigned char *)val : 0;
    for (int i = 0; i < EVENTS_NKINDS; i++)
        if (bits & (1u << i))
            json_array_append_new(types, json_string(events_kind_name((enum events_kind)i)));
    json_object_set_new(o, "types", types);
    json_array_append_new(x->arr, o);
    return json_array_size(x->arr) >= 1000000 ? 1 : 0;
}

json_t *events_log_customer_activity(struct store_txn *t, const char *customer)
{
    json_t *arr = json_array();
    if (!arr || !id_valid(customer))
        return arr;
    unsigned char pre[160];
    struct actscan x = { cust_prefix(pre, customer, 'u'), arr };
    if (store_scan(t, STORE_CUSTIDX, pre, x.plen, NULL, 0, act_cb, &x)) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* ---------------------------------------------------------------------- */
/* retention                                                              */

struct oldscan {
    int64_t cutoff_ms;
    struct keylist *l;
};

static int old_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct oldscan *x = ud;
    if (klen != 16)
        return 0;
    if ((int64_t)store_get_be64(key) >= x->cutoff_ms)
        return 1;
    return keylist_cb(x->l, key, klen, val, vlen);
}

/* Collected keys of arbitrary length (markers, minutes). */
struct anykeys {
    struct buf b;     /* klen(u16) key ... */
    size_t n, max;
    int64_t bound;    /* minutes: delete below; markers: day below */
    unsigned char last[512];  /* the last key visited (where the next batch resumes) */
    size_t lastlen;
    long visited, max_visit;
    int done;         /* the scan reached the end of what it may delete */
};

static int push_key(struct anykeys *a, const void *key, size_t klen)
{
    unsigned char l[2] = { (unsigned char)(klen >> 8), (unsigned char)klen };
    if (buf_add(&a->b, l, 2) || buf_add(&a->b, key, klen))
        return ERR_NOMEM;
    a->n++;
    return a->n >= a->max ? 1 : 0;
}

/* Remember where we are; stop the batch after max_visit keys so a read
 * snapshot is never held over a whole large family. */
static int visit(struct anykeys *a, const void *key, size_t klen)
{
    memcpy(a->last, key, klen < sizeof a->last ? klen : sizeof a->last);
    a->lastlen = klen < sizeof a->last ? klen : sizeof a->last;
    return ++a->visited >= a->max_visit;
}

static int minute_old_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct anykeys *a = ud;
    if (klen == 9 && (int64_t)store_get_be64((const unsigned char *)key + 1) >= a->bound) {
        a->done = 1;
        return 1;
    }
    int stop = visit(a, key, klen);
    if (klen == 9) {
        int r = push_key(a, key, klen);
        if (r)
            return r;
    }
    return stop;
}

static int marker_old_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct anykeys *a = ud;
    int stop = visit(a, key, klen);
    const unsigned char *k = key;
    size_t cl = strnlen(key, klen);
    if (cl + 6 > klen || k[cl + 1] != 'u' || (int64_t)store_get_be32(k + cl + 2) >= a->bound)
        return stop;
    int r = push_key(a, key, klen);
    return r ? r : stop;
}

static int delete_keys(struct store_txn *t, enum store_db db, struct anykeys *a)
{
    size_t off = 0;
    while (off + 2 <= a->b.len) {
        size_t kl = (size_t)((unsigned char)a->b.p[off] << 8 | (unsigned char)a->b.p[off + 1]);
        int rc = store_del(t, db, a->b.p + off + 2, kl);
        if (rc && rc != ERR_NOTFOUND)
            return rc;
        off += 2 + kl;
    }
    return 0;
}

/* Delete keys of one family in batches: a read snapshot finds up to
 * EVENTS_CHUNK keys (visiting at most 100,000), a short write txn deletes
 * them, and the next batch resumes after the last key visited — so a large
 * family is walked once, and writers (decide's cap reservations) wait at
 * most one short batch. */
static int compact_family(struct store *s, enum store_db db, const char *prefix, size_t plen,
                          store_scan_fn cb, int64_t bound)
{
    unsigned char start[513];
    size_t slen = 0;
    for (;;) {
        struct store_txn *t;
        int rc = store_rtxn_begin(s, &t);
        if (rc)
            return rc;
        struct anykeys a;
        memset(&a, 0, sizeof a);
        a.max = EVENTS_CHUNK;
        a.bound = bound;
        a.max_visit = 100000;
        rc = store_scan(t, db, prefix, plen, slen ? start : NULL, slen, cb, &a);
        store_txn_end(t);
        int more = !rc && !a.done && (a.n >= a.max || a.visited >= a.max_visit);
        if (!rc && a.n) {
            struct store_txn *w;
            if (!(rc = store_wtxn_begin(s, &w))) {
                rc = delete_keys(w, db, &a);
                if (rc)
                    store_txn_end(w);
                else
                    rc = store_txn_commit(w, STORE_ASYNC);
            }
        }
        buf_free(&a.b);
        if (rc || !more)
            return rc;
        /* resume just after the last key visited */
        memcpy(start, a.last, a.lastlen);
        slen = a.lastlen;
        if (slen < 511)
            start[slen++] = 0;
        if (plen && (slen < plen || memcmp(start, prefix, plen)))
            return 0;
    }
}

int events_log_compact(struct store *s, int64_t cutoff, long *deleted)
{
    *deleted = 0;
    int rc = 0;
    for (;;) {
        struct store_txn *t;
        if ((rc = store_wtxn_begin(s, &t)))
            return rc;
        struct keylist l;
        memset(&l, 0, sizeof l);
        l.max = EVENTS_CHUNK;
        struct oldscan x = { cutoff * 1000, &l };
        rc = store_scan(t, STORE_EVENTS, NULL, 0, NULL, 0, old_cb, &x);
        for (size_t i = 0; !rc && i < l.n; i++) {
            char cust[140];
            rc = delete_event(t, l.k[i], cust, sizeof cust);
            if (rc == ERR_NOTFOUND) {
                rc = 0;
                continue;
            }
            if (!rc && cust[0]) {
                unsigned char ik[160];
                size_t pl = cust_prefix(ik, cust, 'e');
                memcpy(ik + pl, l.k[i], 16);
                int d = store_del(t, STORE_CUSTIDX, ik, pl + 16);
                if (d && d != ERR_NOTFOUND)
                    rc = d;
            }
            if (!rc)
                (*deleted)++;
        }
        size_t n = l.n;
        free(l.k);
        if (rc) {
            store_txn_end(t);
            return rc;
        }
        if ((rc = store_txn_commit(t, STORE_ASYNC)))
            return rc;
        if (n < EVENTS_CHUNK)
            break;
    }
    __atomic_fetch_add(&g_compacted, *deleted, __ATOMIC_RELAXED);
    /* minute buckets feed only the dashboard's last 24 h */
    int64_t keep_min = clock_now() / 60 - 2 * 1440;
    if ((rc = compact_family(s, STORE_AGGREGATES, "m", 1, minute_old_cb, keep_min)))
        return rc;
    /* unique markers of days no event can reach any more */
    if ((rc = compact_family(s, STORE_CUSTIDX, NULL, 0, marker_old_cb, cutoff / 86400)))
        return rc;
    return sync_tail(s);
}

/* ---------------------------------------------------------------------- */
/* the hourly compactor (main thread)                                      */

static struct event *g_compact_ev;
static struct store *g_compact_store;
static int g_retention_days;

static void compact_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    long n = 0;
    int64_t cutoff = clock_now() - (int64_t)g_retention_days * 86400;
    uint64_t t0 = clock_mono_ns();
    int rc = events_log_compact(g_compact_store, cutoff, &n);
    if (rc)
        log_error("event compaction failed", "err=\"%s\"", err_str(rc));
    else if (n)
        log_info("events compacted", "deleted=%ld retention_days=%d ms=%.1f", n, g_retention_days,
                 (double)(clock_mono_ns() - t0) / 1e6);
}

int events_log_compactor_start(struct event_base *base, struct store *s, int retention_days)
{
    g_compact_store = s;
    g_retention_days = retention_days > 0 ? retention_days : 90;
    g_compact_ev = event_new(base, -1, EV_PERSIST, compact_tick, NULL);
    if (!g_compact_ev)
        return ERR_NOMEM;
    struct timeval tv = { 3600, 0 };
    event_add(g_compact_ev, &tv);
    /* and once soon after start, so a server restarted daily still compacts */
    struct timeval first = { 60, 0 };
    event_base_once(base, -1, EV_TIMEOUT, compact_tick, NULL, &first);
    return 0;
}

void events_log_compactor_stop(void)
{
    if (g_compact_ev) {
        event_free(g_compact_ev);
        g_compact_ev = NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* /metrics                                                               */

static void events_log_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_printf(out,
               "# HELP promod_events_compacted_total Raw events removed by retention.\n"
               "# TYPE promod_events_compacted_total counter\n"
               "promod_events_compacted_total %ld\n",
               events_log_compacted_total());
}

void events_log_metrics_init(void)
{
    metrics_register(events_log_collector, NULL);
}
