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
#include "engine/condset_internal.h"
#include "engine/cond.h"
#include "codec/mpread.h"
#include "base/err.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_serial; /* set identities: per-thread memory follows the set */

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
    for (int i = 0; i < cs->ncl; i++)
        st->native += cs->cl[i].fast != F_NONE;
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
        free(cs->cl[i].str);
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

/* Does clause document `doc` have one of the native shapes (struct
 * clause, condset_internal.h)?  Sets c->fast (F_NONE when not).  0 or
 * ERR_NOMEM. */
static int fast_form(const json_t *doc, struct clause *c)
{
    c->fast = F_NONE;
    const char *attr;
    json_t *v;
    if (json_object_size(doc) != 1)
        return 0;
    attr = json_object_iter_key(json_object_iter((json_t *)doc));
    v = json_object_iter_value(json_object_iter((json_t *)doc));
    if (!attr[0] || attr[0] == '$' || strchr(attr, '.') || !json_is_object(v) ||
        !json_object_size(v))
        return 0;
    json_t *em = json_object_get(v, "$elemMatch");
    if (em && json_object_size(v) == 1) {
        json_t *eq = json_object_get(em, "$eq");
        if (!eq || json_object_size(em) != 1 || !json_is_string(eq) || !json_string_length(eq))
            return 0;
        size_t n = json_string_length(eq);
        if (!(c->str = malloc(n)))
            return ERR_NOMEM;
        memcpy(c->str, json_string_value(eq), n);
        c->slen = n;
        c->fast = F_ELEM;
        return 0;
    }
    static const char *const names[] = { "$gt", "$gte", "$lt", "$lte", "$eq", "$ne", "$exists" };
    if (json_object_size(v) > F_MAXOPS)
        return 0;
    const char *k;
    json_t *x;
    int n = 0;
    json_object_foreach(v, k, x) {
        int op = -1;
        for (int j = 0; j < (int)(sizeof names / sizeof *names); j++)
            if (!strcmp(k, names[j]))
                op = j;
        if (op < 0)
            return 0;
        if (op == FO_EXISTS) {
            if (!json_is_boolean(x))
                return 0;
            if (!json_is_true(x))
                op = FO_MISSING;
        } else if (!json_is_number(x)) {
            return 0;
        }
        c->op[n] = (uint8_t)op;
        c->num[n] = op >= FO_EXISTS ? 0 : json_number_value(x);
        n++;
    }
    c->nops = (uint8_t)n;
    c->fast = F_NUM;
    return 0;
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
        if (!rc)
            rc = fast_form(doc, &cs->cl[i]);
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
        /* "root" or "root.sub": a root holds no dot (paths split at dots),
         * and the key must hold no NUL either — strset keeps C strings, so
         * a key with one never matched again and every clause made a group
         * of its own (nothing was shared, a memory per clause) */
        char key[600];
        int kl = sub ? snprintf(key, sizeof key, "%.*s.%.*s", (int)rl, r, (int)sl, sub)
                     : snprintf(key, sizeof key, "%.*s", (int)rl, r);
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
    for (int i = 0; i < cs->ncl; i++) /* the native forms read a whole root's value */
        if (cs->cl[i].group < 0 || cs->g[cs->cl[i].group].sub)
            cs->cl[i].fast = F_NONE;
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

