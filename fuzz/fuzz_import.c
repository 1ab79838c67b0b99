/*
 * fuzz_import.c — bulk profile import (POST /api/v1/profiles/import and
 * `promod import`): any bytes as NDJSON into a real store; each line is
 * parsed, validated, encoded and written, bad lines counted and reported.
 * Invariants: every non-blank line is imported or failed, and every
 * error names a line that exists.
 */
#include <jansson.h>
#include <stdint.h>
#include "fuzz_store.h"
#include "service/profiles.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int full;
    struct store *s = fuzz_store(full);
    struct profiles_import_result res = { 0 };
    int rc = profiles_import_ndjson(s, (const char *)data, size, 1, 0, &res);
    full = rc == ERR_FULL;
    if (rc == 0 && res.imported + res.failed != res.lines) {
        fprintf(stderr, "%ld lines, %ld imported, %ld failed\n", res.lines, res.imported, res.failed);
        abort();
    }
    size_t i;
    json_t *e;
    long newlines = 1;
    for (size_t k = 0; k < size; k++)
        newlines += data[k] == '\n';
    json_array_foreach(res.errors, i, e) {
        json_int_t line = json_integer_value(json_object_get(e, "line"));
        if (line < 1 || line > newlines || !json_is_string(json_object_get(e, "message")))
            abort();
    }
    json_decref(res.errors);
    return 0;
}
