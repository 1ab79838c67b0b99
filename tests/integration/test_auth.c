/*
 * test_auth.c — API keys and roles on the real server, and the refusal to
 * listen beyond loopback without keys.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define DECIDE_KEY "decide-key-0123456789"
#define MARKETER_KEY "marketer-key-0123456789"
#define ADMIN_KEY "admin-key-from-the-env-42"

static struct tfx_server srv;

static void setup(void)
{
    setenv("PROMOD_TEST_ADMIN_KEY", ADMIN_KEY, 1);
    tfx_server_init(&srv,
                    "test_clock = true,\n"
                    "  api_keys = {\n"
                    "    { id = 'site', key = '" DECIDE_KEY "', role = 'decide' },\n"
                    "    { id = 'alice', key = '" MARKETER_KEY "', role = 'marketer' },\n"
                    "    { id = 'ops', key_env = 'PROMOD_TEST_ADMIN_KEY', role = 'admin' },\n"
                    "  },");
    tfx_write(&srv, "rules/hello.lua",
              "return { id = 'hello', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'Hi' } } },\n"
              "  eligible = function(p, ctx) return true end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(auth, .init = setup, .fini = teardown, .timeout = 60);

/* one request with an optional bearer key; returns the status */
static int call(const char *key, const char *method, const char *path, const char *json, char *code,
                size_t codelen)
{
    char headers[256] = "";
    if (key)
        snprintf(headers, sizeof headers, "Authorization: Bearer %s\r\n", key);
    if (json)
        strcat(headers, "Content-Type: application/json\r\n");
    struct tfx_resp r;
    tfx_http(&srv, method, path, headers, json, json ? strlen(json) : 0, &r);
    if (code)
        snprintf(code, codelen, "%s", tfx_err_code(&r));
    int st = r.status;
    tfx_resp_free(&r);
    return st;
}

