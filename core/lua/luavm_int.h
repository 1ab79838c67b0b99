/*
 * luavm_int.h — what the luavm_*.c files share and nothing else includes:
 * the state struct, the marker keys, and the internal functions each file
 * offers the others.
 *
 * The module is split along its seams:
 *   luavm.c           allocator, state life cycle, protected calls, loading
 *   luavm_budget.c    instruction count hook, watchdog (lazy hook, time
 *                     limit), kills, C-call depth
 *   luavm_sandbox.c   environments, owners (one per loaded file), the
 *                     sandbox's base functions, building the state
 *   luavm_readonly.c  read-only views of p/ctx, and the table library
 *   luavm_strlib.c    bounded pattern matching and other string wrappers
 *   luavm_stats.c     per-file memory accounting, log rate limit, metrics
 *   luavm_value.c     msgpack / jansson <-> Lua
 *   luavm_promo.c, luavm_crypto.c   the promo library
 *
 * This header includes no other promod header, so it is a module of its
 * own below luavm.h (scripts/check-layers.py sees no circle).
 */
#ifndef PROMOD_LUAVM_INT_H
#define PROMOD_LUAVM_INT_H
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

struct luavm;

#define LUAVM_HOOK_EVERY 1000
#define LUAVM_MAX_DEPTH 64       /* value conversions */
#define LUAVM_MAX_CDEPTH 200     /* nested C -> Lua calls (Lua 5.1's LUAI_MAXCCALLS) */
#define LUAVM_CSTACK_MAX (1u << 20) /* ... and the C stack they may use, bytes */
#define LUAVM_POLL_EVERY 4096    /* C loops look at the kill flags this often */
#define LUAVM_WATCH_MIN_BUDGET 100000 /* budgets from here on arm the count hook lazily */
#define LUAVM_RO_INPUTS 8        /* read-only inputs remembered (p and ctx of a few requests) */
#define LUAVM_PCACHE 1024        /* purity cache entries */

struct luavm_pcache {
    const void *fn;
    int pure;
};

enum { LUAVM_KILL_INSTR = 1, LUAVM_KILL_MEM = 2, LUAVM_KILL_TIME = 4 };

/* Small blocks come from per-state free lists (see luavm.c). */
#define LUAVM_POOL_MAX 256
#define LUAVM_POOL_CLASSES (LUAVM_POOL_MAX / 16)
struct luavm_pool {
    void *free[LUAVM_POOL_CLASSES];
    char *cur, *end;   /* unused tail of the newest slab */
    void *slabs;       /* list of slabs, linked through their first word */
};

/* Owner slots: a Lua table per loaded file, shared by the file's modules. */
enum {
    LUAVM_OWN_NAME = 1,     /* chunk name ("rules/x.lua") */
    LUAVM_OWN_MODS = 2,     /* require cache of this file: name -> module value */
    LUAVM_OWN_RESULT = 3,   /* what the file returned */
    LUAVM_OWN_DISABLED = 4, /* message once the file is disabled (memory), else nil */
    LUAVM_OWN_EPOCH = 5,    /* luavm_clear_modules() count when MODS was made */
    LUAVM_OWN_IMPURE = 6,   /* true once a module of the file was found impure */
    LUAVM_OWN_ENVS = 7,     /* every env of the file (its own, its modules') */
    LUAVM_OWN_LOADED = 8,   /* true once the file's main chunk returned */
    LUAVM_OWN_PURE = 9,     /* true when the file was found pure (luavm_pure.c) */
};

