/*
 * test_hooks.c — the hook layer on a real LuaJIT sandbox: every result
 * kind's verdicts (what passes, what is a "no", what breaks the contract),
 * the stack left behind, error counting as /metrics shows it, the ref
 * cache, and the explain text.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/hooks.h"
#include "lua/luavm.h"

static struct luavm *vm;
static lua_State *L;

static void setup(void)
{
    log_set_level(LOG_ERROR);
    struct luavm_opts o = { .instr_budget = 50000 };
    cr_assert_eq(luavm_new(&o, &vm), 0);
    L = luavm_state(vm);
    hooks_metrics_init();
}

static void teardown(void)
{
    metrics_unregister_all();
    luavm_free(vm);
}

TestSuite(hooks, .init = setup, .fini = teardown, .timeout = 30);

/* Load `src` as a rule file and return a registry ref of the table it returns. */
static int load_table(const char *src)
{
    char err[512];
    cr_assert_eq(luavm_load_chunk(vm, "rules/t.lua", src, strlen(src), err, sizeof err), 0, "%s",
                 err);
    cr_assert(lua_istable(L, -1));
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The /metrics line of `who`'s `hook` failures of `kind`, or NULL. */
static char *metric_line(char *out, size_t n, const char *who, const char *hook, const char *kind)
{
    struct buf b = BUF_INIT;
    cr_assert_eq(metrics_render(&b), 0);
    char key[200];
    snprintf(key, sizeof key, "promod_hook_errors_total{campaign=\"%s\",hook=\"%s\",kind=\"%s\"} ",
             who, hook, kind);
    const char *p = b.p ? strstr(b.p, key) : NULL;
    char *r = NULL;
    if (p) {
        size_t l = strcspn(p, "\n");
        snprintf(out, n, "%.*s", (int)l, p);
        r = out;
    }
    buf_free(&b);
    return r;
}

/* Arrays, not pointers: Criterion hands each case to a test process of
 * its own, where the parent's pointers mean nothing. */
struct vcase {
    enum hooks_id h;
    char ret[96];          /* what the hook returns (a Lua expression list) */
    enum hooks_verdict v;
    char text[16];         /* DENY: the reason; CHOICE: the id ("" = none) */
    double num;            /* NUMBER: the value */
    char msg[64];          /* FAILED: expected in res.msg */
    char kind[8];          /* FAILED: the counter's kind */
};

static struct vcase vcases[] = {
    { HOOKS_ELIGIBLE, "true", HOOKS_PASS, "", 0, "", "" },
    { HOOKS_ELIGIBLE, "false", HOOKS_DENY, "", 0, "", "" },
    { HOOKS_ELIGIBLE, "false, 'not gold'", HOOKS_DENY, "not gold", 0, "", "" },
    { HOOKS_ELIGIBLE, "nil, 'gone'", HOOKS_DENY, "gone", 0, "", "" },
    { HOOKS_ELIGIBLE, "nil", HOOKS_DENY, "", 0, "", "" },
    { HOOKS_ELIGIBLE, "false, 42", HOOKS_DENY, "", 0, "", "" },
    { HOOKS_ELIGIBLE, "'yes'", HOOKS_FAILED, "", 0,
      "must return true or false (got a non-boolean)", "error" },
    { HOOKS_ELIGIBLE, "1", HOOKS_FAILED, "", 0, "must return true or false", "error" },
    { HOOKS_ELIGIBLE, "(error('boom'))", HOOKS_FAILED, "", 0, "rules/t.lua:1: boom", "error" },
    { HOOKS_ELIGIBLE, "(function() while true do end end)()", HOOKS_FAILED, "", 0,
      "instruction budget", "budget" },
    { HOOKS_SCORE, "12.5", HOOKS_PASS, "", 12.5, "", "" },
    { HOOKS_SCORE, "-3", HOOKS_PASS, "", -3, "", "" },
    { HOOKS_SCORE, "'12'", HOOKS_FAILED, "", 0, "must return a finite number", "error" },
    { HOOKS_SCORE, "0/0", HOOKS_FAILED, "", 0, "must return a finite number", "error" },
    { HOOKS_SCORE, "math.huge", HOOKS_FAILED, "", 0, "must return a finite number", "error" },
    { HOOKS_SCORE, "nil", HOOKS_FAILED, "", 0, "must return a finite number", "error" },
    { HOOKS_CONTENT, "'B'", HOOKS_PASS, "B", 0, "", "" },
    { HOOKS_CONTENT, "{ id = 'C', content = {} }", HOOKS_PASS, "C", 0, "", "" },
    { HOOKS_CONTENT, "{ id = 7 }", HOOKS_PASS, "7", 0, "", "" },
    { HOOKS_CONTENT, "42", HOOKS_FAILED, "", 0, "must return one of the variants (or its id)",
      "error" },
    { HOOKS_CONTENT, "{}", HOOKS_FAILED, "", 0, "must return one of the variants", "error" },
    { HOOKS_CONTENT, "nil", HOOKS_FAILED, "", 0, "must return one of the variants", "error" },
    /* the id is read raw: no script code runs after the call returned */
    { HOOKS_CONTENT, "setmetatable({}, { __index = { id = 'B' } })", HOOKS_FAILED, "", 0,
      "must return one of the variants", "error" },
    { HOOKS_CONTENT, "setmetatable({}, { __index = function() while true do end end })",
      HOOKS_FAILED, "", 0, "must return one of the variants", "error" },
    { HOOKS_THROTTLE, "true", HOOKS_PASS, "", 0, "", "" },
    { HOOKS_THROTTLE, "false", HOOKS_DENY, "", 0, "", "" },
    { HOOKS_THROTTLE, "nil", HOOKS_FAILED, "", 0,
      "must return true (allow) or false (hold back)", "error" },
    { HOOKS_THROTTLE, "'no'", HOOKS_FAILED, "", 0, "must return true (allow)", "error" },
    { HOOKS_RENDER, "{ to = 'x' }", HOOKS_PASS, "", 0, "", "" },
    { HOOKS_RENDER, "nil, 'no email'", HOOKS_DENY, "no email", 0, "", "" },
    { HOOKS_RENDER, "false", HOOKS_DENY, "", 0, "", "" },
    { HOOKS_RENDER, "42", HOOKS_FAILED, "", 0, "must return a table or nil, got a number",
      "error" },
    { HOOKS_RENDER, "'msg'", HOOKS_FAILED, "", 0, "must return a table or nil, got a string",
      "error" },
};

ParameterizedTestParameters(hooks, verdicts)
{
    return cr_make_param_array(struct vcase, vcases, sizeof vcases / sizeof vcases[0]);
}

ParameterizedTest(struct vcase *c, hooks, verdicts)
{
    const struct hooks_desc *d = &hooks_table[c->h];
    char src[512], who[64], line[300];
    snprintf(src, sizeof src, "return { %s = function(a, b, c, d) return %s end }", d->name,
             c->ret);
    int tref = load_table(src);
    int refs[HOOKS_N];
    hooks_refs_resolve(L, d->owner, tref, refs);
    cr_assert_neq(refs[c->h], LUA_NOREF);
    snprintf(who, sizeof who, "camp-%s", d->name);

    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, refs[c->h]);
    for (int i = 0; i < d->nargs; i++)
        lua_createtable(L, 0, 0);
    struct hooks_res res;
    enum hooks_verdict v = hooks_call(vm, L, c->h, refs[c->h], who, &res);
    cr_assert_eq(v, c->v, "%s returning %s: verdict %d, want %d (%s)", d->name, c->ret, v, c->v,
                 v == HOOKS_FAILED ? res.msg : "");
    if (v == HOOKS_FAILED) {
        cr_assert_eq(lua_gettop(L), base, "a failed call leaves nothing on the stack");
        cr_assert(strstr(res.msg, c->msg), "%s: message \"%s\" lacks \"%s\"", c->ret, res.msg,
                  c->msg);
        cr_assert_eq(res.rc, !strcmp(c->kind, "budget") ? ERR_BUDGET : ERR_LUA);
        cr_assert_not_null(metric_line(line, sizeof line, who, d->name, c->kind),
                           "no %s/%s counter", d->name, c->kind);
        cr_assert(strstr(line, "} 1"), "%s", line);
    } else {
        cr_assert_eq(lua_gettop(L), base + d->nret, "the results stay for the caller");
        if (v == HOOKS_DENY) {
            const char *why = hooks_reason(L);
            if (c->text[0])
                cr_assert_str_eq(why ? why : "(null)", c->text);
            else
                cr_assert_null(why, "no reason expected, got %s", why);
        }
        if (d->result == HOOKS_R_CHOICE)
            cr_assert_str_eq(res.text, c->text);
        if (d->result == HOOKS_R_NUMBER)
            cr_assert_float_eq(res.num, c->num, 1e-12);
        if (d->result == HOOKS_R_MESSAGE && v == HOOKS_PASS)
            cr_assert(lua_istable(L, -2), "the message is left for the caller to read");
        lua_pop(L, d->nret);
        cr_assert_null(metric_line(line, sizeof line, who, d->name, "error"),
                       "a call that kept its contract was counted: %s", line);
    }
    hooks_refs_release(L, refs);
    luaL_unref(L, LUA_REGISTRYINDEX, tref);
}

