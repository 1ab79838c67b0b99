/* test_content.c — compiled variant content: the bytes and slots it keeps,
 * rendering in both wire forms, escaping, errors, Lua stack discipline. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "engine/content.h"
#include "base/err.h"

TestSuite(content, .timeout = 60);

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
}

static void teardown(void) { lua_close(L); }

/* Evaluate `expr` and leave its value on the stack. */
static void push_eval(const char *expr)
{
    char src[4096];
    snprintf(src, sizeof src, "return %s", expr);
    cr_assert_eq(luaL_loadstring(L, src), 0, "%s", lua_tostring(L, -1));
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0, "%s", lua_tostring(L, -1));
}

/* Compile the content expression, render it against the profile expression
 * as JSON; returns the text (owned) or NULL with *rc set. */
static char *render_json(const char *content, const char *profile, int *rc)
{
    int top = lua_gettop(L);
    push_eval(profile);
    int p_idx = lua_gettop(L);
    push_eval(content);
    struct content_prog *p = content_compile(L, -1, 0);
    cr_assert_not_null(p);
    lua_pop(L, 1);
    cr_assert_eq(lua_gettop(L), p_idx, "compile is stack-neutral");
    struct buf out = BUF_INIT;
    struct content_scratch tmp = { BUF_INIT, BUF_INIT, NULL, NULL, NULL };
    buf_add(&out, "<", 1); /* rendering appends; an error restores this */
    *rc = content_render(p, L, p_idx, &tmp, &out);
    cr_assert_eq(lua_gettop(L), p_idx, "render is stack-neutral");
    lua_settop(L, top);
    content_free(p);
    buf_free(&tmp.text);
    buf_free(&tmp.val);
    if (*rc) {
        cr_assert_str_eq(out.p, "<", "the buffer is restored on error");
        buf_free(&out);
        return NULL;
    }
    char *s = strdup(out.p + 1);
    buf_free(&out);
    return s;
}

static void expect_json(const char *content, const char *profile, const char *want)
{
    int rc;
    char *got = render_json(content, profile, &rc);
    cr_assert_not_null(got, "%s: %s", content, err_str(rc));
    json_error_t je;
    json_t *g = json_loads(got, JSON_DECODE_ANY, &je), *w = json_loads(want, JSON_DECODE_ANY, &je);
    cr_assert_not_null(g, "not JSON: %s", got);
    cr_assert_not_null(w, "bad expectation: %s", want);
    cr_expect(json_equal(g, w), "%s\n got  %s\n want %s", content, got, want);
    json_decref(g);
    json_decref(w);
    free(got);
}

Test(content, static_and_templated_strings_nested, .init = setup, .fini = teardown)
{
    const char *prof = "{ first_name = 'Ann', tier = 'gold', ltv = 12.5, n = 3, vip = true,"
                       " addr = { city = 'Paris' }, tags = { 'a', 'b' } }";
    expect_json("{ headline = 'Hi {{first_name|you}}', plain = 'no templates here' }", prof,
                "{\"headline\":\"Hi Ann\",\"plain\":\"no templates here\"}");
    expect_json("{ a = { b = { c = '{{addr.city}} {{tags.2}} {{missing|none}}' } } }", prof,
                "{\"a\":{\"b\":{\"c\":\"Paris b none\"}}}");
    expect_json("{ list = { 'x {{n}}', 'y', { z = '{{vip}}' } }, num = 4.5, yes = false }", prof,
                "{\"list\":[\"x 3\",\"y\",{\"z\":\"true\"}],\"num\":4.5,\"yes\":false}");
    expect_json("'{{tier}} only'", prof, "\"gold only\"");
    expect_json("{ t = '{{ltv}}' }", prof, "{\"t\":\"12.5\"}");
    expect_json("{}", prof, "{}");
    expect_json("{ a = '{{first_name}}', b = '{{tier}}', c = '{{n}}', d = 'static' }", prof,
                "{\"a\":\"Ann\",\"b\":\"gold\",\"c\":\"3\",\"d\":\"static\"}");
}

Test(content, substituted_values_are_html_escaped_except_under_raw_keys, .init = setup,
     .fini = teardown)
{
    const char *prof = "{ name = '<b>\"Tom\" & Jerry</b>' }";
    expect_json("{ t = '<i>{{name}}</i>' }", prof,
                "{\"t\":\"<i>&lt;b&gt;&quot;Tom&quot; &amp; Jerry&lt;/b&gt;</i>\"}");
    expect_json("{ t_raw = '<i>{{name}}</i>', deep_raw = { x = '{{name}}' } }", prof,
                "{\"t_raw\":\"<i><b>\\\"Tom\\\" & Jerry</b></i>\","
                "\"deep_raw\":{\"x\":\"<b>\\\"Tom\\\" & Jerry</b>\"}}");
    /* JSON escaping of the rendered text: quotes, control characters */
    expect_json("{ t_raw = '{{name}}\\n\\t' }", "{ name = 'a\"b' }",
                "{\"t_raw\":\"a\\\"b\\n\\t\"}");
}

