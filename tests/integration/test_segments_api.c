/*
 * test_segments_api.c — /api/v1/segments and /api/v1/targeting/audience on
 * the real server: definitions over the API written as files, files
 * hot-reloaded with file:line errors while the previous version keeps
 * serving, bad input answered 400 with the path inside the condition,
 * sizes and overlaps, member pages and the NDJSON stream, audiences
 * (union, intersection, exclusion, conditions, holdout), deletion refused
 * while referenced, export and erasure of memberships, roles, and
 * `promod check`.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, "test_clock = true,");
    tfx_write(&srv, "segments/gold.lua", "return { name = \"Gold\", conditions = { tier = \"gold\" } }\n");
    tfx_write(&srv, "segments/fr.lua",
              "return {\n  conditions = [[ {\"country\": {\"$in\": [\"FR\", \"BE\"]}} ]],\n}\n");
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(segments_api, .init = setup, .fini = teardown, .timeout = 120);

static int req(const char *m, const char *path, const char *body, struct tfx_resp *r)
{
    return tfx_req(&srv, m, path, body, r);
}

static void put_profile(int i, const char *tier, const char *country, int ltv)
{
    char path[64], body[200];
    snprintf(path, sizeof path, "/api/v1/profiles/c%03d", i);
    snprintf(body, sizeof body, "{\"tier\":\"%s\",\"country\":\"%s\",\"ltv\":%d}", tier, country, ltv);
    struct tfx_resp r;
    int st = req("PUT", path, body, &r);
    cr_assert(st == 200 || st == 201, "%d %s", st, r.body);
    tfx_resp_free(&r);
}

static long size_of(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/segments/%s/size", id);
    struct tfx_resp r;
    cr_assert_eq(req("GET", path, NULL, &r), 200, "%s", r.body);
    long n = (long)json_integer_value(json_object_get(r.json, "size"));
    tfx_resp_free(&r);
    return n;
}

/* Wait (<= 20 s) until the segment's state is "ready". */
static void wait_ready(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/segments/%s/size", id);
    for (int i = 0; i < 2000; i++) {
        struct tfx_resp r;
        int st = req("GET", path, NULL, &r);
        int ready = st == 200 && !strcmp(json_string_value(json_object_get(r.json, "state")), "ready");
        tfx_resp_free(&r);
        if (ready)
            return;
        usleep(10000);
    }
    cr_assert_fail("segment %s never became ready", id);
}

static void expect_error(struct tfx_resp *r, int status, const char *code, const char *field)
{
    cr_assert_eq(r->status, status, "want %d %s, got %d: %s", status, code, r->status, r->body);
    cr_assert_str_eq(tfx_err_code(r), code, "%s", r->body);
    if (field)
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r->json, "error"), "field")),
                         field, "%s", r->body);
}

