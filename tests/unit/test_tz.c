/* test_tz.c — zones (TZif + POSIX footer), ISO-8601, durations. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <string.h>

#include "base/err.h"
#include "base/tz.h"

TestSuite(tz, .timeout = 60);

static int64_t iso(const char *s)
{
    int64_t t = 0;
    cr_assert_eq(tz_parse_iso8601(s, &t), 0, "parse %s", s);
    return t;
}

static int off_at(const char *zone, const char *when)
{
    int off = -1;
    int rc = tz_offset(zone, iso(when), &off);
    cr_assert_eq(rc, 0, "%s at %s: %s", zone, when, err_str(rc));
    return off;
}

Test(tz, paris_spring_forward_2026)
{
    cr_expect_eq(off_at("Europe/Paris", "2026-03-29T00:59:59Z"), 3600);
    cr_expect_eq(off_at("Europe/Paris", "2026-03-29T01:00:00Z"), 7200);
    struct tm tm;
    cr_assert_eq(tz_local("Europe/Paris", iso("2026-03-29T01:00:00Z"), &tm), 0);
    cr_expect_eq(tm.tm_hour, 3);
    cr_expect_eq(tm.tm_min, 0);
    cr_expect_eq(tm.tm_isdst, 1);
    cr_expect_eq(tm.tm_wday, 0); /* a Sunday */
    cr_expect_eq(tm.tm_yday, 87);
    cr_expect_eq(tm.tm_gmtoff, 7200);
    cr_expect_str_eq(tm.tm_zone, "CEST");
    cr_assert_eq(tz_local("Europe/Paris", iso("2026-03-29T00:59:59Z"), &tm), 0);
    cr_expect_eq(tm.tm_hour, 1);
    cr_expect_eq(tm.tm_min, 59);
    cr_expect_eq(tm.tm_isdst, 0);
    cr_expect_str_eq(tm.tm_zone, "CET");
}

Test(tz, paris_fall_back_2026)
{
    cr_expect_eq(off_at("Europe/Paris", "2026-10-25T00:59:59Z"), 7200);
    cr_expect_eq(off_at("Europe/Paris", "2026-10-25T01:00:00Z"), 3600);
    struct tm a, b;
    cr_assert_eq(tz_local("Europe/Paris", iso("2026-10-25T00:30:00Z"), &a), 0);
    cr_assert_eq(tz_local("Europe/Paris", iso("2026-10-25T01:30:00Z"), &b), 0);
    /* 02:30 happens twice */
    cr_expect_eq(a.tm_hour, 2);
    cr_expect_eq(b.tm_hour, 2);
    cr_expect_eq(a.tm_isdst, 1);
    cr_expect_eq(b.tm_isdst, 0);
}

Test(tz, new_york_2026)
{
    cr_expect_eq(off_at("America/New_York", "2026-01-15T12:00:00Z"), -5 * 3600);
    cr_expect_eq(off_at("America/New_York", "2026-03-08T06:59:59Z"), -5 * 3600);
    cr_expect_eq(off_at("America/New_York", "2026-03-08T07:00:00Z"), -4 * 3600);
    cr_expect_eq(off_at("America/New_York", "2026-11-01T05:59:59Z"), -4 * 3600);
    cr_expect_eq(off_at("America/New_York", "2026-11-01T06:00:00Z"), -5 * 3600);
    struct tm tm;
    cr_assert_eq(tz_local("America/New_York", iso("2026-07-04T03:30:00Z"), &tm), 0);
    cr_expect_eq(tm.tm_year, 126);
    cr_expect_eq(tm.tm_mon, 6);
    cr_expect_eq(tm.tm_mday, 3); /* still the 3rd in New York */
    cr_expect_eq(tm.tm_hour, 23);
    cr_expect_eq(tm.tm_min, 30);
}

Test(tz, kolkata_half_hour)
{
    cr_expect_eq(off_at("Asia/Kolkata", "2026-06-01T00:00:00Z"), 19800);
    cr_expect_eq(off_at("Asia/Kolkata", "2100-06-01T00:00:00Z"), 19800);
    struct tm tm;
    cr_assert_eq(tz_local("Asia/Kolkata", iso("2026-06-01T20:00:00Z"), &tm), 0);
    cr_expect_eq(tm.tm_mday, 2);
    cr_expect_eq(tm.tm_hour, 1);
    cr_expect_eq(tm.tm_min, 30);
}

/* Past the last stored transition (2037 in fat files, earlier in slim
 * ones) only the footer's POSIX rule can answer. */
