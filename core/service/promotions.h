/*
 * promotions.h — what the coupon and loyalty endpoints call: request
 * bodies checked field by field, abuse limits, then one store transaction
 * of the coupons (engine/coupons.h) or loyalty (engine/loyalty.h) module.
 *
 * Coupons (promotions.c): validate, redeem and rollback for the shop's
 * checkout; pools (promotions_pools.c): generate, import, assign, stats.
 * Loyalty (promotions_loyalty.c): the ledger API.
 *
 * Abuse limits (config, per process, in memory): validate and redeem calls
 * per customer (`coupon_velocity_customer`) and failed guesses per code
 * prefix (`coupon_velocity_prefix`, the first `coupon_prefix_len`
 * characters of the normalised code: an unknown code, another customer's
 * code or a malformed code counts).  Past a limit the call is refused with
 * 429 `too_many_attempts` and `retry_after` seconds (the HTTP layer sends
 * it as Retry-After) before the store is read.
 *
 * Durability: redemptions, rollbacks, assignments and ledger writes are
 * committed with store_txn_commit_ticket(); the caller must not answer
 * before the ticket is on disk (the HTTP handlers hold the reply with
 * http_hold_until_synced).  Refusals write nothing and carry ticket 0.
 *
 * Errors: every entry point returns a new JSON value, or NULL with `*e`
 * filled in the contract's shape (status, code, message, field) — except
 * the checkout's validate and redeem, which run on every checkout: they
 * read the body in place (codec/jscan) and write the reply straight into
 * a buffer (codec/emit), returning 0 or the error code with `*e` filled.
 *
 * Threads: any worker thread, with no store txn open.
 */
#ifndef PROMOD_PROMOTIONS_H
#define PROMOD_PROMOTIONS_H
#include <jansson.h>
#include <stdint.h>
#include "base/buf.h"
#include "base/reqerr.h"
#include "codec/jscan.h"

struct app;

/** Build the abuse limiters from the config and register /metrics
 *  (start-up, once). */
void promotions_init(struct app *app);

/** POST /api/v1/coupons/validate {"code", "customer_id", "amount"?, "currency"?}
 *  → {"valid": true, "code", "campaign_id", "pool", "uses", "max_uses",
 *  "per_customer", "valid_from"?, "valid_until"?, "customer_uses",
 *  "discount"?, "budget"?: {"currency", "amount", "per", "spent",
 *  "remaining"}}.  `body`: a JSON object validated by jscan_check.  The
 *  reply is appended to `out`, as JSON text ending in a newline or as
 *  msgpack (`msgpack` = 1).  @return 0, or an ERR_* code with `e` filled
 *  (counted in /metrics). */
int promotions_validate(struct jscan_val body, struct buf *out, int msgpack, struct reqerr *e);

/* POST /api/v1/coupons/redeem {"code", "customer_id", "order_id", "amount",
 * "currency"} → {"redeemed": true, "replayed", "code", "campaign_id",
 * "pool", "uses", "max_uses", "per_customer", "valid_from"?,
 * "valid_until"?, "order_id", "customer_id", "amount", "currency",
 * "customer_uses", "budget"?: {...as for validate}}.
 *
 * Redemptions go through one writer thread (promotions_redeem.c) that
 * applies every redemption waiting for it in ONE store transaction
 * (coupons_redeem_batch: each with its own checks and outcome, a refusal
 * touching none of the others) and commits once; the group sync then
 * flushes that commit once for all of them.  An HTTP worker uses the steps
 * below so that it serves other connections meanwhile, which is what
 * fills the batches. */
struct promotions_redemption;
/** Check the body (a JSON object validated by jscan_check: fields,
 *  velocity limits) and copy what the redemption needs.  @return a new
 *  redemption, or NULL with `e` filled (counted in /metrics). */
struct promotions_redemption *promotions_redeem_start(struct jscan_val body, struct reqerr *e);
/** Queue `x` for the writer thread; `done(ud)` is called on that thread
 *  once x's outcome is known and, when it wrote, committed (not yet
 *  synced: the ticket says when).  After promotions_redeemer_stop (or when
 *  the thread cannot start) the redemption runs at once on the caller's
 *  thread and `done` is called before this returns. */
