/*
 * test_promotions.c — the promotions' edges on the real server: 429 from
 * the request rate limits (per key, per address) and the coupon velocity
 * limits (per customer, per code prefix), in the contract's error shape
 * and counted in /metrics; which role may call what; a customer's coupons
 * and points in the export and gone after erasure.
 */
#include "coupons_tfx.h"

static void teardown(void) { tfx_server_cleanup(&srv); }

static void go(void) { cr_assert_eq(tfx_server_start(&srv), 0, "server did not start"); }

TestSuite(promotions, .fini = teardown, .timeout = 120);

static int req_as(const char *key, const char *method, const char *path, const char *body,
                  struct tfx_resp *r)
{
    char h[128];
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", key);
    return tfx_http(&srv, method, path, h, body, body ? strlen(body) : 0, r);
}

/* a 429 in the contract's shape: {"error": {"code", "message", "field",
 * "retry_after"}} with a Retry-After header */
static void assert_429(struct tfx_resp *r, const char *code, const char *field)
{
    cr_assert_eq(r->status, 429, "%d %s", r->status, r->body);
    json_t *e = json_object_get(r->json, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), code, "%s", r->body);
    cr_assert(json_is_string(json_object_get(e, "message")), "%s", r->body);
    if (field)
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")), field, "%s", r->body);
    else
        cr_assert(json_is_null(json_object_get(e, "field")), "%s", r->body);
    json_int_t wait = json_integer_value(json_object_get(e, "retry_after"));
    cr_assert_geq(wait, 1, "%s", r->body);
    char want[64];
    snprintf(want, sizeof want, "Retry-After: %lld", (long long)wait);
    cr_assert(strcasestr(r->headers, want), "no %s in\n%s", want, r->headers);
}

static double metric(const char *name, const char *labels)
{
    struct tfx_resp m;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &m), 200);
    double v = -1;
    cr_assert(tfx_metric(m.body, name, labels, &v), "no %s{%s} in /metrics", name, labels);
    tfx_resp_free(&m);
    return v;
}

Test(promotions, rate_limit_per_address_answers_429)
{
    tfx_server_init(&srv, "rate_limit_per_address = { 5, \"1h\" },");
    go();
    struct tfx_resp r;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200, "request %d: %s", i, r.body);
        tfx_resp_free(&r);
    }
    tfx_req(&srv, "POST", "/api/v1/coupons/validate", "{\"code\":\"ABCD\",\"customer_id\":\"a\"}", &r);
    assert_429(&r, "rate_limited", NULL);
    tfx_resp_free(&r);
    /* health and metrics stay reachable */
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(metric("promod_rate_limited_total", "limit=\"address\""), 1);
}

