/*
 * decide_rank.c — step 4 of a decide (engine/decide.c): the candidates in
 * rank order, worked out lazily as the walk takes them (decide_internal.h).
 */
#include "engine/decide.h"
#include "engine/decide_internal.h"
#include <stdlib.h>

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = *(const struct cand *const *)a, *y = *(const struct cand *const *)b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->rank - y->rank; /* equal scores: priority order, then id (the channel index) */
}

/* Step 4 of a decide: rank by score (descending), then the channel index's order
 * (cand_cmp: a total order, every rank differs).  Lazily: the walk usually
 * takes `limit` candidates and a few more that caps hold back, so the first
 * decide_take() puts only the best limit + RANK_SPARE in order, in one pass (each
 * candidate is compared with the worst of them, and the few better ones
 * inserted); only a walk that gets past them sorts the rest.  Sorting ~50
 * candidates up front cost ~6k instructions of a decide with 2,000
 * campaigns; the order the walk and explain see is the same either way. */
/* RANK_SPARE: decide_internal.h */

void decide_rank(struct req *r)
{
    for (int k = 0; k < r->ncand; k++)
        r->order[k] = &r->cands[k];
    r->sorted = r->ncand > 1 ? 0 : r->ncand;
}

static inline int cand_before(const struct cand *x, const struct cand *y)
{
    return x->score != y->score ? x->score > y->score : x->rank < y->rank;
}

/* order[r->next .. ncand) in rank order from here on. */
void decide_rank_rest(struct req *r)
{
    if (r->sorted < r->ncand && r->ncand - r->next > 1)
        qsort(r->order + r->next, (size_t)(r->ncand - r->next), sizeof *r->order, cand_cmp);
    r->sorted = r->ncand;
}

/* order[0 .. m) := the best m candidates, in rank order. */
static void rank_top(struct req *r, int m)
{
    struct cand **o = r->order;
    for (int k = 1; k < m; k++) /* insertion sort of the first m */
        for (int j = k; j > 0 && cand_before(o[j], o[j - 1]); j--) {
            struct cand *t = o[j];
            o[j] = o[j - 1];
            o[j - 1] = t;
        }
    for (int k = m; k < r->ncand; k++) {
        if (!cand_before(o[k], o[m - 1]))
            continue;
        struct cand *t = o[k];
        o[k] = o[m - 1]; /* the one pushed out joins the rest */
        int j = m - 1;
        while (j > 0 && cand_before(t, o[j - 1])) {
            o[j] = o[j - 1];
            j--;
        }
        o[j] = t;
    }
    r->sorted = m;
}

/* The next candidate in rank order (r->next < r->ncand). */
struct cand *decide_take(struct req *r)
{
    if (r->next >= r->sorted) {
        int lim = r->q->limit;
        if (r->next == 0 && lim >= 1 && lim < r->ncand - RANK_SPARE)
            rank_top(r, lim + RANK_SPARE);
        else
            decide_rank_rest(r);
    }
    return r->order[r->next++];
}
