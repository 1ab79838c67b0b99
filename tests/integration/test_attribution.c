/*
 * test_attribution.c — hand-built customer journeys with known answers for
 * every attribution model, the window, touches after the conversion and at
 * the same instant, non-touch events, and ROI from campaign and channel
 * costs.  The server clock is pinned so the journeys are exact.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "events_tfx.h"
#include "fixture.h"

static struct tfx_server srv;
static long T;

#define H 3600L
#define CAMP(id, cost)                                                                     \
    "return { id = '" id "', channels = { 'web' }, " cost "\n"                            \
    "  variants = { { id = 'A', content = { t = 'x' } } },\n"                            \
    "  eligible = function() return true end }\n"

static void ev(char *buf, size_t cap, size_t *n, const char *type, const char *cust, const char *camp,
               const char *chan, long ts, double revenue)
{
    char rev[48] = "", ch[48] = "", cp[64] = "";
    if (revenue > 0)
        snprintf(rev, sizeof rev, ",\"revenue\":%.2f", revenue);
    if (chan)
        snprintf(ch, sizeof ch, ",\"channel\":\"%s\"", chan);
    if (camp)
        snprintf(cp, sizeof cp, ",\"campaign_id\":\"%s\"", camp);
    *n += (size_t)snprintf(buf + *n, cap - *n, "%s{\"type\":\"%s\",\"customer_id\":\"%s\"%s%s,\"ts\":%ld%s}",
                           *n > 1 ? "," : "", type, cust, cp, ch, ts, rev);
}

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,\n"
                          "  channels = { email = { cost_per_send = 0.01 }, web = { cost_per_impression = 0.002 } },");
    tfx_write(&srv, "rules/a.lua", CAMP("camp_a", "cost = { per_impression = 0.5 },"));
    tfx_write(&srv, "rules/b.lua", CAMP("camp_b", "cost = { per_impression = 1 },"));
    tfx_write(&srv, "rules/c.lua", CAMP("camp_c", "cost = { per_send = 10 },"));
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    long real = (long)time(NULL);
    T = real - real % 86400 + 10 * 86400 + 12 * H;
    char b[64];
    snprintf(b, sizeof b, "{\"now\":%ld}", T);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200);
    tfx_resp_free(&r);

    static char body[8192];
    size_t n = 0;
    n += (size_t)snprintf(body, sizeof body, "[");
    /* j1: impression A, click B, send C, then a conversion of 100 */
    ev(body, sizeof body, &n, "impression", "j1", "camp_a", "web", T - 4 * H, 0);
    ev(body, sizeof body, &n, "click", "j1", "camp_b", "web", T - 3 * H, 0);
    ev(body, sizeof body, &n, "send", "j1", "camp_c", "email", T - 2 * H, 0);
    ev(body, sizeof body, &n, "conversion", "j1", "camp_c", NULL, T - 1 * H, 100);
    /* j2: a click ten days before its conversion of 50: outside 7d, inside 30d */
    ev(body, sizeof body, &n, "click", "j2", "camp_a", "web", T - 10 * 86400, 0);
    ev(body, sizeof body, &n, "conversion", "j2", "camp_a", NULL, T - 2 * H, 50);
    /* j3: impression B, conversion 10, then impression C (after: no credit) */
    ev(body, sizeof body, &n, "impression", "j3", "camp_b", "web", T - 1800, 0);
    ev(body, sizeof body, &n, "conversion", "j3", "camp_b", NULL, T - 1200, 10);
    ev(body, sizeof body, &n, "impression", "j3", "camp_c", "web", T - 600, 0);
    /* j4: impression A, impression B (app), conversion 20; an open and a custom
     * event of another campaign in between are not touches */
    ev(body, sizeof body, &n, "impression", "j4", "camp_a", "web", T - 5 * H, 0);
    ev(body, sizeof body, &n, "wishlist", "j4", "camp_d", NULL, T - 4 * H - 1800, 0);
    ev(body, sizeof body, &n, "impression", "j4", "camp_b", "app", T - 4 * H, 0);
    ev(body, sizeof body, &n, "open", "j4", "camp_d", "email", T - 3 * H - 600, 0);
    ev(body, sizeof body, &n, "conversion", "j4", "camp_b", NULL, T - 3 * H, 20);
    /* j5: a conversion of 5 with no touch at all */
    ev(body, sizeof body, &n, "conversion", "j5", "camp_a", NULL, T - 3 * H, 5);
    /* j6: a click, a conversion of 7 at the same second, then another click
     * at that second that arrived after it */
    ev(body, sizeof body, &n, "click", "j6", "camp_e", "web", T - 5 * H, 0);
    ev(body, sizeof body, &n, "conversion", "j6", "camp_e", NULL, T - 5 * H, 7);
    ev(body, sizeof body, &n, "click", "j6", "camp_f", "web", T - 5 * H, 0);
    snprintf(body + n, sizeof body - n, "]");
    cr_assert_eq(etfx_ingest(&srv, body, 200), 18);
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(attribution, .init = setup, .fini = teardown, .timeout = 60);

