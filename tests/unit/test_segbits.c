/* test_segbits.c — the in-memory segment view on a real LMDB store: rows
 * noted in write txns land after the commit (and not after an abort),
 * counts, member walks and ranked samples equal a model after many random
 * rows over more than one chunk of ordinals (ordinals freed and reused,
 * the id table grown and shrunk), also with writers on two threads and a
 * reader counting meanwhile. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "engine/segbits.h"
#include "fixture.h"
#include "store/store.h"

#define NC 150000 /* customers: more than two chunks of ordinals */
#define NS 5
static const int slots[NS] = { 0, 1, 2, 9, 700 };

static char dir[256];
static struct store *st;
static unsigned char model[NC]; /* bit k = in slots[k] */

static void setup(void)
{
    log_set_level(LOG_ERROR);
    tfx_tmpdir(dir, sizeof dir);
    struct store_opts o = { .dir = dir, .sync_interval_ms = 50 };
    cr_assert_eq(store_open(&o, &st), 0);
    memset(model, 0, sizeof model);
}

static void teardown(void)
{
    segbits_stop();
    store_close(st);
    tfx_rmrf(dir);
}

TestSuite(segbits, .init = setup, .fini = teardown, .timeout = 300);

/* the record of a customer whose model bits are m */
static size_t row_of(unsigned m, unsigned char *row)
{
    memset(row, 0, 128);
    size_t n = 0;
    for (int k = 0; k < NS; k++)
        if (m >> k & 1) {
            row[slots[k] / 8] |= (unsigned char)(1u << (slots[k] % 8));
            if ((size_t)slots[k] / 8 + 1 > n)
                n = (size_t)slots[k] / 8 + 1;
        }
    return n;
}

static void id_of(int c, char *id) { snprintf(id, 16, "u%06d", c); }

static void build(int n)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(segbits_build_begin(st, t), 0);
    for (int c = 0; c < n; c++) {
        model[c] = (unsigned char)(c % 32);
        unsigned char row[128];
        char id[16];
        id_of(c, id);
        cr_assert_eq(segbits_build_row(id, strlen(id), row, row_of(model[c], row)), 0);
    }
    segbits_build_done(0);
    store_txn_end(t);
    cr_assert(segbits_usable());
}

/* One txn writing `k` random customers' rows (from `seed`), committed
 * unless `abort`; the model follows commits only. */
static void txn(unsigned *seed, int k, int abort, pthread_mutex_t *mu)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    int cs[64];
    unsigned ms[64];
    for (int i = 0; i < k; i++) {
        cs[i] = (int)(rand_r(seed) % NC);
        ms[i] = rand_r(seed) % 4 == 0 ? 0 : rand_r(seed) % 32; /* a quarter leave everything */
        unsigned char row[128];
        char id[16];
        id_of(cs[i], id);
        cr_assert_eq(segbits_note(t, id, strlen(id), row, row_of(ms[i], row)), 0);
    }
    /* something real to commit, so the txn id moves */
    cr_assert_eq(store_put(t, STORE_SEGMENTS, "zz", 2, "1", 1), 0);
    if (abort) {
        store_txn_end(t);
        return;
    }
    if (mu)
        pthread_mutex_lock(mu);
    /* the writer lock orders commits; the model takes them in that order
     * because this thread still holds the lock inside the commit */
    for (int i = 0; i < k; i++)
        model[cs[i]] = (unsigned char)ms[i];
    cr_assert_eq(store_txn_commit(t, STORE_ASYNC), 0);
    if (mu)
        pthread_mutex_unlock(mu);
}

struct expr_t {
    int any[NS], all[NS], excl[NS], na, nl, nx;
};

static int holds(const struct expr_t *e, unsigned m)
{
    int a = !e->na;
    for (int i = 0; i < e->na; i++)
        a |= (int)(m >> e->any[i]) & 1;
    for (int i = 0; i < e->nl; i++)
        a &= (int)(m >> e->all[i]) & 1;
    for (int i = 0; i < e->nx; i++)
        a &= !((m >> e->excl[i]) & 1);
    return a;
}

struct visit {
    const struct expr_t *e;
    unsigned char *seen;
    long n, bad;
};

static int visit_cb(void *ud, const char *id, size_t il)
{
    struct visit *v = ud;
    int c;
    if (il != 7 || sscanf(id, "u%d", &c) != 1 || c < 0 || c >= NC || v->seen[c] ||
        !holds(v->e, model[c])) {
        v->bad++;
        return 0;
    }
    v->seen[c] = 1;
    v->n++;
    return 0;
}