void promotions_redeem_submit(struct promotions_redemption *x, void (*done)(void *ud), void *ud);
/** promotions_redeem_submit, then wait until it is done (blocking). */
void promotions_redeem_submit_wait(struct promotions_redemption *x);
/** The outcome of a done redemption: the reply appended to `out` (as
 *  promotions_validate writes it), *ticket the commit's sync ticket (0
 *  when nothing was written; the reply must wait for it).  Frees `x`.
 *  Any thread.  @return 0, or an ERR_* code with `e` filled. */
int promotions_redeem_finish(struct promotions_redemption *x, struct buf *out, int msgpack,
                             uint64_t *ticket, struct reqerr *e);
/** Stop the writer thread after applying what is queued (shutdown, after
 *  the HTTP workers stopped; before the store closes). */
void promotions_redeemer_stop(void);

/** POST /api/v1/coupons/{code}/rollback {"order_id"} → {"rolled_back":
 *  true, "replayed", "code", "order_id", "amount", "currency"}. */
json_t *promotions_rollback(const char *code, const json_t *body, uint64_t *ticket,
                            struct reqerr *e);

/** POST /api/v1/campaigns/{id}/coupons {"generate": {"count", "length"? |
 *  "prefix"? | "pattern"?}, "pool"?, "max_uses"?, "per_customer"?,
 *  "valid_from"?, "valid_until"?, "shared"?, "discount"?} → {"campaign_id",
 *  "pool", "created", "codes": [...]}.  All codes or none. */
json_t *promotions_generate(const char *campaign, const json_t *body, struct reqerr *e);

/** POST /api/v1/campaigns/{id}/coupons/import: CSV (`code[,customer_id]`
 *  a line; a first line starting with "code" is a header) or NDJSON
 *  (`{"code", "customer_id"?}` a line), settings in `opts` (the query:
 *  pool, max_uses, per_customer, valid_from, valid_until, shared) →
 *  {"imported", "failed", "errors": [{"line", "message"}]}. */
json_t *promotions_import(const char *campaign, const char *data, size_t len, int ndjson,
                          const json_t *opts, struct reqerr *e);

/** POST /api/v1/campaigns/{id}/coupons/assign {"customer_id"} → {"code",
 *  "campaign_id", "customer_id", "assigned": true when given now}; 409
 *  pool_exhausted when no free code is left. */
json_t *promotions_assign(const char *campaign, const json_t *body, uint64_t *ticket,
                          struct reqerr *e);

/** GET /api/v1/campaigns/{id}/coupons → counts, pools and budget use. */
json_t *promotions_stats(const char *campaign, struct reqerr *e);

/** Budget use of a campaign for analytics and ROI: {"currency", "amount",
 *  "per", "spent_total", "spent_period", "remaining", "redemptions",
 *  "rolled_back"}, or NULL when the campaign has no coupons and no budget. */
json_t *promotions_budget_json(const char *campaign);

/* --- loyalty (promotions_loyalty.c) ---------------------------------------- */

/** GET /api/v1/loyalty/{customer}?limit=&cursor= → {"customer_id",
 *  "balance", "tier", "tier_since", "qualifying_points", "next_tier"?,
 *  "history": [...], "next_cursor"}. */
json_t *promotions_loyalty_get(const char *customer, long limit, const char *cursor,
                               struct reqerr *e);

/** POST /api/v1/loyalty/{customer}/transactions {"type": "earn" | "burn" |
 *  "adjust", "points", "transaction_id", "reason"?, "expires_at"?} → the
 *  entry and the balance after it.  `may_adjust` is 0 for a key below the
 *  marketer role (adjust is refused with 403). */
json_t *promotions_loyalty_post(const char *customer, const json_t *body, int may_adjust,
                                uint64_t *ticket, struct reqerr *e);

/** Expire due points and re-evaluate the tier of every customer with a
 *  ledger, in batches of 200 per durable write; tier changes become
 *  events.  Runs hourly (promotions_sweeper_start, on the main loop) and on
 *  POST /api/v1/admin/loyalty/sweep.  @return customers visited or an error. */
long promotions_loyalty_sweep(void);
struct event_base;
void promotions_sweeper_start(struct event_base *base);
void promotions_sweeper_stop(void);

#endif
