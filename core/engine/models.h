/*
 * models.h — model files (models/NAME.lua), trained versions, and serving
 * predictions on the decide path.
 *
 * A model file returns one table: the model's features (profile
 * attributes, p.stats behaviour, context fields, Lua feature functions,
 * segment memberships evaluated from the segment's definition on the same
 * p as of the example's or the decide's time), its label (a conversion after an impression,
 * churn, or revenue to come), its algorithm and parameters, its training
 * window and its retraining schedule.  docs/models.md is the reference.
 *
 * Owns:
 *   models_file.c   parsing and validating one model file (file:line
 *                   errors, `promod check`)
 *   models_seg.c    segment membership features, from the definitions
 *   models_feat.c   features: the one function that turns a profile table
 *                   p and a context table ctx into the feature vector, for
 *                   training and for serving alike
 *   models_store.c  trained versions in LMDB (STORE_MODELS): the version
 *                   records, the live pointer, the live history for
 *                   rollback, a revision the servers poll
 *   models.c        the registry (a refcounted generation: every model
 *                   file, its last good definition, its live version
 *                   compiled), reload from the directory and from the
 *                   store, the worker side (feature functions loaded into
 *                   the worker's Lua state; predictions computed once per
 *                   decide per model and reused), promo.predict, /metrics
 *
 * A trained version carries the source of the model file it was trained
 * from, and serving computes features with that source: a model file whose
 * features changed keeps serving its live version exactly as it was trained
 * until a new version is promoted (or the file is deleted).  A model file
 * that fails to load keeps its previous definition, as campaign files do.
 *
 * Threads: the registry is published by the main thread (timers) or an API
 * handler, read by any thread through models_gen_acquire; models_worker_*
 * and models_predict only on the worker thread that owns the Lua state.
 */
#ifndef PROMOD_MODELS_H
#define PROMOD_MODELS_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "engine/predict.h"

struct app;
struct event_base;
struct luavm;
struct lua_State;
struct store_txn;
struct store;

#define MODELS_MAX_FEATURES 64   /**< declared features of one model */
#define MODELS_MAX_VALUES 32     /**< values of one categorical feature */
#define MODELS_MAX_TYPES 8       /**< event types of one churn / value label */
#define MODELS_MAX_FILE_BYTES (256 * 1024)

/* --- definitions ---------------------------------------------------------- */

enum models_src {
    MODELS_SRC_ATTR = 0,  /**< a profile attribute: p.<path> */
    MODELS_SRC_STATS,     /**< behaviour from p.stats (enum models_stat) */
    MODELS_SRC_CTX,       /**< a request context field: ctx.<path> */
    MODELS_SRC_FN,        /**< a Lua function fn(p, ctx) of the model file */
    MODELS_SRC_SEGMENT    /**< membership of a segment (path[0] = its id; models_seg.c) */
};

enum models_stat {
    MODELS_STAT_COUNT = 0,   /**< events of one type (stat_type), 0 when none */
    MODELS_STAT_DAYS_SINCE,  /**< days since the newest event of stat_type, missing when none */
    MODELS_STAT_EVENTS,      /**< every event, 0 when none */
    MODELS_STAT_REVENUE,     /**< revenue of conversion and custom events, 0 when none */
    MODELS_STAT_RECENCY,     /**< days since the last conversion, missing when none */
    MODELS_STAT_FREQUENCY,   /**< conversions, 0 when none */
    MODELS_STAT_MONETARY,    /**< = revenue */
    MODELS_STAT_TENURE,      /**< days since the first event, missing when none */
    MODELS_STAT_IDLE         /**< days since the newest event, missing when none */
};

struct models_feature {
    char *name;              /**< as the file names it: "age", "stats.recency", "ctx.device", "hour" */
    enum models_src src;
    char **path;             /**< ATTR / CTX: the dotted path's segments */
    int npath;
    enum models_stat stat;   /**< STATS */
    char *stat_type;         /**< STATS COUNT / DAYS_SINCE: the event type */
    int fn;                  /**< FN: index among the file's feature functions */
    char **values;           /**< categorical: one 0/1 column per value (strings) */
    int nvalues;
    int col;                 /**< its first column in the feature vector */
    int ncols;               /**< nvalues, or 1 */
};

