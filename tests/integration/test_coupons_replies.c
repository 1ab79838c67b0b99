/*
 * test_coupons_replies.c — the checkout's validate and redeem read their
 * body in place (codec/jscan) and write their reply with the emitter
 * (codec/emit) instead of jansson.  These tests pin down that nothing a
 * client sees changed: every reply is byte for byte what jansson's compact
 * dump of the same object gives (the old reply path), members in the
 * documented order, the msgpack form decodes to the same object, and every
 * refusal of a body keeps the error shape, the code and the field it had.
 */
#include "coupons_tfx.h"
#include "codec/codec.h"

static void teardown(void)
{
    tfx_server_cleanup(&srv);
}

/* One request, sent once: the server answers every request (the lost
 * answers of issue 13 are fixed, docs/security.md), so one that got no
 * whole answer fails the test with its cause (tfx_fail_describe). */
static int req(const char *method, const char *path, const char *headers, const char *body,
               size_t len, struct tfx_resp *r)
{
    tfx_http(&srv, method, path, headers, body, len, r);
    if (r->status == 0 || r->fail != TFX_FAIL_NONE) {
        char why[200];
        tfx_fail_describe(r, why, sizeof why);
        cr_assert_fail("%s %s got no whole answer: %s", method, path, why);
    }
    return r->status;
}

static int req_json(const char *method, const char *path, const char *json, struct tfx_resp *r)
{
    return req(method, path, json ? "Content-Type: application/json\r\n" : NULL, json,
               json ? strlen(json) : 0, r);
}

TestSuite(coupons_replies, .fini = teardown, .timeout = 120);

#define NO_VELOCITY "coupon_velocity_customer = false, coupon_velocity_prefix = false,\n"
#define V "/api/v1/coupons/validate"
#define R "/api/v1/coupons/redeem"

/* the reply is jansson's compact dump of itself plus a newline (what the
 * old path sent), and its members are `keys`, in that order */
static void same_bytes(const struct tfx_resp *r, const char *const *keys)
{
    cr_assert_not_null(r->json, "not JSON: %s", r->body);
    char *d = json_dumps(r->json, JSON_COMPACT | JSON_REAL_PRECISION(15));
    cr_assert_not_null(d);
    size_t n = strlen(d);
    cr_assert_eq(r->len, n + 1, "length %zu, jansson's %zu: %s", r->len, n + 1, r->body);
    cr_assert(memcmp(r->body, d, n) == 0 && r->body[n] == '\n', "reply %s\njansson %s", r->body, d);
    free(d);
    const char *k;
    json_t *v;
    size_t i = 0;
    json_object_foreach(r->json, k, v) {
        cr_assert_not_null(keys[i], "extra member \"%s\" in %s", k, r->body);
        cr_assert_str_eq(k, keys[i], "member %zu: \"%s\", expected \"%s\" in %s", i, k, keys[i], r->body);
        i++;
    }
    cr_assert_null(keys[i], "member \"%s\" missing in %s", keys[i], r->body);
}

/* the same request asking for msgpack decodes to `want` */
static void same_msgpack(const char *path, const char *body, const json_t *want)
{
    struct tfx_resp r;
    req("POST", path, "Accept: application/msgpack\r\nContent-Type: application/json\r\n", body,
        strlen(body), &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.ctype, "msgpack"), "%s", r.ctype);
    int err = 0;
    json_t *mp = codec_msgpack_to_json(r.body, r.len, &err);
    cr_assert_not_null(mp, "msgpack reply does not decode (%d)", err);
    char *a = json_dumps(mp, JSON_COMPACT), *b = json_dumps(want, JSON_COMPACT);
    cr_assert(json_equal(mp, (json_t *)want), "msgpack %s\njson %s", a, b);
    free(a);
    free(b);
    json_decref(mp);
    tfx_resp_free(&r);
}

static const char *const budget_keys[] = { "currency", "amount", "per", "spent", "remaining", NULL };

