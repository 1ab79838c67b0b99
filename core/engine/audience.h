/*
 * audience.h — campaign audiences for one customer, evaluated in C before
 * any Lua hook runs, and the customer's segments as p.segments.
 *
 * A campaign file may declare
 *   audience = { segments = { "gold", "vip" },      -- in at least one of these
 *                exclude  = { "dormant" },          -- in none of these
 *                conditions = { country = "FR" } }  -- a GrowthBook condition
 * (rules_check.c validates it).  Each ruleset generation compiles the
 * audiences of each channel's campaigns into one struct condset
 * (rules_gen.aud[channel], member j = position j of by_channel[channel]),
 * the boolean-expression index: a decide evaluates the whole channel's
 * audiences with a few look-ups and word operations and then visits only
 * the campaigns whose audience holds.  Segment ids in audiences are
 * resolved against the live segment generation at evaluation time, from
 * the customer's record in the membership index (engine/segments.h); an id
 * that no longer names a segment reads as "not a member".
 *
 * What the conditions see is what a segment's do (segments_view): the
 * profile, `id`, and `stats` with recency_days and days_since computed now.
 *
 * Threads: an audience_cust lives on one thread for one customer (a
 * decide, one customer of a send); the per-thread scratch it uses is the
 * calling thread's own (made on first use, freed at thread exit).
 */
#ifndef PROMOD_AUDIENCE_H
#define PROMOD_AUDIENCE_H
#include <stddef.h>
#include <stdint.h>

struct lua_State;
struct rules_gen;
struct segments_gen;
struct store_txn;

/** One customer, for the length of a decide (or one send evaluation).  The
 *  byte pointers are borrowed from `t` and must stay valid while it is used. */
struct audience_cust {
    struct store_txn *t;
    const char *cust;
    size_t clen;
    const char *prof, *stats;  /**< msgpack, NULL when absent */
    size_t plen, slen;
    int64_t now;
    struct segments_gen *sg;   /**< acquired by audience_begin */
    uint64_t *bits;            /**< the customer's segments (sg->nw words), scratch-owned */
    int bits_state;            /**< 0 not read, 1 read, <0 read failed */
    int any;                   /**< a member of at least one segment */
    int view_state;            /**< 0 not built, 1 built, <0 failed */
    const char *view_p;        /**< when built: the view (scratch-owned) ... */
    size_t view_len;           /**< ... and its length */
    int boost_state, boost_chi; /**< audience_boosts: 0 not run, 1 done (for boost_chi), <0 failed */
    const uint64_t *boost_bits; /**< audience_boosts' result (scratch-owned) */
};

/** Start: takes a reference on the live segment generation. */
void audience_begin(struct audience_cust *ac, struct store_txn *t, const char *cust,
                    const void *prof, size_t plen, const void *stats, size_t slen, int64_t now);
/** End: drops the reference. */
void audience_end(struct audience_cust *ac);

/** Set p.segments on the profile table at `p_idx`: a set {id = true} of
 *  the segments the customer is in (absent when none, so `p.segments`
 *  reads nil like any missing attribute).  Id strings are cached per Lua
 *  state and segment generation. */
void audience_push_segments(struct audience_cust *ac, struct lua_State *L, int p_idx);

/** The campaigns of channel `chi` of `g` whose audience holds for the
 *  customer: a bitset over positions of g->by_channel[chi], or NULL when no
 *  campaign of the channel declares an audience (all hold).  `mask` (NULL =
 *  all) limits the positions evaluated.  Borrowed until the next call on
 *  this thread. */
const uint64_t *audience_channel(struct audience_cust *ac, const struct rules_gen *g, int chi,
                                 const uint64_t *mask);

/** What the conditions see (the profile, `id`, `stats`) as one msgpack
 *  map, built once per customer: what a declared score reads
 *  (engine/formula.h).  NULL when it cannot be built (malformed profile,
 *  no memory).  Borrowed until the next audience_begin on this thread. */
const char *audience_view(struct audience_cust *ac, size_t *len);

/** Forget audience_boosts' result: the next call evaluates again, with
 *  its mask (decide_prune.c widens it). */
void audience_boosts_forget(struct audience_cust *ac);

/** The boosts of declared scores (engine/formula.h) on channel `chi`
 *  (g->boost[chi]; rules.h) for this customer: bit m set when member m
 *  holds.  Evaluated on the first call for the customer, for the boosts
 *  of the positions selected by `mask` (a bitset over by_channel
 *  positions, e.g. those whose audience holds; NULL = all); later calls
 *  return the same bits.  NULL when the channel has no boosts or the
 *  evaluation failed (the caller then evaluates each condition itself).
 *  Borrowed until the next audience_begin on this thread. */
const uint64_t *audience_boosts(struct audience_cust *ac, const struct rules_gen *g, int chi,
                                const uint64_t *mask);

/** Why the audience of position `j` of channel `chi` does not hold, for
 *  explain: "audience: <test that failed>" (see condset_explain).  Writes
 *  "" when it holds. */
void audience_explain(struct audience_cust *ac, const struct rules_gen *g, int chi, int j,
                      char *why, size_t len);

/** One campaign `camp` on channel `chi` (outbound sends): 1 when its
 *  audience holds (or it has none), 0 when not (`why` says which test). */
int audience_campaign(struct audience_cust *ac, const struct rules_gen *g, int chi, int camp,
                      char *why, size_t len);

#endif
