/*
 * models_tfx.h — helpers of the models integration tests (prefix mtfx_):
 * the "shop" fixture, training through the API and waiting for it.
 * Header-only, like outbox_tfx.h.
 *
 * The shop: 100 gold customers g000..g099 and 100 bronze ones b000..b099
 * (age 20 + i % 50, a string field vip = "yes"), each shown campaign
 * "shoe" and campaign "hat" once, 11 to 60 days before the pinned clock
 * MTFX_NOW.  Every gold customer converts on "shoe" a day later, every
 * bronze one on "hat".  So a model of "conversion of shoe" learns tier =
 * gold, one of "hat" tier = bronze, and nothing else is informative.
 */
#ifndef PROMOD_MODELS_TFX_H
#define PROMOD_MODELS_TFX_H
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"

#define MTFX_NOW 1800000000L
#define MTFX_DAY 86400L

/* POST /api/v1/admin/clock {"now": t} */
static inline void mtfx_clock(struct tfx_server *s, long t)
{
    char b[64];
    snprintf(b, sizeof b, "{\"now\": %ld}", t);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(s, "POST", "/api/v1/admin/clock", b, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
}

/* POST NDJSON in chunks of at most `chunk` lines; asserts every line was
 * taken.  `path` is the events or the profiles import route. */
static inline void mtfx_post_ndjson(struct tfx_server *s, const char *path, const char *data,
                                    size_t len, long chunk)
{
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *q = p;
        for (long n = 0; n < chunk && q < end; n++) {
            const char *nl = memchr(q, '\n', (size_t)(end - q));
            q = nl ? nl + 1 : end;
        }
        struct tfx_resp r;
        int st = tfx_http(s, "POST", path, "Content-Type: application/x-ndjson\r\n", p,
                          (size_t)(q - p), &r);
        cr_assert_eq(st, 200, "%s: %d %.300s", path, st, r.body);
        json_t *rej = json_object_get(r.json, "rejected"), *fail = json_object_get(r.json, "failed");
        cr_assert(json_integer_value(rej ? rej : fail) == 0, "%.500s", r.body);
        tfx_resp_free(&r);
        p = q;
    }
}

static inline void mtfx_shop(struct tfx_server *s)
{
    mtfx_clock(s, MTFX_NOW);
    size_t cap = 1 << 20, pl = 0, el = 0;
    char *prof = malloc(cap), *ev = malloc(cap);
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < 100; i++) {
            char id[16];
            snprintf(id, sizeof id, "%c%03d", t ? 'b' : 'g', i);
            pl += (size_t)snprintf(prof + pl, cap - pl,
                                   "{\"id\":\"%s\",\"tier\":\"%s\",\"age\":%d,\"vip\":\"yes\","
                                   "\"first_name\":\"N%d\"}\n", id, t ? "bronze" : "gold",
                                   20 + i % 50, i);
            long at = MTFX_NOW - (60 - (i % 50)) * MTFX_DAY;
            const char *won = t ? "hat" : "shoe";
            el += (size_t)snprintf(ev + el, cap - el,
                                   "{\"type\":\"impression\",\"customer_id\":\"%s\",\"campaign_id\":\"shoe\",\"ts\":%ld}\n"
                                   "{\"type\":\"impression\",\"customer_id\":\"%s\",\"campaign_id\":\"hat\",\"ts\":%ld}\n"
                                   "{\"type\":\"conversion\",\"customer_id\":\"%s\",\"campaign_id\":\"%s\",\"ts\":%ld,\"revenue\":10}\n",
                                   id, at, id, at + 3600, id, won, at + MTFX_DAY);
        }
    mtfx_post_ndjson(s, "/api/v1/profiles/import", prof, pl, 100000);
    mtfx_post_ndjson(s, "/api/v1/events", ev, el, 100000);
    free(prof);
    free(ev);
}

/* A model file of the shop: label on campaign `camp`, the given features
 * (Lua list body), separable enough for near-certain probabilities. */
