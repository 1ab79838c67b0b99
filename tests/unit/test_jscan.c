/* test_jscan.c — core/jscan.c, checked against jansson (codec_parse_json)
 * and luavm_push_json: the in-place reader must accept exactly what the
 * tree parser accepts and give hooks the same Lua values. */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "base/err.h"
#include "codec/jscan.h"
#include "lua/luavm.h"

TestSuite(jscan, .timeout = 120);

/* Same verdict as codec_parse_json (accept, or the same error class). */
static void same_verdict(const char *p, size_t len)
{
    int jerr = 0;
    json_t *j = codec_parse_json(p, len, &jerr, NULL, 0);
    char msg[200];
    int rc = jscan_check(p, len, msg, sizeof msg);
    cr_assert_eq(rc == 0, j != NULL, "verdicts differ on [%.*s]: jscan %d (%s), jansson %d", (int)len, p,
                 rc, msg, jerr);
    if (!j)
        cr_assert_eq(rc, jerr, "error class on [%.*s]: %s", (int)len, p, msg);
    else
        cr_assert_str_eq(msg, "");
    json_decref(j);
}

Test(jscan, accepts_and_refuses_like_jansson)
{
    static const char *cases[] = {
        "{}", "[]", "0", "-0", "-0.0", "1e5", "1E+5", "1.5e-3", "\"\"", "true", "false", "null",
        " {\"a\" : [1, 2.5, \"x\", {\"b\": null}] } ", "\"\\u00e9\\ud83d\\ude00\\n\\/\"",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
        "1e400", "-1e400", "1e-400", "01", "+1", ".5", "1.", "1.e5", "1e", "-", "--1", "0x10",
        "\"\\u0000\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\x\"", "\"a\tb\"",
        "\"\xc3\xa9\"", "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "{\"a\":1,}", "[1,]", "[1 2]", "{\"a\" 1}", "{1:2}", "{\"a\":1", "[", "]", "", " ", "tru",
        "nul", "truex", "{} {}", "{}x", "[\"a\",\"b\"]]", "{\"a\":{\"b\":{\"c\":[[[]]]}}}",
        "\"unterminated", "\"\\u12\"", "\"\\u12g4\"", "[1e309]", "[-1e-309]", "{\"a\":1,\"a\":2}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        same_verdict(cases[i], strlen(cases[i]));
    same_verdict("{\"a\":\"b\0c\"}", 11); /* raw NUL */
    /* nesting: 64 levels are fine, 65 too deep (ERR_TOOBIG) */
    char deep[200];
    for (int n = 63; n <= 66; n++) {
        memset(deep, '[', (size_t)n);
        memset(deep + n, ']', (size_t)n);
        same_verdict(deep, 2 * (size_t)n);
    }
}

/* Mutations of valid documents: every byte flip, cut and insertion of a
 * sample must get the same verdict from both parsers. */
Test(jscan, fuzzed_documents_get_jansson_verdicts)
{
    static const char *seeds[] = {
        "{\"customer_id\":\"c00000001\",\"channel\":\"web\",\"placement\":\"home_banner\","
        "\"context\":{\"country\":\"FR\",\"device\":\"mobile\",\"n\":[1,-2.5e3,true,null]},\"limit\":3}",
        "{\"s\":\"\\u00e9\\ud83d\\ude00\\\"\\\\\",\"e\":{},\"a\":[[],[{}]],\"x\":-0.000123}",
    };
    static const char alphabet[] = "{}[]\",:\\ u0123456789eE+-.tfnrl\xc3\xa9\xff\x01";
    srand(12345);
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        size_t n = strlen(seeds[s]);
        char *buf = malloc(n + 8);
        for (int iter = 0; iter < 20000; iter++) {
            memcpy(buf, seeds[s], n);
            size_t len = n;
            int muts = 1 + rand() % 3;
            for (int m = 0; m < muts; m++) {
                size_t at = (size_t)rand() % len;
                int kind = rand() % 3;
                if (kind == 0) {
                    buf[at] = alphabet[rand() % (int)(sizeof alphabet - 1)];
                } else if (kind == 1 && len > 1) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                } else if (len < n + 6) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = alphabet[rand() % (int)(sizeof alphabet - 1)];
                    len++;
                }
            }
            same_verdict(buf, len);
        }
        free(buf);
    }
}

/* The Lua value built from the text equals the one built from jansson's
 * tree (null members and elements dropped, last duplicate wins). */