Test(tz, far_future_uses_footer)
{
    /* 2100: DST from the last Sunday of March (28th) to that of October (31st). */
    cr_expect_eq(off_at("Europe/Paris", "2100-01-15T12:00:00Z"), 3600);
    cr_expect_eq(off_at("Europe/Paris", "2100-03-28T00:59:59Z"), 3600);
    cr_expect_eq(off_at("Europe/Paris", "2100-03-28T01:00:00Z"), 7200);
    cr_expect_eq(off_at("Europe/Paris", "2100-10-31T00:59:59Z"), 7200);
    cr_expect_eq(off_at("Europe/Paris", "2100-10-31T01:00:00Z"), 3600);
    /* US: second Sunday of March (14th) to first Sunday of November (7th). */
    cr_expect_eq(off_at("America/New_York", "2100-03-14T06:59:59Z"), -5 * 3600);
    cr_expect_eq(off_at("America/New_York", "2100-03-14T07:00:00Z"), -4 * 3600);
    cr_expect_eq(off_at("America/New_York", "2100-11-07T05:59:59Z"), -4 * 3600);
    cr_expect_eq(off_at("America/New_York", "2100-11-07T06:00:00Z"), -5 * 3600);
    /* Southern hemisphere: DST spans the new year. */
    cr_expect_eq(off_at("Australia/Sydney", "2100-01-15T00:00:00Z"), 11 * 3600);
    cr_expect_eq(off_at("Australia/Sydney", "2100-07-15T00:00:00Z"), 10 * 3600);
    struct tm tm;
    cr_assert_eq(tz_local("Europe/Paris", iso("2100-07-01T12:00:00Z"), &tm), 0);
    cr_expect_eq(tm.tm_hour, 14);
    cr_expect_str_eq(tm.tm_zone, "CEST");
}

Test(tz, fixed_offsets)
{
    int off;
    cr_assert_eq(tz_offset("UTC", 0, &off), 0);
    cr_expect_eq(off, 0);
    cr_assert_eq(tz_offset("Z", 0, &off), 0);
    cr_expect_eq(off, 0);
    cr_assert_eq(tz_offset("+02:00", 0, &off), 0);
    cr_expect_eq(off, 7200);
    cr_assert_eq(tz_offset("-0530", 0, &off), 0);
    cr_expect_eq(off, -19800);
    cr_assert_eq(tz_offset("+05", 0, &off), 0);
    cr_expect_eq(off, 18000);
    cr_expect_eq(tz_offset("+24:00", 0, &off), ERR_INVAL);
    cr_expect_eq(tz_offset("+02:60", 0, &off), ERR_INVAL);
    cr_expect_eq(tz_offset("+2", 0, &off), ERR_INVAL);
    cr_expect_eq(tz_offset("+02:", 0, &off), ERR_INVAL);
    cr_expect_eq(tz_offset("+02:000", 0, &off), ERR_INVAL);
    cr_assert_eq(tz_offset("Etc/UTC", 0, &off), 0);
    cr_expect_eq(off, 0);
    struct tm tm;
    cr_assert_eq(tz_local("-05:30", 0, &tm), 0);
    cr_expect_eq(tm.tm_mday, 31);
    cr_expect_eq(tm.tm_hour, 18);
    cr_expect_eq(tm.tm_min, 30);
    cr_expect_eq(tm.tm_gmtoff, -19800);
    cr_expect_str_eq(tm.tm_zone, "");
    cr_assert_eq(tz_local("UTC", 0, &tm), 0);
    cr_expect_str_eq(tm.tm_zone, "UTC");
}

/* Criterion re-executes the binary for each test (with a new ASLR layout),
 * so parameters are copied by value: strings live inline, never as pointers. */
struct name_case {
    char name[48];
    int rc;
};

