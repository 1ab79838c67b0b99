/*
 * ruletest.c — campaign tests (ruletest.h): the test API the files see, the
 * hook calls behind it, running files and collecting results, the CLI.
 *
 * The API is C functions published as globals of the run's own sandbox
 * (luavm_register), so test files and campaign files see them and the
 * server's workers never do.  A hook is called with luavm_call from inside
 * the test's own protected call, so read-only views, budgets and
 * "file:line: message" errors are the sandbox's; an error in a hook is
 * raised again at the test line that called it, with the hook's own
 * location in the message.
 */
#include "engine/ruletest.h"
#include "base/buf.h"
#include "base/config.h"
#include "base/err.h"
#include "base/hash.h"
#include "engine/content.h"
#include "engine/rules.h"
#include "lua/luavm.h"
#include <dirent.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RT_INSTR_BUDGET 50000000L /* per test: loops over fixtures are fine */
#define RT_TIME_MS 5000
#define RT_MAX_FILES 4096

struct rt_camp {
    const char *path;
    const char *src;
    size_t len;
    int ref;                  /* registry ref of the campaign's table, LUA_NOREF when it failed */
    struct rules_campaign pc; /* as validated */
};

struct rt {
    struct luavm *vm;
    struct rt_camp *c;
    int n;
    json_t *tests, *errors;
    int passed, failed;
    int reg_ref; /* the tests the file being loaded registers: { {name, fn}, ... } */
};

static struct rt *rt_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* --- describing and comparing values ------------------------------------- */

static void describe(lua_State *L, int idx, char *out, size_t len)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL: snprintf(out, len, "nil"); break;
    case LUA_TBOOLEAN: snprintf(out, len, "%s", lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER: snprintf(out, len, "%.17g", lua_tonumber(L, idx)); break;
    case LUA_TSTRING: snprintf(out, len, "\"%.200s\"", lua_tostring(L, idx)); break;
    case LUA_TTABLE: {
        int e;
        json_t *j = luavm_to_json(L, idx, &e);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        snprintf(out, len, "%.300s", s ? s : "a table");
        free(s);
        json_decref(j);
        break;
    }
    default: snprintf(out, len, "a %s", luaL_typename(L, idx));
    }
}

/* Values equal: primitives by value, tables by content (keys and values,
 * recursively, at most 32 deep). */
static int deep_eq(lua_State *L, int a, int b, int depth)
{
    if (lua_rawequal(L, a, b))
        return 1;
    if (lua_type(L, a) != LUA_TTABLE || lua_type(L, b) != LUA_TTABLE || depth > 32)
        return 0;
    lua_checkstack(L, 6);
    int na = 0, nb = 0, eq = 1;
    lua_pushnil(L);
    while (eq && lua_next(L, a)) {
        na++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        int top = lua_gettop(L);
        eq = !lua_isnil(L, -1) && deep_eq(L, top - 1, top, depth + 1);
        lua_pop(L, 2);
    }
    if (!eq) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, b)) {
        nb++;
        lua_pop(L, 1);
    }
    return na == nb;
}

static int fail_cmp(lua_State *L, int got, int want, const char *how)
{
    char g[400], w[400];
    describe(L, got, g, sizeof g);
    describe(L, want, w, sizeof w);
    return luaL_error(L, "expected %s%s%s, got %s", how, how[0] ? " " : "", w, g);
}

/* --- expect(x).to_be(y) and assert_eq ------------------------------------- */

#define X lua_upvalueindex(1)

static int l_to_be(lua_State *L)
{
    lua_settop(L, 1);
    if (!deep_eq(L, X, 1, 0)) {
        lua_pushvalue(L, X);
        return fail_cmp(L, 2, 1, "");
    }
    return 0;
}

static int l_to_be_truthy(lua_State *L)
{
    if (!lua_toboolean(L, X)) {
        char g[400];
        describe(L, X, g, sizeof g);
        return luaL_error(L, "expected a true value, got %s", g);
    }
    return 0;
}

static int l_to_be_falsy(lua_State *L)
{
    if (lua_toboolean(L, X)) {
        char g[400];
        describe(L, X, g, sizeof g);
        return luaL_error(L, "expected false or nil, got %s", g);
    }
    return 0;
}

