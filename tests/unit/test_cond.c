/*
 * test_cond.c — GrowthBook targeting conditions (engine/cond.h): the
 * conformance suite, every operator in strict mode, compile-time errors
 * with their paths, lenient-mode runtime rules, saved groups, segments and
 * dependency listing.  msgpack edge cases, regexes and JavaScript
 * coercions are in test_cond_js.c.
 *
 * The evalCondition cases are read from
 * ../shared/conformance/growthbook-cases.json at test time (the file every
 * GrowthBook SDK runs, not copied here); a failing case is reported as
 * "evalCondition[index] name".  A missing file fails the suite.
 */
#include "cond_tfx.h"

#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

TestSuite(cond, .timeout = 120);

static json_t *eval_cases(json_t **all)
{
    json_error_t je;
    /* JS has only doubles: 10 and 10.0 are one value */
    *all = json_load_file(CONDTFX_CASES, JSON_DECODE_INT_AS_REAL, &je);
    cr_assert(*all, "cannot read %s (%s, line %d): the GrowthBook conformance file is required",
              CONDTFX_CASES, je.text, je.line);
    json_t *s = json_object_get(*all, "evalCondition");
    cr_assert(json_is_array(s) && json_array_size(s) > 0, "evalCondition section missing");
    return s;
}

/* Every case, lenient mode (GrowthBook's runtime rules), through both
 * entry points: msgpack and jansson. */
Test(cond, conformance_evalCondition)
{
    json_t *all, *s = eval_cases(&all);
    size_t i, failed = 0;
    json_t *tc;
    json_array_foreach(s, i, tc) {
        const char *name = json_string_value(json_array_get(tc, 0));
        json_t *cj = json_array_get(tc, 1), *attrs = json_array_get(tc, 2);
        int want = json_is_true(json_array_get(tc, 3));
        json_t *saved = json_array_get(tc, 4);
        struct cond_opts o = { .mode = COND_LENIENT };
        struct cond_groups *g = NULL;
        struct cond *c = NULL;
        struct reqerr e = { 0 };
        int rc = cond_compile(cj, &o, &c, &e);
        if (rc) {
            failed++;
            cr_log_error("evalCondition[%zu] %s: lenient compile failed: %s", i, name, e.message);
            continue;
        }
        if (saved)
            cr_assert_eq(cond_groups_compile(saved, &g, &e), 0, "[%zu] savedGroups: %s", i, e.message);
        struct cond_env env = { .groups = g };
        struct buf mp = BUF_INIT;
        cr_assert_eq(codec_json_to_msgpack(attrs, &mp), 0);
        int got = cond_eval(c, mp.p, mp.len, &env);
        int got_json = cond_eval_json(c, attrs, &env);
        struct cond_attrs at;
        int got_attrs = cond_attrs_init(&at, mp.p, mp.len);
        if (got_attrs == 0)
            got_attrs = cond_eval_attrs(c, &at, &env);
        cond_attrs_free(&at);
        if (got != want || got_json != want || got_attrs != want) {
            failed++;
            cr_log_error("evalCondition[%zu] %s: got %d (jansson %d, indexed %d), want %d", i, name, got,
                         got_json, got_attrs, want);
        }
        buf_free(&mp);
        cond_groups_free(g);
        cond_free(c);
        reqerr_clear(&e);
    }
    size_t n = json_array_size(s);
    cr_log_info("evalCondition: %zu of %zu passed", n - failed, n);
    fprintf(stderr, "evalCondition (lenient): %zu of %zu passed\n", n - failed, n);
    cr_expect_eq(failed, 0, "%zu of %zu evalCondition cases failed", failed, n);
    json_decref(all);
}

/* Strict mode on the same cases: what it accepts must evaluate exactly as
 * lenient mode does, and what it refuses must be refused with a path. */
Test(cond, conformance_strict_agrees)
{
    json_t *all, *s = eval_cases(&all);
    size_t i, refused = 0, failed = 0;
    json_t *tc;
    json_array_foreach(s, i, tc) {
        const char *name = json_string_value(json_array_get(tc, 0));
        json_t *cj = json_array_get(tc, 1);
        int want = json_is_true(json_array_get(tc, 3));
        json_t *saved = json_array_get(tc, 4);
        struct cond *c = NULL;
        struct reqerr e = { 0 };
        int rc = cond_compile(cj, NULL, &c, &e);
        if (rc) {
            refused++;
            cr_expect_eq(rc, ERR_INVAL, "[%zu] %s", i, name);
            cr_expect_eq(e.status, 400);
            cr_expect_str_eq(e.code, "invalid_condition");
            cr_expect(e.field[0] == '$' && strncmp(e.message, e.field, strlen(e.field)) == 0,
                      "[%zu] %s: field \"%s\", message \"%s\"", i, name, e.field, e.message);
            reqerr_clear(&e);
            continue;
        }
        struct cond_groups *g = NULL;
        if (saved)
            cr_assert_eq(cond_groups_compile(saved, &g, NULL), 0);
        struct cond_env env = { .groups = g };
        int got = cond_eval_json(c, json_array_get(tc, 2), &env);
        if (got != want) {
            failed++;
            cr_log_error("evalCondition[%zu] %s (strict): got %d, want %d", i, name, got, want);
        }
        cond_groups_free(g);
        cond_free(c);
    }
    fprintf(stderr, "evalCondition (strict): %zu compiled and agree, %zu refused\n",
            json_array_size(s) - refused - failed, refused);
    cr_expect_eq(failed, 0);
    cr_expect(refused < json_array_size(s) / 4, "strict mode refuses only dubious cases: %zu", refused);
    /* the cases GrowthBook evaluates to false because they are broken are
     * exactly what strict mode exists to refuse */
    static const struct { const char *name, *field; } must[] = {
        { "unknown operator - pass", "$.name.$regx" },
        { "$regex invalid - pass", "$.name.$regex" },
        { "$in - not array", "$.num.$in" },
        { "$nini - not array", "$.num.$nini" },
    };
    for (size_t k = 0; k < sizeof must / sizeof must[0]; k++) {
        json_t *found = NULL;
        json_array_foreach(s, i, tc)
            if (!strcmp(json_string_value(json_array_get(tc, 0)), must[k].name))
                found = tc;
        cr_assert(found, "case \"%s\" not in the file", must[k].name);
        struct cond *c = NULL;
        struct reqerr e = { 0 };
        cr_expect_eq(cond_compile(json_array_get(found, 1), NULL, &c, &e), ERR_INVAL, "%s", must[k].name);
        cr_expect_str_eq(e.field, must[k].field, "%s", must[k].name);
        reqerr_clear(&e);
    }
    json_decref(all);
}

