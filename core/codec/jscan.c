/* jscan.c — validate JSON text once, then read it in place (see jscan.h). */
#include "codec/jscan.h"
#include "codec/codec.h"
#include "codec/emit.h"
#include "base/err.h"
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* validation                                                             */

struct sc {
    const char *s, *p, *end;
    const char *at;  /* where the first problem is */
    const char *why;
    int err;
};

static int fail(struct sc *c, const char *at, const char *why, int err)
{
    if (!c->err) {
        c->at = at;
        c->why = why;
        c->err = err;
    }
    return c->err;
}

static void ws(struct sc *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9')
            v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f')
            v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            v |= (unsigned)(h - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int v_string(struct sc *c)
{
    const char *start = c->p++;
    for (;;) {
        if (c->p >= c->end)
            return fail(c, start, "unterminated string", ERR_PARSE);
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            c->p++;
            return 0;
        }
        if (ch < 0x20)
            return fail(c, c->p, "control character in string", ERR_PARSE);
        if (ch == '\\') {
            const char *e = c->p++;
            if (c->p >= c->end)
                return fail(c, e, "unterminated string", ERR_PARSE);
            switch (*c->p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                c->p++;
                break;
            case 'u': {
                unsigned u;
                if (hex4(c->p + 1, c->end, &u))
                    return fail(c, e, "invalid \\u escape", ERR_PARSE);
                c->p += 5;
                if (u == 0)
                    return fail(c, e, "\\u0000 is not allowed", ERR_PARSE);
                if (u >= 0xdc00 && u <= 0xdfff)
                    return fail(c, e, "invalid Unicode (lone low surrogate)", ERR_PARSE);
                if (u >= 0xd800 && u <= 0xdbff) {
                    unsigned lo;
                    if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' ||
                        hex4(c->p + 2, c->end, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return fail(c, e, "invalid Unicode (lone high surrogate)", ERR_PARSE);
                    c->p += 6;
                }
                break;
            }
            default:
                return fail(c, e, "invalid escape", ERR_PARSE);
            }
            continue;
        }
        if (ch >= 0x80) {
            size_t k = emit_utf8_seq((const unsigned char *)c->p, (const unsigned char *)c->end);
            if (!k)
                return fail(c, c->p, "invalid UTF-8", ERR_PARSE);
            c->p += k;
            continue;
        }
        c->p++;
    }
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* strtod on a span (the text is not NUL-terminated). */
static double span_strtod(const char *p, size_t n)
{
    char small[64];
    char *t = n < sizeof small ? small : malloc(n + 1);
    if (!t)
        return NAN;
    memcpy(t, p, n);
    t[n] = '\0';
    double d = strtod(t, NULL);
    if (t != small)
        free(t);
    return d;
}

/* Digits of an integer literal to int64; -1 on overflow. */
static int parse_i64(const char *p, const char *end, int64_t *out)
{
    int neg = *p == '-';
    p += neg;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (lim - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int v_number(struct sc *c)
{
    const char *start = c->p;
    if (*c->p == '-')
        c->p++;
    if (c->p >= c->end || !is_digit(*c->p))
        return fail(c, start, "invalid number", ERR_PARSE);
    if (*c->p == '0') {
        c->p++;
        if (c->p < c->end && is_digit(*c->p))
            return fail(c, start, "invalid number (leading zero)", ERR_PARSE);
    } else {
        while (c->p < c->end && is_digit(*c->p))
            c->p++;
    }
    int real = 0;
    if (c->p < c->end && *c->p == '.') {
        real = 1;
        c->p++;
        if (c->p >= c->end || !is_digit(*c->p))
            return fail(c, start, "invalid number", ERR_PARSE);
        while (c->p < c->end && is_digit(*c->p))
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        real = 1;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (c->p >= c->end || !is_digit(*c->p))
            return fail(c, start, "invalid number", ERR_PARSE);
        while (c->p < c->end && is_digit(*c->p))
            c->p++;
    }
    if (real) {
        if (isinf(span_strtod(start, (size_t)(c->p - start))))
            return fail(c, start, "real number overflow", ERR_PARSE);
    } else {
        int64_t v;
        if (parse_i64(start, c->p, &v))
            return fail(c, start, "too big integer", ERR_PARSE);
    }
    return 0;
}

static int v_lit(struct sc *c, const char *lit, size_t n)
{
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n))
        return fail(c, c->p, "invalid token", ERR_PARSE);
    c->p += n;
    return 0;
}

static int v_value(struct sc *c, int depth)
{
    ws(c);
    if (c->p >= c->end)
        return fail(c, c->p, "unexpected end of input", ERR_PARSE);
    switch (*c->p) {
    case '{':
    case '[': {
        char close = *c->p == '{' ? '}' : ']';
        int obj = close == '}';
        if (depth + 1 > CODEC_MAX_DEPTH)
            return fail(c, c->p, "nesting deeper than 64", ERR_TOOBIG);
        c->p++;
        ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 0;
        }
        for (;;) {
            ws(c);
            if (obj) {
                if (c->p >= c->end || *c->p != '"')
                    return fail(c, c->p, "string or '}' expected", ERR_PARSE);
                if (v_string(c))
                    return c->err;
                ws(c);
                if (c->p >= c->end || *c->p != ':')
                    return fail(c, c->p, "':' expected", ERR_PARSE);
                c->p++;
            }
            if (v_value(c, depth + 1))
                return c->err;
            ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                continue;
            }
            if (c->p < c->end && *c->p == close) {
                c->p++;
                return 0;
            }
            return fail(c, c->p, obj ? "',' or '}' expected" : "',' or ']' expected", ERR_PARSE);
        }
    }
    case '"': return v_string(c);
    case 't': return v_lit(c, "true", 4);
    case 'f': return v_lit(c, "false", 5);
    case 'n': return v_lit(c, "null", 4);
    default:
        if (*c->p == '-' || is_digit(*c->p))
            return v_number(c);
        return fail(c, c->p, "invalid token", ERR_PARSE);
    }
}

_Static_assert(CODEC_MAX_DEPTH == 64, "the nesting message names the limit");

int jscan_check(const char *p, size_t len, char *msg, size_t msglen)
{
    if (!p)
        p = "", len = 0;
    struct sc c = { p, p, p + len, NULL, NULL, 0 };
    if (msg && msglen)
        msg[0] = '\0';
    if (memchr(p, '\0', len))
        fail(&c, (const char *)memchr(p, '\0', len), "NUL byte in input", ERR_PARSE);
    else if (!v_value(&c, 0)) {
        ws(&c);
        if (c.p != c.end)
            fail(&c, c.p, "end of input expected", ERR_PARSE);
    }
    if (!c.err)
        return 0;
    if (msg && msglen) {
        int line = 1;
        const char *ls = p;
        for (const char *q = p; q < c.at; q++)
            if (*q == '\n') {
                line++;
                ls = q + 1;
            }
        snprintf(msg, msglen, "line %d column %d: %s", line, (int)(c.at - ls) + 1, c.why);
    }
    return c.err;
}

/* ---------------------------------------------------------------------- */
/* reading validated text                                                 */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* End of the (valid) value starting at p. */
static const char *skip_value(const char *p, const char *end)
{
    if (*p == '"') {
        for (p++; p < end && *p != '"'; p++)
            if (*p == '\\')
                p++;
        return p + 1;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            char ch = *p;
            if (ch == '"') {
                for (p++; p < end && *p != '"'; p++)
                    if (*p == '\\')
                        p++;
            } else if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth == 0)
                    return p + 1;
            }
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p;
}

