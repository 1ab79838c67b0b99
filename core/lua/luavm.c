/*
 * luavm.c — one sandboxed LuaJIT state: counting allocator, allow-listed
 * environments, instruction budget, protected calls, value conversions.
 *
 * Layout of a state (all reachable only from C, through registry refs kept
 * in struct luavm):
 *
 *   base      allow-listed functions (pairs, pcall wrapper, require, ...);
 *             its metatable's __index raises "undeclared global 'x'".
 *   libs      name -> shared metatable of a read-only library proxy
 *             ({__index = filtered copy of the library, __newindex = raise,
 *             __metatable = false, [RO_KEY] = true}).
 *   env       one per loaded file: an empty table whose metatable has
 *             __index = that file's `lib` table and __newindex = raise.  The
 *             `lib` table holds fresh per-file proxies (string, table, math,
 *             bit, os, promo) and has __index = base.  Per-file proxies mean
 *             that whatever a file manages to write into a proxy (rawset is
 *             refused, but table.insert(string, 1) writes the proxy's array
 *             part) is seen by that file only.
 *
 * Why the allocator only enforces limits while a call is armed: an
 * allocation refused outside lua_pcall raises with no protected frame and
 * LuaJIT's panic handler exits the process.  Host code (pushing a profile,
 * building tables) runs unarmed and is bounded by the codec's own limits.
 */
#include "lua/luavm.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <signal.h>
#include <pthread.h>
#include <unistd.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "base/err.h"
#include "base/log.h"

#define HOOK_EVERY 1000
#define MAX_DEPTH 64
#define MODULE_MAX_BYTES (4u << 20)
#define MODULE_NAME_MAX 128

enum { KILL_INSTR = 1, KILL_MEM = 2 };

/* Small blocks (the tables and strings hooks create on every call) come
 * from per-state free lists in 16-byte classes, carved from 64 KiB slabs:
 * a state belongs to one thread, so no locking, and a hook's garbage is
 * recycled without a trip through malloc.  Larger blocks use realloc. */
#define POOL_MAX 256
#define POOL_CLASSES (POOL_MAX / 16)
#define POOL_SLAB (64 * 1024)
struct pool {
    void *free[POOL_CLASSES];
    char *cur, *end;   /* unused tail of the newest slab */
    void *slabs;       /* list of slabs, linked through their first word */
};

static void *pool_get(struct pool *p, size_t n)
{
    int c = (int)((n - 1) >> 4);
    void *b = p->free[c];
    if (b) {
        p->free[c] = *(void **)b;
        return b;
    }
    size_t sz = (size_t)(c + 1) << 4;
    if (p->cur + sz > p->end) {
        char *slab = malloc(POOL_SLAB);
        if (!slab)
            return NULL;
        *(void **)slab = p->slabs;
        p->slabs = slab;
        p->cur = slab + 16;
        p->end = slab + POOL_SLAB;
    }
    b = p->cur;
    p->cur += sz;
    return b;
}

static void pool_put(struct pool *p, void *b, size_t n)
{
    int c = (int)((n - 1) >> 4);
    *(void **)b = p->free[c];
    p->free[c] = b;
}

static void pool_free_all(struct pool *p)
{
    while (p->slabs) {
        void *next = *(void **)p->slabs;
        free(p->slabs);
        p->slabs = next;
    }
}

/* Resize a block between the pool and malloc as sizes cross POOL_MAX.
 * osize is the block's size as Lua knows it (0 for a new block). */
static void *block_resize(struct pool *p, void *ptr, size_t osize, size_t nsize)
{
    int opool = ptr && osize && osize <= POOL_MAX, npool = nsize <= POOL_MAX;
    if (!opool && !npool)
        return realloc(ptr, nsize);
    /* a pooled block that still fits stays put (a shrink never moves; when
     * freed it joins the smaller class, which it more than fills) */
    if (opool && nsize <= ((((osize - 1) >> 4) + 1) << 4))
        return ptr;
    void *n = npool ? pool_get(p, nsize) : malloc(nsize);
    if (!n)
        return nsize <= osize ? ptr : NULL; /* a failed shrink keeps the block */
    if (ptr) {
        memcpy(n, ptr, osize < nsize ? osize : nsize);
        if (opool)
            pool_put(p, ptr, osize);
        else
            free(ptr);
    }
    return n;
}

struct luavm {
    lua_State *L;
    size_t used;           /* bytes currently allocated */
    size_t mem_limit;
    size_t call_mem_limit;
    size_t call_base;      /* `used` when the outermost call started */
    long instr_budget;
    long instr_used;
    int armed;             /* nesting depth of luavm_call; limits apply when > 0 */
    /* The watchdog (see "the budget guard" below): */
    int watched;                 /* budget large enough for the lazily armed hook */
    volatile sig_atomic_t in_call;  /* an outer call is running */
    volatile sig_atomic_t hooked;   /* the count hook is set for this call */
    unsigned long call_seq;      /* outer calls started (atomic) */
    unsigned long seen_seq;      /* watchdog: call_seq at its last look */
    pthread_t thread;            /* the thread running the calls */
    struct luavm *wnext;         /* watchdog list */
    int killed;            /* KILL_* bits for the current outer call */
    char *lib_dir;
    int ref_base, ref_libs, ref_libmt, ref_mods, ref_msgh, ref_undecl_set;
    struct pool pool;
};

