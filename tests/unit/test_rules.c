/*
 * test_rules.c — the campaign and plugin loader's validation, through
 * rules_validate_source() / rules_validate_campaign() (the code `promod
 * check`, the reloader and POST /api/v1/rules/validate share), without a
 * server.
 *
 * Every rejected source must produce one error that starts with the exact
 * "file:line: " of the offending field and contains the expected message.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/app.h"
#include "base/err.h"
#include "base/log.h"
#include "engine/rules.h"

/* rules.c reads g_app (the server's rules_dir, for default ids); the
 * unit tests run without a server. */
struct app *g_app;

static char libdir[64];
static const char *const chans[] = { "web", "app", "email" };

static void write_lib(const char *name, const char *text)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", libdir, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f, "%s", p);
    fputs(text, f);
    fclose(f);
}

static void setup(void)
{
    log_set_level(LOG_ERROR);
    strcpy(libdir, "/tmp/rules-lib-XXXXXX");
    cr_assert_not_null(mkdtemp(libdir));
    write_lib("util.lua", "local M = {}\nfunction M.gold(p) return p.tier == 'gold' end\nreturn M\n");
    write_lib("broken.lua", "local M = {\nreturn M\n");
}

static void teardown(void)
{
    char p[160];
    snprintf(p, sizeof p, "%s/util.lua", libdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/broken.lua", libdir);
    unlink(p);
    rmdir(libdir);
}

TestSuite(rules, .init = setup, .fini = teardown, .timeout = 30);

/* Validate; return the errors array (new reference) and the return code. */
static json_t *validate(enum rules_kind kind, const char *path, const char *src, size_t len, int *rc)
{
    json_t *errors = json_array();
    *rc = rules_validate_source(path, kind, src, len, chans, 3, libdir, errors);
    return errors;
}

static void expect_error(enum rules_kind kind, const char *path, const char *src, size_t len,
                         int line, const char *want)
{
    int rc;
    json_t *errors = validate(kind, path, src, len, &rc);
    char *all = json_dumps(errors, JSON_INDENT(1));
    cr_assert_neq(rc, 0, "accepted:\n%s", src);
    cr_assert_gt(json_array_size(errors), 0);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    int found = 0;
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e) {
        const char *m = json_string_value(e);
        cr_assert_not_null(m, "errors are strings");
        /* every error has the file:line: shape */
        cr_assert(!strncmp(m, path, strlen(path)) && m[strlen(path)] == ':' &&
                      atoi(m + strlen(path) + 1) >= 1,
                  "not file:line: %s", m);
        found |= !strncmp(m, prefix, strlen(prefix)) && strstr(m, want);
    }
    cr_assert(found, "want \"%s...%s\" in %s\nsource:\n%s", prefix, want, all, src);
    free(all);
    json_decref(errors);
}

/* ---- campaigns ---------------------------------------------------------- */

/* lines 1-4 of a valid campaign; a case adds its field at line 5 */
#define HEAD "return {\n  channels = { 'web' },\n"
#define VARS "  variants = { { id = 'A', content = { h = 'x' } } },\n"
#define ELIG "  eligible = function(p, ctx) return true end,\n"
#define WITH(field) HEAD VARS ELIG field "}\n"

struct bad {
    char src[420];
    int line;
    char want[96];
};

