/*
 * fuzz_http.c — the HTTP request path, end to end in one process: the
 * real server (wire.c's reader, evhttp, the dispatcher, router, auth,
 * body limits, rate limits, every handler) on a loopback port with a real
 * store, rules, plugins, segments, experiments, loyalty files and the
 * console's files, one worker thread, wired as `promod serve` wires them (no
 * delivery thread: nothing here waits for a send).  Each input is written
 * raw on a fresh connection, the write side shut, and the answer read
 * until the server closes.  A crash or sanitizer report anywhere in the
 * server is a finding; so is an answer that is not HTTP/1.x (or is HTML),
 * a connection the server never closes (FUZZ_HTTP_WAIT_MS: a minute), or
 * a server that stops answering /healthz.
 *
 * Keys are configured (a decide key and an admin key, sha256 and plain) so
 * the auth paths run; the seed corpus uses them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/app.h"
#include "base/clock.h"
#include "base/log.h"
#include "engine/loyalty_rules.h"
#include "engine/rules.h"
#include "engine/segments.h"
#include "http/api.h"
#include "http/http.h"
#include "http/ratelimit.h"
#include "http/server.h"
#include "service/campaigns.h"
#include "service/exp_admin.h"
#include "store/store.h"

/* header_timeout is 1 s and every input ends with the client's EOF, so
 * the server closes at once; a minute leaves room for a starved (niced,
 * shared) machine before a connection counts as hung */
#define FUZZ_HTTP_WAIT_MS 60000

struct app *g_app;
static struct app app;
static char dir[256];
static int port;
static pthread_t main_thread;

static int worker_init(struct worker *w)
{
    struct rules_worker *rw;
    int rc = rules_worker_start(w->base, &rw);
    if (rc == 0)
        w->ctx = rw;
    return rc;
}

static void worker_fini(struct worker *w)
{
    http_held_thread_stop();
    rules_worker_stop(w->ctx);
    w->ctx = NULL;
}

static void *run_main(void *arg)
{
    (void)arg;
    server_run(app.srv);
    return NULL;
}

static void cleanup(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (dir[0] && system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", dir);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct stat sb;
    snprintf(dir, sizeof dir, "%s/promod-fuzz-http-XXXXXX", stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir))
        abort();
    atexit(cleanup);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/rules/lib' '%s/plugins' '%s/loyalty' '%s/experiments' '%s/segments' && "
             "cp -r '%s/plugins/.' '%s/plugins/' && "
             "cp -r '%s/rules/lib/.' '%s/rules/lib/' 2>/dev/null; cp -r '%s/loyalty/.' '%s/loyalty/' "
             "2>/dev/null; true",
             dir, dir, dir, dir, dir, PROMOD_SRC, dir, PROMOD_SRC, dir, PROMOD_SRC, dir);
    if (system(cmd) != 0)
        abort();
    /* one campaign, so decide has something to render */
    snprintf(cmd, sizeof cmd,
             "printf '%%s' \"return { id = 'fuzz', channels = { 'web' }, variants = { { id = 'A', "
             "content = { headline = 'Hi {{first_name|there}}' } } }, eligible = function(p, ctx) "
             "return true end }\" > '%s/rules/fuzz.lua'",
             dir);
    if (system(cmd) != 0)
        abort();
    config_defaults(&app.cfg);
    char src[3072], err[512];
    /* sha256("fuzz-admin-key-0123") for the admin key */
    char hex[65];
    config_key_hash_hex("fuzz-admin-key-0123", 19, hex);
    snprintf(src, sizeof src,
             "return { listen = '127.0.0.1:0', data_dir = '%s/data', rules_dir = '%s/rules',\n"
             "  plugins_dir = '%s/plugins', loyalty_dir = '%s/loyalty', web_dir = '%s/web',\n"
             "  experiments_dir = '%s/experiments', segments_dir = '%s/segments',\n"
             "  threads = 1, log_level = 'error', header_timeout = 1,\n"
             "  max_body_kb = 64, max_import_body_mb = 1, map_size_mb = 256,\n"
             "  api_keys = { { id = 'site', key = 'fuzz-decide-key-0123', role = 'decide' },\n"
             "               { id = 'ops', sha256 = '%s', role = 'admin' } } }",
             dir, dir, dir, dir, PROMOD_SRC, dir, dir, hex);
    if (config_load_source(&app.cfg, src, strlen(src), "fuzz.lua", err, sizeof err)) {
        fprintf(stderr, "fuzz config: %s\n", err);
        abort();
    }
    log_set_level(LOG_ERROR);
    g_app = &app;
    app.started_at = clock_now();
    struct store_opts so = { .dir = app.cfg.data_dir, .map_size = app.cfg.map_size };
    if (store_open(&so, &app.store))
        abort();
    campaigns_start(&app);
    if (segments_start(&app, 1)) /* before the rules: audiences name segments */
        abort();
    segments_metrics_init();
    if (rules_start(&app))
        abort();
    exp_admin_start(&app); /* experiments: after the rules, as in promod serve */
    loyalty_rules_start(&app.cfg);
    app_register_routes();
    ratelimit_init(&app.cfg);
    struct server_opts o = { .cfg = &app.cfg, .thread_init = worker_init, .thread_fini = worker_fini };
    if (server_start(&o, &app.srv))
        abort();
    rules_attach(&app, server_main_base(app.srv));
    port = server_port(app.srv);
    pthread_create(&main_thread, NULL, run_main, NULL);
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("fuzz: connect");
        abort();
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Write all, then read until the server closes; the bytes read, or -1
 * when the server kept the connection open past FUZZ_HTTP_WAIT_MS. */
static long exchange(const uint8_t *data, size_t size, char *first, size_t firstlen)
{
    int fd = connect_server();
    size_t off = 0;
    long got = 0;
    first[0] = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* closed under us (a refusal): read what it said */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    char buf[16384];
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, FUZZ_HTTP_WAIT_MS) != 1) {
            got = -1;
            break;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        if (got == 0)
            snprintf(first, firstlen, "%.*s", (int)(n < 64 ? n : 64), buf);
        got += n;
    }
    close(fd);
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_app)
        setup();
    char first[80];
    if (exchange(data, size, first, sizeof first) < 0) {
        fprintf(stderr, "fuzz: the server kept a connection open for %d ms\n", FUZZ_HTTP_WAIT_MS);
        abort();
    }
    /* an answer is an HTTP/1.x response (1.0 for a 1.0 request), never
     * libevent's HTML */
    if (first[0] && ((strncmp(first, "HTTP/1.1 ", 9) && strncmp(first, "HTTP/1.0 ", 9)) ||
                     strstr(first, "<HTML>"))) {
        fprintf(stderr, "fuzz: not an HTTP/1.x answer: %s\n", first);
        abort();
    }
    static long runs;
    if (++runs % 256)
        return 0;
    static const char hz[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (exchange((const uint8_t *)hz, sizeof hz - 1, first, sizeof first) <= 0 ||
        strncmp(first, "HTTP/1.1 200", 12)) {
        fprintf(stderr, "fuzz: /healthz no longer answers: %s\n", first);
        abort();
    }
    return 0;
}
