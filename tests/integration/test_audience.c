/*
 * test_audience.c — campaign audiences on the real server: decide results
 * with `audience` equal those of the same campaigns written as Lua
 * `eligible` (the reference generator's --audiences writes both forms),
 * explain names the audience test that excluded a campaign, p.segments and
 * promo.in_segment in hooks, bad audiences as file:line errors, a campaign
 * with an audience needs no eligible, and outbound sends that walk the
 * segment index (the campaign's own audience, or a saved audience named at
 * launch) instead of every profile.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "outbox_tfx.h"

#define GEN PROMOD_SHARED "/bench/gen_workload.py"

static int req(struct tfx_server *s, const char *m, const char *path, const char *body,
               struct tfx_resp *r)
{
    return tfx_req(s, m, path, body, r);
}

/* Import the generated profiles.ndjson of `s` (written by the generator). */
static void import_generated(struct tfx_server *s)
{
    char path[400];
    snprintf(path, sizeof path, "%s/profiles.ndjson", s->dir);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *body = malloc((size_t)n + 1);
    cr_assert_eq(fread(body, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    struct tfx_resp r;
    cr_assert_eq(tfx_http(s, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n",
                          body, (size_t)n, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "failed")), 0, "%s", r.body);
    tfx_resp_free(&r);
    free(body);
}

static void generate(struct tfx_server *s, int audiences)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "python3 %s %s --profiles 1500 --campaigns 240 --seed 11 %s >/dev/null",
             GEN, s->dir, audiences ? "--audiences" : "");
    cr_assert_eq(system(cmd), 0, "the reference generator failed: %s", cmd);
}

/* The offers of a dry-run decide (placement NULL: none given), as
 * comparable text, and with `eligible` the ids of the campaigns explain
 * calls eligible; without it the decide runs without explain — the path
 * that evaluates only the audiences of campaigns the placement and status
 * let through and skips `eligible = function() return true end`. */
static void decide(struct tfx_server *s, const char *cust, const char *channel, const char *placement,
                   char **offers, json_t **eligible)
{
    char body[400], pl[80] = "";
    if (placement)
        snprintf(pl, sizeof pl, "\"placement\":\"%s\",", placement);
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"channel\":\"%s\",%s\"limit\":3,"
             "\"dry_run\":true,\"explain\":%s}", cust, channel, pl, eligible ? "true" : "false");
    struct tfx_resp r;
    cr_assert_eq(req(s, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
    *offers = json_dumps(json_object_get(r.json, "offers"), JSON_COMPACT | JSON_SORT_KEYS);
    if (!eligible) {
        tfx_resp_free(&r);
        return;
    }
    *eligible = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r.json, "explain"), i, x)
        if (json_is_true(json_object_get(x, "eligible")))
            json_array_append(*eligible, json_object_get(x, "campaign_id"));
    tfx_resp_free(&r);
}

