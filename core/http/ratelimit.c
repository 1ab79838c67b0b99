/* ratelimit.c — per key and per address request limits (see ratelimit.h). */
#include "http/ratelimit.h"
#include "base/clock.h"
#include "base/limiter.h"
#include "base/metrics.h"
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

static struct limiter *g_key, *g_addr;
static const struct config *g_cfg;
static long g_refused[2];

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_printf(out, "# HELP promod_rate_limited_total Requests refused with 429 by a rate limit.\n"
                    "# TYPE promod_rate_limited_total counter\n"
                    "promod_rate_limited_total{limit=\"key\"} %ld\n"
                    "promod_rate_limited_total{limit=\"address\"} %ld\n",
               __atomic_load_n(&g_refused[0], __ATOMIC_RELAXED),
               __atomic_load_n(&g_refused[1], __ATOMIC_RELAXED));
    buf_printf(out, "# HELP promod_rate_limit Configured request limits (requests per window; 0 = off).\n"
                    "# TYPE promod_rate_limit gauge\n"
                    "promod_rate_limit{limit=\"key\",window_s=\"%ld\"} %ld\n"
                    "promod_rate_limit{limit=\"address\",window_s=\"%ld\"} %ld\n",
               g_cfg->rate_per_key.window_s, g_cfg->rate_per_key.limit,
               g_cfg->rate_per_address.window_s, g_cfg->rate_per_address.limit);
}

void ratelimit_init(const struct config *cfg)
{
    g_cfg = cfg;
    g_key = limiter_new(cfg->rate_per_key.limit, cfg->rate_per_key.window_s, 0);
    g_addr = limiter_new(cfg->rate_per_address.limit, cfg->rate_per_address.window_s, 0);
    metrics_register(collector, NULL);
}

static int refuse(struct http_req *r, long wait, int which)
{
    __atomic_fetch_add(&g_refused[which], 1, __ATOMIC_RELAXED);
    char b[32];
    snprintf(b, sizeof b, "%ld", wait);
    http_add_header(r, "Retry-After", b);
    struct reqerr e = { 0 };
    reqerr_set(&e, 429, "rate_limited", NULL, "too many requests for this %s; retry in %ld s",
               which ? "client address" : "API key", wait);
    e.extra = json_object();
    json_object_set_new(e.extra, "retry_after", json_integer(wait));
    http_reply_reqerr(r, &e);
    return 1;
}

int ratelimit_check(struct http_req *r)
{
    if (!g_key && !g_addr)
        return 0;
    int64_t now = (int64_t)(clock_mono_ns() / 1000000);
    long w;
    if (g_key && r->key && (w = limiter_take(g_key, r->key->id, strlen(r->key->id), now)))
        return refuse(r, w, 0);
    if (g_addr) {
        struct evhttp_connection *con = evhttp_request_get_connection(r->ev);
        char *addr = NULL;
        ev_uint16_t port = 0;
        if (con)
            evhttp_connection_get_peer(con, &addr, &port);
        if (addr && (w = limiter_take(g_addr, addr, strlen(addr), now)))
            return refuse(r, w, 1);
    }
    return 0;
}
