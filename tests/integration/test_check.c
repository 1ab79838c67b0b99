/*
 * test_check.c — `promod check [dirs|files]`: the loader's validation from
 * the command line.  Good trees exit 0; every problem is one
 * "file:line: message" line on stdout and the exit status is 1.
 */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server t; /* only its temp tree: no server is started */

static void setup(void) { tfx_server_init(&t, NULL); }
static void teardown(void) { tfx_server_cleanup(&t); }

TestSuite(check, .init = setup, .fini = teardown, .timeout = 60);

#define GOOD "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = { h = 'x' } } },\n" \
             "  eligible = function(p, ctx) return true end,\n}\n"

/* Every non-empty line of `out` except the summary is "file:line: message". */
static int count_problem_lines(const char *out)
{
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[^ :]+\\.lua:[0-9]+: .+$", REG_EXTENDED | REG_NOSUB), 0);
    int n = 0;
    char *copy = strdup(out), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "promod check:", 13) || strstr(line, ": warning: "))
            continue; /* warnings are not problems (test_authoring.c) */
        cr_assert_eq(regexec(&re, line, 0, NULL, 0), 0, "not file:line: message: \"%s\"", line);
        n++;
    }
    free(copy);
    regfree(&re);
    return n;
}

static int check(char **out, const char *a, const char *b)
{
    return tfx_promod(out, "check", a, b, (char *)NULL);
}

Test(check, good_tree_exits_0)
{
    tfx_write(&t, "rules/a.lua", GOOD);
    tfx_write(&t, "rules/promos/b.lua",
              "local util = require 'util'\nreturn {\n  channels = { 'web', 'app' },\n"
              "  variants = { { id = 'A', content = {} } },\n"
              "  eligible = function(p) return util.ltv_band(p) == 'high' end,\n}\n");
    tfx_write(&t, "rules/.#a.lua", "editor lock file: not Lua");
    tfx_write(&t, "rules/notes.txt", "not a campaign");
    char *out;
    int rc = check(&out, t.rules, t.plugins);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_eq(count_problem_lines(out), 0, "%s", out);
    /* rules/lib/util.lua is a library, not a campaign: 2 campaigns + the plugins */
    cr_assert(strstr(out, "0 problems"), "%s", out);
    free(out);
}

Test(check, errors_are_file_line_message_and_exit_1)
{
    tfx_write(&t, "rules/ok.lua", GOOD);
    tfx_write(&t, "rules/syntax.lua", "return {\n  channels = { 'web' }\n  variants = {},\n}\n");
    tfx_write(&t, "rules/fields.lua",
              "return {\n  channels = { 'fax' },\n  priority = 'high',\n"
              "  variants = { { id = 'A', weight = -1, content = {} } },\n"
              "  eligible = function() return true end,\n}\n");
    tfx_write(&t, "plugins/sms.lua", "return {\n  channel = 'sms',\n  policy = { quiet_hours = { 21, 30 } },\n}\n");
    char *out;
    int rc = check(&out, t.rules, t.plugins);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert_eq(count_problem_lines(out), 5, "%s", out);
    char want[4][400];
    snprintf(want[0], sizeof want[0], "%s/syntax.lua:3: '}' expected", t.rules);
    snprintf(want[1], sizeof want[1], "%s/fields.lua:2: unknown channel \"fax\"", t.rules);
    snprintf(want[2], sizeof want[2], "%s/fields.lua:3: priority must be a number", t.rules);
    snprintf(want[3], sizeof want[3], "%s/sms.lua:3: policy.quiet_hours must be", t.plugins);
    for (int i = 0; i < 4; i++)
        cr_assert(strstr(out, want[i]), "missing %s in\n%s", want[i], out);
    cr_assert(strstr(out, "5 problems"), "%s", out);
    free(out);
}

Test(check, missing_path)
{
    char *out;
    char missing[400];
    snprintf(missing, sizeof missing, "%s/no-such-dir", t.dir);
    int rc = check(&out, missing, t.plugins);
    cr_assert_eq(rc, 1, "%s", out);
    char want[500];
    snprintf(want, sizeof want, "%s:1: cannot read: No such file or directory", missing);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
}

