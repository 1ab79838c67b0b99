/* api_audit.c — GET /api/v1/audit: the audit log, filtered and paged. */
#include "http/api.h"
#include "base/app.h"
#include "store/audit.h"
#include "http/router.h"
#include "base/tz.h"
#include <stdlib.h>
#include <string.h>

const char *api_audit_actor(struct http_req *r)
{
    const char *a = audit_actor(r->key, http_header(r, "X-Actor"));
    if (!a)
        http_reply_error(r, 400, "invalid_header",
                         "X-Actor must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "X-Actor");
    return a;
}

/* since/until: ISO-8601 ("2026-03-01T00:00:00Z") or unix seconds. */
static int time_param(struct http_req *r, const char *name, int64_t *out)
{
    *out = 0;
    char *v = http_query_get(r, name);
    if (!v)
        return 0;
    char *end;
    long long n = strtoll(v, &end, 10);
    int ok = 1;
    if (*v && !*end && n > 0)
        *out = n;
    else if (tz_parse_iso8601(v, out))
        ok = 0;
    free(v);
    if (!ok) {
        http_reply_errorf(r, 400, "invalid_query", name,
                          "%s must be an ISO-8601 time like 2026-03-01T00:00:00Z or unix seconds",
                          name);
        return -1;
    }
    return 0;
}

static void h_audit(struct http_req *r)
{
    int ok;
    long limit = http_query_long(r, "limit", 100, 1, AUDIT_MAX_LIMIT, &ok);
    if (!ok)
        return;
    long cursor = http_query_long(r, "cursor", 0, 0, 1L << 62, &ok);
    if (!ok)
        return;
    struct audit_query q = { .limit = limit, .cursor = (uint64_t)cursor };
    if (time_param(r, "since", &q.since) || time_param(r, "until", &q.until))
        return;
    char *order = http_query_get(r, "order");
    if (order && strcmp(order, "asc") && strcmp(order, "desc")) {
        free(order);
        http_reply_error(r, 400, "invalid_query",
                         "order is asc (oldest first) or desc (newest first)", "order");
        return;
    }
    q.ascending = order && !strcmp(order, "asc");
    free(order);
    char *actor = http_query_get(r, "actor"), *action = http_query_get(r, "action"),
         *object = http_query_get(r, "object");
    q.actor = actor;
    q.action = action;
    q.object = object;
    struct reqerr e = { 0 };
    json_t *o = audit_query(g_app->store, &q, &e);
    free(actor);
    free(action);
    free(object);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    http_reply_json(r, 200, o);
}

void api_audit_register(void) { router_add(HTTP_GET, "/api/v1/audit", ROLE_MARKETER, h_audit, 0); }
