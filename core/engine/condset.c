/*
 * condset.c — conditions split into clauses, clauses grouped by the
 * attribute they read, group results remembered per value (see condset.h).
 *
 * Why per-value memory rather than per-clause posting lists: the clauses
 * are GrowthBook's, with JavaScript coercions ("8" equals 8, a missing
 * value is 0 for $gt, arrays intersect $in), and re-deriving those rules in
 * an index would be a second implementation to keep in step with cond.c.
 * Remembering "what the clauses of group `tier` say about the bytes
 * 0xa4 gold" needs no knowledge of the rules at all — any clause whose
 * paths all start at `tier` is a function of those bytes — and most
 * targeting attributes take few values (tier, country, consent, a small
 * integer), so the look-up hits almost always.
 */
#include "engine/condset.h"
#include "engine/cond.h"
#include "codec/mpread.h"
#include "base/err.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- bitsets ------------------------------------------------------------ */

static inline void bit_set(uint64_t *b, int i) { b[i >> 6] |= 1ull << (i & 63); }
static inline int bit_get(const uint64_t *b, int i) { return (int)(b[i >> 6] >> (i & 63)) & 1; }

static bool bits_meet(const uint64_t *a, const uint64_t *b, size_t nw)
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

struct clause {
    struct cond *c;
    char *text;     /* compact JSON of the clause document */
    int group;      /* -1: evaluated on its own */
    uint64_t *users;
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

static uint64_t g_serial;

int condset_nmembers(const struct condset *cs) { return cs->n; }
int condset_nrefs(const struct condset *cs) { return cs->nrefs; }
const char *condset_ref(const struct condset *cs, int k) { return cs->refs[k]; }
int condset_reads_attrs(const struct condset *cs) { return cs->ncl > 0; }

int condset_member_tests(const struct condset *cs, int i)
{
    return i >= 0 && i < cs->n && cs->m[i].nt > 0;
}

int condset_ref_find(const struct condset *cs, const char *id, size_t len)
{
    int lo = 0, hi = cs->nrefs - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const char *r = cs->refs[mid];
        size_t rl = strlen(r);
        int c = memcmp(r, id, rl < len ? rl : len);
        if (!c)
            c = rl < len ? -1 : rl > len;
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

void condset_stats(const struct condset *cs, struct condset_stats *st)
{
    memset(st, 0, sizeof *st);
    st->members = cs->n;
    st->clauses = cs->ncl;
    st->groups = cs->ng;
    st->complex = cs->ncplx;
    for (int i = 0; i < cs->ng; i++)
        st->deep_groups += cs->g[i].sub != NULL;
}

void condset_free(struct condset *cs)
{
    if (!cs)
        return;
    for (int i = 0; i < cs->n; i++) {
        for (int k = 0; k < cs->m[i].nt; k++)
            free(cs->m[i].t[k].label);
        free(cs->m[i].t);
        free(cs->m[i].all);
        free(cs->m[i].any);
        free(cs->m[i].none);
    }
    free(cs->m);
    for (int i = 0; i < cs->ncl; i++) {
        cond_free(cs->cl[i].c);
        free(cs->cl[i].text);
        free(cs->cl[i].users);
    }
    free(cs->cl);
    for (int i = 0; i < cs->ng; i++) {
        free(cs->g[i].sub);
        free(cs->g[i].cl);
    }
    free(cs->g);
    free(cs->gusers);
    for (int i = 0; i < cs->nroots; i++) {
        free(cs->roots[i].name);
        free(cs->roots[i].groups);
    }
    free(cs->roots);
    free(cs->cplx);
    for (int i = 0; i < cs->nrefs; i++)
        free(cs->refs[i]);
    free(cs->refs);
    free(cs->segm);
    free(cs->segm_list);
    free(cs);
}

/* ---- building ----------------------------------------------------------- */

struct bmember {
    json_t *cond;
    char **ids[3]; /* all, any, none */
    int nids[3];
    bool set, has_any;
};

struct condset_build {
    int n;
    struct bmember *m;
};

int condset_build_new(int n, struct condset_build **out)
{
    *out = NULL;
    if (n < 0 || n > CONDSET_MAX_MEMBERS)
        return ERR_INVAL;
    struct condset_build *b = calloc(1, sizeof *b);
    if (!b || !(b->m = calloc((size_t)(n ? n : 1), sizeof *b->m))) {
        free(b);
        return ERR_NOMEM;
    }
    b->n = n;
    *out = b;
    return 0;
}

void condset_build_free(struct condset_build *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->n; i++) {
        json_decref(b->m[i].cond);
        for (int k = 0; k < 3; k++) {
            for (int j = 0; j < b->m[i].nids[k]; j++)
                free(b->m[i].ids[k][j]);
            free(b->m[i].ids[k]);
        }
    }
    free(b->m);
    free(b);
}

static int copy_ids(char ***dst, int *nd, const char *const *src, int n)
{
    *dst = NULL;
    *nd = 0;
    if (!src || n <= 0)
        return 0;
    if (!(*dst = calloc((size_t)n, sizeof **dst)))
        return ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        if (!src[i] || !((*dst)[i] = strdup(src[i])))
            return src[i] ? ERR_NOMEM : ERR_INVAL;
        (*nd)++;
    }
    return 0;
}

