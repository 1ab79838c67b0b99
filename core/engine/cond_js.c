/*
 * cond_js.c — what condition evaluation needs of JavaScript: reading
 * msgpack values as JS values, and the coercions GrowthBook's SDK relies
 * on without saying so (Number::toString, StringToNumber, string ordering
 * by UTF-16 code units, toLowerCase, `value + ""`, JSON.stringify, and the
 * SDK's own paddedVersionString).
 *
 * Everything writes text into a `struct sink` so that a comparison can
 * stream (a cmpsink stops at the first differing byte) and nothing is
 * materialised unless a caller needs the whole text (an sbuf, which stays
 * on the stack up to COND_SBUF_STACK bytes).
 */
#include "engine/cond.h"
#include "engine/cond_impl.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include "base/err.h"

/* ------------------------------------------------------------------ */
/* msgpack                                                            */

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

#define NEED(k) do { if ((size_t)(end - p) < (size_t)(k)) return ERR_PARSE; } while (0)

static int mp_str(const unsigned char **pp, const unsigned char *end, const unsigned char *p,
                  size_t n, struct jv *v)
{
    NEED(n);
    v->t = JT_STR;
    v->n = (uint32_t)n;
    v->p = p;
    *pp = p + n;
    return 0;
}

static int mp_cont(const unsigned char **pp, const unsigned char *end, const unsigned char *p,
                   uint32_t n, uint8_t t, struct jv *v)
{
    /* every item takes at least one byte: refuse counts the input cannot hold */
    size_t items = t == JT_OBJ ? 2 * (size_t)n : n;
    if (items > (size_t)(end - p))
        return ERR_PARSE;
    v->t = t;
    v->n = n;
    v->p = p;
    *pp = p;
    return 0;
}

static int mp_num(const unsigned char **pp, const unsigned char *p, double d, struct jv *v)
{
    v->t = JT_NUM;
    v->num = d;
    *pp = p;
    return 0;
}

int cond_mp_head(const unsigned char **pp, const unsigned char *end, struct jv *v)
{
    const unsigned char *p = *pp;
    NEED(1);
    unsigned c = *p++;
    if (c <= 0x7f)
        return mp_num(pp, p, (double)c, v);
    if (c >= 0xe0)
        return mp_num(pp, p, (double)(int8_t)c, v);
    if (c >= 0xa0 && c <= 0xbf)
        return mp_str(pp, end, p, c & 0x1f, v);
    if (c >= 0x90 && c <= 0x9f)
        return mp_cont(pp, end, p, c & 0x0f, JT_ARR, v);
    if (c >= 0x80 && c <= 0x8f)
        return mp_cont(pp, end, p, c & 0x0f, JT_OBJ, v);
    switch (c) {
    case 0xc0: v->t = JT_NULL; *pp = p; return 0;
    case 0xc2: case 0xc3: v->t = JT_BOOL; v->b = c == 0xc3; *pp = p; return 0;
    case 0xc4: case 0xd9: NEED(1); return mp_str(pp, end, p + 1, p[0], v);
    case 0xc5: case 0xda: NEED(2); return mp_str(pp, end, p + 2, rd16(p), v);
    case 0xc6: case 0xdb: NEED(4); return mp_str(pp, end, p + 4, rd32(p), v);
    case 0xc7: NEED(2); return mp_str(pp, end, p + 2, p[0], v);       /* ext8: len, type */
    case 0xc8: NEED(3); return mp_str(pp, end, p + 3, rd16(p), v);
    case 0xc9: NEED(5); return mp_str(pp, end, p + 5, rd32(p), v);
    case 0xd4: NEED(1); return mp_str(pp, end, p + 1, 1, v);           /* fixext: type */
    case 0xd5: NEED(1); return mp_str(pp, end, p + 1, 2, v);
    case 0xd6: NEED(1); return mp_str(pp, end, p + 1, 4, v);
    case 0xd7: NEED(1); return mp_str(pp, end, p + 1, 8, v);
    case 0xd8: NEED(1); return mp_str(pp, end, p + 1, 16, v);
    case 0xca: {
        NEED(4);
        uint32_t u = rd32(p);
        float f;
        memcpy(&f, &u, 4);
        return mp_num(pp, p + 4, (double)f, v);
    }
    case 0xcb: {
        NEED(8);
        uint64_t u = rd64(p);
        double d;
        memcpy(&d, &u, 8);
        return mp_num(pp, p + 8, d, v);
    }
    case 0xcc: NEED(1); return mp_num(pp, p + 1, p[0], v);
    case 0xcd: NEED(2); return mp_num(pp, p + 2, rd16(p), v);
    case 0xce: NEED(4); return mp_num(pp, p + 4, rd32(p), v);
    case 0xcf: NEED(8); return mp_num(pp, p + 8, (double)rd64(p), v);
    case 0xd0: NEED(1); return mp_num(pp, p + 1, (int8_t)p[0], v);
    case 0xd1: NEED(2); return mp_num(pp, p + 2, (int16_t)rd16(p), v);
    case 0xd2: NEED(4); return mp_num(pp, p + 4, (int32_t)rd32(p), v);
    case 0xd3: NEED(8); return mp_num(pp, p + 8, (double)(int64_t)rd64(p), v);
    case 0xdc: NEED(2); return mp_cont(pp, end, p + 2, rd16(p), JT_ARR, v);
    case 0xdd: NEED(4); return mp_cont(pp, end, p + 4, rd32(p), JT_ARR, v);
    case 0xde: NEED(2); return mp_cont(pp, end, p + 2, rd16(p), JT_OBJ, v);
    case 0xdf: NEED(4); return mp_cont(pp, end, p + 4, rd32(p), JT_OBJ, v);
    default: return ERR_PARSE; /* 0xc1 */
    }
}

