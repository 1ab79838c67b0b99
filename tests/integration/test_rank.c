/*
 * test_rank.c — the order decide serves offers in.  Ranking is lazy
 * (engine/decide.c: the first offers are picked out of the candidates in
 * one pass, the rest sorted only when the walk gets that far), so here the
 * offers are checked against a reference order the test computes itself
 * from explain: score descending, then priority descending, then id —
 * with many equal scores and priorities, score hooks that fail for some
 * customers, and caps that fill up between rounds so the walk has to go
 * past the first picks (and, with a large limit, to the end).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"

#define NCAMP 40

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "plugins/web.lua",
              "return { channel = 'web', policy = { customer = { { 100000, '1d' } } } }\n");
    for (int i = 0; i < NCAMP; i++) {
        char path[64], src[1200];
        snprintf(path, sizeof path, "rules/r%02d.lua", i);
        snprintf(src, sizeof src,
                 "return {\n"
                 "  id = 'r%02d', name = 'rank %d', channels = { 'web' }, priority = %d,\n"
                 "  %s\n"
                 "  variants = { { id = 'A', content = { text = 'r%02d' } } },\n"
                 "  eligible = function(p, ctx) return true end,\n"
                 "  score = function(p, ctx)\n"
                 "    %s\n"
                 "    return ((p.k or 0) * %d) %% 7\n"
                 "  end,\n"
                 "}\n",
                 i, i, (i * 5) % 4, i % 3 == 0 ? "caps = { customer = { { 1, '1d' } } }," : "", i,
                 i % 10 == 7 ? "if (p.k or 0) % 4 == 1 then error('no score for this one') end" : "",
                 i + 3);
        tfx_write(&srv, path, src);
    }
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(rank, .init = setup, .fini = teardown, .timeout = 120);

struct ref {
    const char *id;
    double score;
    int prio;
};

static int ref_cmp(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    if (x->prio != y->prio)
        return y->prio - x->prio;
    return strcmp(x->id, y->id);
}

/* The offers' campaign ids, comma-separated. */
static void offer_ids(json_t *res, char *out, size_t len)
{
    size_t at = 0, i;
    json_t *o;
    out[0] = 0;
    json_array_foreach(json_object_get(res, "offers"), i, o) {
        int n = snprintf(out + at, len - at, "%s%s", at ? "," : "",
                         json_string_value(json_object_get(o, "campaign_id")));
        cr_assert(n > 0 && (size_t)n < len - at);
        at += (size_t)n;
    }
}

static json_t *decide(const char *cust, int limit, int dry, int explain)
{
    char body[300];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"channel\":\"web\",\"limit\":%d,\"dry_run\":%s,"
             "\"explain\":%s}", cust, limit, dry ? "true" : "false", explain ? "true" : "false");
    struct tfx_resp r;
    int st = tfx_req(&srv, "POST", "/api/v1/decide", body, &r);
    cr_assert_eq(st, 200, "%s", r.body);
    json_t *j = json_incref(r.json);
    tfx_resp_free(&r);
    return j;
}

Test(rank, offers_follow_score_priority_id_while_caps_fill)
{
    static const int limits[] = { 1, 2, 3, 5, 9, 40 };
    long checked = 0, deep = 0;
    for (int u = 0; u < 8; u++) {
        char cust[16], path[64], prof[64];
        snprintf(cust, sizeof cust, "u%d", u);
        snprintf(path, sizeof path, "/api/v1/profiles/%s", cust);
        snprintf(prof, sizeof prof, "{\"k\": %d}", 3 * u + 1);
        struct tfx_resp r;
        int st = tfx_req(&srv, "PUT", path, prof, &r);
        cr_assert(st == 200 || st == 201, "%s", r.body);
        tfx_resp_free(&r);
        for (int round = 0; round < 3; round++)
            for (size_t li = 0; li < sizeof limits / sizeof *limits; li++) {
                int limit = limits[li];
                /* the reference: explain's candidates that are neither
                 * capped nor failed, in score / priority / id order */
                json_t *x = decide(cust, limit, 1, 1);
                struct ref refs[NCAMP];
                int n = 0, capped = 0;
                size_t i;
                json_t *e;
                json_array_foreach(json_object_get(x, "explain"), i, e) {
                    json_t *sc = json_object_get(e, "score");
                    if (!sc || json_object_get(e, "error"))
                        continue;
                    if (json_object_get(e, "capped")) {
                        capped++;
                        continue;
                    }
                    const char *id = json_string_value(json_object_get(e, "campaign_id"));
                    cr_assert(id && n < NCAMP);
                    int k = atoi(id + 1);
                    refs[n++] = (struct ref){ id, json_number_value(sc), (k * 5) % 4 };
                }
                qsort(refs, (size_t)n, sizeof *refs, ref_cmp);
                char want[NCAMP * 8] = "";
                size_t at = 0;
                for (int k = 0; k < n && k < limit; k++)
                    at += (size_t)snprintf(want + at, sizeof want - at, "%s%s", k ? "," : "",
                                           refs[k].id);
                char got[NCAMP * 8];
                offer_ids(x, got, sizeof got);
                cr_assert_str_eq(got, want, "%s limit %d round %d (dry run, explain)", cust, limit,
                                 round);
                /* the same offers from a live decide without explain; it
                 * fills the capped campaigns' caps for the next rounds */
                json_t *live = decide(cust, limit, 0, 0);
                offer_ids(live, got, sizeof got);
                cr_assert_str_eq(got, want, "%s limit %d round %d (live)", cust, limit, round);
                json_decref(live);
                deep += capped > 4 && limit < n;
                json_decref(x);
                checked++;
            }
    }
    cr_assert_gt(deep, 10, "caps never pushed the walk past the first picks (%ld)", deep);
    cr_log_info("rank: %ld decides checked, %ld past capped candidates", checked, deep);
}
