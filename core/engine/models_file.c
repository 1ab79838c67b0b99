/* models_file.c — one model file, parsed and validated: the table it
 * returns becomes a struct models_def, every problem a "file:line: message"
 * (the line of the offending field, found by rules_line_of). */
#include "engine/models.h"
#include "engine/rules.h"
#include "base/app.h"
#include "base/err.h"
#include "base/file.h"
#include "base/hash.h"
#include "base/id.h"
#include "lua/luavm.h"
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pctx {
    const char *path, *src;
    size_t len;
    json_t *errors;
    int nerr;
};

static void perr(struct pctx *v, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr(struct pctx *v, const char *field, const char *fmt, ...)
{
    char msg[512], full[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = field ? rules_line_of(v->src, v->len, field) : 1;
    snprintf(full, sizeof full, "%s:%d: %s", v->path, line, msg);
    json_array_append_new(v->errors, json_string(full));
    v->nerr++;
}

static char *xdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

void models_def_free(struct models_def *d)
{
    if (!d)
        return;
    free(d->id);
    free(d->name);
    free(d->description);
    free(d->path);
    free(d->label.event);
    free(d->label.after);
    free(d->label.campaign);
    for (int i = 0; i < d->label.ntypes; i++)
        free(d->label.types[i]);
    for (int i = 0; i < d->nfeats; i++) {
        struct models_feature *f = &d->feats[i];
        free(f->name);
        for (int k = 0; k < f->npath; k++)
            free(f->path[k]);
        free(f->path);
        free(f->stat_type);
        for (int k = 0; k < f->nvalues; k++)
            free(f->values[k]);
        free(f->values);
    }
    for (int i = 0; i < d->ncols; i++)
        free(d->colnames ? d->colnames[i] : NULL);
    free(d->colnames);
    free(d);
}

/* ---------------------------------------------------------------------- */

/* An event type name: a built-in one (impression, click, conversion, send,
 * open, dismiss) or a custom one, [a-z0-9_]{1,32} (events.h). */
static int type_valid(const char *t)
{
    size_t n = strlen(t);
    if (n < 1 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
            return 0;
    return 1;
}

/* "7d", "12h", "2w" (1 hour to 3 years) → seconds; 0 when malformed. */
static int64_t duration(const char *s)
{
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || end == s || n < 1 || end[0] == 0 || end[1] != 0)
        return 0;
    int64_t unit = end[0] == 'h' ? 3600 : end[0] == 'd' ? 86400 : end[0] == 'w' ? 604800 : 0;
    int64_t secs = unit * n;
    if (!unit || secs > 3 * 366 * 86400LL)
        return 0;
    return secs;
}

static int64_t get_duration(lua_State *L, struct pctx *v, const char *key, const char *field,
                            int64_t dflt)
{
    lua_getfield(L, -1, key);
    int64_t r = dflt;
    if (lua_type(L, -1) == LUA_TSTRING) {
        if (!(r = duration(lua_tostring(L, -1))))
            perr(v, field, "%s must be a duration like \"7d\", \"12h\" or \"2w\" (1 hour to 3 years)",
                 field);
    } else if (!lua_isnil(L, -1)) {
        perr(v, field, "%s must be a duration string like \"7d\"", field);
    }
    lua_pop(L, 1);
    return r;
}

static int in_list(const char *k, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(k, *list))
            return 1;
    return 0;
}

/* Unknown keys of the table on top, named with `prefix` ("label."). */
static void check_keys(lua_State *L, struct pctx *v, const char *const *allowed, const char *prefix,
                       const char *what, int allow_array)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TNUMBER && allow_array)
            continue;
        if (lua_type(L, -1) != LUA_TSTRING) {
            perr(v, prefix[0] ? prefix : NULL, "%s: keys must be names", what);
            continue;
        }
        const char *k = lua_tostring(L, -1);
        if (!in_list(k, allowed)) {
            char f[160];
            snprintf(f, sizeof f, "%s%s", prefix, k);
            perr(v, f, "unknown field '%s' in the %s (typo?)", k, what);
        }
    }
}

