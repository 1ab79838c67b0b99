/* api_decide.c — POST /api/v1/decide. */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "engine/decide.h"
#include "base/err.h"
#include "codec/jscan.h"
#include "http/router.h"
#include <stdlib.h>
#include <string.h>

/* The body is read in place (core/jscan): validated once, then each field
 * taken from the text; the context goes straight into the worker's Lua
 * state.  A msgpack body is turned into JSON text first, so both wire
 * forms meet the same checks. */
enum { F_CUSTOMER, F_CHANNEL, F_PLACEMENT, F_CONTEXT, F_LIMIT, F_EXPLAIN, F_DRY_RUN, NFIELD };
static const char *const field_names[NFIELD] = { "customer_id", "channel", "placement", "context",
                                                 "limit", "explain", "dry_run" };

struct body {
    struct jscan_val v[NFIELD]; /* len 0 = absent */
    struct buf s[3];            /* decoded customer_id, channel, placement */
};

static int absent(const struct jscan_val *v) { return v->len == 0 || jscan_type(*v) == 'n'; }

static int get_str(struct http_req *r, struct body *b, int f, int required, const char **out)
{
    *out = NULL;
    const struct jscan_val *v = &b->v[f];
    const char *k = field_names[f];
    if (absent(v)) {
        if (required) {
            http_reply_errorf(r, 400, "missing_field", k, "\"%s\" is required", k);
            return -1;
        }
        return 0;
    }
    if (jscan_type(*v) != '"' || jscan_string(*v, &b->s[f]) || b->s[f].len == 0 ||
        b->s[f].len > 128) {
        http_reply_errorf(r, 400, "invalid_field", k, "\"%s\" must be a string of 1-128 characters", k);
        return -1;
    }
    *out = b->s[f].p;
    return 0;
}

static int get_bool(struct http_req *r, struct body *b, int f, int *out)
{
    *out = 0;
    const struct jscan_val *v = &b->v[f];
    if (absent(v))
        return 0;
    char t = jscan_type(*v);
    if (t != 't' && t != 'f') {
        http_reply_errorf(r, 400, "invalid_field", field_names[f], "\"%s\" must be true or false",
                          field_names[f]);
        return -1;
    }
    *out = t == 't';
    return 0;
}

static void h_decide(struct http_req *r)
{
    char *conv;
    struct jscan_val whole;
    if (http_body_text(r, &conv, &whole))
        return;
    struct body b = { 0 };
    struct buf key = BUF_INIT, out = BUF_INIT;
    struct decide_req q = { 0 };
    q.limit = g_app->cfg.default_limit;
    struct jscan_obj o;
    struct jscan_val v;
    jscan_object(&o, whole);
    while (jscan_next(&o, &key, &v)) {
        int f = 0;
        while (f < NFIELD && strcmp(key.p ? key.p : "", field_names[f]))
            f++;
        if (f == NFIELD) {
            http_reply_errorf(r, 400, "unknown_field", key.p ? key.p : "", "unknown field \"%.64s\"",
                              key.p ? key.p : "");
            goto out;
        }
        b.v[f] = v; /* a repeated field: the last one counts */
    }
    if (get_str(r, &b, F_CUSTOMER, 1, &q.customer_id) || get_str(r, &b, F_CHANNEL, 1, &q.channel) ||
        get_str(r, &b, F_PLACEMENT, 0, &q.placement) || get_bool(r, &b, F_EXPLAIN, &q.explain) ||
        get_bool(r, &b, F_DRY_RUN, &q.dry_run))
        goto out;
    if (!id_valid(q.customer_id)) {
        http_reply_error(r, 400, "invalid_id",
                         "customer_id must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "customer_id");
        goto out;
    }
    if (!absent(&b.v[F_CONTEXT])) {
        if (jscan_type(b.v[F_CONTEXT]) != '{') {
            http_reply_error(r, 400, "invalid_field", "\"context\" must be an object", "context");
            goto out;
        }
        q.context_text = b.v[F_CONTEXT].p;
        q.context_len = b.v[F_CONTEXT].len;
    }
    if (!absent(&b.v[F_LIMIT])) {
        int64_t lim;
        if (jscan_int(b.v[F_LIMIT], &lim) || lim < 1 || lim > g_app->cfg.max_limit) {
            http_reply_errorf(r, 400, "invalid_field", "limit", "\"limit\" must be an integer from 1 to %d",
                              g_app->cfg.max_limit);
            goto out;
        }
        q.limit = (int)lim;
    }
    /* for localized content when neither context.locale nor p.locale says
     * (a longer header is not a browser's: ignored) */
    const char *al = http_header(r, "Accept-Language");
    q.accept_language = al && strlen(al) <= 256 ? al : NULL;
    struct reqerr e = { 0 };
    if (decide_run(&q, &e, &out, r->want_msgpack))
        http_reply_reqerr(r, &e);
    else if (r->want_msgpack)
        http_reply_raw(r, 200, "application/msgpack", out.p, out.len);
    else if (buf_addc(&out, '\n') == 0)
        http_reply_raw(r, 200, "application/json", out.p, out.len);
    else
        http_reply_error(r, 500, "internal", "out of memory", NULL);
out:
    buf_free(&out);
    buf_free(&key);
    for (int i = 0; i < 3; i++)
        buf_free(&b.s[i]);
    free(conv);
}

void api_decide_register(void)
{
    router_add(HTTP_POST, "/api/v1/decide", ROLE_DECIDE, h_decide, 0);
    decide_metrics_init();
}
