/*
 * test_stats.c — the experiment statistics (core/insight/stats.h).
 *
 * Reference values come from outside this code:
 *  - the conformance README's numbers (../shared/conformance/README.md,
 *    "Experiment statistics"; recomputed there with mpmath): Welch
 *    examples 1 and 2 and the six SRM examples, to their stated precision;
 *  - gbstats' own expectations for what the README does not cover
 *    (sequential, CUPED, Bayesian; GrowthBook packages/stats/tests, 5
 *    decimals), so a GrowthBook dashboard and promod agree;
 *  - 40-digit mpmath values for extreme tails, written down by
 *    tests/unit/stats_mpmath.py (kept beside this file);
 *  - scipy, run at test time: this file generates a few thousand random
 *    cases, /usr/bin/python3 tests/unit/stats_ref.py computes them with
 *    scipy.stats (Debian's python3-scipy, see scripts/setup.sh), and every
 *    value is compared.
 * The sequential intervals are checked by simulation: A/A experiments
 * read every day must not reject more often than alpha (plus a binomial
 * margin), while the plain test read the same way must.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/err.h"
#include "fixture.h"
#include "insight/stats.h"

extern char **environ;

TestSuite(stats, .timeout = 120);

/* ---- helpers ---- */

/* splitmix64: small, fast, deterministic across platforms */
struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(struct rng *r) /* [0, 1) */
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static double rng_uniform(struct rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rng_unit(r);
}

static double rng_log10(struct rng *r, double lo_exp, double hi_exp) /* 10^U(lo, hi) */
{
    return pow(10, rng_uniform(r, lo_exp, hi_exp));
}

static double rng_normal(struct rng *r)
{
    double u = 1 - rng_unit(r), v = rng_unit(r);
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static int near(double got, double want, double rel, double abs_tol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= fmax(abs_tol, rel * fabs(want));
}

/* value rounded as the reference states it: |got - want| <= half a unit
 * of the last stated decimal */
#define ROUNDED(got, want, decimals)                                                             \
    cr_expect(fabs((got) - (want)) <= 0.5 * pow(10, -(decimals)) + 1e-12,                         \
              "%s = %.12g, reference %.*f", #got, (double)(got), (decimals), (double)(want))

/* ---- the README's reference numbers ---- */

Test(stats, readme_welch_example_1)
{
    struct stats_summary a, b;
    struct stats_result r;
    cr_assert_eq(stats_summary_sums(3407, 1396.87, 52377.9767, &a), 0);
    cr_assert_eq(stats_summary_sums(3461, 2422.7, 134698.29, &b), 0);

    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, &r), 0);
    cr_assert_null(r.undefined);
    ROUNDED(r.estimate, 0.29, 5);
    ROUNDED(r.se, 0.12478, 5);
    ROUNDED(r.dof, 5841.742, 3);
    ROUNDED(r.p_value, 0.02016, 5);
    ROUNDED(r.ci_low, 0.04538, 5);
    ROUNDED(r.ci_high, 0.53462, 5);

    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &r), 0);
    ROUNDED(r.estimate, 0.70732, 5);
    ROUNDED(r.se, 0.37879, 5);
    ROUNDED(r.p_value, 0.06191, 5);
    ROUNDED(r.ci_low, -0.03526, 5);
    ROUNDED(r.ci_high, 1.44989, 5);
}

Test(stats, readme_welch_example_2_proportions)
{
    struct stats_summary a, b;
    struct stats_result r;
    cr_assert_eq(stats_summary_prop(28, 14, &a), 0);
    cr_assert_eq(stats_summary_prop(30, 16, &b), 0);
    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &r), 0);
    ROUNDED(r.estimate, 0.06667, 5);
    ROUNDED(r.se, 0.2717, 4);
    ROUNDED(r.dof, 55.707, 3);
    ROUNDED(r.p_value, 0.80707, 5);
    ROUNDED(r.ci_low, -0.47767, 5);
    ROUNDED(r.ci_high, 0.61101, 5);
}

Test(stats, readme_srm_examples)
{
    static const struct {
        double c[3], w[3];
        size_t k;
        double p, chi2;
    } ex[] = {
        { { 1000, 1200 }, { .5, .5 }, 2, 0.000020079, 18.1818 },
        { { 135, 115 }, { .5, .5 }, 2, 0.205903211, -1 },
        { { 310, 98 }, { .75, .25 }, 2, 0.647434186, -1 },
        { { 500, 500, 600 }, { .34, .33, .33 }, 3, 0.000592638, -1 },
        { { 0, 10, 10 }, { .34, .33, .33 }, 3, 0.005790624, -1 },
        { { 1000, 1200, 900 }, { .5, .5, 0 }, 3, 0.000020079, 18.1818 }, /* 0-weight arm dropped */
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        struct stats_srm s;
        cr_assert_eq(stats_srm(ex[i].c, ex[i].k, ex[i].w, ex[i].k, &s), 0);
        ROUNDED(s.p_value, ex[i].p, 9);
        if (ex[i].chi2 > 0)
            ROUNDED(s.chi2, ex[i].chi2, 4);
        cr_expect_eq(s.mismatch, ex[i].p < 0.001, "example %zu: flag at p < 0.001", i);
    }
    /* the last example used two arms, dof 1 */
    struct stats_srm s;
    stats_srm(ex[5].c, 3, ex[5].w, 3, &s);
    cr_expect_eq(s.arms, 2);
    cr_expect_eq(s.dof, 1);
}

Test(stats, srm_skips_as_growthbook_does)
{
    struct stats_srm s;
    const double w2[] = { .5, .5 }, c1[] = { 1000 };
    cr_assert_eq(stats_srm(c1, 1, w2, 2, &s), 0); /* second arm has no count */
    cr_expect_eq(s.p_value, 1);
    cr_expect_eq(s.mismatch, 0);
    const double c3[] = { 1000, 900, 800 }, w3[] = { 1, 0, 0 };
    cr_assert_eq(stats_srm(c3, 3, w3, 3, &s), 0); /* one weighted arm */
    cr_expect_eq(s.p_value, 1);
    const double z3[] = { 0, 0, 0 }, w33[] = { .34, .33, .33 };
    cr_assert_eq(stats_srm(z3, 3, w33, 3, &s), 0); /* nobody yet */
    cr_expect_eq(s.p_value, 1);
    const double eq[] = { 500, 500 };
    cr_assert_eq(stats_srm(eq, 2, w2, 2, &s), 0);
    cr_expect_eq(s.p_value, 1);
    /* a blatant mismatch is flagged, with a p-value far below 1e-12 */
    const double bad[] = { 10000, 12000 };
    cr_assert_eq(stats_srm(bad, 2, w2, 2, &s), 0);
    cr_expect(s.mismatch && s.p_value < 1e-12 && s.p_value > 0, "p = %g", s.p_value);
    /* hostile input */
    const double neg[] = { 10, -1 }, nanw[] = { .5, NAN };
    cr_expect_eq(stats_srm(neg, 2, w2, 2, &s), ERR_INVAL);
    cr_expect_eq(stats_srm(eq, 2, nanw, 2, &s), ERR_INVAL);
    cr_expect_eq(stats_srm(NULL, 2, w2, 2, &s), ERR_INVAL);
    cr_expect_eq(stats_srm(eq, 2, w2, 2, NULL), ERR_INVAL);
}

