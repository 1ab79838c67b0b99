/*
 * test_fuzz_regress.c — regressions for what the fuzz targets (fuzz/) found
 * in modules whose own suites are not the HTTP layer's, each checked the
 * way an operator or a client would meet it: through `promod check`, the
 * validate route and a rules file on a live server, which must answer with
 * file:line errors and keep serving.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(fuzz_regress, .init = setup, .fini = teardown, .timeout = 120);

/* fuzz_rules: a caps window that is not a table ({ 3 } instead of
 * { { 3, "7d" } }) made the campaign and plugin validator call
 * lua_rawgeti on a number: a segfault in `promod check`, at every reload of
 * the file and in POST /api/v1/rules/validate.  A count of 1e22 or NaN was
 * cast to long before its range was checked (undefined behaviour). */
static const char *bad_caps[] = {
    "return { id = 'c1', channels = { 'web' }, caps = { customer = { 3 } },\n"
    "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n",
    "return { id = 'c2', channels = { 'web' }, caps = { total = { 'x', { 1, '1d' } } },\n"
    "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n",
    "return { id = 'c3', channels = { 'web' },\n"
    "  caps = { customer = { { 1e22, '1d' }, { 0/0, '1d' }, { -1/0, '7d' } } },\n"
    "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n",
};

Test(fuzz_regress, caps_that_are_not_windows)
{
    for (size_t i = 0; i < sizeof bad_caps / sizeof bad_caps[0]; i++) {
        struct tfx_resp r;
        tfx_http(&srv, "POST", "/api/v1/rules/validate", "Content-Type: text/plain\r\n", bad_caps[i],
                 strlen(bad_caps[i]), &r);
        cr_assert(tfx_server_alive(&srv), "case %zu killed the server", i);
        cr_assert(r.status >= 400 && r.status < 500, "case %zu: %d %s", i, r.status, r.body);
        cr_assert(strstr(r.body, "caps."), "case %zu: the error names the caps: %s", i, r.body);
        tfx_resp_free(&r);
    }
    /* the same in a rules file: reported, the server keeps serving */
    tfx_write(&srv, "rules/bad-caps.lua", bad_caps[0]);
    int reported = 0;
    for (int i = 0; i < 200 && !reported; i++) {
        struct tfx_resp r;
        tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r);
        reported = r.body && strstr(r.body, "bad-caps.lua") && strstr(r.body, "caps.customer[1]");
        tfx_resp_free(&r);
        if (!reported)
            usleep(50000);
    }
    cr_assert(reported, "the broken file was not reported");
    cr_assert(tfx_server_alive(&srv));
    struct tfx_resp h;
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &h), 200);
    tfx_resp_free(&h);
    /* and `promod check` names the problem instead of dying */
    char path[400], *out = NULL;
    snprintf(path, sizeof path, "%s/bad-caps.lua", srv.rules);
    int st = tfx_promod(&out, "check", path, (char *)NULL);
    cr_assert_eq(st, 1, "promod check exit %d: %s", st, out);
    cr_assert(strstr(out, "bad-caps.lua:1: caps.customer[1]: expected { count, \"window\" }"), "%s", out);
    free(out);
}

/* fuzz_http: a msgpack decide body that is valid msgpack but not a map
 * (a string, a number, an array) was converted to JSON text and refused
 * with 400, and the converted text was never freed — a leak per request
 * that LeakSanitizer reports when the server exits (this suite runs under
 * ASan in scripts/test.sh, where a leak makes the exit status non-zero). */
Test(fuzz_regress, msgpack_decide_body_not_a_map)
{
    static const struct { const char *b; size_t n; const char *code; } cases[] = {
        { "\xa2u1", 3, "invalid_body" },   /* "u1" */
        { "\x01", 1, "invalid_body" },     /* 1 */
        { "\x92\x01\x02", 3, "invalid_body" }, /* [1, 2] */
        { "\xc0", 1, "invalid_body" },     /* nil */
    };
    for (int round = 0; round < 50; round++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            struct tfx_resp r;
            tfx_http(&srv, "POST", "/api/v1/decide", "Content-Type: application/msgpack\r\n", cases[i].b,
                     cases[i].n, &r);
            cr_assert_eq(r.status, 400, "case %zu: %d %s", i, r.status, r.body);
            cr_assert_str_eq(tfx_err_code(&r), cases[i].code, "case %zu: %s", i, r.body);
            tfx_resp_free(&r);
        }
    int st = tfx_server_stop(&srv);
    char *log = tfx_server_log(&srv);
    int clean = st == 0;
    if (!clean)
        cr_log_error("server log:\n%s", log);
    free(log);
    cr_assert(clean, "the server did not exit cleanly (exit %d; a leak under ASan?)", st);
}
