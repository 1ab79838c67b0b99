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
 * away (events_log_compact) — the aggregates keep their counts.
 *
 * Events are four modules, each including only the ones before it:
 *   events_kind.h  the type names
 *   events_agg.h   what a chunk adds to aggregates and p.stats
 *   events.h       validation and ingestion (this one)
 *   events_log.h   reading the stored events (scans for analytics, a
 *                  customer's export and erasure) and retention
 *
 * Ingestion (events_ingest_*) validates every event first, outside any
 * transaction, then applies them in chunks of EVENTS_CHUNK events per write
 * transaction; the last commit is durable (group commit), so when the call
 * returns every accepted event is on disk and visible to analytics.  Bad
 * events are reported by index and skipped; the rest are kept.  An event
 * with an `event_id` already seen is a duplicate: skipped and counted, not
 * an error (retries are idempotent).  Each accepted event is also passed to
 * triggers_on_event() inside the same transaction.  Send events of
 * delivered messages come from the delivery thread (main.c hands them to
 * events_ingest_json, built by events_send_event).
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
#include "insight/events_kind.h"
#include "store/store.h"

#define EVENTS_CHUNK 4000               /**< events per write transaction */
#define EVENTS_MAX_ERRORS 1000          /**< errors listed in a result (all are counted) */
#define EVENTS_MAX_LINE (64 * 1024)     /**< longest NDJSON line / encoded event */
#define EVENTS_MAX_PROPS 4096           /**< encoded `properties` bytes */
#define EVENTS_FUTURE_SLACK 300         /**< seconds an event may be ahead of the clock */

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

/** The "send" event of a delivered message, as a new object for
 *  events_ingest_json: type "send", customer_id, campaign_id, channel,
 *  variant (when not NULL or ""), and event_id "send:<key>" — or
 *  "send:h<16 hex digits>" (two FNV-1a hashes of the key) when the key is
 *  longer than 120 bytes, since event ids are at most 128 — so the same
 *  message reported twice is stored once. */
json_t *events_send_event(const char *customer, const char *campaign, const char *channel,
                          const char *variant, const char *key);

/** Register the ingestion series with /metrics (start-up, before threads):
 *  promod_events_ingested_total{type}, promod_events_rejected_total,
 *  promod_events_duplicates_total. */
void events_metrics_init(void);

#endif
