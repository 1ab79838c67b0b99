/*
 * codec.h — JSON (jansson) and msgpack (msgpack-c) conversions.
 *
 * jansson's json_t is the in-memory value tree; msgpack is the stored form
 * (LMDB values) and an accepted wire form.  Every decoder enforces a depth
 * limit (CODEC_MAX_DEPTH) and fails cleanly on truncated or malformed
 * input.  Integers stay integers, reals stay reals, key order is kept.
 * Pure functions, any thread.
 */
#ifndef PROMOD_CODEC_H
#define PROMOD_CODEC_H
#include <stddef.h>
#include <jansson.h>
#include "base/buf.h"

#define CODEC_MAX_DEPTH 64

/** Append the msgpack encoding of `v` to `out`.  Smallest int format,
 *  reals always float64, strings as str, keys in the object's order.
 *  @return 0, ERR_TOOBIG (deeper than CODEC_MAX_DEPTH), ERR_INVAL
 *  (NaN/inf real, NULL v), ERR_NOMEM; on error `out` is left as it was. */
int codec_json_to_msgpack(const json_t *v, struct buf *out);

/** Decode exactly one msgpack value occupying all `len` bytes.
 *  Maps need string keys (others are stringified); bin/ext become strings
 *  (invalid UTF-8 is rejected).  @return new reference, or NULL with *err
 *  = ERR_PARSE (malformed, truncated, trailing bytes), ERR_TOOBIG.
 *  Details: integer/nil/bool/float keys become "12", "null", "true",
 *  "1.5" ("%.17g"); array/map keys are ERR_PARSE.  Duplicate keys: last
 *  wins, at the first one's position.  Strings (and keys, bin, ext payloads)
 *  containing a NUL byte are ERR_PARSE, as in codec_parse_json.  uint64
 *  above INT64_MAX and NaN/±inf floats are ERR_PARSE (JSON cannot hold
 *  them).  float32 widens to a real.  The ext type byte is dropped.
 *  Declared lengths are checked against the remaining input before any
 *  allocation.  ERR_NOMEM on allocation failure.  `err` may be NULL. */
json_t *codec_msgpack_to_json(const char *p, size_t len, int *err);

/** Parse JSON text (exactly one value, no trailing garbage, NUL bytes
 *  refused, depth limited, duplicate keys: last wins).  On failure *err is
 *  ERR_PARSE or ERR_TOOBIG and `msg` gets "line 1 column 9: ..." text.
 *  Any value may be at the top level (scalars too).  Integers beyond int64
 *  and reals beyond double are ERR_PARSE.  Too deep: "line L column C:
 *  nesting deeper than 64" pointing at the first bracket past the limit.
 *  `err` and `msg` may be NULL.  ERR_NOMEM on allocation failure.
 *  @return new reference or NULL. */
json_t *codec_parse_json(const char *p, size_t len, int *err, char *msg, size_t msglen);

/** Depth of a value (scalars 0, [] 1, [[1]] 2).  Saturates at 4096 (so a
 *  hand-built cyclic or absurdly deep tree cannot exhaust the stack); NULL
 *  gives 0. */
int codec_depth(const json_t *v);

#endif
