/*
 * router.h — method + path patterns → handler, with the role each needs.
 *
 * Patterns are literal segments and `{name}` parameters that match one
 * segment: "/api/v1/campaigns/{id}/{action}" (see router_match for empty
 * segments and percent-decoding).  Routes are added
 * at start-up (single thread) and read-only afterwards, so matching is
 * lock-free from every worker.  First match in insertion order wins, so add
 * literal routes before parameterised ones that overlap.
 */
#ifndef PROMOD_ROUTER_H
#define PROMOD_ROUTER_H
#include "base/config.h"
#include "http/http.h"

#define ROUTER_MAX 96

typedef void (*router_fn)(struct http_req *r);

enum router_flags {
    ROUTER_BIG_BODY = 1, /**< body limit is max_import_body instead of max_body */
    ROUTER_OPS = 2,      /**< also served by the ops thread (server.h): the handler runs no
                              Lua and touches no worker-thread state */
};

struct router_route {
    int methods;               /**< OR of enum http_method */
    const char *pattern;       /**< also the route's label in /metrics */
    enum config_role role;     /**< least role allowed; ROLE_PUBLIC = no auth */
    router_fn fn;
    int flags;
    size_t literal;            /**< length of the pattern before its first '{' */
};

/** Add a route.  @return its index, or ERR_FULL past ROUTER_MAX. */
int router_add(int methods, const char *pattern, enum config_role role, router_fn fn, int flags);

/** Match a raw path (still percent-encoded, without the query).  Segments
 *  are split on '/' first and decoded one by one, so an encoded "%2F"
 *  stays inside its parameter ("/profiles/a%2Fb" gives id "a/b" for the
 *  handler to refuse) and never selects another route; "%00" and invalid
 *  escapes are left as written.  A trailing '/' is ignored.  On success
 *  returns the route index and fills r->params / r->nparams (decoded,
 *  malloc'd; the request frees them).  Returns -1 when no pattern matches,
 *  -2 when a pattern matches but not the method (*allowed gets the methods
 *  that would).  When nothing matches with non-empty parameters, a second
 *  pass lets a parameter match an empty segment ("/profiles//export"), so
 *  the handler answers 400 naming the empty id instead of a bare 404:
 *  handlers must validate every parameter (id_valid). */
int router_match(const char *path, enum http_method m, struct http_req *r, int *allowed);

const struct router_route *router_get(int idx);
int router_count(void);
/** Forget every route (tests). */
void router_reset(void);

/** May a key of role `have` call a route that needs `need`?
 *  decide < marketer < admin. */
int router_role_allows(enum config_role have, enum config_role need);

/** Count one finished request in the route/status series of /metrics
 *  (any thread; lock-free).  router_metrics_init() registers the
 *  collector once, at start-up (router_metrics.c). */
void router_metrics_observe(int route, int status, uint64_t ns);
void router_metrics_init(void);

#endif
