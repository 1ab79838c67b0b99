/*
 * test_cond_js.c — conditions over hand-made msgpack (ints and floats of
 * every width, big ints, bin/ext, nested arrays, repeated and integer keys,
 * non-map roots, malformed and deep input), JavaScript RegExp semantics on
 * PCRE2, and the JavaScript coercions evaluation depends on (Number
 * toString, StringToNumber, UTF-16 string order, toLowerCase).
 *
 * Expected values are JavaScript's (what `node -e` prints for the same
 * expression); the comment on each line names the rule.
 */
#include "cond_tfx.h"

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>

TestSuite(cond_js, .timeout = 60);

/* evaluate a strict condition on raw msgpack bytes */
static int ev_raw(const char *cond, const char *mp, size_t len)
{
    struct cond *c = condtfx_compile(cond, COND_STRICT, NULL);
    int rc = cond_eval(c, mp, len, NULL);
    cond_free(c);
    return rc;
}

#define EXPECT_RAW(cond, sb, want)                                                     \
    do {                                                                               \
        int got_ = ev_raw(cond, (sb)->data, (sb)->size);                               \
        cr_expect_eq(got_, want, "%s: got %d, want %d", cond, got_, want);             \
    } while (0)

static void key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
}

Test(cond_js, msgpack_ints_and_floats)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 10);
    key(&pk, "i"); msgpack_pack_int(&pk, 10);                 /* positive fixint */
    key(&pk, "f"); msgpack_pack_double(&pk, 10.0);
    key(&pk, "g"); msgpack_pack_float(&pk, 0.5f);             /* float32 */
    key(&pk, "neg"); msgpack_pack_int(&pk, -5);               /* negative fixint */
    key(&pk, "i16"); msgpack_pack_int16(&pk, -300);
    key(&pk, "u32"); msgpack_pack_uint32(&pk, 4000000000u);
    key(&pk, "u64"); msgpack_pack_uint64(&pk, UINT64_MAX);
    key(&pk, "i64"); msgpack_pack_int64(&pk, INT64_MAX);
    key(&pk, "p53"); msgpack_pack_int64(&pk, 9007199254740993LL); /* 2^53 + 1 */
    key(&pk, "min"); msgpack_pack_int64(&pk, INT64_MIN);
    EXPECT_RAW("{\"i\": 10}", &sb, 1);
    EXPECT_RAW("{\"f\": 10}", &sb, 1);
    EXPECT_RAW("{\"i\": {\"$eq\": 10.0}}", &sb, 1);           /* one number type */
    EXPECT_RAW("{\"f\": {\"$in\": [10]}}", &sb, 1);
    EXPECT_RAW("{\"f\": \"10\"}", &sb, 1);                    /* (10.0).toString() = "10" */
    EXPECT_RAW("{\"g\": 0.5}", &sb, 1);
    EXPECT_RAW("{\"neg\": -5}", &sb, 1);
    EXPECT_RAW("{\"i16\": {\"$lt\": -299}}", &sb, 1);
    EXPECT_RAW("{\"u32\": 4000000000}", &sb, 1);
    /* beyond 2^53 a msgpack int rounds to a double, as JSON.parse does */
    EXPECT_RAW("{\"u64\": 1.8446744073709552e19}", &sb, 1);
    EXPECT_RAW("{\"u64\": \"18446744073709552000\"}", &sb, 1);
    EXPECT_RAW("{\"i64\": 9223372036854775807}", &sb, 1);
    EXPECT_RAW("{\"i64\": \"9223372036854776000\"}", &sb, 1);
    EXPECT_RAW("{\"p53\": 9007199254740992}", &sb, 1);
    EXPECT_RAW("{\"p53\": \"9007199254740992\"}", &sb, 1);
    EXPECT_RAW("{\"p53\": {\"$gt\": 9007199254740992}}", &sb, 0);
    EXPECT_RAW("{\"min\": {\"$lt\": -9.2e18}}", &sb, 1);
    EXPECT_RAW("{\"i\": {\"$type\": \"number\"}}", &sb, 1);
    msgpack_sbuffer_destroy(&sb);
}

