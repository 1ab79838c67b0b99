/*
 * server.c — listener, worker threads, dispatch chain (refusals from the
 * reader → route → auth → limits → handler), metrics and access log.
 */
#include "http/server.h"
#include "base/clock.h"
#include "base/err.h"
#include "http/auth.h"
#include "http/http.h"
#include "base/log.h"
#include "base/metrics.h"
#include "http/ratelimit.h"
#include "http/router.h"
#include "http/tls.h"
#include "http/wire.h"
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct server {
    const struct config *cfg;
    struct server_opts opts;
    int *fds;          /* one listening socket per worker (SO_REUSEPORT) */
    int nfds;
    int port;
    int nworkers;
    struct worker *workers;
    struct worker ops;  /* the ops thread (ops_port), or zeroed */
    int ops_fd, ops_port;
    struct event_base *main_base;
    struct event *sigint, *sigterm, *sighup, *stop_ev;
    pthread_barrier_t ready;
    int init_failed;
};

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a);
    }
    return 0;
}

static int listen_one(const struct addrinfo *ai, int port, int reuseport, const char *host, int backlog)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct sockaddr_storage ss;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) || listen(fd, backlog)) {
        int e = errno;
        log_error("cannot listen", "host=\"%s\" port=%d err=\"%s\"", host, port, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* The accept queue (listen_backlog, 4096 by default; Linux caps it at
 * net.core.somaxconn, 4096 on current kernels): a burst of new connections
 * larger than the queue of a worker busy in a hook overflows it, and the
 * kernel then drops handshakes (ListenOverflows), so the client's connect
 * or first request waits for retransmissions (1 s, 2 s, ...) and may run
 * into header_timeout.  Was 1024.
 *
 * One listening socket per worker, joined with SO_REUSEPORT, so the kernel
 * spreads new connections over the workers.  (With one shared socket the
 * first worker to wake accepts every pending connection: a load generator
 * opening 32 connections at once put all 32 on one worker and left the
 * other core idle.)  SO_REUSEPORT would also let a second server bind the
 * same port and silently take half the connections, so the port is first
 * claimed by a plain socket: if that fails, someone already serves it. */
static int bind_socket(struct server *s, const char *host, int port)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc) {
        log_error("cannot resolve listen address", "host=\"%s\" err=\"%s\"", host, gai_strerror(rc));
        return ERR_INVAL;
    }
    if (s->cfg->nkeys == 0 && !is_loopback(res->ai_addr)) {
        log_error("refusing to listen beyond loopback without API keys",
                  "host=\"%s\" hint=\"configure api_keys or listen on 127.0.0.1\"", host);
        freeaddrinfo(res);
        return ERR_INVAL;
    }
    if (!is_loopback(res->ai_addr) && !s->cfg->tls_cert) {
        if (!s->cfg->insecure_http) {
            log_error("refusing to listen beyond loopback with API keys over plain HTTP",
                      "host=\"%s\" hint=\"configure tls = { cert = ..., key = ... }, or set "
                      "insecure_http = true behind a TLS-terminating proxy\"",
                      host);
            freeaddrinfo(res);
            return ERR_INVAL;
        }
        log_warn("INSECURE: serving plain HTTP beyond loopback (insecure_http = true); API keys "
                 "and customer data cross the network in clear text",
                 "host=\"%s\"", host);
    }
    int n = s->nworkers > 1 ? s->nworkers : 1;
    s->fds = malloc(sizeof *s->fds * (size_t)n);
    if (!s->fds) {
        freeaddrinfo(res);
        return ERR_NOMEM;
    }
    if (port != 0 && n > 1) {
        int probe = listen_one(res, port, 0, host, 16);
        if (probe < 0) {
            freeaddrinfo(res);
            return probe;
        }
        close(probe);
    }
    for (int i = 0; i < n; i++) {
        int fd = listen_one(res, i == 0 ? port : s->port, n > 1, host, s->cfg->listen_backlog);
        if (fd < 0) {
            freeaddrinfo(res);
            return fd;
        }
        s->fds[s->nfds++] = fd;
        if (i == 0)
            s->port = bound_port(fd);
    }
    if (s->cfg->ops_port >= 0) {
        s->ops_fd = listen_one(res, s->cfg->ops_port, 0, host, 128);
        if (s->ops_fd < 0) {
            int e = s->ops_fd;
            s->ops_fd = -1;
            freeaddrinfo(res);
            return e;
        }
        s->ops_port = bound_port(s->ops_fd);
    }
    freeaddrinfo(res);
    return 0;
}

