/*
 * dlog.c — the decision log: encoding on the worker, a bounded ring, the
 * writer thread, retention, and the readers (see dlog.h).
 *
 * Why a ring of swapped buffers: a logged decide must cost the request a
 * copy of a few hundred bytes and nothing more.  Each worker encodes into
 * a buffer of its own, then under the ring's mutex moves it into the
 * ring's next slot and takes the buffer the writer drained last — no
 * allocation in steady state, no write transaction, no wait for the
 * writer.  The drained buffers are a stack, not the ring's slots (as they
 * were): a slot's buffer was last touched 16,384 entries earlier, so every
 * logged decide wrote a few hundred bytes into memory no cache held, and
 * the buffers cycled through ~8 MB, pushing the decide path's own data out
 * of the caches the workers share; the stack keeps the few hundred buffers
 * of a batch in use, those the writer has just read.  The writer takes
 * the slots' buffers, writes a batch in one transaction
 * (one every BATCH_EVERY_MS at most, unless the ring is a quarter full or
 * a flush waits: a commit's own pages are then shared by hundreds of
 * entries) and commits without waiting for the disk: the log is evidence for
 * authors, not a ledger; a crash of the operating system may lose its
 * last second (the environment's syncer flushes every sync_interval_ms).
 *
 * Why it is opened without MDB_WRITEMAP, unlike the main store: the log
 * writes a few megabytes a second of new pages.  Written through the
 * shared mapping, every flush of the syncer write-protects them again
 * (page_mkclean), which costs a TLB shootdown on every CPU running a
 * worker, and the next write a page fault; with pwrite commits the
 * mapping stays read-only and the workers are left alone.
 *
 * Why an environment of its own (<data_dir>/dlog): LMDB has one write
 * lock per environment, and the decide path takes the main one for its
 * cap reservations; the writer's batches there made reservations wait
 * behind them.  In its own environment the log's commits never hold the
 * main write lock (nor grow the main map).  Entries written before the
 * log had its own environment stay in the main one: they are exported,
 * erased and swept with the rest, but no longer listed or replayed.
 *
 * Why a customer index record per batch rather than a row per entry: the
 * log's one random write was its per-customer index (customer id \0 key,
 * one B-tree insert per entry at a random leaf): at a few hundred entries
 * per batch nearly every entry copied and wrote a 4 KiB leaf page of its
 * own, eight times the bytes of the entry, and the writer's pwrite of
 * those pages was most of what the log cost decide (README, "Performance
 * figures").  Now each batch appends one record to STORE_DLOG_BATCH,
 * keyed by its greatest entry key: the (customer hash, entry key) of each
 * entry, sorted, so a customer's rows are a binary search in each record.
 * Export, erasure and the listing by customer read every record from the
 * window's start (one per batch, 20 bytes per entry), and take an entry
 * only when its own customer id matches (a hash is only a candidate).
 * Erasure rewrites the records that held the customer's rows without
 * them, so not even the hash stays.  The sweep deletes a record once its
 * greatest entry is past the retention.  Logs of older versions keep
 * their per-entry rows (STORE_DLOG_CUST): read, erased and swept as ever.
 *
 * Entry layout (native byte order: the log is read where it is written):
 *   u8 version | i64 ts_ms | i64 now | u64 gen_seq | char did[20] | i32 limit
 *   | u32 considered, scored, offered, blocked | then customer, channel,
 *   placement, context, accept_language, profile, stats, each u32 length
 *   (NIL = absent) and bytes | u32 noffers, each u16 length + campaign id,
 *   u16 length + variant id, f64 score.
 */
#include "engine/dlog.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/metrics.h"
#include "codec/codec.h"
#include "store/store.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define VERSION 1
#define NIL 0xffffffffu
#define HDR 65              /* bytes before the first variable field */
#define BATCH_MAX 2048      /* entries per write transaction */
#define BATCH_EVERY_MS 50    /* the writer's pace under load (see writer_main) */
#define SWEEP_EVERY_MS 60000
#define SWEEP_MAX 20000     /* deletes per transaction */
#define BUF_KEEP (64 * 1024)
#define KEY_MAX 511         /* LMDB's key size limit */
#define DLOG_MAP_SIZE (64ul << 20) /* the log's map to start with; it grows */

struct slot {
    struct buf b; /* the encoded entry */
};

