/* api_coupons.c — /api/v1/coupons (the checkout: validate, redeem,
 * rollback), /api/v1/campaigns/{id}/coupons (pools: generate, import,
 * assign, stats) and /api/v1/loyalty (balance, tier, history; ledger
 * transactions). */
#include "http/api.h"
#include "base/app.h"
#include "base/id.h"
#include "http/router.h"
#include "service/promotions.h"
#include "store/audit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A service refusal: 429 also carries Retry-After. */
static void reply_err(struct http_req *r, struct reqerr *e)
{
    json_t *ra = e->extra ? json_object_get(e->extra, "retry_after") : NULL;
    if (e->status == 429 && json_is_integer(ra)) {
        char b[32];
        snprintf(b, sizeof b, "%lld", (long long)json_integer_value(ra));
        http_add_header(r, "Retry-After", b);
    }
    http_reply_reqerr(r, e);
}

/* Reply once the write behind `ticket` is on disk (0: nothing written). */
static void reply_durable(struct http_req *r, int status, json_t *o, uint64_t ticket)
{
    if (ticket)
        http_hold_until_synced(r, g_app->store, ticket);
    http_reply_json(r, status, o);
}

/* The checkout's replies come written (codec/emit), in the wire form the
 * request asked for. */
static void reply_bytes(struct http_req *r, const struct buf *out, uint64_t ticket)
{
    if (ticket)
        http_hold_until_synced(r, g_app->store, ticket);
    http_reply_raw(r, 200, r->want_msgpack ? "application/msgpack" : "application/json", out->p,
                   out->len);
}

static void h_validate(struct http_req *r)
{
    char *conv;
    struct jscan_val b;
    if (http_body_text(r, &conv, &b))
        return;
    struct reqerr e = { 0 };
    struct buf out = BUF_INIT;
    if (promotions_validate(b, &out, r->want_msgpack, &e) == 0)
        reply_bytes(r, &out, 0);
    else
        reply_err(r, &e);
    buf_free(&out);
    free(conv);
}

/* The redemption is out of the writer thread: answer (on the worker), or
 * just let go when the worker stopped meanwhile (r == NULL). */
static void redeem_answer(struct http_req *r, void *ud)
{
    struct reqerr e = { 0 };
    uint64_t ticket;
    struct buf out = BUF_INIT;
    int rc = promotions_redeem_finish(ud, &out, r && r->want_msgpack, &ticket, &e);
    if (!r)
        reqerr_clear(&e);
    else if (rc == 0)
        reply_bytes(r, &out, ticket);
    else
        reply_err(r, &e);
    buf_free(&out);
}

static void redeem_ready(void *ud)
{
    http_later_ready(ud);
}

/* The worker queues the redemption for the writer thread and serves other
 * connections until it is applied (it then joins one store transaction
 * with the redemptions queued meanwhile); the answer waits further for the
 * group sync to have the commit on disk. */
static void h_redeem(struct http_req *r)
{
    char *conv;
    struct jscan_val b;
    if (http_body_text(r, &conv, &b))
        return;
    struct reqerr e = { 0 };
    struct promotions_redemption *x = promotions_redeem_start(b, &e);
    free(conv);
    if (!x) {
        reply_err(r, &e);
        return;
    }
    struct http_later *l = http_later(r, redeem_answer, x);
    if (!l) { /* cannot answer later: wait for the writer here */
        promotions_redeem_submit_wait(x);
        redeem_answer(r, x);
        return;
    }
    promotions_redeem_submit(x, redeem_ready, l);
}

static void h_rollback(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    struct reqerr e = { 0 };
    uint64_t ticket;
    json_t *o = promotions_rollback(r->params[0], b, &ticket, &e);
    json_decref(b);
    if (o)
        reply_durable(r, 200, o, ticket);
    else
        reply_err(r, &e);
}

static int check_campaign(struct http_req *r)
{
    if (id_valid(r->params[0]))
        return 1;
    http_reply_error(r, 400, "invalid_id", "campaign ids are 1-128 characters of A-Z a-z 0-9 _ - . : @",
                     "id");
    return 0;
}

static void audit_pool(struct http_req *r, const char *action, const json_t *o)
{
    char obj[160];
    snprintf(obj, sizeof obj, "campaign:%s", r->params[0]);
    json_t *a = json_object(); /* counts, never the codes */
    static const char *keep[] = { "pool", "created", "imported", "failed", NULL };
    for (int i = 0; keep[i]; i++)
        if (json_object_get(o, keep[i]))
            json_object_set(a, keep[i], json_object_get(o, keep[i]));
    audit_log(g_app->store, audit_actor(r->key, http_header(r, "X-Actor")), action, obj, NULL, a);
    json_decref(a);
}

