/* test_store.c — the LMDB store: records, scans, sequences, group commit,
 * a map that grows under concurrent writers and readers (and one grown by
 * another process), a map capped and full, snapshot isolation and key
 * limits, on a real environment in a temporary directory. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "fixture.h"
#include "base/log.h"
#include "store/store.h"

static char dir[256];
static struct store *st;

static int no_writemap; /* the map is opened as the test asks: both modes are shipped */

static size_t map_max; /* the cap the next open_store() sets (0: none) */

static void open_store(size_t map_size)
{
    struct store_opts o = { .dir = dir, .map_size = map_size, .map_max = map_max, .sync_interval_ms = 50,
                            .no_writemap = no_writemap };
    int rc = store_open(&o, &st);
    cr_assert_eq(rc, 0, "store_open: %s", err_str(rc));
}

static void setup(void)
{
    log_set_level(getenv("STORE_TEST_LOG") ? LOG_INFO : LOG_ERROR);
    tfx_tmpdir(dir, sizeof dir);
    map_max = 0;
    open_store(0);
}

static void teardown(void)
{
    store_close(st);
    st = NULL;
    tfx_rmrf(dir);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

/* put one record and commit (durable) */
static void put1(enum store_db db, const char *k, const char *v)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    int rc = store_put(t, db, k, strlen(k), v, strlen(v));
    cr_assert_eq(rc, 0, "put %s: %s", k, err_str(rc));
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
}

/* read one record into a static buffer; NULL when absent */
static const char *get1(enum store_db db, const char *k, size_t klen)
{
    static char out[4096];
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    const void *v;
    size_t vl;
    int rc = store_get(t, db, k, klen, &v, &vl);
    const char *res = NULL;
    if (rc == 0) {
        cr_assert_lt(vl, sizeof out);
        memcpy(out, v, vl);
        out[vl] = 0;
        res = out;
    } else {
        cr_assert_eq(rc, ERR_NOTFOUND, "get: %s", err_str(rc));
    }
    store_txn_end(t);
    return res;
}

static void reopen(void)
{
    store_close(st);
    open_store(0);
}

Test(store, put_get_del_and_reopen)
{
    put1(STORE_PROFILES, "alice", "A");
    put1(STORE_CAMPAIGNS, "alice", "campaign"); /* same key, other db */
    cr_assert_str_eq(get1(STORE_PROFILES, "alice", 5), "A");
    cr_assert_null(get1(STORE_PROFILES, "bob", 3));
    reopen();
    cr_assert_str_eq(get1(STORE_PROFILES, "alice", 5), "A");
    cr_assert_str_eq(get1(STORE_CAMPAIGNS, "alice", 5), "campaign");
    put1(STORE_PROFILES, "alice", "A2"); /* overwrite */
    cr_assert_str_eq(get1(STORE_PROFILES, "alice", 5), "A2");

    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_del(t, STORE_PROFILES, "alice", 5), 0);
    cr_assert_eq(store_del(t, STORE_PROFILES, "alice", 5), ERR_NOTFOUND);
    cr_assert_eq(store_del(t, STORE_PROFILES, "nobody", 6), ERR_NOTFOUND);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    cr_assert_null(get1(STORE_PROFILES, "alice", 5));
    cr_assert_str_eq(get1(STORE_CAMPAIGNS, "alice", 5), "campaign");
    reopen();
    cr_assert_null(get1(STORE_PROFILES, "alice", 5));
}

Test(store, aborted_write_leaves_nothing)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_PROFILES, "x", 1, "1", 1), 0);
    store_txn_end(t);
    cr_assert_null(get1(STORE_PROFILES, "x", 1));
    store_txn_end(NULL); /* no-op */
}

Test(store, values_binary_empty_and_large)
{
    static unsigned char big[300000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7);
    big[10] = 0;
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_EVENTS, "big", 3, big, sizeof big), 0);
    cr_assert_eq(store_put(t, STORE_EVENTS, "empty", 5, "", 0), 0);
    cr_assert_eq(store_put(t, STORE_EVENTS, "k\0bin", 5, "\0\1", 2), 0);
    void *dst;
    cr_assert_eq(store_reserve(t, STORE_EVENTS, "res", 3, 4, &dst), 0);
    memcpy(dst, "abcd", 4);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    reopen();
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    const void *v;
    size_t vl;
    cr_assert_eq(store_get(t, STORE_EVENTS, "big", 3, &v, &vl), 0);
    cr_assert_eq(vl, sizeof big);
    cr_assert_eq(memcmp(v, big, vl), 0);
    cr_assert_eq(store_get(t, STORE_EVENTS, "empty", 5, &v, &vl), 0);
    cr_assert_eq(vl, 0);
    cr_assert_eq(store_get(t, STORE_EVENTS, "k\0bin", 5, &v, &vl), 0);
    cr_assert_eq(vl, 2);
    cr_assert_eq(memcmp(v, "\0\1", 2), 0);
    cr_assert_eq(store_get(t, STORE_EVENTS, "k", 1, &v, &vl), ERR_NOTFOUND);
    cr_assert_eq(store_get(t, STORE_EVENTS, "res", 3, &v, &vl), 0);
    cr_assert_eq(memcmp(v, "abcd", 4), 0);
    cr_assert_eq(store_count(t, STORE_EVENTS), 4);
    store_txn_end(t);
}

/* ---- scans ---- */

struct collect {
    char keys[64][32];
    int n;
    int stop_after; /* return 1 after this many (0: never) */
    int fail_at;    /* return ERR_INVAL at this many (0: never) */
};

static int collect_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct collect *c = ud;
    cr_assert_lt(c->n, 64);
    cr_assert_lt(klen, 32);
    memcpy(c->keys[c->n], key, klen);
    for (size_t i = 0; i < klen; i++) /* show NULs as '|' */
        if (!c->keys[c->n][i])
            c->keys[c->n][i] = '|';
    c->keys[c->n][klen] = 0;
    c->n++;
    if (c->fail_at && c->n == c->fail_at)
        return ERR_INVAL;
    if (c->stop_after && c->n == c->stop_after)
        return 1;
    return 0;
}

