/*
 * test_profiles.c — /api/v1/profiles on the real server: CRUD, merge-patch,
 * export, exact type round trips in JSON and msgpack, hostile ids and
 * bodies, size limits, NDJSON import, and concurrent writers.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "fixture.h"

static struct tfx_server srv;

/* small limits so the 413 paths are cheap to reach */
static void setup(void)
{
    tfx_server_init(&srv, "max_body_kb = 64, max_import_body_mb = 1,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(profiles, .init = setup, .fini = teardown, .timeout = 90);

#define MP "Content-Type: application/msgpack\r\n"
#define ACCEPT_MP "Accept: application/msgpack\r\n"

static int req(const char *method, const char *path, const char *json, struct tfx_resp *r)
{
    return tfx_req(&srv, method, path, json, r);
}

/* status of a request, response freed */
static int status_of(const char *method, const char *path, const char *json)
{
    struct tfx_resp r;
    int st = req(method, path, json, &r);
    tfx_resp_free(&r);
    return st;
}

/* GET the profile as JSON (new ref) or NULL on 404 */
static json_t *get_profile(const char *id)
{
    char path[512];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    struct tfx_resp r;
    int st = req("GET", path, NULL, &r);
    json_t *o = st == 200 ? json_incref(r.json) : NULL;
    cr_assert(st == 200 || st == 404, "GET %s: %d %s", id, st, r.body);
    tfx_resp_free(&r);
    return o;
}

/* an error reply in the contract's shape with this status, code and field */
static void expect_error(struct tfx_resp *r, int status, const char *code, const char *field)
{
    cr_assert_eq(r->status, status, "want %d %s, got %d: %s", status, code, r->status, r->body);
    cr_assert(strstr(r->ctype, "application/json"), "error content type %s", r->ctype);
    json_t *e = json_object_get(r->json, "error");
    cr_assert(json_is_object(e), "no error object: %s", r->body);
    cr_assert_str_eq(tfx_err_code(r), code, "body: %s", r->body);
    const char *msg = json_string_value(json_object_get(e, "message"));
    cr_assert(msg && *msg, "error without a message: %s", r->body);
    if (field)
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")), field, "body: %s", r->body);
}

Test(profiles, put_get_patch_delete)
{
    struct tfx_resp r;
    cr_assert_eq(req("PUT", "/api/v1/profiles/u1", "{\"tier\":\"gold\",\"ltv\":120,\"prefs\":{\"a\":1,\"b\":2}}", &r),
                 201, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "id")), "u1");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "tier")), "gold");
    tfx_resp_free(&r);
    /* replace: 200, attributes not in the new body are gone */
    cr_assert_eq(req("PUT", "/api/v1/profiles/u1", "{\"id\":\"u1\",\"tier\":\"silver\",\"prefs\":{\"a\":1,\"b\":2}}", &r),
                 200, "%s", r.body);
    tfx_resp_free(&r);
    json_t *p = get_profile("u1");
    cr_assert_not_null(p);
    cr_assert_str_eq(json_string_value(json_object_get(p, "tier")), "silver");
    cr_assert_null(json_object_get(p, "ltv"), "PUT replaces the whole profile");
    json_decref(p);

    /* merge-patch: null deletes (also nested), nested objects merge, new keys add */
    cr_assert_eq(req("PATCH", "/api/v1/profiles/u1",
                     "{\"tier\":null,\"prefs\":{\"b\":null,\"c\":{\"deep\":true}},\"tags\":[1,\"x\"],"
                     "\"missing\":null}", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    p = get_profile("u1");
    json_t *want = json_loads("{\"id\":\"u1\",\"prefs\":{\"a\":1,\"c\":{\"deep\":true}},\"tags\":[1,\"x\"]}", 0, NULL);
    cr_assert(json_equal(p, want), "merged: %s", json_dumps(p, JSON_COMPACT));
    json_decref(want);
    json_decref(p);
    /* a scalar replaces an object, an object replaces a scalar */
    cr_assert_eq(status_of("PATCH", "/api/v1/profiles/u1", "{\"prefs\":5,\"tags\":{\"n\":{\"m\":null,\"k\":1}}}"), 200);
    p = get_profile("u1");
    want = json_loads("{\"id\":\"u1\",\"prefs\":5,\"tags\":{\"n\":{\"k\":1}}}", 0, NULL);
    cr_assert(json_equal(p, want), "merged: %s", json_dumps(p, JSON_COMPACT));
    json_decref(want);
    json_decref(p);

    /* PATCH upserts */
    cr_assert_eq(req("PATCH", "/api/v1/profiles/new-one", "{\"a\":{\"b\":1,\"gone\":null}}", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    p = get_profile("new-one");
    want = json_loads("{\"id\":\"new-one\",\"a\":{\"b\":1}}", 0, NULL);
    cr_assert(json_equal(p, want), "upserted: %s", json_dumps(p, JSON_COMPACT));
    json_decref(want);
    json_decref(p);

    /* DELETE then 404 everywhere */
    cr_assert_eq(req("DELETE", "/api/v1/profiles/u1", NULL, &r), 200, "%s", r.body);
    cr_assert_geq(json_integer_value(json_object_get(r.json, "erased_records")), 1);
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", "/api/v1/profiles/u1", NULL, &r), 404);
    expect_error(&r, 404, "not_found", NULL);
    tfx_resp_free(&r);
    cr_assert_eq(req("DELETE", "/api/v1/profiles/u1", NULL, &r), 404);
    expect_error(&r, 404, "not_found", NULL);
    tfx_resp_free(&r);
    cr_assert_eq(status_of("GET", "/api/v1/profiles/u1/export", NULL), 404);
    /* others untouched */
    p = get_profile("new-one");
    cr_assert_not_null(p);
    json_decref(p);
}

Test(profiles, export)
{
    cr_assert_eq(status_of("PUT", "/api/v1/profiles/exp-1", "{\"email\":\"a@example.com\",\"n\":[1,2]}"), 201);
    struct tfx_resp r;
    cr_assert_eq(req("GET", "/api/v1/profiles/exp-1/export", NULL, &r), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "customer_id")), "exp-1");
    json_t *prof = json_object_get(r.json, "profile");
    cr_assert_str_eq(json_string_value(json_object_get(prof, "email")), "a@example.com");
    cr_assert_eq(json_array_size(json_object_get(prof, "n")), 2);
    cr_assert(json_is_array(json_object_get(r.json, "counters")));
    cr_assert(json_is_array(json_object_get(r.json, "events")));
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", "/api/v1/profiles/nobody-here/export", NULL, &r), 404);
    expect_error(&r, 404, "not_found", NULL);
    tfx_resp_free(&r);
}

/* Every JSON type comes back exactly: same types, values and nesting. */
Test(profiles, json_types_round_trip)
{
    static const char body[] =
        "{\"s\":\"h\\u00e9llo \\u65e5\\u672c \\ud83d\\ude00 \\\"q\\\" \\\\ \\n\\t\\u0001\","
        "\"raw_utf8\":\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\","
        "\"empty\":\"\",\"zero\":0,\"neg\":-1,\"big\":9223372036854775807,"
        "\"small\":-9223372036854775808,\"u32\":4294967296,\"real\":0.1,\"one_real\":1.0,"
        "\"tiny\":5e-324,\"huge\":1.7976931348623157e308,\"negz\":-0.0,\"t\":true,\"f\":false,"
        "\"nil\":null,\"arr\":[1,[2,[3,[4,[5,{\"k\":[[],{}]}]]]]],\"mixed\":[null,true,1,1.5,\"s\",{},[]],"
        "\"obj\":{\"a\":{\"b\":{\"c\":{\"d\":\"e\"}}}},\"unicode_key_\xc3\xa9\":1}";
    struct tfx_resp r;
    cr_assert_eq(req("PUT", "/api/v1/profiles/types", body, &r), 201, "%s", r.body);
    tfx_resp_free(&r);
    json_t *in = json_loads(body, 0, NULL);
    cr_assert_not_null(in);
    json_object_set_new(in, "id", json_string("types"));
    json_t *out = get_profile("types");
    cr_assert(json_equal(in, out), "round trip changed the profile:\n in: %s\nout: %s",
              json_dumps(in, JSON_COMPACT), json_dumps(out, JSON_COMPACT));
    /* json_equal compares types too; check the ones that could silently drift */
    cr_assert(json_is_real(json_object_get(out, "one_real")), "1.0 must stay a real");
    cr_assert(json_is_integer(json_object_get(out, "big")));
    cr_assert_eq(json_integer_value(json_object_get(out, "small")), INT64_MIN);
    cr_assert(json_is_null(json_object_get(out, "nil")));
    json_decref(in);
    json_decref(out);
}

/* A msgpack request body, and a msgpack reply checked byte for byte. */
Test(profiles, msgpack_in_and_out)
{
    /* {"a":1,"b":"x","c":[true,nil],"d":-1.5} */
    static const char body[] = "\x84\xa1" "a" "\x01\xa1" "b" "\xa1" "x" "\xa1" "c" "\x92\xc3\xc0"
                               "\xa1" "d" "\xcb\xbf\xf8\x00\x00\x00\x00\x00\x00";
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "PUT", "/api/v1/profiles/mp1", MP, body, sizeof body - 1, &r), 201, "%s",
                 r.body);
    tfx_resp_free(&r);
    json_t *p = get_profile("mp1");
    json_t *want = json_loads("{\"id\":\"mp1\",\"a\":1,\"b\":\"x\",\"c\":[true,null],\"d\":-1.5}", 0, NULL);
    cr_assert(json_equal(p, want), "msgpack body stored as %s", json_dumps(p, JSON_COMPACT));
    json_decref(p);
    json_decref(want);

    cr_assert_eq(tfx_http(&srv, "GET", "/api/v1/profiles/mp1", ACCEPT_MP, NULL, 0, &r), 200);
    cr_assert_str_eq(r.ctype, "application/msgpack");
    /* id first, then the attributes in their stored order */
    static const char expect[] = "\x85\xa2" "id" "\xa3" "mp1" "\xa1" "a" "\x01\xa1" "b" "\xa1" "x"
                                 "\xa1" "c" "\x92\xc3\xc0\xa1" "d" "\xcb\xbf\xf8\x00\x00\x00\x00\x00\x00";
    cr_assert_eq(r.len, sizeof expect - 1, "msgpack reply of %zu bytes", r.len);
    cr_assert_eq(memcmp(r.body, expect, r.len), 0, "msgpack reply bytes differ");
    int err = 0;
    json_t *dec = codec_msgpack_to_json(r.body, r.len, &err);
    cr_assert_not_null(dec);
    cr_assert_str_eq(json_string_value(json_object_get(dec, "id")), "mp1");
    json_decref(dec);
    tfx_resp_free(&r);

    /* errors are msgpack too when msgpack is asked for */
    cr_assert_eq(tfx_http(&srv, "GET", "/api/v1/profiles/none", ACCEPT_MP, NULL, 0, &r), 404);
    cr_assert_str_eq(r.ctype, "application/msgpack");
    dec = codec_msgpack_to_json(r.body, r.len, &err);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(dec, "error"), "code")), "not_found");
    json_decref(dec);
    tfx_resp_free(&r);

    /* a msgpack PATCH with a nil deletes */
    static const char patch[] = "\x82\xa1" "a" "\xc0\xa1" "e" "\x81\xa1" "f" "\xc2";
    cr_assert_eq(tfx_http(&srv, "PATCH", "/api/v1/profiles/mp1", MP ACCEPT_MP, patch, sizeof patch - 1, &r), 200);
    cr_assert_str_eq(r.ctype, "application/msgpack");
    dec = codec_msgpack_to_json(r.body, r.len, &err);
    cr_assert_null(json_object_get(dec, "a"));
    cr_assert(json_is_false(json_object_get(json_object_get(dec, "e"), "f")));
    json_decref(dec);
    tfx_resp_free(&r);
}

