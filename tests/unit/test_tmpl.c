/* test_tmpl.c — placeholder rendering, checking, and the Lua lookup. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "engine/tmpl.h"

TestSuite(tmpl, .timeout = 60);

/* A fixed dictionary lookup: "name" → "Ann", "x.y" → "<b>&'\"", ... */
static const char *dict[][2] = {
    { "name", "Ann" },
    { "html", "<b>Tom & \"Jerry\"</b>'" },
    { "user.address.city", "Paris" },
    { "empty", "" },
    { "a-b_c", "dash" },
};

static int dict_lookup(void *ud, const char *path, size_t len, struct buf *out)
{
    (void)ud;
    for (size_t i = 0; i < sizeof dict / sizeof dict[0]; i++)
        if (strlen(dict[i][0]) == len && memcmp(dict[i][0], path, len) == 0)
            return buf_adds(out, dict[i][1]) ? ERR_NOMEM : 1;
    if (len == 4 && memcmp(path, "boom", 4) == 0)
        return ERR_LUA;
    return 0;
}

static char *render(const char *tpl, int esc)
{
    struct buf b = BUF_INIT;
    int rc = tmpl_render(tpl, strlen(tpl), esc, dict_lookup, NULL, &b);
    cr_assert_eq(rc, 0, "render '%s': %s", tpl, err_str(rc));
    return buf_steal(&b);
}

/* Criterion re-executes the binary for each test (with a new ASLR layout),
 * so parameters are copied by value: strings live inline, never as pointers. */
struct rcase {
    char tpl[64];
    int esc;
    char want[96];
};

