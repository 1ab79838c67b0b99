/*
 * config.h — the operator's configuration: `config/promod.lua` returns a
 * table; every key has a default so the server starts with no file at all.
 *
 * The file runs in a throwaway Lua state with only the base, string, table
 * and math libraries, plus `env(name)` to read an environment variable.
 * Unknown keys and values of the wrong type or range are errors naming the
 * key ("config/promod.lua: listen: expected \"HOST:PORT\""), and the server
 * refuses to start.  The result is a plain C struct, read-only after start
 * and shared by every thread.
 */
#ifndef PROMOD_CONFIG_H
#define PROMOD_CONFIG_H
#include <stddef.h>
#include <jansson.h>

/** Roles nest: a key may call what its role and every lower role may.
 *  `checkout` is the shop's server: decide and events, plus coupon
 *  validation, redemption and rollback and loyalty transactions (calls
 *  that move money or points, which a key embedded in a web page must not
 *  make). */
enum config_role { ROLE_PUBLIC = 0, ROLE_DECIDE = 1, ROLE_CHECKOUT = 2, ROLE_MARKETER = 3,
                   ROLE_ADMIN = 4 };

#define CONFIG_KEY_DIGEST 32 /**< SHA-256 */

/** Where an API key's secret came from. */
enum config_key_source {
    CONFIG_KEY_SHA256 = 0, /**< `sha256 = "<hex>"`: only the digest was ever in the file */
    CONFIG_KEY_PLAIN,      /**< `key = "..."`: the secret is in the file (deprecated) */
    CONFIG_KEY_ENV,        /**< `key_env = "VAR"`: read from the environment */
};

/** One API key.  Only the SHA-256 of the secret is kept in memory: a plain
 *  `key` or `key_env` is hashed at load and the text dropped. */
struct config_key {
    char *id;
    unsigned char sha256[CONFIG_KEY_DIGEST];
    enum config_role role;
    enum config_key_source source;
};

/** A rate limit: at most `limit` per `window_s` seconds; limit 0 = off.
 *  Written in the file as { 100, "1m" } (s, m, h, d), or false. */
struct config_rate {
    long limit;
    long window_s;
};

