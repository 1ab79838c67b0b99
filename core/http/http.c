/* http.c — request helpers and the single reply path. */
#include "http/http.h"
#include "codec/codec.h"
#include "codec/jscan.h"
#include "base/err.h"
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The Date header, formatted once a second per thread: libevent would
 * otherwise format it (gmtime + snprintf) for every reply. */
static const char *date_now(void)
{
    static __thread char text[40];
    static __thread time_t at = -1;
    time_t now = time(NULL);
    if (now != at) {
        static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
        static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(text, sizeof text, "%s, %02d %s %d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        at = now;
    }
    return text;
}

/* Before evhttp arms the connection's request_timeout for writing the
 * reply: libevent measures a timeout from the time it cached when the loop
 * turn began, which after a long handler (a hook near its time limit) lies
 * that long in the past.  A handler that ran longer than request_timeout
 * got a deadline already expired; a timeout evhttp arms for the reply
 * then fired before the reply went out, and the connection was
 * closed with the answer unsent (the client saw EOF, no byte).  So the
 * cached time is brought up to now first. */
static void fresh_clock(struct evhttp_request *ev)
{
    struct evhttp_connection *con = evhttp_request_get_connection(ev);
    struct event_base *base = con ? evhttp_connection_get_base(con) : NULL;
    if (base)
        event_base_update_cache_time(base);
}

static void send_buf(struct http_req *r, int status, const char *ctype, const void *data, size_t len)
{
    if (r->status) /* already answered: a handler bug, never a second reply */
        return;
    r->status = status;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(r->ev);
    evhttp_add_header(oh, "Content-Type", ctype);
    if (!evhttp_find_header(oh, "Date"))
        evhttp_add_header(oh, "Date", date_now());
    struct evbuffer *b = evbuffer_new();
    if (b && len)
        evbuffer_add(b, data, len);
    const char *reason = NULL;
    switch (status) {
    case 408: reason = "Request Timeout"; break;
    case 413: reason = "Payload Too Large"; break;
    case 414: reason = "URI Too Long"; break;
    case 431: reason = "Request Header Fields Too Large"; break;
    case 422: reason = "Unprocessable Entity"; break;
    case 429: reason = "Too Many Requests"; break;
    case 507: reason = "Insufficient Storage"; break;
    default: break;
    }
    if (r->hold_ticket && b && http_held_defer(r, status, reason, b))
        return; /* sent by the worker once the commit is on disk */
    if (!evhttp_request_get_connection(r->ev))
        http_dropped(HTTP_DROP_CONN_GONE, 1); /* libevent frees the request */
    fresh_clock(r->ev);
    evhttp_send_reply(r->ev, status, reason, b);
    if (b)
        evbuffer_free(b);
}

void http_reply_raw(struct http_req *r, int status, const char *ctype, const void *data, size_t len)
{
    send_buf(r, status, ctype, data, len);
}

/* Digits for printing the reals of `v`: 15 keeps computed numbers readable
 * ("0.1", not "0.10000000000000001"), but when any real would change at 15
 * digits (0.1 + 0.2, 1.7976931348623157e308 — which would even overflow
 * when parsed back) the whole reply uses 17, so printing never alters a
 * stored value. */
static int real_digits(const json_t *v, int depth)
{
    if (depth > 64)
        return 17;
    switch (json_typeof(v)) {
    case JSON_REAL: {
        char b[40];
        double d = json_real_value(v);
        snprintf(b, sizeof b, "%.15g", d);
        return strtod(b, NULL) == d ? 15 : 17;
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
            if (real_digits(x, depth + 1) == 17)
                return 17;
        return 15;
    }
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++)
            if (real_digits(json_array_get(v, i), depth + 1) == 17)
                return 17;
        return 15;
    default:
        return 15;
    }
}

