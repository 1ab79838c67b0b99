/*
 * test_replay.c — POST /api/v1/rules/replay on a fixture log of 10,000
 * logged decides: an edit that excludes one country changes exactly the
 * decides of that country's customers the campaign had (counted by brute
 * force from the log itself, GET /api/v1/decisions), an edit that changes
 * nothing changes nothing and the report is the same twice, caps that
 * would bind are counted, random variant picks replay as they were drawn,
 * replay writes no counter, event, outbox message or log entry, and
 * malformed bodies get clear errors.  `promod replay` (the CLI) on the
 * same log agrees with the API.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlog_tfx.h"
#include "fixture.h"

#define NCUST 2000
#define NDEC 10000

static struct tfx_server srv;

/* promo: customers of 30 and over, 3 a day each; lucky: gold customers, a
 * variant drawn with math.random by its content hook. */
static const char promo[] =
    "return { id = \"promo\", channels = { \"web\" }, priority = 60,\n"
    "  caps = { customer = { { 3, \"1d\" } } },\n"
    "  variants = { { id = \"A\", weight = 1, content = { h = \"a\" } },\n"
    "               { id = \"B\", weight = 1, content = { h = \"b\" } } },\n"
    "  eligible = function(p, ctx) return (p.age or 0) >= 30 end }\n";
static const char promo_no_fr[] =
    "return { id = \"promo\", channels = { \"web\" }, priority = 60,\n"
    "  caps = { customer = { { 3, \"1d\" } } },\n"
    "  variants = { { id = \"A\", weight = 1, content = { h = \"a\" } },\n"
    "               { id = \"B\", weight = 1, content = { h = \"b\" } } },\n"
    "  eligible = function(p, ctx) return (p.age or 0) >= 30 and p.country ~= \"FR\" end }\n";
static const char lucky[] =
    "return { id = \"lucky\", channels = { \"web\" }, priority = 40,\n"
    "  variants = { { id = \"x\", content = { h = \"x\" } }, { id = \"y\", content = { h = \"y\" } },\n"
    "               { id = \"z\", content = { h = \"z\" } } },\n"
    "  content = function(p, ctx, variants) return variants[math.random(#variants)] end,\n"
    "  eligible = function(p, ctx) return p.tier == \"gold\" end }\n";

/* What the log says, counted by brute force over GET /api/v1/decisions. */
struct truth {
    long entries;
    long fr_promo_eligible;   /* FR customers of 30+: decides the edit changes */
    long capped_live;         /* promo eligible but not offered (its cap held it back) */
    long would_bind_after;    /* promo offers past 3 per customer after the edit */
    long fr_customers;        /* distinct FR customers of 30+ */
};

static void brute_force(struct truth *t)
{
    memset(t, 0, sizeof *t);
    static int per_cust[NCUST];
    memset(per_cust, 0, sizeof per_cust);
    char path[200] = "/api/v1/decisions?limit=1000&from=0";
    for (;;) {
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", r.body);
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(r.json, "decisions"), i, d) {
            t->entries++;
            json_t *p = json_object_get(d, "profile");
            const char *country = json_string_value(json_object_get(p, "country"));
            long age = (long)json_integer_value(json_object_get(p, "age"));
            const char *cust = json_string_value(
                json_object_get(json_object_get(d, "request"), "customer_id"));
            int promo_offered = 0;
            size_t k;
            json_t *o;
            json_array_foreach(json_object_get(d, "offers"), k, o)
                promo_offered |= !strcmp(json_string_value(json_object_get(o, "campaign_id")), "promo");
            int elig = age >= 30;
            if (elig && !strcmp(country, "FR"))
                t->fr_promo_eligible++;
            if (elig && !promo_offered)
                t->capped_live++;
            if (elig && strcmp(country, "FR")) {
                int c = atoi(cust + 1);
                if (++per_cust[c] > 3)
                    t->would_bind_after++;
            }
        }
        json_t *next = json_object_get(r.json, "next_cursor");
        if (!json_is_string(next)) {
            tfx_resp_free(&r);
            break;
        }
        snprintf(path, sizeof path, "/api/v1/decisions?limit=1000&from=0&cursor=%s",
                 json_string_value(next));
        tfx_resp_free(&r);
    }
    for (int i = 0; i < NCUST; i++)
        t->fr_customers += !strcmp(dtfx_country(i), "FR") && dtfx_age(i) >= 30;
}

static struct truth T;