static enum http_method map_method(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return HTTP_GET;
    case EVHTTP_REQ_POST: return HTTP_POST;
    case EVHTTP_REQ_PUT: return HTTP_PUT;
    case EVHTTP_REQ_PATCH: return HTTP_PATCH;
    case EVHTTP_REQ_DELETE: return HTTP_DELETE;
    case EVHTTP_REQ_HEAD: return HTTP_HEAD;
    case EVHTTP_REQ_OPTIONS: return HTTP_OPTIONS;
    default: return 0;
    }
}

static const char *method_name(enum http_method m)
{
    switch (m) {
    case HTTP_GET: return "GET";
    case HTTP_POST: return "POST";
    case HTTP_PUT: return "PUT";
    case HTTP_PATCH: return "PATCH";
    case HTTP_DELETE: return "DELETE";
    case HTTP_HEAD: return "HEAD";
    case HTTP_OPTIONS: return "OPTIONS";
    }
    return "?";
}

static void allow_header(struct http_req *r, int allowed)
{
    char buf[128] = "";
    for (int m = 1; m <= HTTP_OPTIONS; m <<= 1)
        if (allowed & m) {
            if (*buf)
                strcat(buf, ", ");
            strcat(buf, method_name((enum http_method)m));
        }
    http_add_header(r, "Allow", buf);
}

static int ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* The one entry point for every request: the chain of claimants. */
#define MAX_COUNTED_WORKERS 64
static long g_worker_reqs[MAX_COUNTED_WORKERS];
static int g_counted_workers;

/* A request is answered: its route/status series and the access log (at
 * the end of dispatch, or when an answer given later went out). */
static const struct config *g_log_cfg;
static void request_finished(struct http_req *r)
{
    uint64_t ns = clock_mono_ns() - r->t0;
    router_metrics_observe(r->route, r->status, ns);
    if (g_log_cfg && g_log_cfg->access_log) {
        const struct router_route *x = router_get(r->route);
        log_info("access", "method=%s path=\"%.200s\" route=\"%s\" status=%d us=%llu key=%s",
                 method_name(r->method), r->path ? r->path : "?", x ? x->pattern : "-", r->status,
                 (unsigned long long)(ns / 1000), r->key ? r->key->id : "-");
    }
}

