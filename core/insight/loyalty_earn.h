/*
 * loyalty_earn.h — the earn rules of the loyalty files run on ingested
 * events, and tier changes turned into events.
 *
 * Event ingestion (events.c) asks loyalty_earn_begin() once per chunk; with
 * no earn rule loaded that is all it costs.  Otherwise each accepted event
 * goes through every file's `earn(event, p)` inside the chunk's write
 * transaction, so the points are stored with the event or not at all, and
 * an event seen twice (same event_id) earns once.  `event` has type,
 * customer_id, campaign_id, variant, channel, revenue, ts, properties; `p`
 * is the profile with p.id, p.stats and p.loyalty (balance, tier, lifetime
 * — after the earlier events of the same request).  A rule returns points
 * (rounded down to a whole number; nil, false or 0 = none) and optionally
 * a reason; an error, a negative or non-numeric result is logged, counted
 * in /metrics and skips that rule for that event only.  The entry's
 * transaction id is "e<file>:<event key>", the event's own.
 *
 * Tier changes caused by earning are returned by loyalty_earn_end() as
 * events ("tier_upgrade" / "tier_downgrade", properties from and to) for the
 * caller to ingest after its commit — so campaigns with `trigger = { event
 * = "tier_upgrade" }` react to them.
 *
 * Threads: any thread that ingests; each keeps its own Lua state for the
 * rules (compiled again when the loyalty files change), freed when the
 * thread exits.
 */
#ifndef PROMOD_LOYALTY_EARN_H
#define PROMOD_LOYALTY_EARN_H
#include <jansson.h>
#include <stdint.h>
#include "engine/loyalty.h"
#include "store/store.h"

struct loyalty_earn;

/** The rules for one chunk of events, or NULL when no earn rule is loaded. */
struct loyalty_earn *loyalty_earn_begin(void);

/** Run the rules on one accepted event (`ev`: the event object as triggers
 *  see it; `key`: its 16-byte store key) in write txn `t`.  @return 0, or
 *  a store error (the caller aborts its chunk). */
int loyalty_earn_event(struct loyalty_earn *x, struct store_txn *t, const json_t *ev,
                       const unsigned char key[16], int64_t now);

/** Finish: the tier events to ingest when `committed` (new array, NULL when
 *  none); frees `x` (NULL is fine). */
json_t *loyalty_earn_end(struct loyalty_earn *x, int committed);

/** A tier change as an event object for ingestion (new reference):
 *  {"type": "tier_upgrade"|"tier_downgrade", "customer_id", "event_id",
 *  "properties": {"from", "to"}} — up or down by the program's order. */
json_t *loyalty_earn_tier_event(const char *customer, const struct loyalty_change *ch,
                                const struct loyalty_program *p, int64_t now);

/** Register promod_loyalty_earn_* with /metrics (start-up). */
void loyalty_earn_metrics_init(void);

#endif
