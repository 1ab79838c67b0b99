/*
 * test_experiment_stats.c — 20,000 simulated customers through a real
 * server's decide and events, with known true rates, and what the results
 * say about four experiments running at once:
 *
 *   lift   A converts at the base rate, B at 1.2 x (a planted +20 % lift),
 *          a 10 % holdout gets no offer and converts at 0.8 x: the results
 *          must find B's lift (interval holding +20 %), the campaign's
 *          incrementality over the holdout, and recommend shipping B;
 *   aa     both arms identical: no significant difference may be flagged;
 *   srm    a third of the customers the hash puts in B never reach decide
 *          (a skewed exposure stream): sample-ratio mismatch must be raised;
 *   guard  conversion identical, but B's offer is clicked less (0.2 vs
 *          0.3): a guardrail regression on click_rate.
 *
 * The customers' conversions come from the shop's order system: no
 * campaign_id, an order_id each (posted twice: the second time all
 * duplicates), so the results credit them by exposure.  Half the
 * customers are "loyal": they bought in the week before (the CUPED
 * covariate) and convert more, so CUPED must find the correlation and
 * shrink the variance of revenue per customer.  What the server served is
 * what drives each customer's behaviour (the test reads the variant from
 * the decide reply), and for the lift experiment the served variant must
 * be GrowthBook's (engine/assign.h).  The random stream is fixed
 * (splitmix64, one seed), so the run is reproducible.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/buf.h"
#include "engine/assign.h"
#include "events_tfx.h"
#include "experiments_tfx.h"
#include "fixture.h"

#define N 20000

static struct tfx_server srv;

#define CAMP(id, prio)                                                                        \
    "return { id = '" id "', channels = { 'web' }, priority = " prio ",\n"                   \
    "  variants = { { id = 'A', content = { t = 'a' } }, { id = 'B', content = { t = 'b' } } },\n" \
    "  eligible = function() return true end }\n"

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "rules/lift.lua", CAMP("lift-camp", "90"));
    tfx_write(&srv, "rules/aa.lua", CAMP("aa-camp", "80"));
    tfx_write(&srv, "rules/srm.lua", CAMP("srm-camp", "70"));
    tfx_write(&srv, "rules/guard.lua", CAMP("guard-camp", "60"));
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(experiment_stats, .init = setup, .fini = teardown, .timeout = 600);

static uint64_t rng_state = 0x5eed2026u;

static double urand(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static void post_ndjson(struct buf *b, long want_accepted, long want_dups)
{
    struct tfx_resp r;
    int st = etfx_post(&srv, "application/x-ndjson", b->p, b->len, &r);
    cr_assert_eq(st, 200, "events: %d %.300s", st, r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 0, "%.500s", r.body);
    if (want_accepted >= 0)
        cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), want_accepted, "%.300s",
                     r.body);
    if (want_dups >= 0)
        cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), want_dups, "%.300s",
                     r.body);
    tfx_resp_free(&r);
}

static json_t *comparison(json_t *res, const char *metric)
{
    size_t i;
    json_t *m;
    json_array_foreach (json_object_get(res, "metrics"), i, m)
        if (!strcmp(json_string_value(json_object_get(m, "metric")), metric))
            return json_array_get(json_object_get(m, "comparisons"), 0);
    cr_assert_fail("no metric %s", metric);
    return NULL;
}

static int listed(json_t *arr, const char *id)
{
    size_t i;
    json_t *x;
    json_array_foreach (arr, i, x) {
        const char *s = json_is_string(x) ? json_string_value(x)
                                          : json_string_value(json_object_get(x, "experiment_id"));
        if (s && !strcmp(s, id))
            return 1;
    }
    return 0;
}

/* scipy's answer for the counts the server reported (Debian's
 * python3-scipy, /usr/bin/python3): the pooled z-test's p-value, the
 * relative lift's delta-method interval and the SRM chi-square p-value,
 * computed independently of promod's code. */
static const char SCIPY[] =
    "import math, sys\n"
    "from scipy import stats\n"
    "nA, xA, nB, xB, nH = map(float, sys.argv[1:6])\n"
    "pA, pB, p = xA / nA, xB / nB, (xA + xB) / (nA + nB)\n"
    "z = (pB - pA) / math.sqrt(p * (1 - p) * (1 / nA + 1 / nB))\n"
    "lift = (pB - pA) / pA\n"
    "se = math.sqrt(pB * (1 - pB) / (nB * pA ** 2) + pA * (1 - pA) * pB ** 2 / (nA * pA ** 4))\n"
    "q = stats.norm.ppf(0.975)\n"
    "n = nA + nB + nH\n"
    "srm = stats.chisquare([nA, nB, nH], [0.45 * n, 0.45 * n, 0.1 * n]).pvalue\n"
    "print('%.17g %.17g %.17g %.17g %.17g' % (2 * stats.norm.sf(abs(z)), lift, lift - q * se,"
    " lift + q * se, srm))\n";

