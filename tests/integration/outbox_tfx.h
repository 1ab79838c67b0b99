/*
 * outbox_tfx.h — helpers shared by the outbox, sends, plugins and triggers
 * integration tests (prefix otfx_).  Header-only so each test executable
 * stays one file plus the common fixtures; everything goes through a real
 * server over HTTP and a real receiver (tests/common/receiver.h).
 */
#ifndef PROMOD_OUTBOX_TFX_H
#define PROMOD_OUTBOX_TFX_H
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fixture.h"
#include "receiver.h"

/* Config fields pointing every outbound channel at the receiver, plus
 * fast retries; `extra_chan` is added inside each channel's table
 * ("rate = 5,"), `more_chans` inside `channels` ("slow = { ... },"),
 * `extra` at top level. */
static inline void otfx_init(struct tfx_server *s, struct rcv *r, const char *extra_chan,
                             const char *more_chans, const char *extra)
{
    char *cfg = NULL;
    int p = rcv_port(r);
    const char *ec = extra_chan ? extra_chan : "";
    int n = asprintf(&cfg,
             "test_clock = true,\n"
             "  channels = {\n"
             "    webhook = { url = \"http://127.0.0.1:%d/hook\", secret = \"s3cret\", "
             "retry_base_ms = 50, retry_max_ms = 400, max_attempts = 4, request_timeout_ms = 400, %s },\n"
             "    email = { endpoint = \"http://127.0.0.1:%d/email\", api_key = \"mk-1\", "
             "from = \"Shop <news@shop.example>\", retry_base_ms = 50, max_attempts = 4, %s },\n"
             "    sms = { endpoint = \"http://127.0.0.1:%d/sms\", api_key = \"sk-1\", "
             "retry_base_ms = 50, max_attempts = 4, %s },\n"
             "    push = { endpoint = \"http://127.0.0.1:%d/push\", api_key = \"pk-1\", "
             "retry_base_ms = 50, max_attempts = 4, %s },\n    %s\n"
             "  },\n  %s",
             p, ec, p, ec, p, ec, p, ec, more_chans ? more_chans : "", extra ? extra : "");
    cr_assert(n > 0);
    tfx_server_init(s, cfg);
    free(cfg);
}

/* rules/<id>.lua: a draft campaign on `channels` ("'webhook'") with one
 * variant whose content is `content` (Lua table fields) and `more` fields
 * (hooks, caps, trigger...). */
static inline void otfx_campaign(struct tfx_server *s, const char *id, const char *channels,
                                 const char *content, const char *more)
{
    char path[300], src[8192];
    snprintf(path, sizeof path, "rules/%s.lua", id);
    snprintf(src, sizeof src,
             "return { id = '%s', status = 'draft', channels = { %s },\n"
             "  variants = { { id = 'A', content = { %s } } },\n"
             "  eligible = function(p, ctx) return true end,\n  %s }\n",
             id, channels, content ? content : "headline = 'Hi {{first_name|there}}'",
             more ? more : "");
    tfx_write(s, path, src);
}

/* Wait until the server lists the campaign (hot reload took it). */
static inline int otfx_wait_campaign(struct tfx_server *s, const char *id)
{
    char path[300];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s", id);
    for (int i = 0; i < 200; i++) {
        struct tfx_resp r;
        int st = tfx_req(s, "GET", path, NULL, &r);
        tfx_resp_free(&r);
        if (st == 200)
            return 1;
        usleep(25000);
    }
    return 0;
}

static inline int otfx_action(struct tfx_server *s, const char *id, const char *action)
{
    char path[300];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/%s", id, action);
    struct tfx_resp r;
    int st = tfx_req(s, "POST", path, "{}", &r);
    /* cr_log_info, not cr_log_warn: Criterion 2.4 exits 1 after any warning */
    if (st != 200)
        cr_log_info("%s %s: %d %s", action, id, st, r.body);
    tfx_resp_free(&r);
    return st;
}

/* NDJSON import of n profiles "<prefix><i>" with `fields` (JSON members,
 * "%d" replaced by i when present once). */
