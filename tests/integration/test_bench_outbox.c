/* test_bench_outbox.c — the outbox and audience benchmarks (run by
 * scripts/bench-outbox.sh; skipped unless PROMOD_BENCH=1).
 *
 *   outbox drain: N messages (PROMOD_BENCH_MESSAGES, default 50000) from a
 *     launched webhook campaign to the local receiver; reports messages/s
 *     between the first and the last delivery and end to end.
 *   audience: the reference profiles (PROMOD_BENCH_PROFILES = path of
 *     profiles.ndjson from gen_workload.py) imported offline, then one
 *     email campaign launched; reports profiles evaluated per second.
 * Each asserts the project's targets (5,000 messages/s, 100,000 profiles/s)
 * so a regression fails the run. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv;

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

TestSuite(bench, .fini = teardown, .timeout = 900);

Test(bench, outbox_drain)
{
    if (!getenv("PROMOD_BENCH"))
        cr_skip_test("benchmark: set PROMOD_BENCH=1 (scripts/bench-outbox.sh)");
    int n = getenv("PROMOD_BENCH_MESSAGES") ? atoi(getenv("PROMOD_BENCH_MESSAGES")) : 50000;
    rcv = rcv_start(0);
    rcv_keep_bodies(rcv, 0);
    otfx_init(&srv, rcv, "concurrency = 64,", NULL, "log_level = \"warn\",");
    cr_assert_eq(tfx_server_start(&srv), 0);
    otfx_profiles(&srv, "b", n, "\"first_name\":\"B%d\"");
    otfx_campaign(&srv, "bench", "'webhook'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, "bench"));
    int64_t t0 = rcv_now_ms();
    cr_assert_eq(otfx_action(&srv, "bench", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, (size_t)n, 600000), (size_t)n);
    int64_t t1 = rcv_now_ms();
    struct rcv_entry a, b;
    rcv_get(rcv, 0, &a);
    rcv_get(rcv, rcv_count(rcv) - 1, &b);
    double drain_s = (double)(b.t_ms - a.t_ms) / 1000.0, total_s = (double)(t1 - t0) / 1000.0;
    rcv_entry_free(&a);
    rcv_entry_free(&b);
    double rate = drain_s > 0 ? n / drain_s : 0;
    printf("BENCH outbox_drain messages=%d requests=%zu drain_s=%.3f drain_msgs_per_s=%.0f "
           "end_to_end_s=%.3f end_to_end_msgs_per_s=%.0f\n",
           n, rcv_count(rcv), drain_s, rate, total_s, n / total_s);
    fflush(stdout);
    cr_expect(rate >= 5000, "outbox drained %.0f messages/s (target 5000)", rate);
}

Test(bench, audience_reference_profiles)
{
    const char *file = getenv("PROMOD_BENCH_PROFILES");
    if (!getenv("PROMOD_BENCH") || !file)
        cr_skip_test("benchmark: set PROMOD_BENCH=1 and PROMOD_BENCH_PROFILES=profiles.ndjson");
    rcv = rcv_start(0);
    rcv_keep_bodies(rcv, 0);
    otfx_init(&srv, rcv, NULL, NULL, "log_level = \"warn\",\n  map_size_mb = 8192,");
    char *out = NULL;
    int64_t i0 = rcv_now_ms();
    int st = tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 0, "import failed: %s", out);
    printf("BENCH import %s s=%.1f %s", file, (double)(rcv_now_ms() - i0) / 1000.0, out ? out : "\n");
    free(out);
    cr_assert_eq(tfx_server_start(&srv), 0);
    otfx_clock(&srv, otfx_offset_for_hour(12, 0));
    /* a typical targeted campaign (gold/platinum in three countries, recent
     * buyers) on email: every profile is evaluated, a few percent queued */
    otfx_campaign(&srv, "aud", "'email'", "subject = 'Hi {{first_name}}', body = 'Deals'",
                  "eligible = function(p, ctx)\n"
                  "  return (p.tier == 'gold' or p.tier == 'platinum') and\n"
                  "    (p.country == 'FR' or p.country == 'DE' or p.country == 'ES') and\n"
                  "    (p.days_since_purchase or 999) < 365 end,");
    cr_assert(otfx_wait_campaign(&srv, "aud"));
    int64_t t0 = rcv_now_ms();
    cr_assert_eq(otfx_action(&srv, "aud", "launch"), 200);
    json_t *s = NULL;
    for (;;) {
        s = otfx_get(&srv, "/api/v1/campaigns/aud/sends");
        const char *state = json_string_value(json_object_get(s, "state"));
        if (state && strcmp(state, "running"))
            break;
        json_decref(s);
        usleep(100000);
        cr_assert(rcv_now_ms() - t0 < 600000, "audience build did not finish");
    }
    double secs = (double)(rcv_now_ms() - t0) / 1000.0;
    long ev = otfx_int(s, "evaluated"), q = otfx_int(s, "queued");
    char *dump = json_dumps(s, JSON_COMPACT);
    printf("BENCH audience profiles=%ld queued=%ld seconds=%.2f profiles_per_s=%.0f status=%s\n", ev, q,
           secs, ev / secs, dump);
    free(dump);
    fflush(stdout);
    json_decref(s);
    cr_expect(ev / secs >= 100000, "audience evaluated %.0f profiles/s (target 100000)", ev / secs);
}
