/*
 * wire.c — the connection reader in front of evhttp (see wire.h): request
 * heads held back until complete and checked, bodies passed through,
 * refusals turned into synthetic requests, the head timeout, lingering
 * after a refusal.
 *
 * How it sits in front of evhttp.  Each connection's bufferevent (a socket
 * one, or OpenSSL's) is evhttp's, untouched on the output side.  On its
 * input buffer we register an evbuffer callback, which libevent runs
 * synchronously whenever the bufferevent adds what it read, before it
 * calls evhttp's read callback.  The callback takes the new bytes out of
 * the buffer again (they are always at its end) and runs them through the
 * state machine in wire_in(), which appends to the buffer only what evhttp
 * may see.  (A filter bufferevent would do the same with less code, but
 * libevent 2.1's filter reports a reply written as soon as it is in the
 * socket bufferevent's buffer, not on the socket: evhttp then shuts the
 * socket down before a "Connection: close" reply has left.)
 *
 * Lifetime.  We hold a reference on the bufferevent.  Right after evhttp
 * set the connection up we register a close callback on it (the
 * bufferevent's callback argument is evhttp's connection); when evhttp
 * lets go of the connection we either drop our reference (the socket
 * closes) or, after a refusal, keep it a little longer to linger.
 */
#include "http/wire.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "http/http.h"
#include "http/router.h"
#include "http/tls.h"
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK_LINE_MAX 1024   /* a chunk-size line with its extensions */
#define MAX_BLANK_LINES 8     /* CRLFs tolerated before a request line */
#define LINGER_IDLE_MS 1000   /* linger ends after this long without data */
#define OVERDUE_RECHECK_MS 100 /* header_timeout passed with bytes unread: look again */

/* ---- reasons ------------------------------------------------------------ */

struct reason {
    int status;
    const char *code, *label, *message;
};

static const struct reason reasons[WIRE_NREASONS] = {
    [WIRE_BAD_REQUEST_LINE] = { 400, "bad_request", "bad_request_line",
                                "malformed request line (expected \"METHOD /path HTTP/1.1\")" },
    [WIRE_BAD_TARGET] = { 400, "bad_request", "bad_target",
                          "the request target must be an absolute path (\"/...\") of printable ASCII" },
    [WIRE_BAD_FIELD] = { 400, "bad_header", "bad_field",
                         "malformed header field (expected \"Name: value\", no control characters)" },
    [WIRE_OBS_FOLD] = { 400, "bad_header", "obs_fold", "folded header lines are not accepted" },
    [WIRE_BARE_CR] = { 400, "bad_request", "bare_cr", "a CR not followed by LF in the request head" },
    [WIRE_RESERVED_FIELD] = { 400, "bad_header", "reserved_field",
                              "the header " WIRE_REJECT_HEADER " is reserved" },
    [WIRE_BAD_LENGTH] = { 400, "bad_content_length", "bad_length",
                          "Content-Length must be a decimal number" },
    [WIRE_LENGTH_CONFLICT] = { 400, "bad_content_length", "length_conflict",
                               "Content-Length given more than once with different values" },
    [WIRE_LENGTH_AND_CHUNKED] = { 400, "bad_framing", "length_and_chunked",
                                  "Content-Length and Transfer-Encoding together are refused" },
    [WIRE_TE_REPEATED] = { 400, "bad_framing", "te_repeated", "Transfer-Encoding given more than once" },
    [WIRE_TE_UNSUPPORTED] = { 501, "unsupported_transfer_encoding", "te_unsupported",
                              "only Transfer-Encoding: chunked is supported" },
    [WIRE_BODY_NOT_ALLOWED] = { 400, "bad_framing", "body_not_allowed", "a HEAD request may not have a body" },
    [WIRE_BAD_CHUNK] = { 400, "bad_chunk", "bad_chunk", "malformed chunked body" },
    [WIRE_METHOD] = { 501, "not_implemented", "method",
                      "method not supported (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)" },
    [WIRE_VERSION] = { 505, "http_version_not_supported", "version",
                       "only HTTP/1.0 and HTTP/1.1 are supported" },
    [WIRE_URI_TOO_LONG] = { 414, "uri_too_long", "uri_too_long", "request line longer than the limit of" },
    [WIRE_HEAD_TOO_LARGE] = { 431, "header_too_large", "head_too_large",
                              "request line and header fields larger than the limit of" },
    [WIRE_TOO_MANY_FIELDS] = { 431, "header_too_large", "too_many_fields", "more header fields than" },
    [WIRE_BODY_TOO_LARGE] = { 413, "body_too_large", "body_too_large", "body exceeds the limit of" },
    [WIRE_EXPECT] = { 417, "expectation_failed", "expect", "only Expect: 100-continue is supported" },
    [WIRE_HEAD_TIMEOUT] = { 408, "request_timeout", "head_timeout",
                            "request head not complete within header_timeout" },
};

static long g_rejected[WIRE_NREASONS];
static long g_head_timeouts_idle; /* connections closed with no head at all */
static long g_overdue;            /* deadlines met by bytes the worker had not read yet */
static long g_conns;              /* connections open (all workers) */