Test(content, one_program_renders_each_profile, .init = setup, .fini = teardown)
{
    push_eval("{ h = 'Hello {{first_name|friend}}', s = 'same' }");
    struct content_prog *p = content_compile(L, -1, 0);
    lua_pop(L, 1);
    const char *names[] = { "{ first_name = 'Ann' }", "{ first_name = 'Bob' }", "{}" };
    const char *want[] = { "Hello Ann", "Hello Bob", "Hello friend" };
    struct content_scratch tmp = { BUF_INIT, BUF_INIT, NULL, NULL, NULL };
    for (int i = 0; i < 3; i++) {
        push_eval(names[i]);
        struct buf out = BUF_INIT;
        cr_assert_eq(content_render(p, L, lua_gettop(L), &tmp, &out), 0);
        json_t *j = json_loads(out.p, 0, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(j, "h")), want[i]);
        cr_assert_str_eq(json_string_value(json_object_get(j, "s")), "same");
        json_decref(j);
        buf_free(&out);
        lua_pop(L, 1);
    }
    buf_free(&tmp.text);
    buf_free(&tmp.val);
    content_free(p);
}

Test(content, msgpack_decodes_to_the_json_rendering, .init = setup, .fini = teardown)
{
    const char *prof = "{ first_name = 'Zoë', n = 7 }";
    const char *contents[] = {
        "{ headline = 'Offer for {{first_name|you}}', body = 'static', n = 3, ok = true,"
        " list = { '{{n}}', 'b', { c = '{{first_name}}' } } }",
        "'{{first_name}}'",
        "{ long = string.rep('x', 300) .. '{{n}}' .. string.rep('y', 70000) }",
    };
    for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++) {
        int rc;
        char *text = render_json(contents[i], prof, &rc);
        cr_assert_not_null(text, "%s", err_str(rc));
        push_eval(prof);
        int p_idx = lua_gettop(L);
        push_eval(contents[i]);
        struct content_prog *p = content_compile(L, -1, 1);
        lua_pop(L, 1);
        struct buf out = BUF_INIT;
    struct content_scratch tmp = { BUF_INIT, BUF_INIT, NULL, NULL, NULL };
        cr_assert_eq(content_render(p, L, p_idx, &tmp, &out), 0);
        int err = 0;
        json_t *fromm = codec_msgpack_to_json(out.p, out.len, &err);
        cr_assert_not_null(fromm, "msgpack decodes: %s", err_str(err));
        json_t *fromj = json_loads(text, JSON_DECODE_ANY, NULL);
        cr_expect(json_equal(fromm, fromj), "content %zu: same values in both forms", i);
        json_decref(fromm);
        json_decref(fromj);
        buf_free(&out);
        buf_free(&tmp.text);
    buf_free(&tmp.val);
        content_free(p);
        free(text);
        lua_pop(L, 1);
    }
}

Test(content, what_cannot_be_rendered_is_an_error, .init = setup, .fini = teardown)
{
    int rc;
    /* a non-string key */
    cr_expect_null(render_json("{ [1.5] = 'x' }", "{}", &rc));
    cr_expect_eq(rc, ERR_INVAL);
    /* nesting past 16 */
    cr_expect_null(render_json("(function() local t = {} local c = t for i = 1, 20 do c.x = {} c = c.x end"
                               " c.s = '{{a}}' return t end)()",
                               "{}", &rc));
    cr_expect_eq(rc, ERR_TOOBIG);
    /* static text that is not UTF-8 */
    cr_expect_null(render_json("{ t = 'bad \\255 byte' }", "{}", &rc));
    cr_expect_eq(rc, ERR_INVAL);
    /* a substituted value that is not UTF-8: found at render time */
    cr_expect_null(render_json("{ ok = 'fine', t = 'x {{v}}' }", "{ v = 'bad \\255' }", &rc));
    cr_expect_eq(rc, ERR_INVAL);
    /* a metamethod that raises while a path is looked up */
    cr_expect_null(render_json("{ t = '{{a.b}}' }",
                               "{ a = setmetatable({}, { __index = function() error('boom') end }) }",
                               &rc));
    cr_expect_eq(rc, ERR_LUA);
    /* a function value is not content */
    cr_expect_null(render_json("{ f = print }", "{}", &rc));
    cr_expect_neq(rc, 0);
}

Test(content, templates_are_copied_at_compile_time, .init = setup, .fini = teardown)
{
    /* the program owns its template text: the Lua string may be collected */
    push_eval("{ t = 'Hi {{n}} ' .. string.rep('!', 3) }");
    struct content_prog *p = content_compile(L, -1, 0);
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT, 0);
    push_eval("{ n = 'Ann' }");
    struct buf out = BUF_INIT;
    struct content_scratch tmp = { BUF_INIT, BUF_INIT, NULL, NULL, NULL };
    cr_assert_eq(content_render(p, L, lua_gettop(L), &tmp, &out), 0);
    cr_expect_str_eq(out.p, "{\"t\":\"Hi Ann !!!\"}");
    buf_free(&out);
    buf_free(&tmp.text);
    buf_free(&tmp.val);
    content_free(p);
}