/* ------------------------------------------------------------------ */
/* every operator, strict mode                                        */

Test(cond, op_eq_ne)
{
    CHECK("{\"a\": {\"$eq\": \"x\"}}", "{\"a\": \"x\"}", 1);
    CHECK("{\"a\": {\"$eq\": 1}}", "{\"a\": \"1\"}", 0);      /* === : no coercion */
    CHECK("{\"a\": {\"$eq\": 1}}", "{\"a\": 1.0}", 1);
    CHECK("{\"a\": {\"$eq\": true}}", "{\"a\": 1}", 0);
    CHECK("{\"a\": {\"$eq\": null}}", "{}", 1);               /* missing reads as null */
    CHECK("{\"a\": {\"$eq\": null}}", "{\"a\": null}", 1);
    CHECK("{\"a\": {\"$eq\": \"x\"}}", "{\"a\": [\"x\"]}", 0);
    CHECK("{\"a\": {\"$ne\": 1}}", "{\"a\": 2}", 1);
    CHECK("{\"a\": {\"$ne\": 1}}", "{\"a\": 1}", 0);
    CHECK("{\"a\": {\"$ne\": 1}}", "{}", 1);
    CHECK("{\"a\": {\"$ne\": \"1\"}}", "{\"a\": 1}", 1);
}

Test(cond, op_relational)
{
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": 6}", 1);
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": 5}", 0);
    CHECK("{\"a\": {\"$gte\": 5}}", "{\"a\": 5}", 1);
    CHECK("{\"a\": {\"$lt\": 5}}", "{\"a\": 4.5}", 1);
    CHECK("{\"a\": {\"$lte\": 5}}", "{\"a\": 5.0}", 1);
    CHECK("{\"a\": {\"$lte\": 5}}", "{\"a\": 5.01}", 0);
    CHECK("{\"a\": {\"$gt\": -1}}", "{}", 1);                 /* null reads as 0 */
    CHECK("{\"a\": {\"$lt\": 1}}", "{\"a\": null}", 1);
    CHECK("{\"a\": {\"$gte\": 1}}", "{\"a\": true}", 1);      /* true is 1 */
    CHECK("{\"a\": {\"$lt\": 1}}", "{\"a\": false}", 1);
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": \"8\"}", 1);      /* numeric string vs number */
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": \" 8 \"}", 1);    /* JS trims */
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": \"abc\"}", 0);    /* NaN */
    CHECK("{\"a\": {\"$lte\": 5}}", "{\"a\": \"abc\"}", 0);
    CHECK("{\"a\": {\"$lt\": \"9\"}}", "{\"a\": \"10\"}", 1);   /* two strings: text order */
    CHECK("{\"a\": {\"$lt\": \"9\"}}", "{\"a\": 10}", 0);       /* one number: numbers */
    CHECK("{\"a\": {\"$gt\": \"b\"}}", "{\"a\": \"ba\"}", 1);
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": [7]}", 1);          /* [7] → "7" → 7 */
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": [7, 8]}", 0);       /* "7,8" → NaN */
    CHECK("{\"a\": {\"$gt\": 5}}", "{\"a\": {\"b\": 9}}", 0);
    CHECK("{\"a\": {\"$gte\": \"2024-01-01\"}}", "{\"a\": \"2024-06-30\"}", 1);
}

Test(cond, op_in_nin)
{
    CHECK("{\"a\": {\"$in\": [1, 2, 3]}}", "{\"a\": 2}", 1);
    CHECK("{\"a\": {\"$in\": [1, 2, 3]}}", "{\"a\": \"2\"}", 0);
    CHECK("{\"a\": {\"$in\": [\"x\", \"y\"]}}", "{\"a\": [\"z\", \"y\"]}", 1);
    CHECK("{\"a\": {\"$in\": [\"x\"]}}", "{\"a\": []}", 0);
    CHECK("{\"a\": {\"$in\": [null]}}", "{}", 1);
    CHECK("{\"a\": {\"$in\": []}}", "{\"a\": 1}", 0);
    CHECK("{\"a\": {\"$in\": [false, 0]}}", "{\"a\": false}", 1);
    CHECK("{\"a\": {\"$in\": [0]}}", "{\"a\": -0.0}", 1);     /* SameValueZero */
    CHECK("{\"a\": {\"$nin\": [1, 2]}}", "{\"a\": 3}", 1);
    CHECK("{\"a\": {\"$nin\": [1, 2]}}", "{\"a\": [3, 2]}", 0);
    CHECK("{\"a\": {\"$nin\": [1, 2]}}", "{}", 1);
    /* a long list is searched, not scanned */
    char big[40000];
    size_t n = (size_t)snprintf(big, sizeof big, "{\"id\": {\"$in\": [");
    for (int i = 0; i < 3000; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%s\"c%05d\"", i ? "," : "", i * 3);
    snprintf(big + n, sizeof big - n, "]}}");
    CHECK(big, "{\"id\": \"c00300\"}", 1);
    CHECK(big, "{\"id\": \"c00301\"}", 0);
    CHECK(big, "{\"id\": \"c08997\"}", 1);
}

Test(cond, op_ini_nini)
{
    CHECK("{\"a\": {\"$ini\": [\"fr\", \"de\"]}}", "{\"a\": \"FR\"}", 1);
    CHECK("{\"a\": {\"$ini\": [\"FR\"]}}", "{\"a\": [\"x\", \"fr\"]}", 1);
    CHECK("{\"a\": {\"$ini\": [\"\\u00c9COLE\"]}}", "{\"a\": \"\\u00e9cole\"}", 1);  /* ÉCOLE / école */
    CHECK("{\"a\": {\"$ini\": [1]}}", "{\"a\": \"1\"}", 0);
    CHECK("{\"a\": {\"$ini\": [1]}}", "{\"a\": 1}", 1);
    CHECK("{\"a\": {\"$nini\": [\"fr\"]}}", "{\"a\": \"Fr\"}", 0);
    CHECK("{\"a\": {\"$nini\": [\"fr\"]}}", "{\"a\": \"es\"}", 1);
}

