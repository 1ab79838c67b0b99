/*
 * fuzz_events.c — event ingestion (POST /api/v1/events): any bytes as
 * NDJSON, and, when they parse, as one event or an array, into a real
 * store (validation, idempotency keys, aggregates, profile stats).
 * Invariant: every event is accepted, rejected or a duplicate.
 */
#include <jansson.h>
#include <stdint.h>
#include "codec/codec.h"
#include "fuzz_store.h"
#include "insight/events.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

static void check(const struct events_result *r, long expected)
{
    if (r->store_rc == 0 && expected >= 0 && r->accepted + r->rejected + r->duplicates != expected) {
        fprintf(stderr, "%ld events: %ld accepted, %ld rejected, %ld duplicates\n", expected, r->accepted,
                r->rejected, r->duplicates);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int full;
    struct store *s = fuzz_store(full);
    struct events_result res;
    memset(&res, 0, sizeof res);
    int rc = events_ingest_ndjson(s, (const char *)data, size, &res);
    full = rc == ERR_FULL;
    check(&res, -1);
    events_result_free(&res);
    int err;
    char msg[128];
    json_t *v = codec_parse_json((const char *)data, size, &err, msg, sizeof msg);
    if (v && (json_is_object(v) || json_is_array(v))) {
        memset(&res, 0, sizeof res);
        rc = events_ingest_json(s, v, &res);
        full = full || rc == ERR_FULL;
        check(&res, json_is_array(v) ? (long)json_array_size(v) : 1);
        events_result_free(&res);
    }
    json_decref(v);
    return 0;
}
