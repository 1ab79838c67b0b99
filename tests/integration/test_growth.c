/*
 * test_growth.c — a running server on a deliberately small map (16 MiB,
 * the smallest map_size_mb) takes five times that in profiles from
 * concurrent bulk imports and PUTs, while other connections read profiles
 * back and decide (a read snapshot kept open across the cap reservation's
 * write): the map grows, no request fails, every read is whole, and
 * /metrics shows the growth and the disk.  And a really full disk (a small
 * tmpfs in a user and mount namespace): writes answer 507, the server
 * stays up and keeps reading, /metrics and the log say why.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "fixture.h"

static struct tfx_server srv;

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(growth, .fini = teardown, .timeout = 600);

enum { IMPORTERS = 2, PUTTERS = 2, READERS = 2, BODY_PROFILES = 400, TARGET_MB = 80 };

static struct {
    long done[IMPORTERS + PUTTERS]; /* profiles acknowledged per writer (atomic) */
    long bytes;                     /* attribute bytes acknowledged (atomic) */
    long reads, decides, offers;    /* atomic */
    long failures;                  /* atomic */
    int stop;                       /* atomic */
    char first[300];
} g;

static void fail(const char *what, const struct tfx_resp *r)
{
    if (__atomic_fetch_add(&g.failures, 1, __ATOMIC_RELAXED) == 0)
        snprintf(g.first, sizeof g.first, "%s: %d %.200s", what, r->status, r->body ? r->body : "");
}

static int stopped(void)
{
    return __atomic_load_n(&g.stop, __ATOMIC_RELAXED) || __atomic_load_n(&g.failures, __ATOMIC_RELAXED);
}

/* profile i of writer w: a pad whose length and letter follow from both */
static int pad_len(int w, long i) { return 1000 + (int)((i * 131 + w * 17) % 2000); }
static char pad_chr(int w, long i) { return (char)('a' + (i + w) % 26); }

static void profile_json(struct buf *b, int w, long i)
{
    int n = pad_len(w, i);
    buf_printf(b, "{\"id\":\"g%d-%ld\",\"w\":%d,\"i\":%ld,\"pad\":\"", w, i, w, i);
    for (int k = 0; k < n; k++)
        buf_add(b, &(char){ pad_chr(w, i) }, 1);
    buf_adds(b, "\"}");
}

static void *importer(void *arg)
{
    int w = (int)(intptr_t)arg;
    long i = 0;
    struct buf b = BUF_INIT;
    while (!stopped()) {
        buf_reset(&b);
        long bytes = 0;
        for (int k = 0; k < BODY_PROFILES; k++) {
            profile_json(&b, w, i + k);
            buf_adds(&b, "\n");
            bytes += pad_len(w, i + k);
        }
        struct tfx_resp r;
        int st = tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n",
                          b.p, b.len, &r);
        if (st != 200 || json_integer_value(json_object_get(r.json, "imported")) != BODY_PROFILES)
            fail("import", &r);
        tfx_resp_free(&r);
        if (st != 200)
            break;
        i += BODY_PROFILES;
        __atomic_store_n(&g.done[w], i, __ATOMIC_RELEASE);
        __atomic_add_fetch(&g.bytes, bytes, __ATOMIC_RELAXED);
    }
    buf_free(&b);
    return NULL;
}

static void *putter(void *arg)
{
    int w = (int)(intptr_t)arg;
    long i = 0;
    struct buf b = BUF_INIT;
    while (!stopped()) {
        buf_reset(&b);
        profile_json(&b, w, i);
        char path[64];
        snprintf(path, sizeof path, "/api/v1/profiles/g%d-%ld", w, i);
        struct tfx_resp r;
        int st = tfx_http(&srv, "PUT", path, "Content-Type: application/json\r\n", b.p, b.len, &r);
        if (st != 201)
            fail("put", &r);
        tfx_resp_free(&r);
        if (st != 201)
            break;
        i++;
        __atomic_store_n(&g.done[w], i, __ATOMIC_RELEASE);
        __atomic_add_fetch(&g.bytes, pad_len(w, i - 1), __ATOMIC_RELAXED);
    }
    buf_free(&b);
    return NULL;
}

