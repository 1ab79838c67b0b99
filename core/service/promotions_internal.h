/*
 * promotions_internal.h — what promotions.c, promotions_pools.c and
 * promotions_loyalty.c share.  Not for other modules.
 */
#ifndef PROMOD_PROMOTIONS_INTERNAL_H
#define PROMOD_PROMOTIONS_INTERNAL_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"
#include "engine/coupons.h"

struct app;
struct rules_gen;
struct rules_campaign;

/** The loaded campaigns and the time, for coupons' campaign lookup. */
struct promotions_lookup {
    struct rules_gen *gen;
    int64_t now;
};
/** coupons_campaign_fn over a struct promotions_lookup. */
void promotions_campaign_lookup(void *ud, const char *id, struct coupons_campaign *out);
/** The campaign file's money budget (zeroed when it has none). */
void promotions_campaign_budget(const struct rules_campaign *c, struct coupons_budget *out);

/** 0 when every member of `body` is named in `known` (NULL-terminated),
 *  else 400 unknown_field. */
int promotions_fields_known(const json_t *body, const char *const *known, struct reqerr *e);
/** A string member; `id` = must pass id_valid.  NULL when absent (then
 *  *rc = 400 missing_field if `required`) or invalid (*rc set). */
const char *promotions_str(const json_t *body, const char *name, int required, int id,
                           struct reqerr *e, int *rc);
/** A redemption on its way through the writer thread (promotions_redeem.c):
 *  the request's fields copied, and the batch item the writer fills. */
struct promotions_redemption {
    struct coupons_batch_item item;
    char code[4 * COUPONS_CODE_MAX]; /**< as typed (normalised by the engine) */
    char customer[COUPONS_ID_MAX + 1];
    char order[COUPONS_ID_MAX + 1];
    char currency[4];
    void (*done)(void *ud);          /**< promotions_redeem_submit's callback */
    uint64_t queued_ns;              /**< monotonic, when submitted (queue wait metric) */
    void *ud;
    struct promotions_redemption *next;
};

/** Register the writer's /metrics (promotions_redeem.c; from promotions_init). */
void promotions_redeemer_init(void);

/** Set up the loyalty side (promotions_loyalty.c). */
void promotions_loyalty_init(struct app *app);

struct loyalty_program;
struct loyalty_change;
/** The loyalty program of the loaded loyalty files (copied). */
void promotions_program(struct loyalty_program *out);
/** Count `n` ledger entries of `type` for /metrics. */
void promotions_loyalty_count(int type, long n);
/** Emit a tier change as a "tier_upgrade" / "tier_downgrade" event
 *  (properties from, to) through event ingestion, so triggers and
 *  analytics see it.  No-op without a change.  Call with no txn open. */
int promotions_tier_event(const char *customer, const struct loyalty_change *ch, int64_t now);

#endif
