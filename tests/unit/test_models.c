/* test_models.c — model files (what parses, and file:line errors for what
 * does not), the feature vector from p and ctx tables (types, missing
 * values, categories, p.stats behaviour, context, feature functions), and
 * versions in a real LMDB store (promotion, history, rollback, pruning). */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "engine/models.h"
#include "fixture.h"
#include "lua/luavm.h"
#include "store/store.h"

/* models_file.c reads g_app (the server's models_dir, for default ids);
 * these tests have no server, so it stays NULL. */
struct app *g_app;

static struct luavm *vm;
static lua_State *L;

static void setup(void)
{
    log_set_level(LOG_ERROR);
    struct luavm_opts o = { 0 };
    cr_assert_eq(luavm_new(&o, &vm), 0);
    L = luavm_state(vm);
}

static void teardown(void)
{
    luavm_free(vm);
    vm = NULL;
}

TestSuite(models, .init = setup, .fini = teardown, .timeout = 60);

static struct models_def *parse_ok(const char *src)
{
    json_t *errs = json_array();
    struct models_def *d = NULL;
    int ref;
    int rc = models_parse(vm, "models/m.lua", src, strlen(src), errs, &d, &ref);
    char *txt = json_dumps(errs, 0);
    cr_assert_eq(rc, 0, "%s", txt);
    free(txt);
    json_decref(errs);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return d;
}

/* The first error of a source that must fail. */
static char *parse_err(const char *src)
{
    json_t *errs = json_array();
    struct models_def *d = NULL;
    int rc = models_parse(vm, "models/m.lua", src, strlen(src), errs, &d, NULL);
    cr_assert_neq(rc, 0, "accepted: %s", src);
    cr_assert_null(d);
    cr_assert_gt(json_array_size(errs), 0);
    char *e = strdup(json_string_value(json_array_get(errs, 0)));
    json_decref(errs);
    return e;
}

Test(models, a_full_file_parses_with_defaults)
{
    struct models_def *d = parse_ok(
        "return {\n"
        "  label = { conversion = 'spring', within = '7d' },\n"
        "  features = {\n"
        "    'age',\n"
        "    { 'tier', values = { 'gold', 'silver' } },\n"
        "    'stats.recency', 'stats.days_since.click', 'stats.custom.purchase',\n"
        "    'ctx.device',\n"
        "    { 'hour', fn = function(p, ctx) return 3 end },\n"
        "  },\n"
        "}\n");
    cr_assert_str_eq(d->id, "m");
    cr_assert_eq(d->label.kind, MODELS_LABEL_EVENT);
    cr_assert_str_eq(d->label.event, "conversion");
    cr_assert_str_eq(d->label.after, "impression");
    cr_assert_str_eq(d->label.campaign, "spring");
    cr_assert_eq(d->label.within, 7 * 86400);
    cr_assert_eq(d->nfeats, 7);
    cr_assert_eq(d->ncols, 8); /* tier expands to two columns */
    cr_assert_str_eq(d->colnames[1], "tier=gold");
    cr_assert_str_eq(d->colnames[2], "tier=silver");
    cr_assert_eq(d->feats[2].src, MODELS_SRC_STATS);
    cr_assert_eq(d->feats[2].stat, MODELS_STAT_RECENCY);
    cr_assert_eq(d->feats[3].stat, MODELS_STAT_DAYS_SINCE);
    cr_assert_str_eq(d->feats[3].stat_type, "click");
    cr_assert_eq(d->feats[4].stat, MODELS_STAT_COUNT);
    cr_assert_eq(d->feats[5].src, MODELS_SRC_CTX);
    cr_assert_eq(d->feats[6].src, MODELS_SRC_FN);
    cr_assert_eq(d->nfn, 1);
    cr_assert_eq(d->algo, MODELS_XGBOOST);
    cr_assert_eq(d->trees, 200);
    cr_assert_eq(d->window, 90 * 86400);
    cr_assert_float_eq(d->validation, 0.2, 1e-12);
    cr_assert_eq(d->min_positives, 50);
    cr_assert_eq(d->regression, 0);
    models_def_free(d);

    d = parse_ok("return { id = 'ltv', label = { value = { 'purchase', 'conversion' }, within = '90d',"
                 " every = '30d', active = '180d' }, features = { 'stats.revenue' },"
                 " algorithm = 'linear', params = { C = 0.5 }, retrain = '1d', window = '365d',"
                 " promote = 'manual' }");
    cr_assert_eq(d->label.kind, MODELS_LABEL_VALUE);
    cr_assert_eq(d->label.ntypes, 2);
    cr_assert_eq(d->label.every, 30 * 86400);
    cr_assert_eq(d->label.active, 180 * 86400);
    cr_assert_eq(d->regression, 1);
    cr_assert_eq(d->algo, MODELS_LINEAR);
    cr_assert_float_eq(d->C, 0.5, 1e-12);
    cr_assert_eq(d->retrain, 86400);
    cr_assert_eq(d->manual_promote, 1);
    models_def_free(d);
}