/* ---- gbstats' own expectations (packages/stats/tests, 5 decimals) ---- */

Test(stats, gbstats_sequential)
{
    struct stats_summary a, b;
    struct stats_result r;
    /* tests/frequentist/test_tests.py test_sequential_test_runs (tuning 1000) */
    stats_summary_sums(3000, 1396.87, 52377.9767, &a);
    stats_summary_sums(3461, 2422.7, 134698.29, &b);
    cr_assert_eq(stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, 1000, &r), 0);
    ROUNDED(r.estimate, 0.50336, 5);
    ROUNDED(r.se, 0.33341, 5);
    ROUNDED(r.ci_low, -0.55844, 5);
    ROUNDED(r.ci_high, 1.56516, 5);
    ROUNDED(r.p_value, 1, 5);
    /* the sequential interval is wider than the fixed-horizon one */
    struct stats_result f;
    stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &f);
    cr_expect(r.ci_high - r.ci_low > f.ci_high - f.ci_low);

    /* test_sequential_test_runs_prop (default tuning 5000) */
    stats_summary_prop(3000, 1396, &a);
    stats_summary_prop(3461, 2422, &b);
    cr_assert_eq(stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, STATS_SEQ_TUNING_DEFAULT, &r),
                 0);
    ROUNDED(r.estimate, 0.50386, 5);
    ROUNDED(r.se, 0.03386, 5);
    ROUNDED(r.ci_low, 0.40098, 5);
    ROUNDED(r.ci_high, 0.60675, 5);
    ROUNDED(r.p_value, 0.0, 5);

    /* test_sequential_test_tuning_as_expected: a tuning near N is the narrowest */
    stats_summary_sums(3000, 1396.87, 52377.9767, &a);
    stats_summary_sums(3461, 2422.7, 134698.29, &b);
    struct stats_result lo, mid, hi;
    stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, 10, &lo);
    stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, 6461, &mid);
    stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, 10000, &hi);
    cr_expect(lo.ci_low < hi.ci_low && lo.ci_high > hi.ci_high);
    cr_expect(lo.ci_low < mid.ci_low && lo.ci_high > mid.ci_high);
    cr_expect(hi.ci_low < mid.ci_low && hi.ci_high > mid.ci_high);
}

Test(stats, gbstats_cuped_sequential)
{
    /* test_sequential_test_runs_ra: pre sums, post sums, sum of products 1 */
    struct stats_cuped_sums ca = { 3000, 1396.87, 52377.9767, 16.87, 527.9767, 1 };
    struct stats_cuped_sums cb = { 3461, 2422.7, 134698.29, 22.7, 1348.29, 1 };
    struct stats_summary a, b;
    struct stats_result r;
    cr_assert_eq(stats_cuped_pair(&ca, &cb, &a, &b), 0);
    cr_expect(a.theta != 0 && a.theta == b.theta);
    cr_assert_eq(stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, STATS_SEQ_TUNING_DEFAULT, &r),
                 0);
    ROUNDED(r.estimate, 0.50338, 5);
    ROUNDED(r.se, 0.33341, 5);
    ROUNDED(r.ci_low, -0.50969, 5);
    ROUNDED(r.ci_high, 1.51646, 5);
    ROUNDED(r.p_value, 1, 5);
}

Test(stats, gbstats_bayesian)
{
    struct stats_summary a, b;
    struct stats_bayes r;
    /* tests/bayesian/test_tests.py TestBinom */
    stats_summary_prop(100, 49, &a);
    stats_summary_prop(100, 51, &b);
    cr_assert_eq(stats_bayes(&a, &b, STATS_DIFF_RELATIVE, 0.05, NULL, &r), 0);
    ROUNDED(r.mean, 0.04082, 5);
    ROUNDED(r.sd, 0.14725, 5);
    ROUNDED(r.chance_to_win, 0.60918, 5);
    ROUNDED(r.ci_low, -0.24779, 5);
    ROUNDED(r.ci_high, 0.32943, 5);
    ROUNDED(r.risk_control, 0.0814, 5);
    ROUNDED(r.risk_variant, 0.04058, 5);

    /* TestNorm, flat and informative prior N(0.1, 0.1) */
    stats_summary_sums(10, 100, 1002.25, &a);
    stats_summary_sums(10, 105, 1111.5, &b);
    cr_assert_eq(stats_bayes(&a, &b, STATS_DIFF_RELATIVE, 0.05, NULL, &r), 0);
    ROUNDED(r.mean, 0.05, 5);
    ROUNDED(r.sd, 0.03572, 5);
    ROUNDED(r.chance_to_win, 0.91923, 5);
    ROUNDED(r.ci_low, -0.02, 5);
    ROUNDED(r.ci_high, 0.12, 5);
    ROUNDED(r.risk_control, 0.05131, 5);
    ROUNDED(r.risk_variant, 0.00131, 5);
    const struct stats_prior pr = { .mean = 0.1, .variance = 0.1 };
    cr_assert_eq(stats_bayes(&a, &b, STATS_DIFF_RELATIVE, 0.05, &pr, &r), 0);
    ROUNDED(r.mean, 0.05063, 5);
    ROUNDED(r.sd, 0.03549, 5);
    ROUNDED(r.chance_to_win, 0.92315, 5);
    ROUNDED(r.ci_low, -0.01893, 5);
    ROUNDED(r.ci_high, 0.12019, 5);
    ROUNDED(r.risk_control, 0.05186, 5);
    ROUNDED(r.risk_variant, 0.00123, 5);

    /* missing data: neutral */
    stats_summary_prop(0, 0, &a);
    stats_summary_prop(0, 0, &b);
    cr_assert_eq(stats_bayes(&a, &b, STATS_DIFF_RELATIVE, 0.05, NULL, &r), 0);
    cr_expect_eq(r.chance_to_win, 0.5);
    cr_expect_eq(r.mean, 0);
    cr_expect_not_null(r.undefined);
}

/* ---- extreme tails against 40-digit mpmath (tests/unit/stats_mpmath.py) ---- */