int condset_build_set(struct condset_build *b, int i, const json_t *cond,
                      const char *const *all, int nall, const char *const *any, int nany,
                      const char *const *none, int nnone, struct reqerr *err)
{
    if (i < 0 || i >= b->n || b->m[i].set) {
        if (err)
            reqerr_set(err, 400, "invalid", NULL, "member %d: out of range or set twice", i);
        return ERR_INVAL;
    }
    struct bmember *m = &b->m[i];
    m->set = true;
    if (cond) {
        if (!json_is_object(cond)) {
            if (err)
                reqerr_set(err, 400, "invalid_condition", "$", "$: a condition is an object");
            return ERR_INVAL;
        }
        struct cond *c;
        struct cond_opts o = { .mode = COND_STRICT };
        int rc = cond_compile(cond, &o, &c, err);
        if (rc)
            return rc;
        cond_free(c);
        m->cond = json_deep_copy(cond);
        if (!m->cond)
            return ERR_NOMEM;
    }
    int rc = copy_ids(&m->ids[0], &m->nids[0], all, nall);
    if (!rc)
        rc = copy_ids(&m->ids[1], &m->nids[1], any, nany);
    if (!rc)
        rc = copy_ids(&m->ids[2], &m->nids[2], none, nnone);
    m->has_any = any != NULL;
    return rc;
}

/* A growable list of strings kept unique through a small open hash. */
struct strset {
    char **v;
    int n, cap;
    int *slot;   /* hash slots: index + 1, 0 empty */
    size_t nslot;
};

static uint64_t fnv64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV64_INIT 0xcbf29ce484222325ull

/* Index of `s` in the set, adding it (copied) when new; -1 out of memory. */
static int strset_add(struct strset *ss, const char *s, size_t len, bool *added)
{
    if (added)
        *added = false;
    if ((size_t)(ss->n + 1) * 2 > ss->nslot) {
        size_t ns = ss->nslot ? ss->nslot * 2 : 64;
        int *sl = calloc(ns, sizeof *sl);
        if (!sl)
            return -1;
        for (int i = 0; i < ss->n; i++) {
            size_t h = fnv64(ss->v[i], strlen(ss->v[i]), FNV64_INIT) & (ns - 1);
            while (sl[h])
                h = (h + 1) & (ns - 1);
            sl[h] = i + 1;
        }
        free(ss->slot);
        ss->slot = sl;
        ss->nslot = ns;
    }
    size_t h = fnv64(s, len, FNV64_INIT) & (ss->nslot - 1);
    while (ss->slot[h]) {
        const char *o = ss->v[ss->slot[h] - 1];
        if (strlen(o) == len && !memcmp(o, s, len))
            return ss->slot[h] - 1;
        h = (h + 1) & (ss->nslot - 1);
    }
    if (ss->n == ss->cap) {
        int nc = ss->cap ? ss->cap * 2 : 16;
        char **nv = realloc(ss->v, (size_t)nc * sizeof *nv);
        if (!nv)
            return -1;
        ss->v = nv;
        ss->cap = nc;
    }
    char *c = strndup(s, len);
    if (!c)
        return -1;
    ss->v[ss->n] = c;
    ss->slot[h] = ss->n + 1;
    if (added)
        *added = true;
    return ss->n++;
}

static void strset_free(struct strset *ss, bool keep_strings)
{
    if (!keep_strings)
        for (int i = 0; i < ss->n; i++)
            free(ss->v[i]);
    free(ss->v);
    free(ss->slot);
}

/* One clause as found while splitting a member's condition. */
struct pend {
    int member;
    uint8_t kind;   /* T_CLAUSE or T_SEG */
    int idx;        /* clause text index, or ref id index */
    char *label;
};

struct splitter {
    struct strset texts;   /* clause documents (compact JSON) */
    struct strset refids;  /* segment ids (unsorted while building) */
    struct pend *p;
    int np, capp;
    int rc;
};

static void add_pend(struct splitter *s, int member, uint8_t kind, int idx, const char *label)
{
    if (s->rc)
        return;
    if (s->np == s->capp) {
        int nc = s->capp ? s->capp * 2 : 64;
        struct pend *np = realloc(s->p, (size_t)nc * sizeof *np);
        if (!np) {
            s->rc = ERR_NOMEM;
            return;
        }
        s->p = np;
        s->capp = nc;
    }
    char *l = strdup(label);
    if (!l) {
        s->rc = ERR_NOMEM;
        return;
    }
    s->p[s->np++] = (struct pend){ member, kind, idx, l };
}

/* The label of key `k` under `prefix`, in cond's error-path syntax. */
static void label_of(char *out, size_t len, const char *prefix, const char *k)
{
    snprintf(out, len, "%s.%s", prefix, k[0] == '$' ? k + 1 : k);
}

/* Split document `doc` (an object) into clauses ANDed together: each key
 * is one clause, except `$and` lists, whose documents are split in turn,
 * and `{"$segment": "id"}`, which becomes a membership test. */
