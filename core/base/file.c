/* file.c — see file.h. */
#include "base/file.h"

#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long g_tmp_counter;

char *file_read_all(const char *path, size_t max, size_t *len, int *rc)
{
    int dummy;
    if (!rc)
        rc = &dummy;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = -errno;
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st)) {
        *rc = -errno;
        fclose(f);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 0) {
        *rc = ERR_INVAL;
        fclose(f);
        return NULL;
    }
    if ((unsigned long long)st.st_size > (unsigned long long)max) {
        *rc = ERR_TOOBIG;
        fclose(f);
        return NULL;
    }
    char *b = malloc((size_t)st.st_size + 1);
    if (!b) {
        *rc = ERR_NOMEM;
        fclose(f);
        return NULL;
    }
    size_t n = fread(b, 1, (size_t)st.st_size, f);
    fclose(f);
    b[n] = 0;
    *len = n;
    *rc = 0;
    return b;
}

void file_fsync_dir_of(const char *path)
{
    char d[4200];
    if (snprintf(d, sizeof d, "%s", path) >= (int)sizeof d)
        return;
    char *slash = strrchr(d, '/');
    const char *dir = ".";
    if (slash) {
        *slash = 0;
        dir = *d ? d : "/";
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int file_prepare(const char *path, const void *data, size_t len, char *tmp, size_t tmplen)
{
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path) : 0;
    const char *base = slash ? slash + 1 : path;
    unsigned long n = __atomic_add_fetch(&g_tmp_counter, 1, __ATOMIC_RELAXED);
    int w = slash ? snprintf(tmp, tmplen, "%.*s/.%s.tmp-%ld-%lu", dlen, path, base,
                             (long)getpid(), n)
                  : snprintf(tmp, tmplen, ".%s.tmp-%ld-%lu", base, (long)getpid(), n);
    if (w < 0 || (size_t)w >= tmplen)
        return ERR_TOOBIG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    const char *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t k = write(fd, p + off, len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int rc = k < 0 ? -errno : -EIO;
            close(fd);
            unlink(tmp);
            return rc;
        }
        off += (size_t)k;
    }
    int rc = fsync(fd) ? -errno : 0;
    if (close(fd) && !rc)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

int file_commit(const char *tmp, const char *path)
{
    if (rename(tmp, path)) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    file_fsync_dir_of(path);
    return 0;
}

int file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4400];
    int rc = file_prepare(path, data, len, tmp, sizeof tmp);
    return rc ? rc : file_commit(tmp, path);
}
