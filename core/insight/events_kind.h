/*
 * events_kind.h — the event types: impression, click, conversion, send,
 * open, dismiss, and custom names.  The vocabulary ingestion (events.h),
 * the per-chunk accumulators (events_agg.h), the stored log
 * (events_log.h) and analytics share; nothing else lives here.
 *
 * Threads: any (constant data).
 */
#ifndef PROMOD_EVENTS_KIND_H
#define PROMOD_EVENTS_KIND_H

/** Known event types; custom types are EVENTS_CUSTOM. */
enum events_kind {
    EVENTS_IMPRESSION = 0, EVENTS_CLICK, EVENTS_CONVERSION, EVENTS_SEND, EVENTS_OPEN,
    EVENTS_DISMISS, EVENTS_CUSTOM, EVENTS_NKINDS
};

/** Name of a known kind ("impression" ...; "custom" for EVENTS_CUSTOM,
 *  "?" out of range).  Static string. */
const char *events_kind_name(enum events_kind k);
/** Kind of a type name: a known kind, EVENTS_CUSTOM for a valid custom
 *  name ([a-z0-9_]{1,32}), or -1 when the name is not valid (or NULL). */
int events_kind_of(const char *type);

#endif
