/*
 * tmpl.c — {{placeholder}} rendering.
 *
 * One scanner (next_placeholder) is shared by render and check so the two
 * can never disagree: whatever tmpl_check reports as an error is exactly
 * what tmpl_render copies through literally.
 *
 * Grammar: a placeholder starts at "{{" and ends at the first "}}" after
 * it.  Inside, surrounding whitespace is ignored; the first '|' splits the
 * path from a default text (itself trimmed).  A path is one or more
 * non-empty segments of [A-Za-z0-9_-] joined by '.'.
 */
#include "engine/tmpl.h"
#include "base/err.h"
#include "base/i18n.h"
#include "base/tz.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ph_status { PH_NONE, PH_OK, PH_UNCLOSED, PH_EMPTY, PH_BADPATH, PH_BADFILTER };

struct ph {
    size_t start, end;          /* [start, end) covers "{{ ... }}" */
    const char *path;
    size_t plen;
    const char *def;            /* NULL when there is no default */
    size_t dlen;
    int fkind;                  /* enum i18n_kind of a format filter, or -1 */
    const char *farg;           /* its argument ("EUR", "medium"), NULL when none */
    size_t falen;
    char ferr[96];              /* PH_BADFILTER: why */
};

/* The format filters: {{price|currency:EUR}}, {{n|number:2}}, {{d|date:long}}. */
static const struct { const char *name; int kind; } filters[] = {
    { "number", I18N_NUMBER }, { "currency", I18N_CURRENCY }, { "percent", I18N_PERCENT },
    { "date", I18N_DATE },     { "time", I18N_TIME },         { "datetime", I18N_DATETIME },
};

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void trim(const char **s, size_t *n)
{
    while (*n && is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_space((*s)[*n - 1]))
        (*n)--;
}

static const char *find2(const char *p, size_t n, char c)
{
    for (size_t i = 0; i + 1 < n; i++) {
        const char *q = memchr(p + i, c, n - 1 - i);
        if (!q)
            return NULL;
        if (q[1] == c)
            return q;
        i = (size_t)(q - p);
    }
    return NULL;
}

static int path_valid(const char *p, size_t n)
{
    size_t seg = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '.') {
            if (!seg)
                return 0;
            seg = 0;
        } else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                   (c >= '0' && c <= '9') || c == '_' || c == '-') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0;
}

/* Find the next placeholder at or after `from`. */
static enum ph_status next_placeholder(const char *tpl, size_t len, size_t from, struct ph *ph)
{
    const char *open = find2(tpl + from, len - from, '{');
    if (!open)
        return PH_NONE;
    ph->start = (size_t)(open - tpl);
    const char *body = open + 2;
    const char *close = find2(body, len - (size_t)(body - tpl), '}');
    if (!close) {
        ph->end = len;
        return PH_UNCLOSED;
    }
    ph->end = (size_t)(close - tpl) + 2;
    size_t blen = (size_t)(close - body);
    const char *bar = memchr(body, '|', blen);
    ph->path = body;
    ph->plen = bar ? (size_t)(bar - body) : blen;
    ph->def = NULL;
    ph->dlen = 0;
    ph->fkind = -1;
    ph->farg = NULL;
    ph->falen = 0;
    enum ph_status st = PH_OK;
    /* after the path: a format filter if the first part names one, then
     * the default (everything after its '|', bars included) */
    const char *rest = bar ? bar + 1 : NULL;
    if (rest) {
        const char *bar2 = memchr(rest, '|', (size_t)(close - rest));
        const char *pe = bar2 ? bar2 : close, *ps = rest;
        size_t pn = (size_t)(pe - ps);
        trim(&ps, &pn);
        const char *colon = memchr(ps, ':', pn);
        size_t nn = colon ? (size_t)(colon - ps) : pn;
        for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++) {
            if (strlen(filters[f].name) != nn || memcmp(ps, filters[f].name, nn))
                continue;
            ph->fkind = filters[f].kind;
            if (colon) {
                ph->farg = colon + 1;
                ph->falen = (size_t)(ps + pn - ph->farg);
                trim(&ph->farg, &ph->falen);
            }
            char arg[32];
            snprintf(arg, sizeof arg, "%.*s", (int)(ph->falen < 31 ? ph->falen : 31),
                     ph->farg ? ph->farg : "");
            if (ph->falen > 16 ||
                !i18n_arg_ok((enum i18n_kind)ph->fkind, ph->farg ? arg : NULL, ph->ferr,
                             sizeof ph->ferr))
                st = PH_BADFILTER;
            rest = bar2 ? bar2 + 1 : NULL;
            break;
        }
    }
    if (rest) {
        ph->def = rest;
        ph->dlen = (size_t)(close - ph->def);
        trim(&ph->def, &ph->dlen);
    }
    trim(&ph->path, &ph->plen);
    if (ph->plen == 0)
        return PH_EMPTY;
    if (!path_valid(ph->path, ph->plen))
        return PH_BADPATH;
    return st;
}

