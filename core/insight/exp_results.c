/*
 * exp_results.c — experiment results from exposures and journeys: the
 * per-arm sufficient statistics, the tests, SRM, holdout lift, power and
 * the recommendation (see exp_results.h).
 *
 * Why sufficient statistics: each exposed customer contributes y (after
 * exposure), x (before) and their squares and product to their arm's
 * sums; insight/stats.h needs nothing else, so a results query holds a few
 * numbers per arm and metric whatever the number of customers.
 */
#include "insight/exp_results.h"
#include "insight/events_log.h"
#include "insight/stats.h"
#include "engine/experiments.h"
#include "base/err.h"
#include "base/tz.h"
#include "store/store.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXM (2 + 1 + EXPERIMENTS_MAX_GUARDRAILS) /* conversion, revenue, primary, guardrails */
#define MAXARM (EXPERIMENTS_MAX_VARIANTS + 1)     /* variants, then the holdout */

struct msum {
    double sy, syy, sx, sxx, sxy, pos; /* pos: customers with y > 0 */
};

struct arm {
    double n;
    struct msum m[MAXM];
};

struct mdesc {
    struct experiments_metric m;
    int binary;
    const char *role; /* "primary", "secondary", "guardrail" */
};

struct ctx {
    const struct experiments_def *d;
    struct store_txn *t;
    int64_t end_ms, pre_ms;
    struct mdesc ms[MAXM];
    int nm;
    struct arm arms[MAXARM];
    long unknown; /* exposures naming a variant the definition no longer has */
    int64_t first_ms;
    /* one customer's journey */
    int64_t exp_ms;
    double y[MAXM], x[MAXM];
};

/* ---------------------------------------------------------------------- */
/* collecting                                                             */

static int in_campaigns(const struct experiments_def *d, const char *camp)
{
    for (int i = 0; i < d->ncampaigns; i++)
        if (!strcmp(d->campaigns[i], camp))
            return 1;
    return 0;
}

static double metric_value(const struct ctx *c, const struct experiments_metric *m,
                           const struct events_log_rec *e)
{
    switch (m->kind) {
    case EXPM_CONVERSION:
        return e->kind == EVENTS_CONVERSION;
    case EXPM_REVENUE:
        return e->kind == EVENTS_CONVERSION ? e->revenue : 0;
    case EXPM_CLICK:
        return e->kind == EVENTS_CLICK && in_campaigns(c->d, e->campaign);
    case EXPM_EVENT:
        return e->kind == EVENTS_CUSTOM && !strcmp(e->type, m->event);
    }
    return 0;
}

static int event_cb(void *ud, const struct events_log_rec *e)
{
    struct ctx *c = ud;
    if (e->ts_ms >= c->end_ms)
        return 1;
    int post = e->ts_ms >= c->exp_ms;
    for (int i = 0; i < c->nm; i++) {
        double v = metric_value(c, &c->ms[i].m, e);
        if (!v)
            continue;
        if (post)
            c->y[i] += v;
        else
            c->x[i] += v;
    }
    return 0;
}

static int exposure_cb(void *ud, const struct experiments_exposure *x)
{
    struct ctx *c = ud;
    if (x->ts_ms >= c->end_ms)
        return 0;
    int a = !strcmp(x->variant, EXPERIMENTS_HOLDOUT) ? c->d->nvariants
                                                      : experiments_variant_index(c->d, x->variant);
    if (a < 0) {
        c->unknown++;
        return 0;
    }
    if (!c->first_ms || x->ts_ms < c->first_ms)
        c->first_ms = x->ts_ms;
    memset(c->y, 0, sizeof c->y);
    memset(c->x, 0, sizeof c->x);
    c->exp_ms = x->ts_ms;
    int64_t from = c->d->cuped_days ? x->ts_ms - (int64_t)c->d->cuped_days * 86400000 : x->ts_ms;
    int rc = events_log_scan_customer(c->t, x->customer, from, NULL, event_cb, c);
    if (rc < 0)
        return rc;
    struct arm *ar = &c->arms[a];
    ar->n++;
    for (int i = 0; i < c->nm; i++) {
        double y = c->y[i], xx = c->x[i];
        if (c->ms[i].binary) {
            y = y > 0;
            xx = xx > 0;
        }
        struct msum *s = &ar->m[i];
        s->sy += y;
        s->syy += y * y;
        s->sx += xx;
        s->sxx += xx * xx;
        s->sxy += xx * y;
        s->pos += y > 0;
    }
    return 0;
}

