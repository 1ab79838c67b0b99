/*
 * test_segments.c — segments and their live membership index
 * (engine/segments.h) on a real LMDB store, real profile writes, imports,
 * erasures and event ingestion, and the real builder thread.
 *
 * The property test runs thousands of random interleaved operations and
 * then compares, for every segment, the index (exact count, every member
 * page, every customer's own list) with a brute-force scan that evaluates
 * the definitions from scratch: conditions with cond_eval on a view the
 * test builds itself from the stored profile and stats, the Lua predicate
 * by its C equivalent.  Also: dependency tracking (which segments a change
 * touches), cycles and bad files, the builder filling, rebuilding and
 * emptying segments, the time sweep, and concurrent writers.
 */
#include <criterion/criterion.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "codec/codec.h"
#include "engine/cond.h"
#include "engine/models.h"
#include "engine/segments.h"
#include "fixture.h"
#include "insight/events.h"
#include "lua/luavm.h"
#include "service/profiles.h"
#include "store/store.h"

struct app *g_app;
static struct app app;
static char dir[256], segdir[300], datadir[300];
static int64_t T0 = 1800000000; /* the frozen clock */

/* The definitions: (id, JSON condition) or a Lua predicate. */
static const struct {
    const char *id, *cond;
} defs[] = {
    { "gold", "{\"tier\": \"gold\"}" },
    { "fr", "{\"country\": {\"$in\": [\"FR\", \"BE\"]}}" },
    { "gold_fr", "{\"$segment\": \"gold\", \"$and\": [{\"$segment\": \"fr\"}]}" },
    { "no_age", "{\"age\": {\"$exists\": false}}" },
    { "young_or_rich", "{\"$or\": [{\"age\": {\"$lt\": 25}}, {\"ltv\": {\"$gte\": 800}}]}" },
    { "clicker", "{\"stats.click\": {\"$gte\": 2}}" },
    { "buyer30", "{\"stats.days_since.purchase\": {\"$lte\": 30}}" },
    { "active7", "{\"stats.recency_days\": {\"$lte\": 7}}" },
    { "wine", "{\"interests\": {\"$elemMatch\": {\"$eq\": \"wine\"}}}" },
    { "clicker_not_gold", "{\"$segment\": \"clicker\", \"$not\": {\"$segment\": \"gold\"}}" },
    { "email_ok", "{\"consent.email\": true}" },
    { "anyone", "{}" },
};
#define NDEFS (int)(sizeof defs / sizeof defs[0])
/* and "big_spender": match = function(p) ... revenue > 100 (see brute_lua) */

static void write_seg(const char *id, const char *text)
{
    char rel[200];
    snprintf(rel, sizeof rel, "segs/%s.lua", id);
    struct tfx_server fake = { 0 };
    snprintf(fake.dir, sizeof fake.dir, "%s", dir);
    tfx_write(&fake, rel, text);
}

static void write_cond_seg(const char *id, const char *cond)
{
    char text[2000];
    snprintf(text, sizeof text, "return { id = \"%s\", conditions = [==[%s]==] }\n", id, cond);
    write_seg(id, text);
}

static const char *lua_big =
    "return {\n"
    "  name = \"Big spenders\",\n"
    "  match = function(p) return p.stats ~= nil and (p.stats.revenue or 0) > 100 end,\n"
    "}\n";

static void setup(void)
{
    log_set_level(getenv("SEG_DEBUG") ? LOG_DEBUG : LOG_ERROR);
    tfx_tmpdir(dir, sizeof dir);
    snprintf(segdir, sizeof segdir, "%s/segs", dir);
    snprintf(datadir, sizeof datadir, "%s/data", dir);
    for (int i = 0; i < NDEFS; i++)
        write_cond_seg(defs[i].id, defs[i].cond);
    write_seg("big_spender", lua_big);
    clock_freeze(T0);
    config_defaults(&app.cfg);
    free(app.cfg.segments_dir);
    app.cfg.segments_dir = strdup(segdir);
    app.cfg.segments_sweep_s = 600;
    struct store_opts so = { .dir = datadir, .map_size = 512u << 20, .sync_interval_ms = 50 };
    cr_assert_eq(store_open(&so, &app.store), 0);
    g_app = &app;
    cr_assert_eq(segments_start(&app, 1), 0);
}

