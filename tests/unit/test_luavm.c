/* test_luavm.c — sandbox, budgets, protected calls, conversions, promo.* */
#include <criterion/criterion.h>

#include <ftw.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <msgpack.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "lua/luavm.h"

static struct luavm *vm;
static lua_State *L;
static char err[512];
static char libdir[64];

static void write_file(const char *rel, const char *text, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", libdir, rel);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    fwrite(text, 1, len, f);
    fclose(f);
}
#define WRITE(rel, text) write_file(rel, text, sizeof(text) - 1)

static void setup(void)
{
    log_set_level(LOG_WARN);
    strcpy(libdir, "/tmp/luavm-lib-XXXXXX");
    cr_assert_not_null(mkdtemp(libdir));
    char sub[128];
    snprintf(sub, sizeof sub, "%s/sub", libdir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    WRITE("util.lua", "local M = {}\nfunction M.double(x) return x * 2 end\nM.loaded_at = {}\nreturn M\n");
    WRITE("sub/deep.lua", "return { name = 'deep', up = require('util').double(21) }\n");
    WRITE("bad.lua", "local x = 1\nleaked = x\nreturn x\n");
    WRITE("boom.lua", "local a = 1\nerror('kaput')\n");
    WRITE("bin.lua", "\033LJ\002\000garbage");
    WRITE("nilret.lua", "local a = 1\n");
    WRITE("loop_a.lua", "return require('loop_b')\n");
    WRITE("loop_b.lua", "return require('loop_a')\n");
    WRITE("spin.lua", "while true do end\n");
    /* time limits out of the way: these tests are about instructions and
     * memory, which must be what stops a call even in slow (sanitizer)
     * builds; time limits are tested in test_luavm_limits.c */
    struct luavm_opts o = { .lib_dir = libdir, .call_time_ms = 600000, .load_time_ms = 600000 };
    cr_assert_eq(luavm_new(&o, &vm), 0);
    L = luavm_state(vm);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void teardown(void)
{
    luavm_free(vm);
    vm = NULL;
    nftw(libdir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(luavm, .init = setup, .fini = teardown, .timeout = 60);

/* Run `src` as a file; pop its return value. */
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

/* Load `src` (which returns a function) and leave the function on the stack. */
static void push_fn(const char *src)
{
    int rc = luavm_load_chunk(vm, "fn.lua", src, strlen(src), err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert(lua_isfunction(L, -1));
}

/* ------------------------------------------------------------------ */
/* sandbox escapes                                                     */

Test(luavm, escape_io_os_ffi_debug_absent)
{
    FAILS("return io.open('/etc/passwd')", ERR_LUA, "undeclared global 'io'");
    FAILS("return os.execute('id')", ERR_LUA, "execute");
    FAILS("return os.getenv('HOME')", ERR_LUA, "getenv");
    FAILS("return os.exit(1)", ERR_LUA, "exit");
    FAILS("return ffi", ERR_LUA, "undeclared global 'ffi'");
    FAILS("return jit", ERR_LUA, "undeclared global 'jit'");
    FAILS("return debug", ERR_LUA, "undeclared global 'debug'");
    static const char *absent[] = {
        "dofile", "loadfile", "package", "collectgarbage", "setfenv", "getfenv", "_G",
        "newproxy", "coroutine", "module", "gcinfo", "io", "string.dump",
    };
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        char src[128];
        snprintf(src, sizeof src, "local ok, v = pcall(function() return %s end)\n"
                                  "assert(not ok or v == nil, 'present')", absent[i]);
        OK(src);
    }
    OK("assert(os.time() > 0 and os.date('!%Y', 0) == '1970' and os.clock() >= 0)");
}

Test(luavm, escape_require)
{
    FAILS("return require 'os'", ERR_LUA, "module 'os' not found");
    FAILS("return require 'ffi'", ERR_LUA, "module 'ffi' not found");
    FAILS("return require 'jit'", ERR_LUA, "not found");
    FAILS("return require '../x'", ERR_LUA, "invalid module name");
    FAILS("return require '..sub'", ERR_LUA, "invalid module name");
    FAILS("return require '/etc/passwd'", ERR_LUA, "invalid module name");
    FAILS("return require 'util\\0x'", ERR_LUA, "invalid module name");
    FAILS("return require ''", ERR_LUA, "invalid module name");
    FAILS("return require 'bin'", ERR_LUA, "not text");
}

Test(luavm, escape_bytecode)
{
    OK("local f, e = loadstring('\\27LJ\\2\\0\\0') assert(f == nil and e:find('binary'), e)");
    OK("local f, e = load('\\27LJ\\2\\0\\0') assert(f == nil and e:find('binary'), e)");
    OK("local parts = { '\\27LJ', '\\2' } local i = 0\n"
       "local f, e = load(function() i = i + 1 return parts[i] end)\n"
       "assert(f == nil and e:find('binary'), e)");
    const char bc[] = "\033LJ\002\000\000";
    int rc = luavm_load_chunk(vm, "b.lua", bc, sizeof bc - 1, err, sizeof err);
    cr_assert_eq(rc, ERR_LUA, "%s", err);
    cr_assert_not_null(strstr(err, "binary"), "%s", err);
}

Test(luavm, escape_string_dump_and_metatable)
{
    OK("assert(string.dump == nil and (''):len() == 0 and ('').dump == nil)");
    OK("assert(getmetatable('') == false)");
    FAILS("getmetatable('').__index.upper = function() return 'pwned' end", ERR_LUA,
          "attempt to index a boolean value");
    FAILS("setmetatable('', {})", ERR_LUA, "bad argument");
    OK("assert(('a'):upper() == 'A')");
}

Test(luavm, escape_readonly_libraries)
{
    FAILS("string.upper = function() return 'x' end", ERR_LUA, "read-only");
    FAILS("math.floor = nil", ERR_LUA, "read-only");
    FAILS("promo.hash = nil", ERR_LUA, "read-only");
    FAILS("os.execute = 1", ERR_LUA, "read-only");
    FAILS("rawset(string, 'upper', 1)", ERR_LUA, "read-only");
    FAILS("rawset(promo, 'now', function() return 0 end)", ERR_LUA, "read-only");
    FAILS("setmetatable(string, nil)", ERR_LUA, "protected metatable");
    OK("assert(getmetatable(string) == false and getmetatable(promo) == false)");
    OK("assert(rawget(string, 'upper') == nil)");
    /* the table library refuses them too */
    FAILS("table.insert(string, 'x')", ERR_LUA, "read-only");
    FAILS("table.sort(math)", ERR_LUA, "read-only");
    FAILS("table.remove(promo)", ERR_LUA, "read-only");
    OK("local t = rawset({}, 'a', 1) assert(t.a == 1)");
}

Test(luavm, undeclared_globals)
{
    FAILS("x = 1", ERR_LUA, "t.lua:1: assignment to undeclared global 'x'");
    FAILS("local a = 1\nreturn y", ERR_LUA, "t.lua:2: undeclared global 'y'");
    FAILS("function f() end", ERR_LUA, "assignment to undeclared global 'f'");
    FAILS("string = 1", ERR_LUA, "assignment to undeclared global 'string'");
    FAILS("local f = loadstring('z = 1') f()", ERR_LUA, "assignment to undeclared global 'z'");
    /* a chunk loaded through a C frame (pcall) still gets a sandbox env */
    FAILS("local ok, f = pcall(loadstring, 'return io') f()", ERR_LUA, "undeclared global 'io'");
    FAILS("local ok, f = pcall(load, 'x = 2') f()", ERR_LUA, "assignment to undeclared global 'x'");
    OK("local f = assert(loadstring('return string.upper(...)')) assert(f('a') == 'A')");
    OK("local ok, e = pcall(function() return nope end) assert(not ok and e:find('undeclared global'))");
}

Test(luavm, load_gets_caller_env)
{
    /* rawset into the env is refused too */
    OK("local ok, e = pcall(rawset, string, 'x', 1) assert(not ok and e:find('read%-only'))");
    OK("local f = loadstring('return promo.hash(\"\")') assert(f() == 2166136261)");
}

/* ------------------------------------------------------------------ */
/* budgets                                                             */

Test(luavm, instruction_budget_top_level)
{
    FAILS("while true do end", ERR_BUDGET, "instruction budget exceeded");
    cr_assert(strncmp(err, "t.lua:1:", 8) == 0, "%s", err);
    OK("assert(1 + 1 == 2)");
}

Test(luavm, instruction_budget_cannot_be_swallowed)
{
    FAILS("pcall(function() while true do end end) return 1", ERR_BUDGET, "instruction budget");
    FAILS("for i = 1, 10 do pcall(function() while true do end end) end", ERR_BUDGET, "instruction budget");
    FAILS("xpcall(function() while true do end end, function() return 'fine' end) return 1",
          ERR_BUDGET, "instruction budget");
    FAILS("xpcall(function() error('x') end, function() while true do end end)", ERR_BUDGET,
          "instruction budget");
    FAILS("local ok = pcall(pcall, function() while true do end end) while true do end",
          ERR_BUDGET, "instruction budget");
    FAILS("string.gsub(('x'):rep(100), '.', function() while true do end end)", ERR_BUDGET,
          "instruction budget");
    FAILS("table.sort({3, 2, 1}, function(a, b) while true do end end)", ERR_BUDGET,
          "instruction budget");
    FAILS("return require('spin')", ERR_BUDGET, "instruction budget");
    FAILS("local f = loadstring('while true do end') pcall(f)", ERR_BUDGET, "instruction budget");
    OK("local n = 0 for i = 1, 1000 do n = n + i end assert(n == 500500)");
}

Test(luavm, instruction_budget_in_call)
{
    push_fn("return function(n) local x = 0 for i = 1, n do x = x + 1 end return x end");
    int fn = lua_gettop(L);
    lua_pushvalue(L, fn);
    lua_pushnumber(L, 1000);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(lua_tonumber(L, -1), 1000);
    lua_pop(L, 1);
    lua_pushvalue(L, fn);
    lua_pushnumber(L, 1e9);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), ERR_BUDGET);
    cr_assert_not_null(strstr(err, "fn.lua:1: instruction budget exceeded"), "%s", err);
    /* the budget is per call: 10 calls of 500k instructions each pass */
    for (int i = 0; i < 10; i++) {
        lua_pushvalue(L, fn);
        lua_pushnumber(L, 150000);
        cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
        lua_pop(L, 1);
    }
    cr_assert_eq(lua_gettop(L), fn);
}

/* A small budget keeps the count hook on from the first instruction: a
 * loop of ~90k instructions is stopped although it ends in well under the
 * watchdog's tick. */
Test(luavm, small_budget_counts_from_the_first_instruction)
{
    luavm_free(vm);
    struct luavm_opts o = { .instr_budget = 20000, .call_time_ms = 600000, .load_time_ms = 600000 };
    cr_assert_eq(luavm_new(&o, &vm), 0);
    L = luavm_state(vm);
    FAILS("local x = 0 for i = 1, 30000 do x = x + i end", ERR_BUDGET, "t.lua:1: instruction budget exceeded");
    OK("local x = 0 for i = 1, 1000 do x = x + i end");
    FAILS("while true do end", ERR_BUDGET, "instruction budget exceeded");
    OK("return 1");
}

/* With the default budget the hook is armed by the watchdog only for calls
 * that outlive a tick.  Calls of a millisecond or two (armed midway, then
 * counted) pass, a runaway among them is stopped, tiny calls in between
 * are untouched, and the stack stays balanced throughout. */
Test(luavm, watchdog_arms_long_calls_only)
{
    push_fn("return function(n) local x = 0 for i = 1, n do x = x + i % 3 end return x end");
    int fn = lua_gettop(L);
    for (int round = 0; round < 40; round++) {
        lua_pushvalue(L, fn);
        lua_pushnumber(L, 100000); /* ~400k instructions: a few ms unhooked */
        cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "round %d: %s", round, err);
        lua_pop(L, 1);
        for (int i = 0; i < 200; i++) {
            lua_pushvalue(L, fn);
            lua_pushnumber(L, 10);
            cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
            cr_assert_eq(lua_tonumber(L, -1), 10);
            lua_pop(L, 1);
        }
        if (round % 10 == 0) {
            lua_pushvalue(L, fn);
            lua_pushnumber(L, 1e12);
            cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), ERR_BUDGET);
            cr_assert_not_null(strstr(err, "fn.lua:1: instruction budget exceeded"), "%s", err);
        }
        cr_assert_eq(lua_gettop(L), fn);
    }
}

