/*
 * test_models_api.c — models on a real server (the "shop" fixture of
 * models_tfx.h): training over the API, predictions over HTTP, campaigns
 * ranked by expected value in an order worked out by hand, promotion,
 * rejection, rollback, a broken model file that keeps its version
 * serving, bad input, promo.predict in hooks, the schedule, /metrics,
 * outbound sends to the top N by score, `promod train` and `promod check`.
 *
 * Hand-computed ranking (decide on web, limit 4).  The models learn tier
 * alone: p_shoe(gold) = p_hat(bronze) = P ~ 1 and p_shoe(bronze) =
 * p_hat(gold) = Q ~ 0.  Campaigns (score = propensity x value x priority/50):
 *   A  shoe, value 10, priority 50  -> gold 10 P,   bronze 10 Q
 *   B  shoe, value 3,  priority 100 -> gold 6 P,    bronze 6 Q
 *   C  hat,  value 20, priority 50  -> gold 20 Q,   bronze 20 P
 *   D  hat,  value 1,  priority 25  -> gold 0.5 Q,  bronze 0.5 P
 * so a gold customer gets A, B, C, D (10P > 6P > 20Q > 0.5Q for P > 0.9,
 * Q < 0.1) and a bronze one C, D, A, B (20P > 0.5P > 10Q > 6Q, as long as
 * Q < 0.05 P): the test checks P and Q, then the order and each score.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include "models_tfx.h"
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv;

static void setup(void)
{
    rcv = rcv_start(0);
    cr_assert(rcv);
    otfx_init(&srv, rcv, NULL, NULL, "event_retention_days = 800,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    mtfx_shop(&srv);
}

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

TestSuite(models, .init = setup, .fini = teardown, .timeout = 400);

static const char *TIER = "{ 'tier', values = { 'gold', 'bronze' } }";

static void campaign(const char *id, const char *score, int priority)
{
    char path[100], src[600];
    snprintf(path, sizeof path, "rules/%s.lua", id);
    snprintf(src, sizeof src,
             "return { id = '%s', channels = { 'web' }, priority = %d,\n"
             "  variants = { { id = 'V', content = { headline = '%s' } } },\n"
             "  eligible = function(p, ctx) return true end,\n"
             "  score = %s }\n", id, priority, id, score);
    tfx_write(&srv, path, src);
}

/* decide (dry run, limit 4): the campaign ids in order, and their scores */
static int decide(const char *cust, const char *channel, char ids[][16], double *scores, json_t **reply)
{
    char body[300];
    snprintf(body, sizeof body, "{\"customer_id\": \"%s\", \"channel\": \"%s\", \"limit\": 4, "
             "\"dry_run\": true, \"explain\": true}", cust, channel);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
    json_t *offers = json_object_get(r.json, "offers");
    int n = (int)json_array_size(offers);
    for (int i = 0; i < n && i < 8; i++) {
        json_t *o = json_array_get(offers, (size_t)i);
        snprintf(ids[i], 16, "%s", json_string_value(json_object_get(o, "campaign_id")));
        scores[i] = json_number_value(json_object_get(o, "score"));
    }
    if (reply)
        *reply = json_incref(r.json);
    tfx_resp_free(&r);
    return n;
}

static void train_ok(const char *id, int force, int want_version)
{
    json_t *last = mtfx_train(&srv, id, force);
    cr_assert(json_is_true(json_object_get(last, "ok")), "training %s failed: %s", id,
              json_string_value(json_object_get(last, "error")));
    cr_assert_eq(json_integer_value(json_object_get(last, "version")), want_version);
    json_decref(last);
}

