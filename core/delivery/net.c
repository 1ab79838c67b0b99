/*
 * net.c — the outbound HTTP(S) client: libevent's evhttp client with a
 * small keep-alive pool per origin and a timer per request.
 *
 * Why a pool: an evhttp_connection carries one request at a time (later
 * ones queue behind it), so throughput to one provider is bounded by
 * round trips unless several connections are open.  We pick an idle
 * connection, open a new one up to max_conns, and only then queue on the
 * least loaded.
 *
 * Why our own timer: evhttp's timeouts are per read/write, so a server
 * that trickles bytes never times out; the per-request timer bounds the
 * whole exchange and cancels the request (evhttp resets the connection,
 * and reconnects for whatever is queued behind it).
 *
 * https: libevent's evhttp does not reliably reconnect an SSL bufferevent
 * once it has been closed, so an https connection is dropped from the pool
 * when it closes and a fresh one (new SSL object) is made on demand.
 */
#include "delivery/net.h"
#include "base/err.h"
#include "base/log.h"
#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POOLS 64

struct conn {
    struct evhttp_connection *evcon;
    int pending;      /* requests given to this connection, not finished */
    int dead;         /* https connection closed: replace when idle */
    struct pool *pool;
};

struct pool {
    char host[256];
    int port;
    int tls;
    struct conn *conns;
    int n;
};

struct net {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl;
    int max_conns;
    size_t max_body;
    struct pool pools[MAX_POOLS];
    int npools;
    struct net_req *reqs;   /* pending requests (doubly linked) */
    uint64_t started, ok, failed;
};

struct net_req {
    struct net *net;
    struct conn *conn;
    struct evhttp_request *req;  /* NULL once libevent is done with it */
    struct event *timer;
    net_done_fn cb;
    void *ud;
    int errtype;                 /* last evhttp error reported, -1 none */
    int sock_err;
    int starting;                /* inside net_request: defer callbacks */
    char tls_err[160];           /* "tls: certificate verify failed" */
    const char *sync_err;        /* failed while starting: reported from the timer */
    struct net_req *prev, *next;
};

int net_new(struct event_base *base, const struct net_opts *opts, struct net **out)
{
    *out = NULL;
    struct net *n = calloc(1, sizeof *n);
    if (!n)
        return ERR_NOMEM;
    n->base = base;
    n->max_conns = opts && opts->max_conns > 0 ? opts->max_conns : 32;
    n->max_body = opts && opts->max_body ? opts->max_body : (size_t)1 << 20;
    n->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!n->dns)
        n->dns = evdns_base_new(base, 0); /* no resolv.conf: numeric hosts still work */
    n->ssl = SSL_CTX_new(TLS_client_method());
    if (n->ssl) {
        SSL_CTX_set_default_verify_paths(n->ssl);
        if (opts && opts->ca_file && SSL_CTX_load_verify_locations(n->ssl, opts->ca_file, NULL) != 1)
            log_warn("net: cannot load CA file", "file=\"%s\"", opts->ca_file);
        SSL_CTX_set_verify(n->ssl, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_min_proto_version(n->ssl, TLS1_2_VERSION);
    }
    *out = n;
    return 0;
}

int net_trust(struct net *n, const char *ca_file)
{
    if (!n->ssl)
        return ERR_NOMEM;
    if (!ca_file || SSL_CTX_load_verify_locations(n->ssl, ca_file, NULL) != 1) {
        ERR_clear_error();
        return ERR_IO;
    }
    return 0;
}

