/*
 * i18n.c — locale matching and ICU formatting (see i18n.h).
 *
 * Why a cache: unum_open / udat_open load locale data and build a pattern,
 * which costs more than formatting one value; templates format on
 * every offer.  Each thread keeps its last formatters, keyed by kind,
 * locale, argument and zone, and reuses them (an ICU formatter may be used
 * by one thread at a time, which a per-thread cache guarantees).
 */
#include "base/i18n.h"
#include "base/err.h"
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unicode/udat.h>
#include <unicode/uloc.h>
#include <unicode/unum.h>
#include <unicode/ustring.h>

/* --- matching ----------------------------------------------------------- */

static int tag_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i] == '_' ? '-' : (char)tolower((unsigned char)a[i]);
        char y = b[i] == '_' ? '-' : (char)tolower((unsigned char)b[i]);
        if (x != y)
            return 0;
    }
    return 1;
}

int i18n_match(const char *tag, char *const *avail, int n)
{
    if (!tag || !*tag)
        return -1;
    size_t len = strlen(tag);
    while (len) {
        for (int i = 0; i < n; i++)
            if (strlen(avail[i]) == len && tag_eq(avail[i], tag, len))
                return i;
        while (len && tag[len - 1] != '-' && tag[len - 1] != '_') /* drop the last subtag */
            len--;
        if (len)
            len--;
    }
    return -1;
}

int i18n_accept(const char *h, char tags[][I18N_TAG_MAX], int max)
{
    double q[16];
    int n = 0;
    if (max > 16)
        max = 16;
    while (h && *h && n < max) {
        while (*h == ' ' || *h == ',')
            h++;
        const char *start = h;
        while (*h && *h != ',' && *h != ';' && *h != ' ')
            h++;
        size_t tl = (size_t)(h - start);
        double qv = 1;
        while (*h == ' ')
            h++;
        while (*h == ';') { /* parameters: only q matters */
            h++;
            while (*h == ' ')
                h++;
            if ((h[0] == 'q' || h[0] == 'Q') && h[1] == '=')
                qv = strtod(h + 2, NULL);
            while (*h && *h != ',' && *h != ';')
                h++;
        }
        if (!tl || tl >= I18N_TAG_MAX || (tl == 1 && start[0] == '*') || !(qv > 0))
            continue;
        int ok = 1;
        for (size_t i = 0; i < tl; i++)
            ok &= isalnum((unsigned char)start[i]) || start[i] == '-' || start[i] == '_';
        if (!ok)
            continue;
        int at = n; /* stable insertion by descending q */
        while (at > 0 && q[at - 1] < qv)
            at--;
        for (int j = n; j > at; j--) {
            memcpy(tags[j], tags[j - 1], I18N_TAG_MAX);
            q[j] = q[j - 1];
        }
        memcpy(tags[at], start, tl);
        tags[at][tl] = 0;
        q[at] = qv;
        n++;
    }
    return n;
}

/* --- arguments ------------------------------------------------------------ */

static int style_of(const char *arg)
{
    if (!arg || !strcmp(arg, "medium"))
        return UDAT_MEDIUM;
    if (!strcmp(arg, "short"))
        return UDAT_SHORT;
    if (!strcmp(arg, "long"))
        return UDAT_LONG;
    if (!strcmp(arg, "full"))
        return UDAT_FULL;
    return -1;
}

static int decimals_of(const char *arg)
{
    if (!arg)
        return -1;
    if (!arg[0] || strlen(arg) > 2 || !isdigit((unsigned char)arg[0]) ||
        (arg[1] && !isdigit((unsigned char)arg[1])))
        return -2;
    int d = atoi(arg);
    return d > 10 ? -2 : d;
}

int i18n_arg_ok(enum i18n_kind k, const char *arg, char *why, size_t whylen)
{
    const char *msg = NULL;
    switch (k) {
    case I18N_CURRENCY:
        if (!arg || strlen(arg) != 3 || !isupper((unsigned char)arg[0]) ||
            !isupper((unsigned char)arg[1]) || !isupper((unsigned char)arg[2]))
            msg = "currency needs a three-letter ISO 4217 code, like currency:EUR";
        break;
    case I18N_NUMBER:
    case I18N_PERCENT:
        if (decimals_of(arg) == -2)
            msg = "the decimals must be a whole number from 0 to 10, like number:2";
        break;
    default:
        if (style_of(arg) < 0)
            msg = "the style must be short, medium, long or full, like date:medium";
    }
    if (msg && why && whylen)
        snprintf(why, whylen, "%s", msg);
    return msg == NULL;
}

/* --- the per-thread formatter cache --------------------------------------- */

#define CACHE_SLOTS 32

struct slot {
    int used;
    enum i18n_kind kind;
    char key[96];       /* locale \1 arg \1 tz */
    void *fmt;          /* UNumberFormat or UDateFormat */
    unsigned long tick; /* last use, for eviction */
};

struct cache {
    struct slot s[CACHE_SLOTS];
    unsigned long tick;
};

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void slot_close(struct slot *s)
{
    if (!s->used)
        return;
    if (s->kind >= I18N_DATE)
        udat_close(s->fmt);
    else
        unum_close(s->fmt);
    s->used = 0;
}

static void cache_free(void *p)
{
    struct cache *c = p;
    for (int i = 0; i < CACHE_SLOTS; i++)
        slot_close(&c->s[i]);
    free(c);
}

static void make_key(void) { pthread_key_create(&g_key, cache_free); }

static struct cache *cache_get(void)
{
    pthread_once(&g_once, make_key);
    struct cache *c = pthread_getspecific(g_key);
    if (!c && (c = calloc(1, sizeof *c)))
        pthread_setspecific(g_key, c);
    return c;
}