Test(luavm, memory_bomb_from_brief)
{
    /* Interned ("x"):rep(1000) means the table array is what grows: give it
     * instructions enough to reach the memory limit first. */
    luavm_free(vm);
    struct luavm_opts o = { .call_mem_limit = 4 << 20, .instr_budget = 100000000,
                            .call_time_ms = 600000, .load_time_ms = 600000 };
    cr_assert_eq(luavm_new(&o, &vm), 0);
    L = luavm_state(vm);
    FAILS("local t={} while true do t[#t+1]=('x'):rep(1000) end", ERR_BUDGET,
          "t.lua: memory limit exceeded");
    OK("local t = {} for i = 1, 1000 do t[i] = i end");
}

Test(luavm, memory_bomb_unique_strings)
{
    size_t before = luavm_mem_used(vm);
    FAILS("local t={} local i=0 while true do i=i+1 t[i]=('x'):rep(1000)..i end", ERR_BUDGET,
          "memory limit exceeded");
    cr_assert_lt(luavm_mem_used(vm), before + (1 << 20), "bomb collected after the kill");
    FAILS("local ok, e = pcall(function() return ('x'):rep(64 * 1024 * 1024) end) return e",
          ERR_BUDGET, "memory limit exceeded");
    FAILS("local ok = pcall(function() local t = {} while true do t[#t+1] = ('x'):rep(999) .. #t end end) "
          "while true do end", ERR_BUDGET, "memory limit exceeded");
    push_fn("return function() local s = {} for i = 1, 1e7 do s[i] = ('y'):rep(1000) .. i end end");
    cr_assert_eq(luavm_call(vm, 0, 0, err, sizeof err), ERR_BUDGET);
    cr_assert_not_null(strstr(err, "fn.lua:1: memory limit exceeded"), "%s", err);
    OK("assert(('ab'):rep(3) == 'ababab')");
}

Test(luavm, whole_state_memory_limit)
{
    luavm_free(vm);
    struct luavm_opts o = { .mem_limit = 2 << 20, .call_time_ms = 600000, .load_time_ms = 600000 };
    cr_assert_eq(luavm_new(&o, &vm), 0);
    L = luavm_state(vm);
    FAILS("local t = {} for i = 1, 1e6 do t[i] = tostring(i) end", ERR_BUDGET, "memory limit exceeded");
    OK("return 1");
}

/* Allocation failure at every point of a script that allocates in many
 * ways: each run either succeeds or fails with ERR_BUDGET, the stack stays
 * balanced and the state keeps working. */
Test(luavm, allocation_failure_sweep)
{
    const char *src =
        "local t = {} for i = 1, 50 do t[#t + 1] = ('k' .. i):rep(3) end\n"
        "local s = table.concat(t, ',') local u = s:upper():gsub('K', 'q')\n"
        "local f = assert(loadstring('return function(a) return {a, a .. \"!\"} end'))()\n"
        "local ok, e = pcall(function() return f(u)[2] end)\n"
        "local m = require('util') local set = promo.set(t)\n"
        "return promo.count(set) + #s + #(e or '')";
    int succeeded = 0;
    for (size_t limit = 256; limit <= 96 * 1024; limit += 768) {
        luavm_free(vm);
        struct luavm_opts o = { .call_mem_limit = limit, .lib_dir = libdir, .call_time_ms = 600000,
                                .load_time_ms = 600000 };
        cr_assert_eq(luavm_new(&o, &vm), 0);
        L = luavm_state(vm);
        int rc = run(src);
        cr_assert(rc == 0 || rc == ERR_BUDGET, "limit %zu: rc %d %s", limit, rc, err);
        if (rc == ERR_BUDGET)
            cr_assert_not_null(strstr(err, "memory limit exceeded"), "limit %zu: %s", limit, err);
        succeeded += rc == 0;
        cr_assert_eq(lua_gettop(L), 0);
        if (limit >= 16 * 1024)  /* below that even compiling a one-liner is refused */
            OK("assert(1 + 1 == 2)");
    }
    cr_assert_gt(succeeded, 0, "the largest limit must be enough");
}

