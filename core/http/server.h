/*
 * server.h — processes and threads: libevent bases, the listening sockets,
 * worker threads, signals.  No business logic.
 *
 * N worker threads each have a listening socket on the same port
 * (SO_REUSEPORT; the kernel spreads new connections over them), an
 * event_base and an evhttp.  A request is
 * handled start to finish on the thread that accepted its connection,
 * which owns per-thread state (its Lua state, its read transaction) in
 * worker->ctx.  The main thread runs a small event loop for signals and
 * timers (file watching, reload, delivery scheduling).
 *
 * Every connection is read by wire.c before evhttp parses it: request
 * heads are checked whole (syntax, framing, size, header_timeout) and
 * refusals answered in the contract's shape; bodies over the route's limit
 * (max_body, or max_import_body for ROUTER_BIG_BODY routes) get 413 before
 * they are read when Content-Length says so, and dispatch() checks the
 * limit again on the body it got.
 *
 * The ops thread (ops_port in the config): one more event_base with its
 * own listening socket on listen_host, serving only the ROUTER_OPS routes
 * (GET /healthz, GET /metrics) and never running Lua.  A worker inside a
 * hook (up to hook_time_limit_ms of CPU per call, several calls per
 * decide) cannot read, let alone answer, the connections the kernel gave
 * it, so a health probe on the main port waits behind the hook; on the
 * ops port it does not.  Like an admin port (Envoy) or a control socket
 * (Knot): point liveness probes and scrapers at it.  Other paths there
 * get 404.  Same wire reader, TLS and limits as the main port.
 *
 * TLS (tls.h) when the config names a certificate; SIGHUP reloads it.
 * Listening beyond loopback needs API keys, and with keys it needs TLS
 * unless insecure_http is set (logged as a warning at every start).
 *
 * Shutdown (SIGTERM/SIGINT or server_stop): listeners close first, every
 * worker finishes the request it is running (handlers run to completion),
 * flushes replies for up to 2 s, then the loops exit and threads join.
 */
#ifndef PROMOD_SERVER_H
#define PROMOD_SERVER_H
#include <pthread.h>
#include <stddef.h>
#include "base/config.h"

struct event_base;
struct evhttp;
struct server;

struct worker {
    int idx;
    int ops;            /**< the ops thread (cfg->ops_port): never runs Lua, serves only
                             ROUTER_OPS routes */
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
    struct evconnlistener *lev;
    struct wire *wire;  /**< the connection reader in front of evhttp (wire.h) */
    struct server *srv;
    void *ctx; /**< owned by the application's thread hooks */
};

struct server_opts {
    const struct config *cfg;
    /** Called on each worker thread before it serves / after it stops. */
    int (*thread_init)(struct worker *w);
    void (*thread_fini)(struct worker *w);
};

/** Bind, start the workers.  Refuses (ERR_INVAL) a non-loopback address
 *  when no API key is configured, or without TLS unless insecure_http;
 *  ERR_INVAL too when the TLS files do not load.  @return 0, ERR_INVAL,
 *  -errno. */
int server_start(const struct server_opts *o, struct server **out);
/** The bound port (useful with port 0). */
int server_port(const struct server *s);
/** The ops listener's bound port, or -1 when ops_port is not configured. */
int server_ops_port(const struct server *s);
/** The main thread's event base, for timers and signals. */
struct event_base *server_main_base(struct server *s);
/** Run the main loop until a signal or server_stop(); then shut down the
 *  workers and return. */
void server_run(struct server *s);
/** Ask the server to stop (any thread, async-signal-unsafe). */
void server_stop(struct server *s);
void server_free(struct server *s);
int server_nworkers(const struct server *s);
struct worker *server_worker(struct server *s, int i);

#endif
