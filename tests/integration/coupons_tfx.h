/*
 * coupons_tfx.h — helpers the coupon and loyalty suites share: a server
 * with a campaign file, JSON requests built with printf, many requests
 * from many threads released at once.
 */
#ifndef PROMOD_COUPONS_TFX_H
#define PROMOD_COUPONS_TFX_H
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server srv;

/* a campaign file: every customer eligible on web; `extra` = more fields */
__attribute__((unused)) static void ctfx_campaign(const char *id, const char *extra)
{
    char path[160], src[2048];
    snprintf(path, sizeof path, "rules/%s.lua", id);
    snprintf(src, sizeof src,
             "return {\n  id = \"%s\", channels = { \"web\" }, priority = 10,\n  %s\n"
             "  variants = { { id = \"A\", weight = 1, content = { headline = \"Hi\" } } },\n"
             "  eligible = function(p, ctx) return true end,\n}\n",
             id, extra ? extra : "");
    tfx_write(&srv, path, src);
}

/* POST (or another method) with a printf-built JSON body; returns the status */
__attribute__((format(printf, 4, 5)))
static int ctfx_post(struct tfx_resp *r, const char *method, const char *path, const char *fmt, ...)
{
    char body[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    return tfx_req(&srv, method, path, fmt ? body : NULL, r);
}

/* Requests that got no answer at all (status 0, or an answer cut short),
 * with the first one's cause (tfx_fail_describe).  A checkout client
 * would resend them; these tests do not, so that every race test asserts
 * that the server answers every request it was sent (ctfx_assert_no_lost). */
__attribute__((unused)) static int ctfx_lost_answers;
__attribute__((unused)) static char ctfx_first_lost[256];

/* POST with a printf-built body, once; a lost answer is counted, its
 * cause logged, and the status (0) returned */
__attribute__((unused, format(printf, 3, 4))) static int ctfx_post_counted(struct tfx_resp *r,
                                                                             const char *path,
                                                                             const char *fmt, ...)
{
    char body[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    tfx_req(&srv, "POST", path, body, r);
    if (r->status != 0 && r->fail == TFX_FAIL_NONE)
        return r->status;
    char why[200];
    tfx_fail_describe(r, why, sizeof why);
    if (__atomic_fetch_add(&ctfx_lost_answers, 1, __ATOMIC_RELAXED) == 0)
        snprintf(ctfx_first_lost, sizeof ctfx_first_lost, "%s %s: %s", "POST", path, why);
    fprintf(stderr, "LOST ANSWER POST %s (status %d): %s\n", path, r->status, why);
    return r->status;
}

/* every request got its answer, and the server dropped none (its
 * promod_http_dropped_answers_total is 0) */
__attribute__((unused)) static void ctfx_assert_no_lost(void)
{
    cr_assert_eq(ctfx_lost_answers, 0, "%d requests got no (whole) answer; first: %s", ctfx_lost_answers,
                 ctfx_first_lost);
    struct tfx_resp m;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &m), 200);
    double dropped = -1;
    cr_assert(tfx_metric(m.body, "promod_http_dropped_answers_total", "", &dropped),
              "no promod_http_dropped_answers_total in /metrics");
    cr_assert_eq(dropped, 0, "the server dropped %.0f answers", dropped);
    tfx_resp_free(&m);
}

/* generate `n` codes in campaign `camp` with more body fields; returns the
 * reply (caller frees) */
__attribute__((unused)) static json_t *ctfx_generate(const char *camp, int n, const char *more)
{
    char path[160];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/coupons", camp);
    struct tfx_resp r;
    ctfx_post(&r, "POST", path, "{\"generate\":{\"count\":%d,\"length\":10}%s%s}", n,
              more ? "," : "", more ? more : "");
    cr_assert_eq(r.status, 201, "generate: %d %s", r.status, r.body);
    json_t *o = json_incref(r.json);
    tfx_resp_free(&r);
    return o;
}

__attribute__((unused)) static const char *ctfx_code(json_t *gen, size_t i)
{
    return json_string_value(json_array_get(json_object_get(gen, "codes"), i));
}

/* GET /api/v1/campaigns/{camp}/coupons */
__attribute__((unused)) static json_t *ctfx_stats(const char *camp)
{
    char path[160];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/coupons", camp);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", r.body);
    json_t *o = json_incref(r.json);
    tfx_resp_free(&r);
    return o;
}

/* thousandths of a JSON money value (integer or real) */
__attribute__((unused)) static long long ctfx_milli(json_t *v)
{
    double d = json_number_value(v);
    return (long long)(d * 1000.0 + (d >= 0 ? 0.5 : -0.5));
}

/* Run fn(i) for i in [0, n) on `threads` threads, all released together. */
struct ctfx_pool {
    int n, next;
    void (*fn)(int i, void *ud);
    void *ud;
    pthread_barrier_t go;
};

static void *ctfx_worker(void *arg)
{
    struct ctfx_pool *p = arg;
    pthread_barrier_wait(&p->go);
    for (;;) {
        int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->n)
            break;
        p->fn(i, p->ud);
    }
    return NULL;
}

__attribute__((unused)) static void ctfx_run(int n, int threads, void (*fn)(int, void *), void *ud)
{
    struct ctfx_pool p = { .n = n, .fn = fn, .ud = ud };
    pthread_barrier_init(&p.go, NULL, (unsigned)threads);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    for (int i = 0; i < threads; i++)
        cr_assert_eq(pthread_create(&th[i], &a, ctfx_worker, &p), 0);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    pthread_attr_destroy(&a);
    pthread_barrier_destroy(&p.go);
    free(th);
}

#endif