static int l_to_be_nil(lua_State *L)
{
    if (!lua_isnil(L, X)) {
        char g[400];
        describe(L, X, g, sizeof g);
        return luaL_error(L, "expected nil, got %s", g);
    }
    return 0;
}

static int cmp_num(lua_State *L, int op)
{
    lua_settop(L, 2);
    double y = luaL_checknumber(L, 1);
    if (lua_type(L, X) != LUA_TNUMBER) {
        lua_pushvalue(L, X);
        return fail_cmp(L, 3, 1, "a number compared with");
    }
    double x = lua_tonumber(L, X), eps = luaL_optnumber(L, 2, 1e-9);
    int ok = op == 0 ? fabs(x - y) <= eps : op > 0 ? x > y : x < y;
    if (!ok) {
        lua_pushvalue(L, X);
        return fail_cmp(L, 3, 1, op == 0 ? "a value near" : op > 0 ? "more than" : "less than");
    }
    return 0;
}

static int l_to_be_near(lua_State *L) { return cmp_num(L, 0); }
static int l_to_be_above(lua_State *L) { return cmp_num(L, 1); }
static int l_to_be_below(lua_State *L) { return cmp_num(L, -1); }

static int l_to_contain(lua_State *L)
{
    lua_settop(L, 1);
    if (lua_type(L, X) == LUA_TSTRING && lua_type(L, 1) == LUA_TSTRING) {
        if (strstr(lua_tostring(L, X), lua_tostring(L, 1)))
            return 0;
    } else if (lua_type(L, X) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, X)) {
            if (deep_eq(L, lua_gettop(L), 1, 0))
                return 0;
            lua_pop(L, 1);
        }
    }
    lua_pushvalue(L, X);
    return fail_cmp(L, 2, 1, "a string or list containing");
}

#undef X

static int l_expect(lua_State *L)
{
    lua_settop(L, 1);
    static const struct { const char *name; lua_CFunction fn; } m[] = {
        { "to_be", l_to_be },           { "to_equal", l_to_be },
        { "to_be_truthy", l_to_be_truthy }, { "to_be_falsy", l_to_be_falsy },
        { "to_be_nil", l_to_be_nil },   { "to_be_near", l_to_be_near },
        { "to_be_above", l_to_be_above }, { "to_be_below", l_to_be_below },
        { "to_contain", l_to_contain },
    };
    lua_createtable(L, 0, (int)(sizeof m / sizeof m[0]));
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        lua_pushvalue(L, 1);
        lua_pushcclosure(L, m[i].fn, 1);
        lua_setfield(L, -2, m[i].name);
    }
    return 1;
}

static int l_assert_eq(lua_State *L)
{
    lua_settop(L, 3);
    if (!deep_eq(L, 1, 2, 0)) {
        char g[400], w[400];
        describe(L, 1, g, sizeof g);
        describe(L, 2, w, sizeof w);
        return luaL_error(L, "%s%sexpected %s, got %s", lua_isstring(L, 3) ? lua_tostring(L, 3) : "",
                          lua_isstring(L, 3) ? ": " : "", w, g);
    }
    return 0;
}

/* test(name, fn): run after the file's top level, each on its own */
static int l_test(lua_State *L)
{
    struct rt *rt = rt_of(L);
    luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (rt->reg_ref == LUA_NOREF)
        return luaL_error(L, "test() is called at a file's top level");
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->reg_ref);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
    return 0;
}

/* --- the campaign object ------------------------------------------------- */

/* Arguments (self, p, ctx, ...): absolute indices of p and ctx, empty
 * tables when not given. */
static void args_p_ctx(lua_State *L, int *p, int *ctx)
{
    if (lua_gettop(L) < 3)
        lua_settop(L, 3);
    for (int i = 2; i <= 3; i++) {
        if (lua_isnil(L, i)) {
            lua_newtable(L);
            lua_replace(L, i);
        } else if (!lua_istable(L, i)) {
            luaL_error(L, "%s must be a table (use c:method(p, ctx))", i == 2 ? "p" : "ctx");
        }
    }
    *p = 2;
    *ctx = 3;
}

static int camp_index(lua_State *L) { return (int)lua_tointeger(L, lua_upvalueindex(2)); }