Test(models, feature_hash_follows_what_the_vector_reads)
{
    struct models_def *a = parse_ok("return { label = { churn = 'purchase', within = '30d' },"
                                    " features = { 'age', 'stats.events' } }");
    struct models_def *b = parse_ok("return { label = { churn = 'purchase', within = '30d' },"
                                    " features = { 'age', 'stats.events' }, params = { trees = 5 } }");
    struct models_def *c = parse_ok("return { label = { churn = 'purchase', within = '30d' },"
                                    " features = { 'age', 'stats.revenue' } }");
    cr_assert_eq(a->feat_hash, b->feat_hash); /* parameters are not features */
    cr_assert_neq(a->feat_hash, c->feat_hash);
    models_def_free(a);
    models_def_free(b);
    models_def_free(c);
}

struct bad_file {
    const char *src;
    const char *want; /* a piece of the message, with its line */
};

static struct bad_file bad_files[] = {
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'age' },\n prioirty = 3,\n}",
      "m.lua:4: unknown field 'prioirty'" },
    { "return {\n features = { 'age' },\n}", "m.lua:1: label is required" },
    { "return {\n label = { conversion = 'x' },\n features = { 'age' },\n}", "label.within is required" },
    { "return {\n label = { conversion = 'x', within = '7 days' },\n features = { 'age' },\n}",
      "m.lua:2: label.within must be a duration" },
    { "return {\n label = { event = 'Click!', after = 'impression', within = '1d' },\n features = { 'age' },\n}",
      "m.lua:2: label.event: 'Click!' is not an event type name" },
    { "return {\n label = { event = 'click', within = '1d' },\n features = { 'age' },\n}",
      "label.after is required" },
    { "return {\n label = { churn = 'x', value = 'y', within = '1d' },\n features = { 'age' },\n}",
      "exactly one of conversion, event, churn or value" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = {\n  'age',\n  'stats.recncy',\n },\n}",
      "m.lua:5: features[2]: unknown behaviour 'stats.recncy'" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'age', 'age' },\n}",
      "feature 'age' is listed twice" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { { 'a.b', fn = function() end } },\n}",
      "a feature function's name is a plain name" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'segment.a.b' },\n}",
      "'segment.a.b' is not a segment id" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { { 'segment.gold', values = { 'a' } } },\n}",
      "a segment membership is 1 or 0" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { { 'tier', values = { 'a', 'a' } } },\n}",
      "'a' is listed twice" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { { 'tier', colour = 1 } },\n}",
      "unknown field 'colour'" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'stats.events' },\n"
      " algorithm = 'forest',\n}", "m.lua:4: algorithm must be" },
    { "return {\n label = { value = 'purchase', within = '7d' },\n features = { 'age' },\n"
      " algorithm = 'logistic',\n}", "a value label needs" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'age' },\n"
      " params = { trees = 0 },\n}", "params.trees must be a whole number" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'age' },\n"
      " params = { C = 1 },\n}", "unknown field 'C' in the xgboost parameters" },
    { "return {\n label = { conversion = 'x', within = '30d' },\n features = { 'age' },\n"
      " window = '40d',\n}", "m.lua:4: window must be at least twice label.within" },
    { "return {\n label = { churn = 'purchase', within = '90d' },\n features = { 'age' },\n"
      " window = '200d',\n}", "too short for two snapshots" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = {},\n}",
      "features must be a list of 1 to 64" },
    { "return {\n label = { conversion = 'x', within = '7d' },\n features = { 'age' },\n"
      " promote = 'sometimes',\n}", "promote must be" },
    { "return 42", "m.lua:1: the file must return a table" },
    { "return {\n label = {\n", "m.lua:3:" },
    { "while true do end", "instruction budget" },
};