Test(cond, op_all_alli)
{
    CHECK("{\"t\": {\"$all\": [\"a\", \"b\"]}}", "{\"t\": [\"b\", \"c\", \"a\"]}", 1);
    CHECK("{\"t\": {\"$all\": [\"a\", \"b\"]}}", "{\"t\": [\"b\", \"c\"]}", 0);
    CHECK("{\"t\": {\"$all\": [\"a\"]}}", "{\"t\": \"a\"}", 0);
    CHECK("{\"t\": {\"$all\": []}}", "{\"t\": []}", 1);
    /* items are conditions: operators work too */
    CHECK("{\"t\": {\"$all\": [{\"$regex\": \"^a\"}, {\"$gt\": 10}]}}", "{\"t\": [\"abc\", 11]}", 1);
    CHECK("{\"t\": {\"$all\": [{\"$regex\": \"^a\"}, {\"$gt\": 10}]}}", "{\"t\": [\"abc\", 9]}", 0);
    CHECK("{\"t\": {\"$alli\": [\"A\", \"b\"]}}", "{\"t\": [\"a\", \"B\"]}", 1);
    CHECK("{\"t\": {\"$alli\": [\"A\", \"c\"]}}", "{\"t\": [\"a\", \"B\"]}", 0);
}

Test(cond, op_elemMatch)
{
    CHECK("{\"n\": {\"$elemMatch\": {\"$gt\": 10}}}", "{\"n\": [1, 11]}", 1);
    CHECK("{\"n\": {\"$elemMatch\": {\"$gt\": 10}}}", "{\"n\": [1, 9]}", 0);
    CHECK("{\"n\": {\"$elemMatch\": {\"$lt\": 1}}}", "{\"n\": [0, 5]}", 0); /* 0 is falsy: skipped */
    CHECK("{\"n\": {\"$elemMatch\": {\"$eq\": \"\"}}}", "{\"n\": [\"\", \"x\"]}", 0);
    CHECK("{\"h\": {\"$elemMatch\": {\"name\": \"golf\", \"level\": {\"$gte\": 2}}}}",
          "{\"h\": [{\"name\": \"golf\", \"level\": 1}, {\"name\": \"golf\", \"level\": 3}]}", 1);
    CHECK("{\"h\": {\"$elemMatch\": {\"name\": \"golf\", \"level\": {\"$gte\": 2}}}}",
          "{\"h\": [{\"name\": \"golf\", \"level\": 1}, {\"name\": \"polo\", \"level\": 3}]}", 0);
    CHECK("{\"h\": {\"$elemMatch\": {\"a.b\": 1}}}", "{\"h\": [{\"a\": {\"b\": 1}}]}", 1);
    CHECK("{\"h\": {\"$elemMatch\": {\"name\": \"x\"}}}", "{\"h\": {\"name\": \"x\"}}", 0);
    CHECK("{\"h\": {\"$elemMatch\": {}}}", "{\"h\": [0, null, 1]}", 1);   /* one truthy element */
    CHECK("{\"h\": {\"$elemMatch\": {}}}", "{\"h\": [0, null]}", 0);
}

Test(cond, op_size)
{
    CHECK("{\"t\": {\"$size\": 2}}", "{\"t\": [1, 2]}", 1);
    CHECK("{\"t\": {\"$size\": 2}}", "{\"t\": \"ab\"}", 0);
    CHECK("{\"t\": {\"$size\": 0}}", "{}", 0);
    CHECK("{\"t\": {\"$size\": {\"$gte\": 2, \"$lt\": 4}}}", "{\"t\": [1, 2, 3]}", 1);
    CHECK("{\"t\": {\"$size\": {\"$gte\": 2, \"$lt\": 4}}}", "{\"t\": [1, 2, 3, 4]}", 0);
}

Test(cond, op_exists_type)
{
    CHECK("{\"a.b\": {\"$exists\": true}}", "{\"a\": {\"b\": 0}}", 1);
    CHECK("{\"a.b\": {\"$exists\": true}}", "{\"a\": {\"b\": null}}", 0); /* null is absent */
    CHECK("{\"a.b\": {\"$exists\": false}}", "{\"a\": 1}", 1);
    static const char *types[][2] = {
        { "null", "null" }, { "boolean", "false" }, { "number", "1.5" },
        { "string", "\"\"" }, { "array", "[]" }, { "object", "{}" },
    };
    for (int t = 0; t < 6; t++)
        for (int v = 0; v < 6; v++) {
            char cond[80], attrs[40];
            snprintf(cond, sizeof cond, "{\"a\": {\"$type\": \"%s\"}}", types[t][0]);
            snprintf(attrs, sizeof attrs, "{\"a\": %s}", types[v][1]);
            CHECK(cond, attrs, t == v);
        }
    CHECK("{\"a\": {\"$type\": \"null\"}}", "{}", 1);
}

Test(cond, op_regex)
{
    CHECK("{\"ua\": {\"$regex\": \"(Mobile|Tablet)\"}}", "{\"ua\": \"Android Mobile\"}", 1);
    CHECK("{\"ua\": {\"$regex\": \"^mobile\"}}", "{\"ua\": \"Mobile\"}", 0);
    CHECK("{\"ua\": {\"$regexi\": \"^mobile\"}}", "{\"ua\": \"Mobile\"}", 1);
    CHECK("{\"n\": {\"$regex\": \"^4\\\\d$\"}}", "{\"n\": 42}", 1);    /* String(42) */
    CHECK("{\"n\": {\"$regex\": \"^null$\"}}", "{}", 1);              /* String(null) */
    CHECK("{\"n\": {\"$regex\": \"^a,b$\"}}", "{\"n\": [\"a\", \"b\"]}", 1);
}

Test(cond, op_not)
{
    CHECK("{\"a\": {\"$not\": {\"$gt\": 5}}}", "{\"a\": 3}", 1);
    CHECK("{\"a\": {\"$not\": {\"$gt\": 5}}}", "{\"a\": 6}", 0);
    CHECK("{\"a\": {\"$not\": \"x\"}}", "{\"a\": \"y\"}", 1);
    CHECK("{\"a\": {\"$not\": {\"$not\": {\"$in\": [1]}}}}", "{\"a\": 1}", 1);
}

