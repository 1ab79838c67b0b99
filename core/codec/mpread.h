/*
 * mpread.h — walking msgpack bytes in place, without decoding them.
 *
 * Stored profiles, p.stats and segment membership records are msgpack; the
 * segment and audience code reads a few keys of them (a top-level
 * attribute, a key inside `stats`) and splices maps together (a profile and
 * its stats into one map of attributes) many times per second.  These
 * helpers find the extent of a value, read a map's or a string's header,
 * and write the headers back, so that work costs no allocation and no
 * tree.  Pure functions on caller-owned bytes; any thread.
 *
 * Every reader checks bounds: a truncated or malformed value is ERR_PARSE,
 * never a read past `len`.
 */
#ifndef PROMOD_MPREAD_H
#define PROMOD_MPREAD_H
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"

/** Length in bytes of the one whole value (nested values included) at p.
 *  Iterative (no recursion): hostile nesting costs no stack.
 *  @return 0 with *n set, or ERR_PARSE (malformed or truncated). */
int mpread_skip(const char *p, size_t len, size_t *n);

/** A map header at p: *count pairs, the first key at p + *hdr.
 *  @return 0, or ERR_PARSE when p is not a map (or is truncated). */
int mpread_map(const char *p, size_t len, uint32_t *count, size_t *hdr);

/** A str (or bin) at p: its bytes *s (borrowed from p) and length *sl, the
 *  whole value taking *n bytes.  @return 0, or ERR_PARSE when p is neither. */
int mpread_str(const char *p, size_t len, const char **s, uint32_t *sl, size_t *n);

/** Is the value at p a str (not bin, ext or anything else)? */
int mpread_is_str(const char *p, size_t len);

/** A non-negative integer at p (positive fixint, uint8..64, or int8..64 or a
 *  float64 holding an integral non-negative value), in *v.
 *  @return 0, ERR_PARSE otherwise. */
int mpread_uint(const char *p, size_t len, uint64_t *v);

/** Find `key` in the map at p (the last pair with that str key wins, as
 *  the condition evaluator reads a repeated key).  @return 1 with the
 *  value's bytes in *v / *vl, 0 when absent, ERR_PARSE when p is not a
 *  well-formed map. */
int mpread_find(const char *p, size_t len, const char *key, size_t klen, const char **v,
                size_t *vl);

/** Append a map header for `count` pairs / a str header and bytes / an
 *  unsigned integer / a float64.  @return 0 or ERR_NOMEM. */
int mpread_put_map(struct buf *b, uint32_t count);
int mpread_put_str(struct buf *b, const char *s, size_t len);
int mpread_put_uint(struct buf *b, uint64_t v);
int mpread_put_int(struct buf *b, int64_t v);

#endif