Test(stats, mpmath_tails)
{
    static const struct {
        char f;
        double x, k, want;
    } ref[] = {
#include "stats_mpmath.inc"
    };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        double got = NAN;
        switch (ref[i].f) {
        case 's': got = stats_t_sf(ref[i].x, ref[i].k); break;
        case 'c': got = stats_t_cdf(ref[i].x, ref[i].k); break;
        case 'q': got = stats_t_ppf(ref[i].x, ref[i].k); break;
        case 'x': got = stats_chi2_sf(ref[i].x, ref[i].k); break;
        case 'n': got = stats_norm_sf(ref[i].x); break;
        case 'z': got = stats_norm_ppf(ref[i].x); break;
        case 'b': got = stats_ibeta(ref[i].k, 0.5, ref[i].x); break;
        }
        cr_expect(near(got, ref[i].want, 1e-12, 0),
                  "%c(%.17g, %.17g) = %.17g, mpmath %.17g (rel %.2g)", ref[i].f, ref[i].x, ref[i].k,
                  got, ref[i].want, fabs(got / ref[i].want - 1));
    }
}

Test(stats, distribution_identities)
{
    cr_expect_eq(stats_norm_ppf(0), -INFINITY);
    cr_expect_eq(stats_norm_ppf(1), INFINITY);
    cr_expect(isnan(stats_norm_ppf(1.5)) && isnan(stats_norm_ppf(NAN)));
    cr_expect(isnan(stats_t_sf(1, 0)) && isnan(stats_t_sf(1, -2)) && isnan(stats_t_sf(NAN, 3)));
    cr_expect_eq(stats_t_sf(0, 7.5), 0.5);
    cr_expect_eq(stats_t_sf(2, INFINITY), stats_norm_sf(2));
    cr_expect_eq(stats_chi2_sf(0, 3), 1);
    cr_expect_eq(stats_chi2_sf(-1, 3), 1);
    cr_expect(isnan(stats_chi2_sf(1, 0)));
    /* Cauchy (dof 1) and dof 2 have closed forms */
    for (double x = -50; x <= 50; x += 0.37) {
        cr_expect(near(stats_t_cdf(x, 1), 0.5 + atan(x) / M_PI, 1e-13, 1e-16), "cauchy %g", x);
        cr_expect(near(stats_t_cdf(x, 2), 0.5 + x / (2 * sqrt(2 + x * x)), 1e-13, 1e-16), "dof2 %g",
                  x);
        cr_expect(near(stats_chi2_sf(fabs(x), 2), exp(-fabs(x) / 2), 1e-13, 0), "chi2(2) %g", x);
    }
    /* cdf + sf = 1 and ppf inverts cdf */
    for (double p = 1e-12; p < 1; p = p < 0.5 ? p * 7.3 : 1 - (1 - p) / 7.3) {
        for (double dof = 0.4; dof < 2e6; dof *= 5.7) {
            double x = stats_t_ppf(p, dof);
            double back = p < 0.5 ? stats_t_cdf(x, dof) : stats_t_sf(x, dof);
            double want = p < 0.5 ? p : 1 - p;
            cr_expect(near(back, want, 1e-11, 0), "t ppf(%g, %g) = %g -> %g", p, dof, x, back);
            cr_expect(near(stats_t_cdf(x, dof) + stats_t_sf(x, dof), 1, 1e-14, 0));
        }
        double z = stats_norm_ppf(p);
        double back = p < 0.5 ? stats_norm_cdf(z) : stats_norm_sf(z);
        cr_expect(near(back, p < 0.5 ? p : 1 - p, 1e-12, 0), "norm ppf(%g)", p);
    }
}

/* ---- scipy at test time ---- */

enum { MAXV = 16, MAXCASES = 6000 };

struct refcase {
    char what[640];
    int nv;
    double got[MAXV];
    double rel[MAXV];
    double abs[MAXV];
    int check_power; /* power case: got[0] = C power(n), got[1] = target, got[2] = n */
};

struct refrun {
    FILE *in;
    struct refcase *cases;
    int n;
};

