/*
 * luavm_strlib.c — the sandbox's string.find, match, gmatch and gsub (a
 * bounded pattern matcher), and wrappers for string.rep, string.format
 * and os.time.
 *
 * Why: LuaJIT's matcher runs inside one VM instruction, so neither the
 * instruction budget nor the count hook sees it; ("a"):rep(1000):find
 * ("^.-.-.-b") backtracks for seconds.  This matcher is the one of Lua
 * 5.1's lstrlib.c (MIT licence, Copyright (C) 1994-2012 Lua.org, PUC-Rio),
 * written again with three additions: it polls the call's kill flags and
 * time limit every LUAVM_POLL_EVERY steps (so the time limit stops it),
 * its recursion is bounded (MAXMATCHDEPTH, "pattern too complex", as in
 * Lua 5.2), and gsub counts a C-call level before it calls a replacement
 * function or indexes a replacement table (recursion through gsub was the
 * segfault: 8 KiB of luaL_Buffer per level; gsub's buffer is now GC-owned
 * and off the C stack).  Semantics are Lua 5.1's
 * (LuaJIT's without 5.2 compatibility): classes %a %c %d %l %p %s %u %w
 * %x %z, sets, %b, %f, captures and position captures; find's init is
 * clamped to the string.
 *
 * string.rep refuses results larger than the call's memory limit before
 * allocating (a memory kill, as the refused allocation would be); string.format and os.time may call __tostring / __index
 * metamethods from C, so they count a C-call level around LuaJIT's own.
 */
#include "lua/luavm.h"
#include "lua/luavm_int.h"

#include <ctype.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#define L_ESC '%'
#define SPECIALS "^$*+?.([%-"
#define MAXCAPTURES 32
#define MAXMATCHDEPTH 200
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)

struct mstate {
    const char *src_init, *src_end;
    lua_State *L;
    struct luavm *vm;
    unsigned steps;
    int depth;   /* recursion levels left */
    int level;   /* captures */
    struct {
        const char *init;
        ptrdiff_t len;
    } capture[MAXCAPTURES];
};

static ptrdiff_t posrelat(ptrdiff_t pos, size_t len)
{
    if (pos < 0)
        pos += (ptrdiff_t)len + 1;
    return pos >= 0 ? pos : 0;
}

static int check_capture(struct mstate *ms, int l)
{
    l -= '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
        return luaL_error(ms->L, "invalid capture index");
    return l;
}

static int capture_to_close(struct mstate *ms)
{
    int level = ms->level;
    for (level--; level >= 0; level--)
        if (ms->capture[level].len == CAP_UNFINISHED)
            return level;
    return luaL_error(ms->L, "invalid pattern capture");
}

static const char *class_end(struct mstate *ms, const char *p, const char *pend)
{
    if (p >= pend)
        luaL_error(ms->L, "malformed pattern (ends with '%%')");
    switch (*p++) {
    case L_ESC:
        if (p >= pend)
            luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[':
        if (p < pend && *p == '^')
            p++;
        do { /* look for a ']' */
            if (p >= pend)
                luaL_error(ms->L, "malformed pattern (missing ']')");
            if (*(p++) == L_ESC && p < pend)
                p++; /* skip escapes (e.g. '%]') */
        } while (p >= pend || *p != ']');
        return p + 1;
    default:
        return p;
    }
}

static int match_class(int c, int cl)
{
    int res;
    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    case 'z': res = (c == 0); break;
    default: return (cl == c);
    }
    if (isupper(cl))
        res = !res;
    return res;
}

/* p points at '[', ec at its ']' */
static int match_bracket(int c, const char *p, const char *ec)
{
    int sig = 1;
    if (*(p + 1) == '^') {
        sig = 0;
        p++;
    }
    while (++p < ec) {
        if (*p == L_ESC) {
            p++;
            if (match_class(c, (unsigned char)*p))
                return sig;
        } else if (*(p + 1) == '-' && (p + 2 < ec)) {
            p += 2;
            if ((unsigned char)*(p - 2) <= c && c <= (unsigned char)*p)
                return sig;
        } else if ((unsigned char)*p == c) {
            return sig;
        }
    }
    return !sig;
}

static int single_match(const char *s, const char *p, const char *ep, const char *send)
{
    if (s >= send)
        return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case L_ESC: return match_class(c, (unsigned char)*(p + 1));
    case '[': return match_bracket(c, p, ep - 1);
    default: return ((unsigned char)*p == c);
    }
}

static const char *do_match(struct mstate *ms, const char *s, const char *p, const char *pend);

