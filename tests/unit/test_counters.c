/* test_counters.c — per-campaign counters: adding, iterating, limits, threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/counters.h"

TestSuite(counters, .timeout = 30);

/* The values of `id` (nvals of them), or 0 when it has no slot. */
static int find(const struct counters *t, const char *want, long *vals)
{
    const char *id;
    int pos = 0;
    while (counters_next(t, &pos, &id, vals))
        if (!strcmp(id, want))
            return 1;
    return 0;
}

Test(counters, add_and_iterate)
{
    struct counters *t = counters_new(3);
    cr_assert_not_null(t);
    counters_add(t, "spring", 0, 2);
    counters_add(t, "spring", 2, 5);
    counters_add(t, "spring", 0, 1);
    counters_add(t, "autumn", 1, 7);
    counters_add(t, "autumn", 3, 1);  /* no such value: ignored */
    counters_add(t, "autumn", -1, 1);
    counters_add(t, "", 0, 1);        /* no id: ignored */
    counters_add(NULL, "spring", 0, 1);
    long v[3];
    cr_assert(find(t, "spring", v));
    cr_assert_eq(v[0], 3);
    cr_assert_eq(v[1], 0);
    cr_assert_eq(v[2], 5);
    cr_assert(find(t, "autumn", v));
    cr_assert_eq(v[0], 0);
    cr_assert_eq(v[1], 7);
    cr_assert_eq(v[2], 0);
    cr_assert(!find(t, "winter", v));
    int n = 0, pos = 0;
    const char *id;
    while (counters_next(t, &pos, &id, v))
        n++;
    cr_assert_eq(n, 2, "one slot per id");
    pos = 0;
    cr_assert(!counters_next(NULL, &pos, &id, v));
    cr_assert_null(counters_new(0));
    cr_assert_null(counters_new(65));
    counters_free(t);
}

Test(counters, ids_up_to_131_bytes)
{
    struct counters *t = counters_new(1);
    char id[200];
    memset(id, 'x', sizeof id);
    id[131] = 0;
    counters_add(t, id, 0, 1);
    long v;
    cr_assert(find(t, id, &v), "131 bytes fit");
    id[131] = 'x';
    id[132] = 0;
    counters_add(t, id, 0, 1);
    cr_assert(!find(t, id, &v), "132 bytes are not counted");
    counters_free(t);
}

Test(counters, many_ids_then_full)
{
    struct counters *t = counters_new(1);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        counters_add(t, id, 0, i);
    }
    long v;
    for (int i = 0; i < 5000; i += 97) {
        snprintf(id, sizeof id, "c%d", i);
        cr_assert(find(t, id, &v), "%s", id);
        cr_assert_eq(v, i);
    }
    /* past the table's capacity further ids are dropped, never misfiled */
    for (int i = 5000; i < 20000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        counters_add(t, id, 0, i);
    }
    const char *got;
    int pos = 0, n = 0;
    while (counters_next(t, &pos, &got, &v)) {
        n++;
        cr_assert_eq(v, atol(got + 1), "%s holds another id's count", got);
    }
    cr_assert_leq(n, 8192);
    cr_assert_geq(n, 5000);
    counters_free(t);
}

struct worker {
    struct counters *t;
    int k;
};

static void *adder(void *arg)
{
    struct worker *w = arg;
    char id[16];
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "id%d", i % 50);
        counters_add(w->t, id, w->k, 1);
    }
    return NULL;
}

Test(counters, concurrent_adds_are_all_counted)
{
    struct counters *t = counters_new(2);
    pthread_t th[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){ t, i % 2 };
        cr_assert_eq(pthread_create(&th[i], NULL, adder, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    long total[2] = { 0, 0 }, v[2];
    const char *id;
    int pos = 0, n = 0;
    while (counters_next(t, &pos, &id, v)) {
        n++;
        total[0] += v[0];
        total[1] += v[1];
    }
    cr_assert_eq(n, 50, "each id claimed one slot");
    cr_assert_eq(total[0], 40000);
    cr_assert_eq(total[1], 40000);
    counters_free(t);
}
