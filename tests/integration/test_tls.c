/*
 * test_tls.c — TLS on the listening socket: certificates made with the
 * openssl CLI, curl with the CA file, plain HTTP to the TLS port, TLS
 * versions, SIGHUP picking up a new certificate without dropping open
 * connections, a broken reload keeping the old one, and the start-up
 * checks (key not matching the certificate; keys beyond loopback).
 */
#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

static struct tfx_server srv;
static char pki[300];

/* Run a shell command (test tooling only), output into *out (may be NULL). */
static int sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t n;
    while ((n = fread(b + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (len + 1 >= cap)
            b = realloc(b, cap *= 2);
    }
    b[len] = 0;
    int st = pclose(p);
    if (out)
        *out = b;
    else
        free(b);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A server certificate for 127.0.0.1 signed by the test CA, into
 * pki/<name>.pem and pki/<name>.key; returns nothing, asserts success. */
static void make_cert(const char *name, const char *cn)
{
    char *out = NULL;
    int st = sh(&out,
                "cd '%s' && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > %s.ext && "
                "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key "
                "-out %s.csr -subj /CN=%s 2>&1 && "
                "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
                "-out %s.pem -extfile %s.ext 2>&1",
                pki, name, name, name, cn, name, name, name);
    cr_assert_eq(st, 0, "openssl: %s", out);
    free(out);
}

static void fingerprint_file(const char *name, char out[128])
{
    char *o = NULL;
    sh(&o, "openssl x509 -in '%s/%s.pem' -noout -fingerprint -sha256", pki, name);
    const char *eq = strchr(o, '=');
    cr_assert(eq, "%s", o);
    snprintf(out, 128, "%.*s", (int)strcspn(eq + 1, "\n"), eq + 1);
    free(o);
}

static void setup(void)
{
    tfx_tmpdir(pki, sizeof pki);
    char *out = NULL;
    int st = sh(&out,
                "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout ca.key -out ca.pem -days 2 -subj /CN=promod-test-ca 2>&1",
                pki);
    cr_assert_eq(st, 0, "openssl: %s", out);
    free(out);
    make_cert("server", "promod-one");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "tls = { cert = '%s/server.pem', key = '%s/server.key' },\n  header_timeout = 2,", pki,
             pki);
    tfx_server_init(&srv, cfg);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    tfx_rmrf(pki);
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 120);

/* ---- a small TLS client ---- */

struct tconn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

/* Connect and handshake, verifying against the test CA; max_version 0 =
 * any.  Returns 0, or -1 when the handshake failed. */
static int tconnect(struct tconn *t, int max_version)
{
    memset(t, 0, sizeof *t);
    t->ctx = SSL_CTX_new(TLS_client_method());
    char ca[400];
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    cr_assert_eq(SSL_CTX_load_verify_locations(t->ctx, ca, NULL), 1);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(t->ctx, 0);
    if (max_version) {
        SSL_CTX_set_security_level(t->ctx, 0); /* let the client offer old versions at all */
        SSL_CTX_set_max_proto_version(t->ctx, max_version);
    }
    t->fd = tfx_connect_port(srv.port);
    cr_assert_geq(t->fd, 0);
    t->ssl = SSL_new(t->ctx);
    SSL_set_fd(t->ssl, t->fd);
    SSL_set1_host(t->ssl, "127.0.0.1");
    if (SSL_connect(t->ssl) != 1) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

static void tclose(struct tconn *t)
{
    if (t->ssl)
        SSL_free(t->ssl);
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    if (t->fd >= 0)
        close(t->fd);
}

/* GET on a kept-alive connection; the status (0 on failure), body into buf. */
static int tget(struct tconn *t, const char *path, char *buf, size_t len)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (SSL_write(t->ssl, req, n) != n)
        return 0;
    size_t have = 0;
    for (;;) {
        int r = SSL_read(t->ssl, buf + have, (int)(len - 1 - have));
        if (r <= 0)
            return 0;
        have += (size_t)r;
        buf[have] = 0;
        char *sep = strstr(buf, "\r\n\r\n");
        const char *cl = strstr(buf, "Content-Length: ");
        if (sep && cl && have >= (size_t)(sep + 4 - buf) + (size_t)atoi(cl + 16))
            break;
    }
    int status = 0;
    sscanf(buf, "HTTP/1.1 %d", &status);
    return status;
}

static void peer_fingerprint(struct tconn *t, char out[128])
{
    X509 *x = SSL_get1_peer_certificate(t->ssl);
    cr_assert(x);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509_digest(x, EVP_sha256(), md, &n);
    X509_free(x);
    out[0] = 0;
    for (unsigned int i = 0; i < n; i++)
        snprintf(out + 3 * i, 4, i + 1 < n ? "%02X:" : "%02X", md[i]);
}

/* ---- tests ---- */

Test(tls, curl_with_the_ca_file)
{
    char *out = NULL;
    int st = sh(&out, "curl -sS --cacert '%s/ca.pem' https://127.0.0.1:%d/healthz 2>&1", pki, srv.port);
    cr_assert_eq(st, 0, "curl: %s", out);
    cr_assert(strstr(out, "\"status\":\"ok\""), "%s", out);
    free(out);
    /* without the CA the certificate is not trusted */
    st = sh(&out, "curl -sS https://127.0.0.1:%d/healthz 2>&1", srv.port);
    cr_assert_neq(st, 0, "curl trusted an unknown CA: %s", out);
    free(out);
    /* a POST with a body over TLS, and the negotiated version */
    st = sh(&out,
            "curl -sS -v --cacert '%s/ca.pem' -X PUT -H 'Content-Type: application/json' "
            "-d '{\"tier\":\"gold\"}' https://127.0.0.1:%d/api/v1/profiles/tls-1 2>&1",
            pki, srv.port);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "\"id\":\"tls-1\""), "%s", out);
    cr_assert(strstr(out, "TLSv1.3") || strstr(out, "TLSv1.2"), "%s", out);
    free(out);
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "msg=\"tls on\"") && strstr(log, "tls=on"), "%s", log);
    free(log);
}

