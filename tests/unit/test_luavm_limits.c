/*
 * test_luavm_limits.c — the sandbox's holes of issue 13, each closed:
 * recursion through C functions (was SIGSEGV), xpcall's handler after a
 * kill (was an endless loop), time spent inside C functions (was
 * unmetered), one file keeping the state's memory (was every neighbour's
 * failure), log floods; plus the bounded pattern matcher held to LuaJIT's
 * own on a corpus.  Real LuaJIT states throughout; no timing asserts.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "lua/luavm.h"

static struct luavm *vm;
static lua_State *L;
static char err[512];

static void make_vm(const struct luavm_opts *o)
{
    if (vm)
        luavm_free(vm);
    cr_assert_eq(luavm_new(o, &vm), 0);
    L = luavm_state(vm);
}

static void setup(void)
{
    log_set_level(LOG_ERROR);
    /* generous time limits: instructions and memory must be what stops the
     * calls tested here, even in slow builds */
    struct luavm_opts o = { .call_time_ms = 600000, .load_time_ms = 600000 };
    make_vm(&o);
}

static void teardown(void)
{
    luavm_free(vm);
    vm = NULL;
}

TestSuite(luavm_limits, .init = setup, .fini = teardown, .timeout = 120);

static int run(const char *src)
{
    err[0] = '\0';
    int top = lua_gettop(L);
    int rc = luavm_load_chunk(vm, "t.lua", src, strlen(src), err, sizeof err);
    cr_assert_eq(lua_gettop(L), top + (rc == 0), "stack after load");
    if (rc == 0)
        lua_pop(L, 1);
    return rc;
}

#define OK(src) do { int rc_ = run(src); cr_assert_eq(rc_, 0, "%s\n-> %s", src, err); } while (0)
#define FAILS(src, code, sub) do {                                                   \
        int rc_ = run(src);                                                          \
        cr_assert_eq(rc_, code, "%s\n-> rc %d %s", src, rc_, err);                   \
        cr_assert_not_null(strstr(err, sub), "%s\n-> '%s' lacks '%s'", src, err, sub); \
    } while (0)

/* Load `body` as a function and call it (a hook, not a file load). */
static int call_fn(const char *body)
{
    char src[4096];
    snprintf(src, sizeof src, "return function() %s end", body);
    int top = lua_gettop(L);
    cr_assert_eq(luavm_load_chunk(vm, "fn.lua", src, strlen(src), err, sizeof err), 0, "%s", err);
    int rc = luavm_call(vm, 0, 0, err, sizeof err);
    cr_assert_eq(lua_gettop(L), top, "stack after call");
    return rc;
}

/* ------------------------------------------------------------------ */
/* 1. recursion through C functions                                    */

static const char *const c_recursions[] = {
    "local function f(s) return (string.gsub(s, '.', f)) end f('abc')",
    "local function f(s) return (('x'):gsub('x', f)) end f()",
    "local t = setmetatable({}, { __index = function(t, k) return (('x'):gsub('x', t)) end })"
    " local _ = t.x",
    "local t = setmetatable({}, { __tostring = function(s) return string.format('%s', s) end })"
    " tostring(t)",
    "local function f(a, b) table.sort({ 3, 2, 1 }, f) return a < b end table.sort({ 3, 2, 1 }, f)",
    "local t t = setmetatable({}, { __index = function() return os.time(t) end }) os.time(t)",
    "local function r() return load(r) end load(r)",
};

Test(luavm_limits, recursion_through_c_is_an_error_not_a_crash)
{
    for (size_t i = 0; i < sizeof c_recursions / sizeof *c_recursions; i++) {
        int rc = run(c_recursions[i]);
        cr_assert_neq(rc, 0, "%s", c_recursions[i]);
        cr_assert(strstr(err, "C stack overflow") || strstr(err, "stack overflow"),
                  "%s\n-> %s", c_recursions[i], err);
        rc = call_fn(c_recursions[i]);
        cr_assert(strstr(err, "stack overflow"), "in a call: %s\n-> %s", c_recursions[i], err);
    }
    /* through print's __tostring: ends by the log rate limit or the depth */
    int rc = run("local t = setmetatable({}, { __tostring = function(s) print(s) return 'x' end })"
                 " print(t)");
    cr_assert(rc == 0 || strstr(err, "stack overflow"), "%s", err);
    /* recursion through pcall or xpcall ends, each level getting false */
    OK("local function f() return xpcall(f, f) end f()");
    OK("local d = 0 local function f() d = d + 1 pcall(f) end f() assert(d > 100)");
    /* the state is fine afterwards */
    OK("assert(('abc'):gsub('.', function(c) return c:upper() end) == 'ABC')");
}

