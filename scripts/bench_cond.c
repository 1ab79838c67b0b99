/*
 * bench_cond.c — what one cond_eval costs on a reference profile.
 *
 *   scripts/bench-cond.sh [--iterations N]      (builds and runs this)
 *
 * The profile has the shape of the reference workload's profiles
 * (../shared/bench/gen_workload.py: id, first_name, tier, country, age,
 * ltv, days_since_purchase, app_user, interests, consent, email) plus a
 * "stats" map as events write it, encoded to msgpack as the store keeps
 * it.  Each condition is compiled once and evaluated N times in a loop;
 * five runs, the median and the fastest are printed in ns per evaluation,
 * with the heap allocations counted per evaluation (malloc, calloc and
 * realloc are counted by this program's own wrappers).  A last row decodes
 * the msgpack into a jansson tree first, the way the profile would be
 * handled without a msgpack evaluator.  Wall-clock figures on a shared
 * machine move by tens of percent: compare rows of one run.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "engine/cond.h"

/* count heap allocations: glibc's own entry points behind thin wrappers */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static long n_alloc;
void *malloc(size_t n)
{
    n_alloc++;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    n_alloc++;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    n_alloc++;
    return __libc_realloc(p, n);
}

static const char PROFILE[] =
    "{\"id\": \"c00001234\", \"first_name\": \"Chloe\", \"tier\": \"gold\", \"country\": \"FR\","
    " \"age\": 34, \"ltv\": 412.57, \"days_since_purchase\": 41, \"app_user\": true,"
    " \"interests\": [\"beach\", \"wine\", \"golf\"],"
    " \"consent\": {\"email\": true, \"sms\": false, \"push\": true},"
    " \"email\": \"c00001234@example.com\","
    " \"stats\": {\"purchase\": {\"count\": 7, \"revenue\": 812.4, \"last_days\": 41},"
    " \"visit\": {\"count\": 52, \"last_days\": 2}}}";

