/*
 * exp_results.h — an experiment's results: who was exposed to what, what
 * they did afterwards, and the tests (insight/stats.h) that say whether a
 * variant beats control; plus the recommendation drawn from them and the
 * power calculator.
 *
 * Reads only; owns no records.  Customers count from their first exposure
 * (STORE_EXPOSURES, engine/experiments.h) and each one's raw events are
 * read from their journey (events_log_scan_customer), so a conversion is
 * credited by exposure whatever campaign it names, or none.  Per exposed
 * customer and metric:
 *   conversion_rate       1 when the customer converted at least once in
 *                         [exposure, end), else 0
 *   revenue_per_customer  revenue of their conversions in [exposure, end)
 *   click_rate            1 when they clicked an offer of the experiment's
 *                         campaigns in [exposure, end)
 *   event:<type>          1 when they sent the custom event <type>
 * and the same value over the `cuped_days` before the exposure (the
 * CUPED covariate).  `end` is the experiment's end (stopped or concluded)
 * or now.  Raw events are kept `event_retention_days`: an experiment read
 * long after it ran loses the events compacted away (the results say so).
 *
 * Per metric and variant against control (variant 0): the relative lift
 * with its delta-method interval; a pooled two-proportion z-test (rate
 * metrics) and Welch's t-test (both kinds), each with its `p_value`;
 * CUPED when any customer has a pre-exposure value; the always-valid
 * sequential interval and p-value (the decision rule, so reading every
 * day is safe); GrowthBook's chance to beat control and risk; with more
 * than two variants Holm-adjusted p-values.  Across arms: the
 * sample-ratio-mismatch chi-square test, the holdout's lift (treated vs
 * held out: the campaign's incrementality), and power (the sample still
 * needed for the experiment's minimum detectable effect, in days at the
 * traffic so far).  docs/experiments.md ("Results") lists every field.
 *
 * Threads: any; each call uses the calling thread's read transaction.
 */
#ifndef PROMOD_EXP_RESULTS_H
#define PROMOD_EXP_RESULTS_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"

struct store;
struct experiments_def;

struct exp_results_req {
    const struct experiments_def *def; /**< the definition (variants, weights, metrics, alpha) */
    uint32_t xkey;                     /**< the record's number (its exposures) */
    const char *status;                /**< the experiment's status, shown as is */
    const char *winner;                /**< a concluded experiment's winner, or NULL */
    int64_t started;                   /**< first start, unix seconds (0: never started) */
    int64_t end_ms;                    /**< events and exposures at or after it do not count */
    int64_t now;                       /**< unix seconds */
    int retention_days;                /**< raw events kept (for the warning) */
};

/** Compute the results object (new), or NULL with `e` filled (a store
 *  error, reqerr_from_code).  Waits for queued exposures to be stored
 *  first (experiments_expo_flush), so a decide answered before the call
 *  is counted. */
json_t *exp_results_compute(struct store *s, const struct exp_results_req *q, struct reqerr *e);

/** A power question (GET /api/v1/experiments/power).  mean: the
 *  baseline (a rate for rate metrics); sd: per-customer standard deviation
 *  for a mean metric, 0 for a rate (then p(1 - p)); mde relative; alpha
 *  two-sided; power e.g. 0.8; variants >= 2 (each compared with control,
 *  Holm is not accounted for); tuning > 0 adds the sequential sample;
 *  per_day > 0 (customers a day, all arms) adds the days. */
struct exp_results_power_req {
    double mean, sd, mde, alpha, power, tuning, per_day;
    int variants;
};

/** {"per_variant", "total", "per_variant_sequential"?, "total_sequential"?,
 *  "days"?, "days_sequential"?, ...the inputs} or NULL with `e` filled (400
 *  naming the bad field). */
json_t *exp_results_power(const struct exp_results_power_req *q, struct reqerr *e);

#endif