Test(segments_api, live_membership_sizes_and_pages)
{
    for (int i = 0; i < 30; i++)
        put_profile(i, i % 3 == 0 ? "gold" : "silver", i % 2 ? "FR" : "DE", i * 10);
    cr_assert_eq(size_of("gold"), 10);
    cr_assert_eq(size_of("fr"), 15);
    struct tfx_resp r;
    cr_assert_eq(req("GET", "/api/v1/segments/gold/size?overlap=fr", NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.json, "overlap"), "fr")), 5,
                 "%s", r.body);
    tfx_resp_free(&r);
    /* a PATCH moves a customer out at once */
    cr_assert_eq(req("PATCH", "/api/v1/profiles/c000", "{\"tier\":\"bronze\"}", &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(size_of("gold"), 9);
    /* pages of 4 cover every member once */
    char path[200] = "/api/v1/segments/fr/customers?limit=4";
    int seen = 0, pages = 0;
    for (;;) {
        cr_assert_eq(req("GET", path, NULL, &r), 200, "%s", r.body);
        seen += (int)json_array_size(json_object_get(r.json, "customers"));
        pages++;
        json_t *nc = json_object_get(r.json, "next_cursor");
        if (json_is_null(nc)) {
            tfx_resp_free(&r);
            break;
        }
        snprintf(path, sizeof path, "/api/v1/segments/fr/customers?limit=4&cursor=%s",
                 json_string_value(nc));
        tfx_resp_free(&r);
    }
    cr_assert_eq(seen, 15);
    cr_assert_eq(pages, 4);
    /* NDJSON: every member, one a line */
    cr_assert_eq(req("GET", "/api/v1/segments/fr/customers?format=ndjson", NULL, &r), 200);
    cr_assert(strstr(r.ctype, "application/x-ndjson"), "%s", r.ctype);
    int lines = 0;
    for (char *p = r.body; (p = strchr(p, '\n')); p++)
        lines++;
    cr_assert_eq(lines, 15, "%s", r.body);
    cr_assert(strstr(r.body, "{\"id\":\"c001\"}\n"), "%s", r.body);
    tfx_resp_free(&r);
    /* bad queries */
    cr_assert_eq(req("GET", "/api/v1/segments/fr/customers?cursor=.x", NULL, &r), 400);
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", "/api/v1/segments/fr/customers?format=csv", NULL, &r), 400);
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", "/api/v1/segments/nope/size", NULL, &r), 404);
    tfx_resp_free(&r);
}

Test(segments_api, ndjson_stream_of_many_members)
{
    /* more members than one chunk of the stream (4096) */
    struct buf b = BUF_INIT;
    for (int i = 0; i < 9000; i++)
        buf_printf(&b, "{\"id\":\"m%05d\",\"tier\":\"gold\"}\n", i);
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/profiles/import",
                          "Content-Type: application/x-ndjson\r\n", b.p, b.len, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    buf_free(&b);
    cr_assert_eq(size_of("gold"), 9000);
    cr_assert_eq(req("GET", "/api/v1/segments/gold/customers?format=ndjson", NULL, &r), 200);
    int lines = 0;
    for (char *p = r.body; (p = strchr(p, '\n')); p++)
        lines++;
    cr_assert_eq(lines, 9000);
    cr_assert(strstr(r.body, "{\"id\":\"m08999\"}\n"));
    tfx_resp_free(&r);
    /* clients that go away in the middle of the stream: the server ends
     * those streams (nothing leaks: the ASan build's exit status says so)
     * and goes on serving */
    for (int k = 0; k < 3; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        const char *get = "GET /api/v1/segments/gold/customers?format=ndjson HTTP/1.1\r\nHost: x\r\n\r\n";
        cr_assert_eq(write(fd, get, strlen(get)), (ssize_t)strlen(get));
        char buf[512];
        cr_assert_gt(read(fd, buf, sizeof buf), 0);
        close(fd);
    }
    cr_assert_eq(size_of("gold"), 9000);
    double open = -1;
    for (int i = 0; i < 1000 && open != 0; i++) { /* each stream's watch looks once a second */
        struct tfx_resp m;
        cr_assert_eq(req("GET", "/metrics", NULL, &m), 200);
        cr_assert(tfx_metric(m.body, "promod_http_streams_open", "", &open), "%s", m.body);
        tfx_resp_free(&m);
        if (open != 0)
            usleep(20000);
    }
    cr_assert_eq(open, 0, "streams of departed clients are still open");
    cr_assert_eq(tfx_server_stop(&srv), 0, "the server's exit status (ASan: leaks)");
}

Test(segments_api, definitions_over_the_api_are_files)
{
    struct tfx_resp r;
    cr_assert_eq(req("POST", "/api/v1/segments",
                     "{\"id\":\"gold_fr\",\"name\":\"Gold in France\","
                     "\"conditions\":{\"$segment\":\"gold\",\"$and\":[{\"$segment\":\"fr\"}]}}", &r),
                 201, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "kind")), "conditions");
    tfx_resp_free(&r);
    char path[400];
    snprintf(path, sizeof path, "%s/gold_fr.lua", srv.segments);
    cr_assert_eq(access(path, R_OK), 0, "the API writes segments/gold_fr.lua");
    cr_assert_eq(req("POST", "/api/v1/segments", "{\"id\":\"gold_fr\",\"conditions\":{}}", &r), 409);
    tfx_resp_free(&r);
    /* a Lua predicate */
    cr_assert_eq(req("PUT", "/api/v1/segments/rich",
                     "{\"match\":\"function(p) return (p.ltv or 0) >= 200 end\"}", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    for (int i = 0; i < 10; i++)
        put_profile(i, "gold", i < 4 ? "FR" : "US", i * 50);
    wait_ready("gold_fr");
    wait_ready("rich");
    cr_assert_eq(size_of("gold_fr"), 4);
    cr_assert_eq(size_of("rich"), 6);
    cr_assert_eq(req("GET", "/api/v1/segments/gold_fr", NULL, &r), 200);
    cr_assert(json_is_array(json_object_get(r.json, "depends_on")));
    cr_assert_eq(json_array_size(json_object_get(r.json, "depends_on")), 2, "%s", r.body);
    tfx_resp_free(&r);
    /* deleting a referenced segment is refused; the referencing one first */
    cr_assert_eq(req("DELETE", "/api/v1/segments/gold", NULL, &r), 409);
    expect_error(&r, 409, "in_use", "id");
    tfx_resp_free(&r);
    cr_assert_eq(req("DELETE", "/api/v1/segments/gold_fr", NULL, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_neq(access(path, R_OK), 0);
    cr_assert_eq(req("GET", "/api/v1/segments/gold_fr", NULL, &r), 404);
    tfx_resp_free(&r);
    cr_assert_eq(req("DELETE", "/api/v1/segments/gold", NULL, &r), 200);
    tfx_resp_free(&r);
}

Test(segments_api, bad_input_names_the_path)
{
    struct tfx_resp r;
    req("POST", "/api/v1/segments",
        "{\"id\":\"bad\",\"conditions\":{\"$and\":[{\"a\":1},{\"b\":2},{\"age\":{\"$gt\":[1]}}]}}", &r);
    expect_error(&r, 400, "invalid_condition", "$.and[2].age.$gt");
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"bad\",\"conditions\":{\"name\":{\"$regx\":\"a\"}}}", &r);
    expect_error(&r, 400, "invalid_condition", "$.name.$regx");
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"bad\",\"conditions\":{\"email\":{\"$regex\":\"a**\"}}}", &r);
    expect_error(&r, 400, "invalid_condition", "$.email.$regex");
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"bad\",\"conditions\":{\"$segment\":\"silver\"}}", &r);
    expect_error(&r, 400, "invalid_condition", "$.segment");
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"bad\",\"match\":\"function(p) return p.x >= 1 \"}", &r);
    expect_error(&r, 400, "invalid_script", "match");
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"bad\",\"conditions\":{},\"match\":\"function(p) end\"}", &r);
    expect_error(&r, 400, "invalid_field", NULL);
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"bad\",\"conditions\":{},\"color\":1}", &r);
    expect_error(&r, 400, "invalid_field", "color");
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "{\"id\":\"../x\",\"conditions\":{}}", &r);
    expect_error(&r, 400, "invalid_id", "id");
    tfx_resp_free(&r);
    req("PUT", "/api/v1/segments/gold", "{\"conditions\":{\"$segment\":\"gold\"}}", &r);
    expect_error(&r, 400, "invalid_condition", NULL);
    cr_assert(strstr(r.body, "cycle"), "%s", r.body);
    tfx_resp_free(&r);
    req("POST", "/api/v1/segments", "[1]", &r);
    expect_error(&r, 400, "invalid_body", NULL);
    tfx_resp_free(&r);
    /* nothing was written for any of them; gold still serves */
    put_profile(1, "gold", "FR", 5);
    cr_assert_eq(size_of("gold"), 1);
    cr_assert_eq(req("GET", "/api/v1/segments", NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "segments")), 2, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "errors")), 0, "%s", r.body);
    tfx_resp_free(&r);
}

