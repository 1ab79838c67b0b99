/*
 * events_tfx.h — small helpers shared by the events and analytics tests
 * (prefix etfx_): posting events, reading JSON answers, day strings.
 * Header-only; each test file includes it once.
 */
#ifndef PROMOD_EVENTS_TFX_H
#define PROMOD_EVENTS_TFX_H
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fixture.h"

/* POST /api/v1/events with a content type; returns the status. */
static inline int etfx_post(struct tfx_server *s, const char *ctype, const char *body, size_t len,
                            struct tfx_resp *r)
{
    char h[128];
    snprintf(h, sizeof h, "Content-Type: %s\r\n", ctype);
    return tfx_http(s, "POST", "/api/v1/events", h, body, len, r);
}

/* Post JSON events and insist on `want` status; returns "accepted". */
static inline long etfx_ingest(struct tfx_server *s, const char *json, int want)
{
    struct tfx_resp r;
    int st = etfx_post(s, "application/json", json, strlen(json), &r);
    cr_assert_eq(st, want, "POST /api/v1/events: %d %s", st, r.body);
    long acc = (long)json_integer_value(json_object_get(r.json, "accepted"));
    tfx_resp_free(&r);
    return acc;
}

/* GET a path, insist on 200, return the parsed body (new reference). */
static inline json_t *etfx_get(struct tfx_server *s, const char *fmt, ...)
{
    char path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    struct tfx_resp r;
    int st = tfx_req(s, "GET", path, NULL, &r);
    cr_assert_eq(st, 200, "GET %s: %d %s", path, st, r.body);
    cr_assert(r.json, "GET %s: not JSON", path);
    json_t *o = json_incref(r.json);
    tfx_resp_free(&r);
    return o;
}

/* Value at a dotted path ("totals.ctr.value"); arrays by index ("rows.0.2"). */
static inline json_t *etfx_at(json_t *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
        if (json_is_array(o))
            o = json_array_get(o, (size_t)strtoul(tok, NULL, 10));
        else
            o = json_object_get(o, tok);
    }
    return o;
}

static inline long etfx_int(json_t *o, const char *path)
{
    json_t *v = etfx_at(o, path);
    cr_assert(json_is_number(v), "%s is not a number", path);
    return (long)json_number_value(v);
}

static inline double etfx_num(json_t *o, const char *path)
{
    json_t *v = etfx_at(o, path);
    cr_assert(json_is_number(v), "%s is not a number", path);
    return json_number_value(v);
}

/* "2026-03-01" of unix time t (UTC). */
static inline void etfx_day(long t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%d", &tm);
}

/* The entry of an array of objects whose `key` equals `val`, or NULL. */
static inline json_t *etfx_find(json_t *arr, const char *key, const char *val)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) {
        const char *s = json_string_value(json_object_get(x, key));
        if (s && !strcmp(s, val))
            return x;
    }
    return NULL;
}

#endif
