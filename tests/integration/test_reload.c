/*
 * test_reload.c — hot reload of rules/ and plugins/ on a real server:
 * edits take effect within a second, under load without a single failed
 * request; a broken edit keeps the previous version serving and is
 * reported with its line in GET /api/v1/rules and in the log; new broken
 * files stay out; deletes remove campaigns; rules/lib changes reach the
 * campaigns that require them; plugins reload too; POST /api/v1/rules/reload
 * and POST /api/v1/rules/validate.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "fixture.h"

static struct tfx_server srv;

#define CAMP(id, prio, text)                                                                      \
    "return {\n  id = '" id "',\n  channels = { 'web' },\n  priority = " #prio ",\n"              \
    "  variants = { { id = 'A', content = { t = '" text "' } } },\n"                               \
    "  eligible = function(p, ctx) return true end,\n}\n"

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    /* a roomy web policy: the load test sends thousands of decides */
    tfx_write(&srv, "plugins/web.lua", "return { channel = 'web', policy = { customer = { { 100000, '1d' } } } }\n");
    tfx_write(&srv, "rules/steady.lua", CAMP("steady", 10, "steady"));
    tfx_write(&srv, "rules/live.lua", CAMP("live", 50, "v0"));
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

/* Stop the server inside the test: it must exit 0 with a clean log (under
 * the sanitizer build a leak or an error report fails the test here;
 * teardown cannot fail a test). */
static void stop_clean(void)
{
    int st = tfx_server_stop(&srv);
    char *log = tfx_server_log(&srv);
    int clean = !strstr(log, "Sanitizer") && !strstr(log, "runtime error");
    char *tail = log + (strlen(log) > 3000 ? strlen(log) - 3000 : 0);
    cr_assert(st == 0 && clean, "server exit %d, log:\n%s", st, tail);
    free(log);
}

TestSuite(reload, .init = setup, .fini = teardown, .timeout = 90);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* content.t of campaign `camp` for a decide, "" when not offered, NULL on a non-200 */
static char *served(const char *camp, const char *channel)
{
    char body[256];
    snprintf(body, sizeof body, "{\"customer_id\":\"c1\",\"channel\":\"%s\",\"limit\":10,\"dry_run\":true}",
             channel);
    struct tfx_resp r;
    if (tfx_req(&srv, "POST", "/api/v1/decide", body, &r) != 200) {
        tfx_resp_free(&r);
        return NULL;
    }
    char *out = strdup("");
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(r.json, "offers"), i, o) {
        const char *c = json_string_value(json_object_get(o, "campaign_id"));
        if (c && !strcmp(c, camp)) {
            const char *t = json_string_value(json_object_get(json_object_get(o, "content"), "t"));
            free(out);
            out = strdup(t ? t : "?");
        }
    }
    tfx_resp_free(&r);
    return out;
}

/* Poll until `camp` serves `want` ("" = absent); returns the seconds it took, or -1. */
static double wait_served(const char *camp, const char *want, double limit_s)
{
    double t0 = now_s();
    while (now_s() - t0 < limit_s) {
        char *s = served(camp, "web");
        int ok = s && !strcmp(s, want);
        free(s);
        if (ok)
            return now_s() - t0;
        usleep(5000);
    }
    return -1;
}

/* The GET /api/v1/rules entry of the file whose path ends with `suffix` (new reference). */
static json_t *file_status(const char *suffix)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    json_t *found = NULL;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r.json, "files"), i, f) {
        const char *p = json_string_value(json_object_get(f, "file"));
        if (p && strlen(p) >= strlen(suffix) && !strcmp(p + strlen(p) - strlen(suffix), suffix))
            found = json_incref(f);
    }
    tfx_resp_free(&r);
    return found;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Wait until the file's status is `status` (<= 2 s); returns the entry. */
static json_t *wait_status(const char *suffix, const char *status)
{
    for (int i = 0; i < 400; i++) {
        json_t *f = file_status(suffix);
        if (f && jstr(f, "status") && !strcmp(jstr(f, "status"), status))
            return f;
        json_decref(f);
        usleep(5000);
    }
    json_t *f = file_status(suffix);
    char *d = f ? json_dumps(f, 0) : strdup("(absent)");
    cr_assert_fail("%s never reached status %s: %s", suffix, status, d);
    return NULL;
}

/* ---- edits ------------------------------------------------------------------ */