Test(segments_api, broken_file_keeps_the_previous_version)
{
    put_profile(1, "gold", "FR", 5);
    put_profile(2, "silver", "DE", 5);
    tfx_write(&srv, "segments/gold.lua",
              "return {\n  name = \"Gold\",\n  conditions = {\n    tier = { [\"$in\"] = \"gold\" },\n  },\n}\n");
    /* the error appears with file:line; the old definition keeps counting */
    struct tfx_resp r;
    char *err = NULL;
    for (int i = 0; i < 500 && !err; i++) {
        cr_assert_eq(req("GET", "/api/v1/segments", NULL, &r), 200);
        json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
        if (e)
            err = strdup(json_string_value(json_object_get(e, "error")));
        tfx_resp_free(&r);
        if (!err)
            usleep(10000);
    }
    cr_assert(err, "the broken file was never reported");
    cr_assert(strstr(err, "segments/gold.lua:4: conditions: $.tier.$in:"), "%s", err);
    free(err);
    put_profile(3, "gold", "DE", 5);
    cr_assert_eq(size_of("gold"), 2);
    cr_assert_eq(req("GET", "/api/v1/segments/gold", NULL, &r), 200);
    cr_assert(json_object_get(r.json, "file_error"), "%s", r.body);
    tfx_resp_free(&r);
    /* promod check agrees, with the exit status */
    char *out = NULL;
    int st = tfx_promod(&out, "check", "-c", srv.config, srv.segments, (char *)NULL);
    cr_assert_eq(st, 1, "%s", out);
    cr_assert(strstr(out, "gold.lua:4: conditions: $.tier.$in:"), "%s", out);
    free(out);
}

