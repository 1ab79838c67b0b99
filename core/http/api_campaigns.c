/* api_campaigns.c — /api/v1/campaigns: CRUD, lifecycle and approval
 * actions, versions, rollback.  Parses and checks the request, calls
 * service/campaigns.h, renders (errors with http_reply_reqerr); the ETag
 * of a campaign is its "rev". */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "store/audit.h"
#include "service/campaigns.h"
#include "http/router.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void reply_view(struct http_req *r, int status, json_t *v)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(v, "rev")));
    http_add_header(r, "ETag", etag);
    http_reply_json(r, status, v);
}

static int check_id(struct http_req *r, const char *id, const char *field)
{
    if (id_valid(id))
        return 1;
    http_reply_errorf(r, 400, "invalid_id", field,
                      "%s must be 1-128 characters of A-Z a-z 0-9 _ - . : @ and not start with '.'",
                      field);
    return 0;
}

/* Who acts; NULL after a 400 for a malformed X-Actor. */
static const char *actor_of(struct http_req *r)
{
    const char *a = audit_actor(r->key, http_header(r, "X-Actor"));
    if (!a)
        http_reply_error(r, 400, "invalid_header",
                         "X-Actor must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "X-Actor");
    return a;
}

/* If-Match: "7", W/"7", 7 or * → rev, -1 for none or *; -2 after a 400. */
static long if_match_of(struct http_req *r)
{
    const char *h = http_header(r, "If-Match");
    if (!h)
        return -1;
    while (*h == ' ')
        h++;
    if (!strcmp(h, "*"))
        return -1;
    if (!strncmp(h, "W/", 2))
        h += 2;
    int q = *h == '"';
    const char *p = h + q;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 1 || (q && *end++ != '"') || *end) {
        http_reply_error(r, 400, "invalid_header",
                         "If-Match must be the campaign's ETag (its \"rev\"), e.g. \"3\"",
                         "If-Match");
        return -2;
    }
    return v;
}

/* The optional JSON object body of an action; *bad = 1 after a reply. */
static json_t *opt_body(struct http_req *r, int *bad)
{
    *bad = 0;
    if (!r->body_len)
        return NULL;
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        *bad = 1;
    return b;
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
        json_t *v = campaigns_create(b, actor, &e);
        json_decref(b);
        if (v)
            reply_view(r, 201, v);
        else
            http_reply_reqerr(r, &e);
        return;
    }
    int ok;
    long limit = http_query_long(r, "limit", 50, 1, CAMPAIGNS_MAX_LIST, &ok);
    if (!ok)
        return;
    static const char *known[] = { "status", "channel", "q", "owner", "tag", "limit", "cursor" };
    struct campaigns_filter f = { .limit = limit };
    char *vals[7] = { 0 };
    for (int i = 0; i < 7; i++)
        vals[i] = http_query_get(r, known[i]);
    f.status = vals[0];
    f.channel = vals[1];
    f.q = vals[2];
    f.owner = vals[3];
    f.tag = vals[4];
    f.cursor = vals[6];
    json_t *o = campaigns_list(&f, &e);
    for (int i = 0; i < 7; i++)
        free(vals[i]);
    if (o)
        http_reply_json(r, 200, o);
    else
        http_reply_reqerr(r, &e);
}

static void h_item(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id, "id"))
        return;
    struct reqerr e = { 0 };
    json_t *v = NULL;
    int status = 200;
    if (r->method == HTTP_GET) {
        v = campaigns_get(id, 1, &e);
    } else {
        const char *actor = actor_of(r);
        if (!actor)
            return;
        long im = if_match_of(r);
        if (im == -2)
            return;
        if (r->method == HTTP_DELETE) {
            v = campaigns_delete(id, actor, im, &e);
        } else {
            json_t *b = http_body_json(r, JSON_OBJECT);
            if (!b)
                return;
            v = campaigns_update(id, b, actor, im, &e);
            json_decref(b);
        }
    }
    if (v)
        reply_view(r, status, v);
    else
        http_reply_reqerr(r, &e);
}