Test(reload, edit_takes_effect_within_a_second)
{
    cr_assert_geq(wait_served("live", "v0", 1), 0);
    for (int i = 1; i <= 5; i++) {
        char src[512], want[16];
        snprintf(want, sizeof want, "v%d", i);
        snprintf(src, sizeof src, CAMP("live", 50, "%s"), want);
        tfx_write(&srv, "rules/live.lua", src);
        double took = wait_served("live", want, 2);
        cr_assert(took >= 0 && took < 1.0, "edit %d took %.3f s", i, took);
    }
    json_t *f = file_status("/live.lua");
    cr_assert_str_eq(jstr(f, "status"), "ok");
    cr_assert_str_eq(jstr(f, "campaign_id"), "live");
    cr_assert_eq(strlen(jstr(f, "version")), 8);
    cr_assert_not_null(jstr(f, "loaded_at"));
    cr_assert_null(json_object_get(f, "error"));
    json_decref(f);
    stop_clean();
}

Test(reload, broken_edit_keeps_the_old_version)
{
    cr_assert_geq(wait_served("live", "v0", 1), 0);
    json_t *before = file_status("/live.lua");
    char version[16];
    snprintf(version, sizeof version, "%s", jstr(before, "version"));
    json_decref(before);
    /* a syntax error on line 4 */
    tfx_write(&srv, "rules/live.lua", "return {\n  id = 'live',\n  channels = { 'web' },\n  priority = = 50,\n}\n");
    json_t *f = wait_status("/live.lua", "error_previous_live");
    cr_assert_str_eq(jstr(f, "version"), version, "the version live is the old one");
    json_t *e = json_object_get(f, "error");
    cr_assert_eq(json_integer_value(json_object_get(e, "line")), 4, "%s", jstr(e, "message"));
    char want[600];
    snprintf(want, sizeof want, "%s/live.lua:4: unexpected symbol near '='", srv.rules);
    cr_assert_str_eq(jstr(e, "message"), want);
    json_decref(f);
    for (int i = 0; i < 20; i++) {
        char *s = served("live", "web");
        cr_assert_str_eq(s, "v0", "the previous version keeps serving");
        free(s);
    }
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "rule file rejected") && strstr(log, "live.lua:4: unexpected symbol"), "%s", log);
    cr_assert(strstr(log, "kept_previous=yes"), "%s", log);
    free(log);
    /* a valid Lua file that fails validation is handled the same way */
    tfx_write(&srv, "rules/live.lua", "return {\n  id = 'live',\n  channels = { 'web' },\n  priority = 'high',\n"
                                      "  variants = { { id = 'A', content = { t = 'bad' } } },\n"
                                      "  eligible = function() return true end }\n");
    for (int i = 0; i < 200; i++) {
        f = file_status("/live.lua");
        e = json_object_get(f, "error");
        int done = e && strstr(jstr(e, "message"), "priority must be a number");
        if (done)
            break;
        json_decref(f);
        f = NULL;
        usleep(10000);
    }
    cr_assert_not_null(f, "validation error not reported");
    cr_assert_str_eq(jstr(f, "status"), "error_previous_live");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(f, "error"), "line")), 4);
    json_decref(f);
    char *s = served("live", "web");
    cr_assert_str_eq(s, "v0");
    free(s);
    /* fixing it loads the fix */
    tfx_write(&srv, "rules/live.lua", CAMP("live", 50, "fixed"));
    cr_assert_geq(wait_served("live", "fixed", 1), 0);
    f = wait_status("/live.lua", "ok");
    cr_assert_null(json_object_get(f, "error"));
    cr_assert_str_neq(jstr(f, "version"), version);
    json_decref(f);
    stop_clean();
}

Test(reload, new_broken_file_is_not_loaded_until_fixed)
{
    tfx_write(&srv, "rules/fresh.lua", "return {\n  id = 'fresh',\n  channels = { 'web' }\n  variants = {},\n}\n");
    json_t *f = wait_status("/fresh.lua", "error");
    cr_assert_null(json_object_get(f, "version"), "nothing of it is live");
    cr_assert_null(json_object_get(f, "campaign_id"));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(f, "error"), "line")), 4);
    json_decref(f);
    char *s = served("fresh", "web");
    cr_assert_str_eq(s, "");
    free(s);
    s = served("steady", "web");
    cr_assert_str_eq(s, "steady", "the rest serves");
    free(s);
    tfx_write(&srv, "rules/fresh.lua", CAMP("fresh", 60, "fresh"));
    cr_assert_geq(wait_served("fresh", "fresh", 1), 0);
    f = wait_status("/fresh.lua", "ok");
    cr_assert_str_eq(jstr(f, "campaign_id"), "fresh");
    json_decref(f);
    stop_clean();
}

