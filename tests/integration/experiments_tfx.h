/*
 * experiments_tfx.h — helpers shared by the experiment tests (prefix
 * xtfx_): decide and read what was served, call the experiment API, wait
 * for a condition with a deadline (never a fixed sleep).  Header-only; each
 * test file includes it once, after events_tfx.h.
 */
#ifndef PROMOD_EXPERIMENTS_TFX_H
#define PROMOD_EXPERIMENTS_TFX_H
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fixture.h"

/* Decide for `cust` on web (limit 3); *offers gets the reply's offers (new
 * reference) when asked.  Returns the status. */
static inline int xtfx_decide(struct tfx_server *s, const char *cust, const char *extra,
                              json_t **reply)
{
    char body[512];
    snprintf(body, sizeof body, "{\"customer_id\":\"%s\",\"channel\":\"web\",\"limit\":3%s%s}",
             cust, extra ? "," : "", extra ? extra : "");
    struct tfx_resp r;
    int st = tfx_req(s, "POST", "/api/v1/decide", body, &r);
    if (reply)
        *reply = r.json ? json_incref(r.json) : NULL;
    tfx_resp_free(&r);
    return st;
}

/* The variant of campaign `camp` in a decide reply, or NULL (not offered). */
static inline const char *xtfx_variant(json_t *reply, const char *camp)
{
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get(reply, "offers"), i, o)
        if (!strcmp(json_string_value(json_object_get(o, "campaign_id")), camp))
            return json_string_value(json_object_get(o, "variant"));
    return NULL;
}

/* The explain entry of campaign `camp` ("experiment" etc.), or NULL. */
static inline json_t *xtfx_explain(json_t *reply, const char *camp)
{
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get(reply, "explain"), i, o) {
        const char *c = json_string_value(json_object_get(o, "campaign_id"));
        if (c && !strcmp(c, camp))
            return o;
    }
    return NULL;
}

/* A request with a JSON body; insists on `want`; returns the body (new). */
static inline json_t *xtfx_call(struct tfx_server *s, const char *method, const char *path,
                                const char *body, int want)
{
    struct tfx_resp r;
    int st = tfx_req(s, method, path, body, &r);
    cr_assert_eq(st, want, "%s %s %s: %d %s", method, path, body ? body : "", st, r.body);
    json_t *o = r.json ? json_incref(r.json) : NULL;
    tfx_resp_free(&r);
    return o;
}

/* POST /api/v1/experiments/{id}/<action>, insisting on 200. */
static inline void xtfx_action(struct tfx_server *s, const char *id, const char *action,
                               const char *body)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/experiments/%s/%s", id, action);
    json_decref(xtfx_call(s, "POST", path, body, 200));
}

static inline json_t *xtfx_results(struct tfx_server *s, const char *id)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/experiments/%s/results", id);
    return xtfx_call(s, "GET", path, NULL, 200);
}

/* A failed request's error: insists on status and field. */
static inline void xtfx_refused(struct tfx_server *s, const char *method, const char *path,
                                const char *body, int want, const char *field)
{
    struct tfx_resp r;
    int st = tfx_req(s, method, path, body, &r);
    cr_assert_eq(st, want, "%s %s %s: %d %s", method, path, body ? body : "", st, r.body);
    json_t *f = json_object_get(json_object_get(r.json, "error"), "field");
    cr_assert(json_is_string(f) && !strcmp(json_string_value(f), field),
              "%s %s %s: field %s, want %s (%s)", method, path, body ? body : "",
              json_string_value(f) ? json_string_value(f) : "null", field, r.body);
    tfx_resp_free(&r);
}

/* Poll GET `path` until `ok` says yes (or 15 s pass); returns the last body. */
static inline json_t *xtfx_wait(struct tfx_server *s, const char *path,
                                int (*ok)(json_t *, const void *), const void *arg)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct tfx_resp r;
        int st = tfx_req(s, "GET", path, NULL, &r);
        json_t *o = st == 200 && r.json ? json_incref(r.json) : NULL;
        tfx_resp_free(&r);
        if (o && ok(o, arg))
            return o;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 15) {
            cr_assert_fail("waited 15 s for GET %s", path);
            return o;
        }
        json_decref(o);
        usleep(20000); /* polling a condition, not a synchronisation sleep */
    }
}

#endif