Test(auth, missing_or_malformed_credentials)
{
    static const char *bad_headers[] = {
        NULL,                                        /* none */
        "Authorization: Bearer\r\n",                 /* no key */
        "Authorization: Bearer \r\n",                /* empty key */
        "Authorization: Basic YWxpY2U6c2VjcmV0\r\n", /* another scheme */
        "Authorization: " MARKETER_KEY "\r\n",       /* no scheme */
        "Authorization: Bearer  " MARKETER_KEY "\r\n", /* two spaces */
        "Authorization: Bearer " MARKETER_KEY "x\r\n",
        "Authorization: Bearer marketer-key-012345678\r\n", /* one byte short */
        "Authorization: Bearer MARKETER-KEY-0123456789\r\n",
        "Authorization: Bearer site\r\n",            /* the key's id is not the key */
    };
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        struct tfx_resp r;
        tfx_http(&srv, "GET", "/api/v1/profiles/u1", bad_headers[i], NULL, 0, &r);
        cr_assert_eq(r.status, 401, "header %zu: %d %s", i, r.status, r.body);
        cr_assert_str_eq(tfx_err_code(&r), "unauthorized", "header %zu: %s", i, r.body);
        cr_assert(strstr(r.headers, "WWW-Authenticate: Bearer"), "header %zu: no challenge", i);
        cr_assert(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")));
        tfx_resp_free(&r);
    }
    /* the scheme name is case-insensitive */
    struct tfx_resp r;
    tfx_http(&srv, "PUT", "/api/v1/profiles/u1", "authorization: bearer " MARKETER_KEY "\r\n", "{}", 2, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    tfx_resp_free(&r);
}

Test(auth, public_endpoints_need_no_key)
{
    cr_assert_eq(call(NULL, "GET", "/healthz", NULL, NULL, 0), 200);
    cr_assert_eq(call(NULL, "GET", "/metrics", NULL, NULL, 0), 200);
    cr_assert_eq(call("wrong-key-123456", "GET", "/healthz", NULL, NULL, 0), 200, "a bad key does not matter");
}

struct acase {
    char key[40];
    char method[8];
    char path[64];
    char body[80];
    int status;
};

#define D DECIDE_KEY
#define M MARKETER_KEY
#define A ADMIN_KEY
#define DECIDE_BODY "{\"customer_id\":\"u1\",\"channel\":\"web\"}"

ParameterizedTestParameters(auth, roles)
{
    static struct acase cases[] = {
        /* decide: decide and events only */
        { D, "POST", "/api/v1/decide", DECIDE_BODY, 200 },
        { D, "GET", "/api/v1/profiles/existing", "", 403 },
        { D, "PUT", "/api/v1/profiles/u1", "{}", 403 },
        { D, "DELETE", "/api/v1/profiles/existing", "", 403 },
        { D, "POST", "/api/v1/profiles/import", "{\"id\":\"x\"}", 403 },
        { D, "GET", "/api/v1/profiles/existing/export", "", 403 },
        { D, "GET", "/api/v1/rules", "", 403 },
        { D, "POST", "/api/v1/rules/reload", "", 403 },
        { D, "GET", "/api/v1/admin/clock", "", 403 },
        /* marketer: profiles, rules, decide; not admin */
        { M, "PUT", "/api/v1/profiles/m1", "{\"a\":1}", 201 },
        { M, "GET", "/api/v1/profiles/existing", "", 200 },
        { M, "PATCH", "/api/v1/profiles/existing", "{\"b\":2}", 200 },
        { M, "GET", "/api/v1/profiles/existing/export", "", 200 },
        { M, "POST", "/api/v1/profiles/import", "{\"id\":\"m2\"}", 200 },
        { M, "DELETE", "/api/v1/profiles/existing", "", 200 },
        { M, "GET", "/api/v1/rules", "", 200 },
        { M, "POST", "/api/v1/decide", DECIDE_BODY, 200 },
        { M, "GET", "/api/v1/admin/clock", "", 403 },
        { M, "POST", "/api/v1/admin/clock", "{\"offset\":5}", 403 },
        /* admin: everything */
        { A, "PUT", "/api/v1/profiles/a1", "{\"a\":1}", 201 },
        { A, "GET", "/api/v1/profiles/existing/export", "", 200 },
        { A, "DELETE", "/api/v1/profiles/existing", "", 200 },
        { A, "GET", "/api/v1/rules", "", 200 },
        { A, "POST", "/api/v1/decide", DECIDE_BODY, 200 },
        { A, "GET", "/api/v1/admin/clock", "", 200 },
        { A, "POST", "/api/v1/admin/clock", "{\"offset\":0}", 200 },
    };
    return cr_make_param_array(struct acase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct acase *c, auth, roles)
{
    char code[64];
    cr_assert_eq(call(A, "PUT", "/api/v1/profiles/existing", "{\"seed\":1}", NULL, 0), 201);
    int st = call(c->key, c->method, c->path, c->body[0] ? c->body : NULL, code, sizeof code);
    cr_assert_eq(st, c->status, "%s %s with %.8s...: %d (%s)", c->method, c->path, c->key, st, code);
    if (c->status == 403)
        cr_assert_str_eq(code, "forbidden");
    /* a 403 changed nothing */
    if (!strcmp(c->key, D) && !strcmp(c->method, "PUT"))
        cr_assert_eq(call(M, "GET", "/api/v1/profiles/u1", NULL, NULL, 0), 404);
    if (!strcmp(c->key, D) && !strcmp(c->method, "DELETE"))
        cr_assert_eq(call(M, "GET", "/api/v1/profiles/existing", NULL, NULL, 0), 200);
}

Test(auth, forbidden_message_names_role_and_route)
{
    struct tfx_resp r;
    tfx_http(&srv, "GET", "/api/v1/rules", "Authorization: Bearer " DECIDE_KEY "\r\n", NULL, 0, &r);
    cr_assert_eq(r.status, 403);
    const char *msg = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    cr_assert(msg && strstr(msg, "decide") && strstr(msg, "/api/v1/rules"), "%s", msg ? msg : "(none)");
    tfx_resp_free(&r);
}

/* With keys, anything but loopback needs TLS (test_tls.c) or the explicit
 * insecure_http override, which the log shouts about at every start. */
Test(auth, keys_beyond_loopback_need_tls_or_the_override)
{
    tfx_server_stop(&srv);
    cr_assert_neq(tfx_server_start_listen(&srv, "0.0.0.0:0"), 0, "started on 0.0.0.0 over plain HTTP");
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "refusing to listen beyond loopback with API keys over plain HTTP"), "%s", log);
    free(log);

    struct tfx_server plain;
    tfx_server_init(&plain, "insecure_http = true,\n"
                            "  api_keys = { { id = 'site', key = '" DECIDE_KEY "', role = 'decide' } },");
    cr_assert_eq(tfx_server_start_listen(&plain, "0.0.0.0:0"), 0, "the override did not start");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&plain, "GET", "/healthz", NULL, &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&plain, "GET", "/api/v1/profiles/u1", NULL, &r), 401);
    tfx_resp_free(&r);
    log = tfx_server_log(&plain);
    cr_assert(strstr(log, "level=warn") && strstr(log, "INSECURE: serving plain HTTP beyond loopback"), "%s", log);
    cr_assert(strstr(log, "auth=api_keys"), "start-up line does not say auth is on: %s", log);
    free(log);
    tfx_server_cleanup(&plain);
}

