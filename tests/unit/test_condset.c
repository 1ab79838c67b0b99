/*
 * test_condset.c — many conditions evaluated together (engine/condset.h)
 * must give, member by member, exactly what evaluating each condition on
 * its own with cond_eval gives.  Checked on the GrowthBook conformance
 * cases (every strict-valid condition against every case's attributes,
 * twice, so the per-thread memory of group values is both filled and
 * used) and on random workload-like conditions and profiles with segment
 * references; plus the membership tests (all/any/none), explain, and
 * sharing one set between threads.
 */
#include "cond_tfx.h"
#include "engine/condset.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

TestSuite(condset, .timeout = 300);

/* ---- conformance cases ------------------------------------------------ */

static int uses_groups(const char *text)
{
    return strstr(text, "$inGroup") || strstr(text, "$notInGroup");
}

Test(condset, conformance_cross_product)
{
    json_error_t je;
    json_t *all = json_load_file(CONDTFX_CASES, JSON_DECODE_INT_AS_REAL, &je);
    cr_assert(all, "cannot read %s: the GrowthBook conformance file is required", CONDTFX_CASES);
    json_t *cases = json_object_get(all, "evalCondition");
    size_t n = json_array_size(cases);
    cr_assert_gt(n, 100);
    /* members: every condition strict mode accepts (the only kind sets hold) */
    struct cond **whole = calloc(n, sizeof *whole);
    int *member_of = calloc(n, sizeof *member_of);
    int nm = 0;
    struct condset_build *b;
    cr_assert_eq(condset_build_new((int)n, &b), 0);
    for (size_t i = 0; i < n; i++) {
        json_t *cj = json_array_get(json_array_get(cases, i), 1);
        char *text = json_dumps(cj, JSON_COMPACT | JSON_ENCODE_ANY);
        int skip = !json_is_object(cj) || uses_groups(text) || strstr(text, "$segment");
        free(text);
        struct cond_opts o = { .mode = COND_STRICT };
        if (skip || cond_compile(cj, &o, &whole[i], NULL)) {
            whole[i] = NULL;
            member_of[i] = -1;
            continue;
        }
        member_of[i] = nm;
        cr_assert_eq(condset_build_set(b, nm, cj, NULL, 0, NULL, 0, NULL, 0, NULL), 0, "case %zu", i);
        nm++;
    }
    cr_assert_gt(nm, 50, "only %d strict-valid conditions", nm);
    struct condset *cs;
    cr_assert_eq(condset_build_finish(b, &cs), 0);
    struct condset_stats st;
    condset_stats(cs, &st);
    cr_assert_gt(st.groups, 5);
    struct condset_scratch *sc = condset_scratch_new();
    uint64_t *out = calloc(CONDSET_WORDS(n), sizeof *out);
    long checked = 0;
    for (int round = 0; round < 2; round++)
        for (size_t a = 0; a < n; a++) {
            json_t *attrs = json_array_get(json_array_get(cases, a), 2);
            if (!json_is_object(attrs))
                continue;
            struct buf mp = BUF_INIT;
            if (codec_json_to_msgpack(attrs, &mp)) {
                buf_free(&mp);
                continue;
            }
            int cnt = condset_eval(cs, sc, mp.p, mp.len, NULL, NULL, out);
            cr_assert_geq(cnt, 0);
            for (size_t i = 0; i < n; i++) {
                if (member_of[i] < 0)
                    continue;
                int want = cond_eval(whole[i], mp.p, mp.len, NULL) == 1;
                int got = (int)(out[member_of[i] >> 6] >> (member_of[i] & 63)) & 1;
                cr_assert_eq(got, want, "condition of case %zu on attributes of case %zu: set says %d, "
                             "cond_eval %d", i, a, got, want);
                checked++;
            }
            buf_free(&mp);
        }
    cr_log_info("condset: %ld member evaluations checked (%d members, %d groups, %d deep, %d "
                "complex)", checked, nm, st.groups, st.deep_groups, st.complex);
    for (size_t i = 0; i < n; i++)
        cond_free(whole[i]);
    free(whole);
    free(member_of);
    free(out);
    condset_scratch_free(sc);
    condset_free(cs);
    json_decref(all);
}