Test(models, rank_campaigns_by_expected_value)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    mtfx_model(&srv, "buy_hat", "hat", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok") && mtfx_wait_model(&srv, "buy_hat", "ok"));
    campaign("A", "{ model = 'buy_shoe', value = 10 }", 50);
    campaign("B", "{ model = 'buy_shoe', value = 3 }", 100);
    campaign("C", "{ model = 'buy_hat', value = 20 }", 50);
    campaign("D", "{ model = 'buy_hat', value = 1 }", 25);
    cr_assert(otfx_wait_campaign(&srv, "D"));
    /* before training: model-scored campaigns are skipped, and explain says why */
    char ids[8][16];
    double sc[8];
    json_t *rep;
    cr_assert_eq(decide("g001", "web", ids, sc, &rep), 0);
    char *txt = json_dumps(rep, 0);
    cr_assert(strstr(txt, "score: model buy_shoe has no live version"), "%s", txt);
    free(txt);
    json_decref(rep);

    train_ok("buy_shoe", 0, 1);
    train_ok("buy_hat", 0, 1);
    json_t *m = mtfx_model_get(&srv, "buy_shoe");
    json_t *v1 = json_array_get(json_object_get(m, "versions"), 0);
    cr_assert_float_eq(json_number_value(json_object_get(json_object_get(json_object_get(v1, "metrics"),
                                                                         "validation"), "auc")), 1.0, 1e-9);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(v1, "importance"), 0),
                                                       "feature")), "tier");
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(v1, "rows"), "validation")), 0);
    json_decref(m);

    double P = mtfx_propensity(&srv, "buy_shoe", "g001"), Q = mtfx_propensity(&srv, "buy_shoe", "b001");
    double Ph = mtfx_propensity(&srv, "buy_hat", "b001"), Qh = mtfx_propensity(&srv, "buy_hat", "g001");
    cr_log_info("P %.6f Q %.6f Ph %.6f Qh %.6f", P, Q, Ph, Qh);
    cr_assert(P > 0.9 && Ph > 0.9 && Q < 0.05 * Ph && Qh < 0.05 * P);
    /* every gold customer gets the same score: tier is all the model sees */
    cr_assert_float_eq(mtfx_propensity(&srv, "buy_shoe", "g077"), P, 1e-12);

    int n = decide("g001", "web", ids, sc, NULL);
    cr_assert_eq(n, 4);
    const char *gold[4] = { "A", "B", "C", "D" };
    double gold_sc[4] = { 10 * P, 3 * P * 2, 20 * Qh, 1 * Qh * 0.5 };
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(ids[i], gold[i], "gold rank %d", i);
        cr_assert_float_eq(sc[i], gold_sc[i], 1e-9, "gold %s: %g vs %g", ids[i], sc[i], gold_sc[i]);
    }
    n = decide("b001", "web", ids, sc, NULL);
    cr_assert_eq(n, 4);
    const char *bronze[4] = { "C", "D", "A", "B" };
    double bronze_sc[4] = { 20 * Ph, 1 * Ph * 0.5, 10 * Q, 3 * Q * 2 };
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(ids[i], bronze[i], "bronze rank %d", i);
        cr_assert_float_eq(sc[i], bronze_sc[i], 1e-9);
    }

    /* the same numbers through the campaign: expected value = propensity x value */
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/propensity",
                         "{\"campaign\": \"C\", \"customer_ids\": [\"b001\", \"g001\"]}", &r), 200);
    json_t *s0 = json_array_get(json_object_get(r.json, "scores"), 0);
    cr_assert_float_eq(json_number_value(json_object_get(s0, "expected_value")), 20 * Ph, 1e-9);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "model")), "buy_hat");
    tfx_resp_free(&r);

    /* next-best-actions: the ranking, with what drove each */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/targeting/recommendations?customer_id=b001&channel=web&limit=2",
                         NULL, &r), 200, "%s", r.body);
    json_t *recs = json_object_get(r.json, "recommendations");
    cr_assert_eq(json_array_size(recs), 2);
    json_t *r0 = json_array_get(recs, 0);
    cr_assert_str_eq(json_string_value(json_object_get(r0, "campaign_id")), "C");
    cr_assert_float_eq(json_number_value(json_object_get(json_object_get(r0, "model"), "expected_value")),
                       20 * Ph, 1e-9);
    json_t *tf = json_array_get(json_object_get(r0, "top_features"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(tf, "feature")), "tier");
    cr_assert_str_eq(json_string_value(json_object_get(tf, "value")), "bronze");
    cr_assert_gt(json_number_value(json_object_get(tf, "contribution")), 0);
    tfx_resp_free(&r);

    /* /metrics: predictions counted, the live version and its AUC */
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double val;
    cr_assert(tfx_metric(r.body, "promod_model_live_version", "model=\"buy_shoe\"", &val) && val == 1);
    cr_assert(tfx_metric(r.body, "promod_model_predictions_total", "model=\"buy_hat\"", &val) && val >= 4);
    cr_assert(tfx_metric(r.body, "promod_model_validation_auc", "model=\"buy_shoe\"", &val) && val == 1);
    tfx_resp_free(&r);
}