/* ---- localized content (campaign `locales`) ------------------------------------ */

/* The content expression resolved for locale li of `locales`, compiled and
 * rendered as JSON for profile `prof`, with format filters written in
 * `fmt_locale`. */
static char *render_localized(const char *content, int li, const char *prof, const char *fmt_locale)
{
    char *locales[] = { "en", "fr", "fr-CA", "de" };
    int top = lua_gettop(L);
    push_eval(prof);
    int p_idx = lua_gettop(L);
    push_eval(content);
    content_push_localized(L, -1, locales, 4, li);
    cr_assert_eq(lua_gettop(L), p_idx + 2, "one value pushed");
    struct content_prog *p = content_compile(L, -1, 0);
    cr_assert_not_null(p);
    lua_settop(L, p_idx);
    struct buf out = BUF_INIT;
    struct content_scratch cs = { BUF_INIT, BUF_INIT, NULL, fmt_locale, NULL };
    cr_assert_eq(content_render(p, L, p_idx, &cs, &out), 0);
    cr_expect_eq(content_uses_format(p), strstr(content, "|currency") != NULL);
    lua_settop(L, top);
    content_free(p);
    buf_free(&cs.text);
    buf_free(&cs.val);
    return buf_steal(&out);
}

Test(content, localized_values_follow_the_chain, .init = setup, .fini = teardown)
{
    /* per field: fr-CA has no entry of its own → fr; de has none → en (the default) */
    const char *per_field = "{ h = { en = 'Hi {{n}}', fr = 'Salut {{n}}' }, cta = 'Go', "
                            "nested = { x = { EN = 'one', Fr = 'un' } } }";
    const char *want[] = { "{\"h\":\"Hi Ann\",\"cta\":\"Go\",\"nested\":{\"x\":\"one\"}}",
                           "{\"h\":\"Salut Ann\",\"cta\":\"Go\",\"nested\":{\"x\":\"un\"}}",
                           "{\"h\":\"Salut Ann\",\"cta\":\"Go\",\"nested\":{\"x\":\"un\"}}",
                           "{\"h\":\"Hi Ann\",\"cta\":\"Go\",\"nested\":{\"x\":\"one\"}}" };
    for (int li = 0; li < 4; li++) {
        char *got = render_localized(per_field, li, "{ n = 'Ann' }", NULL);
        json_error_t je;
        json_t *g = json_loads(got, 0, &je), *w = json_loads(want[li], 0, &je);
        cr_expect(json_equal(g, w), "locale %d: %s", li, got);
        json_decref(g);
        json_decref(w);
        free(got);
    }
    /* a whole content per locale, with a field inside it localized again */
    const char *whole = "{ en = { h = 'Hi', p = '{{price|currency:EUR}}' }, "
                        "['fr-CA'] = { h = { fr = 'Allo', en = 'Hey' }, p = '{{price|currency:CAD}}' } }";
    const char *want2[][2] = { { "fr-CA", "{\"h\":\"Allo\",\"p\":\"9,50\xc2\xa0$\"}" },
                               /* fr: no fr, no parent → en */
                               { "fr", "{\"h\":\"Hi\",\"p\":\"9,50\xc2\xa0\xe2\x82\xac\"}" } };
    for (int k = 0; k < 2; k++) {
        char *got = render_localized(whole, 2 - k, "{ price = 9.5 }", want2[k][0]);
        json_error_t je;
        json_t *g = json_loads(got, 0, &je), *w = json_loads(want2[k][1], 0, &je);
        cr_expect(json_equal(g, w), "%s: %s", want2[k][0], got);
        json_decref(g);
        json_decref(w);
        free(got);
    }
}

Test(content, what_counts_as_localized, .init = setup, .fini = teardown)
{
    char *locales[] = { "en", "fr" };
    const char *yes[] = { "{ en = 'a' }", "{ EN = 'a', fr = 'b' }", "{ fr = { x = 1 } }" };
    const char *no[] = { "{}", "{ en = 'a', es = 'b' }", "{ 'en', 'fr' }", "'en'", "{ en = 'a', [1] = 'b' }" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        push_eval(yes[i]);
        cr_expect_eq(content_is_localized(L, -1, locales, 2), 1, "%s", yes[i]);
        lua_pop(L, 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        push_eval(no[i]);
        cr_expect_eq(content_is_localized(L, -1, locales, 2), 0, "%s", no[i]);
        lua_pop(L, 1);
    }
    cr_expect_eq(lua_gettop(L), 0, "stack-neutral");
    /* a table none of whose keys is in the chain gives nil for that locale */
    char *only_fr[] = { "fr", "de" };
    push_eval("{ de = 'x' }");
    content_push_localized(L, -1, only_fr, 2, 0);
    cr_expect(lua_isnil(L, -1));
    lua_settop(L, 0);
}
