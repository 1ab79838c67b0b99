/* test_train.c — fitting with XGBoost and LIBLINEAR on data with a planted
 * relationship (the true probability of every row is known), checked
 * against the truth and against the libraries themselves:
 *  - validation AUC within 0.02 of the AUC of the true probabilities, for
 *    trees and for logistic regression; RMSE of value models within 5 %
 *    of the noise floor;
 *  - the server's flattened trees predict what XGBoosterPredict predicts
 *    (1e-6), and their contributions are XGBoost's approximate ones;
 *  - the folded linear model predicts what LIBLINEAR's predict_probability
 *    predicts (1e-6), and LIBLINEAR's coefficients match scikit-learn's
 *    LogisticRegression(solver="liblinear") (and Ridge for value models)
 *    on the same standardised matrix;
 *  - metrics against brute force; bad input refused with a reason. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <linear.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xgboost/c_api.h>

#include "base/err.h"
#include "fixture.h"
#include "insight/train.h"

/* ---------------------------------------------------------------------- */
/* the generator: splitmix64, features with known effects                  */

static uint64_t rng_s;
static double urand(void)
{
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}
static double nrand(void)
{
    double u = urand(), v = urand();
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

#define NF 5
enum { LINEAR_TRUTH, TREE_TRUTH, VALUE_TRUTH };

/* Rows in time order; truth[i] is the true probability (or mean value). */
struct planted {
    struct train_set all;
    double *truth;
};

static void plant(struct planted *d, long n, int kind, uint64_t seed)
{
    rng_s = seed;
    d->all.n = n;
    d->all.nfeat = NF;
    d->all.x = malloc(sizeof(float) * (size_t)n * NF);
    d->all.y = malloc(sizeof(float) * (size_t)n);
    d->truth = malloc(sizeof(double) * (size_t)n);
    for (long i = 0; i < n; i++) {
        float *x = d->all.x + i * NF;
        x[0] = (float)urand();                      /* uniform */
        x[1] = (float)nrand();                      /* normal */
        x[2] = urand() < 0.3 ? 1.0f : 0.0f;         /* a flag */
        int miss = urand() < 0.25;
        x[3] = miss ? NAN : (float)(2 + 3 * nrand()); /* often missing */
        x[4] = (float)(100 * urand());              /* noise, large scale */
        double t;
        if (kind == LINEAR_TRUTH) {
            /* a missing x3 counts as its mean 2, as the model will see it */
            double logit = -1.5 + 2 * x[0] + 0.8 * x[1] - 1.2 * x[2] + 0.3 * (miss ? 2 : x[3]);
            t = 1 / (1 + exp(-logit));
            d->all.y[i] = urand() < t ? 1.0f : 0.0f;
        } else if (kind == TREE_TRUTH) {
            double logit = -1 + 2.5 * (x[0] > 0.6) - 2 * (x[1] < -0.5) * x[2] + 0.6 * x[1] +
                           (miss ? 1.0 : -0.2 * (x[3] > 4));
            t = 1 / (1 + exp(-logit));
            d->all.y[i] = urand() < t ? 1.0f : 0.0f;
        } else {
            t = 10 + 5 * x[0] + 3 * x[2] + 2 * (x[1] > 0) + (miss ? -1 : 0.5 * x[3]);
            d->all.y[i] = (float)(t + 2 * nrand());
        }
        d->truth[i] = t;
    }
}

static void planted_free(struct planted *d)
{
    free(d->all.x);
    free(d->all.y);
    free(d->truth);
}

/* the first 75 % train, the last 25 % validate (a time split) */
static void split(const struct planted *d, struct train_set *tr, struct train_set *va, long *at)
{
    *at = d->all.n * 3 / 4;
    *tr = (struct train_set){ .n = *at, .nfeat = NF, .x = d->all.x, .y = d->all.y };
    *va = (struct train_set){ .n = d->all.n - *at, .nfeat = NF, .x = d->all.x + *at * NF,
                              .y = d->all.y + *at };
}

static double *predict_all(const struct predict_model *m, const struct train_set *s)
{
    double *p = malloc(sizeof *p * (size_t)s->n);
    for (long i = 0; i < s->n; i++)
        p[i] = predict_eval(m, s->x + i * s->nfeat);
    return p;
}

TestSuite(train, .timeout = 300);

/* ---------------------------------------------------------------------- */

static void check_auc_near_truth(int kind, enum train_algo algo)
{
    struct planted d;
    plant(&d, 40000, kind, 42 + (uint64_t)algo);
    struct train_set tr, va;
    long at;
    split(&d, &tr, &va, &at);
    struct train_params p;
    train_params_default(&p, algo, 0);
    p.depth = 4;
    struct train_fit_out o;
    char err[256];
    cr_assert_eq(train_fit(&tr, &p, &o, err, sizeof err), 0, "%s", err);
    double *pred = predict_all(o.model, &va);
    double auc = train_auc(va.y, pred, va.n);
    double truth = train_auc(va.y, d.truth + at, va.n);
    cr_log_info("algo %d truth %d: validation AUC %.4f, true probabilities' AUC %.4f", algo, kind,
                auc, truth);
    cr_assert(fabs(auc - truth) <= 0.02, "AUC %.4f vs truth %.4f", auc, truth);
    /* importance: the pure-noise feature matters least */
    for (int j = 0; j < 4; j++)
        cr_assert(o.importance[4] <= o.importance[j] + 1e-9 || j == 3,
                  "noise %.4f vs feature %d %.4f", o.importance[4], j, o.importance[j]);
    free(pred);
    train_fit_release(&o);
    planted_free(&d);
}

Test(train, trees_reach_the_true_auc)
{
    check_auc_near_truth(TREE_TRUTH, TRAIN_GBT);
}

Test(train, logistic_regression_reaches_the_true_auc)
{
    check_auc_near_truth(LINEAR_TRUTH, TRAIN_LINEAR);
}

Test(train, value_models_reach_the_noise_floor)
{
    struct planted d;
    plant(&d, 30000, VALUE_TRUTH, 7);
    struct train_set tr, va;
    long at;
    split(&d, &tr, &va, &at);
    struct train_metrics oracle;
    cr_assert_eq(train_metrics_compute(va.y, d.truth + at, va.n, 1, &oracle), 0);
    enum train_algo algos[2] = { TRAIN_GBT, TRAIN_LINEAR };
    for (int a = 0; a < 2; a++) {
        struct train_params p;
        train_params_default(&p, algos[a], 1);
        p.depth = 4;
        struct train_fit_out o;
        char err[256];
        cr_assert_eq(train_fit(&tr, &p, &o, err, sizeof err), 0, "%s", err);
        cr_assert_eq(o.model->link, PREDICT_IDENTITY);
        double *pred = predict_all(o.model, &va);
        struct train_metrics m;
        cr_assert_eq(train_metrics_compute(va.y, pred, va.n, 1, &m), 0);
        cr_log_info("value algo %d: RMSE %.4f, noise floor %.4f", algos[a], m.rmse, oracle.rmse);
        /* the truth has a step in x1 the linear model cannot draw */
        cr_assert(m.rmse <= oracle.rmse * (algos[a] == TRAIN_GBT ? 1.05 : 1.15), "RMSE %.4f vs %.4f",
                  m.rmse, oracle.rmse);
        free(pred);
        train_fit_release(&o);
    }
    planted_free(&d);
}

/* ---------------------------------------------------------------------- */

static void check_xgb_agrees(int regression)
{
    struct planted d;
    plant(&d, 6000, regression ? VALUE_TRUTH : TREE_TRUTH, 99);
    struct train_set tr, va;
    long at;
    split(&d, &tr, &va, &at);
    struct train_params p;
    train_params_default(&p, TRAIN_GBT, regression);
    p.keep_library_model = 1;
    struct train_fit_out o;
    char err[256];
    cr_assert_eq(train_fit(&tr, &p, &o, err, sizeof err), 0, "%s", err);
    cr_assert_eq(o.model->ntrees, 200);
    DMatrixHandle dm;
    cr_assert_eq(XGDMatrixCreateFromMat(va.x, (bst_ulong)va.n, NF, NAN, &dm), 0);
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    cr_assert_eq(XGBoosterPredictFromDMatrix(o.lib, dm, "{\"type\": 0, \"training\": false, "
                 "\"iteration_begin\": 0, \"iteration_end\": 0, \"strict_shape\": false}",
                 &shape, &dim, &res), 0, "%s", XGBGetLastError());
    double worst = 0;
    long missing_rows = 0;
    for (long i = 0; i < va.n; i++) {
        double mine = predict_eval(o.model, va.x + i * NF);
        double diff = fabs(mine - res[i]);
        worst = diff > worst ? diff : worst;
        missing_rows += isnan(va.x[i * NF + 3]);
        cr_assert(diff <= 1e-6 * (regression ? fmax(1, fabs(res[i])) : 1),
                  "row %ld: ours %.9g, xgboost %.9g", i, mine, (double)res[i]);
    }
    cr_assert_gt(missing_rows, 100);
    cr_log_info("xgboost (regression %d): worst difference %.3g over %ld rows", regression, worst,
                va.n);
    cr_assert_eq(XGBoosterPredictFromDMatrix(o.lib, dm, "{\"type\": 3, \"training\": false, "
                 "\"iteration_begin\": 0, \"iteration_end\": 0, \"strict_shape\": false}",
                 &shape, &dim, &res), 0, "%s", XGBGetLastError());
    for (long i = 0; i < va.n; i++) {
        double c[NF + 1];
        predict_contrib(o.model, va.x + i * NF, c);
        for (int j = 0; j <= NF; j++)
            cr_assert(fabs(c[j] - res[i * (NF + 1) + j]) <= 1e-4 * fmax(1, fabs(c[j])),
                      "row %ld contribution %d: ours %.9g, xgboost %.9g", i, j, c[j],
                      (double)res[i * (NF + 1) + j]);
    }
    XGDMatrixFree(dm);
    train_fit_release(&o);
    planted_free(&d);
}

Test(train, flattened_trees_predict_what_xgboost_predicts)
{
    check_xgb_agrees(0);
    check_xgb_agrees(1);
}

/* the row LIBLINEAR saw for x (standardised, missing left out, bias) */
static void ll_row(const struct train_fit_out *o, const float *x, struct feature_node *row)
{
    int k = 0;
    for (int j = 0; j < NF; j++)
        if (!isnan(x[j])) {
            row[k].index = j + 1;
            row[k].value = ((double)x[j] - o->mean[j]) / o->scale[j];
            k++;
        }
    row[k++] = (struct feature_node){ NF + 1, 1 };
    row[k] = (struct feature_node){ -1, 0 };
}

/* Write the standardised training matrix, fit scikit-learn on it and
 * compare the coefficients. */
static void check_sklearn(const struct train_set *tr, const struct train_fit_out *o, int regression,
                          double C, double tol)
{
    char dir[256], path[300];
    tfx_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.csv", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (long i = 0; i < tr->n; i++) {
        fprintf(f, "%.17g", regression ? (double)tr->y[i] - o->y_offset : (double)tr->y[i]);
        for (int j = 0; j < NF; j++) {
            float v = tr->x[i * NF + j];
            fprintf(f, ",%.17g", isnan(v) ? 0.0 : ((double)v - o->mean[j]) / o->scale[j]);
        }
        fputc('\n', f);
    }
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/sklearn_check.py %s %s %.17g %.17g",
             PROMOD_SRC, regression ? "ridge" : "logistic", path, C, tol);
    FILE *pp = popen(cmd, "r");
    cr_assert_not_null(pp);
    char line[8192] = "";
    size_t got = fread(line, 1, sizeof line - 1, pp);
    line[got] = 0;
    int st = pclose(pp);
    cr_assert_eq(st, 0, "scikit-learn failed (python3-sklearn installed?): %s", line);
    json_error_t je;
    json_t *r = json_loads(line, 0, &je);
    cr_assert_not_null(r, "%s: %s", je.text, line);
    json_t *coef = json_object_get(r, "coef");
    cr_assert_eq(json_array_size(coef), NF);
    for (int j = 0; j < NF; j++) {
        double sk = json_number_value(json_array_get(coef, j));
        cr_log_info("%s coefficient %d: liblinear %.8f, scikit-learn %.8f",
                    regression ? "ridge" : "logistic", j, o->w_std[j], sk);
        cr_assert(fabs(o->w_std[j] - sk) <= 1e-4 * fmax(1, fabs(sk)), "coefficient %d: %.8f vs %.8f",
                  j, o->w_std[j], sk);
    }
    double ski = json_number_value(json_object_get(r, "intercept"));
    cr_assert(fabs(o->w_std[NF] - ski) <= 1e-4 * fmax(1, fabs(ski)), "intercept %.8f vs %.8f",
              o->w_std[NF], ski);
    json_decref(r);
    tfx_rmrf(dir);
}

