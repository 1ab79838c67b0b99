/*
 * luavm_readonly.c — read-only views of the values hooks receive (p, ctx),
 * and the sandbox functions that read tables: type, next, pairs, ipairs,
 * unpack, rawget and the table library.
 *
 * The engine registers p and ctx (luavm_push_readonly) and passes the
 * tables themselves; call_impl leaves them to functions whose file cannot
 * write any table (luavm_pure.c) and gives every other function a view in
 * their place (luavm_ro_args).  A view is a small userdata whose metatable
 * has __index = the table it reads (so `p.tier` costs a metatable lookup
 * and no Lua call), __newindex raising "profile is read-only", __len
 * (LuaJIT 2.1 without 5.2 compatibility ignores __len on tables, so an
 * empty-table proxy would make `#p.tags` 0), __tostring ("table: 0x..."),
 * and __metatable = false.  Nested tables are frozen when the view is
 * made: the table a view reads is the original when it holds no tables,
 * else a shallow copy whose tables are views in turn.  So no such script
 * ever holds an original table of p or ctx: every path from a view to a
 * table goes through another view.  type() says "table" for a view; next,
 * pairs, ipairs, unpack, rawget, table.concat, table.maxn and promo's
 * table helpers read through views; rawset, setmetatable, table.insert,
 * table.remove and table.sort raise "<what> is read-only".
 *
 * The table library is ours (5.1 semantics, raw access like LuaJIT's): it
 * reads through views, refuses read-only tables, polls the call's budget
 * in every loop, and table.sort counts one C-call level for its comparator.
 * The sort is the quicksort of Lua 5.1's ltablib.c (MIT licence,
 * Copyright (C) 1994-2012 Lua.org, PUC-Rio), re-expressed with a budget
 * poll per comparison.
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#define VIEW_MAGIC 0x76696577u
#define VIEW_MAX_DEPTH 100

struct view {
    uint32_t magic;
    uint8_t root;      /* made by luavm_push_readonly: its environment is the original */
    uint8_t ready;     /* its metatable is set (materialised) */
    const char *what;
};

static const char key_freezer = 'f'; /* registry: the freezing function */

/* A view's metatable: [1] the table it reads, then the metamethods. */
enum { M_SOURCE = 1 };

static struct view *as_view(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || lua_objlen(L, idx) != sizeof(struct view))
        return NULL;
    struct view *v = lua_touserdata(L, idx);
    return v->magic == VIEW_MAGIC ? v : NULL;
}

static int view_newindex(lua_State *L)
{
    struct view *v = as_view(L, 1);
    return luaL_error(L, "%s is read-only", v ? v->what : "table");
}

int luavm_ro_source(lua_State *L, int idx)
{
    struct view *v = as_view(L, idx);
    if (!v)
        return 0;
    if (!v->ready) { /* a root not handed to any script yet: its original */
        lua_getfenv(L, idx);
        return 1;
    }
    lua_getmetatable(L, idx);
    lua_rawgeti(L, -1, M_SOURCE);
    lua_remove(L, -2);
    return 1;
}

const char *luavm_ro_what(lua_State *L, int idx)
{
    struct view *v = as_view(L, idx);
    return v ? v->what : NULL;
}

static int view_len(lua_State *L) /* only ever a view's __len: argument 1 is a view */
{
    lua_getmetatable(L, 1);
    lua_rawgeti(L, -1, M_SOURCE);
    lua_pushinteger(L, (lua_Integer)lua_objlen(L, -1));
    return 1;
}

static int view_tostring(lua_State *L)
{
    lua_pushfstring(L, "table: %p", lua_topointer(L, 1));
    return 1;
}

/* mkview(metatable, what [, root]): a new view (what: light userdata, a C
 * string), or the root view given, materialised */
static int mkview(lua_State *L)
{
    struct view *v;
    if (lua_type(L, 3) == LUA_TUSERDATA) {
        lua_settop(L, 3);
        v = lua_touserdata(L, 3);
    } else {
        v = lua_newuserdata(L, sizeof *v);
        v->magic = VIEW_MAGIC;
        v->root = 0;
        v->what = lua_touserdata(L, 2);
    }
    v->ready = 1;
    lua_pushvalue(L, 1);
    lua_setmetatable(L, -2);
    return 1;
}

