/*
 * analytics.h — numbers marketers read: campaign metrics with confidence
 * intervals, the dashboard, ad-hoc reports, attribution models and ROI.
 *
 * Reads only; owns no records.  Metrics come from the anonymous aggregate
 * cells events_agg.c maintains (campaign × variant × channel × UTC day), so
 * they cover every event ever ingested, including those compacted away;
 * attribution and ROI walk the raw event log (STORE_EVENTS and each
 * customer's index), so they reach back `event_retention_days` only.
 *
 * Definitions (also in docs/events-analytics.md):
 *   exposures        = impressions + sends
 *   ctr              = clicks / exposures
 *   conversion_rate  = conversions / exposures
 *   open_rate        = opens / sends
 * each rate with a 95 % Wilson score interval {value, low, high} (null when
 * the denominator is 0; a numerator above the denominator is capped at it).
 * unique_customers sums the per-cell distinct counts: exact within one
 * campaign × variant × channel × day, an upper bound when cells are summed
 * (a customer active on two days counts twice).
 *
 * Attribution: every conversion with from <= ts <= to is credited to the
 * touches (impression, click and send events that name a campaign) of the
 * same customer in the `window` before it (a touch at the same instant
 * counts when it arrived first).  Models: last_touch and first_touch give
 * 100 % to one touch; linear splits equally; time_decay weighs a touch
 * 2^(-age / half_life) (default half-life 7 days) and normalises;
 * position gives 40 % to the first, 40 % to the last and splits 20 % over
 * the middle (one touch: 100 %; two: 50/50).  A conversion without touches
 * is "unattributed".  Credit is per touch event, so three impressions of
 * one campaign earn three shares.
 *
 * ROI: cost = sends × cost.per_send + impressions × cost.per_impression
 * (the campaign file's `cost` table) + per channel, sends × cost_per_send +
 * impressions × cost_per_impression from the config's
 * `channels = { <name> = { ... } }`; revenue = attributed revenue (model
 * and window as for attribution, default last_touch over 7d); roi =
 * (revenue - cost) / cost and roas = revenue / cost (null when cost is 0).
 *
 * Threads: any; each call uses the calling thread's read transaction.
 */
#ifndef PROMOD_ANALYTICS_H
#define PROMOD_ANALYTICS_H
#include <jansson.h>
#include <stdint.h>
#include "base/buf.h"
#include "base/reqerr.h"
#include "store/store.h"

#define ANALYTICS_MAX_DAYS 1000   /**< longest date range a query may span */
#define ANALYTICS_MAX_ROWS 100000 /**< rows a report may return */

/** 95 % Wilson score interval for k successes in n trials (k capped at n).
 *  n == 0 gives p = lo = hi = NAN. */
void analytics_wilson(long k, long n, double *p, double *lo, double *hi);

/** Metrics of one campaign over UTC days [from_day, to_day]: {"campaign_id",
 *  "from", "to", "totals", "by_variant": [...], "by_channel": [...],
 *  "by_day": [one entry per day of the range]}.  @return new object, or NULL
 *  with `e` filled: 404 not_found (field "id") when there is no data and no
 *  loaded campaign of that id, else the store error (reqerr_from_code,
 *  "analytics: ..."). */
json_t *analytics_campaign(struct store *s, const char *campaign, int64_t from_day,
                           int64_t to_day, struct reqerr *e);

/** The dashboard at `now`: {"now", "from", "to", "totals", "today",
 *  "top_campaigns" (at most `top`, by revenue, conversions, clicks),
 *  "rates": {"last_5m", "last_24h"}}.  Totals span [from_day, to_day].
 *  @return new object or NULL with `e` filled (a store error). */
json_t *analytics_dashboard(struct store *s, int64_t now, int64_t from_day, int64_t to_day,
                            int top, struct reqerr *e);

/** A report request (see analytics_report). */
struct analytics_report_req {
    const char *dims[4];       /**< campaign, variant, channel, day, week, month */
    int ndims;
    const char *metrics[40];   /**< names from analytics_metric_valid() */
    int nmetrics;
    json_t *filters;           /**< {"campaign"|"variant"|"channel": "x" | ["x", ...]} or NULL */
    int64_t from_day, to_day;
    const char *sort;          /**< a metric (descending) or NULL (by dimensions) */
    long limit;                /**< rows; 0 = ANALYTICS_MAX_ROWS */
};

/** Is `m` a report metric?  impressions clicks conversions sends opens
 *  dismisses exposures revenue unique_customers ctr ctr_low ctr_high
 *  conversion_rate conversion_rate_low conversion_rate_high open_rate, or
 *  "count:<type>" for any event type. */
int analytics_metric_valid(const char *m);
/** Is `d` a report dimension? */
int analytics_dim_valid(const char *d);

/** Run a report: {"columns": [dims..., metrics...], "rows": [[...]],
 *  "from", "to", "total_rows", "truncated"?}.  Rates with no denominator
 *  are null.  The request is checked by the caller (analytics_dim_valid,
 *  analytics_metric_valid, the range).  @return new object or NULL with `e`
 *  filled (a store error). */
json_t *analytics_report(struct store *s, const struct analytics_report_req *q, struct reqerr *e);

/** Render a report's columns and rows as CSV (RFC 4180; null = empty
 *  cell) into `out`.  @return 0 or ERR_NOMEM. */
int analytics_report_csv(const json_t *report, struct buf *out);

enum analytics_model { ATTR_LAST = 0, ATTR_FIRST, ATTR_LINEAR, ATTR_DECAY, ATTR_POSITION };
/** Model by name ("last_touch", ...); -1 when unknown. */
int analytics_model_parse(const char *name);
const char *analytics_model_name(enum analytics_model m);

struct analytics_attr_req {
    enum analytics_model model;
    int64_t window_s;          /**< touches this far back from a conversion */
    int64_t half_life_s;       /**< time_decay */
    int64_t from_day, to_day;  /**< conversions in these UTC days */
    const char *campaign;      /**< only this campaign's rows (NULL = all) */
};

/** Attribution: {"model", "window_s", "half_life_s"?, "from", "to",
 *  "conversions", "attributed", "unattributed", "revenue",
 *  "attributed_revenue", "campaigns": [{"campaign_id", "conversions",
 *  "revenue", "touches"}], "channels": [{"channel", "conversions",
 *  "revenue"}]}; credits rounded to 6 decimals.  @return new object or NULL
 *  with `e` filled (a store error). */
json_t *analytics_attribution(struct store *s, const struct analytics_attr_req *q,
                              struct reqerr *e);

/** ROI per campaign over the same request: {"model", "window_s", "from",
 *  "to", "campaigns": [{"campaign_id", "impressions", "sends", "cost",
 *  "cost_campaign", "cost_channels", "attributed_revenue",
 *  "attributed_conversions", "roi", "roas"}], "totals": {...}}.
 *  @return new object or NULL with `e` filled (a store error). */
json_t *analytics_roi(struct store *s, const struct analytics_attr_req *q, struct reqerr *e);

/** "2026-03-01" for a UTC day number (buf >= 11 bytes). */
void analytics_day_str(int64_t day, char *buf, size_t len);

#endif