Test(hooks, failures_add_up_per_campaign_hook_and_kind)
{
    int tref = load_table("return { score = function(p, ctx) if ctx.x then return 'x' end "
                          "while true do end end }");
    int refs[HOOKS_N];
    hooks_refs_resolve(L, HOOKS_CAMPAIGN, tref, refs);
    for (int i = 0; i < 5; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, refs[HOOKS_SCORE]);
        lua_createtable(L, 0, 0);
        lua_createtable(L, 0, 1);
        if (i < 3) { /* 3 contract breaks, then 2 budget kills */
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "x");
        }
        struct hooks_res res;
        cr_assert_eq(hooks_call(vm, L, HOOKS_SCORE, refs[HOOKS_SCORE], "sum\"me", &res),
                     HOOKS_FAILED);
    }
    struct hooks_res res;
    cr_assert_eq(hooks_refuse(HOOKS_CONTENT, "sum\"me", &res, NULL), HOOKS_FAILED);
    cr_assert_str_eq(res.msg, "must return one of the variants (or its id)");
    cr_assert_eq(hooks_refuse(HOOKS_RENDER, "sum\"me", &res, "a message JSON cannot carry"),
                 HOOKS_FAILED);
    cr_assert_str_eq(res.msg, "a message JSON cannot carry");
    char line[300];
    /* the id is a Prometheus label: its quote is escaped */
    cr_assert_not_null(metric_line(line, sizeof line, "sum\\\"me", "score", "error"));
    cr_assert(strstr(line, "} 3"), "%s", line);
    cr_assert_not_null(metric_line(line, sizeof line, "sum\\\"me", "score", "budget"));
    cr_assert(strstr(line, "} 2"), "%s", line);
    cr_assert_not_null(metric_line(line, sizeof line, "sum\\\"me", "content", "error"));
    cr_assert(strstr(line, "} 1"), "%s", line);
    cr_assert_not_null(metric_line(line, sizeof line, "sum\\\"me", "render", "error"));
    cr_assert_null(metric_line(line, sizeof line, "sum\\\"me", "eligible", "error"));
    hooks_refs_release(L, refs);
}

