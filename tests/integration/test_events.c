/*
 * test_events.c — POST /api/v1/events on the real server: the three body
 * forms, per-event validation reported by index with the rest kept,
 * idempotent event ids (also under concurrency), timestamps, hostile and
 * oversized bodies, p.stats for rules, nothing lost under many connections,
 * restart and SIGKILL.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "events_tfx.h"
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true, max_import_body_mb = 4,");
    tfx_write(&srv, "rules/stats.lua",
              "return { id = 'clicker', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    local s = p.stats or {}\n"
              "    if (s.click or 0) < 2 then return false, 'clicks: ' .. tostring(s.click or 0) end\n"
              "    return s.last.click >= s.first_seen and (s.custom or {}).wishlist == 1\n"
              "  end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(events, .init = setup, .fini = teardown, .timeout = 120);

static long clicks_of(const char *camp)
{
    struct tfx_resp r;
    char path[200];
    snprintf(path, sizeof path, "/api/v1/analytics/campaigns/%s", camp);
    int st = tfx_req(&srv, "GET", path, NULL, &r);
    long n = st == 200 ? (long)json_integer_value(etfx_at(r.json, "totals.clicks")) : -1;
    tfx_resp_free(&r);
    return n;
}

Test(events, one_an_array_ndjson_and_msgpack)
{
    struct tfx_resp r;
    const char *one = "{\"type\":\"click\",\"customer_id\":\"a1\",\"campaign_id\":\"forms\"}";
    cr_assert_eq(etfx_post(&srv, "application/json", one, strlen(one), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 1);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 0);
    cr_assert_eq(json_array_size(json_object_get(r.json, "errors")), 0);
    tfx_resp_free(&r);
    const char *arr = "[{\"type\":\"click\",\"customer_id\":\"a1\",\"campaign_id\":\"forms\"},"
                      " {\"type\":\"click\",\"customer_id\":\"a2\",\"campaign_id\":\"forms\"}]";
    cr_assert_eq(etfx_post(&srv, "application/json", arr, strlen(arr), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2);
    tfx_resp_free(&r);
    /* NDJSON, declared, with CRLF and blank lines */
    const char *nd = "{\"type\":\"click\",\"customer_id\":\"a3\",\"campaign_id\":\"forms\"}\r\n\r\n"
                     "  {\"type\":\"click\",\"customer_id\":\"a4\",\"campaign_id\":\"forms\"}  \r\n";
    cr_assert_eq(etfx_post(&srv, "application/x-ndjson", nd, strlen(nd), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2);
    tfx_resp_free(&r);
    /* NDJSON sent as application/json is recognised too */
    const char *nd2 = "{\"type\":\"click\",\"customer_id\":\"a5\",\"campaign_id\":\"forms\"}\n"
                      "{\"type\":\"click\",\"customer_id\":\"a6\",\"campaign_id\":\"forms\"}\n";
    cr_assert_eq(etfx_post(&srv, "application/json", nd2, strlen(nd2), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2);
    tfx_resp_free(&r);
    /* msgpack: {"type":"click","customer_id":"m1","campaign_id":"forms"} */
    static const unsigned char mp[] = { 0x83, 0xa4, 't', 'y', 'p', 'e', 0xa5, 'c', 'l', 'i', 'c', 'k',
                                        0xab, 'c', 'u', 's', 't', 'o', 'm', 'e', 'r', '_', 'i', 'd',
                                        0xa2, 'm', '1', 0xab, 'c', 'a', 'm', 'p', 'a', 'i', 'g', 'n',
                                        '_', 'i', 'd', 0xa5, 'f', 'o', 'r', 'm', 's' };
    cr_assert_eq(etfx_post(&srv, "application/msgpack", (const char *)mp, sizeof mp, &r), 200, "%s",
                 r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 1);
    tfx_resp_free(&r);
    /* visible to analytics as soon as the answer came back */
    cr_assert_eq(clicks_of("forms"), 8);
    /* and counted in /metrics */
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    cr_assert(strstr(r.body, "promod_events_ingested_total{type=\"click\"} 8\n"), "%s", r.body);
    tfx_resp_free(&r);
}

struct bad_case {
    const char *event;   /* one JSON event */
    const char *code;
    const char *field;   /* NULL: none */
};

static const struct bad_case bad_cases[] = {
    { "{\"customer_id\":\"b\",\"campaign_id\":\"c\"}", "missing_field", "type" },
    { "{\"type\":\"Click!\",\"customer_id\":\"b\",\"campaign_id\":\"c\"}", "invalid_type", "type" },
    { "{\"type\":42,\"customer_id\":\"b\",\"campaign_id\":\"c\"}", "invalid_type", "type" },
    { "{\"type\":\"\",\"customer_id\":\"b\"}", "invalid_type", "type" },
    { "{\"type\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"customer_id\":\"b\"}", "invalid_type", "type" },
    { "{\"type\":\"click\",\"campaign_id\":\"c\"}", "missing_field", "customer_id" },
    { "{\"type\":\"click\",\"customer_id\":null,\"campaign_id\":\"c\"}", "missing_field", "customer_id" },
    { "{\"type\":\"click\",\"customer_id\":\"has space\",\"campaign_id\":\"c\"}", "invalid_id", "customer_id" },
    { "{\"type\":\"click\",\"customer_id\":7,\"campaign_id\":\"c\"}", "invalid_id", "customer_id" },
    { "{\"type\":\"click\",\"customer_id\":\"b\"}", "missing_field", "campaign_id" },
    { "{\"type\":\"open\",\"customer_id\":\"b\"}", "missing_field", "campaign_id" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"order_id\":\"o1\"}",
      "invalid_field", "order_id" },
    { "{\"type\":\"conversion\",\"customer_id\":\"b\",\"order_id\":\"has space\"}",
      "invalid_field", "order_id" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"../x\"}", "invalid_id", "campaign_id" },
    { "{\"type\":\"conversion\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"revenue\":-1}",
      "invalid_revenue", "revenue" },
    { "{\"type\":\"conversion\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"revenue\":\"10\"}",
      "invalid_revenue", "revenue" },
    { "{\"type\":\"conversion\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"revenue\":1e300}",
      "invalid_revenue", "revenue" },
    { "{\"type\":\"impression\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"revenue\":3}",
      "invalid_field", "revenue" },
    { "{\"type\":\"conversion\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"revenue\":3,\"currency\":\"EURO\"}",
      "invalid_field", "currency" },
    { "{\"type\":\"conversion\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"currency\":\"EUR\"}",
      "invalid_field", "currency" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"ts\":\"yesterday\"}", "invalid_ts", "ts" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"ts\":true}", "invalid_ts", "ts" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"ts\":-5}", "invalid_ts", "ts" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"ts\":\"2999-01-01T00:00:00Z\"}",
      "ts_in_future", "ts" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"ts\":1767225600000}", "ts_in_future", "ts" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"ts\":\"2001-01-01\"}", "ts_too_old", "ts" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"colour\":\"red\"}", "unknown_field", "colour" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"properties\":[1]}",
      "invalid_field", "properties" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"event_id\":\"has space\"}",
      "invalid_field", "event_id" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"variant\":\"a/b\"}",
      "invalid_field", "variant" },
    { "{\"type\":\"click\",\"customer_id\":\"b\",\"campaign_id\":\"c\",\"channel\":\"\"}", "invalid_field", "channel" },
    { "[1]", "invalid_event", NULL },
    { "\"click\"", "invalid_event", NULL },
};

Test(events, each_bad_event_is_reported_and_the_rest_kept)
{
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
        const struct bad_case *bc = &bad_cases[k];
        /* [good, bad, good]: the bad one is index 1, the other two are stored */
        char body[2048];
        snprintf(body, sizeof body,
                 "[{\"type\":\"click\",\"customer_id\":\"g1\",\"campaign_id\":\"kept\"}, %s,"
                 " {\"type\":\"click\",\"customer_id\":\"g2\",\"campaign_id\":\"kept\"}]",
                 bc->event);
        struct tfx_resp r;
        cr_assert_eq(etfx_post(&srv, "application/json", body, strlen(body), &r), 200, "%s", r.body);
        cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2, "%s", r.body);
        cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 1, "%s", r.body);
        json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
        cr_assert_eq(json_integer_value(json_object_get(e, "index")), 1);
        cr_assert_str_eq(json_string_value(json_object_get(e, "code")), bc->code, "%s: %s", bc->event,
                         r.body);
        const char *f = json_string_value(json_object_get(e, "field"));
        if (bc->field)
            cr_assert(f && !strcmp(f, bc->field), "%s: field %s", bc->event, f ? f : "(none)");
        cr_assert(strlen(json_string_value(json_object_get(e, "message"))) > 5);
        tfx_resp_free(&r);
        cr_assert_eq(clicks_of("kept"), 2 * (long)(k + 1));
    }
}

