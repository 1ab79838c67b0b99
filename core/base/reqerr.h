/*
 * reqerr.h — the one request-error type.
 *
 * Every service function that answers a request (decide, campaigns,
 * profiles, events, analytics, segments, ...) reports a refusal by filling a
 * struct reqerr: the HTTP status, the machine code, a message for people and
 * the field it is about.  The HTTP layer renders it in the contract's shape
 * ({"error": {"code", "message", "field", ...extra}}) with
 * http_reply_reqerr(); the CLI prints its message.  Nothing here knows
 * HTTP beyond the status number.
 *
 * Ownership: `extra` (more members of the error object, e.g. "errors" with
 * file:line entries) belongs to the struct; reqerr_clear() releases it and
 * http_reply_reqerr() clears after rendering.  A struct reqerr is zeroed
 * ({0}) before use; one that is never set costs nothing to clear.
 */
#ifndef PROMOD_REQERR_H
#define PROMOD_REQERR_H
#include <jansson.h>

struct reqerr {
    int status;          /**< HTTP status (400, 404, 409, ...); 0 = not set */
    char code[40];       /**< machine code, e.g. "invalid_field" */
    char message[512];   /**< for people */
    char field[128];     /**< the field concerned ("limit", "$.and[2].age.$gt"), "" = none */
    json_t *extra;       /**< more members of the error object, or NULL (owned) */
};

/** Fill `e` (any previous extra is released).  `field` may be NULL.
 *  @return the ERR_* code that goes with `status` (400 → ERR_INVAL, 404 →
 *  ERR_NOTFOUND, 409 → ERR_CONFLICT, 413 → ERR_TOOBIG, 429 → ERR_CAPPED,
 *  503 → ERR_BUSY, 507 → ERR_FULL, other → ERR_INVAL), so a service can
 *  `return reqerr_set(e, 400, "invalid_field", "limit", "...");`. */
int reqerr_set(struct reqerr *e, int status, const char *code, const char *field,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/** Fill `e` from a return code (ERR_* or -errno): ERR_NOTFOUND → 404
 *  not_found, ERR_EXISTS → 409 exists, ERR_CONFLICT → 409 conflict,
 *  ERR_INVAL → 400 invalid, ERR_PARSE → 400 invalid_body, ERR_TOOBIG → 413
 *  too_large, ERR_FULL → 507 storage_full, ERR_BUSY → 503 busy, ERR_CAPPED
 *  → 429 capped, anything else → 500 internal.  The message is
 *  "<what>: <err_str(rc)>".  @return rc. */
int reqerr_from_code(struct reqerr *e, int rc, const char *what);

/** Release `extra` and zero the struct. */
void reqerr_clear(struct reqerr *e);

#endif
