/*
 * stats.h — the statistics behind experiment results: distributions,
 * per-variant summaries, Welch t-tests (absolute and relative lift), the
 * two-proportion z-test, GrowthBook's Bayesian chance to beat control and
 * risk, Holm–Bonferroni, always-valid (sequential) intervals, CUPED,
 * the sample-ratio-mismatch chi-square test, and a power calculator.
 *
 * Everything works from sufficient statistics (n, sum, sum of squares,
 * and for CUPED the sums of the pre-exposure covariate and of the
 * products), so callers keep running totals, never raw rows.  The methods
 * follow GrowthBook's gbstats (packages/stats) so numbers can be compared
 * with a GrowthBook dashboard: unpooled Welch tests, the delta method for
 * relative lift, Waudby-Smith et al.'s asymptotic confidence sequences
 * with gbstats' `sequential_tuning_parameter`, a normal posterior on the
 * lift for the Bayesian engine, GrowthBook's TypeScript SRM rule.  The
 * pooled two-proportion z-test is the classic one (gbstats has none).
 * docs/experiments.md ("Statistics") gives each formula with a worked
 * example.
 *
 * Pure functions: no globals (lgamma_r, never lgamma and its shared
 * signgam), no allocation, no locale; any thread.  Inputs are validated:
 * a NaN, a negative count, successes above n, alpha outside (0, 1) return
 * ERR_INVAL and leave *out unspecified.
 * Legal data on which a test cannot be made (an arm with fewer than two
 * units or zero variance, a zero control mean for a relative lift) is not
 * an error: the result's `undefined` names the reason and its numbers are
 * GrowthBook's neutral output (estimate 0, se 0, p_value 1, CI [0, 0],
 * chance to win 0.5).
 */
#ifndef PROMOD_STATS_H
#define PROMOD_STATS_H
#include <stddef.h>

/* ------------------------------------------------------------------ */
/* Distributions.  Upper tails are computed directly (not as 1 - cdf),  */
/* so p-values keep ~1e-13 relative accuracy down to 1e-300.  NaN in,   */
/* or a parameter out of range (dof <= 0, p outside [0, 1]): NaN out.   */
/* ------------------------------------------------------------------ */

/** Standard normal density, distribution function, upper tail 1 - Phi(x)
 *  and quantile (stats_norm_ppf(0) = -inf, (1) = +inf). */
double stats_norm_pdf(double x);
double stats_norm_cdf(double x);
double stats_norm_sf(double x);
double stats_norm_ppf(double p);

/** Student t with `dof` > 0 degrees of freedom, non-integer allowed;
 *  dof = INFINITY is the standard normal.  sf is the upper tail. */
double stats_t_pdf(double x, double dof);
double stats_t_cdf(double x, double dof);
double stats_t_sf(double x, double dof);
double stats_t_ppf(double p, double dof);

/** Chi-square with `dof` > 0 (non-integer allowed): distribution function
 *  and upper tail P(X > x).  x <= 0 gives cdf 0, sf 1. */
double stats_chi2_cdf(double x, double dof);
double stats_chi2_sf(double x, double dof);

/** Regularized incomplete beta I_x(a, b) and its complement 1 - I_x(a, b)
 *  (a, b > 0, 0 <= x <= 1), each accurate when it is the small one. */
double stats_ibeta(double a, double b, double x);
double stats_ibetac(double a, double b, double x);

/** Regularized incomplete gamma P(a, x) and Q(a, x) = 1 - P(a, x)
 *  (a > 0, x >= 0). */
double stats_gamma_p(double a, double x);
double stats_gamma_q(double a, double x);

/* ------------------------------------------------------------------ */
/* Per-variant summaries                                               */
/* ------------------------------------------------------------------ */

/** One arm as the tests see it.  Without CUPED, mean == mean_raw,
 *  var == var_raw and theta == var_x == cov_xy == 0.  With CUPED, `mean`
 *  and `var` are those of the adjusted value y - theta * x and the raw
 *  parts are kept because relative lift divides by the unadjusted control
 *  mean (GrowthBook's choice) and its delta method needs them.  Fill it
 *  with stats_summary_sums, stats_summary_prop or stats_cuped_summary. */