/* Three cache lines' worth of groups: what the ring's mutex guards
 * (written by every logged decide), what every decide reads (written at
 * start and stop only: on a line of its own, so that dlog_sampled does
 * not miss in the cache each time another worker took the mutex), and
 * what the writer thread updates per entry. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    struct slot *ring;
    struct buf *spare;          /* drained buffers, the last drained on top */
    long nspare;
    long cap, head, count;
    uint64_t submitted, written;
    uint64_t flush_to;          /* dlog_flush waits until this many are written */
    int stop;
    pthread_t th;
    _Alignas(64) int running;
    uint32_t threshold;         /* sampled when hash % 1e6 < threshold */
    struct store *st;           /* the main environment: entries from before (legacy) */
    struct store *env;          /* the log's own environment */
    int legacy;                 /* the main environment still holds entries */
    int64_t retention_ms;
    _Alignas(64) uint64_t seq;  /* the next entry's sequence number (writer only) */
    int64_t last_ts;            /* the greatest key millisecond appended (writer only) */
    _Atomic long n_written, n_dropped, n_swept, n_failed;
} D = { .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER };

static pthread_key_t g_tl_key;
static pthread_once_t g_tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *p)
{
    struct slot *s = p;
    buf_free(&s->b);
    free(s);
}

static void tl_make(void) { pthread_key_create(&g_tl_key, tl_free); }

/* ---------------------------------------------------------------------- */
/* encoding                                                                */

/* A field: u32 length (NIL when absent) and its bytes; returns the end. */
static unsigned char *put_raw(unsigned char *o, const void *p, size_t n)
{
    uint32_t l = p ? (uint32_t)n : NIL;
    memcpy(o, &l, 4);
    if (p && n)
        memcpy(o + 4, p, n);
    return o + 4 + (p ? n : 0);
}

uint64_t dlog_cust_hash(const char *id, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
    return h;
}

int dlog_batch_encode(struct buf *out, const unsigned char lo[12], const struct dlog_bitem *rows,
                      int n)
{
    unsigned char hdr[DLOG_BIDX_HDR] = { DLOG_BIDX_VERSION };
    uint32_t nn = (uint32_t)n;
    memcpy(hdr + 4, &nn, 4);
    memcpy(hdr + 8, lo, 12);
    int bad = buf_reserve(out, DLOG_BIDX_HDR + (size_t)n * DLOG_BIDX_ROW);
    bad |= buf_add(out, hdr, DLOG_BIDX_HDR);
    for (int i = 0; !bad && i < n; i++)
        bad |= buf_add(out, &rows[i].hash, 8) | buf_add(out, rows[i].key, 12);
    return bad ? ERR_NOMEM : 0;
}

int dlog_sampled(const char *customer)
{
    if (!D.threshold || !D.running)
        return 0;
    if (D.threshold >= 1000000)
        return 1;
    return hash_fnv1a(customer, strlen(customer), HASH_FNV_INIT) % 1000000u < D.threshold;
}

