/*
 * test_import.c — `promod import profiles` stops and resumes: after a full
 * store, after Ctrl-C / SIGTERM, after kill -9; --resume continues from
 * the first line not stored (nothing loaded twice, nothing skipped),
 * --from-line from any line, a changed file is refused, a finished import
 * is not loaded again; and an import bigger than the configured map
 * completes because the map grows.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

static struct tfx_server srv;

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(import, .fini = teardown, .timeout = 300);

/* Line l of the test file: every 997th is broken JSON, every 1009th
 * blank, the others a ~560-byte profile "imp-<l>". */
static int line_kind(long l) { return l % 1009 == 0 ? 0 : l % 997 == 0 ? 2 : 1; } /* 0 blank, 1 good, 2 bad */

static void line_text(long l, char *out, size_t cap)
{
    switch (line_kind(l)) {
    case 0: snprintf(out, cap, "\n"); break;
    case 2: snprintf(out, cap, "{\"id\":\"bad-%ld\",\"x\":}\n", l); break;
    default: snprintf(out, cap, "{\"id\":\"imp-%06ld\",\"line\":%ld,\"pad\":\"%0520ld\"}\n", l, l, l);
    }
}

static long good_between(long from, long to) /* good lines in [from, to] */
{
    long n = 0;
    for (long l = from; l <= to; l++)
        n += line_kind(l) == 1;
    return n;
}

static void write_lines(const char *path, long lines)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "%s", path);
    char buf[700];
    for (long l = 1; l <= lines; l++) {
        line_text(l, buf, sizeof buf);
        fputs(buf, f);
    }
    fclose(f);
}

/* the server's config with other fields (same directories as tfx_server_init) */
static void write_config(const char *fields)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg,
             "return {\n  data_dir = \"%s\",\n  rules_dir = \"%s\",\n  plugins_dir = \"%s\",\n"
             "  threads = 2,\n  reload_debounce_ms = 50,\n  %s\n}\n",
             srv.data, srv.rules, srv.plugins, fields);
    tfx_write(&srv, "promod.lua", cfg);
}

/* an integer member of the JSON summary line ("imported": n ...) */
static long summary(const char *out, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(out, pat);
    cr_assert(p, "no %s in: %s", key, out);
    return strtol(p + strlen(pat), NULL, 10);
}

static long stopped_at(const char *out)
{
    const char *p = strstr(out, "import stopped at line ");
    cr_assert(p, "no stop message in: %s", out);
    return strtol(p + strlen("import stopped at line "), NULL, 10);
}

static double profiles_metric(void)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double v = -1;
    cr_assert(tfx_metric(r.body, "promod_profiles", "", &v));
    tfx_resp_free(&r);
    return v;
}

static int has_profile(long l)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/profiles/imp-%06ld", l);
    struct tfx_resp r;
    int st = tfx_req(&srv, "GET", path, NULL, &r);
    int ok = st == 200 && json_integer_value(json_object_get(r.json, "line")) == l;
    tfx_resp_free(&r);
    return ok;
}

/* The store is capped (map_max_mb): the import stops at a line and says
 * so; with the cap lifted, --resume stores exactly the rest; a third
 * --resume finds the file imported and loads nothing. */
