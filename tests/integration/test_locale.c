/*
 * test_locale.c — localized content on a real server: a campaign that
 * declares `locales` serves the content of the locale the request asks for
 * (context.locale, else the profile's `locale`, else Accept-Language), down
 * the fallback chain (fr-CA → fr → the default), with explain showing the
 * choice; format filters write money and dates for that locale (ICU) and
 * dates in the profile's `tz`.  `promod check` refuses a localized value
 * without the default locale, a bad tag and a bad filter argument.
 *
 * Expected strings are CLDR's (U+202F groups French digits in France,
 * U+00A0 in Canada; U+00A0 precedes "€" in both).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

#define NBSP "\xc2\xa0"
#define NNBSP "\xe2\x80\xaf"
#define EURO "\xe2\x82\xac"

static struct tfx_server srv;

#define NOW_TUE_1200 1773144000L /* 2026-03-10T12:00:00Z */

static const char *const files[] = {
    "plugins/web.lua", "return { channel = 'web', policy = { customer = { { 1000, '1d' } } } }\n",

    "rules/sale.lua",
    "return {\n"
    "  id = 'sale', channels = { 'web' }, priority = 50,\n"
    "  locales = { 'en', 'fr', 'fr-CA', 'ja' },\n"
    "  variants = { { id = 'A', content = {\n"
    "    headline = { en = 'Sale for {{first_name}}', fr = 'Soldes pour {{first_name}}',\n"
    "                 ja = '{{first_name}}\xe3\x81\x95\xe3\x82\x93\xe3\x81\xb8' },\n"
    "    price = '{{price|currency:EUR}}',\n"
    "    ends = '{{ends|date:long|soon}}',\n"
    "  } } },\n"
    /* a file that writes a table: its hooks get read-only views of p and
     * ctx, and the locale is still read from the tables themselves */
    "  eligible = function(p, ctx) local t = {}; t.seen = p.locale; return true end,\n"
    "}\n",

    /* not localized, but formats: the request's locale writes the number */
    "rules/plain.lua",
    "return { id = 'plain', channels = { 'web' }, priority = 40,\n"
    "  variants = { { id = 'A', content = { n = '{{price|number:1}}' } } },\n"
    "  eligible = function(p, ctx) return true end }\n",
    NULL
};

static const char *const profiles[] = {
    /* 2026-03-10T20:00:00Z: still the 10th in UTC, the 11th in Tokyo */
    "ann", "{\"first_name\":\"Ann\",\"price\":1234.5,\"ends\":1773172800}",
    "bea", "{\"first_name\":\"Bea\",\"price\":1234.5,\"ends\":1773172800,\"locale\":\"fr\"}",
    "kei", "{\"first_name\":\"Kei\",\"price\":1234.5,\"ends\":1773172800,\"locale\":\"de-AT\","
           "\"tz\":\"Asia/Tokyo\"}",
    NULL
};

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    for (int i = 0; files[i]; i += 2)
        tfx_write(&srv, files[i], files[i + 1]);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    for (int i = 0; profiles[i]; i += 2) {
        char path[128];
        snprintf(path, sizeof path, "/api/v1/profiles/%s", profiles[i]);
        struct tfx_resp r;
        int st = tfx_req(&srv, "PUT", path, profiles[i + 1], &r);
        cr_assert(st == 200 || st == 201, "PUT %s: %d %s", path, st, r.body);
        tfx_resp_free(&r);
    }
    struct tfx_resp r;
    char b[64];
    snprintf(b, sizeof b, "{\"now\":%ld}", NOW_TUE_1200);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(locale, .init = setup, .fini = teardown, .timeout = 60);

/* A decide with explain for `cust`; `ctx_locale` (or NULL) goes into the
 * context, `accept` (or NULL) into an Accept-Language header. */