void dlog_submit(const struct dlog_rec *r)
{
    if (!D.running)
        return;
    pthread_once(&g_tl_once, tl_make);
    struct slot *me = pthread_getspecific(g_tl_key);
    if (!me) {
        if (!(me = calloc(1, sizeof *me)))
            return;
        pthread_setspecific(g_tl_key, me);
    }
    /* One pass: the entry's exact size first, then plain stores into the
     * buffer (a buf_add per field was a quarter of what a logged decide
     * cost its worker). */
    size_t cl = r->customer ? strlen(r->customer) : 0, chl = r->channel ? strlen(r->channel) : 0,
           pll = r->placement ? strlen(r->placement) : 0,
           all = r->accept_language ? strlen(r->accept_language) : 0;
    size_t need = HDR + 7 * 4 + cl + chl + pll + all + (r->context ? r->context_len : 0) +
                  (r->profile ? r->profile_len : 0) + (r->stats ? r->stats_len : 0) + 4;
    uint16_t ol[2 * 64];
    int no = r->noffers;
    for (int i = 0; i < no; i++) {
        size_t c = strlen(r->offers[i].campaign), v = strlen(r->offers[i].variant);
        if (i < 64)
            ol[2 * i] = (uint16_t)c, ol[2 * i + 1] = (uint16_t)v;
        need += 4 + c + v + 8;
    }
    struct buf *b = &me->b;
    buf_reset(b);
    if (buf_reserve(b, need))
        return;
    unsigned char *o = (unsigned char *)b->p;
    o[0] = VERSION;
    memcpy(o + 1, &r->ts_ms, 8);
    memcpy(o + 9, &r->now, 8);
    memcpy(o + 17, &r->gen_seq, 8);
    memcpy(o + 25, r->decision_id, 20);
    int32_t lim = r->limit;
    memcpy(o + 45, &lim, 4);
    uint32_t sum[4] = { (uint32_t)r->considered, (uint32_t)r->scored, (uint32_t)no,
                        (uint32_t)(r->blocked != 0) };
    memcpy(o + 49, sum, 16);
    o += HDR;
    o = put_raw(o, r->customer, cl);
    o = put_raw(o, r->channel, chl);
    o = put_raw(o, r->placement, pll);
    o = put_raw(o, r->context, r->context_len);
    o = put_raw(o, r->accept_language, all);
    o = put_raw(o, r->profile, r->profile_len);
    o = put_raw(o, r->stats, r->stats_len);
    uint32_t nn = (uint32_t)no;
    memcpy(o, &nn, 4);
    o += 4;
    for (int i = 0; i < no; i++) {
        uint16_t c = i < 64 ? ol[2 * i] : (uint16_t)strlen(r->offers[i].campaign),
                 v = i < 64 ? ol[2 * i + 1] : (uint16_t)strlen(r->offers[i].variant);
        memcpy(o, &c, 2);
        memcpy(o + 2, r->offers[i].campaign, c);
        o += 2 + c;
        memcpy(o, &v, 2);
        memcpy(o + 2, r->offers[i].variant, v);
        o += 2 + v;
        memcpy(o, &r->offers[i].score, 8);
        o += 8;
    }
    b->len = (size_t)(o - (unsigned char *)b->p);
    b->p[b->len] = 0; /* buf.h's invariant (need + 1 bytes were reserved) */
    pthread_mutex_lock(&D.mu);
    if (D.count >= D.cap || !D.running) {
        pthread_mutex_unlock(&D.mu);
        D.n_dropped++;
        return;
    }
    D.ring[(D.head + D.count) % D.cap] = *me; /* the slot is empty: the writer took its buffer */
    if (D.nspare) /* the buffer the writer drained last: still in a cache */
        me->b = D.spare[--D.nspare];
    else
        me->b = (struct buf)BUF_INIT;
    D.count++;
    D.submitted++;
    if (D.count == (D.cap + 3) / 4)
        pthread_cond_signal(&D.wake);
    pthread_mutex_unlock(&D.mu);
    if (me->b.cap > BUF_KEEP)
        buf_free(&me->b);
}

/* ---------------------------------------------------------------------- */
/* decoding                                                                */

struct rd {
    const unsigned char *p, *end;
    int bad;
};

static const char *get_field(struct rd *r, size_t *n)
{
    uint32_t l;
    *n = 0;
    if (r->end - r->p < 4) {
        r->bad = 1;
        return NULL;
    }
    memcpy(&l, r->p, 4);
    r->p += 4;
    if (l == NIL)
        return NULL;
    if ((size_t)(r->end - r->p) < l) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += l;
    *n = l;
    return s;
}

int dlog_entry_decode(const void *bytes, size_t len, struct dlog_entry *e)
{
    memset(e, 0, sizeof *e);
    const unsigned char *p = bytes;
    if (len < HDR || p[0] != VERSION)
        return ERR_PARSE;
    memcpy(&e->ts_ms, p + 1, 8);
    memcpy(&e->now, p + 9, 8);
    memcpy(&e->gen_seq, p + 17, 8);
    memcpy(e->decision_id, p + 25, 20);
    int32_t lim;
    memcpy(&lim, p + 45, 4);
    e->limit = lim;
    uint32_t sum[4];
    memcpy(sum, p + 49, 16);
    e->considered = (int)sum[0], e->scored = (int)sum[1], e->offered = (int)sum[2];
    e->blocked = (int)sum[3];
    struct rd r = { p + HDR, p + len, 0 };
    e->customer = get_field(&r, &e->customer_len);
    e->channel = get_field(&r, &e->channel_len);
    e->placement = get_field(&r, &e->placement_len);
    e->context = get_field(&r, &e->context_len);
    e->accept_language = get_field(&r, &e->accept_language_len);
    e->profile = get_field(&r, &e->profile_len);
    e->stats = get_field(&r, &e->stats_len);
    uint32_t no;
    if (r.bad || r.end - r.p < 4 || !e->customer || !e->channel)
        return ERR_PARSE;
    memcpy(&no, r.p, 4);
    r.p += 4;
    e->offers = r.p;
    e->noffers = (int)no;
    for (uint32_t i = 0; i < no; i++) { /* validate the offers once */
        for (int k = 0; k < 2; k++) {
            uint16_t l;
            if (r.end - r.p < 2)
                return ERR_PARSE;
            memcpy(&l, r.p, 2);
            r.p += 2;
            if (r.end - r.p < l)
                return ERR_PARSE;
            r.p += l;
        }
        if (r.end - r.p < 8)
            return ERR_PARSE;
        r.p += 8;
    }
    return 0;
}