struct want {
    const char *camp;
    double revenue;
    double conversions;
};

static void check_model(const char *query, const struct want *w, int nw, long conversions,
                        long attributed, double attr_revenue)
{
    json_t *a = etfx_get(&srv, "/api/v1/analytics/attribution?%s", query);
    cr_assert_eq(etfx_int(a, "conversions"), conversions, "%s", query);
    cr_assert_eq(etfx_int(a, "attributed"), attributed, "%s", query);
    cr_assert_eq(etfx_int(a, "unattributed"), conversions - attributed, "%s", query);
    cr_assert(fabs(etfx_num(a, "attributed_revenue") - attr_revenue) < 1e-6, "%s", query);
    json_t *camps = json_object_get(a, "campaigns");
    double total = 0;
    size_t i;
    json_t *x;
    json_array_foreach(camps, i, x) total += json_number_value(json_object_get(x, "revenue"));
    cr_assert(fabs(total - attr_revenue) < 1e-4, "%s: credits sum to %f", query, total);
    for (int k = 0; k < nw; k++) {
        json_t *c = etfx_find(camps, "campaign_id", w[k].camp);
        double rev = c ? json_number_value(json_object_get(c, "revenue")) : 0;
        double conv = c ? json_number_value(json_object_get(c, "conversions")) : 0;
        cr_assert(fabs(rev - w[k].revenue) < 1e-5, "%s: %s revenue %f, want %f", query, w[k].camp, rev,
                  w[k].revenue);
        cr_assert(fabs(conv - w[k].conversions) < 1e-5, "%s: %s conversions %f, want %f", query, w[k].camp,
                  conv, w[k].conversions);
    }
    /* nothing for the campaigns that were never touched before a conversion */
    cr_assert_null(etfx_find(camps, "campaign_id", "camp_d"), "%s", query);
    cr_assert_null(etfx_find(camps, "campaign_id", "camp_f"), "%s", query);
    json_decref(a);
}

Test(attribution, last_touch)
{
    const struct want w[] = { { "camp_a", 0, 0 }, { "camp_b", 30, 2 }, { "camp_c", 100, 1 }, { "camp_e", 7, 1 } };
    check_model("model=last_touch", w, 4, 6, 4, 137);
    check_model("", w, 4, 6, 4, 137); /* the default model and window */
    json_t *a = etfx_get(&srv, "/api/v1/analytics/attribution");
    json_t *ch = json_object_get(a, "channels");
    cr_assert(fabs(json_number_value(json_object_get(etfx_find(ch, "channel", "email"), "revenue")) - 100) < 1e-6);
    cr_assert(fabs(json_number_value(json_object_get(etfx_find(ch, "channel", "web"), "revenue")) - 17) < 1e-6);
    cr_assert(fabs(json_number_value(json_object_get(etfx_find(ch, "channel", "app"), "revenue")) - 20) < 1e-6);
    cr_assert_eq(etfx_int(a, "window_s"), 7 * 86400);
    cr_assert(fabs(etfx_num(a, "revenue") - 192) < 1e-6);
    json_decref(a);
}

