/*
 * stats.c — experiment tests on sufficient statistics: summaries, CUPED,
 * Welch and z tests, sequential intervals, the Bayesian effect posterior,
 * Holm, SRM and power.  Distributions live in stats_dist.c.
 *
 * The methods are gbstats' (GrowthBook packages/stats), re-derived and
 * written for C; where gbstats has a convention (relative lift over the
 * unadjusted control mean, theta from the pooled sample, p(1 - p) without
 * n - 1 for rates, neutral output for degenerate data) it is kept so a
 * GrowthBook dashboard and promod agree.  The two-proportion z-test is
 * the textbook pooled one, which gbstats does not have.
 */
#include "insight/stats.h"

#include <math.h>
#include <stdint.h>

#include "base/err.h"

#define R_ZERO_VAR "zero variance in an arm"
#define R_FEW "fewer than two units in an arm"
#define R_EMPTY "an arm has no units"
#define R_BASE0 "control mean is zero"

static int fin(double x)
{
    return isfinite(x);
}

static int alpha_ok(double alpha)
{
    return alpha > 0 && alpha < 1;
}

static int summary_ok(const struct stats_summary *s)
{
    return s && fin(s->n) && s->n >= 0 && fin(s->mean) && fin(s->var) && s->var >= 0 &&
           fin(s->mean_raw) && fin(s->var_raw) && s->var_raw >= 0 && fin(s->theta) &&
           fin(s->var_x) && s->var_x >= 0 && fin(s->cov_xy);
}

/* ---- summaries ---- */

int stats_summary_sums(double n, double sum, double sum_sq, struct stats_summary *out)
{
    if (!out || !fin(n) || n < 0 || !fin(sum) || !fin(sum_sq) || sum_sq < 0)
        return ERR_INVAL;
    double mean = n > 0 ? sum / n : 0, var = 0;
    if (n >= 2) {
        var = (sum_sq - sum * sum / n) / (n - 1);
        if (!(var > 0))
            var = 0;
    }
    *out = (struct stats_summary){
        .n = n, .mean = mean, .var = var, .mean_raw = mean, .var_raw = var
    };
    return 0;
}

int stats_summary_prop(double n, double successes, struct stats_summary *out)
{
    if (!out || !fin(n) || n < 0 || !fin(successes) || successes < 0 || successes > n)
        return ERR_INVAL;
    double p = n > 0 ? successes / n : 0, var = p * (1 - p);
    *out = (struct stats_summary){ .n = n, .mean = p, .var = var, .mean_raw = p, .var_raw = var };
    return 0;
}

/* ---- CUPED ---- */

static int cuped_ok(const struct stats_cuped_sums *s)
{
    return s && fin(s->n) && s->n >= 0 && fin(s->sum_y) && fin(s->sum_y2) && s->sum_y2 >= 0 &&
           fin(s->sum_x) && fin(s->sum_x2) && s->sum_x2 >= 0 && fin(s->sum_xy);
}

/* sample variance / covariance from sums, n - 1 denominator, 0 if n < 2 */
static double co(double n, double sab, double sa, double sb)
{
    return n >= 2 ? (sab - sa * sb / n) / (n - 1) : 0;
}

int stats_cuped_theta(const struct stats_cuped_sums *a, const struct stats_cuped_sums *b,
                      double *theta)
{
    if (!theta || !cuped_ok(a) || !cuped_ok(b))
        return ERR_INVAL;
    double n = a->n + b->n, sx = a->sum_x + b->sum_x, sy = a->sum_y + b->sum_y;
    double vx = co(n, a->sum_x2 + b->sum_x2, sx, sx);
    double vy = co(n, a->sum_y2 + b->sum_y2, sy, sy);
    double cxy = co(n, a->sum_xy + b->sum_xy, sx, sy);
    *theta = (vx > 0 && vy > 0) ? cxy / vx : 0;
    return 0;
}

int stats_cuped_summary(const struct stats_cuped_sums *s, double theta, struct stats_summary *out)
{
    if (!out || !cuped_ok(s) || !fin(theta))
        return ERR_INVAL;
    double n = s->n, ybar = n > 0 ? s->sum_y / n : 0, xbar = n > 0 ? s->sum_x / n : 0;
    double vy = co(n, s->sum_y2, s->sum_y, s->sum_y), vx = co(n, s->sum_x2, s->sum_x, s->sum_x);
    double cxy = co(n, s->sum_xy, s->sum_x, s->sum_y);
    if (!(vy > 0))
        vy = 0;
    if (!(vx > 0))
        vx = 0;
    double v = vy + theta * theta * vx - 2 * theta * cxy;
    if (!(v > 0) || n < 2)
        v = 0;
    *out = (struct stats_summary){ .n = n,
                                   .mean = ybar - theta * xbar,
                                   .var = v,
                                   .mean_raw = ybar,
                                   .var_raw = vy,
                                   .theta = theta,
                                   .var_x = vx,
                                   .cov_xy = cxy };
    return 0;
}

