/* train_xgb.c — gradient-boosted trees with XGBoost's C API, and the
 * flattening of the learnt trees into engine/predict.h's arrays.
 *
 * The model comes out of XGBoost as its JSON document (the format XGBoost
 * itself documents and reloads), not as a text dump: the JSON carries the
 * exact float thresholds and leaf values, the learnt default direction of
 * every split and each node's hessian sum, which the contributions need. */
#include "insight/train.h"
#include "insight/train_internal.h"
#include "base/err.h"
#include <xgboost/c_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XCK(call)                                                              \
    do {                                                                       \
        if ((call) != 0) {                                                     \
            snprintf(err, errlen, "xgboost: %s", XGBGetLastError());           \
            rc = ERR_INVAL;                                                    \
            goto out;                                                          \
        }                                                                      \
    } while (0)

/* ---------------------------------------------------------------------- */
/* flattening                                                             */

struct jtree {
    json_t *left, *right, *split_idx, *split_cond, *dleft, *hess, *split_type;
    size_t n;
};

static int jtree_get(json_t *t, struct jtree *jt)
{
    jt->left = json_object_get(t, "left_children");
    jt->right = json_object_get(t, "right_children");
    jt->split_idx = json_object_get(t, "split_indices");
    jt->split_cond = json_object_get(t, "split_conditions");
    jt->dleft = json_object_get(t, "default_left");
    jt->hess = json_object_get(t, "sum_hessian");
    jt->split_type = json_object_get(t, "split_type");
    if (!json_is_array(jt->left) || !json_is_array(jt->right) || !json_is_array(jt->split_idx) ||
        !json_is_array(jt->split_cond) || !json_is_array(jt->dleft) || !json_is_array(jt->hess))
        return -1;
    jt->n = json_array_size(jt->left);
    if (!jt->n || json_array_size(jt->right) != jt->n || json_array_size(jt->split_idx) != jt->n ||
        json_array_size(jt->split_cond) != jt->n || json_array_size(jt->dleft) != jt->n ||
        json_array_size(jt->hess) != jt->n)
        return -1;
    return 0;
}

static long jint(json_t *a, size_t i)
{
    json_t *v = json_array_get(a, i);
    return json_is_integer(v) ? (long)json_integer_value(v) : (long)json_number_value(v);
}

static double jnum(json_t *a, size_t i)
{
    return json_number_value(json_array_get(a, i));
}

/* XGBoost's mean value of a node: leaves their value, internal nodes the
 * hessian-weighted mean of their children (FillNodeMeanValue, in float). */
static float node_mean(const struct jtree *jt, long nid, float *memo, int depth)
{
    long l = jint(jt->left, (size_t)nid);
    if (l < 0 || depth > 64)
        return (float)jnum(jt->split_cond, (size_t)nid);
    long r = jint(jt->right, (size_t)nid);
    float h = (float)jnum(jt->hess, (size_t)nid);
    float res = node_mean(jt, l, memo, depth + 1) * (float)jnum(jt->hess, (size_t)l) +
                node_mean(jt, r, memo, depth + 1) * (float)jnum(jt->hess, (size_t)r);
    res = h != 0 ? res / h : 0;
    memo[nid] = res;
    return res;
}

