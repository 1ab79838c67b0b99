/*
 * campaigns_tfx.h — helpers shared by the campaign, lifecycle, approval,
 * schedule and audit integration tests (prefix ctfx_).  Header-only so
 * each test executable stays one file plus the common fixture; everything
 * goes through the real server over HTTP.
 */
#ifndef PROMOD_CAMPAIGNS_TFX_H
#define PROMOD_CAMPAIGNS_TFX_H
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fixture.h"

/* A request with a JSON body (may be NULL) and extra raw header lines
 * (may be NULL, each ending in \r\n). */
static inline int ctfx_req(struct tfx_server *s, const char *method, const char *path,
                           const char *hdrs, const char *json, struct tfx_resp *r)
{
    char h[2048];
    snprintf(h, sizeof h, "%s%s", json ? "Content-Type: application/json\r\n" : "",
             hdrs ? hdrs : "");
    return tfx_http(s, method, path, *h ? h : NULL, json, json ? strlen(json) : 0, r);
}

/* A minimal valid campaign script; `id` NULL leaves the id to the file
 * name; `extra` is more Lua table fields ("priority = 5,"). */
static inline char *ctfx_script(const char *id, const char *headline, const char *extra)
{
    char *s = NULL;
    char idf[200] = "";
    if (id)
        snprintf(idf, sizeof idf, "id = \"%s\", ", id);
    if (asprintf(&s,
                 "return { %schannels = { \"web\" }, %s\n"
                 "  variants = { { id = \"A\", content = { headline = \"%s\" } } },\n"
                 "  eligible = function(p, ctx) return true end }\n",
                 idf, extra ? extra : "", headline) < 0)
        abort();
    return s;
}

/* JSON string literal of `s` (malloc'd), for embedding a script in a body. */
static inline char *ctfx_jstr(const char *s)
{
    json_t *j = json_string(s);
    char *out = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    return out;
}

/* POST /api/v1/campaigns {"id", "script"[, more]}; returns the status. */
static inline int ctfx_create(struct tfx_server *s, const char *hdrs, const char *id,
                              const char *script, const char *more_fields)
{
    char *js = ctfx_jstr(script);
    char *body = NULL;
    if (asprintf(&body, "{\"id\":\"%s\",\"script\":%s%s%s}", id, js, more_fields ? "," : "",
                 more_fields ? more_fields : "") < 0)
        abort();
    struct tfx_resp r;
    int st = ctfx_req(s, "POST", "/api/v1/campaigns", hdrs, body, &r);
    tfx_resp_free(&r);
    free(js);
    free(body);
    return st;
}

/* PUT a new script; returns the status (and the response when asked). */
static inline int ctfx_put_script(struct tfx_server *s, const char *hdrs, const char *id,
                                  const char *script, struct tfx_resp *out)
{
    char *js = ctfx_jstr(script);
    char *body = NULL, *path = NULL;
    if (asprintf(&body, "{\"script\":%s}", js) < 0 ||
        asprintf(&path, "/api/v1/campaigns/%s", id) < 0)
        abort();
    struct tfx_resp r;
    int st = ctfx_req(s, "PUT", path, hdrs, body, &r);
    if (out)
        *out = r;
    else
        tfx_resp_free(&r);
    free(js);
    free(body);
    free(path);
    return st;
}

/* POST /api/v1/campaigns/{id}/{action}; returns the status. */
static inline int ctfx_act(struct tfx_server *s, const char *hdrs, const char *id,
                           const char *action, const char *body, struct tfx_resp *out)
{
    char path[300];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/%s", id, action);
    struct tfx_resp r;
    int st = ctfx_req(s, "POST", path, hdrs, body, &r);
    if (out)
        *out = r;
    else
        tfx_resp_free(&r);
    return st;
}

/* GET the campaign; the response stays in *r (caller frees). */
static inline int ctfx_get(struct tfx_server *s, const char *hdrs, const char *id,
                           struct tfx_resp *r)
{
    char path[300];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s", id);
    return ctfx_req(s, "GET", path, hdrs, NULL, r);
}

/* A string member of the campaign (malloc'd, "" when absent, "<404>" when missing). */
static inline char *ctfx_field(struct tfx_server *s, const char *hdrs, const char *id,
                               const char *k)
{
    struct tfx_resp r;
    int st = ctfx_get(s, hdrs, id, &r);
    const char *v = st == 200 ? json_string_value(json_object_get(r.json, k)) : "<404>";
    char *out = strdup(v ? v : "");
    tfx_resp_free(&r);
    return out;
}

static inline long ctfx_int(struct tfx_server *s, const char *hdrs, const char *id, const char *k)
{
    struct tfx_resp r;
    ctfx_get(s, hdrs, id, &r);
    long v = (long)json_integer_value(json_object_get(r.json, k));
    tfx_resp_free(&r);
    return v;
}

/* The headline decide gives for `campaign` to a visitor on web, or NULL
 * (malloc'd) when the campaign is not offered.  A dry run, so caps and
 * contact policies never run out however often a test asks. */
static inline char *ctfx_offer(struct tfx_server *s, const char *hdrs, const char *campaign)
{
    struct tfx_resp r;
    ctfx_req(s, "POST", "/api/v1/decide", hdrs,
             "{\"customer_id\":\"visitor-1\",\"channel\":\"web\",\"limit\":50,\"dry_run\":true}",
             &r);
    char *out = NULL;
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get(r.json, "offers"), i, o) {
        if (!strcmp(json_string_value(json_object_get(o, "campaign_id")), campaign)) {
            const char *h =
                json_string_value(json_object_get(json_object_get(o, "content"), "headline"));
            out = strdup(h ? h : "");
        }
    }
    tfx_resp_free(&r);
    return out;
}

/* Poll `cond` every 20 ms for up to `ms`; returns its last value. */
#define CTFX_WAIT(ms, cond)                                                                        \
    ({                                                                                             \
        int _ok = 0;                                                                               \
        for (int _i = 0; _i < (ms) / 20 && !(_ok = (cond)); _i++)                                  \
            usleep(20000);                                                                         \
        _ok || (cond);                                                                             \
    })

/* Number of audit entries matching a query string ("action=x&object=y"). */
static inline long ctfx_audit_count(struct tfx_server *s, const char *hdrs, const char *query)
{
    char path[600];
    snprintf(path, sizeof path, "/api/v1/audit?limit=1000&%s", query);
    struct tfx_resp r;
    ctfx_req(s, "GET", path, hdrs, NULL, &r);
    long n = r.status == 200 ? (long)json_array_size(json_object_get(r.json, "entries")) : -1;
    tfx_resp_free(&r);
    return n;
}

/* Does a file exist under the server's temp root? */
static inline int ctfx_exists(struct tfx_server *s, const char *rel)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", s->dir, rel);
    struct stat st;
    return stat(p, &st) == 0;
}

/* Whole file under the temp root (malloc'd) or NULL. */
static inline char *ctfx_read(struct tfx_server *s, const char *rel)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", s->dir, rel);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    char *b = malloc(1 << 21);
    size_t n = fread(b, 1, (1 << 21) - 1, f);
    fclose(f);
    b[n] = 0;
    return b;
}

/* Error code and members of a contract error. */
static inline const char *ctfx_err_field(const struct tfx_resp *r)
{
    const char *f = json_string_value(json_object_get(json_object_get(r->json, "error"), "field"));
    return f ? f : "";
}

#endif
