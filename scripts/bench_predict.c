/*
 * bench_predict.c — what one model prediction costs on the worker, and
 * whether it allocates.
 *
 *   scripts/bench-predict.sh [--iterations N] [--rounds R]   (builds and runs this)
 *
 * The model is the reference benchmark's "nba" (scripts/gen-model-bench.py:
 * 12 features, 22 columns) with 200 random trees of depth 6, the size
 * `promod train nba` makes; p has the reference workload's profile shape
 * with a p.stats as events write it, ctx a decide's.  A prediction is what
 * models_predict does for an uncached model: models_features (every
 * feature read from the Lua tables) then predict_eval (the trees).
 *
 * Rows, run interleaved round by round (A B C A B C ...) so that CPU steal
 * on the shared machine hits them alike; the median and the fastest round
 * are printed in ns per prediction:
 *   keys kept      the feature keys kept interned (models_anchor_keys, as
 *                  a models worker does since the allocation-free change)
 *   keys not kept  without that table: what serving did before (a key p
 *                  lacks is a new Lua string again after each GC cycle)
 *   trees only     predict_eval on a ready vector, for scale
 * --gc-every K runs a full GC cycle every K predictions in the timed loop
 * too; --row picks one row (scripts/bench-predict.sh --instructions counts
 * each row's instructions under callgrind that way).
 * and per prediction: heap allocations (malloc / calloc / realloc, counted
 * by this program's wrappers) and bytes the Lua state allocated, over a
 * separate pass with a full GC cycle every 100 predictions (in a server
 * the decides' garbage runs the GC; this loop alone makes none, so
 * without it "keys not kept" would make its strings once and keep them).
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/models.h"
#include "engine/predict.h"
#include "lua/luavm.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static long n_alloc;
void *malloc(size_t n)
{
    n_alloc++;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    n_alloc++;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    n_alloc++;
    return __libc_realloc(p, n);
}

struct app *g_app;

static const char MODEL[] =
    "return {\n"
    "  id = 'nba', label = { conversion = 'nba', within = '7d' },\n"
    "  features = {\n"
    "    { 'tier', values = { 'bronze', 'silver', 'gold', 'platinum' } },\n"
    "    { 'country', values = { 'FR', 'DE', 'US', 'GB', 'ES', 'IT' } },\n"
    "    'age', 'ltv', 'days_since_purchase', 'app_user',\n"
    "    'stats.click', 'stats.open', 'stats.impression', 'stats.events',\n"
    "    'stats.days_since.click', 'stats.tenure',\n"
    "  },\n"
    "  params = { trees = 200, depth = 6 },\n"
    "}\n";

/* a reference profile (gen_workload.py's fields); no opens yet, so
 * stats.open and stats.last.click are keys p lacks */
static const char P[] =
    "return { id = 'c00001234', first_name = 'Chloe', tier = 'gold', country = 'FR', age = 34,"
    " ltv = 412.57, days_since_purchase = 41, app_user = true,"
    " interests = { 'beach', 'wine' }, consent = { email = true, sms = false },"
    " stats = { impression = 12, events = 19, first_seen = 1790000000, last_seen = 1799990000,"
    "   conversion = 1, revenue = 40, last = { impression = 1799990000 } } }";

static const char CTX[] = "return { channel = 'web', placement = 'home', now = 1800000000 }";

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

