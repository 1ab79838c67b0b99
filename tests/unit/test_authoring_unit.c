/*
 * test_authoring.c — the author tools below the server: campaign tests
 * (engine/ruletest.h), static warnings (rules_warnings in engine/rules.h)
 * and campaign templates (engine/templates.h), on real LuaJIT sandboxes
 * and the real templates/ directory.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/app.h"
#include "base/err.h"
#include "base/log.h"
#include "base/reqerr.h"
#include "engine/rules.h"
#include "engine/ruletest.h"
#include "engine/templates.h"
#include "base/buf.h"
#include "codec/codec.h"
#include "store/store.h"
#include "fixture.h"

struct app *g_app; /* rules.c reads it; no server here */

static const char *const chans[] = { "web", "app", "email" };

static void setup(void) { log_set_level(LOG_ERROR); }
TestSuite(authoring, .init = setup, .timeout = 60);

#define CAMP                                                                                       \
    "return {\n"                                                   /* 1 */                         \
    "  id = 'promo',\n"                                            /* 2 */                         \
    "  channels = { 'web' },\n"                                    /* 3 */                         \
    "  priority = 20,\n"                                           /* 4 */                         \
    "  variants = {\n"                                             /* 5 */                         \
    "    { id = 'A', weight = 1, content = { h = 'Hi {{first_name|you}}' } },\n"                   \
    "    { id = 'B', weight = 1, content = { h = 'Gold {{tier}}' } },\n"                           \
    "  },\n"                                                       /* 8 */                         \
    "  eligible = function(p, ctx)\n"                              /* 9 */                         \
    "    if ctx.country == 'DE' then return false, 'no DE' end\n"  /* 10 */                        \
    "    if p.boom then return p.boom.x end\n"                     /* 11 */                        \
    "    if p.write then p.tier = 'x' end\n"                       /* 12 */                        \
    "    return true\n"                                                                            \
    "  end,\n"                                                                                     \
    "  score = function(p, ctx) return (p.ltv or 0) / 10 end,\n"                                   \
    "  content = function(p, ctx, v) if p.tier == 'gold' then return 'B' end return v[1] end,\n" \
    "}\n"

static json_t *run1(const char *camp, const char *test)
{
    struct ruletest_src c = { "rules/promo.lua", camp, strlen(camp) };
    struct ruletest_src t = { "rules/promo_test.lua", test, strlen(test) };
    json_t *r = ruletest_run(&c, camp ? 1 : 0, &t, 1, chans, 3, NULL);
    cr_assert_not_null(r);
    return r;
}

static const char *err_of(json_t *r, int i)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(r, "tests"), (size_t)i),
                                             "error"));
}

static long num(json_t *r, const char *k) { return (long)json_integer_value(json_object_get(r, k)); }

Test(authoring, tests_pass_on_eligibility_score_variant_and_content)
{
    json_t *r = run1(CAMP, "local c = campaign('promo')\n"
                           "test('eligible', function()\n"
                           "  expect(c:eligible({ id = 'u1' }, {})).to_be(true)\n"
                           "  local ok, why = c:eligible({ id = 'u1' }, { country = 'DE' })\n"
                           "  assert_eq(ok, false)\n"
                           "  assert_eq(why, 'no DE')\n"
                           "end)\n"
                           "test('score', function() expect(c:score({ ltv = 500 })).to_be_near(50) end)\n"
                           "test('content', function()\n"
                           "  local o = c:decide({ id = 'u2', tier = 'gold' }, {})\n"
                           "  expect(o.variant).to_be('B')\n"
                           "  expect(o.content).to_equal({ h = 'Gold gold' })\n"
                           "  expect(c:decide({ id = 'u3', first_name = '<b>' }).content.h).to_be('Hi &lt;b&gt;')\n"
                           "end)\n");
    cr_assert_eq(num(r, "passed"), 3, "%s", json_dumps(r, 0));
    cr_assert_eq(num(r, "failed"), 0, "%s", json_dumps(r, 0));
    json_decref(r);
}

