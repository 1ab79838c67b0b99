/* test_router.c — method + path patterns, parameters, 404 vs 405, roles. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "http/router.h"

static void h_a(struct http_req *r) { (void)r; }
static void h_b(struct http_req *r) { (void)r; }

static int r_health, r_import, r_export, r_profile, r_action, r_camp_list, r_camp, r_root, r_multi;

static void setup(void)
{
    router_reset();
    r_health = router_add(HTTP_GET, "/healthz", ROLE_PUBLIC, h_a, 0);
    r_import = router_add(HTTP_POST, "/api/v1/profiles/import", ROLE_MARKETER, h_b, ROUTER_BIG_BODY);
    r_export = router_add(HTTP_GET, "/api/v1/profiles/{id}/export", ROLE_MARKETER, h_a, 0);
    r_profile = router_add(HTTP_GET | HTTP_PUT | HTTP_PATCH | HTTP_DELETE, "/api/v1/profiles/{id}",
                           ROLE_MARKETER, h_b, 0);
    r_camp_list = router_add(HTTP_GET | HTTP_POST, "/api/v1/campaigns", ROLE_MARKETER, h_a, 0);
    r_action = router_add(HTTP_POST, "/api/v1/campaigns/{id}/{action}", ROLE_MARKETER, h_a, 0);
    r_camp = router_add(HTTP_GET | HTTP_PUT | HTTP_DELETE, "/api/v1/campaigns/{id}", ROLE_MARKETER, h_b, 0);
    r_multi = router_add(HTTP_GET, "/x/{a}/{b}/{c}/{d}", ROLE_ADMIN, h_a, 0);
    r_root = router_add(HTTP_GET, "/", ROLE_PUBLIC, h_b, 0);
}

static void teardown(void) { router_reset(); }

TestSuite(router, .init = setup, .fini = teardown, .timeout = 10);

static void free_params(struct http_req *r)
{
    for (int i = 0; i < r->nparams; i++)
        free(r->params[i]);
    r->nparams = 0;
}

Test(router, table)
{
    cr_assert_eq(router_count(), 9);
    const struct router_route *rt = router_get(r_import);
    cr_assert_not_null(rt);
    cr_assert_str_eq(rt->pattern, "/api/v1/profiles/import");
    cr_assert_eq(rt->role, ROLE_MARKETER);
    cr_assert_eq(rt->flags, ROUTER_BIG_BODY);
    cr_assert_eq(rt->fn, h_b);
    cr_assert_null(router_get(-1));
    cr_assert_null(router_get(9));
    cr_assert_null(router_get(ROUTER_MAX));
}

Test(router, full_table_refused)
{
    int last = 0;
    while ((last = router_add(HTTP_GET, "/f", ROLE_PUBLIC, h_a, 0)) >= 0)
        ;
    cr_assert_eq(last, ERR_FULL);
    cr_assert_eq(router_count(), ROUTER_MAX);
}

/* ---- matches ---- */

struct mcase {
    char path[160];
    int method;
    int route;      /* index among the setup routes, by name below; -1 / -2 */
    int nparams;
    char p0[130], p1[40];
    int allowed;    /* for -2 */
};

/* route ids are stable: setup adds them in this order */
enum { HEALTH, IMPORT, EXPORT, PROFILE, CAMP_LIST, ACTION, CAMP, MULTI, ROOT };

