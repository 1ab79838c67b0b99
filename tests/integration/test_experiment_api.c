/*
 * test_experiment_api.c — experiments on the real server: the API and its
 * refusals (400 naming the field), the lifecycle with its audit trail,
 * winner rollout from the next decide, overlapping namespace ranges,
 * assignment equal to GrowthBook's (engine/assign.h, itself pinned by the
 * conformance cases) for every customer decided, holdouts that get no
 * offer, sticky assignment across a weight change, one exposure per
 * customer (none for a dry run), experiment files written by hand and
 * hot-reloaded, and exposures in a customer's export and erasure.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/assign.h"
#include "events_tfx.h"
#include "experiments_tfx.h"
#include "fixture.h"

static struct tfx_server srv;

#define CAMP(id, prio, vars)                                                                  \
    "return { id = '" id "', channels = { 'web' }, priority = " prio ",\n"                   \
    "  variants = { " vars " },\n"                                                           \
    "  eligible = function() return true end }\n"

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "rules/hero.lua",
              CAMP("hero", "90",
                   "{ id = 'A', content = { t = 'a' } }, { id = 'B', content = { t = 'b' } },"
                   " { id = 'C', content = { t = 'c' } }"));
    tfx_write(&srv, "rules/side.lua",
              CAMP("side", "80", "{ id = 'A', content = { t = 'a' } }, { id = 'B', content = { t = 'b' } }"));
    tfx_write(&srv, "rules/solo.lua",
              CAMP("solo", "70", "{ id = 'A', content = { t = 'a' } }, { id = 'B', content = { t = 'b' } }"));
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(experiment_api, .init = setup, .fini = teardown, .timeout = 180);

static json_t *create(const char *body)
{
    return xtfx_call(&srv, "POST", "/api/v1/experiments", body, 201);
}

Test(experiment_api, create_writes_the_file_and_refuses_bad_input)
{
    json_t *v = create("{\"id\":\"hero-copy\",\"name\":\"Hero copy\",\"campaign_id\":\"hero\","
                       "\"variants\":[{\"id\":\"A\",\"weight\":50},{\"id\":\"B\",\"weight\":50}],"
                       "\"holdout\":0.1,\"metric\":\"conversion_rate\",\"guardrails\":[\"click_rate\"]}");
    cr_assert_str_eq(json_string_value(json_object_get(v, "status")), "draft");
    cr_assert_str_eq(json_string_value(etfx_at(v, "definition.seed")), "hero-copy");
    cr_assert_eq(etfx_num(v, "definition.variants.1.weight"), 0.5);
    cr_assert_str_eq(json_string_value(etfx_at(v, "load.status")), "ok");
    cr_assert_str_eq(json_string_value(etfx_at(v, "allowed_actions.0")), "start");
    json_decref(v);
    char path[400];
    snprintf(path, sizeof path, "%s/experiments/hero-copy.lua", srv.dir);
    FILE *f = fopen(path, "r");
    cr_assert(f, "the API writes experiments/hero-copy.lua");
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    cr_assert(strstr(text, "campaign_id = \"hero\"") && strstr(text, "holdout = 0.1"), "%s", text);
    xtfx_refused(&srv, "POST", "/api/v1/experiments",
                 "{\"id\":\"hero-copy\",\"campaign_id\":\"hero\",\"variants\":[\"A\",\"B\"]}", 409, "id");

    static const struct { const char *body, *field; } bad[] = {
        { "\"variants\":[{\"id\":\"A\",\"weight\":0},{\"id\":\"B\",\"weight\":0}]", "variants" },
        { "\"variants\":[\"A\",\"B\"],\"coverage\":2", "coverage" },
        { "\"variants\":[\"A\",\"B\"],\"coverage\":-1", "coverage" },
        { "\"variants\":[\"A\",\"B\"],\"metric\":\"likes\"", "metric" },
        { "\"variants\":[\"A\",\"B\"],\"guardrails\":[\"clicks\"]", "guardrails[0]" },
        { "\"variants\":[\"A\",\"Z\"]", "variants[1].id" },
        { "\"variants\":[\"A\",\"B\"],\"holdout\":1", "holdout" },
        { "\"variants\":[\"A\",\"B\"],\"status\":\"running\"", "status" },
        { "\"variants\":[\"A\",\"B\"],\"namespace\":[\"n\",0.7,0.2]", "namespace" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[600];
        snprintf(body, sizeof body, "{\"id\":\"bad%zu\",\"campaign_id\":\"hero\",%s}", i, bad[i].body);
        xtfx_refused(&srv, "POST", "/api/v1/experiments", body, 400, bad[i].field);
        snprintf(path, sizeof path, "/api/v1/experiments/bad%zu", i);
        json_decref(xtfx_call(&srv, "GET", path, NULL, 404)); /* nothing was created */
    }
    xtfx_refused(&srv, "POST", "/api/v1/experiments",
                 "{\"id\":\"nocamp\",\"campaign_id\":\"nope\",\"variants\":[\"A\",\"B\"]}", 400,
                 "campaign_id");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/experiments", "{\"id\":\"x\",\"campaign_id\":", &r),
                 400);
    cr_assert_str_eq(tfx_err_code(&r), "invalid_json");
    tfx_resp_free(&r);
}