/* ---- random workload-like conditions ---------------------------------- */

static const char *tiers[] = { "bronze", "silver", "gold", "platinum" };
static const char *countries[] = { "FR", "DE", "US", "GB", "ES", "IT", "NL", "BE" };
static const char *interests[] = { "beach", "ski", "city", "golf", "food", "wine", "spa" };

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
#define PICK(a) (a[rnd() % (sizeof a / sizeof a[0])])

static json_t *rand_profile(int i)
{
    json_t *p = json_object();
    if (rnd() % 10)
        json_object_set_new(p, "tier", json_string(PICK(tiers)));
    if (rnd() % 10)
        json_object_set_new(p, "country", json_string(PICK(countries)));
    if (rnd() % 5)
        json_object_set_new(p, "age", json_integer(18 + (json_int_t)(rnd() % 60)));
    else if (rnd() % 2)
        json_object_set_new(p, "age", json_string(rnd() % 2 ? "42" : "n/a"));
    json_object_set_new(p, "ltv", json_real((double)(rnd() % 100000) / 37.0));
    json_t *arr = json_array();
    for (int k = (int)(rnd() % 4); k > 0; k--)
        json_array_append_new(arr, json_string(PICK(interests)));
    json_object_set_new(p, "interests", arr);
    json_t *consent = json_object();
    json_object_set_new(consent, "email", json_boolean(rnd() % 2));
    if (rnd() % 3)
        json_object_set_new(consent, "sms", json_boolean(rnd() % 2));
    json_object_set_new(p, "consent", consent);
    json_t *stats = json_object();
    if (rnd() % 4) {
        json_object_set_new(stats, "click", json_integer((json_int_t)(rnd() % 5)));
        json_object_set_new(stats, "recency_days", json_integer((json_int_t)(rnd() % 120)));
        json_t *ds = json_object();
        json_object_set_new(ds, "purchase", json_integer((json_int_t)(rnd() % 200)));
        json_object_set_new(stats, "days_since", ds);
    }
    json_object_set_new(p, "stats", stats);
    char id[32];
    snprintf(id, sizeof id, "c%05d", i);
    json_object_set_new(p, "id", json_string(id));
    if (rnd() % 7 == 0)
        json_object_set_new(p, "email", json_string(rnd() % 2 ? "x@example.com" : "y@test.org"));
    return p;
}

static json_t *rand_clause(int depth);

static json_t *rand_doc(int depth)
{
    json_t *d = json_object();
    int n = 1 + (int)(rnd() % 3);
    for (int i = 0; i < n; i++) {
        json_t *c = rand_clause(depth);
        json_object_update(d, c); /* a repeated key keeps the last: fine */
        json_decref(c);
    }
    return d;
}

