/* api_segments.c — /api/v1/segments (definitions, members, sizes) and
 * /api/v1/targeting/audience (audiences built from segments). */
#include "http/api.h"
#include "base/app.h"
#include "base/err.h"
#include "base/id.h"
#include "base/metrics.h"
#include "engine/segments.h"
#include "http/router.h"
#include "store/audit.h"
#include <stdlib.h>
#include <string.h>

static int check_id(struct http_req *r, const char *id)
{
    if (id_valid(id))
        return 1;
    http_reply_error(r, 400, "invalid_id",
                     "ids are 1-128 characters of A-Z a-z 0-9 _ - . : @ and do not start with '.'",
                     "id");
    return 0;
}

static void audit(struct http_req *r, const char *what, const char *id, json_t *after)
{
    char obj[200];
    snprintf(obj, sizeof obj, "segment:%s", id);
    audit_log(g_app->store, audit_actor(r->key, http_header(r, "X-Actor")), what, obj, NULL, after);
}

static void h_list(struct http_req *r)
{
    if (r->method == HTTP_GET) {
        http_reply_json(r, 200, segments_list_json(g_app->store));
        return;
    }
    json_t *body = http_body_json(r, JSON_OBJECT);
    if (!body)
        return;
    json_t *jid = json_object_get(body, "id");
    if (!json_is_string(jid)) {
        json_decref(body);
        http_reply_error(r, 400, "invalid_field", "\"id\" (a string) is required", "id");
        return;
    }
    char id[160];
    snprintf(id, sizeof id, "%s", json_string_value(jid));
    if (!check_id(r, id)) {
        json_decref(body);
        return;
    }
    struct reqerr e = { 0 };
    json_t *out;
    int rc = segments_put(g_app, id, body, 1, &out, &e);
    json_decref(body);
    if (rc) {
        http_reply_reqerr(r, &e);
        return;
    }
    audit(r, "segment.create", id, out);
    http_reply_json(r, 201, out);
}

static void h_one(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    struct reqerr e = { 0 };
    if (r->method == HTTP_GET) {
        json_t *o = segments_get_json(g_app->store, id, &e);
        if (!o)
            http_reply_reqerr(r, &e);
        else
            http_reply_json(r, 200, o);
        return;
    }
    if (r->method == HTTP_DELETE) {
        if (segments_delete(g_app, id, &e)) {
            http_reply_reqerr(r, &e);
            return;
        }
        audit(r, "segment.delete", id, NULL);
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "deleted", json_true());
        http_reply_json(r, 200, o);
        return;
    }
    json_t *body = http_body_json(r, JSON_OBJECT);
    if (!body)
        return;
    json_t *out;
    int rc = segments_put(g_app, id, body, 0, &out, &e);
    json_decref(body);
    if (rc) {
        http_reply_reqerr(r, &e);
        return;
    }
    audit(r, "segment.update", id, out);
    http_reply_json(r, 200, out);
}

/* ?via=scan: count by scanning the index even when the in-memory view
 * could answer (comparisons, tests). */
static int via_scan(struct http_req *r)
{
    char *via = http_query_get(r, "via");
    int scan = via && !strcmp(via, "scan");
    free(via);
    return scan;
}

