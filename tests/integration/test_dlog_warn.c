/*
 * test_dlog_warn.c — the eligible_never_passed warning: logged decides
 * replayed on the rule set, a campaign whose `eligible` was reached and
 * never passed is warned about (GET /api/v1/rules, the replay report,
 * `promod check --data`), one that passed once is not, a hook that is
 * `return true` counts as passed without a call, a hook that fails counts
 * as not passed, and an empty log gives no warning.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlog_tfx.h"
#include "fixture.h"

#define NCUST 20

static struct tfx_server srv;

/* never: no customer has country XX; once: only c0003 is 39 (18 + 21);
 * always: `return true` (known without a call); broken: its eligible raises an error */
static const char never_src[] =
    "return { id = \"never\", channels = { \"web\" }, priority = 50,\n"
    "  variants = { { id = \"A\", content = { h = \"n\" } } },\n"
    "  eligible = function(p, ctx)\n"
    "    return p.country == \"XX\"\n"
    "  end }\n";
static const char once_src[] =
    "return { id = \"once\", channels = { \"web\" }, priority = 40,\n"
    "  variants = { { id = \"A\", content = { h = \"o\" } } },\n"
    "  eligible = function(p, ctx) return p.age == 39 end }\n";
static const char always_src[] =
    "return { id = \"always\", channels = { \"web\" }, priority = 30,\n"
    "  variants = { { id = \"A\", content = { h = \"a\" } } },\n"
    "  eligible = function(p, ctx) return true end }\n";
static const char broken_src[] =
    "return { id = \"broken\", channels = { \"web\" }, priority = 20,\n"
    "  variants = { { id = \"A\", content = { h = \"b\" } } },\n"
    "  eligible = function(p, ctx) error(\"boom\") end }\n";

static void start(const char *cfg)
{
    tfx_server_init(&srv, cfg);
    tfx_write(&srv, "rules/never.lua", never_src);
    tfx_write(&srv, "rules/once.lua", once_src);
    tfx_write(&srv, "rules/always.lua", always_src);
    tfx_write(&srv, "rules/broken.lua", broken_src);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    dtfx_import(&srv, NCUST);
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(dlog_warn, .fini = teardown, .timeout = 300);

/* The warnings of GET /api/v1/rules for `file`, with code `code`. */
static int rules_warned(const char *file, const char *code, json_t **hit)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200, "%s", r.body);
    int n = 0;
    size_t i, k;
    json_t *f, *w;
    json_array_foreach(json_object_get(r.json, "files"), i, f) {
        const char *path = json_string_value(json_object_get(f, "file"));
        if (!path || !strstr(path, file))
            continue;
        json_array_foreach(json_object_get(f, "warnings"), k, w)
            if (!strcmp(json_string_value(json_object_get(w, "code")), code)) {
                n++;
                if (hit && !*hit)
                    *hit = json_deep_copy(w);
            }
    }
    tfx_resp_free(&r);
    return n;
}

