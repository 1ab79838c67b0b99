/*
 * cond_eval.c — evaluating a compiled condition against msgpack attributes.
 *
 * The walk follows GrowthBook's mongrule.ts function by function
 * (evalCondition, getPath, evalConditionValue, evalOperatorCondition,
 * elemMatch, isIn, isInAll), reading values straight out of the msgpack
 * bytes: a path lookup scans a map's keys and skips the values it does not
 * need, nothing is decoded into a tree.  Text is produced only when a
 * comparison needs it, through the sinks of cond_js.c.
 *
 * Clause order is the order JavaScript iterates the condition's keys
 * (array-index keys first, then insertion order; fixed at compile time), so
 * short-circuits, and the rare "the SDK would throw here" (COND_THROW),
 * happen exactly where they happen in the SDK.
 */
#include "engine/cond.h"
#include "engine/cond_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "codec/codec.h"

struct ctx {
    const struct cond_env *env;
    const char *root;
    size_t rootlen;
    const unsigned char *end;
    const unsigned char *const *slots; /* where each cond.roots value starts (NULL: absent) */
};

static int eval_doc(const struct ctx *x, const struct cdoc *d, const struct jv *obj);
static int eval_val(const struct ctx *x, const struct cval *vc, const struct jv *v, bool fold);

/* ------------------------------------------------------------------ */
/* literals and sets                                                  */

int cond_lit_cmp(const struct lit *a, const struct lit *b)
{
    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    switch (a->t) {
    case JT_BOOL: return (a->b > b->b) - (a->b < b->b);
    case JT_NUM: return (a->num > b->num) - (a->num < b->num); /* -0 == 0 */
    case JT_STR: {
        size_t m = a->len < b->len ? a->len : b->len;
        int c = memcmp(a->s, b->s, m);
        return c ? c : (a->len > b->len) - (a->len < b->len);
    }
    default: return 0;
    }
}