Test(import, storage_full_then_resume)
{
    enum { LINES = 60000 }; /* ~33 MB of profiles: twice the capped map */
    tfx_server_init(&srv, "map_size_mb = 16,\n  map_max_mb = 16,");
    char file[400], want[500];
    snprintf(file, sizeof file, "%s/p.ndjson", srv.dir);
    write_lines(file, LINES);
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 1, "a full store stops the import: exit %d: %s", st, out);
    long n = stopped_at(out);
    cr_assert(n > 1000 && n < LINES, "stopped at line %ld", n);
    cr_assert(strstr(out, "storage full"), "%s", out);
    snprintf(want, sizeof want, "promod import profiles %s --resume (or --from-line %ld)", file, n);
    cr_assert(strstr(out, want), "no '%s' in: %s", want, out);
    long first = summary(out, "imported");
    cr_assert_eq(first, good_between(1, n - 1), "the lines before %ld are the stored ones", n);
    cr_assert_eq(summary(out, "next_line"), n);
    free(out);

    write_config("map_size_mb = 16,");
    st = tfx_promod(&out, "import", "profiles", file, "--resume", "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 3, "exit %d (bad lines after %ld): %s", st, n, out);
    snprintf(want, sizeof want, "resuming the import of %s at line %ld", file, n);
    cr_assert(strstr(out, want), "no '%s' in: %.2000s", want, out);
    long second = summary(out, "imported");
    cr_assert_eq(second, good_between(n, LINES), "resumed at %ld: only the rest is loaded", n);
    cr_assert_eq(summary(out, "first_line"), n);
    cr_assert(strstr(out, "\"complete\": true"), "%s", out);
    /* errors are reported with their own line numbers, and only once */
    long bad_after = (n / 997 + 1) * 997;
    while (line_kind(bad_after) != 2)
        bad_after += 997;
    snprintf(want, sizeof want, "%s:%ld: line 1 column", file, bad_after);
    cr_assert(strstr(out, want), "no '%s'", want);
    snprintf(want, sizeof want, "%s:997:", file);
    cr_assert_null(strstr(out, want), "line 997 was reported by the first run, not again");
    free(out);

    st = tfx_promod(&out, "import", "profiles", file, "--resume", "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 0, "exit %d: %s", st, out);
    cr_assert(strstr(out, "already imported completely"), "%s", out);
    cr_assert_eq(summary(out, "imported"), 0);
    cr_assert_eq(summary(out, "already_imported"), good_between(1, LINES));
    free(out);

    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(profiles_metric(), (double)good_between(1, LINES));
    cr_assert(has_profile(n - 1) || line_kind(n - 1) != 1);
    cr_assert(has_profile(LINES - 1));
}

/* A file twice the configured map: the import completes (the map grows). */
Test(import, bigger_than_the_map)
{
    enum { LINES = 60000 };
    tfx_server_init(&srv, "map_size_mb = 16,");
    char file[400];
    snprintf(file, sizeof file, "%s/p.ndjson", srv.dir);
    write_lines(file, LINES);
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 3, "exit %d: %s", st, out);
    cr_assert_eq(summary(out, "imported"), good_between(1, LINES));
    cr_assert(strstr(out, "store map grown"), "%s", out);
    free(out);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(profiles_metric(), (double)good_between(1, LINES));
}

Test(import, from_line_and_usage)
{
    enum { LINES = 3000 };
    tfx_server_init(&srv, NULL);
    char file[400], want[500];
    snprintf(file, sizeof file, "%s/p.ndjson", srv.dir);
    write_lines(file, LINES);
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", file, "--from-line", "1001", "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 3, "exit %d: %s", st, out);
    cr_assert_eq(summary(out, "imported"), good_between(1001, LINES));
    cr_assert_eq(summary(out, "first_line"), 1001);
    snprintf(want, sizeof want, "%s:1994: line 1 column", file); /* 2 x 997: numbered in the file */
    cr_assert(strstr(out, want), "no '%s' in %s", want, out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "--from-line", "3001", "-c", srv.config,
                            (char *)NULL), 0, "just past the end: nothing to do");
    cr_assert_eq(summary(out, "imported"), 0);
    free(out);
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "--from-line", "3002", "-c", srv.config,
                            (char *)NULL), 2);
    cr_assert(strstr(out, "has only 3000 lines"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "--from-line", "0", "-c", srv.config,
                            (char *)NULL), 2);
    free(out);
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "--resume", "--from-line", "5", "-c",
                            srv.config, (char *)NULL), 2);
    cr_assert(strstr(out, "usage:"), "%s", out);
    free(out);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert(!has_profile(1000));
    cr_assert(has_profile(1001));
    cr_assert_eq(profiles_metric(), (double)good_between(1001, LINES));
}

/* --resume refuses a file that changed since its import; a plain import
 * is always possible. */
Test(import, resume_refuses_a_changed_file)
{
    tfx_server_init(&srv, NULL);
    char file[400];
    snprintf(file, sizeof file, "%s/p.ndjson", srv.dir);
    write_lines(file, 100);
    char *out = NULL;
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL), 0, "%s", out);
    free(out);
    FILE *f = fopen(file, "a");
    cr_assert(f);
    fputs("{\"id\":\"appended\"}\n", f);
    fclose(f);
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "--resume", "-c", srv.config, (char *)NULL), 2);
    cr_assert(strstr(out, "changed since it was imported completely"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL), 0, "%s", out);
    cr_assert_eq(summary(out, "imported"), good_between(1, 100) + 1);
    free(out);
}

/* ---- imports from a FIFO, stopped while they run ---- */

struct bg {
    pid_t pid;
    char out[400];
};

