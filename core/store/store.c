/*
 * store.c — LMDB environment, per-thread read transactions, group sync,
 * and a map that grows with the data.
 *
 * Why MDB_NOSYNC plus a syncer thread instead of synchronous commits: a
 * synchronous commit holds LMDB's writer lock through the fsync, so every
 * decide that reserves a cap would wait behind a profile write's disk
 * flush.  Here commits only copy pages into the page cache (safe against a
 * process crash); the syncer flushes outside the writer lock and wakes all
 * durable writers whose commit the flush covered.  It flushes with
 * fdatasync(2) on the data file rather than mdb_env_sync(): with
 * MDB_WRITEMAP that would msync() the map, and the map may be replaced
 * under it by a growth (on Linux both flush the same dirty pages).
 *
 * Why the map grows here rather than being sized once: mdb_env_set_mapsize
 * unmaps and remaps the file, so it may run only while no transaction of
 * this process is open (read transactions point into the map).  Every
 * transaction therefore holds a "pass" (a per-thread depth counter, no
 * shared cache line on the fast path).  The writer that finds the map
 * half full raises `growing` at once (so the room left is not eaten while
 * the grower thread waits for a core); new passes wait at the gate, the
 * grower drains the open ones (requests are short), replaces the map and
 * opens the gate.  A thread that already holds a pass (a
 * decide keeps its read snapshot while it reserves caps in a write txn)
 * passes the gate, so the grower never waits on a thread that waits on it;
 * it also gives up after GROW_WAIT_MS and retries later rather than stall
 * on a transaction held for long.  A thread's cached read transaction
 * holds no pointer into the map once reset, so cached transactions do not
 * count, only live ones.
 *
 * Why MDB_NORDAHEAD: a readahead window is cached as one large folio, and
 * dirtying 4 KiB of it makes the flush write all of it (1.2 MB flushed per
 * coupon redemption with readahead, 19 KB without; docs/promotions.md).
 *
 * Why fallocate: with MDB_WRITEMAP the file is sparse, and a page first
 * written in a hole of a full disk raises SIGBUS instead of an error.  So
 * the store keeps the blocks just past the data allocated ahead of the
 * writers (headroom), and refuses a write (ERR_FULL, HTTP 507) when the
 * disk cannot give that headroom any more; the process never writes into
 * a hole it could not allocate, unless one transaction writes more than
 * the headroom.
 */
#include "store/store.h"
#include "store/store_internal.h"
#include "base/err.h"
#include "base/log.h"
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)
#define GROW_STEP_MAX (16 * GIB) /* the map doubles up to this step, then grows by it */
#define GROW_WAIT_MS 1000        /* longest stop of new transactions while growing */
#define CHECK_MS 1000            /* the grower's periodic look at disk and map */
#define DISK_WARN_MIN GIB        /* warn when free disk is below max(this, used / 4) */

static const char *db_names[STORE_NDB] = {
    "meta", "profiles", "campaigns", "versions", "counters", "events",
    "aggregates", "audit", "outbox", "idem", "custidx", "pstats", "segments", "timers", "models",
    "experiments", "exposures",
    "coupons", "loyalty", "dlog", "dlog_cust", "dlog_batch",
};


/* The calling thread's slot and the store it belongs to.  The store is
 * remembered by a never-reused id, not its address: after a close, a new
 * store may be allocated at the same address and must not inherit (renew)
 * a transaction freed with the old one. */
#define TL_STORES 4 /* stores a thread keeps a slot in (the main one, the decision log's) */
static __thread struct store_txn *tl_rtxn[TL_STORES];
static __thread uint64_t tl_store_id[TL_STORES];
static __thread unsigned tl_next;
static uint64_t next_store_id;

const char *store_db_name(enum store_db db)
{
    return (unsigned)db < STORE_NDB ? db_names[db] : "?";
}

static int map_err(int rc)
{
    switch (rc) {
    case 0: return 0;
    case MDB_NOTFOUND: return ERR_NOTFOUND;
    case MDB_MAP_FULL: return ERR_FULL;
    case MDB_BAD_VALSIZE: return ERR_TOOBIG;
    case MDB_KEYEXIST: return ERR_EXISTS;
    case ENOSPC: return ERR_FULL; /* pwrite commits on a full disk */
    default:
        if (rc > 0 && rc < 10000)
            return -rc; /* errno */
        return ERR_STORE;
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ---- the pass: who may touch the map ------------------------------------ */

/* The calling thread's slot, created on first use.  NULL on ENOMEM. */
static struct store_txn *slot_get(struct store *s)
{
    for (int i = 0; i < TL_STORES; i++)
        if (tl_store_id[i] == s->id && tl_rtxn[i])
            return tl_rtxn[i];
    struct store_txn *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->s = s;
    pthread_mutex_lock(&s->mu);
    t->next = s->readers;
    s->readers = t;
    pthread_mutex_unlock(&s->mu);
    int k = -1; /* a free entry, else the next in turn (its slot stays its store's) */
    for (int i = 0; i < TL_STORES && k < 0; i++)
        if (!tl_rtxn[i])
            k = i;
    if (k < 0)
        k = (int)(tl_next++ % TL_STORES);
    tl_store_id[k] = s->id;
    tl_rtxn[k] = t;
    return t;
}

/* Take a pass before touching the map.  A thread that holds one already
 * goes on (the grower waits for it); otherwise it publishes its depth and
 * then looks at `growing` (both sequentially consistent, so either it sees
 * the grower or the grower sees it), and waits at the gate if needed. */
static void pass_enter(struct store *s, struct store_txn *slot)
{
    if (__atomic_load_n(&slot->depth, __ATOMIC_RELAXED) > 0) {
        __atomic_add_fetch(&slot->depth, 1, __ATOMIC_RELAXED);
        return;
    }
    for (;;) {
        __atomic_store_n(&slot->depth, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&s->growing, __ATOMIC_SEQ_CST))
            return;
        __atomic_store_n(&slot->depth, 0, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&s->gmu);
        pthread_cond_broadcast(&s->drained);
        while (__atomic_load_n(&s->growing, __ATOMIC_SEQ_CST))
            pthread_cond_wait(&s->gate, &s->gmu);
        pthread_mutex_unlock(&s->gmu);
    }
}

/* A pass for the grower itself, which must never wait at its own gate:
 * @return 1 (held), 0 (the gate is closed: a writer found growth due). */
static int pass_try(struct store *s, struct store_txn *slot)
{
    __atomic_store_n(&slot->depth, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&s->growing, __ATOMIC_SEQ_CST))
        return 1;
    __atomic_store_n(&slot->depth, 0, __ATOMIC_SEQ_CST);
    return 0;
}

