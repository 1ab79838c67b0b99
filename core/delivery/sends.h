/*
 * sends.h — campaign sends: a launched campaign on an outbound channel
 * (email, sms, push, webhook: a plugin with deliver) becomes one message
 * per eligible customer in the outbox.
 *
 * Owns: the audience builder thread and the per-campaign send records
 * (STORE_OUTBOX, key "s" + campaign id).  A send is started only by an
 * explicit launch (sends_start, called by the campaign lifecycle code),
 * never because a file was saved.
 *
 * The builder streams STORE_PROFILES in batches (short read transactions,
 * a cursor kept in the send record) — or, when the campaign's audience
 * names segments, or the launch named a saved audience ("audience_id" from
 * POST /api/v1/targeting/audience), only the members the segment index
 * lists (engine/segments.h segments_audience_next) — and for each profile
 * runs, in its own Lua state: status and schedule → the campaign's
 * audience (C) → consent (the same rules as decide:
 * p.opt_out, p.consent[<policy.consent>|<channel>|all] == false, and a
 * channel that requires consent needs a record) → eligible (Lua) → content
 * (variant + templates, as decide) → the plugin's render(offer, p, ctx).
 * Then, in one write transaction per batch: the idempotency key
 * "send:<campaign>:<channel>:<customer>" (STORE_IDEM; already present =
 * skipped "duplicate"), the exact cap and channel-policy reservation
 * (throttle_reserve), the outbox message, and the send record's cursor and
 * counters.  So a crash at any point resumes at the last committed batch
 * and nobody gets the same send twice.  Quiet hours do not skip: the
 * message is due when the customer's quiet hours end (profile field `tz`).
 *
 * Pausing stops both the audience build and the outbox drain for the
 * campaign (queued messages wait); resuming continues both.  Stopping ends
 * the build and drops the campaign's queued messages (counted as
 * "skipped: stopped").
 *
 * Uses the queue (outbox.h: enqueue, keys, counts, releases) and
 * throttle (caps, quiet hours); triggers and the delivery thread
 * (deliver.h) call in here, never the other way round.
 *
 * Threads: every function here may be called from any thread (HTTP
 * workers, the lifecycle code); they only write the send record and wake
 * the builder.  Send records survive restarts: a send that was running
 * when the process died resumes at start-up (sends_init).
 */
#ifndef PROMOD_SENDS_H
#define PROMOD_SENDS_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct app;

/** sends_start() result when the campaign has nothing to send at launch:
 *  no outbound channel, or a triggered campaign (it sends per event). */
#define SENDS_NOTHING 1

/** Start the builder thread and resume sends left running (main thread,
 *  after the store and the first rules generation exist).  @return 0,
 *  ERR_NOMEM, -errno. */
int sends_init(struct app *app);
/** Stop the builder thread (it commits the batch in progress). */
void sends_shutdown(void);

/** Launch: build the audience of `campaign_id` on each of its outbound
 *  channels and enqueue.  Idempotent: a send already running or finished
 *  is left as it is (a paused one is resumed), so a second launch never
 *  sends twice.  `actor` (may be NULL) is recorded in the send record.
 *  @return 0 (started or already there), SENDS_NOTHING, ERR_NOTFOUND (no
 *  loaded campaign with that id), ERR_BUSY (sends_init not run), store
 *  errors. */
int sends_start(const char *campaign_id, const char *actor);
/** sends_start() that targets the members of saved audience `audience_id`
 *  (NULL: the campaign's own audience, or every profile).  Returns
 *  ERR_NOTFOUND also when the audience does not exist. */
int sends_start_audience(const char *campaign_id, const char *actor, const char *audience_id);
/** Pause the build and the drain of this campaign's messages.
 *  @return 0 (also when already paused), ERR_NOTFOUND (never launched),
 *  ERR_CONFLICT (the send was stopped), store errors. */
int sends_pause(const char *campaign_id, const char *actor);
/** Continue a paused send; with no send yet (a campaign paused before its
 *  first launch) this is sends_start.  @return 0 (also when running or
 *  done), SENDS_NOTHING, ERR_NOTFOUND (no such loaded campaign),
 *  ERR_CONFLICT (stopped), store errors. */
