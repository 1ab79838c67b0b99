/*
 * dlog.h — the decision log: what decide did for a sample of customers,
 * kept so that an edit of the rules can be replayed on the traffic the
 * server really had (engine/replay.h), and readable through
 * GET /api/v1/decisions.
 *
 * Owns: an LMDB environment of its own, <data_dir>/dlog (dlog_open), so
 * that the log's writes never hold the main environment's write lock that
 * the decide path's cap reservations take; in it STORE_DLOG (one entry per
 * logged decide, key be64(ms) be32(seq), so keys sort by time) and
 * STORE_DLOG_BATCH (one customer index record per writer batch: the
 * customer hash and entry key of each of its entries, to find a customer's
 * entries for export, erasure and the listing by customer).  Logs written
 * by older versions have a row per entry in STORE_DLOG_CUST (customer id
 * \0 key → "") instead: it is still read, erased and swept.  Entries an
 * older version wrote into the main environment's STORE_DLOG are still
 * exported, erased and swept there.
 *
 * An entry holds the request (customer, channel, placement, context,
 * limit, Accept-Language), the customer as decide saw them (the stored
 * profile record's msgpack bytes and p.stats'), the clock the rules saw
 * (ctx.now), the decision id (the seed of Lua's math.random for that
 * decide, so a replay draws the same numbers), the offers (campaign,
 * variant, score), a compact explain summary (campaigns of the channel,
 * candidates that passed eligible and score, offers, whether consent or
 * quiet hours closed the channel) and the rule set generation.
 *
 * Off the request path: dlog_submit() encodes the entry into the worker's
 * own buffer, moves it into a bounded ring and takes the buffer the writer
 * drained last (a few stores under a mutex, no allocation in steady
 * state); one writer thread
 * drains the ring in batches (one per 50 ms at most under load, sooner
 * when the ring is a quarter full or dlog_flush waits), one LMDB write
 * transaction per batch, committed without waiting for the disk.  A full ring drops the entry
 * and counts it (promod_decision_log_dropped_total): a slow disk never
 * slows decide down.  Every minute of idle time the writer sweeps entries
 * older than `decision_log_retention_days`.
 *
 * Sampling is per customer (`decision_log_sample` of the customer ids, by
 * hash): a sampled customer's decides are all logged, so a replay sees
 * their history whole.  Dry runs and replays are never logged.
 *
 * Threads: dlog_sampled/dlog_submit on worker threads; dlog_flush, the
 * readers and the privacy functions from any thread; dlog_start/dlog_stop
 * on the main thread.
 */
#ifndef PROMOD_DLOG_H
#define PROMOD_DLOG_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct store;
struct store_txn;

struct dlog_offer {
    const char *campaign, *variant;
    double score;
};

/** One decide, as decide hands it over: everything borrowed for the call
 *  (dlog_submit copies what it keeps). */
struct dlog_rec {
    int64_t ts_ms;                /**< when (the server's clock) */
    int64_t now;                  /**< ctx.now: the clock the rules saw (unix seconds) */
    const char *decision_id;      /**< 20 characters */
    uint64_t gen_seq;             /**< the rule set generation it ran on */
    const char *customer, *channel, *placement; /**< placement may be NULL */
    const char *context;          /**< the context object as JSON text, or NULL */
    size_t context_len;
    const char *accept_language;  /**< or NULL */
    int limit;
    const void *profile, *stats;  /**< msgpack bytes as stored, or NULL */
    size_t profile_len, stats_len;
    const struct dlog_offer *offers;
    int noffers;
    int considered, scored, blocked; /**< the summary: campaigns of the channel, candidates
                                          that passed eligible and score, channel closed */
};

/** Open (creating) the log's environment, <cfg->data_dir>/dlog, without
 *  starting the writer (the CLI's readers: replay, check).  Idempotent.
 *  @return 0 or a store error (logged). */
int dlog_open(const struct config *cfg);
/** The log's environment (what dlog_scan and dlog_list read), or NULL
 *  when it is not open. */
struct store *dlog_store(void);
/** Start the writer (after the main store `st` is open; opens the log's
 *  environment).  With decision_log_sample 0 nothing is logged, but the
 *  readers still work on an existing log and the sweep still runs.
 *  @return 0, ERR_NOMEM, a store error. */
int dlog_start(const struct config *cfg, struct store *st);
/** Write what is queued, stop the writer and close the log's environment
 *  (before the main store closes). */
void dlog_stop(void);
/** Close what dlog_open opened (same as dlog_stop). */
void dlog_close(void);

/** Is this customer in the sample?  Cheap: one hash, 0 when the log is off. */
int dlog_sampled(const char *customer);

/** Queue one decide for the writer (a worker's thread).  Never blocks on
 *  the disk: a full queue drops it and counts the drop. */
void dlog_submit(const struct dlog_rec *r);

/** Wait until everything submitted before the call is written (at most
 *  `timeout_ms`).  Call with no store txn open.  @return 0, ERR_BUSY. */
int dlog_flush(int timeout_ms);

