/*
 * tls.h — TLS for the listening socket (OpenSSL through libevent's
 * bufferevent_openssl).
 *
 * One server context, built from the config's `tls = { cert, key }` PEM
 * files: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers for 1.2
 * (ECDHE with AES-GCM or ChaCha20-Poly1305; OpenSSL's defaults for 1.3),
 * the server's cipher order, no compression, no renegotiation.
 *
 * tls_reload() (SIGHUP) reads the files again into a new context and
 * swaps it in when it is valid; connections already open keep the
 * context they were accepted with (each SSL holds a reference), new
 * handshakes use the new one.  A failed reload keeps the old context and
 * says why.
 *
 * Threads: tls_init/tls_reload/tls_shutdown run on the main thread;
 * tls_new_ssl is called by every worker (a mutex guards the swap).
 */
#ifndef PROMOD_TLS_H
#define PROMOD_TLS_H
#include <stddef.h>
#include "base/config.h"

struct ssl_st;

/** Build the context when cfg->tls_cert is set (nothing to do otherwise).
 *  @return 0, or ERR_INVAL with the reason logged (unreadable file, key
 *  not matching the certificate, ...). */
int tls_init(const struct config *cfg);
/** Is TLS on (tls_init built a context)? */
int tls_enabled(void);
/** A new server-side SSL for one connection, or NULL (TLS off, OOM). */
struct ssl_st *tls_new_ssl(void);
/** Reload the files named at tls_init.  @return 0, or ERR_INVAL (the old
 *  context stays; the reason is logged). */
int tls_reload(void);
/** SHA-256 fingerprint of the serving certificate, "AB:CD:..." (95
 *  characters and a NUL), or "" when TLS is off. */
void tls_fingerprint(char out[96]);
/** Free the context (after the workers stopped). */
void tls_shutdown(void);

#endif
