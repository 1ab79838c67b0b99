/*
 * fuzz_msgpack.c — msgpack request bodies (Content-Type:
 * application/msgpack) and stored records: codec_msgpack_to_json on any
 * bytes, then the value back to msgpack and JSON again, which must give
 * the same value.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "base/buf.h"
#include "codec/codec.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int err = 0;
    json_t *v = codec_msgpack_to_json((const char *)data, size, &err);
    if (!v)
        return 0;
    struct buf b = BUF_INIT;
    if (codec_json_to_msgpack(v, &b) == 0) {
        json_t *back = codec_msgpack_to_json(b.p, b.len, &err);
        if (!back || !json_equal(v, back)) {
            fprintf(stderr, "msgpack -> JSON -> msgpack -> JSON changed the value\n");
            abort();
        }
        json_decref(back);
    }
    buf_free(&b);
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    free(s);
    json_decref(v);
    return 0;
}
