/*
 * test_experiments.c — experiment definitions, assignment and the exposure
 * log (engine/experiments.h), on real components: the GrowthBook `run`
 * cases (../shared/conformance/growthbook-cases.json) go through the same
 * experiments_pick() decide calls, with the attributes as a Lua table and
 * as msgpack as decide has them; the exposure writer runs against a real
 * LMDB store in a temporary directory.
 *
 * Which `run` cases apply: the ones whose experiment uses only what a
 * promod experiment has (key/seed, variations, weights, coverage,
 * namespace, hashAttribute, hashVersion, condition) and whose context has
 * only attributes.  Query-string overrides, QA mode, `force`, explicit
 * `ranges`, `filters`, parent conditions and saved groups are GrowthBook
 * SDK features promod does not take; the test counts how many cases it
 * ran and insists on at least 50 of the 73.
 */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "codec/codec.h"
#include "engine/assign.h"
#include "engine/experiments.h"
#include "engine/rules.h"
#include "fixture.h"
#include "lua/luavm.h"
#include "store/store.h"

struct app *g_app; /* rules.c's loader reads it; nothing here starts a server */

#define CASES PROMOD_SHARED "/conformance/growthbook-cases.json"

TestSuite(experiments, .timeout = 120);

static struct experiments_def *parse_ok(const char *json)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    cr_assert(j, "bad test JSON: %s", je.text);
    struct reqerr e = { 0 };
    struct experiments_def *d = NULL;
    int rc = experiments_parse(j, &d, &e);
    cr_assert_eq(rc, 0, "parse %s: %s (%s)", json, e.message, e.field);
    json_decref(j);
    return d;
}

/* Parse must fail with 400 naming `field`. */
static void parse_bad(const char *json, const char *field)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    cr_assert(j, "bad test JSON: %s", je.text);
    struct reqerr e = { 0 };
    struct experiments_def *d = NULL;
    int rc = experiments_parse(j, &d, &e);
    cr_assert_neq(rc, 0, "accepted: %s", json);
    cr_assert_null(d);
    cr_assert_eq(e.status, 400, "%s: status %d", json, e.status);
    cr_assert_str_eq(e.field, field, "%s: field %s (%s)", json, e.field, e.message);
    reqerr_clear(&e);
    json_decref(j);
}

Test(experiments, defaults_are_explicit)
{
    struct experiments_def *d =
        parse_ok("{\"id\":\"hero\",\"campaign_id\":\"c\",\"variants\":[\"A\",\"B\",\"C\"]}");
    cr_assert_str_eq(d->seed, "hero", "GrowthBook's default seed is the key");
    cr_assert_eq(d->hash_version, 2);
    cr_assert_eq(d->coverage, 1.0);
    cr_assert_str_eq(d->hash_attribute, "id");
    cr_assert_eq(d->nvariants, 3);
    double w[3];
    assign_equal_weights(3, w);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(d->weights[i], w[i], "equal weights as getEqualWeights");
    cr_assert_eq(d->metric.kind, EXPM_CONVERSION);
    cr_assert_eq(d->alpha, 0.05);
    cr_assert_eq(d->min_sample, 100);
    json_t *c = d->json;
    cr_assert_str_eq(json_string_value(json_object_get(c, "seed")), "hero");
    cr_assert_eq(json_integer_value(json_object_get(c, "hash_version")), 2);
    cr_assert(json_is_array(json_object_get(c, "variants")));
    /* the canonical form parses to the same definition */
    struct reqerr e = { 0 };
    struct experiments_def *d2 = NULL;
    cr_assert_eq(experiments_parse(c, &d2, &e), 0, "%s", e.message);
    cr_assert(json_equal(d2->json, c));
    experiments_def_unref(d2);
    experiments_def_unref(d);
}

