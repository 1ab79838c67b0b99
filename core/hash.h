/*
 * hash.h — the hashes promod buckets with.
 *
 * FNV-1a 32-bit (GrowthBook's choice, so buckets are reproducible in any
 * language).  hash_unit() maps (customer, campaign) to [0, 1) for variant
 * bucketing: fnv1a(customer "/" campaign) mod 10000 / 10000.  Pure functions,
 * any thread.
 */
#ifndef PROMOD_HASH_H
#define PROMOD_HASH_H
#include <stddef.h>
#include <stdint.h>

#define HASH_FNV_INIT 0x811C9DC5u

uint32_t hash_fnv1a(const void *data, size_t len, uint32_t h);
double hash_unit(const char *a, size_t alen, const char *b, size_t blen);

#endif