static void add_metric(struct ctx *c, const struct experiments_metric *m, const char *role)
{
    for (int i = 0; i < c->nm; i++)
        if (!strcmp(c->ms[i].m.name, m->name)) {
            if (!strcmp(role, "primary"))
                c->ms[i].role = role;
            else if (!strcmp(role, "guardrail") && strcmp(c->ms[i].role, "primary")) {
                c->ms[i].role = role;
                c->ms[i].m.higher_is_better = m->higher_is_better;
            }
            return;
        }
    if (c->nm == MAXM)
        return;
    struct mdesc *md = &c->ms[c->nm++];
    md->m = *m;
    md->binary = m->kind != EXPM_REVENUE;
    md->role = role;
}

/* ---------------------------------------------------------------------- */
/* JSON helpers                                                           */

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* A count (customers, exposures): an integer in the JSON. */
static json_t *jcount(double x)
{
    return isfinite(x) ? json_integer((json_int_t)llround(x)) : json_null();
}

static double ratio(double a, double b) { return b > 0 ? a / b : NAN; }

static void set_num(json_t *o, const char *k, double x) { json_object_set_new(o, k, jnum(x)); }

static json_t *result_json(const struct stats_result *r, const char *stat_name)
{
    json_t *o = json_object();
    if (r->undefined) {
        json_object_set_new(o, "p_value", json_null());
        json_object_set_new(o, "undefined", json_string(r->undefined));
        return o;
    }
    set_num(o, "estimate", r->estimate);
    set_num(o, "ci_low", r->ci_low);
    set_num(o, "ci_high", r->ci_high);
    set_num(o, "se", r->se);
    set_num(o, "p_value", r->p_value);
    if (stat_name)
        set_num(o, stat_name, r->stat);
    if (isfinite(r->dof))
        set_num(o, "dof", r->dof);
    return o;
}

/* ---------------------------------------------------------------------- */
/* comparisons                                                            */

/* Summaries of arm a for metric i: plain (a rate's p(1-p) or a mean's
 * sample variance). */
static void plain_summary(const struct ctx *c, const struct arm *a, int i, struct stats_summary *s)
{
    const struct msum *m = &a->m[i];
    if (c->ms[i].binary)
        stats_summary_prop(a->n, m->pos, s);
    else
        stats_summary_sums(a->n, m->sy, m->syy, s);
}

static struct stats_cuped_sums cuped_sums(const struct arm *a, int i)
{
    const struct msum *m = &a->m[i];
    return (struct stats_cuped_sums){ a->n, m->sy, m->syy, m->sx, m->sxx, m->sxy };
}

/* One comparison of arm b against arm a for metric i.  Fills the JSON and
 * returns, for Holm and the decision, the fixed-horizon and sequential
 * p-values and the sequential interval. */
struct cmp_out {
    double p_fixed, p_seq, seq_lo, seq_hi, lift;
    int defined;
};

static json_t *compare(const struct ctx *c, const struct arm *a, const struct arm *b, int i,
                       struct cmp_out *co)
{
    const struct experiments_def *d = c->d;
    const struct mdesc *md = &c->ms[i];
    json_t *o = json_object();
    memset(co, 0, sizeof *co);
    co->p_fixed = co->p_seq = 1;
    co->lift = NAN;
    struct stats_summary sa, sb;
    plain_summary(c, a, i, &sa);
    plain_summary(c, b, i, &sb);
    struct stats_result rel, abs_, w;
    /* the lift: delta method (z-test's normal interval for rates, Welch's
     * t interval for means) */
    if (md->binary) {
        stats_ztest_prop(a->n, a->m[i].pos, b->n, b->m[i].pos, STATS_DIFF_RELATIVE, d->alpha, &rel);
        stats_ztest_prop(a->n, a->m[i].pos, b->n, b->m[i].pos, STATS_DIFF_ABSOLUTE, d->alpha,
                         &abs_);
        json_object_set_new(o, "ztest", result_json(&rel, "z"));
    } else {
        stats_welch(&sa, &sb, STATS_DIFF_RELATIVE, d->alpha, &rel);
        stats_welch(&sa, &sb, STATS_DIFF_ABSOLUTE, d->alpha, &abs_);
    }
    stats_welch(&sa, &sb, STATS_DIFF_RELATIVE, d->alpha, &w);
    json_object_set_new(o, "welch", result_json(&w, "t"));
    json_t *lift = json_object();
    set_num(lift, "estimate", rel.undefined ? NAN : rel.estimate);
    set_num(lift, "ci_low", rel.undefined ? NAN : rel.ci_low);
    set_num(lift, "ci_high", rel.undefined ? NAN : rel.ci_high);
    json_object_set_new(o, "lift", lift);
    json_t *diff = json_object();
    set_num(diff, "estimate", abs_.undefined ? NAN : abs_.estimate);
    set_num(diff, "ci_low", abs_.undefined ? NAN : abs_.ci_low);
    set_num(diff, "ci_high", abs_.undefined ? NAN : abs_.ci_high);
    json_object_set_new(o, "difference", diff);
    co->p_fixed = rel.undefined ? 1 : rel.p_value;
    co->lift = rel.undefined ? NAN : rel.estimate;
    co->defined = !rel.undefined;

