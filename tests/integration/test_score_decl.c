/*
 * test_score_decl.c — declared scores (score = { base, per, boost },
 * engine/formula.h) give the number the Lua score hook they stand for
 * gives, bit for bit, for every customer; a `per` attribute that is not a
 * number fails the campaign as a raising hook would (explain, metrics);
 * malformed declarations are refused with file:line.
 *
 * Each pair runs on the same server and the same customers: "lK" computes
 * its score in Lua, "dK" declares it; explain shows both scores.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server srv;

#define CAMP(id, score)                                                                         \
    "local function has(list, v) if not list then return false end "                            \
    "for i = 1, #list do if list[i] == v then return true end end return false end\n"           \
    "return {\n  id = '" id "', channels = { 'web' }, priority = 5,\n"                          \
    "  variants = { { id = 'A', content = { text = '" id "' } } },\n"                            \
    "  eligible = function(p, ctx) return true end,\n  score = " score ",\n}\n"

/* Lua form / declared form, pair by pair */
static const char *const pairs[][2] = {
    { "function(p, ctx) local s = 96 * (1 + (p.ltv or 0) / 1000) "
      "if has(p.interests, 'safari') then s = s * 1.5 end return s end",
      "{ base = 96, per = { ltv = 1000 }, "
      "boost = { { when = { interests = { ['$elemMatch'] = { ['$eq'] = 'safari' } } }, by = 1.5 } } }" },
    { "function(p, ctx) local s = 7.3 * (1 + (p.ltv or 0) / 250 + (p.visits or 0) / 20) "
      "if p.tier == 'gold' then s = s * 2 end if p.age >= 30 then s = s * 0.75 end return s end",
      "{ base = 7.3, per = { visits = 20, ltv = 250 }, boost = { { when = { tier = 'gold' }, by = 2 }, "
      "{ when = { age = { ['$gte'] = 30 } }, by = 0.75 } } }" },
    { "function(p, ctx) return 50 end", "{ base = 50 }" },
    { "function(p, ctx) local s = 3 if p.country == 'FR' or p.country == 'DE' then s = s * 10 end "
      "return s end",
      "{ base = 3, per = {}, boost = { { when = { country = { ['$in'] = { 'FR', 'DE' } } }, by = 10 } } }" },
    /* the same condition as pair 1's first boost: one condset member for both */
    { "function(p, ctx) local s = 2 if p.tier == 'gold' then s = s * 3 end return s end",
      "{ base = 2, boost = { { when = { tier = 'gold' }, by = 3 } } }" },
    /* two clauses, written in the other order than pair 1's second boost + first */
    { "function(p, ctx) local s = 1.1 * (1 + (p.visits or 0) / 7) "
      "if p.age >= 30 and p.tier == 'gold' then s = s * 4 end return s end",
      "{ base = 1.1, per = { visits = 7 }, "
      "boost = { { when = { tier = 'gold', age = { ['$gte'] = 30 } }, by = 4 } } }" },
};
#define NPAIRS (int)(sizeof pairs / sizeof *pairs)

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "plugins/web.lua",
              "return { channel = 'web', policy = { customer = { { 100000, '1d' } } } }\n");
    for (int k = 0; k < NPAIRS; k++)
        for (int d = 0; d < 2; d++) {
            char path[64], id[16], src[2000];
            snprintf(id, sizeof id, "%c%d", d ? 'd' : 'l', k);
            snprintf(path, sizeof path, "rules/%s.lua", id);
            snprintf(src, sizeof src, CAMP("%s", "%s"), id, id, pairs[k][d]);
            tfx_write(&srv, path, src);
        }
    tfx_write(&srv, "rules/bad1.lua", CAMP("bad1", "{ base = 'x' }"));
    tfx_write(&srv, "rules/bad2.lua",
              CAMP("bad2", "{ base = 1, boost = { { when = { age = { ['$gtx'] = 1 } }, by = 2 } } }"));
    tfx_write(&srv, "rules/bad3.lua", CAMP("bad3", "{ base = 1, per = { ltv = 0 } }"));
    tfx_write(&srv, "rules/bad4.lua", CAMP("bad4", "{ base = 1, bonus = 2 }"));
    tfx_write(&srv, "rules/bad5.lua",
              CAMP("bad5", "{ base = 1, boost = { { when = { ['$segment'] = 'vip' }, by = 2 } } }"));
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(score_decl, .init = setup, .fini = teardown, .timeout = 120);

