/*
 * content.h — a variant's content, compiled once, rendered per offer.
 *
 * A variant's `content` is a Lua value (usually a table of strings) whose
 * strings may hold templates ({{first_name|you}}, see tmpl.h).  Walking
 * that table on every offer — lua_next over the keys, a scan of every
 * string for placeholders, the JSON or msgpack framing — cost more than
 * the substitutions themselves.  content_compile walks it once and keeps
 * the output as bytes already in the wire form, with a slot wherever a
 * template string goes; content_render copies the bytes and renders only
 * the slots against the customer's profile.
 *
 * Rules, the same as rendering the table directly: keys must be strings
 * (arrays are written as arrays), nesting at most 16 deep, text UTF-8;
 * template values are HTML-escaped except under keys ending in "_raw"
 * (and everything below such a key); numbers, booleans and other scalars
 * are written as JSON values.  Content is read when it is compiled: the
 * decide path compiles a variant on its first offer after a (re)load, so
 * a hook that changes a campaign's table at run time does not change what
 * is served (variant weights behave the same way).
 */
#ifndef PROMOD_CONTENT_H
#define PROMOD_CONTENT_H
#include <stddef.h>
#include "base/buf.h"

struct lua_State;
struct content_prog;

/** Compile the value at stack index `idx` for JSON (msgpack = 0) or
 *  msgpack.  Stack-neutral.  Returns NULL only when out of memory; a value
 *  that cannot be rendered compiles to a program whose render returns the
 *  error (ERR_TOOBIG for nesting, ERR_INVAL for a non-string key or bad
 *  text). */
struct content_prog *content_compile(struct lua_State *L, int idx, int msgpack);

/** Scratch for content_render, kept by the caller between calls. */
struct content_scratch {
    struct buf text; /* one rendered template string */
    struct buf val;  /* one looked-up value */
    /** The value of {{coupon}}: the customer's code in this campaign, set
     *  by the caller for one render (decide assigns it in its reservation
     *  transaction); NULL = not known, so the placeholder's default (or
     *  "") is rendered.  The name `coupon` is reserved: a profile
     *  attribute of that name is not reachable from templates. */
    const char *coupon;
};

/** Append the rendered content to `out`; templates look their paths up in
 *  the table at stack index `p_idx` (tmpl_lua_lookup).  0, or the compile
 *  error, a lookup error (ERR_LUA), ERR_NOMEM, ERR_INVAL (a substituted
 *  value that is not UTF-8).  On error `out` is restored. */
int content_render(const struct content_prog *p, struct lua_State *L, int p_idx,
                   struct content_scratch *cs, struct buf *out);

/** 1 when a template of the content uses {{coupon}}. */
int content_uses_coupon(const struct content_prog *p);

void content_free(struct content_prog *p);

#endif