void dlog_entry_offer(const struct dlog_entry *e, int i, const char **camp, size_t *cl,
                      const char **variant, size_t *vl, double *score)
{
    const unsigned char *p = e->offers;
    for (int k = 0;; k++) {
        uint16_t a, b;
        memcpy(&a, p, 2);
        memcpy(&b, p + 2 + a, 2);
        if (k == i) {
            *camp = (const char *)p + 2;
            *cl = a;
            *variant = (const char *)p + 4 + a;
            *vl = b;
            memcpy(score, p + 4 + a + b, 8);
            return;
        }
        p += 4 + a + b + 8;
    }
}

static json_t *msgpack_json(const char *p, size_t n)
{
    if (!p)
        return json_null();
    int e;
    json_t *j = codec_msgpack_to_json(p, n, &e);
    return j ? j : json_null();
}

static void iso_ms(int64_t ms, char iso[80])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(iso, 80, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)((ms % 1000 + 1000) % 1000));
}

json_t *dlog_entry_json(const struct dlog_entry *e)
{
    json_t *o = json_object();
    char iso[80];
    iso_ms(e->ts_ms, iso);
    json_object_set_new(o, "decision_id", json_stringn(e->decision_id, strnlen(e->decision_id, 20)));
    json_object_set_new(o, "at", json_string(iso));
    json_object_set_new(o, "ts_ms", json_integer(e->ts_ms));
    json_object_set_new(o, "now", json_integer(e->now));
    json_t *rq = json_object();
    json_object_set_new(rq, "customer_id", json_stringn(e->customer, e->customer_len));
    json_object_set_new(rq, "channel", json_stringn(e->channel, e->channel_len));
    if (e->placement)
        json_object_set_new(rq, "placement", json_stringn(e->placement, e->placement_len));
    if (e->context) {
        int err;
        json_t *c = codec_parse_json(e->context, e->context_len, &err, NULL, 0);
        json_object_set_new(rq, "context", c ? c : json_null());
    }
    json_object_set_new(rq, "limit", json_integer(e->limit));
    if (e->accept_language)
        json_object_set_new(rq, "accept_language",
                            json_stringn(e->accept_language, e->accept_language_len));
    json_object_set_new(o, "request", rq);
    json_object_set_new(o, "profile", msgpack_json(e->profile, e->profile_len));
    if (e->stats)
        json_object_set_new(o, "stats", msgpack_json(e->stats, e->stats_len));
    json_t *offers = json_array();
    for (int i = 0; i < e->noffers; i++) {
        const char *c, *v;
        size_t cl, vl;
        double sc;
        dlog_entry_offer(e, i, &c, &cl, &v, &vl, &sc);
        json_array_append_new(offers, json_pack("{s:s%,s:s%,s:f}", "campaign_id", c, cl, "variant",
                                                v, vl, "score", sc));
    }
    json_object_set_new(o, "offers", offers);
    json_object_set_new(o, "summary",
                        json_pack("{s:i,s:i,s:i,s:b}", "considered", e->considered, "candidates",
                                  e->scored, "offered", e->offered, "channel_closed", e->blocked));
    json_object_set_new(o, "rules", json_pack("{s:I}", "generation", (json_int_t)e->gen_seq));
    return o;
}

/* ---------------------------------------------------------------------- */
/* the writer                                                              */

static void entry_key(unsigned char key[12], int64_t ts_ms, uint64_t seq)
{
    store_be64((uint64_t)ts_ms, key);
    store_be32((uint32_t)seq, key + 8);
}

/* The customer index key: id \0 entry key; 0 when the id does not fit. */
static size_t index_key(char *ik, const char *cust, size_t cl, const unsigned char key[12])
{
    if (cl + 13 > KEY_MAX)
        return 0;
    memcpy(ik, cust, cl);
    ik[cl] = 0;
    memcpy(ik + cl + 1, key, 12);
    return cl + 13;
}