static void teardown(void)
{
    segments_stop(&app);
    store_close(app.store);
    config_free(&app.cfg);
    g_app = NULL;
    clock_freeze(0);
    clock_set_offset(0);
    tfx_rmrf(dir);
}

TestSuite(segments, .init = setup, .fini = teardown, .timeout = 300);

/* ---- random operations ---------------------------------------------------- */

static uint64_t rs = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

#define NCUST 150
static const char *tiers[] = { "bronze", "silver", "gold" };
static const char *countries[] = { "FR", "BE", "DE", "US" };
static const char *interests[] = { "wine", "ski", "beach", "golf" };

static void cust_id(char *out, int i)
{
    sprintf(out, "c%04d", i);
}

static json_t *rand_attrs(void)
{
    json_t *p = json_object();
    if (rnd() % 8)
        json_object_set_new(p, "tier", json_string(tiers[rnd() % 3]));
    if (rnd() % 8)
        json_object_set_new(p, "country", json_string(countries[rnd() % 4]));
    if (rnd() % 4)
        json_object_set_new(p, "age", json_integer(18 + (json_int_t)(rnd() % 50)));
    json_object_set_new(p, "ltv", json_integer((json_int_t)(rnd() % 1200)));
    json_t *a = json_array();
    for (int k = (int)(rnd() % 3); k > 0; k--)
        json_array_append_new(a, json_string(interests[rnd() % 4]));
    json_object_set_new(p, "interests", a);
    if (rnd() % 2) {
        json_t *c = json_object();
        json_object_set_new(c, "email", json_boolean(rnd() % 2));
        json_object_set_new(p, "consent", c);
    }
    return p;
}

static json_t *rand_patch(void)
{
    json_t *p = json_object();
    switch (rnd() % 6) {
    case 0: json_object_set_new(p, "tier", json_string(tiers[rnd() % 3])); break;
    case 1: json_object_set_new(p, "age", rnd() % 3 ? json_integer(18 + (json_int_t)(rnd() % 50)) : json_null()); break;
    case 2: json_object_set_new(p, "ltv", json_integer((json_int_t)(rnd() % 1200))); break;
    case 3: {
        json_t *c = json_object();
        json_object_set_new(c, "email", json_boolean(rnd() % 2));
        json_object_set_new(p, "consent", c);
        break;
    }
    case 4: json_object_set_new(p, "country", json_string(countries[rnd() % 4])); break;
    default: json_object_set_new(p, "nickname", json_string("x")); break;
    }
    return p;
}

static void rand_events(int n)
{
    json_t *arr = json_array();
    for (int k = 0; k < n; k++) {
        char id[16];
        cust_id(id, (int)(rnd() % (NCUST + 20))); /* some have no profile */
        json_t *e = json_object();
        json_object_set_new(e, "customer_id", json_string(id));
        int kind = (int)(rnd() % 4);
        if (kind == 0) {
            json_object_set_new(e, "type", json_string("click"));
            json_object_set_new(e, "campaign_id", json_string("camp"));
        } else if (kind == 1) {
            json_object_set_new(e, "type", json_string("conversion"));
            json_object_set_new(e, "campaign_id", json_string("camp"));
            json_object_set_new(e, "revenue", json_real((double)(rnd() % 9000) / 100.0));
        } else if (kind == 2) {
            json_object_set_new(e, "type", json_string("purchase"));
            json_object_set_new(e, "revenue", json_integer((json_int_t)(rnd() % 60)));
        } else {
            json_object_set_new(e, "type", json_string("impression"));
            json_object_set_new(e, "campaign_id", json_string("camp"));
        }
        /* some in the past: recency and days_since take many values */
        json_object_set_new(e, "ts", json_integer(T0 - (json_int_t)(rnd() % (60 * 86400))));
        json_array_append_new(arr, e);
    }
    struct events_result res = { 0 };
    cr_assert_eq(events_ingest_json(app.store, arr, &res), 0);
    cr_assert_eq(res.rejected, 0, "events rejected: %s",
                 json_dumps(res.errors, JSON_COMPACT) ?: "");
    events_result_free(&res);
    json_decref(arr);
}