Test(hooks, refs_follow_the_owner_and_the_table)
{
    int tref = load_table("return { eligible = function() return true end, score = 5,\n"
                          "  render = function() return {} end, deliver = function() end }");
    int refs[HOOKS_N];
    hooks_refs_resolve(L, HOOKS_CAMPAIGN, tref, refs);
    cr_assert_neq(refs[HOOKS_ELIGIBLE], LUA_NOREF);
    cr_assert_eq(refs[HOOKS_SCORE], LUA_NOREF, "a number is no hook");
    cr_assert_eq(refs[HOOKS_CONTENT], LUA_NOREF);
    cr_assert_eq(refs[HOOKS_RENDER], LUA_NOREF, "render is a channel's hook, not a campaign's");
    lua_rawgeti(L, LUA_REGISTRYINDEX, refs[HOOKS_ELIGIBLE]);
    cr_assert(lua_isfunction(L, -1));
    lua_pop(L, 1);
    hooks_refs_release(L, refs);
    for (int h = 0; h < HOOKS_N; h++)
        cr_assert_eq(refs[h], LUA_NOREF);

    hooks_refs_resolve(L, HOOKS_CHANNEL, tref, refs);
    cr_assert_eq(refs[HOOKS_ELIGIBLE], LUA_NOREF);
    cr_assert_neq(refs[HOOKS_RENDER], LUA_NOREF);
    cr_assert_neq(refs[HOOKS_DELIVER], LUA_NOREF);
    hooks_refs_release(L, refs);

    /* a file that did not load in this worker: every slot empty */
    hooks_refs_resolve(L, HOOKS_CAMPAIGN, LUA_NOREF, refs);
    for (int h = 0; h < HOOKS_N; h++)
        cr_assert_eq(refs[h], LUA_NOREF);
    int top = lua_gettop(L);
    hooks_refs_resolve(L, HOOKS_CAMPAIGN, tref, refs);
    cr_assert_eq(lua_gettop(L), top, "resolving is stack-neutral");
    hooks_refs_release(L, refs);
}