enum models_label_kind {
    MODELS_LABEL_EVENT = 0,  /**< propensity: an `event` within `within` after an `after` event */
    MODELS_LABEL_CHURN,      /**< churn: no event of `types` within `within` after a snapshot */
    MODELS_LABEL_VALUE       /**< value: revenue of `types` within `within` after a snapshot */
};

struct models_label {
    enum models_label_kind kind;
    char *event;             /**< EVENT: the outcome's type ("conversion") */
    char *after;             /**< EVENT: the anchor's type ("impression") */
    char *campaign;          /**< EVENT: both must name this campaign (NULL: any) */
    char *types[MODELS_MAX_TYPES]; /**< CHURN / VALUE */
    int ntypes;
    int64_t within;          /**< seconds */
    int64_t every;           /**< CHURN / VALUE: seconds between snapshots (default: within) */
    int64_t active;          /**< CHURN / VALUE: only customers with an event this long before
                                  the snapshot (0: any event before it) */
};

enum models_algo { MODELS_XGBOOST = 1, MODELS_LINEAR = 2 };

struct models_def {
    char *id;
    char *name;
    char *description;
    char *path;              /**< "models/buy.lua" */
    struct models_label label;
    int regression;          /**< VALUE labels: the model predicts an amount, not a probability */
    struct models_feature feats[MODELS_MAX_FEATURES];
    int nfeats;
    int ncols;               /**< columns of the feature vector (categorical features expand) */
    char **colnames;         /**< ncols names ("tier=gold") */
    int nfn;                 /**< feature functions (the file's feats[i].fn count) */
    enum models_algo algo;
    /* parameters (defaults as train_params_default) */
    int trees, depth;
    double eta, subsample, colsample, min_child_weight, lambda, C, tol;
    int64_t retrain;         /**< seconds between scheduled trainings; 0 = on demand only */
    int64_t window;          /**< seconds of events a training looks at */
    double validation;       /**< share of the latest examples held out (0.05 - 0.5) */
    long min_positives;      /**< training and validation need this many positives each
                                  (value models: customers with revenue) */
    long max_rows;           /**< examples beyond this are sampled down (0 = no limit) */
    int manual_promote;      /**< promote = "manual": a new version waits for a promote call */
    uint32_t hash;           /**< of the source */
    uint32_t feat_hash;      /**< of what the features are (names, sources, values), so that two
                                  versions with equal feat_hash read identical vectors */
};

void models_def_free(struct models_def *d);

/** Parse and validate a model file in `vm` (a sandbox).  Errors are
 *  appended to `errors` as "path:line: message".  On success *out is a new
 *  definition (models_def_free); the file's table stays referenced in the
 *  registry under *table_ref when table_ref is not NULL (the caller unrefs
 *  it), else it is released.  @return 0 when valid, ERR_INVAL / ERR_LUA /
 *  ERR_BUDGET / ERR_NOMEM. */
int models_parse(struct luavm *vm, const char *path, const char *src, size_t len, json_t *errors,
                 struct models_def **out, int *table_ref);

/** The same in a throwaway sandbox (promod check, the API's validation). */
int models_validate_source(const char *path, const char *src, size_t len, json_t *errors,
                           struct models_def **out);

/** `promod check` for model files: validate each path (a file or a
 *  directory of *.lua), print "file:line: message" per problem to stdout.
 *  @return the number of problems (a missing path counts). */
int models_check_paths(const char **paths, int n, int *nfiles);

/** The feature functions of a file's table (registry ref `table_ref` in
 *  L): fills refs[0 .. d->nfn-1] with registry refs of the functions, in
 *  feature order.  @return 0 or ERR_INVAL (the table changed shape). */
int models_fn_refs(struct lua_State *L, const struct models_def *d, int table_ref, int *refs);

/* --- features ------------------------------------------------------------ */