Test(experiments, weights_as_growthbook_or_shares)
{
    struct experiments_def *d = parse_ok("{\"id\":\"x\",\"campaign_id\":\"c\",\"variants\":"
                                         "[{\"id\":\"A\",\"weight\":0.1},{\"id\":\"B\",\"weight\":0.9}]}");
    cr_assert_eq(d->weights[0], 0.1, "weights summing to 1 are used as given, to the bit");
    cr_assert_eq(d->weights[1], 0.9);
    double r[2][2];
    assign_bucket_ranges(2, 1, (double[]){ 0.1, 0.9 }, 2, r);
    cr_assert(!memcmp(r, d->ranges, sizeof r), "GrowthBook's ranges");
    experiments_def_unref(d);
    d = parse_ok("{\"id\":\"x\",\"campaign_id\":\"c\",\"coverage\":0.5,\"variants\":"
                 "[{\"id\":\"A\",\"weight\":30},{\"id\":\"B\",\"weight\":10}]}");
    cr_assert_float_eq(d->weights[0], 0.75, 1e-15, "shares are normalised");
    cr_assert_float_eq(d->ranges[1][0], 0.75, 1e-15);
    cr_assert_float_eq(d->ranges[1][1], 0.75 + 0.5 * 0.25, 1e-15, "coverage shortens each range");
    experiments_def_unref(d);
}