static struct refcase *add(struct refrun *run, double rel, double abs_tol, int nv,
                           const double *got, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Record one case: the line for stats_ref.py and the values to compare. */
static struct refcase *add(struct refrun *run, double rel, double abs_tol, int nv,
                           const double *got, const char *fmt, ...)
{
    cr_assert(run->n < MAXCASES && nv <= MAXV);
    struct refcase *c = &run->cases[run->n++];
    memset(c, 0, sizeof *c);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(c->what, sizeof c->what, fmt, ap);
    va_end(ap);
    cr_assert(len > 0 && (size_t)len < sizeof c->what, "case line too long");
    fprintf(run->in, "%s\n", c->what);
    c->nv = nv;
    for (int i = 0; i < nv; i++) {
        c->got[i] = got[i];
        c->rel[i] = rel;
        c->abs[i] = abs_tol;
    }
    return c;
}

/* An interval's ends are judged on the interval's own scale: an end near
 * 0 is a difference of two larger numbers, so 1e-10 of |estimate| plus
 * the width, not of the end itself. */
static void ci_tol(struct refcase *c, int lo, int hi, double estimate)
{
    c->abs[lo] = c->abs[hi] = 1e-10 * (fabs(estimate) + c->got[hi] - c->got[lo]);
}

static void gen_distributions(struct refrun *run, struct rng *r)
{
    for (int i = 0; i < 300; i++) {
        double x = i % 3 ? rng_uniform(r, -38, 38) : rng_uniform(r, -3, 3);
        double v[2] = { stats_norm_cdf(x), stats_norm_sf(x) };
        /* below 1e-300 scipy flushes to 0 where we keep the subnormal */
        add(run, 1e-12, 1e-300, 2, v, "norm %.17g", x);
    }
    for (int i = 0; i < 300; i++) {
        double p = rng_log10(r, -15, log10(0.5));
        if (i % 2)
            p = 1 - p;
        double v[1] = { stats_norm_ppf(p) };
        add(run, 1e-12, 1e-300, 1, v, "normppf %.17g", p);
    }
    for (int i = 0; i < 600; i++) {
        double dof = rng_log10(r, -0.5, 7), x = rng_log10(r, -3, 2) * (i % 2 ? -1 : 1);
        double v[2] = { stats_t_cdf(x, dof), stats_t_sf(x, dof) };
        add(run, 1e-10, 1e-300, 2, v, "t %.17g %.17g", x, dof);
    }
    for (int i = 0; i < 400; i++) {
        double dof = rng_log10(r, -0.5, 7), p = rng_log10(r, -10, log10(0.5));
        if (i % 2)
            p = 1 - p;
        double x = stats_t_ppf(p, dof), v[2] = { x, x };
        /* against scipy's t.ppf only to 1e-8: Cephes stdtri is the loose
         * side (4e-9 at p = 0.975, dof 39.16, says mpmath); against scipy's
         * t.sf inverted by brentq to 1e-10 */
        struct refcase *c = add(run, 1e-10, 0, 2, v, "tppf %.17g %.17g", p, dof);
        c->rel[0] = 1e-8;
    }
    for (int i = 0; i < 400; i++) {
        double k = rng_log10(r, -0.5, 3.5), x = k * rng_log10(r, -3, 1.3);
        double v[1] = { stats_chi2_sf(x, k) };
        add(run, 1e-10, 0, 1, v, "chi2 %.17g %.17g", x, k);
    }
}

/* a random arm: n units with the given mean and sd, as sums */
static void random_sums(struct rng *r, double mean, double sd, double *n, double *s, double *ss)
{
    *n = floor(rng_log10(r, log10(3), 6));
    *s = *n * mean;
    *ss = (*n - 1) * sd * sd + *n * mean * mean;
}

static void gen_tests(struct refrun *run, struct rng *r)
{
    for (int i = 0; i < 300; i++) { /* Welch on means, absolute and relative */
        double ma = rng_log10(r, -1, 2) * (i % 5 ? 1 : -1);
        double sda = fabs(ma) * rng_log10(r, -1.5, 1), sdb = sda * rng_log10(r, -0.3, 0.3);
        double mb = ma * (1 + rng_uniform(r, -0.3, 0.3) * (i % 4 ? 0.1 : 1));
        double na, sa, ssa, nb, sb, ssb, alpha = i % 3 ? 0.05 : 0.1;
        random_sums(r, ma, sda, &na, &sa, &ssa);
        random_sums(r, mb, sdb, &nb, &sb, &ssb);
        struct stats_summary a, b;
        struct stats_result w, rl;
        cr_assert_eq(stats_summary_sums(na, sa, ssa, &a), 0);
        cr_assert_eq(stats_summary_sums(nb, sb, ssb, &b), 0);
        cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, alpha, &w), 0);
        cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, alpha, &rl), 0);
        cr_assert_null(w.undefined);
        double v[5] = { w.stat, w.p_value, w.dof, w.ci_low, w.ci_high };
        ci_tol(add(run, 1e-10, 1e-300, 5, v, "welch %.17g %.17g %.17g %.17g %.17g %.17g %.17g", na,
                   sa, ssa, nb, sb, ssb, alpha),
               3, 4, w.estimate);
        double u[6] = { rl.estimate, rl.se, rl.p_value, rl.dof, rl.ci_low, rl.ci_high };
        ci_tol(add(run, 1e-10, 1e-300, 6, u, "welchrel %.17g %.17g %.17g %.17g %.17g %.17g %.17g",
                   na, sa, ssa, nb, sb, ssb, alpha),
               4, 5, rl.estimate);
    }
    for (int i = 0; i < 300; i++) { /* rates: gbstats' Welch on p(1-p), and the pooled z-test */
        double na = floor(rng_log10(r, 1.3, 6)), nb = floor(na * rng_log10(r, -0.2, 0.2));
        double pa = rng_log10(r, -3, log10(0.5)), pb = pa * (1 + rng_uniform(r, -0.3, 0.3));
        double xa = fmax(1, fmin(na - 1, round(na * pa)));
        double xb = fmax(1, fmin(nb - 1, round(nb * pb)));
        double alpha = i % 3 ? 0.05 : 0.01;
        struct stats_summary a, b;
        struct stats_result w, z;
        stats_summary_prop(na, xa, &a);
        stats_summary_prop(nb, xb, &b);
        cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, alpha, &w), 0);
        double v[5] = { w.stat, w.p_value, w.dof, w.ci_low, w.ci_high };
        ci_tol(add(run, 1e-10, 1e-300, 5, v, "prop %.17g %.17g %.17g %.17g %.17g", na, xa, nb, xb,
                   alpha),
               3, 4, w.estimate);
        cr_assert_eq(stats_ztest_prop(na, xa, nb, xb, STATS_DIFF_ABSOLUTE, alpha, &z), 0);
        double u[6] = { z.stat, z.p_value, z.estimate, z.se, z.ci_low, z.ci_high };
        ci_tol(add(run, 1e-10, 1e-300, 6, u, "ztest %.17g %.17g %.17g %.17g %.17g", na, xa, nb, xb,
                   alpha),
               4, 5, z.estimate);
    }
    for (int i = 0; i < 200; i++) { /* SRM */
        int k = 2 + (int)(rng_unit(r) * 5);
        double c[8], w[8], total = rng_log10(r, 1, 6), skew = i % 3 ? 0.001 : 0.05;
        int positive = 0;
        for (int j = 0; j < k; j++) {
            w[j] = (j >= 2 && rng_unit(r) < 0.2) ? 0 : rng_uniform(r, 0.1, 1);
            positive += w[j] > 0;
        }
        double tw = 0;
        for (int j = 0; j < k; j++)
            tw += w[j];
        for (int j = 0; j < k; j++)
            c[j] = round(total * (w[j] > 0 ? w[j] : 0.2) / tw * (1 + rng_uniform(r, -skew, skew)));
        struct stats_srm s;
        cr_assert_eq(stats_srm(c, (size_t)k, w, (size_t)k, &s), 0);
        cr_assert(positive >= 2);
        char line[400];
        int off = snprintf(line, sizeof line, "srm %d", k);
        for (int j = 0; j < k; j++)
            off += snprintf(line + off, sizeof line - (size_t)off, " %.17g", c[j]);
        for (int j = 0; j < k; j++)
            off += snprintf(line + off, sizeof line - (size_t)off, " %.17g", w[j]);
        double v[2] = { s.chi2, s.p_value };
        add(run, 1e-10, 1e-300, 2, v, "%s", line);
    }
}

static void gen_cuped(struct refrun *run, struct rng *r)
{
    for (int i = 0; i < 25; i++) {
        int na = 30 + (int)(rng_unit(r) * 300), nb = 30 + (int)(rng_unit(r) * 300);
        double beta = rng_uniform(r, 0.2, 1.5), lift = rng_uniform(r, -2, 4), alpha = 0.05;
        struct stats_cuped_sums s[2];
        memset(s, 0, sizeof s);
        char *rows = NULL;
        size_t rowlen = 0;
        FILE *buf = open_memstream(&rows, &rowlen);
        cr_assert_not_null(buf);
        for (int arm = 0; arm < 2; arm++)
            for (int u = 0; u < (arm ? nb : na); u++) {
                /* pre-period spend, 0 for a fifth of customers (no history) */
                double x = rng_unit(r) < 0.2 ? 0 : 50 + 20 * rng_normal(r);
                double y = 10 + beta * x + 8 * rng_normal(r) + (arm ? lift : 0);
                fprintf(buf, "%.17g %.17g\n", x, y);
                struct stats_cuped_sums *t = &s[arm];
                t->n += 1;
                t->sum_x += x;
                t->sum_x2 += x * x;
                t->sum_y += y;
                t->sum_y2 += y * y;
                t->sum_xy += x * y;
            }
        fclose(buf);
        struct stats_summary a, b;
        struct stats_result w;
        cr_assert_eq(stats_cuped_pair(&s[0], &s[1], &a, &b), 0);
        cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, alpha, &w), 0);
        double v[6] = { a.theta, w.stat, w.p_value, w.dof, w.ci_low, w.ci_high };
        ci_tol(add(run, 1e-10, 1e-300, 6, v, "cuped %d %d %.17g", na, nb, alpha), 4, 5, w.estimate);
        fputs(rows, run->in); /* the rows follow the case line */
        free(rows);
        /* CUPED narrows the interval on correlated data */
        struct stats_summary pa, pb;
        struct stats_result plain;
        stats_summary_sums(s[0].n, s[0].sum_y, s[0].sum_y2, &pa);
        stats_summary_sums(s[1].n, s[1].sum_y, s[1].sum_y2, &pb);
        stats_welch(&pa, &pb, STATS_DIFF_ABSOLUTE, alpha, &plain);
        cr_expect(w.se < plain.se, "cuped se %g vs plain %g", w.se, plain.se);
    }
}

