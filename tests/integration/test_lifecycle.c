/* test_lifecycle.c — every lifecycle transition, legal and illegal, with
 * require_approval off (the default) and on; only active campaigns are
 * decide candidates; every change is audited, refusals change nothing. */
#include "campaigns_tfx.h"

static struct tfx_server srv;

static void setup_open(void)
{
    tfx_server_init(&srv, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void setup_approval(void)
{
    tfx_server_init(&srv, "require_approval = true,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

#define ANN "X-Actor: ann\r\n"
#define BOB "X-Actor: bob\r\n"

/* Drive a fresh campaign `id` to `state` (ann writes, bob approves). */
static void reach(const char *id, const char *state)
{
    char *s = ctfx_script(NULL, id, NULL);
    cr_assert_eq(ctfx_create(&srv, ANN, id, s, NULL), 201, "create %s", id);
    free(s);
    struct step {
        const char *state;
        const char *path[4];
    } steps[] = {
        { "draft", { NULL } },
        { "pending_approval", { "submit", NULL } },
        { "approved", { "submit", "approve", NULL } },
        { "active", { "submit", "approve", "launch", NULL } },
        { "paused", { "submit", "approve", "launch", "pause" } },
        { "stopped", { "submit", "approve", "launch", "stop" } },
    };
    if (!strcmp(state, "archived")) {
        char p[200];
        snprintf(p, sizeof p, "/api/v1/campaigns/%s", id);
        struct tfx_resp r;
        cr_assert_eq(ctfx_req(&srv, "DELETE", p, ANN, NULL, &r), 200);
        tfx_resp_free(&r);
        return;
    }
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        if (strcmp(steps[i].state, state))
            continue;
        for (int k = 0; k < 4 && steps[i].path[k]; k++) {
            const char *who = !strcmp(steps[i].path[k], "approve") ? BOB : ANN;
            struct tfx_resp r;
            int st = ctfx_act(&srv, who, id, steps[i].path[k], NULL, &r);
            cr_assert_eq(st, 200, "%s: %s -> %d %s", id, steps[i].path[k], st, r.body);
            tfx_resp_free(&r);
        }
    }
    char *got = ctfx_field(&srv, NULL, id, "status");
    cr_assert_str_eq(got, state, "%s reached %s", id, got);
    free(got);
}

struct expect {
    const char *from;
    const char *action;
    const char *to; /* NULL = illegal */
};

static const char *states[] = { "draft",  "pending_approval", "approved", "active",
                                "paused", "stopped",          "archived" };
static const char *actions[] = { "launch", "pause", "stop", "submit", "approve", "reject" };

static const char *expected(const struct expect *tab, size_t n, const char *from,
                            const char *action)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tab[i].from, from) && !strcmp(tab[i].action, action))
            return tab[i].to;
    return NULL;
}

/* Try every action from every state on fresh campaigns. */
static void run_table(const struct expect *tab, size_t n)
{
    for (size_t s = 0; s < sizeof states / sizeof *states; s++) {
        for (size_t a = 0; a < sizeof actions / sizeof *actions; a++) {
            char id[64];
            snprintf(id, sizeof id, "c%zu-%zu", s, a);
            reach(id, states[s]);
            const char *to = expected(tab, n, states[s], actions[a]);
            char q[200];
            snprintf(q, sizeof q, "object=campaign:%s", id);
            long audit_before = ctfx_audit_count(&srv, NULL, q);
            struct tfx_resp r;
            const char *who = !strcmp(actions[a], "approve") ? BOB : ANN;
            int st = ctfx_act(&srv, who, id, actions[a], NULL, &r);
            if (to) {
                cr_assert_eq(st, 200, "%s %s: %d %s", states[s], actions[a], st, r.body);
                cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), to, "%s %s",
                                 states[s], actions[a]);
                cr_assert_eq(ctfx_audit_count(&srv, NULL, q), audit_before + 1, "audited");
            } else {
                cr_assert_eq(st, 409, "%s %s must be refused: %d %s", states[s], actions[a], st,
                             r.body);
                json_t *e = json_object_get(r.json, "error");
                cr_assert_str_eq(json_string_value(json_object_get(e, "code")),
                                 "illegal_transition");
                cr_assert_str_eq(json_string_value(json_object_get(e, "current")), states[s]);
                const char *msg = json_string_value(json_object_get(e, "message"));
                cr_assert(strstr(msg, states[s]) && strstr(msg, "allowed"), "%s", msg);
                /* the allowed list is exactly the legal actions (+ clone, delete) */
                json_t *allowed = json_object_get(e, "allowed");
                for (size_t b = 0; b < sizeof actions / sizeof *actions; b++) {
                    int listed = 0;
                    size_t i;
                    json_t *x;
                    json_array_foreach (allowed, i, x)
                        listed |= !strcmp(json_string_value(x), actions[b]);
                    cr_assert_eq(listed, expected(tab, n, states[s], actions[b]) != NULL,
                                 "%s: %s listed=%d", states[s], actions[b], listed);
                }
                int has_clone = 0;
                size_t i;
                json_t *x;
                json_array_foreach (allowed, i, x)
                    has_clone |= !strcmp(json_string_value(x), "clone");
                cr_assert(has_clone);
                char *now = ctfx_field(&srv, NULL, id, "status");
                cr_assert_str_eq(now, states[s], "a refused action changes nothing");
                free(now);
                cr_assert_eq(ctfx_audit_count(&srv, NULL, q), audit_before,
                             "a refusal is not a change");
            }
            tfx_resp_free(&r);
        }
    }
}

