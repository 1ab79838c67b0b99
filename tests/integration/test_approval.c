/* test_approval.c — require_approval: four eyes on every version, the
 * approved version serving until a newer one is approved, file saves
 * waiting like API saves, reject, rollback; keys and X-Actor. */
#include "campaigns_tfx.h"

static struct tfx_server srv;

#define ANN "Authorization: Bearer ann-key-123456\r\n"
#define BOB "Authorization: Bearer bob-key-123456\r\n"
#define SITE "Authorization: Bearer site-key-123456\r\n"

static void setup_keys(void)
{
    tfx_server_init(&srv, "require_approval = true,\n"
                          "  api_keys = {\n"
                          "    { id = 'ann', key = 'ann-key-123456', role = 'marketer' },\n"
                          "    { id = 'bob', key = 'bob-key-123456', role = 'marketer' },\n"
                          "    { id = 'site', key = 'site-key-123456', role = 'decide' },\n"
                          "  },");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void setup_local(void)
{
    tfx_server_init(&srv, "require_approval = true,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(approval, .init = setup_keys, .fini = teardown, .timeout = 60);
TestSuite(approval_local, .init = setup_local, .fini = teardown, .timeout = 60);

/* ann writes and launches "promo" serving headline "v1" (bob approves). */
static void live_v1(void)
{
    char *s = ctfx_script(NULL, "v1", NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, "promo", s, NULL), 201);
    free(s);
    cr_assert_eq(ctfx_act(&srv, ANN, "promo", "submit", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, ANN, "promo", "launch", NULL, NULL), 200);
    char *o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1");
    free(o);
}

Test(approval, approval_by_the_same_key_is_refused)
{
    char *s = ctfx_script(NULL, "v1", NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, "self", s, NULL), 201);
    free(s);
    cr_assert_eq(ctfx_act(&srv, ANN, "self", "submit", NULL, NULL), 200);
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, ANN, "self", "approve", NULL, &r), 403);
    cr_assert_str_eq(tfx_err_code(&r), "same_actor");
    cr_assert(strstr(
        json_string_value(json_object_get(json_object_get(r.json, "error"), "message")), "ann"));
    tfx_resp_free(&r);
    char *st = ctfx_field(&srv, ANN, "self", "status");
    cr_assert_str_eq(st, "pending_approval", "the refusal changed nothing");
    free(st);
    /* a submitter who did not write the version cannot approve it either */
    char *s2 = ctfx_script(NULL, "v1", NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, "sub", s2, NULL), 201);
    free(s2);
    cr_assert_eq(ctfx_act(&srv, BOB, "sub", "submit", NULL, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, BOB, "sub", "approve", NULL, NULL), 403);
    cr_assert_eq(ctfx_act(&srv, ANN, "sub", "approve", NULL, NULL), 403);
    /* the decide key may not touch campaigns at all */
    cr_assert_eq(ctfx_act(&srv, SITE, "self", "approve", NULL, &r), 403);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, NULL, "self", "approve", NULL, &r), 401);
    tfx_resp_free(&r);
    /* X-Actor is ignored when keys are configured */
    char hdr[200];
    snprintf(hdr, sizeof hdr, "%sX-Actor: bob\r\n", ANN);
    cr_assert_eq(ctfx_act(&srv, hdr, "self", "approve", NULL, NULL), 403);
    cr_assert_eq(ctfx_act(&srv, BOB, "self", "approve", NULL, NULL), 200);
    cr_assert_eq(
        ctfx_audit_count(&srv, ANN, "action=campaign.approve&object=campaign:self&actor=bob"), 1);
    cr_assert_eq(
        ctfx_audit_count(&srv, ANN, "action=campaign.approve&object=campaign:self&actor=ann"), 0);
}

