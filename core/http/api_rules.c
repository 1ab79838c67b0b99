/* api_rules.c — /api/v1/rules: load status, forced reload, dry-compile. */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "store/audit.h"
#include "http/router.h"
#include "engine/loyalty_rules.h"
#include "engine/rules.h"
#include <string.h>

/* campaign files and plugins, and the loyalty files beside them */
static json_t *status(void)
{
    json_t *o = rules_status_json();
    if (json_is_object(o))
        json_object_set_new(o, "loyalty", loyalty_rules_status_json());
    return o;
}

static void h_list(struct http_req *r) { http_reply_json(r, 200, status()); }

static void h_reload(struct http_req *r)
{
    int nerr = rules_reload(g_app, 1) + loyalty_rules_reload(1);
    json_t *o = status();
    json_object_set_new(o, "errors", json_integer(nerr));
    json_t *sum = json_pack("{s:O,s:i}", "generation", json_object_get(o, "generation"), "errors", nerr);
    audit_log(g_app->store, audit_actor(r->key, http_header(r, "X-Actor")), "rules.reload", "rules",
              NULL, sum);
    json_decref(sum);
    http_reply_json(r, 200, o);
}

/* POST /api/v1/rules/validate {"script": "...", "kind": "campaign"|"plugin", "name": "x.lua"}
 * or a raw Lua body (Content-Type text/plain). */
static void h_validate(struct http_req *r)
{
    const char *src;
    size_t len;
    const char *name = "script.lua";
    enum rules_kind kind = RULES_CAMPAIGN;
    json_t *b = NULL;
    const char *ct = http_header(r, "Content-Type");
    if (ct && !strncasecmp(ct, "text/plain", 10)) {
        src = r->body;
        len = r->body_len;
        if (!len) {
            http_reply_error(r, 400, "empty_body", "post the Lua source", NULL);
            return;
        }
    } else {
        b = http_body_json(r, JSON_OBJECT);
        if (!b)
            return;
        const char *key;
        json_t *val;
        json_object_foreach(b, key, val) {
            if (strcmp(key, "script") && strcmp(key, "kind") && strcmp(key, "name")) {
                http_reply_errorf(r, 400, "unknown_field", key,
                                  "unknown field \"%.64s\" (expected script, kind, name)", key);
                json_decref(b);
                return;
            }
        }
        json_t *s = json_object_get(b, "script");
        if (!json_is_string(s)) {
            if (s && !json_is_null(s))
                http_reply_error(r, 400, "invalid_field", "\"script\" must be the Lua source as a string",
                                 "script");
            else
                http_reply_error(r, 400, "missing_field", "\"script\" (the Lua source) is required", "script");
            json_decref(b);
            return;
        }
        src = json_string_value(s);
        len = json_string_length(s);
        json_t *kv = json_object_get(b, "kind");
        const char *k = json_string_value(kv);
        if (k && !strcmp(k, "plugin"))
            kind = RULES_PLUGIN;
        else if ((kv && !json_is_null(kv) && !k) || (k && strcmp(k, "campaign"))) {
            http_reply_error(r, 400, "invalid_field", "\"kind\" is campaign or plugin", "kind");
            json_decref(b);
            return;
        }
        json_t *nv = json_object_get(b, "name");
        const char *n = json_string_value(nv);
        if ((nv && !json_is_null(nv) && !n) || (n && !id_valid(n))) {
            http_reply_error(r, 400, "invalid_field",
                             "\"name\" is a file name like \"spring.lua\" (A-Z a-z 0-9 _ - . : @)", "name");
            json_decref(b);
            return;
        }
        if (n)
            name = n;
    }
    char path[300];
    snprintf(path, sizeof path, "%s/%s", kind == RULES_PLUGIN ? "plugins" : "rules", name);
    struct rules_gen *g = rules_gen_acquire();
    const char *chans[32];
    int nch = 0;
    for (int i = 0; g && i < g->nchans && i < 32; i++)
        chans[nch++] = g->chans[i].name;
    json_t *errors = json_array();
    char lib[4096];
    snprintf(lib, sizeof lib, "%s/lib", g_app->cfg.rules_dir);
    int rc = rules_validate_source(path, kind, src, len, chans, nch, lib, errors);
    rules_gen_release(g);
    json_t *o = json_object();
    json_object_set_new(o, "valid", json_boolean(rc == 0));
    json_object_set_new(o, "errors", errors);
    http_reply_json(r, rc == 0 ? 200 : 422, o);
    json_decref(b);
}

void api_rules_register(void)
{
    router_add(HTTP_GET, "/api/v1/rules", ROLE_MARKETER, h_list, 0);
    router_add(HTTP_POST, "/api/v1/rules/reload", ROLE_MARKETER, h_reload, 0);
    router_add(HTTP_POST, "/api/v1/rules/validate", ROLE_MARKETER, h_validate, 0);
}