/* The same on a thread with a 2 MiB stack (a worker's is 8 MiB): the depth
 * limit and the C-stack backstop keep well inside it. */
static void *small_stack_main(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof c_recursions / sizeof *c_recursions; i++) {
        int rc = run(c_recursions[i]);
        if (rc == 0 || !strstr(err, "stack overflow"))
            return (void *)c_recursions[i];
    }
    return NULL;
}

Test(luavm_limits, recursion_on_a_small_thread_stack)
{
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 2u << 20);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, &at, small_stack_main, NULL), 0);
    void *bad = NULL;
    pthread_join(t, &bad);
    pthread_attr_destroy(&at);
    cr_assert_null(bad, "%s -> %s", bad ? (const char *)bad : "", err);
}

/* ------------------------------------------------------------------ */
/* 2. no script code after a kill                                      */

static void wedges(void)
{
    FAILS("xpcall(function() while true do end end, function() while true do end end)",
          ERR_BUDGET, "budget exceeded");
    FAILS("xpcall(function() while true do end end, function() error('again') end)", ERR_BUDGET,
          "budget exceeded");
    FAILS("local ok = xpcall(function() while true do end end, function() return 1 end)"
          " while true do end", ERR_BUDGET, "budget exceeded");
    FAILS("pcall(xpcall, function() while true do end end, function() while true do end end)"
          " return 1", ERR_BUDGET, "budget exceeded");
    cr_assert_eq(call_fn("xpcall(function() while true do end end, function() while true do end end)"),
                 ERR_BUDGET, "%s", err);
    /* a handler still runs for ordinary errors */
    OK("local ok, m = xpcall(function() error('x') end, function(m) return 'handled: ' .. m end)"
       " assert(not ok and m:find('handled: t.lua:1: x', 1, true))");
}

Test(luavm_limits, xpcall_handler_cannot_outlive_the_kill) { wedges(); }

Test(luavm_limits, xpcall_handler_cannot_outlive_the_kill_small_budget)
{
    struct luavm_opts o = { .instr_budget = 20000, .call_time_ms = 600000, .load_time_ms = 600000 };
    make_vm(&o);
    wedges();
}

/* ------------------------------------------------------------------ */
/* 3. time inside C functions                                          */

Test(luavm_limits, time_limit_stops_c_functions)
{
    struct luavm_opts o = { .call_time_ms = 30, .load_time_ms = 30 };
    make_vm(&o);
    static const char *const slow[] = {
        "return ('a'):rep(5000):find('^.-.-.-b')",
        "return ('a'):rep(5000):match('.-.-.-b')",
        "for x in ('a'):rep(5000):gmatch('.-.-.-b') do end",
        "return ('a'):rep(5000):gsub('.-.-.-b', '')",
        "local t = {} for i = 1, 300000 do t[i] = (i * 7919) % 300007 end"
        " for k = 1, 1000 do table.sort(t, function(a, b) return a > b end) end",
        "local ok = pcall(string.find, ('a'):rep(5000), '^.-.-.-b') while true do end",
        "xpcall(string.find, function() while true do end end, ('a'):rep(5000), '^.-.-.-b')",
    };
    for (size_t i = 0; i < sizeof slow / sizeof *slow; i++) {
        FAILS(slow[i], ERR_BUDGET, "exceeded");
        cr_assert(strstr(err, "time limit exceeded (30 ms)") || strstr(err, "instruction budget"),
                  "%s -> %s", slow[i], err);
        cr_assert_eq(call_fn(slow[i]), ERR_BUDGET, "%s -> %s", slow[i], err);
    }
    FAILS("local r = ('a'):rep(5000):find('^.-.-.-b') return r", ERR_BUDGET,
          "t.lua:1: time limit exceeded");
    FAILS("return ('a'):rep(5000):find('^.-.-.-b')", ERR_BUDGET, /* a tail call: no line */
          "t.lua: time limit exceeded");
    /* quick calls are untouched by the limit */
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(call_fn("local s = ('ab'):rep(10):gsub('a', 'c') assert(#s == 20)"), 0, "%s", err);
}

