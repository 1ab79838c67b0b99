/*
 * test_segments_view.c — the in-memory segment view (engine/segbits.h) on
 * the real server and a real LMDB: after thousands of random interleaved
 * profile writes, patches, deletes, events and segment definition changes
 * (also from several connections at once), every overlap and audience
 * count answered from the view equals the scan of the index (?via=scan,
 * the path the view replaces) and a recomputation from the profiles
 * themselves; samples hold members only (never a deleted customer); a
 * restart builds the same view again.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

#define NCUST 160
#define MAXSEG 8

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true, segments_sweep_interval = 3600,");
    tfx_write(&srv, "segments/gold.lua", "return { conditions = { tier = \"gold\" } }\n");
    tfx_write(&srv, "segments/fr.lua",
              "return { conditions = [[ {\"country\": {\"$in\": [\"FR\", \"BE\"]}} ]] }\n");
    tfx_write(&srv, "segments/rich.lua", "return { conditions = [[ {\"ltv\": {\"$gte\": 300}} ]] }\n");
    tfx_write(&srv, "segments/clickers.lua",
              "return { conditions = [[ {\"tier\": {\"$exists\": true}, "
              "\"stats.click\": {\"$gte\": 2}} ]] }\n");
    tfx_write(&srv, "segments/gold_fr.lua",
              "return { conditions = [[ {\"$segment\": \"gold\", \"country\": \"FR\"} ]] }\n");
    tfx_write(&srv, "segments/mod3.lua",
              "return { match = function(p) return p.ltv ~= nil and p.ltv % 3 == 0 end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(segments_view, .init = setup, .fini = teardown, .timeout = 900);

/* ---- the model: membership recomputed from the profiles ---------------------- */

static const char *seg_ids[MAXSEG] = { "gold", "fr", "rich", "clickers", "gold_fr", "mod3", "tmp" };
static int rich_min = 300;   /* rich's current threshold */
static int have_tmp;         /* tmp (tier silver) exists */

static int nsegs(void) { return have_tmp ? 7 : 6; }

/* member[c][s]: customer c is in segment s */
static unsigned char member[NCUST][MAXSEG];

static int in_seg(json_t *p, int s)
{
    const char *tier = json_string_value(json_object_get(p, "tier"));
    const char *country = json_string_value(json_object_get(p, "country"));
    json_t *ltv = json_object_get(p, "ltv");
    json_int_t clicks = json_integer_value(json_object_get(json_object_get(p, "stats"), "click"));
    switch (s) {
    case 0: return tier && !strcmp(tier, "gold");
    case 1: return country && (!strcmp(country, "FR") || !strcmp(country, "BE"));
    case 2: return json_is_integer(ltv) && json_integer_value(ltv) >= rich_min;
    case 3: return tier && clicks >= 2;
    case 4: return in_seg(p, 0) && country && !strcmp(country, "FR");
    case 5: return json_is_integer(ltv) && json_integer_value(ltv) % 3 == 0;
    case 6: return tier && !strcmp(tier, "silver");
    }
    return 0;
}

static void recompute(void)
{
    memset(member, 0, sizeof member);
    for (int c = 0; c < NCUST; c++) {
        char path[80];
        snprintf(path, sizeof path, "/api/v1/profiles/c%03d", c);
        struct tfx_resp r;
        int st = tfx_req(&srv, "GET", path, NULL, &r);
        cr_assert(st == 200 || st == 404, "%d %s", st, r.body);
        for (int s = 0; st == 200 && s < nsegs(); s++)
            member[c][s] = (unsigned char)in_seg(r.json, s);
        tfx_resp_free(&r);
    }
}

/* ---- the server's answers ------------------------------------------------------- */

static void wait_ready(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/segments/%s/size", id);
    for (int i = 0; i < 6000; i++) {
        struct tfx_resp r;
        int st = tfx_req(&srv, "GET", path, NULL, &r);
        const char *state = json_string_value(json_object_get(r.json, "state"));
        int ready = st == 200 && state && !strcmp(state, "ready");
        tfx_resp_free(&r);
        if (ready)
            return;
        usleep(10000);
    }
    cr_assert_fail("segment %s never became ready", id);
}

/* Audience definition from bit lists over seg_ids. */
struct expr {
    int any[3], all[2], excl[2];
    int nany, nall, nexcl;
};

