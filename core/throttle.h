/*
 * throttle.h — frequency caps, budgets and contact policies (the default
 * throttle hook), reserved exactly under concurrency.
 *
 * Counters live in STORE_COUNTERS:
 *   "<customer>\0c<campaign>"  newest serve times for a customer cap  (rolling, exact)
 *   "<customer>\0h<channel>"   newest contact times on a channel      (rolling, exact)
 *   "<customer>\0g"            newest offers over everything           (rolling 24 h, exact)
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
#include "rules.h"
#include "store.h"

#define THROTTLE_MAX_STAMPS 4096

struct throttle_counts {
    long cust[RULES_MAX_WINDOWS];  /**< per campaign.cust_caps window */
    long total[RULES_MAX_WINDOWS]; /**< per campaign.total_caps window */
    long chan[RULES_MAX_WINDOWS];  /**< per channel.policy window */
    long global_day;               /**< offers to the customer in the last 24 h (all campaigns) */
    long cust_std[4];              /**< customer × campaign over 1h 1d 7d 30d */
};

/** Read the counts for one customer × campaign × channel (any txn).
 *  With `shared` (from throttle_read_shared for the same customer and
 *  channel) the per-channel and global counts are copied from it instead of
 *  read again: decide reads them once per request, not once per campaign. */
int throttle_read(struct store_txn *t, const char *cust, const struct rules_campaign *c,
                  const struct rules_channel *ch, int64_t now, struct throttle_counts *out,
                  const struct throttle_counts *shared);
/** Read only the counts every campaign of a request shares: the channel
 *  policy windows and the global 24 h count. */
int throttle_read_shared(struct store_txn *t, const char *cust, const struct rules_channel *ch,
                         int64_t now, long global_cap, struct throttle_counts *out);

/** Would one more offer pass every cap?  On refusal returns ERR_CAPPED and
 *  *why names the limit ("customer 7d", "total 1d", "channel 1d",
 *  "global 1d"). */
int throttle_check(const struct throttle_counts *n, const struct rules_campaign *c,
                   const struct rules_channel *ch, long global_cap, const char **why);

/** Check and count one offer inside a write txn.  0, ERR_CAPPED (+*why),
 *  or a store error. */
int throttle_reserve(struct store_txn *wt, const char *cust, const struct rules_campaign *c,
                     const struct rules_channel *ch, int64_t now, long global_cap,
                     const char **why);

/** Does this campaign/channel/global policy need counting at all? */
int throttle_needed(const struct rules_campaign *c, const struct rules_channel *ch, long global_cap);

/** Is `now` inside the channel's quiet hours for a customer in `tz`? */
int throttle_quiet(const struct rules_channel *ch, const char *tz, int64_t now);

#endif