struct config {
    char *listen_host;        /**< "127.0.0.1" */
    int listen_port;          /**< 8080; 0 = any free port */
    int listen_backlog;       /**< accept queue per listening socket (4096; the kernel caps it
                                   at net.core.somaxconn) */
    int ops_port;             /**< the ops listener (/healthz, /metrics on a thread that never
                                   runs Lua; server.h): -1 = none (default), 0 = any free port */
    char *data_dir;           /**< "./data" */
    char *rules_dir;          /**< "./rules" */
    char *plugins_dir;        /**< "./plugins" */
    char *models_dir;         /**< "./models" (model files, docs/models.md) */
    int train_threads;        /**< XGBoost threads of a training in the server (1) */
    char *segments_dir;       /**< "./segments" */
    int segments_sweep_s;     /**< re-evaluation of time-based segments, seconds (600) */
    char *experiments_dir;    /**< experiment files; NULL = "experiments" beside rules_dir
                                   (config_experiments_dir) */
    char *templates_dir;      /**< campaign templates; NULL = "templates" beside rules_dir
                                   (config_templates_dir) */
    char *web_dir;            /**< the web console's files, served at /ui/ ("./web"); NULL = off */
    char *loyalty_dir;        /**< loyalty program and earn rules; NULL = "loyalty" beside rules_dir */
    int threads;              /**< worker threads; 0 = number of cores */
    size_t map_size;          /**< LMDB map's initial size, bytes (1 GiB); it grows */
    size_t map_max;           /**< largest the map may grow to, bytes; 0 = no limit (0) */
    int store_writemap;       /**< 1 = MDB_WRITEMAP commits (default), 0 = pwrite */
    int store_readahead;      /**< 1 = the kernel's readahead on the store's map (default 0) */
    int store_prewarm;        /**< 1 = read the store into the page cache after open (default 1) */
    int sync_interval_ms;     /**< background flush of non-durable commits (1000) */
    size_t max_body;          /**< request body limit, bytes (1 MiB) */
    size_t max_import_body;   /**< bulk import/events body limit (64 MiB) */
    int default_limit;        /**< decide: offers when "limit" is absent (3) */
    int max_limit;            /**< decide: largest "limit" accepted (50) */
    long instr_budget;        /**< Lua VM instructions per hook call (1,000,000) */
    size_t lua_mem_limit;     /**< bytes per worker Lua state (256 MiB) */
    long hook_time_ms;        /**< CPU time per hook call, ms (100) */
    long load_time_ms;        /**< CPU time to load one rules/plugins file, ms (500) */
    size_t lua_file_mem_limit; /**< bytes one file may keep between calls; 0 = a quarter of lua_mem_limit */
    int lua_log_per_sec;      /**< print/promo.log lines per second per file; 0 = no limit (20) */
    int log_level;            /**< enum log_level (info) */
    int access_log;           /**< 1 = one line per request (default 0) */
    int require_approval;     /**< campaign script changes need approval (0) */
    int test_clock;           /**< allow POST /api/v1/admin/clock (0) */
    long global_daily_cap;    /**< offers per customer per day over all campaigns; 0 = none */
    int reload_debounce_ms;   /**< quiet time after a file change before reloading (100) */
    int event_retention_days; /**< raw events older than this are compacted (90) */
    double dlog_sample;       /**< decision_log_sample: share of customers whose decides are
                                   logged, 0-1 (0 = the decision log is off; default 0) */
    int dlog_retention_days;  /**< decision_log_retention_days: older entries are swept (7) */
    long dlog_queue;          /**< decision_log_queue: decides waiting for the log's writer
                                   before new ones are dropped (16384) */
    double request_timeout;   /**< seconds (30) */
    int header_timeout;       /**< seconds from a request head's first byte to its end (10) */
    size_t max_header;        /**< request line + header fields, bytes (64 KiB) */
    char *tls_cert;           /**< PEM certificate chain file; NULL = plain HTTP */
    char *tls_key;            /**< PEM private key file (set together with tls_cert) */
    int insecure_http;        /**< allow plain HTTP beyond loopback with keys (0) */
    struct config_rate rate_per_key;     /**< requests per API key (off) */
    struct config_rate rate_per_address; /**< requests per client address (off) */
    struct config_rate coupon_velocity_customer; /**< validate/redeem calls per customer (20 per 1m) */
    struct config_rate coupon_velocity_prefix;   /**< failed coupon guesses per code prefix (50 per 1m) */
    int coupon_prefix_len;    /**< leading characters of a code that form its prefix (4) */
    struct config_key *keys;  /**< API keys */
    int nkeys;
    json_t *channels;         /**< per-channel provider settings (endpoints, secrets), or NULL */
    char *source;             /**< path the config came from, or "(defaults)" */
};

/** Fill `c` with defaults. */
void config_defaults(struct config *c);

/** Load `path` over the defaults.  On error returns ERR_INVAL (or -errno
 *  for an unreadable file) and writes "path: key: problem" into err. */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/** config_load() on text already in memory; `name` stands for the path in
 *  messages and in c->source.  Same returns. */
int config_load_source(struct config *c, const char *src, size_t len, const char *name, char *err,
                       size_t errlen);

/** Parse "HOST:PORT" into the config.  @return 0 or ERR_INVAL. */
int config_set_listen(struct config *c, const char *hostport);

/** Where experiment files live: `experiments_dir`, else the directory
 *  "experiments" beside rules_dir ("./rules" → "./experiments").  Writes
 *  into out (always NUL-terminated) and returns it. */
const char *config_experiments_dir(const struct config *c, char *out, size_t len);

/** Where campaign templates live: `templates_dir`, else "templates" beside
 *  rules_dir ("./rules" → "./templates"); as config_experiments_dir. */
const char *config_templates_dir(const struct config *c, char *out, size_t len);

/** Find the key matching a bearer token, or NULL.  The token is hashed
 *  and its digest compared with every key's in constant time (no early
 *  exit), so the time taken says nothing about which key came close. */
const struct config_key *config_find_key(const struct config *c, const char *token);

/** SHA-256 of a key as 64 lowercase hex digits into out[65] (what
 *  `sha256 = "..."` holds; `promod key` prints it). */
void config_key_hash_hex(const char *key, size_t len, char out[65]);

const char *config_role_name(enum config_role r);

void config_free(struct config *c);

#endif