/* Addresses used as unique light-userdata keys. */
static const char RO_KEY = 'r';       /* marks read-only proxy metatables */
static const char ENV_KEY = 'e';      /* marks per-file env metatables */
static const char LOADING_KEY = 'l';  /* require in progress */

/* ------------------------------------------------------------------ */
/* allocator and hook                                                 */

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct luavm *vm = ud;
    if (nsize == 0) {
        if (ptr && osize && osize <= POOL_MAX)
            pool_put(&vm->pool, ptr, osize);
        else
            free(ptr);
        vm->used -= osize;
        return NULL;
    }
    if (nsize > osize && vm->armed) {
        size_t after = vm->used + (nsize - osize);
        size_t grown = after > vm->call_base ? after - vm->call_base : 0;
        if (after > vm->mem_limit || grown > vm->call_mem_limit) {
            vm->killed |= KILL_MEM;
            return NULL;
        }
    }
    if (!ptr)
        osize = 0; /* for a new block Lua passes a type tag, not a size */
    void *p = block_resize(&vm->pool, ptr, osize, nsize);
    if (!p)
        return NULL;
    vm->used = vm->used - osize + nsize;
    return p;
}

/* The sandbox's C functions only get a lua_State; the vm is the allocator's
 * userdata.  NULL for a state not created by luavm_new. */
static struct luavm *vm_of(lua_State *L)
{
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    return f == vm_alloc ? ud : NULL;
}

static void vm_hook(lua_State *L, lua_Debug *ar)
{
    struct luavm *vm = vm_of(L);
    if (!vm || !vm->armed)
        return;
    if (!vm->killed) {
        vm->instr_used += HOOK_EVERY;
        if (vm->instr_used <= vm->instr_budget)
            return;
    }
    if (!(vm->killed & KILL_INSTR)) {
        /* From now on fire on every instruction: any Lua code that still
         * runs (an xpcall handler, code after a caught error) is stopped. */
        vm->killed |= KILL_INSTR;
        vm->hooked = 1;
        lua_sethook(L, vm_hook, LUA_MASKCOUNT, 1);
    }
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
        lua_pushfstring(L, "%s:%d: instruction budget exceeded", ar->short_src, ar->currentline);
    else
        lua_pushliteral(L, "instruction budget exceeded");
    lua_error(L);
}

/* ------------------------------------------------------------------ */
/* the budget guard                                                   */

/*
 * LuaJIT runs a count hook only from the interpreter (hence the JIT is
 * off), and with a count hook set the interpreter takes a slower dispatch
 * for every instruction: an eligibility call measured 107 ns without the
 * hook and 154 ns with it.  Almost every hook call ends within
 * microseconds, so a state whose budget is large (WATCH_MIN_BUDGET or
 * more) runs without the hook, and a watchdog thread looks at every such
 * state each WATCH_TICK_US: a call still running at two consecutive looks
 * (so at least one tick old) gets a signal, and the handler — on the
 * thread running the call — sets the count hook, the way LuaJIT's own
 * command line stops a script on Ctrl-C.  From then on instructions are
 * counted against the budget as before, so a runaway call is stopped with
 * the same "file:line: instruction budget exceeded" after at most one or
 * two ticks more than its budget.  Loading a file (luavm_load_chunk)
 * always counts from the first instruction, so whether a file loads does
 * not depend on timing and the validating loader and every worker agree.
 * States with a small budget (tests, tight configs) keep the hook on,
 * counting from the first instruction, for every call.  (The watchdog
 * thread is per process and promod never forks; a child of a fork would
 * have to create its states anew.)
 */
#define WATCH_TICK_US 1000
#define WATCH_MIN_BUDGET 100000

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static struct luavm *watch_list;
static int watch_sig;
static __thread struct luavm *tl_vm; /* the state whose outer call this thread runs */

