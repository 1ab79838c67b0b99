/*
 * cond_impl.h — private to cond*.c: the compiled form of a condition, the
 * msgpack reader, and the JavaScript coercions evaluation needs.
 *
 * Nothing outside core/engine/cond*.c includes this.  It does not include
 * cond.h (that would make a circle of modules); the .c files include both.
 *
 * Compiled form: one arena per condition holds every node and string.  A
 * document (GrowthBook's "condition": an object of clauses ANDed together)
 * is a struct cdoc; a clause either tests the value at a path with a value
 * condition (struct cval: equality with a literal, JSON equality, or an AND
 * of operators), or is a logical operator over sub-documents.
 */
#ifndef PROMOD_COND_IMPL_H
#define PROMOD_COND_IMPL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Internal "the JavaScript SDK would throw here" code: travels up the
 * evaluation and becomes "no match" at the top. */
#define COND_THROW (-40990)
/* A sink asks its producer to stop early (the answer is known). */
#define COND_STOP 1

/* ---- JavaScript values read from msgpack ------------------------------- */

enum jt { JT_NULL, JT_BOOL, JT_NUM, JT_STR, JT_ARR, JT_OBJ };

struct jv {
    uint8_t t;                /* enum jt */
    uint8_t b;                /* JT_BOOL */
    uint32_t n;               /* JT_STR bytes, JT_ARR items, JT_OBJ pairs */
    double num;               /* JT_NUM */
    const unsigned char *p;   /* JT_STR bytes; JT_ARR/JT_OBJ first item */
};

/* Read the value at *pp: scalars and strings are consumed whole, arrays and
 * maps only their header (v->p is then their first item).  0 or ERR_PARSE. */
int cond_mp_head(const unsigned char **pp, const unsigned char *end, struct jv *v);
/* Skip one whole value.  0 or ERR_PARSE. */
int cond_mp_skip(const unsigned char **pp, const unsigned char *end);
/* Read the value at *pp into v and move *pp past all of it. */
int cond_mp_item(const unsigned char **pp, const unsigned char *end, struct jv *v);
/* A map key as text: str/bin/ext bytes, or an int in decimal written to
 * `tmp` (>= 32 bytes); nil, booleans and floats as JavaScript would name them
 * ("null", "true", "1.5").  ERR_PARSE for an array or map key. */
int cond_mp_key(const unsigned char **pp, const unsigned char *end, const char **k, size_t *len,
                char *tmp);

/* ---- sinks: text producers write into them ------------------------------ */

struct sink {
    /* 0 go on, COND_STOP stop (answer known), negative error */
    int (*put)(struct sink *s, const char *p, size_t n);
};

/* Compares produced text with `exp`; after the producer ends, equal iff
 * !diff && pos == len. */
struct cmpsink {
    struct sink s;
    const char *exp;
    size_t len, pos;
    bool diff;
};
void cond_cmpsink_init(struct cmpsink *c, const char *exp, size_t len);
bool cond_cmpsink_equal(const struct cmpsink *c);

/* Collects text: a stack buffer first, the heap beyond it. */
#define COND_SBUF_STACK 256
struct sbuf {
    struct sink s;
    char *p;
    size_t len, cap;
    char stack[COND_SBUF_STACK];
};
void cond_sbuf_init(struct sbuf *b);
int cond_sbuf_add(struct sbuf *b, const char *p, size_t n);
void cond_sbuf_free(struct sbuf *b);

/* ---- JavaScript coercions (cond_js.c) ----------------------------------- */

/* Number::toString (shortest round trip, JS exponent rules).  out >= 32
 * bytes; returns the length. */
size_t cond_js_numstr(double d, char *out);
/* StringToNumber: trims JS whitespace, "" → 0, decimal / Infinity / 0x /
 * 0o / 0b literals, anything else NaN. */
double cond_js_strnum(const char *s, size_t n);
/* Compare as JavaScript compares strings: by UTF-16 code units.  <0, 0, >0. */
int cond_js_strcmp(const char *a, size_t an, const char *b, size_t bn);
/* String.prototype.toLowerCase on UTF-8 text, appended to `out`. */
int cond_js_lower(const char *s, size_t n, struct sbuf *out);
/* JavaScript truthiness. */
bool cond_js_truthy(const struct jv *v);
/* `value + ""` (ToPrimitive then ToString) of a value, into a sink.  Arrays
 * join with ","; null items give ""; objects "[object Object]". */
int cond_js_tostring(const struct jv *v, const unsigned char *end, struct sink *s, int depth);
/* JSON.stringify of a value, into a sink: JS number text, JS escapes,
 * array-index keys first in ascending order, a repeated key written once at
 * its first place with its last value. */
int cond_js_stringify(const struct jv *v, const unsigned char *end, struct sink *s, int depth);
/* GrowthBook's paddedVersionString of a value, into `out`. */
int cond_js_padver(const struct jv *v, struct sbuf *out);
int cond_js_padver_text(const char *s, size_t n, struct sbuf *out);
/* Is `s` a canonical array index ("0", "17"; not "01", "-1", "4294967295")?
 * Sets *idx. */
bool cond_js_index(const char *s, size_t n, uint32_t *idx);

/* ---- regular expressions (cond_re.c) ------------------------------------ */

struct cond_re;
/* Translate a JavaScript pattern to PCRE2 and compile it (JIT when the
 * platform has it).  0, or ERR_INVAL with `msg` saying why ("offset 3:
 * quantifier does not follow a repeatable item"), or ERR_NOMEM. */