int tmpl_has_placeholders(const char *tpl, size_t len)
{
    const char *open = find2(tpl, len, '{');
    return open && find2(open + 2, len - (size_t)(open + 2 - tpl), '}') != NULL;
}

static int emit(struct buf *out, const char *s, size_t n, int html)
{
    return html ? buf_add_html(out, s, n) : buf_add(out, s, n);
}

/* A parsed template: literal runs and placeholders, as offsets into its own
 * copy of the text.  Literal text includes any invalid placeholder, which
 * renders as itself. */
struct tmpl_piece {
    size_t off, len;   /* the literal text, or the placeholder's path */
    size_t doff, dlen; /* the default (when has_def) */
    unsigned char is_ph, has_def;
    signed char fkind; /* a format filter (enum i18n_kind), or -1 */
    char farg[17];     /* its argument, "" when none */
};

struct tmpl_prog {
    char *text;
    struct tmpl_piece *pieces;
    int n;
};

static int piece_add(struct tmpl_prog *t, int *cap, struct tmpl_piece pc)
{
    if (pc.is_ph == 0 && pc.len == 0)
        return 0;
    if (t->n > 0 && !pc.is_ph && !t->pieces[t->n - 1].is_ph) { /* join literal runs */
        t->pieces[t->n - 1].len += pc.len;
        return 0;
    }
    if (t->n == *cap) {
        int nc = *cap ? *cap * 2 : 4;
        struct tmpl_piece *np = realloc(t->pieces, sizeof *np * (size_t)nc);
        if (!np)
            return ERR_NOMEM;
        t->pieces = np;
        *cap = nc;
    }
    t->pieces[t->n++] = pc;
    return 0;
}

struct tmpl_prog *tmpl_compile(const char *tpl, size_t len)
{
    struct tmpl_prog *t = calloc(1, sizeof *t);
    if (!t || !(t->text = malloc(len + 1))) {
        free(t);
        return NULL;
    }
    memcpy(t->text, tpl, len);
    t->text[len] = '\0';
    size_t pos = 0;
    int cap = 0;
    struct ph ph;
    enum ph_status st;
    while ((st = next_placeholder(t->text, len, pos, &ph)) != PH_NONE) {
        size_t lit_end = st == PH_OK ? ph.start : ph.end;
        if (piece_add(t, &cap, (struct tmpl_piece){ .off = pos, .len = lit_end - pos, .fkind = -1 }))
            goto oom;
        pos = ph.end;
        if (st != PH_OK)
            continue;
        struct tmpl_piece pc = { .off = (size_t)(ph.path - t->text), .len = ph.plen, .is_ph = 1,
                                 .fkind = (signed char)ph.fkind };
        if (ph.farg)
            memcpy(pc.farg, ph.farg, ph.falen); /* at most 16 bytes: checked by the scan */
        if (ph.def) {
            pc.has_def = 1;
            pc.doff = (size_t)(ph.def - t->text);
            pc.dlen = ph.dlen;
        }
        if (piece_add(t, &cap, pc))
            goto oom;
    }
    if (piece_add(t, &cap, (struct tmpl_piece){ .off = pos, .len = len - pos, .fkind = -1 }) == 0)
        return t;
oom:
    tmpl_prog_free(t);
    return NULL;
}

int tmpl_has_format(const struct tmpl_prog *t)
{
    for (int i = 0; t && i < t->n; i++)
        if (t->pieces[i].is_ph && t->pieces[i].fkind >= 0)
            return 1;
    return 0;
}

