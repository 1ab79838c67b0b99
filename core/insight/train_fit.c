/* train_fit.c — parameter defaults, input checks and the dispatch to the
 * algorithm's library. */
#include "insight/train.h"
#include "insight/train_internal.h"
#include "base/err.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

void train_params_default(struct train_params *p, enum train_algo algo, int regression)
{
    memset(p, 0, sizeof *p);
    p->algo = algo;
    p->regression = regression;
    p->trees = 200;
    p->depth = 6;
    p->eta = 0.1;
    p->subsample = 1;
    p->colsample = 1;
    p->min_child_weight = 1;
    p->lambda = 1;
    p->C = 1;
    p->tol = 1e-4;
    p->threads = 1;
}

int train_fit(const struct train_set *tr, const struct train_params *p, struct train_fit_out *o,
              char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (!tr || tr->n < 2 || tr->nfeat < 1 || tr->nfeat > PREDICT_MAX_FEATURES) {
        snprintf(err, errlen, "need at least 2 rows and 1 to %d features", PREDICT_MAX_FEATURES);
        return ERR_INVAL;
    }
    long pos = 0;
    for (long i = 0; i < tr->n; i++) {
        float y = tr->y[i];
        if (!isfinite(y) || (!p->regression && y != 0 && y != 1)) {
            snprintf(err, errlen, "row %ld: target %g is not %s", i, (double)y,
                     p->regression ? "a finite number" : "0 or 1");
            return ERR_INVAL;
        }
        pos += y == 1;
    }
    if (!p->regression && (pos == 0 || pos == tr->n)) {
        snprintf(err, errlen, "the training rows hold only %s (%ld of %ld positive)",
                 pos ? "positives" : "negatives", pos, tr->n);
        return ERR_INVAL;
    }
    for (long i = 0; i < tr->n * tr->nfeat; i++)
        if (isinf(tr->x[i])) {
            snprintf(err, errlen, "row %ld feature %d is infinite", i / tr->nfeat,
                     (int)(i % tr->nfeat));
            return ERR_INVAL;
        }
    switch (p->algo) {
    case TRAIN_GBT:
        if (p->trees < 1 || p->trees > PREDICT_MAX_TREES || p->depth < 1 || p->depth > 16 ||
            !(p->eta > 0 && p->eta <= 1) || !(p->subsample > 0 && p->subsample <= 1) ||
            !(p->colsample > 0 && p->colsample <= 1) || !(p->min_child_weight >= 0) ||
            !(p->lambda >= 0) || p->threads < 1) {
            snprintf(err, errlen, "tree parameters out of range");
            return ERR_INVAL;
        }
        return train_xgb(tr, p, o, err, errlen);
    case TRAIN_LINEAR:
        if (!(p->C > 0) || !(p->tol > 0)) {
            snprintf(err, errlen, "C and tol must be > 0");
            return ERR_INVAL;
        }
        return train_linear(tr, p, o, err, errlen);
    }
    snprintf(err, errlen, "unknown algorithm");
    return ERR_INVAL;
}

void train_fit_release(struct train_fit_out *o)
{
    if (!o)
        return;
    predict_free(o->model);
    o->model = NULL;
    if (o->lib) {
        if (o->algo == TRAIN_LINEAR)
            train_linear_release_lib(o->lib);
        else
            train_xgb_release_lib(o->lib);
    }
    o->lib = NULL;
}