Test(audience, same_decisions_as_eligible_in_lua, .timeout = 300)
{
    struct tfx_server lua, aud;
    tfx_server_init(&lua, NULL);
    tfx_server_init(&aud, NULL);
    generate(&lua, 0);
    generate(&aud, 1);
    /* a segment loaded beside them: audiences are indexed with segments around */
    tfx_write(&aud, "segments/gold.lua", "return { conditions = { tier = \"gold\" } }\n");
    cr_assert_eq(tfx_server_start(&lua), 0);
    cr_assert_eq(tfx_server_start(&aud), 0);
    import_generated(&lua);
    import_generated(&aud);
    struct tfx_resp r;
    cr_assert_eq(req(&aud, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert(!strstr(r.body, "\"error\":\""), "a generated file did not load: %.2000s", r.body);
    tfx_resp_free(&r);
    /* placements: named by campaigns, none given, named by none */
    static const char *where[][2] = { { "web", "home_banner" }, { "web", "cart" },
                                      { "app", "product_page" }, { "web", NULL },
                                      { "app", "nowhere" }, { "email", NULL } };
    const int nwhere = (int)(sizeof where / sizeof where[0]);
    long compared = 0, offered = 0;
    for (int c = 0; c < 1500; c += 3)
        for (int w = 0; w < nwhere; w++) {
            char cust[32];
            snprintf(cust, sizeof cust, "c%08d", c);
            char *o1, *o2, *o3;
            json_t *e1, *e2;
            decide(&lua, cust, where[w][0], where[w][1], &o1, &e1);
            decide(&aud, cust, where[w][0], where[w][1], &o2, &e2);
            decide(&aud, cust, where[w][0], where[w][1], &o3, NULL);
            cr_assert_str_eq(o1, o2, "%s on %s/%s: offers differ", cust, where[w][0],
                             where[w][1] ? where[w][1] : "-");
            cr_assert_str_eq(o1, o3, "%s on %s/%s: offers without explain differ from Lua's", cust,
                             where[w][0], where[w][1] ? where[w][1] : "-");
            free(o3);
            cr_assert(json_equal(e1, e2), "%s on %s/%s: eligible campaigns differ:\n%s\n%s", cust,
                      where[w][0], where[w][1] ? where[w][1] : "-", json_dumps(e1, JSON_COMPACT),
                      json_dumps(e2, JSON_COMPACT));
            offered += strcmp(o1, "[]") != 0;
            compared++;
            free(o1);
            free(o2);
            json_decref(e1);
            json_decref(e2);
        }
    cr_assert_gt(offered, compared / 4, "too few decisions offered anything to compare (%ld/%ld)",
                 offered, compared);
    tfx_server_cleanup(&lua);
    tfx_server_cleanup(&aud);
}

/* ---- one server: explain, p.segments, bad files -------------------------- */

static struct tfx_server srv;

static void put(const char *id, const char *json)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    struct tfx_resp r;
    int st = req(&srv, "PUT", path, json, &r);
    cr_assert(st == 200 || st == 201, "%d %s", st, r.body);
    tfx_resp_free(&r);
}

static int wait_rules_loaded(const char *needle)
{
    for (int i = 0; i < 400; i++) {
        struct tfx_resp r;
        req(&srv, "GET", "/api/v1/rules", NULL, &r);
        int found = r.body && strstr(r.body, needle);
        tfx_resp_free(&r);
        if (found)
            return 1;
        usleep(25000);
    }
    return 0;
}

static json_t *explain_of(const char *cust, const char *campaign)
{
    char body[300];
    snprintf(body, sizeof body, "{\"customer_id\":\"%s\",\"channel\":\"web\",\"explain\":true,"
                                "\"dry_run\":true}", cust);
    struct tfx_resp r;
    cr_assert_eq(req(&srv, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
    json_t *found = NULL;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r.json, "explain"), i, x)
        if (!strcmp(json_string_value(json_object_get(x, "campaign_id")), campaign))
            found = json_incref(x);
    tfx_resp_free(&r);
    cr_assert(found, "no explain entry for %s", campaign);
    return found;
}

static void one_server(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    tfx_write(&srv, "segments/gold.lua", "return { conditions = { tier = \"gold\" } }\n");
    tfx_write(&srv, "segments/dormant.lua", "return { conditions = { dormant = true } }\n");
    tfx_write(&srv, "rules/aud.lua",
              "return {\n"
              "  id = 'aud', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'x' } } },\n"
              "  audience = {\n"
              "    segments = { 'gold' },\n"
              "    exclude = { 'dormant' },\n"
              "    conditions = { country = { ['$in'] = { 'FR', 'BE' } } },\n"
              "  },\n"
              "}\n");
    tfx_write(&srv, "rules/hooks.lua",
              "return {\n"
              "  id = 'hooks', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'y' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    return promo.in_segment(p, 'gold') and p.segments ~= nil and p.segments.gold == true,\n"
              "      'not gold'\n"
              "  end,\n"
              "  score = function(p) local n = 0 for _ in pairs(p.segments or {}) do n = n + 1 end return n end,\n"
              "}\n");
    /* a file that writes tables: its hooks get read-only views of p
     * (luavm_push_readonly), and p.segments must read the same through them */
    tfx_write(&srv, "rules/hooks_rw.lua",
              "return {\n"
              "  id = 'hooks_rw', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'z' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    local seen = {}\n"
              "    seen.gold = promo.in_segment(p, 'gold')\n"
              "    local wrote = pcall(function() p.segments.gold = false end)\n"
              "    if wrote then return false, 'p.segments was writable' end\n"
              "    return seen.gold and p.segments.gold == true, 'not gold'\n"
              "  end,\n"
              "  score = function(p) local t = {} for k in pairs(p.segments) do t[#t + 1] = k end return #t end,\n"
              "}\n");
    cr_assert_eq(tfx_server_start(&srv), 0);
}

static void teardown_srv(void) { tfx_server_cleanup(&srv); }

Test(audience, explain_and_p_segments, .init = one_server, .fini = teardown_srv, .timeout = 120)
{
    put("silver", "{\"tier\":\"silver\",\"country\":\"FR\"}");
    put("golddormant", "{\"tier\":\"gold\",\"country\":\"FR\",\"dormant\":true}");
    put("goldde", "{\"tier\":\"gold\",\"country\":\"DE\"}");
    put("goldfr", "{\"tier\":\"gold\",\"country\":\"FR\"}");
    json_t *x = explain_of("silver", "aud");
    cr_assert(json_is_false(json_object_get(x, "eligible")));
    cr_assert(strstr(json_string_value(json_object_get(x, "reason")), "audience: segments: in none of gold"),
              "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("golddormant", "aud");
    cr_assert(strstr(json_string_value(json_object_get(x, "reason")), "audience: exclude: in dormant"),
              "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("goldde", "aud");
    const char *why = json_string_value(json_object_get(x, "reason"));
    cr_assert(why && strstr(why, "audience: conditions $.country"), "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("goldfr", "aud");
    cr_assert(json_is_true(json_object_get(x, "eligible")), "%s", json_dumps(x, 0));
    json_decref(x);
    /* p.segments and promo.in_segment inside hooks */
    x = explain_of("goldde", "hooks");
    cr_assert(json_is_true(json_object_get(x, "eligible")), "%s", json_dumps(x, 0));
    cr_assert_eq(json_real_value(json_object_get(x, "score")), 1.0, "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("golddormant", "hooks");
    cr_assert_eq(json_real_value(json_object_get(x, "score")), 2.0, "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("silver", "hooks");
    cr_assert_str_eq(json_string_value(json_object_get(x, "reason")), "not gold");
    json_decref(x);
    /* the same through read-only views */
    x = explain_of("goldde", "hooks_rw");
    cr_assert(json_is_true(json_object_get(x, "eligible")), "%s", json_dumps(x, 0));
    cr_assert_eq(json_real_value(json_object_get(x, "score")), 1.0, "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("golddormant", "hooks_rw");
    cr_assert_eq(json_real_value(json_object_get(x, "score")), 2.0, "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("silver", "hooks_rw");
    cr_assert_str_eq(json_string_value(json_object_get(x, "reason")), "not gold", "%s", json_dumps(x, 0));
    json_decref(x);
    /* membership moves with the profile, and decide follows at once */
    put("silver", "{\"tier\":\"gold\",\"country\":\"BE\"}");
    x = explain_of("silver", "aud");
    cr_assert(json_is_true(json_object_get(x, "eligible")), "%s", json_dumps(x, 0));
    json_decref(x);
}

Test(audience, bad_audiences_are_file_line_errors, .init = one_server, .fini = teardown_srv,
     .timeout = 120)
{
    tfx_write(&srv, "rules/bad1.lua",
              "return {\n  id = 'bad1', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'x' } } },\n"
              "  audience = {\n    segments = { 'silver' },\n  },\n}\n");
    tfx_write(&srv, "rules/bad2.lua",
              "return {\n  id = 'bad2', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'x' } } },\n"
              "  audience = {\n    conditions = { age = { ['$gt'] = { 1 } } },\n  },\n}\n");
    tfx_write(&srv, "rules/bad3.lua",
              "return {\n  id = 'bad3', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'x' } } },\n"
              "  audience = { segmnts = { 'gold' } },\n}\n");
    tfx_write(&srv, "rules/bad4.lua",
              "return {\n  id = 'bad4', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { h = 'x' } } },\n}\n");
    cr_assert(wait_rules_loaded("bad4.lua"));
    struct tfx_resp r;
    cr_assert_eq(req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert(strstr(r.body, "bad1.lua:5: audience.segments[1]: no segment \\\"silver\\\""), "%s", r.body);
    cr_assert(strstr(r.body, "bad2.lua:5: audience.conditions: $.age.$gt: $gt expects"), "%s", r.body);
    cr_assert(strstr(r.body, "bad3.lua:4: unknown field 'segmnts' in audience"), "%s", r.body);
    cr_assert(strstr(r.body, "bad4.lua:1: eligible is required"), "%s", r.body);
    tfx_resp_free(&r);
    /* promod check says the same, and knows the segments of segments_dir */
    char *out = NULL;
    char bad2[400];
    snprintf(bad2, sizeof bad2, "%s/bad2.lua", srv.rules);
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, bad2, (char *)NULL), 1);
    cr_assert(strstr(out, "bad2.lua:5: audience.conditions: $.age.$gt"), "%s", out);
    free(out);
    char aud[400];
    snprintf(aud, sizeof aud, "%s/aud.lua", srv.rules);
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, aud, (char *)NULL), 0, "%s", out);
    free(out);
    /* a segment a campaign uses cannot be deleted over the API */
    cr_assert_eq(req(&srv, "DELETE", "/api/v1/segments/dormant", NULL, &r), 409, "%s", r.body);
    cr_assert(strstr(r.body, "campaign \\\"aud\\\""), "%s", r.body);
    tfx_resp_free(&r);
}

/* One audience table may hold a segment filter and a model part (model
 * with top or above); bad combinations are file:line errors, in the server
 * and in `promod check`. */
Test(audience, model_and_filter_combinations, .init = one_server, .fini = teardown_srv,
     .timeout = 120)
{
    static const char *const files[][2] = {
        { "rules/both.lua", "audience = { segments = { 'gold' }, model = 'm1', top = 5, above = 0.3 }," },
        { "rules/nocut.lua", "audience = { model = 'm1' }," },
        { "rules/nomodel.lua", "audience = { segments = { 'gold' }, above = 0.2 }," },
        { "rules/trig.lua", "audience = { model = 'm1', top = 5 }, trigger = { event = 'signup' }," },
        { "rules/noelig.lua", "audience = { model = 'm1', above = 0.5 }," },
        { "rules/combo.lua", "audience = { segments = { 'gold' }, exclude = { 'dormant' }, model = 'm1', top = 5 }," },
    };
    static const char *const expect[] = {
        "both.lua:4: audience.top and audience.above together",
        "nocut.lua:4: audience.model needs top",
        "nomodel.lua:4: audience.above needs audience.model",
        "trig.lua:4: audience.top ranks a whole audience at launch",
        "noelig.lua:1: eligible is required",
        NULL,
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char src[600];
        /* eligible only where the test needs it (noelig and combo have none) */
        int elig = i < 4;
        snprintf(src, sizeof src,
                 "return {\n  id = '%.*s', channels = { 'web' },\n"
                 "  variants = { { id = 'A', content = { h = 'x' } } },\n  %s\n%s}\n",
                 (int)(strchr(files[i][0], '.') - files[i][0] - 6), files[i][0] + 6, files[i][1],
                 elig ? "  eligible = function(p, ctx) return true end,\n" : "");
        tfx_write(&srv, files[i][0], src);
    }
    for (size_t i = 0; expect[i]; i++)
        cr_assert(wait_rules_loaded(expect[i]), "no error \"%s\"", expect[i]);
    /* the valid combination loads: a filter needs no eligible, and the
     * model part is for sends (a decide applies the filter alone) */
    cr_assert(wait_rules_loaded("\"combo\""));
    struct tfx_resp r;
    cr_assert_eq(req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert(!strstr(r.body, "combo.lua:"), "%s", r.body);
    tfx_resp_free(&r);
    put("cg", "{\"tier\":\"gold\",\"country\":\"FR\"}");
    put("cs", "{\"tier\":\"silver\",\"country\":\"FR\"}");
    json_t *x = explain_of("cg", "combo");
    cr_assert(json_is_true(json_object_get(x, "eligible")), "%s", json_dumps(x, 0));
    json_decref(x);
    x = explain_of("cs", "combo");
    const char *why = json_string_value(json_object_get(x, "reason"));
    cr_assert(why && strstr(why, "audience: segments: in none of gold"), "%s", json_dumps(x, 0));
    json_decref(x);
    /* promod check: the same errors, and 0 for the valid one */
    char *out = NULL, path[400];
    snprintf(path, sizeof path, "%s/both.lua", srv.rules);
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, path, (char *)NULL), 1);
    cr_assert(strstr(out, "both.lua:4: audience.top and audience.above together"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/combo.lua", srv.rules);
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, path, (char *)NULL), 0, "%s", out);
    free(out);
}

/* ---- outbound sends through the index ------------------------------------ */

static struct rcv *rcv;

static void sends_server(void)
{
    rcv = rcv_start(0);
    cr_assert(rcv);
    otfx_init(&srv, rcv, NULL, NULL, NULL);
    tfx_write(&srv, "segments/low.lua", "return { conditions = { n = { ['$lt'] = 50 } } }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    otfx_clock(&srv, otfx_offset_for_hour(12, 0));
}

static void sends_teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

Test(audience, sends_walk_the_segment_index, .init = sends_server, .fini = sends_teardown,
     .timeout = 120)
{
    otfx_profiles(&srv, "a", 400, "\"n\":%d");
    otfx_campaign(&srv, "low", "'webhook'", NULL, "audience = { segments = { 'low' } },");
    cr_assert(otfx_wait_campaign(&srv, "low"));
    cr_assert_eq(otfx_action(&srv, "low", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, 50, 15000), 50);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/low/sends", "sent", 50, 5000), 50);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/low/sends");
    /* only the segment's members were looked at, not the 400 profiles */
    cr_assert_eq(otfx_int(s, "evaluated"), 50, "%s", json_dumps(s, 0));
    cr_assert_eq(otfx_int(s, "queued"), 50);
    json_decref(s);
}

Test(audience, launch_with_a_saved_audience, .init = sends_server, .fini = sends_teardown,
     .timeout = 120)
{
    otfx_profiles(&srv, "b", 300, "\"n\":%d");
    struct tfx_resp r;
    cr_assert_eq(req(&srv, "POST", "/api/v1/targeting/audience",
                     "{\"all\":[\"low\"],\"conditions\":{\"n\":{\"$gte\":10}}}", &r), 201, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), 40);
    char body[200];
    snprintf(body, sizeof body, "{\"audience_id\":\"%s\"}", json_string_value(json_object_get(r.json, "id")));
    tfx_resp_free(&r);
    otfx_campaign(&srv, "saved", "'webhook'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, "saved"));
    cr_assert_eq(req(&srv, "POST", "/api/v1/campaigns/saved/launch", "{\"audience_id\":\"aud-nope\"}", &r),
                 404, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(req(&srv, "POST", "/api/v1/campaigns/saved/launch", body, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(rcv_wait_unique(rcv, 40, 15000), 40);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/saved/sends", "sent", 40, 5000), 40);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/saved/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), 40, "%s", json_dumps(s, 0));
    json_decref(s);
}
