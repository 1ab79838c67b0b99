/*
 * store.c — LMDB environment, per-thread read transactions, group sync.
 *
 * Why MDB_NOSYNC plus a syncer thread instead of synchronous commits: a
 * synchronous commit holds LMDB's writer lock through the fsync, so every
 * decide that reserves a cap would wait behind a profile write's disk
 * flush.  Here commits only copy pages into the page cache (safe against a
 * process crash); the syncer flushes outside the writer lock and wakes all
 * durable writers whose commit the flush covered.
 */
#include "store/store.h"
#include "base/err.h"
#include "base/log.h"
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *db_names[STORE_NDB] = {
    "meta", "profiles", "campaigns", "versions", "counters", "events",
    "aggregates", "audit", "outbox", "idem", "custidx", "pstats", "segments", "timers", "models",
    "coupons", "loyalty",
};

struct store_txn {
    struct store *s;
    MDB_txn *txn;
    int write;
    struct store_txn *next; /* list of cached read txns, for close */
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_NDB];
    pthread_mutex_t mu;
    pthread_mutex_t wmu;       /* this process's writers queue here, not on LMDB's lock */
    pthread_cond_t work, done;
    uint64_t committed, synced, async_dirty;
    uint64_t nsyncs, ndurable;
    int running;
    unsigned sync_interval_ms;
    pthread_t syncer;
    struct store_txn *readers; /* every thread's cached read txn */
    uint64_t id;               /* unique per open: see tl_store_id */
    void (*sync_hook)(void *);  /* store_set_sync_hook, called after each flush */
    void *sync_hook_ud;
};

/* The calling thread's cached read txn and the store it belongs to.  The
 * store is remembered by a never-reused id, not its address: after a
 * close, a new store may be allocated at the same address and must not
 * inherit (renew) a transaction freed with the old one. */
static __thread struct store_txn *tl_rtxn;
static __thread uint64_t tl_store_id;
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
    default:
        if (rc > 0 && rc < 10000)
            return -rc; /* errno */
        return ERR_STORE;
    }
}

void store_be64(uint64_t v, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t store_get_be64(const unsigned char in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

void store_be32(uint32_t v, unsigned char out[4])
{
    out[0] = (unsigned char)(v >> 24);
    out[1] = (unsigned char)(v >> 16);
    out[2] = (unsigned char)(v >> 8);
    out[3] = (unsigned char)v;
}

uint32_t store_get_be32(const unsigned char in[4])
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

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
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L; /* re-check async dirt every 50 ms */
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->work, &s->mu, &ts);
            continue;
        }
        uint64_t target = s->committed;
        s->async_dirty = 0;
        pthread_mutex_unlock(&s->mu);
        int rc = mdb_env_sync(s->env, 1);
        if (rc)
            log_error("store sync failed", "err=\"%s\"", mdb_strerror(rc));
        clock_gettime(CLOCK_MONOTONIC, &last);
        pthread_mutex_lock(&s->mu);
        s->nsyncs++;
        if (target > s->synced)
            s->synced = target;
        pthread_cond_broadcast(&s->done);
        void (*hook)(void *) = s->sync_hook;
        void *hud = s->sync_hook_ud;
        if (hook) { /* outside the lock: the hook takes its own */
            pthread_mutex_unlock(&s->mu);
            hook(hud);
            pthread_mutex_lock(&s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
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
    if (!s)
        return ERR_NOMEM;
    int rc = mdb_env_create(&s->env);
    if (rc)
        goto fail;
    mdb_env_set_maxdbs(s->env, STORE_NDB + 2);
    mdb_env_set_maxreaders(s->env, o->max_readers ? o->max_readers : 256);
    rc = mdb_env_set_mapsize(s->env, o->map_size ? o->map_size : (size_t)1 << 30);
    if (rc)
        goto fail;
    rc = mdb_env_open(s->env, o->dir, MDB_NOSYNC | MDB_NOTLS | (o->no_writemap ? 0 : MDB_WRITEMAP), 0640);
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
            mdb_env_close(s->env);
            free(s);
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
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&s->wmu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->done, NULL);
    s->running = 1;
    s->id = __atomic_add_fetch(&next_store_id, 1, __ATOMIC_RELAXED);
    s->sync_interval_ms = o->sync_interval_ms ? o->sync_interval_ms : 1000;
    if (pthread_create(&s->syncer, NULL, syncer_main, s)) {
        mdb_env_close(s->env);
        free(s);
        return ERR_NOMEM;
    }
    *out = s;
    return 0;
fail:
    log_error("cannot open store", "dir=\"%s\" err=\"%s\"", o->dir, mdb_strerror(rc));
    if (s->env)
        mdb_env_close(s->env);
    free(s);
    return map_err(rc) == ERR_NOTFOUND ? ERR_STORE : map_err(rc);
}

