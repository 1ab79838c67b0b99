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
#include <signal.h>
#include <stdint.h>
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
    long next_line; /**< every line before this one is stored or was reported */
    uint64_t next_offset; /**< byte offset of next_line in the input */
    int complete;   /**< profiles_import_file: the input was read to its end */
};

/** Import NDJSON from memory: one `{"id": ..., attrs...}` per line, blank
 *  lines ignored, commits every `batch` lines (0 = 5000); the last commit
 *  is durable.  Bad lines are counted and reported; good ones kept.
 *  `first_line` numbers the first line (for streaming from a file).  A
 *  batch that finds the map full is redone once it has grown.
 *  @return 0 or a store error (ERR_FULL...) after which nothing more is
 *  imported (earlier batches stay; res->next_line says where they end). */
int profiles_import_ndjson(struct store *s, const char *data, size_t len, long first_line,
                           int batch, struct profiles_import_result *res);

/** Where a file import starts and how it records its progress. */
struct profiles_import_opts {
    long first_line;          /**< number of the first line read from the stream (0 = 1) */
    uint64_t first_offset;    /**< the stream's byte offset in the whole input */
    const char *checkpoint;   /**< STORE_META key of the progress record, or NULL for none */
    const json_t *ident;      /**< the input's identity, copied into the record (borrowed) */
    long imported_before, failed_before; /**< totals of the runs this one continues */
    volatile sig_atomic_t *stop; /**< when set (a signal handler), stop after the block being read */
};

/** Import a whole NDJSON stream (read in 8 MiB blocks of whole lines), for
 *  `promod import`.  Each block is parsed on up to 4 threads (one per
 *  core) and written in line order by the calling thread, so the result
 *  is the same as one pass: same line numbers, last line wins for an id.
 *  With a checkpoint key, every batch's transaction also writes the
 *  progress record (JSON: the ident's fields, "line", "offset",
 *  "imported", "failed", "done", "updated"), so that whatever stops the
 *  import, the record names the first line not stored; "done" is set once
 *  the stream was read to its end.  One fsync at the end.  `o` may be
 *  NULL.  @return 0 (res->complete says whether the stream was read to its
 *  end or the stop flag ended it), ERR_IO, or a store error. */
int profiles_import_file(struct store *s, FILE *f, const struct profiles_import_opts *o,
                         struct profiles_import_result *res);

/** The progress-record key and identity of an input: "-" (stdin) or a
 *  path (absolute; size and mtime for a regular file, which is also
 *  `seekable`).  @return 0, -errno (stat), ERR_NOMEM.  *ident is new. */
int profiles_import_ident(const char *path, char *key, size_t keylen, json_t **ident, int *seekable);

/** The progress record under `key` (new reference), or NULL with *rc =
 *  ERR_NOTFOUND (no import recorded), ERR_PARSE, a store error. */
json_t *profiles_import_progress(struct store *s, const char *key, int *rc);

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
