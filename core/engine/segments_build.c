/*
 * segments_build.c — the builder thread: fills segments that are new or
 * whose definition changed, empties deleted ones, and sweeps time-based
 * segments over every customer every `segments_sweep_interval` seconds.
 *
 * It works in batches of BATCH customers per write transaction, so the
 * writer lock is never held long and profile writes, events and decides
 * interleave with a build.  Progress (the last customer done) is kept in
 * the slot record, so a restart resumes a build where it stopped.  Writes
 * that happen meanwhile evaluate building segments too (they are in the
 * generation), so a customer written during the build is right at once;
 * the builder visiting it again later finds nothing to change.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "engine/segbits.h"
#include "store/store.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1000        /* customers per write transaction */
#define DRAIN 20000       /* customer records looked at per transaction when emptying */

/* ---- customers: profiles and stats merged ------------------------------------- */

struct idlist {
    char (*id)[132];
    int n, max;
    const char *after;
};

static int collect_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct idlist *l = ud;
    if (klen == 0 || klen > 128)
        return 0;
    if (l->after && strlen(l->after) == klen && !memcmp(l->after, key, klen))
        return 0;
    memcpy(l->id[l->n], key, klen);
    l->id[l->n][klen] = 0;
    return ++l->n >= l->max;
}

long segments_customers(struct store_txn *t, const char *after, long max, segments_cust_fn fn,
                        void *ud, char *last)
{
    if (max <= 0)
        return 0;
    struct idlist a = { calloc((size_t)max, sizeof *a.id), 0, (int)max, after && *after ? after : NULL };
    struct idlist b = { calloc((size_t)max, sizeof *b.id), 0, (int)max, a.after };
    long done = 0;
    int rc = 0;
    if (!a.id || !b.id) {
        rc = ERR_NOMEM;
        goto out;
    }
    size_t al = a.after ? strlen(a.after) : 0;
    if ((rc = store_scan(t, STORE_PROFILES, NULL, 0, a.after, al, collect_cb, &a)) ||
        (rc = store_scan(t, STORE_PSTATS, NULL, 0, a.after, al, collect_cb, &b)))
        goto out;
    int i = 0, j = 0;
    while (done < max && (i < a.n || j < b.n) && !rc) {
        int c = i >= a.n ? 1 : j >= b.n ? -1 : strcmp(a.id[i], b.id[j]);
        const char *id = c <= 0 ? a.id[i] : b.id[j];
        if (c <= 0)
            i++;
        if (c >= 0)
            j++;
        /* ids are stored in key order, which for bytes is strcmp order */
        size_t il = strlen(id);
        const void *pv = NULL, *sv = NULL;
        size_t pl = 0, sl = 0;
        int r1 = store_get(t, STORE_PROFILES, id, il, &pv, &pl);
        int r2 = store_get(t, STORE_PSTATS, id, il, &sv, &sl);
        if ((r1 && r1 != ERR_NOTFOUND) || (r2 && r2 != ERR_NOTFOUND)) {
            rc = r1 && r1 != ERR_NOTFOUND ? r1 : r2;
            break;
        }
        rc = fn(ud, id, il, r1 ? NULL : pv, pl, r2 ? NULL : sv, sl);
        snprintf(last, 132, "%s", id);
        done++;
    }
out:
    free(a.id);
    free(b.id);
    return rc ? rc : done;
}

/* ---- the thread ------------------------------------------------------------------ */

static pthread_t g_thr;
static int g_started;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_run, g_kick;
static struct app *g_bapp;
static struct segments_progress g_prog;

