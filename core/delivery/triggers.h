/*
 * triggers.h — triggered campaigns: a campaign file with
 *   trigger = { event = "cart_abandon", delay = "1h", cancel_on = "purchase" }
 * sends to a customer `delay` after a matching event, unless an event of
 * type `cancel_on` for the same customer arrives first.
 *
 * Owns the timers in STORE_TIMERS:
 *   "T" due(be64) seq(be64)                      → {campaign, customer, event, at}
 *   "C" customer \0 campaign \0 seq(be64)        → due(be64)   (cancel index)
 * One pending timer per customer × campaign: a second matching event while
 * one is pending does not schedule another.  Timers are plain records, so
 * they survive restarts; the delivery thread (deliver.h) fires the due ones
 * (triggers_fire_due) and enqueues the send with the idempotency key
 * "trig:<campaign>:<channel>:<customer>:<seq>" in the same write transaction that
 * deletes the timer, so a timer fires exactly once.  A timer whose
 * campaign is no longer active (or no longer triggered) when it falls due
 * is dropped and counted.
 *
 * Uses sends (evaluation, gate, counts) and the queue (outbox.h); the
 * delivery thread (deliver.h) and events ingestion call in here.
 *
 * Threads: triggers_on_event runs on the caller's thread inside the
 * caller's write transaction (events ingestion); triggers_fire_due on the
 * delivery thread only.
 */
#ifndef PROMOD_TRIGGERS_H
#define PROMOD_TRIGGERS_H
#include <jansson.h>
#include <stdint.h>

struct store_txn;
struct rules_worker;

/** Look at one ingested event ({"type", "customer_id", "ts"?, ...},
 *  borrowed) inside the caller's write txn `t`: schedule a timer for every
 *  active campaign whose trigger.event equals the type (due = the event's
 *  ts, else now, + delay; none when that moment is more than an hour
 *  past, as for backfilled events), and cancel this customer's pending timers of
 *  campaigns whose trigger.cancel_on equals the type.  Events without a
 *  string type or customer_id are ignored.  Cheap when no campaign has a
 *  trigger (no store access).  Nothing is committed here: the caller's
 *  commit makes the timers durable together with the event.
 *  @return the number of timers scheduled plus cancelled (>= 0), or a
 *  store error (the caller should abort its txn). */
int triggers_on_event(struct store_txn *t, const json_t *event);

/** Fire timers due at or before `now` (delivery thread): for each, run the
 *  campaign's consent/eligible/caps/render on the customer with `rw`'s Lua
 *  state and enqueue; at most `max` timers per call.  @return how many
 *  timers were consumed (fired or dropped), or a store error. */
int triggers_fire_due(struct rules_worker *rw, int64_t now, int max);

/** Pending timers (for GET /api/v1/outbox).  @return count or error. */
long triggers_pending(void);

#endif
