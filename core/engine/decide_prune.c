/*
 * decide_prune.c — step 3 of a decide (engine/decide.c) without scoring
 * every candidate: the campaigns that cannot rank among the offers are
 * left unscored.
 *
 * A decide offers the `limit` best-scored candidates that pass caps.  At
 * 2,000 campaigns some fifty pass their audiences on a placement, and
 * scoring them all is most of what a decide's cost grows by over 500
 * campaigns.  The ad servers' answer (top-k retrieval with bounds, as in
 * WAND) applies to declared scores (engine/formula.h): a formula whose
 * base and boosts are >= 0 scores between lo * m and hi * m, where lo and
 * hi (base times the product of min(1, by), of max(1, by)) are known when
 * the rule set is built, and m = 1 + p.a / da + ... is the same for every
 * formula with the same `per` — one look-up per customer
 * (rules_gen.prune_*: the channel's most common `per`).  Among those
 * candidates, limit + RANK_SPARE score at least the (limit + RANK_SPARE)-
 * th best lo * m; the ones whose hi * m is below that are left unscored.
 * If the walk needs more (caps or experiments hold offers back), it takes
 * a candidate only when it scores above the highest bound of those left
 * unscored, and scores them all first otherwise — so the offers, their
 * order and their content are those of a decide that scores everything;
 * the test compares them with explain's, which does.
 *
 * Left unscored only what no one can observe: a campaign is skipped only
 * when its `eligible` is absent or exactly `return true` in this worker (a
 * real hook could fail, count an error or say no); never with explain (it
 * reports every campaign), in a replay (its tallies count every eligible
 * reached), when a file of the worker's state is disabled, or when the
 * customer's multiplier is not a finite number >= 0 (a `per` attribute
 * that is not a number fails all those formulas: they are all scored, and
 * fail, as before).  The decision log's `scored` counts those scored.
 */
#include "engine/decide.h"
#include "engine/decide_internal.h"
#include "engine/audience.h"
#include "engine/condset.h"
#include "engine/formula.h"
#include "engine/hooks.h"
#include "lua/luavm.h"
#include "base/buf.h"
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Bounds are computed with other roundings than the scores: a bound is
 * raised by this much (far more than the few ulps of a dozen products). */
#define BOUND_SLACK (1 + 1e-9)
/* Past this limit the ranking keeps no top list: nothing is skipped. */
#define TOP_MAX 64

/* /metrics: candidates left unscored at first, and those the walk scored
 * after all (decide_prune_metrics) */
static long g_unscored, g_rescored;

void decide_prune_metrics(struct buf *out)
{
    buf_printf(out,
               "# HELP promod_decide_unscored_total Candidates a decide left unscored: their "
               "declared score could not rank among the offers.\n"
               "# TYPE promod_decide_unscored_total counter\n"
               "promod_decide_unscored_total %ld\n"
               "# HELP promod_decide_unscored_rescored_total Of those, the ones scored after all: "
               "caps held back enough of the better ones.\n"
               "# TYPE promod_decide_unscored_rescored_total counter\n"
               "promod_decide_unscored_rescored_total %ld\n",
               __atomic_load_n(&g_unscored, __ATOMIC_RELAXED),
               __atomic_load_n(&g_rescored, __ATOMIC_RELAXED));
}

static int bit(const uint64_t *w, int j) { return (int)((w[j >> 6] >> (j & 63)) & 1); }