/* A hook may give its own file's table a metatable later; the refs are
 * resolved again at every adoption, unarmed, so they are read raw: an
 * __index that never returns must not run there. */
Test(hooks, refs_are_read_raw)
{
    int tref = load_table("local M = { eligible = function() return true end }\n"
                          "M.arm = function() setmetatable(M, { __index = function() "
                          "while true do end end }) end\n"
                          "return M");
    lua_rawgeti(L, LUA_REGISTRYINDEX, tref);
    lua_getfield(L, -1, "arm");
    lua_remove(L, -2);
    char err[256];
    cr_assert_eq(luavm_call(vm, 0, 0, err, sizeof err), 0, "%s", err);
    int refs[HOOKS_N];
    hooks_refs_resolve(L, HOOKS_CAMPAIGN, tref, refs);
    cr_assert_neq(refs[HOOKS_ELIGIBLE], LUA_NOREF);
    cr_assert_eq(refs[HOOKS_SCORE], LUA_NOREF, "absent, not looked up through __index");
    hooks_refs_release(L, refs);
    luaL_unref(L, LUA_REGISTRYINDEX, tref);
}

Test(hooks, the_table_is_consistent)
{
    for (int h = 0; h < HOOKS_N; h++) {
        const struct hooks_desc *d = &hooks_table[h];
        cr_assert(d->name && d->name[0], "hook %d has no name", h);
        cr_assert(d->nargs > 0 && d->nret > 0, "%s", d->name);
        cr_assert(d->usage && strstr(d->usage, d->name), "%s: usage names the hook", d->name);
        if (d->result != HOOKS_R_CALLER)
            cr_assert(d->contract && d->contract[0], "%s: no contract text", d->name);
        if (d->result == HOOKS_R_PASSFAIL || d->result == HOOKS_R_MESSAGE)
            cr_assert_eq(d->nret, 2, "%s: the reason needs a second result", d->name);
        cr_assert_eq(hooks_find(d->owner, d->name), h, "%s: names are unique per owner", d->name);
        cr_assert_eq(hooks_find(d->owner == HOOKS_CAMPAIGN ? HOOKS_CHANNEL : HOOKS_CAMPAIGN,
                                d->name), -1);
    }
    cr_assert_eq(hooks_find(HOOKS_CAMPAIGN, "variants"), -1);
    cr_assert(hooks_table[HOOKS_ELIGIBLE].required, "eligible is the one required hook");
}

Test(hooks, text_is_cut_between_characters)
{
    char out[32], msg[600];
    cr_assert_str_eq(hooks_text(out, sizeof out, HOOKS_SCORE, "rules/x.lua:3: boom"),
                     "score: rules/x.lua:3: boom");
    /* 2-byte characters across the cut: never half of one */
    for (int i = 0; i + 2 < (int)sizeof msg; i += 2)
        memcpy(msg + i, "\xc3\xa9", 2);
    msg[sizeof msg - 2] = 0;
    for (size_t n = 10; n <= sizeof out; n++) {
        hooks_text(out, n, HOOKS_CONTENT, msg);
        cr_assert(!strncmp(out, "content: ", n - 1 < 9 ? n - 1 : 9));
        cr_assert(strlen(out) < n);
        json_t *s = json_string(out);
        cr_assert_not_null(s, "cut inside a character at size %zu", n);
        json_decref(s);
    }
    /* 3-byte characters too */
    for (int i = 0; i + 3 < (int)sizeof msg; i += 3)
        memcpy(msg + i, "\xe2\x82\xac", 3);
    msg[597] = 0;
    for (size_t n = 12; n <= sizeof out; n++) {
        json_t *s = json_string(hooks_text(out, n, HOOKS_RENDER, msg));
        cr_assert_not_null(s, "cut inside a character at size %zu", n);
        json_decref(s);
    }
}

Test(hooks, explain_sets_the_error)
{
    hooks_explain(NULL, HOOKS_ELIGIBLE, "ignored without explain");
    json_t *xp = json_object();
    hooks_explain(xp, HOOKS_THROTTLE, "rules/a.lua:7: attempt to index a nil value");
    cr_assert_str_eq(json_string_value(json_object_get(xp, "error")),
                     "throttle: rules/a.lua:7: attempt to index a nil value");
    hooks_explain(xp, HOOKS_ELIGIBLE, "bad \xff byte");
    cr_assert_str_eq(json_string_value(json_object_get(xp, "error")),
                     "eligible: error (its message is not valid UTF-8)");
    json_decref(xp);
}
