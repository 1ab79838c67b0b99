/*
 * ratelimit.h — request rate limits per API key and per client address,
 * the "limits" link of the dispatch chain (route → auth → limits →
 * handler).
 *
 * `rate_limit_per_key` counts every request made with one API key,
 * `rate_limit_per_address` every request from one client address (the
 * TCP peer: behind a proxy that is the proxy).  Public routes (/healthz,
 * /metrics) are not limited.  Past a limit the request is answered 429
 * `rate_limited` in the contract's error shape, with a Retry-After header
 * and "retry_after" (seconds) in the error object, before its body is
 * read.  Token buckets in memory (base/limiter.h): a limit of N per W
 * allows N at once, then N per W.
 *
 * Threads: ratelimit_init once at start-up (it registers /metrics);
 * ratelimit_check from any worker.
 */
#ifndef PROMOD_RATELIMIT_H
#define PROMOD_RATELIMIT_H
#include "base/config.h"
#include "http/http.h"

/** Build the limiters from the config and register
 *  promod_rate_limited_total{limit="key"|"address"}. */
void ratelimit_init(const struct config *cfg);

/** @return 0 to go on, or 1 when the request was answered with 429. */
int ratelimit_check(struct http_req *r);

#endif