static void seed_scan_keys(void)
{
    static const char *keys[] = { "a", "a\0x", "a\0y", "a\0z", "ab", "ab\0q", "b", "b\0x", "c" };
    static const size_t lens[] = { 1, 3, 3, 3, 2, 4, 1, 3, 1 };
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert_eq(store_put(t, STORE_CUSTIDX, keys[i], lens[i], "v", 1), 0);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
}

static void joined(const struct collect *c, char *out, size_t len)
{
    out[0] = 0;
    for (int i = 0; i < c->n; i++) {
        if (i)
            strncat(out, ",", len - strlen(out) - 1);
        strncat(out, c->keys[i], len - strlen(out) - 1);
    }
}

static void scan_expect(const void *prefix, size_t plen, const void *start, size_t slen,
                        const char *want)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    struct collect c = { .n = 0 };
    cr_assert_eq(store_scan(t, STORE_CUSTIDX, prefix, plen, start, slen, collect_cb, &c), 0);
    store_txn_end(t);
    char got[1024];
    joined(&c, got, sizeof got);
    cr_expect_str_eq(got, want, "prefix %zu bytes, start %zu bytes", plen, slen);
}

Test(store, scan_prefix_and_start)
{
    seed_scan_keys();
    scan_expect(NULL, 0, NULL, 0, "a,a|x,a|y,a|z,ab,ab|q,b,b|x,c");
    scan_expect("a\0", 2, NULL, 0, "a|x,a|y,a|z");        /* "ab" is not under "a\0" */
    scan_expect("a", 1, NULL, 0, "a,a|x,a|y,a|z,ab,ab|q");
    scan_expect("a\0", 2, "a\0y", 3, "a|y,a|z");          /* start inside the prefix */
    scan_expect("a\0", 2, "a\0xx", 4, "a|y,a|z");         /* start between keys */
    scan_expect("a\0", 2, "a\0zz", 4, "");                /* start past the prefix's keys */
    scan_expect("b\0", 2, NULL, 0, "b|x");
    scan_expect("c", 1, NULL, 0, "c");
    scan_expect("d", 1, NULL, 0, "");                     /* after the last key */
    scan_expect("0", 1, NULL, 0, "");                     /* before the first key */
    scan_expect(NULL, 0, "b", 1, "b,b|x,c");              /* start without prefix */
}

Test(store, scan_stop_and_error)
{
    seed_scan_keys();
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    struct collect c = { .n = 0, .stop_after = 2 };
    cr_assert_eq(store_scan(t, STORE_CUSTIDX, NULL, 0, NULL, 0, collect_cb, &c), 0);
    cr_assert_eq(c.n, 2, "callback returning 1 stops the scan");
    struct collect d = { .n = 0, .fail_at = 3 };
    cr_assert_eq(store_scan(t, STORE_CUSTIDX, NULL, 0, NULL, 0, collect_cb, &d), ERR_INVAL);
    cr_assert_eq(d.n, 3, "callback error aborts and is returned");
    struct collect e = { .n = 0 };
    cr_assert_eq(store_scan(t, STORE_SEGMENTS, NULL, 0, NULL, 0, collect_cb, &e), 0);
    cr_assert_eq(e.n, 0, "empty database");
    store_txn_end(t);
}

static long del_prefix(const void *prefix, size_t plen)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    long n = store_del_prefix(t, STORE_CUSTIDX, prefix, plen);
    cr_assert_geq(n, 0, "del_prefix: %s", err_str((int)n));
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    return n;
}

Test(store, del_prefix_small)
{
    seed_scan_keys();
    cr_assert_eq(del_prefix("a\0", 2), 3);
    scan_expect(NULL, 0, NULL, 0, "a,ab,ab|q,b,b|x,c");
    cr_assert_eq(del_prefix("zz", 2), 0, "nothing under the prefix");
    cr_assert_eq(del_prefix("0", 1), 0);
    cr_assert_eq(del_prefix("c", 1), 1, "the last key of the database");
    scan_expect(NULL, 0, NULL, 0, "a,ab,ab|q,b,b|x");
    cr_assert_eq(del_prefix("b", 1), 2, "a prefix running to the end");
    scan_expect(NULL, 0, NULL, 0, "a,ab,ab|q");
    cr_assert_eq(del_prefix("a", 1), 3);
    scan_expect(NULL, 0, NULL, 0, "");
}

/* Many records over many pages: deleting a run in the middle must remove
 * exactly the run (cursor deletes across page boundaries). */
Test(store, del_prefix_many_pages)
{
    struct store_txn *t;
    char k[64], v[200];
    memset(v, 'v', sizeof v);
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    const char *pfx[] = { "cust1", "cust2", "cust3" };
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 3000; i++) {
            int n = snprintf(k, sizeof k, "%s%c%06d", pfx[p], 0, i);
            cr_assert_eq(store_put(t, STORE_CUSTIDX, k, (size_t)n, v, sizeof v), 0);
        }
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    cr_assert_eq(del_prefix("cust2\0", 6), 3000);
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_CUSTIDX), 6000);
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 3000; i += 97) {
            int n = snprintf(k, sizeof k, "%s%c%06d", pfx[p], 0, i);
            const void *x;
            size_t xl;
            cr_assert_eq(store_get(t, STORE_CUSTIDX, k, (size_t)n, &x, &xl), p == 1 ? ERR_NOTFOUND : 0,
                         "%s/%d", pfx[p], i);
        }
    store_txn_end(t);
    cr_assert_eq(del_prefix("cust3\0", 6), 3000, "the tail of the database");
    cr_assert_eq(del_prefix(NULL, 0), 3000, "empty prefix deletes everything");
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_CUSTIDX), 0);
    store_txn_end(t);
}

