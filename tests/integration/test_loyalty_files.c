/*
 * test_loyalty_files.c — the loyalty files (loyalty/NAME.lua) on the real server: earn rules run on
 * ingested events ("1 point per EUR on purchase events, double for gold,
 * welcome bonus"), tiers over the qualification window, a tier change as an
 * event that a triggered campaign reacts to, p.loyalty in hooks, hot reload
 * with file:line errors that keep the last good version, promod check, and
 * the hourly sweep's downgrade.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv;

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

TestSuite(loyalty_files, .fini = teardown, .timeout = 120);

static const char program[] =
    "-- the program and the purchase rule\n"
    "return {\n"
    "  tiers  = { { name = 'silver', points = 100 }, { name = 'gold', points = 300 } },\n"
    "  window = '30d',\n"
    "  expiry = '365d',\n"
    "  earn = function(event, p)\n"
    "    if event.type ~= 'purchase' or not event.revenue then return nil end\n"
    "    local pts = math.floor(event.revenue)\n"
    "    if p.loyalty and p.loyalty.tier == 'gold' then return pts * 2, 'double points for gold' end\n"
    "    return pts, '1 point per EUR'\n"
    "  end,\n"
    "}\n";

static const char welcome[] =
    "return { earn = function(event, p)\n"
    "  if event.type == 'signup' and not p.loyalty then return 50, 'welcome bonus' end\n"
    "end }\n";

static void event(const char *json)
{
    struct tfx_resp r;
    int st = tfx_req(&srv, "POST", "/api/v1/events", json, &r);
    cr_assert_eq(st, 200, "%s → %d %s", json, st, r.body);
    cr_assert_eq(otfx_int(r.json, "accepted"), 1, "%s", r.body);
    tfx_resp_free(&r);
}

static json_t *account(const char *cust)
{
    char p[128];
    snprintf(p, sizeof p, "/api/v1/loyalty/%s?limit=100", cust);
    return otfx_get(&srv, p);
}

static void start(void)
{
    rcv = rcv_start(0);
    cr_assert(rcv);
    otfx_init(&srv, rcv, NULL, NULL, NULL);
    tfx_write(&srv, "loyalty/program.lua", program);
    tfx_write(&srv, "loyalty/welcome.lua", welcome);
    /* a campaign for gold customers, and one the upgrade triggers */
    otfx_campaign(&srv, "gold-only", "'web'", "headline = 'Gold lounge'",
                  "eligible = function(p) return p.loyalty ~= nil and p.loyalty.tier == 'gold', 'not gold' end,");
    otfx_campaign(&srv, "congrats", "'webhook'", "headline = 'You made {{x|a new tier}}'",
                  "trigger = { event = 'tier_upgrade', delay = '1h' },");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    cr_assert(otfx_wait_campaign(&srv, "congrats"));
    cr_assert_eq(otfx_action(&srv, "congrats", "launch"), 200);
    cr_assert(otfx_wait_campaign(&srv, "gold-only"));
    cr_assert_eq(otfx_action(&srv, "gold-only", "launch"), 200);
}

static int gold_offer(const char *cust)
{
    char b[160];
    snprintf(b, sizeof b, "{\"customer_id\":\"%s\",\"channel\":\"web\"}", cust);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", b, &r), 200, "%s", r.body);
    int n = (int)json_array_size(json_object_get(r.json, "offers"));
    tfx_resp_free(&r);
    return n;
}