/* A string field (NULL when absent or not a string; wrong types reported). */
static char *get_str(lua_State *L, struct pctx *v, const char *key, const char *field)
{
    lua_getfield(L, -1, key);
    char *r = NULL;
    if (lua_type(L, -1) == LUA_TSTRING)
        r = xdup(lua_tostring(L, -1));
    else if (!lua_isnil(L, -1))
        perr(v, field, "%s must be a string", field);
    lua_pop(L, 1);
    return r;
}

static double get_num(lua_State *L, struct pctx *v, const char *key, const char *field, double dflt,
                      double lo, double hi, int integer)
{
    lua_getfield(L, -1, key);
    double r = dflt;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        r = lua_tonumber(L, -1);
        if (!(r >= lo && r <= hi) || (integer && r != floor(r))) {
            perr(v, field, "%s must be %s from %g to %g", field, integer ? "a whole number" : "a number",
                 lo, hi);
            r = dflt;
        }
    } else if (!lua_isnil(L, -1)) {
        perr(v, field, "%s must be a number", field);
    }
    lua_pop(L, 1);
    return r;
}

/* A type name or a list of them (churn / value labels). */
static void get_types(lua_State *L, struct pctx *v, const char *key, struct models_label *lb)
{
    char field[64];
    snprintf(field, sizeof field, "label.%s", key);
    lua_getfield(L, -1, key);
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    }
    if (!lua_istable(L, -1) || lua_objlen(L, -1) < 1 || lua_objlen(L, -1) > MODELS_MAX_TYPES) {
        perr(v, field, "%s must be an event type or a list of 1 to %d of them", field,
             MODELS_MAX_TYPES);
        lua_pop(L, 1);
        return;
    }
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *t = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!t || !type_valid(t))
            perr(v, field, "%s: '%s' is not an event type name (built-in: impression, click, "
                 "conversion, send, open, dismiss; custom: 1-32 of a-z 0-9 _)", field, t ? t : "?");
        else
            lb->types[lb->ntypes++] = xdup(t);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void parse_label(lua_State *L, struct pctx *v, struct models_def *d)
{
    struct models_label *lb = &d->label;
    lua_getfield(L, -1, "label");
    if (!lua_istable(L, -1)) {
        perr(v, "label", "label is required: { conversion = \"campaign-id\", within = \"7d\" }, "
             "{ event = \"click\", after = \"impression\", within = \"1d\" }, "
             "{ churn = \"conversion\", within = \"90d\" } or { value = \"conversion\", within = \"90d\" }");
        lua_pop(L, 1);
        return;
    }
    static const char *const keys[] = { "conversion", "event", "after", "campaign", "churn", "value",
                                        "within", "every", "active", NULL };
    check_keys(L, v, keys, "label.", "label", 0);
    int kinds = 0;
    const char *kk[] = { "conversion", "event", "churn", "value" };
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, -1, kk[i]);
        kinds += !lua_isnil(L, -1);
        lua_pop(L, 1);
    }
    if (kinds != 1) {
        perr(v, "label", "label needs exactly one of conversion, event, churn or value");
        lua_pop(L, 1);
        return;
    }
    lb->within = get_duration(L, v, "within", "label.within", 0);
    if (!lb->within)
        perr(v, "label.within", "label.within is required: how long after the anchor the outcome "
             "counts (\"7d\")");
    lua_getfield(L, -1, "conversion");
    int conv = !lua_isnil(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "event");
    int ev = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (conv || ev) {
        lb->kind = MODELS_LABEL_EVENT;
        if (conv) {
            lb->campaign = get_str(L, v, "conversion", "label.conversion");
            if (lb->campaign && !id_valid(lb->campaign)) {
                perr(v, "label.conversion", "label.conversion must be a campaign id");
            }
            lb->event = xdup("conversion");
            lb->after = xdup("impression");
            lua_getfield(L, -1, "after");
            if (!lua_isnil(L, -1))
                perr(v, "label.after", "label.after goes with label.event, not label.conversion "
                     "(a conversion always follows an impression)");
            lua_pop(L, 1);
        } else {
            lb->event = get_str(L, v, "event", "label.event");
            lb->after = get_str(L, v, "after", "label.after");
            lb->campaign = get_str(L, v, "campaign", "label.campaign");
            if (!lb->after)
                perr(v, "label.after", "label.after is required with label.event: the event the "
                     "outcome must follow (\"impression\")");
            if (lb->campaign && !id_valid(lb->campaign))
                perr(v, "label.campaign", "label.campaign must be a campaign id");
        }
        const char *tn[2] = { lb->event, lb->after };
        const char *fn[2] = { conv ? "label.conversion" : "label.event", "label.after" };
        for (int i = 0; i < 2; i++)
            if (tn[i] && !type_valid(tn[i]))
                perr(v, fn[i], "%s: '%s' is not an event type name (built-in: impression, click, "
                     "conversion, send, open, dismiss; custom: 1-32 of a-z 0-9 _)", fn[i], tn[i]);
        if (!lb->event && conv)
            lb->event = xdup("conversion");
        const char *snap[] = { "every", "active" };
        for (int i = 0; i < 2; i++) {
            lua_getfield(L, -1, snap[i]);
            if (!lua_isnil(L, -1)) {
                char f[32];
                snprintf(f, sizeof f, "label.%s", snap[i]);
                perr(v, f, "%s is for churn and value labels", f);
            }
            lua_pop(L, 1);
        }
    } else {
        lua_getfield(L, -1, "churn");
        int churn = !lua_isnil(L, -1);
        lua_pop(L, 1);
        lb->kind = churn ? MODELS_LABEL_CHURN : MODELS_LABEL_VALUE;
        get_types(L, v, churn ? "churn" : "value", lb);
        lb->every = get_duration(L, v, "every", "label.every", lb->within);
        lb->active = get_duration(L, v, "active", "label.active", 0);
        const char *ev2[] = { "after", "campaign" };
        for (int i = 0; i < 2; i++) {
            lua_getfield(L, -1, ev2[i]);
            if (!lua_isnil(L, -1)) {
                char f[32];
                snprintf(f, sizeof f, "label.%s", ev2[i]);
                perr(v, f, "%s goes with label.event", f);
            }
            lua_pop(L, 1);
        }
    }
    d->regression = lb->kind == MODELS_LABEL_VALUE;
    lua_pop(L, 1);
}

