/* test_throttle.c — the customer's counter record and exact reservation, on
 * a real LMDB store: several offers in one reservation, stamps kept in order
 * when the clock steps back, trimming to what the caps need, the record as
 * written and read back. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "fixture.h"
#include "base/log.h"
#include "engine/rules.h"
#include "store/store.h"
#include "engine/throttle.h"

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
}

TestSuite(throttle, .init = setup, .fini = teardown, .timeout = 60);

static struct rules_cap window(long limit, int64_t secs)
{
    struct rules_cap c = { .limit = limit, .secs = secs, .unit = 'd', .n = (int)(secs / 86400) };
    snprintf(c.label, sizeof c.label, "%llds", (long long)secs);
    return c;
}

/* One reservation session: each offer of `camps` at `now`; returns how many
 * were counted (the rest refused by a cap). */
static int reserve(const char *cust, const struct rules_campaign *const *camps, int n,
                   const struct rules_channel *ch, int64_t now)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct throttle_resv r = { 0 };
    cr_assert_eq(throttle_resv_begin(&r, wt, cust), 0);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        const char *why = NULL;
        int rc = throttle_resv_add(&r, camps[i], ch, now, 0, &why);
        cr_assert(rc == 0 || rc == ERR_CAPPED, "%s", err_str(rc));
        ok += rc == 0;
    }
    cr_assert_eq(throttle_resv_end(&r), 0);
    cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
    throttle_resv_free(&r);
    return ok;
}

/* The counts a decide at `now` would see for campaign c. */
static struct throttle_counts counts(const char *cust, const struct rules_campaign *c,
                                     const struct rules_channel *ch, int64_t now)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    struct throttle_cust tc = { 0 };
    cr_assert_eq(throttle_cust_load(t, cust, &tc), 0);
    struct throttle_counts n;
    cr_assert_eq(throttle_read(t, &tc, c, ch, now, &n, NULL), 0);
    throttle_cust_free(&tc);
    store_txn_end(t);
    return n;
}

Test(throttle, offers_of_one_reservation_see_each_other)
{
    struct rules_campaign a = { .id = "a" }, b = { .id = "b" };
    a.cust_caps.w[a.cust_caps.n++] = window(2, 86400);
    b.cust_caps.w[b.cust_caps.n++] = window(5, 86400);
    struct rules_channel web = { .name = "web" };
    web.policy.w[web.policy.n++] = window(3, 86400);
    /* a, a, a, b, b in one request: a's cap lets two through, the channel
     * policy (3 a day across campaigns) stops the second b */
    const struct rules_campaign *req[] = { &a, &a, &a, &b, &b };
    cr_assert_eq(reserve("ann", req, 5, &web, 100000), 3);
    struct throttle_counts n = counts("ann", &a, &web, 100000);
    cr_expect_eq(n.cust[0], 2);
    cr_expect_eq(n.chan[0], 3);
    cr_expect_eq(counts("ann", &b, &web, 100000).cust[0], 1);
    /* a day later everything has fallen out of the windows */
    const struct rules_campaign *one[] = { &a };
    cr_assert_eq(reserve("ann", one, 1, &web, 100000 + 86400), 1);
    n = counts("ann", &a, &web, 100000 + 86400);
    cr_expect_eq(n.cust[0], 1);
    cr_expect_eq(n.chan[0], 1);
    cr_expect_eq(n.cust_std[3], 3, "30 days: both days' offers of a"); /* 1h 1d 7d 30d */
    /* another customer is untouched */
    cr_expect_eq(counts("bob", &a, &web, 100000).cust[0], 0);
}

Test(throttle, stamps_stay_in_order_when_the_clock_steps_back)
{
    struct rules_campaign a = { .id = "a" };
    a.cust_caps.w[a.cust_caps.n++] = window(100, 86400);
    struct rules_channel web = { .name = "web" };
    const struct rules_campaign *one[] = { &a };
    cr_assert_eq(reserve("cy", one, 1, &web, 10000), 1);
    cr_assert_eq(reserve("cy", one, 1, &web, 5000), 1); /* the clock stepped back */
    const struct rules_campaign *two[] = { &a, &a };
    cr_assert_eq(reserve("cy", two, 2, &web, 7000), 2); /* two in one request, in between */
    /* windows count from the newest stamp back: out of order, the 5000 and
     * 7000 stamps would end the walk early.  At 10000 the last hour
     * (after 6400) holds 7000, 7000 and 10000. */
    struct throttle_counts n = counts("cy", &a, &web, 10000);
    cr_expect_eq(n.cust_std[0], 3, "1h window: %ld", n.cust_std[0]);
    cr_expect_eq(n.cust[0], 4);
}