Test(events, all_rejected_is_422_in_the_contract_shape)
{
    const char *body = "[{\"type\":\"click\"}, {\"type\":\"nope nope\",\"customer_id\":\"x\"}]";
    struct tfx_resp r;
    cr_assert_eq(etfx_post(&srv, "application/json", body, strlen(body), &r), 422, "%s", r.body);
    cr_assert_str_eq(tfx_err_code(&r), "invalid_events");
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "error.field")), "customer_id");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 0);
    cr_assert_eq(json_array_size(json_object_get(r.json, "errors")), 2);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "errors.1.code")), "invalid_type");
    tfx_resp_free(&r);
}

Test(events, malformed_bodies_get_clear_errors)
{
    struct tfx_resp r;
    static const struct { const char *ctype, *body; int status; const char *code; } cases[] = {
        { "application/json", "", 400, "empty_body" },
        { "application/json", "[]", 400, "empty_body" },
        { "application/json", "42", 400, "invalid_body" },
        { "application/json", "{\"type\":", 400, "invalid_json" },
        { "application/json", "{\n  \"type\": \"click\",\n  \"customer_id\": \"p\"\n", 400, "invalid_json" },
        { "application/json", "[{\"type\":\"click\"} garbage", 400, "invalid_json" },
        { "application/x-ndjson", "\n\n  \n", 400, "empty_body" },
        { "application/xml", "<event/>", 415, "unsupported_media_type" },
        { "application/msgpack", "\xc1", 400, "invalid_msgpack" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = etfx_post(&srv, cases[i].ctype, cases[i].body, strlen(cases[i].body), &r);
        cr_assert_eq(st, cases[i].status, "case %zu: %d %s", i, st, r.body);
        cr_assert_str_eq(tfx_err_code(&r), cases[i].code, "case %zu: %s", i, r.body);
        cr_assert(json_is_string(etfx_at(r.json, "error.message")));
        tfx_resp_free(&r);
    }
    /* a pretty-printed single event is one event, not NDJSON */
    const char *pretty = "{\n  \"type\": \"click\",\n  \"customer_id\": \"p\",\n  \"campaign_id\": \"pp\"\n}\n";
    cr_assert_eq(etfx_post(&srv, "application/json", pretty, strlen(pretty), &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 1);
    tfx_resp_free(&r);
    /* msgpack NaN revenue: {"type":"conversion","customer_id":"n","campaign_id":"c","revenue":NaN} */
    static const unsigned char nan[] = {
        0x84, 0xa4, 't', 'y', 'p', 'e', 0xaa, 'c', 'o', 'n', 'v', 'e', 'r', 's', 'i', 'o', 'n',
        0xab, 'c', 'u', 's', 't', 'o', 'm', 'e', 'r', '_', 'i', 'd', 0xa1, 'n',
        0xab, 'c', 'a', 'm', 'p', 'a', 'i', 'g', 'n', '_', 'i', 'd', 0xa1, 'c',
        0xa7, 'r', 'e', 'v', 'e', 'n', 'u', 'e', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0 };
    cr_assert_eq(etfx_post(&srv, "application/msgpack", (const char *)nan, sizeof nan, &r), 400);
    cr_assert_str_eq(tfx_err_code(&r), "invalid_msgpack");
    tfx_resp_free(&r);
    /* NDJSON: a NaN, a broken line and a line over 64 KiB are reported by index */
    size_t big = 70000;
    char *nd = malloc(big + 400);
    int n = snprintf(nd, 400,
                     "{\"type\":\"click\",\"customer_id\":\"q\",\"campaign_id\":\"nd\"}\n"
                     "{\"type\":\"conversion\",\"customer_id\":\"q\",\"campaign_id\":\"nd\",\"revenue\":NaN}\n"
                     "{oops\n\n");
    memset(nd + n, ' ', big);
    nd[n] = '{';
    nd[n + big - 1] = '}';
    n += (int)big;
    n += snprintf(nd + n, 200, "\n{\"type\":\"click\",\"customer_id\":\"q\",\"campaign_id\":\"nd\"}\n");
    cr_assert_eq(etfx_post(&srv, "application/x-ndjson", nd, (size_t)n, &r), 200, "%s", r.body);
    free(nd);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 3);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.0.index")), 1);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.0.line")), 2);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "errors.0.code")), "invalid_json");
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.1.index")), 2);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.2.index")), 3);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.2.line")), 5);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "errors.2.code")), "line_too_long");
    tfx_resp_free(&r);
    cr_assert_eq(clicks_of("nd"), 2);
}

