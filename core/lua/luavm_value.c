/*
 * luavm_value.c — values between C and Lua: msgpack and jansson pushed as
 * Lua tables, Lua values converted to jansson (read-only views are read
 * through, so a hook may return parts of p or ctx).
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "base/err.h"

#define MAX_DEPTH LUAVM_MAX_DEPTH

/* ------------------------------------------------------------------ */
/* msgpack -> Lua                                                     */

struct mp {
    const unsigned char *p, *end;
};

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

static int mp_value(lua_State *L, struct mp *r, int depth);

static int mp_array(lua_State *L, struct mp *r, uint32_t n, int depth)
{
    if (depth >= MAX_DEPTH)
        return ERR_TOOBIG;
    if (n > (size_t)(r->end - r->p))   /* every element takes >= 1 byte */
        return ERR_PARSE;
    if (!lua_checkstack(L, 4))
        return ERR_TOOBIG;
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 1; i <= n; i++) {
        int rc = mp_value(L, r, depth + 1);
        if (rc)
            return rc;
        if (lua_isnil(L, -1))
            lua_pop(L, 1);             /* hole: later elements keep their index */
        else
            lua_rawseti(L, -2, (int)i);
    }
    return 0;
}

static int mp_map(lua_State *L, struct mp *r, uint32_t n, int depth)
{
    if (depth >= MAX_DEPTH)
        return ERR_TOOBIG;
    if (n > (size_t)(r->end - r->p) / 2)
        return ERR_PARSE;
    if (!lua_checkstack(L, 4))
        return ERR_TOOBIG;
    lua_createtable(L, 0, (int)n);
    for (uint32_t i = 0; i < n; i++) {
        int rc = mp_value(L, r, depth + 1);
        if (rc)
            return rc;
        int kt = lua_type(L, -1);
        if (kt == LUA_TTABLE)
            return ERR_PARSE;
        if (kt == LUA_TNUMBER) {
            lua_Number k = lua_tonumber(L, -1);
            if (k != k)
                return ERR_PARSE;
        }
        rc = mp_value(L, r, depth + 1);
        if (rc)
            return rc;
        if (kt == LUA_TNIL || lua_isnil(L, -1))
            lua_pop(L, 2);
        else
            lua_rawset(L, -3);
    }
    return 0;
}

#define NEED(n) do { if ((size_t)(r->end - r->p) < (size_t)(n)) return ERR_PARSE; } while (0)

static int mp_bytes(lua_State *L, struct mp *r, size_t n)
{
    NEED(n);
    lua_pushlstring(L, (const char *)r->p, n);
    r->p += n;
    return 0;
}