Test(store, seq_next)
{
    struct store_txn *t;
    uint64_t v = 0;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    for (uint64_t i = 1; i <= 5; i++) {
        cr_assert_eq(store_seq_next(t, "audit", &v), 0);
        cr_assert_eq(v, i);
    }
    cr_assert_eq(store_seq_next(t, "events", &v), 0);
    cr_assert_eq(v, 1, "sequences are independent");
    char longname[80];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    cr_assert_eq(store_seq_next(t, longname, &v), ERR_INVAL);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    reopen();
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_seq_next(t, "audit", &v), 0);
    cr_assert_eq(v, 6, "survives reopen");
    store_txn_end(t); /* aborted: 6 is handed out again */
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_seq_next(t, "audit", &v), 0);
    cr_assert_eq(v, 6);
    cr_assert_eq(store_txn_commit(t, STORE_ASYNC), 0);
}

Test(store, be64_sorts)
{
    unsigned char a[8], b[8];
    store_be64(255, a);
    store_be64(256, b);
    cr_assert_lt(memcmp(a, b, 8), 0);
    cr_assert_eq(store_get_be64(b), 256);
    store_be64(UINT64_MAX, a);
    cr_assert_eq(store_get_be64(a), UINT64_MAX);
    cr_assert_str_eq(store_db_name(STORE_PROFILES), "profiles");
    cr_assert_str_eq(store_db_name(STORE_NDB), "?");
}

Test(store, schema_version_mismatch_refused)
{
    unsigned char ver[8];
    store_be64(STORE_SCHEMA_VERSION + 1, ver);
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_META, "schema", 6, ver, 8), 0);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    store_close(st);
    st = NULL;
    struct store_opts o = { .dir = dir };
    struct store *s2 = NULL;
    cr_assert_eq(store_open(&o, &s2), ERR_STORE);
    cr_assert_null(s2);
    cr_assert_eq(store_open(&o, &s2), ERR_STORE, "still refused, nothing was changed");
}

Test(store, put_append_takes_greater_keys_and_refuses_others_harmlessly)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    for (int i = 0; i < 2000; i++) { /* several pages' worth */
        unsigned char k[8];
        store_be64((uint64_t)(i * 2 + 10), k);
        cr_assert_eq(store_put_append(t, STORE_DLOG, k, 8, "entry-of-some-length", 20), 0,
                     "key %d", i);
    }
    unsigned char low[8], mid[8];
    store_be64(3, low);
    store_be64(11, mid); /* between two appended keys */
    cr_assert_eq(store_put_append(t, STORE_DLOG, low, 8, "x", 1), ERR_EXISTS);
    cr_assert_eq(store_put_append(t, STORE_DLOG, mid, 8, "y", 1), ERR_EXISTS);
    cr_assert_eq(store_put(t, STORE_DLOG, low, 8, "x", 1), 0, "the txn stays usable");
    cr_assert_eq(store_put(t, STORE_DLOG, mid, 8, "y", 1), 0);
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_DLOG), 2002);
    const void *v;
    size_t vl;
    cr_assert_eq(store_get(t, STORE_DLOG, mid, 8, &v, &vl), 0);
    cr_assert_eq(vl, 1);
    store_txn_end(t);
}

/* A thread that reads two stores in turn (the main one and the decision
 * log's) keeps one read slot in each: with a slot per thread only, every
 * switch would begin a new LMDB reader, and 16 readers run out fast. */
Test(store, a_thread_alternating_two_stores_keeps_one_reader_in_each)
{
    put1(STORE_PROFILES, "a", "1");
    char dir2[300];
    snprintf(dir2, sizeof dir2, "%s/second", dir);
    struct store_opts o = { .dir = dir2, .max_readers = 16, .sync_interval_ms = 50 };
    struct store *s2 = NULL;
    cr_assert_eq(store_open(&o, &s2), 0);
    struct store_txn *w;
    cr_assert_eq(store_wtxn_begin(s2, &w), 0);
    cr_assert_eq(store_put(w, STORE_DLOG, "k", 1, "v", 1), 0);
    cr_assert_eq(store_txn_commit(w, STORE_DURABLE), 0);
    for (int i = 0; i < 200; i++) {
        struct store_txn *t1, *t2;
        const void *v;
        size_t vl;
        int rc = store_rtxn_begin(st, &t1);
        cr_assert_eq(rc, 0, "round %d: main store: %s", i, err_str(rc));
        rc = store_rtxn_begin(s2, &t2); /* both open at once, too */
        cr_assert_eq(rc, 0, "round %d: second store: %s", i, err_str(rc));
        cr_assert_eq(store_get(t1, STORE_PROFILES, "a", 1, &v, &vl), 0);
        cr_assert_eq(store_get(t2, STORE_DLOG, "k", 1, &v, &vl), 0);
        cr_assert_eq(store_get(t2, STORE_PROFILES, "a", 1, &v, &vl), ERR_NOTFOUND,
                     "each transaction reads its own store");
        store_txn_end(t2);
        store_txn_end(t1);
    }
    store_close(s2);
}

/* ---- concurrency: group commit ---- */

#define GC_THREADS 8
#define GC_COMMITS 40

static void *durable_writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < GC_COMMITS; i++) {
        char k[32], v[32];
        int kn = snprintf(k, sizeof k, "t%d-%03d", id, i);
        int vn = snprintf(v, sizeof v, "value %d %d", id, i);
        struct store_txn *t;
        if (store_wtxn_begin(st, &t))
            return (void *)1;
        if (store_put(t, STORE_PROFILES, k, (size_t)kn, v, (size_t)vn)) {
            store_txn_end(t);
            return (void *)1;
        }
        if (store_txn_commit(t, STORE_DURABLE))
            return (void *)1;
    }
    return NULL;
}