Test(reload, delete_removes_the_campaign)
{
    tfx_write(&srv, "rules/sub/dir/gone.lua", CAMP("gone", 70, "here"));
    cr_assert_geq(wait_served("gone", "here", 1), 0, "a file in a new subdirectory is picked up");
    tfx_unlink(&srv, "rules/sub/dir/gone.lua");
    cr_assert_geq(wait_served("gone", "", 1), 0);
    json_t *f = file_status("/gone.lua");
    cr_assert_null(f, "a deleted file is not listed");
    /* and a rename is a delete plus a create */
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/live.lua", srv.rules);
    snprintf(to, sizeof to, "%s/live2.lua", srv.rules);
    cr_assert_eq(rename(from, to), 0);
    json_decref(wait_status("/live2.lua", "ok"));
    char *s = served("live", "web");
    cr_assert_str_eq(s, "v0", "same id, new file");
    free(s);
    f = file_status("/live2.lua");
    cr_assert_not_null(f);
    cr_assert_str_eq(jstr(f, "campaign_id"), "live");
    json_decref(f);
    cr_assert_null(file_status("/live.lua"));
    stop_clean();
}

Test(reload, lib_change_reaches_requiring_campaigns)
{
    tfx_write(&srv, "rules/lib/greet.lua", "local M = {}\nfunction M.word() return 'hello' end\nreturn M\n");
    tfx_write(&srv, "rules/greeter.lua",
              "local greet = require 'greet'\n"
              "return { id = 'greeter', channels = { 'web' }, priority = 80,\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx) return greet.word() == 'hello', 'word is ' .. greet.word() end }\n");
    tfx_write(&srv, "rules/greeter2.lua",
              "local greet = require 'greet'\n"
              "local W = greet.word()\n"
              "return { id = 'greeter2', channels = { 'web' }, priority = 81,\n"
              "  variants = { { id = 'A', content = { t = W } } },\n"
              "  eligible = function(p, ctx) return true end }\n");
    cr_assert_geq(wait_served("greeter", "x", 1), 0);
    cr_assert_geq(wait_served("greeter2", "hello", 1), 0);
    tfx_write(&srv, "rules/lib/greet.lua", "local M = {}\nfunction M.word() return 'bye' end\nreturn M\n");
    cr_assert_geq(wait_served("greeter", "", 1), 0, "eligible now sees the new library");
    cr_assert_geq(wait_served("greeter2", "bye", 1), 0, "load-time use of the library too");
    /* the library file itself is not a campaign */
    cr_assert_null(file_status("/lib/greet.lua"));
    /* a broken library: the campaigns that need it keep their previous version
     * (in the workers that loaded it: every worker has adopted it) */
    cr_assert(tfx_wait_rules_live(&srv, 15000), "a worker kept the old library");
    tfx_write(&srv, "rules/lib/greet.lua", "local M = {\nreturn M\n");
    json_t *f = wait_status("/greeter2.lua", "error_previous_live");
    cr_assert(strstr(jstr(json_object_get(f, "error"), "message"), "greet.lua:2:"), "%s",
              jstr(json_object_get(f, "error"), "message"));
    json_decref(f);
    char *s = served("greeter2", "web");
    cr_assert_str_eq(s, "bye");
    free(s);
    stop_clean();
}