ParameterizedTestParameters(tz, bad_names)
{
    static struct name_case cases[] = {
        { "../../etc/passwd", ERR_INVAL },
        { "/etc/passwd", ERR_INVAL },
        { "Europe/../../../etc/passwd", ERR_INVAL },
        { "..", ERR_INVAL },
        { "", ERR_INVAL },
        { "Europe/Paris/", ERR_INVAL },
        { "Europe//Paris", ERR_INVAL },
        { "Europe/Pa ris", ERR_INVAL },
        { "Europe/Paris\n", ERR_INVAL },
        { "zone.tab", ERR_INVAL },
        { "Europe\\Paris", ERR_INVAL },
        { "Nowhere/Atlantis", ERR_NOTFOUND },
        { "Europe", ERR_NOTFOUND },          /* a directory */
        { "leapseconds", ERR_NOTFOUND },     /* a file, not TZif */
        { "right/Europe/Paris", ERR_NOTFOUND }, /* leap-second zone refused */
    };
    return cr_make_param_array(struct name_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct name_case *c, tz, bad_names)
{
    int off = 12345;
    struct tm tm;
    cr_expect_eq(tz_offset(c->name, 0, &off), c->rc, "%s", c->name);
    cr_expect_eq(off, 12345);
    cr_expect_eq(tz_local(c->name, 0, &tm), c->rc, "%s", c->name);
    cr_expect_eq(tz_check(c->name), c->rc, "%s", c->name);
}

Test(tz, null_and_long_names)
{
    int off;
    char longname[300];
    memset(longname, 'A', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    cr_expect_eq(tz_offset(NULL, 0, &off), ERR_INVAL);
    cr_expect_eq(tz_offset(longname, 0, &off), ERR_INVAL);
    cr_expect_eq(tz_check("Europe/Paris"), 0);
}

Test(tz, from_local)
{
    int64_t t;
    cr_assert_eq(tz_from_local("Europe/Paris", 2026, 7, 1, 8, 0, 0, &t), 0);
    cr_expect_eq(t, iso("2026-07-01T06:00:00Z"));
    /* fall-back overlap: the earlier instant */
    cr_assert_eq(tz_from_local("Europe/Paris", 2026, 10, 25, 2, 30, 0, &t), 0);
    cr_expect_eq(t, iso("2026-10-25T00:30:00Z"));
    /* spring-forward gap: 02:30 does not exist, moved to 03:30 CEST */
    cr_assert_eq(tz_from_local("Europe/Paris", 2026, 3, 29, 2, 30, 0, &t), 0);
    cr_expect_eq(t, iso("2026-03-29T01:30:00Z"));
    cr_assert_eq(tz_from_local("+05:30", 2026, 1, 1, 0, 0, 0, &t), 0);
    cr_expect_eq(t, iso("2025-12-31T18:30:00Z"));
    cr_expect_eq(tz_from_local("Europe/Paris", 2026, 2, 29, 0, 0, 0, &t), ERR_INVAL);
    cr_expect_eq(tz_from_local("../x", 2026, 2, 28, 0, 0, 0, &t), ERR_INVAL);
}

static void *hammer(void *arg)
{
    static const char *zones[] = { "Europe/Paris", "America/New_York", "Asia/Kolkata",
                                   "Australia/Sydney", "Europe/London", "Asia/Tokyo",
                                   "America/Los_Angeles", "Africa/Cairo" };
    intptr_t bad = 0;
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        int off;
        const char *z = zones[i % 8];
        int64_t t = 1700000000 + (int64_t)i * 3600;
        if (tz_offset(z, t, &off) || off < -12 * 3600 || off > 14 * 3600)
            bad++;
    }
    return (void *)bad;
}

Test(tz, concurrent_first_loads)
{
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 8; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        cr_expect_eq((intptr_t)bad, 0);
    }
}

struct iso_case {
    char s[48];
    int ok;
    int64_t want;
};