static json_t *decide(const char *cust, const char *ctx_locale, const char *accept)
{
    char body[1024], hdr[1024] = "";
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"channel\":\"web\",\"limit\":5,\"explain\":true%s%s%s}", cust,
             ctx_locale ? ",\"context\":{\"locale\":\"" : "", ctx_locale ? ctx_locale : "",
             ctx_locale ? "\"}" : "");
    if (accept)
        snprintf(hdr, sizeof hdr, "Accept-Language: %s\r\nContent-Type: application/json\r\n", accept);
    else
        snprintf(hdr, sizeof hdr, "Content-Type: application/json\r\n");
    struct tfx_resp r;
    int st = tfx_http(&srv, "POST", "/api/v1/decide", hdr, body, strlen(body), &r);
    cr_assert_eq(st, 200, "%s -> %d %s", body, st, r.body);
    cr_assert_not_null(r.json, "%s", r.body);
    json_t *j = json_incref(r.json);
    tfx_resp_free(&r);
    return j;
}

static json_t *by_id(json_t *res, const char *list, const char *id)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(res, list), i, o) {
        const char *c = json_string_value(json_object_get(o, "campaign_id"));
        if (c && !strcmp(c, id))
            return o;
    }
    cr_assert_fail("no %s entry for %s", list, id);
    return NULL;
}

static const char *content(json_t *res, const char *camp, const char *field)
{
    return json_string_value(json_object_get(json_object_get(by_id(res, "offers", camp), "content"), field));
}

static void expect_choice(json_t *res, const char *locale, const char *from, const char *requested)
{
    json_t *x = by_id(res, "explain", "sale");
    char *dump = json_dumps(x, 0);
    cr_expect_str_eq(json_string_value(json_object_get(x, "locale")), locale, "%s", dump);
    cr_expect_str_eq(json_string_value(json_object_get(x, "locale_from")), from, "%s", dump);
    const char *req = json_string_value(json_object_get(x, "locale_requested"));
    if (requested)
        cr_expect(req && !strcmp(req, requested), "%s", dump);
    else
        cr_expect_null(req, "%s", dump);
    free(dump);
}

Test(locale, context_locale_walks_the_chain)
{
    /* fr-CA is declared but the headline has no fr-CA entry: fr's; money as Canada writes it */
    json_t *r = decide("ann", "fr-CA", NULL);
    cr_expect_str_eq(content(r, "sale", "headline"), "Soldes pour Ann");
    cr_expect_str_eq(content(r, "sale", "price"), "1" NBSP "234,50" NBSP EURO);
    cr_expect_str_eq(content(r, "sale", "ends"), "10 mars 2026");
    cr_expect_str_eq(content(r, "plain", "n"), "1" NBSP "234,5");
    expect_choice(r, "fr-CA", "context", "fr-CA");
    json_decref(r);
    /* fr-BE is not declared: its parent fr; France's grouping */
    r = decide("ann", "fr-BE", NULL);
    cr_expect_str_eq(content(r, "sale", "headline"), "Soldes pour Ann");
    expect_choice(r, "fr", "context", "fr-BE");
    json_decref(r);
}