static const struct {
    const char *name, *cond;
} CONDS[] = {
    { "3 clauses: tier $in, country $in, age range",
      "{\"tier\": {\"$in\": [\"gold\", \"platinum\"]}, \"country\": {\"$in\": [\"FR\", \"DE\", \"ES\", \"IT\"]},"
      " \"age\": {\"$gte\": 25, \"$lte\": 45}}" },
    { "3 clauses: interests $elemMatch, recency $exists+$lte, ltv",
      "{\"interests\": {\"$elemMatch\": {\"$eq\": \"wine\"}}, \"days_since_purchase\": {\"$exists\": true,"
      " \"$lte\": 90}, \"ltv\": {\"$gte\": 200}}" },
    { "3 clauses: email $regex, stats path, consent",
      "{\"email\": {\"$regex\": \"@example\\\\.com$\"}, \"stats.purchase.count\": {\"$gt\": 2},"
      " \"consent.email\": true}" },
    { "$or of 3, one failing clause first",
      "{\"$or\": [{\"tier\": \"platinum\"}, {\"app_user\": false}, {\"stats.visit.count\": {\"$gte\": 50}}]}" },
    { "no match on the first clause",
      "{\"country\": {\"$in\": [\"US\", \"CA\"]}, \"age\": {\"$gte\": 25}, \"tier\": \"gold\"}" },
};

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static const char *const TIERS[] = { "bronze", "silver", "gold", "platinum" };
static const char *const COUNTRIES[] = { "FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "SE", "PL" };
static const char *const INTERESTS[] = { "beach", "ski", "city", "family", "luxury", "golf", "food", "wine" };

/* One predicate of the reference workload's kinds (gen_workload.py
 * predicate() and gb_condition()), as a GrowthBook condition. */
static size_t predicate(uint64_t *seed, char *o, size_t cap, bool comma)
{
    size_t n = (size_t)snprintf(o, cap, "%s", comma ? ", " : "");
    switch (lcg(seed) % 7) {
    case 0: {
        int k = 1 + (int)(lcg(seed) % 3), at = (int)(lcg(seed) % 4);
        n += (size_t)snprintf(o + n, cap - n, "{\"tier\": {\"$in\": [");
        for (int i = 0; i < k; i++)
            n += (size_t)snprintf(o + n, cap - n, "%s\"%s\"", i ? ", " : "", TIERS[(at + i) % 4]);
        return n + (size_t)snprintf(o + n, cap - n, "]}}");
    }
    case 1: {
        int k = 3 + (int)(lcg(seed) % 5), at = (int)(lcg(seed) % 10);
        n += (size_t)snprintf(o + n, cap - n, "{\"country\": {\"$in\": [");
        for (int i = 0; i < k; i++)
            n += (size_t)snprintf(o + n, cap - n, "%s\"%s\"", i ? ", " : "", COUNTRIES[(at + i) % 10]);
        return n + (size_t)snprintf(o + n, cap - n, "]}}");
    }
    case 2: {
        int lo = 18 + (int)(lcg(seed) % 33);
        return n + (size_t)snprintf(o + n, cap - n, "{\"age\": {\"$gte\": %d, \"$lte\": %d}}", lo,
                                    lo + 10 + (int)(lcg(seed) % 21));
    }
    case 3:
        return n + (size_t)snprintf(o + n, cap - n, "{\"ltv\": {\"$gte\": %d}}", 50 << (lcg(seed) % 5));
    case 4:
        return n + (size_t)snprintf(o + n, cap - n, "{\"interests\": {\"$elemMatch\": {\"$eq\": \"%s\"}}}",
                                    INTERESTS[lcg(seed) % 8]);
    case 5: {
        static const int d[] = { 30, 90, 180, 365 };
        return n + (size_t)snprintf(o + n, cap - n,
                                    "{\"days_since_purchase\": {\"$exists\": true, \"$lte\": %d}}",
                                    d[lcg(seed) % 4]);
    }
    default:
        return n + (size_t)snprintf(o + n, cap - n, "{\"app_user\": true}");
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: less noise from other tenants */
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long iters = 1000000;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iters = atol(argv[++i]);
    json_error_t je;
    json_t *pj = json_loads(PROFILE, 0, &je);
    struct buf mp = BUF_INIT;
    if (!pj || codec_json_to_msgpack(pj, &mp)) {
        fprintf(stderr, "profile: %s\n", je.text);
        return 1;
    }
    printf("profile: %zu bytes of msgpack, %ld evaluations per run, 5 runs\n\n", mp.len, iters);
    printf("%-58s %10s %10s %8s %7s\n", "condition", "median ns", "fastest", "allocs", "result");
    for (size_t k = 0; k < sizeof CONDS / sizeof CONDS[0]; k++) {
        json_t *cj = json_loads(CONDS[k].cond, 0, &je);
        struct cond *c;
        struct reqerr e = { 0 };
        if (!cj || cond_compile(cj, NULL, &c, &e)) {
            fprintf(stderr, "%s: %s\n", CONDS[k].name, e.message);
            return 1;
        }
        double run[5];
        long allocs = 0;
        int result = cond_eval(c, mp.p, mp.len, NULL);
        for (int r = 0; r < 5; r++) {
            long a0 = n_alloc;
            double t0 = now_ns();
            int acc = 0;
            for (long i = 0; i < iters; i++)
                acc += cond_eval(c, mp.p, mp.len, NULL);
            run[r] = (now_ns() - t0) / (double)iters;
            allocs += n_alloc - a0;
            if (acc != result * iters) {
                fprintf(stderr, "%s: results changed between evaluations\n", CONDS[k].name);
                return 1;
            }
        }
        qsort(run, 5, sizeof run[0], cmp_d);
        printf("%-58s %10.0f %10.0f %8.2f %7d\n", CONDS[k].name, run[2], run[0],
               (double)allocs / (double)(5 * iters), result);
        cond_free(c);
        json_decref(cj);
    }
    /* 200 conditions on one profile (segments at a profile write, audiences
     * at a decide): each read on its own, and through one cond_attrs index */
    {
        enum { NC = 200 };
        static struct cond *many[NC];
        uint64_t seed = 42;
        for (int k = 0; k < NC; k++) {
            char text[512];
            size_t n = (size_t)snprintf(text, sizeof text, "{\"$and\": [");
            int preds = 1 + (int)(lcg(&seed) % 4);
            for (int q = 0; q < preds; q++)
                n += predicate(&seed, text + n, sizeof text - n, q > 0);
            snprintf(text + n, sizeof text - n, "]}");
            json_t *cj = json_loads(text, 0, &je);
            struct reqerr e = { 0 };
            if (!cj || cond_compile(cj, NULL, &many[k], &e)) {
                fprintf(stderr, "generated %s: %s\n", text, e.message);
                return 1;
            }
            json_decref(cj);
        }
        long n = iters / NC > 0 ? iters / NC : 1;
        for (int mode = 0; mode < 2; mode++) {
            double run[5];
            long allocs = 0;
            int matched = 0;
            for (int r = 0; r < 5; r++) {
                long a0 = n_alloc;
                double t0 = now_ns();
                matched = 0;
                for (long i = 0; i < n; i++) {
                    if (mode == 0) {
                        for (int k = 0; k < NC; k++)
                            matched += cond_eval(many[k], mp.p, mp.len, NULL) == 1;
                    } else {
                        struct cond_attrs at;
                        cond_attrs_init(&at, mp.p, mp.len);
                        for (int k = 0; k < NC; k++)
                            matched += cond_eval_attrs(many[k], &at, NULL) == 1;
                        cond_attrs_free(&at);
                    }
                }
                run[r] = (now_ns() - t0) / (double)n;
                allocs += n_alloc - a0;
            }
            qsort(run, 5, sizeof run[0], cmp_d);
            printf("%-58s %10.0f %10.0f %8.2f %7d\n",
                   mode ? "200 conditions, one cond_attrs index (ns per profile)"
                        : "200 conditions, cond_eval each (ns per profile)",
                   run[2], run[0], (double)allocs / (double)(5 * n), (int)(matched / n));
        }
        for (int k = 0; k < NC; k++)
            cond_free(many[k]);
    }
    /* the same first condition when the profile is first decoded to a tree */
    {
        json_t *cj = json_loads(CONDS[0].cond, 0, &je);
        struct cond *c;
        if (cond_compile(cj, NULL, &c, NULL))
            return 1;
        long n = iters / 10 > 0 ? iters / 10 : 1, a0 = n_alloc;
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            json_t *tree = codec_msgpack_to_json(mp.p, mp.len, NULL);
            cond_eval_json(c, tree, NULL);
            json_decref(tree);
        }
        printf("%-58s %10.0f %10s %8.2f\n", "first row, decoding to jansson and back each time",
               (now_ns() - t0) / (double)n, "-", (double)(n_alloc - a0) / (double)n);
        cond_free(c);
        json_decref(cj);
    }
    buf_free(&mp);
    json_decref(pj);
    return 0;
}
