/*
 * throttle.h — frequency caps, budgets and contact policies (the default
 * throttle hook), reserved exactly under concurrency; and a channel's
 * quiet hours (throttle_quiet, throttle_quiet_end), the one place decide,
 * campaign sends, triggers and the delivery thread take them from.
 *
 * Counters live in STORE_COUNTERS:
 *   "<customer>\0s"            one record per customer: msgpack map of
 *                              "c<campaign>" / "h<channel>" / "g" → newest
 *                              serve times (rolling windows, exact)
 *   "\1t<campaign>\0<u><be64>" campaign-wide count per clock bucket    (u: h hour, d UTC day, L life)
 * Per-customer windows keep the newest K timestamps (K = the largest limit
 * among the windows, at most THROTTLE_MAX_STAMPS), so "3 per 7d" is exact
 * to the second.  Campaign-wide budgets count in clock buckets: "Nh" is the
 * current hour and the N-1 before it, "Nd" the current UTC day and the N-1
 * before it ("1d" = today, a daily budget), "Nw" = 7N days, "life" ever.
 *
 * Exactness: throttle_reserve() re-reads and increments inside the caller's
 * write transaction, and LMDB runs one writer at a time, so concurrent
 * reservations serialise; a reservation that would pass a limit fails with
 * ERR_CAPPED and writes nothing.
 */
#ifndef PROMOD_THROTTLE_H
#define PROMOD_THROTTLE_H
#include <stdint.h>
#include "base/buf.h"
#include "engine/rules.h"
#include "store/store.h"

#define THROTTLE_MAX_STAMPS 4096

struct throttle_counts {
    long cust[RULES_MAX_WINDOWS];  /**< per campaign.cust_caps window */
    long total[RULES_MAX_WINDOWS]; /**< per campaign.total_caps window */
    long chan[RULES_MAX_WINDOWS];  /**< per channel.policy window */
    long global_day;               /**< offers to the customer in the last 24 h (all campaigns) */
    long cust_std[4];              /**< customer × campaign over 1h 1d 7d 30d */
};

/** One customer's counter record, parsed (request-scoped; owns its memory). */
struct throttle_entry {
    char key[132];  /**< kind ('c' campaign, 'h' channel, 'g' global) + name */
    size_t off;     /**< first stamp in the pool */
    int ns;         /**< stamps, oldest first */
    int keep;       /**< internal: kept when the record is written back */
};
struct throttle_cust {
    struct throttle_entry *e;
    int n, cap;
    int64_t *pool;
    size_t npool, cappool;
};

/** Read and parse the customer's record (any txn): one LMDB read for every
 *  per-customer count of a request.  `tc` must be zero-initialised or a
 *  record loaded before (its buffers are reused).  @return 0 (an absent
 *  record is empty), ERR_TOOBIG, store errors.  Free with
 *  throttle_cust_free(). */
int throttle_cust_load(struct store_txn *t, const char *cust, struct throttle_cust *tc);
void throttle_cust_free(struct throttle_cust *tc);

/** The counts every campaign of a request shares: the channel policy
 *  windows and the global 24 h count. */
int throttle_read_shared(const struct throttle_cust *tc, const struct rules_channel *ch,
                         int64_t now, struct throttle_counts *out);

/** The counts for one customer × campaign × channel: per-customer windows
 *  from `tc`, campaign-wide budgets read from `t`.  With `shared` (from
 *  throttle_read_shared) the channel and global counts are copied. */
int throttle_read(struct store_txn *t, const struct throttle_cust *tc,
                  const struct rules_campaign *c, const struct rules_channel *ch, int64_t now,
                  struct throttle_counts *out, const struct throttle_counts *shared);

/** Would one more offer pass every cap?  On refusal returns ERR_CAPPED and
 *  *why names the limit ("customer 7d", "total 1d", "channel 1d",
 *  "global 1d"); `why` may be NULL when no one reads the reason (formatting
 *  it was a visible share of a decide whose walk passes capped campaigns). */
int throttle_check(const struct throttle_counts *n, const struct rules_campaign *c,
                   const struct rules_channel *ch, long global_cap, const char **why);

/** A reservation session: one customer's record loaded once inside a write
 *  txn, any number of offers checked and counted against it in memory (each
 *  seeing the ones before), written back once.  Zero-initialise, then
 *  begin / add... / end (before the txn commits) / free.  Its buffers are
 *  kept across sessions (begin again after end); free releases them. */
struct throttle_resv {
    struct store_txn *wt;
    const char *cust;
    struct throttle_cust tc; /**< the record as it stands, this request's offers included */
    struct buf enc;          /**< its encoding, written by end */
    int dirty, loaded;
    int64_t now;             /**< of the last offer counted */
};
int throttle_resv_begin(struct throttle_resv *r, struct store_txn *wt, const char *cust);
/** Check one offer against every cap and count it.  0, ERR_CAPPED (+*why)
 *  with nothing counted, or a store error. */
int throttle_resv_add(struct throttle_resv *r, const struct rules_campaign *c,
                      const struct rules_channel *ch, int64_t now, long global_cap, const char **why);
/** Write the record if an offer was counted.  0 or a store error. */
int throttle_resv_end(struct throttle_resv *r);
void throttle_resv_free(struct throttle_resv *r);

/** Check and count one offer inside a write txn (a one-offer session).
 *  0, ERR_CAPPED (+*why), or a store error. */
int throttle_reserve(struct store_txn *wt, const char *cust, const struct rules_campaign *c,
                     const struct rules_channel *ch, int64_t now, long global_cap,
                     const char **why);

/** Does this campaign/channel/global policy need counting at all? */
int throttle_needed(const struct rules_campaign *c, const struct rules_channel *ch, long global_cap);

/** Is `now` inside the channel's quiet hours for a customer in `tz`? */
int throttle_quiet(const struct rules_channel *ch, const char *tz, int64_t now);

/** When do the channel's quiet hours end for a customer in `tz` (NULL or
 *  "" = UTC) at `now` (unix seconds)?  Sends and triggers enqueue a message
 *  for then; the delivery thread defers a due message to then.
 *  @return 0 when `now` is not in quiet hours, else the unix time of the
 *  first whole hour outside them. */
int64_t throttle_quiet_end(const struct rules_channel *ch, const char *tz, int64_t now);

#endif
