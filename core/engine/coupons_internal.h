/*
 * coupons_internal.h — what coupons.c and coupons_redeem.c share: key
 * building and the record writers.  Not for other modules.
 */
#ifndef PROMOD_COUPONS_INTERNAL_H
#define PROMOD_COUPONS_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include "store/store.h"

/* Deliberately not including engine/coupons.h (whose .c files include
 * this): the two would be a circle of modules. */
struct coupons_code;

/** tag byte, then a, b, c (NULL ends the list) joined by \0.  @return the
 *  length, or -1 when it does not fit in `cap`. */
int coupons_key(char *out, size_t cap, char tag, const char *a, const char *b, const char *c);
/** Write a code record (write txn). */
int coupons_code_put(struct store_txn *wt, const struct coupons_code *c);
/** Add `delta` to a campaign's stats record (write txn). */
int coupons_stats_add(struct store_txn *wt, const char *camp, const int64_t *delta);

#endif
