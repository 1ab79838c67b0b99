/*
 * test_models_segments.c — segment memberships as model features, and
 * propensity for a segment, on a real server.
 *
 * The planted relationship: each of CUSTOMERS customers sees campaign
 * "shoe" once (an impression 8 to 85 days before the pinned clock) and is
 * gold or silver.  A third click (any campaign) two days *before* their
 * impression, a third two days *after* it, a third never.  Segment
 * "clicked" = stats.click >= 1; segment "clicked_gold" = $segment clicked
 * and tier gold.  A customer converts on "shoe" within 7 days with
 * probability 0.8 when a member of clicked_gold *at the impression* (clicked
 * before it, and gold), else 0.2.  So a model reading today's membership
 * would take the after-clickers for members and fall short of the truth;
 * one reading the membership as of each example (the definitions evaluated
 * on p.stats replayed to that time) reaches the AUC of the true
 * probabilities.  Checked with LIBLINEAR and XGBoost: validation AUC within
 * 0.02 of the truth's on the same examples, the segment feature the most
 * important; then POST /api/v1/targeting/propensity with a segment pages
 * through exactly the segment's members, each with its score.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "insight/train.h"
#include "models_tfx.h"

#define CUSTOMERS 6000

static struct tfx_server srv;

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(segfeat, .fini = teardown, .timeout = 580);

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

struct truth {
    long at;          /* the impression */
    int gold, when;   /* when: 0 clicked before, 1 after, 2 never */
    double p;
    int label;
};
static struct truth T[CUSTOMERS];

static void plant(void)
{
    size_t cap = 4u << 20, pl = 0, el = 0;
    char *prof = malloc(cap), *ev = malloc(cap);
    for (int i = 0; i < CUSTOMERS; i++) {
        struct truth *t = &T[i];
        t->gold = (int)(rnd() % 2);
        t->when = (int)(rnd() % 3);
        t->at = MTFX_NOW - 8 * MTFX_DAY - (long)(rnd() % (77 * MTFX_DAY));
        t->p = t->gold && t->when == 0 ? 0.8 : 0.2;
        t->label = (double)(rnd() % 1000000) / 1e6 < t->p;
        pl += (size_t)snprintf(prof + pl, cap - pl,
                               "{\"id\":\"k%04d\",\"tier\":\"%s\",\"age\":%d}\n", i,
                               t->gold ? "gold" : "silver", 20 + (int)(rnd() % 50));
        el += (size_t)snprintf(ev + el, cap - el,
                               "{\"type\":\"impression\",\"customer_id\":\"k%04d\","
                               "\"campaign_id\":\"shoe\",\"ts\":%ld}\n", i, t->at);
        if (t->when < 2)
            el += (size_t)snprintf(ev + el, cap - el,
                                   "{\"type\":\"click\",\"customer_id\":\"k%04d\","
                                   "\"campaign_id\":\"news\",\"ts\":%ld}\n", i,
                                   t->at + (t->when ? 2 : -2) * MTFX_DAY);
        if (t->label)
            el += (size_t)snprintf(ev + el, cap - el,
                                   "{\"type\":\"conversion\",\"customer_id\":\"k%04d\","
                                   "\"campaign_id\":\"shoe\",\"ts\":%ld,\"revenue\":10}\n", i,
                                   t->at + MTFX_DAY);
    }
    mtfx_post_ndjson(&srv, "/api/v1/profiles/import", prof, pl, 100000);
    mtfx_post_ndjson(&srv, "/api/v1/events", ev, el, 5000);
    free(prof);
    free(ev);
}

static const char *model_src =
    "return {\n"
    "  id = '%s',\n"
    "  label = { conversion = 'shoe', within = '7d' },\n"
    "  features = { 'segment.clicked_gold', 'age' },\n"
    "  algorithm = '%s',\n"
    "  %s\n"
    "  min_positives = 50,\n"
    "}\n";