static void dispatch(struct evhttp_request *ev, void *arg)
{
    struct worker *w = arg;
    const struct config *cfg = w->srv->cfg;
    struct http_req r = { .ev = ev, .worker = w, .route = -1, .t0 = clock_mono_ns(),
                          .finished = request_finished };
    g_log_cfg = cfg;
    r.method = map_method(evhttp_request_get_command(ev));
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *rawpath = uri ? evhttp_uri_get_path(uri) : NULL;
    if (rawpath && rawpath[0] == '/' && !rawpath[1]) {
        /* a request the connection reader refused (wire.c; its synthetic
         * request is always "GET /"): answer and close */
        const char *code;
        char msg[256];
        int st = wire_rejection(ev, cfg, &code, msg, sizeof msg);
        if (st) {
            http_add_header(&r, "Connection", "close");
            http_reply_error(&r, st, code, msg, NULL);
            goto done;
        }
    }
    const char *rawq = uri ? evhttp_uri_get_query(uri) : NULL;
    size_t plen = 0;
    if (rawpath)
        r.path = evhttp_uridecode(rawpath, 0, &plen);
    if (rawq)
        r.query = strdup(rawq);
    if (!r.path || plen != strlen(r.path) || r.path[0] != '/') {
        http_reply_error(&r, 400, "bad_path", "request path is not valid", NULL);
        goto done;
    }
    if (!r.method) {
        http_reply_error(&r, 405, "method_not_allowed", "method not supported", NULL);
        goto done;
    }
    int allowed = 0;
    /* match on the raw path: a decoded "%2F" must not split a parameter */
    r.route = router_match(rawpath, r.method == HTTP_HEAD ? HTTP_GET : r.method, &r, &allowed);
    if (r.route == -1) {
        r.route = -1;
        http_reply_errorf(&r, 404, "not_found", NULL, "no route for %s", r.path);
        goto done;
    }
    if (r.route == -2) {
        r.route = -1;
        allow_header(&r, allowed);
        http_reply_errorf(&r, 405, "method_not_allowed", NULL, "%s is not allowed here",
                          method_name(r.method));
        goto done;
    }
    const struct router_route *rt = router_get(r.route);
    if (w->ops && !(rt->flags & ROUTER_OPS)) {
        r.route = -1;
        http_reply_errorf(&r, 404, "not_found", NULL,
                          "the ops port serves only GET /healthz and GET /metrics, not %s", r.path);
        goto done;
    }
    const char *accept = http_header(&r, "Accept");
    r.want_msgpack = accept && strstr(accept, "application/msgpack") != NULL;

    /* auth: no keys configured means loopback-only, open */
    if (cfg->nkeys > 0 && rt->role != ROLE_PUBLIC) {
        const char *auth = http_header(&r, "Authorization");
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
            http_add_header(&r, "WWW-Authenticate", "Bearer");
            http_reply_error(&r, 401, "unauthorized", "missing Authorization: Bearer <key>", NULL);
            goto done;
        }
        r.key = auth_check(cfg, auth + 7);
        if (!r.key) {
            http_add_header(&r, "WWW-Authenticate", "Bearer");
            http_reply_error(&r, 401, "unauthorized", "unknown API key", NULL);
            goto done;
        }
        if (!router_role_allows(r.key->role, rt->role)) {
            http_reply_errorf(&r, 403, "forbidden", NULL, "role %s may not call %s %s",
                              config_role_name(r.key->role), method_name(r.method), rt->pattern);
            goto done;
        }
    }

    if (rt->role != ROLE_PUBLIC && ratelimit_check(&r)) /* limits: per key, per address */
        goto done;

    /* body: size per route, content type */
    struct evbuffer *in = evhttp_request_get_input_buffer(ev);
    size_t blen = evbuffer_get_length(in);
    size_t limit = (rt->flags & ROUTER_BIG_BODY) ? cfg->max_import_body : cfg->max_body;
    if (blen > limit) {
        http_reply_errorf(&r, 413, "body_too_large", NULL, "body of %zu bytes exceeds the limit of %zu",
                          blen, limit);
        goto done;
    }
    if (blen) {
        const char *ct = http_header(&r, "Content-Type");
        if (ct && ctype_is(ct, "application/msgpack")) {
            r.body_msgpack = 1;
        } else if (ct && !ctype_is(ct, "application/json") && !ctype_is(ct, "application/x-ndjson") &&
                   !ctype_is(ct, "text/plain") && !ctype_is(ct, "application/x-www-form-urlencoded") &&
                   !ctype_is(ct, "text/csv") &&
                   /* RFC 7386: a PATCH body is a JSON merge patch, which is what PATCH does */
                   !(r.method == HTTP_PATCH && ctype_is(ct, "application/merge-patch+json"))) {
            http_reply_errorf(&r, 415, "unsupported_media_type", NULL,
                              "Content-Type %.64s is not accepted (use application/json or "
                              "application/msgpack)", ct);
            goto done;
        }
        r.body = (const char *)evbuffer_pullup(in, -1);
        r.body_len = blen;
        if (!r.body) {
            http_reply_error(&r, 500, "internal", "out of memory reading the body", NULL);
            goto done;
        }
    }
    rt->fn(&r);
    if (!r.status && !r.later)
        http_reply_error(&r, 500, "internal", "handler did not answer", NULL);