/* One test over the table (Criterion's parameterized tests run in another
 * process, where the table's string pointers would not point at the
 * strings). */
Test(models, bad_files_say_where)
{
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const struct bad_file *b = &bad_files[i];
        char *e = parse_err(b->src);
        cr_assert(strstr(e, b->want), "case %zu: got \"%s\", want \"%s\"", i, e, b->want);
        cr_assert(!strncmp(e, "models/m.lua:", 13), "case %zu: %s", i, e);
        free(e);
    }
}

Test(models, too_many_columns_are_refused)
{
    char src[20000];
    size_t n = (size_t)snprintf(src, sizeof src, "return { label = { conversion = 'x', within = '7d' }, "
                                "features = {");
    for (int i = 0; i < 9; i++) {
        n += (size_t)snprintf(src + n, sizeof src - n, " { 'c%d', values = {", i);
        for (int k = 0; k < 32; k++)
            n += (size_t)snprintf(src + n, sizeof src - n, "'v%d',", k);
        n += (size_t)snprintf(src + n, sizeof src - n, "} },");
    }
    snprintf(src + n, sizeof src - n, " } }");
    char *e = parse_err(src);
    cr_assert(strstr(e, "expand to 288 columns"), "%s", e);
    free(e);
}

/* ---------------------------------------------------------------------- */
/* features                                                                */

static int push_src(const char *lua)
{
    char err[300];
    cr_assert_eq(luavm_load_chunk(vm, "t.lua", lua, strlen(lua), err, sizeof err), 0, "%s", err);
    return lua_gettop(L);
}

