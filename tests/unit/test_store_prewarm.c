/* test_store_prewarm.c — store_opts.prewarm: after open, a thread reads
 * the used part of data.mdb into the page cache (checked with mincore on
 * a map of the file after the cache was dropped), the store reads and
 * writes while it runs, close stops it, and without the option nothing
 * is read.  Real LMDB in a temporary directory. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "fixture.h"
#include "store/store.h"

static char dir[256], path[300];

static void setup(void)
{
    log_set_level(LOG_ERROR);
    tfx_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
}

static void teardown(void)
{
    tfx_rmrf(dir);
}

TestSuite(store_prewarm, .init = setup, .fini = teardown, .timeout = 120);

static struct store *open_with(int prewarm)
{
    struct store *s;
    struct store_opts o = { .dir = dir, .sync_interval_ms = 50, .prewarm = prewarm };
    int rc = store_open(&o, &s);
    cr_assert_eq(rc, 0, "store_open: %s", err_str(rc));
    return s;
}

/* `n` records of 2 KiB under keys k000000.. */
static void fill(struct store *s, int n)
{
    struct store_txn *t;
    cr_assert_eq(store_wtxn_begin(s, &t), 0);
    char v[2048];
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%06d", i);
        memset(v, 'a' + i % 26, sizeof v);
        cr_assert_eq(store_put(t, STORE_PROFILES, k, strlen(k), v, sizeof v), 0);
    }
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
}

/* the file's pages out of the page cache (on disk first: they are clean) */
static void drop_cache(void)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    fsync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* pages of [0, len) of the file in the page cache */
static size_t resident(size_t len)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    cr_assert_neq(m, MAP_FAILED);
    long ps = sysconf(_SC_PAGESIZE);
    size_t np = (len + (size_t)ps - 1) / (size_t)ps, n = 0;
    unsigned char *vec = malloc(np);
    cr_assert_eq(mincore(m, len, vec), 0);
    for (size_t i = 0; i < np; i++)
        n += vec[i] & 1;
    free(vec);
    munmap(m, len);
    close(fd);
    return n;
}

static size_t used_bytes(struct store *s)
{
    struct store_stat stt;
    cr_assert_eq(store_stat(s, &stt), 0);
    return stt.used_bytes;
}

/* wait for the prewarm to finish: a condition with a generous deadline */
static uint64_t wait_prewarm(struct store *s)
{
    uint64_t bytes = 0;
    for (int i = 0; i < 60000 && !store_prewarm_status(s, &bytes); i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL); /* polling a condition with a deadline */
    }
    cr_assert_eq(store_prewarm_status(s, &bytes), 1, "the prewarm did not finish within a minute");
    return bytes;
}

Test(store_prewarm, reads_the_used_file_into_the_page_cache)
{
    struct store *s = open_with(0);
    fill(s, 4000); /* ~8 MB */
    size_t used = used_bytes(s);
    store_close(s);
    cr_assert_gt(used, (size_t)8 << 20);
    drop_cache();

    s = open_with(1);
    uint64_t bytes = wait_prewarm(s);
    cr_assert_geq(bytes, (uint64_t)used / 2, "read %llu of %zu bytes", (unsigned long long)bytes, used);
    long ps = sysconf(_SC_PAGESIZE);
    size_t pages = used / (size_t)ps, in = resident(used);
    /* all of them, bar a few the kernel may have dropped meanwhile */
    cr_assert_geq(in, pages * 9 / 10, "%zu of %zu pages cached after the prewarm", in, pages);

    /* the store works as ever: read, write, reopen */
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(s, &t), 0);
    const void *v;
    size_t vl;
    cr_assert_eq(store_get(t, STORE_PROFILES, "k003999", 7, &v, &vl), 0);
    cr_assert_eq(vl, 2048);
    cr_assert_eq(((const char *)v)[0], 'a' + 3999 % 26);
    store_txn_end(t);
    fill(s, 10);
    store_close(s);
}

Test(store_prewarm, off_reads_nothing)
{
    struct store *s = open_with(0);
    fill(s, 100);
    uint64_t bytes = 1;
    cr_assert_eq(store_prewarm_status(s, &bytes), 1);
    cr_assert_eq(bytes, 0);
    store_close(s);
    s = open_with(0);
    cr_assert_eq(store_prewarm_status(s, &bytes), 1);
    cr_assert_eq(bytes, 0);
    store_close(s);
}

Test(store_prewarm, writes_during_the_prewarm_and_close_at_once)
{
    struct store *s = open_with(0);
    fill(s, 4000);
    store_close(s);
    for (int round = 0; round < 5; round++) {
        drop_cache();
        s = open_with(1);
        fill(s, 50); /* the writer and the reader of the file side by side */
        store_close(s); /* stops and joins the prewarm, wherever it is */
    }
    s = open_with(1);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(s, &t), 0);
    cr_assert_eq(store_count(t, STORE_PROFILES), 4000);
    store_txn_end(t);
    store_close(s);
}
