/*
 * targeting.h — model scores over the API: propensity of a list of
 * customers for a model (or for the model a campaign ranks by), and a
 * customer's next-best-actions with the features that drove each.
 *
 * Relies on models (predictions, contributions) and decide: the
 * recommendations are exactly what a dry-run decide would serve on the
 * channel (filters, eligibility, model scores, caps, ranking), so an
 * analyst sees what the site will see; the features that drove each are
 * the contributions of the model the campaign ranks by.
 *
 * Threads: an HTTP worker thread (its Lua state computes the features).
 */
#ifndef PROMOD_TARGETING_H
#define PROMOD_TARGETING_H
#include <jansson.h>

struct reqerr;

#define TARGETING_MAX_CUSTOMERS 1000   /**< customers of one propensity request */

struct targeting_req {
    const char *model;         /**< a model id, or NULL when `campaign` is given */
    const char *campaign;      /**< a campaign whose score names a model (expected values) */
    const char **customers;    /**< customer ids (valid ids, at most TARGETING_MAX_CUSTOMERS) */
    int ncustomers;
    const char *channel;       /**< ctx.channel, or NULL */
    const json_t *context;     /**< more ctx fields (an object), or NULL */
};

/** POST /api/v1/targeting/propensity: {"model", "version", "predicts",
 *  "campaign"?, "scores": [{"customer_id", "score", "expected_value"?}],
 *  "errors": [{"customer_id", "message"}]}.  A customer without a profile
 *  is scored as decide would score them (an empty profile).  @return a new
 *  object, or NULL with *e: 404 model_not_found / campaign_not_found, 409
 *  model_not_trained (no live version), 422 campaign_without_model. */
json_t *targeting_propensity(const struct targeting_req *q, struct reqerr *e);

/** GET /api/v1/targeting/recommendations: {"customer_id", "channel",
 *  "recommendations": [{"rank", "campaign_id", "variant", "score",
 *  "model"?: {"id", "version", "propensity", "value", "expected_value"},
 *  "top_features"?: [{"feature", "value", "contribution"}]}]} — the offers
 *  of a dry-run decide (`limit` of them), best first.  @return a new
 *  object, or NULL with *e (422 unknown_channel, ...). */
json_t *targeting_recommend(const char *customer, const char *channel, const char *placement,
                            int limit, struct reqerr *e);

#endif