static const char *match_balance(struct mstate *ms, const char *s, const char *p,
                                 const char *pend)
{
    if (p + 1 >= pend)
        luaL_error(ms->L, "missing arguments to '%%b'");
    if (s >= ms->src_end || *s != *p)
        return NULL;
    int b = *p, e = *(p + 1), cont = 1;
    while (++s < ms->src_end) {
        luavm_poll(ms->L, ms->vm, &ms->steps);
        if (*s == e) {
            if (--cont == 0)
                return s + 1;
        } else if (*s == b) {
            cont++;
        }
    }
    return NULL;
}

static const char *max_expand(struct mstate *ms, const char *s, const char *p, const char *ep,
                              const char *pend)
{
    ptrdiff_t i = 0;
    while (single_match(s + i, p, ep, ms->src_end)) {
        luavm_poll(ms->L, ms->vm, &ms->steps);
        i++;
    }
    while (i >= 0) { /* try with the maximum repetitions, then fewer */
        const char *res = do_match(ms, s + i, ep + 1, pend);
        if (res)
            return res;
        i--;
    }
    return NULL;
}

static const char *min_expand(struct mstate *ms, const char *s, const char *p, const char *ep,
                              const char *pend)
{
    for (;;) {
        const char *res = do_match(ms, s, ep + 1, pend);
        if (res)
            return res;
        if (single_match(s, p, ep, ms->src_end))
            s++;
        else
            return NULL;
    }
}

static const char *start_capture(struct mstate *ms, const char *s, const char *p,
                                 const char *pend, int what)
{
    int level = ms->level;
    if (level >= MAXCAPTURES)
        luaL_error(ms->L, "too many captures");
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = level + 1;
    const char *res = do_match(ms, s, p, pend);
    if (!res)
        ms->level--; /* undo capture */
    return res;
}

static const char *end_capture(struct mstate *ms, const char *s, const char *p, const char *pend)
{
    int l = capture_to_close(ms);
    ms->capture[l].len = s - ms->capture[l].init;
    const char *res = do_match(ms, s, p, pend);
    if (!res)
        ms->capture[l].len = CAP_UNFINISHED;
    return res;
}

static const char *match_capture(struct mstate *ms, const char *s, int l)
{
    l = check_capture(ms, l);
    size_t len = (size_t)ms->capture[l].len;
    if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

static const char *do_match(struct mstate *ms, const char *s, const char *p, const char *pend)
{
    if (ms->depth-- == 0)
        luaL_error(ms->L, "pattern too complex");
    luavm_poll(ms->L, ms->vm, &ms->steps);
init: /* a tail call, written as a jump */
    if (p == pend)
        goto done;
    switch (*p) {
    case '(':
        if (p + 1 < pend && *(p + 1) == ')')
            s = start_capture(ms, s, p + 2, pend, CAP_POSITION);
        else
            s = start_capture(ms, s, p + 1, pend, CAP_UNFINISHED);
        goto done;
    case ')':
        s = end_capture(ms, s, p + 1, pend);
        goto done;
    case L_ESC:
        if (p + 1 < pend && *(p + 1) == 'b') {
            s = match_balance(ms, s, p + 2, pend);
            if (s) {
                p += 4;
                goto init;
            }
            goto done;
        }
        if (p + 1 < pend && *(p + 1) == 'f') {
            const char *ep;
            p += 2;
            if (p >= pend || *p != '[')
                luaL_error(ms->L, "missing '[' after '%%f' in pattern");
            ep = class_end(ms, p, pend);
            int prev = (s == ms->src_init) ? '\0' : (unsigned char)*(s - 1);
            int cur = (s < ms->src_end) ? (unsigned char)*s : '\0';
            if (!match_bracket(prev, p, ep - 1) && match_bracket(cur, p, ep - 1)) {
                p = ep;
                goto init;
            }
            s = NULL;
            goto done;
        }
        if (p + 1 < pend && isdigit((unsigned char)*(p + 1))) {
            s = match_capture(ms, s, (unsigned char)*(p + 1));
            if (s) {
                p += 2;
                goto init;
            }
            goto done;
        }
        goto dflt;
    case '$':
        if (p + 1 == pend) { /* the pattern's last character: end of subject */
            s = (s == ms->src_end) ? s : NULL;
            goto done;
        }
        goto dflt;
    default:
    dflt: {
        const char *ep = class_end(ms, p, pend);
        int m = single_match(s, p, ep, ms->src_end);
        if (ep < pend) {
            switch (*ep) {
            case '?': {
                const char *res;
                if (m && ((res = do_match(ms, s + 1, ep + 1, pend)) != NULL)) {
                    s = res;
                    goto done;
                }
                p = ep + 1;
                goto init;
            }
            case '*':
                s = max_expand(ms, s, p, ep, pend);
                goto done;
            case '+':
                s = m ? max_expand(ms, s + 1, p, ep, pend) : NULL;
                goto done;
            case '-':
                s = min_expand(ms, s, p, ep, pend);
                goto done;
            default:
                break;
            }
        }
        if (!m) {
            s = NULL;
            goto done;
        }
        s++;
        p = ep;
        goto init;
    }
    }
done:
    ms->depth++;
    return s;
}

static void push_onecapture(struct mstate *ms, int i, const char *s, const char *e)
{
    if (i >= ms->level) {
        if (i == 0) /* no captures: the whole match */
            lua_pushlstring(ms->L, s, (size_t)(e - s));
        else
            luaL_error(ms->L, "invalid capture index");
        return;
    }
    ptrdiff_t l = ms->capture[i].len;
    if (l == CAP_UNFINISHED)
        luaL_error(ms->L, "unfinished capture");
    if (l == CAP_POSITION)
        lua_pushinteger(ms->L, ms->capture[i].init - ms->src_init + 1);
    else
        lua_pushlstring(ms->L, ms->capture[i].init, (size_t)l);
}

static int push_captures(struct mstate *ms, const char *s, const char *e)
{
    int n = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_onecapture(ms, i, s, e);
    return n;
}

static void ms_init(struct mstate *ms, lua_State *L, const char *s, size_t ls)
{
    ms->L = L;
    ms->vm = luavm_of(L);
    ms->steps = 0;
    ms->src_init = s;
    ms->src_end = s + ls;
}

static void ms_reset(struct mstate *ms)
{
    ms->level = 0;
    ms->depth = MAXMATCHDEPTH;
}

/* Any pattern special in the whole pattern (NUL bytes included: they are
 * ordinary characters here). */
static int has_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (strchr(SPECIALS, p[i]) && p[i])
            return 1;
    return 0;
}