Test(cond, op_versions)
{
    CHECK("{\"v\": {\"$vgt\": \"1.9.0\"}}", "{\"v\": \"1.10.0\"}", 1);
    CHECK("{\"v\": {\"$vgte\": \"1.10.0\"}}", "{\"v\": \"v1.10.0\"}", 1);
    CHECK("{\"v\": {\"$vlt\": \"1.0.0\"}}", "{\"v\": \"1.0.0-rc.1\"}", 1);
    CHECK("{\"v\": {\"$vlte\": \"1.0.0\"}}", "{\"v\": \"1.0.0+build\"}", 1);
    CHECK("{\"v\": {\"$veq\": \"2.0.0\"}}", "{\"v\": \"2.0.0\"}", 1);
    CHECK("{\"v\": {\"$vne\": \"2.0.0\"}}", "{\"v\": \"2.0.1\"}", 1);
    CHECK("{\"v\": {\"$vgt\": \"1\"}}", "{\"v\": 2}", 1);        /* numbers become text */
    CHECK("{\"v\": {\"$veq\": \"0\"}}", "{}", 1);                 /* missing pads as "0" */
    CHECK("{\"v\": {\"$veq\": \"1.2.3\"}}", "{\"v\": \"1.2.3+x\"}", 1);
    CHECK("{\"v\": {\"$veq\": \"1.2.3\"}}", "{\"v\": \"1.2.3+x\\ny\"}", 0); /* ".*$" stops at a newline */
}

Test(cond, documents_and_or_nor_not)
{
    const char *c = "{\"$or\": [{\"a\": 1}, {\"b\": 1}], \"$nor\": [{\"c\": 1}], \"$not\": {\"d\": 1}}";
    CHECK(c, "{\"a\": 1}", 1);
    CHECK(c, "{\"b\": 1, \"c\": 2}", 1);
    CHECK(c, "{\"b\": 1, \"c\": 1}", 0);
    CHECK(c, "{\"a\": 1, \"d\": 1}", 0);
    CHECK(c, "{}", 0);
    CHECK("{\"$and\": [{\"a\": 1}, {\"$or\": [{\"b\": 2}, {\"$and\": [{\"c\": 3}, {\"d\": 4}]}]}]}",
          "{\"a\": 1, \"c\": 3, \"d\": 4}", 1);
    CHECK("{\"$or\": []}", "{}", 1);
    CHECK("{\"$nor\": []}", "{}", 0);
    CHECK("{\"$and\": []}", "{}", 1);
    CHECK("{}", "{\"x\": 1}", 1);
}

Test(cond, plain_values_coerce)
{
    CHECK("{\"a\": \"10\"}", "{\"a\": 10}", 1);             /* value + "" */
    CHECK("{\"a\": \"10\"}", "{\"a\": 10.0}", 1);
    CHECK("{\"a\": \"null\"}", "{}", 1);
    CHECK("{\"a\": \"a,b\"}", "{\"a\": [\"a\", \"b\"]}", 1);
    CHECK("{\"a\": 8}", "{\"a\": \"8\"}", 1);               /* value * 1 */
    CHECK("{\"a\": 0}", "{\"a\": \"\"}", 1);
    CHECK("{\"a\": 0}", "{}", 1);                           /* null * 1 = 0 */
    CHECK("{\"a\": 0}", "{\"a\": []}", 1);
    CHECK("{\"a\": 26}", "{\"a\": \"0x1A\"}", 1);
    CHECK("{\"a\": 12}", "{\"a\": \"12px\"}", 0);
    CHECK("{\"a\": true}", "{\"a\": \"yes\"}", 1);          /* truthiness, not null */
    CHECK("{\"a\": true}", "{\"a\": 0}", 0);
    CHECK("{\"a\": false}", "{\"a\": 0}", 1);
    CHECK("{\"a\": false}", "{}", 0);
    CHECK("{\"a\": null}", "{\"a\": 0}", 0);
    /* arrays and plain objects: JSON text equality, JS key order */
    CHECK("{\"a\": [1, \"x\", null]}", "{\"a\": [1.0, \"x\", null]}", 1);
    CHECK("{\"a\": {\"y\": 1, \"x\": 2}}", "{\"a\": {\"y\": 1, \"x\": 2}}", 1);
    CHECK("{\"a\": {\"y\": 1, \"x\": 2}}", "{\"a\": {\"x\": 2, \"y\": 1}}", 0);
    CHECK("{\"a\": {\"b\": 1, \"2\": 0, \"1\": 0}}", "{\"a\": {\"1\": 0, \"b\": 1, \"2\": 0}}", 1);
    CHECK("{\"a\": {}}", "{\"a\": {}}", 1);
    CHECK("{\"a\": {}}", "{\"a\": []}", 0);
    CHECK("{\"a\": [\"\\n\\u0001\"]}", "{\"a\": [\"\\n\\u0001\"]}", 1);
}

Test(cond, paths_through_objects_and_arrays)
{
    CHECK("{\"a.b.c\": 1}", "{\"a\": {\"b\": {\"c\": 1}}}", 1);
    CHECK("{\"a.1.x\": 2}", "{\"a\": [{\"x\": 1}, {\"x\": 2}]}", 1);
    CHECK("{\"a.2\": null}", "{\"a\": [1, 2]}", 1);           /* out of range: null */
    CHECK("{\"a.01\": 2}", "{\"a\": [1, 2]}", 0);             /* not an index */
    CHECK("{\"a.length\": 2}", "{\"a\": [1, 2]}", 1);         /* arrays have a length */
    CHECK("{\"a.length\": 3}", "{\"a\": \"abc\"}", 0);        /* strings are not objects */
    CHECK("{\"a.length\": 5}", "{\"a\": {\"length\": 5}}", 1);
    CHECK("{\"a.b\": null}", "{\"a\": 5}", 1);
    CHECK("{\"a.b\": null}", "{\"a\": null}", 1);
}

/* ------------------------------------------------------------------ */
/* compile-time errors (strict mode)                                  */

struct refusal {
    const char *cond, *field, *needle;
};