static void h_pool(struct http_req *r)
{
    if (!check_campaign(r))
        return;
    struct reqerr e = { 0 };
    json_t *o;
    if (r->method == HTTP_GET) {
        o = promotions_stats(r->params[0], &e);
        if (o)
            http_reply_json(r, 200, o);
        else
            reply_err(r, &e);
        return;
    }
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    o = promotions_generate(r->params[0], b, &e);
    json_decref(b);
    if (!o) {
        reply_err(r, &e);
        return;
    }
    audit_pool(r, "coupons.generate", o);
    http_reply_json(r, 201, o);
}

static int ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

static void h_import(struct http_req *r)
{
    if (!check_campaign(r))
        return;
    if (!r->body_len) {
        http_reply_error(r, 400, "empty_body",
                         "send CSV (code[,customer_id] a line) or NDJSON ({\"code\", \"customer_id\"?} a line)",
                         NULL);
        return;
    }
    const char *ct = http_header(r, "Content-Type");
    int ndjson = ctype_is(ct, "application/x-ndjson") || ctype_is(ct, "application/ndjson");
    if (!ndjson && ct && !ctype_is(ct, "text/csv") && !ctype_is(ct, "text/plain")) {
        http_reply_error(r, 415, "unsupported_media_type",
                         "import takes text/csv or application/x-ndjson", NULL);
        return;
    }
    if (!ct) { /* sniff: a first line that is an object is NDJSON */
        size_t i = 0;
        while (i < r->body_len && (r->body[i] == ' ' || r->body[i] == '\n' || r->body[i] == '\r'))
            i++;
        ndjson = i < r->body_len && r->body[i] == '{';
    }
    static const char *opts[] = { "pool", "max_uses", "per_customer", "valid_from", "valid_until",
                                  "shared", NULL };
    json_t *q = json_object();
    for (int i = 0; opts[i]; i++) {
        char *v = http_query_get(r, opts[i]);
        if (v)
            json_object_set_new(q, opts[i], json_string(v));
        free(v);
    }
    struct reqerr e = { 0 };
    json_t *o = promotions_import(r->params[0], r->body, r->body_len, ndjson, q, &e);
    json_decref(q);
    if (!o) {
        reply_err(r, &e);
        return;
    }
    audit_pool(r, "coupons.import", o);
    http_reply_json(r, json_integer_value(json_object_get(o, "imported")) ? 201 : 422, o);
}

static void h_assign(struct http_req *r)
{
    if (!check_campaign(r))
        return;
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    struct reqerr e = { 0 };
    uint64_t ticket;
    json_t *o = promotions_assign(r->params[0], b, &ticket, &e);
    json_decref(b);
    if (o)
        reply_durable(r, 200, o, ticket);
    else
        reply_err(r, &e);
}

static void h_loyalty(struct http_req *r)
{
    int ok;
    long limit = http_query_long(r, "limit", 50, 1, 1000, &ok);
    if (!ok)
        return;
    char *cursor = http_query_get(r, "cursor");
    struct reqerr e = { 0 };
    json_t *o = promotions_loyalty_get(r->params[0], limit, cursor, &e);
    free(cursor);
    if (o)
        http_reply_json(r, 200, o);
    else
        reply_err(r, &e);
}

static void h_loyalty_tx(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    struct reqerr e = { 0 };
    uint64_t ticket;
    int may_adjust = !r->key || router_role_allows(r->key->role, ROLE_MARKETER);
    json_t *o = promotions_loyalty_post(r->params[0], b, may_adjust, &ticket, &e);
    json_decref(b);
    if (o)
        reply_durable(r, 200, o, ticket);
    else
        reply_err(r, &e);
}

static void h_sweep(struct http_req *r)
{
    long n = promotions_loyalty_sweep();
    if (n < 0) {
        http_reply_err_code(r, (int)n, "loyalty sweep");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "customers", json_integer(n));
    http_reply_json(r, 200, o);
}

void api_coupons_register(void)
{
    router_add(HTTP_POST, "/api/v1/coupons/validate", ROLE_CHECKOUT, h_validate, 0);
    router_add(HTTP_POST, "/api/v1/coupons/redeem", ROLE_CHECKOUT, h_redeem, 0);
    router_add(HTTP_POST, "/api/v1/coupons/{code}/rollback", ROLE_CHECKOUT, h_rollback, 0);
    router_add(HTTP_POST, "/api/v1/campaigns/{id}/coupons/import", ROLE_MARKETER, h_import,
               ROUTER_BIG_BODY);
    router_add(HTTP_POST, "/api/v1/campaigns/{id}/coupons/assign", ROLE_CHECKOUT, h_assign, 0);
    router_add(HTTP_GET | HTTP_POST, "/api/v1/campaigns/{id}/coupons", ROLE_MARKETER, h_pool, 0);
    router_add(HTTP_GET, "/api/v1/loyalty/{customer}", ROLE_CHECKOUT, h_loyalty, 0);
    router_add(HTTP_POST, "/api/v1/loyalty/{customer}/transactions", ROLE_CHECKOUT, h_loyalty_tx, 0);
    router_add(HTTP_POST, "/api/v1/admin/loyalty/sweep", ROLE_ADMIN, h_sweep, 0);
    promotions_init(g_app);
}