Test(cond_js, msgpack_bin_ext_keys_and_duplicates)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    key(&pk, "b"); msgpack_pack_bin_with_body(&pk, "abc", 3);
    key(&pk, "e"); msgpack_pack_ext_with_body(&pk, "xyz", 3, 5);
    key(&pk, "a"); msgpack_pack_int(&pk, 1);
    key(&pk, "o");
    msgpack_pack_map(&pk, 3);
    key(&pk, "a"); msgpack_pack_int(&pk, 1);
    key(&pk, "b"); msgpack_pack_int(&pk, 2);
    key(&pk, "a"); msgpack_pack_int(&pk, 3);
    key(&pk, "a"); msgpack_pack_int(&pk, 4);                   /* repeated: the last counts */
    msgpack_pack_int(&pk, 7); msgpack_pack_str_with_body(&pk, "seven", 5);   /* integer key */
    msgpack_pack_int(&pk, -2); msgpack_pack_str_with_body(&pk, "m2", 2);
    msgpack_pack_nil(&pk); msgpack_pack_int(&pk, 5);
    EXPECT_RAW("{\"b\": \"abc\"}", &sb, 1);                    /* bin and ext read as strings */
    EXPECT_RAW("{\"e\": \"xyz\"}", &sb, 1);
    EXPECT_RAW("{\"b\": {\"$type\": \"string\"}}", &sb, 1);
    EXPECT_RAW("{\"a\": 4}", &sb, 1);
    EXPECT_RAW("{\"a\": 1}", &sb, 0);
    EXPECT_RAW("{\"o.a\": 3}", &sb, 1);
    EXPECT_RAW("{\"o\": {\"a\": 3, \"b\": 2}}", &sb, 1);        /* JSON.parse keeps the first place */
    EXPECT_RAW("{\"7\": \"seven\"}", &sb, 1);
    EXPECT_RAW("{\"-2\": \"m2\"}", &sb, 1);
    EXPECT_RAW("{\"null\": 5}", &sb, 1);
    msgpack_sbuffer_destroy(&sb);
}

Test(cond_js, msgpack_nested_arrays_and_roots)
{
    json_t *j = condtfx_json("{\"a\": [[1, [2, 3]], {\"k\": [4]}, 0]}");
    struct buf b = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(j, &b), 0);
    msgpack_sbuffer sb = { b.len, b.p, b.cap };
    EXPECT_RAW("{\"a.0.1.1\": 3}", &sb, 1);
    EXPECT_RAW("{\"a.1.k.0\": 4}", &sb, 1);
    EXPECT_RAW("{\"a.0.1\": [2, 3]}", &sb, 1);
    EXPECT_RAW("{\"a.0.1.length\": 2}", &sb, 1);
    EXPECT_RAW("{\"a.5\": null}", &sb, 1);
    EXPECT_RAW("{\"a.5.x\": {\"$exists\": false}}", &sb, 1);
    EXPECT_RAW("{\"a\": {\"$size\": 3}}", &sb, 1);
    EXPECT_RAW("{\"a.0\": {\"$elemMatch\": {\"$size\": 2}}}", &sb, 1);
    EXPECT_RAW("{\"a\": {\"$elemMatch\": {\"k\": {\"$size\": 1}}}}", &sb, 1);
    EXPECT_RAW("{\"a\": \"1,2,3,[object Object],0\"}", &sb, 1); /* Array.prototype.join */
    buf_free(&b);
    json_decref(j);

    /* a root that is not a map reads as JavaScript would read it */
    static const unsigned char arr[] = { 0x92, 0x01, 0x81, 0xa1, 'a', 0x02 }; /* [1, {"a": 2}] */
    cr_expect_eq(ev_raw("{\"0\": 1, \"1.a\": 2, \"length\": 2}", (const char *)arr, sizeof arr), 1);
    static const unsigned char nil[] = { 0xc0 };
    cr_expect_eq(ev_raw("{\"a\": null}", (const char *)nil, 1), 1);
    cr_expect_eq(ev_raw("{\"a\": {\"$exists\": true}}", (const char *)nil, 1), 0);
    static const unsigned char str[] = { 0xa3, 'a', 'b', 'c' };
    cr_expect_eq(ev_raw("{\"length\": null}", (const char *)str, sizeof str), 1);
}