Test(store, group_commit_concurrent_durable)
{
    struct store_stat before, after;
    store_stat(st, &before);
    pthread_t th[GC_THREADS];
    for (int i = 0; i < GC_THREADS; i++)
        pthread_create(&th[i], NULL, durable_writer, (void *)(intptr_t)i);
    for (int i = 0; i < GC_THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        cr_assert_null(ret, "writer %d failed", i);
    }
    store_stat(st, &after);
    uint64_t commits = after.durable_commits - before.durable_commits;
    uint64_t syncs = after.syncs - before.syncs;
    cr_assert_eq(commits, GC_THREADS * GC_COMMITS);
    cr_log_info("group commit: %llu durable commits, %llu fsyncs, %.2f commits per fsync",
                (unsigned long long)commits, (unsigned long long)syncs,
                syncs ? (double)commits / (double)syncs : 0.0);
    fprintf(stderr, "group commit: %llu durable commits, %llu fsyncs, %.2f commits per fsync\n",
            (unsigned long long)commits, (unsigned long long)syncs,
            syncs ? (double)commits / (double)syncs : 0.0);
    cr_assert_lt(syncs, commits, "concurrent durable commits must share fsyncs");
    cr_assert_gt(syncs, 0);
    reopen();
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_PROFILES), GC_THREADS * GC_COMMITS);
    for (int id = 0; id < GC_THREADS; id++)
        for (int i = 0; i < GC_COMMITS; i++) {
            char k[32], v[32];
            int kn = snprintf(k, sizeof k, "t%d-%03d", id, i);
            int vn = snprintf(v, sizeof v, "value %d %d", id, i);
            const void *x;
            size_t xl;
            cr_assert_eq(store_get(t, STORE_PROFILES, k, (size_t)kn, &x, &xl), 0, "%s lost", k);
            cr_assert_eq(xl, (size_t)vn);
            cr_assert_eq(memcmp(x, v, xl), 0);
        }
    store_txn_end(t);
}

Test(store, async_commits_are_synced_in_the_background)
{
    struct store_stat before, now;
    store_stat(st, &before);
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_COUNTERS, "c", 1, "1", 1), 0);
    cr_assert_eq(store_txn_commit(t, STORE_ASYNC), 0);
    /* sync_interval_ms = 50: a background fsync follows within ~100 ms */
    for (int i = 0; i < 100; i++) {
        store_stat(st, &now);
        if (now.syncs > before.syncs)
            break;
        usleep(20000);
    }
    cr_assert_gt(now.syncs, before.syncs, "the syncer never flushed an async commit");
}

/* ---- readers ---- */

static void *late_writer(void *arg)
{
    (void)arg;
    struct store_txn *t;
    if (store_wtxn_begin(st, &t))
        return (void *)1;
    if (store_put(t, STORE_PROFILES, "late", 4, "new", 3) ||
        store_put(t, STORE_PROFILES, "old", 3, "changed", 7)) {
        store_txn_end(t);
        return (void *)1;
    }
    return store_txn_commit(t, STORE_DURABLE) ? (void *)1 : NULL;
}

Test(store, read_txn_is_a_snapshot)
{
    put1(STORE_PROFILES, "old", "original");
    struct store_txn *r;
    cr_assert_eq(store_rtxn_begin(st, &r), 0);
    const void *v;
    size_t vl;
    cr_assert_eq(store_get(r, STORE_PROFILES, "old", 3, &v, &vl), 0);
    pthread_t th;
    pthread_create(&th, NULL, late_writer, NULL);
    void *ret;
    pthread_join(th, &ret);
    cr_assert_null(ret);
    /* same snapshot: the commit is invisible, the old value unchanged */
    cr_assert_eq(store_get(r, STORE_PROFILES, "late", 4, &v, &vl), ERR_NOTFOUND);
    cr_assert_eq(store_get(r, STORE_PROFILES, "old", 3, &v, &vl), 0);
    cr_assert_eq(vl, 8);
    cr_assert_eq(memcmp(v, "original", 8), 0);
    store_txn_end(r);
    /* renewed: sees it */
    cr_assert_eq(store_rtxn_begin(st, &r), 0);
    cr_assert_eq(store_get(r, STORE_PROFILES, "late", 4, &v, &vl), 0);
    cr_assert_eq(store_get(r, STORE_PROFILES, "old", 3, &v, &vl), 0);
    cr_assert_eq(memcmp(v, "changed", 7), 0);
    store_txn_end(r);
}

/* Readers on many threads while a writer commits: every read sees either
 * the complete old or the complete new pair, never a mix. */
static volatile int stop_readers;

static void *pair_reader(void *arg)
{
    (void)arg;
    long bad = 0;
    while (!__atomic_load_n(&stop_readers, __ATOMIC_RELAXED)) {
        struct store_txn *t;
        if (store_rtxn_begin(st, &t))
            return (void *)1;
        const void *a, *b;
        size_t al, bl;
        if (store_get(t, STORE_PROFILES, "pa", 2, &a, &al) == 0 &&
            store_get(t, STORE_PROFILES, "pb", 2, &b, &bl) == 0)
            bad += al != bl || memcmp(a, b, al) != 0;
        store_txn_end(t);
    }
    return bad ? (void *)1 : NULL;
}

Test(store, concurrent_readers_see_whole_commits)
{
    stop_readers = 0;
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, pair_reader, NULL);
    for (int i = 0; i < 300; i++) {
        char v[16];
        int n = snprintf(v, sizeof v, "gen%d", i);
        struct store_txn *t;
        cr_assert_eq(store_wtxn_begin(st, &t), 0);
        cr_assert_eq(store_put(t, STORE_PROFILES, "pa", 2, v, (size_t)n), 0);
        cr_assert_eq(store_put(t, STORE_PROFILES, "pb", 2, v, (size_t)n), 0);
        cr_assert_eq(store_txn_commit(t, STORE_ASYNC), 0);
    }
    __atomic_store_n(&stop_readers, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        cr_assert_null(ret, "reader %d saw a torn commit or failed", i);
    }
}

/* A thread's cached read txn belongs to one store: after that store is
 * closed and another opened (possibly at the same address), the thread
 * must get a fresh transaction on the new store. */
static void *reader_across_reopen(void *arg)
{
    (void)arg;
    struct store_txn *t;
    if (store_rtxn_begin(st, &t))
        return (void *)1;
    store_txn_end(t);
    return NULL;
}

struct reopen_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int phase; /* 0 start, 1 first read done, 2 store reopened, 3 second read done */
    int result;
};

