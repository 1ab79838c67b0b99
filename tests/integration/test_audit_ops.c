/* test_audit_ops.c — the audit entries of profile writes, consent
 * changes, bulk imports, outbox redrives, test-clock changes and event
 * compactions: exactly one entry per action with who/when/what, names of
 * the changed fields but never their values, found by the audit filters;
 * a refused request records nothing; a customer's entries are in the
 * export and are pseudonymised by the erasure. */
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

TestSuite(audit_ops, .init = setup, .fini = teardown, .timeout = 60);

/* The one entry matching `query` (asserts there is exactly one); the
 * response stays in *r for the caller to free. */
static json_t *only(const char *query, struct tfx_resp *r)
{
    char path[600];
    snprintf(path, sizeof path, "/api/v1/audit?%s", query);
    cr_assert_eq(ctfx_req(&srv, "GET", path, ANN, NULL, r), 200, "%s: %s", path, r->body);
    json_t *es = json_object_get(r->json, "entries");
    cr_assert_eq(json_array_size(es), 1, "%s: %s", query, r->body);
    json_t *e = json_array_get(es, 0);
    cr_assert(json_integer_value(json_object_get(e, "ts")) > 0, "when");
    cr_assert_eq(json_string_length(json_object_get(e, "at")), 20, "ISO time");
    return e;
}

static int has_field(const json_t *e, const char *name)
{
    json_t *f = json_object_get(json_object_get(e, "after"), "fields");
    size_t i;
    json_t *v;
    json_array_foreach (f, i, v)
        if (!strcmp(json_string_value(v), name))
            return 1;
    return 0;
}

static int st(const char *method, const char *path, const char *hdrs, const char *body)
{
    struct tfx_resp r;
    int s = ctfx_req(&srv, method, path, hdrs, body, &r);
    tfx_resp_free(&r);
    return s;
}

static int import(const char *hdrs, const char *ndjson)
{
    char h[300];
    snprintf(h, sizeof h, "Content-Type: application/x-ndjson\r\n%s", hdrs);
    struct tfx_resp r;
    int s = tfx_http(&srv, "POST", "/api/v1/profiles/import", h, ndjson, strlen(ndjson), &r);
    tfx_resp_free(&r);
    return s;
}

Test(audit_ops, profile_writes_and_consent_record_field_names_not_values)
{
    struct tfx_resp r;
    cr_assert_eq(st("PUT", "/api/v1/profiles/cust-1", ANN,
                    "{\"name\":\"Ann Secret\",\"email\":\"secret@example.com\",\"tier\":\"gold\"}"),
                 201);
    json_t *e = only("action=profile.put&object=profile:cust-1", &r);
    cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "ann");
    json_t *a = json_object_get(e, "after");
    cr_assert_str_eq(json_string_value(json_object_get(a, "op")), "put");
    cr_assert(json_is_true(json_object_get(a, "created")));
    cr_assert_eq(json_array_size(json_object_get(a, "fields")), 3);
    cr_assert(has_field(e, "name") && has_field(e, "email") && has_field(e, "tier"));
    tfx_resp_free(&r);

    /* a PATCH names only what it changed; an unchanged value is not a change */
    cr_assert_eq(st("PATCH", "/api/v1/profiles/cust-1", BOB, "{\"tier\":\"silver\",\"name\":\"Ann Secret\"}"),
                 200);
    e = only("action=profile.patch", &r);
    cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "bob");
    cr_assert_str_eq(json_string_value(json_object_get(e, "object")), "profile:cust-1");
    a = json_object_get(e, "after");
    cr_assert(json_is_false(json_object_get(a, "created")));
    cr_assert_eq(json_array_size(json_object_get(a, "fields")), 1, "%s", r.body);
    cr_assert(has_field(e, "tier"));
    tfx_resp_free(&r);

    /* consent: a withdrawal by PATCH, an opt-out by PUT (which also drops fields) */
    cr_assert_eq(st("PATCH", "/api/v1/profiles/cust-1", ANN, "{\"consent\":{\"email\":false}}"), 200);
    cr_assert_eq(st("PUT", "/api/v1/profiles/cust-1", BOB,
                    "{\"name\":\"Ann Secret\",\"consent\":{\"email\":false},\"opt_out\":true}"),
                 200);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=consent.change"), 2);
    e = only("action=consent.change&actor=ann", &r);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "after"), "op")), "patch");
    cr_assert(has_field(e, "consent"));
    cr_assert_eq(json_array_size(json_object_get(json_object_get(e, "after"), "fields")), 1);
    tfx_resp_free(&r);
    e = only("action=consent.change&actor=bob", &r);
    cr_assert(has_field(e, "opt_out"), "%s", r.body);
    cr_assert(has_field(e, "email") && has_field(e, "tier"), "removed fields are changes: %s", r.body);
    cr_assert(!has_field(e, "name") && !has_field(e, "consent"), "unchanged: %s", r.body);
    tfx_resp_free(&r);

    /* the filters: by object, actor, action prefix, time */
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:cust-1"), 4);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:*"), 4);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=profile.*"), 2);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "actor=bob&object=profile:cust-1"), 2);
    cr_assert_eq(st("POST", "/api/v1/admin/clock", BOB, "{\"now\": 1900000000}"), 200);
    cr_assert_eq(st("PATCH", "/api/v1/profiles/cust-1", ANN, "{\"tier\":\"gold\"}"), 200);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "since=1900000000&object=profile:cust-1"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "until=1899999999&object=profile:cust-1"), 4);

    /* never a value */
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/audit?limit=1000", ANN, NULL, &r), 200);
    cr_assert(!strstr(r.body, "secret@example.com") && !strstr(r.body, "Ann Secret") &&
                  !strstr(r.body, "silver"),
              "no profile values in the audit log: %s", r.body);
    tfx_resp_free(&r);
}