/* No keys: loopback works (and says so); anything else refuses to start. */
Test(auth, no_keys_loopback_only)
{
    tfx_server_stop(&srv);
    struct tfx_server open;
    tfx_server_init(&open, NULL);
    cr_assert_eq(tfx_server_start(&open), 0);
    struct tfx_resp r;
    tfx_req(&open, "PUT", "/api/v1/profiles/nokey", "{}", &r);
    cr_assert_eq(r.status, 201, "no keys configured: loopback is open: %s", r.body);
    tfx_resp_free(&r);
    char *log = tfx_server_log(&open);
    cr_assert(strstr(log, "loopback only"), "start-up line does not warn: %s", log);
    free(log);
    tfx_server_stop(&open);

    static const char *beyond[] = { "0.0.0.0:0", "[::]:0" };
    for (int i = 0; i < 2; i++) {
        cr_assert_neq(tfx_server_start_listen(&open, beyond[i]), 0, "started on %s without keys", beyond[i]);
        log = tfx_server_log(&open);
        cr_assert(strstr(log, "refusing to listen beyond loopback without API keys"), "%s: log: %s",
                  beyond[i], log);
        free(log);
    }
    /* the exit status, and the reason on stderr, from a direct run */
    char *out = NULL;
    int st = tfx_promod(&out, "serve", "-c", open.config, "--listen", "0.0.0.0:0", (char *)NULL);
    cr_assert_neq(st, 0, "exit status %d", st);
    cr_assert(strstr(out, "refusing to listen beyond loopback") && strstr(out, "api_keys"), "%s", out);
    free(out);
    tfx_server_cleanup(&open);
}

/* ---- hashed keys, `promod key`, rotation, last use ---- */

/* `promod key` once: the key and its config entry (both malloc'd). */
static void new_key(const char *role, const char *id, char **key, char **entry)
{
    char *out = NULL;
    int st = tfx_promod(&out, "key", "--role", role, "--id", id, (char *)NULL);
    cr_assert_eq(st, 0, "promod key: %s", out);
    char *k = strstr(out, "key:    "), *c = strstr(out, "config: ");
    cr_assert(k && c, "%s", out);
    k += 8;
    c += 8;
    *key = strndup(k, strcspn(k, "\n"));
    *entry = strndup(c, strcspn(c, "\n"));
    cr_assert(!strncmp(*key, "pmk_", 4) && strlen(*key) == 47, "key %s", *key);
    cr_assert(strstr(*entry, "sha256 = \""), "%s", *entry);
    cr_assert_null(strstr(*entry, *key), "the config entry holds the key itself: %s", *entry);
    free(out);
}

static int call_on(struct tfx_server *s, const char *key, const char *path, struct tfx_resp *r)
{
    char h[200];
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", key);
    return tfx_http(s, "GET", path, h, NULL, 0, r);
}

/* `promod key` knows every role the config accepts, including checkout
 * (the shop's server: coupons and points, not campaigns), and nothing else. */
Test(auth, promod_key_for_checkout)
{
    tfx_server_stop(&srv);
    char *key, *entry, *out = NULL;
    new_key("checkout", "shop-1", &key, &entry);
    cr_assert(strstr(entry, "role = \"checkout\""), "%s", entry);
    cr_assert_eq(tfx_promod(&out, "key", "--role", "owner", (char *)NULL), 2, "%s", out);
    cr_assert(strstr(out, "expected decide, checkout, marketer or admin"), "%s", out);
    free(out);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "api_keys = {\n    %s\n  },", entry);
    struct tfx_server k;
    tfx_server_init(&k, cfg);
    cr_assert_eq(tfx_server_start(&k), 0);
    struct tfx_resp r;
    cr_assert_eq(call_on(&k, key, "/api/v1/whoami", &r), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "role")), "checkout", "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "key_id")), "shop-1", "%s", r.body);
    tfx_resp_free(&r);
    int st = call_on(&k, key, "/api/v1/loyalty/c1", &r); /* a checkout route: the role passes */
    cr_assert(st != 401 && st != 403 && st != 0, "%d %s", st, r.body);
    tfx_resp_free(&r);
    cr_assert_eq(call_on(&k, key, "/api/v1/rules", &r), 403, "a marketer route: %s", r.body);
    tfx_resp_free(&r);
    tfx_server_cleanup(&k);
    free(key);
    free(entry);
}

