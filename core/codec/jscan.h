/*
 * jscan.h — read a JSON request body in place, without building a tree.
 *
 * POST /api/v1/decide runs on every page view and its body is a handful of
 * fields; parsing it into a jansson tree (a malloc per node, a hash table
 * per object) cost more than a tenth of the request.  jscan validates the
 * text once with the same rules as codec_parse_json — exactly one value,
 * RFC 8259 grammar, UTF-8 only, no NUL (raw or \u0000), lone surrogates
 * refused, integers within int64, reals finite, nesting at most
 * CODEC_MAX_DEPTH — and then reads members, strings and numbers straight
 * from the validated text.  A context object goes into Lua directly
 * (jscan_push_lua), with luavm_push_json's conventions: numbers as Lua
 * numbers, null members and elements left out, duplicate keys: last wins.
 *
 * Only jscan_check accepts untrusted text; every other call expects a
 * value span that jscan_check (or jscan_next) produced.  Pure functions.
 */
#ifndef PROMOD_JSCAN_H
#define PROMOD_JSCAN_H
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"

struct lua_State;

/** Validate p[0..len).  0, or ERR_PARSE / ERR_TOOBIG with "line L column
 *  C: problem" in msg (may be NULL). */
int jscan_check(const char *p, size_t len, char *msg, size_t msglen);

/** The span of a validated value without surrounding whitespace. */
struct jscan_val {
    const char *p;
    size_t len;
};

/** Cursor over the members of a validated object. */
struct jscan_obj {
    const char *cur, *end;
};

/** Start reading the object `v`; 0, or ERR_INVAL when v is not an object. */
int jscan_object(struct jscan_obj *o, struct jscan_val v);
/** Next member: its key decoded into `key` (reset first), its value span.
 *  1 while there are members, 0 at the end. */
int jscan_next(struct jscan_obj *o, struct buf *key, struct jscan_val *val);

/** First character classes: '{' object, '[' array, '"' string, 't' true,
 *  'f' false, 'n' null, '0' number. */
char jscan_type(struct jscan_val v);
/** Decode a string value into `out` (reset first).  0 or ERR_NOMEM. */
int jscan_string(struct jscan_val v, struct buf *out);
/** An integer literal (no fraction or exponent) into *out: 0, or ERR_INVAL. */
int jscan_int(struct jscan_val v, int64_t *out);
/** Push the value as Lua (see above).  0, ERR_TOOBIG (no stack) or ERR_NOMEM. */
int jscan_push_lua(struct lua_State *L, struct jscan_val v);

/** The whole text as one value span (after jscan_check). */
struct jscan_val jscan_whole(const char *p, size_t len);

#endif