const char *wire_reason_name(enum wire_reason r)
{
    return r > 0 && r < WIRE_NREASONS ? reasons[r].label : "?";
}

int wire_rejection(struct evhttp_request *req, const struct config *cfg, const char **code,
                   char *msg, size_t msglen)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), WIRE_REJECT_HEADER);
    if (!v)
        return 0;
    char *end;
    long r = strtol(v, &end, 10);
    unsigned long long n = strtoull(end, NULL, 10);
    if (r <= 0 || r >= WIRE_NREASONS)
        r = WIRE_BAD_REQUEST_LINE; /* cannot happen: only the reader writes it */
    const struct reason *x = &reasons[r];
    *code = x->code;
    switch (r) {
    case WIRE_URI_TOO_LONG:
    case WIRE_HEAD_TOO_LARGE:
        snprintf(msg, msglen, "%s %zu bytes (max_header_kb)", x->message, cfg->max_header);
        break;
    case WIRE_TOO_MANY_FIELDS:
        snprintf(msg, msglen, "%s %d", x->message, WIRE_MAX_FIELDS);
        break;
    case WIRE_BODY_TOO_LARGE:
        snprintf(msg, msglen, "%s %llu bytes", x->message, n);
        break;
    case WIRE_HEAD_TIMEOUT:
        snprintf(msg, msglen, "%s (%d s)", x->message, cfg->header_timeout);
        break;
    default:
        snprintf(msg, msglen, "%s", x->message);
    }
    return x->status;
}

static void wire_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_http_rejected_total Requests refused before routing, by reason.\n"
                  "# TYPE promod_http_rejected_total counter\n");
    for (int r = 1; r < WIRE_NREASONS; r++)
        buf_printf(out, "promod_http_rejected_total{reason=\"%s\"} %ld\n", reasons[r].label,
                   __atomic_load_n(&g_rejected[r], __ATOMIC_RELAXED));
    buf_printf(out,
               "# HELP promod_http_idle_closed_total Connections closed after header_timeout "
               "without a byte of a request.\n"
               "# TYPE promod_http_idle_closed_total counter\n"
               "promod_http_idle_closed_total %ld\n"
               "# HELP promod_http_head_deadline_deferred_total header_timeout expiries put off "
               "because the client's bytes were already waiting in the socket, unread by a busy "
               "worker.\n"
               "# TYPE promod_http_head_deadline_deferred_total counter\n"
               "promod_http_head_deadline_deferred_total %ld\n"
               "# HELP promod_http_connections Client connections open (lingering ones included).\n"
               "# TYPE promod_http_connections gauge\n"
               "promod_http_connections %ld\n",
               __atomic_load_n(&g_head_timeouts_idle, __ATOMIC_RELAXED),
               __atomic_load_n(&g_overdue, __ATOMIC_RELAXED), __atomic_load_n(&g_conns, __ATOMIC_RELAXED));
}

void wire_metrics_init(void) { metrics_register(wire_collector, NULL); }

/* ---- per connection ----------------------------------------------------- */

enum wstate {
    WS_HEAD,        /* reading a request head (held) */
    WS_BODY,        /* passing `left` body bytes */
    WS_CHUNK_LINE,  /* reading a chunk-size line (held) */
    WS_CHUNK_DATA,  /* collecting `left` chunk bytes into body */
    WS_CHUNK_END,   /* reading the CRLF after chunk data */
    WS_TRAILER,     /* reading the trailer section (held, dropped) */
    WS_REJECTED,    /* refused: everything else is dropped */
};

/* on_line's answers besides 0 (read on) and a refusal reason (> 0) */
#define LINE_DONE (-1)     /* the state moved on: the bytes after the line go back */
#define LINE_SKIP (-2)     /* a blank line before a request line: drop it */
#define LINE_FALLBACK (-3) /* fast_head cannot take this head: read it the slow way */

enum phase {
    P_NEW,      /* evhttp is setting the connection up */
    P_OPEN,     /* our close callback is registered */
    P_CLOSED,   /* evhttp let go: finish or linger on the next loop turn */
    P_LINGER,   /* reading and dropping what the client still sends */
};

struct wire;

