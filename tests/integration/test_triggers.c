/* test_triggers.c — triggered campaigns: an event schedules a send after the
 * delay, a cancelling event removes it, timers survive a SIGKILL, and only
 * launched campaigns react to events. */
#include <criterion/criterion.h>
#include <string.h>
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv;
static long base_offset;

static void start(void)
{
    rcv = rcv_start(0);
    cr_assert(rcv);
    otfx_init(&srv, rcv, NULL, NULL, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    base_offset = otfx_offset_for_hour(12, 0);
    otfx_clock(&srv, base_offset);
}

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

TestSuite(triggers, .fini = teardown, .timeout = 90);

static void event(const char *type, const char *cust)
{
    char b[256];
    snprintf(b, sizeof b, "{\"type\":\"%s\",\"customer_id\":\"%s\"}", type, cust);
    struct tfx_resp r;
    int st = tfx_req(&srv, "POST", "/api/v1/events", b, &r);
    cr_assert(st == 200 || st == 202, "event %s: %d %s", type, st, r.body);
    cr_assert_eq(otfx_int(r.json, "accepted"), 1, "%s", r.body);
    tfx_resp_free(&r);
}

static long timers(void)
{
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    long n = otfx_int(o, "timers_pending");
    json_decref(o);
    return n;
}

static void triggered_campaign(const char *id, int launch)
{
    otfx_campaign(&srv, id, "'webhook'", "headline = 'You left something, {{first_name|friend}}'",
                  "trigger = { event = 'cart_abandon', delay = '1h', cancel_on = 'purchase' },");
    cr_assert(otfx_wait_campaign(&srv, id));
    if (launch)
        cr_assert_eq(otfx_action(&srv, id, "launch"), 200);
}

Test(triggers, fires_after_the_delay_unless_cancelled)
{
    start();
    otfx_profiles(&srv, "t", 3, "\"first_name\":\"T%d\"");
    triggered_campaign("cart", 1);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/cart/sends");
    cr_assert_str_eq(json_string_value(json_object_get(s, "mode")), "trigger");
    cr_assert_eq(otfx_int(s, "evaluated"), 0, "a launch of a triggered campaign sends nobody");
    json_decref(s);
    event("cart_abandon", "t0");
    event("cart_abandon", "t0"); /* one pending timer per customer */
    event("cart_abandon", "t1");
    event("purchase", "t1");     /* cancels t1's */
    event("purchase", "t2");     /* nothing to cancel */
    cr_assert_eq(timers(), 1);
    usleep(1000000);
    cr_assert_eq(rcv_count(rcv), 0, "nothing before the delay");
    otfx_clock(&srv, base_offset + 3500);
    usleep(800000);
    cr_assert_eq(rcv_count(rcv), 0, "nothing before the delay (58 min)");
    otfx_clock(&srv, base_offset + 3601);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 10000), 1);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 1);
    struct rcv_entry e;
    rcv_get(rcv, 0, &e);
    cr_assert(!strncmp(e.key, "trig:cart:webhook:t0:", 21), "%s", e.key);
    cr_assert(strstr(e.body, "You left something, T0"), "%s", e.body);
    rcv_entry_free(&e);
    cr_assert_eq(timers(), 0);
    s = otfx_get(&srv, "/api/v1/campaigns/cart/sends");
    cr_assert_eq(otfx_int(s, "queued"), 1);
    cr_assert_eq(otfx_int(s, "sent"), 1);
    json_decref(s);
}

Test(triggers, timers_survive_a_crash)
{
    start();
    otfx_profiles(&srv, "t", 2, "\"first_name\":\"T%d\"");
    triggered_campaign("cart2", 1);
    event("cart_abandon", "t0");
    event("cart_abandon", "t1");
    cr_assert_eq(timers(), 2);
    tfx_server_kill(&srv);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(timers(), 2, "timers are durable");
    /* a purchase after the restart still cancels */
    event("purchase", "t1");
    otfx_clock(&srv, base_offset + 3700);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 10000), 1);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 1);
    cr_assert_eq(timers(), 0);
}

Test(triggers, only_launched_campaigns_react)
{
    start();
    otfx_profiles(&srv, "t", 1, "\"first_name\":\"T%d\"");
    triggered_campaign("idle", 0);
    event("cart_abandon", "t0");
    cr_assert_eq(timers(), 0, "a campaign that was never launched schedules nothing");
    /* launched, then stopped: a due timer is dropped, not sent */
    cr_assert_eq(otfx_action(&srv, "idle", "launch"), 200);
    event("cart_abandon", "t0");
    cr_assert_eq(timers(), 1);
    cr_assert_eq(otfx_action(&srv, "idle", "stop"), 200);
    otfx_clock(&srv, base_offset + 3700);
    for (int i = 0; i < 100 && timers() > 0; i++)
        usleep(50000);
    cr_assert_eq(timers(), 0, "the due timer was consumed");
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 0, "a stopped campaign sends nothing");
}

Test(triggers, a_paused_campaign_holds_its_triggered_sends)
{
    start();
    otfx_profiles(&srv, "t", 1, "\"first_name\":\"T%d\"");
    triggered_campaign("held", 1);
    event("cart_abandon", "t0");
    cr_assert_eq(otfx_action(&srv, "held", "pause"), 200);
    otfx_clock(&srv, base_offset + 3700);
    usleep(1500000);
    cr_assert_eq(rcv_count(rcv), 0, "held while paused");
    cr_assert_eq(otfx_action(&srv, "held", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 10000), 1, "sent on resume");
}