/* newtab(narr, nrec): a presized table (no rehash while copying) */
static int newtab(lua_State *L)
{
    lua_createtable(L, (int)lua_tointeger(L, 1), (int)lua_tointeger(L, 2));
    return 1;
}

/*
 * The freezer is Lua: LuaJIT's interpreter builds a metatable from a
 * template (TDUP) and copies fields several times faster than the C API
 * does (measured: 20,600 -> about 5,000 instructions for a profile of 12
 * fields with two nested tables plus a flat ctx).  It runs unarmed, in
 * the state's real globals (never reachable from scripts).  Cycles give
 * the view being built; tables nested deeper than MAXD read as empty.
 */
static const char freezer_src[] =
    "local mkview, newtab, NI, LEN, TS, MAXD = ...\n"
    "local next, type = next, type\n"
    "local PT, PV = {}, {}\n"
    "local function freeze(t, what, depth, root)\n"
    "  for i = 1, depth do if PT[i] == t then return PV[i] end end\n"
    "  local n, nested = 0, false\n"
    "  for k, v in next, t do\n"
    "    n = n + 1\n"
    "    if type(v) == 'table' or type(k) == 'table' then nested = true end\n"
    "  end\n"
    "  local m = { false, false, __index = false, __newindex = false, __len = false,\n"
    "              __metatable = false, __tostring = false }\n"
    "  m.__newindex = NI m.__len = LEN m.__tostring = TS\n"
    "  local u = mkview(m, what, root)\n"
    "  local s = t\n"
    "  if nested then\n"
    "    if depth + 1 >= MAXD then s = {} else\n"
    "      local na = #t\n"
    "      s = newtab(na, n > na and n - na or 0)\n"
    "      PT[depth + 1] = t PV[depth + 1] = u\n"
    "      for k, v in next, t do\n"
    "        if type(k) == 'table' then k = freeze(k, what, depth + 1) end\n"
    "        if type(v) == 'table' then v = freeze(v, what, depth + 1) end\n"
    "        s[k] = v\n"
    "      end\n"
    "      PT[depth + 1] = nil PV[depth + 1] = nil\n"
    "    end\n"
    "  end\n"
    "  m[1] = s m.__index = s\n"
    "  return u\n"
    "end\n"
    "return function(t, what, root) return freeze(t, what, 0, root) end\n";

static void push_freezer(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&key_freezer);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1); /* a state not made by luavm_new: make it now */
    luavm_ro_init(L, NULL);
    lua_pushlightuserdata(L, (void *)&key_freezer);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

