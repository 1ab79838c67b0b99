/* emit.c — JSON text / msgpack writer (see emit.h). */
#include "codec/emit.h"
#include "base/err.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void emit_init(struct emit *e, struct buf *b, int msgpack)
{
    e->b = b;
    e->mp = msgpack;
    e->depth = 0;
    e->err = 0;
    e->first[0] = 1;
    e->after_key = 0;
}

int emit_error(const struct emit *e) { return e->err; }

static void put(struct emit *e, const void *p, size_t n)
{
    if (!e->err && buf_add(e->b, p, n))
        e->err = ERR_NOMEM;
}

static void putc1(struct emit *e, char c)
{
    if (e->err)
        return;
    struct buf *b = e->b;
    if (b->len + 1 < b->cap) {
        b->p[b->len++] = c;
        b->p[b->len] = '\0';
    } else if (buf_addc(b, c)) {
        e->err = ERR_NOMEM;
    }
}

/* JSON: the comma before an element (none right after a key). */
static void sep(struct emit *e)
{
    if (e->mp)
        return;
    if (e->after_key) {
        e->after_key = 0;
        return;
    }
    if (!e->first[e->depth])
        putc1(e, ',');
    e->first[e->depth] = 0;
}

static void be(struct emit *e, unsigned char tag, uint64_t v, int bytes)
{
    unsigned char t[9];
    t[0] = tag;
    for (int i = 0; i < bytes; i++)
        t[1 + i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    put(e, t, (size_t)bytes + 1);
}

static void open_container(struct emit *e, size_t n, int map)
{
    sep(e);
    if (e->depth >= EMIT_MAX_DEPTH) {
        if (!e->err)
            e->err = ERR_TOOBIG;
        return;
    }
    e->depth++;
    e->first[e->depth] = 1;
    e->is_map[e->depth] = (unsigned char)map;
    if (!e->mp) {
        putc1(e, map ? '{' : '[');
        return;
    }
    if (n < 16)
        putc1(e, (char)((map ? 0x80 : 0x90) | n));
    else if (n <= 0xffff)
        be(e, map ? 0xde : 0xdc, n, 2);
    else
        be(e, map ? 0xdf : 0xdd, n, 4);
}

void emit_map(struct emit *e, size_t n) { open_container(e, n, 1); }
void emit_array(struct emit *e, size_t n) { open_container(e, n, 0); }

/* JSON closers are only known by what was opened; the emitter keeps one
 * bit per level. */
void emit_end(struct emit *e)
{
    if (e->depth <= 0) {
        if (!e->err)
            e->err = ERR_INVAL;
        return;
    }
    if (!e->mp)
        putc1(e, e->is_map[e->depth] ? '}' : ']');
    e->depth--;
}

size_t emit_utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = *p, cp, min;
    size_t k;
    if ((c & 0xe0) == 0xc0)
        k = 1, min = 0x80, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
        k = 2, min = 0x800, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
        k = 3, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if ((size_t)(end - p) <= k)
        return 0;
    for (size_t i = 1; i <= k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k + 1;
}

int emit_utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        if (*p < 0x80) {
            if (!*p)
                return 0;
            p++;
            continue;
        }
        size_t k = emit_utf8_seq(p, end);
        if (!k)
            return 0;
        p += k;
    }
    return 1;
}

static void str_body(struct emit *e, const char *s, size_t n)
{
    if (e->mp) {
        if (!emit_utf8_ok(s, n)) {
            if (!e->err)
                e->err = ERR_INVAL;
            return;
        }
        if (n < 32)
            putc1(e, (char)(0xa0 | n));
        else if (n <= 0xff)
            be(e, 0xd9, n, 1);
        else if (n <= 0xffff)
            be(e, 0xda, n, 2);
        else
            be(e, 0xdb, n, 4);
        put(e, s, n);
        return;
    }
    /* JSON: validation and escaping in one pass; plain runs copied whole */
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    putc1(e, '"');
    size_t run = 0, i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = emit_utf8_seq(u + i, u + n);
            if (!k)
                goto bad;
            i += k;
            continue;
        }
        if (!c)
            goto bad;
        put(e, s + run, i - run);
        char esc[6] = { '\\', 0 };
        size_t el = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            el = 6;
        }
        put(e, esc, el);
        run = ++i;
    }
    put(e, s + run, n - run);
    putc1(e, '"');
    return;