Test(models, promo_predict_in_hooks)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    tfx_write(&srv, "rules/likely.lua",
              "return { id = 'likely', channels = { 'app' },\n"
              "  variants = { { id = 'V', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    local v, why = promo.predict(p, 'buy_shoe')\n"
              "    if v == nil then return false, why end\n"
              "    local again = promo.predict(p, 'buy_shoe', { device = 'x' })\n"
              "    return v > 0.5 and again == v, 'unlikely'\n"
              "  end,\n"
              "  score = function(p, ctx) return 100 * promo.predict(p, 'buy_shoe') end }\n");
    cr_assert(otfx_wait_campaign(&srv, "likely"));
    char ids[8][16];
    double sc[8];
    json_t *rep;
    cr_assert_eq(decide("g002", "app", ids, sc, &rep), 0);
    char *txt = json_dumps(rep, 0);
    cr_assert(strstr(txt, "no live version"), "%s", txt); /* promo.predict's nil, reason */
    free(txt);
    json_decref(rep);
    train_ok("buy_shoe", 0, 1);
    double P = mtfx_propensity(&srv, "buy_shoe", "g002");
    cr_assert_eq(decide("g002", "app", ids, sc, NULL), 1);
    cr_assert_float_eq(sc[0], 100 * P, 1e-9);
    cr_assert_eq(decide("b002", "app", ids, sc, NULL), 0);
    /* an unknown model is an expected failure, not an error */
    tfx_write(&srv, "rules/likely.lua",
              "return { id = 'likely', channels = { 'app' },\n"
              "  variants = { { id = 'V', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx) local v, why = promo.predict(p, 'nope'); return v ~= nil, why end }\n");
    for (int i = 0; i < 100; i++) {
        int n = decide("g002", "app", ids, sc, &rep);
        txt = json_dumps(rep, 0);
        json_decref(rep);
        int seen = strstr(txt, "unknown model 'nope'") != NULL;
        free(txt);
        if (seen) {
            cr_assert_eq(n, 0);
            break;
        }
        cr_assert_lt(i, 99, "the edited file was not served");
        usleep(50000);
    }
    /* a file that writes tables: its hooks get read-only views of p and ctx
     * (luavm_push_readonly), and promo.predict of the view is the decide's
     * own prediction, computed once: two computations per decide (p, and p
     * with another ctx), not three */
    tfx_write(&srv, "rules/viewed.lua",
              "local seen = {}\n"
              "return { id = 'viewed', channels = { 'app' },\n"
              "  variants = { { id = 'V', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    seen[1] = true\n"
              "    if pcall(function() p.tier = 'x' end) then return false, 'p is writable' end\n"
              "    local v, why = promo.predict(p, 'buy_shoe')\n"
              "    if v == nil then return false, why end\n"
              "    local again = promo.predict(p, 'buy_shoe', { device = 'x' })\n"
              "    return v > 0.5 and again == v, 'unlikely'\n"
              "  end,\n"
              "  score = function(p, ctx) return 100 * promo.predict(p, 'buy_shoe') end }\n");
    cr_assert(otfx_wait_campaign(&srv, "viewed"));
    struct tfx_resp m;
    double before, after;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &m), 200);
    cr_assert(tfx_metric(m.body, "promod_model_predictions_total", "model=\"buy_shoe\"", &before));
    tfx_resp_free(&m);
    cr_assert_eq(decide("g002", "app", ids, sc, &rep), 1);
    txt = json_dumps(rep, 0);
    json_decref(rep);
    cr_assert_str_eq(ids[0], "viewed", "%s", txt);
    free(txt);
    cr_assert_float_eq(sc[0], 100 * P, 1e-9);
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &m), 200);
    cr_assert(tfx_metric(m.body, "promod_model_predictions_total", "model=\"buy_shoe\"", &after));
    tfx_resp_free(&m);
    cr_assert_eq(after - before, 2, "%g predictions for one decide", after - before);
    cr_assert_eq(decide("b002", "app", ids, sc, NULL), 0);
}

static double decide_prop(const char *cust)
{
    char ids[8][16];
    double sc[8];
    json_t *rep;
    decide(cust, "web", ids, sc, &rep);
    json_t *xp = json_object_get(rep, "explain");
    double p = NAN;
    size_t i;
    json_t *e;
    json_array_foreach(xp, i, e)
        if (!strcmp(json_string_value(json_object_get(e, "campaign_id")), "A"))
            p = json_number_value(json_object_get(json_object_get(e, "model"), "propensity"));
    json_decref(rep);
    return p;
}

