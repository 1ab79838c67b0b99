/*
 * segments.h — segments: named sets of customers defined by a GrowthBook
 * condition or a Lua predicate, with live membership kept in LMDB.
 *
 * Owns
 *  - the definitions: files `segments_dir/NAME.lua` (default ./segments), one
 *    segment a file, loaded, validated and hot-reloaded like campaign files
 *    (file:line errors, the last good version of a broken file keeps
 *    serving, `promod check`), and written by the API;
 *  - a *generation*: an immutable, refcounted snapshot of every loaded
 *    segment (compiled together in one struct condset, the dependency
 *    levels of `$segment` references — cycles refused at load —, which
 *    attribute paths each reads, which depend on time);
 *  - the membership index (STORE_SEGMENTS, segments_index.c):
 *      "c" customer          → bitset over slots: the customer's segments
 *                              (p.segments; absent = in none)
 *      "n" slot(be16)        → member count (be64), exact
 *      "S" slot(be16)        → {"id", "fp", "state", "cursor", "built_at"}
 *      "A" audience id       → saved audience definition (segments_audience.c)
 *    A segment keeps its slot while it exists.  A write changes one record
 *    and the counts (few pages: the write path stays cheap); member pages
 *    scan the customer records in id order; overlaps and audiences of
 *    segments are bitmap algebra over an in-memory view of the customer
 *    records (engine/segbits.h, rebuilt at start, updated after each
 *    commit), with the scan as fallback;
 *  - the builder thread (segments_build.c): fills a new or changed
 *    segment over every customer, empties a deleted one, and re-evaluates
 *    time-based segments every `segments_sweep_interval` seconds.
 *
 * Live membership: every profile write (PUT, PATCH, import) and every
 * event chunk that changes p.stats calls segments_batch_customer() in its
 * own write transaction, so counts and member lists are exact when the
 * write is acknowledged.  Only the segments whose paths the change touches
 * (and those depending on them through `$segment`) are evaluated again.
 *
 * What a condition sees (the *view*): the profile's attributes, `id`, and
 * `stats` = p.stats plus two fields computed at evaluation time:
 * `stats.recency_days` (whole days since last_seen) and `stats.days_since`
 * ({type: whole days since the newest event of that type}).  Segments that
 * read those (and every Lua predicate) are *time-based*: the sweep keeps
 * them fresh.
 *
 * Threads: generations from any thread; the batch functions inside the
 * caller's write transaction on any thread (Lua predicates run in a state
 * of the calling thread, made on first use); reload from the main thread or
 * an API handler (serialised by a mutex).
 */
#ifndef PROMOD_SEGMENTS_H
#define PROMOD_SEGMENTS_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "base/config.h"
#include "base/reqerr.h"

struct app;
struct event_base;
struct store_txn;
struct store;
struct condset;
struct cond;

#define SEGMENTS_MAX 1000          /**< loaded segments */
#define SEGMENTS_SLOTS 1024        /**< index slots (segments being deleted hold theirs) */
#define SEGMENTS_MAX_SOURCE (64 * 1024)

/** One loaded segment (immutable within its generation). */
struct segment {
    char *id;
    char *name;
    char *description;
    char *path;            /**< "segments/gold.lua" */
    json_t *conditions;    /**< the condition, or NULL for a Lua predicate */
    struct cond *cond;     /**< compiled (strict), NULL for a Lua predicate */
    char *source;          /**< the file's text (Lua predicates are loaded from it) */
    size_t source_len;
    uint32_t source_hash;
    int lua;               /**< defined by `match` */
    int slot;              /**< index slot */
    uint64_t fp;           /**< definition fingerprint, with those of its references */
    int time_based;        /**< reads recency fields or is a Lua predicate */
    int level;             /**< 0: references no segment; else 1 + its references' max */
    int *deps;             /**< indexes of the segments it references */
    int ndeps;
    int64_t loaded_at;
};

/** A loaded file's status (GET /api/v1/segments lists errors too). */
struct segments_file {
    char *path;
    char *id;              /**< the id it defines (last good or attempted), may be NULL */
    int ok;                /**< the text on disk is in use */
    char *error;           /**< "file:line: message" or NULL */
    uint32_t hash;         /**< of the text on disk */
};