int cond_mp_skip(const unsigned char **pp, const unsigned char *end)
{
    /* iterative, with sizes read straight from the type byte: a count of
     * values still to skip, no recursion, no struct jv */
    const unsigned char *p = *pp;
    size_t pending = 1, n;
    while (pending) {
        NEED(1);
        unsigned c = *p++;
        pending--;
        if (c <= 0x7f || c >= 0xe0)
            continue;
        if (c >= 0xa0 && c <= 0xbf) {
            n = c & 0x1f;
            goto bytes;
        }
        if (c >= 0x90 && c <= 0x9f) {
            pending += c & 0x0f;
            goto items;
        }
        if (c >= 0x80 && c <= 0x8f) {
            pending += 2 * (size_t)(c & 0x0f);
            goto items;
        }
        switch (c) {
        case 0xc0: case 0xc2: case 0xc3: continue;
        case 0xcc: case 0xd0: n = 1; goto bytes;
        case 0xcd: case 0xd1: case 0xd4: n = 2; goto bytes;   /* fixext1: type + 1 */
        case 0xd5: n = 3; goto bytes;
        case 0xca: case 0xce: case 0xd2: n = 4; goto bytes;
        case 0xd6: n = 5; goto bytes;
        case 0xcb: case 0xcf: case 0xd3: n = 8; goto bytes;
        case 0xd7: n = 9; goto bytes;
        case 0xd8: n = 17; goto bytes;
        case 0xc4: case 0xd9: NEED(1); n = p[0]; p += 1; goto bytes;
        case 0xc5: case 0xda: NEED(2); n = rd16(p); p += 2; goto bytes;
        case 0xc6: case 0xdb: NEED(4); n = rd32(p); p += 4; goto bytes;
        case 0xc7: NEED(1); n = (size_t)p[0] + 1; p += 1; goto bytes; /* ext: len, type */
        case 0xc8: NEED(2); n = (size_t)rd16(p) + 1; p += 2; goto bytes;
        case 0xc9: NEED(4); n = (size_t)rd32(p) + 1; p += 4; goto bytes;
        case 0xdc: NEED(2); pending += rd16(p); p += 2; goto items;
        case 0xdd: NEED(4); pending += rd32(p); p += 4; goto items;
        case 0xde: NEED(2); pending += 2 * (size_t)rd16(p); p += 2; goto items;
        case 0xdf: NEED(4); pending += 2 * (size_t)rd32(p); p += 4; goto items;
        default: return ERR_PARSE; /* 0xc1 */
        }
    bytes:
        NEED(n);
        p += n;
        continue;
    items:
        if (pending > (size_t)(end - p)) /* every value takes a byte */
            return ERR_PARSE;
    }
    *pp = p;
    return 0;
}

