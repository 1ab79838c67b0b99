#!/usr/bin/python3
"""stats_ref.py — independent reference values for tests/unit/test_stats.c.

    /usr/bin/python3 tests/unit/stats_ref.py IN OUT

Reads the cases test_stats.c generated (one per line, "kind args...";
a "cuped" case is followed by its raw rows) and writes one line per case
with the values scipy computes, as Python float reprs, in the same order.
Run with Debian's python3 (python3-scipy); statsmodels is not needed:
the z-test, the relative (delta-method) Welch test and Holm are written
out here from their textbook definitions, on scipy's distributions.

Kinds and the values written:
  norm x                     norm.cdf(x) norm.sf(x)
  normppf p                  norm.ppf(p)
  t x dof                    t.cdf(x, dof) t.sf(x, dof)
  tppf p dof                 t.ppf(p, dof) and t_quantile(p, dof)
  chi2 x dof                 chi2.sf(x, dof)
  welch nA sA ssA nB sB ssB alpha
                             t p dof ci_low ci_high   (ttest_ind_from_stats,
                             equal_var=False; absolute difference B - A)
  welchrel (same args)       d se p dof ci_low ci_high (relative lift, delta method)
  prop nA xA nB xB alpha     t p dof ci_low ci_high   (Welch on p(1-p), as gbstats)
  ztest nA xA nB xB alpha    z p d se ci_low ci_high  (pooled z; unpooled Wald CI)
  srm k c1..ck w1..wk        chi2 p                   (chisquare over arms with w > 0)
  cuped nA nB alpha + rows   theta t p dof ci_low ci_high (Welch on y - theta x)
  bayes mean sd alpha        chance ci_low ci_high risk_control risk_variant
  holm k p1..pk              adjusted p's
  power mean var mde alpha n target
                             power(n) power(n - 1) closed-form n, where
                             power(n) = P(reject) with n per arm and the
                             closed form is (z* + z_target)^2 Var / mde^2
"""
import math
import sys

import numpy as np
from scipy import optimize, special, stats


def t_quantile(p, dof):
    """t quantile by inverting scipy's t.sf with brentq.  scipy's own
    t.ppf (Cephes stdtri) is only good to ~1e-9 relative at non-integer
    dof (e.g. t.ppf(0.975, 39.16) is 4e-9 off), too coarse to judge
    intervals; its t.sf is accurate to ~1e-15, so invert that.  (t.sf(x,
    dof) is special.stdtr(dof, -x); called directly, without scipy.stats'
    argument handling, it is a hundred times faster.)"""
    if p == 0.5:
        return 0.0
    q = min(p, 1 - p)
    hi = 1.0
    while special.stdtr(dof, -hi) > q:
        hi *= 2
    x = optimize.brentq(lambda v: special.stdtr(dof, -v) - q, 0.0, hi, xtol=1e-300, rtol=1e-15,
                        maxiter=500)
    return -x if p < 0.5 else x


def welch_dof(va, na, vb, nb):
    qa, qb = va / na, vb / nb
    return (qa + qb) ** 2 / (qa * qa / (na - 1) + qb * qb / (nb - 1))


def mean_var(n, s, ss):
    return s / n, (ss - s * s / n) / (n - 1)


def t_ci(d, se, dof, alpha):
    h = t_quantile(1 - alpha / 2, dof) * se
    return d - h, d + h


def welch_abs(a, alpha):
    na, sa, ssa, nb, sb, ssb = a
    ma, va = mean_var(na, sa, ssa)
    mb, vb = mean_var(nb, sb, ssb)
    r = stats.ttest_ind_from_stats(mb, math.sqrt(vb), nb, ma, math.sqrt(va), na,
                                   equal_var=False)
    dof = welch_dof(va, na, vb, nb)
    lo, hi = t_ci(mb - ma, math.sqrt(va / na + vb / nb), dof, alpha)
    return [r.statistic, r.pvalue, dof, lo, hi]


def welch_rel(a, alpha):
    na, sa, ssa, nb, sb, ssb = a
    ma, va = mean_var(na, sa, ssa)
    mb, vb = mean_var(nb, sb, ssb)
    d = (mb - ma) / abs(ma)
    se = math.sqrt(vb / (nb * ma ** 2) + va * mb ** 2 / (na * ma ** 4))
    dof = welch_dof(va, na, vb, nb)
    p = 2 * stats.t.sf(abs(d / se), dof)
    lo, hi = t_ci(d, se, dof, alpha)
    return [d, se, p, dof, lo, hi]


def prop(a, alpha):
    na, xa, nb, xb = a
    pa, pb = xa / na, xb / nb
    va, vb = pa * (1 - pa), pb * (1 - pb)
    r = stats.ttest_ind_from_stats(pb, math.sqrt(vb), nb, pa, math.sqrt(va), na,
                                   equal_var=False)
    dof = welch_dof(va, na, vb, nb)
    lo, hi = t_ci(pb - pa, math.sqrt(va / na + vb / nb), dof, alpha)
    return [r.statistic, r.pvalue, dof, lo, hi]