static void bg_import(struct bg *b, const char *input, const char *extra)
{
    static int seq;
    snprintf(b->out, sizeof b->out, "%s/import-%d.out", srv.dir, ++seq);
    unlink(b->out);
    b->pid = fork();
    cr_assert_geq(b->pid, 0);
    if (b->pid == 0) {
        int fd = open(b->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (extra)
            execl(PROMOD_BIN, PROMOD_BIN, "import", "profiles", input, extra, "-c", srv.config, (char *)NULL);
        else
            execl(PROMOD_BIN, PROMOD_BIN, "import", "profiles", input, "-c", srv.config, (char *)NULL);
        _exit(127);
    }
}

static int bg_wait(struct bg *b, char **out)
{
    int st = 0;
    waitpid(b->pid, &st, 0);
    FILE *f = fopen(b->out, "r");
    cr_assert(f);
    char *text = calloc(1, 1 << 20);
    size_t n = fread(text, 1, (1 << 20) - 1, f);
    text[n] = 0;
    fclose(f);
    *out = text;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* write lines [from, to] into an open FIFO */
static void feed(FILE *w, long from, long to)
{
    char buf[700];
    for (long l = from; l <= to; l++) {
        line_text(l, buf, sizeof buf);
        if (fputs(buf, w) == EOF)
            break;
    }
    fflush(w);
}

/* wait (generous deadline) until the server sees profile imp-<l> */
static int wait_profile(long l)
{
    for (int i = 0; i < 1200; i++) {
        if (has_profile(l))
            return 1;
        usleep(50000);
    }
    return 0;
}

/* kill -9 in the middle of an import (fed through a FIFO, watched by a
 * running server on the same store): --resume, fed the same lines again,
 * starts at the first line the killed run did not commit. */
Test(import, killed_import_resumes_from_its_progress_record)
{
    enum { LINES = 60000 };
    signal(SIGPIPE, SIG_IGN);
    tfx_server_init(&srv, "map_size_mb = 16,");
    cr_assert_eq(tfx_server_start(&srv), 0);
    char fifo[400];
    snprintf(fifo, sizeof fifo, "%s/in.fifo", srv.dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    struct bg b;
    bg_import(&b, fifo, NULL);
    FILE *w = fopen(fifo, "w");
    cr_assert(w);
    feed(w, 1, 32000); /* two 8 MiB blocks: the first gets written */
    cr_assert(wait_profile(1), "the first block never became visible");
    kill(b.pid, SIGKILL);
    char *out;
    cr_assert_eq(bg_wait(&b, &out), -SIGKILL);
    free(out);
    fclose(w);
    double stored = profiles_metric();
    cr_assert_gt(stored, 0);

    bg_import(&b, fifo, "--resume");
    w = fopen(fifo, "w");
    cr_assert(w);
    feed(w, 1, LINES); /* the same lines again, from the start */
    fclose(w);
    int st = bg_wait(&b, &out);
    cr_assert_eq(st, 3, "exit %d: %s", st, out);
    const char *p = strstr(out, "at line ");
    cr_assert(p && strstr(out, "resuming the import of"), "%s", out);
    long n = strtol(p + 8, NULL, 10);
    cr_assert_gt(n, 1);
    cr_assert_eq(stored, (double)good_between(1, n - 1), "the killed run stored exactly the lines before %ld", n);
    cr_assert_eq(summary(out, "imported"), good_between(n, LINES), "%s", out);
    free(out);
    cr_assert_eq(profiles_metric(), (double)good_between(1, LINES));
    cr_assert(has_profile(LINES - 1));
}

/* SIGTERM (as Ctrl-C) stops an import cleanly at a block boundary: it
 * says where, and --from-line continues from there on the file. */
Test(import, interrupted_import_says_where_it_stopped)
{
    enum { LINES = 40000 };
    signal(SIGPIPE, SIG_IGN);
    tfx_server_init(&srv, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0);
    char fifo[400], file[400];
    snprintf(fifo, sizeof fifo, "%s/in.fifo", srv.dir);
    snprintf(file, sizeof file, "%s/p.ndjson", srv.dir);
    write_lines(file, LINES);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    struct bg b;
    bg_import(&b, fifo, NULL);
    FILE *w = fopen(fifo, "w");
    cr_assert(w);
    feed(w, 1, 32000);
    cr_assert(wait_profile(1));
    kill(b.pid, SIGTERM); /* the import now waits for more input: the signal wakes it */
    char *out;
    int st = bg_wait(&b, &out);
    fclose(w);
    cr_assert_eq(st, 1, "exit %d: %s", st, out);
    long n = stopped_at(out);
    cr_assert(strstr(out, "interrupted"), "%s", out);
    cr_assert_eq(summary(out, "imported"), good_between(1, n - 1));
    free(out);
    cr_assert_eq(profiles_metric(), (double)good_between(1, n - 1));
    char from[32];
    snprintf(from, sizeof from, "%ld", n);
    st = tfx_promod(&out, "import", "profiles", file, "--from-line", from, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 3, "exit %d: %s", st, out);
    cr_assert_eq(summary(out, "imported"), good_between(n, LINES));
    free(out);
    cr_assert_eq(profiles_metric(), (double)good_between(1, LINES));
}