static int decide_version(const char *cust)
{
    char ids[8][16];
    double sc[8];
    json_t *rep;
    decide(cust, "web", ids, sc, &rep);
    char *t = json_dumps(rep, 0);
    const char *v = strstr(t, "\"version\":");
    int n = v ? atoi(v + 10) : 0;
    free(t);
    json_decref(rep);
    return n;
}

static void rollback(const char *body, int want_status, int want_live)
{
    struct tfx_resp r;
    int st = tfx_req(&srv, "POST", "/api/v1/models/buy_shoe/rollback", body, &r);
    cr_assert_eq(st, want_status, "rollback %s: %d %s", body ? body : "", st, r.body);
    if (st == 200)
        cr_assert_eq(json_integer_value(json_object_get(r.json, "live_version")), want_live);
    tfx_resp_free(&r);
    cr_assert_eq(mtfx_live(&srv, "buy_shoe"), want_live);
}

Test(models, versions_promotion_rejection_and_rollback)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    campaign("A", "{ model = 'buy_shoe', value = 10 }", 50);
    cr_assert(otfx_wait_campaign(&srv, "A"));
    train_ok("buy_shoe", 0, 1);
    double p1 = decide_prop("g003");
    /* the same data again: not worse on the same rows, so it goes live */
    train_ok("buy_shoe", 0, 2);
    cr_assert_eq(mtfx_live(&srv, "buy_shoe"), 2);
    json_t *m = mtfx_model_get(&srv, "buy_shoe");
    json_t *v2 = json_array_get(json_object_get(m, "versions"), 0);
    cr_assert(json_is_true(json_object_get(json_object_get(v2, "compared_with"), "same_rows")));
    cr_assert_str_eq(json_string_value(json_object_get(v2, "status")), "live");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(m, "versions"), 1),
                                                       "status")), "retired");
    json_decref(m);
    /* a model of age alone (uninformative here) is worse: stored, not promoted */
    mtfx_model(&srv, "buy_shoe", "shoe", "'age'", NULL);
    for (int i = 0; i < 200; i++) {
        m = mtfx_model_get(&srv, "buy_shoe");
        int age = strstr(json_string_value(json_object_get(json_array_get(json_object_get(m, "features"), 0),
                                                           "name")) ?: "", "age") != NULL;
        json_decref(m);
        if (age)
            break;
        usleep(25000);
    }
    json_t *last = mtfx_train(&srv, "buy_shoe", 0);
    cr_assert_eq(json_integer_value(json_object_get(last, "version")), 3);
    json_decref(last);
    cr_assert_eq(mtfx_live(&srv, "buy_shoe"), 2);
    m = mtfx_model_get(&srv, "buy_shoe");
    json_t *v3 = json_array_get(json_object_get(m, "versions"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(v3, "status")), "rejected");
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(v3, "decision"), "reason")), "worse"));
    cr_assert(json_is_true(json_object_get(m, "live_features_differ")));
    json_decref(m);
    /* the live version still reads tier: the served predictions did not move */
    cr_assert_float_eq(decide_prop("g003"), p1, 1e-12);
    /* forced: it goes live */
    train_ok("buy_shoe", 1, 4);
    cr_assert_eq(mtfx_live(&srv, "buy_shoe"), 4);
    cr_assert_eq(decide_version("g003"), 4);
    /* rollback in one call: back to 2 (the live history), then 1, then nothing */
    rollback(NULL, 200, 2);
    cr_assert_eq(decide_version("g003"), 2);
    cr_assert_float_eq(decide_prop("g003"), p1, 1e-12); /* version 2 reads tier again */
    rollback("{}", 200, 1);
    rollback(NULL, 409, 1);
    /* to a named version, and refusals */
    rollback("{\"version\": 4}", 200, 4);
    rollback("{\"version\": 99}", 404, 4);
    rollback("{\"version\": 0}", 400, 4);
    rollback("{\"version\": \"2\"}", 400, 4);
    rollback("{\"versoin\": 2}", 400, 4);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/models/buy_shoe/promote", "{\"version\": 2}", &r), 200,
                 "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(mtfx_live(&srv, "buy_shoe"), 2);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/models/buy_shoe/promote", "{}", &r), 400);
    tfx_resp_free(&r);
    /* one version with its source; the audit trail */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/models/buy_shoe/versions/3", NULL, &r), 200);
    cr_assert(strstr(json_string_value(json_object_get(r.json, "source")), "'age'"));
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/models/buy_shoe/versions/77", NULL, &r), 404);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/audit?action=model.*", NULL, &r), 200);
    cr_assert(strstr(r.body, "model.rollback") && strstr(r.body, "model.promote") &&
              strstr(r.body, "model.train"), "%s", r.body);
    tfx_resp_free(&r);
}

