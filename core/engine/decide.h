/*
 * decide.h — "which offers, with which content, for this customer on this
 * channel and placement, right now".
 *
 * Runs on a worker thread with that worker's Lua state and adopted ruleset
 * generation.  Order of work, cheapest first so Lua runs only where it
 * must: channel index → status → schedule → placement → consent and quiet
 * hours → eligible (Lua) → cap pre-check on the read snapshot → throttle
 * hook (Lua) → score (Lua or priority) → rank → content (a running
 * experiment's assignment, else Lua or weighted bucketing; an experiment's
 * holdout skips the campaign) + templates → exact cap reservation in one
 * write transaction (skipped for dry runs) → first exposures queued for
 * the exposure log (engine/experiments.h; none for dry runs).  A hook that errors or exceeds its budget skips
 * that campaign for this request only, is counted in /metrics and shown in
 * explain.  When the counts a throttle hook saw on the snapshot have moved
 * by reservation time (a concurrent decide, or an earlier offer of the same
 * request), the hook runs again inside the write transaction on the fresh
 * counts, so a hook that works as a cap is as exact as declared caps.
 * Hooks get p and ctx read-only (luavm_push_readonly: a write raises
 * "profile is read-only" / "ctx is read-only", shown in explain); consent,
 * quiet hours and templates read the tables themselves.
 */
#ifndef PROMOD_DECIDE_H
#define PROMOD_DECIDE_H
#include <jansson.h>
#include "base/buf.h"
#include "base/reqerr.h"

/** An offer as decide made it (a replay's view): the ids are borrowed from
 *  the worker's generation. */
struct decide_offer {
    const char *campaign, *variant;
    double score;
};

/** A decide replayed from the decision log (engine/replay.h): the
 *  customer as they were instead of the store's record, the logged clock
 *  and decision id (the seed of Lua's math.random).  Set it only with
 *  dry_run on a simulation's worker.  Declared caps and throttle hooks are
 *  not consulted (the replay counts caps itself, in memory: nothing in the
 *  store reflects the replayed traffic); segments, loyalty and experiment
 *  assignments are read from the store as they are now.  decide fills
 *  `offers` (up to offers_cap) and `noffers`. */
struct decide_as_was {
    const void *profile, *stats;   /**< msgpack as logged, or NULL */
    size_t profile_len, stats_len;
    int64_t now;                   /**< ctx.now as logged (unix seconds) */
    const char *decision_id;       /**< 20 characters */
    struct decide_offer *offers;   /**< out */
    int offers_cap, noffers;
    /** Optional (NULL: not counted): per campaign of the worker's
     *  generation (index into gen->camps, `elig_n` of them), how many
     *  decides called its `eligible` hook (it passed the cheap filters and
     *  its audience) and how many of those it passed.  Campaigns without
     *  an eligible hook are not counted.  decide adds to them. */
    long *elig_reached, *elig_passed;
    int elig_n;
};

struct decide_req {
    const char *customer_id;
    const char *channel;
    const char *placement;  /**< NULL = any */
    const char *context_text; /**< the context object as validated JSON text (jscan), or NULL */
    size_t context_len;
    int limit;
    int explain;
    int dry_run;
    const char *accept_language; /**< the request's Accept-Language header, or NULL */
    struct decide_as_was *as_was; /**< a replay (see above), or NULL for a live decide */
};

/** Decide on the calling worker thread and append the reply
 *  ({"decision_id", "offers", "explain"?, "dry_run"?}) to `out`, as JSON
 *  text or (msgpack = 1) msgpack.  @return 0, or an error with *e filled
 *  (nothing useful in `out` then): 503 unavailable (not a worker thread),
 *  422 unknown_channel (field "channel"), 503 store_unavailable, 500
 *  internal. */
int decide_run(const struct decide_req *q, struct reqerr *e, struct buf *out, int msgpack);

/** decide_run() on a given worker instead of the calling thread's own:
 *  the worker is not refreshed.  For simulations (rules_sim_start), whose
 *  hook failures are then not counted in /metrics.  `mw` serves the
 *  models in that worker's Lua state (models_worker_new on rw->vm), or
 *  NULL: then no model is served (campaigns that rank by one are skipped). */
struct rules_worker;
struct models_worker;
int decide_run_worker(struct rules_worker *rw, struct models_worker *mw,
                      const struct decide_req *q, struct reqerr *e, struct buf *out, int msgpack);

/** A decide against a campaign script that is not saved (decide_sim.c):
 *  the script is compiled in a throwaway sandbox (rules_sim_start) and the
 *  decide pipeline runs for that one campaign on `q.channel`, as a dry run
 *  with explain (nothing is reserved, counted or stored), on the calling
 *  thread.  The campaign counts as active; everything else (profile,
 *  consent, quiet hours, schedule, placements, caps on the store's
 *  counters, the four hooks, templates) applies as live. */
struct decide_sim_req {
    const char *path;         /**< "rules/<name>.lua": chunk name, default id */
    const char *script;       /**< Lua source */
    size_t script_len;
    struct decide_req q;      /**< customer, channel, placement, context, limit */
};

/** @return new object {"simulated": true, "campaign_id", "decision_id",
 *  "offers", "explain", "dry_run": true}, or NULL with `e` filled: 422
 *  invalid_script (field "script", the loader's "path:line: message"
 *  strings under extra "errors"; 413 for a script over the size limit),
 *  422 unknown_channel or channel_not_listed (field "channel"), 503, 500. */
json_t *decide_simulate(const struct decide_sim_req *s, struct reqerr *e);

/** Register decide's per-campaign counters with /metrics, and the hook
 *  layer's (hooks_metrics_init).  Start-up, once. */
void decide_metrics_init(void);

/* Shared with outbound sends (delivery/sends.c, delivery/outbox.c), so a
 * message follows exactly the rules an offer does. */
struct lua_State;
struct rules_worker;
struct rules_campaign;
struct rules_channel;

/** Consent for channel `ch` of the profile table at `p_idx`: NULL when
 *  allowed, else the reason (static string).  Blocked when p.opt_out is
 *  true, p.consent is false, p.consent[<policy.consent>],
 *  p.consent[<channel>] or p.consent.all is false, or the channel requires
 *  consent (its policy names a consent key) and none of those three is
 *  true. */
const char *decide_consent_block(struct lua_State *L, int p_idx, const struct rules_channel *ch);

/** Choose the variant of campaign `c` (Lua table ref `ref` in rw's state)
 *  for customer `cust` (content hook or weighted bucketing) and render its
 *  content templates against the profile at `p_idx`.  `p_idx` and
 *  `ctx_idx` are what the content hook gets: pass what
 *  luavm_push_readonly pushed; templates read the profile itself
 *  (luavm_push_original).  Content showing {{coupon}} gets the customer's
 *  code, assigned in a write txn of its own.  @return 0 with
 *  *variant (index) and *content (new reference), or ERR_LUA / ERR_BUDGET /
 *  ERR_INVAL (hook failed or content not renderable). */
int decide_content(struct rules_worker *rw, const struct rules_campaign *c, int ref,
                   const char *cust, int p_idx, int ctx_idx, int *variant, json_t **content);

#endif
