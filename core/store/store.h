/*
 * store.h — the LMDB environment: every byte promod keeps.
 *
 * One environment under the data directory, one named database per record
 * family (enum store_db), values msgpack.  The module hides MDB_env/MDB_dbi;
 * callers hold a struct store_txn for the duration of a unit of work.
 *
 * Reads: store_rtxn_begin() hands out the calling thread's cached read
 * transaction (renewed, not re-created), so a request costs no malloc.
 * Values returned by store_get()/store_scan() point into the map and are
 * valid until that transaction ends — copy what must outlive it.
 *
 * Writes: LMDB serialises write transactions (one writer at a time, any
 * thread).  The environment runs with MDB_NOSYNC, so a commit is in the OS
 * page cache (it survives a SIGKILL of the process) without an fsync.  A
 * commit with STORE_DURABLE then waits for the group syncer thread, which
 * fsyncs once for every commit that arrived meanwhile: many concurrent small
 * writes share one fsync and each is acknowledged only once it is on disk.
 * Non-durable commits (counters on the decide path) are synced by the same
 * thread within `sync_interval_ms`.
 *
 * The map is opened with MDB_WRITEMAP by default: a commit then writes
 * pages in place in the shared mapping instead of malloc'ing and pwrite'ing
 * copies, which halves the cost of the small cap-reservation transactions
 * on the decide path.  The price is that a stray pointer write in the
 * process could corrupt the map; store_opts.no_writemap turns it off.
 *
 * The map grows with the data.  It starts at store_opts.map_size (or the
 * size an existing environment grew to, if larger) and doubles (steps of
 * at most 16 GiB) whenever the data fills half of it, or at once when a
 * write ran out of room.  Replacing the map needs every transaction of
 * this process closed: from the moment a writer finds the map half full,
 * new transactions wait at a gate for the few milliseconds a growth takes,
 * and the grower thread waits for the open ones (a thread that already
 * holds a transaction is never made to wait, so a read txn kept open
 * across a write txn is fine; a transaction kept open for over a second
 * postpones the growth instead).  The map is address space, not disk: the
 * file is sparse.  Disk is what can really run out, so the store keeps the
 * blocks just past the data allocated ahead of the writers (fallocate) and
 * refuses a write with ERR_FULL when the disk cannot give that headroom;
 * store_opts.map_max caps the map (ERR_FULL past it).  Another process on
 * the same environment (`promod import`) grows the map for itself; this
 * process adopts the size when it meets data beyond its map.
 *
 * Errors: LMDB's codes map to ERR_NOTFOUND, ERR_FULL (no room: disk full
 * or map_max reached — the caller answers 507), ERR_STORE; -errno passes
 * through.  A write that failed with ERR_FULL lost its whole transaction;
 * the map grows before the next write transaction begins, so a caller may
 * redo the unit of work (store_grow() waits for the growth explicitly).
 */
#ifndef PROMOD_STORE_H
#define PROMOD_STORE_H
#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION 1

enum store_db {
    STORE_META = 0,   /**< schema version, sequences */
    STORE_PROFILES,   /**< customer id → msgpack map of attributes */
    STORE_CAMPAIGNS,  /**< campaign id → msgpack campaign record */
    STORE_VERSIONS,   /**< campaign id \0 seq(be64) → msgpack version record */
    STORE_COUNTERS,   /**< cap/budget counters */
    STORE_EVENTS,     /**< event log */
    STORE_AGGREGATES, /**< analytics aggregates */
    STORE_AUDIT,      /**< append-only audit log, key = seq(be64) */
    STORE_OUTBOX,     /**< durable outbound message queue */
    STORE_IDEM,       /**< idempotency keys (event ids, sends) */
    STORE_CUSTIDX,    /**< customer id \0 ... secondary index (events per customer) */
    STORE_PSTATS,     /**< customer id → msgpack behavioural stats (p.stats) */
    STORE_SEGMENTS,   /**< segment id → msgpack segment definition */
    STORE_TIMERS,     /**< due time(be64) id → triggered sends, delayed work */
    STORE_MODELS,     /**< trained model versions, live pointers (engine/models.h) */
    STORE_EXPERIMENTS, /**< experiment id → msgpack experiment record (service/exp_admin.h) */
    STORE_EXPOSURES,  /**< xkey(be32) customer → first exposure [variant, ts_ms, decision]
                           (engine/experiments.h) */
    STORE_COUPONS,    /**< coupon codes, pools, assignments, redemptions, money budgets (coupons.h) */
    STORE_LOYALTY,    /**< loyalty points ledgers and tiers per customer (loyalty.h) */
    STORE_DLOG,       /**< decision log: be64(ms) be32(seq) → entry (engine/dlog.h) */
    STORE_DLOG_CUST,  /**< customer id \0 be64(ms) be32(seq) → "" (the log's customer index
                           as versions before the batch index wrote it; read and erased) */
    STORE_DLOG_BATCH, /**< be64(ms) be32(seq) of a writer batch's last entry → the batch's
                           customer index record (engine/dlog.h) */
    STORE_NDB
};