struct segments_gen {
    int refs;
    uint64_t seq;
    struct segment *segs;  /**< sorted by id */
    int nseg;
    size_t nw;             /**< words of a bitset over segments */
    struct segments_file *files;
    int nfiles;
    struct condset *cs;    /**< member i = segment i (Lua ones test nothing) */
    int *ref_seg;          /**< condset ref k → segment index (or -1) */
    int nlevels;
    uint64_t **level;      /**< per level, the segments on it */
    uint64_t *lua;         /**< Lua predicates */
    uint64_t *timed;       /**< time-based segments */
    uint64_t *closure;     /**< per segment (nw words each): it and everything depending on it */
    int slot_seg[SEGMENTS_SLOTS]; /**< slot → segment index, -1 */
    struct segments_deps *deps; /**< attribute path → segments reading it (internal) */
    int64_t built_at;
};

/* --- lifecycle ------------------------------------------------------------ */

/** First load of `app->cfg.segments_dir` (errors are reported, not fatal),
 *  slot assignment in the store, and (with `builder` 1) the builder thread.
 *  The offline import passes builder = 0: its writes keep the index of
 *  loaded segments exact; a server started later fills new ones.  builder
 *  = -1 loads the definitions only and neither reads nor writes the index
 *  (`promod train`: segment features evaluate definitions, and a process
 *  beside a running server must not touch the server's slots).
 *  @return 0, or a store error. */
int segments_start(struct app *app, int builder);
/** Watch the directory for changes, on `base` (the main thread's loop). */
void segments_attach(struct app *app, struct event_base *base);
/** Stop the builder (it commits the batch in progress) and drop the
 *  generation. */
void segments_stop(struct app *app);
/** Rescan the directory and publish a new generation when anything
 *  changed (or `force`).  @return the number of files with errors. */
int segments_reload(struct app *app, int force);

struct segments_gen *segments_gen_acquire(void);
void segments_gen_release(struct segments_gen *g);
/** Index of segment `id` in `g`, or -1. */
int segments_find(const struct segments_gen *g, const char *id, size_t len);

/* --- evaluation ------------------------------------------------------------- */

/** The view a condition is evaluated on: the profile map (msgpack, or NULL
 *  for none) with "id" and "stats" (p.stats with recency_days and
 *  days_since computed at `now`; omitted when `stats` is NULL) added.
 *  Appends to `out`.  @return 0, ERR_PARSE (a profile or stats that is not
 *  a map), ERR_NOMEM. */
int segments_view(struct buf *out, const char *id, size_t idlen, const char *prof, size_t plen,
                  const char *stats, size_t slen, int64_t now);

/** The dependency tracking: the segments of `g` that a change of a
 *  customer's view from `ov` to `nv` (both built by segments_view) may
 *  change — those reading a path that differs (compared two levels deep:
 *  "tier", "stats.click"), every Lua predicate (their reads are unknown),
 *  and, transitively, every segment referencing one of those through
 *  `$segment`.  `ov` NULL (a new customer): all of them.  Writes g->nw
 *  words to `out` (bit = segment index). */
void segments_affected(const struct segments_gen *g, const char *ov, size_t ol, const char *nv,
                       size_t nl, uint64_t *out);

/** Membership of segments ids[0..n-1] as their definitions say it for the
 *  customer `id` whose profile is `prof` and stats `stats` (msgpack maps,
 *  NULL = none), as of `now`: the view segments_view builds (so
 *  `stats.recency_days` and `stats.days_since` count from `now`), each
 *  condition or Lua predicate evaluated on it, the segments they reference
 *  through `$segment` evaluated the same way first (recursively).  The
 *  index is not read: this is what membership would be for that view at
 *  that time (model features, engine/models.h: training at each example's
 *  time, serving at the decide's).  out[i] = 1 a member, 0 not, -1 no such
 *  segment loaded.  Any thread (Lua predicates run in the thread's own
 *  segments state).  @return 0, ERR_PARSE (a profile or stats that is not a
 *  map), ERR_NOMEM. */