Test(train, liblinear_agrees_with_itself_and_with_scikit_learn)
{
    for (int regression = 0; regression < 2; regression++) {
        struct planted d;
        plant(&d, 4000, regression ? VALUE_TRUTH : LINEAR_TRUTH, 5);
        struct train_set tr, va;
        long at;
        split(&d, &tr, &va, &at);
        struct train_params p;
        train_params_default(&p, TRAIN_LINEAR, regression);
        p.keep_library_model = 1;
        p.C = 0.5;
        p.tol = 1e-8;
        struct train_fit_out o;
        char err[256];
        cr_assert_eq(train_fit(&tr, &p, &o, err, sizeof err), 0, "%s", err);
        struct model *lm = o.lib;
        int k1 = !regression && lm->nr_class == 2 && lm->label[1] == 1; /* no labels for SVR */
        for (long i = 0; i < va.n; i++) {
            struct feature_node row[NF + 2];
            ll_row(&o, va.x + i * NF, row);
            double lib;
            if (regression) {
                lib = predict(lm, row) + o.y_offset;
            } else {
                double pr[2];
                predict_probability(lm, row, pr);
                lib = pr[k1];
            }
            double mine = predict_eval(o.model, va.x + i * NF);
            cr_assert(fabs(mine - lib) <= 1e-6 * (regression ? fmax(1, fabs(lib)) : 1),
                      "row %ld: ours %.12g, liblinear %.12g", i, mine, lib);
        }
        check_sklearn(&tr, &o, regression, p.C, p.tol);
        train_fit_release(&o);
        planted_free(&d);
    }
}

