/* train_linear.c — L2-regularised logistic regression (LIBLINEAR's L2R_LR,
 * the solver scikit-learn's LogisticRegression(solver="liblinear") wraps)
 * and ridge regression (L2R_L2LOSS_SVR with epsilon 0) for value models.
 *
 * Features are standardised before the fit, x' = (x - mean) / scale with
 * the population standard deviation as scale (1 for a constant feature),
 * and a missing value becomes 0 — the mean — which LIBLINEAR's sparse rows
 * express by leaving the feature out.  Without this the L2 penalty would
 * weigh a revenue in euros and a 0/1 flag absurdly differently.  The bias
 * is LIBLINEAR's (and scikit-learn's) appended constant feature 1, so it is
 * regularised like the weights.  Value models subtract the mean target
 * first (and add it back), so the penalty does not pull predictions to 0.
 * The learnt weights are then folded back onto raw feature values for
 * engine/predict.h. */
#include "insight/train.h"
#include "insight/train_internal.h"
#include "base/err.h"
#include <linear.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(const char *s)
{
    (void)s;
}

static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;
static void set_quiet(void)
{
    set_print_string_function(quiet);
}

int train_linear(const struct train_set *tr, const struct train_params *p,
                 struct train_fit_out *o, char *err, size_t errlen)
{
    pthread_once(&quiet_once, set_quiet);
    int nf = tr->nfeat;
    long n = tr->n;
    o->algo = TRAIN_LINEAR;
    o->model = NULL;
    o->lib = NULL;
    if (n > 0x7fffffffL) {
        snprintf(err, errlen, "too many rows for LIBLINEAR (%ld)", n);
        return ERR_INVAL;
    }
    /* standardisation over the present values of each feature */
    for (int j = 0; j < nf; j++) {
        double s = 0, s2 = 0;
        long c = 0;
        for (long i = 0; i < n; i++) {
            float v = tr->x[i * nf + j];
            if (!isnan(v)) {
                s += v;
                c++;
            }
        }
        double mean = c ? s / (double)c : 0;
        for (long i = 0; i < n; i++) {
            float v = tr->x[i * nf + j];
            if (!isnan(v))
                s2 += ((double)v - mean) * ((double)v - mean);
        }
        double sd = c ? sqrt(s2 / (double)c) : 0;
        o->mean[j] = mean;
        o->scale[j] = sd > 1e-12 * (fabs(mean) + 1) ? sd : 1;
    }
    double yoff = 0;
    if (p->regression) {
        for (long i = 0; i < n; i++)
            yoff += tr->y[i];
        yoff /= (double)n;
    }
    o->y_offset = yoff;
    /* rows: present, non-zero standardised values, the bias, a terminator */
    long nnz = 0;
    for (long i = 0; i < n * nf; i++)
        nnz += !isnan(tr->x[i]);
    struct feature_node *pool = malloc(sizeof *pool * (size_t)(nnz + 2 * n));
    struct feature_node **rows = malloc(sizeof *rows * (size_t)n);
    double *y = malloc(sizeof *y * (size_t)n);
    struct model *lm = NULL;
    int rc = 0;
    if (!pool || !rows || !y) {
        snprintf(err, errlen, "out of memory for %ld rows", n);
        rc = ERR_NOMEM;
        goto out;
    }
    struct feature_node *at = pool;
    for (long i = 0; i < n; i++) {
        rows[i] = at;
        for (int j = 0; j < nf; j++) {
            float v = tr->x[i * nf + j];
            if (isnan(v))
                continue;
            double z = ((double)v - o->mean[j]) / o->scale[j];
            if (z == 0)
                continue;
            at->index = j + 1;
            at->value = z;
            at++;
        }
        at->index = nf + 1; /* the bias feature */
        at->value = 1;
        at++;
        at->index = -1;
        at++;
        y[i] = p->regression ? (double)tr->y[i] - yoff : (double)tr->y[i];
    }
    struct problem prob = { .l = (int)n, .n = nf + 1, .y = y, .x = rows, .bias = 1 };
    struct parameter par = {
        .solver_type = p->regression ? L2R_L2LOSS_SVR : L2R_LR,
        .eps = p->tol, .C = p->C, .p = 0,
    };
    const char *bad = check_parameter(&prob, &par);
    if (bad) {
        snprintf(err, errlen, "liblinear: %s", bad);
        rc = ERR_INVAL;
        goto out;
    }
    lm = train(&prob, &par);
    if (!lm) {
        snprintf(err, errlen, "liblinear: training failed");
        rc = ERR_NOMEM;
        goto out;
    }
    /* For two classes LIBLINEAR keeps one weight vector w with
     * P(label[0]) = 1 / (1 + exp(-w.x)); label[0] is whichever class came
     * first in the data, so flip the sign when that was 0. */
    double sign = 1;
    if (!p->regression && lm->nr_class == 2 && lm->label[0] == 0)
        sign = -1;
    for (int j = 0; j <= nf; j++)
        o->w_std[j] = sign * lm->w[j];
    o->model = predict_alloc(PREDICT_LINEAR, p->regression ? PREDICT_IDENTITY : PREDICT_LOGISTIC,
                             nf, 0, 0);
    if (!o->model) {
        snprintf(err, errlen, "out of memory");
        rc = ERR_NOMEM;
        goto out;
    }
    double b = o->w_std[nf] + yoff, tot = 0;
    for (int j = 0; j < nf; j++) {
        o->model->w[j] = o->w_std[j] / o->scale[j];
        o->model->center[j] = o->mean[j];
        b -= o->w_std[j] * o->mean[j] / o->scale[j];
        o->importance[j] = fabs(o->w_std[j]);
        tot += o->importance[j];
    }
    for (int j = 0; j < nf; j++)
        o->importance[j] = tot > 0 ? o->importance[j] / tot : 0;
    o->model->base = b;
    if (predict_check(o->model, err, errlen)) {
        predict_free(o->model);
        o->model = NULL;
        rc = ERR_INVAL;
        goto out;
    }
    if (p->keep_library_model) {
        o->lib = lm;
        lm = NULL;
    }
out:
    if (lm)
        free_and_destroy_model(&lm);
    free(pool);
    free(rows);
    free(y);
    return rc;
}

void train_linear_release_lib(void *lib)
{
    struct model *m = lib;
    if (m)
        free_and_destroy_model(&m);
}