Test(authoring, failures_carry_the_test_line)
{
    json_t *r = run1(CAMP, "local c = campaign('promo')\n"                                  /* 1 */
                           "test('wrong variant', function()\n"                             /* 2 */
                           "  expect(c:decide({ id = 'u', tier = 'gold' }).variant).to_be('A')\n" /* 3 */
                           "end)\n"                                                         /* 4 */
                           "test('hook error', function()\n"                                /* 5 */
                           "  c:eligible({ id = 'u', boom = 5 }, {})\n"                     /* 6 */
                           "end)\n"                                                         /* 7 */
                           "test('read-only', function()\n"                                 /* 8 */
                           "  c:eligible({ id = 'u', write = true }, {})\n"                 /* 9 */
                           "end)\n"                                                         /* 10 */
                           "test('fine', function() assert_eq(1, 1) end)\n");               /* 11 */
    cr_assert_eq(num(r, "passed"), 1);
    cr_assert_eq(num(r, "failed"), 3);
    cr_assert(strstr(err_of(r, 0), "rules/promo_test.lua:3: expected \"A\", got \"B\""), "%s", err_of(r, 0));
    /* a hook's error: raised at the test's line, with the hook's own place */
    cr_assert(strstr(err_of(r, 1), "rules/promo_test.lua:6:"), "%s", err_of(r, 1));
    cr_assert(strstr(err_of(r, 1), "rules/promo.lua:11:"), "%s", err_of(r, 1));
    cr_assert(strstr(err_of(r, 2), "read-only"), "%s", err_of(r, 2));
    json_decref(r);
}

Test(authoring, broken_files_and_unknown_campaigns_fail)
{
    json_t *r = run1("return {\n  channels = { 'web' }\n}\n", "local c = campaign('promo')\n");
    cr_assert_geq(num(r, "failed"), 2, "%s", json_dumps(r, 0));
    cr_assert_gt(json_array_size(json_object_get(r, "errors")), 0);
    json_decref(r);
    r = run1(CAMP, "test('x', function()\n  campaign('nope')\nend)\n");
    cr_assert_eq(num(r, "failed"), 1);
    cr_assert(strstr(err_of(r, 0), "rules/promo_test.lua:2: no campaign \"nope\""), "%s", err_of(r, 0));
    json_decref(r);
    /* a test file that does not compile */
    r = run1(CAMP, "test('x', function()\n");
    cr_assert_eq(num(r, "failed"), 1);
    cr_assert(strstr(err_of(r, 0), "rules/promo_test.lua:"), "%s", err_of(r, 0));
    json_decref(r);
}

Test(authoring, runaway_tests_are_stopped)
{
    json_t *r = run1(CAMP, "test('loop', function() while true do end end)\n"
                           "test('after', function() assert_eq(2, 2) end)\n");
    cr_assert_eq(num(r, "failed"), 1);
    cr_assert_eq(num(r, "passed"), 1);
    json_decref(r);
}

Test(authoring, inline_tests_in_a_campaign)
{
    const char *camp = "return {\n  id = 'inl',\n  channels = { 'web' },\n"
                       "  variants = { { id = 'A', content = {} } },\n"
                       "  eligible = function(p) return p.ok == true end,\n"
                       "  tests = {\n"
                       "    yes = function(c) expect(c:eligible({ ok = true })).to_be(true) end,\n"
                       "    no = function(c) expect(c:eligible({ ok = false })).to_be(true) end,\n"
                       "  },\n}\n";
    struct ruletest_src c = { "rules/inl.lua", camp, strlen(camp) };
    json_t *r = ruletest_run(&c, 1, NULL, 0, chans, 3, NULL);
    cr_assert_eq(num(r, "passed"), 1, "%s", json_dumps(r, 0));
    cr_assert_eq(num(r, "failed"), 1);
    json_decref(r);
    /* and the loader's validation accepts the field */
    json_t *errs = json_array();
    cr_assert_eq(rules_validate_source("rules/inl.lua", RULES_CAMPAIGN, camp, strlen(camp), chans, 3,
                                       NULL, errs), 0, "%s", json_dumps(errs, 0));
    json_decref(errs);
}

/* --- warnings --------------------------------------------------------------- */

/* The warnings of a set of campaign sources (paths rules/0.lua ...), with
 * the channels web (policy 2/1d, placements home, cart) and email
 * (outbound); `profiles` may be NULL. */