static void gen_bayes_holm_power(struct refrun *run, struct rng *r)
{
    for (int i = 0; i < 60; i++) {
        double na = floor(rng_log10(r, 2, 5)), nb = floor(rng_log10(r, 2, 5));
        double pa = rng_uniform(r, 0.02, 0.3), pb = pa * (1 + rng_uniform(r, -0.2, 0.2));
        struct stats_summary a, b;
        struct stats_bayes by;
        stats_summary_prop(na, fmax(1, round(na * pa)), &a);
        stats_summary_prop(nb, fmax(1, round(nb * pb)), &b);
        double alpha = i % 2 ? 0.05 : 0.2;
        struct stats_prior prior = { rng_uniform(r, -0.1, 0.1), rng_log10(r, -3, 0) };
        cr_assert_eq(stats_bayes(&a, &b, i % 3 ? STATS_DIFF_RELATIVE : STATS_DIFF_ABSOLUTE, alpha,
                                 i % 4 ? NULL : &prior, &by),
                     0);
        cr_assert_null(by.undefined);
        if (fabs(by.mean / by.sd) > 8) /* scipy's truncnorm is the weak side out there */
            continue;
        double v[5] = { by.chance_to_win, by.ci_low, by.ci_high, by.risk_control, by.risk_variant };
        add(run, 1e-9, 1e-13 * by.sd, 5, v, "bayes %.17g %.17g %.17g", by.mean, by.sd, alpha);
    }
    for (int i = 0; i < 200; i++) {
        size_t k = 1 + (size_t)(rng_unit(r) * 12);
        double p[16], adj[16];
        for (size_t j = 0; j < k; j++) {
            p[j] = rng_unit(r) < 0.1 ? (rng_unit(r) < 0.5 ? 0 : 1) : rng_log10(r, -6, 0);
            if (j && rng_unit(r) < 0.2)
                p[j] = p[rng_next(r) % j]; /* ties */
        }
        cr_assert_eq(stats_holm(p, k, adj), 0);
        char line[600];
        int off = snprintf(line, sizeof line, "holm %zu", k);
        for (size_t j = 0; j < k; j++)
            off += snprintf(line + off, sizeof line - (size_t)off, " %.17g", p[j]);
        add(run, 1e-15, 1e-300, (int)k, adj, "%s", line);
    }
    for (int i = 0; i < 150; i++) {
        double mean, var;
        if (i % 2) {
            mean = rng_log10(r, -3, log10(0.5));
            var = mean * (1 - mean);
        } else {
            mean = rng_log10(r, 0, 3);
            var = pow(mean * rng_log10(r, -1, 1), 2);
        }
        struct stats_power q = { .mean = mean,
                                 .var = var,
                                 .mde = rng_log10(r, -2, log10(0.5)) * (i % 5 ? 1 : -1),
                                 .alpha = i % 3 ? 0.05 : 0.01,
                                 .power = i % 4 ? 0.8 : 0.9 };
        double n;
        int rc = stats_power_sample_size(&q, &n);
        if (rc == ERR_TOOBIG)
            continue;
        cr_assert_eq(rc, 0);
        double v[3] = { stats_power_at(&q, n), q.power, n };
        struct refcase *c = add(run, 1e-10, 0, 3, v, "power %.17g %.17g %.17g %.17g %.17g %.17g",
                                mean, var, q.mde, q.alpha, n, q.power);
        c->check_power = 1;
    }
}

static void check_power_case(const struct refcase *c, const double *ref)
{
    double c_power = c->got[0], target = c->got[1], n = c->got[2];
    cr_expect(near(c_power, ref[0], 1e-10, 0), "%s: power %.17g, scipy %.17g", c->what, c_power,
              ref[0]);
    cr_expect(ref[0] >= target, "%s: scipy power at n %.17g < target", c->what, ref[0]);
    cr_expect(n <= 1 || ref[1] < target, "%s: n - 1 already has power %.17g", c->what, ref[1]);
    /* the closed form ignores the far tail's share of the power (~1e-6 at
     * 80 %), so the exact n may be a few parts per million below it */
    cr_expect(n >= ref[2] * (1 - 1e-4) - 1 && n <= ceil(ref[2]), "%s: n %g vs closed form %.3f",
              c->what, n, ref[2]);
}