/** Why a feature could not be read: the first problem of a vector. */
struct models_feat_err {
    int feature;             /**< index in d->feats, -1 when none */
    int wrong_type;          /**< the value had another type (x got NaN) */
    int failed;              /**< a feature function raised or ran out of budget */
    char got[16];            /**< the Lua type of the first wrong-typed value ("string") */
    char msg[256];
    long nbad;               /**< wrong-typed values in this vector */
    unsigned char bad[MODELS_MAX_FEATURES]; /**< 1 for each feature read as missing for its type */
};

/** Compute the feature vector x[d->ncols] of the profile table at `p_idx`
 *  and the context table at `ctx_idx` (0: none), with `now` for the
 *  "days since" features.  `fn_refs` are the file's feature functions in
 *  this state (NULL when d->nfn is 0).  A value of the wrong type reads as
 *  missing and is reported in *fe; a feature function that fails makes the
 *  call fail.  Stack-neutral.  @return 0, or ERR_LUA / ERR_BUDGET (a
 *  feature function failed; fe->msg says why). */
int models_features(struct luavm *vm, const struct models_def *d, const int *fn_refs, int p_idx,
                    int ctx_idx, int64_t now, float *x, struct models_feat_err *fe);

/** Keep every key string models_features looks up for d alive in L (a
 *  table of them in the registry): lua_getfield then finds each key
 *  interned and never allocates, even for keys p does not have, so a
 *  prediction allocates nothing (feature functions and segment features
 *  aside: they run Lua code or build a view).  @return the registry ref
 *  (luaL_unref when the model goes). */
int models_anchor_keys(struct lua_State *L, const struct models_def *d);

/** The segment features of d (every feats[i] with src MODELS_SRC_SEGMENT)
 *  for the profile table (or read-only view) at p_idx, as of `now`: each
 *  segment's definition evaluated on p's attributes and p.stats
 *  (segments_eval_ids, recursively through `$segment`), 1.0 member, 0.0
 *  not, NaN when no such segment is loaded.  Called by models_features
 *  (models_seg.c).  Stack-neutral.  @return 0, ERR_NOMEM, ERR_PARSE (then
 *  the columns are NaN). */
int models_segment_features(struct lua_State *L, const struct models_def *d, int p_idx,
                            int64_t now, float *x);

/** Push the value feature `f` had in the vector (for explanations): the
 *  number, the category, or nil.  From x (not from p), so it is what the
 *  model saw. */
void models_feature_push_value(struct lua_State *L, const struct models_def *d, int f,
                               const float *x);
/** The same as JSON (new reference). */
json_t *models_feature_value_json(const struct models_def *d, int f, const float *x);

/* --- versions in the store (models_store.c) --------------------------- */

/** Store a trained version: `meta` (borrowed JSON object: metrics,
 *  importance, rows, window...; "version" and "created_at" are set here)
 *  and the model's byte form.  *version gets the new number (1, 2, ...).
 *  In the caller's write txn.  @return 0 or a store error. */
int models_store_put(struct store_txn *t, const char *id, json_t *meta, const void *model,
                     size_t mlen, int *version);
/** One version: *meta a new object (without the model bytes), *model a
 *  new predictor when `model` is not NULL.  @return 0, ERR_NOTFOUND,
 *  ERR_PARSE. */
int models_store_get(struct store_txn *t, const char *id, int version, json_t **meta,
                     struct predict_model **model);
/** Every version of a model, newest first (metadata only), as a new array. */
json_t *models_store_list(struct store_txn *t, const char *id, int limit);
/** The live version number (0 when none). */
int models_store_live(struct store_txn *t, const char *id);
/** Make `version` live (it must exist): the previous live version is
 *  pushed on the model's history; the version's status becomes "live"
 *  and the previous one's "retired".  `actor` and `why` are recorded in
 *  the version.  Bumps the revision.  @return 0, ERR_NOTFOUND. */
int models_store_promote(struct store_txn *t, const char *id, int version, const char *actor,
                         const char *why);
/** Roll back: make `version` live, or (version 0) the version that was
 *  live before the current one.  *live gets the version now live.
 *  @return 0, ERR_NOTFOUND (no such version / nothing to roll back to). */
