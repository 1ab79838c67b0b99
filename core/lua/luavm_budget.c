/*
 * luavm_budget.c — what stops a script: the instruction count hook, the
 * watchdog thread (lazy hook, CPU time limit), kills, and the depth of
 * nested C -> Lua calls.
 *
 * LuaJIT runs a count hook only from the interpreter (hence the JIT is
 * off), and with a count hook set the interpreter takes a slower dispatch
 * for every instruction: an eligibility call measured 107 ns without the
 * hook and 154 ns with it.  Almost every hook call ends within
 * microseconds, so a state whose budget is large (LUAVM_WATCH_MIN_BUDGET
 * or more) runs without the hook, and a watchdog thread looks at every
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
 *
 * Time limit.  Instructions do not measure time spent inside C functions
 * (a pattern match can run for seconds within one instruction), so every
 * outer call also has a limit on the CPU time of its thread.  The watchdog
 * reads the thread's CPU clock when it first sees a call and again at
 * later looks; past the limit it records the call's sequence number in
 * `timeout_seq` (and signals the thread when the count hook is not set).
 * The hook, and every C loop of the sandbox (luavm_poll), compare it with
 * the running call's number and stop the call: "file:line: time limit
 * exceeded (100 ms)".  CPU time rather than the wall clock, because a
 * worker preempted on a busy machine has not spent its time.  Zero cost on
 * the hot path: a call shorter than a tick is never looked at twice.
 *
 * Kills stick.  Once a call is killed (instructions, time, memory) the
 * hook fires on every instruction and raises again, the sandbox's pcall
 * and xpcall rethrow, and xpcall's message handler does not run the
 * script's handler: no script code runs between the kill and the end of
 * the call.  (LuaJIT calls a message handler before unwinding, while the
 * hook that raised is still marked active, i.e. with hooks off: a script's
 * handler would run unmetered, the "xpcall wedge".)
 *
 * C stack.  LuaJIT has no limit on nested C -> Lua calls: recursion
 * through string.gsub (8 KiB of luaL_Buffer per level) reaches the end of
 * a thread's 8 MiB stack long before the Lua stack's 65,500 slots, and the
 * process dies of SIGSEGV.  Every sandbox function that calls back into
 * Lua counts a level (luavm_cdepth_enter); past LUAVM_MAX_CDEPTH levels, or
 * past LUAVM_CSTACK_MAX bytes of C stack below the outer call (a backstop
 * for large frames, e.g. sanitizer builds), it raises "C stack overflow",
 * an ordinary error.  The sandbox's pcall/xpcall and
 * call_impl restore the count when an error unwinds past them.
 */
#include "lua/luavm_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#define WATCH_TICK_US 1000

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static struct luavm *watch_list;
static int watch_sig;
__thread struct luavm *luavm_tl_vm; /* the state whose outer call this thread runs */

static int timed_out(struct luavm *vm)
{
    return __atomic_load_n(&vm->timeout_seq, __ATOMIC_ACQUIRE) == vm->call_seq;
}

int luavm_over(struct luavm *vm)
{
    return vm->killed || (vm->in_call && timed_out(vm));
}

/* From now on fire on every instruction: any Lua code that still runs (an
 * xpcall handler, code after a caught error) is stopped. */
static void stick(lua_State *L, struct luavm *vm)
{
    vm->hooked = 1;
    lua_sethook(L, luavm_hook, LUA_MASKCOUNT, 1);
}

int luavm_stop(lua_State *L, struct luavm *vm)
{
    if (!vm->killed && timed_out(vm))
        vm->killed |= LUAVM_KILL_TIME;
    stick(L, vm);
    char what[64];
    if (vm->killed & LUAVM_KILL_TIME)
        snprintf(what, sizeof what, "time limit exceeded (%d ms)", (int)vm->cur_time_ms);
    else
        snprintf(what, sizeof what, "%s", (vm->killed & LUAVM_KILL_MEM) ? "memory limit exceeded"
                                                                        : "instruction budget exceeded");
    /* the nearest script line (the C function may have been tail-called) */
    lua_Debug ar;
    for (int lvl = 1; lua_getstack(L, lvl, &ar); lvl++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, what);
            return lua_error(L);
        }
    lua_pushstring(L, what);
    return lua_error(L);
}