void segments_builder_kick(void)
{
    pthread_mutex_lock(&g_mu);
    g_kick = 1;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

void segments_progress(struct segments_progress *p)
{
    pthread_mutex_lock(&g_mu);
    *p = g_prog;
    pthread_mutex_unlock(&g_mu);
}

static int stopping(void)
{
    return !__atomic_load_n(&g_run, __ATOMIC_ACQUIRE);
}

struct pass {
    struct segments_batch *b;
    const uint64_t *mask;
    int rc;
};

static int pass_cb(void *ud, const char *id, size_t idlen, const char *prof, size_t plen,
                   const char *stats, size_t slen)
{
    struct pass *x = ud;
    x->rc = segments_batch_mask(x->b, id, idlen, prof, plen, stats, slen, x->mask);
    return x->rc ? x->rc : 0;
}

/* One batch of a pass over customers after `cursor` for the segments
 * `mask` chooses (recomputed from the batch's generation by `pick`).
 * @return customers visited (0: the pass is over), or an error. */
typedef int (*pick_fn)(struct store_txn *t, const struct segments_gen *g, uint64_t *mask,
                       char *cursor, void *ud);

static long pass_batch(struct store *st, pick_fn pick, void *ud, char *cursor, int *idle)
{
    struct store_txn *t;
    int rc = store_wtxn_begin(st, &t);
    if (rc)
        return rc;
    struct segments_batch *b = segments_batch_begin(t);
    if (!b) {
        store_txn_end(t);
        return ERR_NOMEM;
    }
    *idle = 0;
    long n = 0;
    uint64_t *mask = b->g && b->g->nseg ? calloc(b->g->nw, sizeof *mask) : NULL;
    if (!mask || (rc = pick(t, b->g, mask, cursor, ud)) <= 0) {
        *idle = 1; /* nothing to do for this pass */
        segments_batch_abort(b);
        store_txn_end(t);
        free(mask);
        return rc < 0 ? rc : 0;
    }
    struct pass x = { b, mask, 0 };
    char last[132] = "";
    n = segments_customers(t, cursor, BATCH, pass_cb, &x, last);
    if (n < 0) {
        segments_batch_abort(b);
        store_txn_end(t);
        free(mask);
        return n;
    }
    rc = segments_batch_end(b);
    if (!rc && n)
        snprintf(cursor, 132, "%s", last);
    rc = rc ? rc : pick(t, NULL, NULL, n ? cursor : NULL, ud); /* record progress */
    free(mask);
    if (rc < 0) {
        store_txn_end(t);
        return rc;
    }
    rc = store_txn_commit(t, STORE_ASYNC);
    return rc ? rc : n;
}

/* Building: the segments whose slot says "building".  With g == NULL,
 * records the batch's end (cursor, or "done" when cursor is NULL). */
struct build_state {
    struct segidx_slot *slots;
    int64_t now;
    char last[132];   /* the cursor recorded by the last batch */
};

static int pick_building(struct store_txn *t, const struct segments_gen *g, uint64_t *mask,
                         char *cursor, void *ud)
{
    struct build_state *bs = ud;
    int rc;
    if (!g) {
        /* the end of the pass: slots read afresh, so one whose definition
         * changed meanwhile (cursor reset) is not marked ready */
        if (!cursor && (rc = segidx_slots_load(t, bs->slots)))
            return rc;
        for (int s = 0; s < SEGMENTS_SLOTS; s++) {
            struct segidx_slot *sl = &bs->slots[s];
            if (!sl->used || strcmp(sl->state, "building"))
                continue;
            if (cursor) {
                if (strcmp(sl->cursor, cursor) >= 0)
                    continue;
                snprintf(sl->cursor, sizeof sl->cursor, "%s", cursor);
            } else {
                if (strcmp(sl->cursor, bs->last))
                    continue;
                snprintf(sl->state, sizeof sl->state, "ready");
                sl->cursor[0] = 0;
                sl->built_at = bs->now;
            }
            if ((rc = segidx_slot_put(t, s, sl)))
                return rc;
        }
        if (cursor)
            snprintf(bs->last, sizeof bs->last, "%s", cursor);
        return 1;
    }
    if ((rc = segidx_slots_load(t, bs->slots)))
        return rc;
    int any = 0;
    for (int s = 0; s < SEGMENTS_SLOTS; s++) {
        struct segidx_slot *sl = &bs->slots[s];
        int j = g->slot_seg[s];
        if (!sl->used || strcmp(sl->state, "building") || j < 0)
            continue;
        segbit_set(mask, j);
        if (!any || strcmp(sl->cursor, cursor) < 0)
            snprintf(cursor, 132, "%s", sl->cursor);
        any = 1;
    }
    snprintf(bs->last, sizeof bs->last, "%s", cursor);
    return any;
}

/* Sweeping: the generation's time-based segments. */
static int pick_timed(struct store_txn *t, const struct segments_gen *g, uint64_t *mask,
                      char *cursor, void *ud)
{
    (void)t;
    (void)cursor;
    (void)ud;
    if (!g)
        return 1;
    int any = 0;
    for (size_t w = 0; w < g->nw; w++)
        any |= (mask[w] = g->timed[w]) != 0;
    return any;
}

static int drain_deleting(struct store *st)
{
    struct segidx_slot *slots = calloc(SEGMENTS_SLOTS, sizeof *slots);
    if (!slots)
        return ERR_NOMEM;
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (!rc) {
        rc = segidx_slots_load(t, slots);
        store_txn_end(t);
    }
    int n = 0;
    for (int s = 0; s < SEGMENTS_SLOTS && !rc && !stopping(); s++) {
        if (!slots[s].used || strcmp(slots[s].state, "deleting"))
            continue;
        n++;
        char cursor[132] = "";
        for (;;) {
            if (stopping())
                break;
            if ((rc = store_wtxn_begin(st, &t)))
                break;
            long k = segidx_drain_slot(t, s, cursor, DRAIN);
            if (k < 0) {
                store_txn_end(t);
                rc = (int)k;
                break;
            }
            if (k == 0 && (rc = segidx_slot_del(t, s))) {
                store_txn_end(t);
                break;
            }
            if ((rc = store_txn_commit(t, STORE_ASYNC)))
                break;
            if (k == 0) {
                n--; /* emptied and freed */
                break;
            }
        }
    }
    free(slots);
    pthread_mutex_lock(&g_mu);
    g_prog.deleting = n;
    pthread_mutex_unlock(&g_mu);
    return rc;
}

static int build_pending(struct store *st)
{
    struct build_state bs = { calloc(SEGMENTS_SLOTS, sizeof *bs.slots), clock_now(), "" };
    if (!bs.slots)
        return ERR_NOMEM;
    char cursor[132] = "";
    int idle = 0, rc = 0;
    while (!stopping()) {
        long n = pass_batch(st, pick_building, &bs, cursor, &idle);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (idle)
            break;
        if (n == 0) { /* the pass reached the end: mark ready what it covered */
            struct store_txn *t;
            if ((rc = store_wtxn_begin(st, &t)))
                break;
            bs.now = clock_now();
            rc = pick_building(t, NULL, NULL, NULL, &bs);
            if (rc < 0) {
                store_txn_end(t);
                break;
            }
            rc = store_txn_commit(t, STORE_DURABLE);
            log_info("segments built", "%s", "");
            cursor[0] = 0;
            break;
        }
        int building = 0;
        for (int s = 0; s < SEGMENTS_SLOTS; s++)
            building += bs.slots[s].used && !strcmp(bs.slots[s].state, "building");
        pthread_mutex_lock(&g_mu);
        g_prog.building = building;
        pthread_mutex_unlock(&g_mu);
    }
    pthread_mutex_lock(&g_mu);
    g_prog.building = 0;
    pthread_mutex_unlock(&g_mu);
    free(bs.slots);
    return rc;
}

static int sweep(struct store *st)
{
    char cursor[132] = "";
    int idle = 0;
    while (!stopping()) {
        long n = pass_batch(st, pick_timed, NULL, cursor, &idle);
        if (n < 0)
            return (int)n;
        if (idle || n == 0)
            break;
    }
    pthread_mutex_lock(&g_mu);
    g_prog.last_sweep = clock_now();
    g_prog.sweeps++;
    pthread_mutex_unlock(&g_mu);
    return 0;
}

static void *builder_main(void *arg)
{
    struct app *app = arg;
    int64_t next_sweep = clock_now() + app->cfg.segments_sweep_s;
    int work = 1;
    while (!stopping()) {
        if (work) {
            int rc = drain_deleting(app->store);
            if (!rc)
                rc = build_pending(app->store);
            if (rc && !stopping())
                log_error("segments: builder step failed", "err=\"%s\"", err_str(rc));
            work = 0;
        }
        if (clock_now() >= next_sweep) {
            int rc = sweep(app->store);
            if (rc && !stopping())
                log_error("segments: sweep failed", "err=\"%s\"", err_str(rc));
            next_sweep = clock_now() + app->cfg.segments_sweep_s;
        }
        pthread_mutex_lock(&g_mu);
        if (!g_kick && g_run) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1; /* the sweep clock may be the test clock: look again each second */
            pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        }
        if (g_kick) {
            g_kick = 0;
            work = 1;
        }
        pthread_mutex_unlock(&g_mu);
    }
    return NULL;
}

