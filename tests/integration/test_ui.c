/*
 * test_ui.c — the web console's files at /ui/ (core/http/api_ui.c) and
 * GET /api/v1/whoami: content types, caching and conditional requests,
 * the security headers, HEAD, and every way out of web_dir refused (dot
 * segments plain and encoded, encoded slashes, NUL, dot files, symlinks
 * leading out).  Also the repository's own web/: every file index.html and
 * the modules name is served.
 */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"

static struct tfx_server srv;
static char web[400];

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(ui, .fini = teardown, .timeout = 120);

static const char secret[] = "SECRET-OUTSIDE-WEB";

/* A server whose web_dir is a temp tree with known files, a secret next
 * to it, and symlinks into and out of it. */
static void start(const char *more)
{
    tfx_server_init(&srv, NULL);
    snprintf(web, sizeof web, "%s/web", srv.dir);
    char cfg[2400];
    snprintf(cfg, sizeof cfg,
             "return {\n data_dir = \"%s\", rules_dir = \"%s\", plugins_dir = \"%s\",\n"
             " threads = 2, web_dir = \"%s\",\n api_keys = { { id = \"m\", key = "
             "\"marketer-key\", role = \"marketer\" }, { id = \"a\", key = \"admin-key-1\", "
             "role = \"admin\" }, { id = \"d\", key = \"decide-key-1\", role = \"decide\" } },\n"
             " %s\n}\n",
             srv.data, srv.rules, srv.plugins, web, more ? more : "");
    tfx_write(&srv, "promod.lua", cfg);
    tfx_write(&srv, "web/index.html", "<!doctype html><title>console</title>\n");
    tfx_write(&srv, "web/js/app.js", "export const answer = 42;\n");
    tfx_write(&srv, "web/css/console.css", "body { margin: 0 }\n");
    tfx_write(&srv, "web/img/logo.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n");
    tfx_write(&srv, "web/vendor/lib-1.0.0.js", "export default 1;\n");
    tfx_write(&srv, "web/notes.lua", "return 1\n");
    tfx_write(&srv, "web/.hidden.js", "hidden\n");
    tfx_write(&srv, "secret.js", secret);
    tfx_write(&srv, "outside/x.js", secret);
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/secret.js", srv.dir);
    snprintf(b, sizeof b, "%s/js/leak.js", web);
    cr_assert_eq(symlink(a, b), 0);
    snprintf(a, sizeof a, "%s/outside", srv.dir);
    snprintf(b, sizeof b, "%s/out", web);
    cr_assert_eq(symlink(a, b), 0);
    snprintf(a, sizeof a, "%s/js/app.js", web);
    snprintf(b, sizeof b, "%s/js/alias.js", web);
    cr_assert_eq(symlink(a, b), 0); /* inside web/: fine */
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static int get(const char *path, const char *hdrs, struct tfx_resp *r)
{
    return tfx_http(&srv, "GET", path, hdrs, NULL, 0, r);
}

/* Value of response header `name` (copied into buf), or NULL. */
static const char *header(const struct tfx_resp *r, const char *name, char *buf, size_t len)
{
    char key[128];
    snprintf(key, sizeof key, "\r\n%s:", name);
    const char *p = strcasestr(r->headers, key);
    if (!p)
        return NULL;
    p += strlen(key);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\r\n");
    snprintf(buf, len, "%.*s", (int)n, p);
    return buf;
}

static void assert_secure(const struct tfx_resp *r)
{
    char v[1024];
    cr_assert(header(r, "Content-Security-Policy", v, sizeof v), "no CSP: %s", r->headers);
    cr_assert(strstr(v, "default-src 'self'"), "%s", v);
    cr_assert(strstr(v, "script-src 'self'"), "%s", v);
    cr_assert(strstr(v, "style-src 'self'"), "%s", v);
    cr_assert(strstr(v, "frame-ancestors 'none'"), "%s", v);
    cr_assert(!strstr(v, "unsafe-inline") && !strstr(v, "unsafe-eval"), "%s", v);
    cr_assert(header(r, "X-Content-Type-Options", v, sizeof v) && !strcmp(v, "nosniff"));
}

Test(ui, serves_files_with_their_types)
{
    start(NULL);
    static const struct { const char *path, *type, *body; } cases[] = {
        { "/ui/", "text/html; charset=utf-8", "<!doctype html><title>console</title>\n" },
        { "/ui/index.html", "text/html; charset=utf-8", "<!doctype html><title>console</title>\n" },
        { "/ui/js/app.js", "text/javascript; charset=utf-8", "export const answer = 42;\n" },
        { "/ui/css/console.css", "text/css; charset=utf-8", "body { margin: 0 }\n" },
        { "/ui/img/logo.svg", "image/svg+xml", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n" },
        { "/ui/js/alias.js", "text/javascript; charset=utf-8", "export const answer = 42;\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tfx_resp r;
        cr_assert_eq(get(cases[i].path, NULL, &r), 200, "%s: %d %s", cases[i].path, r.status, r.body);
        cr_assert_str_eq(r.ctype, cases[i].type, "%s", cases[i].path);
        cr_assert_str_eq(r.body, cases[i].body, "%s", cases[i].path);
        assert_secure(&r);
        tfx_resp_free(&r);
    }
    /* /ui without the slash: relative links need it */
    struct tfx_resp r;
    char v[256];
    cr_assert_eq(get("/ui", NULL, &r), 301);
    cr_assert(header(&r, "Location", v, sizeof v) && !strcmp(v, "/ui/"), "%s", r.headers);
    tfx_resp_free(&r);
}

Test(ui, caching_and_conditional_requests)
{
    start(NULL);
    struct tfx_resp r;
    char etag[128], lm[128], cc[128], hdr[400];
    cr_assert_eq(get("/ui/js/app.js", NULL, &r), 200);
    cr_assert(header(&r, "ETag", etag, sizeof etag) && etag[0] == '"', "%s", r.headers);
    cr_assert(header(&r, "Last-Modified", lm, sizeof lm) && strstr(lm, " GMT"), "%s", r.headers);
    cr_assert(header(&r, "Cache-Control", cc, sizeof cc) && !strcmp(cc, "no-cache"), "%s", cc);
    tfx_resp_free(&r);
    cr_assert_eq(get("/ui/", NULL, &r), 200);
    cr_assert(header(&r, "Cache-Control", cc, sizeof cc) && !strcmp(cc, "no-cache"), "%s", cc);
    tfx_resp_free(&r);
    cr_assert_eq(get("/ui/vendor/lib-1.0.0.js", NULL, &r), 200);
    cr_assert(header(&r, "Cache-Control", cc, sizeof cc) && strstr(cc, "immutable") &&
                  strstr(cc, "max-age=31536000"), "%s", cc);
    tfx_resp_free(&r);

    /* If-None-Match: exact, weak, in a list, "*" -> 304 without a body */
    const char *forms[] = { "%s", "W/%s", "\"nope\", %s", "*" };
    for (int i = 0; i < 4; i++) {
        char val[300];
        snprintf(val, sizeof val, forms[i], etag);
        snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", val);
        cr_assert_eq(get("/ui/js/app.js", hdr, &r), 304, "%s -> %d", val, r.status);
        cr_assert_eq(r.len, 0);
        assert_secure(&r);
        tfx_resp_free(&r);
    }
    cr_assert_eq(get("/ui/js/app.js", "If-None-Match: \"other\"\r\n", &r), 200);
    tfx_resp_free(&r);
    /* If-Modified-Since: the Last-Modified date -> 304; an older one -> 200 */
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\n", lm);
    cr_assert_eq(get("/ui/js/app.js", hdr, &r), 304);
    tfx_resp_free(&r);
    cr_assert_eq(get("/ui/js/app.js", "If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT\r\n", &r),
                 200);
    tfx_resp_free(&r);
    /* If-None-Match wins over If-Modified-Since */
    snprintf(hdr, sizeof hdr, "If-None-Match: \"other\"\r\nIf-Modified-Since: %s\r\n", lm);
    cr_assert_eq(get("/ui/js/app.js", hdr, &r), 200);
    tfx_resp_free(&r);

    /* an edited file gets a new ETag and is served fresh, without a restart */
    tfx_write(&srv, "web/js/app.js", "export const answer = 43; // edited\n");
    snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", etag);
    cr_assert_eq(get("/ui/js/app.js", hdr, &r), 200);
    cr_assert_str_eq(r.body, "export const answer = 43; // edited\n");
    char etag2[128];
    cr_assert(header(&r, "ETag", etag2, sizeof etag2) && strcmp(etag, etag2));
    tfx_resp_free(&r);
}

Test(ui, head_has_length_and_no_body)
{
    start(NULL);
    static const char req[] = "HEAD /ui/js/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *raw = tfx_raw(&srv, req, sizeof req - 1);
    cr_assert(!strncmp(raw, "HTTP/1.1 200", 12), "%s", raw);
    cr_assert(strcasestr(raw, "\r\nContent-Length: 26\r\n"), "%s", raw);
    cr_assert(strcasestr(raw, "\r\nETag: "), "%s", raw);
    const char *end = strstr(raw, "\r\n\r\n");
    cr_assert(end && end[4] == 0, "HEAD sent a body: %s", raw);
    free(raw);
}

/* Every way out of web_dir, and every name that must not be served: 404,
 * and the secret never appears. */
Test(ui, refuses_paths_out_of_web_dir)
{
    start(NULL);
    static const char *paths[] = {
        "/ui/../secret.js",
        "/ui/js/../../secret.js",
        "/ui/%2e%2e/secret.js",
        "/ui/%2E%2E/%2E%2E/etc/passwd",
        "/ui/.%2e/secret.js",
        "/ui/js%2F..%2F..%2Fsecret.js",
        "/ui/..%2Fsecret.js",
        "/ui/%2Fetc%2Fpasswd",
        "/ui/js/leak.js",        /* symlink to a file outside */
        "/ui/out/x.js",          /* symlink to a directory outside */
        "/ui/.hidden.js",        /* dot file */
        "/ui/%2ehidden.js",
        "/ui/index.html%00.js",
        "/ui/%00",
        "/ui/js/app.js%00",
        "/ui/notes.lua",         /* not a type the console serves */
        "/ui/js",                /* a directory */
        "/ui/js/",
        "/ui//index.html",
        "/ui/nope.js",
        "/ui/js/app.js/",
        "/ui/a%5Cb.js",          /* backslash */
        "/ui/a%20b.js",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct tfx_resp r;
        int st = get(paths[i], NULL, &r);
        cr_assert(st == 404 || st == 400, "%s -> %d %s", paths[i], st, r.body);
        cr_assert(!strstr(r.body, secret), "%s leaked the secret", paths[i]);
        if (st == 404)
            cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "error"), "code")),
                             "not_found", "%s: %s", paths[i], r.body);
        tfx_resp_free(&r);
    }
    /* the raw request line, with no client normalising the dots */
    static const char req[] =
        "GET /ui/../../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *raw = tfx_raw(&srv, req, sizeof req - 1);
    cr_assert(!strncmp(raw, "HTTP/1.1 404", 12), "%s", raw);
    cr_assert(!strstr(raw, "root:"), "%s", raw);
    free(raw);
}

