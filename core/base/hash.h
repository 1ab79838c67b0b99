/*
 * hash.h — the hashes promod buckets with.
 *
 * FNV-1a 32-bit (GrowthBook's choice, so buckets are reproducible in any
 * language).  hash_unit() maps (a, b) to [0, 1): fnv1a(a "/" b) mod 10000 /
 * 10000 (promo.bucket).  hash_bucket() adds GrowthBook v2's second round and
 * is what the default content hook buckets variants with.  Pure functions,
 * any thread.
 */
#ifndef PROMOD_HASH_H
#define PROMOD_HASH_H
#include <stddef.h>
#include <stdint.h>

#define HASH_FNV_INIT 0x811C9DC5u

uint32_t hash_fnv1a(const void *data, size_t len, uint32_t h);
double hash_unit(const char *a, size_t alen, const char *b, size_t blen);

/** Variant bucketing for the default content hook, in [0, 1) with 4
 *  decimals: GrowthBook's v2 construction, fnv1a(decimal text of
 *  fnv1a(a "/" b)) mod 10000 / 10000 (e.g. a = customer id, b = campaign
 *  id; "alice"/"home-banner" → 0.6354).  The second round decorrelates
 *  campaigns whose ids differ only at the end ("exp-1", "exp-2"): with one
 *  round (hash_unit) two 1:3 splits put 0.6% of customers in both first
 *  variants instead of 6.25%.  Pure; any thread. */
double hash_bucket(const char *a, size_t alen, const char *b, size_t blen);

#endif