static void pass_exit(struct store *s, struct store_txn *slot)
{
    if (__atomic_sub_fetch(&slot->depth, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&s->growing, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&s->gmu);
        pthread_cond_broadcast(&s->drained);
        pthread_mutex_unlock(&s->gmu);
    }
}

static int slots_busy(struct store *s)
{
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (struct store_txn *t = s->readers; t; t = t->next)
        n += __atomic_load_n(&t->depth, __ATOMIC_SEQ_CST) > 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- growth ------------------------------------------------------------- */

static int at_max(struct store *s)
{
    return s->map_max && __atomic_load_n(&s->map_size, __ATOMIC_RELAXED) >= s->map_max;
}

/* Ask the grower to look now; with `wait`, return once it has (the caller
 * must hold no pass). */
static void grow_request(struct store *s, int wait)
{
    pthread_mutex_lock(&s->gmu);
    if (wait || s->grow_req == s->grow_ack) {
        uint64_t req = ++s->grow_req;
        pthread_cond_signal(&s->grow_cv);
        while (wait && s->grow_ack < req && s->grow_running)
            pthread_cond_wait(&s->grown, &s->gmu);
    }
    pthread_mutex_unlock(&s->gmu);
}

/* Growth is due: close the gate now (new transactions wait from this
 * moment, not from when the grower thread gets a core) and wake the
 * grower, which drains the open ones and replaces the map. */
static void grow_start(struct store *s)
{
    if (!__atomic_exchange_n(&s->growing, 1, __ATOMIC_SEQ_CST))
        grow_request(s, 0);
}

static void note_full(struct store *s)
{
    __atomic_store_n(&s->full_hit, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->nfull, 1, __ATOMIC_RELAXED);
    if (!at_max(s))
        grow_start(s);
}

/* Growth is due when the data fills half the map: the other half is the
 * room writers have while the grower works (a write txn inside a read txn
 * cannot wait for it), and address space costs nothing. */
static int grow_due(size_t used, size_t map)
{
    return used > map / 2;
}

/* The map size after one growth from `map` holding `used` bytes: double
 * (steps of at most GROW_STEP_MAX) until the data fills at most half. */
static size_t grow_target(size_t map, size_t used)
{
    size_t step = map < GROW_STEP_MAX ? map : GROW_STEP_MAX;
    size_t target = map + step;
    while (target / 2 < used)
        target += step;
    return target;
}

static void disk_refresh(struct store *s)
{
    struct statvfs v;
    if (statvfs(s->dir, &v) == 0) {
        __atomic_store_n(&s->disk_free, (int64_t)v.f_bavail * (int64_t)v.f_frsize, __ATOMIC_RELAXED);
        __atomic_store_n(&s->disk_size, (int64_t)v.f_blocks * (int64_t)v.f_frsize, __ATOMIC_RELAXED);
    }
}

/* Replace the map by a bigger one (grower thread, holding no pass), the
 * gate closed (by a writer that found growth due, or here).  When the
 * drained store turns out not to need it (not urgent, not half full), the
 * gate just opens again.  @return 0, ERR_FULL (at map_max), ERR_BUSY
 * (transactions did not drain in time: try later), -errno. */
static int grow(struct store *s, int urgent)
{
    size_t map = __atomic_load_n(&s->map_size, __ATOMIC_RELAXED);
    if (at_max(s)) {
        if (!s->max_warned)
            log_warn("store map at its maximum: writes that need room fail with 507",
                     "dir=\"%s\" map_mb=%zu map_max_mb=%zu", s->dir, map / MIB, s->map_max / MIB);
        s->max_warned = 1;
        __atomic_store_n(&s->full_hit, 0, __ATOMIC_RELAXED);
        pthread_mutex_lock(&s->gmu);
        __atomic_store_n(&s->growing, 0, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&s->gate);
        pthread_mutex_unlock(&s->gmu);
        return ERR_FULL;
    }
    int64_t t0 = mono_ms();
    pthread_mutex_lock(&s->gmu);
    __atomic_store_n(&s->growing, 1, __ATOMIC_SEQ_CST);
    int busy;
    while ((busy = slots_busy(s)) > 0 && mono_ms() - t0 < GROW_WAIT_MS) {
        struct timespec ts;
        deadline_in(&ts, 10);
        pthread_cond_timedwait(&s->drained, &s->gmu, &ts);
    }
    int rc = 0;
    size_t used = 0, target = 0;
    if (busy) {
        rc = ERR_BUSY;
    } else {
        /* no transaction of this process is open: the map may be read */
        MDB_envinfo info;
        mdb_env_info(s->env, &info);
        used = (size_t)(info.me_last_pgno + 1) * s->psize;
        map = info.me_mapsize;
        __atomic_store_n(&s->used, used, __ATOMIC_RELAXED);
        if (!urgent && !grow_due(used, map))
            rc = 1; /* not needed after all */
        target = grow_target(map, used);
        if (s->map_max && target > s->map_max)
            target = s->map_max;
        /* never below the file: with MDB_WRITEMAP another process maps it
         * all (LMDB sets the file to the map's size, which must not shrink
         * it under that process) */
        struct stat fst;
        if (fstat(s->fd, &fst) == 0 && (size_t)fst.st_size > target)
            target = (size_t)fst.st_size;
        if (!rc && target <= map)
            rc = ERR_FULL;
        void *probe = rc ? MAP_FAILED
                         : mmap(NULL, target, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (probe != MAP_FAILED)
            munmap(probe, target);
        else if (!rc)
            rc = -errno; /* no address space for it: keep the old map intact */
        /* LMDB would ftruncate after unmapping; a failure there would leave
         * it without a map, so extend the (sparse) file first */
        if (!rc && s->writemap && ftruncate(s->fd, (off_t)target))
            rc = -errno;
        if (!rc && (rc = mdb_env_set_mapsize(s->env, target)) != 0) {
            int r2 = mdb_env_set_mapsize(s->env, map);
            if (r2) {
                log_error("store map lost after a failed growth", "dir=\"%s\" err=\"%s\"", s->dir,
                          mdb_strerror(r2));
                abort();
            }
            rc = map_err(rc);
        }
        if (!rc) {
            __atomic_store_n(&s->map_size, target, __ATOMIC_RELAXED);
            __atomic_store_n(&s->used, used, __ATOMIC_RELAXED);
            __atomic_add_fetch(&s->ngrowths, 1, __ATOMIC_RELAXED);
            __atomic_store_n(&s->full_hit, 0, __ATOMIC_RELAXED);
        }
    }
    __atomic_store_n(&s->growing, 0, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&s->gate);
    pthread_mutex_unlock(&s->gmu);
    long waited = (long)(mono_ms() - t0);
    if (rc == 1)
        rc = 0;
    else if (rc == 0)
        log_info("store map grown", "dir=\"%s\" from_mb=%zu to_mb=%zu used_mb=%zu stopped_ms=%ld%s",
                 s->dir, map / MIB, target / MIB, used / MIB, waited, urgent ? " after=full" : "");
    else if (rc == ERR_BUSY)
        log_warn("store map growth postponed: transactions stayed open", "dir=\"%s\" open=%d waited_ms=%ld",
                 s->dir, busy, waited);
    else
        log_error("store map growth failed", "dir=\"%s\" map_mb=%zu target_mb=%zu err=\"%s\"", s->dir,
                  map / MIB, target / MIB, err_str(rc));
    return rc;
}

/* One look: disk figures, the map's fill (another process may have
 * written), growth when due, a warning when the disk runs low. */
static void grower_check(struct store *s, struct store_txn *slot)
{
    disk_refresh(s);
    int closed = __atomic_load_n(&s->growing, __ATOMIC_SEQ_CST); /* a writer found growth due */
    size_t used = __atomic_load_n(&s->used, __ATOMIC_RELAXED);
    size_t map = __atomic_load_n(&s->map_size, __ATOMIC_RELAXED);
    if (!closed && pass_try(s, slot)) {
        MDB_envinfo info;
        mdb_env_info(s->env, &info);
        pass_exit(s, slot);
        used = (size_t)(info.me_last_pgno + 1) * s->psize;
        map = info.me_mapsize;
        __atomic_store_n(&s->used, used, __ATOMIC_RELAXED);
    } else {
        closed = 1; /* closed meanwhile: the gate opens only after grow() */
    }
    int urgent = __atomic_load_n(&s->full_hit, __ATOMIC_RELAXED);
    int64_t now = mono_ms();
    if (closed || urgent ||
        (grow_due(used, map) && now >= __atomic_load_n(&s->backoff_until_ms, __ATOMIC_RELAXED))) {
        int rc = grow(s, urgent);
        if (rc == ERR_BUSY)
            __atomic_store_n(&s->backoff_until_ms, mono_ms() + CHECK_MS, __ATOMIC_RELAXED);
        pthread_mutex_lock(&s->gmu);
        s->grow_rc = rc;
        pthread_mutex_unlock(&s->gmu);
    }
    int64_t free_b = __atomic_load_n(&s->disk_free, __ATOMIC_RELAXED);
    int64_t warn_below = (int64_t)(used / 4 > DISK_WARN_MIN ? used / 4 : DISK_WARN_MIN);
    if (free_b < warn_below) {
        if (!s->disk_low || now - s->disk_warned_ms >= 600000) {
            log_warn("disk space low for the store", "dir=\"%s\" disk_free_mb=%lld used_mb=%zu warn_below_mb=%lld",
                     s->dir, (long long)(free_b / (int64_t)MIB), used / MIB,
                     (long long)(warn_below / (int64_t)MIB));
            s->disk_warned_ms = now;
        }
        s->disk_low = 1;
    } else if (s->disk_low) {
        log_info("disk space for the store recovered", "dir=\"%s\" disk_free_mb=%lld", s->dir,
                 (long long)(free_b / (int64_t)MIB));
        s->disk_low = 0;
    }
}

static void *grower_main(void *arg)
{
    struct store *s = arg;
    struct store_txn *slot = slot_get(s);
    pthread_mutex_lock(&s->gmu);
    while (s->grow_running) {
        if (s->grow_req == s->grow_ack && !__atomic_load_n(&s->growing, __ATOMIC_SEQ_CST)) {
            struct timespec ts;
            deadline_in(&ts, CHECK_MS);
            pthread_cond_timedwait(&s->grow_cv, &s->gmu, &ts);
        }
        if (!s->grow_running)
            break;
        uint64_t req = s->grow_req;
        pthread_mutex_unlock(&s->gmu);
        if (slot)
            grower_check(s, slot);
        pthread_mutex_lock(&s->gmu);
        s->grow_ack = req;
        pthread_cond_broadcast(&s->grown);
    }
    s->grow_ack = s->grow_req;
    pthread_cond_broadcast(&s->grown);
    pthread_mutex_unlock(&s->gmu);
    return NULL;
}

/* Headroom of allocated disk kept past the data: 1/16 of it, 8-256 MiB. */
static size_t headroom(size_t used)
{
    size_t h = used / 16;
    return h < 8 * MIB ? 8 * MIB : h > 256 * MIB ? 256 * MIB : h;
}

/* Before a write txn (holding wmu): make sure the blocks past the data
 * are allocated.  @return 0, or ERR_FULL when the disk cannot give the
 * room a write may need. */
static int disk_reserve(struct store *s)
{
    size_t used = __atomic_load_n(&s->used, __ATOMIC_RELAXED);
    size_t map = __atomic_load_n(&s->map_size, __ATOMIC_RELAXED);
    size_t hr = headroom(used);
    if (hr > map / 2)
        hr = map / 2;
    if (!s->no_fallocate) {
        if (s->alloc_end >= used + hr)
            return 0;
        size_t want = used + 2 * hr;
        if (want > map)
            want = map;
        if (want <= s->alloc_end)
            return 0;
        /* on a nearly full disk take what it has, in halves down to 1 MiB */
        size_t len = want - s->alloc_end;
        int rc, e = 0;
        for (;;) {
            do
                rc = fallocate(s->fd, FALLOC_FL_KEEP_SIZE, (off_t)s->alloc_end, (off_t)len);
            while (rc && errno == EINTR);
            e = rc ? errno : 0;
            if (!rc || e != ENOSPC || len <= MIB)
                break;
            len /= 2;
        }
        if (rc == 0) {
            s->alloc_end += len;
            if (s->alloc_end >= used + hr / 2)
                return 0;
            e = ENOSPC; /* what the disk had is not enough */
        }
        if (e == EOPNOTSUPP || e == ENOSYS) {
            s->no_fallocate = 1;
            log_info("store: the filesystem cannot preallocate; free disk is checked instead",
                     "dir=\"%s\"", s->dir);
        } else if (e == ENOSPC || e == EDQUOT || e == EFBIG) {
            disk_refresh(s);
            if (s->alloc_end >= used + hr / 2)
                return 0; /* still room allocated; refuse once it runs short */
        } else {
            log_error("store: preallocation failed", "dir=\"%s\" err=\"%s\"", s->dir, strerror(e));
            return 0;
        }
    }
    if (s->no_fallocate) {
        int64_t free_b = __atomic_load_n(&s->disk_free, __ATOMIC_RELAXED);
        if (free_b < 0 || free_b >= (int64_t)hr)
            return 0;
    }
    __atomic_add_fetch(&s->nfull, 1, __ATOMIC_RELAXED);
    int64_t now = mono_ms();
    if (now - s->refused_warned_ms >= 10000) {
        s->refused_warned_ms = now;
        log_warn("store: disk full, writes refused", "dir=\"%s\" disk_free_mb=%lld used_mb=%zu need_mb=%zu",
                 s->dir, (long long)(__atomic_load_n(&s->disk_free, __ATOMIC_RELAXED) / (int64_t)MIB),
                 used / MIB, hr / MIB);
    }
    return ERR_FULL;
}

/* ---- syncer -------------------------------------------------------------- */

static void *syncer_main(void *arg)
{
    struct store *s = arg;
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
        int go = s->synced < s->committed ||
                 (s->async_dirty && (ms >= (long)s->sync_interval_ms || !s->running));
        if (!go) {
            if (!s->running)
                break;
            struct timespec ts;
            deadline_in(&ts, 50); /* re-check async dirt every 50 ms */
            pthread_cond_timedwait(&s->work, &s->mu, &ts);
            continue;
        }
        uint64_t target = s->committed;
        s->async_dirty = 0;
        pthread_mutex_unlock(&s->mu);
        struct timespec t0; /* for the time in fdatasync */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (fdatasync(s->fd))
            log_error("store sync failed", "err=\"%s\"", strerror(errno));
        clock_gettime(CLOCK_MONOTONIC, &last);
        pthread_mutex_lock(&s->mu);
        s->nsyncs++;
        s->sync_ns += (uint64_t)((last.tv_sec - t0.tv_sec) * 1000000000LL + (last.tv_nsec - t0.tv_nsec));
        if (target > s->synced)
            s->synced = target;
        pthread_cond_broadcast(&s->done);
        __typeof__(s->hooks) hooks; /* called outside the lock: a hook takes its own */
        int nh = s->nhooks;
        memcpy(hooks, s->hooks, sizeof hooks);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < nh; i++)
            hooks[i].fn(hooks[i].ud);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- open / close -------------------------------------------------------- */

static void store_free(struct store *s)
{
    if (s->env)
        mdb_env_close(s->env);
    free(s->dir);
    free(s);
}

int store_open(const struct store_opts *o, struct store **out)
{
    *out = NULL;
    if (mkdir(o->dir, 0750) && errno != EEXIST) {
        int e = errno;
        log_error("cannot create data dir", "dir=\"%s\" err=\"%s\"", o->dir, strerror(e));
        return -e;
    }
    struct store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(o->dir))) {
        free(s);
        return ERR_NOMEM;
    }
    s->fd = -1;
    s->writemap = !o->no_writemap;
    s->map_max = o->map_max;
    size_t want = o->map_size ? o->map_size : GIB;
    if (s->map_max && want > s->map_max)
        want = s->map_max;
    int rc = mdb_env_create(&s->env);
    if (rc)
        goto fail;
    mdb_env_set_maxdbs(s->env, STORE_NDB + 2);
    mdb_env_set_maxreaders(s->env, o->max_readers ? o->max_readers : 256);
    /* an existing store opens at the size it grew to: with MDB_WRITEMAP the
     * file is as large as the largest map on it (this process's last one,
     * or another process's now), and LMDB sets the file to the map's size,
     * which must never shrink it under another process */
    char path[4200];
    struct stat fst;
    snprintf(path, sizeof path, "%s/data.mdb", o->dir);
    if (stat(path, &fst) == 0 && (size_t)fst.st_size > want)
        want = (size_t)fst.st_size;
    rc = mdb_env_set_mapsize(s->env, want);
    if (rc)
        goto fail;
    rc = mdb_env_open(s->env, o->dir,
                      MDB_NOSYNC | MDB_NOTLS | (o->readahead ? 0 : MDB_NORDAHEAD) |
                          (s->writemap ? MDB_WRITEMAP : 0), 0640);
    if (rc)
        goto fail;
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &est);
    s->psize = est.ms_psize;
    rc = mdb_env_get_fd(s->env, &s->fd);
    if (rc)
        goto fail;
    MDB_txn *txn;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        goto fail;
    for (int i = 0; i < STORE_NDB; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc) {
            mdb_txn_abort(txn);
            goto fail;
        }
    }
    MDB_val k = { 6, "schema" }, v;
    rc = mdb_get(txn, s->dbi[STORE_META], &k, &v);
    if (rc == MDB_NOTFOUND) {
        unsigned char ver[8];
        store_be64(STORE_SCHEMA_VERSION, ver);
        v.mv_size = 8;
        v.mv_data = ver;
        rc = mdb_put(txn, s->dbi[STORE_META], &k, &v, 0);
    } else if (rc == 0) {
        uint64_t ver = v.mv_size == 8 ? store_get_be64(v.mv_data) : 0;
        if (ver != STORE_SCHEMA_VERSION) {
            mdb_txn_abort(txn);
            log_error("unsupported schema version", "dir=\"%s\" found=%llu want=%d",
                      o->dir, (unsigned long long)ver, STORE_SCHEMA_VERSION);
            store_free(s);
            return ERR_STORE;
        }
    }
    if (rc) {
        mdb_txn_abort(txn);
        goto fail;
    }
    rc = mdb_txn_commit(txn);
    if (rc)
        goto fail;
    mdb_env_sync(s->env, 1);
    mdb_env_info(s->env, &info);
    s->used = (size_t)(info.me_last_pgno + 1) * s->psize;
    s->map_size = info.me_mapsize;
    if (grow_due(s->used, s->map_size) && !at_max(s)) {
        /* the data fills the map already: grow now, before anyone reads */
        size_t target = grow_target(s->map_size, s->used);
        if (s->map_max && target > s->map_max)
            target = s->map_max;
        if (mdb_env_set_mapsize(s->env, target) == 0)
            s->map_size = target;
    }
    s->alloc_end = s->used; /* LMDB has written every page up to the last */
    disk_refresh(s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&s->wmu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->done, NULL);
    pthread_mutex_init(&s->gmu, NULL);
    pthread_cond_init(&s->gate, NULL);
    pthread_cond_init(&s->drained, NULL);
    pthread_cond_init(&s->grow_cv, NULL);
    pthread_cond_init(&s->grown, NULL);
    s->running = 1;
    s->grow_running = 1;
    s->id = __atomic_add_fetch(&next_store_id, 1, __ATOMIC_RELAXED);
    s->sync_interval_ms = o->sync_interval_ms ? o->sync_interval_ms : 1000;
    if (pthread_create(&s->syncer, NULL, syncer_main, s)) {
        store_free(s);
        return ERR_NOMEM;
    }
    /* named so that their CPU shows apart in /proc/PID/task (bench-dlog.sh):
     * "sync-" / "grow-" and the environment's directory name */
    const char *base = strrchr(o->dir, '/');
    char nm[16];
    snprintf(nm, sizeof nm, "sync-%s", base && base[1] ? base + 1 : o->dir);
    pthread_setname_np(s->syncer, nm);
    if (pthread_create(&s->grower, NULL, grower_main, s)) {
        pthread_mutex_lock(&s->mu);
        s->running = 0;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->syncer, NULL);
        store_free(s);
        return ERR_NOMEM;
    }
    snprintf(nm, sizeof nm, "grow-%s", base && base[1] ? base + 1 : o->dir);
    pthread_setname_np(s->grower, nm);
    s->prewarm_done = 1;
    if (o->prewarm && (rc = store_prewarm_start(s, s->used))) /* the store works without */
        log_warn("store prewarm not started", "dir=\"%s\" err=\"%s\"", o->dir, strerror(-rc));
    *out = s;
    return 0;