Test(coupons_replies, success_replies_are_the_bytes_jansson_wrote)
{
    tfx_server_init(&srv, "test_clock = true,\n" NO_VELOCITY);
    ctfx_campaign("cb", "budget = { amount = 100, currency = \"EUR\" },");
    ctfx_campaign("plain", NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    struct tfx_resp r;
    cr_assert_eq(req_json("GET", "/api/v1/admin/clock", NULL, &r), 200);
    long long now = json_integer_value(json_object_get(r.json, "now"));
    tfx_resp_free(&r);
    char more[256];
    snprintf(more, sizeof more,
             "\"shared\":true,\"max_uses\":5,\"per_customer\":2,\"valid_from\":%lld,\"valid_until\":%lld,"
             "\"discount\":{\"percent\":12.5,\"label\":\"\\u00e9t\\u00e9 \\\"10\\\"\\tnow\",\"tiers\":[1,2.25,null,true]}",
             now - 10, now + 1000);
    json_t *g = ctfx_generate("cb", 1, more);
    const char *code = ctfx_code(g, 0);

    /* validate: every optional member present */
    char vb[512];
    snprintf(vb, sizeof vb, "{\"code\":\"%s\",\"customer_id\":\"ann\",\"amount\":12.345,\"currency\":\"EUR\"}",
             code);
    static const char *const vkeys[] = { "valid", "code", "campaign_id", "pool", "uses", "max_uses",
                                         "per_customer", "valid_from", "valid_until", "customer_uses",
                                         "discount", "budget", NULL };
    cr_assert_eq(req_json("POST", V, vb, &r), 200, "%s", r.body);
    same_bytes(&r, vkeys);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "discount"), "label")),
                     "\xc3\xa9t\xc3\xa9 \"10\"\tnow");
    same_msgpack(V, vb, r.json);
    tfx_resp_free(&r);

    /* redeem: a real amount, the budget's money as reals */
    char rb[512];
    snprintf(rb, sizeof rb,
             "{\"code\":\"%s\",\"customer_id\":\"ann\",\"order_id\":\"o-1\",\"amount\":12.345,\"currency\":\"EUR\"}",
             code);
    static const char *const rkeys[] = { "redeemed", "replayed", "code", "campaign_id", "pool", "uses",
                                         "max_uses", "per_customer", "valid_from", "valid_until",
                                         "order_id", "customer_id", "amount", "currency",
                                         "customer_uses", "budget", NULL };
    cr_assert_eq(req_json("POST", R, rb, &r), 200, "%s", r.body);
    same_bytes(&r, rkeys);
    cr_assert(json_is_false(json_object_get(r.json, "replayed")), "%s", r.body);
    cr_assert_eq(ctfx_milli(json_object_get(r.json, "amount")), 12345, "%s", r.body);
    json_t *bud = json_object_get(r.json, "budget");
    cr_assert_eq(ctfx_milli(json_object_get(bud, "spent")), 12345, "%s", r.body);
    cr_assert_eq(ctfx_milli(json_object_get(bud, "remaining")), 87655, "%s", r.body);
    cr_assert(json_is_integer(json_object_get(bud, "amount")), "a whole amount stays an integer: %s", r.body);
    {
        const char *k;
        json_t *v;
        size_t i = 0;
        json_object_foreach(bud, k, v) {
            cr_assert_not_null(budget_keys[i], "%s", r.body);
            cr_assert_str_eq(k, budget_keys[i], "%s", r.body);
            i++;
        }
        cr_assert_null(budget_keys[i], "%s", r.body);
    }
    tfx_resp_free(&r);
    /* the replay, in both wire forms: the first answer's facts, without
     * the budget (a replay reserves nothing) */
    static const char *const rkeys_replay[] = { "redeemed", "replayed", "code", "campaign_id", "pool",
                                                "uses", "max_uses", "per_customer", "valid_from",
                                                "valid_until", "order_id", "customer_id", "amount",
                                                "currency", "customer_uses", NULL };
    cr_assert_eq(req_json("POST", R, rb, &r), 200, "%s", r.body);
    same_bytes(&r, rkeys_replay);
    cr_assert(json_is_true(json_object_get(r.json, "replayed")), "%s", r.body);
    same_msgpack(R, rb, r.json);
    tfx_resp_free(&r);

    /* no window, no limits, no budget: those members absent or null */
    json_t *g2 = ctfx_generate("plain", 1, "\"shared\":true,\"max_uses\":0,\"per_customer\":0");
    snprintf(rb, sizeof rb,
             "{\"code\":\"%s\",\"customer_id\":\"bob\",\"order_id\":\"o-2\",\"amount\":3,\"currency\":\"USD\"}",
             ctfx_code(g2, 0));
    static const char *const rkeys2[] = { "redeemed", "replayed", "code", "campaign_id", "pool",
                                          "uses", "max_uses", "per_customer", "order_id",
                                          "customer_id", "amount", "currency", "customer_uses", NULL };
    cr_assert_eq(req_json("POST", R, rb, &r), 200, "%s", r.body);
    same_bytes(&r, rkeys2);
    cr_assert(json_is_null(json_object_get(r.json, "max_uses")), "%s", r.body);
    cr_assert(json_is_null(json_object_get(r.json, "per_customer")), "%s", r.body);
    cr_assert(json_is_integer(json_object_get(r.json, "amount")), "%s", r.body);
    tfx_resp_free(&r);
    snprintf(vb, sizeof vb, "{\"code\":\"%s\",\"customer_id\":\"bob\"}", ctfx_code(g2, 0));
    static const char *const vkeys2[] = { "valid", "code", "campaign_id", "pool", "uses", "max_uses",
                                          "per_customer", "customer_uses", NULL };
    cr_assert_eq(req_json("POST", V, vb, &r), 200, "%s", r.body);
    same_bytes(&r, vkeys2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "customer_uses")), 1, "%s", r.body);
    tfx_resp_free(&r);
    json_decref(g);
    json_decref(g2);
}

