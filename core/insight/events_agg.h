/*
 * events_agg.h — what a chunk of ingested events adds to the anonymous
 * aggregates and to each customer's p.stats, summed in memory and then
 * written with one read-modify-write per cell, minute and customer.
 *
 * Writes (keys as listed in events.h):
 *   STORE_AGGREGATES  "a" campaign \0 day(be32) variant \0 channel
 *                       → {"n": {type: count}, "u": {type: uniques},
 *                          "c": customers, "r": revenue}
 *                     "m" minute(be64) → {"n": {type: count}, "r": revenue}
 *   STORE_PSTATS      customer → p.stats (first_seen, last_seen, events,
 *                       one count per known type, custom = {type: count},
 *                       last = {type: unix seconds}, revenue,
 *                       last_conversion)
 * Whether a customer is new to a cell, or new to a type within it, is the
 * caller's to say: ingestion keeps those markers (STORE_CUSTIDX "u").
 *
 * Threads: an events_agg belongs to the thread that fills it; the writes
 * happen in the caller's write transaction.
 */
#ifndef PROMOD_EVENTS_AGG_H
#define PROMOD_EVENTS_AGG_H
#include <stdint.h>
#include "insight/events_kind.h"

struct store_txn;
struct events_agg;

/** One accepted event as the accumulators see it.  Strings are borrowed
 *  for the call. */
struct events_agg_ev {
    enum events_kind kind;
    const char *type;                        /**< custom types are counted by name */
    const char *customer;
    const char *campaign, *variant, *channel; /**< NULL when the event has none */
    int has_revenue;
    double revenue;
    int64_t ts_ms;
};

/** A new, empty set of accumulators, or NULL when out of memory. */
struct events_agg *events_agg_new(void);

/** Count one event in its campaign × UTC day × variant × channel cell, in
 *  its minute and in its customer's p.stats.  `new_customer`: the
 *  customer's first event in that cell; `new_kind`: their first of this
 *  kind there.  @return 0 or ERR_NOMEM. */
int events_agg_add(struct events_agg *a, const struct events_agg_ev *e, int new_customer,
                   int new_kind);

/** Add everything counted to the stored cells, minutes and p.stats in
 *  write txn `wt` (in key order).  @return 0 or a store error. */
int events_agg_write(struct events_agg *a, struct store_txn *wt);

void events_agg_free(struct events_agg *a);

#endif