struct jscan_val jscan_whole(const char *p, size_t len)
{
    const char *end = p + len;
    p = skip_ws(p, end);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    return (struct jscan_val){ p, (size_t)(end - p) };
}

char jscan_type(struct jscan_val v)
{
    if (!v.len)
        return 0;
    char ch = v.p[0];
    return ch == '-' || is_digit(ch) ? '0' : ch;
}

int jscan_object(struct jscan_obj *o, struct jscan_val v)
{
    if (jscan_type(v) != '{')
        return ERR_INVAL;
    o->cur = v.p + 1;
    o->end = v.p + v.len;
    return 0;
}

int jscan_string(struct jscan_val v, struct buf *out)
{
    buf_reset(out);
    const char *p = v.p + 1, *end = v.p + v.len - 1; /* inside the quotes */
    if (buf_reserve(out, (size_t)(end - p)))
        return ERR_NOMEM;
    while (p < end) {
        const char *run = p;
        while (p < end && *p != '\\')
            p++;
        if (buf_add(out, run, (size_t)(p - run)))
            return ERR_NOMEM;
        if (p >= end)
            break;
        char e = p[1];
        char one = 0;
        switch (e) {
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': break;
        default: one = e; break; /* " \ / */
        }
        if (e != 'u') {
            if (buf_addc(out, one))
                return ERR_NOMEM;
            p += 2;
            continue;
        }
        unsigned u = 0, lo = 0;
        hex4(p + 2, end, &u);
        p += 6;
        if (u >= 0xd800 && u <= 0xdbff) {
            hex4(p + 2, end, &lo);
            p += 6;
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        }
        char t[4];
        size_t n;
        if (u < 0x80) {
            t[0] = (char)u, n = 1;
        } else if (u < 0x800) {
            t[0] = (char)(0xc0 | u >> 6), t[1] = (char)(0x80 | (u & 0x3f)), n = 2;
        } else if (u < 0x10000) {
            t[0] = (char)(0xe0 | u >> 12), t[1] = (char)(0x80 | ((u >> 6) & 0x3f));
            t[2] = (char)(0x80 | (u & 0x3f)), n = 3;
        } else {
            t[0] = (char)(0xf0 | u >> 18), t[1] = (char)(0x80 | ((u >> 12) & 0x3f));
            t[2] = (char)(0x80 | ((u >> 6) & 0x3f)), t[3] = (char)(0x80 | (u & 0x3f)), n = 4;
        }
        if (buf_add(out, t, n))
            return ERR_NOMEM;
    }
    return 0;
}

