/*
 * experiments.h — A/B and multivariate experiments as decide sees them:
 * definitions, the published set of live experiments, which variant (or
 * holdout) a customer gets, and the exposure log.
 *
 * Owns:
 *  - The definition: experiments_parse() checks a JSON object (an API body,
 *    or an experiments/NAME.lua file's table converted to JSON) and fills a
 *    struct experiments_def with every default made explicit; its `json`
 *    member is the canonical form (what the API shows and the file holds).
 *    Errors name the field ("variants[1].weight", "coverage").
 *  - The live set: the service (service/exp_admin.h) publishes the
 *    running and concluded experiments with experiments_publish(); decide
 *    reads them through a per-thread view (experiments_view) that maps the
 *    campaigns of the thread's ruleset generation to the experiments
 *    covering them, rebuilt only when either changes (one atomic load per
 *    decide otherwise).
 *  - Assignment (experiments_pick): GrowthBook's runExperiment order —
 *    forced variations by condition, then the namespace, the targeting
 *    condition, the hash (engine/assign.h: versions 1 and 2), coverage and
 *    bucket ranges — so a page running a GrowthBook SDK with the same key
 *    (seed), hash attribute, weights, coverage and namespace puts a
 *    customer in the same variant.  promod's additions: a holdout share of
 *    the customers in the experiment that gets no offer at all (a second,
 *    independent version-2 hash with the seed "__holdout:" + seed), sticky
 *    assignment (the variant of the customer's first exposure is kept when
 *    weights, coverage or the namespace change), and a winner that takes
 *    100 % of the traffic (outside a kept holdout) once concluded.
 *  - STORE_EXPOSURES: key xkey(be32) customer → msgpack [variant, ts_ms,
 *    decision_id], the customer's first exposure to the experiment whose
 *    record number is xkey ("holdout" for the held out).  Written by one
 *    writer thread from a bounded queue that decide fills after its own
 *    commit (experiments_expose), in sorted batches, first exposure wins;
 *    so decide pays a queue push, not a B-tree insert.  The price: what is
 *    still queued when the process is killed (at most ~20 ms of
 *    exposures) is lost; a customer whose exposure was lost is recorded
 *    again at their next decide.  experiments_expo_flush() waits until
 *    everything queued before the call is stored (results, erasure).
 *
 * Threads: parse/free on any thread; experiments_publish from one thread
 * at a time (the service serialises); experiments_view/pick on decide's
 * worker threads (each has its own view); experiments_expose/flush from
 * any thread; the writer is a thread of its own (experiments_expo_start).
 */
#ifndef PROMOD_EXPERIMENTS_H
#define PROMOD_EXPERIMENTS_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"

struct cond;
struct lua_State;
struct rules_gen;
struct store;
struct store_txn;

#define EXPERIMENTS_MAX_VARIANTS 16
#define EXPERIMENTS_MAX_CAMPAIGNS 16
#define EXPERIMENTS_MAX_GUARDRAILS 8
#define EXPERIMENTS_MAX_FORCED 16
#define EXPERIMENTS_MAX_VARIANT_ID 64
#define EXPERIMENTS_MAX_SEED 256
/** The variant name exposures of held-out customers are recorded under
 *  (so no experiment variant may be called that). */
#define EXPERIMENTS_HOLDOUT "holdout"

/** Lifecycle: draft → running ⇄ stopped, running|stopped → concluded (a
 *  winner), archived when deleted (records and exposures kept). */
enum experiments_status {
    EXP_DRAFT = 0, EXP_RUNNING, EXP_STOPPED, EXP_CONCLUDED, EXP_ARCHIVED, EXP_NSTATUS
};
const char *experiments_status_name(enum experiments_status s);
int experiments_status_parse(const char *s); /**< -1 when unknown */

/** What a metric counts per exposed customer, from their first exposure on. */
enum experiments_metric_kind {
    EXPM_CONVERSION = 0, /**< "conversion_rate": converted at least once (any campaign, or none) */
    EXPM_REVENUE,        /**< "revenue_per_customer": revenue of conversion events, summed */
    EXPM_CLICK,          /**< "click_rate": clicked an offer of the experiment's campaigns */
    EXPM_EVENT           /**< "event:<type>": did the custom event <type> at least once */
};

struct experiments_metric {
    enum experiments_metric_kind kind;
    char name[48];          /**< as written: "conversion_rate", "event:signup" */
    char event[33];         /**< EXPM_EVENT: the custom type */
    int higher_is_better;   /**< 1, or 0 for a metric that should go down (a guardrail) */
};

/** "conversion_rate" | "revenue_per_customer" | "click_rate" | "event:<type>"
 *  (type: 1-32 of a-z 0-9 _, not a built-in event type).  @return 0, or -1
 *  with `msg` set. */