static int expr_holds(const struct expr *e, int c)
{
    int any = !e->nany;
    for (int i = 0; i < e->nany; i++)
        any |= member[c][e->any[i]];
    for (int i = 0; i < e->nall; i++)
        any &= member[c][e->all[i]];
    for (int i = 0; i < e->nexcl; i++)
        any &= !member[c][e->excl[i]];
    return any;
}

static void list_json(char *out, size_t len, const char *name, const int *l, int n)
{
    size_t o = strlen(out);
    o += (size_t)snprintf(out + o, len - o, "%s\"%s\":[", o > 1 ? "," : "", name);
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, len - o, "%s\"%s\"", i ? "," : "", seg_ids[l[i]]);
    snprintf(out + o, len - o, "]");
}

static void expr_json(const struct expr *e, const char *extra, char *out, size_t len)
{
    snprintf(out, len, "{");
    if (e->nany)
        list_json(out, len, "any", e->any, e->nany);
    if (e->nall)
        list_json(out, len, "all", e->all, e->nall);
    if (e->nexcl)
        list_json(out, len, "exclude", e->excl, e->nexcl);
    size_t o = strlen(out);
    snprintf(out + o, len - o, "%s}", extra);
}

static void random_expr(struct expr *e)
{
    memset(e, 0, sizeof *e);
    int n = nsegs();
    e->nany = rand() % 4;
    e->nall = rand() % 3;
    if (!e->nany && !e->nall)
        e->nany = 1;
    e->nexcl = rand() % 3;
    for (int i = 0; i < e->nany; i++)
        e->any[i] = rand() % n;
    for (int i = 0; i < e->nall; i++)
        e->all[i] = rand() % n;
    for (int i = 0; i < e->nexcl; i++)
        e->excl[i] = rand() % n;
}

static int cust_index(const char *id)
{
    int c;
    return id && sscanf(id, "c%d", &c) == 1 && c >= 0 && c < NCUST ? c : -1;
}

static void check_audience(const struct expr *e)
{
    char body[600], path[200];
    expr_json(e, ",\"sample\":1000", body, sizeof body);
    long want = 0;
    for (int c = 0; c < NCUST; c++)
        want += expr_holds(e, c);
    struct tfx_resp v, s;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/audience", body, &v), 201, "%s", v.body);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/audience?via=scan", body, &s), 201, "%s",
                 s.body);
    cr_assert_str_eq(json_string_value(json_object_get(v.json, "counted_by")), "view", "%s", v.body);
    cr_assert_str_eq(json_string_value(json_object_get(s.json, "counted_by")), "scan", "%s", s.body);
    long nv = (long)json_integer_value(json_object_get(v.json, "count"));
    long ns = (long)json_integer_value(json_object_get(s.json, "count"));
    cr_assert_eq(nv, ns, "%s: view %ld, scan %ld", body, nv, ns);
    cr_assert_eq(nv, want, "%s: view %ld, profiles say %ld", body, nv, want);
    /* the sample: every member once (count <= 1000), members only */
    json_t *smp = json_object_get(v.json, "sample");
    cr_assert_eq((long)json_array_size(smp), want, "%s", v.body);
    unsigned char seen[NCUST] = { 0 };
    size_t i;
    json_t *x;
    json_array_foreach(smp, i, x) {
        int c = cust_index(json_string_value(x));
        cr_assert(c >= 0 && expr_holds(e, c) && !seen[c], "%s: %s not a member", body,
                  json_string_value(x));
        seen[c] = 1;
    }
    /* a small sample: distinct members */
    tfx_resp_free(&v);
    expr_json(e, ",\"sample\":3", body, sizeof body);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/audience", body, &v), 201, "%s", v.body);
    smp = json_object_get(v.json, "sample");
    cr_assert_eq((long)json_array_size(smp), want < 3 ? want : 3, "%s", v.body);
    memset(seen, 0, sizeof seen);
    json_array_foreach(smp, i, x) {
        int c = cust_index(json_string_value(x));
        cr_assert(c >= 0 && expr_holds(e, c) && !seen[c], "%s", v.body);
        seen[c] = 1;
    }
    tfx_resp_free(&v);
    tfx_resp_free(&s);
    /* a holdout: the saved audience counted both ways agrees */
    expr_json(e, ",\"holdout\":0.4", body, sizeof body);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/audience", body, &v), 201, "%s", v.body);
    long c1 = (long)json_integer_value(json_object_get(v.json, "count"));
    long h1 = (long)json_integer_value(json_object_get(v.json, "held_out"));
    cr_assert_eq(c1 + h1, want, "%s", v.body);
    snprintf(path, sizeof path, "/api/v1/targeting/audience/%s?via=scan",
             json_string_value(json_object_get(v.json, "id")));
    cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &s), 200, "%s", s.body);
    cr_assert_eq((long)json_integer_value(json_object_get(s.json, "count")), c1, "%s / %s", v.body,
                 s.body);
    tfx_resp_free(&v);
    tfx_resp_free(&s);
}