/* Entries are appended (store_put_append: full pages, half the pages and
 * page faults of splitting inserts).  Workers stamp ts_ms before they
 * queue, so a batch can hold a millisecond out of order: such a key takes
 * the last key's millisecond (the entry keeps its own ts_ms).  A clock
 * that went back further, or a log an earlier run wrote ahead, gets an
 * ordinary insert.  The entry's row of the batch index goes to `it`. */
static int write_one(struct store_txn *t, struct slot *s, struct dlog_bitem *it)
{
    const unsigned char *p = (const unsigned char *)s->b.p;
    int64_t ts;
    memcpy(&ts, p + 1, 8);
    if (ts < D.last_ts && ts >= D.last_ts - 1000)
        ts = D.last_ts;
    unsigned char key[12];
    entry_key(key, ts, D.seq++);
    int rc = ts >= D.last_ts ? store_put_append(t, STORE_DLOG, key, 12, s->b.p, s->b.len)
                             : ERR_EXISTS;
    if (rc == ERR_EXISTS)
        rc = store_put(t, STORE_DLOG, key, 12, s->b.p, s->b.len);
    if (rc)
        return rc;
    if (ts > D.last_ts)
        D.last_ts = ts;
    uint32_t cl;
    memcpy(&cl, p + HDR, 4);
    it->hash = dlog_cust_hash(cl == NIL ? "" : (const char *)p + HDR + 4, cl == NIL ? 0 : cl);
    memcpy(it->key, key, 12);
    return 0;
}

static int bitem_cmp(const void *a, const void *b)
{
    const struct dlog_bitem *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return memcmp(x->key, y->key, 12);
}

/* The batch's index record: its rows sorted by (hash, key), keyed by the
 * batch's greatest entry key (appended like the entries; an ordinary
 * insert when a clock that went back makes it smaller than the last). */
static int write_index(struct store_txn *t, struct dlog_bitem *ix, int n, struct buf *rec)
{
    unsigned char lo[12], hi[12];
    memcpy(lo, ix[0].key, 12);
    memcpy(hi, ix[0].key, 12);
    for (int i = 1; i < n; i++) {
        if (memcmp(ix[i].key, lo, 12) < 0)
            memcpy(lo, ix[i].key, 12);
        if (memcmp(ix[i].key, hi, 12) > 0)
            memcpy(hi, ix[i].key, 12);
    }
    qsort(ix, (size_t)n, sizeof *ix, bitem_cmp);
    buf_reset(rec);
    if (dlog_batch_encode(rec, lo, ix, n))
        return ERR_NOMEM;
    int rc = store_put_append(t, STORE_DLOG_BATCH, hi, 12, rec->p, rec->len);
    if (rc == ERR_EXISTS)
        rc = store_put(t, STORE_DLOG_BATCH, hi, 12, rec->p, rec->len);
    return rc;
}

static const char seq_key[] = "dlog:seq";

static void load_seq(void)
{
    struct store_txn *t;
    const void *v;
    size_t vl;
    if (store_rtxn_begin(D.env, &t))
        return;
    if (store_get(t, STORE_META, seq_key, sizeof seq_key - 1, &v, &vl) == 0 && vl == 8)
        D.seq = store_get_be64(v);
    store_txn_end(t);
}

static void write_batch(struct slot *w, int n, struct dlog_bitem *ix, struct buf *rec)
{
    struct store_txn *t = NULL;
    int rc = store_wtxn_begin(D.env, &t);
    for (int i = 0; !rc && i < n; i++)
        rc = write_one(t, &w[i], &ix[i]);
    if (!rc)
        rc = write_index(t, ix, n, rec);
    if (!rc) {
        unsigned char v[8];
        store_be64(D.seq, v);
        rc = store_put(t, STORE_META, seq_key, sizeof seq_key - 1, v, 8);
    }
    if (!rc)
        rc = store_txn_commit(t, STORE_ASYNC);
    else if (t)
        store_txn_end(t);
    if (rc) {
        D.n_failed += n;
        log_warn("decision log: batch not written", "entries=%d err=\"%s\"", n, err_str(rc));
    } else {
        D.n_written += n;
    }
}

/* --- retention ------------------------------------------------------------ */

struct collect {
    unsigned char (*keys)[12];
    char **cust;
    int n, max, old_index; /* old_index: rows of the older per-entry index to delete too */
    int64_t before_ms;
};

static int collect_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct collect *c = ud;
    if (klen != 12 || c->n >= c->max || (int64_t)store_get_be64(key) >= c->before_ms)
        return 1;
    memcpy(c->keys[c->n], key, 12);
    struct dlog_entry e;
    c->cust[c->n] = NULL;
    if (c->old_index && dlog_entry_decode(val, vlen, &e) == 0 &&
        (c->cust[c->n] = malloc(e.customer_len + 1))) {
        memcpy(c->cust[c->n], e.customer, e.customer_len);
        c->cust[c->n][e.customer_len] = 0;
    }
    c->n++;
    return 0;
}