int segments_eval_ids(const char *id, size_t idlen, const char *prof, size_t plen,
                      const char *stats, size_t slen, int64_t now, const char *const *ids, int n,
                      int *out);

/* --- live membership ------------------------------------------------------------ */

struct segments_batch;

/** Start membership updates inside write txn `wt` (borrowed; the batch
 *  must end before it commits).  Never fails for lack of segments: with
 *  none loaded every call is a cheap no-op.  @return NULL only when out of
 *  memory. */
struct segments_batch *segments_batch_begin(struct store_txn *wt);

/** Customer `cust` changed: its profile went from `oprof` to `nprof` and
 *  its stats from `ostats` to `nstats` (msgpack maps; NULL = none; equal
 *  pointers for the part that did not change).  Re-evaluates the segments
 *  whose paths the change touches (all of them for a customer that did not
 *  exist before) and updates the index.  The pointers are only read before
 *  the batch writes anything, so they may point into the store.  A
 *  customer with neither profile nor stats afterwards leaves every segment.
 *  @return 0, ERR_NOMEM, a store error (the caller aborts the txn). */
int segments_batch_customer(struct segments_batch *b, const char *cust, size_t clen,
                            const char *oprof, size_t oplen, const char *nprof, size_t nplen,
                            const char *ostats, size_t oslen, const char *nstats, size_t nslen);

/** Write what the batch accumulated (the member counts) and free it.  @return 0 or a store error (the caller aborts
 *  the txn).  NULL is fine. */
int segments_batch_end(struct segments_batch *b);
/** Free without writing (the caller aborts its txn).  NULL is fine. */
void segments_batch_abort(struct segments_batch *b);

/** One customer's change in its own batch: begin, customer, end. */
int segments_customer_txn(struct store_txn *wt, const char *cust, size_t clen, const char *oprof,
                          size_t oplen, const char *nprof, size_t nplen, const char *ostats,
                          size_t oslen, const char *nstats, size_t nslen);

/** Erase the customer from every segment (write txn; DELETE profile).
 *  @return the number of index records removed, or a store error. */
long segments_erase_customer_txn(struct store_txn *wt, const char *cust);

/** The customer's segments as a new array of ids (export, GET profile
 *  `segments`), NULL on a store error. */
json_t *segments_customer_json(struct store_txn *t, const char *cust);

/** The customer's membership as a bitset over `g`'s segments (g->nw words
 *  written to `out`).  @return 1 a member of some, 0 of none, or a store
 *  error. */
int segments_customer_bits(struct store_txn *t, const struct segments_gen *g, const char *cust,
                           size_t clen, uint64_t *out);

/* --- queries (API) -------------------------------------------------------------- */

/** Member count of `id`: O(1), one read.  *state = "ready" or "building".
 *  @return 0, ERR_NOTFOUND, store errors. */
int segments_size(struct store *s, const char *id, uint64_t *count, const char **state);

/** Members of both `a` and `b`: from the in-memory view (engine/segbits.h)
 *  when it is usable and `scan` is 0, else a scan of the customer records.
 *  *by = "view" or "scan" (static).  @return 0, ERR_NOTFOUND, store
 *  errors. */
int segments_overlap(struct store *s, const char *a, const char *b, int scan, uint64_t *count,
                     const char **by);

/** One page of members in customer id order: up to `limit` ids appended
 *  to `ids` (a JSON array), after customer `after` ("" = from the start);
 *  `next` (132 bytes) gets the cursor of the next page, "" when there is
 *  none.  @return 0, ERR_NOTFOUND, store errors. */
int segments_members_page(struct store *s, const char *id, const char *after, int limit,
                          json_t *ids, char *next);

/* --- audiences ---------------------------------------------------------------------- */

/** A compiled audience: {"any": [ids] (in at least one), "all": [ids] (in
 *  every one), "exclude": [ids] (in none), "conditions": {...} (a
 *  GrowthBook condition on the view, `$segment` allowed), "holdout": share
 *  in [0, 1), "sample": n, "name"?}.  `seed` (the audience id) seeds the
 *  holdout hash. */
struct segments_audience;
int segments_audience_compile(const json_t *def, const char *seed, struct segments_audience **out,
                              struct reqerr *err);