/* stats.<what>: the derived fields of docs/models.md. */
static int parse_stat(const char *s, struct models_feature *f)
{
    static const struct { const char *n; enum models_stat st; } named[] = {
        { "events", MODELS_STAT_EVENTS }, { "revenue", MODELS_STAT_REVENUE },
        { "recency", MODELS_STAT_RECENCY }, { "frequency", MODELS_STAT_FREQUENCY },
        { "monetary", MODELS_STAT_MONETARY }, { "tenure", MODELS_STAT_TENURE },
        { "idle", MODELS_STAT_IDLE },
    };
    for (size_t i = 0; i < sizeof named / sizeof *named; i++)
        if (!strcmp(s, named[i].n)) {
            f->stat = named[i].st;
            return 0;
        }
    if (!strncmp(s, "days_since.", 11)) {
        if (!type_valid(s + 11))
            return -1;
        f->stat = MODELS_STAT_DAYS_SINCE;
        f->stat_type = xdup(s + 11);
        return 0;
    }
    /* counts: a built-in type at the top of p.stats, a custom one under
     * p.stats.custom (so that a typo of a derived name is not taken for a
     * custom type) */
    static const char *builtin[] = { "impression", "click", "conversion", "send", "open",
                                      "dismiss", NULL };
    const char *t = !strncmp(s, "custom.", 7) ? s + 7 : s;
    int ok = t != s ? type_valid(t) : 0;
    for (int i = 0; builtin[i] && t == s; i++)
        ok |= !strcmp(s, builtin[i]);
    if (!ok)
        return -1;
    f->stat = MODELS_STAT_COUNT;
    f->stat_type = xdup(t);
    return 0;
}

