/*
 * test_simulate.c — POST /api/v1/rules/simulate: a decide with explain for
 * one customer against a campaign script that is not saved (the console's
 * simulate panel).  The edited script decides, the saved one keeps
 * serving; nothing is reserved, counted or stored; script errors come back
 * at their line; hook errors show in explain and not in /metrics; models
 * are served as in a live decide; bad input is refused field by field.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaigns_tfx.h"
#include "fixture.h"
#include "models_tfx.h"

static struct tfx_server srv;

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(simulate, .fini = teardown, .timeout = 180);

#define MKT "Authorization: Bearer marketer-key-1\r\n"
#define DEC "Authorization: Bearer decide-key-12\r\n"

/* The saved campaign: gold customers only, one offer a day. */
static const char saved[] =
    "return { id = \"gold-deal\", channels = { \"web\" }, placements = { \"home\" },\n"
    "  caps = { customer = { { 1, \"1d\" } } },\n"
    "  variants = { { id = \"A\", content = { headline = \"Hi {{first_name|there}}\" } } },\n"
    "  eligible = function(p, ctx) return p.tier == \"gold\", \"not gold\" end }\n";

static void start(void)
{
    tfx_server_init(&srv, "api_keys = { { id = \"mk\", key = \"marketer-key-1\", role = \"marketer\" "
                          "}, { id = \"site\", key = \"decide-key-12\", role = \"decide\" } },");
    tfx_write(&srv, "rules/gold-deal.lua", saved);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/profiles/ann", MKT,
                          "{\"first_name\":\"<img src=x onerror=alert(1)>\",\"tier\":\"silver\"}", &r),
                 201, "%s", r.body);
    tfx_resp_free(&r);
}

/* POST a simulation of `script` with extra body fields; the response in *r. */
static int sim(const char *script, const char *fields, struct tfx_resp *r)
{
    char *js = ctfx_jstr(script);
    char *body = NULL;
    if (asprintf(&body, "{\"script\":%s,\"name\":\"gold-deal.lua\"%s%s}", js, fields ? "," : "",
                 fields ? fields : "") < 0)
        abort();
    int st = ctfx_req(&srv, "POST", "/api/v1/rules/simulate", MKT, body, r);
    free(js);
    free(body);
    return st;
}

static json_t *first_explain(const struct tfx_resp *r)
{
    return json_array_get(json_object_get(r->json, "explain"), 0);
}

static int offers(const struct tfx_resp *r) { return (int)json_array_size(json_object_get(r->json, "offers")); }

static int real_decide(const char *cust, struct tfx_resp *r)
{
    char body[300];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"channel\":\"web\",\"placement\":\"home\",\"explain\":true}", cust);
    return ctfx_req(&srv, "POST", "/api/v1/decide", DEC, body, r);
}

static char *edited(void)
{
    char *s = strdup(saved);
    char *p = strstr(s, "p.tier == \"gold\"");
    memcpy(p, "p.tier ~= \"gold\"", 16); /* now: everyone but gold */
    return s;
}

