/*
 * luavm_stats.c — what one file costs its neighbours in a shared state:
 * memory it keeps between calls, log lines; and the metrics about both.
 *
 * Memory.  Every file loaded into a state has an owner (luavm_sandbox.c)
 * whose result (the campaign table), require cache, their functions'
 * upvalues and everything reachable from them is what the file retains.
 * After an outer call, when the state has grown past `gc_at`, a full
 * collection runs (garbage must not crowd out the limit); when what is
 * live after it exceeds half the state's limit and has grown since the
 * last look, each owner's graph is walked and sized (approximately:
 * LuaJIT's object layouts seen through the C API), shared objects (the
 * sandbox's libraries) excluded.  A file retaining more than
 * `file_mem_limit` — or, when the state is past three quarters of its
 * limit and no file is over, the largest — is disabled: its calls fail at
 * once with "<file>: disabled: retained N MB ...", and what it retains is
 * released (its tables emptied, its functions' upvalues cleared; the hook
 * functions themselves stay so the engine's references stay valid).  The
 * neighbours keep running.  A changed version of the file loads fresh.
 *
 * Log lines.  print and promo.log are limited per file (token bucket,
 * `log_per_sec` lines a second, bursts of five seconds' worth); dropped
 * lines are counted, and one warning per file every ten seconds says so.
 *
 * Process-wide tables (mutex): log buckets by file, the largest retainers
 * of the last scans, disabled files per state, the list of live states.
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"

#define NAME_MAX_LEN 160
#define LOG_SLOTS 1024
#define TOP_SLOTS 16
#define DISABLED_SLOTS 64
#define STATE_SLOTS 256
#define MAX_OBJECTS (4u << 20) /* per scan: beyond, sizes are lower bounds */
#define WARN_EVERY_NS (10 * 1000000000LL)

static pthread_mutex_t st_mu = PTHREAD_MUTEX_INITIALIZER;

struct log_bucket {
    char name[NAME_MAX_LEN];
    double tokens;
    uint64_t last_ns, warned_ns;
    long dropped;
};
static struct log_bucket g_logs[LOG_SLOTS];

struct top_entry {
    char name[NAME_MAX_LEN];
    size_t bytes;
};
static struct top_entry g_top[TOP_SLOTS];

struct disabled_entry {
    int state;   /* stats_id + 1; 0 = free */
    char name[NAME_MAX_LEN];
    char msg[256];
};
static struct disabled_entry g_disabled[DISABLED_SLOTS];
static long g_disabled_total, g_scans_total;
long luavm_calls_in_flight;

static struct luavm *g_states[STATE_SLOTS];

/* ------------------------------------------------------------------ */
/* states                                                             */

int luavm_stats_register(struct luavm *vm)
{
    vm->stats_id = -1;
    vm->scan_at = vm->mem_limit / 2;
    pthread_mutex_lock(&st_mu);
    for (int i = 0; i < STATE_SLOTS; i++)
        if (!g_states[i]) {
            g_states[i] = vm;
            vm->stats_id = i;
            break;
        }
    pthread_mutex_unlock(&st_mu);
    return vm->stats_id;
}

void luavm_stats_unregister(struct luavm *vm)
{
    pthread_mutex_lock(&st_mu);
    if (vm->stats_id >= 0 && g_states[vm->stats_id] == vm)
        g_states[vm->stats_id] = NULL;
    for (int i = 0; i < DISABLED_SLOTS; i++)
        if (g_disabled[i].state == vm->stats_id + 1)
            g_disabled[i].state = 0;
    pthread_mutex_unlock(&st_mu);
}

void luavm_stats_owner_new(struct luavm *vm, const char *name)
{
    if (!vm->ndisabled)
        return; /* nothing of this state is listed */
    pthread_mutex_lock(&st_mu);
    for (int i = 0; i < DISABLED_SLOTS; i++)
        if (g_disabled[i].state == vm->stats_id + 1 && !strcmp(g_disabled[i].name, name))
            g_disabled[i].state = 0;
    pthread_mutex_unlock(&st_mu);
}

