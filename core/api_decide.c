/* api_decide.c — POST /api/v1/decide. */
#include "api.h"
#include "app.h"
#include "decide.h"
#include "router.h"
#include <string.h>

static int get_str(struct http_req *r, json_t *b, const char *k, int required, const char **out)
{
    json_t *v = json_object_get(b, k);
    if (!v || json_is_null(v)) {
        if (required) {
            http_reply_errorf(r, 400, "missing_field", k, "\"%s\" is required", k);
            return -1;
        }
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 128) {
        http_reply_errorf(r, 400, "invalid_field", k, "\"%s\" must be a string of 1-128 characters", k);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int get_bool(struct http_req *r, json_t *b, const char *k, int *out)
{
    json_t *v = json_object_get(b, k);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        http_reply_errorf(r, 400, "invalid_field", k, "\"%s\" must be true or false", k);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static void h_decide(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    struct decide_req q = { 0 };
    q.limit = g_app->cfg.default_limit;
    static const char *known[] = { "customer_id", "channel", "placement", "context", "limit",
                                   "explain", "dry_run", NULL };
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= !strcmp(k, known[i]);
        if (!ok) {
            http_reply_errorf(r, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
            goto out;
        }
    }
    if (get_str(r, b, "customer_id", 1, &q.customer_id) || get_str(r, b, "channel", 1, &q.channel) ||
        get_str(r, b, "placement", 0, &q.placement) || get_bool(r, b, "explain", &q.explain) ||
        get_bool(r, b, "dry_run", &q.dry_run))
        goto out;
    if (!http_valid_id(q.customer_id)) {
        http_reply_error(r, 400, "invalid_id",
                         "customer_id must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "customer_id");
        goto out;
    }
    json_t *ctx = json_object_get(b, "context");
    if (ctx && !json_is_null(ctx)) {
        if (!json_is_object(ctx)) {
            http_reply_error(r, 400, "invalid_field", "\"context\" must be an object", "context");
            goto out;
        }
        q.context = ctx;
    }
    json_t *lim = json_object_get(b, "limit");
    if (lim && !json_is_null(lim)) {
        if (!json_is_integer(lim) || json_integer_value(lim) < 1 ||
            json_integer_value(lim) > g_app->cfg.max_limit) {
            http_reply_errorf(r, 400, "invalid_field", "limit", "\"limit\" must be an integer from 1 to %d",
                              g_app->cfg.max_limit);
            goto out;
        }
        q.limit = (int)json_integer_value(lim);
    }
    struct decide_err e = { 0 };
    struct buf out = BUF_INIT;
    if (decide_run(&q, &e, &out, r->want_msgpack))
        http_reply_error(r, e.status, e.code, e.message, e.field);
    else if (r->want_msgpack)
        http_reply_raw(r, 200, "application/msgpack", out.p, out.len);
    else if (buf_addc(&out, '\n') == 0)
        http_reply_raw(r, 200, "application/json", out.p, out.len);
    else
        http_reply_error(r, 500, "internal", "out of memory", NULL);
    buf_free(&out);
out:
    json_decref(b);
}

void api_decide_register(void)
{
    router_add(HTTP_POST, "/api/v1/decide", ROLE_DECIDE, h_decide, 0);
    decide_metrics_init();
}