Test(check, duplicate_campaign_ids_like_the_loader)
{
    tfx_write(&t, "rules/a.lua", "return {\n  id = 'same',\n  channels = { 'web' },\n"
                                 "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n");
    tfx_write(&t, "rules/b.lua", "return {\n  channels = { 'web' },\n  id = 'same',\n"
                                 "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n");
    /* default ids: rules/x/a.lua is "x.a", not "a" */
    tfx_write(&t, "rules/x/a.lua", GOOD);
    char *out;
    int rc = check(&out, t.rules, t.plugins);
    cr_assert_eq(rc, 1, "%s", out);
    char want[1200];
    snprintf(want, sizeof want, "%s/b.lua:3: duplicate campaign id \"same\" (also in %s/a.lua)", t.rules, t.rules);
    cr_assert(strstr(out, want), "missing %s in\n%s", want, out);
    cr_assert_eq(count_problem_lines(out), 1, "%s", out);
    free(out);
}

Test(check, duplicate_channel)
{
    tfx_write(&t, "plugins/web2.lua", "return {\n  channel = 'web',\n}\n");
    char *out;
    int rc = check(&out, t.rules, t.plugins);
    cr_assert_eq(rc, 1, "%s", out);
    char want[1200];
    snprintf(want, sizeof want, "%s/web2.lua:2: duplicate channel \"web\"", t.plugins);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
}

Test(check, channels_come_from_the_plugins_checked)
{
    tfx_write(&t, "rules/pager.lua", "return {\n  channels = { 'pager' },\n"
                                   "  variants = { { id = 'A', content = {} } }, eligible = function() return true end }\n");
    char *out;
    cr_assert_eq(check(&out, t.rules, t.plugins), 1, "no pager plugin yet: %s", out);
    cr_assert(strstr(out, "pager.lua:2: unknown channel \"pager\""), "%s", out);
    free(out);
    tfx_write(&t, "plugins/pager.lua", "return { channel = 'pager', policy = { quiet_hours = { 21, 8 } } }\n");
    cr_assert_eq(check(&out, t.rules, t.plugins), 0, "%s", out);
    free(out);
}

Test(check, single_files_and_config_defaults)
{
    tfx_write(&t, "rules/a.lua", GOOD);
    tfx_write(&t, "rules/bad.lua", "return 7\n");
    char a[400], bad[400];
    snprintf(a, sizeof a, "%s/a.lua", t.rules);
    snprintf(bad, sizeof bad, "%s/bad.lua", t.rules);
    char *out;
    /* one good file (channels from plugins_dir of the config) */
    cr_assert_eq(tfx_promod(&out, "check", "-c", t.config, a, (char *)NULL), 0, "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "check", "-c", t.config, bad, (char *)NULL), 1, "%s", out);
    char want[500];
    snprintf(want, sizeof want, "%s:1: the file must return a table", bad);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    /* no paths: the config's rules_dir and plugins_dir */
    cr_assert_eq(tfx_promod(&out, "check", "-c", t.config, (char *)NULL), 1, "%s", out);
    cr_assert(strstr(out, want), "%s", out);
    cr_assert_eq(count_problem_lines(out), 1, "%s", out);
    free(out);
}

Test(check, require_outside_lib_fails)
{
    tfx_write(&t, "rules/esc.lua", "local x = require '../../etc/passwd'\nreturn {}\n");
    char *out;
    cr_assert_eq(check(&out, t.rules, t.plugins), 1, "%s", out);
    cr_assert(strstr(out, "esc.lua:1: require: invalid module name"), "%s", out);
    free(out);
}

/* Loading a file gets the config's instruction_budget, in check as in the
 * server's workers: a file that passes check also loads where it runs. */
Test(check, load_budget_is_the_configs)
{
    tfx_write(&t, "rules/heavy.lua",
              "local t = {}\nfor i = 1, 600000 do t[i] = i end\n"
              "return { channels = { 'web' }, variants = { { id = 'A', content = {} } },\n"
              "  eligible = function() return true end }\n");
    char *out;
    cr_assert_eq(tfx_promod(&out, "check", "-c", t.config, (char *)NULL), 1, "%s", out);
    cr_assert(strstr(out, "heavy.lua:2: instruction budget exceeded"), "%s", out);
    free(out);
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "return { rules_dir = '%s', plugins_dir = '%s', instruction_budget = 50000000 }\n",
             t.rules, t.plugins);
    tfx_write(&t, "big.lua", cfg);
    char path[400];
    snprintf(path, sizeof path, "%s/big.lua", t.dir);
    cr_assert_eq(tfx_promod(&out, "check", "-c", path, (char *)NULL), 0, "%s", out);
    free(out);
}
