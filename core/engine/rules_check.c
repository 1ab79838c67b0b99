/*
 * rules_check.c — validating one campaign or plugin file, and `promod
 * check` (see rules.h).
 *
 * Validation runs the file in a throwaway sandbox and reads the table it
 * returns, so what it accepts is what a worker will load.  Every problem
 * becomes "path:line: message"; the line comes from rules_lines.c, since
 * the returned table carries no positions.  The reloader (rules.c), the
 * campaign API and the CLI all validate through rules_validate_in(), so a
 * file that passes `promod check` also loads in the server.
 */
#include "engine/rules.h"
#include "engine/rules_internal.h"
#include "engine/content.h"
#include "engine/cond.h"
#include "engine/segments.h"
#include "base/id.h"
#include "base/app.h"
#include "base/err.h"
#include "lua/luavm.h"
#include "engine/tmpl.h"
#include "base/tz.h"
#include <errno.h>
#include <lua.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>


void rules_verr(struct vctx *v, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = key ? rules_lines_find(&v->lines, key) : 0;
    char full[768];
    snprintf(full, sizeof full, "%s:%d: %s", v->path, line ? line : 1, msg);
    json_array_append_new(v->errors, json_string(full));
    v->nerr++;
}

/* A field path with an index: rules_pathf(b, "variants[%d].weight", 2). */
const char *rules_pathf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return buf;
}

/* caps = { { 3, "7d" }, { 1, "1d" } }: table at the top of the stack */
static void parse_caps(lua_State *L, struct vctx *v, const char *what, struct rules_caps *out)
{
    char pb[96];
    out->n = 0;
    if (!lua_istable(L, -1)) {
        rules_verr(v, what, "%s: expected a list like { { 3, \"7d\" } }", what);
        return;
    }
    int n = (int)lua_objlen(L, -1);
    if (n > RULES_MAX_WINDOWS) {
        rules_verr(v, what, "%s: at most %d windows", what, RULES_MAX_WINDOWS);
        return;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1)) { /* lua_rawgeti on a non-table crashed (fuzz/fuzz_rules.c) */
            rules_verr(v, rules_pathf(pb, sizeof pb, "%s[%d]", what, i),
                 "%s[%d]: expected { count, \"window\" }", what, i);
            lua_pop(L, 1);
            continue;
        }
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        double lim = lua_tonumber(L, -2);
        const char *win = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        struct rules_cap *c = &out->w[out->n];
        /* the range before the cast: (long) of NaN or 1e22 is undefined */
        if (lua_type(L, -2) != LUA_TNUMBER || !(lim >= 0 && lim <= 1e12) || lim != (double)(long)lim) {
            rules_verr(v, rules_pathf(pb, sizeof pb, "%s[%d]", what, i),
                 "%s[%d]: the count must be a whole number >= 0", what, i);
        } else if (!win) {
            rules_verr(v, rules_pathf(pb, sizeof pb, "%s[%d]", what, i),
                 "%s[%d]: the window must be a string like \"7d\" or \"life\"", what, i);
        } else if (!strcmp(win, "life") || !strcmp(win, "lifetime")) {
            c->limit = (long)lim;
            c->secs = 0;
            c->unit = 'L';
            c->n = 0;
            snprintf(c->label, sizeof c->label, "%s", win);
            out->n++;
        } else {
            int64_t secs;
            size_t wl = strlen(win);
            char u = wl ? win[wl - 1] : 0;
            if (tz_parse_duration(win, &secs) || (u != 'h' && u != 'd' && u != 'w') ||
                secs > 366LL * 86400) {
                rules_verr(v, rules_pathf(pb, sizeof pb, "%s[%d]", what, i),
                     "%s[%d]: window \"%s\" is not N[hdw] (1h .. 366d) or \"life\"",
                     what, i, win);
            } else {
                c->limit = (long)lim;
                c->secs = secs;
                c->unit = u;
                c->n = (int)(secs / (u == 'h' ? 3600 : 86400));
                snprintf(c->label, sizeof c->label, "%s", win);
                out->n++;
            }
        }
        lua_pop(L, 3);
    }
}

/* The fields a file's table may have besides its owner's hooks (hooks.h). */
static const char *camp_fields[] = { "id", "name", "channels", "placements", "priority", "schedule",
                                     "caps", "variants", "status", "trigger", "cost", "description",
                                     "owner", "tags", "audience", "budget", "locales", "tests", NULL };
static const char *plugin_fields[] = { "channel", "policy", "description", "placements", NULL };

static int in_list(const char *k, const char **list)
{
    for (; *list; list++)
        if (!strcmp(k, *list))
            return 1;
    return 0;
}

static void check_unknown(lua_State *L, struct vctx *v, const char **allowed,
                          enum hooks_owner owner, const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            rules_verr(v, NULL, "%s: keys must be names", what);
        } else if (!in_list(lua_tostring(L, -2), allowed) &&
                   hooks_find(owner, lua_tostring(L, -2)) < 0) {
            const char *k = lua_tostring(L, -2);
            rules_verr(v, k, "unknown field '%s' in the %s (typo?)", k, what);
        }
        lua_pop(L, 1);
    }
}