static const struct expect open_tab[] = {
    { "draft", "launch", "active" },
    { "draft", "submit", "pending_approval" },
    { "pending_approval", "approve", "approved" },
    { "pending_approval", "reject", "draft" },
    { "pending_approval", "launch", "active" },
    { "approved", "launch", "active" },
    { "active", "pause", "paused" },
    { "active", "stop", "stopped" },
    { "paused", "launch", "active" },
    { "paused", "stop", "stopped" },
};

static const struct expect approval_tab[] = {
    { "draft", "submit", "pending_approval" }, { "pending_approval", "approve", "approved" },
    { "pending_approval", "reject", "draft" }, { "approved", "launch", "active" },
    { "active", "pause", "paused" },           { "active", "stop", "stopped" },
    { "paused", "launch", "active" },          { "paused", "stop", "stopped" },
};

TestSuite(lifecycle, .init = setup_open, .fini = teardown, .timeout = 120);
TestSuite(lifecycle_approval, .init = setup_approval, .fini = teardown, .timeout = 120);

Test(lifecycle, every_transition_without_approval)
{
    run_table(open_tab, sizeof open_tab / sizeof *open_tab);
}

Test(lifecycle_approval, every_transition_with_approval)
{
    run_table(approval_tab, sizeof approval_tab / sizeof *approval_tab);
    /* launching a draft names the way forward */
    reach("d1", "draft");
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, ANN, "d1", "launch", NULL, &r), 409);
    cr_assert(
        strstr(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
               "approve"),
        "%s", r.body);
    tfx_resp_free(&r);
}

Test(lifecycle, only_active_campaigns_are_candidates)
{
    char *s = ctfx_script(NULL, "hello", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "cand", s, NULL), 201);
    free(s);
    char *o = ctfx_offer(&srv, NULL, "cand");
    cr_assert_null(o, "draft");
    cr_assert_eq(ctfx_act(&srv, NULL, "cand", "launch", NULL, NULL), 200);
    o = ctfx_offer(&srv, NULL, "cand");
    cr_assert_str_eq(o ? o : "(none)", "hello");
    free(o);
    cr_assert_eq(ctfx_act(&srv, NULL, "cand", "pause", NULL, NULL), 200);
    o = ctfx_offer(&srv, NULL, "cand");
    cr_assert_null(o, "paused");
    /* explain says why */
    struct tfx_resp r;
    ctfx_req(&srv, "POST", "/api/v1/decide", NULL,
             "{\"customer_id\":\"v\",\"channel\":\"web\",\"explain\":true}", &r);
    cr_assert(strstr(r.body, "status paused"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, NULL, "cand", "launch", NULL, &r), 200);
    cr_assert(json_is_true(json_object_get(r.json, "candidate")));
    tfx_resp_free(&r);
    o = ctfx_offer(&srv, NULL, "cand");
    cr_assert_str_eq(o ? o : "(none)", "hello", "resumed");
    free(o);
    cr_assert_eq(ctfx_audit_count(&srv, NULL, "action=campaign.resume&object=campaign:cand"), 1);
    cr_assert_eq(ctfx_act(&srv, NULL, "cand", "stop", NULL, NULL), 200);
    o = ctfx_offer(&srv, NULL, "cand");
    cr_assert_null(o, "stopped");
    /* a stopped campaign can only be cloned (or deleted) */
    cr_assert_eq(ctfx_act(&srv, NULL, "cand", "launch", NULL, NULL), 409);
    cr_assert_eq(ctfx_act(&srv, NULL, "cand", "clone", "{\"id\":\"cand2\"}", NULL), 201);
}