/* ---------------------------------------------------------------------- */

Test(train, metrics_match_brute_force)
{
    rng_s = 3;
    long n = 400;
    float *y = malloc(sizeof *y * (size_t)n);
    double *p = malloc(sizeof *p * (size_t)n);
    for (long i = 0; i < n; i++) {
        p[i] = floor(urand() * 20) / 20; /* many ties */
        y[i] = urand() < p[i] ? 1.0f : 0.0f;
    }
    double num = 0, pairs = 0;
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++)
            if (y[i] == 1 && y[j] == 0) {
                pairs++;
                num += p[i] > p[j] ? 1 : p[i] == p[j] ? 0.5 : 0;
            }
    struct train_metrics m;
    cr_assert_eq(train_metrics_compute(y, p, n, 0, &m), 0);
    cr_assert_float_eq(m.auc, num / pairs, 1e-12);
    double ll = 0;
    long inbin = 0;
    for (long i = 0; i < n; i++) {
        double q = fmin(fmax(p[i], 1e-15), 1 - 1e-15);
        ll -= y[i] ? log(q) : log(1 - q);
        inbin += p[i] >= 0.3 && p[i] < 0.4;
    }
    cr_assert_float_eq(m.logloss, ll / n, 1e-12);
    cr_assert_eq(m.calib[3].n, inbin);
    json_t *j = train_metrics_json(&m);
    cr_assert_eq(json_array_size(json_object_get(j, "calibration")), TRAIN_CALIB_BINS);
    json_decref(j);
    /* one class only: no AUC */
    for (long i = 0; i < n; i++)
        y[i] = 0;
    cr_assert(isnan(train_auc(y, p, n)));
    free(y);
    free(p);
}