/* The hooks of `owner` the table on top of the stack defines, as
 * HOOKS_BIT()s: each must be a function, the required ones must be there. */
static unsigned declared_hooks(lua_State *L, struct vctx *v, enum hooks_owner owner,
                               unsigned optional)
{
    unsigned bits = 0;
    for (int h = 0; h < HOOKS_N; h++) {
        const struct hooks_desc *d = &hooks_table[h];
        if (d->owner != owner)
            continue;
        lua_getfield(L, -1, d->name);
        int t = lua_type(L, -1);
        lua_pop(L, 1);
        if (t == LUA_TFUNCTION)
            bits |= HOOKS_BIT(h);
        else if (t == LUA_TTABLE && h == HOOKS_SCORE)
            continue; /* score = { model = ..., value = ... }: parse_model_score */
        else if (t != LUA_TNIL)
            rules_verr(v, d->name, "%s must be a function", d->name);
        else if (d->required && !(optional & HOOKS_BIT(h)))
            rules_verr(v, NULL, "%s is required: %s", d->name, d->usage);
    }
    return bits;
}

/* `promod check`: the campaign directory the file being validated was
 * found in (default ids are relative to it); NULL = the server's rules_dir.
 * Only the single-threaded CLI sets it. */
static const char *g_id_root;

static void default_id(const char *path, char *out, size_t len)
{
    /* "rules/a/b.lua" → "a.b": path under rules/ without .lua, '/' → '.'.
     * The server's files are "<rules_dir>/...": strip that whole prefix (an
     * absolute rules_dir would otherwise leak into the id). */
    const char *p = path;
    const char *rd = g_id_root ? g_id_root : g_app ? g_app->cfg.rules_dir : NULL;
    size_t rl = rd ? strlen(rd) : 0;
    if (rl && !strncmp(path, rd, rl) && path[rl] == '/') {
        p = path + rl + 1;
        while (*p == '/')
            p++;
    } else {
        const char *slash = strchr(p, '/');
        p = slash ? slash + 1 : p;
    }
    snprintf(out, len, "%s", p);
    size_t n = strlen(out);
    if (n > 4 && !strcmp(out + n - 4, ".lua"))
        out[n - 4] = 0;
    for (char *q = out; *q; q++)
        if (*q == '/')
            *q = '.';
}

static const char *day_names[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };

static void parse_schedule(lua_State *L, struct vctx *v, struct rules_schedule *s)
{
    char pb[96];
    memset(s, 0, sizeof *s);
    s->hour_from = s->hour_to = -1;
    strcpy(s->tz, "UTC");
    if (lua_isnil(L, -1))
        return;
    if (!lua_istable(L, -1)) {
        rules_verr(v, "schedule", "schedule must be a table { starts = ..., ends = ... }");
        return;
    }
    lua_getfield(L, -1, "tz");
    if (lua_type(L, -1) == LUA_TSTRING) {
        int off;
        if (tz_offset(lua_tostring(L, -1), 0, &off))
            rules_verr(v, "schedule.tz", "schedule.tz: unknown time zone \"%s\"", lua_tostring(L, -1));
        else
            snprintf(s->tz, sizeof s->tz, "%s", lua_tostring(L, -1));
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "schedule.tz", "schedule.tz must be a zone name like \"Europe/Paris\"");
    }
    lua_pop(L, 1);
    static const char *ends[] = { "starts", "ends" };
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -1, ends[i]);
        if (lua_type(L, -1) == LUA_TSTRING) {
            int64_t t;
            if (tz_parse_iso8601(lua_tostring(L, -1), &t))
                rules_verr(v, i ? "schedule.ends" : "schedule.starts", "schedule.%s: \"%s\" is not an ISO-8601 time like "
                                 "\"2026-03-01T00:00:00Z\"", ends[i], lua_tostring(L, -1));
            else if (i == 0)
                s->starts = t;
            else
                s->ends = t;
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            if (i == 0)
                s->starts = (int64_t)lua_tonumber(L, -1);
            else
                s->ends = (int64_t)lua_tonumber(L, -1);
        } else if (!lua_isnil(L, -1)) {
            rules_verr(v, i ? "schedule.ends" : "schedule.starts", "schedule.%s must be an ISO-8601 string",
                 ends[i]);
        }
        lua_pop(L, 1);
    }
    if (s->starts && s->ends && s->ends <= s->starts)
        rules_verr(v, "schedule.ends", "schedule.ends must be after schedule.starts");
    lua_getfield(L, -1, "days");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            int d = 0;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                d = (int)lua_tonumber(L, -1);
            } else if (lua_type(L, -1) == LUA_TSTRING) {
                for (int j = 0; j < 7; j++)
                    if (!strncasecmp(lua_tostring(L, -1), day_names[j], 3))
                        d = j + 1;
            }
            if (d < 1 || d > 7)
                rules_verr(v, rules_pathf(pb, sizeof pb, "schedule.days[%d]", i), "schedule.days[%d]: use 1-7 (Monday=1) or \"mon\"..\"sun\"", i);
            else
                s->days |= 1u << d;
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "schedule.days", "schedule.days must be a list like { \"mon\", \"tue\" }");
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "hours");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TNUMBER ||
            lua_tonumber(L, -2) < 0 || lua_tonumber(L, -2) > 23 || lua_tonumber(L, -1) < 0 ||
            lua_tonumber(L, -1) > 24)
            rules_verr(v, "schedule.hours", "schedule.hours must be { from, to } with hours 0-24");
        else if ((int)lua_tonumber(L, -2) == (int)lua_tonumber(L, -1))
            rules_verr(v, "schedule.hours", "schedule.hours { %d, %d } is an empty window (use { 0, 24 } for "
                 "all day)", (int)lua_tonumber(L, -2), (int)lua_tonumber(L, -1));
        else {
            s->hour_from = (int)lua_tonumber(L, -2);
            s->hour_to = (int)lua_tonumber(L, -1);
        }
        lua_pop(L, 2);
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "schedule.hours", "schedule.hours must be { from, to }");
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "starts") && strcmp(k, "ends") && strcmp(k, "days") && strcmp(k, "hours") &&
            strcmp(k, "tz"))
            rules_verr(v, rules_pathf(pb, sizeof pb, "schedule.%s", k), "unknown field '%s' in schedule", k);
        lua_pop(L, 1);
    }
}