static json_t *rand_clause(int depth)
{
    int kind = (int)(rnd() % (depth < 2 ? 14 : 10));
    char buf[300];
    switch (kind) {
    case 0:
        snprintf(buf, sizeof buf, "{\"tier\": {\"$in\": [\"%s\", \"%s\"]}}", PICK(tiers), PICK(tiers));
        break;
    case 1:
        snprintf(buf, sizeof buf, "{\"country\": \"%s\"}", PICK(countries));
        break;
    case 2:
        snprintf(buf, sizeof buf, "{\"age\": {\"$gte\": %d, \"$lt\": %d}}", 18 + (int)(rnd() % 30),
                 40 + (int)(rnd() % 40));
        break;
    case 3:
        snprintf(buf, sizeof buf, "{\"ltv\": {\"$gt\": %d}}", (int)(rnd() % 2000));
        break;
    case 4:
        snprintf(buf, sizeof buf, "{\"interests\": {\"$elemMatch\": {\"$eq\": \"%s\"}}}",
                 PICK(interests));
        break;
    case 5:
        snprintf(buf, sizeof buf, "{\"consent.email\": %s}", rnd() % 2 ? "true" : "false");
        break;
    case 6:
        snprintf(buf, sizeof buf, "{\"stats.click\": {\"$gte\": %d}}", (int)(rnd() % 4));
        break;
    case 7:
        snprintf(buf, sizeof buf, "{\"stats.days_since.purchase\": {\"$lte\": %d}}",
                 (int)(rnd() % 150));
        break;
    case 8:
        snprintf(buf, sizeof buf, "{\"$segment\": \"s%d\"}", (int)(rnd() % 6));
        break;
    case 9:
        snprintf(buf, sizeof buf, "{\"email\": {\"$regex\": \"@example\\\\.com$\"}}");
        break;
    case 10: { /* $or over two attributes: evaluated on its own */
        json_t *o = json_object(), *l = json_array();
        json_array_append_new(l, rand_doc(depth + 1));
        json_array_append_new(l, rand_doc(depth + 1));
        json_object_set_new(o, "$or", l);
        return o;
    }
    case 11: {
        json_t *o = json_object();
        json_object_set_new(o, "$not", rand_doc(depth + 1));
        return o;
    }
    case 12: {
        json_t *o = json_object(), *l = json_array();
        json_array_append_new(l, rand_doc(depth + 1));
        json_array_append_new(l, rand_doc(depth + 1));
        json_object_set_new(o, "$and", l);
        return o;
    }
    default: {
        json_t *o = json_object(), *l = json_array();
        json_array_append_new(l, rand_doc(depth + 1));
        json_object_set_new(o, "$nor", l);
        return o;
    }
    }
    return condtfx_json(buf);
}

struct refctx {
    const uint64_t *refs;
    const struct condset *cs;
};

static int seg_cb(void *ud, const char *id, size_t len, const char *mp, size_t ml)
{
    (void)mp;
    (void)ml;
    struct refctx *x = ud;
    int k = condset_ref_find(x->cs, id, len);
    return k >= 0 && x->refs && (x->refs[k >> 6] >> (k & 63)) & 1;
}

static int in_list(const char *const *l, int n, const uint64_t *refs, const struct condset *cs)
{
    for (int i = 0; i < n; i++) {
        int k = condset_ref_find(cs, l[i], strlen(l[i]));
        if (k >= 0 && (refs[k >> 6] >> (k & 63)) & 1)
            return 1;
    }
    return 0;
}

#define NRAND 400
static const char *seg_ids[] = { "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7" };