Test(segments_api, audiences)
{
    for (int i = 0; i < 40; i++)
        put_profile(i, i % 2 ? "gold" : "silver", i % 4 < 2 ? "FR" : "DE", i * 10);
    struct tfx_resp r;
    /* union minus exclusion */
    cr_assert_eq(req("POST", "/api/v1/targeting/audience",
                     "{\"any\":[\"gold\",\"fr\"],\"exclude\":[\"fr\"],\"sample\":5}", &r), 201, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), 10, "%s", r.body); /* gold in DE */
    cr_assert_eq(json_array_size(json_object_get(r.json, "sample")), 5);
    const char *aid = json_string_value(json_object_get(r.json, "id"));
    cr_assert(aid && !strncmp(aid, "aud-", 4));
    char path[200];
    snprintf(path, sizeof path, "/api/v1/targeting/audience/%s", aid);
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", path, NULL, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), 10);
    tfx_resp_free(&r);
    /* intersection and conditions */
    cr_assert_eq(req("POST", "/api/v1/targeting/audience",
                     "{\"all\":[\"gold\",\"fr\"],\"conditions\":{\"ltv\":{\"$gte\":200}}}", &r), 201);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), 5, "%s", r.body);
    tfx_resp_free(&r);
    /* conditions alone scan every customer */
    cr_assert_eq(req("POST", "/api/v1/targeting/audience", "{\"conditions\":{\"ltv\":{\"$lt\":100}}}", &r),
                 201);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), 10, "%s", r.body);
    tfx_resp_free(&r);
    /* a holdout: count + held out = matched, and stable */
    cr_assert_eq(req("POST", "/api/v1/targeting/audience", "{\"any\":[\"gold\"],\"holdout\":0.3}", &r), 201);
    json_int_t c = json_integer_value(json_object_get(r.json, "count"));
    json_int_t h = json_integer_value(json_object_get(r.json, "held_out"));
    cr_assert_eq(c + h, 20, "%s", r.body);
    cr_assert(h > 0 && c > 0, "%s", r.body);
    snprintf(path, sizeof path, "/api/v1/targeting/audience/%s",
             json_string_value(json_object_get(r.json, "id")));
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", path, NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "count")), c);
    tfx_resp_free(&r);
    /* bad input */
    req("POST", "/api/v1/targeting/audience", "{\"any\":[\"nope\"]}", &r);
    expect_error(&r, 400, "unknown_segment", "any[0]");
    tfx_resp_free(&r);
    req("POST", "/api/v1/targeting/audience", "{\"holdout\":1.5}", &r);
    expect_error(&r, 400, "invalid_field", "holdout");
    tfx_resp_free(&r);
    req("POST", "/api/v1/targeting/audience", "{\"conditions\":{\"a\":{\"$bad\":1}}}", &r);
    expect_error(&r, 400, "invalid_condition", "$.a.$bad");
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", "/api/v1/targeting/audience/aud-000000000000", NULL, &r), 404);
    tfx_resp_free(&r);
}