/* a.b.c → segments (each 1-64 of A-Z a-z 0-9 _ -) */
static int split_path(const char *s, struct models_feature *f)
{
    size_t n = strlen(s);
    if (!n || n > 200 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return -1;
    }
    int parts = 1;
    for (size_t i = 0; i < n; i++)
        parts += s[i] == '.';
    if (parts > 8)
        return -1;
    f->path = calloc((size_t)parts, sizeof *f->path);
    if (!f->path)
        abort();
    const char *p = s;
    for (int k = 0; k < parts; k++) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        f->path[k] = strndup(p, l);
        if (!f->path[k])
            abort();
        p = dot ? dot + 1 : p + l;
    }
    f->npath = parts;
    return 0;
}

/* The feature's name decides its source: "stats.x", "ctx.x",
 * "segment.x", else a profile attribute path. */
static void parse_source(struct pctx *v, const char *field, const char *name,
                         struct models_feature *f)
{
    if (!strncmp(name, "stats.", 6)) {
        f->src = MODELS_SRC_STATS;
        if (parse_stat(name + 6, f))
            perr(v, field, "%s: unknown behaviour '%s' (stats.recency, stats.frequency, "
                 "stats.monetary, stats.revenue, stats.events, stats.tenure, stats.idle, "
                 "stats.<built-in event type>, stats.custom.<custom event type>, "
                 "stats.days_since.<event type>)", field, name);
    } else if (!strncmp(name, "ctx.", 4)) {
        f->src = MODELS_SRC_CTX;
        if (split_path(name + 4, f))
            perr(v, field, "%s: '%s' is not a context field path (ctx.a.b)", field, name);
    } else if (!strncmp(name, "segment.", 8)) {
        f->src = MODELS_SRC_SEGMENT;
        /* membership as the segment's definition says it on the example's
         * (training) or the decide's (serving) profile and stats, at that
         * time: models_feat.c; a segment not loaded reads as missing */
        if (split_path(name + 8, f) || f->npath != 1)
            perr(v, field, "%s: '%s' is not a segment id (segment.<id>, 1-64 of A-Z a-z 0-9 _ -)",
                 field, name);
    } else {
        f->src = MODELS_SRC_ATTR;
        if (split_path(name, f))
            perr(v, field, "%s: '%s' is not a profile attribute path (a.b.c of A-Z a-z 0-9 _ -)",
                 field, name);
    }
}