Test(simulate, runs_the_edited_script_and_the_saved_one_keeps_serving)
{
    start();
    struct tfx_resp r;
    char *ed = edited();
    cr_assert_eq(sim(ed, "\"customer_id\":\"ann\",\"channel\":\"web\",\"placement\":\"home\"", &r), 200,
                 "%s", r.body);
    cr_assert_eq(json_object_get(r.json, "simulated"), json_true());
    cr_assert_eq(json_object_get(r.json, "dry_run"), json_true());
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "campaign_id")), "gold-deal");
    cr_assert_eq(offers(&r), 1, "%s", r.body);
    json_t *o = json_array_get(json_object_get(r.json, "offers"), 0);
    /* the template rendered against the profile, HTML-escaped as live */
    const char *h = json_string_value(json_object_get(json_object_get(o, "content"), "headline"));
    cr_assert_str_eq(h, "Hi &lt;img src=x onerror=alert(1)&gt;", "%s", r.body);
    json_t *x = first_explain(&r);
    cr_assert_eq(json_object_get(x, "eligible"), json_true(), "%s", r.body);
    cr_assert_eq(json_object_get(x, "selected"), json_true(), "%s", r.body);
    tfx_resp_free(&r);
    /* the saved script still decides live: ann is not gold */
    cr_assert_eq(real_decide("ann", &r), 200, "%s", r.body);
    cr_assert_eq(offers(&r), 0, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(first_explain(&r), "reason")), "not gold");
    tfx_resp_free(&r);
    /* and the saved script simulated says the same, with its reason */
    cr_assert_eq(sim(saved, "\"customer_id\":\"ann\",\"channel\":\"web\",\"placement\":\"home\"", &r), 200);
    cr_assert_eq(offers(&r), 0);
    cr_assert_str_eq(json_string_value(json_object_get(first_explain(&r), "reason")), "not gold");
    tfx_resp_free(&r);
    /* placements and context apply */
    cr_assert_eq(sim(ed, "\"customer_id\":\"ann\",\"channel\":\"web\",\"placement\":\"footer\"", &r), 200);
    cr_assert_eq(offers(&r), 0);
    cr_assert_str_eq(json_string_value(json_object_get(first_explain(&r), "reason")),
                     "placement not targeted");
    tfx_resp_free(&r);
    const char *ctxs =
        "return { id = \"gold-deal\", channels = { \"web\" },\n"
        "  variants = { { id = \"A\", content = { c = \"{{first_name}}\" } } },\n"
        "  eligible = function(p, ctx) return ctx.country == \"FR\", \"not FR\" end }\n";
    cr_assert_eq(sim(ctxs, "\"customer_id\":\"ann\",\"channel\":\"web\",\"context\":{\"country\":\"FR\"}", &r),
                 200);
    cr_assert_eq(offers(&r), 1, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(sim(ctxs, "\"customer_id\":\"ann\",\"channel\":\"web\",\"context\":{\"country\":\"DE\"}", &r),
                 200);
    cr_assert_eq(offers(&r), 0, "%s", r.body);
    tfx_resp_free(&r);
    free(ed);
}

Test(simulate, name_gives_the_default_id_and_the_file_in_messages)
{
    start();
    struct tfx_resp r;
    const char *noid =
        "return { channels = { \"web\" },\n"
        "  variants = { { id = \"A\", content = { h = \"x\" } } },\n"
        "  eligible = function(p, ctx) return p.nope.x end }\n";
    char *js = ctfx_jstr(noid);
    char body[1200];
    snprintf(body, sizeof body, "{\"script\":%s,\"name\":\"promo/summer.lua\",\"customer_id\":\"ann\","
             "\"channel\":\"web\"}", js);
    free(js);
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/simulate", MKT, body, &r), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "campaign_id")), "promo.summer");
    const char *err = json_string_value(json_object_get(first_explain(&r), "error"));
    cr_assert(err && strstr(err, "rules/promo/summer.lua:3:"), "%s", r.body);
    tfx_resp_free(&r);
}

/* validate takes the same names (the console's editor sends the file's path) */
Test(simulate, validate_takes_a_path_under_rules)
{
    start();
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/validate", MKT,
                          "{\"name\":\"promo/summer.lua\",\"script\":\"return {\\n  priority = 'x',\\n}\"}", &r),
                 422, "%s", r.body);
    const char *first = json_string_value(json_array_get(json_object_get(r.json, "errors"), 0));
    cr_assert(first && !strncmp(first, "rules/promo/summer.lua:", 23), "%s", r.body);
    tfx_resp_free(&r);
    static const char *bad[] = { "../x.lua", "a/../x.lua", "/x.lua", "a//x.lua", "a/.x.lua", "a/" };
    for (int i = 0; i < 6; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"name\":\"%s\",\"script\":\"return {}\"}", bad[i]);
        cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/validate", MKT, body, &r), 400, "%s: %s", bad[i],
                     r.body);
        tfx_resp_free(&r);
    }
}