Test(reload, plugins_reload)
{
    /* a campaign for a channel that does not exist yet is rejected ... */
    tfx_write(&srv, "rules/kiosk-camp.lua",
              "return { id = 'kiosk-camp', channels = { 'kiosk' }, priority = 5,\n"
              "  variants = { { id = 'A', content = { t = 'kiosk' } } }, eligible = function() return true end }\n");
    json_t *f = wait_status("/kiosk-camp.lua", "error");
    cr_assert(strstr(jstr(json_object_get(f, "error"), "message"), "unknown channel \"kiosk\""));
    json_decref(f);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"k1\",\"channel\":\"kiosk\"}", &r), 422);
    tfx_resp_free(&r);
    /* ... and loads once the plugin appears */
    tfx_write(&srv, "plugins/kiosk.lua", "return { channel = 'kiosk', policy = { customer = { { 100, '1d' } } } }\n");
    json_decref(wait_status("/kiosk-camp.lua", "ok"));
    json_t *p = wait_status("/plugins/kiosk.lua", "ok");
    cr_assert_str_eq(jstr(p, "channel"), "kiosk");
    cr_assert_str_eq(jstr(p, "kind"), "plugin");
    json_decref(p);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"k1\",\"channel\":\"kiosk\"}", &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "offers"), 0),
                                                       "campaign_id")), "kiosk-camp");
    tfx_resp_free(&r);
    /* a policy edit applies: one contact a day */
    tfx_write(&srv, "plugins/kiosk.lua", "return { channel = 'kiosk', policy = { customer = { { 1, '1d' } } } }\n");
    int capped = 0;
    for (int i = 0; i < 100 && !capped; i++) {
        usleep(20000);
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                             "{\"customer_id\":\"k1\",\"channel\":\"kiosk\",\"explain\":true}", &r), 200);
        capped = json_array_size(json_object_get(r.json, "offers")) == 0;
        tfx_resp_free(&r);
    }
    cr_assert(capped, "the new channel policy never applied");
    /* a broken plugin edit keeps the previous plugin */
    tfx_write(&srv, "plugins/kiosk.lua", "return { channel = 'kiosk', policy = { quiet_hours = { 25, 3 } } }\n");
    p = wait_status("/plugins/kiosk.lua", "error_previous_live");
    cr_assert(strstr(jstr(json_object_get(p, "error"), "message"), "policy.quiet_hours"));
    json_decref(p);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"k2\",\"channel\":\"kiosk\"}", &r), 200);
    tfx_resp_free(&r);
    /* a campaign on web and kiosk */
    tfx_write(&srv, "rules/both.lua",
              "return { id = 'both', channels = { 'web', 'kiosk' }, priority = 5,\n"
              "  variants = { { id = 'A', content = { t = 'both' } } }, eligible = function() return true end }\n");
    cr_assert_geq(wait_served("both", "both", 1), 0);
    /* deleting the plugin removes the channel and the campaigns only on it;
     * the one also on web keeps serving there, reported as failing */
    tfx_unlink(&srv, "plugins/kiosk.lua");
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        usleep(10000);
        gone = tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"k1\",\"channel\":\"kiosk\"}", &r) == 422;
        tfx_resp_free(&r);
    }
    cr_assert(gone, "the channel is still there");
    f = wait_status("/kiosk-camp.lua", "error");
    json_decref(f);
    f = wait_status("/both.lua", "error_previous_live");
    cr_assert(strstr(jstr(json_object_get(f, "error"), "message"), "unknown channel \"kiosk\""));
    json_decref(f);
    char *s = served("both", "web");
    cr_assert_str_eq(s, "both");
    free(s);
    stop_clean();
}

/* A file whose top level needs more than the instruction budget is an
 * error in the listing (it used to be "ok" there while no worker could load it). */
Test(reload, load_budget_matches_workers)
{
    tfx_write(&srv, "rules/heavy.lua",
              "local t = {}\nfor i = 1, 600000 do t[i] = i end\n"
              "return { id = 'heavy', channels = { 'web' }, variants = { { id = 'A', content = { t = 'h' } } },\n"
              "  eligible = function() return true end }\n");
    json_t *f = wait_status("/heavy.lua", "error");
    cr_assert(strstr(jstr(json_object_get(f, "error"), "message"), "heavy.lua:2: instruction budget exceeded"),
              "%s", jstr(json_object_get(f, "error"), "message"));
    json_decref(f);
    char *s = served("heavy", "web");
    cr_assert_str_eq(s, "");
    free(s);
    /* a lighter top level loads and serves */
    tfx_write(&srv, "rules/heavy.lua",
              "local t = {}\nfor i = 1, 1000 do t[i] = i end\n"
              "return { id = 'heavy', channels = { 'web' }, variants = { { id = 'A', content = { t = 'h' } } },\n"
              "  eligible = function() return #t == 1000 end }\n");
    cr_assert_geq(wait_served("heavy", "h", 1), 0);
    stop_clean();
}

