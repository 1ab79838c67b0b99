/*
 * test_assign.c — GrowthBook experiment assignment (engine/assign.h).
 *
 * The conformance sections hash, getBucketRange, chooseVariation,
 * inNamespace and getEqualWeights are read from
 * ../shared/conformance/growthbook-cases.json at test time (the file every
 * GrowthBook SDK runs) and every case is checked, with the comparison rules
 * of the file's README: hash by exact double equality, ranges and weights
 * after flooring to 1e-8.  A failing case is reported as
 * "section[index] name".  A missing file fails the suite.
 *
 * Non-ASCII input is not in the file: JavaScript hashes UTF-16 code units.
 * The expected values below were computed independently in Python:
 *   def fnv(s):  # s a str; invalid bytes decoded with errors='replace'
 *       h = 0x811c9dc5
 *       b = s.encode('utf-16-le', 'surrogatepass')
 *       for i in range(0, len(b), 2):
 *           h ^= b[i] | b[i+1] << 8; h = h * 0x01000193 & 0xffffffff
 *       return h
 *   v1 = fnv(value + seed) % 1000 / 1000
 *   v2 = fnv(str(fnv(seed + value))) % 10000 / 10000
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <jansson.h>

#include "base/err.h"
#include "engine/assign.h"

#define CASES PROMOD_SHARED "/conformance/growthbook-cases.json"

TestSuite(assign, .timeout = 60);

static json_t *section(json_t **all, const char *name)
{
    json_error_t je;
    *all = json_load_file(CASES, JSON_DECODE_INT_AS_REAL, &je);
    cr_assert(*all, "cannot read %s (%s, line %d): the GrowthBook conformance file is required",
              CASES, je.text, je.line);
    json_t *s = json_object_get(*all, name);
    cr_assert(json_is_array(s) && json_array_size(s) > 0, "section %s missing or empty", name);
    return s;
}

static double floor8(double x) { return floor(x * 1e8) / 1e8; }

Test(assign, conformance_hash)
{
    json_t *all, *s = section(&all, "hash");
    size_t i, failed = 0;
    json_t *c;
    json_array_foreach(s, i, c) {
        const char *seed = json_string_value(json_array_get(c, 0));
        const char *value = json_string_value(json_array_get(c, 1));
        int version = (int)json_number_value(json_array_get(c, 2));
        json_t *want = json_array_get(c, 3);
        double got = -1;
        int rc = assign_hash(seed, strlen(seed), value, strlen(value), version, &got);
        bool ok = json_is_null(want) ? rc == ERR_INVAL : rc == 0 && got == json_number_value(want);
        if (!ok) {
            failed++;
            cr_log_error("hash[%zu] (\"%s\", \"%s\", v%d): got %s%.17g, want %s", i, seed, value, version,
                         rc ? "null " : "", got, json_is_null(want) ? "null" : "a number");
        }
    }
    cr_log_info("hash: %zu of %zu passed", json_array_size(s) - failed, json_array_size(s));
    cr_expect_eq(failed, 0, "%zu hash cases failed", failed);
    json_decref(all);
}

Test(assign, conformance_getBucketRange)
{
    json_t *all, *s = section(&all, "getBucketRange");
    size_t i, failed = 0;
    json_t *c;
    json_array_foreach(s, i, c) {
        const char *name = json_string_value(json_array_get(c, 0));
        json_t *args = json_array_get(c, 1), *want = json_array_get(c, 2);
        int n = (int)json_number_value(json_array_get(args, 0));
        json_t *cov = json_array_get(args, 1), *jw = json_array_get(args, 2);
        double w[16], r[16][2];
        int nw = (int)json_array_size(jw);
        cr_assert(n <= 16 && nw <= 16);
        for (int k = 0; k < nw; k++)
            w[k] = json_number_value(json_array_get(jw, (size_t)k));
        assign_bucket_ranges(n, json_is_null(cov) ? 1 : json_number_value(cov), json_is_null(jw) ? NULL : w,
                             nw, r);
        bool ok = (int)json_array_size(want) == n;
        for (int k = 0; ok && k < n; k++) {
            json_t *pair = json_array_get(want, (size_t)k);
            ok = floor8(r[k][0]) == floor8(json_number_value(json_array_get(pair, 0))) &&
                 floor8(r[k][1]) == floor8(json_number_value(json_array_get(pair, 1)));
        }
        if (!ok) {
            failed++;
            cr_log_error("getBucketRange[%zu] %s: first range [%g, %g]", i, name, r[0][0], r[0][1]);
        }
    }
    cr_log_info("getBucketRange: %zu of %zu passed", json_array_size(s) - failed, json_array_size(s));
    cr_expect_eq(failed, 0, "%zu getBucketRange cases failed", failed);
    json_decref(all);
}

Test(assign, conformance_chooseVariation)
{
    json_t *all, *s = section(&all, "chooseVariation");
    size_t i, failed = 0;
    json_t *c;
    json_array_foreach(s, i, c) {
        const char *name = json_string_value(json_array_get(c, 0));
        double h = json_number_value(json_array_get(c, 1));
        json_t *jr = json_array_get(c, 2);
        int want = (int)json_number_value(json_array_get(c, 3));
        double r[16][2];
        int n = (int)json_array_size(jr);
        cr_assert(n <= 16);
        for (int k = 0; k < n; k++) {
            r[k][0] = json_number_value(json_array_get(json_array_get(jr, (size_t)k), 0));
            r[k][1] = json_number_value(json_array_get(json_array_get(jr, (size_t)k), 1));
        }
        int got = assign_choose(h, (const double (*)[2])r, n);
        if (got != want) {
            failed++;
            cr_log_error("chooseVariation[%zu] %s: got %d, want %d", i, name, got, want);
        }
    }
    cr_log_info("chooseVariation: %zu of %zu passed", json_array_size(s) - failed, json_array_size(s));
    cr_expect_eq(failed, 0, "%zu chooseVariation cases failed", failed);
    json_decref(all);
}

Test(assign, conformance_inNamespace)
{
    json_t *all, *s = section(&all, "inNamespace");
    size_t i, failed = 0;
    json_t *c;
    json_array_foreach(s, i, c) {
        const char *name = json_string_value(json_array_get(c, 0));
        const char *id = json_string_value(json_array_get(c, 1));
        json_t *ns = json_array_get(c, 2);
        const char *nsid = json_string_value(json_array_get(ns, 0));
        bool want = json_is_true(json_array_get(c, 3));
        bool got = assign_in_namespace(id, strlen(id), nsid, strlen(nsid),
                                       json_number_value(json_array_get(ns, 1)),
                                       json_number_value(json_array_get(ns, 2)));
        if (got != want) {
            failed++;
            cr_log_error("inNamespace[%zu] %s: got %d, want %d", i, name, got, want);
        }
    }
    cr_log_info("inNamespace: %zu of %zu passed", json_array_size(s) - failed, json_array_size(s));
    cr_expect_eq(failed, 0, "%zu inNamespace cases failed", failed);
    json_decref(all);
}

Test(assign, conformance_getEqualWeights)
{
    json_t *all, *s = section(&all, "getEqualWeights");
    size_t i, failed = 0;
    json_t *c;
    json_array_foreach(s, i, c) {
        int n = (int)json_number_value(json_array_get(c, 0));
        json_t *want = json_array_get(c, 1);
        double w[16];
        cr_assert(n <= 16);
        int got = assign_equal_weights(n, w);
        bool ok = got == (int)json_array_size(want);
        for (int k = 0; ok && k < got; k++)
            ok = floor8(w[k]) == floor8(json_number_value(json_array_get(want, (size_t)k)));
        if (!ok) {
            failed++;
            cr_log_error("getEqualWeights[%zu] n=%d: got %d weights", i, n, got);
        }
    }
    cr_log_info("getEqualWeights: %zu of %zu passed", json_array_size(s) - failed, json_array_size(s));
    cr_expect_eq(failed, 0, "%zu getEqualWeights cases failed", failed);
    json_decref(all);
}

/* JavaScript strings are UTF-16: "é" is one code unit, "😀" two. */
Test(assign, utf16_code_units)
{
    static const struct {
        const char *seed, *value;
        uint32_t fnv_v1; /* fnv(value + seed) */
        double v1, v2;
    } ref[] = {
        { "exp", "\xc3\xa9", 647477875u, 0.875, 0.976 },                 /* é */
        { "exp", "\xf0\x9f\x98\x80", 4162235655u, 0.655, 0.7506 },       /* 😀 */
        { "\xc3\xa9", "user-1", 3479728679u, 0.679, 0.779 },
        { "", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 1409693518u, 0.518, 0.1203 }, /* 日本語 */
        { "seed", "Zo\xc3\xab", 421935210u, 0.21, 0.4369 },               /* Zoë */
    };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        size_t sl = strlen(ref[i].seed), vl = strlen(ref[i].value);
        uint32_t h = assign_fnv(ref[i].seed, sl, assign_fnv(ref[i].value, vl, ASSIGN_FNV_INIT));
        cr_expect_eq(h, ref[i].fnv_v1, "fnv #%zu: %u", i, h);
        double v1, v2;
        cr_assert_eq(assign_hash(ref[i].seed, sl, ref[i].value, vl, 1, &v1), 0);
        cr_assert_eq(assign_hash(ref[i].seed, sl, ref[i].value, vl, 2, &v2), 0);
        cr_expect_eq(v1, ref[i].v1, "v1 #%zu: %.17g", i, v1);
        cr_expect_eq(v2, ref[i].v2, "v2 #%zu: %.17g", i, v2);
    }
    /* a byte-wise FNV would differ as soon as a character is not ASCII */
    const char *e = "\xc3\xa9";
    uint32_t bytewise = ASSIGN_FNV_INIT;
    for (int i = 0; i < 2; i++) {
        bytewise ^= (unsigned char)e[i];
        bytewise *= 0x01000193u;
    }
    cr_expect_neq(assign_fnv(e, 2, ASSIGN_FNV_INIT), bytewise);
}

