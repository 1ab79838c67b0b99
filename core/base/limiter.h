/*
 * limiter.h — keyed rate limits in memory: one token bucket per key (an
 * API key, a client address, a customer, a coupon code prefix).
 *
 * A limit "N per W seconds" is a bucket that holds at most N tokens and
 * refills at N / W tokens a second, so a key may spend N at once and then
 * N per W on average.  Buckets live in a fixed table of `slots` entries
 * found by a 64-bit hash of the key; when the table is full the bucket
 * touched longest ago is recycled (that key starts over with a full
 * bucket), so memory stays bounded whatever the number of keys an
 * attacker invents.  Counts are per process and are not kept across a
 * restart: these are abuse limits, not quotas.
 *
 * Threads: any; the table is split in 64 shards with a mutex each.
 */
#ifndef PROMOD_LIMITER_H
#define PROMOD_LIMITER_H
#include <stddef.h>
#include <stdint.h>

struct limiter;

/** A limiter of `limit` per `window_s` seconds over at most `slots` keys
 *  (0 = 65536).  NULL when limit <= 0 (no limit: every call passes) or
 *  out of memory. */
struct limiter *limiter_new(long limit, long window_s, size_t slots);
void limiter_free(struct limiter *l);

/** Take one token for `key` at `now_ms` (a monotonic clock).  @return 0
 *  when allowed; otherwise the whole seconds until a token is back (>= 1,
 *  for Retry-After) and nothing is taken.  A NULL limiter allows all. */
long limiter_take(struct limiter *l, const void *key, size_t klen, int64_t now_ms);

/** Like limiter_take without taking: 0 when a token is there, else the
 *  seconds until one is. */
long limiter_peek(struct limiter *l, const void *key, size_t klen, int64_t now_ms);

#endif