static void scipy_check(json_t *res, json_t *cb)
{
    char script[400], cmd[1200];
    snprintf(script, sizeof script, "%s/scipy_check.py", srv.dir);
    FILE *f = fopen(script, "w");
    cr_assert(f);
    fputs(SCIPY, f);
    fclose(f);
    json_t *arms = json_object_get(res, "variants");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %lld %lld %lld %lld %lld", script,
             (long long)etfx_int(arms, "0.exposures"), (long long)etfx_int(arms, "0.conversions"),
             (long long)etfx_int(arms, "1.exposures"), (long long)etfx_int(arms, "1.conversions"),
             (long long)etfx_int(res, "holdout.exposures"));
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run %s", cmd);
    double ref[5];
    int got = fscanf(p, "%lf %lf %lf %lf %lf", &ref[0], &ref[1], &ref[2], &ref[3], &ref[4]);
    int st = pclose(p);
    cr_assert(got == 5 && st == 0, "%s: exit %d (python3-scipy missing? scripts/setup.sh)", cmd, st);
    double mine[5] = { etfx_num(cb, "ztest.p_value"), etfx_num(cb, "lift.estimate"),
                       etfx_num(cb, "lift.ci_low"), etfx_num(cb, "lift.ci_high"),
                       etfx_num(res, "srm.p_value") };
    static const char *what[5] = { "z-test p", "lift", "ci low", "ci high", "srm p" };
    for (int i = 0; i < 5; i++)
        cr_assert(fabs(mine[i] - ref[i]) <= 1e-9 * fabs(ref[i]) + 1e-15, "%s: promod %.12g, scipy %.12g",
                  what[i], mine[i], ref[i]);
}

