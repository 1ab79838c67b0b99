/*
 * luavm_pure.c — which files cannot write to any table: a static check of
 * their bytecode, so their hooks can be given p and ctx themselves instead
 * of read-only views.
 *
 * Why: a view costs a metamethod lookup (a C call) on every read — about
 * 130 instructions where a table read costs ten — and making the views
 * costs a few thousand per decide; on the reference workload (85 hook
 * calls of a few reads each per decide) views alone added a third to a
 * decide.  Most campaign hooks only read.  A hook whose file provably
 * cannot modify a table is safe with the originals: nothing it runs can
 * write to them, so no other campaign can see a change.
 *
 * The rule (sound, deliberately simple): every function of the file and of
 * the modules it requires, except the main chunks (they run once, at load,
 * before any hook sees p or ctx), contains no table store (TSETV, TSETS,
 * TSETB, TSETM — LuaJIT's parser emits no other), and no function of them,
 * main chunks included, names the globals `rawset`, `setmetatable`,
 * `table`, `load` or `loadstring` (the only ways to reach code that writes
 * a table or code this check has not seen).  `require` may be named by
 * main chunks only; a module first required at run time by a pure file
 * must be pure too, or the require fails ("require it at the top of the
 * file").  Metamethods, string.gsub with a function, pcall and friends only
 * call functions that are themselves checked.  Opcode numbers are learnt
 * from probe functions at start (jit.util, built into LuaJIT), so a
 * LuaJIT with a different numbering still checks right; if the probes do
 * not come out as expected, every file counts as impure (views for all).
 *
 * Purity is decided when a file loads and never changes.  A pure file's
 * environments carry a mark (a light-userdata key scripts cannot produce).
 * The engine hands hooks the inputs it registered with luavm_push_readonly;
 * call_impl (luavm.c) leaves them as they are for a function whose
 * environment has the mark and puts read-only views in their place for
 * every other function (luavm_readonly.c).  The per-call cost for a pure
 * hook is a cache lookup by the function's address.
 *
 * The same bytecode walk also says which functions are `function(p, ctx)
 * return true end` exactly (luavm_fn_returns_true): a default written out
 * (an `eligible` that always passes), whose call a caller may skip.
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

const char luavm_key_pure = 'u';

static const char checker_src[] =
    "local funcbc, funck = ...\n"
    "local band, rshift, type, pairs, ipairs = bit.band, bit.rshift, type, pairs, ipairs\n"
    "local function ops(f)\n"
    "  local s = {}\n"
    "  for pc = 1, 1e9 do local ins = funcbc(f, pc) if not ins then break end s[band(ins, 0xff)] = true end\n"
    "  return s\n"
    "end\n"
    "local function only(a, ...)\n"
    "  local r\n"
    "  for k in pairs(a) do\n"
    "    local keep = true\n"
    "    for _, b in ipairs({ ... }) do if b[k] then keep = false end end\n"
    "    if keep then if r then return nil end r = k end\n"
    "  end\n"
    "  return r\n"
    "end\n"
    "local TSETV = only(ops(function(t, k, v) t[k] = v end), ops(function(t, k, v) end))\n"
    "local TSETS = only(ops(function(t, v) t.x = v end), ops(function(t, v) end))\n"
    "local TSETB = only(ops(function(t, v) t[1] = v end), ops(function(t, v) end))\n"
    "local GGET = only(ops(function() return x end), ops(function(a) return a end))\n"
    "local TSETM = only(ops(function(...) return { ... } end), ops(function(...) return ... end),\n"
    "                   ops(function() return {} end))\n"
    "if not (TSETV and TSETS and TSETB and GGET and TSETM) then return nil end\n"
    "local STORE = { [TSETV] = true, [TSETS] = true, [TSETB] = true, [TSETM] = true }\n"
    "local BAD = { rawset = true, setmetatable = true, table = true, load = true, loadstring = true }\n"
    "local function clean(f, main)\n"
    "  for pc = 1, 1e9 do\n"
    "    local ins = funcbc(f, pc)\n"
    "    if not ins then break end\n"
    "    local op = band(ins, 0xff)\n"
    "    if STORE[op] and not main then return false end\n"
    "    if op == GGET then\n"
    "      local name = funck(f, -rshift(ins, 16) - 1)\n"
    "      if BAD[name] or (name == 'require' and not main) then return false end\n"
    "    end\n"
    "  end\n"
    "  for n = -1, -1e9, -1 do\n"
    "    local k = funck(f, n)\n"
    "    if k == nil then break end\n"
    "    if type(k) == 'proto' and not clean(k, false) then return false end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "return function(chunk) return clean(chunk, true) end\n";

/* Compares a function's prototype with the one of `function(a, b) return
 * true end` of the same arity: same shape (jit.util.funcinfo: slots,
 * upvalues, constants, no children, no varargs) and the same instructions
 * (funcbc, the header included).  Such a function reads nothing, writes
 * nothing, calls nothing and returns exactly true. */