void store_close(struct store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->running = 0;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->syncer, NULL);
    for (struct store_txn *t = s->readers, *n; t; t = n) {
        n = t->next;
        mdb_txn_abort(t->txn);
        free(t);
    }
    if (tl_store_id == s->id) {
        tl_store_id = 0;
        tl_rtxn = NULL;
    }
    mdb_env_sync(s->env, 1);
    mdb_env_close(s->env);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->done);
    free(s);
}

int store_rtxn_begin(struct store *s, struct store_txn **out)
{
    *out = NULL;
    if (tl_store_id != s->id || !tl_rtxn) {
        struct store_txn *t = calloc(1, sizeof *t);
        if (!t)
            return ERR_NOMEM;
        int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->txn);
        if (rc) {
            free(t);
            return map_err(rc);
        }
        t->s = s;
        pthread_mutex_lock(&s->mu);
        t->next = s->readers;
        s->readers = t;
        pthread_mutex_unlock(&s->mu);
        tl_store_id = s->id;
        tl_rtxn = t;
        *out = t;
        return 0;
    }
    int rc = mdb_txn_renew(tl_rtxn->txn);
    if (rc)
        return map_err(rc);
    *out = tl_rtxn;
    return 0;
}

int store_wtxn_begin(struct store *s, struct store_txn **out)
{
    *out = NULL;
    struct store_txn *t = malloc(sizeof *t);
    if (!t)
        return ERR_NOMEM;
    pthread_mutex_lock(&s->wmu);
    int rc = mdb_txn_begin(s->env, NULL, 0, &t->txn);
    if (rc) {
        pthread_mutex_unlock(&s->wmu);
        free(t);
        return map_err(rc);
    }
    t->s = s;
    t->write = 1;
    t->next = NULL;
    *out = t;
    return 0;
}

void store_txn_end(struct store_txn *t)
{
    if (!t)
        return;
    if (t->write) {
        mdb_txn_abort(t->txn);
        pthread_mutex_unlock(&t->s->wmu);
        free(t);
    } else {
        mdb_txn_reset(t->txn);
    }
}

int store_txn_commit(struct store_txn *t, int durable)
{
    if (!t->write) {
        store_txn_end(t);
        return 0;
    }
    struct store *s = t->s;
    int rc = mdb_txn_commit(t->txn);
    pthread_mutex_unlock(&s->wmu);
    free(t);
    if (rc)
        return map_err(rc);
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

int store_txn_commit_ticket(struct store_txn *t, uint64_t *ticket)
{
    *ticket = 0;
    if (!t->write) {
        store_txn_end(t);
        return 0;
    }
    struct store *s = t->s;
    int rc = mdb_txn_commit(t->txn);
    pthread_mutex_unlock(&s->wmu);
    free(t);
    if (rc)
        return map_err(rc);
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

void store_set_sync_hook(struct store *s, void (*fn)(void *), void *ud)
{
    pthread_mutex_lock(&s->mu);
    s->sync_hook = fn;
    s->sync_hook_ud = ud;
    pthread_mutex_unlock(&s->mu);
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
    return map_err(mdb_put(t->txn, t->s->dbi[db], &k, &v, 0));
}

int store_reserve(struct store_txn *t, enum store_db db, const void *key, size_t klen,
                  size_t vlen, void **dst)
{
    if (klen == 0 || klen > 511)
        return ERR_TOOBIG;
    MDB_val k = { klen, (void *)key }, v = { vlen, NULL };
    int rc = mdb_put(t->txn, t->s->dbi[db], &k, &v, MDB_RESERVE);
    if (rc)
        return map_err(rc);
    *dst = v.mv_data;
    return 0;
}

int store_del(struct store_txn *t, enum store_db db, const void *key, size_t klen)
{
    if (klen == 0 || klen > 511)
        return ERR_NOTFOUND;
    MDB_val k = { klen, (void *)key };
    return map_err(mdb_del(t->txn, t->s->dbi[db], &k, NULL));
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
        return map_err(rc);
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
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &est);
    st->map_size = info.me_mapsize;
    st->used_bytes = (size_t)(info.me_last_pgno + 1) * est.ms_psize;
    struct store_txn *t;
    if (store_rtxn_begin(s, &t) == 0) {
        for (int i = 0; i < STORE_NDB; i++)
            st->entries[i] = store_count(t, (enum store_db)i);
        store_txn_end(t);
    }
    pthread_mutex_lock(&s->mu);
    st->syncs = s->nsyncs;
    st->durable_commits = s->ndurable;
    pthread_mutex_unlock(&s->mu);
    return 0;
}