Test(attribution, first_touch)
{
    const struct want w[] = { { "camp_a", 120, 2 }, { "camp_b", 10, 1 }, { "camp_c", 0, 0 }, { "camp_e", 7, 1 } };
    check_model("model=first_touch", w, 4, 6, 4, 137);
}

Test(attribution, linear)
{
    const struct want w[] = { { "camp_a", 100.0 / 3 + 10, 1.0 / 3 + 0.5 },
                              { "camp_b", 100.0 / 3 + 10 + 10, 1.0 / 3 + 1 + 0.5 },
                              { "camp_c", 100.0 / 3, 1.0 / 3 },
                              { "camp_e", 7, 1 } };
    check_model("model=linear", w, 4, 6, 4, 137);
}

Test(attribution, position_40_20_40)
{
    const struct want w[] = { { "camp_a", 40 + 10, 0.4 + 0.5 },
                              { "camp_b", 20 + 10 + 10, 0.2 + 1 + 0.5 },
                              { "camp_c", 40, 0.4 },
                              { "camp_e", 7, 1 } };
    check_model("model=position", w, 4, 6, 4, 137);
}

Test(attribution, time_decay_with_a_one_hour_half_life)
{
    /* j1: ages 3h 2h 1h → 1/8 1/4 1/2 of 7/8; j4: ages 2h 1h → 1/4 1/2 of 3/4 */
    const struct want w[] = { { "camp_a", 100.0 / 7 + 20.0 / 3, 1.0 / 7 + 1.0 / 3 },
                              { "camp_b", 200.0 / 7 + 10 + 40.0 / 3, 2.0 / 7 + 1 + 2.0 / 3 },
                              { "camp_c", 400.0 / 7, 4.0 / 7 },
                              { "camp_e", 7, 1 } };
    check_model("model=time_decay&half_life=1h", w, 4, 6, 4, 137);
    /* the default half-life is 7 days: nearly linear over hours */
    json_t *a = etfx_get(&srv, "/api/v1/analytics/attribution?model=time_decay");
    cr_assert_eq(etfx_int(a, "half_life_s"), 7 * 86400);
    double c = json_number_value(json_object_get(etfx_find(json_object_get(a, "campaigns"), "campaign_id", "camp_c"),
                                                 "revenue"));
    cr_assert(c > 100.0 / 3 && c < 34.0, "camp_c %f", c);
    json_decref(a);
}

Test(attribution, the_window_and_the_date_range)
{
    const struct want w[] = { { "camp_a", 50, 1 }, { "camp_b", 30, 2 }, { "camp_c", 100, 1 } };
    check_model("model=last_touch&window=30d", w, 3, 6, 5, 187);
    const struct want none[] = { { "camp_c", 0, 0 } };
    char y[16];
    etfx_day(T - 86400, y, sizeof y);
    char q[64];
    snprintf(q, sizeof q, "to=%s", y);
    check_model(q, none, 1, 0, 0, 0);
    /* one campaign's row only */
    json_t *a = etfx_get(&srv, "/api/v1/analytics/attribution?campaign=camp_b");
    cr_assert_eq(json_array_size(json_object_get(a, "campaigns")), 1);
    cr_assert(fabs(etfx_num(a, "campaigns.0.revenue") - 30) < 1e-6);
    json_decref(a);
}