/* Delete up to SWEEP_MAX entries older than before_ms in one txn. */
static long sweep_some(struct store *st, int64_t before_ms)
{
    struct collect c = { malloc(12 * (size_t)SWEEP_MAX), calloc(SWEEP_MAX, sizeof(char *)), 0,
                         SWEEP_MAX, 0, before_ms };
    long done = 0;
    struct store_txn *t = NULL;
    int rc = ERR_NOMEM;
    if (!c.keys || !c.cust || (rc = store_wtxn_begin(st, &t)))
        goto out;
    c.old_index = store_count(t, STORE_DLOG_CUST) > 0;
    rc = store_scan(t, STORE_DLOG, NULL, 0, NULL, 0, collect_cb, &c);
    for (int i = 0; !rc && i < c.n; i++) {
        if ((rc = store_del(t, STORE_DLOG, c.keys[i], 12)) == ERR_NOTFOUND)
            rc = 0;
        char ik[KEY_MAX + 1];
        size_t kl = c.cust[i] ? index_key(ik, c.cust[i], strlen(c.cust[i]), c.keys[i]) : 0;
        if (!rc && kl && (rc = store_del(t, STORE_DLOG_CUST, ik, kl)) == ERR_NOTFOUND)
            rc = 0;
    }
    if (!rc && c.n) {
        rc = store_txn_commit(t, STORE_ASYNC);
        t = NULL;
        done = rc ? rc : c.n;
    } else if (rc) {
        done = rc;
    }
out:
    store_txn_end(t);
    for (int i = 0; c.cust && i < c.n; i++)
        free(c.cust[i]);
    free(c.keys);
    free(c.cust);
    return c.keys && c.cust ? done : ERR_NOMEM;
}

struct bcollect {
    unsigned char (*keys)[12];
    int n, max;
    int64_t before_ms;
};

static int bcollect_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val, (void)vlen;
    struct bcollect *c = ud;
    if (klen != 12 || c->n >= c->max || (int64_t)store_get_be64(key) >= c->before_ms)
        return 1;
    memcpy(c->keys[c->n++], key, 12);
    return 0;
}

/* Delete up to SWEEP_MAX batch index records whose every entry (their key
 * is the batch's greatest entry key) is older than before_ms. */
static long sweep_batches(struct store *st, int64_t before_ms)
{
    struct bcollect c = { malloc(12 * (size_t)SWEEP_MAX), 0, SWEEP_MAX, before_ms };
    struct store_txn *t = NULL;
    if (!c.keys)
        return ERR_NOMEM;
    long rc = store_wtxn_begin(st, &t);
    if (!rc)
        rc = store_scan(t, STORE_DLOG_BATCH, NULL, 0, NULL, 0, bcollect_cb, &c);
    for (int i = 0; !rc && i < c.n; i++)
        if ((rc = store_del(t, STORE_DLOG_BATCH, c.keys[i], 12)) == ERR_NOTFOUND)
            rc = 0;
    if (!rc && c.n) {
        rc = store_txn_commit(t, STORE_ASYNC);
        t = NULL;
    }
    store_txn_end(t);
    free(c.keys);
    return rc ? rc : c.n;
}

long dlog_sweep(struct store *st, int64_t before_ms)
{
    long n, total = 0;
    while ((n = sweep_some(st, before_ms)) > 0)
        total += n;
    if (n < 0)
        return n;
    long b;
    while ((b = sweep_batches(st, before_ms)) > 0)
        ;
    if (b < 0)
        return b;
    if (total) {
        D.n_swept += total;
        log_info("decision log swept", "entries=%ld", total);
    }
    return total;
}