int experiments_metric_parse(const char *name, struct experiments_metric *m, char *msg,
                             size_t msglen);

/** One experiment, validated, defaults filled.  Immutable once parsed;
 *  refcounted (experiments_def_ref/unref) because the service's file cache
 *  and published sets share it. */
struct experiments_def {
    int refs;
    char id[129];
    char campaigns[EXPERIMENTS_MAX_CAMPAIGNS][129];
    int ncampaigns;
    char variants[EXPERIMENTS_MAX_VARIANTS][EXPERIMENTS_MAX_VARIANT_ID + 1];
    double weights[EXPERIMENTS_MAX_VARIANTS];     /**< normalised: they sum to 1 */
    double ranges[EXPERIMENTS_MAX_VARIANTS][2];   /**< GrowthBook bucket ranges (coverage applied) */
    int nvariants;                                /**< 2..EXPERIMENTS_MAX_VARIANTS; [0] is control */
    char hash_attribute[65];                      /**< "id" (the customer id) or a profile attribute */
    char seed[EXPERIMENTS_MAX_SEED + 1];          /**< default: the id */
    int hash_version;                             /**< 1 or 2 (default 2) */
    double coverage;                              /**< [0, 1], default 1 */
    int has_namespace;
    char ns[129];
    double ns_lo, ns_hi;                          /**< [lo, hi) of the namespace */
    double holdout;                               /**< [0, 1): share held out, default 0 */
    int sticky;                                   /**< keep the first exposure's variant */
    struct cond *condition;                       /**< targeting (GrowthBook condition) or NULL */
    struct {
        struct cond *cond;
        int variant;
    } forced[EXPERIMENTS_MAX_FORCED];             /**< first match forces a variant (not logged) */
    int nforced;
    struct experiments_metric metric;             /**< primary metric */
    struct experiments_metric guardrails[EXPERIMENTS_MAX_GUARDRAILS];
    int nguardrails;
    long min_sample;                              /**< per arm before a result is called (100) */
    double mde;                                   /**< relative minimum detectable effect (0.1) */
    double alpha;                                 /**< two-sided (0.05) */
    double seq_tuning;                            /**< sequential tuning parameter (5000) */
    int cuped_days;                               /**< pre-exposure lookback for CUPED (14; 0 = off) */
    enum experiments_status file_status;          /**< `status` the definition declares (draft) */
    json_t *json;                                 /**< the canonical definition (owned) */
};

/** Validate a definition object (borrowed) and build a def with refs = 1.
 *  Unknown fields, wrong types and values out of range are refused with
 *  400 and the field: weights that do not sum to a positive number
 *  ("variants"), a negative or non-finite weight ("variants[i].weight"),
 *  coverage or holdout outside [0, 1] / [0, 1), a namespace range that is
 *  not 0 <= lo < hi <= 1, an unknown metric ("metric", "guardrails[i]"), a
 *  hash version other than 1 or 2, a condition GrowthBook's strict
 *  compilation refuses ("condition", "forced[i].condition"), a forced
 *  variant that is not a variant, duplicate variant ids, the variant id
 *  "holdout".  @return 0 with *out set, or an ERR_* with `e` filled. */
int experiments_parse(const json_t *def, struct experiments_def **out, struct reqerr *e);

struct experiments_def *experiments_def_ref(struct experiments_def *d);
void experiments_def_unref(struct experiments_def *d); /**< NULL is fine */

/** Index of variant `id` in d, or -1. */
int experiments_variant_index(const struct experiments_def *d, const char *id);

/** Do two definitions overlap on a campaign they both cover?  Only one
 *  variant of a campaign can be served, so experiments sharing a campaign
 *  must split it: the same namespace, disjoint ranges.  Without a
 *  namespace an experiment claims all of the campaign's traffic; two
 *  different namespaces hash independently, so a customer may fall in
 *  both ranges — both overlap.
 *  @return 1 and the campaign in *camp (borrowed from a), else 0. */
int experiments_overlap(const struct experiments_def *a, const struct experiments_def *b,
                        const char **camp);

/* --- the live set (published by the service) ----------------------------- */

/** One live experiment: running (assigned and logged) or concluded (its
 *  winner served, nothing logged). */
struct experiments_live {
    struct experiments_def *def;   /**< a reference held by the set */
    uint32_t xkey;                 /**< the record's number: prefix of its exposures */
    enum experiments_status status; /**< EXP_RUNNING or EXP_CONCLUDED */
    int winner;                    /**< concluded: variant index */
    int keep_holdout;              /**< concluded: the holdout still gets nothing */
};

/** Publish a new set (copied; each def gets a reference of the set's own)
 *  and bump the sequence number views compare with.  Called by the
 *  service after every change (reload, lifecycle action).  @return 0 or
 *  ERR_NOMEM (the old set stays). */
int experiments_publish(const struct experiments_live *xs, int n);

