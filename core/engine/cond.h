/*
 * cond.h — GrowthBook targeting conditions: compile once, evaluate many.
 *
 * A condition is the JSON document GrowthBook's SDKs evaluate for feature
 * rules and experiments ({"country": {"$in": ["FR", "DE"]}, "age":
 * {"$gte": 18}}); promod uses the same language for segments and campaign
 * audiences so that a page running a GrowthBook SDK and the server agree
 * case for case.  This module owns the language: it validates and compiles
 * a condition (jansson tree) into an immutable form, and evaluates that
 * form against a customer's attributes held as msgpack bytes (a stored
 * profile, read straight from LMDB) without building any tree.
 *
 * Semantics are the JavaScript SDK's (growthbook/packages/sdk-js
 * mongrule.ts), including its coercions: `{"n": 8}` matches "8", `$gt`
 * reads null as 0, `$in` intersects arrays, `$elemMatch` skips falsy
 * elements, version operators pad their parts, and so on; docs/segments.md
 * ("Conditions") lists every operator and rule and the few deliberate
 * deviations.  The GrowthBook conformance file's evalCondition section
 * (tests/unit/test_cond.c) pins them.
 *
 * Two compile modes:
 *  - COND_STRICT (segment and audience definitions): anything GrowthBook
 *    would silently evaluate as false or as something surprising is an
 *    error that names its place in the condition, e.g. "$.and[2].age.$gt":
 *    an unknown operator, a malformed regular expression, an argument of
 *    the wrong type ($in without an array, $exists without a boolean, a
 *    $type name that does not exist), operators mixed with field names, an
 *    unknown $segment or saved group (when the caller says which exist), a
 *    top-level key starting with "$" that is not $and/$or/$nor/$not/
 *    $segment.  The path syntax: "$" is the root, document operators are
 *    written without their "$" (".and[2]", ".not", ".segment"), field paths
 *    as written (".father.age"), value operators with it (".$gt"), list
 *    items as "[i]".
 *  - COND_LENIENT (conformance suite, conditions written for client SDKs):
 *    every JSON document compiles; what GrowthBook evaluates as false
 *    (unknown operator "$regx", an invalid regex) evaluates as false, and a
 *    shape on which the JavaScript SDK would throw (a null where a
 *    condition is expected) makes the whole evaluation false.
 * Evaluation is the same in both modes.
 *
 * Extension: {"$segment": "id"} in a document (top level or inside $and/
 * $or/$nor/$not) asks the caller's cond_env.segment callback whether the
 * customer is in segment "id".  GrowthBook itself would read it as an
 * attribute named "$segment".
 *
 * Regular expressions ($regex, $regexi) are JavaScript RegExp patterns
 * translated to PCRE2 at compile time (JS meanings of ".", "\s", "\v",
 * identity escapes, "$" at the very end only; PCRE2-only syntax such as
 * possessive quantifiers, "(?>", "\p{..}" is refused as JS refuses it) and
 * JIT-compiled once.
 *
 * Threads: a compiled struct cond and struct cond_groups are immutable and
 * may be evaluated from any number of threads at once.  No global mutable
 * state (a lowercase-mapping locale handle is created once, read-only).
 * Evaluation allocates nothing for the usual shapes (paths, scalars,
 * $in sets, regex on strings, versions); see cond_eval().
 */
#ifndef PROMOD_COND_H
#define PROMOD_COND_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "base/reqerr.h"

/** Nesting limit of a condition (documents, operator objects, lists). */
#define COND_MAX_DEPTH 64

struct cond;        /**< a compiled condition (immutable) */
struct cond_groups; /**< compiled saved groups {"name": [values]} (immutable) */

enum cond_mode {
    COND_STRICT = 0,  /**< definitions promod owns: refuse anything dubious */
    COND_LENIENT = 1, /**< client compatibility: GrowthBook's runtime rules */
};

/** Compile-time options.  Zero-initialise; a NULL options pointer means
 *  strict mode without segment or group checks. */