void luavm_hook(lua_State *L, lua_Debug *ar)
{
    struct luavm *vm = luavm_of(L);
    if (!vm || !vm->armed || vm->trusted)
        return;
    if (!vm->killed) {
        if (vm->in_call && timed_out(vm)) {
            vm->killed |= LUAVM_KILL_TIME;
        } else {
            vm->instr_used += LUAVM_HOOK_EVERY;
            if (vm->instr_used <= vm->instr_budget)
                return;
            vm->killed |= LUAVM_KILL_INSTR;
        }
    }
    stick(L, vm);
    const char *what = (vm->killed & LUAVM_KILL_TIME) ? "time limit exceeded"
                       : (vm->killed & LUAVM_KILL_INSTR) ? "instruction budget exceeded"
                                                          : "memory limit exceeded";
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) {
        if (vm->killed & LUAVM_KILL_TIME)
            lua_pushfstring(L, "%s:%d: %s (%d ms)", ar->short_src, ar->currentline, what,
                            (int)vm->cur_time_ms);
        else
            lua_pushfstring(L, "%s:%d: %s", ar->short_src, ar->currentline, what);
    } else {
        lua_pushstring(L, what);
    }
    lua_error(L);
}

struct luavm *luavm_cdepth_enter(lua_State *L)
{
    struct luavm *vm = luavm_of(L);
    if (vm) {
        uintptr_t here = (uintptr_t)__builtin_frame_address(0);
        if (vm->cdepth >= LUAVM_MAX_CDEPTH ||
            (vm->cstack_base > here && vm->cstack_base - here > LUAVM_CSTACK_MAX))
            luaL_error(L, "C stack overflow");
        vm->cdepth++;
    }
    return vm;
}

/* ------------------------------------------------------------------ */
/* the watchdog                                                       */

static void watch_handler(int sig)
{
    (void)sig;
    int saved = errno;
    struct luavm *vm = luavm_tl_vm;
    if (vm && vm->in_call && !vm->hooked) {
        vm->hooked = 1;
        lua_sethook(vm->L, luavm_hook, LUA_MASKCOUNT, LUAVM_HOOK_EVERY);
    }
    errno = saved;
}

static int64_t thread_cpu_ns(pthread_t t)
{
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(t, &cid) || clock_gettime(cid, &ts))
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void watch_look(struct luavm *vm)
{
    unsigned long seq = __atomic_load_n(&vm->call_seq, __ATOMIC_ACQUIRE);
    if (!vm->in_call) {
        vm->seen_seq = seq;
        return;
    }
    if (seq != vm->seen_seq) { /* first look at this call */
        vm->seen_seq = seq;
        vm->seen_cpu_ns = thread_cpu_ns(vm->thread);
        return;
    }
    int signal = vm->watched && !vm->hooked; /* alive at two looks: count it */
    long limit = __atomic_load_n(&vm->cur_time_ms, __ATOMIC_RELAXED);
    if (limit > 0 && vm->seen_cpu_ns >= 0 &&
        __atomic_load_n(&vm->timeout_seq, __ATOMIC_RELAXED) != seq) {
        int64_t now = thread_cpu_ns(vm->thread);
        /* the call ran at most one tick before the first look */
        if (now >= 0 && now - vm->seen_cpu_ns + WATCH_TICK_US * 1000LL >= limit * 1000000LL) {
            __atomic_store_n(&vm->timeout_seq, seq, __ATOMIC_RELEASE);
            signal = vm->watched && !vm->hooked;
        }
    }
    if (signal && vm->in_call)
        pthread_kill(vm->thread, watch_sig);
}

static void *watch_main(void *arg)
{
    (void)arg;
    for (;;) {
        usleep(WATCH_TICK_US);
        pthread_mutex_lock(&watch_mu);
        for (struct luavm *vm = watch_list; vm; vm = vm->wnext)
            watch_look(vm);
        pthread_mutex_unlock(&watch_mu);
    }
    return NULL;
}

/* Put a state under the watchdog (starting it on first use); 0 or -1. */
int luavm_watch_add(struct luavm *vm)
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
        /* the watchdog must not take the signals meant for workers */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        int bad = sigaction(watch_sig, &sa, NULL) || pthread_create(&t, &at, watch_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&at);
        if (bad) {
            pthread_mutex_unlock(&watch_mu);
            return -1;
        }
        started = 1;
    }
    vm->wnext = watch_list;
    watch_list = vm;
    pthread_mutex_unlock(&watch_mu);
    return 0;
}

void luavm_watch_remove(struct luavm *vm)
{
    pthread_mutex_lock(&watch_mu);
    for (struct luavm **pp = &watch_list; *pp; pp = &(*pp)->wnext)
        if (*pp == vm) {
            *pp = vm->wnext;
            break;
        }
    pthread_mutex_unlock(&watch_mu);
}