/* Push hook `name` of campaign ci: 1, or 0 (nothing pushed) when absent. */
static int push_hook(lua_State *L, struct rt *rt, int ci, const char *name)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->c[ci].ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    if (lua_isfunction(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

static void call_hook(lua_State *L, struct rt *rt, int ci, const char *hook, int nargs, int nret)
{
    char err[600];
    if (luavm_call(rt->vm, nargs, nret, err, sizeof err))
        luaL_error(L, "%s of \"%s\" failed: %s", hook, rt->c[ci].pc.id, err);
}

/* eligible: 1 / 0 with the reason in `why` */
static int do_eligible(lua_State *L, struct rt *rt, int ci, int p, int ctx, char *why, size_t wl)
{
    why[0] = 0;
    if (!push_hook(L, rt, ci, "eligible"))
        return 1;
    luavm_push_readonly(L, p, "profile");
    luavm_push_readonly(L, ctx, "ctx");
    call_hook(L, rt, ci, "eligible", 2, 2);
    int t = lua_type(L, -2), ok = t == LUA_TBOOLEAN && lua_toboolean(L, -2);
    if (!ok && t != LUA_TBOOLEAN && t != LUA_TNIL)
        return luaL_error(L, "eligible of \"%s\" must return true or false (got a %s)",
                          rt->c[ci].pc.id, lua_typename(L, t));
    if (!ok && lua_type(L, -1) == LUA_TSTRING)
        snprintf(why, wl, "%s", lua_tostring(L, -1));
    lua_pop(L, 2);
    return ok;
}

static double do_score(lua_State *L, struct rt *rt, int ci, int p, int ctx)
{
    if (!push_hook(L, rt, ci, "score"))
        return rt->c[ci].pc.priority;
    luavm_push_readonly(L, p, "profile");
    luavm_push_readonly(L, ctx, "ctx");
    call_hook(L, rt, ci, "score", 2, 1);
    double s = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(s))
        luaL_error(L, "score of \"%s\" must return a finite number", rt->c[ci].pc.id);
    lua_pop(L, 1);
    return s;
}

/* The variant decide would serve: the content hook's choice, else the
 * stable weighted bucketing of p.id; -1 when the campaign has none. */
static int do_variant(lua_State *L, struct rt *rt, int ci, int p, int ctx)
{
    const struct rules_campaign *c = &rt->c[ci].pc;
    if (c->nvariants == 0)
        return -1;
    if (push_hook(L, rt, ci, "content")) {
        luavm_push_readonly(L, p, "profile");
        luavm_push_readonly(L, ctx, "ctx");
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->c[ci].ref);
        lua_getfield(L, -1, "variants");
        lua_remove(L, -2);
        call_hook(L, rt, ci, "content", 3, 1);
        if (lua_istable(L, -1)) {
            lua_pushliteral(L, "id");
            lua_rawget(L, -2);
            lua_remove(L, -2);
        }
        const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        for (int i = 0; id && i < c->nvariants; i++)
            if (!strcmp(c->variants[i].id, id)) {
                lua_pop(L, 1);
                return i;
            }
        return luaL_error(L, "content of \"%s\" must return one of the variants (or its id)", c->id);
    }
    lua_getfield(L, p, "id");
    const char *cust = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
    double u = hash_bucket(cust, strlen(cust), c->id, strlen(c->id)) * c->weight_sum, acc = 0;
    lua_pop(L, 1);
    for (int i = 0; i < c->nvariants; i++) {
        acc += c->variants[i].weight;
        if (u < acc)
            return i;
    }
    return c->nvariants - 1;
}

/* Push variant vi's content rendered against p (the locale from
 * ctx.locale or p.locale, as decide picks it); `loc` gets the locale. */