static void put_profile(const char *cust, const char *json)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", cust);
    struct tfx_resp r;
    int st = tfx_req(&srv, "PUT", path, json, &r);
    cr_assert(st == 200 || st == 201, "%s", r.body);
    tfx_resp_free(&r);
}

static json_t *explain_of(const char *cust)
{
    char body[200];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"channel\":\"web\",\"limit\":3,\"dry_run\":true,"
             "\"explain\":true}", cust);
    struct tfx_resp r;
    int st = tfx_req(&srv, "POST", "/api/v1/decide", body, &r);
    cr_assert_eq(st, 200, "%s", r.body);
    json_t *x = json_incref(json_object_get(r.json, "explain"));
    tfx_resp_free(&r);
    cr_assert(json_is_array(x));
    return x;
}

static json_t *entry(json_t *x, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(x, i, e) {
        const char *c = json_string_value(json_object_get(e, "campaign_id"));
        if (c && !strcmp(c, id))
            return e;
    }
    cr_assert_fail("no explain entry for %s", id);
    return NULL;
}

Test(score_decl, declared_scores_equal_their_lua_form)
{
    static const char *const interests[] = { "safari", "photo", "golf", "wine" };
    static const char *const tiers[] = { "gold", "silver", "bronze" };
    static const char *const countries[] = { "FR", "DE", "ES", "SE" };
    srand(20);
    for (int u = 0; u < 40; u++) {
        char cust[16], prof[400], ltv[48], visits[32];
        snprintf(cust, sizeof cust, "c%d", u);
        /* some without ltv, some with null, most with decimals */
        if (u % 7 == 3)
            ltv[0] = 0;
        else if (u % 7 == 5)
            snprintf(ltv, sizeof ltv, "\"ltv\": null,");
        else
            snprintf(ltv, sizeof ltv, "\"ltv\": %.6f,", (rand() % 1000000) / 97.0);
        if (u % 5 == 2)
            visits[0] = 0;
        else
            snprintf(visits, sizeof visits, "\"visits\": %d,", rand() % 300);
        const char *i1 = interests[rand() % 4], *i2 = interests[rand() % 4];
        snprintf(prof, sizeof prof,
                 "{%s %s \"age\": %d, \"tier\": \"%s\", \"country\": \"%s\", "
                 "\"interests\": [\"%s\", \"%s\"]}",
                 ltv, visits, 18 + rand() % 50, tiers[rand() % 3], countries[rand() % 4], i1, i2);
        put_profile(cust, prof);
        json_t *x = explain_of(cust);
        for (int k = 0; k < NPAIRS; k++) {
            char l[16], d[16];
            snprintf(l, sizeof l, "l%d", k);
            snprintf(d, sizeof d, "d%d", k);
            json_t *el = entry(x, l), *ed = entry(x, d);
            json_t *sl = json_object_get(el, "score"), *sd = json_object_get(ed, "score");
            cr_assert(json_is_number(sl), "%s: %s has no score (%s)", cust, l, prof);
            cr_assert(json_is_number(sd), "%s: %s has no score: %s", cust, d,
                      json_string_value(json_object_get(ed, "error")));
            cr_assert(json_number_value(sl) == json_number_value(sd),
                      "%s pair %d: Lua %.17g, declared %.17g (%s)", cust, k, json_number_value(sl),
                      json_number_value(sd), prof);
        }
        json_decref(x);
        /* without explain (boosts evaluated only for the campaigns visited):
         * the offers carry the same scores, pair by pair */
        char body[200];
        snprintf(body, sizeof body,
                 "{\"customer_id\":\"%s\",\"channel\":\"web\",\"limit\":%d,"
                 "\"dry_run\":true}", cust, 2 * NPAIRS);
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", body, &r), 200, "%s", r.body);
        double got[2][NPAIRS];
        int seen[2][NPAIRS] = { { 0 } };
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(r.json, "offers"), i, o) {
            const char *id = json_string_value(json_object_get(o, "campaign_id"));
            cr_assert(id && (id[0] == 'l' || id[0] == 'd') && id[1] - '0' < NPAIRS);
            int d = id[0] == 'd', k = id[1] - '0';
            cr_assert(json_is_number(json_object_get(o, "score")), "%s", r.body);
            got[d][k] = json_number_value(json_object_get(o, "score"));
            seen[d][k] = 1;
        }
        for (int k = 0; k < NPAIRS; k++) {
            cr_assert(seen[0][k] && seen[1][k], "%s: pair %d not both offered: %s", cust, k, r.body);
            cr_assert(got[0][k] == got[1][k], "%s pair %d: Lua %.17g, declared %.17g", cust, k,
                      got[0][k], got[1][k]);
        }
        tfx_resp_free(&r);
    }
}