struct conn {
    struct wire *w;
    struct bufferevent *bev;  /* evhttp's; we hold one reference */
    struct evbuffer_cb_entry *in_cb;
    struct event *timer;      /* header_timeout, then the linger's deadline */
    struct event *later;      /* runs after evhttp's current call: attach, close */
    /* both events live in the same allocation, after the struct (event_assign) */
    enum phase phase;
    int timer_armed;
    int busy;                 /* we are changing the input buffer ourselves */
    int linger;               /* refused: linger when evhttp lets go */
    uint64_t linger_end;      /* monotonic ns */
    struct conn *prev, *next; /* the worker's connections */
    enum wstate st;
    struct buf held;  /* head / chunk line / trailer bytes not yet passed */
    const char *base; /* what the head is read from: held.p, or the input itself (fast_head) */
    int inplace;      /* the head being read is already in the input buffer */
    size_t line;      /* start of the line being read, in held */
    size_t scan;      /* bytes of held already searched for LF */
    /* the request being read */
    int nlines, nfields, blanks;
    int method;             /* enum http_method */
    size_t target, target_len; /* offsets into held */
    int has_length, chunked, expect_continue, http10;
    uint64_t length;        /* Content-Length (saturated) */
    size_t blank;           /* where the head's blank line starts, in held */
    size_t drop_off[2], drop_len[2]; /* Transfer-Encoding and Expect lines, in held */
    int ndrop;
    struct buf head;        /* a chunked request's head, kept until its body is in */
    struct evbuffer *body;  /* a chunked request's body, de-chunked */
    uint64_t left;          /* body / chunk bytes still to pass */
    uint64_t body_total, body_cap;
};

/* ---- per worker --------------------------------------------------------- */

struct wire {
    struct event_base *base;
    const struct config *cfg;
    struct evbuffer *stage, *keep; /* scratch for in_cb (one connection at a time) */
    struct conn *conns;
};

struct wire *wire_new(struct event_base *base, const struct config *cfg)
{
    struct wire *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->base = base;
    w->cfg = cfg;
    w->stage = evbuffer_new();
    w->keep = evbuffer_new();
    if (!w->stage || !w->keep) {
        if (w->stage)
            evbuffer_free(w->stage);
        if (w->keep)
            evbuffer_free(w->keep);
        free(w);
        return NULL;
    }
    return w;
}

static void conn_finish(struct conn *c);

void wire_free(struct wire *w)
{
    if (!w)
        return;
    while (w->conns)
        conn_finish(w->conns);
    evbuffer_free(w->stage);
    evbuffer_free(w->keep);
    free(w);
}

static void timer_arm_for(struct conn *c, uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000) };
    event_add(c->timer, &tv);
    c->timer_armed = 1;
}

static void timer_arm(struct conn *c)
{
    if (!c->timer_armed)
        timer_arm_for(c, (uint64_t)c->w->cfg->header_timeout * 1000);
}

static void timer_disarm(struct conn *c)
{
    if (!c->timer_armed)
        return;
    event_del(c->timer);
    c->timer_armed = 0;
}

/* Refuse: evhttp, which has seen nothing of this request, gets a
 * synthetic one that the dispatcher answers. */
static void reject(struct conn *c, struct evbuffer *dst, enum wire_reason r, uint64_t n)
{
    __atomic_add_fetch(&g_rejected[r], 1, __ATOMIC_RELAXED);
    evbuffer_add_printf(dst, "GET / HTTP/1.1\r\n" WIRE_REJECT_HEADER ": %d %llu\r\n\r\n", (int)r,
                        (unsigned long long)n);
    if (c->body)
        evbuffer_drain(c->body, evbuffer_get_length(c->body));
    c->st = WS_REJECTED;
    c->held.len = 0;
    c->linger = 1;
    timer_disarm(c);
}