static int find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    ptrdiff_t init = posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init < 0)
        init = 0;
    else if ((size_t)init > ls)
        init = (ptrdiff_t)ls;
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) { /* a plain search */
        const char *s2 = lp == 0 ? s + init : memmem(s + init, ls - (size_t)init, p, lp);
        if (s2) {
            lua_pushinteger(L, s2 - s + 1);
            lua_pushinteger(L, s2 - s + (ptrdiff_t)lp);
            return 2;
        }
        lua_pushnil(L);
        return 1;
    }
    struct mstate ms;
    int anchor = lp > 0 && *p == '^';
    const char *pend = p + lp;
    if (anchor)
        p++;
    const char *s1 = s + init;
    ms_init(&ms, L, s, ls);
    do {
        ms_reset(&ms);
        const char *e = do_match(&ms, s1, p, pend);
        if (e) {
            if (find) {
                lua_pushinteger(L, s1 - s + 1);
                lua_pushinteger(L, e - s);
                return push_captures(&ms, NULL, NULL) + 2;
            }
            return push_captures(&ms, s1, e);
        }
    } while (s1++ < ms.src_end && !anchor);
    lua_pushnil(L);
    return 1;
}

static int str_find(lua_State *L) { return find_aux(L, 1); }
static int str_match(lua_State *L) { return find_aux(L, 0); }

static int gmatch_aux(lua_State *L)
{
    struct mstate ms;
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
    ms_init(&ms, L, s, ls);
    for (const char *src = s + (size_t)lua_tointeger(L, lua_upvalueindex(3));
         src <= ms.src_end; src++) {
        ms_reset(&ms);
        const char *e = do_match(&ms, src, p, p + lp);
        if (e) {
            lua_Integer newstart = e - s;
            if (e == src)
                newstart++; /* empty match: go at least one position */
            lua_pushinteger(L, newstart);
            lua_replace(L, lua_upvalueindex(3));
            return push_captures(&ms, src, e);
        }
    }
    return 0;
}

static int str_gmatch(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, gmatch_aux, 3);
    return 1;
}

/* gsub's result buffer: a userdata at a fixed stack slot, replaced by a
 * larger one as it grows.  GC-owned (an error leaks nothing) and off the C
 * stack: luaL_Buffer keeps 8 KiB on the stack, which is what made
 * recursion through gsub exhaust it. */
struct gbuf {
    lua_State *L;
    int slot;
    char *p;
    size_t n, cap;
};

static void gb_init(struct gbuf *b, lua_State *L, size_t cap)
{
    b->L = L;
    b->n = 0;
    b->cap = cap < 64 ? 64 : cap;
    b->p = lua_newuserdata(L, b->cap);
    b->slot = lua_gettop(L);
}

