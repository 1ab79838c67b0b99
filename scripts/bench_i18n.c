/*
 * bench_i18n.c — microseconds per i18n_format call (base/i18n.h): money,
 * numbers and dates from the per-thread formatter cache, and with the cache
 * defeated (more distinct keys than it holds, so every call opens an ICU
 * formatter).  Run by scripts/bench-i18n.sh; five runs, median and fastest.
 */
#include "base/buf.h"
#include "base/i18n.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long n = 200000;
    if (argc == 3 && !strcmp(argv[1], "--iterations"))
        n = atol(argv[2]);
    if (n < 100)
        n = 100;
    static const char *const locs[] = { "fr", "de", "en-US", "ja", "ar", "es", "it", "pt", "nl", "sv" };
    struct { const char *name; enum i18n_kind k; const char *arg; int rotate; } rows[] = {
        { "currency:EUR fr (cached)", I18N_CURRENCY, "EUR", 0 },
        { "number:2 fr (cached)", I18N_NUMBER, "2", 0 },
        { "date:medium fr (cached)", I18N_DATE, "medium", 0 },
        { "number, 40 keys > cache (opens)", I18N_NUMBER, NULL, 1 },
    };
    struct buf b = BUF_INIT;
    printf("%-34s %10s %10s\n", "call", "median µs", "best µs");
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        double t[5];
        for (int run = 0; run < 5; run++) {
            double t0 = now_s();
            for (long i = 0; i < n; i++) {
                buf_reset(&b);
                const char *loc = rows[r].rotate ? locs[i % 10] : "fr";
                char d[24];
                snprintf(d, sizeof d, "%ld", rows[r].rotate ? (i / 10) % 4 : 2);
                const char *arg = rows[r].rotate ? d : rows[r].arg;
                if (i18n_format(rows[r].k, loc, arg, 1773144000.0 + (double)i, NULL, &b)) {
                    fprintf(stderr, "format failed: %s\n", rows[r].name);
                    return 1;
                }
            }
            t[run] = (now_s() - t0) / (double)n * 1e6;
        }
        qsort(t, 5, sizeof t[0], cmp);
        printf("%-34s %10.2f %10.2f\n", rows[r].name, t[2], t[0]);
    }
    buf_free(&b);
    return 0;
}
