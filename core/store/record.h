/*
 * record.h — JSON objects stored as msgpack under a key.
 *
 * Campaign records, outbox messages and send records are JSON objects kept
 * as msgpack values; these two calls are the one way to read and write
 * them.  Any thread, within the caller's transaction.
 */
#ifndef PROMOD_RECORD_H
#define PROMOD_RECORD_H
#include <jansson.h>
#include <stddef.h>
#include "store/store.h"

/** The object under `k` (new reference), or NULL with *rc = ERR_NOTFOUND,
 *  a store error, or ERR_PARSE when the value is not a msgpack object. */
json_t *record_get(struct store_txn *t, enum store_db db, const void *k, size_t kl, int *rc);

/** Store `o` under `k`.  0, ERR_INVAL / ERR_TOOBIG (not encodable), or a
 *  store error. */
int record_put(struct store_txn *t, enum store_db db, const void *k, size_t kl, const json_t *o);

#endif
