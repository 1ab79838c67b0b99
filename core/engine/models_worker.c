/* models_worker.c — serving: each worker thread's copy of the live models'
 * feature functions in its own Lua state, predictions computed once per
 * decide per model, promo.predict, and the /metrics series.
 *
 * The worker's state is the thread's rules worker Lua state (the one its
 * hooks run in), so a feature function sees the same sandbox and promo
 * library as a campaign hook.  Only models with feature functions load
 * their file into the state; the others are pure C: profile and context
 * tables read by models_features, the trees walked by predict_eval. */
#include "engine/models.h"
#include "engine/rules.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/metrics.h"
#include "lua/luavm.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* counters per model id, kept across reloads                              */

#define MSTAT_SLOTS 512
struct mstat {
    char id[132];
    long predictions, errors, wrong_type;
};
static struct mstat g_mstat[MSTAT_SLOTS];
static pthread_mutex_t g_mstat_mu = PTHREAD_MUTEX_INITIALIZER;

static struct mstat *mstat_get(const char *id)
{
    uint32_t h = hash_fnv1a(id, strlen(id), HASH_FNV_INIT);
    for (int i = 0; i < 64; i++) {
        struct mstat *m = &g_mstat[(h + (uint32_t)i) % MSTAT_SLOTS];
        if (__atomic_load_n(&m->id[0], __ATOMIC_ACQUIRE)) {
            if (!strcmp(m->id, id))
                return m;
            continue;
        }
        pthread_mutex_lock(&g_mstat_mu);
        if (!m->id[0]) {
            snprintf(m->id + 1, sizeof m->id - 1, "%s", id + 1);
            __atomic_store_n(&m->id[0], id[0], __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&g_mstat_mu);
        if (!strcmp(m->id, id))
            return m;
    }
    return NULL;
}

static void count(const char *id, int err, long wrong)
{
    struct mstat *m = mstat_get(id);
    if (!m)
        return;
    __atomic_fetch_add(err ? &m->errors : &m->predictions, 1, __ATOMIC_RELAXED);
    if (wrong)
        __atomic_fetch_add(&m->wrong_type, wrong, __ATOMIC_RELAXED);
}

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    static const struct { const char *name, *help; int which; } ser[] = {
        { "promod_model_predictions_total", "Predictions computed (cached reuse within a decide "
          "not counted).", 0 },
        { "promod_model_prediction_errors_total", "Predictions that failed (a feature function "
          "raised or ran out of budget).", 1 },
        { "promod_model_feature_wrong_type_total", "Feature values of the wrong type, read as "
          "missing.", 2 },
    };
    for (size_t s = 0; s < sizeof ser / sizeof *ser; s++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", ser[s].name, ser[s].help, ser[s].name);
        for (int i = 0; i < MSTAT_SLOTS; i++) {
            struct mstat *m = &g_mstat[i];
            if (!__atomic_load_n(&m->id[0], __ATOMIC_ACQUIRE))
                continue;
            long v = __atomic_load_n(ser[s].which == 0   ? &m->predictions
                                     : ser[s].which == 1 ? &m->errors
                                                         : &m->wrong_type,
                                     __ATOMIC_RELAXED);
            buf_printf(out, "%s{model=\"", ser[s].name);
            metrics_label(out, m->id);
            buf_printf(out, "\"} %ld\n", v);
        }
    }
    struct models_gen *g = models_gen_acquire();
    buf_adds(out, "# HELP promod_model_live_version The version each model serves (0: none).\n"
                  "# TYPE promod_model_live_version gauge\n");
    for (int i = 0; g && i < g->n; i++) {
        buf_adds(out, "promod_model_live_version{model=\"");
        metrics_label(out, g->m[i].id);
        buf_printf(out, "\"} %d\n", g->m[i].live_version);
    }
    static const char *keys[] = { "auc", "logloss", "rmse" };
    for (int k = 0; k < 3; k++) {
        buf_printf(out, "# HELP promod_model_validation_%s The live version's validation %s.\n"
                        "# TYPE promod_model_validation_%s gauge\n", keys[k], keys[k], keys[k]);
        for (int i = 0; g && i < g->n; i++) {
            json_t *v = json_object_get(g->m[i].live_metrics, keys[k]);
            if (!json_is_number(v))
                continue;
            buf_printf(out, "promod_model_validation_%s{model=\"", keys[k]);
            metrics_label(out, g->m[i].id);
            buf_printf(out, "\"} %.6g\n", json_number_value(v));
        }
    }
    models_gen_release(g);
}

/* ---------------------------------------------------------------------- */
/* the worker                                                              */