static void push_content(lua_State *L, struct rt *rt, int ci, int vi, int p, int ctx, char *loc)
{
    const struct rules_campaign *c = &rt->c[ci].pc;
    loc[0] = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->c[ci].ref);
    lua_getfield(L, -1, "variants");
    lua_rawgeti(L, -1, vi + 1);
    lua_getfield(L, -1, "content");
    lua_replace(L, -4);
    lua_pop(L, 2);
    if (lua_isnil(L, -1))
        return; /* nil content: pushed */
    struct content_locale lr = { 0 };
    content_locale_lookup(L, p, ctx, NULL, &lr);
    char fmt[I18N_TAG_MAX];
    const char *from;
    int li = content_locale_pick(c->locales, c->nlocales, &lr, fmt, &from);
    if (c->nlocales) {
        content_push_localized(L, lua_gettop(L), c->locales, c->nlocales, li);
        lua_remove(L, -2);
        snprintf(loc, I18N_TAG_MAX, "%s", c->locales[li]);
    }
    struct content_prog *prog = content_compile(L, lua_gettop(L), 0);
    lua_pop(L, 1);
    if (!prog)
        luaL_error(L, "out of memory");
    struct content_scratch cs = { .locale = fmt, .tz = lr.tz[0] ? lr.tz : NULL };
    struct buf out = { 0 };
    int rc = content_render(prog, L, p, &cs, &out);
    content_free(prog);
    buf_free(&cs.text);
    buf_free(&cs.val);
    json_t *j = rc ? NULL : json_loadb(out.p ? out.p : "null", out.p ? out.len : 4, JSON_DECODE_ANY, NULL);
    buf_free(&out);
    if (!j)
        luaL_error(L, "content of \"%s\" variant \"%s\" could not be rendered: %s", c->id,
                   c->variants[vi].id, err_str(rc ? rc : ERR_INVAL));
    rc = luavm_push_json(L, j);
    json_decref(j);
    if (rc)
        luaL_error(L, "content of \"%s\" is too deep", c->id);
}

static int m_eligible(lua_State *L)
{
    int p, ctx;
    args_p_ctx(L, &p, &ctx);
    char why[256];
    int ok = do_eligible(L, rt_of(L), camp_index(L), p, ctx, why, sizeof why);
    lua_pushboolean(L, ok);
    if (ok || !why[0])
        return 1;
    lua_pushstring(L, why);
    return 2;
}

static int m_score(lua_State *L)
{
    int p, ctx;
    args_p_ctx(L, &p, &ctx);
    lua_pushnumber(L, do_score(L, rt_of(L), camp_index(L), p, ctx));
    return 1;
}

static int m_variant(lua_State *L)
{
    int p, ctx;
    args_p_ctx(L, &p, &ctx);
    struct rt *rt = rt_of(L);
    int ci = camp_index(L), vi = do_variant(L, rt, ci, p, ctx);
    if (vi < 0)
        lua_pushnil(L);
    else
        lua_pushstring(L, rt->c[ci].pc.variants[vi].id);
    return 1;
}

static int m_throttle(lua_State *L)
{
    lua_settop(L, 4);
    int p, ctx;
    args_p_ctx(L, &p, &ctx);
    struct rt *rt = rt_of(L);
    int ci = camp_index(L);
    if (!push_hook(L, rt, ci, "throttle")) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luavm_push_readonly(L, p, "profile");
    luavm_push_readonly(L, ctx, "ctx");
    if (lua_istable(L, 4))
        lua_pushvalue(L, 4);
    else
        lua_createtable(L, 0, 2);
    call_hook(L, rt, ci, "throttle", 3, 1);
    if (lua_type(L, -1) != LUA_TBOOLEAN)
        return luaL_error(L, "throttle of \"%s\" must return true or false", rt->c[ci].pc.id);
    return 1;
}

/* c:decide(p, ctx) -> offer {campaign, variant, score, content, locale?}
 * or nil, reason: what this campaign alone would offer. */
static int m_decide(lua_State *L)
{
    int p, ctx;
    args_p_ctx(L, &p, &ctx);
    struct rt *rt = rt_of(L);
    int ci = camp_index(L);
    char why[256];
    if (!do_eligible(L, rt, ci, p, ctx, why, sizeof why)) {
        lua_pushnil(L);
        lua_pushstring(L, why[0] ? why : "not eligible");
        return 2;
    }
    double s = do_score(L, rt, ci, p, ctx);
    int vi = do_variant(L, rt, ci, p, ctx);
    lua_createtable(L, 0, 5);
    int o = lua_gettop(L);
    lua_pushstring(L, rt->c[ci].pc.id);
    lua_setfield(L, o, "campaign");
    lua_pushnumber(L, s);
    lua_setfield(L, o, "score");
    if (vi >= 0) {
        char loc[I18N_TAG_MAX];
        lua_pushstring(L, rt->c[ci].pc.variants[vi].id);
        lua_setfield(L, o, "variant");
        push_content(L, rt, ci, vi, p, ctx, loc);
        lua_setfield(L, o, "content");
        if (loc[0]) {
            lua_pushstring(L, loc);
            lua_setfield(L, o, "locale");
        }
    }
    return 1;
}