struct luavm {
    lua_State *L;
    size_t used;           /* bytes currently allocated */
    size_t mem_limit;
    size_t call_mem_limit;
    size_t call_base;      /* `used` when the outermost call started */
    long instr_budget;
    long instr_used;
    int armed;             /* nesting depth of luavm_call; limits apply when > 0 */
    int killed;            /* LUAVM_KILL_* bits for the current outer call */
    int trusted;           /* > 0: our own Lua code runs (not counted, not stopped) */
    int cdepth;            /* nested C -> Lua calls in the current outer call */
    uintptr_t cstack_base; /* C stack address where the outer call started */
    /* The watchdog (luavm_budget.c): */
    int watched;                    /* lazily armed count hook (large budget) */
    int listed;                     /* on the watchdog's list */
    volatile sig_atomic_t in_call;  /* an outer call is running */
    volatile sig_atomic_t hooked;   /* the count hook is set for this call */
    unsigned long call_seq;         /* outer calls started (atomic) */
    unsigned long timeout_seq;      /* watchdog: call_seq of a call past its time (atomic) */
    long call_time_ms;              /* CPU time limit of a hook call (0 = none) */
    long load_time_ms;              /* ... of loading a file */
    long cur_time_ms;               /* ... of the running outer call (atomic) */
    unsigned long seen_seq;         /* watchdog: call_seq at its last look */
    int64_t seen_cpu_ns;            /* watchdog: thread CPU time when it first saw the call */
    pthread_t thread;               /* the thread running the calls */
    struct luavm *wnext;            /* watchdog list */
    /* Sandbox: */
    char *lib_dir;
    int ref_base, ref_libs, ref_libmt, ref_msgh, ref_undecl_set, ref_owners;
    int ref_ro;                     /* read-only view metatable parts (luavm_readonly.c) */
    int ref_ipairs_aux, ref_next;   /* LuaJIT's own iterators, for plain tables */
    int ref_format, ref_rep, ref_ostime; /* originals wrapped by luavm_strlib.c */
    int ref_pure;                   /* the purity checker (luavm_pure.c), or LUA_NOREF */
    int ref_true;                   /* the "returns true" checker (luavm_pure.c), or LUA_NOREF */
    struct luavm_pcache *pcache;    /* function -> pure, LUAVM_PCACHE entries (luavm_pure.c) */
    int pcache_n, ref_anchor;       /* entries; the table keeping their functions alive */
    /* Inputs registered by luavm_push_readonly, newest last (luavm_readonly.c): */
    struct luavm_ro_input {
        const void *tab;            /* the table (kept alive by ref) */
        int ref, view;              /* registry refs: the table, its view (or LUA_NOREF) */
        const char *what;
    } ro_in[LUAVM_RO_INPUTS];
    int ro_next;                    /* slot the next registration takes */
    unsigned mods_epoch;
    /* Per-file accounting (luavm_stats.c): */
    size_t file_mem_limit;   /* retained bytes a file may hold */
    size_t scan_at;          /* run the accounting when `used` passes this */
    int ndisabled;           /* owners disabled for memory (calls check when > 0) */
    int log_per_sec;         /* print/promo.log lines per second per file (0 = no limit) */
    int stats_id;            /* index in the process-wide stats table */
    struct luavm_pool pool;
};

/* Unique light-userdata keys (their addresses). */
extern const char luavm_key_ro;      /* marks read-only library proxy metatables */
extern const char luavm_key_owner;   /* env metatable -> owner table (marks envs) */
extern const char luavm_key_loading; /* require in progress */
extern const char luavm_key_pure;    /* in an env: its file cannot write tables */

/* luavm.c */
struct luavm *luavm_of(lua_State *L);   /* NULL for a state not made by luavm_new */
void luavm_set_err(char *err, size_t errlen, const char *msg, size_t len);

/* luavm_budget.c */
void luavm_hook(lua_State *L, lua_Debug *ar);
int luavm_watch_add(struct luavm *vm);
void luavm_watch_remove(struct luavm *vm);
extern __thread struct luavm *luavm_tl_vm; /* the state whose outer call this thread runs */

/* Outer call start / end: the hook as the state's mode wants it, and what
 * the watchdog looks at (inline: they wrap every hook call). */
static inline void luavm_guard_begin(struct luavm *vm, int count_all, long time_ms)
{
    __atomic_store_n(&vm->cur_time_ms, time_ms, __ATOMIC_RELAXED);
    if (!vm->listed)
        return;
    vm->thread = pthread_self();
    luavm_tl_vm = vm;
    if (vm->watched) {
        vm->hooked = 0;
        if (count_all) { /* counted from the first instruction, watched or not */
            vm->hooked = 1;
            lua_sethook(vm->L, luavm_hook, LUA_MASKCOUNT, LUAVM_HOOK_EVERY);
        }
    }
    __atomic_add_fetch(&vm->call_seq, 1, __ATOMIC_RELEASE);
    vm->in_call = 1;
}

static inline void luavm_guard_end(struct luavm *vm, int killed)
{
    if (vm->listed) {
        vm->in_call = 0; /* first: a late signal now leaves the hook alone */
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        luavm_tl_vm = NULL;
    }
    if (!vm->watched) {
        if (killed) /* back to counting every LUAVM_HOOK_EVERY */
            lua_sethook(vm->L, luavm_hook, LUA_MASKCOUNT, LUAVM_HOOK_EVERY);
        return;
    }
    if (vm->hooked || killed) {
        lua_sethook(vm->L, NULL, 0, 0);
        vm->hooked = 0;
    }
}
/** Nonzero when the running call must stop (killed, or past its time). */
int luavm_over(struct luavm *vm);
/** Raise the error that ends the running call (after luavm_over said so):
 *  records the kill, makes the hook fire on every instruction from now
 *  on (so no Lua code runs after it) and raises "time limit exceeded" or
 *  the budget error.  Does not return. */
int luavm_stop(lua_State *L, struct luavm *vm);
/** Poll inside a C loop: every LUAVM_POLL_EVERY steps, stop if over. */
static inline void luavm_poll(lua_State *L, struct luavm *vm, unsigned *steps)
{
    if (vm && ++*steps % LUAVM_POLL_EVERY == 0 && luavm_over(vm))
        luavm_stop(L, vm);
}
/** Before a C function calls back into Lua: raises "C stack overflow" past
 *  LUAVM_MAX_CDEPTH, else counts one level.  Returns the vm (or NULL). */
