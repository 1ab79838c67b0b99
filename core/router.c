/* router.c — pattern matching over a small static table. */
#include "router.h"
#include "err.h"
#include <stdlib.h>
#include <string.h>

static struct router_route routes[ROUTER_MAX];
static int nroutes;

int router_add(int methods, const char *pattern, enum config_role role, router_fn fn, int flags)
{
    if (nroutes >= ROUTER_MAX)
        return ERR_FULL;
    routes[nroutes] = (struct router_route){ methods, pattern, role, fn, flags };
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

/* Match one pattern; on success the params are stored in r. */
static int match_one(const char *pat, const char *path, struct http_req *r)
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
        if (pl >= 2 && pat[0] == '{' && pat[pl - 1] == '}') {
            if (sl == 0 || np >= HTTP_MAX_PARAMS)
                goto fail;
            params[np] = strndup(path, sl);
            if (!params[np])
                goto fail;
            np++;
        } else if (pl != sl || memcmp(pat, path, pl) != 0) {
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

int router_match(const char *path, enum http_method m, struct http_req *r, int *allowed)
{
    int any = 0;
    *allowed = 0;
    for (int i = 0; i < nroutes; i++) {
        struct http_req tmp = { 0 };
        if (!match_one(routes[i].pattern, path, &tmp))
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