static int run_python(const char *in, const char *out)
{
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/unit/stats_ref.py", PROMOD_SRC);
    char *argv[] = { "/usr/bin/python3", script, (char *)in, (char *)out, NULL };
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(stats, scipy_reference, .timeout = 300)
{
    char dir[512], in[600], out[600];
    tfx_tmpdir(dir, sizeof dir);
    snprintf(in, sizeof in, "%s/cases.txt", dir);
    snprintf(out, sizeof out, "%s/scipy.txt", dir);
    struct refrun run = { .cases = calloc(MAXCASES, sizeof(struct refcase)) };
    cr_assert_not_null(run.cases);
    run.in = fopen(in, "w");
    cr_assert_not_null(run.in);
    struct rng r = { 20240611 };
    gen_distributions(&run, &r);
    gen_tests(&run, &r);
    gen_cuped(&run, &r);
    gen_bayes_holm_power(&run, &r);
    fclose(run.in);

    int rc = run_python(in, out);
    cr_assert_eq(rc, 0,
                 "/usr/bin/python3 tests/unit/stats_ref.py exited %d "
                 "(python3-scipy missing? see scripts/setup.sh)",
                 rc);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    char *line = NULL;
    size_t cap = 0;
    int i = 0, failed = 0, nkinds = 0;
    struct {
        char name[16];
        double worst; /* largest |got - scipy| as a share of the tolerance */
    } kinds[16];
    while (getline(&line, &cap, f) > 0 && i < run.n) {
        const struct refcase *c = &run.cases[i++];
        double ref[MAXV + 1];
        char *p = line, *end;
        int nv = 0;
        while (nv <= MAXV && (ref[nv] = strtod(p, &end), end != p)) {
            nv++;
            p = end;
        }
        cr_assert_eq(nv, c->check_power ? 3 : c->nv, "case %d (%s): %d values from scipy", i,
                     c->what, nv);
        if (c->check_power) {
            check_power_case(c, ref);
            continue;
        }
        int k = 0, len = (int)strcspn(c->what, " ");
        while (k < nkinds && ((int)strlen(kinds[k].name) != len ||
                              strncmp(kinds[k].name, c->what, (size_t)len)))
            k++;
        if (k == nkinds && nkinds < 16) {
            snprintf(kinds[k].name, sizeof kinds[k].name, "%.*s", len, c->what);
            kinds[nkinds++].worst = 0;
        }
        for (int j = 0; j < c->nv; j++) {
            double tol = fmax(c->abs[j], c->rel[j] * fabs(ref[j]));
            if (k < nkinds && isfinite(ref[j]) && tol > 0)
                kinds[k].worst = fmax(kinds[k].worst, fabs(c->got[j] - ref[j]) / tol);
            if (!near(c->got[j], ref[j], c->rel[j], c->abs[j])) {
                if (failed++ < 20)
                    cr_log_error("%s: value %d = %.17g, scipy %.17g (rel %.3g)", c->what, j,
                                 c->got[j], ref[j], fabs(c->got[j] / ref[j] - 1));
            }
        }
    }
    for (int k = 0; k < nkinds; k++)
        cr_log_info("scipy agreement, %-8s worst difference %.3f of the tolerance", kinds[k].name,
                    kinds[k].worst);
    free(line);
    fclose(f);
    cr_expect_eq(i, run.n, "scipy answered %d of %d cases", i, run.n);
    cr_expect_eq(failed, 0, "%d values differ from scipy beyond tolerance", failed);
    free(run.cases);
    tfx_rmrf(dir);
}

/* ---- Holm ---- */

Test(stats, holm)
{
    /* sorted 0.005 0.01 0.03 0.04 -> x4 x3 x2 x1 = 0.02 0.03 0.06 0.04, running max */
    const double p[] = { 0.01, 0.04, 0.03, 0.005 }, want[] = { 0.03, 0.06, 0.06, 0.02 };
    double adj[4];
    cr_assert_eq(stats_holm(p, 4, adj), 0);
    for (int i = 0; i < 4; i++)
        cr_expect(near(adj[i], want[i], 1e-15, 0), "adj[%d] = %.17g, want %g", i, adj[i], want[i]);
    /* ties share a value; capped at 1; a single p is unchanged */
    const double t[] = { 0.02, 0.02, 0.5 }, c[] = { 0.6, 0.7 };
    cr_assert_eq(stats_holm(t, 3, adj), 0);
    cr_expect(adj[0] == adj[1] && near(adj[0], 0.06, 1e-15, 0) && adj[2] == 0.5);
    cr_assert_eq(stats_holm(c, 2, adj), 0);
    cr_expect(adj[0] == 1 && adj[1] == 1);
    cr_assert_eq(stats_holm(p, 1, adj), 0);
    cr_expect_eq(adj[0], 0.01);
    cr_expect_eq(stats_holm(NULL, 0, NULL), 0);
    /* bad input */
    const double bad[] = { 0.1, NAN }, big[] = { 0.1, 1.5 };
    cr_expect_eq(stats_holm(bad, 2, adj), ERR_INVAL);
    cr_expect_eq(stats_holm(big, 2, adj), ERR_INVAL);
    double inplace[] = { 0.1, 0.2 };
    cr_expect_eq(stats_holm(inplace, 2, inplace), ERR_INVAL);
    cr_expect_eq(stats_holm(inplace, 2, inplace + 1), ERR_INVAL);
    cr_expect_eq(stats_holm(NULL, 2, adj), ERR_INVAL);
}

/* ---- bad input and degenerate data ---- */

Test(stats, bad_input_is_refused)
{
    struct stats_summary s, a, b;
    struct stats_result r;
    struct stats_bayes by;
    cr_expect_eq(stats_summary_sums(-1, 0, 0, &s), ERR_INVAL);
    cr_expect_eq(stats_summary_sums(10, NAN, 1, &s), ERR_INVAL);
    cr_expect_eq(stats_summary_sums(10, 1, -1, &s), ERR_INVAL);
    cr_expect_eq(stats_summary_sums(INFINITY, 1, 1, &s), ERR_INVAL);
    cr_expect_eq(stats_summary_sums(10, 1, 1, NULL), ERR_INVAL);
    cr_expect_eq(stats_summary_prop(10, 11, &s), ERR_INVAL);
    cr_expect_eq(stats_summary_prop(10, -1, &s), ERR_INVAL);
    cr_expect_eq(stats_summary_prop(NAN, 1, &s), ERR_INVAL);

    stats_summary_prop(1000, 100, &a);
    stats_summary_prop(1000, 120, &b);
    const double alphas[] = { 0, 1, -0.1, NAN, 2 };
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, alphas[i], &r), ERR_INVAL);
        cr_expect_eq(stats_sequential(&a, &b, STATS_DIFF_ABSOLUTE, alphas[i], 5000, &r), ERR_INVAL);
        cr_expect_eq(stats_bayes(&a, &b, STATS_DIFF_ABSOLUTE, alphas[i], NULL, &by), ERR_INVAL);
        cr_expect_eq(stats_ztest_prop(1000, 100, 1000, 120, STATS_DIFF_ABSOLUTE, alphas[i], &r),
                     ERR_INVAL);
    }
    cr_expect_eq(stats_welch(&a, &b, (enum stats_diff)7, 0.05, &r), ERR_INVAL);
    cr_expect_eq(stats_welch(NULL, &b, STATS_DIFF_ABSOLUTE, 0.05, &r), ERR_INVAL);
    cr_expect_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, NULL), ERR_INVAL);
    cr_expect_eq(stats_sequential(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, 0, &r), ERR_INVAL);
    cr_expect_eq(stats_sequential(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, NAN, &r), ERR_INVAL);
    const struct stats_prior flat0 = { 0, 0 };
    cr_expect_eq(stats_bayes(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, &flat0, &by), ERR_INVAL);
    struct stats_summary hand = a;
    hand.var = -1;
    cr_expect_eq(stats_welch(&hand, &b, STATS_DIFF_ABSOLUTE, 0.05, &r), ERR_INVAL);
    hand = a;
    hand.theta = 0.5; /* arms adjusted with different thetas */
    cr_expect_eq(stats_welch(&hand, &b, STATS_DIFF_ABSOLUTE, 0.05, &r), ERR_INVAL);
    cr_expect_eq(stats_ztest_prop(100, 101, 100, 5, STATS_DIFF_ABSOLUTE, 0.05, &r), ERR_INVAL);
    cr_expect_eq(stats_ztest_prop(-1, 0, 100, 5, STATS_DIFF_ABSOLUTE, 0.05, &r), ERR_INVAL);

    struct stats_cuped_sums ok = { 10, 1, 1, 1, 1, 1 }, nan = { 10, NAN, 1, 1, 1, 1 };
    double theta;
    cr_expect_eq(stats_cuped_theta(&ok, &nan, &theta), ERR_INVAL);
    cr_expect_eq(stats_cuped_summary(&ok, NAN, &s), ERR_INVAL);
    cr_expect_eq(stats_cuped_pair(&ok, NULL, &a, &b), ERR_INVAL);
}

