/*
 * test_http_edges.c — the connection reader in front of evhttp (wire.c),
 * over raw sockets: request smuggling shapes refused, every refusal in
 * the contract's JSON shape (never libevent's HTML), heads that trickle
 * cut off after header_timeout, a refused upload still reading its answer,
 * merge-patch on PATCH, and no connection left behind.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    /* small limits so the refusals are cheap to reach; a short head timeout */
    tfx_server_init(&srv, "max_body_kb = 64, max_import_body_mb = 1, max_header_kb = 8,\n"
                          "  header_timeout = 1, request_timeout = 30,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(http_edges, .init = setup, .fini = teardown, .timeout = 120);

/* A raw reply split into status, headers and JSON body. */
struct raw_reply {
    int status;
    char *all;
    const char *body;
    json_t *json;
};

static void parse_reply(char *all, struct raw_reply *r)
{
    memset(r, 0, sizeof *r);
    r->all = all;
    if (sscanf(all, "HTTP/1.1 %d", &r->status) != 1)
        r->status = 0;
    char *sep = strstr(all, "\r\n\r\n");
    r->body = sep ? sep + 4 : "";
    r->json = json_loads(r->body, JSON_DISABLE_EOF_CHECK, NULL);
}

static void reply_free(struct raw_reply *r)
{
    free(r->all);
    json_decref(r->json);
}

static int raw(const char *data, size_t len, struct raw_reply *r)
{
    parse_reply(tfx_raw(&srv, data, len), r);
    return r->status;
}

static const char *code_of(const struct raw_reply *r)
{
    const char *c = json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
    return c ? c : "";
}

/* the contract's error object, JSON content type, and a closed connection */
static void expect_refusal(const char *what, const char *data, size_t len, int status, const char *code)
{
    struct raw_reply r;
    raw(data, len, &r);
    cr_assert_eq(r.status, status, "%s: %d, want %d: %.300s", what, r.status, status, r.all);
    cr_assert(strstr(r.all, "Content-Type: application/json"), "%s: not JSON: %.300s", what, r.all);
    cr_assert(!strstr(r.all, "<HTML>") && !strstr(r.all, "<html>"), "%s: HTML reply", what);
    cr_assert_str_eq(code_of(&r), code, "%s: %.300s", what, r.all);
    json_t *e = json_object_get(r.json, "error");
    cr_assert(json_is_string(json_object_get(e, "message")), "%s: no message", what);
    cr_assert(json_object_get(e, "field"), "%s: no field member", what);
    cr_assert(strstr(r.all, "Connection: close"), "%s: connection not closed", what);
    reply_free(&r);
}

static void expect_healthy(void)
{
    cr_assert(tfx_server_alive(&srv), "server died");
    struct tfx_resp h;
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &h), 200);
    tfx_resp_free(&h);
}

static json_t *get_profile(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    struct tfx_resp r;
    tfx_req(&srv, "GET", path, NULL, &r);
    json_t *v = r.status == 200 ? json_incref(r.json) : NULL;
    tfx_resp_free(&r);
    return v;
}

#define S(x) x, sizeof x - 1

/* ---- request smuggling ---- */

