/*
 * exp_admin.h — experiments as managed objects: the definition files under
 * experiments/, the records, the lifecycle, the audit trail, and what the
 * /api/v1/experiments handlers call.
 *
 * A definition always lives as a file (`experiments/<id>.lua`, returning a
 * table; docs/experiments.md "The experiment file"), whether it was written
 * by hand or by POST/PUT (the API renders the canonical definition as Lua).
 * Files are hot-reloaded: a change to the directory reloads within the
 * debounce (`reload_debounce_ms`); a file that does not load keeps its
 * previous version live and shows `file:line: message`.
 *
 * Owns STORE_EXPERIMENTS: id → msgpack record {"id", "xkey" (the number its
 * exposures are keyed by), "name", "status", "definition" (the canonical
 * definition last recorded), "file" (path under the directory), "origin"
 * ("api"|"file"), "head_hash" (sha256 of the file as recorded), "rev",
 * "created_at/_by", "updated_at/_by", "started_at"/"started_ts" (first
 * start), "stopped_at"/"stopped_ts", "concluded_at"/"concluded_ts",
 * "winner", "keep_holdout", "file_missing"}.  Status lives in the record
 * (the file's `status` only seeds a new file's record).
 *
 * Lifecycle: draft → running (start) ⇄ stopped (stop, start), running |
 * stopped → concluded (winner), any but running → archived (DELETE: the
 * file goes, records and exposures stay, results stay readable).  Every
 * change is an audit entry ("experiment.create|update|start|stop|winner|
 * archive", actor "file" for hand edits) with before/after.  After each
 * change the live set (engine/experiments.h) is republished, so a start,
 * stop or winner takes effect from the next decide.
 *
 * Refusals (400 with the field): a definition experiments_parse refuses; a
 * campaign that is not loaded ("campaign_id"/"campaigns[i]"); a variant the
 * campaign does not have ("variants[i].id"); starting, or editing while
 * running, an experiment whose namespace range overlaps a running
 * experiment on the same campaign ("namespace").  409 for an id taken or
 * an illegal transition (with "current" and "allowed"), 404 unknown.
 *
 * Threads: the API functions on worker threads; exp_admin_start/attach/
 * stop on the main thread.  One module mutex serialises every mutation
 * and reload.  Never call with a store transaction open.
 */
#ifndef PROMOD_EXP_ADMIN_H
#define PROMOD_EXP_ADMIN_H
#include <jansson.h>
#include "base/reqerr.h"

struct app;
struct config;
struct event_base;

/** Load the directory (creating it when missing), sync records, publish
 *  the live set, start the exposure writer.  Main thread, after
 *  rules_start().  @return 0 or an error (the server still starts). */
int exp_admin_start(struct app *app);
/** Watch the directory for changes on `base` (the main thread's loop). */
void exp_admin_attach(struct app *app, struct event_base *base);
/** Stop watching, store queued exposures, release the live set. */
void exp_admin_stop(void);
/** Reload the directory now (POST /api/v1/experiments/reload, tests). */
int exp_admin_reload(void);

/** `promod check` of experiment files: each file (or the *.lua of each
 *  directory; default: the experiments directory) loaded and its
 *  definition checked as the server would (campaign names are checked
 *  when the server loads it, against its rules).  Prints `file:line:
 *  message` per problem and a count.  @return the exit status (0 or 1). */
int exp_admin_check_cli(const struct config *cfg, const char **paths, int n);

/** POST: a definition (no "status": use start).  Created as draft, the
 *  file written.  @return the view (new) or NULL with `e` filled. */
json_t *exp_admin_create(const json_t *body, const char *actor, struct reqerr *e);
/** PUT: replace the definition (its "id", if given, must be `id`); not
 *  while concluded or archived. */
json_t *exp_admin_update(const char *id, const json_t *body, const char *actor, struct reqerr *e);
/** DELETE: archive (not while running). */
json_t *exp_admin_delete(const char *id, const char *actor, struct reqerr *e);
/** POST .../start | stop | winner; `body` ({"variant", "keep_holdout"?}
 *  for winner) may be NULL otherwise. */
json_t *exp_admin_action(const char *id, const char *action, const json_t *body,
                         const char *actor, struct reqerr *e);

/** The view: the definition and record, "load" (the file's status and
 *  error), "problems" (campaigns or variants the loaded rules lack),
 *  "live" (in the published set), "allowed_actions". */
json_t *exp_admin_get(const char *id, struct reqerr *e);
/** {"experiments": [views], "errors": [{"file", "error"}]} — files that do
 *  not load and name no recorded experiment.  `status` filters (NULL:
 *  everything but archived; "all"). */
json_t *exp_admin_list(const char *status, struct reqerr *e);

/** GET .../results (insight/exp_results.h). */
json_t *exp_admin_results(const char *id, struct reqerr *e);
/** GET /api/v1/experiments/recommendations: every running experiment's
 *  recommendation, and lists of the ids that are significant,
 *  underpowered (with days still needed), have an SRM or a guardrail
 *  regression. */
json_t *exp_admin_recommendations(struct reqerr *e);

#endif