struct badmp {
    char name[32];
    char bytes[40];
    int len;
    char code[24];
};

#define BM(n, b, c) { n, b, sizeof b - 1, c }

ParameterizedTestParameters(profiles, msgpack_garbage)
{
    static struct badmp cases[] = {
        BM("reserved byte", "\xc1", "invalid_msgpack"),
        BM("truncated map", "\x82\xa1" "a" "\x01", "invalid_msgpack"),
        BM("str32 claims 4 GB", "\x81\xdb\xff\xff\xff\xff" "ab", "invalid_msgpack"),
        BM("array32 claims 4 G", "\x81\xa1" "a" "\xdd\xff\xff\xff\xff", "invalid_msgpack"),
        BM("trailing bytes", "\x80\x80", "invalid_msgpack"),
        BM("invalid utf-8 key", "\x81\xa2\xff\xfe\x01", "invalid_msgpack"),
        BM("array, not a map", "\x92\x01\x02", "invalid_body"),
        BM("scalar", "\x05", "invalid_body"),
        BM("nested 70 deep", "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
                            "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91", "invalid_msgpack"),
    };
    return cr_make_param_array(struct badmp, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct badmp *c, profiles, msgpack_garbage)
{
    struct tfx_resp r;
    tfx_http(&srv, "PUT", "/api/v1/profiles/mpbad", MP, c->bytes, (size_t)c->len, &r);
    cr_assert_eq(r.status, 400, "%s: %d %s", c->name, r.status, r.body);
    cr_assert(json_is_object(json_object_get(r.json, "error")), "%s: %s", c->name, r.body);
    /* nesting may be reported as too deep or as truncated: both are 400 in the contract shape */
    if (strcmp(c->name, "nested 70 deep") != 0)
        cr_assert_str_eq(tfx_err_code(&r), c->code, "%s: %s", c->name, r.body);
    tfx_resp_free(&r);
    cr_assert_null(get_profile("mpbad"), "%s: nothing stored", c->name);
}

/* ---- ids ---- */

struct idcase {
    char path_id[160];
};

ParameterizedTestParameters(profiles, invalid_ids)
{
    static struct idcase cases[] = {
        { "..%2Fx" }, { "%2E%2E%2Fetc%2Fpasswd" }, { "" }, { "a%2Fb" }, { "a%20b" }, { "%20" },
        { ".hidden" }, { "semi%3Bcolon" }, { "%C3%BC" }, { "nul%00byte" }, { "tab%09" }, { "a%25b" },
        { "quote%22" }, { "back%5Cslash" },
        { "LONG129" }, /* expanded to 129 characters below */
    };
    return cr_make_param_array(struct idcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct idcase *c, profiles, invalid_ids)
{
    static const char *methods[] = { "PUT", "GET", "PATCH", "DELETE" };
    char path[300];
    if (!strcmp(c->path_id, "LONG129")) {
        memset(c->path_id, 'a', 129);
        c->path_id[129] = 0;
    }
    for (int m = 0; m < 4; m++) {
        snprintf(path, sizeof path, "/api/v1/profiles/%s", c->path_id);
        struct tfx_resp r;
        tfx_req(&srv, methods[m], path, m == 0 || m == 2 ? "{\"a\":1}" : NULL, &r);
        if (r.status == 400 && !strcmp(tfx_err_code(&r), "bad_path")) {
            /* %00 is refused by the server before routing: also a 400 in the contract shape */
            tfx_resp_free(&r);
            continue;
        }
        expect_error(&r, 400, "invalid_id", "id");
        tfx_resp_free(&r);
    }
    snprintf(path, sizeof path, "/api/v1/profiles/%s/export", c->path_id);
    struct tfx_resp r;
    tfx_req(&srv, "GET", path, NULL, &r);
    cr_assert_eq(r.status, 400, "export %s: %d %s", c->path_id, r.status, r.body);
    tfx_resp_free(&r);
}

Test(profiles, valid_id_edges)
{
    char id[140];
    memset(id, 'z', 128);
    id[128] = 0;
    char path[200];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    cr_assert_eq(status_of("PUT", path, "{}"), 201, "128 characters is the limit, inclusive");
    cr_assert_eq(status_of("PUT", "/api/v1/profiles/A-z_0.9:x@y", "{}"), 201);
    json_t *p = get_profile("A-z_0.9:x@y");
    cr_assert_str_eq(json_string_value(json_object_get(p, "id")), "A-z_0.9:x@y");
    json_decref(p);
    /* an encoded allowed character is the same id */
    p = get_profile("A-z_0.9%3Ax%40y");
    cr_assert_not_null(p);
    json_decref(p);
}

/* ---- bodies ---- */

struct badbody {
    char body[200];
    int status;
    char code[24];
    char field[16];
};

ParameterizedTestParameters(profiles, bad_bodies)
{
    static struct badbody cases[] = {
        { "{\"id\":\"other\",\"a\":1}", 422, "invalid_profile", "id" },
        { "{\"id\":5}", 422, "invalid_profile", "id" },
        { "{\"id\":null}", 422, "invalid_profile", "id" },
        { "{\"stats\":{\"clicks\":1}}", 422, "invalid_profile", "stats" },
        { "{\"\":1}", 422, "invalid_profile", "" },
        { "[1,2]", 400, "invalid_body", "" },
        { "\"string\"", 400, "invalid_body", "" },
        { "42", 400, "invalid_body", "" },
        { "null", 400, "invalid_body", "" },
        { "{", 400, "invalid_json", "" },
        { "{\"a\":}", 400, "invalid_json", "" },
        { "{\"a\":1,}", 400, "invalid_json", "" },
        { "{'a':1}", 400, "invalid_json", "" },
        { "{\"a\":1} trailing", 400, "invalid_json", "" },
        { "{\"a\":1}{\"b\":2}", 400, "invalid_json", "" },
        { "{\"a\":nul}", 400, "invalid_json", "" },
        { "{\"a\":\"\\ud800\"}", 400, "invalid_json", "" },
        { "{\"a\":\"\xff\xfe\"}", 400, "invalid_json", "" },
        { "{\"a\":1e999}", 400, "invalid_json", "" },
        { "{\"a\":99999999999999999999}", 400, "invalid_json", "" },
        { "{\"a\":NaN}", 400, "invalid_json", "" },
        { "\xef\xbb\xbf{\"a\":1}", 400, "invalid_json", "" },
    };
    return cr_make_param_array(struct badbody, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct badbody *c, profiles, bad_bodies)
{
    static const char *methods[] = { "PUT", "PATCH" };
    for (int m = 0; m < 2; m++) {
        struct tfx_resp r;
        tfx_req(&srv, methods[m], "/api/v1/profiles/victim", c->body, &r);
        expect_error(&r, c->status, c->code, c->field[0] ? c->field : NULL);
        if (!strcmp(c->code, "invalid_json")) {
            const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
            cr_assert(strstr(msg, "line 1 column "), "parse error without a position: %s", msg);
        }
        tfx_resp_free(&r);
    }
    cr_assert_null(get_profile("victim"), "a refused body stored something");
}

Test(profiles, json_error_position)
{
    struct tfx_resp r;
    tfx_req(&srv, "PUT", "/api/v1/profiles/pos", "{\n  \"a\": 1,\n  \"b\": tru\n}", &r);
    expect_error(&r, 400, "invalid_json", NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    cr_assert(strstr(msg, "line 3 column"), "%s", msg);
    tfx_resp_free(&r);
}

Test(profiles, empty_body_and_media_types)
{
    struct tfx_resp r;
    tfx_http(&srv, "PUT", "/api/v1/profiles/e1", "Content-Type: application/json\r\n", NULL, 0, &r);
    expect_error(&r, 400, "empty_body", NULL);
    tfx_resp_free(&r);
    tfx_http(&srv, "PUT", "/api/v1/profiles/e1", "Content-Type: text/xml\r\n", "<a/>", 4, &r);
    expect_error(&r, 415, "unsupported_media_type", NULL);
    tfx_resp_free(&r);
    tfx_http(&srv, "PATCH", "/api/v1/profiles/e1", "Content-Type: application/xml; charset=utf-8\r\n", "<a/>", 4, &r);
    expect_error(&r, 415, "unsupported_media_type", NULL);
    tfx_resp_free(&r);
    tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: text/xml\r\n", "<a/>", 4, &r);
    expect_error(&r, 415, "unsupported_media_type", NULL);
    tfx_resp_free(&r);
    /* JSON with a charset parameter and no Content-Type at all are fine */
    tfx_http(&srv, "PUT", "/api/v1/profiles/e1", "Content-Type: application/json; charset=utf-8\r\n", "{\"a\":1}", 7, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    tfx_resp_free(&r);
    tfx_http(&srv, "PUT", "/api/v1/profiles/e1", NULL, "{\"a\":2}", 7, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
}

/* 100 levels of nesting: refused by the parser with a position, in both forms */
Test(profiles, deep_nesting)
{
    struct buf b = BUF_INIT;
    buf_adds(&b, "{\"a\":");
    for (int i = 0; i < 100; i++)
        buf_addc(&b, '[');
    for (int i = 0; i < 100; i++)
        buf_addc(&b, ']');
    buf_addc(&b, '}');
    struct tfx_resp r;
    tfx_req(&srv, "PUT", "/api/v1/profiles/deep", b.p, &r);
    expect_error(&r, 400, "too_deep", NULL);
    tfx_resp_free(&r);
    buf_free(&b);
    /* 20 levels parse but a profile may nest 16 at most: 422 */
    buf_adds(&b, "{\"a\":");
    for (int i = 0; i < 20; i++)
        buf_adds(&b, "{\"x\":");
    buf_adds(&b, "1");
    for (int i = 0; i < 21; i++)
        buf_addc(&b, '}');
    tfx_req(&srv, "PUT", "/api/v1/profiles/deep", b.p, &r);
    expect_error(&r, 422, "invalid_profile", NULL);
    tfx_resp_free(&r);
    buf_free(&b);
    cr_assert_null(get_profile("deep"));
}

Test(profiles, attribute_limits)
{
    struct buf b = BUF_INIT;
    /* a 129-byte attribute name */
    buf_adds(&b, "{\"");
    for (int i = 0; i < 129; i++)
        buf_addc(&b, 'k');
    buf_adds(&b, "\":1}");
    struct tfx_resp r;
    tfx_req(&srv, "PUT", "/api/v1/profiles/lim", b.p, &r);
    expect_error(&r, 422, "invalid_profile", NULL);
    tfx_resp_free(&r);
    buf_free(&b);
}

Test(profiles, body_too_large)
{
    size_t n = 70 * 1024; /* max_body_kb = 64 */
    char *big = malloc(n + 32);
    memcpy(big, "{\"blob\":\"", 9);
    memset(big + 9, 'x', n);
    memcpy(big + 9 + n, "\"}", 3);
    struct tfx_resp r;
    tfx_req(&srv, "PUT", "/api/v1/profiles/big", big, &r);
    expect_error(&r, 413, "body_too_large", NULL);
    tfx_resp_free(&r);
    free(big);
    cr_assert_null(get_profile("big"));
    /* just under the limit is fine */
    n = 60 * 1024;
    big = malloc(n + 32);
    memcpy(big, "{\"blob\":\"", 9);
    memset(big + 9, 'y', n);
    memcpy(big + 9 + n, "\"}", 3);
    cr_assert_eq(status_of("PUT", "/api/v1/profiles/big", big), 201);
    free(big);
    json_t *p = get_profile("big");
    cr_assert_eq(strlen(json_string_value(json_object_get(p, "blob"))), 60 * 1024);
    json_decref(p);
}

/* ---- routes ---- */

Test(profiles, unknown_routes_and_methods)
{
    struct tfx_resp r;
    tfx_req(&srv, "GET", "/api/v1/profile/u1", NULL, &r);
    expect_error(&r, 404, "not_found", NULL);
    tfx_resp_free(&r);
    tfx_req(&srv, "GET", "/api/v1/profiles/u1/export/x", NULL, &r);
    expect_error(&r, 404, "not_found", NULL);
    tfx_resp_free(&r);
    tfx_req(&srv, "POST", "/api/v1/profiles/u1", "{}", &r);
    expect_error(&r, 405, "method_not_allowed", NULL);
    cr_assert(strstr(r.headers, "\r\nAllow: GET, PUT, PATCH, DELETE"), "Allow header: %s", r.headers);
    tfx_resp_free(&r);
    tfx_req(&srv, "DELETE", "/api/v1/profiles/u1/export", NULL, &r);
    expect_error(&r, 405, "method_not_allowed", NULL);
    cr_assert(strstr(r.headers, "\r\nAllow: GET\r\n"), "Allow header: %s", r.headers);
    tfx_resp_free(&r);
    tfx_req(&srv, "GET", "/healthz", NULL, &r);
    cr_assert_eq(r.status, 200, "the server survived");
    tfx_resp_free(&r);
}

/* ---- import ---- */

static json_t *import(const char *body, size_t len, int want_status)
{
    struct tfx_resp r;
    tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n", body, len, &r);
    cr_assert_eq(r.status, want_status, "import: %d %s", r.status, r.body);
    json_t *o = json_incref(r.json);
    tfx_resp_free(&r);
    return o;
}

/* the error reported for `line`, or NULL */
static const char *import_error(json_t *res, long line)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "errors"), i, e)
        if (json_integer_value(json_object_get(e, "line")) == line)
            return json_string_value(json_object_get(e, "message"));
    return NULL;
}

Test(profiles, import_good_and_bad_lines)
{
    static const char body[] =
        "{\"id\":\"i1\",\"tier\":\"gold\",\"n\":[1,{\"x\":null}]}\n"   /* 1 ok */
        "\n"                                                        /* 2 blank */
        "   \t  \n"                                                 /* 3 blank */
        "{\"id\":\"i2\",\"tier\":\"silver\"}\r\n"                   /* 4 ok (CRLF) */
        "{\"tier\":\"no id\"}\n"                                    /* 5 missing id */
        "{\"id\":\"bad id\"}\n"                                     /* 6 invalid id */
        "not json\n"                                                /* 7 */
        "[1,2,3]\n"                                                 /* 8 not an object */
        "{\"id\":\"i3\",\"stats\":{}}\n"                            /* 9 stats refused */
        "{\"id\":7}\n"                                              /* 10 id not a string */
        "{\"id\":\"i4\",\"a\":1}{\"id\":\"i5\"}\n"                  /* 11 two objects */
        "{\"id\":\"i6\",\"unicode\":\"\xe6\x97\xa5\"}\n"            /* 12 ok */
        "{\"id\":\"i7\",\"trunc\":\"abc";                           /* 13 truncated, no newline */
    json_t *res = import(body, sizeof body - 1, 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "imported")), 3, "%s", json_dumps(res, 0));
    cr_assert_eq(json_integer_value(json_object_get(res, "failed")), 8, "%s", json_dumps(res, 0));
    static const long bad_lines[] = { 5, 6, 7, 8, 9, 10, 11, 13 };
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++)
        cr_assert_not_null(import_error(res, bad_lines[i]), "line %ld not reported: %s", bad_lines[i],
                           json_dumps(res, 0));
    cr_assert_not_null(strstr(import_error(res, 5), "id"));
    cr_assert_not_null(strstr(import_error(res, 9), "stats"));
    cr_assert_not_null(strstr(import_error(res, 7), "line 1 column"), "parse position within the line");
    for (long l = 1; l <= 4; l++)
        cr_assert_null(import_error(res, l), "line %ld wrongly reported", l);
    cr_assert_null(import_error(res, 12));
    json_decref(res);

    json_t *p = get_profile("i1");
    json_t *want = json_loads("{\"id\":\"i1\",\"tier\":\"gold\",\"n\":[1,{\"x\":null}]}", 0, NULL);
    cr_assert(json_equal(p, want), "%s", json_dumps(p, 0));
    json_decref(p);
    json_decref(want);
    p = get_profile("i2");
    cr_assert_str_eq(json_string_value(json_object_get(p, "tier")), "silver", "CRLF line");
    json_decref(p);
    p = get_profile("i6");
    cr_assert_str_eq(json_string_value(json_object_get(p, "unicode")), "\xe6\x97\xa5");
    json_decref(p);
    static const char *absent[] = { "i3", "i4", "i5", "i7" };
    for (int i = 0; i < 4; i++) {
        p = get_profile(absent[i]);
        cr_assert_null(p, "%s must not be imported", absent[i]);
    }
}

