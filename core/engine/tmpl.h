/*
 * tmpl.h — content templates: {{attr}}, {{a.b}}, {{attr|default}}.
 *
 * A template is plain text with placeholders.  A placeholder's path is looked
 * up through a callback (so templates render against a Lua profile table, a
 * JSON object, anything).  Substituted values — found or default — are
 * HTML-escaped when `html_escape` is set; the literal template text is the
 * author's own and is copied verbatim.  A missing value with no default
 * renders as the empty string.  Whitespace inside braces is ignored.
 * `{{` with no closing `}}` is copied literally by tmpl_render and reported
 * by tmpl_check.  Pure; any thread.
 *
 * Grammar: a placeholder runs from `{{` to the first `}}` after it.  The
 * first `|` splits path from default; both are trimmed.  When the text
 * after that `|` starts with a format filter — `number`, `number:N`,
 * `currency:EUR`, `percent`, `date`, `time`, `datetime` (styles `:short`
 * `:medium` `:long` `:full`) — the value is formatted for the render's
 * locale (base/i18n.h, ICU) and the default, if any, follows a second `|`:
 * {{price|currency:EUR|on request}}.  A value the filter cannot read (not
 * a number; for dates neither unix seconds nor ISO-8601) counts as missing.
 * A filter with a bad argument ("currency:EURO") is a tmpl_check error and
 * renders literally.  A path is one or
 * more non-empty segments of [A-Za-z0-9_-] joined by '.' ("a..b", ".a",
 * "first name" are invalid).  An invalid placeholder (empty, bad path) is
 * copied literally by tmpl_render and reported by tmpl_check, so "{{{x}}}"
 * renders as itself.  A value that is found but empty is a value: the
 * default is used only when the lookup reports "missing".
 */
#ifndef PROMOD_TMPL_H
#define PROMOD_TMPL_H
#include <stddef.h>
#include "base/buf.h"

/** Look up a dotted path (not NUL-terminated, `len` bytes).
 *  Append the value's text to `out` and return 1; return 0 when missing
 *  (nil, or a table/object); <0 on error (aborts the render). */
typedef int (*tmpl_lookup_fn)(void *ud, const char *path, size_t len, struct buf *out);

/** Render into `out` (appended).  @return 0, or the lookup's error / ERR_NOMEM;
 *  on error `out` is restored to its length before the call. */
int tmpl_render(const char *tpl, size_t len, int html_escape,
                tmpl_lookup_fn lookup, void *ud, struct buf *out);

/** A template parsed once, rendered many times (the decide path keeps one
 *  per template string of a variant's content).  tmpl_compile copies the
 *  text and never fails on syntax (invalid placeholders are literal text,
 *  as in tmpl_render); NULL only when out of memory.  tmpl_run renders it
 *  exactly as tmpl_render would the text, using `val` as scratch for looked
 *  up values; on error `out` is restored. */
struct tmpl_prog;
struct tmpl_prog *tmpl_compile(const char *tpl, size_t len);
int tmpl_run(const struct tmpl_prog *t, int html_escape, tmpl_lookup_fn lookup, void *ud,
             struct buf *val, struct buf *out);

/** How format filters write: the locale tag (NULL = "en") and, for dates,
 *  the zone (NULL = UTC).  Borrowed for the call. */
struct tmpl_fmt {
    const char *locale;
    const char *tz;
};
/** tmpl_run with format filters written for `fmt` (NULL: "en", UTC). */
int tmpl_run_fmt(const struct tmpl_prog *t, int html_escape, const struct tmpl_fmt *fmt,
                 tmpl_lookup_fn lookup, void *ud, struct buf *val, struct buf *out);
void tmpl_prog_free(struct tmpl_prog *t);
/** 1 when a placeholder of `t` has a format filter (it needs a locale). */
int tmpl_has_format(const struct tmpl_prog *t);

/** 1 when the text contains at least one placeholder (fast path: skip render). */
int tmpl_has_placeholders(const char *tpl, size_t len);

/** Validate syntax; on error fill `err` ("unclosed {{ at offset 12",
 *  "empty placeholder at offset 3") and return ERR_INVAL. */
int tmpl_check(const char *tpl, size_t len, char *err, size_t errlen);

/** A tmpl_lookup_fn over a Lua table: `ud` is a struct tmpl_lua_ctx.
 *  Numbers print as integers when integral ("%.14g" otherwise), booleans
 *  as true/false.  Leaves the Lua stack as it found it.
 *  Each segment is read with lua_gettable (so __index metamethods apply);
 *  a digits-only segment that finds nothing as a string key is retried as
 *  an integer key ("tags.1" → tags[1]).  Walking into a non-table, or ending
 *  on nil, a table, a function or userdata, is "missing".  The walk runs
 *  under lua_pcall: a raising metamethod returns ERR_LUA (ERR_NOMEM for a
 *  Lua memory error) instead of unwinding through the caller.  Needs a few
 *  free stack slots (checked; ERR_NOMEM when the stack cannot grow).
 *  `idx` may also be a relative (negative) index. */
struct lua_State;
struct tmpl_lua_ctx { struct lua_State *L; int idx; /**< absolute stack index of the table */ };
int tmpl_lua_lookup(void *ud, const char *path, size_t len, struct buf *out);

#endif