Test(promotions, rate_limit_per_key_answers_429)
{
    tfx_server_init(&srv, "rate_limit_per_key = { 3, \"1h\" },\n"
                          "api_keys = { { id = \"shop\", key = \"shop-key-123\", role = \"checkout\" },\n"
                          "             { id = \"ops\", key = \"ops-key-12345\", role = \"admin\" } },");
    go();
    struct tfx_resp r;
    for (int i = 0; i < 3; i++) {
        req_as("shop-key-123", "GET", "/api/v1/loyalty/c1", NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        tfx_resp_free(&r);
    }
    req_as("shop-key-123", "GET", "/api/v1/loyalty/c1", NULL, &r);
    assert_429(&r, "rate_limited", NULL);
    tfx_resp_free(&r);
    req_as("ops-key-12345", "GET", "/api/v1/loyalty/c1", NULL, &r); /* another key: its own bucket */
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    /* an unknown key is refused before it could spend anybody's tokens */
    req_as("nobody-key-1", "GET", "/api/v1/loyalty/c1", NULL, &r);
    cr_assert_eq(r.status, 401);
    tfx_resp_free(&r);
    struct tfx_resp m;
    req_as("ops-key-12345", "GET", "/metrics", NULL, &m);
    double v = 0;
    cr_assert(tfx_metric(m.body, "promod_rate_limited_total", "limit=\"key\"", &v));
    cr_assert_eq(v, 1);
    tfx_resp_free(&m);
}

Test(promotions, coupon_velocity_limits_per_customer_and_prefix)
{
    tfx_server_init(&srv, "coupon_velocity_customer = { 3, \"1h\" },\n"
                          "coupon_velocity_prefix = { 4, \"1h\" }, coupon_prefix_len = 5,");
    ctfx_campaign("vel", NULL);
    go();
    json_t *g = ctfx_generate("vel", 1, "\"shared\":true,\"max_uses\":0,\"per_customer\":0");
    const char *code = ctfx_code(g, 0);
    struct tfx_resp r;
    for (int i = 0; i < 3; i++) {
        ctfx_post(&r, "POST", "/api/v1/coupons/validate", "{\"code\":\"%s\",\"customer_id\":\"eve\"}", code);
        cr_assert_eq(r.status, 200, "%s", r.body);
        tfx_resp_free(&r);
    }
    ctfx_post(&r, "POST", "/api/v1/coupons/validate", "{\"code\":\"%s\",\"customer_id\":\"eve\"}", code);
    assert_429(&r, "too_many_attempts", "customer_id");
    tfx_resp_free(&r);
    /* guessing: unknown codes under one prefix, from different customers */
    for (int i = 0; i < 4; i++) {
        ctfx_post(&r, "POST", "/api/v1/coupons/redeem",
                  "{\"code\":\"GUESS-%04d\",\"customer_id\":\"g%d\",\"order_id\":\"o%d\",\"amount\":1,"
                  "\"currency\":\"EUR\"}", i, i, i);
        cr_assert_eq(r.status, 404, "%s", r.body);
        tfx_resp_free(&r);
    }
    ctfx_post(&r, "POST", "/api/v1/coupons/redeem",
              "{\"code\":\"GUESS-9999\",\"customer_id\":\"g9\",\"order_id\":\"o9\",\"amount\":1,"
              "\"currency\":\"EUR\"}");
    assert_429(&r, "too_many_attempts", "code");
    tfx_resp_free(&r);
    /* a good code of another prefix still passes for a fresh customer */
    ctfx_post(&r, "POST", "/api/v1/coupons/validate", "{\"code\":\"%s\",\"customer_id\":\"fay\"}", code);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(metric("promod_coupon_velocity_limited_total", "limit=\"customer\""), 1);
    cr_assert_eq(metric("promod_coupon_velocity_limited_total", "limit=\"code_prefix\""), 1);
    json_decref(g);
}

Test(promotions, roles_decide_checkout_marketer)
{
    tfx_server_init(&srv, "coupon_velocity_customer = false,\n"
                          "api_keys = { { id = \"site\", key = \"site-key-123\", role = \"decide\" },\n"
                          "             { id = \"shop\", key = \"shop-key-123\", role = \"checkout\" },\n"
                          "             { id = \"mkt\", key = \"mkt-key-1234\", role = \"marketer\" } },");
    ctfx_campaign("roles", NULL);
    go();
    struct tfx_resp r;
    static const char gen[] = "{\"generate\":{\"count\":2,\"length\":10}}";
    req_as("shop-key-123", "POST", "/api/v1/campaigns/roles/coupons", gen, &r);
    cr_assert_eq(r.status, 403, "a checkout key made codes: %s", r.body);
    tfx_resp_free(&r);
    req_as("mkt-key-1234", "POST", "/api/v1/campaigns/roles/coupons", gen, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char code[32];
    snprintf(code, sizeof code, "%s", json_string_value(json_array_get(json_object_get(r.json, "codes"), 0)));
    tfx_resp_free(&r);
    char body[256];
    snprintf(body, sizeof body, "{\"code\":\"%s\",\"customer_id\":\"c1\",\"order_id\":\"o1\",\"amount\":2,"
                                "\"currency\":\"EUR\"}", code);
    req_as("site-key-123", "POST", "/api/v1/coupons/redeem", body, &r);
    cr_assert_eq(r.status, 403, "a website's decide key redeemed: %s", r.body);
    tfx_resp_free(&r);
    req_as("site-key-123", "POST", "/api/v1/coupons/validate", "{\"code\":\"ABCD\",\"customer_id\":\"c1\"}", &r);
    cr_assert_eq(r.status, 403, "a decide key may probe codes: %s", r.body);
    tfx_resp_free(&r);
    req_as("shop-key-123", "POST", "/api/v1/coupons/redeem", body, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    req_as("shop-key-123", "POST", "/api/v1/decide", "{\"customer_id\":\"c1\",\"channel\":\"web\"}", &r);
    cr_assert_eq(r.status, 200, "checkout includes decide: %s", r.body);
    tfx_resp_free(&r);
    /* loyalty: the shop earns and burns; adjusting is for marketers */
    req_as("shop-key-123", "POST", "/api/v1/loyalty/c1/transactions",
           "{\"type\":\"earn\",\"points\":10,\"transaction_id\":\"t1\"}", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    req_as("shop-key-123", "POST", "/api/v1/loyalty/c1/transactions",
           "{\"type\":\"adjust\",\"points\":5,\"transaction_id\":\"t2\"}", &r);
    cr_assert_eq(r.status, 403, "%s", r.body);
    cr_assert_str_eq(tfx_err_code(&r), "forbidden");
    tfx_resp_free(&r);
    req_as("mkt-key-1234", "POST", "/api/v1/loyalty/c1/transactions",
           "{\"type\":\"adjust\",\"points\":5,\"transaction_id\":\"t2\"}", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "balance")), 15);
    tfx_resp_free(&r);
    req_as("site-key-123", "GET", "/api/v1/loyalty/c1", NULL, &r);
    cr_assert_eq(r.status, 403, "%s", r.body);
    tfx_resp_free(&r);
}

Test(promotions, export_and_erase_cover_coupons_and_points)
{
    tfx_server_init(&srv, "coupon_velocity_customer = false,");
    ctfx_campaign("priv", "budget = { amount = 100, currency = \"EUR\" },");
    go();
    json_t *g = ctfx_generate("priv", 3, NULL);
    struct tfx_resp r;
    ctfx_post(&r, "POST", "/api/v1/campaigns/priv/coupons/assign", "{\"customer_id\":\"zoe\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    char code[32];
    snprintf(code, sizeof code, "%s", json_string_value(json_object_get(r.json, "code")));
    tfx_resp_free(&r);
    ctfx_post(&r, "POST", "/api/v1/coupons/redeem", "{\"code\":\"%s\",\"customer_id\":\"zoe\","
              "\"order_id\":\"z-1\",\"amount\":7.5,\"currency\":\"EUR\"}", code);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    ctfx_post(&r, "POST", "/api/v1/loyalty/zoe/transactions",
              "{\"type\":\"earn\",\"points\":120,\"transaction_id\":\"z-1\",\"reason\":\"order z-1\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    ctfx_post(&r, "POST", "/api/v1/loyalty/zoe/transactions",
              "{\"type\":\"burn\",\"points\":20,\"transaction_id\":\"z-2\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    /* the export holds the assignment, the redemption and the ledger */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/zoe/export", NULL, &r), 200, "%s", r.body);
    json_t *cp = json_object_get(r.json, "coupons");
    json_t *a0 = json_array_get(json_object_get(cp, "assignments"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(a0, "code")), code, "%s", r.body);
    json_t *r0 = json_array_get(json_object_get(cp, "redemptions"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(r0, "order_id")), "z-1", "%s", r.body);
    cr_assert_eq(ctfx_milli(json_object_get(r0, "amount")), 7500);
    json_t *ly = json_object_get(r.json, "loyalty");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(ly, "summary"), "balance")), 100, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(ly, "entries")), 2, "%s", r.body);
    tfx_resp_free(&r);
    /* erase: nothing about zoe remains; the budget's arithmetic does */
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/zoe", NULL, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    tfx_req(&srv, "GET", "/api/v1/profiles/zoe/export", NULL, &r);
    cr_assert_eq(r.status, 404, "still exported after erasure: %s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/loyalty/zoe", NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "balance")), 0, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "history")), 0, "%s", r.body);
    tfx_resp_free(&r);
    ctfx_post(&r, "POST", "/api/v1/coupons/validate", "{\"code\":\"%s\",\"customer_id\":\"yan\"}", code);
    cr_assert_eq(r.status, 422, "an erased customer's code went to someone else: %s", r.body);
    cr_assert_str_eq(tfx_err_code(&r), "disabled");
    tfx_resp_free(&r);
    json_t *s = ctfx_stats("priv");
    cr_assert_eq(ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent")), 7500);
    json_decref(s);
    /* a rollback after erasure still returns the money */
    char rb[128];
    snprintf(rb, sizeof rb, "/api/v1/coupons/%s/rollback", code);
    ctfx_post(&r, "POST", rb, "{\"order_id\":\"z-1\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    s = ctfx_stats("priv");
    cr_assert_eq(ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent")), 0);
    json_decref(s);
    json_decref(g);
}

/* the offer's content of campaign `camp` in a decide reply, or NULL */
static json_t *offer_content(json_t *reply, const char *camp)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(reply, "offers"), i, o)
        if (!strcmp(json_string_value(json_object_get(o, "campaign_id")) ?: "", camp))
            return json_object_get(o, "content");
    return NULL;
}

