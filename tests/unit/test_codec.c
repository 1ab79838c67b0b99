/* test_codec.c — JSON ⇄ msgpack round trips, hostile msgpack, JSON limits. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "codec/jscan.h"
#include "base/err.h"

TestSuite(codec, .timeout = 60);

static json_t *parse_ok(const char *s, size_t len)
{
    int err = 1;
    char msg[160];
    json_t *v = codec_parse_json(s, len, &err, msg, sizeof msg);
    cr_assert(v, "parse '%.60s': %s", s, msg);
    cr_assert_eq(err, 0);
    return v;
}

static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    cr_assert(s);
    return s;
}

/* text → json → msgpack → json → text must give the same text as
 * text → json → text: same types, values and key order. */
static void roundtrip(const char *text, size_t len)
{
    json_t *a = parse_ok(text, len);
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(a, &mp), 0, "encode '%.60s'", text);
    int err = 1;
    json_t *b = codec_msgpack_to_json(mp.p, mp.len, &err);
    cr_assert(b, "decode '%.60s': %s", text, err_str(err));
    cr_assert_eq(err, 0);
    char *da = dump(a), *db = dump(b);
    cr_expect_str_eq(db, da, "round trip of '%.60s'", text);
    cr_expect(json_equal(a, b));
    cr_expect_eq(json_typeof(a), json_typeof(b));
    free(da);
    free(db);
    json_decref(a);
    json_decref(b);
    buf_free(&mp);
}

/* Criterion re-executes the binary for each test (with a new ASLR layout),
 * so parameters are copied by value: strings live inline, never as pointers. */
struct rt {
    char text[128];
};