static void expect_refused(const struct refusal *r, const struct cond_opts *o)
{
    json_t *j = condtfx_json(r->cond);
    struct cond *c = NULL;
    struct reqerr e = { 0 };
    int rc = cond_compile(j, o, &c, &e);
    cr_expect_eq(rc, ERR_INVAL, "%s: rc %d", r->cond, rc);
    cr_expect_null(c);
    cr_expect_eq(e.status, 400, "%s", r->cond);
    cr_expect_str_eq(e.code, "invalid_condition", "%s", r->cond);
    cr_expect_str_eq(e.field, r->field, "%s: field %s, want %s", r->cond, e.field, r->field);
    cr_expect(strncmp(e.message, r->field, strlen(r->field)) == 0 && strstr(e.message, r->needle),
              "%s: message \"%s\" should start with %s and say \"%s\"", r->cond, e.message, r->field,
              r->needle);
    /* lenient mode takes every one of them */
    struct cond_opts lo = { .mode = COND_LENIENT };
    cr_expect_eq(cond_compile(j, &lo, &c, NULL), 0, "lenient %s", r->cond);
    cond_free(c);
    reqerr_clear(&e);
    json_decref(j);
}

Test(cond, strict_errors_name_the_path)
{
    static const struct refusal rs[] = {
        { "{\"$and\": [{}, {\"a\": 1}, {\"age\": {\"$gt\": [1]}}]}", "$.and[2].age.$gt", "number or a string" },
        { "{\"name\": {\"$regx\": \"a\"}}", "$.name.$regx", "unknown operator" },
        { "{\"name\": {\"$regex\": \"/???***[)\"}}", "$.name.$regex", "invalid regular expression" },
        { "{\"name\": {\"$regex\": 5}}", "$.name.$regex", "a string" },
        { "{\"n\": {\"$in\": 1}}", "$.n.$in", "expects an array" },
        { "{\"n\": {\"$nin\": [1, [2]]}}", "$.n.$nin[1]", "never matches" },
        { "{\"n\": {\"$all\": \"x\"}}", "$.n.$all", "expects an array" },
        { "{\"n\": {\"$all\": [1, {\"$foo\": 1}]}}", "$.n.$all[1].$foo", "unknown operator" },
        { "{\"a\": {\"$exists\": 1}}", "$.a.$exists", "true or false" },
        { "{\"a\": {\"$type\": \"int\"}}", "$.a.$type", "one of" },
        { "{\"a\": {\"$gt\": 1, \"b\": 2}}", "$.a", "mixes operators" },
        { "{\"a\": {\"$eq\": [1]}}", "$.a.$eq", "never matches" },
        { "{\"a\": {\"$size\": -1}}", "$.a.$size", "non-negative integer" },
        { "{\"a\": {\"$size\": 1.5}}", "$.a.$size", "non-negative integer" },
        { "{\"a\": {\"$elemMatch\": 5}}", "$.a.$elemMatch", "condition object" },
        { "{\"a\": {\"$elemMatch\": {\"b\": {\"$bad\": 1}}}}", "$.a.$elemMatch.b.$bad", "unknown operator" },
        { "{\"a\": {\"$not\": {\"$bad\": 1}}}", "$.a.$not.$bad", "unknown operator" },
        { "{\"a\": {\"$or\": []}}", "$.a.$or", "belongs in a document" },
        { "{\"a\": {\"$vgt\": {}}}", "$.a.$vgt", "version" },
        { "{\"a\": {\"$inGroup\": 5}}", "$.a.$inGroup", "saved group" },
        { "{\"$or\": {}}", "$.or", "array of conditions" },
        { "{\"$or\": [{}, 1]}", "$.or[1]", "must be an object" },
        { "{\"$not\": []}", "$.not", "must be an object" },
        { "{\"$nor\": [{\"$and\": [{\"x\": {\"$lt\": null}}]}]}", "$.nor[0].and[0].x.$lt", "number or a string" },
        { "\"x\"", "$", "must be an object" },
        { "{\"$gt\": 1}", "$.$gt", "put it under an attribute" },
        { "{\"$groups\": {\"$elemMatch\": {\"$eq\": \"a\"}}}", "$.$groups", "unknown operator" },
        { "{\"a..b\": 1}", "$.a..b", "empty segment" },
        { "{\".a\": 1}", "$..a", "empty segment" },
        { "{\"$segment\": 5}", "$.segment", "segment id" },
        { "{\"$segment\": \"\"}", "$.segment", "segment id" },
        { "{\"a\": {\"$regex\": \"a++\"}}", "$.a.$regex", "possessive" },
        { "{\"a\": {\"$regex\": \"(?>a)\"}}", "$.a.$regex", "invalid group" },
        { "{\"a\": {\"$regex\": \"(*UTF)a\"}}", "$.a.$regex", "nothing to repeat" },
        { "{\"a\": {\"$regex\": \"a{2}{3}\"}}", "$.a.$regex", "nothing to repeat" },
        { "{\"a\": {\"$regex\": \"\\\\ud800\"}}", "$.a.$regex", "surrogate" },
    };
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
        expect_refused(&rs[i], NULL);
}

static int known_segment(void *ud, const char *id, size_t len)
{
    (void)ud;
    return (len == 4 && !memcmp(id, "gold", 4)) || (len == 2 && !memcmp(id, "fr", 2));
}

Test(cond, strict_checks_references)
{
    json_t *gj = condtfx_json("{\"beta\": [\"u1\"]}");
    struct cond_groups *g;
    cr_assert_eq(cond_groups_compile(gj, &g, NULL), 0);
    struct cond_opts o = { .segment_known = known_segment, .groups = g };
    static const struct refusal rs[] = {
        { "{\"$and\": [{\"$segment\": \"gold\"}, {\"$segment\": \"silver\"}]}", "$.and[1].segment",
          "unknown segment \"silver\"" },
        { "{\"id\": {\"$inGroup\": \"alpha\"}}", "$.id.$inGroup", "unknown saved group \"alpha\"" },
        { "{\"id\": {\"$notInGroup\": \"alpha\"}}", "$.id.$notInGroup", "unknown saved group" },
    };
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
        expect_refused(&rs[i], &o);
    struct cond *c = condtfx_compile("{\"$segment\": \"fr\", \"id\": {\"$inGroup\": \"beta\"}}", COND_STRICT, &o);
    cond_free(c);
    cond_groups_free(g);
    json_decref(gj);
}

