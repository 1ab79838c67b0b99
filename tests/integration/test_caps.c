/*
 * test_caps.c — caps, budgets, channel contact policy and the global cap,
 * proved on the real server: exact under many concurrent connections,
 * rolling windows against the test clock, dry runs, the throttle hook's
 * counts, and counters that survive a restart and a SIGKILL.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server srv;

static void teardown(void) { tfx_server_cleanup(&srv); }

/* Start a server with `cfg` config fields and the given campaign files
 * (pairs of relative path, source; NULL-terminated). */
static void start_with(const char *cfg, const char *const *files)
{
    tfx_server_init(&srv, cfg);
    for (int i = 0; files && files[i]; i += 2)
        tfx_write(&srv, files[i], files[i + 1]);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

/* POST /api/v1/decide; returns how many offers of `camp` were served
 * (all offers when camp is NULL), or -1 when the status was not 200. */
static int decide_n(const char *cust, const char *channel, const char *camp, const char *extra,
                    json_t **explain_out)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"customer_id\":\"%s\",\"channel\":\"%s\"%s%s}", cust, channel,
             extra ? "," : "", extra ? extra : "");
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/decide", body, &r);
    if (r.status != 200) {
        tfx_resp_free(&r);
        return -1;
    }
    int n = 0;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(r.json, "offers"), i, o) {
        const char *c = json_string_value(json_object_get(o, "campaign_id"));
        if (!camp || (c && !strcmp(c, camp)))
            n++;
    }
    if (explain_out)
        *explain_out = json_incref(json_object_get(r.json, "explain"));
    tfx_resp_free(&r);
    return n;
}

/* The explain entry of a campaign: its "capped" reason, or "" (copied). */
static void capped_reason(json_t *explain, const char *camp, char *out, size_t len)
{
    out[0] = 0;
    size_t i;
    json_t *x;
    json_array_foreach(explain, i, x) {
        const char *c = json_string_value(json_object_get(x, "campaign_id"));
        if (c && !strcmp(c, camp)) {
            const char *why = json_string_value(json_object_get(x, "capped"));
            snprintf(out, len, "%s", why ? why : "");
        }
    }
}

static void set_clock(long offset)
{
    char b[64];
    snprintf(b, sizeof b, "{\"offset\":%ld}", offset);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
}

/* --- many connections at once ---------------------------------------- */

struct par {
    int from, to;             /* request numbers [from, to) */
    const char *cust_fmt;     /* "%d" gets the request number */
    const char *channel, *camp;
    int served, failed;
};

static void *par_main(void *arg)
{
    struct par *p = arg;
    for (int i = p->from; i < p->to; i++) {
        char cust[64];
        snprintf(cust, sizeof cust, p->cust_fmt, i);
        int n = decide_n(cust, p->channel, p->camp, NULL, NULL);
        if (n < 0)
            p->failed++;
        else
            p->served += n;
    }
    return NULL;
}

/* Run `total` decides over `nthreads` connections at once; returns offers
 * of `camp` served; *failed gets the non-200 answers. */
static int decide_parallel(int nthreads, int total, const char *cust_fmt, const char *channel,
                           const char *camp, int *failed)
{
    pthread_t th[64];
    struct par ps[64];
    cr_assert(nthreads <= 64);
    for (int t = 0; t < nthreads; t++) {
        ps[t] = (struct par){ total * t / nthreads, total * (t + 1) / nthreads, cust_fmt, channel,
                              camp, 0, 0 };
        pthread_create(&th[t], NULL, par_main, &ps[t]);
    }
    int served = 0;
    *failed = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        served += ps[t].served;
        *failed += ps[t].failed;
    }
    return served;
}

/* --- campaigns used below -------------------------------------------- */

#define CAMP(id, extra)                                                                       \
    "return { id = '" id "', channels = { 'web' }, priority = 50,\n"                          \
    "  variants = { { id = 'A', content = { t = 'x' } } },\n"                                \
    "  eligible = function(p, ctx) return true end,\n" extra "}\n"

TestSuite(caps, .fini = teardown, .timeout = 120);

Test(caps, thousand_concurrent_decides_cap_three_serve_exactly_three)
{
    static const char *const files[] = {
        "rules/c3.lua", CAMP("c3", "caps = { customer = { { 3, '7d' } } },"), NULL };
    start_with("threads = 2,", files);
    int failed;
    int served = decide_parallel(16, 1000, "one-customer", "web", "c3", &failed);
    cr_assert_eq(failed, 0, "%d decides failed", failed);
    cr_assert_eq(served, 3, "a cap of 3 served %d offers under 1000 concurrent decides", served);
    json_t *xp = NULL;
    cr_assert_eq(decide_n("one-customer", "web", "c3", "\"explain\":true", &xp), 0);
    char why[64];
    capped_reason(xp, "c3", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "customer 7d");
    /* another customer is untouched */
    cr_assert_eq(decide_n("other-customer", "web", "c3", NULL, NULL), 1);
}

