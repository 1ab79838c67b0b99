/*
 * fuzz_config.c — the config loader (config/promod.lua): any text as the
 * file; every key, type and range check, the api_keys and tls sections,
 * and the loader's own limits (instructions, memory).
 */
#include <stdint.h>
#include <stdlib.h>
#include "base/config.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char err[512];
    config_defaults(&c);
    if (config_load_source(&c, (const char *)data, size, "fuzz/promod.lua", err, sizeof err) == 0)
        (void)config_find_key(&c, "fuzz-key-0123456789");
    config_free(&c);
    return 0;
}
