/* record.c — JSON objects stored as msgpack (see record.h). */
#include "store/record.h"
#include "base/buf.h"
#include "codec/codec.h"
#include "base/err.h"

json_t *record_get(struct store_txn *t, enum store_db db, const void *k, size_t kl, int *rc)
{
    const void *v;
    size_t vl;
    *rc = store_get(t, db, k, kl, &v, &vl);
    if (*rc)
        return NULL;
    json_t *o = codec_msgpack_to_json(v, vl, rc);
    if (o && !json_is_object(o)) {
        json_decref(o);
        *rc = ERR_PARSE;
        return NULL;
    }
    return o;
}

int record_put(struct store_txn *t, enum store_db db, const void *k, size_t kl, const json_t *o)
{
    struct buf b = BUF_INIT;
    int rc = codec_json_to_msgpack(o, &b);
    if (rc == 0)
        rc = store_put(t, db, k, kl, b.p, b.len);
    buf_free(&b);
    return rc;
}
