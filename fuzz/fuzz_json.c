/*
 * fuzz_json.c — the request body readers: jscan (the in-place reader the
 * decide path uses) against codec_parse_json (the tree parser every other
 * route uses), which must accept exactly the same texts; every member,
 * string and integer of an accepted text read back; the context pushed
 * into Lua; and the JSON -> msgpack -> JSON round trip.
 */
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "base/buf.h"
#include "codec/codec.h"
#include "codec/jscan.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

static lua_State *L;

/* read every member of every object, recursively, through jscan */
static void walk(struct jscan_val v, struct buf *key, struct buf *s, int depth)
{
    if (depth > 200)
        abort(); /* jscan_check bounds nesting: deeper means it did not */
    switch (jscan_type(v)) {
    case '{': {
        struct jscan_obj o;
        if (jscan_object(&o, v))
            abort();
        struct jscan_val m;
        while (jscan_next(&o, key, &m))
            walk(m, key, s, depth + 1);
        break;
    }
    case '"':
        if (jscan_string(v, s))
            abort();
        break;
    case '0': {
        int64_t i;
        (void)jscan_int(v, &i);
        break;
    }
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
    }
    char m1[256], m2[256];
    int err = 0;
    int jc = jscan_check(p, size, m1, sizeof m1);
    json_t *v = codec_parse_json(p, size, &err, m2, sizeof m2);
    if ((jc == 0) != (v != NULL)) {
        fprintf(stderr, "jscan %s (%s), codec %s (%s)\n", jc ? "refuses" : "accepts", jc ? m1 : "",
                v ? "accepts" : "refuses", v ? "" : m2);
        abort();
    }
    if (jc == 0) {
        struct buf key = BUF_INIT, s = BUF_INIT;
        struct jscan_val whole = jscan_whole(p, size);
        walk(whole, &key, &s, 0);
        buf_free(&key);
        buf_free(&s);
        int top = lua_gettop(L);
        (void)jscan_push_lua(L, whole);
        lua_settop(L, top);
    }
    if (v) {
        struct buf b = BUF_INIT;
        if (codec_json_to_msgpack(v, &b) == 0) {
            json_t *back = codec_msgpack_to_json(b.p, b.len, &err);
            if (!back || !json_equal(v, back)) {
                fprintf(stderr, "JSON -> msgpack -> JSON changed the value\n");
                abort();
            }
            json_decref(back);
        }
        buf_free(&b);
        json_decref(v);
    }
    return 0;
}