Test(caps, lifetime_budget_never_exceeded_under_concurrency)
{
    static const char *const files[] = {
        "rules/b.lua", CAMP("budget", "caps = { total = { { 1000, 'life' } } },"), NULL };
    start_with("threads = 2,", files);
    int failed;
    int served = decide_parallel(16, 1300, "cust-%d", "web", "budget", &failed);
    cr_assert_eq(failed, 0, "%d decides failed", failed);
    cr_assert_eq(served, 1000, "a budget of 1000 served %d", served);
    json_t *xp = NULL;
    cr_assert_eq(decide_n("late-comer", "web", "budget", "\"explain\":true", &xp), 0);
    char why[64];
    capped_reason(xp, "budget", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "total life");
}

Test(caps, daily_budget_resets_on_the_next_utc_day)
{
    static const char *const files[] = {
        "rules/d.lua", CAMP("daily", "caps = { total = { { 5, '1d' } } },"), NULL };
    start_with("test_clock = true,", files);
    /* start at 00:00:10 UTC of some day so "the day" is unambiguous */
    struct tfx_resp r;
    tfx_req(&srv, "GET", "/api/v1/admin/clock", NULL, &r);
    long now = (long)json_integer_value(json_object_get(r.json, "now"));
    long off = (long)json_integer_value(json_object_get(r.json, "offset"));
    tfx_resp_free(&r);
    long base = (now - off) - (now - off) % 86400 + 86400 * 10 + 10; /* 10 days ahead, 00:00:10 */
    set_clock(base - (now - off));
    int served = 0;
    for (int i = 0; i < 8; i++)
        served += decide_n(i % 2 ? "x1" : "x2", "web", "daily", NULL, NULL) == 1;
    cr_assert_eq(served, 5);
    set_clock(base - (now - off) + 86340); /* 23:59:10 the same day: still spent */
    cr_assert_eq(decide_n("x3", "web", "daily", NULL, NULL), 0);
    set_clock(base - (now - off) + 86400 - 10); /* next day 00:00:00 */
    served = 0;
    for (int i = 0; i < 8; i++)
        served += decide_n("x4", "web", "daily", NULL, NULL) == 1;
    cr_assert_eq(served, 5);
}

Test(caps, long_hour_windows_count_every_hour)
{
    /* a budget over 500 hours counts all 500 of them, not a recent part */
    static const char *const files[] = {
        "rules/h.lua", CAMP("hours", "caps = { total = { { 2, '500h' } }, customer = { { 5, '30d' } } },"),
        NULL };
    start_with("test_clock = true,", files);
    set_clock(0);
    cr_assert_eq(decide_n("h1", "web", "hours", NULL, NULL), 1);
    cr_assert_eq(decide_n("h2", "web", "hours", NULL, NULL), 1);
    cr_assert_eq(decide_n("h3", "web", "hours", NULL, NULL), 0);
    set_clock(450 * 3600);
    json_t *xp = NULL;
    cr_assert_eq(decide_n("h4", "web", "hours", "\"explain\":true", &xp), 0, "450 h later the budget is still spent");
    char why[64];
    capped_reason(xp, "hours", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "total 500h");
    set_clock(501 * 3600);
    cr_assert_eq(decide_n("h5", "web", "hours", NULL, NULL), 1);
}

Test(caps, rolling_windows_follow_the_test_clock)
{
    static const char *const files[] = {
        "rules/r.lua",
        CAMP("roll", "caps = { customer = { { 2, '1h' }, { 3, '1d' }, { 4, '36h' } } },"), NULL };
    start_with("test_clock = true,", files);
    char why[64];
    json_t *xp;
    set_clock(0);
    cr_assert_eq(decide_n("u", "web", "roll", NULL, NULL), 1);
    cr_assert_eq(decide_n("u", "web", "roll", NULL, NULL), 1);
    xp = NULL;
    cr_assert_eq(decide_n("u", "web", "roll", "\"explain\":true", &xp), 0);
    capped_reason(xp, "roll", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "customer 1h");
    set_clock(3000); /* the first two are still inside the hour */
    cr_assert_eq(decide_n("u", "web", "roll", NULL, NULL), 0);
    set_clock(3601);
    cr_assert_eq(decide_n("u", "web", "roll", NULL, NULL), 1); /* 3 in the day now */
    set_clock(7300);
    xp = NULL;
    cr_assert_eq(decide_n("u", "web", "roll", "\"explain\":true", &xp), 0);
    capped_reason(xp, "roll", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "customer 1d");
    set_clock(86401); /* the first two fell out of the day; 36h still sees 3 */
    cr_assert_eq(decide_n("u", "web", "roll", NULL, NULL), 1);
    xp = NULL;
    cr_assert_eq(decide_n("u", "web", "roll", "\"explain\":true", &xp), 0);
    capped_reason(xp, "roll", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "customer 36h");
    set_clock(36 * 3600 + 2); /* the first two left the 36 h window too */
    cr_assert_eq(decide_n("u", "web", "roll", NULL, NULL), 1);
}