    /* CUPED, when any customer of the two arms has a pre-exposure value */
    struct stats_summary da = sa, db = sb; /* what the decision tests use */
    if (d->cuped_days && (a->m[i].sxx > 0 || b->m[i].sxx > 0)) {
        struct stats_cuped_sums ca = cuped_sums(a, i), cb = cuped_sums(b, i);
        struct stats_summary xa, xb;
        struct stats_result cr;
        if (stats_cuped_pair(&ca, &cb, &xa, &xb) == 0 && xa.theta != 0 &&
            stats_welch(&xa, &xb, STATS_DIFF_RELATIVE, d->alpha, &cr) == 0) {
            json_t *cu = result_json(&cr, "t");
            set_num(cu, "theta", xa.theta);
            double raw = xa.var_raw + xb.var_raw, adj = xa.var + xb.var;
            set_num(cu, "variance_reduction", raw > 0 ? 1 - adj / raw : NAN);
            json_object_set_new(o, "cuped", cu);
            if (!cr.undefined) {
                da = xa;
                db = xb;
                co->p_fixed = cr.p_value;
                co->lift = cr.estimate;
                co->defined = 1;
            }
        } else {
            json_object_set_new(o, "cuped", json_null());
        }
    } else {
        json_object_set_new(o, "cuped", json_null());
    }

    struct stats_result sq;
    stats_sequential(&da, &db, STATS_DIFF_RELATIVE, d->alpha, d->seq_tuning, &sq);
    json_t *sj = result_json(&sq, NULL);
    set_num(sj, "tuning", d->seq_tuning);
    json_object_set_new(o, "sequential", sj);
    co->p_seq = sq.undefined ? 1 : sq.p_value;
    co->seq_lo = sq.undefined ? NAN : sq.ci_low;
    co->seq_hi = sq.undefined ? NAN : sq.ci_high;

    struct stats_bayes by;
    stats_bayes(&da, &db, STATS_DIFF_RELATIVE, d->alpha, NULL, &by);
    set_num(o, "chance_to_beat_control", md->m.higher_is_better ? by.chance_to_win
                                                                : 1 - by.chance_to_win);
    json_t *risk = json_object();
    set_num(risk, "control", by.risk_control);
    set_num(risk, "variant", by.risk_variant);
    json_object_set_new(o, "risk", risk);
    if (by.undefined)
        json_object_set_new(o, "bayes_undefined", json_string(by.undefined));
    return o;
}

/* Arm summary of metric i for the "arms" list. */
static json_t *arm_metric(const struct ctx *c, const char *id, const struct arm *a, int i)
{
    struct stats_summary s;
    plain_summary(c, a, i, &s);
    json_t *o = json_pack("{s:s,s:o}", "variant", id, "exposures", jcount(a->n));
    set_num(o, c->ms[i].binary ? "rate" : "mean", a->n > 0 ? s.mean : NAN);
    set_num(o, "variance", a->n > 1 || c->ms[i].binary ? s.var : NAN);
    if (c->ms[i].binary)
        json_object_set_new(o, "customers", jcount(a->m[i].pos));
    else
        set_num(o, "sum", a->m[i].sy);
    return o;
}

