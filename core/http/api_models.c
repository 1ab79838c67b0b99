/* api_models.c — /api/v1/models (list, one model with its versions, a
 * version, train, promote, rollback) and /api/v1/targeting (propensity,
 * recommendations). */
#include "http/api.h"
#include "base/app.h"
#include "base/err.h"
#include "base/id.h"
#include "engine/models.h"
#include "engine/segments.h"
#include "engine/targeting.h"
#include "http/router.h"
#include "insight/train.h"
#include "store/audit.h"
#include <stdlib.h>
#include <string.h>

static const char *actor_of(struct http_req *r)
{
    const char *a = audit_actor(r->key, http_header(r, "X-Actor"));
    if (!a)
        http_reply_error(r, 400, "invalid_header", "X-Actor must be an id (A-Z a-z 0-9 _ - . : @)",
                         "X-Actor");
    return a;
}

/* Refuse fields other than `allowed` (NULL-terminated); 0 when fine. */
static int only_fields(struct http_req *r, json_t *b, const char *const *allowed, const char *list)
{
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= !strcmp(k, *a);
        if (!ok) {
            http_reply_errorf(r, 400, "unknown_field", k, "unknown field \"%.64s\" (expected %s)", k,
                              list);
            return -1;
        }
    }
    return 0;
}

/* An optional body object (an empty body is {}); NULL when replied. */
static json_t *opt_body(struct http_req *r)
{
    if (r->body_len == 0)
        return json_object();
    return http_body_json(r, JSON_OBJECT);
}

static void h_list(struct http_req *r)
{
    json_t *list = models_list_json();
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m)
        json_object_set_new(m, "training",
                            train_sched_status(g_app, json_string_value(json_object_get(m, "id"))));
    http_reply_json(r, 200, json_pack("{s:o}", "models", list));
}

static void h_item(struct http_req *r)
{
    int ok = 1;
    long limit = http_query_long(r, "limit", 20, 1, 1000, &ok);
    if (!ok)
        return;
    struct reqerr e = { 0 };
    json_t *o = models_describe(g_app->store, r->params[0], (int)limit, &e);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    json_object_set_new(o, "training", train_sched_status(g_app, r->params[0]));
    http_reply_json(r, 200, o);
}

static int version_param(struct http_req *r, const char *s, int *v)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (*end || end == s || n < 1 || n > 1000000000) {
        http_reply_error(r, 400, "invalid_version", "a version is a whole number from 1", "version");
        return -1;
    }
    *v = (int)n;
    return 0;
}

static void h_version(struct http_req *r)
{
    int v;
    if (version_param(r, r->params[1], &v))
        return;
    struct reqerr e = { 0 };
    json_t *o = models_version(g_app->store, r->params[0], v, &e);
    if (!o)
        http_reply_reqerr(r, &e);
    else
        http_reply_json(r, 200, o);
}

/* POST /api/v1/models/{id}/train {"force"?: bool} → 202 and the training status */
static void h_train(struct http_req *r)
{
    const char *actor = actor_of(r);
    if (!actor)
        return;
    json_t *b = opt_body(r);
    if (!b)
        return;
    static const char *const allowed[] = { "force", NULL };
    if (only_fields(r, b, allowed, "force")) {
        json_decref(b);
        return;
    }
    json_t *f = json_object_get(b, "force");
    if (f && !json_is_boolean(f)) {
        http_reply_error(r, 400, "invalid_field", "\"force\" must be true or false", "force");
        json_decref(b);
        return;
    }
    const char *id = r->params[0];
    json_t *status = NULL;
    int rc = train_sched_enqueue(id, json_is_true(f), actor, &status);
    json_decref(b);
    if (rc == ERR_NOTFOUND) {
        http_reply_errorf(r, 404, "model_not_found", NULL, "no model '%.128s' (a file in %s/)", id,
                          g_app->cfg.models_dir);
    } else if (rc == ERR_EXISTS) {
        json_t *err = json_pack("{s:{s:s,s:s,s:n,s:O}}", "error", "code", "training_in_progress",
                                "message", "a training of this model is already queued or running",
                                "field", "training", status);
        http_reply_json(r, 409, err);
    } else if (rc) {
        http_reply_error(r, 503, "trainer_unavailable", "the trainer is not running", NULL);
    } else {
        char obj[160];
        snprintf(obj, sizeof obj, "model:%s", id);
        json_t *after = json_pack("{s:b}", "force", json_is_true(f));
        audit_log(g_app->store, actor, "model.train", obj, NULL, after);
        json_decref(after);
        http_reply_json(r, 202, json_pack("{s:s,s:O}", "model", id, "training", status));
    }
    json_decref(status);
}

