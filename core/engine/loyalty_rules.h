/*
 * loyalty_rules.h — the loyalty files: `loyalty/NAME.lua` (beside rules/, or
 * the config's `loyalty_dir`), each returning a table:
 *
 *   return {
 *     tiers  = { { name = "silver", points = 1000 }, { name = "gold", points = 5000 } },
 *     window = "365d",   -- tiers count the points earned in this window
 *     expiry = "365d",   -- earned points expire this long after they were earned
 *     earn   = function(event, p) ... return points [, "reason"] end,
 *   }
 *
 * `tiers`, `window` and `expiry` are the program: at most one file may set
 * them.  Any file may have an `earn` rule; insight/loyalty_earn.h runs
 * every rule on every ingested event.
 *
 * Loading works like campaign files: each file is compiled and validated
 * in a throwaway sandbox (the same luavm sandbox and budgets), problems
 * are "loyalty/x.lua:12: message", and a file that does not load keeps its
 * previous good version live.  The result is an immutable, refcounted
 * generation published with one pointer swap.  Hot reload: the directory
 * is polled every 500 ms from the main loop (a saved file is live within
 * a second).  `promod check` validates loyalty files too.
 *
 * Threads: acquire/release/program from any thread; start/attach/reload/
 * stop on the main thread.
 */
#ifndef PROMOD_LOYALTY_RULES_H
#define PROMOD_LOYALTY_RULES_H
#include <jansson.h>
#include <stdint.h>
#include "base/config.h"
#include "engine/loyalty.h"

struct event_base;

struct loyalty_rules_file {
    char *path;        /**< as shown to users, "loyalty/welcome.lua" */
    char *source;      /**< live source (last good); NULL when never loaded */
    size_t len;
    uint32_t hash;     /**< of the file on disk */
    int ok;            /**< the file on disk loaded cleanly */
    char *error;       /**< "file:line: message" for the version on disk, or NULL */
    int has_earn;      /**< the live source has an earn rule */
    int64_t loaded_at;
};

struct loyalty_rules_gen {
    int refs;
    uint64_t seq;
    struct loyalty_program prog;     /**< defaults when no file sets one */
    struct loyalty_rules_file *files;
    int nfiles;
    int nearn;                       /**< files with an earn rule */
};

/** The loyalty directory of a config (loyalty_dir, else "loyalty" beside
 *  rules_dir), written into `out`. */
void loyalty_rules_dir(const struct config *cfg, char *out, size_t cap);

/** First load (errors are reported, not fatal). */
int loyalty_rules_start(const struct config *cfg);
/** Poll the directory every 500 ms on `base` (the main loop). */
void loyalty_rules_attach(struct event_base *base);
void loyalty_rules_stop(void);
/** Rescan now; returns the number of files with errors. */
int loyalty_rules_reload(int force);

struct loyalty_rules_gen *loyalty_rules_acquire(void); /**< NULL before start */
void loyalty_rules_release(struct loyalty_rules_gen *g);
/** A copy of the live program (no tiers, 365-day window, no expiry before
 *  any file sets one). */
void loyalty_rules_program(struct loyalty_program *out);

/** Every loyalty file as {"path", "kind": "loyalty", "ok", "error",
 *  "loaded_at", "earn"} (for GET /api/v1/rules). */
json_t *loyalty_rules_status_json(void);

/** Validate one file's source: problems appended to `errors` as
 *  "path:line: message".  With `prog` given, a program it sets is written
 *  there and *has_prog = 1.  @return 0 when valid. */
int loyalty_rules_validate(const char *path, const char *src, size_t len, json_t *errors,
                           struct loyalty_program *prog, int *has_prog, int *has_earn);

/** `promod check`: validate the given loyalty files, or every file of the
 *  loyalty directory when n == 0 (a missing directory is fine); print each
 *  problem.  @return the number of files with problems. */
int loyalty_rules_check_cli(const struct config *cfg, const char **paths, int n);

/** Is `path` a loyalty file (under the loyalty directory, or with a
 *  "loyalty" path component)? */
int loyalty_rules_is_loyalty_path(const struct config *cfg, const char *path);

#endif