Test(luavm_limits, sizes_bounded_before_work)
{
    FAILS("return ('x'):rep(1e9)", ERR_BUDGET, "memory limit exceeded");
    FAILS("local ok = pcall(string.rep, 'x', 1e9) return 1", ERR_BUDGET, "memory limit exceeded");
    FAILS("return unpack({}, 1, 1e8)", ERR_LUA, "too many results");
    FAILS("return unpack({}, 1, 2^40)", ERR_LUA, "out of bounds");
    FAILS("table.insert({}, 2^40, 1)", ERR_LUA, "out of bounds");
    OK("local f, e = loadstring(('x = 1 '):rep(300000)) assert(not f and e:find('too large'))");
    FAILS("return ('a'):rep(300):find(('a?'):rep(300) .. ('a'):rep(300))", ERR_LUA,
          "pattern too complex");
}

/* ------------------------------------------------------------------ */
/* the matcher is LuaJIT's in behaviour                                */

Test(luavm_limits, matcher_agrees_with_luajit)
{
    lua_State *R = luaL_newstate();
    luaL_openlibs(R);
    static const char *const subjects[] = {
        "hello world", "  key = value  ", "x(a(b)c)y", "THE (quick) fox", "", "a,b,,c",
        "2024-03-01", "aaa", "a.b.c", "\x01\x02 ctl", "[x] %d %", "abcabc",
    };
    static const char *const patterns[] = {
        "%a+", "(%w+)%s*=%s*(%w+)", "^%s*(.-)%s*$", "%b()", "%f[%w]%w+", "()", "(a)(b?)",
        "[^%s]+", "a-b", ".-", "x*", "[a-c]+", "[]]", "[^]]", "%%", "$", "^$", "c$", "(%d+)-(%d+)",
        "(a)%1", "[%a_][%w_]*", "%u", "%p+", "%c", "%x+", ".", "^(.)", "()a()", "[%]]", "%.",
        ",", "[a-]", "%s*", "b*", "ab", "%z",
    };
    static const char *const funcs[] = {
        "local s, p = ... return string.find(s, p)",
        "local s, p = ... return string.find(s, p, 3)",
        "local s, p = ... return string.find(s, p, -4)",
        "local s, p = ... return string.find(s, p, 1, true)",
        "local s, p = ... return string.match(s, p)",
        "local s, p = ... return string.match(s, p, 2)",
        "local s, p = ... local r = {} for a, b in string.gmatch(s, p) do r[#r + 1] = tostring(a) .. '|' .. tostring(b) end return table.concat(r, ';')",
        "local s, p = ... return string.gsub(s, p, '<%0>')",
        "local s, p = ... return string.gsub(s, p, '%%', 2)",
        "local s, p = ... return string.gsub(s, p, function(a, b) return b and (a .. b) or nil end)",
        "local s, p = ... return string.gsub(s, p, { a = 'A', hello = false })",
    };
    char diff[1024];
    int compared = 0;
    for (size_t f = 0; f < sizeof funcs / sizeof *funcs; f++) {
        char src[512];
        snprintf(src, sizeof src, "return function(...) local r = { pcall(function(...) %s end, ...) }"
                                  " for i = 1, #r do r[i] = tostring(r[i]) end"
                                  " if r[1] == 'false' then return 'error' end"
                                  " return table.concat(r, ',') end", funcs[f]);
        cr_assert_eq(luaL_loadstring(R, src), 0);
        cr_assert_eq(lua_pcall(R, 0, 1, 0), 0);
        int rf = lua_gettop(R);
        cr_assert_eq(luavm_load_chunk(vm, "m.lua", src, strlen(src), err, sizeof err), 0, "%s", err);
        int vf = lua_gettop(L);
        for (size_t s = 0; s < sizeof subjects / sizeof *subjects; s++)
            for (size_t p = 0; p < sizeof patterns / sizeof *patterns; p++) {
                lua_pushvalue(R, rf);
                lua_pushstring(R, subjects[s]);
                lua_pushstring(R, patterns[p]);
                cr_assert_eq(lua_pcall(R, 2, 1, 0), 0);
                lua_pushvalue(L, vf);
                lua_pushstring(L, subjects[s]);
                lua_pushstring(L, patterns[p]);
                cr_assert_eq(luavm_call(vm, 2, 1, err, sizeof err), 0, "%s", err);
                snprintf(diff, sizeof diff, "%s on '%s' with '%s': luajit %s, ours %s", funcs[f],
                         subjects[s], patterns[p], lua_tostring(R, -1), lua_tostring(L, -1));
                cr_assert_str_eq(lua_tostring(L, -1), lua_tostring(R, -1), "%s", diff);
                lua_pop(R, 1);
                lua_pop(L, 1);
                compared++;
            }
        lua_settop(R, rf - 1);
        lua_settop(L, vf - 1);
    }
    cr_assert_gt(compared, 4000);
    /* malformed patterns fail in both */
    static const char *const bad[] = { "[a", "%", "(()", "%b", "%f", "(", "%1" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char src[128];
        snprintf(src, sizeof src, "return ('x(a)'):find('%s')", bad[i]);
        cr_assert_neq(luaL_dostring(R, src), 0, "luajit accepts %s", bad[i]);
        lua_settop(R, 0);
        cr_assert_eq(run(src), ERR_LUA, "ours accepts %s", bad[i]);
    }
    lua_close(R);
}

