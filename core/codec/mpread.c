/* mpread.c — msgpack headers and extents, read and written in place. */
#include "codec/mpread.h"
#include "base/err.h"
#include <string.h>

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The head of the value at p: how many bytes the head and any inline
 * payload take (*own), and how many child values follow (*kids: array
 * items, or 2 per map pair).  0 or ERR_PARSE. */
static int head(const unsigned char *p, size_t len, uint64_t *own, uint64_t *kids)
{
    if (!len)
        return ERR_PARSE;
    unsigned c = p[0];
    *kids = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
        *own = 1;
        return 0;
    }
    if ((c & 0xf0) == 0x80) { /* fixmap */
        *own = 1;
        *kids = 2u * (c & 0x0f);
        return 0;
    }
    if ((c & 0xf0) == 0x90) { /* fixarray */
        *own = 1;
        *kids = c & 0x0f;
        return 0;
    }
    if ((c & 0xe0) == 0xa0) { /* fixstr */
        *own = 1u + (c & 0x1f);
        return 0;
    }
    int lb = 0;      /* bytes of a length field */
    uint64_t fixed = 0;
    switch (c) {
    case 0xcc: case 0xd0: fixed = 2; break;
    case 0xcd: case 0xd1: fixed = 3; break;
    case 0xca: case 0xce: case 0xd2: fixed = 5; break;
    case 0xcb: case 0xcf: case 0xd3: fixed = 9; break;
    case 0xd4: fixed = 3; break;  /* fixext 1 */
    case 0xd5: fixed = 4; break;
    case 0xd6: fixed = 6; break;
    case 0xd7: fixed = 10; break;
    case 0xd8: fixed = 18; break;
    case 0xc4: case 0xd9: lb = 1; break; /* bin8, str8 */
    case 0xc5: case 0xda: lb = 2; break;
    case 0xc6: case 0xdb: lb = 4; break;
    case 0xc7: lb = 1; break;            /* ext8: length, then a type byte */
    case 0xc8: lb = 2; break;
    case 0xc9: lb = 4; break;
    case 0xdc: case 0xde: lb = 2; break; /* array16, map16 */
    case 0xdd: case 0xdf: lb = 4; break;
    default: return ERR_PARSE;           /* 0xc1 */
    }
    if (fixed) {
        *own = fixed;
        return 0;
    }
    if (len < 1u + (size_t)lb)
        return ERR_PARSE;
    uint64_t n = be(p + 1, lb);
    if (c == 0xdc || c == 0xdd) {
        *own = 1u + (uint64_t)lb;
        *kids = n;
    } else if (c == 0xde || c == 0xdf) {
        *own = 1u + (uint64_t)lb;
        *kids = 2 * n;
    } else {
        *own = 1u + (uint64_t)lb + (c >= 0xc7 && c <= 0xc9) + n;
    }
    return 0;
}

int mpread_skip(const char *p, size_t len, size_t *n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t at = 0;
    uint64_t pending = 1;
    while (pending) {
        uint64_t own, kids;
        if (at >= len || head(u + at, len - at, &own, &kids))
            return ERR_PARSE;
        if (own > len - at)
            return ERR_PARSE;
        at += own;
        pending--;
        /* every child takes at least a byte: more than are left is malformed */
        if (pending + kids > len - at)
            return ERR_PARSE;
        pending += kids;
    }
    *n = at;
    return 0;
}

int mpread_map(const char *p, size_t len, uint32_t *count, size_t *hdr)
{
    const unsigned char *u = (const unsigned char *)p;
    if (!len)
        return ERR_PARSE;
    if ((u[0] & 0xf0) == 0x80) {
        *count = u[0] & 0x0f;
        *hdr = 1;
    } else if (u[0] == 0xde && len >= 3) {
        *count = (uint32_t)be(u + 1, 2);
        *hdr = 3;
    } else if (u[0] == 0xdf && len >= 5) {
        *count = (uint32_t)be(u + 1, 4);
        *hdr = 5;
    } else {
        return ERR_PARSE;
    }
    return 0;
}

int mpread_str(const char *p, size_t len, const char **s, uint32_t *sl, size_t *n)
{
    const unsigned char *u = (const unsigned char *)p;
    if (!len)
        return ERR_PARSE;
    size_t h;
    uint64_t l;
    if ((u[0] & 0xe0) == 0xa0) {
        h = 1;
        l = u[0] & 0x1f;
    } else if ((u[0] == 0xd9 || u[0] == 0xc4) && len >= 2) {
        h = 2;
        l = u[1];
    } else if ((u[0] == 0xda || u[0] == 0xc5) && len >= 3) {
        h = 3;
        l = be(u + 1, 2);
    } else if ((u[0] == 0xdb || u[0] == 0xc6) && len >= 5) {
        h = 5;
        l = be(u + 1, 4);
    } else {
        return ERR_PARSE;
    }
    if (l > len - h)
        return ERR_PARSE;
    *s = p + h;
    *sl = (uint32_t)l;
    *n = h + (size_t)l;
    return 0;
}

