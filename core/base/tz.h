/*
 * tz.h — time: named time zones, ISO-8601 instants, durations.
 *
 * Zones are read from the system's TZif files (/usr/share/zoneinfo, the
 * tzdata package) on first use and cached for the life of the process;
 * "UTC", "Z" and fixed offsets ("+02:00", "-0530") need no file.  Every
 * function is thread-safe and allocation-free after a zone's first load.
 */
#ifndef PROMOD_TZ_H
#define PROMOD_TZ_H
#include <stdint.h>
#include <time.h>

/** UTC offset in seconds of `zone` at unix time `t`.
 *  `zone` is an IANA name ("Europe/Paris"; characters A-Z a-z 0-9 _ + - /,
 *  no leading or trailing '/', at most 128 bytes), "UTC", "Z", or a fixed
 *  offset "+HH", "+HH:MM", "+HHMM" (also with '-'; HH <= 23).  Instants after
 *  the file's last transition follow its POSIX TZ footer (M, J and n rule
 *  forms); zones with leap-second tables ("right/...") are refused.
 *  @return 0, or ERR_NOTFOUND for an unknown zone (no such file, not a valid
 *  TZif file), ERR_INVAL for a bad name (path traversal, empty, bad
 *  characters), ERR_NOMEM. */
int tz_offset(const char *zone, int64_t t, int *offset_sec);

/** Broken-down local time of `t` in `zone` (tm_wday 0=Sunday, tm_yday set).
 *  Also sets tm_isdst, tm_gmtoff and tm_zone (the zone's abbreviation, a
 *  static string that lives as long as the process; "UTC" for UTC and ""
 *  for other fixed offsets).  @return as tz_offset(), or ERR_INVAL when the local year does
 *  not fit struct tm. */
int tz_local(const char *zone, int64_t t, struct tm *out);

/** Validate a zone name and load it into the cache (for config and API
 *  input checks).  @return as tz_offset(). */
int tz_check(const char *zone);

/** Unix time of a local wall-clock time in `zone` (mon 1..12, year
 *  0..9999).  An ambiguous time (DST fall-back) gives the earlier instant;
 *  a time inside a spring-forward gap is moved forward past the gap
 *  (02:30 on a CET→CEST day gives 03:30 CEST).
 *  @return 0, ERR_INVAL (out-of-range field), or as tz_offset(). */
int tz_from_local(const char *zone, int year, int mon, int mday, int hour, int min, int sec,
                  int64_t *out);

/** Parse an ISO-8601 instant: "2026-03-01T00:00:00Z", "...+02:00",
 *  "2026-03-01T00:00:00" (UTC), "2026-03-01" (midnight UTC), fractional
 *  seconds allowed.  Strict: 4-digit year, 'T' or ' ' separator, seconds
 *  optional ("...T10:30Z"), fraction ('.' or ',', truncated) only after
 *  seconds, zone "Z", "+HH:MM" or "+HHMM" (or none = UTC); ranges and leap
 *  years checked, 24:00 and leap second :60 refused, no surrounding space.
 *  @return 0 or ERR_INVAL. */
int tz_parse_iso8601(const char *s, int64_t *out);

/** Format unix time as "2026-03-01T00:00:00Z" into buf (>= 21 bytes for
 *  years 0..9999; truncated like snprintf when shorter; "" for instants
 *  beyond ±2^56 s). */
void tz_format_iso8601(int64_t t, char *buf, size_t len);

/** Parse a duration "N[smhdw]" ("90s", "30m", "1h", "7d", "2w"), N >= 1,
 *  decimal digits only (no sign, spaces or fraction), result must fit int64.
 *  @return 0 or ERR_INVAL. */
int tz_parse_duration(const char *s, int64_t *secs);

#endif
