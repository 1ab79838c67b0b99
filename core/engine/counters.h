/*
 * counters.h — per-campaign counters that outlive ruleset generations.
 *
 * A campaign's counters for /metrics (hook errors by hook and kind, offers
 * served) must survive reloads, which replace every struct rules_campaign,
 * so they are kept by campaign id in a fixed table of slots: open
 * addressing over an FNV-1a hash, 64 probes, first come first served.  A
 * slot, once given to an id, is never freed (ids of deleted campaigns keep
 * their totals, as Prometheus counters must); past the table's capacity
 * (8192 ids) further ids are not counted.
 *
 * Threads: counters_add and counters_next from any thread (slots are
 * claimed under a mutex, values are atomic); counters_new and
 * counters_free when no other thread uses the table.
 * Used by hooks.c (promod_hook_errors_total) and decide.c
 * (promod_offers_served_total).
 */
#ifndef PROMOD_COUNTERS_H
#define PROMOD_COUNTERS_H

struct counters;

/** A table of `nvals` counters per id (1..64).  @return NULL when out of
 *  memory (then counters_add is a no-op). */
struct counters *counters_new(int nvals);

/** Free a table (NULL is fine); no thread may be using it. */
void counters_free(struct counters *t);

/** Add `n` to counter `val` (0 .. nvals-1) of `id` (1-131 bytes; longer ids
 *  are not counted).  `t` may be NULL (nothing is counted). */
void counters_add(struct counters *t, const char *id, int val, long n);

/** Iterate the ids that have a slot: start with *pos = 0; each call sets
 *  *id to the next id (borrowed: valid while the table lives), copies its
 *  `nvals` values into vals[] (each read atomically) and returns 1; 0 at
 *  the end (or when `t` is NULL). */
int counters_next(const struct counters *t, int *pos, const char **id, long *vals);

#endif