Test(models, features_from_p_and_ctx)
{
    const char *src =
        "return {\n"
        "  label = { conversion = 'x', within = '7d' },\n"
        "  features = {\n"
        "    'age', 'vip', 'address.zip',\n"
        "    { 'tier', values = { 'gold', 'silver' } },\n"
        "    'stats.click', 'stats.custom.purchase', 'stats.days_since.click', 'stats.recency',\n"
        "    'stats.frequency', 'stats.monetary', 'stats.tenure', 'stats.idle', 'stats.events',\n"
        "    'ctx.device.w',\n"
        "    { 'twice', fn = function(p, ctx) return (p.age or 0) * 2 end },\n"
        "  },\n"
        "}\n";
    json_t *errs = json_array();
    struct models_def *d = NULL;
    int ref;
    cr_assert_eq(models_parse(vm, "models/m.lua", src, strlen(src), errs, &d, &ref), 0);
    int fn[4];
    cr_assert_eq(models_fn_refs(L, d, ref, fn), 0);
    int64_t now = 1000000;
    int p = push_src("return { age = 30, vip = true, address = { zip = 75001 }, tier = 'silver',"
                     " stats = { click = 4, custom = { purchase = 2 }, events = 9,"
                     "   last = { click = 1000000 - 86400 * 2 }, conversion = 3, revenue = 12.5,"
                     "   last_conversion = 1000000 - 43200, first_seen = 1000000 - 86400 * 10,"
                     "   last_seen = 1000000 - 3600 } }");
    int c = push_src("return { device = { w = 1280 } }");
    float x[PREDICT_MAX_FEATURES];
    struct models_feat_err fe;
    int top = lua_gettop(L);
    cr_assert_eq(models_features(vm, d, fn, p, c, now, x, &fe), 0, "%s", fe.msg);
    cr_assert_eq(lua_gettop(L), top);
    float want[] = { 30, 1, 75001, 0, 1, 4, 2, 2, 0.5f, 3, 12.5f, 10, 1.0f / 24, 9, 1280, 60 };
    cr_assert_eq(d->ncols, 16);
    for (int i = 0; i < 16; i++)
        cr_assert_float_eq(x[i], want[i], 1e-4, "column %d (%s): %g", i, d->colnames[i], x[i]);
    cr_assert_eq(fe.nbad, 0);
    lua_settop(L, 0);

    /* an unknown customer: counts are 0, "days since" and attributes missing */
    p = push_src("return { id = 'nobody' }");
    cr_assert_eq(models_features(vm, d, fn, p, 0, now, x, &fe), 0);
    cr_assert(isnan(x[0]) && isnan(x[1]) && isnan(x[3]) && isnan(x[4]));
    cr_assert_eq(x[5], 0);
    cr_assert_eq(x[6], 0);
    cr_assert(isnan(x[7]) && isnan(x[8]));
    cr_assert_eq(x[9], 0);
    cr_assert(isnan(x[14]));
    lua_settop(L, 0);

    /* wrong types read as missing and are counted; an unlisted category is all zeros */
    p = push_src("return { age = 'thirty', vip = {}, tier = 'bronze', address = 'x' }");
    cr_assert_eq(models_features(vm, d, fn, p, 0, now, x, &fe), ERR_LUA); /* twice: arithmetic on a string */
    cr_assert(fe.failed);
    cr_assert(strstr(fe.msg, "feature 'twice'"), "%s", fe.msg);
    lua_settop(L, 0);
    p = push_src("return { age = 'thirty', vip = {}, tier = 7 }");
    struct models_def *d2 = parse_ok("return { label = { conversion = 'x', within = '7d' },"
                                     " features = { 'age', 'vip', { 'tier', values = { 'gold' } },"
                                     " { 'grade', values = { 'a' } } } }");
    lua_settop(L, 0);
    p = push_src("return { age = 'thirty', vip = {}, tier = 7, grade = 'b' }");
    cr_assert_eq(models_features(vm, d2, NULL, p, 0, now, x, &fe), 0);
    cr_assert_eq(fe.nbad, 3);
    cr_assert(fe.wrong_type);
    cr_assert_eq(fe.feature, 0);
    cr_assert_str_eq(fe.got, "string");
    cr_assert(fe.bad[0] && fe.bad[1] && fe.bad[2] && !fe.bad[3]);
    cr_assert(isnan(x[0]) && isnan(x[1]) && isnan(x[2]));
    cr_assert_eq(x[3], 0); /* 'b' is not a listed value */
    json_t *v = models_feature_value_json(d2, 3, x);
    cr_assert_str_eq(json_string_value(v), "(other)");
    json_decref(v);
    models_def_free(d2);
    for (int i = 0; i < d->nfn; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, fn[i]);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    models_def_free(d);
    json_decref(errs);
}

/* Push the read-only view of the table at idx the sandbox gives a hook
 * whose file can write tables (luavm_push_readonly): the file's function
 * returns what it was given. */