Test(stats, degenerate_data_is_neutral_not_an_error)
{
    struct stats_summary a, b;
    struct stats_result r;
    /* gbstats test_two_sided_ttest_missing_variance: an arm of 2 whose
     * sums give a negative variance */
    stats_summary_sums(2, 1396.87, 52377.9767, &a);
    stats_summary_sums(3461, 2422.7, 134698.29, &b);
    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &r), 0);
    cr_expect_not_null(r.undefined);
    cr_expect(r.p_value == 1 && r.estimate == 0 && r.ci_low == 0 && r.ci_high == 0);
    /* no conversions in control: zero variance (gbstats), and no relative lift */
    stats_summary_prop(500, 0, &a);
    stats_summary_prop(500, 7, &b);
    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, &r), 0);
    cr_expect_not_null(r.undefined);
    cr_assert_eq(stats_sequential(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, 5000, &r), 0);
    cr_expect_not_null(r.undefined);
    /* the pooled z-test still tests p_a = p_b there, but has no relative lift */
    cr_assert_eq(stats_ztest_prop(500, 0, 500, 7, STATS_DIFF_ABSOLUTE, 0.05, &r), 0);
    cr_expect_null(r.undefined);
    cr_expect(r.p_value > 0.005 && r.p_value < 0.01, "p = %g", r.p_value);
    cr_assert_eq(stats_ztest_prop(500, 0, 500, 7, STATS_DIFF_RELATIVE, 0.05, &r), 0);
    cr_expect_str_eq(r.undefined, "control mean is zero");
    cr_assert_eq(stats_ztest_prop(500, 0, 500, 0, STATS_DIFF_ABSOLUTE, 0.05, &r), 0);
    cr_expect_not_null(r.undefined);
    cr_assert_eq(stats_ztest_prop(0, 0, 500, 3, STATS_DIFF_ABSOLUTE, 0.05, &r), 0);
    cr_expect_not_null(r.undefined);
    /* a zero control mean on a metric with variance */
    stats_summary_sums(100, 0, 50, &a);
    stats_summary_sums(100, 10, 60, &b);
    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &r), 0);
    cr_expect_str_eq(r.undefined, "control mean is zero");
    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_ABSOLUTE, 0.05, &r), 0);
    cr_expect_null(r.undefined);
}

Test(stats, cuped_identities)
{
    /* without a covariate (all x = 0), CUPED is exactly the plain test */
    struct stats_cuped_sums ca = { 400, 1200, 5400, 0, 0, 0 }, cb = { 380, 1300, 6100, 0, 0, 0 };
    struct stats_summary a, b, pa, pb;
    struct stats_result r, plain;
    cr_assert_eq(stats_cuped_pair(&ca, &cb, &a, &b), 0);
    cr_expect_eq(a.theta, 0);
    stats_summary_sums(400, 1200, 5400, &pa);
    stats_summary_sums(380, 1300, 6100, &pb);
    for (int d = 0; d < 2; d++) {
        stats_welch(&a, &b, (enum stats_diff)d, 0.05, &r);
        stats_welch(&pa, &pb, (enum stats_diff)d, 0.05, &plain);
        cr_expect(r.estimate == plain.estimate && r.se == plain.se && r.p_value == plain.p_value);
    }
    /* x = y exactly: theta 1, the adjusted metric has no variance left */
    struct stats_cuped_sums xa = { 50, 100, 300, 100, 300, 300 };
    struct stats_cuped_sums xb = { 50, 120, 400, 120, 400, 400 };
    cr_assert_eq(stats_cuped_pair(&xa, &xb, &a, &b), 0);
    cr_expect(near(a.theta, 1, 1e-14, 0), "theta %.17g", a.theta);
    cr_expect(a.var < 1e-9 && b.var < 1e-9);
    /* relative lift divides by the unadjusted control mean (gbstats) */
    struct stats_cuped_sums ra = { 1000, 5000, 40000, 4000, 30000, 25000 };
    struct stats_cuped_sums rb = { 1000, 5600, 45000, 4100, 31000, 27000 };
    cr_assert_eq(stats_cuped_pair(&ra, &rb, &a, &b), 0);
    cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &r), 0);
    cr_expect(near(r.estimate, (b.mean - a.mean) / 5.0, 1e-14, 0));
}

/* ---- power ---- */

Test(stats, power_calculator)
{
    /* docs/experiments.md: 5 % conversion, +10 % relative, alpha 0.05, 80 % power */
    struct stats_power q = {
        .mean = 0.05, .var = 0.05 * 0.95, .mde = 0.10, .alpha = 0.05, .power = 0.8
    };
    double n, n_seq, n90;
    cr_assert_eq(stats_power_sample_size(&q, &n), 0);
    cr_expect_eq(n, 32958);
    cr_expect(stats_power_at(&q, n) >= 0.8 && stats_power_at(&q, n - 1) < 0.8);
    q.power = 0.9;
    cr_assert_eq(stats_power_sample_size(&q, &n90), 0);
    cr_expect(n90 > n);
    q.power = 0.8;
    q.tuning = 2 * n; /* always-valid intervals cost sample */
    cr_assert_eq(stats_power_sample_size(&q, &n_seq), 0);
    cr_expect(n_seq > n, "sequential %g vs fixed %g", n_seq, n);
    cr_expect(stats_power_at(&q, n_seq) >= 0.8 && stats_power_at(&q, n_seq - 1) < 0.8);
    /* a mean metric (docs): revenue 20 with sd 60, +5 %; closed form 59408.3 */
    struct stats_power m = { .mean = 20, .var = 3600, .mde = 0.05, .alpha = 0.05, .power = 0.8 };
    cr_assert_eq(stats_power_sample_size(&m, &n), 0);
    cr_expect_eq(n, 59409);
    /* impossible or invalid questions */
    m.mde = 1e-9;
    cr_expect_eq(stats_power_sample_size(&m, &n), ERR_TOOBIG);
    m.mde = 0;
    cr_expect_eq(stats_power_sample_size(&m, &n), ERR_INVAL);
    cr_expect(isnan(stats_power_at(&m, 100)));
    m.mde = 0.05;
    m.power = 0.04; /* below alpha: any n, even 0, has that */
    cr_expect_eq(stats_power_sample_size(&m, &n), ERR_INVAL);
    m.power = 0.8;
    m.mean = 0;
    cr_expect_eq(stats_power_sample_size(&m, &n), ERR_INVAL);

    double days;
    cr_assert_eq(stats_days_needed(32958, 12000, 1500, &days), 0);
    cr_expect_eq(days, 14); /* 20958 / 1500 = 13.97 */
    cr_assert_eq(stats_days_needed(32958, 40000, 1500, &days), 0);
    cr_expect_eq(days, 0);
    cr_assert_eq(stats_days_needed(32958, 100, 0, &days), 0);
    cr_expect(isinf(days));
    cr_expect_eq(stats_days_needed(-1, 0, 10, &days), ERR_INVAL);
    cr_expect_eq(stats_days_needed(10, 0, NAN, &days), ERR_INVAL);
}