Test(cond_js, msgpack_malformed_and_deep)
{
    cr_expect_eq(ev_raw("{}", "", 0), ERR_PARSE);
    cr_expect_eq(ev_raw("{}", "\xc1", 1), ERR_PARSE);
    /* a map of 3 pairs holding one */
    static const unsigned char short_map[] = { 0x83, 0xa1, 'a', 0x01 };
    cr_expect_eq(ev_raw("{\"a\": 1}", (const char *)short_map, sizeof short_map), ERR_PARSE);
    /* a str8 declaring 200 bytes */
    static const unsigned char short_str[] = { 0x81, 0xa1, 'a', 0xd9, 200, 'x', 'y' };
    cr_expect_eq(ev_raw("{\"a\": \"xy\"}", (const char *)short_str, sizeof short_str), ERR_PARSE);
    /* an array32 declaring 4 billion items */
    static const unsigned char huge[] = { 0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01 };
    cr_expect_eq(ev_raw("{\"a\": {\"$size\": 1}}", (const char *)huge, sizeof huge), ERR_PARSE);
    /* truncated inside a value skipped on the way to the key asked for */
    static const unsigned char skip[] = { 0x82, 0xa1, 'x', 0xcb, 0x40, 0x24, 0xa1, 'a', 0x01 };
    cr_expect_eq(ev_raw("{\"a\": 1}", (const char *)skip, sizeof skip), ERR_PARSE);

    /* 100 nested arrays: fine to test for existence, too deep to turn into text */
    unsigned char deep[256];
    size_t n = 0;
    deep[n++] = 0x81;
    deep[n++] = 0xa1;
    deep[n++] = 'd';
    for (int i = 0; i < 100; i++)
        deep[n++] = 0x91;
    deep[n++] = 0x01;
    cr_expect_eq(ev_raw("{\"d\": {\"$exists\": true}}", (const char *)deep, n), 1);
    cr_expect_eq(ev_raw("{\"d\": \"1\"}", (const char *)deep, n), ERR_TOOBIG);
    /* JSON equality streams: it stops at the first differing byte */
    cr_expect_eq(ev_raw("{\"d\": [1]}", (const char *)deep, n), 0);
    cr_expect_eq(ev_raw("{\"d\": {\"$size\": 1}}", (const char *)deep, n), 1);
}

Test(cond_js, long_values_leave_the_stack_buffer)
{
    char a[1100], low[1100], attrs[4000], cond[2400];
    memset(a, 'A', 1000);
    a[1000] = 0;
    memset(low, 'a', 1000);
    low[1000] = 0;
    snprintf(attrs, sizeof attrs, "{\"s\": \"%s\", \"t\": [\"%s\", \"%s\"], \"v\": \"1.%s\"}", a, a, low, "2.3");
    snprintf(cond, sizeof cond, "{\"s\": {\"$ini\": [\"%s\"]}}", low);
    CHECK(cond, attrs, 1);
    snprintf(cond, sizeof cond, "{\"t\": {\"$regexi\": \"^a{1000},a{1000}$\"}}");
    CHECK(cond, attrs, 1);
    snprintf(cond, sizeof cond, "{\"t\": {\"$alli\": [\"%s\"]}}", low);
    CHECK(cond, attrs, 1);
    snprintf(cond, sizeof cond, "{\"s\": \"%s\"}", low);
    CHECK(cond, attrs, 0);
}

/* ------------------------------------------------------------------ */
/* JavaScript RegExp on PCRE2                                         */