void luavm_ro_init(lua_State *L, struct luavm *vm)
{
    lua_pushlightuserdata(L, (void *)&key_freezer);
    if (luaL_loadbuffer(L, freezer_src, sizeof freezer_src - 1, "=freezer"))
        lua_error(L);
    lua_pushcfunction(L, mkview);
    lua_pushcfunction(L, newtab);
    lua_pushcfunction(L, view_newindex);
    lua_pushcfunction(L, view_len);
    lua_pushcfunction(L, view_tostring);
    lua_pushinteger(L, VIEW_MAX_DEPTH);
    lua_call(L, 6, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    if (!vm)
        return;
    luavm_ro_free(vm); /* no inputs registered */
    lua_getglobal(L, "next");
    vm->ref_next = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getglobal(L, "ipairs");
    lua_newtable(L);
    lua_call(L, 1, 1); /* LuaJIT's ipairs iterator */
    vm->ref_ipairs_aux = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Make the root view of the table at `idx` (pushed). */
static void make_view(lua_State *L, int idx, const char *what)
{
    struct luavm *vm = luavm_of(L);
    lua_checkstack(L, 6);
    struct view *v = lua_newuserdata(L, sizeof *v);
    v->magic = VIEW_MAGIC;
    v->root = 1;
    v->ready = 0;
    v->what = what;
    lua_pushvalue(L, idx);
    lua_setfenv(L, -2);
    int u = lua_gettop(L);
    push_freezer(L);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, (void *)what);
    lua_pushvalue(L, u);
    if (vm)
        vm->trusted++; /* ours, bounded by the table's size: not a script's budget */
    lua_call(L, 3, 0);
    if (vm)
        vm->trusted--;
}

/* The engine registers p and ctx and hands hooks the tables themselves; a
 * call of a function that could write (luavm_ro_args) gets their views in
 * their place, made the first time one is needed.  A small ring of
 * registrations holds the tables (so their addresses stay theirs). */
int luavm_push_readonly(lua_State *L, int idx, const char *what)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = lua_gettop(L) + idx + 1;
    struct luavm *vm = luavm_of(L);
    if (!lua_istable(L, idx) || !vm) {
        if (lua_istable(L, idx)) /* a plain state: no purity, a view right away */
            make_view(L, idx, what);
        else
            lua_pushvalue(L, idx);
        return lua_gettop(L);
    }
    const void *t = lua_topointer(L, idx);
    for (int i = 0; i < LUAVM_RO_INPUTS; i++)
        if (vm->ro_in[i].tab == t && vm->ro_in[i].ref != LUA_NOREF) {
            lua_pushvalue(L, idx);
            return lua_gettop(L);
        }
    struct luavm_ro_input *in = &vm->ro_in[vm->ro_next];
    vm->ro_next = (vm->ro_next + 1) % LUAVM_RO_INPUTS;
    luaL_unref(L, LUA_REGISTRYINDEX, in->ref);
    luaL_unref(L, LUA_REGISTRYINDEX, in->view);
    lua_pushvalue(L, idx);
    in->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    in->view = LUA_NOREF;
    in->tab = t;
    in->what = what;
    lua_pushvalue(L, idx);
    return lua_gettop(L);
}

void luavm_ro_args(lua_State *L, struct luavm *vm, int fidx, int nargs)
{
    for (int a = fidx + 1; a <= fidx + nargs; a++) {
        if (lua_type(L, a) != LUA_TTABLE)
            continue;
        const void *t = lua_topointer(L, a);
        for (int i = 0; i < LUAVM_RO_INPUTS; i++) {
            struct luavm_ro_input *in = &vm->ro_in[i];
            if (in->tab != t || in->ref == LUA_NOREF)
                continue;
            if (in->view == LUA_NOREF) {
                make_view(L, a, in->what);
                in->view = luaL_ref(L, LUA_REGISTRYINDEX);
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, in->view);
            lua_replace(L, a);
            break;
        }
    }
}

void luavm_ro_free(struct luavm *vm)
{
    for (int i = 0; i < LUAVM_RO_INPUTS; i++) {
        vm->ro_in[i].ref = vm->ro_in[i].view = LUA_NOREF;
        vm->ro_in[i].tab = NULL;
    }
}

int luavm_push_original(lua_State *L, int idx)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = lua_gettop(L) + idx + 1;
    struct view *v = as_view(L, idx);
    if (v && v->root) {
        lua_getfenv(L, idx);
        return lua_gettop(L);
    }
    lua_pushvalue(L, idx);
    return lua_gettop(L);
}

/* ------------------------------------------------------------------ */
/* argument checks                                                    */

void luavm_check_readable(lua_State *L, int arg)
{
    if (luavm_ro_source(L, arg)) {
        lua_replace(L, arg);
        return;
    }
    luaL_checktype(L, arg, LUA_TTABLE);
}

void luavm_check_writable(lua_State *L, int arg)
{
    const char *what = luavm_ro_what(L, arg);
    if (what)
        luaL_error(L, "%s is read-only", what);
    luaL_checktype(L, arg, LUA_TTABLE);
    if (luavm_has_marked_mt(L, arg, &luavm_key_ro) || luavm_has_marked_mt(L, arg, &luavm_key_owner))
        luaL_error(L, "attempt to modify read-only table");
}

/* A position or bound given by a script, as a table index (LuaJIT's
 * array access takes an int). */
static int as_index(lua_State *L, long long v)
{
    if (v < INT32_MIN || v > INT32_MAX)
        luaL_error(L, "position out of bounds");
    return (int)v;
}

/* ------------------------------------------------------------------ */
/* base functions that read tables                                    */

int luavm_l_type(lua_State *L)
{
    luaL_checkany(L, 1);
    if (as_view(L, 1))
        lua_pushliteral(L, "table");
    else
        lua_pushstring(L, luaL_typename(L, 1));
    return 1;
}

