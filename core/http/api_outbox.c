/* api_outbox.c — /api/v1/outbox (queue, dead letters, redrive) and
 * /api/v1/campaigns/{id}/sends (progress of a campaign send). */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "base/err.h"
#include "delivery/deliver.h"
#include "delivery/outbox.h"
#include "http/router.h"
#include "delivery/sends.h"
#include <limits.h>
#include <string.h>

#define REDRIVE_MAX_IDS 10000

/* Optional id-like filter from the query string; 0 after replying 400. */
static int query_filter(struct http_req *r, const char *name, size_t maxlen, char **out)
{
    *out = http_query_get(r, name);
    if (*out && (!id_valid(*out) || strlen(*out) > maxlen)) {
        http_reply_errorf(r, 400, "invalid_query", name,
                          "%s must be a name of at most %zu characters of A-Z a-z 0-9 _ - . : @",
                          name, maxlen);
        free(*out);
        *out = NULL;
        return 0;
    }
    return 1;
}

/* GET /api/v1/outbox */
static void h_outbox(struct http_req *r)
{
    int rc;
    json_t *o = deliver_stats(&rc);
    if (!o) {
        http_reply_err_code(r, rc, "outbox");
        return;
    }
    http_reply_json(r, 200, o);
}

/* GET /api/v1/outbox/dead?channel=&campaign=&after=&limit= */
static void h_dead(struct http_req *r)
{
    int ok = 1;
    long limit = http_query_long(r, "limit", 100, 1, 1000, &ok);
    if (!ok)
        return;
    long after = http_query_long(r, "after", 0, 0, LONG_MAX, &ok);
    if (!ok)
        return;
    char *channel = NULL, *campaign = NULL;
    if (!query_filter(r, "channel", 32, &channel))
        return;
    if (!query_filter(r, "campaign", 128, &campaign)) {
        free(channel);
        return;
    }
    int rc;
    json_t *o = outbox_dead_list(channel, campaign, (uint64_t)after, (int)limit, &rc);
    free(channel);
    free(campaign);
    if (!o) {
        http_reply_err_code(r, rc, "dead letters");
        return;
    }
    http_reply_json(r, 200, o);
}

/* POST /api/v1/outbox/dead/redrive
 *   {"ids": [1, 2]}  or  {"all": true, "channel"?: "email", "campaign"?: "x", "limit"?: n} */
static void h_redrive(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        if (strcmp(k, "ids") && strcmp(k, "all") && strcmp(k, "channel") && strcmp(k, "campaign") &&
            strcmp(k, "limit")) {
            http_reply_errorf(r, 422, "unknown_field", k,
                              "unknown field \"%.64s\" (expected ids, all, channel, campaign, limit)", k);
            json_decref(b);
            return;
        }
    }
    json_t *ids = json_object_get(b, "ids"), *all = json_object_get(b, "all");
    json_t *ch = json_object_get(b, "channel"), *camp = json_object_get(b, "campaign");
    json_t *lim = json_object_get(b, "limit");
    const char *err = NULL, *field = NULL;
    if (ids && all) {
        err = "give either \"ids\" or \"all\", not both";
        field = "ids";
    } else if (!ids && !json_is_true(all)) {
        err = "give \"ids\": [message ids] or \"all\": true";
        field = all ? "all" : "ids";
    } else if (ids && (!json_is_array(ids) || json_array_size(ids) == 0 ||
                       json_array_size(ids) > REDRIVE_MAX_IDS)) {
        err = "ids must be a non-empty array of at most 10000 message ids";
        field = "ids";
    } else if (ch && (!json_is_string(ch) || !id_valid(json_string_value(ch)) ||
                      strlen(json_string_value(ch)) > 32)) {
        err = "channel must be a channel name";
        field = "channel";
    } else if (camp && (!json_is_string(camp) || !id_valid(json_string_value(camp)))) {
        err = "campaign must be a campaign id";
        field = "campaign";
    } else if (lim && (!json_is_integer(lim) || json_integer_value(lim) < 1 ||
                       json_integer_value(lim) > 100000)) {
        err = "limit must be an integer from 1 to 100000";
        field = "limit";
    }
    size_t i;
    json_array_foreach(ids, i, v) {
        if (err)
            break;
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            err = "ids must be positive integers (the \"id\" of a dead letter)";
            field = "ids";
        }
    }
    if (err) {
        http_reply_error(r, 422, "invalid_redrive", err, field);
        json_decref(b);
        return;
    }
    json_t *missing = NULL;
    long n = outbox_redrive(ids, json_string_value(ch), json_string_value(camp),
                            lim ? (long)json_integer_value(lim) : 0, ids ? &missing : NULL);
    json_decref(b);
    if (n < 0) {
        json_decref(missing);
        http_reply_err_code(r, (int)n, "redrive");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "redriven", json_integer(n));
    if (missing)
        json_object_set_new(o, "not_dead", missing);
    http_reply_json(r, 200, o);
}

/* GET /api/v1/campaigns/{id}/sends */
static void h_sends(struct http_req *r)
{
    const char *id = r->params[0];
    if (!id_valid(id)) {
        http_reply_error(r, 400, "invalid_id",
                         "ids are 1-128 characters of A-Z a-z 0-9 _ - . : @ and do not start with '.'",
                         "id");
        return;
    }
    int rc;
    json_t *o = sends_status(id, &rc);
    if (!o) {
        if (rc == ERR_NOTFOUND)
            http_reply_errorf(r, 404, "not_found", "id",
                              "campaign \"%s\" has never been launched on an outbound channel", id);
        else
            http_reply_err_code(r, rc, "send");
        return;
    }
    http_reply_json(r, 200, o);
}

void api_outbox_register(void)
{
    router_add(HTTP_GET, "/api/v1/outbox", ROLE_MARKETER, h_outbox, 0);
    router_add(HTTP_GET, "/api/v1/outbox/dead", ROLE_MARKETER, h_dead, 0);
    router_add(HTTP_POST, "/api/v1/outbox/dead/redrive", ROLE_ADMIN, h_redrive, 0);
    router_add(HTTP_GET, "/api/v1/campaigns/{id}/sends", ROLE_MARKETER, h_sends, 0);
}