static bool set_find(const struct litset *set, const struct lit *k)
{
    uint32_t lo = 0, hi = set->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = cond_lit_cmp(&set->v[mid], k);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

int cond_litset_has(const struct litset *set, const struct jv *v, bool fold)
{
    if (!set || set->n == 0 || v->t == JT_ARR || v->t == JT_OBJ)
        return 0; /* objects are never === anything of the condition */
    if (v->t == JT_NUM && isnan(v->num))
        return 0;
    struct lit k = { .t = v->t, .b = v->b, .num = v->num };
    if (v->t != JT_STR)
        return set_find(set, &k);
    if (!fold) {
        k.s = (const char *)v->p;
        k.len = v->n;
        return set_find(set, &k);
    }
    struct sbuf low;
    cond_sbuf_init(&low);
    int rc = cond_js_lower((const char *)v->p, v->n, &low);
    if (rc == 0) {
        k.s = low.p;
        k.len = (uint32_t)low.len;
        rc = set_find(set, &k);
    }
    cond_sbuf_free(&low);
    return rc;
}

/* ------------------------------------------------------------------ */
/* coercions on values                                                */

/* `value * 1`: ToNumber(ToPrimitive(value)). */
static int to_number(const struct ctx *x, const struct jv *v, double *out)
{
    switch (v->t) {
    case JT_NULL: *out = 0; return 0;
    case JT_BOOL: *out = v->b; return 0;
    case JT_NUM: *out = v->num; return 0;
    case JT_STR: *out = cond_js_strnum((const char *)v->p, v->n); return 0;
    case JT_OBJ: *out = NAN; return 0;
    default: break;
    }
    struct sbuf b;
    cond_sbuf_init(&b);
    int rc = cond_js_tostring(v, x->end, &b.s, 0);
    if (rc == 0)
        *out = cond_js_strnum(b.p, b.len);
    cond_sbuf_free(&b);
    return rc;
}

/* Strict equality (===), and includes()'s SameValueZero for literals from
 * JSON (which cannot be NaN). */
static bool strict_eq(const struct jv *a, const struct lit *b)
{
    if (a->t != b->t)
        return false;
    switch (a->t) {
    case JT_NULL: return true;
    case JT_BOOL: return a->b == b->b;
    case JT_NUM: return a->num == b->num;
    case JT_STR: return a->n == b->len && memcmp(a->p, b->s, b->len) == 0;
    default: return false; /* distinct objects */
    }
}

/* JavaScript's `a < b` family after ToPrimitive: two strings compare by
 * code units, anything else as numbers (NaN: false). */
static int relational(const struct ctx *x, const struct jv *a, const struct lit *b, int code)
{
    struct sbuf prim;
    const char *as = NULL;
    size_t an = 0;
    int rc = 0;
    cond_sbuf_init(&prim);
    if (a->t == JT_STR) {
        as = (const char *)a->p;
        an = a->n;
    } else if (a->t == JT_ARR || a->t == JT_OBJ) {
        if ((rc = cond_js_tostring(a, x->end, &prim.s, 0)) != 0)
            goto out;
        as = prim.p;
        an = prim.len;
    }
    bool bstr = b->t == JT_STR || b->t == JT_ARR || b->t == JT_OBJ;
    int cmp;
    if (as && bstr) {
        cmp = cond_js_strcmp(as, an, b->s, b->len);
    } else {
        double na, nb;
        if (as)
            na = cond_js_strnum(as, an);
        else if ((rc = to_number(x, a, &na)) != 0)
            goto out;
        nb = bstr ? cond_js_strnum(b->s, b->len)
           : b->t == JT_NUM ? b->num : b->t == JT_BOOL ? b->b : 0;
        if (isnan(na) || isnan(nb)) {
            rc = 0;
            goto out;
        }
        cmp = (na > nb) - (na < nb);
    }
    switch (code) {
    case O_GT: rc = cmp > 0; break;
    case O_GTE: rc = cmp >= 0; break;
    case O_LT: rc = cmp < 0; break;
    default: rc = cmp <= 0; break;
    }
out:
    cond_sbuf_free(&prim);
    return rc;
}

/* String(value) as text: the string itself, or made into `tmp`. */
static int text_of(const struct ctx *x, const struct jv *v, struct sbuf *tmp, const char **s, size_t *n)
{
    if (v->t == JT_STR) {
        *s = (const char *)v->p;
        *n = v->n;
        return 0;
    }
    int rc = cond_js_tostring(v, x->end, &tmp->s, 0);
    *s = tmp->p;
    *n = tmp->len;
    return rc;
}

/* ------------------------------------------------------------------ */
/* paths                                                              */

static int walk(const struct ctx *x, const struct cpath *path, uint32_t from, struct jv cur,
                struct jv *out)
{
    for (uint32_t i = from; i < path->n; i++) {
        const struct pseg *sg = &path->seg[i];
        if (cur.t == JT_OBJ) {
            /* every pair is read: with a repeated key the last one counts */
            const unsigned char *p = cur.p;
            bool found = false;
            struct jv val;
            for (uint32_t k = 0; k < cur.n; k++) {
                const char *key;
                size_t klen;
                char tmp[32];
                int rc = cond_mp_key(&p, x->end, &key, &klen, tmp);
                if (rc)
                    return rc;
                if (klen == sg->len && memcmp(key, sg->s, klen) == 0) {
                    rc = cond_mp_item(&p, x->end, &val);
                    found = true;
                } else {
                    rc = cond_mp_skip(&p, x->end);
                }
                if (rc)
                    return rc;
            }
            if (!found)
                goto missing;
            cur = val;
        } else if (cur.t == JT_ARR) {
            if (sg->idx >= 0 && sg->idx < cur.n) {
                const unsigned char *p = cur.p;
                for (int64_t k = 0; k < sg->idx; k++) {
                    int rc = cond_mp_skip(&p, x->end);
                    if (rc)
                        return rc;
                }
                int rc = cond_mp_item(&p, x->end, &cur);
                if (rc)
                    return rc;
            } else if (sg->length) {
                uint32_t n = cur.n;
                cur.t = JT_NUM;
                cur.num = n;
            } else {
                goto missing;
            }
        } else {
            goto missing; /* scalars have no properties: null */
        }
    }
    *out = cur;
    return 0;
missing:
    out->t = JT_NULL;
    return 0;
}

/* getPath: a root clause starts from the value cond_eval noted for its
 * first segment; anything else walks from `obj`. */
static int get_path(const struct ctx *x, const struct clause *cl, const struct jv *obj, struct jv *out)
{
    if (cl->u.p.slot >= 0 && x->slots) {
        const unsigned char *p = x->slots[cl->u.p.slot];
        struct jv first;
        if (!p) {
            out->t = JT_NULL;
            return 0;
        }
        int rc = cond_mp_item(&p, x->end, &first);
        return rc ? rc : walk(x, &cl->u.p.path, 1, first, out);
    }
    return walk(x, &cl->u.p.path, 0, *obj, out);
}

/* Read the root map once, noting where the value of each attribute the
 * condition starts a path with begins (a repeated key: the last one). */
static int gather(const struct cond *c, const struct jv *root, const unsigned char *end,
                  const unsigned char **slots)
{
    const unsigned char *p = root->p;
    for (uint32_t i = 0; i < c->nroots; i++)
        slots[i] = NULL;
    for (uint32_t k = 0; k < root->n; k++) {
        const char *key;
        size_t klen;
        char tmp[32];
        int rc = cond_mp_key(&p, end, &key, &klen, tmp);
        if (rc)
            return rc;
        for (uint32_t i = 0; i < c->nroots; i++)
            if (c->roots[i].len == klen && memcmp(c->roots[i].s, key, klen) == 0) {
                slots[i] = p;
                break;
            }
        if ((rc = cond_mp_skip(&p, end)) != 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* operators                                                          */

static const struct litset EMPTY_SET = { 0, NULL };

/* isIn: an array attribute intersects, anything else is looked up. */
static int is_in(const struct ctx *x, const struct jv *v, const struct litset *set, bool fold)
{
    if (v->t != JT_ARR)
        return cond_litset_has(set, v, fold);
    const unsigned char *p = v->p;
    for (uint32_t i = 0; i < v->n; i++) {
        struct jv el;
        int rc = cond_mp_item(&p, x->end, &el);
        if (rc)
            return rc;
        if ((rc = cond_litset_has(set, &el, fold)) != 0)
            return rc;
    }
    return 0;
}

static int in_all(const struct ctx *x, const struct op *o, const struct jv *v, bool fold)
{
    if (o->bad || v->t != JT_ARR)
        return 0;
    for (uint32_t i = 0; i < o->u.list.n; i++) {
        const unsigned char *p = v->p;
        int passed = 0;
        for (uint32_t j = 0; j < v->n && !passed; j++) {
            struct jv el;
            int rc = cond_mp_item(&p, x->end, &el);
            if (rc)
                return rc;
            if ((passed = eval_val(x, o->u.list.v[i], &el, fold)) < 0)
                return passed;
        }
        if (!passed)
            return 0;
    }
    return 1;
}

static int elem_match(const struct ctx *x, const struct op *o, const struct jv *v)
{
    if (v->t != JT_ARR)
        return 0;
    if (o->code == O_ELEM_THROW)
        return COND_THROW;
    const unsigned char *p = v->p;
    for (uint32_t i = 0; i < v->n; i++) {
        struct jv el;
        int rc = cond_mp_item(&p, x->end, &el);
        if (rc)
            return rc;
        if (!cond_js_truthy(&el)) /* `actual[i] && check(actual[i])` */
            continue;
        rc = o->code == O_ELEM_VAL ? eval_val(x, o->u.vc, &el, false) : eval_doc(x, o->u.doc, &el);
        if (rc)
            return rc;
    }
    return 0;
}

static int version(const struct op *o, const struct jv *v)
{
    struct sbuf b;
    cond_sbuf_init(&b);
    int rc = cond_js_padver(v, &b);
    if (rc) {
        cond_sbuf_free(&b);
        return rc;
    }
    int c = cond_js_strcmp(b.p, b.len, o->u.text.s, o->u.text.len);
    cond_sbuf_free(&b);
    switch (o->code) {
    case O_VEQ: return c == 0;
    case O_VNE: return c != 0;
    case O_VGT: return c > 0;
    case O_VGTE: return c >= 0;
    case O_VLT: return c < 0;
    default: return c <= 0;
    }
}

static int jtype(const struct jv *v) { return v->t; }

static int eval_op(const struct ctx *x, const struct op *o, const struct jv *v)
{
    int rc;
    switch (o->code) {
    case O_EQ: return strict_eq(v, &o->u.lit);
    case O_NE: return !strict_eq(v, &o->u.lit);
    case O_GT: case O_GTE: case O_LT: case O_LTE: return relational(x, v, &o->u.lit, o->code);
    case O_IN: case O_INI:
        return o->bad ? 0 : is_in(x, v, &o->u.set, o->code == O_INI);
    case O_NIN: case O_NINI:
        if (o->bad)
            return 0;
        rc = is_in(x, v, &o->u.set, o->code == O_NINI);
        return rc < 0 ? rc : !rc;
    case O_ALL: return in_all(x, o, v, false);
    case O_ALLI: return in_all(x, o, v, true);
    case O_ELEM_VAL: case O_ELEM_DOC: case O_ELEM_THROW: return elem_match(x, o, v);
    case O_SIZE: {
        if (v->t != JT_ARR)
            return 0;
        struct jv len = { .t = JT_NUM, .num = v->n };
        return eval_val(x, o->u.vc, &len, false);
    }
    case O_NOT:
        rc = eval_val(x, o->u.vc, v, false);
        return rc < 0 ? rc : !rc;
    case O_EXISTS: return o->truthy ? v->t != JT_NULL : v->t == JT_NULL;
    case O_TYPE: return o->type >= 0 && jtype(v) == o->type;
    case O_REGEX: {
        if (!o->u.re)
            return 0; /* invalid pattern or not a string: false, as the SDK */
        struct sbuf tmp;
        const char *s;
        size_t n;
        cond_sbuf_init(&tmp);
        rc = text_of(x, v, &tmp, &s, &n);
        if (rc == 0)
            rc = cond_re_test(o->u.re, s, n);
        cond_sbuf_free(&tmp);
        return rc;
    }
    case O_VEQ: case O_VNE: case O_VGT: case O_VGTE: case O_VLT: case O_VLTE: return version(o, v);
    case O_INGROUP: case O_NOTINGROUP: {
        const struct litset *set = x->env && x->env->groups
            ? cond_groups_find(x->env->groups, o->u.text.s, o->u.text.len) : NULL;
        rc = is_in(x, v, set ? set : &EMPTY_SET, false);
        return rc < 0 || o->code == O_INGROUP ? rc : !rc;
    }
    default: return 0; /* unknown operator: false, as the SDK */
    }
}

/* evalConditionValue */
static int eval_val(const struct ctx *x, const struct cval *vc, const struct jv *v, bool fold)
{
    int rc;
    switch (vc->kind) {
    case V_STR: {
        if (!fold && v->t == JT_STR)
            return v->n == vc->len && memcmp(v->p, vc->s, vc->len) == 0;
        if (!fold) {
            struct cmpsink c;
            cond_cmpsink_init(&c, vc->s, vc->len);
            rc = cond_js_tostring(v, x->end, &c.s, 0);
            return rc < 0 ? rc : cond_cmpsink_equal(&c);
        }
        struct sbuf tmp, low;
        const char *s;
        size_t n;
        cond_sbuf_init(&tmp);
        cond_sbuf_init(&low);
        rc = text_of(x, v, &tmp, &s, &n);
        if (rc == 0)
            rc = cond_js_lower(s, n, &low);
        if (rc == 0)
            rc = low.len == vc->lower_len && memcmp(low.p, vc->lower, low.len) == 0;
        cond_sbuf_free(&tmp);
        cond_sbuf_free(&low);
        return rc;
    }
    case V_NUM: {
        double d;
        if ((rc = to_number(x, v, &d)) != 0)
            return rc;
        return d == vc->num;
    }
    case V_BOOL: return v->t != JT_NULL && cond_js_truthy(v) == (bool)vc->b;
    case V_NULL: return v->t == JT_NULL;
    case V_JSON: {
        struct cmpsink c;
        cond_cmpsink_init(&c, vc->s, vc->len);
        rc = cond_js_stringify(v, x->end, &c.s, 0);
        return rc < 0 ? rc : cond_cmpsink_equal(&c);
    }
    default:
        for (uint32_t i = 0; i < vc->nops; i++)
            if ((rc = eval_op(x, &vc->ops[i], v)) != 1)
                return rc;
        return 1;
    }
}

/* evalCondition */
static int eval_doc(const struct ctx *x, const struct cdoc *d, const struct jv *obj)
{
    int rc;
    for (uint32_t i = 0; i < d->n; i++) {
        const struct clause *cl = &d->cl[i];
        switch (cl->kind) {
        case D_PATH: {
            struct jv v;
            if ((rc = get_path(x, cl, obj, &v)) != 0)
                return rc;
            rc = eval_val(x, cl->u.p.vc, &v, false);
            break;
        }
        case D_AND:
            rc = 1;
            for (uint32_t k = 0; k < cl->u.list.n && rc == 1; k++)
                rc = eval_doc(x, cl->u.list.d[k], obj);
            break;
        case D_OR:
        case D_NOR:
            rc = cl->u.list.n == 0; /* an empty $or passes, so an empty $nor fails */
            for (uint32_t k = 0; k < cl->u.list.n && rc == 0; k++)
                rc = eval_doc(x, cl->u.list.d[k], obj);
            if (rc >= 0 && cl->kind == D_NOR)
                rc = !rc;
            break;
        case D_NOT:
            rc = eval_doc(x, cl->u.not, obj);
            if (rc >= 0)
                rc = !rc;
            break;
        case D_SEGMENT:
            if (!x->env || !x->env->segment)
                return ERR_INVAL;
            rc = x->env->segment(x->env->segment_ud, cl->u.seg.s, cl->u.seg.len, x->root, x->rootlen);
            if (rc > 0)
                rc = 1;
            break;
        default:
            return COND_THROW;
        }
        if (rc != 1)
            return rc;
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* indexed attributes                                                 */

static int ent_cmp(const struct cond_attr_ent *a, const char *k, uint32_t len)
{
    if (a->len != len)
        return a->len < len ? -1 : 1;
    return memcmp(a->key, k, len);
}

static int ent_qcmp(const void *x, const void *y)
{
    const struct cond_attr_ent *a = x, *b = y;
    int c = ent_cmp(a, b->key, b->len);
    return c ? c : (a->pos > b->pos) - (a->pos < b->pos);
}

int cond_attrs_init(struct cond_attrs *a, const char *mp, size_t len)
{
    a->mp = mp;
    a->len = len;
    a->indexed = false;
    a->n = 0;
    a->ent = a->inl;
    const unsigned char *p = (const unsigned char *)mp, *end = p + len;
    struct jv root;
    int rc = cond_mp_head(&p, end, &root);
    if (rc)
        return rc;
    if (root.t != JT_OBJ)
        return 0;
    if (root.n > COND_ATTRS_INLINE && !(a->ent = malloc(root.n * sizeof *a->ent))) {
        a->ent = a->inl;
        return ERR_NOMEM;
    }
    for (uint32_t k = 0; k < root.n; k++) {
        if (p >= end || !((*p >= 0xa0 && *p <= 0xbf) || *p == 0xd9 || *p == 0xda || *p == 0xdb)) {
            cond_attrs_free(a); /* a key that is not a string: leave it to cond_eval */
            return p >= end ? ERR_PARSE : 0;
        }
        const char *key;
        size_t klen;
        char tmp[32];
        if ((rc = cond_mp_key(&p, end, &key, &klen, tmp)) != 0) {
            cond_attrs_free(a);
            return rc;
        }
        a->ent[k] = (struct cond_attr_ent){ key, (uint32_t)klen, k, p };
        if ((rc = cond_mp_skip(&p, end)) != 0) {
            cond_attrs_free(a);
            return rc;
        }
    }
    /* by key, then position; of a repeated key only the last stays */
    uint32_t n = root.n, w = 0;
    if (n <= COND_ATTRS_INLINE) {
        for (uint32_t i = 1; i < n; i++)
            for (uint32_t j = i; j > 0 && ent_qcmp(&a->ent[j - 1], &a->ent[j]) > 0; j--) {
                struct cond_attr_ent t = a->ent[j - 1];
                a->ent[j - 1] = a->ent[j];
                a->ent[j] = t;
            }
    } else {
        qsort(a->ent, n, sizeof *a->ent, ent_qcmp);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (i + 1 < n && ent_cmp(&a->ent[i + 1], a->ent[i].key, a->ent[i].len) == 0)
            continue;
        a->ent[w++] = a->ent[i];
    }
    a->n = w;
    a->indexed = true;
    return 0;
}

void cond_attrs_free(struct cond_attrs *a)
{
    if (a->ent != a->inl)
        free(a->ent);
    a->ent = a->inl;
    a->n = 0;
    a->indexed = false;
}

static const unsigned char *attrs_find(const struct cond_attrs *a, const char *k, uint32_t len)
{
    uint32_t lo = 0, hi = a->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = ent_cmp(&a->ent[mid], k, len);
        if (c == 0)
            return a->ent[mid].val;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int cond_mp_number(const char *mp, size_t len, const char *key, size_t klen, double *out)
{
    const unsigned char *p = (const unsigned char *)mp, *end = p + len, *at = NULL;
    struct jv root, v;
    if (!mp || cond_mp_head(&p, end, &root))
        return mp && len ? ERR_PARSE : 0;
    if (root.t != JT_OBJ)
        return 0;
    for (uint32_t i = 0; i < root.n; i++) { /* a repeated key: its last value */
        const char *k;
        size_t kl;
        char tmp[32];
        if (cond_mp_key(&p, end, &k, &kl, tmp))
            return ERR_PARSE;
        if (kl == klen && !memcmp(k, key, klen))
            at = p;
        if (cond_mp_skip(&p, end))
            return ERR_PARSE;
    }
    if (!at)
        return 0;
    if (cond_mp_head(&at, end, &v))
        return ERR_PARSE;
    if (v.t == JT_NULL)
        return 0;
    if (v.t != JT_NUM)
        return ERR_INVAL;
    *out = v.num;
    return 1;
}

int cond_eval_attrs(const struct cond *c, const struct cond_attrs *a, const struct cond_env *env)
{
    if (!c || !a)
        return ERR_INVAL;
    if (!a->indexed)
        return cond_eval(c, a->mp, a->len, env);
    struct ctx x = { env, a->mp, a->len, (const unsigned char *)a->mp + a->len, NULL };
    const unsigned char *p = (const unsigned char *)a->mp, *slots[COND_ROOT_SLOTS];
    struct jv root;
    int rc = cond_mp_head(&p, x.end, &root);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < c->nroots; i++)
        slots[i] = attrs_find(a, c->roots[i].s, c->roots[i].len);
    x.slots = slots;
    rc = eval_doc(&x, c->root, &root);
    return rc == COND_THROW ? 0 : rc;
}

int cond_eval(const struct cond *c, const char *mp, size_t len, const struct cond_env *env)
{
    if (!c || (!mp && len))
        return ERR_INVAL;
    struct ctx x = { env, mp, len, (const unsigned char *)mp + len, NULL };
    const unsigned char *p = (const unsigned char *)mp, *slots[COND_ROOT_SLOTS];
    struct jv root;
    int rc = cond_mp_head(&p, x.end, &root);
    if (rc)
        return rc;
    if (root.t == JT_OBJ && c->nroots) {
        if ((rc = gather(c, &root, x.end, slots)) != 0)
            return rc;
        x.slots = slots;
    }
    rc = eval_doc(&x, c->root, &root);
    return rc == COND_THROW ? 0 : rc;
}

int cond_eval_json(const struct cond *c, const json_t *attrs, const struct cond_env *env)
{
    struct buf b = BUF_INIT;
    int rc = codec_json_to_msgpack(attrs, &b);
    if (rc == 0)
        rc = cond_eval(c, b.p, b.len, env);
    buf_free(&b);
    return rc;
}