int stats_cuped_pair(const struct stats_cuped_sums *a, const struct stats_cuped_sums *b,
                     struct stats_summary *sa, struct stats_summary *sb)
{
    double theta;
    int rc = stats_cuped_theta(a, b, &theta);
    if (rc == 0)
        rc = stats_cuped_summary(a, theta, sa);
    if (rc == 0)
        rc = stats_cuped_summary(b, theta, sb);
    return rc;
}

/* ---- effect moments (gbstats EffectMoments) ---- */

/* d and se of the effect of b over a; NULL or the reason it has none. */
static const char *moments(const struct stats_summary *a, const struct stats_summary *b,
                           enum stats_diff diff, double *d, double *se)
{
    if (a->n < 2 || b->n < 2)
        return R_FEW;
    if (!(a->var > 0) || !(b->var > 0))
        return R_ZERO_VAR;
    double v;
    if (diff == STATS_DIFF_ABSOLUTE) {
        *d = b->mean - a->mean;
        v = b->var / b->n + a->var / a->n;
    } else {
        double ma = a->mean_raw, mb = b->mean_raw, th = a->theta;
        if (a->mean == 0 || ma == 0)
            return R_BASE0;
        *d = (b->mean - a->mean) / fabs(ma);
        /* delta method on (adj_b - adj_a) / |ybar_a| with theta fixed:
         * the variant's part is var_b / (n_b ma^2); the control's gradient
         * in (ybar_a, xbar_a) is (-mb / ma^2, theta / ma) (gbstats uses
         * the raw variant mean mb there), giving
         * (var_y mb^2/ma^2 - 2 theta cov mb/ma + theta^2 var_x) / (n_a ma^2).
         * Without CUPED (theta 0) this is the usual
         * var_b/(n_b ma^2) + var_a mb^2/(n_a ma^4). */
        double ctrl = a->var_raw * mb * mb / (ma * ma) - 2 * th * a->cov_xy * mb / ma +
                      th * th * a->var_x;
        v = b->var / (b->n * ma * ma) + ctrl / (a->n * ma * ma);
    }
    if (!(v > 0) || !fin(v) || !fin(*d))
        return R_ZERO_VAR;
    *se = sqrt(v);
    return NULL;
}

static void neutral(struct stats_result *out, const char *why)
{
    *out = (struct stats_result){ .p_value = 1, .undefined = why };
}

static int pair_ok(const struct stats_summary *a, const struct stats_summary *b,
                   enum stats_diff diff, double alpha, const void *out)
{
    return out && summary_ok(a) && summary_ok(b) && alpha_ok(alpha) &&
           (diff == STATS_DIFF_ABSOLUTE || diff == STATS_DIFF_RELATIVE) && a->theta == b->theta;
}

int stats_welch(const struct stats_summary *a, const struct stats_summary *b,
                enum stats_diff diff, double alpha, struct stats_result *out)
{
    if (!pair_ok(a, b, diff, alpha, out))
        return ERR_INVAL;
    double d = 0, se = 0;
    const char *why = moments(a, b, diff, &d, &se);
    if (why) {
        neutral(out, why);
        return 0;
    }
    double qa = a->var / a->n, qb = b->var / b->n;
    double dof = (qa + qb) * (qa + qb) / (qa * qa / (a->n - 1) + qb * qb / (b->n - 1));
    double t = d / se, half = -stats_t_ppf(alpha / 2, dof) * se;
    double p = 2 * stats_t_sf(fabs(t), dof);
    *out = (struct stats_result){ .estimate = d,
                                  .se = se,
                                  .stat = t,
                                  .dof = dof,
                                  .p_value = p > 1 ? 1 : p,
                                  .ci_low = d - half,
                                  .ci_high = d + half };
    return 0;
}