static void split_doc(struct splitter *s, int member, const json_t *doc, const char *prefix,
                      int depth)
{
    const char *k;
    json_t *v;
    char label[512];
    json_object_foreach((json_t *)doc, k, v) {
        if (s->rc)
            return;
        if (!strcmp(k, "$and") && json_is_array(v) && depth < COND_MAX_DEPTH) {
            size_t i;
            json_t *item;
            bool all_docs = true;
            json_array_foreach(v, i, item)
                all_docs &= json_is_object(item);
            if (all_docs) {
                json_array_foreach(v, i, item) {
                    snprintf(label, sizeof label, "%s.and[%zu]", prefix, i);
                    split_doc(s, member, item, label, depth + 1);
                }
                continue;
            }
        }
        label_of(label, sizeof label, prefix, k);
        if (!strcmp(k, "$segment") && json_is_string(v)) {
            int r = strset_add(&s->refids, json_string_value(v), json_string_length(v), NULL);
            if (r < 0) {
                s->rc = ERR_NOMEM;
                return;
            }
            add_pend(s, member, T_SEG, r, label);
            continue;
        }
        json_t *one = json_object();
        if (!one || json_object_set(one, k, v)) {
            json_decref(one);
            s->rc = ERR_NOMEM;
            return;
        }
        char *text = json_dumps(one, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(one);
        if (!text) {
            s->rc = ERR_NOMEM;
            return;
        }
        int t = strset_add(&s->texts, text, strlen(text), NULL);
        free(text);
        if (t < 0) {
            s->rc = ERR_NOMEM;
            return;
        }
        add_pend(s, member, T_CLAUSE, t, label);
    }
}

/* Which group a clause belongs to: every path it reads starts with the
 * same attribute (the root), and, when they also share the next key and
 * that key is an ordinary name (not an index or `length`), that key too.
 * Roots that are indexes or `length` are left ungrouped: their value is
 * not simply the bytes under a key. */
static bool plain_name(const char *s, size_t n)
{
    if (!n || (n == 6 && !memcmp(s, "length", 6)))
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return true;
    return false;
}

static bool clause_root(const struct cond *c, const char **root, size_t *rl, const char **sub,
                        size_t *sl)
{
    size_t np = cond_npaths(c);
    if (!np || cond_nsegments(c))
        return false;
    const char *r0 = NULL, *s0 = NULL;
    size_t r0l = 0, s0l = 0;
    bool deep = true;
    for (size_t i = 0; i < np; i++) {
        const char *p = cond_path(c, i);
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (i == 0) {
            r0 = p;
            r0l = l;
        } else if (l != r0l || memcmp(p, r0, l)) {
            return false;
        }
        if (!dot) {
            deep = false;
            continue;
        }
        const char *q = dot + 1, *dot2 = strchr(q, '.');
        size_t ql = dot2 ? (size_t)(dot2 - q) : strlen(q);
        if (!s0) {
            s0 = q;
            s0l = ql;
        } else if (ql != s0l || memcmp(q, s0, ql)) {
            deep = false;
        }
    }
    if (!plain_name(r0, r0l))
        return false;
    *root = r0;
    *rl = r0l;
    *sub = deep && s0 && plain_name(s0, s0l) ? s0 : NULL;
    *sl = *sub ? s0l : 0;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int finish(struct condset_build *b, struct condset *cs)
{
    struct splitter s = { 0 };
    int rc = 0;
    /* every referenced id, then the clauses of each condition */
    for (int i = 0; i < b->n && !s.rc; i++)
        for (int k = 0; k < 3; k++)
            for (int j = 0; j < b->m[i].nids[k]; j++)
                if (strset_add(&s.refids, b->m[i].ids[k][j], strlen(b->m[i].ids[k][j]), NULL) < 0)
                    s.rc = ERR_NOMEM;
    for (int i = 0; i < b->n && !s.rc; i++)
        if (b->m[i].cond)
            split_doc(&s, i, b->m[i].cond, "$", 0);
    int *refmap = NULL;
    if ((rc = s.rc))
        goto out;
    /* compile the distinct clauses; their segment ids join the refs */
    cs->ncl = s.texts.n;
    if (cs->ncl && !(cs->cl = calloc((size_t)cs->ncl, sizeof *cs->cl))) {
        rc = ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < cs->ncl; i++) {
        json_error_t je;
        json_t *doc = json_loads(s.texts.v[i], 0, &je);
        struct cond_opts o = { .mode = COND_LENIENT };
        rc = doc ? cond_compile(doc, &o, &cs->cl[i].c, NULL) : ERR_NOMEM;
        json_decref(doc);
        if (rc)
            goto out;
        cs->cl[i].text = s.texts.v[i];
        s.texts.v[i] = NULL;
        cs->cl[i].group = -1;
        for (size_t k = 0; k < cond_nsegments(cs->cl[i].c); k++) {
            const char *id = cond_segment(cs->cl[i].c, k);
            if (strset_add(&s.refids, id, strlen(id), NULL) < 0) {
                rc = ERR_NOMEM;
                goto out;
            }
        }
    }
    if (s.refids.n > CONDSET_MAX_REFS) {
        rc = ERR_TOOBIG;
        goto out;
    }
    /* refs sorted; refmap: insertion index → sorted index */
    cs->nrefs = s.refids.n;
    cs->nrw = CONDSET_WORDS(cs->nrefs ? cs->nrefs : 1);
    if (cs->nrefs) {
        if (!(cs->refs = malloc((size_t)cs->nrefs * sizeof *cs->refs)) ||
            !(refmap = malloc((size_t)cs->nrefs * sizeof *refmap))) {
            rc = ERR_NOMEM;
            goto out;
        }
        memcpy(cs->refs, s.refids.v, (size_t)cs->nrefs * sizeof *cs->refs);
        qsort(cs->refs, (size_t)cs->nrefs, sizeof *cs->refs, cmp_str);
        for (int i = 0; i < cs->nrefs; i++)
            refmap[i] = condset_ref_find(cs, s.refids.v[i], strlen(s.refids.v[i]));
        s.refids.n = 0; /* the strings now belong to cs->refs */
    }
    /* clause users, groups, roots */
    for (int i = 0; i < cs->ncl; i++)
        if (!(cs->cl[i].users = calloc(cs->nw, sizeof(uint64_t)))) {
            rc = ERR_NOMEM;
            goto out;
        }
    struct strset roots = { 0 }, gkeys = { 0 };
    for (int i = 0; i < cs->ncl && !rc; i++) {
        const char *r, *sub;
        size_t rl, sl;
        if (!clause_root(cs->cl[i].c, &r, &rl, &sub, &sl))
            continue;
        char key[600];
        int kl = snprintf(key, sizeof key, "%.*s%c%.*s", (int)rl, r, 0, (int)sl, sub ? sub : "");
        if (kl >= (int)sizeof key)
            continue; /* an absurdly long name: evaluate it on its own */
        bool added;
        int gi = strset_add(&gkeys, key, (size_t)kl, &added);
        int ri = strset_add(&roots, r, rl, NULL);
        if (gi < 0 || ri < 0) {
            rc = ERR_NOMEM;
            break;
        }
        if (added) {
            struct group *ng = realloc(cs->g, (size_t)(cs->ng + 1) * sizeof *ng);
            if (!ng) {
                rc = ERR_NOMEM;
                break;
            }
            cs->g = ng;
            struct group *g = &cs->g[cs->ng++];
            memset(g, 0, sizeof *g);
            g->root = ri;
            g->users = NULL; /* placed in cs->gusers once the groups are known */
            if (sub && !(g->sub = strndup(sub, sl)))
                rc = ERR_NOMEM;
            g->sublen = sl;
        }
        struct group *g = &cs->g[gi];
        int *nc = realloc(g->cl, (size_t)(g->ncl + 1) * sizeof *nc);
        if (!nc) {
            rc = ERR_NOMEM;
            break;
        }
        g->cl = nc;
        g->cl[g->ncl++] = i;
        cs->cl[i].group = gi;
    }
    strset_free(&gkeys, false);
    /* the groups' user bitsets side by side: the evaluation reads them all */
    if (!rc && cs->ng && !(cs->gusers = calloc((size_t)cs->ng * cs->nw, sizeof(uint64_t))))
        rc = ERR_NOMEM;
    for (int gi = 0; !rc && gi < cs->ng; gi++)
        cs->g[gi].users = cs->gusers + (size_t)gi * cs->nw;
    if (!rc) {
        cs->nroots = roots.n;
        if (roots.n && !(cs->roots = calloc((size_t)roots.n, sizeof *cs->roots)))
            rc = ERR_NOMEM;
        for (int i = 0; i < roots.n && !rc; i++) {
            cs->roots[i].name = roots.v[i];
            cs->roots[i].len = strlen(roots.v[i]);
            roots.v[i] = NULL;
        }
        for (int gi = 0; gi < cs->ng && !rc; gi++) {
            struct root *ro = &cs->roots[cs->g[gi].root];
            int *ng = realloc(ro->groups, (size_t)(ro->ngroups + 1) * sizeof *ng);
            if (!ng)
                rc = ERR_NOMEM;
            else
                (ro->groups = ng)[ro->ngroups++] = gi;
        }
    }
    for (int i = 0; i < roots.n; i++)
        free(roots.v[i]);
    strset_free(&roots, true);
    if (rc)
        goto out;
    for (int i = 0; i < cs->ncl; i++)
        if (cs->cl[i].group < 0)
            cs->ncplx++;
    if (cs->ncplx && !(cs->cplx = malloc((size_t)cs->ncplx * sizeof *cs->cplx))) {
        rc = ERR_NOMEM;
        goto out;
    }
    for (int i = 0, k = 0; i < cs->ncl; i++)
        if (cs->cl[i].group < 0)
            cs->cplx[k++] = i;
    /* members: their tests in written order, membership masks */
    if (!(cs->segm = calloc(cs->nw, sizeof(uint64_t)))) {
        rc = ERR_NOMEM;
        goto out;
    }
    for (int k = 0; k < s.np; k++) {
        struct pend *p = &s.p[k];
        struct cmember *m = &cs->m[p->member];
        struct ctest *nt = realloc(m->t, (size_t)(m->nt + 1) * sizeof *nt);
        if (!nt) {
            rc = ERR_NOMEM;
            goto out;
        }
        m->t = nt;
        int idx = p->kind == T_SEG ? refmap[p->idx] : p->idx;
        m->t[m->nt++] = (struct ctest){ p->kind, idx, p->label };
        p->label = NULL;
        if (p->kind == T_CLAUSE) {
            bit_set(cs->cl[idx].users, p->member);
            if (cs->cl[idx].group >= 0)
                bit_set(cs->g[cs->cl[idx].group].users, p->member);
        } else {
            if (!m->all && !(m->all = calloc(cs->nrw, sizeof(uint64_t)))) {
                rc = ERR_NOMEM;
                goto out;
            }
            bit_set(m->all, idx);
            bit_set(cs->segm, p->member);
        }
    }
    for (int i = 0; i < b->n; i++) {
        struct bmember *bm = &b->m[i];
        struct cmember *m = &cs->m[i];
        uint64_t **dst[3] = { &m->all, &m->any, &m->none };
        for (int k = 0; k < 3; k++) {
            if (!bm->nids[k] && !(k == 1 && bm->has_any))
                continue;
            if (!*dst[k] && !(*dst[k] = calloc(cs->nrw, sizeof(uint64_t)))) {
                rc = ERR_NOMEM;
                goto out;
            }
            for (int j = 0; j < bm->nids[k]; j++)
                bit_set(*dst[k], condset_ref_find(cs, bm->ids[k][j], strlen(bm->ids[k][j])));
            bit_set(cs->segm, i);
            if (k == 0)
                continue;
            struct ctest *nt = realloc(m->t, (size_t)(m->nt + 1) * sizeof *nt);
            if (!nt) {
                rc = ERR_NOMEM;
                goto out;
            }
            m->t = nt;
            m->t[m->nt++] = (struct ctest){ k == 1 ? T_ANY : T_NONE, -1, NULL };
        }
        /* `all` ids given directly: a test each, before the condition's */
        for (int j = bm->nids[0] - 1; j >= 0; j--) {
            struct ctest *nt = realloc(m->t, (size_t)(m->nt + 1) * sizeof *nt);
            char *l = malloc(strlen(bm->ids[0][j]) + 16);
            if (!nt || !l) {
                free(l);
                if (nt)
                    m->t = nt;
                rc = ERR_NOMEM;
                goto out;
            }
            m->t = nt;
            memmove(m->t + 1, m->t, (size_t)m->nt * sizeof *m->t);
            sprintf(l, "segment %s", bm->ids[0][j]);
            m->t[0] = (struct ctest){ T_SEG, condset_ref_find(cs, bm->ids[0][j],
                                                              strlen(bm->ids[0][j])), l };
            m->nt++;
        }
    }
    for (int i = 0; i < cs->n; i++)
        cs->nsegm += bit_get(cs->segm, i);
    if (cs->nsegm && !(cs->segm_list = malloc((size_t)cs->nsegm * sizeof(int)))) {
        rc = ERR_NOMEM;
        goto out;
    }
    for (int i = 0, k = 0; i < cs->n; i++)
        if (bit_get(cs->segm, i))
            cs->segm_list[k++] = i;
out:
    for (int k = 0; k < s.np; k++)
        free(s.p[k].label);
    free(s.p);
    free(refmap);
    strset_free(&s.texts, false);
    strset_free(&s.refids, false);
    return rc;
}

int condset_build_finish(struct condset_build *b, struct condset **out)
{
    *out = NULL;
    struct condset *cs = calloc(1, sizeof *cs);
    if (!cs) {
        condset_build_free(b);
        return ERR_NOMEM;
    }
    cs->serial = __atomic_add_fetch(&g_serial, 1, __ATOMIC_RELAXED);
    cs->n = b->n;
    cs->nw = CONDSET_WORDS(b->n ? b->n : 1);
    cs->nrw = 1;
    int rc = (cs->m = calloc((size_t)(b->n ? b->n : 1), sizeof *cs->m)) ? finish(b, cs) : ERR_NOMEM;
    condset_build_free(b);
    if (rc) {
        condset_free(cs);
        return rc;
    }
    *out = cs;
    return 0;
}

/* ---- per-thread memory -------------------------------------------------- */

#define MEMO_KEYMAX 38      /* longer values are not remembered */
#define MEMO_BYTES (192u << 10) /* per group */
#define MEMO_RESETS 3       /* a group that fills up this often stops remembering */
#define SCRATCH_SETS 8      /* sets remembered per thread */

/* One remembered value: its hash, key and the group's verdict bitset
 * inline, so a look-up touches one entry (one or two cache lines, fetched
 * ahead for every group before any is looked up: condset_eval). */
struct ment {
    uint64_t h;
    uint8_t used, klen;
    unsigned char key[MEMO_KEYMAX];
    uint64_t bits[];        /* nw words */
};

struct gmemo {
    uint32_t cap, n, maxcap;
    uint8_t resets, off;
    size_t stride;          /* bytes per entry */
    unsigned char *tab;     /* cap entries */
};

#define ENT(m, i) ((struct ment *)((m)->tab + (size_t)(i) * (m)->stride))

struct setmemo {
    uint64_t serial;
    size_t nw;
    int ng;
    struct gmemo *g;
    uint64_t used;          /* for eviction: last use */
};

struct rootval {
    const char *p;          /* NULL: absent */
    size_t len;
};

/* A group's key for one evaluation. */
struct gkey {
    uint64_t h;
    uint8_t need, keyed, kl;
    unsigned char key[MEMO_KEYMAX];
};

struct condset_scratch {
    struct setmemo sets[SCRATCH_SETS];
    struct gkey *gk;
    int gcap;
    uint64_t tick;
    struct cond_attrs attrs;
    bool attrs_ready, attrs_ok;
    const char *attrs_mp;
    struct rootval *rv;
    int rvcap;
    uint64_t *tmp;          /* a group's result while it is computed */
    size_t tmpcap;
};

struct condset_scratch *condset_scratch_new(void)
{
    return calloc(1, sizeof(struct condset_scratch));
}

static void setmemo_clear(struct setmemo *sm)
{
    for (int i = 0; i < sm->ng; i++)
        free(sm->g[i].tab);
    free(sm->g);
    memset(sm, 0, sizeof *sm);
}

void condset_scratch_free(struct condset_scratch *sc)
{
    if (!sc)
        return;
    for (int i = 0; i < SCRATCH_SETS; i++)
        setmemo_clear(&sc->sets[i]);
    if (sc->attrs_ready && sc->attrs_ok)
        cond_attrs_free(&sc->attrs);
    free(sc->rv);
    free(sc->tmp);
    free(sc->gk);
    free(sc);
}

static struct setmemo *memo_for(struct condset_scratch *sc, const struct condset *cs)
{
    struct setmemo *victim = &sc->sets[0];
    sc->tick++;
    for (int i = 0; i < SCRATCH_SETS; i++) {
        struct setmemo *sm = &sc->sets[i];
        if (sm->serial == cs->serial) {
            sm->used = sc->tick;
            return sm;
        }
        if (sm->used < victim->used)
            victim = sm;
    }
    setmemo_clear(victim);
    if (cs->ng && !(victim->g = calloc((size_t)cs->ng, sizeof *victim->g)))
        return NULL;
    victim->serial = cs->serial;
    victim->nw = cs->nw;
    victim->ng = cs->ng;
    victim->used = sc->tick;
    size_t per = (sizeof(struct ment) + cs->nw * sizeof(uint64_t) + 15) & ~(size_t)15;
    uint32_t maxcap = 16;
    while ((size_t)maxcap * 2 * per <= MEMO_BYTES && maxcap < 8192)
        maxcap *= 2;
    for (int i = 0; i < cs->ng; i++) {
        victim->g[i].maxcap = maxcap;
        victim->g[i].stride = per;
    }
    return victim;
}

/* The entry where the probe for hash `h` starts, to fetch it ahead. */
static inline const void *gmemo_home(const struct gmemo *m, uint64_t h)
{
    return m->cap ? ENT(m, (uint32_t)h & (m->cap - 1)) : NULL;
}

/* Look `key` up; NULL when absent. */
static const uint64_t *gmemo_get(const struct gmemo *m, uint64_t h, const unsigned char *key,
                                 size_t kl)
{
    if (!m->cap)
        return NULL;
    uint32_t mask = m->cap - 1, i = (uint32_t)h & mask;
    for (;;) {
        const struct ment *e = ENT(m, i);
        if (!e->used)
            return NULL;
        if (e->h == h && e->klen == kl && !memcmp(e->key, key, kl))
            return e->bits;
        i = (i + 1) & mask;
    }
}

static int gmemo_resize(struct gmemo *m, size_t nw, uint32_t cap)
{
    unsigned char *tab = calloc(cap, m->stride);
    if (!tab)
        return ERR_NOMEM;
    struct gmemo n = *m;
    n.tab = tab;
    n.cap = cap;
    for (uint32_t j = 0; j < m->cap; j++) {
        const struct ment *e = ENT(m, j);
        if (!e->used)
            continue;
        uint32_t i = (uint32_t)e->h & (cap - 1);
        while (ENT(&n, i)->used)
            i = (i + 1) & (cap - 1);
        memcpy(ENT(&n, i), e, sizeof *e + nw * sizeof(uint64_t));
    }
    free(m->tab);
    m->tab = tab;
    m->cap = cap;
    return 0;
}

static void gmemo_put(struct gmemo *m, size_t nw, uint64_t h, const unsigned char *key, size_t kl,
                      const uint64_t *bits)
{
    if (m->off)
        return;
    if ((m->n + 1) * 4 > m->cap * 3) {
        if (m->cap < m->maxcap) {
            if (gmemo_resize(m, nw, m->cap ? m->cap * 2 : 16))
                return;
        } else {
            /* full: the values do not repeat enough to be worth keeping */
            if (++m->resets >= MEMO_RESETS) {
                free(m->tab);
                m->tab = NULL;
                m->cap = m->n = 0;
                m->off = 1;
                return;
            }
            memset(m->tab, 0, m->cap * m->stride);
            m->n = 0;
        }
    }
    uint32_t mask = m->cap - 1, i = (uint32_t)h & mask;
    while (ENT(m, i)->used)
        i = (i + 1) & mask;
    struct ment *e = ENT(m, i);
    e->used = 1;
    e->h = h;
    e->klen = (uint8_t)kl;
    memcpy(e->key, key, kl);
    memcpy(e->bits, bits, nw * sizeof *bits);
    m->n++;
}

/* ---- evaluating --------------------------------------------------------- */

struct segctx {
    const struct condset *cs;
    const uint64_t *refs;
};

static int seg_cb(void *ud, const char *id, size_t idlen, const char *mp, size_t len)
{
    (void)mp;
    (void)len;
    const struct segctx *x = ud;
    int k = condset_ref_find(x->cs, id, idlen);
    return k >= 0 && x->refs && bit_get(x->refs, k);
}

static int eval_clause(const struct condset *cs, struct condset_scratch *sc, int ci, const char *mp,
                       size_t len, const uint64_t *refs)
{
    if (!sc->attrs_ready) {
        sc->attrs_ready = true;
        sc->attrs_ok = cond_attrs_init(&sc->attrs, mp, len) == 0;
    }
    struct segctx x = { cs, refs };
    struct cond_env env = { .segment = seg_cb, .segment_ud = &x };
    const struct cond *c = cs->cl[ci].c;
    return sc->attrs_ok ? cond_eval_attrs(c, &sc->attrs, &env) : cond_eval(c, mp, len, &env);
}

static void done_attrs(struct condset_scratch *sc)
{
    if (sc->attrs_ready && sc->attrs_ok)
        cond_attrs_free(&sc->attrs);
    sc->attrs_ready = false;
}

/* Find the value of every root in the top-level map (the last pair with
 * that key wins, as cond reads it).  false when the map cannot be read by
 * key bytes (not a map, a key that is not a str): then nothing is
 * remembered for this profile. */
static bool find_roots(const struct condset *cs, struct condset_scratch *sc, const char *mp,
                       size_t len)
{
    if (sc->rvcap < cs->nroots) {
        struct rootval *nr = realloc(sc->rv, (size_t)cs->nroots * sizeof *nr);
        if (!nr)
            return false;
        sc->rv = nr;
        sc->rvcap = cs->nroots;
    }
    for (int i = 0; i < cs->nroots; i++)
        sc->rv[i].p = NULL;
    uint32_t count;
    size_t at, n;
    if (mpread_map(mp, len, &count, &at))
        return false;
    for (uint32_t k = 0; k < count; k++) {
        if (!mpread_is_str(mp + at, len - at))
            return false;
        const char *key;
        uint32_t kl;
        if (mpread_str(mp + at, len - at, &key, &kl, &n))
            return false;
        at += n;
        if (mpread_skip(mp + at, len - at, &n))
            return false;
        /* roots are few: a linear scan of names beats hashing them */
        for (int i = 0; i < cs->nroots; i++)
            if (cs->roots[i].len == kl && cs->roots[i].name[0] == key[0] &&
                !memcmp(cs->roots[i].name, key, kl)) {
                sc->rv[i].p = mp + at;
                sc->rv[i].len = n;
                break;
            }
        at += n;
    }
    return true;
}

/* Does map `p` have only str keys?  (Then a key's bytes name it exactly.) */
static bool str_keyed_map(const char *p, size_t len)
{
    uint32_t count;
    size_t at, n;
    if (mpread_map(p, len, &count, &at))
        return false;
    for (uint32_t k = 0; k < count; k++) {
        if (!mpread_is_str(p + at, len - at) || mpread_skip(p + at, len - at, &n))
            return false;
        at += n;
        if (mpread_skip(p + at, len - at, &n))
            return false;
        at += n;
    }
    return true;
}

/* The bytes a group's clauses depend on, tagged: 'X' root absent, 'P' the
 * value there, 'M' key absent in the root map, 'N' the root is not a map
 * with str keys (then the whole root value).  false when too long to
 * remember. */
static bool group_key(const struct condset *cs, const struct group *g, const struct rootval *rv,
                      unsigned char *key, size_t *kl)
{
    (void)cs;
    if (!rv->p) {
        key[0] = 'X';
        *kl = 1;
        return true;
    }
    const char *v = rv->p;
    size_t vl = rv->len;
    char tag = 'P';
    if (g->sub) {
        const char *sv;
        size_t sl;
        int f = str_keyed_map(rv->p, rv->len) ? mpread_find(rv->p, rv->len, g->sub, g->sublen, &sv, &sl)
                                              : -1;
        if (f == 1) {
            v = sv;
            vl = sl;
        } else if (f == 0) {
            tag = 'M';
            vl = 0;
        } else {
            tag = 'N';
        }
    }
    if (vl + 1 > MEMO_KEYMAX)
        return false;
    key[0] = (unsigned char)tag;
    memcpy(key + 1, v, vl);
    *kl = vl + 1;
    return true;
}

int condset_eval(const struct condset *cs, struct condset_scratch *sc, const char *mp, size_t len,
                 const uint64_t *refs, const uint64_t *mask, uint64_t *out)
{
    size_t nw = cs->nw;
    if (mask)
        memcpy(out, mask, nw * sizeof *out);
    else
        memset(out, 0xff, nw * sizeof *out);
    if (cs->n & 63)
        out[nw - 1] &= (1ull << (cs->n & 63)) - 1;
    if (!cs->n) {
        out[0] = 0;
        return 0;
    }
    /* membership tests: a few words per member that has them */
    for (int k = 0; k < cs->nsegm; k++) {
        int i = cs->segm_list[k];
        if (!bit_get(out, i))
            continue;
        const struct cmember *m = &cs->m[i];
        bool ok = true;
        for (size_t w = 0; w < cs->nrw && ok; w++) {
            uint64_t r = refs ? refs[w] : 0;
            if (m->all && (r & m->all[w]) != m->all[w])
                ok = false;
            if (m->none && (r & m->none[w]))
                ok = false;
        }
        if (ok && m->any)
            ok = refs && bits_meet(refs, m->any, cs->nrw);
        if (!ok)
            out[i >> 6] &= ~(1ull << (i & 63));
    }
    sc->attrs_ready = false;
    struct setmemo *sm = cs->ng ? memo_for(sc, cs) : NULL;
    if (cs->ng && !sm)
        return ERR_NOMEM;
    bool roots = cs->ng && find_roots(cs, sc, mp, len);
    if (sc->tmpcap < nw) {
        uint64_t *t = realloc(sc->tmp, nw * sizeof *t);
        if (!t)
            return ERR_NOMEM;
        sc->tmp = t;
        sc->tmpcap = nw;
    }
    /* the groups still needed: their keys and hashes first, each memory
     * entry fetched ahead, so the look-ups below overlap their misses */
    if (sc->gcap < cs->ng) {
        struct gkey *k = realloc(sc->gk, (size_t)cs->ng * sizeof *k);
        if (!k)
            return ERR_NOMEM;
        sc->gk = k;
        sc->gcap = cs->ng;
    }
    for (int gi = 0; gi < cs->ng; gi++) {
        const struct group *g = &cs->g[gi];
        struct gkey *gk = &sc->gk[gi];
        gk->need = bits_meet(g->users, out, nw);
        gk->keyed = 0;
        if (!gk->need || !roots || sm->g[gi].off)
            continue;
        size_t kl;
        if (group_key(cs, g, &sc->rv[g->root], gk->key, &kl)) {
            gk->keyed = 1;
            gk->kl = (uint8_t)kl;
            gk->h = fnv64(gk->key, kl, FNV64_INIT);
            const char *home = gmemo_home(&sm->g[gi], gk->h);
            if (home) {
                __builtin_prefetch(home);
                __builtin_prefetch(home + 64);
            }
        }
    }
    for (int gi = 0; gi < cs->ng; gi++) {
        const struct group *g = &cs->g[gi];
        const struct gkey *gk = &sc->gk[gi];
        if (!gk->need || !bits_meet(g->users, out, nw))
            continue;
        struct gmemo *gm = &sm->g[gi];
        if (gk->keyed) {
            const uint64_t *hit = gmemo_get(gm, gk->h, gk->key, gk->kl);
            if (hit) {
                for (size_t w = 0; w < nw; w++)
                    out[w] &= hit[w];
                continue;
            }
            /* the whole group, for every member, to remember it */
            uint64_t *r = sc->tmp;
            memset(r, 0xff, nw * sizeof *r);
            for (int k = 0; k < g->ncl; k++) {
                const struct clause *c = &cs->cl[g->cl[k]];
                if (eval_clause(cs, sc, g->cl[k], mp, len, refs) != 1)
                    for (size_t w = 0; w < nw; w++)
                        r[w] &= ~c->users[w];
            }
            gmemo_put(gm, nw, gk->h, gk->key, gk->kl, r);
            for (size_t w = 0; w < nw; w++)
                out[w] &= r[w];
            continue;
        }
        /* not remembered: only the clauses of members still in the running */
        for (int k = 0; k < g->ncl; k++) {
            const struct clause *c = &cs->cl[g->cl[k]];
            if (!bits_meet(c->users, out, nw))
                continue;
            if (eval_clause(cs, sc, g->cl[k], mp, len, refs) != 1)
                for (size_t w = 0; w < nw; w++)
                    out[w] &= ~c->users[w];
        }
    }
    for (int k = 0; k < cs->ncplx; k++) {
        const struct clause *c = &cs->cl[cs->cplx[k]];
        if (!bits_meet(c->users, out, nw))
            continue;
        if (eval_clause(cs, sc, cs->cplx[k], mp, len, refs) != 1)
            for (size_t w = 0; w < nw; w++)
                out[w] &= ~c->users[w];
    }
    done_attrs(sc);
    int count = 0;
    for (size_t w = 0; w < nw; w++)
        count += __builtin_popcountll(out[w]);
    return count;
}

static void append(char *why, size_t len, size_t *at, const char *fmt, const char *s)
{
    if (*at >= len)
        return;
    int n = snprintf(why + *at, len - *at, fmt, s);
    if (n > 0)
        *at += (size_t)n;
    if (*at >= len)
        *at = len - 1;
}

/* "gold, vip" for the refs set in `mask` (and, with `refs`, set or not set
 * there as `want` says). */
static void list_refs(const struct condset *cs, const uint64_t *mask, const uint64_t *refs, int want,
                      char *why, size_t len, size_t *at)
{
    int first = 1;
    for (int k = 0; k < cs->nrefs; k++) {
        if (!bit_get(mask, k))
            continue;
        if (want >= 0 && (refs && bit_get(refs, k)) != want)
            continue;
        append(why, len, at, first ? "%s" : ", %s", cs->refs[k]);
        first = 0;
    }
}

int condset_explain(const struct condset *cs, struct condset_scratch *sc, int i, const char *mp,
                    size_t len, const uint64_t *refs, char *why, size_t whylen)
{
    if (whylen)
        why[0] = 0;
    if (i < 0 || i >= cs->n)
        return 1;
    const struct cmember *m = &cs->m[i];
    size_t at = 0;
    sc->attrs_ready = false;
    int held = 1;
    for (int k = 0; k < m->nt && held; k++) {
        const struct ctest *t = &m->t[k];
        switch (t->kind) {
        case T_SEG:
            if (!(refs && bit_get(refs, t->idx))) {
                held = 0;
                append(why, whylen, &at, "%s: not in segment ", t->label);
                append(why, whylen, &at, "%s", cs->refs[t->idx]);
            }
            break;
        case T_ANY:
            if (!(refs && bits_meet(refs, m->any, cs->nrw))) {
                held = 0;
                append(why, whylen, &at, "%s", "segments: in none of ");
                list_refs(cs, m->any, NULL, -1, why, whylen, &at);
            }
            break;
        case T_NONE:
            if (refs && bits_meet(refs, m->none, cs->nrw)) {
                held = 0;
                append(why, whylen, &at, "%s", "exclude: in ");
                list_refs(cs, m->none, refs, 1, why, whylen, &at);
            }
            break;
        default:
            if (eval_clause(cs, sc, t->idx, mp, len, refs) != 1) {
                held = 0;
                append(why, whylen, &at, "conditions %s ", t->label);
                append(why, whylen, &at, "%s", cs->cl[t->idx].text);
            }
            break;
        }
    }
    done_attrs(sc);
    return held;
}
