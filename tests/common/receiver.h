/*
 * receiver.h — a real local HTTP receiver for delivery tests (prefix rcv_):
 * a libevent evhttp server on its own thread, bound to 127.0.0.1, that
 * records every request (method, path, headers, body, arrival time) and
 * can be told to answer with a status, stall (never answer), close the
 * connection without answering, or be stopped (connections refused) and
 * started again on the same port.
 *
 * It is what an email/SMS/push provider or a webhook endpoint looks like
 * to promod; nothing in it stands in for a promod component.  Accessors
 * copy under a mutex, so tests read while the server thread records.
 */
#ifndef PROMOD_RCV_H
#define PROMOD_RCV_H
#include <stddef.h>
#include <stdint.h>

struct rcv;

enum rcv_mode {
    RCV_OK = 0,      /**< 200 {"ok":true} */
    RCV_STATUS,      /**< answer with the given status */
    RCV_STALL,       /**< never answer (until rcv_release or stop) */
    RCV_CLOSE,       /**< close the connection without an answer */
};

struct rcv_entry {
    char method[8];
    char path[256];
    char key[512];        /**< Idempotency-Key header, "" if none */
    char headers[2048];   /**< "Name: value\n" lines */
    char *body;           /**< malloc'd copy (first 64 KiB), NUL-terminated */
    size_t body_len;      /**< full length */
    int64_t t_ms;         /**< arrival, monotonic milliseconds */
    int status;           /**< what was answered (0 = stalled / closed) */
};

/** Listen on 127.0.0.1:`port` (0 = any free port).  NULL on failure. */
struct rcv *rcv_start(int port);
/** Same over TLS with a PEM certificate and key (e.g. self-signed). */
struct rcv *rcv_start_tls(int port, const char *cert_pem, const char *key_pem);
int rcv_port(const struct rcv *r);
/** Stop listening and free (stalled requests are dropped). */
void rcv_stop(struct rcv *r);

/** Behaviour for the next `count` requests (0 = until changed), then 200. */
void rcv_set(struct rcv *r, enum rcv_mode mode, int status, int count);
/** Answer every stalled request with 200 now. */
void rcv_release(struct rcv *r);
/** Delay every answer by `ms` (0 = none). */
void rcv_set_delay(struct rcv *r, int ms);
/** Record bodies (default on); off for benchmarks. */
void rcv_keep_bodies(struct rcv *r, int on);

/** Requests recorded so far. */
size_t rcv_count(struct rcv *r);
/** Requests answered 2xx with distinct idempotency keys. */
size_t rcv_unique_ok(struct rcv *r);
/** Requests (any answer) carrying `key`. */
size_t rcv_count_key(struct rcv *r, const char *key);
/** Copy entry i (caller frees out->body with rcv_entry_free). 0 or -1. */
int rcv_get(struct rcv *r, size_t i, struct rcv_entry *out);
void rcv_entry_free(struct rcv_entry *e);
/** Wait until at least n requests arrived (or timeout); returns the count. */
size_t rcv_wait(struct rcv *r, size_t n, int timeout_ms);
/** Wait until at least n distinct keys were answered 2xx; returns that count. */
size_t rcv_wait_unique(struct rcv *r, size_t n, int timeout_ms);
/** Forget everything recorded. */
void rcv_clear(struct rcv *r);

/** Monotonic milliseconds (same clock as rcv_entry.t_ms). */
int64_t rcv_now_ms(void);

#endif