static void h_size(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    uint64_t n;
    const char *state = "ready";
    int rc = segments_size(g_app->store, id, &n, &state);
    if (rc) {
        http_reply_err_code(r, rc, "segment");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "size", json_integer((json_int_t)n));
    json_object_set_new(o, "state", json_string(state));
    char *ov = http_query_get(r, "overlap");
    if (ov) {
        json_t *m = json_object();
        char *save = NULL;
        int scan = via_scan(r);
        const char *by = "scan";
        for (char *tok = strtok_r(ov, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            uint64_t both;
            if (!id_valid(tok) || segments_overlap(g_app->store, id, tok, scan, &both, &by)) {
                json_decref(m);
                json_decref(o);
                http_reply_errorf(r, 404, "not_found", "overlap", "overlap: no segment \"%s\"", tok);
                free(ov);
                return;
            }
            json_object_set_new(m, tok, json_integer((json_int_t)both));
        }
        json_object_set_new(o, "overlap", m);
        json_object_set_new(o, "counted_by", json_string(by));
        free(ov);
    }
    http_reply_json(r, 200, o);
}

/* Every member as NDJSON, a page per chunk. */
struct mstream {
    char id[160];
    char cursor[132];
    int started;
};

static int mstream_fn(void *ud, struct buf *out)
{
    struct mstream *m = ud;
    if (m->started && !m->cursor[0])
        return 1;
    m->started = 1;
    json_t *ids = json_array();
    char next[132] = "";
    int rc = ids ? segments_members_page(g_app->store, m->id, m->cursor, 4096, ids, next) : ERR_NOMEM;
    if (rc) {
        buf_printf(out, "{\"error\":{\"code\":\"stream_failed\",\"message\":\"%s\",\"field\":null}}\n",
                   err_str(rc));
        json_decref(ids);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        buf_adds(out, "{\"id\":");
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        if (s)
            buf_adds(out, s);
        free(s);
        buf_adds(out, "}\n");
    }
    json_decref(ids);
    memcpy(m->cursor, next, sizeof next);
    return next[0] ? 0 : 1;
}

static void h_customers(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    uint64_t n;
    const char *state;
    int rc = segments_size(g_app->store, id, &n, &state);
    if (rc) {
        http_reply_err_code(r, rc, "segment");
        return;
    }
    char *fmt = http_query_get(r, "format");
    int ndjson = fmt && !strcmp(fmt, "ndjson");
    if (fmt && !ndjson) {
        free(fmt);
        http_reply_error(r, 400, "invalid_query", "format must be \"ndjson\" (or absent for pages)",
                         "format");
        return;
    }
    free(fmt);
    if (ndjson) {
        struct mstream *m = calloc(1, sizeof *m);
        if (!m) {
            http_reply_err_code(r, ERR_NOMEM, "segment");
            return;
        }
        snprintf(m->id, sizeof m->id, "%s", id);
        http_reply_stream(r, "application/x-ndjson", mstream_fn, free, m);
        return;
    }
    int ok;
    long limit = http_query_long(r, "limit", 100, 1, 10000, &ok);
    if (!ok)
        return;
    char *cur = http_query_get(r, "cursor");
    if (cur && !id_valid(cur)) {
        free(cur);
        http_reply_error(r, 400, "invalid_query", "cursor must be a next_cursor from a previous page",
                         "cursor");
        return;
    }
    json_t *ids = json_array();
    char next[132] = "";
    rc = segments_members_page(g_app->store, id, cur ? cur : "", (int)limit, ids, next);
    free(cur);
    if (rc) {
        json_decref(ids);
        http_reply_err_code(r, rc, "segment");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "size", json_integer((json_int_t)n));
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "customers", ids);
    if (next[0]) {
        json_object_set_new(o, "next_cursor", json_string(next));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    http_reply_json(r, 200, o);
}

static void h_audience(struct http_req *r)
{
    json_t *body = http_body_json(r, JSON_OBJECT);
    if (!body)
        return;
    struct reqerr e = { 0 };
    json_t *o = segments_audience_create(g_app, body, via_scan(r), &e);
    json_decref(body);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    http_reply_json(r, 201, o);
}

static void h_audience_get(struct http_req *r)
{
    struct reqerr e = { 0 };
    json_t *o = segments_audience_get(g_app->store, r->params[0], via_scan(r), &e);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    http_reply_json(r, 200, o);
}

static void streams_collect(struct buf *out, void *ud)
{
    (void)ud;
    buf_printf(out, "# HELP promod_http_streams_open Streamed replies in progress (NDJSON member "
                    "lists).\n# TYPE promod_http_streams_open gauge\npromod_http_streams_open %ld\n",
               http_streams_open());
}

void api_segments_register(void)
{
    metrics_register(streams_collect, NULL);
    router_add(HTTP_GET | HTTP_POST, "/api/v1/segments", ROLE_MARKETER, h_list, 0);
    router_add(HTTP_GET, "/api/v1/segments/{id}/size", ROLE_MARKETER, h_size, 0);
    router_add(HTTP_GET, "/api/v1/segments/{id}/customers", ROLE_MARKETER, h_customers, 0);
    router_add(HTTP_GET | HTTP_PUT | HTTP_DELETE, "/api/v1/segments/{id}", ROLE_MARKETER, h_one, 0);
    router_add(HTTP_POST, "/api/v1/targeting/audience", ROLE_MARKETER, h_audience, 0);
    router_add(HTTP_GET, "/api/v1/targeting/audience/{id}", ROLE_MARKETER, h_audience_get, 0);
}