Test(locale, profile_then_accept_language_then_default)
{
    /* the profile says fr; the context beats it */
    json_t *r = decide("bea", NULL, "ja");
    cr_expect_str_eq(content(r, "sale", "headline"), "Soldes pour Bea");
    cr_expect_str_eq(content(r, "sale", "price"), "1" NNBSP "234,50" NBSP EURO);
    expect_choice(r, "fr", "profile", "fr");
    json_decref(r);
    r = decide("bea", "ja", NULL);
    cr_expect_str_eq(content(r, "sale", "headline"), "Bea\xe3\x81\x95\xe3\x82\x93\xe3\x81\xb8");
    cr_expect_str_eq(content(r, "sale", "price"), EURO "1,234.50");
    expect_choice(r, "ja", "context", "ja");
    json_decref(r);
    /* no locale anywhere but the header: its best match by q (de has none here) */
    r = decide("ann", NULL, "de;q=1, ja;q=0.8, en;q=0.1");
    cr_expect_str_eq(content(r, "sale", "headline"), "Ann\xe3\x81\x95\xe3\x82\x93\xe3\x81\xb8");
    expect_choice(r, "ja", "accept-language", "de");
    json_decref(r);
    /* nothing asked: the default (en), dates in UTC */
    r = decide("ann", NULL, NULL);
    cr_expect_str_eq(content(r, "sale", "headline"), "Sale for Ann");
    cr_expect_str_eq(content(r, "sale", "price"), EURO "1,234.50");
    cr_expect_str_eq(content(r, "sale", "ends"), "March 10, 2026");
    expect_choice(r, "en", "default", NULL);
    json_decref(r);
    /* asked for a locale the campaign lacks (de-AT): the default, in its
     * formats; the profile's tz moves the date to the 11th */
    r = decide("kei", NULL, NULL);
    cr_expect_str_eq(content(r, "sale", "headline"), "Sale for Kei");
    cr_expect_str_eq(content(r, "sale", "ends"), "March 11, 2026");
    expect_choice(r, "en", "default", "de-AT");
    /* the campaign without locales formats in the tag asked for: Austria
     * groups digits with a no-break space, Germany with a dot */
    cr_expect_str_eq(content(r, "plain", "n"), "1" NBSP "234,5");
    json_decref(r);
}

Test(locale, hostile_locale_input_is_ignored)
{
    /* an oversized or malformed context.locale / header is no locale at all */
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    json_t *r = decide("ann", big, big);
    cr_expect_str_eq(content(r, "sale", "headline"), "Sale for Ann");
    expect_choice(r, "en", "default", NULL);
    json_decref(r);
    r = decide("ann", "<script>", "*, ;q=,,");
    cr_expect_str_eq(content(r, "sale", "headline"), "Sale for Ann");
    json_decref(r);
}

Test(locale, check_refuses_bad_localized_content)
{
    const char *bad[][2] = {
        { "return { id = 'x', channels = { 'web' }, locales = { 'en', 'fr' },\n"
          "  variants = { { id = 'A', content = { h = { fr = 'Salut' } } } } }\n",
          "has no \"en\" (the default locale" },
        { "return { id = 'x', channels = { 'web' }, locales = { 'en', 'f r' },\n"
          "  variants = { { id = 'A', content = { h = 'x' } } } }\n",
          "locales[2] must be a locale tag" },
        { "return { id = 'x', channels = { 'web' }, locales = { 'en', 'EN' },\n"
          "  variants = { { id = 'A', content = { h = 'x' } } } }\n",
          "is listed twice" },
        { "return { id = 'x', channels = { 'web' }, locales = {},\n"
          "  variants = { { id = 'A', content = { h = 'x' } } } }\n",
          "locales must be a list" },
        { "return { id = 'x', channels = { 'web' },\n"
          "  variants = { { id = 'A', content = { p = '{{price|currency:EURO}}' } } } }\n",
          "three-letter ISO 4217 code" },
        { "return { id = 'x', channels = { 'web' }, locales = { 'en', 'fr' },\n"
          "  variants = { { id = 'A', content = { h = { en = 'ok', fr = '{{d|date:someday}}' } } } } }\n",
          "variants[1].content.h.fr: the style must be" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tfx_write(&srv, "rules2/x.lua", bad[i][0]);
        char path[400];
        snprintf(path, sizeof path, "%s/rules2/x.lua", srv.dir);
        char *out;
        cr_expect_eq(tfx_promod(&out, "check", "-c", srv.config, path, (char *)NULL), 1, "%s", out);
        cr_expect(strstr(out, bad[i][1]), "case %zu: want \"%s\" in:\n%s", i, bad[i][1], out);
        free(out);
    }
    /* the fixture's campaigns pass */
    char *out;
    cr_expect_eq(tfx_promod(&out, "check", "-c", srv.config, (char *)NULL), 0, "%s", out);
    free(out);
}