/* RFC 9110 token characters */
static const unsigned char tchar[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['!'] = 1, ['#'] = 1, ['$'] = 1,
    ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1,
    ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

static int is_tchar(unsigned char ch) { return tchar[ch]; }

/* bytes a field value may not hold: controls but HTAB, and DEL */
static const unsigned char ctl[256] = {
    [0 ... 8] = 1, [10 ... 31] = 1, [127] = 1,
};

/* The line [p, p+n) without its LF: drop one CR before the LF; any other
 * CR is a bare CR.  Returns the content length, or -1. */
static long strip_eol(const char *p, size_t n)
{
    size_t len = n - 1; /* the LF */
    if (len && p[len - 1] == '\r')
        len--;
    if (memchr(p, '\r', len))
        return -1;
    return (long)len;
}

static int method_of(const char *m, size_t n)
{
    switch (n) {
    case 3: return !memcmp(m, "GET", 3) ? HTTP_GET : !memcmp(m, "PUT", 3) ? HTTP_PUT : 0;
    case 4: return !memcmp(m, "POST", 4) ? HTTP_POST : !memcmp(m, "HEAD", 4) ? HTTP_HEAD : 0;
    case 5: return !memcmp(m, "PATCH", 5) ? HTTP_PATCH : 0;
    case 6: return !memcmp(m, "DELETE", 6) ? HTTP_DELETE : 0;
    case 7: return !memcmp(m, "OPTIONS", 7) ? HTTP_OPTIONS : 0;
    default: return 0;
    }
}

/* "METHOD SP target SP HTTP/1.x": 0 or a reason. */
static int request_line(struct conn *c, const char *p, size_t n)
{
    const char *sp1 = memchr(p, ' ', n);
    if (!sp1 || sp1 == p)
        return WIRE_BAD_REQUEST_LINE;
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', (size_t)(p + n - t));
    if (!sp2 || sp2 == t)
        return WIRE_BAD_REQUEST_LINE;
    const char *v = sp2 + 1;
    size_t vl = (size_t)(p + n - v);
    if (memchr(v, ' ', vl))
        return WIRE_BAD_REQUEST_LINE;
    size_t ml = (size_t)(sp1 - p);
    for (size_t i = 0; i < ml; i++)
        if (!is_tchar((unsigned char)p[i]))
            return WIRE_BAD_REQUEST_LINE;
    size_t tl = (size_t)(sp2 - t);
    for (size_t i = 0; i < tl; i++)
        if ((unsigned char)t[i] < 0x21 || (unsigned char)t[i] > 0x7e)
            return WIRE_BAD_TARGET;
    if (vl == 8 && !memcmp(v, "HTTP/1.", 7) && (v[7] == '0' || v[7] == '1')) {
        /* ok */
    } else if (vl >= 8 && !memcmp(v, "HTTP/", 5) && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
               v[7] >= '0' && v[7] <= '9' && vl == 8) {
        return WIRE_VERSION;
    } else {
        return WIRE_BAD_REQUEST_LINE;
    }
    c->method = method_of(p, ml);
    if (!c->method)
        return WIRE_METHOD;
    /* origin-form only: "/..." but not "//..." (evhttp would read an authority) */
    if (t[0] != '/' || (tl > 1 && t[1] == '/'))
        return WIRE_BAD_TARGET;
    c->target = (size_t)(t - c->base);
    c->target_len = tl;
    c->http10 = v[7] == '0';
    return 0;
}

static int name_is(const char *p, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(p, want, n) == 0;
}

/* One "name: value" line (without EOL) of a head (off/linelen: where the
 * whole line is in held) or of a trailer section (off = SIZE_MAX): 0 or a
 * reason. */
static int field_line(struct conn *c, const char *p, size_t n, size_t off, size_t linelen)
{
    if (p[0] == ' ' || p[0] == '\t')
        return WIRE_OBS_FOLD;
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p)
        return WIRE_BAD_FIELD;
    size_t nl = (size_t)(colon - p);
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)p[i]))
            return WIRE_BAD_FIELD;
    const char *v = colon + 1, *e = p + n;
    for (const unsigned char *q = (const unsigned char *)v; q < (const unsigned char *)e; q++)
        if (ctl[*q])
            return WIRE_BAD_FIELD;
    if (++c->nfields > WIRE_MAX_FIELDS)
        return WIRE_TOO_MANY_FIELDS;
    if (nl != 6 && nl != 14 && nl != 15 && nl != 17) /* none of the names below */
        return 0;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    size_t vl = (size_t)(e - v);
    if (name_is(p, nl, "content-length")) {
        if (vl == 0)
            return WIRE_BAD_LENGTH;
        uint64_t x = 0;
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9')
                return WIRE_BAD_LENGTH;
            x = x > UINT64_MAX / 20 ? UINT64_MAX / 2 : x * 10 + (uint64_t)(v[i] - '0'); /* saturate */
        }
        if (c->has_length && x != c->length)
            return WIRE_LENGTH_CONFLICT;
        c->has_length = 1;
        c->length = x;
    } else if (name_is(p, nl, "transfer-encoding") && off != SIZE_MAX) {
        if (c->chunked)
            return WIRE_TE_REPEATED;
        if (!name_is(v, vl, "chunked"))
            return WIRE_TE_UNSUPPORTED;
        c->chunked = 1;
        c->drop_off[c->ndrop] = off; /* left out when the body is re-framed */
        c->drop_len[c->ndrop++] = linelen;
    } else if (name_is(p, nl, "expect") && off != SIZE_MAX) {
        if (!name_is(v, vl, "100-continue"))
            return WIRE_EXPECT;
        if (c->expect_continue)
            return WIRE_EXPECT;
        c->expect_continue = 1;
        c->drop_off[c->ndrop] = off;
        c->drop_len[c->ndrop++] = linelen;
    } else if (name_is(p, nl, WIRE_REJECT_HEADER)) {
        return WIRE_RESERVED_FIELD;
    }
    return 0;
}

/* The body limit of the request's route: max_import_body for bulk routes,
 * max_body otherwise (and for paths no route takes). */
static uint64_t route_cap(struct conn *c)
{
    const struct config *cfg = c->w->cfg;
    const char *t = c->base + c->target;
    size_t n = 0;
    while (n < c->target_len && t[n] != '?' && t[n] != '#')
        n++;
    char *path = strndup(t, n);
    if (!path)
        return cfg->max_body;
    struct http_req tmp;
    memset(&tmp, 0, sizeof tmp);
    int allowed;
    int m = c->method == HTTP_HEAD ? HTTP_GET : c->method;
    int idx = router_match(path, (enum http_method)m, &tmp, &allowed);
    for (int i = 0; i < tmp.nparams; i++)
        free(tmp.params[i]);
    free(path);
    const struct router_route *rt = router_get(idx);
    return rt && (rt->flags & ROUTER_BIG_BODY) ? cfg->max_import_body : cfg->max_body;
}

