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
#include "base/i18n.h"

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
    /** How format filters ({{price|currency:EUR}}) write: the locale tag
     *  and the zone of dates, set by the caller for one render; NULL =
     *  "en" and UTC (tmpl.h). */
    const char *locale;
    const char *tz;
};

/** Append the rendered content to `out`; templates look their paths up in
 *  the table at stack index `p_idx` (tmpl_lua_lookup).  0, or the compile
 *  error, a lookup error (ERR_LUA), ERR_NOMEM, ERR_INVAL (a substituted
 *  value that is not UTF-8).  On error `out` is restored. */
int content_render(const struct content_prog *p, struct lua_State *L, int p_idx,
                   struct content_scratch *cs, struct buf *out);

/** 1 when a template of the content uses {{coupon}}. */
int content_uses_coupon(const struct content_prog *p);
/** 1 when a template of the content has a format filter ({{p|currency:EUR}}). */
int content_uses_format(const struct content_prog *p);

void content_free(struct content_prog *p);

/* --- localized content ---------------------------------------------------
 * A campaign that declares `locales = { "en", "fr", "fr-CA" }` (the first
 * the default) may give any value of a variant's content per locale: a
 * table whose keys are all declared locales (any case) is such a value,
 * whether it holds the whole content (content = { en = {...}, fr = {...} })
 * or one field (headline = { en = "Hi", fr = "Salut" }).  A worker compiles
 * one program per variant and declared locale, each with every localized
 * value resolved along the locale's chain. */

/** 1 when the value at `idx` is a localized table: non-empty, every key a
 *  string naming one of the `n` locales (ASCII case-insensitive). */
int content_is_localized(struct lua_State *L, int idx, char *const *locales, int n);

/** Push a copy of the value at `idx` with every localized table replaced
 *  by its entry for locale `li`: the first of locales[li], its declared
 *  parents ("fr-CA" → "fr") and locales[0] that the table has (a table
 *  with none of them gives nil).  Values that are not localized are pushed
 *  as they are (tables copied only where something below them changes is
 *  not worth it: content is compiled once per load).  Depth-limited like
 *  content_compile; needs a few stack slots per level. */
void content_push_localized(struct lua_State *L, int idx, char *const *locales, int n, int li);

/* The locale a request asks for (context.locale, else p.locale, else the
 * Accept-Language header), looked up once per decide, on the first offer
 * that needs it (a localized campaign, or a template with a format filter). */
struct content_locale {
    int looked;
    char tags[8][I18N_TAG_MAX];
    int ntags;
    const char *from;      /* "context", "profile", "accept-language", or NULL */
    char tz[64];           /* p.tz, for dates; "" = UTC */
};

/** Fill `lr` once per decide (no-op once `looked`): the tags the request
 *  asks for — context.locale (table at `ctx_idx`), else p.locale (`p_idx`),
 *  else the `accept` header by preference — and p.tz.  Stack-neutral; the
 *  tables are read as they are (pass the originals, not read-only views). */
void content_locale_lookup(struct lua_State *L, int p_idx, int ctx_idx, const char *accept,
                           struct content_locale *lr);
/** Index of the campaign locale (of `locales[0..nlocales-1]`) that serves
 *  `lr`, 0 (the default) when none matches; the tag format filters write in
 *  goes to `fmt` (I18N_TAG_MAX bytes) and where it came from to `*from`. */
int content_locale_pick(char *const *locales, int nlocales, const struct content_locale *lr,
                        char *fmt, const char **from);

#endif