ParameterizedTestParameters(codec, roundtrip)
{
    static struct rt cases[] = {
        { "null" }, { "true" }, { "false" },
        { "0" }, { "1" }, { "-1" }, { "127" }, { "128" }, { "255" }, { "256" },
        { "65535" }, { "65536" }, { "4294967295" }, { "4294967296" },
        { "-32" }, { "-33" }, { "-128" }, { "-129" }, { "-32768" }, { "-32769" },
        { "-2147483648" }, { "-2147483649" },
        { "9223372036854775807" }, { "-9223372036854775808" },
        { "9223372036854775806" }, { "-9223372036854775807" },
        { "2.5" }, { "-0.0" }, { "0.1" }, { "1e300" }, { "-1.5e-300" },
        { "1.7976931348623157e308" }, { "5e-324" }, { "1.0" }, { "3.0e2" },
        { "\"\"" }, { "\"hello\"" }, { "\"Zo\\u00eb \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"" },
        { "\"\\ud83d\\ude00 \\\" \\\\ \\n \\t\"" },
        { "[]" }, { "{}" }, { "[[]]" }, { "[{}]" }, { "{\"\":{}}" },
        { "[1,[2,[3,[4,[5]]]],\"x\",null,true,false,1.5]" },
        { "{\"z\":1,\"a\":2,\"m\":{\"y\":[],\"b\":{},\"a\":null},\"b\":[{\"k\":\"v\"}]}" },
        { "{\"\xc3\xa9t\xc3\xa9\":\"\xe2\x82\xac\",\"emoji \xf0\x9f\x8e\x89\":[1,2.25,-3]}" },
        { "{\"n\":-9223372036854775808,\"x\":9223372036854775807,\"r\":-0.5}" },
    };
    return cr_make_param_array(struct rt, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct rt *c, codec, roundtrip)
{
    roundtrip(c->text, strlen(c->text));
}

/* Lengths across every msgpack size class boundary. */
Test(codec, roundtrip_size_classes)
{
    static const size_t lens[] = { 0, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000 };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        struct buf t = BUF_INIT;
        /* string of n bytes */
        buf_addc(&t, '"');
        for (size_t j = 0; j < n; j++)
            buf_addc(&t, (char)('a' + j % 26));
        buf_addc(&t, '"');
        roundtrip(t.p, t.len);
        /* array of n elements */
        buf_reset(&t);
        buf_addc(&t, '[');
        for (size_t j = 0; j < n; j++)
            buf_printf(&t, "%s%zu", j ? "," : "", j);
        buf_addc(&t, ']');
        roundtrip(t.p, t.len);
        /* object of n keys, in reverse-sorted order to catch reordering */
        buf_reset(&t);
        buf_addc(&t, '{');
        for (size_t j = 0; j < n; j++)
            buf_printf(&t, "%s\"k%08zu\":%zu", j ? "," : "", n - j, j);
        buf_addc(&t, '}');
        roundtrip(t.p, t.len);
        buf_free(&t);
    }
}

Test(codec, integer_edges_encoding)
{
    struct buf mp = BUF_INIT;
    json_t *v = json_integer(INT64_MIN);
    cr_assert_eq(codec_json_to_msgpack(v, &mp), 0);
    cr_expect_eq(mp.len, 9);
    cr_expect_eq(memcmp(mp.p, "\xd3\x80\0\0\0\0\0\0\0", 9), 0);
    json_decref(v);
    buf_reset(&mp);
    v = json_integer(INT64_MAX);
    cr_assert_eq(codec_json_to_msgpack(v, &mp), 0);
    cr_expect_eq(mp.len, 9);
    cr_expect_eq((unsigned char)mp.p[1], 0x7f);
    json_decref(v);
    buf_reset(&mp);
    v = json_real(2.0);
    cr_assert_eq(codec_json_to_msgpack(v, &mp), 0);
    cr_expect_eq((unsigned char)mp.p[0], 0xcb, "reals stay reals");
    json_decref(v);
    buf_free(&mp);
}

Test(codec, decode_extras)
{
    int err;
    json_t *v;
    /* float32 */
    v = codec_msgpack_to_json("\xca\x40\x20\x00\x00", 5, &err);
    cr_assert(v);
    cr_expect(json_is_real(v) && json_real_value(v) == 2.5);
    json_decref(v);
    /* bin and ext become strings */
    v = codec_msgpack_to_json("\xc4\x03" "abc", 5, &err);
    cr_assert(v);
    cr_expect_str_eq(json_string_value(v), "abc");
    json_decref(v);
    v = codec_msgpack_to_json("\xd5\x07" "hi", 4, &err);
    cr_assert(v);
    cr_expect_str_eq(json_string_value(v), "hi");
    json_decref(v);
    v = codec_msgpack_to_json("\xc7\x02\x01" "ok", 5, &err);
    cr_assert(v);
    cr_expect_str_eq(json_string_value(v), "ok");
    json_decref(v);
    /* int8/16/32 sign extension */
    v = codec_msgpack_to_json("\x93\xd0\x80\xd1\xff\xfe\xd2\x80\x00\x00\x00", 11, &err);
    cr_assert(v);
    cr_expect_eq(json_integer_value(json_array_get(v, 0)), -128);
    cr_expect_eq(json_integer_value(json_array_get(v, 1)), -2);
    cr_expect_eq(json_integer_value(json_array_get(v, 2)), INT32_MIN);
    json_decref(v);
    /* non-string keys are stringified; duplicates: last wins, first position */
    static const char m[] = "\x86"
                            "\x01\xa1" "a"
                            "\xc0\xa1" "b"
                            "\xc3\xa1" "c"
                            "\xd0\xfb\xa1" "d"
                            "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xa1" "e"
                            "\x01\xa1" "f";
    v = codec_msgpack_to_json(m, sizeof m - 1, &err);
    cr_assert(v, "%s", err_str(err));
    char *s = dump(v);
    cr_expect_str_eq(s, "{\"1\":\"f\",\"null\":\"b\",\"true\":\"c\",\"-5\":\"d\",\"1.5\":\"e\"}");
    free(s);
    json_decref(v);
}

struct hostile {
    char name[32];
    char bytes[24];
    size_t len;
    int err;
};

#define H(name, lit, err) { name, lit, sizeof(lit) - 1, err }

ParameterizedTestParameters(codec, hostile_msgpack)
{
    static struct hostile cases[] = {
        H("empty", "", ERR_PARSE),
        H("never-used 0xc1", "\xc1", ERR_PARSE),
        H("uint16 truncated", "\xcd\x01", ERR_PARSE),
        H("uint64 truncated", "\xcf\x01\x02\x03", ERR_PARSE),
        H("float64 truncated", "\xcb\x00\x00", ERR_PARSE),
        H("float32 truncated", "\xca\x00", ERR_PARSE),
        H("fixstr short", "\xa5" "abc", ERR_PARSE),
        H("str8 no length", "\xd9", ERR_PARSE),
        H("str8 short", "\xd9\x05" "ab", ERR_PARSE),
        H("str16 short", "\xda\x01\x00" "ab", ERR_PARSE),
        H("str32 claims 4 GB", "\xdb\xff\xff\xff\xff" "abc", ERR_PARSE),
        H("bin32 claims 4 GB", "\xc6\xff\xff\xff\xff" "abc", ERR_PARSE),
        H("ext32 claims 4 GB", "\xc9\xff\xff\xff\xff\x01" "abc", ERR_PARSE),
        H("ext8 no type", "\xc7\x01", ERR_PARSE),
        H("fixext16 short", "\xd8\x01" "abc", ERR_PARSE),
        H("array32 claims 4G items", "\xdd\xff\xff\xff\xff\x01\x02", ERR_PARSE),
        H("map32 claims 4G pairs", "\xdf\xff\xff\xff\xff\xa1" "a\x01", ERR_PARSE),
        H("array16 short", "\xdc\x00\x03\x01\x02", ERR_PARSE),
        H("fixarray missing item", "\x92\x01", ERR_PARSE),
        H("fixmap missing value", "\x81\xa1" "k", ERR_PARSE),
        H("fixmap missing key", "\x81", ERR_PARSE),
        H("map key is array", "\x81\x90\x01", ERR_PARSE),
        H("map key is map", "\x81\x80\x01", ERR_PARSE),
        H("map key is array16", "\x81\xdc\x00\x00\x01", ERR_PARSE),
        H("trailing nil", "\xc0\xc0", ERR_PARSE),
        H("trailing byte after int", "\x01\x00", ERR_PARSE),
        H("trailing after array", "\x91\x01\x02", ERR_PARSE),
        H("invalid utf8", "\xa2\xc3\x28", ERR_PARSE),
        H("invalid utf8 byte", "\xa1\xff", ERR_PARSE),
        H("overlong utf8", "\xa2\xc0\xaf", ERR_PARSE),
        H("overlong 3-byte", "\xa3\xe0\x80\xaf", ERR_PARSE),
        H("utf16 surrogate", "\xa3\xed\xa0\x80", ERR_PARSE),
        H("above U+10FFFF", "\xa4\xf4\x90\x80\x80", ERR_PARSE),
        H("truncated utf8 sequence", "\xa2\xe2\x82", ERR_PARSE),
        H("NUL in string", "\xa3" "a\x00" "b", ERR_PARSE),
        H("NUL in key", "\x81\xa2" "a\x00\x01", ERR_PARSE),
        H("bin not utf8", "\xc4\x01\xff", ERR_PARSE),
        H("ext not utf8", "\xd4\x01\xfe", ERR_PARSE),
        H("uint64 above INT64_MAX", "\xcf\x80\x00\x00\x00\x00\x00\x00\x00", ERR_PARSE),
        H("float64 NaN", "\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", ERR_PARSE),
        H("float32 +inf", "\xca\x7f\x80\x00\x00", ERR_PARSE),
        H("float64 -inf", "\xcb\xff\xf0\x00\x00\x00\x00\x00\x00", ERR_PARSE),
        H("nested truncation", "\x81\xa1" "a\x91\x92\x01", ERR_PARSE),
    };
    return cr_make_param_array(struct hostile, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct hostile *c, codec, hostile_msgpack)
{
    int err = 0;
    json_t *v = codec_msgpack_to_json(c->bytes, c->len, &err);
    cr_expect_null(v, "%s: accepted", c->name);
    cr_expect_eq(err, c->err, "%s: got %s", c->name, err_str(err));
    json_decref(v);
}

/* Every strict prefix of a valid document fails cleanly, and flipped
 * bytes never crash (ASan builds make this a memory-safety check). */
Test(codec, truncation_and_mutation)
{
    static const char doc[] =
        "{\"a\":[1,-200,70000,4294967296,-5000000000,2.5,\"x\xc3\xa9\",null,true,{\"b\":[]}],"
        "\"c\":\"0123456789012345678901234567890123456789\"}";
    json_t *a = parse_ok(doc, sizeof doc - 1);
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(a, &mp), 0);
    for (size_t n = 0; n < mp.len; n++) {
        int err = 0;
        json_t *v = codec_msgpack_to_json(mp.p, n, &err);
        cr_expect_null(v, "prefix %zu accepted", n);
        cr_expect_eq(err, ERR_PARSE, "prefix %zu", n);
        json_decref(v);
    }
    char *copy = malloc(mp.len);
    cr_assert(copy);
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        memcpy(copy, mp.p, mp.len);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            copy[(seed >> 8) % mp.len] = (char)(seed >> 20);
        }
        int err = 0;
        json_t *v = codec_msgpack_to_json(copy, mp.len, &err);
        cr_expect(v ? err == 0 : (err == ERR_PARSE || err == ERR_TOOBIG), "round %d", round);
        json_decref(v);
    }
    free(copy);
    buf_free(&mp);
    json_decref(a);
}

