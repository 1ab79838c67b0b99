/*
 * experiments_expo.c — the exposure log: a bounded queue that decide
 * fills, one writer thread that stores first exposures in sorted batches,
 * and the reads of STORE_EXPOSURES (sticky look-ups, results, a
 * customer's export and erasure).  See experiments.h.
 *
 * Why a queue and not decide's own write transaction: a first exposure is
 * an insert at a random place of a large B-tree, and on this store a
 * commit that dirties one more page costs a decide several microseconds
 * (a write fault on a page the syncer cleaned).  Batched and sorted, the
 * inserts of many decides share pages and one commit, on a thread that
 * does not hold up a reply.  The queue is bounded: when the writer cannot
 * keep up, decide waits for room rather than drop an exposure.
 */
#include "engine/experiments.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "store/store.h"
#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QCAP 16384          /* queued exposures */
#define BATCH 4096          /* exposures per write transaction */
#define TICK_MS 20          /* the writer's longest sleep with work queued */
#define KEYMAX (4 + 129)

struct item {
    uint64_t seq;           /* arrival order: the first of two for one key wins */
    int64_t ts_ms;
    uint32_t xkey;
    char variant[EXPERIMENTS_MAX_VARIANT_ID + 1];
    char customer[129];
    char decision[32];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, space, done;
    struct item *q;         /* ring of QCAP */
    size_t head, n;
    uint64_t pushed, written; /* items queued / stored or refused */
    int flush, stop, running;
    pthread_t th;
    struct store *s;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER,
        .work = PTHREAD_COND_INITIALIZER,
        .space = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER };

static long g_recorded, g_duplicate, g_failed; /* /metrics, relaxed atomics */

/* ---------------------------------------------------------------------- */
/* keys and values                                                        */

static size_t expo_key(uint32_t xkey, const char *customer, unsigned char *k)
{
    size_t n = strlen(customer);
    if (n > 128)
        n = 128;
    store_be32(xkey, k);
    memcpy(k + 4, customer, n);
    return 4 + n;
}

struct vbuf {
    char b[512];
    size_t n;
};

static int mp_write(void *data, const char *p, size_t len)
{
    struct vbuf *o = data;
    if (o->n + len > sizeof o->b)
        return -1;
    memcpy(o->b + o->n, p, len);
    o->n += len;
    return 0;
}

/* [variant, ts_ms, decision_id] */
static int expo_value(const struct item *it, char *out, size_t *len)
{
    struct vbuf o = { .n = 0 };
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, mp_write);
    size_t vl = strlen(it->variant), dl = strlen(it->decision);
    if (msgpack_pack_array(&pk, 3) || msgpack_pack_str_with_body(&pk, it->variant, vl) ||
        msgpack_pack_int64(&pk, it->ts_ms) || msgpack_pack_str_with_body(&pk, it->decision, dl))
        return ERR_TOOBIG;
    memcpy(out, o.b, o.n);
    *len = o.n;
    return 0;
}

/* Decode a value into x (strings copied into x->buf). */
static int expo_decode(const void *v, size_t vl, const char *cust, size_t cl,
                       struct experiments_exposure *x)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = ERR_PARSE;
    if (msgpack_unpack_next(&up, v, vl, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == 3) {
        const msgpack_object *a = up.data.via.array.ptr;
        if (a[0].type == MSGPACK_OBJECT_STR && a[2].type == MSGPACK_OBJECT_STR &&
            (a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
             a[1].type == MSGPACK_OBJECT_NEGATIVE_INTEGER)) {
            size_t vn = a[0].via.str.size, dn = a[2].via.str.size;
            if (cl + vn + dn + 3 <= sizeof x->buf) {
                char *p = x->buf;
                memcpy(p, cust, cl);
                p[cl] = 0;
                x->customer = p;
                p += cl + 1;
                memcpy(p, a[0].via.str.ptr, vn);
                p[vn] = 0;
                x->variant = p;
                p += vn + 1;
                memcpy(p, a[2].via.str.ptr, dn);
                p[dn] = 0;
                x->decision_id = p;
                x->ts_ms = a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)a[1].via.u64
                                                                         : a[1].via.i64;
                rc = 0;
            }
        }
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

int experiments_expo_get(struct store_txn *t, uint32_t xkey, const char *customer,
                         struct experiments_exposure *out)
{
    unsigned char k[KEYMAX];
    size_t kl = expo_key(xkey, customer, k);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_EXPOSURES, k, kl, &v, &vl);
    if (rc)
        return rc;
    return expo_decode(v, vl, customer, strlen(customer), out);
}

struct scan_ctx {
    experiments_expo_fn fn;
    void *ud;
};

static int scan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct scan_ctx *c = ud;
    struct experiments_exposure x;
    if (klen < 5 || expo_decode(val, vlen, (const char *)key + 4, klen - 4, &x))
        return 0;
    return c->fn(c->ud, &x);
}