static int push_view(int idx, const char *what)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    char err[300];
    const char *src = "local seen = {}\nreturn function(v) seen[1] = true; return v end\n";
    cr_assert_eq(luavm_load_chunk(vm, "view.lua", src, strlen(src), err, sizeof err), 0, "%s", err);
    luavm_push_readonly(L, idx, what);
    cr_assert_eq(luavm_call(vm, 1, 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(lua_type(L, -1), LUA_TUSERDATA, "not a view: %s", luaL_typename(L, -1));
    return lua_gettop(L);
}

Test(models, features_through_read_only_views_match_the_tables)
{
    const char *src =
        "return {\n"
        "  label = { conversion = 'x', within = '7d' },\n"
        "  features = {\n"
        "    'age', 'address.zip', { 'tier', values = { 'gold', 'silver' } },\n"
        "    'stats.click', 'stats.custom.purchase', 'stats.days_since.click', 'stats.monetary',\n"
        "    'ctx.device.w',\n"
        "    { 'twice', fn = function(p, ctx) return (p.age or 0) * 2 + ctx.device.w end },\n"
        "  },\n"
        "}\n";
    json_t *errs = json_array();
    struct models_def *d = NULL;
    int ref;
    cr_assert_eq(models_parse(vm, "models/m.lua", src, strlen(src), errs, &d, &ref), 0);
    int fn[4];
    cr_assert_eq(models_fn_refs(L, d, ref, fn), 0);
    int64_t now = 1000000;
    int p = push_src("return { age = 41, address = { zip = 1210 }, tier = 'gold',"
                     " stats = { click = 7, custom = { purchase = 3 }, revenue = 99.5,"
                     "   last = { click = 1000000 - 86400 * 3 } } }");
    int c = push_src("return { device = { w = 640 } }");
    float want[PREDICT_MAX_FEATURES], x[PREDICT_MAX_FEATURES];
    struct models_feat_err fe;
    cr_assert_eq(models_features(vm, d, fn, p, c, now, want, &fe), 0, "%s", fe.msg);
    int pv = push_view(p, "profile");
    int cv = push_view(c, "ctx");
    int top = lua_gettop(L);
    cr_assert_eq(models_features(vm, d, fn, pv, cv, now, x, &fe), 0, "%s", fe.msg);
    cr_assert_eq(lua_gettop(L), top);
    cr_assert_eq(fe.nbad, 0);
    float expect[] = { 41, 1210, 1, 0, 7, 3, 3, 99.5f, 640, 722 };
    cr_assert_eq(d->ncols, 10);
    for (int i = 0; i < d->ncols; i++) {
        cr_assert_float_eq(x[i], want[i], 1e-6, "column %d (%s): %g vs %g", i, d->colnames[i], x[i], want[i]);
        cr_assert_float_eq(x[i], expect[i], 1e-4, "column %d (%s): %g", i, d->colnames[i], x[i]);
    }
    for (int i = 0; i < d->nfn; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, fn[i]);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    models_def_free(d);
    json_decref(errs);
    lua_settop(L, 0);
}

Test(models, a_feature_function_out_of_budget_fails_the_vector)
{
    struct luavm_opts o = { .instr_budget = 100000 };
    struct luavm *small;
    cr_assert_eq(luavm_new(&o, &small), 0);
    const char *src = "return { label = { conversion = 'x', within = '7d' },"
                      " features = { { 'spin', fn = function(p) while true do end end } } }";
    json_t *errs = json_array();
    struct models_def *d;
    int ref, fn[1];
    cr_assert_eq(models_parse(small, "models/m.lua", src, strlen(src), errs, &d, &ref), 0);
    lua_State *S = luavm_state(small);
    cr_assert_eq(models_fn_refs(S, d, ref, fn), 0);
    lua_createtable(S, 0, 0);
    float x[4];
    struct models_feat_err fe;
    cr_assert_eq(models_features(small, d, fn, lua_gettop(S), 0, 0, x, &fe), ERR_BUDGET);
    cr_assert(fe.failed);
    models_def_free(d);
    json_decref(errs);
    luavm_free(small);
}

/* ---------------------------------------------------------------------- */
/* versions in the store                                                   */

static struct predict_model *tiny(double base)
{
    struct predict_model *m = predict_alloc(PREDICT_LINEAR, PREDICT_LOGISTIC, 1, 0, 0);
    m->base = base;
    return m;
}

static int put_version(struct store *st, const char *id, double base)
{
    struct predict_model *m = tiny(base);
    struct buf b = BUF_INIT;
    cr_assert_eq(predict_save(m, &b), 0);
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    json_t *meta = json_pack("{s:s}", "status", "candidate");
    int v;
    cr_assert_eq(models_store_put(t, id, meta, b.p, b.len, &v), 0);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    json_decref(meta);
    buf_free(&b);
    predict_free(m);
    return v;
}

static int live_of(struct store *st, const char *id)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    int v = models_store_live(t, id);
    store_txn_end(t);
    return v;
}