static char *nest(const char *open, const char *leaf, const char *close, int n, size_t *len)
{
    struct buf b = BUF_INIT;
    for (int i = 0; i < n; i++)
        buf_adds(&b, open);
    buf_adds(&b, leaf);
    for (int i = 0; i < n; i++)
        buf_adds(&b, close);
    *len = b.len;
    return buf_steal(&b);
}

Test(codec, msgpack_depth)
{
    size_t len;
    int err;
    char *p = nest("\x91", "\x01", "", 64, &len);
    json_t *v = codec_msgpack_to_json(p, len, &err);
    cr_assert(v, "depth 64: %s", err_str(err));
    cr_expect_eq(codec_depth(v), 64);
    json_decref(v);
    free(p);

    p = nest("\x91", "\x01", "", 65, &len);
    cr_expect_null(codec_msgpack_to_json(p, len, &err));
    cr_expect_eq(err, ERR_TOOBIG);
    free(p);

    p = nest("\x81\xa1k", "\xc0", "", 65, &len);
    cr_expect_null(codec_msgpack_to_json(p, len, &err));
    cr_expect_eq(err, ERR_TOOBIG);
    free(p);

    p = nest("\x91", "\x01", "", 200000, &len);
    cr_expect_null(codec_msgpack_to_json(p, len, &err));
    cr_expect_eq(err, ERR_TOOBIG);
    free(p);
}