int jscan_next(struct jscan_obj *o, struct buf *key, struct jscan_val *val)
{
    const char *p = skip_ws(o->cur, o->end);
    if (p < o->end && *p == ',')
        p = skip_ws(p + 1, o->end);
    if (p >= o->end || *p != '"')
        return 0; /* '}' */
    const char *ke = skip_value(p, o->end);
    if (jscan_string((struct jscan_val){ p, (size_t)(ke - p) }, key))
        return 0;
    p = skip_ws(ke, o->end);
    p = skip_ws(p + 1, o->end); /* ':' */
    const char *ve = skip_value(p, o->end);
    val->p = p;
    val->len = (size_t)(ve - p);
    o->cur = ve;
    return 1;
}

int jscan_int(struct jscan_val v, int64_t *out)
{
    if (jscan_type(v) != '0' || memchr(v.p, '.', v.len) || memchr(v.p, 'e', v.len) ||
        memchr(v.p, 'E', v.len))
        return ERR_INVAL;
    return parse_i64(v.p, v.p + v.len, out) ? ERR_INVAL : 0;
}

static int push(lua_State *L, struct jscan_val v, int depth, struct buf *tmp)
{
    switch (jscan_type(v)) {
    case 'n': lua_pushnil(L); return 0;
    case 't': lua_pushboolean(L, 1); return 0;
    case 'f': lua_pushboolean(L, 0); return 0;
    case '0': lua_pushnumber(L, span_strtod(v.p, v.len)); return 0;
    case '"':
        if (jscan_string(v, tmp))
            return ERR_NOMEM;
        lua_pushlstring(L, tmp->p ? tmp->p : "", tmp->len);
        return 0;
    case '{': {
        if (depth >= CODEC_MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        lua_createtable(L, 0, 4);
        struct jscan_obj o;
        struct jscan_val mv;
        jscan_object(&o, v);
        while (jscan_next(&o, tmp, &mv)) {
            lua_pushlstring(L, tmp->p ? tmp->p : "", tmp->len);
            int rc = push(L, mv, depth + 1, tmp); /* null pushes nil: the key is dropped */
            if (rc)
                return rc;
            lua_rawset(L, -3);
        }
        return 0;
    }
    case '[': {
        if (depth >= CODEC_MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        lua_createtable(L, 4, 0);
        const char *p = skip_ws(v.p + 1, v.p + v.len), *end = v.p + v.len - 1;
        int i = 0;
        while (p < end) {
            const char *e = skip_value(p, end);
            i++;
            struct jscan_val ev = { p, (size_t)(e - p) };
            if (jscan_type(ev) != 'n') {
                int rc = push(L, ev, depth + 1, tmp);
                if (rc)
                    return rc;
                lua_rawseti(L, -2, i);
            }
            p = skip_ws(e, end);
            if (p < end && *p == ',')
                p = skip_ws(p + 1, end);
        }
        return 0;
    }
    }
    return ERR_INVAL;
}

int jscan_push_lua(lua_State *L, struct jscan_val v)
{
    int top = lua_gettop(L);
    struct buf tmp = BUF_INIT;
    int rc = push(L, v, 0, &tmp);
    buf_free(&tmp);
    if (rc)
        lua_settop(L, top);
    return rc;
}
