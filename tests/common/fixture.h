/*
 * fixture.h — test fixtures (prefix tfx_): a real promod server on a free
 * loopback port with its own temporary data, rules and plugins
 * directories, and a small blocking HTTP/1.1 client to talk to it.
 *
 * Nothing here stands in for a promod component: the server is the built
 * binary (PROMOD_BIN), the store is real LMDB, rules run in real LuaJIT.
 */
#ifndef PROMOD_TFX_H
#define PROMOD_TFX_H
#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

struct tfx_server {
    pid_t pid;
    int port;
    char dir[256];      /**< temp root */
    char data[300];     /**< dir/data */
    char rules[300];    /**< dir/rules */
    char plugins[300];  /**< dir/plugins (the project's plugins copied in) */
    char models[300];   /**< dir/models (model files) */
    char segments[300]; /**< dir/segments (empty) */
    char config[300];   /**< dir/promod.lua */
    char log[300];      /**< dir/server.log (stderr of the server) */
};

/** Make the temp tree; copy the project's plugins/ (and rules/lib when
 *  `with_lib`); write a config whose body is `config_fields` (Lua table
 *  fields, e.g. "test_clock = true,"), or just the directories when NULL. */
void tfx_server_init(struct tfx_server *s, const char *config_fields);
/** Write a file under the temp root (relative path, dirs created), atomically. */
void tfx_write(struct tfx_server *s, const char *rel, const char *content);
/** Remove a file under the temp root. */
void tfx_unlink(struct tfx_server *s, const char *rel);
/** Start `promod serve` and wait (<= 10 s) until it listens. 0 on success. */
int tfx_server_start(struct tfx_server *s);
/** Same with another --listen value ("0.0.0.0:0").  Returns 0 once the
 *  server listens, -1 when it exited (or never listened): the reason is in
 *  its log. */
int tfx_server_start_listen(struct tfx_server *s, const char *listen);
/** SIGTERM and wait; returns the exit status (or -1). */
int tfx_server_stop(struct tfx_server *s);
/** SIGKILL and wait. */
void tfx_server_kill(struct tfx_server *s);
/** Is the server process still alive? */
int tfx_server_alive(struct tfx_server *s);
/** Stop if running and delete the temp tree. */
void tfx_server_cleanup(struct tfx_server *s);
/** Whole server log (malloc'd). */
char *tfx_server_log(struct tfx_server *s);

/** Why tfx_http got no (complete) answer: the status is then 0. */
enum tfx_fail {
    TFX_FAIL_NONE = 0,    /**< an answer arrived */
    TFX_FAIL_SOCKET,      /**< socket() failed (fail_errno) */
    TFX_FAIL_CONNECT,     /**< connect() failed (fail_errno: ECONNREFUSED, ...) */
    TFX_FAIL_SEND,        /**< sending the request failed (fail_errno) and nothing came back */
    TFX_FAIL_TIMEOUT,     /**< no byte for the whole read timeout (got_bytes may be > 0) */
    TFX_FAIL_READ,        /**< read() failed, e.g. ECONNRESET (fail_errno), before a whole answer */
    TFX_FAIL_EOF_EMPTY,   /**< the server closed before sending a single byte */
    TFX_FAIL_EOF_PARTIAL, /**< the server closed in the middle of the answer (head or body cut) */
    TFX_FAIL_MALFORMED,   /**< a whole answer that is not "HTTP/1.x NNN ..." */
};

struct tfx_resp {
    int status;          /**< 0 when no answer arrived: see fail */
    char *body;          /**< NUL-terminated (what arrived, when status is 0) */
    size_t len;
    char ctype[128];
    char headers[4096];  /**< raw header block */
    json_t *json;        /**< parsed body when it is JSON, else NULL */
    enum tfx_fail fail;  /**< why status is 0; with a status, set only when the
                              body was cut short (EOF_PARTIAL, TIMEOUT, READ) */
    int fail_errno;      /**< the errno of a failed socket call, else 0 */
    size_t got_bytes;    /**< bytes received before the failure */
    long fail_ms;        /**< milliseconds from connect to the failure */
    long connect_ms;     /**< milliseconds connect() took */
    int local_port;      /**< the client's port, to find the connection in server logs */
};

/** Short name of a failure cause ("connect", "eof_empty", ...). */
const char *tfx_fail_name(enum tfx_fail f);
/** One line describing why `r` got no answer (into buf; returns buf):
 *  cause, errno text, bytes received, time, client port. */
const char *tfx_fail_describe(const struct tfx_resp *r, char *buf, size_t len);

/** One request on a fresh connection.  `headers` are extra raw lines
 *  ("Authorization: Bearer x\r\n") or NULL.  Returns r->status. */
int tfx_http(struct tfx_server *s, const char *method, const char *path, const char *headers,
             const char *body, size_t len, struct tfx_resp *r);
/** Convenience: JSON text body (may be NULL); returns the status. */
int tfx_req(struct tfx_server *s, const char *method, const char *path, const char *json,
            struct tfx_resp *r);
void tfx_resp_free(struct tfx_resp *r);

/** A connected TCP socket to 127.0.0.1:port (TCP_NODELAY), or -1. */
int tfx_connect_port(int port);
/** Write all of `data`: 0, or -1 when the peer closed or reset. */
int tfx_send_all(int fd, const void *data, size_t len);
/** Read until the peer closes, or `timeout_ms` pass without data; the bytes
 *  (malloc'd, NUL-terminated) and their count in *len. */
char *tfx_read_all(int fd, size_t *len, int timeout_ms);
/** How tfx_read_all_why stopped. */
enum tfx_read_end { TFX_READ_EOF, TFX_READ_TIMEOUT, TFX_READ_ERROR };
/** tfx_read_all, also saying how it stopped (*end) and the errno of a
 *  failed poll/read (*err, else 0). */
char *tfx_read_all_why(int fd, size_t *len, int timeout_ms, enum tfx_read_end *end, int *err);

/** Send raw bytes, read the answer until close (<= 5 s); malloc'd, NUL-terminated. */
char *tfx_raw(struct tfx_server *s, const void *data, size_t len);

/** Error code string of a contract error body, or "" (borrowed). */
const char *tfx_err_code(const struct tfx_resp *r);

/** Run the promod binary to completion with the given arguments (a NULL-
 *  terminated list after argv[0]), stdout and stderr captured together in
 *  *output (malloc'd, may be NULL to discard).  Killed after 120 s.
 *  @return the exit status, or -1 when it died of a signal. */
int tfx_promod(char **output, const char *arg, ...) __attribute__((sentinel));

/** Find `name{labels} value` (labels exactly as rendered, or "" for none)
 *  in Prometheus text; @return 1 and the value, 0 when the series is absent. */
int tfx_metric(const char *text, const char *name, const char *labels, double *value);

/** Wait until every thread's rules worker has adopted the newest rule set
 *  (GET /api/v1/rules: live_generation >= generation), polling up to
 *  timeout_ms.  1 when reached — what a test waits for after an edit,
 *  instead of sleeping through the workers' 250 ms adoption tick. */
int tfx_wait_rules_live(struct tfx_server *s, int timeout_ms);

/** Make a fresh temp directory path (mkdtemp) into buf. */
void tfx_tmpdir(char *buf, size_t len);
/** rm -rf */
void tfx_rmrf(const char *path);

#endif