Test(ui, public_without_a_key_but_api_still_needs_one)
{
    start(NULL);
    struct tfx_resp r;
    cr_assert_eq(get("/ui/", NULL, &r), 200); /* the page holds no data */
    tfx_resp_free(&r);
    cr_assert_eq(get("/api/v1/campaigns", NULL, &r), 401);
    tfx_resp_free(&r);
}

Test(ui, whoami_reports_the_role)
{
    start(NULL);
    static const struct { const char *key, *id, *role; } keys[] = {
        { "marketer-key", "m", "marketer" }, { "admin-key-1", "a", "admin" },
        { "decide-key-1", "d", "decide" } };
    for (int i = 0; i < 3; i++) {
        char h[200];
        snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", keys[i].key);
        struct tfx_resp r;
        cr_assert_eq(get("/api/v1/whoami", h, &r), 200, "%s", r.body);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "key_id")), keys[i].id);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "role")), keys[i].role);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "auth")), "api_keys");
        tfx_resp_free(&r);
    }
    /* no key: public, says a key is needed; a wrong key: 401 */
    struct tfx_resp r;
    cr_assert_eq(get("/api/v1/whoami", NULL, &r), 200);
    cr_assert(json_is_null(json_object_get(r.json, "role")), "%s", r.body);
    cr_assert(json_is_null(json_object_get(r.json, "key_id")), "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "auth")), "api_keys");
    tfx_resp_free(&r);
    cr_assert_eq(get("/api/v1/whoami", "Authorization: Bearer wrong-key-123\r\n", &r), 401);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "error"), "code")),
                     "unauthorized");
    tfx_resp_free(&r);
    cr_assert_eq(get("/api/v1/whoami", "Authorization: Basic bWFya2V0ZXIta2V5\r\n", &r), 401);
    tfx_resp_free(&r);
}

