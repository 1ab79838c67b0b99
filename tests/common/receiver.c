/* receiver.c — the test HTTP receiver (see receiver.h). */
#include "receiver.h"
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BODY_KEEP (64 * 1024)

struct stalled {
    struct evhttp_request *req;
    size_t idx;
    struct stalled *next;
};

struct rcv {
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
    struct event *kick;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    enum rcv_mode mode;
    int status, count, delay_ms, keep_bodies, release;
    struct rcv_entry *e;
    size_t n, cap;
    struct stalled *stalled;
    SSL_CTX *ssl;
    char **okset;            /* keys answered 2xx (open addressing) */
    size_t okcap, okn;
};

static uint64_t hstr(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

/* Add a key to the 2xx set (mu held). */
static void ok_add(struct rcv *r, const char *key)
{
    if (!key[0])
        return;
    if ((r->okn + 1) * 2 > r->okcap) {
        size_t ncap = r->okcap ? r->okcap * 2 : 4096;
        char **ns = calloc(ncap, sizeof *ns);
        for (size_t i = 0; i < r->okcap; i++)
            if (r->okset[i]) {
                size_t j = hstr(r->okset[i]) & (ncap - 1);
                while (ns[j])
                    j = (j + 1) & (ncap - 1);
                ns[j] = r->okset[i];
            }
        free(r->okset);
        r->okset = ns;
        r->okcap = ncap;
    }
    size_t j = hstr(key) & (r->okcap - 1);
    while (r->okset[j]) {
        if (!strcmp(r->okset[j], key))
            return;
        j = (j + 1) & (r->okcap - 1);
    }
    r->okset[j] = strdup(key);
    r->okn++;
}

int64_t rcv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void answer(struct rcv *r, struct evhttp_request *req, size_t idx, int status)
{
    struct evbuffer *b = evbuffer_new();
    if (status >= 200 && status < 300)
        evbuffer_add_printf(b, "{\"ok\":true}");
    else
        evbuffer_add_printf(b, "{\"error\":\"told to fail with %d\"}", status);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, status < 400 ? "OK" : "Error", b);
    evbuffer_free(b);
    pthread_mutex_lock(&r->mu);
    if (idx < r->n) {
        r->e[idx].status = status;
        if (status >= 200 && status < 300)
            ok_add(r, r->e[idx].key);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

struct delayed {
    struct rcv *r;
    struct evhttp_request *req;
    size_t idx;
    int status;
    struct event *ev;
};

static void on_delayed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct delayed *d = arg;
    answer(d->r, d->req, d->idx, d->status);
    event_free(d->ev);
    free(d);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct rcv *r = arg;
    struct rcv_entry e;
    memset(&e, 0, sizeof e);
    static const char *methods[] = { "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE",
                                     "CONNECT", "PATCH" };
    enum evhttp_cmd_type t = evhttp_request_get_command(req);
    for (int i = 0; i < 9; i++)
        if (t == (enum evhttp_cmd_type)(1 << i))
            snprintf(e.method, sizeof e.method, "%s", methods[i]);
    snprintf(e.path, sizeof e.path, "%s", evhttp_request_get_uri(req));
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    size_t hl = 0;
    for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next) {
        if (!strcasecmp(kv->key, "Idempotency-Key"))
            snprintf(e.key, sizeof e.key, "%s", kv->value);
        int n = snprintf(e.headers + hl, sizeof e.headers - hl, "%s: %s\n", kv->key, kv->value);
        if (n > 0 && hl + (size_t)n < sizeof e.headers)
            hl += (size_t)n;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    e.body_len = evbuffer_get_length(in);
    e.t_ms = rcv_now_ms();
    pthread_mutex_lock(&r->mu);
    if (r->keep_bodies) {
        size_t keep = e.body_len < BODY_KEEP ? e.body_len : BODY_KEEP;
        e.body = malloc(keep + 1);
        if (e.body) {
            evbuffer_copyout(in, e.body, keep);
            e.body[keep] = 0;
        }
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->e = realloc(r->e, r->cap * sizeof *r->e);
    }
    size_t idx = r->n++;
    r->e[idx] = e;
    enum rcv_mode mode = r->mode;
    int status = r->status, delay = r->delay_ms;
    if (r->count > 0 && --r->count == 0) {
        r->mode = RCV_OK;
        r->status = 200;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (mode == RCV_STALL) {
        struct stalled *s = malloc(sizeof *s);
        s->req = req;
        s->idx = idx;
        pthread_mutex_lock(&r->mu);
        s->next = r->stalled;
        r->stalled = s;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    if (mode == RCV_CLOSE) {
        /* shut the socket: libevent notices the dead connection and frees
         * it (and this request) from its own callbacks */
        struct evhttp_connection *c = evhttp_request_get_connection(req);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(c);
        shutdown(bufferevent_getfd(bev), SHUT_RDWR);
        return;
    }
    int st = mode == RCV_STATUS ? status : 200;
    if (delay > 0) {
        struct delayed *d = malloc(sizeof *d);
        d->r = r;
        d->req = req;
        d->idx = idx;
        d->status = st;
        d->ev = evtimer_new(r->base, on_delayed, d);
        struct timeval tv = { delay / 1000, (delay % 1000) * 1000 };
        evtimer_add(d->ev, &tv);
        return;
    }
    answer(r, req, idx, st);
}

/* Runs on the server thread when the test asks to release stalled requests. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rcv *r = arg;
    pthread_mutex_lock(&r->mu);
    struct stalled *s = r->release ? r->stalled : NULL;
    if (r->release)
        r->stalled = NULL;
    r->release = 0;
    pthread_mutex_unlock(&r->mu);
    while (s) {
        struct stalled *n = s->next;
        answer(r, s->req, s->idx, 200);
        free(s);
        s = n;
    }
}

static void *rcv_main(void *arg)
{
    struct rcv *r = arg;
    event_base_dispatch(r->base);
    return NULL;
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    struct rcv *r = arg;
    return bufferevent_openssl_socket_new(base, -1, SSL_new(r->ssl), BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static struct rcv *start(int port, SSL_CTX *ssl);

struct rcv *rcv_start(int port) { return start(port, NULL); }

struct rcv *rcv_start_tls(int port, const char *cert_pem, const char *key_pem)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert_pem) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_pem, SSL_FILETYPE_PEM) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct rcv *r = start(port, ctx);
    if (!r)
        SSL_CTX_free(ctx);
    return r;
}

static struct rcv *start(int port, SSL_CTX *ssl)
{
    static int threads;
    if (!threads) {
        evthread_use_pthreads();
        threads = 1;
    }
    struct rcv *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->keep_bodies = 1;
    r->status = 200;
    r->base = event_base_new();
    r->http = evhttp_new(r->base);
    evhttp_set_allowed_methods(r->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE);
    evhttp_set_max_body_size(r->http, 8 << 20);
    evhttp_set_gencb(r->http, on_request, r);
    r->ssl = ssl;
    if (ssl)
        evhttp_set_bevcb(r->http, tls_bev, r);
    struct evhttp_bound_socket *bs = NULL;
    for (int tries = 0; tries < 100 && !bs; tries++) {
        bs = evhttp_bind_socket_with_handle(r->http, "127.0.0.1", (ev_uint16_t)port);
        if (!bs && port)
            usleep(20000); /* the port may still be closing */
    }
    if (!bs) {
        evhttp_free(r->http);
        event_base_free(r->base);
        free(r);
        return NULL;
    }
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&a, &al);
    r->port = ntohs(a.sin_port);
    r->kick = event_new(r->base, -1, EV_PERSIST, on_kick, r);
    event_add(r->kick, NULL);
    pthread_create(&r->thread, NULL, rcv_main, r);
    return r;
}

