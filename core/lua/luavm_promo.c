/*
 * luavm_promo.c — the `promo` library for campaign and plugin scripts.
 *
 * Conventions: every argument is checked (luaL_check*) before anything is
 * computed, so misuse raises "bad argument #n to '?' (...)" and nothing is
 * held when it does; expected failures (an unparsable time, an unknown
 * zone) return nil, "reason".  The triple-star doc blocks are the rule-author
 * reference (the README's API section is generated from them).
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/tz.h"

#define LOG_MSG_MAX 512

/* A time argument: unix seconds (number) or an ISO-8601 string.  Raises on
 * any other type.  Returns 1, or 0 after pushing nil, "reason". */
static int check_time_type(lua_State *L, int arg, int optional)
{
    int t = lua_type(L, arg);
    if (t == LUA_TNUMBER || t == LUA_TSTRING || (optional && t == LUA_TNONE) ||
        (optional && t == LUA_TNIL))
        return 1;
    return luaL_argerror(L, arg, lua_pushfstring(L, "number or ISO-8601 string expected, got %s",
                                                 luaL_typename(L, arg)));
}

static int get_time(lua_State *L, int arg, int64_t *out)
{
    int t = lua_type(L, arg);
    if (t == LUA_TNONE || t == LUA_TNIL) {
        *out = clock_now();
        return 1;
    }
    if (t == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, arg);
        if (!isfinite(d) || fabs(d) > 1e15) {
            lua_pushnil(L);
            lua_pushliteral(L, "time out of range");
            return 0;
        }
        *out = (int64_t)floor(d);
        return 1;
    }
    size_t len;
    const char *s = lua_tolstring(L, arg, &len);
    if (strlen(s) != len || tz_parse_iso8601(s, out) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid ISO-8601 time '%s'", s);
        return 0;
    }
    return 1;
}

static int get_local(lua_State *L, const char *zone, size_t zlen, int64_t t, struct tm *tm)
{
    int rc = strlen(zone) == zlen ? tz_local(zone, t, tm) : ERR_INVAL;
    if (rc == 0)
        return 1;
    lua_pushnil(L);
    if (rc == ERR_NOTFOUND)
        lua_pushfstring(L, "unknown time zone '%s'", zone);
    else
        lua_pushfstring(L, "invalid time zone '%s'", zone);
    return 0;
}

/***
 * @function promo.hash(s)
 * FNV-1a 32-bit hash of a string (the same hash GrowthBook buckets with).
 * @param {string} s  any string (numbers are converted)
 * @return {number} an integer in [0, 2^32)
 * @example
 * if promo.hash(p.id) % 10 == 0 then ... end  -- a stable 10% of customers
 */
static int l_promo_hash(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushnumber(L, (lua_Number)hash_fnv1a(s, len, HASH_FNV_INIT));
    return 1;
}

/***
 * @function promo.bucket(s [, salt])
 * Deterministic position of `s` in [0, 1): two FNV-1a rounds (GrowthBook
 * v2 style: fnv1a of the decimal text of fnv1a(s .. "/" .. salt)) mod 10000
 * / 10000.  It is exactly the mapping the default content hook uses, so
 * promo.bucket(p.id, campaign_id) tells which variant bucket a customer is in.
 * @param {string} s     usually the customer id
 * @param {string} salt  optional, usually the campaign id (default "")
 * @return {number} a number in [0, 1) with 4 decimal places
 * @example
 * eligible = function(p) return promo.bucket(p.id, "spring") < 0.2 end  -- 20% rollout
 */
static int l_promo_bucket(lua_State *L)
{
    size_t len, slen = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *salt = luaL_optlstring(L, 2, "", &slen);
    lua_pushnumber(L, hash_bucket(s, len, salt, slen));
    return 1;
}

/***
 * @function promo.now()
 * The server's current time (honours the test clock offset).
 * @return {number} unix seconds (integer)
 * @example
 * local age = promo.now() - p.signup_ts
 */
static int l_promo_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)clock_now());
    return 1;
}

