/*
 * router_metrics.c — request counters and latency histograms by route and
 * status: fixed arrays indexed by route (relaxed atomic adds, no lock on
 * the request path), rendered by a /metrics collector.
 */
#include "http/router.h"
#include "base/metrics.h"
#include <stdio.h>
#include <string.h>

static const int statuses[] = { 200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409,
                                413, 415, 422, 429, 500, 503, 507 };
#define NSTATUS (int)(sizeof statuses / sizeof statuses[0] + 1) /* +1: other */
static const double bounds_ms[] = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000, 5000 };
#define NBUCKET (int)(sizeof bounds_ms / sizeof bounds_ms[0])

struct cell {
    uint64_t count, sum_ns;
    uint64_t bucket[NBUCKET]; /* non-cumulative; +Inf = count */
};
static struct cell cells[ROUTER_MAX + 1][NSTATUS]; /* last row: unmatched */

static int status_idx(int st)
{
    for (int i = 0; i < NSTATUS - 1; i++)
        if (statuses[i] == st)
            return i;
    return NSTATUS - 1;
}

void router_metrics_observe(int route, int status, uint64_t ns)
{
    if (route < 0 || route >= ROUTER_MAX)
        route = ROUTER_MAX;
    struct cell *c = &cells[route][status_idx(status)];
    __atomic_fetch_add(&c->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->sum_ns, ns, __ATOMIC_RELAXED);
    double ms = (double)ns / 1e6;
    for (int b = 0; b < NBUCKET; b++)
        if (ms <= bounds_ms[b]) {
            __atomic_fetch_add(&c->bucket[b], 1, __ATOMIC_RELAXED);
            break;
        }
}

static void collect(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_http_requests_total HTTP requests by route and status.\n"
                  "# TYPE promod_http_requests_total counter\n");
    int nr = router_count();
    for (int r = 0; r <= ROUTER_MAX; r++) {
        if (r >= nr && r != ROUTER_MAX)
            continue;
        const char *label = r == ROUTER_MAX ? "unmatched" : router_get(r)->pattern;
        for (int s = 0; s < NSTATUS; s++) {
            uint64_t n = __atomic_load_n(&cells[r][s].count, __ATOMIC_RELAXED);
            if (!n)
                continue;
            buf_adds(out, "promod_http_requests_total{route=\"");
            metrics_label(out, label);
            if (s == NSTATUS - 1)
                buf_printf(out, "\",status=\"other\"} %llu\n", (unsigned long long)n);
            else
                buf_printf(out, "\",status=\"%d\"} %llu\n", statuses[s], (unsigned long long)n);
        }
    }
    buf_adds(out, "# HELP promod_http_request_duration_seconds Request latency by route and status.\n"
                  "# TYPE promod_http_request_duration_seconds histogram\n");
    for (int r = 0; r <= ROUTER_MAX; r++) {
        if (r >= nr && r != ROUTER_MAX)
            continue;
        const char *label = r == ROUTER_MAX ? "unmatched" : router_get(r)->pattern;
        for (int s = 0; s < NSTATUS; s++) {
            struct cell *c = &cells[r][s];
            uint64_t n = __atomic_load_n(&c->count, __ATOMIC_RELAXED);
            if (!n)
                continue;
            char st[16];
            if (s == NSTATUS - 1)
                strcpy(st, "other");
            else
                snprintf(st, sizeof st, "%d", statuses[s]);
            uint64_t cum = 0;
            for (int b = 0; b < NBUCKET; b++) {
                cum += __atomic_load_n(&c->bucket[b], __ATOMIC_RELAXED);
                buf_adds(out, "promod_http_request_duration_seconds_bucket{route=\"");
                metrics_label(out, label);
                buf_printf(out, "\",status=\"%s\",le=\"%g\"} %llu\n", st, bounds_ms[b] / 1000.0,
                           (unsigned long long)cum);
            }
            buf_adds(out, "promod_http_request_duration_seconds_bucket{route=\"");
            metrics_label(out, label);
            buf_printf(out, "\",status=\"%s\",le=\"+Inf\"} %llu\n", st, (unsigned long long)n);
            buf_adds(out, "promod_http_request_duration_seconds_sum{route=\"");
            metrics_label(out, label);
            buf_printf(out, "\",status=\"%s\"} %.6f\n", st,
                       (double)__atomic_load_n(&c->sum_ns, __ATOMIC_RELAXED) / 1e9);
            buf_adds(out, "promod_http_request_duration_seconds_count{route=\"");
            metrics_label(out, label);
            buf_printf(out, "\",status=\"%s\"} %llu\n", st, (unsigned long long)n);
        }
    }
}

void router_metrics_init(void) { metrics_register(collect, NULL); }
