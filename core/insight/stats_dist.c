/*
 * stats_dist.c — the distributions stats.c tests with: normal, Student t
 * (non-integer dof), chi-square, and the regularized incomplete beta and
 * gamma functions under them.
 *
 * Accuracy is the point: an experiment's p-value is read down to 1e-12
 * and compared across tools, so every upper tail is computed as itself
 * rather than as 1 - cdf, and the power terms x^a (1-x)^b / B(a, b) and
 * x^a e^-x / Gamma(a) avoid the cancellation a naive lgamma difference
 * suffers at large a (a Welch test on a million customers has dof ~ 1e6,
 * where lgamma(a) - lgamma(a + 1/2) loses nine digits): they use
 * Stirling's series for the log-gamma remainder and log1p(t) - t.  The
 * continued fractions are Lentz's method on the standard expansions
 * (DLMF 8.17.22 for the beta, 8.9.2 for the gamma).  tests/unit/test_stats.c
 * checks all of it against scipy.
 *
 * No globals: lgamma_r rather than lgamma (which writes `signgam`).
 */
#include "insight/stats.h"

#include <float.h>
#include <math.h>

#define LN_SQRT_2PI 0.91893853320467274178032973640562 /* ln sqrt(2 pi) */
#define TINY 1e-300
#define EPS 1e-16

static double lgam(double x)
{
    int sign;
    return lgamma_r(x, &sign);
}

/* Stirling remainder: lgamma(z) = (z - 1/2) ln z - z + ln sqrt(2 pi) + delta(z),
 * seven Bernoulli terms, |error| < 1e-15 for z >= 10. */
static double lgam_delta(double z)
{
    double r = 1.0 / z, r2 = r * r;
    return r * (1.0 / 12 -
                r2 * (1.0 / 360 -
                      r2 * (1.0 / 1260 -
                            r2 * (1.0 / 1680 -
                                  r2 * (1.0 / 1188 - r2 * (691.0 / 360360 - r2 * (1.0 / 156)))))));
}

/* log(1 + t) - t without cancellation for small t.  With s = t / (2 + t),
 * log1p(t) = 2 atanh(s) = 2 (s + s^3/3 + ...) and t - 2 s = s t, so
 * log1p(t) - t = -s t + 2 (s^3/3 + s^5/5 + ...); |s| <= 1/3 here. */
static double log1pmx(double t)
{
    if (t <= -1)
        return t == -1 ? -INFINITY : NAN;
    if (fabs(t) > 0.5)
        return log1p(t) - t;
    double s = t / (2 + t), s2 = s * s, term = s * s2, sum = 0;
    for (int k = 3; k < 80; k += 2) {
        double add = term / k;
        sum += add;
        if (fabs(add) <= EPS * fabs(sum))
            break;
        term *= s2;
    }
    return -s * t + 2 * sum;
}

/* ln B(a, b), with the large arguments' lgamma difference done by Stirling. */
static double lbeta(double a, double b)
{
    if (a < b) {
        double t = a;
        a = b;
        b = t;
    }
    if (a < 10)
        return lgam(a) + lgam(b) - lgam(a + b);
    double c = a + b;
    if (b >= 10)
        return LN_SQRT_2PI + (a - 0.5) * log1p(-b / c) + b * log(b / c) - 0.5 * log(b) +
               lgam_delta(a) + lgam_delta(b) - lgam_delta(c);
    /* lgamma(a + b) - lgamma(a) = a ln(c/a) + (b - 1/2) ln c + ln(a)/2 - b + delta(c) - delta(a) */
    double diff = a * log1p(b / a) + (b - 0.5) * log(c) + 0.5 * log(a) - b + lgam_delta(c) -
                  lgam_delta(a);
    return lgam(b) - diff;
}

/* a (ln(1 + u) - u) where ln(1 + u) = lv is also known directly: the
 * series when u is small, else the logarithm itself (1 + u computed from
 * a rounded u loses everything when u is near -1). */
static double a_log1pmx(double a, double u, double lv)
{
    return fabs(u) < 0.5 ? a * log1pmx(u) : a * lv - a * u;
}