Test(cond_js, regex_javascript_meanings)
{
    CHECK("{\"s\": {\"$regex\": \"^a.b$\"}}", "{\"s\": \"a b\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^a.b$\"}}", "{\"s\": \"a\\nb\"}", 0);        /* . excludes line terminators */
    CHECK("{\"s\": {\"$regex\": \"^a.b$\"}}", "{\"s\": \"a\\u2028b\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"^a.b$\"}}", "{\"s\": \"a\\u00e9b\"}", 1);    /* one character */
    CHECK("{\"s\": {\"$regex\": \"c$\"}}", "{\"s\": \"abc\\n\"}", 0);          /* $ is the very end */
    CHECK("{\"s\": {\"$regex\": \"^b\"}}", "{\"s\": \"a\\nb\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"a\\\\sb\"}}", "{\"s\": \"a\\u00a0b\"}", 1);  /* \s is Unicode space */
    CHECK("{\"s\": {\"$regex\": \"a\\\\sb\"}}", "{\"s\": \"a\\u3000b\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"a\\\\Sb\"}}", "{\"s\": \"a\\u00a0b\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"a[\\\\s]b\"}}", "{\"s\": \"a\\ufeffb\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^\\\\v$\"}}", "{\"s\": \"\\u000b\"}", 1);    /* \v is VT only */
    CHECK("{\"s\": {\"$regex\": \"^\\\\v$\"}}", "{\"s\": \"\\n\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"^\\\\a\\\\e$\"}}", "{\"s\": \"ae\"}", 1);    /* identity escapes */
    CHECK("{\"s\": {\"$regex\": \"^\\\\p{L}$\"}}", "{\"s\": \"p{L}\"}", 1);   /* no \p without u */
    CHECK("{\"s\": {\"$regex\": \"^\\\\p{L}$\"}}", "{\"s\": \"x\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"^[[:alpha:]]$\"}}", "{\"s\": \"a]\"}", 1);  /* no POSIX classes */
    CHECK("{\"s\": {\"$regex\": \"^[[:alpha:]]$\"}}", "{\"s\": \"b\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"^\\\\d$\"}}", "{\"s\": \"\\u0663\"}", 0);   /* \d is ASCII */
    CHECK("{\"s\": {\"$regex\": \"^\\\\w$\"}}", "{\"s\": \"\\u00e9\"}", 0);
    CHECK("{\"s\": {\"$regex\": \"a[]\"}}", "{\"s\": \"a\"}", 0);              /* [] never matches */
    CHECK("{\"s\": {\"$regex\": \"^a[^]b$\"}}", "{\"s\": \"a\\nb\"}", 1);      /* [^] anything */
    CHECK("{\"s\": {\"$regex\": \"^\\\\x41\\\\u0042$\"}}", "{\"s\": \"AB\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^\\\\x4$\"}}", "{\"s\": \"x4\"}", 1);        /* \x needs two digits */
    CHECK("{\"s\": {\"$regex\": \"^\\\\ud83d\\\\ude00$\"}}", "{\"s\": \"\\ud83d\\ude00\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^\\\\cJ$\"}}", "{\"s\": \"\\n\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^x{,2}$\"}}", "{\"s\": \"x{,2}\"}", 1);      /* not a quantifier */
    CHECK("{\"s\": {\"$regex\": \"a.*?b\"}}", "{\"s\": \"aXbYb\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"(?<=\\\\$)\\\\d+\"}}", "{\"s\": \"$42\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^(?<y>\\\\d{4})-\\\\k<y>$\"}}", "{\"s\": \"2024-2024\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^(a)\\\\1$\"}}", "{\"s\": \"aa\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"^\\\\1(a)$\"}}", "{\"s\": \"a\"}", 1);     /* unset group: empty */
    CHECK("{\"s\": {\"$regex\": \"^(?:ab)+(?!c)\"}}", "{\"s\": \"ababd\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"a\\\\/b\"}}", "{\"s\": \"a/b\"}", 1);
    CHECK("{\"s\": {\"$regex\": \"a/b\"}}", "{\"s\": \"a/b\"}", 1);
    CHECK("{\"s\": {\"$regexi\": \"^\\u00e9cole$\"}}", "{\"s\": \"\\u00c9COLE\"}", 1);
    CHECK("{\"s\": {\"$regexi\": \"^[a-z]+$\"}}", "{\"s\": \"ABC\"}", 1);
}