int train_xgb_flatten(const char *json, size_t len, int nfeat, struct predict_model **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *doc = json_loadb(json, len, 0, &je);
    long *queue = NULL;
    uint32_t *newid = NULL;
    float *memo = NULL;
    struct predict_model *m = NULL;
    int rc = ERR_PARSE;
    if (!doc) {
        snprintf(err, errlen, "xgboost model JSON: %s", je.text);
        return ERR_PARSE;
    }
    json_t *learner = json_object_get(doc, "learner");
    json_t *gb = json_object_get(learner, "gradient_booster");
    const char *gbname = json_string_value(json_object_get(gb, "name"));
    const char *obj = json_string_value(json_object_get(json_object_get(learner, "objective"), "name"));
    const char *bs = json_string_value(
        json_object_get(json_object_get(learner, "learner_model_param"), "base_score"));
    json_t *trees = json_object_get(json_object_get(gb, "model"), "trees");
    if (!gbname || strcmp(gbname, "gbtree") || !obj || !bs || !json_is_array(trees) ||
        !json_array_size(trees)) {
        snprintf(err, errlen, "xgboost model JSON: not a gbtree model with trees");
        goto out;
    }
    enum predict_link link;
    if (!strcmp(obj, "binary:logistic"))
        link = PREDICT_LOGISTIC;
    else if (!strcmp(obj, "reg:squarederror"))
        link = PREDICT_IDENTITY;
    else {
        snprintf(err, errlen, "xgboost model JSON: objective %s is not supported", obj);
        goto out;
    }
    size_t ntrees = json_array_size(trees), total = 0, maxn = 0;
    for (size_t t = 0; t < ntrees; t++) {
        struct jtree jt;
        if (jtree_get(json_array_get(trees, t), &jt)) {
            snprintf(err, errlen, "xgboost model JSON: tree %zu is malformed", t);
            goto out;
        }
        total += jt.n;
        if (jt.n > maxn)
            maxn = jt.n;
    }
    if (ntrees > PREDICT_MAX_TREES || total > PREDICT_MAX_NODES) {
        snprintf(err, errlen, "xgboost model: %zu trees, %zu nodes is over the limit", ntrees, total);
        goto out;
    }
    m = predict_alloc(PREDICT_TREES, link, nfeat, (uint32_t)ntrees, (uint32_t)total);
    queue = malloc(sizeof *queue * maxn);
    newid = malloc(sizeof *newid * maxn);
    memo = malloc(sizeof *memo * maxn);
    if (!m || !queue || !newid || !memo) {
        snprintf(err, errlen, "out of memory");
        rc = ERR_NOMEM;
        goto out;
    }
    /* XGBoost turns base_score (an output-space value) into a margin with
     * the objective's ProbToMargin, in float */
    float base = (float)strtod(bs, NULL);
    if (link == PREDICT_LOGISTIC) {
        if (!(base > 0 && base < 1)) {
            snprintf(err, errlen, "xgboost model: base_score %s is not a probability", bs);
            goto out;
        }
        base = -logf(1.0f / base - 1.0f);
    }
    m->base = base;
    uint32_t at = 0;
    for (size_t t = 0; t < ntrees; t++) {
        struct jtree jt;
        jtree_get(json_array_get(trees, t), &jt);
        if (jt.split_type) {
            for (size_t i = 0; i < json_array_size(jt.split_type); i++)
                if (jint(jt.split_type, i) != 0) {
                    snprintf(err, errlen, "xgboost model: categorical splits are not supported");
                    goto out;
                }
        }
        for (size_t i = 0; i < jt.n; i++)
            memo[i] = 0;
        node_mean(&jt, 0, memo, 0);
        /* breadth-first from the root: a node's children get consecutive
         * new indices, so right = left + 1; unreachable (deleted) nodes are
         * dropped */
        size_t qh = 0, qt = 0;
        m->roots[t] = at;
        queue[qt++] = 0;
        newid[0] = at++;
        while (qh < qt) {
            long o = queue[qh++];
            struct predict_node *n = &m->nodes[newid[o]];
            long l = jint(jt.left, (size_t)o), r = jint(jt.right, (size_t)o);
            if (l < 0) {
                n->flags = PREDICT_LEAF;
                n->v = (float)jnum(jt.split_cond, (size_t)o);
                m->mean[newid[o]] = n->v;
                continue;
            }
            long f = jint(jt.split_idx, (size_t)o);
            if (l >= (long)jt.n || r >= (long)jt.n || l <= o || r <= o || f < 0 || f >= nfeat ||
                qt + 2 > jt.n) {
                snprintf(err, errlen, "xgboost model: tree %zu node %ld is malformed", t, o);
                goto out;
            }
            n->v = (float)jnum(jt.split_cond, (size_t)o);
            n->feat = (uint16_t)f;
            n->flags = jint(jt.dleft, (size_t)o) ? PREDICT_DEFAULT_LEFT : 0;
            n->left = at;
            m->mean[newid[o]] = memo[o];
            newid[l] = at++;
            newid[r] = at++;
            queue[qt++] = l;
            queue[qt++] = r;
        }
    }
    m->nnodes = at;
    if (predict_check(m, err, errlen))
        goto out;
    *out = m;
    m = NULL;
    rc = 0;
out:
    predict_free(m);
    free(queue);
    free(newid);
    free(memo);
    json_decref(doc);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* training                                                               */

static void setp(BoosterHandle b, const char *k, double v, int *bad)
{
    char s[64];
    snprintf(s, sizeof s, "%.17g", v);
    if (XGBoosterSetParam(b, k, s))
        *bad = 1;
}

int train_xgb(const struct train_set *tr, const struct train_params *p, struct train_fit_out *o,
              char *err, size_t errlen)
{
    DMatrixHandle d = NULL;
    BoosterHandle b = NULL;
    int rc = 0;
    o->algo = TRAIN_GBT;
    o->model = NULL;
    o->lib = NULL;
    double ysum = 0;
    for (long i = 0; i < tr->n; i++)
        ysum += tr->y[i];
    double base = ysum / (double)tr->n;
    if (!p->regression) /* a base rate of exactly 0 or 1 has no logit */
        base = base < 1e-6 ? 1e-6 : base > 1 - 1e-6 ? 1 - 1e-6 : base;
    XCK(XGDMatrixCreateFromMat(tr->x, (bst_ulong)tr->n, (bst_ulong)tr->nfeat, NAN, &d));
    XCK(XGDMatrixSetFloatInfo(d, "label", tr->y, (bst_ulong)tr->n));
    XCK(XGBoosterCreate(&d, 1, &b));
    int bad = 0;
    XCK(XGBoosterSetParam(b, "verbosity", "0"));
    XCK(XGBoosterSetParam(b, "booster", "gbtree"));
    XCK(XGBoosterSetParam(b, "tree_method", "hist"));
    XCK(XGBoosterSetParam(b, "objective", p->regression ? "reg:squarederror" : "binary:logistic"));
    setp(b, "max_depth", p->depth, &bad);
    setp(b, "eta", p->eta, &bad);
    setp(b, "subsample", p->subsample, &bad);
    setp(b, "colsample_bytree", p->colsample, &bad);
    setp(b, "min_child_weight", p->min_child_weight, &bad);
    setp(b, "lambda", p->lambda, &bad);
    setp(b, "nthread", p->threads, &bad);
    setp(b, "seed", p->seed, &bad);
    setp(b, "base_score", base, &bad);
    if (bad) {
        snprintf(err, errlen, "xgboost: %s", XGBGetLastError());
        rc = ERR_INVAL;
        goto out;
    }
    for (int it = 0; it < p->trees; it++) {
        if (p->cancel && *p->cancel) {
            snprintf(err, errlen, "cancelled");
            rc = ERR_BUSY;
            goto out;
        }
        XCK(XGBoosterUpdateOneIter(b, it, d));
    }
    bst_ulong jlen = 0;
    const char *js = NULL;
    XCK(XGBoosterSaveModelToBuffer(b, "{\"format\": \"json\"}", &jlen, &js));
    if ((rc = train_xgb_flatten(js, (size_t)jlen, tr->nfeat, &o->model, err, errlen)))
        goto out;
    /* importance: each feature's share of the total gain of its splits */
    memset(o->importance, 0, sizeof o->importance);
    bst_ulong nf = 0, dim = 0;
    const char **names = NULL;
    const bst_ulong *shape = NULL;
    const float *scores = NULL;
    if (XGBoosterFeatureScore(b, "{\"importance_type\": \"total_gain\"}", &nf, &names, &dim,
                              &shape, &scores) == 0) {
        double sum = 0;
        for (bst_ulong i = 0; i < nf; i++) {
            /* unnamed features are "f<index>" */
            long fi = names[i][0] == 'f' ? strtol(names[i] + 1, NULL, 10) : -1;
            if (fi >= 0 && fi < tr->nfeat && isfinite(scores[i]) && scores[i] > 0) {
                o->importance[fi] += scores[i];
                sum += scores[i];
            }
        }
        for (int i = 0; sum > 0 && i < tr->nfeat; i++)
            o->importance[i] /= sum;
    }
    if (p->keep_library_model) {
        o->lib = b;
        b = NULL;
    }
out:
    if (rc) {
        predict_free(o->model);
        o->model = NULL;
    }
    if (b)
        XGBoosterFree(b);
    if (d)
        XGDMatrixFree(d);
    return rc;
}

void train_xgb_release_lib(void *lib)
{
    if (lib)
        XGBoosterFree(lib);
}