ParameterizedTestParameters(router, match)
{
    static struct mcase cases[] = {
        { "/healthz", HTTP_GET, HEALTH, 0, "", "", 0 },
        { "/healthz/", HTTP_GET, HEALTH, 0, "", "", 0 },           /* trailing slash */
        { "/", HTTP_GET, ROOT, 0, "", "", 0 },
        { "/api/v1/profiles/import", HTTP_POST, IMPORT, 0, "", "", 0 },
        /* literal first: GET on "import" falls to the {id} route (an id "import") */
        { "/api/v1/profiles/import", HTTP_GET, PROFILE, 1, "import", "", 0 },
        { "/api/v1/profiles/u1", HTTP_GET, PROFILE, 1, "u1", "", 0 },
        { "/api/v1/profiles/u1", HTTP_PATCH, PROFILE, 1, "u1", "", 0 },
        { "/api/v1/profiles/u1/", HTTP_DELETE, PROFILE, 1, "u1", "", 0 },
        { "/api/v1/profiles/u1/export", HTTP_GET, EXPORT, 1, "u1", "", 0 },
        { "/api/v1/campaigns", HTTP_POST, CAMP_LIST, 0, "", "", 0 },
        { "/api/v1/campaigns/", HTTP_GET, CAMP_LIST, 0, "", "", 0 },
        { "/api/v1/campaigns/c-1", HTTP_PUT, CAMP, 1, "c-1", "", 0 },
        { "/api/v1/campaigns/c-1/launch", HTTP_POST, ACTION, 2, "c-1", "launch", 0 },
        { "/x/1/2/3/4", HTTP_GET, MULTI, 4, "1", "2", 0 },
        /* percent-decoding per segment: an encoded slash stays in the id */
        { "/api/v1/profiles/a%2Fb", HTTP_GET, PROFILE, 1, "a/b", "", 0 },
        { "/api/v1/profiles/x%2Fexport", HTTP_GET, PROFILE, 1, "x/export", "", 0 },
        { "/api/v1/profiles/..%2Fx", HTTP_PUT, PROFILE, 1, "../x", "", 0 },
        { "/api/v1/profiles/a%20b", HTTP_GET, PROFILE, 1, "a b", "", 0 },
        { "/api/v1/profiles/%41%62", HTTP_GET, PROFILE, 1, "Ab", "", 0 },
        { "/api/v1/profiles/bad%zzescape", HTTP_GET, PROFILE, 1, "bad%zzescape", "", 0 },
        { "/api/v1/profiles/trunc%4", HTTP_GET, PROFILE, 1, "trunc%4", "", 0 },
        { "/api/v1/profiles/nul%00byte", HTTP_GET, PROFILE, 1, "nul%00byte", "", 0 },
        { "/api/v1/profiles/u%31/ex%70ort", HTTP_GET, EXPORT, 1, "u1", "", 0 },
        { "/api/v1/%70rofiles/u1", HTTP_GET, PROFILE, 1, "u1", "", 0 },
        /* empty ids reach the handler (second pass) so it can answer 400 */
        { "/api/v1/profiles/", HTTP_PUT, PROFILE, 1, "", "", 0 },
        { "/api/v1/profiles//export", HTTP_GET, EXPORT, 1, "", "", 0 },
        { "/api/v1/campaigns//launch", HTTP_POST, ACTION, 2, "", "launch", 0 },
        /* 404 */
        { "/nope", HTTP_GET, -1, 0, "", "", 0 },
        { "/healthzz", HTTP_GET, -1, 0, "", "", 0 },
        { "/healthz/x", HTTP_GET, -1, 0, "", "", 0 },
        { "//healthz", HTTP_GET, -1, 0, "", "", 0 },
        { "/healthz//", HTTP_GET, -1, 0, "", "", 0 },
        { "/api/v1/profiles/u1/export/more", HTTP_GET, -1, 0, "", "", 0 },
        { "/api/v1/profiles/u1/exports", HTTP_GET, -1, 0, "", "", 0 },
        { "/api/v1/PROFILES/u1", HTTP_GET, -1, 0, "", "", 0 },
        { "/x/1/2/3", HTTP_GET, -1, 0, "", "", 0 },
        { "/x/1/2/3/4/5", HTTP_GET, -1, 0, "", "", 0 },
        { "", HTTP_GET, -1, 0, "", "", 0 },
        { "healthz", HTTP_GET, -1, 0, "", "", 0 },
        /* 405 with the union of the methods that would match */
        { "/healthz", HTTP_POST, -2, 0, "", "", HTTP_GET },
        { "/api/v1/profiles/u1", HTTP_POST, -2, 0, "", "", HTTP_GET | HTTP_PUT | HTTP_PATCH | HTTP_DELETE },
        { "/api/v1/profiles/u1/export", HTTP_DELETE, -2, 0, "", "", HTTP_GET },
        { "/api/v1/campaigns", HTTP_DELETE, -2, 0, "", "", HTTP_GET | HTTP_POST },
        { "/api/v1/campaigns/c1/launch", HTTP_GET, -2, 0, "", "", HTTP_POST },
        { "/api/v1/profiles/import", HTTP_OPTIONS, -2, 0, "", "",
          HTTP_POST | HTTP_GET | HTTP_PUT | HTTP_PATCH | HTTP_DELETE },
    };
    return cr_make_param_array(struct mcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct mcase *c, router, match)
{
    struct http_req r = { 0 };
    int allowed = -1;
    int idx = router_match(c->path, (enum http_method)c->method, &r, &allowed);
    int want = c->route;
    cr_assert_eq(idx, want, "%s: got route %d, want %d", c->path, idx, want);
    if (want >= 0) {
        cr_assert_eq(r.nparams, c->nparams, "%s params", c->path);
        if (c->nparams >= 1)
            cr_assert_str_eq(r.params[0], c->p0, "%s", c->path);
        if (c->nparams >= 2)
            cr_assert_str_eq(r.params[1], c->p1, "%s", c->path);
    } else {
        cr_assert_eq(r.nparams, 0, "no params leak out of a failed match");
        if (want == -2)
            cr_assert_eq(allowed, c->allowed, "%s: allowed %#x, want %#x", c->path, allowed, c->allowed);
    }
    free_params(&r);
}

Test(router, many_params_and_long_paths)
{
    struct http_req r = { 0 };
    int allowed;
    cr_assert_eq(router_match("/x/a/b/c/d", HTTP_GET, &r, &allowed), MULTI);
    cr_assert_eq(r.nparams, 4);
    cr_assert_str_eq(r.params[3], "d");
    free_params(&r);
    /* a pattern with more parameters than HTTP_MAX_PARAMS never matches */
    router_add(HTTP_GET, "/y/{a}/{b}/{c}/{d}/{e}", ROLE_PUBLIC, h_a, 0);
    cr_assert_eq(router_match("/y/1/2/3/4/5", HTTP_GET, &r, &allowed), -1);
    cr_assert_eq(r.nparams, 0);
    /* a 64 KiB id is matched and handed over whole (the handler refuses it) */
    size_t n = 65536;
    char *p = malloc(n + 32);
    strcpy(p, "/api/v1/profiles/");
    memset(p + 17, 'a', n);
    p[17 + n] = 0;
    cr_assert_eq(router_match(p, HTTP_GET, &r, &allowed), PROFILE);
    cr_assert_eq(strlen(r.params[0]), n);
    free_params(&r);
    /* 10k slashes */
    memset(p, '/', n);
    p[n] = 0;
    cr_assert_eq(router_match(p, HTTP_GET, &r, &allowed), -1);
    free(p);
}

/* ---- roles ---- */

struct rcase {
    int have, need, ok;
};

ParameterizedTestParameters(router, roles)
{
    static struct rcase cases[] = {
        { ROLE_PUBLIC, ROLE_PUBLIC, 1 },   { ROLE_DECIDE, ROLE_PUBLIC, 1 },
        { ROLE_MARKETER, ROLE_PUBLIC, 1 }, { ROLE_ADMIN, ROLE_PUBLIC, 1 },
        { ROLE_PUBLIC, ROLE_DECIDE, 0 },   { ROLE_DECIDE, ROLE_DECIDE, 1 },
        { ROLE_MARKETER, ROLE_DECIDE, 1 }, { ROLE_ADMIN, ROLE_DECIDE, 1 },
        { ROLE_PUBLIC, ROLE_MARKETER, 0 }, { ROLE_DECIDE, ROLE_MARKETER, 0 },
        { ROLE_MARKETER, ROLE_MARKETER, 1 }, { ROLE_ADMIN, ROLE_MARKETER, 1 },
        { ROLE_PUBLIC, ROLE_ADMIN, 0 },    { ROLE_DECIDE, ROLE_ADMIN, 0 },
        { ROLE_MARKETER, ROLE_ADMIN, 0 },  { ROLE_ADMIN, ROLE_ADMIN, 1 },
    };
    return cr_make_param_array(struct rcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct rcase *c, router, roles)
{
    cr_assert_eq(router_role_allows((enum config_role)c->have, (enum config_role)c->need), c->ok,
                 "%s calling a %s route", config_role_name((enum config_role)c->have),
                 config_role_name((enum config_role)c->need));
}