int stats_ztest_prop(double n_a, double x_a, double n_b, double x_b, enum stats_diff diff,
                     double alpha, struct stats_result *out)
{
    if (!out || !alpha_ok(alpha) || !fin(n_a) || !fin(n_b) || !fin(x_a) || !fin(x_b) ||
        x_a < 0 || x_b < 0 || x_a > n_a || x_b > n_b ||
        (diff != STATS_DIFF_ABSOLUTE && diff != STATS_DIFF_RELATIVE))
        return ERR_INVAL;
    if (n_a <= 0 || n_b <= 0) {
        neutral(out, R_EMPTY);
        return 0;
    }
    double pa = x_a / n_a, pb = x_b / n_b, pool = (x_a + x_b) / (n_a + n_b);
    if (pool <= 0 || pool >= 1) {
        neutral(out, R_ZERO_VAR);
        return 0;
    }
    double va = pa * (1 - pa), vb = pb * (1 - pb), d, se;
    if (diff == STATS_DIFF_ABSOLUTE) {
        d = pb - pa;
        se = sqrt(va / n_a + vb / n_b);
    } else {
        if (pa == 0) {
            neutral(out, R_BASE0);
            return 0;
        }
        d = (pb - pa) / pa;
        se = sqrt(vb / (n_b * pa * pa) + va * pb * pb / (n_a * pa * pa * pa * pa));
    }
    double z = (pb - pa) / sqrt(pool * (1 - pool) * (1 / n_a + 1 / n_b));
    double half = -stats_norm_ppf(alpha / 2) * se;
    double p = 2 * stats_norm_sf(fabs(z));
    *out = (struct stats_result){ .estimate = d,
                                  .se = se,
                                  .stat = z,
                                  .dof = INFINITY,
                                  .p_value = p > 1 ? 1 : p,
                                  .ci_low = d - half,
                                  .ci_high = d + half };
    return 0;
}

/* ---- sequential (gbstats SequentialTwoSidedTTest) ---- */

int stats_sequential(const struct stats_summary *a, const struct stats_summary *b,
                     enum stats_diff diff, double alpha, double tuning, struct stats_result *out)
{
    if (!pair_ok(a, b, diff, alpha, out) || !fin(tuning) || !(tuning > 0))
        return ERR_INVAL;
    double d = 0, se = 0;
    const char *why = moments(a, b, diff, &d, &se);
    if (why) {
        neutral(out, why);
        return 0;
    }
    /* rho minimising the width at N = tuning (Waudby-Smith et al. eq. 161) */
    double la = -2 * log(alpha);
    double rho2 = (la + log(la + 1)) / tuning;
    double n = a->n + b->n, nr2 = n * rho2;
    double s2 = se * se * n; /* per-unit variance of the effect */
    /* eq. 9: half-width of the asymptotic confidence sequence */
    double half = sqrt(s2) * sqrt(2 * (nr2 + 1) * log(sqrt(nr2 + 1) / alpha) / (n * nr2));
    /* eq. 155: the mixture e-value of S = N d / sigma; p = min(1, 1/E) */
    double st2 = d * d * n / (se * se);
    double lne = rho2 * st2 / (2 * (nr2 + 1)) - 0.5 * log1p(nr2);
    *out = (struct stats_result){ .estimate = d,
                                  .se = se,
                                  .stat = d / se,
                                  .dof = INFINITY,
                                  .p_value = lne <= 0 ? 1 : exp(-lne),
                                  .ci_low = d - half,
                                  .ci_high = d + half };
    return 0;
}

/* ---- Bayesian (gbstats EffectBayesianABTest) ---- */

int stats_bayes(const struct stats_summary *a, const struct stats_summary *b, enum stats_diff diff,
                double alpha, const struct stats_prior *prior, struct stats_bayes *out)
{
    if (!pair_ok(a, b, diff, alpha, out) ||
        (prior && (!fin(prior->mean) || !fin(prior->variance) || !(prior->variance > 0))))
        return ERR_INVAL;
    double d = 0, se = 0;
    const char *why = moments(a, b, diff, &d, &se);
    if (why) {
        *out = (struct stats_bayes){ .chance_to_win = 0.5, .undefined = why };
        return 0;
    }
    double mean = d, sd = se;
    if (prior) {
        double prec = 1 / (se * se) + 1 / prior->variance;
        mean = (d / (se * se) + prior->mean / prior->variance) / prec;
        sd = sqrt(1 / prec);
    }
    double z = mean / sd, half = -stats_norm_ppf(alpha / 2) * sd, pdf = stats_norm_pdf(z);
    /* E[max(D, 0)] = sd phi(z) + mean Phi(z); E[max(-D, 0)] = sd phi(z) - mean Phi(-z) */
    double rc = sd * pdf + mean * stats_norm_cdf(z), rv = sd * pdf - mean * stats_norm_sf(z);
    *out = (struct stats_bayes){ .mean = mean,
                                 .sd = sd,
                                 .chance_to_win = stats_norm_cdf(z),
                                 .ci_low = mean - half,
                                 .ci_high = mean + half,
                                 .risk_control = rc > 0 ? rc : 0,
                                 .risk_variant = rv > 0 ? rv : 0 };
    return 0;
}

/* ---- Holm ---- */