Test(cond_js, regex_hostile_subjects)
{
    /* invalid UTF-8 in the attribute: matched safely */
    static const unsigned char bad[] = { 0x81, 0xa1, 's', 0xa5, 0xff, 0xfe, 'a', 'b', 'c' };
    int rc = ev_raw("{\"s\": {\"$regex\": \"abc\"}}", (const char *)bad, sizeof bad);
    cr_expect_eq(rc, 1);
    rc = ev_raw("{\"s\": {\"$regex\": \"^.{5}$\"}}", (const char *)bad, sizeof bad);
    cr_expect(rc == 0 || rc == 1);
    /* catastrophic backtracking ends at the match limit: no match */
    char attrs[200];
    snprintf(attrs, sizeof attrs, "{\"s\": \"%s!\"}", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK("{\"s\": {\"$regex\": \"^(a|aa)+$\"}}", attrs, 0);
    CHECK("{\"s\": {\"$regex\": \"^(a|aa)+!$\"}}", attrs, 1);
}

/* ------------------------------------------------------------------ */
/* JavaScript coercions                                               */

Test(cond_js, number_to_string)
{
    static const struct { const char *num, *text; } r[] = {
        { "0.1", "0.1" }, { "1e21", "1e+21" }, { "1e-7", "1e-7" }, { "123.456", "123.456" },
        { "-0.0", "0" }, { "0.000001", "0.000001" }, { "1.5e300", "1.5e+300" },
        { "5e-324", "5e-324" }, { "100", "100" }, { "1e20", "100000000000000000000" },
        { "1.2345678901234568e20", "123456789012345680000" }, { "0.30000000000000004", "0.30000000000000004" },
        { "-2.5", "-2.5" }, { "1.7976931348623157e308", "1.7976931348623157e+308" },
        { "4.35", "4.35" }, { "0.000123", "0.000123" }, { "1.23e-7", "1.23e-7" }, { "-1e-7", "-1e-7" },
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        char cond[80], attrs[80];
        snprintf(cond, sizeof cond, "{\"x\": \"%s\"}", r[i].text);
        snprintf(attrs, sizeof attrs, "{\"x\": %s}", r[i].num);
        CHECK(cond, attrs, 1);
    }
}

Test(cond_js, string_to_number)
{
    static const struct { const char *text; const char *num; int want; } r[] = {
        { "1e3", "1000", 1 }, { " \\t1000\\n", "1000", 1 }, { "1,000", "1000", 0 }, { ".5", "0.5", 1 },
        { "5.", "5", 1 }, { "+5", "5", 1 }, { "-5", "-5", 1 }, { "-0x5", "-5", 0 }, { "0x5", "5", 1 },
        { "0b101", "5", 1 }, { "0o17", "15", 1 }, { "0X1f", "31", 1 }, { "08", "8", 1 },
        { "inf", "0", 0 }, { "5e", "5", 0 }, { "e5", "0", 0 }, { ".", "0", 0 }, { "", "0", 1 },
        { "\\u00a05\\u3000", "5", 1 }, { "\\ufeff7", "7", 1 }, { "1_000", "1000", 0 },
        { "0x", "0", 0 }, { "12abc", "12", 0 }, { "0.1e1", "1", 1 },
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        char cond[80], attrs[80];
        snprintf(cond, sizeof cond, "{\"x\": %s}", r[i].num);
        snprintf(attrs, sizeof attrs, "{\"x\": \"%s\"}", r[i].text);
        CHECK(cond, attrs, r[i].want);
    }
    CHECK("{\"x\": {\"$gt\": 1e308}}", "{\"x\": \"Infinity\"}", 1);
    CHECK("{\"x\": {\"$lt\": -1e308}}", "{\"x\": \"-Infinity\"}", 1);
}

Test(cond_js, nan_and_infinity_attributes)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    key(&pk, "n"); msgpack_pack_double(&pk, NAN);
    key(&pk, "i"); msgpack_pack_double(&pk, INFINITY);
    key(&pk, "a"); msgpack_pack_array(&pk, 1); msgpack_pack_double(&pk, NAN);
    EXPECT_RAW("{\"n\": \"NaN\"}", &sb, 1);
    EXPECT_RAW("{\"n\": {\"$type\": \"number\"}}", &sb, 1);
    EXPECT_RAW("{\"n\": {\"$gt\": 0}}", &sb, 0);
    EXPECT_RAW("{\"n\": {\"$lte\": 0}}", &sb, 0);
    EXPECT_RAW("{\"n\": {\"$ne\": 0}}", &sb, 1);
    EXPECT_RAW("{\"n\": {\"$exists\": true}}", &sb, 1);
    EXPECT_RAW("{\"n\": false}", &sb, 1);                      /* NaN is falsy */
    EXPECT_RAW("{\"i\": \"Infinity\"}", &sb, 1);
    EXPECT_RAW("{\"i\": {\"$gt\": 1e308}}", &sb, 1);
    EXPECT_RAW("{\"a\": [null]}", &sb, 1);                     /* JSON.stringify(NaN) */
    EXPECT_RAW("{\"a\": {\"$elemMatch\": {\"$exists\": true}}}", &sb, 0); /* NaN skipped */
    msgpack_sbuffer_destroy(&sb);
}

