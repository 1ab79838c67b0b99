/*
 * events.h — what customers did: ingestion of impression, click,
 * conversion, send, open, dismiss and custom events, and everything an
 * event updates.
 *
 * Owns, all written in the same write transaction as the event itself:
 *   STORE_EVENTS      ts_ms(be64) seq(be64)              → msgpack event (the raw log, by time)
 *   STORE_CUSTIDX     "<customer>\0e" ts_ms(be64) seq(be64) → ""   (the customer's events)
 *                     "<customer>\0u" day(be32) campaign \0 variant \0 channel
 *                                                        → type bits seen (unique customers)
 *   STORE_IDEM        "ev:" event_id                      → the event's 16-byte key
 *   STORE_AGGREGATES  "a" campaign \0 day(be32) variant \0 channel
 *                                                        → {"n": {type: count}, "u": {type: uniques},
 *                                                           "c": customers, "r": revenue}
 *                     "m" minute(be64)                    → {"n": {type: count}, "r": revenue}
 *   STORE_PSTATS      customer                            → the profile's `stats` (p.stats)
 *   STORE_META        "events_seq"                        → last sequence number (be64)
 * Days are UTC days since the epoch, minutes since the epoch; both come
 * from the event's own timestamp, so a late event lands where it happened.
 * Aggregates are anonymous (no customer id in them) and are what analytics
 * reads; raw events are kept `event_retention_days` and then compacted
 * away (events_compact) — the aggregates keep their counts.
 *
 * Ingestion (events_ingest_*) validates every event first, outside any
 * transaction, then applies them in chunks of EVENTS_CHUNK events per write
 * transaction; the last commit is durable (group commit), so when the call
 * returns every accepted event is on disk and visible to analytics.  Bad
 * events are reported by index and skipped; the rest are kept.  An event
 * with an `event_id` already seen is a duplicate: skipped and counted, not
 * an error (retries are idempotent).  Each accepted event is also passed to
 * triggers_on_event() inside the same transaction.
 *
 * p.stats (STORE_PSTATS, read by decide and profiles): first_seen,
 * last_seen (unix seconds), events (total), one count per known type at the
 * top level (impression, click, conversion, send, open, dismiss), custom
 * = {type: count}, last = {type: unix seconds of the newest}, revenue (sum
 * of conversion and custom revenue), last_conversion (unix seconds).
 *
 * Threads: every function may run on any thread; writers serialise on
 * LMDB's writer lock, which ingestion holds only while applying an
 * already-validated chunk.
 */
#ifndef PROMOD_EVENTS_H
#define PROMOD_EVENTS_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "store/store.h"

struct event_base;

#define EVENTS_CHUNK 4000               /**< events per write transaction */
#define EVENTS_MAX_ERRORS 1000          /**< errors listed in a result (all are counted) */
#define EVENTS_MAX_LINE (64 * 1024)     /**< longest NDJSON line / encoded event */
#define EVENTS_MAX_PROPS 4096           /**< encoded `properties` bytes */
#define EVENTS_FUTURE_SLACK 300         /**< seconds an event may be ahead of the clock */

/** Known event types; custom types are EVENTS_CUSTOM. */
enum events_kind {
    EVENTS_IMPRESSION = 0, EVENTS_CLICK, EVENTS_CONVERSION, EVENTS_SEND, EVENTS_OPEN,
    EVENTS_DISMISS, EVENTS_CUSTOM, EVENTS_NKINDS
};

/** Name of a known kind ("impression" ...; "custom" for EVENTS_CUSTOM). */
const char *events_kind_name(enum events_kind k);
/** Kind of a type name: a known kind, EVENTS_CUSTOM for a valid custom
 *  name ([a-z0-9_]{1,32}), or -1 when the name is not valid. */
int events_kind_of(const char *type);

struct events_result {
    long accepted;    /**< new events stored */
    long rejected;    /**< invalid events (each listed in errors, up to EVENTS_MAX_ERRORS) */
    long duplicates;  /**< events whose event_id was already stored (skipped, not errors) */
    json_t *errors;   /**< new array of {"index", "line"?, "code", "message", "field"?} */
    int truncated;    /**< more errors than listed */
    int store_rc;     /**< store error that stopped ingestion (ERR_FULL ...), else 0 */
};

/** Ingest one event object or an array of them (borrowed).  Index = the
 *  position in the array (0 for a single object).  Fills *res (call
 *  events_result_free after).  @return 0, or the store error that stopped
 *  ingestion (events committed before it stay; the rest are rejected with
 *  code "store_error"). */
