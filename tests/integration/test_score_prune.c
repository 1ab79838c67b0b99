/*
 * test_score_prune.c — a decide leaves unscored the candidates whose
 * declared score cannot rank among the offers (engine/decide_prune.c), and
 * still offers exactly what it offers when it scores everything.
 *
 * explain scores every candidate (it reports them all), so for each
 * customer and limit the offers of a dry-run decide without explain must
 * equal those with explain: campaign, variant, score and content, in
 * order.  Between rounds a real decide serves the customer, and every
 * campaign has a customer cap of 1 a day, so later rounds find the best
 * campaigns capped and the walk must go past the candidates ranked at
 * first — into those left unscored (promod_decide_unscored_rescored_total
 * shows it did).  The campaigns mix what may be skipped (declared scores
 * of the channel's most common `per`, `eligible` absent or `return true`)
 * with what may not (another `per`, a real `eligible`, Lua scores, a boost
 * below 1, equal scores decided by rank); customers include a negative
 * ltv (a multiplier below 0: nothing skipped) and a string ltv (every
 * formula of that `per` fails, as without skipping).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server srv;

#define NCAMP 80
#define NCUST 40

static unsigned long long rng = 88172645463325252ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static const char *const interests[] = { "safari", "golf", "wine", "jazz", "chess" };
static const char *const tiers[] = { "gold", "silver", "bronze" };

static void write_campaign(int k)
{
    char score[600], aud[300] = "", elig[120] = "", src[2000], path[64];
    int base = 1 + (int)rnd(12); /* few values: equal scores, decided by rank */
    const char *in = interests[rnd(5)];
    const char *by = rnd(4) == 0 ? "0.5" : rnd(2) ? "1.5" : "3";
    unsigned kind = rnd(20);
    if (kind == 0) /* a Lua score: never skipped */
        snprintf(score, sizeof score, "function(p, ctx) return %d * (1 + (p.ltv or 0) / 1000) end",
                 base);
    else if (kind <= 2) /* another `per` */
        snprintf(score, sizeof score, "{ base = %d, per = { visits = 10 } }", base);
    else
        snprintf(score, sizeof score,
                 "{ base = %d, per = { ltv = 1000 }, boost = { { when = { interests = "
                 "{ ['$elemMatch'] = { ['$eq'] = '%s' } } }, by = %s } } }",
                 base, in, by);
    if (rnd(3))
        snprintf(aud, sizeof aud, "  audience = { conditions = { tier = { ['$in'] = { '%s', '%s' } } } },\n",
                 tiers[rnd(3)], tiers[rnd(3)]);
    unsigned e = rnd(10);
    if (e == 0) /* a real hook: never skipped */
        snprintf(elig, sizeof elig, "  eligible = function(p, ctx) return (p.age or 0) >= 30 end,\n");
    else if (e <= 5)
        snprintf(elig, sizeof elig, "  eligible = function(p, ctx) return true end,\n");
    snprintf(src, sizeof src,
             "return {\n  id = 'c%02d', channels = { 'web' }, priority = 5,\n"
             "  caps = { customer = { { 1, '1d' } } },\n"
             "  variants = { { id = 'A', content = { text = 'offer c%02d for {{first_name|you}}' } } },\n"
             "%s%s  score = %s,\n}\n",
             k, k, aud, elig, score);
    snprintf(path, sizeof path, "rules/c%02d.lua", k);
    tfx_write(&srv, path, src);
}

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "plugins/web.lua",
              "return { channel = 'web', policy = { customer = { { 100000, '1d' } } } }\n");
    for (int k = 0; k < NCAMP; k++)
        write_campaign(k);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(score_prune, .init = setup, .fini = teardown, .timeout = 240);