static int is_status(json_t *o, const void *want)
{
    const char *s = json_string_value(json_object_get(o, "status"));
    return s && !strcmp(s, want);
}

Test(experiment_api, lifecycle_audit_and_winner_from_the_next_decide)
{
    json_decref(create("{\"id\":\"lc\",\"campaign_id\":\"side\",\"variants\":[\"A\",\"B\"]}"));
    xtfx_refused(&srv, "POST", "/api/v1/experiments/lc/stop", NULL, 409, "status");
    xtfx_action(&srv, "lc", "start", NULL);
    json_t *rep;
    cr_assert_eq(xtfx_decide(&srv, "u1", "\"explain\":true", &rep), 200);
    json_t *xp = xtfx_explain(rep, "side");
    cr_assert_str_eq(json_string_value(etfx_at(xp, "experiment.id")), "lc", "%s",
                     json_dumps(rep, 0));
    json_decref(rep);
    xtfx_action(&srv, "lc", "stop", NULL);
    cr_assert_eq(xtfx_decide(&srv, "u1", "\"explain\":true", &rep), 200);
    cr_assert_null(json_object_get(xtfx_explain(rep, "side"), "experiment"),
                   "a stopped experiment no longer assigns");
    json_decref(rep);
    xtfx_action(&srv, "lc", "start", NULL);
    /* customers on both sides before the winner */
    int a = 0;
    for (int i = 0; i < 60; i++) {
        char c[32];
        snprintf(c, sizeof c, "w%d", i);
        cr_assert_eq(xtfx_decide(&srv, c, NULL, &rep), 200);
        a += !strcmp(xtfx_variant(rep, "side"), "A");
        json_decref(rep);
    }
    cr_assert(a > 5 && a < 55, "%d of 60 on A", a);
    xtfx_refused(&srv, "POST", "/api/v1/experiments/lc/winner", "{\"variant\":\"Z\"}", 400, "variant");
    xtfx_refused(&srv, "POST", "/api/v1/experiments/lc/winner", "{}", 400, "variant");
    xtfx_action(&srv, "lc", "winner", "{\"variant\":\"B\"}");
    for (int i = 0; i < 60; i++) { /* the very next decides: everyone on B */
        char c[32];
        snprintf(c, sizeof c, "w%d", i);
        cr_assert_eq(xtfx_decide(&srv, c, NULL, &rep), 200);
        cr_assert_str_eq(xtfx_variant(rep, "side"), "B");
        json_decref(rep);
    }
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/experiments/lc/start", NULL, &r), 409);
    cr_assert_str_eq(tfx_err_code(&r), "illegal_transition");
    cr_assert_str_eq(json_string_value(etfx_at(r.json, "error.current")), "concluded");
    tfx_resp_free(&r);
    json_t *res = xtfx_results(&srv, "lc");
    cr_assert_str_eq(json_string_value(json_object_get(res, "status")), "concluded");
    cr_assert_str_eq(json_string_value(json_object_get(res, "winner")), "B");
    cr_assert_eq(etfx_int(res, "exposures"), 61, "u1 and w0..w59, each once");
    json_decref(res);
    /* the audit trail, newest first */
    json_t *au = xtfx_call(&srv, "GET", "/api/v1/audit?object=experiment:lc", NULL, 200);
    const char *want[] = { "experiment.winner", "experiment.start", "experiment.stop",
                           "experiment.start", "experiment.create" };
    json_t *ents = json_object_get(au, "entries");
    cr_assert_eq(json_array_size(ents), 5, "%s", json_dumps(au, 0));
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(
            json_string_value(json_object_get(json_array_get(ents, (size_t)i), "action")), want[i]);
    cr_assert_str_eq(json_string_value(etfx_at(ents, "0.after.status")), "concluded");
    cr_assert(etfx_at(ents, "0.after.results.variants"), "the evidence is kept with the winner");
    json_decref(au);
    /* concluded experiments can be archived; results stay readable */
    json_decref(xtfx_call(&srv, "DELETE", "/api/v1/experiments/lc", NULL, 200));
    res = xtfx_results(&srv, "lc");
    cr_assert_eq(etfx_int(res, "exposures"), 61);
    json_decref(res);
    json_t *v = xtfx_call(&srv, "GET", "/api/v1/experiments/lc", NULL, 200);
    cr_assert(is_status(v, "archived"));
    json_decref(v);
}