int mpread_is_str(const char *p, size_t len)
{
    if (!len)
        return 0;
    unsigned c = (unsigned char)p[0];
    return (c & 0xe0) == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb;
}

int mpread_uint(const char *p, size_t len, uint64_t *v)
{
    const unsigned char *u = (const unsigned char *)p;
    if (!len)
        return ERR_PARSE;
    unsigned c = u[0];
    if (c <= 0x7f) {
        *v = c;
        return 0;
    }
    int n = c == 0xcc || c == 0xd0 ? 1 : c == 0xcd || c == 0xd1 ? 2 : c == 0xce || c == 0xd2 ? 4
          : c == 0xcf || c == 0xd3 || c == 0xcb ? 8 : 0;
    if (!n || len < 1u + (size_t)n)
        return ERR_PARSE;
    uint64_t x = be(u + 1, n);
    if (c == 0xcb) {
        double d;
        memcpy(&d, &x, 8);
        if (!(d >= 0 && d < 18446744073709551616.0) || d != (double)(uint64_t)d)
            return ERR_PARSE;
        *v = (uint64_t)d;
        return 0;
    }
    if (c >= 0xd0 && (x >> (8 * n - 1)) & 1)
        return ERR_PARSE; /* negative */
    *v = x;
    return 0;
}

int mpread_find(const char *p, size_t len, const char *key, size_t klen, const char **v,
                size_t *vl)
{
    uint32_t count;
    size_t at, n;
    if (mpread_map(p, len, &count, &at))
        return ERR_PARSE;
    int found = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *k;
        uint32_t kl;
        int is = mpread_is_str(p + at, len - at) && mpread_str(p + at, len - at, &k, &kl, &n) == 0;
        if (!is && mpread_skip(p + at, len - at, &n))
            return ERR_PARSE;
        at += n;
        if (mpread_skip(p + at, len - at, &n))
            return ERR_PARSE;
        if (is && kl == klen && !memcmp(k, key, klen)) {
            *v = p + at;
            *vl = n;
            found = 1;
        }
        at += n;
    }
    return found;
}

int mpread_put_map(struct buf *b, uint32_t count)
{
    unsigned char h[5];
    if (count < 16) {
        h[0] = (unsigned char)(0x80 | count);
        return buf_add(b, h, 1);
    }
    if (count < 65536) {
        h[0] = 0xde;
        h[1] = (unsigned char)(count >> 8);
        h[2] = (unsigned char)count;
        return buf_add(b, h, 3);
    }
    h[0] = 0xdf;
    for (int i = 0; i < 4; i++)
        h[1 + i] = (unsigned char)(count >> (24 - 8 * i));
    return buf_add(b, h, 5);
}

int mpread_put_str(struct buf *b, const char *s, size_t len)
{
    unsigned char h[5];
    size_t hl;
    if (len < 32) {
        h[0] = (unsigned char)(0xa0 | len);
        hl = 1;
    } else if (len < 256) {
        h[0] = 0xd9;
        h[1] = (unsigned char)len;
        hl = 2;
    } else if (len < 65536) {
        h[0] = 0xda;
        h[1] = (unsigned char)(len >> 8);
        h[2] = (unsigned char)len;
        hl = 3;
    } else {
        h[0] = 0xdb;
        for (int i = 0; i < 4; i++)
            h[1 + i] = (unsigned char)(len >> (24 - 8 * i));
        hl = 5;
    }
    if (buf_add(b, h, hl))
        return ERR_NOMEM;
    return buf_add(b, s, len);
}

int mpread_put_uint(struct buf *b, uint64_t v)
{
    unsigned char h[9];
    if (v < 128) {
        h[0] = (unsigned char)v;
        return buf_add(b, h, 1);
    }
    int n = v < 256 ? 1 : v < 65536 ? 2 : v < 4294967296ull ? 4 : 8;
    h[0] = n == 1 ? 0xcc : n == 2 ? 0xcd : n == 4 ? 0xce : 0xcf;
    for (int i = 0; i < n; i++)
        h[1 + i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    return buf_add(b, h, 1 + (size_t)n);
}

int mpread_put_int(struct buf *b, int64_t v)
{
    if (v >= 0)
        return mpread_put_uint(b, (uint64_t)v);
    unsigned char h[9];
    if (v >= -32) {
        h[0] = (unsigned char)(int8_t)v;
        return buf_add(b, h, 1);
    }
    h[0] = 0xd3;
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        h[1 + i] = (unsigned char)(u >> (56 - 8 * i));
    return buf_add(b, h, 9);
}