int models_store_rollback(struct store_txn *t, const char *id, int version, const char *actor,
                          int *live);
/** Set one field of a version's metadata (status of a rejected version...). */
int models_store_annotate(struct store_txn *t, const char *id, int version, const char *key,
                          json_t *value);
/** The revision of everything models keep (bumped by every promotion and
 *  rollback): a server polls it to pick up versions another process made. */
uint64_t models_store_rev(struct store_txn *t);
int models_store_bump(struct store_txn *t);
/** The last training attempt of a model (new object, or NULL when none):
 *  {"at", "ok", "error"?, "version"?, "duration_ms", "trigger"}. */
json_t *models_store_state_get(struct store_txn *t, const char *id);
int models_store_state_put(struct store_txn *t, const char *id, const json_t *state);
/** Ids of every model with versions in the store, as a new array. */
json_t *models_store_ids(struct store_txn *t);

/* --- the registry --------------------------------------------------------- */

struct models_entry {
    char *id;
    char *path;               /**< its file, "models/buy.lua" */
    int file_ok;              /**< the file on disk loaded cleanly */
    char *error;              /**< "file:line: message" of the file on disk, or NULL */
    struct models_def *def;   /**< last good definition of the file (training uses it), or NULL */
    char *source;             /**< its source */
    size_t source_len;
    int64_t loaded_at;
    /* the live version (live_version 0: none, nothing served) */
    int live_version;
    struct models_def *live_def;  /**< the definition the live version was trained with */
    char *live_source;
    size_t live_source_len;
    struct predict_model *live;
    json_t *live_metrics;     /**< its validation metrics (borrowed by readers of the generation) */
    int64_t live_since;
};

struct models_gen {
    int refs;
    uint64_t seq;
    struct models_entry *m;
    int n;
    uint64_t store_rev;      /**< the store revision the live versions were read at */
    uint32_t fp;             /**< hash of the directory's paths and contents it was built from */
};

/** Load the model files of app->cfg's models_dir and the live versions.
 *  Errors are reported (logged, in the listing), never fatal. */
int models_start(struct app *app);
/** Watch the directory and the store revision on `base` (main loop). */
void models_attach(struct app *app, struct event_base *base);
void models_stop(struct app *app);
/** Rescan the directory and the store; publish when anything changed (or
 *  `force`).  @return the number of files with errors. */
int models_reload(struct app *app, int force);

struct models_gen *models_gen_acquire(void);
void models_gen_release(struct models_gen *g);
/** The sequence number of the published generation (one atomic load):
 *  a worker compares it with its own generation's between requests. */
uint64_t models_gen_seq(void);
/** Index of model `id`, or -1. */
int models_gen_find(const struct models_gen *g, const char *id);

/** GET /api/v1/models: every model with its file status, definition
 *  summary and live version (new array). */
json_t *models_list_json(void);
/** One entry's summary (borrowed generation), new object. */
json_t *models_entry_json(const struct models_entry *e);
/** The definition as JSON (features, label, algorithm, schedule), new object. */
json_t *models_def_json(const struct models_def *d);

/* --- the models API (models_api.c; any thread) ------------------------ */

struct reqerr;

/** A model (file status, definition, live version) with its versions,
 *  newest first, at most `limit`, without their sources.  A model whose
 *  file is gone but whose versions are stored has status "no_file".
 *  @return a new object, or NULL with *e (404 model_not_found). */
json_t *models_describe(struct store *s, const char *id, int limit, struct reqerr *e);
/** One version's whole record, its source included.  NULL with *e (404
 *  version_not_found). */
json_t *models_version(struct store *s, const char *id, int version, struct reqerr *e);
/** Make `version` live by hand (promote = "manual", or a rejected
 *  candidate), with an audit entry "model.promote"; served at once.
 *  *out = {"model", "live_version", "previous"}.  @return 0 or an error in
 *  *e (404 version_not_found). */
int models_promote(struct app *app, const char *id, int version, const char *actor, json_t **out,
                   struct reqerr *e);