static void parse_values(lua_State *L, struct pctx *v, const char *field, struct models_feature *f)
{
    lua_getfield(L, -1, "values");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    char vf[96];
    snprintf(vf, sizeof vf, "%s.values", field);
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    if (n < 1 || n > MODELS_MAX_VALUES) {
        perr(v, vf, "%s must be a list of 1 to %d strings (one indicator column each)", vf,
             MODELS_MAX_VALUES);
        lua_pop(L, 1);
        return;
    }
    f->values = calloc((size_t)n, sizeof *f->values);
    if (!f->values)
        abort();
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING || lua_objlen(L, -1) < 1 || lua_objlen(L, -1) > 128) {
            perr(v, vf, "%s[%d] must be a string of 1 to 128 bytes", vf, i);
        } else {
            const char *s = lua_tostring(L, -1);
            for (int k = 0; k < f->nvalues; k++)
                if (!strcmp(f->values[k], s))
                    perr(v, vf, "%s: '%s' is listed twice", vf, s);
            f->values[f->nvalues++] = xdup(s);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void parse_features(lua_State *L, struct pctx *v, struct models_def *d)
{
    lua_getfield(L, -1, "features");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    if (n < 1 || n > MODELS_MAX_FEATURES) {
        perr(v, "features", "features must be a list of 1 to %d features (\"age\", "
             "\"stats.recency\", \"ctx.device\", { \"tier\", values = { \"gold\", \"silver\" } }, "
             "{ \"hour\", fn = function(p, ctx) ... end })", MODELS_MAX_FEATURES);
        lua_pop(L, 1);
        return;
    }
    int col = 0;
    for (int i = 1; i <= n; i++) {
        char field[48];
        snprintf(field, sizeof field, "features[%d]", i);
        struct models_feature *f = &d->feats[d->nfeats];
        memset(f, 0, sizeof *f);
        lua_rawgeti(L, -1, i);
        const char *name = NULL;
        if (lua_type(L, -1) == LUA_TSTRING) {
            name = lua_tostring(L, -1);
        } else if (lua_istable(L, -1)) {
            static const char *const keys[] = { "values", "fn", NULL };
            char pre[64];
            snprintf(pre, sizeof pre, "%s.", field);
            check_keys(L, v, keys, pre, field, 1);
            lua_rawgeti(L, -1, 1);
            if (lua_type(L, -1) == LUA_TSTRING)
                name = lua_tostring(L, -1);
            lua_pop(L, 1);
            if (lua_objlen(L, -1) != 1)
                name = NULL;
        }
        if (!name || !*name || strlen(name) > 128) {
            perr(v, field, "%s must be a name (\"age\") or a table { \"name\", values = {...} } or "
                 "{ \"name\", fn = function(p, ctx) ... end }", field);
            lua_pop(L, 1);
            continue;
        }
        f->name = xdup(name);
        for (int k = 0; k < d->nfeats; k++)
            if (!strcmp(d->feats[k].name, name))
                perr(v, field, "%s: feature '%s' is listed twice", field, name);
        int is_fn = 0;
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "fn");
            if (lua_isfunction(L, -1))
                is_fn = 1;
            else if (!lua_isnil(L, -1))
                perr(v, field, "%s.fn must be a function(p, ctx) returning a number, a boolean, "
                     "a string (with values) or nil", field);
            lua_pop(L, 1);
        }
        if (is_fn) {
            f->src = MODELS_SRC_FN;
            f->fn = d->nfn++;
            if (strchr(name, '.'))
                perr(v, field, "%s: a feature function's name is a plain name, not a path ('%s')",
                     field, name);
        } else {
            parse_source(v, field, name, f);
        }
        if (lua_istable(L, -1)) {
            parse_values(L, v, field, f);
            if (f->nvalues && f->src == MODELS_SRC_STATS)
                perr(v, field, "%s: behaviour from p.stats is a number; it takes no values", field);
            if (f->nvalues && f->src == MODELS_SRC_SEGMENT)
                perr(v, field, "%s: a segment membership is 1 or 0; it takes no values", field);
        }
        f->col = col;
        f->ncols = f->nvalues ? f->nvalues : 1;
        col += f->ncols;
        d->nfeats++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (col > PREDICT_MAX_FEATURES) {
        perr(v, "features", "features expand to %d columns (categorical values count one each); "
             "at most %d", col, PREDICT_MAX_FEATURES);
        return;
    }
    d->ncols = col;
    d->colnames = calloc((size_t)(col ? col : 1), sizeof *d->colnames);
    if (!d->colnames)
        abort();
    for (int i = 0; i < d->nfeats; i++) {
        const struct models_feature *f = &d->feats[i];
        for (int k = 0; k < f->ncols; k++) {
            char b[300];
            if (f->nvalues)
                snprintf(b, sizeof b, "%s=%s", f->name, f->values[k]);
            else
                snprintf(b, sizeof b, "%s", f->name);
            d->colnames[f->col + k] = xdup(b);
        }
    }
}