Test(audit_ops, import_is_one_entry_with_counts)
{
    cr_assert_eq(import(ANN, "{\"id\":\"i1\",\"email\":\"a@example.com\"}\n"
                             "{\"id\":\"i2\",\"email\":\"b@example.com\"}\n"
                             "{\"email\":\"no id\"}\n"),
                 200);
    struct tfx_resp r;
    json_t *e = only("action=profile.import", &r);
    cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "ann");
    cr_assert_str_eq(json_string_value(json_object_get(e, "object")), "profiles");
    json_t *a = json_object_get(e, "after");
    cr_assert_eq(json_integer_value(json_object_get(a, "imported")), 2);
    cr_assert_eq(json_integer_value(json_object_get(a, "failed")), 1);
    cr_assert(json_is_true(json_object_get(a, "complete")));
    cr_assert(!strstr(r.body, "i1") && !strstr(r.body, "example.com"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:*"), 0, "not one entry per profile");
}

Test(audit_ops, redrive_clock_and_compaction_are_recorded)
{
    struct tfx_resp r;
    /* redrive (the real one with a dead letter is in test_outbox) */
    cr_assert_eq(st("POST", "/api/v1/outbox/dead/redrive", BOB, "{\"ids\":[424242]}"), 200);
    json_t *e = only("action=outbox.redrive", &r);
    cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "bob");
    json_t *a = json_object_get(e, "after");
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(a, "ids"), 0)), 424242);
    cr_assert_eq(json_integer_value(json_object_get(a, "redriven")), 0);
    tfx_resp_free(&r);
    cr_assert_eq(st("POST", "/api/v1/outbox/dead/redrive", BOB, "{\"all\":true,\"channel\":\"webhook\"}"),
                 200);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=outbox.*&actor=bob"), 2);

    /* test clock: before and after */
    cr_assert_eq(st("POST", "/api/v1/admin/clock", BOB, "{\"offset\": 7200, \"freeze\": true}"), 200);
    e = only("action=clock.set", &r);
    cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "bob");
    cr_assert_str_eq(json_string_value(json_object_get(e, "object")), "clock");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(e, "before"), "offset")), 0);
    cr_assert(json_is_false(json_object_get(json_object_get(e, "before"), "frozen")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(e, "after"), "offset")), 7200);
    cr_assert(json_is_true(json_object_get(json_object_get(e, "after"), "frozen")));
    tfx_resp_free(&r);
    cr_assert_eq(st("GET", "/api/v1/admin/clock", BOB, NULL), 200);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=clock.*"), 1, "reading the clock is no change");

    /* event compaction: the cutoff and the count */
    cr_assert_eq(st("POST", "/api/v1/admin/compact", BOB, "{\"before\": \"2020-01-01T00:00:00Z\"}"), 200);
    e = only("action=events.compact", &r);
    cr_assert_str_eq(json_string_value(json_object_get(e, "actor")), "bob");
    a = json_object_get(e, "after");
    cr_assert_str_eq(json_string_value(json_object_get(a, "cutoff")), "2020-01-01T00:00:00Z");
    cr_assert(json_is_integer(json_object_get(a, "deleted_events")));
    tfx_resp_free(&r);
}