struct cond_opts {
    enum cond_mode mode;
    /** Strict mode: called for every {"$segment": id}; returns 1 when the
     *  segment exists, 0 when not (an error naming the path).  NULL:
     *  every id is accepted. */
    int (*segment_known)(void *ud, const char *id, size_t len);
    void *segment_ud;
    /** Strict mode: when set, $inGroup/$notInGroup names must exist in it
     *  (borrowed for the call only). */
    const struct cond_groups *groups;
};

/** Evaluation environment (borrowed for the call). */
struct cond_env {
    /** Saved groups for $inGroup/$notInGroup; NULL = none (every group is
     *  empty, as GrowthBook's `savedGroups[id] || []`). */
    const struct cond_groups *groups;
    /** Membership for {"$segment": id}: 1 member, 0 not, negative ERR_*
     *  to abort the evaluation (returned by cond_eval).  `mp`/`len` are the
     *  attributes the evaluation was called with, so a segment defined by
     *  a condition can be evaluated on the spot (the caller guards against
     *  cycles; strict compilation lists segment references, see
     *  cond_segment()).  NULL: evaluating a $segment clause is ERR_INVAL. */
    int (*segment)(void *ud, const char *id, size_t idlen, const char *mp, size_t len);
    void *segment_ud;
};

/** Validate and compile `condition`.
 *  @param condition  the JSON document (borrowed; not kept)
 *  @param opts       mode and reference checks, or NULL (strict, no checks)
 *  @param out        receives the compiled condition (free with cond_free)
 *  @param err        on failure: status 400, code "invalid_condition",
 *                    field = the path inside the condition ("$.and[2].age.$gt"),
 *                    message "<path>: <what is wrong>"; may be NULL
 *  @return 0; ERR_INVAL (strict-mode refusal), ERR_TOOBIG (nested deeper
 *          than COND_MAX_DEPTH, both modes; err is filled too), ERR_NOMEM. */
int cond_compile(const json_t *condition, const struct cond_opts *opts, struct cond **out,
                 struct reqerr *err);

/** Release a compiled condition (NULL is fine). */
void cond_free(struct cond *c);

/** Evaluate against attributes stored as one msgpack value (normally a
 *  map; any value is accepted as JavaScript would take it).  The top-level
 *  map is read once, noting where the attributes the condition starts its
 *  paths with begin; other values are skipped without being decoded, and a
 *  nested map is searched only along a path.  A repeated key reads its
 *  last value (as codec_msgpack_to_json does); ints become doubles (beyond
 *  2^53 they round, as JavaScript's numbers do); bin and ext read as
 *  strings; bytes after the first value are ignored.  Evaluating many
 *  conditions on one profile: index it once with cond_attrs_init(). 
 *  @param env  groups and segment callback, or NULL
 *  @return 1 match, 0 no match, or a negative code: ERR_PARSE (the bytes
 *          read are malformed or truncated), ERR_TOOBIG (attributes nested
 *          deeper than COND_MAX_DEPTH where a value had to be converted to
 *          text), ERR_NOMEM (a large value had to be converted to text),
 *          ERR_INVAL ($segment without env->segment), or the segment
 *          callback's code.  Allocation: none for scalar comparisons, $in
 *          sets, string regexes (with PCRE2 JIT) and versions under 256
 *          bytes; converting a large array or object to text, lowercasing
 *          or padding a string over 256 bytes allocates temporarily. */
int cond_eval(const struct cond *c, const char *mp, size_t len, const struct cond_env *env);

/* ---- many conditions on one profile ------------------------------------ */

/** A profile's top-level keys, indexed once so that many conditions
 *  (segments, campaign audiences) evaluated on the same attributes do not
 *  each read the whole map again.  Fields are private: use the functions.
 *  Borrows the msgpack bytes, which must outlive it.  One thread at a
 *  time; lives on the caller's stack (no allocation up to
 *  COND_ATTRS_INLINE keys) and must not be copied or moved once
 *  initialised (it may point into itself). */
