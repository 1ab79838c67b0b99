/* test_coupons.c — the coupons module on a real LMDB store and the
 * limiter: code normalisation, generation patterns (alphabet, entropy
 * refusals), money parsing, assignment, redemption and rollback
 * arithmetic, many threads redeeming one code, erasure; token buckets. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/limiter.h"
#include "base/log.h"
#include "engine/coupons.h"
#include "fixture.h"
#include "store/store.h"

static char dir[256];
static struct store *st;

static void setup(void)
{
    log_set_level(LOG_ERROR);
    tfx_tmpdir(dir, sizeof dir);
    struct store_opts o = { .dir = dir, .sync_interval_ms = 50 };
    cr_assert_eq(store_open(&o, &st), 0);
}

static void teardown(void)
{
    store_close(st);
    st = NULL;
    tfx_rmrf(dir);
}

TestSuite(coupons, .init = setup, .fini = teardown, .timeout = 60);

Test(coupons, codes_are_normalised)
{
    char out[COUPONS_CODE_MAX + 1];
    cr_assert_eq(coupons_code_normalize("  spring-7k3q \r\n", out), 0);
    cr_assert_str_eq(out, "SPRING-7K3Q");
    static const char *bad[] = { "", "ab", "a b c", "é-code", "x\"y\"z", NULL };
    for (int i = 0; bad[i]; i++)
        cr_assert_eq(coupons_code_normalize(bad[i], out), ERR_INVAL, "%s", bad[i]);
    char longc[80];
    memset(longc, 'A', 65);
    longc[65] = 0;
    cr_assert_eq(coupons_code_normalize(longc, out), ERR_INVAL);
}

Test(coupons, patterns_use_the_alphabet_and_refuse_guessable_codes)
{
    struct coupons_pattern p;
    struct reqerr e = { 0 };
    cr_assert_eq(coupons_pattern_parse("sale-####-####", NULL, 0, 1000, &p, &e), 0, "%s", e.message);
    cr_assert_eq(p.nrandom, 8);
    for (int i = 0; i < 200; i++) {
        char c[COUPONS_CODE_MAX + 1];
        cr_assert_eq(coupons_pattern_make(&p, c), 0);
        cr_assert_eq(strncmp(c, "SALE-", 5), 0, "%s", c);
        cr_assert_eq(c[9], '-');
        for (int k = 5; k < 14; k++)
            if (k != 9)
                cr_assert(strchr(COUPONS_ALPHABET, c[k]), "%c is not in the alphabet (%s)", c[k], c);
        cr_assert_null(strpbrk(c + 5, "01OIL"), "a look-alike character in %s", c);
    }
    /* 6 random characters of 31 are 887 million codes: too few for 10,000 */
    cr_assert_eq(coupons_pattern_parse(NULL, "X-", 6, 10000, &p, &e), ERR_INVAL);
    cr_assert_str_eq(e.code, "too_guessable");
    cr_assert_str_eq(e.field, "length");
    cr_assert_eq(coupons_pattern_parse(NULL, "X-", 7, 10000, &p, &e), 0);
    cr_assert_eq(coupons_pattern_parse("AB#", "P", 0, 1, &p, &e), ERR_INVAL);
    cr_assert_str_eq(e.field, "pattern");
    cr_assert_eq(coupons_pattern_parse("A B#####", NULL, 0, 1, &p, &e), ERR_INVAL);
    reqerr_clear(&e);
}

Test(coupons, money_is_exact_thousandths)
{
    int64_t m;
    cr_assert_eq(coupons_money_parse(12.345, &m), 0);
    cr_assert_eq(m, 12345);
    cr_assert_eq(coupons_money_parse(0.1 + 0.2, &m), 0);
    cr_assert_eq(m, 300);
    cr_assert_eq(coupons_money_parse(0.001, &m), 0);
    cr_assert_eq(m, 1);
    double bad[] = { 0, -1, 1.2345, 0.0004, 1e12, 1.0 / 0.0, 0.0 / 0.0 };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(coupons_money_parse(bad[i], &m), ERR_INVAL, "%g accepted", bad[i]);
    cr_assert(coupons_currency_valid("EUR"));
    cr_assert(!coupons_currency_valid("eur"));
    cr_assert(!coupons_currency_valid("EURO"));
}