Test(profiles, import_replaces_and_counts)
{
    struct buf b = BUF_INIT;
    for (int i = 0; i < 3000; i++)
        buf_printf(&b, "{\"id\":\"bulk-%04d\",\"i\":%d,\"tier\":\"t%d\"}\n", i, i, i % 4);
    json_t *res = import(b.p, b.len, 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "imported")), 3000);
    cr_assert_eq(json_integer_value(json_object_get(res, "failed")), 0);
    cr_assert_eq(json_array_size(json_object_get(res, "errors")), 0);
    json_decref(res);
    for (int i = 0; i < 3000; i += 499) {
        char id[32];
        snprintf(id, sizeof id, "bulk-%04d", i);
        json_t *p = get_profile(id);
        cr_assert_not_null(p, "%s", id);
        cr_assert_eq(json_integer_value(json_object_get(p, "i")), i);
        json_decref(p);
    }
    /* a second import replaces (not merges) */
    json_decref(import("{\"id\":\"bulk-0000\",\"new\":true}\n", 29, 200));
    json_t *p = get_profile("bulk-0000");
    cr_assert_null(json_object_get(p, "i"));
    cr_assert(json_is_true(json_object_get(p, "new")));
    json_decref(p);
    /* more than 100 errors: all counted, the first 100 listed */
    buf_reset(&b);
    for (int i = 0; i < 150; i++)
        buf_adds(&b, "garbage\n");
    res = import(b.p, b.len, 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "failed")), 150);
    cr_assert_eq(json_array_size(json_object_get(res, "errors")), 100);
    json_decref(res);
    buf_free(&b);
}

