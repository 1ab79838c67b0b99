/*
 * coupons.h — coupon codes and money budgets: pools, generation, import,
 * assignment, validation, redemption, rollback, exact under concurrency.
 *
 * Everything lives in STORE_COUPONS, one record family per first key byte:
 *   "k" code                     → the code (struct coupons_code, binary)
 *   "p" campaign \0 pool         → pool record (msgpack object: discount,
 *                                  codes, created, shared)
 *   "f" campaign \0 code         → ""  codes free for assignment
 *                                        (a used-up code's entry may stay: its
 *                                        redemption counted it out of `free`,
 *                                        coupons_assign drops it when met)
 *   "a" campaign \0 customer     → code  (one code per customer per campaign)
 *   "k" code \0 "r" \0 order     → redemption (binary: state, amount,
 *                                  currency, time, budget bucket, customer)
 *   "k" code \0 "u" \0 customer  → be32 redemptions of the code by the customer
 *   "c" customer \0 "a" campaign → ""  } the customer's assignments and
 *   "c" customer \0 "r" code \0 order  } redemptions (export, erase)
 *   "b" campaign \0 bucket(be64) → be64 money spent (bucket 0 = the campaign's
 *                                  life, else UTC day number + 1)
 *   "s" campaign                 → stats (COUPONS_NSTATS × be64)
 * Codes are unique across the server because the code is the key.  A
 * code's redemptions and per-customer uses sit right after it in key order,
 * so a redemption dirties one leaf page for the code instead of three (what
 * a durable commit flushes is what limits redemptions per second).
 *
 * Money is an int64 of thousandths of the currency unit ("milli"), so sums
 * are exact: 12.345 EUR is 12345; a request amount with more than three
 * decimals is refused, not rounded.
 *
 * Exactness: every function takes the caller's transaction.  A redemption
 * re-reads the code, the customer's uses, the order and the budget, then
 * writes all of them, inside ONE write transaction; LMDB runs one writer at
 * a time, so two redemptions of a single-use code serialise and the second
 * sees the first.  A refusal writes nothing, and a caller aborts the
 * transaction on any non-zero return, so nothing is ever half-applied.
 * Callers commit redemptions and rollbacks durably before answering.
 *
 * Threads: any, within the caller's transaction; no global state.
 */
#ifndef PROMOD_COUPONS_H
#define PROMOD_COUPONS_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "base/reqerr.h"
#include "store/store.h"

#define COUPONS_CODE_MAX 64      /**< characters in a code */
#define COUPONS_ID_MAX 128       /**< campaign, pool, customer, order ids (id_valid) */
#define COUPONS_ALPHABET "23456789ABCDEFGHJKMNPQRSTUVWXYZ" /**< generated codes: no 0 O 1 I L */
#define COUPONS_MAX_GENERATE 200000 /**< codes per generate request */

/** A campaign's money budget (from its file's `budget` field). */
struct coupons_budget {
    int64_t amount_m;    /**< thousandths; 0 = no budget */
    char currency[4];    /**< ISO 4217 code, upper case */
    int per_day;         /**< 0 = for the campaign's life, 1 = per UTC day */
    int pacing;          /**< 1 = "even": a day's budget is released in 24 hourly parts */
};

/** What a redemption needs to know about the campaign a code belongs to;
 *  filled by the caller's lookup (the loaded campaign files). */
struct coupons_campaign {
    int found;           /**< the campaign is loaded */
    int active;          /**< status active and inside its schedule */
    char status[24];     /**< for the refusal message ("paused", "outside schedule") */
    struct coupons_budget budget;
};
typedef void (*coupons_campaign_fn)(void *ud, const char *campaign_id, struct coupons_campaign *out);

/** Settings a code gets when it is created (copied into every code). */
struct coupons_opts {
    const char *pool;      /**< pool id (id_valid); "default" when NULL */
    long max_uses;         /**< redemptions in all; 0 = unlimited (default 1) */
    long per_customer;     /**< redemptions per customer; 0 = unlimited (default 1) */
    int64_t valid_from;    /**< unix seconds; 0 = open */
    int64_t valid_until;   /**< unix seconds; 0 = open */
    int shared;            /**< 1 = anyone may use it and it is never assigned */
    const json_t *discount;/**< what the checkout should grant, returned by validate (borrowed, NULL) */
};