/* promote {"version": n} (required) / rollback {"version"?: n} */
static void live_change(struct http_req *r, int rollback)
{
    const char *actor = actor_of(r);
    if (!actor)
        return;
    json_t *b = opt_body(r);
    if (!b)
        return;
    static const char *const allowed[] = { "version", NULL };
    if (only_fields(r, b, allowed, "version")) {
        json_decref(b);
        return;
    }
    json_t *v = json_object_get(b, "version");
    int version = 0;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000000) {
            http_reply_error(r, 400, "invalid_field", "\"version\" must be a whole number from 1",
                             "version");
            json_decref(b);
            return;
        }
        version = (int)json_integer_value(v);
    } else if (!rollback) {
        http_reply_error(r, 400, "missing_field", "\"version\" is required: the version to make live",
                         "version");
        json_decref(b);
        return;
    }
    json_decref(b);
    struct reqerr e = { 0 };
    json_t *out = NULL;
    int rc = rollback ? models_rollback(g_app, r->params[0], version, actor, &out, &e)
                      : models_promote(g_app, r->params[0], version, actor, &out, &e);
    if (rc)
        http_reply_reqerr(r, &e);
    else
        http_reply_json(r, 200, out);
}

static void h_promote(struct http_req *r) { live_change(r, 0); }
static void h_rollback(struct http_req *r) { live_change(r, 1); }

/* POST /api/v1/targeting/propensity
 * {"model" | "campaign", "customer_ids": [...] | "segment" (+ "limit"?, "cursor"?),
 *  "channel"?, "context"?} */
static void h_propensity(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    static const char *const allowed[] = { "model", "campaign", "customer_ids", "channel",
                                           "context", "segment", "limit", "cursor", NULL };
    const char *ids[TARGETING_MAX_CUSTOMERS];
    struct targeting_req q = { .customers = ids };
    json_t *members = NULL; /* a segment's page: owns the ids */
    char next[132] = "";
    if (only_fields(r, b, allowed, "model or campaign, customer_ids or segment (limit, cursor), "
                                   "channel, context"))
        goto out;
    json_t *sg = json_object_get(b, "segment"), *lim = json_object_get(b, "limit"),
           *cur = json_object_get(b, "cursor");
    if (sg && json_object_get(b, "customer_ids")) {
        http_reply_error(r, 400, "invalid_field", "give \"customer_ids\" or \"segment\", not both",
                         "segment");
        goto out;
    }
    if (!sg && (lim || cur)) {
        http_reply_error(r, 400, "invalid_field", "\"limit\" and \"cursor\" page a \"segment\"",
                         lim ? "limit" : "cursor");
        goto out;
    }
    if (sg) {
        if (!json_is_string(sg) || !id_valid(json_string_value(sg))) {
            http_reply_error(r, 400, "invalid_field", "\"segment\" must be a segment id", "segment");
            goto out;
        }
        json_int_t limit = lim ? (json_is_integer(lim) ? json_integer_value(lim) : -1) : 100;
        if (limit < 1 || limit > TARGETING_MAX_CUSTOMERS) {
            http_reply_errorf(r, 400, "invalid_field", "limit", "\"limit\" must be 1 to %d",
                              TARGETING_MAX_CUSTOMERS);
            goto out;
        }
        if (cur && (!json_is_string(cur) || strlen(json_string_value(cur)) > 128)) {
            http_reply_error(r, 400, "invalid_field", "\"cursor\" must be the next_cursor of the "
                             "previous page", "cursor");
            goto out;
        }
        members = json_array();
        int rc = members ? segments_members_page(g_app->store, json_string_value(sg),
                                                 cur ? json_string_value(cur) : "", (int)limit,
                                                 members, next)
                         : ERR_NOMEM;
        if (rc == ERR_NOTFOUND) {
            http_reply_errorf(r, 404, "segment_not_found", "segment", "no segment '%s'",
                              json_string_value(sg));
            goto out;
        }
        if (rc) {
            http_reply_err_code(r, rc, "segment");
            goto out;
        }
        size_t i;
        json_t *v;
        json_array_foreach(members, i, v)
            if (q.ncustomers < TARGETING_MAX_CUSTOMERS)
                ids[q.ncustomers++] = json_string_value(v);
    }
    json_t *m = json_object_get(b, "model"), *c = json_object_get(b, "campaign");
    if ((m != NULL) == (c != NULL)) {
        http_reply_error(r, 400, "missing_field", "give exactly one of \"model\" (a model id) or "
                         "\"campaign\" (a campaign that ranks by a model)", m ? "campaign" : "model");
        goto out;
    }
    json_t *idv = m ? m : c;
    if (!json_is_string(idv) || !id_valid(json_string_value(idv))) {
        http_reply_errorf(r, 400, "invalid_field", m ? "model" : "campaign", "\"%s\" must be an id",
                          m ? "model" : "campaign");
        goto out;
    }
    if (m)
        q.model = json_string_value(m);
    else
        q.campaign = json_string_value(c);
    json_t *cs = json_object_get(b, "customer_ids");
    size_t n = json_array_size(cs);
    if (sg) {
        n = 0; /* the segment's page */
    } else if (!json_is_array(cs) || n < 1 || n > TARGETING_MAX_CUSTOMERS) {
        http_reply_errorf(r, 400, cs ? "invalid_field" : "missing_field", "customer_ids",
                          "\"customer_ids\" must be a list of 1 to %d customer ids",
                          TARGETING_MAX_CUSTOMERS);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(cs, i));
        if (!s || !id_valid(s)) {
            http_reply_errorf(r, 400, "invalid_field", "customer_ids",
                              "customer_ids[%zu] must be a customer id (1-128 of A-Z a-z 0-9 _ - . : @)",
                              i);
            goto out;
        }
        ids[q.ncustomers++] = s;
    }
    json_t *ch = json_object_get(b, "channel"), *ctx = json_object_get(b, "context");
    if (ch && (!json_is_string(ch) || !id_valid(json_string_value(ch)))) {
        http_reply_error(r, 400, "invalid_field", "\"channel\" must be a channel name", "channel");
        goto out;
    }
    if (ctx && !json_is_object(ctx)) {
        http_reply_error(r, 400, "invalid_field", "\"context\" must be an object", "context");
        goto out;
    }
    q.channel = json_string_value(ch);
    q.context = ctx;
    struct reqerr e = { 0 };
    json_t *o = targeting_propensity(&q, &e);
    if (o && sg) {
        json_object_set_new(o, "segment", json_string(json_string_value(sg)));
        json_object_set_new(o, "next_cursor", next[0] ? json_string(next) : json_null());
    }
    if (o)
        http_reply_json(r, 200, o);
    else
        http_reply_reqerr(r, &e);