/* ------------------------------------------------------------------ */
/* protected calls                                                     */

static void error_messages_body(void)
{
    FAILS("local a = 1\nerror('boom')", ERR_LUA, "t.lua:2: boom");
    cr_assert_str_eq(err, "t.lua:2: boom");
    FAILS("error({})", ERR_LUA, "(error object is a table value)");
    FAILS("error(nil)", ERR_LUA, "(error object is a nil value)");
    FAILS("error('line1\\nline2')", ERR_LUA, "t.lua:1: line1");
    cr_assert_null(strchr(err, '\n'));
    FAILS("error('plain', 0)", ERR_LUA, "plain");
    cr_assert_str_eq(err, "plain");
    FAILS("local x = \n = 2", ERR_LUA, "t.lua:2:");
    FAILS("return nil + 1", ERR_LUA, "t.lua:1: attempt to perform arithmetic");
    cr_assert_null(strstr(err, "traceback"));
    FAILS("local function f() return f() + 1 end return f()", ERR_LUA, "stack overflow");
    FAILS("local v = promo.hash()", ERR_LUA, "t.lua:1: bad argument #1 to 'hash'");

    push_fn("return function(p)\n  local x = p.missing.field\nend");
    lua_newtable(L);
    cr_assert_eq(luavm_call(vm, 1, 0, err, sizeof err), ERR_LUA);
    cr_assert(strncmp(err, "fn.lua:2: attempt to index field 'missing'", 41) == 0, "%s", err);
    /* a tiny err buffer is truncated, not overrun */
    char small[8];
    cr_assert_eq(luavm_load_chunk(vm, "t.lua", "error('long message')", 21, small, sizeof small),
                 ERR_LUA);
    cr_assert_str_eq(small, "t.lua:1");
}

/* Messages are the same whether calls run with the traceback handler
 * (debug logging) or without it (the fast path). */
Test(luavm, error_messages) { error_messages_body(); }
Test(luavm, error_messages_with_debug_tracebacks)
{
    log_set_level(LOG_DEBUG);
    error_messages_body();
    log_set_level(LOG_WARN);
}

Test(luavm, load_chunk_returns_value)
{
    int top = lua_gettop(L);
    cr_assert_eq(luavm_load_chunk(vm, "a.lua", "local x = 1", 11, err, sizeof err), 0);
    cr_assert(lua_isnil(L, -1));
    cr_assert_eq(luavm_load_chunk(vm, "b.lua", "return 7, 8", 11, err, sizeof err), 0);
    cr_assert_eq(lua_tonumber(L, -1), 7);
    lua_settop(L, top);
    cr_assert_eq(luavm_load_chunk(vm, "rules/spring.lua", "return {\n id = 'x',\n", 20, err, sizeof err),
                 ERR_LUA);
    cr_assert(strncmp(err, "rules/spring.lua:", 17) == 0, "%s", err);
    cr_assert_eq(lua_gettop(L), top);
}

static void stack_balanced_body(void)
{
    static const char *fns[] = {
        "return function(a, b) return a + b, 1, 2 end",
        "return function() error('boom') end",
        "return function() error({}) end",
        "return function() while true do end end",
        "return function() local t = {} local i = 0 while true do i = i + 1 t[i] = ('x'):rep(1000) .. i end end",
        "return function() local function f() return f() + 1 end return f() end",
        "return function() pcall(function() while true do end end) end",
    };
    static const int nres[] = { 0, 1, 3, LUA_MULTRET };
    lua_pushliteral(L, "sentinel");
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        push_fn(fns[i]);
        int fn = lua_gettop(L);
        for (size_t j = 0; j < sizeof nres / sizeof nres[0]; j++) {
            lua_pushvalue(L, fn);
            lua_pushnumber(L, 1);
            lua_pushnumber(L, 2);
            int rc = luavm_call(vm, 2, nres[j], err, sizeof err);
            int want = fn;
            if (rc == 0)
                want += nres[j] == LUA_MULTRET ? 3 : nres[j];
            cr_assert_eq(lua_gettop(L), want, "fn %zu nres %d rc %d (%s)", i, nres[j], rc, err);
            cr_assert_eq(rc == 0, i == 0, "fn %zu rc %d %s", i, rc, err);
            lua_settop(L, fn);
        }
        lua_pop(L, 1);
    }
    cr_assert_str_eq(lua_tostring(L, -1), "sentinel");
}

Test(luavm, stack_balanced_on_every_path) { stack_balanced_body(); }
Test(luavm, stack_balanced_with_debug_tracebacks)
{
    log_set_level(LOG_DEBUG);
    stack_balanced_body();
    log_set_level(LOG_WARN);
}

/* luavm_call_ref: the same results, messages and stack balance as
 * luavm_call, with the function named by its registry ref (memory-limit
 * messages included), traced or not. */
static void call_ref_body(void)
{
    static const char *fns[] = {
        "return function(a, b) return a + b, 1, 2 end",
        "return function() error('boom') end",
        "return function() while true do end end",
        "return function() local t = {} local i = 0 while true do i = i + 1 t[i] = ('x'):rep(1000) .. i end end",
    };
    static const char *want[] = { NULL, "fn.lua:1: boom", "instruction budget exceeded", "fn.lua:1: memory limit exceeded" };
    lua_pushliteral(L, "sentinel");
    int base = lua_gettop(L);
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        push_fn(fns[i]);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        for (int nres = 0; nres <= 3; nres++) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
            lua_pushnumber(L, 1);
            lua_pushnumber(L, 2);
            int rc = luavm_call_ref(vm, ref, 2, nres, err, sizeof err);
            cr_assert_eq(rc == 0, i == 0, "fn %zu rc %d %s", i, rc, err);
            cr_assert_eq(lua_gettop(L), base + (rc == 0 ? nres : 0), "fn %zu nres %d", i, nres);
            if (rc == 0 && nres >= 1)
                cr_assert_eq(lua_tonumber(L, base + 1), 3);
            if (want[i])
                cr_assert_not_null(strstr(err, want[i]), "fn %zu: %s", i, err);
            lua_settop(L, base);
        }
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
    }
    cr_assert_str_eq(lua_tostring(L, -1), "sentinel");
}

Test(luavm, call_ref_like_call) { call_ref_body(); }
Test(luavm, call_ref_like_call_with_debug_tracebacks)
{
    log_set_level(LOG_DEBUG);
    call_ref_body();
    log_set_level(LOG_WARN);
}

Test(luavm, call_non_function)
{
    lua_pushliteral(L, "below");
    lua_newtable(L);
    lua_pushnumber(L, 1);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), ERR_LUA);
    cr_assert_not_null(strstr(err, "attempt to call"), "%s", err);
    cr_assert_eq(lua_gettop(L), 1);
    lua_pushnil(L);
    cr_assert_eq(luavm_call(vm, 0, LUA_MULTRET, err, sizeof err), ERR_LUA);
    cr_assert_eq(lua_gettop(L), 1);
}