static void *long_lived_reader(void *arg)
{
    struct reopen_ctx *c = arg;
    struct store_txn *t;
    const void *v;
    size_t vl;
    int ok = store_rtxn_begin(st, &t) == 0 && store_get(t, STORE_PROFILES, "k", 1, &v, &vl) == 0 &&
             vl == 5 && !memcmp(v, "first", 5);
    if (ok)
        store_txn_end(t);
    pthread_mutex_lock(&c->mu);
    c->phase = 1;
    pthread_cond_broadcast(&c->cv);
    while (c->phase != 2)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    int ok2 = store_rtxn_begin(st, &t) == 0;
    if (ok2) {
        ok2 = store_get(t, STORE_PROFILES, "k", 1, &v, &vl) == 0 && vl == 6 &&
              !memcmp(v, "second", 6);
        store_txn_end(t);
    }
    pthread_mutex_lock(&c->mu);
    c->result = ok && ok2;
    c->phase = 3;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

Test(store, thread_cached_reader_survives_store_reopen)
{
    put1(STORE_PROFILES, "k", "first");
    struct reopen_ctx c = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
    pthread_t th;
    pthread_create(&th, NULL, long_lived_reader, &c);
    pthread_mutex_lock(&c.mu);
    while (c.phase != 1)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    /* close and open a different environment while the thread lives on */
    store_close(st);
    char dir2[256];
    tfx_tmpdir(dir2, sizeof dir2);
    struct store_opts o = { .dir = dir2 };
    cr_assert_eq(store_open(&o, &st), 0);
    put1(STORE_PROFILES, "k", "second");
    pthread_mutex_lock(&c.mu);
    c.phase = 2;
    pthread_cond_broadcast(&c.cv);
    while (c.phase != 3)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    pthread_join(th, NULL);
    cr_assert(c.result, "the thread read through a stale transaction");
    /* the short-lived helper is harmless too */
    pthread_create(&th, NULL, reader_across_reopen, NULL);
    void *ret;
    pthread_join(th, &ret);
    cr_assert_null(ret);
    store_close(st);
    tfx_rmrf(dir2);
    open_store(0); /* teardown closes the original directory's store */
}

/* ---- limits ---- */

struct keycase {
    size_t klen;
    int put_rc;
};

ParameterizedTestParameters(store, key_lengths)
{
    static struct keycase cases[] = {
        { 0, ERR_TOOBIG }, { 1, 0 }, { 64, 0 }, { 510, 0 }, { 511, 0 },
        { 512, ERR_TOOBIG }, { 513, ERR_TOOBIG }, { 4096, ERR_TOOBIG }, { 1 << 20, ERR_TOOBIG },
    };
    return cr_make_param_array(struct keycase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct keycase *c, store, key_lengths)
{
    char *k = malloc(c->klen + 1);
    memset(k, 'k', c->klen);
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_PROFILES, k, c->klen, "v", 1), c->put_rc, "klen %zu", c->klen);
    void *dst;
    cr_assert_eq(store_reserve(t, STORE_PROFILES, k, c->klen, 1, &dst), c->put_rc, "reserve klen %zu",
                 c->klen);
    if (c->put_rc == 0)
        *(char *)dst = 'w';
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0, "a refused key does not poison the txn");
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    const void *v;
    size_t vl;
    int grc = store_get(t, STORE_PROFILES, k, c->klen, &v, &vl);
    cr_assert_eq(grc, c->put_rc ? ERR_NOTFOUND : 0);
    if (!grc)
        cr_assert_eq(*(const char *)v, 'w');
    store_txn_end(t);
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_del(t, STORE_PROFILES, k, c->klen), c->put_rc ? ERR_NOTFOUND : 0);
    store_txn_end(t);
    free(k);
}

/* A tiny map capped at its size (map_max) fills up: the failing commit
 * reports ERR_FULL, everything committed before is intact, and the store
 * keeps serving reads and writes that fit (after making room). */
static void map_full(void)
{
    store_close(st);
    tfx_rmrf(dir);
    tfx_tmpdir(dir, sizeof dir);
    map_max = (size_t)1 << 20;
    open_store((size_t)1 << 20); /* 1 MiB: 256 pages, and no more */
    static char val[8000];
    int committed = 0, rc = 0;
    for (int batch = 0; batch < 1000 && !rc; batch++) {
        struct store_txn *t;
        cr_assert_eq(store_wtxn_begin(st, &t), 0);
        for (int i = 0; i < 4 && !rc; i++) {
            char k[32];
            int n = snprintf(k, sizeof k, "k%05d", batch * 4 + i);
            memset(val, 'a' + (batch * 4 + i) % 26, sizeof val);
            rc = store_put(t, STORE_EVENTS, k, (size_t)n, val, sizeof val);
        }
        if (rc) {
            store_txn_end(t);
            break;
        }
        rc = store_txn_commit(t, STORE_DURABLE);
        if (!rc)
            committed += 4;
    }
    cr_assert_eq(rc, ERR_FULL, "expected ERR_FULL, got %s", err_str(rc));
    cr_assert_gt(committed, 20, "only %d records fit in 1 MiB", committed);
    struct store_stat s;
    cr_assert_eq(store_stat(st, &s), 0);
    cr_assert_geq(s.used_bytes * 10, s.map_size * 8, "map reported full at %zu of %zu bytes",
                  s.used_bytes, s.map_size);
    cr_assert_eq(s.map_size, map_max, "the map never grows past map_max");
    cr_assert_eq(s.growths, 0);
    cr_assert_gt(s.full_errors, 0, "the failed write is counted for /metrics");
    cr_assert_eq(store_grow(st), ERR_FULL, "nothing to grow into");
    /* every committed record is intact */
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_EVENTS), (size_t)committed);
    for (int i = 0; i < committed; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "k%05d", i);
        const void *v;
        size_t vl;
        cr_assert_eq(store_get(t, STORE_EVENTS, k, (size_t)n, &v, &vl), 0, "%s lost", k);
        cr_assert_eq(vl, sizeof val);
        cr_assert_eq(((const char *)v)[0], 'a' + i % 26);
        cr_assert_eq(((const char *)v)[vl - 1], 'a' + i % 26);
    }
    store_txn_end(t);
    /* make room, then a write fits again */
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    for (int i = 0; i < committed / 2; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "k%05d", i);
        cr_assert_eq(store_del(t, STORE_EVENTS, k, (size_t)n), 0);
    }
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0, "deleting from a full map");
    put1(STORE_PROFILES, "after", "full");
    cr_assert_str_eq(get1(STORE_PROFILES, "after", 5), "full");
    reopen();
    cr_assert_str_eq(get1(STORE_PROFILES, "after", 5), "full");
}