struct stats_summary {
    double n;        /**< units (customers) in the arm */
    double mean;     /**< mean compared between arms (CUPED: adjusted) */
    double var;      /**< per-unit variance of that value (CUPED: adjusted) */
    double mean_raw; /**< unadjusted mean of the metric */
    double var_raw;  /**< unadjusted per-unit variance of the metric */
    double theta;    /**< CUPED coefficient applied, 0 for none */
    double var_x;    /**< CUPED: variance of the pre-exposure covariate */
    double cov_xy;   /**< CUPED: covariance of covariate and metric */
};

/** Summary of a metric from n units, their sum and sum of squares:
 *  mean = sum / n, var = (sum_sq - sum^2 / n) / (n - 1) (0 when n < 2;
 *  a negative value from rounding is clamped to 0).  n >= 0, finite
 *  sums, sum_sq >= 0; else ERR_INVAL.  Returns 0. */
int stats_summary_sums(double n, double sum, double sum_sq, struct stats_summary *out);

/** Summary of a rate: `successes` of n units (0 <= successes <= n):
 *  mean = p = successes / n, var = p (1 - p) (GrowthBook's proportion
 *  statistic; no n - 1).  n = 0 gives mean 0.  Returns 0 or ERR_INVAL. */
int stats_summary_prop(double n, double successes, struct stats_summary *out);

/** CUPED sufficient statistics of one arm: y is the metric after
 *  exposure, x the same customer's value before exposure (0 when the
 *  customer had none). */
struct stats_cuped_sums {
    double n, sum_y, sum_y2, sum_x, sum_x2, sum_xy;
};

/** theta = cov(x, y) / var(x) over the two arms pooled (gbstats:
 *  compute_theta — the joint sample, not within-arm), with n - 1
 *  denominators.  0 when either pooled variance is 0 (then CUPED is a
 *  no-op, as in gbstats).  Returns 0 or ERR_INVAL (negative n, NaN,
 *  negative sums of squares). */
int stats_cuped_theta(const struct stats_cuped_sums *a, const struct stats_cuped_sums *b,
                      double *theta);

/** Summary of one arm adjusted with `theta`: mean = ybar - theta xbar,
 *  var = var_y + theta^2 var_x - 2 theta cov_xy (clamped at 0), raw parts
 *  filled in.  Returns 0 or ERR_INVAL. */
int stats_cuped_summary(const struct stats_cuped_sums *s, double theta, struct stats_summary *out);

/** Convenience: theta from both arms, then both adjusted summaries (the
 *  pair a control and a variant are compared with).  Returns 0 or
 *  ERR_INVAL. */
int stats_cuped_pair(const struct stats_cuped_sums *a, const struct stats_cuped_sums *b,
                     struct stats_summary *sa, struct stats_summary *sb);

/* ------------------------------------------------------------------ */
/* Frequentist tests.  a = control, b = variant.  alpha is two-sided:   */
/* 0.05 gives 95 % intervals.                                          */
/* ------------------------------------------------------------------ */

enum stats_diff {
    STATS_DIFF_ABSOLUTE = 0, /**< mean_b - mean_a */
    STATS_DIFF_RELATIVE = 1  /**< (mean_b - mean_a) / |mean_raw_a| (lift) */
};

struct stats_result {
    double estimate;       /**< difference or relative lift */
    double se;             /**< its standard error (delta method if relative) */
    double stat;           /**< test statistic (t, or z) */
    double dof;            /**< Welch–Satterthwaite dof; INFINITY if normal */
    double p_value;        /**< two-sided */
    double ci_low, ci_high; /**< 1 - alpha interval for `estimate` */
    const char *undefined; /**< NULL, or why no test could be made (static text) */
};