/***
 * @function promo.days_since(ts)
 * Days elapsed from `ts` to now (fractional; negative for a future `ts`).
 * @param {number|string} ts  unix seconds, or an ISO-8601 instant
 *   ("2026-03-01T00:00:00Z", "2026-03-01T02:00:00+02:00", "2026-03-01")
 * @return {number} days, or nil, "reason" for an unparsable string
 * @example
 * eligible = function(p) return promo.days_since(p.last_order) > 30 end
 */
static int l_promo_days_since(lua_State *L)
{
    int64_t t;
    check_time_type(L, 1, 0);
    if (!get_time(L, 1, &t))
        return 2;
    lua_pushnumber(L, (lua_Number)(clock_now() - t) / 86400.0);
    return 1;
}

/***
 * @function promo.hour([tz [, ts]])
 * Local hour of an instant in a time zone.
 * @param {string} tz  IANA zone ("Europe/Paris"), "UTC" or an offset ("+02:00"); default "UTC"
 * @param {number|string} ts  unix seconds or ISO-8601 instant; default now
 * @return {number} 0..23, or nil, "reason" for an unknown zone / bad time
 * @example
 * local h = promo.hour(p.tz or "Europe/Paris")
 * if h and h >= 9 and h < 18 then ... end
 */
static int l_promo_hour(lua_State *L)
{
    size_t zlen;
    const char *zone = luaL_optlstring(L, 1, "UTC", &zlen);
    check_time_type(L, 2, 1);
    int64_t t;
    struct tm tm;
    if (!get_time(L, 2, &t) || !get_local(L, zone, zlen, t, &tm))
        return 2;
    lua_pushinteger(L, tm.tm_hour);
    return 1;
}

/***
 * @function promo.weekday([tz [, ts]])
 * ISO day of the week of an instant in a time zone.
 * @param {string} tz  zone as for promo.hour; default "UTC"
 * @param {number|string} ts  unix seconds or ISO-8601 instant; default now
 * @return {number} 1 = Monday .. 7 = Sunday, or nil, "reason"
 * @example
 * if promo.weekday("Europe/Paris") >= 6 then return false, "weekend" end
 */
static int l_promo_weekday(lua_State *L)
{
    size_t zlen;
    const char *zone = luaL_optlstring(L, 1, "UTC", &zlen);
    check_time_type(L, 2, 1);
    int64_t t;
    struct tm tm;
    if (!get_time(L, 2, &t) || !get_local(L, zone, zlen, t, &tm))
        return 2;
    lua_pushinteger(L, (tm.tm_wday + 6) % 7 + 1);
    return 1;
}

/***
 * @function promo.time(iso)
 * Parse an ISO-8601 instant.
 * @param {string} iso  "2026-03-01T00:00:00Z", "...+02:00", "2026-03-01" (midnight UTC)
 * @return {number} unix seconds, or nil, "reason"
 * @example
 * local starts = assert(promo.time("2026-03-01T00:00:00Z"))
 */
static int l_promo_time(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int64_t t;
    if (strlen(s) != len || tz_parse_iso8601(s, &t) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid ISO-8601 time '%s'", s);
        return 2;
    }
    lua_pushnumber(L, (lua_Number)t);
    return 1;
}

static int list_contains(lua_State *L, int list, int v)
{
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    int n = (int)lua_objlen(L, list);
    for (int i = 1; i <= n; i++) {
        luavm_poll(L, vm, &steps);
        lua_rawgeti(L, list, i);
        int eq = lua_rawequal(L, -1, v);
        lua_pop(L, 1);
        if (eq)
            return 1;
    }
    return 0;
}

/***
 * @function promo.has(list, v)
 * Whether the sequence `list` (elements 1..#list) contains `v` (raw equality).
 * @param {table} list  a sequence
 * @param {any} v       the value to look for
 * @return {boolean}
 * @example
 * eligible = function(p) return promo.has(p.tags or {}, "vip") end
 */
static int l_promo_has(lua_State *L)
{
    luavm_check_readable(L, 1);
    luaL_checkany(L, 2);
    lua_pushboolean(L, list_contains(L, 1, 2));
    return 1;
}