/* ------------------------------------------------------------------ */
/* 5. one file keeping memory                                          */

Test(luavm_limits, memory_hog_is_disabled_and_neighbours_keep_working)
{
    struct luavm_opts o = { .mem_limit = 48u << 20, .call_time_ms = 600000 };
    make_vm(&o);
    const char *hog = "local cache = {} return function()"
                      " for i = 1, 100 do cache[#cache + 1] = ('x'):rep(20000) .. #cache end"
                      " return #cache end";
    const char *good = "return function() local t = {} for i = 1, 2000 do t[i] = { i } end"
                       " return #t end";
    cr_assert_eq(luavm_load_chunk(vm, "rules/hog.lua", hog, strlen(hog), err, sizeof err), 0);
    int h = lua_gettop(L);
    cr_assert_eq(luavm_load_chunk(vm, "rules/good.lua", good, strlen(good), err, sizeof err), 0);
    int g = lua_gettop(L);
    int disabled_at = -1;
    for (int i = 0; i < 200 && disabled_at < 0; i++) {
        lua_pushvalue(L, h);
        int rc = luavm_call(vm, 0, 1, err, sizeof err);
        if (rc) {
            cr_assert_eq(rc, ERR_BUDGET);
            cr_assert_not_null(strstr(err, "rules/hog.lua: disabled: it retained"), "%s", err);
            disabled_at = i;
        } else {
            lua_pop(L, 1);
        }
        lua_pushvalue(L, g);
        cr_assert_eq(luavm_call(vm, 0, 1, err, sizeof err), 0, "neighbour failed at %d: %s", i, err);
        cr_assert_eq(lua_tonumber(L, -1), 2000);
        lua_pop(L, 1);
    }
    cr_assert_geq(disabled_at, 0, "the hog was never disabled");
    /* what it kept was released; it stays disabled; the neighbour runs */
    lua_gc(L, LUA_GCCOLLECT, 0);
    cr_assert_lt(luavm_mem_used(vm), 16u << 20, "used %zu", luavm_mem_used(vm));
    lua_pushvalue(L, h);
    cr_assert_eq(luavm_call(vm, 0, 1, err, sizeof err), ERR_BUDGET);
    char msg[256];
    cr_assert(luavm_file_disabled("rules/hog.lua", msg, sizeof msg));
    cr_assert_not_null(strstr(msg, "disabled"));
    cr_assert_not(luavm_file_disabled("rules/good.lua", msg, sizeof msg));
    /* /metrics names it */
    luavm_metrics_init();
    struct buf out = BUF_INIT;
    metrics_render(&out);
    buf_addc(&out, '\0');
    cr_assert_not_null(strstr(out.p, "promod_lua_file_retained_bytes{file=\"rules/hog.lua\"}"), "%s",
                       out.p);
    cr_assert_not_null(strstr(out.p, "promod_lua_files_disabled_total 1"), "%s", out.p);
    buf_free(&out);
    /* a new version of the file loads fresh */
    const char *fixed = "return function() return 1 end";
    cr_assert_eq(luavm_load_chunk(vm, "rules/hog.lua", fixed, strlen(fixed), err, sizeof err), 0);
    cr_assert_eq(luavm_call(vm, 0, 1, err, sizeof err), 0, "%s", err);
    cr_assert_not(luavm_file_disabled("rules/hog.lua", msg, sizeof msg));
    lua_settop(L, h - 1);
}