/* The blank line ending a head: check the framing, hand the head over. */
static int head_done(struct conn *c, struct evbuffer *dst, size_t end)
{
    if (c->has_length && c->chunked)
        return WIRE_LENGTH_AND_CHUNKED;
    if (c->method == HTTP_HEAD && (c->chunked || (c->has_length && c->length > 0)))
        return WIRE_BODY_NOT_ALLOWED;
    c->body_cap = c->w->cfg->max_body;
    if (c->chunked || (c->has_length && c->length > c->body_cap))
        c->body_cap = route_cap(c);
    if (c->has_length && c->length > c->body_cap) {
        c->length = c->body_cap; /* the number the message gives */
        return WIRE_BODY_TOO_LARGE;
    }
    if (c->inplace && c->chunked)
        return LINE_FALLBACK; /* the head must leave the input: the slow path does that */
    timer_disarm(c);
    if (c->chunked) {
        /* evhttp gets the request once the body is complete, with a
         * Content-Length instead (see chunked_done): what it would refuse
         * in a chunked body (extensions, more data than its limit) and
         * what it would take loosely can then never reach it */
        c->blank = c->line;
        if (!c->body && !(c->body = evbuffer_new()))
            return WIRE_BODY_TOO_LARGE; /* out of memory: refuse */
        buf_reset(&c->head);
        if (buf_add(&c->head, c->base, end))
            return WIRE_BODY_TOO_LARGE;
        c->st = WS_CHUNK_LINE;
        c->body_total = 0;
        if (c->expect_continue && !c->http10 && !tls_enabled() &&
            evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            /* the client waits for this before sending the body; evhttp,
             * which has not seen the head, cannot say it (over TLS the
             * client sends the body after its own wait) */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            ssize_t sn = send((int)bufferevent_getfd(c->bev), cont, sizeof cont - 1,
                              MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)sn;
        }
        return 0;
    }
    if (!c->inplace && evbuffer_add(dst, c->base, end))
        return WIRE_BODY_TOO_LARGE; /* out of memory: refuse */
    if (c->has_length && c->length > 0) {
        c->st = WS_BODY;
        c->left = c->length;
    }
    return 0;
}

/* The last chunk and its trailers are in: evhttp gets the head without
 * Transfer-Encoding (and Expect), a Content-Length, and the body. */
static int chunked_done(struct conn *c, struct evbuffer *dst)
{
    const char *h = c->head.p;
    size_t at = 0;
    for (int i = 0; i <= c->ndrop; i++) {
        size_t upto = c->blank;
        int k = -1;
        for (int j = 0; j < c->ndrop; j++) /* the next dropped line after `at` */
            if (c->drop_off[j] >= at && c->drop_off[j] < upto) {
                upto = c->drop_off[j];
                k = j;
            }
        if (evbuffer_add(dst, h + at, upto - at))
            return -1;
        if (k < 0)
            break;
        at = upto + c->drop_len[k];
    }
    if (evbuffer_add_printf(dst, "Content-Length: %zu\r\n\r\n", evbuffer_get_length(c->body)) < 0 ||
        evbuffer_add_buffer(dst, c->body))
        return -1;
    buf_reset(&c->head);
    return 0;
}

static void request_reset(struct conn *c)
{
    c->nlines = c->nfields = c->blanks = 0;
    c->method = 0;
    c->has_length = c->chunked = c->expect_continue = c->http10 = 0;
    c->ndrop = 0;
    c->length = 0;
}

/* One complete line [line, end) of c->base in a line state.  Returns 0, a
 * reason, LINE_DONE when the state moved on and the line buffer is done
 * with (the caller returns the bytes after `end` to the source),
 * LINE_SKIP for a blank line to drop, or LINE_FALLBACK (fast_head only). */