int luavm_file_disabled(const char *name, char *msg, size_t len)
{
    int found = 0;
    pthread_mutex_lock(&st_mu);
    for (int i = 0; i < DISABLED_SLOTS && !found; i++)
        if (g_disabled[i].state && !strcmp(g_disabled[i].name, name)) {
            snprintf(msg, len, "%s", g_disabled[i].msg);
            found = 1;
        }
    pthread_mutex_unlock(&st_mu);
    return found;
}

/* ------------------------------------------------------------------ */
/* log rate                                                           */

int luavm_log_allowed(lua_State *L, const char *file)
{
    struct luavm *vm = luavm_of(L);
    if (!vm || vm->log_per_sec <= 0)
        return 1;
    double rate = vm->log_per_sec, burst = rate * 5;
    uint64_t now = clock_mono_ns();
    size_t n = strlen(file);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)file[i]) * 16777619u;
    int allowed = 1;
    long warn = 0;
    pthread_mutex_lock(&st_mu);
    struct log_bucket *b = NULL;
    for (int i = 0; i < LOG_SLOTS && !b; i++) {
        struct log_bucket *c = &g_logs[(h + (uint32_t)i) % LOG_SLOTS];
        if (!c->name[0]) {
            snprintf(c->name, sizeof c->name, "%s", file);
            c->tokens = burst;
            c->last_ns = now;
            b = c;
        } else if (!strncmp(c->name, file, sizeof c->name - 1)) {
            b = c;
        }
    }
    if (!b) /* table full: the last slot is shared */
        b = &g_logs[LOG_SLOTS - 1];
    b->tokens += (double)(now - b->last_ns) / 1e9 * rate;
    if (b->tokens > burst)
        b->tokens = burst;
    b->last_ns = now;
    if (b->tokens >= 1) {
        b->tokens -= 1;
    } else {
        allowed = 0;
        b->dropped++;
        if (!b->warned_ns || now - b->warned_ns >= (uint64_t)WARN_EVERY_NS) {
            b->warned_ns = now;
            warn = b->dropped;
        }
    }
    pthread_mutex_unlock(&st_mu);
    if (warn)
        log_warn("lua log lines dropped", "file=%s dropped_total=%ld limit_per_sec=%d", file, warn,
                 vm->log_per_sec);
    return allowed;
}

/* ------------------------------------------------------------------ */
/* walking a file's objects                                           */

struct pset {
    const void **v;
    size_t cap, n;
};