Test(approval, the_approved_version_serves_until_the_new_one_is_approved)
{
    live_v1();
    char *v2 = ctfx_script(NULL, "v2", NULL);
    struct tfx_resp r;
    cr_assert_eq(ctfx_put_script(&srv, ANN, "promo", v2, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "version")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "live_version")), 1);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "pending_version")), 2);
    cr_assert(json_is_true(json_object_get(json_object_get(r.json, "load"), "held_for_approval")));
    tfx_resp_free(&r);
    /* the file holds v2 (git agrees with the API) but v1 keeps serving */
    char *disk = ctfx_read(&srv, "rules/promo.lua");
    cr_assert_str_eq(disk, v2);
    free(disk);
    for (int i = 0; i < 5; i++) {
        char *o = ctfx_offer(&srv, SITE, "promo");
        cr_assert_str_eq(o ? o : "(none)", "v1");
        free(o);
    }
    /* even a forced reload keeps v1 */
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/reload", ANN, NULL, &r), 200);
    tfx_resp_free(&r);
    char *o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1");
    free(o);
    /* its author cannot approve v2; bob can, and v2 goes live */
    cr_assert_eq(ctfx_act(&srv, ANN, "promo", "approve", NULL, NULL), 403);
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", "{\"version\": 1}", &r), 409,
                 "v1 is already live");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", "{\"version\": 2}", &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "active");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "live_version")), 2);
    tfx_resp_free(&r);
    o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v2");
    free(o);
    cr_assert_eq(
        ctfx_audit_count(&srv, ANN, "action=version.approve&object=campaign:promo&actor=bob"), 1);
    /* no version waiting: approve is an illegal transition */
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", NULL, &r), 409);
    cr_assert_str_eq(tfx_err_code(&r), "illegal_transition");
    tfx_resp_free(&r);
    free(v2);
}

Test(approval, a_file_save_waits_for_approval_too)
{
    live_v1();
    tfx_write(&srv, "rules/promo.lua",
              "return { channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'from the editor' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, ANN, "promo", "version") == 2));
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns/promo/versions", ANN, NULL, &r), 200);
    json_t *v = json_array_get(json_object_get(r.json, "versions"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(v, "author")), "file");
    cr_assert_str_eq(json_string_value(json_object_get(v, "state")), "pending");
    tfx_resp_free(&r);
    char *o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1", "the editor's save is not live yet");
    free(o);
    /* the file's author is unknown: any other key than the submitter may approve */
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", NULL, NULL), 200);
    o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "from the editor");
    free(o);
}

Test(approval, reject_keeps_the_live_version)
{
    live_v1();
    char *v2 = ctfx_script(NULL, "bad idea", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "promo", v2, NULL), 200);
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "reject", "{\"reason\":\"off-brand\"}", &r), 200);
    cr_assert(json_is_null(json_object_get(r.json, "pending_version")));
    cr_assert_eq(json_integer_value(json_object_get(r.json, "live_version")), 1);
    tfx_resp_free(&r);
    char *o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1");
    free(o);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns/promo/versions/2", ANN, NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "rejected");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "rejected_by")), "bob");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "reason")), "off-brand");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=version.reject&actor=bob"), 1);
    /* rejecting again is refused */
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "reject", NULL, NULL), 409);
    free(v2);
}