/* check one acknowledged profile as GET returns it */
static int check_profile(const json_t *p, int w, long i)
{
    const char *pad = json_string_value(json_object_get(p, "pad"));
    if (json_integer_value(json_object_get(p, "w")) != w || json_integer_value(json_object_get(p, "i")) != i ||
        !pad || (int)strlen(pad) != pad_len(w, i))
        return 0;
    for (const char *c = pad; *c; c++)
        if (*c != pad_chr(w, i))
            return 0;
    return 1;
}

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(intptr_t)arg * 2654435761u + 1;
    int decider = (intptr_t)arg == 0; /* one reader also decides */
    while (!stopped()) {
        int w = (int)(rand_r(&seed) % (IMPORTERS + PUTTERS));
        long n = __atomic_load_n(&g.done[w], __ATOMIC_ACQUIRE);
        if (!n)
            continue;
        long i = (long)(rand_r(&seed) % (unsigned)n);
        char path[64];
        snprintf(path, sizeof path, "/api/v1/profiles/g%d-%ld", w, i);
        struct tfx_resp r;
        int st = tfx_req(&srv, "GET", path, NULL, &r);
        if (st != 200 || !check_profile(r.json, w, i))
            fail(path, &r);
        tfx_resp_free(&r);
        __atomic_add_fetch(&g.reads, 1, __ATOMIC_RELAXED);
        if (decider) {
            char body[160];
            snprintf(body, sizeof body, "{\"customer_id\":\"g%d-%ld\",\"channel\":\"web\"}", w, i);
            st = tfx_req(&srv, "POST", "/api/v1/decide", body, &r);
            if (st != 200)
                fail("decide", &r);
            else
                __atomic_add_fetch(&g.offers, (long)json_array_size(json_object_get(r.json, "offers")),
                                   __ATOMIC_RELAXED);
            tfx_resp_free(&r);
            __atomic_add_fetch(&g.decides, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static double metric(const char *name)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double v = -1;
    cr_assert(tfx_metric(r.body, name, "", &v), "series %s missing", name);
    tfx_resp_free(&r);
    return v;
}

Test(growth, running_server_grows_its_map_without_a_failed_request)
{
    tfx_server_init(&srv, "map_size_mb = 16,\n  threads = 2,");
    /* a capped campaign: every served offer reserves in a write txn */
    tfx_write(&srv, "rules/g.lua",
              "return { id = 'g', channels = { 'web' }, priority = 50,\n"
              "  variants = { { id = 'A', content = { t = 'x {{first_name|y}}' } } },\n"
              "  caps = { customer = { { 1000, '7d' } } },\n"
              "  eligible = function(p, ctx) return true end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0);
    double map0 = metric("promod_lmdb_map_size_bytes");
    cr_assert_eq(map0, 16 << 20, "starts at map_size_mb");
    memset(&g, 0, sizeof g);
    pthread_t th[IMPORTERS + PUTTERS + READERS];
    int nt = 0;
    for (int w = 0; w < IMPORTERS; w++)
        pthread_create(&th[nt++], NULL, importer, (void *)(intptr_t)w);
    for (int w = IMPORTERS; w < IMPORTERS + PUTTERS; w++)
        pthread_create(&th[nt++], NULL, putter, (void *)(intptr_t)w);
    for (int k = 0; k < READERS; k++)
        pthread_create(&th[nt++], NULL, reader, (void *)(intptr_t)k);
    /* until five times the first map is stored (the suite's timeout is
     * the deadline) */
    while (__atomic_load_n(&g.bytes, __ATOMIC_RELAXED) < (long)TARGET_MB << 20 && !stopped())
        usleep(20000);
    __atomic_store_n(&g.stop, 1, __ATOMIC_RELAXED);
    for (int k = 0; k < nt; k++)
        pthread_join(th[k], NULL);
    cr_assert_eq(g.failures, 0, "%ld failed requests, first: %s", g.failures, g.first);
    cr_assert_gt(g.reads, 0);
    cr_assert_gt(g.decides, 0);
    cr_assert_gt(g.offers, 0, "decides served (and reserved) offers");
    double map1 = metric("promod_lmdb_map_size_bytes"), used = metric("promod_lmdb_used_bytes");
    cr_assert_gt(used, (double)((long)TARGET_MB << 20), "the data is in the store");
    cr_assert_gt(map1, used, "the map grew past the data: %.0f for %.0f", map1, used);
    double growths = metric("promod_lmdb_map_growths_total");
    fprintf(stderr, "growth: %ld profiles, %ld reads, %ld decides while the map grew %.0f times to %.0f MiB\n",
            g.done[0] + g.done[1] + g.done[2] + g.done[3], g.reads, g.decides, growths, map1 / 1048576);
    cr_assert_geq(growths, 2);
    cr_assert_eq(metric("promod_store_full_errors_total"), 0);
    cr_assert_gt(metric("promod_store_disk_free_bytes"), 0);
    cr_assert_gt(metric("promod_store_disk_size_bytes"), metric("promod_store_disk_free_bytes"));
    long total = 0;
    for (int w = 0; w < IMPORTERS + PUTTERS; w++)
        total += g.done[w];
    cr_assert_eq(metric("promod_profiles"), (double)total);
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "store map grown"), "the growth is logged");
    free(log);
    /* after a restart (the map opens at the size it grew to) */
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_geq(metric("promod_lmdb_map_size_bytes"), map1);
    cr_assert_eq(metric("promod_profiles"), (double)total);
    for (int w = 0; w < IMPORTERS + PUTTERS; w++) {
        long last = g.done[w] - 1;
        if (last < 0)
            continue;
        char path[64];
        snprintf(path, sizeof path, "/api/v1/profiles/g%d-%ld", w, last);
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", path);
        cr_assert(check_profile(r.json, w, last), "%s damaged", path);
        tfx_resp_free(&r);
    }
}

/* Start the server with its data directory on a 48 MiB tmpfs of its own
 * (unshare: a user and mount namespace, no privilege needed where user
 * namespaces are allowed).  Returns 0, or -1 when the namespace could not
 * be made (the test is then skipped). */
static int start_on_small_disk(void)
{
    char cmd[2048], portfile[320];
    snprintf(portfile, sizeof portfile, "%s/port", srv.dir);
    snprintf(cmd, sizeof cmd,
             "mount -t tmpfs -o size=48m tmpfs '%s' && exec '%s' serve -c '%s' --listen 127.0.0.1:0 "
             "--port-file '%s'",
             srv.data, PROMOD_BIN, srv.config, portfile);
    mkdir(srv.data, 0750);
    pid_t p = fork();
    cr_assert_geq(p, 0);
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(srv.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("unshare", "unshare", "-rm", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) { /* 10 s */
        FILE *f = fopen(portfile, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port > 0) {
            srv.pid = p;
            srv.port = port;
            return 0;
        }
        int st;
        if (waitpid(p, &st, WNOHANG) == p)
            return -1;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    return -1;
}

Test(growth, full_disk_answers_507_and_keeps_serving)
{
    tfx_server_init(&srv, NULL);
    if (start_on_small_disk()) {
        char *log = tfx_server_log(&srv);
        cr_log_info("no user/mount namespace here: %s", log ? log : "");
        free(log);
        cr_skip_test("needs unshare -rm (user namespaces) for a small filesystem");
    }
    struct buf b = BUF_INIT;
    int ok = 0, full = 0;
    for (long i = 0; i < 2000 && !full; i++) { /* 64 KB each: 48 MiB fill in ~750 */
        buf_reset(&b);
        buf_printf(&b, "{\"n\":%ld,\"pad\":\"", i);
        for (int k = 0; k < 65536; k++)
            buf_add(&b, &(char){ (char)('a' + i % 26) }, 1);
        buf_adds(&b, "\"}");
        char path[64];
        snprintf(path, sizeof path, "/api/v1/profiles/disk-%ld", i);
        struct tfx_resp r;
        int st = tfx_http(&srv, "PUT", path, "Content-Type: application/json\r\n", b.p, b.len, &r);
        if (st == 201) {
            ok++;
        } else {
            cr_assert_eq(st, 507, "PUT %ld: %d %s", i, st, r.body);
            cr_assert_str_eq(tfx_err_code(&r), "storage_full");
            full = 1;
        }
        tfx_resp_free(&r);
    }
    buf_free(&b);
    cr_assert(full, "48 MiB never filled");
    cr_assert_gt(ok, 100, "only %d profiles before the disk was full", ok);
    cr_assert(tfx_server_alive(&srv), "the server must not die of a full disk");
    /* reads keep working, everything acknowledged is there */
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/disk-0", NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "n")), 0);
    tfx_resp_free(&r);
    char last[64];
    snprintf(last, sizeof last, "/api/v1/profiles/disk-%d", ok - 1);
    cr_assert_eq(tfx_req(&srv, "GET", last, NULL, &r), 200);
    tfx_resp_free(&r);
    cr_assert_geq(metric("promod_store_full_errors_total"), 1);
    double size = metric("promod_store_disk_size_bytes"), avail = metric("promod_store_disk_free_bytes");
    cr_assert(size > 40e6 && size < 60e6, "the data dir's filesystem is the 48 MiB tmpfs: %.0f", size);
    cr_assert_lt(avail, 16e6, "free disk when writes are refused: %.0f", avail);
    cr_assert_eq(metric("promod_profiles"), (double)ok);
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "disk full, writes refused"), "%s", log);
    cr_assert(strstr(log, "disk space low for the store"), "warned before: %s", log);
    free(log);
}