Test(luavm, no_growth_over_10k_calls)
{
    push_fn("return function(p, ctx)\n"
            "  if ctx.fail then error('nope') end\n"
            "  local hit = false\n"
            "  for _, t in ipairs(p.tags) do if t == 'vip' then hit = true end end\n"
            "  return hit and p.tier == 'gold' and promo.bucket(p.id, 'c') < 2, 'reason'\n"
            "end");
    int fn = lua_gettop(L);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_str_with_body(&pk, "c-42", 4);
    msgpack_pack_str_with_body(&pk, "tier", 4);
    msgpack_pack_str_with_body(&pk, "gold", 4);
    msgpack_pack_str_with_body(&pk, "tags", 4);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_str_with_body(&pk, "new", 3);
    msgpack_pack_str_with_body(&pk, "vip", 3);
    msgpack_pack_str_with_body(&pk, "eu", 2);

    size_t m0 = 0;
    for (int i = 0; i < 10100; i++) {
        if (i == 100) {
            lua_gc(L, LUA_GCCOLLECT, 0);
            m0 = luavm_mem_used(vm);
        }
        lua_pushvalue(L, fn);
        cr_assert_eq(luavm_push_msgpack(L, sb.data, sb.size), 0);
        lua_createtable(L, 0, 1);
        lua_pushboolean(L, i % 2);
        lua_setfield(L, -2, "fail");
        int rc = luavm_call(vm, 2, 2, err, sizeof err);
        if (i % 2) {
            cr_assert_eq(rc, ERR_LUA);
        } else {
            cr_assert_eq(rc, 0, "%s", err);
            cr_assert(lua_toboolean(L, -2));
            lua_pop(L, 2);
        }
        cr_assert_eq(lua_gettop(L), fn);
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
    size_t m1 = luavm_mem_used(vm);
    cr_assert_lt(m1, m0 + 4096, "grew from %zu to %zu", m0, m1);
    msgpack_sbuffer_destroy(&sb);
}

Test(luavm, pcall_xpcall_results)
{
    OK("local ok, a, b = pcall(function(x, y) return x + y, 'z' end, 1, 2)\n"
       "assert(ok == true and a == 3 and b == 'z')");
    OK("local ok, e = pcall(error, 'm', 0) assert(ok == false and e == 'm')");
    OK("local ok, e = xpcall(function() error('m', 0) end, function(m) return 'h:' .. m end)\n"
       "assert(ok == false and e == 'h:m')");
    OK("local ok, v = xpcall(function(a) return a * 2 end, print, 21) assert(ok and v == 42)");
    OK("assert(select('#', pcall(function() end)) == 1)");
}

/* ------------------------------------------------------------------ */
/* require                                                             */

Test(luavm, require_from_lib_dir)
{
    OK("local u = require('util') assert(u.double(4) == 8)\n"
       "assert(require('util') == u, 'cached')");
    OK("local d = require('sub.deep') assert(d.name == 'deep' and d.up == 42)");
    OK("assert(require('nilret') == true)");
    FAILS("return require('bad')", ERR_LUA, "bad.lua:2: assignment to undeclared global 'leaked'");
    cr_assert_not_null(strstr(err, libdir), "%s", err);
    FAILS("return require('boom')", ERR_LUA, "boom.lua:2: kaput");
    FAILS("return require('boom')", ERR_LUA, "kaput"); /* a failed load is not cached */
    FAILS("return require('loop_a')", ERR_LUA, "loop");
    FAILS("return require('missing')", ERR_LUA, "module 'missing' not found");
    /* a module's globals are its own: it cannot see or write the caller's */
    WRITE("peek.lua", "return function() return secret end\n");
    FAILS("local secret = 1 return require('peek')()", ERR_LUA, "undeclared global 'secret'");
    /* a file's cache holds until luavm_clear_modules; a file loaded later
     * gets its own instance, read from disk then */
    push_fn("return function() return require('util').double(1) end");
    int fn = luaL_ref(L, LUA_REGISTRYINDEX);
    int got[3];
    for (int i = 0; i < 3; i++) {
        if (i == 1)
            WRITE("util.lua", "return { double = function(x) return x * 3 end }\n");
        if (i == 2)
            luavm_clear_modules(vm);
        lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
        cr_assert_eq(luavm_call(vm, 0, 1, err, sizeof err), 0, "%s", err);
        got[i] = (int)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    cr_assert_eq(got[0], 2);
    cr_assert_eq(got[1], 2, "cached");
    cr_assert_eq(got[2], 3, "re-read after luavm_clear_modules");
    OK("assert(require('util').double(1) == 3)");
    luaL_unref(L, LUA_REGISTRYINDEX, fn);
}

Test(luavm, require_without_lib_dir)
{
    luavm_free(vm);
    cr_assert_eq(luavm_new(NULL, &vm), 0);
    L = luavm_state(vm);
    FAILS("return require('util')", ERR_LUA, "not found");
}

/* ------------------------------------------------------------------ */
/* msgpack                                                             */

struct mp_case {
    const char *bytes;
    size_t len;
    const char *json;
};
#define MP(b, j) { b, sizeof(b) - 1, j }

static void check_json(int idx, const char *want)
{
    int e = 0;
    json_t *got = luavm_to_json(L, idx, &e);
    cr_assert_not_null(got, "to_json err %d", e);
    json_t *exp = json_loads(want, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(exp, "%s", want);
    char *gs = json_dumps(got, JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_COMPACT);
    cr_assert(json_equal(got, exp), "got %s want %s", gs, want);
    free(gs);
    json_decref(got);
    json_decref(exp);
}

Test(luavm, msgpack_scalars_every_format)
{
    static const struct mp_case cases[] = {
        MP("\x00", "0"), MP("\x7f", "127"), MP("\xff", "-1"), MP("\xe0", "-32"),
        MP("\xcc\xff", "255"), MP("\xcd\x01\x00", "256"), MP("\xce\x00\x01\x00\x00", "65536"),
        MP("\xcf\x00\x00\x00\x01\x00\x00\x00\x00", "4294967296"),
        MP("\xd0\x80", "-128"), MP("\xd1\xfc\x18", "-1000"), MP("\xd2\xff\xfe\x79\x60", "-100000"),
        MP("\xd3\xff\xff\xff\xfe\xd5\xfa\x0e\x00", "-5000000000"),
        MP("\xca\x3f\xc0\x00\x00", "1.5"), MP("\xcb\x3f\xd0\x00\x00\x00\x00\x00\x00", "0.25"),
        MP("\xcb\x40\x00\x00\x00\x00\x00\x00\x00", "2"),
        MP("\xc2", "false"), MP("\xc3", "true"),
        MP("\xa3" "abc", "\"abc\""), MP("\xa0", "\"\""), MP("\xd9\x03" "abc", "\"abc\""),
        MP("\xda\x00\x03" "abc", "\"abc\""), MP("\xdb\x00\x00\x00\x03" "abc", "\"abc\""),
        MP("\xc4\x02" "hi", "\"hi\""), MP("\xc5\x00\x02" "hi", "\"hi\""),
        MP("\xc6\x00\x00\x00\x02" "hi", "\"hi\""),
        MP("\xd4\x01" "a", "\"a\""), MP("\xd5\x01" "ab", "\"ab\""),
        MP("\xc7\x03\x05" "xyz", "\"xyz\""),
        MP("\x90", "{}"), MP("\x80", "{}"),
        MP("\x93\x01\xa1x\xc3", "[1, \"x\", true]"),
        MP("\xdc\x00\x02\x01\x02", "[1, 2]"), MP("\xdd\x00\x00\x00\x01\x05", "[5]"),
        MP("\x82\xa1" "a\x01\xa1" "b\x91\x81\xa1" "c\xc2", "{\"a\": 1, \"b\": [{\"c\": false}]}"),
        MP("\xde\x00\x01\xa1k\xa1v", "{\"k\": \"v\"}"), MP("\xdf\x00\x00\x00\x01\xa1k\x00", "{\"k\": 0}"),
        MP("\x82\xa1" "a\xc0\xa1" "b\x01", "{\"b\": 1}"),          /* nil value skipped */
        MP("\x82\xc0\x01\xa1" "b\x02", "{\"b\": 2}"),              /* nil key skipped */
        MP("\x82\x01\xa1x\x02\xa1y", "[\"x\", \"y\"]"),            /* int keys */
        MP("\xc0", "null"),
    };
    int top = lua_gettop(L);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = luavm_push_msgpack(L, cases[i].bytes, cases[i].len);
        cr_assert_eq(rc, 0, "case %zu rc %d", i, rc);
        cr_assert_eq(lua_gettop(L), top + 1, "case %zu", i);
        check_json(-1, cases[i].json);
        lua_settop(L, top);
    }
}

Test(luavm, msgpack_nil_in_array_keeps_positions)
{
    cr_assert_eq(luavm_push_msgpack(L, "\x93\x01\xc0\x03", 4), 0);
    cr_assert_eq(lua_objlen(L, -1) == 3 || lua_objlen(L, -1) == 1, 1);
    lua_rawgeti(L, -1, 3);
    cr_assert_eq(lua_tonumber(L, -1), 3);
    lua_rawgeti(L, -2, 2);
    cr_assert(lua_isnil(L, -1));
    lua_settop(L, 0);
}

Test(luavm, msgpack_roundtrip_from_msgpack_c)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_str_with_body(&pk, "c-1", 3);
    msgpack_pack_str_with_body(&pk, "ints", 4);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_int64(&pk, 0);
    msgpack_pack_int64(&pk, 200);
    msgpack_pack_int64(&pk, 70000);
    msgpack_pack_int64(&pk, -7);
    msgpack_pack_int64(&pk, -70000);
    msgpack_pack_int64(&pk, 9007199254740992LL);
    msgpack_pack_str_with_body(&pk, "floats", 6);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, 3.25);
    msgpack_pack_float(&pk, -0.5f);
    msgpack_pack_str_with_body(&pk, "flags", 5);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    msgpack_pack_str_with_body(&pk, "bin", 3);
    msgpack_pack_bin_with_body(&pk, "\x01\x02\x03", 3);
    msgpack_pack_str_with_body(&pk, "nested", 6);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "a", 1);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "b", 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "deep", 4);
    char longs[300];
    memset(longs, 'q', sizeof longs);
    msgpack_pack_str_with_body(&pk, "long", 4);
    msgpack_pack_str_with_body(&pk, longs, sizeof longs);
    msgpack_pack_str_with_body(&pk, "empty", 5);
    msgpack_pack_map(&pk, 0);

    cr_assert_eq(luavm_push_msgpack(L, sb.data, sb.size), 0);
    push_fn("return function(p)\n"
            "  assert(p.id == 'c-1')\n"
            "  assert(p.ints[1] == 0 and p.ints[2] == 200 and p.ints[3] == 70000)\n"
            "  assert(p.ints[4] == -7 and p.ints[5] == -70000 and p.ints[6] == 2^53)\n"
            "  assert(p.floats[1] == 3.25 and p.floats[2] == -0.5)\n"
            "  assert(p.flags[1] == true and p.flags[2] == false)\n"
            "  assert(p.bin == '\\1\\2\\3')\n"
            "  assert(p.nested.a.b[1] == 'deep')\n"
            "  assert(#p.long == 300 and p.long:sub(1, 1) == 'q')\n"
            "  assert(next(p.empty) == nil)\n"
            "  return true\n"
            "end");
    lua_insert(L, -2);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
    cr_assert(lua_toboolean(L, -1));
    lua_settop(L, 0);
    msgpack_sbuffer_destroy(&sb);
}