int cond_mp_item(const unsigned char **pp, const unsigned char *end, struct jv *v)
{
    const unsigned char *start = *pp;
    int rc = cond_mp_head(pp, end, v);
    if (rc || (v->t != JT_ARR && v->t != JT_OBJ))
        return rc;
    *pp = start;
    return cond_mp_skip(pp, end);
}

int cond_mp_key(const unsigned char **pp, const unsigned char *end, const char **k, size_t *len,
                char *tmp)
{
    const unsigned char *p = *pp;
    NEED(1);
    unsigned c = *p;
    if (c >= 0xa0 && c <= 0xbf) { /* fixstr: nearly every key */
        size_t n = c & 0x1f;
        NEED(n + 1);
        *k = (const char *)p + 1;
        *len = n;
        *pp = p + 1 + n;
        return 0;
    }
    if (c == 0xcf) { /* uint64: keep every digit (a double would round) */
        NEED(9);
        *len = (size_t)snprintf(tmp, 32, "%llu", (unsigned long long)rd64(p + 1));
        *k = tmp;
        *pp = p + 9;
        return 0;
    }
    if (c == 0xd3) {
        NEED(9);
        *len = (size_t)snprintf(tmp, 32, "%lld", (long long)(int64_t)rd64(p + 1));
        *k = tmp;
        *pp = p + 9;
        return 0;
    }
    struct jv v;
    int rc = cond_mp_head(pp, end, &v);
    if (rc)
        return rc;
    switch (v.t) {
    case JT_STR: *k = (const char *)v.p; *len = v.n; return 0;
    case JT_NUM: *len = cond_js_numstr(v.num, tmp); *k = tmp; return 0;
    case JT_NULL: *k = "null"; *len = 4; return 0;
    case JT_BOOL: *k = v.b ? "true" : "false"; *len = v.b ? 4 : 5; return 0;
    default: return ERR_PARSE; /* array or map as a key */
    }
}

/* ------------------------------------------------------------------ */
/* sinks                                                              */

static int cmp_put(struct sink *s, const char *p, size_t n)
{
    struct cmpsink *c = (struct cmpsink *)s;
    if (c->diff)
        return COND_STOP;
    if (n > c->len - c->pos || memcmp(c->exp + c->pos, p, n) != 0) {
        c->diff = true;
        return COND_STOP;
    }
    c->pos += n;
    return 0;
}

void cond_cmpsink_init(struct cmpsink *c, const char *exp, size_t len)
{
    c->s.put = cmp_put;
    c->exp = exp;
    c->len = len;
    c->pos = 0;
    c->diff = false;
}

bool cond_cmpsink_equal(const struct cmpsink *c) { return !c->diff && c->pos == c->len; }

static int sbuf_put(struct sink *s, const char *p, size_t n)
{
    return cond_sbuf_add((struct sbuf *)s, p, n);
}

void cond_sbuf_init(struct sbuf *b)
{
    b->s.put = sbuf_put;
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
}