enum { COUPON_SHARED = 1, COUPON_DISABLED = 2 };

/** One code as stored. */
struct coupons_code {
    char code[COUPONS_CODE_MAX + 1];
    char campaign[COUPONS_ID_MAX + 1];
    char pool[COUPONS_ID_MAX + 1];
    char customer[COUPONS_ID_MAX + 1]; /**< assigned to, "" = nobody */
    uint32_t max_uses, per_customer, uses;
    int64_t valid_from, valid_until, created;
    unsigned flags;                    /**< COUPON_* */
};

enum { COUPONS_CODES, COUPONS_FREE, COUPONS_ASSIGNED, COUPONS_REDEEMED, COUPONS_ROLLED_BACK,
       COUPONS_SPENT_M, COUPONS_NSTATS };
/** A campaign's coupon counters (index by the enum above). */
struct coupons_stats {
    int64_t v[COUPONS_NSTATS];
};

/* --- codes ---------------------------------------------------------------- */

/** Normalise a code as a customer typed it: surrounding blanks dropped,
 *  letters upper-cased; then 3-64 characters of [A-Z0-9_-].
 *  @return 0 or ERR_INVAL. */
int coupons_code_normalize(const char *in, char out[COUPONS_CODE_MAX + 1]);

/** A generation pattern: literal characters and '#' for a random character
 *  of COUPONS_ALPHABET ("SPRING-####-####"), or a prefix and a count of
 *  random characters.  Parsed by coupons_pattern_parse. */
struct coupons_pattern {
    char tmpl[COUPONS_CODE_MAX + 1];
    int nrandom;
};
/** From `pattern` (may be NULL), or `prefix` (may be NULL) + `length`
 *  random characters.  Refuses a pattern too small for `count` codes: the
 *  random part must offer at least a million times more codes than are
 *  made, so a guess hits a code at most once in a million tries.  On
 *  refusal fills `e` naming the field.  @return 0 or ERR_INVAL. */
int coupons_pattern_parse(const char *pattern, const char *prefix, long length, long count,
                          struct coupons_pattern *out, struct reqerr *e);
/** A random code of the pattern (getrandom).  @return 0 or -errno. */
int coupons_pattern_make(const struct coupons_pattern *p, char out[COUPONS_CODE_MAX + 1]);

/** Read a code (normalised).  @return 0, ERR_NOTFOUND, ERR_PARSE, store errors. */
int coupons_code_get(struct store_txn *t, const char *code, struct coupons_code *out);

/** Create `code` (normalised) in campaign `camp` with settings `o`, free for
 *  assignment unless shared or given to `customer` (NULL = nobody; then
 *  also counted as assigned).  Creates the pool record when missing.
 *  @return 0, ERR_EXISTS (the code exists anywhere), store errors. */
int coupons_code_add(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                     const char *code, const char *customer, int64_t now);

/** Write the pool record of `camp`/`o->pool` with o->discount and
 *  o->shared (kept when NULL / unchanged), adding `added` to its code
 *  count.  coupons_code_add calls this for each code; bulk callers use
 *  coupons_code_add_many. */
int coupons_pool_touch(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                       long added, int64_t now);

/** coupons_code_add for a batch sharing one pool: the pool record is
 *  written once.  `codes` are normalised; `customers` may be NULL or hold
 *  NULL entries.  For each code `status[i]` gets 0 or ERR_EXISTS (also for
 *  a repeat within the batch).  @return the number created (>= 0) or a
 *  store error (the caller aborts). */
long coupons_code_add_many(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                           const char *const *codes, const char *const *customers, size_t n,
                           int64_t now, int *status);

/** Pools of a campaign as [{"pool", "codes", "shared", "discount"?, "created"}]. */
json_t *coupons_pools_json(struct store_txn *t, const char *camp, int *rc);

/* --- assignment ------------------------------------------------------------- */