static void parse_algorithm(lua_State *L, struct pctx *v, struct models_def *d)
{
    d->algo = MODELS_XGBOOST;
    lua_getfield(L, -1, "algorithm");
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *a = lua_tostring(L, -1);
        if (!strcmp(a, "xgboost"))
            d->algo = MODELS_XGBOOST;
        else if (!strcmp(a, "linear") || (!strcmp(a, "logistic") && !d->regression))
            d->algo = MODELS_LINEAR;
        else if (!strcmp(a, "logistic"))
            perr(v, "algorithm", "algorithm \"logistic\" predicts probabilities; a value label "
                 "needs \"xgboost\" or \"linear\" (ridge regression)");
        else
            perr(v, "algorithm", "algorithm must be \"xgboost\" (gradient-boosted trees), "
                 "\"logistic\" or \"linear\" (L2-regularised logistic / ridge regression)");
    } else if (!lua_isnil(L, -1)) {
        perr(v, "algorithm", "algorithm must be a string");
    }
    lua_pop(L, 1);
    d->trees = 200;
    d->depth = 6;
    d->eta = 0.1;
    d->subsample = 1;
    d->colsample = 1;
    d->min_child_weight = 1;
    d->lambda = 1;
    d->C = 1;
    d->tol = 1e-4;
    lua_getfield(L, -1, "params");
    if (lua_istable(L, -1)) {
        static const char *const tk[] = { "trees", "depth", "eta", "subsample", "colsample",
                                          "min_child_weight", "lambda", NULL };
        static const char *const lk[] = { "C", "tol", NULL };
        check_keys(L, v, d->algo == MODELS_XGBOOST ? tk : lk, "params.",
                   d->algo == MODELS_XGBOOST ? "xgboost parameters" : "linear parameters", 0);
        if (d->algo == MODELS_XGBOOST) {
            d->trees = (int)get_num(L, v, "trees", "params.trees", 200, 1, 2000, 1);
            d->depth = (int)get_num(L, v, "depth", "params.depth", 6, 1, 12, 1);
            d->eta = get_num(L, v, "eta", "params.eta", 0.1, 1e-4, 1, 0);
            d->subsample = get_num(L, v, "subsample", "params.subsample", 1, 0.05, 1, 0);
            d->colsample = get_num(L, v, "colsample", "params.colsample", 1, 0.05, 1, 0);
            d->min_child_weight = get_num(L, v, "min_child_weight", "params.min_child_weight", 1,
                                          0, 1e6, 0);
            d->lambda = get_num(L, v, "lambda", "params.lambda", 1, 0, 1e6, 0);
        } else {
            d->C = get_num(L, v, "C", "params.C", 1, 1e-6, 1e6, 0);
            d->tol = get_num(L, v, "tol", "params.tol", 1e-4, 1e-10, 1, 0);
        }
    } else if (!lua_isnil(L, -1)) {
        perr(v, "params", "params must be a table");
    }
    lua_pop(L, 1);
}