/* Every size and overlap, both ways, against the model; some audiences. */
static void check_all(int naud)
{
    for (int s = 0; s < nsegs(); s++)
        wait_ready(seg_ids[s]);
    recompute();
    for (int a = 0; a < nsegs(); a++) {
        char ov[200] = "", path[300];
        for (int b = 0; b < nsegs(); b++)
            snprintf(ov + strlen(ov), sizeof ov - strlen(ov), "%s%s", b ? "," : "", seg_ids[b]);
        for (int way = 0; way < 2; way++) {
            snprintf(path, sizeof path, "/api/v1/segments/%s/size?overlap=%s%s", seg_ids[a], ov,
                     way ? "&via=scan" : "");
            struct tfx_resp r;
            cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", r.body);
            cr_assert_str_eq(json_string_value(json_object_get(r.json, "counted_by")),
                             way ? "scan" : "view", "%s", r.body);
            long size = 0;
            for (int c = 0; c < NCUST; c++)
                size += member[c][a];
            cr_assert_eq((long)json_integer_value(json_object_get(r.json, "size")), size,
                         "%s: %s", seg_ids[a], r.body);
            json_t *m = json_object_get(r.json, "overlap");
            for (int b = 0; b < nsegs(); b++) {
                long both = 0;
                for (int c = 0; c < NCUST; c++)
                    both += member[c][a] && member[c][b];
                long got = (long)json_integer_value(json_object_get(m, seg_ids[b]));
                cr_assert_eq(got, both, "%s & %s (%s): got %ld, profiles say %ld", seg_ids[a],
                             seg_ids[b], way ? "scan" : "view", got, both);
            }
            tfx_resp_free(&r);
        }
    }
    for (int i = 0; i < naud; i++) {
        struct expr e;
        random_expr(&e);
        check_audience(&e);
    }
}

/* ---- random operations ------------------------------------------------------------ */

static const char *tiers[] = { "gold", "silver", "bronze" };
static const char *countries[] = { "FR", "BE", "DE", "US" };

/* One random write; `seed` is the caller's rand_r state.  Returns 0 when
 * the server answered as expected. */
static int random_write(unsigned *seed)
{
    char path[80], body[200];
    int c = (int)(rand_r(seed) % NCUST), k = (int)(rand_r(seed) % 100), st;
    struct tfx_resp r;
    snprintf(path, sizeof path, "/api/v1/profiles/c%03d", c);
    if (k < 40) {
        snprintf(body, sizeof body, "{\"tier\":\"%s\",\"country\":\"%s\",\"ltv\":%u}",
                 tiers[rand_r(seed) % 3], countries[rand_r(seed) % 4], rand_r(seed) % 1000);
        st = tfx_req(&srv, "PUT", path, body, &r);
        st = st == 200 || st == 201;
    } else if (k < 60) {
        switch (rand_r(seed) % 3) {
        case 0: snprintf(body, sizeof body, "{\"tier\":\"%s\"}", tiers[rand_r(seed) % 3]); break;
        case 1: snprintf(body, sizeof body, "{\"country\":\"%s\"}", countries[rand_r(seed) % 4]); break;
        default: snprintf(body, sizeof body, "{\"ltv\":%u}", rand_r(seed) % 1000); break;
        }
        st = tfx_req(&srv, "PATCH", path, body, &r);
        st = st == 200 || st == 201 || st == 404;
    } else if (k < 72) {
        st = tfx_req(&srv, "DELETE", path, NULL, &r);
        st = st == 200 || st == 404;
    } else {
        int n = 1 + (int)(rand_r(seed) % 3);
        size_t o = (size_t)snprintf(body, sizeof body, "[");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(body + o, sizeof body - o,
                                  "%s{\"type\":\"click\",\"customer_id\":\"c%03u\",\"campaign_id\":\"k\"}",
                                  i ? "," : "", rand_r(seed) % NCUST);
        snprintf(body + o, sizeof body - o, "]");
        st = tfx_req(&srv, "POST", "/api/v1/events", body, &r) == 200;
    }
    if (!st)
        fprintf(stderr, "unexpected answer %d to %s: %s\n", r.status, path, r.body);
    tfx_resp_free(&r);
    return st ? 0 : -1;
}

