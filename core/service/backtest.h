/*
 * backtest.h — the requests that start a replay (engine/replay.h):
 * POST /api/v1/rules/replay and `promod replay`.  Turns an edit (a posted
 * script for one campaign file, a set of files, or another rules
 * directory) into two sandboxed generations — the rule set on disk as it
 * is, and the same with the edit applied (rules_gen_sandbox) — and runs
 * the replay over a window of the decision log.
 *
 * Threads: any thread with no store txn open; blocks for the replay.
 */
#ifndef PROMOD_BACKTEST_H
#define PROMOD_BACKTEST_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"
#include "engine/replay.h"

struct app;

/** Replay with the edit: `files` (a JSON object, file name below the
 *  rules directory → source; may be NULL) applied over `edit_dir` (NULL:
 *  the configured rules directory), against the configured rules
 *  directory as it is.  @return the report (replay_run), or NULL with `e`
 *  filled: 422 invalid_rules (a file does not validate: extra "errors"
 *  lists "path:line: message"), 503, 500. */
json_t *backtest_run(struct app *app, const json_t *files, const char *edit_dir,
                     const struct replay_opts *o, struct reqerr *e);

/** POST /api/v1/rules/replay's body: {"script": "...", "name"?: "x.lua"}
 *  (one campaign file: `name`, else the file of the campaign whose id the
 *  script declares, else "<id>.lua") or {"files": {"x.lua": "...", ...}};
 *  plus "from"/"to" (ISO-8601 or unix milliseconds; default the last 24
 *  hours), "limit" (1-10,000,000, default 100,000), "sample" (0 < s <= 1,
 *  default 1) and "show" (0-100, default 10).  @return the report, or
 *  NULL with `e` filled: 400 for a malformed body (the field named), and
 *  backtest_run's errors. */
json_t *backtest_http(struct app *app, const json_t *body, struct reqerr *e);

/** The eligible_never_passed warning over the last day of logged
 *  traffic (engine/replay.h replay_eligible): the rule set of `rules_dir`
 *  (a sandbox build; NULL: the live generation) replayed on at most
 *  BACKTEST_ELIG_MAX logged decides of [now_ms - 24 h, now_ms], a sample
 *  by decision id hash spread over the whole day when it holds more.
 *  Cost: one pass over the day's keys to count them, then at most
 *  about BACKTEST_ELIG_MAX dry decides on one sandboxed Lua state.
 *  @return replay_eligible's object plus "logged" (entries of the day),
 *  or NULL with `e` filled (422 invalid_rules, 503, 500). */
#define BACKTEST_ELIG_MAX 2000
json_t *backtest_eligible(struct app *app, const char *rules_dir, int64_t now_ms,
                          struct reqerr *e);
/** backtest_eligible on the live generation, cached per generation for
 *  at most an hour (GET /api/v1/rules): the first request after a publish
 *  pays for the replay, the others get the cached result.  Never called
 *  on the decide path.  @return a new reference, or NULL (no log, store
 *  error: no warning then). */
json_t *backtest_eligible_live(struct app *app);

/** A time for --from/--to and the body's from/to: unix milliseconds (all
 *  digits) or ISO-8601.  @return 0, ERR_INVAL. */
int backtest_parse_time(const char *s, int64_t *ms);

#endif