Test(reload, forced_reload)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    json_int_t gen = json_integer_value(json_object_get(r.json, "generation"));
    cr_assert_eq(json_integer_value(json_object_get(r.json, "campaigns")), 2);
    cr_assert_geq(json_integer_value(json_object_get(r.json, "channels")), 1);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r), 200, "%s", r.body);
    cr_assert_gt(json_integer_value(json_object_get(r.json, "generation")), gen, "a forced reload publishes");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "errors")), 0);
    cr_assert(json_is_array(json_object_get(r.json, "files")));
    tfx_resp_free(&r);
    /* loaded_at of an unchanged file does not move */
    json_t *a = file_status("/steady.lua");
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/reload", "{}", &r), 200);
    tfx_resp_free(&r);
    json_t *b = file_status("/steady.lua");
    cr_assert_str_eq(jstr(a, "loaded_at"), jstr(b, "loaded_at"));
    cr_assert_str_eq(jstr(a, "version"), jstr(b, "version"));
    json_decref(a);
    json_decref(b);
    /* with a broken file the reload reports the count */
    tfx_write(&srv, "rules/zz-broken.lua", "return 1\n");
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "errors")), 1, "%s", r.body);
    tfx_resp_free(&r);
    stop_clean();
}

static void *reload_thread(void *arg)
{
    long kind = (long)arg, bad = 0;
    for (int i = 0; i < 12; i++) {
        struct tfx_resp r;
        int st;
        if (kind == 0)
            st = tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r);
        else if (kind == 1)
            st = tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r);
        else
            st = tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"c9\",\"channel\":\"web\"}", &r);
        if (st != 200 || !r.json)
            bad++;
        if (kind == 2 && st == 200 &&
            json_array_size(json_object_get(r.json, "offers")) != 2) /* live and steady, always */
            bad++;
        tfx_resp_free(&r);
    }
    return (void *)bad;
}

Test(reload, concurrent_reloads_listings_and_decides)
{
    pthread_t th[6];
    for (long i = 0; i < 6; i++)
        pthread_create(&th[i], NULL, reload_thread, (void *)(i % 3));
    long bad = 0;
    for (int i = 0; i < 6; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        bad += (long)rv;
    }
    cr_assert_eq(bad, 0, "%ld failed", bad);
    stop_clean();
}

/* ---- validate ---------------------------------------------------------------- */

Test(reload, validate_good_and_bad)
{
    struct tfx_resp r;
    /* JSON body, good */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/validate",
                         "{\"script\":\"return { channels = { 'web' }, variants = { { id = 'A', content = {} } },"
                         " eligible = function() return true end }\"}", &r), 200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "valid")));
    cr_assert_eq(json_array_size(json_object_get(r.json, "errors")), 0);
    tfx_resp_free(&r);
    /* JSON body, bad: errors as the loader writes them, named after "name" */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/validate",
                         "{\"name\":\"promo.lua\",\"script\":\"return {\\n  channels = { 'fax' },\\n"
                         "  variants = {},\\n}\"}", &r), 422, "%s", r.body);
    cr_assert(json_is_false(json_object_get(r.json, "valid")));
    json_t *e = json_object_get(r.json, "errors");
    const char *e0 = json_string_value(json_array_get(e, 0));
    static const char pre[] = "rules/promo.lua:2: unknown channel \"fax\" (loaded plugins: ";
    cr_assert(e0 && !strncmp(e0, pre, sizeof pre - 1) &&
                  strstr(e0, "; add plugins/fax.lua)"), "%s", e0);
    cr_assert_str_eq(json_string_value(json_array_get(e, 1)),
                     "rules/promo.lua:3: variants must be a list of 1-64 { id = ..., weight = ..., content = {...} }");
    cr_assert_eq(json_array_size(e), 3, "%s", r.body);
    tfx_resp_free(&r);
    /* text/plain body */
    static const char txt[] = "return {\n  channels = { 'web' },\n  variants = { { id = 'A', content = { h = '{{x' } } },\n"
                              "  eligible = function() return true end,\n}\n";
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/rules/validate", "Content-Type: text/plain\r\n", txt,
                          sizeof txt - 1, &r), 422, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r.json, "errors"), 0)),
                     "rules/script.lua:3: variants[1].content.h: unclosed {{ at offset 0");
    tfx_resp_free(&r);
    static const char good[] = "return { channels = { 'web' }, variants = { { id = 'A', content = {} } },\n"
                               "  eligible = function() return true end }\n";
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/rules/validate", "Content-Type: text/plain; charset=utf-8\r\n",
                          good, sizeof good - 1, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    /* kind plugin */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/validate",
                         "{\"kind\":\"plugin\",\"script\":\"return { channel = 'sms', policy = "
                         "{ quiet_hours = { 21, 8 } } }\"}", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/validate",
                         "{\"kind\":\"plugin\",\"name\":\"sms.lua\",\"script\":\"return {\\n  channel = 'sms',\\n"
                         "  policy = { quiet_hours = { 21, 80 } },\\n}\"}", &r), 422, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r.json, "errors"), 0)),
                     "plugins/sms.lua:3: policy.quiet_hours must be { from, to } hours 0-23");
    tfx_resp_free(&r);
    /* hostile scripts are stopped like any other */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/validate", "{\"script\":\"while true do end\"}", &r), 422);
    cr_assert(strstr(json_string_value(json_array_get(json_object_get(r.json, "errors"), 0)),
                     "instruction budget exceeded"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/validate",
                         "{\"script\":\"local f = io.open('/etc/passwd') return {}\"}", &r), 422);
    tfx_resp_free(&r);
    /* nothing validated was loaded */
    char *s = served("script", "web");
    cr_assert_str_eq(s, "");
    free(s);
    stop_clean();
}