Test(simulate, reserves_and_counts_nothing)
{
    start();
    struct tfx_resp r;
    char *ed = edited();
    double counters0 = -1, counters1 = -1;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    cr_assert(tfx_metric(r.body, "promod_store_entries", "db=\"counters\"", &counters0));
    tfx_resp_free(&r);
    for (int i = 0; i < 3; i++) { /* a cap of 1 a day: a live decide would be capped after one */
        cr_assert_eq(sim(ed, "\"customer_id\":\"bob\",\"channel\":\"web\",\"placement\":\"home\"", &r), 200);
        cr_assert_eq(offers(&r), 1, "simulation %d: %s", i, r.body);
        tfx_resp_free(&r);
    }
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    cr_assert(!strstr(r.body, "promod_offers_served_total{campaign=\"gold-deal\"}"), "%s", r.body);
    /* no counter record was written, and bob is still unknown */
    cr_assert(tfx_metric(r.body, "promod_store_entries", "db=\"counters\"", &counters1));
    cr_assert_eq(counters1, counters0, "counters %g -> %g", counters0, counters1);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/profiles/bob", MKT, NULL, &r), 404, "%s", r.body);
    tfx_resp_free(&r);
    /* caps are read from the store as live: after a real offer, the simulation is capped */
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/profiles/gil", MKT, "{\"tier\":\"gold\"}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(real_decide("gil", &r), 200);
    cr_assert_eq(offers(&r), 1, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(sim(saved, "\"customer_id\":\"gil\",\"channel\":\"web\",\"placement\":\"home\"", &r), 200);
    cr_assert_eq(offers(&r), 0, "%s", r.body);
    cr_assert(json_object_get(first_explain(&r), "capped"), "%s", r.body);
    tfx_resp_free(&r);
    free(ed);
}

Test(simulate, a_paused_campaign_is_simulated_as_if_live)
{
    start();
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/campaigns/gold-deal/pause", MKT, NULL, &r), 200, "%s",
                 r.body);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/profiles/gil", MKT, "{\"tier\":\"gold\"}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(real_decide("gil", &r), 200);
    cr_assert_eq(offers(&r), 0);
    cr_assert_str_eq(json_string_value(json_object_get(first_explain(&r), "reason")), "status paused");
    tfx_resp_free(&r);
    cr_assert_eq(sim(saved, "\"customer_id\":\"gil\",\"channel\":\"web\",\"placement\":\"home\"", &r), 200);
    cr_assert_eq(offers(&r), 1, "%s", r.body);
    tfx_resp_free(&r);
}

Test(simulate, script_errors_come_back_at_their_line)
{
    start();
    struct tfx_resp r;
    /* syntax error on line 3 */
    cr_assert_eq(sim("return {\n  channels = { \"web\" },\n  variants = { { id = \"A\" ]\n}\n",
                     "\"customer_id\":\"ann\",\"channel\":\"web\"", &r), 422, "%s", r.body);
    json_t *e = json_object_get(r.json, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "invalid_script");
    cr_assert_str_eq(json_string_value(json_object_get(e, "field")), "script");
    const char *first = json_string_value(json_array_get(json_object_get(e, "errors"), 0));
    cr_assert(first && !strncmp(first, "rules/gold-deal.lua:3:", 22), "%s", r.body);
    tfx_resp_free(&r);
    /* validation error (no eligible), with its line */
    cr_assert_eq(sim("return { channels = { \"web\" },\n variants = { { id = \"A\", content = { h = \"x\" } } } }\n",
                     "\"customer_id\":\"ann\",\"channel\":\"web\"", &r), 422, "%s", r.body);
    first = json_string_value(json_array_get(json_object_get(json_object_get(r.json, "error"), "errors"), 0));
    cr_assert(first && strstr(first, "rules/gold-deal.lua:") && strstr(first, "eligible"), "%s", r.body);
    tfx_resp_free(&r);
}

Test(simulate, hook_errors_show_in_explain_not_in_metrics)
{
    start();
    struct tfx_resp r;
    const char *bad =
        "return { id = \"gold-deal\", channels = { \"web\" },\n"
        "  variants = { { id = \"A\", content = { h = \"x\" } } },\n"
        "  eligible = function(p, ctx)\n"
        "    return p.missing.field\n"
        "  end }\n";
    cr_assert_eq(sim(bad, "\"customer_id\":\"ann\",\"channel\":\"web\"", &r), 200, "%s", r.body);
    const char *err = json_string_value(json_object_get(first_explain(&r), "error"));
    cr_assert(err && strstr(err, "rules/gold-deal.lua:4:"), "%s", r.body);
    tfx_resp_free(&r);
    const char *loop =
        "return { id = \"gold-deal\", channels = { \"web\" },\n"
        "  variants = { { id = \"A\", content = { h = \"x\" } } },\n"
        "  eligible = function(p, ctx) while true do end end }\n";
    cr_assert_eq(sim(loop, "\"customer_id\":\"ann\",\"channel\":\"web\"", &r), 200, "%s", r.body);
    err = json_string_value(json_object_get(first_explain(&r), "error"));
    cr_assert(err && strstr(err, "budget"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    cr_assert(!strstr(r.body, "promod_hook_errors_total{"), "simulation counted: %s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(real_decide("ann", &r), 200); /* the server is fine */
    tfx_resp_free(&r);
}

/* Models are served in a simulation as in a live decide: the live
 * version, its feature functions loaded into the simulation's own Lua
 * state.  The shop (models_tfx.h): gold customers convert on "shoe", bronze
 * ones do not, so model "buy" says ~1 for g001 and ~0 for b001. */
Test(simulate, models_are_served_in_a_simulation)
{
    tfx_server_init(&srv, "test_clock = true, event_retention_days = 800,");
    tfx_write(&srv, "rules/gold-deal.lua", saved);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    mtfx_shop(&srv);
    mtfx_model(&srv, "buy", "shoe",
               "{ 'is_gold', fn = function(p, ctx) return p.tier == 'gold' end }, 'age'", NULL);
    cr_assert(mtfx_wait_model(&srv, "buy", "ok"));
    json_t *last = mtfx_train(&srv, "buy", 0);
    cr_assert(json_is_true(json_object_get(last, "ok")), "%s", json_dumps(last, 0));
    json_decref(last);
    double pg = mtfx_propensity(&srv, "buy", "g001"), pb = mtfx_propensity(&srv, "buy", "b001");
    cr_assert(pg > 0.9 && pb < 0.1, "%g %g", pg, pb);

    struct tfx_resp r;
    const char *hook =
        "return { id = \"gold-deal\", channels = { \"web\" },\n"
        "  variants = { { id = \"A\", content = { h = \"x\" } } },\n"
        "  eligible = function(p, ctx)\n"
        "    local v, why = promo.predict(p, \"buy\")\n"
        "    if v == nil then return false, why end\n"
        "    return v > 0.5, \"predicted \" .. v\n"
        "  end }\n";
    cr_assert_eq(sim(hook, "\"customer_id\":\"g001\",\"channel\":\"web\"", &r), 200, "%s", r.body);
    cr_assert_eq(offers(&r), 1, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(sim(hook, "\"customer_id\":\"b001\",\"channel\":\"web\"", &r), 200, "%s", r.body);
    cr_assert_eq(offers(&r), 0, "%s", r.body);
    const char *why = json_string_value(json_object_get(first_explain(&r), "reason"));
    cr_assert(why && strstr(why, "predicted "), "%s", r.body);
    tfx_resp_free(&r);

    const char *ranked =
        "return { id = \"gold-deal\", channels = { \"web\" },\n"
        "  variants = { { id = \"A\", content = { h = \"x\" } } },\n"
        "  eligible = function(p, ctx) return true end,\n"
        "  score = { model = \"buy\", value = 5 } }\n";
    cr_assert_eq(sim(ranked, "\"customer_id\":\"g001\",\"channel\":\"web\"", &r), 200, "%s", r.body);
    cr_assert_eq(offers(&r), 1, "%s", r.body);
    json_t *m = json_object_get(first_explain(&r), "model");
    cr_assert_not_null(m, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(m, "id")), "buy");
    cr_assert_eq(json_integer_value(json_object_get(m, "version")), 1);
    cr_assert_float_eq(json_number_value(json_object_get(m, "propensity")), pg, 1e-9, "%s", r.body);
    cr_assert_float_eq(json_number_value(json_object_get(m, "expected_value")), 5 * pg, 1e-9);
    tfx_resp_free(&r);
    cr_assert_eq(real_decide("g001", &r), 200); /* the server is fine */
    tfx_resp_free(&r);
}

Test(simulate, refuses_bad_requests)
{
    start();
    static const struct { const char *body; int status; const char *code, *field; } cases[] = {
        { "{\"name\":\"x.lua\",\"customer_id\":\"ann\",\"channel\":\"web\"}", 400, "missing_field", "script" },
        { "{\"script\":5,\"customer_id\":\"ann\",\"channel\":\"web\"}", 400, "invalid_field", "script" },
        { "{\"script\":\"return {}\",\"channel\":\"web\"}", 400, "missing_field", "customer_id" },
        { "{\"script\":\"return {}\",\"customer_id\":\"a/b\",\"channel\":\"web\"}", 400, "invalid_id", "customer_id" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\"}", 400, "missing_field", "channel" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"context\":[1]}", 400,
          "invalid_field", "context" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"limit\":0}", 400,
          "invalid_field", "limit" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"name\":\"../x.lua\"}", 400,
          "invalid_field", "name" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"name\":\"a//x.lua\"}", 400,
          "invalid_field", "name" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"name\":\"a/.x.lua\"}", 400,
          "invalid_field", "name" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"name\":\"/x.lua\"}", 400,
          "invalid_field", "name" },
        { "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\",\"dry_run\":false}", 400,
          "unknown_field", "dry_run" },
        { "{\"script\":\"return { channels = { 'web' }, variants = { { id = 'A', content = { h = 'x' } } }, "
          "eligible = function() return true end }\",\"customer_id\":\"ann\",\"channel\":\"nope\"}", 422,
          "unknown_channel", "channel" },
        { "{\"script\":\"return { channels = { 'web' }, variants = { { id = 'A', content = { h = 'x' } } }, "
          "eligible = function() return true end }\",\"customer_id\":\"ann\",\"channel\":\"email\"}", 422,
          "channel_not_listed", "channel" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tfx_resp r;
        cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/simulate", MKT, cases[i].body, &r),
                     cases[i].status, "%s -> %d %s", cases[i].body, r.status, r.body);
        json_t *e = json_object_get(r.json, "error");
        cr_assert_str_eq(json_string_value(json_object_get(e, "code")), cases[i].code, "%s", r.body);
        cr_assert_str_eq(json_string_value(json_object_get(e, "field")), cases[i].field, "%s", r.body);
        tfx_resp_free(&r);
    }
    /* a decide key may not simulate */
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/simulate", DEC,
                          "{\"script\":\"return {}\",\"customer_id\":\"ann\",\"channel\":\"web\"}", &r),
                 403, "%s", r.body);
    tfx_resp_free(&r);
}

static void *sim_many(void *arg)
{
    (void)arg;
    long bad = 0;
    for (int i = 0; i < 8; i++) {
        struct tfx_resp r;
        if (sim(saved, "\"customer_id\":\"ann\",\"channel\":\"web\",\"placement\":\"home\"", &r) != 200)
            bad++;
        tfx_resp_free(&r);
    }
    return (void *)bad;
}

Test(simulate, concurrent_simulations_and_decides)
{
    start();
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, sim_many, NULL);
    for (int i = 0; i < 20; i++) {
        struct tfx_resp r;
        cr_assert_eq(real_decide("ann", &r), 200);
        tfx_resp_free(&r);
    }
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        cr_assert_eq((long)bad, 0, "some simulations failed");
    }
}