Test(store, map_full_writemap) { map_full(); }

Test(store, map_full_pwrite)
{
    no_writemap = 1;
    map_full();
}

/* ---- a map that grows ---- */

/* Writers, readers and a decide-like thread (a read txn kept open across
 * a write txn) on a 4 MiB map until 64 MiB are stored: the map grows many
 * times, no write fails, every read sees whole, correct records. */
enum { GW_WRITERS = 3, GW_READERS = 3, GW_START_MB = 4, GW_TARGET_MB = 64 };

struct grow_ctx {
    long committed[GW_WRITERS + 1]; /* records each writer has committed (atomic) */
    long bytes;                     /* value bytes committed (atomic) */
    int stop;                       /* atomic */
    long write_errors, read_errors, reads, nested; /* atomic */
    char first_error[160];
};
static struct grow_ctx gx;

/* record i of writer w: key "w<w>-<i>", 500-12,500 bytes derived from both */
static size_t grow_val(int w, long i, char *out, size_t cap)
{
    size_t len = 500 + (size_t)((i * 7919 + w * 104729) % 12000);
    if (len > cap)
        len = cap;
    for (size_t k = 0; k < len; k++)
        out[k] = (char)('a' + (k + (size_t)i + (size_t)w) % 26);
    return len;
}

static void grow_fail(long *counter, const char *what, int rc)
{
    if (__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED) == 0)
        snprintf(gx.first_error, sizeof gx.first_error, "%s: %s", what, err_str(rc));
}

static void *grow_writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    static __thread char val[12600];
    long i = 0;
    while (!__atomic_load_n(&gx.stop, __ATOMIC_RELAXED)) {
        struct store_txn *t;
        int rc = store_wtxn_begin(st, &t);
        if (rc) {
            grow_fail(&gx.write_errors, "wtxn_begin", rc);
            return NULL;
        }
        int n = 1 + (int)(i % 6), k;
        size_t bytes = 0;
        for (k = 0; k < n && !rc; k++) {
            char key[32];
            int kl = snprintf(key, sizeof key, "w%d-%ld", w, i + k);
            size_t vl = grow_val(w, i + k, val, sizeof val);
            rc = store_put(t, STORE_EVENTS, key, (size_t)kl, val, vl);
            bytes += vl;
        }
        if (rc) {
            store_txn_end(t);
            grow_fail(&gx.write_errors, "put", rc);
            return NULL;
        }
        rc = store_txn_commit(t, i % 5 ? STORE_ASYNC : STORE_DURABLE);
        if (rc) {
            grow_fail(&gx.write_errors, "commit", rc);
            return NULL;
        }
        i += n;
        __atomic_store_n(&gx.committed[w], i, __ATOMIC_RELEASE);
        __atomic_add_fetch(&gx.bytes, (long)bytes, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* Read a committed record of writer w and check it; with `nested`, keep
 * the snapshot open while a write txn counts the read (as decide keeps its
 * profile snapshot while it reserves caps). */
static void grow_read(unsigned *seed, int nested)
{
    static __thread char want[12600];
    int w = (int)(rand_r(seed) % GW_WRITERS);
    long n = __atomic_load_n(&gx.committed[w], __ATOMIC_ACQUIRE);
    if (!n)
        return;
    long i = (long)(rand_r(seed) % (unsigned)n);
    char key[32];
    int kl = snprintf(key, sizeof key, "w%d-%ld", w, i);
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc) {
        grow_fail(&gx.read_errors, "rtxn_begin", rc);
        return;
    }
    const void *v;
    size_t vl;
    size_t wl = grow_val(w, i, want, sizeof want);
    rc = store_get(t, STORE_EVENTS, key, (size_t)kl, &v, &vl);
    if (rc || vl != wl || memcmp(v, want, vl)) {
        grow_fail(&gx.read_errors, key, rc ? rc : ERR_PARSE);
    } else if (nested) {
        struct store_txn *wt;
        unsigned char cnt[8];
        long seen = __atomic_add_fetch(&gx.nested, 1, __ATOMIC_RELAXED);
        store_be64((uint64_t)seen, cnt);
        if ((rc = store_wtxn_begin(st, &wt)) == 0) {
            if ((rc = store_put(wt, STORE_COUNTERS, key, (size_t)kl, cnt, 8)))
                store_txn_end(wt);
            else
                rc = store_txn_commit(wt, STORE_ASYNC); /* frees wt on every path */
        }
        if (rc)
            grow_fail(&gx.write_errors, "nested write", rc);
        /* the snapshot still reads what it read before the write */
        const void *v2;
        size_t vl2;
        if (store_get(t, STORE_EVENTS, key, (size_t)kl, &v2, &vl2) || vl2 != wl || memcmp(v2, want, wl))
            grow_fail(&gx.read_errors, "snapshot after nested write", ERR_PARSE);
    }
    store_txn_end(t);
    __atomic_add_fetch(&gx.reads, 1, __ATOMIC_RELAXED);
}

static void *grow_reader(void *arg)
{
    unsigned seed = (unsigned)(intptr_t)arg * 2654435761u;
    int nested = (intptr_t)arg == 0;
    while (!__atomic_load_n(&gx.stop, __ATOMIC_RELAXED))
        grow_read(&seed, nested);
    return NULL;
}

static void map_grows_under_load(void)
{
    store_close(st);
    tfx_rmrf(dir);
    tfx_tmpdir(dir, sizeof dir);
    open_store((size_t)GW_START_MB << 20); /* no cap: it must grow */
    memset(&gx, 0, sizeof gx);
    pthread_t wt[GW_WRITERS], rt[GW_READERS];
    for (int i = 0; i < GW_WRITERS; i++)
        pthread_create(&wt[i], NULL, grow_writer, (void *)(intptr_t)i);
    for (int i = 0; i < GW_READERS; i++)
        pthread_create(&rt[i], NULL, grow_reader, (void *)(intptr_t)i);
    /* wait for the data (or a failure); the suite's timeout is the deadline */
    while (__atomic_load_n(&gx.bytes, __ATOMIC_RELAXED) < (long)GW_TARGET_MB << 20 &&
           !__atomic_load_n(&gx.write_errors, __ATOMIC_RELAXED) &&
           !__atomic_load_n(&gx.read_errors, __ATOMIC_RELAXED))
        usleep(10000);
    __atomic_store_n(&gx.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < GW_WRITERS; i++)
        pthread_join(wt[i], NULL);
    for (int i = 0; i < GW_READERS; i++)
        pthread_join(rt[i], NULL);
    cr_assert_eq(gx.write_errors, 0, "%ld failed writes, first: %s", gx.write_errors, gx.first_error);
    cr_assert_eq(gx.read_errors, 0, "%ld failed reads, first: %s", gx.read_errors, gx.first_error);
    cr_assert_gt(gx.reads, 0);
    cr_assert_gt(gx.nested, 0, "the decide-like reader wrote inside its snapshot");
    struct store_stat s;
    cr_assert_eq(store_stat(st, &s), 0);
    cr_assert_geq(s.map_size, (size_t)GW_TARGET_MB << 20, "map %zu bytes for %ld bytes of data", s.map_size,
                  gx.bytes);
    cr_assert_geq(s.growths, 4, "4 MiB to over 64 MiB is at least 4 doublings, saw %llu",
                  (unsigned long long)s.growths);
    cr_assert_eq(s.full_errors, 0, "no write ran out of room");
    cr_assert_gt(s.disk_size, 0, "the filesystem's size is known");
    /* everything committed is there, after a reopen too */
    for (int pass = 0; pass < 2; pass++) {
        static char want[12600];
        struct store_txn *t;
        cr_assert_eq(store_rtxn_begin(st, &t), 0);
        long total = 0;
        for (int w = 0; w < GW_WRITERS; w++) {
            for (long i = 0; i < gx.committed[w]; i++) {
                char key[32];
                int kl = snprintf(key, sizeof key, "w%d-%ld", w, i);
                const void *v;
                size_t vl, wl = grow_val(w, i, want, sizeof want);
                cr_assert_eq(store_get(t, STORE_EVENTS, key, (size_t)kl, &v, &vl), 0, "%s lost", key);
                cr_assert(vl == wl && !memcmp(v, want, wl), "%s damaged", key);
            }
            total += gx.committed[w];
        }
        cr_assert_eq(store_count(t, STORE_EVENTS), (size_t)total);
        store_txn_end(t);
        if (!pass)
            reopen();
    }
}

Test(store, map_grows_under_concurrent_writers_and_readers) { map_grows_under_load(); }

Test(store, map_grows_under_concurrent_writers_and_readers_pwrite)
{
    no_writemap = 1;
    map_grows_under_load();
}

/* A write too big for the map fails whole (ERR_FULL); store_grow() then
 * grows it and the same transaction, redone, fits. */
Test(store, store_grow_after_a_full_write)
{
    store_close(st);
    tfx_rmrf(dir);
    tfx_tmpdir(dir, sizeof dir);
    open_store((size_t)1 << 20);
    static char val[100000];
    memset(val, 'g', sizeof val);
    int tries = 0, rc;
    do {
        struct store_txn *t;
        cr_assert_eq(store_wtxn_begin(st, &t), 0);
        rc = 0;
        for (int i = 0; i < 40 && !rc; i++) { /* 4 MB in one txn */
            char k[16];
            int n = snprintf(k, sizeof k, "big%02d", i);
            rc = store_put(t, STORE_EVENTS, k, (size_t)n, val, sizeof val);
        }
        if (rc) {
            store_txn_end(t);
            cr_assert_eq(rc, ERR_FULL, "%s", err_str(rc));
            cr_assert_eq(store_grow(st), 0, "the map could not grow");
        } else {
            cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
        }
    } while (rc && ++tries < 10);
    cr_assert_eq(rc, 0, "4 MB never fit");
    cr_assert_gt(tries, 0, "a 1 MiB map cannot take 4 MB in one go");
    struct store_stat s;
    cr_assert_eq(store_stat(st, &s), 0);
    cr_assert_geq(s.map_size, (size_t)4 << 20, "the map grew to hold 4 MB");
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_EVENTS), 40);
    store_txn_end(t);
}