/* 200 full trees of depth 6, breadth-first, random splits on the columns */
static struct predict_model *trees(int ncols)
{
    uint32_t per = 127, nt = 200;
    struct predict_model *m = predict_alloc(PREDICT_TREES, PREDICT_LOGISTIC, ncols, nt, nt * per);
    for (uint32_t t = 0; t < nt; t++) {
        m->roots[t] = t * per;
        for (uint32_t k = 0; k < per; k++) {
            struct predict_node *n = &m->nodes[t * per + k];
            m->mean[t * per + k] = 0;
            if (k >= 63) { /* leaves */
                n->flags = PREDICT_LEAF;
                n->v = (float)((double)(rnd() % 2000) / 20000.0 - 0.05);
                continue;
            }
            n->feat = (uint16_t)(rnd() % (uint64_t)ncols);
            n->v = (float)(rnd() % 100);
            n->flags = rnd() % 2 ? PREDICT_DEFAULT_LEFT : 0;
            n->left = t * per + 2 * k + 1;
        }
    }
    char err[200];
    if (predict_check(m, err, sizeof err)) {
        fprintf(stderr, "model: %s\n", err);
        exit(1);
    }
    return m;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long iters = 200000, gc_every = 0;
    int rounds = 9, only = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--iterations"))
            iters = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gc-every"))
            gc_every = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--row"))
            only = atoi(argv[i + 1]);
    }
    if (iters < 1 || rounds < 1 || rounds > 99 || gc_every < 0 || only < -1 || only > 2) {
        fprintf(stderr, "usage: bench_predict [--iterations N] [--rounds R] [--gc-every K] "
                        "[--row 0|1|2]\n");
        return 2;
    }
    struct luavm_opts o = { 0 };
    struct luavm *vm;
    if (luavm_new(&o, &vm))
        return 1;
    lua_State *L = luavm_state(vm);
    json_t *errs = json_array();
    struct models_def *d = NULL;
    if (models_parse(vm, "models/nba.lua", MODEL, strlen(MODEL), errs, &d, NULL)) {
        fprintf(stderr, "model file: %s\n", json_dumps(errs, 0));
        return 1;
    }
    json_decref(errs);
    struct predict_model *m = trees(d->ncols);
    char err[200];
    luavm_load_chunk(vm, "p.lua", P, strlen(P), err, sizeof err);
    int p = lua_gettop(L);
    luavm_load_chunk(vm, "ctx.lua", CTX, strlen(CTX), err, sizeof err);
    int c = lua_gettop(L);
    float x[PREDICT_MAX_FEATURES];
    struct models_feat_err fe;
    int64_t t0 = 1800000000;
    const char *names[3] = { "keys kept (this branch)", "keys not kept (before)", "trees only" };
    double ns[3][99];
    long allocs[3] = { 0 };
    double luab[3] = { 0 };
    volatile double sink = 0;
    for (int r = 0; r < rounds; r++)
        for (int row = 0; row < 3; row++) {
            if (only >= 0 && row != only)
                continue;
            int keys = row == 0 ? models_anchor_keys(L, d) : LUA_NOREF;
            lua_gc(L, LUA_GCCOLLECT, 0); /* the last row's strings go: as after a GC cycle */
            if (row == 2)
                models_features(vm, d, NULL, p, c, t0, x, &fe);
            long a0 = n_alloc;
            double s = now_ns();
            for (long i = 0; i < iters; i++) {
                if (gc_every && i % gc_every == 0)
                    lua_gc(L, LUA_GCCOLLECT, 0);
                if (row < 2)
                    models_features(vm, d, NULL, p, c, t0 + i, x, &fe);
                sink += predict_eval(m, x);
            }
            ns[row][r] = (now_ns() - s) / (double)iters;
            allocs[row] += n_alloc - a0;
            if (r == 0 && row < 2 && only < 0) {
                /* bytes the Lua state allocates per prediction when a full
                 * GC cycle passes every 100 predictions (a server's decides
                 * make garbage; here the loop alone would never run the GC):
                 * the heap's growth over each call, the GC stopped meanwhile */
                double bytes = 0;
                for (long i = 0; i < 1000; i++) {
                    if (i % 100 == 0) {
                        lua_gc(L, LUA_GCRESTART, 0);
                        lua_gc(L, LUA_GCCOLLECT, 0);
                        lua_gc(L, LUA_GCSTOP, 0);
                    }
                    size_t m0 = luavm_mem_used(vm);
                    models_features(vm, d, NULL, p, c, t0 + i, x, &fe);
                    bytes += (double)(luavm_mem_used(vm) - m0);
                }
                luab[row] = bytes / 1000.0;
                lua_gc(L, LUA_GCRESTART, 0);
            }
            luaL_unref(L, LUA_REGISTRYINDEX, keys);
        }
    printf("%d rounds of %ld predictions, interleaved; ns per prediction (median, fastest)\n",
           rounds, iters);
    printf("%-26s %10s %10s %14s %14s\n", "", "median", "fastest", "mallocs/pred", "Lua bytes/pred");
    for (int row = 0; row < 3; row++) {
        if (only >= 0 && row != only)
            continue;
        qsort(ns[row], (size_t)rounds, sizeof ns[row][0], cmp);
        printf("%-26s %10.0f %10.0f %14.4f %14.1f\n", names[row], ns[row][rounds / 2], ns[row][0],
               (double)allocs[row] / ((double)iters * rounds), luab[row]);
    }
    if (sink == 12345.678)
        printf("\n");
    predict_free(m);
    models_def_free(d);
    luavm_free(vm);
    return 0;
}