Test(cond, nesting_limit_in_both_modes)
{
    char text[2048];
    size_t n = 0;
    for (int i = 0; i < COND_MAX_DEPTH + 5; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "{\"$not\": ");
    n += (size_t)snprintf(text + n, sizeof text - n, "{}");
    for (int i = 0; i < COND_MAX_DEPTH + 5; i++)
        text[n++] = '}';
    text[n] = 0;
    json_t *j = condtfx_json(text);
    for (int mode = 0; mode < 2; mode++) {
        struct cond_opts o = { .mode = (enum cond_mode)mode };
        struct cond *c = NULL;
        struct reqerr e = { 0 };
        cr_expect_eq(cond_compile(j, &o, &c, &e), ERR_TOOBIG);
        cr_expect(strstr(e.message, "nested deeper"), "%s", e.message);
        reqerr_clear(&e);
    }
    json_decref(j);
    cr_expect_eq(cond_compile(NULL, NULL, &(struct cond *){ NULL }, NULL), ERR_INVAL);
}

/* ------------------------------------------------------------------ */
/* lenient mode: GrowthBook's answers to broken conditions            */

Test(cond, lenient_runtime_rules)
{
    CHECK_LENIENT("{\"n\": {\"$in\": 1}}", "{\"n\": 1}", 0);
    CHECK_LENIENT("{\"n\": {\"$nin\": 1}}", "{\"n\": 1}", 0);    /* false for both */
    CHECK_LENIENT("{\"n\": {\"$regx\": 1}}", "{\"n\": 1}", 0);
    CHECK_LENIENT("{\"n\": {\"$regex\": 5}}", "{\"n\": 5}", 0);
    CHECK_LENIENT("{\"n\": {\"$type\": 5}}", "{\"n\": 5}", 0);
    CHECK_LENIENT("{\"n\": {\"$exists\": 1}}", "{\"n\": 5}", 1);  /* truthy argument */
    CHECK_LENIENT("{\"n\": {\"$exists\": \"\"}}", "{}", 1);
    CHECK_LENIENT("{\"$or\": {}}", "{}", 1);                      /* `.length` undefined */
    CHECK_LENIENT("{\"$nor\": {}}", "{}", 0);
    CHECK_LENIENT("{\"$or\": null}", "{}", 0);                    /* the SDK throws */
    CHECK_LENIENT("{\"$not\": {\"$or\": null}}", "{}", 0);        /* ... from any depth */
    CHECK_LENIENT("{\"$or\": [{\"a\": 1}, null]}", "{\"a\": 1}", 1); /* short-circuit first */
    CHECK_LENIENT("{\"$or\": [{\"a\": 1}, null]}", "{\"a\": 2}", 0);
    CHECK_LENIENT("{\"a\": {\"$elemMatch\": null}}", "{\"a\": 5}", 0);
    CHECK_LENIENT("{\"$not\": {\"a\": {\"$elemMatch\": null}}}", "{\"a\": 5}", 1);
    CHECK_LENIENT("{\"$not\": {\"a\": {\"$elemMatch\": null}}}", "{\"a\": [1]}", 0);
    CHECK_LENIENT("{\"a\": {\"$elemMatch\": 5}}", "{\"a\": [0, 2]}", 1);  /* no keys: true per truthy item */
    CHECK_LENIENT("{\"a\": {\"$elemMatch\": [7]}}", "{\"a\": [[7]]}", 1); /* index keys */
    CHECK_LENIENT("7", "{}", 1);                                   /* no entries */
    CHECK_LENIENT("null", "{}", 0);
    CHECK_LENIENT("[{\"a\": 1}]", "{\"0\": {\"a\": 1}}", 1);       /* entries of an array */
    CHECK_LENIENT("\"ab\"", "{\"0\": \"a\", \"1\": \"b\"}", 1);    /* entries of a string */
    CHECK_LENIENT("{\"$segment\": 5}", "{\"$segment\": 5}", 1);   /* not a string: GrowthBook's path */
    CHECK_LENIENT("{\"$groups\": \"x\"}", "{\"$groups\": \"x\"}", 1);
    CHECK_LENIENT("{\"a\": {\"$inGroup\": 5}}", "{\"a\": 1}", 0);
    CHECK_LENIENT("{\"a\": {\"$gt\": [5]}}", "{\"a\": 7}", 1);     /* [5] → "5" */
    CHECK_LENIENT("{\"a\": {\"$lt\": {}}}", "{\"a\": \"[object Objecu]\"}", 0);
    CHECK_LENIENT("{\"a\": {\"$lt\": {}}}", "{\"a\": \"[object Objec\"}", 1);
}

/* ------------------------------------------------------------------ */
/* saved groups, segments, dependencies                               */

