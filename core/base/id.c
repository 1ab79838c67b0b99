/* id.c — id validation (see id.h). */
#include "base/id.h"
#include <stddef.h>

int id_valid(const char *id)
{
    size_t n = 0;
    if (!id || !*id || id[0] == '.')
        return 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':' || c == '@'))
            return 0;
    }
    return n <= 128;
}
