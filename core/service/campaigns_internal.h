/*
 * campaigns_internal.h — what the campaigns*.c files share; not an API.
 * Include it from campaigns.c, campaigns_view.c, campaigns_sync.c and
 * campaigns_versions.c only: everything else calls service/campaigns.h.
 *
 * The module is four files along its seams:
 *   campaigns.c           lifecycle and approval: create, update, delete,
 *                         the actions, clone, the status machine, input checks
 *   campaigns_view.c      the campaign view, GET and the list
 *   campaigns_sync.c      the script files under rules/ and the reloader's
 *                         hooks: file saves become versions, the approved
 *                         source is served, records and files change together
 *   campaigns_versions.c  versions, diff and rollback
 *
 * Every mutation holds campaigns_mu from its first read of the record to
 * the rename of the file (see campaigns_sync.c for why).  Record helpers
 * below take the caller's store txn; JSON results are new references.
 * This header deliberately does not include service/campaigns.h (that
 * would make the two headers a circle for scripts/check-layers.py).
 */
#ifndef PROMOD_CAMPAIGNS_INTERNAL_H
#define PROMOD_CAMPAIGNS_INTERNAL_H
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "base/app.h"
#include "base/clock.h"
#include "base/reqerr.h"
#include "base/tz.h"
#include "engine/rules.h"
#include "store/record.h"
#include "store/store.h"

/* ------------------------------------------------------ small helpers */

static inline void now_iso(char *buf, size_t len) { tz_format_iso8601(clock_now(), buf, len); }

static inline json_int_t jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static inline const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static inline int jeq(const json_t *o, const char *k, const char *v)
{
    const char *s = jstr(o, k);
    return s && v && !strcmp(s, v);
}

static inline size_t vkey(const char *id, uint64_t n, unsigned char *key)
{
    size_t l = strlen(id);
    memcpy(key, id, l);
    key[l] = 0;
    store_be64(n, key + l + 1);
    return l + 9;
}

static inline json_t *rec_get(struct store_txn *t, const char *id, int *rc)
{
    return record_get(t, STORE_CAMPAIGNS, id, strlen(id), rc);
}

static inline int rec_put(struct store_txn *t, const char *id, const json_t *rec)
{
    return record_put(t, STORE_CAMPAIGNS, id, strlen(id), rec);
}

static inline json_t *ver_get(struct store_txn *t, const char *id, uint64_t n, int *rc)
{
    unsigned char k[160];
    return record_get(t, STORE_VERSIONS, k, vkey(id, n, k), rc);
}

static inline int ver_put(struct store_txn *t, const char *id, uint64_t n, const json_t *v)
{
    unsigned char k[160];
    return record_put(t, STORE_VERSIONS, k, vkey(id, n, k), v);
}

/* The record without bulky or internal members, for audit before/after. */
static inline json_t *campaign_summary(const json_t *rec)
{
    if (!rec)
        return NULL;
    json_t *s = json_deep_copy(rec);
    json_object_del(s, "head_hash");
    json_object_del(s, "name_set");
    return s;
}

static inline const char *rules_dir(void) { return g_app->cfg.rules_dir; }

static inline void abs_of(const char *rel, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", rules_dir(), rel);
}

static inline const struct rules_campaign *gen_camp(const struct rules_gen *g, const char *id)
{
    int i = rules_gen_find_campaign(g, id);
    return i >= 0 ? &g->camps[i] : NULL;
}

static inline int gen_chan_names(const struct rules_gen *g, const char **names)
{
    int n = 0;
    for (int i = 0; g && i < g->nchans && i < 32; i++)
        names[n++] = g->chans[i].name;
    return n;
}

static inline json_t *channels_json(unsigned bits, const char *const *names, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n && i < 32; i++)
        if (bits & (1u << i))
            json_array_append_new(a, json_string(names[i]));
    return a;
}

/* the text of a loaded file as it is on disk (not the approved stand-in) */
static inline const char *gen_disk_text(const struct rules_file *f, size_t *len)
{
    if (f->disk_source) {
        *len = f->disk_source_len;
        return f->disk_source;
    }
    *len = f->source_len;
    return f->source;
}
static inline int req_approval(void) { return g_app->cfg.require_approval; }

static inline void campaign_touch(json_t *rec, const char *actor)
{
    char at[32];
    now_iso(at, sizeof at);
    json_object_set_new(rec, "rev", json_integer(jint(rec, "rev") + 1));
    json_object_set_new(rec, "updated_at", json_string(at));
    json_object_set_new(rec, "updated_by", json_string(actor));
}

/* ------------------------------------------- campaigns.c: lifecycle */

