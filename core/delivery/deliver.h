/*
 * deliver.h — the delivery thread: drains the outbox (outbox.h) through
 * the channel plugins' deliver(), fires due trigger timers, and carries
 * out the releases of paused/stopped campaigns.
 *
 * Owns, in memory only: the per-channel state (concurrency, rate tokens,
 * retry settings, messages in flight), the set of message ids being
 * attempted, the pending outcomes, and the /metrics series
 * promod_outbox_attempts_total, promod_outbox_sent_total,
 * promod_outbox_dead_total and promod_outbox_in_flight{channel}.
 *
 * The thread (its own event_base, Lua state and HTTP client) wakes every
 * 20 ms and on outbox_wake(), then, in this order: fires due trigger
 * timers (triggers_fire_due), moves held messages of resumed/stopped
 * campaigns (outbox_release_*, checked against sends_gate), and for each
 * outbound channel takes the due messages (outbox_due_scan), at most
 * `concurrency` in flight and `rate` started per second per channel
 * (config channels.<name>.concurrency / .rate).  Right before an attempt
 * it checks again:
 *   campaign paused (sends_gate)          → held until resumed
 *   campaign stopped                      → dropped
 *   customer in quiet hours               → due when they end (throttle_quiet_end)
 *   consent withdrawn / profile erased    → dropped
 * then runs deliver(msg, net, settings, ctx) as a coroutine (net.http_post
 * yields) and classifies what it returned:
 *   2xx / true                       → sent
 *   nil, reason / 408 / 429 / 5xx /
 *   deliver timed out                → retry after base·2^(n-1)·(0.5..1.5),
 *                                      capped; dead after max_attempts
 *   other 4xx / false, reason        → dead at once (no retry)
 *   Lua error, budget, bad return    → dead at once (reason plugin_error,
 *                                      plugin_budget, bad_return)
 * (channels.<name>.max_attempts, retry_base_ms, retry_max_ms, timeout_ms,
 * request_timeout_ms).  Outcomes are written in batches (outbox_batch_*).
 * In-flight state is memory only: after a crash, messages that were in
 * flight are simply queued again, so delivery is at-least-once and the
 * receiver dedupes on the Idempotency-Key header (the message key).
 *
 * Delivered messages are reported to one sink (deliver_set_sink) after
 * their outcomes are committed — main.c records them as "send" events.
 * Each report carries the message key: a message reported twice (delivered
 * again because a crash lost its outcome) has the same key, so whatever
 * the sink derives from it (the send event's event_id) dedupes the repeat.
 * This module knows nothing of events.
 *
 * Threads: deliver_set_sink, deliver_start and deliver_stop on the main
 * thread; deliver_stats from any thread; the sink runs on the delivery
 * thread.
 */
#ifndef PROMOD_DELIVER_H
#define PROMOD_DELIVER_H
#include <jansson.h>
#include <stddef.h>

struct app;

/** One delivered message.  Strings are borrowed for the sink call only;
 *  absent ones are "". */
struct deliver_sent {
    const char *key;       /**< the message's idempotency key */
    const char *customer;
    const char *campaign;  /**< "" for a message without a campaign */
    const char *channel;
    const char *variant;
};

/** Receives the messages of one outcome batch that were delivered (n >= 1),
 *  on the delivery thread, after the batch is committed. */
typedef void (*deliver_sink_fn)(void *ud, const struct deliver_sent *msgs, size_t n);

/** Set the sink (main thread, before deliver_start; NULL = none). */
void deliver_set_sink(deliver_sink_fn fn, void *ud);

/** Start the delivery thread (main thread, after server_start: libevent
 *  must be in threaded mode).  Messages left queued by a previous run are
 *  picked up.  @return 0, ERR_NOMEM. */
int deliver_start(struct app *app);
/** Stop it: outcomes pending are written, attempts in flight are abandoned
 *  (they stay queued), pending release requests are forgotten. */
void deliver_stop(void);

/** outbox_stats() with the live figures added, as a new object: "in_flight"
 *  (total and per channel), per channel "concurrency" and "rate" (channels
 *  the thread has seen), and "timers_pending" (triggers_pending).  NULL +
 *  *rc on a store error. */
json_t *deliver_stats(int *rc);

#endif