Test(experiments, bad_input_names_the_field)
{
    const char *base = "\"id\":\"x\",\"campaign_id\":\"c\"";
    struct {
        const char *extra, *field;
    } cases[] = {
        { ",\"variants\":[{\"id\":\"A\",\"weight\":0},{\"id\":\"B\",\"weight\":0}]", "variants" },
        { ",\"variants\":[{\"id\":\"A\",\"weight\":-1},{\"id\":\"B\",\"weight\":2}]",
          "variants[0].weight" },
        { ",\"variants\":[{\"id\":\"A\",\"weight\":1},{\"id\":\"B\"}]", "variants" },
        { ",\"variants\":[\"A\"]", "variants" },
        { ",\"variants\":[\"A\",\"A\"]", "variants[1].id" },
        { ",\"variants\":[\"A\",\"holdout\"]", "variants[1].id" },
        { ",\"variants\":[\"A\",\"B\"],\"coverage\":1.5", "coverage" },
        { ",\"variants\":[\"A\",\"B\"],\"coverage\":-0.1", "coverage" },
        { ",\"variants\":[\"A\",\"B\"],\"holdout\":1", "holdout" },
        { ",\"variants\":[\"A\",\"B\"],\"metric\":\"ctr\"", "metric" },
        { ",\"variants\":[\"A\",\"B\"],\"metric\":\"event:conversion\"", "metric" },
        { ",\"variants\":[\"A\",\"B\"],\"guardrails\":[\"click_rate\",\"bounce\"]", "guardrails[1]" },
        { ",\"variants\":[\"A\",\"B\"],\"hash_version\":3", "hash_version" },
        { ",\"variants\":[\"A\",\"B\"],\"namespace\":[\"n\",0.5,0.5]", "namespace" },
        { ",\"variants\":[\"A\",\"B\"],\"namespace\":[\"n\",0,1.2]", "namespace" },
        { ",\"variants\":[\"A\",\"B\"],\"condition\":{\"age\":{\"$gtx\":3}}", "condition" },
        { ",\"variants\":[\"A\",\"B\"],\"forced\":[{\"condition\":{},\"variant\":\"C\"}]",
          "forced[0].variant" },
        { ",\"variants\":[\"A\",\"B\"],\"colour\":\"red\"", "colour" },
        { ",\"variants\":[\"A\",\"B\"],\"hash_attribute\":\"a.b\"", "hash_attribute" },
        { ",\"variants\":[\"A\",\"B\"],\"alpha\":0", "alpha" },
        { ",\"variants\":[\"A\",\"B\"],\"min_sample\":-1", "min_sample" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char j[600];
        snprintf(j, sizeof j, "{%s%s}", base, cases[i].extra);
        parse_bad(j, cases[i].field);
    }
    parse_bad("{\"campaign_id\":\"c\",\"variants\":[\"A\",\"B\"]}", "id");
    parse_bad("{\"id\":\"x\",\"variants\":[\"A\",\"B\"]}", "campaign_id");
    parse_bad("{\"id\":\"../x\",\"campaign_id\":\"c\",\"variants\":[\"A\",\"B\"]}", "id");
}

Test(experiments, overlap_needs_one_namespace_and_disjoint_ranges)
{
    struct experiments_def *a = parse_ok("{\"id\":\"a\",\"campaigns\":[\"c\",\"d\"],\"variants\":[\"A\",\"B\"],"
                                         "\"namespace\":[\"ns\",0,0.5]}");
    struct experiments_def *b = parse_ok("{\"id\":\"b\",\"campaign_id\":\"d\",\"variants\":[\"A\",\"B\"],"
                                         "\"namespace\":[\"ns\",0.5,1]}");
    struct experiments_def *c = parse_ok("{\"id\":\"c\",\"campaign_id\":\"d\",\"variants\":[\"A\",\"B\"],"
                                         "\"namespace\":[\"ns\",0.4,0.6]}");
    struct experiments_def *n = parse_ok("{\"id\":\"n\",\"campaign_id\":\"d\",\"variants\":[\"A\",\"B\"]}");
    struct experiments_def *o = parse_ok("{\"id\":\"o\",\"campaign_id\":\"d\",\"variants\":[\"A\",\"B\"],"
                                         "\"namespace\":[\"other\",0.5,1]}");
    struct experiments_def *e = parse_ok("{\"id\":\"e\",\"campaign_id\":\"e\",\"variants\":[\"A\",\"B\"]}");
    const char *camp = NULL;
    cr_assert_eq(experiments_overlap(a, b, &camp), 0, "disjoint ranges of one namespace");
    cr_assert_eq(experiments_overlap(a, c, &camp), 1);
    cr_assert_str_eq(camp, "d");
    cr_assert_eq(experiments_overlap(a, n, &camp), 1, "no namespace claims everything");
    cr_assert_eq(experiments_overlap(b, o, &camp), 1, "another namespace hashes independently");
    cr_assert_eq(experiments_overlap(a, e, &camp), 0, "different campaigns");
    experiments_def_unref(a);
    experiments_def_unref(b);
    experiments_def_unref(c);
    experiments_def_unref(n);
    experiments_def_unref(o);
    experiments_def_unref(e);
}

/* ---------------------------------------------------------------------- */
/* a generation with campaigns, for views                                 */

struct fake_gen {
    struct rules_gen g;
    struct rules_campaign camps[4];
    struct rules_variant vars[4][EXPERIMENTS_MAX_VARIANTS];
    char ids[4][16];
    char vids[4][EXPERIMENTS_MAX_VARIANTS][16];
};

static uint64_t g_seq_gen = 1000;

/* campaigns "c0".."c<n-1>", each with variants v0..v<nv-1> */
static void fake_gen(struct fake_gen *f, int n, int nv)
{
    memset(f, 0, sizeof *f);
    for (int c = 0; c < n; c++) {
        snprintf(f->ids[c], sizeof f->ids[c], "c%d", c);
        f->camps[c].id = f->ids[c];
        for (int v = 0; v < nv; v++) {
            snprintf(f->vids[c][v], sizeof f->vids[c][v], "v%d", v);
            f->vars[c][v].id = f->vids[c][v];
            f->vars[c][v].weight = 1;
        }
        f->camps[c].variants = f->vars[c];
        f->camps[c].nvariants = nv;
    }
    f->g.camps = f->camps;
    f->g.ncamps = n;
    f->g.seq = ++g_seq_gen;
}

static void publish1(struct experiments_def *d, uint32_t xkey)
{
    struct experiments_live l = { d, xkey, EXP_RUNNING, -1, 0 };
    cr_assert_eq(experiments_publish(&l, 1), 0);
}

/* ---------------------------------------------------------------------- */
/* GrowthBook's run cases                                                 */

static int supported(const json_t *ctx, const json_t *exp)
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)ctx, k, v)
        if (strcmp(k, "attributes"))
            return 0;
    json_object_foreach ((json_t *)exp, k, v) {
        static const char *ok[] = { "key", "variations", "weights", "coverage", "namespace",
                                    "hashAttribute", "seed", "hashVersion", "condition", NULL };
        int known = 0;
        for (int i = 0; ok[i]; i++)
            known |= !strcmp(k, ok[i]);
        if (!known && !(!strcmp(k, "active") && json_is_true(v)))
            return 0;
    }
    if (json_array_size(json_object_get(exp, "variations")) < 2)
        return 0; /* promod refuses an experiment with one variation */
    return 1;
}