int events_ingest_json(struct store *s, const json_t *v, struct events_result *res);

/** Ingest NDJSON from memory: one event object per line, blank lines
 *  skipped; index counts non-blank lines from 0, "line" is the 1-based line
 *  number.  @return as events_ingest_json. */
int events_ingest_ndjson(struct store *s, const char *data, size_t len, struct events_result *res);

void events_result_free(struct events_result *res);

/** Delete every raw event of a customer (STORE_EVENTS and their event_id
 *  keys) inside the caller's write txn; the caller deletes the customer's
 *  STORE_CUSTIDX family itself (profiles_erase_txn).  Aggregates keep
 *  their anonymous counts.  @return events deleted (>= 0) or a store error. */
long events_erase_customer(struct store_txn *t, const char *customer);

/** The customer's raw events, oldest first, decoded (at most `max`), as a
 *  new array of event objects with "ts" as ISO-8601 text.  NULL on a store
 *  or decode error. */
json_t *events_customer_list(struct store_txn *t, const char *customer, size_t max);

/** Which campaign × variant × channel × day cells the customer appears
 *  in (their unique-customer markers): a new array of {"day", "campaign_id",
 *  "variant", "channel", "types": [...]}.  NULL on a store error. */
json_t *events_customer_activity(struct store_txn *t, const char *customer);

/** Delete raw events older than `cutoff` (unix seconds) with their index
 *  and event_id keys, minute buckets older than two days, and unique-customer
 *  markers of days before the cutoff; batches of EVENTS_CHUNK deletions per
 *  write txn, the last one durable.  *deleted gets the events removed.
 *  @return 0 or a store error. */
int events_compact(struct store *s, int64_t cutoff, long *deleted);

/** Start the hourly compaction timer on an event base (the main thread's):
 *  removes events older than `retention_days`.  @return 0 or ERR_NOMEM. */
int events_compactor_start(struct event_base *base, struct store *s, int retention_days);
void events_compactor_stop(void);

/** Raw events removed by retention since start (any thread). */
long events_compacted_total(void);

/** Register the events series with /metrics (start-up, before threads):
 *  promod_events_ingested_total{type}, promod_events_rejected_total,
 *  promod_events_duplicates_total, promod_events_compacted_total. */
void events_metrics_init(void);

/* --- reading, for analytics ---------------------------------------------- */

/** One raw event as scans see it.  Strings are borrowed for the callback
 *  only; absent fields are "" (and revenue 0). */
struct events_rec {
    const char *type;
    enum events_kind kind;
    const char *customer, *campaign, *variant, *channel, *currency;
    double revenue;
    int64_t ts_ms;
    unsigned char key[16];   /**< its STORE_EVENTS key (time order, then arrival) */
};
/** Return 0 to go on, 1 to stop, <0 to abort with that code. */
typedef int (*events_rec_fn)(void *ud, const struct events_rec *e);

/** Visit raw events with from_ms <= ts < to_ms in time order. */
int events_scan_time(struct store_txn *t, int64_t from_ms, int64_t to_ms, events_rec_fn fn,
                     void *ud);
/** Visit one customer's raw events with ts >= from_ms whose key is below
 *  `before` (NULL = no upper bound), oldest first. */
int events_scan_customer(struct store_txn *t, const char *customer, int64_t from_ms,
                         const unsigned char before[16], events_rec_fn fn, void *ud);

/** One aggregate cell.  `n` and `u` are borrowed objects {type: integer}
 *  (u has the known kinds and "custom"); valid for the callback only. */
struct events_cell {
    const char *campaign, *variant, *channel;  /**< "" when the events had none */
    int64_t day;                               /**< UTC days since the epoch */
    json_t *n, *u;
    long customers;                            /**< distinct customers in the cell */
    double revenue;
};
typedef int (*events_cell_fn)(void *ud, const struct events_cell *c);

/** Visit aggregate cells of one campaign (NULL = every campaign, "" = events
 *  without a campaign) with from_day <= day <= to_day. */
int events_scan_cells(struct store_txn *t, const char *campaign, int64_t from_day, int64_t to_day,
                      events_cell_fn fn, void *ud);

/** Sum the minute buckets from_min <= minute <= to_min: *counts gets a new
 *  object {type: count}, *revenue the revenue. */
int events_sum_minutes(struct store_txn *t, int64_t from_min, int64_t to_min, json_t **counts,
                       double *revenue);

#endif