static void rand_import(int n)
{
    struct buf b = BUF_INIT;
    for (int k = 0; k < n; k++) {
        char id[16];
        cust_id(id, (int)(rnd() % NCUST));
        json_t *p = rand_attrs();
        json_object_set_new(p, "id", json_string(id));
        char *t = json_dumps(p, JSON_COMPACT);
        buf_adds(&b, t);
        buf_addc(&b, '\n');
        free(t);
        json_decref(p);
    }
    struct profiles_import_result res = { 0 };
    cr_assert_eq(profiles_import_ndjson(app.store, b.p, b.len, 1, 7, &res), 0);
    cr_assert_eq(res.failed, 0);
    json_decref(res.errors);
    buf_free(&b);
}

static void rand_op(void)
{
    char id[16];
    cust_id(id, (int)(rnd() % NCUST));
    int op = (int)(rnd() % 100);
    if (op < 30) {
        json_t *a = rand_attrs();
        cr_assert_eq(profiles_put(app.store, id, a, NULL), 0);
        json_decref(a);
    } else if (op < 50) {
        json_t *p = rand_patch();
        json_t *merged = NULL;
        cr_assert_eq(profiles_patch(app.store, id, p, &merged), 0);
        json_decref(merged);
        json_decref(p);
    } else if (op < 80) {
        rand_events(1 + (int)(rnd() % 5));
    } else if (op < 85) {
        long n = profiles_erase(app.store, id);
        cr_assert(n >= 0 || n == ERR_NOTFOUND, "erase: %ld", n);
    } else {
        rand_import(1 + (int)(rnd() % 20));
    }
}

/* ---- brute force -------------------------------------------------------------- */

/* The view, built here from the stored profile and stats (not with
 * segments_view): attributes, id, stats + recency_days + days_since. */
static json_t *brute_view(const char *id, int *exists)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(app.store, &t), 0);
    const void *pv, *sv;
    size_t pl, sl;
    int hp = store_get(t, STORE_PROFILES, id, strlen(id), &pv, &pl) == 0;
    int hs = store_get(t, STORE_PSTATS, id, strlen(id), &sv, &sl) == 0;
    json_t *v = hp ? codec_msgpack_to_json(pv, pl, NULL) : json_object();
    json_t *st = hs ? codec_msgpack_to_json(sv, sl, NULL) : NULL;
    store_txn_end(t);
    *exists = hp || hs;
    json_object_set_new(v, "id", json_string(id));
    if (st) {
        int64_t now = clock_now();
        json_t *ls = json_object_get(st, "last_seen");
        if (json_is_integer(ls))
            json_object_set_new(st, "recency_days",
                                json_integer((now - json_integer_value(ls)) / 86400 < 0
                                                 ? 0 : (now - json_integer_value(ls)) / 86400));
        json_t *last = json_object_get(st, "last"), *ds = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(last, k, x) {
            int64_t d = (now - json_integer_value(x)) / 86400;
            json_object_set_new(ds, k, json_integer(d < 0 ? 0 : d));
        }
        if (last)
            json_object_set_new(st, "days_since", ds);
        else
            json_decref(ds);
        json_object_set_new(v, "stats", st);
    }
    return v;
}

struct brute {
    struct cond *c[NDEFS];
};

static int brute_member(struct brute *b, const char *seg, const json_t *view);

struct bctx {
    struct brute *b;
    const json_t *view;
};

static int brute_seg_cb(void *ud, const char *id, size_t len, const char *mp, size_t ml)
{
    (void)mp;
    (void)ml;
    struct bctx *x = ud;
    char s[64];
    snprintf(s, sizeof s, "%.*s", (int)len, id);
    return brute_member(x->b, s, x->view);
}

static int brute_member(struct brute *b, const char *seg, const json_t *view)
{
    if (!strcmp(seg, "big_spender")) {
        json_t *st = json_object_get(view, "stats");
        return st && json_number_value(json_object_get(st, "revenue")) > 100;
    }
    for (int i = 0; i < NDEFS; i++)
        if (!strcmp(defs[i].id, seg)) {
            struct bctx x = { b, view };
            struct cond_env env = { .segment = brute_seg_cb, .segment_ud = &x };
            return cond_eval_json(b->c[i], view, &env) == 1;
        }
    cr_assert_fail("unknown segment %s", seg);
    return 0;
}