static inline void mtfx_model(struct tfx_server *s, const char *id, const char *camp,
                              const char *features, const char *more)
{
    char path[200], src[4096];
    snprintf(path, sizeof path, "models/%s.lua", id);
    snprintf(src, sizeof src,
             "return {\n"
             "  id = '%s',\n"
             "  label = { conversion = '%s', within = '7d' },\n"
             "  features = { %s },\n"
             "  params = { trees = 30, depth = 1, eta = 0.5 },\n"
             "  min_positives = 10,\n"
             "  %s\n"
             "}\n", id, camp, features, more ? more : "");
    tfx_write(s, path, src);
}

/* GET /api/v1/models/{id} (new reference), or NULL when not 200. */
static inline json_t *mtfx_model_get(struct tfx_server *s, const char *id)
{
    char path[200];
    snprintf(path, sizeof path, "/api/v1/models/%s", id);
    struct tfx_resp r;
    int st = tfx_req(s, "GET", path, NULL, &r);
    json_t *j = st == 200 ? json_incref(r.json) : NULL;
    tfx_resp_free(&r);
    return j;
}

/* Wait until the server lists model `id` whose file parses with `hash`
 * unknown: until it is listed with status `status`. */
static inline int mtfx_wait_model(struct tfx_server *s, const char *id, const char *status)
{
    for (int i = 0; i < 400; i++) {
        json_t *m = mtfx_model_get(s, id);
        const char *st = json_string_value(json_object_get(m, "status"));
        int ok = st && !strcmp(st, status);
        json_decref(m);
        if (ok)
            return 1;
        usleep(25000);
    }
    return 0;
}

/* POST .../train (with force) and wait until its attempt is recorded;
 * returns the recorded attempt (training.last, new reference). */
static inline json_t *mtfx_train(struct tfx_server *s, const char *id, int force)
{
    json_t *m = mtfx_model_get(s, id);
    cr_assert_not_null(m, "model %s not listed", id);
    json_t *before = json_deep_copy(json_object_get(json_object_get(m, "training"), "last"));
    json_decref(m);
    char path[200];
    snprintf(path, sizeof path, "/api/v1/models/%s/train", id);
    struct tfx_resp r;
    int st = tfx_req(s, "POST", path, force ? "{\"force\": true}" : NULL, &r);
    cr_assert_eq(st, 202, "train %s: %d %s", id, st, r.body);
    tfx_resp_free(&r);
    json_t *last = NULL;
    for (int i = 0; i < 2400 && !last; i++) { /* 120 s: trainings under ASan */
        usleep(50000);
        m = mtfx_model_get(s, id);
        json_t *tr = json_object_get(m, "training");
        json_t *l = json_object_get(tr, "last");
        const char *state = json_string_value(json_object_get(tr, "state"));
        if (state && !strcmp(state, "idle") && json_is_object(l) && !json_equal(l, before))
            last = json_incref(l);
        json_decref(m);
    }
    json_decref(before);
    cr_assert_not_null(last, "training of %s did not finish", id);
    return last;
}

/* The live version of a model (0: none). */
static inline int mtfx_live(struct tfx_server *s, const char *id)
{
    json_t *m = mtfx_model_get(s, id);
    int v = (int)json_integer_value(json_object_get(m, "live_version"));
    json_decref(m);
    return v;
}

/* POST /api/v1/targeting/propensity for one customer of model `model`. */
static inline double mtfx_propensity(struct tfx_server *s, const char *model, const char *cust)
{
    char body[300];
    snprintf(body, sizeof body, "{\"model\": \"%s\", \"customer_ids\": [\"%s\"]}", model, cust);
    struct tfx_resp r;
    int st = tfx_req(s, "POST", "/api/v1/targeting/propensity", body, &r);
    cr_assert_eq(st, 200, "%s", r.body);
    json_t *sc = json_array_get(json_object_get(r.json, "scores"), 0);
    cr_assert_not_null(sc, "%s", r.body);
    double v = json_number_value(json_object_get(sc, "score"));
    tfx_resp_free(&r);
    return v;
}

#endif
