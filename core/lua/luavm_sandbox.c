/*
 * luavm_sandbox.c — the environments scripts run in and the allow-listed
 * base functions they see.
 *
 * Layout of a state (all reachable only from C, through registry refs kept
 * in struct luavm):
 *
 *   base      allow-listed functions (pairs, pcall wrapper, require, ...);
 *             its metatable's __index raises "undeclared global 'x'".
 *   libs      name -> shared metatable of a read-only library proxy
 *             ({__index = filtered copy of the library, __newindex = raise,
 *             __metatable = false, [luavm_key_ro] = true}).
 *   owner     one per loaded file (luavm_load_chunk): {name, require cache,
 *             what the file returned, disabled message, epoch}; the file's
 *             modules belong to it too.  Registered in a weak-keyed table
 *             for the per-file accounting (luavm_stats.c).
 *   env       one per loaded file and per module: an empty table whose
 *             metatable has __index = that env's `lib` table, __newindex =
 *             raise, and [luavm_key_owner] = its owner.  The `lib` table
 *             holds fresh per-env proxies (string, table, math, bit, os,
 *             promo), the env's own load and loadstring (their chunks get
 *             this env) and require (this owner's cache) — closures, so
 *             no stack walk is needed and a tail call `return require(x)`
 *             works — and has __index = base.
 *
 * Isolation between files of one state: globals cannot be written (every
 * env raises), library proxies are per env and read-only (rawset and the
 * table library refuse them), `require` caches per owner (a file that
 * rewrites a module function changes its own copy only), p and ctx reach
 * hooks as read-only views (luavm_readonly.c).  What one file may still do
 * to its neighbours is use up shared resources: CPU (bounded per call),
 * memory (luavm_stats.c), log lines (rate-limited per file).
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"
#include "base/err.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define MODULE_MAX_BYTES (4u << 20)
#define LOAD_MAX_BYTES (1u << 20)
#define MODULE_NAME_MAX 128

const char luavm_key_ro = 'r';
const char luavm_key_owner = 'o';
const char luavm_key_loading = 'l';

/* ------------------------------------------------------------------ */
/* helpers                                                            */

static int undeclared_read(lua_State *L)
{
    return luaL_error(L, "undeclared global '%s'", lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

static int undeclared_write(lua_State *L)
{
    return luaL_error(L, "assignment to undeclared global '%s'",
                      lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

static int readonly_write(lua_State *L)
{
    return luaL_error(L, "attempt to modify read-only table");
}

int luavm_has_marked_mt(lua_State *L, int idx, const void *key)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, -2);
    int r = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return r;
}

void luavm_push_owner(lua_State *L, struct luavm *vm, const char *name)
{
    luavm_stats_owner_new(vm, name);
    lua_createtable(L, 5, 0);
    lua_pushstring(L, name);
    lua_rawseti(L, -2, LUAVM_OWN_NAME);
    lua_newtable(L);
    lua_rawseti(L, -2, LUAVM_OWN_MODS);
    lua_pushnumber(L, vm->mods_epoch);
    lua_rawseti(L, -2, LUAVM_OWN_EPOCH);
    lua_newtable(L);
    lua_rawseti(L, -2, LUAVM_OWN_ENVS);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_owners);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int l_require(lua_State *L);
static int l_load(lua_State *L);
static int l_loadstring(lua_State *L);

/* The env's own load, loadstring (upvalue: the env, which their chunks
 * get) and require (upvalue: the owner, whose cache it uses). */
static void add_env_functions(lua_State *L, int env, int lib, int owner)
{
    lua_pushvalue(L, env);
    lua_pushcclosure(L, l_load, 1);
    lua_setfield(L, lib, "load");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, l_loadstring, 1);
    lua_setfield(L, lib, "loadstring");
    lua_pushvalue(L, owner);
    lua_pushcclosure(L, l_require, 1);
    lua_setfield(L, lib, "require");
}

void luavm_push_env(lua_State *L, struct luavm *vm, int owner)
{
    owner = owner < 0 ? lua_gettop(L) + owner + 1 : owner;
    lua_createtable(L, 0, 0);                       /* env */
    lua_createtable(L, 0, 11);                      /* lib */
    add_env_functions(L, lua_gettop(L) - 1, lua_gettop(L), owner);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_libs);
    lua_pushnil(L);
    while (lua_next(L, -2)) {                       /* env lib libs name mt */
        lua_createtable(L, 0, 0);
        lua_insert(L, -2);
        lua_setmetatable(L, -2);                    /* env lib libs name proxy */
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -5);
    }
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_libmt);
    lua_setmetatable(L, -2);                        /* env lib */
    lua_createtable(L, 0, 4);                       /* env lib envmt */
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_undecl_set);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushlightuserdata(L, (void *)&luavm_key_owner);
    lua_pushvalue(L, owner);
    lua_rawset(L, -3);
    lua_setmetatable(L, -2);                        /* env */
    lua_rawgeti(L, owner, LUAVM_OWN_ENVS);          /* env envs */
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* Push the owner recorded in the env at `idx` (a table); 1, or 0 with
 * nothing pushed when it is not a sandbox env. */
