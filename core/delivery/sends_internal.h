/*
 * sends_internal.h — private to core/delivery/sends*.c: what the builder
 * thread (sends.c) calls of one customer's evaluation (sends_eval.c).
 */
#ifndef PROMOD_SENDS_INTERNAL_H
#define PROMOD_SENDS_INTERNAL_H
#ifndef PROMOD_SENDS_H
#error "include delivery/sends.h before delivery/sends_internal.h"
#endif

/** sends_eval with the audience cut `cutoff` of audience = { model, top |
 *  above }: NAN = the campaign's `above` (no cut for a `top` campaign
 *  evaluated one at a time), -INFINITY = no cut (the ranking pass), else
 *  the N-th best score the builder found at launch.  With `score_only` it
 *  stops after the model's score (it->score, nothing to free), for the
 *  pass that ranks the audience.  Returns as sends_eval. */
int sends_eval_cut(struct rules_worker *rw, const struct rules_gen *g, int camp, int chan,
                   struct store_txn *t, const char *cust, const void *pv, size_t pl, const void *sv,
                   size_t sl, int64_t now, double cutoff, int score_only, struct sends_item *it,
                   const char **why);

#endif
