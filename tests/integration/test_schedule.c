/* test_schedule.c — a campaign enters and leaves the candidate set exactly
 * at its schedule's boundaries (start/end instants, days of week, hours in
 * a named zone, overnight windows), by the injectable clock, without a
 * reload. */
#include <time.h>
#include "campaigns_tfx.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(schedule, .init = setup, .fini = teardown, .timeout = 60);

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s
    };
    return (int64_t)timegm(&tm);
}

static void set_now(int64_t t)
{
    char body[64];
    /* frozen: a boundary second must not tick over before the decide reads it */
    snprintf(body, sizeof body, "{\"now\": %lld, \"freeze\": true}", (long long)t);
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/admin/clock", NULL, body, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "now")), t);
    tfx_resp_free(&r);
}

static long generation(void)
{
    struct tfx_resp r;
    ctfx_req(&srv, "GET", "/api/v1/rules", NULL, NULL, &r);
    long g = (long)json_integer_value(json_object_get(r.json, "generation"));
    tfx_resp_free(&r);
    return g;
}

/* Create + launch `id` with a schedule table (Lua source). */
static void scheduled(const char *id, const char *schedule)
{
    char extra[512];
    snprintf(extra, sizeof extra, "schedule = %s,", schedule);
    char *s = ctfx_script(NULL, id, extra);
    cr_assert_eq(ctfx_create(&srv, NULL, id, s, NULL), 201);
    cr_assert_eq(ctfx_act(&srv, NULL, id, "launch", NULL, NULL), 200);
    free(s);
}

static int offered(const char *id)
{
    char *o = ctfx_offer(&srv, NULL, id);
    int yes = o != NULL;
    free(o);
    return yes;
}

struct point {
    int64_t t;
    int open;
    const char *what;
};

static int64_t server_now(void)
{
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/admin/clock", NULL, NULL, &r), 200);
    int64_t now = (int64_t)json_integer_value(json_object_get(r.json, "now"));
    tfx_resp_free(&r);
    return now;
}

/* What decide and the campaign view say of `id` at server time `t`:
 * out[0] offered, out[1] in_schedule, out[2] candidate.  set_now freezes
 * the test clock, so "one second before the end" stays that second for
 * every request of the observation (checked). */
static void observe(const char *id, int64_t t, int out[3])
{
    set_now(t);
    out[0] = offered(id);
    struct tfx_resp r;
    ctfx_get(&srv, NULL, id, &r);
    out[1] = json_is_true(json_object_get(r.json, "in_schedule"));
    out[2] = json_is_true(json_object_get(r.json, "candidate"));
    tfx_resp_free(&r);
    cr_assert_eq(server_now(), t, "the frozen clock moved");
}

static void check_points(const char *id, const struct point *p, size_t n)
{
    long gen = generation();
    for (size_t i = 0; i < n; i++) {
        int seen[3];
        observe(id, p[i].t, seen);
        cr_assert_eq(seen[0], p[i].open, "%s at %s (%lld)", id, p[i].what, (long long)p[i].t);
        cr_assert_eq(seen[1], p[i].open, "view at %s", p[i].what);
        cr_assert_eq(seen[2], p[i].open);
    }
    cr_assert_eq(generation(), gen, "no reload was needed");
}

Test(schedule, start_and_end_instants_are_inclusive)
{
    scheduled("window", "{ starts = '2030-01-10T00:00:00Z', ends = '2030-01-20T00:00:00Z' }");
    int64_t s = utc(2030, 1, 10, 0, 0, 0), e = utc(2030, 1, 20, 0, 0, 0);
    struct point pts[] = {
        { s - 86400, 0, "a day before" },
        { s - 1, 0, "one second before the start" },
        { s, 1, "the start" },
        { s + 1, 1, "one second in" },
        { e - 1, 1, "one second before the end" },
        { e, 1, "the end" },
        { e + 1, 0, "one second after the end" },
        { s + 5, 1, "back inside (the clock went back)" },
    };
    check_points("window", pts, sizeof pts / sizeof *pts);
    /* explain names the reason outside the window */
    set_now(e + 10);
    struct tfx_resp r;
    ctfx_req(&srv, "POST", "/api/v1/decide", NULL,
             "{\"customer_id\":\"v\",\"channel\":\"web\",\"explain\":true,\"dry_run\":true}", &r);
    cr_assert(strstr(r.body, "outside schedule"), "%s", r.body);
    tfx_resp_free(&r);
    /* the view shows the schedule */
    ctfx_get(&srv, NULL, "window", &r);
    json_t *sc = json_object_get(r.json, "schedule");
    cr_assert_str_eq(json_string_value(json_object_get(sc, "starts")), "2030-01-10T00:00:00Z");
    cr_assert_str_eq(json_string_value(json_object_get(sc, "ends")), "2030-01-20T00:00:00Z");
    tfx_resp_free(&r);
}

Test(schedule, open_ended_schedules)
{
    scheduled("from", "{ starts = '2030-02-01T12:00:00Z' }");
    scheduled("until", "{ ends = '2030-02-01T12:00:00Z' }");
    int64_t t = utc(2030, 2, 1, 12, 0, 0);
    set_now(t - 1);
    cr_assert(!offered("from") && offered("until"));
    set_now(t);
    cr_assert(offered("from") && offered("until"));
    set_now(t + 1);
    cr_assert(offered("from") && !offered("until"));
    set_now(t + 10 * 365 * 86400LL);
    cr_assert(offered("from") && !offered("until"));
}

