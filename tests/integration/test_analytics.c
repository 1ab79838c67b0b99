/*
 * test_analytics.c — campaign metrics, dashboard and reports checked
 * against the raw events of a generated fixture (expected numbers are
 * counted here from the same events), Wilson intervals against known
 * values, and every bad parameter refused with a named field.
 *
 * The server clock is pinned (test_clock) to noon of a day ten days ahead,
 * so "today", the last 5 minutes and day boundaries do not depend on when
 * the test runs.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "events_tfx.h"
#include "fixture.h"

static struct tfx_server srv;
static long T;          /* the server's "now" */
static long D0;         /* its UTC day number */

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    long real = (long)time(NULL);
    T = real - real % 86400 + 10 * 86400 + 12 * 3600;
    D0 = T / 86400;
    char b[64];
    snprintf(b, sizeof b, "{\"now\":%ld}", T);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200);
    tfx_resp_free(&r);
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(analytics, .init = setup, .fini = teardown, .timeout = 120);

/* --- the fixture ------------------------------------------------------ */

#define NDAYS 3
static const char *variants[2] = { "A", "B" };
static const char *channels[2] = { "web", "email" };
static const char *types[6] = { "impression", "click", "conversion", "send", "open", "wishlist" };

struct cellx {
    long n[6];
    double revenue;
    int seen[40];   /* customers with any event in the cell */
};

static struct cellx X[NDAYS][2][2]; /* day (0 = today), variant, channel */

