/*
 * luavm.c — one sandboxed LuaJIT state: counting allocator, the state's
 * life cycle, protected calls and file loading.  The sandbox itself is
 * luavm_sandbox.c, the budgets luavm_budget.c (see luavm_int.h for the
 * map of the module).
 *
 * Why the allocator only enforces limits while a call is armed: an
 * allocation refused outside lua_pcall raises with no protected frame and
 * LuaJIT's panic handler exits the process.  Host code (pushing a profile,
 * building tables) runs unarmed and is bounded by the codec's own limits.
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "base/err.h"
#include "base/log.h"

/* ------------------------------------------------------------------ */
/* allocator                                                          */

/* Small blocks (the tables and strings hooks create on every call) come
 * from per-state free lists in 16-byte classes, carved from 64 KiB slabs:
 * a state belongs to one thread, so no locking, and a hook's garbage is
 * recycled without a trip through malloc.  Larger blocks use realloc. */
#define POOL_SLAB (64 * 1024)

static void *pool_get(struct luavm_pool *p, size_t n)
{
    int c = (int)((n - 1) >> 4);
    void *b = p->free[c];
    if (b) {
        p->free[c] = *(void **)b;
        return b;
    }
    size_t sz = (size_t)(c + 1) << 4;
    if (!p->cur || sz > (size_t)(p->end - p->cur)) { /* no NULL + n (UB; clang's UBSan stops there) */
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

static void pool_put(struct luavm_pool *p, void *b, size_t n)
{
    int c = (int)((n - 1) >> 4);
    *(void **)b = p->free[c];
    p->free[c] = b;
}

static void pool_free_all(struct luavm_pool *p)
{
    while (p->slabs) {
        void *next = *(void **)p->slabs;
        free(p->slabs);
        p->slabs = next;
    }
}

/* Resize a block between the pool and malloc as sizes cross the pool's
 * largest class.  osize is the block's size as Lua knows it (0 for a new
 * block). */
static void *block_resize(struct luavm_pool *p, void *ptr, size_t osize, size_t nsize)
{
    int opool = ptr && osize && osize <= LUAVM_POOL_MAX, npool = nsize <= LUAVM_POOL_MAX;
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

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct luavm *vm = ud;
    if (nsize == 0) {
        if (ptr && osize && osize <= LUAVM_POOL_MAX)
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
            vm->killed |= LUAVM_KILL_MEM;
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
 * userdata. */
struct luavm *luavm_of(lua_State *L)
{
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    return f == vm_alloc ? ud : NULL;
}

/* ------------------------------------------------------------------ */
/* life cycle                                                         */

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

int luavm_new(const struct luavm_opts *opts, struct luavm **out)
{
    *out = NULL;
    struct luavm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return ERR_NOMEM;
    vm->mem_limit = opts && opts->mem_limit ? opts->mem_limit : (size_t)256 << 20;
    vm->call_mem_limit = opts && opts->call_mem_limit ? opts->call_mem_limit : (size_t)32 << 20;
    vm->instr_budget = opts && opts->instr_budget > 0 ? opts->instr_budget : 1000000;
    vm->call_time_ms = opts && opts->call_time_ms > 0 ? opts->call_time_ms : LUAVM_CALL_TIME_MS;
    vm->load_time_ms = opts && opts->load_time_ms > 0 ? opts->load_time_ms : LUAVM_LOAD_TIME_MS;
    vm->file_mem_limit = opts && opts->file_mem_limit ? opts->file_mem_limit : vm->mem_limit / 4;
    vm->log_per_sec = opts && opts->log_per_sec ? (opts->log_per_sec < 0 ? 0 : opts->log_per_sec)
                                                : LUAVM_LOG_PER_SEC;
    vm->ref_owners = LUA_NOREF;
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
    if (lua_cpcall(vm->L, luavm_build_sandbox, vm) != 0) {
        log_error("luavm", "err=\"%s\"", lua_tostring(vm->L, -1) ? lua_tostring(vm->L, -1) : "?");
        luavm_free(vm);
        return ERR_NOMEM;
    }
    luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    for (int i = 0; i < g_nopeners; i++)
        g_openers[i](vm->L);
    vm->listed = luavm_watch_add(vm) == 0;
    vm->watched = vm->listed && vm->instr_budget >= LUAVM_WATCH_MIN_BUDGET;
    if (!vm->watched)
        lua_sethook(vm->L, luavm_hook, LUA_MASKCOUNT, LUAVM_HOOK_EVERY);
    luavm_stats_register(vm);
    /* Hooks allocate short-lived tables on every call (a literal set in an
     * eligibility test is a fresh table each time) while the live heap —
     * every loaded campaign — stays put.  A GC cycle traverses that live
     * heap, so cycles are made rarer: start one when the heap reaches 4x
     * what survived the last (Lua's default is 2x).  Measured on the
     * reference campaigns: an eligibility call 187 -> 156 ns.  After a
     * call, luavm_stats_after_call collects early when garbage approaches
     * the state's memory limit. */
    lua_gc(vm->L, LUA_GCSETPAUSE, 400);
    *out = vm;
    return 0;
}

void luavm_free(struct luavm *vm)
{
    if (!vm)
        return;
    if (vm->listed)
        luavm_watch_remove(vm);
    luavm_stats_unregister(vm);
    if (vm->L)
        lua_close(vm->L);
    luavm_pure_free(vm);
    pool_free_all(&vm->pool);
    free(vm->lib_dir);
    free(vm);
}

struct lua_State *luavm_state(struct luavm *vm) { return vm->L; }

size_t luavm_mem_used(const struct luavm *vm) { return vm->used; }

void luavm_clear_modules(struct luavm *vm) { vm->mods_epoch++; }

/* ------------------------------------------------------------------ */
/* protected calls                                                    */

void luavm_set_err(char *err, size_t errlen, const char *msg, size_t len)
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

/* The budget error of a killed call: the kill's own message when it says
 * where it happened ("file:line: time limit exceeded (100 ms)"), else the
 * kill at `loc`. */
static void budget_err(int kill, const char *msg, size_t len, const char *loc, char *err,
                       size_t errlen)
{
    const char *what = (kill & LUAVM_KILL_TIME) ? "time limit exceeded"
                                                : "instruction budget exceeded";
    const char *at = msg ? strstr(msg, what) : NULL;
    if (at && at != msg)
        luavm_set_err(err, errlen, msg, len);
    else if (at && err && errlen)
        snprintf(err, errlen, "%s: %.*s", loc ? loc : "?", (int)strcspn(msg, "\n"), msg);
    else if (err && errlen)
        snprintf(err, errlen, "%s: %s", loc ? loc : "?", what);
}

/* Where the called function was defined ("fn.lua:12"), for messages that
 * carry no position of their own. */
static const char *fn_loc(lua_State *L, int base, int fn_ref, char *loc, size_t len)
{
    lua_Debug ar;
    snprintf(loc, len, "?");
    if (fn_ref != LUA_NOREF)
        lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    else
        lua_pushvalue(L, base);
    if (lua_isfunction(L, -1)) {
        if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
            snprintf(loc, len, "%s:%d", ar.short_src, ar.linedefined);
        else
            snprintf(loc, len, "%s", ar.short_src);
    } else {
        lua_pop(L, 1);
    }
    return loc;
}

/* The error half of call_impl, out of line so the hot path's frame stays
 * small: turn a failed or killed call into ERR_BUDGET / ERR_LUA with its
 * message, and leave the stack as it was before the function was pushed.
 * Stack on entry: [helpers (nhelp) at base] f args... then whatever the
 * failed pcall left (its error value). */
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
    char loc[LUA_IDSIZE + 24];
    if ((kill & LUAVM_KILL_MEM) || st == LUA_ERRMEM) {
        rc = ERR_BUDGET;
        if (!where)
            where = fn_loc(L, base, fn_ref, loc, sizeof loc);
        if (err && errlen)
            snprintf(err, errlen, "%s: memory limit exceeded", where);
    } else if (kill & (LUAVM_KILL_INSTR | LUAVM_KILL_TIME)) {
        rc = ERR_BUDGET;
        if (!where)
            where = fn_loc(L, base, fn_ref, loc, sizeof loc);
        budget_err(kill, msg, len, where, err, errlen);
    } else {
        rc = ERR_LUA;
        if (msg) {
            luavm_set_err(err, errlen, msg, len);
            if (log_get_level() <= LOG_DEBUG)
                log_debug("lua.error", "trace=\"%.*s\"", (int)(len > 1500 ? 1500 : len), msg);
        } else if (err && errlen) {
            snprintf(err, errlen, "(error object is a %s value)", luaL_typename(L, -1));
        }
    }
    lua_settop(L, base - 1);
    if (outer && (kill & LUAVM_KILL_MEM))
        lua_gc(L, LUA_GCCOLLECT, 0);  /* drop the bomb now, not at the next GC step */
    if (outer && !where)
        luavm_stats_after_call(vm);   /* a file that keeps memory fails calls first */
    return rc;
}

/* A file disabled for its memory (luavm_stats.c) fails every call at once. */
static __attribute__((noinline)) int call_disabled(struct luavm *vm, int fidx, const char *msg,
                                                   char *err, size_t errlen)
{
    luavm_set_err(err, errlen, msg, strlen(msg));
    lua_settop(vm->L, fidx - 1);
    return ERR_BUDGET;
}

/* Stack on entry: [f args...].  `where` overrides the location used for
 * memory-limit messages (the chunk name while loading; it also selects
 * the load time limit and counting from the first instruction); `fn_ref`,
 * when not LUA_NOREF, is a registry ref of f itself, which spares keeping
 * a copy of f on the stack for that message.  Helper slots (the copy, the
 * traceback handler) go below f, at `base`. */
static int call_impl(struct luavm *vm, int nargs, int nresults, char *err, size_t errlen,
                     const char *where, int fn_ref)
{
    lua_State *L = vm->L;
    int fidx = lua_gettop(L) - nargs, base = fidx, nhelp = 0;
    int outer = vm->armed == 0;
    /* read-only inputs among the arguments: as they are for a function that
     * cannot write (luavm_pure.c), views for the others */
    if (vm->ro_in[0].ref != LUA_NOREF && !luavm_pure_fn(L, vm, fidx))
        luavm_ro_args(L, vm, fidx, nargs);
    if (vm->ndisabled && outer) {
        const char *why = luavm_disabled_msg(L, fidx);
        if (why)
            return call_disabled(vm, fidx, why, err, errlen);
    }
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

    if (outer) {
        vm->instr_used = 0;
        vm->killed = 0;
        vm->cdepth = 0;
        vm->trusted = 0;
        vm->cstack_base = (uintptr_t)__builtin_frame_address(0);
        vm->call_base = vm->used;
        /* loading a file: an exact budget, and the load time limit */
        luavm_guard_begin(vm, where != NULL, where ? vm->load_time_ms : vm->call_time_ms);
    }
    if (outer)
        __atomic_add_fetch(&luavm_calls_in_flight, 1, __ATOMIC_RELAXED);
    vm->armed++;
    int st = lua_pcall(L, nargs, nresults, msgh);
    vm->armed--;
    if (outer)
        __atomic_sub_fetch(&luavm_calls_in_flight, 1, __ATOMIC_RELAXED);
    int kill = vm->killed;
    if (outer) {
        vm->killed = 0;
        luavm_guard_end(vm, kill & (LUAVM_KILL_INSTR | LUAVM_KILL_TIME));
    }

    if (st == 0 && !kill) {
        for (int i = 0; i < nhelp; i++)
            lua_remove(L, base);
        if (outer && !where && vm->used > vm->scan_at)
            luavm_stats_after_call(vm); /* garbage, and files retaining too much */
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
    vm->cdepth = 0;
    vm->trusted = 0;
    vm->cstack_base = (uintptr_t)__builtin_frame_address(0);
    vm->call_base = vm->used;
    luavm_guard_begin(vm, 0, vm->call_time_ms);
    vm->armed = 1;
    __atomic_add_fetch(&luavm_calls_in_flight, 1, __ATOMIC_RELAXED);
    int st = lua_resume(co, nargs);
    __atomic_sub_fetch(&luavm_calls_in_flight, 1, __ATOMIC_RELAXED);
    vm->armed = 0;
    int kill = vm->killed;
    vm->killed = 0;
    luavm_guard_end(vm, kill & (LUAVM_KILL_INSTR | LUAVM_KILL_TIME));
    if ((st == 0 || st == LUA_YIELD) && !kill) {
        *nres = lua_gettop(co);
        return st == LUA_YIELD ? LUAVM_YIELDED : 0;
    }
    int rc = ERR_LUA;
    size_t len = 0;
    const char *msg = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &len) : NULL;
    if ((kill & LUAVM_KILL_MEM) || st == LUA_ERRMEM) {
        rc = ERR_BUDGET;
        if (err && errlen)
            snprintf(err, errlen, "%s", "memory limit exceeded");
    } else if (kill & (LUAVM_KILL_INSTR | LUAVM_KILL_TIME)) {
        rc = ERR_BUDGET;
        budget_err(kill, msg, len, NULL, err, errlen);
    } else if (msg) {
        luavm_set_err(err, errlen, msg, len);
    } else if (err && errlen) {
        snprintf(err, errlen, "(error object is a %s value)", luaL_typename(co, -1));
    }
    if (kill & LUAVM_KILL_MEM)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
    return rc;
}

/* ------------------------------------------------------------------ */
/* loading a file                                                     */

struct chunk {
    const char *name, *src;
    size_t len;
};

/* C code reads the returned table with lua_getfield & co. after the call,
 * unarmed: a metatable there would run script code outside every budget
 * (an __index that never returns would hang the reloader).  So the table
 * a file returns, and every table inside it, must be plain.  Walks keys
 * and values (not functions' upvalues: C never reads those); `seen`
 * (stack index) makes shared subtables cost one visit. */
static void check_plain(lua_State *L, struct luavm *vm, const char *name, int idx, int seen,
                        int depth, unsigned *steps)
{
    if (lua_getmetatable(L, idx))
        luaL_error(L, "%s: the returned table (or a table inside it) has a metatable: files "
                      "return plain tables", name);
    if (depth > 200)
        luaL_error(L, "%s: the returned table is nested too deeply", name);
    lua_pushvalue(L, idx);
    lua_rawget(L, seen);
    int was = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (was)
        return;
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    luaL_checkstack(L, 4, "nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        luavm_poll(L, vm, steps);
        if (lua_istable(L, -1))
            check_plain(L, vm, name, lua_gettop(L), seen, depth + 1, steps);
        if (lua_istable(L, -2))
            check_plain(L, vm, name, lua_gettop(L) - 1, seen, depth + 1, steps);
        lua_pop(L, 1);
    }
}

static int load_chunk_tramp(lua_State *L)
{
    const struct chunk *c = lua_touserdata(L, 1);
    struct luavm *vm = luavm_of(L);
    const char *name = lua_pushfstring(L, "@%s", c->name);
    if (c->len > 0 && c->src[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "%s: attempt to load a binary chunk", c->name);
    if (luaL_loadbufferx(L, c->src, c->len, name, "t") != 0)
        return lua_error(L);
    int fn = lua_gettop(L);
    int pure = luavm_pure_check(L, vm, fn); /* before it runs: its functions as written */
    luavm_push_owner(L, vm, c->name);
    int owner = fn + 1;
    luavm_push_env(L, vm, owner);
    lua_setfenv(L, fn);
    lua_pushvalue(L, fn);
    lua_call(L, 0, 1);
    int res = lua_gettop(L);
    lua_rawgeti(L, owner, LUAVM_OWN_IMPURE);
    pure = pure && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (pure) {
        luavm_pure_mark(L, owner);
        lua_pushboolean(L, 1);
        lua_rawseti(L, owner, LUAVM_OWN_PURE);
    }
    lua_pushboolean(L, 1);
    lua_rawseti(L, owner, LUAVM_OWN_LOADED);
    if (lua_istable(L, res)) {
        unsigned steps = 0;
        lua_newtable(L);
        check_plain(L, vm, c->name, res, res + 1, 0, &steps);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, res);
    lua_rawseti(L, owner, LUAVM_OWN_RESULT);
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
