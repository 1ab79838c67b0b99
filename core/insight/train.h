/*
 * train.h — fitting models on promod's own data: gradient-boosted trees
 * with XGBoost's C API, L2-regularised logistic regression and ridge
 * regression with LIBLINEAR, and the validation metrics that decide
 * whether a new version may replace the live one.
 *
 * Owns the feature matrix handed to the libraries (struct train_set), the
 * calls into them, the conversion of what they learnt into the server's
 * own evaluator (engine/predict.h: XGBoost's JSON model flattened into
 * arrays, LIBLINEAR's weights folded back onto the raw feature scale) and
 * the metrics: AUC, log loss, Brier score and a calibration table for
 * binary models; RMSE, MAE and R² for value models.
 *
 * Threads: any thread; a fit is single-threaded inside LIBLINEAR and uses
 * `threads` OpenMP threads inside XGBoost.  Nothing here touches the store
 * or Lua.
 */
#ifndef PROMOD_TRAIN_H
#define PROMOD_TRAIN_H
#include <jansson.h>
#include <stddef.h>
#include "engine/models.h"
#include "engine/predict.h"

/** A feature matrix: n rows of nfeat floats, row-major, NaN = missing,
 *  with one target per row (0/1 for binary models, a value otherwise). */
struct train_set {
    long n;
    int nfeat;
    float *x;
    float *y;
};

enum train_algo { TRAIN_GBT = 1, TRAIN_LINEAR = 2 };

struct train_params {
    enum train_algo algo;
    int regression;           /**< 0: binary target, logistic link; 1: value, identity link */
    /* gradient-boosted trees (XGBoost, tree_method "hist") */
    int trees;                /**< boosting rounds (default 200) */
    int depth;                /**< max_depth (default 6) */
    double eta;               /**< learning rate (default 0.1) */
    double subsample;         /**< row share per tree (default 1) */
    double colsample;         /**< column share per tree (default 1) */
    double min_child_weight;  /**< default 1 */
    double lambda;            /**< L2 on leaf weights (default 1) */
    /* linear (LIBLINEAR: L2R_LR for binary, L2R_L2LOSS_SVR with p = 0, i.e.
     * ridge, for values); features are standardised first */
    double C;                 /**< inverse regularisation strength (default 1) */
    double tol;               /**< solver stopping tolerance (default 1e-4) */
    int threads;              /**< XGBoost threads (default 1) */
    unsigned seed;            /**< XGBoost's random seed (default 0) */
    int keep_library_model;   /**< keep the library's own model in train_fit_out.lib */
    const volatile int *cancel; /**< when set and non-zero, the fit stops (ERR_BUSY) */
};

/** Defaults for an algorithm and target. */
void train_params_default(struct train_params *p, enum train_algo algo, int regression);

struct train_fit_out {
    enum train_algo algo;          /**< which library fitted it */
    struct predict_model *model;   /**< new; the caller frees it (predict_free) */
    double importance[PREDICT_MAX_FEATURES]; /**< share per feature, sums to 1 (all 0 when
                                                  nothing was learnt): trees' total gain,
                                                  linear |standardised weight| */
    /* linear models: the standardisation LIBLINEAR saw, x' = (x - mean) / scale,
     * a missing value becoming 0, and the weights it learnt on x' (w_std[nfeat]
     * is the bias weight; LIBLINEAR's bias feature is 1) */
    double mean[PREDICT_MAX_FEATURES], scale[PREDICT_MAX_FEATURES];
    double w_std[PREDICT_MAX_FEATURES + 1];
    double y_offset;               /**< value models: the mean target subtracted before fitting */
    /** With keep_library_model: XGBoost's BoosterHandle (trees) or
     *  LIBLINEAR's struct model * (linear), released by train_fit_release. */
    void *lib;
};

/** Fit a model on `tr` (borrowed).  Binary targets must be 0 or 1 with both
 *  classes present.  @return 0 with *o filled, or ERR_INVAL (bad input or
 *  parameters; reason in err), ERR_NOMEM, ERR_STORE... never a crash on
 *  library failure: XGBoost's and LIBLINEAR's messages are copied to err. */
int train_fit(const struct train_set *tr, const struct train_params *p, struct train_fit_out *o,
              char *err, size_t errlen);
/** Free what train_fit kept (the model and the library's model). */
void train_fit_release(struct train_fit_out *o);

/** The same fits, one algorithm each (train_fit dispatches). */
int train_xgb(const struct train_set *tr, const struct train_params *p, struct train_fit_out *o,
              char *err, size_t errlen);
int train_linear(const struct train_set *tr, const struct train_params *p,
                 struct train_fit_out *o, char *err, size_t errlen);

/** Flatten an XGBoost model saved as JSON (XGBoosterSaveModelToBuffer
 *  with {"format": "json"}; objective binary:logistic or
 *  reg:squarederror, gbtree booster, numerical splits) into the server's
 *  evaluator.  @return 0 and a new model, ERR_PARSE with the reason. */
int train_xgb_flatten(const char *json, size_t len, int nfeat, struct predict_model **out,
                      char *err, size_t errlen);

/* --- examples from the store (train_data.c) ----------------------------- */

struct luavm;
struct store;
struct app;

/** A model's examples, in time order: rows [0, ntrain) train, rows
 *  [val_start, n) validate, the rows between are purged (their outcome
 *  window reaches into the validation period). */
