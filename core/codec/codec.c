/*
 * codec.c — jansson ⇄ msgpack, and JSON text parsing with limits.
 *
 * Encoding uses msgpack-c's packer with a write callback appending to a
 * struct buf.  Decoding is hand-rolled rather than msgpack_unpack_next:
 * the input is hostile (stored values, wire bodies) and a direct reader
 * lets every length be checked against the bytes actually left *before*
 * anything is allocated — a str32 claiming 4 GB or an array32 claiming
 * 4 billion elements in a 10-byte body fails at once — and bounds
 * recursion by CODEC_MAX_DEPTH.  Each element takes at least one input
 * byte, so the tree built is at most `len` nodes.
 */
#include "codec/codec.h"
#include "base/err.h"

#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* codec_depth() stops descending here (cycles, absurd hand-built trees). */
#define DEPTH_SATURATE 4096

/* ------------------------------------------------------------------ */
/* json → msgpack                                                      */

static int buf_write(void *data, const char *p, size_t len)
{
    return buf_add(data, p, len) ? -1 : 0;
}

static int enc(msgpack_packer *pk, const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (depth + 1 > CODEC_MAX_DEPTH)
            return ERR_TOOBIG;
        size_t n = json_object_size(v);
        if (n > UINT32_MAX)
            return ERR_TOOBIG;
        if (msgpack_pack_map(pk, n))
            return ERR_NOMEM;
        const char *key;
        size_t klen;
        json_t *val;
        json_object_keylen_foreach((json_t *)v, key, klen, val) {
            if (klen > UINT32_MAX)
                return ERR_TOOBIG;
            if (msgpack_pack_str_with_body(pk, key, klen))
                return ERR_NOMEM;
            int rc = enc(pk, val, depth + 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (depth + 1 > CODEC_MAX_DEPTH)
            return ERR_TOOBIG;
        size_t n = json_array_size(v);
        if (n > UINT32_MAX)
            return ERR_TOOBIG;
        if (msgpack_pack_array(pk, n))
            return ERR_NOMEM;
        for (size_t i = 0; i < n; i++) {
            int rc = enc(pk, json_array_get(v, i), depth + 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    case JSON_STRING: {
        size_t n = json_string_length(v);
        if (n > UINT32_MAX)
            return ERR_TOOBIG;
        return msgpack_pack_str_with_body(pk, json_string_value(v), n) ? ERR_NOMEM : 0;
    }
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(v)) ? ERR_NOMEM : 0;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (!isfinite(d))
            return ERR_INVAL;
        return msgpack_pack_double(pk, d) ? ERR_NOMEM : 0;
    }
    case JSON_TRUE:
        return msgpack_pack_true(pk) ? ERR_NOMEM : 0;
    case JSON_FALSE:
        return msgpack_pack_false(pk) ? ERR_NOMEM : 0;
    case JSON_NULL:
        return msgpack_pack_nil(pk) ? ERR_NOMEM : 0;
    }
    return ERR_INVAL;
}

int codec_json_to_msgpack(const json_t *v, struct buf *out)
{
    if (!v || !out)
        return ERR_INVAL;
    size_t orig = out->len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    int rc = enc(&pk, v, 0);
    if (rc) {
        out->len = orig; /* leave no half-written value behind */
        if (out->p)
            out->p[orig] = 0;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* msgpack → json                                                      */

struct rd {
    const uint8_t *p, *end;
    int err;
};

/* Strict UTF-8 (no overlongs, surrogates, > U+10FFFF) and no NUL: a NUL
 * would silently truncate the value for every C consumer downstream. */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int need(struct rd *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->err = ERR_PARSE;
        return 0;
    }
    return 1;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Read an n-byte big-endian length/number. */
static int rd_uint(struct rd *r, int n, uint64_t *v)
{
    if (!need(r, (size_t)n))
        return 0;
    *v = be(r->p, n);
    r->p += n;
    return 1;
}

/* Raw bytes of a str/bin/ext body: validated, returned without copying. */
static int rd_bytes(struct rd *r, uint64_t n, const uint8_t **s)
{
    if (!need(r, n))
        return 0;
    if (!utf8_ok(r->p, (size_t)n)) {
        r->err = ERR_PARSE;
        return 0;
    }
    *s = r->p;
    r->p += n;
    return 1;
}

static json_t *dec(struct rd *r, int depth);

static json_t *mk(struct rd *r, json_t *v)
{
    if (!v)
        r->err = ERR_NOMEM;
    return v;
}

static json_t *dec_array(struct rd *r, uint64_t n, int depth)
{
    if (depth + 1 > CODEC_MAX_DEPTH) {
        r->err = ERR_TOOBIG;
        return NULL;
    }
    if (n > (uint64_t)(r->end - r->p)) { /* each element needs >= 1 byte */
        r->err = ERR_PARSE;
        return NULL;
    }
    json_t *a = mk(r, json_array());
    for (uint64_t i = 0; a && i < n; i++) {
        json_t *e = dec(r, depth + 1);
        if (!e || json_array_append_new(a, e)) {
            if (e)
                r->err = ERR_NOMEM;
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* A map key as text: strings as-is, scalars stringified. */
static int dec_key(struct rd *r, char *tmp, size_t tmplen, const char **key, size_t *klen)
{
    if (!need(r, 1))
        return 0;
    uint8_t c = *r->p;
    uint64_t n;
    const uint8_t *s;
    if ((c >= 0xa0 && c <= 0xbf) || c == 0xd9 || c == 0xda || c == 0xdb ||
        c == 0xc4 || c == 0xc5 || c == 0xc6) {
        r->p++;
        if (c <= 0xbf && c >= 0xa0)
            n = c & 0x1f;
        else if (!rd_uint(r, c == 0xd9 || c == 0xc4 ? 1 : c == 0xda || c == 0xc5 ? 2 : 4, &n))
            return 0;
        if (!rd_bytes(r, n, &s))
            return 0;
        *key = (const char *)s;
        *klen = (size_t)n;
        return 1;
    }
    if (c >= 0x80 && c <= 0x9f) { /* fixmap / fixarray keys */
        r->err = ERR_PARSE;
        return 0;
    }
    json_t *v = dec(r, CODEC_MAX_DEPTH); /* containers are refused here */
    if (!v) {
        if (r->err == ERR_TOOBIG)
            r->err = ERR_PARSE;
        return 0;
    }
    int w;
    switch (json_typeof(v)) {
    case JSON_INTEGER: w = snprintf(tmp, tmplen, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: w = snprintf(tmp, tmplen, "%.17g", json_real_value(v)); break;
    case JSON_TRUE: w = snprintf(tmp, tmplen, "true"); break;
    case JSON_FALSE: w = snprintf(tmp, tmplen, "false"); break;
    case JSON_NULL: w = snprintf(tmp, tmplen, "null"); break;
    case JSON_STRING: /* ext payload */
        w = snprintf(tmp, tmplen, "%s", json_string_value(v));
        if ((size_t)w >= tmplen) { /* long ext key: keep as a slice of input */
            json_decref(v);
            r->err = ERR_PARSE;
            return 0;
        }
        break;
    default: w = -1; break;
    }
    json_decref(v);
    if (w < 0 || (size_t)w >= tmplen) {
        r->err = ERR_PARSE;
        return 0;
    }
    *key = tmp;
    *klen = (size_t)w;
    return 1;
}

static json_t *dec_map(struct rd *r, uint64_t n, int depth)
{
    if (depth + 1 > CODEC_MAX_DEPTH) {
        r->err = ERR_TOOBIG;
        return NULL;
    }
    if (n > (uint64_t)(r->end - r->p) / 2) { /* key + value >= 2 bytes */
        r->err = ERR_PARSE;
        return NULL;
    }
    json_t *o = mk(r, json_object());
    for (uint64_t i = 0; o && i < n; i++) {
        char tmp[64];
        const char *key;
        size_t klen;
        json_t *val;
        if (!dec_key(r, tmp, sizeof tmp, &key, &klen) || !(val = dec(r, depth + 1))) {
            json_decref(o);
            return NULL;
        }
        /* Duplicate keys: last wins, in the first one's position. */
        if (json_object_setn_new_nocheck(o, key, klen, val)) {
            r->err = ERR_NOMEM;
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *dec_str(struct rd *r, uint64_t n)
{
    const uint8_t *s;
    if (!rd_bytes(r, n, &s))
        return NULL;
    return mk(r, json_stringn_nocheck((const char *)s, (size_t)n));
}

static json_t *dec_real(struct rd *r, double d)
{
    if (!isfinite(d)) { /* JSON has no NaN/Infinity */
        r->err = ERR_PARSE;
        return NULL;
    }
    return mk(r, json_real(d));
}

static json_t *dec(struct rd *r, int depth)
{
    uint64_t n;
    if (!need(r, 1))
        return NULL;
    uint8_t c = *r->p++;
    if (c <= 0x7f)
        return mk(r, json_integer(c));
    if (c >= 0xe0)
        return mk(r, json_integer((int8_t)c));
    if (c <= 0x8f)
        return dec_map(r, c & 0x0f, depth);
    if (c <= 0x9f)
        return dec_array(r, c & 0x0f, depth);
    if (c <= 0xbf)
        return dec_str(r, c & 0x1f);
    switch (c) {
    case 0xc0: return mk(r, json_null());
    case 0xc2: return mk(r, json_false());
    case 0xc3: return mk(r, json_true());
    case 0xc4: case 0xd9: /* bin8, str8 */
        return rd_uint(r, 1, &n) ? dec_str(r, n) : NULL;
    case 0xc5: case 0xda:
        return rd_uint(r, 2, &n) ? dec_str(r, n) : NULL;
    case 0xc6: case 0xdb:
        return rd_uint(r, 4, &n) ? dec_str(r, n) : NULL;
    case 0xc7: case 0xc8: case 0xc9: /* ext8/16/32: length, type, data */
        if (!rd_uint(r, c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4, &n) || !need(r, 1))
            return NULL;
        r->p++;
        return dec_str(r, n);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1..16 */
        if (!need(r, 1))
            return NULL;
        r->p++;
        return dec_str(r, 1u << (c - 0xd4));
    case 0xca: {
        if (!rd_uint(r, 4, &n))
            return NULL;
        uint32_t u = (uint32_t)n;
        float f;
        memcpy(&f, &u, sizeof f);
        return dec_real(r, f);
    }
    case 0xcb: {
        if (!rd_uint(r, 8, &n))
            return NULL;
        double d;
        memcpy(&d, &n, sizeof d);
        return dec_real(r, d);
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if (!rd_uint(r, 1 << (c - 0xcc), &n))
            return NULL;
        if (n > INT64_MAX) { /* not representable as json_int_t */
            r->err = ERR_PARSE;
            return NULL;
        }
        return mk(r, json_integer((json_int_t)n));
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int w = 1 << (c - 0xd0);
        if (!rd_uint(r, w, &n))
            return NULL;
        int64_t v = w == 1 ? (int8_t)n : w == 2 ? (int16_t)n : w == 4 ? (int32_t)n : (int64_t)n;
        return mk(r, json_integer((json_int_t)v));
    }
    case 0xdc: case 0xdd:
        return rd_uint(r, c == 0xdc ? 2 : 4, &n) ? dec_array(r, n, depth) : NULL;
    case 0xde: case 0xdf:
        return rd_uint(r, c == 0xde ? 2 : 4, &n) ? dec_map(r, n, depth) : NULL;
    default: /* 0xc1: never used */
        r->err = ERR_PARSE;
        return NULL;
    }
}

json_t *codec_msgpack_to_json(const char *p, size_t len, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = 0;
    if (!p) {
        *err = ERR_PARSE;
        return NULL;
    }
    struct rd r = { (const uint8_t *)p, (const uint8_t *)p + len, ERR_PARSE };
    json_t *v = dec(&r, 0);
    if (v && r.p != r.end) { /* trailing bytes */
        json_decref(v);
        *err = ERR_PARSE;
        return NULL;
    }
    if (!v)
        *err = r.err ? r.err : ERR_PARSE;
    return v;
}

/* ------------------------------------------------------------------ */
/* JSON text                                                           */

static int depth_capped(const json_t *v, int cap)
{
    if (cap <= 0)
        return 0;
    int best = 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            int d = depth_capped(e, cap - 1);
            if (d > best)
                best = d;
            if (best >= cap - 1)
                break;
        }
        return best + 1;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e) {
            int d = depth_capped(e, cap - 1);
            if (d > best)
                best = d;
            if (best >= cap - 1)
                break;
        }
        return best + 1;
    }
    return 0;
}

int codec_depth(const json_t *v)
{
    return v ? depth_capped(v, DEPTH_SATURATE) : 0;
}

/* Locate the first bracket opening a level deeper than `max` in valid JSON
 * text; line/column counted the way jansson does (1-based line, column in
 * characters). */
static void locate_depth(const char *p, size_t len, int max, int *line, int *col)
{
    int depth = 0, in_str = 0, esc = 0;
    *line = 1;
    *col = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c & 0xC0) != 0x80)
            (*col)++;
        if (c == '\n') {
            (*line)++;
            *col = 0;
            continue;
        }
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
}

json_t *codec_parse_json(const char *p, size_t len, int *err, char *msg, size_t msglen)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = 0;
    if (msg && msglen)
        msg[0] = 0;
    /* A raw NUL byte is refused like jscan_check refuses it: jansson lets
     * one through right after a number ("[1\0,2]" parsed as [1,2]), so the
     * decide path (jscan) and every other route disagreed on such a body
     * (found by fuzz/fuzz_json.c). */
    const char *nul = p ? memchr(p, '\0', len) : NULL;
    if (nul) {
        int line = 1, col = 1;
        for (const char *q = p; q < nul; q++) {
            if (*q == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        *err = ERR_PARSE;
        if (msg && msglen)
            snprintf(msg, msglen, "line %d column %d: NUL byte in input", line, col);
        return NULL;
    }
    json_error_t je;
    /* No JSON_DISABLE_EOF_CHECK (trailing garbage refused), no JSON_ALLOW_NUL,
     * no JSON_REJECT_DUPLICATES (last wins). */
    json_t *v = json_loadb(p ? p : "", p ? len : 0, JSON_DECODE_ANY, &je);
    if (!v) {
        enum json_error_code code = json_error_code(&je);
        *err = code == json_error_stack_overflow ? ERR_TOOBIG
             : code == json_error_out_of_memory  ? ERR_NOMEM
                                                 : ERR_PARSE;
        if (msg && msglen)
            snprintf(msg, msglen, "line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (codec_depth(v) > CODEC_MAX_DEPTH) {
        int line, col;
        json_decref(v);
        locate_depth(p, len, CODEC_MAX_DEPTH, &line, &col);
        *err = ERR_TOOBIG;
        if (msg && msglen)
            snprintf(msg, msglen, "line %d column %d: nesting deeper than %d", line, col,
                     CODEC_MAX_DEPTH);
        return NULL;
    }
    return v;
}