static json_t *warnings_of(const char **srcs, int n, const json_t *profiles)
{
    struct rules_campaign camps[8];
    struct rules_warn_file files[8];
    char paths[8][32];
    static const char *const names[] = { "web", "email" };
    for (int i = 0; i < n; i++) {
        snprintf(paths[i], sizeof paths[i], "rules/%d.lua", i);
        json_t *errs = json_array();
        cr_assert_eq(rules_validate_campaign(paths[i], srcs[i], strlen(srcs[i]), names, 2, NULL, errs,
                                             &camps[i]), 0, "%s", json_dumps(errs, 0));
        json_decref(errs);
        camps[i].file = i;
        files[i] = (struct rules_warn_file){ paths[i], srcs[i], strlen(srcs[i]) };
    }
    struct rules_channel ch[2];
    memset(ch, 0, sizeof ch);
    ch[0].name = "web";
    ch[0].policy.n = 1;
    ch[0].policy.w[0] = (struct rules_cap){ .limit = 2, .secs = 86400, .unit = 'd', .n = 1, .label = "1d" };
    char *pl[] = { "home", "cart" };
    ch[0].placements = pl;
    ch[0].nplacements = 2;
    ch[1].name = "email";
    ch[1].outbound = 1;
    json_t *w = rules_warnings(camps, n, ch, 2, files, n, profiles, 1800000000);
    for (int i = 0; i < n; i++)
        rules_campaign_free(&camps[i]);
    cr_assert_not_null(w);
    return w;
}

/* How many warnings with `code` the file rules/<i>.lua has; its first
 * one's line in *line. */
static int has(json_t *w, int i, const char *code, int *line)
{
    char p[32];
    snprintf(p, sizeof p, "rules/%d.lua", i);
    size_t k;
    json_t *x;
    int n = 0;
    json_array_foreach(json_object_get(w, p), k, x) {
        if (!strcmp(json_string_value(json_object_get(x, "code")), code)) {
            if (!n && line)
                *line = (int)json_integer_value(json_object_get(x, "line"));
            n++;
        }
    }
    return n;
}

#define HEAD(id, prio) "return {\n  id = '" id "',\n  priority = " #prio ",\n"
#define ELIG "  eligible = function() return true end,\n}\n"
#define ELIGV "  variants = { { id = 'A', content = {} } },\n" ELIG

Test(authoring, warning_schedule_past)
{
    const char *s[] = { HEAD("a", 1) "  channels = { 'web' },\n"
                                     "  schedule = { ends = '2020-01-01T00:00:00Z' },\n" ELIGV,
                        HEAD("b", 2) "  channels = { 'web' },\n"
                                     "  schedule = { ends = '2030-01-01T00:00:00Z' },\n" ELIGV };
    json_t *w = warnings_of(s, 2, NULL);
    int line = 0;
    cr_assert_eq(has(w, 0, "schedule_past", &line), 1, "%s", json_dumps(w, 0));
    cr_assert_eq(line, 5);
    cr_assert_eq(has(w, 1, "schedule_past", NULL), 0);
    json_decref(w);
}

Test(authoring, warning_placement_unserved)
{
    const char *s[] = { HEAD("a", 1) "  channels = { 'web' },\n  placements = { 'footer' },\n" ELIGV,
                        HEAD("b", 2) "  channels = { 'email' },\n  placements = { 'home' },\n" ELIGV,
                        HEAD("c", 3) "  channels = { 'web', 'email' },\n  placements = { 'cart' },\n" ELIGV };
    json_t *w = warnings_of(s, 3, NULL);
    int line = 0;
    cr_assert_eq(has(w, 0, "placement_unserved", &line), 1, "%s", json_dumps(w, 0));
    cr_assert_eq(line, 5);
    cr_assert_eq(has(w, 1, "placement_unserved", NULL), 1);
    cr_assert_eq(has(w, 2, "placement_unserved", NULL), 0);
    json_decref(w);
}