/* ---- threads: no shared state ---- */

struct thread_job {
    unsigned seed;
    double sum;
};

static void *thread_work(void *arg)
{
    struct thread_job *j = arg;
    struct rng r = { j->seed };
    for (int i = 0; i < 2000; i++) {
        struct stats_summary a, b;
        struct stats_result w;
        stats_summary_sums(100 + i, 50.0 * (100 + i), 2600.0 * (100 + i), &a);
        stats_summary_sums(120 + i, 51.0 * (120 + i), 2700.0 * (120 + i), &b);
        stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &w);
        j->sum += w.p_value + w.ci_low + stats_t_ppf(rng_unit(&r), 1 + i % 50) +
                  stats_chi2_sf(rng_uniform(&r, 0, 30), 1 + i % 7);
    }
    return NULL;
}

Test(stats, concurrent_callers_agree)
{
    enum { T = 4 };
    struct thread_job solo = { 99, 0 }, jobs[T];
    thread_work(&solo);
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        jobs[i] = (struct thread_job){ 99, 0 };
        cr_assert_eq(pthread_create(&th[i], NULL, thread_work, &jobs[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(jobs[i].sum, solo.sum, "thread %d: %.17g vs %.17g", i, jobs[i].sum, solo.sum);
    }
}

/* ---- sequential testing: A/A experiments read every day ---- */

struct peeking {
    double p_a, p_b;   /* true conversion rates */
    int sims, days, per_day;
    double tuning;
    int fixed_hits;    /* experiments the fixed-horizon test ever called */
    int seq_hits;      /* ... the sequential test ever called */
    int seq_misses;    /* experiments whose sequential CI ever excluded the true lift */
};

/* Simulate `sims` experiments of `days` days with `per_day` customers per
 * arm per day, Bernoulli conversions, and read both tests after every day
 * (relative lift, alpha 0.05). */
static void simulate(struct peeking *pk, uint64_t seed)
{
    struct rng r = { seed };
    double truth = (pk->p_b - pk->p_a) / pk->p_a;
    /* integer thresholds: u < p  <=>  next >> 11 < p 2^53 */
    uint64_t ta = (uint64_t)(pk->p_a * 0x1.0p53), tb = (uint64_t)(pk->p_b * 0x1.0p53);
    for (int s = 0; s < pk->sims; s++) {
        double xa = 0, xb = 0, n = 0;
        int fixed = 0, seq = 0, miss = 0;
        for (int d = 0; d < pk->days; d++) {
            for (int u = 0; u < pk->per_day; u++) {
                xa += (rng_next(&r) >> 11) < ta;
                xb += (rng_next(&r) >> 11) < tb;
            }
            n += pk->per_day;
            struct stats_summary a, b;
            struct stats_result f, q;
            stats_summary_prop(n, xa, &a);
            stats_summary_prop(n, xb, &b);
            cr_assert_eq(stats_welch(&a, &b, STATS_DIFF_RELATIVE, 0.05, &f), 0);
            cr_assert_eq(stats_sequential(&a, &b, STATS_DIFF_RELATIVE, 0.05, pk->tuning, &q), 0);
            if (f.undefined || q.undefined)
                continue; /* day one without conversions in an arm */
            fixed |= f.p_value < 0.05;
            seq |= q.p_value < 0.05;
            /* the always-valid p-value and interval agree */
            cr_assert_eq(q.p_value < 0.05, q.ci_low > 0 || q.ci_high < 0, "p %g ci [%g, %g]",
                         q.p_value, q.ci_low, q.ci_high);
            miss |= truth < q.ci_low || truth > q.ci_high;
        }
        pk->fixed_hits += fixed;
        pk->seq_hits += seq;
        pk->seq_misses += miss;
    }
}

/* alpha plus a one-sided 99.9 % binomial margin for `sims` experiments */
static double fp_bound(double alpha, int sims)
{
    return alpha + stats_norm_ppf(0.999) * sqrt(alpha * (1 - alpha) / sims);
}

Test(stats, aa_peeking_daily_keeps_sequential_at_alpha)
{
    struct peeking pk = { .p_a = 0.10, .p_b = 0.10, .sims = 2000, .days = 20, .per_day = 100,
                          .tuning = 4000 };
    simulate(&pk, 7);
    double bound = fp_bound(0.05, pk.sims);
    double seq = (double)pk.seq_hits / pk.sims, fixed = (double)pk.fixed_hits / pk.sims;
    cr_log_info("A/A, 20 daily peeks, %d experiments: fixed-horizon %.4f, sequential %.4f, "
                "bound %.4f",
                pk.sims, fixed, seq, bound);
    cr_expect(seq <= bound, "sequential false-positive rate %.4f > %.4f", seq, bound);
    /* the same peeking breaks the plain test, so this setting can tell */
    cr_expect(fixed > bound, "fixed-horizon rate %.4f did not exceed %.4f under peeking", fixed,
              bound);
}

Test(stats, sequential_interval_covers_a_real_lift_and_finds_it)
{
    /* +50 % on a 10 % rate: the always-valid interval must hold the true
     * lift on every day in >= 95 % of experiments (margin as above), and
     * still detect the lift in most of them by day 20 */
    struct peeking pk = { .p_a = 0.10, .p_b = 0.15, .sims = 1000, .days = 20, .per_day = 100,
                          .tuning = 4000 };
    simulate(&pk, 11);
    double miss = (double)pk.seq_misses / pk.sims, power = (double)pk.seq_hits / pk.sims;
    cr_log_info("+50%%, 20 daily peeks: sequential interval missed the truth in %.4f, "
                "detected %.4f",
                miss, power);
    cr_expect(miss <= fp_bound(0.05, pk.sims), "coverage failure rate %.4f", miss);
    cr_expect(power >= 0.8, "sequential test found the lift in only %.4f", power);
}
