/* test_sends.c — launching a campaign on an outbound channel: audience
 * evaluation (eligible, consent, caps) off the request path, progress,
 * pause / resume / stop, exactly one send per customer under concurrent
 * launches and across a SIGKILL in the middle of the send. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv;

static void start(const char *extra_chan)
{
    rcv = rcv_start(0);
    cr_assert(rcv);
    otfx_init(&srv, rcv, extra_chan, NULL, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    otfx_clock(&srv, otfx_offset_for_hour(12, 0));
}

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

TestSuite(sends, .fini = teardown, .timeout = 120);

Test(sends, audience_runs_eligible_and_reports_progress)
{
    start(NULL);
    otfx_profiles(&srv, "a", 200, "\"tier\":\"%d\"");
    /* tier is the index as a string: eligible keeps the even ones */
    otfx_campaign(&srv, "aud", "'webhook'", NULL,
                  "eligible = function(p, ctx)\n"
                  "  if ctx.channel ~= 'webhook' or not ctx.send then error('bad ctx') end\n"
                  "  return tonumber(p.tier) % 2 == 0, 'odd tier' end,");
    /* the file's eligible comes after the default one: Lua keeps the last */
    cr_assert(otfx_wait_campaign(&srv, "aud"));
    cr_assert_eq(otfx_action(&srv, "aud", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, 100, 15000), 100);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/aud/sends", "sent", 100, 5000), 100);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/aud/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), 200);
    cr_assert_eq(otfx_int(s, "queued"), 100);
    cr_assert_eq(otfx_int(s, "skipped.not_eligible"), 100);
    /* eligible's `false, "reason"`: counted by reason, as decide explains it */
    cr_assert_eq(otfx_int(s, "not_eligible_reasons.odd tier"), 100);
    cr_assert_eq(json_object_size(json_object_get(s, "not_eligible_reasons")), 1);
    cr_assert_eq(otfx_int(s, "failed"), 0);
    cr_assert_eq(otfx_int(s, "pending"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "done");
    cr_assert_str_eq(json_string_value(json_object_get(s, "mode")), "audience");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(s, "channels"), 0)), "webhook");
    cr_assert(json_is_integer(json_object_get(s, "finished_at")));
    json_decref(s);
    usleep(300000);
    cr_assert_eq(rcv_count(rcv), 100);
}

Test(sends, eligible_keeps_the_hook_contract)
{
    start(NULL);
    otfx_profiles(&srv, "k", 40, "\"n\":%d");
    /* 10 answer a string (an error, not "truthy"), 25 say no with 25
     * different reasons (20 are kept, the rest counted as "(other)"), 5 pass */
    otfx_campaign(&srv, "contract", "'webhook'", NULL,
                  "eligible = function(p, ctx)\n"
                  "  if p.n < 10 then return 'yes' end\n"
                  "  if p.n < 35 then return false, 'reason ' .. p.n end\n"
                  "  return true end,");
    cr_assert(otfx_wait_campaign(&srv, "contract"));
    cr_assert_eq(otfx_action(&srv, "contract", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, 5, 15000), 5);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/contract/sends", "sent", 5, 5000), 5);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/contract/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), 40);
    cr_assert_eq(otfx_int(s, "queued"), 5);
    cr_assert_eq(otfx_int(s, "skipped.hook_error"), 10);
    cr_assert_eq(otfx_int(s, "skipped.not_eligible"), 25);
    cr_assert_str_eq(json_string_value(json_object_get(s, "last_error")),
                     "eligible: must return true or false (got a non-boolean)");
    json_t *rs = json_object_get(s, "not_eligible_reasons");
    cr_assert_eq(json_object_size(rs), 21, "20 reasons and (other)");
    cr_assert_eq(otfx_int(rs, "(other)"), 5);
    long total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(rs, k, v) {
        if (strcmp(k, "(other)")) {
            cr_assert(!strncmp(k, "reason ", 7), "%s", k);
            cr_assert_eq(json_integer_value(v), 1, "%s", k);
        }
        total += (long)json_integer_value(v);
    }
    cr_assert_eq(total, 25);
    json_decref(s);
    /* counted with decide's hook errors */
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double n = 0;
    cr_assert(tfx_metric(r.body, "promod_hook_errors_total",
                         "campaign=\"contract\",hook=\"eligible\",kind=\"error\"", &n),
              "no hook error series for the send");
    cr_assert_eq(n, 10);
    tfx_resp_free(&r);
}