static size_t legacy_entries(struct store *st)
{
    struct store_stat ss;
    return st && store_stat(st, &ss) == 0 ? ss.entries[STORE_DLOG] : 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    struct slot *w = calloc(BATCH_MAX, sizeof *w);
    struct dlog_bitem *ix = malloc(BATCH_MAX * sizeof *ix);
    struct buf rec = { 0 };
    int64_t last_sweep = 0;
    if (!w || !ix) {
        free(w);
        free(ix);
        return NULL;
    }
    /* Below the workers (nice 10, this thread only): on a machine whose
     * cores the workers fill, the writer's wake-up every BATCH_EVERY_MS then
     * does not preempt a worker that may hold the main store's write lock
     * for a cap reservation; it needs a few percent of a core, which a
     * nice-10 thread still gets beside two busy ones. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 10))
        log_debug("decision log: writer priority unchanged", "err=%d", errno);
    load_seq();
    struct timespec due;
    clock_gettime(CLOCK_REALTIME, &due);
    for (;;) {
        pthread_mutex_lock(&D.mu);
        /* A batch every BATCH_EVERY_MS at most (sooner when the ring is a
         * quarter full, a flush waits, or at stop): a commit writes a few
         * pages of its own (branch, meta, free list), so batches taken as
         * soon as the last one is committed (a few entries each under
         * load) made the writer write kilobytes per entry. */
        due.tv_nsec += BATCH_EVERY_MS * 1000000L;
        if (due.tv_nsec >= 1000000000L) {
            due.tv_sec++;
            due.tv_nsec -= 1000000000L;
        }
        while (!D.stop && D.flush_to <= D.written && D.count < (D.cap + 3) / 4)
            if (pthread_cond_timedwait(&D.wake, &D.mu, &due))
                break;
        clock_gettime(CLOCK_REALTIME, &due);
        int n = 0;
        while (D.count && n < BATCH_MAX) {
            w[n++] = D.ring[D.head];
            D.ring[D.head].b = (struct buf)BUF_INIT;
            D.head = (D.head + 1) % D.cap;
            D.count--;
        }
        int stop = D.stop && !D.count;
        pthread_mutex_unlock(&D.mu);
        if (n)
            write_batch(w, n, ix, &rec);
        pthread_mutex_lock(&D.mu);
        for (int i = 0; i < n; i++) { /* the last written ends on top, for the next submit */
            if (w[i].b.cap > BUF_KEEP || D.nspare >= D.cap)
                buf_free(&w[i].b);
            else
                D.spare[D.nspare++] = w[i].b;
            w[i].b = (struct buf)BUF_INIT;
        }
        D.written += (uint64_t)n;
        pthread_cond_broadcast(&D.done);
        pthread_mutex_unlock(&D.mu);
        int64_t now = clock_now_ms();
        if (!n && (now - last_sweep > SWEEP_EVERY_MS || now < last_sweep)) {
            dlog_sweep(D.env, now - D.retention_ms);
            if (D.legacy && dlog_sweep(D.st, now - D.retention_ms) >= 0)
                D.legacy = legacy_entries(D.st) > 0;
            last_sweep = now;
        }
        if (stop)
            break;
    }
    for (int i = 0; i < BATCH_MAX; i++)
        buf_free(&w[i].b);
    free(w);
    free(ix);
    buf_free(&rec);
    return NULL;
}

int dlog_open(const struct config *cfg)
{
    if (D.env)
        return 0;
    size_t n = strlen(cfg->data_dir) + 8;
    char *dir = malloc(n);
    if (!dir)
        return ERR_NOMEM;
    snprintf(dir, n, "%s/dlog", cfg->data_dir);
    struct store_opts so = { .dir = dir, .map_size = DLOG_MAP_SIZE, .map_max = cfg->map_max,
                             .no_writemap = 1, /* see the top of the file */
                             .readahead = cfg->store_readahead,
                             .sync_interval_ms = (unsigned)cfg->sync_interval_ms };
    int rc = store_open(&so, &D.env);
    if (rc)
        log_error("decision log: cannot open its environment", "dir=\"%s\" err=\"%s\"", dir,
                  err_str(rc));
    free(dir);
    return rc;
}

struct store *dlog_store(void) { return D.env; }

void dlog_close(void) { dlog_stop(); }

int dlog_start(const struct config *cfg, struct store *st)
{
    int orc = dlog_open(cfg);
    if (orc)
        return orc;
    D.st = st;
    D.legacy = legacy_entries(st) > 0;
    D.threshold = (uint32_t)(cfg->dlog_sample * 1000000.0 + 0.5);
    D.retention_ms = (int64_t)cfg->dlog_retention_days * 86400000LL;
    D.cap = cfg->dlog_queue > 0 ? cfg->dlog_queue : 16384;
    D.ring = calloc((size_t)D.cap, sizeof *D.ring);
    D.spare = calloc((size_t)D.cap, sizeof *D.spare);
    D.nspare = 0;
    if (!D.ring || !D.spare) {
        free(D.ring);
        free(D.spare);
        D.ring = NULL;
        D.spare = NULL;
        return ERR_NOMEM;
    }
    D.head = D.count = 0;
    D.stop = 0;
    D.running = 1;
    if (pthread_create(&D.th, NULL, writer_main, NULL)) {
        D.running = 0;
        free(D.ring);
        free(D.spare);
        D.ring = NULL;
        D.spare = NULL;
        return ERR_NOMEM;
    }
    pthread_setname_np(D.th, "dlog-writer"); /* its CPU apart in /proc (bench-dlog.sh) */
    return 0;
}