static void gb_add(struct gbuf *b, const char *s, size_t len)
{
    if (len > b->cap - b->n) {
        size_t ncap = b->cap;
        while (ncap - b->n < len) {
            if (ncap > ((size_t)1 << 40))
                luaL_error(b->L, "string too large");
            ncap *= 2;
        }
        char *np = lua_newuserdata(b->L, ncap); /* may raise: nothing held */
        memcpy(np, b->p, b->n);
        lua_replace(b->L, b->slot);
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
}

/* Append the string on top of the stack and pop it. */
static void gb_addvalue(struct gbuf *b)
{
    size_t l;
    const char *v = lua_tolstring(b->L, -1, &l);
    gb_add(b, v, l);
    lua_pop(b->L, 1);
}

static void add_s(struct mstate *ms, struct gbuf *b, const char *s, const char *e)
{
    size_t l;
    const char *news = lua_tolstring(ms->L, 3, &l);
    for (size_t i = 0; i < l; i++) {
        if (news[i] != L_ESC) {
            gb_add(b, news + i, 1);
        } else {
            i++; /* skip ESC */
            if (i >= l || !isdigit((unsigned char)news[i])) {
                if (i < l)
                    gb_add(b, news + i, 1);
            } else if (news[i] == '0') {
                gb_add(b, s, (size_t)(e - s));
            } else {
                push_onecapture(ms, news[i] - '1', s, e);
                gb_addvalue(b);
            }
        }
    }
}

static void add_value(struct mstate *ms, struct gbuf *b, const char *s, const char *e)
{
    lua_State *L = ms->L;
    switch (lua_type(L, 3)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
        add_s(ms, b, s, e);
        return;
    case LUA_TFUNCTION: {
        struct luavm *vm = luavm_cdepth_enter(L);
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e);
        lua_call(L, n, 1);
        luavm_cdepth_leave(vm);
        break;
    }
    case LUA_TTABLE: {
        struct luavm *vm = luavm_cdepth_enter(L); /* __index may be a function */
        push_onecapture(ms, 0, s, e);
        lua_gettable(L, 3);
        luavm_cdepth_leave(vm);
        break;
    }
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        gb_add(b, s, (size_t)(e - s));
        return;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    gb_addvalue(b);
}

static int str_gsub(lua_State *L)
{
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
    luaL_argcheck(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                         tr == LUA_TTABLE || luavm_ro_what(L, 3),
                  3, "string/function/table expected");
    if (luavm_ro_what(L, 3)) { /* a read-only view as the replacement table */
        luavm_ro_source(L, 3);
        lua_replace(L, 3);
    }
    int anchor = lp > 0 && *p == '^';
    const char *pend = p + lp;
    if (anchor)
        p++;
    lua_settop(L, 3);
    struct mstate ms;
    struct gbuf b;
    gb_init(&b, L, srcl + 16);
    ms_init(&ms, L, src, srcl);
    lua_Integer n = 0;
    while (n < max_s) {
        ms_reset(&ms);
        const char *e = do_match(&ms, src, p, pend);
        if (e) {
            n++;
            add_value(&ms, &b, src, e);
        }
        if (e && e > src) {
            src = e;
        } else if (src < ms.src_end) {
            gb_add(&b, src++, 1);
        } else {
            break;
        }
        if (anchor)
            break;
        luavm_poll(L, ms.vm, &ms.steps);
    }
    gb_add(&b, src, (size_t)(ms.src_end - src));
    lua_pushlstring(L, b.p, b.n);
    lua_pushinteger(L, n);
    return 2;
}

/* ------------------------------------------------------------------ */
/* wrappers                                                           */

/* string.rep(s, n [, sep]): the result's size is known in advance; past
 * the call's memory limit it is an error before anything is allocated. */
static int str_rep(lua_State *L)
{
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Number n = luaL_checknumber(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    struct luavm *vm = luavm_of(L);
    if (vm && vm->armed && n >= 1) {
        double total = (double)l * n + (double)lsep * (n - 1);
        if (total > (double)vm->call_mem_limit) { /* as if the allocation were refused */
            vm->killed |= LUAVM_KILL_MEM;
            return luavm_stop(L, vm);
        }
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm ? vm->ref_rep : LUA_NOREF);
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Call the original (registry ref) with this function's arguments, one
 * C-call level deeper. */
static int call_counted(lua_State *L, int ref)
{
    struct luavm *vm = luavm_cdepth_enter(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    luavm_cdepth_leave(vm);
    return 1;
}

static int str_format(lua_State *L) { return call_counted(L, luavm_of(L)->ref_format); }

int luavm_l_ostime(lua_State *L) { return call_counted(L, luavm_of(L)->ref_ostime); }

void luavm_open_strlib(lua_State *L, struct luavm *vm)
{
    lua_getfield(L, -1, "format");
    vm->ref_format = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "rep");
    vm->ref_rep = luaL_ref(L, LUA_REGISTRYINDEX);
    static const luaL_Reg funcs[] = {
        { "find", str_find }, { "match", str_match }, { "gmatch", str_gmatch },
        { "gsub", str_gsub }, { "rep", str_rep }, { "format", str_format }, { NULL, NULL }
    };
    luaL_register(L, NULL, funcs);
}