int cond_sbuf_add(struct sbuf *b, const char *p, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap * 2;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return ERR_NOMEM;
            cap *= 2;
        }
        char *q;
        if (b->p == b->stack) {
            q = malloc(cap);
            if (q)
                memcpy(q, b->p, b->len);
        } else {
            q = realloc(b->p, cap);
        }
        if (!q)
            return ERR_NOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void cond_sbuf_free(struct sbuf *b)
{
    if (b->p != b->stack)
        free(b->p);
    cond_sbuf_init(b);
}

/* ------------------------------------------------------------------ */
/* numbers                                                            */

static size_t put_lit(char *out, const char *s)
{
    size_t n = strlen(s);
    memcpy(out, s, n + 1);
    return n;
}

size_t cond_js_numstr(double d, char *out)
{
    if (isnan(d))
        return put_lit(out, "NaN");
    if (isinf(d))
        return put_lit(out, d > 0 ? "Infinity" : "-Infinity");
    if (d == 0)
        return put_lit(out, "0"); /* -0 too */
    char *o = out;
    if (d < 0) {
        *o++ = '-';
        d = -d;
    }
    if (d < 9007199254740992.0 && d == floor(d)) /* exact integers: their digits */
        return (size_t)(o - out) + (size_t)sprintf(o, "%.0f", d);
    /* the shortest digit string that reads back as d (glibc rounds
     * correctly, so the first precision that round-trips is the shortest
     * and, among those, the nearest: what Number::toString picks) */
    char buf[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    char dg[24];
    int k = 0;
    const char *q = buf;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9')
            dg[k++] = *q;
    int e = atoi(q + 1);
    while (k > 1 && dg[k - 1] == '0')
        k--;
    int n = e + 1; /* d = 0.dg × 10^n */
    if (k <= n && n <= 21) {
        memcpy(o, dg, (size_t)k);
        o += k;
        for (int i = k; i < n; i++)
            *o++ = '0';
    } else if (0 < n && n <= 21) {
        memcpy(o, dg, (size_t)n);
        o += n;
        *o++ = '.';
        memcpy(o, dg + n, (size_t)(k - n));
        o += k - n;
    } else if (-6 < n && n <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -n; i++)
            *o++ = '0';
        memcpy(o, dg, (size_t)k);
        o += k;
    } else {
        *o++ = dg[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, dg + 1, (size_t)(k - 1));
            o += k - 1;
        }
        o += sprintf(o, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    *o = 0;
    return (size_t)(o - out);
}

/* Length of the JS WhiteSpace or LineTerminator at s (0 if none). */
static size_t js_space(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d))
        return 1;
    if (c == 0xc2 && n >= 2 && s[1] == 0xa0)
        return 2; /* U+00A0 */
    if (n < 3)
        return 0;
    if (c == 0xe1 && s[1] == 0x9a && s[2] == 0x80)
        return 3; /* U+1680 */
    if (c == 0xe2 && s[1] == 0x80 && (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
        return 3; /* U+2000..200A, 2028, 2029, 202F */
    if (c == 0xe2 && s[1] == 0x81 && s[2] == 0x9f)
        return 3; /* U+205F */
    if (c == 0xe3 && s[1] == 0x80 && s[2] == 0x80)
        return 3; /* U+3000 */
    if (c == 0xef && s[1] == 0xbb && s[2] == 0xbf)
        return 3; /* U+FEFF */
    return 0;
}

static size_t js_space_back(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (js_space(s + n - 1, 1))
        return 1;
    if (n >= 2 && js_space(s + n - 2, 2) == 2)
        return 2;
    if (n >= 3 && js_space(s + n - 3, 3) == 3)
        return 3;
    return 0;
}

static int digit_in(int c, int base)
{
    int d = c >= '0' && c <= '9' ? c - '0'
          : c >= 'a' && c <= 'z' ? c - 'a' + 10
          : c >= 'A' && c <= 'Z' ? c - 'A' + 10 : 99;
    return d < base ? d : -1;
}

static double strtod_n(const char *s, size_t n)
{
    char stack[128], *tmp = stack;
    if (n >= sizeof stack && !(tmp = malloc(n + 1)))
        return NAN;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    double d = strtod(tmp, NULL);
    if (tmp != stack)
        free(tmp);
    return d;
}

double cond_js_strnum(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t k;
    while ((k = js_space(s, n)) > 0) {
        s += k;
        n -= k;
    }
    while ((k = js_space_back(s, n)) > 0)
        n -= k;
    if (n == 0)
        return 0;
    if (n > 2 && s[0] == '0' && ((s[1] | 0x20) == 'x' || (s[1] | 0x20) == 'o' || (s[1] | 0x20) == 'b')) {
        int base = (s[1] | 0x20) == 'x' ? 16 : (s[1] | 0x20) == 'o' ? 8 : 2;
        for (size_t i = 2; i < n; i++)
            if (digit_in(s[i], base) < 0)
                return NAN;
        if (base == 16)
            return strtod_n((const char *)s, n); /* glibc reads hex, rounding correctly */
        double d = 0;
        for (size_t i = 2; i < n; i++)
            d = d * base + digit_in(s[i], base);
        return d;
    }
    /* StrDecimalLiteral: [+-] (Infinity | digits [. digits] | . digits) [e [+-] digits] */
    size_t i = 0;
    int neg = 0;
    if (s[0] == '+' || s[0] == '-') {
        neg = s[0] == '-';
        i = 1;
    }
    if (n - i == 8 && memcmp(s + i, "Infinity", 8) == 0)
        return neg ? -INFINITY : INFINITY;
    size_t digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
    }
    if (digits == 0)
        return NAN;
    if (i < n && (s[i] | 0x20) == 'e') {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t ed = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, ed++;
        if (ed == 0)
            return NAN;
    }
    if (i != n)
        return NAN;
    return strtod_n((const char *)s, n);
}