static int mp_value(lua_State *L, struct mp *r, int depth)
{
    NEED(1);
    unsigned c = *r->p++;
    if (c <= 0x7f) {
        lua_pushnumber(L, (lua_Number)c);
        return 0;
    }
    if (c >= 0xe0) {
        lua_pushnumber(L, (lua_Number)(int8_t)c);
        return 0;
    }
    if (c >= 0xa0 && c <= 0xbf)
        return mp_bytes(L, r, c & 0x1f);
    if (c >= 0x90 && c <= 0x9f)
        return mp_array(L, r, c & 0x0f, depth);
    if (c >= 0x80 && c <= 0x8f)
        return mp_map(L, r, c & 0x0f, depth);
    const unsigned char *p = r->p;
    uint32_t n;
    switch (c) {
    case 0xc0: lua_pushnil(L); return 0;
    case 0xc2: lua_pushboolean(L, 0); return 0;
    case 0xc3: lua_pushboolean(L, 1); return 0;
    case 0xc4: case 0xd9: NEED(1); r->p += 1; return mp_bytes(L, r, p[0]);
    case 0xc5: case 0xda: NEED(2); r->p += 2; return mp_bytes(L, r, rd16(p));
    case 0xc6: case 0xdb: NEED(4); r->p += 4; return mp_bytes(L, r, rd32(p));
    case 0xc7: NEED(2); r->p += 2; return mp_bytes(L, r, p[0]);          /* ext8: len, type */
    case 0xc8: NEED(3); r->p += 3; return mp_bytes(L, r, rd16(p));
    case 0xc9: NEED(5); r->p += 5; return mp_bytes(L, r, rd32(p));
    case 0xd4: NEED(1); r->p += 1; return mp_bytes(L, r, 1);             /* fixext: type */
    case 0xd5: NEED(1); r->p += 1; return mp_bytes(L, r, 2);
    case 0xd6: NEED(1); r->p += 1; return mp_bytes(L, r, 4);
    case 0xd7: NEED(1); r->p += 1; return mp_bytes(L, r, 8);
    case 0xd8: NEED(1); r->p += 1; return mp_bytes(L, r, 16);
    case 0xca: {
        NEED(4);
        uint32_t u = rd32(p);
        float f;
        memcpy(&f, &u, 4);
        r->p += 4;
        lua_pushnumber(L, (lua_Number)f);
        return 0;
    }
    case 0xcb: {
        NEED(8);
        uint64_t u = rd64(p);
        double d;
        memcpy(&d, &u, 8);
        r->p += 8;
        lua_pushnumber(L, (lua_Number)d);
        return 0;
    }
    case 0xcc: NEED(1); r->p += 1; lua_pushnumber(L, p[0]); return 0;
    case 0xcd: NEED(2); r->p += 2; lua_pushnumber(L, rd16(p)); return 0;
    case 0xce: NEED(4); r->p += 4; lua_pushnumber(L, rd32(p)); return 0;
    case 0xcf: NEED(8); r->p += 8; lua_pushnumber(L, (lua_Number)rd64(p)); return 0;
    case 0xd0: NEED(1); r->p += 1; lua_pushnumber(L, (int8_t)p[0]); return 0;
    case 0xd1: NEED(2); r->p += 2; lua_pushnumber(L, (int16_t)rd16(p)); return 0;
    case 0xd2: NEED(4); r->p += 4; lua_pushnumber(L, (int32_t)rd32(p)); return 0;
    case 0xd3: NEED(8); r->p += 8; lua_pushnumber(L, (lua_Number)(int64_t)rd64(p)); return 0;
    case 0xdc: NEED(2); r->p += 2; return mp_array(L, r, rd16(p), depth);
    case 0xdd: NEED(4); r->p += 4; n = rd32(p); return mp_array(L, r, n, depth);
    case 0xde: NEED(2); r->p += 2; return mp_map(L, r, rd16(p), depth);
    case 0xdf: NEED(4); r->p += 4; n = rd32(p); return mp_map(L, r, n, depth);
    default: return ERR_PARSE; /* 0xc1 */
    }
}

int luavm_push_msgpack(lua_State *L, const char *buf, size_t len)
{
    int top = lua_gettop(L);
    struct mp r = { (const unsigned char *)buf, (const unsigned char *)buf + len };
    if (!lua_checkstack(L, 4))
        return ERR_TOOBIG;
    int rc = mp_value(L, &r, 0);
    if (rc == 0 && r.p != r.end)
        rc = ERR_PARSE; /* trailing bytes */
    if (rc)
        lua_settop(L, top);
    return rc;
}

/* ------------------------------------------------------------------ */
/* jansson <-> Lua                                                    */

static int push_json(lua_State *L, const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_NULL: lua_pushnil(L); return 0;
    case JSON_TRUE: lua_pushboolean(L, 1); return 0;
    case JSON_FALSE: lua_pushboolean(L, 0); return 0;
    case JSON_INTEGER: lua_pushnumber(L, (lua_Number)json_integer_value(v)); return 0;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); return 0;
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return 0;
    case JSON_ARRAY: {
        if (depth >= MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        size_t n = json_array_size(v);
        lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            int rc = push_json(L, json_array_get(v, i), depth + 1);
            if (rc)
                return rc;
            if (lua_isnil(L, -1))
                lua_pop(L, 1);
            else
                lua_rawseti(L, -2, (int)(i + 1));
        }
        return 0;
    }
    case JSON_OBJECT: {
        if (depth >= MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        size_t n = json_object_size(v);
        lua_createtable(L, 0, n > INT_MAX ? INT_MAX : (int)n);
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            const json_t *val = json_object_iter_value(it);
            if (json_is_null(val))
                continue;
            lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
            int rc = push_json(L, val, depth + 1);
            if (rc)
                return rc;
            lua_rawset(L, -3);
        }
        return 0;
    }
    }
    return ERR_INVAL;
}

int luavm_push_json(lua_State *L, const json_t *v)
{
    int top = lua_gettop(L);
    if (!v) {
        lua_pushnil(L);
        return 0;
    }
    int rc = push_json(L, v, 0);
    if (rc)
        lua_settop(L, top);
    return rc;
}