void segments_audience_free(struct segments_audience *a);
/** A saved audience (POST /api/v1/targeting/audience) by id. */
int segments_audience_load(struct store_txn *t, const char *id, struct segments_audience **out,
                           struct reqerr *err);

/** Called for each member: 0 go on, 1 stop, <0 abort with that code. */
typedef int (*segments_member_fn)(void *ud, const char *cust, size_t clen, const char *prof,
                                  size_t plen, const char *stats, size_t slen);

/** Visit members of `a` after `cursor` (a string of at least 132 bytes,
 *  "" at the start; advanced), looking at no more than `max` candidates.
 *  With segments named, candidates are the customers' index records
 *  (customers in no segment are skipped), in id order; otherwise every
 *  customer is scanned in id order.
 *  @return candidates looked at (0: the end), or an error. */
long segments_audience_next(struct store_txn *t, const struct segments_audience *a, char *cursor,
                            long max, segments_member_fn fn, void *ud);

/** POST /api/v1/targeting/audience: compile, count, sample, save.  Returns
 *  {"id", "count", "sample", "definition", "counted_at", "counted_by",
 *  "matched"?, "held_out"?} or NULL with err.  Segments named and no
 *  condition: counted from the in-memory view (engine/segbits.h) unless
 *  `scan` is 1 or the view is not usable ("counted_by": "view" / "scan");
 *  a condition needs each candidate's profile: always the scan. */
json_t *segments_audience_create(struct app *app, const json_t *body, int scan,
                                 struct reqerr *err);
/** GET /api/v1/targeting/audience/{id}: the saved definition counted now
 *  (`scan` as above). */
json_t *segments_audience_get(struct store *st, const char *id, int scan, struct reqerr *err);

/* --- definitions over the API ------------------------------------------------------ */

/** GET /api/v1/segments: every loaded segment (id, name, kind, file,
 *  size, state, time_based, depends_on) and every file with an error. */
json_t *segments_list_json(struct store *s);
/** One segment with its definition, source and size.  NULL with err. */
json_t *segments_get_json(struct store *s, const char *id, struct reqerr *err);

/** Create (`create` = 1: 409 when it exists) or replace segment `id` from
 *  an API body {"id"?, "name"?, "description"?, "conditions" | "match"}:
 *  validated first (400 naming the path inside the condition, or the Lua
 *  error), then written to segments_dir/<id>.lua and loaded.  On success
 *  *out is the segment as segments_get_json shows it (status 201/200 is
 *  the caller's).  @return 0 or an error with `err` filled. */
int segments_put(struct app *app, const char *id, const json_t *body, int create, json_t **out,
                 struct reqerr *err);
/** Delete segment `id` (its file); 409 while another segment references
 *  it, or a loaded campaign (segments_set_user_check).  @return 0 or error. */
int segments_delete(struct app *app, const char *id, struct reqerr *err);

/** Who else uses segment ids (campaign audiences): a function that, given
 *  an id, returns a new string naming a user ("campaign spring-sale") or
 *  NULL.  Set once at start-up by the module that knows. */
typedef char *(*segments_user_fn)(const char *id);
void segments_set_user_check(segments_user_fn fn);

/** `promod check` for segment files: validate the given files or
 *  directories (default segments_dir), print "file:line: message" per
 *  problem.  @return the number of problems. */
int segments_check_paths(const struct config *cfg, const char **paths, int n, int *files);

/** Ids of the segments the files of cfg->segments_dir define validly, as a
 *  new array (`promod check` of campaign audiences, without a server). */
json_t *segments_known_ids(const struct config *cfg);

/** Is `path` a segments path for `promod check` (under segments_dir, or
 *  with a "segments" component)? */
int segments_is_segments_path(const struct config *cfg, const char *path);

/** Wake the builder (tests and the API after a reload). */
void segments_builder_kick(void);

/** Progress of the builder: segments waiting to be built, being emptied,
 *  and the time of the last completed sweep (0 = none yet). */
struct segments_progress {
    int building, deleting;
    int64_t last_sweep;
    uint64_t sweeps;
};
void segments_progress(struct segments_progress *p);

/** Register promod_segment_* series with /metrics (start-up). */
void segments_metrics_init(void);

#endif