Test(authoring, warning_variant_weights_zero)
{
    const char *s[] = {
        HEAD("a", 1) "  channels = { 'web' },\n  variants = {\n"
                     "    { id = 'A', weight = 0, content = {} },\n    { id = 'B', weight = 0, content = {} },\n  },\n" ELIG,
        HEAD("b", 2) "  channels = { 'web' },\n  variants = {\n"
                     "    { id = 'A', weight = 0, content = {} },\n    { id = 'B', weight = 1, content = {} },\n  },\n" ELIG
    };
    json_t *w = warnings_of(s, 2, NULL);
    cr_assert_eq(has(w, 0, "variant_weights_zero", NULL), 1, "%s", json_dumps(w, 0));
    cr_assert_eq(has(w, 1, "variant_weights_zero", NULL), 0);
    json_decref(w);
}

Test(authoring, warning_priority_tie)
{
    const char *s[] = { HEAD("zeta", 40) "  channels = { 'web' },\n  placements = { 'home' },\n" ELIGV,
                        HEAD("alpha", 40) "  channels = { 'web' },\n" ELIGV,
                        HEAD("other", 40) "  channels = { 'web' },\n  placements = { 'cart' },\n"
                                          "  status = 'paused',\n" ELIGV,
                        HEAD("cartonly", 40) "  channels = { 'web' },\n  placements = { 'cart' },\n"
                                             "  score = function() return 1 end,\n" ELIGV };
    json_t *w = warnings_of(s, 4, NULL);
    cr_assert_eq(has(w, 0, "priority_tie", NULL), 1, "%s", json_dumps(w, 0));
    cr_assert_eq(has(w, 1, "priority_tie", NULL), 1);
    char *all = json_dumps(w, 0);
    cr_assert(strstr(all, "ties are decided by id, so \\\"alpha\\\" ranks first"), "%s", all);
    free(all);
    cr_assert_eq(has(w, 2, "priority_tie", NULL), 0); /* paused */
    cr_assert_eq(has(w, 3, "priority_tie", NULL), 0); /* has a score hook */
    json_decref(w);
}

Test(authoring, warning_caps)
{
    const char *s[] = {
        HEAD("a", 1) "  channels = { 'web' },\n  caps = { customer = { { 5, '1d' }, { 1, '7d' } } },\n" ELIGV,
        HEAD("b", 2) "  channels = { 'web' },\n  caps = { customer = { { 5, '1d' } } },\n" ELIGV,
        HEAD("c", 3) "  channels = { 'web' },\n  caps = { customer = { { 10, '7d' } }, total = { { 3, '30d' } } },\n" ELIGV,
        HEAD("d", 4) "  channels = { 'web' },\n  caps = { customer = { { 1, '1d' }, { 3, '7d' } } },\n" ELIGV,
    };
    json_t *w = warnings_of(s, 4, NULL);
    int line = 0;
    cr_assert_eq(has(w, 0, "cap_never_binds", &line), 1, "%s", json_dumps(w, 0));
    cr_assert_eq(line, 5);
    cr_assert_eq(has(w, 1, "cap_above_policy", NULL), 1); /* web allows 2/1d */
    cr_assert_eq(has(w, 2, "cap_never_binds", NULL), 1);  /* total 3/30d before 10/7d */
    cr_assert_eq(has(w, 3, "cap_never_binds", NULL) + has(w, 3, "cap_above_policy", NULL), 0);
    json_decref(w);
}

Test(authoring, warning_template_attribute_unseen)
{
    const char *s[] = { HEAD("a", 1) "  channels = { 'web' },\n  variants = { { id = 'A', content = {\n"
                                     "    h = 'Hi {{frist_name|you}}, {{address.city}} {{coupon}}' } } },\n" ELIG,
                        HEAD("b", 2) "  channels = { 'web' },\n  variants = { { id = 'A', content = {\n"
                                     "    h = 'Hi {{first_name|you}} {{p.address.city}}' } } },\n" ELIG };
    json_t *prof = json_loads("[{\"id\":\"u1\",\"first_name\":\"Ana\"},"
                              "{\"id\":\"u2\",\"address\":{\"city\":\"Lyon\"}}]", 0, NULL);
    json_t *w = warnings_of(s, 2, prof);
    int line = 0;
    cr_assert_eq(has(w, 0, "template_attribute_unseen", &line), 1, "%s", json_dumps(w, 0));
    cr_assert_eq(line, 6);
    cr_assert_eq(has(w, 1, "template_attribute_unseen", NULL), 0, "%s", json_dumps(w, 0));
    json_decref(w);
    /* no sample: no judgement */
    w = warnings_of(s, 2, NULL);
    cr_assert_eq(has(w, 0, "template_attribute_unseen", NULL), 0);
    json_decref(w);
    json_decref(prof);
}