/** Sweep entries older than the retention now (the writer does it by
 *  itself when idle).  @return entries deleted, or an error < 0. */
long dlog_sweep(struct store *st, int64_t before_ms);

/** Register the log's metrics with /metrics (written, dropped, failed,
 *  swept, queue depth, entries in its environment).  Start-up, once. */
void dlog_metrics_init(void);

/* --- reading ------------------------------------------------------------ */

/** A stored entry, decoded in place: every pointer points into the
 *  entry's bytes.  Text fields are not NUL-terminated: each has its length. */
struct dlog_entry {
    int64_t ts_ms, now;
    uint64_t gen_seq;
    char decision_id[21];
    const char *customer, *channel, *placement, *context, *accept_language;
    size_t customer_len, channel_len, placement_len, context_len, accept_language_len;
    int limit;
    const char *profile, *stats; /**< msgpack, NULL when absent */
    size_t profile_len, stats_len;
    int noffers;
    const unsigned char *offers; /**< read with dlog_entry_offer */
    int considered, scored, offered, blocked;
};

/** Decode an entry's bytes.  @return 0 or ERR_PARSE (not an entry). */
int dlog_entry_decode(const void *bytes, size_t len, struct dlog_entry *e);
/** The i-th offer of a decoded entry (0 <= i < e->noffers); strings are
 *  not NUL-terminated: lengths in *cl and *vl. */
void dlog_entry_offer(const struct dlog_entry *e, int i, const char **camp, size_t *cl,
                      const char **variant, size_t *vl, double *score);
/** The entry as JSON: decision_id, at, ts_ms, request, profile, stats,
 *  offers, summary, rules.  New reference. */
json_t *dlog_entry_json(const struct dlog_entry *e);

/** Visit the entries logged in [from_ms, to_ms] in time order.  Reads in
 *  chunks of short read transactions (a replay of a million entries never
 *  pins old pages for minutes); `fn` gets each entry's bytes, valid for
 *  the call, and returns 0 to go on, 1 to stop, < 0 to abort with that
 *  code.  @return 0, the callback's error, store errors. */
typedef int (*dlog_visit_fn)(void *ud, const void *val, size_t len);
int dlog_scan(struct store *st, int64_t from_ms, int64_t to_ms, dlog_visit_fn fn, void *ud);

/** How many entries the log `st` holds in [from_ms, to_ms]: one pass over
 *  the window's keys in one read txn (the values are not read).  @return
 *  the count, or an error < 0 (ERR_STORE when `st` is NULL). */
long dlog_count(struct store *st, int64_t from_ms, int64_t to_ms);

/** GET /api/v1/decisions: up to `limit` entries of [from_ms, to_ms], of
 *  customer `customer` (NULL: everyone), oldest first, after `cursor` (as
 *  returned in "next_cursor", or NULL).  @return new object {"decisions":
 *  [...], "next_cursor": string|null}, or NULL with *rc = ERR_INVAL (bad
 *  cursor) or a store error. */
json_t *dlog_list(struct store *st, const char *customer, int64_t from_ms, int64_t to_ms,
                  const char *cursor, int limit, int *rc);

/* --- the batch index (dlog.c writes it, dlog_read.c reads it) ------------- */

/* A batch index record (native byte order): u8 version, 3 zero bytes, u32
 * rows, the batch's least entry key[12], then the rows, each u64 customer
 * hash + entry key[12], sorted by (hash, key); its key is the batch's
 * greatest entry key. */
#define DLOG_BIDX_VERSION 1
#define DLOG_BIDX_HDR 20
#define DLOG_BIDX_ROW 20

/** One row of a batch index record: a customer's hash and an entry key. */
struct dlog_bitem {
    uint64_t hash;
    unsigned char key[12];
};

/** The customer hash of the batch index (64-bit FNV-1a of the id): it
 *  only selects candidates, each entry's own customer id decides. */
uint64_t dlog_cust_hash(const char *id, size_t len);
struct buf;
/** Append a batch index record to `out`: the batch's least entry key
 *  `lo` and its `n` rows, sorted by (hash, key).  @return 0, ERR_NOMEM. */
int dlog_batch_encode(struct buf *out, const unsigned char lo[12], const struct dlog_bitem *rows,
                      int n);

/* --- privacy -------------------------------------------------------------- */

/** Every entry of the customer, oldest first (export): those of the main
 *  environment's read txn `t` (written by older versions), then those of
 *  the log's environment (its own read txn).  New reference. */
json_t *dlog_export_customer(struct store_txn *t, const char *customer);
/** Delete every entry of the customer and its index (erasure), in the
 *  caller's write txn of the main environment (older versions' entries).
 *  @return entries deleted, or an error < 0. */
long dlog_erase_customer_txn(struct store_txn *t, const char *customer);
/** Delete every entry of the customer in the log's environment, in a
 *  write txn of its own.  Call dlog_flush() first, so nothing queued comes
 *  back after.  @return entries deleted (0 when the log is not open), or
 *  an error < 0. */
long dlog_erase_customer(const char *customer);

#endif
