/*
 * cond.c — compiling a GrowthBook condition (jansson) into the immutable
 * form cond_eval.c walks, validating it on the way (strict mode), and the
 * dependency lists and saved groups.
 *
 * Every node and string of a compiled condition lives in one arena freed
 * with it; compiled regexes are kept in a list beside it.  Literals that
 * are compared as text (JSON equality, an array's ToPrimitive text,
 * padded versions, lowercased strings) are computed here once, with the
 * same code evaluation uses on attributes (a literal is encoded to msgpack
 * first), so both sides of a comparison come from one implementation.
 */
#include "engine/cond.h"
#include "engine/cond_impl.h"

#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "codec/codec.h"

/* ------------------------------------------------------------------ */
/* arena                                                              */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(struct arena_chunk **head, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 4000 ? n : 4000;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    void *p = (unsigned char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(struct arena_chunk *c)
{
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

static char *arena_strdup(struct arena_chunk **head, const char *s, size_t n)
{
    char *p = arena_alloc(head, n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* compile context                                                    */

struct strv {
    char **v;
    size_t n, cap;
};

struct cc {
    struct cond *c;
    const struct cond_opts *o;
    bool strict;
    struct reqerr *err;
    int rc;
    int depth;
    int rel;                 /* inside an $elemMatch sub-document */
    char path[256];
    size_t plen;
    struct strv paths, segs, groups;
};

static void path_push(struct cc *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void path_push(struct cc *cc, const char *fmt, ...)
{
    if (cc->plen >= sizeof cc->path - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cc->path + cc->plen, sizeof cc->path - cc->plen, fmt, ap);
    va_end(ap);
    if (n > 0)
        cc->plen += (size_t)n < sizeof cc->path - cc->plen ? (size_t)n : sizeof cc->path - cc->plen - 1;
}

static void path_pop(struct cc *cc, size_t mark)
{
    cc->plen = mark;
    cc->path[mark] = 0;
}

static int fail(struct cc *cc, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct cc *cc, int rc, const char *fmt, ...)
{
    if (cc->rc)
        return cc->rc;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cc->err) {
        if (rc == ERR_NOMEM)
            reqerr_set(cc->err, 500, "internal", cc->path, "%s: %s", cc->path, msg);
        else
            reqerr_set(cc->err, 400, "invalid_condition", cc->path, "%s: %s", cc->path, msg);
    }
    return cc->rc = rc;
}

static void *alloc(struct cc *cc, size_t n)
{
    void *p = arena_alloc(&cc->c->chunks, n);
    if (!p)
        fail(cc, ERR_NOMEM, "out of memory");
    else
        memset(p, 0, n);
    return p;
}

static const char *sdup(struct cc *cc, const char *s, size_t n)
{
    char *p = arena_strdup(&cc->c->chunks, s, n);
    if (!p)
        fail(cc, ERR_NOMEM, "out of memory");
    return p;
}

static void strv_add(struct cc *cc, struct strv *v, const char *s, size_t n)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        char **p = realloc(v->v, cap * sizeof *p);
        if (!p) {
            fail(cc, ERR_NOMEM, "out of memory");
            return;
        }
        v->v = p;
        v->cap = cap;
    }
    char *d = malloc(n + 1);
    if (!d) {
        fail(cc, ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(d, s, n);
    d[n] = 0;
    v->v[v->n++] = d;
}

static void strv_free(struct strv *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, unique copy of v in the arena. */
static const char **strv_publish(struct cc *cc, struct strv *v, size_t *n)
{
    *n = 0;
    if (!v->n)
        return NULL;
    qsort(v->v, v->n, sizeof *v->v, cmp_str);
    const char **out = alloc(cc, v->n * sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (i == 0 || strcmp(v->v[i], v->v[i - 1]) != 0)
            if (!(out[(*n)++] = sdup(cc, v->v[i], strlen(v->v[i]))))
                return NULL;
    return out;
}

static const char *jtype_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static bool is_scalar(const json_t *v) { return !json_is_object(v) && !json_is_array(v); }

/* A JSON value's text through the JS coercions: mode 0 `value + ""`,
 * mode 1 JSON.stringify.  Encoded to msgpack so that literals and
 * attributes share one implementation. */
static const char *js_text(struct cc *cc, const json_t *v, int mode, size_t *len)
{
    struct buf mp = BUF_INIT;
    int rc = codec_json_to_msgpack(v, &mp);
    if (rc) {
        buf_free(&mp);
        fail(cc, rc == ERR_NOMEM ? ERR_NOMEM : ERR_TOOBIG, "value cannot be encoded: %s", err_str(rc));
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)mp.p, *end = p + mp.len;
    struct jv jv;
    struct sbuf out;
    cond_sbuf_init(&out);
    rc = cond_mp_head(&p, end, &jv);
    if (rc == 0)
        rc = mode ? cond_js_stringify(&jv, end, &out.s, 0) : cond_js_tostring(&jv, end, &out.s, 0);
    const char *s = NULL;
    if (rc)
        fail(cc, rc == ERR_NOMEM ? ERR_NOMEM : ERR_TOOBIG, "value too deep or malformed: %s", err_str(rc));
    else
        s = sdup(cc, out.p, out.len);
    *len = out.len;
    cond_sbuf_free(&out);
    buf_free(&mp);
    return s;
}

/* A literal as === and the relational operators see it. */
static void make_lit(struct cc *cc, const json_t *v, struct lit *l)
{
    size_t n = 0;
    memset(l, 0, sizeof *l);
    switch (json_typeof(v)) {
    case JSON_STRING:
        l->t = JT_STR;
        l->len = (uint32_t)json_string_length(v);
        l->s = sdup(cc, json_string_value(v), l->len);
        return;
    case JSON_INTEGER: case JSON_REAL: l->t = JT_NUM; l->num = json_number_value(v); return;
    case JSON_TRUE: case JSON_FALSE: l->t = JT_BOOL; l->b = json_is_true(v); return;
    case JSON_NULL: l->t = JT_NULL; return;
    case JSON_ARRAY: l->t = JT_ARR; l->s = js_text(cc, v, 0, &n); l->len = (uint32_t)n; return;
    default: l->t = JT_OBJ; l->s = "[object Object]"; l->len = 15; return;
    }
}

static bool json_truthy(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: case JSON_FALSE: return false;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER: case JSON_REAL: return json_number_value(v) != 0;
    default: return true;
    }
}

static int lit_qcmp(const void *a, const void *b) { return cond_lit_cmp(a, b); }

/* A set from an array's scalar items (objects can never be === to an
 * attribute value, so they are dropped).  `fold` lowercases strings. */
static void make_set(struct cc *cc, const json_t *arr, bool fold, struct litset *set)
{
    size_t n = json_array_size(arr), k = 0;
    struct lit *v = n ? alloc(cc, n * sizeof *v) : NULL;
    if (n && !v)
        return;
    for (size_t i = 0; i < n && !cc->rc; i++) {
        const json_t *it = json_array_get(arr, i);
        if (!is_scalar(it))
            continue;
        make_lit(cc, it, &v[k]);
        if (fold && v[k].t == JT_STR) {
            struct sbuf low;
            cond_sbuf_init(&low);
            if (cond_js_lower(v[k].s, v[k].len, &low) || !(v[k].s = sdup(cc, low.p, low.len)))
                fail(cc, ERR_NOMEM, "out of memory");
            v[k].len = (uint32_t)low.len;
            cond_sbuf_free(&low);
        }
        k++;
    }
    if (k)
        qsort(v, k, sizeof *v, lit_qcmp);
    set->n = (uint32_t)k;
    set->v = v;
}

/* ToPropertyKey of a JSON value (savedGroups[expected]). */
static const char *prop_key(struct cc *cc, const json_t *v, size_t *len)
{
    if (json_is_string(v)) {
        *len = json_string_length(v);
        return sdup(cc, json_string_value(v), *len);
    }
    if (json_is_object(v)) {
        *len = 15;
        return "[object Object]";
    }
    return js_text(cc, v, 0, len);
}

/* ------------------------------------------------------------------ */
/* documents and values                                               */

static const struct cdoc *compile_doc(struct cc *cc, const json_t *v);
static const struct cval *compile_val(struct cc *cc, const json_t *v);

static bool enter(struct cc *cc)
{
    if (++cc->depth > COND_MAX_DEPTH) {
        fail(cc, ERR_TOOBIG, "nested deeper than %d", COND_MAX_DEPTH);
        return false;
    }
    return true;
}

/* Object.keys order: array-index keys ascending, then insertion order. */
struct entry {
    const char *key;
    size_t klen;
    const json_t *val;
    int64_t idx;
    char tmp[24];
};

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->idx >= 0 && y->idx >= 0)
        return (x->idx > y->idx) - (x->idx < y->idx);
    if (x->idx >= 0 || y->idx >= 0)
        return x->idx >= 0 ? -1 : 1;
    return 0;
}

/* The entries JavaScript's Object.entries gives for a condition document:
 * an object's members; in lenient mode also an array's items ("0", "1",
 * ...) and a string's characters, and nothing for a number or boolean.
 * NULL with *n = SIZE_MAX: the SDK would throw (null). */
static struct entry *doc_entries(struct cc *cc, const json_t *v, size_t *n)
{
    struct entry *e = NULL;
    *n = 0;
    if (json_is_object(v)) {
        size_t cnt = json_object_size(v), i = 0;
        if (cnt && !(e = calloc(cnt, sizeof *e))) {
            fail(cc, ERR_NOMEM, "out of memory");
            return NULL;
        }
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)v, k, val) {
            uint32_t idx;
            e[i].key = k;
            e[i].klen = strlen(k);
            e[i].val = val;
            e[i].idx = cond_js_index(k, e[i].klen, &idx) ? (int64_t)idx : -1;
            i++;
        }
        *n = i;
        /* stable: only index keys move (a merge of two already ordered runs) */
        for (size_t a = 1; a < i; a++)
            for (size_t b = a; b > 0 && entry_cmp(&e[b - 1], &e[b]) > 0; b--) {
                struct entry t = e[b - 1];
                e[b - 1] = e[b];
                e[b] = t;
            }
        return e;
    }
    if (cc->strict) {
        fail(cc, ERR_INVAL, "a condition must be an object, not %s", jtype_name(v));
        return NULL;
    }
    if (json_is_null(v)) {
        *n = SIZE_MAX;
        return NULL;
    }
    if (json_is_array(v) && json_array_size(v)) {
        size_t cnt = json_array_size(v);
        if (!(e = calloc(cnt, sizeof *e))) {
            fail(cc, ERR_NOMEM, "out of memory");
            return NULL;
        }
        for (size_t i = 0; i < cnt; i++) {
            snprintf(e[i].tmp, sizeof e[i].tmp, "%zu", i);
            e[i].key = e[i].tmp;
            e[i].klen = strlen(e[i].tmp);
            e[i].val = json_array_get(v, i);
            e[i].idx = (int64_t)i;
        }
        *n = cnt;
    }
    /* strings: one entry per character, each a one-character string (made
     * by the caller as needed); numbers and booleans have none */
    return e;
}

static bool doc_op_name(const char *k)
{
    return !strcmp(k, "$and") || !strcmp(k, "$or") || !strcmp(k, "$nor") || !strcmp(k, "$not");
}

static const char *const VALUE_OPS[] = {
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$ini", "$nini", "$all",
    "$alli", "$elemMatch", "$size", "$exists", "$type", "$regex", "$regexi", "$not",
    "$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte", "$inGroup", "$notInGroup", NULL,
};

static bool value_op_name(const char *k)
{
    for (int i = 0; VALUE_OPS[i]; i++)
        if (!strcmp(k, VALUE_OPS[i]))
            return true;
    return false;
}

static void compile_path(struct cc *cc, const char *key, size_t klen, struct cpath *p)
{
    uint32_t n = 1;
    for (size_t i = 0; i < klen; i++)
        n += key[i] == '.';
    struct pseg *seg = alloc(cc, n * sizeof *seg);
    if (!seg)
        return;
    size_t start = 0;
    uint32_t k = 0;
    for (size_t i = 0; i <= klen; i++) {
        if (i < klen && key[i] != '.')
            continue;
        size_t len = i - start;
        if (cc->strict && len == 0) {
            fail(cc, ERR_INVAL, "empty segment in the attribute path \"%s\"", key);
            return;
        }
        uint32_t idx;
        seg[k].s = sdup(cc, key + start, len);
        seg[k].len = (uint32_t)len;
        seg[k].idx = cond_js_index(key + start, len, &idx) ? (int64_t)idx : -1;
        seg[k].length = len == 6 && memcmp(key + start, "length", 6) == 0;
        k++;
        start = i + 1;
    }
    p->n = n;
    p->seg = seg;
}

/* The list $and/$or/$nor iterate: an array's items; in lenient mode a
 * string's characters, and for other values none (`.length` is undefined). */
static void compile_list(struct cc *cc, const json_t *v, struct clause *cl)
{
    if (cc->strict && !json_is_array(v)) {
        fail(cc, ERR_INVAL, "expects an array of conditions, not %s", jtype_name(v));
        return;
    }
    if (json_is_null(v)) { /* `conditions.length` of null throws */
        cl->kind = D_THROW;
        return;
    }
    size_t n = json_is_array(v) ? json_array_size(v) : json_is_string(v) ? json_string_length(v) : 0;
    const struct cdoc **d = n ? alloc(cc, n * sizeof *d) : NULL;
    if (n && !d)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n && !cc->rc; i++) {
        size_t mark = cc->plen;
        path_push(cc, "[%zu]", k);
        if (json_is_array(v)) {
            d[k++] = compile_doc(cc, json_array_get(v, i));
        } else { /* one character of a string (UTF-8 sequence) */
            const char *s = json_string_value(v);
            size_t j = i + 1;
            while (j < n && ((unsigned char)s[j] & 0xc0) == 0x80)
                j++;
            json_t *ch = json_stringn(s + i, j - i);
            if (!ch) {
                fail(cc, ERR_NOMEM, "out of memory");
                break;
            }
            d[k++] = compile_doc(cc, ch);
            json_decref(ch);
            i = j - 1;
        }
        path_pop(cc, mark);
    }
    cl->u.list.n = (uint32_t)k;
    cl->u.list.d = d;
}

/* The slot of a root clause's first path segment (shared by every clause
 * starting with the same attribute), or -1 past COND_ROOT_SLOTS. */
static int32_t root_slot(struct cc *cc, const struct pseg *first)
{
    struct cond *c = cc->c;
    for (uint32_t i = 0; i < c->nroots; i++)
        if (c->roots[i].len == first->len && memcmp(c->roots[i].s, first->s, first->len) == 0)
            return (int32_t)i;
    if (c->nroots == COND_ROOT_SLOTS)
        return -1;
    if (!c->roots && !(c->roots = alloc(cc, COND_ROOT_SLOTS * sizeof *c->roots)))
        return -1;
    ((struct pseg *)c->roots)[c->nroots] = *first;
    return (int32_t)c->nroots++;
}

static void compile_clause(struct cc *cc, const char *key, size_t klen, const json_t *val,
                           struct clause *cl)
{
    size_t mark = cc->plen;
    bool special = key[0] == '$';
    /* lenient mode takes {"$segment": id} as promod's extension only when id
     * is a usable string; anything else is GrowthBook's attribute "$segment" */
    bool segment = !strcmp(key, "$segment") &&
                   (cc->strict || (json_is_string(val) && json_string_length(val) > 0));
    if (special && (doc_op_name(key) || segment))
        path_push(cc, ".%s", key + 1);
    else
        path_push(cc, ".%s", key);
    if (!strcmp(key, "$and") || !strcmp(key, "$or") || !strcmp(key, "$nor")) {
        cl->kind = key[1] == 'a' ? D_AND : key[1] == 'o' ? D_OR : D_NOR;
        compile_list(cc, val, cl);
    } else if (!strcmp(key, "$not")) {
        cl->kind = D_NOT;
        cl->u.not = compile_doc(cc, val);
    } else if (segment) {
        if (!json_is_string(val) || json_string_length(val) == 0) {
            fail(cc, ERR_INVAL, "$segment expects a segment id (a non-empty string), not %s",
                 json_is_string(val) ? "\"\"" : jtype_name(val));
        } else {
            const char *id = json_string_value(val);
            size_t len = json_string_length(val);
            if (cc->strict && cc->o && cc->o->segment_known &&
                cc->o->segment_known(cc->o->segment_ud, id, len) != 1)
                fail(cc, ERR_INVAL, "unknown segment \"%s\"", id);
            cl->kind = D_SEGMENT;
            cl->u.seg.s = sdup(cc, id, len);
            cl->u.seg.len = len;
            strv_add(cc, &cc->segs, id, len);
        }
    } else if (special && cc->strict) {
        if (value_op_name(key))
            fail(cc, ERR_INVAL, "%s compares a value: put it under an attribute, e.g. {\"age\": {\"%s\": ...}}",
                 key, key);
        else
            fail(cc, ERR_INVAL, "unknown operator \"%s\" (a document takes $and, $or, $nor, $not, "
                 "$segment and attribute paths)", key);
    } else {
        cl->kind = D_PATH;
        cl->u.p.slot = -1;
        compile_path(cc, key, klen, &cl->u.p.path);
        if (!cc->rel && !cc->rc) {
            strv_add(cc, &cc->paths, key, klen);
            cl->u.p.slot = root_slot(cc, &cl->u.p.path.seg[0]);
        }
        cl->u.p.vc = compile_val(cc, val);
    }
    path_pop(cc, mark);
}

static const struct cdoc *compile_doc(struct cc *cc, const json_t *v)
{
    if (cc->rc || !enter(cc))
        return NULL;
    struct cdoc *d = alloc(cc, sizeof *d);
    size_t n;
    struct entry *e = d ? doc_entries(cc, v, &n) : NULL;
    if (!d || cc->rc)
        goto out;
    if (n == SIZE_MAX) { /* Object.entries(null) throws */
        struct clause *cl = alloc(cc, sizeof *cl);
        if (cl) {
            cl->kind = D_THROW;
            d->n = 1;
            d->cl = cl;
        }
        goto out;
    }
    if (json_is_string(v)) { /* lenient: {"0": "a", "1": "b", ...} */
        const char *s = json_string_value(v);
        size_t len = json_string_length(v), chars = 0;
        for (size_t i = 0; i < len; i++)
            chars += ((unsigned char)s[i] & 0xc0) != 0x80;
        struct clause *cl = chars ? alloc(cc, chars * sizeof *cl) : NULL;
        size_t k = 0;
        for (size_t i = 0; i < len && !cc->rc; k++) {
            size_t j = i + 1;
            while (j < len && ((unsigned char)s[j] & 0xc0) == 0x80)
                j++;
            char key[24];
            snprintf(key, sizeof key, "%zu", k);
            json_t *ch = json_stringn(s + i, j - i);
            if (!ch) {
                fail(cc, ERR_NOMEM, "out of memory");
                break;
            }
            compile_clause(cc, key, strlen(key), ch, &cl[k]);
            json_decref(ch);
            i = j;
        }
        d->n = (uint32_t)k;
        d->cl = cl;
        goto out;
    }
    struct clause *cl = n ? alloc(cc, n * sizeof *cl) : NULL;
    for (size_t i = 0; i < n && !cc->rc; i++)
        compile_clause(cc, e[i].key, e[i].klen, e[i].val, &cl[i]);
    d->n = (uint32_t)n;
    d->cl = cl;
out:
    free(e);
    cc->depth--;
    return cc->rc ? NULL : d;
}

static void compile_op(struct cc *cc, const char *name, const json_t *arg, struct op *o);

static const struct cval *compile_val(struct cc *cc, const json_t *v)
{
    if (cc->rc || !enter(cc))
        return NULL;
    struct cval *vc = alloc(cc, sizeof *vc);
    if (!vc)
        goto out;
    switch (json_typeof(v)) {
    case JSON_STRING: {
        struct sbuf low;
        vc->kind = V_STR;
        vc->len = json_string_length(v);
        vc->s = sdup(cc, json_string_value(v), vc->len);
        cond_sbuf_init(&low);
        if (cond_js_lower(json_string_value(v), vc->len, &low))
            fail(cc, ERR_NOMEM, "out of memory");
        vc->lower = sdup(cc, low.p, low.len);
        vc->lower_len = low.len;
        cond_sbuf_free(&low);
        goto out;
    }
    case JSON_INTEGER: case JSON_REAL: vc->kind = V_NUM; vc->num = json_number_value(v); goto out;
    case JSON_TRUE: case JSON_FALSE: vc->kind = V_BOOL; vc->b = json_is_true(v); goto out;
    case JSON_NULL: vc->kind = V_NULL; goto out;
    default: break;
    }
    /* an object whose keys all start with "$" is an AND of operators;
     * anything else (arrays, {}, plain objects) is JSON equality */
    size_t n = json_is_object(v) ? json_object_size(v) : 0, dollars = 0;
    const char *k;
    json_t *a;
    if (n)
        json_object_foreach((json_t *)v, k, a)
            dollars += k[0] == '$';
    if (n == 0 || dollars != n) {
        if (cc->strict && dollars)
            fail(cc, ERR_INVAL, "mixes operators and attribute names: use operators only, or a plain "
                 "value for JSON equality");
        vc->kind = V_JSON;
        vc->s = js_text(cc, v, 1, &vc->len);
        goto out;
    }
    struct op *ops = alloc(cc, n * sizeof *ops);
    if (!ops)
        goto out;
    size_t i = 0;
    json_object_foreach((json_t *)v, k, a) {
        if (cc->rc)
            break;
        size_t mark = cc->plen;
        path_push(cc, ".%s", k);
        compile_op(cc, k, a, &ops[i++]);
        path_pop(cc, mark);
    }
    vc->kind = V_OPS;
    vc->nops = (uint32_t)n;
    vc->ops = ops;
out:
    cc->depth--;
    return cc->rc ? NULL : vc;
}

static const char *const TYPES[] = { "null", "boolean", "number", "string", "array", "object" };

static void compile_regex(struct cc *cc, const json_t *arg, bool icase, struct op *o)
{
    o->code = O_REGEX;
    if (!json_is_string(arg)) {
        if (cc->strict)
            fail(cc, ERR_INVAL, "expects a regular expression (a string), not %s", jtype_name(arg));
        return; /* the SDK's replace() throws, caught: false */
    }
    char msg[200];
    struct cond_re *re;
    int rc = cond_re_compile(json_string_value(arg), json_string_length(arg), icase, &re, msg, sizeof msg);
    if (rc == ERR_NOMEM) {
        fail(cc, rc, "out of memory");
        return;
    }
    if (rc) {
        if (cc->strict)
            fail(cc, ERR_INVAL, "invalid regular expression: %s", msg);
        return; /* new RegExp throws, caught: false */
    }
    struct cond *c = cc->c;
    if (c->nres == c->capres) {
        size_t cap = c->capres ? c->capres * 2 : 4;
        struct cond_re **p = realloc(c->res, cap * sizeof *p);
        if (!p) {
            cond_re_free(re);
            fail(cc, ERR_NOMEM, "out of memory");
            return;
        }
        c->res = p;
        c->capres = cap;
    }
    c->res[c->nres++] = re;
    o->u.re = re;
}

static void compile_op(struct cc *cc, const char *name, const json_t *arg, struct op *o)
{
    static const struct { const char *name; uint8_t code; } OPS[] = {
        { "$eq", O_EQ }, { "$ne", O_NE }, { "$gt", O_GT }, { "$gte", O_GTE }, { "$lt", O_LT },
        { "$lte", O_LTE }, { "$in", O_IN }, { "$nin", O_NIN }, { "$ini", O_INI },
        { "$nini", O_NINI }, { "$all", O_ALL }, { "$alli", O_ALLI }, { "$elemMatch", O_ELEM_VAL },
        { "$size", O_SIZE }, { "$not", O_NOT }, { "$exists", O_EXISTS }, { "$type", O_TYPE },
        { "$regex", O_REGEX }, { "$regexi", O_REGEX }, { "$veq", O_VEQ }, { "$vne", O_VNE },
        { "$vgt", O_VGT }, { "$vgte", O_VGTE }, { "$vlt", O_VLT }, { "$vlte", O_VLTE },
        { "$inGroup", O_INGROUP }, { "$notInGroup", O_NOTINGROUP },
    };
    o->code = O_FALSE;
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (!strcmp(name, OPS[i].name))
            o->code = OPS[i].code;
    switch (o->code) {
    case O_EQ: case O_NE:
        if (cc->strict && !is_scalar(arg))
            fail(cc, ERR_INVAL, "%s compares with ===: an array or object never matches (use the "
                 "value itself for JSON equality)", name);
        make_lit(cc, arg, &o->u.lit);
        return;
    case O_GT: case O_GTE: case O_LT: case O_LTE:
        if (cc->strict && !json_is_number(arg) && !json_is_string(arg))
            fail(cc, ERR_INVAL, "%s expects a number or a string, not %s", name, jtype_name(arg));
        make_lit(cc, arg, &o->u.lit);
        return;
    case O_IN: case O_NIN: case O_INI: case O_NINI:
        if (!json_is_array(arg)) {
            if (cc->strict)
                fail(cc, ERR_INVAL, "%s expects an array, not %s", name, jtype_name(arg));
            o->bad = 1; /* the SDK: false for $in and $nin alike */
            return;
        }
        if (cc->strict)
            for (size_t i = 0; i < json_array_size(arg); i++)
                if (!is_scalar(json_array_get(arg, i))) {
                    path_push(cc, "[%zu]", i);
                    fail(cc, ERR_INVAL, "%s compares with ===: an array or object item never matches", name);
                    return;
                }
        make_set(cc, arg, o->code == O_INI || o->code == O_NINI, &o->u.set);
        return;
    case O_ALL: case O_ALLI: {
        if (!json_is_array(arg)) {
            if (cc->strict)
                fail(cc, ERR_INVAL, "%s expects an array, not %s", name, jtype_name(arg));
            o->bad = 1;
            return;
        }
        size_t n = json_array_size(arg);
        const struct cval **v = n ? alloc(cc, n * sizeof *v) : NULL;
        for (size_t i = 0; i < n && !cc->rc; i++) {
            size_t mark = cc->plen;
            path_push(cc, "[%zu]", i);
            v[i] = compile_val(cc, json_array_get(arg, i));
            path_pop(cc, mark);
        }
        o->u.list.n = (uint32_t)n;
        o->u.list.v = v;
        return;
    }
    case O_ELEM_VAL: {
        if (cc->strict && !json_is_object(arg)) {
            fail(cc, ERR_INVAL, "$elemMatch expects a condition object, not %s", jtype_name(arg));
            return;
        }
        if (json_is_null(arg)) { /* Object.keys(null) throws, on arrays */
            o->code = O_ELEM_THROW;
            return;
        }
        size_t n = json_is_object(arg) ? json_object_size(arg) : 0, dollars = 0;
        const char *k;
        json_t *a;
        if (n)
            json_object_foreach((json_t *)arg, k, a)
                dollars += k[0] == '$';
        if (n && dollars == n) { /* operators on each element */
            o->u.vc = compile_val(cc, arg);
            return;
        }
        if (cc->strict && dollars)
            fail(cc, ERR_INVAL, "$elemMatch mixes operators and attribute names");
        o->code = O_ELEM_DOC; /* a sub-document matched against each element */
        cc->rel++;
        o->u.doc = compile_doc(cc, arg);
        cc->rel--;
        return;
    }
    case O_SIZE:
        if (cc->strict) {
            double d = json_number_value(arg);
            bool ok = json_is_number(arg) ? d >= 0 && d == floor(d) && d < 4294967296.0
                                          : json_is_object(arg) && json_object_size(arg) > 0;
            if (!ok) {
                fail(cc, ERR_INVAL, "$size expects a non-negative integer or an operator object, not %s",
                     json_is_number(arg) ? "this number" : jtype_name(arg));
                return;
            }
        }
        o->u.vc = compile_val(cc, arg);
        return;
    case O_NOT:
        o->u.vc = compile_val(cc, arg);
        return;
    case O_EXISTS:
        if (cc->strict && !json_is_boolean(arg))
            fail(cc, ERR_INVAL, "$exists expects true or false, not %s", jtype_name(arg));
        o->truthy = json_truthy(arg);
        return;
    case O_TYPE:
        o->type = -1;
        for (int i = 0; i < 6; i++)
            if (json_is_string(arg) && !strcmp(json_string_value(arg), TYPES[i]))
                o->type = (int8_t)i; /* TYPES is in enum jt order */
        if (cc->strict && o->type < 0)
            fail(cc, ERR_INVAL, "$type expects one of null, boolean, number, string, array, object");
        return;
    case O_REGEX:
        compile_regex(cc, arg, !strcmp(name, "$regexi"), o);
        return;
    case O_VEQ: case O_VNE: case O_VGT: case O_VGTE: case O_VLT: case O_VLTE: {
        if (cc->strict && !json_is_string(arg) && !json_is_number(arg)) {
            fail(cc, ERR_INVAL, "%s expects a version string, not %s", name, jtype_name(arg));
            return;
        }
        struct sbuf b;
        char num[32];
        cond_sbuf_init(&b);
        int rc = json_is_string(arg) ? cond_js_padver_text(json_string_value(arg), json_string_length(arg), &b)
               : json_is_number(arg) ? cond_js_padver_text(num, cond_js_numstr(json_number_value(arg), num), &b)
               : cond_js_padver_text("0", 1, &b);
        if (rc)
            fail(cc, ERR_NOMEM, "out of memory");
        o->u.text.s = sdup(cc, b.p, b.len);
        o->u.text.len = b.len;
        cond_sbuf_free(&b);
        return;
    }
    case O_INGROUP: case O_NOTINGROUP: {
        if (cc->strict && (!json_is_string(arg) || json_string_length(arg) == 0)) {
            fail(cc, ERR_INVAL, "%s expects a saved group name (a non-empty string), not %s", name,
                 jtype_name(arg));
            return;
        }
        size_t len = 0;
        const char *key = prop_key(cc, arg, &len);
        if (!key)
            return;
        if (cc->strict && cc->o && cc->o->groups && !cond_groups_has(cc->o->groups, key, len))
            fail(cc, ERR_INVAL, "unknown saved group \"%s\"", key);
        o->u.text.s = key;
        o->u.text.len = len;
        strv_add(cc, &cc->groups, key, len);
        return;
    }
    default:
        if (cc->strict) {
            if (doc_op_name(name) || !strcmp(name, "$segment"))
                fail(cc, ERR_INVAL, "%s combines conditions: it belongs in a document, not under an "
                     "attribute", name);
            else
                fail(cc, ERR_INVAL, "unknown operator \"%s\"", name);
        }
        return; /* lenient: the SDK logs "Unknown operator" and answers false */
    }
}

/* ------------------------------------------------------------------ */
/* public                                                             */

int cond_compile(const json_t *condition, const struct cond_opts *opts, struct cond **out,
                 struct reqerr *err)
{
    *out = NULL;
    struct cond *c = calloc(1, sizeof *c);
    if (!c) {
        if (err)
            reqerr_set(err, 500, "internal", NULL, "condition: out of memory");
        return ERR_NOMEM;
    }
    struct cc cc = { .c = c, .o = opts, .strict = !opts || opts->mode == COND_STRICT, .err = err };
    snprintf(cc.path, sizeof cc.path, "$");
    cc.plen = 1;
    if (!condition)
        fail(&cc, ERR_INVAL, "no condition");
    else
        c->root = compile_doc(&cc, condition);
    if (!cc.rc) {
        c->paths = strv_publish(&cc, &cc.paths, &c->npaths);
        c->segs = strv_publish(&cc, &cc.segs, &c->nsegs);
        c->groups = strv_publish(&cc, &cc.groups, &c->ngroups);
    }
    strv_free(&cc.paths);
    strv_free(&cc.segs);
    strv_free(&cc.groups);
    if (cc.rc) {
        cond_free(c);
        return cc.rc;
    }
    *out = c;
    return 0;
}

void cond_free(struct cond *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nres; i++)
        cond_re_free(c->res[i]);
    free(c->res);
    arena_free(c->chunks);
    free(c);
}