out:
    json_decref(members);
    json_decref(b);
}

/* GET /api/v1/targeting/recommendations?customer_id=&channel=&placement=&limit= */
static void h_recommend(struct http_req *r)
{
    char *cust = http_query_get(r, "customer_id"), *ch = http_query_get(r, "channel");
    char *pl = http_query_get(r, "placement");
    int ok = 1;
    long limit = 0;
    if (!cust || !id_valid(cust)) {
        http_reply_error(r, 400, cust ? "invalid_id" : "missing_field",
                         "customer_id must be 1-128 characters of A-Z a-z 0-9 _ - . : @",
                         "customer_id");
    } else if (!ch || !id_valid(ch)) {
        http_reply_error(r, 400, ch ? "invalid_field" : "missing_field",
                         "channel is required (a loaded channel, e.g. web)", "channel");
    } else if (pl && (!*pl || strlen(pl) > 128)) {
        http_reply_error(r, 400, "invalid_field", "placement must be 1-128 characters", "placement");
    } else if ((limit = http_query_long(r, "limit", 5, 1, g_app->cfg.max_limit, &ok)), ok) {
        struct reqerr e = { 0 };
        json_t *o = targeting_recommend(cust, ch, pl, (int)limit, &e);
        if (o)
            http_reply_json(r, 200, o);
        else
            http_reply_reqerr(r, &e);
    }
    free(cust);
    free(ch);
    free(pl);
}

void api_models_register(void)
{
    router_add(HTTP_GET, "/api/v1/models", ROLE_MARKETER, h_list, 0);
    router_add(HTTP_GET, "/api/v1/models/{id}", ROLE_MARKETER, h_item, 0);
    router_add(HTTP_GET, "/api/v1/models/{id}/versions/{n}", ROLE_MARKETER, h_version, 0);
    router_add(HTTP_POST, "/api/v1/models/{id}/train", ROLE_MARKETER, h_train, 0);
    router_add(HTTP_POST, "/api/v1/models/{id}/promote", ROLE_MARKETER, h_promote, 0);
    router_add(HTTP_POST, "/api/v1/models/{id}/rollback", ROLE_MARKETER, h_rollback, 0);
    router_add(HTTP_POST, "/api/v1/targeting/propensity", ROLE_MARKETER, h_propensity, 0);
    router_add(HTTP_GET, "/api/v1/targeting/recommendations", ROLE_MARKETER, h_recommend, 0);
}