/* ln( x^a y^b / B(a, b) ), y = 1 - x given separately for accuracy. */
static double ibeta_lpref(double a, double b, double x, double y)
{
    if (a < b && b >= 10) { /* symmetric: make a the large one */
        double t = a;
        a = b;
        b = t;
        t = x;
        x = y;
        y = t;
    }
    double lx = x > 0.5 ? log1p(-y) : log(x), ly = y > 0.5 ? log1p(-x) : log(y);
    if (a < 10)
        return a * lx + b * ly - lbeta(a, b);
    /* with c = a + b, ua = x c / a - 1 and ub = y c / b - 1 (a ua + b ub = 0) */
    double c = a + b, ua = (x * b - y * a) / a, lca = log1p(b / a);
    if (b >= 10) {
        /* a ln(x c/a) + b ln(y c/b) + ln sqrt(ab/c) - ln sqrt(2 pi) - delta
         * terms, the linear parts of the two logs (which cancel) removed */
        double ub = (y * a - x * b) / b;
        return a_log1pmx(a, ua, lx + lca) + a_log1pmx(b, ub, ly + log(c / b)) +
               0.5 * log(a / c * b) - LN_SQRT_2PI - lgam_delta(a) - lgam_delta(b) + lgam_delta(c);
    }
    /* a large, b small: a ln x + b ln y - lgamma(b) + [lgamma(c) - lgamma(a)],
     * Stirling for the bracket; a ln(x c/a) - b = a (ln(1+ua) - ua) - y c */
    return a_log1pmx(a, ua, lx + lca) - y * c + b * (ly + log(c)) + 0.5 * log(a / c) - lgam(b) +
           lgam_delta(c) - lgam_delta(a);
}

/* Modified Lentz evaluation of 1 + c1/(1 + c2/(1 + ...)) with
 * c_k = coef(a, b, v, k), for the two continued fractions below. */
typedef double (*cf_coef)(double a, double b, double v, int k);

static double lentz(cf_coef coef, double a, double b, double v)
{
    double f = 1, c = 1, d = 0;
    for (int k = 1; k < 2000000; k++) {
        double an = coef(a, b, v, k);
        d = 1 + an * d;
        if (fabs(d) < TINY)
            d = TINY;
        d = 1 / d;
        c = 1 + an / c;
        if (fabs(c) < TINY)
            c = TINY;
        double del = c * d;
        f *= del;
        if (fabs(del - 1) < EPS)
            break;
    }
    return f;
}

/* I_x(a, b) = x^a y^b / (a B(a, b)) / (1 + d1/(1 + d2/(1 + ...))) with
 * d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)), d_{2m} = m(b-m) x / ((a+2m-1)(a+2m))
 * (DLMF 8.17.22).  Converges fast for x < (a+1)/(a+b+2). */
static double cf_x(double a, double b, double x, int k)
{
    int m = k / 2;
    if (k % 2)
        return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
    return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
}

/* The same function in z = x / (1 - x):
 * I_x(a, b) = x^a y^(b-1) / (a B(a, b)) / (1 + e1/(1 + e2/(1 + ...))) with
 * e_{2m+1} = -z (a+m)(b-1-m) / ((a+2m)(a+2m+1)), e_{2m+2} = z (m+1)(a+b+m) / ((a+2m+1)(a+2m+2))
 * (the expansion Cephes' incbd uses).  Used when x is near 1: the first
 * fraction then depends on x through 1 - (a+b) x / (a+1) and a rounded x
 * costs a relative error of about a * eps (1e-10 at a = 1e6, a Welch test
 * on a million units); z comes from the exact y instead. */
static double cf_z(double a, double b, double z, int k)
{
    int m = (k - 1) / 2;
    if (k % 2)
        return -z * (a + m) * (b - 1 - m) / ((a + 2 * m) * (a + 2 * m + 1));
    return z * (m + 1) * (a + b + m) / ((a + 2 * m + 1) * (a + 2 * m + 2));
}

/* I_x(a, b) for x < (a+1)/(a+b+2), where it is the smaller side. */
static double ibeta_direct(double a, double b, double x, double y)
{
    double lp = ibeta_lpref(a, b, x, y);
    if (x <= 0.5)
        return exp(lp) / (a * lentz(cf_x, a, b, x));
    return exp(lp) / (a * y * lentz(cf_z, a, b, x / y));
}

/* I_x(a, b) and 1 - I_x(a, b), y = 1 - x; the continued fraction runs on
 * the side where it converges and yields the smaller of the two. */
static void ibeta_pair(double a, double b, double x, double y, double *ix, double *iy)
{
    if (x <= 0) {
        *ix = 0;
        *iy = 1;
        return;
    }
    if (y <= 0) {
        *ix = 1;
        *iy = 0;
        return;
    }
    if (x < (a + 1) / (a + b + 2)) {
        *ix = ibeta_direct(a, b, x, y);
        *iy = 1 - *ix;
    } else {
        *iy = ibeta_direct(b, a, y, x);
        *ix = 1 - *iy;
    }
}

