/*
 * events_log.h — the stored side of events: reading what ingestion wrote
 * (scans for analytics, a customer's export), erasing a customer's raw
 * events, and retention (compaction and its hourly timer).  Key layout:
 * events.h.  Ingestion never calls in here; this module reads the layout
 * events.h defines (one-way: events_log → events).
 *
 * Owns the /metrics series promod_events_compacted_total.
 *
 * Threads: the scans, export and erasure run in the caller's transaction
 * on any thread; events_log_compact on any thread (its own write
 * transactions); the compactor timer on the event base it is given.
 */
#ifndef PROMOD_EVENTS_LOG_H
#define PROMOD_EVENTS_LOG_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "insight/events_kind.h"
#include "store/store.h"

struct event_base;

/* --- reading, for analytics ---------------------------------------------- */

/** One raw event as scans see it.  Strings are borrowed for the callback
 *  only; absent fields are "" (and revenue 0). */
struct events_log_rec {
    const char *type;
    enum events_kind kind;
    const char *customer, *campaign, *variant, *channel, *currency;
    double revenue;
    int64_t ts_ms;
    unsigned char key[16];   /**< its STORE_EVENTS key (time order, then arrival) */
};
/** Return 0 to go on, 1 to stop, <0 to abort with that code. */
typedef int (*events_log_rec_fn)(void *ud, const struct events_log_rec *e);

/** Visit raw events with from_ms <= ts < to_ms in time order. */
int events_log_scan_time(struct store_txn *t, int64_t from_ms, int64_t to_ms,
                         events_log_rec_fn fn, void *ud);
/** Visit one customer's raw events with ts >= from_ms whose key is below
 *  `before` (NULL = no upper bound), oldest first. */
int events_log_scan_customer(struct store_txn *t, const char *customer, int64_t from_ms,
                             const unsigned char before[16], events_log_rec_fn fn, void *ud);

/** One aggregate cell.  `n` and `u` are borrowed objects {type: integer}
 *  (u has the known kinds and "custom"); valid for the callback only. */
struct events_log_cell {
    const char *campaign, *variant, *channel;  /**< "" when the events had none */
    int64_t day;                               /**< UTC days since the epoch */
    json_t *n, *u;
    long customers;                            /**< distinct customers in the cell */
    double revenue;
};
typedef int (*events_log_cell_fn)(void *ud, const struct events_log_cell *c);

/** Visit aggregate cells of one campaign (NULL = every campaign, "" = events
 *  without a campaign) with from_day <= day <= to_day. */
int events_log_scan_cells(struct store_txn *t, const char *campaign, int64_t from_day,
                          int64_t to_day, events_log_cell_fn fn, void *ud);

/** Sum the minute buckets from_min <= minute <= to_min: *counts gets a new
 *  object {type: count}, *revenue the revenue. */
int events_log_sum_minutes(struct store_txn *t, int64_t from_min, int64_t to_min,
                           json_t **counts, double *revenue);

/* --- one customer: export and erasure ------------------------------------ */

/** Delete every raw event of a customer (STORE_EVENTS and their event_id
 *  keys) inside the caller's write txn; the caller deletes the customer's
 *  STORE_CUSTIDX family itself (profiles_erase_txn).  Aggregates keep
 *  their anonymous counts.  @return events deleted (>= 0) or a store error. */
long events_log_erase_customer(struct store_txn *t, const char *customer);

/** The customer's raw events, oldest first, decoded (at most `max`), as a
 *  new array of event objects with "ts" as ISO-8601 text.  NULL on a store
 *  or decode error. */
json_t *events_log_customer_list(struct store_txn *t, const char *customer, size_t max);

/** Which campaign × variant × channel × day cells the customer appears
 *  in (their unique-customer markers): a new array of {"day", "campaign_id",
 *  "variant", "channel", "types": [...]}.  NULL on a store error. */
json_t *events_log_customer_activity(struct store_txn *t, const char *customer);

/* --- retention ----------------------------------------------------------- */

/** Delete raw events older than `cutoff` (unix seconds) with their index
 *  and event_id keys, minute buckets older than two days, and unique-customer
 *  markers of days before the cutoff; batches of EVENTS_CHUNK deletions per
 *  write txn, the last one durable.  *deleted gets the events removed.
 *  @return 0 or a store error. */
int events_log_compact(struct store *s, int64_t cutoff, long *deleted);

/** Start the hourly compaction timer on an event base (the main thread's):
 *  removes events older than `retention_days`.  @return 0 or ERR_NOMEM. */
int events_log_compactor_start(struct event_base *base, struct store *s, int retention_days);
void events_log_compactor_stop(void);

/** Raw events removed by retention since start (any thread). */
long events_log_compacted_total(void);

/** Register promod_events_compacted_total with /metrics (start-up, before
 *  threads; after events_metrics_init, so the events series stay together). */
void events_log_metrics_init(void);

#endif