Test(auth, promod_key_and_rotation)
{
    tfx_server_stop(&srv);
    char *old_key, *old_entry, *new_key_s, *new_entry, *admin_key, *admin_entry;
    new_key("marketer", "alice-2025", &old_key, &old_entry);
    new_key("marketer", "alice-2026", &new_key_s, &new_entry);
    new_key("admin", "ops", &admin_key, &admin_entry);
    cr_assert_str_neq(old_key, new_key_s, "two runs gave the same key");
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "api_keys = {\n    %s\n    %s\n    %s\n    { id = 'legacy', key = '%s', role = 'decide' },\n  },",
             old_entry, new_entry, admin_entry, DECIDE_KEY);
    struct tfx_server k;
    tfx_server_init(&k, cfg);
    cr_assert_eq(tfx_server_start(&k), 0);
    /* both marketer keys work while a client moves from one to the other */
    struct tfx_resp r;
    cr_assert_eq(call_on(&k, old_key, "/api/v1/rules", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(call_on(&k, new_key_s, "/api/v1/rules", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(call_on(&k, new_key_s, "/api/v1/admin/keys", &r), 403, "a marketer lists keys");
    tfx_resp_free(&r);
    /* the digest from the config is not a key */
    const char *d = strstr(new_entry, "sha256 = \"") + 10;
    char digest[65];
    snprintf(digest, sizeof digest, "%.64s", d);
    cr_assert_eq(call_on(&k, digest, "/api/v1/rules", &r), 401);
    tfx_resp_free(&r);

    /* who was used when: the admin listing and the gauge; never a secret */
    cr_assert_eq(call_on(&k, admin_key, "/api/v1/admin/keys", &r), 200, "%s", r.body);
    json_t *keys = json_object_get(r.json, "keys");
    cr_assert_eq(json_array_size(keys), 4, "%s", r.body);
    const char *ids[] = { "alice-2025", "alice-2026", "ops", "legacy" };
    const char *roles[] = { "marketer", "marketer", "admin", "decide" };
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(keys, i);
        cr_assert_str_eq(json_string_value(json_object_get(e, "id")), ids[i]);
        cr_assert_str_eq(json_string_value(json_object_get(e, "role")), roles[i]);
        json_t *lu = json_object_get(e, "last_used");
        if (i < 3)
            cr_assert(json_is_integer(lu) && json_integer_value(lu) > 1700000000, "%s: %s", ids[i], r.body);
        else
            cr_assert(json_is_null(lu), "the unused key has no last use: %s", r.body);
    }
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(keys, 3), "source")), "key");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(keys, 0), "source")), "sha256");
    cr_assert_null(strstr(r.body, old_key));
    cr_assert_null(strstr(r.body, digest), "the listing shows a digest");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&k, "GET", "/metrics", NULL, &r), 200);
    double v = 0;
    cr_assert(tfx_metric(r.body, "promod_api_key_last_used_seconds", "id=\"alice-2026\",role=\"marketer\"", &v),
              "%s", r.body);
    cr_assert_gt(v, 1700000000);
    cr_assert(tfx_metric(r.body, "promod_api_key_last_used_seconds", "id=\"legacy\",role=\"decide\"", &v));
    cr_assert_eq(v, 0);
    cr_assert_null(strstr(r.body, digest));
    tfx_resp_free(&r);
    /* a key in clear in the config is warned about at start */
    char *log = tfx_server_log(&k);
    cr_assert(strstr(log, "api key stored in clear") && strstr(log, "id=\"legacy\""), "%s", log);
    cr_assert_null(strstr(log, "id=\"ops\" hint"), "a hashed key was warned about: %s", log);
    free(log);
    tfx_server_cleanup(&k);

    /* retiring the old key: drop its line; it stops working, the new one goes on */
    snprintf(cfg, sizeof cfg, "api_keys = {\n    %s\n    %s\n  },", new_entry, admin_entry);
    tfx_server_init(&k, cfg);
    cr_assert_eq(tfx_server_start(&k), 0);
    cr_assert_eq(call_on(&k, old_key, "/api/v1/rules", &r), 401);
    tfx_resp_free(&r);
    cr_assert_eq(call_on(&k, new_key_s, "/api/v1/rules", &r), 200);
    tfx_resp_free(&r);
    tfx_server_cleanup(&k);

    char *out = NULL;
    cr_assert_eq(tfx_promod(&out, "key", "--role", "root", (char *)NULL), 2, "%s", out);
    cr_assert(strstr(out, "--role"), "%s", out);
    free(out);
    out = NULL;
    cr_assert_eq(tfx_promod(&out, "key", "--id", "has space", (char *)NULL), 2, "%s", out);
    free(out);
    free(old_key);
    free(old_entry);
    free(new_key_s);
    free(new_entry);
    free(admin_key);
    free(admin_entry);
}