Test(cond_js, strings_order_by_utf16_code_units)
{
    /* U+1F600 is \ud83d\ude00 in JS: below U+FFFF, although its UTF-8 is above */
    CHECK("{\"s\": {\"$lt\": \"\\uffff\"}}", "{\"s\": \"\\ud83d\\ude00\"}", 1);
    CHECK("{\"s\": {\"$gt\": \"\\ue000\"}}", "{\"s\": \"\\ud83d\\ude00\"}", 0);
    CHECK("{\"s\": {\"$gt\": \"\\ud83d\\ude00\"}}", "{\"s\": \"\\ud83d\\ude01\"}", 1);
    CHECK("{\"s\": {\"$gt\": \"z\"}}", "{\"s\": \"\\u00e9\"}", 1);
    CHECK("{\"s\": {\"$lt\": \"\\u00e9\"}}", "{\"s\": \"e\\u0301\"}", 1);      /* no normalisation */
    CHECK("{\"s\": {\"$lt\": \"ab\"}}", "{\"s\": \"a\"}", 1);
}

Test(cond_js, lower_case_as_javascript)
{
    CHECK("{\"s\": {\"$ini\": [\"i\\u0307\"]}}", "{\"s\": \"\\u0130\"}", 1);   /* İ → i̇ */
    CHECK("{\"s\": {\"$ini\": [\"i\"]}}", "{\"s\": \"\\u0130\"}", 0);
    CHECK("{\"s\": {\"$ini\": [\"\\u03c3\"]}}", "{\"s\": \"\\u03a3\"}", 1);    /* Σ alone → σ */
    CHECK("{\"s\": {\"$ini\": [\"\\u03bf\\u03b4\\u03bf\\u03c2\"]}}",          /* ΟΔΟΣ → οδος, final ς */
          "{\"s\": \"\\u039f\\u0394\\u039f\\u03a3\"}", 1);
    CHECK("{\"s\": {\"$ini\": [\"\\u0436\"]}}", "{\"s\": \"\\u0416\"}", 1);    /* Ж → ж */
    CHECK("{\"s\": {\"$ini\": [\"\\ud801\\udc28\"]}}", "{\"s\": \"\\ud801\\udc00\"}", 1); /* Deseret */
    CHECK("{\"t\": {\"$alli\": [\"\\u00c9T\\u00c9\"]}}", "{\"t\": [\"\\u00e9t\\u00e9\"]}", 1);
    CHECK("{\"s\": {\"$nini\": [\"STRASSE\"]}}", "{\"s\": \"stra\\u00dfe\"}", 1); /* ß stays ß */
}

