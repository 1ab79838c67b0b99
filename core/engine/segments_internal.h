/*
 * segments_internal.h — private to core/engine/segments*.c: the index
 * records, the per-thread evaluation state and the write batch.
 *
 *   segments.c           definitions, files, generations, reload, check
 *   segments_eval.c      the view, what a change touches, evaluation (C and Lua)
 *   segments_index.c     the LMDB records, the write batch, queries
 *   segments_build.c     the builder thread: fill, empty, sweep
 *   segments_audience.c  audiences: segment algebra, conditions, holdout
 *   segments_api.c       definitions over the API (written as files)
 *
 * It does not include engine/segments.h (the module's own header: that
 * would be a circle between the two); the .c files include that first.
 */
#ifndef PROMOD_SEGMENTS_INTERNAL_H
#define PROMOD_SEGMENTS_INTERNAL_H
#ifndef PROMOD_SEGMENTS_H
#error "include engine/segments.h before engine/segments_internal.h"
#endif
#include <pthread.h>
#include <stdbool.h>

struct luavm;
struct condset_scratch;

static inline void segbit_set(uint64_t *b, int i) { b[i >> 6] |= 1ull << (i & 63); }
static inline void segbit_clr(uint64_t *b, int i) { b[i >> 6] &= ~(1ull << (i & 63)); }
static inline int segbit_get(const uint64_t *b, int i) { return (int)(b[i >> 6] >> (i & 63)) & 1; }

/* ---- the generation (segments.c) ---------------------------------------- */

/** One reload at a time (API writes hold it across validate, write, load). */
extern pthread_mutex_t segments_reload_mu;
/** segments_reload with the mutex held; `over_path`/`over_text` load that
 *  text in place of the file, `drop_path` leaves a file out. */
int segments_reload_locked(struct app *app, int force, const char *over_path, const char *over_text,
                           const char *drop_path);
/** The generation that would result from writing `text` to `path`, not
 *  published (free with segments_gen_discard); *error names the file's
 *  problem ("path:line: message") when that text would not load. */
int segments_try(struct app *app, const char *path, const char *text, struct segments_gen **out,
                 const char **error);
void segments_gen_discard(struct segments_gen *g);

/** The live generation without taking a reference (NULL before start). */
struct segments_gen *segments_gen_peek(void);
/** Sweep interval and Lua limits from the config (set at start). */
const struct config *segments_cfg(void);

/* ---- evaluation (segments_eval.c) ------------------------------------------ */

/** The calling thread's evaluation state: condset scratch, view buffers and
 *  (made on first use) a Lua state with the generation's predicates.
 *  Freed when the thread exits.  NULL when out of memory. */
struct segments_tls {
    struct condset_scratch *cs;
    struct buf oview, nview;
    struct buf fview;       /* segments_eval_ids' view (may run inside a batch) */
    struct luavm *vm;
    uint64_t vm_seq;        /* generation the Lua state's predicates come from */
    int *match_ref;         /* per segment of that generation: the match function, or LUA_NOREF */
    int nmatch;
    uint64_t lua_errors;
};
struct segments_tls *segments_tls(void);


/** Evaluate the segments in `mask` on view `v` (the customer `cust`): the
 *  others keep their bit from `prev`.  Writes g->nw words to `out`.
 *  @return 0, ERR_NOMEM. */
int segments_eval_view(const struct segments_gen *g, struct segments_tls *x, const char *v,
                       size_t vl, const uint64_t *mask, const uint64_t *prev, uint64_t *out);

/** Build the per-path dependency tables of `g` (its segments compiled). */
int segments_deps_build(struct segments_gen *g);
void segments_deps_free(struct segments_deps *d);

/* ---- the index (segments_index.c) ------------------------------------------ */

