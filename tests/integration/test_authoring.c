/*
 * test_authoring.c — the author tools end to end: `promod test` and
 * `promod check --test/--strict/--data`, warnings in GET /api/v1/rules,
 * POST /api/v1/rules/test, GET /api/v1/templates and POST /api/v1/campaigns
 * {"template", "params"} on a real server; every template of templates/
 * instantiated, checked and tested.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "campaigns_tfx.h"
#include "fixture.h"

static struct tfx_server srv;
static void teardown(void) { tfx_server_cleanup(&srv); }
TestSuite(authoring, .fini = teardown, .timeout = 300);

#define TDIR PROMOD_SRC "/templates"

static void start(void)
{
    tfx_server_init(&srv, "templates_dir = \"" TDIR "\",");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

#define CAMP                                                                                   \
    "return {\n  id = 'promo',\n  channels = { 'web' },\n"                                     \
    "  variants = { { id = 'A', content = { h = 'Hi {{first_name|you}}' } } },\n"              \
    "  eligible = function(p, ctx) return p.tier == 'gold', 'not gold' end,\n}\n"
#define PASSING                                                                                \
    "local c = campaign('promo')\n"                                                            \
    "test('gold', function() expect(c:eligible({ id = 'a', tier = 'gold' })).to_be(true) end)\n" \
    "test('content', function()\n"                                                             \
    "  expect(c:decide({ id = 'a', tier = 'gold', first_name = 'Ana' }).content.h).to_be('Hi Ana')\n" \
    "end)\n"
#define FAILING                                                                                \
    "local c = campaign('promo')\n"                                                            \
    "test('silver', function()\n"                                                              \
    "  expect(c:eligible({ id = 'a', tier = 'silver' })).to_be(true)\n"                        \
    "end)\n"

Test(authoring, promod_test_exit_status_and_file_line)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "rules/promo.lua", CAMP);
    tfx_write(&srv, "rules/promo_test.lua", PASSING);
    char *out;
    int rc = tfx_promod(&out, "test", srv.rules, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "2 passed, 0 failed"), "%s", out);
    free(out);
    /* the test file is not a campaign: check stays clean */
    rc = tfx_promod(&out, "check", srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    tfx_write(&srv, "rules/sub/more_test.lua", FAILING);
    rc = tfx_promod(&out, "test", srv.rules, (char *)NULL);
    cr_assert_eq(rc, 1, "%s", out);
    char want[600];
    snprintf(want, sizeof want, "%s/sub/more_test.lua:3: expected true, got false", srv.rules);
    cr_assert(strstr(out, want), "want %s in\n%s", want, out);
    free(out);
    rc = tfx_promod(&out, "check", "--test", srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    /* no tests at all: `promod test` says so and fails */
    tfx_unlink(&srv, "rules/promo_test.lua");
    tfx_unlink(&srv, "rules/sub/more_test.lua");
    rc = tfx_promod(&out, "test", srv.rules, (char *)NULL);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "no tests found"), "%s", out);
    free(out);
}

Test(authoring, check_warnings_strict_and_data_sample)
{
    start();
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/profiles/ann", NULL, "{\"first_name\":\"Ann\"}", &r), 201,
                 "%s", r.body);
    tfx_resp_free(&r);
    tfx_write(&srv, "rules/old.lua",
              "return {\n  id = 'old',\n  channels = { 'web' },\n"
              "  schedule = { ends = '2020-01-01T00:00:00Z' },\n"
              "  variants = { { id = 'A', content = { h = 'Hi {{frist_name|you}}' } } },\n"
              "  eligible = function() return true end,\n}\n");
    tfx_write(&srv, "rules/fine.lua",
              "return {\n  id = 'fine',\n  channels = { 'web' },\n  priority = 7,\n"
              "  variants = { { id = 'A', content = { h = 'Hi {{first_name|you}}' } } },\n"
              "  eligible = function() return true end,\n}\n");
    /* the server: warnings per file, the template one against the store's profiles */
    json_t *old = NULL, *fine = NULL;
    cr_assert(CTFX_WAIT(10000, ({
        tfx_resp_free(&r);
        tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r);
        old = fine = NULL;
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(r.json, "files"), i, f) {
            const char *p = json_string_value(json_object_get(f, "file"));
            if (strstr(p, "/old.lua") && json_object_get(f, "campaign_id"))
                old = f;
            if (strstr(p, "/fine.lua") && json_object_get(f, "campaign_id"))
                fine = f;
        }
        old && fine;
    })), "%s", r.body);
    json_t *ow = json_object_get(old, "warnings");
    cr_assert_eq(json_array_size(ow), 2, "%s", r.body);
    int codes = 0;
    size_t i;
    json_t *w;
    json_array_foreach(ow, i, w) {
        const char *c = json_string_value(json_object_get(w, "code"));
        if (!strcmp(c, "schedule_past")) {
            codes |= 1;
            cr_assert_eq(json_integer_value(json_object_get(w, "line")), 4);
        }
        if (!strcmp(c, "template_attribute_unseen")) {
            codes |= 2;
            cr_assert_eq(json_integer_value(json_object_get(w, "line")), 5);
        }
    }
    cr_assert_eq(codes, 3, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(fine, "warnings")), 0, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "profiles_sampled")), 1);
    /* warnings do not stop the file from loading */
    cr_assert_str_eq(json_string_value(json_object_get(old, "status")), "ok");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_server_stop(&srv), 0);

    /* the command line: warnings print, exit 0; --strict makes them fail */
    char *out;
    int rc = tfx_promod(&out, "check", srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "/old.lua:4: warning: the schedule ended"), "%s", out);
    cr_assert(!strstr(out, "frist_name"), "no sample without --data: %s", out);
    free(out);
    rc = tfx_promod(&out, "check", "--strict", srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 1, "%s", out);
    free(out);
    rc = tfx_promod(&out, "check", "--data", srv.data, srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "/old.lua:5: warning: template attribute {{frist_name}}"), "%s", out);
    free(out);
    /* without the warning-prone file, --strict passes */
    tfx_unlink(&srv, "rules/old.lua");
    rc = tfx_promod(&out, "check", "--strict", "--data", srv.data, srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
}

