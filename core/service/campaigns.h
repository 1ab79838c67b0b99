/*
 * campaigns.h — campaign management: metadata, the script file, versions,
 * lifecycle, approval.  What the /api/v1/campaigns handlers call.
 *
 * A campaign is metadata (name, owner, description, tags, cost per send /
 * per impression) plus its Lua script, which always lives as a file under
 * rules/ — the API writes `<rules_dir>/<id>.lua` (or the file a campaign
 * already came from), so the marketer's git history and the API agree.
 * Both paths meet in the ruleset generation that rules.c builds.
 *
 * Owns:
 *  - STORE_CAMPAIGNS: id → msgpack record {"id", "name", "owner",
 *    "description", "tags", "cost", "status" (absent for a file campaign no
 *    API call has touched: its file decides), "origin" ("api"|"file"),
 *    "file" (path under rules_dir), "channels", "rev" (bumped on every
 *    change: the ETag), "version" (newest saved script), "head_hash",
 *    "live_version" (the version the server runs; 0 = none approved yet),
 *    "submitted_version", "submitted_by", "created_at/_by",
 *    "updated_at/_by", "file_missing", "name_set" (the name was given through
 *    the API; otherwise it follows the script's `name`)}.  "cost" is stored
 *    only when given through the API (else the script's `cost` applies).
 *    rules.c reads "status" from it.
 *  - STORE_VERSIONS: id \0 be64(n) → {"version", "hash" (sha256 hex),
 *    "author", "at", "origin" ("api"|"file"|"rollback"|"clone"), "size",
 *    "source", "rollback_of", "approved_by/_at", "rejected_by/_at",
 *    "reason", "live_at"}.  Every saved script is one; none is deleted.
 *  - The files it writes: temp file in the same directory, fsync, rename,
 *    fsync of the directory.  The records are written in one durable txn,
 *    committed before the rename, and every mutation holds one module mutex
 *    from its first read to the rename, so the reloader never sees a file
 *    whose record is not there yet and a file save is never mistaken for an
 *    API save.  If writing the file fails nothing is recorded; if the
 *    rename fails after the commit the records are put back (the audit log
 *    keeps both entries).
 *
 * File saves: rules_set_reload_hook() runs campaigns' sync after every
 * published generation: a campaign file whose text is not the newest
 * version becomes one (author "file"), a new file becomes a campaign
 * (origin "file"), a file that disappeared is flagged (and shown as
 * archived) — each with an audit entry.
 *
 * require_approval (config): rules_set_source_filter() makes the reloader
 * serve the `live_version` source while the file holds a newer, unapproved
 * version; approving that exact version (by another actor than its author
 * and its submitter) makes it live.  With require_approval off every valid
 * save goes live on reload.
 *
 * Errors: every entry point returns a new JSON value or NULL with `*e`
 * (a struct reqerr, base/reqerr.h; zeroed by the caller, released by
 * http_reply_reqerr or reqerr_clear) filled as the contract's error:
 * status, code, message, field, and extra members such as "current" and
 * "allowed" for an illegal transition, "current_rev" for a stale rev,
 * "errors" (file:line list) for a script that does not validate.
 *
 * Files: campaigns.c (lifecycle and approval), campaigns_view.c (view,
 * list), campaigns_sync.c (the files under rules/ and the reloader's
 * hooks), campaigns_versions.c (versions, diff, rollback); they share
 * campaigns_internal.h, which is not part of this API.
 *
 * Threads: any worker thread; never call with a store txn open (the
 * functions reload the rules, which reads the store on this thread).
 */
#ifndef PROMOD_CAMPAIGNS_H
#define PROMOD_CAMPAIGNS_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"

struct app;

/** Largest script accepted (the loader's own limit). */
#define CAMPAIGNS_MAX_SCRIPT (1u << 20)
#define CAMPAIGNS_MAX_NAME 200
#define CAMPAIGNS_MAX_DESCRIPTION 4096
#define CAMPAIGNS_MAX_TAGS 32
#define CAMPAIGNS_MAX_TAG 64
#define CAMPAIGNS_MAX_LIST 500