Test(schedule, days_and_hours_in_a_named_zone)
{
    /* Paris is UTC+1 in January, UTC+2 in July; 2030-01-07 and 2030-07-01 are Mondays */
    scheduled("office", "{ days = { 'mon', 'tue' }, hours = { 9, 17 }, tz = 'Europe/Paris' }");
    struct point pts[] = {
        { utc(2030, 1, 7, 7, 59, 59), 0, "Mon 08:59:59 Paris" },
        { utc(2030, 1, 7, 8, 0, 0), 1, "Mon 09:00 Paris" },
        { utc(2030, 1, 7, 15, 59, 59), 1, "Mon 16:59:59 Paris" },
        { utc(2030, 1, 7, 16, 0, 0), 0, "Mon 17:00 Paris" },
        { utc(2030, 1, 8, 11, 0, 0), 1, "Tue 12:00 Paris" },
        { utc(2030, 1, 9, 11, 0, 0), 0, "Wed 12:00 Paris" },
        { utc(2030, 1, 6, 23, 30, 0), 0, "Sun 23:30 UTC = Mon 00:30 Paris" },
        { utc(2030, 1, 8, 23, 30, 0), 0, "Tue 23:30 UTC = Wed 00:30 Paris" },
        { utc(2030, 7, 1, 6, 59, 59), 0, "Mon 08:59:59 Paris, summer time" },
        { utc(2030, 7, 1, 7, 0, 0), 1, "Mon 09:00 Paris, summer time" },
        { utc(2030, 7, 1, 14, 59, 59), 1, "Mon 16:59:59 Paris, summer time" },
        { utc(2030, 7, 1, 15, 0, 0), 0, "Mon 17:00 Paris, summer time" },
    };
    check_points("office", pts, sizeof pts / sizeof *pts);
}

Test(schedule, overnight_hours_wrap_midnight)
{
    scheduled("night", "{ hours = { 22, 6 } }");
    struct point pts[] = {
        { utc(2030, 3, 5, 21, 59, 59), 0, "21:59:59" }, { utc(2030, 3, 5, 22, 0, 0), 1, "22:00" },
        { utc(2030, 3, 5, 23, 59, 59), 1, "23:59:59" }, { utc(2030, 3, 6, 0, 0, 0), 1, "00:00" },
        { utc(2030, 3, 6, 5, 59, 59), 1, "05:59:59" },  { utc(2030, 3, 6, 6, 0, 0), 0, "06:00" },
        { utc(2030, 3, 6, 12, 0, 0), 0, "noon" },
    };
    check_points("night", pts, sizeof pts / sizeof *pts);
}

Test(schedule, a_paused_campaign_stays_out_inside_its_window)
{
    scheduled("p", "{ starts = '2030-04-01T00:00:00Z', ends = '2030-04-30T00:00:00Z' }");
    set_now(utc(2030, 4, 10, 0, 0, 0));
    cr_assert(offered("p"));
    cr_assert_eq(ctfx_act(&srv, NULL, "p", "pause", NULL, NULL), 200);
    cr_assert(!offered("p"));
    set_now(utc(2030, 5, 10, 0, 0, 0));
    cr_assert_eq(ctfx_act(&srv, NULL, "p", "launch", NULL, NULL), 200);
    cr_assert(!offered("p"), "active but past its end");
    struct tfx_resp r;
    ctfx_get(&srv, NULL, "p", &r);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "active");
    cr_assert(json_is_false(json_object_get(r.json, "candidate")));
    tfx_resp_free(&r);
}

Test(schedule, invalid_schedules_are_refused_by_the_api)
{
    const char *bad[] = {
        "{ starts = 'next tuesday' }",
        "{ starts = '2030-01-02T00:00:00Z', ends = '2030-01-01T00:00:00Z' }",
        "{ tz = 'Mars/Olympus' , hours = { 9, 17 } }",
        "{ days = { 'funday' } }",
        "{ hours = { 25, 3 } }",
        "{ every = 'day' }",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char extra[256], id[32];
        snprintf(extra, sizeof extra, "schedule = %s,", bad[i]);
        snprintf(id, sizeof id, "bad%zu", i);
        char *s = ctfx_script(NULL, "x", extra);
        char *js = ctfx_jstr(s), body[2048];
        snprintf(body, sizeof body, "{\"id\":\"%s\",\"script\":%s}", id, js);
        struct tfx_resp r;
        cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/campaigns", NULL, body, &r), 422, "%s",
                     bad[i]);
        cr_assert_str_eq(ctfx_err_field(&r), "script");
        cr_assert(
            strstr(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
                   "schedule"),
            "%s: %s", bad[i], r.body);
        tfx_resp_free(&r);
        char rel[64];
        snprintf(rel, sizeof rel, "rules/%s.lua", id);
        cr_assert(!ctfx_exists(&srv, rel));
        free(js);
        free(s);
    }
}