Test(lifecycle, a_file_campaign_paused_through_the_api)
{
    tfx_write(&srv, "rules/filec.lua",
              "return { channels = { 'web' }, variants = { { id = 'A', content = { headline = 'f' "
              "} } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "filec", "version") == 1));
    char *o = ctfx_offer(&srv, NULL, "filec");
    cr_assert_str_eq(o ? o : "(none)", "f");
    free(o);
    cr_assert_eq(ctfx_act(&srv, NULL, "filec", "pause", NULL, NULL), 200);
    o = ctfx_offer(&srv, NULL, "filec");
    cr_assert_null(o);
    /* the API's status wins over later file saves */
    tfx_write(&srv, "rules/filec.lua",
              "return { channels = { 'web' }, variants = { { id = 'A', content = { headline = 'f2' "
              "} } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "filec", "version") == 2));
    char *st = ctfx_field(&srv, NULL, "filec", "status");
    cr_assert_str_eq(st, "paused");
    free(st);
    o = ctfx_offer(&srv, NULL, "filec");
    cr_assert_null(o);
    cr_assert_eq(ctfx_act(&srv, NULL, "filec", "launch", NULL, NULL), 200);
    o = ctfx_offer(&srv, NULL, "filec");
    cr_assert_str_eq(o ? o : "(none)", "f2");
    free(o);
}

Test(lifecycle, unknown_actions_and_bodies)
{
    char *s = ctfx_script(NULL, "x", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "ub", s, NULL), 201);
    free(s);
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, NULL, "ub", "launch", "{\"force\":true}", &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "force");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, NULL, "ub", "launch", "not json", &r), 400);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, NULL, "ub", "explode", NULL, &r), 404);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns/ub/launch", NULL, NULL, &r), 405);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, "If-Match: \"7\"\r\n", "ub", "launch", NULL, &r), 409);
    cr_assert_str_eq(tfx_err_code(&r), "version_conflict");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, "X-Actor: a b\r\n", "ub", "launch", NULL, &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "X-Actor");
    tfx_resp_free(&r);
    char *st = ctfx_field(&srv, NULL, "ub", "status");
    cr_assert_str_eq(st, "draft");
    free(st);
}

/* An email campaign: launch starts its send, pause/resume/stop follow it. */
static const char *send_state(const char *id)
{
    static char st[32];
    char path[200];
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/sends", id);
    struct tfx_resp r;
    ctfx_req(&srv, "GET", path, NULL, NULL, &r);
    const char *s = json_string_value(json_object_get(r.json, "state"));
    snprintf(st, sizeof st, "%s", r.status == 200 && s ? s : "none");
    tfx_resp_free(&r);
    return st;
}

static const char *send_action(const struct tfx_resp *r)
{
    const char *a = json_string_value(json_object_get(json_object_get(r->json, "send"), "action"));
    return a ? a : "none";
}

Test(lifecycle, outbound_campaigns_send_on_launch_only)
{
    const char *src =
        "return { channels = { 'email' },\n"
        "  variants = { { id = 'A', content = { subject = 'Hello', body = 'x' } } },\n"
        "  eligible = function() return true end }\n";
    cr_assert_eq(ctfx_create(&srv, NULL, "mail", src, NULL), 201);
    cr_assert_str_eq(send_state("mail"), "none", "saving sends nothing");
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, NULL, "mail", "launch", NULL, &r), 200);
    cr_assert_str_eq(send_action(&r), "start", "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_str_neq(send_state("mail"), "none");
    cr_assert_eq(ctfx_act(&srv, NULL, "mail", "pause", NULL, &r), 200);
    cr_assert_str_eq(send_action(&r), "pause", "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_str_eq(send_state("mail"), "paused");
    cr_assert_eq(ctfx_act(&srv, NULL, "mail", "launch", NULL, &r), 200);
    cr_assert_str_eq(send_action(&r), "resume", "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_str_neq(send_state("mail"), "paused");
    cr_assert_eq(ctfx_act(&srv, NULL, "mail", "stop", NULL, &r), 200);
    cr_assert_str_eq(send_action(&r), "stop", "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_str_eq(send_state("mail"), "stopped");
    /* a web campaign has nothing to send */
    char *s = ctfx_script(NULL, "w", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "webonly", s, NULL), 201);
    free(s);
    cr_assert_eq(ctfx_act(&srv, NULL, "webonly", "launch", NULL, &r), 200);
    cr_assert_null(json_object_get(r.json, "send"));
    tfx_resp_free(&r);
}