struct wmodel {
    char *id;
    int version;
    int table_ref;      /* the live source's table (models with feature functions) */
    int keys_ref;       /* the feature keys, kept interned (models_anchor_keys) */
    int *fn_refs;
    int nfn;
    int ok;             /* loaded (or nothing to load) */
    char *error;
};

struct models_worker {
    struct luavm *vm;
    struct models_gen *gen;
    struct wmodel *wm;  /* one per gen->m[i] */
    int nwm;
    /* this decide */
    uint64_t epoch;
    uint64_t *at;       /* per model: the epoch its cached prediction is of */
    double *val;
    int *rcs;
    unsigned char *busy;
    const void *p_ptr, *ctx_ptr;
    int p_slot, ctx_slot; /* registry slots holding the decide's p and ctx */
    int64_t now;
    char why[320];
};

static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

/* The registry of a Lua state served by a models worker holds it under this
 * key (a light userdata): promo.predict finds the worker of the state it
 * runs in, the thread's or a simulation's. */
static const char g_reg_key = 0;

static void reg_set(lua_State *L, struct models_worker *w)
{
    lua_pushlightuserdata(L, (void *)&g_reg_key);
    if (w)
        lua_pushlightuserdata(L, w);
    else
        lua_pushnil(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

static struct models_worker *reg_get(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&g_reg_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    struct models_worker *w = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return w;
}

static void wmodel_drop(lua_State *L, struct wmodel *m)
{
    if (L) {
        for (int i = 0; i < m->nfn; i++)
            luaL_unref(L, LUA_REGISTRYINDEX, m->fn_refs[i]);
        luaL_unref(L, LUA_REGISTRYINDEX, m->table_ref);
        if (m->id)
            luaL_unref(L, LUA_REGISTRYINDEX, m->keys_ref);
    }
    free(m->fn_refs);
    free(m->id);
    free(m->error);
    memset(m, 0, sizeof *m);
}

/* Free the C side; the Lua side only when the state is still the one the
 * refs live in (L non-NULL). */
static void worker_free(struct models_worker *w, lua_State *L)
{
    if (!w)
        return;
    for (int i = 0; i < w->nwm; i++)
        wmodel_drop(L, &w->wm[i]);
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, w->p_slot);
        luaL_unref(L, LUA_REGISTRYINDEX, w->ctx_slot);
        if (reg_get(L) == w)
            reg_set(L, NULL);
    }
    free(w->wm);
    free(w->at);
    free(w->val);
    free(w->rcs);
    free(w->busy);
    models_gen_release(w->gen);
    free(w);
}

static void key_dtor(void *p)
{
    /* thread exit: the rules worker has freed (or will free) the Lua state
     * with every ref in it */
    worker_free(p, NULL);
}

static void key_init(void)
{
    pthread_key_create(&g_key, key_dtor);
}

/* Load entry e's feature functions into the worker's state. */
static void wmodel_load(struct models_worker *w, const struct models_entry *e, struct wmodel *m)
{
    lua_State *L = luavm_state(w->vm);
    m->id = strdup(e->id);
    m->version = e->live_version;
    m->table_ref = LUA_NOREF;
    m->keys_ref = e->live_def ? models_anchor_keys(L, e->live_def) : LUA_NOREF;
    m->ok = 1;
    if (!e->live || !e->live_def || !e->live_def->nfn)
        return;
    char err[512];
    if (luavm_load_chunk(w->vm, e->live_def->path, e->live_source, e->live_source_len, err,
                         sizeof err)) {
        m->ok = 0;
        m->error = strdup(err);
        log_error("model not loaded in worker", "model=\"%s\" err=\"%s\"", e->id, err);
        return;
    }
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        m->ok = 0;
        m->error = strdup("the model file did not return a table");
        return;
    }
    m->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    m->fn_refs = calloc((size_t)e->live_def->nfn, sizeof *m->fn_refs);
    m->nfn = e->live_def->nfn;
    if (!m->fn_refs || models_fn_refs(L, e->live_def, m->table_ref, m->fn_refs)) {
        m->ok = 0;
        m->nfn = m->fn_refs ? m->nfn : 0;
        m->error = strdup("feature functions not found in the model file");
    }
}

