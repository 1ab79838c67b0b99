/*
 * formula.c — declared scores: compile and evaluate (see formula.h).
 */
#include "engine/formula.h"
#include "engine/cond.h"
#include "base/err.h"
#include "base/reqerr.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct formula_per {
    char *key;
    size_t len;
    double div;
};

struct formula_boost {
    struct cond *when;
    json_t *json; /* the condition as written, for a channel's condset (formula_boost_cond) */
    double by;
};

struct formula {
    int refs;
    double base;
    int nper, nboost;
    struct formula_per per[FORMULA_MAX_TERMS];
    struct formula_boost boost[FORMULA_MAX_TERMS];
};

static int bad(char *path, size_t pathlen, char *msg, size_t msglen, const char *where,
               const char *what)
{
    if (path && pathlen)
        snprintf(path, pathlen, "%s", where);
    if (msg && msglen)
        snprintf(msg, msglen, "%s", what);
    return ERR_INVAL;
}

static int per_cmp(const void *a, const void *b)
{
    const struct formula_per *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* An empty table arrives as [] or {}: both mean "none". */
static int empty(const json_t *j)
{
    return (json_is_array(j) && !json_array_size(j)) || (json_is_object(j) && !json_object_size(j));
}

static int compile_per(struct formula *f, const json_t *per, char *path, size_t pathlen,
                       char *msg, size_t msglen)
{
    if (!per || empty(per))
        return 0;
    if (!json_is_object(per))
        return bad(path, pathlen, msg, msglen, "score.per",
                   "must be a table { attribute = divisor }");
    if (json_object_size(per) > FORMULA_MAX_TERMS)
        return bad(path, pathlen, msg, msglen, "score.per", "more than 16 attributes");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)per, k, v) {
        double d = json_is_number(v) ? json_number_value(v) : NAN;
        if (!isfinite(d) || d == 0) {
            char where[160];
            snprintf(where, sizeof where, "score.per.%s", k);
            return bad(path, pathlen, msg, msglen, where,
                       "must be a non-zero number (the amount of the attribute that adds base once)");
        }
        if (!*k || strchr(k, '.'))
            return bad(path, pathlen, msg, msglen, "score.per",
                       "names top-level attributes (no dots, not empty)");
        struct formula_per *t = &f->per[f->nper++];
        t->len = strlen(k);
        t->key = strdup(k);
        t->div = d;
        if (!t->key)
            return ERR_NOMEM;
    }
    qsort(f->per, (size_t)f->nper, sizeof *f->per, per_cmp);
    return 0;
}

static int compile_boost(struct formula *f, const json_t *boost, char *path, size_t pathlen,
                         char *msg, size_t msglen)
{
    if (!boost || empty(boost))
        return 0;
    if (!json_is_array(boost))
        return bad(path, pathlen, msg, msglen, "score.boost",
                   "must be a list { { when = {...}, by = 1.5 }, ... }");
    if (json_array_size(boost) > FORMULA_MAX_TERMS)
        return bad(path, pathlen, msg, msglen, "score.boost", "more than 16 entries");
    size_t i;
    const json_t *b;
    json_array_foreach(boost, i, b) {
        char where[64];
        snprintf(where, sizeof where, "score.boost[%zu]", i + 1);
        if (!json_is_object(b))
            return bad(path, pathlen, msg, msglen, where, "must be a table { when = {...}, by = 1.5 }");
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)b, k, v) if (strcmp(k, "when") && strcmp(k, "by"))
        {
            char m[160];
            snprintf(m, sizeof m, "unknown field '%s' (use when and by)", k);
            return bad(path, pathlen, msg, msglen, where, m);
        }
        const json_t *by = json_object_get(b, "by"), *when = json_object_get(b, "when");
        double x = json_is_number(by) ? json_number_value(by) : NAN;
        if (!isfinite(x)) {
            snprintf(where, sizeof where, "score.boost[%zu].by", i + 1);
            return bad(path, pathlen, msg, msglen, where, "must be a number (the factor)");
        }
        if (!json_is_object(when)) {
            snprintf(where, sizeof where, "score.boost[%zu].when", i + 1);
            return bad(path, pathlen, msg, msglen, where,
                       "must be a condition table (as audience.conditions)");
        }
        struct formula_boost *t = &f->boost[f->nboost];
        struct reqerr e = { 0 };
        int rc = cond_compile(when, NULL, &t->when, &e);
        if (rc) {
            char w[200];
            snprintf(w, sizeof w, "score.boost[%zu].when", i + 1);
            bad(path, pathlen, msg, msglen, w, e.message[0] ? e.message : "invalid condition");
            reqerr_clear(&e);
            return rc == ERR_NOMEM ? rc : ERR_INVAL;
        }
        reqerr_clear(&e);
        f->nboost++;
        t->by = x;
        t->json = json_incref((json_t *)when);
        if (cond_nsegments(t->when)) {
            snprintf(where, sizeof where, "score.boost[%zu].when", i + 1);
            return bad(path, pathlen, msg, msglen, where,
                       "$segment is not available in a score (declare it in audience.segments)");
        }
    }
    return 0;
}

