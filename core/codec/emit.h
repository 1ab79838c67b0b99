/*
 * emit.h — write JSON text or msgpack straight into a buffer.
 *
 * The decide reply is built on every page view; building a jansson tree
 * only to serialise and free it again costs a malloc per node plus a
 * printf per number.  An emitter writes the bytes directly, in either wire
 * form, through one set of calls:
 *
 *     struct emit em;
 *     emit_init(&em, &buf, msgpack);
 *     emit_map(&em, 2);
 *     emit_key(&em, "a", 1); emit_int(&em, 1);
 *     emit_key(&em, "b", 1); emit_str(&em, "x", 1);
 *     emit_end(&em);
 *
 * Containers take their element count up front (msgpack needs it; JSON
 * ignores it) and must be closed with emit_end.  Strings and keys must be
 * valid UTF-8 without NUL bytes (the same rule codec_parse_json applies to
 * input); anything else sets the emitter's error, as does nesting deeper
 * than EMIT_MAX_DEPTH or running out of memory.  After an error the
 * buffer's contents are unspecified: check emit_error() before using them.
 * Reals print in the shortest of 15, 16 or 17 significant digits that reads
 * back to the same double ("87.39978", not "87.399779999999993"), always
 * with a '.' or exponent so they stay reals.  Not thread-safe; one emitter per buffer.
 */
#ifndef PROMOD_EMIT_H
#define PROMOD_EMIT_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"

#define EMIT_MAX_DEPTH 64

struct emit {
    struct buf *b;
    int mp;                                 /**< 1 = msgpack, 0 = JSON text */
    int depth;
    int err;                                /**< first error (ERR_*), 0 = none */
    unsigned char first[EMIT_MAX_DEPTH + 1]; /**< JSON: next element needs no comma */
    unsigned char is_map[EMIT_MAX_DEPTH + 1]; /**< JSON: '}' or ']' closes the level */
    unsigned char after_key;                /**< JSON: a key was just written */
};

void emit_init(struct emit *e, struct buf *b, int msgpack);
void emit_map(struct emit *e, size_t n);
void emit_array(struct emit *e, size_t n);
/** Close the innermost map or array. */
void emit_end(struct emit *e);
void emit_key(struct emit *e, const char *k, size_t n);
void emit_str(struct emit *e, const char *s, size_t n);
void emit_int(struct emit *e, int64_t v);
/** A real; NaN and infinities are an error (ERR_INVAL). */
void emit_real(struct emit *e, double v);
void emit_bool(struct emit *e, int v);
void emit_null(struct emit *e);
/** A jansson value (the explain report), written with the calls above so
 *  its numbers print like the rest of the reply. */
void emit_json(struct emit *e, const json_t *v);
/** A value already encoded in this emitter's form (e.g. rendered content). */
void emit_raw(struct emit *e, const char *p, size_t n);
/** 0 or the first error. */
int emit_error(const struct emit *e);

/** Length of the UTF-8 sequence at p (lead byte >= 0x80), 0 when it is
 *  invalid (overlong, surrogate, beyond U+10FFFF, truncated before end). */
size_t emit_utf8_seq(const unsigned char *p, const unsigned char *end);
/** 1 when s[0..n) is valid UTF-8 (no overlongs, no surrogates) without NULs. */
int emit_utf8_ok(const char *s, size_t n);

/** The shortest of the 15-, 16- and 17-significant-digit texts of `v` (in
 *  "%g" style, correctly rounded) that strtod reads back exactly, with ".0"
 *  added when it would otherwise read as an integer.  Usually computed
 *  without printf (see emit.c).  `v` must be finite.  Writes at most 32
 *  bytes including the NUL; returns the length. */
int emit_fmt_real(char *out, double v);

#endif
