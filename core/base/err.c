/* err.c — text for promod's error codes. */
#include "base/err.h"
#include <string.h>

const char *err_str(int code)
{
    switch (code) {
    case 0: return "success";
    case ERR_NOTFOUND: return "not found";
    case ERR_EXISTS: return "already exists";
    case ERR_INVAL: return "invalid argument";
    case ERR_TOOBIG: return "too large";
    case ERR_NOMEM: return "out of memory";
    case ERR_FULL: return "storage full (map size reached)";
    case ERR_STORE: return "storage error";
    case ERR_LUA: return "Lua error";
    case ERR_BUDGET: return "script budget exceeded";
    case ERR_CONFLICT: return "conflict";
    case ERR_CAPPED: return "capped";
    case ERR_BUSY: return "busy";
    case ERR_IO: return "I/O error";
    case ERR_PARSE: return "parse error";
    default:
        if (code < 0 && code > ERR_BASE)
            return strerror(-code);
        return "unknown error";
    }
}