/* A locale tag as BCP 47 writes it: 2-8 letters, then "-" subtags of 1-8
 * letters or digits ("en", "fr-CA", "zh-Hant-TW"); at most 35 bytes. */
static int locale_tag_ok(const char *s)
{
    size_t n = strlen(s), i = 0, seg = 0, first = 1;
    if (n == 0 || n > 35)
        return 0;
    for (; i <= n; i++) {
        char ch = s[i];
        if (ch == '-' || ch == 0) {
            if (seg == 0 || seg > 8 || (first && seg < 2))
                return 0;
            first = 0;
            seg = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (!first && ch >= '0' && ch <= '9')) {
            seg++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* locales = { "en", "fr", "fr-CA" }: the table at the top of the stack. */
static void parse_locales(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    char pb[96];
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    if (n < 1 || n > RULES_MAX_LOCALES) {
        rules_verr(v, "locales", "locales must be a list of 1-%d locale tags like { \"en\", \"fr\" } "
             "(the first is the default)", RULES_MAX_LOCALES);
        return;
    }
    c->locales = calloc((size_t)n + 1, sizeof *c->locales);
    if (!c->locales)
        abort();
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *t = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!t || !locale_tag_ok(t)) {
            rules_verr(v, rules_pathf(pb, sizeof pb, "locales[%d]", i),
                 "locales[%d] must be a locale tag like \"fr\" or \"fr-CA\"", i);
        } else {
            int dup = 0;
            for (int j = 0; j < c->nlocales; j++)
                dup |= !strcasecmp(c->locales[j], t);
            if (dup)
                rules_verr(v, rules_pathf(pb, sizeof pb, "locales[%d]", i), "locales[%d]: \"%s\" is listed twice",
                     i, t);
            else
                c->locales[c->nlocales++] = rules_xstrdup(t);
        }
        lua_pop(L, 1);
    }
}

/* A variant's content, the value at the top of the stack at `path`: every
 * string must be a valid template; a localized table (every key a declared
 * locale) must hold the default locale. */
static void check_content(lua_State *L, struct vctx *v, const struct rules_campaign *c,
                          const char *path, int depth)
{
    char pb[200], terr[128];
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t tl;
        const char *t = lua_tolstring(L, -1, &tl);
        if (tmpl_check(t, tl, terr, sizeof terr))
            rules_verr(v, path, "%s: %s", path, terr);
        return;
    }
    if (!lua_istable(L, -1) || depth > 16)
        return;
    if (c->nlocales && content_is_localized(L, -1, c->locales, c->nlocales)) {
        lua_getfield(L, -1, c->locales[0]);
        int has_default = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!has_default) {
            /* keys match case-insensitively: look for the default that way too */
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                has_default |= !strcasecmp(lua_tostring(L, -2), c->locales[0]);
                lua_pop(L, 1);
            }
        }
        if (!has_default)
            rules_verr(v, path, "%s is localized but has no \"%s\" (the default locale, locales[1])",
                 path, c->locales[0]);
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        int n;
        if (lua_type(L, -2) == LUA_TSTRING)
            n = snprintf(pb, sizeof pb, "%s.%s", path, lua_tostring(L, -2));
        else if (lua_type(L, -2) == LUA_TNUMBER)
            n = snprintf(pb, sizeof pb, "%s[%d]", path, (int)lua_tonumber(L, -2));
        else
            n = snprintf(pb, sizeof pb, "%s", path);
        if (n < 0 || n >= (int)sizeof pb) /* a path this long: its parent's will do */
            snprintf(pb, sizeof pb, "%.*s", (int)(sizeof pb - 1), path);
        check_content(L, v, c, pb, depth + 1);
        lua_pop(L, 1);
    }
}