static void camp_active(void *ud, const char *id, struct coupons_campaign *out)
{
    (void)id;
    out->found = out->active = 1;
    if (ud)
        out->budget = *(const struct coupons_budget *)ud;
}

struct race {
    const char *code;
    int ok, refused;
    struct coupons_budget *b;
};

static void *racer(void *arg)
{
    struct race *x = arg;
    for (int i = 0; i < 50; i++) {
        char cust[32], order[32];
        snprintf(cust, sizeof cust, "c%lx-%d", (unsigned long)pthread_self() % 9973, i);
        snprintf(order, sizeof order, "o%lx-%d", (unsigned long)pthread_self() % 9973, i);
        struct store_txn *wt;
        cr_assert_eq(store_wtxn_begin(st, &wt), 0);
        struct coupons_req q = { x->code, cust, order, 7000, "EUR", 1800000000 };
        struct coupons_outcome out;
        struct reqerr e = { 0 };
        int rc = coupons_redeem(wt, &q, camp_active, x->b, &out, &e);
        if (rc) {
            store_txn_end(wt);
            __atomic_fetch_add(&x->refused, 1, __ATOMIC_RELAXED);
        } else {
            cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
            __atomic_fetch_add(&x->ok, 1, __ATOMIC_RELAXED);
        }
        reqerr_clear(&e);
    }
    return NULL;
}

Test(coupons, threads_redeeming_one_budget_stop_exactly_at_it)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct coupons_opts o = { .pool = "p", .shared = 1 };
    cr_assert_eq(coupons_code_add(wt, "camp", &o, "SHARED-1", NULL, 1), 0);
    cr_assert_eq(coupons_code_add(wt, "camp", &o, "SHARED-1", NULL, 1), ERR_EXISTS);
    cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
    struct coupons_budget b = { .amount_m = 700000, .currency = "EUR" }; /* 700 EUR: 100 x 7 EUR */
    struct race x = { "shared-1", 0, 0, &b };
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, racer, &x);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(x.ok, 100, "%d of 400 redeemed against room for 100", x.ok);
    cr_assert_eq(x.refused, 300);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    int64_t spent, allowed;
    cr_assert_eq(coupons_budget_read(t, "camp", &b, 1800000000, &spent, &allowed), 0);
    struct coupons_stats s;
    cr_assert_eq(coupons_stats_read(t, "camp", &s), 0);
    store_txn_end(t);
    cr_assert_eq(spent, 700000);
    cr_assert_eq(s.v[COUPONS_REDEEMED], 100);
    cr_assert_eq(s.v[COUPONS_SPENT_M], 700000);
}

Test(coupons, paced_daily_budget_releases_hour_by_hour)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct coupons_opts o = { .shared = 1 };
    cr_assert_eq(coupons_code_add(wt, "pace", &o, "PACE-1", NULL, 1), 0);
    struct coupons_budget b = { .amount_m = 24000, .currency = "EUR", .per_day = 1, .pacing = 1 };
    int64_t day = 1800000000 / 86400 * 86400;
    int64_t spent, allowed;
    cr_assert_eq(coupons_budget_read(wt, "pace", &b, day + 10, &spent, &allowed), 0);
    cr_assert_eq(allowed, 1000, "the first hour releases 1/24");
    cr_assert_eq(coupons_budget_read(wt, "pace", &b, day + 5 * 3600 + 1, &spent, &allowed), 0);
    cr_assert_eq(allowed, 6000);
    struct coupons_req q = { "PACE-1", "c", "o1", 1001, "EUR", day + 10 };
    struct coupons_outcome out;
    struct reqerr e = { 0 };
    cr_assert_eq(coupons_redeem(wt, &q, camp_active, &b, &out, &e), ERR_INVAL);
    cr_assert_str_eq(e.code, "budget_exhausted");
    q.amount_m = 1000;
    cr_assert_eq(coupons_redeem(wt, &q, camp_active, &b, &out, &e), 0, "%s", e.message);
    /* the next day starts again */
    q.order = "o2";
    q.now = day + 86400 + 5;
    cr_assert_eq(coupons_redeem(wt, &q, camp_active, &b, &out, &e), 0, "%s", e.message);
    cr_assert_eq(out.spent_m, 1000);
    store_txn_end(wt);
    reqerr_clear(&e);
}

