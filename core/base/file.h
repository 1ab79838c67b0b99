/**
 * @file file.h
 * @brief Small whole files, read and written the crash-safe way.
 *
 * Every definition file promod reads (rules, plugins, segments, models,
 * experiments, loyalty rules, config) is small and read whole; every one it
 * writes from the API is written to a hidden temp file beside its target,
 * fsync'd, renamed over the target and the directory fsync'd, so a crash
 * leaves either the old file or the new one, never a torn one, and a loader
 * scanning the folder never sees the temp file (names starting with '.').
 *
 * Threads: every function is reentrant; the temp-name counter is atomic.
 */
#ifndef PROMOD_FILE_H
#define PROMOD_FILE_H

#include <stddef.h>

/**
 * Read a regular file whole into a NUL-terminated heap buffer.
 * @param path  the file.
 * @param max   refuse files larger than this many bytes.
 * @param len   out: bytes read (the NUL is not counted).
 * @param rc    out, may be NULL: 0, -errno (open/stat), ERR_INVAL (not a
 *              regular file), ERR_TOOBIG (over `max`) or ERR_NOMEM.
 * @return the buffer (caller frees) or NULL with *rc set.
 */
char *file_read_all(const char *path, size_t max, size_t *len, int *rc);

/**
 * Write `data` to a hidden temp file beside `path` (".name.tmp-PID-N" in the
 * same directory) and fsync it; nothing is visible under `path` yet.
 * @param tmp    out: the temp file's path (give it at least strlen(path)+64).
 * @return 0, or -errno / ERR_TOOBIG with the temp file removed.
 */
int file_prepare(const char *path, const void *data, size_t len, char *tmp, size_t tmplen);

/**
 * Make a prepared temp file the new `path`: rename, then fsync the
 * directory so the rename itself survives a crash.
 * @return 0, or -errno with the temp file removed.
 */
int file_commit(const char *tmp, const char *path);

/** file_prepare() then file_commit(): replace `path` atomically and durably. */
int file_write_atomic(const char *path, const void *data, size_t len);

/** fsync the directory holding `path` (best effort). */
void file_fsync_dir_of(const char *path);

#endif
