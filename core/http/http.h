/*
 * http.h — one HTTP request as handlers see it, and the only ways to answer.
 *
 * The server builds a struct http_req for every request (on the worker
 * thread that owns the connection), runs the auth/limits chain, then calls
 * the matched route's handler.  A handler must answer exactly once, through
 * http_reply_json(), http_reply_error() or http_reply_raw(); the server
 * answers 500 itself if a handler returns without replying.
 *
 * Errors have one shape everywhere (the contract):
 *   {"error": {"code": "invalid_json", "message": "...", "field": "..."}}
 *
 * Content negotiation: a request body is JSON unless Content-Type is
 * application/msgpack (anything else with a body is 415).  The reply is
 * msgpack when the request's Accept names application/msgpack, else JSON.
 */
#ifndef PROMOD_HTTP_H
#define PROMOD_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "base/config.h"
#include "base/buf.h"
#include "base/reqerr.h"
#include "codec/jscan.h"

struct evhttp_request;
struct worker;
struct store;
struct evbuffer;

#define HTTP_MAX_PARAMS 4

enum http_method { HTTP_GET = 1, HTTP_POST = 2, HTTP_PUT = 4, HTTP_PATCH = 8,
                   HTTP_DELETE = 16, HTTP_HEAD = 32, HTTP_OPTIONS = 64 };

struct http_req {
    struct evhttp_request *ev;
    struct worker *worker;            /**< the worker thread running the request */
    enum http_method method;
    char *path;                       /**< decoded path, owned by the request */
    char *query;                      /**< raw query string or NULL, owned */
    char *params[HTTP_MAX_PARAMS];    /**< decoded path parameters, owned */
    int nparams;
    const char *body;                 /**< request body (linearised; valid for the request) */
    size_t body_len;
    int body_msgpack;                 /**< Content-Type is application/msgpack */
    int want_msgpack;                 /**< Accept asks for application/msgpack */
    const struct config_key *key;     /**< authenticated API key (NULL: none configured) */
    int route;                        /**< index of the matched route, -1 if none */
    int status;                       /**< status replied (0 until then) */
    struct store *hold_store;         /**< with hold_ticket: see http_hold_until_synced */
    uint64_t hold_ticket;
    uint64_t t0;                      /**< monotonic ns at start */
    int later;                        /**< answered later (http_later) */
    void (*finished)(struct http_req *r); /**< the server's bookkeeping once answered */
};

/** The request body as a validated JSON object read in place (see
 *  codec/jscan.h: no tree is built): the request's own bytes, or, for a
 *  msgpack body, its JSON text in a new *conv (the caller frees it on
 *  success).  @return 0, or -1 with the 400 replied (empty_body,
 *  invalid_json, invalid_msgpack, too_deep, invalid_body). */
int http_body_text(struct http_req *r, char **conv, struct jscan_val *whole);

/** Reply with `body` (reference stolen; may be NULL for no body) as JSON or
 *  msgpack per the request's Accept header. */
void http_reply_json(struct http_req *r, int status, json_t *body);
/** Reply with the contract's error object.  `field` may be NULL. */
void http_reply_error(struct http_req *r, int status, const char *code,
                      const char *message, const char *field);