static void watch_handler(int sig)
{
    (void)sig;
    struct luavm *vm = tl_vm;
    if (vm && vm->in_call && !vm->hooked) {
        vm->hooked = 1;
        lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
}

static void *watch_main(void *arg)
{
    (void)arg;
    for (;;) {
        usleep(WATCH_TICK_US);
        pthread_mutex_lock(&watch_mu);
        for (struct luavm *vm = watch_list; vm; vm = vm->wnext) {
            unsigned long seq = __atomic_load_n(&vm->call_seq, __ATOMIC_ACQUIRE);
            if (vm->in_call && !vm->hooked && seq == vm->seen_seq)
                pthread_kill(vm->thread, watch_sig);
            vm->seen_seq = seq;
        }
        pthread_mutex_unlock(&watch_mu);
    }
    return NULL;
}

/* Put a state under the watchdog (starting it on first use); 0 or -1. */
static int watch_add(struct luavm *vm)
{
    static int started;
    pthread_mutex_lock(&watch_mu);
    if (!started) {
        watch_sig = SIGRTMIN + 5;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = watch_handler;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (sigaction(watch_sig, &sa, NULL) || pthread_create(&t, &at, watch_main, NULL)) {
            pthread_attr_destroy(&at);
            pthread_mutex_unlock(&watch_mu);
            return -1;
        }
        pthread_attr_destroy(&at);
        started = 1;
    }
    vm->wnext = watch_list;
    watch_list = vm;
    pthread_mutex_unlock(&watch_mu);
    return 0;
}

static void watch_remove(struct luavm *vm)
{
    pthread_mutex_lock(&watch_mu);
    for (struct luavm **pp = &watch_list; *pp; pp = &(*pp)->wnext)
        if (*pp == vm) {
            *pp = vm->wnext;
            break;
        }
    pthread_mutex_unlock(&watch_mu);
}

/* Outer call start / end: the hook as the state's mode wants it. */
static void guard_begin(struct luavm *vm, int count_all)
{
    if (!vm->watched) {
        lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
        return;
    }
    vm->thread = pthread_self();
    tl_vm = vm;
    vm->hooked = 0;
    if (count_all) { /* counted from the first instruction, watched or not */
        vm->hooked = 1;
        lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
    __atomic_add_fetch(&vm->call_seq, 1, __ATOMIC_RELEASE);
    vm->in_call = 1;
}

static void guard_end(struct luavm *vm, int killed_instr)
{
    if (!vm->watched) {
        if (killed_instr)
            lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
        return;
    }
    vm->in_call = 0; /* first: a late signal now leaves the hook alone */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    tl_vm = NULL;
    if (vm->hooked || killed_instr) {
        lua_sethook(vm->L, NULL, 0, 0);
        vm->hooked = 0;
    }
}

/* ------------------------------------------------------------------ */
/* sandbox helpers                                                    */

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

static int has_marked_mt(lua_State *L, int idx, const void *key)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, -2);
    int r = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return r;
}

/* Push a fresh private environment for one file. */
static void push_env(lua_State *L, struct luavm *vm)
{
    lua_createtable(L, 0, 0);                       /* env */
    lua_createtable(L, 0, 8);                       /* lib */
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
    lua_pushlightuserdata(L, (void *)&ENV_KEY);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_setmetatable(L, -2);                        /* env */
}

/* Push the environment of the nearest Lua function on the call stack, if it
 * is a sandbox env; otherwise a fresh one (never the real globals). */
