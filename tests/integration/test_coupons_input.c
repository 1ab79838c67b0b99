/*
 * test_coupons_input.c — every refusal reason a checkout can meet, bad
 * input refused with the field named and nothing changed, rollback, and
 * import from CSV and NDJSON.
 */
#include "coupons_tfx.h"

static void teardown(void) { tfx_server_cleanup(&srv); }

#define NO_VELOCITY "coupon_velocity_customer = false, coupon_velocity_prefix = false,\n"

static void go(void) { cr_assert_eq(tfx_server_start(&srv), 0, "server did not start"); }

TestSuite(coupons_input, .fini = teardown, .timeout = 120);

static void expect(const char *method, const char *path, int status, const char *code,
                   const char *field, const char *body)
{
    struct tfx_resp r;
    tfx_req(&srv, method, path, body, &r);
    cr_assert_eq(r.status, status, "%s %s %s → %d %s", method, path, body, r.status, r.body);
    if (code) {
        cr_assert_str_eq(tfx_err_code(&r), code, "%s", r.body);
        json_t *err = json_object_get(r.json, "error");
        json_t *f = json_object_get(err, "field");
        if (field)
            cr_assert_str_eq(json_string_value(f) ? json_string_value(f) : "(null)", field, "%s", r.body);
        else
            cr_assert(json_is_null(f), "%s", r.body);
        cr_assert(json_is_string(json_object_get(err, "message")), "%s", r.body);
    }
    tfx_resp_free(&r);
}

static char *redeem_body(const char *code, const char *cust, const char *order, const char *amount,
                         const char *cur)
{
    static char b[512];
    snprintf(b, sizeof b,
             "{\"code\":\"%s\",\"customer_id\":\"%s\",\"order_id\":\"%s\",\"amount\":%s,"
             "\"currency\":\"%s\"}",
             code, cust, order, amount, cur);
    return b;
}

#define R "/api/v1/coupons/redeem"