ParameterizedTestParameters(tmpl, render)
{
    static struct rcase cases[] = {
        { "", 1, "" },
        { "plain text", 1, "plain text" },
        { "Hi {{name}}!", 1, "Hi Ann!" },
        { "Hi {{ name }}!", 1, "Hi Ann!" },
        { "Hi {{\tname\n}}!", 1, "Hi Ann!" },
        { "{{name}}{{name}}", 1, "AnnAnn" },
        /* values are escaped; the author's literal text is not */
        { "<p>{{html}}</p>", 1, "<p>&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;&#39;</p>" },
        /* html_escape = 0 (the caller's _raw handling) */
        { "<p>{{html}}</p>", 0, "<p><b>Tom & \"Jerry\"</b>'</p>" },
        { "{{user.address.city}}", 1, "Paris" },
        { "{{a-b_c}}", 1, "dash" },
        /* missing → empty, or the default */
        { "[{{missing}}]", 1, "[]" },
        { "[{{missing|friend}}]", 1, "[friend]" },
        { "[{{ missing | dear friend }}]", 1, "[dear friend]" },
        { "[{{missing|v1.2 & more}}]", 1, "[v1.2 &amp; more]" },
        { "[{{missing|v1.2 & more}}]", 0, "[v1.2 & more]" },
        { "[{{missing|a|b}}]", 1, "[a|b]" },
        { "[{{missing|}}]", 1, "[]" },
        { "[{{name|friend}}]", 1, "[Ann]" },
        /* found-but-empty is a value, not missing */
        { "[{{empty|friend}}]", 1, "[]" },
        { "[{{user.address.zip|75001}}]", 1, "[75001]" },
        /* invalid placeholders are copied literally */
        { "a {{}} b", 1, "a {{}} b" },
        { "a {{ }} b", 1, "a {{ }} b" },
        { "a {{|x}} b", 1, "a {{|x}} b" },
        { "a {{first name}} b", 1, "a {{first name}} b" },
        { "a {{a..b}} b {{name}}", 1, "a {{a..b}} b Ann" },
        { "a {{.a}} {{a.}} b", 1, "a {{.a}} {{a.}} b" },
        { "a {{<x>}} b", 1, "a {{<x>}} b" },
        /* unclosed: the rest is literal */
        { "Hi {{name", 1, "Hi {{name" },
        { "Hi {{name} x", 1, "Hi {{name} x" },
        { "{{name}} and {{", 1, "Ann and {{" },
        { "{{", 1, "{{" },
        { "{", 1, "{" },
        { "}} {name} }", 1, "}} {name} }" },
        /* first "}}" closes: "{{{name}}}" is a bad path "{name" */
        { "{{{name}}}", 1, "{{{name}}}" },
        { "{{name}}}", 1, "Ann}" },
        { "{ {{name}}", 1, "{ Ann" },
    };
    return cr_make_param_array(struct rcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct rcase *c, tmpl, render)
{
    char *got = render(c->tpl, c->esc);
    cr_expect_str_eq(got, c->want, "template '%s'", c->tpl);
    free(got);
}

Test(tmpl, a_compiled_template_runs_again_and_again)
{
    char text[] = "Hi {{name}}, {{ missing | you }} <{{html}}> {{{bad}}}";
    struct tmpl_prog *t = tmpl_compile(text, strlen(text));
    cr_assert_not_null(t);
    memset(text, 'x', sizeof text - 1); /* the program keeps its own copy */
    struct buf out = BUF_INIT, val = BUF_INIT;
    for (int i = 0; i < 3; i++) {
        buf_reset(&out);
        cr_assert_eq(tmpl_run(t, 1, dict_lookup, NULL, &val, &out), 0);
        cr_assert_str_eq(out.p, "Hi Ann, you <&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;&#39;> "
                                "{{{bad}}}");
    }
    tmpl_prog_free(t);
    /* a lookup error restores what `out` held before */
    t = tmpl_compile("a {{name}} {{boom}} z", 21);
    buf_reset(&out);
    buf_adds(&out, "kept");
    cr_assert_eq(tmpl_run(t, 0, dict_lookup, NULL, &val, &out), ERR_LUA);
    cr_assert_str_eq(out.p, "kept");
    tmpl_prog_free(t);
    /* empty text: an empty string, not a NULL buffer */
    t = tmpl_compile("", 0);
    struct buf e = BUF_INIT;
    cr_assert_eq(tmpl_run(t, 1, dict_lookup, NULL, &val, &e), 0);
    cr_assert_not_null(e.p);
    cr_assert_str_eq(e.p, "");
    tmpl_prog_free(t);
    buf_free(&e);
    buf_free(&out);
    buf_free(&val);
}

Test(tmpl, render_appends_and_handles_nul)
{
    struct buf b = BUF_INIT;
    buf_adds(&b, "pre:");
    static const char tpl[] = "a\0{{name}}";
    cr_assert_eq(tmpl_render(tpl, sizeof tpl - 1, 1, dict_lookup, NULL, &b), 0);
    cr_expect_eq(b.len, 4 + 2 + 3);
    cr_expect_eq(memcmp(b.p, "pre:a\0Ann", 9), 0);
    buf_free(&b);
}

Test(tmpl, lookup_error_aborts_and_restores)
{
    struct buf b = BUF_INIT;
    buf_adds(&b, "keep");
    const char *tpl = "{{name}} then {{boom}} never";
    cr_expect_eq(tmpl_render(tpl, strlen(tpl), 1, dict_lookup, NULL, &b), ERR_LUA);
    cr_expect_str_eq(b.p, "keep");
    buf_free(&b);
}

Test(tmpl, has_placeholders)
{
    cr_expect_eq(tmpl_has_placeholders("x {{a}} y", 9), 1);
    cr_expect_eq(tmpl_has_placeholders("plain", 5), 0);
    cr_expect_eq(tmpl_has_placeholders("{{ open", 7), 0);
    cr_expect_eq(tmpl_has_placeholders("}} {{", 5), 0);
    cr_expect_eq(tmpl_has_placeholders("", 0), 0);
    cr_expect_eq(tmpl_has_placeholders("{{a}}", 4), 0); /* length bounds the scan */
}

struct ccase {
    char tpl[48];
    int rc;
    char msg[64];
};

ParameterizedTestParameters(tmpl, check)
{
    static struct ccase cases[] = {
        { "", 0, "" },
        { "plain { } }} text", 0, "" },
        { "Hi {{name}} {{ a.b.c | x y.z }}", 0, "" },
        { "Hi {{name", ERR_INVAL, "unclosed {{ at offset 3" },
        { "0123456789ab{{x", ERR_INVAL, "unclosed {{ at offset 12" },
        { "abc{{}}", ERR_INVAL, "empty placeholder at offset 3" },
        { "abc{{  | def }}", ERR_INVAL, "empty placeholder at offset 3" },
        { "{{first name}}", ERR_INVAL, "invalid path \"first name\" at offset 0" },
        { "{{ok}} {{a..b}}", ERR_INVAL, "invalid path \"a..b\" at offset 7" },
        { "{{{name}}}", ERR_INVAL, "invalid path \"{name\" at offset 0" },
        { "{{ok}} {{", ERR_INVAL, "unclosed {{ at offset 7" },
    };
    return cr_make_param_array(struct ccase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct ccase *c, tmpl, check)
{
    char err[128] = "untouched";
    cr_expect_eq(tmpl_check(c->tpl, strlen(c->tpl), err, sizeof err), c->rc, "'%s'", c->tpl);
    cr_expect_str_eq(err, c->msg, "'%s'", c->tpl);
}

Test(tmpl, check_small_err_buffer)
{
    char err[8];
    cr_expect_eq(tmpl_check("{{", 2, err, sizeof err), ERR_INVAL);
    cr_expect_str_eq(err, "unclose");
    cr_expect_eq(tmpl_check("{{", 2, NULL, 0), ERR_INVAL);
}

/* ---- Lua ---- */

static lua_State *L;

static void lua_setup(void)
{
    L = luaL_newstate();
    cr_assert(L);
    luaL_openlibs(L);
    const char *src =
        "return { first = 'Zoë', age = 42, score = 2.5, big = 1500, neg = -3,"
        "  huge = 1e300, ratio = 1/3, vip = true, opted = false,"
        "  html = '<a href=\"x\">&</a>',"
        "  address = { city = 'Paris', geo = { lat = 48.85 } },"
        "  tags = { 'gold', 'eu' },"
        "  fn = print,"
        "  proxy = setmetatable({}, { __index = function(t, k) return 'via-' .. k end }),"
        "  bomb = setmetatable({}, { __index = function() error('kaboom') end }),"
        "}";
    cr_assert_eq(luaL_loadstring(L, src), 0);
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0);
}

static void lua_teardown(void)
{
    lua_close(L);
}

static char *lua_render(const char *tpl, int esc, int *rc)
{
    struct tmpl_lua_ctx ctx = { L, lua_gettop(L) };
    struct buf b = BUF_INIT;
    *rc = tmpl_render(tpl, strlen(tpl), esc, tmpl_lua_lookup, &ctx, &b);
    return buf_steal(&b);
}

struct lcase {
    char tpl[48];
    char want[64];
};

ParameterizedTestParameters(tmpl, lua)
{
    static struct lcase cases[] = {
        { "{{first}}", "Zoë" },
        { "{{age}}", "42" },
        { "{{big}}", "1500" },
        { "{{score}}", "2.5" },
        { "{{neg}}", "-3" },
        { "{{huge}}", "1e+300" },
        { "{{ratio}}", "0.33333333333333" },
        { "{{vip}}/{{opted}}", "true/false" },
        { "{{html}}", "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;" },
        { "{{address.city}}", "Paris" },
        { "{{address.geo.lat}}", "48.85" },
        { "{{tags.1}},{{tags.2}},[{{tags.3}}]", "gold,eu,[]" },
        { "[{{address}}]", "[]" },              /* tables print nothing */
        { "[{{address|none}}]", "[none]" },
        { "[{{fn|none}}]", "[none]" },
        { "[{{first.x|d}}]", "[d]" },           /* walking through a string */
        { "[{{address.nope.deeper|d}}]", "[d]" },
        { "[{{nope}}]", "[]" },
        { "{{proxy.hello}}", "via-hello" },     /* __index metamethods are honoured */
    };
    return cr_make_param_array(struct lcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct lcase *c, tmpl, lua, .init = lua_setup, .fini = lua_teardown)
{
    int top = lua_gettop(L);
    int rc;
    char *got = lua_render(c->tpl, 1, &rc);
    cr_expect_eq(rc, 0, "'%s'", c->tpl);
    cr_expect_str_eq(got, c->want, "'%s'", c->tpl);
    cr_expect_eq(lua_gettop(L), top, "stack changed");
    free(got);
}

Test(tmpl, lua_raise_in_metamethod_is_contained, .init = lua_setup, .fini = lua_teardown)
{
    int top = lua_gettop(L);
    int rc;
    char *got = lua_render("x {{bomb.key}} y", 1, &rc);
    cr_expect_eq(rc, ERR_LUA);
    cr_expect_str_eq(got, "");
    cr_expect_eq(lua_gettop(L), top);
    free(got);
    /* the state is still usable */
    got = lua_render("{{first}}", 0, &rc);
    cr_expect_eq(rc, 0);
    cr_expect_str_eq(got, "Zoë");
    free(got);
}

Test(tmpl, lua_relative_index_and_stack, .init = lua_setup, .fini = lua_teardown)
{
    lua_pushnil(L); /* the table is now at -2 */
    int top = lua_gettop(L);
    struct tmpl_lua_ctx ctx = { L, -2 };
    struct buf b = BUF_INIT;
    cr_assert_eq(tmpl_render("{{age}}", 7, 0, tmpl_lua_lookup, &ctx, &b), 0);
    cr_expect_str_eq(b.p, "42");
    cr_expect_eq(lua_gettop(L), top);
    /* direct use: missing returns 0 and writes nothing */
    buf_reset(&b);
    ctx.idx = top - 1;
    cr_expect_eq(tmpl_lua_lookup(&ctx, "nope", 4, &b), 0);
    cr_expect_eq(b.len, 0);
    cr_expect_eq(tmpl_lua_lookup(&ctx, "address.city", 12, &b), 1);
    cr_expect_str_eq(b.p, "Paris");
    cr_expect_eq(lua_gettop(L), top);
    buf_free(&b);
}

Test(tmpl, lua_many_lookups_no_growth, .init = lua_setup, .fini = lua_teardown)
{
    int top = lua_gettop(L);
    lua_gc(L, LUA_GCCOLLECT, 0);
    int kb0 = lua_gc(L, LUA_GCCOUNT, 0);
    for (int i = 0; i < 20000; i++) {
        int rc;
        char *got = lua_render("{{first}} {{address.geo.lat}} {{missing|x}}", 1, &rc);
        cr_assert_eq(rc, 0);
        free(got);
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
    cr_expect_leq(lua_gc(L, LUA_GCCOUNT, 0), kb0 + 16);
    cr_expect_eq(lua_gettop(L), top);
}
