/* router.c — pattern matching over a small static table. */
#include "http/router.h"
#include "base/err.h"
#include <stdlib.h>
#include <string.h>

static struct router_route routes[ROUTER_MAX];
static int nroutes;

int router_add(int methods, const char *pattern, enum config_role role, router_fn fn, int flags)
{
    if (nroutes >= ROUTER_MAX)
        return ERR_FULL;
    routes[nroutes] = (struct router_route){ methods, pattern, role, fn, flags,
                                             strcspn(pattern, "{") };
    return nroutes++;
}

const struct router_route *router_get(int idx)
{
    return idx >= 0 && idx < nroutes ? &routes[idx] : NULL;
}

int router_count(void) { return nroutes; }
void router_reset(void) { nroutes = 0; }

int router_role_allows(enum config_role have, enum config_role need)
{
    if (need == ROLE_PUBLIC)
        return 1;
    return have >= need;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode one raw path segment into a new string.  Invalid escapes
 * and %00 stay as written, so a parameter can never hide a NUL byte and an
 * id carrying one fails the handler's validation instead. */
static char *decode_segment(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0 && (hi | lo)) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = 0;
    return out;
}

/* Match one pattern against a raw (still percent-encoded) path; on success
 * the decoded params are stored in r.  Matching segment by segment before
 * decoding is what keeps "/profiles/a%2Fexport" from reaching the export
 * route: the parameter is "a/export", which the handler then refuses.
 * `allow_empty` lets a parameter match an empty segment (second pass). */
static int match_one(const char *pat, const char *path, struct http_req *r, int allow_empty)
{
    int np = 0;
    char *params[HTTP_MAX_PARAMS];
    while (*pat && *path) {
        if (*pat != '/' || *path != '/')
            goto fail;
        pat++;
        path++;
        const char *pe = strchr(pat, '/');
        size_t pl = pe ? (size_t)(pe - pat) : strlen(pat);
        const char *se = strchr(path, '/');
        size_t sl = se ? (size_t)(se - path) : strlen(path);
        int is_param = pl >= 2 && pat[0] == '{' && pat[pl - 1] == '}';
        if (!is_param && !memchr(path, '%', sl)) {
            /* a literal against a segment without escapes: its decoded
             * form is itself, compare in place (no copy for the routes
             * tried and passed over on every request) */
            if (sl != pl || memcmp(pat, path, pl) != 0)
                goto fail;
            pat += pl;
            path += sl;
            continue;
        }
        char *seg = decode_segment(path, sl);
        if (!seg)
            goto fail;
        if (is_param) {
            if ((sl == 0 && !allow_empty) || np >= HTTP_MAX_PARAMS) {
                free(seg);
                goto fail;
            }
            params[np++] = seg;
        } else {
            int same = strlen(seg) == pl && memcmp(pat, seg, pl) == 0;
            free(seg);
            if (!same)
                goto fail;
        }
        pat += pl;
        path += sl;
    }
    if (*pat || (*path && strcmp(path, "/") != 0))
        goto fail;
    for (int i = 0; i < np; i++)
        r->params[i] = params[i];
    r->nparams = np;
    return 1;
fail:
    for (int i = 0; i < np; i++)
        free(params[i]);
    return 0;
}

static int match_pass(const char *path, enum http_method m, struct http_req *r, int *allowed,
                      int allow_empty)
{
    int any = 0;
    *allowed = 0;
    /* Without escapes a path matches a pattern only when it starts with the
     * pattern's text up to the first parameter: checked first, so most
     * routes are passed over with one comparison. */
    int plain = strchr(path, '%') == NULL;
    for (int i = 0; i < nroutes; i++) {
        if (plain && strncmp(path, routes[i].pattern, routes[i].literal) != 0)
            continue;
        struct http_req tmp = { 0 };
        if (!match_one(routes[i].pattern, path, &tmp, allow_empty))
            continue;
        if (routes[i].methods & (int)m) {
            for (int j = 0; j < tmp.nparams; j++)
                r->params[j] = tmp.params[j];
            r->nparams = tmp.nparams;
            return i;
        }
        for (int j = 0; j < tmp.nparams; j++)
            free(tmp.params[j]);
        any = 1;
        *allowed |= routes[i].methods;
    }
    return any ? -2 : -1;
}

int router_match(const char *path, enum http_method m, struct http_req *r, int *allowed)
{
    int rc = match_pass(path, m, r, allowed, 0);
    if (rc == -1) /* "/profiles//export": let the handler name the empty id */
        rc = match_pass(path, m, r, allowed, 1);
    return rc;
}