int luavm_l_next(lua_State *L)
{
    luavm_check_readable(L, 1);
    lua_settop(L, 2);
    if (lua_next(L, 1))
        return 2;
    lua_pushnil(L);
    return 1;
}

/* pairs(t): LuaJIT's own next for a plain table, ours for a view. */
int luavm_l_pairs(lua_State *L)
{
    if (as_view(L, 1)) {
        lua_pushcfunction(L, luavm_l_next);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_rawgeti(L, LUA_REGISTRYINDEX, luavm_of(L)->ref_next);
    }
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int view_ipairs_aux(lua_State *L)
{
    lua_Integer i = luaL_checkinteger(L, 2) + 1;
    luavm_check_readable(L, 1);
    lua_pushinteger(L, i);
    lua_rawgeti(L, 1, (int)i);
    return lua_isnil(L, -1) ? 0 : 2;
}

int luavm_l_ipairs(lua_State *L)
{
    if (as_view(L, 1)) {
        lua_pushcfunction(L, view_ipairs_aux);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_rawgeti(L, LUA_REGISTRYINDEX, luavm_of(L)->ref_ipairs_aux);
    }
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 3;
}

int luavm_l_unpack(lua_State *L)
{
    luavm_check_readable(L, 1);
    long long i = luaL_optinteger(L, 2, 1);
    long long e = lua_isnoneornil(L, 3) ? (long long)lua_objlen(L, 1) : luaL_checkinteger(L, 3);
    if (i > e)
        return 0;
    as_index(L, i);
    as_index(L, e);
    long long n = e - i + 1;
    if (n <= 0 || n >= INT32_MAX || !lua_checkstack(L, (int)n))
        return luaL_error(L, "too many results to unpack");
    for (long long k = i; k <= e; k++)
        lua_rawgeti(L, 1, (int)k);
    return (int)n;
}

int luavm_l_rawget(lua_State *L)
{
    luavm_check_readable(L, 1);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* the table library                                                  */

static int t_concat(lua_State *L)
{
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    size_t lsep;
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    luavm_check_readable(L, 1);
    long long i = luaL_optinteger(L, 3, 1);
    long long last = lua_isnoneornil(L, 4) ? (long long)lua_objlen(L, 1) : luaL_checkinteger(L, 4);
    if (i <= last) {
        as_index(L, i);
        as_index(L, last);
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; i <= last; i++) {
        luavm_poll(L, vm, &steps);
        lua_rawgeti(L, 1, (int)i);
        if (!lua_isstring(L, -1))
            return luaL_error(L, "invalid value (at index %d) in table for 'concat'", (int)i);
        luaL_addvalue(&b);
        if (i != last)
            luaL_addlstring(&b, sep, lsep);
    }
    luaL_pushresult(&b);
    return 1;
}

static int t_maxn(lua_State *L)
{
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    luavm_check_readable(L, 1);
    lua_Number max = 0;
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        luavm_poll(L, vm, &steps);
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Number v = lua_tonumber(L, -1);
            if (v > max)
                max = v;
        }
    }
    lua_pushnumber(L, max);
    return 1;
}

static int t_insert(lua_State *L)
{
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    luavm_check_writable(L, 1);
    long long e = (long long)lua_objlen(L, 1) + 1; /* first empty slot */
    long long pos;
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3:
        pos = as_index(L, luaL_checkinteger(L, 2));
        if (pos > e)
            e = pos;
        for (long long i = e; i > pos; i--) { /* move up */
            luavm_poll(L, vm, &steps);
            lua_rawgeti(L, 1, (int)(i - 1));
            lua_rawseti(L, 1, (int)i);
        }
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_rawseti(L, 1, (int)pos);
    return 0;
}

static int t_remove(lua_State *L)
{
    struct luavm *vm = luavm_of(L);
    unsigned steps = 0;
    luavm_check_writable(L, 1);
    long long e = (long long)lua_objlen(L, 1);
    long long pos = luaL_optinteger(L, 2, e);
    if (!(1 <= pos && pos <= e) || e > INT32_MAX)
        return 0;
    lua_rawgeti(L, 1, (int)pos);
    for (; pos < e; pos++) {
        luavm_poll(L, vm, &steps);
        lua_rawgeti(L, 1, (int)(pos + 1));
        lua_rawseti(L, 1, (int)pos);
    }
    lua_pushnil(L);
    lua_rawseti(L, 1, (int)e);
    return 1;
}