static int lua_deep_eq(lua_State *L, int a, int b, int depth)
{
    if (a < 0)
        a = lua_gettop(L) + a + 1;
    if (b < 0)
        b = lua_gettop(L) + b + 1;
    if (lua_type(L, a) != lua_type(L, b))
        return 0;
    if (lua_type(L, a) != LUA_TTABLE)
        return lua_rawequal(L, a, b);
    if (depth > 70)
        return 0;
    for (int pass = 0; pass < 2; pass++) {
        int x = pass ? b : a, y = pass ? a : b;
        lua_pushnil(L);
        while (lua_next(L, x)) {
            lua_pushvalue(L, -2);
            lua_rawget(L, y);
            int ok = lua_deep_eq(L, lua_gettop(L) - 1, lua_gettop(L), depth + 1);
            lua_pop(L, 2);
            if (!ok) {
                lua_pop(L, 1);
                return 0;
            }
        }
    }
    return 1;
}

Test(jscan, lua_values_match_luavm_push_json)
{
    static const char *docs[] = {
        "{\"country\":\"FR\",\"device\":\"mobile\"}",
        "{\"a\":1,\"a\":2,\"b\":null,\"c\":[1,null,3],\"d\":{\"e\":[{\"f\":\"\\u00e9\\ud83d\\ude00\"}]}}",
        "{\"n\":[0,-0,1.5,-2e300,9007199254740993,-9223372036854775808,1e-320],\"t\":true,\"f\":false}",
        "{\"a\":{\"x\":1},\"a\":null}",
        "{\"esc\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"empty\":\"\",\"sp\" : [ ] , \"o\" : { } }",
    };
    lua_State *L = luaL_newstate();
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        size_t n = strlen(docs[i]);
        cr_assert_eq(jscan_check(docs[i], n, NULL, 0), 0, "%s", docs[i]);
        cr_assert_eq(jscan_push_lua(L, jscan_whole(docs[i], n)), 0);
        json_t *j = codec_parse_json(docs[i], n, NULL, NULL, 0);
        cr_assert_not_null(j);
        cr_assert_eq(luavm_push_json(L, j), 0);
        json_decref(j);
        cr_assert(lua_deep_eq(L, -2, -1, 0), "Lua values differ for %s", docs[i]);
        lua_settop(L, 0);
    }
    /* and the comparison can tell values apart */
    cr_assert_eq(jscan_push_lua(L, jscan_whole("{\"a\":[1,2]}", 11)), 0);
    cr_assert_eq(jscan_push_lua(L, jscan_whole("{\"a\":[1,3]}", 11)), 0);
    cr_assert(!lua_deep_eq(L, -2, -1, 0));
    lua_close(L);
}

Test(jscan, members_strings_and_integers)
{
    const char *doc = " { \"k\\u0041\" : \"v\\n\" , \"n\":-42 ,\"r\":2.0, \"big\":99999999999999999999e0,"
                      "\"o\":{\"x\":[1,{\"y\":\"}\"}]},\"z\":null } ";
    size_t n = strlen(doc);
    cr_assert_eq(jscan_check(doc, n, NULL, 0), 0);
    struct jscan_obj o;
    struct jscan_val v;
    struct buf key = BUF_INIT, s = BUF_INIT;
    cr_assert_eq(jscan_object(&o, jscan_whole(doc, n)), 0);
    const char *want[] = { "kA", "n", "r", "big", "o", "z" };
    int i = 0;
    int64_t iv;
    while (jscan_next(&o, &key, &v)) {
        cr_assert_lt(i, 6);
        cr_assert_str_eq(key.p, want[i]);
        switch (i) {
        case 0:
            cr_assert_eq(jscan_type(v), '"');
            cr_assert_eq(jscan_string(v, &s), 0);
            cr_assert_str_eq(s.p, "v\n");
            break;
        case 1:
            cr_assert_eq(jscan_int(v, &iv), 0);
            cr_assert_eq(iv, -42);
            break;
        case 2:
        case 3: cr_assert_eq(jscan_int(v, &iv), ERR_INVAL, "a real is not an integer"); break;
        case 4:
            cr_assert_eq(jscan_type(v), '{');
            cr_assert_eq(v.len, strlen("{\"x\":[1,{\"y\":\"}\"}]}"));
            break;
        case 5: cr_assert_eq(jscan_type(v), 'n'); break;
        }
        i++;
    }
    cr_assert_eq(i, 6);
    cr_assert_eq(jscan_object(&o, (struct jscan_val){ "[1]", 3 }), ERR_INVAL);
    buf_free(&key);
    buf_free(&s);
    char msg[128];
    cr_assert_eq(jscan_check("{\n  \"a\": tru\n}", 14, msg, sizeof msg), ERR_PARSE);
    cr_assert_str_eq(msg, "line 2 column 8: invalid token");
}