fail:
    log_error("cannot open store", "dir=\"%s\" err=\"%s\"", o->dir, mdb_strerror(rc));
    store_free(s);
    return map_err(rc) == ERR_NOTFOUND ? ERR_STORE : map_err(rc);
}

void store_close(struct store *s)
{
    if (!s)
        return;
    store_prewarm_stop(s);
    pthread_mutex_lock(&s->gmu);
    s->grow_running = 0;
    pthread_cond_signal(&s->grow_cv);
    pthread_mutex_unlock(&s->gmu);
    pthread_join(s->grower, NULL);
    pthread_mutex_lock(&s->mu);
    s->running = 0;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->syncer, NULL);
    for (struct store_txn *t = s->readers, *n; t; t = n) {
        n = t->next;
        if (t->txn)
            mdb_txn_abort(t->txn);
        free(t);
    }
    for (int i = 0; i < TL_STORES; i++)
        if (tl_store_id[i] == s->id) {
            tl_store_id[i] = 0;
            tl_rtxn[i] = NULL;
        }
    mdb_env_sync(s->env, 1);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->done);
    pthread_mutex_destroy(&s->gmu);
    pthread_cond_destroy(&s->gate);
    pthread_cond_destroy(&s->drained);
    pthread_cond_destroy(&s->grow_cv);
    pthread_cond_destroy(&s->grown);
    store_free(s);
}