/* Invalid UTF-8 hashes as TextDecoder would decode it (one U+FFFD per
 * maximal invalid subpart); Python's errors='replace' decodes the same. */
Test(assign, invalid_utf8_as_replacement)
{
    static const struct {
        const char *raw;
        size_t len;
        uint32_t want;
    } ref[] = {
        { "a\xe2\x82" "b", 4, 3108391347u },     /* truncated sequence: one U+FFFD */
        { "\xff\xfe", 2, 1015284303u },          /* two invalid bytes: two */
        { "\xed\xa0\x80", 3, 4149960502u },      /* an encoded surrogate: three */
        { "\xf0\x9f\x98", 3, 2007932456u },      /* truncated at the end: one */
        { "x\xc3", 2, 3573038350u },
    };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++)
        cr_expect_eq(assign_fnv(ref[i].raw, ref[i].len, ASSIGN_FNV_INIT), ref[i].want, "#%zu", i);
}

Test(assign, ranges_keep_users_when_coverage_drops)
{
    /* coverage only shortens each range from its fixed start */
    double full[3][2], part[3][2];
    const double w[3] = { 0.2, 0.3, 0.5 };
    assign_bucket_ranges(3, 1, w, 3, full);
    assign_bucket_ranges(3, 0.4, w, 3, part);
    int moved = 0, dropped = 0;
    for (int u = 0; u < 10000; u++) {
        char id[16];
        double h;
        snprintf(id, sizeof id, "u%d", u);
        cr_assert_eq(assign_hash("exp", 3, id, strlen(id), 2, &h), 0);
        int a = assign_choose(h, (const double (*)[2])full, 3);
        int b = assign_choose(h, (const double (*)[2])part, 3);
        cr_assert(a >= 0);
        if (b < 0)
            dropped++;
        else if (b != a)
            moved++;
    }
    cr_expect_eq(moved, 0, "no customer changes variation when coverage drops");
    cr_expect(dropped > 5000 && dropped < 7000, "about 60%% leave the experiment: %d", dropped);
    /* NaN coverage: no range matches (the SDK keeps NaN) */
    assign_bucket_ranges(3, NAN, w, 3, part);
    cr_expect_eq(assign_choose(0.1, (const double (*)[2])part, 3), -1);
    /* n <= 0 writes nothing and unknown versions are "not bucketed" */
    double h = 7;
    cr_expect_eq(assign_hash("s", 1, "v", 1, 3, &h), ERR_INVAL);
    cr_expect_eq(assign_hash("s", 1, "v", 1, 0, &h), ERR_INVAL);
    cr_expect_eq(h, 7);
    cr_expect_eq(assign_equal_weights(0, NULL), 0);
}
