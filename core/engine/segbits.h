/*
 * segbits.h — the segment view: segment membership held in memory as
 * columns, so that set algebra over segments (overlaps, audience counts)
 * costs a pass over a few bitmaps instead of a scan of every customer
 * record.
 *
 * Owns
 *  - a dense *ordinal* per customer in at least one segment (given when
 *    the customer is first seen; a customer that leaves every segment —
 *    profile deleted included — gives its ordinal and its id back: the id
 *    is freed at once, the ordinal is reused by the next new customer);
 *  - per index slot (engine/segments.h: a slot is a segment) a bitmap over
 *    ordinals in chunks of SEGBITS_CHUNK bits, allocated when the first
 *    member in that range arrives (a 1M-customer segment: 128 KB);
 *  - ordinal → customer id (samples, member walks) and id → ordinal (an
 *    open-addressing table, used by writers only).
 *
 * It is derived from the customer records ("c", one bitset over slots per
 * customer) of STORE_SEGMENTS and never written to disk: a crash loses
 * nothing, segbits_build() makes it again at start (inside a write txn, so
 * no commit can slip between the scan and going live).
 *
 * Exactness.  The index writer (engine/segments_index.c) calls
 * segbits_note() with a customer's whole new record each time it writes
 * one; the rows wait on the write txn (store_txn_user) and are applied by
 * the store's txn hook (store_set_txn_hook) after the commit succeeded,
 * still under the store's writer mutex — the one that serialises this
 * process's writers — so rows land in commit order and two writes of the
 * same customer cannot apply out of order; an aborted txn's rows are
 * dropped.  A row is a customer's full record, so applying it is
 * idempotent.  The view remembers the txn id of the last commit it saw;
 * when the environment's last txn id differs, a reader waits up to 100 ms
 * for the hook (a commit of this process is between LMDB and its hook for
 * microseconds); a txn id that stays ahead is another process's write,
 * and from then on readers use the scan (segbits_usable), logged once.
 * Out of memory while applying marks the view broken the same way.  Both
 * last until a restart rebuilds the view.
 *
 * Readers never lock for counts: words are read and written with 64-bit
 * atomic loads and stores (one writer at a time), chunk pointers are
 * published with release stores and never freed while the view lives.  A
 * count taken while writes land sees each word at some moment during the
 * count (not one snapshot): a customer changing meanwhile may be counted
 * with its old or its new row.  Member walks read ids under a read lock
 * taken per chunk (a writer takes it to give or take back an id).
 *
 * Threads: segbits_note on the writing thread; the hook on the committing
 * thread; queries on any thread; build/stop on the main thread.
 */
#ifndef PROMOD_SEGBITS_H
#define PROMOD_SEGBITS_H
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"

struct store;
struct store_txn;

#define SEGBITS_SLOTS 1024          /**< = SEGMENTS_SLOTS */
#define SEGBITS_CHUNK 65536         /**< ordinals per bitmap chunk (8 KB) */
#define SEGBITS_MAXCHUNKS 1024      /**< so up to 64M customers in segments */

/** Start building: the hook is installed, the view is empty and not live.
 *  Call with write txn `wt` of `st` open (it holds the writer mutex), feed
 *  every customer record with segbits_build_row, then segbits_build_done.
 *  @return 0, ERR_NOMEM. */
int segbits_build_begin(struct store *st, struct store_txn *wt);
/** One customer record: `row` (`n` bytes, bit = slot). */
int segbits_build_row(const char *id, size_t il, const unsigned char *row, size_t n);
/** The scan ended with `rc` (0 = complete): go live as of the current last
 *  txn id, or drop the view (queries then use the scan). */
void segbits_build_done(int rc);
/** Remove the hook and free everything (no write txn may be open). */
void segbits_stop(void);

/** The customer's record after write txn `t` is `row` (`n` bytes; n = 0:
 *  in no segment).  Kept with the txn until it ends.  A no-op when the view
 *  is not live.  @return 0, ERR_NOMEM (the view is marked broken). */
int segbits_note(struct store_txn *t, const char *id, size_t il, const unsigned char *row,
                 size_t n);

/** Can queries be answered from the view now? */
int segbits_usable(void);

/** An expression over slots: in at least one of `any` (none listed: no
 *  such clause), in every one of `all`, in none of `excl`.  A slot < 0 is
 *  a segment that no longer exists (never in it).  At least one of `any`,
 *  `all` must be listed. */
struct segbits_expr {
    const int *any, *all, *excl;
    int nany, nall, nexcl;
};

/** Count the customers matching `e`.  @return 0, ERR_BUSY (not usable:
 *  use the scan), ERR_INVAL (no any/all clause). */
int segbits_count(const struct segbits_expr *e, uint64_t *count);

/** Visit the customers matching `e` in ordinal order: fn(ud, id, il)
 *  returns 0 go on, 1 stop, <0 abort (the id is only valid during the
 *  call; the call runs under the id read lock, so it must not write the
 *  store).  @return 0, fn's negative code, ERR_BUSY, ERR_INVAL. */
typedef int (*segbits_member_fn)(void *ud, const char *id, size_t il);
int segbits_members(const struct segbits_expr *e, segbits_member_fn fn, void *ud);

/** Visit the members of `e` at the given ranks (0-based positions in
 *  ordinal order among the members; `ranks` sorted ascending, `k` of them):
 *  fn as for segbits_members.  Costs about a count.  @return as
 *  segbits_members. */
int segbits_at_ranks(const struct segbits_expr *e, const uint64_t *ranks, int k,
                     segbits_member_fn fn, void *ud);

/** Figures for /metrics and the docs. */
struct segbits_stats {
    int live, broken;          /**< broken: out of memory, or another process wrote */
    uint64_t customers;        /**< ordinals in use */
    uint64_t ordinals;         /**< ordinals ever handed out (high-water mark) */
    uint64_t bytes;            /**< bitmaps + ids + tables */
    double build_seconds;      /**< last start-up build */
    uint64_t build_rows;
    uint64_t applied;          /**< rows applied after commits */
};
void segbits_stats(struct segbits_stats *out);
/** Append the promod_segments_view_* series (Prometheus text). */
void segbits_metrics(struct buf *out);

#endif
