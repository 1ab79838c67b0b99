/* store_prewarm.c — after open, a background thread reads the used part of
 * data.mdb into the page cache (see store.h, store_opts.prewarm).
 *
 * Why: the map runs without readahead (MDB_NORDAHEAD, see store.c), so on
 * a store that is not in the page cache — after a reboot, or a restart
 * once the kernel dropped it — every first touch of a page is a major
 * fault: one synchronous 4 KiB disk read on the thread that touched it.
 * Lookups by key touch random pages, so a large store stays cold for a
 * long time: with a 2,000,000-code coupon pool (~570 MB) the HTTP workers
 * took 1.5 major faults per redemption for minutes after a start, and the
 * redemption writer faulted on the free pages it reused; redemptions ran
 * at 2,200/s cold against 6,300/s with the file cached, on the same
 * loaded machine (docs/promotions.md, "Performance").  Reading the file
 * page by page takes about a second for that store (1.3 s under load).
 *
 * How, without the large folios that MDB_NORDAHEAD avoids: reads of 1 MiB
 * (even through a descriptor with POSIX_FADV_RANDOM) were cached as large
 * folios on this kernel, and a flush then wrote 2-4.5 MB per redemption
 * instead of ~20 KB (measured: 576-962 redemptions/s against 2,269-2,503
 * without the prewarm).  So the thread asks for each page on its own:
 * POSIX_FADV_WILLNEED of one page (asynchronous, order-0 pages; the disk
 * merges the neighbours), then a second pass of one-page preads that
 * waits for them and reads any page the first pass missed.  Holes of the
 * sparse file are skipped (SEEK_DATA).  It reads at most half of the memory
 * available at start (MemAvailable in /proc/meminfo), so a store larger
 * than memory does not push out everything else, and stops when the
 * store closes.  It reads only: it takes no lock and no transaction, and
 * LMDB's pages it races with are at worst read twice.
 */
#include "store/store.h"
#include "store/store_internal.h"
#include "base/log.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct prewarm_arg {
    struct store *s;
    int fd;
    size_t end;
};

/* half of MemAvailable, in bytes; SIZE_MAX when it cannot be read */
static size_t memory_bound(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return SIZE_MAX;
    char line[128];
    size_t kb = 0;
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) {
            found = 1;
            break;
        }
    fclose(f);
    return found ? kb / 2 * 1024 : SIZE_MAX;
}

static void *prewarm_main(void *ud)
{
    struct prewarm_arg a = *(struct prewarm_arg *)ud;
    free(ud);
    struct store *s = a.s;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t bound = memory_bound(), done = 0;
    long ps = sysconf(_SC_PAGESIZE);
    size_t page = ps > 0 ? (size_t)ps : 4096;
    char *buf = malloc(page);
    int stopped = 0;
    /* pass 1 asks for every page, one page per call (the disk gets them
     * merged and in parallel); pass 2 reads each, one page per call,
     * which waits for pass 1's reads and reads what they missed */
    for (int pass = 0; pass < 2 && buf && !stopped; pass++) {
        off_t off = 0;
        done = 0;
        while ((size_t)off < a.end && done < bound) {
            if (__atomic_load_n(&s->prewarm_stop, __ATOMIC_RELAXED)) {
                stopped = 1;
                break;
            }
            off_t d = lseek(a.fd, off, SEEK_DATA); /* skip the holes of a sparse file */
            if (d < 0 || (size_t)d >= a.end)
                break;
            off_t h = lseek(a.fd, d, SEEK_HOLE);
            if (h < 0 || (size_t)h > a.end)
                h = (off_t)a.end;
            for (off = d; off < h && done < bound; off += (off_t)page) {
                if (pass == 0) {
                    posix_fadvise(a.fd, off, (off_t)page, POSIX_FADV_WILLNEED);
                } else {
                    ssize_t n = pread(a.fd, buf, page, off);
                    if (n <= 0 && !(n < 0 && errno == EINTR))
                        break;
                }
                done += page;
                if ((done & ((64u << 20) - 1)) == 0 &&
                    __atomic_load_n(&s->prewarm_stop, __ATOMIC_RELAXED)) {
                    stopped = 1;
                    break;
                }
            }
            if (stopped)
                break;
            off = h;
        }
        if (pass == 1)
            __atomic_store_n(&s->prewarm_bytes, (uint64_t)done, __ATOMIC_RELAXED);
    }
    free(buf);
    close(a.fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
    log_info("store prewarmed", "dir=\"%s\" mb=%zu ms=%ld%s", s->dir, done >> 20, ms,
             stopped ? " stopped=1" : done >= bound ? " memory_bound=1" : "");
    __atomic_store_n(&s->prewarm_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

int store_prewarm_start(struct store *s, size_t used)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", s->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM); /* exactly the pages read, as 4 KiB pages */
    struct prewarm_arg *a = malloc(sizeof *a);
    if (!a) {
        close(fd);
        return -ENOMEM;
    }
    a->s = s;
    a->fd = fd;
    a->end = used;
    __atomic_store_n(&s->prewarm_done, 0, __ATOMIC_RELAXED);
    int rc = pthread_create(&s->prewarmer, NULL, prewarm_main, a);
    if (rc) {
        free(a);
        close(fd);
        __atomic_store_n(&s->prewarm_done, 1, __ATOMIC_RELAXED);
        return -rc;
    }
    s->prewarm_started = 1;
    return 0;
}

void store_prewarm_stop(struct store *s)
{
    if (!s->prewarm_started)
        return;
    __atomic_store_n(&s->prewarm_stop, 1, __ATOMIC_RELAXED);
    pthread_join(s->prewarmer, NULL);
    s->prewarm_started = 0;
}

int store_prewarm_status(struct store *s, uint64_t *bytes)
{
    if (bytes)
        *bytes = __atomic_load_n(&s->prewarm_bytes, __ATOMIC_RELAXED);
    return __atomic_load_n(&s->prewarm_done, __ATOMIC_ACQUIRE);
}