struct train_rows {
    long n;
    float *x;                 /**< n × ncols of the definition */
    float *y;                 /**< label: 0/1, or the amount */
    int64_t *t;               /**< each example's anchor time (unix seconds) */
    long ntrain, nval, val_start, purged;
    long pos_train, pos_val;  /**< positives (value models: rows with an amount > 0) */
    int64_t from, to, split_at;
    long customers;           /**< customers with events visited */
    long anchors;             /**< examples before sampling */
    double rate;              /**< the sampling rate applied (1: all) */
    long fn_errors;           /**< examples dropped because a feature function failed */
    char fn_error[512];       /**< the first such failure */
    long wrong_type[MODELS_MAX_FEATURES];  /**< per feature: values of the wrong type */
    char wrong_example[MODELS_MAX_FEATURES][160];
};

/** Build the examples of definition `d` from the store as of `now`:
 *  anchors in [now - window, now - within], labels, features through
 *  models_features in `vm` (with the file's feature functions `fn_refs`,
 *  NULL when it has none).  `cancel` (may be NULL) stops it between
 *  chunks of customers (ERR_BUSY).  @return 0, ERR_INVAL with the reason in err
 *  (a label naming an event type no event has, a window without two
 *  snapshots), ERR_NOMEM, a store error. */
int train_data_build(struct store *s, const struct models_def *d, struct luavm *vm,
                     const int *fn_refs, int64_t now, const volatile int *cancel,
                     struct train_rows *out, char *err, size_t errlen);
void train_rows_free(struct train_rows *r);

/* --- a training, start to finish (train.c) -------------------------------- */

struct reqerr;

struct train_opts {
    int force;                 /**< promote even when worse (or when promote = "manual") */
    const char *actor;         /**< who asked (recorded in the version) */
    const char *trigger;       /**< "api", "schedule", "cli" */
    int threads;               /**< XGBoost threads; 0 = config train_threads */
    const volatile int *cancel;/**< set non-zero to stop (server shutdown) */
};

/** Train model `id` on the calling thread: build the examples from the
 *  store, fit, validate on the held-out latest examples, compare with the
 *  live version, store the version and promote it when it is not worse
 *  (or forced).  The attempt (success or failure) is recorded as the
 *  model's training state.  @return 0 with *result the version's record
 *  (new; its source left out), or an error with *e filled:
 *  404 model_not_found, 422 model_invalid / unknown_event_type /
 *  invalid_label / feature_wrong_type / feature_failed / too_few_positives
 *  (with the counts in e->extra) / training_failed, 503 cancelled. */
int train_model(struct app *app, const char *id, const struct train_opts *o, json_t **result,
                struct reqerr *e);

/* --- the trainer thread (train_sched.c) ----------------------------------- */

/** Start the trainer thread: it runs queued trainings one at a time and,
 *  every 30 seconds, queues each model whose `retrain` period has passed
 *  since its last attempt (or that was never trained).  @return 0 or
 *  ERR_NOMEM. */
int train_sched_start(struct app *app);
/** Cancel a running training, stop and join the thread. */
void train_sched_stop(void);
/** Queue a training of `id` (any thread).  *status gets the model's
 *  training status (new object, as train_sched_status).  @return 0 queued,
 *  ERR_EXISTS when it is already queued or running (status says which),
 *  ERR_NOTFOUND no such model, ERR_BUSY the trainer is not running. */
int train_sched_enqueue(const char *id, int force, const char *actor, json_t **status);
/** {"state": "idle" | "queued" | "running", "since"?, "last": the stored
 *  last attempt or null} for model `id` (new object). */
json_t *train_sched_status(struct app *app, const char *id);

/* --- metrics -------------------------------------------------------------- */

#define TRAIN_CALIB_BINS 10

struct train_metrics {
    int regression;
    long n;
    /* binary */
    long positives;
    double auc;          /**< area under the ROC curve, ties counted half */
    double logloss;      /**< mean negative log-likelihood, p clipped to [1e-15, 1 - 1e-15] */
    double brier;        /**< mean squared error of the probability */
    double base_rate;    /**< share of positives */
    struct {
        long n;
        double mean_pred, rate;
    } calib[TRAIN_CALIB_BINS]; /**< predictions in [k/10, (k+1)/10): count, mean, observed rate */
    /* value */
    double rmse, mae, r2, mean_y, mean_pred;
};

/** Metrics of predictions p[n] (probabilities, or values) against y[n].
 *  @return 0, ERR_NOMEM (AUC sorts a copy), ERR_INVAL for n < 1. */
int train_metrics_compute(const float *y, const double *p, long n, int regression,
                          struct train_metrics *m);
/** AUC alone (rank statistic; ties half).  NaN without both classes. */
double train_auc(const float *y, const double *p, long n);
/** The metrics as a new JSON object: binary {"n", "positives", "base_rate",
 *  "auc", "logloss", "brier", "calibration": [{"from", "to", "n",
 *  "mean_predicted", "observed"}]}; value {"n", "rmse", "mae", "r2",
 *  "mean", "mean_predicted"}. */
json_t *train_metrics_json(const struct train_metrics *m);
/** Is `cand` not worse than `live` on the primary metric (AUC for binary,
 *  RMSE for value models), within `slack` (absolute)? */
int train_metrics_not_worse(const struct train_metrics *cand, const struct train_metrics *live,
                            double slack);

#endif