/* ---- transactions -------------------------------------------------------- */

int store_rtxn_begin(struct store *s, struct store_txn **out)
{
    *out = NULL;
    struct store_txn *t = slot_get(s);
    if (!t)
        return ERR_NOMEM;
    for (int tries = 0;; tries++) {
        pass_enter(s, t);
        int rc = t->txn ? mdb_txn_renew(t->txn) : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->txn);
        if (rc == 0) {
            t->live = 1;
            *out = t;
            return 0;
        }
        pass_exit(s, t);
        if (rc != MDB_MAP_RESIZED)
            return map_err(rc);
        /* another process grew the map and wrote past ours: adopt its size */
        if (tries >= 3 || __atomic_load_n(&t->depth, __ATOMIC_RELAXED) > 0)
            return ERR_BUSY;
        grow_request(s, 1);
    }
}

int store_wtxn_begin(struct store *s, struct store_txn **out)
{
    *out = NULL;
    struct store_txn *slot = slot_get(s);
    struct store_txn *t = malloc(sizeof *t);
    if (!slot || !t) {
        free(t);
        return ERR_NOMEM;
    }
    for (int tries = 0;; tries++) {
        int outer = __atomic_load_n(&slot->depth, __ATOMIC_RELAXED) == 0;
        size_t used = __atomic_load_n(&s->used, __ATOMIC_RELAXED);
        size_t map = __atomic_load_n(&s->map_size, __ATOMIC_RELAXED);
        if (grow_due(used, map) && !__atomic_load_n(&s->growing, __ATOMIC_RELAXED) && !at_max(s) &&
            mono_ms() >= __atomic_load_n(&s->backoff_until_ms, __ATOMIC_RELAXED)) {
            /* close the gate: this writer (unless it is inside a read txn,
             * which the grower waits for) and every new transaction wait
             * below until the map has grown */
            grow_start(s);
        }
        pass_enter(s, slot);
        if (pthread_mutex_trylock(&s->wmu)) { /* another writer holds it: count the wait */
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            pthread_mutex_lock(&s->wmu);
            clock_gettime(CLOCK_MONOTONIC, &b);
            __atomic_add_fetch(&s->wlock_waits, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&s->wlock_wait_ns, (uint64_t)((b.tv_sec - a.tv_sec) * 1000000000LL +
                               (b.tv_nsec - a.tv_nsec)), __ATOMIC_RELAXED);
        }
        int rc = disk_reserve(s);
        if (rc) {
            pthread_mutex_unlock(&s->wmu);
            pass_exit(s, slot);
            free(t);
            return rc;
        }
        rc = mdb_txn_begin(s->env, NULL, 0, &t->txn);
        if (rc == 0) {
            t->s = s;
            t->write = 1;
            t->slot = slot;
            t->depth = t->live = 0;
            t->next = NULL;
            t->user = NULL;
            *out = t;
            return 0;
        }
        pthread_mutex_unlock(&s->wmu);
        pass_exit(s, slot);
        if (rc != MDB_MAP_RESIZED || tries >= 3 || !outer) {
            free(t);
            return rc == MDB_MAP_RESIZED ? ERR_BUSY : map_err(rc);
        }
        grow_request(s, 1); /* another process grew the map: adopt its size */
    }
}

