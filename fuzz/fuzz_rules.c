/*
 * fuzz_rules.c — the campaign and plugin loader: any text as a campaign
 * file and as a channel plugin (rules_validate_source: compile in a
 * throwaway sandbox, run the chunk under the instruction budget, validate
 * the returned table and its templates), as `promod check`,
 * POST /api/v1/rules/validate and the reloader do.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/app.h"
#include "engine/rules.h"

struct app *g_app;
static struct app app;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_app) {
        config_defaults(&app.cfg); /* the default budget and memory limit */
        g_app = &app;
    }
    static const char *const chans[] = { "web", "app", "email", "sms", "push", "webhook" };
    json_t *errors = json_array();
    (void)rules_validate_source("rules/fuzz.lua", RULES_CAMPAIGN, (const char *)data, size, chans, 6, NULL,
                                errors);
    json_array_clear(errors);
    (void)rules_validate_source("plugins/fuzz.lua", RULES_PLUGIN, (const char *)data, size, chans, 6, NULL,
                                errors);
    json_decref(errors);
    return 0;
}