/* ------------------------------------------------------------------ */
/* hostile input                                                      */

/* Random byte changes and truncations of a profile: every evaluation ends
 * with an answer or ERR_PARSE/ERR_TOOBIG (ASan and UBSan watch the rest),
 * and the indexed reader agrees with the plain one. */
Test(cond_js, mutated_msgpack_is_refused_cleanly)
{
    static const char *conds[] = {
        "{\"tier\": {\"$in\": [\"gold\"]}, \"age\": {\"$gte\": 20}}",
        "{\"email\": {\"$regexi\": \"@EXAMPLE\"}, \"consent.email\": true}",
        "{\"interests\": {\"$elemMatch\": {\"$eq\": \"wine\"}}, \"stats.buy.count\": {\"$gt\": 1}}",
        "{\"v\": {\"$vgte\": \"1.2.0\"}, \"tags\": {\"$alli\": [\"A\"]}, \"o\": {\"k\": [1, 2]}}",
        "{\"$or\": [{\"interests\": \"beach,wine\"}, {\"stats\": {\"$size\": 0}}], \"n\": {\"$lt\": \"9\"}}",
    };
    enum { NC = sizeof conds / sizeof conds[0] };
    struct cond *cs[NC];
    for (int k = 0; k < NC; k++)
        cs[k] = condtfx_compile(conds[k], COND_STRICT, NULL);
    json_t *p = condtfx_json("{\"id\": \"c1\", \"tier\": \"gold\", \"age\": 34, \"email\": \"a@example.com\","
                             " \"consent\": {\"email\": true}, \"interests\": [\"beach\", \"wine\"],"
                             " \"stats\": {\"buy\": {\"count\": 3, \"last\": 1.5}}, \"v\": \"1.10.0\","
                             " \"tags\": [\"a\", \"b\"], \"o\": {\"k\": [1, 2]}, \"n\": 10}");
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(p, &mp), 0);
    for (int k = 0; k < NC; k++)
        cr_assert_eq(cond_eval(cs[k], mp.p, mp.len, NULL), k == 4 ? 0 : 1, "the unmutated profile: %s", conds[k]);
    char *m = malloc(mp.len);
    unsigned seed = 1;
    long answers = 0, refusals = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(m, mp.p, mp.len);
        size_t len = mp.len;
        seed = seed * 1103515245u + 12345u;
        int changes = 1 + (int)(seed >> 16) % 3;
        for (int c = 0; c < changes; c++) {
            seed = seed * 1103515245u + 12345u;
            m[(seed >> 8) % len] = (char)(seed >> 20);
        }
        if (it % 4 == 0)
            len = (seed >> 4) % mp.len;
        struct cond_attrs at;
        int ai = cond_attrs_init(&at, m, len);
        for (int k = 0; k < NC; k++) {
            int r = cond_eval(cs[k], m, len, NULL);
            cr_assert(r == 0 || r == 1 || r == ERR_PARSE || r == ERR_TOOBIG, "iteration %d: %d", it, r);
            if (ai == 0)
                cr_assert_eq(cond_eval_attrs(cs[k], &at, NULL), r, "iteration %d, condition %d", it, k);
            else
                cr_assert(r < 0, "iteration %d: the index refused what cond_eval read", it);
            if (r >= 0)
                answers++;
            else
                refusals++;
        }
        cond_attrs_free(&at);
    }
    cr_expect(answers > 1000 && refusals > 1000, "both outcomes seen: %ld answers, %ld refusals", answers,
              refusals);
    free(m);
    buf_free(&mp);
    json_decref(p);
    for (int k = 0; k < NC; k++)
        cond_free(cs[k]);
}