Test(profiles, import_refusals)
{
    struct tfx_resp r;
    tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n", NULL, 0, &r);
    expect_error(&r, 400, "empty_body", NULL);
    tfx_resp_free(&r);
    tfx_http(&srv, "POST", "/api/v1/profiles/import", MP, "\x81\xa2id\xa1x", 6, &r);
    expect_error(&r, 415, "unsupported_media_type", NULL);
    tfx_resp_free(&r);
    /* only blank lines: nothing imported, nothing failed */
    json_t *res = import("\n\n  \r\n", 6, 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "imported")), 0);
    cr_assert_eq(json_integer_value(json_object_get(res, "failed")), 0);
    json_decref(res);
}

/* max_import_body_mb = 1: a body a little over it is refused in the
 * contract's shape; a far larger one is cut off by the HTTP layer (still
 * 413); nothing from either is imported and the server stays up. */
Test(profiles, import_too_large)
{
    struct buf b = BUF_INIT;
    int i = 0;
    while (b.len < (1u << 20) + 50000)
        buf_printf(&b, "{\"id\":\"over-%06d\",\"pad\":\"%0100d\"}\n", i++, 0);
    struct tfx_resp r;
    tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n", b.p, b.len, &r);
    expect_error(&r, 413, "body_too_large", NULL);
    tfx_resp_free(&r);
    while (b.len < (3u << 20))
        buf_printf(&b, "{\"id\":\"over-%06d\",\"pad\":\"%0100d\"}\n", i++, 0);
    tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n", b.p, b.len, &r);
    cr_assert(r.status == 413 || r.status == 0, "3 MiB import: %d %s", r.status, r.body);
    tfx_resp_free(&r);
    buf_free(&b);
    cr_assert_null(get_profile("over-000000"));
    cr_assert(tfx_server_alive(&srv));
    /* exactly at the limit is accepted */
    while (b.len < (1u << 20) - 200)
        buf_printf(&b, "{\"id\":\"fit-%06d\",\"pad\":\"%0100d\"}\n", (int)b.len, 0);
    json_t *res = import(b.p, b.len, 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "failed")), 0);
    cr_assert_gt(json_integer_value(json_object_get(res, "imported")), 7000);
    json_decref(res);
    buf_free(&b);
}