#define COND_ATTRS_INLINE 32
struct cond_attr_ent {
    const char *key;
    uint32_t len;
    uint32_t pos;
    const unsigned char *val;
};
struct cond_attrs {
    const char *mp;
    size_t len;
    bool indexed;                  /* false: not a map of string keys; evaluation reads mp */
    uint32_t n;
    struct cond_attr_ent *ent;     /* sorted by key; a repeated key keeps its last value */
    struct cond_attr_ent inl[COND_ATTRS_INLINE];
};

/** Index the top-level map of `mp`.  A value that is not a map, or a map
 *  with a non-string key, is accepted and simply not indexed.
 *  @return 0, ERR_PARSE (malformed top-level map), ERR_NOMEM (more than
 *  COND_ATTRS_INLINE keys and no memory).  Release with cond_attrs_free(). */
int cond_attrs_init(struct cond_attrs *a, const char *mp, size_t len);
void cond_attrs_free(struct cond_attrs *a);

/** cond_eval() on indexed attributes: same semantics and returns, each
 *  attribute a clause starts with found by binary search. */
int cond_eval_attrs(const struct cond *c, const struct cond_attrs *a, const struct cond_env *env);

/** The number at top-level key `key` of the msgpack map `mp` (what a
 *  declared score reads, engine/formula.h; one pass over the map's keys, a
 *  repeated key reads its last value).  @return 1 (*out set), 0 when the
 *  key is absent or null (or `mp` is not a map), ERR_INVAL when the value
 *  is not a number (a string, boolean, array or map: never converted),
 *  ERR_PARSE for malformed bytes. */
int cond_mp_number(const char *mp, size_t len, const char *key, size_t klen, double *out);

/** cond_eval() on a jansson value (encoded to msgpack first; allocates).
 *  Same returns; ERR_INVAL/ERR_TOOBIG when `attrs` cannot be encoded. */
int cond_eval_json(const struct cond *c, const json_t *attrs, const struct cond_env *env);

/* ---- dependencies (for live membership and cycle checks) ---------------- */

/** Attribute paths the condition reads, sorted and unique, as written
 *  ("father.age").  Paths inside an $elemMatch sub-document are relative
 *  to the array's elements and are covered by the array's own path.  The
 *  strings live as long as `c`. */
size_t cond_npaths(const struct cond *c);
const char *cond_path(const struct cond *c, size_t i);

/** Segment ids referenced by {"$segment": id}, sorted and unique. */
size_t cond_nsegments(const struct cond *c);
const char *cond_segment(const struct cond *c, size_t i);

/** Saved-group names referenced by $inGroup/$notInGroup, sorted and unique. */
size_t cond_ngroups(const struct cond *c);
const char *cond_group(const struct cond *c, size_t i);

/** May a change of the attribute at dotted path `changed` (e.g. "stats",
 *  "stats.purchase.count", "country") change the condition's result?  True
 *  when a path the condition reads equals `changed`, lies under it, or
 *  contains it.  Segment and group references are not considered. */
bool cond_reads(const struct cond *c, const char *changed, size_t len);

/* ---- saved groups ------------------------------------------------------- */

/** Compile GrowthBook savedGroups: an object whose members are arrays of
 *  ids ({"beta_testers": ["u1", "u2", 3]}).  Membership is strict as in
 *  the SDK ("3" is not 3); array and object items can never match and are
 *  dropped.  @return 0, ERR_INVAL (not an object, or a member that is not
 *  an array; err names it as "$.name"), ERR_NOMEM.  `err` may be NULL. */
int cond_groups_compile(const json_t *groups, struct cond_groups **out, struct reqerr *err);
void cond_groups_free(struct cond_groups *g);
/** Does the group exist? */
bool cond_groups_has(const struct cond_groups *g, const char *name, size_t len);

#endif