/* ------------------------------------------------------------------ */
/* strings                                                            */

/* Decode one UTF-8 sequence; invalid bytes read as U+FFFD, one byte. */
static uint32_t utf8_dec(const unsigned char *s, size_t n, size_t *used)
{
    unsigned c = s[0];
    *used = 1;
    if (c < 0x80)
        return c;
    size_t need;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) { need = 1; cp = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { need = 2; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { need = 3; cp = c & 0x07; min = 0x10000; }
    else return 0xfffd;
    if (n < need + 1)
        return 0xfffd;
    for (size_t i = 1; i <= need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0xfffd;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0xfffd;
    *used = need + 1;
    return cp;
}

static size_t utf8_enc(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int cond_js_strcmp(const char *a, size_t an, const char *b, size_t bn)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    size_t m = an < bn ? an : bn, i = 0;
    while (i < m && x[i] == y[i])
        i++;
    if (i == m)
        return (an > bn) - (an < bn);
    if (x[i] < 0x80 && y[i] < 0x80)
        return x[i] < y[i] ? -1 : 1;
    /* code points order as UTF-8 bytes do, but JavaScript orders UTF-16
     * code units: characters above U+FFFF (surrogates D800-DBFF) sort
     * before U+E000..U+FFFF */
    size_t s = i, ua, ub;
    while (s > 0 && (x[s] & 0xc0) == 0x80)
        s--;
    uint32_t ca = utf8_dec(x + s, an - s, &ua), cb = utf8_dec(y + s, bn - s, &ub);
    uint32_t ka = ca >= 0x10000 ? 0xd800 + ((ca - 0x10000) >> 10) : ca;
    uint32_t kb = cb >= 0x10000 ? 0xd800 + ((cb - 0x10000) >> 10) : cb;
    if (ka != kb)
        return ka < kb ? -1 : 1;
    if (ca != cb)
        return ca < cb ? -1 : 1;
    return x[i] < y[i] ? -1 : 1; /* same code point from different invalid bytes */
}

/* toLowerCase needs Unicode's case mapping: glibc's C.UTF-8 LC_CTYPE has
 * it.  The handle is created once and only read afterwards (newlocale's
 * object is immutable); without C.UTF-8, only ASCII is lowered. */
static pthread_once_t lower_once = PTHREAD_ONCE_INIT;
static locale_t lower_loc;
static void lower_init(void) { lower_loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0); }

static bool is_letter(uint32_t cp)
{
    return cp < 0x80 ? ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
                     : (lower_loc && iswalpha_l((wint_t)cp, lower_loc));
}

int cond_js_lower(const char *str, size_t n, struct sbuf *out)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    int rc;
    while (i < n) { /* ASCII runs in bulk */
        size_t j = i;
        char tmp[64];
        size_t t = 0;
        while (j < n && s[j] < 0x80 && t < sizeof tmp) {
            unsigned c = s[j++];
            tmp[t++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        if (t && (rc = cond_sbuf_add(out, tmp, t)) != 0)
            return rc;
        i = j;
        if (i >= n || s[i] < 0x80)
            continue;
        pthread_once(&lower_once, lower_init);
        size_t used;
        uint32_t cp = utf8_dec(s + i, n - i, &used);
        char enc[8];
        size_t el;
        if (cp == 0xfffd && !(used == 3 && s[i] == 0xef)) {
            /* invalid byte: keep it as it is */
            rc = cond_sbuf_add(out, (const char *)s + i, used);
            i += used;
            if (rc)
                return rc;
            continue;
        }
        if (cp == 0x130) { /* İ → i̇ (SpecialCasing) */
            el = utf8_enc('i', enc);
            el += utf8_enc(0x307, enc + el);
        } else if (cp == 0x3a3) {
            /* Final_Sigma, approximated: after a letter and not before one */
            size_t pu, nu;
            bool after = false, before = false;
            if (i > 0) {
                size_t ps = i - 1;
                while (ps > 0 && (s[ps] & 0xc0) == 0x80)
                    ps--;
                after = is_letter(utf8_dec(s + ps, n - ps, &pu));
            }
            if (i + used < n)
                before = is_letter(utf8_dec(s + i + used, n - i - used, &nu));
            el = utf8_enc(after && !before ? 0x3c2 : 0x3c3, enc);
        } else {
            uint32_t lc = lower_loc ? (uint32_t)towlower_l((wint_t)cp, lower_loc) : cp;
            el = utf8_enc(lc, enc);
        }
        if ((rc = cond_sbuf_add(out, enc, el)) != 0)
            return rc;
        i += used;
    }
    return 0;
}

bool cond_js_truthy(const struct jv *v)
{
    switch (v->t) {
    case JT_NULL: return false;
    case JT_BOOL: return v->b;
    case JT_NUM: return !(v->num == 0 || isnan(v->num));
    case JT_STR: return v->n > 0;
    default: return true;
    }
}

#define PUT(s, p, n) do { int rc_ = (s)->put((s), (p), (n)); if (rc_) return rc_; } while (0)
#define PUTS(s, lit) PUT(s, lit, sizeof lit - 1)

static int tostr(const struct jv *v, const unsigned char *end, struct sink *s, int depth, bool item)
{
    char num[32];
    switch (v->t) {
    case JT_NULL:
        if (!item)
            PUTS(s, "null");
        return 0; /* join writes null items as "" */
    case JT_BOOL:
        if (v->b)
            PUTS(s, "true");
        else
            PUTS(s, "false");
        return 0;
    case JT_NUM: PUT(s, num, cond_js_numstr(v->num, num)); return 0;
    case JT_STR: PUT(s, (const char *)v->p, v->n); return 0;
    case JT_OBJ: PUTS(s, "[object Object]"); return 0;
    default: break;
    }
    if (depth >= COND_MAX_DEPTH)
        return ERR_TOOBIG;
    const unsigned char *p = v->p;
    for (uint32_t i = 0; i < v->n; i++) {
        struct jv el;
        if (i)
            PUTS(s, ",");
        int rc = cond_mp_item(&p, end, &el);
        if (rc)
            return rc;
        if ((rc = tostr(&el, end, s, depth + 1, true)) != 0)
            return rc;
    }
    return 0;
}

int cond_js_tostring(const struct jv *v, const unsigned char *end, struct sink *s, int depth)
{
    return tostr(v, end, s, depth, false);
}

static int quote(struct sink *s, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    PUTS(s, "\"");
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > run)
            PUT(s, (const char *)p + run, i - run);
        run = i + 1;
        char e[6] = { '\\', 0 };
        size_t el = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15];
            el = 6;
        }
        PUT(s, e, el);
    }
    if (n > run)
        PUT(s, (const char *)p + run, n - run);
    PUTS(s, "\"");
    return 0;
}

