/*
 * log.h — structured log lines on stderr.
 *
 * One line per call: `ts=2026-11-25T08:00:00.123Z level=info msg="..." k=v`.
 * The format arguments after the message are appended verbatim, so callers
 * write `log_info("reload", "files=%d ms=%.1f", n, ms)`.  Thread-safe (one
 * write(2) per line).  log_set_level() filters; LOG_QUIET silences all.
 */
#ifndef PROMOD_LOG_H
#define PROMOD_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_QUIET };

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/** Parse "debug|info|warn|error|quiet"; returns -1 for anything else. */
int log_level_parse(const char *s);

void log_write(enum log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...) log_write(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...)  log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...)  log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_ERROR, msg, __VA_ARGS__)

#endif