void http_reply_json(struct http_req *r, int status, json_t *body)
{
    if (!body) {
        send_buf(r, status, "application/json", NULL, 0);
        return;
    }
    if (r->want_msgpack) {
        struct buf b = BUF_INIT;
        if (codec_json_to_msgpack(body, &b) == 0) {
            send_buf(r, status, "application/msgpack", b.p, b.len);
            buf_free(&b);
            json_decref(body);
            return;
        }
        buf_free(&b);
    }
    char *s = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(real_digits(body, 0)));
    json_decref(body);
    if (!s) {
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        send_buf(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n';
    send_buf(r, status, "application/json", s, n + 1);
    free(s);
}

/* The contract's error object: {"code", "message", "field"} ("field" is
 * null when no field is at fault; text that is not UTF-8 is replaced). */
static json_t *error_object(const char *code, const char *message, const char *field)
{
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", json_string(message ? message : ""));
    if (!json_object_get(e, "message")) /* invalid UTF-8 in a message */
        json_object_set_new(e, "message", json_string("(message not valid UTF-8)"));
    if (field) {
        json_t *f = json_string(field);
        json_object_set_new(e, "field", f ? f : json_string("(invalid UTF-8)"));
    } else {
        json_object_set_new(e, "field", json_null());
    }
    return e;
}

void http_reply_error(struct http_req *r, int status, const char *code, const char *message,
                      const char *field)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", error_object(code, message, field));
    http_reply_json(r, status, o);
}

void http_reply_errorf(struct http_req *r, int status, const char *code, const char *field,
                       const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_error(r, status, code, msg, field);
}

void http_reply_err_code(struct http_req *r, int rc, const char *what)
{
    struct reqerr e = { 0 };
    reqerr_from_code(&e, rc, what);
    http_reply_reqerr(r, &e);
}

void http_reply_reqerr(struct http_req *r, struct reqerr *e)
{
    if (!e->status)
        reqerr_set(e, 500, "internal", NULL, "request failed");
    json_t *inner = error_object(e->code, e->message, e->field[0] ? e->field : NULL);
    if (e->extra)
        json_object_update_missing(inner, e->extra);
    json_t *o = json_object();
    json_object_set_new(o, "error", inner);
    http_reply_json(r, e->status, o);
    reqerr_clear(e);
}

json_t *http_body_json(struct http_req *r, int required_type)
{
    if (r->body_len == 0) {
        http_reply_error(r, 400, "empty_body", "a request body is required", NULL);
        return NULL;
    }
    json_t *v;
    int err = 0;
    if (r->body_msgpack) {
        v = codec_msgpack_to_json(r->body, r->body_len, &err);
        if (!v) {
            http_reply_error(r, 400, err == ERR_TOOBIG ? "too_deep" : "invalid_msgpack",
                             err == ERR_TOOBIG ? "msgpack body nested too deeply"
                                               : "body is not valid msgpack",
                             NULL);
            return NULL;
        }
    } else {
        char msg[256];
        v = codec_parse_json(r->body, r->body_len, &err, msg, sizeof msg);
        if (!v) {
            http_reply_error(r, 400, err == ERR_TOOBIG ? "too_deep" : "invalid_json", msg, NULL);
            return NULL;
        }
    }
    if (required_type >= 0 && (int)json_typeof(v) != required_type) {
        http_reply_error(r, 400, "invalid_body",
                         required_type == JSON_OBJECT ? "body must be a JSON object"
                                                      : "body must be a JSON array",
                         NULL);
        json_decref(v);
        return NULL;
    }
    return v;
}

/* A msgpack body is turned into JSON text first, so both wire forms meet
 * the same checks. */
int http_body_text(struct http_req *r, char **conv, struct jscan_val *whole)
{
    *conv = NULL;
    if (r->body_len == 0) {
        http_reply_error(r, 400, "empty_body", "a request body is required", NULL);
        return -1;
    }
    const char *p = r->body;
    size_t len = r->body_len;
    if (r->body_msgpack) {
        json_t *j = http_body_json(r, -1); /* replies on malformed msgpack */
        if (!j)
            return -1;
        *conv = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        json_decref(j);
        if (!*conv) {
            http_reply_error(r, 500, "internal", "out of memory", NULL);
            return -1;
        }
        p = *conv;
        len = strlen(p);
    }
    char msg[200];
    int rc = jscan_check(p, len, msg, sizeof msg);
    if (rc) {
        http_reply_error(r, 400, rc == ERR_TOOBIG ? "too_deep" : "invalid_json", msg, NULL);
        goto fail;
    }
    *whole = jscan_whole(p, len);
    if (jscan_type(*whole) != '{') {
        http_reply_error(r, 400, "invalid_body", "body must be a JSON object", NULL);
        goto fail;
    }
    return 0;
fail: /* the caller frees conv only on success (found by fuzz/fuzz_http.c) */
    free(*conv);
    *conv = NULL;
    return -1;
}