/** The customer's code in the campaign: the one assigned before, else the
 *  first free code still valid at `now` (expired free codes met on the way
 *  are dropped from the free list).  *fresh = 1 when assigned now.
 *  @return 0, ERR_CAPPED (pool exhausted: no free code), store errors. */
int coupons_assign(struct store_txn *wt, const char *camp, const char *customer, int64_t now,
                   char code[COUPONS_CODE_MAX + 1], int *fresh);

/** Assignments made and refused for an exhausted pool since start (every
 *  caller: decide, sends, the API), for /metrics.  Counted when the call
 *  returns, so a transaction aborted later is counted all the same. */
void coupons_assign_counts(long *assigned, long *exhausted);

/** The code assigned before, without assigning (any txn; dry runs).
 *  @return 0, ERR_NOTFOUND. */
int coupons_assigned(struct store_txn *t, const char *camp, const char *customer,
                     char code[COUPONS_CODE_MAX + 1]);

/* --- validation, redemption, rollback ------------------------------------- */

struct coupons_req {
    const char *code;       /**< as typed (normalised here) */
    const char *customer;   /**< required (id_valid) */
    const char *order;      /**< redemption: the shop's order id (id_valid) */
    int64_t amount_m;       /**< the discount granted, thousandths (> 0); validate: 0 = not given */
    const char *currency;   /**< ISO 4217, upper case; validate: NULL = not given */
    int64_t now;
};

struct coupons_outcome {
    struct coupons_code c;  /**< the code after the operation */
    int replayed;           /**< the order was redeemed (rolled back) before: nothing changed */
    int64_t amount_m;       /**< redeemed / returned amount */
    char currency[4];
    int64_t at;             /**< redemption time */
    int has_budget;
    struct coupons_budget budget;
    int64_t spent_m, allowed_m; /**< the budget's current bucket after the operation */
    int64_t customer_uses;  /**< of this code by this customer, after */
    int partial;            /**< coupons_redeem failed after its first write: the
                                 transaction holds part of it and must be aborted */
};

/** Would `q` be accepted now?  Checks the code (exists, enabled, validity
 *  window, assigned to this customer or to nobody, uses left, the
 *  customer's uses), the campaign (loaded and active) and, when q gives an
 *  amount, its currency and budget.  Read-only, any txn.  Refusals fill
 *  `e` with the reason (see coupons_redeem) and return its ERR_* code.
 *  @return 0 with *out filled, or an error. */
int coupons_validate(struct store_txn *t, const struct coupons_req *q, coupons_campaign_fn camp,
                     void *ud, struct coupons_outcome *out, struct reqerr *e);

/** Redeem `q` (code, customer, order, amount, currency all required) in the
 *  write txn `wt`: the checks of coupons_validate, then the code's use,
 *  the customer's use, the redemption record and the budget are written
 *  together.  A repeat of an order already redeemed with the same code,
 *  customer, amount and currency answers as the first time (replayed = 1)
 *  and writes nothing.  Refusals (status, code, field):
 *    404 unknown_code (code); 422 expired, not_yet_valid, disabled (code);
 *    422 not_yours (customer_id); 422 used_up (code); 422 customer_limit
 *    (customer_id); 422 not_eligible (code: campaign not loaded or not
 *    active); 422 currency_mismatch (currency); 422 budget_exhausted
 *    (amount); 409 order_conflict (order_id: redeemed before with other
 *    details); 409 rolled_back (order_id).
 *  @return 0, the refusal's ERR_* code, or a store error (e filled too). */
int coupons_redeem(struct store_txn *wt, const struct coupons_req *q, coupons_campaign_fn camp,
                   void *ud, struct coupons_outcome *out, struct reqerr *e);

/** Read, in the read txn `t`, the records coupons_redeem(q) will read or
 *  write next to (the code, its redemption and use by the customer, the
 *  customer's index and the campaign's free list), and ignore what they
 *  say.  Why: the redemptions are applied by one writer thread, and a
 *  record whose page is not in memory stops that thread — and every
 *  redemption behind it — for a disk read.  An HTTP worker calls this
 *  before queueing, so the reads of many redemptions overlap and the
 *  writer finds the pages in memory.  Changes nothing. */