/* issue 12 on the send path: the send's hooks get p and ctx read-only, as
 * decide's do (a write fails that customer's hook with the error), and
 * the message's templates still read the profile as it was loaded. */
Test(sends, hooks_get_p_and_ctx_read_only)
{
    start(NULL);
    otfx_profiles(&srv, "w", 30, "\"n\":%d,\"a\":{\"b\":1}");
    otfx_campaign(&srv, "steer", "'webhook'", "headline = 'n={{n}}.'",
                  "eligible = function(p, ctx)\n"
                  "  if p.n < 5 then p.n = 99 end\n"
                  "  if p.n < 10 then ctx.send = false end\n"
                  "  if pcall(function() p.a.b = 2 end) or p.a.b ~= 1 then error('wrote p.a.b') end\n"
                  "  return true end,");
    cr_assert(otfx_wait_campaign(&srv, "steer"));
    cr_assert_eq(otfx_action(&srv, "steer", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, 20, 15000), 20);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/steer/sends", "sent", 20, 5000), 20);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/steer/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), 30);
    cr_assert_eq(otfx_int(s, "queued"), 20);
    cr_assert_eq(otfx_int(s, "skipped.hook_error"), 10);
    const char *le = json_string_value(json_object_get(s, "last_error"));
    cr_assert(le && !strncmp(le, "eligible: ", 10) && strstr(le, "steer.lua:") &&
                  (strstr(le, "profile is read-only") || strstr(le, "ctx is read-only")),
              "%s", le ? le : "(none)");
    json_decref(s);
    /* every message shows its customer's own n: 10..29, none 99 */
    int seen[30] = { 0 };
    for (size_t i = 0; i < rcv_count(rcv); i++) {
        struct rcv_entry e;
        cr_assert_eq(rcv_get(rcv, i, &e), 0);
        const char *at = e.body ? strstr(e.body, "n=") : NULL;
        cr_assert_not_null(at, "%s", e.body ? e.body : "(no body)");
        int n = atoi(at + 2);
        cr_assert(n >= 10 && n < 30, "%s", e.body);
        seen[n] = 1;
        rcv_entry_free(&e);
    }
    for (int n = 10; n < 30; n++)
        cr_assert(seen[n], "no message for n=%d", n);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double n = 0;
    cr_assert(tfx_metric(r.body, "promod_hook_errors_total",
                         "campaign=\"steer\",hook=\"eligible\",kind=\"error\"", &n));
    cr_assert_eq(n, 10);
    tfx_resp_free(&r);
}

Test(sends, saving_a_file_never_sends)
{
    start(NULL);
    otfx_profiles(&srv, "f", 5, "\"x\":%d");
    /* active as saved (no status = 'draft'): live for decide, but no send */
    tfx_write(&srv, "rules/saved.lua",
              "return { id = 'saved', channels = { 'webhook' },\n"
              "  variants = { { id = 'A', content = { headline = 'x' } } },\n"
              "  eligible = function(p, ctx) return true end }\n");
    cr_assert(otfx_wait_campaign(&srv, "saved"));
    usleep(1500000);
    cr_assert_eq(rcv_count(rcv), 0, "a saved file sent messages");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/campaigns/saved/sends", NULL, &r), 404);
    tfx_resp_free(&r);
    /* a web-only campaign launches without any send */
    otfx_campaign(&srv, "webonly", "'web'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, "webonly"));
    cr_assert_eq(otfx_action(&srv, "webonly", "launch"), 200);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/campaigns/webonly/sends", NULL, &r), 404);
    tfx_resp_free(&r);
}

struct launch_arg {
    const char *id;
    int status;
};

static void *launch_thread(void *p)
{
    struct launch_arg *a = p;
    a->status = otfx_action(&srv, a->id, "launch");
    return NULL;
}

Test(sends, channel_policy_caps_are_exact_across_concurrent_launches)
{
    start(NULL);
    otfx_profiles(&srv, "c", 30, "\"email\":\"c%d@example.com\",\"consent\":{\"email\":true}");
    /* email's policy: 1 per customer per day, over every email campaign */
    otfx_campaign(&srv, "ca", "'email'", "subject = 'A'", NULL);
    otfx_campaign(&srv, "cb", "'email'", "subject = 'B'", NULL);
    cr_assert(otfx_wait_campaign(&srv, "ca") && otfx_wait_campaign(&srv, "cb"));
    pthread_t t[4];
    struct launch_arg args[4] = { { "ca", 0 }, { "cb", 0 }, { "ca", 0 }, { "cb", 0 } };
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, launch_thread, &args[i]);
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok += args[i].status == 200;
    }
    cr_assert_eq(ok, 2, "each campaign launched once");
    cr_assert_eq(rcv_wait_unique(rcv, 30, 15000), 30);
    usleep(1000000);
    cr_assert_eq(rcv_count(rcv), 30, "one email per customer: the policy cap held");
    json_t *a = otfx_get(&srv, "/api/v1/campaigns/ca/sends"), *b = otfx_get(&srv, "/api/v1/campaigns/cb/sends");
    cr_assert_eq(otfx_int(a, "queued") + otfx_int(b, "queued"), 30);
    long capped = (otfx_int(a, "skipped.capped") > 0 ? otfx_int(a, "skipped.capped") : 0) +
                  (otfx_int(b, "skipped.capped") > 0 ? otfx_int(b, "skipped.capped") : 0);
    cr_assert_eq(capped, 30);
    json_decref(a);
    json_decref(b);
    /* and decide sees the contacts too: no email offer for these customers now */
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", "{\"customer_id\":\"c1\",\"channel\":\"email\"}", &r),
                 200, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "offers")), 0, "%s", r.body);
    tfx_resp_free(&r);
}