Test(coupons, erasure_keeps_the_money_and_forgets_the_customer)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct coupons_opts o = { .max_uses = 1, .per_customer = 1 };
    cr_assert_eq(coupons_code_add(wt, "er", &o, "ER-1", NULL, 1), 0);
    char code[COUPONS_CODE_MAX + 1];
    int fresh;
    cr_assert_eq(coupons_assign(wt, "er", "ann", 5, code, &fresh), 0);
    cr_assert(fresh);
    cr_assert_eq(coupons_assign(wt, "er", "bob", 5, code, &fresh), ERR_CAPPED);
    struct coupons_req q = { "ER-1", "ann", "o1", 2500, "EUR", 6 };
    struct coupons_outcome out;
    struct reqerr e = { 0 };
    cr_assert_eq(coupons_redeem(wt, &q, camp_active, NULL, &out, &e), 0, "%s", e.message);
    int rc;
    json_t *x = coupons_export_customer(wt, "ann", &rc);
    cr_assert_eq(json_array_size(json_object_get(x, "assignments")), 1);
    cr_assert_eq(json_array_size(json_object_get(x, "redemptions")), 1);
    json_decref(x);
    cr_assert_gt(coupons_erase_customer(wt, "ann"), 0);
    x = coupons_export_customer(wt, "ann", &rc);
    cr_assert_eq(json_array_size(json_object_get(x, "assignments")), 0);
    cr_assert_eq(json_array_size(json_object_get(x, "redemptions")), 0);
    json_decref(x);
    struct coupons_code c;
    cr_assert_eq(coupons_code_get(wt, "ER-1", &c), 0);
    cr_assert_str_eq(c.customer, "");
    cr_assert(c.flags & COUPON_DISABLED);
    struct coupons_stats s;
    cr_assert_eq(coupons_stats_read(wt, "er", &s), 0);
    cr_assert_eq(s.v[COUPONS_SPENT_M], 2500);
    /* the rollback still finds the anonymous redemption */
    cr_assert_eq(coupons_rollback(wt, "ER-1", "o1", 7, &out, &e), 0, "%s", e.message);
    cr_assert_eq(coupons_stats_read(wt, "er", &s), 0);
    cr_assert_eq(s.v[COUPONS_SPENT_M], 0);
    store_txn_end(wt);
    reqerr_clear(&e);
}

static int64_t free_count(struct store_txn *t, const char *camp)
{
    struct coupons_stats s;
    cr_assert_eq(coupons_stats_read(t, camp, &s), 0);
    return s.v[COUPONS_FREE];
}

static void redeem_ok(struct store_txn *wt, const char *code, const char *cust, const char *order)
{
    struct coupons_req q = { code, cust, order, 1000, "EUR", 10 };
    struct coupons_outcome out;
    struct reqerr e = { 0 };
    cr_assert_eq(coupons_redeem(wt, &q, camp_active, NULL, &out, &e), 0, "%s", e.message);
    reqerr_clear(&e);
}

static void rollback_ok(struct store_txn *wt, const char *code, const char *order)
{
    struct coupons_outcome out;
    struct reqerr e = { 0 };
    cr_assert_eq(coupons_rollback(wt, code, order, 11, &out, &e), 0, "%s", e.message);
    reqerr_clear(&e);
}

/* A redemption that uses up an unassigned code counts it out of `free` but
 * leaves its free-list entry (one random leaf less per redemption);
 * assignment then skips and drops the entry without counting it out
 * twice, and a rollback counts it back in.  A store written before (the
 * entry deleted by the redemption) rolls back the same way. */