int sends_resume(const char *campaign_id, const char *actor);
/** Stop for good: the build ends, queued messages are dropped (dead
 *  letters and sent messages are kept).  @return 0 (also when already
 *  stopped), ERR_NOTFOUND, store errors. */
int sends_stop(const char *campaign_id, const char *actor);

enum sends_gate {
    SENDS_GATE_NONE = -1,   /**< never launched */
    SENDS_GATE_OPEN = 0,    /**< launched: running or done */
    SENDS_GATE_PAUSED = 1,  /**< messages wait (held in the outbox) */
    SENDS_GATE_STOPPED = 2  /**< messages are dropped */
};
/** The campaign's gate, from memory (any thread, cheap): the delivery
 *  thread holds or drops messages by it, triggers fire only through an
 *  open gate. */
int sends_gate(const char *campaign_id);

/* --- one customer, shared with triggers.c -------------------------------- */
struct rules_worker;
struct rules_gen;
struct store_txn;

struct sends_item {
    json_t *msg;            /**< rendered message (owned; sends_put takes it) */
    int variant;            /**< chosen variant index */
    char tz[64];            /**< p.tz or "" */
    char error[200];        /**< hook/render error text when skipped for one */
    char reason[120];       /**< "not_eligible": the reason eligible gave (false, "reason"), or "" */
    double score;           /**< audience = { model = ... }: the customer's score */
};

/** Evaluate campaign `camp` on channel `chan` of generation `g` for one
 *  customer (profile msgpack pv/pl, NULL when unknown; stats sv/sl or NULL,
 *  read in `t`, which also gives the customer's segments) with rw's Lua
 *  state: the campaign's audience filter (segments, exclude, conditions, in
 *  C, engine/audience.h), consent, eligible, then the audience's model when
 *  it has one, content, the plugin's render.  A campaign declaring
 *  audience = { model = ..., above = t } needs the model's score (it->score)
 *  to be at least t ("below_audience_score", or "audience_model_error"
 *  when the model cannot score); one with audience.top is ranked by the
 *  builder (the N best scores at launch among the customers passing the
 *  filter).  The hooks run through the hook layer (engine/hooks.h), judged
 *  and counted as in decide, and get p (with p.segments) and ctx read-only
 *  as there (luavm_push_readonly).  @return 0 with *it filled, or 1 with
 *  *why one of "no_profile", "audience", "consent", "not_eligible"
 *  (it->reason), "hook_error", "below_audience_score",
 *  "audience_model_error", "render_error", "render_declined" (it->error),
 *  "outside_schedule" (the schedule has ended; nothing to free). */
int sends_eval(struct rules_worker *rw, const struct rules_gen *g, int camp, int chan,
               struct store_txn *t, const char *cust, const void *pv, size_t pl, const void *sv,
               size_t sl, int64_t now, struct sends_item *it, const char **why);

/** In write txn `wt`: reserve the caps and the channel policy exactly
 *  (throttle_reserve) and enqueue under `key`, due now (or when the
 *  campaign's schedule starts, if later) or when the customer's quiet hours
 *  end.  Takes it->msg.  @return 0 (queued), 1 with
 *  *why "duplicate" or "capped", or a store error. */
int sends_put(struct store_txn *wt, const struct rules_gen *g, int camp, int chan,
              const char *cust, struct sends_item *it, const char *key, int64_t now,
              const char **why);

/** Count one queued/skipped outcome of a triggered send in the campaign's
 *  send record (write txn).  `why` NULL = queued. */
int sends_count_txn(struct store_txn *wt, const char *campaign_id, const char *why);

/** The send's progress as a new object: {"campaign_id", "state"
 *  (running|paused|done|stopped), "channels", "evaluated", "queued", "sent",
 *  "failed", "dead", "skipped": {reason: n}, "started_at", "finished_at",
 *  "actor"}.  NULL with *rc = ERR_NOTFOUND when never launched, or a store
 *  error. */
json_t *sends_status(const char *campaign_id, int *rc);

#endif