Test(http_edges, conflicting_content_length_refused)
{
    expect_refusal("two lengths", S("PUT /api/v1/profiles/cl1 HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}"),
                   400, "bad_content_length");
    /* a proxy reading the second length would take the rest as the body;
     * we took the first before: now neither, and the smuggled request is
     * never run */
    expect_refusal("smuggled", S("POST /api/v1/events HTTP/1.1\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 0\r\nContent-Length: 58\r\n\r\n"
                                 "PUT /api/v1/profiles/smuggled HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
                   400, "bad_content_length");
    cr_assert_null(get_profile("smuggled"), "the smuggled request ran");
    cr_assert_null(get_profile("cl1"));
    expect_refusal("length and chunked", S("PUT /api/v1/profiles/cl2 HTTP/1.1\r\nContent-Length: 2\r\n"
                                           "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
                   400, "bad_framing");
    expect_refusal("chunked twice", S("PUT /api/v1/profiles/cl3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
                   400, "bad_framing");
    expect_refusal("other coding", S("PUT /api/v1/profiles/cl4 HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n"
                                     "\r\n2\r\n{}\r\n0\r\n\r\n"),
                   501, "unsupported_transfer_encoding");
    expect_refusal("length not a number", S("PUT /api/v1/profiles/cl5 HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}"),
                   400, "bad_content_length");
    expect_refusal("length list", S("PUT /api/v1/profiles/cl6 HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}"),
                   400, "bad_content_length");
    expect_refusal("HEAD with a body", S("HEAD /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), 400,
                   "bad_framing");
    expect_refusal("reserved header", S("GET /healthz HTTP/1.1\r\nX-Promod-Reject: 1 0\r\n\r\n"), 400,
                   "bad_header");
    for (int i = 1; i <= 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "cl%d", i);
        cr_assert_null(get_profile(id), "%s was stored", id);
    }
    /* the same length twice is one length */
    struct raw_reply r;
    raw(S("PUT /api/v1/profiles/cl7 HTTP/1.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
          "Content-Length: 9\r\nContent-Length: 9\r\n\r\n{\"a\": 17}"),
        &r);
    cr_assert_eq(r.status, 201, "%s", r.all);
    reply_free(&r);
    json_t *p = get_profile("cl7");
    cr_assert_eq(json_integer_value(json_object_get(p, "a")), 17);
    json_decref(p);
    expect_healthy();
}

/* A pipelined request behind a refused one is never read. */
Test(http_edges, nothing_after_a_refusal_runs)
{
    expect_refusal("then a PUT", S("GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                                   "PUT /api/v1/profiles/after HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
                   400, "bad_content_length");
    cr_assert_null(get_profile("after"));
    /* while good pipelined requests are all answered, in order */
    struct raw_reply r;
    raw(S("PUT /api/v1/profiles/p1 HTTP/1.1\r\nContent-Length: 8\r\n\r\n{\"n\": 1}"
          "PATCH /api/v1/profiles/p1 HTTP/1.1\r\nContent-Length: 8\r\n\r\n{\"m\": 2}"
          "GET /api/v1/profiles/p1 HTTP/1.1\r\nConnection: close\r\n\r\n"),
        &r);
    cr_assert_eq(r.status, 201, "%s", r.all);
    const char *second = strstr(r.all + 1, "HTTP/1.1 200");
    cr_assert(second && strstr(second + 1, "HTTP/1.1 200"), "three answers: %s", r.all);
    cr_assert(strstr(r.all, "\"m\":2") && strstr(r.all, "\"n\":1"), "%s", r.all);
    reply_free(&r);
}

/* ---- what libevent used to answer in HTML ---- */

Test(http_edges, oversized_and_malformed_in_json)
{
    /* 100 KB URL, 100 KB of headers (max_header_kb = 8) */
    size_t n = 100 * 1024;
    char *big = malloc(n + 256);
    int l = snprintf(big, 64, "GET /");
    memset(big + l, 'a', n);
    l += (int)n;
    l += snprintf(big + l, 64, " HTTP/1.1\r\n\r\n");
    expect_refusal("100 KB URL", big, (size_t)l, 414, "uri_too_long");
    l = snprintf(big, 64, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; l < (int)n; i++)
        l += snprintf(big + l, 64, "X-Filler-%d: %040d\r\n", i, i);
    l += snprintf(big + l, 8, "\r\n");
    expect_refusal("100 KB of headers", big, (size_t)l, 431, "header_too_large");
    l = snprintf(big, 64, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 120; i++)
        l += snprintf(big + l, 64, "X-F%d: 1\r\n", i);
    l += snprintf(big + l, 8, "\r\n");
    expect_refusal("120 fields", big, (size_t)l, 431, "header_too_large");
    free(big);

    /* bodies past every limit: refused from the Content-Length alone */
    expect_refusal("import past the margin",
                   S("POST /api/v1/profiles/import HTTP/1.1\r\nContent-Type: application/x-ndjson\r\n"
                     "Content-Length: 99999999999\r\n\r\n"),
                   413, "body_too_large");
    expect_refusal("decide past max_body",
                   S("POST /api/v1/decide HTTP/1.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: 70000\r\n\r\n"),
                   413, "body_too_large");
    expect_refusal("length past 64 bits", S("POST /api/v1/decide HTTP/1.1\r\n"
                                            "Content-Length: 999999999999999999999999999\r\n\r\n"),
                   413, "body_too_large");
    /* methods, versions, request lines */
    expect_refusal("unknown method", S("BREW /healthz HTTP/1.1\r\n\r\n"), 501, "not_implemented");
    expect_refusal("TRACE", S("TRACE / HTTP/1.1\r\n\r\n"), 501, "not_implemented");
    expect_refusal("HTTP/2.0", S("GET /healthz HTTP/2.0\r\n\r\n"), 505, "http_version_not_supported");
    expect_refusal("garbage", S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), 400, "bad_request");
    expect_refusal("no version", S("GET /healthz\r\n\r\n"), 400, "bad_request");
    expect_refusal("two spaces", S("GET  /healthz HTTP/1.1\r\n\r\n"), 400, "bad_request");
    expect_refusal("absolute form", S("GET http://example.com/healthz HTTP/1.1\r\n\r\n"), 400, "bad_request");
    expect_refusal("authority", S("GET //example.com/ HTTP/1.1\r\n\r\n"), 400, "bad_request");
    expect_refusal("control in target", S("GET /a\x01 HTTP/1.1\r\n\r\n"), 400, "bad_request");
    /* fields */
    expect_refusal("space before colon", S("GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n"), 400, "bad_header");
    expect_refusal("no colon", S("GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"), 400, "bad_header");
    expect_refusal("folded", S("GET /healthz HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n"), 400, "bad_header");
    expect_refusal("bare CR", S("GET /healthz HTTP/1.1\r\nX-A: 1\r2\r\n\r\n"), 400, "bad_request");
    expect_refusal("NUL in a value", S("GET /healthz HTTP/1.1\r\nX-A: 1\0002\r\n\r\n"), 400, "bad_header");
    expect_refusal("Expect", S("PUT /api/v1/profiles/e HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n"),
                   417, "expectation_failed");
    /* chunked bodies: bad framing, too large */
    expect_refusal("bad chunk size", S("PUT /api/v1/profiles/ch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       "zz\r\n{}\r\n0\r\n\r\n"),
                   400, "bad_chunk");
    expect_refusal("chunk without CRLF", S("PUT /api/v1/profiles/ch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                           "\r\n2\r\n{}XX0\r\n\r\n"),
                   400, "bad_chunk");
    char head[] = "POST /api/v1/decide HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Type: application/json\r\n\r\n10000\r\n"; /* 64 KiB: max_body exactly */
    size_t hl = strlen(head);
    size_t total = hl + 65536 + 64;
    char *chunked = malloc(total);
    memcpy(chunked, head, hl);
    memset(chunked + hl, ' ', 65536);
    int cl = (int)hl + 65536;
    cl += snprintf(chunked + cl, 64, "\r\n1\r\n \r\n0\r\n\r\n"); /* one byte more */
    expect_refusal("chunked past max_body", chunked, (size_t)cl, 413, "body_too_large");
    free(chunked);
    cr_assert_null(get_profile("ch"));
    cr_assert_null(get_profile("e"));
    expect_healthy();

    /* each refusal is counted by reason */
    struct tfx_resp m;
    tfx_req(&srv, "GET", "/metrics", NULL, &m);
    double v = 0;
    cr_assert(tfx_metric(m.body, "promod_http_rejected_total", "reason=\"method\"", &v) && v == 2,
              "method refusals: %f", v);
    cr_assert(tfx_metric(m.body, "promod_http_rejected_total", "reason=\"uri_too_long\"", &v) && v == 1);
    tfx_resp_free(&m);
}

/* What the reader passes on works: chunked with extensions and trailers,
 * bare-LF lines, stray CRLFs between requests, Expect: 100-continue. */
Test(http_edges, accepted_shapes)
{
    struct raw_reply r;
    raw(S("PUT /api/v1/profiles/chunky HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
          "Content-Type: application/json\r\n\r\n"
          "4;name=value\r\n{\"a\"\r\n5\r\n: 42}\r\n0\r\nX-Trailer: yes\r\n\r\n"),
        &r);
    cr_assert_eq(r.status, 201, "%s", r.all);
    reply_free(&r);
    json_t *p = get_profile("chunky");
    cr_assert_eq(json_integer_value(json_object_get(p, "a")), 42);
    json_decref(p);
    raw(S("\r\n\r\nGET /healthz HTTP/1.1\nConnection: close\n\n"), &r);
    cr_assert_eq(r.status, 200, "%s", r.all);
    reply_free(&r);
    raw(S("GET /healthz HTTP/1.0\r\n\r\n"), &r);
    cr_assert(!strncmp(r.all, "HTTP/1.", 7) && strstr(r.all, " 200 "), "%s", r.all);
    reply_free(&r);
    /* Expect: 100-continue: the interim answer, then the real one */
    int fd = tfx_connect_port(srv.port);
    cr_assert_geq(fd, 0);
    static const char h[] = "PUT /api/v1/profiles/cont HTTP/1.1\r\nExpect: 100-continue\r\n"
                            "Content-Length: 8\r\nConnection: close\r\n\r\n";
    cr_assert_eq(tfx_send_all(fd, h, sizeof h - 1), 0);
    char buf[256];
    struct pollfd pf = { fd, POLLIN, 0 };
    cr_assert_eq(poll(&pf, 1, 10000), 1, "no 100 Continue");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    cr_assert_gt(n, 0);
    buf[n] = 0;
    cr_assert(!strncmp(buf, "HTTP/1.1 100", 12), "%s", buf);
    cr_assert_eq(tfx_send_all(fd, "{\"c\": 3}", 8), 0);
    size_t len;
    char *rest = tfx_read_all(fd, &len, 10000);
    close(fd);
    cr_assert(strstr(rest, "HTTP/1.1 201"), "%s", rest);
    free(rest);
}

/* A client that uploads far past the limit without waiting for 100
 * Continue still reads its 413: the socket lingers and drains instead of
 * closing on unread data (which would reset the connection). */
Test(http_edges, refused_upload_reads_its_answer)
{
    size_t body = 4u << 20;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /api/v1/profiles/import HTTP/1.1\r\nContent-Type: application/x-ndjson\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      body);
    char *all = malloc((size_t)hl + body);
    memcpy(all, head, (size_t)hl);
    memset(all + hl, '\n', body);
    for (int round = 0; round < 3; round++) {
        int fd = tfx_connect_port(srv.port);
        cr_assert_geq(fd, 0);
        int sent = tfx_send_all(fd, all, (size_t)hl + body);
        size_t len;
        char *reply = tfx_read_all(fd, &len, 20000);
        close(fd);
        struct raw_reply r;
        parse_reply(reply, &r);
        cr_assert_eq(sent, 0, "round %d: the upload was cut off (%s)", round, reply);
        cr_assert_eq(r.status, 413, "round %d: %.300s", round, reply);
        cr_assert_str_eq(code_of(&r), "body_too_large");
        reply_free(&r);
    }
    free(all);
    expect_healthy();
}

/* ---- slow clients ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One header line every 200 ms never finishes a head: with header_timeout
 * = 1 the server answers 408 and closes long before the client's 150
 * lines (30 s) are out, although the connection is never idle for the
 * 30 s of request_timeout. */
Test(http_edges, trickled_head_is_cut_off)
{
    int fd = tfx_connect_port(srv.port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(tfx_send_all(fd, "GET /healthz HTTP/1.1\r\n", 23), 0);
    char got[2048] = "";
    size_t have = 0;
    int closed = 0, lines = 0;
    for (; lines < 150 && !closed; lines++) {
        char line[64];
        int n = snprintf(line, sizeof line, "X-Slow-%d: 1\r\n", lines);
        if (tfx_send_all(fd, line, (size_t)n))
            break; /* closed under us: read what it said */
        struct pollfd pf = { fd, POLLIN, 0 };
        while (poll(&pf, 1, 200) == 1) {
            ssize_t r = read(fd, got + have, sizeof got - 1 - have);
            if (r <= 0) {
                closed = 1;
                break;
            }
            have += (size_t)r;
        }
    }
    if (!closed) { /* the send failed: collect the rest */
        size_t len;
        char *rest = tfx_read_all(fd, &len, 10000);
        snprintf(got + have, sizeof got - have, "%s", rest);
        free(rest);
    }
    close(fd);
    cr_assert_lt(lines, 150, "the head trickled for 30 s without being cut off");
    struct raw_reply r;
    parse_reply(strdup(got), &r);
    cr_assert_eq(r.status, 408, "%s", got);
    cr_assert_str_eq(code_of(&r), "request_timeout");
    reply_free(&r);

    /* a connection that sends nothing is closed too, without an answer */
    fd = tfx_connect_port(srv.port);
    double t0 = now_s();
    size_t len;
    char *idle = tfx_read_all(fd, &len, 20000);
    double waited = now_s() - t0;
    close(fd);
    cr_assert_eq(len, 0, "%s", idle);
    cr_assert_lt(waited, 20, "an idle connection stayed open");
    free(idle);
    struct tfx_resp m;
    tfx_req(&srv, "GET", "/metrics", NULL, &m);
    double v = 0;
    cr_assert(tfx_metric(m.body, "promod_http_idle_closed_total", "", &v) && v >= 1, "%f", v);
    tfx_resp_free(&m);

    /* a head in pieces that completes in time is served */
    fd = tfx_connect_port(srv.port);
    cr_assert_eq(tfx_send_all(fd, "GET /heal", 9), 0);
    cr_assert_eq(tfx_send_all(fd, "thz HTTP/1.1\r\nHost: x\r\n", 23), 0);
    cr_assert_eq(tfx_send_all(fd, "Connection: close\r\n\r\n", 21), 0);
    char *ok = tfx_read_all(fd, &len, 10000);
    close(fd);
    cr_assert(!strncmp(ok, "HTTP/1.1 200", 12), "%s", ok);
    free(ok);
    expect_healthy();
}

/* ---- content types ---- */

Test(http_edges, merge_patch_content_type)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/mp", "{\"a\": 1, \"b\": {\"c\": 2, \"d\": 3}}", &r), 201);
    tfx_resp_free(&r);
    static const char patch[] = "{\"a\": null, \"b\": {\"c\": 5}}";
    tfx_http(&srv, "PATCH", "/api/v1/profiles/mp", "Content-Type: application/merge-patch+json\r\n", patch,
             sizeof patch - 1, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    json_t *p = get_profile("mp");
    cr_assert_null(json_object_get(p, "a"), "null removes the member (RFC 7386)");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(p, "b"), "c")), 5);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(p, "b"), "d")), 3);
    json_decref(p);
    /* with a charset parameter too */
    tfx_http(&srv, "PATCH", "/api/v1/profiles/mp", "Content-Type: application/merge-patch+json; charset=utf-8\r\n",
             "{\"z\": 1}", 8, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tfx_resp_free(&r);
    /* a merge patch is not a document to PUT */
    tfx_http(&srv, "PUT", "/api/v1/profiles/mp", "Content-Type: application/merge-patch+json\r\n", "{}", 2, &r);
    cr_assert_eq(r.status, 415, "%s", r.body);
    cr_assert_str_eq(tfx_err_code(&r), "unsupported_media_type");
    tfx_resp_free(&r);
}

/* Every kind of connection above ends: none is left open on the server. */
Test(http_edges, connections_are_released)
{
    for (int i = 0; i < 20; i++) {
        struct raw_reply r;
        raw(S("GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), &r);
        reply_free(&r);
        raw(S("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"), &r);
        reply_free(&r);
        int fd = tfx_connect_port(srv.port); /* connect and leave */
        close(fd);
        fd = tfx_connect_port(srv.port); /* half a head, then leave */
        tfx_send_all(fd, "GET /hea", 8);
        close(fd);
    }
    /* wait (deadline, not a sleep) until only the scraping connection is open */
    double v = -1;
    for (int i = 0; i < 200; i++) {
        struct tfx_resp m;
        tfx_req(&srv, "GET", "/metrics", NULL, &m);
        cr_assert(tfx_metric(m.body, "promod_http_connections", "", &v));
        tfx_resp_free(&m);
        if (v == 1)
            break;
        usleep(50000);
    }
    cr_assert_eq(v, 1, "connections still open: %f", v);
}
