/*
 * dlog_tfx.h — helpers of the decision log and replay tests (prefix
 * dtfx_): a fixture population of profiles, decides sent in bulk on
 * pipelined keep-alive connections, metric reads and waits.  Header-only,
 * like the other *_tfx.h.
 */
#ifndef PROMOD_DLOG_TFX_H
#define PROMOD_DLOG_TFX_H
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"

static const char *const dtfx_countries[] = { "FR", "DE", "US", "GB", "ES" };

/* Customer i of the population: country, age, tier follow from i. */
static inline const char *dtfx_country(int i) { return dtfx_countries[i % 5]; }
static inline int dtfx_age(int i) { return 18 + (i * 7) % 50; }
static inline int dtfx_gold(int i) { return i % 4 == 0; }

/* Import customers c0000 .. c<n-1>. */
static inline void dtfx_import(struct tfx_server *s, int n)
{
    size_t cap = (size_t)n * 96 + 16, len = 0;
    char *body = malloc(cap);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len,
                                "{\"id\":\"c%04d\",\"country\":\"%s\",\"age\":%d,\"tier\":\"%s\"}\n",
                                i, dtfx_country(i), dtfx_age(i), dtfx_gold(i) ? "gold" : "silver");
    struct tfx_resp r;
    cr_assert_eq(tfx_http(s, "POST", "/api/v1/profiles/import",
                          "Content-Type: application/x-ndjson\r\n", body, len, &r),
                 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "failed")), 0, "%s", r.body);
    tfx_resp_free(&r);
    free(body);
}

/* `n` decides for customers cust(k) (k = 0..n-1) on channel web, placement
 * home, limit `limit`, pipelined 500 to a connection; returns how many got
 * a 200. */
static inline int dtfx_decides(struct tfx_server *s, int n, int ncust, int limit)
{
    int ok = 0;
    for (int b0 = 0; b0 < n; b0 += 500) {
        int b1 = b0 + 500 < n ? b0 + 500 : n;
        size_t cap = (size_t)(b1 - b0) * 400 + 16, len = 0;
        char *req = malloc(cap);
        for (int k = b0; k < b1; k++) {
            char body[200];
            int bl = snprintf(body, sizeof body,
                              "{\"customer_id\":\"c%04d\",\"channel\":\"web\",\"placement\":"
                              "\"home\",\"limit\":%d,\"context\":{\"k\":%d}}",
                              k % ncust, limit, k);
            len += (size_t)snprintf(req + len, cap - len,
                                    "POST /api/v1/decide HTTP/1.1\r\nHost: t\r\nContent-Type: "
                                    "application/json\r\nContent-Length: %d\r\n%s\r\n%s",
                                    bl, k == b1 - 1 ? "Connection: close\r\n" : "", body);
        }
        int fd = tfx_connect_port(s->port);
        cr_assert(fd >= 0);
        cr_assert_eq(tfx_send_all(fd, req, len), 0);
        size_t rl;
        char *resp = tfx_read_all(fd, &rl, 60000);
        close(fd);
        for (char *p = resp; p && (p = strstr(p, "HTTP/1.1 200")); p += 12)
            ok++;
        free(resp);
        free(req);
    }
    return ok;
}

/* A metric's value from /metrics (labels as rendered, "" for none); -1 when absent. */
static inline double dtfx_metric(struct tfx_server *s, const char *name, const char *labels)
{
    struct tfx_resp r;
    tfx_req(s, "GET", "/metrics", NULL, &r);
    double v = -1;
    if (!tfx_metric(r.body, name, labels, &v))
        v = -1;
    tfx_resp_free(&r);
    return v;
}

/* Wait (<= 120 s) until the log's writer has handled `n` decides (written
 * or dropped); returns the written count. */
static inline double dtfx_wait_logged(struct tfx_server *s, double n)
{
    double w = 0, d = 0;
    for (time_t end = time(NULL) + 120; time(NULL) < end;) {
        w = dtfx_metric(s, "promod_decision_log_written_total", "");
        d = dtfx_metric(s, "promod_decision_log_dropped_total", "");
        if (w + d >= n)
            break;
        usleep(50000); /* polling a condition with a deadline, not a sleep-as-sync */
    }
    cr_assert_geq(w + d, n, "the log handled %.0f + %.0f of %.0f decides", w, d, n);
    return w;
}

/* POST /api/v1/rules/replay with `body`; returns the status. */
static inline int dtfx_replay(struct tfx_server *s, const char *body, struct tfx_resp *r)
{
    return tfx_http(s, "POST", "/api/v1/rules/replay", "Content-Type: application/json\r\n", body,
                    strlen(body), r);
}

/* A body {"files": {name: src}, extra...} (malloc'd). */
static inline char *dtfx_files_body(const char *name, const char *src, const char *extra)
{
    json_t *o = json_pack("{s:{s:s}}", "files", name, src);
    if (extra) {
        json_t *x = json_loads(extra, 0, NULL);
        json_object_update(o, x);
        json_decref(x);
    }
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

#endif