static void req_unlink(struct net_req *r)
{
    struct net *n = r->net;
    if (r->prev)
        r->prev->next = r->next;
    else if (n->reqs == r)
        n->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void req_free(struct net_req *r)
{
    req_unlink(r);
    if (r->timer)
        event_free(r->timer);
    if (r->conn)
        r->conn->pending--;
    free(r);
}

void net_cancel(struct net_req *r)
{
    if (!r)
        return;
    struct evhttp_request *req = r->req;
    r->req = NULL;
    r->cb = NULL;
    if (req) {
        /* libevent calls our error callback (cancel) synchronously; it
         * sees r->cb == NULL and does nothing. */
        evhttp_cancel_request(req);
    }
    req_free(r);
}

void net_free(struct net *n)
{
    if (!n)
        return;
    while (n->reqs)
        net_cancel(n->reqs);
    for (int i = 0; i < n->npools; i++) {
        for (int j = 0; j < n->pools[i].n; j++)
            if (n->pools[i].conns[j].evcon)
                evhttp_connection_free(n->pools[i].conns[j].evcon);
        free(n->pools[i].conns);
    }
    if (n->dns)
        evdns_base_free(n->dns, 0);
    if (n->ssl)
        SSL_CTX_free(n->ssl);
    free(n);
}

struct event_base *net_base(const struct net *n) { return n->base; }

void net_counts(const struct net *n, uint64_t *started, uint64_t *ok, uint64_t *failed)
{
    *started = n->started;
    *ok = n->ok;
    *failed = n->failed;
}

/* ---------------------------------------------------------------------- */

static void finish(struct net_req *r, int status, const char *body, size_t len, const char *error)
{
    net_done_fn cb = r->cb;
    void *ud = r->ud;
    struct net *n = r->net;
    char errbuf[sizeof r->tls_err];
    if (error) { /* may point into r (tls_err), which is freed below */
        snprintf(errbuf, sizeof errbuf, "%s", error);
        error = errbuf;
    }
    r->cb = NULL;
    if (status > 0)
        n->ok++;
    else
        n->failed++;
    req_free(r);
    if (cb) {
        struct net_result res = { status, body ? body : "", len, error };
        cb(ud, &res);
    }
}

/* The OpenSSL reason of a failed https exchange, if there is one. */
static void note_tls_error(struct net_req *r)
{
    if (!r->conn || !r->conn->pool->tls || !r->conn->evcon || r->tls_err[0])
        return;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(r->conn->evcon);
    unsigned long e = bev ? bufferevent_get_openssl_error(bev) : 0;
    if (e) {
        const char *why = ERR_reason_error_string(e);
        snprintf(r->tls_err, sizeof r->tls_err, "tls: %s", why ? why : "handshake failed");
    }
}

static void on_error(enum evhttp_request_error e, void *arg)
{
    struct net_req *r = arg;
    if (!r->cb)
        return;
    r->errtype = (int)e;
    r->sock_err = EVUTIL_SOCKET_ERROR();
    note_tls_error(r);
}

static const char *error_text(struct net_req *r)
{
    note_tls_error(r);
    if (r->tls_err[0])
        return r->tls_err;
    switch (r->errtype) {
    case EVREQ_HTTP_TIMEOUT: return "timeout";
    case EVREQ_HTTP_EOF: return "connection closed";
    case EVREQ_HTTP_INVALID_HEADER: return "bad response";
    case EVREQ_HTTP_BUFFER_ERROR:
        if (r->sock_err == ECONNREFUSED)
            return "connection refused";
        return "connection failed";
    case EVREQ_HTTP_DATA_TOO_LONG: return "response too large";
    default: break;
    }
    if (r->conn && r->conn->pool->tls)
        return "connection failed (tls or tcp)";
    return "connection failed";
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct net_req *r = arg;
    r->req = NULL; /* libevent frees it after we return */
    if (!r->cb) {
        req_free(r);
        return;
    }
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (r->starting) {
        /* libevent can fail a request synchronously (a local connect
         * refused at once); report it from the event loop instead */
        r->sync_err = code > 0 ? "bad response" : error_text(r);
        return;
    }
    if (code <= 0) {
        finish(r, 0, NULL, 0, error_text(r));
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    finish(r, code, body, len, NULL);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct net_req *r = arg;
    if (r->sync_err) {
        finish(r, 0, NULL, 0, r->sync_err);
        return;
    }
    struct evhttp_request *req = r->req;
    net_done_fn cb = r->cb;
    r->cb = NULL;
    r->req = NULL;
    if (req)
        evhttp_cancel_request(req);
    r->cb = cb;
    finish(r, 0, NULL, 0, "timeout");
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct conn *c = arg;
    if (c->pool->tls)
        c->dead = 1;
}

static struct pool *pool_get(struct net *n, const char *host, int port, int tls)
{
    for (int i = 0; i < n->npools; i++) {
        struct pool *p = &n->pools[i];
        if (p->port == port && p->tls == tls && !strcmp(p->host, host))
            return p;
    }
    if (n->npools == MAX_POOLS || strlen(host) >= sizeof n->pools[0].host)
        return NULL;
    struct pool *p = &n->pools[n->npools];
    memset(p, 0, sizeof *p);
    p->conns = calloc((size_t)n->max_conns, sizeof *p->conns);
    if (!p->conns)
        return NULL;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    p->tls = tls;
    n->npools++;
    return p;
}

static int conn_open(struct net *n, struct pool *p, struct conn *c)
{
    struct bufferevent *bev = NULL;
    if (p->tls) {
        if (!n->ssl)
            return ERR_NOMEM;
        SSL *ssl = SSL_new(n->ssl);
        if (!ssl)
            return ERR_NOMEM;
        unsigned char ip[16];
        if (inet_pton(AF_INET, p->host, ip) == 1 || inet_pton(AF_INET6, p->host, ip) == 1) {
            /* an address: match the certificate's IP SAN, no SNI */
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), p->host);
        } else {
            SSL_set_tlsext_host_name(ssl, p->host);
            SSL_set1_host(ssl, p->host);
        }
        bev = bufferevent_openssl_socket_new(n->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!bev) {
            SSL_free(ssl);
            return ERR_NOMEM;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    }
    c->evcon = evhttp_connection_base_bufferevent_new(n->base, n->dns, bev, p->host,
                                                      (unsigned short)p->port);
    if (!c->evcon) {
        if (bev)
            bufferevent_free(bev);
        return ERR_NOMEM;
    }
    evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)n->max_body);
    evhttp_connection_set_timeout(c->evcon, 120);
    evhttp_connection_set_closecb(c->evcon, on_close, c);
    c->pool = p;
    c->dead = 0;
    c->pending = 0;
    return 0;
}