Test(luavm, msgpack_malformed_and_truncated)
{
    static const struct mp_case bad[] = {
        MP("\xc1", ""), MP("", ""), MP("\xa3" "ab", ""), MP("\xd9", ""), MP("\xd9\x05" "ab", ""),
        MP("\xcd\x01", ""), MP("\xcf\x00\x00\x00", ""), MP("\xcb\x00", ""), MP("\x92\x01", ""),
        MP("\x81\xa1" "a", ""), MP("\xdd\xff\xff\xff\xff\x01", ""), MP("\xdf\xff\xff\xff\xff", ""),
        MP("\x01\x02", ""),                         /* trailing bytes */
        MP("\x81\x90\x01", ""),                     /* table key */
        MP("\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01", ""), /* NaN key */
        MP("\xc7\x05\x01" "ab", ""), MP("\xd8\x01" "abc", ""),
    };
    lua_pushliteral(L, "keep");
    int top = lua_gettop(L);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(luavm_push_msgpack(L, bad[i].bytes, bad[i].len), ERR_PARSE, "case %zu", i);
        cr_assert_eq(lua_gettop(L), top, "case %zu", i);
    }
    /* every proper prefix of a valid nested value is rejected */
    static const char ok[] = "\x83\xa2id\xa3" "c-1\xa4tags\x92\xa1x\xcd\x01\x00\xa1n\x81\xa1k\xcb"
                             "\x3f\xd0\x00\x00\x00\x00\x00\x00";
    size_t n = sizeof ok - 1;
    cr_assert_eq(luavm_push_msgpack(L, ok, n), 0);
    lua_pop(L, 1);
    for (size_t cut = 0; cut < n; cut++) {
        cr_assert_eq(luavm_push_msgpack(L, ok, cut), ERR_PARSE, "prefix %zu", cut);
        cr_assert_eq(lua_gettop(L), top);
    }
    cr_assert_str_eq(lua_tostring(L, -1), "keep");
}