/** Welch's unequal-variance t-test (GrowthBook's TwoSidedTTest):
 *  absolute: d = mb - ma, se^2 = va/na + vb/nb; relative: d = (mb - ma) /
 *  |ma_raw| with the delta-method variance (CUPED-aware, see the docs);
 *  dof by Welch–Satterthwaite from va, vb; p = 2 T_dof(-|d/se|);
 *  CI = d -+ T_dof^-1(1 - alpha/2) se.  Undefined when an arm has zero
 *  variance (this includes n < 2 and rates of 0 or 1), or for relative
 *  lift when the control mean is 0.  Returns 0 or ERR_INVAL. */
int stats_welch(const struct stats_summary *a, const struct stats_summary *b,
                enum stats_diff diff, double alpha, struct stats_result *out);

/** The classic two-proportion z-test of p_a = p_b: x_a of n_a against x_b
 *  of n_b, z = (pb - pa) / sqrt(p (1 - p) (1/na + 1/nb)) with the pooled
 *  p = (xa + xb) / (na + nb), p_value = 2 Phi(-|z|).  estimate, se and
 *  the CI are the unpooled Wald ones (absolute) or the delta-method ones
 *  (relative), with normal quantiles; stat is the pooled z.  Undefined
 *  when the pooled rate is 0 or 1, an arm is empty, or (relative) p_a is
 *  0.  Returns 0 or ERR_INVAL. */
int stats_ztest_prop(double n_a, double x_a, double n_b, double x_b, enum stats_diff diff,
                     double alpha, struct stats_result *out);

/** Default `tuning` for stats_sequential: gbstats' 5000 (set it near the
 *  total sample the experiment is expected to reach). */
#define STATS_SEQ_TUNING_DEFAULT 5000.0

/** Always-valid test (GrowthBook's SequentialTwoSidedTTest): the
 *  asymptotic confidence sequence of Waudby-Smith et al. 2023
 *  (arXiv:2103.06476, eq. 9), with N = na + nb, s2 = se^2 N (the
 *  per-unit variance of the effect) and
 *    rho^2 = (-2 ln alpha + ln(1 - 2 ln alpha)) / tuning,
 *    half-width = sqrt(s2) sqrt(2 (N rho^2 + 1) ln(sqrt(N rho^2 + 1) / alpha) / (N rho)^2),
 *  and the always-valid p-value min(1, 1/E) with the mixture e-value
 *    E = exp(rho^2 N d^2 / (2 se^2 (N rho^2 + 1))) / sqrt(N rho^2 + 1),
 *  so p < alpha exactly when the interval excludes 0.  Reading it after
 *  every day keeps P(ever excluding the true effect) <= alpha
 *  (asymptotically).  estimate and se as stats_welch; stat = d / se;
 *  dof = INFINITY.  tuning > 0.  Returns 0 or ERR_INVAL. */
int stats_sequential(const struct stats_summary *a, const struct stats_summary *b,
                     enum stats_diff diff, double alpha, double tuning, struct stats_result *out);

/* ------------------------------------------------------------------ */
/* Bayesian (GrowthBook's EffectBayesianABTest)                         */
/* ------------------------------------------------------------------ */

/** A normal prior on the effect, on the same scale as the difference
 *  asked for (relative lift or absolute).  Pass NULL for gbstats'
 *  default improper flat prior. */
struct stats_prior {
    double mean, variance; /**< variance > 0 */
};

struct stats_bayes {
    double mean, sd;          /**< normal posterior of the effect */
    double chance_to_win;     /**< P(effect > 0) */
    double ci_low, ci_high;   /**< central 1 - alpha credible interval */
    double risk_control;      /**< E[max(effect, 0)]: loss expected if control is kept */
    double risk_variant;      /**< E[max(-effect, 0)]: loss expected if the variant ships */
    const char *undefined;    /**< NULL, or the reason (then chance 0.5, rest 0) */
};

/** The effect's likelihood is normal with the stats_welch estimate and
 *  se; with a flat prior the posterior is that normal; with a prior
 *  N(m0, v0), precision 1/se^2 + 1/v0 and mean (d/se^2 + m0/v0) / precision.
 *  chance_to_win = Phi(mean / sd).  Returns 0 or ERR_INVAL. */
