/*
 * test_i18n.c — locales: the fallback chain, Accept-Language, and ICU
 * formatting of numbers, money and dates (fr, de, en-US, ja, ar), alone and
 * through template format filters ({{price|currency:EUR}}).
 *
 * The expected strings are how CLDR (the data ICU ships) writes these
 * values: French groups digits with U+202F (narrow no-break space) and puts
 * U+00A0 before "€" and "%"; Arabic uses Arabic-Indic digits with U+066C /
 * U+066B as separators.  They are written as byte escapes so an editor
 * cannot turn them into plain spaces.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/i18n.h"
#include "engine/tmpl.h"

TestSuite(i18n, .timeout = 60);

#define NNBSP "\xe2\x80\xaf" /* U+202F */
#define NBSP "\xc2\xa0"      /* U+00A0 */
#define EURO "\xe2\x82\xac"

#define NOW_TUE_1200 1773144000.0 /* 2026-03-10T12:00:00Z */

/* ---- the fallback chain ---------------------------------------------------- */

Test(i18n, match_walks_the_chain_to_the_parent)
{
    char *avail[] = { "en", "fr", "fr-CA", "zh-Hant", "pt_BR" };
    cr_expect_eq(i18n_match("fr-CA", avail, 5), 2, "exact");
    cr_expect_eq(i18n_match("FR_ca", avail, 5), 2, "case and '_' do not matter");
    cr_expect_eq(i18n_match("fr-BE", avail, 5), 1, "fr-BE → fr");
    cr_expect_eq(i18n_match("fr", avail, 5), 1);
    cr_expect_eq(i18n_match("zh-Hant-TW", avail, 5), 3, "zh-Hant-TW → zh-Hant");
    cr_expect_eq(i18n_match("pt-BR", avail, 5), 4, "declared with '_', asked with '-'");
    cr_expect_eq(i18n_match("de-AT", avail, 5), -1, "nothing: the caller's default");
    cr_expect_eq(i18n_match("f", avail, 5), -1, "a prefix of a tag is not its parent");
    cr_expect_eq(i18n_match("", avail, 5), -1);
    cr_expect_eq(i18n_match(NULL, avail, 5), -1);
    char *one[] = { "fr-CA" };
    cr_expect_eq(i18n_match("fr", one, 1), -1, "a child is never a parent's fallback");
}

Test(i18n, accept_language_by_preference)
{
    char t[8][I18N_TAG_MAX];
    int n = i18n_accept("de;q=0.5, fr-CA,fr;q=0.9 , en;q=0.5,*;q=0.1,ja;q=0", t, 8);
    cr_assert_eq(n, 4, "'*' and q=0 are left out");
    cr_expect_str_eq(t[0], "fr-CA");
    cr_expect_str_eq(t[1], "fr");
    cr_expect_str_eq(t[2], "de", "ties keep header order");
    cr_expect_str_eq(t[3], "en");
    cr_expect_eq(i18n_accept("", t, 8), 0);
    cr_expect_eq(i18n_accept(NULL, t, 8), 0);
    cr_expect_eq(i18n_accept("en, <script>, fr", t, 8), 2, "a token that is not a tag is skipped");
    cr_expect_str_eq(t[1], "fr");
    cr_expect_eq(i18n_accept("a,b,c,d,e,f,g,h,i,j", t, 3), 3, "at most max");
    char longtag[200];
    memset(longtag, 'x', sizeof longtag - 1);
    longtag[sizeof longtag - 1] = 0;
    cr_expect_eq(i18n_accept(longtag, t, 8), 0, "an oversized tag is not copied");
}

/* ---- formatting -------------------------------------------------------------- */

struct fcase {
    int kind;
    char locale[16];
    char arg[16]; /* "" = none */
    double v;
    char tz[24];  /* "" = UTC */
    char want[64];
};