static void check_model(const char *id, const char *algo, const char *params)
{
    char path[100], src[1000];
    snprintf(path, sizeof path, "models/%s.lua", id);
    snprintf(src, sizeof src, model_src, id, algo, params);
    tfx_write(&srv, path, src);
    cr_assert(mtfx_wait_model(&srv, id, "ok"), "%s not loaded", id);
    mtfx_clock(&srv, MTFX_NOW);
    json_t *last = mtfx_train(&srv, id, 0);
    cr_assert(json_is_true(json_object_get(last, "ok")), "%s: %s", id,
              json_string_value(json_object_get(last, "error")));
    json_decref(last);
    json_t *m = mtfx_model_get(&srv, id);
    json_t *v = json_array_get(json_object_get(m, "versions"), 0);
    json_t *win = json_object_get(v, "window");
    long split = (long)json_integer_value(json_object_get(win, "validation_from_ts"));
    long to = (long)json_integer_value(json_object_get(win, "to_ts"));
    float *y = malloc(sizeof *y * CUSTOMERS);
    double *p = malloc(sizeof *p * CUSTOMERS), *today = malloc(sizeof *today * CUSTOMERS);
    long n = 0;
    for (int i = 0; i < CUSTOMERS; i++)
        if (T[i].at >= split && T[i].at + 7 * MTFX_DAY <= to) {
            y[n] = (float)T[i].label;
            today[n] = T[i].gold && T[i].when < 2; /* the index's membership, not the example's */
            p[n++] = T[i].p;
        }
    cr_assert_gt(n, 100, "validation examples: %ld", n);
    double truth = train_auc(y, p, n), stale = train_auc(y, today, n);
    double auc = json_number_value(json_object_get(
        json_object_get(json_object_get(v, "metrics"), "validation"), "auc"));
    json_t *imp = json_object_get(v, "importance");
    const char *top = json_string_value(json_object_get(json_array_get(imp, 0), "feature"));
    double share = json_number_value(json_object_get(json_array_get(imp, 0), "share"));
    cr_log_info("%s: validation AUC %.4f, the true probabilities' %.4f on %ld examples (today's "
                "membership would score %.4f); top feature %s (%.3f)", id, auc, truth, n, stale,
                top, share);
    cr_assert(top && !strcmp(top, "segment.clicked_gold"), "%s: importance %s", id,
              json_dumps(imp, 0));
    cr_assert_gt(share, 0.5);
    cr_assert(fabs(auc - truth) <= 0.02, "%s: AUC %.4f vs truth %.4f", id, auc, truth);
    /* the feature's definition is reported */
    json_t *f0 = json_array_get(json_object_get(m, "features"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(f0, "source")) ?: "", "segment");
    cr_assert_str_eq(json_string_value(json_object_get(f0, "segment")) ?: "", "clicked_gold");
    cr_assert_gt(auc, stale + 0.015, "%s: no better than today's membership (%.4f)", id, stale);
    free(y);
    free(p);
    free(today);
    json_decref(m);
}