struct store;
struct store_txn;

struct store_opts {
    const char *dir;          /**< created if missing */
    size_t map_size;          /**< bytes, the map's initial size; 0 = 1 GiB */
    size_t map_max;           /**< bytes the map may grow to; 0 = no limit but the disk */
    unsigned max_readers;     /**< 0 = 256 */
    unsigned sync_interval_ms;/**< background sync of non-durable commits; 0 = 1000 */
    int no_writemap;          /**< 1 = classic pwrite commits instead of MDB_WRITEMAP */
    int readahead;            /**< 1 = leave the kernel's readahead on for the map (see store.c) */
    int prewarm;              /**< 1 = read the store's pages into the page cache after open (store_prewarm.c) */
};

enum { STORE_ASYNC = 0, STORE_DURABLE = 1 };

/** Open (creating) the environment and every database, check the schema
 *  version, start the syncer thread.  @return 0, ERR_STORE with a log line,
 *  -errno. */
int store_open(const struct store_opts *opts, struct store **out);
/** Stop the syncer, fsync, close.  All transactions must be finished. */
void store_close(struct store *s);

/** Begin the calling thread's read transaction (snapshot).  One read txn
 *  per thread and store at a time (a thread keeps a slot in up to 4
 *  stores: the main one and the decision log's).  @return 0, ERR_STORE. */
int store_rtxn_begin(struct store *s, struct store_txn **txn);
/** Begin a write transaction (blocks while another writer is active, and
 *  while the map grows when it is nearly full).  @return 0, ERR_FULL
 *  (the disk cannot give the room a write may need), ERR_BUSY (another
 *  process grew the map and this one could not adopt it yet), ERR_STORE. */
int store_wtxn_begin(struct store *s, struct store_txn **txn);
/** Commit a write txn (freed on every path); with STORE_DURABLE returns only
 *  once the data is fsynced.  Read txns: same as store_txn_end. */
int store_txn_commit(struct store_txn *txn, int durable);
/** Commit a write txn as durably as STORE_DURABLE, without waiting for the
 *  flush: *ticket gets the commit's place in the sync order, and the data
 *  is on disk once store_synced() >= *ticket.  For callers that hold their
 *  answer until then instead of blocking a thread (http_reply_durable).
 *  Freed on every path.  @return 0 or a store error (nothing committed). */
int store_txn_commit_ticket(struct store_txn *txn, uint64_t *ticket);
/** The highest ticket known to be on disk (any thread). */
uint64_t store_synced(struct store *s);
/** Block until `ticket` is on disk. */
void store_sync_wait(struct store *s, uint64_t ticket);
/** Call fn(ud) on the syncer thread after every flush, with no store lock
 *  held.  A store has up to STORE_SYNC_HOOKS hooks, one per fn: setting a
 *  fn again replaces its ud.  fn must be quick and must not open
 *  transactions.  @return 0, or ERR_FULL when all slots are taken. */
#define STORE_SYNC_HOOKS 4
int store_set_sync_hook(struct store *s, void (*fn)(void *ud), void *ud);
/** Call fn(user, txnid) when a write txn of this process ends, on the
 *  thread ending it and with this process's writer lock still held — so
 *  calls come one at a time, in commit order: after every successful
 *  commit with the environment's last txn id (that commit's, or the one
 *  before when the txn wrote nothing) and `user` = what the txn's
 *  store_txn_user slot holds (NULL when nothing was attached); after an
 *  abort or a failed commit with txnid 0, only when `user` is not NULL.
 *  fn must be quick, must not open transactions and must free (or keep)
 *  `user`.  One hook per store (the segment view's, engine/segbits.h);
 *  NULL removes it. */
void store_set_txn_hook(struct store *s, void (*fn)(void *user, uint64_t txnid));
/** The write txn's user slot (NULL for read txns): a pointer the txn hook
 *  receives when the txn ends.  Starts NULL. */
void **store_txn_user(struct store_txn *txn);
/** The id of the last txn committed to the environment by any process
 *  (0 on error). */