/* Metric i: arms, comparisons, Holm, the decision per variant. */
struct metric_verdict {
    int sig_good[EXPERIMENTS_MAX_VARIANTS], sig_bad[EXPERIMENTS_MAX_VARIANTS];
    double lift[EXPERIMENTS_MAX_VARIANTS];
};

static json_t *metric_json(const struct ctx *c, int i, int srm, struct metric_verdict *mv)
{
    const struct experiments_def *d = c->d;
    const struct mdesc *md = &c->ms[i];
    memset(mv, 0, sizeof *mv);
    json_t *o = json_object();
    json_object_set_new(o, "metric", json_string(md->m.name));
    json_object_set_new(o, "role", json_string(md->role));
    json_object_set_new(o, "kind", json_string(md->binary ? "rate" : "mean"));
    json_object_set_new(o, "higher_is_better", json_boolean(md->m.higher_is_better));
    json_t *arms = json_array();
    for (int v = 0; v < d->nvariants; v++)
        json_array_append_new(arms, arm_metric(c, d->variants[v], &c->arms[v], i));
    json_object_set_new(o, "arms", arms);
    int k = d->nvariants - 1;
    struct cmp_out co[EXPERIMENTS_MAX_VARIANTS];
    json_t *cmps[EXPERIMENTS_MAX_VARIANTS];
    for (int v = 1; v <= k; v++) {
        cmps[v] = compare(c, &c->arms[0], &c->arms[v], i, &co[v]);
        json_object_set_new(cmps[v], "variant", json_string(d->variants[v]));
    }
    double pf[EXPERIMENTS_MAX_VARIANTS], ps[EXPERIMENTS_MAX_VARIANTS];
    double af[EXPERIMENTS_MAX_VARIANTS], as[EXPERIMENTS_MAX_VARIANTS];
    for (int v = 1; v <= k; v++) {
        pf[v - 1] = co[v].p_fixed;
        ps[v - 1] = co[v].p_seq;
    }
    int holm = k > 1 && stats_holm(pf, (size_t)k, af) == 0 && stats_holm(ps, (size_t)k, as) == 0;
    json_t *list = json_array();
    for (int v = 1; v <= k; v++) {
        double p_dec = holm ? as[v - 1] : co[v].p_seq;
        if (holm) {
            json_t *h = json_object();
            set_num(h, "p_value", af[v - 1]);
            set_num(h, "sequential_p_value", as[v - 1]);
            json_object_set_new(cmps[v], "holm", h);
        }
        int enough = c->arms[0].n >= (double)d->min_sample && c->arms[v].n >= (double)d->min_sample;
        int sig = co[v].defined && p_dec < d->alpha && enough && !srm;
        int up = co[v].seq_lo > 0, down = co[v].seq_hi < 0;
        int good = md->m.higher_is_better ? up : down, badd = md->m.higher_is_better ? down : up;
        mv->sig_good[v] = sig && good;
        mv->sig_bad[v] = sig && badd;
        mv->lift[v] = co[v].lift;
        json_object_set_new(cmps[v], "significant", json_boolean(sig));
        json_object_set_new(cmps[v], "enough_sample", json_boolean(enough));
        if (!strcmp(md->role, "guardrail"))
            json_object_set_new(cmps[v], "regression", json_boolean(mv->sig_bad[v]));
        json_array_append_new(list, cmps[v]);
    }
    json_object_set_new(o, "comparisons", list);
    return o;
}

/* ---------------------------------------------------------------------- */
/* arms, SRM, holdout, power                                              */

static json_t *arm_json(const char *id, const struct arm *a, double weight)
{
    /* ms[0] is conversion_rate, ms[1] revenue_per_customer (added first) */
    struct stats_summary r;
    stats_summary_sums(a->n, a->m[1].sy, a->m[1].syy, &r);
    json_t *o = json_pack("{s:s,s:f,s:o,s:o}", "id", id, "weight", weight, "exposures",
                          jcount(a->n), "conversions", jcount(a->m[0].pos));
    set_num(o, "conversion_rate", ratio(a->m[0].pos, a->n));
    set_num(o, "revenue", a->m[1].sy);
    set_num(o, "revenue_per_customer", ratio(a->m[1].sy, a->n));
    set_num(o, "revenue_variance", a->n > 1 ? r.var : NAN);
    return o;
}