static int pset_add(struct pset *s, const void *p)
{
    if (!p)
        return 0;
    if (2 * (s->n + 1) > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4096;
        const void **nv = calloc(ncap, sizeof *nv);
        if (!nv)
            return 0;
        for (size_t i = 0; i < s->cap; i++)
            if (s->v[i]) {
                size_t j = ((uintptr_t)s->v[i] >> 4) * 0x9E3779B97F4A7C15ull & (ncap - 1);
                while (nv[j])
                    j = (j + 1) & (ncap - 1);
                nv[j] = s->v[i];
            }
        free(s->v);
        s->v = nv;
        s->cap = ncap;
    }
    size_t j = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull & (s->cap - 1);
    while (s->v[j]) {
        if (s->v[j] == p)
            return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->v[j] = p;
    s->n++;
    return 1;
}

enum walk_mode { W_SEED, W_COUNT, W_CLEAR };

struct walk {
    lua_State *L;
    struct pset seen;
    int work, nwork;     /* a Lua table used as the stack of objects to open */
    enum walk_mode mode;
    size_t bytes;
    const void *keep;    /* W_CLEAR: the file's result (keeps its functions) */
};

/* Account for the value at `idx`; objects to open are queued. */
static void visit(struct walk *w, int idx)
{
    lua_State *L = w->L;
    int t = lua_type(L, idx);
    const void *p;
    size_t sz;
    switch (t) {
    case LUA_TSTRING:
        p = lua_tolstring(L, idx, &sz);
        if (pset_add(&w->seen, p))
            w->bytes += 24 + sz + 1;
        return;
    case LUA_TTABLE:
    case LUA_TFUNCTION:
    case LUA_TUSERDATA:
        p = lua_topointer(L, idx);
        break;
    default:
        return;
    }
    if (w->seen.n >= MAX_OBJECTS || !pset_add(&w->seen, p))
        return;
    /* a sandbox env (reachable through load's upvalue) belongs to the
     * sandbox: its metatable leads to the owner and the disabled mark */
    if (t == LUA_TTABLE && luavm_has_marked_mt(L, idx, &luavm_key_owner))
        return;
    if (t == LUA_TUSERDATA)
        w->bytes += 48 + lua_objlen(L, idx);
    lua_pushvalue(L, idx);
    lua_rawseti(L, w->work, ++w->nwork);
}

static void open_one(struct walk *w)
{
    lua_State *L = w->L;
    lua_rawgeti(L, w->work, w->nwork);
    lua_pushnil(L);
    lua_rawseti(L, w->work, w->nwork--);
    int o = lua_gettop(L);
    if (lua_istable(L, o)) {
        size_t n = 0, narr = lua_objlen(L, o);
        int keep_fns = w->mode == W_CLEAR && lua_topointer(L, o) == w->keep;
        lua_pushnil(L);
        while (lua_next(L, o)) {
            n++;
            visit(w, -2);
            visit(w, -1);
            if (w->mode == W_CLEAR && !(keep_fns && lua_isfunction(L, -1))) {
                lua_pop(L, 1);
                lua_pushvalue(L, -1);
                lua_pushnil(L);
                lua_rawset(L, o); /* clearing a field during traversal is allowed */
            } else {
                lua_pop(L, 1);
            }
        }
        if (lua_getmetatable(L, o)) {
            visit(w, -1);
            lua_pop(L, 1);
            if (w->mode == W_CLEAR) {
                lua_pushnil(L);
                lua_setmetatable(L, o);
            }
        }
        w->bytes += 64 + 8 * narr + 32 * (n > narr ? n - narr : 0);
    } else if (lua_isfunction(L, o)) {
        int i = 1;
        while (lua_getupvalue(L, o, i)) {
            visit(w, -1);
            lua_pop(L, 1);
            if (w->mode == W_CLEAR) {
                lua_pushnil(L);
                lua_setupvalue(L, o, i);
            }
            i++;
        }
        w->bytes += 40 + 48 * (size_t)(i - 1);
    } else if (lua_type(L, o) == LUA_TUSERDATA && w->mode != W_CLEAR) {
        /* read-only views of p/ctx are measured, never cleared: the table
         * one reads may be the request's own profile */
        if (lua_getmetatable(L, o)) {
            visit(w, -1);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, o - 1);
}

static void walk_value(struct walk *w, int idx)
{
    visit(w, idx);
    while (w->nwork > 0)
        open_one(w);
}

static void walk_init(struct walk *w, lua_State *L, enum walk_mode mode)
{
    memset(w, 0, sizeof *w);
    w->L = L;
    w->mode = mode;
    lua_newtable(L);
    w->work = lua_gettop(L);
}

/* Mark what every file shares (the sandbox) as seen, so no file is
 * charged for it and nothing of it is cleared. */
static void seed_shared(struct walk *w, struct luavm *vm)
{
    lua_State *L = w->L;
    enum walk_mode m = w->mode;
    w->mode = W_SEED;
    int refs[] = { vm->ref_base, vm->ref_libs, vm->ref_libmt, vm->ref_msgh, vm->ref_undecl_set,
                   vm->ref_next, vm->ref_ipairs_aux, vm->ref_format, vm->ref_rep, vm->ref_ostime };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, refs[i]);
        walk_value(w, lua_gettop(L));
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        walk_value(w, lua_gettop(L));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    /* the registered inputs (p, ctx): a pure file may keep them in an
     * upvalue, and the request running may still read them */
    for (int i = 0; i < LUAVM_RO_INPUTS; i++)
        if (vm->ro_in[i].ref != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ro_in[i].ref);
            walk_value(w, lua_gettop(L));
            lua_pop(L, 1);
        }
    w->mode = m;
    w->bytes = 0;
}

/* Walk the owner at `owner` (its result and require cache). */
static void walk_owner(struct walk *w, int owner)
{
    lua_State *L = w->L;
    pset_add(&w->seen, lua_topointer(L, owner)); /* require's upvalue: never cleared */
    lua_rawgeti(L, owner, LUAVM_OWN_RESULT);
    w->keep = lua_topointer(L, -1);
    walk_value(w, lua_gettop(L));
    lua_rawgeti(L, owner, LUAVM_OWN_MODS);
    walk_value(w, lua_gettop(L));
    lua_pop(L, 2);
}

