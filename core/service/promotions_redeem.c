/* promotions_redeem.c — the redemption writer thread (see
 * promotions_redeem_submit in promotions.h).
 *
 * Why one writer: LMDB runs one write transaction at a time anyway, and a
 * redemption in a transaction of its own pays a commit and, through the
 * group sync, a flush of every page its commit copied — far more than its
 * few records.  Here the HTTP workers queue redemptions and go on serving;
 * the writer takes everything queued (up to BATCH_MAX), applies it in one
 * transaction (coupons_redeem_batch) and hands each outcome back.  Under
 * load the queue fills while the previous batch is applied, so batches
 * grow with the load by themselves; a lone redemption is applied at once,
 * with no waiting for company.
 *
 * Exactness is coupons_redeem's: the items of a batch are applied one
 * after the other in one transaction, each seeing the writes of those
 * before it, and other writers (rollbacks, assignments) serialise with
 * the batch on LMDB's writer lock. */
#include "service/promotions.h"
#include "service/promotions_internal.h"
#include "base/app.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/coupons.h"
#include "engine/rules.h"
#include "store/store.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH_MAX 256 /* redemptions in one transaction */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_work = PTHREAD_COND_INITIALIZER;
static struct promotions_redemption *g_head, **g_tail = &g_head;
static size_t g_qlen;           /* queued, under g_mu */
static uint64_t g_last_ticket;  /* the writer's last commit (writer thread only) */
static pthread_t g_thread;
static int g_state; /* 0 not started, 1 running, 2 stopping or stopped (or failed to start) */
static long g_batches, g_items, g_commits, g_largest;

/* Histograms for /metrics: how many redemptions a batch gets, how long the
 * writer takes to apply and commit one (no fsync: the group syncer flushes
 * afterwards, see promod_store_sync_seconds_total), and how long a
 * redemption waits in the queue before its batch starts. */
static const double size_le[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256 };
static const double us_le[] = { 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000 };
#define NSIZE (sizeof size_le / sizeof size_le[0])
#define NUS (sizeof us_le / sizeof us_le[0])
struct hist {
    long n[NUS + 1]; /* per bucket (not cumulative), last = +Inf */
    double sum;
    long count;
};
static struct hist g_hsize, g_happly, g_hwait; /* under g_hmu */
static pthread_mutex_t g_hmu = PTHREAD_MUTEX_INITIALIZER;

static void hist_add(struct hist *h, const double *le, size_t nle, double v)
{
    size_t i = 0;
    while (i < nle && v > le[i])
        i++;
    h->n[i]++;
    h->sum += v;
    h->count++;
}

static void hist_render(struct buf *out, const char *name, const char *help, const struct hist *h,
                        const double *le, size_t nle, double scale)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long c = 0;
    for (size_t i = 0; i < nle; i++) {
        c += h->n[i];
        buf_printf(out, "%s_bucket{le=\"%g\"} %ld\n", name, le[i] * scale, c);
    }
    c += h->n[nle];
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %ld\n%s_sum %g\n%s_count %ld\n", name, c, name,
               h->sum * scale, name, h->count);
}

/* --- answers released by the flush -------------------------------------------
 *
 * A redemption that wrote may be answered only once its commit is on disk.
 * Handing it back to the HTTP worker right after the commit meant two
 * wake-ups of every worker per batch: one to write the answer (which then
 * waited in http_held.c), one after the flush to send it.  Instead the
 * writer parks what it committed here and the store's sync hook releases
 * it after the flush that covers it: the worker wakes once, and the answer
 * it writes goes out at once.  Refusals (nothing written) are handed back
 * straight away. */

static pthread_mutex_t g_pmu = PTHREAD_MUTEX_INITIALIZER;
static struct promotions_redemption *g_parked, **g_ptail = &g_parked; /* in commit order */
static struct store *g_hooked;   /* the store whose sync hook releases them, NULL = none */

/* Call done() of every parked redemption whose commit is on disk (the
 * syncer thread after a flush, or the writer when the flush was quicker). */
