/*
 * luavm.h — one sandboxed LuaJIT state: the only module that creates Lua
 * states and runs script code.
 *
 * Owns: a lua_State with a counting allocator (memory limit), the sandbox
 * (an allow-listed, read-only base environment; one private environment per
 * loaded file), the instruction budget and CPU time limit, pcall +
 * traceback, read-only views of hook inputs, conversions between msgpack /
 * jansson values and Lua values, per-file accounting (memory, log lines),
 * and the `promo` library (luavm_promo.c).  The files of the module and
 * what each holds: luavm_int.h.
 *
 * Threads: a struct luavm belongs to one thread at a time (each worker
 * thread owns one; the rule checker uses throwaway ones).  Nothing here is
 * shared between states, except the process-wide watchdog thread and the
 * statistics behind luavm_file_disabled() and the metrics (mutex).
 *
 * Sandbox: scripts see only assert error ipairs next pairs pcall xpcall
 * select tonumber tostring type unpack rawequal rawget rawset setmetatable
 * getmetatable (the string metatable is hidden), string, table, math, bit
 * (read-only proxies), os.time os.date os.clock, load/loadstring (text only,
 * at most 1 MiB, the caller's environment), require (only modules under
 * `lib_dir`, text only, one instance per loading file), and promo.
 * Reading or writing an undeclared global raises "undeclared global 'x'".
 * No io, os.*, ffi, jit, debug, dofile, loadfile, package, collectgarbage,
 * coroutine, bytecode.
 *
 * Budgets (luavm_budget.c): the JIT compiler is switched off for the state
 * (LuaJIT does not run count hooks inside compiled traces, so `while true
 * do end` would never be stopped); a count hook charges every 1000 VM
 * instructions against the per-call budget (armed lazily by a watchdog
 * thread when the budget is large).  Every outer call also has a limit on
 * its thread's CPU time (`call_time_ms`, `load_time_ms` for loading a
 * file), which the sandbox's own C functions (pattern matching, the table
 * library, promo's loops) poll, so time spent in C is bounded too.  Once a
 * call is killed the hook fires on every instruction, the sandbox's
 * pcall/xpcall rethrow and xpcall's handler is not run: no script code runs
 * after a kill.  Nested C -> Lua calls (gsub with a function, sort with a
 * comparator, pcall, require, metamethods called from C) are limited to
 * 200 levels: deeper is the error "C stack overflow", never a crash.
 * Memory: the allocator refuses allocations past `mem_limit` bytes for the
 * whole state, and past `call_mem_limit` bytes allocated during one call;
 * a file that keeps too much between calls is disabled (luavm_stats.c).
 *
 * Sandbox details:
 *  - Each file's environment is empty; its __index chain is a per-file
 *    table of *fresh* read-only proxies (string, table, math, bit, os,
 *    promo) and then the shared base.  Writes to any global raise.  Proxies
 *    have a hidden metatable (`__metatable = false`), writes through them
 *    raise, and rawset and the table library refuse them.  `rawget` on a
 *    proxy returns nil and `pairs(string)` iterates nothing (Lua 5.1 has no
 *    __pairs).
 *  - p and ctx are read-only in hooks (luavm_push_readonly): a hook whose
 *    file cannot write any table gets them as they are, every other hook
 *    gets read-only views, which read as tables (`#`, pairs, ipairs, next,
 *    unpack, rawget, table.concat, promo.has ... and type() says "table")
 *    and raise "profile is read-only" / "ctx is read-only" on any write.
 *  - The string metatable's __index is the filtered string table (no
 *    string.dump via ("").dump); getmetatable("") returns false.
 *  - load(chunk [, name]) accepts a string or a reader function; loaded
 *    chunks get the environment of the nearest sandboxed Lua caller.
 *  - require results are cached per file: each file that requires a module
 *    runs it once and gets its own instance (so a file that rewrites a
 *    module's function changes only its own copy); luavm_clear_modules()
 *    makes the next require of every file re-read the module.
 *  - print(...) and promo.log(...) log at info level, at most
 *    `log_per_sec` lines a second per file (drops are counted).
 *  - The value a file returns (luavm_load_chunk), and every table inside
 *    it, must be plain: no metatables (C code reads it unarmed).
 *  - Limits are enforced only while a luavm_call/luavm_load_chunk runs: host
 *    C code pushing values between calls is never refused (a refusal
 *    outside a protected call would abort the process).
 *  - The per-call memory limit is net growth: bytes live now minus bytes
 *    live when the call started (garbage not yet collected counts).
 */
#ifndef PROMOD_LUAVM_H
#define PROMOD_LUAVM_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct lua_State;
struct luavm;

#define LUAVM_CALL_TIME_MS 100   /**< default CPU time limit of a hook call */
#define LUAVM_LOAD_TIME_MS 500   /**< default CPU time limit of loading a file */
#define LUAVM_LOG_PER_SEC 20     /**< default print/promo.log lines per second per file */