static json_t *num_to_json(lua_Number d, int *err)
{
    if (!isfinite(d)) {
        *err = ERR_INVAL;
        return NULL;
    }
    json_t *j;
    if (d == floor(d) && fabs(d) <= 9007199254740992.0)
        j = json_integer((json_int_t)d);
    else
        j = json_real(d);
    if (!j)
        *err = ERR_NOMEM;
    return j;
}

struct tojson {
    const void *path[MAX_DEPTH + 1];
    int err;
};

static json_t *to_json(lua_State *L, int idx, int depth, struct tojson *s);

static json_t *table_to_json(lua_State *L, int idx, int depth, struct tojson *s)
{
    if (depth >= MAX_DEPTH) {
        s->err = ERR_TOOBIG;
        return NULL;
    }
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < depth; i++)
        if (s->path[i] == self) {
            s->err = ERR_INVAL; /* cycle */
            return NULL;
        }
    s->path[depth] = self;
    if (!lua_checkstack(L, 4)) {
        s->err = ERR_TOOBIG;
        return NULL;
    }

    /* Array when the keys are exactly 1..n (n > 0). */
    size_t count = 0;
    int is_array = 1;
    double max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (is_array) {
            if (lua_type(L, -1) != LUA_TNUMBER) {
                is_array = 0;
            } else {
                double k = lua_tonumber(L, -1);
                if (k < 1 || k != floor(k))
                    is_array = 0;
                else if (k > max)
                    max = k;
            }
        }
    }
    if (count > 0 && is_array && max == (double)count) {
        json_t *a = json_array();
        if (!a) {
            s->err = ERR_NOMEM;
            return NULL;
        }
        for (size_t i = 1; i <= count; i++) {
            lua_rawgeti(L, idx, (int)i);
            json_t *e = to_json(L, lua_gettop(L), depth + 1, s);
            lua_pop(L, 1);
            if (!e || json_array_append_new(a, e) != 0) {
                if (e)
                    s->err = ERR_NOMEM;
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }

    json_t *o = json_object();
    if (!o) {
        s->err = ERR_NOMEM;
        return NULL;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        char num[64];
        const char *k;
        size_t klen;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            k = lua_tolstring(L, -2, &klen);
        } else if (kt == LUA_TNUMBER) {
            double d = lua_tonumber(L, -2);
            int n;
            if (d == floor(d) && fabs(d) < 9.2e18)
                n = snprintf(num, sizeof num, "%lld", (long long)d);
            else
                n = snprintf(num, sizeof num, "%.14g", d);
            k = num;
            klen = (size_t)n;
        } else {
            s->err = ERR_INVAL;
            lua_pop(L, 2);
            json_decref(o);
            return NULL;
        }
        json_t *e = to_json(L, lua_gettop(L), depth + 1, s);
        lua_pop(L, 1);
        if (!e) {
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
        if (json_object_setn_new(o, k, klen, e) != 0) {
            s->err = ERR_INVAL; /* key not UTF-8 (or out of memory) */
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *to_json(lua_State *L, int idx, int depth, struct tojson *s)
{
    json_t *j = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: j = json_null(); break;
    case LUA_TBOOLEAN: j = json_boolean(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER: return num_to_json(lua_tonumber(L, idx), &s->err);
    case LUA_TSTRING: {
        size_t len;
        const char *str = lua_tolstring(L, idx, &len);
        j = json_stringn(str, len);
        if (!j) {
            s->err = ERR_INVAL; /* not UTF-8 */
            return NULL;
        }
        return j;
    }
    case LUA_TTABLE: return table_to_json(L, idx, depth, s);
    case LUA_TUSERDATA:
        if (luavm_ro_source(L, idx)) { /* a read-only view: its table */
            j = table_to_json(L, lua_gettop(L), depth, s);
            lua_pop(L, 1);
            return j;
        }
        s->err = ERR_INVAL;
        return NULL;
    default:
        s->err = ERR_INVAL;
        return NULL;
    }
    if (!j)
        s->err = ERR_NOMEM;
    return j;
}

json_t *luavm_to_json(lua_State *L, int idx, int *err)
{
    struct tojson s;
    s.err = 0;
    int top = lua_gettop(L);
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    json_t *j = to_json(L, idx, 0, &s);
    lua_settop(L, top);
    if (err)
        *err = j ? 0 : s.err;
    return j;
}