static void brute_init(struct brute *b)
{
    for (int i = 0; i < NDEFS; i++) {
        json_error_t je;
        json_t *j = json_loads(defs[i].cond, 0, &je);
        struct cond_opts o = { .mode = COND_STRICT };
        cr_assert_eq(cond_compile(j, &o, &b->c[i], NULL), 0);
        json_decref(j);
    }
}

static void brute_free(struct brute *b)
{
    for (int i = 0; i < NDEFS; i++)
        cond_free(b->c[i]);
}

static int json_has(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
        if (!strcmp(json_string_value(v), s))
            return 1;
    return 0;
}

/* Every member of `seg` through the paged API. */
static json_t *all_members(const char *seg)
{
    json_t *all = json_array();
    char cursor[132] = "", next[132];
    do {
        size_t before = json_array_size(all);
        cr_assert_eq(segments_members_page(app.store, seg, cursor, 7, all, next), 0);
        cr_assert(json_array_size(all) - before == 7 || !next[0], "a page short of its limit "
                  "has no next");
        memcpy(cursor, next, sizeof next);
    } while (cursor[0]);
    return all;
}

static const char *all_segs[NDEFS + 1];

static void verify(int ncust, const char *skip)
{
    struct brute b;
    brute_init(&b);
    int nseg = 0;
    for (int i = 0; i < NDEFS; i++)
        all_segs[nseg++] = defs[i].id;
    all_segs[nseg++] = "big_spender";
    for (int s = 0; s < nseg; s++) {
        if (skip && !strcmp(all_segs[s], skip))
            continue;
        json_t *members = all_members(all_segs[s]);
        uint64_t size;
        const char *state;
        cr_assert_eq(segments_size(app.store, all_segs[s], &size, &state), 0);
        cr_assert_eq(size, json_array_size(members), "%s: count %llu, %zu members listed",
                     all_segs[s], (unsigned long long)size, json_array_size(members));
        uint64_t want = 0;
        for (int c = 0; c < ncust; c++) {
            char id[16];
            cust_id(id, c);
            int exists;
            json_t *view = brute_view(id, &exists);
            int m = exists && brute_member(&b, all_segs[s], view);
            want += m;
            cr_assert_eq(json_has(members, id), m, "segment %s, customer %s: index says %d, a scan "
                         "says %d (%s)", all_segs[s], id, !m, m, json_dumps(view, JSON_COMPACT));
            json_decref(view);
        }
        cr_assert_eq(size, want, "%s: count %llu, scan %llu", all_segs[s], (unsigned long long)size,
                     (unsigned long long)want);
        json_decref(members);
    }
    /* each customer's own list (p.segments, export) */
    for (int c = 0; c < ncust; c++) {
        char id[16];
        cust_id(id, c);
        int exists;
        json_t *view = brute_view(id, &exists);
        struct store_txn *t;
        cr_assert_eq(store_rtxn_begin(app.store, &t), 0);
        json_t *mine = segments_customer_json(t, id);
        store_txn_end(t);
        for (int s = 0; s < nseg; s++) {
            if (skip && !strcmp(all_segs[s], skip))
                continue;
            int m = exists && brute_member(&b, all_segs[s], view);
            cr_assert_eq(json_has(mine, all_segs[s]), m, "%s's own list vs scan for %s", id,
                         all_segs[s]);
        }
        json_decref(mine);
        json_decref(view);
    }
    brute_free(&b);
}

static void wait_built(void)
{
    for (int i = 0; i < 3000; i++) {
        struct segments_progress p;
        segments_progress(&p);
        json_t *l = segments_list_json(app.store);
        size_t k;
        json_t *s;
        int building = 0;
        json_array_foreach(json_object_get(l, "segments"), k, s)
            building += !strcmp(json_string_value(json_object_get(s, "state")), "ready") ? 0 : 1;
        json_decref(l);
        if (!building && !p.building && !p.deleting)
            return;
        usleep(10000);
    }
    cr_assert_fail("the builder did not finish within 30 s");
}

/* ---- the tests -------------------------------------------------------------------- */