/* An idle connection, a new one, or the least loaded. */
static struct conn *conn_pick(struct net *n, struct pool *p)
{
    struct conn *best = NULL;
    for (int i = 0; i < p->n; i++) {
        struct conn *c = &p->conns[i];
        if (c->dead && c->pending == 0) {
            evhttp_connection_free(c->evcon);
            c->evcon = NULL;
            if (conn_open(n, p, c))
                continue;
        }
        if (!c->evcon || c->dead)
            continue;
        if (c->pending == 0)
            return c;
        if (!best || c->pending < best->pending)
            best = c;
    }
    if (p->n < n->max_conns) {
        struct conn *c = &p->conns[p->n];
        if (conn_open(n, p, c) == 0) {
            p->n++;
            return c;
        }
    }
    return best;
}

static int header_ok(const char *name, const char *value)
{
    if (!name || !*name || !value || strlen(name) > 256 || strlen(value) > 8192)
        return 0;
    for (const char *s = name; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return 0;
    for (const char *s = value; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

static enum evhttp_cmd_type method_of(const char *m)
{
    if (!strcmp(m, "GET"))
        return EVHTTP_REQ_GET;
    if (!strcmp(m, "PUT"))
        return EVHTTP_REQ_PUT;
    if (!strcmp(m, "PATCH"))
        return EVHTTP_REQ_PATCH;
    if (!strcmp(m, "DELETE"))
        return EVHTTP_REQ_DELETE;
    if (!strcmp(m, "POST"))
        return EVHTTP_REQ_POST;
    return 0;
}

struct net_req *net_request(struct net *n, const char *method, const char *url,
                            const char *const *headers, const void *body, size_t len,
                            int timeout_ms, net_done_fn cb, void *ud, int *rc)
{
    *rc = ERR_INVAL;
    enum evhttp_cmd_type cmd = method ? method_of(method) : 0;
    if (!cmd || !url)
        return NULL;
    struct evhttp_uri *u = evhttp_uri_parse(url);
    if (!u)
        return NULL;
    const char *scheme = evhttp_uri_get_scheme(u), *host = evhttp_uri_get_host(u);
    int tls = scheme && !strcasecmp(scheme, "https");
    if (!scheme || (!tls && strcasecmp(scheme, "http")) || !host || !*host ||
        evhttp_uri_get_userinfo(u)) {
        evhttp_uri_free(u);
        return NULL;
    }
    int port = evhttp_uri_get_port(u);
    if (port < 0)
        port = tls ? 443 : 80;
    const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
    char target[4096];
    int tl = snprintf(target, sizeof target, "%s%s%s", path && *path ? path : "/",
                      query ? "?" : "", query ? query : "");
    char hosthdr[300];
    int hl = snprintf(hosthdr, sizeof hosthdr, (port == 80 && !tls) || (port == 443 && tls) ? "%s"
                                                                                          : "%s:%d",
                      host, port);
    if (tl < 0 || (size_t)tl >= sizeof target || hl < 0 || (size_t)hl >= sizeof hosthdr) {
        evhttp_uri_free(u);
        return NULL;
    }
    for (int i = 0; headers && headers[i]; i += 2)
        if (!headers[i + 1] || !header_ok(headers[i], headers[i + 1])) {
            evhttp_uri_free(u);
            return NULL;
        }
    *rc = ERR_NOMEM;
    struct pool *p = pool_get(n, host, port, tls);
    evhttp_uri_free(u);
    if (!p)
        return NULL;
    struct conn *c = conn_pick(n, p);
    if (!c)
        return NULL;
    struct net_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->net = n;
    r->cb = cb;
    r->ud = ud;
    r->errtype = -1;
    r->timer = evtimer_new(n->base, on_timeout, r);
    r->req = evhttp_request_new(on_done, r);
    if (!r->timer || !r->req) {
        if (r->req)
            evhttp_request_free(r->req);
        if (r->timer)
            event_free(r->timer);
        free(r);
        return NULL;
    }
    evhttp_request_set_error_cb(r->req, on_error);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(out, "Host", hosthdr);
    int have_ua = 0, have_ct = 0;
    for (int i = 0; headers && headers[i]; i += 2) {
        if (!strcasecmp(headers[i], "Host") || !strcasecmp(headers[i], "Content-Length") ||
            !strcasecmp(headers[i], "Connection") || !strcasecmp(headers[i], "Transfer-Encoding"))
            continue;
        have_ua |= !strcasecmp(headers[i], "User-Agent");
        have_ct |= !strcasecmp(headers[i], "Content-Type");
        evhttp_add_header(out, headers[i], headers[i + 1]);
    }
    if (!have_ua)
        evhttp_add_header(out, "User-Agent", "promod/0.1");
    if (body && len) {
        if (!have_ct)
            evhttp_add_header(out, "Content-Type", "application/octet-stream");
        evbuffer_add(evhttp_request_get_output_buffer(r->req), body, len);
    }
    char cl[32];
    snprintf(cl, sizeof cl, "%zu", body ? len : 0);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_DELETE)
        evhttp_add_header(out, "Content-Length", cl);
    r->conn = c;
    c->pending++;
    r->next = n->reqs;
    if (n->reqs)
        n->reqs->prev = r;
    n->reqs = r;
    r->starting = 1;
    int mk = evhttp_make_request(c->evcon, r->req, cmd, target);
    r->starting = 0;
    if (mk) {
        /* libevent frees the request itself on its one early failure
         * (out of memory); a leak beats a double free on the other */
        r->req = NULL;
        req_free(r);
        *rc = ERR_NOMEM;
        return NULL;
    }
    n->started++;
    int ms = timeout_ms > 0 ? timeout_ms : 10000;
    if (r->sync_err)
        ms = 0;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(r->timer, &tv);
    *rc = 0;
    return r;
}