Test(events, oversized_bodies_are_refused_and_the_server_stays_up)
{
    /* just over max_import_body_mb = 4 */
    size_t n = (4u << 20) + 10;
    char *b = malloc(n);
    memset(b, ' ', n);
    b[0] = '[';
    b[n - 1] = ']';
    struct tfx_resp r;
    cr_assert_eq(etfx_post(&srv, "application/json", b, n, &r), 413, "%s", r.body);
    tfx_resp_free(&r);
    free(b);
    /* a 100 MB body */
    n = 100u << 20;
    b = malloc(n);
    memset(b, '\n', n);
    int st = etfx_post(&srv, "application/x-ndjson", b, n, &r);
    cr_assert(st == 413 || st == 0, "100 MB body answered %d", st);
    tfx_resp_free(&r);
    free(b);
    cr_assert(tfx_server_alive(&srv));
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
    tfx_resp_free(&r);
    /* a body of many small events under the limit is fine: 10,000 NDJSON lines,
     * more than one chunk, one bad line per thousand */
    struct buf_s { char *p; size_t len, cap; } nd = { malloc(2 << 20), 0, 2 << 20 };
    for (int i = 0; i < 10000; i++) {
        if (i % 1000 == 999)
            nd.len += (size_t)snprintf(nd.p + nd.len, nd.cap - nd.len, "{\"type\":\"click\"}\n");
        else
            nd.len += (size_t)snprintf(nd.p + nd.len, nd.cap - nd.len,
                                       "{\"type\":\"click\",\"customer_id\":\"bulk%d\",\"campaign_id\":\"bulk\"}\n",
                                       i % 300);
    }
    cr_assert_eq(etfx_post(&srv, "application/x-ndjson", nd.p, nd.len, &r), 200);
    free(nd.p);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 9990);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 10);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.9.index")), 9999);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.9.line")), 10000);
    tfx_resp_free(&r);
    cr_assert_eq(clicks_of("bulk"), 9990);
}