static int do_rollback(struct store *st, const char *id, int version, int *live)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    int rc = models_store_rollback(t, id, version, "tester", live);
    if (rc)
        store_txn_end(t);
    else
        cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    return rc;
}

static void promote(struct store *st, const char *id, int v)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(models_store_promote(t, id, v, "tester", "test"), 0);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
}

Test(models, versions_promotion_history_and_rollback)
{
    char dir[256];
    tfx_tmpdir(dir, sizeof dir);
    struct store_opts so = { .dir = dir };
    struct store *st;
    cr_assert_eq(store_open(&so, &st), 0);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    uint64_t rev0 = models_store_rev(t);
    store_txn_end(t);
    int live;
    cr_assert_eq(do_rollback(st, "m", 0, &live), ERR_NOTFOUND); /* nothing yet */
    for (int i = 1; i <= 3; i++)
        cr_assert_eq(put_version(st, "m", i), i);
    cr_assert_eq(put_version(st, "other", 9), 1); /* versions count per model */
    cr_assert_eq(live_of(st, "m"), 0);
    promote(st, "m", 1);
    promote(st, "m", 2);
    promote(st, "m", 3);
    cr_assert_eq(live_of(st, "m"), 3);
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_gt(models_store_rev(t), rev0);
    json_t *list = models_store_list(t, "m", 0);
    cr_assert_eq(json_array_size(list), 3);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(list, 0), "version")), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "status")), "live");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 1), "status")), "retired");
    json_decref(list);
    json_t *meta;
    struct predict_model *m;
    cr_assert_eq(models_store_get(t, "m", 2, &meta, &m), 0);
    cr_assert_float_eq(m->base, 2, 1e-12);
    predict_free(m);
    json_decref(meta);
    cr_assert_eq(models_store_get(t, "m", 9, &meta, &m), ERR_NOTFOUND);
    json_t *ids = models_store_ids(t);
    cr_assert_eq(json_array_size(ids), 2);
    json_decref(ids);
    store_txn_end(t);
    /* one call back to the previous live version, then the one before */
    cr_assert_eq(do_rollback(st, "m", 0, &live), 0);
    cr_assert_eq(live, 2);
    cr_assert_eq(live_of(st, "m"), 2);
    cr_assert_eq(do_rollback(st, "m", 0, &live), 0);
    cr_assert_eq(live, 1);
    cr_assert_eq(do_rollback(st, "m", 0, &live), ERR_NOTFOUND); /* history exhausted */
    cr_assert_eq(live_of(st, "m"), 1);
    /* to a named version: it goes live, the current one joins the history */
    cr_assert_eq(do_rollback(st, "m", 3, &live), 0);
    cr_assert_eq(live_of(st, "m"), 3);
    cr_assert_eq(do_rollback(st, "m", 0, &live), 0);
    cr_assert_eq(live, 1);
    cr_assert_eq(do_rollback(st, "m", 42, &live), ERR_NOTFOUND);
    store_close(st);
    tfx_rmrf(dir);
}

Test(models, old_model_bytes_are_pruned_but_live_ones_kept)
{
    char dir[256];
    tfx_tmpdir(dir, sizeof dir);
    struct store_opts so = { .dir = dir };
    struct store *st;
    cr_assert_eq(store_open(&so, &st), 0);
    put_version(st, "m", 1);
    promote(st, "m", 1);
    for (int i = 2; i <= 25; i++)
        put_version(st, "m", i);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    json_t *meta;
    struct predict_model *m;
    cr_assert_eq(models_store_get(t, "m", 1, &meta, &m), 0); /* live: kept */
    predict_free(m);
    json_decref(meta);
    cr_assert_eq(models_store_get(t, "m", 3, &meta, &m), ERR_NOTFOUND); /* pruned */
    cr_assert_eq(models_store_get(t, "m", 3, &meta, NULL), 0);           /* its record stays */
    cr_assert(json_is_true(json_object_get(meta, "model_pruned")));
    json_decref(meta);
    cr_assert_eq(models_store_get(t, "m", 25, &meta, &m), 0);
    predict_free(m);
    json_decref(meta);
    store_txn_end(t);
    store_close(st);
    tfx_rmrf(dir);
}