void store_txn_end(struct store_txn *t)
{
    if (!t)
        return;
    struct store *s = t->s;
    if (t->write) {
        mdb_txn_abort(t->txn);
        void (*hook)(void *, uint64_t) = __atomic_load_n(&s->txn_hook, __ATOMIC_ACQUIRE);
        if (hook && t->user)
            hook(t->user, 0);
        pthread_mutex_unlock(&s->wmu);
        pass_exit(s, t->slot);
        free(t);
    } else if (t->live) {
        mdb_txn_reset(t->txn);
        t->live = 0;
        pass_exit(s, t);
    }
}

/* Commit a write txn and let go of it (the writer lock, the thread's
 * pass, the handle) on every path; note the room used for the grower. */
static int wcommit(struct store_txn *t)
{
    struct store *s = t->s;
    int rc = mdb_txn_commit(t->txn);
    MDB_envinfo info;
    if (rc == 0) {
        mdb_env_info(s->env, &info);
        __atomic_store_n(&s->used, (size_t)(info.me_last_pgno + 1) * s->psize, __ATOMIC_RELAXED);
    }
    /* still under this process's writer lock: hooks see commits in order */
    void (*hook)(void *, uint64_t) = __atomic_load_n(&s->txn_hook, __ATOMIC_ACQUIRE);
    if (hook && (rc == 0 || t->user))
        hook(t->user, rc == 0 ? (uint64_t)info.me_last_txnid : 0);
    pthread_mutex_unlock(&s->wmu);
    pass_exit(s, t->slot);
    free(t);
    if (rc) {
        if (rc == MDB_MAP_FULL || rc == ENOSPC)
            note_full(s);
        return map_err(rc);
    }
    return 0;
}

