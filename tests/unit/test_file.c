/* test_file.c — core/base/file.c: whole-file reads with limits, and the
 * atomic, durable replace every definition-file writer uses. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/file.h"

TestSuite(file, .timeout = 60);

static char g_dir[256];

static void mkdir_tmp(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/promod-test-file-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

/* how many entries g_dir holds */
static int count_entries(void)
{
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void rm_tree(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            (void)(unlink(p) && rmdir(p));
    }
    if (d)
        closedir(d);
    rmdir(g_dir);
}

Test(file, write_then_read_round_trip_and_replace)
{
    mkdir_tmp();
    char p[600];
    snprintf(p, sizeof p, "%s/a.lua", g_dir);
    cr_assert_eq(file_write_atomic(p, "return 1\n", 9), 0);
    size_t len = 0;
    int rc = -1;
    char *s = file_read_all(p, 1024, &len, &rc);
    cr_assert_not_null(s);
    cr_expect_eq(rc, 0);
    cr_expect_eq(len, 9);
    cr_expect_str_eq(s, "return 1\n");
    free(s);
    /* replacing leaves exactly one file: no temp file behind */
    cr_assert_eq(file_write_atomic(p, "x", 1), 0);
    s = file_read_all(p, 1024, &len, NULL);
    cr_assert_not_null(s);
    cr_expect_str_eq(s, "x");
    free(s);
    cr_expect_eq(count_entries(), 1);
    /* an empty file reads as an empty string, not NULL */
    cr_assert_eq(file_write_atomic(p, "", 0), 0);
    s = file_read_all(p, 1024, &len, &rc);
    cr_assert_not_null(s);
    cr_expect_eq(len, 0);
    free(s);
    rm_tree();
}

Test(file, prepared_file_is_hidden_until_commit)
{
    mkdir_tmp();
    char p[600], tmp[700];
    snprintf(p, sizeof p, "%s/seg.lua", g_dir);
    cr_assert_eq(file_prepare(p, "abc", 3, tmp, sizeof tmp), 0);
    const char *base = strrchr(tmp, '/') + 1;
    cr_expect_eq(base[0], '.', "loaders skip dot files: %s", tmp);
    cr_expect_eq(strncmp(tmp, g_dir, strlen(g_dir)), 0, "same directory (rename is atomic)");
    struct stat st;
    cr_expect_neq(stat(p, &st), 0, "target not there before commit");
    cr_assert_eq(file_commit(tmp, p), 0);
    cr_expect_eq(stat(p, &st), 0);
    cr_expect_neq(stat(tmp, &st), 0, "temp gone after commit");
    /* two prepares of the same target never collide */
    char t1[700], t2[700];
    cr_assert_eq(file_prepare(p, "1", 1, t1, sizeof t1), 0);
    cr_assert_eq(file_prepare(p, "2", 1, t2, sizeof t2), 0);
    cr_expect_str_neq(t1, t2);
    unlink(t1);
    unlink(t2);
    /* a temp name that does not fit is refused, nothing created */
    char small[8];
    cr_expect_eq(file_prepare(p, "x", 1, small, sizeof small), ERR_TOOBIG);
    cr_expect_eq(count_entries(), 1);
    rm_tree();
}

Test(file, read_refuses_missing_oversized_and_non_regular)
{
    mkdir_tmp();
    char p[600];
    snprintf(p, sizeof p, "%s/big.lua", g_dir);
    char big[5000];
    memset(big, 'a', sizeof big);
    cr_assert_eq(file_write_atomic(p, big, sizeof big), 0);
    size_t len = 77;
    int rc = 0;
    cr_expect_null(file_read_all(p, 4999, &len, &rc));
    cr_expect_eq(rc, ERR_TOOBIG);
    cr_expect_eq(len, 77, "len untouched on failure");
    char *s = file_read_all(p, 5000, &len, &rc);
    cr_expect_not_null(s, "exactly the limit is allowed");
    cr_expect_eq(len, 5000);
    free(s);
    cr_expect_null(file_read_all(g_dir, 1 << 20, &len, &rc), "a directory is not a file");
    cr_expect_eq(rc, ERR_INVAL);
    snprintf(p, sizeof p, "%s/none.lua", g_dir);
    cr_expect_null(file_read_all(p, 1 << 20, &len, &rc));
    cr_expect_eq(rc, -ENOENT);
    cr_expect_null(file_read_all(p, 1 << 20, &len, NULL), "rc may be NULL");
    /* writing into a directory that does not exist fails cleanly */
    snprintf(p, sizeof p, "%s/no/such/dir.lua", g_dir);
    cr_expect_eq(file_write_atomic(p, "x", 1), -ENOENT);
    rm_tree();
}