Test(attribution, roi_from_campaign_and_channel_costs)
{
    json_t *a = etfx_get(&srv, "/api/v1/analytics/roi");
    json_t *c = json_object_get(a, "campaigns");
    json_t *ca = etfx_find(c, "campaign_id", "camp_a"), *cb = etfx_find(c, "campaign_id", "camp_b"),
           *cc = etfx_find(c, "campaign_id", "camp_c"), *ce = etfx_find(c, "campaign_id", "camp_e");
    cr_assert(ca && cb && cc && ce);
    /* camp_a: 2 web impressions × (0.5 + 0.002) */
    cr_assert(fabs(etfx_num(ca, "cost") - 1.004) < 1e-9, "%f", etfx_num(ca, "cost"));
    cr_assert(fabs(etfx_num(ca, "roi") - (-1.0)) < 1e-9);
    /* camp_b: 2 impressions × 1 + one on web × 0.002 (app has no cost) */
    cr_assert(fabs(etfx_num(cb, "cost") - 2.002) < 1e-9, "%f", etfx_num(cb, "cost"));
    cr_assert(fabs(etfx_num(cb, "attributed_revenue") - 30) < 1e-9);
    cr_assert(fabs(etfx_num(cb, "roi") - (30 - 2.002) / 2.002) < 1e-6);
    /* camp_c: one email send × (10 + 0.01) + one web impression × 0.002 */
    cr_assert(fabs(etfx_num(cc, "cost") - 10.012) < 1e-9, "%f", etfx_num(cc, "cost"));
    cr_assert(fabs(etfx_num(cc, "cost_campaign") - 10) < 1e-9);
    cr_assert(fabs(etfx_num(cc, "cost_channels.email") - 0.01) < 1e-9);
    cr_assert(fabs(etfx_num(cc, "roas") - 100 / 10.012) < 1e-6);
    cr_assert_eq(etfx_int(cc, "sends"), 1);
    /* camp_e has no costs: no ratio */
    cr_assert(json_is_null(json_object_get(ce, "roi")));
    cr_assert(fabs(etfx_num(a, "totals.cost") - 13.018) < 1e-9);
    cr_assert(fabs(etfx_num(a, "totals.attributed_revenue") - 137) < 1e-9);
    /* sorted by attributed revenue */
    cr_assert_str_eq(json_string_value(etfx_at(c, "0.campaign_id")), "camp_c");
    json_decref(a);
    a = etfx_get(&srv, "/api/v1/analytics/roi?model=first_touch&campaign=camp_a");
    cr_assert_eq(json_array_size(json_object_get(a, "campaigns")), 1);
    cr_assert(fabs(etfx_num(a, "campaigns.0.attributed_revenue") - 120) < 1e-9);
    json_decref(a);
}

/* The shop's order system reports a purchase without knowing any campaign:
 * the conversion is credited to the touches of that customer's journey
 * like any other (the journey, not the event, names the campaigns). */
Test(attribution, conversions_without_a_campaign_are_credited)
{
    static char body[2048];
    size_t n = 0;
    n += (size_t)snprintf(body, sizeof body, "[");
    ev(body, sizeof body, &n, "impression", "j9", "camp_a", "web", T - 3 * H, 0);
    ev(body, sizeof body, &n, "click", "j9", "camp_b", "web", T - 2 * H, 0);
    ev(body, sizeof body, &n, "conversion", "j9", NULL, NULL, T - 1 * H, 40);
    n += (size_t)snprintf(body + n, sizeof body - n, "]");
    cr_assert_eq(etfx_ingest(&srv, body, 200), 3);
    /* last touch: camp_b gets j9's 40 on top of its 30; linear: 20 each */
    const struct want last[] = { { "camp_a", 0, 0 }, { "camp_b", 70, 3 }, { "camp_c", 100, 1 } };
    check_model("model=last_touch", last, 3, 7, 5, 177);
    const struct want lin[] = { { "camp_a", 100.0 / 3 + 10 + 20, 1.0 / 3 + 0.5 + 0.5 },
                                { "camp_b", 100.0 / 3 + 10 + 10 + 20, 1.0 / 3 + 1 + 0.5 + 0.5 } };
    check_model("model=linear", lin, 2, 7, 5, 177);
}