/* Validate the campaign table at the top of the stack into *c. */
static void validate_campaign(lua_State *L, struct vctx *v, const char *const *chans, int nchans,
                              struct rules_campaign *c)
{
    char pb[96];
    memset(c, 0, sizeof *c);
    c->priority = 50;
    c->status = c->file_status = CAMP_ACTIVE;
    check_unknown(L, v, camp_fields, HOOKS_CAMPAIGN, "campaign table");
    lua_getfield(L, -1, "locales"); /* before the variants, whose content it shapes */
    if (!lua_isnil(L, -1))
        parse_locales(L, v, c);
    lua_pop(L, 1);
    char idbuf[256];
    lua_getfield(L, -1, "id");
    if (lua_type(L, -1) == LUA_TSTRING) {
        snprintf(idbuf, sizeof idbuf, "%s", lua_tostring(L, -1));
        if (!id_valid(idbuf))
            rules_verr(v, "id", "id \"%.64s\" must be 1-128 characters of A-Z a-z 0-9 _ - . : @", idbuf);
    } else if (lua_isnil(L, -1)) {
        default_id(v->path, idbuf, sizeof idbuf);
        if (!id_valid(idbuf))
            rules_verr(v, NULL, "the file name gives the id \"%.64s\", which is not valid: set id = \"...\"",
                 idbuf);
    } else {
        rules_verr(v, "id", "id must be a string");
        idbuf[0] = 0;
    }
    c->id = rules_xstrdup(idbuf);
    lua_pop(L, 1);

    lua_getfield(L, -1, "name");
    if (lua_type(L, -1) == LUA_TSTRING)
        c->name = rules_xstrdup(lua_tostring(L, -1));
    else if (!lua_isnil(L, -1))
        rules_verr(v, "name", "name must be a string");
    if (!c->name)
        c->name = rules_xstrdup(c->id);
    lua_pop(L, 1);

