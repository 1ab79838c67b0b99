/*
 * events_kind.c — event type names (see events_kind.h).
 */
#include "insight/events_kind.h"
#include <string.h>

static const char *kind_names[EVENTS_NKINDS] = {
    "impression", "click", "conversion", "send", "open", "dismiss", "custom",
};

const char *events_kind_name(enum events_kind k)
{
    return (unsigned)k < EVENTS_NKINDS ? kind_names[k] : "?";
}

int events_kind_of(const char *type)
{
    if (!type)
        return -1;
    for (int i = 0; i < EVENTS_CUSTOM; i++)
        if (!strcmp(type, kind_names[i]))
            return i;
    size_t n = strlen(type);
    if (n < 1 || n > 32)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = type[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return -1;
    }
    return EVENTS_CUSTOM;
}
