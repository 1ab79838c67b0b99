/* limiter.c — token buckets in a bounded, sharded hash table (see limiter.h). */
#include "base/limiter.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64
#define PROBE 8 /* slots looked at per key: the key's own and the next 7 */

struct bucket {
    uint64_t h;     /* 0 = empty */
    double tokens;
    int64_t at_ms;  /* last refill */
};

struct shard {
    pthread_mutex_t mu;
    struct bucket *b;
};

struct limiter {
    double cap, per_ms; /* tokens held at most, refill per millisecond */
    size_t nslots;      /* per shard */
    struct shard sh[SHARDS];
};

static uint64_t hash64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33; /* FNV's low bits mix poorly: finish like murmur */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

struct limiter *limiter_new(long limit, long window_s, size_t slots)
{
    if (limit <= 0 || window_s <= 0)
        return NULL;
    struct limiter *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->cap = (double)limit;
    l->per_ms = (double)limit / ((double)window_s * 1000.0);
    size_t total = slots ? slots : 65536;
    l->nslots = total / SHARDS < PROBE ? PROBE : total / SHARDS;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&l->sh[i].mu, NULL);
        if (!(l->sh[i].b = calloc(l->nslots, sizeof *l->sh[i].b))) {
            for (int j = 0; j <= i; j++) {
                free(l->sh[j].b);
                pthread_mutex_destroy(&l->sh[j].mu);
            }
            free(l);
            return NULL;
        }
    }
    return l;
}

void limiter_free(struct limiter *l)
{
    if (!l)
        return;
    for (int i = 0; i < SHARDS; i++) {
        free(l->sh[i].b);
        pthread_mutex_destroy(&l->sh[i].mu);
    }
    free(l);
}

/* The key's bucket, refilled to now: an existing one, else an empty slot,
 * else the one touched longest ago among the probed slots (recycled). */
static struct bucket *find(struct limiter *l, struct shard *s, uint64_t h, int64_t now)
{
    size_t at = (size_t)(h >> 6) % l->nslots;
    struct bucket *oldest = NULL, *empty = NULL;
    for (int i = 0; i < PROBE; i++) {
        struct bucket *b = &s->b[(at + (size_t)i) % l->nslots];
        if (b->h == h) {
            if (now > b->at_ms) {
                b->tokens = fmin(l->cap, b->tokens + (double)(now - b->at_ms) * l->per_ms);
                b->at_ms = now;
            }
            return b;
        }
        if (!b->h && !empty)
            empty = b;
        if (!oldest || b->at_ms < oldest->at_ms)
            oldest = b;
    }
    struct bucket *b = empty ? empty : oldest;
    *b = (struct bucket){ h, l->cap, now };
    return b;
}

static long wait_s(const struct limiter *l, double tokens)
{
    double ms = (1.0 - tokens) / l->per_ms;
    long s = (long)ceil(ms / 1000.0);
    return s < 1 ? 1 : s;
}

static long run(struct limiter *l, const void *key, size_t klen, int64_t now, int take)
{
    if (!l)
        return 0;
    uint64_t h = hash64(key, klen);
    struct shard *s = &l->sh[h & (SHARDS - 1)];
    pthread_mutex_lock(&s->mu);
    struct bucket *b = find(l, s, h, now);
    long r = 0;
    if (b->tokens >= 1.0) {
        if (take)
            b->tokens -= 1.0;
    } else {
        r = wait_s(l, b->tokens);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

long limiter_take(struct limiter *l, const void *key, size_t klen, int64_t now_ms)
{
    return run(l, key, klen, now_ms, 1);
}

long limiter_peek(struct limiter *l, const void *key, size_t klen, int64_t now_ms)
{
    return run(l, key, klen, now_ms, 0);
}
