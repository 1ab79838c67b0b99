/*
 * store_internal.h — private to core/store/store*.c: the transaction handle
 * and the environment's state, shared by store.c (environment, growth,
 * sync, transactions) and the files split off it.  Nothing outside the
 * store folder includes this; the rest of the program sees the opaque
 * types of store/store.h.
 *
 * It does not include store/store.h (the module's own header: that would
 * be a circle between the two); the .c files include that first.
 */
#ifndef PROMOD_STORE_INTERNAL_H
#define PROMOD_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdint.h>

/* A transaction handle.  Each thread that touches the store also owns one
 * of these as its "slot": its cached read transaction (txn, NULL until the
 * thread first reads) and the depth of its open transactions, which the
 * grower waits to see at zero.  A write txn is a separate malloc'd handle
 * that points to its thread's slot. */
struct store_txn {
    struct store *s;
    MDB_txn *txn;
    int write;
    struct store_txn *slot; /* write txns: the thread's slot */
    int depth;              /* slots: open txns of the thread (atomic) */
    int live;               /* slots: the read txn is live (not reset) */
    struct store_txn *next; /* list of slots, for close and the grower */
    void *user;             /* write txns: store_txn_user (the end hook's argument) */
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_NDB];
    int fd;                    /* data.mdb */
    int writemap;
    size_t psize;
    char *dir;
    pthread_mutex_t mu;        /* syncer state, the slot list */
    pthread_mutex_t wmu;       /* this process's writers queue here, not on LMDB's lock */
    pthread_cond_t work, done;
    uint64_t committed, synced, async_dirty;
    uint64_t nsyncs, ndurable;
    uint64_t sync_ns;          /* in fdatasync, summed */
    int running;
    unsigned sync_interval_ms;
    pthread_t syncer;
    struct store_txn *readers; /* every thread's slot */
    uint64_t id;               /* unique per open: see tl_store_id */
    uint64_t wlock_waits, wlock_wait_ns; /* atomic: writers that waited for wmu, how long */

    /* growth: gmu guards the requests, the gate and the grower's state */
    pthread_mutex_t gmu;
    pthread_cond_t gate;       /* growing went back to 0 */
    pthread_cond_t drained;    /* a pass was released while growing */
    pthread_cond_t grow_cv;    /* wakes the grower */
    pthread_cond_t grown;      /* grow_ack advanced */
    uint64_t grow_req, grow_ack;
    int growing;               /* atomic: new transactions wait at the gate */
    int grow_running;
    pthread_t grower;
    int full_hit;              /* atomic: a write ran out of map */
    size_t map_size;           /* atomic: this process's map */
    size_t map_max;            /* 0 = no limit */
    size_t used;               /* atomic: bytes up to the last used page */
    uint64_t ngrowths, nfull;  /* atomic */
    int64_t backoff_until_ms;  /* atomic: no non-urgent growth before (after a postponed one) */
    int grow_rc;               /* the grower's last growth: 0, ERR_BUSY, ERR_FULL... (under gmu) */
    int max_warned;

    /* disk: alloc_end under wmu; the figures are atomic */
    size_t alloc_end;          /* data.mdb is allocated (not a hole) up to here */
    int no_fallocate;          /* the filesystem cannot: fall back to statvfs */
    int64_t disk_free, disk_size;
    int disk_low;
    int64_t disk_warned_ms, refused_warned_ms;

    struct { void (*fn)(void *); void *ud; } hooks[STORE_SYNC_HOOKS]; /* after each flush */
    int nhooks;
    void (*txn_hook)(void *user, uint64_t txnid); /* store_set_txn_hook */

    /* prewarm (store_prewarm.c): a thread reading the file into the page cache */
    pthread_t prewarmer;
    int prewarm_started;       /* the thread exists (join it at close) */
    int prewarm_stop;          /* atomic: close asks it to stop */
    int prewarm_done;          /* atomic: it finished (or was never started) */
    uint64_t prewarm_bytes;    /* atomic: bytes read so far */
};

/* store_prewarm.c: start the reader of [0, used) (0, or -errno: the store
 * works without it); stop and join it (no-op when not started). */
int store_prewarm_start(struct store *s, size_t used);
void store_prewarm_stop(struct store *s);

#endif