static void setup(void)
{
    tfx_server_init(&srv, "decision_log_sample = 1,");
    tfx_write(&srv, "rules/promo.lua", promo);
    tfx_write(&srv, "rules/lucky.lua", lucky);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    dtfx_import(&srv, NCUST);
    cr_assert_eq(dtfx_decides(&srv, NDEC, NCUST, 2), NDEC, "every decide is answered");
    cr_assert_eq(dtfx_wait_logged(&srv, NDEC), NDEC, "sampling 1 logs every decide");
    brute_force(&T);
    cr_assert_eq(T.entries, NDEC);
    cr_assert_gt(T.fr_promo_eligible, 0);
    cr_assert_gt(T.capped_live, 0, "the fixture has capped decides");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(replay, .init = setup, .fini = teardown, .timeout = 600);

static json_t *camp(const struct tfx_resp *r, const char *id)
{
    return json_object_get(json_object_get(r->json, "campaigns"), id);
}

static long num(const json_t *o, const char *k) { return (long)json_integer_value(json_object_get(o, k)); }

Test(replay, country_edit_changes_exactly_those_decides)
{
    char *body = dtfx_files_body("promo.lua", promo_no_fr, "{\"from\":0,\"limit\":20000,\"show\":5}");
    struct tfx_resp r;
    cr_assert_eq(dtfx_replay(&srv, body, &r), 200, "%s", r.body);
    cr_assert_eq(num(r.json, "decisions"), NDEC);
    cr_assert_eq(num(r.json, "changed"), T.fr_promo_eligible, "%s", r.body);
    json_t *p = camp(&r, "promo");
    cr_assert_eq(num(p, "decisions_changed"), T.fr_promo_eligible);
    cr_assert_eq(num(p, "offers_before") - num(p, "offers_after"), T.fr_promo_eligible);
    cr_assert_eq(num(p, "customers_lost"), T.fr_customers);
    cr_assert_eq(num(p, "customers_new"), 0);
    cr_assert_eq(num(camp(&r, "lucky"), "decisions_changed"), 0, "limit 2: lucky is unaffected");
    /* the random variant picks were drawn again as logged: the rule set as
     * it is differs from the log only where the cap held promo back live */
    cr_assert_eq(num(r.json, "drift"), T.capped_live, "%s", r.body);
    json_t *cap = json_array_get(json_object_get(p, "caps"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(cap, "scope")), "customer");
    cr_assert_eq(num(cap, "limit"), 3);
    cr_assert_eq(num(cap, "would_bind"), T.would_bind_after, "%s", json_dumps(cap, 0));
    json_t *s = json_object_get(r.json, "sample");
    cr_assert_eq(json_array_size(s), 5);
    json_t *s0 = json_array_get(s, 0);
    cr_assert(json_array_size(json_object_get(s0, "explain_before")) > 0);
    cr_assert(json_array_size(json_object_get(s0, "explain_after")) > 0);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(s0, "offers_before"), 0), "campaign_id")),
                     "promo");
    cr_assert(json_number_value(json_object_get(r.json, "decisions_per_second")) > 0);
    tfx_resp_free(&r);
    free(body);
}

Test(replay, an_edit_that_changes_nothing_reports_nothing_twice_the_same)
{
    char *body = dtfx_files_body("promo.lua", promo, "{\"from\":0,\"limit\":20000,\"show\":5}");
    struct tfx_resp a, b;
    cr_assert_eq(dtfx_replay(&srv, body, &a), 200, "%s", a.body);
    cr_assert_eq(dtfx_replay(&srv, body, &b), 200, "%s", b.body);
    cr_assert_eq(num(a.json, "decisions"), NDEC);
    cr_assert_eq(num(a.json, "changed"), 0, "%s", a.body);
    cr_assert_eq(json_array_size(json_object_get(a.json, "sample")), 0);
    cr_assert(json_equal(json_object_get(a.json, "campaigns"), json_object_get(b.json, "campaigns")),
              "the same log replays to the same report");
    cr_assert_eq(num(a.json, "drift"), num(b.json, "drift"));
    tfx_resp_free(&a);
    tfx_resp_free(&b);
    free(body);
}