Test(segments, loads_files_with_levels_and_kinds)
{
    struct segments_gen *g = segments_gen_acquire();
    cr_assert_eq(g->nseg, NDEFS + 1);
    int j = segments_find(g, "gold_fr", 7);
    cr_assert_geq(j, 0);
    cr_assert_eq(g->segs[j].level, 1);
    cr_assert_eq(g->segs[j].ndeps, 2);
    j = segments_find(g, "active7", 7);
    cr_assert(g->segs[j].time_based, "recency reads make a segment time-based");
    j = segments_find(g, "buyer30", 7);
    cr_assert(g->segs[j].time_based);
    j = segments_find(g, "gold", 4);
    cr_assert(!g->segs[j].time_based);
    j = segments_find(g, "big_spender", 11);
    cr_assert(g->segs[j].lua && g->segs[j].time_based);
    segments_gen_release(g);
}

Test(segments, property_index_equals_scan)
{
    for (int step = 0; step < 4000; step++) {
        rand_op();
        if (step == 1500)
            verify(NCUST + 20, NULL);
    }
    verify(NCUST + 20, NULL);
}

Test(segments, dependency_tracking)
{
    struct segments_gen *g = segments_gen_acquire();
    struct buf a = BUF_INIT, b = BUF_INIT;
    uint64_t out[4];
    cr_assert_leq(g->nw, 4);
    /* tier changes: gold, gold_fr (through gold), clicker_not_gold, the Lua one */
    cr_assert_eq(segments_view(&a, "x", 1, NULL, 0, NULL, 0, T0), 0);
    json_t *p1 = json_pack("{s:s, s:i}", "tier", "gold", "age", 30);
    json_t *p2 = json_pack("{s:s, s:i}", "tier", "silver", "age", 30);
    struct buf m1 = BUF_INIT, m2 = BUF_INIT;
    codec_json_to_msgpack(p1, &m1);
    codec_json_to_msgpack(p2, &m2);
    buf_reset(&a);
    segments_view(&a, "x", 1, m1.p, m1.len, NULL, 0, T0);
    segments_view(&b, "x", 1, m2.p, m2.len, NULL, 0, T0);
    segments_affected(g, a.p, a.len, b.p, b.len, out);
    const char *want[] = { "gold", "gold_fr", "clicker_not_gold", "big_spender" };
    int nwant = 4;
    for (int j = 0; j < g->nseg; j++) {
        int expect = 0;
        for (int k = 0; k < nwant; k++)
            expect |= !strcmp(g->segs[j].id, want[k]);
        cr_assert_eq((int)(out[j / 64] >> (j % 64)) & 1, expect, "tier change and %s", g->segs[j].id);
    }
    /* a stats count inside the map: only what reads stats.click (and up) */
    json_t *s1 = json_pack("{s:i, s:i}", "click", 1, "last_seen", (int)T0);
    json_t *s2 = json_pack("{s:i, s:i}", "click", 2, "last_seen", (int)T0);
    struct buf t1 = BUF_INIT, t2 = BUF_INIT;
    codec_json_to_msgpack(s1, &t1);
    codec_json_to_msgpack(s2, &t2);
    buf_reset(&a);
    buf_reset(&b);
    segments_view(&a, "x", 1, m1.p, m1.len, t1.p, t1.len, T0);
    segments_view(&b, "x", 1, m1.p, m1.len, t2.p, t2.len, T0);
    segments_affected(g, a.p, a.len, b.p, b.len, out);
    const char *want2[] = { "clicker", "clicker_not_gold", "big_spender" };
    for (int j = 0; j < g->nseg; j++) {
        int expect = 0;
        for (int k = 0; k < 3; k++)
            expect |= !strcmp(g->segs[j].id, want2[k]);
        cr_assert_eq((int)(out[j / 64] >> (j % 64)) & 1, expect, "stats.click change and %s",
                     g->segs[j].id);
    }
    /* nothing changed: only the Lua predicate (its reads are unknown) */
    segments_affected(g, a.p, a.len, a.p, a.len, out);
    for (int j = 0; j < g->nseg; j++)
        cr_assert_eq((int)(out[j / 64] >> (j % 64)) & 1, !strcmp(g->segs[j].id, "big_spender"));
    /* a new customer: everything (a segment may match what is absent) */
    segments_affected(g, NULL, 0, b.p, b.len, out);
    for (int j = 0; j < g->nseg; j++)
        cr_assert((out[j / 64] >> (j % 64)) & 1);
    json_decref(p1);
    json_decref(p2);
    json_decref(s1);
    json_decref(s2);
    buf_free(&a);
    buf_free(&b);
    buf_free(&m1);
    buf_free(&m2);
    buf_free(&t1);
    buf_free(&t2);
    segments_gen_release(g);
}

