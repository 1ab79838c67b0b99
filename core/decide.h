/*
 * decide.h — "which offers, with which content, for this customer on this
 * channel and placement, right now".
 *
 * Runs on a worker thread with that worker's Lua state and adopted ruleset
 * generation.  Order of work, cheapest first so Lua runs only where it
 * must: channel index → status → schedule → placement → consent and quiet
 * hours → eligible (Lua) → cap pre-check on the read snapshot → throttle
 * hook (Lua) → score (Lua or priority) → rank → content (Lua or weighted
 * bucketing) + templates → exact cap reservation in one write transaction
 * (skipped for dry runs).  A hook that errors or exceeds its budget skips
 * that campaign for this request only, is counted in /metrics and shown in
 * explain.
 */
#ifndef PROMOD_DECIDE_H
#define PROMOD_DECIDE_H
#include <jansson.h>

struct decide_req {
    const char *customer_id;
    const char *channel;
    const char *placement;  /**< NULL = any */
    json_t *context;        /**< object or NULL (borrowed) */
    int limit;
    int explain;
    int dry_run;
};

struct decide_err {
    int status;             /**< HTTP status when decide_run returns NULL */
    const char *code;
    char message[256];
    const char *field;
};

/** Decide on the calling worker thread.  @return the response object
 *  ({"decision_id", "offers", "explain"?}) or NULL with *e filled. */
json_t *decide_run(const struct decide_req *q, struct decide_err *e);

/** Register decide's per-campaign counters with /metrics. */
void decide_metrics_init(void);

#endif
