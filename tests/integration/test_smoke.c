/* test_smoke.c — the server starts, answers, decides and stops cleanly. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "rules/hello.lua",
              "return { id = 'hello', channels = { 'web' }, priority = 5,\n"
              "  variants = { { id = 'A', content = { headline = 'Hi {{first_name|you}}' } } },\n"
              "  eligible = function(p, ctx) return true end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(smoke, .init = setup, .fini = teardown, .timeout = 60);

Test(smoke, healthz_and_decide)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "ok");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/u1", "{\"first_name\":\"<Bo>\"}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                         "{\"customer_id\":\"u1\",\"channel\":\"web\"}", &r), 200);
    json_t *offers = json_object_get(r.json, "offers");
    cr_assert_eq(json_array_size(offers), 1);
    json_t *c = json_object_get(json_array_get(offers, 0), "content");
    cr_assert_str_eq(json_string_value(json_object_get(c, "headline")), "Hi &lt;Bo&gt;");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_server_stop(&srv), 0, "clean exit on SIGTERM");
}

/* A second server on a port that is already served is refused (the worker
 * sockets share the port with SO_REUSEPORT, which must not let another
 * process join and take half the connections). */
Test(smoke, a_second_server_on_the_same_port_is_refused)
{
    struct tfx_server two;
    tfx_server_init(&two, NULL);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", srv.port);
    cr_expect_eq(tfx_server_start_listen(&two, listen), -1, "second server must not start");
    char *log = tfx_server_log(&two);
    cr_expect(log && strstr(log, "in use"), "log says why: %s", log ? log : "(none)");
    free(log);
    tfx_server_cleanup(&two);
    struct tfx_resp r;
    cr_expect_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200, "the first one still answers");
    tfx_resp_free(&r);
}

static int open_conn(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    return fd;
}

/* One keep-alive GET /healthz on fd; 1 when it got a 200. */
static int ping(int fd)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        return 0;
    char b[4096];
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, b + n, sizeof b - 1 - n);
        if (k <= 0)
            return 0;
        n += (size_t)k;
        b[n] = 0;
        char *h = strstr(b, "\r\n\r\n");
        char *cl = strcasestr(b, "Content-Length:");
        if (h && cl && n >= (size_t)(h + 4 - b) + (size_t)atol(cl + 15))
            return strncmp(b, "HTTP/1.1 200", 12) == 0;
    }
}

/* 32 connections opened at once (what a load generator does) are spread
 * over the workers instead of all landing on the first one to wake. */
Test(smoke, a_burst_of_connections_is_spread_over_the_workers)
{
    tfx_server_stop(&srv);
    tfx_server_cleanup(&srv);
    tfx_server_init(&srv, "threads = 4,");
    cr_assert_eq(tfx_server_start(&srv), 0);
    int fds[32];
    for (int i = 0; i < 32; i++)
        fds[i] = open_conn(srv.port);
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < 32; i++)
            cr_assert(ping(fds[i]), "request on connection %d", i);
    for (int i = 0; i < 32; i++)
        close(fds[i]);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double total = 0, most = 0;
    for (int w = 0; w < 4; w++) {
        char labels[32];
        snprintf(labels, sizeof labels, "worker=\"%d\"", w);
        double v = 0;
        cr_expect(tfx_metric(r.body, "promod_worker_requests_total", labels, &v), "worker %d listed", w);
        cr_expect_gt(v, 0, "worker %d served some of the 160 requests", w);
        total += v;
        most = v > most ? v : most;
    }
    cr_expect_geq(total, 160);
    cr_expect_leq(most, 0.6 * total, "no worker took most of the load (%.0f of %.0f)", most, total);
    tfx_resp_free(&r);
}