Test(experiment_api, overlapping_ranges_on_one_campaign_are_refused)
{
    json_decref(create("{\"id\":\"n1\",\"campaign_id\":\"hero\",\"variants\":[\"A\",\"B\"],"
                       "\"namespace\":[\"hero\",0,0.5]}"));
    json_decref(create("{\"id\":\"n2\",\"campaign_id\":\"hero\",\"variants\":[\"B\",\"C\"],"
                       "\"namespace\":[\"hero\",0.5,1]}"));
    json_decref(create("{\"id\":\"n3\",\"campaign_id\":\"hero\",\"variants\":[\"A\",\"C\"],"
                       "\"namespace\":[\"hero\",0.4,0.6]}"));
    json_decref(create("{\"id\":\"n4\",\"campaigns\":[\"solo\",\"hero\"],\"variants\":[\"A\",\"B\"]}"));
    xtfx_action(&srv, "n1", "start", NULL);
    xtfx_action(&srv, "n2", "start", NULL);
    xtfx_refused(&srv, "POST", "/api/v1/experiments/n3/start", NULL, 400, "namespace");
    xtfx_refused(&srv, "POST", "/api/v1/experiments/n4/start", NULL, 400, "namespace");
    /* editing a running experiment into an overlap is refused too */
    xtfx_refused(&srv, "PUT", "/api/v1/experiments/n2",
                 "{\"campaign_id\":\"hero\",\"variants\":[\"B\",\"C\"],\"namespace\":[\"hero\",0.3,1]}", 400,
                 "namespace");
    for (int i = 0; i < 200; i++) {
        char c[32];
        snprintf(c, sizeof c, "ns%d", i);
        json_t *rep;
        cr_assert_eq(xtfx_decide(&srv, c, "\"explain\":true", &rep), 200);
        const char *x = json_string_value(etfx_at(xtfx_explain(rep, "hero"), "experiment.id"));
        int in1 = assign_in_namespace(c, strlen(c), "hero", 4, 0, 0.5);
        cr_assert_str_eq(x, in1 ? "n1" : "n2", "%s", c);
        json_decref(rep);
    }
    json_t *v = xtfx_call(&srv, "GET", "/api/v1/experiments/n3", NULL, 200);
    cr_assert(is_status(v, "draft"));
    json_decref(v);
}

/* The variant GrowthBook's SDK gives `id` (-1: not in the experiment). */
static int gb_variant(const char *seed, const char *id, int version, double coverage,
                      const double *w, int n)
{
    double h, r[8][2];
    if (assign_hash(seed, strlen(seed), id, strlen(id), version, &h))
        return -1;
    assign_bucket_ranges(n, coverage, w, n, r);
    return assign_choose(h, (const double(*)[2])r, n);
}

