/* http_later.c — answers given later, from the worker's own loop (see
 * http_later in http.h).
 *
 * Why: a redemption is applied by the promotions writer thread together
 * with the others waiting (one store transaction for many).  The worker
 * must not block until its redemption is applied — a blocked worker adds
 * nothing to the next batch — so it leaves the request here and takes the
 * next one.  libevent's requests belong to the worker's event base, so the
 * answer is built and sent on that thread: the writer queues the done
 * request and wakes the worker's event.
 *
 * Each worker has a queue (created on first use, like the held replies'),
 * counting the requests it left here.  A worker that stops marks its
 * queue dead; the queue is freed by whichever of the stop and the last
 * outstanding http_later_ready comes last. */
#include "http/http.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/metrics.h"
#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct laterq;

struct http_later {
    struct laterq *q;
    struct http_req r;  /* what the answer needs; path owned */
    http_later_fn fn;
    void *ud;
    struct http_later *next;
};

struct laterq {
    pthread_mutex_t mu;
    struct http_later *head, **tail;
    struct event *wake;
    long outstanding;   /* handed out, not yet ready */
    int dead;
};

static __thread struct laterq *tl_lq;

/* ---- answers dropped (see http_dropped in http.h) ---- */

static long g_dropped[HTTP_DROP_N];
static const char *const drop_names[HTTP_DROP_N] = {
    [HTTP_DROP_STOPPED] = "worker_stopped",
    [HTTP_DROP_CONN_GONE] = "connection_gone",
};

void http_dropped(enum http_drop why, long n)
{
    if (n > 0 && (unsigned)why < HTTP_DROP_N)
        __atomic_add_fetch(&g_dropped[why], n, __ATOMIC_RELAXED);
}

static void dropped_collector(struct buf *out, void *ud)
{
    (void)ud;
    long total = 0;
    for (int i = 0; i < HTTP_DROP_N; i++)
        total += __atomic_load_n(&g_dropped[i], __ATOMIC_RELAXED);
    buf_printf(out,
               "# HELP promod_http_dropped_answers_total Requests the server took and never answered "
               "(see the reason series).\n"
               "# TYPE promod_http_dropped_answers_total counter\n"
               "promod_http_dropped_answers_total %ld\n"
               "# HELP promod_http_dropped_answers_reason_total Requests never answered, per reason.\n"
               "# TYPE promod_http_dropped_answers_reason_total counter\n",
               total);
    for (int i = 0; i < HTTP_DROP_N; i++)
        buf_printf(out, "promod_http_dropped_answers_reason_total{reason=\"%s\"} %ld\n", drop_names[i],
                   __atomic_load_n(&g_dropped[i], __ATOMIC_RELAXED));
}

void http_dropped_metrics_init(void) { metrics_register(dropped_collector, NULL); }

static void later_free(struct http_later *l)
{
    free(l->r.path);
    free(l);
}

static void queue_free(struct laterq *q)
{
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* the worker thread: answer what is ready */
static void ready_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct laterq *q = arg;
    pthread_mutex_lock(&q->mu);
    struct http_later *l = q->head;
    q->head = NULL;
    q->tail = &q->head;
    pthread_mutex_unlock(&q->mu);
    while (l) {
        struct http_later *next = l->next;
        l->fn(&l->r, l->ud);
        if (!l->r.status)
            http_reply_error(&l->r, 500, "internal", "handler did not answer", NULL);
        if (l->r.finished)
            l->r.finished(&l->r);
        later_free(l);
        l = next;
    }
}

static struct laterq *queue_here(struct http_req *r)
{
    if (tl_lq)
        return tl_lq;
    struct evhttp_connection *con = evhttp_request_get_connection(r->ev);
    struct event_base *base = con ? evhttp_connection_get_base(con) : NULL;
    struct laterq *q = base ? calloc(1, sizeof *q) : NULL;
    if (!q)
        return NULL;
    pthread_mutex_init(&q->mu, NULL);
    q->tail = &q->head;
    q->wake = event_new(base, -1, 0, ready_cb, q);
    if (!q->wake) {
        queue_free(q);
        return NULL;
    }
    tl_lq = q;
    return q;
}

struct http_later *http_later(struct http_req *r, http_later_fn fn, void *ud)
{
    struct laterq *q = queue_here(r);
    struct http_later *l = q ? calloc(1, sizeof *l) : NULL;
    if (!l)
        return NULL;
    l->q = q;
    l->fn = fn;
    l->ud = ud;
    l->r = (struct http_req){ .ev = r->ev, .worker = r->worker, .method = r->method,
                              .path = r->path ? strdup(r->path) : NULL, .want_msgpack = r->want_msgpack,
                              .key = r->key, .route = r->route, .t0 = r->t0,
                              .finished = r->finished };
    r->later = 1;
    pthread_mutex_lock(&q->mu);
    q->outstanding++;
    pthread_mutex_unlock(&q->mu);
    return l;
}

void http_later_ready(struct http_later *l)
{
    struct laterq *q = l->q;
    pthread_mutex_lock(&q->mu);
    q->outstanding--;
    if (q->dead) {
        int last = q->outstanding == 0;
        pthread_mutex_unlock(&q->mu);
        http_dropped(HTTP_DROP_STOPPED, 1);
        l->fn(NULL, l->ud);
        later_free(l);
        if (last)
            queue_free(q);
        return;
    }
    l->next = NULL;
    *q->tail = l;
    q->tail = &l->next;
    event_active(q->wake, EV_READ, 0);
    pthread_mutex_unlock(&q->mu);
}

void http_later_thread_stop(void)
{
    struct laterq *q = tl_lq;
    if (!q)
        return;
    tl_lq = NULL;
    pthread_mutex_lock(&q->mu);
    q->dead = 1;
    struct http_later *l = q->head;
    q->head = NULL;
    q->tail = &q->head;
    int last = q->outstanding == 0;
    struct event *wake = q->wake;
    q->wake = NULL;
    pthread_mutex_unlock(&q->mu);
    event_free(wake);
    int n = 0;
    for (struct http_later *next; l; l = next) {
        next = l->next;
        l->fn(NULL, l->ud);
        later_free(l);
        n++;
    }
    if (n)
        log_warn("answers dropped at shutdown", "n=%d", n);
    http_dropped(HTTP_DROP_STOPPED, n);
    if (last)
        queue_free(q);
}