struct luavm_opts {
    size_t mem_limit;       /**< whole state, bytes; 0 = 256 MiB */
    size_t call_mem_limit;  /**< per luavm_call, bytes; 0 = 32 MiB */
    long instr_budget;      /**< per luavm_call, VM instructions; 0 = 1,000,000 */
    const char *lib_dir;    /**< directory `require` may load from (e.g. "rules/lib"); NULL = none */
    long call_time_ms;      /**< CPU time per luavm_call/luavm_resume, ms; 0 = LUAVM_CALL_TIME_MS */
    long load_time_ms;      /**< CPU time per luavm_load_chunk, ms; 0 = LUAVM_LOAD_TIME_MS */
    size_t file_mem_limit;  /**< bytes one file may keep between calls; 0 = mem_limit / 4 */
    int log_per_sec;        /**< print/promo.log lines per second per file; 0 = LUAVM_LOG_PER_SEC,
                                 negative = no limit */
};

/** Create a sandboxed state.  @return 0, ERR_NOMEM. */
int luavm_new(const struct luavm_opts *opts, struct luavm **out);
void luavm_free(struct luavm *vm);
struct lua_State *luavm_state(struct luavm *vm);

/** Compile `src` as text (bytecode is refused) under `chunkname` (the file
 *  path as it should appear in messages, e.g. "rules/spring.lua"), give it a
 *  fresh private environment and owner (the file, for require's cache and
 *  the per-file accounting) and run it with the budgets (instructions
 *  counted from the first one; the load time limit).  On success the
 *  chunk's first return value is pushed (nil when it returned nothing) and
 *  0 is returned.  A table returned (and every table inside it) must have
 *  no metatable.  On failure nothing is pushed, `err` gets
 *  "rules/spring.lua:12: message" and ERR_LUA (syntax/runtime),
 *  ERR_BUDGET (instructions/time/memory) is returned. */
int luavm_load_chunk(struct luavm *vm, const char *chunkname, const char *src,
                     size_t len, char *err, size_t errlen);

/** Call the function below `nargs` arguments on the stack, like lua_pcall,
 *  with a traceback handler and fresh budgets.  On success `nresults`
 *  values are pushed and 0 returned.  On failure the function and args are
 *  popped, nothing is pushed, `err` gets "file:line: message" (first line
 *  only, no traceback) and ERR_LUA or ERR_BUDGET (instructions, time,
 *  memory; or the function's file was disabled for its memory:
 *  "file: disabled: ...") is returned.  The stack height below the
 *  function is preserved on every path.  After a successful outer call
 *  the state may run its per-file memory scan (see luavm_stats.c): a file
 *  found retaining too much is disabled and its tables emptied, so C code
 *  must not rely on a campaign's own tables staying intact across calls
 *  when that campaign is the culprit. */
int luavm_call(struct luavm *vm, int nargs, int nresults, char *err, size_t errlen);

/** luavm_resume() result: the coroutine yielded and may be resumed. */
/** luavm_call for a function the caller pushed from registry slot
 *  `fn_ref` (f is still on the stack below its arguments): the same
 *  budgets and messages, with less stack work per call (the ref names the
 *  function in memory-limit messages). */
int luavm_call_ref(struct luavm *vm, int fn_ref, int nargs, int nresults, char *err, size_t errlen);

#define LUAVM_YIELDED 1

/** Resume coroutine `co` (a thread of this state) with the `nargs` values
 *  on its stack, with fresh budgets for this resume (as luavm_call).
 *  @return 0 (the function returned: its *nres results are on co's stack),
 *  LUAVM_YIELDED (*nres yielded values on co's stack), ERR_LUA or
 *  ERR_BUDGET with `err` set ("file:line: message"; the coroutine is dead),
 *  ERR_BUSY when called from inside a luavm_call.  A yield across the
 *  sandbox's pcall is an error ("attempt to yield across C-call
 *  boundary").  Added for the outbox (core/luavm_net.c). */
int luavm_resume(struct luavm *vm, struct lua_State *co, int nargs, int *nres, char *err,
                 size_t errlen);

/** Add promo.hmac_sha256 (core/luavm_crypto.c) to the table on top of the
 *  stack (called by luavm_open_promo). */
void luavm_open_crypto(struct lua_State *L);

/** Bytes currently allocated by the state. */
size_t luavm_mem_used(const struct luavm *vm);

/** Push a msgpack-encoded value as Lua (maps → tables, arrays → 1-based
 *  tables, nil inside arrays/maps is skipped, ints/floats → numbers, bin/ext
 *  → strings).  Depth is limited to 64.  An array's nil leaves a hole (the
 *  following elements keep their positions); a map pair with a nil key or
 *  value is dropped; a map/array or NaN key, trailing bytes, the reserved
 *  0xc1 byte are malformed.  Hand-rolled streaming reader (no msgpack-c
 *  zone): pushes directly, tables presized.  Between calls the memory
 *  limits do not apply, so callers bound `len`.  @return 0, ERR_PARSE (malformed or truncated,
 *  nothing pushed), ERR_TOOBIG (too deep, nothing pushed). */
int luavm_push_msgpack(struct lua_State *L, const char *buf, size_t len);