def ztest(a, alpha):
    na, xa, nb, xb = a
    pa, pb, pool = xa / na, xb / nb, (xa + xb) / (na + nb)
    z = (pb - pa) / math.sqrt(pool * (1 - pool) * (1 / na + 1 / nb))
    p = 2 * stats.norm.sf(abs(z))
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    h = stats.norm.ppf(1 - alpha / 2) * se
    return [z, p, pb - pa, se, pb - pa - h, pb - pa + h]


def srm(a):
    k = int(a[0])
    c, w = a[1:1 + k], a[1 + k:1 + 2 * k]
    used = [(ci, wi) for ci, wi in zip(c, w) if wi > 0]
    tn, tw = sum(u[0] for u in used), sum(u[1] for u in used)
    r = stats.chisquare([u[0] for u in used], [u[1] / tw * tn for u in used])
    return [r.statistic, r.pvalue]


def cuped(na, nb, alpha, rows):
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    adj = y - theta * x
    a, b = adj[:na], adj[na:]
    r = stats.ttest_ind(b, a, equal_var=False)
    va, vb = np.var(a, ddof=1), np.var(b, ddof=1)
    dof = welch_dof(va, na, vb, nb)
    lo, hi = t_ci(b.mean() - a.mean(), math.sqrt(va / na + vb / nb), dof, alpha)
    return [theta, r.statistic, r.pvalue, dof, lo, hi]


def bayes(mu, sd, alpha):
    # as gbstats: chance = P(N(mu, sd) > 0); risk from truncated-normal means
    chance = stats.norm.sf(0, mu, sd)
    lo, hi = stats.norm.ppf([alpha / 2, 1 - alpha / 2], mu, sd)
    p_neg = stats.norm.cdf(0, mu, sd)
    mn_pos = stats.truncnorm.mean((0 - mu) / sd, np.inf, loc=mu, scale=sd)
    mn_neg = stats.truncnorm.mean(-np.inf, (0 - mu) / sd, loc=mu, scale=sd)
    return [chance, lo, hi, (1 - p_neg) * mn_pos, -p_neg * mn_neg]


def holm(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, (m - rank) * p[i])
        adj[i] = min(1.0, run)
    return adj


def power(mean, var, mde, alpha, n):
    zs = stats.norm.ppf(1 - alpha / 2)
    se = math.sqrt(var * (1 + (1 + mde) ** 2) / (n * mean ** 2))
    return stats.norm.sf(zs - mde / se) + stats.norm.cdf(-zs - mde / se)


def power_closed(mean, var, mde, alpha, target):
    # textbook sample size, ignoring the far tail's tiny share of the power
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
    return z * z * var * (1 + (1 + mde) ** 2) / (mde * mde * mean * mean)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        lines = f.read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        parts = lines[i].split()
        i += 1
        if not parts:
            continue
        kind, a = parts[0], [float(v) for v in parts[1:]]
        if kind == "norm":
            v = [stats.norm.cdf(a[0]), stats.norm.sf(a[0])]
        elif kind == "normppf":
            v = [stats.norm.ppf(a[0])]
        elif kind == "t":
            v = [stats.t.cdf(a[0], a[1]), stats.t.sf(a[0], a[1])]
        elif kind == "tppf":
            v = [stats.t.ppf(a[0], a[1]), t_quantile(a[0], a[1])]
        elif kind == "chi2":
            v = [stats.chi2.sf(a[0], a[1])]
        elif kind == "welch":
            v = welch_abs(a[:6], a[6])
        elif kind == "welchrel":
            v = welch_rel(a[:6], a[6])
        elif kind == "prop":
            v = prop(a[:4], a[4])
        elif kind == "ztest":
            v = ztest(a[:4], a[4])
        elif kind == "srm":
            v = srm(a)
        elif kind == "cuped":
            na, nb = int(a[0]), int(a[1])
            rows = [[float(t) for t in lines[i + j].split()] for j in range(na + nb)]
            i += na + nb
            v = cuped(na, nb, a[2], rows)
        elif kind == "bayes":
            v = bayes(a[0], a[1], a[2])
        elif kind == "holm":
            v = holm(a[1:1 + int(a[0])])
        elif kind == "power":
            mean, var, mde, alpha, n, target = a
            v = [power(mean, var, mde, alpha, n),
                 power(mean, var, mde, alpha, n - 1) if n > 1 else 0.0,
                 power_closed(mean, var, mde, alpha, target)]
        else:
            raise SystemExit("stats_ref.py: unknown case kind %r" % kind)
        out.append(" ".join(repr(float(x)) for x in v))
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