static void default_id(const char *path, char *out, size_t len)
{
    /* "<models_dir>/a/b.lua" → "a.b", as campaign ids are made */
    const char *p = path;
    const char *md = g_app ? g_app->cfg.models_dir : NULL;
    size_t ml = md ? strlen(md) : 0;
    if (ml && !strncmp(path, md, ml) && path[ml] == '/') {
        p = path + ml + 1;
    } else {
        const char *slash = strrchr(p, '/');
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

static uint32_t hstr(uint32_t h, const char *s)
{
    return hash_fnv1a(s ? s : "", s ? strlen(s) + 1 : 1, h);
}

static void feat_hash(struct models_def *d)
{
    uint32_t h = HASH_FNV_INIT;
    h = hash_fnv1a(&d->ncols, sizeof d->ncols, h);
    for (int i = 0; i < d->nfeats; i++) {
        const struct models_feature *f = &d->feats[i];
        int k[3] = { (int)f->src, (int)f->stat, f->ncols };
        h = hash_fnv1a(k, sizeof k, h);
        h = hstr(h, f->name);
        for (int j = 0; j < f->nvalues; j++)
            h = hstr(h, f->values[j]);
    }
    /* a feature function's body is code: two sources with functions read the
     * same vectors only when they are the same source */
    if (d->nfn)
        h = hash_fnv1a(&d->hash, sizeof d->hash, h);
    d->feat_hash = h;
}

static void validate(lua_State *L, struct pctx *v, struct models_def *d)
{
    static const char *const keys[] = { "id", "name", "description", "owner", "tags", "label",
                                        "features", "algorithm", "params", "retrain", "window",
                                        "validation", "min_positives", "max_rows", "promote", NULL };
    check_keys(L, v, keys, "", "model table", 0);
    char idb[160];
    d->id = get_str(L, v, "id", "id");
    if (!d->id) {
        default_id(v->path, idb, sizeof idb);
        d->id = xdup(idb);
    }
    if (!id_valid(d->id))
        perr(v, "id", "id '%s' must be 1-128 characters of A-Z a-z 0-9 _ - . : @, not starting "
             "with '.'", d->id);
    d->name = get_str(L, v, "name", "name");
    if (!d->name)
        d->name = xdup(d->id);
    d->description = get_str(L, v, "description", "description");
    parse_label(L, v, d);
    parse_features(L, v, d);
    parse_algorithm(L, v, d);
    d->retrain = get_duration(L, v, "retrain", "retrain", 0);
    int64_t dflt = d->label.kind == MODELS_LABEL_EVENT ? 90 * 86400LL : 4 * d->label.within;
    d->window = get_duration(L, v, "window", "window", dflt);
    if (d->label.within && d->window < 2 * d->label.within)
        perr(v, "window", "window must be at least twice label.within: examples need their "
             "outcome window closed, and validation needs its own");
    if (d->label.kind != MODELS_LABEL_EVENT && d->label.every &&
        d->window < d->label.within + 2 * d->label.every)
        perr(v, "window", "window is too short for two snapshots: it must cover label.within "
             "plus twice label.every");
    d->validation = get_num(L, v, "validation", "validation", 0.2, 0.05, 0.5, 0);
    d->min_positives = (long)get_num(L, v, "min_positives", "min_positives", 50, 1, 1e9, 1);
    d->max_rows = (long)get_num(L, v, "max_rows", "max_rows", 2000000, 0, 1e9, 1);
    char *prom = get_str(L, v, "promote", "promote");
    if (prom && strcmp(prom, "auto") && strcmp(prom, "manual"))
        perr(v, "promote", "promote must be \"auto\" (a new version goes live when it is not "
             "worse than the live one) or \"manual\"");
    d->manual_promote = prom && !strcmp(prom, "manual");
    free(prom);
    d->hash = hash_fnv1a(v->src, v->len, HASH_FNV_INIT);
    feat_hash(d);
}

int models_parse(struct luavm *vm, const char *path, const char *src, size_t len, json_t *errors,
                 struct models_def **out, int *table_ref)
{
    lua_State *L = luavm_state(vm);
    int top = lua_gettop(L);
    struct pctx v = { .path = path, .src = src, .len = len, .errors = errors };
    *out = NULL;
    if (table_ref)
        *table_ref = LUA_NOREF;
    if (len > MODELS_MAX_FILE_BYTES) {
        perr(&v, NULL, "file larger than %d bytes", MODELS_MAX_FILE_BYTES);
        return ERR_TOOBIG;
    }
    if (memchr(src, 0, len)) {
        perr(&v, NULL, "file contains a NUL byte (binary files are not accepted)");
        return ERR_INVAL;
    }
    char err[1024];
    int rc = luavm_load_chunk(vm, path, src, len, err, sizeof err);
    if (rc) {
        size_t pl = strlen(path);
        if (!strncmp(err, path, pl) && err[pl] == ':' && err[pl + 1] >= '0' && err[pl + 1] <= '9')
            json_array_append_new(errors, json_string(err));
        else
            perr(&v, NULL, "%s", err);
        return rc;
    }
    if (!lua_istable(L, -1)) {
        perr(&v, NULL, "the file must return a table (return { label = ..., features = ... })");
        lua_settop(L, top);
        return ERR_INVAL;
    }
    struct models_def *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->path = xdup(path);
    validate(L, &v, d);
    if (v.nerr) {
        models_def_free(d);
        lua_settop(L, top);
        return ERR_INVAL;
    }
    if (table_ref)
        *table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    *out = d;
    return 0;
}

int models_fn_refs(lua_State *L, const struct models_def *d, int table_ref, int *refs)
{
    int top = lua_gettop(L), rc = 0;
    for (int i = 0; i < d->nfn; i++)
        refs[i] = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, table_ref);
    lua_getfield(L, -1, "features");
    for (int i = 0; i < d->nfeats && !rc; i++) {
        const struct models_feature *f = &d->feats[i];
        if (f->src != MODELS_SRC_FN)
            continue;
        lua_rawgeti(L, -1, i + 1);
        if (lua_istable(L, -1))
            lua_getfield(L, -1, "fn");
        else
            lua_pushnil(L);
        if (lua_isfunction(L, -1))
            refs[f->fn] = luaL_ref(L, LUA_REGISTRYINDEX);
        else {
            lua_pop(L, 1);
            rc = ERR_INVAL;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    if (rc)
        for (int i = 0; i < d->nfn; i++)
            if (refs[i] != LUA_NOREF) {
                luaL_unref(L, LUA_REGISTRYINDEX, refs[i]);
                refs[i] = LUA_NOREF;
            }
    return rc;
}

static struct luavm *scratch_vm(void)
{
    long budget = g_app ? g_app->cfg.instr_budget : 0;
    struct luavm_opts o = { .mem_limit = 256u << 20, .instr_budget = budget };
    struct luavm *vm;
    return luavm_new(&o, &vm) ? NULL : vm;
}

int models_validate_source(const char *path, const char *src, size_t len, json_t *errors,
                           struct models_def **out)
{
    struct models_def *tmp = NULL;
    struct luavm *vm = scratch_vm();
    if (!vm) {
        json_array_append_new(errors, json_string("out of memory"));
        return ERR_NOMEM;
    }
    int rc = models_parse(vm, path, src, len, errors, out ? out : &tmp, NULL);
    models_def_free(tmp);
    luavm_free(vm);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* promod check                                                            */

static int check_one(const char *path, int *nfiles)
{
    size_t len;
    int rc;
    char *src = file_read_all(path, MODELS_MAX_FILE_BYTES, &len, &rc);
    (*nfiles)++;
    if (!src) {
        printf("%s:1: cannot read: %s\n", path, rc < 0 && rc > -4096 ? strerror(-rc) : err_str(rc));
        return 1;
    }
    json_t *errors = json_array();
    models_validate_source(path, src, len, errors, NULL);
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
        printf("%s\n", json_string_value(e));
    int n = (int)json_array_size(errors);
    json_decref(errors);
    free(src);
    return n;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int check_dir(const char *dir, int *nfiles, int depth)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return 0;
    char **names = NULL;
    int n = 0, cap = 0, problems = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn)
                break;
            names = nn;
        }
        names[n++] = xdup(de->d_name);
    }
    closedir(dp);
    if (n > 1)
        qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) {
            free(names[i]);
            continue;
        }
        struct stat st;
        size_t l = strlen(names[i]);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth < 8)
            problems += check_dir(p, nfiles, depth + 1);
        else if (l > 4 && !strcmp(names[i] + l - 4, ".lua") && stat(p, &st) == 0 &&
                 S_ISREG(st.st_mode))
            problems += check_one(p, nfiles);
        free(names[i]);
    }
    free(names);
    return problems;
}

int models_check_paths(const char **paths, int n, int *nfiles)
{
    int problems = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode))
            problems += check_dir(paths[i], nfiles, 0);
        else
            problems += check_one(paths[i], nfiles);
    }
    return problems;
}
