/*
 * api_ui.c — the web console: the static files of `web_dir` (web/ in the
 * repository) at /ui/, and GET /api/v1/whoami, which tells the console
 * what its key may do.
 *
 * The console is plain files talking to the public API with the user's
 * key, as rspamd's web UI is: nothing to build or deploy beside the
 * server.  The pages hold no data, so /ui/ is public; every number comes
 * from the API, with the key.
 *
 * What this file guarantees for /ui/:
 *  - Only names of [A-Za-z0-9._-] segments, none starting with '.', up to
 *    four deep (the router's parameters), with a known extension, are
 *    served: "..", "%2e%2e", "%2F", dot files and NUL bytes never reach the
 *    file system.  The resolved path must still be inside the resolved
 *    web_dir, so a symlink that leads out is refused too.  Everything
 *    refused is a 404 in the API's error shape, as every other miss.
 *  - Content-Type from the extension, X-Content-Type-Options: nosniff, and
 *    a Content-Security-Policy that allows only the console's own files
 *    (no inline script or style, no framing, no form posts).
 *  - ETag (inode, size, mtime) and Last-Modified, answered with 304 on
 *    If-None-Match / If-Modified-Since.  Cache-Control: no-cache (revalidate
 *    each use: the files are not fingerprinted, and an upgraded server must
 *    not run yesterday's modules), except vendor/, whose files carry their
 *    version in their names and may be cached for a year.
 *  - HEAD answers the headers with the file's Content-Length, no body.
 * Files are read on the worker thread per request (small, in the page
 * cache; edits to web/ show on reload without a restart).
 */
#include "http/api.h"
#include "base/app.h"
#include "base/log.h"
#include "http/router.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UI_MAX_FILE (8u << 20) /* the largest file served: far above any console file */

static const char csp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

static void security_headers(struct http_req *r)
{
    http_add_header(r, "Content-Security-Policy", csp);
    http_add_header(r, "X-Content-Type-Options", "nosniff");
    http_add_header(r, "X-Frame-Options", "DENY");
    http_add_header(r, "Referrer-Policy", "no-referrer");
    http_add_header(r, "Cross-Origin-Opener-Policy", "same-origin");
    http_add_header(r, "Cross-Origin-Resource-Policy", "same-origin");
}

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    { ".html", "text/html; charset=utf-8" },  { ".js", "text/javascript; charset=utf-8" },
    { ".mjs", "text/javascript; charset=utf-8" }, { ".css", "text/css; charset=utf-8" },
    { ".svg", "image/svg+xml" },              { ".png", "image/png" },
    { ".ico", "image/x-icon" },               { ".json", "application/json" },
    { ".txt", "text/plain; charset=utf-8" },  { ".md", "text/plain; charset=utf-8" },
    { ".woff2", "font/woff2" },
};

/* Content type of a file name; NULL when the extension is not served. */
static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    const char *slash = strrchr(name, '/');
    if (!dot || (slash && dot < slash))
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return NULL;
}

/* One path segment the console may ask for. */
static int segment_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255 || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void not_found(struct http_req *r)
{
    http_reply_errorf(r, 404, "not_found", NULL, "no console file at %.200s", r->path);
}