/* ------------------------------------------------------------------ */
/* the scan                                                           */

struct owner_size {
    int slot;       /* index in the list table */
    size_t bytes;
};

static int by_bytes_desc(const void *a, const void *b)
{
    const struct owner_size *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

static void publish_top(const char *name, size_t bytes)
{
    int slot = -1;
    for (int i = 0; i < TOP_SLOTS; i++)
        if (!strcmp(g_top[i].name, name)) {
            slot = i;
            break;
        }
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < TOP_SLOTS; i++)
            if (g_top[i].bytes < g_top[slot].bytes)
                slot = i;
        if (g_top[slot].name[0] && g_top[slot].bytes >= bytes)
            return;
        snprintf(g_top[slot].name, sizeof g_top[slot].name, "%s", name);
    }
    g_top[slot].bytes = bytes;
}

static void disable(struct luavm *vm, int owner, size_t bytes)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, owner, LUAVM_OWN_NAME);
    const char *name = lua_tostring(L, -1);
    char msg[256];
    snprintf(msg, sizeof msg,
             "%s: disabled: it retained %.1f MB of Lua memory between calls (limit per file "
             "%.1f MB, state %.0f MB); a changed version of the file loads fresh",
             name ? name : "?", (double)bytes / 1048576.0, (double)vm->file_mem_limit / 1048576.0,
             (double)vm->mem_limit / 1048576.0);
    log_error("lua file disabled for memory", "file=%s retained=%zu", name ? name : "?", bytes);
    pthread_mutex_lock(&st_mu);
    g_disabled_total++;
    for (int i = 0; i < DISABLED_SLOTS; i++)
        if (!g_disabled[i].state) {
            g_disabled[i].state = vm->stats_id + 1;
            snprintf(g_disabled[i].name, sizeof g_disabled[i].name, "%s", name ? name : "?");
            snprintf(g_disabled[i].msg, sizeof g_disabled[i].msg, "%s", msg);
            break;
        }
    pthread_mutex_unlock(&st_mu);
    lua_pop(L, 1);
    lua_pushstring(L, msg);
    lua_rawseti(L, owner, LUAVM_OWN_DISABLED);
    vm->ndisabled++;
    struct walk w;
    walk_init(&w, L, W_CLEAR);
    seed_shared(&w, vm);
    walk_owner(&w, owner);
    lua_newtable(L);
    lua_rawseti(L, owner, LUAVM_OWN_MODS);
    free(w.seen.v);
    lua_pop(L, 1); /* work */
}

static void scan(struct luavm *vm)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_checkstack(L, 16);
    lua_gc(L, LUA_GCSTOP, 0);
    /* the owners, strongly held for the scan */
    lua_newtable(L);
    int list = lua_gettop(L), n = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ref_owners);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, list, ++n);
    }
    lua_pop(L, 1);
    struct owner_size *sizes = n ? calloc((size_t)n, sizeof *sizes) : NULL;
    struct walk w;
    walk_init(&w, L, W_COUNT);
    seed_shared(&w, vm);
    for (int i = 0; sizes && i < n; i++) {
        lua_rawgeti(L, list, i + 1);
        w.bytes = 0;
        walk_owner(&w, lua_gettop(L));
        sizes[i].slot = i + 1;
        sizes[i].bytes = w.bytes;
        lua_pop(L, 1);
    }
    free(w.seen.v);
    lua_pop(L, 1); /* work */
    if (sizes) {
        qsort(sizes, (size_t)n, sizeof *sizes, by_bytes_desc);
        pthread_mutex_lock(&st_mu);
        g_scans_total++;
        for (int i = 0; i < n && i < 5; i++) {
            lua_rawgeti(L, list, sizes[i].slot);
            lua_rawgeti(L, -1, LUAVM_OWN_NAME);
            if (lua_isstring(L, -1))
                publish_top(lua_tostring(L, -1), sizes[i].bytes);
            lua_pop(L, 2);
        }
        pthread_mutex_unlock(&st_mu);
        int ndis = 0;
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, list, sizes[i].slot);
            lua_rawgeti(L, -1, LUAVM_OWN_DISABLED);
            int already = !lua_isnil(L, -1);
            lua_pop(L, 1);
            int over = sizes[i].bytes > vm->file_mem_limit;
            int last_resort = i == 0 && ndis == 0 && vm->used > vm->mem_limit / 4 * 3 &&
                              sizes[i].bytes > vm->mem_limit / 16;
            if (!already && (over || last_resort)) {
                disable(vm, lua_gettop(L), sizes[i].bytes);
                ndis++;
            }
            lua_pop(L, 1);
        }
        free(sizes);
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCRESTART, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
}

