/*
 * router.h — method + path patterns → handler, with the role each needs.
 *
 * Patterns are literal segments and `{name}` parameters that match one
 * non-empty segment: "/api/v1/campaigns/{id}/{action}".  Routes are added
 * at start-up (single thread) and read-only afterwards, so matching is
 * lock-free from every worker.  First match in insertion order wins, so add
 * literal routes before parameterised ones that overlap.
 */
#ifndef PROMOD_ROUTER_H
#define PROMOD_ROUTER_H
#include "config.h"
#include "http.h"

#define ROUTER_MAX 96

typedef void (*router_fn)(struct http_req *r);

enum router_flags {
    ROUTER_BIG_BODY = 1, /**< body limit is max_import_body instead of max_body */
};

struct router_route {
    int methods;               /**< OR of enum http_method */
    const char *pattern;       /**< also the route's label in /metrics */
    enum config_role role;     /**< least role allowed; ROLE_PUBLIC = no auth */
    router_fn fn;
    int flags;
};

/** Add a route.  @return its index, or ERR_FULL past ROUTER_MAX. */
int router_add(int methods, const char *pattern, enum config_role role, router_fn fn, int flags);

/** Match a decoded path.  On success returns the route index and fills
 *  r->params / r->nparams (strdup'd; the request frees them).  Returns -1
 *  when no pattern matches, -2 when a pattern matches but not the method
 *  (*allowed gets the methods that would). */
int router_match(const char *path, enum http_method m, struct http_req *r, int *allowed);

const struct router_route *router_get(int idx);
int router_count(void);
/** Forget every route (tests). */
void router_reset(void);

/** May a key of role `have` call a route that needs `need`?
 *  decide < marketer < admin. */
int router_role_allows(enum config_role have, enum config_role need);

#endif