int stats_bayes(const struct stats_summary *a, const struct stats_summary *b, enum stats_diff diff,
                double alpha, const struct stats_prior *prior, struct stats_bayes *out);

/* ------------------------------------------------------------------ */
/* Multiple variants, sample ratio, power                              */
/* ------------------------------------------------------------------ */

/** Holm–Bonferroni step-down adjustment of n p-values (each in [0, 1]):
 *  with p sorted ascending, adj_(i) = min(1, max_{j <= i} (n - j + 1) p_(j)),
 *  written to adjusted[] in the input order.  Reject where adjusted <
 *  alpha.  O(n^2), no allocation; adjusted must not overlap p.  Returns 0
 *  or ERR_INVAL. */
int stats_holm(const double *p, size_t n, double *adjusted);

/** p below which a sample-ratio mismatch is flagged (GrowthBook's 0.001). */
#define STATS_SRM_ALPHA 0.001

struct stats_srm {
    double chi2;     /**< statistic over the arms used */
    double dof;      /**< arms used - 1 (0 if the test was skipped) */
    double p_value;  /**< 1 when skipped */
    size_t arms;     /**< arms used */
    int mismatch;    /**< p_value < STATS_SRM_ALPHA */
};

/** Chi-square goodness of fit of observed exposure counts to the intended
 *  weights, GrowthBook's TypeScript rule (back-end util/stats.ts
 *  checkSrm): arm i takes part when weights[i] > 0 and it has a count
 *  (i < n_counts); fewer than two such arms, or no units in them: p = 1.
 *  Else E_i = w_i / sum w * sum n, chi2 = sum (n_i - E_i)^2 / E_i over
 *  those arms, p = P(chi2_{arms-1} > chi2).  Counts beyond n_weights are
 *  ignored.  Counts >= 0 and weights >= 0, finite; else ERR_INVAL. */
int stats_srm(const double *counts, size_t n_counts, const double *weights, size_t n_weights,
              struct stats_srm *out);

/** A power question about one variant against control (GrowthBook's
 *  power calculator, frequentist engine). */
struct stats_power {
    double mean;   /**< baseline mean; a rate p for conversion metrics */
    double var;    /**< per-unit variance: p (1 - p) for a rate, sd^2 for a mean */
    double mde;    /**< relative minimum detectable effect, e.g. 0.05 for +5 % */
    double alpha;  /**< two-sided false-positive rate, e.g. 0.05 */
    double power;  /**< target power, e.g. 0.8 (sample size only) */
    double tuning; /**< sequential tuning parameter; 0 = fixed-horizon test */
};

/** Power with n units in each of control and variant: the relative lift's
 *  delta-method se with mean_b = mean (1 + mde) and equal variances,
 *  se^2 = var (1 + (1 + mde)^2) / (n mean^2); power = P(Z > z* - mde/se)
 *  + P(Z < -z* - mde/se) with z* = Phi^-1(1 - alpha/2).  With tuning > 0
 *  se is widened so that z* se is the sequential half-width at N = 2n.
 *  NaN for invalid input (mean 0, var <= 0, mde 0, alpha outside (0, 1),
 *  n <= 0). */
double stats_power_at(const struct stats_power *q, double n_per_variant);

/** Smallest whole n per variant with stats_power_at(q, n) >= q->power.
 *  Returns 0, ERR_INVAL for invalid input or power outside (alpha, 1), or
 *  ERR_TOOBIG when more than 1e15 units would be needed. */
int stats_power_sample_size(const struct stats_power *q, double *n_per_variant);

/** Days still needed for the smallest arm to reach `needed` units when it
 *  has `have` and gains `per_day` a day: ceil((needed - have) / per_day),
 *  0 when already there, INFINITY when per_day is 0 and more is needed.
 *  Non-negative finite inputs; else ERR_INVAL.  Returns 0. */
int stats_days_needed(double needed, double have, double per_day, double *days);

#endif