struct pair {
    const char *k;
    size_t klen;
    const unsigned char *val;
    int64_t idx;      /* array-index key, or -1 */
    char tmp[32];
};

static int stringify_obj(const struct jv *v, const unsigned char *end, struct sink *s, int depth)
{
    struct pair stack[16], *pr = stack;
    uint32_t n = v->n;
    const unsigned char *p = v->p;
    int rc = 0;
    if (n > 16 && !(pr = malloc(sizeof *pr * n)))
        return ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        /* a number key's text goes to the pair's own tmp, which stays put */
        if ((rc = cond_mp_key(&p, end, &pr[i].k, &pr[i].klen, pr[i].tmp)) != 0)
            goto out;
        uint32_t idx;
        pr[i].idx = cond_js_index(pr[i].k, pr[i].klen, &idx) ? (int64_t)idx : -1;
        pr[i].val = p;
        if ((rc = cond_mp_skip(&p, end)) != 0)
            goto out;
    }
    if ((rc = s->put(s, "{", 1)) != 0)
        goto out;
    /* JS property order: array-index keys ascending, then the others in
     * insertion order; a repeated key keeps its first place, last value */
    int first = 1;
    for (int pass = 0; pass < 2; pass++) {
        int64_t last = -1;
        for (;;) {
            uint32_t pick = n;
            if (pass == 0) {
                for (uint32_t i = 0; i < n; i++)
                    if (pr[i].idx > last && (pick == n || pr[i].idx < pr[pick].idx))
                        pick = i;
                if (pick == n)
                    break;
                last = pr[pick].idx;
            } else {
                for (uint32_t i = (uint32_t)(last + 1); i < n; i++)
                    if (pr[i].idx < 0) {
                        pick = i;
                        break;
                    }
                if (pick == n)
                    break;
                last = pick;
                int dup = 0;
                for (uint32_t j = 0; j < pick && !dup; j++)
                    dup = pr[j].klen == pr[pick].klen && memcmp(pr[j].k, pr[pick].k, pr[j].klen) == 0;
                if (dup)
                    continue;
            }
            uint32_t val = pick;
            for (uint32_t j = pick + 1; j < n; j++)
                if (pr[j].klen == pr[pick].klen && memcmp(pr[j].k, pr[pick].k, pr[j].klen) == 0)
                    val = j;
            if (!first && (rc = s->put(s, ",", 1)) != 0)
                goto out;
            first = 0;
            if ((rc = quote(s, (const unsigned char *)pr[pick].k, pr[pick].klen)) != 0 ||
                (rc = s->put(s, ":", 1)) != 0)
                goto out;
            const unsigned char *q = pr[val].val;
            struct jv el;
            if ((rc = cond_mp_item(&q, end, &el)) != 0 ||
                (rc = cond_js_stringify(&el, end, s, depth + 1)) != 0)
                goto out;
        }
    }
    rc = s->put(s, "}", 1);