void luavm_stats_after_call(struct luavm *vm)
{
    if (vm->used <= vm->scan_at)
        return;
    size_t high = vm->mem_limit / 2, step = vm->mem_limit / 16;
    lua_gc(vm->L, LUA_GCCOLLECT, 0); /* garbage must not crowd out the limit */
    if (vm->used > high)
        scan(vm);
    /* next look when garbage (or live data) has grown by another step */
    vm->scan_at = vm->used + step > high ? vm->used + step : high;
}

const char *luavm_disabled_msg(lua_State *L, int fidx)
{
    luavm_push_fn_owner(L, fidx);
    const char *msg = NULL;
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, LUAVM_OWN_DISABLED);
        msg = lua_tostring(L, -1); /* kept alive by the owner */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return msg;
}

/* ------------------------------------------------------------------ */
/* metrics                                                            */

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&st_mu);
    size_t total = 0;
    int nstates = 0;
    for (int i = 0; i < STATE_SLOTS; i++)
        if (g_states[i]) {
            total += __atomic_load_n(&g_states[i]->used, __ATOMIC_RELAXED);
            nstates++;
        }
    buf_printf(out, "# HELP promod_lua_memory_bytes Bytes allocated by the Lua states (workers, "
                    "delivery, checks).\n# TYPE promod_lua_memory_bytes gauge\n"
                    "promod_lua_memory_bytes %zu\n"
                    "# HELP promod_lua_states Lua states alive.\n# TYPE promod_lua_states gauge\n"
                    "promod_lua_states %d\n", total, nstates);
    buf_adds(out, "# HELP promod_lua_file_retained_bytes Memory a rules or plugins file kept "
                  "between calls, measured when a state passed half its limit (largest files "
                  "of the last scans).\n# TYPE promod_lua_file_retained_bytes gauge\n");
    for (int i = 0; i < TOP_SLOTS; i++)
        if (g_top[i].name[0]) {
            buf_adds(out, "promod_lua_file_retained_bytes{file=\"");
            metrics_label(out, g_top[i].name);
            buf_printf(out, "\"} %zu\n", g_top[i].bytes);
        }
    buf_printf(out, "# HELP promod_lua_memory_scans_total Per-file memory scans run.\n"
                    "# TYPE promod_lua_memory_scans_total counter\n"
                    "promod_lua_memory_scans_total %ld\n"
                    "# HELP promod_lua_files_disabled_total Files disabled in a state for "
                    "retaining too much memory.\n# TYPE promod_lua_files_disabled_total counter\n"
                    "promod_lua_files_disabled_total %ld\n", g_scans_total, g_disabled_total);
    buf_printf(out, "# HELP promod_lua_calls_in_flight Lua calls running now (hooks, file loads, "
                    "validations), all threads.\n# TYPE promod_lua_calls_in_flight gauge\n"
                    "promod_lua_calls_in_flight %ld\n",
               __atomic_load_n(&luavm_calls_in_flight, __ATOMIC_RELAXED));
    buf_adds(out, "# HELP promod_lua_log_dropped_total print/promo.log lines dropped by the "
                  "per-file rate limit.\n# TYPE promod_lua_log_dropped_total counter\n");
    for (int i = 0; i < LOG_SLOTS; i++)
        if (g_logs[i].name[0] && g_logs[i].dropped) {
            buf_adds(out, "promod_lua_log_dropped_total{file=\"");
            metrics_label(out, g_logs[i].name);
            buf_printf(out, "\"} %ld\n", g_logs[i].dropped);
        }
    pthread_mutex_unlock(&st_mu);
}

void luavm_metrics_init(void) { metrics_register(collector, NULL); }