/* ------------------------------------------------------------------ */
/* 6. log floods                                                       */

Test(luavm_limits, log_lines_are_rate_limited_per_file)
{
    log_set_level(LOG_QUIET);
    struct luavm_opts o = { .log_per_sec = 10 };
    make_vm(&o);
    const char *flood = "return function() for i = 1, 20000 do print('flood', i) end"
                        " for i = 1, 100 do promo.log('more', i) end end";
    cr_assert_eq(luavm_load_chunk(vm, "rules/flood.lua", flood, strlen(flood), err, sizeof err), 0);
    cr_assert_eq(luavm_call(vm, 0, 0, err, sizeof err), 0, "%s", err);
    luavm_metrics_init();
    struct buf out = BUF_INIT;
    metrics_render(&out);
    buf_addc(&out, '\0');
    const char *line = strstr(out.p, "promod_lua_log_dropped_total{file=\"rules/flood.lua\"} ");
    cr_assert_not_null(line, "%s", out.p);
    long dropped = atol(line + strlen("promod_lua_log_dropped_total{file=\"rules/flood.lua\"} "));
    /* a burst of 5 s at 10/s may pass (plus what refills during the call) */
    cr_assert_geq(dropped, 20100 - 200, "dropped %ld", dropped);
    cr_assert_lt(dropped, 20100);
    buf_free(&out);
}

/* ------------------------------------------------------------------ */
/* what a file returns is read by C: no metatables there               */

Test(luavm_limits, returned_tables_must_be_plain)
{
    FAILS("return setmetatable({}, { __index = function() while true do end end })", ERR_LUA,
          "t.lua: the returned table (or a table inside it) has a metatable");
    FAILS("return { variants = { setmetatable({}, {}) } }", ERR_LUA, "has a metatable");
    OK("local shared = { 1 } return { a = shared, b = shared, f = function() return setmetatable({}, {}) end }");
}

/* A file that cannot write tables still keeps memory through upvalues and
 * closures, and may keep the request's own profile (it gets the table
 * itself): disabling it releases what it kept and leaves the profile
 * alone. */
Test(luavm_limits, disabling_a_pure_hog_spares_the_request_tables)
{
    struct luavm_opts o = { .mem_limit = 48u << 20, .call_time_ms = 600000 };
    make_vm(&o);
    /* a chain of closures, each holding a unique 1 MB string: no table store */
    const char *hog = "local keep, prev, n = nil, nil, 0 return function(p)"
                      " local old, big = prev, ('x'):rep(1000000) .. n n = n + 1"
                      " prev = function() return old, big end keep = p return n end";
    cr_assert_eq(luavm_load_chunk(vm, "rules/purehog.lua", hog, strlen(hog), err, sizeof err), 0);
    int h = lua_gettop(L);
    cr_assert_eq(luaL_loadstring(L, "return { name = 'Ana', tags = { 'vip' } }"), 0);
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0);
    int p = lua_gettop(L);
    int pv = luavm_push_readonly(L, p, "profile");
    int disabled = 0;
    for (int i = 0; i < 100 && !disabled; i++) {
        lua_pushvalue(L, h);
        lua_pushvalue(L, pv);
        int rc = luavm_call(vm, 1, 1, err, sizeof err);
        if (rc)
            disabled = strstr(err, "disabled") != NULL;
        else
            lua_pop(L, 1);
    }
    cr_assert(disabled, "never disabled: %s", err);
    lua_getfield(L, p, "name");
    cr_assert_str_eq(lua_tostring(L, -1), "Ana");
    lua_getfield(L, p, "tags");
    lua_rawgeti(L, -1, 1);
    cr_assert_str_eq(lua_tostring(L, -1), "vip");
    lua_settop(L, h - 1);
}
