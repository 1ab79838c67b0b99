/*
 * outbox.h — the durable outbound queue: message records, their keys and
 * counters.  The delivery thread that drains it is deliver.h.
 *
 * Owns (STORE_OUTBOX):
 *   "m" id(be64)                          → the message record (msgpack map:
 *                                           id key campaign customer channel
 *                                           variant tz msg state attempts due
 *                                           created error reason dead_at
 *                                           redriven_at)
 *   "q" channel \0 due_ms(be64) id(be64)  → campaign   (queued, by due time)
 *   "P" campaign \0 id(be64)              → channel    (held: campaign paused)
 *   "d" id(be64)                          → ""         (dead letters)
 *   "n" channel                           → counters (queued dead sent failed dropped held)
 *   "c" campaign                          → counters (same, per campaign)
 *   "r" reason                            → failed attempts by reason
 * and the idempotency keys "o" + key → id(be64) in STORE_IDEM.
 * In memory: the release requests of paused/stopped campaigns
 * (outbox_release) until the delivery thread has carried them out.
 *
 * A message is written durably (in the caller's transaction, committed
 * with STORE_DURABLE) before any attempt; enqueueing the same key twice
 * writes nothing the second time.  A message stays "queued" (its record
 * and one "q" entry) until the delivery thread records an outcome
 * (outbox_batch_*): sent (record deleted, key kept), retry or deferral (a
 * new "q" entry further down), dead (a "d" entry, record kept with the
 * error), dropped (record deleted), or held (a "P" entry while the
 * campaign is paused; outbox_release_chunk puts it back or drops it).
 * Counters move with each of these in the same transaction.
 *
 * Threads: outbox_enqueue_txn and outbox_erase_customer_txn in any
 * thread's write txn; outbox_has_key in any txn; outbox_wake,
 * outbox_release, stats, campaign counts, dead-letter listing and redrive
 * from any thread.  outbox_due_scan, outbox_get, outbox_batch_* and
 * outbox_release_peek / _chunk / _done are the delivery thread's (one
 * thread: they assume nobody else records outcomes).
 */
#ifndef PROMOD_OUTBOX_H
#define PROMOD_OUTBOX_H
#include <jansson.h>
#include <stdint.h>

struct store_txn;
struct event;

/** outbox_enqueue_txn() result: the key was enqueued before; nothing written. */
#define OUTBOX_DUPLICATE 1
/** outbox_batch_add() result: the message's queue entry is gone (redriven,
 *  released or dropped meanwhile); nothing written for it. */
#define OUTBOX_GONE 2
#define OUTBOX_KEY_MAX 400
#define OUTBOX_CHANNEL_MAX 32
#define OUTBOX_CAMPAIGN_MAX 128

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

/** Tell the delivery thread there is new work (cheap, any thread; nothing
 *  happens while no thread listens). */
void outbox_wake(void);

/** The event outbox_wake() activates (the delivery thread's, set when it
 *  starts and NULL before it frees the event), or NULL.  Borrowed. */
void outbox_set_wake(struct event *ev);

/** Counters in a new object: {"queued", "dead", "sent", "failed_attempts",
 *  "dropped", "held", "failures": {reason: n}, "channels": {name:
 *  {queued, dead, sent, failed_attempts, dropped, held}}} — what is stored;
 *  deliver_stats() adds the delivery thread's live figures.  The
 *  `nchannels` names in `channels` (may be NULL when 0) are listed with
 *  zero counters when nothing is stored for them.  NULL + *rc on a store
 *  error. */
json_t *outbox_stats(const char *const *channels, int nchannels, int *rc);

/** Per-campaign counters {queued, dead, sent, failed_attempts, dropped, held} as
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

/** Delete the customer's dead letters (records and dead-list entries) in
 *  write txn `wt`, for profile erasure.  @return records removed or an error. */
long outbox_erase_customer_txn(struct store_txn *wt, const char *customer);

/* --- releases of held messages ------------------------------------------- */