int experiments_expo_scan(struct store_txn *t, uint32_t xkey, experiments_expo_fn fn, void *ud)
{
    unsigned char p[4];
    store_be32(xkey, p);
    struct scan_ctx c = { fn, ud };
    return store_scan(t, STORE_EXPOSURES, p, 4, NULL, 0, scan_cb, &c);
}

/* The first experiment number with any exposure at or after `from`. */
struct first_ctx {
    uint32_t xkey;
    int found;
};

static int first_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct first_ctx *c = ud;
    if (klen >= 4) {
        c->xkey = store_get_be32(key);
        c->found = 1;
    }
    return 1;
}

/* Visit every experiment number that has exposures (one seek each):
 * fn(ud, xkey) returns 0 to go on, < 0 to stop with that code. */
static int each_xkey(struct store_txn *t, int (*fn)(void *, uint32_t), void *ud)
{
    uint64_t next = 0;
    while (next <= UINT32_MAX) {
        unsigned char start[4];
        store_be32((uint32_t)next, start);
        struct first_ctx c = { 0, 0 };
        int rc = store_scan(t, STORE_EXPOSURES, NULL, 0, start, 4, first_cb, &c);
        if (rc)
            return rc;
        if (!c.found)
            return 0;
        if ((rc = fn(ud, c.xkey)))
            return rc;
        next = (uint64_t)c.xkey + 1;
    }
    return 0;
}

struct cust_ctx {
    struct store_txn *t;
    const char *customer;
    json_t *arr;
    long deleted;
};

static int export_one(void *ud, uint32_t xkey)
{
    struct cust_ctx *c = ud;
    struct experiments_exposure x;
    int rc = experiments_expo_get(c->t, xkey, c->customer, &x);
    if (rc == ERR_NOTFOUND || rc == ERR_PARSE)
        return 0;
    if (rc)
        return rc;
    json_array_append_new(c->arr, json_pack("{s:I,s:s,s:I,s:s}", "experiment_key", (json_int_t)xkey,
                                            "variant", x.variant, "ts", (json_int_t)(x.ts_ms / 1000),
                                            "decision_id", x.decision_id));
    return 0;
}

json_t *experiments_expo_customer(struct store_txn *t, const char *customer)
{
    struct cust_ctx c = { t, customer, json_array(), 0 };
    if (!c.arr || each_xkey(t, export_one, &c)) {
        json_decref(c.arr);
        return NULL;
    }
    return c.arr;
}

static int erase_one(void *ud, uint32_t xkey)
{
    struct cust_ctx *c = ud;
    unsigned char k[KEYMAX];
    int rc = store_del(c->t, STORE_EXPOSURES, k, expo_key(xkey, c->customer, k));
    if (rc == 0)
        c->deleted++;
    return rc == ERR_NOTFOUND ? 0 : rc;
}

long experiments_expo_erase_customer(struct store_txn *t, const char *customer)
{
    struct cust_ctx c = { t, customer, NULL, 0 };
    int rc = each_xkey(t, erase_one, &c);
    return rc ? rc : c.deleted;
}

/* ---------------------------------------------------------------------- */
/* the queue                                                              */

void experiments_expose(uint32_t xkey, const char *variant, const char *customer,
                        const char *decision_id, int64_t ts_ms)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        return; /* no writer (a tool, not the server): nothing is logged */
    }
    while (g.n == QCAP && !g.stop) {
        pthread_cond_signal(&g.work);
        pthread_cond_wait(&g.space, &g.mu);
    }
    if (g.stop) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    struct item *it = &g.q[(g.head + g.n) % QCAP];
    it->seq = ++g.pushed;
    it->ts_ms = ts_ms;
    it->xkey = xkey;
    snprintf(it->variant, sizeof it->variant, "%s", variant);
    snprintf(it->customer, sizeof it->customer, "%s", customer);
    snprintf(it->decision, sizeof it->decision, "%s", decision_id ? decision_id : "");
    g.n++;
    /* the first of a batch starts the writer's tick; a quarter full cuts it short */
    if (g.n == 1 || g.n == QCAP / 4)
        pthread_cond_signal(&g.work);
    pthread_mutex_unlock(&g.mu);
}