static void check(unsigned *seed)
{
    for (int round = 0; round < 20; round++) {
        struct expr_t e = { 0 };
        e.na = (int)(rand_r(seed) % 3);
        e.nl = (int)(rand_r(seed) % 3);
        if (!e.na && !e.nl)
            e.nl = 1;
        e.nx = (int)(rand_r(seed) % 3);
        for (int i = 0; i < e.na; i++)
            e.any[i] = (int)(rand_r(seed) % NS);
        for (int i = 0; i < e.nl; i++)
            e.all[i] = (int)(rand_r(seed) % NS);
        for (int i = 0; i < e.nx; i++)
            e.excl[i] = (int)(rand_r(seed) % NS);
        int sa[NS], sl[NS], sx[NS];
        for (int i = 0; i < NS; i++) {
            sa[i] = slots[e.any[i]];
            sl[i] = slots[e.all[i]];
            sx[i] = slots[e.excl[i]];
        }
        struct segbits_expr x = { sa, sl, sx, e.na, e.nl, e.nx };
        long want = 0;
        for (int c = 0; c < NC; c++)
            want += holds(&e, model[c]);
        uint64_t got;
        cr_assert_eq(segbits_count(&x, &got), 0);
        cr_assert_eq((long)got, want, "round %d: count %llu, model %ld", round,
                     (unsigned long long)got, want);
        unsigned char *seen = calloc(NC, 1);
        struct visit v = { &e, seen, 0, 0 };
        cr_assert_eq(segbits_members(&x, visit_cb, &v), 0);
        cr_assert_eq(v.bad, 0);
        cr_assert_eq(v.n, want);
        /* ranked sample: the first, the last and some between */
        uint64_t ranks[4];
        int k = 0;
        if (want > 0) {
            ranks[k++] = 0;
            if (want > 2)
                ranks[k++] = (uint64_t)want / 2;
            if (want > 1)
                ranks[k++] = (uint64_t)want - 1;
        }
        memset(seen, 0, NC);
        struct visit r = { &e, seen, 0, 0 };
        cr_assert_eq(segbits_at_ranks(&x, ranks, k, visit_cb, &r), 0);
        cr_assert_eq(r.bad, 0);
        cr_assert_eq(r.n, k);
        free(seen);
    }
    /* ids held: the customers in some slot */
    long in = 0;
    for (int c = 0; c < NC; c++)
        in += model[c] != 0;
    struct segbits_stats s;
    segbits_stats(&s);
    cr_assert_eq((long)s.customers, in);
    cr_assert(s.ordinals <= (uint64_t)NC);
}

Test(segbits, rows_land_after_commit_only)
{
    build(1000);
    unsigned seed = 7;
    check(&seed);
    for (int i = 0; i < 3000; i++)
        txn(&seed, 1 + (int)(rand_r(&seed) % 64), rand_r(&seed) % 10 == 0, NULL);
    check(&seed);
    /* an unused slot and a slot past every bitmap count nobody */
    int none[1] = { 1000 }, gone[1] = { -1 }, one[1] = { 0 };
    uint64_t n = 1;
    struct segbits_expr e1 = { .all = none, .nall = 1 };
    cr_assert_eq(segbits_count(&e1, &n), 0);
    cr_assert_eq(n, 0);
    struct segbits_expr e2 = { .any = gone, .nany = 1 };
    cr_assert_eq(segbits_count(&e2, &n), 0);
    cr_assert_eq(n, 0);
    struct segbits_expr e3 = { .any = one, .nany = 1, .excl = gone, .nexcl = 1 };
    cr_assert_eq(segbits_count(&e3, &n), 0);
    long want = 0;
    for (int c = 0; c < NC; c++)
        want += model[c] & 1;
    cr_assert_eq((long)n, want);
    struct segbits_expr e4 = { .excl = one, .nexcl = 1 };
    cr_assert_eq(segbits_count(&e4, &n), ERR_INVAL);
}

struct wctx {
    unsigned seed;
    pthread_mutex_t *mu;
    int n;
};

static void *writer(void *p)
{
    struct wctx *w = p;
    for (int i = 0; i < w->n; i++)
        txn(&w->seed, 1 + (int)(rand_r(&w->seed) % 32), rand_r(&w->seed) % 8 == 0, w->mu);
    return NULL;
}

static int stop_reader;

static void *reader(void *p)
{
    (void)p;
    int all[2] = { 0, 1 };
    struct segbits_expr e = { .all = all, .nall = 2 };
    long counts = 0;
    while (!__atomic_load_n(&stop_reader, __ATOMIC_ACQUIRE)) {
        uint64_t n;
        if (segbits_count(&e, &n) == 0 && n <= (uint64_t)NC)
            counts++;
    }
    return (void *)counts;
}

Test(segbits, concurrent_writers_and_a_reader)
{
    build(0);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    struct wctx w[2] = { { 11, &mu, 1500 }, { 12, &mu, 1500 } };
    pthread_t th[3];
    cr_assert_eq(pthread_create(&th[2], NULL, reader, NULL), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, writer, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    __atomic_store_n(&stop_reader, 1, __ATOMIC_RELEASE);
    void *counts;
    pthread_join(th[2], &counts);
    cr_assert((long)counts > 0);
    unsigned seed = 3;
    check(&seed);
}

Test(segbits, another_process_writing_turns_it_off)
{
    build(100);
    int one[1] = { 0 };
    struct segbits_expr e = { .any = one, .nany = 1 };
    uint64_t n;
    cr_assert_eq(segbits_count(&e, &n), 0);
    /* `promod import` writes the same store from another process */
    char path[300];
    snprintf(path, sizeof path, "%s/p.ndjson", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"id\":\"x1\",\"tier\":\"gold\"}\n", f);
    fclose(f);
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", path, "--data", dir, (char *)NULL);
    cr_assert_eq(st, 0, "%s", out);
    free(out);
    /* the view cannot vouch for that write: callers scan */
    cr_assert_eq(segbits_usable(), 0);
    cr_assert_eq(segbits_count(&e, &n), ERR_BUSY);
    struct segbits_stats s;
    segbits_stats(&s);
    cr_assert(s.live && s.broken);
}