/***
 * @function promo.in_set(v, set)
 * Whether `v` is in `set`, which is either a set built by promo.set
 * (set[v] == true) or a plain sequence (searched like promo.has).
 * @param {any} v      the value to look for
 * @param {table} set  {v1 = true, ...} or {v1, v2, ...}
 * @return {boolean}
 * @example
 * local EU = promo.set({ "FR", "DE", "IT" })
 * eligible = function(p, ctx) return promo.in_set(ctx.country, EU) end
 */
static int l_promo_in_set(lua_State *L)
{
    luaL_checkany(L, 1);
    luavm_check_readable(L, 2);
    int found = 0;
    if (!lua_isnil(L, 1)) {
        lua_pushvalue(L, 1);
        lua_rawget(L, 2);
        found = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pushboolean(L, found || list_contains(L, 2, 1));
    return 1;
}

/***
 * @function promo.set(list)
 * Turn a sequence into a set for fast membership tests.
 * @param {table} list  a sequence (NaN elements raise)
 * @return {table} {[v] = true, ...}
 * @example
 * local TIERS = promo.set({ "gold", "platinum" })
 * eligible = function(p) return TIERS[p.tier] == true end
 */
static int l_promo_set(lua_State *L)
{
    luavm_check_readable(L, 1);
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    int n = (int)lua_objlen(L, 1);
    lua_createtable(L, 0, n);
    for (int i = 1; i <= n; i++) {
        luavm_poll(L, vm, &steps);
        lua_rawgeti(L, 1, i);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    return 1;
}

/***
 * @function promo.count(t)
 * Number of entries in a table (all keys, so maps count too; #t counts
 * only the sequence part).
 * @param {table} t
 * @return {number}
 * @example
 * if promo.count(p.orders or {}) >= 3 then ... end
 */
static int l_promo_count(lua_State *L)
{
    luavm_check_readable(L, 1);
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    lua_Number n = 0;
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        luavm_poll(L, vm, &steps);
        lua_pop(L, 1);
        n++;
    }
    lua_pushnumber(L, n);
    return 1;
}

/***
 * @function promo.clamp(x, lo, hi)
 * `x` limited to [lo, hi].  Raises when lo > hi.
 * @param {number} x
 * @param {number} lo
 * @param {number} hi
 * @return {number}
 * @example
 * score = function(p) return promo.clamp((p.ltv or 0) / 10, 0, 100) end
 */
static int l_promo_clamp(lua_State *L)
{
    lua_Number x = luaL_checknumber(L, 1);
    lua_Number lo = luaL_checknumber(L, 2);
    lua_Number hi = luaL_checknumber(L, 3);
    luaL_argcheck(L, !(lo > hi), 2, "lo must be <= hi");
    lua_pushnumber(L, x < lo ? lo : x > hi ? hi : x);
    return 1;
}

/***
 * @function promo.log(...)
 * Write an info line to the server log: `msg="promo.log" file=<file:line>
 * msg="<args>"`, the arguments converted with tostring and separated by
 * spaces, truncated to 512 bytes.
 * @param {any} ...  values to log
 * @return nothing
 * @example
 * promo.log("skipping", p.id, "tier", p.tier)
 */
static int l_promo_log(lua_State *L)
{
    luavm_log_args(L, "promo.log");
    return 0;
}

static void push_tostring(lua_State *L, int i)
{
    if (luaL_callmeta(L, i, "__tostring")) {
        if (!lua_isstring(L, -1))
            luaL_error(L, "'__tostring' must return a string");
        return;
    }
    switch (lua_type(L, i)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
        lua_pushvalue(L, i);
        lua_tostring(L, -1);
        break;
    case LUA_TNIL: lua_pushliteral(L, "nil"); break;
    case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, i) ? "true" : "false"); break;
    default: lua_pushfstring(L, "%s: %p", luaL_typename(L, i), lua_topointer(L, i)); break;
    }
}