Test(reload, validate_matches_the_loader)
{
    static const char src[] = "return {\n  channels = { 'web' },\n  priority = 'x',\n"
                              "  variants = { { id = 'A', weight = 0, content = {} } },\n"
                              "  eligible = function() return true end,\n}\n";
    tfx_write(&srv, "rules/same.lua", src);
    json_t *f = wait_status("/same.lua", "error");
    const char *loader = jstr(json_object_get(f, "error"), "message");
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/rules/validate", "Content-Type: text/plain\r\n", src,
                          sizeof src - 1, &r), 422);
    const char *api = json_string_value(json_array_get(json_object_get(r.json, "errors"), 0));
    /* same "line: message" after the file name */
    cr_assert_str_eq(strstr(loader, "same.lua:") + strlen("same.lua"), strstr(api, "script.lua:") + strlen("script.lua"));
    tfx_resp_free(&r);
    json_decref(f);
    stop_clean();
}

struct bad_validate {
    char ctype[40];
    char body[200];
    int status;
    char field[16];
};

ParameterizedTestParameters(reload, validate_malformed)
{
    static struct bad_validate cases[] = {
        { "application/json", "{}", 400, "script" },
        { "application/json", "{\"script\":5}", 400, "script" },
        { "application/json", "{\"script\":null}", 400, "script" },
        { "application/json", "{\"script\":\"return {}\",\"kind\":\"rule\"}", 400, "kind" },
        { "application/json", "{\"script\":\"return {}\",\"kind\":5}", 400, "kind" },
        { "application/json", "{\"script\":\"return {}\",\"name\":\"../../etc/x.lua\"}", 400, "name" },
        { "application/json", "{\"script\":\"return {}\",\"name\":7}", 400, "name" },
        { "application/json", "{\"script\":\"return {}\",\"scirpt\":\"x\"}", 400, "scirpt" },
        { "application/json", "[\"return {}\"]", 400, "" },
        { "application/json", "{\"script\":", 400, "" },
        { "text/plain", "", 400, "" },
        { "application/xml", "<script/>", 415, "" },
    };
    return cr_make_param_array(struct bad_validate, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_validate *c, reload, validate_malformed)
{
    char hdr[80];
    snprintf(hdr, sizeof hdr, "Content-Type: %s\r\n", c->ctype);
    struct tfx_resp r;
    int st = tfx_http(&srv, "POST", "/api/v1/rules/validate", hdr, c->body, strlen(c->body), &r);
    cr_assert_eq(st, c->status, "%s -> %d %s", c->body, st, r.body);
    json_t *err = json_object_get(r.json, "error");
    cr_assert(json_is_string(json_object_get(err, "code")) && json_is_string(json_object_get(err, "message")),
              "contract error shape: %s", r.body);
    if (c->field[0])
        cr_assert_str_eq(json_string_value(json_object_get(err, "field")), c->field, "%s", r.body);
    tfx_resp_free(&r);
    stop_clean();
}

static void *validate_thread(void *arg)
{
    long i = (long)arg, bad = 0;
    for (int k = 0; k < 15; k++) {
        int good = (k + i) % 2;
        const char *body = good ? "{\"script\":\"return { channels = { 'web' }, variants = { { id = 'A', "
                                  "content = {} } }, eligible = function() return true end }\"}"
                                : "{\"script\":\"return {\\n  channels = { 'web' },\\n  priority = 'x' }\"}";
        struct tfx_resp r;
        int st = tfx_req(&srv, "POST", "/api/v1/rules/validate", body, &r);
        const char *e0 = json_string_value(json_array_get(json_object_get(r.json, "errors"), 0));
        if (good ? st != 200 : (st != 422 || !e0 || strcmp(e0, "rules/script.lua:3: priority must be a number")))
            bad++;
        tfx_resp_free(&r);
    }
    return (void *)bad;
}

Test(reload, validate_oversized_and_concurrent)
{
    /* a script past the body limit */
    size_t n = (1u << 20) + 100;
    char *big = malloc(n + 1);
    memset(big, '-', n);
    big[n] = 0;
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/rules/validate", "Content-Type: text/plain\r\n", big, n, &r), 413,
                 "%s", r.body);
    cr_assert_str_eq(tfx_err_code(&r), "body_too_large");
    tfx_resp_free(&r);
    free(big);
    /* many at once, mixed good and bad: every answer is its own */
    pthread_t th[6];
    for (long i = 0; i < 6; i++)
        pthread_create(&th[i], NULL, validate_thread, (void *)i);
    long bad = 0;
    for (int i = 0; i < 6; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        bad += (long)rv;
    }
    cr_assert_eq(bad, 0, "%ld wrong answers", bad);
    /* validation never touches what is served */
    char *s = served("live", "web");
    cr_assert_str_eq(s, "v0");
    free(s);
    stop_clean();
}

