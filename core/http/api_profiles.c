/* api_profiles.c — /api/v1/profiles: attributes, export, erase, import. */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "store/audit.h"
#include "base/err.h"
#include "service/profiles.h"
#include "http/router.h"
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

static void h_profile(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    int rc;
    if (r->method == HTTP_GET) {
        json_t *p = profiles_get(g_app->store, id, &rc);
        if (!p) {
            http_reply_err_code(r, rc, "profile");
            return;
        }
        http_reply_json(r, 200, p);
        return;
    }
    if (r->method == HTTP_DELETE) {
        long n = profiles_erase(g_app->store, id);
        if (n < 0) {
            http_reply_err_code(r, (int)n, "profile");
            return;
        }
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "erased_records", json_integer(n));
        char obj[160];
        snprintf(obj, sizeof obj, "profile:%s", id);
        audit_log(g_app->store, audit_actor(r->key, http_header(r, "X-Actor")), "profile.erase", obj,
                  NULL, o); /* the count erased, never the profile */
        http_reply_json(r, 200, o);
        return;
    }
    json_t *body = http_body_json(r, JSON_OBJECT);
    if (!body)
        return;
    char msg[256];
    const char *field;
    if (profiles_validate(id, body, r->method == HTTP_PATCH, msg, sizeof msg, &field)) {
        http_reply_error(r, 422, "invalid_profile", msg, field);
        json_decref(body);
        return;
    }
    if (r->method == HTTP_PUT) {
        int created = 0;
        rc = profiles_put(g_app->store, id, body, &created);
        json_decref(body);
        if (rc) {
            http_reply_err_code(r, rc, "profile");
            return;
        }
        json_t *p = profiles_get(g_app->store, id, &rc);
        http_reply_json(r, created ? 201 : 200, p);
        return;
    }
    json_t *merged = NULL;
    rc = profiles_patch(g_app->store, id, body, &merged);
    json_decref(body);
    if (rc) {
        http_reply_err_code(r, rc, "profile");
        return;
    }
    json_decref(merged);
    json_t *p = profiles_get(g_app->store, id, &rc);
    http_reply_json(r, 200, p);
}

static void h_export(struct http_req *r)
{
    const char *id = r->params[0];
    if (!check_id(r, id))
        return;
    int rc;
    json_t *o = profiles_export(g_app->store, id, &rc);
    if (!o) {
        http_reply_err_code(r, rc, "customer");
        return;
    }
    http_reply_json(r, 200, o);
}

static void h_import(struct http_req *r)
{
    if (r->body_msgpack) {
        http_reply_error(r, 415, "unsupported_media_type", "import takes NDJSON (application/x-ndjson)",
                         NULL);
        return;
    }
    if (!r->body_len) {
        http_reply_error(r, 400, "empty_body", "send one JSON object per line", NULL);
        return;
    }
    struct profiles_import_result res = { 0 };
    int rc = profiles_import_ndjson(g_app->store, r->body, r->body_len, 1, 0, &res);
    json_t *o = json_object();
    json_object_set_new(o, "imported", json_integer(res.imported));
    json_object_set_new(o, "failed", json_integer(res.failed));
    json_object_set_new(o, "errors", res.errors ? res.errors : json_array());
    if (rc) {
        /* lines before next_line are stored: the client resends the rest */
        char msg[96];
        snprintf(msg, sizeof msg, "import stopped at line %ld (the lines before it are stored)", res.next_line);
        json_decref(o);
        http_reply_err_code(r, rc, msg);
        return;
    }
    http_reply_json(r, 200, o);
}

void api_profiles_register(void)
{
    router_add(HTTP_POST, "/api/v1/profiles/import", ROLE_MARKETER, h_import, ROUTER_BIG_BODY);
    router_add(HTTP_GET, "/api/v1/profiles/{id}/export", ROLE_MARKETER, h_export, 0);
    router_add(HTTP_GET | HTTP_PUT | HTTP_PATCH | HTTP_DELETE, "/api/v1/profiles/{id}",
               ROLE_MARKETER, h_profile, 0);
}