    lua_getfield(L, -1, "channels");
    if (!lua_istable(L, -1) || lua_objlen(L, -1) == 0) {
        rules_verr(v, "channels", "channels must be a non-empty list like { \"web\" }");
    } else {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *ch = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int found = -1;
            for (int j = 0; ch && j < nchans; j++)
                if (!strcmp(chans[j], ch))
                    found = j;
            if (!ch)
                rules_verr(v, rules_pathf(pb, sizeof pb, "channels[%d]", i), "channels[%d] must be a string", i);
            else if (chans && found < 0)
                rules_verr(v, rules_pathf(pb, sizeof pb, "channels[%d]", i), "unknown channel \"%s\" (loaded plugins: %d; add plugins/%s.lua)",
                     ch, nchans, ch);
            else if (found >= 0)
                c->channels |= 1u << found;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "placements");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        c->placements = calloc((size_t)n + 1, sizeof(char *));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                rules_verr(v, rules_pathf(pb, sizeof pb, "placements[%d]", i), "placements[%d] must be a string",
                     i);
            else
                c->placements[c->nplacements++] = rules_xstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "placements", "placements must be a list of strings");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "priority");
    if (lua_type(L, -1) == LUA_TNUMBER)
        c->priority = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        rules_verr(v, "priority", "priority must be a number");
    lua_pop(L, 1);

    lua_getfield(L, -1, "status");
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (!strcmp(s, "draft"))
            c->file_status = CAMP_DRAFT;
        else if (!strcmp(s, "active"))
            c->file_status = CAMP_ACTIVE;
        else if (!strcmp(s, "paused"))
            c->file_status = CAMP_PAUSED;
        else
            rules_verr(v, "status", "status in a file may be \"draft\", \"active\" or \"paused\"");
        c->status = c->file_status;
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "status", "status must be a string");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "schedule");
    parse_schedule(L, v, &c->sched);
    lua_pop(L, 1);

    lua_getfield(L, -1, "caps");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "customer");
        if (!lua_isnil(L, -1))
            parse_caps(L, v, "caps.customer", &c->cust_caps);
        lua_pop(L, 1);
        lua_getfield(L, -1, "total");
        if (!lua_isnil(L, -1))
            parse_caps(L, v, "caps.total", &c->total_caps);
        lua_pop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "customer") && strcmp(k, "total"))
                rules_verr(v, rules_pathf(pb, sizeof pb, "caps.%s", k),
                     "unknown field '%s' in caps (use customer or total)", k);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "caps", "caps must be a table { customer = ..., total = ... }");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "variants");
    int nv = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    if (nv == 0 || nv > RULES_MAX_VARIANTS) {
        rules_verr(v, "variants", "variants must be a list of 1-%d { id = ..., weight = ..., content = {...} }",
             RULES_MAX_VARIANTS);
    } else {
        c->variants = calloc((size_t)nv, sizeof *c->variants);
        for (int i = 1; i <= nv; i++) {
            lua_rawgeti(L, -1, i);
            if (!lua_istable(L, -1)) {
                rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d]", i), "variants[%d] must be a table", i);
                lua_pop(L, 1);
                continue;
            }
            struct rules_variant *var = &c->variants[c->nvariants];
            lua_getfield(L, -1, "id");
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
                rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].id", i), "variants[%d].id must be a string",
                     i);
                lua_pop(L, 2);
                continue;
            }
            var->id = rules_xstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
            json_t *idj = json_string(var->id); /* offers carry it as JSON text */
            if (!idj || !var->id[0] || strlen(var->id) > 128)
                rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].id", i),
                     "variants[%d].id must be 1-128 bytes of UTF-8 text", i);
            json_decref(idj);
            for (int j = 0; j < c->nvariants; j++)
                if (!strcmp(c->variants[j].id, var->id))
                    rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].id", i),
                         "variants[%d]: duplicate id \"%s\"", i, var->id);
            lua_getfield(L, -1, "weight");
            var->weight = 1;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                var->weight = lua_tonumber(L, -1);
                /* 0 switches a variant off; all of them 0 is a warning (rules_warn.c) */
                if (!(var->weight >= 0) || var->weight > 1e9)
                    rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].weight", i),
                         "variants[%d].weight must be a number from 0 to 1e9", i);
            } else if (!lua_isnil(L, -1)) {
                rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].weight", i),
                     "variants[%d].weight must be a number", i);
            }
            lua_pop(L, 1);
            lua_getfield(L, -1, "content");
            if (!lua_istable(L, -1)) {
                rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].content", i),
                     "variants[%d].content must be a table of fields", i);
            } else {
                /* templates must parse, localized values must have the default */
                check_content(L, v, c, rules_pathf(pb, sizeof pb, "variants[%d].content", i), 0);
                /* content must be representable as JSON */
                int jerr = 0;
                json_t *j = luavm_to_json(L, -1, &jerr);
                if (!j)
                    rules_verr(v, rules_pathf(pb, sizeof pb, "variants[%d].content", i),
                         "variants[%d].content holds a value JSON cannot carry "
                                       "(function, NaN, cycle)", i);
                json_decref(j);
            }
            lua_pop(L, 1);
            c->weight_sum += var->weight;
            c->nvariants++;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    /* a campaign whose audience filters (segments, exclude, conditions)
     * needs no eligible hook; a model-only audience ranks, it does not
     * filter, so eligible stays required there */
    lua_getfield(L, -1, "audience");
    int filters = !lua_isnil(L, -1);
    if (lua_istable(L, -1)) {
        int has_model_part = 0, has_filter_part = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
            if (!strcmp(k, "model") || !strcmp(k, "top") || !strcmp(k, "above"))
                has_model_part = 1;
            else
                has_filter_part = 1;
            lua_pop(L, 1);
        }
        filters = has_filter_part || !has_model_part;
    }
    lua_pop(L, 1);
    c->hooks = declared_hooks(L, v, HOOKS_CAMPAIGN, filters ? HOOKS_BIT(HOOKS_ELIGIBLE) : 0);
    lua_getfield(L, -1, "score");
    if (lua_istable(L, -1))
        rules_parse_model_score(L, v, c);
    lua_pop(L, 1);

    lua_getfield(L, -1, "trigger");
    if (lua_istable(L, -1)) {
        int jerr;
        c->trigger = luavm_to_json(L, -1, &jerr);
        const char *ev = json_string_value(json_object_get(c->trigger, "event"));
        const char *delay = json_string_value(json_object_get(c->trigger, "delay"));
        int64_t secs;
        if (!ev)
            rules_verr(v, "trigger.event", "trigger.event must name an event type");
        if (delay && tz_parse_duration(delay, &secs))
            rules_verr(v, "trigger.delay", "trigger.delay \"%s\" is not a duration like \"1h\"", delay);
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "trigger", "trigger must be a table { event = ..., delay = ..., cancel_on = ... }");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "audience");
    if (lua_istable(L, -1))
        c->audience = rules_parse_audience(L, v, c);
    else if (!lua_isnil(L, -1))
        rules_verr(v, "audience", "audience must be a table { segments = {...}, exclude = {...}, "
                            "conditions = {...}, model = \"id\", top = N | above = t }");
    lua_pop(L, 1);
    if (c->audience_top && c->trigger)
        rules_verr(v, "audience.top", "audience.top ranks a whole audience at launch; a triggered "
             "campaign sends one event at a time: use audience.above");

    lua_getfield(L, -1, "cost");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "per_send");
        c->cost_per_send = lua_tonumber(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, -1, "per_impression");
        c->cost_per_impression = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (c->cost_per_send < 0 || c->cost_per_impression < 0)
            rules_verr(v, "cost", "cost values must be >= 0");
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "cost", "cost must be a table { per_send = ..., per_impression = ... }");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "budget"); /* money for coupon redemptions (coupons.h) */
    char bf[32], bm[256];
    if (!lua_isnil(L, -1) && coupons_budget_parse(L, -1, &c->budget, bf, sizeof bf, bm, sizeof bm))
        rules_verr(v, bf, "%s", bm);
    lua_pop(L, 1);
}