Test(ui, whoami_without_keys_is_admin_on_loopback)
{
    tfx_server_init(&srv, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0);
    struct tfx_resp r;
    cr_assert_eq(get("/api/v1/whoami", NULL, &r), 200);
    cr_assert(json_is_null(json_object_get(r.json, "key_id")));
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "role")), "admin");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "auth")), "none");
    tfx_resp_free(&r);
}

Test(ui, web_dir_false_turns_the_console_off)
{
    tfx_server_init(&srv, "web_dir = false,");
    cr_assert_eq(tfx_server_start(&srv), 0);
    struct tfx_resp r;
    cr_assert_eq(get("/ui/", NULL, &r), 404);
    cr_assert(strstr(r.body, "web_dir = false"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(get("/healthz", NULL, &r), 200);
    tfx_resp_free(&r);
}

Test(ui, missing_web_dir_is_a_404_not_a_crash)
{
    tfx_server_init(&srv, "web_dir = \"/nonexistent/promod-web\",");
    cr_assert_eq(tfx_server_start(&srv), 0);
    struct tfx_resp r;
    cr_assert_eq(get("/ui/", NULL, &r), 404);
    cr_assert(strstr(r.body, "not installed"), "%s", r.body);
    tfx_resp_free(&r);
}

Test(ui, bad_web_dir_config_is_refused)
{
    tfx_server_init(&srv, "web_dir = 5,");
    cr_assert_neq(tfx_server_start(&srv), 0, "a number for web_dir was accepted");
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "web_dir"), "%s", log);
    free(log);
}