Test(condset, random_conditions_and_profiles)
{
    json_t *conds[NRAND];
    struct cond *whole[NRAND];
    const char *any[NRAND][2], *none[NRAND][1];
    int nany[NRAND], nnone[NRAND], has_any[NRAND];
    struct condset_build *b;
    cr_assert_eq(condset_build_new(NRAND, &b), 0);
    for (int i = 0; i < NRAND; i++) {
        conds[i] = i % 17 == 0 ? NULL : rand_doc(0);
        whole[i] = NULL;
        if (conds[i]) {
            struct cond_opts o = { .mode = COND_STRICT };
            struct reqerr e = { 0 };
            cr_assert_eq(cond_compile(conds[i], &o, &whole[i], &e), 0, "%s", e.message);
        }
        has_any[i] = rnd() % 5 == 0;
        nany[i] = has_any[i] ? (int)(rnd() % 3) : 0; /* 0 with has_any: can never match */
        for (int k = 0; k < nany[i]; k++)
            any[i][k] = PICK(seg_ids);
        nnone[i] = rnd() % 6 == 0;
        if (nnone[i])
            none[i][0] = PICK(seg_ids);
        cr_assert_eq(condset_build_set(b, i, conds[i], NULL, 0, has_any[i] ? any[i] : NULL, nany[i],
                                       nnone[i] ? none[i] : NULL, nnone[i], NULL), 0);
    }
    struct condset *cs;
    cr_assert_eq(condset_build_finish(b, &cs), 0);
    struct condset_scratch *sc = condset_scratch_new();
    uint64_t out[CONDSET_WORDS(NRAND)], mask[CONDSET_WORDS(NRAND)];
    uint64_t refs[CONDSET_WORDS(CONDSET_MAX_REFS)];
    long checked = 0;
    for (int p = 0; p < 3000; p++) {
        json_t *prof = rand_profile(p);
        struct buf mp = BUF_INIT;
        cr_assert_eq(codec_json_to_msgpack(prof, &mp), 0);
        memset(refs, 0, sizeof refs);
        for (int k = 0; k < condset_nrefs(cs); k++)
            if (rnd() % 2)
                refs[k >> 6] |= 1ull << (k & 63);
        const uint64_t *mp_mask = NULL;
        if (p % 3 == 0) { /* a random subset selected */
            for (size_t w = 0; w < CONDSET_WORDS(NRAND); w++)
                mask[w] = rnd();
            mp_mask = mask;
        }
        cr_assert_geq(condset_eval(cs, sc, mp.p, mp.len, refs, mp_mask, out), 0);
        struct refctx x = { refs, cs };
        struct cond_env env = { .segment = seg_cb, .segment_ud = &x };
        for (int i = 0; i < NRAND; i++) {
            int sel = !mp_mask || ((mask[i >> 6] >> (i & 63)) & 1);
            int want = sel;
            if (want && whole[i])
                want = cond_eval(whole[i], mp.p, mp.len, &env) == 1;
            if (want && has_any[i])
                want = in_list(any[i], nany[i], refs, cs);
            if (want && nnone[i])
                want = !in_list(none[i], 1, refs, cs);
            int got = (int)(out[i >> 6] >> (i & 63)) & 1;
            if (got != want) {
                char *ct = conds[i] ? json_dumps(conds[i], JSON_COMPACT) : strdup("(none)");
                char *pt = json_dumps(prof, JSON_COMPACT);
                cr_assert_fail("member %d %s on %s: set %d, expected %d", i, ct, pt, got, want);
            }
            /* explain agrees with the verdict */
            if (sel && p % 50 == 0) {
                char why[400];
                int held = condset_explain(cs, sc, i, mp.p, mp.len, refs, why, sizeof why);
                cr_assert_eq(held, want, "explain of member %d: %d vs %d (%s)", i, held, want, why);
                cr_assert(held || why[0], "a failing member is explained");
            }
            checked++;
        }
        buf_free(&mp);
        json_decref(prof);
    }
    cr_log_info("condset: %ld random member evaluations checked", checked);
    for (int i = 0; i < NRAND; i++) {
        json_decref(conds[i]);
        cond_free(whole[i]);
    }
    condset_scratch_free(sc);
    condset_free(cs);
}