Test(events, event_ids_make_retries_idempotent)
{
    const char *batch = "[{\"type\":\"conversion\",\"customer_id\":\"i1\",\"campaign_id\":\"idem\",\"revenue\":10,"
                        "\"event_id\":\"order-1\"},"
                        "{\"type\":\"click\",\"customer_id\":\"i1\",\"campaign_id\":\"idem\",\"event_id\":\"clk-1\"},"
                        "{\"type\":\"click\",\"customer_id\":\"i1\",\"campaign_id\":\"idem\",\"event_id\":\"clk-1\"}]";
    struct tfx_resp r;
    cr_assert_eq(etfx_post(&srv, "application/json", batch, strlen(batch), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 1);
    tfx_resp_free(&r);
    /* the retry: all duplicates, still a success */
    cr_assert_eq(etfx_post(&srv, "application/json", batch, strlen(batch), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 0);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 3);
    tfx_resp_free(&r);
    json_t *a = etfx_get(&srv, "/api/v1/analytics/campaigns/idem");
    cr_assert_eq(etfx_int(a, "totals.clicks"), 1);
    cr_assert_eq(etfx_int(a, "totals.conversions"), 1);
    cr_assert_eq(etfx_num(a, "totals.revenue"), 10.0);
    json_decref(a);
}

/* An order from the shop knows no campaign: a conversion needs none, and
 * its order_id makes a second report of the same order a duplicate (a
 * retry, or the same order from two systems with different event ids). */
Test(events, conversions_need_no_campaign_and_order_ids_count_once)
{
    const char *batch =
        "[{\"type\":\"conversion\",\"customer_id\":\"o1\",\"revenue\":40,\"order_id\":\"ORD-7\"},"
        " {\"type\":\"conversion\",\"customer_id\":\"o1\",\"revenue\":40,\"order_id\":\"ORD-7\","
        "  \"event_id\":\"other-system-1\"},"
        " {\"type\":\"conversion\",\"customer_id\":\"o1\",\"revenue\":15,\"order_id\":\"ORD-8\"}]";
    struct tfx_resp r;
    cr_assert_eq(etfx_post(&srv, "application/json", batch, strlen(batch), &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 2, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 1, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(etfx_post(&srv, "application/json", batch, strlen(batch), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 0, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 3);
    tfx_resp_free(&r);
    /* stored as sent: no campaign, the order id kept */
    json_t *x = etfx_get(&srv, "/api/v1/profiles/o1/export");
    json_t *evs = json_object_get(x, "events");
    cr_assert_eq(json_array_size(evs), 2);
    cr_assert_str_eq(json_string_value(etfx_at(evs, "0.order_id")), "ORD-7");
    cr_assert_null(json_object_get(json_array_get(evs, 0), "campaign_id"));
    cr_assert_eq(etfx_num(x, "stats.revenue"), 55.0);
    json_decref(x);
}

struct par {
    int t;
    int dup;       /* every thread sends the same event ids */
    int ok, accepted, dups;
};

static void *par_main(void *arg)
{
    struct par *p = arg;
    for (int k = 0; k < 25; k++) {
        char body[8192];
        size_t n = 0;
        n += (size_t)snprintf(body + n, sizeof body - n, "[");
        for (int i = 0; i < 20; i++)
            n += (size_t)snprintf(body + n, sizeof body - n,
                                  "%s{\"type\":\"impression\",\"customer_id\":\"c%d\",\"campaign_id\":\"%s\","
                                  "\"event_id\":\"%s-%d-%d-%d\"}",
                                  i ? "," : "", i, p->dup ? "dup" : "par", p->dup ? "same" : "t",
                                  p->dup ? 0 : p->t, k, i);
        n += (size_t)snprintf(body + n, sizeof body - n, "]");
        struct tfx_resp r;
        if (etfx_post(&srv, "application/json", body, n, &r) == 200) {
            p->ok++;
            p->accepted += (int)json_integer_value(json_object_get(r.json, "accepted"));
            p->dups += (int)json_integer_value(json_object_get(r.json, "duplicates"));
        }
        tfx_resp_free(&r);
    }
    return NULL;
}

Test(events, nothing_lost_or_doubled_under_many_connections)
{
    pthread_t th[8];
    struct par ps[8];
    for (int dup = 0; dup < 2; dup++) {
        for (int t = 0; t < 8; t++) {
            ps[t] = (struct par){ t, dup, 0, 0, 0 };
            pthread_create(&th[t], NULL, par_main, &ps[t]);
        }
        int ok = 0, acc = 0, dups = 0;
        for (int t = 0; t < 8; t++) {
            pthread_join(th[t], NULL);
            ok += ps[t].ok;
            acc += ps[t].accepted;
            dups += ps[t].dups;
        }
        cr_assert_eq(ok, 200, "%d of 200 requests succeeded", ok);
        json_t *a = etfx_get(&srv, "/api/v1/analytics/campaigns/%s", dup ? "dup" : "par");
        if (!dup) {
            cr_assert_eq(acc, 4000);
            cr_assert_eq(etfx_int(a, "totals.impressions"), 4000);
            cr_assert_eq(etfx_int(a, "totals.unique_customers"), 20);
        } else {
            /* 8 threads sent the same 500 ids: each stored exactly once */
            cr_assert_eq(acc, 500, "accepted %d", acc);
            cr_assert_eq(dups, 3500);
            cr_assert_eq(etfx_int(a, "totals.impressions"), 500);
        }
        json_decref(a);
    }
}

Test(events, timestamps_iso_unix_and_late)
{
    long now = (long)time(NULL);
    char body[2048], day2[16], iso[64];
    long two_days_ago = now - 2 * 86400;
    etfx_day(two_days_ago, day2, sizeof day2);
    time_t t = (time_t)(now - 3600);
    struct tm tm;
    gmtime_r(&t, &tm);
    /* the same instant an hour ago, written in +02:00 with milliseconds */
    time_t t2 = t + 7200;
    struct tm tm2;
    gmtime_r(&t2, &tm2);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S.250+02:00", &tm2);
    snprintf(body, sizeof body,
             "[{\"type\":\"click\",\"customer_id\":\"t1\",\"campaign_id\":\"ts\",\"ts\":%ld},"
             " {\"type\":\"click\",\"customer_id\":\"t1\",\"campaign_id\":\"ts\",\"ts\":\"%s\"},"
             " {\"type\":\"click\",\"customer_id\":\"t1\",\"campaign_id\":\"ts\",\"ts\":%ld.5},"
             " {\"type\":\"click\",\"customer_id\":\"t1\",\"campaign_id\":\"ts\",\"ts\":%ld}]",
             two_days_ago, iso, now - 60, now + 200 /* within the 5 minutes of slack */);
    cr_assert_eq(etfx_ingest(&srv, body, 200), 4);
    json_t *a = etfx_get(&srv, "/api/v1/analytics/campaigns/ts?from=%s", day2);
    json_t *d = etfx_find(json_object_get(a, "by_day"), "day", day2);
    cr_assert(d, "no by_day entry for %s", day2);
    cr_assert_eq(json_integer_value(json_object_get(d, "clicks")), 1, "the late event is on its own day");
    cr_assert_eq(etfx_int(a, "totals.clicks"), 4);
    json_decref(a);
    /* the export shows the instants back, to the millisecond */
    json_t *x = etfx_get(&srv, "/api/v1/profiles/t1/export");
    json_t *evs = json_object_get(x, "events");
    cr_assert_eq(json_array_size(evs), 4);
    char want[64];
    strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S.250Z", &tm);
    int found = 0;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e) found |= !strcmp(json_string_value(json_object_get(e, "ts")), want);
    cr_assert(found, "no event at %s in %s", want, json_dumps(evs, 0));
    json_decref(x);
}

Test(events, stats_reach_rules_and_profiles)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                         "{\"customer_id\":\"s1\",\"channel\":\"web\",\"explain\":true}", &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "offers")), 0);
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "explain.0.reason")), "clicks: 0");
    tfx_resp_free(&r);
    etfx_ingest(&srv,
                "[{\"type\":\"click\",\"customer_id\":\"s1\",\"campaign_id\":\"x\"},"
                " {\"type\":\"click\",\"customer_id\":\"s1\",\"campaign_id\":\"x\"},"
                " {\"type\":\"wishlist\",\"customer_id\":\"s1\"},"
                " {\"type\":\"conversion\",\"customer_id\":\"s1\",\"campaign_id\":\"x\",\"revenue\":19.5},"
                " {\"type\":\"conversion\",\"customer_id\":\"s1\",\"campaign_id\":\"x\",\"revenue\":0.5}]",
                200);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"s1\",\"channel\":\"web\"}", &r),
                 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "offers")), 1, "%s", r.body);
    tfx_resp_free(&r);
    json_t *p = etfx_get(&srv, "/api/v1/profiles/s1/export");
    json_t *st = json_object_get(p, "stats");
    cr_assert_eq(etfx_int(st, "click"), 2);
    cr_assert_eq(etfx_int(st, "conversion"), 2);
    cr_assert_eq(etfx_int(st, "events"), 5);
    cr_assert_eq(etfx_int(st, "custom.wishlist"), 1);
    cr_assert_eq(etfx_num(st, "revenue"), 20.0);
    long now = (long)time(NULL);
    cr_assert(labs(etfx_int(st, "last_conversion") - now) < 30);
    cr_assert(labs(etfx_int(st, "last.wishlist") - now) < 30);
    cr_assert(etfx_int(st, "first_seen") <= etfx_int(st, "last_seen"));
    json_decref(p);
    /* a profile written later shows the stats too, and stats cannot be written */
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/s1", "{\"tier\":\"gold\"}", &r), 201);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "stats.click")), 2);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "PATCH", "/api/v1/profiles/s1", "{\"stats\":{\"click\":99}}", &r), 422);
    tfx_resp_free(&r);
}