uint64_t store_last_txnid(struct store *s);
/** End a read txn or abort a write txn.  NULL is a no-op. */
void store_txn_end(struct store_txn *txn);

/** After a write failed with ERR_FULL: grow the map now and return once
 *  it has grown, so the caller can redo its transaction.  Call with no
 *  transaction open on this thread.  @return 0 (grown), ERR_FULL (it
 *  cannot grow: map_max reached, no address space, or a transaction of
 *  this thread is open). */
int store_grow(struct store *s);

/** @return 0 and the value (valid until txn end), ERR_NOTFOUND, ERR_STORE. */
int store_get(struct store_txn *txn, enum store_db db, const void *key, size_t klen,
              const void **val, size_t *vlen);
/** @return 0, ERR_FULL, ERR_TOOBIG (key > 511 bytes), ERR_STORE. */
int store_put(struct store_txn *txn, enum store_db db, const void *key, size_t klen,
              const void *val, size_t vlen);
/** store_put of a key greater than every key of `db` (MDB_APPEND): the
 *  record goes at the end of the last page, which fills pages completely
 *  instead of splitting them in halves (append-only logs).  @return as
 *  store_put, or ERR_EXISTS when the key is not greater than the last
 *  (nothing written, the txn stays usable: use store_put then). */
int store_put_append(struct store_txn *txn, enum store_db db, const void *key, size_t klen,
                     const void *val, size_t vlen);
/** Reserve `vlen` bytes for a value and return where to write it. */
int store_reserve(struct store_txn *txn, enum store_db db, const void *key, size_t klen,
                  size_t vlen, void **dst);
/** @return 0, ERR_NOTFOUND, ERR_STORE. */
int store_del(struct store_txn *txn, enum store_db db, const void *key, size_t klen);

/** Visit every record whose key starts with `prefix` (all when plen == 0),
 *  in key order, starting at `start` when given (must be >= prefix).  The
 *  callback returns 0 to go on, 1 to stop, <0 to abort with that code.
 *  @return 0, the callback's error, ERR_STORE. */
typedef int (*store_scan_fn)(void *ud, const void *key, size_t klen,
                             const void *val, size_t vlen);
int store_scan(struct store_txn *txn, enum store_db db, const void *prefix, size_t plen,
               const void *start, size_t slen, store_scan_fn fn, void *ud);
/** Delete every record whose key starts with prefix (write txn).  Returns
 *  the count deleted (>= 0) or an error. */
long store_del_prefix(struct store_txn *txn, enum store_db db, const void *prefix, size_t plen);

/** Number of records in a database (within txn). */
size_t store_count(struct store_txn *txn, enum store_db db);

/** Next value of a named 64-bit sequence (write txn), starting at 1. */
int store_seq_next(struct store_txn *txn, const char *name, uint64_t *out);

struct store_stat {
    size_t map_size, used_bytes;
    size_t map_max;           /**< 0 = no limit */
    size_t entries[STORE_NDB];
    uint64_t syncs, durable_commits;
    uint64_t write_lock_waits;   /**< write txns that waited for another writer of this process */
    uint64_t write_lock_wait_ns; /**< the time they waited, in total */
    uint64_t sync_ns;         /**< time spent in the syncer's fdatasync calls */
    uint64_t growths;         /**< times the map grew since open */
    uint64_t full_errors;     /**< writes refused or failed for want of room */
    uint64_t disk_free;       /**< free bytes on the data dir's filesystem (for unprivileged users) */
    uint64_t disk_size;       /**< size of that filesystem */
};
/** Figures for /metrics (map and disk as of now, disk refreshed every
 *  second).  Opens the calling thread's read txn: call with none open.
 *  @return 0, or the error of store_rtxn_begin(). */
int store_stat(struct store *s, struct store_stat *st);

/** The prewarm started by store_opts.prewarm: the bytes of data.mdb read
 *  into the page cache so far in `*bytes` (may be NULL).  @return 1 when it
 *  finished, stopped at its memory bound, or was not asked for; 0 while it
 *  is still reading. */
int store_prewarm_status(struct store *s, uint64_t *bytes);

/** Name of a database ("profiles", ...). */
const char *store_db_name(enum store_db db);

/** Big-endian encode/decode helpers for sortable keys. */
void store_be64(uint64_t v, unsigned char out[8]);
uint64_t store_get_be64(const unsigned char in[8]);
void store_be32(uint32_t v, unsigned char out[4]);
uint32_t store_get_be32(const unsigned char in[4]);

#endif