void tmpl_prog_free(struct tmpl_prog *t)
{
    if (!t)
        return;
    free(t->pieces);
    free(t->text);
    free(t);
}

/* A looked-up value through a format filter, in place in `val`: 1 when
 * formatted, 0 when the value is not a number (nor, for dates, an ISO-8601
 * time) or cannot be formatted — then it counts as missing. */
static int apply_filter(const struct tmpl_piece *pc, const struct tmpl_fmt *fmt, struct buf *val)
{
    char tmp[64];
    size_t n = val->len < sizeof tmp - 1 ? val->len : sizeof tmp - 1;
    memcpy(tmp, val->p ? val->p : "", n);
    tmp[n] = 0;
    char *end;
    double v = strtod(tmp, &end);
    if (n == 0 || *end || val->len >= sizeof tmp - 1) {
        int64_t ts;
        if (pc->fkind < I18N_DATE || val->len >= sizeof tmp - 1 || tz_parse_iso8601(tmp, &ts))
            return 0;
        v = (double)ts;
    }
    buf_reset(val);
    return i18n_format((enum i18n_kind)pc->fkind, fmt ? fmt->locale : NULL,
                       pc->farg[0] ? pc->farg : NULL, v, fmt ? fmt->tz : NULL, val) == 0;
}

int tmpl_run(const struct tmpl_prog *t, int html_escape, tmpl_lookup_fn lookup, void *ud,
             struct buf *val, struct buf *out)
{
    return tmpl_run_fmt(t, html_escape, NULL, lookup, ud, val, out);
}

int tmpl_run_fmt(const struct tmpl_prog *t, int html_escape, const struct tmpl_fmt *fmt,
                 tmpl_lookup_fn lookup, void *ud, struct buf *val, struct buf *out)
{
    size_t orig = out->len;
    int rc = buf_add(out, "", 0); /* like any render: `out` holds a string after */
    for (int i = 0; i < t->n && !rc; i++) {
        const struct tmpl_piece *pc = &t->pieces[i];
        if (!pc->is_ph) {
            rc = buf_add(out, t->text + pc->off, pc->len);
            continue;
        }
        buf_reset(val);
        int found = lookup(ud, t->text + pc->off, pc->len, val);
        if (found > 0 && pc->fkind >= 0)
            found = apply_filter(pc, fmt, val);
        if (found < 0)
            rc = found;
        else if (found > 0)
            rc = emit(out, val->p ? val->p : "", val->len, html_escape);
        else if (pc->has_def)
            rc = emit(out, t->text + pc->doff, pc->dlen, html_escape);
    }
    if (rc) {
        out->len = orig;
        if (out->p)
            out->p[orig] = 0;
    }
    return rc;
}

int tmpl_render(const char *tpl, size_t len, int html_escape,
                tmpl_lookup_fn lookup, void *ud, struct buf *out)
{
    struct tmpl_prog *t = tmpl_compile(tpl, len);
    if (!t)
        return ERR_NOMEM;
    struct buf val = BUF_INIT;
    int rc = tmpl_run(t, html_escape, lookup, ud, &val, out);
    buf_free(&val);
    tmpl_prog_free(t);
    return rc;
}

