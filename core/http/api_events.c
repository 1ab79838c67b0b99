/* api_events.c — POST /api/v1/events (one event, an array, or NDJSON) and
 * POST /api/v1/admin/compact (event retention on demand). */
#include "http/api.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "insight/events.h"
#include "insight/events_log.h"
#include "http/router.h"
#include "base/tz.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Is the body NDJSON?  Declared so, or its first line is a whole JSON
 * object and more non-blank text follows it. */
static int looks_ndjson(const char *p, size_t len, const char *ct)
{
    if (ctype_is(ct, "application/x-ndjson") || ctype_is(ct, "application/ndjson") ||
        ctype_is(ct, "application/jsonl") || ctype_is(ct, "application/json-seq"))
        return 1;
    size_t i = 0;
    while (i < len && is_ws(p[i]))
        i++;
    if (i >= len || p[i] != '{')
        return 0;
    const char *nl = memchr(p + i, '\n', len - i);
    if (!nl)
        return 0;
    const char *rest = nl + 1, *end = p + len;
    while (rest < end && is_ws(*rest))
        rest++;
    if (rest >= end)
        return 0;
    size_t fl = (size_t)(nl - (p + i));
    if (fl > EVENTS_MAX_LINE)
        return 1; /* reported per line */
    json_t *first = codec_parse_json(p + i, fl, NULL, NULL, 0);
    int yes = json_is_object(first);
    json_decref(first);
    return yes;
}

static void reply_result(struct http_req *r, struct events_result *res)
{
    json_t *o = json_object();
    long processed = res->accepted + res->duplicates;
    if (res->store_rc || (processed == 0 && res->rejected > 0)) {
        json_t *first = json_array_get(res->errors, 0);
        json_t *e = json_object();
        int status;
        if (res->store_rc) {
            status = res->store_rc == ERR_FULL ? 507 : 503;
            json_object_set_new(e, "code", json_string(res->store_rc == ERR_FULL ? "storage_full"
                                                                                   : "store_error"));
            char m[300];
            snprintf(m, sizeof m, "ingestion stopped: %s (%ld events stored before it)",
                     err_str(res->store_rc), res->accepted);
            json_object_set_new(e, "message", json_string(m));
            json_object_set_new(e, "field", json_null());
        } else {
            status = 422;
            json_object_set_new(e, "code", json_string("invalid_events"));
            char m[700];
            snprintf(m, sizeof m, "all %ld events were rejected; first (index %lld): %s",
                     res->rejected, (long long)json_integer_value(json_object_get(first, "index")),
                     json_string_value(json_object_get(first, "message")) ?
                         json_string_value(json_object_get(first, "message")) : "?");
            json_t *ms = json_string(m);
            json_object_set_new(e, "message", ms ? ms : json_string("all events were rejected"));
            json_t *f = json_object_get(first, "field");
            json_object_set_new(e, "field", f ? json_incref(f) : json_null());
        }
        json_object_set_new(o, "error", e);
        json_object_set_new(o, "accepted", json_integer(res->accepted));
        json_object_set_new(o, "rejected", json_integer(res->rejected));
        json_object_set_new(o, "duplicates", json_integer(res->duplicates));
        json_object_set(o, "errors", res->errors ? res->errors : json_array());
        if (res->truncated)
            json_object_set_new(o, "errors_truncated", json_true());
        http_reply_json(r, status, o);
        return;
    }
    json_object_set_new(o, "accepted", json_integer(res->accepted));
    json_object_set_new(o, "rejected", json_integer(res->rejected));
    json_object_set_new(o, "duplicates", json_integer(res->duplicates));
    json_object_set(o, "errors", res->errors ? res->errors : json_array());
    if (res->truncated)
        json_object_set_new(o, "errors_truncated", json_true());
    http_reply_json(r, 200, o);
}

static void h_events(struct http_req *r)
{
    if (!r->body_len) {
        http_reply_error(r, 400, "empty_body",
                         "send one event object, an array of events, or NDJSON (one event a line)",
                         NULL);
        return;
    }
    struct events_result res;
    int rc;
    const char *ct = http_header(r, "Content-Type");
    if (!r->body_msgpack && looks_ndjson(r->body, r->body_len, ct)) {
        rc = events_ingest_ndjson(g_app->store, r->body, r->body_len, &res);
    } else {
        json_t *v = http_body_json(r, -1);
        if (!v)
            return;
        if (!json_is_object(v) && !json_is_array(v)) {
            json_decref(v);
            http_reply_error(r, 400, "invalid_body",
                             "body must be an event object, an array of events, or NDJSON", NULL);
            return;
        }
        if (json_is_array(v) && json_array_size(v) == 0) {
            json_decref(v);
            http_reply_error(r, 400, "empty_body", "the array holds no events", NULL);
            return;
        }
        rc = events_ingest_json(g_app->store, v, &res);
        json_decref(v);
    }
    if (rc && !res.store_rc) { /* out of memory before anything was stored */
        events_result_free(&res);
        http_reply_err_code(r, rc, "events");
        return;
    }
    if (res.accepted + res.duplicates + res.rejected == 0) {
        events_result_free(&res);
        http_reply_error(r, 400, "empty_body", "the body holds no events (only blank lines)", NULL);
        return;
    }
    reply_result(r, &res);
    events_result_free(&res);
}

/* POST /api/v1/admin/compact {"before"?: unix seconds | ISO-8601} */
static void h_compact(struct http_req *r)
{
    int64_t now = clock_now();
    int64_t cutoff = now - (int64_t)g_app->cfg.event_retention_days * 86400;
    if (r->body_len) {
        json_t *b = http_body_json(r, JSON_OBJECT);
        if (!b)
            return;
        const char *k;
        json_t *v;
        json_object_foreach(b, k, v) {
            if (strcmp(k, "before") != 0) {
                http_reply_errorf(r, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
                json_decref(b);
                return;
            }
        }
        v = json_object_get(b, "before");
        if (json_is_integer(v)) {
            cutoff = (int64_t)json_integer_value(v);
        } else if (json_is_string(v)) {
            if (tz_parse_iso8601(json_string_value(v), &cutoff)) {
                json_decref(b);
                http_reply_error(r, 400, "invalid_field",
                                 "\"before\" must be unix seconds or ISO-8601 text", "before");
                return;
            }
        } else if (v) {
            json_decref(b);
            http_reply_error(r, 400, "invalid_field", "\"before\" must be unix seconds or ISO-8601 text",
                             "before");
            return;
        }
        json_decref(b);
        if (cutoff > now || cutoff < 0) {
            http_reply_error(r, 422, "invalid_field", "\"before\" must be a past instant", "before");
            return;
        }
    }
    long deleted = 0;
    int rc = events_log_compact(g_app->store, cutoff, &deleted);
    if (rc) {
        http_reply_err_code(r, rc, "compaction");
        return;
    }
    char iso[40];
    tz_format_iso8601(cutoff, iso, sizeof iso);
    json_t *o = json_object();
    json_object_set_new(o, "deleted_events", json_integer(deleted));
    json_object_set_new(o, "cutoff", json_string(iso));
    http_reply_json(r, 200, o);
}

void api_events_register(void)
{
    router_add(HTTP_POST, "/api/v1/events", ROLE_DECIDE, h_events, ROUTER_BIG_BODY);
    router_add(HTTP_POST, "/api/v1/admin/compact", ROLE_ADMIN, h_compact, 0);
    events_metrics_init();
    events_log_metrics_init();
}
