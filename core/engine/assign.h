/*
 * assign.h — experiment assignment exactly as GrowthBook's SDKs do it.
 *
 * A web page running a GrowthBook SDK and promod must put a customer in
 * the same variation of an experiment, so this module reproduces the SDK's
 * arithmetic to the bit (packages/sdk-js/src/util.ts: hash,
 * getBucketRanges, chooseVariation, inNamespace, getEqualWeights); the
 * GrowthBook conformance file's sections of the same names pin it
 * (tests/unit/test_assign.c).  It is the arithmetic only: which attribute
 * is hashed, stickiness and exposure logging belong to the experiments
 * feature that uses it.  Named "assign" because it answers "which
 * variation is this customer assigned to"; base/hash.h keeps promod's own
 * bucketing (hash_bucket), which is not GrowthBook's v1/v2 input order.
 *
 * Strings: JavaScript hashes the UTF-16 code units of its strings
 * (charCodeAt), not UTF-8 bytes.  Every function here takes UTF-8 and
 * hashes the UTF-16 code units it encodes: ASCII text hashes byte for byte,
 * "é" (one unit, 0x00E9) hashes as one step, "😀" as two (its surrogate
 * pair).  A byte that is not valid UTF-8 is hashed as U+FFFD, which is
 * what a JavaScript page would get from decoding the same bytes.
 *
 * Pure functions, no allocation, any thread.
 */
#ifndef PROMOD_ASSIGN_H
#define PROMOD_ASSIGN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ASSIGN_FNV_INIT 0x811C9DC5u

/** FNV-1a 32-bit over the UTF-16 code units of UTF-8 text `s`, continuing
 *  from `h` (start with ASSIGN_FNV_INIT): h ^= unit; h *= 0x01000193. */
uint32_t assign_fnv(const char *s, size_t n, uint32_t h);

/** GrowthBook's hash(seed, value, version), in [0, 1).
 *  Version 1: (fnv(value + seed) mod 1000) / 1000 — the value first.
 *  Version 2: (fnv(decimal text of fnv(seed + value)) mod 10000) / 10000.
 *  @return 0 with *out set, or ERR_INVAL for any other version: the SDK's
 *  null, "not bucketed" (the customer takes no part in the experiment). */
int assign_hash(const char *seed, size_t seedlen, const char *value, size_t valuelen, int version,
                double *out);

/** getEqualWeights(n): writes n weights of 1/n to `out` (room for n).
 *  @return the number written (0 when n <= 0). */
int assign_equal_weights(int n, double *out);

/** getBucketRanges(n, coverage, weights): `ranges` (room for n) receives
 *  [start, start + coverage * w_i], start = the sum of the earlier
 *  weights, so lowering coverage never moves a customer to another
 *  variation.  `coverage` is clamped to [0, 1] (pass 1 when the experiment
 *  has none; a NaN stays NaN and no range then matches, as in the SDK).
 *  Equal weights replace `weights` when it is NULL, when `nweights` != n,
 *  or when the weights sum outside [0.99, 1.01].  n <= 0 writes nothing. */
void assign_bucket_ranges(int n, double coverage, const double *weights, int nweights,
                          double (*ranges)[2]);

/** chooseVariation(h, ranges): the first i with lo <= h < hi, or -1 (a
 *  zero-width range never matches). */
int assign_choose(double h, const double (*ranges)[2], int n);

/** inNamespace(hashValue, [id, lo, hi]): the v1 hash of the value with seed
 *  "__" + id falls in [lo, hi). */
bool assign_in_namespace(const char *value, size_t valuelen, const char *ns, size_t nslen, double lo,
                         double hi);

#endif
