/*
 * tls.c — the server's SSL_CTX: built from the config's PEM files with
 * modern defaults, swapped on reload, handed to workers per connection.
 */
#include "http/tls.h"
#include "base/err.h"
#include "base/log.h"
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD ciphers
 * only, ECDSA first (Mozilla's "intermediate" list without the DHE ones,
 * which would need DH parameters).  TLS 1.3 keeps OpenSSL's defaults
 * (AES-GCM and ChaCha20-Poly1305, all forward-secret). */
#define TLS12_CIPHERS                                                                      \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                           \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                           \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *g_ctx;    /* guarded by g_lock; one reference owned here */
static char *g_cert, *g_key;
static char g_fp[96];
static int g_on; /* set by tls_init before the workers start, cleared after they stop */

static void log_ssl_errors(const char *what, const char *file)
{
    unsigned long e;
    char buf[256];
    int any = 0;
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        log_error(what, "file=\"%s\" err=\"%s\"", file, buf);
        any = 1;
    }
    if (!any)
        log_error(what, "file=\"%s\"", file);
}

static void fingerprint(X509 *x, char out[96])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = 0;
    if (!x || !X509_digest(x, EVP_sha256(), md, &n))
        return;
    for (unsigned int i = 0; i < n && i < 32; i++)
        snprintf(out + 3 * i, 4, i + 1 < n ? "%02X:" : "%02X", md[i]);
}

/* A new context from the files, or NULL with the reason logged. */
static SSL_CTX *build(const char *cert, const char *key, char fp[96])
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_ssl_errors("tls: cannot create a context", cert);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_SSLv2 |
                                 SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        log_ssl_errors("tls: cipher list refused", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        log_ssl_errors("tls: cannot load the certificate chain", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        log_ssl_errors("tls: cannot load the private key", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_ssl_errors("tls: the private key does not match the certificate", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    fingerprint(SSL_CTX_get0_certificate(ctx), fp);
    return ctx;
}

int tls_init(const struct config *cfg)
{
    if (!cfg->tls_cert)
        return 0;
    char fp[96];
    SSL_CTX *ctx = build(cfg->tls_cert, cfg->tls_key, fp);
    if (!ctx)
        return ERR_INVAL;
    pthread_mutex_lock(&g_lock);
    if (g_ctx)
        SSL_CTX_free(g_ctx);
    g_ctx = ctx;
    free(g_cert);
    free(g_key);
    g_cert = strdup(cfg->tls_cert);
    g_key = strdup(cfg->tls_key);
    memcpy(g_fp, fp, sizeof g_fp);
    g_on = 1;
    pthread_mutex_unlock(&g_lock);
    log_info("tls on", "cert=\"%s\" sha256=%s min_version=TLSv1.2", cfg->tls_cert, fp);
    return 0;
}

int tls_enabled(void) { return g_on; }

struct ssl_st *tls_new_ssl(void)
{
    pthread_mutex_lock(&g_lock);
    SSL *s = g_ctx ? SSL_new(g_ctx) : NULL; /* the SSL holds its own reference to the context */
    pthread_mutex_unlock(&g_lock);
    return s;
}

int tls_reload(void)
{
    pthread_mutex_lock(&g_lock);
    char *cert = g_cert ? strdup(g_cert) : NULL, *key = g_key ? strdup(g_key) : NULL;
    pthread_mutex_unlock(&g_lock);
    if (!cert || !key) {
        free(cert);
        free(key);
        return 0; /* TLS off: nothing to reload */
    }
    char fp[96];
    SSL_CTX *ctx = build(cert, key, fp);
    if (!ctx) {
        log_error("tls reload failed; the previous certificate stays", "cert=\"%s\"", cert);
        free(cert);
        free(key);
        return ERR_INVAL;
    }
    pthread_mutex_lock(&g_lock);
    SSL_CTX *old = g_ctx;
    g_ctx = ctx;
    memcpy(g_fp, fp, sizeof g_fp);
    pthread_mutex_unlock(&g_lock);
    SSL_CTX_free(old); /* open connections keep it alive through their SSL */
    log_info("tls reloaded", "cert=\"%s\" sha256=%s", cert, fp);
    free(cert);
    free(key);
    return 0;
}

void tls_fingerprint(char out[96])
{
    pthread_mutex_lock(&g_lock);
    memcpy(out, g_ctx ? g_fp : "", g_ctx ? sizeof g_fp : 1);
    pthread_mutex_unlock(&g_lock);
}

void tls_shutdown(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_ctx)
        SSL_CTX_free(g_ctx);
    g_ctx = NULL;
    g_on = 0;
    free(g_cert);
    free(g_key);
    g_cert = g_key = NULL;
    pthread_mutex_unlock(&g_lock);
}