Test(experiments, growthbook_run_cases_through_pick)
{
    json_error_t je;
    json_t *all = json_load_file(CASES, JSON_DECODE_INT_AS_REAL, &je);
    cr_assert(all, "cannot read %s: %s", CASES, je.text);
    json_t *run = json_object_get(all, "run");
    cr_assert(json_array_size(run) > 0);
    lua_State *L = luaL_newstate();
    size_t i, ran = 0, failed = 0;
    json_t *cs;
    json_array_foreach (run, i, cs) {
        const char *name = json_string_value(json_array_get(cs, 0));
        json_t *ctx = json_array_get(cs, 1), *exp = json_array_get(cs, 2);
        json_t *want = json_array_get(cs, 3);
        int want_in = json_is_true(json_array_get(cs, 4));
        char *cdump = json_dumps(json_object_get(exp, "condition"), 0);
        int grp = cdump && strstr(cdump, "Group");
        free(cdump);
        if (!supported(ctx, exp) || grp)
            continue;
        json_t *vars = json_object_get(exp, "variations");
        int nv = (int)json_array_size(vars), want_idx = -1;
        for (int k = 0; k < nv; k++)
            if (json_equal(json_array_get(vars, k), want))
                want_idx = k;
        /* the promod definition of the same experiment */
        json_t *def = json_object();
        json_object_set_new(def, "id", json_string("t"));
        json_object_set_new(def, "campaign_id", json_string("c0"));
        json_t *seed = json_object_get(exp, "seed");
        json_object_set_new(def, "seed", seed ? json_incref(seed)
                                              : json_incref(json_object_get(exp, "key")));
        json_t *hv = json_object_get(exp, "hashVersion");
        json_object_set_new(def, "hash_version",
                            json_integer(hv ? (json_int_t)json_number_value(hv) : 1));
        json_t *vl = json_array();
        json_t *w = json_object_get(exp, "weights");
        for (int k = 0; k < nv; k++) {
            char id[16];
            snprintf(id, sizeof id, "v%d", k);
            json_t *vo = json_pack("{s:s}", "id", id);
            if (w && json_array_size(w) == (size_t)nv)
                json_object_set(vo, "weight", json_array_get(w, (size_t)k));
            json_array_append_new(vl, vo);
        }
        json_object_set_new(def, "variants", vl);
        if (json_object_get(exp, "coverage"))
            json_object_set(def, "coverage", json_object_get(exp, "coverage"));
        if (json_object_get(exp, "namespace"))
            json_object_set(def, "namespace", json_object_get(exp, "namespace"));
        if (json_object_get(exp, "hashAttribute"))
            json_object_set(def, "hash_attribute", json_object_get(exp, "hashAttribute"));
        if (json_object_get(exp, "condition"))
            json_object_set(def, "condition", json_object_get(exp, "condition"));
        struct reqerr e = { 0 };
        struct experiments_def *d = NULL;
        int rc = experiments_parse(def, &d, &e);
        json_decref(def);
        if (rc) {
            cr_log_error("run[%zu] %s: definition refused: %s", i, name, e.message);
            failed++;
            reqerr_clear(&e);
            continue;
        }
        struct fake_gen f;
        fake_gen(&f, 1, nv);
        publish1(d, 1);
        experiments_def_unref(d);
        const struct experiments_view *v = experiments_view(&f.g);
        cr_assert(v && experiments_covers(v, 0));
        /* the customer: attributes as decide has them (a Lua table, msgpack) */
        json_t *attrs = json_object_get(ctx, "attributes");
        if (!attrs)
            attrs = json_object();
        else
            json_incref(attrs);
        int top = lua_gettop(L);
        luavm_push_json(L, attrs);
        struct buf mp = BUF_INIT;
        cr_assert_eq(codec_json_to_msgpack(attrs, &mp), 0);
        const char *cust = json_string_value(json_object_get(attrs, "id"));
        struct experiments_who who = { cust, L, lua_gettop(L), mp.p, mp.len };
        struct experiments_pick pk;
        cr_assert_eq(experiments_pick(v, 0, &who, NULL, &pk), 0);
        lua_settop(L, top);
        buf_free(&mp);
        json_decref(attrs);
        ran++;
        int got_idx = pk.outcome == EXPERIMENTS_SERVE ? pk.variant : -1;
        if (got_idx != want_idx || pk.in_experiment != want_in) {
            cr_log_error("run[%zu] %s: got variation %d in=%d (%s), want %d in=%d", i, name,
                         got_idx, pk.in_experiment, pk.why, want_idx, want_in);
            failed++;
        }
    }
    lua_close(L);
    size_t total = json_array_size(run);
    json_decref(all);
    experiments_clear();
    cr_log_info("GrowthBook run cases through experiments_pick: %zu of %zu", ran, total);
    cr_assert_eq(failed, 0, "%zu of %zu run cases failed", failed, ran);
    cr_assert_geq(ran, 50, "only %zu run cases applied", ran);
}