Test(audit_ops, refused_requests_record_nothing)
{
    static const struct {
        const char *method, *path, *hdrs, *body;
        int status;
    } bad[] = {
        { "PUT", "/api/v1/profiles/c1", ANN, "{not json", 400 },
        { "PUT", "/api/v1/profiles/c1", ANN, "[1,2]", 400 },
        { "PUT", "/api/v1/profiles/c1", ANN, "{\"stats\":{}}", 422 },
        { "PUT", "/api/v1/profiles/c1", ANN, "{\"id\":\"other\"}", 422 },
        { "PATCH", "/api/v1/profiles/.hidden", ANN, "{\"a\":1}", 400 },
        { "PATCH", "/api/v1/profiles/c1", SITE, "{\"consent\":{\"email\":true}}", 403 },
        { "PATCH", "/api/v1/profiles/c1", NULL, "{\"consent\":{\"email\":true}}", 401 },
        { "POST", "/api/v1/admin/clock", BOB, "{\"offset\":\"soon\"}", 400 },
        { "POST", "/api/v1/admin/clock", BOB, "{\"offset\":5,\"freeze\":1}", 400 },
        { "POST", "/api/v1/admin/clock", ANN, "{\"offset\":5}", 403 },
        { "POST", "/api/v1/admin/compact", BOB, "{\"before\":\"yesterday\"}", 400 },
        { "POST", "/api/v1/admin/compact", BOB, "{\"before\":4102444800}", 422 },
        { "POST", "/api/v1/admin/compact", BOB, "{\"drop\":1}", 400 },
        { "POST", "/api/v1/outbox/dead/redrive", BOB, "{}", 422 },
        { "POST", "/api/v1/outbox/dead/redrive", BOB, "{\"ids\":[-1]}", 422 },
        { "POST", "/api/v1/outbox/dead/redrive", ANN, "{\"all\":true}", 403 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(st(bad[i].method, bad[i].path, bad[i].hdrs, bad[i].body), bad[i].status, "%s %s %s",
                     bad[i].method, bad[i].path, bad[i].body);
    cr_assert_eq(import(ANN, ""), 400);
    cr_assert_eq(import(ANN, "{\"email\":\"no id\"}\nnot json\n"), 200); /* stored nothing */
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "limit=1000"), 0, "no entry for a refused request");
    cr_assert_eq(st("GET", "/api/v1/profiles/c1", ANN, NULL), 404, "and nothing was written");
}

Test(audit_ops, export_lists_and_erasure_pseudonymises_the_customer_entries)
{
    cr_assert_eq(st("PUT", "/api/v1/profiles/cust-p", ANN, "{\"name\":\"P\"}"), 201);
    cr_assert_eq(st("PATCH", "/api/v1/profiles/cust-p", BOB, "{\"consent\":{\"sms\":false}}"), 200);
    cr_assert_eq(st("PUT", "/api/v1/profiles/cust-q", ANN, "{\"name\":\"Q\"}"), 201);
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/profiles/cust-p/export", ANN, NULL, &r), 200);
    json_t *au = json_object_get(r.json, "audit");
    cr_assert_eq(json_array_size(au), 2, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(au, 0), "action")), "profile.put");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(au, 1), "action")), "consent.change");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(au, 1), "actor")), "bob");
    tfx_resp_free(&r);

    cr_assert_eq(st("DELETE", "/api/v1/profiles/cust-p", ANN, NULL), 200);
    /* the entries stay (who did what, when) but no longer name the customer */
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:.erased"), 2);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "action=consent.change&object=profile:.erased&actor=bob"), 1);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:cust-p&action=profile.put"), 0);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:cust-p&action=consent.*"), 0);
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:cust-p"), 1, "only the erasure itself");
    cr_assert_eq(st("GET", "/api/v1/profiles/cust-p/export", ANN, NULL), 404);
    /* another customer's entries are untouched */
    cr_assert_eq(ctfx_audit_count(&srv, ANN, "object=profile:cust-q"), 1);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/profiles/cust-q/export", ANN, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "audit")), 1);
    tfx_resp_free(&r);
    /* a new profile under the same id starts a fresh history */
    cr_assert_eq(st("PUT", "/api/v1/profiles/cust-p", ANN, "{\"name\":\"P2\"}"), 201);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/profiles/cust-p/export", ANN, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "audit")), 1, "%s", r.body);
    tfx_resp_free(&r);
}