Test(condset, explain_names_the_failing_test)
{
    struct condset_build *b;
    cr_assert_eq(condset_build_new(3, &b), 0);
    json_t *c0 = condtfx_json("{\"tier\": \"gold\", \"$and\": [{\"age\": {\"$gte\": 18}}, "
                              "{\"country\": {\"$in\": [\"FR\"]}}]}");
    const char *any[] = { "vip", "gold" }, *none[] = { "dormant" };
    cr_assert_eq(condset_build_set(b, 0, c0, NULL, 0, NULL, 0, NULL, 0, NULL), 0);
    cr_assert_eq(condset_build_set(b, 1, NULL, NULL, 0, any, 2, NULL, 0, NULL), 0);
    cr_assert_eq(condset_build_set(b, 2, NULL, NULL, 0, NULL, 0, none, 1, NULL), 0);
    struct condset *cs;
    cr_assert_eq(condset_build_finish(b, &cs), 0);
    cr_assert_eq(condset_nrefs(cs), 3);
    struct condset_scratch *sc = condset_scratch_new();
    json_t *p = condtfx_json("{\"tier\": \"gold\", \"age\": 30, \"country\": \"DE\"}");
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(p, &mp), 0);
    uint64_t refs[1] = { 0 };
    int dormant = condset_ref_find(cs, "dormant", 7);
    cr_assert_geq(dormant, 0);
    refs[0] |= 1ull << dormant;
    char why[300];
    cr_assert_eq(condset_explain(cs, sc, 0, mp.p, mp.len, refs, why, sizeof why), 0);
    cr_assert(strstr(why, "$.and[1]") && strstr(why, "country"), "%s", why);
    cr_assert_eq(condset_explain(cs, sc, 1, mp.p, mp.len, refs, why, sizeof why), 0);
    cr_assert(strstr(why, "segments: in none of") && strstr(why, "vip"), "%s", why);
    cr_assert_eq(condset_explain(cs, sc, 2, mp.p, mp.len, refs, why, sizeof why), 0);
    cr_assert(strstr(why, "exclude: in dormant"), "%s", why);
    /* an empty "any of" list can never match; none of nothing always does */
    struct condset_build *b2;
    cr_assert_eq(condset_build_new(1, &b2), 0);
    cr_assert_eq(condset_build_set(b2, 0, NULL, NULL, 0, any, 0, NULL, 0, NULL), 0);
    struct condset *cs2;
    cr_assert_eq(condset_build_finish(b2, &cs2), 0);
    uint64_t out[1];
    cr_assert_eq(condset_eval(cs2, sc, mp.p, mp.len, refs, NULL, out), 0);
    /* a bad condition is refused with its path */
    struct condset_build *b3;
    cr_assert_eq(condset_build_new(1, &b3), 0);
    json_t *bad = condtfx_json("{\"$and\": [{\"a\": 1}, {\"b\": {\"$gt\": [1]}}]}");
    struct reqerr e = { 0 };
    cr_assert_eq(condset_build_set(b3, 0, bad, NULL, 0, NULL, 0, NULL, 0, &e), ERR_INVAL);
    cr_assert_str_eq(e.field, "$.and[1].b.$gt");
    cr_assert_eq(condset_build_set(b3, 5, NULL, NULL, 0, NULL, 0, NULL, 0, NULL), ERR_INVAL);
    condset_build_free(b3);
    reqerr_clear(&e);
    json_decref(bad);
    condset_free(cs2);
    buf_free(&mp);
    json_decref(p);
    json_decref(c0);
    condset_scratch_free(sc);
    condset_free(cs);
}

/* One set, many threads, each with its own scratch: same answers. */
struct thr {
    const struct condset *cs;
    json_t **profiles;
    int n;
    uint64_t (*want)[CONDSET_WORDS(64)];
    int bad;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    struct condset_scratch *sc = condset_scratch_new();
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < t->n; i++) {
            struct buf mp = BUF_INIT;
            codec_json_to_msgpack(t->profiles[i], &mp);
            uint64_t out[CONDSET_WORDS(64)];
            condset_eval(t->cs, sc, mp.p, mp.len, NULL, NULL, out);
            if (memcmp(out, t->want[i], sizeof out))
                t->bad++;
            buf_free(&mp);
        }
    condset_scratch_free(sc);
    return NULL;
}