void luavm_log_args(lua_State *L, const char *what)
{
    int n = lua_gettop(L);
    luaL_checkstack(L, 4, "too many arguments");
    /* where: the calling Lua function; whose: its file (the owner: for a
     * module, the file that required it), the key of the rate limit */
    char where[LUA_IDSIZE + 16] = "?";
    char whose[LUA_IDSIZE + 16] = "?";
    lua_Debug ar;
    for (int lvl = 1; lua_getstack(L, lvl, &ar); lvl++) {
        if (lua_getinfo(L, "Slf", &ar) && ar.currentline > 0) {
            snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
            snprintf(whose, sizeof whose, "%s", ar.short_src);
            luavm_push_fn_owner(L, lua_gettop(L));
            if (lua_istable(L, -1)) {
                lua_rawgeti(L, -1, LUAVM_OWN_NAME);
                if (lua_isstring(L, -1))
                    snprintf(whose, sizeof whose, "%s", lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            lua_pop(L, 2);
            break;
        }
        lua_pop(L, 1);
    }
    if (!luavm_log_allowed(L, whose))
        return;

    struct luavm *vm = luavm_cdepth_enter(L); /* __tostring runs script code */
    lua_pushliteral(L, "");                  /* n+1: accumulated message */
    for (int i = 1; i <= n; i++) {
        if (i > 1) {
            lua_pushliteral(L, " ");
            lua_concat(L, 2);
        }
        push_tostring(L, i);
        lua_concat(L, 2);
        if (lua_objlen(L, -1) > LOG_MSG_MAX)
            break;                           /* the rest would be cut anyway */
    }
    luavm_cdepth_leave(vm);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (len > LOG_MSG_MAX)
        len = LOG_MSG_MAX;

    char esc[LOG_MSG_MAX * 4 + 1];
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '"' || c == '\\') {
            esc[o++] = '\\';
            esc[o++] = (char)c;
        } else if (c == '\n') {
            esc[o++] = '\\';
            esc[o++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(esc + o, sizeof esc - o, "\\x%02x", c);
        } else {
            esc[o++] = (char)c;
        }
    }
    esc[o] = '\0';
    log_info(what, "file=%s msg=\"%s\"", where, esc);
    lua_settop(L, n);
}

/***
 * @function promo.in_segment(p, id)
 * Whether the customer is a member of segment `id`, from `p.segments` (the
 * set of segment ids the customer is in, kept live by the segment index;
 * see docs/segments.md).  False for an unknown segment or when `p` has no
 * segments.
 * @param {table} p     the profile a hook was given
 * @param {string} id   a segment id
 * @return {boolean}
 * @example
 * eligible = function(p) return promo.in_segment(p, "gold_fr") end
 */
static int l_promo_in_segment(lua_State *L)
{
    luavm_check_readable(L, 1); /* p, or the table its read-only view reads */
    luaL_checkstring(L, 2);
    lua_pushliteral(L, "segments");
    lua_rawget(L, 1);
    if (luavm_ro_source(L, -1)) /* through a view, p.segments is a view too */
        lua_remove(L, -2);
    int yes = 0;
    if (lua_istable(L, -1)) {
        lua_pushvalue(L, 2);
        lua_rawget(L, -2);
        yes = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushboolean(L, yes);
    return 1;
}

static const luaL_Reg promo_funcs[] = {
    { "in_segment", l_promo_in_segment },
    { "hash", l_promo_hash },
    { "bucket", l_promo_bucket },
    { "now", l_promo_now },
    { "days_since", l_promo_days_since },
    { "hour", l_promo_hour },
    { "weekday", l_promo_weekday },
    { "time", l_promo_time },
    { "has", l_promo_has },
    { "in_set", l_promo_in_set },
    { "set", l_promo_set },
    { "count", l_promo_count },
    { "clamp", l_promo_clamp },
    { "log", l_promo_log },
    { NULL, NULL }
};

void luavm_open_promo(lua_State *L)
{
    lua_createtable(L, 0, (int)(sizeof promo_funcs / sizeof promo_funcs[0]) - 1);
    luaL_register(L, NULL, promo_funcs);
    luavm_open_crypto(L);
    luavm_register(L, "promo");
}