int rcv_port(const struct rcv *r) { return r->port; }

void rcv_stop(struct rcv *r)
{
    if (!r)
        return;
    event_base_loopexit(r->base, NULL);
    pthread_join(r->thread, NULL);
    while (r->stalled) {
        struct stalled *s = r->stalled;
        r->stalled = s->next;
        free(s);
    }
    event_free(r->kick);
    evhttp_free(r->http);
    event_base_free(r->base);
    if (r->ssl)
        SSL_CTX_free(r->ssl);
    rcv_clear(r);
    free(r->e);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void rcv_set(struct rcv *r, enum rcv_mode mode, int status, int count)
{
    pthread_mutex_lock(&r->mu);
    r->mode = mode;
    r->status = status ? status : 200;
    r->count = count;
    pthread_mutex_unlock(&r->mu);
}

void rcv_release(struct rcv *r)
{
    pthread_mutex_lock(&r->mu);
    r->release = 1;
    pthread_mutex_unlock(&r->mu);
    event_active(r->kick, EV_TIMEOUT, 0);
}

void rcv_set_delay(struct rcv *r, int ms)
{
    pthread_mutex_lock(&r->mu);
    r->delay_ms = ms;
    pthread_mutex_unlock(&r->mu);
}

void rcv_keep_bodies(struct rcv *r, int on)
{
    pthread_mutex_lock(&r->mu);
    r->keep_bodies = on;
    pthread_mutex_unlock(&r->mu);
}

size_t rcv_count(struct rcv *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static size_t unique_ok_locked(struct rcv *r) { return r->okn; }

size_t rcv_unique_ok(struct rcv *r)
{
    pthread_mutex_lock(&r->mu);
    size_t u = unique_ok_locked(r);
    pthread_mutex_unlock(&r->mu);
    return u;
}

size_t rcv_count_key(struct rcv *r, const char *key)
{
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += !strcmp(r->e[i].key, key);
    pthread_mutex_unlock(&r->mu);
    return n;
}

int rcv_get(struct rcv *r, size_t i, struct rcv_entry *out)
{
    pthread_mutex_lock(&r->mu);
    if (i >= r->n) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    *out = r->e[i];
    out->body = r->e[i].body ? strdup(r->e[i].body) : strdup("");
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void rcv_entry_free(struct rcv_entry *e)
{
    free(e->body);
    e->body = NULL;
}

static void deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

size_t rcv_wait(struct rcv *r, size_t n, int timeout_ms)
{
    struct timespec ts;
    deadline(&ts, timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->n < n)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts))
            break;
    size_t got = r->n;
    pthread_mutex_unlock(&r->mu);
    return got;
}

size_t rcv_wait_unique(struct rcv *r, size_t n, int timeout_ms)
{
    int64_t end = rcv_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        size_t u = unique_ok_locked(r);
        if (u >= n || rcv_now_ms() >= end) {
            pthread_mutex_unlock(&r->mu);
            return u;
        }
        struct timespec ts;
        deadline(&ts, 50);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        pthread_mutex_unlock(&r->mu);
    }
}

void rcv_clear(struct rcv *r)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        free(r->e[i].body);
    r->n = 0;
    for (size_t i = 0; i < r->okcap; i++)
        free(r->okset[i]);
    free(r->okset);
    r->okset = NULL;
    r->okcap = r->okn = 0;
    pthread_mutex_unlock(&r->mu);
}
