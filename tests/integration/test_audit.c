/* test_audit.c — the audit log: every change (campaigns, versions,
 * lifecycle, file saves, rules reloads, profile erasures) with actor,
 * action, object, time, before and after; filters and paging; append-only;
 * who may read it. */
#include "campaigns_tfx.h"

static struct tfx_server srv;

#define ANN "Authorization: Bearer ann-key-123456\r\n"
#define BOB "Authorization: Bearer bob-key-123456\r\n"
#define SITE "Authorization: Bearer site-key-123456\r\n"

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,\n"
                          "  api_keys = {\n"
                          "    { id = 'ann', key = 'ann-key-123456', role = 'marketer' },\n"
                          "    { id = 'bob', key = 'bob-key-123456', role = 'admin' },\n"
                          "    { id = 'site', key = 'site-key-123456', role = 'decide' },\n"
                          "  },");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(audit, .init = setup, .fini = teardown, .timeout = 60);

static json_t *entries(const char *query, struct tfx_resp *r)
{
    char path[600];
    snprintf(path, sizeof path, "/api/v1/audit?%s", query);
    cr_assert_eq(ctfx_req(&srv, "GET", path, ANN, NULL, r), 200, "%s: %s", path, r->body);
    return json_object_get(r->json, "entries");
}

Test(audit, every_change_is_recorded_with_before_and_after)
{
    char *s = ctfx_script(NULL, "a1", NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, "au", s, "\"name\":\"Audit me\""), 201);
    char *s2 = ctfx_script(NULL, "a2", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "au", s2, NULL), 200);
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/au", ANN, "{\"owner\":\"ann\"}", &r),
                 200);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "submit", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, BOB, "au", "reject", "{\"reason\":\"typo\"}", NULL), 200);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "submit", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, BOB, "au", "approve", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "launch", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "pause", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "launch", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "stop", NULL, NULL), 200);
    cr_assert_eq(
        ctfx_req(&srv, "POST", "/api/v1/campaigns/au/rollback", ANN, "{\"version\":1}", &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, ANN, "au", "clone", "{\"id\":\"au2\"}", NULL), 201);
    cr_assert_eq(ctfx_req(&srv, "DELETE", "/api/v1/campaigns/au", ANN, NULL, &r), 200);
    tfx_resp_free(&r);
    /* a file save, a rules reload, a profile erasure */
    tfx_write(&srv, "rules/byfile.lua",
              "return { channels = { 'web' }, variants = { { id = 'A', content = { headline = 'f' "
              "} } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_audit_count(&srv, ANN, "object=campaign:byfile") == 1));
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/reload", BOB, NULL, &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/profiles/cust-9", ANN,
                          "{\"email\":\"secret@example.com\"}", &r),
                 201);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "DELETE", "/api/v1/profiles/cust-9", ANN, NULL, &r), 200);
    tfx_resp_free(&r);

    /* oldest first: the campaign's whole story, in order, with the right actors */
    json_t *es = entries("object=campaign:au&order=asc", &r);
    const char *story[][2] = {
        { "campaign.create", "ann" },  { "campaign.update", "ann" }, { "campaign.update", "ann" },
        { "campaign.submit", "ann" },  { "campaign.reject", "bob" }, { "campaign.submit", "ann" },
        { "campaign.approve", "bob" }, { "campaign.launch", "ann" }, { "campaign.pause", "ann" },
        { "campaign.resume", "ann" },  { "campaign.stop", "ann" },   { "campaign.rollback", "ann" },
        { "campaign.delete", "ann" },
    };
    size_t n = sizeof story / sizeof *story;
    cr_assert_eq(json_array_size(es), n, "%s", r.body);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(es, i);
        cr_assert_str_eq(json_string_value(json_object_get(e, "action")), story[i][0], "entry %zu",
                         i);
        cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), story[i][1], "entry %zu",
                         i);
        cr_assert(json_integer_value(json_object_get(e, "ts")) > 0);
        cr_assert(json_string_length(json_object_get(e, "at")) == 20, "ISO time");
        cr_assert(json_is_object(json_object_get(e, "after")), "entry %zu has an after", i);
        if (i > 0)
            cr_assert(json_is_object(json_object_get(e, "before")), "entry %zu has a before", i);
    }
    /* before/after carry the change */
    json_t *pause = json_array_get(es, 8);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(pause, "before"), "status")),
                     "active");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(pause, "after"), "status")),
                     "paused");
    json_t *upd = json_array_get(es, 2);
    cr_assert(json_is_null(json_object_get(json_object_get(upd, "before"), "owner")) ||
              !json_object_get(json_object_get(upd, "before"), "owner"));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(upd, "after"), "owner")),
                     "ann");
    json_t *rej = json_array_get(es, 4);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(rej, "after"), "reason")),
                     "typo");
    tfx_resp_free(&r);

    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=campaign.clone&object=campaign:au2&actor=ann"),
                 1);
    cr_assert_eq(
        ctfx_audit_count(&srv, ANN, "action=campaign.create&object=campaign:byfile&actor=file"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=rules.reload&actor=bob"), 1);
    /* the erasure is recorded without the erased data */
    es = entries("action=profile.erase", &r);
    cr_assert_eq(json_array_size(es), 1);
    json_t *er = json_array_get(es, 0);
    cr_assert_str_eq(json_string_value(json_object_get(er, "object")), "profile:cust-9");
    cr_assert_str_eq(json_string_value(json_object_get(er, "actor")), "ann");
    cr_assert(!strstr(r.body, "secret@example.com"), "no personal data in the audit log");
    tfx_resp_free(&r);
    free(s);
    free(s2);
}

Test(audit, filters_and_paging)
{
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "p%d", i);
        char *s = ctfx_script(NULL, id, NULL);
        cr_assert_eq(ctfx_create(&srv, i % 2 ? BOB : ANN, id, s, NULL), 201);
        free(s);
    }
    struct tfx_resp r;
    /* newest first by default */
    json_t *es = entries("action=campaign.create", &r);
    cr_assert_eq(json_array_size(es), 5);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(es, 0), "object")),
                     "campaign:p4");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "actor=bob"), 2);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=campaign.*"), 5);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=campaign:p*"), 5);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=campaign:p3"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=campaign.launch"), 0);
    /* pages of 2, both directions, no entry lost or repeated */
    for (int asc = 0; asc < 2; asc++) {
        char cursor[32] = "", seen[64] = "";
        int pages = 0;
        for (;;) {
            char q[128];
            snprintf(q, sizeof q, "action=campaign.create&limit=2%s%s%s", asc ? "&order=asc" : "",
                     *cursor ? "&cursor=" : "", cursor);
            es = entries(q, &r);
            size_t i;
            json_t *e;
            json_array_foreach (es, i, e) {
                strcat(seen, json_string_value(json_object_get(e, "object")) + 9);
            }
            pages++;
            const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
            if (!next) {
                tfx_resp_free(&r);
                break;
            }
            snprintf(cursor, sizeof cursor, "%s", next);
            tfx_resp_free(&r);
            cr_assert(pages < 10);
        }
        cr_assert_str_eq(seen, asc ? "p0p1p2p3p4" : "p4p3p2p1p0");
        cr_assert_eq(pages, 3);
    }
    /* time window on the (test) clock */
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/admin/clock", BOB, "{\"now\": 1900000000}", &r),
                 200);
    tfx_resp_free(&r);
    char *s = ctfx_script(NULL, "late", NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, "late", s, NULL), 201);
    free(s);
    /* the clock change itself is an entry, stamped on the new clock */
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "since=1900000000"), 2);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "since=1900000000&action=clock.set"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "since=2030-03-17T17:46:40Z&action=campaign.*"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "until=1899999999&action=campaign.create"), 5);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "since=1900000001"), 0);
    /* bad parameters name themselves */
    const char *bad[][2] = { { "limit=0", "limit" },
                             { "limit=5000", "limit" },
                             { "cursor=-1", "cursor" },
                             { "since=yesterday", "since" },
                             { "until=2030-13-01T00:00:00Z", "until" },
                             { "order=sideways", "order" } };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/v1/audit?%s", bad[i][0]);
        cr_assert_eq(ctfx_req(&srv, "GET", path, ANN, NULL, &r), 400, "%s", path);
        cr_assert_str_eq(ctfx_err_field(&r), bad[i][1]);
        tfx_resp_free(&r);
    }
}

Test(audit, append_only_and_marketer_only)
{
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "DELETE", "/api/v1/audit", BOB, NULL, &r), 405);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/audit", BOB, "{}", &r), 405);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/audit", BOB, "{}", &r), 405);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/audit", SITE, NULL, &r), 403);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/audit", NULL, NULL, &r), 401);
    tfx_resp_free(&r);
    /* X-Actor cannot forge the actor when keys are configured */
    char *s = ctfx_script(NULL, "x", NULL);
    char hdr[200];
    snprintf(hdr, sizeof hdr, "%sX-Actor: bob\r\n", ANN);
    cr_assert_eq(ctfx_create(&srv, hdr, "forge", s, NULL), 201);
    free(s);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=campaign:forge&actor=ann"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=campaign:forge&actor=bob"), 0);
    /* the log survives a restart */
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(tfx_server_start(&srv), 0);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=campaign:forge"), 1);
}