Test(models, a_broken_model_file_keeps_its_version_serving)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    campaign("A", "{ model = 'buy_shoe', value = 10 }", 50);
    cr_assert(otfx_wait_campaign(&srv, "A"));
    train_ok("buy_shoe", 0, 1);
    double p = decide_prop("g004");
    tfx_write(&srv, "models/buy_shoe.lua",
              "return {\n  label = { conversion = 'shoe', within = '7d' },\n"
              "  features = { 'stats.recncy' },\n}\n");
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "error_previous_live"));
    json_t *m = mtfx_model_get(&srv, "buy_shoe");
    const char *err = json_string_value(json_object_get(m, "error"));
    cr_assert(err && strstr(err, "buy_shoe.lua:3: features[1]: unknown behaviour 'stats.recncy'"), "%s", err);
    cr_assert_eq(json_integer_value(json_object_get(m, "live_version")), 1);
    json_decref(m);
    cr_assert_float_eq(decide_prop("g004"), p, 1e-12);
    /* training goes on with the last good definition */
    train_ok("buy_shoe", 0, 2);
    /* a syntax error, then a fix */
    tfx_write(&srv, "models/buy_shoe.lua", "return {\n  label = \n");
    for (int i = 0; i < 200; i++) {
        m = mtfx_model_get(&srv, "buy_shoe");
        const char *e = json_string_value(json_object_get(m, "error"));
        int syn = e && strstr(e, "buy_shoe.lua:3:");
        json_decref(m);
        if (syn)
            break;
        cr_assert_lt(i, 199, "syntax error not reported");
        usleep(25000);
    }
    cr_assert_float_eq(decide_prop("g004"), p, 1e-12);
    /* and across a restart, when the file never loaded in this process */
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(tfx_server_start(&srv), 0);
    mtfx_clock(&srv, MTFX_NOW);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "error_previous_live"));
    cr_assert_eq(mtfx_live(&srv, "buy_shoe"), 2);
    cr_assert_float_eq(decide_prop("g004"), p, 1e-12);
    /* promod check says the same, with the exit status */
    char *out = NULL;
    int st = tfx_promod(&out, "check", srv.models, NULL);
    cr_assert_eq(st, 1, "%s", out);
    cr_assert(strstr(out, "buy_shoe.lua:3:"), "%s", out);
    free(out);
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    st = tfx_promod(&out, "check", srv.models, NULL);
    cr_assert_eq(st, 0, "%s", out);
    free(out);
    /* a deleted file takes the model out of serving; its versions stay */
    tfx_unlink(&srv, "models/buy_shoe.lua");
    for (int i = 0; i < 200; i++) {
        m = mtfx_model_get(&srv, "buy_shoe");
        const char *s = json_string_value(json_object_get(m, "status"));
        int gone = s && !strcmp(s, "no_file");
        if (gone)
            cr_assert_eq(json_array_size(json_object_get(m, "versions")), 2);
        json_decref(m);
        if (gone)
            break;
        cr_assert_lt(i, 199, "deleted model still listed");
        usleep(25000);
    }
}

static json_t *failed_training(const char *id)
{
    json_t *last = mtfx_train(&srv, id, 0);
    cr_assert(json_is_false(json_object_get(last, "ok")), "training %s should fail", id);
    return last;
}