ParameterizedTestParameters(tz, iso8601)
{
    static struct iso_case cases[] = {
        { "2026-03-01T00:00:00Z", 1, 1772323200 },
        { "2026-03-01T02:00:00+02:00", 1, 1772323200 },
        { "2026-03-01T02:00:00+0200", 1, 1772323200 },
        { "2026-02-28T19:00:00-05:00", 1, 1772323200 },
        { "2026-03-01T05:30:00+05:30", 1, 1772323200 },
        { "2026-03-01T00:00:00", 1, 1772323200 },
        { "2026-03-01 00:00:00", 1, 1772323200 },
        { "2026-03-01", 1, 1772323200 },
        { "2026-03-01T00:00Z", 1, 1772323200 },
        { "2026-03-01T00:00:00.999Z", 1, 1772323200 },
        { "2026-03-01T00:00:00,5Z", 1, 1772323200 },
        { "2026-03-01T00:00:00.123456789+00:00", 1, 1772323200 },
        { "1970-01-01T00:00:00Z", 1, 0 },
        { "1969-12-31T23:59:59Z", 1, -1 },
        { "2028-02-29", 1, 1835395200 },
        { "2000-02-29T12:00:00Z", 1, 951825600 },
        { "2026-12-31T23:59:59Z", 1, 1798761599 },
        { "9999-12-31T23:59:59Z", 1, 253402300799 },
        { "2026-02-29", 0, 0 },
        { "2026-02-29T00:00:00Z", 0, 0 },
        { "1900-02-29", 0, 0 },
        { "2026-04-31", 0, 0 },
        { "2026-13-01", 0, 0 },
        { "2026-00-10", 0, 0 },
        { "2026-01-00", 0, 0 },
        { "2026-01-32", 0, 0 },
        { "2026-01-01T24:00:00Z", 0, 0 },
        { "2026-01-01T23:60:00Z", 0, 0 },
        { "2026-01-01T23:59:60Z", 0, 0 },
        { "2026-01-01T00:00:00+24:00", 0, 0 },
        { "2026-01-01T00:00:00+02:60", 0, 0 },
        { "2026-01-01T00:00:00+2", 0, 0 },
        { "2026-01-01T00:00:00+02:0", 0, 0 },
        { "2026-01-01T00:00:00ZZ", 0, 0 },
        { "2026-01-01T00:00:00 ", 0, 0 },
        { " 2026-01-01", 0, 0 },
        { "2026-01-01T", 0, 0 },
        { "2026-01-01T00", 0, 0 },
        { "2026-01-01T0:00:00", 0, 0 },
        { "2026-01-01t00:00:00Z", 0, 0 },
        { "2026-01-01T00:00:00.Z", 0, 0 },
        { "2026-01-01T00:00.5Z", 0, 0 },
        { "2026-1-01", 0, 0 },
        { "26-01-01", 0, 0 },
        { "20260101", 0, 0 },
        { "2026/01/01", 0, 0 },
        { "2026-01-01Z", 0, 0 },
        { "+2026-01-01", 0, 0 },
        { "", 0, 0 },
        { "garbage", 0, 0 },
    };
    return cr_make_param_array(struct iso_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct iso_case *c, tz, iso8601)
{
    int64_t t = 42;
    int rc = tz_parse_iso8601(c->s, &t);
    if (c->ok) {
        cr_assert_eq(rc, 0, "'%s' should parse", c->s);
        cr_expect_eq(t, c->want, "'%s' → %lld, want %lld", c->s, (long long)t,
                     (long long)c->want);
    } else {
        cr_expect_eq(rc, ERR_INVAL, "'%s' should be refused", c->s);
        cr_expect_eq(t, 42, "'%s' wrote the output on failure", c->s);
    }
}

Test(tz, iso8601_null)
{
    int64_t t;
    cr_expect_eq(tz_parse_iso8601(NULL, &t), ERR_INVAL);
}

Test(tz, format_iso8601)
{
    char buf[32];
    tz_format_iso8601(0, buf, sizeof buf);
    cr_expect_str_eq(buf, "1970-01-01T00:00:00Z");
    tz_format_iso8601(1772323200, buf, sizeof buf);
    cr_expect_str_eq(buf, "2026-03-01T00:00:00Z");
    tz_format_iso8601(-1, buf, sizeof buf);
    cr_expect_str_eq(buf, "1969-12-31T23:59:59Z");
    tz_format_iso8601(1835395200 + 86399, buf, 21);
    cr_expect_str_eq(buf, "2028-02-29T23:59:59Z");
    tz_format_iso8601(0, buf, 5);
    cr_expect_str_eq(buf, "1970");
    /* round trip across a range of instants */
    for (int64_t t = -86400LL * 365 * 100; t < 86400LL * 365 * 200; t += 86400 * 7 + 3607) {
        int64_t back;
        tz_format_iso8601(t, buf, sizeof buf);
        cr_assert_eq(tz_parse_iso8601(buf, &back), 0, "%s", buf);
        cr_assert_eq(back, t, "%s", buf);
    }
}

struct dur_case {
    char s[32];
    int ok;
    int64_t want;
};

ParameterizedTestParameters(tz, duration)
{
    static struct dur_case cases[] = {
        { "90s", 1, 90 },
        { "30m", 1, 1800 },
        { "1h", 1, 3600 },
        { "7d", 1, 604800 },
        { "2w", 1, 1209600 },
        { "1s", 1, 1 },
        { "007d", 1, 604800 },
        { "9223372036854775807s", 1, INT64_MAX },
        { "15250284452471w", 1, 15250284452471LL * 604800 },
        { "99999999999999999999d", 0, 0 },
        { "9223372036854775808s", 0, 0 },
        { "106751991167301d", 0, 0 }, /* fits as N, overflows in seconds */
        { "0d", 0, 0 },
        { "0s", 0, 0 },
        { "7x", 0, 0 },
        { "-1d", 0, 0 },
        { "+1d", 0, 0 },
        { "7 d", 0, 0 },
        { " 7d", 0, 0 },
        { "7d ", 0, 0 },
        { "7dd", 0, 0 },
        { "7D", 0, 0 },
        { "1.5h", 0, 0 },
        { "d", 0, 0 },
        { "7", 0, 0 },
        { "", 0, 0 },
    };
    return cr_make_param_array(struct dur_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct dur_case *c, tz, duration)
{
    int64_t v = 42;
    int rc = tz_parse_duration(c->s, &v);
    if (c->ok) {
        cr_assert_eq(rc, 0, "'%s' should parse", c->s);
        cr_expect_eq(v, c->want, "'%s'", c->s);
    } else {
        cr_expect_eq(rc, ERR_INVAL, "'%s' should be refused", c->s);
    }
}
