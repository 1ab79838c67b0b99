/* api_experiments.c — /api/v1/experiments: create and list, one
 * experiment (GET, PUT, DELETE), start / stop / winner, results,
 * recommendations, the power calculator and a forced reload.  Parses and
 * checks the request, calls service/exp_admin.h (or the power calculator
 * of insight/exp_results.h), renders; errors with http_reply_reqerr. */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "http/router.h"
#include "insight/exp_results.h"
#include "service/exp_admin.h"
#include "store/audit.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_id(struct http_req *r, const char *id)
{
    if (id_valid(id))
        return 1;
    http_reply_error(r, 400, "invalid_id",
                     "id must be 1-128 characters of A-Z a-z 0-9 _ - . : @ and not start with '.'",
                     "id");
    return 0;
}

static const char *actor_of(struct http_req *r)
{
    const char *a = audit_actor(r->key, http_header(r, "X-Actor"));
    if (!a)
        http_reply_error(r, 400, "invalid_header",
                         "X-Actor must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "X-Actor");
    return a;
}

static void reply(struct http_req *r, int status, json_t *v, struct reqerr *e)
{
    if (v)
        http_reply_json(r, status, v);
    else
        http_reply_reqerr(r, e);
}

static void h_collection(struct http_req *r)
{
    struct reqerr e = { 0 };
    if (r->method == HTTP_POST) {
        const char *actor = actor_of(r);
        if (!actor)
            return;
        json_t *b = http_body_json(r, JSON_OBJECT);
        if (!b)
            return;
        json_t *v = exp_admin_create(b, actor, &e);
        json_decref(b);
        reply(r, 201, v, &e);
        return;
    }
    char *status = http_query_get(r, "status");
    json_t *v = exp_admin_list(status, &e);
    free(status);
    reply(r, 200, v, &e);
}

static void h_item(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    struct reqerr e = { 0 };
    if (r->method == HTTP_GET) {
        reply(r, 200, exp_admin_get(id, &e), &e);
        return;
    }
    const char *actor = actor_of(r);
    if (!actor)
        return;
    if (r->method == HTTP_DELETE) {
        reply(r, 200, exp_admin_delete(id, actor, &e), &e);
        return;
    }
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    json_t *v = exp_admin_update(id, b, actor, &e);
    json_decref(b);
    reply(r, 200, v, &e);
}

/* POST /api/v1/experiments/{id}/<action>: the action is the last segment. */
static void h_action(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    const struct router_route *rt = router_get(r->route);
    const char *slash = rt ? strrchr(rt->pattern, '/') : NULL;
    const char *action = slash ? slash + 1 : "";
    const char *actor = actor_of(r);
    if (!actor)
        return;
    json_t *b = NULL;
    if (r->body_len && !(b = http_body_json(r, JSON_OBJECT)))
        return;
    struct reqerr e = { 0 };
    json_t *v = exp_admin_action(id, action, b, actor, &e);
    json_decref(b);
    reply(r, 200, v, &e);
}

static void h_results(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    struct reqerr e = { 0 };
    reply(r, 200, exp_admin_results(id, &e), &e);
}

static void h_recommendations(struct http_req *r)
{
    struct reqerr e = { 0 };
    reply(r, 200, exp_admin_recommendations(&e), &e);
}

static void h_reload(struct http_req *r)
{
    int rc = exp_admin_reload();
    if (rc < 0) {
        http_reply_err_code(r, rc, "experiments reload");
        return;
    }
    json_t *o = json_pack("{s:i}", "files_with_errors", rc);
    http_reply_json(r, 200, o);
}

/* A number from the query: `def` when absent; 0 after a 400. */
static int qnum(struct http_req *r, const char *name, double def, double *out)
{
    char *v = http_query_get(r, name);
    if (!v) {
        *out = def;
        return 1;
    }
    char *end;
    double x = strtod(v, &end);
    int ok = *v && !*end && isfinite(x);
    free(v);
    if (!ok) {
        http_reply_errorf(r, 400, "invalid_field", name, "%s must be a number", name);
        return 0;
    }
    *out = x;
    return 1;
}

/* GET /api/v1/experiments/power?baseline=0.05&mde=0.1[&sd=][&alpha=][&power=]
 * [&variants=][&sequential_tuning=][&per_day=] */
static void h_power(struct http_req *r)
{
    static const char *known[] = { "baseline", "mde", "sd", "alpha", "power", "variants",
                                   "sequential_tuning", "per_day", NULL };
    const char *p = r->query ? r->query : "";
    while (*p) {
        size_t n = strcspn(p, "=&");
        int ok = n == 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = strlen(known[i]) == n && !strncmp(p, known[i], n);
        if (!ok) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(n < 60 ? n : 60), p);
            http_reply_errorf(r, 400, "unknown_query", name, "unknown query parameter \"%s\"",
                              name);
            return;
        }
        p += strcspn(p, "&");
        if (*p == '&')
            p++;
    }
    struct exp_results_power_req q;
    double variants;
    char *b = http_query_get(r, "baseline");
    free(b);
    if (!b) {
        http_reply_error(r, 400, "missing_field",
                         "baseline is required: the control's rate (0.05) or mean (with sd)",
                         "baseline");
        return;
    }
    if (!qnum(r, "baseline", 0, &q.mean) || !qnum(r, "sd", 0, &q.sd) ||
        !qnum(r, "mde", 0.1, &q.mde) || !qnum(r, "alpha", 0.05, &q.alpha) ||
        !qnum(r, "power", 0.8, &q.power) || !qnum(r, "variants", 2, &variants) ||
        !qnum(r, "sequential_tuning", 0, &q.tuning) || !qnum(r, "per_day", 0, &q.per_day))
        return;
    if (variants != floor(variants) || variants < 2 || variants > 16) {
        http_reply_error(r, 400, "invalid_field", "variants must be a whole number from 2 to 16",
                         "variants");
        return;
    }
    q.variants = (int)variants;
    if (q.tuning < 0 || q.per_day < 0) {
        http_reply_error(r, 400, "invalid_field", "must be >= 0",
                         q.tuning < 0 ? "sequential_tuning" : "per_day");
        return;
    }
    struct reqerr e = { 0 };
    reply(r, 200, exp_results_power(&q, &e), &e);
}

void api_experiments_register(void)
{
    static const char *actions[] = { "start", "stop", "winner" };
    static char patterns[3][64];
    router_add(HTTP_GET | HTTP_POST, "/api/v1/experiments", ROLE_MARKETER, h_collection, 0);
    router_add(HTTP_GET, "/api/v1/experiments/recommendations", ROLE_MARKETER, h_recommendations,
               0);
    router_add(HTTP_GET, "/api/v1/experiments/power", ROLE_MARKETER, h_power, 0);
    router_add(HTTP_POST, "/api/v1/experiments/reload", ROLE_MARKETER, h_reload, 0);
    for (int i = 0; i < 3; i++) {
        snprintf(patterns[i], sizeof patterns[i], "/api/v1/experiments/{id}/%s", actions[i]);
        router_add(HTTP_POST, patterns[i], ROLE_MARKETER, h_action, 0);
    }
    router_add(HTTP_GET, "/api/v1/experiments/{id}/results", ROLE_MARKETER, h_results, 0);
    router_add(HTTP_GET | HTTP_PUT | HTTP_DELETE, "/api/v1/experiments/{id}", ROLE_MARKETER,
               h_item, 0);
}