/* ---------------------------------------------------------------------- */
/* promod's additions: holdout, forced, winner, several experiments       */

static struct experiments_pick pick_for(const struct fake_gen *f, int camp, const char *cust)
{
    const struct experiments_view *v = experiments_view(&f->g);
    cr_assert(v);
    struct experiments_who who = { cust, NULL, 0, NULL, 0 };
    struct experiments_pick pk;
    cr_assert_eq(experiments_pick(v, camp, &who, NULL, &pk), 0);
    return pk;
}

Test(experiments, holdout_is_a_share_independent_of_the_variant)
{
    struct experiments_def *d = parse_ok("{\"id\":\"h\",\"campaign_id\":\"c0\",\"holdout\":0.2,"
                                         "\"variants\":[{\"id\":\"v0\",\"weight\":0.3},"
                                         "{\"id\":\"v1\",\"weight\":0.7}]}");
    struct fake_gen f;
    fake_gen(&f, 1, 2);
    publish1(d, 7);
    const int N = 20000;
    int held = 0, held_by[2] = { 0, 0 }, in_by[2] = { 0, 0 };
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "cust-%d", i);
        struct experiments_pick pk = pick_for(&f, 0, id);
        cr_assert(pk.in_experiment);
        /* the variant GrowthBook would give, whatever the holdout */
        double h;
        cr_assert_eq(assign_hash("h", 1, id, strlen(id), 2, &h), 0);
        int gb = assign_choose(h, (const double(*)[2])d->ranges, 2);
        in_by[gb]++;
        if (pk.outcome == EXPERIMENTS_HOLD) {
            held++;
            held_by[gb]++;
            cr_assert_str_eq(pk.variant_id, EXPERIMENTS_HOLDOUT);
        } else {
            cr_assert_eq(pk.variant, gb, "%s: outside the holdout the variant is GrowthBook's", id);
        }
        cr_assert(pk.log, "no stored exposure: a first one");
    }
    /* 20 % +- 4 standard deviations; the same share within each variant */
    double sd = sqrt(0.2 * 0.8 / N);
    cr_assert(fabs((double)held / N - 0.2) < 4 * sd, "held %d of %d", held, N);
    for (int v = 0; v < 2; v++) {
        double s = sqrt(0.2 * 0.8 / in_by[v]);
        cr_assert(fabs((double)held_by[v] / in_by[v] - 0.2) < 4 * s,
                  "variant %d: %d of %d held (the holdout must not depend on the variant)", v,
                  held_by[v], in_by[v]);
    }
    experiments_def_unref(d);
    experiments_clear();
}