Test(models, bad_input_is_refused_with_reasons)
{
    /* a label naming an event type no event has */
    tfx_write(&srv, "models/typo.lua",
              "return { label = { event = 'purchse', after = 'impression', within = '7d' },\n"
              "  features = { 'age' }, min_positives = 5 }\n");
    /* a feature of the wrong type: vip is the string "yes" for everyone */
    mtfx_model(&srv, "wrong", "shoe", "'vip'", NULL);
    /* too few positives for what the file asks */
    mtfx_model(&srv, "few", "shoe", TIER, "min_positives = 100000,");
    cr_assert(mtfx_wait_model(&srv, "typo", "ok") && mtfx_wait_model(&srv, "wrong", "ok") &&
              mtfx_wait_model(&srv, "few", "ok"));
    json_t *l = failed_training("typo");
    const char *e = json_string_value(json_object_get(l, "error"));
    cr_assert(strstr(e, "'purchse'") && strstr(e, "types seen: ") && strstr(e, "impression"), "%s", e);
    json_decref(l);
    l = failed_training("wrong");
    e = json_string_value(json_object_get(l, "error"));
    cr_assert(strstr(e, "feature 'vip' expects a number or a boolean, but 200 of 200 examples had "
                        "another type (the first was a string)"), "%s", e);
    json_decref(l);
    l = failed_training("few");
    e = json_string_value(json_object_get(l, "error"));
    cr_assert(strstr(e, "too few positive examples to train") && strstr(e, "need 100000"), "%s", e);
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(l, "details"), "train_positives")), 0);
    json_decref(l);
    cr_assert_eq(mtfx_live(&srv, "few"), 0);

    /* the API refuses malformed requests and says which field */
    struct { const char *method, *path, *body; int status; const char *code; } cases[] = {
        { "POST", "/api/v1/models/nope/train", NULL, 404, "model_not_found" },
        { "POST", "/api/v1/models/few/train", "{\"force\": 1}", 400, "invalid_field" },
        { "POST", "/api/v1/models/few/train", "{\"forse\": true}", 400, "unknown_field" },
        { "POST", "/api/v1/models/few/train", "[]", 400, NULL },
        { "GET", "/api/v1/models/nope", NULL, 404, "model_not_found" },
        { "GET", "/api/v1/models/few?limit=0", NULL, 400, NULL },
        { "POST", "/api/v1/models/few/rollback", NULL, 409, "nothing_to_roll_back" },
        { "POST", "/api/v1/targeting/propensity", "{\"customer_ids\": [\"g001\"]}", 400, "missing_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\", \"campaign\": \"A\", \"customer_ids\": [\"g001\"]}",
          400, "missing_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\"}", 400, "missing_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\", \"customer_ids\": []}", 400, "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\", \"customer_ids\": [\"a/b\"]}", 400, "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\", \"customer_ids\": [\"g1\"], \"context\": 3}",
          400, "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"segment\": \"gold\", \"model\": \"few\", \"customer_ids\": [\"g1\"]}",
          400, "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"segment\": \"a/b\", \"model\": \"few\"}", 400, "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"segment\": \"gold\", \"model\": \"few\", \"limit\": 0}", 400,
          "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\", \"customer_ids\": [\"g1\"], \"cursor\": \"x\"}",
          400, "invalid_field" },
        { "POST", "/api/v1/targeting/propensity", "{\"segment\": \"nosuch\", \"model\": \"few\"}", 404,
          "segment_not_found" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"nope\", \"customer_ids\": [\"g001\"]}", 404,
          "model_not_found" },
        { "POST", "/api/v1/targeting/propensity", "{\"model\": \"few\", \"customer_ids\": [\"g001\"]}", 409,
          "model_not_trained" },
        { "POST", "/api/v1/targeting/propensity", "{\"campaign\": \"nope\", \"customer_ids\": [\"g001\"]}", 404,
          "campaign_not_found" },
        { "GET", "/api/v1/targeting/recommendations?channel=web", NULL, 400, "missing_field" },
        { "GET", "/api/v1/targeting/recommendations?customer_id=g001", NULL, 400, "missing_field" },
        { "GET", "/api/v1/targeting/recommendations?customer_id=g001&channel=fax", NULL, 422, "unknown_channel" },
        { "GET", "/api/v1/targeting/recommendations?customer_id=g001&channel=web&limit=0", NULL, 400, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tfx_resp r;
        int st = tfx_req(&srv, cases[i].method, cases[i].path, cases[i].body, &r);
        cr_assert_eq(st, cases[i].status, "%s %s %s: %d %s", cases[i].method, cases[i].path,
                     cases[i].body ? cases[i].body : "", st, r.body);
        if (cases[i].code)
            cr_assert_str_eq(tfx_err_code(&r), cases[i].code, "%s: %s", cases[i].path, r.body);
        tfx_resp_free(&r);
    }
    /* 1001 customers is one too many */
    size_t cap = 20000, n = 0;
    char *big = malloc(cap);
    n += (size_t)snprintf(big + n, cap - n, "{\"model\": \"few\", \"customer_ids\": [");
    for (int i = 0; i < 1001; i++)
        n += (size_t)snprintf(big + n, cap - n, "%s\"c%d\"", i ? "," : "", i);
    snprintf(big + n, cap - n, "]}");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/propensity", big, &r), 400);
    tfx_resp_free(&r);
    free(big);
    /* nothing got stuck: the server still trains */
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    train_ok("buy_shoe", 0, 1);
}