size_t cond_npaths(const struct cond *c) { return c->npaths; }
const char *cond_path(const struct cond *c, size_t i) { return i < c->npaths ? c->paths[i] : NULL; }
size_t cond_nsegments(const struct cond *c) { return c->nsegs; }
const char *cond_segment(const struct cond *c, size_t i) { return i < c->nsegs ? c->segs[i] : NULL; }
size_t cond_ngroups(const struct cond *c) { return c->ngroups; }
const char *cond_group(const struct cond *c, size_t i) { return i < c->ngroups ? c->groups[i] : NULL; }

bool cond_reads(const struct cond *c, const char *changed, size_t len)
{
    for (size_t i = 0; i < c->npaths; i++) {
        const char *p = c->paths[i];
        size_t pl = strlen(p), m = pl < len ? pl : len;
        if (memcmp(p, changed, m) != 0)
            continue;
        /* equal, or one is the other's prefix at a "." boundary */
        if (pl == len || (pl > len && p[len] == '.') || (len > pl && changed[pl] == '.'))
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* saved groups                                                       */

struct gname {
    const char *name;
    size_t len;
    const json_t *items;
};

static int gname_cmp(const void *a, const void *b)
{
    const struct gname *x = a, *y = b;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, m);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

int cond_groups_compile(const json_t *groups, struct cond_groups **out, struct reqerr *err)
{
    *out = NULL;
    if (!json_is_object(groups)) {
        if (err)
            reqerr_set(err, 400, "invalid_field", "$", "$: saved groups must be an object of arrays");
        return ERR_INVAL;
    }
    struct cond_groups *g = calloc(1, sizeof *g);
    struct cond shell = { 0 };
    struct cc cc = { .c = &shell, .strict = true, .err = err };
    size_t n = json_object_size(groups), i = 0;
    struct gname *gn = n ? calloc(n, sizeof *gn) : NULL;
    if (!g || (n && !gn)) {
        free(g);
        free(gn);
        if (err)
            reqerr_set(err, 500, "internal", NULL, "saved groups: out of memory");
        return ERR_NOMEM;
    }
    snprintf(cc.path, sizeof cc.path, "$");
    cc.plen = 1;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)groups, k, v) {
        if (!json_is_array(v)) {
            path_push(&cc, ".%s", k);
            fail(&cc, ERR_INVAL, "a saved group must be an array of ids, not %s", jtype_name(v));
            break;
        }
        gn[i].name = k;
        gn[i].len = strlen(k);
        gn[i].items = v;
        i++;
    }
    if (!cc.rc && n) {
        qsort(gn, n, sizeof *gn, gname_cmp);
        const char **names = alloc(&cc, n * sizeof *names);
        size_t *lens = alloc(&cc, n * sizeof *lens);
        struct litset *sets = alloc(&cc, n * sizeof *sets);
        for (i = 0; i < n && !cc.rc; i++) {
            names[i] = sdup(&cc, gn[i].name, gn[i].len);
            lens[i] = gn[i].len;
            make_set(&cc, gn[i].items, false, &sets[i]);
        }
        g->n = (uint32_t)n;
        g->names = names;
        g->lens = lens;
        g->sets = sets;
    }
    g->chunks = shell.chunks;
    free(gn);
    if (cc.rc) {
        cond_groups_free(g);
        return cc.rc;
    }
    *out = g;
    return 0;
}

void cond_groups_free(struct cond_groups *g)
{
    if (!g)
        return;
    arena_free(g->chunks);
    free(g);
}

const struct litset *cond_groups_find(const struct cond_groups *g, const char *name, size_t len)
{
    uint32_t lo = 0, hi = g ? g->n : 0;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        size_t m = g->lens[mid] < len ? g->lens[mid] : len;
        int c = memcmp(g->names[mid], name, m);
        if (!c)
            c = (g->lens[mid] > len) - (g->lens[mid] < len);
        if (!c)
            return &g->sets[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool cond_groups_has(const struct cond_groups *g, const char *name, size_t len)
{
    return cond_groups_find(g, name, len) != NULL;
}