Test(experiment_api, assignment_is_growthbooks_and_the_holdout_gets_nothing)
{
    json_decref(create("{\"id\":\"gb1\",\"campaign_id\":\"hero\",\"hash_version\":1,\"coverage\":0.7,"
                       "\"variants\":[{\"id\":\"A\",\"weight\":0.2},{\"id\":\"B\",\"weight\":0.3},"
                       "{\"id\":\"C\",\"weight\":0.5}]}"));
    json_decref(create("{\"id\":\"gb2\",\"campaign_id\":\"side\",\"seed\":\"s-2\",\"holdout\":0.25,"
                       "\"variants\":[\"A\",\"B\"]}"));
    xtfx_action(&srv, "gb1", "start", NULL);
    xtfx_action(&srv, "gb2", "start", NULL);
    const double w1[3] = { 0.2, 0.3, 0.5 }, w2[2] = { 0.5, 0.5 };
    const char *names = "ABC";
    int out = 0, held = 0;
    for (int i = 0; i < 400; i++) {
        char c[32];
        snprintf(c, sizeof c, "gb-%d", i);
        json_t *rep;
        cr_assert_eq(xtfx_decide(&srv, c, NULL, &rep), 200);
        int v1 = gb_variant("gb1", c, 1, 0.7, w1, 3);
        const char *got = xtfx_variant(rep, "hero");
        char want[2] = { names[v1 < 0 ? 0 : v1], 0 }; /* not in the experiment: control */
        cr_assert_str_eq(got, want, "%s: hero %s, GrowthBook %d", c, got, v1);
        out += v1 < 0;
        double hh;
        cr_assert_eq(assign_hash("__holdout:s-2", 13, c, strlen(c), 2, &hh), 0);
        const char *g2 = xtfx_variant(rep, "side");
        if (hh < 0.25) {
            cr_assert_null(g2, "%s is held out: no offer of side", c);
            held++;
        } else {
            int v2 = gb_variant("s-2", c, 2, 1, w2, 2);
            char w2s[2] = { names[v2], 0 };
            cr_assert_str_eq(g2, w2s, "%s", c);
        }
        json_decref(rep);
    }
    cr_assert(out > 60 && out < 180, "coverage 0.7 leaves about 120 of 400 out, got %d", out);
    cr_assert(held > 60 && held < 140, "holdout 0.25: about 100 of 400, got %d", held);
    json_t *res = xtfx_results(&srv, "gb2");
    cr_assert_eq(etfx_int(res, "holdout.exposures"), held, "the held out are recorded as exposed");
    cr_assert_eq(etfx_int(res, "exposures"), 400);
    json_decref(res);
    res = xtfx_results(&srv, "gb1");
    cr_assert_eq(etfx_int(res, "exposures"), 400 - out, "only customers in the experiment count");
    json_decref(res);
}