/** Install the reloader's source filter and reload hook.  Call once on the
 *  main thread before rules_start().  @return 0. */
int campaigns_start(struct app *app);

/** POST /campaigns: `body` = {"id", "script", "name"?, "owner"?,
 *  "description"?, "tags"?, "cost"?}.  Unknown fields, bad types, an
 *  invalid id or script, an id or file already taken are refused with
 *  nothing written.  Starts as "draft".  @return the campaign view (new). */
json_t *campaigns_create(const json_t *body, const char *actor, struct reqerr *e);

/** The campaign view: metadata, "status", "rev", "version",
 *  "live_version", "pending_version", "channels", "schedule",
 *  "in_schedule", "candidate", "load", "allowed_actions", and with
 *  `with_script` the newest version's "script".  404 when unknown. */
json_t *campaigns_get(const char *id, int with_script, struct reqerr *e);

struct campaigns_filter {
    const char *status;   /**< a status name, "all" (archived included), or NULL
                               (everything but archived) */
    const char *channel;  /**< campaigns on this channel */
    const char *q;        /**< case-insensitive text in the name or id */
    const char *owner;    /**< exact */
    const char *tag;      /**< has this tag */
    long limit;           /**< 1..CAMPAIGNS_MAX_LIST */
    const char *cursor;   /**< ids after this one (the previous page's next_cursor) */
};
/** {"campaigns": [views without script], "next_cursor": id|null}, by id. */
json_t *campaigns_list(const struct campaigns_filter *f, struct reqerr *e);

/** PUT: update the fields given (metadata and/or "script"; "rev" in the
 *  body works like If-Match).  `if_match` < 0 = unconditional; a stale rev
 *  is 409 version_conflict.  A changed script is a new version (live at
 *  once, or pending approval).  Editing a campaign pending approval moves it
 *  back to draft.  @return the view. */
json_t *campaigns_update(const char *id, const json_t *body, const char *actor, long if_match,
                         struct reqerr *e);

/** DELETE: status "archived", the file removed, records and versions kept,
 *  an outbound send stopped.  @return the view. */
json_t *campaigns_delete(const char *id, const char *actor, long if_match,
                         struct reqerr *e);

/** Lifecycle and approval: `action` is launch, pause, stop, submit,
 *  approve, reject or clone.  `body` (may be NULL) carries {"version": n}
 *  for approve/reject, {"reason": "..."} for reject, {"id", "name"?,
 *  "script"?} for clone.  An illegal action is 409 illegal_transition
 *  naming the current status and the allowed actions.  After the status
 *  is committed, outbound sends follow (sends.h): launch → sends_start,
 *  launch of a paused campaign → sends_resume, pause → sends_pause, stop →
 *  sends_stop; the view then carries "send": {"action", "ok", "error"?}
 *  (a send failure does not undo the status change; it is logged).
 *  @return the view (for clone: of the new campaign). */
json_t *campaigns_action(const char *id, const char *action, const json_t *body,
                         const char *actor, long if_match, struct reqerr *e);

/** Versions, newest first: {"campaign_id", "live_version", "versions":
 *  [{"version", "hash", "author", "at", "origin", "size", "state"
 *  (live|pending|rejected|superseded), ...}], "next_cursor"}.  `before` > 0
 *  lists versions older than it.  Sources are not included. */
json_t *campaigns_versions(const char *id, long limit, long before, struct reqerr *e);

/** One version with its "source"; with `diff_to` > 0 also "diff", a
 *  unified line diff from version `diff_to` to this one. */
json_t *campaigns_version_get(const char *id, long n, long diff_to, struct reqerr *e);

/** Rollback: a new version with version `n`'s source (live at once when
 *  approval is off or `n` was approved before, else pending).  @return the
 *  view. */
json_t *campaigns_rollback(const char *id, long n, const char *actor, long if_match,
                           struct reqerr *e);

/** Cost metadata for ROI: the record's cost when set through the API,
 *  else the script's `cost` table.  @return 0 or ERR_NOTFOUND. */
int campaigns_cost(const char *id, double *per_send, double *per_impression);

#endif
