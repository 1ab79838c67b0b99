/*
 * test_consent.c — every form of withdrawn consent blocks the offer on
 * that channel (and only there), a channel that requires consent needs a
 * yes, explain names the reason, changes apply at once; quiet hours follow
 * the customer's time zone.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    tfx_write(&srv, "plugins/mailt.lua",
              "return { channel = 'mailt', policy = { consent = 'email' } }\n");
    tfx_write(&srv, "plugins/nightq.lua",
              "return { channel = 'nightq', policy = { quiet_hours = { 22, 6 } } }\n");
    tfx_write(&srv, "rules/cw.lua",
              "return { id = 'cw', channels = { 'web', 'app', 'mailt', 'nightq' },\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(consent, .init = setup, .fini = teardown, .timeout = 60);

static void put_profile(const char *id, const char *json)
{
    char path[200];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    struct tfx_resp r;
    int st = tfx_req(&srv, "PUT", path, json, &r);
    cr_assert(st == 200 || st == 201, "PUT %s: %d %s", id, st, r.body);
    tfx_resp_free(&r);
}

/* Offers served to `cust` on `channel`; *reason gets the explain entry's
 * channel-level reason ("" when none). */
static int offers(const char *cust, const char *channel, char *reason, size_t rlen, int dry)
{
    char body[300];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"channel\":\"%s\",\"explain\":true%s}", cust, channel,
             dry ? ",\"dry_run\":true" : "");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
    int n = (int)json_array_size(json_object_get(r.json, "offers"));
    if (reason) {
        reason[0] = 0;
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(r.json, "explain"), i, x) {
            if (json_object_get(x, "channel") && json_object_get(x, "reason"))
                snprintf(reason, rlen, "%s", json_string_value(json_object_get(x, "reason")));
        }
    }
    tfx_resp_free(&r);
    return n;
}

struct consent_case {
    const char *profile;   /* NULL: no profile at all */
    const char *channel;
    int served;
    const char *reason;    /* "" when served */
};

static const struct consent_case cases[] = {
    { "{\"opt_out\": true}", "web", 0, "consent: opted out" },
    { "{\"opt_out\": true}", "mailt", 0, "consent: opted out" },
    { "{\"opt_out\": false}", "web", 1, "" },
    { "{\"consent\": {\"web\": false}}", "web", 0, "consent withdrawn for this channel" },
    { "{\"consent\": {\"web\": false}}", "app", 1, "" },
    { "{\"consent\": {\"all\": false}}", "web", 0, "consent: all withdrawn" },
    { "{\"consent\": {\"all\": false}}", "app", 0, "consent: all withdrawn" },
    { "{\"consent\": false}", "web", 0, "consent: all withdrawn" },
    { "{}", "web", 1, "" },
    { "{}", "mailt", 0, "consent: none recorded for this channel" },
    { NULL, "mailt", 0, "consent: none recorded for this channel" },
    { NULL, "web", 1, "" },
    { "{\"consent\": {\"email\": true}}", "mailt", 1, "" },
    { "{\"consent\": {\"mailt\": true}}", "mailt", 1, "" },
    { "{\"consent\": {\"all\": true}}", "mailt", 1, "" },
    { "{\"consent\": {\"sms\": true}}", "mailt", 0, "consent: none recorded for this channel" },
    { "{\"consent\": {\"email\": false, \"all\": true}}", "mailt", 0,
      "consent withdrawn for this channel" },
    { "{\"consent\": {\"email\": true, \"all\": false}}", "mailt", 0, "consent: all withdrawn" },
    { "{\"consent\": {\"email\": \"yes\"}}", "mailt", 0, "consent: none recorded for this channel" },
};

Test(consent, every_form_blocks_only_where_it_should)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cust[32], reason[128];
        snprintf(cust, sizeof cust, "case%zu", i);
        if (cases[i].profile)
            put_profile(cust, cases[i].profile);
        for (int dry = 1; dry >= 0; dry--) {
            int n = offers(cust, cases[i].channel, reason, sizeof reason, dry);
            cr_assert_eq(n, cases[i].served, "case %zu (%s on %s, dry %d): %d offers, reason \"%s\"", i,
                         cases[i].profile ? cases[i].profile : "(no profile)", cases[i].channel, dry,
                         n, reason);
            cr_assert_str_eq(reason, cases[i].reason, "case %zu", i);
        }
    }
}

Test(consent, a_change_applies_to_the_next_decide)
{
    char reason[128];
    put_profile("flip", "{\"consent\": {\"web\": true}}");
    cr_assert_eq(offers("flip", "web", reason, sizeof reason, 0), 1);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "PATCH", "/api/v1/profiles/flip", "{\"consent\": {\"web\": false}}", &r),
                 200);
    tfx_resp_free(&r);
    cr_assert_eq(offers("flip", "web", reason, sizeof reason, 0), 0);
    cr_assert_str_eq(reason, "consent withdrawn for this channel");
    cr_assert_eq(tfx_req(&srv, "PATCH", "/api/v1/profiles/flip", "{\"opt_out\": true, \"consent\": null}",
                         &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(offers("flip", "web", reason, sizeof reason, 0), 0);
    cr_assert_str_eq(reason, "consent: opted out");
    cr_assert_eq(tfx_req(&srv, "PATCH", "/api/v1/profiles/flip", "{\"opt_out\": null}", &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(offers("flip", "web", reason, sizeof reason, 0), 1);
}

Test(consent, quiet_hours_follow_the_customer_time_zone)
{
    /* 23:00 UTC on some day: quiet (22-6) in UTC, 08:00 in Tokyo */
    struct tfx_resp r;
    tfx_req(&srv, "GET", "/api/v1/admin/clock", NULL, &r);
    long now = (long)json_integer_value(json_object_get(r.json, "now"));
    tfx_resp_free(&r);
    long target = now - now % 86400 + 86400 + 23 * 3600;
    char b[64];
    snprintf(b, sizeof b, "{\"now\":%ld}", target);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200);
    tfx_resp_free(&r);
    put_profile("utc", "{\"tz\": \"UTC\"}");
    put_profile("tokyo", "{\"tz\": \"Asia/Tokyo\"}");
    char reason[128];
    cr_assert_eq(offers("utc", "nightq", reason, sizeof reason, 0), 0);
    cr_assert_str_eq(reason, "quiet hours for this channel");
    cr_assert_eq(offers("tokyo", "nightq", reason, sizeof reason, 0), 1);
    cr_assert_eq(offers("utc", "web", reason, sizeof reason, 0), 1); /* web has no quiet hours */
}