/* one refusal: status, the error object's members exactly, code, field */
static void refused(const char *path, const char *body, size_t len, const char *headers, int status,
                    const char *code, const char *field)
{
    struct tfx_resp r;
    req("POST", path, headers ? headers : "Content-Type: application/json\r\n", body, len, &r);
    cr_assert_eq(r.status, status, "%s %s → %d %s", path, body ? body : "", r.status, r.body);
    static const char *const top[] = { "error", NULL };
    same_bytes(&r, top);
    json_t *e = json_object_get(r.json, "error");
    const char *k;
    json_t *v;
    static const char *const ekeys[] = { "code", "message", "field", NULL };
    size_t i = 0;
    json_object_foreach(e, k, v) {
        cr_assert_not_null(ekeys[i], "%s", r.body);
        cr_assert_str_eq(k, ekeys[i], "%s", r.body);
        i++;
    }
    cr_assert_null(ekeys[i], "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), code, "%s", r.body);
    cr_assert(json_string_length(json_object_get(e, "message")) > 0, "%s", r.body);
    if (field)
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")) ?: "(null)", field, "%s", r.body);
    else
        cr_assert(json_is_null(json_object_get(e, "field")), "%s", r.body);
    tfx_resp_free(&r);
}

static void refused_json(const char *path, const char *body, int status, const char *code,
                         const char *field)
{
    refused(path, body, strlen(body), NULL, status, code, field);
}

Test(coupons_replies, bodies_read_in_place_keep_every_rule_and_refusal)
{
    tfx_server_init(&srv, NO_VELOCITY);
    ctfx_campaign("in", "budget = { amount = 100, currency = \"EUR\" },");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    json_t *g = ctfx_generate("in", 4, "\"max_uses\":1");
    const char *c0 = ctfx_code(g, 0), *c1 = ctfx_code(g, 1), *c2 = ctfx_code(g, 2);
    char b[768];

    /* every 400 of a body, for redeem and validate, changes nothing */
    for (int pass = 0; pass < 2; pass++) {
        const char *p = pass ? V : R;
        const char *ord = pass ? "" : "\"order_id\":\"o\",";
        snprintf(b, sizeof b, "{\"zz\":1,\"code\":\"%s\",\"aa\":2}", c0);
        refused_json(p, b, 400, "unknown_field", "zz"); /* the first unknown member, in body order */
        snprintf(b, sizeof b, "{\"customer_id\":\"a\",%s\"amount\":1,\"currency\":\"EUR\"}", ord);
        refused_json(p, b, 400, "missing_field", "code");
        snprintf(b, sizeof b, "{\"code\":null,\"customer_id\":\"a\",%s\"amount\":1,\"currency\":\"EUR\"}", ord);
        refused_json(p, b, 400, "missing_field", "code");
        snprintf(b, sizeof b, "{\"code\":5,\"customer_id\":\"a\",%s\"amount\":1,\"currency\":\"EUR\"}", ord);
        refused_json(p, b, 400, "invalid_field", "code");
        snprintf(b, sizeof b, "{\"code\":\"\",\"customer_id\":\"a\",%s\"amount\":1,\"currency\":\"EUR\"}", ord);
        refused_json(p, b, 400, "invalid_field", "code");
        snprintf(b, sizeof b, "{\"code\":\"%s\",%s\"amount\":1,\"currency\":\"EUR\"}", c0, ord);
        refused_json(p, b, 400, "missing_field", "customer_id");
        snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a b\",%s\"amount\":1,\"currency\":\"EUR\"}", c0, ord);
        refused_json(p, b, 400, "invalid_field", "customer_id");
        snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":[\"a\"],%s\"amount\":1,\"currency\":\"EUR\"}", c0, ord);
        refused_json(p, b, 400, "invalid_field", "customer_id");
        static const char *amounts[] = { "\"1\"", "0", "-1", "1.0001", "1e300", "true", "[]" };
        for (size_t i = 0; i < sizeof amounts / sizeof *amounts; i++) {
            snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",%s\"amount\":%s,\"currency\":\"EUR\"}",
                     c0, ord, amounts[i]);
            refused_json(p, b, 400, "invalid_field", "amount");
        }
        static const char *curs[] = { "\"eur\"", "\"EURO\"", "\"\"", "7", "{}" };
        for (size_t i = 0; i < sizeof curs / sizeof *curs; i++) {
            snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",%s\"amount\":1,\"currency\":%s}",
                     c0, ord, curs[i]);
            refused_json(p, b, 400, "invalid_field", "currency");
        }
        refused_json(p, "{\"code\":", 400, "invalid_json", NULL);
        refused_json(p, "{\"code\":\"a\\u0000b\"}", 400, "invalid_json", NULL);
        refused_json(p, "[1,2]", 400, "invalid_body", NULL);
        refused(p, NULL, 0, NULL, 400, "empty_body", NULL);
        refused(p, "\x81\xa4", 2, "Content-Type: application/msgpack\r\n", 400, "invalid_msgpack", NULL);
    }
    /* what only redeem requires, and what only it knows */
    snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",\"amount\":1,\"currency\":\"EUR\"}", c0);
    refused_json(R, b, 400, "missing_field", "order_id");
    snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",\"order_id\":\"o\",\"currency\":\"EUR\"}", c0);
    refused_json(R, b, 400, "missing_field", "amount");
    snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",\"order_id\":\"o\",\"amount\":1}", c0);
    refused_json(R, b, 400, "missing_field", "currency");
    snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",\"order_id\":\"o o\",\"amount\":1,\"currency\":\"EUR\"}", c0);
    refused_json(R, b, 400, "invalid_field", "order_id");
    snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",\"order_id\":\"o\"}", c0);
    refused_json(V, b, 400, "unknown_field", "order_id");
    char longcode[400];
    memset(longcode, 'A', 300);
    longcode[300] = 0;
    snprintf(b, sizeof b, "{\"code\":\"%s\",\"customer_id\":\"a\",\"order_id\":\"o\",\"amount\":1,\"currency\":\"EUR\"}", longcode);
    refused_json(R, b, 400, "invalid_field", "code");
    json_t *s = ctfx_stats("in");
    cr_assert_eq(json_integer_value(json_object_get(s, "redeemed")), 0, "%s", json_dumps(s, 0));
    json_decref(s);

    /* what the reader accepts: a repeated member (the last counts), escapes
     * in strings, exponents, whitespace, a msgpack body */
    struct tfx_resp r;
    snprintf(b, sizeof b,
             " {\"amount\":999, \"code\" : \"%s\",\"customer_id\":\"\\u0063ust\",\"order_id\":\"o\\u002d1\","
             "\"currency\":\"EUR\",\"amount\":2.5e0 }\n",
             c1);
    cr_assert_eq(req_json("POST", R, b, &r), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "customer_id")), "cust", "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "order_id")), "o-1", "%s", r.body);
    cr_assert_eq(ctfx_milli(json_object_get(r.json, "amount")), 2500, "%s", r.body);
    tfx_resp_free(&r);
    json_t *mb = json_pack("{s:s, s:s, s:s, s:i, s:s}", "code", c2, "customer_id", "mp", "order_id",
                           "o2", "amount", 4, "currency", "EUR");
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(mb, &mp), 0);
    req("POST", R, "Content-Type: application/msgpack\r\n", mp.p, mp.len, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "order_id")), "o2", "%s", r.body);
    cr_assert_eq(ctfx_milli(json_object_get(r.json, "amount")), 4000, "%s", r.body);
    tfx_resp_free(&r);
    buf_free(&mp);
    json_decref(mb);
    s = ctfx_stats("in");
    cr_assert_eq(json_integer_value(json_object_get(s, "redeemed")), 2, "%s", json_dumps(s, 0));
    cr_assert_eq(ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent")), 6500, "%s",
                 json_dumps(s, 0));
    json_decref(s);
    json_decref(g);
}