Test(sends, pause_holds_resume_continues_stop_drops)
{
    start("rate = 10,");
    otfx_profiles(&srv, "p", 40, "\"n\":%d");
    otfx_campaign(&srv, "pr", "'webhook'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, "pr"));
    cr_assert_eq(otfx_action(&srv, "pr", "launch"), 200);
    cr_assert(rcv_wait_unique(rcv, 5, 10000) >= 5);
    cr_assert_eq(otfx_action(&srv, "pr", "pause"), 200);
    /* an attempt already in flight may still land: wait for it */
    cr_assert(otfx_wait_no_flight(&srv, 15000), "an attempt stayed in flight");
    size_t at_pause = rcv_count(rcv);
    usleep(1200000);
    cr_assert_eq(rcv_count(rcv), at_pause, "deliveries went on while paused");
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/pr/sends");
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "paused");
    cr_assert(otfx_int(s, "pending") > 0);
    json_decref(s);
    cr_assert_eq(otfx_action(&srv, "pr", "launch"), 200, "launch resumes a paused campaign");
    cr_assert_eq(rcv_wait_unique(rcv, 40, 20000), 40);
    cr_assert(otfx_wait_idle(&srv, "pr", 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 40, "no message twice across pause and resume");
    s = otfx_get(&srv, "/api/v1/campaigns/pr/sends");
    cr_assert_eq(otfx_int(s, "held"), 0);
    cr_assert_eq(otfx_int(s, "sent"), 40);
    json_decref(s);

    /* stop: the rest is dropped */
    rcv_clear(rcv);
    otfx_profiles(&srv, "q", 40, "\"n\":%d");
    otfx_campaign(&srv, "st", "'webhook'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, "st"));
    cr_assert_eq(otfx_action(&srv, "st", "launch"), 200);
    cr_assert(rcv_wait_unique(rcv, 5, 10000) >= 5);
    cr_assert_eq(otfx_action(&srv, "st", "stop"), 200);
    cr_assert(otfx_wait_no_flight(&srv, 15000), "an attempt stayed in flight");
    size_t at_stop = rcv_count(rcv);
    usleep(1200000);
    cr_assert_eq(rcv_count(rcv), at_stop, "deliveries went on after stop");
    cr_assert(at_stop < 80);
    long pending = otfx_wait_int(&srv, "/api/v1/campaigns/st/sends", "dropped", 1, 5000);
    cr_assert(pending >= 1);
    s = otfx_get(&srv, "/api/v1/campaigns/st/sends");
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "stopped");
    cr_assert_eq(otfx_int(s, "pending"), 0, "queued messages of a stopped send are dropped");
    json_decref(s);
}

/* SIGKILL while the audience is being built and messages delivered, then a
 * restart: every customer is delivered, and the receiver (deduping on the
 * Idempotency-Key) sees each exactly once. */
Test(sends, sigkill_mid_send_then_restart_delivers_each_exactly_once)
{
    start("concurrency = 16,");
    const int N = 3000;
    otfx_profiles(&srv, "k", N, "\"n\":%d");
    /* a deliberately slow eligible so the kill lands inside the build */
    otfx_campaign(&srv, "crash", "'webhook'", NULL,
                  "eligible = function(p, ctx) local x = 0; for i = 1, 20000 do x = x + i end;"
                  " return x > 0 end,");
    cr_assert(otfx_wait_campaign(&srv, "crash"));
    rcv_set_delay(rcv, 1);
    cr_assert_eq(otfx_action(&srv, "crash", "launch"), 200);
    cr_assert(rcv_wait_unique(rcv, 200, 30000) >= 200);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/crash/sends");
    long evaluated_at_kill = otfx_int(s, "evaluated");
    json_decref(s);
    tfx_server_kill(&srv);
    size_t before = rcv_unique_ok(rcv);
    cr_assert(before < (size_t)N, "the send finished before the kill; nothing was tested");
    cr_log_info("killed after %zu deliveries, %ld evaluated", before, evaluated_at_kill);
    cr_assert_eq(tfx_server_start(&srv), 0, "restart failed");
    otfx_clock(&srv, otfx_offset_for_hour(12, 0)); /* the test clock is not persisted */
    cr_assert_eq(rcv_wait_unique(rcv, (size_t)N, 90000), (size_t)N, "not every customer was delivered");
    cr_assert(otfx_wait_idle(&srv, NULL, 30000), "the outbox never went idle");
    /* every key is one of ours: N distinct expected keys, nothing else */
    size_t total = rcv_count(rcv);
    for (size_t i = 0; i < total; i++) {
        struct rcv_entry e;
        rcv_get(rcv, i, &e);
        cr_assert(!strncmp(e.key, "send:crash:webhook:k", 20), "unexpected key %s", e.key);
        rcv_entry_free(&e);
    }
    cr_log_info("%zu requests for %d customers (%zu redelivered in flight, deduped by key)", total, N,
                total - (size_t)N);
    cr_assert(total - (size_t)N <= 64, "too many redeliveries: %zu", total - (size_t)N);
    s = otfx_get(&srv, "/api/v1/campaigns/crash/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), N, "every profile evaluated once");
    cr_assert_eq(otfx_int(s, "queued"), N);
    cr_assert_eq(otfx_int(s, "skipped.duplicate"), -1, "nothing re-enqueued");
    json_decref(s);
}

Test(sends, progress_of_unknown_or_hostile_ids)
{
    start(NULL);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/campaigns/none/sends", NULL, &r), 404);
    cr_assert_str_eq(tfx_err_code(&r), "not_found");
    tfx_resp_free(&r);
    char longid[300];
    memset(longid, 'x', 200);
    longid[200] = 0;
    char path[400];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/sends", longid);
    cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 400);
    cr_assert_str_eq(tfx_err_code(&r), "invalid_id");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/campaigns/a%2Fb/sends", NULL, &r), 400);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/campaigns/none/sends", "{}", &r), 405);
    tfx_resp_free(&r);
}

