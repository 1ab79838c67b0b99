/* counters.c — per-campaign counters kept across reloads (see counters.h). */
#include "engine/counters.h"
#include "base/hash.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 8192
#define PROBES 64
#define ID_MAX 132

struct counters {
    int nvals;
    pthread_mutex_t mu;   /* claiming a slot */
    char (*ids)[ID_MAX];  /* ids[i][0] == 0: free; published by its first byte */
    long *vals;           /* SLOTS * nvals */
};

struct counters *counters_new(int nvals)
{
    if (nvals < 1 || nvals > 64)
        return NULL;
    struct counters *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->nvals = nvals;
    pthread_mutex_init(&t->mu, NULL);
    t->ids = calloc(SLOTS, sizeof *t->ids);
    t->vals = calloc((size_t)SLOTS * (size_t)nvals, sizeof *t->vals);
    if (!t->ids || !t->vals) {
        free(t->ids);
        free(t->vals);
        free(t);
        return NULL;
    }
    return t;
}

void counters_free(struct counters *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->ids);
    free(t->vals);
    free(t);
}

/* The slot of `id`, claimed on first use; -1 when the table is full along
 * the id's probe sequence.  A slot's id is written whole before its first
 * byte is published, so readers never see half an id. */
static int slot_of(struct counters *t, const char *id, size_t n)
{
    uint32_t h = hash_fnv1a(id, n, HASH_FNV_INIT);
    for (int i = 0; i < PROBES; i++) {
        int s = (int)((h + (uint32_t)i) % SLOTS);
        char *c = t->ids[s];
        if (!__atomic_load_n(&c[0], __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&t->mu);
            if (!c[0]) {
                memcpy(c + 1, id + 1, n); /* with the NUL */
                __atomic_store_n(&c[0], id[0], __ATOMIC_RELEASE);
            }
            pthread_mutex_unlock(&t->mu);
        }
        if (!strcmp(c, id))
            return s;
    }
    return -1;
}

void counters_add(struct counters *t, const char *id, int val, long n)
{
    size_t len = id ? strlen(id) : 0;
    if (!t || !len || len >= ID_MAX || val < 0 || val >= t->nvals)
        return;
    int s = slot_of(t, id, len);
    if (s >= 0)
        __atomic_fetch_add(&t->vals[(size_t)s * (size_t)t->nvals + (size_t)val], n,
                           __ATOMIC_RELAXED);
}

int counters_next(const struct counters *t, int *pos, const char **id, long *vals)
{
    for (; t && *pos < SLOTS; (*pos)++) {
        const char *c = t->ids[*pos];
        if (!__atomic_load_n(&c[0], __ATOMIC_ACQUIRE))
            continue;
        const long *v = &t->vals[(size_t)*pos * (size_t)t->nvals];
        for (int k = 0; k < t->nvals; k++)
            vals[k] = __atomic_load_n(&v[k], __ATOMIC_RELAXED);
        *id = c;
        (*pos)++;
        return 1;
    }
    return 0;
}