ParameterizedTestParameters(rules, bad_campaign)
{
    static struct bad cases[] = {
        /* the file itself */
        { "return 42\n", 1, "the file must return a table" },
        { "local x = 1\n", 1, "the file must return a table" },
        { "return 'campaign'\n", 1, "the file must return a table" },
        { "return {\n  channels = { 'web' }\n  variants = {},\n}\n", 3,
          "'}' expected (to close '{' at line 1) near 'variants'" },
        { "return {\n  channels = { 'web' },\n  eligible = function(p)\n    return p.x ==\n  end,\n}\n",
          5, "unexpected symbol near 'end'" },
        { "local t = nil\n\nlocal x = t.y\nreturn {}\n", 3, "attempt to index local 't'" },
        { "\nleak = 1\nreturn {}\n", 2, "assignment to undeclared global 'leak'" },
        { "local f = io.open('/etc/passwd')\nreturn {}\n", 1, "undeclared global 'io'" },
        { "error('no campaign today')\n", 1, "no campaign today" },
        { "return (function() while true do end end)()\n", 1, "instruction budget exceeded" },
        { WITH("  prioirty = 5,\n"), 5, "unknown field 'prioirty' in the campaign table" },
        /* hooks are known per kind of file (engine/hooks.h): a channel's is no campaign's */
        { WITH("  render = function(o, p, ctx) return {} end,\n"), 5,
          "unknown field 'render' in the campaign table" },
        { WITH("  'stray',\n"), 1, "campaign table: keys must be names" },
        /* id and name */
        { "return {\n  id = 'spring sale',\n  channels = { 'web' },\n" VARS ELIG "}\n", 2,
          "id \"spring sale\" must be 1-128 characters" },
        { "return {\n  id = '.hidden',\n  channels = { 'web' },\n" VARS ELIG "}\n", 2,
          "id \".hidden\" must be" },
        { "return {\n  id = '',\n  channels = { 'web' },\n" VARS ELIG "}\n", 2, "id \"\" must be" },
        { "return {\n  id = 5,\n  channels = { 'web' },\n" VARS ELIG "}\n", 2, "id must be a string" },
        { WITH("  name = { 'x' },\n"), 5, "name must be a string" },
        /* channels */
        { "return {\n" VARS ELIG "}\n", 1, "channels must be a non-empty list like { \"web\" }" },
        { "return {\n  channels = {},\n" VARS ELIG "}\n", 2, "channels must be a non-empty list" },
        { "return {\n  channels = 'web',\n" VARS ELIG "}\n", 2, "channels must be a non-empty list" },
        { "return {\n  channels = { 'web', 'fax' },\n" VARS ELIG "}\n", 2,
          "unknown channel \"fax\" (loaded plugins: 3; add plugins/fax.lua)" },
        { "return {\n  channels = {\n    'web',\n    'fax',\n  },\n" VARS ELIG "}\n", 4,
          "unknown channel \"fax\"" },
        { "return {\n  channels = { 'web', 7 },\n" VARS ELIG "}\n", 2, "channels[2] must be a string" },
        { "return {\n  channels = { { 'web' } },\n" VARS ELIG "}\n", 2, "channels[1] must be a string" },
        /* placements, priority, status */
        { WITH("  placements = 'home_banner',\n"), 5, "placements must be a list of strings" },
        { WITH("  placements = { 'home', {} },\n"), 5, "placements[2] must be a string" },
        { WITH("  priority = 'high',\n"), 5, "priority must be a number" },
        { WITH("  priority = true,\n"), 5, "priority must be a number" },
        { WITH("  status = 'live',\n"), 5, "status in a file may be \"draft\", \"active\" or \"paused\"" },
        { WITH("  status = 'stopped',\n"), 5, "status in a file may be" },
        { WITH("  status = 1,\n"), 5, "status must be a string" },
        /* schedule */
        { WITH("  schedule = '2026-03-01',\n"), 5, "schedule must be a table" },
        { WITH("  schedule = {\n    starts = '2026-13-01T00:00:00Z',\n  },\n"), 6,
          "schedule.starts: \"2026-13-01T00:00:00Z\" is not an ISO-8601 time" },
        { WITH("  schedule = {\n    starts = '2026-03-01T00:00:00Z',\n    ends = 'next week',\n  },\n"),
          7, "schedule.ends: \"next week\" is not an ISO-8601 time" },
        { WITH("  schedule = { starts = '2026-02-30' },\n"), 5, "schedule.starts: \"2026-02-30\"" },
        { WITH("  schedule = { starts = true },\n"), 5, "schedule.starts must be an ISO-8601 string" },
        { WITH("  schedule = { starts = '2026-03-10T00:00:00Z',\n    ends = '2026-03-01T00:00:00Z' },\n"),
          6, "schedule.ends must be after schedule.starts" },
        { WITH("  schedule = { starts = '2026-03-10T00:00:00Z', ends = '2026-03-10T00:00:00Z' },\n"), 5,
          "schedule.ends must be after schedule.starts" },
        { WITH("  schedule = {\n    days = { 'mon', 'funday' },\n  },\n"), 6,
          "schedule.days[2]: use 1-7 (Monday=1) or \"mon\"..\"sun\"" },
        { WITH("  schedule = { days = { 0 } },\n"), 5, "schedule.days[1]: use 1-7" },
        { WITH("  schedule = { days = { 8 } },\n"), 5, "schedule.days[1]: use 1-7" },
        { WITH("  schedule = { days = 'mon' },\n"), 5, "schedule.days must be a list" },
        { WITH("  schedule = {\n    hours = { 25, 3 },\n  },\n"), 6,
          "schedule.hours must be { from, to } with hours 0-24" },
        { WITH("  schedule = { hours = { 9 } },\n"), 5, "schedule.hours must be { from, to } with hours" },
        { WITH("  schedule = { hours = { -1, 5 } },\n"), 5, "schedule.hours must be { from, to } with" },
        { WITH("  schedule = { hours = 9 },\n"), 5, "schedule.hours must be { from, to }" },
        { WITH("  schedule = { hours = { 9, 9 } },\n"), 5, "schedule.hours { 9, 9 } is an empty window" },
        { WITH("  schedule = {\n    tz = 'Mars/Olympus_Mons',\n  },\n"), 6,
          "schedule.tz: unknown time zone \"Mars/Olympus_Mons\"" },
        { WITH("  schedule = { tz = 2 },\n"), 5, "schedule.tz must be a zone name" },
        { WITH("  schedule = {\n    start = '2026-03-01',\n  },\n"), 6, "unknown field 'start' in schedule" },
        /* caps */
        { WITH("  caps = {\n    customer = { { 3, '7d' }, { 1, '7x' } },\n  },\n"), 6,
          "caps.customer[2]: window \"7x\" is not N[hdw] (1h .. 366d) or \"life\"" },
        { WITH("  caps = {\n    customer = {\n      { 3, '7d' },\n      { -1, '1d' },\n    },\n  },\n"), 8,
          "caps.customer[2]: the count must be a whole number >= 0" },
        { WITH("  caps = { customer = { { 1.5, '1d' } } },\n"), 5,
          "caps.customer[1]: the count must be a whole number" },
        { WITH("  caps = { customer = { { '3', '1d' } } },\n"), 5,
          "caps.customer[1]: the count must be a whole number" },
        { WITH("  caps = { customer = { { 3, 7 } } },\n"), 5,
          "caps.customer[1]: the window must be a string like \"7d\" or \"life\"" },
        { WITH("  caps = { customer = { { 3, '400d' } } },\n"), 5, "window \"400d\" is not N[hdw]" },
        { WITH("  caps = { customer = { { 3, '0d' } } },\n"), 5, "window \"0d\" is not N[hdw]" },
        { WITH("  caps = { customer = { { 3, '10m' } } },\n"), 5, "window \"10m\" is not N[hdw]" },
        { WITH("  caps = {\n    total = { { 100, 'forever' } },\n  },\n"), 6,
          "caps.total[1]: window \"forever\" is not" },
        { WITH("  caps = {\n    daily = 5,\n  },\n"), 6, "unknown field 'daily' in caps (use customer or total)" },
        { WITH("  caps = 3,\n"), 5, "caps must be a table { customer = ..., total = ... }" },
        { WITH("  caps = { customer = 3 },\n"), 5, "caps.customer: expected a list like { { 3, \"7d\" } }" },
        { WITH("  caps = { customer = { {1,'1h'},{1,'2h'},{1,'3h'},{1,'4h'},{1,'5h'},{1,'6h'},{1,'7h'},"
               "{1,'8h'},{1,'9h'} } },\n"), 5, "caps.customer: at most 8 windows" },
        /* variants */
        { "return {\n  channels = { 'web' },\n  variants = {},\n" ELIG "}\n", 3,
          "variants must be a list of 1-64 { id = ..., weight = ..., content = {...} }" },
        { "return {\n  channels = { 'web' },\n" ELIG "}\n", 1, "variants must be a list of 1-64" },
        { "return {\n  channels = { 'web' },\n  variants = { A = { content = {} } },\n" ELIG "}\n", 3,
          "variants must be a list of 1-64" },
        { "return {\n  channels = { 'web' },\n  variants = { 'A' },\n" ELIG "}\n", 3,
          "variants[1] must be a table" },
        { "return {\n  channels = { 'web' },\n  variants = { { content = {} } },\n" ELIG "}\n", 3,
          "variants[1].id must be a string" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = '', content = {} } },\n" ELIG "}\n", 3,
          "variants[1].id must be 1-128 bytes of UTF-8 text" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = '\\255', content = {} } },\n" ELIG "}\n", 3,
          "variants[1].id must be 1-128 bytes of UTF-8 text" },
        { "return {\n  channels = { 'web' },\n  variants = {\n    { id = 'A', content = {} },\n"
          "    { id = 'B', content = {} },\n    { id = 'A', content = {} },\n  },\n" ELIG "}\n", 6,
          "variants[3]: duplicate id \"A\"" },
        { "return {\n  channels = { 'web' },\n  variants = {\n    { id = 'A', weight = 1, content = {} },\n"
          "    { id = 'B',\n      weight = -5,\n      content = {} },\n  },\n" ELIG "}\n", 6,
          "variants[2].weight must be a number from 0 to 1e9" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', weight = 0/0, content = {} } },\n"
          ELIG "}\n", 3, "variants[1].weight must be a number from 0 to 1e9" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', weight = 1/0, content = {} } },\n"
          ELIG "}\n", 3, "variants[1].weight must be a number from 0 to 1e9" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', weight = '50', content = {} } },\n"
          ELIG "}\n", 3, "variants[1].weight must be a number" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = 'hello' } },\n" ELIG "}\n",
          3, "variants[1].content must be a table of fields" },
        { "return {\n  channels = { 'web' },\n  variants = {\n    { id = 'A',\n      weight = 1 },\n  },\n"
          ELIG "}\n", 4, "variants[1].content must be a table of fields" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = {\n"
          "    title = 'ok',\n    headline = 'Hi {{first_name',\n  } } },\n" ELIG "}\n", 5,
          "variants[1].content.headline: unclosed {{" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = { h = 'a {{}} b' } } },\n"
          ELIG "}\n", 3, "variants[1].content.h: empty placeholder" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = { h = '{{a..b}}' } } },\n"
          ELIG "}\n", 3, "variants[1].content.h: invalid path \"a..b\"" },
        { "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = { f = print } } },\n"
          ELIG "}\n", 3, "variants[1].content holds a value JSON cannot carry" },
        /* hooks */
        { "return {\n  channels = { 'web' },\n" VARS "}\n", 1,
          "eligible is required: eligible = function(p, ctx) return true end" },
        { HEAD VARS "  eligible = true,\n}\n", 4, "eligible must be a function" },
        { WITH("  score = 10,\n"), 5, "score must be a function" },
        { WITH("  content = 'A',\n"), 5, "content must be a function" },
        { WITH("  throttle = { 1, '1d' },\n"), 5, "throttle must be a function" },
        /* trigger, cost */
        { WITH("  trigger = 'signup',\n"), 5, "trigger must be a table { event = ..., delay = ..." },
        { WITH("  trigger = {\n    delay = '1h',\n  },\n"), 5, "trigger.event must name an event type" },
        { WITH("  trigger = {\n    event = 'signup',\n    delay = 'soon',\n  },\n"), 7,
          "trigger.delay \"soon\" is not a duration like \"1h\"" },
        { WITH("  cost = { per_send = -0.5 },\n"), 5, "cost values must be >= 0" },
        { WITH("  cost = 3,\n"), 5, "cost must be a table" },
    };
    return cr_make_param_array(struct bad, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad *c, rules, bad_campaign)
{
    expect_error(RULES_CAMPAIGN, "rules/t.lua", c->src, strlen(c->src), c->line, c->want);
}

