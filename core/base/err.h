/*
 * err.h — promod's one table of error codes.
 *
 * Every function that can fail returns an int: 0 on success, a negative
 * code on failure.  Codes are either a negated errno (passed through from
 * the OS) or one of the ERR_* values below, which live in a reserved band
 * far from errno values (as LMDB does with its MDB_* codes).  err_str()
 * turns any of them into text.  Thread-safe, no allocation.
 */
#ifndef PROMOD_ERR_H
#define PROMOD_ERR_H

enum {
    ERR_BASE      = -40000,
    ERR_NOTFOUND  = -40001, /**< key/record does not exist */
    ERR_EXISTS    = -40002, /**< record already exists */
    ERR_INVAL     = -40003, /**< invalid argument or input */
    ERR_TOOBIG    = -40004, /**< input exceeds a size or depth limit */
    ERR_NOMEM     = -40005, /**< allocation failed */
    ERR_FULL      = -40006, /**< storage map is full */
    ERR_STORE     = -40007, /**< other LMDB failure */
    ERR_LUA       = -40008, /**< Lua compile or runtime error */
    ERR_BUDGET    = -40009, /**< Lua instruction or memory budget exceeded */
    ERR_CONFLICT  = -40010, /**< version mismatch / illegal transition */
    ERR_CAPPED    = -40011, /**< a cap or budget refused the reservation */
    ERR_BUSY      = -40012, /**< resource temporarily unavailable */
    ERR_IO        = -40013, /**< file I/O failure */
    ERR_PARSE     = -40014, /**< malformed JSON, msgpack, NDJSON */
    ERR_LAST      = -40015
};

/** Text for any return code (0, -errno or ERR_*).  Never NULL. */
const char *err_str(int code);

#endif