static void push_caller_env(lua_State *L, struct luavm *vm)
{
    lua_Debug ar;
    for (int lvl = 1; lua_getstack(L, lvl, &ar); lvl++) {
        if (!lua_getinfo(L, "f", &ar))
            continue;
        if (lua_iscfunction(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_getfenv(L, -1);
        lua_remove(L, -2);
        if (lua_istable(L, -1) && has_marked_mt(L, -1, &ENV_KEY))
            return;
        lua_pop(L, 1);
        break;
    }
    push_env(L, vm);
}

/* ------------------------------------------------------------------ */
/* sandboxed base functions                                           */

static int killed(lua_State *L)
{
    struct luavm *vm = vm_of(L);
    return vm && vm->killed;
}

static int l_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (killed(L)) {
        if (st == 0)
            lua_pushliteral(L, "script budget exceeded");
        return lua_error(L);
    }
    luaL_checkstack(L, 1, "too many results");
    lua_pushboolean(L, st == 0);
    lua_insert(L, 1);
    return lua_gettop(L);
}

static int l_xpcall(lua_State *L)
{
    luaL_checkany(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 2;
    lua_pushvalue(L, 1);
    lua_insert(L, 3);
    lua_remove(L, 1); /* handler f args... */
    int st = lua_pcall(L, nargs, LUA_MULTRET, 1);
    if (killed(L)) {
        if (st == 0)
            lua_pushliteral(L, "script budget exceeded");
        return lua_error(L);
    }
    lua_pushboolean(L, st == 0);
    lua_replace(L, 1);
    return lua_gettop(L);
}

/* rawset refuses read-only proxies (a proxy is empty; writing it raw would
 * shadow the library for the rest of the file). */
static int l_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (has_marked_mt(L, 1, &RO_KEY) || has_marked_mt(L, 1, &ENV_KEY))
        return luaL_error(L, "attempt to modify read-only table");
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

static int load_text(lua_State *L, const char *s, size_t len, const char *name)
{
    struct luavm *vm = vm_of(L);
    if (len > 0 && s[0] == LUA_SIGNATURE[0]) {
        lua_pushnil(L);
        lua_pushliteral(L, "attempt to load a binary chunk");
        return 2;
    }
    if (luaL_loadbufferx(L, s, len, name, "t") != 0) {
        if (vm && vm->killed)
            return lua_error(L);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (vm) {
        push_caller_env(L, vm);
        lua_setfenv(L, -2);
    }
    return 1;
}

/* load(chunk [, chunkname]) — chunk is a string or a reader function. */
static int l_load(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TFUNCTION) {
        const char *name = luaL_optstring(L, 2, "=(load)");
        lua_settop(L, 2);
        lua_pushliteral(L, "");              /* 3: accumulated text */
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
        }
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
 * run in its own env, cached per state. */
static int l_require(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    struct luavm *vm = vm_of(L);
    if (!valid_module_name(name, n) || strlen(name) != n)
        return luaL_error(L, "require: invalid module name '%s'", name);
    if (!vm || !vm->lib_dir)
        return luaL_error(L, "require: module '%s' not found (no library directory)", name);
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_mods);      /* 2: cache */
    lua_pushvalue(L, 1);
    lua_rawget(L, 2);
    if (lua_touserdata(L, -1) == (void *)&LOADING_KEY)
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
    char *buf = lua_newuserdata(L, cap ? cap : 1);        /* 3 */
    FILE *f = fopen(path, "rb");
    if (!f)
        return luaL_error(L, "require: cannot open module '%s': %s", name, strerror(errno));
    size_t got = fread(buf, 1, cap, f);
    fclose(f);
    if (got > 0 && buf[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "require: module '%s' is not text", name);
    lua_pushfstring(L, "@%s", path);                      /* 4 */
    if (luaL_loadbufferx(L, buf, got, lua_tostring(L, 4), "t") != 0)
        return lua_error(L);
    push_env(L, vm);
    lua_setfenv(L, -2);                                   /* 5: chunk */
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)&LOADING_KEY);
    lua_rawset(L, 2);
    if (lua_pcall(L, 0, 1, 0) != 0) {
        lua_pushvalue(L, 1);
        lua_pushnil(L);
        lua_rawset(L, 2);
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, 2);
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
    if (killed(L))
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
    struct luavm *vm = vm_of(L);
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
        lua_pushlightuserdata(L, (void *)&RO_KEY);
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
    struct luavm *vm = vm_of(L);
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

#define MAX_OPENERS 8
static luavm_opener_fn g_openers[MAX_OPENERS];
static int g_nopeners;

void luavm_add_opener(luavm_opener_fn fn)
{
    for (int i = 0; i < g_nopeners; i++)
        if (g_openers[i] == fn)
            return;
    if (g_nopeners < MAX_OPENERS)
        g_openers[g_nopeners++] = fn;
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

static int build_sandbox(lua_State *L)
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
    lua_newtable(L);
    vm->ref_mods = luaL_ref(L, LUA_REGISTRYINDEX);

    /* base: allow list copied from the real globals, plus our wrappers */
    static const char *const base_names[] = {
        "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring",
        "type", "unpack", "rawequal", "rawget", "setmetatable", "getmetatable", NULL
    };
    copy_fields(L, "_G", base_names);
    static const luaL_Reg wrappers[] = {
        { "pcall", l_pcall }, { "xpcall", l_xpcall }, { "rawset", l_rawset },
        { "load", l_load }, { "loadstring", l_loadstring }, { "require", l_require },
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
    static const char *const table_names[] = {
        "concat", "insert", "maxn", "remove", "sort", NULL
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
    copy_fields(L, LUA_TABLIBNAME, table_names);
    luavm_register(L, LUA_TABLIBNAME);
    copy_fields(L, LUA_MATHLIBNAME, math_names);
    luavm_register(L, LUA_MATHLIBNAME);
    copy_fields(L, LUA_BITLIBNAME, bit_names);
    luavm_register(L, LUA_BITLIBNAME);
    copy_fields(L, LUA_OSLIBNAME, os_names);
    luavm_register(L, LUA_OSLIBNAME);
    luavm_open_promo(L);
    return 0;
}

int luavm_new(const struct luavm_opts *opts, struct luavm **out)
{
    *out = NULL;
    struct luavm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return ERR_NOMEM;
    vm->mem_limit = opts && opts->mem_limit ? opts->mem_limit : (size_t)256 << 20;
    vm->call_mem_limit = opts && opts->call_mem_limit ? opts->call_mem_limit : (size_t)32 << 20;
    vm->instr_budget = opts && opts->instr_budget > 0 ? opts->instr_budget : 1000000;
    if (opts && opts->lib_dir && !(vm->lib_dir = strdup(opts->lib_dir))) {
        free(vm);
        return ERR_NOMEM;
    }
    vm->L = lua_newstate(vm_alloc, vm);
    if (!vm->L) {
        free(vm->lib_dir);
        free(vm);
        return ERR_NOMEM;
    }
    if (lua_cpcall(vm->L, build_sandbox, vm) != 0) {
        log_error("luavm", "err=\"%s\"", lua_tostring(vm->L, -1) ? lua_tostring(vm->L, -1) : "?");
        luavm_free(vm);
        return ERR_NOMEM;
    }
    luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    for (int i = 0; i < g_nopeners; i++)
        g_openers[i](vm->L);
    vm->watched = vm->instr_budget >= WATCH_MIN_BUDGET && watch_add(vm) == 0;
    if (!vm->watched)
        lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
    /* Hooks allocate short-lived tables on every call (a literal set in an
     * eligibility test is a fresh table each time) while the live heap —
     * every loaded campaign — stays put.  A GC cycle traverses that live
     * heap, so cycles are made rarer: start one when the heap reaches 4x
     * what survived the last (Lua's default is 2x).  Measured on the
     * reference campaigns: an eligibility call 187 -> 156 ns.  call_impl
     * collects early when garbage approaches the state's memory limit. */
    lua_gc(vm->L, LUA_GCSETPAUSE, 400);
    *out = vm;
    return 0;
}

void luavm_free(struct luavm *vm)
{
    if (!vm)
        return;
    if (vm->watched)
        watch_remove(vm);
    if (vm->L)
        lua_close(vm->L);
    pool_free_all(&vm->pool);
    free(vm->lib_dir);
    free(vm);
}

struct lua_State *luavm_state(struct luavm *vm) { return vm->L; }

size_t luavm_mem_used(const struct luavm *vm) { return vm->used; }

void luavm_clear_modules(struct luavm *vm)
{
    lua_newtable(vm->L);
    lua_rawseti(vm->L, LUA_REGISTRYINDEX, vm->ref_mods);
}

/* ------------------------------------------------------------------ */
/* protected calls                                                    */

static void set_err(char *err, size_t errlen, const char *msg, size_t len)
{
    if (!err || errlen == 0)
        return;
    const char *nl = memchr(msg, '\n', len);
    size_t n = nl ? (size_t)(nl - msg) : len;
    if (n >= errlen)
        n = errlen - 1;
    memcpy(err, msg, n);
    err[n] = '\0';
}

/* Stack on entry: [f args...].  `where` overrides the location used for
 * memory-limit messages (the chunk name while loading); `fn_ref`, when
 * not LUA_NOREF, is a registry ref of f itself, which spares keeping a
 * copy of f on the stack for that message.  Helper slots (the copy, the
 * traceback handler) go below f, at `base`. */
/* The error half of call_impl, out of line so the hot path's frame stays
 * small: turn a failed or killed call into ERR_BUDGET / ERR_LUA with its
 * message, and leave the stack as it was before the function was pushed. */
static __attribute__((noinline)) int call_failed(struct luavm *vm, int st, int kill, int outer,
                                                 int base, int nhelp, const char *where,
                                                 int fn_ref, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    if (st == 0) {           /* killed, yet something swallowed it: fail anyway */
        lua_settop(L, base + nhelp - 1);
        lua_pushliteral(L, "script budget exceeded");
    }

    int rc;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if ((kill & KILL_MEM) || st == LUA_ERRMEM) {
        rc = ERR_BUDGET;
        char loc[LUA_IDSIZE + 24];
        if (!where) {
            lua_Debug ar;
            snprintf(loc, sizeof loc, "?");
            if (fn_ref != LUA_NOREF)
                lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
            else
                lua_pushvalue(L, base);
            if (lua_isfunction(L, -1)) {
                if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
                    snprintf(loc, sizeof loc, "%s:%d", ar.short_src, ar.linedefined);
                else
                    snprintf(loc, sizeof loc, "%s", ar.short_src);
            } else {
                lua_pop(L, 1);
            }
            where = loc;
        }
        if (err && errlen)
            snprintf(err, errlen, "%s: memory limit exceeded", where);
    } else if (kill & KILL_INSTR) {
        rc = ERR_BUDGET;
        if (msg && strstr(msg, "instruction budget exceeded"))
            set_err(err, errlen, msg, len);
        else if (err && errlen)
            snprintf(err, errlen, "%s: instruction budget exceeded", where ? where : "?");
    } else {
        rc = ERR_LUA;
        if (msg) {
            set_err(err, errlen, msg, len);
            if (log_get_level() <= LOG_DEBUG)
                log_debug("lua.error", "trace=\"%.*s\"", (int)(len > 1500 ? 1500 : len), msg);
        } else if (err && errlen) {
            snprintf(err, errlen, "(error object is a %s value)", luaL_typename(L, -1));
        }
    }
    lua_settop(L, base - 1);
    if (outer && (kill & KILL_MEM))
        lua_gc(L, LUA_GCCOLLECT, 0);  /* drop the bomb now, not at the next GC step */
    return rc;
}

static int call_impl(struct luavm *vm, int nargs, int nresults, char *err, size_t errlen,
                     const char *where, int fn_ref)
{
    lua_State *L = vm->L;
    int fidx = lua_gettop(L) - nargs, base = fidx, nhelp = 0;
    /* The message handler only adds a traceback, which only the debug log
     * shows (callers keep the first line); without it a hook call costs
     * three stack operations less. */
    int traced = log_get_level() <= LOG_DEBUG;
    if (fn_ref == LUA_NOREF || traced) /* room for the helpers (results: Lua's own) */
        lua_checkstack(L, 3);
    if (fn_ref == LUA_NOREF) {
        lua_pushvalue(L, fidx); /* kept for messages */
        lua_insert(L, fidx);
        nhelp++;
    }
    if (traced) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_msgh);
        lua_insert(L, base + nhelp); /* [fcopy] msgh f args */
        nhelp++;
    }
    int msgh = traced ? base + nhelp - 1 : 0;

    int outer = vm->armed == 0;
    if (outer) {
        vm->instr_used = 0;
        vm->killed = 0;
        vm->call_base = vm->used;
        guard_begin(vm, where != NULL); /* loading a file: an exact budget */
    }
    vm->armed++;
    int st = lua_pcall(L, nargs, nresults, msgh);
    vm->armed--;
    int kill = vm->killed;
    if (outer) {
        vm->killed = 0;
        guard_end(vm, kill & KILL_INSTR);
    }

    if (st == 0 && !kill) {
        for (int i = 0; i < nhelp; i++)
            lua_remove(L, base);
        if (outer && vm->used > vm->mem_limit / 2)
            lua_gc(L, LUA_GCCOLLECT, 0); /* garbage must not crowd out the limit */
        return 0;
    }
    return call_failed(vm, st, kill, outer, base, nhelp, where, fn_ref, err, errlen);
}

int luavm_call(struct luavm *vm, int nargs, int nresults, char *err, size_t errlen)
{
    return call_impl(vm, nargs, nresults, err, errlen, NULL, LUA_NOREF);
}

int luavm_call_ref(struct luavm *vm, int fn_ref, int nargs, int nresults, char *err, size_t errlen)
{
    return call_impl(vm, nargs, nresults, err, errlen, NULL, fn_ref);
}

/* Coroutines (net.* in plugins' deliver): the same budgets as luavm_call,
 * fresh for every resume.  LuaJIT's hook is global to the state, so the
 * count hook set here also meters the coroutine. */
int luavm_resume(struct luavm *vm, struct lua_State *co, int nargs, int *nres, char *err,
                 size_t errlen)
{
    *nres = 0;
    if (vm->armed)
        return ERR_BUSY;
    vm->instr_used = 0;
    vm->killed = 0;
    vm->call_base = vm->used;
    guard_begin(vm, 0);
    vm->armed = 1;
    int st = lua_resume(co, nargs);
    vm->armed = 0;
    int kill = vm->killed;
    vm->killed = 0;
    guard_end(vm, kill & KILL_INSTR);
    if ((st == 0 || st == LUA_YIELD) && !kill) {
        *nres = lua_gettop(co);
        return st == LUA_YIELD ? LUAVM_YIELDED : 0;
    }
    int rc = ERR_LUA;
    size_t len = 0;
    const char *msg = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &len) : NULL;
    if ((kill & KILL_MEM) || st == LUA_ERRMEM) {
        rc = ERR_BUDGET;
        if (err && errlen)
            snprintf(err, errlen, "%s", "memory limit exceeded");
    } else if (kill & KILL_INSTR) {
        rc = ERR_BUDGET;
        if (msg && strstr(msg, "instruction budget exceeded"))
            set_err(err, errlen, msg, len);
        else if (err && errlen)
            snprintf(err, errlen, "%s", "instruction budget exceeded");
    } else if (msg) {
        set_err(err, errlen, msg, len);
    } else if (err && errlen) {
        snprintf(err, errlen, "(error object is a %s value)", luaL_typename(co, -1));
    }
    if (kill & KILL_MEM)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
    return rc;
}

struct chunk {
    const char *name, *src;
    size_t len;
};

static int load_chunk_tramp(lua_State *L)
{
    const struct chunk *c = lua_touserdata(L, 1);
    struct luavm *vm = vm_of(L);
    const char *name = lua_pushfstring(L, "@%s", c->name);
    if (c->len > 0 && c->src[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "%s: attempt to load a binary chunk", c->name);
    if (luaL_loadbufferx(L, c->src, c->len, name, "t") != 0)
        return lua_error(L);
    push_env(L, vm);
    lua_setfenv(L, -2);
    lua_call(L, 0, 1);
    return 1;
}

int luavm_load_chunk(struct luavm *vm, const char *chunkname, const char *src,
                     size_t len, char *err, size_t errlen)
{
    struct chunk c = { chunkname, src, len };
    lua_State *L = vm->L;
    lua_checkstack(L, 2);
    lua_pushcfunction(L, load_chunk_tramp);
    lua_pushlightuserdata(L, &c);
    return call_impl(vm, 1, 1, err, errlen, chunkname, LUA_NOREF);
}

/* ------------------------------------------------------------------ */
/* msgpack -> Lua                                                     */

struct mp {
    const unsigned char *p, *end;
};

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

static int mp_value(lua_State *L, struct mp *r, int depth);

static int mp_array(lua_State *L, struct mp *r, uint32_t n, int depth)
{
    if (depth >= MAX_DEPTH)
        return ERR_TOOBIG;
    if (n > (size_t)(r->end - r->p))   /* every element takes >= 1 byte */
        return ERR_PARSE;
    if (!lua_checkstack(L, 4))
        return ERR_TOOBIG;
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 1; i <= n; i++) {
        int rc = mp_value(L, r, depth + 1);
        if (rc)
            return rc;
        if (lua_isnil(L, -1))
            lua_pop(L, 1);             /* hole: later elements keep their index */
        else
            lua_rawseti(L, -2, (int)i);
    }
    return 0;
}

static int mp_map(lua_State *L, struct mp *r, uint32_t n, int depth)
{
    if (depth >= MAX_DEPTH)
        return ERR_TOOBIG;
    if (n > (size_t)(r->end - r->p) / 2)
        return ERR_PARSE;
    if (!lua_checkstack(L, 4))
        return ERR_TOOBIG;
    lua_createtable(L, 0, (int)n);
    for (uint32_t i = 0; i < n; i++) {
        int rc = mp_value(L, r, depth + 1);
        if (rc)
            return rc;
        int kt = lua_type(L, -1);
        if (kt == LUA_TTABLE)
            return ERR_PARSE;
        if (kt == LUA_TNUMBER) {
            lua_Number k = lua_tonumber(L, -1);
            if (k != k)
                return ERR_PARSE;
        }
        rc = mp_value(L, r, depth + 1);
        if (rc)
            return rc;
        if (kt == LUA_TNIL || lua_isnil(L, -1))
            lua_pop(L, 2);
        else
            lua_rawset(L, -3);
    }
    return 0;
}

#define NEED(n) do { if ((size_t)(r->end - r->p) < (size_t)(n)) return ERR_PARSE; } while (0)

static int mp_bytes(lua_State *L, struct mp *r, size_t n)
{
    NEED(n);
    lua_pushlstring(L, (const char *)r->p, n);
    r->p += n;
    return 0;
}

static int mp_value(lua_State *L, struct mp *r, int depth)
{
    NEED(1);
    unsigned c = *r->p++;
    if (c <= 0x7f) {
        lua_pushnumber(L, (lua_Number)c);
        return 0;
    }
    if (c >= 0xe0) {
        lua_pushnumber(L, (lua_Number)(int8_t)c);
        return 0;
    }
    if (c >= 0xa0 && c <= 0xbf)
        return mp_bytes(L, r, c & 0x1f);
    if (c >= 0x90 && c <= 0x9f)
        return mp_array(L, r, c & 0x0f, depth);
    if (c >= 0x80 && c <= 0x8f)
        return mp_map(L, r, c & 0x0f, depth);
    const unsigned char *p = r->p;
    uint32_t n;
    switch (c) {
    case 0xc0: lua_pushnil(L); return 0;
    case 0xc2: lua_pushboolean(L, 0); return 0;
    case 0xc3: lua_pushboolean(L, 1); return 0;
    case 0xc4: case 0xd9: NEED(1); r->p += 1; return mp_bytes(L, r, p[0]);
    case 0xc5: case 0xda: NEED(2); r->p += 2; return mp_bytes(L, r, rd16(p));
    case 0xc6: case 0xdb: NEED(4); r->p += 4; return mp_bytes(L, r, rd32(p));
    case 0xc7: NEED(2); r->p += 2; return mp_bytes(L, r, p[0]);          /* ext8: len, type */
    case 0xc8: NEED(3); r->p += 3; return mp_bytes(L, r, rd16(p));
    case 0xc9: NEED(5); r->p += 5; return mp_bytes(L, r, rd32(p));
    case 0xd4: NEED(1); r->p += 1; return mp_bytes(L, r, 1);             /* fixext: type */
    case 0xd5: NEED(1); r->p += 1; return mp_bytes(L, r, 2);
    case 0xd6: NEED(1); r->p += 1; return mp_bytes(L, r, 4);
    case 0xd7: NEED(1); r->p += 1; return mp_bytes(L, r, 8);
    case 0xd8: NEED(1); r->p += 1; return mp_bytes(L, r, 16);
    case 0xca: {
        NEED(4);
        uint32_t u = rd32(p);
        float f;
        memcpy(&f, &u, 4);
        r->p += 4;
        lua_pushnumber(L, (lua_Number)f);
        return 0;
    }
    case 0xcb: {
        NEED(8);
        uint64_t u = rd64(p);
        double d;
        memcpy(&d, &u, 8);
        r->p += 8;
        lua_pushnumber(L, (lua_Number)d);
        return 0;
    }
    case 0xcc: NEED(1); r->p += 1; lua_pushnumber(L, p[0]); return 0;
    case 0xcd: NEED(2); r->p += 2; lua_pushnumber(L, rd16(p)); return 0;
    case 0xce: NEED(4); r->p += 4; lua_pushnumber(L, rd32(p)); return 0;
    case 0xcf: NEED(8); r->p += 8; lua_pushnumber(L, (lua_Number)rd64(p)); return 0;
    case 0xd0: NEED(1); r->p += 1; lua_pushnumber(L, (int8_t)p[0]); return 0;
    case 0xd1: NEED(2); r->p += 2; lua_pushnumber(L, (int16_t)rd16(p)); return 0;
    case 0xd2: NEED(4); r->p += 4; lua_pushnumber(L, (int32_t)rd32(p)); return 0;
    case 0xd3: NEED(8); r->p += 8; lua_pushnumber(L, (lua_Number)(int64_t)rd64(p)); return 0;
    case 0xdc: NEED(2); r->p += 2; return mp_array(L, r, rd16(p), depth);
    case 0xdd: NEED(4); r->p += 4; n = rd32(p); return mp_array(L, r, n, depth);
    case 0xde: NEED(2); r->p += 2; return mp_map(L, r, rd16(p), depth);
    case 0xdf: NEED(4); r->p += 4; n = rd32(p); return mp_map(L, r, n, depth);
    default: return ERR_PARSE; /* 0xc1 */
    }
}

int luavm_push_msgpack(lua_State *L, const char *buf, size_t len)
{
    int top = lua_gettop(L);
    struct mp r = { (const unsigned char *)buf, (const unsigned char *)buf + len };
    if (!lua_checkstack(L, 4))
        return ERR_TOOBIG;
    int rc = mp_value(L, &r, 0);
    if (rc == 0 && r.p != r.end)
        rc = ERR_PARSE; /* trailing bytes */
    if (rc)
        lua_settop(L, top);
    return rc;
}

/* ------------------------------------------------------------------ */
/* jansson <-> Lua                                                    */

static int push_json(lua_State *L, const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_NULL: lua_pushnil(L); return 0;
    case JSON_TRUE: lua_pushboolean(L, 1); return 0;
    case JSON_FALSE: lua_pushboolean(L, 0); return 0;
    case JSON_INTEGER: lua_pushnumber(L, (lua_Number)json_integer_value(v)); return 0;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); return 0;
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return 0;
    case JSON_ARRAY: {
        if (depth >= MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        size_t n = json_array_size(v);
        lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            int rc = push_json(L, json_array_get(v, i), depth + 1);
            if (rc)
                return rc;
            if (lua_isnil(L, -1))
                lua_pop(L, 1);
            else
                lua_rawseti(L, -2, (int)(i + 1));
        }
        return 0;
    }
    case JSON_OBJECT: {
        if (depth >= MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        size_t n = json_object_size(v);
        lua_createtable(L, 0, n > INT_MAX ? INT_MAX : (int)n);
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            const json_t *val = json_object_iter_value(it);
            if (json_is_null(val))
                continue;
            lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
            int rc = push_json(L, val, depth + 1);
            if (rc)
                return rc;
            lua_rawset(L, -3);
        }
        return 0;
    }
    }
    return ERR_INVAL;
}