Test(experiments, forced_winner_and_disjoint_namespaces)
{
    struct experiments_def *a =
        parse_ok("{\"id\":\"a\",\"campaign_id\":\"c0\",\"variants\":[\"v0\",\"v1\"],"
                 "\"namespace\":[\"ns\",0,0.5],"
                 "\"forced\":[{\"condition\":{\"tier\":\"staff\"},\"variant\":\"v1\"}]}");
    struct experiments_def *b = parse_ok("{\"id\":\"b\",\"campaign_id\":\"c0\",\"variants\":[\"v0\",\"v1\",\"v2\"],"
                                         "\"namespace\":[\"ns\",0.5,1]}");
    struct experiments_def *w = parse_ok("{\"id\":\"w\",\"campaign_id\":\"c1\",\"variants\":[\"v0\",\"v2\"]}");
    struct experiments_live live[3] = { { a, 1, EXP_RUNNING, -1, 0 },
                                        { b, 2, EXP_RUNNING, -1, 0 },
                                        { w, 3, EXP_CONCLUDED, 1, 0 } };
    cr_assert_eq(experiments_publish(live, 3), 0);
    struct fake_gen f;
    fake_gen(&f, 2, 3);
    int in_a = 0, in_b = 0;
    for (int i = 0; i < 2000; i++) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        struct experiments_pick pk = pick_for(&f, 0, id);
        int ina = assign_in_namespace(id, strlen(id), "ns", 2, 0, 0.5);
        cr_assert_str_eq(pk.exp_id, ina ? "a" : "b", "%s: the namespace decides the experiment", id);
        in_a += ina;
        in_b += !ina;
        pk = pick_for(&f, 1, id);
        cr_assert_str_eq(pk.why, "winner");
        cr_assert_eq(pk.variant, 2, "the winner v2 is the campaign's variant index 2");
        cr_assert_eq(pk.log, 0, "a concluded experiment logs nothing");
    }
    cr_assert(in_a > 800 && in_b > 800);
    /* forced by condition: a staff profile gets v1, not counted */
    json_t *p = json_pack("{s:s}", "tier", "staff");
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(p, &mp), 0);
    const char *id = NULL;
    char buf[32];
    for (int i = 0; !id; i++) { /* a customer in a's half */
        snprintf(buf, sizeof buf, "u%d", i);
        if (assign_in_namespace(buf, strlen(buf), "ns", 2, 0, 0.5))
            id = buf;
    }
    struct experiments_who who = { id, NULL, 0, mp.p, mp.len };
    struct experiments_pick pk;
    cr_assert_eq(experiments_pick(experiments_view(&f.g), 0, &who, NULL, &pk), 0);
    cr_assert_str_eq(pk.why, "forced");
    cr_assert_str_eq(pk.variant_id, "v1");
    cr_assert_eq(pk.in_experiment, 0);
    cr_assert_eq(pk.log, 0);
    buf_free(&mp);
    json_decref(p);
    /* a campaign without the experiment's variant: refused, served as usual */
    struct fake_gen small;
    fake_gen(&small, 2, 2); /* no v2 */
    struct experiments_who who2 = { "u1", NULL, 0, NULL, 0 };
    cr_assert_eq(experiments_pick(experiments_view(&small.g), 1, &who2, NULL, &pk), ERR_INVAL);
    experiments_def_unref(a);
    experiments_def_unref(b);
    experiments_def_unref(w);
    experiments_clear();
    cr_assert_null(experiments_view(&f.g), "nothing published: no view");
}

/* ---------------------------------------------------------------------- */
/* the exposure log on a real store                                       */

static char sdir[256];
static struct store *st;

static void store_setup(void)
{
    log_set_level(LOG_ERROR);
    tfx_tmpdir(sdir, sizeof sdir);
    struct store_opts o = { .dir = sdir, .sync_interval_ms = 50 };
    cr_assert_eq(store_open(&o, &st), 0);
    cr_assert_eq(experiments_expo_start(st), 0);
}

static void store_teardown(void)
{
    experiments_expo_stop();
    store_close(st);
    tfx_rmrf(sdir);
}

struct count_ctx {
    int n;
    char last[64];
};

static int count_cb(void *ud, const struct experiments_exposure *x)
{
    struct count_ctx *c = ud;
    c->n++;
    snprintf(c->last, sizeof c->last, "%s", x->customer);
    return 0;
}

/* A single exposure is stored on the writer's own tick, not only when the
 * queue fills or someone flushes (a quiet site loses nothing queued for
 * long when the process is killed). */