/* Members of `seg` through GET /api/v1/segments/{id}/customers, once ready. */
static json_t *members(const char *seg, long want)
{
    char path[300], last[300] = "";
    long size = -1;
    for (int waited = 0; waited < 120000 && size != want; waited += 50) {
        snprintf(path, sizeof path, "/api/v1/segments/%s/size", seg);
        struct tfx_resp r;
        size = -1;
        if (tfx_req(&srv, "GET", path, NULL, &r) == 200 &&
            !strcmp(json_string_value(json_object_get(r.json, "state")) ?: "", "ready"))
            size = (long)json_integer_value(json_object_get(r.json, "size"));
        snprintf(last, sizeof last, "%.200s", r.body ? r.body : "");
        tfx_resp_free(&r);
        if (size != want)
            usleep(50000);
    }
    cr_assert_eq(size, want, "segment %s: %s (want %ld members)", seg, last, want);
    json_t *all = json_array();
    char cursor[200] = "";
    do {
        snprintf(path, sizeof path, "/api/v1/segments/%s/customers?limit=500%s%s", seg,
                 cursor[0] ? "&cursor=" : "", cursor);
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", r.body);
        json_array_extend(all, json_object_get(r.json, "customers"));
        const char *nx = json_string_value(json_object_get(r.json, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", nx ? nx : "");
        tfx_resp_free(&r);
    } while (cursor[0]);
    return all;
}

Test(segfeat, segment_memberships_as_of_each_example_and_propensity_for_a_segment)
{
    tfx_server_init(&srv, "test_clock = true, event_retention_days = 800,");
    tfx_write(&srv, "segments/clicked.lua",
              "return { conditions = { ['stats.click'] = { ['$gte'] = 1 } } }\n");
    tfx_write(&srv, "segments/clicked_gold.lua",
              "return { conditions = { ['$segment'] = 'clicked', tier = 'gold' } }\n");
    cr_assert_eq(tfx_server_start(&srv), 0);
    mtfx_clock(&srv, MTFX_NOW);
    plant();

    check_model("segbuy_linear", "logistic", "");
    check_model("segbuy_xgb", "xgboost", "params = { trees = 40, depth = 2, eta = 0.3 },");

    /* `promod train` in its own process loads the segments too: the same
     * examples, the same features, so LIBLINEAR finds the same validation AUC */
    json_t *m = mtfx_model_get(&srv, "segbuy_linear");
    double auc1 = json_number_value(json_object_get(json_object_get(json_object_get(
        json_array_get(json_object_get(m, "versions"), 0), "metrics"), "validation"), "auc"));
    json_decref(m);
    char *out = NULL, now[32];
    snprintf(now, sizeof now, "%ld", MTFX_NOW);
    int st = tfx_promod(&out, "train", "segbuy_linear", "-c", srv.config, "--now", now, "--force",
                        NULL);
    cr_assert_eq(st, 0, "%s", out);
    const char *brace = strchr(out, '{');
    json_t *res = brace ? json_loads(brace, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    cr_assert_not_null(res, "%s", out);
    double auc2 = json_number_value(json_object_get(json_object_get(res, "validation"), "auc"));
    cr_log_info("promod train: %s", out);
    cr_assert_float_eq(auc2, auc1, 1e-9, "promod train: %s", out);
    json_decref(res);
    free(out);

    /* today: every gold clicker is a member, before or after the impression */
    long want = 0;
    for (int i = 0; i < CUSTOMERS; i++)
        want += T[i].gold && T[i].when < 2;
    json_t *all = members("clicked_gold", want);
    cr_assert_eq((long)json_array_size(all), want, "the index's members");

    /* propensity for the segment, page by page */
    json_t *seen = json_object();
    char cursor[200] = "";
    int pages = 0;
    do {
        char body[400];
        snprintf(body, sizeof body, "{\"model\": \"segbuy_xgb\", \"segment\": \"clicked_gold\", "
                 "\"limit\": 97%s%s%s}", cursor[0] ? ", \"cursor\": \"" : "", cursor,
                 cursor[0] ? "\"" : "");
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/propensity", body, &r), 200, "%s",
                     r.body);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "segment")), "clicked_gold");
        cr_assert_eq(json_array_size(json_object_get(r.json, "errors")), 0, "%s", r.body);
        json_t *sc = json_object_get(r.json, "scores");
        const char *nx = json_string_value(json_object_get(r.json, "next_cursor"));
        cr_assert(json_array_size(sc) == 97 || !nx, "a short page is the last");
        size_t i;
        json_t *row;
        json_array_foreach(sc, i, row) {
            const char *c = json_string_value(json_object_get(row, "customer_id"));
            double s = json_number_value(json_object_get(row, "score"));
            cr_assert(s > 0 && s < 1, "%s: %g", c, s);
            cr_assert_null(json_object_get(seen, c), "%s listed twice", c);
            json_object_set_new(seen, c, json_real(s));
        }
        snprintf(cursor, sizeof cursor, "%s", nx ? nx : "");
        tfx_resp_free(&r);
        pages++;
    } while (cursor[0] && pages < 1000);
    cr_assert_eq(json_object_size(seen), json_array_size(all), "propensity for the segment "
                 "scores exactly its members");
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) {
        json_t *s = json_object_get(seen, json_string_value(v));
        cr_assert_not_null(s, "member %s not scored", json_string_value(v));
        if (i % 200 == 0) /* the same score as for a list of customers */
            cr_assert_float_eq(json_real_value(s),
                               mtfx_propensity(&srv, "segbuy_xgb", json_string_value(v)), 1e-9);
    }
    /* served now, a member reads segment.clicked_gold = 1: about 0.8 */
    double member = mtfx_propensity(&srv, "segbuy_linear", json_string_value(json_array_get(all, 0)));
    cr_assert_gt(member, 0.5, "a member now: %g", member);
    json_decref(seen);
    json_decref(all);
}