/* ---- concurrency ---- */

#define CW_THREADS 8
#define CW_ROUNDS 40

struct cw {
    struct tfx_server *s;
    int idx;
    int failures;     /* non-2xx replies */
    int last_shared;  /* last seq acknowledged on the shared id */
};

static void *concurrent_writer(void *arg)
{
    struct cw *w = arg;
    char body[256], path[64];
    for (int i = 0; i < CW_ROUNDS; i++) {
        struct tfx_resp r;
        /* the shared id: full replacement, self-consistent payload */
        snprintf(body, sizeof body, "{\"writer\":%d,\"seq\":%d,\"check\":\"w%d-s%d\"}", w->idx, i, w->idx, i);
        tfx_req(w->s, i % 2 ? "PATCH" : "PUT", "/api/v1/profiles/shared", body, &r);
        if (r.status != 200 && r.status != 201)
            w->failures++;
        tfx_resp_free(&r);
        /* the writer's own id: one new key per round, merged */
        snprintf(path, sizeof path, "/api/v1/profiles/own-%d", w->idx);
        snprintf(body, sizeof body, "{\"k%02d\":%d}", i, i);
        tfx_req(w->s, "PATCH", path, body, &r);
        if (r.status != 200)
            w->failures++;
        tfx_resp_free(&r);
        /* everyone also merges into one common id: no key may be lost */
        snprintf(body, sizeof body, "{\"w%d_%02d\":true}", w->idx, i);
        tfx_req(w->s, "PATCH", "/api/v1/profiles/common", body, &r);
        if (r.status != 200)
            w->failures++;
        tfx_resp_free(&r);
    }
    return NULL;
}

