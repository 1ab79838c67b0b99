/*
 * fuzz_store.h — a throwaway LMDB store for the fuzz targets that write
 * (NDJSON import, events): in /dev/shm when there is one (fsync is then
 * free), removed at exit, and recreated every FUZZ_STORE_RUNS inputs or
 * when full, so a long run does not fill its map.
 */
#ifndef PROMOD_FUZZ_STORE_H
#define PROMOD_FUZZ_STORE_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/err.h"
#include "store/store.h"

#define FUZZ_STORE_RUNS 20000

static char fuzz_dir[256];
static struct store *fuzz_st;
static long fuzz_runs;

static void fuzz_store_rm(void)
{
    if (!fuzz_dir[0])
        return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
}

static void fuzz_store_close(void)
{
    if (fuzz_st)
        store_close(fuzz_st);
    fuzz_st = NULL;
    fuzz_store_rm();
    fuzz_dir[0] = 0;
}

/* The store for this input (opened, or recreated when due). */
static struct store *fuzz_store(int was_full)
{
    if (fuzz_st && !was_full && ++fuzz_runs % FUZZ_STORE_RUNS)
        return fuzz_st;
    static int registered;
    if (!registered) {
        atexit(fuzz_store_close);
        registered = 1;
    }
    fuzz_store_close();
    struct stat sb;
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/promod-fuzz-XXXXXX",
             stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(fuzz_dir))
        abort();
    struct store_opts o = { .dir = fuzz_dir, .map_size = (size_t)256 << 20 };
    if (store_open(&o, &fuzz_st))
        abort();
    return fuzz_st;
}

#endif