int formula_compile(const json_t *decl, struct formula **out, char *path, size_t pathlen,
                    char *msg, size_t msglen)
{
    *out = NULL;
    if (path && pathlen)
        path[0] = 0;
    if (msg && msglen)
        msg[0] = 0;
    if (!json_is_object(decl))
        return bad(path, pathlen, msg, msglen, "score", "score must be a function or a table");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)decl, k, v) if (strcmp(k, "base") && strcmp(k, "per") &&
                                                  strcmp(k, "boost"))
    {
        char m[160];
        snprintf(m, sizeof m, "unknown field '%s' in score (use base, per and boost; or model and value)", k);
        return bad(path, pathlen, msg, msglen, "score", m);
    }
    const json_t *base = json_object_get(decl, "base");
    if (!json_is_number(base) || !isfinite(json_number_value(base)))
        return bad(path, pathlen, msg, msglen, "score.base", "must be a number");
    struct formula *f = calloc(1, sizeof *f);
    if (!f)
        return ERR_NOMEM;
    f->refs = 1;
    f->base = json_number_value(base);
    int rc = compile_per(f, json_object_get(decl, "per"), path, pathlen, msg, msglen);
    if (!rc)
        rc = compile_boost(f, json_object_get(decl, "boost"), path, pathlen, msg, msglen);
    if (rc) {
        formula_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

struct formula *formula_ref(struct formula *f)
{
    if (f)
        __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
    return f;
}

void formula_free(struct formula *f)
{
    if (!f || __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL))
        return;
    for (int i = 0; i < f->nper; i++)
        free(f->per[i].key);
    for (int i = 0; i < f->nboost; i++) {
        cond_free(f->boost[i].when);
        json_decref(f->boost[i].json);
    }
    free(f);
}

int formula_nboosts(const struct formula *f) { return f ? f->nboost : 0; }

const json_t *formula_boost_cond(const struct formula *f, int i) { return f->boost[i].json; }

/* The number at `key`, through the memo. */
static int number(const char *mp, size_t mlen, struct formula_memo *memo, const char *key,
                  size_t len, double *v)
{
    if (memo)
        for (int i = 0; i < memo->n; i++)
            if (memo->e[i].len == len && !memcmp(memo->e[i].key, key, len)) {
                *v = memo->e[i].v;
                return memo->e[i].rc;
            }
    int rc = cond_mp_number(mp, mlen, key, len, v);
    if (memo && memo->n < FORMULA_MEMO) {
        memo->e[memo->n].key = key; /* the formula's: outlives the customer */
        memo->e[memo->n].len = len;
        memo->e[memo->n].rc = rc;
        memo->e[memo->n].v = *v;
        memo->n++;
    }
    return rc;
}

/* 1 + p.a / da + ... in `per` order; on error the failing term's index. */
static int multiplier(const struct formula *f, const char *mp, size_t mlen,
                      struct formula_memo *memo, double *out, int *bad_term)
{
    double m = 1;
    for (int i = 0; i < f->nper; i++) {
        double v = 0;
        int rc = number(mp, mlen, memo, f->per[i].key, f->per[i].len, &v);
        if (rc < 0) {
            *bad_term = i;
            return rc;
        }
        if (rc == 0)
            v = 0;
        m = m + v / f->per[i].div;
    }
    *out = m;
    return 0;
}

int formula_multiplier(const struct formula *f, const char *mp, size_t mlen,
                       struct formula_memo *memo, double *m)
{
    int bad_term;
    return multiplier(f, mp, mlen, memo, m, &bad_term);
}

int formula_bound_key(const struct formula *f, double *key)
{
    if (!f || !isfinite(f->base) || f->base < 0)
        return 0;
    double k = f->base;
    for (int i = 0; i < f->nboost; i++) {
        if (!isfinite(f->boost[i].by) || f->boost[i].by < 0)
            return 0;
        if (f->boost[i].by > 1)
            k = k * f->boost[i].by;
    }
    if (!isfinite(k))
        return 0;
    *key = k;
    return 1;
}

double formula_low_key(const struct formula *f)
{
    double k = f->base;
    for (int i = 0; i < f->nboost; i++)
        if (f->boost[i].by < 1)
            k = k * f->boost[i].by;
    return k;
}

int formula_same_per(const struct formula *a, const struct formula *b)
{
    if (a->nper != b->nper)
        return 0;
    for (int i = 0; i < a->nper; i++)
        if (a->per[i].len != b->per[i].len || a->per[i].div != b->per[i].div ||
            memcmp(a->per[i].key, b->per[i].key, a->per[i].len))
            return 0;
    return 1;
}

/* The score from the multiplier on (m: NAN when there is no `per`). */
static int finish(const struct formula *f, double m, const char *mp, size_t mlen,
                  const uint64_t *held, const int *member, double *out, char *err, size_t errlen)
{
    double s = f->base;
    if (f->nper)
        s = s * m;
    for (int i = 0; i < f->nboost; i++) {
        int rc = held ? (int)((held[member[i] >> 6] >> (member[i] & 63)) & 1)
                      : cond_eval(f->boost[i].when, mp, mlen, NULL);
        if (rc < 0) {
            snprintf(err, errlen, "boost %d: %s", i + 1, err_str(rc));
            return rc;
        }
        if (rc)
            s = s * f->boost[i].by;
    }
    if (!isfinite(s)) {
        snprintf(err, errlen, "the declared score is not a finite number");
        return ERR_INVAL;
    }
    *out = s;
    return 0;
}

int formula_eval(const struct formula *f, const char *mp, size_t mlen, const uint64_t *held,
                 const int *member, struct formula_memo *memo, double *out, char *err,
                 size_t errlen)
{
    double m = NAN;
    if (f->nper) {
        int bad_term = 0;
        int rc = multiplier(f, mp, mlen, memo, &m, &bad_term);
        if (rc < 0) {
            snprintf(err, errlen, "p.%s is not a number", f->per[bad_term].key);
            return rc;
        }
    }
    return finish(f, m, mp, mlen, held, member, out, err, errlen);
}

int formula_eval_m(const struct formula *f, double m, const char *mp, size_t mlen,
                   const uint64_t *held, const int *member, double *out, char *err, size_t errlen)
{
    return finish(f, m, mp, mlen, held, member, out, err, errlen);
}
