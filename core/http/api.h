/*
 * api.h — the HTTP resources.  One api_<resource>.c per resource; each
 * exposes api_<resource>_register() which adds its routes.  Handlers parse
 * and validate, call one service module, render, and reply exactly once;
 * they never open LMDB or touch Lua directly.
 */
#ifndef PROMOD_API_H
#define PROMOD_API_H
#include "http/http.h"

void api_ops_register(void);       /* /healthz, /metrics */
void api_ops_admin_register(void); /* /api/v1/admin/clock, /api/v1/admin/keys: last */
void api_profiles_register(void);
void api_decide_register(void);
void api_rules_register(void);
void api_decisions_register(void); /* decision log, replay */
void api_campaigns_register(void); /* campaigns, lifecycle, versions */
void api_audit_register(void);     /* audit log */
void api_events_register(void);    /* events, admin/compact */
void api_analytics_register(void); /* analytics/... */
void api_outbox_register(void);    /* outbox, dead letters, campaign sends */
void api_models_register(void);    /* models, targeting */
void api_segments_register(void);  /* segments, targeting/audience */
void api_experiments_register(void); /* experiments, results, recommendations, power */
void api_ui_register(void);        /* the web console at /ui/, whoami */
void api_coupons_register(void);   /* coupons, coupon pools, loyalty */

/** Who acts on this request, for the audit log (audit_actor of the API
 *  key and X-Actor); NULL after answering 400 for a malformed X-Actor, so
 *  that a refused request changes and records nothing (api_audit.c). */
const char *api_audit_actor(struct http_req *r);

/** Register every HTTP route (api_*.c), in match order (routes.c). */
void app_register_routes(void);

#endif