static void http_date(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Does an If-None-Match list ("a", W/"b", *) name `etag`? */
static int etag_listed(const char *list, const char *etag)
{
    size_t el = strlen(etag);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (!strncmp(p, "W/", 2)) /* weak comparison, as RFC 9110 asks for If-None-Match */
            p += 2;
        size_t n = strcspn(p, ",");
        while (n && p[n - 1] == ' ')
            n--;
        if (n == el && !memcmp(p, etag, el))
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* Unchanged since the client's copy?  If-None-Match wins over
 * If-Modified-Since (RFC 9110 13.2.2). */
static int not_modified(struct http_req *r, const char *etag, time_t mtime)
{
    const char *inm = http_header(r, "If-None-Match");
    if (inm)
        return etag_listed(inm, etag);
    const char *ims = http_header(r, "If-Modified-Since");
    if (!ims)
        return 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return 0;
    return mtime <= timegm(&tm);
}

static void serve(struct http_req *r, const char *rel)
{
    const char *ctype = type_of(rel);
    char root[PATH_MAX], want[PATH_MAX], full[PATH_MAX];
    if (!ctype) {
        not_found(r);
        return;
    }
    if (!realpath(g_app->cfg.web_dir, root)) {
        log_warn("web console directory missing", "web_dir=\"%s\" err=\"%s\"", g_app->cfg.web_dir,
                 strerror(errno));
        http_reply_errorf(r, 404, "not_found", NULL,
                          "the web console's files are not installed (web_dir %.200s)",
                          g_app->cfg.web_dir);
        return;
    }
    int n = snprintf(want, sizeof want, "%s/%s", root, rel);
    size_t rl = strlen(root);
    if (n < 0 || (size_t)n >= sizeof want || !realpath(want, full) || strncmp(full, root, rl) ||
        full[rl] != '/') {
        not_found(r); /* missing, or a symlink leading out of web_dir */
        return;
    }
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode) || (size_t)st.st_size > UI_MAX_FILE) {
        if (fd >= 0)
            close(fd);
        not_found(r);
        return;
    }
    char etag[80], lm[64], len[32];
    snprintf(etag, sizeof etag, "\"%llx-%llx-%llx\"", (unsigned long long)st.st_ino,
             (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec);
    http_date(st.st_mtim.tv_sec, lm, sizeof lm);
    http_add_header(r, "ETag", etag);
    http_add_header(r, "Last-Modified", lm);
    http_add_header(r, "Cache-Control", strncmp(rel, "vendor/", 7)
                                            ? "no-cache"
                                            : "public, max-age=31536000, immutable");
    if (not_modified(r, etag, st.st_mtim.tv_sec)) {
        close(fd);
        http_reply_raw(r, 304, ctype, NULL, 0);
        return;
    }
    if (r->method == HTTP_HEAD) {
        /* libevent writes whatever body it is given, HEAD or not, and
         * adds no Content-Length to a HEAD reply: say it, send nothing */
        close(fd);
        snprintf(len, sizeof len, "%lld", (long long)st.st_size);
        http_add_header(r, "Content-Length", len);
        http_reply_raw(r, 200, ctype, NULL, 0);
        return;
    }
    char *data = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (data && got < (size_t)st.st_size) {
        ssize_t k = read(fd, data + got, (size_t)st.st_size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    if (!data || got != (size_t)st.st_size) {
        free(data);
        http_reply_error(r, 500, "internal", "could not read the console file", NULL);
        return;
    }
    http_reply_raw(r, 200, ctype, data, got);
    free(data);
}

/* GET|HEAD /ui, /ui/, /ui/{a}[/{b}[/{c}[/{d}]]] */
static void h_ui(struct http_req *r)
{
    security_headers(r);
    if (!g_app->cfg.web_dir) {
        http_reply_error(r, 404, "not_found", "the web console is off (web_dir = false)", NULL);
        return;
    }
    if (r->nparams == 0) {
        if (strcmp(r->path, "/ui/")) { /* relative links need the slash */
            http_add_header(r, "Location", "/ui/");
            http_reply_raw(r, 301, "text/plain; charset=utf-8", "/ui/\n",
                           r->method == HTTP_HEAD ? 0 : 5);
            return;
        }
        serve(r, "index.html");
        return;
    }
    size_t pl = strlen(r->path);
    if (pl && r->path[pl - 1] == '/') { /* no directory listings */
        not_found(r);
        return;
    }
    char rel[1100];
    size_t off = 0;
    for (int i = 0; i < r->nparams; i++) {
        if (!segment_ok(r->params[i])) {
            not_found(r);
            return;
        }
        off += (size_t)snprintf(rel + off, sizeof rel - off, "%s%s", i ? "/" : "", r->params[i]);
    }
    serve(r, rel);
}

/* GET /api/v1/whoami: the calling key's id and role, so the console shows
 * what the role allows.  Public, so that a console opened without a key
 * learns whether it needs one without a refused request: no Authorization
 * header gives {"role": null} (or, with no keys configured — the server is
 * then open on loopback — the admin role); a key that is not accepted is
 * a 401 as anywhere else. */
static void h_whoami(struct http_req *r)
{
    const struct config *cfg = &g_app->cfg;
    const struct config_key *k = NULL;
    const char *auth = http_header(r, "Authorization");
    if (cfg->nkeys && auth) {
        if (strncasecmp(auth, "Bearer ", 7) || !(k = config_find_key(cfg, auth + 7))) {
            http_add_header(r, "WWW-Authenticate", "Bearer");
            http_reply_error(r, 401, "unauthorized", "unknown API key", NULL);
            return;
        }
    }
    json_t *o = json_object();
    json_object_set_new(o, "key_id", k ? json_string(k->id) : json_null());
    json_object_set_new(o, "role", k ? json_string(config_role_name(k->role))
                                     : cfg->nkeys ? json_null() : json_string("admin"));
    json_object_set_new(o, "auth", json_string(cfg->nkeys ? "api_keys" : "none"));
    http_add_header(r, "Cache-Control", "no-store");
    http_reply_json(r, 200, o);
}

void api_ui_register(void)
{
    router_add(HTTP_GET, "/ui", ROLE_PUBLIC, h_ui, 0);
    router_add(HTTP_GET, "/ui/{a}", ROLE_PUBLIC, h_ui, 0);
    router_add(HTTP_GET, "/ui/{a}/{b}", ROLE_PUBLIC, h_ui, 0);
    router_add(HTTP_GET, "/ui/{a}/{b}/{c}", ROLE_PUBLIC, h_ui, 0);
    router_add(HTTP_GET, "/ui/{a}/{b}/{c}/{d}", ROLE_PUBLIC, h_ui, 0);
    router_add(HTTP_GET, "/api/v1/whoami", ROLE_PUBLIC, h_whoami, 0);
}