Test(throttle, records_keep_only_the_stamps_the_caps_need)
{
    /* a channel policy of 2 a day keeps its 2 newest stamps; a campaign
     * keeps at least 64 (the throttle hook's 1h/1d/7d/30d counts) */
    struct rules_campaign a = { .id = "a" };
    a.cust_caps.w[a.cust_caps.n++] = window(2, 86400);
    struct rules_channel web = { .name = "web" };
    web.policy.w[web.policy.n++] = window(2, 86400);
    const struct rules_campaign *one[] = { &a };
    int64_t t = 1000000, step = 12 * 3600 + 360; /* never more than 2 in a day */
    for (int i = 0; i < 100; i++)
        cr_assert_eq(reserve("dee", one, 1, &web, t + step * i), 1, "offer %d", i);
    int64_t end = t + step * 99;
    struct throttle_counts n = counts("dee", &a, &web, end);
    cr_expect_eq(n.chan[0], 2, "channel, last day: %ld", n.chan[0]);
    cr_expect_eq(n.cust[0], 2, "campaign, last day: %ld", n.cust[0]);
    cr_expect_eq(n.cust_std[3], 60, "campaign, last 30 days: %ld", n.cust_std[3]);
    /* the record stays small: 64 + 2 stamps, not 100 + 100 */
    struct store_txn *rt;
    cr_assert_eq(store_rtxn_begin(st, &rt), 0);
    const void *v;
    size_t vl;
    const char key[5] = { 'd', 'e', 'e', 0, 's' };
    cr_assert_eq(store_get(rt, STORE_COUNTERS, key, 5, &v, &vl), 0);
    cr_expect_lt(vl, 66 * 9 + 64, "record of %zu bytes", vl);
    cr_expect_gt(vl, 66 * 9, "record of %zu bytes", vl);
    store_txn_end(rt);
}

Test(throttle, records_forget_the_stalest_campaigns_and_year_old_ones)
{
    /* 1,100 campaigns served a minute apart: the record remembers 1,024
     * entries, so the 76 stalest are forgotten (and would serve again) */
    static struct rules_campaign camps[1100];
    static char ids[1100][16];
    struct rules_channel web = { .name = "web" };
    int64_t t = 50000000;
    for (int i = 0; i < 1100; i++) {
        snprintf(ids[i], sizeof ids[i], "k%d", i);
        camps[i] = (struct rules_campaign){ .id = ids[i] };
        camps[i].cust_caps.w[camps[i].cust_caps.n++] = window(1, 30 * 86400);
        const struct rules_campaign *one[] = { &camps[i] };
        cr_assert_eq(reserve("eve", one, 1, &web, t + 60 * i), 1);
    }
    int64_t now = t + 60 * 1100;
    cr_expect_eq(counts("eve", &camps[0], &web, now).cust[0], 0, "stalest forgotten");
    cr_expect_eq(counts("eve", &camps[75], &web, now).cust[0], 0, "76th stalest forgotten");
    cr_expect_eq(counts("eve", &camps[76], &web, now).cust[0], 1, "kept");
    cr_expect_eq(counts("eve", &camps[1099], &web, now).cust[0], 1, "newest kept");
    /* an entry whose newest stamp is over a year old is dropped at the next
     * write of the record */
    const struct rules_campaign *one[] = { &camps[1099] };
    int64_t later = now + 367 * 86400LL;
    cr_assert_eq(reserve("eve", one, 1, &web, later), 1);
    struct store_txn *rt;
    cr_assert_eq(store_rtxn_begin(st, &rt), 0);
    struct throttle_cust tc = { 0 };
    cr_assert_eq(throttle_cust_load(rt, "eve", &tc), 0);
    cr_expect_eq(tc.n, 1, "only the campaign served now is left: %d entries", tc.n);
    throttle_cust_free(&tc);
    store_txn_end(rt);
}