static void push_camp_obj(lua_State *L, struct rt *rt, int ci)
{
    static const struct { const char *name; lua_CFunction fn; } m[] = {
        { "eligible", m_eligible }, { "score", m_score },       { "variant", m_variant },
        { "decide", m_decide },     { "throttle", m_throttle },
    };
    lua_createtable(L, 0, 8);
    lua_pushstring(L, rt->c[ci].pc.id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, rt->c[ci].pc.name ? rt->c[ci].pc.name : rt->c[ci].pc.id);
    lua_setfield(L, -2, "name");
    lua_pushnumber(L, rt->c[ci].pc.priority);
    lua_setfield(L, -2, "priority");
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        lua_pushlightuserdata(L, rt);
        lua_pushinteger(L, ci);
        lua_pushcclosure(L, m[i].fn, 2);
        lua_setfield(L, -2, m[i].name);
    }
}

static int l_campaign(lua_State *L)
{
    struct rt *rt = rt_of(L);
    const char *id = luaL_checkstring(L, 1);
    for (int i = 0; i < rt->n; i++)
        if (rt->c[i].ref != LUA_NOREF && !strcmp(rt->c[i].pc.id, id)) {
            push_camp_obj(L, rt, i);
            return 1;
        }
    return luaL_error(L, "no campaign \"%s\" loaded (%d campaign files given; see the errors "
                      "above for those that did not load)", id, rt->n);
}

/* --- running ------------------------------------------------------------- */

static void record(struct rt *rt, const char *file, const char *name, const char *err)
{
    json_t *t = json_pack("{s:s,s:s,s:b}", "file", file, "name", name, "ok", err == NULL);
    if (err)
        json_object_set_new(t, "error", json_string(err));
    json_array_append_new(rt->tests, t);
    if (err)
        rt->failed++;
    else
        rt->passed++;
}

/* Run the function on top of the stack (with `nargs` arguments above it)
 * as a test. */
static void run_one(struct rt *rt, const char *file, const char *name, int nargs)
{
    char err[700];
    int rc = luavm_call(rt->vm, nargs, 0, err, sizeof err);
    record(rt, file, name, rc ? err : NULL);
}

static void run_test_file(struct rt *rt, const struct ruletest_src *f)
{
    lua_State *L = luavm_state(rt->vm);
    lua_newtable(L);
    rt->reg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    char err[700];
    int rc = luavm_load_chunk(rt->vm, f->path, f->src, f->len, err, sizeof err);
    if (rc) {
        json_array_append_new(rt->errors, json_string(err));
        record(rt, f->path, "(file)", err);
    } else {
        lua_pop(L, 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->reg_ref);
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            lua_rawgeti(L, -1, 1);
            char name[200];
            snprintf(name, sizeof name, "%s", lua_tostring(L, -1));
            lua_pop(L, 1);
            lua_rawgeti(L, -1, 2);
            lua_remove(L, -2);
            run_one(rt, f->path, name, 0);
        }
        lua_pop(L, 1);
        if (n == 0) /* top-level asserts only: the file is the test */
            record(rt, f->path, "(file)", NULL);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, rt->reg_ref);
    rt->reg_ref = LUA_NOREF;
}

/* A campaign's own `tests = { name = function(c) ... end }` */
static void run_inline(struct rt *rt, int ci)
{
    lua_State *L = luavm_state(rt->vm);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->c[ci].ref);
    lua_getfield(L, -1, "tests");
    lua_remove(L, -2);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            char name[200];
            if (lua_type(L, -2) == LUA_TSTRING)
                snprintf(name, sizeof name, "%s", lua_tostring(L, -2));
            else
                snprintf(name, sizeof name, "tests[%g]", lua_tonumber(L, -2));
            if (lua_isfunction(L, -1)) {
                push_camp_obj(L, rt, ci);
                run_one(rt, rt->c[ci].path, name, 1);
            } else {
                lua_pop(L, 1);
                char m[400];
                snprintf(m, sizeof m, "%s:%d: tests.%s must be a function(c)", rt->c[ci].path,
                         rules_line_of(rt->c[ci].src, rt->c[ci].len, "tests"), name);
                record(rt, rt->c[ci].path, name, m);
            }
        }
    }
    lua_pop(L, 1);
}