/** Release the published set (shutdown). */
void experiments_clear(void);

/* --- decide: the per-thread view and assignment --------------------------- */

struct experiments_view;

/** The calling thread's view for generation `g`: rebuilt when the set or
 *  the generation changed since the last call, else returned as is.  NULL
 *  when no live experiment covers a campaign of `g`.  Borrowed until the
 *  thread's next call. */
const struct experiments_view *experiments_view(const struct rules_gen *g);

/** Does a live experiment cover campaign index `camp` of the view's
 *  generation? */
int experiments_covers(const struct experiments_view *v, int camp);

enum experiments_outcome {
    EXPERIMENTS_SERVE = 0, /**< serve campaign variant `variant` */
    EXPERIMENTS_HOLD       /**< held out: the campaign is not offered */
};

/** Who is being assigned (borrowed for the call). */
struct experiments_who {
    const char *customer;         /**< the customer id (hash attribute "id") */
    struct lua_State *L;          /**< the profile table p at p_idx: other hash attributes */
    int p_idx;
    const char *pmp;              /**< the stored profile as msgpack (conditions), or NULL */
    size_t plen;
};

/** What a customer gets in campaign `camp`. */
struct experiments_pick {
    enum experiments_outcome outcome;
    int variant;                  /**< SERVE: the campaign's variant index */
    const char *exp_id;           /**< the experiment (borrowed from the view) */
    const char *variant_id;       /**< experiment variant id or "holdout" (borrowed) */
    uint32_t xkey;
    int in_experiment;            /**< counted in the experiment (and so logged once) */
    int log;                      /**< a first exposure: record it once served */
    const char *why;              /**< static: "hash", "sticky", "forced", "winner", "coverage",
                                       "namespace", "condition", "no_hash_attribute", "holdout" */
};

/** Assign the customer for campaign `camp` (experiments_covers must be
 *  true).  `t` is the request's read snapshot: the stored first exposure
 *  makes the pick sticky (when the experiment asks) and tells whether this
 *  would be a first exposure (`log`).  A customer outside every running
 *  experiment's namespace, coverage or condition gets the control variant
 *  (GrowthBook's "not in experiment": variation 0), not logged.
 *  @return 0, or ERR_INVAL when a variant no longer exists in the
 *  campaign (then the caller serves the campaign as if no experiment). */
int experiments_pick(const struct experiments_view *v, int camp, const struct experiments_who *w,
                     struct store_txn *t, struct experiments_pick *out);

/* --- exposures ------------------------------------------------------------ */

/** Queue a first exposure for the writer (copies the strings).  Blocks only
 *  while the queue (16384 entries) is full. */
void experiments_expose(uint32_t xkey, const char *variant, const char *customer,
                        const char *decision_id, int64_t ts_ms);

/** Start the writer thread on `s`.  @return 0, ERR_NOMEM or -errno. */
int experiments_expo_start(struct store *s);
/** Store what is queued and stop the writer (before the store closes). */
void experiments_expo_stop(void);
/** Wait (at most 10 s) until every exposure queued before the call is
 *  stored or refused.  @return 0, or ERR_BUSY on the time limit.  No-op
 *  (0) when the writer is not running. */
int experiments_expo_flush(void);

/** One stored exposure.  Strings point into `buf` of the struct. */
struct experiments_exposure {
    const char *customer;
    const char *variant;
    const char *decision_id;
    int64_t ts_ms;
    char buf[400];
};

/** Read customer's first exposure to experiment `xkey` in `t`.
 *  @return 0, ERR_NOTFOUND, ERR_PARSE, a store error. */
int experiments_expo_get(struct store_txn *t, uint32_t xkey, const char *customer,
                         struct experiments_exposure *out);

/** Visit every exposure of experiment `xkey` in key (customer) order.  The
 *  callback returns 0 to go on, 1 to stop, < 0 to abort with that code.
 *  Records that do not decode are skipped. */
typedef int (*experiments_expo_fn)(void *ud, const struct experiments_exposure *x);
int experiments_expo_scan(struct store_txn *t, uint32_t xkey, experiments_expo_fn fn, void *ud);

/** A customer's exposures to every experiment as a new array of
 *  {"experiment_key", "variant", "ts", "decision_id"} (export).  NULL on a
 *  store error. */
json_t *experiments_expo_customer(struct store_txn *t, const char *customer);

/** Delete a customer's exposures to every experiment in write txn `t`
 *  (erasure): one seek per experiment that has exposures.  Flush first so
 *  nothing queued lands after.  @return the count deleted or an error. */
long experiments_expo_erase_customer(struct store_txn *t, const char *customer);

/** Register promod_experiment_exposures_total{result} and
 *  promod_experiment_exposure_queue with /metrics (start-up, once). */
void experiments_metrics_init(void);

#endif