Test(cond, saved_groups)
{
    json_t *gj = condtfx_json("{\"beta\": [\"u1\", 2, true, null, [1], {\"x\": 1}], \"empty\": []}");
    struct cond_groups *g;
    cr_assert_eq(cond_groups_compile(gj, &g, NULL), 0);
    cr_expect(cond_groups_has(g, "beta", 4));
    cr_expect(cond_groups_has(g, "empty", 5));
    cr_expect_not(cond_groups_has(g, "bet", 3));
    struct cond_env env = { .groups = g };
    struct cond *in = condtfx_compile("{\"id\": {\"$inGroup\": \"beta\"}}", COND_STRICT, NULL);
    struct cond *out = condtfx_compile("{\"id\": {\"$notInGroup\": \"beta\"}}", COND_STRICT, NULL);
    static const struct { const char *attrs; int want; } cases[] = {
        { "{\"id\": \"u1\"}", 1 }, { "{\"id\": 2}", 1 }, { "{\"id\": \"2\"}", 0 }, { "{\"id\": true}", 1 },
        { "{}", 1 } /* null is a member */, { "{\"id\": [\"x\", \"u1\"]}", 1 }, { "{\"id\": [1]}", 0 },
        { "{\"id\": \"U1\"}", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(condtfx_eval(in, cases[i].attrs, &env), cases[i].want, "$inGroup on %s", cases[i].attrs);
        cr_expect_eq(condtfx_eval(out, cases[i].attrs, &env), !cases[i].want, "$notInGroup on %s",
                     cases[i].attrs);
    }
    /* without groups every group is empty */
    cr_expect_eq(condtfx_eval(in, "{\"id\": \"u1\"}", NULL), 0);
    cr_expect_eq(condtfx_eval(out, "{\"id\": \"u1\"}", NULL), 1);
    cond_free(in);
    cond_free(out);
    cond_groups_free(g);
    json_decref(gj);

    struct reqerr e = { 0 };
    json_t *bad = condtfx_json("{\"ok\": [1], \"g\": 5}");
    cr_expect_eq(cond_groups_compile(bad, &g, &e), ERR_INVAL);
    cr_expect_str_eq(e.field, "$.g");
    reqerr_clear(&e);
    json_decref(bad);
    bad = condtfx_json("[1]");
    cr_expect_eq(cond_groups_compile(bad, &g, &e), ERR_INVAL);
    reqerr_clear(&e);
    json_decref(bad);
}

struct segstate {
    int calls;
    int fail;
    char last[16];
    size_t mplen;
};

static int seg_cb(void *ud, const char *id, size_t len, const char *mp, size_t mplen)
{
    struct segstate *s = ud;
    s->calls++;
    snprintf(s->last, sizeof s->last, "%.*s", (int)len, id);
    s->mplen = mplen;
    (void)mp;
    if (s->fail)
        return ERR_IO;
    return len == 4 && !memcmp(id, "gold", 4);
}

Test(cond, segments_through_the_callback)
{
    struct segstate st = { 0 };
    struct cond_env env = { .segment = seg_cb, .segment_ud = &st };
    struct cond *c = condtfx_compile("{\"$or\": [{\"vip\": true}, {\"$segment\": \"gold\"}], "
                                     "\"$not\": {\"$segment\": \"banned\"}}", COND_STRICT, NULL);
    cr_expect_eq(condtfx_eval(c, "{\"vip\": false}", &env), 1);
    cr_expect_str_eq(st.last, "banned");
    cr_expect(st.mplen > 0);
    st.calls = 0;
    cr_expect_eq(condtfx_eval(c, "{\"vip\": true}", &env), 1);
    cr_expect_eq(st.calls, 3, "gold is not asked when vip already passed (one call per entry point)");
    st.fail = 1;
    cr_expect_eq(condtfx_eval(c, "{\"vip\": false}", &env), ERR_IO);
    cr_expect_eq(condtfx_eval(c, "{\"vip\": false}", NULL), ERR_INVAL);
    cond_free(c);
}

Test(cond, dependencies)
{
    struct cond *c = condtfx_compile(
        "{\"country\": \"FR\", \"$or\": [{\"stats.purchase.count\": {\"$gt\": 2}}, {\"tier\": \"gold\"}],"
        " \"$not\": {\"age\": {\"$lt\": 18}}, \"hobbies\": {\"$elemMatch\": {\"name\": \"golf\"}},"
        " \"$and\": [{\"$segment\": \"gold\"}, {\"$segment\": \"fr\"}, {\"country\": {\"$ne\": \"DE\"}}],"
        " \"id\": {\"$inGroup\": \"beta\"}, \"x\": {\"$notInGroup\": \"beta\"}}", COND_STRICT, NULL);
    static const char *paths[] = { "age", "country", "hobbies", "id", "stats.purchase.count", "tier", "x" };
    cr_assert_eq(cond_npaths(c), 7);
    for (size_t i = 0; i < 7; i++)
        cr_expect_str_eq(cond_path(c, i), paths[i]);
    cr_expect_null(cond_path(c, 7));
    cr_assert_eq(cond_nsegments(c), 2);
    cr_expect_str_eq(cond_segment(c, 0), "fr");
    cr_expect_str_eq(cond_segment(c, 1), "gold");
    cr_assert_eq(cond_ngroups(c), 1);
    cr_expect_str_eq(cond_group(c, 0), "beta");
    static const struct { const char *changed; bool reads; } r[] = {
        { "stats", true }, { "stats.purchase", true }, { "stats.purchase.count", true },
        { "stats.purchase.count.x", true }, { "stats.visit", false }, { "statsx", false },
        { "stat", false }, { "country", true }, { "name", false }, { "hobbies", true },
        { "hobbies.0.name", true }, { "", false },
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        cr_expect_eq(cond_reads(c, r[i].changed, strlen(r[i].changed)), r[i].reads, "%s", r[i].changed);
    cond_free(c);
    c = condtfx_compile("{}", COND_STRICT, NULL);
    cr_expect_eq(cond_npaths(c) + cond_nsegments(c) + cond_ngroups(c), 0);
    cr_expect_not(cond_reads(c, "a", 1));
    cond_free(c);
}

/* ------------------------------------------------------------------ */
/* one compiled condition, many threads                               */

struct thr {
    const struct cond *c;
    struct buf *mp;
    int n;
    const int *want;
    int bad;
};

static void *thr_run(void *arg)
{
    struct thr *t = arg;
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < t->n; i++)
            if (cond_eval(t->c, t->mp[i].p, t->mp[i].len, NULL) != t->want[i])
                t->bad++;
    return NULL;
}

Test(cond, concurrent_evaluation)
{
    struct cond *c = condtfx_compile(
        "{\"tier\": {\"$in\": [\"gold\", \"platinum\"]}, \"email\": {\"$regexi\": \"@EXAMPLE\\\\.com$\"},"
        " \"ver\": {\"$vgte\": \"2.0.0\"}, \"tags\": {\"$elemMatch\": {\"$ini\": [\"VIP\"]}}}", COND_STRICT, NULL);
    enum { N = 200 };
    static struct buf mp[N];
    static int want[N];
    static const char *tiers[] = { "gold", "silver", "platinum" };
    for (int i = 0; i < N; i++) {
        char a[256];
        snprintf(a, sizeof a, "{\"tier\": \"%s\", \"email\": \"c%d@%s\", \"ver\": \"%d.%d.0\", \"tags\": [\"x\", \"%s\"]}",
                 tiers[i % 3], i, i % 5 ? "example.com" : "other.org", 1 + i % 3, i % 7, i % 2 ? "vip" : "new");
        json_t *j = condtfx_json(a);
        mp[i] = (struct buf)BUF_INIT;
        cr_assert_eq(codec_json_to_msgpack(j, &mp[i]), 0);
        want[i] = cond_eval(c, mp[i].p, mp[i].len, NULL);
        cr_assert(want[i] == 0 || want[i] == 1);
        json_decref(j);
    }
    int matches = 0;
    for (int i = 0; i < N; i++)
        matches += want[i];
    cr_expect(matches > 10 && matches < N - 10, "a mix of answers: %d", matches);
    pthread_t th[4];
    struct thr t[4];
    for (int k = 0; k < 4; k++) {
        t[k] = (struct thr){ c, mp, N, want, 0 };
        cr_assert_eq(pthread_create(&th[k], NULL, thr_run, &t[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        cr_expect_eq(t[k].bad, 0, "thread %d disagreed %d times", k, t[k].bad);
    }
    for (int i = 0; i < N; i++)
        buf_free(&mp[i]);
    cond_free(c);
}

/* ------------------------------------------------------------------ */
/* many conditions on one profile: the cond_attrs index               */

Test(cond, attrs_index_edges)
{
    struct cond *a4 = condtfx_compile("{\"a\": 4, \"k39\": {\"$gt\": 38}, \"k40\": null}", COND_STRICT, NULL);
    /* a repeated key keeps its last value, as cond_eval reads it */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 42);
    msgpack_pack_str_with_body(&pk, "a", 1);
    msgpack_pack_int(&pk, 1);
    for (int i = 0; i < 40; i++) { /* more keys than the inline index holds */
        char k[8];
        int n = snprintf(k, sizeof k, "k%d", i);
        msgpack_pack_str_with_body(&pk, k, (size_t)n);
        msgpack_pack_int(&pk, i);
    }
    msgpack_pack_str_with_body(&pk, "a", 1);
    msgpack_pack_int(&pk, 4);
    struct cond_attrs at;
    cr_assert_eq(cond_attrs_init(&at, sb.data, sb.size), 0);
    cr_expect_eq(cond_eval_attrs(a4, &at, NULL), 1);
    cr_expect_eq(cond_eval(a4, sb.data, sb.size, NULL), 1);
    cond_attrs_free(&at);
    msgpack_sbuffer_clear(&sb);

    /* an integer key: not indexed, evaluated by reading the map */
    struct cond *seven = condtfx_compile("{\"7\": \"x\"}", COND_STRICT, NULL);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, "x", 1);
    cr_assert_eq(cond_attrs_init(&at, sb.data, sb.size), 0);
    cr_expect_eq(cond_eval_attrs(seven, &at, NULL), 1);
    cond_attrs_free(&at);
    msgpack_sbuffer_clear(&sb);

    /* not a map: not indexed; malformed: refused */
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "x", 1);
    cr_assert_eq(cond_attrs_init(&at, sb.data, sb.size), 0);
    struct cond *zero = condtfx_compile("{\"0\": \"x\"}", COND_STRICT, NULL);
    cr_expect_eq(cond_eval_attrs(zero, &at, NULL), 1);
    cond_attrs_free(&at);
    static const unsigned char bad[] = { 0x82, 0xa1, 'a', 0x01, 0xa1 };
    cr_expect_eq(cond_attrs_init(&at, (const char *)bad, sizeof bad), ERR_PARSE);
    cond_attrs_free(&at);
    cr_expect_eq(cond_attrs_init(&at, "", 0), ERR_PARSE);
    cond_attrs_free(&at);
    msgpack_sbuffer_destroy(&sb);
    cond_free(a4);
    cond_free(seven);
    cond_free(zero);
}

/* 200 generated conditions x 300 generated profiles: the index and the
 * plain reader give the same answer every time. */
Test(cond, attrs_index_agrees_with_cond_eval)
{
    static const char *tiers[] = { "bronze", "silver", "gold", "platinum" };
    static const char *countries[] = { "FR", "DE", "US", "GB", "ES" };
    enum { NC = 200, NP = 300 };
    struct cond *cs[NC];
    unsigned seed = 7;
    for (int k = 0; k < NC; k++) {
        char t[512];
        seed = seed * 1103515245u + 12345u;
        snprintf(t, sizeof t,
                 "{\"$or\": [{\"tier\": {\"$in\": [\"%s\", \"%s\"]}}, {\"age\": {\"$gte\": %u}}],"
                 " \"country\": {\"$nin\": [\"%s\"]}, \"stats.buy.count\": {\"$gt\": %u},"
                 " \"tags\": {\"$elemMatch\": {\"$regex\": \"^t%u\"}}}",
                 tiers[seed % 4], tiers[(seed >> 3) % 4], 20 + (seed >> 5) % 50, countries[(seed >> 9) % 5],
                 (seed >> 12) % 4, (seed >> 15) % 6);
        cs[k] = condtfx_compile(t, COND_STRICT, NULL);
    }
    int agree = 0, yes = 0;
    for (int i = 0; i < NP; i++) {
        char a[512];
        seed = seed * 1103515245u + 12345u;
        snprintf(a, sizeof a,
                 "{\"id\": \"c%d\", \"tier\": \"%s\", \"age\": %u, \"country\": \"%s\","
                 " \"stats\": {\"buy\": {\"count\": %u}}, \"tags\": [\"t%u\", \"t%u\"]%s}",
                 i, tiers[seed % 4], 18 + (seed >> 4) % 60, countries[(seed >> 9) % 5], (seed >> 12) % 6,
                 (seed >> 15) % 6, (seed >> 18) % 6, i % 3 ? ", \"extra\": [1, {\"x\": null}]" : "");
        json_t *j = condtfx_json(a);
        struct buf mp = BUF_INIT;
        cr_assert_eq(codec_json_to_msgpack(j, &mp), 0);
        struct cond_attrs at;
        cr_assert_eq(cond_attrs_init(&at, mp.p, mp.len), 0);
        for (int k = 0; k < NC; k++) {
            int x = cond_eval(cs[k], mp.p, mp.len, NULL), y = cond_eval_attrs(cs[k], &at, NULL);
            agree += x == y;
            yes += x == 1;
        }
        cond_attrs_free(&at);
        buf_free(&mp);
        json_decref(j);
    }
    cr_expect_eq(agree, NC * NP);
    cr_expect(yes > NC * NP / 20 && yes < NC * NP * 19 / 20, "a mix of answers: %d", yes);
    for (int k = 0; k < NC; k++)
        cond_free(cs[k]);
}
