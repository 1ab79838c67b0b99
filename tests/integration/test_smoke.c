/* test_smoke.c — the server starts, answers, decides and stops cleanly. */
#include <criterion/criterion.h>
#include <string.h>
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "rules/hello.lua",
              "return { id = 'hello', channels = { 'web' }, priority = 5,\n"
              "  variants = { { id = 'A', content = { headline = 'Hi {{first_name|you}}' } } },\n"
              "  eligible = function(p, ctx) return true end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(smoke, .init = setup, .fini = teardown, .timeout = 60);

Test(smoke, healthz_and_decide)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "ok");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/u1", "{\"first_name\":\"<Bo>\"}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                         "{\"customer_id\":\"u1\",\"channel\":\"web\"}", &r), 200);
    json_t *offers = json_object_get(r.json, "offers");
    cr_assert_eq(json_array_size(offers), 1);
    json_t *c = json_object_get(json_array_get(offers, 0), "content");
    cr_assert_str_eq(json_string_value(json_object_get(c, "headline")), "Hi &lt;Bo&gt;");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_server_stop(&srv), 0, "clean exit on SIGTERM");
}