static inline void otfx_profiles(struct tfx_server *s, const char *prefix, int n, const char *fields)
{
    size_t cap = (size_t)n * 400 + 64, len = 0;
    char *body = malloc(cap);
    for (int i = 0; i < n; i++) {
        char f[300];
        snprintf(f, sizeof f, fields, i);
        len += (size_t)snprintf(body + len, cap - len, "{\"id\":\"%s%d\"%s%s}\n", prefix, i,
                                *f ? "," : "", f);
    }
    struct tfx_resp r;
    int st = tfx_http(s, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n",
                      body, len, &r);
    cr_assert_eq(st, 200, "import: %d %s", st, r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "imported")), n, "%s", r.body);
    tfx_resp_free(&r);
    free(body);
}

/* GET a JSON document (new reference), asserting 200. */
static inline json_t *otfx_get(struct tfx_server *s, const char *path)
{
    struct tfx_resp r;
    int st = tfx_req(s, "GET", path, NULL, &r);
    cr_assert_eq(st, 200, "GET %s: %d %s", path, st, r.body);
    json_t *j = json_incref(r.json);
    tfx_resp_free(&r);
    return j;
}

/* Integer at "a.b" in a JSON document; -1 when absent. */
static inline long otfx_int(const json_t *j, const char *dotted)
{
    char buf[200];
    snprintf(buf, sizeof buf, "%s", dotted);
    const json_t *cur = j;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = json_object_get(cur, tok);
    return json_is_integer(cur) ? (long)json_integer_value(cur) : -1;
}

/* Poll GET path until the integer at `dotted` >= want (or timeout). */
static inline long otfx_wait_int(struct tfx_server *s, const char *path, const char *dotted,
                                 long want, int timeout_ms)
{
    long v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        json_t *j = otfx_get(s, path);
        v = otfx_int(j, dotted);
        json_decref(j);
        if (v >= want)
            break;
        usleep(50000);
    }
    return v;
}

/* Poll GET /api/v1/outbox until nothing is queued, held or in flight —
 * no delivery can follow — and the campaign's sends (when `campaign` is
 * not NULL) are "done".  1 when reached within timeout_ms.  What tests
 * wait for before asserting that something did NOT happen (a duplicate, a
 * retry), instead of sleeping. */
static inline int otfx_wait_idle(struct tfx_server *s, const char *campaign, int timeout_ms)
{
    char path[300];
    if (campaign)
        snprintf(path, sizeof path, "/api/v1/campaigns/%s/sends", campaign);
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        json_t *j = otfx_get(s, "/api/v1/outbox");
        int idle = otfx_int(j, "queued") == 0 && otfx_int(j, "in_flight") == 0 &&
                   otfx_int(j, "held") <= 0;
        json_decref(j);
        if (idle && campaign) {
            j = otfx_get(s, path);
            const char *st = json_string_value(json_object_get(j, "state"));
            idle = st && !strcmp(st, "done");
            json_decref(j);
        }
        if (idle)
            return 1;
        usleep(50000);
    }
    return 0;
}

/* Poll GET /api/v1/outbox until nothing is in flight: an attempt already
 * on its way has landed (or failed).  1 when reached within timeout_ms. */
static inline int otfx_wait_no_flight(struct tfx_server *s, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        json_t *j = otfx_get(s, "/api/v1/outbox");
        long n = otfx_int(j, "in_flight");
        json_decref(j);
        if (n == 0)
            return 1;
        usleep(20000);
    }
    return 0;
}

/* POST /api/v1/admin/clock {"offset": secs} */
static inline void otfx_clock(struct tfx_server *s, long offset)
{
    char b[64];
    snprintf(b, sizeof b, "{\"offset\": %ld}", offset);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(s, "POST", "/api/v1/admin/clock", b, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
}

/* Offset that makes the server's clock read `hour`:00 UTC today (or
 * tomorrow when `next_day`). */
static inline long otfx_offset_for_hour(int hour, int next_day)
{
    time_t now = time(NULL);
    long day = (long)(now / 86400) * 86400 + (next_day ? 86400 : 0);
    return day + hour * 3600L - (long)now;
}

#endif