static void validate_plugin(lua_State *L, struct vctx *v, struct rules_channel *ch)
{
    char pb[96];
    memset(ch, 0, sizeof *ch);
    ch->quiet_from = ch->quiet_to = -1;
    check_unknown(L, v, plugin_fields, HOOKS_CHANNEL, "plugin table");
    lua_getfield(L, -1, "channel");
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!name || !id_valid(name) || strlen(name) > 32)
        rules_verr(v, "channel", "channel must be a short name like \"email\"");
    ch->name = rules_xstrdup(name ? name : "");
    lua_pop(L, 1);
    lua_getfield(L, -1, "policy");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "customer");
        if (!lua_isnil(L, -1))
            parse_caps(L, v, "policy.customer", &ch->policy);
        lua_pop(L, 1);
        lua_getfield(L, -1, "quiet_hours");
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            double a = lua_tonumber(L, -2), b = lua_tonumber(L, -1);
            if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TNUMBER || a < 0 ||
                a > 23 || b < 0 || b > 23)
                rules_verr(v, "policy.quiet_hours", "policy.quiet_hours must be { from, to } hours 0-23");
            else {
                ch->quiet_from = (int)a;
                ch->quiet_to = (int)b;
            }
            lua_pop(L, 2);
        } else if (!lua_isnil(L, -1)) {
            rules_verr(v, "policy.quiet_hours", "policy.quiet_hours must be { from, to }");
        }
        lua_pop(L, 1);
        lua_getfield(L, -1, "consent");
        if (lua_type(L, -1) == LUA_TSTRING)
            ch->consent = rules_xstrdup(lua_tostring(L, -1));
        else if (!lua_isnil(L, -1))
            rules_verr(v, "policy.consent", "policy.consent must name a consent key like \"email\"");
        lua_pop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "customer") && strcmp(k, "quiet_hours") && strcmp(k, "consent"))
                rules_verr(v, rules_pathf(pb, sizeof pb, "policy.%s", k), "unknown field '%s' in policy", k);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "policy", "policy must be a table");
    }
    lua_pop(L, 1);
    /* placements = { "home_banner", ... }: the slots this channel serves (warnings only) */
    lua_getfield(L, -1, "placements");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        ch->placements = calloc((size_t)n + 1, sizeof *ch->placements);
        for (int i = 1; ch->placements && i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) == LUA_TSTRING)
                ch->placements[ch->nplacements++] = rules_xstrdup(lua_tostring(L, -1));
            else
                rules_verr(v, rules_pathf(pb, sizeof pb, "placements[%d]", i),
                           "placements[%d] must be a string", i);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "placements", "placements must be a list of names like { \"home_banner\" }");
    }
    lua_pop(L, 1);
    ch->hooks = declared_hooks(L, v, HOOKS_CHANNEL, 0);
    ch->outbound = (ch->hooks & HOOKS_BIT(HOOKS_DELIVER)) != 0;
}

int rules_validate_in(struct luavm *vm, const char *path, enum rules_kind kind, const char *src,
                      size_t len, const char *const *chans, int nchans, json_t *errors,
                      struct rules_campaign *camp, struct rules_channel *chan)
{
    lua_State *L = luavm_state(vm);
    int top = lua_gettop(L);
    struct vctx v = { .path = path, .errors = errors, .lines = { .src = src, .len = len } };
    if (camp)
        memset(camp, 0, sizeof *camp);
    if (chan)
        memset(chan, 0, sizeof *chan);
    char err[1024];
    if (len > RULES_MAX_FILE_BYTES) {
        rules_verr(&v, NULL, "file larger than %u bytes", RULES_MAX_FILE_BYTES);
        return ERR_TOOBIG;
    }
    if (memchr(src, 0, len)) {
        rules_verr(&v, NULL, "file contains a NUL byte (binary files are not accepted)");
        return ERR_INVAL;
    }
    if (luavm_load_chunk(vm, path, src, len, err, sizeof err)) {
        /* errors without a position (memory limit, binary chunk) still get
         * the file:line: shape every consumer parses */
        size_t pl = strlen(path);
        if (!strncmp(err, path, pl) && !strncmp(err + pl, ": ", 2))
            rules_verr(&v, NULL, "%s", err + pl + 2);
        else if (strncmp(err, path, pl) != 0 && !strstr(err, ".lua:"))
            rules_verr(&v, NULL, "%s", err);
        else
            json_array_append_new(errors, json_string(err));
        return ERR_LUA;
    }
    if (!lua_istable(L, -1)) {
        rules_verr(&v, NULL, "the file must return a table (return { ... })");
        lua_settop(L, top);
        return ERR_INVAL;
    }
    struct rules_campaign tmpc;
    struct rules_channel tmpch;
    if (kind == RULES_CAMPAIGN)
        validate_campaign(L, &v, chans, nchans, camp ? camp : &tmpc);
    else
        validate_plugin(L, &v, chan ? chan : &tmpch);
    lua_settop(L, top);
    rules_lines_free(&v.lines);
    if (!camp && kind == RULES_CAMPAIGN)
        rules_campaign_free(&tmpc);
    if (!chan && kind == RULES_PLUGIN)
        rules_channel_free(&tmpch);
    return v.nerr ? ERR_INVAL : 0;
}

/* `promod check`'s config (its budgets and limits), or NULL in the server. */
static const struct config *g_check_cfg;

struct luavm_opts rules_vm_opts(const struct config *cfg, const char *lib_dir)
{
    struct luavm_opts o = { .lib_dir = lib_dir };
    if (cfg) {
        o.mem_limit = cfg->lua_mem_limit;
        o.instr_budget = cfg->instr_budget;
        o.call_time_ms = cfg->hook_time_ms;
        o.load_time_ms = cfg->load_time_ms;
        o.file_mem_limit = cfg->lua_file_mem_limit;
        o.log_per_sec = cfg->lua_log_per_sec ? cfg->lua_log_per_sec : -1;
    }
    return o;
}