static int on_line(struct conn *c, struct evbuffer *dst, size_t end)
{
    const char *p = c->base + c->line;
    long n = strip_eol(p, end - c->line);
    switch (c->st) {
    case WS_HEAD:
        if (n < 0)
            return WIRE_BARE_CR;
        if (c->nlines == 0) {
            if (n == 0) { /* a stray CRLF between requests: skip it */
                if (c->inplace)
                    return LINE_FALLBACK;
                if (++c->blanks > MAX_BLANK_LINES)
                    return WIRE_BAD_REQUEST_LINE;
                return LINE_SKIP;
            }
            c->nlines++;
            return request_line(c, p, (size_t)n);
        }
        if (n == 0) {
            int r = head_done(c, dst, end);
            return r ? r : LINE_DONE;
        }
        c->nlines++;
        return field_line(c, p, (size_t)n, c->line, end - c->line);
    case WS_CHUNK_LINE: {
        if (n <= 0)
            return WIRE_BAD_CHUNK;
        uint64_t size = 0;
        long i = 0;
        for (; i < n; i++) {
            char ch = p[i];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                                 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
            if (d < 0)
                break;
            if (i >= 16)
                return WIRE_BAD_CHUNK;
            size = size << 4 | (uint64_t)d;
        }
        if (i == 0)
            return WIRE_BAD_CHUNK;
        /* what may follow: BWS ; chunk-ext (dropped: evhttp refuses them) */
        long j = i;
        while (j < n && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (j < n && p[j] != ';')
            return WIRE_BAD_CHUNK;
        for (; j < n; j++)
            if (((unsigned char)p[j] < 0x20 && p[j] != '\t') || p[j] == 0x7f)
                return WIRE_BAD_CHUNK;
        if (size == 0) {
            c->st = WS_TRAILER;
            c->nfields = 0;
            return LINE_DONE;
        }
        if (size > c->body_cap - c->body_total) {
            c->length = c->body_cap;
            return WIRE_BODY_TOO_LARGE;
        }
        c->body_total += size;
        c->st = WS_CHUNK_DATA;
        c->left = size;
        return LINE_DONE;
    }
    case WS_CHUNK_END:
        if (n != 0)
            return WIRE_BAD_CHUNK;
        c->st = WS_CHUNK_LINE;
        return LINE_DONE;
    case WS_TRAILER:
        if (n < 0)
            return WIRE_BAD_CHUNK;
        if (n == 0) { /* end of the body; trailers are checked and dropped */
            if (chunked_done(c, dst))
                return WIRE_BODY_TOO_LARGE; /* out of memory */
            c->st = WS_HEAD;
            return LINE_DONE;
        }
        return field_line(c, p, (size_t)n, SIZE_MAX, 0);
    default:
        return 0;
    }
}

/* Bytes a line state may hold before it is refused. */
static size_t line_limit(const struct conn *c)
{
    switch (c->st) {
    case WS_CHUNK_LINE: return CHUNK_LINE_MAX;
    case WS_CHUNK_END: return 2;
    default: return c->w->cfg->max_header;
    }
}

static enum wire_reason overflow_reason(const struct conn *c)
{
    switch (c->st) {
    case WS_HEAD: return c->nlines == 0 ? WIRE_URI_TOO_LONG : WIRE_HEAD_TOO_LARGE;
    case WS_TRAILER: return WIRE_HEAD_TOO_LARGE;
    default: return WIRE_BAD_CHUNK;
    }
}

/* Run what arrived (src) through the state machine: what evhttp may see
 * is appended to dst (the bufferevent's input), heads wait in c->held,
 * everything after a refusal is dropped.  src ends empty.  0, or -1 when
 * out of memory. */
static int wire_in(struct conn *c, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail;
    while ((avail = evbuffer_get_length(src)) > 0) {
        if (c->st == WS_REJECTED) {
            evbuffer_drain(src, avail);
            break;
        }
        if (c->st == WS_BODY || c->st == WS_CHUNK_DATA) {
            size_t n = c->left < avail ? (size_t)c->left : avail;
            if (evbuffer_remove_buffer(src, c->st == WS_BODY ? dst : c->body, n) < 0)
                return -1;
            c->left -= n;
            if (c->left == 0) {
                c->st = c->st == WS_BODY ? WS_HEAD : WS_CHUNK_END;
                if (c->st == WS_HEAD)
                    request_reset(c);
            }
            continue;
        }
        /* a line state: take what fits (one byte over the limit shows an
         * overflow), then read the complete lines */
        size_t lim = line_limit(c);
        size_t room = c->held.len <= lim ? lim + 1 - c->held.len : 0;
        size_t take = avail < room ? avail : room;
        if (buf_reserve(&c->held, take + 1))
            return -1;
        if (evbuffer_remove(src, c->held.p + c->held.len, take) != (int)take)
            return -1;
        c->held.len += take;
        c->base = c->held.p;
        c->inplace = 0;
        int moved = 0;
        for (;;) {
            char *lf = c->scan < c->held.len ? memchr(c->held.p + c->scan, '\n', c->held.len - c->scan)
                                              : NULL;
            if (!lf) {
                c->scan = c->held.len;
                break;
            }
            size_t end = (size_t)(lf - c->held.p) + 1;
            int r = end > lim ? (int)overflow_reason(c) : on_line(c, dst, end);
            if (r > 0) {
                reject(c, dst, (enum wire_reason)r, c->length);
                evbuffer_drain(src, evbuffer_get_length(src));
                return 0;
            }
            if (r == LINE_SKIP) { /* a skipped blank line: drop it from held */
                memmove(c->held.p, c->held.p + end, c->held.len - end);
                c->held.len -= end;
                c->line = c->scan = 0;
                continue;
            }
            if (r == LINE_DONE) { /* the state moved on: the rest goes back to src */
                if (c->held.len > end && evbuffer_prepend(src, c->held.p + end, c->held.len - end))
                    return -1;
                c->held.len = 0;
                c->line = c->scan = 0;
                if (c->st == WS_HEAD)
                    request_reset(c);
                moved = 1;
                break;
            }
            c->line = c->scan = end;
        }
        if (moved)
            continue;
        if (c->held.len > lim) {
            reject(c, dst, overflow_reason(c), 0);
            evbuffer_drain(src, evbuffer_get_length(src));
            return 0;
        }
        break; /* src is empty: wait for the rest of the line */
    }
    if (c->st == WS_HEAD && c->held.len > 0)
        timer_arm(c);
    return 0;
}

/* The common case without a byte moved: nothing held, nothing unread
 * before the new bytes, and they hold one whole head (not chunked) and at
 * most its body.  The head is checked where it lies in the input buffer
 * and left there for evhttp.  1 when done; 0 to take the slow path, with
 * nothing changed that it would not redo. */
static int fast_head(struct conn *c, struct evbuffer *buf, size_t n)
{
    const char *p = (const char *)evbuffer_pullup(buf, -1); /* one read: usually one chain, no copy */
    if (!p)
        return 0;
    size_t lim = c->w->cfg->max_header, line = 0;
    c->base = p;
    c->inplace = 1;
    int r = 0;
    for (;;) {
        size_t upto = n < lim ? n : lim;
        const char *lf = line < upto ? memchr(p + line, '\n', upto - line) : NULL;
        if (!lf) {
            r = LINE_FALLBACK; /* a partial head, or one over the limit */
            break;
        }
        size_t end = (size_t)(lf - p) + 1;
        c->line = line;
        r = on_line(c, NULL, end);
        if (r) {
            line = end;
            break;
        }
        line = end;
    }
    c->inplace = 0;
    size_t rest = n - line;
    if (r == LINE_DONE &&
        (c->st == WS_BODY ? rest <= c->left : rest == 0)) { /* nothing of a next request */
        if (c->st == WS_BODY) {
            c->left -= rest;
            if (c->left == 0)
                c->st = WS_HEAD;
        }
        c->line = c->scan = 0;
        if (c->st == WS_HEAD)
            request_reset(c);
        return 1;
    }
    /* refusals are made by the slow path, which reads the same head */
    c->st = WS_HEAD;
    c->line = c->scan = 0;
    request_reset(c);
    return 0;
}

/* The input buffer's callback: new bytes are at its end; take them out
 * and let wire_in() decide what goes back. */
static void in_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    if (c->busy || !info->n_added || c->phase >= P_CLOSED)
        return;
    struct wire *w = c->w;
    size_t total = evbuffer_get_length(buf);
    size_t fresh = info->n_added < total ? info->n_added : total;
    if (c->st == WS_BODY && fresh <= c->left) { /* more of a body: it stays where it is */
        c->left -= fresh;
        if (c->left == 0) {
            c->st = WS_HEAD;
            request_reset(c);
        }
        return;
    }
    c->busy = 1;
    if (c->st == WS_HEAD && c->held.len == 0 && fresh == total && fast_head(c, buf, total)) {
        c->busy = 0;
        return;
    }
    int rc = 0;
    if (fresh == total) {
        rc = evbuffer_add_buffer(w->stage, buf);
    } else { /* bytes passed earlier and not yet read by evhttp stay first */
        rc = evbuffer_remove_buffer(buf, w->keep, total - fresh) < 0 || evbuffer_add_buffer(w->stage, buf) ||
             evbuffer_add_buffer(buf, w->keep);
    }
    if (rc || wire_in(c, w->stage, buf)) {
        /* out of memory: drop the connection rather than pass unchecked bytes */
        evbuffer_drain(w->stage, evbuffer_get_length(w->stage));
        evbuffer_drain(w->keep, evbuffer_get_length(w->keep));
        evbuffer_drain(buf, evbuffer_get_length(buf));
        c->st = WS_REJECTED;
        shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
    }
    c->busy = 0;
}