/** A customer's "c" record, decoded: a bitset over slots. */
struct segidx_cust {
    int found;
    uint32_t nbytes;                        /* bytes of `bits` in use */
    unsigned char bits[SEGMENTS_SLOTS / 8]; /* bit = slot */
};
int segidx_cust_read(struct store_txn *t, const char *cust, size_t clen, struct segidx_cust *c);
/** Decode a "c" record's value. */
void segidx_cust_decode(const void *v, size_t vl, struct segidx_cust *c);
static inline int segidx_has(const struct segidx_cust *c, int slot)
{
    return (uint32_t)slot / 8 < c->nbytes && (c->bits[slot / 8] >> (slot % 8)) & 1;
}

/** Bitset over g's segments from a customer record. */
void segidx_cust_to_segs(const struct segments_gen *g, const struct segidx_cust *c, uint64_t *out);

struct segments_batch {
    struct store_txn *t;
    struct segments_gen *g;
    struct segments_tls *x;
    int64_t delta[SEGMENTS_SLOTS];  /* member count changes, written at the end */
    uint16_t dslots[SEGMENTS_SLOTS];
    uint8_t listed[SEGMENTS_SLOTS];
    int nd;
    uint64_t *prev, *aff, *out;     /* g->nw words each */
};

/** Evaluate the segments of `mask` (and those depending on them) for one
 *  customer with the given profile and stats, and apply the result. */
int segments_batch_mask(struct segments_batch *b, const char *cust, size_t clen, const char *prof,
                        size_t plen, const char *stats, size_t slen, const uint64_t *mask);

/** Apply a customer's new membership `out` (over g's segments) against its
 *  record `c` (`prev`: c as bits over g): the "c" record and the counts. */
int segidx_apply(struct segments_batch *b, const char *cust, size_t clen, struct segidx_cust *c,
                 const uint64_t *prev, const uint64_t *out);

/* slot records ("S") */
struct segidx_slot {
    int used;
    char id[132];
    char fp[17];
    char state[12];          /* "building", "ready", "deleting" */
    char cursor[132];        /* building: last customer done */
    int64_t built_at;
};
int segidx_slots_load(struct store_txn *t, struct segidx_slot *slots);
int segidx_slot_put(struct store_txn *t, int slot, const struct segidx_slot *s);
int segidx_slot_del(struct store_txn *t, int slot);
int segidx_count(struct store_txn *t, int slot, uint64_t *count);
/** Slot of a loaded segment by id in the store, -1 when none. */
int segidx_slot_of(struct store_txn *t, const char *id, struct segidx_slot *out);

/** Build the in-memory view (engine/segbits.h) from the customer records;
 *  queries scan when it fails.  @return 0 or an error (logged). */
int segidx_view_build(struct store *st);

/** Empty `slot`: clear its bit in the customer records after `cursor`
 *  (132 bytes, "" at the start; advanced), looking at up to `max` records.
 *  @return records looked at (0 = done), or a store error. */
long segidx_drain_slot(struct store_txn *t, int slot, char *cursor, long max);

/** Visit customer records after `after` ("" = from the start) in id order:
 *  fn(ud, id, idlen, record) returns 0 go on, 1 stop, <0 abort.  *last
 *  (132 bytes) gets the last id visited.  @return records visited, or an
 *  error. */
typedef int (*segidx_cust_fn)(void *ud, const char *id, size_t idlen, const struct segidx_cust *c);
long segidx_scan(struct store_txn *t, const char *after, long max, segidx_cust_fn fn, void *ud,
                 char *last);

/* ---- customers (segments_build.c) -------------------------------------------- */

/** Visit up to `max` customers (ids of profiles or stats, merged, each
 *  once) after `after` (NULL/"" = from the start), in id order, with their
 *  profile and stats bytes (NULL when absent).  @return customers visited
 *  (0 = none left), or an error; *last gets the last id (>= 132 bytes). */
typedef int (*segments_cust_fn)(void *ud, const char *id, size_t idlen, const char *prof,
                                size_t plen, const char *stats, size_t slen);
long segments_customers(struct store_txn *t, const char *after, long max, segments_cust_fn fn,
                        void *ud, char *last);

/** Start/stop the builder thread. */
int segments_builder_start(struct app *app);
void segments_builder_stop(void);

#endif