/* A throwaway sandbox for validation.  Loading a file there gets the same
 * instruction budget and load time limit as loading it in a worker (the
 * config's), so a file that validates also loads where it runs. */
struct luavm *rules_scratch_vm(const char *lib_dir)
{
    struct luavm_opts o = rules_vm_opts(g_check_cfg ? g_check_cfg : g_app ? &g_app->cfg : NULL,
                                        lib_dir);
    o.mem_limit = 512u << 20;
    struct luavm *vm;
    return luavm_new(&o, &vm) ? NULL : vm;
}

int rules_validate_campaign(const char *path, const char *src, size_t len,
                            const char *const *chans, int nchans, const char *lib_dir,
                            json_t *errors, struct rules_campaign *out)
{
    memset(out, 0, sizeof *out);
    struct luavm *vm = rules_scratch_vm(lib_dir);
    if (!vm) {
        json_array_append_new(errors, json_string("out of memory"));
        return ERR_NOMEM;
    }
    int rc = rules_validate_in(vm, path, RULES_CAMPAIGN, src, len, chans, nchans, errors, out, NULL);
    if (rc)
        rules_campaign_free(out);
    luavm_free(vm);
    return rc;
}


int rules_validate_source(const char *path, enum rules_kind kind, const char *src, size_t len,
                          const char *const *chans, int nchans, const char *lib_dir,
                          json_t *errors)
{
    struct luavm *vm = rules_scratch_vm(lib_dir);
    if (!vm) {
        json_array_append_new(errors, json_string("out of memory"));
        return ERR_NOMEM;
    }
    int rc = rules_validate_in(vm, path, kind, src, len, chans, nchans, errors, NULL, NULL);
    luavm_free(vm);
    return rc;
}


/* ===================================================================== */
/* promod check                                                          */

/* Does `path` have a component named `name` ("x/plugins/web.lua")? */
static int has_component(const char *path, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = path; (p = strstr(p, name)); p += nl)
        if ((p == path || p[-1] == '/') && (p[nl] == '/' || p[nl] == 0))
            return 1;
    return 0;
}

/* Copy of `dir` without trailing slashes. */
static char *dir_dup(const char *dir)
{
    char *d = rules_xstrdup(dir);
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/')
        d[--n] = 0;
    return d;
}