static uint32_t rng = 12345;
static uint32_t next(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* Post `n` generated events for campaign alpha; count them into X. */
static void load_fixture(int n)
{
    memset(X, 0, sizeof X);
    size_t cap = (size_t)n * 220 + 16, len = 0;
    char *nd = malloc(cap);
    for (int i = 0; i < n; i++) {
        int d = (int)(next() % NDAYS), v = (int)(next() % 2), c = (int)(next() % 2);
        int ty = (int)(next() % 100);
        int t = ty < 50 ? 0 : ty < 70 ? 1 : ty < 78 ? 2 : ty < 90 ? 3 : ty < 96 ? 4 : 5;
        int cust = (int)(next() % 40);
        long ts = d == 0 ? T - 3600 : (D0 - d) * 86400 + 43200; /* today 11:00, else noon */
        struct cellx *x = &X[d][v][c];
        x->n[t]++;
        x->seen[cust] = 1;
        char rev[64] = "";
        if (t == 2) {
            double r = (double)(next() % 10000) / 100.0;
            x->revenue += r;
            snprintf(rev, sizeof rev, ",\"revenue\":%.2f", r);
        }
        len += (size_t)snprintf(nd + len, cap - len,
                                "{\"type\":\"%s\",\"customer_id\":\"u%d\",%s\"variant\":\"%s\","
                                "\"channel\":\"%s\",\"ts\":%ld%s}\n",
                                types[t], cust, t == 5 ? "\"campaign_id\":\"alpha\"," : "\"campaign_id\":\"alpha\",",
                                variants[v], channels[c], ts, rev);
    }
    struct tfx_resp r;
    cr_assert_eq(etfx_post(&srv, "application/x-ndjson", nd, len, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), n, "%s", r.body);
    tfx_resp_free(&r);
    free(nd);
}

struct sum {
    long n[6];
    double revenue;
    long uniq;
};

/* Sum X over the cells matching (day, variant, channel); -1 = any. */
static struct sum sum_of(int day, int var, int chan)
{
    struct sum s;
    memset(&s, 0, sizeof s);
    for (int d = 0; d < NDAYS; d++)
        for (int v = 0; v < 2; v++)
            for (int c = 0; c < 2; c++) {
                if ((day >= 0 && d != day) || (var >= 0 && v != var) || (chan >= 0 && c != chan))
                    continue;
                for (int t = 0; t < 6; t++)
                    s.n[t] += X[d][v][c].n[t];
                s.revenue += X[d][v][c].revenue;
                for (int k = 0; k < 40; k++)
                    s.uniq += X[d][v][c].seen[k];
            }
    return s;
}

static void wilson(long k, long n, double *p, double *lo, double *hi)
{
    const double z = 1.959963984540054;
    double ph = (double)k / (double)n, z2 = z * z, nn = (double)n;
    double den = 1 + z2 / nn, c = (ph + z2 / (2 * nn)) / den;
    double h = z * sqrt(ph * (1 - ph) / nn + z2 / (4 * nn * nn)) / den;
    *p = ph;
    *lo = c - h < 0 ? 0 : c - h;
    *hi = c + h > 1 ? 1 : c + h;
}

static void check_metrics(json_t *m, struct sum s, const char *what)
{
    cr_assert_eq(json_integer_value(json_object_get(m, "impressions")), s.n[0], "%s impressions", what);
    cr_assert_eq(json_integer_value(json_object_get(m, "clicks")), s.n[1], "%s clicks", what);
    cr_assert_eq(json_integer_value(json_object_get(m, "conversions")), s.n[2], "%s conversions", what);
    cr_assert_eq(json_integer_value(json_object_get(m, "sends")), s.n[3], "%s sends", what);
    cr_assert_eq(json_integer_value(json_object_get(m, "opens")), s.n[4], "%s opens", what);
    cr_assert_eq(json_integer_value(etfx_at(m, "custom.wishlist")), s.n[5], "%s wishlist", what);
    cr_assert(fabs(json_number_value(json_object_get(m, "revenue")) - s.revenue) < 1e-6, "%s revenue %f vs %f",
              what, json_number_value(json_object_get(m, "revenue")), s.revenue);
    cr_assert_eq(json_integer_value(json_object_get(m, "unique_customers")), s.uniq, "%s uniques", what);
    long exp = s.n[0] + s.n[3];
    double p, lo, hi;
    if (exp) {
        wilson(s.n[1], exp, &p, &lo, &hi);
        cr_assert(fabs(json_number_value(etfx_at(m, "ctr.value")) - p) < 1e-6, "%s ctr", what);
        cr_assert(fabs(json_number_value(etfx_at(m, "ctr.low")) - lo) < 1e-6, "%s ctr low", what);
        cr_assert(fabs(json_number_value(etfx_at(m, "ctr.high")) - hi) < 1e-6, "%s ctr high", what);
        wilson(s.n[2], exp, &p, &lo, &hi);
        cr_assert(fabs(json_number_value(etfx_at(m, "conversion_rate.value")) - p) < 1e-6, "%s cr", what);
        cr_assert(fabs(json_number_value(etfx_at(m, "conversion_rate.low")) - lo) < 1e-6, "%s cr low", what);
    } else {
        cr_assert(json_is_null(etfx_at(m, "ctr.value")), "%s: ctr without exposures", what);
    }
}

Test(analytics, campaign_metrics_match_the_raw_events)
{
    load_fixture(3000);
    char from[16], to[16];
    etfx_day((D0 - (NDAYS - 1)) * 86400, from, sizeof from);
    etfx_day(D0 * 86400, to, sizeof to);
    json_t *a = etfx_get(&srv, "/api/v1/analytics/campaigns/alpha?from=%s&to=%s", from, to);
    cr_assert_str_eq(json_string_value(json_object_get(a, "from")), from);
    check_metrics(json_object_get(a, "totals"), sum_of(-1, -1, -1), "totals");
    for (int v = 0; v < 2; v++)
        check_metrics(etfx_find(json_object_get(a, "by_variant"), "variant", variants[v]), sum_of(-1, v, -1),
                      variants[v]);
    for (int c = 0; c < 2; c++)
        check_metrics(etfx_find(json_object_get(a, "by_channel"), "channel", channels[c]), sum_of(-1, -1, c),
                      channels[c]);
    cr_assert_eq(json_array_size(json_object_get(a, "by_day")), NDAYS);
    for (int d = 0; d < NDAYS; d++) {
        char day[16];
        etfx_day((D0 - d) * 86400, day, sizeof day);
        json_t *e = etfx_find(json_object_get(a, "by_day"), "day", day);
        cr_assert(e, "no entry for %s", day);
        check_metrics(e, sum_of(d, -1, -1), day);
    }
    json_decref(a);
    /* a range of one day only sees that day */
    a = etfx_get(&srv, "/api/v1/analytics/campaigns/alpha?from=%s&to=%s", to, to);
    check_metrics(json_object_get(a, "totals"), sum_of(0, -1, -1), "today only");
    json_decref(a);
    /* the open rate is opens / sends */
    a = etfx_get(&srv, "/api/v1/analytics/campaigns/alpha?from=%s", from);
    struct sum s = sum_of(-1, -1, -1);
    cr_assert(fabs(etfx_num(a, "totals.open_rate.value") - (double)s.n[4] / (double)s.n[3]) < 1e-6);
    json_decref(a);
}

Test(analytics, wilson_interval_known_values)
{
    char body[8192];
    size_t n = 0;
    n += (size_t)snprintf(body, sizeof body, "[");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(body + n, sizeof body - n,
                              "%s{\"type\":\"impression\",\"customer_id\":\"w%d\",\"campaign_id\":\"wil\"}",
                              i ? "," : "", i);
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(body + n, sizeof body - n,
                              ",{\"type\":\"click\",\"customer_id\":\"w%d\",\"campaign_id\":\"wil\"}", i);
    snprintf(body + n, sizeof body - n, "]");
    cr_assert_eq(etfx_ingest(&srv, body, 200), 110);
    json_t *a = etfx_get(&srv, "/api/v1/analytics/campaigns/wil");
    /* 10 of 100: the textbook 95 % Wilson interval is [0.0552, 0.1744] */
    cr_assert(fabs(etfx_num(a, "totals.ctr.value") - 0.1) < 1e-9);
    cr_assert(fabs(etfx_num(a, "totals.ctr.low") - 0.05523) < 1e-4, "%f", etfx_num(a, "totals.ctr.low"));
    cr_assert(fabs(etfx_num(a, "totals.ctr.high") - 0.17437) < 1e-4, "%f", etfx_num(a, "totals.ctr.high"));
    /* 0 of 100: [0, 0.0370] */
    cr_assert(fabs(etfx_num(a, "totals.conversion_rate.high") - 0.03699) < 1e-4);
    cr_assert_eq(etfx_num(a, "totals.conversion_rate.low"), 0.0);
    cr_assert_eq(etfx_int(a, "totals.unique_customers"), 100);
    cr_assert_eq(etfx_int(a, "totals.unique_by_type.click"), 10);
    json_decref(a);
}

Test(analytics, dashboard_totals_top_campaigns_and_rates)
{
    load_fixture(600);
    etfx_ingest(&srv,
                "[{\"type\":\"conversion\",\"customer_id\":\"z\",\"campaign_id\":\"big\",\"revenue\":100000},"
                " {\"type\":\"click\",\"customer_id\":\"z\",\"campaign_id\":\"small\"}]",
                200);
    char now_events[4096];
    size_t n = 0;
    n += (size_t)snprintf(now_events, sizeof now_events, "[");
    for (int i = 0; i < 12; i++)
        n += (size_t)snprintf(now_events + n, sizeof now_events - n,
                              "%s{\"type\":\"%s\",\"customer_id\":\"r%d\",\"campaign_id\":\"recent\",\"ts\":%ld}",
                              i ? "," : "", i < 9 ? "impression" : "click", i, T - 30);
    snprintf(now_events + n, sizeof now_events - n, "]");
    etfx_ingest(&srv, now_events, 200);
    json_t *d = etfx_get(&srv, "/api/v1/analytics/dashboard?top=2");
    json_t *top = json_object_get(d, "top_campaigns");
    cr_assert_eq(json_array_size(top), 2);
    cr_assert_str_eq(json_string_value(etfx_at(top, "0.campaign_id")), "big");
    cr_assert_str_eq(json_string_value(etfx_at(top, "1.campaign_id")), "alpha");
    struct sum s = sum_of(-1, -1, -1);
    cr_assert_eq(etfx_int(d, "totals.impressions"), s.n[0] + 9);
    cr_assert_eq(etfx_int(d, "totals.clicks"), s.n[1] + 1 + 3);
    cr_assert(fabs(etfx_num(d, "totals.revenue") - (s.revenue + 100000)) < 1e-6);
    struct sum today = sum_of(0, -1, -1);
    cr_assert_eq(etfx_int(d, "today.impressions"), today.n[0] + 9);
    /* the last 5 minutes hold exactly the 12 recent events (the fixture's
     * are an hour or more old, the two without ts are "now") */
    cr_assert_eq(etfx_int(d, "rates.last_5m.events"), 14);
    cr_assert_eq(etfx_int(d, "rates.last_5m.counts.impression"), 9);
    cr_assert(fabs(etfx_num(d, "rates.last_5m.events_per_second") - 14.0 / 300) < 1e-6);
    /* the last 24 h: today's fixture events and the noon of yesterday (exactly 24 h ago: out) */
    long last24 = 14;
    for (int t = 0; t < 6; t++)
        last24 += today.n[t];
    cr_assert_eq(etfx_int(d, "rates.last_24h.events"), last24);
    json_decref(d);
}

Test(analytics, reports_json_and_csv)
{
    load_fixture(1500);
    etfx_ingest(&srv, "{\"type\":\"click\",\"customer_id\":\"o\",\"campaign_id\":\"other\",\"channel\":\"web\"}",
                200);
    struct tfx_resp r;
    const char *q = "{\"dimensions\":[\"campaign\",\"variant\"],"
                    "\"metrics\":[\"impressions\",\"clicks\",\"ctr\",\"revenue\",\"count:wishlist\"],"
                    "\"filters\":{\"campaign\":[\"alpha\"]},\"from\":\"2000-01-01\",\"sort\":\"revenue\"}";
    char body[1024];
    char from[16];
    etfx_day((D0 - 5) * 86400, from, sizeof from);
    snprintf(body, sizeof body, "%s", q);
    char *p = strstr(body, "2000-01-01");
    memcpy(p, from, 10);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/analytics/reports", body, &r), 200, "%s", r.body);
    json_t *cols = json_object_get(r.json, "columns");
    cr_assert_eq(json_array_size(cols), 7);
    cr_assert_str_eq(json_string_value(json_array_get(cols, 6)), "count:wishlist");
    json_t *rows = json_object_get(r.json, "rows");
    cr_assert_eq(json_array_size(rows), 2);
    struct sum sa = sum_of(-1, 0, -1), sb = sum_of(-1, 1, -1);
    int a_first = sa.revenue >= sb.revenue;
    json_t *ra = json_array_get(rows, a_first ? 0 : 1), *rb = json_array_get(rows, a_first ? 1 : 0);
    cr_assert_str_eq(json_string_value(json_array_get(ra, 1)), "A");
    cr_assert_eq(json_integer_value(json_array_get(ra, 2)), sa.n[0]);
    cr_assert_eq(json_integer_value(json_array_get(ra, 3)), sa.n[1]);
    cr_assert(fabs(json_number_value(json_array_get(ra, 4)) - (double)sa.n[1] / (double)(sa.n[0] + sa.n[3])) < 1e-6);
    cr_assert_eq(json_integer_value(json_array_get(rb, 6)), sb.n[5]);
    tfx_resp_free(&r);
    /* by day and channel, every campaign, as CSV */
    snprintf(body, sizeof body,
             "{\"dimensions\":[\"day\",\"channel\"],\"metrics\":[\"clicks\",\"open_rate\"],\"from\":\"%s\","
             "\"format\":\"csv\"}",
             from);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/analytics/reports", body, &r), 200, "%s", r.body);
    cr_assert(strstr(r.ctype, "text/csv"), "%s", r.ctype);
    cr_assert(!strncmp(r.body, "day,channel,clicks,open_rate\r\n", 30), "%s", r.body);
    char today[16];
    etfx_day(D0 * 86400, today, sizeof today);
    char want[64];
    struct sum tw = sum_of(0, -1, 0);
    snprintf(want, sizeof want, "\r\n%s,web,%ld,", today, tw.n[1] + 1);
    cr_assert(strstr(r.body, want), "missing %s in %s", want + 2, r.body);
    tfx_resp_free(&r);
    /* format in the query, limit */
    snprintf(body, sizeof body, "{\"dimensions\":[\"campaign\"],\"from\":\"%s\",\"limit\":1}", from);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/analytics/reports?format=csv", body, &r), 200);
    int lines = 0;
    for (char *c = r.body; *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 2, "%s", r.body);
    tfx_resp_free(&r);
}

Test(analytics, bad_parameters_name_the_field)
{
    struct tfx_resp r;
    static const struct { const char *body; const char *code, *field; } bad[] = {
        { "{\"dimensions\":[\"planet\"]}", "invalid_field", "dimensions" },
        { "{\"dimensions\":\"campaign\"}", "invalid_field", "dimensions" },
        { "{\"dimensions\":[\"day\",\"day\"]}", "invalid_field", "dimensions" },
        { "{\"dimensions\":[\"day\",\"week\",\"month\",\"campaign\",\"variant\"]}", "invalid_field", "dimensions" },
        { "{\"metrics\":[\"profit\"]}", "invalid_field", "metrics" },
        { "{\"metrics\":[\"count:Bad Type\"]}", "invalid_field", "metrics" },
        { "{\"filters\":{\"planet\":\"x\"}}", "invalid_field", "filters" },
        { "{\"filters\":{\"campaign\":5}}", "invalid_field", "filters" },
        { "{\"filters\":[]}", "invalid_field", "filters" },
        { "{\"from\":\"2026-13-01\"}", "invalid_field", "from" },
        { "{\"from\":\"2026-03-02\",\"to\":\"2026-03-01\"}", "invalid_field", "from" },
        { "{\"from\":\"2000-01-01\",\"to\":\"2026-01-01\"}", "invalid_field", "from" },
        { "{\"to\":true}", "invalid_field", "to" },
        { "{\"format\":\"xml\"}", "invalid_field", "format" },
        { "{\"sort\":\"clicks\",\"metrics\":[\"impressions\"]}", "invalid_field", "sort" },
        { "{\"limit\":0}", "invalid_field", "limit" },
        { "{\"limit\":\"10\"}", "invalid_field", "limit" },
        { "{\"colour\":1}", "unknown_field", "colour" },
        { "[1]", "invalid_body", NULL },
        { "nope", "invalid_json", NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/analytics/reports", bad[i].body, &r), 400, "%s: %s",
                     bad[i].body, r.body);
        cr_assert_str_eq(tfx_err_code(&r), bad[i].code, "%s: %s", bad[i].body, r.body);
        if (bad[i].field)
            cr_assert_str_eq(json_string_value(etfx_at(r.json, "error.field")), bad[i].field, "%s", bad[i].body);
        tfx_resp_free(&r);
    }
    static const struct { const char *path; int status; const char *field; } badq[] = {
        { "/api/v1/analytics/campaigns/nobody", 404, "id" },
        { "/api/v1/analytics/campaigns/a%20b", 400, "id" },
        { "/api/v1/analytics/campaigns/x?from=someday", 400, "from" },
        { "/api/v1/analytics/campaigns/x?form=2026-01-01", 400, "form" },
        { "/api/v1/analytics/dashboard?top=0", 400, "top" },
        { "/api/v1/analytics/dashboard?top=abc", 400, "top" },
        { "/api/v1/analytics/attribution?model=magic", 400, "model" },
        { "/api/v1/analytics/attribution?window=forever", 400, "window" },
        { "/api/v1/analytics/attribution?window=365d", 400, "window" },
        { "/api/v1/analytics/attribution?half_life=0d", 400, "half_life" },
        { "/api/v1/analytics/attribution?campaign=../x", 400, "campaign" },
        { "/api/v1/analytics/roi?modle=linear", 400, "modle" },
        { "/api/v1/analytics/roi?to=1999-99-99", 400, "to" },
    };
    for (size_t i = 0; i < sizeof badq / sizeof badq[0]; i++) {
        cr_assert_eq(tfx_req(&srv, "GET", badq[i].path, NULL, &r), badq[i].status, "%s: %s", badq[i].path,
                     r.body);
        cr_assert_str_eq(json_string_value(etfx_at(r.json, "error.field")), badq[i].field, "%s: %s",
                         badq[i].path, r.body);
        tfx_resp_free(&r);
    }
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/analytics/dashboard", NULL, &r), 405);
    tfx_resp_free(&r);
}