Test(caps, channel_policy_counts_across_campaigns)
{
    static const char *const files[] = {
        "plugins/lim.lua",
        "return { channel = 'lim', policy = { customer = { { 2, '1d' } } } }\n",
        "rules/a.lua",
        "return { id = 'pa', channels = { 'lim' }, priority = 60,\n"
        "  variants = { { id = 'A', content = { t = 'a' } } },\n"
        "  eligible = function() return true end }\n",
        "rules/b.lua",
        "return { id = 'pb', channels = { 'lim' }, priority = 40,\n"
        "  variants = { { id = 'A', content = { t = 'b' } } },\n"
        "  eligible = function() return true end }\n",
        NULL };
    start_with("test_clock = true,", files);
    /* one call with limit 3: the policy lets two through, across both campaigns */
    cr_assert_eq(decide_n("k", "lim", NULL, "\"limit\":3", NULL), 2);
    json_t *xp = NULL;
    cr_assert_eq(decide_n("k", "lim", NULL, "\"explain\":true", &xp), 0);
    char why[64];
    capped_reason(xp, "pa", why, sizeof why);
    cr_assert_str_eq(why, "channel lim 1d");
    capped_reason(xp, "pb", why, sizeof why);
    cr_assert_str_eq(why, "channel lim 1d");
    json_decref(xp);
    /* concurrently, many customers, each asking for 3 offers twice: two
     * in all per customer, whichever campaigns they come from */
    int failed;
    int served = decide_parallel(8, 240, "m%d", "lim", NULL, &failed);
    cr_assert_eq(failed, 0);
    cr_assert_eq(served, 480, "policy 2/1d: %d offers to 240 customers", served);
    served = decide_parallel(8, 240, "m%d", "lim", NULL, &failed);
    cr_assert_eq(failed, 0);
    cr_assert_eq(served, 0, "policy 2/1d exceeded: %d more", served);
    /* and one customer hammered from 16 connections gets two */
    served = decide_parallel(16, 200, "hammer", "lim", NULL, &failed);
    cr_assert_eq(served, 2, "one customer got %d under concurrency", served);
    set_clock(86401);
    cr_assert_eq(decide_n("k", "lim", NULL, "\"limit\":3", NULL), 2);
}

Test(caps, global_daily_cap_spans_channels_and_campaigns)
{
    static const char *const files[] = {
        "rules/g1.lua",
        "return { id = 'g1', channels = { 'web', 'app' }, priority = 60,\n"
        "  variants = { { id = 'A', content = { t = 'a' } } },\n"
        "  eligible = function() return true end }\n",
        "rules/g2.lua",
        "return { id = 'g2', channels = { 'web', 'app' }, priority = 40,\n"
        "  variants = { { id = 'A', content = { t = 'b' } } },\n"
        "  eligible = function() return true end }\n",
        NULL };
    start_with("test_clock = true, global_daily_cap = 3,", files);
    cr_assert_eq(decide_n("gc", "web", NULL, "\"limit\":2", NULL), 2);
    cr_assert_eq(decide_n("gc", "app", NULL, "\"limit\":2", NULL), 1);
    json_t *xp = NULL;
    cr_assert_eq(decide_n("gc", "app", NULL, "\"explain\":true", &xp), 0);
    char why[64];
    capped_reason(xp, "g1", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "global 1d");
    /* rolling 24 h */
    set_clock(86399);
    cr_assert_eq(decide_n("gc", "web", NULL, NULL, NULL), 0);
    set_clock(86401);
    cr_assert_eq(decide_n("gc", "web", NULL, "\"limit\":5", NULL), 2);
    /* concurrency: 200 decides for one customer, at most 3 */
    int failed;
    int served = decide_parallel(16, 200, "gcc", "web", NULL, &failed);
    cr_assert_eq(failed, 0);
    cr_assert_eq(served, 3, "global cap 3 served %d", served);
}