void models_worker_refresh(struct models_worker *w)
{
    if (!w)
        return;
    if (w->gen && w->gen->seq == models_gen_seq())
        return; /* the common case: one atomic load, no lock */
    struct models_gen *g = models_gen_acquire();
    if (g == w->gen || !g) {
        models_gen_release(g);
        return;
    }
    lua_State *L = luavm_state(w->vm);
    struct wmodel *nw = calloc((size_t)(g->n ? g->n : 1), sizeof *nw);
    uint64_t *at = calloc((size_t)(g->n ? g->n : 1), sizeof *at);
    double *val = calloc((size_t)(g->n ? g->n : 1), sizeof *val);
    int *rcs = calloc((size_t)(g->n ? g->n : 1), sizeof *rcs);
    unsigned char *busy = calloc((size_t)(g->n ? g->n : 1), 1);
    if (!nw || !at || !val || !rcs || !busy) {
        free(nw);
        free(at);
        free(val);
        free(rcs);
        free(busy);
        models_gen_release(g);
        return; /* keep serving the adopted generation */
    }
    for (int i = 0; i < g->n; i++) {
        const struct models_entry *e = &g->m[i];
        /* the same live version of the same model: keep what is loaded */
        for (int k = 0; k < w->nwm; k++) {
            struct wmodel *o = &w->wm[k];
            if (o->id && !strcmp(o->id, e->id) && o->version == e->live_version &&
                w->gen->m[k].live_def && e->live_def &&
                w->gen->m[k].live_def->hash == e->live_def->hash) {
                nw[i] = *o;
                memset(o, 0, sizeof *o);
                break;
            }
        }
        if (!nw[i].id)
            wmodel_load(w, e, &nw[i]);
    }
    for (int k = 0; k < w->nwm; k++)
        wmodel_drop(L, &w->wm[k]);
    free(w->wm);
    free(w->at);
    free(w->val);
    free(w->rcs);
    free(w->busy);
    w->wm = nw;
    w->nwm = g->n;
    w->at = at;
    w->val = val;
    w->rcs = rcs;
    w->busy = busy;
    w->epoch++;
    models_gen_release(w->gen);
    w->gen = g;
}

struct models_worker *models_worker_self(void)
{
    pthread_once(&g_key_once, key_init);
    struct models_worker *w = pthread_getspecific(g_key);
    struct rules_worker *rw = rules_worker_self();
    if (!rw || !rw->vm)
        return NULL;
    if (w && w->vm == rw->vm)
        return w;
    if (w) { /* the thread's Lua state was replaced: its refs died with it */
        worker_free(w, NULL);
        pthread_setspecific(g_key, NULL);
    }
    if (!(w = models_worker_new(rw->vm)))
        return NULL;
    pthread_setspecific(g_key, w);
    return w;
}

struct models_worker *models_worker_new(struct luavm *vm)
{
    struct models_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->vm = vm;
    lua_State *L = luavm_state(w->vm);
    lua_pushboolean(L, 0);
    w->p_slot = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 0);
    w->ctx_slot = luaL_ref(L, LUA_REGISTRYINDEX);
    reg_set(L, w);
    models_worker_refresh(w);
    return w;
}

void models_worker_free(struct models_worker *w)
{
    if (w)
        worker_free(w, luavm_state(w->vm));
}

const struct models_gen *models_worker_gen(const struct models_worker *w)
{
    return w ? w->gen : NULL;
}

/* The table a value stands for, as the per-decide cache and promo.predict's
 * default ctx compare it: a table is itself, and the read-only view a hook
 * was given of the decide's p or ctx (luavm_push_readonly) is that table. */
static const void *identity(lua_State *L, int idx)
{
    luavm_push_original(L, idx);
    const void *p = lua_topointer(L, -1);
    lua_pop(L, 1);
    return p;
}

void models_decide_begin(struct models_worker *w, int p_idx, int ctx_idx, int64_t now)
{
    if (!w)
        return;
    lua_State *L = luavm_state(w->vm);
    w->epoch++;
    w->now = now;
    w->p_ptr = lua_topointer(L, p_idx);
    w->ctx_ptr = ctx_idx ? lua_topointer(L, ctx_idx) : NULL;
    lua_pushvalue(L, p_idx);
    lua_rawseti(L, LUA_REGISTRYINDEX, w->p_slot);
    if (ctx_idx)
        lua_pushvalue(L, ctx_idx);
    else
        lua_pushboolean(L, 0);
    lua_rawseti(L, LUA_REGISTRYINDEX, w->ctx_slot);
}

void models_decide_end(struct models_worker *w)
{
    if (!w)
        return;
    w->epoch++; /* a table at the same address later is another customer */
    w->p_ptr = w->ctx_ptr = NULL;
    lua_State *L = luavm_state(w->vm);
    lua_pushboolean(L, 0);
    lua_rawseti(L, LUA_REGISTRYINDEX, w->p_slot);
    lua_pushboolean(L, 0);
    lua_rawseti(L, LUA_REGISTRYINDEX, w->ctx_slot);
}