/** Ask for the campaign's held messages to go back to their queues (on
 *  resume) or to be deleted (on stop, `drop` = 1).  Any thread; returns at
 *  once and wakes the delivery thread, which carries it out in chunks.  A
 *  newer request for the same campaign replaces an older one. */
void outbox_release(const char *campaign, int drop);

/** The oldest pending release request (delivery thread): 1 with
 *  campaign (OUTBOX_CAMPAIGN_MAX + 8 bytes) and *drop filled, 0 when none. */
int outbox_release_peek(char *campaign, int *drop);

/** Carry out one chunk (up to 2000 messages) of a release in a write txn
 *  of its own.  @return 1 when nothing is held for the campaign any more,
 *  0 when more remains or on a store error (logged; tried again later). */
int outbox_release_chunk(const char *campaign, int drop);

/** Forget the request for `campaign` once carried out (or found stale),
 *  unless a newer one asks for the other `drop` meanwhile. */
void outbox_release_done(const char *campaign, int drop);

/** Forget every pending request (after the delivery thread stopped). */
void outbox_release_clear(void);

/* --- the delivery thread's side ------------------------------------------ */

/** One due queue entry.  `campaign` is "" when none; borrowed for the
 *  callback only. */
struct outbox_due {
    uint64_t id;
    int64_t due_ms;
    const char *campaign;
};
/** Return 0 to go on, 1 to stop. */
typedef int (*outbox_due_fn)(void *ud, const struct outbox_due *d);

/** Visit the queue entries of `channel` due at or before `now_ms`, in due
 *  order, in txn `t` (the walk ends at the first one not due yet).
 *  @return 0 or a store error. */
int outbox_due_scan(struct store_txn *t, const char *channel, int64_t now_ms, outbox_due_fn fn,
                    void *ud);

/** The message record `id` (txn `t`) as a new object; NULL + *rc
 *  (ERR_NOTFOUND when there is none). */
json_t *outbox_get(struct store_txn *t, uint64_t id, int *rc);

/** What became of a message taken from its queue entry. */
enum outbox_fate {
    OUTBOX_SENT,   /**< delivered: record deleted, the key stays */
    OUTBOX_RETRY,  /**< failed attempt: queued again at new_due_ms, attempts + 1 */
    OUTBOX_DEFER,  /**< not attempted (quiet hours): queued again at new_due_ms */
    OUTBOX_DEAD,   /**< moved to the dead letters (attempts + 1, error kept) */
    OUTBOX_DROP,   /**< deleted (campaign stopped, consent withdrawn, profile erased) */
    OUTBOX_PARK    /**< held until the paused campaign is released */
};

struct outbox_outcome {
    uint64_t id;
    const char *channel;
    const char *campaign;   /**< "" when none */
    int64_t due_ms;         /**< of the queue entry the message was taken from */
    enum outbox_fate fate;
    json_t *rec;            /**< the record (borrowed; RETRY / DEFER / DEAD update it
                                 in place and write it back); may be NULL otherwise */
    int attempts;           /**< attempts before this one */
    const char *reason;     /**< RETRY / DEAD: failure reason (counted in "r");
                                 DROP: why, logged (NULL = silently) */
    const char *error;      /**< RETRY / DEAD: the error text kept in the record */
    int64_t new_due_ms;     /**< RETRY / DEFER */
};

/** Outcomes written in one write transaction, counters aggregated. */
struct outbox_batch;

/** Begin a batch (its own write txn on the app's store).
 *  @return 0 with *b set, ERR_NOMEM, store errors. */
int outbox_batch_begin(struct outbox_batch **b);
/** Record one outcome.  @return 0, OUTBOX_GONE (nothing written for it),
 *  or a store error (then abort the batch). */
int outbox_batch_add(struct outbox_batch *b, const struct outbox_outcome *o);
/** Write the counters and commit (STORE_ASYNC: it survives a process
 *  crash; a power cut means a redelivery the key dedupes).  Frees b.
 *  @return 0 or a store error (nothing of the batch was written). */
int outbox_batch_commit(struct outbox_batch *b);
/** Throw the batch away (nothing written).  Frees b. */
void outbox_batch_abort(struct outbox_batch *b);

#endif