/* Commits that take a ticket (a reply held until its flush) let go of
 * the thread's pass like any commit: 8 MB through a 1 MiB map in such
 * commits, each waited for, all succeed and the map grows under them. */
Test(store, ticket_commits_let_the_map_grow)
{
    store_close(st);
    tfx_rmrf(dir);
    tfx_tmpdir(dir, sizeof dir);
    open_store((size_t)1 << 20);
    static char val[20000];
    memset(val, 't', sizeof val);
    enum { N = 400 };
    uint64_t last = 0;
    for (int i = 0; i < N; i++) {
        struct store_txn *t;
        int rc = store_wtxn_begin(st, &t);
        cr_assert_eq(rc, 0, "begin %d: %s", i, err_str(rc));
        char k[16];
        int n = snprintf(k, sizeof k, "tk%04d", i);
        rc = store_put(t, STORE_EVENTS, k, (size_t)n, val, sizeof val);
        if (rc) {
            store_txn_end(t);
            cr_assert_fail("put %d: %s", i, err_str(rc));
        }
        uint64_t ticket;
        rc = store_txn_commit_ticket(t, &ticket);
        cr_assert_eq(rc, 0, "commit %d: %s", i, err_str(rc));
        cr_assert_gt(ticket, last, "tickets follow the commit order");
        last = ticket;
        store_sync_wait(st, ticket);
        cr_assert_geq(store_synced(st), ticket);
    }
    struct store_stat s;
    cr_assert_eq(store_stat(st, &s), 0);
    cr_assert_gt(s.growths, 0, "the map grew");
    cr_assert_geq(s.map_size, (size_t)8 << 20, "the map holds the 8 MB");
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    cr_assert_eq(store_count(t, STORE_EVENTS), N);
    store_txn_end(t);
}