static json_t *explain_of(json_t *reply, const char *camp)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(reply, "explain"), i, o)
        if (!strcmp(json_string_value(json_object_get(o, "campaign_id")) ?: "", camp))
            return o;
    return NULL;
}

Test(promotions, coupon_in_content_assigned_once_when_served)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "rules/codes.lua",
              "return { id = 'codes', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'Your code: {{ coupon }}',\n"
              "                                       plain_raw = '{{coupon|none}}', t = 'static' } } },\n"
              "  eligible = function() return true end }\n");
    go();
    json_t *g = ctfx_generate("codes", 2, NULL);
    struct tfx_resp r;
    /* a dry run shows no code and assigns none */
    tfx_req(&srv, "POST", "/api/v1/decide",
            "{\"customer_id\":\"c3\",\"channel\":\"web\",\"dry_run\":true,\"explain\":true}", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *c = offer_content(r.json, "codes");
    cr_assert_not_null(c, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(c, "plain_raw")), "none", "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(explain_of(r.json, "codes"), "coupon")),
                     "assigned when served (dry run)", "%s", r.body);
    tfx_resp_free(&r);
    json_t *s = ctfx_stats("codes");
    cr_assert_eq(json_integer_value(json_object_get(s, "assigned")), 0, "a dry run assigned a code");
    json_decref(s);
    /* served: a code, the same on the next decide */
    char first[32] = "";
    for (int i = 0; i < 3; i++) {
        tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"c1\",\"channel\":\"web\"}", &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        c = offer_content(r.json, "codes");
        cr_assert_not_null(c, "%s", r.body);
        const char *code = json_string_value(json_object_get(c, "plain_raw"));
        cr_assert(code && (!strcmp(code, ctfx_code(g, 0)) || !strcmp(code, ctfx_code(g, 1))), "%s", r.body);
        if (!i)
            snprintf(first, sizeof first, "%s", code);
        cr_assert_str_eq(code, first, "decide %d showed another code", i);
        char want[64];
        snprintf(want, sizeof want, "Your code: %s", first);
        cr_assert_str_eq(json_string_value(json_object_get(c, "headline")), want);
        cr_assert_str_eq(json_string_value(json_object_get(c, "t")), "static");
        tfx_resp_free(&r);
    }
    /* the dry run now shows c1's code too */
    tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"c1\",\"channel\":\"web\",\"dry_run\":true}", &r);
    cr_assert_str_eq(json_string_value(json_object_get(offer_content(r.json, "codes"), "plain_raw")), first);
    tfx_resp_free(&r);
    /* the second code to c2, then the pool is empty: no offer for c3 */
    tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"c2\",\"channel\":\"web\"}", &r);
    cr_assert_not_null(offer_content(r.json, "codes"), "%s", r.body);
    tfx_resp_free(&r);
    tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"c3\",\"channel\":\"web\",\"explain\":true}", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_null(offer_content(r.json, "codes"), "served without a code: %s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(explain_of(r.json, "codes"), "capped")),
                     "coupon pool exhausted", "%s", r.body);
    tfx_resp_free(&r);
    s = ctfx_stats("codes");
    cr_assert_eq(json_integer_value(json_object_get(s, "assigned")), 2);
    json_decref(s);
    cr_assert_eq(metric("promod_coupon_assignments_total", "outcome=\"pool_exhausted\""), 1);
    json_decref(g);
}