json_t *ruletest_run(const struct ruletest_src *camps, int ncamps,
                     const struct ruletest_src *tests, int ntests, const char *const *chans,
                     int nchans, const char *lib_dir)
{
    struct luavm_opts o = rules_vm_opts(NULL, lib_dir);
    o.instr_budget = RT_INSTR_BUDGET;
    o.call_time_ms = o.load_time_ms = RT_TIME_MS;
    o.log_per_sec = -1;
    struct rt rt = { .reg_ref = LUA_NOREF };
    if (luavm_new(&o, &rt.vm))
        return NULL;
    rt.c = calloc((size_t)ncamps + 1, sizeof *rt.c);
    rt.tests = json_array();
    rt.errors = json_array();
    json_t *out = NULL;
    if (!rt.c || !rt.tests || !rt.errors)
        goto done;
    lua_State *L = luavm_state(rt.vm);
    static const struct { const char *name; lua_CFunction fn; } api[] = {
        { "campaign", l_campaign }, { "test", l_test }, { "expect", l_expect },
        { "assert_eq", l_assert_eq },
    };
    for (size_t i = 0; i < sizeof api / sizeof api[0]; i++) {
        lua_pushlightuserdata(L, &rt);
        lua_pushcclosure(L, api[i].fn, 1);
        luavm_register(L, api[i].name);
    }
    for (int i = 0; i < ncamps; i++) {
        struct rt_camp *c = &rt.c[rt.n++];
        c->path = camps[i].path;
        c->src = camps[i].src;
        c->len = camps[i].len;
        c->ref = LUA_NOREF;
        json_t *errs = json_array();
        int rc = rules_validate_in(rt.vm, c->path, RULES_CAMPAIGN, camps[i].src, camps[i].len,
                                   chans, nchans, errs, &c->pc, NULL);
        char err[700];
        if (!rc && !luavm_load_chunk(rt.vm, c->path, camps[i].src, camps[i].len, err, sizeof err)) {
            c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        } else if (!rc) {
            json_array_append_new(errs, json_string(err));
        }
        if (c->ref == LUA_NOREF)
            rules_campaign_free(&c->pc);
        size_t k;
        json_t *e;
        json_array_foreach(errs, k, e) {
            json_array_append(rt.errors, e);
            record(&rt, c->path, "(load)", json_string_value(e));
        }
        json_decref(errs);
    }
    for (int i = 0; i < rt.n; i++)
        if (rt.c[i].ref != LUA_NOREF)
            run_inline(&rt, i);
    for (int i = 0; i < ntests; i++)
        run_test_file(&rt, &tests[i]);
    out = json_pack("{s:i,s:i,s:O,s:O}", "passed", rt.passed, "failed", rt.failed, "errors",
                    rt.errors, "tests", rt.tests);
done:
    for (int i = 0; i < rt.n; i++)
        if (rt.c[i].ref != LUA_NOREF)
            rules_campaign_free(&rt.c[i].pc);
    free(rt.c);
    json_decref(rt.tests);
    json_decref(rt.errors);
    luavm_free(rt.vm);
    return out;
}

/* --- the command line ------------------------------------------------------ */

struct rt_files {
    char *paths[RT_MAX_FILES];
    int n;
};

static void scan(const char *dir, int recurse, int depth, struct rt_files *camps,
                 struct rt_files *tests)
{
    DIR *d = depth > 16 ? NULL : opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st))
            continue;
        size_t n = strlen(e->d_name);
        if (S_ISDIR(st.st_mode)) {
            if (recurse && !(depth == 0 && !strcmp(e->d_name, "lib")))
                scan(p, recurse, depth + 1, camps, tests);
        } else if (S_ISREG(st.st_mode) && n > 4 && !strcmp(e->d_name + n - 4, ".lua")) {
            struct rt_files *l = rules_is_test_file(p) ? tests : camps;
            if (l->n < RT_MAX_FILES)
                l->paths[l->n++] = rules_xstrdup(p);
        }
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strip_slash(char *s)
{
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        s[--n] = 0;
}