/* --- templates --------------------------------------------------------------- */

#define TDIR PROMOD_SRC "/templates"

Test(authoring, every_template_instantiates_validates_and_passes_its_tests)
{
    json_t *l = templates_list(TDIR);
    cr_assert_geq(json_array_size(l), 10, "%s", json_dumps(l, 0));
    size_t i;
    json_t *t;
    json_array_foreach(l, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        cr_assert_null(json_object_get(t, "error"), "%s: %s", name,
                       json_string_value(json_object_get(t, "error")));
        cr_assert(json_is_array(json_object_get(t, "params")), "%s", name);
        char *src = NULL, id[160];
        size_t len;
        struct reqerr e = { 0 };
        cr_assert_eq(templates_instantiate(TDIR, name, NULL, &src, &len, id, sizeof id, &e), 0,
                     "%s: %s", name, e.message);
        char path[300];
        snprintf(path, sizeof path, "rules/%s.lua", id);
        json_t *errs = json_array();
        cr_assert_eq(rules_validate_source(path, RULES_CAMPAIGN, src, len, NULL, 0, NULL, errs), 0,
                     "%s: %s", name, json_dumps(errs, 0));
        json_decref(errs);
        /* the template's own tests, against the instantiated draft */
        char tpath[300];
        snprintf(tpath, sizeof tpath, "%s/%s_test.lua", TDIR, name);
        size_t tl;
        int rc;
        char *tsrc = rules_read_file(tpath, &tl, &rc);
        cr_assert_not_null(tsrc, "%s has no test file", name);
        struct ruletest_src cs = { path, src, len }, ts = { tpath, tsrc, tl };
        json_t *r = ruletest_run(&cs, 1, &ts, 1, NULL, 0, NULL);
        cr_assert_eq(num(r, "failed"), 0, "%s: %s", name, json_dumps(r, 0));
        cr_assert_gt(num(r, "passed"), 0, "%s", name);
        json_decref(r);
        free(tsrc);
        free(src);
    }
    json_decref(l);
}

Test(authoring, template_params_are_data_never_code)
{
    const char *evil = "x\" } os.exit(1) --\n]] end return { --\\ \xc3\xa9";
    json_t *p = json_pack("{s:s,s:s,s:i}", "id", "evil-1", "name", evil, "discount", 25);
    char *src = NULL, id[160];
    size_t len;
    struct reqerr e = { 0 };
    cr_assert_eq(templates_instantiate(TDIR, "cart_abandon", p, &src, &len, id, sizeof id, &e), 0,
                 "%s", e.message);
    cr_assert_str_eq(id, "evil-1");
    struct rules_campaign c;
    json_t *errs = json_array();
    cr_assert_eq(rules_validate_campaign("rules/evil-1.lua", src, len, chans, 3, NULL, errs, &c), 0,
                 "%s\n%s", json_dumps(errs, 0), src);
    cr_assert_str_eq(c.name, evil); /* the very string, as data */
    cr_assert_str_eq(c.id, "evil-1");
    rules_campaign_free(&c);
    json_decref(errs);
    /* the line count is the template's: messages keep their lines */
    size_t tl;
    int rc;
    char *t = rules_read_file(TDIR "/cart_abandon.lua", &tl, &rc);
    int nl = 0, tnl = 0;
    for (size_t i = 0; i < len; i++)
        nl += src[i] == '\n';
    for (size_t i = 0; i < tl; i++)
        tnl += t[i] == '\n';
    cr_assert_eq(nl, tnl);
    free(t);
    free(src);
    json_decref(p);
}

