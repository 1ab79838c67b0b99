/*
 * formula.h — a campaign's declared score: `score = { base, per, boost }`
 * in its file, worked out in C instead of by a Lua `score` hook.
 *
 *   score = {
 *     base  = 96,                                   -- required
 *     per   = { ltv = 1000 },                       -- x (1 + p.ltv / 1000)
 *     boost = { { when = { tier = "gold" }, by = 1.5 } },  -- x 1.5 when it holds
 *   }
 *
 * is the score of
 *
 *   score = function(p, ctx)
 *     local s = 96 * (1 + (p.ltv or 0) / 1000)
 *     if <p matches { tier = "gold" }> then s = s * 1.5 end
 *     return s
 *   end
 *
 * computed with the same floating-point operations in the same order, so
 * the two give the same number, bit for bit: s = base * (1 + p.a / da +
 * p.b / db ...) with the `per` attributes taken in byte order of their
 * names (absent or null = 0; no `per`: s = base), then s = s * by for each
 * boost whose GrowthBook condition (engine/cond.h, what an audience's
 * `conditions` are) holds for the customer, in list order.  The
 * conditions and attributes see what audiences see (the profile, `id`,
 * `stats`), not ctx.  Where the Lua form would coerce and the declared one
 * does not: a `per` attribute holding anything but a number or null
 * (a numeric string, false) makes the score fail — explain shows
 * "score: p.<name> is not a number", it counts as an error of the score
 * hook, and the campaign is not offered — as would a result that is not
 * finite.
 *
 * Why: a decide runs the score of every candidate (ranking is by score),
 * and each Lua call costs ~900 instructions with the JIT off (the
 * sandbox's budgets need the interpreter) — at 2,000 campaigns most of a
 * decide's growth over 500.  A declared score costs a look-up per `per`
 * attribute and one condition evaluation per boost.
 *
 * Threads: compiled formulas are immutable and shared by generations
 * (formula_ref / formula_free count references, atomically); evaluate
 * from any thread.
 */
#ifndef PROMOD_FORMULA_H
#define PROMOD_FORMULA_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct formula;

/** Limits: `per` attributes and boosts. */
#define FORMULA_MAX_TERMS 16

/** Compile a declared score from its JSON form ({"base", "per"?,
 *  "boost"?}; an empty "per" or "boost" may be [] or {}).  Conditions are
 *  compiled strictly (engine/cond.h) and may not use $segment (an
 *  audience's `segments` does that).
 *  @param path  receives where the error is ("score.boost[2].when"; the condition's own path starts the message),
 *               NUL-terminated; may be NULL
 *  @param msg   receives what is wrong; may be NULL
 *  @return 0 with *out set, ERR_INVAL (msg says why), ERR_NOMEM. */
int formula_compile(const json_t *decl, struct formula **out, char *path, size_t pathlen,
                    char *msg, size_t msglen);

/** Another reference to `f` (a campaign carried into a new generation).
 *  @return f. */
struct formula *formula_ref(struct formula *f);

/** Drop a reference; the last frees it.  NULL is fine. */
void formula_free(struct formula *f);

/** Boosts of `f` (0 for NULL), and the condition of boost `i` as written
 *  (borrowed from f): what a ruleset generation compiles into one
 *  condset per channel (rules_gen.boost; equal conditions of different
 *  campaigns share a member), so that a decide evaluates the boosts of
 *  its candidates together (audience_boosts) instead of one cond_eval
 *  each (~900 instructions for an $elemMatch). */
int formula_nboosts(const struct formula *f);
const json_t *formula_boost_cond(const struct formula *f, int i);

/** Numbers read for one customer, shared by the formulas evaluated for
 *  them (most read the same few attributes): zero it (n = 0) for each
 *  customer.  Keys are compared by content. */
#define FORMULA_MEMO 8
struct formula_memo {
    int n;
    struct {
        const char *key;
        size_t len;
        int rc;
        double v;
    } e[FORMULA_MEMO];
};

/** The score for the customer whose attributes are the msgpack map
 *  `mp`/`mlen` (audience_view).
 *  `held`: when not NULL, boost i holds when bit member[i] of `held` is
 *  set (the channel's boost condset, evaluated already); NULL: each
 *  boost's condition is evaluated here.  `memo` (may be NULL) keeps the
 *  attributes read for this customer.
 *  @return 0 with *out set; ERR_INVAL when a `per` attribute is not a
 *  number or the result is not finite, ERR_PARSE / ERR_NOMEM from reading
 *  the attributes — `err` says which ("p.ltv is not a number"). */
int formula_eval(const struct formula *f, const char *mp, size_t mlen, const uint64_t *held,
                 const int *member, struct formula_memo *memo, double *out, char *err,
                 size_t errlen);

/** formula_eval with the multiplier known already: m from
 *  formula_multiplier of a formula with the same `per` (formula_same_per)
 *  for the same customer — the same number formula_eval gives. */
int formula_eval_m(const struct formula *f, double m, const char *mp, size_t mlen,
                   const uint64_t *held, const int *member, double *out, char *err,
                   size_t errlen);

/** Bounds, for ranking without scoring every candidate (decide_prune.c):
 *  a formula is boundable when its base and every boost's `by` are finite
 *  and >= 0; then, for a customer whose multiplier (1 + p.a / da + ...,
 *  formula_multiplier) is m >= 0, its score is at most
 *  key * m, key = base * (the product of max(1, by)) — up to a few ulps of
 *  rounding, which the caller allows for.
 *  @return 1 with *key set when boundable, else 0. */
int formula_bound_key(const struct formula *f, double *key);

/** For a boundable formula: the score is at least lo * m, lo = base * the
 *  product of min(1, by) (same rounding caveat). */
double formula_low_key(const struct formula *f);

/** 1 when a and b have the same `per` (attributes and divisors): the same
 *  customer gives them the same multiplier. */
int formula_same_per(const struct formula *a, const struct formula *b);

/** The multiplier (1 + p.a / da + ...; 1 without `per`) of formula_eval,
 *  with the same operations in the same order.
 *  @return 0 with *m set, or what formula_eval would return for it. */
int formula_multiplier(const struct formula *f, const char *mp, size_t mlen,
                       struct formula_memo *memo, double *m);

#endif
