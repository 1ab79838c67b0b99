/* api_decisions.c — the decision log (GET /api/v1/decisions) and replay
 * on it (POST /api/v1/rules/replay): engine/dlog.h, service/backtest.h. */
#include "http/api.h"
#include "base/app.h"
#include "base/err.h"
#include "base/id.h"
#include "engine/dlog.h"
#include "http/router.h"
#include "service/backtest.h"
#include <stdlib.h>
#include <string.h>

/* from/to: ISO-8601 or unix milliseconds; 0 with *out, -1 after replying 400. */
static int time_param(struct http_req *r, const char *name, int64_t def, int64_t *out)
{
    *out = def;
    char *v = http_query_get(r, name);
    if (!v)
        return 0;
    int bad = backtest_parse_time(v, out) != 0;
    free(v);
    if (bad) {
        http_reply_errorf(r, 400, "invalid_query", name,
                          "%s must be an ISO-8601 time like 2026-03-01T00:00:00Z or unix "
                          "milliseconds", name);
        return -1;
    }
    return 0;
}

/* GET /api/v1/decisions?customer_id=&from=&to=&limit=&cursor= */
static void h_list(struct http_req *r)
{
    int ok;
    long limit = http_query_long(r, "limit", 100, 1, 1000, &ok);
    if (!ok)
        return;
    int64_t from, to;
    if (time_param(r, "from", 0, &from) || time_param(r, "to", INT64_MAX / 2, &to))
        return;
    char *cust = http_query_get(r, "customer_id"), *cursor = http_query_get(r, "cursor");
    if (cust && !id_valid(cust)) {
        http_reply_error(r, 400, "invalid_query",
                         "customer_id must be 1-128 characters of A-Z a-z 0-9 _ - . : @",
                         "customer_id");
    } else {
        dlog_flush(2000); /* what was decided before the request is listed */
        int rc;
        json_t *o = dlog_list(dlog_store(), cust, from, to, cursor, (int)limit, &rc);
        if (o)
            http_reply_json(r, 200, o);
        else if (rc == ERR_INVAL)
            http_reply_error(r, 400, "invalid_query",
                             "cursor is the \"next_cursor\" of a previous page", "cursor");
        else
            http_reply_errorf(r, 503, "store_unavailable", NULL, "%s", err_str(rc));
    }
    free(cust);
    free(cursor);
}

/* POST /api/v1/rules/replay: backtest_http (the body is documented there). */
static void h_replay(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    struct reqerr e = { 0 };
    dlog_flush(2000);
    json_t *o = backtest_http(g_app, b, &e);
    json_decref(b);
    if (o)
        http_reply_json(r, 200, o);
    else
        http_reply_reqerr(r, &e);
}

void api_decisions_register(void)
{
    router_add(HTTP_GET, "/api/v1/decisions", ROLE_MARKETER, h_list, 0);
    router_add(HTTP_POST, "/api/v1/rules/replay", ROLE_MARKETER, h_replay, 0);
}
