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
 * a cursor kept in the send record), and for each profile runs, in its own
 * Lua state: status and schedule → consent (the same rules as decide:
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
 * Threads: every function here may be called from any thread (HTTP
 * workers, the lifecycle code); they only write the send record and wake
 * the builder.  Send records survive restarts: a send that was running
 * when the process died resumes at start-up (sends_init).
 */
#ifndef PROMOD_SENDS_H
#define PROMOD_SENDS_H
#include <jansson.h>

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
/** Pause the build and the drain of this campaign's messages.
 *  @return 0 (also when already paused), ERR_NOTFOUND (never launched),
 *  ERR_CONFLICT (the send was stopped), store errors. */
int sends_pause(const char *campaign_id, const char *actor);
/** Continue a paused send.  @return 0 (also when running or done),
 *  ERR_NOTFOUND, ERR_CONFLICT (stopped), store errors. */
int sends_resume(const char *campaign_id, const char *actor);
/** Stop for good: the build ends, queued messages are dropped (dead
 *  letters and sent messages are kept).  @return 0 (also when already
 *  stopped), ERR_NOTFOUND, store errors. */
int sends_stop(const char *campaign_id, const char *actor);

/** Is the campaign's send paused or stopped (its messages must not be
 *  delivered now)?  Cheap (in-memory), any thread.  Used by the outbox. */
int sends_held(const char *campaign_id);

/** The send's progress as a new object: {"campaign_id", "state"
 *  (running|paused|done|stopped), "channels", "evaluated", "queued", "sent",
 *  "failed", "dead", "skipped": {reason: n}, "started_at", "finished_at",
 *  "actor"}.  NULL with *rc = ERR_NOTFOUND when never launched, or a store
 *  error. */
json_t *sends_status(const char *campaign_id, int *rc);

#endif