/* Bytes the kernel holds for the socket that the worker has not read. */
static int bytes_waiting(const struct conn *c)
{
    int n = 0;
    return ioctl((int)bufferevent_getfd(c->bev), FIONREAD, &n) == 0 && n > 0;
}

/* header_timeout: a partial head gets 408; a connection that sent nothing
 * (or never finished its TLS handshake) is closed.  In P_LINGER the same
 * timer is the linger's idle limit.
 *
 * The deadline is judged on what the client sent, not on what the worker
 * got round to reading.  A worker that was busy past the deadline (a long
 * hook; or a burst of connections, each armed at accept, whose requests
 * epoll hands out 32 ready sockets per loop turn) finds the timers of
 * connections it has not read yet expired in the same turn as their
 * readiness, and the timers may run first.  Closing then threw away a
 * complete request sitting in the socket (the client saw the connection
 * end with no reply, and the unread bytes turned the close into a reset).
 * So while bytes wait in the socket the verdict is put off until they are
 * read. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    c->timer_armed = 0;
    if (c->phase == P_LINGER) {
        conn_finish(c);
        return;
    }
    if (c->phase >= P_CLOSED || c->st != WS_HEAD)
        return;
    if (bytes_waiting(c)) {
        __atomic_add_fetch(&g_overdue, 1, __ATOMIC_RELAXED);
        timer_arm_for(c, OVERDUE_RECHECK_MS);
        return;
    }
    if (c->held.len == 0) {
        __atomic_add_fetch(&g_head_timeouts_idle, 1, __ATOMIC_RELAXED);
        bufferevent_event_cb ecb;
        void *cbarg;
        bufferevent_getcb(c->bev, NULL, NULL, &ecb, &cbarg);
        if (ecb) /* evhttp's: it frees the connection, our close callback follows */
            ecb(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, cbarg);
        return;
    }
    /* a socket bufferevent keeps the end of its input frozen between reads */
    struct evbuffer *in = bufferevent_get_input(c->bev);
    int frozen = evbuffer_add(in, "", 0) != 0;
    if (frozen)
        evbuffer_unfreeze(in, 0);
    c->busy = 1;
    reject(c, in, WIRE_HEAD_TIMEOUT, 0);
    c->busy = 0;
    if (frozen)
        evbuffer_freeze(in, 0);
    if (bufferevent_get_enabled(c->bev) & EV_READ)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    /* else evhttp is still answering an earlier request and finds the
     * synthetic one when it reads again */
}