double stats_ibeta(double a, double b, double x)
{
    if (!(a > 0) || !(b > 0) || !(x >= 0 && x <= 1))
        return NAN;
    double ix, iy;
    ibeta_pair(a, b, x, 1 - x, &ix, &iy);
    return ix;
}

double stats_ibetac(double a, double b, double x)
{
    if (!(a > 0) || !(b > 0) || !(x >= 0 && x <= 1))
        return NAN;
    double ix, iy;
    ibeta_pair(a, b, x, 1 - x, &ix, &iy);
    return iy;
}

/* ln( x^a e^-x / Gamma(a) ) */
static double igamma_lpref(double a, double x)
{
    if (a < 10)
        return a * log(x) - x - lgam(a);
    /* a ln(x/a) - (x - a) + ln sqrt(a / 2 pi) - delta(a) */
    return a_log1pmx(a, (x - a) / a, log(x / a)) + 0.5 * log(a) - LN_SQRT_2PI - lgam_delta(a);
}

/* P(a, x) and Q(a, x): series for x < a + 1, else Legendre's continued
 * fraction for Q. */
static void igamma_pair(double a, double x, double *p, double *q)
{
    if (x <= 0) {
        *p = 0;
        *q = 1;
        return;
    }
    if (isinf(x)) {
        *p = 1;
        *q = 0;
        return;
    }
    double lpref = igamma_lpref(a, x);
    if (x < a + 1) {
        double ap = a, term = 1 / a, sum = term;
        for (int n = 0; n < 1000000; n++) {
            ap += 1;
            term *= x / ap;
            sum += term;
            if (fabs(term) < fabs(sum) * EPS)
                break;
        }
        *p = exp(lpref) * sum;
        *q = 1 - *p;
    } else {
        double b = x + 1 - a, c = 1 / TINY, d = 1 / b, h = d;
        for (int i = 1; i < 1000000; i++) {
            double an = -i * (i - a);
            b += 2;
            d = an * d + b;
            if (fabs(d) < TINY)
                d = TINY;
            c = b + an / c;
            if (fabs(c) < TINY)
                c = TINY;
            d = 1 / d;
            double del = d * c;
            h *= del;
            if (fabs(del - 1) < EPS)
                break;
        }
        *q = exp(lpref) * h;
        *p = 1 - *q;
    }
}

double stats_gamma_p(double a, double x)
{
    if (!(a > 0) || !(x >= 0))
        return NAN;
    double p, q;
    igamma_pair(a, x, &p, &q);
    return p;
}

double stats_gamma_q(double a, double x)
{
    if (!(a > 0) || !(x >= 0))
        return NAN;
    double p, q;
    igamma_pair(a, x, &p, &q);
    return q;
}

double stats_chi2_cdf(double x, double dof)
{
    if (isnan(x) || !(dof > 0))
        return NAN;
    return x <= 0 ? 0 : stats_gamma_p(dof / 2, x / 2);
}

double stats_chi2_sf(double x, double dof)
{
    if (isnan(x) || !(dof > 0))
        return NAN;
    return x <= 0 ? 1 : stats_gamma_q(dof / 2, x / 2);
}

/* ---- normal ---- */

double stats_norm_pdf(double x)
{
    return exp(-0.5 * x * x - LN_SQRT_2PI);
}

double stats_norm_cdf(double x)
{
    return 0.5 * erfc(-x * M_SQRT1_2);
}

double stats_norm_sf(double x)
{
    return 0.5 * erfc(x * M_SQRT1_2);
}

/* z >= 0 with 1 - Phi(z) = q, 0 < q <= 0.5.  Start from Abramowitz &
 * Stegun 26.2.23 (|error| < 4.5e-4), then Halley steps on sf(z) - q,
 * which converge cubically (two or three steps to full precision).
 * Below DBL_MIN the density underflows, so there the steps use the
 * asymptotic log tail instead. */
static double norm_upper_quantile(double q)
{
    if (q == 0.5)
        return 0;
    double t = sqrt(-2 * log(q));
    double z = t - (2.515517 + t * (0.802853 + t * 0.010328)) /
                       (1 + t * (1.432788 + t * (0.189269 + t * 0.001308)));
    if (q < 1e-300) {
        /* ln sf(z) ~ -z^2/2 - ln(z sqrt(2 pi)) + ln(1 - 1/z^2 + 3/z^4) */
        double lq = log(q);
        for (int i = 0; i < 50; i++) {
            double z2 = z * z;
            double g = -0.5 * z2 - log(z) - LN_SQRT_2PI + log1p((-1 + 3 / z2) / z2) - lq;
            double dg = -z - 1 / z; /* derivative of the leading terms */
            double step = g / dg;
            z -= step;
            if (fabs(step) < 1e-15 * z)
                break;
        }
        return z;
    }
    for (int i = 0; i < 10; i++) {
        double pdf = stats_norm_pdf(z);
        if (!(pdf > 0))
            break;
        double u = (stats_norm_sf(z) - q) / pdf;
        double step = u / (1 - 0.5 * u * z);
        z += step;
        if (fabs(step) <= 1e-15 * fabs(z) + 1e-300)
            break;
    }
    return z;
}