Test(luavm, msgpack_depth_limit)
{
    char buf[80];
    memset(buf, 0x91, 64);
    buf[64] = 0x01;
    cr_assert_eq(luavm_push_msgpack(L, buf, 65), 0, "depth 64 is fine");
    lua_pop(L, 1);
    memset(buf, 0x91, 65);
    buf[65] = 0x01;
    cr_assert_eq(luavm_push_msgpack(L, buf, 66), ERR_TOOBIG);
    cr_assert_eq(lua_gettop(L), 0);
    char mbuf[200];
    for (int i = 0; i < 70; i++) {            /* {1: {1: ... {1: 1}}} 70 deep */
        mbuf[2 * i] = (char)0x81;
        mbuf[2 * i + 1] = 0x01;
    }
    mbuf[140] = 0x01;
    cr_assert_eq(luavm_push_msgpack(L, mbuf, 141), ERR_TOOBIG);
    cr_assert_eq(lua_gettop(L), 0);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */

Test(luavm, json_roundtrip)
{
    const char *doc = "{\"a\": [1, 2.5, \"x\", true, false, {\"b\": {}}], \"n\": -3, \"s\": \"caf\\u00e9\","
                      " \"big\": 9007199254740993.0, \"o\": {\"k\": [[]]}}";
    json_t *j = json_loads(doc, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_eq(luavm_push_json(L, j), 0);
    /* [[]] comes back as [{}]: an empty table is an object */
    check_json(-1, "{\"a\": [1, 2.5, \"x\", true, false, {\"b\": {}}], \"n\": -3, \"s\": \"caf\\u00e9\","
                   " \"big\": 9007199254740992, \"o\": {\"k\": [{}]}}");
    lua_pop(L, 1);
    json_decref(j);

    j = json_loads("{\"a\": null, \"b\": [1, null, 3]}", 0, NULL);
    cr_assert_eq(luavm_push_json(L, j), 0);
    lua_getfield(L, -1, "a");
    cr_assert(lua_isnil(L, -1));
    lua_getfield(L, -2, "b");
    lua_rawgeti(L, -1, 3);
    cr_assert_eq(lua_tonumber(L, -1), 3);
    lua_settop(L, 0);
    json_decref(j);

    cr_assert_eq(luavm_push_json(L, NULL), 0);
    cr_assert(lua_isnil(L, -1));
    lua_settop(L, 0);

    json_t *deep = json_array();
    for (int i = 0; i < 64; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, deep);
        deep = outer;
    }
    cr_assert_eq(luavm_push_json(L, deep), ERR_TOOBIG);
    cr_assert_eq(lua_gettop(L), 0);
    json_decref(deep);
}

static json_t *lua_json(const char *expr, int *e)
{
    char src[512];
    snprintf(src, sizeof src, "return %s", expr);
    cr_assert_eq(luavm_load_chunk(vm, "j.lua", src, strlen(src), err, sizeof err), 0, "%s", err);
    int top = lua_gettop(L);
    json_t *j = luavm_to_json(L, -1, e);
    cr_assert_eq(lua_gettop(L), top);
    lua_pop(L, 1);
    return j;
}

static void json_is(const char *expr, const char *want)
{
    int e = -1;
    json_t *j = lua_json(expr, &e);
    cr_assert_not_null(j, "%s: err %d", expr, e);
    cr_assert_eq(e, 0);
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    char *gs = json_dumps(j, JSON_ENCODE_ANY | JSON_SORT_KEYS);
    cr_assert(json_equal(j, w), "%s -> %s, want %s", expr, gs, want);
    free(gs);
    json_decref(j);
    json_decref(w);
}

static void json_fails(const char *expr, int code)
{
    int e = 0;
    json_t *j = lua_json(expr, &e);
    cr_assert_null(j, "%s converted", expr);
    cr_assert_eq(e, code, "%s: err %d", expr, e);
}

Test(luavm, to_json)
{
    json_is("{1, 2, 3}", "[1, 2, 3]");
    json_is("{}", "{}");
    json_is("{a = 1, b = {true, false}}", "{\"a\": 1, \"b\": [true, false]}");
    json_is("{[1] = 'a', [3] = 'c'}", "{\"1\": \"a\", \"3\": \"c\"}");
    json_is("{1, 2, x = 3}", "{\"1\": 1, \"2\": 2, \"x\": 3}");
    json_is("{[1.5] = 1}", "{\"1.5\": 1}");
    json_is("nil", "null");
    json_is("2^53", "9007199254740992");
    json_is("2^53 + 2", "9007199254740994.0");
    json_is("-3", "-3");
    json_is("0.1", "0.1");
    json_is("'caf\\195\\169'", "\"caf\\u00e9\"");
    json_is("(function() local s = {1} return {s, s} end)()", "[[1], [1]]");
    json_fails("(function() local t = {} t.self = t return t end)()", ERR_INVAL);
    json_fails("{f = print}", ERR_INVAL);
    json_fails("print", ERR_INVAL);
    json_fails("{0/0}", ERR_INVAL);
    json_fails("{x = 1/0}", ERR_INVAL);
    json_fails("-1/0", ERR_INVAL);
    json_fails("{[true] = 1}", ERR_INVAL);
    json_fails("'\\255'", ERR_INVAL);
    json_fails("(function() local t = {} local c = t for i = 1, 70 do c[1] = {} c = c[1] end return t end)()",
               ERR_TOOBIG);
    char want[200] = "";
    for (int i = 0; i < 63; i++)
        strcat(want, "[");
    strcat(want, "{}");
    for (int i = 0; i < 63; i++)
        strcat(want, "]");
    json_is("(function() local t = {} local c = t for i = 1, 63 do c[1] = {} c = c[1] end return t end)()",
            want);
}

/* ------------------------------------------------------------------ */
/* promo                                                               */

Test(luavm, promo_hash_bucket)
{
    OK("assert(promo.hash('') == 2166136261)");
    OK("assert(promo.hash('a') == 3826002220)");
    OK("assert(promo.hash('hello') == 1335831723)");
    OK("assert(promo.hash(12) == promo.hash('12'))");
    OK("local b = promo.bucket('c-1', 'spring') assert(b >= 0 and b < 1)\n"
       "assert(promo.bucket('c-1', 'spring') == b)\n"
       "assert(promo.bucket('x') == promo.bucket('x', ''))\n"
       "assert(promo.bucket('x') == (promo.hash(tostring(promo.hash('x/'))) % 10000) / 10000)");
    FAILS("local v = promo.hash({})", ERR_LUA, "bad argument #1 to 'hash'");
    FAILS("local v = promo.bucket('x', {})", ERR_LUA, "bad argument #2 to 'bucket'");
}

Test(luavm, promo_time_functions)
{
    OK("assert(math.abs(promo.now() - os.time()) <= 2)");
    OK("local d = promo.days_since(promo.now() - 2 * 86400) assert(math.abs(d - 2) < 1e-9)");
    OK("local d = promo.days_since('1970-01-02T00:00:00Z')\n"
       "assert(math.abs(d - (promo.now() - 86400) / 86400) < 1e-4)");
    OK("local v, e = promo.days_since('garbage') assert(v == nil and e:find('invalid'), e)");
    OK("local v, e = promo.days_since('2026-03-01\\0x') assert(v == nil and e)");
    FAILS("local v = promo.days_since({})", ERR_LUA, "bad argument #1 to 'days_since'");
    FAILS("local v = promo.days_since()", ERR_LUA, "bad argument #1");

    OK("assert(promo.time('1970-01-01T00:00:00Z') == 0)");
    OK("assert(promo.time('2026-03-01T00:00:00Z') == 1772323200)");
    OK("assert(promo.time('2026-03-01T02:00:00+02:00') == 1772323200)");
    OK("local v, e = promo.time('2026-13-01') assert(v == nil and type(e) == 'string')");
    FAILS("local v = promo.time()", ERR_LUA, "bad argument #1 to 'time'");

    OK("assert(promo.hour('UTC', 0) == 0)");
    OK("assert(promo.hour('UTC', 13 * 3600 + 5) == 13)");
    OK("assert(promo.hour(nil, 7200) == 2)");
    OK("assert(promo.hour('+02:00', 23 * 3600) == 1)");
    OK("assert(promo.hour('UTC', '2026-03-01T05:30:00Z') == 5)");
    OK("assert(promo.hour('Europe/Paris', '2026-07-01T12:00:00Z') == 14)");
    OK("local h = promo.hour() assert(h >= 0 and h <= 23)");
    OK("local h, e = promo.hour('No/Such_Zone', 0) assert(h == nil and e:find('zone'), e)");
    OK("local h, e = promo.hour('../../etc/passwd', 0) assert(h == nil and e)");
    OK("local h, e = promo.hour('UTC', 'nope') assert(h == nil and e)");
    FAILS("local v = promo.hour({})", ERR_LUA, "bad argument #1 to 'hour'");
    FAILS("local v = promo.hour('UTC', {})", ERR_LUA, "bad argument #2 to 'hour'");

    OK("assert(promo.weekday('UTC', 0) == 4)");                          /* Thursday */
    OK("assert(promo.weekday('UTC', '2026-03-01T00:00:00Z') == 7)");     /* Sunday */
    OK("assert(promo.weekday('UTC', '2026-03-02T00:00:00Z') == 1)");     /* Monday */
    OK("assert(promo.weekday('-05:00', '2026-03-02T01:00:00Z') == 7)");
    OK("local w = promo.weekday() assert(w >= 1 and w <= 7)");
    OK("local w, e = promo.weekday('Nope/Nope') assert(w == nil and e)");
    FAILS("local v = promo.weekday(1, {})", ERR_LUA, "bad argument #2 to 'weekday'");
}

Test(luavm, promo_test_clock)
{
    clock_set_offset(86400);
    OK("assert(math.abs(promo.now() - os.time() - 86400) <= 2)");
    clock_set_offset(0);
}

Test(luavm, promo_collections)
{
    OK("assert(promo.has({'a', 'b'}, 'b') == true and promo.has({'a'}, 'z') == false)");
    OK("assert(promo.has({1, 2}, 2.0) and not promo.has({}, nil) and not promo.has({'1'}, 1))");
    OK("assert(promo.in_set('FR', {'FR', 'DE'}) and not promo.in_set('IT', {'FR'}))");
    OK("local s = promo.set({'FR', 'DE', 'FR'})\n"
       "assert(s.FR == true and s.DE == true and s.IT == nil and promo.count(s) == 2)\n"
       "assert(promo.in_set('DE', s) and not promo.in_set('IT', s) and not promo.in_set(nil, s))");
    OK("assert(promo.count({}) == 0 and promo.count({1, 2, x = 3}) == 3)");
    OK("assert(promo.clamp(5, 0, 3) == 3 and promo.clamp(-1, 0, 3) == 0 and promo.clamp(2, 0, 3) == 2)");
    FAILS("local v = promo.has(nil, 1)", ERR_LUA, "bad argument #1 to 'has'");
    FAILS("local v = promo.has({})", ERR_LUA, "bad argument #2 to 'has'");
    FAILS("local v = promo.in_set(1, 'x')", ERR_LUA, "bad argument #2 to 'in_set'");
    FAILS("local v = promo.set('x')", ERR_LUA, "bad argument #1 to 'set'");
    FAILS("local v = promo.set({0/0})", ERR_LUA, "NaN");
    FAILS("local v = promo.count(5)", ERR_LUA, "bad argument #1 to 'count'");
    FAILS("local v = promo.clamp(1, 3, 2)", ERR_LUA, "bad argument #2 to 'clamp'");
    FAILS("local v = promo.clamp('a', 0, 1)", ERR_LUA, "bad argument #1 to 'clamp'");
}

Test(luavm, promo_log_and_print)
{
    log_set_level(LOG_INFO);
    OK("promo.log('hello', 1, nil, true, {}, 'quote\"and\\nnewline')");
    OK("promo.log(('x'):rep(5000))");
    OK("promo.log()");
    OK("print('from print', 2)");
    OK("promo.log(setmetatable({}, { __tostring = function() return 'custom' end }))");
    FAILS("promo.log(setmetatable({}, { __tostring = function() error('bad') end }))", ERR_LUA, "bad");
    OK("pcall(promo.log, 'via pcall')");
}

Test(luavm, open_promo_on_plain_state)
{
    lua_State *P = luaL_newstate();
    luavm_open_promo(P);
    cr_assert_eq(luaL_dostring(P, "return promo.hash('a')"), 0);
    cr_assert_eq(lua_tonumber(P, -1), 3826002220.0);
    lua_close(P);
}

Test(luavm, register_new_library)
{
    lua_newtable(L);
    lua_pushnumber(L, 42);
    lua_setfield(L, -2, "answer");
    luavm_register(L, "net");
    lua_pushnumber(L, 7);
    luavm_register(L, "SEVEN");
    OK("assert(net.answer == 42 and SEVEN == 7)");
    FAILS("net.answer = 1", ERR_LUA, "read-only");
}

/* ------------------------------------------------------------------ */
/* read-only views of hook inputs (issues 12, 13)                      */

/* Push a profile-like table built by trusted Lua (a plain state would do;
 * the vm's own state is used unarmed, as decide does). */
static int push_profile(void)
{
    const char *src =
        "return { id = 'c-1', first_name = 'Ana', tier = 'gold', ltv = 120,\n"
        "  tags = { 'vip', 'eu', 'new' }, address = { city = 'Paris', geo = { lat = 48.5 } },\n"
        "  stats = { visits = 3 }, consent = { email = true } }";
    cr_assert_eq(luaL_loadstring(L, src), 0);
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0);
    return lua_gettop(L);
}