/* Another process (`promod import` next to a running server) grows the
 * map and writes past this process's map: this process adopts the size
 * on its next transaction, for reads and for writes. */
Test(store, adopts_a_map_grown_by_another_process)
{
    store_close(st);
    tfx_rmrf(dir);
    tfx_tmpdir(dir, sizeof dir);
    open_store((size_t)1 << 20);
    put1(STORE_PROFILES, "here-before", "1");
    char file[300];
    snprintf(file, sizeof file, "%s.ndjson", dir);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    for (int i = 0; i < 20000; i++) /* about 10 MB */
        fprintf(f, "{\"id\":\"other-%05d\",\"pad\":\"%0480d\"}\n", i, i);
    fclose(f);
    char *out = NULL;
    int rc = tfx_promod(&out, "import", "profiles", file, "--data", dir, (char *)NULL);
    unlink(file);
    cr_assert_eq(rc, 0, "import: %s", out);
    free(out);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0, "a read after the other process grew the map");
    cr_assert_eq(store_count(t, STORE_PROFILES), 20001);
    const void *v;
    size_t vl;
    cr_assert_eq(store_get(t, STORE_PROFILES, "other-19999", 11, &v, &vl), 0);
    store_txn_end(t);
    put1(STORE_PROFILES, "here-after", "2");
    cr_assert_str_eq(get1(STORE_PROFILES, "here-after", 10), "2");
    struct store_stat s;
    cr_assert_eq(store_stat(st, &s), 0);
    cr_assert_gt(s.map_size, (size_t)8 << 20, "the map follows the data");
}

Test(store, pwrite_mode_round_trip)
{
    store_close(st);
    no_writemap = 1;
    open_store(0);
    put1(STORE_PROFILES, "p", "pwrite");
    reopen();
    cr_assert_str_eq(get1(STORE_PROFILES, "p", 1), "pwrite");
    /* the same files open in the other mode */
    store_close(st);
    no_writemap = 0;
    open_store(0);
    cr_assert_str_eq(get1(STORE_PROFILES, "p", 1), "pwrite");
}

Test(store, stat_counts)
{
    put1(STORE_PROFILES, "a", "1");
    put1(STORE_PROFILES, "b", "2");
    put1(STORE_SEGMENTS, "s", "3");
    struct store_stat s;
    cr_assert_eq(store_stat(st, &s), 0);
    cr_assert_eq(s.entries[STORE_PROFILES], 2);
    cr_assert_eq(s.entries[STORE_SEGMENTS], 1);
    cr_assert_geq(s.entries[STORE_META], 1, "schema version");
    cr_assert_eq(s.map_size, (size_t)1 << 30);
    cr_assert_gt(s.used_bytes, 0);
    cr_assert_lt(s.used_bytes, s.map_size);
    cr_assert_geq(s.durable_commits, 3);
}

Test(store, open_errors)
{
    struct store *s2 = (struct store *)1;
    struct store_opts o = { .dir = "/proc/promod-cannot-create-here" };
    int rc = store_open(&o, &s2);
    cr_assert_lt(rc, 0);
    cr_assert_null(s2);
    char file[300];
    snprintf(file, sizeof file, "%s/plainfile", dir);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    fputs("x", f);
    fclose(f);
    struct store_opts o2 = { .dir = file };
    cr_assert_lt(store_open(&o2, &s2), 0, "a data dir that is a file");
    cr_assert_null(s2);
}

/* Sync hooks: each registered fn runs after a flush (the redemption writer
 * releases answers from one, held replies are sent from another); setting a
 * fn again replaces its ud; past STORE_SYNC_HOOKS the store says so. */
struct hook_seen {
    uint64_t synced_at_call; /* store_synced() when the hook last ran */
    long calls;
};
static void hook_a(void *ud)
{
    struct hook_seen *h = ud;
    __atomic_store_n(&h->synced_at_call, store_synced(st), __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST);
}
static void hook_b(void *ud) { hook_a(ud); }
static void hook_c(void *ud) { hook_a(ud); }
static void hook_d(void *ud) { hook_a(ud); }
static void hook_e(void *ud) { hook_a(ud); }

Test(store, sync_hooks_all_run_after_the_flush)
{
    /* static: the store's last flush, at close, still calls them */
    static struct hook_seen a, b, stale;
    cr_assert_eq(store_set_sync_hook(st, hook_a, &stale), 0);
    cr_assert_eq(store_set_sync_hook(st, hook_b, &b), 0);
    cr_assert_eq(store_set_sync_hook(st, hook_a, &a), 0, "the same fn again: a new ud, no new slot");
    cr_assert_eq(store_set_sync_hook(st, hook_c, &stale), 0);
    cr_assert_eq(store_set_sync_hook(st, hook_d, &stale), 0);
    cr_assert_eq(store_set_sync_hook(st, hook_e, &stale), ERR_FULL, "only %d slots", STORE_SYNC_HOOKS);
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_META, "hook", 4, "1", 1), 0);
    uint64_t ticket = 0;
    cr_assert_eq(store_txn_commit_ticket(t, &ticket), 0);
    cr_assert(ticket > 0);
    store_sync_wait(st, ticket);
    /* the hooks run on the syncer thread after the flush that woke the
     * waiter, before its next flush: one more durable commit, waited for,
     * proves they ran */
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_put(t, STORE_META, "hook", 4, "2", 1), 0);
    uint64_t ticket2 = 0;
    cr_assert_eq(store_txn_commit_ticket(t, &ticket2), 0);
    cr_assert(ticket2 > ticket);
    store_sync_wait(st, ticket2);
    cr_assert_geq(__atomic_load_n(&a.synced_at_call, __ATOMIC_SEQ_CST), ticket,
                  "hook a saw the flush covering the commit");
    cr_assert_geq(__atomic_load_n(&b.synced_at_call, __ATOMIC_SEQ_CST), ticket,
                  "hook b saw the flush covering the commit");
    cr_assert_eq(__atomic_load_n(&stale.synced_at_call, __ATOMIC_SEQ_CST) >= ticket &&
                     __atomic_load_n(&stale.calls, __ATOMIC_SEQ_CST) > 0,
                 1, "hooks c and d run too (sharing one record)");
}