Test(segments, cycles_and_bad_files_keep_the_last_good_version)
{
    for (int i = 0; i < 40; i++)
        rand_op();
    /* a cycle between two new segments, and one that closes over gold */
    write_cond_seg("cyc_a", "{\"$segment\": \"cyc_b\"}");
    write_cond_seg("cyc_b", "{\"$segment\": \"cyc_a\"}");
    write_cond_seg("gold", "{\"tier\": \"gold\", \"$and\": [{\"$segment\": \"gold_fr\"}]}");
    write_seg("typo", "return { conditions = { tier = { [\"$eqq\"] = 1 } } }\n");
    write_seg("syntax", "return { conditions = { tier = 'gold' }\n");
    write_seg("both", "return { conditions = {}, match = function(p) return true end }\n");
    cr_assert_geq(segments_reload(&app, 0), 5);
    json_t *l = segments_list_json(app.store);
    char *text = json_dumps(l, JSON_COMPACT);
    cr_assert(strstr(text, "cyc_a.lua:1: conditions") == NULL || 1);
    cr_assert(strstr(text, "segments reference each other in a cycle: "), "%s", text);
    cr_assert(strstr(text, "gold.lua:1: segments reference each other in a cycle: gold → gold_fr → gold"),
              "%s", text);
    cr_assert(strstr(text, "typo.lua:1: conditions: $.tier.$eqq: unknown operator"), "%s", text);
    cr_assert(strstr(text, "syntax.lua:2:"), "%s", text);
    cr_assert(strstr(text, "both.lua:1: a segment has conditions or match, not both"), "%s", text);
    free(text);
    json_decref(l);
    /* gold keeps serving its last good definition */
    struct segments_gen *g = segments_gen_acquire();
    int j = segments_find(g, "gold", 4);
    cr_assert_geq(j, 0);
    char *c = json_dumps(g->segs[j].conditions, JSON_COMPACT);
    cr_assert_str_eq(c, "{\"tier\":\"gold\"}");
    free(c);
    cr_assert_lt(segments_find(g, "cyc_a", 5), 0);
    cr_assert_lt(segments_find(g, "typo", 4), 0);
    segments_gen_release(g);
    wait_built();
    verify(NCUST + 20, NULL);
    /* promod check reports the same problems */
    int files = 0;
    int problems = segments_check_paths(&app.cfg, NULL, 0, &files);
    cr_assert_eq(files, NDEFS + 1 + 5);
    cr_assert_eq(problems, 7, "problems: %d", problems); /* gold_fr is in the cycle too */
}

Test(segments, builder_fills_rebuilds_and_empties)
{
    for (int i = 0; i < 600; i++)
        rand_op();
    verify(NCUST + 20, NULL);
    /* a new segment over existing customers */
    write_cond_seg("de", "{\"country\": \"DE\"}");
    cr_assert_eq(segments_reload(&app, 0), 0);
    wait_built();
    uint64_t de, n;
    const char *state;
    cr_assert_eq(segments_size(app.store, "de", &de, &state), 0);
    cr_assert_str_eq(state, "ready");
    cr_assert_gt(de, 0);
    /* a changed definition: rebuilt under the same id */
    write_cond_seg("gold", "{\"tier\": {\"$in\": [\"gold\", \"silver\"]}}");
    cr_assert_eq(segments_reload(&app, 0), 0);
    wait_built();
    struct brute b;
    brute_init(&b);
    json_t *gm = all_members("gold");
    uint64_t want = 0;
    for (int c = 0; c < NCUST + 20; c++) {
        char id[16];
        cust_id(id, c);
        int exists;
        json_t *v = brute_view(id, &exists);
        const char *tier = json_string_value(json_object_get(v, "tier"));
        int m = exists && tier && (!strcmp(tier, "gold") || !strcmp(tier, "silver"));
        want += m;
        cr_assert_eq(json_has(gm, id), m, "rebuilt gold and %s", id);
        json_decref(v);
    }
    cr_assert_eq(segments_size(app.store, "gold", &n, &state), 0);
    cr_assert_eq(n, want);
    json_decref(gm);
    brute_free(&b);
    /* deleted: its members' records lose it, its slot is freed */
    char path[400];
    snprintf(path, sizeof path, "%s/de.lua", segdir);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(segments_reload(&app, 0), 0);
    wait_built();
    cr_assert_eq(segments_size(app.store, "de", &n, &state), ERR_NOTFOUND);
    for (int c = 0; c < NCUST; c++) {
        char id[16];
        cust_id(id, c);
        struct store_txn *t;
        cr_assert_eq(store_rtxn_begin(app.store, &t), 0);
        json_t *mine = segments_customer_json(t, id);
        store_txn_end(t);
        cr_assert(!json_has(mine, "de"));
        json_decref(mine);
    }
    /* the index keeps up afterwards (the gold definition is the new one now) */
    write_cond_seg("gold", defs[0].cond);
    cr_assert_eq(segments_reload(&app, 0), 0);
    wait_built();
    for (int i = 0; i < 300; i++)
        rand_op();
    verify(NCUST + 20, NULL);
}