Test(segments_api, export_and_erase_include_memberships)
{
    put_profile(7, "gold", "FR", 1);
    struct tfx_resp r;
    cr_assert_eq(req("GET", "/api/v1/profiles/c007/export", NULL, &r), 200);
    json_t *s = json_object_get(r.json, "segments");
    cr_assert_eq(json_array_size(s), 2, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(req("DELETE", "/api/v1/profiles/c007", NULL, &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(size_of("gold"), 0);
    cr_assert_eq(size_of("fr"), 0);
    cr_assert_eq(req("GET", "/api/v1/segments/gold/customers", NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "customers")), 0);
    tfx_resp_free(&r);
    cr_assert_eq(req("GET", "/api/v1/profiles/c007/export", NULL, &r), 404);
    tfx_resp_free(&r);
}

Test(segments_api, events_move_customers)
{
    tfx_write(&srv, "segments/clickers.lua",
              "return { conditions = { [\"stats.click\"] = { [\"$gte\"] = 2 } } }\n");
    wait_ready("clickers");
    const char *ev = "[{\"type\":\"click\",\"customer_id\":\"z1\",\"campaign_id\":\"k\"},"
                     "{\"type\":\"click\",\"customer_id\":\"z1\",\"campaign_id\":\"k\"},"
                     "{\"type\":\"click\",\"customer_id\":\"z2\",\"campaign_id\":\"k\"}]";
    struct tfx_resp r;
    cr_assert_eq(req("POST", "/api/v1/events", ev, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(size_of("clickers"), 1);
    cr_assert_eq(req("GET", "/api/v1/segments/clickers/customers", NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r.json, "customers"), 0)), "z1");
    tfx_resp_free(&r);
}

Test(segments_api, predicates_get_p_read_only)
{
    /* a predicate that tries to change p is refused, and the next
     * predicate of the same evaluation sees p as stored */
    tfx_write(&srv, "segments/p_writer.lua",
              "return { match = function(p)\n"
              "  local t = {}\n"
              "  t.ok = pcall(function() p.tier = 'changed' end)\n"
              "  return not t.ok\n"
              "end }\n");
    tfx_write(&srv, "segments/p_reader.lua",
              "return { match = function(p) return p.tier == 'gold' end }\n");
    wait_ready("p_writer");
    wait_ready("p_reader");
    put_profile(1, "gold", "FR", 5);
    put_profile(2, "silver", "FR", 5);
    cr_assert_eq(size_of("p_writer"), 2, "a predicate could write p");
    cr_assert_eq(size_of("p_reader"), 1);
    struct tfx_resp r;
    cr_assert_eq(req("GET", "/api/v1/profiles/c001/export", NULL, &r), 200);
    cr_assert(strstr(r.body, "\"p_reader\""), "%s", r.body);
    tfx_resp_free(&r);
}
