/*
 * predict.h — a trained model as the server evaluates it: gradient-boosted
 * trees flattened into arrays, or a linear model's weights, with a link
 * function.  No library at run time: XGBoost and LIBLINEAR train
 * (insight/train.h), this module predicts.
 *
 * Owns the compiled form of one trained model version and its byte form
 * (the `model` field of a version record in LMDB, models_store.c).  The
 * byte form is this module's own, independent of the training library's
 * version, and is checked on load: array sizes, feature indices, every
 * child after its parent inside its own tree (so evaluation always ends).
 *
 * Evaluation is allocation-free and reads only the model and the caller's
 * feature vector (float, NaN = missing), so one model may be evaluated by
 * every worker thread at once.
 *
 * Trees (XGBoost semantics): a node sends x to its left child when
 * x[feat] < threshold, compared as float, and a missing value to the side
 * XGBoost learnt for it (default_left).  The margin starts at the base
 * margin and adds each tree's leaf value in float, in tree order, as
 * XGBoost's CPU predictor does; the logistic link is 1 / (1 + exp(-m)) in
 * float.  So predictions equal XGBoosterPredict's to float rounding.  Each
 * tree's nodes are stored breadth-first so that a node's children are
 * adjacent (right = left + 1): one load and one compare per level.
 *
 * Linear: margin = base + sum_i w[i] * (x[i], or center[i] when x[i] is
 * missing), in double.  center holds the training mean of each feature
 * (training replaces a missing value by the mean), so a missing value
 * contributes what an average customer does.
 *
 * Contributions ("which features drove this prediction"): for trees the
 * path attribution XGBoost computes for pred_contribs with
 * approx_contribs = true (each split on the path moves the expected value
 * from the node's mean to the child's mean, credited to the split's
 * feature); for linear models w[i] * (x[i] - center[i]).  Both are in
 * margin space and sum, with the bias term, to the margin.
 *
 * Threads: predict_* evaluation functions on any thread, concurrently;
 * building and freeing a model belongs to one thread.
 */
#ifndef PROMOD_PREDICT_H
#define PROMOD_PREDICT_H
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"

#define PREDICT_MAX_FEATURES 256      /**< features of one model */
#define PREDICT_MAX_TREES 5000
#define PREDICT_MAX_NODES (1u << 24)  /**< nodes over all trees */

enum predict_kind { PREDICT_TREES = 1, PREDICT_LINEAR = 2 };
enum predict_link { PREDICT_LOGISTIC = 1, PREDICT_IDENTITY = 2 };

enum { PREDICT_LEAF = 1, PREDICT_DEFAULT_LEFT = 2 };

/** One tree node.  Internal: go to nodes[left] when x[feat] < v (float
 *  compare) or when x[feat] is NaN and PREDICT_DEFAULT_LEFT is set, else
 *  to nodes[left + 1].  Leaf (PREDICT_LEAF): v is the leaf value. */
struct predict_node {
    float v;
    uint16_t feat;
    uint8_t flags;
    uint8_t pad;
    uint32_t left;
};

/** A node as the evaluation walks it (8 bytes, so more of a model stays in
 *  cache): `fd` = the feature index, bit 15 set when a missing value goes
 *  left; the left child is this node + `off` (right: + off + 1).  A leaf
 *  is v = +inf, default left, off = 0: it leads to itself. */
struct predict_wnode {
    float v;
    uint16_t fd;
    uint16_t off;
};

struct predict_model {
    enum predict_kind kind;
    enum predict_link link;
    int nfeat;
    double base;                 /**< base margin (trees) or intercept (linear) */
    /* trees */
    uint32_t ntrees, nnodes;
    uint32_t *roots;             /**< ntrees indices into nodes */
    struct predict_node *nodes;  /**< every tree's nodes, tree after tree */
    float *mean;                 /**< per node: the mean margin of the training rows below it
                                      (contributions only) */
    /* made by predict_check for evaluation: the nodes again, each leaf turned
     * into a node that leads to itself (threshold +inf, missing left), so
     * that several trees walk in lockstep for `maxdepth` steps without a
     * branch on "leaf?" and their loads overlap */
    struct predict_wnode *walk;
    int maxdepth;
    /* linear */
    double *w;                   /**< nfeat weights on the raw feature values */
    double *center;              /**< nfeat values a missing feature stands for */
};

/** A zeroed model with its arrays allocated (trees: roots, nodes, mean;
 *  linear: w, center).  @return the model, or NULL (out of memory, or
 *  sizes beyond the PREDICT_MAX_* limits). */
struct predict_model *predict_alloc(enum predict_kind kind, enum predict_link link, int nfeat,
                                    uint32_t ntrees, uint32_t nnodes);
void predict_free(struct predict_model *m);

/** Check the structure of a model built by hand or loaded (feature indices
 *  below nfeat, children inside the tree and after their parent, finite
 *  values) and prepare it for evaluation (the walk arrays).  A model built
 *  by hand must pass it before it is evaluated.  @return 0, ERR_INVAL with
 *  the reason in err, ERR_NOMEM. */
int predict_check(struct predict_model *m, char *err, size_t errlen);

/** The margin (before the link) for feature vector x[nfeat]. */
double predict_margin(const struct predict_model *m, const float *x);
/** The prediction: probability (logistic link) or value (identity). */
double predict_eval(const struct predict_model *m, const float *x);
/** Apply the model's link to a margin. */
double predict_link_apply(const struct predict_model *m, double margin);

/** Per-feature contributions to the margin of x: out[0..nfeat-1] per
 *  feature, out[nfeat] the bias (the expected margin); they sum to
 *  predict_margin(m, x) (trees: to float rounding).  `out` has nfeat + 1
 *  entries. */
void predict_contrib(const struct predict_model *m, const float *x, double *out);

/** Append the model's byte form to `out`.  @return 0 or ERR_NOMEM. */
int predict_save(const struct predict_model *m, struct buf *out);
/** Rebuild a model from its byte form (checked with predict_check).
 *  @return 0 and a new model (predict_free), ERR_PARSE with the reason in
 *  err, ERR_NOMEM. */
int predict_load(const void *data, size_t len, struct predict_model **out, char *err,
                 size_t errlen);

#endif