void coupons_redeem_prefetch(struct store_txn *t, const struct coupons_req *q);

/** One redemption of a batch (coupons_redeem_batch). */
struct coupons_batch_item {
    struct coupons_req q;          /**< in: as for coupons_redeem (strings borrowed) */
    int rc;                        /**< out: 0, the refusal's ERR_* code, or a store error */
    struct coupons_outcome out;    /**< out: as from coupons_redeem */
    struct reqerr e;               /**< out: the refusal or error (extra owned by the caller) */
    uint64_t ticket;               /**< out: sync ticket of the commit that holds it (0: none) */
};

/** Redeem many requests in ONE write transaction of store `s`, in array
 *  order, each with exactly the checks and writes of coupons_redeem (a
 *  later item sees what the earlier ones wrote, so two redemptions of a
 *  single-use code still give one success), then one commit: every item
 *  gets the same ticket, which the caller waits for (store_synced) before
 *  acknowledging any of them.  A refusal writes nothing, so it does not
 *  touch the others.  When an item fails half-way (a store error after
 *  its first write, out.partial) or the commit fails, the transaction is
 *  aborted and every item is done again alone, in a transaction of its own
 *  (as coupons_redeem's callers do), so the failure stays with the item
 *  that caused it.  `camp` is called on the calling thread.
 *  @return the number of commits made (1 for a batch that went through in
 *  one; more after a fallback), or a store error when no transaction could
 *  be started (then every item has rc and e set to it). */
int coupons_redeem_batch(struct store *s, struct coupons_batch_item *const *items, size_t n,
                         coupons_campaign_fn camp, void *ud);

/** Undo the redemption of `code` by `order` (a cancelled order): the use,
 *  the customer's use and the budget are given back and the redemption is
 *  marked rolled back.  Again for the same order: replayed = 1, nothing
 *  changes.  404 unknown_code (code) or unknown_redemption (order_id).
 *  @return 0, the refusal's code, or a store error. */
int coupons_rollback(struct store_txn *wt, const char *code, const char *order, int64_t now,
                     struct coupons_outcome *out, struct reqerr *e);

/* --- budgets, stats, privacy --------------------------------------------- */

/** Money spent in the budget's bucket at `now` and how much may be spent
 *  by then (the amount, or the paced part of it).  Any txn. */
int coupons_budget_read(struct store_txn *t, const char *camp, const struct coupons_budget *b,
                        int64_t now, int64_t *spent_m, int64_t *allowed_m);
/** Money spent by a campaign's redemptions (net of rollbacks), in all. */
int coupons_stats_read(struct store_txn *t, const char *camp, struct coupons_stats *out);

/** Everything about a customer: {"assignments": [...], "redemptions": [...]}
 *  (new reference), or NULL with *rc set. */
json_t *coupons_export_customer(struct store_txn *t, const char *customer, int *rc);
/** Erase a customer: assignments deleted (their codes disabled, never given
 *  to anyone else), per-code use counts deleted, redemption records kept
 *  for the budget's arithmetic but with the customer removed.  @return
 *  records changed (>= 0) or a store error. */
long coupons_erase_customer(struct store_txn *wt, const char *customer);

/** A campaign file's `budget = { amount = 50000, currency = "EUR", per =
 *  "campaign" | "1d", pacing = "even" | "none" }` at stack index `idx`
 *  (coupons_budget.c).  Pacing needs per = "1d".  On a problem returns -1
 *  with the field ("budget.amount") and a message for the loader's
 *  file:line report.  Stack-neutral. */
struct lua_State;
int coupons_budget_parse(struct lua_State *L, int idx, struct coupons_budget *out, char *field,
                         size_t fl, char *msg, size_t ml);

/* --- money ----------------------------------------------------------------- */

/** A positive finite amount with at most three decimals, below 10^12, as
 *  thousandths.  @return 0 or ERR_INVAL. */
int coupons_money_parse(double v, int64_t *out_m);
/** Thousandths as a JSON number (new reference). */
json_t *coupons_money_json(int64_t m);
/** "EUR": three upper-case letters.  @return 1 when valid. */
int coupons_currency_valid(const char *s);

#endif
