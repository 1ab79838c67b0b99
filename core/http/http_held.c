/* http_held.c — replies held until their commit is on disk (see
 * http_hold_until_synced in http.h).
 *
 * Why: a durable commit waits for an fsync (milliseconds on this kind of
 * disk).  Blocking the worker thread for it would cap a worker at one
 * acknowledged write per fsync; holding the reply instead lets the worker
 * take the next requests, whose commits join the same flush.
 *
 * Each worker thread has a queue of held replies and an event on its own
 * loop.  The store calls on_sync() on its syncer thread after every flush;
 * it wakes each worker that holds something, and the worker sends the
 * replies whose ticket the flush covered.  A reply whose ticket is already
 * on disk when it is built goes out at once.  libevent keeps a request
 * whose connection closed meanwhile until it is answered (then frees it),
 * so a held pointer stays valid. */
#include "http/http.h"
#include "base/log.h"
#include "store/store.h"
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>
#include <stdlib.h>

struct held {
    struct evhttp_request *ev;
    int status;
    const char *reason;
    struct evbuffer *body;
    uint64_t ticket;
    struct held *next;
};

struct heldq {
    pthread_mutex_t mu;
    struct held *head, **tail;
    struct event *wake;
    struct store *st;
};

#define MAX_QUEUES 64

static __thread struct heldq *tl_q;
static struct heldq *g_q[MAX_QUEUES];
static int g_nq;
static struct store *g_hooked;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

/* the syncer thread, after a flush */
static void on_sync(void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_nq; i++) {
        struct heldq *q = g_q[i];
        pthread_mutex_lock(&q->mu);
        if (q->head)
            event_active(q->wake, EV_READ, 0);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&g_mu);
}

/* the worker thread: send what the flushes covered */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct heldq *q = arg;
    uint64_t synced = store_synced(q->st);
    struct held *ready = NULL, **rt = &ready;
    pthread_mutex_lock(&q->mu);
    for (struct held **p = &q->head; *p;) {
        struct held *h = *p;
        if (h->ticket <= synced) {
            *p = h->next;
            h->next = NULL;
            *rt = h;
            rt = &h->next;
        } else {
            p = &h->next;
        }
    }
    q->tail = &q->head;
    while (*q->tail)
        q->tail = &(*q->tail)->next;
    pthread_mutex_unlock(&q->mu);
    for (struct held *h = ready, *n; h; h = n) {
        n = h->next;
        if (!evhttp_request_get_connection(h->ev))
            http_dropped(HTTP_DROP_CONN_GONE, 1);
        evhttp_send_reply(h->ev, h->status, h->reason, h->body);
        evbuffer_free(h->body);
        free(h);
    }
}

void http_hold_until_synced(struct http_req *r, struct store *s, uint64_t ticket)
{
    r->hold_store = s;
    r->hold_ticket = ticket;
}

static struct heldq *queue_for(struct http_req *r)
{
    if (tl_q)
        return tl_q->st == r->hold_store ? tl_q : NULL;
    struct evhttp_connection *con = evhttp_request_get_connection(r->ev);
    struct event_base *base = con ? evhttp_connection_get_base(con) : NULL;
    if (!base)
        return NULL;
    struct heldq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    pthread_mutex_init(&q->mu, NULL);
    q->tail = &q->head;
    q->st = r->hold_store;
    q->wake = event_new(base, -1, 0, flush_cb, q);
    pthread_mutex_lock(&g_mu);
    if (!q->wake || g_nq == MAX_QUEUES) {
        pthread_mutex_unlock(&g_mu);
        if (q->wake)
            event_free(q->wake);
        pthread_mutex_destroy(&q->mu);
        free(q);
        return NULL;
    }
    g_q[g_nq++] = q;
    if (g_hooked != q->st) {
        store_set_sync_hook(q->st, on_sync, NULL);
        g_hooked = q->st;
    }
    pthread_mutex_unlock(&g_mu);
    tl_q = q;
    return q;
}

int http_held_defer(struct http_req *r, int status, const char *reason, struct evbuffer *body)
{
    if (store_synced(r->hold_store) >= r->hold_ticket)
        return 0;
    struct heldq *q = queue_for(r);
    struct held *h = q ? malloc(sizeof *h) : NULL;
    if (!h) {
        /* no queue: wait here, as a blocking durable commit would */
        while (store_synced(r->hold_store) < r->hold_ticket)
            store_sync_wait(r->hold_store, r->hold_ticket);
        return 0;
    }
    *h = (struct held){ r->ev, status, reason, body, r->hold_ticket, NULL };
    pthread_mutex_lock(&q->mu);
    *q->tail = h;
    q->tail = &h->next;
    pthread_mutex_unlock(&q->mu);
    /* a flush that finished between the check above and the append saw an
     * empty queue: look again, after the append */
    if (store_synced(r->hold_store) >= r->hold_ticket)
        event_active(q->wake, EV_READ, 0);
    return 1;
}

void http_held_thread_stop(void)
{
    http_later_thread_stop();
    struct heldq *q = tl_q;
    if (!q)
        return;
    tl_q = NULL;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_nq; i++)
        if (g_q[i] == q) {
            g_q[i] = g_q[--g_nq];
            break;
        }
    pthread_mutex_unlock(&g_mu);
    int n = 0;
    for (struct held *h = q->head, *nx; h; h = nx) {
        nx = h->next;
        evbuffer_free(h->body); /* the request itself goes with its connection */
        free(h);
        n++;
    }
    if (n)
        log_warn("held replies dropped at shutdown", "n=%d", n);
    http_dropped(HTTP_DROP_STOPPED, n);
    event_free(q->wake);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
