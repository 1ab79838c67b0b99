/*
 * net.h — a non-blocking HTTP(S) client on one libevent event_base, and
 * the `net` library that channel plugins' deliver() uses (luavm_net.c).
 *
 * Owns: keep-alive connection pools (per scheme, host and port, up to
 * `max_conns` connections each; a connection carries one request at a
 * time), an OpenSSL client context (certificates verified against the
 * system store, host name checked, SNI sent), an evdns resolver, and
 * per-request timers.  Built on libevent's evhttp client and its OpenSSL
 * bufferevents.
 *
 * Threads: a struct net and everything it hands out belong to the thread
 * running its event_base; nothing here is thread-safe.
 *
 * Outcome of a request (struct net_result): `status` > 0 with the response
 * body, or `status` == 0 and `error` naming what went wrong: "timeout",
 * "connection failed", "connection closed", "response too large", "bad
 * response", "tls error".  The callback runs exactly once per request,
 * from the event loop (never from inside net_request), unless the request
 * is cancelled first.
 */
#ifndef PROMOD_NET_H
#define PROMOD_NET_H
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct lua_State;
struct luavm;
struct net;
struct net_req;

struct net_opts {
    int max_conns;          /**< per scheme+host+port; 0 = 32 */
    size_t max_body;        /**< largest response body kept, bytes; 0 = 1 MiB */
    const char *ca_file;    /**< extra CA bundle (PEM) for https, or NULL */
};

struct net_result {
    int status;             /**< HTTP status, 0 on failure */
    const char *body;       /**< response body (valid during the callback only) */
    size_t len;
    const char *error;      /**< NULL, or why status is 0 */
};

typedef void (*net_done_fn)(void *ud, const struct net_result *res);

/** Create a client on `base`.  @return 0, ERR_NOMEM. */
int net_new(struct event_base *base, const struct net_opts *opts, struct net **out);
/** Also trust the CA certificates in `ca_file` (PEM) for https, on top of
 *  the system store (a provider behind a private CA).  @return 0, ERR_IO
 *  (unreadable or not PEM), ERR_NOMEM (no TLS context). */
int net_trust(struct net *n, const char *ca_file);
/** Cancel every pending request (their callbacks do not run) and free. */
void net_free(struct net *n);

/** Start a request.  `url` is http:// or https://; `headers` is NULL or
 *  alternating name, value strings ending with NULL (Host, Content-Length
 *  and Connection are set by the client); `body` may be NULL.
 *  `timeout_ms` bounds the whole exchange (connect to last byte; 0 = 10 s).
 *  @return the request (owned by the client until its callback has run or
 *  it is cancelled) or NULL with *rc = ERR_INVAL (bad URL, scheme, header
 *  with CR/LF), ERR_NOMEM. */
struct net_req *net_request(struct net *n, const char *method, const char *url,
                            const char *const *headers, const void *body, size_t len,
                            int timeout_ms, net_done_fn cb, void *ud, int *rc);
/** Abandon a pending request: its callback will not run. */
void net_cancel(struct net_req *r);

/** The event_base the client runs on. */
struct event_base *net_base(const struct net *n);

/** Requests started / finished with a status / failed, since net_new. */
void net_counts(const struct net *n, uint64_t *started, uint64_t *ok, uint64_t *failed);

/* ---------------------------------------------------------------------- */
/* The plugin side (core/luavm_net.c): run a Lua function as a coroutine    */
/* whose net.* calls yield until the HTTP exchange completes.               */

struct luavm_net_task;

/** Called once when the task ends.  rc: 0 (the function returned; its
 *  `nres` results are on `co`'s stack, valid during the call), ERR_LUA or
 *  ERR_BUDGET (the function raised or ran out of budget; `err` says where),
 *  ERR_BUSY (it did not finish within the task's time limit).  May run
 *  inside luavm_net_run (a function that never yields) or later from the
 *  event loop. */
typedef void (*luavm_net_done_fn)(void *ud, int rc, struct lua_State *co, int nres,
                                  const char *err);

struct luavm_net_opts {
    int timeout_ms;         /**< whole task, all requests included (30 s if 0) */
    int request_timeout_ms; /**< default per request (10 s if 0) */
    int max_requests;       /**< net calls allowed per task (8 if 0) */
    const char *idem_key;   /**< sent as Idempotency-Key unless the script sets it; may be NULL */
};

/** Run the function below `nargs` arguments on `vm`'s stack (both popped)
 *  in a new coroutine with fresh budgets per resume.  `done` is always
 *  called exactly once, unless the task is cancelled first.  @return 0 and
 *  *out = the task while it is pending (NULL when it already finished), or
 *  ERR_NOMEM (nothing called). */
int luavm_net_run(struct luavm *vm, struct net *net, int nargs, const struct luavm_net_opts *o,
                  luavm_net_done_fn done, void *ud, struct luavm_net_task **out);
/** Abandon a pending task (its HTTP request is cancelled, done is not called). */
void luavm_net_cancel(struct luavm_net_task *t);

/** Push a fresh read-only `net` table for one deliver() call:
 *    net.http_post(url, body, headers)  -> status, body | nil, reason
 *    net.http_request(method, url, body, headers) -> status, body | nil, reason
 *    net.json(value) -> string (compact JSON, to sign exact bytes)
 *  `body` is a string (sent as is) or a table (sent as JSON with
 *  Content-Type: application/json); `headers` a table of name = value
 *  strings.  Only usable inside a task started by luavm_net_run; elsewhere
 *  (render, top level, inside pcall) the call raises. */
void luavm_net_push_lib(struct lua_State *L);

#endif