/* ---------------------------------------------------------------------- */
/* a prediction allocates nothing                                          */

/* Every malloc / calloc / realloc of the process is counted while
 * `g_counting` is set: the test binary's own definitions interpose glibc's
 * (through its __libc_* entry points).  Not under ASan, whose allocator
 * must stay the only one; there the Lua heap check below still runs. */
#if !defined(__SANITIZE_ADDRESS__)
#define COUNT_MALLOC 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
static long g_mallocs;
static int g_counting;
void *malloc(size_t n)
{
    if (g_counting)
        __atomic_add_fetch(&g_mallocs, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    if (g_counting)
        __atomic_add_fetch(&g_mallocs, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    if (g_counting)
        __atomic_add_fetch(&g_mallocs, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
void free(void *p)
{
    __libc_free(p);
}
#endif

Test(models, predicting_allocates_nothing)
{
    /* attributes present and absent, a category, stats present and absent
     * (custom types, days since), context: every kind of lookup */
    struct models_def *d = parse_ok(
        "return { label = { conversion = 'x', within = '7d' }, features = {\n"
        "  'age', 'missing.deep.path', { 'tier', values = { 'gold', 'silver' } },\n"
        "  'stats.click', 'stats.custom.purchase', 'stats.custom.never', 'stats.days_since.open',\n"
        "  'stats.recency', 'stats.frequency', 'stats.monetary', 'stats.tenure', 'stats.idle',\n"
        "  'ctx.device.w', 'ctx.absent' } }");
    struct predict_model *m = predict_alloc(PREDICT_LINEAR, PREDICT_LOGISTIC, d->ncols, 0, 0);
    for (int i = 0; i < d->ncols; i++)
        m->w[i] = 1e-5 * (i + 1);
    char err[200];
    cr_assert_eq(predict_check(m, err, sizeof err), 0, "%s", err);
    int p = push_src("return { id = 'c1', age = 30, tier = 'gold', stats = { click = 4,"
                     " events = 9, last = { click = 999000 }, first_seen = 900000,"
                     " last_seen = 999000 } }");
    int c = push_src("return { device = { w = 1280 } }");
    int keys = models_anchor_keys(L, d); /* as a models worker does on loading the model */
    float x[PREDICT_MAX_FEATURES];
    struct models_feat_err fe;
    int64_t now = 1000000;
    cr_assert_eq(models_features(vm, d, NULL, p, c, now, x, &fe), 0);
    double first = predict_eval(m, x), sum = 0;
    lua_gc(L, LUA_GCCOLLECT, 0); /* the GC keeps running during the loop */
    size_t mem0 = luavm_mem_used(vm);
#ifdef COUNT_MALLOC
    g_mallocs = 0;
    g_counting = 1;
#endif
    for (int i = 0; i < 20000; i++) {
        models_features(vm, d, NULL, p, c, now + i, x, &fe);
        sum += predict_eval(m, x);
    }
#ifdef COUNT_MALLOC
    g_counting = 0;
    cr_assert_eq(g_mallocs, 0, "%ld allocations in 20000 predictions", g_mallocs);
#endif
    cr_assert_eq(luavm_mem_used(vm), mem0, "the Lua heap grew by %zd bytes",
                 (ssize_t)(luavm_mem_used(vm) - mem0));
    cr_assert(sum > 0 && first > 0 && first < 1);
    luaL_unref(L, LUA_REGISTRYINDEX, keys);
    predict_free(m);
    models_def_free(d);
    lua_settop(L, 0);
}
