/* reqerr.c — the request-error type (see reqerr.h). */
#include "base/reqerr.h"
#include "base/err.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int code_of_status(int status)
{
    switch (status) {
    case 404: return ERR_NOTFOUND;
    case 409: return ERR_CONFLICT;
    case 413: return ERR_TOOBIG;
    case 429: return ERR_CAPPED;
    case 503: return ERR_BUSY;
    case 507: return ERR_FULL;
    default: return ERR_INVAL;
    }
}

int reqerr_set(struct reqerr *e, int status, const char *code, const char *field,
               const char *fmt, ...)
{
    if (e->extra)
        json_decref(e->extra);
    e->extra = NULL;
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code ? code : "error");
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return code_of_status(status);
}

int reqerr_from_code(struct reqerr *e, int rc, const char *what)
{
    static const struct { int rc, status; const char *code; } map[] = {
        { ERR_NOTFOUND, 404, "not_found" }, { ERR_EXISTS, 409, "exists" },
        { ERR_CONFLICT, 409, "conflict" },  { ERR_INVAL, 400, "invalid" },
        { ERR_PARSE, 400, "invalid_body" }, { ERR_TOOBIG, 413, "too_large" },
        { ERR_FULL, 507, "storage_full" },  { ERR_BUSY, 503, "busy" },
        { ERR_CAPPED, 429, "capped" },
    };
    int status = 500;
    const char *code = "internal";
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].rc == rc) {
            status = map[i].status;
            code = map[i].code;
            break;
        }
    reqerr_set(e, status, code, NULL, "%s: %s", what ? what : "request", err_str(rc));
    return rc;
}

void reqerr_clear(struct reqerr *e)
{
    if (e->extra)
        json_decref(e->extra);
    memset(e, 0, sizeof *e);
}
