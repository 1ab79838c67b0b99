/*
 * assign.c — GrowthBook's hashing and bucketing (see assign.h).
 *
 * The floating-point steps are written in the SDK's order (the weight sum
 * accumulates left to right from 0, a range end is start + coverage * w)
 * so that results are identical to the last bit, not merely close.
 */
#include "engine/assign.h"

#include <stdbool.h>

#include "base/err.h"

static uint32_t step(uint32_t h, uint32_t unit)
{
    h ^= unit;
    return h * 0x01000193u;
}

uint32_t assign_fnv(const char *str, size_t n, uint32_t h)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            h = step(h, c);
            i++;
            continue;
        }
        /* decode one sequence as the WHATWG decoder (TextDecoder) does: a
         * malformed one becomes one U+FFFD for its lead byte and the valid
         * continuation bytes after it; the offending byte starts anew */
        uint32_t cp;
        size_t need = 0, used = 1;
        unsigned lower = 0x80, upper = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
            lower = c == 0xe0 ? 0xa0 : 0x80;
            upper = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
            lower = c == 0xf0 ? 0x90 : 0x80;
            upper = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            cp = 0xfffd;
        }
        for (size_t k = 0; k < need; k++) {
            if (i + used >= n || s[i + used] < lower || s[i + used] > upper) {
                cp = 0xfffd;
                break;
            }
            cp = cp << 6 | (s[i + used] & 0x3f);
            used++;
            lower = 0x80;
            upper = 0xbf;
        }
        if (cp >= 0x10000) { /* a surrogate pair: two code units */
            h = step(h, 0xd800 + ((cp - 0x10000) >> 10));
            h = step(h, 0xdc00 + ((cp - 0x10000) & 0x3ff));
        } else {
            h = step(h, cp);
        }
        i += used;
    }
    return h;
}

int assign_hash(const char *seed, size_t seedlen, const char *value, size_t valuelen, int version,
                double *out)
{
    if (version == 1) {
        uint32_t h = assign_fnv(seed, seedlen, assign_fnv(value, valuelen, ASSIGN_FNV_INIT));
        *out = (double)(h % 1000u) / 1000.0;
        return 0;
    }
    if (version == 2) {
        uint32_t h = assign_fnv(value, valuelen, assign_fnv(seed, seedlen, ASSIGN_FNV_INIT));
        char dec[16], *d = dec + sizeof dec;
        do {
            *--d = (char)('0' + h % 10);
            h /= 10;
        } while (h);
        h = assign_fnv(d, (size_t)(dec + sizeof dec - d), ASSIGN_FNV_INIT);
        *out = (double)(h % 10000u) / 10000.0;
        return 0;
    }
    return ERR_INVAL;
}

int assign_equal_weights(int n, double *out)
{
    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++)
        out[i] = 1.0 / n;
    return n;
}

void assign_bucket_ranges(int n, double coverage, const double *weights, int nweights,
                          double (*ranges)[2])
{
    if (n <= 0)
        return;
    if (coverage < 0)
        coverage = 0;
    else if (coverage > 1)
        coverage = 1;
    bool equal = !weights || nweights != n;
    if (!equal) {
        double total = 0;
        for (int i = 0; i < n; i++)
            total = weights[i] + total; /* the SDK's reduce((w, sum) => sum + w, 0) */
        equal = total < 0.99 || total > 1.01;
    }
    double cumulative = 0;
    for (int i = 0; i < n; i++) {
        double w = equal ? 1.0 / n : weights[i];
        double start = cumulative;
        cumulative += w;
        ranges[i][0] = start;
        ranges[i][1] = start + coverage * w;
    }
}

int assign_choose(double h, const double (*ranges)[2], int n)
{
    for (int i = 0; i < n; i++)
        if (h >= ranges[i][0] && h < ranges[i][1])
            return i;
    return -1;
}

bool assign_in_namespace(const char *value, size_t valuelen, const char *ns, size_t nslen, double lo,
                         double hi)
{
    /* hash("__" + id, value, 1) = fnv(value + "__" + id) */
    uint32_t h = assign_fnv(value, valuelen, ASSIGN_FNV_INIT);
    h = assign_fnv("__", 2, h);
    h = assign_fnv(ns, nslen, h);
    double n = (double)(h % 1000u) / 1000.0;
    return n >= lo && n < hi;
}