done:
    if (!r.later) /* else when the answer goes out (http_later.c) */
        request_finished(&r);
    if (!w->ops && w->idx < MAX_COUNTED_WORKERS)
        __atomic_add_fetch(&g_worker_reqs[w->idx], 1, __ATOMIC_RELAXED);
    for (int i = 0; i < r.nparams; i++)
        free(r.params[i]);
    free(r.path);
    free(r.query);
}

/* Requests per worker, for /metrics: shows whether connections are spread
 * over the workers (see bind_socket).  Process-wide so the collector never
 * points into a freed server. */

static void worker_collector(struct buf *out, void *ud)
{
    (void)ud;
    int n = __atomic_load_n(&g_counted_workers, __ATOMIC_RELAXED);
    buf_adds(out, "# HELP promod_worker_requests_total Requests answered, by worker thread.\n"
                  "# TYPE promod_worker_requests_total counter\n");
    for (int i = 0; i < n; i++)
        buf_printf(out, "promod_worker_requests_total{worker=\"%d\"} %ld\n", i,
                   __atomic_load_n(&g_worker_reqs[i], __ATOMIC_RELAXED));
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    int ok = !s->opts.thread_init || s->opts.thread_init(w) == 0;
    if (!ok)
        __atomic_store_n(&s->init_failed, 1, __ATOMIC_SEQ_CST);
    pthread_barrier_wait(&s->ready);
    if (ok && !__atomic_load_n(&s->init_failed, __ATOMIC_SEQ_CST))
        event_base_dispatch(w->base);
    if (s->opts.thread_fini)
        s->opts.thread_fini(w);
    return NULL;
}

/* The ops thread: no thread_init (no Lua state, no read transaction). */
static void *ops_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct server *s = arg;
    log_info("shutting down", "signal=%d", (int)sig);
    event_base_loopbreak(s->main_base);
}

/* SIGHUP: read the TLS certificate and key again; open connections keep
 * the old ones, new handshakes get the new ones. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    if (tls_enabled())
        tls_reload();
    else
        log_info("SIGHUP: nothing to reload", "%s", "tls=off");
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *s = arg;
    event_base_loopbreak(s->main_base);
}


/* A worker's event loop.  With the epoll changelist, the read/write
 * interest flips evhttp makes around every request (stop reading while the
 * handler runs, write the reply, read again) are folded into one
 * epoll_ctl per fd per loop turn instead of one per flip. */
static struct event_base *new_worker_base(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *b = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return b ? b : event_base_new();
}

/* A worker's (or the ops thread's) event base, evhttp over `fd`, and the
 * connection reader.  0, or -1 (logged). */