int segments_builder_start(struct app *app)
{
    g_bapp = app;
    __atomic_store_n(&g_run, 1, __ATOMIC_RELEASE);
    if (pthread_create(&g_thr, NULL, builder_main, app)) {
        __atomic_store_n(&g_run, 0, __ATOMIC_RELEASE);
        return ERR_NOMEM;
    }
    g_started = 1;
    return 0;
}

void segments_builder_stop(void)
{
    if (!g_started)
        return;
    pthread_mutex_lock(&g_mu);
    __atomic_store_n(&g_run, 0, __ATOMIC_RELEASE);
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(g_thr, NULL);
    g_started = 0;
}

/* ---- metrics ------------------------------------------------------------------------ */

static void collect(struct buf *out, void *ud)
{
    (void)ud;
    struct segments_gen *g = segments_gen_acquire();
    struct segments_progress p;
    segments_progress(&p);
    buf_printf(out, "# HELP promod_segments Segments loaded.\n# TYPE promod_segments gauge\n"
                    "promod_segments %d\n", g ? g->nseg : 0);
    buf_printf(out, "# HELP promod_segments_building Segments being filled by the builder.\n"
                    "# TYPE promod_segments_building gauge\npromod_segments_building %d\n",
               p.building);
    buf_printf(out, "# HELP promod_segments_sweeps_total Completed sweeps of time-based segments.\n"
                    "# TYPE promod_segments_sweeps_total counter\npromod_segments_sweeps_total %llu\n",
               (unsigned long long)p.sweeps);
    segbits_metrics(out);
    if (g && g_bapp && g_bapp->store) {
        buf_adds(out, "# HELP promod_segment_members Customers in each segment.\n"
                      "# TYPE promod_segment_members gauge\n");
        struct store_txn *t;
        if (store_rtxn_begin(g_bapp->store, &t) == 0) {
            for (int j = 0; j < g->nseg; j++) {
                uint64_t n = 0;
                if (g->segs[j].slot < 0 || segidx_count(t, g->segs[j].slot, &n))
                    n = 0;
                buf_adds(out, "promod_segment_members{segment=\"");
                metrics_label(out, g->segs[j].id);
                buf_printf(out, "\"} %llu\n", (unsigned long long)n);
            }
            store_txn_end(t);
        }
    }
    segments_gen_release(g);
}

void segments_metrics_init(void)
{
    metrics_register(collect, NULL);
}