Test(codec, json_depth)
{
    size_t len;
    int err;
    char msg[128];
    char *p = nest("[", "1", "]", 64, &len);
    json_t *v = codec_parse_json(p, len, &err, msg, sizeof msg);
    cr_assert(v, "depth 64: %s", msg);
    cr_expect_eq(codec_depth(v), 64);
    struct buf mp = BUF_INIT;
    cr_expect_eq(codec_json_to_msgpack(v, &mp), 0);
    buf_free(&mp);
    /* one more level, built by hand, must not encode */
    json_t *deeper = json_array();
    json_array_append(deeper, v);
    cr_expect_eq(codec_depth(deeper), 65);
    cr_expect_eq(codec_json_to_msgpack(deeper, &mp), ERR_TOOBIG);
    cr_expect_eq(mp.len, 0, "no partial output");
    json_decref(deeper);
    json_decref(v);
    buf_free(&mp);
    free(p);

    p = nest("[", "1", "]", 65, &len);
    cr_expect_null(codec_parse_json(p, len, &err, msg, sizeof msg));
    cr_expect_eq(err, ERR_TOOBIG);
    cr_expect_str_eq(msg, "line 1 column 65: nesting deeper than 64");
    free(p);

    p = nest("{\"a\":\n", "{}", "}", 64, &len);
    cr_expect_null(codec_parse_json(p, len, &err, msg, sizeof msg));
    cr_expect_eq(err, ERR_TOOBIG);
    cr_expect_str_eq(msg, "line 65 column 1: nesting deeper than 64");
    free(p);

    /* far beyond jansson's own limit */
    p = nest("[", "", "]", 100000, &len);
    cr_expect_null(codec_parse_json(p, len, &err, msg, sizeof msg));
    cr_expect_eq(err, ERR_TOOBIG);
    free(p);
}

Test(codec, depth_values)
{
    json_t *v = json_integer(1);
    cr_expect_eq(codec_depth(v), 0);
    json_decref(v);
    v = json_pack("[]");
    cr_expect_eq(codec_depth(v), 1);
    json_decref(v);
    v = json_pack("[[i]]", 1);
    cr_expect_eq(codec_depth(v), 2);
    json_decref(v);
    v = json_pack("{s:[i], s:{s:{s:[]}}}", "a", 1, "b", "c", "d");
    cr_expect_eq(codec_depth(v), 4);
    json_decref(v);
    cr_expect_eq(codec_depth(NULL), 0);
}

struct jbad {
    char text[24];
    size_t len; /* 0 = strlen */
    int err;
};