Test(approval, rollback_to_an_approved_version_goes_live_at_once)
{
    live_v1();
    char *v2 = ctfx_script(NULL, "v2", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "promo", v2, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", NULL, NULL), 200);
    char *o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v2");
    free(o);
    struct tfx_resp r;
    cr_assert_eq(
        ctfx_req(&srv, "POST", "/api/v1/campaigns/promo/rollback", ANN, "{\"version\":1}", &r),
        200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "version")), 3);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "live_version")), 3);
    tfx_resp_free(&r);
    o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1", "rolled back");
    free(o);
    char *disk = ctfx_read(&srv, "rules/promo.lua");
    cr_assert(strstr(disk, "\"v1\""), "the file follows the rollback: %s", disk);
    free(disk);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns/promo/versions/3", ANN, NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rollback_of")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "origin")), "rollback");
    tfx_resp_free(&r);
    /* a never-approved version rolled back to still waits */
    char *v4 = ctfx_script(NULL, "v4 never approved", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "promo", v4, NULL), 200);
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "reject", NULL, NULL), 200);
    char *v5 = ctfx_script(NULL, "v5", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "promo", v5, NULL), 200);
    free(v5);
    cr_assert_eq(
        ctfx_req(&srv, "POST", "/api/v1/campaigns/promo/rollback", ANN, "{\"version\":4}", &r),
        200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "pending_version")), 6);
    tfx_resp_free(&r);
    o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1");
    free(o);
    /* bad rollbacks */
    cr_assert_eq(
        ctfx_req(&srv, "POST", "/api/v1/campaigns/promo/rollback", ANN, "{\"version\":99}", &r),
        404);
    cr_assert_str_eq(ctfx_err_field(&r), "version");
    tfx_resp_free(&r);
    cr_assert_eq(
        ctfx_req(&srv, "POST", "/api/v1/campaigns/promo/rollback", ANN, "{\"version\":\"1\"}", &r),
        400);
    cr_assert_str_eq(ctfx_err_field(&r), "version");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/campaigns/promo/rollback", ANN, "{\"v\":1}", &r),
                 400);
    cr_assert_str_eq(ctfx_err_field(&r), "v");
    tfx_resp_free(&r);
    cr_assert_eq(
        ctfx_req(&srv, "POST", "/api/v1/campaigns/promo/rollback", ANN, "{\"version\":6}", &r), 409,
        "same script as the newest");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=campaign.rollback&object=campaign:promo"), 2);
    free(v2);
    free(v4);
}

Test(approval, editing_a_submitted_campaign_needs_a_new_submit)
{
    char *s = ctfx_script(NULL, "one", NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, "resub", s, NULL), 201);
    cr_assert_eq(ctfx_act(&srv, ANN, "resub", "submit", NULL, NULL), 200);
    char *s2 = ctfx_script(NULL, "two", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "resub", s2, NULL), 200);
    char *st = ctfx_field(&srv, ANN, "resub", "status");
    cr_assert_str_eq(st, "draft", "the reviewed version changed, so it is a draft again");
    free(st);
    cr_assert_eq(ctfx_act(&srv, BOB, "resub", "approve", NULL, NULL), 409);
    cr_assert_eq(ctfx_act(&srv, ANN, "resub", "submit", NULL, NULL), 200);
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, BOB, "resub", "approve", "{\"version\":1}", &r), 409,
                 "approve names the exact version");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, BOB, "resub", "approve", "{\"version\":2}", NULL), 200);
    free(s);
    free(s2);
}

Test(approval_local, anonymous_cannot_approve_its_own_work)
{
    char *s = ctfx_script(NULL, "local", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "loc", s, NULL), 201);
    free(s);
    cr_assert_eq(ctfx_act(&srv, NULL, "loc", "submit", NULL, NULL), 200);
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, NULL, "loc", "approve", NULL, &r), 403);
    cr_assert(strstr(r.body, "X-Actor"), "the message says how local users approve: %s", r.body);
    tfx_resp_free(&r);
    /* with no keys configured, X-Actor names the local user */
    cr_assert_eq(ctfx_act(&srv, "X-Actor: anonymous\r\n", "loc", "approve", NULL, NULL), 403);
    cr_assert_eq(ctfx_act(&srv, "X-Actor: carol\r\n", "loc", "approve", NULL, NULL), 200);
    cr_assert_eq(ctfx_audit_count(&srv, NULL, "action=campaign.approve&actor=carol"), 1);
}

Test(approval, a_waiting_version_stays_held_across_a_restart)
{
    live_v1();
    char *v2 = ctfx_script(NULL, "v2", NULL);
    cr_assert_eq(ctfx_put_script(&srv, ANN, "promo", v2, NULL), 200);
    free(v2);
    cr_assert_eq(tfx_server_stop(&srv), 0, "clean exit");
    cr_assert_eq(tfx_server_start(&srv), 0);
    char *o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v1", "the approved version serves from the first request");
    free(o);
    cr_assert_eq(ctfx_int(&srv, ANN, "promo", "pending_version"), 2);
    cr_assert_eq(ctfx_act(&srv, BOB, "promo", "approve", NULL, NULL), 200);
    o = ctfx_offer(&srv, SITE, "promo");
    cr_assert_str_eq(o ? o : "(none)", "v2");
    free(o);
}