int cond_re_compile(const char *pat, size_t n, bool icase, struct cond_re **out, char *msg,
                    size_t msglen);
/* RegExp.prototype.test on UTF-8 text (invalid UTF-8 is matched safely).
 * 1, 0 (also when the match limit is hit), ERR_NOMEM. */
int cond_re_test(const struct cond_re *re, const char *s, size_t n);
void cond_re_free(struct cond_re *re);

/* ---- the compiled form -------------------------------------------------- */

/* A literal from the condition, as JavaScript sees it for ===, includes()
 * and relational comparisons.  Arrays and objects keep their type (never
 * strictly equal to anything) and carry ToPrimitive's text in s/len. */
struct lit {
    uint8_t t;                /* enum jt */
    uint8_t b;
    uint32_t len;
    double num;
    const char *s;
};

/* A sorted set of literals for $in/$nin/$ini/$nini and saved groups. */
struct litset {
    uint32_t n;
    const struct lit *v;      /* sorted by cond_lit_cmp */
};
int cond_lit_cmp(const struct lit *a, const struct lit *b);
/* Is scalar `v` in the set (SameValueZero)?  With `fold`, strings are
 * compared lowercased (the set holds lowercased strings) and `v`'s text is
 * lowercased first. */
int cond_litset_has(const struct litset *set, const struct jv *v, bool fold);

enum vkind {
    V_STR,   /* value + "" === s  (insensitive: lowercase both) */
    V_NUM,   /* value * 1 === num */
    V_BOOL,  /* value !== null && !!value === b */
    V_NULL,  /* value === null */
    V_JSON,  /* JSON.stringify(value) === text */
    V_OPS,   /* every operator passes */
};

enum opcode {
    O_FALSE,                       /* unknown operator (lenient) */
    O_EQ, O_NE,                    /* lit */
    O_GT, O_GTE, O_LT, O_LTE,      /* lit */
    O_IN, O_NIN, O_INI, O_NINI,    /* set (bad = not an array) */
    O_ALL, O_ALLI,                 /* list (bad = not an array) */
    O_ELEM_VAL, O_ELEM_DOC,        /* vc / doc */
    O_ELEM_THROW,                  /* $elemMatch: null (JS throws on arrays) */
    O_SIZE, O_NOT,                 /* vc */
    O_EXISTS,                      /* truthy */
    O_TYPE,                        /* type: enum jt, or -1 = matches nothing */
    O_REGEX,                       /* re (NULL: invalid → false) */
    O_VEQ, O_VNE, O_VGT, O_VGTE, O_VLT, O_VLTE, /* ver */
    O_INGROUP, O_NOTINGROUP,       /* group name */
};

struct cdoc;
struct cval;

struct op {
    uint8_t code;                  /* enum opcode */
    uint8_t bad;                   /* argument unusable: O_IN.. and O_ALL.. give false */
    uint8_t truthy;                /* O_EXISTS */
    int8_t type;                   /* O_TYPE */
    union {
        struct lit lit;
        struct litset set;
        struct { uint32_t n; const struct cval *const *v; } list;
        const struct cval *vc;
        const struct cdoc *doc;
        const struct cond_re *re;
        struct { const char *s; size_t len; } text; /* padded version, group name */
    } u;
};

struct cval {
    uint8_t kind;                  /* enum vkind */
    uint8_t b;                     /* V_BOOL */
    double num;                    /* V_NUM */
    const char *s;                 /* V_STR text, V_JSON text */
    size_t len;
    const char *lower;             /* V_STR lowercased (for $alli) */
    size_t lower_len;
    uint32_t nops;
    const struct op *ops;          /* V_OPS */
};

struct pseg {
    const char *s;
    uint32_t len;
    int64_t idx;                   /* canonical array index, or -1 */
    bool length;                   /* the segment is "length" */
};
struct cpath {
    uint32_t n;
    const struct pseg *seg;
};

enum dkind { D_PATH, D_AND, D_OR, D_NOR, D_NOT, D_SEGMENT, D_THROW };

struct clause {
    uint8_t kind;                  /* enum dkind */
    union {
        struct {
            struct cpath path;
            const struct cval *vc;
            int32_t slot;          /* root clause: index into cond.roots, else -1 */
        } p;
        struct { uint32_t n; const struct cdoc *const *d; } list;
        const struct cdoc *not;
        struct { const char *s; size_t len; } seg;
    } u;
};

struct cdoc {
    uint32_t n;
    const struct clause *cl;
};

struct arena_chunk;

/* Distinct first path segments of the clauses that read the root object;
 * cond_eval reads the root map once and notes where each one's value is. */
#define COND_ROOT_SLOTS 64

struct cond {
    const struct cdoc *root;
    const struct pseg *roots;      /* COND_ROOT_SLOTS at most */
    uint32_t nroots;
    struct arena_chunk *chunks;
    struct cond_re **res;          /* every compiled regex, freed with the cond */
    size_t nres, capres;
    const char **paths, **segs, **groups;
    size_t npaths, nsegs, ngroups;
};

struct cond_groups {
    uint32_t n;
    const char **names;            /* sorted (bytes) */
    const size_t *lens;
    const struct litset *sets;
    struct arena_chunk *chunks;
};

/* The set of a saved group, or NULL. */
const struct litset *cond_groups_find(const struct cond_groups *g, const char *name, size_t len);

#endif