static void stop_writer(void);

void dlog_stop(void)
{
    if (D.ring)
        stop_writer();
    if (D.env)
        store_close(D.env);
    D.env = NULL;
}

static void stop_writer(void)
{
    pthread_mutex_lock(&D.mu);
    D.stop = 1;
    pthread_cond_signal(&D.wake);
    pthread_mutex_unlock(&D.mu);
    pthread_join(D.th, NULL);
    pthread_mutex_lock(&D.mu);
    D.running = 0;
    for (long i = 0; i < D.cap; i++)
        buf_free(&D.ring[i].b);
    for (long i = 0; i < D.nspare; i++)
        buf_free(&D.spare[i]);
    free(D.ring);
    free(D.spare);
    D.ring = NULL;
    D.spare = NULL;
    D.nspare = 0;
    D.cap = D.count = 0;
    pthread_mutex_unlock(&D.mu);
}

int dlog_flush(int timeout_ms)
{
    if (!D.ring)
        return 0;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&D.mu);
    uint64_t target = D.submitted;
    if (D.flush_to < target) /* the writer takes them now rather than at its next batch */
        D.flush_to = target;
    pthread_cond_signal(&D.wake);
    while (D.written < target && D.running)
        if (pthread_cond_timedwait(&D.done, &D.mu, &dl)) {
            rc = D.written < target ? ERR_BUSY : 0;
            break;
        }
    pthread_mutex_unlock(&D.mu);
    return rc;
}

static void dlog_collector(struct buf *out, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&D.mu);
    long depth = D.count, cap = D.cap;
    pthread_mutex_unlock(&D.mu);
    struct store_stat ss = { 0 };
    if (D.env)
        store_stat(D.env, &ss);
    buf_printf(out,
               "# HELP promod_decision_log_written_total Decides written to the decision log.\n"
               "# TYPE promod_decision_log_written_total counter\n"
               "promod_decision_log_written_total %ld\n"
               "# HELP promod_decision_log_dropped_total Decides not logged: the writer's queue "
               "was full.\n"
               "# TYPE promod_decision_log_dropped_total counter\n"
               "promod_decision_log_dropped_total %ld\n"
               "# HELP promod_decision_log_failed_total Decides not logged: their batch could "
               "not be written.\n"
               "# TYPE promod_decision_log_failed_total counter\n"
               "promod_decision_log_failed_total %ld\n"
               "# HELP promod_decision_log_swept_total Entries removed by retention.\n"
               "# TYPE promod_decision_log_swept_total counter\n"
               "promod_decision_log_swept_total %ld\n"
               "# HELP promod_decision_log_queue Decides waiting for the writer.\n"
               "# TYPE promod_decision_log_queue gauge\n"
               "promod_decision_log_queue %ld\n"
               "# HELP promod_decision_log_queue_capacity Size of the writer's queue.\n"
               "# TYPE promod_decision_log_queue_capacity gauge\n"
               "promod_decision_log_queue_capacity %ld\n"
               "# HELP promod_decision_log_entries Entries in the log's own environment.\n"
               "# TYPE promod_decision_log_entries gauge\n"
               "promod_decision_log_entries %zu\n"
               "# HELP promod_decision_log_index_entries Customer index records of the log (one "
               "per writer batch; one per entry in logs of older versions).\n"
               "# TYPE promod_decision_log_index_entries gauge\n"
               "promod_decision_log_index_entries %zu\n"
               "# HELP promod_decision_log_map_bytes Map size of the log's environment.\n"
               "# TYPE promod_decision_log_map_bytes gauge\n"
               "promod_decision_log_map_bytes %zu\n",
               (long)D.n_written, (long)D.n_dropped, (long)D.n_failed, (long)D.n_swept, depth,
               cap, ss.entries[STORE_DLOG],
               ss.entries[STORE_DLOG_CUST] + ss.entries[STORE_DLOG_BATCH], ss.map_size);
}

void dlog_metrics_init(void) { metrics_register(dlog_collector, NULL); }