/* Features and the margin's inputs of model idx; 0 or an error (why set). */
static int compute(struct models_worker *w, int idx, int p_idx, int ctx_idx, int64_t now,
                   float *x, const char **why)
{
    const struct models_entry *e = &w->gen->m[idx];
    const struct wmodel *m = &w->wm[idx];
    if (!e->live) {
        snprintf(w->why, sizeof w->why, "model %s has no live version (train it: POST "
                 "/api/v1/models/%s/train)", e->id, e->id);
        *why = w->why;
        return ERR_NOTFOUND;
    }
    if (!m->ok) {
        snprintf(w->why, sizeof w->why, "model %s: %s", e->id, m->error ? m->error : "not loaded");
        *why = w->why;
        count(e->id, 1, 0);
        return ERR_LUA;
    }
    if (w->busy[idx]) {
        snprintf(w->why, sizeof w->why, "model %s: a feature function asked for its own "
                 "prediction", e->id);
        *why = w->why;
        return ERR_LUA;
    }
    struct models_feat_err fe;
    w->busy[idx] = 1;
    int rc = models_features(w->vm, e->live_def, m->fn_refs, p_idx, ctx_idx, now, x, &fe);
    w->busy[idx] = 0;
    count(e->id, rc != 0, fe.nbad);
    if (rc) {
        snprintf(w->why, sizeof w->why, "model %s: %s", e->id, fe.msg);
        *why = w->why;
    }
    return rc;
}

int models_predict(struct models_worker *w, int idx, int p_idx, int ctx_idx, double *out,
                   const char **why)
{
    *why = NULL;
    if (!w || !w->gen || idx < 0 || idx >= w->gen->n) {
        *why = "unknown model";
        return ERR_NOTFOUND;
    }
    lua_State *L = luavm_state(w->vm);
    int cacheable = w->p_ptr && identity(L, p_idx) == w->p_ptr &&
                    (ctx_idx ? identity(L, ctx_idx) : NULL) == w->ctx_ptr;
    if (cacheable && w->at[idx] == w->epoch) {
        *out = w->val[idx];
        if (w->rcs[idx]) {
            snprintf(w->why, sizeof w->why, "%s", "the model's prediction failed for this decide");
            *why = w->why;
        }
        return w->rcs[idx];
    }
    float x[PREDICT_MAX_FEATURES];
    int64_t now = cacheable ? w->now : clock_now();
    int rc = compute(w, idx, p_idx, ctx_idx, now, x, why);
    double v = rc ? NAN : predict_eval(w->gen->m[idx].live, x);
    if (cacheable) {
        w->at[idx] = w->epoch;
        w->val[idx] = v;
        w->rcs[idx] = rc;
    }
    *out = v;
    return rc;
}