Test(authoring, template_errors_are_clear)
{
    char *src = NULL, id[160];
    size_t len;
    struct reqerr e = { 0 };
    cr_assert_neq(templates_instantiate(TDIR, "nope", NULL, &src, &len, id, sizeof id, &e), 0);
    cr_assert_eq(e.status, 404);
    cr_assert_str_eq(e.code, "unknown_template");
    reqerr_clear(&e);
    cr_assert_neq(templates_instantiate(TDIR, "../rules/x", NULL, &src, &len, id, sizeof id, &e), 0);
    cr_assert_eq(e.status, 400);
    reqerr_clear(&e);
    json_t *p = json_pack("{s:s}", "discount", "lots");
    cr_assert_neq(templates_instantiate(TDIR, "cart_abandon", p, &src, &len, id, sizeof id, &e), 0);
    cr_assert_eq(e.status, 400);
    cr_assert_str_eq(e.code, "invalid_field");
    cr_assert_str_eq(e.field, "params.discount");
    json_decref(p);
    reqerr_clear(&e);
    p = json_pack("{s:f}", "min_cart_value", 12.5);
    json_object_set_new(p, "colour", json_string("red"));
    cr_assert_neq(templates_instantiate(TDIR, "cart_abandon", p, &src, &len, id, sizeof id, &e), 0);
    cr_assert_str_eq(e.code, "unknown_field");
    cr_assert_str_eq(e.field, "params.colour");
    json_decref(p);
    reqerr_clear(&e);
    p = json_pack("{s:s}", "id", "bad id!");
    cr_assert_neq(templates_instantiate(TDIR, "cart_abandon", p, &src, &len, id, sizeof id, &e), 0);
    cr_assert_str_eq(e.field, "params.id");
    json_decref(p);
    reqerr_clear(&e);
    p = json_pack("{s:[s,i]}", "channels", "email", 3);
    cr_assert_neq(templates_instantiate(TDIR, "cart_abandon", p, &src, &len, id, sizeof id, &e), 0);
    cr_assert_str_eq(e.field, "params.channels");
    json_decref(p);
    reqerr_clear(&e);
    cr_assert_null(src);
}

Test(authoring, lua_literal_escapes_everything_but_printable_ascii)
{
    json_t *v = json_string("a\"b\\c\nd]]");
    char *s = NULL;
    cr_assert_eq(templates_lua_literal(v, &s), 0);
    cr_assert_str_eq(s, "\"a\\034b\\092c\\010d]]\"");
    free(s);
    json_decref(v);
    v = json_real(1.5);
    cr_assert_eq(templates_lua_literal(v, &s), 0);
    cr_assert_str_eq(s, "1.5");
    free(s);
    json_decref(v);
    v = json_pack("{s:i}", "a", 1);
    cr_assert_eq(templates_lua_literal(v, &s), ERR_INVAL);
    json_decref(v);
}

/* The template warning's sample: spread, no duplicates, bounded. */
Test(authoring, profile_sample_is_spread_and_bounded)
{
    char dir[256];
    tfx_tmpdir(dir, sizeof dir);
    struct store *st;
    struct store_opts o = { .dir = dir, .sync_interval_ms = 50 };
    cr_assert_eq(store_open(&o, &st), 0);
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    for (int i = 0; i < 400; i++) {
        char id[32];
        snprintf(id, sizeof id, "%c-%04d", "0AMaz"[i % 5], i);
        json_t *p = json_pack("{s:i}", "n", i);
        struct buf b = BUF_INIT;
        cr_assert_eq(codec_json_to_msgpack(p, &b), 0);
        cr_assert_eq(store_put(t, STORE_PROFILES, id, strlen(id), b.p, b.len), 0);
        buf_free(&b);
        json_decref(p);
    }
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    json_t *a = rules_sample_profiles(t, 40);
    cr_assert_eq(json_array_size(a), 40);
    json_t *ids = json_object();
    int first[5] = { 0 };
    size_t i;
    json_t *p;
    json_array_foreach(a, i, p) {
        const char *id = json_string_value(json_object_get(p, "id"));
        cr_assert_null(json_object_get(ids, id), "%s twice", id);
        json_object_set_new(ids, id, json_true());
        cr_assert(json_is_integer(json_object_get(p, "n")));
        first[strchr("0AMaz", id[0]) - "0AMaz"] = 1;
    }
    /* ids from more than one part of the key space */
    cr_assert_geq(first[0] + first[1] + first[2] + first[3] + first[4], 3);
    json_decref(ids);
    json_decref(a);
    /* more asked than there are: each once */
    a = rules_sample_profiles(t, 1000);
    cr_assert_eq(json_array_size(a), 400);
    json_decref(a);
    store_txn_end(t);
    store_close(st);
    tfx_rmrf(dir);
}
