/* test_reqerr.c — the contract's error object as services fill a struct
 * reqerr and http_reply_reqerr renders it: "code", "message" and "field"
 * always present ("field" null when no field is at fault), a service's
 * extra members beside them and nothing else, the same in JSON and msgpack.
 * Errors are provoked through the real server: campaigns (extra members),
 * analytics (a field set by the service), profiles (no field). */
#include "campaigns_tfx.h"
#include "codec/codec.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(reqerr, .init = setup, .fini = teardown, .timeout = 60);

/* The error object of `r`, checked to hold exactly `members` (NULL-ended):
 * "code" and "message" non-empty strings, "field" the string `field` or
 * null when `field` is NULL. */
static json_t *error_of(const struct tfx_resp *r, const char *field, const char *const *members)
{
    json_t *e = json_object_get(r->json, "error");
    cr_assert(json_is_object(e), "no error object: %s", r->body);
    cr_assert_eq(json_object_size(r->json), 1, "only \"error\" at the top: %s", r->body);
    size_t want = 0;
    for (; members[want]; want++)
        cr_assert_not_null(json_object_get(e, members[want]), "missing \"%s\": %s",
                           members[want], r->body);
    cr_assert_eq(json_object_size(e), want, "exactly %zu members: %s", want, r->body);
    cr_assert(json_string_length(json_object_get(e, "code")) > 0, "%s", r->body);
    cr_assert(json_string_length(json_object_get(e, "message")) > 0, "%s", r->body);
    json_t *f = json_object_get(e, "field");
    if (field)
        cr_assert_str_eq(json_string_value(f), field, "%s", r->body);
    else
        cr_assert(json_is_null(f), "field must be null: %s", r->body);
    return e;
}

Test(reqerr, extra_members_sit_beside_code_message_and_field)
{
    char *s = ctfx_script(NULL, "shape", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "shape", s, NULL), 201);
    free(s);
    /* an illegal transition: field "status", extras "current" and "allowed" */
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, NULL, "shape", "pause", NULL, &r), 409, "%s", r.body);
    static const char *const illegal[] = { "code", "message", "field", "current", "allowed",
                                           NULL };
    json_t *e = error_of(&r, "status", illegal);
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "illegal_transition");
    cr_assert_str_eq(json_string_value(json_object_get(e, "current")), "draft");
    json_t *allowed = json_object_get(e, "allowed");
    cr_assert(json_is_array(allowed) && json_array_size(allowed) > 0, "%s", r.body);
    int pause_listed = 0;
    size_t i;
    json_t *x;
    json_array_foreach (allowed, i, x) {
        cr_assert(json_is_string(x), "%s", r.body);
        pause_listed |= !strcmp(json_string_value(x), "pause");
    }
    cr_assert(!pause_listed, "the refused action is not allowed: %s", r.body);
    json_t *as_json = json_incref(r.json);
    tfx_resp_free(&r);

    /* the same refusal in msgpack decodes to the same object */
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/campaigns/shape/pause",
                          "Accept: application/msgpack\r\n", NULL, 0, &r),
                 409);
    cr_assert(strstr(r.ctype, "msgpack"), "%s", r.ctype);
    int err = 0;
    json_t *mp = codec_msgpack_to_json(r.body, r.len, &err);
    cr_assert_not_null(mp, "msgpack reply does not decode (%d)", err);
    cr_assert(json_equal(mp, as_json), "msgpack and JSON replies differ");
    json_decref(mp);
    json_decref(as_json);
    tfx_resp_free(&r);

    /* a stale If-Match: field "If-Match", extra "current_rev" (an integer) */
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/shape", "If-Match: \"9\"\r\n",
                          "{\"name\":\"n\"}", &r),
                 409, "%s", r.body);
    static const char *const stale[] = { "code", "message", "field", "current_rev", NULL };
    e = error_of(&r, "If-Match", stale);
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "version_conflict");
    cr_assert_eq(json_integer_value(json_object_get(e, "current_rev")), 1, "%s", r.body);
    tfx_resp_free(&r);

    /* a script that does not validate: field "script", "errors" led by the message */
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/shape", NULL,
                          "{\"script\":\"return {\"}", &r),
                 422, "%s", r.body);
    static const char *const invalid[] = { "code", "message", "field", "errors", NULL };
    e = error_of(&r, "script", invalid);
    json_t *errs = json_object_get(e, "errors");
    cr_assert(json_array_size(errs) >= 1, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_array_get(errs, 0)),
                     json_string_value(json_object_get(e, "message")));
    tfx_resp_free(&r);
}

Test(reqerr, field_is_the_services_or_null)
{
    static const char *const plain[] = { "code", "message", "field", NULL };
    struct tfx_resp r;
    /* analytics names the field it refuses */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/analytics/campaigns/never-seen", NULL, &r), 404,
                 "%s", r.body);
    json_t *e = error_of(&r, "id", plain);
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "not_found");
    cr_assert(strstr(json_string_value(json_object_get(e, "message")), "never-seen"), "%s",
              r.body);
    tfx_resp_free(&r);
    /* a store answer with no field at fault: "field" is there, null */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/nobody", NULL, &r), 404, "%s", r.body);
    e = error_of(&r, NULL, plain);
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "not_found");
    tfx_resp_free(&r);
}