Test(dlog_warn, never_passing_eligible_is_warned_once_passing_is_not)
{
    start("decision_log_sample = 1,");
    cr_assert_eq(dtfx_decides(&srv, NCUST, NCUST, 4), NCUST); /* each customer once */
    cr_assert_eq(dtfx_wait_logged(&srv, NCUST), NCUST);
    json_t *w = NULL;
    cr_assert_eq(rules_warned("never.lua", "eligible_never_passed", &w), 1);
    cr_assert_eq(json_integer_value(json_object_get(w, "line")), 3, "the line of eligible");
    cr_assert_eq(json_integer_value(json_object_get(w, "reached")), NCUST);
    cr_assert_eq(json_integer_value(json_object_get(w, "passed")), 0);
    cr_assert(strstr(json_string_value(json_object_get(w, "message")), "never"));
    json_decref(w);
    cr_assert_eq(rules_warned("once.lua", "eligible_never_passed", NULL), 0, "passed once");
    cr_assert_eq(rules_warned("always.lua", "eligible_never_passed", NULL), 0, "return true");
    cr_assert_eq(rules_warned("broken.lua", "eligible_never_passed", NULL), 1,
                 "a hook that fails every time never passes either");

    /* the replay report carries the counts and the warning of the edited rule set */
    const char *fixed = "return { id = \"never\", channels = { \"web\" }, priority = 50,\n"
                        "  variants = { { id = \"A\", content = { h = \"n\" } } },\n"
                        "  eligible = function(p, ctx) return p.country == \"FR\" end }\n";
    char *body = dtfx_files_body("broken.lua", broken_src, "{\"from\":0}");
    struct tfx_resp r;
    cr_assert_eq(dtfx_replay(&srv, body, &r), 200, "%s", r.body);
    json_t *el = json_object_get(r.json, "eligible");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(el, "once"), "reached")), NCUST,
                 "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(el, "once"), "passed")), 1);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(el, "always"), "passed")),
                 NCUST, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "warnings")), 2, "%s", r.body);
    tfx_resp_free(&r);
    free(body);
    body = dtfx_files_body("never.lua", fixed, "{\"from\":0}");
    cr_assert_eq(dtfx_replay(&srv, body, &r), 200, "%s", r.body);
    el = json_object_get(r.json, "eligible");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(el, "never"), "passed")),
                 NCUST / 5, "the edit passes the FR customers: %s", r.body);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r.json, "warnings"), i, x)
        cr_assert_str_neq(json_string_value(json_object_get(x, "campaign_id")), "never",
                          "the fixed edit is not warned about");
    tfx_resp_free(&r);
    free(body);

    /* promod check --data: the same warning as file:line, --strict fails */
    char *out = NULL;
    int st = tfx_promod(&out, "check", "-c", srv.config, "--data", srv.data, NULL);
    cr_assert_eq(st, 0, "warnings alone do not fail the check\n%s", out);
    cr_assert(strstr(out, "never.lua:3: warning: campaign \"never\""), "%s", out);
    cr_assert_null(strstr(out, "once.lua:3: warning: campaign"), "%s", out);
    free(out);
    st = tfx_promod(&out, "check", "-c", srv.config, "--data", srv.data, "--strict", NULL);
    cr_assert_eq(st, 1, "%s", out);
    free(out);
}

Test(dlog_warn, an_empty_log_gives_no_warning)
{
    start("decision_log_sample = 0,");
    cr_assert_eq(dtfx_decides(&srv, 40, NCUST, 4), 40);
    cr_assert_eq(rules_warned(".lua", "eligible_never_passed", NULL), 0);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "decisions_replayed")), 0);
    tfx_resp_free(&r);
    char *out = NULL;
    int st = tfx_promod(&out, "check", "-c", srv.config, "--data", srv.data, "--strict", NULL);
    cr_assert_null(strstr(out, "eligible returned false"), "%s", out);
    cr_assert(strstr(out, "0 logged decisions of the last day replayed"), "%s", out);
    (void)st;
    free(out);
}

Test(dlog_warn, a_hostile_context_is_logged_and_replayed)
{
    start("decision_log_sample = 1,");
    cr_assert_eq(dtfx_decides(&srv, NCUST, NCUST, 4), NCUST);
    cr_assert_eq(dtfx_wait_logged(&srv, NCUST), NCUST);
    /* a decide with a hostile context: logged and replayed like any other */
    const char *hostile = "{\"customer_id\":\"c0001\",\"channel\":\"web\",\"context\":"
                          "{\"x\":\"\\u2028\\\"]]}}--\",\"deep\":[[[[[[[[1]]]]]]]]}}";
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/decide", "Content-Type: application/json\r\n",
                          hostile, strlen(hostile), &r),
                 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(dtfx_wait_logged(&srv, NCUST + 1), NCUST + 1);
    json_t *w = NULL;
    cr_assert_eq(rules_warned("never.lua", "eligible_never_passed", &w), 1);
    cr_assert_eq(json_integer_value(json_object_get(w, "reached")), NCUST + 1);
    json_decref(w);
}