int rules_check_cli(const struct config *cfg, const char **paths, int n,
                    const struct rules_check_opts *opts)
{
    /* audiences name segments: those segments_dir defines */
    rules_check_set_segments(segments_known_ids(cfg));
    const char *defaults[2] = { cfg->rules_dir, cfg->plugins_dir };
    if (n == 0) {
        paths = defaults;
        n = 2;
    }
    json_t *errors = json_array();
    struct rules_flist plugins = { 0 }, camps = { 0 };
    char *roots[64]; /* campaign directories given: default ids are relative to them */
    int nroots = 0;
    char lib_dir[4096];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", cfg->rules_dir);
    int lib_from_arg = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st)) {
            char m[600];
            snprintf(m, sizeof m, "%s:1: cannot read: %s", paths[i], strerror(errno));
            json_array_append_new(errors, json_string(m));
            continue;
        }
        /* plugins: under plugins_dir, or a path with a "plugins" component */
        size_t pl = strlen(cfg->plugins_dir);
        int is_plugin = (!strncmp(paths[i], cfg->plugins_dir, pl) &&
                         (paths[i][pl] == 0 || paths[i][pl] == '/')) ||
                        has_component(paths[i], "plugins");
        if (S_ISDIR(st.st_mode)) {
            char *root = dir_dup(paths[i]);
            char lib[4096];
            snprintf(lib, sizeof lib, "%s/lib", root);
            rules_scan_dir(root, lib, !is_plugin, is_plugin ? RULES_PLUGIN : RULES_CAMPAIGN,
                     is_plugin ? &plugins : &camps, 0);
            struct stat ls;
            /* `require` resolves in the lib/ of the rules directory checked */
            if (!is_plugin && !lib_from_arg && !stat(lib, &ls) && S_ISDIR(ls.st_mode)) {
                snprintf(lib_dir, sizeof lib_dir, "%s", lib);
                lib_from_arg = 1;
            }
            if (!is_plugin && nroots < 64)
                roots[nroots++] = root;
            else
                free(root);
        } else if (is_plugin || !rules_is_test_file(paths[i])) { /* tests: `promod test` */
            rules_flist_add(is_plugin ? &plugins : &camps, paths[i],
                      is_plugin ? RULES_PLUGIN : RULES_CAMPAIGN);
        }
    }
    /* channel names come from the plugins given, else from plugins_dir */
    if (plugins.n == 0)
        rules_scan_dir(cfg->plugins_dir, NULL, 0, RULES_PLUGIN, &plugins, 0);
    rules_sort_paths(plugins.paths, plugins.n);
    rules_sort_paths(camps.paths, camps.n);
    g_check_cfg = cfg;
    struct luavm *vm = rules_scratch_vm(lib_dir);
    if (!vm) {
        fprintf(stderr, "promod check: out of memory\n");
        return 1;
    }
    char *rules_root = dir_dup(cfg->rules_dir);
    json_t *ids = json_object(); /* campaign id → file, as the loader refuses duplicates */
    char *names[32];
    int nnames = 0, files = 0;
    /* what the warnings look at: the valid campaigns and channels, the files' text */
    struct rules_channel wch[32];
    struct rules_campaign *wc = calloc((size_t)camps.n + 1, sizeof *wc);
    struct rules_warn_file *wf = calloc((size_t)camps.n + 1, sizeof *wf);
    int nwc = 0, nwf = 0;
    if (!wc || !wf) {
        fprintf(stderr, "promod check: out of memory\n");
        exit(1);
    }
    for (int pass = 0; pass < 2; pass++) {
        struct rules_flist *l = pass ? &camps : &plugins;
        for (int i = 0; i < l->n; i++) {
            size_t len;
            int rc;
            char *src = rules_read_file(l->paths[i], &len, &rc);
            files++;
            if (!src) {
                char m[600];
                snprintf(m, sizeof m, "%s:1: cannot read: %s", l->paths[i], err_str(rc));
                json_array_append_new(errors, json_string(m));
                continue;
            }
            /* default ids: relative to the longest campaign directory given
             * that holds the file, else to rules_dir, as the server does */
            g_id_root = NULL;
            size_t best = 0;
            for (int r = 0; pass && r < nroots; r++) {
                size_t rl = strlen(roots[r]);
                if (rl > best && !strncmp(l->paths[i], roots[r], rl) && l->paths[i][rl] == '/') {
                    g_id_root = roots[r];
                    best = rl;
                }
            }
            if (pass && !g_id_root && !strncmp(l->paths[i], rules_root, strlen(rules_root)) &&
                l->paths[i][strlen(rules_root)] == '/')
                g_id_root = rules_root;
            struct rules_channel ch;
            struct rules_campaign camp;
            int ok = rules_validate_in(vm, l->paths[i], pass ? RULES_CAMPAIGN : RULES_PLUGIN, src, len,
                                 (const char *const *)names, nnames, errors, pass ? &camp : NULL,
                                 pass ? NULL : &ch) == 0;
            g_id_root = NULL;
            char m[1200];
            if (!pass && ok) {
                int dup = 0;
                for (int k = 0; k < nnames; k++)
                    dup |= !strcmp(names[k], ch.name);
                if (dup || nnames >= 32) {
                    snprintf(m, sizeof m, "%s:%d: duplicate channel \"%s\" (or more than 32 channels)",
                             l->paths[i], rules_line_of(src, len, "channel"), ch.name);
                    json_array_append_new(errors, json_string(m));
                } else {
                    wch[nnames] = ch;
                    names[nnames++] = ch.name;
                    memset(&ch, 0, sizeof ch);
                }
            }
            if (!pass)
                rules_channel_free(&ch);
            if (pass && ok) {
                const char *other = json_string_value(json_object_get(ids, camp.id));
                if (other) {
                    snprintf(m, sizeof m, "%s:%d: duplicate campaign id \"%s\" (also in %s)",
                             l->paths[i], rules_line_of(src, len, "id"), camp.id, other);
                    json_array_append_new(errors, json_string(m));
                } else {
                    json_object_set_new(ids, camp.id, json_string(l->paths[i]));
                    camp.status = camp.file_status;
                    camp.file = nwf;
                    wf[nwf++] = (struct rules_warn_file){ l->paths[i], src, len };
                    wc[nwc++] = camp;
                    memset(&camp, 0, sizeof camp);
                    src = NULL; /* kept for the warnings */
                }
            }
            if (pass)
                rules_campaign_free(&camp);
            free(src);
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
        printf("%s\n", json_string_value(e));
    size_t nerr = json_array_size(errors);
    int64_t now = opts && opts->now ? opts->now : (int64_t)time(NULL);
    json_t *warns = rules_warnings(wc, nwc, wch, nnames, wf, nwf, opts ? opts->profiles : NULL, now);
    int nwarn = warns ? rules_warnings_print(warns, stdout) : 0;
    json_decref(warns);
    fprintf(stderr, "promod check: %d files, %zu problems, %d warnings%s\n", files, nerr, nwarn,
            nwarn && opts && opts->strict ? " (--strict: warnings fail)" : "");
    for (int k = 0; k < nwc; k++)
        rules_campaign_free(&wc[k]);
    for (int k = 0; k < nwf; k++)
        free((char *)wf[k].src);
    free(wc);
    free(wf);
    json_decref(errors);
    json_decref(ids);
    for (int k = 0; k < nnames; k++)
        rules_channel_free(&wch[k]); /* names[k] is wch[k].name */
    for (int k = 0; k < nroots; k++)
        free(roots[k]);
    free(rules_root);
    luavm_free(vm);
    rules_flist_free(&plugins);
    rules_flist_free(&camps);
    return nerr || (nwarn && opts && opts->strict) ? 1 : 0;
}