Test(tls, plain_http_to_the_tls_port_fails_cleanly)
{
    for (int i = 0; i < 3; i++) {
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        char *raw = tfx_raw(&srv, req, sizeof req - 1);
        cr_assert_null(strstr(raw, "HTTP/1."), "a plain HTTP answer on the TLS port: %s", raw);
        free(raw);
    }
    cr_assert(tfx_server_alive(&srv));
    struct tconn t;
    cr_assert_eq(tconnect(&t, 0), 0);
    char buf[4096];
    cr_assert_eq(tget(&t, "/healthz", buf, sizeof buf), 200, "%s", buf);
    tclose(&t);
}

Test(tls, old_versions_refused)
{
    struct tconn t;
    cr_assert_eq(tconnect(&t, TLS1_1_VERSION), -1, "a TLS 1.1 handshake succeeded");
    tclose(&t);
    cr_assert_eq(tconnect(&t, TLS1_2_VERSION), 0, "TLS 1.2 must work");
    cr_assert_eq(SSL_version(t.ssl), TLS1_2_VERSION);
    cr_assert_eq(SSL_get_current_compression(t.ssl), NULL);
    const char *cipher = SSL_get_cipher_name(t.ssl);
    cr_assert(strstr(cipher, "ECDHE") && (strstr(cipher, "GCM") || strstr(cipher, "CHACHA20")), "%s", cipher);
    tclose(&t);
    cr_assert(tfx_server_alive(&srv));
}