int tmpl_check(const char *tpl, size_t len, char *err, size_t errlen)
{
    size_t pos = 0;
    struct ph ph;
    enum ph_status st;
    while ((st = next_placeholder(tpl, len, pos, &ph)) != PH_NONE) {
        switch (st) {
        case PH_UNCLOSED:
            if (err && errlen)
                snprintf(err, errlen, "unclosed {{ at offset %zu", ph.start);
            return ERR_INVAL;
        case PH_EMPTY:
            if (err && errlen)
                snprintf(err, errlen, "empty placeholder at offset %zu", ph.start);
            return ERR_INVAL;
        case PH_BADFILTER:
            if (err && errlen)
                snprintf(err, errlen, "%s (at offset %zu)", ph.ferr, ph.start);
            return ERR_INVAL;
        case PH_BADPATH:
            if (err && errlen) {
                int n = ph.plen > 40 ? 40 : (int)ph.plen;
                snprintf(err, errlen, "invalid path \"%.*s%s\" at offset %zu", n, ph.path,
                         ph.plen > 40 ? "..." : "", ph.start);
            }
            return ERR_INVAL;
        default:
            break;
        }
        pos = ph.end;
    }
    if (err && errlen)
        err[0] = 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Lua lookup                                                          */

/* The walk runs inside lua_pcall: __index metamethods may raise (or hit
 * the instruction budget), and string interning may fail for memory; none
 * of that may longjmp over the renderer's buffers. */
struct walk {
    const char *path;
    size_t len;
    struct buf *out;
    int rc;
};

static int segment_index(const char *s, size_t n)
{
    if (n == 0 || n > 9 || s[0] == '0')
        return 0;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The value on top of the stack as template text: 1 (written), 0 (nothing
 * printable: nil, tables, functions, userdata), ERR_NOMEM. */
static int put_value(lua_State *L, struct buf *out)
{
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        return buf_add(out, s, n) ? ERR_NOMEM : 1;
    }
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, -1);
        int r;
        if (d == floor(d) && fabs(d) < 9.2e18)
            r = buf_printf(out, "%lld", (long long)d);
        else
            r = buf_printf(out, "%.14g", d);
        return r ? ERR_NOMEM : 1;
    }
    case LUA_TBOOLEAN: return buf_adds(out, lua_toboolean(L, -1) ? "true" : "false") ? ERR_NOMEM : 1;
    default: return 0;
    }
}

static int l_walk(lua_State *L)
{
    struct walk *w = lua_touserdata(L, 2);
    lua_settop(L, 1);
    const char *p = w->path, *end = w->path + w->len;
    while (p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        if (!lua_istable(L, -1)) {
            w->rc = 0;
            return 0;
        }
        lua_pushlstring(L, p, n);
        lua_gettable(L, -2);
        int idx;
        if (lua_isnil(L, -1) && (idx = segment_index(p, n)) > 0) {
            lua_pop(L, 1); /* "items.1" also reaches the array slot 1 */
            lua_pushinteger(L, idx);
            lua_gettable(L, -2);
        }
        lua_remove(L, -2);
        p += n + (dot != NULL);
    }
    w->rc = put_value(L, w->out);
    return 0;
}

/* Registry key for the cached l_walk closure (its address is unique). */
static const char walk_key = 0;

int tmpl_lua_lookup(void *ud, const char *path, size_t len, struct buf *out)
{
    struct tmpl_lua_ctx *ctx = ud;
    lua_State *L = ctx->L;
    int top = lua_gettop(L);
    int idx = ctx->idx;
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    if (!lua_checkstack(L, 6))
        return ERR_NOMEM;
    /* Plain tables all the way down (the usual profile): raw reads give what
     * indexing would and nothing can raise, so no protected call is needed.
     * A metatable anywhere on the path takes the protected walk below, which
     * honours __index. */
    lua_pushvalue(L, idx);
    const char *p = path, *end = path + len;
    int plain = 1;
    while (p < end && lua_istable(L, -1)) {
        if (lua_getmetatable(L, -1)) {
            plain = 0;
            break;
        }
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        lua_pushlstring(L, p, n);
        lua_rawget(L, -2);
        int ix;
        if (lua_isnil(L, -1) && (ix = segment_index(p, n)) > 0) {
            lua_pop(L, 1); /* "items.1" also reaches the array slot 1 */
            lua_rawgeti(L, -1, ix);
        }
        lua_remove(L, -2);
        p += n + (dot != NULL);
    }
    if (plain) {
        int rc = p < end ? 0 : put_value(L, out); /* stopped at a non-table: nothing */
        lua_settop(L, top);
        return rc;
    }
    lua_settop(L, top);
    struct walk w = { path, len, out, 0 };
    lua_pushlightuserdata(L, (void *)&walk_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushcfunction(L, l_walk);
        lua_pushlightuserdata(L, (void *)&walk_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, &w);
    int st = lua_pcall(L, 2, 0, 0);
    lua_settop(L, top);
    if (st)
        return st == LUA_ERRMEM ? ERR_NOMEM : ERR_LUA;
    return w.rc;
}