Test(experiments, a_lone_exposure_is_written_without_a_flush, .init = store_setup,
     .fini = store_teardown)
{
    experiments_expose(3, "A", "lonely", "d-1", 42);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct store_txn *tx;
        cr_assert_eq(store_rtxn_begin(st, &tx), 0);
        struct experiments_exposure x;
        int rc = experiments_expo_get(tx, 3, "lonely", &x);
        store_txn_end(tx);
        if (rc == 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        cr_assert(t.tv_sec - t0.tv_sec < 10, "the exposure was never written");
        usleep(5000); /* polling a condition with a deadline */
    }
}

Test(experiments, first_exposure_wins_and_erasure_reaches_it, .init = store_setup,
     .fini = store_teardown)
{
    for (int i = 0; i < 3000; i++) {
        char c[32];
        snprintf(c, sizeof c, "c%04d", i % 1000);
        /* each customer three times: B first, then A twice */
        experiments_expose(5, i < 1000 ? "B" : "A", c, i < 1000 ? "d-first" : "d-later", 1000 + i);
    }
    experiments_expose(9, "holdout", "c0001", "d-x", 77);
    cr_assert_eq(experiments_expo_flush(), 0);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    struct experiments_exposure x;
    cr_assert_eq(experiments_expo_get(t, 5, "c0042", &x), 0);
    cr_assert_str_eq(x.variant, "B", "the first exposure is kept");
    cr_assert_str_eq(x.decision_id, "d-first");
    cr_assert_eq(x.ts_ms, 1042);
    struct count_ctx cc = { 0, "" };
    cr_assert_eq(experiments_expo_scan(t, 5, count_cb, &cc), 0);
    cr_assert_eq(cc.n, 1000, "one exposure per customer");
    json_t *ex = experiments_expo_customer(t, "c0001");
    cr_assert_eq(json_array_size(ex), 2, "two experiments");
    json_decref(ex);
    store_txn_end(t);

    /* a sticky experiment keeps the stored variant whatever the hash says */
    struct experiments_def *d = parse_ok("{\"id\":\"s\",\"campaign_id\":\"c0\",\"sticky\":true,"
                                         "\"variants\":[{\"id\":\"A\",\"weight\":0.01},"
                                         "{\"id\":\"B\",\"weight\":0.99}]}");
    struct fake_gen f;
    fake_gen(&f, 1, 2);
    snprintf(f.vids[0][0], 16, "A");
    snprintf(f.vids[0][1], 16, "B");
    publish1(d, 5);
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    int moved = 0;
    for (int i = 1000; i < 1100; i++) { /* stored as A, hashed mostly to B */
        char c[32];
        snprintf(c, sizeof c, "c%04d", i % 1000);
        struct experiments_who who = { c, NULL, 0, NULL, 0 };
        struct experiments_pick pk;
        cr_assert_eq(experiments_pick(experiments_view(&f.g), 0, &who, t, &pk), 0);
        cr_assert_str_eq(pk.variant_id, "B", "stored first exposure B");
        cr_assert_str_eq(pk.why, "sticky");
        cr_assert_eq(pk.log, 0, "already exposed: not logged again");
        moved += pk.variant != 1;
    }
    struct experiments_who nw = { "never-seen", NULL, 0, NULL, 0 };
    struct experiments_pick pk;
    cr_assert_eq(experiments_pick(experiments_view(&f.g), 0, &nw, t, &pk), 0);
    cr_assert_eq(pk.log, 1);
    store_txn_end(t);
    experiments_clear();
    experiments_def_unref(d);
    cr_assert_eq(moved, 0);

    struct store_txn *w;
    cr_assert_eq(store_wtxn_begin(st, &w), 0);
    cr_assert_eq(experiments_expo_erase_customer(w, "c0001"), 2);
    cr_assert_eq(store_txn_commit(w, STORE_DURABLE), 0);
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(experiments_expo_get(t, 5, "c0001", &x), ERR_NOTFOUND);
    cr_assert_eq(experiments_expo_get(t, 9, "c0001", &x), ERR_NOTFOUND);
    cr_assert_eq(experiments_expo_get(t, 5, "c0002", &x), 0, "others keep theirs");
    store_txn_end(t);
}
