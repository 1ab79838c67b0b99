/*
 * outbox.h — the durable outbound queue and the delivery thread that
 * drains it through the channel plugins' deliver().
 *
 * Owns (STORE_OUTBOX):
 *   "m" id(be64)                          → the message record (msgpack map:
 *                                           id key campaign customer channel
 *                                           variant tz msg state attempts due
 *                                           created error reason dead_at)
 *   "q" channel \0 due_ms(be64) id(be64)  → campaign   (queued, by due time)
 *   "P" campaign \0 id(be64)              → channel    (held: campaign paused)
 *   "d" id(be64)                          → ""         (dead letters)
 *   "n" channel                           → counters (queued dead sent failed dropped)
 *   "c" campaign                          → counters (same, per campaign)
 *   "r" reason                            → failed attempts by reason
 * and the idempotency keys "o" + key → id(be64) in STORE_IDEM.
 *
 * A message is written durably (in the caller's transaction, committed
 * with STORE_DURABLE) before any attempt; enqueueing the same key twice
 * writes nothing the second time.  The delivery thread (its own event_base,
 * Lua state and HTTP client) scans each outbound channel's queue for due
 * messages, at most `concurrency` in flight and `rate` started per second
 * per channel (config channels.<name>.concurrency / .rate), runs deliver()
 * as a coroutine (net.http_post yields), and records outcomes in batched
 * write transactions:
 *   2xx / true                       → sent (record deleted, key kept)
 *   nil, reason / 408 / 429 / 5xx /
 *   deliver timed out                → retry after base·2^(n-1)·(0.5..1.5),
 *                                      capped; dead after max_attempts
 *   other 4xx / false, reason        → dead at once (no retry)
 *   Lua error, budget, bad return    → dead at once (reason plugin_error,
 *                                      plugin_budget, bad_return)
 * In-flight state is memory only: after a crash, messages that were in
 * flight are simply queued again, so delivery is at-least-once and the
 * receiver dedupes on the Idempotency-Key header (the message key).
 * Quiet hours and consent are checked again right before each attempt: a
 * message in the customer's quiet hours waits until they end; one whose
 * customer withdrew consent or was erased is dropped.
 *
 * Threads: outbox_enqueue_txn in any thread's write txn; outbox_wake,
 * stats, dead-letter listing and redrive from any thread; the rest is the
 * delivery thread's.
 */
#ifndef PROMOD_OUTBOX_H
#define PROMOD_OUTBOX_H
#include <jansson.h>
#include <stdint.h>

struct app;
struct store_txn;
struct rules_channel;

/** outbox_enqueue_txn() result: the key was enqueued before; nothing written. */
#define OUTBOX_DUPLICATE 1
#define OUTBOX_KEY_MAX 400

struct outbox_msg {
    const char *key;       /**< idempotency key, 1..OUTBOX_KEY_MAX bytes (required) */
    const char *campaign;  /**< campaign id, or NULL */
    const char *customer;  /**< customer id (required) */
    const char *channel;   /**< channel name (required) */
    const char *variant;   /**< or NULL */
    const char *tz;        /**< customer's time zone for quiet hours, or NULL */
    const json_t *msg;     /**< the rendered message (borrowed) */
    int64_t due_ms;        /**< earliest attempt, unix ms; 0 = now */
};

/** Write a message (record, queue entry, key, counters) in write txn `wt`.
 *  Durable once the caller commits.  @return 0 (*id set if id != NULL),
 *  OUTBOX_DUPLICATE, ERR_INVAL (missing field, key too long), ERR_TOOBIG
 *  (message larger than 256 KiB), store errors. */
int outbox_enqueue_txn(struct store_txn *wt, const struct outbox_msg *m, uint64_t *id);

/** Was `key` ever enqueued?  (any txn)  @return 1, 0, or a store error. */
int outbox_has_key(struct store_txn *t, const char *key);

/** Tell the delivery thread there is new work (cheap, any thread). */
void outbox_wake(void);

/** When do the channel's quiet hours end for a customer in `tz` at `now`?
 *  @return 0 when `now` is not in quiet hours, else the unix time of the
 *  first whole hour outside them. */
int64_t outbox_quiet_end(const struct rules_channel *ch, const char *tz, int64_t now);

/** Start the delivery thread (main thread, after server_start).  Messages
 *  left queued by a previous run are picked up.  @return 0, ERR_NOMEM. */
int outbox_init(struct app *app);
/** Stop it: in-flight attempts are abandoned (they stay queued). */
void outbox_shutdown(void);

/** Counters in a new object: {"queued", "in_flight", "held", "dead", "sent",
 *  "failed_attempts", "dropped", "failures": {reason: n}, "channels":
 *  {name: {queued, in_flight, dead, sent, failed_attempts, dropped,
 *  concurrency, rate}}, "timers_pending"}.  NULL + *rc on a store error. */
json_t *outbox_stats(int *rc);

/** Per-campaign counters {queued, sent, dead, failed_attempts, dropped} as
 *  a new object (zeros when none).  NULL + *rc on a store error. */
json_t *outbox_campaign_counts(const char *campaign, int *rc);

/** Dead letters, oldest first, after id `after` (0 = from the start),
 *  optionally only one channel / campaign (NULL = any); at most `limit`,
 *  and a page stops early once its messages pass 4 MiB.
 *  @return {"items": [...], "next_after": id|null}, or NULL + *rc. */
json_t *outbox_dead_list(const char *channel, const char *campaign, uint64_t after, int limit,
                         int *rc);

/** Queue dead letters again (attempts reset, due now): the ids in `ids`
 *  (array of integers) or, when ids is NULL, every dead letter matching
 *  channel / campaign (NULL = any), at most `limit`.  Ids that are not dead
 *  letters are reported in *missing (new array) when asked.
 *  @return the number re-queued (>= 0) or an error. */
long outbox_redrive(const json_t *ids, const char *channel, const char *campaign, long limit,
                    json_t **missing);

/** Move the campaign's held messages back to their queues (on resume) or
 *  delete them (on stop, `drop` = 1) — done by the delivery thread in
 *  chunks; returns at once. */
void outbox_release(const char *campaign, int drop);

/** Delete the customer's dead letters (records and dead-list entries) in
 *  write txn `wt`, for profile erasure.  @return records removed or an error. */
long outbox_erase_customer_txn(struct store_txn *wt, const char *customer);

#endif