Test(coupons, a_used_up_free_code_is_never_assigned_and_free_stays_exact)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct coupons_opts o = { .max_uses = 1, .per_customer = 1 };
    const char *codes[] = { "LZ-A", "LZ-B", "LZ-C", "LZ-D" };
    for (int i = 0; i < 4; i++)
        cr_assert_eq(coupons_code_add(wt, "lz", &o, codes[i], NULL, 1), 0);
    cr_assert_eq(free_count(wt, "lz"), 4);
    redeem_ok(wt, "LZ-A", "walk-in", "o-a"); /* printed code, never assigned */
    cr_assert_eq(free_count(wt, "lz"), 3);
    /* the state a release before this one left: the entry deleted */
    redeem_ok(wt, "LZ-D", "walk-in-2", "o-d");
    cr_assert_eq(free_count(wt, "lz"), 2);
    cr_assert_eq(store_del(wt, STORE_COUPONS, "flz\0LZ-D", 8), 0);

    char code[COUPONS_CODE_MAX + 1], got[2][COUPONS_CODE_MAX + 1];
    int fresh;
    cr_assert_eq(coupons_assign(wt, "lz", "ann", 12, got[0], &fresh), 0);
    cr_assert_eq(coupons_assign(wt, "lz", "bob", 12, got[1], &fresh), 0);
    for (int i = 0; i < 2; i++)
        cr_assert(strcmp(got[i], "LZ-A") && strcmp(got[i], "LZ-D"), "assigned the used-up %s", got[i]);
    cr_assert_str_neq(got[0], got[1]);
    cr_assert_eq(coupons_assign(wt, "lz", "cid", 12, code, &fresh), ERR_CAPPED);
    cr_assert_eq(free_count(wt, "lz"), 0, "free %lld", (long long)free_count(wt, "lz"));

    /* rolled back: free again, both forms */
    rollback_ok(wt, "LZ-A", "o-a");
    rollback_ok(wt, "LZ-D", "o-d");
    cr_assert_eq(free_count(wt, "lz"), 2);
    rollback_ok(wt, "LZ-A", "o-a"); /* replayed: nothing changes */
    cr_assert_eq(free_count(wt, "lz"), 2);
    char c1[COUPONS_CODE_MAX + 1], c2[COUPONS_CODE_MAX + 1];
    cr_assert_eq(coupons_assign(wt, "lz", "cid", 13, c1, &fresh), 0);
    cr_assert_eq(coupons_assign(wt, "lz", "dan", 13, c2, &fresh), 0);
    cr_assert(!strcmp(c1, "LZ-A") || !strcmp(c1, "LZ-D"), "%s", c1);
    cr_assert(!strcmp(c2, "LZ-A") || !strcmp(c2, "LZ-D"), "%s", c2);
    cr_assert_eq(coupons_assign(wt, "lz", "eve", 13, code, &fresh), ERR_CAPPED);
    cr_assert_eq(free_count(wt, "lz"), 0);

    /* redeemed again while its entry stays, rolled back while it stays */
    cr_assert_eq(coupons_code_add(wt, "lz", &o, "LZ-E", NULL, 1), 0);
    redeem_ok(wt, "LZ-E", "walk-in-3", "o-e");
    cr_assert_eq(free_count(wt, "lz"), 0);
    rollback_ok(wt, "LZ-E", "o-e");
    cr_assert_eq(free_count(wt, "lz"), 1);
    redeem_ok(wt, "LZ-E", "walk-in-4", "o-e2");
    cr_assert_eq(free_count(wt, "lz"), 0);
    cr_assert_eq(coupons_assign(wt, "lz", "fay", 14, code, &fresh), ERR_CAPPED);
    cr_assert_eq(free_count(wt, "lz"), 0);
    store_txn_end(wt);
}

Test(coupons, limiter_buckets)
{
    cr_assert_null(limiter_new(0, 60, 0), "a limit of 0 is no limiter");
    cr_assert_eq(limiter_take(NULL, "k", 1, 0), 0);
    struct limiter *l = limiter_new(3, 60, 0); /* 3 at once, then one every 20 s */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(limiter_take(l, "a", 1, 1000), 0);
    long w = limiter_take(l, "a", 1, 1000);
    cr_assert_eq(w, 20, "retry after %ld s", w);
    cr_assert_eq(limiter_peek(l, "a", 1, 1000), 20);
    cr_assert_eq(limiter_take(l, "b", 1, 1000), 0, "keys have their own buckets");
    cr_assert_eq(limiter_take(l, "a", 1, 21000), 0, "one token back after 20 s");
    cr_assert_neq(limiter_take(l, "a", 1, 21000), 0);
    limiter_free(l);
    /* bounded: a flood of keys recycles buckets instead of growing */
    l = limiter_new(1, 3600, 128);
    for (int i = 0; i < 100000; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%d", i);
        cr_assert_eq(limiter_take(l, k, (size_t)n, 5), 0);
    }
    limiter_free(l);
}