Test(experiment_stats, planted_lift_found_aa_quiet_skew_flagged)
{
    static const char *defs[] = {
        "{\"id\":\"lift\",\"campaign_id\":\"lift-camp\",\"variants\":[\"A\",\"B\"],\"holdout\":0.1,"
        "\"metric\":\"conversion_rate\",\"min_sample\":1000,\"sequential_tuning\":20000}",
        "{\"id\":\"aa\",\"campaign_id\":\"aa-camp\",\"variants\":[\"A\",\"B\"],\"min_sample\":1000}",
        "{\"id\":\"srm\",\"campaign_id\":\"srm-camp\",\"variants\":[\"A\",\"B\"]}",
        "{\"id\":\"guard\",\"campaign_id\":\"guard-camp\",\"variants\":[\"A\",\"B\"],"
        "\"guardrails\":[\"click_rate\"],\"min_sample\":1000}",
    };
    for (int i = 0; i < 4; i++) {
        json_decref(xtfx_call(&srv, "POST", "/api/v1/experiments", defs[i], 201));
        json_t *d = json_loads(defs[i], 0, NULL);
        xtfx_action(&srv, json_string_value(json_object_get(d, "id")), "start", NULL);
        json_decref(d);
    }
    long now = (long)time(NULL);
    struct buf pre = BUF_INIT, conv = BUF_INIT, clicks = BUF_INIT;
    long npre = 0, nconv = 0, nclick = 0, decided = 0, held = 0, skipped = 0;
    for (int i = 0; i < N; i++) {
        char c[32];
        snprintf(c, sizeof c, "sim%05d", i);
        int loyal = urand() < 0.5;
        double spend = 20 + 60 * urand();
        if (loyal) { /* bought in the week before the experiment */
            buf_printf(&pre, "{\"type\":\"conversion\",\"customer_id\":\"%s\",\"revenue\":%.2f,"
                             "\"order_id\":\"pre-%d\",\"ts\":%ld}\n",
                       c, spend, i, now - 3 * 86400 - i % 1000);
            npre++;
        }
        /* the skewed stream: a third of srm's B customers never reach decide */
        double h;
        cr_assert_eq(assign_hash("srm", 3, c, strlen(c), 2, &h), 0);
        if (h >= 0.5 && i % 3 == 0) {
            skipped++;
            continue;
        }
        char body[256];
        snprintf(body, sizeof body, "{\"customer_id\":\"%s\",\"channel\":\"web\",\"limit\":4}", c);
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
        decided++;
        const char *lv = xtfx_variant(r.json, "lift-camp");
        const char *gv = xtfx_variant(r.json, "guard-camp");
        cr_assert(xtfx_variant(r.json, "aa-camp") && gv && xtfx_variant(r.json, "srm-camp"));
        /* the lift experiment's assignment is GrowthBook's */
        double hh;
        cr_assert_eq(assign_hash("__holdout:lift", 14, c, strlen(c), 2, &hh), 0);
        if (hh < 0.1) {
            cr_assert_null(lv, "%s is held out", c);
            held++;
        } else {
            cr_assert_eq(assign_hash("lift", 4, c, strlen(c), 2, &h), 0);
            cr_assert_str_eq(lv, h < 0.5 ? "A" : "B", "%s", c);
        }
        double mult = !lv ? 0.8 : !strcmp(lv, "B") ? 1.2 : 1.0;
        double p = (loyal ? 0.30 : 0.10) * mult;
        if (urand() < p) {
            buf_printf(&conv, "{\"type\":\"conversion\",\"customer_id\":\"%s\",\"revenue\":%.2f,"
                              "\"order_id\":\"ord-%d\"}\n",
                       c, loyal ? spend : 20 + 60 * urand(), i);
            nconv++;
        }
        if (urand() < (!strcmp(gv, "B") ? 0.2 : 0.3)) {
            buf_printf(&clicks, "{\"type\":\"click\",\"customer_id\":\"%s\",\"campaign_id\":"
                                "\"guard-camp\",\"variant\":\"%s\",\"channel\":\"web\"}\n",
                       c, gv);
            nclick++;
        }
        tfx_resp_free(&r);
    }
    post_ndjson(&pre, npre, 0);
    post_ndjson(&clicks, nclick, 0);
    post_ndjson(&conv, nconv, 0);
    post_ndjson(&conv, 0, nconv); /* the order system retries: every order once */
    buf_free(&pre);
    buf_free(&conv);
    buf_free(&clicks);
    cr_log_info("decided %ld (skipped %ld), held out %ld, conversions %ld, clicks %ld", decided,
                skipped, held, nconv, nclick);

    /* lift: the planted +20 % */
    json_t *res = xtfx_results(&srv, "lift");
    cr_assert_eq(etfx_int(res, "exposures"), decided);
    cr_assert(json_is_false(etfx_at(res, "srm.mismatch")), "p = %f", etfx_num(res, "srm.p_value"));
    json_t *cb = comparison(res, "conversion_rate");
    cr_assert_str_eq(json_string_value(json_object_get(cb, "variant")), "B");
    cr_assert(json_is_true(json_object_get(cb, "significant")), "%s", json_dumps(cb, 0));
    double lo = etfx_num(cb, "lift.ci_low"), hi = etfx_num(cb, "lift.ci_high");
    cr_assert(lo < 0.2 && 0.2 < hi, "the interval (%f, %f) holds the planted +20 %%", lo, hi);
    cr_assert(etfx_num(cb, "sequential.ci_low") > 0, "the always-valid interval excludes 0");
    cr_assert(etfx_num(cb, "ztest.p_value") < 1e-4);
    cr_assert(etfx_num(cb, "chance_to_beat_control") > 0.99);
    scipy_check(res, cb);
    /* incrementality: treated (A and B, 0.22 on average) over held out (0.16) */
    double inc = etfx_num(res, "holdout.conversion_lift.estimate");
    cr_assert(etfx_num(res, "holdout.conversion_lift.ci_low") > 0, "the campaign is incremental");
    cr_assert(etfx_num(res, "holdout.conversion_lift.ci_low") < 0.375 &&
                  0.375 < etfx_num(res, "holdout.conversion_lift.ci_high"),
              "holdout lift %f: interval holds the true 0.375", inc);
    cr_assert(etfx_num(res, "holdout.incremental_conversions") > 0);
    /* CUPED on revenue: the week before predicts the spend */
    json_t *rv = comparison(res, "revenue_per_customer");
    cr_assert(json_is_object(json_object_get(rv, "cuped")), "%s", json_dumps(rv, 0));
    cr_assert(etfx_num(rv, "cuped.theta") > 0);
    cr_assert(etfx_num(rv, "cuped.variance_reduction") > 0.05, "%f",
              etfx_num(rv, "cuped.variance_reduction"));
    cr_assert_str_eq(json_string_value(etfx_at(res, "recommendation.action")), "ship");
    cr_assert_str_eq(json_string_value(etfx_at(res, "recommendation.winner")), "B");
    cr_log_info("lift: B %+.3f (%.3f, %.3f), z p %.2g, sequential (%.3f, %.3f); holdout lift %.3f; "
                "CUPED on revenue: theta %.3f, variance -%.1f %%",
                etfx_num(cb, "lift.estimate"), lo, hi, etfx_num(cb, "ztest.p_value"),
                etfx_num(cb, "sequential.ci_low"), etfx_num(cb, "sequential.ci_high"), inc,
                etfx_num(rv, "cuped.theta"), 100 * etfx_num(rv, "cuped.variance_reduction"));
    json_decref(res);

    /* aa: nothing to flag */
    res = xtfx_results(&srv, "aa");
    json_t *ca = comparison(res, "conversion_rate");
    cr_assert(json_is_false(json_object_get(ca, "significant")), "A/A flagged: %s", json_dumps(ca, 0));
    cr_assert(etfx_num(ca, "sequential.p_value") >= 0.05);
    cr_log_info("aa: lift %+.3f, z p %.3f, sequential p %.3f", etfx_num(ca, "lift.estimate"),
                etfx_num(ca, "ztest.p_value"), etfx_num(ca, "sequential.p_value"));
    cr_assert(json_is_false(etfx_at(res, "srm.mismatch")));
    const char *act = json_string_value(etfx_at(res, "recommendation.action"));
    cr_assert(strcmp(act, "ship") && strcmp(act, "keep_control"), "A/A recommends %s", act);
    json_decref(res);

    /* srm: the skewed stream */
    res = xtfx_results(&srv, "srm");
    cr_assert(json_is_true(etfx_at(res, "srm.mismatch")), "%s", json_dumps(json_object_get(res, "srm"), 0));
    cr_assert(etfx_num(res, "srm.p_value") < 0.001);
    cr_log_info("srm: A %ld, B %ld, p %.3g", etfx_int(res, "srm.observed.A"),
                etfx_int(res, "srm.observed.B"), etfx_num(res, "srm.p_value"));
    const char *w = json_string_value(etfx_at(res, "warnings.0"));
    cr_assert(w && strstr(w, "SAMPLE RATIO MISMATCH"), "%s", w ? w : "(no warning)");
    cr_assert_str_eq(json_string_value(etfx_at(res, "recommendation.action")), "check_srm");
    cr_assert(json_is_false(json_object_get(comparison(res, "conversion_rate"), "significant")),
              "nothing is called significant under an SRM");
    json_decref(res);

    /* guard: B's offer is clicked less */
    res = xtfx_results(&srv, "guard");
    json_t *gr = json_array_get(json_object_get(res, "guardrail_regressions"), 0);
    cr_assert(gr, "no guardrail regression: %s", json_dumps(comparison(res, "click_rate"), 0));
    cr_assert_str_eq(json_string_value(json_object_get(gr, "metric")), "click_rate");
    cr_assert_str_eq(json_string_value(json_object_get(gr, "variant")), "B");
    cr_assert(etfx_num(gr, "lift") < -0.2 && etfx_num(gr, "lift") > -0.45);
    cr_assert_str_eq(json_string_value(etfx_at(res, "recommendation.action")), "stop_guardrail");
    json_decref(res);

    /* the recommendations endpoint says the same about all four */
    json_t *rec = xtfx_call(&srv, "GET", "/api/v1/experiments/recommendations", NULL, 200);
    cr_assert(listed(json_object_get(rec, "significant"), "lift"), "%s", json_dumps(rec, 0));
    cr_assert(!listed(json_object_get(rec, "significant"), "aa"));
    cr_assert(listed(json_object_get(rec, "srm"), "srm"));
    cr_assert(!listed(json_object_get(rec, "srm"), "lift"));
    cr_assert(listed(json_object_get(rec, "guardrail_regressions"), "guard"));
    json_t *u = json_object_get(rec, "underpowered");
    cr_assert(listed(u, "aa"), "an A/A test of this size cannot rule out a 10 %% lift: %s",
              json_dumps(u, 0));
    cr_assert_eq(json_array_size(json_object_get(rec, "experiments")), 4);
    json_decref(rec);
}