struct luavm *luavm_cdepth_enter(lua_State *L);
static inline void luavm_cdepth_leave(struct luavm *vm)
{
    if (vm)
        vm->cdepth--;
}

/* luavm_sandbox.c */
int luavm_build_sandbox(lua_State *L);   /* lua_CFunction for lua_cpcall(vm) */
/** Push a new owner for a file named `name` and register it. */
void luavm_push_owner(lua_State *L, struct luavm *vm, const char *name);
/** Push a fresh private environment belonging to the owner at `owner`. */
void luavm_push_env(lua_State *L, struct luavm *vm, int owner);
/** Push the owner of the function at `idx` (nil when it has none). */
void luavm_push_fn_owner(lua_State *L, int idx);
/** Does the metatable of the value at `idx` hold a true `key`? */
int luavm_has_marked_mt(lua_State *L, int idx, const void *key);

/* luavm_pure.c */
void luavm_pure_init(lua_State *L, struct luavm *vm);
/** Can the chunk at `fn` (and every function in it) not write a table? */
int luavm_pure_check(lua_State *L, struct luavm *vm, int fn);
/** Mark every env of the owner at `owner` as pure. */
void luavm_pure_mark(lua_State *L, int owner);
/** Is the function at `fidx` from a pure file?  Cached per function
 *  (anchored, so the cached pointer stays that function's): the hit path
 *  is inline, a miss looks it up and fills the cache. */
int luavm_pure_miss(lua_State *L, struct luavm *vm, int fidx, const void *fn, size_t h);
static inline size_t luavm_pcache_hash(const void *fn)
{
    return (size_t)(((uintptr_t)fn >> 4) * 0x9E3779B97F4A7C15ull >> 54); /* 10 bits */
}
static inline int luavm_pure_fn(lua_State *L, struct luavm *vm, int fidx)
{
    const void *fn = lua_topointer(L, fidx);
    size_t h = luavm_pcache_hash(fn);
    if (vm->pcache)
        for (int i = 0; i < 8; i++) {
            const struct luavm_pcache *e = &vm->pcache[(h + (size_t)i) & (LUAVM_PCACHE - 1)];
            if (e->fn == fn)
                return e->pure;
            if (!e->fn)
                break;
        }
    return luavm_pure_miss(L, vm, fidx, fn, h);
}
void luavm_pure_free(struct luavm *vm);

/* luavm_readonly.c */
/** Before a call of the function at `fidx` with `nargs` arguments above
 *  it, a function that may write (!luavm_pure_fn): every argument
 *  registered by luavm_push_readonly is replaced by its read-only view. */
void luavm_ro_args(lua_State *L, struct luavm *vm, int fidx, int nargs);
void luavm_ro_free(struct luavm *vm);
/** The table a read-only view reads (pushed), when the value at `idx` is a
 *  view; 0 and nothing pushed otherwise. */
int luavm_ro_source(lua_State *L, int idx);
/** The `what` of a view ("profile"), or NULL when `idx` is not a view. */
const char *luavm_ro_what(lua_State *L, int idx);
/** Argument `arg` must be a table or a read-only view; a view is replaced
 *  in its stack slot by the table it reads (for reading only: nothing
 *  from that table may be returned to the script). */
void luavm_check_readable(lua_State *L, int arg);
/** Argument `arg` must be a table the script may write: raises
 *  "profile is read-only" for a view, "attempt to modify read-only table"
 *  for a library proxy. */
void luavm_check_writable(lua_State *L, int arg);
void luavm_open_table(lua_State *L, struct luavm *vm);   /* pushes the table library */
void luavm_ro_init(lua_State *L, struct luavm *vm);
int luavm_l_type(lua_State *L);
int luavm_l_next(lua_State *L);
int luavm_l_pairs(lua_State *L);
int luavm_l_ipairs(lua_State *L);
int luavm_l_unpack(lua_State *L);
int luavm_l_rawget(lua_State *L);

/* luavm_strlib.c */
/** Replace find/match/gmatch/gsub/rep/format in the string table on top of
 *  the stack with bounded versions. */
void luavm_open_strlib(lua_State *L, struct luavm *vm);
int luavm_l_ostime(lua_State *L);

/* luavm_stats.c */
/** Is this print/promo.log line within the caller file's rate?  Counts a
 *  drop otherwise. */
int luavm_log_allowed(lua_State *L, const char *file);
/** After an outer call: scan per-file memory when the state is large. */
/** Lua calls running now, all states (outer calls: a hook, a file's top
 *  level, a resume); the promod_lua_calls_in_flight gauge.  Atomic. */
extern long luavm_calls_in_flight;
void luavm_stats_after_call(struct luavm *vm);
/** A disabled owner's message for the function at `fidx`, or NULL. */
const char *luavm_disabled_msg(lua_State *L, int fidx);
int luavm_stats_register(struct luavm *vm);
void luavm_stats_unregister(struct luavm *vm);
/** A file named `name` was (re)loaded into `vm`: forget it was disabled. */
void luavm_stats_owner_new(struct luavm *vm, const char *name);

#endif