int luavm_push_json(lua_State *L, const json_t *v)
{
    int top = lua_gettop(L);
    if (!v) {
        lua_pushnil(L);
        return 0;
    }
    int rc = push_json(L, v, 0);
    if (rc)
        lua_settop(L, top);
    return rc;
}

static json_t *num_to_json(lua_Number d, int *err)
{
    if (!isfinite(d)) {
        *err = ERR_INVAL;
        return NULL;
    }
    json_t *j;
    if (d == floor(d) && fabs(d) <= 9007199254740992.0)
        j = json_integer((json_int_t)d);
    else
        j = json_real(d);
    if (!j)
        *err = ERR_NOMEM;
    return j;
}

struct tojson {
    const void *path[MAX_DEPTH + 1];
    int err;
};

static json_t *to_json(lua_State *L, int idx, int depth, struct tojson *s);

static json_t *table_to_json(lua_State *L, int idx, int depth, struct tojson *s)
{
    if (depth >= MAX_DEPTH) {
        s->err = ERR_TOOBIG;
        return NULL;
    }
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < depth; i++)
        if (s->path[i] == self) {
            s->err = ERR_INVAL; /* cycle */
            return NULL;
        }
    s->path[depth] = self;
    if (!lua_checkstack(L, 4)) {
        s->err = ERR_TOOBIG;
        return NULL;
    }

    /* Array when the keys are exactly 1..n (n > 0). */
    size_t count = 0;
    int is_array = 1;
    double max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (is_array) {
            if (lua_type(L, -1) != LUA_TNUMBER) {
                is_array = 0;
            } else {
                double k = lua_tonumber(L, -1);
                if (k < 1 || k != floor(k))
                    is_array = 0;
                else if (k > max)
                    max = k;
            }
        }
    }
    if (count > 0 && is_array && max == (double)count) {
        json_t *a = json_array();
        if (!a) {
            s->err = ERR_NOMEM;
            return NULL;
        }
        for (size_t i = 1; i <= count; i++) {
            lua_rawgeti(L, idx, (int)i);
            json_t *e = to_json(L, lua_gettop(L), depth + 1, s);
            lua_pop(L, 1);
            if (!e || json_array_append_new(a, e) != 0) {
                if (e)
                    s->err = ERR_NOMEM;
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }

    json_t *o = json_object();
    if (!o) {
        s->err = ERR_NOMEM;
        return NULL;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        char num[64];
        const char *k;
        size_t klen;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            k = lua_tolstring(L, -2, &klen);
        } else if (kt == LUA_TNUMBER) {
            double d = lua_tonumber(L, -2);
            int n;
            if (d == floor(d) && fabs(d) < 9.2e18)
                n = snprintf(num, sizeof num, "%lld", (long long)d);
            else
                n = snprintf(num, sizeof num, "%.14g", d);
            k = num;
            klen = (size_t)n;
        } else {
            s->err = ERR_INVAL;
            lua_pop(L, 2);
            json_decref(o);
            return NULL;
        }
        json_t *e = to_json(L, lua_gettop(L), depth + 1, s);
        lua_pop(L, 1);
        if (!e) {
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
        if (json_object_setn_new(o, k, klen, e) != 0) {
            s->err = ERR_INVAL; /* key not UTF-8 (or out of memory) */
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *to_json(lua_State *L, int idx, int depth, struct tojson *s)
{
    json_t *j = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: j = json_null(); break;
    case LUA_TBOOLEAN: j = json_boolean(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER: return num_to_json(lua_tonumber(L, idx), &s->err);
    case LUA_TSTRING: {
        size_t len;
        const char *str = lua_tolstring(L, idx, &len);
        j = json_stringn(str, len);
        if (!j) {
            s->err = ERR_INVAL; /* not UTF-8 */
            return NULL;
        }
        return j;
    }
    case LUA_TTABLE: return table_to_json(L, idx, depth, s);
    default:
        s->err = ERR_INVAL;
        return NULL;
    }
    if (!j)
        s->err = ERR_NOMEM;
    return j;
}

json_t *luavm_to_json(lua_State *L, int idx, int *err)
{
    struct tojson s;
    s.err = 0;
    int top = lua_gettop(L);
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    json_t *j = to_json(L, idx, 0, &s);
    lua_settop(L, top);
    if (err)
        *err = j ? 0 : s.err;
    return j;
}