ParameterizedTestParameters(codec, json_errors)
{
    static struct jbad cases[] = {
        { "", 0, ERR_PARSE },
        { "   ", 0, ERR_PARSE },
        { "{", 0, ERR_PARSE },
        { "[1,]", 0, ERR_PARSE },
        { "{\"a\":1,}", 0, ERR_PARSE },
        { "[1] x", 0, ERR_PARSE },
        { "[1][2]", 0, ERR_PARSE },
        { "{} {}", 0, ERR_PARSE },
        { "\"a\\u0000b\"", 0, ERR_PARSE },
        { "[1]\0", 4, ERR_PARSE },
        { "\"a\0b\"", 5, ERR_PARSE },
        { "nul", 0, ERR_PARSE },
        { "NaN", 0, ERR_PARSE },
        { "Infinity", 0, ERR_PARSE },
        { "01", 0, ERR_PARSE },
        { "1.", 0, ERR_PARSE },
        { "'a'", 0, ERR_PARSE },
        { "{a:1}", 0, ERR_PARSE },
        { "\"\xff\"", 0, ERR_PARSE },
        { "\"\\ud800\"", 0, ERR_PARSE },
        { "9223372036854775808", 0, ERR_PARSE },
        { "-9223372036854775809", 0, ERR_PARSE },
        { "1e400", 0, ERR_PARSE },
        { "[1, 2", 0, ERR_PARSE },
        { "// comment\n1", 0, ERR_PARSE },
    };
    return cr_make_param_array(struct jbad, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct jbad *c, codec, json_errors)
{
    int err = 0;
    char msg[200] = "untouched";
    size_t len = c->len ? c->len : strlen(c->text);
    json_t *v = codec_parse_json(c->text, len, &err, msg, sizeof msg);
    cr_expect_null(v, "'%s' accepted", c->text);
    cr_expect_eq(err, c->err, "'%s': %s", c->text, err_str(err));
    cr_expect_eq(strncmp(msg, "line ", 5), 0, "'%s': msg '%s'", c->text, msg);
    cr_expect_neq(strstr(msg, " column "), NULL, "msg '%s'", msg);
    json_decref(v);
}

Test(codec, json_error_position)
{
    int err;
    char msg[200];
    cr_expect_null(codec_parse_json("{\n  \"a\": 1,\n  \"b\": ]\n}", 22, &err, msg, sizeof msg));
    cr_expect_eq(strncmp(msg, "line 3 column ", 14), 0, "%s", msg);
    /* NULL err/msg are tolerated */
    cr_expect_null(codec_parse_json("[", 1, NULL, NULL, 0));
}

/* Regression (fuzz/fuzz_json.c): jansson swallowed a raw NUL right after
 * a number, so codec_parse_json took "[1\0,2]" for [1,2] while jscan (the
 * decide path) refused it.  Both refuse every raw NUL now, and say where. */
Test(codec, raw_nul_refused_like_jscan)
{
    static const struct { const char *t; size_t n; } cases[] = {
        { "[1\0,2]", 6 }, { "{\"a\":1\0}", 8 }, { "{\"stju$caf\xc3\xa9 W\":1\0}", 19 },
        { "1\0", 2 }, { "\0[]", 3 }, { "[\"a\0b\"]", 7 }, { "[\n1.5\0]", 7 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int err = 0;
        char msg[200] = "", jmsg[200] = "";
        json_t *v = codec_parse_json(cases[i].t, cases[i].n, &err, msg, sizeof msg);
        cr_expect_null(v, "case %zu accepted", i);
        json_decref(v);
        cr_expect_eq(err, ERR_PARSE, "case %zu", i);
        cr_expect(strstr(msg, "NUL byte in input"), "case %zu: %s", i, msg);
        cr_expect_eq(jscan_check(cases[i].t, cases[i].n, jmsg, sizeof jmsg), ERR_PARSE, "case %zu", i);
        cr_expect_str_eq(msg, jmsg, "case %zu: both readers name the same place", i);
    }
}

Test(codec, json_accepts)
{
    json_t *v = parse_ok("  42 \n", 6);
    cr_expect_eq(json_integer_value(v), 42);
    json_decref(v);
    /* duplicate keys: last wins, keeps the first position */
    v = parse_ok("{\"a\":1,\"b\":2,\"a\":3}", 19);
    char *s = dump(v);
    cr_expect_str_eq(s, "{\"a\":3,\"b\":2}");
    free(s);
    json_decref(v);
    /* the length bounds the parse: trailing bytes beyond len are ignored */
    v = parse_ok("[1]garbage", 3);
    cr_expect_eq(json_array_size(v), 1);
    json_decref(v);
}

Test(codec, encode_rejects)
{
    struct buf mp = BUF_INIT;
    cr_expect_eq(codec_json_to_msgpack(NULL, &mp), ERR_INVAL);
    buf_free(&mp);
}