out:
    if (pr != stack)
        free(pr);
    return rc;
}

int cond_js_stringify(const struct jv *v, const unsigned char *end, struct sink *s, int depth)
{
    char num[32];
    int rc;
    switch (v->t) {
    case JT_NULL: PUTS(s, "null"); return 0;
    case JT_BOOL:
        if (v->b)
            PUTS(s, "true");
        else
            PUTS(s, "false");
        return 0;
    case JT_NUM:
        if (!isfinite(v->num))
            PUTS(s, "null");
        else
            PUT(s, num, cond_js_numstr(v->num, num));
        return 0;
    case JT_STR: return quote(s, v->p, v->n);
    default: break;
    }
    if (depth >= COND_MAX_DEPTH)
        return ERR_TOOBIG;
    if (v->t == JT_OBJ)
        return stringify_obj(v, end, s, depth);
    PUTS(s, "[");
    const unsigned char *p = v->p;
    for (uint32_t i = 0; i < v->n; i++) {
        struct jv el;
        if (i)
            PUTS(s, ",");
        if ((rc = cond_mp_item(&p, end, &el)) != 0 || (rc = cond_js_stringify(&el, end, s, depth + 1)) != 0)
            return rc;
    }
    PUTS(s, "]");
    return 0;
}

/* ------------------------------------------------------------------ */
/* versions                                                           */