/** Roll back: `version`, or (0) the version live before the current one;
 *  audit entry "model.rollback"; served at once.  @return 0 or *e (409
 *  nothing_to_roll_back, 404 version_not_found). */
int models_rollback(struct app *app, const char *id, int version, const char *actor, json_t **out,
                    struct reqerr *e);

/* --- serving (worker threads) -------------------------------------------- */

struct models_worker;

/** The calling worker's model state (made on first use from the thread's
 *  rules worker Lua state; NULL on threads without one).  Adopts the newest
 *  generation when called between requests. */
struct models_worker *models_worker_self(void);
/** A models worker serving the Lua state of `vm` (not the thread's own: a
 *  simulation's throwaway state), with the newest generation adopted.
 *  promo.predict called in that state uses it.  Free it with
 *  models_worker_free before the state is freed.  NULL when out of memory. */
struct models_worker *models_worker_new(struct luavm *vm);
void models_worker_free(struct models_worker *w);

/** Adopt the newest generation (between requests). */
void models_worker_refresh(struct models_worker *w);
/** The generation the worker serves. */
const struct models_gen *models_worker_gen(const struct models_worker *w);

/** A decide starts: predictions asked for the profile table at p_idx (and
 *  context at ctx_idx) from now on are computed once per model and reused
 *  until the next models_decide_begin. */
void models_decide_begin(struct models_worker *w, int p_idx, int ctx_idx, int64_t now);

/** The decide is over: nothing is cached for its tables any more (a later
 *  table at the same address is another customer). */
void models_decide_end(struct models_worker *w);

/** The prediction of model `idx` (models_gen_find on the worker's
 *  generation) for the profile at p_idx and context at ctx_idx (0 = none).
 *  Cached per decide when p_idx/ctx_idx are the decide's own.
 *  @return 0 and *out (a probability, or an amount for value models),
 *  ERR_NOTFOUND (no live version: *why says so), ERR_LUA / ERR_BUDGET (a
 *  feature function failed: *why). `why` is static or per-worker text,
 *  valid until the next call. */
int models_predict(struct models_worker *w, int idx, int p_idx, int ctx_idx, double *out,
                   const char **why);

/** One feature's share in a prediction. */
struct models_driver {
    int feature;         /**< index in the live definition's feats */
    double contribution; /**< in margin space (log-odds for probabilities) */
};

/** The prediction with the `n` features that moved it most (by absolute
 *  contribution; categorical columns summed per feature), largest first.
 *  *nout gets how many were filled.  x gets the feature vector (ncols of
 *  the live definition; at least PREDICT_MAX_FEATURES floats).  Not cached.
 *  @return as models_predict. */
int models_predict_explain(struct models_worker *w, int idx, int p_idx, int ctx_idx, double *out,
                           struct models_driver *drv, int n, int *nout, float *x,
                           const char **why);

struct rules_campaign;

/** A campaign's expected value from its declared model score. */
struct models_ev {
    double propensity, value, expected;
    int version;
};

/** The score of campaign `c` declaring score = { model = ..., value = ... }:
 *  expected value = propensity × value (the value a number or a value
 *  model's prediction, at least 0), times priority / 50 — the campaign's
 *  priority is the lever, 50 (the default) leaves the expected value as it
 *  is.  The model's prediction is the decide's cached one.  With explain
 *  (`xp`), adds "model": {"id", "version", "propensity", "value",
 *  "expected_value"}, or on failure "error": "score: <why>".  `ev` (may be
 *  NULL) gets the parts.  @return 0 and *score, or an error (unknown model,
 *  no live version, a failed feature function): the campaign is skipped,
 *  as with a score hook that fails. */
int models_score(struct models_worker *w, const struct rules_campaign *c, int p_idx, int ctx_idx,
                 json_t *xp, double *score, struct models_ev *ev);

/** Start-up, before threads: register the /metrics series
 *  (promod_model_predictions_total, promod_model_prediction_errors_total,
 *  promod_model_feature_wrong_type_total, promod_model_live_version,
 *  promod_model_validation_auc / _logloss / _rmse, all by model) and add
 *  promo.predict to every Lua state made from now on. */
void models_init(void);

#endif