double stats_norm_ppf(double p)
{
    if (!(p >= 0 && p <= 1))
        return NAN;
    if (p == 0)
        return -INFINITY;
    if (p == 1)
        return INFINITY;
    if (p <= 0.5)
        return -norm_upper_quantile(p);
    return norm_upper_quantile(1 - p); /* exact for p >= 0.5 */
}

/* ---- Student t ---- */

double stats_t_pdf(double x, double dof)
{
    if (isnan(x) || !(dof > 0))
        return NAN;
    if (isinf(dof))
        return stats_norm_pdf(x);
    return exp(-0.5 * (dof + 1) * log1p(x * x / dof) - 0.5 * log(dof) - lbeta(0.5 * dof, 0.5));
}

/* P(T > |x|) as 0.5 I_w(dof/2, 1/2), w = dof / (dof + x^2); also the
 * central part P(|T| < |x|) / 2. */
static void t_tails(double x, double dof, double *upper, double *central)
{
    double ax = fabs(x), w, y;
    if (ax > 1e150) { /* x^2 would overflow */
        w = dof / ax / ax;
        y = 1;
    } else {
        double x2 = ax * ax;
        w = dof / (dof + x2);
        y = x2 / (dof + x2);
    }
    double iw, iy;
    ibeta_pair(0.5 * dof, 0.5, w, y, &iw, &iy);
    *upper = 0.5 * iw;
    *central = 0.5 * iy;
}

double stats_t_sf(double x, double dof)
{
    if (isnan(x) || !(dof > 0))
        return NAN;
    if (isinf(dof))
        return stats_norm_sf(x);
    if (x == 0)
        return 0.5;
    double up, mid;
    t_tails(x, dof, &up, &mid);
    return x > 0 ? up : 0.5 + mid;
}

double stats_t_cdf(double x, double dof)
{
    if (isnan(x) || !(dof > 0))
        return NAN;
    if (isinf(dof))
        return stats_norm_cdf(x);
    if (x == 0)
        return 0.5;
    double up, mid;
    t_tails(x, dof, &up, &mid);
    return x < 0 ? up : 0.5 + mid;
}

/* x > 0 with P(T > x) = q, 0 < q < 0.5.  Newton on ln sf (well shaped in
 * both the light and the heavy tails) inside a bracket that bisection
 * falls back to, so it cannot wander off for small dof. */
static double t_upper_quantile(double q, double dof)
{
    double z = norm_upper_quantile(q), z2 = z * z;
    /* Cornish–Fisher start; good for dof >= 3, only a start below */
    double x = z + z * (z2 + 1) / (4 * dof) + z * (5 * z2 * z2 + 16 * z2 + 3) / (96 * dof * dof);
    if (!(x > 0) || !isfinite(x))
        x = 1;
    double lo = 0, hi = INFINITY, lq = log(q);
    for (int i = 0; i < 400; i++) {
        double sf = stats_t_sf(x, dof);
        if (sf > q)
            lo = x;
        else
            hi = x;
        if (sf == q)
            return x;
        double pdf = stats_t_pdf(x, dof);
        double nx = x + (log(sf) - lq) * sf / pdf;
        if (!(nx > lo && nx < hi)) /* outside the bracket: widen or bisect */
            nx = isinf(hi) ? 2 * x : (lo > 0 ? sqrt(lo * hi) : 0.5 * hi);
        if (isinf(nx))
            return nx;
        if (fabs(nx - x) <= 4 * DBL_EPSILON * nx) {
            x = nx;
            break;
        }
        x = nx;
    }
    return x;
}

double stats_t_ppf(double p, double dof)
{
    if (!(p >= 0 && p <= 1) || !(dof > 0))
        return NAN;
    if (isinf(dof))
        return stats_norm_ppf(p);
    if (p == 0)
        return -INFINITY;
    if (p == 1)
        return INFINITY;
    if (p == 0.5)
        return 0;
    if (p < 0.5)
        return -t_upper_quantile(p, dof);
    return t_upper_quantile(1 - p, dof);
}