/* Lingering: read and drop, until the client closes, goes quiet for
 * LINGER_IDLE_MS, or WIRE_LINGER_S pass. */
static void linger_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    uint64_t now = clock_mono_ns();
    if (now >= c->linger_end) {
        conn_finish(c);
        return;
    }
    uint64_t left_ms = (c->linger_end - now) / 1000000u;
    event_del(c->timer);
    timer_arm_for(c, left_ms < LINGER_IDLE_MS ? left_ms : LINGER_IDLE_MS);
}

static void linger_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_finish(arg); /* EOF or error: the client is gone */
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct conn *c = arg;
    c->phase = P_CLOSED;
    timer_disarm(c);
    event_active(c->later, EV_TIMEOUT, 0); /* after evhttp has let go of the bufferevent */
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (c->phase == P_NEW) {
        /* evhttp has set the connection up: its callbacks are on the
         * bufferevent, with the connection as their argument */
        bufferevent_event_cb ecb;
        void *evcon;
        bufferevent_getcb(c->bev, NULL, NULL, &ecb, &evcon);
        if (!ecb || !evcon) { /* already let go (set-up failed) */
            conn_finish(c);
            return;
        }
        evhttp_connection_set_closecb(evcon, on_close, c);
        c->phase = P_OPEN;
        return;
    }
    if (c->phase != P_CLOSED)
        return;
    if (!c->linger) {
        conn_finish(c);
        return;
    }
    /* evhttp has sent the refusal and shut our side down: keep reading */
    c->phase = P_LINGER;
    c->linger_end = clock_mono_ns() + (uint64_t)WIRE_LINGER_S * 1000000000u;
    bufferevent_setcb(c->bev, linger_read, NULL, linger_event, c);
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_READ);
    linger_read(c->bev, c); /* what is buffered already; arms the idle timer */
}

static void conn_finish(struct conn *c)
{
    struct wire *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    __atomic_sub_fetch(&g_conns, 1, __ATOMIC_RELAXED);
    if (c->in_cb)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->in_cb);
    if (c->phase == P_LINGER) {
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    } else if (c->phase < P_CLOSED) {
        /* the worker is shutting down while evhttp still has the connection
         * (only from wire_free, after evhttp_free: cannot happen) */
    }
    event_del(c->timer);
    event_del(c->later);
    buf_free(&c->held);
    buf_free(&c->head);
    if (c->body)
        evbuffer_free(c->body);
    bufferevent_decref(c->bev); /* the last reference closes the socket */
    free(c);
}

struct bufferevent *wire_bevcb(struct event_base *base, void *arg)
{
    struct wire *w = arg;
    /* one allocation per connection: the struct and its two events */
    size_t ev = (event_get_struct_event_size() + 15) & ~(size_t)15;
    size_t head = (sizeof(struct conn) + 15) & ~(size_t)15;
    struct conn *c = calloc(1, head + 2 * ev);
    if (!c)
        return NULL;
    c->w = w;
    c->timer = (struct event *)((char *)c + head);
    c->later = (struct event *)((char *)c + head + ev);
    if (event_assign(c->timer, base, -1, 0, on_timer, c) ||
        event_assign(c->later, base, -1, 0, on_later, c))
        goto fail;
    if (tls_enabled()) {
        struct ssl_st *ssl = tls_new_ssl();
        if (!ssl)
            goto fail;
        c->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) {
            SSL_free(ssl);
            goto fail;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev)
            goto fail;
    }
    c->in_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), in_cb, c);
    if (!c->in_cb) {
        bufferevent_free(c->bev);
        goto fail;
    }
    bufferevent_incref(c->bev); /* ours: evhttp's free does not end our use */
    c->next = w->conns;
    if (c->next)
        c->next->prev = c;
    w->conns = c;
    __atomic_add_fetch(&g_conns, 1, __ATOMIC_RELAXED);
    event_active(c->later, EV_TIMEOUT, 0); /* attach once evhttp has set up */
    timer_arm(c); /* the first head (and a TLS handshake) within header_timeout */
    return c->bev;
fail:
    free(c);
    return NULL;
}
