/* models_feat.c — the feature vector of a profile and a context.
 *
 * One function reads features for training (insight/train_data.c builds p
 * with the profile as stored and p.stats as it was at the example's time)
 * and for serving (decide's own p and ctx), so the two cannot drift apart.
 * It reads the Lua tables through lua_getfield, which honours read-only
 * proxies the way a hook's own p.x does: a hook may hand promo.predict the
 * read-only view of p or ctx it was given (a userdata whose metatable's
 * __index is the table it reads, nested tables being views in turn). */
#include "engine/models.h"
#include "base/err.h"
#include "lua/luavm.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Can lua_getfield read the value at idx without raising: a table, or a
 * userdata whose metatable has an __index (a read-only view)? */
static int readable(lua_State *L, int idx)
{
    if (lua_istable(L, idx))
        return 1;
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return 0;
    lua_getfield(L, -1, "__index");
    int ok = !lua_isnil(L, -1);
    lua_pop(L, 2);
    return ok;
}

/* Push the value at `path` below the table at `idx` (nil when a step is
 * not a table or a view). */
static void push_path(lua_State *L, int idx, char *const *path, int n)
{
    if (!idx) {
        lua_pushnil(L);
        return;
    }
    lua_pushvalue(L, idx);
    for (int i = 0; i < n; i++) {
        if (!readable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_getfield(L, -1, path[i]);
        lua_remove(L, -2);
    }
}

static int builtin_kind(const char *t)
{
    static const char *k[] = { "impression", "click", "conversion", "send", "open", "dismiss" };
    for (int i = 0; i < 6; i++)
        if (!strcmp(t, k[i]))
            return 1;
    return 0;
}

/* A number field of the table at idx (NaN when absent or not a number). */
static double num_field(lua_State *L, int idx, const char *k)
{
    if (!idx)
        return NAN;
    lua_getfield(L, idx, k);
    double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
    lua_pop(L, 1);
    return v;
}

static double sub_field(lua_State *L, int idx, const char *sub, const char *k)
{
    if (!idx)
        return NAN;
    lua_getfield(L, idx, sub);
    double v = NAN;
    if (readable(L, -1)) {
        lua_getfield(L, -1, k);
        v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return v;
}

static double days_since(int64_t now, double ts)
{
    return isnan(ts) ? NAN : ((double)now - ts) / 86400.0;
}

static double zero_if_nan(double v)
{
    return isnan(v) ? 0 : v;
}

/* The p.stats behaviour of feature f; `st` is the stats table's index or 0. */
static double stat_value(lua_State *L, int st, const struct models_feature *f, int64_t now)
{
    switch (f->stat) {
    case MODELS_STAT_COUNT:
        return zero_if_nan(builtin_kind(f->stat_type) ? num_field(L, st, f->stat_type)
                                                      : sub_field(L, st, "custom", f->stat_type));
    case MODELS_STAT_DAYS_SINCE:
        return days_since(now, sub_field(L, st, "last", f->stat_type));
    case MODELS_STAT_EVENTS:
        return zero_if_nan(num_field(L, st, "events"));
    case MODELS_STAT_REVENUE:
    case MODELS_STAT_MONETARY:
        return zero_if_nan(num_field(L, st, "revenue"));
    case MODELS_STAT_FREQUENCY:
        return zero_if_nan(num_field(L, st, "conversion"));
    case MODELS_STAT_RECENCY:
        return days_since(now, num_field(L, st, "last_conversion"));
    case MODELS_STAT_TENURE:
        return days_since(now, num_field(L, st, "first_seen"));
    case MODELS_STAT_IDLE:
        return days_since(now, num_field(L, st, "last_seen"));
    }
    return NAN;
}

static void bad_type(struct models_feat_err *fe, const struct models_def *d, int i, lua_State *L,
                     int t)
{
    fe->nbad++;
    fe->bad[i] = 1;
    if (fe->feature < 0) {
        const struct models_feature *f = &d->feats[i];
        fe->feature = i;
        fe->wrong_type = 1;
        snprintf(fe->got, sizeof fe->got, "%s", lua_typename(L, t));
        snprintf(fe->msg, sizeof fe->msg, "feature '%s' expects %s, got a %s", f->name,
                 f->nvalues ? "a string (one of its values)" : "a number or a boolean",
                 lua_typename(L, t));
    }
}

/* The value on top of the stack into f's columns; pops it. */
static void to_columns(lua_State *L, const struct models_def *d, int i, float *x,
                       struct models_feat_err *fe)
{
    const struct models_feature *f = &d->feats[i];
    float *c = x + f->col;
    int t = lua_type(L, -1);
    if (f->nvalues) {
        if (t == LUA_TSTRING) {
            const char *s = lua_tostring(L, -1);
            for (int k = 0; k < f->nvalues; k++)
                c[k] = !strcmp(s, f->values[k]) ? 1.0f : 0.0f;
        } else {
            for (int k = 0; k < f->nvalues; k++)
                c[k] = NAN;
            if (t != LUA_TNIL)
                bad_type(fe, d, i, L, t);
        }
    } else if (t == LUA_TNUMBER) {
        double v = lua_tonumber(L, -1);
        if (isfinite(v) && fabs(v) < 3.0e38) {
            c[0] = (float)v;
        } else {
            c[0] = NAN;
            bad_type(fe, d, i, L, t);
        }
    } else if (t == LUA_TBOOLEAN) {
        c[0] = lua_toboolean(L, -1) ? 1.0f : 0.0f;
    } else {
        c[0] = NAN;
        if (t != LUA_TNIL)
            bad_type(fe, d, i, L, t);
    }
    lua_pop(L, 1);
}

int models_features(struct luavm *vm, const struct models_def *d, const int *fn_refs, int p_idx,
                    int ctx_idx, int64_t now, float *x, struct models_feat_err *fe)
{
    lua_State *L = luavm_state(vm);
    int top = lua_gettop(L);
    fe->feature = -1;
    fe->wrong_type = fe->failed = 0;
    fe->nbad = 0;
    fe->msg[0] = 0;
    fe->got[0] = 0;
    memset(fe->bad, 0, sizeof fe->bad);
    int st = 0; /* p.stats, fetched on the first stats feature */
    int have_st = 0;
    int have_seg = 0; /* segment features computed */
    for (int i = 0; i < d->nfeats; i++) {
        const struct models_feature *f = &d->feats[i];
        switch (f->src) {
        case MODELS_SRC_ATTR:
            push_path(L, p_idx, f->path, f->npath);
            to_columns(L, d, i, x, fe);
            break;
        case MODELS_SRC_CTX:
            push_path(L, ctx_idx, f->path, f->npath);
            to_columns(L, d, i, x, fe);
            break;
        case MODELS_SRC_STATS:
            if (!have_st) {
                lua_getfield(L, p_idx, "stats");
                if (readable(L, -1))
                    st = lua_gettop(L);
                else
                    lua_pop(L, 1);
                have_st = 1;
            }
            x[f->col] = (float)stat_value(L, st, f, now);
            break;
        case MODELS_SRC_FN: {
            int ref = fn_refs ? fn_refs[f->fn] : LUA_NOREF;
            if (ref == LUA_NOREF || ref == LUA_REFNIL) {
                fe->failed = 1;
                fe->feature = i;
                snprintf(fe->msg, sizeof fe->msg, "feature '%s': function not loaded", f->name);
                lua_settop(L, top);
                return ERR_LUA;
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
            lua_pushvalue(L, p_idx);
            if (ctx_idx)
                lua_pushvalue(L, ctx_idx);
            else
                lua_pushnil(L);
            char err[200];
            int rc = luavm_call_ref(vm, ref, 2, 1, err, sizeof err);
            if (rc) {
                fe->failed = 1;
                fe->feature = i;
                snprintf(fe->msg, sizeof fe->msg, "feature '%s': %s", f->name, err);
                lua_settop(L, top);
                return rc;
            }
            to_columns(L, d, i, x, fe);
            break;
        }
        case MODELS_SRC_SEGMENT:
            /* every segment feature at once, on the first (models_seg.c);
             * a p that cannot be read as a view leaves them missing */
            if (!have_seg) {
                have_seg = 1;
                if (models_segment_features(L, d, p_idx, now, x))
                    for (int k = 0; k < d->nfeats; k++)
                        if (d->feats[k].src == MODELS_SRC_SEGMENT)
                            x[d->feats[k].col] = NAN;
            }
            break;
        }
    }
    lua_settop(L, top);
    return 0;
}

/* The category feature f had in x: its index, -1 missing, -2 another value. */
static int category_of(const struct models_feature *f, const float *x)
{
    if (isnan(x[f->col]))
        return -1;
    for (int k = 0; k < f->nvalues; k++)
        if (x[f->col + k] == 1.0f)
            return k;
    return -2;
}

void models_feature_push_value(lua_State *L, const struct models_def *d, int i, const float *x)
{
    const struct models_feature *f = &d->feats[i];
    if (f->nvalues) {
        int k = category_of(f, x);
        if (k >= 0)
            lua_pushstring(L, f->values[k]);
        else if (k == -2)
            lua_pushliteral(L, "(other)");
        else
            lua_pushnil(L);
    } else if (isnan(x[f->col])) {
        lua_pushnil(L);
    } else {
        lua_pushnumber(L, x[f->col]);
    }
}

json_t *models_feature_value_json(const struct models_def *d, int i, const float *x)
{
    const struct models_feature *f = &d->feats[i];
    if (f->nvalues) {
        int k = category_of(f, x);
        return k >= 0 ? json_string(f->values[k]) : k == -2 ? json_string("(other)") : json_null();
    }
    return isnan(x[f->col]) ? json_null() : json_real(x[f->col]);
}

/* Every key models_features may look up for d: its paths, its stats
 * types, and the fixed names of p.stats. */
static void anchor_add(lua_State *L, int t, int *n, const char *k)
{
    lua_pushstring(L, k);
    lua_rawseti(L, t, ++*n);
}

int models_anchor_keys(lua_State *L, const struct models_def *d)
{
    static const char *const fixed[] = { "stats", "custom", "last", "events", "revenue",
                                         "conversion", "last_conversion", "first_seen",
                                         "last_seen", "impression", "click", "send", "open",
                                         "dismiss", "id", NULL };
    lua_createtable(L, 32, 0);
    int t = lua_gettop(L), n = 0;
    for (int i = 0; fixed[i]; i++)
        anchor_add(L, t, &n, fixed[i]);
    for (int i = 0; i < d->nfeats; i++) {
        const struct models_feature *f = &d->feats[i];
        for (int k = 0; k < f->npath; k++)
            anchor_add(L, t, &n, f->path[k]);
        if (f->stat_type)
            anchor_add(L, t, &n, f->stat_type);
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}