/* POST /api/v1/campaigns/{id}/<action>: the action is the last segment. */
static void h_action(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id, "id"))
        return;
    const struct router_route *rt = router_get(r->route);
    const char *slash = rt ? strrchr(rt->pattern, '/') : NULL;
    const char *action = slash ? slash + 1 : "";
    const char *actor = actor_of(r);
    if (!actor)
        return;
    long im = if_match_of(r);
    if (im == -2)
        return;
    int bad;
    json_t *b = opt_body(r, &bad);
    if (bad)
        return;
    struct reqerr e = { 0 };
    json_t *v = campaigns_action(id, action, b, actor, im, &e);
    json_decref(b);
    if (v)
        reply_view(r, !strcmp(action, "clone") ? 201 : 200, v);
    else
        http_reply_reqerr(r, &e);
}

static void h_rollback(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id, "id"))
        return;
    const char *actor = actor_of(r);
    if (!actor)
        return;
    long im = if_match_of(r);
    if (im == -2)
        return;
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    const char *k;
    json_t *x;
    json_object_foreach (b, k, x) {
        if (strcmp(k, "version")) {
            http_reply_errorf(r, 400, "unknown_field", k,
                              "unknown field \"%.64s\" (send {\"version\": n})", k);
            json_decref(b);
            return;
        }
    }
    json_t *ver = json_object_get(b, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) < 1) {
        http_reply_error(r, 400, "invalid_field",
                         "version must be a positive integer (a version number)", "version");
        json_decref(b);
        return;
    }
    long n = (long)json_integer_value(ver);
    json_decref(b);
    struct reqerr e = { 0 };
    json_t *v = campaigns_rollback(id, n, actor, im, &e);
    if (v)
        reply_view(r, 200, v);
    else
        http_reply_reqerr(r, &e);
}

static void h_versions(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id, "id"))
        return;
    int ok;
    long limit = http_query_long(r, "limit", 100, 1, 1000, &ok);
    if (!ok)
        return;
    long before = http_query_long(r, "cursor", 0, 0, 1L << 40, &ok);
    if (!ok)
        return;
    struct reqerr e = { 0 };
    json_t *o = campaigns_versions(id, limit, before, &e);
    if (o)
        http_reply_json(r, 200, o);
    else
        http_reply_reqerr(r, &e);
}

static void h_version(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id, "id"))
        return;
    char *end;
    long n = strtol(r->params[1], &end, 10);
    if (!*r->params[1] || *end || n < 1) {
        http_reply_error(r, 400, "invalid_version", "the version must be a positive integer",
                         "version");
        return;
    }
    int ok;
    long diff = http_query_long(r, "diff", 0, 0, 1L << 40, &ok);
    if (!ok)
        return;
    struct reqerr e = { 0 };
    json_t *o = campaigns_version_get(id, n, diff, &e);
    if (o)
        http_reply_json(r, 200, o);
    else
        http_reply_reqerr(r, &e);
}

void api_campaigns_register(void)
{
    static const char *actions[] = { "launch", "pause",   "stop",  "clone",
                                     "submit", "approve", "reject" };
    static char patterns[7][64];
    router_add(HTTP_GET | HTTP_POST, "/api/v1/campaigns", ROLE_MARKETER, h_collection, 0);
    for (int i = 0; i < 7; i++) {
        snprintf(patterns[i], sizeof patterns[i], "/api/v1/campaigns/{id}/%s", actions[i]);
        router_add(HTTP_POST, patterns[i], ROLE_MARKETER, h_action, 0);
    }
    router_add(HTTP_POST, "/api/v1/campaigns/{id}/rollback", ROLE_MARKETER, h_rollback, 0);
    router_add(HTTP_GET, "/api/v1/campaigns/{id}/versions", ROLE_MARKETER, h_versions, 0);
    router_add(HTTP_GET, "/api/v1/campaigns/{id}/versions/{n}", ROLE_MARKETER, h_version, 0);
    router_add(HTTP_GET | HTTP_PUT | HTTP_DELETE, "/api/v1/campaigns/{id}", ROLE_MARKETER, h_item,
               0);
}