static void release_synced(void *ud)
{
    struct store *st = ud;
    uint64_t synced = store_synced(st);
    /* parked in commit order, so tickets never decrease along the list:
     * what the flush covers is a prefix */
    pthread_mutex_lock(&g_pmu);
    struct promotions_redemption *ready = NULL, *last = NULL;
    for (struct promotions_redemption *x = g_parked; x && x->item.ticket <= synced; x = x->next)
        last = x;
    if (last) {
        ready = g_parked;
        g_parked = last->next;
        last->next = NULL;
        if (!g_parked)
            g_ptail = &g_parked;
    }
    pthread_mutex_unlock(&g_pmu);
    for (struct promotions_redemption *x = ready, *next; x; x = next) {
        next = x->next;
        x->done(x->ud); /* x may be gone once this returns */
    }
    pthread_mutex_lock(&g_mu); /* a writer waiting for this flush may go on */
    pthread_cond_signal(&g_work);
    pthread_mutex_unlock(&g_mu);
}

/* Apply `n` redemptions and call their callbacks (any thread).  `park`:
 * those that wrote are released by the flush (the writer thread); else
 * their callbacks run at once and the caller waits for the ticket. */
static void apply(struct promotions_redemption **xs, size_t n, int park)
{
    struct coupons_batch_item *items[BATCH_MAX];
    struct promotions_lookup lk = { rules_gen_acquire(), clock_now() };
    for (size_t i = 0; i < n; i++) {
        items[i] = &xs[i]->item;
        items[i]->q.now = lk.now;
    }
    uint64_t t0 = clock_mono_ns();
    int commits = coupons_redeem_batch(g_app->store, items, n, promotions_campaign_lookup, &lk);
    uint64_t t1 = clock_mono_ns();
    rules_gen_release(lk.gen);
    pthread_mutex_lock(&g_hmu);
    hist_add(&g_hsize, size_le, NSIZE, (double)n);
    hist_add(&g_happly, us_le, NUS, (double)(t1 - t0) / 1e3);
    for (size_t i = 0; i < n; i++)
        hist_add(&g_hwait, us_le, NUS, xs[i]->queued_ns && t0 > xs[i]->queued_ns
                                           ? (double)(t0 - xs[i]->queued_ns) / 1e3 : 0);
    pthread_mutex_unlock(&g_hmu);
    __atomic_fetch_add(&g_batches, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_items, (long)n, __ATOMIC_RELAXED);
    if (commits > 0)
        __atomic_fetch_add(&g_commits, (long)commits, __ATOMIC_RELAXED);
    if ((long)n > __atomic_load_n(&g_largest, __ATOMIC_RELAXED))
        __atomic_store_n(&g_largest, (long)n, __ATOMIC_RELAXED);
    struct store *st = park ? __atomic_load_n(&g_hooked, __ATOMIC_ACQUIRE) : NULL;
    int parked = 0;
    for (size_t i = 0; park && i < n; i++)
        if (xs[i]->item.ticket > g_last_ticket)
            g_last_ticket = xs[i]->item.ticket;
    for (size_t i = 0; i < n; i++) {
        struct promotions_redemption *x = xs[i];
        if (!st || !x->item.ticket) {
            x->done(x->ud); /* x may be gone once this returns */
            continue;
        }
        pthread_mutex_lock(&g_pmu);
        x->next = NULL;
        *g_ptail = x;
        g_ptail = &x->next;
        pthread_mutex_unlock(&g_pmu);
        parked = 1;
    }
    /* a flush that ended before they were parked released nothing of
     * theirs, and no other flush may follow: look once more */
    if (parked)
        release_synced(st);
}

static void *writer_main(void *arg)
{
    (void)arg;
    struct promotions_redemption *xs[BATCH_MAX];
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!g_head && g_state == 1)
            pthread_cond_wait(&g_work, &g_mu);
        if (!g_head)
            break; /* stopping, nothing left */
        /* Group commit: while the flush of the previous batch is still in
         * flight, a commit now would only wait for the next flush anyway;
         * let the queue grow instead (up to BATCH_MAX), so that one commit
         * per flush writes the pages the redemptions share (branch pages,
         * the campaign's records, LMDB's own) once, not once per commit.
         * The flush's hook (release_synced) wakes the writer. */
        struct store *st = __atomic_load_n(&g_hooked, __ATOMIC_ACQUIRE);
        while (st && g_state == 1 && g_last_ticket && g_qlen < BATCH_MAX &&
               store_synced(st) < g_last_ticket) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L; /* a bound, should a wake-up be missed */
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g_work, &g_mu, &ts);
        }
        size_t n = 0;
        while (g_head && n < BATCH_MAX) {
            xs[n++] = g_head;
            g_head = g_head->next;
        }
        g_qlen -= n;
        if (!g_head)
            g_tail = &g_head;
        pthread_mutex_unlock(&g_mu);
        apply(xs, n, 1);
        pthread_mutex_lock(&g_mu);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