/* A definition change: rich's threshold, or tmp created / deleted. */
static void random_definition(void)
{
    struct tfx_resp r;
    if (rand() % 2) {
        rich_min = 100 + rand() % 800;
        char body[200];
        snprintf(body, sizeof body, "{\"conditions\":{\"ltv\":{\"$gte\":%d}}}", rich_min);
        cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/segments/rich", body, &r), 200, "%s", r.body);
    } else if (!have_tmp) {
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/segments",
                             "{\"id\":\"tmp\",\"conditions\":{\"tier\":\"silver\"}}", &r),
                     201, "%s", r.body);
        have_tmp = 1;
    } else {
        int st = tfx_req(&srv, "DELETE", "/api/v1/segments/tmp", NULL, &r);
        cr_assert(st == 200 || st == 204, "%d %s", st, r.body);
        have_tmp = 0;
    }
    tfx_resp_free(&r);
}

struct worker {
    unsigned seed;
    int ops, failed;
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    for (int i = 0; i < w->ops; i++)
        w->failed += random_write(&w->seed) != 0;
    return NULL;
}

static double metric(const char *name)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double v = -1;
    cr_assert_eq(tfx_metric(r.body, name, "", &v), 1, "no %s in /metrics", name);
    tfx_resp_free(&r);
    return v;
}

Test(segments_view, equals_scan_and_profiles_under_random_writes)
{
    srand(20);
    unsigned seed = 20;
    check_all(4); /* empty */
    /* serial writes with definition changes */
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 300; i++) {
            cr_assert_eq(random_write(&seed), 0);
            if (rand() % 100 == 0)
                random_definition();
        }
        check_all(6);
    }
    /* four connections writing the same customers at once, while a
     * definition changes */
    struct worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){ .seed = 100u + (unsigned)i, .ops = 250 };
        cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    random_definition();
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].failed, 0);
    }
    check_all(10);
    cr_assert_eq(metric("promod_segments_view_live"), 1);
    cr_assert(metric("promod_segments_view_bytes") > 0);

    /* a restart builds the same view from the index */
    long members = 0;
    for (int c = 0; c < NCUST; c++) {
        int any = 0;
        for (int s = 0; s < nsegs(); s++)
            any |= member[c][s];
        members += any;
    }
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(tfx_server_start(&srv), 0);
    check_all(10);
    cr_assert_eq(metric("promod_segments_view_live"), 1);
    cr_assert(metric("promod_segments_view_build_seconds") >= 0);
    /* the view holds the customers of at least one segment (slots of
     * deleted segments drain in the background: wait for that) */
    double held = -1;
    for (int i = 0; i < 3000 && held != (double)members; i++) {
        held = metric("promod_segments_view_customers");
        if (held != (double)members)
            usleep(10000);
    }
    cr_assert_eq(held, (double)members);
}

Test(segments_view, deleted_customers_leave_the_view)
{
    struct tfx_resp r;
    for (int c = 0; c < 20; c++) {
        char path[80];
        snprintf(path, sizeof path, "/api/v1/profiles/c%03d", c);
        cr_assert_eq(tfx_req(&srv, "PUT", path, "{\"tier\":\"gold\",\"country\":\"FR\",\"ltv\":3}", &r),
                     201, "%s", r.body);
        tfx_resp_free(&r);
    }
    cr_assert_eq(metric("promod_segments_view_customers"), 20);
    for (int c = 0; c < 20; c += 2) {
        char path[80];
        snprintf(path, sizeof path, "/api/v1/profiles/c%03d", c);
        cr_assert_eq(tfx_req(&srv, "DELETE", path, NULL, &r), 200, "%s", r.body);
        tfx_resp_free(&r);
    }
    /* the erased customers' ids are gone from memory, not only their bits */
    cr_assert_eq(metric("promod_segments_view_customers"), 10);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/targeting/audience",
                         "{\"any\":[\"gold\",\"fr\",\"mod3\"],\"sample\":1000}", &r), 201, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "counted_by")), "view");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), 10, "%s", r.body);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r.json, "sample"), i, x) {
        int c = cust_index(json_string_value(x));
        cr_assert(c >= 0 && c % 2 == 1, "deleted customer %s sampled", json_string_value(x));
    }
    tfx_resp_free(&r);
    /* export lists memberships as before; erased profiles export nothing */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/c001/export", NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "segments")), 4, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/c000/export", NULL, &r), 404);
    tfx_resp_free(&r);
}