/* ---- plugins ------------------------------------------------------------- */

ParameterizedTestParameters(rules, bad_plugin)
{
    static struct bad cases[] = {
        { "return 'sms'\n", 1, "the file must return a table" },
        { "return {\n  policy = {},\n}\n", 1, "channel must be a short name like \"email\"" },
        { "return {\n  channel = 'e mail',\n}\n", 2, "channel must be a short name" },
        { "return {\n  channel = 5,\n}\n", 2, "channel must be a short name" },
        { "return {\n  channel = 'abcdefghijabcdefghijabcdefghijabc',\n}\n", 2, "channel must be a short name" },
        { "return {\n  channel = 'sms',\n  policy = {\n    quiet_hours = { 21, 24 },\n  },\n}\n", 4,
          "policy.quiet_hours must be { from, to } hours 0-23" },
        { "return {\n  channel = 'sms',\n  policy = { quiet_hours = { -1, 8 } },\n}\n", 3,
          "policy.quiet_hours must be { from, to } hours 0-23" },
        { "return {\n  channel = 'sms',\n  policy = { quiet_hours = { 21 } },\n}\n", 3,
          "policy.quiet_hours must be { from, to } hours 0-23" },
        { "return {\n  channel = 'sms',\n  policy = { quiet_hours = '21-8' },\n}\n", 3,
          "policy.quiet_hours must be { from, to }" },
        { "return {\n  channel = 'sms',\n  policy = {\n    customer = { { 1, 'daily' } },\n  },\n}\n", 4,
          "policy.customer[1]: window \"daily\" is not N[hdw]" },
        { "return {\n  channel = 'sms',\n  policy = {\n    daily = 1,\n  },\n}\n", 4,
          "unknown field 'daily' in policy" },
        { "return {\n  channel = 'sms',\n  policy = { consent = true },\n}\n", 3,
          "policy.consent must name a consent key" },
        { "return {\n  channel = 'sms',\n  policy = 'strict',\n}\n", 3, "policy must be a table" },
        { "return {\n  channel = 'sms',\n  render = 'text',\n}\n", 3, "render must be a function" },
        { "return {\n  channel = 'sms',\n  deliver = 1,\n}\n", 3, "deliver must be a function" },
        { "return {\n  channel = 'sms',\n  chanel = 'sms',\n}\n", 3, "unknown field 'chanel' in the plugin table" },
        { "return {\n  channel = 'sms',\n  eligible = function() return true end,\n}\n", 3,
          "unknown field 'eligible' in the plugin table" },
    };
    return cr_make_param_array(struct bad, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad *c, rules, bad_plugin)
{
    expect_error(RULES_PLUGIN, "plugins/t.lua", c->src, strlen(c->src), c->line, c->want);
}

/* ---- valid files ---------------------------------------------------------- */

static const char full_campaign[] =
    "-- every field, every hook\n"
    "local util = require 'util'\n"
    "return {\n"
    "  id = 'spring-sale', name = 'Spring sale', description = 'banner', owner = 'ana',\n"
    "  tags = { 'seasonal' },\n"
    "  channels = { 'web', 'email' },\n"
    "  placements = { 'home_banner', 'cart' },\n"
    "  priority = 70,\n"
    "  status = 'paused',\n"
    "  schedule = { starts = '2026-03-01T00:00:00Z', ends = '2026-03-31T23:59:59Z',\n"
    "               days = { 'mon', 'tue', 6 }, hours = { 9, 18 }, tz = 'Europe/Paris' },\n"
    "  caps = { customer = { { 3, '7d' }, { 1, '1d' }, { 5, 'life' } }, total = { { 1000, '2w' } } },\n"
    "  variants = {\n"
    "    { id = 'A', weight = 1, content = { headline = 'Hi {{first_name|there}}', body_raw = '<b>x</b>',\n"
    "                                        nested = { list = { 'a', '{{tier}}' } } } },\n"
    "    { id = 'B', weight = 3, content = { headline = '{{ a.b | x }}' } },\n"
    "  },\n"
    "  trigger = { event = 'signup', delay = '1h', cancel_on = 'conversion' },\n"
    "  cost = { per_send = 0.01, per_impression = 0.001 },\n"
    "  eligible = function(p, ctx) return util.gold(p) end,\n"
    "  score = function(p, ctx) return 1 end,\n"
    "  content = function(p, ctx, variants) return variants[1] end,\n"
    "  throttle = function(p, ctx, counts) return true end,\n"
    "}\n";

Test(rules, full_campaign_parses)
{
    json_t *errors = json_array();
    struct rules_campaign c;
    int rc = rules_validate_campaign("rules/spring.lua", full_campaign, sizeof full_campaign - 1, chans, 3,
                                     libdir, errors, &c);
    char *all = json_dumps(errors, 0);
    cr_assert_eq(rc, 0, "%s", all);
    free(all);
    cr_assert_str_eq(c.id, "spring-sale");
    cr_assert_str_eq(c.name, "Spring sale");
    cr_assert_eq(c.channels, 1u << 0 | 1u << 2, "web and email are chans[0] and chans[2]");
    cr_assert_eq(c.nplacements, 2);
    cr_assert_str_eq(c.placements[1], "cart");
    cr_assert_float_eq(c.priority, 70, 1e-9);
    cr_assert_eq(c.file_status, CAMP_PAUSED);
    cr_assert_eq(c.sched.starts, 1772323200);
    cr_assert_eq(c.sched.ends, 1775001599);
    cr_assert_eq(c.sched.days, 1u << 1 | 1u << 2 | 1u << 6);
    cr_assert_eq(c.sched.hour_from, 9);
    cr_assert_eq(c.sched.hour_to, 18);
    cr_assert_str_eq(c.sched.tz, "Europe/Paris");
    cr_assert_eq(c.cust_caps.n, 3);
    cr_assert_eq(c.cust_caps.w[0].limit, 3);
    cr_assert_eq(c.cust_caps.w[0].secs, 7 * 86400);
    cr_assert_str_eq(c.cust_caps.w[1].label, "1d");
    cr_assert_eq(c.cust_caps.w[2].unit, 'L');
    cr_assert_eq(c.total_caps.n, 1);
    cr_assert_eq(c.total_caps.w[0].secs, 14 * 86400);
    cr_assert_eq(c.nvariants, 2);
    cr_assert_str_eq(c.variants[1].id, "B");
    cr_assert_float_eq(c.weight_sum, 4, 1e-9);
    cr_assert_eq(c.hooks, HOOKS_BIT(HOOKS_ELIGIBLE) | HOOKS_BIT(HOOKS_SCORE) |
                              HOOKS_BIT(HOOKS_CONTENT) | HOOKS_BIT(HOOKS_THROTTLE));
    cr_assert_str_eq(json_string_value(json_object_get(c.trigger, "event")), "signup");
    cr_assert_float_eq(c.cost_per_send, 0.01, 1e-12);
    rules_campaign_free(&c);
    json_decref(errors);
}

Test(rules, minimal_campaign_defaults)
{
    static const char src[] = "return { channels = { 'app' }, variants = { { id = 'A', content = {} } },\n"
                              "  eligible = function() return true end }\n";
    json_t *errors = json_array();
    struct rules_campaign c;
    cr_assert_eq(rules_validate_campaign("rules/promos/summer.lua", src, sizeof src - 1, chans, 3, libdir,
                                         errors, &c), 0);
    cr_assert_str_eq(c.id, "promos.summer", "id defaults to the path under rules/, '/' → '.'");
    cr_assert_str_eq(c.name, "promos.summer", "name defaults to the id");
    cr_assert_eq(c.channels, 1u << 1);
    cr_assert_float_eq(c.priority, 50, 1e-9, "default priority");
    cr_assert_eq(c.file_status, CAMP_ACTIVE);
    cr_assert_eq(c.sched.starts, 0);
    cr_assert_eq(c.sched.hour_from, -1);
    cr_assert_eq(c.cust_caps.n + c.total_caps.n, 0);
    cr_assert_float_eq(c.variants[0].weight, 1, 1e-9, "default weight");
    cr_assert_eq(c.hooks, HOOKS_BIT(HOOKS_ELIGIBLE));
    cr_assert_null(c.placements == NULL ? NULL : (c.nplacements ? c.placements[0] : NULL));
    rules_campaign_free(&c);
    json_decref(errors);
}

Test(rules, hour_windows_all_day_and_overnight)
{
    static const char *ok[] = { "{ 0, 24 }", "{ 22, 6 }", "{ 9, 17 }", "{ 23, 0 }" };
    for (int i = 0; i < 4; i++) {
        char src[400];
        snprintf(src, sizeof src, WITH("  schedule = { hours = %s },\n"), ok[i]);
        int rc;
        json_t *e = validate(RULES_CAMPAIGN, "rules/t.lua", src, strlen(src), &rc);
        char *d = json_dumps(e, 0);
        cr_assert_eq(rc, 0, "%s: %s", ok[i], d);
        free(d);
        json_decref(e);
    }
}

Test(rules, file_name_that_is_not_an_id)
{
    static const char src[] = "return { channels = { 'web' }, variants = { { id = 'A', content = {} } },\n"
                              "  eligible = function() return true end }\n";
    expect_error(RULES_CAMPAIGN, "rules/big sale.lua", src, sizeof src - 1, 1,
                 "the file name gives the id \"big sale\", which is not valid: set id = \"...\"");
    /* the same file with an explicit id is fine */
    static const char ok[] = "return { id = 'big-sale', channels = { 'web' },\n"
                             "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n";
    int rc;
    json_t *e = validate(RULES_CAMPAIGN, "rules/big sale.lua", ok, sizeof ok - 1, &rc);
    cr_assert_eq(rc, 0);
    json_decref(e);
}

Test(rules, valid_plugins)
{
    static const char web[] = "return {\n  channel = 'web',\n  policy = { customer = { { 20, '1d' } } },\n"
                              "  render = function(offer, p, ctx) return offer.content end,\n}\n";
    static const char sms[] = "return { channel = 'sms', description = 'texts',\n"
                              "  policy = { customer = { { 1, '1d' } }, quiet_hours = { 21, 8 }, consent = 'sms' },\n"
                              "  render = function(o, p, ctx) return { to = p.phone } end,\n"
                              "  deliver = function(msg, net) return true end }\n";
    int rc;
    json_t *e = validate(RULES_PLUGIN, "plugins/web.lua", web, sizeof web - 1, &rc);
    cr_assert_eq(rc, 0);
    json_decref(e);
    e = validate(RULES_PLUGIN, "plugins/sms.lua", sms, sizeof sms - 1, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(json_array_size(e), 0);
    json_decref(e);
}

Test(rules, shipped_examples_are_valid)
{
    static const char *files[] = { "rules/welcome.lua", "rules/spring-sale.lua", "plugins/web.lua",
                                   "plugins/app.lua" };
    char lib[512];
    snprintf(lib, sizeof lib, "%s/rules/lib", PROMOD_SRC);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", PROMOD_SRC, files[i]);
        FILE *f = fopen(p, "rb");
        cr_assert_not_null(f, "%s", p);
        static char src[1 << 16];
        size_t n = fread(src, 1, sizeof src, f);
        fclose(f);
        json_t *errors = json_array();
        int rc = rules_validate_source(files[i], strncmp(files[i], "plugins", 7) ? RULES_CAMPAIGN : RULES_PLUGIN,
                                       src, n, chans, 3, lib, errors);
        char *all = json_dumps(errors, 0);
        cr_assert_eq(rc, 0, "%s: %s", files[i], all);
        free(all);
        json_decref(errors);
    }
}

/* ---- require ---------------------------------------------------------------- */

Test(rules, require_from_lib_works)
{
    static const char src[] = "local util = require 'util'\n"
                              "return { channels = { 'web' }, variants = { { id = 'A', content = {} } },\n"
                              "  eligible = function(p) return util.gold(p) end }\n";
    int rc;
    json_t *e = validate(RULES_CAMPAIGN, "rules/t.lua", src, sizeof src - 1, &rc);
    cr_assert_eq(rc, 0);
    json_decref(e);
}

struct req {
    char src[160];
    int line;
    char want[96];
};

ParameterizedTestParameters(rules, require_refused)
{
    static struct req cases[] = {
        { "local x = require '../x'\nreturn {}\n", 1, "require: invalid module name '../x'" },
        { "\nlocal x = require '/etc/passwd'\nreturn {}\n", 2, "require: invalid module name" },
        { "local x = require 'util.lua'\nreturn {}\n", 1, "not found" },
        { "local x = require 'nope'\nreturn {}\n", 1, "require: module 'nope' not found" },
        { "local x = require 'jit'\nreturn {}\n", 1, "require: module 'jit' not found" },
        { "local x = require(5)\nreturn {}\n", 1, "require" },
    };
    return cr_make_param_array(struct req, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct req *c, rules, require_refused)
{
    expect_error(RULES_CAMPAIGN, "rules/t.lua", c->src, strlen(c->src), c->line, c->want);
}

Test(rules, broken_lib_module_reports_its_own_line)
{
    static const char src[] = "local b = require 'broken'\nreturn {}\n";
    int rc;
    json_t *e = validate(RULES_CAMPAIGN, "rules/t.lua", src, sizeof src - 1, &rc);
    cr_assert_neq(rc, 0);
    const char *m = json_string_value(json_array_get(e, 0));
    cr_assert_not_null(m);
    cr_assert(strstr(m, "broken.lua:2:") != NULL, "%s", m);
    json_decref(e);
}

Test(rules, no_lib_dir_no_require)
{
    static const char src[] = "local util = require 'util'\nreturn {}\n";
    json_t *errors = json_array();
    cr_assert_neq(rules_validate_source("rules/t.lua", RULES_CAMPAIGN, src, sizeof src - 1, chans, 3, NULL,
                                        errors), 0);
    cr_assert(strstr(json_string_value(json_array_get(errors, 0)), "module 'util' not found"));
    json_decref(errors);
}

/* ---- hostile files ---------------------------------------------------------- */

Test(rules, nul_byte_and_bytecode_refused)
{
    static const char src[] = "return {}\0 trailing";
    expect_error(RULES_CAMPAIGN, "rules/t.lua", src, sizeof src - 1, 1, "NUL byte");
    static const char bc[] = "\033LJ\002garbage";
    expect_error(RULES_CAMPAIGN, "rules/t.lua", bc, sizeof bc - 1, 1, "binary chunk");
}

Test(rules, oversized_file_refused)
{
    size_t n = (1u << 20) + 10;
    char *src = malloc(n + 1);
    memset(src, ' ', n);
    memcpy(src, "return {}", 9);
    src[n] = 0;
    expect_error(RULES_CAMPAIGN, "rules/t.lua", src, n, 1, "file larger than 1048576 bytes");
    free(src);
}

Test(rules, memory_bomb_at_load_is_stopped)
{
    /* the memory error has no position of its own: it is reported at line 1 */
    static const char src[] = "local t = {}\nfor i = 1, 1e9 do t[i] = string.rep('x', 65536) .. i end\nreturn {}\n";
    expect_error(RULES_CAMPAIGN, "rules/t.lua", src, sizeof src - 1, 1, "memory limit exceeded");
}

/* Errors for several fields come out together, each on its own line. */
Test(rules, every_problem_reported_with_its_line)
{
    static const char src[] =
        "return {\n"                                    /* 1 */
        "  id = 'x y',\n"                               /* 2 */
        "  channels = { 'web', 'pager' },\n"            /* 3 */
        "  priority = 'top',\n"                         /* 4 */
        "  variants = {\n"                              /* 5 */
        "    { id = 'A', weight = 2, content = {} },\n" /* 6 */
        "    { id = 'B', weight = -1, content = {} },\n"/* 7 */
        "  },\n"                                        /* 8 */
        "  -- content = 5, (a comment: not the field)\n"/* 9 */
        "  content = 5,\n"                              /* 10 */
        "}\n";
    int rc;
    json_t *e = validate(RULES_CAMPAIGN, "rules/t.lua", src, sizeof src - 1, &rc);
    static const char *want[] = { "rules/t.lua:2: id \"x y\"", "rules/t.lua:3: unknown channel \"pager\"",
                                  "rules/t.lua:4: priority must be a number",
                                  "rules/t.lua:7: variants[2].weight must be a number from 0 to 1e9",
                                  "rules/t.lua:10: content must be a function",
                                  "rules/t.lua:1: eligible is required" };
    char *all = json_dumps(e, JSON_INDENT(1));
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        int found = 0;
        for (size_t i = 0; i < json_array_size(e); i++)
            found |= !strncmp(json_string_value(json_array_get(e, i)), want[w], strlen(want[w]));
        cr_assert(found, "missing %s in %s", want[w], all);
    }
    cr_assert_eq(json_array_size(e), 6, "%s", all);
    free(all);
    json_decref(e);
}

/* Lines stay right when the table is built in a local, strings hold braces
 * and long comments hold look-alike fields. */
Test(rules, lines_survive_locals_strings_and_comments)
{
    static const char src[] =
        "--[[ variants = { { id = 'A', weight = 0 } } ]]\n"         /* 1 */
        "local helper = { weight = 0 }\n"                         /* 2 */
        "local c = {\n"                                           /* 3 */
        "  channels = { 'web' },\n"                               /* 4 */
        "  eligible = function(p)\n"                              /* 5 */
        "    local t = { weight = 1, s = '{ {' }\n"               /* 6 */
        "    return true\n"                                       /* 7 */
        "  end,\n"                                                /* 8 */
        "  variants = {\n"                                        /* 9 */
        "    { id = 'A', content = { h = [[ { ]] } },\n"          /* 10 */
        "    { id = 'B',\n"                                       /* 11 */
        "      weight = -1, content = {} },\n"                    /* 12 */
        "  },\n"                                                  /* 13 */
        "}\n"                                                     /* 14 */
        "return c\n";
    expect_error(RULES_CAMPAIGN, "rules/t.lua", src, sizeof src - 1, 12,
                 "variants[2].weight must be a number from 0 to 1e9");
}