Test(experiment_api, sticky_across_weight_changes_and_one_exposure_per_customer)
{
    json_decref(create("{\"id\":\"st\",\"campaign_id\":\"hero\",\"sticky\":true,\"variants\":[\"A\",\"B\"]}"));
    json_decref(create("{\"id\":\"ns\",\"campaign_id\":\"side\",\"variants\":[\"A\",\"B\"]}"));
    xtfx_action(&srv, "st", "start", NULL);
    xtfx_action(&srv, "ns", "start", NULL);
    char first_hero[150][2], first_side[150][2];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 150; i++) {
            char c[32];
            snprintf(c, sizeof c, "s%d", i);
            json_t *rep;
            cr_assert_eq(xtfx_decide(&srv, c, NULL, &rep), 200);
            snprintf(first_hero[i], 2, "%s", xtfx_variant(rep, "hero"));
            snprintf(first_side[i], 2, "%s", xtfx_variant(rep, "side"));
            json_decref(rep);
        }
    /* a dry run exposes nobody */
    cr_assert_eq(xtfx_decide(&srv, "dry-one", "\"dry_run\":true", NULL), 200);
    json_t *res = xtfx_results(&srv, "st");
    cr_assert_eq(etfx_int(res, "exposures"), 150, "two decides each, one exposure each");
    json_decref(res);
    /* weights change: the sticky experiment keeps everyone, the other moves some */
    json_decref(xtfx_call(&srv, "PUT", "/api/v1/experiments/st",
                          "{\"campaign_id\":\"hero\",\"sticky\":true,\"variants\":"
                          "[{\"id\":\"A\",\"weight\":0.05},{\"id\":\"B\",\"weight\":0.95}]}",
                          200));
    json_decref(xtfx_call(&srv, "PUT", "/api/v1/experiments/ns",
                          "{\"campaign_id\":\"side\",\"variants\":"
                          "[{\"id\":\"A\",\"weight\":0.05},{\"id\":\"B\",\"weight\":0.95}]}",
                          200));
    int moved_side = 0;
    for (int i = 0; i < 150; i++) {
        char c[32];
        snprintf(c, sizeof c, "s%d", i);
        json_t *rep;
        cr_assert_eq(xtfx_decide(&srv, c, NULL, &rep), 200);
        cr_assert_str_eq(xtfx_variant(rep, "hero"), first_hero[i], "%s moved in a sticky experiment", c);
        moved_side += strcmp(xtfx_variant(rep, "side"), first_side[i]) != 0;
        json_decref(rep);
    }
    cr_assert(moved_side > 20, "without sticky, a weight change reshuffles (%d moved)", moved_side);
    res = xtfx_results(&srv, "ns");
    cr_assert_eq(etfx_int(res, "exposures"), 150, "still counted at their first exposure");
    json_decref(res);
    json_t *x = xtfx_call(&srv, "GET", "/api/v1/profiles/dry-one/export", NULL, 404);
    json_decref(x);
}

static int has_audit(json_t *o, const void *action)
{
    size_t i;
    json_t *e;
    json_array_foreach (json_object_get(o, "entries"), i, e)
        if (!strcmp(json_string_value(json_object_get(e, "action")), action) &&
            !strcmp(json_string_value(json_object_get(e, "actor")), "file"))
            return 1;
    return 0;
}

static int load_is(json_t *o, const void *want)
{
    const char *s = json_string_value(etfx_at(o, "load.status"));
    return s && !strcmp(s, want);
}

Test(experiment_api, files_written_by_hand_are_hot_reloaded_and_audited)
{
    tfx_write(&srv, "experiments/by-hand.lua",
              "-- a marketer's file\n"
              "return {\n"
              "  campaign_id = 'solo',\n"
              "  variants = { { id = 'A', weight = 1 }, { id = 'B', weight = 3 } },\n"
              "  status = 'running',\n"
              "}\n");
    json_t *v = xtfx_wait(&srv, "/api/v1/experiments/by-hand", is_status, "running");
    cr_assert_str_eq(json_string_value(json_object_get(v, "origin")), "file");
    cr_assert_eq(etfx_num(v, "definition.variants.1.weight"), 0.75);
    json_decref(v);
    json_t *rep;
    cr_assert_eq(xtfx_decide(&srv, "h1", "\"explain\":true", &rep), 200);
    cr_assert_str_eq(json_string_value(etfx_at(xtfx_explain(rep, "solo"), "experiment.id")),
                     "by-hand");
    json_decref(rep);
    json_decref(xtfx_wait(&srv, "/api/v1/audit?object=experiment:by-hand", has_audit,
                          "experiment.create"));
    /* a hand edit is a new definition, audited with before and after */
    tfx_write(&srv, "experiments/by-hand.lua",
              "return { campaign_id = 'solo', status = 'running',\n"
              "  variants = { { id = 'A', weight = 1 }, { id = 'B', weight = 1 } } }\n");
    json_t *au = xtfx_wait(&srv, "/api/v1/audit?object=experiment:by-hand", has_audit,
                           "experiment.update");
    json_decref(au);
    /* a broken edit keeps the last good definition live and says where */
    tfx_write(&srv, "experiments/by-hand.lua",
              "return { campaign_id = 'solo',\n  variants = { { id = 'A', weight = -2 }, 'B' } }\n");
    v = xtfx_wait(&srv, "/api/v1/experiments/by-hand", load_is, "error_previous_live");
    const char *err = json_string_value(etfx_at(v, "load.error"));
    cr_assert(err && strstr(err, "by-hand.lua:2: variants[1].weight"), "%s", err);
    cr_assert(json_is_true(json_object_get(v, "live")));
    cr_assert_eq(etfx_num(v, "definition.variants.1.weight"), 0.5);
    json_decref(v);
    cr_assert_eq(xtfx_decide(&srv, "h1", "\"explain\":true", &rep), 200);
    cr_assert_str_eq(json_string_value(etfx_at(xtfx_explain(rep, "solo"), "experiment.id")),
                     "by-hand");
    json_decref(rep);
    /* removing the file archives the experiment; decide no longer uses it */
    tfx_unlink(&srv, "experiments/by-hand.lua");
    json_decref(xtfx_wait(&srv, "/api/v1/experiments/by-hand", is_status, "archived"));
    cr_assert_eq(xtfx_decide(&srv, "h1", "\"explain\":true", &rep), 200);
    cr_assert_null(json_object_get(xtfx_explain(rep, "solo"), "experiment"));
    json_decref(rep);
}