int cond_js_padver(const struct jv *v, struct sbuf *out)
{
    char num[32];
    if (v->t == JT_NUM) {
        size_t n = cond_js_numstr(v->num, num);
        return cond_js_padver_text(num, n, out);
    }
    if (v->t == JT_STR)
        return cond_js_padver_text((const char *)v->p, v->n, out);
    return cond_js_padver_text("0", 1, out);
}

int cond_js_padver_text(const char *str, size_t n, struct sbuf *out)
{
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) { /* "" is falsy: "0" */
        s = (const unsigned char *)"0";
        n = 1;
    }
    /* input.replace(/(^v|\+.*$)/g, ""): a leading "v", and from the first
     * "+" that no line terminator follows ("." does not match one and "$"
     * is the end of the input) */
    size_t b = s[0] == 'v' ? 1 : 0, e = n, lt = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n' || s[i] == '\r')
            lt = i + 1;
        else if (s[i] == 0xe2 && i + 2 < n && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9))
            lt = i + 3;
    }
    for (size_t i = b > lt ? b : lt; i < n; i++)
        if (s[i] == '+') {
            e = i;
            break;
        }
    /* split(/[-.]/), "~" after exactly three parts, digit-only parts
     * padded to 5 columns with spaces, joined with "-" */
    size_t parts = 1;
    for (size_t i = b; i < e; i++)
        parts += s[i] == '-' || s[i] == '.';
    size_t start = b;
    int rc;
    for (size_t i = b; i <= e; i++) {
        if (i < e && s[i] != '-' && s[i] != '.')
            continue;
        size_t len = i - start;
        bool digits = len > 0;
        for (size_t j = start; j < i && digits; j++)
            digits = s[j] >= '0' && s[j] <= '9';
        if (start > b && (rc = cond_sbuf_add(out, "-", 1)) != 0)
            return rc;
        for (size_t j = len; digits && j < 5; j++)
            if ((rc = cond_sbuf_add(out, " ", 1)) != 0)
                return rc;
        if ((rc = cond_sbuf_add(out, (const char *)s + start, len)) != 0)
            return rc;
        start = i + 1;
    }
    if (parts == 3 && (rc = cond_sbuf_add(out, "-~", 2)) != 0)
        return rc;
    return 0;
}

bool cond_js_index(const char *s, size_t n, uint32_t *idx)
{
    if (n == 0 || n > 10 || (n > 1 && s[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > 4294967294u) /* 2^32 - 2: the largest array index */
        return false;
    *idx = (uint32_t)v;
    return true;
}