/* Call `fn_src` (a chunk returning a function) with views of a profile and
 * a ctx; returns luavm_call's code, the function's first result (as text)
 * in `out`.  The originals are checked to be unchanged afterwards. */
static int call_with_views(const char *fn_src, char *out, size_t outlen)
{
    int top = lua_gettop(L);
    int p = push_profile();
    cr_assert_eq(luaL_loadstring(L, "return { country = 'FR', placement = 'home' }"), 0);
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0);
    int ctx = lua_gettop(L);
    int pv = luavm_push_readonly(L, p, "profile");
    int cv = luavm_push_readonly(L, ctx, "ctx");
    push_fn(fn_src);
    lua_pushvalue(L, pv);
    lua_pushvalue(L, cv);
    int rc = luavm_call(vm, 2, 1, err, sizeof err);
    out[0] = '\0';
    if (rc == 0) {
        snprintf(out, outlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    /* the originals are as they were loaded */
    lua_getfield(L, p, "first_name");
    cr_assert_str_eq(lua_tostring(L, -1), "Ana");
    lua_getfield(L, p, "tags");
    cr_assert_eq(lua_objlen(L, -1), 3);
    lua_rawgeti(L, -1, 1);
    cr_assert_str_eq(lua_tostring(L, -1), "vip");
    lua_getfield(L, p, "address");
    lua_getfield(L, -1, "city");
    cr_assert_str_eq(lua_tostring(L, -1), "Paris");
    lua_getfield(L, p, "stats");
    lua_getfield(L, -1, "visits");
    cr_assert_eq(lua_tonumber(L, -1), 3);
    cr_assert(lua_getmetatable(L, p) == 0, "no metatable appeared on the original");
    lua_getfield(L, ctx, "country");
    cr_assert_str_eq(lua_tostring(L, -1), "FR");
    lua_settop(L, top);
    return rc;
}

/* Every body runs twice: as written (a file that cannot write tables gets
 * the originals, luavm_pure.c) and with a table store added (views). */
#define IMPURE "local w_ = {} w_[1] = 0 "
#define VIEW_OK(body, want) do {                                                    \
        char got_[256];                                                             \
        int rc_ = call_with_views("return function(p, ctx) " body " end", got_,    \
                                  sizeof got_);                                    \
        cr_assert_eq(rc_, 0, "%s\n-> %s", body, err);                               \
        cr_assert_str_eq(got_, want, "%s", body);                                   \
        rc_ = call_with_views("return function(p, ctx) " IMPURE body " end", got_, \
                              sizeof got_);                                        \
        cr_assert_eq(rc_, 0, "(views) %s\n-> %s", body, err);                       \
        cr_assert_str_eq(got_, want, "(views) %s", body);                           \
    } while (0)
#define VIEW_FAILS(body, sub) do {                                                  \
        char got_[256];                                                             \
        int rc_ = call_with_views("return function(p, ctx) " body " end", got_,    \
                                  sizeof got_);                                    \
        cr_assert_eq(rc_, ERR_LUA, "%s\n-> rc %d %s", body, rc_, err);             \
        cr_assert_not_null(strstr(err, sub), "%s\n-> '%s' lacks '%s'", body, err, sub); \
    } while (0)

Test(luavm, views_read_like_tables)
{
    VIEW_OK("return p.first_name .. ' ' .. p.tier .. ' ' .. ctx.country", "Ana gold FR");
    VIEW_OK("return #p.tags .. p.tags[2] .. p.address.city .. p.address.geo.lat", "3euParis48.5");
    VIEW_OK("return type(p) .. type(p.tags) .. type(ctx)", "tabletabletable");
    VIEW_OK("local s = '' for i, v in ipairs(p.tags) do s = s .. i .. v end return s",
            "1vip2eu3new");
    VIEW_OK("local n = 0 for k, v in pairs(p) do n = n + 1 end return n", "8");
    VIEW_OK("local k = {} for key in pairs(p.address) do k[#k + 1] = key end table.sort(k)"
            " return table.concat(k, ',')", "city,geo");
    VIEW_OK("return table.concat(p.tags, '+') .. select('#', unpack(p.tags))", "vip+eu+new3");
    VIEW_OK("return tostring(rawget(p, 'tier')) .. tostring(next(p.consent))", "goldemail");
    VIEW_OK("return tostring(promo.has(p.tags, 'eu')) .. promo.count(p.address) .."
            " tostring(promo.set(p.tags).new) .. tostring(promo.in_set('vip', p.tags))",
            "true2truetrue");
    VIEW_OK("return (('{tier}'):gsub('{(%w+)}', p))", "gold");
    VIEW_OK("return table.maxn(p.tags) .. tostring(p.missing) .. tostring(p.tags[9])",
            "3nilnil");
    VIEW_OK("return tostring(p):match('^table: ') and 'ok'", "ok");
    VIEW_OK("return type(getmetatable(p)) == 'table' and 'leak' or 'hidden'", "hidden");
    VIEW_OK("return tostring(p.tags == p.tags and p.address == p.address)", "true");
    /* a hook may return parts of p: C reads them through (render's message) */
    push_fn("return function(p) return { to = p.first_name, where = p.address, tags = p.tags } end");
    int fn = lua_gettop(L);
    int pr = push_profile();
    int pv = luavm_push_readonly(L, pr, "profile");
    lua_pushvalue(L, fn);
    lua_pushvalue(L, pv);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
    int jerr = 0;
    json_t *j = luavm_to_json(L, -1, &jerr);
    cr_assert_not_null(j, "err %d", jerr);
    char *txt = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    cr_assert_str_eq(txt, "{\"tags\":[\"vip\",\"eu\",\"new\"],\"to\":\"Ana\","
                          "\"where\":{\"city\":\"Paris\",\"geo\":{\"lat\":48.5}}}");
    free(txt);
    json_decref(j);
    /* C readers get the original */
    int orig = luavm_push_original(L, pv);
    cr_assert(lua_rawequal(L, orig, pr));
    lua_settop(L, fn - 1);
}