Test(authoring, rules_test_route)
{
    start();
    tfx_write(&srv, "rules/promo.lua", CAMP);
    char *js = ctfx_jstr(CAMP), *jt = ctfx_jstr(PASSING), *jf = ctfx_jstr(FAILING), *body;
    struct tfx_resp r = { 0 };
    /* the live campaign, and the posted tests */
    cr_assert(asprintf(&body, "{\"tests\":%s}", jt) > 0);
    cr_assert(CTFX_WAIT(10000, ({
        tfx_resp_free(&r);
        tfx_req(&srv, "POST", "/api/v1/rules/test", body, &r) == 200 &&
            json_integer_value(json_object_get(r.json, "passed")) == 2;
    })), "%s", r.body);
    free(body);
    tfx_resp_free(&r);
    /* an edited script (not saved) with failing tests: 200 with the failures */
    cr_assert(asprintf(&body, "{\"script\":%s,\"name\":\"promo.lua\",\"tests\":%s}", js, jf) > 0);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/test", body, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "failed")), 1, "%s", r.body);
    const char *e = json_string_value(
        json_object_get(json_array_get(json_object_get(r.json, "tests"), 0), "error"));
    cr_assert(e && strstr(e, "rules/promo_test.lua:3: expected true, got false"), "%s", r.body);
    free(body);
    tfx_resp_free(&r);
    /* bad input */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/test", "{\"script\":\"x\"}", &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "tests");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/test", "{\"tests\":\"\",\"bogus\":1}", &r), 400);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/test",
                         "{\"tests\":\"\",\"name\":\"../etc/passwd\"}", &r), 400);
    tfx_resp_free(&r);
    free(js);
    free(jt);
    free(jf);
}

Test(authoring, every_template_lists_instantiates_checks_and_tests)
{
    start();
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/templates", NULL, &r), 200, "%s", r.body);
    json_t *list = json_incref(json_object_get(r.json, "templates"));
    tfx_resp_free(&r);
    cr_assert_geq(json_array_size(list), 10);
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        json_t *ps = json_object_get(t, "params");
        cr_assert(json_array_size(ps) >= 2, "%s", name);
        json_t *p0 = json_array_get(ps, 0);
        cr_assert(json_object_get(p0, "type") && json_object_get(p0, "description") &&
                  json_object_get(p0, "required"), "%s", name);
        /* defaults: the template's own id, so its own tests apply */
        char body[200];
        snprintf(body, sizeof body, "{\"template\":\"%s\"}", name);
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns", body, &r), 201, "%s: %s", name, r.body);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "draft", "%s", r.body);
        char rel[200];
        snprintf(rel, sizeof rel, "rules/%s.lua", json_string_value(json_object_get(r.json, "id")));
        tfx_resp_free(&r);
        cr_assert(ctfx_exists(&srv, rel), "%s", rel);
        /* the template's test file beside the draft */
        char src[700];
        snprintf(src, sizeof src, "%s/%s_test.lua", TDIR, name);
        FILE *f = fopen(src, "rb");
        cr_assert_not_null(f, "%s", src);
        char *text = calloc(1, 1 << 16);
        size_t got = fread(text, 1, (1 << 16) - 1, f);
        cr_assert_gt(got, 0, "%s", src);
        fclose(f);
        char trel[200];
        snprintf(trel, sizeof trel, "rules/%s_test.lua", name);
        tfx_write(&srv, trel, text);
        free(text);
    }
    size_t n = json_array_size(list);
    json_decref(list);
    char *out;
    int rc = tfx_promod(&out, "check", srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    rc = tfx_promod(&out, "test", srv.rules, (char *)NULL);
    cr_assert_eq(rc, 0, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "%zu test files", n);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    /* the server loaded no test file as a campaign */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert(!strstr(r.body, "_test.lua"), "%s", r.body);
    tfx_resp_free(&r);
}

Test(authoring, template_instantiation_errors_and_injection)
{
    start();
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns", "{\"template\":\"nope\"}", &r), 404);
    cr_assert_str_eq(tfx_err_code(&r), "unknown_template");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns",
                         "{\"template\":\"cart_abandon\",\"params\":{\"discount\":\"ten\"}}", &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "params.discount");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns",
                         "{\"template\":\"cart_abandon\",\"params\":{\"x\":1}}", &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "params.x");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns",
                         "{\"template\":\"cart_abandon\",\"script\":\"return {}\"}", &r), 400);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns", "{\"template\":5}", &r), 400);
    tfx_resp_free(&r);
    /* a name written to break out of the string: stays a string */
    const char *evil = "x\" } os.exit(1) --\n]] end";
    json_t *b = json_pack("{s:s,s:s,s:{s:s,s:i}}", "template", "cart_abandon", "id", "cart-2",
                          "params", "name", evil, "discount", 5);
    char *bs = json_dumps(b, 0);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns", bs, &r), 201, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "name")), evil);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "id")), "cart-2");
    tfx_resp_free(&r);
    free(bs);
    json_decref(b);
    char *out;
    cr_assert_eq(tfx_promod(&out, "check", srv.rules, srv.plugins, (char *)NULL), 0, "%s", out);
    free(out);
    cr_assert(tfx_server_alive(&srv));
}