Test(models, the_schedule_trains_without_being_asked)
{
    mtfx_model(&srv, "sched", "shoe", TIER, "retrain = '1d',");
    int live = 0;
    for (int i = 0; i < 1200 && !live; i++) { /* the trainer looks every 10 s */
        usleep(50000);
        live = mtfx_live(&srv, "sched");
    }
    cr_assert_eq(live, 1);
    json_t *m = mtfx_model_get(&srv, "sched");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(m, "training"), "last"),
                                                       "trigger")), "schedule");
    cr_assert_str_eq(json_string_value(json_object_get(m, "retrain")), "1d");
    json_decref(m);
}

Test(models, an_outbound_send_reaches_the_top_n_by_score)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    train_ok("buy_shoe", 0, 1);
    /* every gold customer has the same score: 30 of 100 tied at the cut */
    otfx_campaign(&srv, "reach", "'webhook'", NULL, "audience = { model = 'buy_shoe', top = 30 },");
    otfx_campaign(&srv, "likely", "'webhook'", NULL, "audience = { model = 'buy_shoe', above = 0.5 },");
    cr_assert(otfx_wait_campaign(&srv, "reach") && otfx_wait_campaign(&srv, "likely"));
    cr_assert_eq(otfx_action(&srv, "reach", "launch"), 200);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/reach/sends", "queued", 30, 60000), 30);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/reach/sends");
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "done");
    cr_assert_eq(otfx_int(s, "evaluated"), 200);
    cr_assert_eq(otfx_int(s, "queued"), 30);
    cr_assert_eq(otfx_int(s, "skipped.below_audience_score"), 170);
    cr_assert_eq(otfx_int(s, "audience.ranked"), 200);
    cr_assert(json_is_number(json_object_get(json_object_get(s, "audience"), "cutoff")));
    json_decref(s);
    cr_assert_eq(rcv_wait_unique(rcv, 30, 30000), 30);
    for (size_t i = 0; i < rcv_count(rcv); i++) {
        struct rcv_entry e;
        cr_assert_eq(rcv_get(rcv, i, &e), 0);
        cr_assert(strstr(e.body, "\"customer_id\":\"g"), "a non-gold customer was sent: %s", e.body);
        rcv_entry_free(&e);
    }
    cr_assert_eq(otfx_action(&srv, "likely", "launch"), 200);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/likely/sends", "queued", 100, 60000), 100);
    s = otfx_get(&srv, "/api/v1/campaigns/likely/sends");
    cr_assert_eq(otfx_int(s, "skipped.below_audience_score"), 100);
    json_decref(s);
}

/* One audience: a segment filter and a model part.  The model ranks only
 * the customers the filter passes, found through the segment index:
 * "young" (age < 30) is 20 gold and 20 bronze customers, the gold ones
 * scoring ~1 and the bronze ~0, so the top 10 are young gold customers
 * and `above` admits exactly the 20 young gold ones. */