int stats_holm(const double *p, size_t n, double *adjusted)
{
    if (n == 0)
        return 0;
    uintptr_t pb = (uintptr_t)p, ab = (uintptr_t)adjusted, len = n * sizeof *p;
    if (!p || !adjusted || (ab < pb + len && pb < ab + len))
        return ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if (!(p[i] >= 0 && p[i] <= 1))
            return ERR_INVAL;
    /* pass 1: (n - rank) p with rank = place in ascending order, ties by index */
    for (size_t k = 0; k < n; k++) {
        size_t rank = 0;
        for (size_t j = 0; j < n; j++)
            rank += p[j] < p[k] || (p[j] == p[k] && j < k);
        adjusted[k] = (double)(n - rank) * p[k];
    }
    /* pass 2: running maximum over everything not larger.  Any order works:
     * an entry already replaced by its own running maximum only holds values
     * of p's that are not larger either. */
    for (size_t k = 0; k < n; k++) {
        double m = adjusted[k];
        for (size_t j = 0; j < n; j++)
            if (p[j] <= p[k] && adjusted[j] > m)
                m = adjusted[j];
        adjusted[k] = m > 1 ? 1 : m;
    }
    return 0;
}

/* ---- SRM (GrowthBook back-end checkSrm) ---- */

int stats_srm(const double *counts, size_t n_counts, const double *weights, size_t n_weights,
              struct stats_srm *out)
{
    if (!out || (n_counts && !counts) || (n_weights && !weights))
        return ERR_INVAL;
    for (size_t i = 0; i < n_counts; i++)
        if (!fin(counts[i]) || counts[i] < 0)
            return ERR_INVAL;
    for (size_t i = 0; i < n_weights; i++)
        if (!fin(weights[i]) || weights[i] < 0)
            return ERR_INVAL;
    double tn = 0, tw = 0;
    size_t arms = 0;
    for (size_t i = 0; i < n_weights && i < n_counts; i++)
        if (weights[i] > 0) {
            tn += counts[i];
            tw += weights[i];
            arms++;
        }
    *out = (struct stats_srm){ .p_value = 1, .arms = arms };
    if (arms < 2 || tn == 0)
        return 0;
    double x = 0;
    for (size_t i = 0; i < n_weights && i < n_counts; i++)
        if (weights[i] > 0) {
            double e = weights[i] / tw * tn, o = counts[i] - e;
            x += o * o / e;
        }
    out->chi2 = x;
    out->dof = (double)(arms - 1);
    out->p_value = stats_chi2_sf(x, out->dof);
    out->mismatch = out->p_value < STATS_SRM_ALPHA;
    return 0;
}

/* ---- power (GrowthBook shared/power: powerEstFrequentist) ---- */

static int power_ok(const struct stats_power *q)
{
    return q && fin(q->mean) && q->mean != 0 && fin(q->var) && q->var > 0 && fin(q->mde) &&
           q->mde != 0 && alpha_ok(q->alpha) && fin(q->tuning) && q->tuning >= 0;
}

double stats_power_at(const struct stats_power *q, double n)
{
    if (!power_ok(q) || !fin(n) || !(n > 0))
        return NAN;
    double zs = -stats_norm_ppf(q->alpha / 2);
    double se = sqrt(q->var * (1 + (1 + q->mde) * (1 + q->mde)) / (n * q->mean * q->mean));
    if (q->tuning > 0) {
        /* widen se so that z* se is the sequential half-width at N = 2n */
        double la = -2 * log(q->alpha), rho2 = (la + log(la + 1)) / q->tuning;
        double nn = 2 * n, nr2 = nn * rho2;
        double disc = 2 * (nr2 + 1) * log(sqrt(nr2 + 1) / q->alpha) / (nn * nr2);
        se *= sqrt(nn * disc) / zs;
    }
    double k = q->mde / se;
    return stats_norm_sf(zs - k) + stats_norm_cdf(-zs - k);
}

int stats_power_sample_size(const struct stats_power *q, double *n_per_variant)
{
    if (!n_per_variant || !power_ok(q) || !(q->power > q->alpha && q->power < 1))
        return ERR_INVAL;
    /* power grows with n from alpha towards 1: double, then bisect */
    double lo = 0, hi = 1;
    while (stats_power_at(q, hi) < q->power) {
        lo = hi;
        hi *= 2;
        if (hi > 1e15)
            return ERR_TOOBIG;
    }
    while (hi - lo > 1) {
        double mid = floor((lo + hi) / 2);
        if (stats_power_at(q, mid) >= q->power)
            hi = mid;
        else
            lo = mid;
    }
    *n_per_variant = hi;
    return 0;
}

int stats_days_needed(double needed, double have, double per_day, double *days)
{
    if (!days || !fin(needed) || !fin(have) || !fin(per_day) || needed < 0 || have < 0 ||
        per_day < 0)
        return ERR_INVAL;
    double left = needed - have;
    *days = left <= 0 ? 0 : per_day == 0 ? INFINITY : ceil(left / per_day);
    return 0;
}