Test(coupons_input, every_refusal_names_its_reason)
{
    tfx_server_init(&srv, "test_clock = true,\n" NO_VELOCITY);
    ctfx_campaign("reasons", "budget = { amount = 50, currency = \"EUR\" },");
    ctfx_campaign("paused", "status = \"paused\",");
    go();
    expect("POST", R, 404, "unknown_code", "code", redeem_body("NOPE-NOPE", "a", "o1", "1", "EUR"));
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/admin/clock", NULL, &r), 200);
    long long now = json_integer_value(json_object_get(r.json, "now"));
    tfx_resp_free(&r);
    char more[256];
    snprintf(more, sizeof more, "\"shared\":true,\"max_uses\":1,\"valid_until\":%lld", now + 100);
    json_t *exp = ctfx_generate("reasons", 1, more);
    snprintf(more, sizeof more, "\"shared\":true,\"valid_from\":%lld", now + 1000);
    json_t *later = ctfx_generate("reasons", 1, more);
    expect("POST", R, 422, "not_yet_valid", "code", redeem_body(ctfx_code(later, 0), "a", "o2", "1", "EUR"));
    /* one customer's code */
    json_t *free1 = ctfx_generate("reasons", 1, "\"max_uses\":1");
    ctfx_post(&r, "POST", "/api/v1/campaigns/reasons/coupons/assign", "{\"customer_id\":\"alice\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    char alices[32];
    snprintf(alices, sizeof alices, "%s", json_string_value(json_object_get(r.json, "code")));
    tfx_resp_free(&r);
    expect("POST", R, 422, "not_yours", "customer_id", redeem_body(alices, "bob", "o3", "1", "EUR"));
    /* currency and budget */
    expect("POST", R, 422, "currency_mismatch", "currency", redeem_body(alices, "alice", "o4", "1", "USD"));
    expect("POST", R, 422, "budget_exhausted", "amount", redeem_body(alices, "alice", "o5", "50.001", "EUR"));
    expect("POST", R, 200, NULL, NULL, redeem_body(alices, "alice", "o6", "10", "EUR"));
    /* the same order again: the same answer; with another amount: a conflict */
    ctfx_post(&r, "POST", R, "%s", redeem_body(alices, "alice", "o6", "10", "EUR"));
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "replayed")), "%s", r.body);
    tfx_resp_free(&r);
    expect("POST", R, 409, "order_conflict", "order_id", redeem_body(alices, "alice", "o6", "11", "EUR"));
    /* used up (single use), and per customer on a multi-use code */
    expect("POST", R, 422, "used_up", "code", redeem_body(alices, "alice", "o7", "1", "EUR"));
    json_t *multi = ctfx_generate("reasons", 1, "\"shared\":true,\"max_uses\":100,\"per_customer\":1");
    expect("POST", R, 200, NULL, NULL, redeem_body(ctfx_code(multi, 0), "carol", "o8", "1", "EUR"));
    expect("POST", R, 422, "customer_limit", "customer_id", redeem_body(ctfx_code(multi, 0), "carol", "o9", "1", "EUR"));
    /* a campaign that is not active */
    json_t *pz = ctfx_generate("paused", 1, NULL);
    expect("POST", R, 422, "not_eligible", "code", redeem_body(ctfx_code(pz, 0), "a", "o10", "1", "EUR"));
    /* rollback: the use and the money come back; the order cannot come back */
    char rb[128];
    snprintf(rb, sizeof rb, "/api/v1/coupons/%s/rollback", alices);
    expect("POST", rb, 404, "unknown_redemption", "order_id", "{\"order_id\":\"o-none\"}");
    expect("POST", "/api/v1/coupons/NOPE-NOPE/rollback", 404, "unknown_code", "code", "{\"order_id\":\"o6\"}");
    ctfx_post(&r, "POST", rb, "{\"order_id\":\"o6\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "uses")), 0);
    tfx_resp_free(&r);
    ctfx_post(&r, "POST", rb, "{\"order_id\":\"o6\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "replayed")));
    tfx_resp_free(&r);
    expect("POST", R, 409, "rolled_back", "order_id", redeem_body(alices, "alice", "o6", "10", "EUR"));
    json_t *s = ctfx_stats("reasons");
    cr_assert_eq(ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent")), 1000,
                 "only carol's 1 EUR stays spent: %s", json_dumps(s, 0));
    json_decref(s);
    /* validate says the same things without redeeming */
    char vb[256];
    snprintf(vb, sizeof vb, "{\"code\":\"%s\",\"customer_id\":\"carol\"}", ctfx_code(multi, 0));
    expect("POST", "/api/v1/coupons/validate", 422, "customer_limit", "customer_id", vb);
    /* expiry, last: the clock moves past it */
    ctfx_post(&r, "POST", "/api/v1/admin/clock", "{\"offset\": 200}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    expect("POST", R, 422, "expired", "code", redeem_body(ctfx_code(exp, 0), "a", "o11", "1", "EUR"));
    json_decref(exp);
    json_decref(free1);
    json_decref(later);
    json_decref(multi);
    json_decref(pz);
}

Test(coupons_input, bad_input_is_refused_and_changes_nothing)
{
    tfx_server_init(&srv, NO_VELOCITY);
    ctfx_campaign("bad", "budget = { amount = 100, currency = \"EUR\" },");
    go();
    json_t *g = ctfx_generate("bad", 1, "\"max_uses\":1");
    const char *code = ctfx_code(g, 0);
    static const char *amounts[] = { "0", "-5", "\"12\"", "1.2345", "1e300", "true", "{}" };
    for (size_t i = 0; i < sizeof amounts / sizeof *amounts; i++)
        expect("POST", R, 400, "invalid_field", "amount", redeem_body(code, "a", "o1", amounts[i], "EUR"));
    expect("POST", R, 400, "missing_field", "amount", redeem_body(code, "a", "o1", "null", "EUR"));
    expect("POST", R, 400, "invalid_field", "currency", redeem_body(code, "a", "o1", "1", "euro"));
    expect("POST", R, 400, "invalid_field", "code", redeem_body("a b", "a", "o1", "1", "EUR"));
    expect("POST", R, 400, "invalid_field", "customer_id", redeem_body(code, "a b", "o1", "1", "EUR"));
    expect("POST", R, 400, "invalid_field", "order_id", redeem_body(code, "a", "", "1", "EUR"));
    expect("POST", R, 400, "missing_field", "order_id",
           "{\"code\":\"XXXX\",\"customer_id\":\"a\",\"amount\":1,\"currency\":\"EUR\"}");
    expect("POST", R, 400, "unknown_field", "discount",
           "{\"code\":\"XXXX\",\"customer_id\":\"a\",\"order_id\":\"o\",\"amount\":1,"
           "\"currency\":\"EUR\",\"discount\":5}");
    expect("POST", R, 400, "invalid_json", NULL, "{\"code\":");
    /* NaN and infinity can be written in msgpack: amount = NaN, then +Inf */
    static const unsigned char nan_mp[] = {
        0x85, 0xa4, 'c', 'o', 'd', 'e', 0xa4, 'X', 'X', 'X', 'X', 0xab, 'c', 'u', 's', 't', 'o',
        'm', 'e', 'r', '_', 'i', 'd', 0xa1, 'a', 0xa8, 'o', 'r', 'd', 'e', 'r', '_', 'i', 'd', 0xa1,
        'o', 0xa6, 'a', 'm', 'o', 'u', 'n', 't', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0xa8, 'c', 'u',
        'r', 'r', 'e', 'n', 'c', 'y', 0xa3, 'E', 'U', 'R' };
    unsigned char inf_mp[sizeof nan_mp];
    memcpy(inf_mp, nan_mp, sizeof nan_mp);
    cr_assert_eq(inf_mp[45], 0xf8);
    inf_mp[45] = 0xf0; /* 0x7ff0000000000000 = +Inf */
    const unsigned char *mps[2] = { nan_mp, inf_mp };
    for (int i = 0; i < 2; i++) {
        struct tfx_resp r;
        tfx_http(&srv, "POST", R, "Content-Type: application/msgpack\r\n", (const char *)mps[i], sizeof nan_mp, &r);
        /* JSON cannot hold them: the decoder refuses the body before any
         * field is looked at (codec.h), so nothing can be applied */
        cr_assert_eq(r.status, 400, "%s", r.body);
        cr_assert_str_eq(tfx_err_code(&r), "invalid_msgpack", "%s", r.body);
        tfx_resp_free(&r);
    }
    /* generation input */
    expect("POST", "/api/v1/campaigns/bad/coupons", 400, "invalid_field", "generate.count",
           "{\"generate\":{\"count\":0}}");
    expect("POST", "/api/v1/campaigns/bad/coupons", 422, "too_guessable", "generate.length",
           "{\"generate\":{\"count\":100000,\"length\":4}}");
    expect("POST", "/api/v1/campaigns/bad/coupons", 400, "invalid_field", "generate.pattern",
           "{\"generate\":{\"count\":1,\"pattern\":\"AB C#######\"}}");
    expect("POST", "/api/v1/campaigns/nope/coupons", 404, "not_found", "id", "{\"generate\":{\"count\":1}}");
    /* nothing was applied by any of it */
    json_t *s = ctfx_stats("bad");
    cr_assert_eq(json_integer_value(json_object_get(s, "redeemed")), 0);
    cr_assert_eq(json_integer_value(json_object_get(s, "codes")), 1);
    cr_assert_eq(ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent")), 0);
    json_decref(s);
    /* and the code still works, once */
    expect("POST", R, 200, NULL, NULL, redeem_body(code, "a", "o1", "99.999", "EUR"));
    json_decref(g);
}

Test(coupons_input, import_csv_and_ndjson)
{
    tfx_server_init(&srv, NO_VELOCITY);
    ctfx_campaign("imp", NULL);
    go();
    static const char csv[] = "code,customer_id\nSUMMER-0001,\n\"summer-0002\",dana\nSUMMER-0001\nbad code\n";
    struct tfx_resp r;
    tfx_http(&srv, "POST", "/api/v1/campaigns/imp/coupons/import?pool=summer&max_uses=1",
             "Content-Type: text/csv\r\n", csv, sizeof csv - 1, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "imported")), 2, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "failed")), 2, "%s", r.body);
    json_t *errs = json_object_get(r.json, "errors");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(errs, 0), "line")), 5, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(errs, 1), "line")), 4, "%s", r.body);
    tfx_resp_free(&r);
    static const char nd[] = "{\"code\":\"VIP-AAAA\",\"customer_id\":\"erin\"}\n{\"code\":\"VIP-BBBB\"}\n{\"nope\":1}\n";
    tfx_http(&srv, "POST", "/api/v1/campaigns/imp/coupons/import?shared=true&max_uses=0",
             "Content-Type: application/x-ndjson\r\n", nd, sizeof nd - 1, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "imported")), 2, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "failed")), 1, "%s", r.body);
    tfx_resp_free(&r);
    tfx_http(&srv, "POST", "/api/v1/campaigns/imp/coupons/import?max_uses=-1",
             "Content-Type: text/csv\r\n", "X-1234\n", 7, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "error"), "field")), "max_uses");
    tfx_resp_free(&r);
    /* imported codes are normalised and work; a pre-assigned one is its customer's */
    expect("POST", "/api/v1/coupons/validate", 200, NULL, NULL, "{\"code\":\" summer-0002 \",\"customer_id\":\"dana\"}");
    expect("POST", "/api/v1/coupons/validate", 422, "not_yours", "customer_id",
           "{\"code\":\"SUMMER-0002\",\"customer_id\":\"fred\"}");
    ctfx_post(&r, "POST", "/api/v1/campaigns/imp/coupons/assign", "{\"customer_id\":\"erin\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "code")), "VIP-AAAA");
    tfx_resp_free(&r);
    /* only SUMMER-0001 is free for assignment (VIP-BBBB is shared) */
    ctfx_post(&r, "POST", "/api/v1/campaigns/imp/coupons/assign", "{\"customer_id\":\"gus\"}");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "code")), "SUMMER-0001", "%s", r.body);
    tfx_resp_free(&r);
    expect("POST", "/api/v1/campaigns/imp/coupons/assign", 409, "pool_exhausted", NULL, "{\"customer_id\":\"hal\"}");
}

Test(coupons_input, a_bad_budget_is_a_load_error_with_file_and_line)
{
    tfx_server_init(&srv, NO_VELOCITY);
    tfx_write(&srv, "rules/bb.lua",
              "return { id = 'bb', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  budget = { amount = 10, currency = 'eur' },\n"
              "  eligible = function() return true end }\n");
    tfx_write(&srv, "rules/pp.lua",
              "return { id = 'pp', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  budget = { amount = 10, currency = 'EUR', pacing = 'even' },\n"
              "  eligible = function() return true end }\n");
    char path[400], *out = NULL;
    snprintf(path, sizeof path, "%s/rules", srv.dir);
    int rc = tfx_promod(&out, "check", "-c", srv.config, path, NULL);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "bb.lua:3: budget.currency must be an ISO 4217 code"), "%s", out);
    cr_assert(strstr(out, "pp.lua:3: budget.pacing"), "pacing needs per = \"1d\": %s", out);
    free(out);
}
