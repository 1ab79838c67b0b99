/*
 * exp_admin_internal.h — what exp_admin.c (the API side: lifecycle, view,
 * results) and exp_admin_files.c (the directory: loading, records kept in
 * step with files, publishing the live set, the watch) share; not an API.
 * Include it from those two files only.
 *
 * Every mutation and every reload holds expa_mu from its first read of a
 * record to the publication of the live set, so the file sync never
 * mistakes an API write (record first, then the file's rename) for a hand
 * edit, and two changes never interleave.
 */
#ifndef PROMOD_EXP_ADMIN_INTERNAL_H
#define PROMOD_EXP_ADMIN_INTERNAL_H
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include "base/reqerr.h"
#include "engine/experiments.h"
#include "store/store.h"

extern pthread_mutex_t expa_mu;

/** One file of the directory as the last load saw it. */
struct expa_file {
    char *rel;                   /**< name under the directory ("hero.lua") */
    uint32_t fnv;                /**< of the text on disk (change detection) */
    char sha[65];                /**< sha256 hex of the text on disk (records' head_hash) */
    struct experiments_def *def; /**< the live definition (the last good one), or NULL */
    char *error;                 /**< "path:line: message" for the text on disk, or NULL */
};

struct expa_state {
    char dir[4096];              /**< the experiments directory */
    struct expa_file *files;
    int nfiles;
    json_t *excluded;            /**< id → why a running experiment is not live */
    int started;
};
extern struct expa_state expa;

/** Rescan the directory, keep records in step with the files (audited,
 *  actor "file"), publish the live set.  Caller holds expa_mu.  @return
 *  the number of files with errors, or a negative store error. */
int expa_reload_locked(void);

/** The loaded file that defines experiment `id` (a live or last-good
 *  definition), or NULL. */
const struct expa_file *expa_file_of(const char *id);

/** The canonical definition as the Lua source of an experiment file
 *  (malloc'd, NUL-terminated, length in *len).  NULL when out of memory. */
char *expa_render(const json_t *canon, size_t *len);

/** Lower-case hex SHA-256 of p[0..n). */
void expa_sha256_hex(const char *p, size_t n, char out[65]);

/** Write `data` to a hidden temp file beside `<dir>/<rel>` and fsync it;
 *  `tmp` receives its path.  @return 0 or -errno. */
int expa_file_prepare(const char *rel, const char *data, size_t len, char *tmp, size_t tmplen);
/** Rename the temp file into place and fsync the directory.  @return 0 or
 *  -errno (the temp file is removed). */
int expa_file_commit(const char *tmp, const char *rel);

/** A record (new reference) or NULL with *rc (ERR_NOTFOUND ...). */
json_t *expa_rec_get(struct store_txn *t, const char *id, int *rc);
int expa_rec_put(struct store_txn *t, const char *id, const json_t *rec);

/** Seconds field of a record (0 when absent). */
int64_t expa_rec_ts(const json_t *rec, const char *key);

/** The definition of a record: its file's live one when loaded, else its
 *  recorded "definition" parsed (new reference, or NULL). */
struct experiments_def *expa_def_of(const json_t *rec);

/** The record summary audit entries carry (new reference). */
json_t *expa_summary(const json_t *rec);

/** First campaign or variant the loaded rules lack: 0 when all are
 *  there, else -1 with *field and msg set (field points into `fieldbuf`). */
int expa_check_campaigns(const struct experiments_def *d, char *fieldbuf, size_t flen, char *msg,
                         size_t mlen);

#endif