static json_t *srm_json(const struct ctx *c, struct stats_srm *s)
{
    const struct experiments_def *d = c->d;
    double counts[MAXARM], w[MAXARM];
    int n = d->nvariants;
    for (int v = 0; v < n; v++) {
        counts[v] = c->arms[v].n;
        w[v] = (1 - d->holdout) * d->weights[v];
    }
    if (d->holdout > 0) {
        counts[n] = c->arms[n].n;
        w[n] = d->holdout;
        n++;
    }
    memset(s, 0, sizeof *s);
    s->p_value = 1;
    stats_srm(counts, (size_t)n, w, (size_t)n, s);
    json_t *o = json_object();
    json_object_set_new(o, "mismatch", json_boolean(s->mismatch));
    set_num(o, "p_value", s->p_value);
    set_num(o, "chi2", s->chi2);
    set_num(o, "dof", s->dof);
    set_num(o, "threshold", STATS_SRM_ALPHA);
    double total = 0, wsum = 0;
    for (int i = 0; i < n; i++) {
        total += counts[i];
        wsum += w[i];
    }
    json_t *obs = json_object(), *exp = json_object();
    for (int i = 0; i < n; i++) {
        const char *id = i < d->nvariants ? d->variants[i] : EXPERIMENTS_HOLDOUT;
        json_object_set_new(obs, id, jcount(counts[i]));
        json_object_set_new(exp, id, jnum(wsum > 0 ? total * w[i] / wsum : NAN));
    }
    json_object_set_new(o, "observed", obs);
    json_object_set_new(o, "expected", exp);
    return o;
}

/* Treated (every variant pooled) against the held out. */
static json_t *holdout_json(const struct ctx *c)
{
    const struct experiments_def *d = c->d;
    const struct arm *h = &c->arms[d->nvariants];
    struct arm t;
    memset(&t, 0, sizeof t);
    for (int v = 0; v < d->nvariants; v++) {
        t.n += c->arms[v].n;
        for (int i = 0; i < c->nm; i++) {
            t.m[i].sy += c->arms[v].m[i].sy;
            t.m[i].syy += c->arms[v].m[i].syy;
            t.m[i].pos += c->arms[v].m[i].pos;
        }
    }
    json_t *o = arm_json(EXPERIMENTS_HOLDOUT, h, d->holdout);
    json_object_set_new(o, "treated", arm_json("treated", &t, 1 - d->holdout));
    struct stats_result r;
    stats_ztest_prop(h->n, h->m[0].pos, t.n, t.m[0].pos, STATS_DIFF_RELATIVE, d->alpha, &r);
    json_object_set_new(o, "conversion_lift", result_json(&r, "z"));
    struct stats_summary sh, st;
    stats_summary_sums(h->n, h->m[1].sy, h->m[1].syy, &sh);
    stats_summary_sums(t.n, t.m[1].sy, t.m[1].syy, &st);
    stats_welch(&sh, &st, STATS_DIFF_RELATIVE, d->alpha, &r);
    json_object_set_new(o, "revenue_lift", result_json(&r, "t"));
    double ph = ratio(h->m[0].pos, h->n), pt = ratio(t.m[0].pos, t.n);
    set_num(o, "incremental_conversions", (pt - ph) * t.n);
    set_num(o, "incremental_revenue",
            (ratio(t.m[1].sy, t.n) - ratio(h->m[1].sy, h->n)) * t.n);
    return o;
}