int ruletest_cli(const struct config *cfg, const char *const *paths, int n, int need_tests)
{
    static struct rt_files camps, tests;
    camps.n = tests.n = 0;
    const char *def[1] = { cfg->rules_dir };
    if (n == 0) {
        paths = def;
        n = 1;
    }
    char lib_dir[4300] = "";
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s", paths[i]);
        strip_slash(p);
        struct stat st;
        if (stat(p, &st)) {
            fprintf(stderr, "promod test: %s: cannot read\n", p);
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            scan(p, 1, 0, &camps, &tests);
            char lib[4200];
            snprintf(lib, sizeof lib, "%s/lib", p);
            if (!lib_dir[0] && !stat(lib, &st) && S_ISDIR(st.st_mode))
                snprintf(lib_dir, sizeof lib_dir, "%s", lib);
        } else if (rules_is_test_file(p)) {
            tests.paths[tests.n++] = rules_xstrdup(p);
            char *slash = strrchr(p, '/');
            if (slash)
                *slash = 0;
            else
                snprintf(p, sizeof p, ".");
            struct rt_files none = { .n = 0 };
            scan(p, 0, 0, &camps, &none); /* the campaigns beside it */
            for (int k = 0; k < none.n; k++)
                free(none.paths[k]);
        } else {
            camps.paths[camps.n++] = rules_xstrdup(p);
        }
        if (camps.n >= RT_MAX_FILES - 1 || tests.n >= RT_MAX_FILES - 1)
            break;
    }
    if (!lib_dir[0])
        snprintf(lib_dir, sizeof lib_dir, "%s/lib", cfg->rules_dir);
    qsort(camps.paths, (size_t)camps.n, sizeof(char *), cmp_str);
    qsort(tests.paths, (size_t)tests.n, sizeof(char *), cmp_str);
    /* a campaign given twice (a directory and a file in it) loads once */
    int w = 0;
    for (int i = 0; i < camps.n; i++) {
        if (w && !strcmp(camps.paths[w - 1], camps.paths[i]))
            free(camps.paths[i]);
        else
            camps.paths[w++] = camps.paths[i];
    }
    camps.n = w;
    struct ruletest_src *cs = calloc((size_t)camps.n + 1, sizeof *cs);
    struct ruletest_src *ts = calloc((size_t)tests.n + 1, sizeof *ts);
    int status = 1, bad = 0;
    if (!cs || !ts) {
        fprintf(stderr, "promod test: out of memory\n");
        goto out;
    }
    for (int k = 0; k < 2; k++) {
        struct rt_files *l = k ? &tests : &camps;
        struct ruletest_src *s = k ? ts : cs;
        for (int i = 0; i < l->n; i++) {
            int rc;
            s[i].path = l->paths[i];
            s[i].src = rules_read_file(l->paths[i], &s[i].len, &rc);
            if (!s[i].src) {
                printf("%s:1: cannot read: %s\n", l->paths[i], err_str(rc));
                bad++;
                s[i].src = rules_xstrdup("");
                s[i].len = 0;
            }
        }
    }
    json_t *r = ruletest_run(cs, camps.n, ts, tests.n, NULL, 0, lib_dir);
    if (!r) {
        fprintf(stderr, "promod test: out of memory\n");
        goto out;
    }
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(r, "tests"), i, t) {
        if (!json_is_true(json_object_get(t, "ok")))
            printf("%s  [%s: %s]\n", json_string_value(json_object_get(t, "error")),
                   json_string_value(json_object_get(t, "file")),
                   json_string_value(json_object_get(t, "name")));
    }
    long passed = (long)json_integer_value(json_object_get(r, "passed"));
    long failed = (long)json_integer_value(json_object_get(r, "failed")) + bad;
    fprintf(stderr, "promod test: %d test files, %d campaigns, %ld passed, %ld failed\n", tests.n,
            camps.n, passed, failed);
    if (need_tests && passed + failed == 0)
        fprintf(stderr, "promod test: no tests found (files named *_test.lua, or a campaign's "
                        "tests = {...})\n");
    status = failed || (need_tests && passed + failed == 0) ? 1 : 0;
    json_decref(r);
out:
    for (int k = 0; k < 2; k++) {
        struct rt_files *l = k ? &tests : &camps;
        struct ruletest_src *s = k ? ts : cs;
        for (int j = 0; j < l->n; j++) {
            if (s)
                free((char *)s[j].src);
            free(l->paths[j]);
        }
        l->n = 0;
    }
    free(cs);
    free(ts);
    return status;
}