static int item_cmp(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    if (x->xkey != y->xkey)
        return x->xkey < y->xkey ? -1 : 1;
    int c = strcmp(x->customer, y->customer);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Store one sorted batch: the first exposure of each key, unless stored. */
static void write_batch(struct item *b, size_t n)
{
    qsort(b, n, sizeof *b, item_cmp);
    long rec = 0, dup = 0;
    struct store_txn *t = NULL;
    int rc = store_wtxn_begin(g.s, &t);
    for (size_t i = 0; i < n && !rc; i++) {
        if (i && b[i].xkey == b[i - 1].xkey && !strcmp(b[i].customer, b[i - 1].customer)) {
            dup++;
            continue;
        }
        unsigned char k[KEYMAX];
        size_t kl = expo_key(b[i].xkey, b[i].customer, k);
        const void *v;
        size_t vl;
        int got = store_get(t, STORE_EXPOSURES, k, kl, &v, &vl);
        if (got == 0) {
            dup++;
            continue;
        }
        if (got != ERR_NOTFOUND) {
            rc = got;
            break;
        }
        char val[512];
        size_t len;
        if (expo_value(&b[i], val, &len))
            continue;
        if ((rc = store_put(t, STORE_EXPOSURES, k, kl, val, len)))
            break;
        rec++;
    }
    if (!rc)
        rc = store_txn_commit(t, STORE_ASYNC);
    else if (t)
        store_txn_end(t);
    if (rc) {
        __atomic_add_fetch(&g_failed, (long)n, __ATOMIC_RELAXED);
        log_error("exposures not recorded", "n=%zu err=\"%s\"", n, err_str(rc));
        return;
    }
    __atomic_add_fetch(&g_recorded, rec, __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_duplicate, dup, __ATOMIC_RELAXED);
}

static void *writer(void *arg)
{
    (void)arg;
    struct item *b = malloc(sizeof *b * BATCH);
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (!g.n && !g.stop && !g.flush)
            pthread_cond_wait(&g.work, &g.mu);
        if (!g.n && g.stop)
            break;
        if (g.n < QCAP / 4 && !g.flush && !g.stop) {
            /* gather for a tick, so one commit carries many decides */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += TICK_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g.work, &g.mu, &ts);
        }
        g.flush = 0;
        size_t n = g.n < BATCH ? g.n : BATCH;
        if (!b) /* no memory for a batch: refuse what is queued rather than spin */
            n = g.n;
        for (size_t i = 0; b && i < n; i++)
            b[i] = g.q[(g.head + i) % QCAP];
        g.head = (g.head + n) % QCAP;
        g.n -= n;
        pthread_cond_broadcast(&g.space);
        pthread_mutex_unlock(&g.mu);
        if (b && n)
            write_batch(b, n);
        else if (n)
            __atomic_add_fetch(&g_failed, (long)n, __ATOMIC_RELAXED);
        pthread_mutex_lock(&g.mu);
        g.written += n;
        if (g.n)
            g.flush = 1; /* more queued: no tick's wait before the next batch */
        pthread_cond_broadcast(&g.done);
    }
    g.running = 0;
    pthread_cond_broadcast(&g.done);
    pthread_cond_broadcast(&g.space);
    pthread_mutex_unlock(&g.mu);
    free(b);
    return NULL;
}

int experiments_expo_start(struct store *s)
{
    pthread_mutex_lock(&g.mu);
    if (g.running) {
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    if (!g.q && !(g.q = malloc(sizeof *g.q * QCAP))) {
        pthread_mutex_unlock(&g.mu);
        return ERR_NOMEM;
    }
    g.s = s;
    g.head = g.n = 0;
    g.stop = g.flush = 0;
    g.running = 1;
    int rc = pthread_create(&g.th, NULL, writer, NULL);
    if (rc)
        g.running = 0;
    pthread_mutex_unlock(&g.mu);
    return rc ? -rc : 0;
}

void experiments_expo_stop(void)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    g.stop = 1;
    pthread_cond_broadcast(&g.work);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.th, NULL);
    pthread_mutex_lock(&g.mu);
    free(g.q);
    g.q = NULL;
    pthread_mutex_unlock(&g.mu);
}

int experiments_expo_flush(void)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    uint64_t target = g.pushed;
    g.flush = 1;
    pthread_cond_signal(&g.work);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    int rc = 0;
    while (g.written < target && g.running && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g.done, &g.mu, &dl);
    int ok = g.written >= target || !g.running;
    pthread_mutex_unlock(&g.mu);
    return ok ? 0 : ERR_BUSY;
}

/* ---------------------------------------------------------------------- */
/* /metrics                                                               */

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g.mu);
    size_t queued = g.n;
    pthread_mutex_unlock(&g.mu);
    buf_printf(out,
               "# HELP promod_experiment_exposures_total First exposures handled by the writer, by "
               "result.\n"
               "# TYPE promod_experiment_exposures_total counter\n"
               "promod_experiment_exposures_total{result=\"recorded\"} %ld\n"
               "promod_experiment_exposures_total{result=\"duplicate\"} %ld\n"
               "promod_experiment_exposures_total{result=\"failed\"} %ld\n"
               "# HELP promod_experiment_exposure_queue Exposures waiting for the writer.\n"
               "# TYPE promod_experiment_exposure_queue gauge\n"
               "promod_experiment_exposure_queue %zu\n",
               __atomic_load_n(&g_recorded, __ATOMIC_RELAXED),
               __atomic_load_n(&g_duplicate, __ATOMIC_RELAXED),
               __atomic_load_n(&g_failed, __ATOMIC_RELAXED), queued);
}

void experiments_metrics_init(void) { metrics_register(collector, NULL); }
