/*
 * replay.h — "if I publish this edit, what changes for the traffic we
 * had?": logged decides (engine/dlog.h) re-run on two sandboxed rule sets,
 * the rule set as it is and the edited one, and the difference reported
 * per campaign.
 *
 * Each rule set runs in a worker of its own (rules_sim_worker: a separate
 * Lua state adopting a generation that is never published), through the
 * very pipeline a live decide runs (decide_run_worker), as a dry run with
 * the customer as logged (struct decide_as_was: the stored profile and
 * p.stats as decide read them, the logged ctx.now, math.random seeded
 * from the logged decision id).  Nothing is reserved, counted, logged or
 * sent: no counter, event, outbox message or decision log entry is
 * written, and hook failures go to the replay's own tally, not /metrics.
 *
 * Both sides are replayed (rather than comparing the edit with the logged
 * offers) so that what differs is the edit alone, not what changed since
 * the decide was logged (a schedule that closed, a segment rebuilt); how
 * many baseline results differ from the logged offers is reported as
 * "drift".  Declared caps are counted within the replay, in memory, over
 * the edited rule set's offers (sliding windows of each cap's length);
 * caps are reported as "would bind" and do not remove offers.
 *
 * Deterministic: the same log, rule sets and options give the same report
 * (sampling is by decision id hash, random draws are seeded per decide).
 *
 * Threads: replay_run on any thread that owns no Lua state of its own in
 * use (an HTTP worker handling the request, or the CLI's main thread);
 * it blocks for the whole replay.
 */
#ifndef PROMOD_REPLAY_H
#define PROMOD_REPLAY_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"

struct store;
struct rules_gen;

struct replay_opts {
    int64_t from_ms, to_ms; /**< the logged decides replayed: [from_ms, to_ms] */
    long limit;             /**< at most this many (0: all in the window) */
    double sample;          /**< share replayed, chosen by decision id hash (0 < sample <= 1) */
    int show;               /**< changed decisions shown with both explains (0-100) */
};

/** Replay on `base` (the rule set as it is) and `edit` (the edited one):
 *  generations whose references pass to the replay; `base_dir` and
 *  `edit_dir` are the rules directories their require() reads (NULL: the
 *  configured one).  @return a new report object:
 *  {"window": {"from","to"}, "decisions", "changed", "changed_share",
 *   "drift", "failed": {"before","after"}, "seconds", "decisions_per_second",
 *   "campaigns": {id: {"offers_before","offers_after","decisions_changed",
 *      "customers_reached_before","customers_reached_after",
 *      "customers_new","customers_lost","errors_before","errors_after",
 *      "caps": [{"scope","window","limit","would_bind"}]}},
 *   "sample": [{"decision_id","customer_id","at","offers_before",
 *      "offers_after","explain_before","explain_after"}],
 *   "eligible": {id: {"reached","passed"}} (the edited rule set's eligible
 *      hooks), "warnings": [eligible_never_passed, see replay_elig_warnings]}
 *  or NULL with `e` filled (503 store, 500 out of memory). */
json_t *replay_run(struct store *st, struct rules_gen *base, const char *base_dir,
                   struct rules_gen *edit, const char *edit_dir, const struct replay_opts *o,
                   struct reqerr *e);

/* --- the eligible_never_passed warning (replay_elig.c) -------------------- */

/** Logged decides of the window re-run on one sandboxed rule set `g`
 *  (its reference passes to the call; `dir` as for replay_run), counting
 *  per campaign how many reached its `eligible` hook and how many passed
 *  it.  `o->limit` and `o->sample` bound the work as for replay_run
 *  (`show` is unused).  Same threads as replay_run.  @return a new object
 *  {"window": {"from","to"}, "decisions", "failed", "eligible": {id:
 *  {"reached","passed"}}, "warnings": [as replay_elig_warnings]}, or NULL
 *  with `e` filled (503 store, 500 out of memory). */
json_t *replay_eligible(struct store *log, struct rules_gen *g, const char *dir,
                        const struct replay_opts *o, struct reqerr *e);
/** The warnings of tallies over generation `g` (`reached`/`passed` per
 *  g->camps index): every campaign whose eligible was reached >= 1 times
 *  and passed 0, as {"file", "line" (of `eligible` in the file), "code":
 *  "eligible_never_passed", "campaign_id", "message", "reached",
 *  "passed"}.  @return a new array. */
json_t *replay_elig_warnings(const struct rules_gen *g, const long *reached, const long *passed);
/** The tallies as {id: {"reached","passed"}} (campaigns reached only). */
json_t *replay_elig_counts(const struct rules_gen *g, const long *reached, const long *passed);

/* What both replays (replay.c, replay_elig.c) do with a logged entry. */
#define REPLAY_MAX_OFFERS 256 /**< offers a replayed decide may give */
struct dlog_entry;
struct decide_req;
struct buf;
/** o->sample as the bound replay_take compares hashes of ids with. */
uint32_t replay_sample_below(const struct replay_opts *o);
/** Whether entry `e` is replayed: -1 not sampled, 1 o->limit is reached
 *  (`decisions` replayed so far: stop), 0 replay it. */
int replay_take(const struct replay_opts *o, uint32_t sample_below, long decisions,
                const struct dlog_entry *e);
/** The dry-run decide request that replays `e`: its strings copied
 *  NUL-terminated into `strs` (reused), the limit clamped to 1 ..
 *  REPLAY_MAX_OFFERS.  @return 0 or ERR_NOMEM. */
int replay_entry_req(struct buf *strs, const struct dlog_entry *e, struct decide_req *q);

#endif