ParameterizedTestParameters(i18n, format)
{
    static struct fcase cases[] = {
        /* money */
        { I18N_CURRENCY, "fr", "EUR", 1234.5, "", "1" NNBSP "234,50" NBSP EURO },
        { I18N_CURRENCY, "de", "EUR", 1234.5, "", "1.234,50" NBSP EURO },
        { I18N_CURRENCY, "en-US", "EUR", 1234.5, "", EURO "1,234.50" },
        { I18N_CURRENCY, "en-US", "USD", 1234.5, "", "$1,234.50" },
        { I18N_CURRENCY, "ja", "JPY", 1234, "", "\xef\xbf\xa5" "1,234" },
        { I18N_CURRENCY, "ar", "EUR", 1234.5, "",
          "\xe2\x80\x8f\xd9\xa1\xd9\xac\xd9\xa2\xd9\xa3\xd9\xa4\xd9\xab\xd9\xa5\xd9\xa0" NBSP EURO },
        /* numbers */
        { I18N_NUMBER, "fr", "", 1234567.891, "", "1" NNBSP "234" NNBSP "567,891" },
        { I18N_NUMBER, "de", "2", 1234.5, "", "1.234,50" },
        { I18N_NUMBER, "en-US", "0", 1234.5, "", "1,234" }, /* half-even */
        { I18N_NUMBER, "ja", "", 1234567.891, "", "1,234,567.891" },
        { I18N_NUMBER, "ar", "2", 1234.5,
          "", "\xd9\xa1\xd9\xac\xd9\xa2\xd9\xa3\xd9\xa4\xd9\xab\xd9\xa5\xd9\xa0" },
        { I18N_PERCENT, "fr", "", 0.25, "", "25" NBSP "%" },
        { I18N_PERCENT, "en-US", "", 0.25, "", "25%" },
        /* dates: 2026-03-10 12:00 UTC */
        { I18N_DATE, "fr", "medium", NOW_TUE_1200, "", "10 mars 2026" },
        { I18N_DATE, "de", "long", NOW_TUE_1200, "", "10. M\xc3\xa4rz 2026" },
        { I18N_DATE, "de", "medium", NOW_TUE_1200, "", "10.03.2026" },
        { I18N_DATE, "en-US", "medium", NOW_TUE_1200, "", "Mar 10, 2026" },
        { I18N_DATE, "en-US", "short", NOW_TUE_1200, "+02:00", "3/10/26" },
        { I18N_DATE, "ja", "long", NOW_TUE_1200, "Asia/Tokyo",
          "2026\xe5\xb9\xb4" "3\xe6\x9c\x88" "10\xe6\x97\xa5" },
        { I18N_DATE, "ar", "long", NOW_TUE_1200, "",
          "\xd9\xa1\xd9\xa0 \xd9\x85\xd8\xa7\xd8\xb1\xd8\xb3 \xd9\xa2\xd9\xa0\xd9\xa2\xd9\xa6" },
        /* the zone moves the clock: 12:00 UTC is 13:00 in Paris, 21:00 in Tokyo */
        { I18N_TIME, "fr", "short", NOW_TUE_1200, "Europe/Paris", "13:00" },
        { I18N_TIME, "fr-CA", "short", NOW_TUE_1200, "Europe/Paris", "13 h 00" },
        { I18N_TIME, "en-US", "short", NOW_TUE_1200, "Asia/Tokyo", "9:00" NNBSP "PM" },
        { I18N_TIME, "de", "short", NOW_TUE_1200, "+02:00", "14:00" },
    };
    return cr_make_param_array(struct fcase, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct fcase *c, i18n, format)
{
    struct buf b = BUF_INIT;
    int rc = i18n_format((enum i18n_kind)c->kind, c->locale, c->arg[0] ? c->arg : NULL, c->v,
                         c->tz[0] ? c->tz : NULL, &b);
    cr_assert_eq(rc, 0, "%s %s: %s", c->locale, c->arg, err_str(rc));
    buf_add(&b, "", 1);
    cr_expect_str_eq(b.p, c->want, "kind %d locale %s arg %s", c->kind, c->locale, c->arg);
    buf_free(&b);
}

Test(i18n, same_formatter_again_and_across_locales)
{
    /* the per-thread cache must give each key its own formatter */
    for (int round = 0; round < 3; round++) {
        const char *loc[] = { "fr", "de", "en-US" };
        const char *want[] = { "1" NNBSP "234,50" NBSP EURO, "1.234,50" NBSP EURO, EURO "1,234.50" };
        for (int i = 0; i < 3; i++) {
            struct buf b = BUF_INIT;
            cr_assert_eq(i18n_format(I18N_CURRENCY, loc[i], "EUR", 1234.5, NULL, &b), 0);
            buf_add(&b, "", 1);
            cr_expect_str_eq(b.p, want[i], "round %d %s", round, loc[i]);
            buf_free(&b);
        }
    }
    /* more keys than the cache holds: evicted formatters reopen correctly */
    for (int d = 0; d <= 10; d++)
        for (int k = 0; k < 4; k++) {
            const char *loc[] = { "fr", "de", "en", "ja" };
            char arg[16];
            snprintf(arg, sizeof arg, "%d", d);
            struct buf b = BUF_INIT;
            cr_assert_eq(i18n_format(I18N_NUMBER, loc[k], arg, 1.5, NULL, &b), 0);
            buf_add(&b, "", 1);
            const char *dot = strpbrk(b.p, ".,");
            size_t frac = dot ? strlen(dot + 1) : 0;
            cr_expect_eq(frac, (size_t)d, "%s with %d decimals: %s", loc[k], d, b.p);
            buf_free(&b);
        }
}

Test(i18n, bad_arguments_and_values)
{
    char why[128];
    cr_expect_eq(i18n_arg_ok(I18N_CURRENCY, "EURO", why, sizeof why), 0);
    cr_expect(strstr(why, "ISO 4217"), "%s", why);
    cr_expect_eq(i18n_arg_ok(I18N_CURRENCY, "eur", NULL, 0), 0);
    cr_expect_eq(i18n_arg_ok(I18N_CURRENCY, NULL, NULL, 0), 0, "currency needs a code");
    cr_expect_eq(i18n_arg_ok(I18N_NUMBER, "11", NULL, 0), 0);
    cr_expect_eq(i18n_arg_ok(I18N_NUMBER, "-1", NULL, 0), 0);
    cr_expect_eq(i18n_arg_ok(I18N_NUMBER, "10", NULL, 0), 1);
    cr_expect_eq(i18n_arg_ok(I18N_NUMBER, NULL, NULL, 0), 1);
    cr_expect_eq(i18n_arg_ok(I18N_DATE, "longest", why, sizeof why), 0);
    cr_expect(strstr(why, "short, medium, long or full"), "%s", why);
    cr_expect_eq(i18n_arg_ok(I18N_DATE, NULL, NULL, 0), 1, "medium");

    struct buf b = BUF_INIT;
    cr_expect_eq(i18n_format(I18N_NUMBER, "fr", NULL, NAN, NULL, &b), ERR_INVAL);
    cr_expect_eq(i18n_format(I18N_NUMBER, "fr", NULL, INFINITY, NULL, &b), ERR_INVAL);
    cr_expect_eq(i18n_format(I18N_DATE, "fr", NULL, 1e15, NULL, &b), ERR_INVAL, "year 30 million");
    cr_expect_eq(i18n_format(I18N_CURRENCY, "fr", "EURO", 1, NULL, &b), ERR_INVAL);
    cr_expect_eq(b.len, 0u, "nothing written on an error");
    /* a locale ICU does not know formats as its root data, never fails */
    cr_expect_eq(i18n_format(I18N_NUMBER, "zz-!!", "0", 1234, NULL, &b), 0);
    cr_expect_eq(i18n_format(I18N_NUMBER, NULL, "0", 1234, NULL, &b), 0);
    buf_free(&b);
}

/* ---- through templates --------------------------------------------------------- */

static const char *vals[][2] = {
    { "price", "1234.5" },  { "expires", "1773144000" }, { "when", "2026-03-10T12:00:00Z" },
    { "name", "Ann" },      { "share", "0.25" },         { "huge", "1e400" },
};

static int lookup(void *ud, const char *path, size_t len, struct buf *out)
{
    (void)ud;
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (strlen(vals[i][0]) == len && !memcmp(vals[i][0], path, len))
            return buf_adds(out, vals[i][1]) ? ERR_NOMEM : 1;
    return 0;
}

static char *run(const char *tpl, const char *locale, const char *tz)
{
    struct tmpl_prog *t = tmpl_compile(tpl, strlen(tpl));
    cr_assert_not_null(t);
    struct buf val = BUF_INIT, out = BUF_INIT;
    struct tmpl_fmt f = { locale, tz };
    int rc = tmpl_run_fmt(t, 1, locale ? &f : NULL, lookup, NULL, &val, &out);
    cr_assert_eq(rc, 0, "%s: %s", tpl, err_str(rc));
    tmpl_prog_free(t);
    buf_free(&val);
    return buf_steal(&out);
}

Test(i18n, template_filters)
{
    struct { const char *tpl, *locale, *tz, *want; } c[] = {
        { "{{price|currency:EUR}}", "fr", NULL, "1" NNBSP "234,50" NBSP EURO },
        { "{{ price | currency:EUR }}", "de", NULL, "1.234,50" NBSP EURO },
        { "{{price|currency:EUR}}", NULL, NULL, EURO "1,234.50" },  /* no locale: en */
        { "{{price|number:1}}", "en-US", NULL, "1,234.5" },
        { "{{share|percent}}", "en-US", NULL, "25%" },
        { "{{expires|date:medium}}", "fr", NULL, "10 mars 2026" },
        { "{{expires|date}}", "en-US", NULL, "Mar 10, 2026" },
        { "{{when|date:long}}", "de", NULL, "10. M\xc3\xa4rz 2026" },          /* ISO-8601 */
        { "{{expires|time:short}}", "fr", "Europe/Paris", "13:00" },
        /* missing, unreadable or out of range: the default after a second bar */
        { "[{{nope|currency:EUR|on request}}]", "fr", NULL, "[on request]" },
        { "[{{name|number|n/a}}]", "fr", NULL, "[n/a]" },
        { "[{{name|date}}]", "fr", NULL, "[]" },
        { "[{{huge|number|big}}]", "fr", NULL, "[big]" },
        /* a word that is not a filter stays a default, bars and all */
        { "[{{nope|numbers|x}}]", "fr", NULL, "[numbers|x]" },
        /* a bad argument: the placeholder is literal (and tmpl_check says why) */
        { "[{{price|currency:EURO}}]", "fr", NULL, "[{{price|currency:EURO}}]" },
        /* values are escaped after formatting like any other */
        { "<{{price|number:0}}>", "en-US", NULL, "<1,234>" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *got = run(c[i].tpl, c[i].locale, c[i].tz);
        cr_expect_str_eq(got, c[i].want, "%s in %s", c[i].tpl, c[i].locale ? c[i].locale : "-");
        free(got);
    }
}

Test(i18n, template_check_reports_bad_filters)
{
    char err[160];
    cr_expect_eq(tmpl_check("{{p|currency:EUR}} {{d|date:full}} {{n|number:3|-}}", 52, err,
                            sizeof err), 0, "%s", err);
    const char *bad[] = { "{{p|currency:EURO}}", "{{p|currency}}", "{{d|date:tomorrow}}",
                          "{{n|number:x}}", "{{n|number:99}}", "{{p|currency:ABCDEFGHIJKLMNOPQRSTU}}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_expect_eq(tmpl_check(bad[i], strlen(bad[i]), err, sizeof err), ERR_INVAL, "%s", bad[i]);
        cr_expect(strstr(err, "at offset 0"), "%s: %s", bad[i], err);
    }
    struct tmpl_prog *t = tmpl_compile("{{a}} {{b|number}}", 18);
    cr_expect_eq(tmpl_has_format(t), 1);
    tmpl_prog_free(t);
    t = tmpl_compile("{{a}} {{b|friend}}", 18);
    cr_expect_eq(tmpl_has_format(t), 0);
    tmpl_prog_free(t);
}