Test(loyalty_files, earn_rules_tiers_and_triggers)
{
    start();
    event("{\"type\":\"signup\",\"customer_id\":\"lu\"}");
    event("{\"type\":\"signup\",\"customer_id\":\"lu\"}"); /* the bonus once: p.loyalty exists now */
    json_t *a = account("lu");
    cr_assert_eq(otfx_int(a, "balance"), 50, "%s", json_dumps(a, 0));
    cr_assert(json_is_null(json_object_get(a, "tier")));
    json_decref(a);
    event("{\"type\":\"purchase\",\"customer_id\":\"lu\",\"revenue\":99.9,\"event_id\":\"o-1\"}");
    event("{\"type\":\"purchase\",\"customer_id\":\"lu\",\"revenue\":120,\"event_id\":\"o-2\"}");
    /* a repeated event (same event_id) is a duplicate: no points twice */
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/events",
            "{\"type\":\"purchase\",\"customer_id\":\"lu\",\"revenue\":120,\"event_id\":\"o-2\"}", &r);
    cr_assert_eq(otfx_int(r.json, "duplicates"), 1, "%s", r.body);
    tfx_resp_free(&r);
    a = account("lu");
    cr_assert_eq(otfx_int(a, "balance"), 50 + 99 + 120, "%s", json_dumps(a, 0));
    cr_assert_str_eq(json_string_value(json_object_get(a, "tier")), "silver", "%s", json_dumps(a, 0));
    cr_assert_eq(otfx_int(a, "qualifying_points"), 269, "every earned point qualifies: %s", json_dumps(a, 0));
    cr_assert_eq(otfx_int(a, "next_tier.points_needed"), 31, "%s", json_dumps(a, 0));
    json_decref(a);
    cr_assert_eq(gold_offer("lu"), 0);
    event("{\"type\":\"purchase\",\"customer_id\":\"lu\",\"revenue\":100,\"event_id\":\"o-3\"}");
    a = account("lu");
    cr_assert_str_eq(json_string_value(json_object_get(a, "tier")), "gold", "%s", json_dumps(a, 0));
    json_decref(a);
    /* gold: double points; p.loyalty.tier in a hook */
    event("{\"type\":\"purchase\",\"customer_id\":\"lu\",\"revenue\":10,\"event_id\":\"o-4\"}");
    a = account("lu");
    cr_assert_eq(otfx_int(a, "balance"), 50 + 99 + 120 + 100 + 20, "%s", json_dumps(a, 0));
    json_t *h0 = json_array_get(json_object_get(a, "history"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(h0, "reason")), "double points for gold");
    json_decref(a);
    cr_assert_eq(gold_offer("lu"), 1, "p.loyalty.tier did not reach the eligible hook");
    /* the upgrades were events: the triggered campaign scheduled its send */
    cr_assert_geq(otfx_wait_int(&srv, "/api/v1/outbox", "timers_pending", 1, 5000), 1,
                  "no triggered send for the tier upgrade");
    json_t *x = otfx_get(&srv, "/api/v1/profiles/lu/export");
    size_t i;
    json_t *e;
    int ups = 0;
    json_array_foreach(json_object_get(x, "events"), i, e)
        ups += !strcmp(json_string_value(json_object_get(e, "type")) ?: "", "tier_upgrade");
    cr_assert_eq(ups, 2, "silver then gold: %s", json_dumps(json_object_get(x, "events"), 0));
    json_decref(x);
    /* 31 days later the window holds nothing: the sweep takes the tier down */
    otfx_clock(&srv, 31 * 86400);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/loyalty/sweep", NULL, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    a = account("lu");
    cr_assert(json_is_null(json_object_get(a, "tier")), "%s", json_dumps(a, 0));
    cr_assert_eq(otfx_int(a, "balance"), 389, "points live a year: %s", json_dumps(a, 0));
    json_decref(a);
    x = otfx_get(&srv, "/api/v1/profiles/lu/export");
    int downs = 0;
    json_array_foreach(json_object_get(x, "events"), i, e)
        downs += !strcmp(json_string_value(json_object_get(e, "type")) ?: "", "tier_downgrade");
    cr_assert_eq(downs, 1);
    json_decref(x);
}

Test(loyalty_files, hot_reload_keeps_the_last_good_version_and_check_reports)
{
    start();
    json_t *st = otfx_get(&srv, "/api/v1/rules");
    cr_assert_eq(json_array_size(json_object_get(st, "loyalty")), 2, "%s", json_dumps(st, 0));
    json_decref(st);
    /* break welcome.lua: the error names file and line; the old rule still earns */
    tfx_write(&srv, "loyalty/welcome.lua", "return {\n  earn = 42,\n}\n");
    char *err = NULL;
    for (int i = 0; i < 100 && !err; i++) {
        st = otfx_get(&srv, "/api/v1/rules");
        size_t k;
        json_t *f;
        json_array_foreach(json_object_get(st, "loyalty"), k, f) {
            const char *e = json_string_value(json_object_get(f, "error"));
            if (e)
                err = strdup(e);
        }
        json_decref(st);
        if (!err)
            usleep(50000);
    }
    cr_assert_not_null(err, "the broken file was never reported");
    cr_assert(strstr(err, "loyalty/welcome.lua:2:"), "%s", err);
    free(err);
    event("{\"type\":\"signup\",\"customer_id\":\"hr\"}");
    json_t *a = account("hr");
    cr_assert_eq(otfx_int(a, "balance"), 50, "the last good version should still earn: %s", json_dumps(a, 0));
    json_decref(a);
    /* a fixed file is live within a second */
    tfx_write(&srv, "loyalty/welcome.lua",
              "return { earn = function(e, p) if e.type == 'signup' then return 70, 'bigger bonus' end end }\n");
    long bal = 0;
    for (int i = 0; i < 60 && bal != 70; i++) {
        char id[32];
        snprintf(id, sizeof id, "hr%d", i);
        char ev[128];
        snprintf(ev, sizeof ev, "{\"type\":\"signup\",\"customer_id\":\"%s\"}", id);
        event(ev);
        a = account(id);
        bal = otfx_int(a, "balance");
        json_decref(a);
        if (bal != 70)
            usleep(50000);
    }
    cr_assert_eq(bal, 70, "the fixed file never went live");
    /* promod check: file:line for a bad loyalty file, exit 1 */
    tfx_write(&srv, "loyalty/bad.lua", "return { tiers = { { name = 'x', points = -1 } } }\n");
    char path[400];
    snprintf(path, sizeof path, "%s/loyalty/bad.lua", srv.dir);
    char *out = NULL;
    int rc = tfx_promod(&out, "check", "-c", srv.config, path, NULL);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "bad.lua:1: tiers[1].points"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/loyalty/program.lua", srv.dir);
    rc = tfx_promod(&out, "check", "-c", srv.config, path, NULL);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
}