Test(replay, writes_no_counter_event_outbox_or_log_entry)
{
    static const char *dbs[] = { "counters", "events", "outbox", "dlog", "dlog_cust", "aggregates",
                                 "idem", "custidx", "coupons", "exposures" };
    double before[10], after[10];
    for (int i = 0; i < 10; i++) {
        char l[64];
        snprintf(l, sizeof l, "db=\"%s\"", dbs[i]);
        before[i] = dtfx_metric(&srv, "promod_store_entries", l);
    }
    double logged = dtfx_metric(&srv, "promod_decision_log_entries", "");
    double indexed = dtfx_metric(&srv, "promod_decision_log_index_entries", "");
    cr_assert_gt(logged, 0, "the live decides were logged (in the log's own environment)");
    double served = dtfx_metric(&srv, "promod_offers_served_total", "campaign=\"promo\"");
    double written = dtfx_metric(&srv, "promod_decision_log_written_total", "");
    char *body = dtfx_files_body("promo.lua", promo_no_fr, "{\"from\":0,\"limit\":20000}");
    struct tfx_resp r;
    cr_assert_eq(dtfx_replay(&srv, body, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    for (int i = 0; i < 10; i++) {
        char l[64];
        snprintf(l, sizeof l, "db=\"%s\"", dbs[i]);
        after[i] = dtfx_metric(&srv, "promod_store_entries", l);
        cr_assert_eq(after[i], before[i], "%s: %.0f entries before the replay, %.0f after", dbs[i],
                     before[i], after[i]);
    }
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_entries", ""), logged);
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_index_entries", ""), indexed);
    cr_assert_eq(dtfx_metric(&srv, "promod_offers_served_total", "campaign=\"promo\""), served);
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_written_total", ""), written);
    cr_assert_gt(before[0], 0, "the live decides did count");
    free(body);
}

Test(replay, malformed_bodies_get_clear_errors)
{
    static const struct {
        const char *body;
        int status;
        const char *code, *field;
    } cases[] = {
        { "{", 400, NULL, NULL },
        { "[]", 400, NULL, NULL },
        { "{}", 400, "missing_field", "script" },
        { "{\"script\":5}", 400, "invalid_field", "script" },
        { "{\"files\":{}}", 400, "invalid_field", "files" },
        { "{\"files\":{\"../etc.lua\":\"return {}\"}}", 400, "invalid_field", "files" },
        { "{\"files\":{\"lib/x.lua\":\"return {}\"}}", 400, "invalid_field", "files" },
        { "{\"files\":{\"a.lua\":5}}", 400, "invalid_field", "files" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"script\":\"x\"}", 400, "missing_field", "script" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"from\":\"yesterday\"}", 400, "invalid_field", "from" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"from\":5,\"to\":1}", 400, "invalid_field", "from" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"limit\":0}", 400, "invalid_field", "limit" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"sample\":0}", 400, "invalid_field", "sample" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"show\":101}", 400, "invalid_field", "show" },
        { "{\"files\":{\"a.lua\":\"return {}\"},\"bogus\":1}", 400, "unknown_field", "bogus" },
        { "{\"files\":{\"a.lua\":\"return {\"}}", 422, "invalid_rules", "files" },
        { "{\"script\":\"return { id = 1 }\"}", 422, "invalid_script", "script" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tfx_resp r;
        int st = dtfx_replay(&srv, cases[i].body, &r);
        cr_assert_eq(st, cases[i].status, "%s -> %d %s", cases[i].body, st, r.body);
        json_t *err = json_object_get(r.json, "error");
        cr_assert(json_is_string(json_object_get(err, "message")), "%s", r.body);
        if (cases[i].code)
            cr_assert_str_eq(json_string_value(json_object_get(err, "code")), cases[i].code, "%s: %s",
                             cases[i].body, r.body);
        if (cases[i].field)
            cr_assert_str_eq(json_string_value(json_object_get(err, "field")), cases[i].field,
                             "%s: %s", cases[i].body, r.body);
        tfx_resp_free(&r);
    }
    /* a file that does not load names its line */
    struct tfx_resp r;
    cr_assert_eq(dtfx_replay(&srv, "{\"files\":{\"a.lua\":\"return {\"}}", &r), 422);
    json_t *errs = json_object_get(json_object_get(r.json, "error"), "errors");
    cr_assert(json_array_size(errs) > 0 && strstr(json_string_value(json_array_get(errs, 0)), "a.lua:"),
              "%s", r.body);
    tfx_resp_free(&r);
}

Test(replay, a_posted_script_replaces_the_file_of_its_campaign)
{
    json_t *o = json_pack("{s:s,s:i,s:i}", "script", promo_no_fr, "from", 0, "show", 0);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct tfx_resp r;
    cr_assert_eq(dtfx_replay(&srv, body, &r), 200, "%s", r.body);
    cr_assert_eq(num(r.json, "changed"), T.fr_promo_eligible, "%s", r.body);
    tfx_resp_free(&r);
    free(body);
}

Test(replay, the_cli_agrees_with_the_api)
{
    /* the CLI opens the store beside the running server (LMDB allows it) */
    char edit[400];
    snprintf(edit, sizeof edit, "%s/edit", srv.dir);
    tfx_write(&srv, "edit/promo.lua", promo_no_fr);
    tfx_write(&srv, "edit/lucky.lua", lucky);
    char *out = NULL;
    int st = tfx_promod(&out, "replay", "-c", srv.config, "--rules", edit, "--from", "0",
                        "--json", "--show", "0", NULL);
    cr_assert_eq(st, 0, "%s", out);
    json_t *j = json_loads(strchr(out, '{'), JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert(j, "%s", out);
    cr_assert_eq(num(j, "decisions"), NDEC);
    cr_assert_eq(num(j, "changed"), T.fr_promo_eligible, "%s", out);
    json_decref(j);
    free(out);
    tfx_write(&srv, "bad/promo.lua", "return {");
    snprintf(edit, sizeof edit, "%s/bad", srv.dir);
    st = tfx_promod(&out, "replay", "-c", srv.config, "--rules", edit, NULL);
    cr_assert_eq(st, 3, "a rule set that does not validate: exit 3\n%s", out);
    cr_assert(strstr(out, "promo.lua:"), "%s", out);
    free(out);
    st = tfx_promod(&out, "replay", "-c", srv.config, "--from", "soon", NULL);
    cr_assert_eq(st, 2, "%s", out);
    free(out);
}