int decide_prune_begin(struct req *r, const uint64_t *universe)
{
    const struct rules_gen *g = r->g;
    int chi = r->chi, n = g->nby_channel[chi];
    r->pn = 0;
    if (!g->prune_per[chi] || r->q->as_was || r->q->limit < 1 ||
        r->q->limit + RANK_SPARE > TOP_MAX || luavm_any_disabled(r->rw->vm))
        return 0;
    size_t vl = 0;
    const char *v = audience_view(&r->ac, &vl);
    double m;
    if (!v || formula_multiplier(g->prune_per[chi], v, vl, &r->fmemo, &m))
        return 0;
    r->pm = m; /* the same for every formula of this `per`: declared_score uses it */
    r->pm_ok = 1;
    if (!isfinite(m) || m < 0)
        return 0;
    size_t nw = CONDSET_WORDS(n);
    struct scratch *scr = r->scr;
    if (nw * 2 > scr->pwcap) {
        uint64_t *w = realloc(scr->pwords, sizeof *w * nw * 2);
        if (!w)
            return 0;
        scr->pwords = w;
        scr->pwcap = nw * 2;
    }
    uint64_t *skip = scr->pwords, *want = scr->pwords + nw;
    const uint64_t *in = g->prune_in[chi];
    const int *list = g->by_channel[chi];
    const double *klo = g->prune_lo[chi], *khi = g->prune_hi[chi];
    /* the candidates that may be left unscored (eligible known to say yes),
     * and the want-th best of their lowest scores (in keys: m >= 0 is
     * common to all) */
    double lo[TOP_MAX];
    int want_n = r->q->limit + RANK_SPARE, nl = 0;
    for (size_t w = 0; w < nw; w++) {
        uint64_t d = in[w] & (universe ? universe[w] : ~0ull);
        for (uint64_t b = d; b; b &= b - 1) {
            int j = (int)(w * 64) + __builtin_ctzll(b), i = list[j];
            if (rules_worker_hooks(r->rw, i)[HOOKS_ELIGIBLE] != LUA_NOREF &&
                !(r->rw->hook_true[i] & HOOKS_BIT(HOOKS_ELIGIBLE))) {
                d &= ~(1ull << (j & 63));
                continue;
            }
            double x = klo[j];
            if (nl == want_n && !(x > lo[nl - 1]))
                continue;
            int t = nl < want_n ? nl++ : nl - 1;
            while (t > 0 && lo[t - 1] < x) {
                lo[t] = lo[t - 1];
                t--;
            }
            lo[t] = x;
        }
        skip[w] = d;
    }
    if (nl < want_n)
        return 0; /* fewer than the offers need: score them all */
    /* left unscored: those whose highest score is below that */
    double t_lo = lo[nl - 1] / (BOUND_SLACK * BOUND_SLACK), hi = 0;
    long any = 0;
    for (size_t w = 0; w < nw; w++) {
        for (uint64_t b = skip[w]; b; b &= b - 1) {
            int j = (int)(w * 64) + __builtin_ctzll(b);
            if (khi[j] >= t_lo)
                skip[w] &= ~(1ull << (j & 63));
            else if (khi[j] > hi)
                hi = khi[j];
        }
        any += __builtin_popcountll(skip[w]);
        want[w] = (universe ? universe[w] : ~0ull) & ~skip[w];
    }
    if (!any)
        return 0;
    double b = hi * m;
    r->skip = skip;
    r->skip_bound = isfinite(b) ? b * BOUND_SLACK : INFINITY;
    r->bmask = want;
    r->pn = (int)any;
    __atomic_fetch_add(&g_unscored, any, __ATOMIC_RELAXED);
    return 1;
}

int decide_prune_skipped(const struct req *r, int j) { return bit(r->skip, j); }

/* Score every candidate left unscored: the walk needs them after all.
 * Their boosts were left out of the first evaluation: all again. */
static void score_skipped(struct req *r)
{
    int n = r->g->nby_channel[r->chi], before = r->ncand;
    uint64_t *want = (uint64_t *)r->bmask;
    __atomic_fetch_add(&g_rescored, (long)r->pn, __ATOMIC_RELAXED);
    r->pn = 0;
    for (size_t w = 0; w < CONDSET_WORDS(n); w++)
        want[w] |= r->skip[w];
    audience_boosts_forget(&r->ac);
    for (size_t w = 0; w < CONDSET_WORDS(n); w++)
        for (uint64_t b = r->skip[w]; b; b &= b - 1)
            decide_consider(r, (int)(w * 64) + __builtin_ctzll(b), NULL);
    for (int k = before; k < r->ncand; k++)
        r->order[k] = &r->cands[k];
    if (r->sorted > r->next)
        r->sorted = r->next; /* order[next ..] is to be ranked again */
}

int decide_more(const struct req *r) { return r->next < r->ncand || r->pn; }

struct cand *decide_prune_take(struct req *r)
{
    struct cand *x = r->next < r->ncand ? decide_take(r) : NULL;
    if (!r->pn || (x && x->score > r->skip_bound))
        return x;
    /* one left unscored might rank before x */
    if (x)
        r->next--;
    score_skipped(r);
    return r->next < r->ncand ? decide_take(r) : NULL;
}