/* ---- under load ------------------------------------------------------------------ */

/* A keep-alive HTTP/1.1 client: one connection per load thread. */
struct conn {
    int fd;
    char buf[65536];
    size_t have;
};

static int conn_open(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->have = 0;
    return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

/* One POST; returns the status (0 on a transport failure) and the body in c->buf (NUL-terminated). */
static int conn_post(struct conn *c, const char *path, const char *body, const char **out)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, strlen(body), body);
    if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return 0;
    c->have = 0;
    size_t need = 0, hdr = 0;
    for (;;) {
        struct pollfd p = { c->fd, POLLIN, 0 };
        if (poll(&p, 1, 10000) <= 0)
            return 0;
        ssize_t k = read(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have);
        if (k <= 0)
            return 0;
        c->have += (size_t)k;
        c->buf[c->have] = 0;
        if (!hdr) {
            char *e = strstr(c->buf, "\r\n\r\n");
            if (!e)
                continue;
            hdr = (size_t)(e - c->buf) + 4;
            char *cl = strcasestr(c->buf, "\r\nContent-Length:");
            if (!cl)
                return 0;
            need = hdr + (size_t)strtoul(cl + 17, NULL, 10);
        }
        if (c->have >= need)
            break;
    }
    int status = 0;
    sscanf(c->buf, "HTTP/1.1 %d", &status);
    *out = c->buf + hdr;
    return status;
}

struct load {
    volatile int stop;
    pthread_mutex_t mu;
    long requests, failures, seen_max;
    char why[512];
};

static struct load L;

static void *load_thread(void *arg)
{
    (void)arg;
    struct conn *c = calloc(1, sizeof *c);
    if (conn_open(c)) {
        pthread_mutex_lock(&L.mu);
        L.failures++;
        snprintf(L.why, sizeof L.why, "connect: %s", strerror(errno));
        pthread_mutex_unlock(&L.mu);
        free(c);
        return NULL;
    }
    long n = 0, fail = 0, maxv = -1;
    char why[512] = "";
    while (!L.stop) {
        const char *body;
        int st = conn_post(c, "/api/v1/decide",
                           "{\"customer_id\":\"load\",\"channel\":\"web\",\"limit\":10}", &body);
        n++;
        json_t *j = st == 200 ? json_loads(body, 0, NULL) : NULL;
        int ok = j != NULL;
        long v = -1;
        int steady = 0;
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(j, "offers"), i, o) {
            const char *cid = json_string_value(json_object_get(o, "campaign_id"));
            const char *t = json_string_value(json_object_get(json_object_get(o, "content"), "t"));
            if (cid && !strcmp(cid, "steady"))
                steady = t && !strcmp(t, "steady");
            if (cid && !strcmp(cid, "live"))
                v = t && t[0] == 'v' ? atol(t + 1) : -2;
        }
        /* always: the untouched campaign, and a whole version of the edited one */
        ok = ok && steady && v >= 0;
        if (!ok) {
            fail++;
            snprintf(why, sizeof why, "status %d: %.300s", st, st ? body : "(transport)");
            close(c->fd);
            conn_open(c);
        } else if (v > maxv) {
            maxv = v;
        }
        json_decref(j);
    }
    close(c->fd);
    free(c);
    pthread_mutex_lock(&L.mu);
    L.requests += n;
    L.failures += fail;
    if (maxv > L.seen_max)
        L.seen_max = maxv;
    if (why[0])
        snprintf(L.why, sizeof L.why, "%s", why);
    pthread_mutex_unlock(&L.mu);
    return NULL;
}