Test(events, everything_survives_restart_and_sigkill)
{
    etfx_ingest(&srv,
                "[{\"type\":\"impression\",\"customer_id\":\"k1\",\"campaign_id\":\"keep\",\"event_id\":\"e1\"},"
                " {\"type\":\"conversion\",\"customer_id\":\"k1\",\"campaign_id\":\"keep\",\"revenue\":7,\"event_id\":\"e2\"}]",
                200);
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(tfx_server_start(&srv), 0);
    etfx_ingest(&srv, "{\"type\":\"click\",\"customer_id\":\"k1\",\"campaign_id\":\"keep\",\"event_id\":\"e3\"}", 200);
    tfx_server_kill(&srv); /* SIGKILL right after the answer */
    cr_assert_eq(tfx_server_start(&srv), 0);
    json_t *a = etfx_get(&srv, "/api/v1/analytics/campaigns/keep");
    cr_assert_eq(etfx_int(a, "totals.impressions"), 1);
    cr_assert_eq(etfx_int(a, "totals.clicks"), 1);
    cr_assert_eq(etfx_int(a, "totals.conversions"), 1);
    cr_assert_eq(etfx_num(a, "totals.revenue"), 7.0);
    json_decref(a);
    json_t *x = etfx_get(&srv, "/api/v1/profiles/k1/export");
    cr_assert_eq(json_array_size(json_object_get(x, "events")), 3);
    cr_assert_eq(etfx_int(x, "stats.events"), 3);
    json_decref(x);
    /* ids survive too: the retry after the crash is a duplicate */
    struct tfx_resp r;
    const char *retry = "{\"type\":\"click\",\"customer_id\":\"k1\",\"campaign_id\":\"keep\",\"event_id\":\"e3\"}";
    cr_assert_eq(etfx_post(&srv, "application/json", retry, strlen(retry), &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 1);
    tfx_resp_free(&r);
}

Test(events, a_large_array_spans_chunks)
{
    /* 9,000 events in one JSON array (three write transactions), the last
     * hundred invalid */
    size_t cap = 9000 * 90 + 16, n = 0;
    char *b = malloc(cap);
    n += (size_t)snprintf(b, cap, "[");
    for (int i = 0; i < 9000; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s{\"type\":\"click\",\"customer_id\":\"%s%d\",\"campaign_id\":\"arr\"}",
                              i ? "," : "", i < 8900 ? "a" : "bad id ", i % 500);
    n += (size_t)snprintf(b + n, cap - n, "]");
    struct tfx_resp r;
    cr_assert_eq(etfx_post(&srv, "application/json", b, n, &r), 200);
    free(b);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 8900);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rejected")), 100);
    cr_assert_eq(json_integer_value(etfx_at(r.json, "errors.0.index")), 8900);
    tfx_resp_free(&r);
    cr_assert_eq(clicks_of("arr"), 8900);
}

/* --- roles: events need `decide`, analytics `marketer`, compaction `admin` */

static struct tfx_server ksrv;

static void ksetup(void)
{
    tfx_server_init(&ksrv, "api_keys = { { id = 'site', key = 'k-site-12345', role = 'decide' },\n"
                           "  { id = 'mkt', key = 'k-mkt-12345', role = 'marketer' },\n"
                           "  { id = 'ops', key = 'k-ops-12345', role = 'admin' } },");
    cr_assert_eq(tfx_server_start(&ksrv), 0, "server did not start");
}

static void kteardown(void) { tfx_server_cleanup(&ksrv); }

TestSuite(events_roles, .init = ksetup, .fini = kteardown, .timeout = 60);

static int with_key(const char *key, const char *method, const char *path, const char *body)
{
    char h[200];
    snprintf(h, sizeof h, "Content-Type: application/json\r\n%s%s%s", key ? "Authorization: Bearer " : "",
             key ? key : "", key ? "\r\n" : "");
    struct tfx_resp r;
    int st = tfx_http(&ksrv, method, path, h, body, body ? strlen(body) : 0, &r);
    if (st >= 400)
        cr_assert(json_is_string(etfx_at(r.json, "error.code")), "%d without the error shape: %s", st, r.body);
    tfx_resp_free(&r);
    return st;
}

Test(events_roles, each_route_needs_its_role)
{
    const char *ev = "{\"type\":\"click\",\"customer_id\":\"r\",\"campaign_id\":\"roles\"}";
    cr_assert_eq(with_key(NULL, "POST", "/api/v1/events", ev), 401);
    cr_assert_eq(with_key("wrong", "POST", "/api/v1/events", ev), 401);
    cr_assert_eq(with_key("k-site-12345", "POST", "/api/v1/events", ev), 200);
    cr_assert_eq(with_key("k-site-12345", "GET", "/api/v1/analytics/campaigns/roles", NULL), 403);
    cr_assert_eq(with_key("k-mkt-12345", "GET", "/api/v1/analytics/campaigns/roles", NULL), 200);
    cr_assert_eq(with_key("k-mkt-12345", "GET", "/api/v1/analytics/dashboard", NULL), 200);
    cr_assert_eq(with_key("k-mkt-12345", "POST", "/api/v1/analytics/reports", "{}"), 200);
    cr_assert_eq(with_key("k-mkt-12345", "GET", "/api/v1/analytics/attribution", NULL), 200);
    cr_assert_eq(with_key("k-mkt-12345", "GET", "/api/v1/analytics/roi", NULL), 200);
    cr_assert_eq(with_key("k-mkt-12345", "POST", "/api/v1/admin/compact", NULL), 403);
    cr_assert_eq(with_key("k-ops-12345", "POST", "/api/v1/admin/compact", NULL), 200);
}