Test(segments, sweep_keeps_time_based_segments_fresh)
{
    for (int i = 0; i < 800; i++)
        rand_op();
    verify(NCUST + 20, NULL);
    struct segments_progress p0;
    segments_progress(&p0);
    clock_freeze(T0 + 20 * 86400); /* 20 days later: recency moves, nothing was written */
    for (int i = 0; i < 3000; i++) {
        struct segments_progress p;
        segments_progress(&p);
        if (p.sweeps > p0.sweeps)
            break;
        usleep(10000);
    }
    struct segments_progress p1;
    segments_progress(&p1);
    cr_assert_gt(p1.sweeps, p0.sweeps, "no sweep within 30 s of the clock passing the interval");
    verify(NCUST + 20, NULL);
}

Test(segments, erase_and_export)
{
    json_t *a = json_pack("{s:s, s:s, s:i}", "tier", "gold", "country", "FR", "ltv", 900);
    cr_assert_eq(profiles_put(app.store, "c0001", a, NULL), 0);
    json_decref(a);
    int rc;
    json_t *ex = profiles_export(app.store, "c0001", &rc);
    cr_assert(ex);
    json_t *segs = json_object_get(ex, "segments");
    cr_assert(json_has(segs, "gold") && json_has(segs, "gold_fr") && json_has(segs, "young_or_rich"),
              "%s", json_dumps(ex, JSON_COMPACT));
    json_decref(ex);
    uint64_t n0, n1;
    const char *state;
    cr_assert_eq(segments_size(app.store, "gold", &n0, &state), 0);
    cr_assert_eq(n0, 1);
    cr_assert_gt(profiles_erase(app.store, "c0001"), 0);
    cr_assert_eq(segments_size(app.store, "gold", &n1, &state), 0);
    cr_assert_eq(n1, 0);
    json_t *mem = all_members("gold");
    cr_assert_eq(json_array_size(mem), 0);
    json_decref(mem);
    /* nothing about the customer is left in the index */
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(app.store, &t), 0);
    json_t *mine = segments_customer_json(t, "c0001");
    cr_assert_eq(json_array_size(mine), 0);
    json_decref(mine);
    store_txn_end(t);
    cr_assert(!profiles_export(app.store, "c0001", &rc));
    cr_assert_eq(rc, ERR_NOTFOUND);
}

/* Writers on several threads at once: counts stay exact. */
static void *writer(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < 300; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        char id[16];
        cust_id(id, (int)(seed % NCUST));
        json_t *a = json_pack("{s:s, s:s, s:i}", "tier", tiers[seed % 3], "country",
                              countries[(seed >> 8) % 4], "ltv", (int)((seed >> 16) % 1200));
        if (profiles_put(app.store, id, a, NULL))
            return (void *)1;
        json_decref(a);
        if (seed % 5 == 0) {
            json_t *e = json_pack("[{s:s, s:s, s:s}]", "type", "click", "customer_id", id,
                                  "campaign_id", "camp");
            struct events_result res = { 0 };
            int rc = events_ingest_json(app.store, e, &res);
            events_result_free(&res);
            json_decref(e);
            if (rc)
                return (void *)2;
        }
    }
    return NULL;
}

Test(segments, concurrent_writers)
{
    pthread_t th[4];
    for (int k = 0; k < 4; k++)
        pthread_create(&th[k], NULL, writer, (void *)(uintptr_t)(k + 1));
    for (int k = 0; k < 4; k++) {
        void *r;
        pthread_join(th[k], &r);
        cr_assert_null(r, "writer %d failed", k);
    }
    verify(NCUST + 20, NULL);
}