static void put_customer(int k)
{
    char path[64], body[400], ltv[32];
    if (k == 1)
        snprintf(ltv, sizeof ltv, "-3000"); /* multiplier < 0 */
    else if (k == 2)
        snprintf(ltv, sizeof ltv, "\"lots\""); /* not a number: those formulas fail */
    else
        snprintf(ltv, sizeof ltv, "%u", rnd(5000));
    snprintf(body, sizeof body,
             "{\"first_name\":\"n%d\",\"ltv\":%s,\"visits\":%u,\"age\":%u,\"tier\":\"%s\","
             "\"interests\":[\"%s\",\"%s\"]}",
             k, ltv, rnd(40), 18 + rnd(50), tiers[rnd(3)], interests[rnd(5)], interests[rnd(5)]);
    snprintf(path, sizeof path, "/api/v1/profiles/u%d", k);
    struct tfx_resp r;
    int st = tfx_req(&srv, "PUT", path, body, &r);
    cr_assert(st == 200 || st == 201, "%s", r.body);
    tfx_resp_free(&r);
}

/* The offers of a decide for customer k (a new reference). */
static json_t *offers(int k, int limit, int dry, int explain)
{
    char body[200];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"u%d\",\"channel\":\"web\",\"limit\":%d%s%s}", k, limit,
             dry ? ",\"dry_run\":true" : "", explain ? ",\"explain\":true" : "");
    struct tfx_resp r;
    int st = tfx_req(&srv, "POST", "/api/v1/decide", body, &r);
    cr_assert_eq(st, 200, "%s", r.body);
    json_t *o = json_incref(json_object_get(r.json, "offers"));
    tfx_resp_free(&r);
    cr_assert(json_is_array(o));
    return o;
}

static double metric(const char *name)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double v = -1;
    cr_assert(tfx_metric(r.body, name, "", &v), "no %s in /metrics", name);
    tfx_resp_free(&r);
    return v;
}

Test(score_prune, offers_equal_those_of_a_decide_that_scores_everything)
{
    for (int k = 0; k < NCUST; k++)
        put_customer(k);
    int compared = 0, nonempty = 0;
    for (int round = 0; round < 8; round++)
        for (int k = 0; k < NCUST; k++) {
            int limit = 1 + (k + round) % 4;
            json_t *fast = offers(k, limit, 1, 0), *all = offers(k, limit, 1, 1);
            char *a = json_dumps(fast, JSON_COMPACT), *b = json_dumps(all, JSON_COMPACT);
            cr_assert(json_equal(fast, all),
                      "customer u%d, limit %d, round %d:\n without explain %s\n with explain    %s",
                      k, limit, round, a, b);
            nonempty += json_array_size(fast) > 0;
            compared++;
            free(a);
            free(b);
            json_decref(fast);
            json_decref(all);
            json_decref(offers(k, limit, 0, 0)); /* served: capped from now on */
        }
    cr_assert_eq(compared, 8 * NCUST);
    cr_assert_gt(nonempty, NCUST, "too few offers to compare");
    /* both paths ran: candidates were left unscored, and some were scored
     * after all when caps held the better ones back */
    cr_assert_gt(metric("promod_decide_unscored_total"), 0);
    cr_assert_gt(metric("promod_decide_unscored_rescored_total"), 0);
}

Test(score_prune, a_per_attribute_that_is_not_a_number_still_fails_every_formula)
{
    put_customer(0);
    put_customer(1);
    put_customer(2); /* ltv "lots" */
    char body[200];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"u2\",\"channel\":\"web\",\"limit\":3,\"dry_run\":true,"
             "\"explain\":true}");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
    size_t i;
    json_t *o;
    int failed = 0;
    json_array_foreach(json_object_get(r.json, "explain"), i, o) {
        const char *err = json_string_value(json_object_get(o, "error"));
        failed += err && strstr(err, "p.ltv is not a number") != NULL;
    }
    tfx_resp_free(&r);
    cr_assert_gt(failed, 0, "no formula reported the string ltv");
    /* without explain: the same offers (nothing skipped, all fail alike) */
    json_t *fast = offers(2, 3, 1, 0), *all = offers(2, 3, 1, 1);
    cr_assert(json_equal(fast, all));
    json_decref(fast);
    json_decref(all);
}