static const char true_src[] =
    "local funcinfo, funcbc = ...\n"
    "local refs = { [0] = function() return true end, function(a) return true end,\n"
    "  function(a, b) return true end, function(a, b, c) return true end }\n"
    "local KEYS = { 'params', 'bytecodes', 'stackslots', 'upvalues', 'gcconsts', 'nconsts',\n"
    "  'isvararg', 'children' }\n"
    "return function(f)\n"
    "  local fi = funcinfo(f)\n"
    "  local r = fi.params and refs[fi.params]\n"
    "  if not r then return false end\n"
    "  local ri = funcinfo(r)\n"
    "  for i = 1, #KEYS do if fi[KEYS[i]] ~= ri[KEYS[i]] then return false end end\n"
    "  for pc = 0, ri.bytecodes - 1 do if funcbc(f, pc) ~= funcbc(r, pc) then return false end end\n"
    "  return true\n"
    "end\n";

/* jit.util's functions, from LuaJIT's own preload table; 0 when absent. */
static int push_jit_util(lua_State *L)
{
    lua_pushcfunction(L, luaopen_jit);
    lua_pushliteral(L, LUA_JITLIBNAME);
    lua_call(L, 1, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, "_PRELOAD");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, LUA_JITLIBNAME ".util");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_call(L, 0, 1);
    return lua_istable(L, -1) ? 1 : (lua_pop(L, 1), 0);
}

void luavm_pure_init(lua_State *L, struct luavm *vm)
{
    vm->ref_pure = LUA_NOREF;
    vm->ref_true = LUA_NOREF;
    vm->pcache = calloc(LUAVM_PCACHE, sizeof *vm->pcache);
    lua_newtable(L);
    vm->ref_anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!push_jit_util(L))
        return;
    int util = lua_gettop(L);
    if (luaL_loadbuffer(L, checker_src, sizeof checker_src - 1, "=purity")) {
        lua_settop(L, util - 1);
        return;
    }
    lua_getfield(L, util, "funcbc");
    lua_getfield(L, util, "funck");
    if (lua_pcall(L, 2, 1, 0) == 0 && lua_isfunction(L, -1))
        vm->ref_pure = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, util);
    if (luaL_loadbuffer(L, true_src, sizeof true_src - 1, "=returns_true") == 0) {
        lua_getfield(L, util, "funcinfo");
        lua_getfield(L, util, "funcbc");
        if (lua_pcall(L, 2, 1, 0) == 0 && lua_isfunction(L, -1))
            vm->ref_true = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_settop(L, util - 1);
}

int luavm_fn_returns_true(struct luavm *vm, int fn_ref)
{
    lua_State *L = vm->L;
    if (vm->ref_true == LUA_NOREF || fn_ref == LUA_NOREF || fn_ref == LUA_REFNIL)
        return 0;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_true);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    int yes = 0;
    if (lua_isfunction(L, -1) && !lua_iscfunction(L, -1)) {
        vm->trusted++; /* a bounded walk over the function's bytecode: not its file's budget */
        yes = lua_pcall(L, 1, 1, 0) == 0 && lua_toboolean(L, -1);
        vm->trusted--;
    }
    lua_settop(L, top);
    return yes;
}

int luavm_any_disabled(const struct luavm *vm) { return vm->ndisabled > 0; }

int luavm_pure_check(lua_State *L, struct luavm *vm, int fn)
{
    if (vm->ref_pure == LUA_NOREF || !lua_isfunction(L, fn) || lua_iscfunction(L, fn))
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_pure);
    lua_pushvalue(L, fn);
    vm->trusted++; /* a bounded walk over the file's bytecode: not the file's budget */
    lua_call(L, 1, 1);
    vm->trusted--;
    int pure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return pure;
}

void luavm_pure_mark(lua_State *L, int owner)
{
    lua_rawgeti(L, owner, LUAVM_OWN_ENVS);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_pushlightuserdata(L, (void *)&luavm_key_pure);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int env_pure(lua_State *L, int fidx)
{
    if (lua_iscfunction(L, fidx) || !lua_isfunction(L, fidx))
        return 0;
    lua_getfenv(L, fidx);
    lua_pushlightuserdata(L, (void *)&luavm_key_pure);
    lua_rawget(L, -2);
    int pure = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return pure;
}

/* Looked up on every call while read-only inputs exist, so cached by the
 * function object's address (luavm_pure_fn, inline); the cache anchors
 * each function it holds, so an address cannot be reused for another
 * function while cached. */
int luavm_pure_miss(lua_State *L, struct luavm *vm, int fidx, const void *fn, size_t h)
{
    struct luavm_pcache *pc = vm->pcache;
    int pure = env_pure(L, fidx);
    if (!pc || vm->ref_anchor == LUA_NOREF)
        return pure;
    if (vm->pcache_n >= LUAVM_PCACHE / 2) { /* full enough: start over */
        memset(pc, 0, sizeof *pc * LUAVM_PCACHE);
        lua_newtable(L);
        lua_rawseti(L, LUA_REGISTRYINDEX, vm->ref_anchor);
        vm->pcache_n = 0;
    }
    struct luavm_pcache *slot = &pc[h & (LUAVM_PCACHE - 1)];
    for (int i = 0; i < 8; i++) {
        struct luavm_pcache *e = &pc[(h + (size_t)i) & (LUAVM_PCACHE - 1)];
        if (!e->fn) {
            slot = e;
            break;
        }
    }
    slot->fn = fn;
    slot->pure = pure;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_anchor);
    lua_pushvalue(L, fidx);
    lua_rawseti(L, -2, ++vm->pcache_n);
    lua_pop(L, 1);
    return pure;
}

void luavm_pure_free(struct luavm *vm)
{
    free(vm->pcache);
    vm->pcache = NULL;
}