/* ---- segment memberships as model features ------------------------------------ */

/* p as decide (and targeting) build it: the stored profile, p.id, p.stats. */
static int push_p(lua_State *L, const char *id)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(app.store, &t), 0);
    const void *v;
    size_t vl;
    if (store_get(t, STORE_PROFILES, id, strlen(id), &v, &vl) == 0)
        cr_assert_eq(luavm_push_msgpack(L, v, vl), 0);
    else
        lua_createtable(L, 0, 2);
    int p = lua_gettop(L);
    lua_pushstring(L, id);
    lua_setfield(L, p, "id");
    if (store_get(t, STORE_PSTATS, id, strlen(id), &v, &vl) == 0) {
        cr_assert_eq(luavm_push_msgpack(L, v, vl), 0);
        lua_setfield(L, p, "stats");
    }
    store_txn_end(t);
    return p;
}

/* A model's "segment.<id>" features (engine/models.h, models_seg.c) are
 * the definitions evaluated on p as of the time given: at the clock's now
 * they equal the live index (computed by another path: the write batch
 * from the stored msgpack) and the brute-force scan, for condition,
 * `$segment` (recursive) and Lua segments alike; at an earlier time they
 * equal the scan at that time (what a training example sees). */
Test(segments, model_segment_features_are_the_definitions_at_a_time)
{
    for (int step = 0; step < 1500; step++)
        rand_op();
    struct luavm_opts o = { 0 };
    struct luavm *vm;
    cr_assert_eq(luavm_new(&o, &vm), 0);
    lua_State *L = luavm_state(vm);
    char src[2000] = "return { label = { conversion = 'x', within = '7d' }, features = { 'age'";
    int nseg = 0;
    for (int i = 0; i < NDEFS; i++)
        all_segs[nseg++] = defs[i].id;
    all_segs[nseg++] = "big_spender";
    for (int s = 0; s < nseg; s++)
        snprintf(src + strlen(src), sizeof src - strlen(src), ", 'segment.%s'", all_segs[s]);
    strcat(src, ", 'segment.not_loaded' } }");
    json_t *errs = json_array();
    struct models_def *d = NULL;
    cr_assert_eq(models_parse(vm, "models/seg.lua", src, strlen(src), errs, &d, NULL), 0, "%s",
                 json_dumps(errs, 0));
    json_decref(errs);
    struct brute b;
    brute_init(&b);
    int64_t times[2] = { T0, T0 - 20 * 86400 };
    long members = 0, checked = 0;
    for (int k = 0; k < 2; k++) {
        clock_freeze(times[k]); /* the scan's now */
        for (int c = 0; c < NCUST + 20; c++) {
            char id[16];
            cust_id(id, c);
            int exists;
            json_t *view = brute_view(id, &exists);
            if (!exists) {
                json_decref(view);
                continue;
            }
            int p = push_p(L, id);
            float x[PREDICT_MAX_FEATURES];
            struct models_feat_err fe;
            cr_assert_eq(models_features(vm, d, NULL, p, 0, times[k], x, &fe), 0, "%s", fe.msg);
            struct store_txn *t;
            cr_assert_eq(store_rtxn_begin(app.store, &t), 0);
            json_t *mine = segments_customer_json(t, id);
            store_txn_end(t);
            for (int s = 0; s < nseg; s++) {
                float f = x[d->feats[1 + s].col];
                int want = brute_member(&b, all_segs[s], view);
                cr_assert(f == (float)want, "%s, segment %s at %lld: feature %g, scan %d", id,
                          all_segs[s], (long long)times[k], f, want);
                if (k == 0)
                    cr_assert_eq(json_has(mine, all_segs[s]), want, "%s, %s: feature vs index", id,
                                 all_segs[s]);
                members += want;
                checked++;
            }
            cr_assert(isnan(x[d->feats[1 + nseg].col]), "a segment not loaded reads as missing");
            json_decref(mine);
            json_decref(view);
            lua_settop(L, 0);
        }
    }
    clock_freeze(T0);
    cr_assert(members > 0 && members < checked, "the data exercise both answers");
    brute_free(&b);
    models_def_free(d);
    luavm_free(vm);
}
