/*
 * buf.h — a growable byte buffer (always NUL-terminated).
 *
 * Owns its memory; buf_free() releases it.  Append functions return 0 or
 * ERR_NOMEM and leave the buffer valid on failure.  Not thread-safe: one
 * owner at a time.
 */
#ifndef PROMOD_BUF_H
#define PROMOD_BUF_H
#include <stddef.h>

struct buf {
    char *p;      /**< data, NUL-terminated when cap > 0 */
    size_t len;   /**< bytes used, excluding the NUL */
    size_t cap;   /**< bytes allocated */
};

#define BUF_INIT { NULL, 0, 0 }

int buf_reserve(struct buf *b, size_t extra);
int buf_add(struct buf *b, const void *data, size_t len);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append s HTML-escaped (& < > " ' become entities). */
int buf_add_html(struct buf *b, const char *s, size_t len);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);
/** Give the string away: returns b->p (caller frees) and resets b. */
char *buf_steal(struct buf *b);

#endif