/* "fr-CA" → ICU's "fr_CA" (its own parser, so scripts and variants map right). */
static void icu_locale(const char *tag, char *out, size_t len)
{
    UErrorCode st = U_ZERO_ERROR;
    int32_t parsed = 0;
    uloc_forLanguageTag(tag && *tag ? tag : "en", out, (int32_t)len, &parsed, &st);
    if (U_FAILURE(st) || !out[0])
        snprintf(out, len, "en");
}

static void *open_fmt(enum i18n_kind k, const char *locale, const char *arg, const char *tz)
{
    char loc[ULOC_FULLNAME_CAPACITY];
    icu_locale(locale, loc, sizeof loc);
    UErrorCode st = U_ZERO_ERROR;
    if (k >= I18N_DATE) {
        int style = style_of(arg);
        char zone[80];
        if (!tz || !*tz)
            snprintf(zone, sizeof zone, "UTC");
        else if (tz[0] == '+' || tz[0] == '-')
            snprintf(zone, sizeof zone, "GMT%s", tz); /* "+02:00" */
        else
            snprintf(zone, sizeof zone, "%s", tz);
        UChar uz[80];
        int32_t zl = 0;
        u_strFromUTF8(uz, 80, &zl, zone, -1, &st);
        if (U_FAILURE(st))
            return NULL;
        UDateFormatStyle ts = k == I18N_DATE ? UDAT_NONE : (UDateFormatStyle)style;
        UDateFormatStyle ds = k == I18N_TIME ? UDAT_NONE : (UDateFormatStyle)style;
        UDateFormat *f = udat_open(ts, ds, loc, uz, zl, NULL, -1, &st);
        if (U_FAILURE(st)) {
            if (f)
                udat_close(f);
            return NULL;
        }
        return f;
    }
    UNumberFormatStyle ns = k == I18N_CURRENCY ? UNUM_CURRENCY
                            : k == I18N_PERCENT ? UNUM_PERCENT
                                                : UNUM_DECIMAL;
    UNumberFormat *f = unum_open(ns, NULL, 0, loc, NULL, &st);
    if (U_FAILURE(st)) {
        if (f)
            unum_close(f);
        return NULL;
    }
    if (k == I18N_CURRENCY) {
        /* the code is part of the formatter (and of its cache key): setting
         * it per call, as unum_formatDoubleCurrency does, rebuilds the
         * pattern each time and costs fifty times the formatting */
        UChar cur[4] = { (UChar)arg[0], (UChar)arg[1], (UChar)arg[2], 0 };
        unum_setTextAttribute(f, UNUM_CURRENCY_CODE, cur, 3, &st);
        if (U_FAILURE(st)) {
            unum_close(f);
            return NULL;
        }
    }
    int d = k == I18N_CURRENCY ? -1 : decimals_of(arg);
    if (d >= 0) {
        unum_setAttribute(f, UNUM_MIN_FRACTION_DIGITS, d);
        unum_setAttribute(f, UNUM_MAX_FRACTION_DIGITS, d);
    } else if (k == I18N_NUMBER) {
        unum_setAttribute(f, UNUM_MAX_FRACTION_DIGITS, 6); /* 1234.5 stays 1,234.5 */
    }
    return f;
}

static void *fmt_get(enum i18n_kind k, const char *locale, const char *arg, const char *tz)
{
    struct cache *c = cache_get();
    char key[96];
    int kl = snprintf(key, sizeof key, "%s\1%s\1%s", locale ? locale : "", arg ? arg : "",
                      k >= I18N_DATE && tz ? tz : "");
    if (!c || kl >= (int)sizeof key)
        return NULL;
    struct slot *victim = &c->s[0];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct slot *s = &c->s[i];
        if (s->used && s->kind == k && !strcmp(s->key, key)) {
            s->tick = ++c->tick;
            return s->fmt;
        }
        if (!s->used || (victim->used && s->tick < victim->tick))
            victim = s;
    }
    void *f = open_fmt(k, locale, arg, tz);
    if (!f)
        return NULL;
    slot_close(victim);
    *victim = (struct slot){ 1, k, "", f, ++c->tick };
    memcpy(victim->key, key, (size_t)kl + 1);
    return f;
}

/* --- formatting ------------------------------------------------------------ */

int i18n_format(enum i18n_kind k, const char *locale, const char *arg, double v, const char *tz,
                struct buf *out)
{
    if (!i18n_arg_ok(k, arg, NULL, 0) || !isfinite(v))
        return ERR_INVAL;
    void *f = fmt_get(k, locale, arg, tz);
    if (!f)
        return ERR_INVAL;
    UChar u[256];
    UErrorCode st = U_ZERO_ERROR;
    int32_t n;
    if (k >= I18N_DATE) {
        if (fabs(v) > 1e13) /* beyond year 300,000: not a date anyone means */
            return ERR_INVAL;
        n = udat_format(f, v * 1000.0, u, 256, NULL, &st);
    } else {
        n = unum_formatDouble(f, v, u, 256, NULL, &st);
    }
    if (U_FAILURE(st) || n < 0 || n >= 256)
        return ERR_INVAL;
    char s[1024];
    int32_t sl = 0;
    st = U_ZERO_ERROR;
    u_strToUTF8(s, (int32_t)sizeof s, &sl, u, n, &st);
    if (U_FAILURE(st) || sl < 0 || sl >= (int32_t)sizeof s)
        return ERR_INVAL;
    return buf_add(out, s, (size_t)sl) ? ERR_NOMEM : 0;
}