Test(models, a_segment_audience_ranked_by_a_model)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    train_ok("buy_shoe", 0, 1);
    tfx_write(&srv, "segments/young.lua", "return { conditions = { age = { ['$lt'] = 30 } } }\n");
    /* the segment loads with the next reload and its membership is built */
    long size = -1;
    for (int waited = 0; waited < 60000 && size != 40; waited += 50) {
        struct tfx_resp r;
        if (tfx_req(&srv, "GET", "/api/v1/segments/young/size", NULL, &r) == 200 &&
            !strcmp(json_string_value(json_object_get(r.json, "state")) ?: "", "ready"))
            size = (long)json_integer_value(json_object_get(r.json, "size"));
        tfx_resp_free(&r);
        if (size != 40)
            usleep(50000);
    }
    cr_assert_eq(size, 40);
    otfx_campaign(&srv, "young_top", "'webhook'", NULL,
                  "audience = { segments = { 'young' }, model = 'buy_shoe', top = 10 },");
    otfx_campaign(&srv, "young_above", "'webhook'", NULL,
                  "audience = { segments = { 'young' }, model = 'buy_shoe', above = 0.5 },");
    cr_assert(otfx_wait_campaign(&srv, "young_top") && otfx_wait_campaign(&srv, "young_above"));
    cr_assert_eq(otfx_action(&srv, "young_top", "launch"), 200);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/young_top/sends", "queued", 10, 60000), 10);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/young_top/sends");
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "done", "%s", json_dumps(s, 0));
    /* only the segment's 40 members were looked at and ranked */
    cr_assert_eq(otfx_int(s, "evaluated"), 40, "%s", json_dumps(s, 0));
    cr_assert_eq(otfx_int(s, "audience.ranked"), 40, "%s", json_dumps(s, 0));
    cr_assert_eq(otfx_int(s, "queued"), 10);
    cr_assert_eq(otfx_int(s, "skipped.below_audience_score"), 30);
    json_decref(s);
    cr_assert_eq(rcv_wait_unique(rcv, 10, 30000), 10);
    cr_assert_eq(otfx_action(&srv, "young_above", "launch"), 200);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/young_above/sends", "queued", 20, 60000), 20);
    s = otfx_get(&srv, "/api/v1/campaigns/young_above/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), 40, "%s", json_dumps(s, 0));
    cr_assert_eq(otfx_int(s, "skipped.below_audience_score"), 20);
    json_decref(s);
    cr_assert_eq(rcv_wait_unique(rcv, 30, 30000), 30);
    for (size_t i = 0; i < rcv_count(rcv); i++) {
        struct rcv_entry e;
        cr_assert_eq(rcv_get(rcv, i, &e), 0);
        cr_assert(strstr(e.body, "\"customer_id\":\"g"), "a non-gold customer was sent: %s", e.body);
        /* young: g000-g009 and g050-g059 */
        const char *c = strstr(e.body, "\"customer_id\":\"g") + 15; /* "g0N" + digit */
        cr_assert(c[1] == '0' && (c[2] == '0' || c[2] == '5'), "not a young customer: %s", e.body);
        rcv_entry_free(&e);
    }
}

Test(models, promod_train_on_the_command_line)
{
    mtfx_model(&srv, "buy_shoe", "shoe", TIER, NULL);
    cr_assert(mtfx_wait_model(&srv, "buy_shoe", "ok"));
    campaign("A", "{ model = 'buy_shoe', value = 10 }", 50);
    cr_assert(otfx_wait_campaign(&srv, "A"));
    /* with the server running on the same data: it serves the new version */
    char *out = NULL;
    char now[32];
    snprintf(now, sizeof now, "%ld", MTFX_NOW);
    int st = tfx_promod(&out, "train", "buy_shoe", "-c", srv.config, "--now", now, NULL);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "\"version\": 1") && strstr(out, "\"auc\""), "%s", out);
    free(out);
    int live = 0;
    for (int i = 0; i < 100 && live != 1; i++) {
        live = mtfx_live(&srv, "buy_shoe");
        usleep(50000);
    }
    cr_assert_eq(live, 1);
    cr_assert_eq(decide_version("g005"), 1);
    st = tfx_promod(&out, "train", "nope", "-c", srv.config, "--now", "2027-01-15T08:00:00Z", NULL);
    cr_assert_eq(st, 1);
    cr_assert(strstr(out, "no model 'nope'"), "%s", out);
    free(out);
    st = tfx_promod(&out, "train", "-c", srv.config, NULL);
    cr_assert_eq(st, 2);
    free(out);
    st = tfx_promod(&out, "train", "buy_shoe", "-c", srv.config, "--now", "yesterday", NULL);
    cr_assert_eq(st, 2);
    free(out);
}

Test(models, examples_beyond_max_rows_are_sampled)
{
    /* 200 impressions of shoe in the window: max_rows 100 keeps about half */
    mtfx_model(&srv, "half", "shoe", TIER, "max_rows = 100,");
    cr_assert(mtfx_wait_model(&srv, "half", "ok"));
    train_ok("half", 0, 1);
    json_t *m = mtfx_model_get(&srv, "half");
    json_t *rows = json_object_get(json_array_get(json_object_get(m, "versions"), 0), "rows");
    cr_assert_eq(json_integer_value(json_object_get(rows, "examples")), 200);
    cr_assert_float_eq(json_number_value(json_object_get(rows, "sampling_rate")), 0.5, 1e-9);
    long kept = (long)json_integer_value(json_object_get(rows, "sampled"));
    cr_assert(kept >= 60 && kept <= 140, "kept %ld of 200 at rate 0.5", kept);
    json_decref(m);
}