static json_t *power_json(const struct ctx *c, int primary, int64_t started, int64_t until,
                          int *underpowered, double *days_out)
{
    const struct experiments_def *d = c->d;
    *underpowered = 0;
    *days_out = NAN;
    json_t *o = json_object();
    set_num(o, "mde", d->mde);
    set_num(o, "power", 0.8);
    struct stats_summary s;
    plain_summary(c, &c->arms[0], primary, &s);
    double have = INFINITY;
    for (int v = 0; v < d->nvariants; v++)
        have = c->arms[v].n < have ? c->arms[v].n : have;
    json_object_set_new(o, "smallest_arm", jcount(have));
    if (c->arms[0].n < 2 || !(s.var > 0) || s.mean == 0) {
        json_object_set_new(o, "needed_per_variant", json_null());
        json_object_set_new(o, "reason",
                            json_string("no baseline yet: the control arm needs customers with "
                                        "varying values"));
        return o;
    }
    struct stats_power q = { s.mean, s.var, d->mde, d->alpha, 0.8, 0 };
    double n_fixed = NAN, n_seq = NAN;
    if (stats_power_sample_size(&q, &n_fixed))
        n_fixed = NAN;
    q.tuning = d->seq_tuning;
    if (stats_power_sample_size(&q, &n_seq))
        n_seq = NAN;
    set_num(o, "baseline", s.mean);
    json_object_set_new(o, "needed_per_variant", jcount(n_fixed));
    json_object_set_new(o, "needed_per_variant_sequential", jcount(n_seq));
    double elapsed = started > 0 ? (double)(until - started) / 86400.0 : 0;
    if (elapsed < 1.0 / 24)
        elapsed = 1.0 / 24; /* an hour at least: no absurd rates in the first minutes */
    double per_day = have / elapsed, days;
    set_num(o, "per_day", per_day);
    if (isfinite(n_seq) && stats_days_needed(n_seq, have, per_day, &days) == 0) {
        json_object_set_new(o, "days_needed", jcount(days));
        *days_out = days;
    } else {
        json_object_set_new(o, "days_needed", json_null());
    }
    *underpowered = !(have >= n_seq);
    json_object_set_new(o, "underpowered", json_boolean(*underpowered));
    return o;
}

/* ---------------------------------------------------------------------- */
/* the recommendation                                                     */

static json_t *recommend(const struct ctx *c, double total, const struct stats_srm *srm,
                         const struct metric_verdict *pv, json_t *guard_regr, int underpowered,
                         double days, const char *status)
{
    const struct experiments_def *d = c->d;
    json_t *o = json_object();
    char msg[400];
    const char *action;
    json_t *winner = json_null();
    int best = -1, bad = 0, k = d->nvariants - 1;
    for (int v = 1; v <= k; v++) {
        if (pv->sig_good[v] && (best < 0 || pv->lift[v] > pv->lift[best]))
            best = v;
        bad += pv->sig_bad[v];
    }
    if (total == 0) {
        action = "no_data";
        snprintf(msg, sizeof msg, "no customer has been exposed yet%s",
                 strcmp(status, "running") ? " (the experiment is not running)" : "");
    } else if (srm->mismatch) {
        action = "check_srm";
        snprintf(msg, sizeof msg,
                 "sample ratio mismatch (p = %.3g < %g): exposures do not follow the weights; "
                 "find the cause before trusting any result",
                 srm->p_value, STATS_SRM_ALPHA);
    } else if (json_array_size(guard_regr)) {
        action = "stop_guardrail";
        snprintf(msg, sizeof msg, "a guardrail metric got significantly worse (%s): stop and "
                                  "look",
                 json_string_value(json_object_get(json_array_get(guard_regr, 0), "metric")));
    } else if (best > 0) {
        action = "ship";
        winner = json_string(d->variants[best]);
        snprintf(msg, sizeof msg,
                 "variant %s beats control on %s (sequential test, lift %+.1f %%): declare it "
                 "the winner",
                 d->variants[best], d->metric.name, 100 * pv->lift[best]);
    } else if (k > 0 && bad == k) {
        action = "keep_control";
        winner = json_string(d->variants[0]);
        snprintf(msg, sizeof msg, "every variant is significantly worse than control on %s",
                 d->metric.name);
    } else if (underpowered) {
        action = "keep_running";
        if (isfinite(days))
            snprintf(msg, sizeof msg,
                     "no significant difference yet; about %.0f more day(s) at the current "
                     "traffic to detect a %.0f %% lift",
                     days, 100 * d->mde);
        else
            snprintf(msg, sizeof msg, "no significant difference yet; more customers are needed "
                                      "to detect a %.0f %% lift",
                     100 * d->mde);
    } else {
        action = "inconclusive";
        snprintf(msg, sizeof msg,
                 "enough customers to detect a %.0f %% lift and none was found: keep control "
                 "or test a bolder change",
                 100 * d->mde);
    }
    json_object_set_new(o, "action", json_string(action));
    json_object_set_new(o, "message", json_string(msg));
    json_object_set_new(o, "winner", winner);
    return o;
}

/* ---------------------------------------------------------------------- */