Test(experiment_api, exposures_join_export_and_erasure)
{
    json_decref(create("{\"id\":\"pv\",\"campaign_id\":\"hero\",\"variants\":[\"A\",\"B\"]}"));
    xtfx_action(&srv, "pv", "start", NULL);
    json_t *rep;
    cr_assert_eq(xtfx_decide(&srv, "alice", NULL, &rep), 200);
    const char *did = json_string_value(json_object_get(rep, "decision_id"));
    char first_did[64];
    snprintf(first_did, sizeof first_did, "%s", did);
    char variant[8];
    snprintf(variant, sizeof variant, "%s", xtfx_variant(rep, "hero"));
    json_decref(rep);
    cr_assert_eq(xtfx_decide(&srv, "alice", NULL, NULL), 200);
    cr_assert_eq(xtfx_decide(&srv, "bob", NULL, NULL), 200);
    json_t *x = xtfx_call(&srv, "GET", "/api/v1/profiles/alice/export", NULL, 200);
    json_t *xs = json_object_get(x, "experiment_exposures");
    cr_assert_eq(json_array_size(xs), 1, "%s", json_dumps(x, 0));
    cr_assert_str_eq(json_string_value(etfx_at(xs, "0.experiment_id")), "pv");
    cr_assert_str_eq(json_string_value(etfx_at(xs, "0.variant")), variant);
    cr_assert_str_eq(json_string_value(etfx_at(xs, "0.decision_id")), first_did,
                     "the first decide's exposure");
    json_decref(x);
    json_t *res = xtfx_results(&srv, "pv");
    cr_assert_eq(etfx_int(res, "exposures"), 2);
    json_decref(res);
    json_decref(xtfx_call(&srv, "DELETE", "/api/v1/profiles/alice", NULL, 200));
    json_decref(xtfx_call(&srv, "GET", "/api/v1/profiles/alice/export", NULL, 404));
    res = xtfx_results(&srv, "pv");
    cr_assert_eq(etfx_int(res, "exposures"), 1, "alice's exposure is gone, bob's is not");
    json_decref(res);
}

Test(experiment_api, promod_check_reads_experiment_files)
{
    tfx_write(&srv, "experiments/ok.lua",
              "return { campaign_id = 'hero', variants = { 'A', 'B' } }\n");
    tfx_write(&srv, "experiments/bad.lua",
              "return {\n  campaign_id = 'hero',\n  variants = { 'A', 'B' },\n  coverage = 3,\n}\n");
    char dir[400];
    snprintf(dir, sizeof dir, "%s/experiments", srv.dir);
    char *out;
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, dir, (char *)NULL), 1, "%s", out);
    char want[600];
    snprintf(want, sizeof want, "%s/bad.lua:4: coverage must be", dir);
    cr_assert(strstr(out, want), "%s", out);
    cr_assert(!strstr(out, "ok.lua:"), "%s", out);
    free(out);
    tfx_unlink(&srv, "experiments/bad.lua");
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, dir, (char *)NULL), 0, "%s", out);
    free(out);
    /* experiment files run in the same sandbox as campaigns: an endless
     * loop is stopped by the budget, the process's exit is not reachable */
    tfx_write(&srv, "experiments/loop.lua", "while true do end\nreturn {}\n");
    tfx_write(&srv, "experiments/escape.lua", "os.exit(0)\nreturn {}\n");
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, dir, (char *)NULL), 1, "%s", out);
    cr_assert(strstr(out, "loop.lua:"), "%s", out);
    cr_assert(strstr(out, "escape.lua:"), "%s", out);
    cr_assert(strstr(out, "2 problems"), "%s", out);
    free(out);
    tfx_unlink(&srv, "experiments/loop.lua");
    tfx_unlink(&srv, "experiments/escape.lua");
}

