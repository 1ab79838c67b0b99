/*
 * loyalty.h — a points ledger per customer: earn, burn, adjust, expire;
 * tiers over a qualification window.
 *
 * STORE_LOYALTY, one family per first key byte:
 *   "s" customer              → summary (balance, lifetime earned, next
 *                               entry number, tier and since when)
 *   "e" customer \0 seq(be64) → ledger entry (type, points, remaining,
 *                               expires_at, at, transaction id, reason)
 *   "t" customer \0 txid      → seq (idempotency: one entry per transaction id)
 *   "l" customer \0 seq(be64) → ""  live lots: earn / positive adjust
 *                               entries with points remaining
 *   "d" customer \0 day(be64) → be64 points earned that UTC day (tiers)
 *
 * Lots: every earn (and positive adjust) is a lot with `remaining` points
 * and its own expiry.  A burn (or negative adjust) consumes the oldest
 * lots first (FIFO); an expired lot's remaining points leave through an
 * "expire" entry.  Invariant, kept by every write: balance = the sum of
 * the live lots' remaining points >= 0.  A burn larger than the balance is
 * refused, nothing written.
 *
 * Expiry is applied at the start of every write for that customer and by
 * loyalty_sweep(); reads (loyalty_view) report the balance net of lots
 * already past their expiry, so a customer never sees expired points.
 *
 * Tiers: the qualifying points are those earned (type earn) in the last
 * `window_s` seconds, by UTC day; the tier is the highest whose threshold
 * they reach.  Re-evaluated on every write and by the sweep, so tiers go
 * down as well as up; a change is reported to the caller (struct
 * loyalty_change), which emits it as an event.
 *
 * Idempotency: a transaction id names one entry forever.  The same id with
 * the same type and points answers the stored entry (replayed = 1) and
 * writes nothing; with other details it is refused (409).
 *
 * Threads: any, within the caller's transaction.
 */
#ifndef PROMOD_LOYALTY_H
#define PROMOD_LOYALTY_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"
#include "store/store.h"

#define LOYALTY_MAX_TIERS 16
#define LOYALTY_TIER_MAX 32     /**< bytes in a tier name */
#define LOYALTY_REASON_MAX 200
#define LOYALTY_MAX_POINTS 1000000000000LL /**< per entry */

struct loyalty_tier {
    char name[LOYALTY_TIER_MAX];
    int64_t threshold;          /**< qualifying points needed */
};

/** The program: tiers in ascending threshold order, the qualification
 *  window and how long earned points live. */
struct loyalty_program {
    struct loyalty_tier tiers[LOYALTY_MAX_TIERS];
    int ntiers;
    int64_t window_s;           /**< qualification window (365 days when 0) */
    int64_t expiry_s;           /**< earned points expire after this; 0 = never */
};

enum loyalty_type { LOYALTY_EARN = 1, LOYALTY_BURN, LOYALTY_ADJUST, LOYALTY_EXPIRE };
const char *loyalty_type_name(int type);
/** "earn", "burn", "adjust" → the type; 0 otherwise ("expire" is the
 *  ledger's own). */
int loyalty_type_parse(const char *s);

struct loyalty_entry {
    uint64_t seq;
    int type;
    int64_t points;             /**< signed: burns, expiries, negative adjusts < 0 */
    int64_t remaining;          /**< lots: points not yet burnt or expired */
    int64_t expires_at;         /**< lots: 0 = never */
    int64_t at;
    char txid[129];
    char reason[LOYALTY_REASON_MAX + 1];
};

struct loyalty_summary {
    int64_t balance, lifetime;  /**< lifetime: points ever earned */
    uint64_t next_seq;
    int64_t tier_since;
    char tier[LOYALTY_TIER_MAX];/**< "" = below every tier */
};

struct loyalty_change {
    int tier_changed;
    char from[LOYALTY_TIER_MAX], to[LOYALTY_TIER_MAX];
    int64_t expired;            /**< points expired by this call */
};

/** One transaction as asked for. */
struct loyalty_tx {
    int type;                   /**< earn, burn or adjust */
    int64_t points;             /**< earn, burn: > 0; adjust: != 0 */
    const char *txid;           /**< id_valid */
    const char *reason;         /**< may be NULL */
    int64_t expires_at;         /**< earn / positive adjust: 0 = now + program expiry */
};

/** Push p.loyalty for a profile table: {balance, tier (absent below every
 *  tier), lifetime} from the stored summary, or nothing when the customer
 *  has no ledger.  @return 1 when a table was pushed, 0 otherwise. */
struct lua_State;
int loyalty_push_lua(struct lua_State *L, struct store_txn *t, const char *customer);

/** The stored summary (zeroed for an unknown customer). */
int loyalty_summary_read(struct store_txn *t, const char *customer, struct loyalty_summary *out);

/** The customer as of `now` without writing: balance net of lots past
 *  their expiry, the tier the qualifying points give, those points.  Any
 *  txn.  @return 0 or a store error. */
int loyalty_view(struct store_txn *t, const char *customer, const struct loyalty_program *p,
                 int64_t now, struct loyalty_summary *out, int64_t *qualifying);

/** Apply one transaction (write txn): due expiries first, then the entry,
 *  then the tier.  Refusals fill `e`: 400 invalid_field (points,
 *  transaction_id, reason, expires_at), 422 insufficient_points (points:
 *  more than the balance), 409 transaction_conflict (transaction_id used
 *  with other details).  @return 0 with *out (and *replayed), or the
 *  refusal's ERR_* code / a store error; the caller aborts on non-zero. */
int loyalty_apply(struct store_txn *wt, const char *customer, const struct loyalty_program *p,
                  const struct loyalty_tx *tx, int64_t now, struct loyalty_entry *out,
                  int *replayed, struct loyalty_summary *after, struct loyalty_change *ch,
                  struct reqerr *e);

/** Expire due lots and re-evaluate the tier of one customer (write txn). */
int loyalty_refresh(struct store_txn *wt, const char *customer, const struct loyalty_program *p,
                    int64_t now, struct loyalty_summary *after, struct loyalty_change *ch);

/** The ledger newest first, from entry `before` (exclusive; 0 = newest),
 *  at most `limit` entries appended to `arr` as objects; *next = the seq to
 *  pass as `before` for the next page, 0 when no more. */
int loyalty_history(struct store_txn *t, const char *customer, uint64_t before, int limit,
                    json_t *arr, uint64_t *next);

/** An entry as JSON (new reference). */
json_t *loyalty_entry_json(const struct loyalty_entry *en);

/** Customers with a summary, in key order after `after` (exclusive; ""
 *  = from the start), at most `max` copied into `out` (each
 *  COUPONS-style id buffer of 129 bytes).  @return the number copied. */
int loyalty_customers(struct store_txn *t, const char *after, char (*out)[129], int max);

/** Everything about a customer: {"summary", "entries": [...]} (new ref), NULL when none. */
json_t *loyalty_export(struct store_txn *t, const char *customer, int *rc);
/** Delete the customer's ledger.  @return records deleted or an error. */
long loyalty_erase(struct store_txn *wt, const char *customer);

/** "365d", "12h", "52w" → seconds; -1 when malformed. */
int64_t loyalty_parse_duration(const char *s);

#endif