static int env_owner(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
        return 0;
    lua_pushlightuserdata(L, (void *)&luavm_key_owner);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (lua_istable(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

void luavm_push_fn_owner(lua_State *L, int idx)
{
    if (lua_isfunction(L, idx) && !lua_iscfunction(L, idx)) {
        lua_getfenv(L, idx);
        int found = env_owner(L, lua_gettop(L));
        lua_remove(L, found ? -2 : -1);
        if (found)
            return;
    }
    lua_pushnil(L);
}

/* ------------------------------------------------------------------ */
/* sandboxed base functions                                           */

static int killed(struct luavm *vm) { return vm && vm->killed; }

static int l_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    struct luavm *vm = luavm_cdepth_enter(L);
    int depth = vm ? vm->cdepth - 1 : 0;
    int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (vm)
        vm->cdepth = depth;
    if (killed(vm)) {
        if (st == 0)
            lua_pushliteral(L, "script budget exceeded");
        return lua_error(L);
    }
    luaL_checkstack(L, 1, "too many results");
    lua_pushboolean(L, st == 0);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* xpcall's message handler: the script's handler (upvalue 1), unless the
 * call was killed.  LuaJIT runs a message handler before unwinding; when
 * the error was raised by the count hook, the hook is still marked active
 * and would not fire inside the handler, so a killed call must not reach
 * script code here. */
static int xpcall_handler(lua_State *L)
{
    struct luavm *vm = luavm_of(L);
    if (killed(vm))
        return 1;
    vm = luavm_cdepth_enter(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    luavm_cdepth_leave(vm);
    return 1;
}

static int l_xpcall(lua_State *L)
{
    luaL_checkany(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    struct luavm *vm = luavm_cdepth_enter(L);
    int depth = vm ? vm->cdepth - 1 : 0;
    int nargs = lua_gettop(L) - 2;
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xpcall_handler, 1);
    lua_replace(L, 2);
    lua_pushvalue(L, 1);
    lua_insert(L, 3);
    lua_remove(L, 1); /* handler f args... */
    int st = lua_pcall(L, nargs, LUA_MULTRET, 1);
    if (vm)
        vm->cdepth = depth;
    if (killed(vm)) {
        if (st == 0)
            lua_pushliteral(L, "script budget exceeded");
        return lua_error(L);
    }
    lua_pushboolean(L, st == 0);
    lua_replace(L, 1);
    return lua_gettop(L);
}

/* rawset refuses read-only proxies and views (writing a proxy raw would
 * shadow the library for the rest of the file). */
static int l_rawset(lua_State *L)
{
    luavm_check_writable(L, 1);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/* setmetatable(t, mt): as Lua's, and a read-only view says so. */
static int l_setmetatable(lua_State *L)
{
    const char *what = luavm_ro_what(L, 1);
    if (what)
        return luaL_error(L, "%s is read-only", what);
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argcheck(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table expected");
    if (luaL_getmetafield(L, 1, "__metatable"))
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* Compile text in the env of upvalue 1 (the calling file's). */
static int load_text(lua_State *L, const char *s, size_t len, const char *name)
{
    struct luavm *vm = luavm_of(L);
    if (len > 0 && s[0] == LUA_SIGNATURE[0]) {
        lua_pushnil(L);
        lua_pushliteral(L, "attempt to load a binary chunk");
        return 2;
    }
    if (len > LOAD_MAX_BYTES) { /* the parser cannot be interrupted: bound its work */
        lua_pushnil(L);
        lua_pushfstring(L, "chunk too large (%d bytes, at most %d)", (int)len, (int)LOAD_MAX_BYTES);
        return 2;
    }
    if (luaL_loadbufferx(L, s, len, name, "t") != 0) {
        if (killed(vm))
            return lua_error(L);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushvalue(L, lua_upvalueindex(1)); /* the env this load belongs to */
    lua_setfenv(L, -2);
    return 1;
}

/* load(chunk [, chunkname]) — chunk is a string or a reader function. */
static int l_load(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TFUNCTION) {
        const char *name = luaL_optstring(L, 2, "=(load)");
        lua_settop(L, 2);
        lua_pushliteral(L, "");              /* 3: accumulated text */
        struct luavm *vm = luavm_cdepth_enter(L);
        for (;;) {
            lua_pushvalue(L, 1);
            lua_call(L, 0, 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "reader function must return a string");
            if (lua_objlen(L, -1) == 0) {
                lua_pop(L, 1);
                break;
            }
            lua_concat(L, 2);
            if (lua_objlen(L, -1) > LOAD_MAX_BYTES)
                break;
        }
        luavm_cdepth_leave(vm);
        size_t len;
        const char *s = lua_tolstring(L, 3, &len);
        return load_text(L, s, len, name);
    }
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    return load_text(L, s, len, luaL_optstring(L, 2, s));
}

static int l_loadstring(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    return load_text(L, s, len, luaL_optstring(L, 2, s));
}

static int valid_module_name(const char *s, size_t n)
{
    if (n == 0 || n > MODULE_NAME_MAX || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (s[i + 1] == '.')
                return 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* require(name) — only `lib_dir/<name with dots as slashes>.lua`, text only,
 * run in its own env, cached per owner: each file gets its own instance of
 * a module (and of the modules that module requires), so no file can
 * change what another file's require returned. */
static int l_require(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    struct luavm *vm = luavm_of(L);
    if (!valid_module_name(name, n) || strlen(name) != n)
        return luaL_error(L, "require: invalid module name '%s'", name);
    if (!vm || !vm->lib_dir)
        return luaL_error(L, "require: module '%s' not found (no library directory)", name);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));                 /* 2: owner */
    lua_rawgeti(L, 2, LUAVM_OWN_EPOCH);
    if (lua_tonumber(L, -1) != (lua_Number)vm->mods_epoch) { /* luavm_clear_modules */
        lua_newtable(L);
        lua_rawseti(L, 2, LUAVM_OWN_MODS);
        lua_pushnumber(L, vm->mods_epoch);
        lua_rawseti(L, 2, LUAVM_OWN_EPOCH);
    }
    lua_pop(L, 1);
    lua_rawgeti(L, 2, LUAVM_OWN_MODS);                      /* 3: cache */
    lua_pushvalue(L, 1);
    lua_rawget(L, 3);
    if (lua_touserdata(L, -1) == (void *)&luavm_key_loading)
        return luaL_error(L, "require: loop while loading module '%s'", name);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);

    char path[PATH_MAX];
    int pn = snprintf(path, sizeof path, "%s/%s.lua", vm->lib_dir, name);
    if (pn < 0 || (size_t)pn >= sizeof path)
        return luaL_error(L, "require: module path too long for '%s'", name);
    for (char *p = path + strlen(vm->lib_dir) + 1; *p; p++)
        if (*p == '.' && strcmp(p, ".lua") != 0)
            *p = '/';
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return luaL_error(L, "require: module '%s' not found", name);
    if ((size_t)st.st_size > MODULE_MAX_BYTES)
        return luaL_error(L, "require: module '%s' is too large", name);
    /* The buffer is GC-owned, so a raise below leaks nothing; no Lua call
     * happens while the FILE is open. */
    size_t cap = (size_t)st.st_size;
    char *buf = lua_newuserdata(L, cap ? cap : 1);        /* 4 */
    FILE *f = fopen(path, "rb");
    if (!f)
        return luaL_error(L, "require: cannot open module '%s': %s", name, strerror(errno));
    size_t got = fread(buf, 1, cap, f);
    fclose(f);
    if (got > 0 && buf[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "require: module '%s' is not text", name);
    lua_pushfstring(L, "@%s", path);                      /* 5 */
    if (luaL_loadbufferx(L, buf, got, lua_tostring(L, 5), "t") != 0)
        return lua_error(L);
    /* purity (luavm_pure.c): a module that can write tables makes its
     * file impure; one first required at run time by a pure file would let
     * the file's hooks, which get p and ctx themselves, write to them */
    if (!luavm_pure_check(L, vm, lua_gettop(L))) {
        lua_rawgeti(L, 2, LUAVM_OWN_PURE);
        int pure_file = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (pure_file)
            return luaL_error(L, "require: module '%s' can write tables and this file is "
                                 "read-only; require it at the top of the file", name);
        lua_pushboolean(L, 1);
        lua_rawseti(L, 2, LUAVM_OWN_IMPURE);
    }
    luavm_push_env(L, vm, 2);
    lua_rawgeti(L, 2, LUAVM_OWN_PURE);
    if (lua_toboolean(L, -1)) { /* a pure module for a pure file: its env is pure too */
        lua_pushlightuserdata(L, (void *)&luavm_key_pure);
        lua_pushboolean(L, 1);
        lua_rawset(L, -4);
    }
    lua_pop(L, 1);
    lua_setfenv(L, -2);                                   /* 6: chunk */
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)&luavm_key_loading);
    lua_rawset(L, 3);
    luavm_cdepth_enter(L);
    int depth = vm->cdepth - 1;
    int rc = lua_pcall(L, 0, 1, 0);
    vm->cdepth = depth;
    if (rc != 0) {
        lua_pushvalue(L, 1);
        lua_pushnil(L);
        lua_rawset(L, 3);
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, 3);
    return 1;
}

static int l_print(lua_State *L)
{
    luavm_log_args(L, "lua.print");
    return 0;
}

/* Message handler: non-string errors get a description, strings get a
 * traceback (kept for debug logging; callers see the first line only).
 * Allocates nothing once the call is killed. */
static int l_msgh(lua_State *L)
{
    if (killed(luavm_of(L)))
        return 1;
    const char *msg;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        msg = lua_tostring(L, 1);
    else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* building the state                                                 */

void luavm_register(lua_State *L, const char *name)
{
    struct luavm *vm = luavm_of(L);
    if (!vm || !vm->ref_libs) {
        lua_setglobal(L, name);
        return;
    }
    if (lua_istable(L, -1)) {
        lua_createtable(L, 0, 4);                 /* tbl mt */
        lua_insert(L, -2);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, readonly_write);
        lua_setfield(L, -2, "__newindex");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pushlightuserdata(L, (void *)&luavm_key_ro);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_libs);
        lua_insert(L, -2);
        lua_setfield(L, -2, name);
        lua_pop(L, 1);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_base);
        lua_insert(L, -2);
        lua_setfield(L, -2, name);
        lua_pop(L, 1);
    }
}

int luavm_lib_add(lua_State *L, const char *lib, const char *name)
{
    struct luavm *vm = luavm_of(L);
    if (!vm || !vm->ref_libs) {
        lua_pop(L, 1);
        return ERR_INVAL;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_libs); /* v libs */
    lua_getfield(L, -1, lib);                         /* v libs mt */
    if (!lua_istable(L, -1)) {
        lua_pop(L, 3);
        return ERR_NOTFOUND;
    }
    lua_getfield(L, -1, "__index");                   /* v libs mt tbl */
    lua_pushvalue(L, -4);
    lua_setfield(L, -2, name);
    lua_pop(L, 4);
    return 0;
}

/* Push a new table holding the listed fields of global table `lib`. */
static void copy_fields(lua_State *L, const char *lib, const char *const *names)
{
    int n = 0;
    while (names[n])
        n++;
    lua_getglobal(L, lib);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        lua_getfield(L, -2, names[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_remove(L, -2);
}

int luavm_build_sandbox(lua_State *L)
{
    struct luavm *vm = lua_touserdata(L, 1);
    static const struct { const char *name; lua_CFunction open; } opens[] = {
        { "", luaopen_base }, { LUA_STRLIBNAME, luaopen_string },
        { LUA_TABLIBNAME, luaopen_table }, { LUA_MATHLIBNAME, luaopen_math },
        { LUA_BITLIBNAME, luaopen_bit }, { LUA_OSLIBNAME, luaopen_os },
    };
    for (size_t i = 0; i < sizeof opens / sizeof opens[0]; i++) {
        lua_pushcfunction(L, opens[i].open);
        lua_pushstring(L, opens[i].name);
        lua_call(L, 1, 0);
    }

    lua_pushcfunction(L, l_msgh);
    vm->ref_msgh = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, undeclared_write);
    vm->ref_undecl_set = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);                               /* owners: weak keys */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    vm->ref_owners = luaL_ref(L, LUA_REGISTRYINDEX);
    luavm_ro_init(L, vm);
    luavm_pure_init(L, vm);

    /* base: allow list copied from the real globals, plus our wrappers */
    static const char *const base_names[] = {
        "assert", "error", "select", "tonumber", "tostring", "rawequal", "getmetatable", NULL
    };
    copy_fields(L, "_G", base_names);
    static const luaL_Reg wrappers[] = {
        { "pcall", l_pcall }, { "xpcall", l_xpcall }, { "rawset", l_rawset },
        { "rawget", luavm_l_rawget }, { "setmetatable", l_setmetatable },
        { "type", luavm_l_type }, { "next", luavm_l_next }, { "pairs", luavm_l_pairs },
        { "ipairs", luavm_l_ipairs }, { "unpack", luavm_l_unpack },
        { "print", l_print }, { NULL, NULL }
    };
    luaL_register(L, NULL, wrappers);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, undeclared_read);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    vm->ref_base = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, 0, 1);                      /* lib tables fall back to base */
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_base);
    lua_setfield(L, -2, "__index");
    vm->ref_libmt = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    vm->ref_libs = luaL_ref(L, LUA_REGISTRYINDEX);

    static const char *const string_names[] = {
        "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower",
        "match", "rep", "reverse", "sub", "upper", NULL
    };
    static const char *const math_names[] = {
        "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "cosh", "deg", "exp",
        "floor", "fmod", "frexp", "huge", "ldexp", "log", "log10", "max", "min", "modf",
        "pi", "pow", "rad", "random", "randomseed", "sin", "sinh", "sqrt", "tan", "tanh", NULL
    };
    static const char *const bit_names[] = {
        "tobit", "tohex", "bnot", "band", "bor", "bxor", "lshift", "rshift",
        "arshift", "rol", "ror", "bswap", NULL
    };
    static const char *const os_names[] = { "time", "date", "clock", NULL };

    copy_fields(L, LUA_STRLIBNAME, string_names);
    luavm_open_strlib(L, vm);
    /* The string metatable's __index must be the filtered copy too, or
     * ("").dump would reach string.dump; hide the metatable itself. */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "__index");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    luavm_register(L, LUA_STRLIBNAME);
    luavm_open_table(L, vm);
    luavm_register(L, LUA_TABLIBNAME);
    copy_fields(L, LUA_MATHLIBNAME, math_names);
    luavm_register(L, LUA_MATHLIBNAME);
    copy_fields(L, LUA_BITLIBNAME, bit_names);
    luavm_register(L, LUA_BITLIBNAME);
    copy_fields(L, LUA_OSLIBNAME, os_names);
    lua_getfield(L, -1, "time");
    vm->ref_ostime = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, luavm_l_ostime);
    lua_setfield(L, -2, "time");
    luavm_register(L, LUA_OSLIBNAME);
    luavm_open_promo(L);
    return 0;
}