Test(profiles, concurrent_writers, .timeout = 120)
{
    pthread_t th[CW_THREADS];
    struct cw w[CW_THREADS];
    for (int i = 0; i < CW_THREADS; i++) {
        w[i] = (struct cw){ &srv, i, 0, -1 };
        pthread_create(&th[i], NULL, concurrent_writer, &w[i]);
    }
    for (int i = 0; i < CW_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].failures, 0, "writer %d had %d failed requests", i, w[i].failures);
    }
    cr_assert(tfx_server_alive(&srv));
    json_t *p = get_profile("shared");
    cr_assert_not_null(p);
    int wr = (int)json_integer_value(json_object_get(p, "writer"));
    int seq = (int)json_integer_value(json_object_get(p, "seq"));
    char check[64];
    snprintf(check, sizeof check, "w%d-s%d", wr, seq);
    cr_assert(wr >= 0 && wr < CW_THREADS && seq >= 0 && seq < CW_ROUNDS, "%s", json_dumps(p, 0));
    cr_assert_str_eq(json_string_value(json_object_get(p, "check")), check, "torn write: %s", json_dumps(p, 0));
    cr_assert_eq(json_object_size(p), 4, "id + 3 attributes: %s", json_dumps(p, 0));
    json_decref(p);
    for (int t = 0; t < CW_THREADS; t++) {
        char id[32];
        snprintf(id, sizeof id, "own-%d", t);
        p = get_profile(id);
        cr_assert_eq(json_object_size(p), CW_ROUNDS + 1, "%s lost keys: %s", id, json_dumps(p, 0));
        json_decref(p);
    }
    p = get_profile("common");
    cr_assert_eq(json_object_size(p), CW_THREADS * CW_ROUNDS + 1, "merged keys lost on the common id");
    json_decref(p);
}