Test(reload, edits_under_load_fail_no_request, .timeout = 120)
{
    memset(&L, 0, sizeof L);
    pthread_mutex_init(&L.mu, NULL);
    L.seen_max = -1;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, load_thread, NULL);
    double t0 = now_s(), worst = 0;
    int version = 0, edits = 0;
    char rel[64], src[600];
    while (now_s() - t0 < 3.0) {
        switch (edits % 6) {
        case 0: case 2: case 4: /* a new version of live.lua, atomically */
            snprintf(src, sizeof src, CAMP("live", 50, "v%d"), ++version);
            tfx_write(&srv, "rules/live.lua", src);
            break;
        case 1: /* a broken save: the previous version must keep serving */
            tfx_write(&srv, "rules/live.lua", "return {\n  id = 'live',\n  channels = { 'web' }\n");
            break;
        case 3: { /* an editor writing in place, in two halves */
            snprintf(src, sizeof src, CAMP("live", 50, "v%d"), ++version);
            char path[600];
            snprintf(path, sizeof path, "%s/live.lua", srv.rules);
            FILE *f = fopen(path, "w");
            cr_assert_not_null(f);
            size_t half = strlen(src) / 2;
            fwrite(src, 1, half, f);
            fflush(f);
            usleep(20000);
            fputs(src + half, f);
            fclose(f);
            break;
        }
        case 5: /* campaigns appearing and disappearing */
            snprintf(rel, sizeof rel, "rules/extra-%d.lua", edits % 4);
            if ((edits / 6) % 2 == 0) {
                char id[32];
                snprintf(id, sizeof id, "extra-%d", edits % 4);
                snprintf(src, sizeof src,
                         "return { id = '%s', channels = { 'web' }, priority = 1,\n"
                         "  variants = { { id = 'A', content = { t = 'extra' } } },\n"
                         "  eligible = function() return true end }\n", id);
                tfx_write(&srv, rel, src);
            } else {
                tfx_unlink(&srv, rel);
            }
            break;
        }
        edits++;
        /* every few edits, measure how long a valid edit takes to be served */
        if (edits % 6 == 0) {
            snprintf(src, sizeof src, CAMP("live", 50, "v%d"), ++version);
            tfx_write(&srv, "rules/live.lua", src);
            char want[16];
            snprintf(want, sizeof want, "v%d", version);
            double took = wait_served("live", want, 3);
            cr_assert_geq(took, 0, "v%d never served", version);
            if (took > worst)
                worst = took;
        } else {
            usleep(40000);
        }
    }
    /* the last valid version is served within a second */
    snprintf(src, sizeof src, CAMP("live", 50, "v%d"), ++version);
    tfx_write(&srv, "rules/live.lua", src);
    char want[16];
    snprintf(want, sizeof want, "v%d", version);
    double took = wait_served("live", want, 2);
    L.stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_log_info("load: %ld decides, %d edits, worst edit-to-served %.3f s, last %.3f s", L.requests, edits,
                worst, took);
    cr_assert_eq(L.failures, 0, "%ld of %ld requests failed; last: %s", L.failures, L.requests, L.why);
    cr_assert_gt(L.requests, 500, "the load generator barely ran (%ld)", L.requests);
    cr_assert(took >= 0 && took < 1.0, "final edit took %.3f s", took);
    cr_assert(worst < 1.0, "an edit took %.3f s under load", worst);
    cr_assert_geq(L.seen_max, version - 2, "the load saw versions up to v%ld of v%d", L.seen_max, version);
    cr_assert(tfx_server_alive(&srv));
    stop_clean();
}