json_t *exp_results_compute(struct store *s, const struct exp_results_req *q, struct reqerr *e)
{
    const struct experiments_def *d = q->def;
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) {
        reqerr_from_code(e, ERR_NOMEM, "results");
        return NULL;
    }
    c->d = d;
    c->end_ms = q->end_ms;
    struct experiments_metric conv, rev;
    char m[120];
    experiments_metric_parse("conversion_rate", &conv, m, sizeof m);
    experiments_metric_parse("revenue_per_customer", &rev, m, sizeof m);
    add_metric(c, &conv, "secondary");
    add_metric(c, &rev, "secondary");
    add_metric(c, &d->metric, "primary");
    for (int i = 0; i < d->nguardrails; i++)
        add_metric(c, &d->guardrails[i], "guardrail");
    int primary = 0;
    for (int i = 0; i < c->nm; i++)
        if (!strcmp(c->ms[i].m.name, d->metric.name))
            primary = i;

    experiments_expo_flush();
    int rc = store_rtxn_begin(s, &c->t);
    if (!rc) {
        rc = experiments_expo_scan(c->t, q->xkey, exposure_cb, c);
        store_txn_end(c->t);
    }
    if (rc) {
        reqerr_from_code(e, rc, "results");
        free(c);
        return NULL;
    }

    json_t *o = json_object();
    char iso[40];
    json_object_set_new(o, "experiment_id", json_string(d->id));
    json_object_set_new(o, "status", json_string(q->status ? q->status : "?"));
    json_object_set_new(o, "winner", q->winner ? json_string(q->winner) : json_null());
    if (q->started) {
        tz_format_iso8601(q->started, iso, sizeof iso);
        json_object_set_new(o, "from", json_string(iso));
    }
    int64_t until = q->end_ms / 1000 < q->now ? q->end_ms / 1000 : q->now;
    tz_format_iso8601(until, iso, sizeof iso);
    json_object_set_new(o, "to", json_string(iso));
    struct stats_srm srm;
    json_t *srmj = srm_json(c, &srm); /* first: it says whether anything below can be trusted */
    json_object_set_new(o, "srm", srmj);
    json_t *warn = json_array();
    if (srm.mismatch) {
        char w[300];
        snprintf(w, sizeof w,
                 "SAMPLE RATIO MISMATCH: p = %.3g < %g. Exposures do not follow the weights "
                 "(broken assignment, exposure logging or traffic filtering); do not trust these "
                 "results",
                 srm.p_value, STATS_SRM_ALPHA);
        json_array_append_new(warn, json_string(w));
    }
    if (c->unknown) {
        char w[200];
        snprintf(w, sizeof w, "%ld exposure(s) name a variant the definition no longer has "
                              "(not counted)",
                 c->unknown);
        json_array_append_new(warn, json_string(w));
    }
    if (c->first_ms && q->retention_days > 0 &&
        c->first_ms / 1000 < q->now - (int64_t)q->retention_days * 86400) {
        json_array_append_new(warn, json_string("exposures older than event_retention_days: "
                                                "their customers' raw events were compacted "
                                                "away, so counts are incomplete"));
    }
    json_object_set_new(o, "warnings", warn);
    double total = 0;
    json_t *arms = json_array();
    for (int v = 0; v < d->nvariants; v++) {
        total += c->arms[v].n;
        json_t *a = arm_json(d->variants[v], &c->arms[v], d->weights[v]);
        json_object_set_new(a, "control", json_boolean(v == 0));
        json_array_append_new(arms, a);
    }
    total += c->arms[d->nvariants].n;
    json_object_set_new(o, "exposures", jcount(total));
    json_object_set_new(o, "variants", arms);
    json_object_set_new(o, "holdout", d->holdout > 0 ? holdout_json(c) : json_null());
    json_t *metrics = json_array(), *regr = json_array();
    struct metric_verdict pv = { { 0 }, { 0 }, { 0 } }, mv;
    for (int i = 0; i < c->nm; i++) {
        json_t *mj = metric_json(c, i, srm.mismatch, &mv);
        if (i == primary)
            pv = mv;
        if (!strcmp(c->ms[i].role, "guardrail"))
            for (int v = 1; v < d->nvariants; v++)
                if (mv.sig_bad[v])
                    json_array_append_new(regr, json_pack("{s:s,s:s,s:o}", "metric",
                                                          c->ms[i].m.name, "variant",
                                                          d->variants[v], "lift",
                                                          jnum(mv.lift[v])));
        json_array_append_new(metrics, mj);
    }
    json_object_set_new(o, "primary_metric", json_string(d->metric.name));
    json_object_set_new(o, "metrics", metrics);
    json_object_set_new(o, "guardrail_regressions", regr);
    int under;
    double days;
    json_object_set_new(o, "power", power_json(c, primary, q->started, until, &under, &days));
    json_object_set_new(o, "recommendation",
                        recommend(c, total, &srm, &pv, regr, under, days,
                                  q->status ? q->status : ""));
    json_t *st = json_object();
    set_num(st, "alpha", d->alpha);
    set_num(st, "sequential_tuning", d->seq_tuning);
    json_object_set_new(st, "cuped_days", json_integer(d->cuped_days));
    json_object_set_new(st, "min_sample", json_integer(d->min_sample));
    set_num(st, "mde", d->mde);
    json_object_set_new(st, "sequential_method",
                        json_string("asymptotic confidence sequences (Waudby-Smith et al. 2023), "
                                    "GrowthBook's tuning parameter"));
    json_object_set_new(o, "settings", st);
    free(c);
    return o;
}