char *http_query_get(const struct http_req *r, const char *name)
{
    if (!r->query)
        return NULL;
    struct evkeyvalq q;
    q.tqh_first = NULL;
    q.tqh_last = &q.tqh_first;
    if (evhttp_parse_query_str(r->query, &q) != 0) {
        evhttp_clear_headers(&q);
        return NULL;
    }
    const char *v = evhttp_find_header(&q, name);
    char *out = v ? strdup(v) : NULL;
    evhttp_clear_headers(&q);
    return out;
}

long http_query_long(struct http_req *r, const char *name, long def, long lo, long hi, int *ok)
{
    *ok = 1;
    char *v = http_query_get(r, name);
    if (!v)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < lo || n > hi) {
        http_reply_errorf(r, 400, "invalid_query", name, "%s must be an integer from %ld to %ld",
                          name, lo, hi);
        free(v);
        *ok = 0;
        return -1;
    }
    free(v);
    return n;
}

const char *http_header(const struct http_req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->ev), name);
}

void http_add_header(struct http_req *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->ev), name, value);
}

/* ---- streamed replies ------------------------------------------------------
 *
 * evhttp keeps a request whose reply is still being streamed alive when
 * its connection fails (it detaches it: evhttp_request_get_connection()
 * becomes NULL) and frees it at evhttp_send_reply_end().  The next-chunk
 * callback is never called for a connection that failed, so a timer looks
 * once a second for a detached request and ends it there.  (The
 * connection's close callback belongs to the server's connection reader.) */

static long g_streams; /* streamed replies in progress (all workers) */

long http_streams_open(void)
{
    return __atomic_load_n(&g_streams, __ATOMIC_RELAXED);
}

struct stream {
    struct evhttp_request *req;
    struct event *watch;
    http_stream_fn fn;
    void (*done)(void *);
    void *ud;
    struct buf b;
};

static void stream_free(struct stream *s)
{
    __atomic_sub_fetch(&g_streams, 1, __ATOMIC_RELAXED);
    if (s->watch)
        event_free(s->watch);
    buf_free(&s->b);
    if (s->done)
        s->done(s->ud);
    free(s);
}

static void stream_next(struct evhttp_connection *evcon, void *arg);

static void stream_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct stream *s = arg;
    if (evhttp_request_get_connection(s->req))
        return;
    evhttp_send_reply_end(s->req); /* frees the detached request */
    stream_free(s);
}

static void stream_next(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct stream *s = arg;
    if (!evhttp_request_get_connection(s->req)) {
        stream_watch(-1, 0, s);
        return;
    }
    buf_reset(&s->b);
    int rc = s->fn(s->ud, &s->b);
    struct evbuffer *eb = evbuffer_new();
    if (eb && s->b.len)
        evbuffer_add(eb, s->b.p, s->b.len);
    if (rc == 0 && eb) {
        evhttp_send_reply_chunk_with_cb(s->req, eb, stream_next, s);
        evbuffer_free(eb);
        return;
    }
    if (eb && s->b.len)
        evhttp_send_reply_chunk(s->req, eb);
    if (eb)
        evbuffer_free(eb);
    evhttp_send_reply_end(s->req);
    stream_free(s);
}

void http_reply_stream(struct http_req *r, const char *ctype, http_stream_fn fn,
                       void (*done)(void *ud), void *ud)
{
    if (r->status) {
        if (done)
            done(ud);
        return;
    }
    struct stream *s = calloc(1, sizeof *s);
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->ev);
    struct event_base *base = evcon ? evhttp_connection_get_base(evcon) : NULL;
    if (s && base)
        s->watch = event_new(base, -1, EV_PERSIST, stream_watch, s);
    if (!s || !s->watch) {
        if (s)
            free(s);
        if (done)
            done(ud);
        http_reply_error(r, 500, "internal", "out of memory", NULL);
        return;
    }
    __atomic_add_fetch(&g_streams, 1, __ATOMIC_RELAXED);
    s->req = r->ev;
    s->fn = fn;
    s->done = done;
    s->ud = ud;
    struct timeval sec = { 1, 0 };
    event_add(s->watch, &sec);
    r->status = 200;
    evhttp_add_header(evhttp_request_get_output_headers(r->ev), "Content-Type", ctype);
    fresh_clock(r->ev);
    evhttp_send_reply_start(r->ev, 200, "OK");
    stream_next(NULL, s);
}