/* Two overlapping experiments started at once: the mutation lock lets one
 * run and refuses the other, never both. */
struct starter {
    const char *id;
    int status;
};

static void *start_main(void *arg)
{
    struct starter *s = arg;
    char path[128];
    snprintf(path, sizeof path, "/api/v1/experiments/%s/start", s->id);
    struct tfx_resp r;
    s->status = tfx_req(&srv, "POST", path, NULL, &r);
    tfx_resp_free(&r);
    return NULL;
}

/* Decides from several threads while experiments start, stop and conclude:
 * every decide answers 200 with an offer. */
struct decider {
    volatile int *stop;
    int n, bad, fail;
};

static void *decide_main(void *arg)
{
    struct decider *d = arg;
    while (!*d->stop) {
        char c[32];
        snprintf(c, sizeof c, "churn%d", d->n % 500);
        json_t *rep = NULL;
        int st = xtfx_decide(&srv, c, NULL, &rep);
        if (st != 200)
            d->fail++;
        else if (!xtfx_variant(rep, "solo"))
            d->bad++;
        json_decref(rep);
        d->n++;
    }
    return NULL;
}

Test(experiment_api, concurrent_starts_and_decides_under_lifecycle_churn)
{
    json_decref(create("{\"id\":\"race1\",\"campaign_id\":\"hero\",\"variants\":[\"A\",\"B\"]}"));
    json_decref(create("{\"id\":\"race2\",\"campaign_id\":\"hero\",\"variants\":[\"A\",\"C\"]}"));
    struct starter s1 = { "race1", 0 }, s2 = { "race2", 0 };
    pthread_t t1, t2;
    pthread_create(&t1, NULL, start_main, &s1);
    pthread_create(&t2, NULL, start_main, &s2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert((s1.status == 200) != (s2.status == 200), "exactly one starts: %d %d", s1.status,
              s2.status);
    cr_assert(s1.status == 400 || s2.status == 400);

    volatile int stop = 0;
    struct decider d[3] = { { &stop, 0, 0, 0 }, { &stop, 0, 0, 0 }, { &stop, 0, 0, 0 } };
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, decide_main, &d[i]);
    for (int round = 0; round < 8; round++) {
        char body[200], id[32];
        snprintf(id, sizeof id, "churn-%d", round);
        snprintf(body, sizeof body,
                 "{\"id\":\"%s\",\"campaign_id\":\"solo\",\"variants\":[\"A\",\"B\"],\"holdout\":0.2}", id);
        json_decref(create(body));
        xtfx_action(&srv, id, "start", NULL);
        xtfx_action(&srv, id, "stop", NULL);
        xtfx_action(&srv, id, "start", NULL);
        xtfx_action(&srv, id, "winner", "{\"variant\":\"A\"}");
    }
    stop = 1;
    int total = 0, bad = 0, fail = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        total += d[i].n;
        bad += d[i].bad;
        fail += d[i].fail;
    }
    /* a held-out customer gets no offer of solo while an experiment runs;
     * no decide may fail */
    cr_assert_eq(fail, 0, "%d of %d decides failed", fail, total);
    cr_assert(total > 30, "%d decides", total);
    json_t *rep;
    cr_assert_eq(xtfx_decide(&srv, "after-churn", NULL, &rep), 200);
    cr_assert_str_eq(xtfx_variant(rep, "solo"), "A", "the last winner serves");
    json_decref(rep);
    cr_log_info("%d decides during the churn, %d without an offer of solo (holdouts)", total, bad);
}