static int setup_worker(struct server *s, struct worker *w, int fd)
{
    w->srv = s;
    w->base = new_worker_base();
    w->http = w->base ? evhttp_new(w->base) : NULL;
    /* backlog 0: the socket listens already, with listen_backlog
     * (bind_socket).  -1 would mean "libevent's default" and make libevent
     * call listen(fd, 128) again, silently shrinking the accept queue to
     * 128: a burst of more new connections than that (500 checkout clients
     * at once) overflowed it, the kernel dropped handshakes, and a few
     * clients whose half-open connection it then gave up on got a reset
     * instead of an answer. */
    if (w->http)
        w->lev = evconnlistener_new(w->base, NULL, NULL, LEV_OPT_REUSEABLE, 0, fd);
    if (!w->lev) {
        log_error("cannot set up worker", "worker=%d", w->idx);
        return -1;
    }
    w->wire = wire_new(w->base, s->cfg);
    if (!w->wire)
        return -1;
    evhttp_bind_listener(w->http, w->lev);
    evhttp_set_gencb(w->http, dispatch, w);
    /* Every connection is read by wire.c first: it holds each request
     * head back until it is complete and refuses what is malformed,
     * too large or too slow in the contract's shape, before evhttp
     * (whose own refusals are HTML with no hook) sees it.  evhttp's
     * limits sit at or above the reader's so they never trigger. */
    evhttp_set_bevcb(w->http, wire_bevcb, w->wire);
    size_t hard = s->cfg->max_import_body > s->cfg->max_body ? s->cfg->max_import_body
                                                             : s->cfg->max_body;
    evhttp_set_max_body_size(w->http, (ev_ssize_t)hard);
    evhttp_set_max_headers_size(w->http, (ev_ssize_t)(s->cfg->max_header + 4096));
    evhttp_set_timeout(w->http, (int)s->cfg->request_timeout);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    return 0;
}

int server_start(const struct server_opts *o, struct server **out)
{
    *out = NULL;
    static int threads_ready;
    if (!threads_ready) {
        evthread_use_pthreads();
        threads_ready = 1;
    }
    struct server *s = calloc(1, sizeof *s);
    if (!s)
        return ERR_NOMEM;
    s->opts = *o;
    s->cfg = o->cfg;
    s->nworkers = s->cfg->threads > 0 ? s->cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->nworkers < 1)
        s->nworkers = 1;
    s->ops_fd = s->ops_port = -1;
    int rc = bind_socket(s, s->cfg->listen_host, s->cfg->listen_port);
    if (!rc && tls_init(s->cfg))
        rc = ERR_INVAL;
    if (rc) {
        if (s->ops_fd >= 0)
            close(s->ops_fd);
        for (int i = 0; i < s->nfds; i++)
            close(s->fds[i]);
        free(s->fds);
        free(s);
        return rc;
    }
    s->main_base = event_base_new();
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->main_base || !s->workers) {
        server_free(s);
        return ERR_NOMEM;
    }
    s->sigint = evsignal_new(s->main_base, SIGINT, on_signal, s);
    s->sigterm = evsignal_new(s->main_base, SIGTERM, on_signal, s);
    s->sighup = evsignal_new(s->main_base, SIGHUP, on_hup, s);
    s->stop_ev = event_new(s->main_base, -1, 0, on_stop, s);
    event_add(s->sigint, NULL);
    event_add(s->sigterm, NULL);
    event_add(s->sighup, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_barrier_init(&s->ready, NULL, (unsigned)s->nworkers + 1);
    static int collector_registered;
    if (!collector_registered) {
        router_metrics_init();
        metrics_register(worker_collector, NULL);
        wire_metrics_init();
        http_dropped_metrics_init();
        collector_registered = 1;
    }
    auth_init(s->cfg);
    __atomic_store_n(&g_counted_workers,
                     s->nworkers < MAX_COUNTED_WORKERS ? s->nworkers : MAX_COUNTED_WORKERS,
                     __ATOMIC_RELAXED);
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        w->idx = i;
        if (setup_worker(s, w, s->fds[i % s->nfds])) {
            s->init_failed = 1;
            break;
        }
    }
    if (!s->init_failed && s->ops_fd >= 0) {
        s->ops.ops = 1;
        s->ops.idx = -1;
        if (setup_worker(s, &s->ops, s->ops_fd))
            s->init_failed = 1;
    }
    if (s->init_failed) {
        pthread_barrier_destroy(&s->ready);
        server_free(s);
        return ERR_NOMEM;
    }
    for (int i = 0; i < s->nworkers; i++)
        if (!pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]))
            pthread_setname_np(s->workers[i].thread, "worker"); /* its CPU apart in /proc */
    pthread_barrier_wait(&s->ready);
    if (!__atomic_load_n(&s->init_failed, __ATOMIC_SEQ_CST) && s->ops.base &&
        pthread_create(&s->ops.thread, NULL, ops_main, &s->ops)) {
        log_error("cannot start the ops thread", "port=%d", s->ops_port);
        s->ops.thread = 0;
        __atomic_store_n(&s->init_failed, 1, __ATOMIC_SEQ_CST);
    }
    if (__atomic_load_n(&s->init_failed, __ATOMIC_SEQ_CST)) {
        for (int i = 0; i < s->nworkers; i++) {
            event_base_loopbreak(s->workers[i].base);
            pthread_join(s->workers[i].thread, NULL);
            s->workers[i].thread = 0;
        }
        pthread_barrier_destroy(&s->ready);
        server_free(s);
        return ERR_INVAL;
    }
    pthread_barrier_destroy(&s->ready);
    for (int i = 0; i < s->cfg->nkeys; i++)
        if (s->cfg->keys[i].source == CONFIG_KEY_PLAIN)
            log_warn("api key stored in clear in the config; store its digest instead (promod key)",
                     "id=\"%s\" hint=\"replace key = ... with sha256 = ...\"", s->cfg->keys[i].id);
    log_info("listening", "addr=%s:%d threads=%d auth=%s tls=%s", s->cfg->listen_host, s->port,
             s->nworkers, s->cfg->nkeys ? "api_keys" : "none (loopback only)",
             tls_enabled() ? "on" : "off");
    if (s->ops.thread)
        log_info("ops listener (/healthz, /metrics; no Lua on its thread)", "addr=%s:%d",
                 s->cfg->listen_host, s->ops_port);
    *out = s;
    return 0;
}

