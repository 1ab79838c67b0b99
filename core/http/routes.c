/* routes.c — every resource's routes, in match order. */
#include "http/api.h"
#include "base/app.h"

void app_register_routes(void)
{
    api_ops_register();
    api_decide_register();
    api_rules_register();
    api_decisions_register();
    api_profiles_register();
    api_coupons_register(); /* before campaigns: /campaigns/{id}/coupons */
    api_campaigns_register();
    api_audit_register();
    api_events_register();
    api_analytics_register();
    api_outbox_register();
    api_models_register();
    api_ops_admin_register();
    api_segments_register();
    api_experiments_register();
    api_ui_register();
}