int store_txn_commit(struct store_txn *t, int durable)
{
    if (!t->write) {
        store_txn_end(t);
        return 0;
    }
    struct store *s = t->s;
    int rc = wcommit(t);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    if (durable) {
        uint64_t seq = ++s->committed;
        s->ndurable++;
        pthread_cond_signal(&s->work);
        while (s->synced < seq)
            pthread_cond_wait(&s->done, &s->mu);
    } else {
        s->async_dirty = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int store_grow(struct store *s)
{
    struct store_txn *slot = slot_get(s);
    if (!slot || __atomic_load_n(&slot->depth, __ATOMIC_RELAXED) > 0 || at_max(s))
        return ERR_FULL;
    size_t before = __atomic_load_n(&s->map_size, __ATOMIC_RELAXED);
    for (int tries = 0; tries < 5; tries++) {
        __atomic_store_n(&s->full_hit, 1, __ATOMIC_RELAXED);
        grow_start(s);
        grow_request(s, 1);
        if (__atomic_load_n(&s->map_size, __ATOMIC_RELAXED) > before)
            return 0;
        pthread_mutex_lock(&s->gmu);
        int rc = s->grow_rc;
        pthread_mutex_unlock(&s->gmu);
        if (rc != ERR_BUSY)
            break; /* at map_max, or no address space: growing again will not help */
    }
    return ERR_FULL;
}

/* A write failed for lack of room: remember it, so the map grows before
 * the next write txn. */
static int wfail(struct store_txn *t, int rc)
{
    if (rc == MDB_MAP_FULL)
        note_full(t->s);
    return map_err(rc);
}

int store_txn_commit_ticket(struct store_txn *t, uint64_t *ticket)
{
    *ticket = 0;
    if (!t->write) {
        store_txn_end(t);
        return 0;
    }
    struct store *s = t->s;
    int rc = wcommit(t);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    *ticket = ++s->committed;
    s->ndurable++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

uint64_t store_synced(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->synced;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void store_sync_wait(struct store *s, uint64_t ticket)
{
    pthread_mutex_lock(&s->mu);
    while (s->synced < ticket) {
        pthread_cond_signal(&s->work);
        pthread_cond_wait(&s->done, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

void store_set_txn_hook(struct store *s, void (*fn)(void *user, uint64_t txnid))
{
    __atomic_store_n(&s->txn_hook, fn, __ATOMIC_RELEASE);
}

void **store_txn_user(struct store_txn *t)
{
    return t->write ? &t->user : NULL;
}

uint64_t store_last_txnid(struct store *s)
{
    MDB_envinfo info;
    if (mdb_env_info(s->env, &info))
        return 0;
    return (uint64_t)info.me_last_txnid;
}

int store_set_sync_hook(struct store *s, void (*fn)(void *), void *ud)
{
    pthread_mutex_lock(&s->mu);
    int i = 0;
    while (i < s->nhooks && s->hooks[i].fn != fn)
        i++;
    if (i < STORE_SYNC_HOOKS) {
        s->hooks[i].fn = fn;
        s->hooks[i].ud = ud;
        s->nhooks += i == s->nhooks;
    }
    pthread_mutex_unlock(&s->mu);
    return i < STORE_SYNC_HOOKS ? 0 : ERR_FULL;
}

int store_get(struct store_txn *t, enum store_db db, const void *key, size_t klen,
              const void **val, size_t *vlen)
{
    if (klen == 0 || klen > 511)
        return ERR_NOTFOUND;
    MDB_val k = { klen, (void *)key }, v;
    int rc = mdb_get(t->txn, t->s->dbi[db], &k, &v);
    if (rc)
        return map_err(rc);
    *val = v.mv_data;
    *vlen = v.mv_size;
    return 0;
}

int store_put(struct store_txn *t, enum store_db db, const void *key, size_t klen,
              const void *val, size_t vlen)
{
    if (klen == 0 || klen > 511)
        return ERR_TOOBIG;
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
    return wfail(t, mdb_put(t->txn, t->s->dbi[db], &k, &v, 0));
}

int store_put_append(struct store_txn *t, enum store_db db, const void *key, size_t klen,
                     const void *val, size_t vlen)
{
    if (klen == 0 || klen > 511)
        return ERR_TOOBIG;
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
    return wfail(t, mdb_put(t->txn, t->s->dbi[db], &k, &v, MDB_APPEND));
}

int store_reserve(struct store_txn *t, enum store_db db, const void *key, size_t klen,
                  size_t vlen, void **dst)
{
    if (klen == 0 || klen > 511)
        return ERR_TOOBIG;
    MDB_val k = { klen, (void *)key }, v = { vlen, NULL };
    int rc = mdb_put(t->txn, t->s->dbi[db], &k, &v, MDB_RESERVE);
    if (rc)
        return wfail(t, rc);
    *dst = v.mv_data;
    return 0;
}

int store_del(struct store_txn *t, enum store_db db, const void *key, size_t klen)
{
    if (klen == 0 || klen > 511)
        return ERR_NOTFOUND;
    MDB_val k = { klen, (void *)key };
    return wfail(t, mdb_del(t->txn, t->s->dbi[db], &k, NULL));
}

int store_scan(struct store_txn *t, enum store_db db, const void *prefix, size_t plen,
               const void *start, size_t slen, store_scan_fn fn, void *ud)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
    if (rc)
        return map_err(rc);
    MDB_val k, v;
    if (start && slen) {
        k.mv_size = slen;
        k.mv_data = (void *)start;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    } else if (plen) {
        k.mv_size = plen;
        k.mv_data = (void *)prefix;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    int ret = 0;
    while (rc == 0) {
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
            break;
        int r = fn(ud, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        if (r) {
            ret = r < 0 ? r : 0;
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc && rc != MDB_NOTFOUND)
        ret = map_err(rc);
    mdb_cursor_close(c);
    return ret;
}

long store_del_prefix(struct store_txn *t, enum store_db db, const void *prefix, size_t plen)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
    if (rc)
        return map_err(rc);
    MDB_val k = { plen, (void *)prefix }, v;
    long n = 0;
    rc = plen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
            break;
        rc = mdb_cursor_del(c, 0);
        if (rc)
            break;
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
        if (rc == MDB_NOTFOUND || rc == EINVAL)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return wfail(t, rc);
    return n;
}

size_t store_count(struct store_txn *t, enum store_db db)
{
    MDB_stat st;
    if (mdb_stat(t->txn, t->s->dbi[db], &st))
        return 0;
    return st.ms_entries;
}

int store_seq_next(struct store_txn *t, const char *name, uint64_t *out)
{
    char key[64];
    int n = snprintf(key, sizeof key, "seq:%s", name);
    if (n <= 0 || n >= (int)sizeof key)
        return ERR_INVAL;
    const void *v;
    size_t vl;
    uint64_t cur = 0;
    int rc = store_get(t, STORE_META, key, (size_t)n, &v, &vl);
    if (rc == 0 && vl == 8)
        cur = store_get_be64(v);
    else if (rc && rc != ERR_NOTFOUND)
        return rc;
    unsigned char buf[8];
    store_be64(++cur, buf);
    rc = store_put(t, STORE_META, key, (size_t)n, buf, 8);
    if (rc == 0)
        *out = cur;
    return rc;
}

int store_stat(struct store *s, struct store_stat *st)
{
    memset(st, 0, sizeof *st);
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc)
        return rc;
    MDB_envinfo info; /* read under the txn's pass: the map cannot move */
    mdb_env_info(s->env, &info);
    st->map_size = info.me_mapsize;
    st->used_bytes = (size_t)(info.me_last_pgno + 1) * s->psize;
    for (int i = 0; i < STORE_NDB; i++)
        st->entries[i] = store_count(t, (enum store_db)i);
    store_txn_end(t);
    st->map_max = s->map_max;
    st->growths = __atomic_load_n(&s->ngrowths, __ATOMIC_RELAXED);
    st->full_errors = __atomic_load_n(&s->nfull, __ATOMIC_RELAXED);
    int64_t f = __atomic_load_n(&s->disk_free, __ATOMIC_RELAXED);
    int64_t z = __atomic_load_n(&s->disk_size, __ATOMIC_RELAXED);
    st->disk_free = f > 0 ? (uint64_t)f : 0;
    st->disk_size = z > 0 ? (uint64_t)z : 0;
    pthread_mutex_lock(&s->mu);
    st->syncs = s->nsyncs;
    st->write_lock_waits = __atomic_load_n(&s->wlock_waits, __ATOMIC_RELAXED);
    st->write_lock_wait_ns = __atomic_load_n(&s->wlock_wait_ns, __ATOMIC_RELAXED);
    st->durable_commits = s->ndurable;
    st->sync_ns = s->sync_ns;
    pthread_mutex_unlock(&s->mu);
    return 0;
}
