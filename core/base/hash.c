/* hash.c — FNV-1a and unit-interval bucketing. */
#include "base/hash.h"
#include <stdio.h>

uint32_t hash_fnv1a(const void *data, size_t len, uint32_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

double hash_unit(const char *a, size_t alen, const char *b, size_t blen)
{
    uint32_t h = hash_fnv1a(a, alen, HASH_FNV_INIT);
    h = hash_fnv1a("/", 1, h);
    h = hash_fnv1a(b, blen, h);
    return (double)(h % 10000u) / 10000.0;
}

double hash_bucket(const char *a, size_t alen, const char *b, size_t blen)
{
    uint32_t h = hash_fnv1a(a, alen, HASH_FNV_INIT);
    h = hash_fnv1a("/", 1, h);
    h = hash_fnv1a(b, blen, h);
    char dec[16], *d = dec + sizeof dec; /* h in decimal, as promo.hash does it */
    do {
        *--d = (char)('0' + h % 10);
        h /= 10;
    } while (h);
    size_t n = (size_t)(dec + sizeof dec - d);
    return (double)(hash_fnv1a(d, n, HASH_FNV_INIT) % 10000u) / 10000.0;
}