Test(score_decl, a_per_attribute_that_is_not_a_number_fails_the_campaign)
{
    put_profile("s1", "{\"ltv\": \"lots\", \"age\": 40, \"tier\": \"gold\", \"visits\": 3}");
    json_t *x = explain_of("s1");
    json_t *ed = entry(x, "d0"), *el = entry(x, "l0");
    const char *err = json_string_value(json_object_get(ed, "error"));
    cr_assert(err && !strcmp(err, "score: p.ltv is not a number"), "%s", err ? err : "(none)");
    cr_assert_null(json_object_get(ed, "score"));
    cr_assert(json_object_get(el, "error"), "the Lua form raises too");
    /* campaigns whose declared score does not read ltv are unaffected */
    cr_assert(json_is_number(json_object_get(entry(x, "d2"), "score")));
    json_decref(x);
    /* and it is not offered */
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                         "{\"customer_id\":\"s1\",\"channel\":\"web\",\"limit\":10,\"dry_run\":true}",
                         &r), 200);
    cr_assert_null(strstr(r.body, "\"d0\""), "%s", r.body);
    cr_assert(strstr(r.body, "\"d2\""), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double v = 0;
    cr_assert(tfx_metric(r.body, "promod_hook_errors_total",
                         "campaign=\"d0\",hook=\"score\",kind=\"error\"", &v), "%s", r.body);
    cr_assert_geq(v, 1);
    tfx_resp_free(&r);
}

Test(score_decl, malformed_declarations_are_refused_with_their_line)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert(strstr(r.body, "bad1.lua:6: score.base: must be a number"), "%s", r.body);
    cr_assert(strstr(r.body, "bad2.lua:6: score.boost[1].when: $.age.$gtx: unknown operator"), "%s", r.body);
    cr_assert(strstr(r.body, "bad3.lua:6: score.per.ltv: must be a non-zero number"), "%s", r.body);
    cr_assert(strstr(r.body, "bad4.lua:6: score: unknown field 'bonus' in score"), "%s", r.body);
    cr_assert(strstr(r.body, "bad5.lua:6: score.boost[1].when: $segment is not available"), "%s",
              r.body);
    tfx_resp_free(&r);
    /* promod check says the same */
    char *out = NULL, bad[400];
    snprintf(bad, sizeof bad, "%s/bad4.lua", srv.rules);
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, bad, (char *)NULL), 1);
    cr_assert(strstr(out, "bad4.lua:6: score: unknown field 'bonus'"), "%s", out);
    free(out);
    /* the good ones load, and pass check */
    snprintf(bad, sizeof bad, "%s/d1.lua", srv.rules);
    cr_assert_eq(tfx_promod(&out, "check", "-c", srv.config, bad, (char *)NULL), 0, "%s", out);
    free(out);
}

/* A simulation (rules/simulate: a generation of its own, without the
 * channel's boost index) works the declared score out condition by
 * condition, to the same number. */
Test(score_decl, a_simulation_gives_the_same_declared_score)
{
    put_profile("m1", "{\"ltv\": 1234.5, \"visits\": 17, \"age\": 41, \"tier\": \"gold\", "
                      "\"country\": \"FR\", \"interests\": [\"golf\", \"safari\"]}");
    json_t *x = explain_of("m1");
    double live = json_number_value(json_object_get(entry(x, "d1"), "score"));
    json_decref(x);
    char src[2000];
    snprintf(src, sizeof src, CAMP("%s", "%s"), "d1", "d1", pairs[1][1]);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "script", src, "name", "d1.lua",
                             "customer_id", "m1", "channel", "web");
    char *b = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/rules/simulate", b, &r), 200, "%s", r.body);
    free(b);
    json_t *sx = json_array_get(json_object_get(r.json, "explain"), 0);
    cr_assert(json_is_number(json_object_get(sx, "score")), "%s", r.body);
    cr_assert(json_number_value(json_object_get(sx, "score")) == live, "simulated %.17g, live %.17g",
              json_number_value(json_object_get(sx, "score")), live);
    tfx_resp_free(&r);
}