/* ---------------------------------------------------------------------- */
/* the power calculator                                                   */

json_t *exp_results_power(const struct exp_results_power_req *q, struct reqerr *e)
{
    if (!(q->mean > 0) || !isfinite(q->mean) || (q->sd == 0 && q->mean >= 1)) {
        reqerr_set(e, 400, "invalid_field", "baseline",
                   "baseline must be a rate in (0, 1), or a mean > 0 with sd");
        return NULL;
    }
    if (!(q->sd >= 0) || !isfinite(q->sd)) {
        reqerr_set(e, 400, "invalid_field", "sd", "sd must be a number >= 0");
        return NULL;
    }
    if (!(q->mde > 0) || !isfinite(q->mde)) {
        reqerr_set(e, 400, "invalid_field", "mde", "mde must be a relative effect > 0 (0.1 = +10 %%)");
        return NULL;
    }
    if (!(q->alpha > 0 && q->alpha < 1)) {
        reqerr_set(e, 400, "invalid_field", "alpha", "alpha must be in (0, 1)");
        return NULL;
    }
    if (!(q->power > q->alpha && q->power < 1)) {
        reqerr_set(e, 400, "invalid_field", "power", "power must be in (alpha, 1)");
        return NULL;
    }
    if (q->variants < 2 || q->variants > EXPERIMENTS_MAX_VARIANTS) {
        reqerr_set(e, 400, "invalid_field", "variants", "variants must be 2 to %d",
                   EXPERIMENTS_MAX_VARIANTS);
        return NULL;
    }
    double var = q->sd > 0 ? q->sd * q->sd : q->mean * (1 - q->mean);
    struct stats_power p = { q->mean, var, q->mde, q->alpha, q->power, 0 };
    double n;
    int rc = stats_power_sample_size(&p, &n);
    if (rc) {
        reqerr_set(e, rc == ERR_TOOBIG ? 422 : 400, rc == ERR_TOOBIG ? "too_large" : "invalid_field",
                   NULL, "no sample size reaches that power%s",
                   rc == ERR_TOOBIG ? " (over 1e15 customers)" : "");
        return NULL;
    }
    json_t *o = json_object();
    set_num(o, "baseline", q->mean);
    set_num(o, "variance", var);
    set_num(o, "mde", q->mde);
    set_num(o, "alpha", q->alpha);
    set_num(o, "power", q->power);
    json_object_set_new(o, "variants", json_integer(q->variants));
    json_object_set_new(o, "per_variant", jcount(n));
    json_object_set_new(o, "total", jcount(n * q->variants));
    if (q->per_day > 0)
        json_object_set_new(o, "days", jcount(ceil(n * q->variants / q->per_day)));
    if (q->tuning > 0) {
        p.tuning = q->tuning;
        double ns;
        if (stats_power_sample_size(&p, &ns) == 0) {
            set_num(o, "sequential_tuning", q->tuning);
            json_object_set_new(o, "per_variant_sequential", jcount(ns));
            json_object_set_new(o, "total_sequential", jcount(ns * q->variants));
            if (q->per_day > 0)
                json_object_set_new(o, "days_sequential", jcount(ceil(ns * q->variants / q->per_day)));
        }
    }
    return o;
}