Test(tls, sighup_reloads_the_certificate)
{
    char fp1[128], fp2[128], seen[128];
    fingerprint_file("server", fp1);
    struct tconn before;
    cr_assert_eq(tconnect(&before, 0), 0);
    peer_fingerprint(&before, seen);
    cr_assert_str_eq(seen, fp1);
    char buf[4096];
    cr_assert_eq(tget(&before, "/healthz", buf, sizeof buf), 200);

    /* new files in place (a new key too), then SIGHUP */
    make_cert("next", "promod-two");
    fingerprint_file("next", fp2);
    cr_assert_str_neq(fp1, fp2);
    char *out = NULL;
    cr_assert_eq(sh(&out, "cd '%s' && cp next.pem server.pem.tmp && cp next.key server.key.tmp && "
                          "mv server.key.tmp server.key && mv server.pem.tmp server.pem 2>&1",
                    pki),
                 0, "%s", out);
    free(out);
    kill(srv.pid, SIGHUP);
    /* new handshakes get the new certificate (wait for the reload, with a deadline) */
    int ok = 0;
    for (int i = 0; i < 200 && !ok; i++) {
        struct tconn t;
        if (tconnect(&t, 0) == 0) {
            peer_fingerprint(&t, seen);
            ok = !strcmp(seen, fp2);
            if (ok)
                cr_assert_eq(tget(&t, "/healthz", buf, sizeof buf), 200);
        }
        tclose(&t);
        if (!ok)
            usleep(50000);
    }
    cr_assert(ok, "no handshake with the new certificate: still %s", seen);
    /* the connection opened before the reload is still served */
    cr_assert_eq(tget(&before, "/healthz", buf, sizeof buf), 200, "the open connection was dropped");
    tclose(&before);
    /* curl sees it too */
    cr_assert_eq(sh(&out, "curl -sS -v --cacert '%s/ca.pem' https://127.0.0.1:%d/healthz 2>&1", pki, srv.port), 0,
                 "%s", out);
    cr_assert(strstr(out, "CN=promod-two"), "%s", out);
    free(out);

    /* a broken file: the reload fails, the last good certificate stays */
    cr_assert_eq(sh(&out, "printf 'not a certificate' > '%s/server.pem'", pki), 0);
    free(out);
    kill(srv.pid, SIGHUP);
    int logged = 0;
    for (int i = 0; i < 200 && !logged; i++) {
        char *log = tfx_server_log(&srv);
        logged = strstr(log, "tls reload failed; the previous certificate stays") != NULL;
        free(log);
        if (!logged)
            usleep(50000);
    }
    cr_assert(logged, "the failed reload was not reported");
    struct tconn t;
    cr_assert_eq(tconnect(&t, 0), 0);
    peer_fingerprint(&t, seen);
    cr_assert_str_eq(seen, fp2, "a failed reload changed the certificate");
    tclose(&t);
    cr_assert(tfx_server_alive(&srv));
}

/* A TCP connection that never starts its handshake is closed after
 * header_timeout; nothing is answered in clear. */
Test(tls, stalled_handshake_closed)
{
    int fd = tfx_connect_port(srv.port);
    size_t len;
    char *got = tfx_read_all(fd, &len, 20000);
    close(fd);
    cr_assert_eq(len, 0, "%s", got);
    free(got);
    cr_assert(tfx_server_alive(&srv));
}

Test(tls, bad_files_refuse_to_start)
{
    tfx_server_stop(&srv);
    make_cert("other", "promod-other");
    char cfg[1024];
    struct tfx_server bad;
    /* the key of another certificate */
    snprintf(cfg, sizeof cfg, "tls = { cert = '%s/server.pem', key = '%s/other.key' },", pki, pki);
    tfx_server_init(&bad, cfg);
    cr_assert_neq(tfx_server_start(&bad), 0, "started with a key that does not match");
    char *log = tfx_server_log(&bad);
    /* OpenSSL 3 notices while loading the key, older ones at the check */
    cr_assert(strstr(log, "level=error msg=\"tls: ") && strstr(log, "private key") && strstr(log, "other.key"),
              "%s", log);
    free(log);
    tfx_server_cleanup(&bad);
    /* a missing file */
    snprintf(cfg, sizeof cfg, "tls = { cert = '%s/missing.pem', key = '%s/server.key' },", pki, pki);
    tfx_server_init(&bad, cfg);
    cr_assert_neq(tfx_server_start(&bad), 0);
    log = tfx_server_log(&bad);
    cr_assert(strstr(log, "cannot load the certificate chain") && strstr(log, "missing.pem"), "%s", log);
    free(log);
    tfx_server_cleanup(&bad);
}

/* With TLS, keys may listen beyond loopback without the override. */
Test(tls, keys_beyond_loopback_with_tls)
{
    tfx_server_stop(&srv);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "tls = { cert = '%s/server.pem', key = '%s/server.key' },\n"
             "  api_keys = { { id = 'site', key = 'site-key-0123456789', role = 'decide' } },",
             pki, pki);
    struct tfx_server wide;
    tfx_server_init(&wide, cfg);
    cr_assert_eq(tfx_server_start_listen(&wide, "0.0.0.0:0"), 0);
    char *out = NULL;
    cr_assert_eq(sh(&out, "curl -sS -o /dev/null -w '%%{http_code}' --cacert '%s/ca.pem' "
                          "-H 'Authorization: Bearer site-key-0123456789' -H 'Content-Type: application/json' "
                          "-d '{\"customer_id\":\"u\",\"channel\":\"web\"}' https://127.0.0.1:%d/api/v1/decide",
                    pki, wide.port),
                 0);
    cr_assert_str_eq(out, "200");
    free(out);
    char *log = tfx_server_log(&wide);
    cr_assert_null(strstr(log, "INSECURE"), "%s", log);
    free(log);
    tfx_server_cleanup(&wide);
}
