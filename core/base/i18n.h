/*
 * i18n.h — locales: choosing one from what a request asks for, and
 * formatting numbers, money and dates the way a locale writes them (ICU).
 *
 * Owns: locale tag matching with a fallback chain ("fr-CA" → "fr" → the
 * default), Accept-Language parsing, and per-thread caches of ICU
 * formatters: opening one costs about 30 µs, a cached one formats a
 * number or an amount in about 2 µs and a date in about 4 µs
 * (scripts/bench-i18n.sh on the shared 2-core machine).  A currency
 * formatter is opened per code: switching the code per call cost ~75 µs.
 * Tags are BCP 47 ("fr-CA", "zh-Hant");
 * matching ignores ASCII case and treats "_" like "-".
 *
 * Used by templates (engine/tmpl: {{price|currency:EUR}},
 * {{expires|date:medium}}) and by decide's choice of a variant's locale.
 *
 * Threads: every function from any thread; the formatter cache is
 * per thread and freed when the thread exits.
 */
#ifndef PROMOD_I18N_H
#define PROMOD_I18N_H
#include <stddef.h>
#include "base/buf.h"

#define I18N_TAG_MAX 36 /**< a locale tag's bytes, with the NUL */

/** What to format. */
enum i18n_kind {
    I18N_NUMBER,   /**< arg: decimals "0".."10", or NULL for the locale's default */
    I18N_CURRENCY, /**< arg: ISO 4217 code "EUR" (required) */
    I18N_PERCENT,  /**< 0.25 → "25 %" (fr); arg: decimals or NULL */
    I18N_DATE,     /**< arg: "short" | "medium" | "long" | "full" (NULL = medium) */
    I18N_TIME,     /**< same styles */
    I18N_DATETIME  /**< same styles, date and time */
};

/** Is `arg` valid for a kind (a currency code of three letters A-Z, a
 *  style name, decimals 0-10)?  @return 1 or 0; `why` (may be NULL) gets
 *  a message when not. */
int i18n_arg_ok(enum i18n_kind k, const char *arg, char *why, size_t whylen);

/** Append `v` formatted for `locale` (a tag; NULL or "" = "en") to `out`.
 *  Dates: `v` is unix seconds, shown in zone `tz` (an Olson name or
 *  "+02:00"; NULL = UTC).  @return 0, ERR_INVAL (a bad arg, or a value
 *  ICU cannot format), ERR_NOMEM. */
int i18n_format(enum i18n_kind k, const char *locale, const char *arg, double v, const char *tz,
                struct buf *out);

/** The best of `n` available tags for `tag`: the one equal to it, else
 *  to its parent ("fr-CA" → "fr", "zh-Hant-TW" → "zh-Hant" → "zh"), and so
 *  on.  @return its index, or -1 when none matches (the caller falls back
 *  to its default). */
int i18n_match(const char *tag, char *const *avail, int n);

/** Parse an Accept-Language header ("fr-CA,fr;q=0.9,en;q=0.5") into at
 *  most `max` tags by descending q (ties in header order; q=0 and "*" are
 *  left out).  @return how many. */
int i18n_accept(const char *header, char tags[][I18N_TAG_MAX], int max);

#endif