Test(luavm, views_refuse_every_write)
{
    VIEW_FAILS("p.first_name = 'PWNED'", "fn.lua:1: profile is read-only");
    VIEW_FAILS("p.new_field = 1", "profile is read-only");
    VIEW_FAILS("p.stats.visits = 1e9", "profile is read-only");
    VIEW_FAILS("p.address.geo.lat = 0", "profile is read-only");
    VIEW_FAILS("p.tags[1] = 'x'", "profile is read-only");
    VIEW_FAILS("ctx.country = 'XX'", "ctx is read-only");
    VIEW_FAILS("rawset(p, 'tier', 'x')", "profile is read-only");
    VIEW_FAILS("rawset(p.stats, 'x', 1)", "profile is read-only");
    VIEW_FAILS("table.insert(p.tags, 'x')", "profile is read-only");
    VIEW_FAILS("table.remove(p.tags)", "profile is read-only");
    VIEW_FAILS("table.sort(p.tags)", "profile is read-only");
    VIEW_FAILS("setmetatable(p, {})", "profile is read-only");
    VIEW_FAILS("setmetatable(ctx, nil)", "ctx is read-only");
    /* caught writes still leave the data alone (checked by call_with_views) */
    VIEW_OK("local ok = pcall(function() p.first_name = 'x' end) return tostring(ok) .. p.first_name",
            "falseAna");
    /* no real table leaks: everything reachable is a view */
    VIEW_OK("local n = 0 for k, v in pairs(p) do if type(v) == 'table' then"
            " if pcall(function() v.x = 1 end) then error('leak at ' .. k) end n = n + 1 end end"
            " return n", "4");
    VIEW_OK("for _, t in ipairs({ rawget(p, 'stats'), select(2, next(p.address, 'city')),"
            " (unpack({ p.address })) }) do if pcall(rawset, t, 'x', 1) then error('leak') end end"
            " return 'sealed'", "sealed");
}

Test(luavm, views_of_cycles_and_deep_tables)
{
    /* cycles and shared subtables come out as views too (the API is generic) */
    cr_assert_eq(luaL_loadstring(L, "local t = { name = 'x' } t.self = t t.kids = { t, { t } } return t"), 0);
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0);
    int t = lua_gettop(L);
    int v = luavm_push_readonly(L, t, "profile");
    push_fn("return function(v) return tostring(v.self == v and v.kids[1] == v and v.kids[2][1].name) end");
    lua_pushvalue(L, v);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(lua_tostring(L, -1), "x");
    lua_settop(L, t - 1);
    /* non-tables pass through */
    lua_pushnumber(L, 7);
    int n = luavm_push_readonly(L, -1, "ctx");
    cr_assert_eq(lua_tonumber(L, n), 7);
    lua_settop(L, t - 1);
}

/* A campaign that rewrites what it required changes its own copy only. */
Test(luavm, require_gives_each_file_its_own_module)
{
    WRITE("shared.lua", "local M = { n = 0 }\nfunction M.greet(n) return 'Hi ' .. n end\n"
                        "function M.bump() M.n = M.n + 1 return M.n end\nreturn M\n");
    push_fn("local s = require('shared') return function() s.greet = function() return 'PWNED' end"
            " s.bump() s.bump() return s.greet('x') end");
    int a = lua_gettop(L);
    push_fn("local s = require('shared') return function() return s.greet('Bo') .. s.bump() end");
    int b = lua_gettop(L);
    lua_pushvalue(L, a);
    cr_assert_eq(luavm_call(vm, 0, 1, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(lua_tostring(L, -1), "PWNED");
    lua_pushvalue(L, b);
    cr_assert_eq(luavm_call(vm, 0, 1, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(lua_tostring(L, -1), "Hi Bo1", "the other file's module is untouched");
    lua_settop(L, a - 1);
    /* a module required from a module belongs to the same file */
    WRITE("outer.lua", "local s = require('shared') return { s = s }\n");
    OK("local o = require('outer') assert(o.s == require('shared'))");
}

/* A file that provably cannot write a table gets the originals (no view
 * costs); anything that might write gets views (luavm_pure.c). */
static int gets_original(const char *src)
{
    int top = lua_gettop(L);
    int p = push_profile();
    int v = luavm_push_readonly(L, p, "profile");
    int rc = luavm_load_chunk(vm, "pure.lua", src, strlen(src), err, sizeof err);
    cr_assert_eq(rc, 0, "%s\n-> %s", src, err);
    lua_pushvalue(L, v);
    rc = luavm_call(vm, 1, 1, err, sizeof err);
    cr_assert_eq(rc, 0, "%s\n-> %s", src, err);
    int orig = lua_rawequal(L, -1, p);
    cr_assert(orig || (luavm_push_original(L, -1) && lua_rawequal(L, -1, p)), "%s", src);
    lua_settop(L, top);
    return orig;
}

Test(luavm, pure_files_get_the_originals)
{
    WRITE("puremod.lua", "local M = {}\nM.k = 1\nfunction M.get(t, k) return t[k] end\nreturn M\n");
    WRITE("writer.lua", "local M = {}\nfunction M.mark(t) t.marked = true end\nreturn M\n");
    static const struct { const char *src; int original; } cases[] = {
        { "return function(p) return p end", 1 },
        { "local T = { a = 1 } T.b = 2 T[3] = 4 return function(p) return p end", 1 },
        { "local function has(l, v) for i = 1, #l do if l[i] == v then return true end end end\n"
          "return function(p) if has(p.tags, 'vip') and ('x'):find('x') then return p end return p end", 1 },
        { "local m = require('puremod') return function(p) return m.get(p, 'id') and p end", 1 },
        { "return function(p) local t = {} t[1] = 1 return p end", 0 },
        { "return function(p) local t = { n = #p.tags } return p end", 0 },
        { "return function(p) local t = { unpack(p.tags) } return p end", 0 },
        { "local rs = rawset return function(p) return p end", 0 },
        { "local t = table return function(p) return p end", 0 },
        { "return function(p) local s = setmetatable return p end", 0 },
        { "local f = loadstring('return 1') return function(p) return p end", 0 },
        { "local f = load('return 1') return function(p) return p end", 0 },
        { "return function(p) local m = require('puremod') return p end", 0 },
        { "local w = require('writer') return function(p) return p end", 0 },
        { "local w = require('puremod') local x = require('writer') return function(p) return p end", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(gets_original(cases[i].src), cases[i].original, "case %zu: %s", i, cases[i].src);
    /* a pure file cannot load a writing module later, when p is its own */
    push_fn("local req = require return function(p) local w = req('writer') w.mark(p) return p end");
    int fn = lua_gettop(L);
    int p = push_profile();
    int v = luavm_push_readonly(L, p, "profile");
    lua_pushvalue(L, fn);
    lua_pushvalue(L, v);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), ERR_LUA);
    cr_assert_not_null(strstr(err, "require it at the top of the file"), "%s", err);
    lua_getfield(L, p, "marked");
    cr_assert(lua_isnil(L, -1), "the original was written");
    lua_settop(L, fn - 1);
}

static int c_true(lua_State *Ls)
{
    lua_pushboolean(Ls, 1);
    return 1;
}

/* luavm_fn_returns_true: exactly `return true` (any names, 0-3 parameters,
 * any layout or comments) and nothing else — decide skips calling such an
 * eligible, so a function that reads, calls or returns anything else must
 * never be taken for one. */
Test(luavm, fn_returns_true_only_for_return_true)
{
    static const struct { const char *src; int yes; } cases[] = {
        { "return function(p, ctx) return true end", 1 },
        { "return function(a, b)\n  -- always\n  return true\nend", 1 },
        { "return function() return true end", 1 },
        { "return function(p) return true end", 1 },
        { "local x = 1 return function(p, ctx) return true end", 1 },
        { "return function(p, ctx) return false end", 0 },
        { "return function(p, ctx) return nil end", 0 },
        { "return function(p, ctx) return 1 end", 0 },
        { "return function(p, ctx) return true, 'why' end", 0 },
        { "return function(p, ctx) return p.x end", 0 },
        { "return function(p, ctx) return p ~= nil end", 0 },
        { "return function(p, ctx) local _ = p.x return true end", 0 },
        { "return function(p, ctx) error('no') return true end", 0 },
        { "return function(p, ctx) if p.vip then return true end return true end", 0 },
        { "local ok = true return function(p, ctx) return ok end", 0 },
        { "return function(p, ctx) promo.log('x') return true end", 0 },
        { "return function(...) return true end", 0 },
        { "return function(p, ctx) while true do end return true end", 0 },
        { "return function(p, ctx) local function f() return true end return true end", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        push_fn(cases[i].src); /* the function the file returns */
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        cr_assert_eq(luavm_fn_returns_true(vm, ref), cases[i].yes, "case %zu: %s", i, cases[i].src);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
    }
    lua_pushcfunction(L, c_true); /* a C function is never judged */
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cr_assert_eq(luavm_fn_returns_true(vm, ref), 0);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    cr_assert_eq(luavm_fn_returns_true(vm, LUA_NOREF), 0);
    cr_assert_eq(luavm_any_disabled(vm), 0);
}