void promotions_redeem_submit(struct promotions_redemption *x, void (*done)(void *ud), void *ud)
{
    x->done = done;
    x->ud = ud;
    x->next = NULL;
    x->queued_ns = clock_mono_ns();
    pthread_mutex_lock(&g_mu);
    if (g_state == 0) {
        g_state = pthread_create(&g_thread, NULL, writer_main, NULL) == 0 ? 1 : 2;
        if (g_state == 2)
            log_error("redemption writer unavailable", "%s", "redemptions run on the caller's thread");
    }
    if (g_state != 1) {
        pthread_mutex_unlock(&g_mu);
        apply(&x, 1, 0);
        return;
    }
    *g_tail = x;
    g_tail = &x->next;
    g_qlen++;
    pthread_cond_signal(&g_work);
    pthread_mutex_unlock(&g_mu);
}

void promotions_redeemer_stop(void)
{
    pthread_mutex_lock(&g_mu);
    int was = g_state;
    g_state = 2;
    pthread_cond_signal(&g_work);
    pthread_mutex_unlock(&g_mu);
    if (was == 1)
        pthread_join(g_thread, NULL);
    /* what the writer parked: on disk with the next flush */
    struct store *st = __atomic_exchange_n(&g_hooked, NULL, __ATOMIC_ACQ_REL);
    if (!st)
        return;
    pthread_mutex_lock(&g_pmu);
    uint64_t last = 0;
    for (struct promotions_redemption *x = g_parked; x; x = x->next)
        if (x->item.ticket > last)
            last = x->item.ticket;
    pthread_mutex_unlock(&g_pmu);
    if (last)
        store_sync_wait(st, last);
    release_synced(st);
}

/* --- the blocking form ----------------------------------------------------- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void wake(void *ud)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void promotions_redeem_submit_wait(struct promotions_redemption *x)
{
    struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
    promotions_redeem_submit(x, wake, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
}

/* --- /metrics ---------------------------------------------------------------- */

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_printf(out,
               "# HELP promod_coupon_redeem_batches_total Redemption batches applied by the writer thread.\n"
               "# TYPE promod_coupon_redeem_batches_total counter\n"
               "promod_coupon_redeem_batches_total %ld\n"
               "# HELP promod_coupon_redeem_batched_total Redemptions applied in those batches.\n"
               "# TYPE promod_coupon_redeem_batched_total counter\n"
               "promod_coupon_redeem_batched_total %ld\n"
               "# HELP promod_coupon_redeem_commits_total Store commits of redemption batches (more than batches after a fallback to one by one).\n"
               "# TYPE promod_coupon_redeem_commits_total counter\n"
               "promod_coupon_redeem_commits_total %ld\n"
               "# HELP promod_coupon_redeem_batch_largest Most redemptions in one batch since start.\n"
               "# TYPE promod_coupon_redeem_batch_largest gauge\n"
               "promod_coupon_redeem_batch_largest %ld\n",
               __atomic_load_n(&g_batches, __ATOMIC_RELAXED), __atomic_load_n(&g_items, __ATOMIC_RELAXED),
               __atomic_load_n(&g_commits, __ATOMIC_RELAXED), __atomic_load_n(&g_largest, __ATOMIC_RELAXED));
    pthread_mutex_lock(&g_hmu);
    struct hist hs = g_hsize, ha = g_happly, hw = g_hwait;
    pthread_mutex_unlock(&g_hmu);
    hist_render(out, "promod_coupon_redeem_batch_size", "Redemptions per batch (one store transaction).",
                &hs, size_le, NSIZE, 1);
    hist_render(out, "promod_coupon_redeem_apply_seconds",
                "Time to apply and commit one batch (before the group fsync).", &ha, us_le, NUS, 1e-6);
    hist_render(out, "promod_coupon_redeem_queue_seconds",
                "Time a redemption waited for the writer thread before its batch started.", &hw,
                us_le, NUS, 1e-6);
}

void promotions_redeemer_init(void)
{
    metrics_register(collector, NULL);
    struct store *st = g_app->store;
    if (st && store_set_sync_hook(st, release_synced, st) == 0)
        __atomic_store_n(&g_hooked, st, __ATOMIC_RELEASE);
    else
        __atomic_store_n(&g_hooked, NULL, __ATOMIC_RELEASE);
}