Test(sends, schedule_starts_delays_and_ends_skips)
{
    start(NULL); /* the server's clock reads 12:00 UTC today */
    otfx_profiles(&srv, "s", 3, "\"n\":%d");
    time_t day = time(NULL) / 86400 * 86400;
    char at13[32], at11[32], more[300];
    time_t t13 = day + 13 * 3600, t11 = day + 11 * 3600;
    strftime(at13, sizeof at13, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t13));
    strftime(at11, sizeof at11, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t11));
    snprintf(more, sizeof more, "schedule = { starts = '%s' },", at13);
    otfx_campaign(&srv, "later", "'webhook'", NULL, more);
    snprintf(more, sizeof more, "schedule = { ends = '%s' },", at11);
    otfx_campaign(&srv, "over", "'webhook'", NULL, more);
    cr_assert(otfx_wait_campaign(&srv, "later") && otfx_wait_campaign(&srv, "over"));
    cr_assert_eq(otfx_action(&srv, "later", "launch"), 200);
    cr_assert_eq(otfx_action(&srv, "over", "launch"), 200);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/later/sends", "queued", 3, 5000), 3);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/over/sends", "skipped.outside_schedule", 3, 5000), 3);
    usleep(1000000);
    cr_assert_eq(rcv_count(rcv), 0, "nothing before the schedule starts");
    otfx_clock(&srv, otfx_offset_for_hour(13, 0) + 5);
    cr_assert_eq(rcv_wait_unique(rcv, 3, 10000), 3);
}
