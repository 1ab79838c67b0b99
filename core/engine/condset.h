/*
 * condset.h — many conditions compiled together and evaluated at once on
 * one profile, at a cost that grows with the attributes they read rather
 * than with their number.
 *
 * Used for the 200+ segment definitions evaluated at every profile write
 * and for campaign audiences at decide time (one set per channel), where a
 * decide must not pay for the campaigns whose audience cannot match.  The
 * technique is the ad-serving one, boolean-expression indexing:
 *
 *  - Every member (a segment, a campaign) is a conjunction: its condition's
 *    top-level clauses (and those of `$and` lists, recursively) are ANDed,
 *    exactly as GrowthBook ANDs them, plus optional membership tests on
 *    other segments (all of / any of / none of a list).
 *  - A clause whose attribute paths all start at the same attribute (or
 *    the same key inside one: "stats.purchase") belongs to that
 *    attribute's *group*; its result depends only on the bytes found
 *    there.  For each group the set remembers, per thread, which members
 *    its clauses let through for a given value (a bitset over members,
 *    keyed by the value's msgpack bytes): tier = "gold" is worked out once,
 *    then every profile with that tier costs a hash look-up and an AND of
 *    a few words.  Groups whose values never repeat (an e-mail, a float)
 *    stop being remembered and evaluate only the clauses of members still
 *    in the running.
 *  - Clauses over several attributes, or that ask about segments inside
 *    `$or`/`$not`, are evaluated one by one, again only for members still
 *    in the running.
 * Each clause is compiled on its own with cond_compile (core/engine/cond.h)
 * and evaluated with it, so a member's result is the same as evaluating
 * its whole condition with cond_eval (tests/unit/test_condset.c checks
 * that on random profiles); only the bookkeeping is new.  The commonest
 * clause shapes of audiences — numeric comparisons (`{"ltv": {"$gte":
 * 100}}`) and `{"interests": {"$elemMatch": {"$eq": "ski"}}}` on a
 * top-level attribute — are also evaluated natively on the value's bytes
 * when it is a plain number / an array of strings and scalars (any other
 * value goes to cond): a few instructions instead of cond's ~700, which
 * is what a group whose values never repeat (a float, a list) costs per
 * clause still needed.
 *
 * Segment references: a set lists every segment id its members mention
 * (condset_ref); evaluation takes a bitset over that list saying which the
 * customer is in, so the caller decides where membership comes from (the
 * stored index at decide time, the results of lower levels while
 * evaluating segments that depend on segments).
 *
 * Threads: a built struct condset is immutable and may be evaluated by any
 * number of threads at once, each with its own struct condset_scratch (the
 * per-thread memory of group values).  Building happens on one thread.
 */
#ifndef PROMOD_CONDSET_H
#define PROMOD_CONDSET_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "base/reqerr.h"

struct condset;
struct condset_build;
struct condset_scratch;

/** Words of a bitset over `n` members. */
#define CONDSET_WORDS(n) (((size_t)(n) + 63) / 64)

/** Largest number of members and of distinct segment references. */
#define CONDSET_MAX_MEMBERS (1 << 20)
#define CONDSET_MAX_REFS 4096

/* ---- building ----------------------------------------------------------- */

/** Start a set of `n` members (0 .. n-1), each "always true" until
 *  condset_build_set() says otherwise.  @return 0, ERR_INVAL (n out of
 *  range), ERR_NOMEM. */
int condset_build_new(int n, struct condset_build **out);

/** What member `i` requires (the arguments are borrowed for the call):
 *  @param cond    a GrowthBook condition (a JSON object) already accepted
 *                 by cond_compile in strict mode, or NULL for none
 *  @param all     segment ids the customer must all be in (or NULL)
 *  @param any     segment ids the customer must be in at least one of;
 *                 an empty non-NULL list can never match
 *  @param none    segment ids the customer must be in none of
 *  Calling it twice for one member is an error.
 *  @return 0, ERR_INVAL (i out of range, set twice, a condition that does
 *          not compile: `err` says where), ERR_TOOBIG (more than
 *          CONDSET_MAX_REFS segment ids), ERR_NOMEM. */
int condset_build_set(struct condset_build *b, int i, const json_t *cond,
                      const char *const *all, int nall, const char *const *any, int nany,
                      const char *const *none, int nnone, struct reqerr *err);

/** Finish: the builder is consumed (freed on every path).
 *  @return 0 with *out, or ERR_NOMEM. */
int condset_build_finish(struct condset_build *b, struct condset **out);
/** Drop a builder without finishing (NULL is fine). */
void condset_build_free(struct condset_build *b);

void condset_free(struct condset *cs);

/** Members, and whether member `i` tests anything at all. */
int condset_nmembers(const struct condset *cs);
int condset_member_tests(const struct condset *cs, int i);

/** Segment ids the members mention, sorted; index k is bit k of the
 *  `refs` bitset given to condset_eval().  Borrowed from the set. */
int condset_nrefs(const struct condset *cs);
const char *condset_ref(const struct condset *cs, int k);
/** Index of segment `id` among the refs, or -1. */
int condset_ref_find(const struct condset *cs, const char *id, size_t len);

/** Does the set read attributes at all (a caller with no attribute view to
 *  offer can skip building one when it does not)? */
int condset_reads_attrs(const struct condset *cs);

/* ---- evaluating --------------------------------------------------------- */

/** Per-thread memory for evaluation (group values seen, the attribute
 *  index).  One per thread; it remembers the last few sets it was used
 *  with and is fine to use with sets that have been freed since (they are
 *  recognised by a never-reused serial number).  @return NULL when out of
 *  memory. */
struct condset_scratch *condset_scratch_new(void);
void condset_scratch_free(struct condset_scratch *sc);

/** Evaluate the members selected by `mask` (NULL = all) on the attributes
 *  `mp`/`len` (one msgpack map, e.g. a profile with its stats), given the
 *  customer's segment memberships `refs` (a bitset over condset_ref
 *  indexes; NULL = in none).  Writes CONDSET_WORDS(n) words to `out`: bit i
 *  set when member i is selected and holds.  A clause whose evaluation
 *  fails (malformed attributes) counts as not holding.
 *  @return the number of members that hold (>= 0), or ERR_NOMEM. */
int condset_eval(const struct condset *cs, struct condset_scratch *sc, const char *mp, size_t len,
                 const uint64_t *refs, const uint64_t *mask, uint64_t *out);

/** Why member `i` does not hold, for explain: evaluates its tests one by
 *  one in the order written and describes the first that fails, e.g.
 *  `conditions $.and[1] {"country":{"$in":["FR"]}}`, `segments: in none of
 *  gold, vip`, `exclude: in dormant`.  @return 1 (it holds; `why` empty),
 *  0 (`why` filled, NUL-terminated, cut at `len`), ERR_NOMEM. */
int condset_explain(const struct condset *cs, struct condset_scratch *sc, int i, const char *mp,
                    size_t len, const uint64_t *refs, char *why, size_t whylen);

/** Statistics of a set (for the benchmark notes and tests). */
struct condset_stats {
    int members, clauses, groups, deep_groups, complex;
    int native; /**< clauses with a native form (numeric comparisons, $elemMatch of a
                     string): evaluated without cond when the value is a plain one */
};
void condset_stats(const struct condset *cs, struct condset_stats *st);

#endif