bad:
    if (!e->err)
        e->err = ERR_INVAL;
}

void emit_key(struct emit *e, const char *k, size_t n)
{
    sep(e);
    str_body(e, k, n);
    if (!e->mp) {
        putc1(e, ':');
        e->after_key = 1;
    }
}

void emit_str(struct emit *e, const char *s, size_t n)
{
    sep(e);
    str_body(e, s, n);
}

void emit_int(struct emit *e, int64_t v)
{
    sep(e);
    if (!e->mp) {
        char t[24], *o = t + sizeof t;
        uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; /* INT64_MIN too */
        do
            *--o = (char)('0' + u % 10);
        while ((u /= 10));
        if (v < 0)
            *--o = '-';
        put(e, o, (size_t)(t + sizeof t - o));
    } else if (v >= 0 && v < 128) {
        putc1(e, (char)v);
    } else if (v < 0 && v >= -32) {
        putc1(e, (char)(0xe0 | (v + 32)));
    } else {
        be(e, 0xd3, (uint64_t)v, 8);
    }
}

/* Write digits d[0..nd) (no trailing zeros, nd >= 1) with decimal exponent
 * x (value = d.ddd * 10^x) the way "%.{p}g" would. */
static int put_g(char *out, int neg, const char *d, int nd, int x, int p)
{
    char *o = out;
    if (neg)
        *o++ = '-';
    if (x < -4 || x >= p) {
        *o++ = d[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        o += snprintf(o, 8, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    } else if (x < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -x - 1; i++)
            *o++ = '0';
        memcpy(o, d, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= x; i++)
            *o++ = i < nd ? d[i] : '0';
        if (nd > x + 1) {
            *o++ = '.';
            memcpy(o, d + x + 1, (size_t)(nd - x - 1));
            o += nd - x - 1;
        }
    }
    *o = '\0';
    return (int)(o - out);
}

/* The 17 significant digits of v without printf: v scaled by an exact
 * power of ten in long double (64-bit mantissa, relative error under
 * 2^-63, so under 0.011 in the last of 17 digits) and rounded.  Returns -1
 * where that could pick the wrong digit (a fraction within 0.02 of a tie)
 * or v is outside the table: the caller then asks printf. */
static const long double p10[] = { /* exact: 5^27 < 2^63 */
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
    1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
    1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L,
};

static int digits17(double v, char dig[17], int *x, uint64_t *mm, long double *tt)
{
    double a = fabs(v);
    if (!(a >= 1e-10 && a <= 1e26))
        return -1;
    int e10 = (int)floor(log10(a));
    int k = 16 - e10;
    if (k < -27 || k > 27)
        return -1;
    long double t = k >= 0 ? (long double)a * p10[k] : (long double)a / p10[-k];
    if (t < 1e16L) {
        t *= 10;
        e10--;
    } else if (t >= 1e17L) {
        t /= 10;
        e10++;
    }
    if (t < 1e16L || t >= 1e17L)
        return -1;
    long double fl = floorl(t), fr = t - fl;
    if (fabsl(fr - 0.5L) < 0.02L)
        return -1;
    uint64_t m = (uint64_t)fl + (fr > 0.5L);
    if (m >= 100000000000000000ULL) { /* 99...9.7 rounded up to 10^17 */
        m /= 10;
        t /= 10;
        e10++;
    }
    *mm = m;
    *tt = t;
    for (int i = 16; i >= 0; i--) {
        dig[i] = (char)('0' + m % 10);
        m /= 10;
    }
    *x = e10;
    return 0;
}

/* dig rounded to p digits (half up on the text) as "%.{p}g" text in out. */
static int round_put(char *out, int neg, const char *dig, int x, int p)
{
    char d[18];
    int xd = x;
    memcpy(d, dig, (size_t)p);
    if (p < 17 && dig[p] >= '5') {
        int i = p - 1;
        while (i >= 0 && d[i] == '9')
            d[i--] = '0';
        if (i >= 0) {
            d[i]++;
        } else {
            memmove(d + 1, d, (size_t)p - 1);
            d[0] = '1';
            xd++;
        }
    }
    int nd = p;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    return put_g(out, neg, d, nd, xd, p);
}

static int real_tail(char *out, int n)
{
    if (!strpbrk(out, ".eEn")) { /* "30" would read back as an integer */
        out[n++] = '.';
        out[n++] = '0';
        out[n] = '\0';
    }
    return n;
}

/* Does the p-digit (15 or 16) rounding of the 17 digits m (v scaled to
 * t = |v| * 10^(16-x)) read back as v?  It does when it lies inside v's
 * rounding interval: half an ulp either side, half of that below a power
 * of two.  t is within 0.011 of exact in these units and half an ulp is
 * several units wide, so only a candidate within 0.05 of the interval's
 * edge is left to strtod (-1). */
static int reads_back(uint64_t m, long double t, int x, double v, int p)
{
    uint64_t unit = p == 16 ? 10 : 100, c = m / unit * unit;
    if (m % unit >= unit / 2)
        c += unit;
    int e2;
    double f = frexp(fabs(v), &e2);
    long double sc = x <= 16 ? p10[16 - x] : 1.0L / p10[x - 16];
    long double up = ldexpl(sc, e2 - 54), down = f == 0.5 ? up / 2 : up;
    long double d = (long double)c - t, edge = d >= 0 ? up : down;
    if (d < 0)
        d = -d;
    if (d < edge - 0.05L)
        return 1;
    if (d > edge + 0.05L)
        return 0;
    return -1;
}

int emit_fmt_real(char *out, double v)
{
    char dig[17];
    int x, neg = v < 0;
    uint64_t m;
    long double t;
    /* Fast path: exact 17 digits without printf, the 15- and 16-digit
     * roundings checked against v's rounding interval (strtod only near
     * its edge).  A 17- or 16-digit text whose last digits are "50" / "5"
     * could round twice the wrong way to 15 digits: those go the printf
     * way. */
    if (digits17(v, dig, &x, &m, &t) == 0 && !(dig[15] == '5' && dig[16] == '0') &&
        dig[16] != '5') {
        for (int p = 15; p <= 16; p++) {
            int n = round_put(out, neg, dig, x, p);
            int ok = reads_back(m, t, x, v, p);
            if (ok < 0)
                ok = strtod(out, NULL) == v;
            if (ok)
                return real_tail(out, n);
        }
        return real_tail(out, round_put(out, neg, dig, x, 17));
    }
    /* Slow path (ties, extreme magnitudes): printf rounds exactly. */
    int n = 0;
    for (int p = 15; p <= 17; p++) {
        n = snprintf(out, 32, "%.*g", p, v);
        if (p == 17 || strtod(out, NULL) == v)
            break;
    }
    return real_tail(out, n);
}

void emit_real(struct emit *e, double v)
{
    sep(e);
    if (!isfinite(v)) {
        if (!e->err)
            e->err = ERR_INVAL;
        return;
    }
    if (e->mp) {
        uint64_t u;
        memcpy(&u, &v, sizeof u);
        be(e, 0xcb, u, 8);
        return;
    }
    char t[32];
    int n = emit_fmt_real(t, v);
    put(e, t, (size_t)n);
}

void emit_bool(struct emit *e, int v)
{
    sep(e);
    if (e->mp)
        putc1(e, v ? (char)0xc3 : (char)0xc2);
    else if (v)
        put(e, "true", 4);
    else
        put(e, "false", 5);
}

void emit_null(struct emit *e)
{
    sep(e);
    if (e->mp)
        putc1(e, (char)0xc0);
    else
        put(e, "null", 4);
}

void emit_json(struct emit *e, const json_t *v)
{
    if (e->err)
        return;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        emit_map(e, json_object_size(v));
        json_object_foreach((json_t *)v, k, x) {
            emit_key(e, k, strlen(k));
            emit_json(e, x);
        }
        emit_end(e);
        break;
    }
    case JSON_ARRAY:
        emit_array(e, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v) && !e->err; i++)
            emit_json(e, json_array_get(v, i));
        emit_end(e);
        break;
    case JSON_STRING: emit_str(e, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: emit_int(e, (int64_t)json_integer_value(v)); break;
    case JSON_REAL: emit_real(e, json_real_value(v)); break;
    case JSON_TRUE: emit_bool(e, 1); break;
    case JSON_FALSE: emit_bool(e, 0); break;
    default: emit_null(e); break;
    }
}

void emit_raw(struct emit *e, const char *p, size_t n)
{
    sep(e);
    put(e, p, n);
}