Test(condset, threads_share_a_set)
{
    struct condset_build *b;
    cr_assert_eq(condset_build_new(64, &b), 0);
    json_t *c[64];
    for (int i = 0; i < 64; i++) {
        do {
            c[i] = rand_doc(1);
            char *t = json_dumps(c[i], JSON_COMPACT);
            int seg = strstr(t, "$segment") != NULL;
            free(t);
            if (!seg)
                break;
            json_decref(c[i]);
        } while (1);
        cr_assert_eq(condset_build_set(b, i, c[i], NULL, 0, NULL, 0, NULL, 0, NULL), 0);
    }
    struct condset *cs;
    cr_assert_eq(condset_build_finish(b, &cs), 0);
    json_t *profiles[200];
    static uint64_t want[200][CONDSET_WORDS(64)];
    struct condset_scratch *sc = condset_scratch_new();
    for (int i = 0; i < 200; i++) {
        profiles[i] = rand_profile(i);
        struct buf mp = BUF_INIT;
        codec_json_to_msgpack(profiles[i], &mp);
        condset_eval(cs, sc, mp.p, mp.len, NULL, NULL, want[i]);
        buf_free(&mp);
    }
    struct thr t[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        t[k] = (struct thr){ cs, profiles, 200, want, 0 };
        pthread_create(&th[k], NULL, thr_main, &t[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        cr_assert_eq(t[k].bad, 0, "thread %d disagreed %d times", k, t[k].bad);
    }
    for (int i = 0; i < 200; i++)
        json_decref(profiles[i]);
    for (int i = 0; i < 64; i++)
        json_decref(c[i]);
    condset_scratch_free(sc);
    condset_free(cs);
}

/* Clauses reading the same attribute share one group (one remembered
 * value per attribute, one look-up per decide): 60 members over three
 * attributes make three groups, a dotted path its own — and their verdicts
 * are those of cond_eval, before and after the values are remembered. */
Test(condset, clauses_on_one_attribute_share_a_group)
{
    enum { N = 60 };
    struct condset_build *b;
    cr_assert_eq(condset_build_new(N, &b), 0);
    json_t *conds[N];
    for (int i = 0; i < N; i++) {
        char text[160];
        if (i % 3 == 0)
            snprintf(text, sizeof text, "{\"age\": {\"$gte\": %d}}", 18 + i);
        else if (i % 3 == 1)
            snprintf(text, sizeof text, "{\"country\": {\"$in\": [\"FR\", \"C%d\"]}, \"age\": {\"$lt\": %d}}",
                     i, 30 + i);
        else
            snprintf(text, sizeof text, "{\"consent.email\": true, \"tier\": \"t%d\"}", i % 4);
        json_error_t je;
        conds[i] = json_loads(text, 0, &je);
        cr_assert(conds[i], "%s", je.text);
        struct reqerr e = { 0 };
        cr_assert_eq(condset_build_set(b, i, conds[i], NULL, 0, NULL, 0, NULL, 0, &e), 0, "%s",
                     e.message);
    }
    struct condset *cs;
    cr_assert_eq(condset_build_finish(b, &cs), 0);
    struct condset_stats st;
    condset_stats(cs, &st);
    cr_assert_eq(st.groups, 4, "groups: %d (age, country, tier, consent.email)", st.groups);
    cr_assert_eq(st.deep_groups, 1);
    struct condset_scratch *sc = condset_scratch_new();
    uint64_t out[CONDSET_WORDS(N)];
    static const char *profiles[] = {
        "{\"age\": 40, \"country\": \"FR\", \"tier\": \"t2\", \"consent\": {\"email\": true}}",
        "{\"age\": 70, \"country\": \"C7\", \"tier\": \"t1\", \"consent\": {\"email\": false}}",
        "{\"age\": 25, \"tier\": \"t0\"}",
    };
    for (int round = 0; round < 3; round++) /* filled, then read from memory */
        for (size_t p = 0; p < sizeof profiles / sizeof *profiles; p++) {
            json_error_t je;
            json_t *pj = json_loads(profiles[p], 0, &je);
            struct buf mp = { 0 };
            cr_assert_eq(codec_json_to_msgpack(pj, &mp), 0);
            cr_assert_geq(condset_eval(cs, sc, mp.p, mp.len, NULL, NULL, out), 0);
            for (int i = 0; i < N; i++) {
                struct cond *c = NULL;
                struct reqerr e = { 0 };
                struct cond_opts o = { .mode = COND_STRICT };
                cr_assert_eq(cond_compile(conds[i], &o, &c, &e), 0);
                int want = cond_eval(c, mp.p, mp.len, NULL) == 1;
                cr_assert_eq((int)((out[i >> 6] >> (i & 63)) & 1), want, "member %d, profile %zu",
                             i, p);
                cond_free(c);
            }
            buf_free(&mp);
            json_decref(pj);
        }
    condset_scratch_free(sc);
    condset_free(cs);
    for (int i = 0; i < N; i++)
        json_decref(conds[i]);
}

/* ---- native clause forms ------------------------------------------------ */

/* Numeric comparisons and $elemMatch of a string on a top-level attribute
 * are evaluated natively (condset.h); every other value goes to cond.  The
 * native verdicts must be cond's on every msgpack encoding a value can
 * have: each clause below, as a member of one set, against each raw value
 * below as attribute "v", with the memory of group values both off (the
 * first pass, a value at a time) and on (a second pass). */
static const char *const native_clauses[] = {
    "{\"v\": {\"$gt\": 10}}", "{\"v\": {\"$gte\": 10}}", "{\"v\": {\"$lt\": -1.5}}",
    "{\"v\": {\"$lte\": 0}}", "{\"v\": {\"$eq\": 42}}", "{\"v\": {\"$ne\": 42}}",
    "{\"v\": {\"$gte\": 25, \"$lte\": 39}}", "{\"v\": {\"$exists\": true, \"$lte\": 90}}",
    "{\"v\": {\"$exists\": false}}", "{\"v\": {\"$exists\": true}}",
    "{\"v\": {\"$gt\": 4294967295}}", "{\"v\": {\"$lt\": 1e300}}", "{\"v\": {\"$eq\": 0}}",
    "{\"v\": {\"$gt\": 1, \"$lt\": 3, \"$ne\": 2, \"$exists\": true}}",
    "{\"v\": {\"$elemMatch\": {\"$eq\": \"ski\"}}}", "{\"v\": {\"$elemMatch\": {\"$eq\": \"été\"}}}",
    "{\"v\": {\"$elemMatch\": {\"$eq\": \"a-long-interest-name-over-thirty-two-bytes\"}}}",
    /* shapes that stay with cond, mixed in */
    "{\"v\": {\"$gt\": \"10\"}}", "{\"v\": {\"$elemMatch\": {\"$eq\": 5}}}", "{\"v\": 42}",
    "{\"v\": {\"$elemMatch\": {\"$gt\": 3}}}",
};

/* Raw msgpack values (bytes, length). */
struct rawv {
    const char *b;
    size_t n;
};
#define RV(s) { s, sizeof s - 1 }
static const struct rawv native_values[] = {
    RV("\x0a"), RV("\x2a"), RV("\x00"), RV("\x7f"), RV("\xff"), RV("\xe0"),     /* fixints */
    RV("\xcc\xff"), RV("\xcd\x01\x00"), RV("\xce\xff\xff\xff\xff"),                /* uints */
    RV("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), RV("\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
    RV("\xd0\x80"), RV("\xd1\xff\x00"), RV("\xd2\x80\x00\x00\x00"),              /* ints */
    RV("\xd3\xff\xff\xff\xff\xff\xff\xff\xfe"),
    RV("\xca\x41\x20\x00\x00"), RV("\xca\x7f\xc0\x00\x00"),                      /* 10.0f, NaN */
    RV("\xcb\x40\x45\x00\x00\x00\x00\x00\x00"), RV("\xcb\x80\x00\x00\x00\x00\x00\x00\x00"),
    RV("\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00"), RV("\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"),
    RV("\xcb\x40\x24\x00\x00\x00\x00\x00\x01"), RV("\xcb\xbf\xf8\x00\x00\x00\x00\x00\x00"),
    RV("\xc0"), RV("\xc2"), RV("\xc3"), RV("\xa2" "42"), RV("\xa0"), RV("\xa3" "ski"),
    RV("\xc4\x03" "ski"), RV("\x80"), RV("\x81\xa1k\x01"),
    RV("\x90"), RV("\x91\xa3" "ski"), RV("\x93\xa4" "golf\xa3" "ski\xa2" "xy"),
    RV("\x92\xa3" "sk\xa3" "skii"), RV("\x93\x05\xc0\xa3" "ski"), RV("\x92\xc3\xa0"),
    RV("\x91\xc4\x03" "ski"), RV("\x92\x91\xa3" "ski\xa3" "ski"), RV("\x91\x91\xa3" "ski"),
    RV("\x92\xcb\x40\x08\x00\x00\x00\x00\x00\x00\xa3" "ski"), RV("\x91\xa4\xc3\xa9t\xc3\xa9"),
    RV("\x92\xd9\x03" "ski\xa1z"), RV("\xdc\x00\x02\xa1z\xa3" "ski"),
    RV("\xdd\x00\x00\x00\x01\xda\x00\x03" "ski"),
    RV("\x91\xd9\x2a" "a-long-interest-name-over-thirty-two-bytes"),
    RV("\x92\x05\xd1\x00"), RV("\x93\x04\x05"), RV("\x92\xa3" "ski"), RV("\x91\xa5" "sk"),
    RV("\xcb\x40"), RV("\xd2\x00\x01"), RV("\x9f"), RV("\x92\x81\xa1k\x02\xa3" "ski"),
};

Test(condset, native_forms_agree_with_cond)
{
    int nc = (int)(sizeof native_clauses / sizeof *native_clauses);
    int nv = (int)(sizeof native_values / sizeof *native_values);
    struct cond **whole = calloc((size_t)nc, sizeof *whole);
    struct condset_build *b;
    cr_assert_eq(condset_build_new(nc, &b), 0);
    for (int i = 0; i < nc; i++) {
        json_t *j = condtfx_json(native_clauses[i]);
        struct cond_opts o = { .mode = COND_STRICT };
        cr_assert_eq(cond_compile(j, &o, &whole[i], NULL), 0, "%s", native_clauses[i]);
        cr_assert_eq(condset_build_set(b, i, j, NULL, 0, NULL, 0, NULL, 0, NULL), 0);
        json_decref(j);
    }
    struct condset *cs;
    cr_assert_eq(condset_build_finish(b, &cs), 0);
    struct condset_stats st;
    condset_stats(cs, &st);
    cr_assert_eq(st.native, 17, "the first 17 clauses have a native form (%d found)", st.native);
    struct condset_scratch *sc = condset_scratch_new();
    uint64_t out[CONDSET_WORDS(64)];
    long checked = 0;
    /* many passes: the group's memory fills, judges its hit rate and turns
     * itself off, so values are seen both remembered and evaluated */
    for (int pass = 0; pass < 40; pass++)
        for (int a = -1; a < nv; a++) {
            /* {"v": value} (a = -1: {"w": 1}, v absent), with a first pair
             * "v": "x" that the later one overrides */
            char mp[128];
            size_t len = 0;
            const struct rawv *v = a < 0 ? &(struct rawv)RV("\x01") : &native_values[a];
            mp[len++] = (char)0x82;
            memcpy(mp + len, "\xa1v\xa1x", 4);
            len += 4;
            memcpy(mp + len, a < 0 ? "\xa1w" : "\xa1v", 2);
            len += 2;
            cr_assert_lt(len + v->n, sizeof mp);
            memcpy(mp + len, v->b, v->n);
            len += v->n;
            if (a < 0) { /* absent: {"w": 1} only */
                memcpy(mp, "\x81\xa1w\x01", 4);
                len = 4;
            }
            cr_assert_geq(condset_eval(cs, sc, mp, len, NULL, NULL, out), 0);
            for (int i = 0; i < nc; i++) {
                int want = cond_eval(whole[i], mp, len, NULL) == 1;
                int got = (int)(out[i >> 6] >> (i & 63)) & 1;
                cr_assert_eq(got, want, "%s on value %d: set %d, cond %d", native_clauses[i], a, got,
                             want);
                if (pass == 0) {
                    char why[300];
                    cr_assert_eq(condset_explain(cs, sc, i, mp, len, NULL, why, sizeof why), want);
                }
                checked++;
            }
        }
    cr_log_info("condset: %ld native-form evaluations checked", checked);
    for (int i = 0; i < nc; i++)
        cond_free(whole[i]);
    free(whole);
    condset_scratch_free(sc);
    condset_free(cs);
}