/** A store failure as the request's error: 507 storage_full, 404
 *  not_found, 503 busy (out of memory), else 500 internal; "<what>: ...". */
void campaigns_err_rc(struct reqerr *e, int rc, const char *what);
/** Status as users see it: the record's, else the loaded file's (`gc`,
 *  may be NULL), else archived (file gone) or draft.  Borrowed string. */
const char *campaigns_status(const json_t *rec, const struct rules_campaign *gc);
/** The newest version waiting for approval, or 0. */
long campaigns_pending_version(const json_t *rec);
/** Mask of the actions allowed in status `st` (bits in campaigns.c's order). */
unsigned campaigns_allowed(const char *st, long pending);
/** The allowed mask as a new array of action names. */
json_t *campaigns_allowed_json(unsigned m);
/** Fill `e` with 409 illegal_transition naming `st` and the allowed
 *  actions (members "current" and "allowed"); `why` may be NULL. */
void campaigns_illegal(struct reqerr *e, const char *action, const char *st, unsigned m,
                       const char *why);
/** Validate `src` as campaign `id` stored at `abs` (422 invalid_script
 *  with "errors", 413 when too large).  On success fills *pc (the caller
 *  frees it with rules_campaign_free).  @return 0 or -1 with `e` filled. */
int campaigns_check_script(const char *id, const char *abs, const char *src, size_t len,
                           const struct rules_gen *g, struct rules_campaign *pc,
                           struct reqerr *e);
/** If-Match: `if_match` < 0 passes; a stale rev is 409 version_conflict
 *  with "current_rev".  @return 0 or -1 with `e` filled. */
int campaigns_check_rev(const json_t *rec, long if_match, struct reqerr *e);

/* ---------------------------------------- campaigns_sync.c: the files */

/** Held by every mutation from its first read to the file's rename. */
extern pthread_mutex_t campaigns_mu;

/** Lower-case hex SHA-256 of p[0..n). */
void campaigns_sha256_hex(const char *p, size_t n, char out[65]);
/** "<rules_dir>/a/b.lua" → "a/b.lua".  @return 0, -1 when outside rules_dir. */
int campaigns_rel_of(const char *path, char *rel, size_t len);
/** Is `rel` a path the API may write: relative, no "..", no hidden part,
 *  ending in .lua? */
int campaigns_rel_ok(const char *rel);

/** What a mutation leaves to do after its records are in the txn. */
struct campaigns_fileop {
    int kind; /* 0 none, 1 write, 2 unlink */
    const char *data;
    size_t len;
    char abs[4200];
    char tmp[4300];
};
/** Commit the write txn `t` (always ended) and apply the file operation;
 *  if the file cannot be put in place the records are put back
 *  (`old_rec` NULL = the record was new; `new_version` > 0 = a version to
 *  remove) and the undo is audited.  @return 0 or a code with `e` filled. */
int campaigns_finish(struct store_txn *t, const char *id, const json_t *old_rec, long new_version,
                     struct campaigns_fileop *fo, const char *actor, struct reqerr *e);
/** Open the write txn for a change to `id` and load its record (a loaded
 *  file campaign never recorded is recorded first).  NULL with `e` filled
 *  (404 when unknown); *t is NULL when the txn could not be opened, else
 *  open (the caller ends it). */
json_t *campaigns_begin_change(const struct rules_gen *g, const char *id, struct store_txn **t,
                               struct reqerr *e);
/** Where the campaign's script lives (relative to rules_dir): the record's
 *  file, else the loaded file's.  @return 0, or -1 with `e` filled (404
 *  unknown, 409 a file the API may not write). */
int campaigns_script_path(const char *id, char *rel, size_t rlen, struct reqerr *e);

/* ------------------------------------ campaigns_versions.c: versions */

/** A new version record (new ref). */
json_t *campaigns_new_version(long n, const char *hash, const char *author, const char *origin,
                              const char *src, size_t len);
/** Does the live version of `rec` have this hash? */
int campaigns_version_is_live(struct store_txn *t, const char *id, const json_t *rec,
                              const char *hash);
/** Add version n = version + 1 of `rec` from `src` (write txn): live at
 *  once when approval is off, `approved_before` or its hash is live, else
 *  pending (or draft when nothing is live); moves pending_approval back to
 *  draft.  `chans` (borrowed, may be NULL) become the record's channels
 *  when live.  *n_out and *state ("live", "pending", "draft") are set.
 *  @return 0 or a store error. */
int campaigns_add_version(struct store_txn *t, const char *id, json_t *rec, const char *src,
                          size_t len, const char *hash, const char *actor, const char *origin,
                          long rollback_of, int approved_before, json_t *chans, long *n_out,
                          const char **state);

#endif