/** Same with a printf-style message. */
void http_reply_errorf(struct http_req *r, int status, const char *code, const char *field,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/** Reply with raw bytes and a content type (text/plain, text/csv, text/html). */
void http_reply_raw(struct http_req *r, int status, const char *ctype, const void *data, size_t len);
/** Map an ERR_* code to a fitting status and error reply (ERR_NOTFOUND→404,
 *  ERR_FULL→507, ERR_INVAL→400, ERR_CONFLICT→409, ...). */
void http_reply_err_code(struct http_req *r, int rc, const char *what);

/** Reply with a service's request error in the contract's shape (its
 *  extra members merged into the error object) and clear it.  An unset
 *  error (status 0) answers 500. */
void http_reply_reqerr(struct http_req *r, struct reqerr *e);

/** A producer of a streamed reply: append the next part to `out`, return
 *  0 (more follows), 1 (that was the last part) or <0 (stop here: the
 *  reply ends after what was appended).  Called on the worker thread. */
typedef int (*http_stream_fn)(void *ud, struct buf *out);

/** Reply 200 with `ctype` in chunks: `fn` is called for the first part
 *  now and for each next part once the previous one has gone out to the
 *  socket (so a slow client slows the producer, never the memory), and
 *  `done(ud)` exactly once at the end, also when the client goes away in
 *  the middle (noticed within a second).  The request counts as answered
 *  when this returns. */
void http_reply_stream(struct http_req *r, const char *ctype, http_stream_fn fn,
                       void (*done)(void *ud), void *ud);

/** Streamed replies in progress on every worker (promod_http_streams_open). */
long http_streams_open(void);

/** Decode the body (JSON or msgpack) into a new value.  On failure the
 *  error reply (400/413/415) is sent and NULL returned.  `required_type`
 *  is JSON_OBJECT, JSON_ARRAY or -1 for any. */
json_t *http_body_json(struct http_req *r, int required_type);

/** Query parameter value (decoded, caller frees) or NULL. */
char *http_query_get(const struct http_req *r, const char *name);
/** Query parameter as an integer within [lo, hi]; `def` when absent.
 *  On a bad value replies 400 and returns -1 with *ok = 0. */
long http_query_long(struct http_req *r, const char *name, long def, long lo, long hi, int *ok);

/** Hold this request's reply until the store has flushed `ticket` to disk
 *  (store_txn_commit_ticket): the reply is built as usual by the next
 *  http_reply_*() call, then kept aside while the worker serves other
 *  connections, and sent once the group syncer's flush covers the commit —
 *  so an acknowledged write survives a power cut, and every commit that
 *  arrived during one flush shares it.  Worker threads only
 *  (http_held.c). */
void http_hold_until_synced(struct http_req *r, struct store *s, uint64_t ticket);
/** The calling worker thread is stopping: forget its held replies (their
 *  data is committed; the connections close with the server). */
void http_held_thread_stop(void);
/** internal (http.c → http_held.c): keep a reply built for a held request;
 *  takes `body`.  @return 1 when kept, 0 when the ticket is already on
 *  disk (the caller sends now). */
int http_held_defer(struct http_req *r, int status, const char *reason, struct evbuffer *body);

/** Answering later (http_later.c): a handler that hands its work to
 *  another thread calls http_later() and returns without replying; that
 *  thread calls http_later_ready() when the work is done, and then `fn(r,
 *  ud)` runs on this request's worker thread with a request that replies
 *  on the same connection as `r` would (route, Accept, key, start time;
 *  no body, no path parameters) — through http_reply_*() as usual, holds
 *  included.  If the worker stops first, `fn(NULL, ud)` is called instead
 *  (on the thread of http_later_ready or the stopping worker) so `ud` can
 *  be released.  Meanwhile the worker serves other connections.
 *  @return the handle, or NULL (not on a worker thread, no memory): then
 *  the handler answers now. */
struct http_later;
typedef void (*http_later_fn)(struct http_req *r, void *ud);
struct http_later *http_later(struct http_req *r, http_later_fn fn, void *ud);
/** The work behind `l` is done (any thread); `l` is gone after this. */
void http_later_ready(struct http_later *l);
/** The calling worker thread is stopping: answers not yet given are
 *  dropped (their fn called with NULL).  Called by http_held_thread_stop. */
void http_later_thread_stop(void);

/** Answers the server owed and never sent (http_later.c counts them;
 *  /metrics: promod_http_dropped_answers_total and, per reason,
 *  promod_http_dropped_answers_reason_total{reason}).  Every one is a
 *  client left without a reply, so tests assert the total stays 0. */
enum http_drop {
    HTTP_DROP_STOPPED,   /**< the worker stopped with the answer pending (later or held) */
    HTTP_DROP_CONN_GONE, /**< the answer was ready but its connection had been closed */
    HTTP_DROP_N
};
/** Count `n` answers dropped for `why` (any thread). */
void http_dropped(enum http_drop why, long n);
/** Register the counters with /metrics (once, before serving). */
void http_dropped_metrics_init(void);

/** Request header value (borrowed) or NULL. */
const char *http_header(const struct http_req *r, const char *name);
/** Add a response header (before replying). */
void http_add_header(struct http_req *r, const char *name, const char *value);


#endif