/* Random condition documents: lenient mode compiles every one, strict mode
 * compiles or refuses with a path, evaluation answers. */
static json_t *rand_value(unsigned *seed, int depth)
{
    static const char *keys[] = { "$eq", "$ne", "$gt", "$lte", "$in", "$nin", "$ini", "$all", "$alli",
                                  "$elemMatch", "$size", "$exists", "$type", "$regex", "$regexi", "$not",
                                  "$vgt", "$veq", "$inGroup", "$and", "$or", "$nor", "$segment", "$bogus",
                                  "a", "b.c", "tags", "0", "length", "" };
    static const char *strs[] = { "a", "B", "1.2.3", "^a", "(?", "[", "number", "gold", "", "\xc3\xa9" };
    *seed = *seed * 1103515245u + 12345u;
    unsigned r = *seed >> 8;
    int kind = depth > 4 ? (int)(r % 5) : (int)(r % 8);
    switch (kind) {
    case 0: return json_null();
    case 1: return json_boolean(r & 256);
    case 2: return json_real((double)((int)(r % 200) - 100) / 4);
    case 3: case 4: return json_string(strs[(r >> 9) % 10]);
    case 5: {
        json_t *a = json_array();
        for (unsigned i = 0; i < (r >> 9) % 4; i++)
            json_array_append_new(a, rand_value(seed, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (unsigned i = 0; i < 1 + (r >> 9) % 3; i++) {
            *seed = *seed * 1103515245u + 12345u;
            json_object_set_new(o, keys[(*seed >> 8) % 30], rand_value(seed, depth + 1));
        }
        return o;
    }
    }
}

static int any_segment(void *ud, const char *id, size_t len, const char *mp, size_t mplen)
{
    (void)ud, (void)id, (void)mp, (void)mplen;
    return len % 2;
}

Test(cond_js, random_conditions_compile_or_refuse)
{
    json_t *gj = condtfx_json("{\"gold\": [\"a\", 1]}");
    struct cond_groups *g;
    cr_assert_eq(cond_groups_compile(gj, &g, NULL), 0);
    struct cond_env env = { .groups = g, .segment = any_segment };
    json_t *p = condtfx_json("{\"a\": \"a\", \"b\": {\"c\": [1, \"B\"]}, \"tags\": [\"gold\", 3, null, {\"a\": 1}],"
                             " \"0\": 1.5, \"length\": \"1.2.3\"}");
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(p, &mp), 0);
    unsigned seed = 99;
    int strict_ok = 0, strict_refused = 0, matched = 0;
    for (int it = 0; it < 3000; it++) {
        json_t *c = rand_value(&seed, 0);
        struct cond_opts lo = { .mode = COND_LENIENT };
        struct cond *lc = NULL, *sc = NULL;
        struct reqerr e = { 0 };
        cr_assert_eq(cond_compile(c, &lo, &lc, &e), 0, "lenient refused: %s", e.message);
        int r = cond_eval(lc, mp.p, mp.len, &env);
        cr_assert(r == 0 || r == 1, "iteration %d: %d", it, r);
        matched += r;
        if (cond_compile(c, NULL, &sc, &e) == 0) {
            strict_ok++;
            cr_assert_eq(cond_eval(sc, mp.p, mp.len, &env), r, "strict and lenient disagree (iteration %d)", it);
            cond_free(sc);
        } else {
            strict_refused++;
            cr_assert(e.field[0] == '$' && e.message[0] == '$', "iteration %d: %s", it, e.message);
        }
        reqerr_clear(&e);
        cond_free(lc);
        json_decref(c);
    }
    cr_expect(strict_ok > 20 && strict_refused > 100 && matched > 100,
              "%d strict, %d refused, %d matched", strict_ok, strict_refused, matched);
    buf_free(&mp);
    json_decref(p);
    cond_groups_free(g);
    json_decref(gj);
}