int server_port(const struct server *s) { return s->port; }
int server_ops_port(const struct server *s) { return s->ops.thread ? s->ops_port : -1; }
struct event_base *server_main_base(struct server *s) { return s->main_base; }
int server_nworkers(const struct server *s) { return s->nworkers; }
struct worker *server_worker(struct server *s, int i) { return &s->workers[i]; }

void server_stop(struct server *s) { event_active(s->stop_ev, 0, 0); }

static void stop_worker(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->lev) {
        evconnlistener_disable(w->lev);
    }
    /* let queued replies flush, then leave the loop */
    struct timeval tv = { 0, 200000 };
    event_base_loopexit(w->base, &tv);
}

void server_run(struct server *s)
{
    event_base_dispatch(s->main_base);
    for (int i = 0; i < s->nworkers; i++)
        event_base_once(s->workers[i].base, -1, EV_TIMEOUT, stop_worker, &s->workers[i], NULL);
    if (s->ops.thread)
        event_base_once(s->ops.base, -1, EV_TIMEOUT, stop_worker, &s->ops, NULL);
    for (int i = 0; i < s->nworkers; i++) {
        pthread_join(s->workers[i].thread, NULL);
        s->workers[i].thread = 0;
    }
    if (s->ops.thread) {
        pthread_join(s->ops.thread, NULL);
        s->ops.thread = 0;
    }
}

static void worker_free(struct worker *w)
{
    if (w->http)
        evhttp_free(w->http); /* frees the bound listener (not the shared fd) */
    else if (w->lev)
        evconnlistener_free(w->lev);
    wire_free(w->wire); /* after evhttp's connections, before their event base */
    if (w->base)
        event_base_free(w->base);
}

void server_free(struct server *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nworkers && s->workers; i++)
        worker_free(&s->workers[i]);
    worker_free(&s->ops);
    if (s->ops_fd >= 0)
        close(s->ops_fd);
    free(s->workers);
    if (s->sigint)
        event_free(s->sigint);
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->sighup)
        event_free(s->sighup);
    if (s->stop_ev)
        event_free(s->stop_ev);
    if (s->main_base)
        event_base_free(s->main_base);
    for (int i = 0; i < s->nfds; i++)
        close(s->fds[i]);
    free(s->fds);
    free(s);
    tls_shutdown();
}