struct sorter {
    lua_State *L;
    struct luavm *vm;
    unsigned steps;
    int has_cmp;
};

/* a < b for the values at stack indices a and b (negative allowed) */
static int sort_less(struct sorter *s, int a, int b)
{
    lua_State *L = s->L;
    luavm_poll(L, s->vm, &s->steps);
    if (!s->has_cmp)
        return lua_lessthan(L, a, b);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, a - 1);
    lua_pushvalue(L, b - 2);
    lua_call(L, 2, 1);
    int r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

static void set2(lua_State *L, int i, int j)
{
    lua_rawseti(L, 1, i);
    lua_rawseti(L, 1, j);
}

static void sort_range(struct sorter *s, int lo, int up)
{
    lua_State *L = s->L;
    while (lo < up) {
        /* order a[lo], a[mid], a[up]; the median becomes the pivot */
        lua_rawgeti(L, 1, lo);
        lua_rawgeti(L, 1, up);
        if (sort_less(s, -1, -2))
            set2(L, lo, up);
        else
            lua_pop(L, 2);
        if (up - lo == 1)
            break;
        int i = lo + (up - lo) / 2, j;
        lua_rawgeti(L, 1, i);
        lua_rawgeti(L, 1, lo);
        if (sort_less(s, -2, -1)) {
            set2(L, i, lo);
        } else {
            lua_pop(L, 1);
            lua_rawgeti(L, 1, up);
            if (sort_less(s, -1, -2))
                set2(L, i, up);
            else
                lua_pop(L, 2);
        }
        if (up - lo == 2)
            break;
        lua_rawgeti(L, 1, i);     /* pivot P, parked at up-1 */
        lua_pushvalue(L, -1);
        lua_rawgeti(L, 1, up - 1);
        set2(L, i, up - 1);
        i = lo;
        j = up - 1;
        for (;;) { /* a[lo..i] <= P <= a[j..up] */
            for (;;) {
                lua_rawgeti(L, 1, ++i);
                if (!sort_less(s, -1, -2))
                    break;
                if (i > up)
                    luaL_error(L, "invalid order function for sorting");
                lua_pop(L, 1);
            }
            for (;;) {
                lua_rawgeti(L, 1, --j);
                if (!sort_less(s, -3, -1))
                    break;
                if (j < lo)
                    luaL_error(L, "invalid order function for sorting");
                lua_pop(L, 1);
            }
            if (j < i) {
                lua_pop(L, 3);
                break;
            }
            set2(L, i, j);
        }
        lua_rawgeti(L, 1, up - 1);
        lua_rawgeti(L, 1, i);
        set2(L, up - 1, i);
        /* recurse into the smaller half, loop on the larger */
        if (i - lo < up - i) {
            j = lo;
            i = i - 1;
            lo = i + 2;
        } else {
            j = i + 1;
            i = up;
            up = j - 2;
        }
        sort_range(s, j, i);
    }
}

static int t_sort(lua_State *L)
{
    luavm_check_writable(L, 1);
    size_t n = lua_objlen(L, 1);
    if (n > INT32_MAX - 2)
        return luaL_error(L, "array too big");
    int has_cmp = !lua_isnoneornil(L, 2);
    if (has_cmp)
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    luaL_checkstack(L, 40, "sort");
    struct sorter s = { L, luavm_cdepth_enter(L), 0, has_cmp };
    sort_range(&s, 1, (int)n);
    luavm_cdepth_leave(s.vm);
    return 0;
}

void luavm_open_table(lua_State *L, struct luavm *vm)
{
    (void)vm;
    static const luaL_Reg funcs[] = {
        { "concat", t_concat }, { "insert", t_insert }, { "maxn", t_maxn },
        { "remove", t_remove }, { "sort", t_sort }, { NULL, NULL }
    };
    lua_createtable(L, 0, 5);
    luaL_register(L, NULL, funcs);
}
