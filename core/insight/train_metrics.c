/* train_metrics.c — validation metrics of a fitted model. */
#include "insight/train.h"
#include "base/err.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct pr {
    double p;
    float y;
};

static int pr_cmp(const void *a, const void *b)
{
    double x = ((const struct pr *)a)->p, y = ((const struct pr *)b)->p;
    return x < y ? -1 : x > y;
}

/* Mann-Whitney: AUC = (sum of positives' ranks - P(P+1)/2) / (P N), with
 * tied predictions sharing their average rank. */
static double auc_sorted(struct pr *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, pr_cmp);
    double rank_sum = 0;
    long pos = 0;
    for (long i = 0; i < n;) {
        long j = i;
        while (j < n && v[j].p == v[i].p)
            j++;
        double avg = (double)(i + 1 + j) / 2.0; /* ranks i+1 .. j */
        for (long k = i; k < j; k++)
            if (v[k].y > 0.5) {
                rank_sum += avg;
                pos++;
            }
        i = j;
    }
    long neg = n - pos;
    if (!pos || !neg)
        return NAN;
    return (rank_sum - (double)pos * (double)(pos + 1) / 2.0) / ((double)pos * (double)neg);
}

double train_auc(const float *y, const double *p, long n)
{
    if (n < 1)
        return NAN;
    struct pr *v = malloc(sizeof *v * (size_t)n);
    if (!v)
        return NAN;
    for (long i = 0; i < n; i++)
        v[i] = (struct pr){ p[i], y[i] };
    double a = auc_sorted(v, n);
    free(v);
    return a;
}

int train_metrics_compute(const float *y, const double *p, long n, int regression,
                          struct train_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->regression = regression;
    m->n = n;
    if (n < 1)
        return ERR_INVAL;
    if (regression) {
        double se = 0, ae = 0, sy = 0, sp = 0;
        for (long i = 0; i < n; i++) {
            double d = p[i] - y[i];
            se += d * d;
            ae += fabs(d);
            sy += y[i];
            sp += p[i];
        }
        m->mean_y = sy / (double)n;
        m->mean_pred = sp / (double)n;
        double ss = 0;
        for (long i = 0; i < n; i++)
            ss += (y[i] - m->mean_y) * (y[i] - m->mean_y);
        m->rmse = sqrt(se / (double)n);
        m->mae = ae / (double)n;
        m->r2 = ss > 0 ? 1 - se / ss : NAN;
        return 0;
    }
    double ll = 0, br = 0;
    for (long i = 0; i < n; i++) {
        double q = p[i] < 1e-15 ? 1e-15 : p[i] > 1 - 1e-15 ? 1 - 1e-15 : p[i];
        int pos = y[i] > 0.5;
        m->positives += pos;
        ll -= pos ? log(q) : log(1 - q);
        br += (p[i] - pos) * (p[i] - pos);
        int b = (int)(p[i] * TRAIN_CALIB_BINS);
        b = b < 0 ? 0 : b >= TRAIN_CALIB_BINS ? TRAIN_CALIB_BINS - 1 : b;
        m->calib[b].n++;
        m->calib[b].mean_pred += p[i];
        m->calib[b].rate += pos;
    }
    for (int b = 0; b < TRAIN_CALIB_BINS; b++)
        if (m->calib[b].n) {
            m->calib[b].mean_pred /= (double)m->calib[b].n;
            m->calib[b].rate /= (double)m->calib[b].n;
        }
    m->logloss = ll / (double)n;
    m->brier = br / (double)n;
    m->base_rate = (double)m->positives / (double)n;
    m->auc = train_auc(y, p, n);
    if (isnan(m->auc) && m->positives && m->positives < n)
        return ERR_NOMEM; /* both classes present: only the sort's copy can have failed */
    return 0;
}

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *train_metrics_json(const struct train_metrics *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "n", json_integer(m->n));
    if (m->regression) {
        json_object_set_new(o, "rmse", num(m->rmse));
        json_object_set_new(o, "mae", num(m->mae));
        json_object_set_new(o, "r2", num(m->r2));
        json_object_set_new(o, "mean", num(m->mean_y));
        json_object_set_new(o, "mean_predicted", num(m->mean_pred));
        return o;
    }
    json_object_set_new(o, "positives", json_integer(m->positives));
    json_object_set_new(o, "base_rate", num(m->base_rate));
    json_object_set_new(o, "auc", num(m->auc));
    json_object_set_new(o, "logloss", num(m->logloss));
    json_object_set_new(o, "brier", num(m->brier));
    json_t *cal = json_array();
    for (int b = 0; b < TRAIN_CALIB_BINS; b++) {
        json_t *r = json_object();
        json_object_set_new(r, "from", json_real((double)b / TRAIN_CALIB_BINS));
        json_object_set_new(r, "to", json_real((double)(b + 1) / TRAIN_CALIB_BINS));
        json_object_set_new(r, "n", json_integer(m->calib[b].n));
        json_object_set_new(r, "mean_predicted", m->calib[b].n ? num(m->calib[b].mean_pred) : json_null());
        json_object_set_new(r, "observed", m->calib[b].n ? num(m->calib[b].rate) : json_null());
        json_array_append_new(cal, r);
    }
    json_object_set_new(o, "calibration", cal);
    return o;
}

int train_metrics_not_worse(const struct train_metrics *cand, const struct train_metrics *live,
                            double slack)
{
    if (cand->regression)
        return isfinite(cand->rmse) && (!isfinite(live->rmse) || cand->rmse <= live->rmse + slack);
    return isfinite(cand->auc) && (!isfinite(live->auc) || cand->auc >= live->auc - slack);
}
