/*
 * profiles.h — customer profiles: attributes as a msgpack map under the
 * customer id, and bulk NDJSON import.
 *
 * The "id" is the key, never stored inside the map; every other JSON value
 * keeps its type (strings, numbers, booleans, arrays, nested objects).
 * Behavioural stats written by events live in STORE_PSTATS and are merged
 * into reads as "stats" (read-only to writers: a PUT/PATCH may not set it).
 */
#ifndef PROMOD_PROFILES_H
#define PROMOD_PROFILES_H
#include <jansson.h>
#include <stdio.h>
#include "base/buf.h"
#include "store/store.h"

#define PROFILES_MAX_ATTRS_BYTES (256 * 1024)

/** Check an attribute object for a put/patch: an object, no "stats", "id"
 *  (when present) equal to `id`.  Fills msg/field.  @return 0 or ERR_INVAL. */
int profiles_validate(const char *id, const json_t *attrs, int patch, char *msg, size_t msglen,
                      const char **field);

/** Replace the attributes (write txn).  *created = 1 when new. */
int profiles_put_txn(struct store_txn *t, const char *id, const json_t *attrs, int *created);

/** Read the attributes as a new object with "id" first (read or write txn).
 *  @return NULL with *rc = ERR_NOTFOUND / ERR_PARSE. */
json_t *profiles_get_txn(struct store_txn *t, const char *id, int *rc);

/** RFC 7386 merge-patch (null deletes a key); creates the profile when
 *  missing.  Returns the merged attributes in *merged (new ref) if asked. */
int profiles_patch_txn(struct store_txn *t, const char *id, const json_t *patch, json_t **merged);

/** Delete the profile and everything keyed by the customer (stats,
 *  counters, events index, experiment exposures).  @return number of
 *  records removed or error. */
long profiles_erase_txn(struct store_txn *t, const char *id);

struct profiles_import_result {
    long imported, failed, lines;
    json_t *errors; /**< array of {"line": n, "message": "..."} (first 100) */
};

/** Import NDJSON from memory: one `{"id": ..., attrs...}` per line, blank
 *  lines ignored, commits every `batch` lines (0 = 5000); the last commit
 *  is durable.  Bad lines are counted and reported; good ones kept.
 *  `first_line` numbers the first line (for streaming from a file).
 *  @return 0 or a store error (ERR_FULL...) after which nothing more is
 *  imported (earlier batches stay). */
int profiles_import_ndjson(struct store *s, const char *data, size_t len, long first_line,
                           int batch, struct profiles_import_result *res);

/** Import a whole NDJSON file (streamed in 8 MiB blocks of whole lines),
 *  for `promod import`.  Each block is parsed on up to 4 threads (one per
 *  core) and written in line order by the calling thread, so the result
 *  is the same as one pass: same line numbers, last line wins for an id.
 *  Each block ends with a durable commit. */
int profiles_import_file(struct store *s, FILE *f, struct profiles_import_result *res);



/* Service wrappers owning their transactions (what handlers call).  Writes
 * are durable on return. */
int profiles_put(struct store *s, const char *id, const json_t *attrs, int *created);
json_t *profiles_get(struct store *s, const char *id, int *rc);
int profiles_patch(struct store *s, const char *id, const json_t *patch, json_t **merged);
long profiles_erase(struct store *s, const char *id);
/** Everything stored about the customer: profile, stats, counters, events,
 *  experiment exposures ("experiment_exposures": the variant of each
 *  experiment the customer was first exposed to, with when and the
 *  decision).  Erasure and export first store queued exposures. */
json_t *profiles_export(struct store *s, const char *id, int *rc);

#endif
