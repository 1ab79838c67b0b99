/*
 * condset_internal.h — the built set's layout, shared by its builder
 * (condset.c) and its evaluation (condset_eval.c).  Not for other modules.
 * It does not include engine/condset.h (a circle between the two): the
 * .c files include that first.
 */
#ifndef PROMOD_CONDSET_INTERNAL_H
#define PROMOD_CONDSET_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cond;

/* ---- bitsets ------------------------------------------------------------ */

static inline void bit_set(uint64_t *b, int i) { b[i >> 6] |= 1ull << (i & 63); }
static inline int bit_get(const uint64_t *b, int i) { return (int)(b[i >> 6] >> (i & 63)) & 1; }

static inline bool bits_meet(const uint64_t *a, const uint64_t *b, size_t nw)
{
    for (size_t i = 0; i < nw; i++)
        if (a[i] & b[i])
            return true;
    return false;
}


/* ---- the built set ------------------------------------------------------ */

enum { T_CLAUSE, T_SEG, T_ANY, T_NONE };

struct ctest {
    uint8_t kind;
    int idx;        /* T_CLAUSE: clause index; T_SEG: ref index */
    char *label;    /* "$.and[1]", "$.country"; NULL for T_ANY/T_NONE */
};

struct cmember {
    struct ctest *t;
    int nt;
    uint64_t *all, *any, *none; /* over refs; NULL when unused */
};

/* Clause shapes evaluated natively on the root value (condset_eval.c),
 * without cond's path walk: campaigns' audiences are mostly made of them,
 * and values such as a float or a list of interests never repeat enough
 * for the group memory, so each was a full cond evaluation (~700
 * instructions) per decide.  A value the native form does not cover (not a
 * number, an array holding more than strings and scalars, malformed) goes
 * to cond as before, so the result is cond's by construction. */
enum { F_NONE, F_NUM, F_ELEM };
#define F_MAXOPS 4
enum { FO_GT, FO_GTE, FO_LT, FO_LTE, FO_EQ, FO_NE, FO_EXISTS, FO_MISSING };

struct clause {
    struct cond *c;
    char *text;     /* compact JSON of the clause document */
    int group;      /* -1: evaluated on its own */
    uint64_t *users;
    /* F_NUM: {"attr": {ops}}, every op one of $gt $gte $lt $lte $eq $ne
     * with a number, or $exists with a boolean; F_ELEM: {"attr":
     * {"$elemMatch": {"$eq": "a non-empty string"}}}.  Only for a group
     * on a whole root ("attr" holds no dot). */
    uint8_t fast, nops;
    uint8_t op[F_MAXOPS];
    double num[F_MAXOPS];
    char *str;      /* F_ELEM */
    size_t slen;
};

struct group {
    int root;       /* index into roots */
    char *sub;      /* second path segment, or NULL for the whole root */
    size_t sublen;
    int *cl;
    int ncl;
    uint64_t *users;
};

struct root {
    char *name;
    size_t len;
    int *groups;
    int ngroups;
};

struct condset {
    uint64_t serial;
    int n;
    size_t nw, nrw;
    struct cmember *m;
    struct clause *cl;
    int ncl;
    struct group *g;
    int ng;
    uint64_t *gusers;   /* ng * nw: each group's members, side by side */
    struct root *roots;
    int nroots;
    int *cplx;      /* clauses evaluated on their own */
    int ncplx;
    char **refs;
    int nrefs;
    uint64_t *segm; /* members with all/any/none tests */
    int nsegm;
    int *segm_list;
};

static inline uint64_t fnv64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV64_INIT 0xcbf29ce484222325ull

#endif
