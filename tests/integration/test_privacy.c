/*
 * test_privacy.c — a customer's export lists their events, stats, counters
 * and activity; erasing the customer removes all of it (raw events, event
 * ids, stats, counters, markers) while the anonymous aggregates keep their
 * counts; retention compacts old raw events away.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "events_tfx.h"
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true, event_retention_days = 2,");
    tfx_write(&srv, "rules/capped.lua",
              "return { id = 'capped', channels = { 'web' }, caps = { customer = { { 5, '7d' } } },\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(privacy, .init = setup, .fini = teardown, .timeout = 60);

static void journey(const char *cust, long now)
{
    char body[2048];
    snprintf(body, sizeof body,
             "[{\"type\":\"impression\",\"customer_id\":\"%s\",\"campaign_id\":\"capped\",\"channel\":\"web\","
             "\"ts\":%ld,\"event_id\":\"%s-imp\"},"
             " {\"type\":\"click\",\"customer_id\":\"%s\",\"campaign_id\":\"capped\",\"channel\":\"web\",\"ts\":%ld},"
             " {\"type\":\"conversion\",\"customer_id\":\"%s\",\"campaign_id\":\"capped\",\"revenue\":12,"
             "\"ts\":%ld,\"event_id\":\"%s-order\",\"properties\":{\"sku\":\"X1\"}}]",
             cust, now - 600, cust, cust, now - 300, cust, now - 60, cust);
    cr_assert_eq(etfx_ingest(&srv, body, 200), 3);
}

Test(privacy, export_then_erase_covers_events_and_counters)
{
    long now = (long)time(NULL);
    journey("alice", now);
    journey("bob", now);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/alice", "{\"email\":\"a@example.com\"}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"alice\",\"channel\":\"web\"}", &r),
                 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "offers")), 1);
    tfx_resp_free(&r);

    json_t *x = etfx_get(&srv, "/api/v1/profiles/alice/export");
    cr_assert_str_eq(json_string_value(etfx_at(x, "profile.email")), "a@example.com");
    json_t *evs = json_object_get(x, "events");
    cr_assert_eq(json_array_size(evs), 3);
    cr_assert_str_eq(json_string_value(etfx_at(evs, "2.type")), "conversion");
    cr_assert_str_eq(json_string_value(etfx_at(evs, "2.event_id")), "alice-order");
    cr_assert_str_eq(json_string_value(etfx_at(evs, "2.properties.sku")), "X1");
    cr_assert_eq(etfx_int(x, "stats.events"), 3);
    cr_assert(json_array_size(json_object_get(x, "counters")) >= 1, "the cap counter of the decide");
    cr_assert(json_array_size(json_object_get(x, "activity")) >= 1);
    cr_assert_str_eq(json_string_value(etfx_at(x, "activity.0.campaign_id")), "capped");
    json_decref(x);

    json_t *before = etfx_get(&srv, "/api/v1/analytics/campaigns/capped");
    json_t *attr_before = etfx_get(&srv, "/api/v1/analytics/attribution");
    cr_assert_eq(etfx_int(attr_before, "conversions"), 2);

    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/alice", NULL, &r), 200, "%s", r.body);
    cr_assert(json_integer_value(json_object_get(r.json, "erased_records")) >= 3 + 1 + 1);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/alice/export", NULL, &r), 404, "%s", r.body);
    tfx_resp_free(&r);

    /* aggregates are anonymous and keep their counts */
    json_t *after = etfx_get(&srv, "/api/v1/analytics/campaigns/capped");
    cr_assert_eq(etfx_int(after, "totals.impressions"), etfx_int(before, "totals.impressions"));
    cr_assert_eq(etfx_int(after, "totals.conversions"), 2);
    json_decref(after);
    json_decref(before);
    json_decref(attr_before);
    /* the raw journey is gone: attribution only sees bob */
    json_t *attr = etfx_get(&srv, "/api/v1/analytics/attribution");
    cr_assert_eq(etfx_int(attr, "conversions"), 1);
    json_decref(attr);
    /* her event ids went too (a retry is a new event, not a duplicate) */
    char retry[256];
    snprintf(retry, sizeof retry,
             "{\"type\":\"impression\",\"customer_id\":\"alice\",\"campaign_id\":\"capped\",\"event_id\":\"alice-imp\"}");
    cr_assert_eq(etfx_post(&srv, "application/json", retry, strlen(retry), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 1);
    tfx_resp_free(&r);
    /* bob is untouched, and his ids still deduplicate */
    x = etfx_get(&srv, "/api/v1/profiles/bob/export");
    cr_assert_eq(json_array_size(json_object_get(x, "events")), 3);
    json_decref(x);
    snprintf(retry, sizeof retry,
             "{\"type\":\"impression\",\"customer_id\":\"bob\",\"campaign_id\":\"capped\",\"event_id\":\"bob-imp\"}");
    cr_assert_eq(etfx_post(&srv, "application/json", retry, strlen(retry), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 1);
    tfx_resp_free(&r);
    /* erasing someone with nothing stored is a 404 */
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/nobody-at-all", NULL, &r), 404);
    tfx_resp_free(&r);
}

Test(privacy, retention_compacts_raw_events_and_keeps_aggregates)
{
    long now = (long)time(NULL);
    struct tfx_resp r;
    /* older than the 2-day retention: refused at the door */
    char old[256];
    snprintf(old, sizeof old, "{\"type\":\"click\",\"customer_id\":\"c\",\"campaign_id\":\"ret\",\"ts\":%ld}",
             now - 3 * 86400);
    cr_assert_eq(etfx_post(&srv, "application/json", old, strlen(old), &r), 422);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "errors.0.code")), "ts_too_old");
    tfx_resp_free(&r);
    char body[1024];
    snprintf(body, sizeof body,
             "[{\"type\":\"impression\",\"customer_id\":\"c\",\"campaign_id\":\"ret\",\"ts\":%ld,\"event_id\":\"old-1\"},"
             " {\"type\":\"click\",\"customer_id\":\"c\",\"campaign_id\":\"ret\",\"ts\":%ld},"
             " {\"type\":\"conversion\",\"customer_id\":\"c\",\"campaign_id\":\"ret\",\"revenue\":3,\"ts\":%ld}]",
             now - 86400 - 600, now - 86400, now - 60);
    cr_assert_eq(etfx_ingest(&srv, body, 200), 3);
    json_t *before = etfx_get(&srv, "/api/v1/analytics/campaigns/ret");

    /* compact everything older than 12 hours: the two day-old events go */
    char req[128];
    snprintf(req, sizeof req, "{\"before\":%ld}", now - 12 * 3600);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/compact", req, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "deleted_events")), 2);
    tfx_resp_free(&r);
    json_t *x = etfx_get(&srv, "/api/v1/profiles/c/export");
    cr_assert_eq(json_array_size(json_object_get(x, "events")), 1);
    cr_assert_str_eq(json_string_value(etfx_at(x, "events.0.type")), "conversion");
    json_decref(x);
    json_t *after = etfx_get(&srv, "/api/v1/analytics/campaigns/ret");
    cr_assert_eq(etfx_int(after, "totals.impressions"), etfx_int(before, "totals.impressions"));
    cr_assert_eq(etfx_int(after, "totals.clicks"), 1);
    cr_assert_eq(etfx_int(after, "totals.unique_customers"), etfx_int(before, "totals.unique_customers"));
    json_decref(after);
    json_decref(before);
    /* the conversion lost its touches to compaction */
    json_t *a = etfx_get(&srv, "/api/v1/analytics/attribution");
    cr_assert_eq(etfx_int(a, "conversions"), 1);
    cr_assert_eq(etfx_int(a, "unattributed"), 1);
    json_decref(a);

    /* three days later the default cutoff (retention 2 days) takes the rest */
    snprintf(req, sizeof req, "{\"offset\":%d}", 3 * 86400);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", req, &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/compact", NULL, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "deleted_events")), 1);
    tfx_resp_free(&r);
    x = etfx_get(&srv, "/api/v1/profiles/c/export");
    cr_assert_eq(json_array_size(json_object_get(x, "events")), 0);
    cr_assert_eq(json_array_size(json_object_get(x, "activity")), 0, "markers of compacted days go too");
    cr_assert_eq(etfx_int(x, "stats.events"), 3, "p.stats keeps the customer's history");
    json_decref(x);
    char from[16];
    etfx_day(now - 2 * 86400, from, sizeof from);
    after = etfx_get(&srv, "/api/v1/analytics/campaigns/ret?from=%s", from);
    cr_assert_eq(etfx_int(after, "totals.conversions"), 1);
    cr_assert(etfx_num(after, "totals.revenue") == 3.0);
    json_decref(after);
}

Test(privacy, compaction_requests_are_checked)
{
    struct tfx_resp r;
    long now = (long)time(NULL);
    char b[128];
    snprintf(b, sizeof b, "{\"before\":%ld}", now + 86400);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/compact", b, &r), 422);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "error.field")), "before");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/compact", "{\"before\":\"someday\"}", &r), 400);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "error.field")), "before");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/compact", "{\"after\":1}", &r), 400);
    cr_assert_str_eq(tfx_err_code(&r), "unknown_field");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/compact", "{\"before\":\"2020-01-01T00:00:00Z\"}", &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "deleted_events")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "cutoff")), "2020-01-01T00:00:00Z");
    tfx_resp_free(&r);
}