Test(train, bad_input_is_refused_with_a_reason)
{
    float x[6] = { 1, 2, 3, 4, 5, 6 }, y[3] = { 0, 0, 0 };
    struct train_set s = { .n = 3, .nfeat = 2, .x = x, .y = y };
    struct train_params p;
    train_params_default(&p, TRAIN_GBT, 0);
    struct train_fit_out o;
    char err[256];
    cr_assert_eq(train_fit(&s, &p, &o, err, sizeof err), ERR_INVAL);
    cr_assert(strstr(err, "only negatives"), "%s", err);
    y[1] = 2;
    cr_assert_eq(train_fit(&s, &p, &o, err, sizeof err), ERR_INVAL);
    cr_assert(strstr(err, "not 0 or 1"), "%s", err);
    y[1] = 1;
    x[3] = INFINITY;
    cr_assert_eq(train_fit(&s, &p, &o, err, sizeof err), ERR_INVAL);
    x[3] = 4;
    p.depth = 40;
    cr_assert_eq(train_fit(&s, &p, &o, err, sizeof err), ERR_INVAL);
    train_params_default(&p, TRAIN_LINEAR, 0);
    p.C = 0;
    cr_assert_eq(train_fit(&s, &p, &o, err, sizeof err), ERR_INVAL);
    /* flattening refuses what it cannot evaluate */
    struct predict_model *m;
    const char *bad = "{\"learner\": {\"gradient_booster\": {\"name\": \"gblinear\"}}}";
    cr_assert_eq(train_xgb_flatten(bad, strlen(bad), 2, &m, err, sizeof err), ERR_PARSE);
    cr_assert_eq(train_xgb_flatten("{", 1, 2, &m, err, sizeof err), ERR_PARSE);
}