int models_predict_explain(struct models_worker *w, int idx, int p_idx, int ctx_idx, double *out,
                           struct models_driver *drv, int n, int *nout, float *x,
                           const char **why)
{
    *nout = 0;
    *why = NULL;
    if (!w || !w->gen || idx < 0 || idx >= w->gen->n) {
        *why = "unknown model";
        return ERR_NOTFOUND;
    }
    lua_State *L = luavm_state(w->vm);
    int cacheable = w->p_ptr && lua_topointer(L, p_idx) == w->p_ptr;
    int rc = compute(w, idx, p_idx, ctx_idx, cacheable ? w->now : clock_now(), x, why);
    if (rc)
        return rc;
    const struct models_entry *e = &w->gen->m[idx];
    const struct models_def *d = e->live_def;
    *out = predict_eval(e->live, x);
    double c[PREDICT_MAX_FEATURES + 1];
    predict_contrib(e->live, x, c);
    /* per feature (a categorical feature's columns together), largest |c| first */
    double per[MODELS_MAX_FEATURES];
    for (int i = 0; i < d->nfeats; i++) {
        per[i] = 0;
        for (int k = 0; k < d->feats[i].ncols; k++)
            per[i] += c[d->feats[i].col + k];
    }
    for (int k = 0; k < n; k++) {
        int best = -1;
        for (int i = 0; i < d->nfeats; i++) {
            int taken = 0;
            for (int j = 0; j < k; j++)
                taken |= drv[j].feature == i;
            if (!taken && per[i] != 0 && (best < 0 || fabs(per[i]) > fabs(per[best])))
                best = i;
        }
        if (best < 0)
            break;
        drv[k] = (struct models_driver){ best, per[best] };
        (*nout)++;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* promo.predict                                                           */

/***
 * promo.predict(p, model_id [, ctx]) -> number | nil, reason
 * The live version of model `model_id` (models/<id>.lua) for profile p:
 * a probability, or an amount for value models.  Without ctx, a call with
 * the decide's own p uses the decide's ctx, and its result is the one
 * every campaign of the decide sees (computed once).  nil and a reason
 * when the model has no live version or a feature function failed.
 * @example local p_buy = promo.predict(p, "buy_7d") or 0
 */
/* Argument `arg` of promo.predict: a table, or the read-only view of one a
 * hook was given (a userdata that reads through its metatable's __index). */
static void check_readable(lua_State *L, int arg)
{
    if (lua_type(L, arg) == LUA_TUSERDATA && lua_getmetatable(L, arg)) {
        lua_getfield(L, -1, "__index");
        int ok = !lua_isnil(L, -1);
        lua_pop(L, 2);
        if (ok)
            return;
    }
    luaL_checktype(L, arg, LUA_TTABLE);
}

static int l_predict(lua_State *L)
{
    check_readable(L, 1);
    const char *id = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3))
        check_readable(L, 3);
    struct models_worker *w = reg_get(L); /* the worker serving this state */
    if (!w)
        w = models_worker_self(); /* the thread's, made on first use */
    if (!w || !w->gen || luavm_state(w->vm) != L) { /* a state no worker serves */
        lua_pushnil(L);
        lua_pushliteral(L, "models are not available in this state");
        return 2;
    }
    int idx = models_gen_find(w->gen, id);
    if (idx < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "unknown model '%s'", id);
        return 2;
    }
    int ctx_idx = 0;
    if (!lua_isnoneornil(L, 3)) {
        ctx_idx = 3;
    } else if (w->p_ptr && identity(L, 1) == w->p_ptr && w->ctx_ptr) {
        lua_settop(L, 2);
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->ctx_slot);
        ctx_idx = 3;
    }
    double v;
    const char *why;
    int rc = models_predict(w, idx, 1, ctx_idx, &v, &why);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, why ? why : err_str(rc));
        return 2;
    }
    lua_pushnumber(L, v);
    return 1;
}

static void open_predict(lua_State *L)
{
    lua_pushcfunction(L, l_predict);
    luavm_lib_add(L, "promo", "predict");
}

void models_init(void)
{
    metrics_register(collector, NULL);
    luavm_add_opener(open_predict);
}

/* ---------------------------------------------------------------------- */
/* the declarative campaign score                                          */

static void xp_model_error(json_t *xp, const char *msg)
{
    if (!xp)
        return;
    char b[600];
    snprintf(b, sizeof b, "score: %s", msg);
    json_object_set_new(xp, "error", json_string(b));
}

int models_score(struct models_worker *w, const struct rules_campaign *c, int p_idx, int ctx_idx,
                 json_t *xp, double *score, struct models_ev *ev)
{
    const char *why = NULL;
    double prop = NAN, value = c->score_value;
    if (!w || !w->gen) {
        xp_model_error(xp, "models are not available here (no models worker serves this state)");
        return ERR_NOTFOUND;
    }
    int idx = models_gen_find(w->gen, c->score_model);
    if (idx < 0) {
        char b[400];
        snprintf(b, sizeof b, "unknown model '%s' (no %s.lua in the models directory)",
                 c->score_model, c->score_model);
        xp_model_error(xp, b);
        return ERR_NOTFOUND;
    }
    int rc = models_predict(w, idx, p_idx, ctx_idx, &prop, &why);
    if (!rc && c->score_value_model[0]) {
        int vidx = models_gen_find(w->gen, c->score_value_model);
        if (vidx < 0) {
            snprintf(w->why, sizeof w->why, "unknown value model '%s'", c->score_value_model);
            why = w->why;
            rc = ERR_NOTFOUND;
        } else {
            rc = models_predict(w, vidx, p_idx, ctx_idx, &value, &why);
            if (!rc && !(value > 0)) /* an amount; a regression may dip below 0 */
                value = 0;
        }
    }
    if (rc) {
        xp_model_error(xp, why ? why : err_str(rc));
        return rc;
    }
    double expected = prop * value;
    *score = expected * c->priority / 50.0;
    if (ev) {
        ev->propensity = prop;
        ev->value = value;
        ev->expected = expected;
        ev->version = w->gen->m[idx].live_version;
    }
    if (xp) {
        json_t *m = json_object();
        json_object_set_new(m, "id", json_string(c->score_model));
        json_object_set_new(m, "version", json_integer(w->gen->m[idx].live_version));
        json_object_set_new(m, "propensity", json_real(prop));
        json_object_set_new(m, "value", json_real(value));
        json_object_set_new(m, "expected_value", json_real(expected));
        json_object_set_new(xp, "model", m);
    }
    return 0;
}