Test(caps, throttle_hook_sees_counts_and_can_refuse)
{
    static const char *const files[] = {
        "plugins/hk.lua", "return { channel = 'hk', policy = { customer = { { 50, '1d' } } } }\n",
        "rules/h.lua",
        "return { id = 'hooked', channels = { 'hk' },\n"
        "  caps = { customer = { { 10, '7d' } }, total = { { 100, '1d' } } },\n"
        "  variants = { { id = 'A', content = { t = 'x' } } },\n"
        "  eligible = function() return true end,\n"
        "  throttle = function(p, ctx, counts)\n"
        "    if ctx.expect then\n"
        "      return counts.customer['7d'] == ctx.expect.c7 and counts.customer['1h'] == ctx.expect.c1h\n"
        "         and counts.total['1d'] == ctx.expect.t1 and counts.channel['1d'] == ctx.expect.ch1\n"
        "    end\n"
        "    return counts.customer['7d'] < 2\n"
        "  end }\n",
        NULL };
    start_with("", files);
    cr_assert_eq(decide_n("h1", "hk", "hooked", NULL, NULL), 1);
    cr_assert_eq(decide_n("h1", "hk", "hooked", NULL, NULL), 1);
    json_t *xp = NULL;
    cr_assert_eq(decide_n("h1", "hk", "hooked", "\"explain\":true", &xp), 0);
    char why[64];
    capped_reason(xp, "hooked", why, sizeof why);
    json_decref(xp);
    cr_assert_str_eq(why, "throttle hook");
    /* the counts are exact: h1 has 2 (customer, channel), the campaign 2 today */
    cr_assert_eq(decide_n("h1", "hk", "hooked",
                          "\"context\":{\"expect\":{\"c7\":2,\"c1h\":2,\"t1\":2,\"ch1\":2}}", NULL), 1);
    cr_assert_eq(decide_n("h2", "hk", "hooked",
                          "\"context\":{\"expect\":{\"c7\":0,\"c1h\":0,\"t1\":3,\"ch1\":0}}", NULL), 1);
    /* a wrong expectation is refused (the hook really compares) */
    cr_assert_eq(decide_n("h2", "hk", "hooked",
                          "\"context\":{\"expect\":{\"c7\":1,\"c1h\":1,\"t1\":99,\"ch1\":1}}", NULL), 0);
}

Test(caps, throttle_hook_logic_is_exact_under_concurrency)
{
    static const char *const files[] = {
        "rules/hc.lua",
        CAMP("hookcap", "throttle = function(p, ctx, counts)\n"
                        "  local x = 0\n"
                        "  for i = 1, 50000 do x = x + i end -- slow: widen the race\n"
                        "  return counts.customer['7d'] < 3\n"
                        "end,"),
        NULL };
    start_with("threads = 2,", files);
    int failed;
    int served = decide_parallel(16, 400, "hook-one", "web", "hookcap", &failed);
    cr_assert_eq(failed, 0);
    cr_assert_eq(served, 3, "a hook allowing 3 per 7d served %d under concurrency", served);
}

Test(caps, dry_run_counts_nothing)
{
    static const char *const files[] = {
        "rules/dr.lua", CAMP("dry", "caps = { customer = { { 1, '1d' } }, total = { { 2, 'life' } } },"),
        NULL };
    start_with("", files);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(decide_n("d1", "web", "dry", "\"dry_run\":true", NULL), 1);
    cr_assert_eq(decide_n("d1", "web", "dry", NULL, NULL), 1);
    cr_assert_eq(decide_n("d1", "web", "dry", NULL, NULL), 0);
    /* a dry run shows the cap without spending the budget */
    cr_assert_eq(decide_n("d1", "web", "dry", "\"dry_run\":true", NULL), 0);
    cr_assert_eq(decide_n("d2", "web", "dry", "\"dry_run\":true", NULL), 1);
    cr_assert_eq(decide_n("d2", "web", "dry", NULL, NULL), 1);
    cr_assert_eq(decide_n("d3", "web", "dry", NULL, NULL), 0); /* budget of 2 spent */
}

Test(caps, counters_survive_restart_and_sigkill)
{
    static const char *const files[] = {
        "rules/k.lua",
        CAMP("keep", "caps = { customer = { { 3, '30d' } }, total = { { 5, 'life' } } },"), NULL };
    start_with("", files);
    cr_assert_eq(decide_n("s1", "web", "keep", NULL, NULL), 1);
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(decide_n("s1", "web", "keep", NULL, NULL), 1);
    tfx_server_kill(&srv); /* SIGKILL right after the answer */
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(decide_n("s1", "web", "keep", NULL, NULL), 1);
    cr_assert_eq(decide_n("s1", "web", "keep", NULL, NULL), 0, "customer cap forgot a serve");
    cr_assert_eq(decide_n("s2", "web", "keep", NULL, NULL), 1);
    tfx_server_kill(&srv);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(decide_n("s3", "web", "keep", NULL, NULL), 1); /* 5th of the budget */
    cr_assert_eq(decide_n("s4", "web", "keep", NULL, NULL), 0, "budget forgot a serve");
}