/* The repository's web/: index.html and every ES module it reaches name
 * only files the server serves (a missing or mistyped file would be a
 * blank console). */
static void crawl(const char *url, int depth)
{
    cr_assert(depth < 8, "module graph too deep at %s", url);
    struct tfx_resp r;
    cr_assert_eq(get(url, NULL, &r), 200, "%s -> %d", url, r.status);
    regex_t re;
    cr_assert_eq(regcomp(&re,
                         "(src|href)=\"([^\"#:]+)\"|from \"(\\./[^\"]+|\\.\\./[^\"]+)\"|"
                         "import\\(\"(\\./[^\"]+|\\.\\./[^\"]+)\"\\)",
                         REG_EXTENDED), 0);
    const char *p = r.body;
    regmatch_t m[5];
    char dir[1000];
    snprintf(dir, sizeof dir, "%.600s", url);
    *(strrchr(dir, '/') + 1) = 0;
    while (!regexec(&re, p, 5, m, 0)) {
        int g = m[2].rm_so >= 0 ? 2 : m[3].rm_so >= 0 ? 3 : 4;
        char rel[300], next[1400];
        snprintf(rel, sizeof rel, "%.*s", (int)(m[g].rm_eo - m[g].rm_so), p + m[g].rm_so);
        /* resolve ./ and ../ against the current directory */
        snprintf(next, sizeof next, "%.600s%.300s", dir, rel);
        char *q;
        while ((q = strstr(next, "/./")))
            memmove(q, q + 2, strlen(q + 2) + 1);
        while ((q = strstr(next, "/../"))) {
            char *s = q - 1;
            while (s > next && *s != '/')
                s--;
            memmove(s, q + 3, strlen(q + 3) + 1);
        }
        if (strstr(next, ".js"))
            crawl(next, depth + 1);
        else {
            struct tfx_resp f;
            cr_assert_eq(get(next, NULL, &f), 200, "%s (from %s) -> %d", next, url, f.status);
            tfx_resp_free(&f);
        }
        p += m[0].rm_eo;
    }
    regfree(&re);
    tfx_resp_free(&r);
}

Test(ui, repository_console_is_complete)
{
    tfx_server_init(&srv, "web_dir = \"" PROMOD_SRC "/web\",");
    cr_assert_eq(tfx_server_start(&srv), 0);
    crawl("/ui/index.html", 0);
}