/** Push a jansson value as Lua (null → nil).  @return 0 or ERR_TOOBIG. */
int luavm_push_json(struct lua_State *L, const json_t *v);

/** Convert the Lua value at `idx` to a new jansson value: tables whose keys
 *  are exactly 1..n become arrays (an empty table becomes {}), others become
 *  objects (keys must be strings or numbers, numbers are stringified);
 *  integral numbers become integers; nil → null.  Functions, userdata,
 *  threads, NaN/inf, strings that are not UTF-8, boolean/table keys,
 *  cycles (a table inside itself; shared subtables are fine) and
 *  depth > 64 fail.  @return new reference, or
 *  NULL with *err set (ERR_INVAL, ERR_TOOBIG, ERR_NOMEM). */
json_t *luavm_to_json(struct lua_State *L, int idx, int *err);

/** 1 when the function at registry ref `fn_ref` is exactly `function(p,
 *  ctx) return true end` (any parameter names, 0-3 parameters): the
 *  instructions and shape of that function (luavm_pure.c), so it reads,
 *  writes and calls nothing and returns true.  0 for anything else, a C
 *  function, or when jit.util is missing.  Runs unarmed (at adoption, not
 *  inside a call).  A caller may then skip calling it, as long as
 *  luavm_any_disabled() is 0 (a disabled file's calls fail). */
int luavm_fn_returns_true(struct luavm *vm, int fn_ref);

/** 1 when some file of the state is disabled for retaining too much
 *  memory (its functions' calls fail until it reloads). */
int luavm_any_disabled(const struct luavm *vm);

/** Register the table at `idx` as a read-only input and push what hooks
 *  are to be given for it; return its stack index.  What is pushed is the
 *  table itself: luavm_call / luavm_call_ref pass it unchanged to a
 *  function whose file provably cannot write any table (luavm_pure.c), and
 *  put a read-only view of it in its place for every other function — a
 *  userdata that reads like the table (nested tables are views in turn)
 *  and raises "<what> is read-only" on any write, made the first time one
 *  is needed.  `what` names the value in errors ("profile", "ctx") and
 *  must be a string literal (it is kept).  The table must not change
 *  while it may still be given to a hook.  The last 8 registrations are
 *  remembered (and kept alive); register per request.  On a state not
 *  made by luavm_new, a view is pushed right away.  Any other value is
 *  pushed as it is.  Runs unarmed (between calls: never refused). */
int luavm_push_readonly(struct lua_State *L, int idx, const char *what);

/** Push the table a read-only view reads (for C readers such as templates;
 *  never hand it to a script), or the value at `idx` itself when it is not
 *  a view (a registered table is its own original).  Returns the pushed
 *  index. */
int luavm_push_original(struct lua_State *L, int idx);

/** Is the file `name` (a chunk name given to luavm_load_chunk) disabled
 *  for its memory in some live state?  1 with the message in `msg`, or 0. */
int luavm_file_disabled(const char *name, char *msg, size_t len);

/** Register the Lua states' series with /metrics (start-up, once):
 *  memory, the largest files by retained memory, disabled files, dropped
 *  log lines. */
void luavm_metrics_init(void);

/** Register the `promo` library into the sandbox base (called by
 *  luavm_new; exposed for tests).  Defined in luavm_promo.c. */
void luavm_open_promo(struct lua_State *L);

/** Pop the value on top of the stack and publish it to every sandboxed
 *  file of `L` as global `name` (files loaded earlier see it too).  A table
 *  is published as a library: each file gets its own read-only proxy of it.
 *  On a state not made by luavm_new it becomes a plain global.  Call
 *  between calls, never from script code. */
void luavm_register(struct lua_State *L, const char *name);

/** Log the arguments of the running C function (stack 1..top) with
 *  log_info(what, "file=<caller file:line> msg=\"...\""): tostring of each
 *  argument (honouring __tostring), space-separated, truncated to 512
 *  bytes, quotes/control characters escaped; nothing when the calling
 *  file is over its log rate (the drop is counted).  May raise (a
 *  __tostring that errors); for use inside Lua C functions (print,
 *  promo.log). */
void luavm_log_args(struct lua_State *L, const char *what);

/** Pop the value on top of the stack and add it as field `name` of the
 *  library `lib` ("promo") published with luavm_register: every file of
 *  the state, loaded before or after, sees it through its read-only
 *  proxy.  Call between calls.  @return 0, ERR_NOTFOUND (no such
 *  library), ERR_INVAL (not a luavm state). */
int luavm_lib_add(struct lua_State *L, const char *lib, const char *name);

/** A function run on every state luavm_new makes, after the sandbox and
 *  the promo library are built: how a higher layer adds to `promo` what
 *  only it can compute (promo.predict, engine/models.h).  Start-up only,
 *  before any thread makes states; at most 8. */
typedef void (*luavm_opener_fn)(struct lua_State *L);
void luavm_add_opener(luavm_opener_fn fn);

/** Forget every file's `require` cache, so the next require re-reads the
 *  module. */
void luavm_clear_modules(struct luavm *vm);

#endif
