/*
 * wire.h — the bytes of a connection before evhttp parses them.
 *
 * libevent 2.1's evhttp answers malformed, oversized and slow requests
 * itself, in HTML, with no hook to change the reply, and it reads what it
 * is given loosely (the first of two Content-Length headers wins, any
 * Transfer-Encoding but "chunked" silently falls back to Content-Length,
 * a request head may trickle in forever as long as each line comes before
 * the inactivity timeout).  So every connection gets a filter bufferevent
 * (evhttp_set_bevcb) whose input side reads the stream first:
 *
 *  - A request head is held back until it is complete, then checked as a
 *    whole (request line, field syntax, framing) and only then handed to
 *    evhttp, unchanged.  Content-Length bodies pass through as moves of
 *    evbuffer chains.  A chunked body is collected (up to the route's
 *    limit) and evhttp gets the request when it is complete, re-framed
 *    with a Content-Length: evhttp never parses chunked framing (it would
 *    refuse chunk extensions in HTML and drop trailers), and a chunked
 *    request can still be refused at any point before evhttp sees it.
 *  - A request that must be refused never reaches evhttp: the reader hands
 *    it a small synthetic request carrying an `X-Promod-Reject` header
 *    (a client may not send that header: the reader refuses it), and the
 *    dispatcher answers it in the contract's JSON shape and closes the
 *    connection.
 *  - Each head must be complete within header_timeout seconds of its
 *    first byte (of the connection's start, for the first request, which
 *    also bounds a TLS handshake): 408 when part of a head came, a plain
 *    close when nothing did.
 *  - After a refusal the socket lingers: the reply is sent, the write side
 *    shut, and whatever the client still sends is read and dropped for up
 *    to WIRE_LINGER_S seconds, so a client still uploading reads our
 *    answer instead of a connection reset.
 *
 * What the reader accepts (RFC 9112, strict): methods GET POST PUT PATCH
 * DELETE HEAD OPTIONS (other tokens: 501); origin-form targets ("/...",
 * printable ASCII); HTTP/1.0 and HTTP/1.1 (other versions: 505); field
 * lines "name: value" with a token name, no folding, no bare CR, no
 * control characters; at most WIRE_MAX_FIELDS fields and max_header bytes
 * for the request line and fields together (414 when the request line
 * alone is too long, else 431); Content-Length as digits, repeated only
 * with the same value; Transfer-Encoding exactly "chunked" (other codings:
 * 501), never with Content-Length and never on HEAD; Expect only
 * "100-continue" (else 417; a chunked request's 100 Continue is sent by
 * the reader on plain HTTP, over TLS the client's own wait applies);
 * chunk extensions and trailers are checked and dropped; bodies up to the
 * route's limit (max_body, or max_import_body for bulk routes; 413).
 *
 * Threads: a struct wire belongs to one worker thread and its event base;
 * everything here runs on that thread.  wire_reason_* and the counters
 * are process-wide and read-only / atomic.
 */
#ifndef PROMOD_WIRE_H
#define PROMOD_WIRE_H
#include <stddef.h>
#include <stdint.h>
#include "base/config.h"

struct event_base;
struct bufferevent;
struct evhttp_request;

#define WIRE_MAX_FIELDS 100 /**< header fields per request head */
#define WIRE_LINGER_S 5     /**< longest linger after a refusal, seconds */
#define WIRE_REJECT_HEADER "X-Promod-Reject"

/** Why the reader refused a request (the X-Promod-Reject value). */
enum wire_reason {
    WIRE_BAD_REQUEST_LINE = 1,
    WIRE_BAD_TARGET,
    WIRE_BAD_FIELD,
    WIRE_OBS_FOLD,
    WIRE_BARE_CR,
    WIRE_RESERVED_FIELD,
    WIRE_BAD_LENGTH,
    WIRE_LENGTH_CONFLICT,
    WIRE_LENGTH_AND_CHUNKED,
    WIRE_TE_REPEATED,
    WIRE_TE_UNSUPPORTED,
    WIRE_BODY_NOT_ALLOWED,
    WIRE_BAD_CHUNK,
    WIRE_METHOD,
    WIRE_VERSION,
    WIRE_URI_TOO_LONG,
    WIRE_HEAD_TOO_LARGE,
    WIRE_TOO_MANY_FIELDS,
    WIRE_BODY_TOO_LARGE,
    WIRE_EXPECT,
    WIRE_HEAD_TIMEOUT,
    WIRE_NREASONS
};

struct wire;

/** The reader of one worker thread: `cfg` (borrowed, outlives it) gives
 *  max_header, header_timeout and the body limits.  @return NULL on OOM. */
struct wire *wire_new(struct event_base *base, const struct config *cfg);
/** Close the sockets still lingering and free.  Connections themselves
 *  are freed by evhttp (evhttp_free) before this. */
void wire_free(struct wire *w);

/** The evhttp_set_bevcb callback (`arg` is the struct wire): a filter
 *  bufferevent over a socket bufferevent, or over an OpenSSL one when
 *  tls_enabled().  NULL on failure (evhttp then drops the connection). */
struct bufferevent *wire_bevcb(struct event_base *base, void *arg);

/** For the dispatcher: if `req` is a refusal the reader made, the status
 *  to answer (400, 408, 413, 414, 417, 431, 501, 505) with the error code
 *  in *code and a message in msg; 0 for an ordinary request. */
int wire_rejection(struct evhttp_request *req, const struct config *cfg, const char **code,
                   char *msg, size_t msglen);

/** Metric label of a reason ("bad_request_line", ...). */
const char *wire_reason_name(enum wire_reason r);

/** Register the promod_http_rejected_total collector (once, start-up). */
void wire_metrics_init(void);

#endif
