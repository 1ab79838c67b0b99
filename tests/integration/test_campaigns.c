/* test_campaigns.c — the campaign API: create/read/list/update/delete, the
 * script file under rules/, a file and the API editing one campaign,
 * hostile input refused with nothing written, racing updates. */
#include <pthread.h>
#include "campaigns_tfx.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(campaigns, .init = setup, .fini = teardown, .timeout = 60);

Test(campaigns, create_writes_the_file_and_reads_back)
{
    char *src = ctfx_script(NULL, "Spring!", "priority = 7,");
    cr_assert_eq(
        ctfx_create(&srv, NULL, "spring", src,
                    "\"name\":\"Spring sale\",\"owner\":\"ann\",\"description\":\"banner\","
                    "\"tags\":[\"seasonal\",\"web\"],\"cost\":{\"per_impression\":0.002}"),
        201);
    /* the file is exactly the script, where the marketer's git sees it */
    char *disk = ctfx_read(&srv, "rules/spring.lua");
    cr_assert_not_null(disk);
    cr_assert_str_eq(disk, src);
    free(disk);
    struct tfx_resp r;
    cr_assert_eq(ctfx_get(&srv, NULL, "spring", &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "draft");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "origin")), "api");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "name")), "Spring sale");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "owner")), "ann");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "script")), src);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "version")), 1);
    cr_assert_eq(json_array_size(json_object_get(r.json, "tags")), 2);
    cr_assert_float_eq(
        json_number_value(json_object_get(json_object_get(r.json, "cost"), "per_impression")),
        0.002, 1e-9);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r.json, "channels"), 0)),
                     "web");
    cr_assert(strstr(r.headers, "ETag: \"1\"") != NULL, "ETag of rev 1: %s", r.headers);
    /* a draft is not a candidate */
    cr_assert(json_is_false(json_object_get(r.json, "candidate")));
    tfx_resp_free(&r);
    char *offer = ctfx_offer(&srv, NULL, "spring");
    cr_assert_null(offer, "a draft must not be offered");
    free(src);
}

Test(campaigns, list_filters_and_pages)
{
    char *a = ctfx_script(NULL, "a", NULL);
    char *b = ctfx_script(NULL, "b", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "alpha", a, "\"name\":\"Alpha Winter\",\"tags\":[\"x\"]"),
                 201);
    cr_assert_eq(ctfx_create(&srv, NULL, "beta", b, "\"name\":\"Beta Summer\",\"owner\":\"bo\""),
                 201);
    tfx_write(&srv, "rules/gamma.lua",
              "return { name = 'Gamma winter', channels = { 'app' },\n"
              "  variants = { { id = 'A', content = { headline = 'g' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "gamma", "version") == 1));
    cr_assert_eq(ctfx_act(&srv, NULL, "beta", "launch", NULL, NULL), 200);
    struct tfx_resp r;
    struct {
        const char *q;
        const char *ids;
    } cases[] = {
        { "", "alpha,beta,gamma" },
        { "status=draft", "alpha" },
        { "status=active", "beta,gamma" },
        { "channel=app", "gamma" },
        { "channel=web", "alpha,beta" },
        { "q=WINTER", "alpha,gamma" },
        { "owner=bo", "beta" },
        { "tag=x", "alpha" },
        { "status=archived", "" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char path[200], got[200] = "";
        snprintf(path, sizeof path, "/api/v1/campaigns?%s", cases[c].q);
        cr_assert_eq(ctfx_req(&srv, "GET", path, NULL, NULL, &r), 200, "%s", path);
        size_t i;
        json_t *v;
        json_array_foreach (json_object_get(r.json, "campaigns"), i, v) {
            if (*got)
                strcat(got, ",");
            strcat(got, json_string_value(json_object_get(v, "id")));
            cr_assert_null(json_object_get(v, "script"), "lists carry no script");
        }
        cr_assert_str_eq(got, cases[c].ids, "%s", path);
        tfx_resp_free(&r);
    }
    /* paging: limit 2 then the cursor */
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns?limit=2", NULL, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "campaigns")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "next_cursor")), "beta");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns?limit=2&cursor=beta", NULL, NULL, &r),
                 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "campaigns")), 1);
    cr_assert(json_is_null(json_object_get(r.json, "next_cursor")));
    tfx_resp_free(&r);
    /* bad filters name the parameter */
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns?status=running", NULL, NULL, &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "status");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns?limit=0", NULL, NULL, &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "limit");
    tfx_resp_free(&r);
    free(a);
    free(b);
}

Test(campaigns, file_campaign_shows_in_the_api)
{
    tfx_write(&srv, "rules/promo/summer.lua",
              "return { name = 'Summer', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'sun' } } },\n"
              "  eligible = function() return true end }\n");
    tfx_write(&srv, "rules/later.lua",
              "return { status = 'draft', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'later' } } },\n"
              "  eligible = function() return true end }\n");
    /* the id of rules/promo/summer.lua is promo.summer; a plain save is the launch */
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "promo.summer", "version") == 1));
    char *st = ctfx_field(&srv, NULL, "promo.summer", "status");
    cr_assert_str_eq(st, "active");
    free(st);
    char *origin = ctfx_field(&srv, NULL, "promo.summer", "origin");
    cr_assert_str_eq(origin, "file");
    free(origin);
    char *file = ctfx_field(&srv, NULL, "promo.summer", "file");
    cr_assert_str_eq(file, "promo/summer.lua");
    free(file);
    char *offer = ctfx_offer(&srv, NULL, "promo.summer");
    cr_assert_str_eq(offer ? offer : "(none)", "sun");
    free(offer);
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "later", "version") == 1));
    st = ctfx_field(&srv, NULL, "later", "status");
    cr_assert_str_eq(st, "draft", "status = \"draft\" in the file starts it as a draft");
    free(st);
    /* the file's creation is audited with actor "file" */
    cr_assert_eq(ctfx_audit_count(&srv, NULL,
                                  "action=campaign.create&object=campaign:promo.summer&actor=file"),
                 1);
}

Test(campaigns, a_file_and_the_api_edit_the_same_campaign)
{
    tfx_write(&srv, "rules/shared.lua",
              "return { channels = { 'web' }, variants = { { id = 'A', content = { headline = 'v1' "
              "} } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "shared", "version") == 1));
    /* the API edits it: the file changes, version 2 by the API's actor */
    char *v2 = ctfx_script(NULL, "v2", NULL);
    cr_assert_eq(ctfx_put_script(&srv, "X-Actor: ann\r\n", "shared", v2, NULL), 200);
    char *disk = ctfx_read(&srv, "rules/shared.lua");
    cr_assert_str_eq(disk, v2);
    free(disk);
    char *offer = ctfx_offer(&srv, NULL, "shared");
    cr_assert_str_eq(offer ? offer : "(none)", "v2");
    free(offer);
    /* the marketer edits the file: version 3 by "file", the API sees it */
    tfx_write(&srv, "rules/shared.lua",
              "return { channels = { 'web' }, variants = { { id = 'A', content = { headline = 'v3' "
              "} } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "shared", "version") == 3));
    offer = ctfx_offer(&srv, NULL, "shared");
    cr_assert_str_eq(offer ? offer : "(none)", "v3");
    free(offer);
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns/shared/versions", NULL, NULL, &r), 200);
    json_t *vs = json_object_get(r.json, "versions");
    cr_assert_eq(json_array_size(vs), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(vs, 0), "author")), "file");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(vs, 1), "author")), "ann");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(vs, 2), "author")), "file");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(vs, 0), "state")), "live");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(vs, 1), "state")),
                     "superseded");
    tfx_resp_free(&r);
    /* every version keeps its source, and two can be diffed */
    cr_assert_eq(
        ctfx_req(&srv, "GET", "/api/v1/campaigns/shared/versions/3?diff=2", NULL, NULL, &r), 200);
    const char *diff = json_string_value(json_object_get(r.json, "diff"));
    cr_assert(diff && strstr(diff, "+ ") && strstr(diff, "- "), "diff: %s", diff ? diff : "null");
    cr_assert(strstr(json_string_value(json_object_get(r.json, "source")), "'v3'"));
    tfx_resp_free(&r);
    /* a PUT with the same script is no new version */
    char *v3 = ctfx_read(&srv, "rules/shared.lua");
    long rev = ctfx_int(&srv, NULL, "shared", "rev");
    cr_assert_eq(ctfx_put_script(&srv, NULL, "shared", v3, NULL), 200);
    cr_assert_eq(ctfx_int(&srv, NULL, "shared", "version"), 3);
    cr_assert_eq(ctfx_int(&srv, NULL, "shared", "rev"), rev, "no change, no new rev");
    cr_assert_eq(ctfx_audit_count(&srv, NULL, "action=campaign.update&object=campaign:shared"), 1);
    free(v3);
    free(v2);
}

/* Hostile and malformed input: refused with a specific error and nothing
 * written (no file, no record, no audit entry). */
Test(campaigns, bad_input_is_refused_and_nothing_is_written)
{
    char *good = ctfx_script(NULL, "ok", NULL);
    struct {
        const char *method, *path, *body;
        int status;
        const char *code, *field;
    } cases[] = {
        { "POST", "/api/v1/campaigns", "{\"id\":\"../x\",\"script\":\"return {}\"}", 400,
          "invalid_id", "id" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"a/b\",\"script\":\"return {}\"}", 400,
          "invalid_id", "id" },
        { "POST", "/api/v1/campaigns", "{\"id\":\".hidden\",\"script\":\"return {}\"}", 400,
          "invalid_id", "id" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"\",\"script\":\"return {}\"}", 400, "invalid_id",
          "id" },
        { "POST", "/api/v1/campaigns", "{\"id\":7,\"script\":\"return {}\"}", 400, "invalid_id",
          "id" },
        { "POST", "/api/v1/campaigns", "{\"script\":\"return {}\"}", 400, "missing_field", "id" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"nos\"}", 400, "missing_field", "script" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"x1\",\"script\":\"return {\"}", 422,
          "invalid_script", "script" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x2\",\"script\":\"return { channels = { 'web' } }\"}", 422, "invalid_script",
          "script" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x3\",\"script\":\"return { id = 'other', channels = { 'web' }, "
          "variants = { { id = 'A', content = {} } }, eligible = function() return true end }\"}",
          422, "invalid_script", "script" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x4\",\"script\":\"os.execute('rm -rf /') return {}\"}", 422, "invalid_script",
          "script" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"x5\",\"script\":\"\"}", 400, "invalid_field",
          "script" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"x6\",\"script\":42}", 400, "invalid_field",
          "script" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x7\",\"colour\":\"red\",\"script\":\"return {}\"}", 400, "unknown_field",
          "colour" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x8\",\"status\":\"active\",\"script\":\"return {}\"}", 400, "unknown_field",
          "status" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"x9\",\"tags\":\"a\",\"script\":\"return {}\"}",
          400, "invalid_field", "tags" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x10\",\"cost\":{\"per_send\":-1},\"script\":\"return {}\"}", 400,
          "invalid_field", "cost.per_send" },
        { "POST", "/api/v1/campaigns",
          "{\"id\":\"x11\",\"cost\":{\"bribe\":1},\"script\":\"return {}\"}", 400, "unknown_field",
          "cost.bribe" },
        { "POST", "/api/v1/campaigns", "{\"id\":\"x12\",\"name\":\"\",\"script\":\"return {}\"}",
          400, "invalid_field", "name" },
        { "POST", "/api/v1/campaigns", "[1,2]", 400, "invalid_body", NULL },
        { "POST", "/api/v1/campaigns", "{\"id\":", 400, "invalid_json", NULL },
        { "GET", "/api/v1/campaigns/..%2Fx", NULL, 400, "invalid_id", "id" },
        { "GET", "/api/v1/campaigns/%2E%2E", NULL, 400, "invalid_id", "id" },
        { "PUT", "/api/v1/campaigns/..%2F..%2Fetc%2Fpasswd", "{\"name\":\"x\"}", 400, "invalid_id",
          "id" },
        { "DELETE", "/api/v1/campaigns/..%2Fplugins%2Fweb", NULL, 400, "invalid_id", "id" },
        { "POST", "/api/v1/campaigns/..%2Fx/launch", NULL, 400, "invalid_id", "id" },
        { "GET", "/api/v1/campaigns/nope", NULL, 404, "not_found", "id" },
        { "PUT", "/api/v1/campaigns/nope", "{\"name\":\"x\"}", 404, "not_found", "id" },
        { "POST", "/api/v1/campaigns/nope/launch", NULL, 404, "not_found", "id" },
        { "GET", "/api/v1/campaigns/nope/versions/abc", NULL, 400, "invalid_version", "version" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        struct tfx_resp r;
        int st = ctfx_req(&srv, cases[c].method, cases[c].path, NULL, cases[c].body, &r);
        cr_assert_eq(st, cases[c].status, "case %zu %s %s: %d %s", c, cases[c].method,
                     cases[c].path, st, r.body);
        cr_assert_str_eq(tfx_err_code(&r), cases[c].code, "case %zu: %s", c, r.body);
        if (cases[c].field)
            cr_assert_str_eq(ctfx_err_field(&r), cases[c].field, "case %zu: %s", c, r.body);
        json_t *msg = json_object_get(json_object_get(r.json, "error"), "message");
        cr_assert(json_string_length(msg) > 0, "case %zu has a message", c);
        tfx_resp_free(&r);
    }
    /* an invalid script's error points at file:line */
    struct tfx_resp r;
    ctfx_req(&srv, "POST", "/api/v1/campaigns", NULL,
             "{\"id\":\"x1\",\"script\":\"return {\\n  oops = \"}", &r);
    cr_assert_eq(r.status, 422);
    json_t *errs = json_object_get(json_object_get(r.json, "error"), "errors");
    cr_assert(json_array_size(errs) >= 1);
    cr_assert(strstr(json_string_value(json_array_get(errs, 0)), "x1.lua:"), "%s", r.body);
    tfx_resp_free(&r);
    /* a huge script: over the body limit (413), and the script's own limit */
    size_t n = (1u << 20) + 64;
    char *huge = malloc(n + 64);
    int o = sprintf(huge, "{\"id\":\"huge\",\"script\":\"--");
    memset(huge + o, 'a', n - (size_t)o);
    strcpy(huge + n, "\"}");
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/campaigns", "Content-Type: application/json\r\n",
                          huge, strlen(huge), &r),
                 413);
    tfx_resp_free(&r);
    free(huge);
    /* nothing was written: no file, no campaign, no audit entry */
    const char *ids[] = { "x",  "x1", "x2",  "x3",  "x4",  "x5",  "x6",   "x7",
                          "x8", "x9", "x10", "x11", "x12", "nos", "huge", "other" };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        char rel[100];
        snprintf(rel, sizeof rel, "rules/%s.lua", ids[i]);
        cr_assert(!ctfx_exists(&srv, rel), "%s was written", rel);
    }
    cr_assert(!ctfx_exists(&srv, "x.lua"));
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns?status=all", NULL, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "campaigns")), 0, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_audit_count(&srv, NULL, "action=campaign.*"), 0);
    /* a good one still works afterwards */
    cr_assert_eq(ctfx_create(&srv, NULL, "fine", good, NULL), 201);
    free(good);
}

Test(campaigns, ids_and_files_are_not_reused)
{
    char *s = ctfx_script(NULL, "one", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "dup", s, NULL), 201);
    struct tfx_resp r;
    char *js = ctfx_jstr(s), body[4096];
    snprintf(body, sizeof body, "{\"id\":\"dup\",\"script\":%s}", js);
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/campaigns", NULL, body, &r), 409);
    cr_assert_str_eq(tfx_err_code(&r), "exists");
    cr_assert_str_eq(ctfx_err_field(&r), "id");
    tfx_resp_free(&r);
    /* a file already in rules/ under that name is never overwritten */
    tfx_write(&srv, "rules/taken.lua", "-- not a campaign yet\nreturn 1\n");
    snprintf(body, sizeof body, "{\"id\":\"taken\",\"script\":%s}", js);
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/campaigns", NULL, body, &r), 409);
    tfx_resp_free(&r);
    char *disk = ctfx_read(&srv, "rules/taken.lua");
    cr_assert_str_eq(disk, "-- not a campaign yet\nreturn 1\n");
    free(disk);
    free(js);
    free(s);
}

Test(campaigns, delete_archives_and_removes_the_file)
{
    char *s = ctfx_script(NULL, "bye", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "gone", s, NULL), 201);
    cr_assert_eq(ctfx_act(&srv, NULL, "gone", "launch", NULL, NULL), 200);
    char *offer = ctfx_offer(&srv, NULL, "gone");
    cr_assert_str_eq(offer ? offer : "(none)", "bye");
    free(offer);
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "DELETE", "/api/v1/campaigns/gone", NULL, NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "archived");
    tfx_resp_free(&r);
    cr_assert(!ctfx_exists(&srv, "rules/gone.lua"));
    offer = ctfx_offer(&srv, NULL, "gone");
    cr_assert_null(offer);
    /* still readable, with its versions; hidden from the default list */
    char *st = ctfx_field(&srv, NULL, "gone", "status");
    cr_assert_str_eq(st, "archived");
    free(st);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns", NULL, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "campaigns")), 0);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns?status=archived", NULL, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "campaigns")), 1);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "GET", "/api/v1/campaigns/gone/versions", NULL, NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "versions")), 1);
    tfx_resp_free(&r);
    /* no second delete, no edit, no relaunch */
    cr_assert_eq(ctfx_req(&srv, "DELETE", "/api/v1/campaigns/gone", NULL, NULL, &r), 409);
    cr_assert_str_eq(tfx_err_code(&r), "illegal_transition");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_put_script(&srv, NULL, "gone", s, NULL), 409);
    cr_assert_eq(ctfx_act(&srv, NULL, "gone", "launch", NULL, NULL), 409);
    cr_assert(!ctfx_exists(&srv, "rules/gone.lua"), "a refused edit writes no file");
    /* a file put back for an archived campaign stays archived */
    tfx_write(&srv, "rules/gone.lua", s);
    /* a forced reload has read it when it answers (no waiting on the watcher) */
    cr_assert_eq(ctfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, "{}", &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    offer = ctfx_offer(&srv, NULL, "gone");
    cr_assert_null(offer, "archived stays archived");
    free(s);
}

Test(campaigns, metadata_update_with_etag)
{
    char *s = ctfx_script(NULL, "m", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "meta", s, NULL), 201);
    struct tfx_resp r;
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/meta", "If-Match: \"1\"\r\n",
                          "{\"name\":\"Renamed\",\"tags\":[\"t\"],\"cost\":{\"per_send\":0.01}}",
                          &r),
                 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "name")), "Renamed");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "rev")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "version")), 1,
                 "metadata is no new version");
    cr_assert(strstr(r.headers, "ETag: \"2\""));
    tfx_resp_free(&r);
    /* a stale ETag: 409 naming the current rev, nothing changed */
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/meta", "If-Match: \"1\"\r\n",
                          "{\"name\":\"Lost\"}", &r),
                 409);
    cr_assert_str_eq(tfx_err_code(&r), "version_conflict");
    cr_assert_eq(
        json_integer_value(json_object_get(json_object_get(r.json, "error"), "current_rev")), 2);
    tfx_resp_free(&r);
    /* "rev" in the body works the same */
    cr_assert_eq(
        ctfx_req(&srv, "PUT", "/api/v1/campaigns/meta", NULL, "{\"name\":\"Lost\",\"rev\":1}", &r),
        409);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/meta", "If-Match: banana\r\n",
                          "{\"name\":\"x\"}", &r),
                 400);
    cr_assert_str_eq(ctfx_err_field(&r), "If-Match");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_req(&srv, "PUT", "/api/v1/campaigns/meta", NULL, "{\"id\":\"other\"}", &r),
                 400);
    cr_assert_str_eq(ctfx_err_field(&r), "id");
    tfx_resp_free(&r);
    char *name = ctfx_field(&srv, NULL, "meta", "name");
    cr_assert_str_eq(name, "Renamed");
    free(name);
    free(s);
}

struct racer {
    int idx;
    long rev;
    int status;
};

static void *race_put(void *arg)
{
    struct racer *x = arg;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "If-Match: \"%ld\"\r\n", x->rev);
    char head[32];
    snprintf(head, sizeof head, "racer %d", x->idx);
    char *s = ctfx_script(NULL, head, NULL);
    x->status = ctfx_put_script(&srv, hdr, "race", s, NULL);
    free(s);
    return NULL;
}

Test(campaigns, racing_updates_one_wins_the_others_get_409)
{
    char *s = ctfx_script(NULL, "start", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "race", s, NULL), 201);
    long rev = ctfx_int(&srv, NULL, "race", "rev");
    enum { N = 6 };
    struct racer rs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (struct racer){ i, rev, 0 };
        pthread_create(&th[i], NULL, race_put, &rs[i]);
    }
    int wins = 0, conflicts = 0, winner = -1;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (rs[i].status == 200) {
            wins++;
            winner = i;
        }
        conflicts += rs[i].status == 409;
    }
    cr_assert_eq(wins, 1, "exactly one update wins");
    cr_assert_eq(conflicts, N - 1);
    /* the winner's script is on disk, in the record, and one version was added */
    char want[32];
    snprintf(want, sizeof want, "racer %d", winner);
    char *disk = ctfx_read(&srv, "rules/race.lua");
    cr_assert(strstr(disk, want), "%s", disk);
    free(disk);
    cr_assert_eq(ctfx_int(&srv, NULL, "race", "version"), 2);
    cr_assert_eq(ctfx_audit_count(&srv, NULL, "action=campaign.update&object=campaign:race"), 1);
    free(s);
}

static void *race_put_free(void *arg)
{
    struct racer *x = arg;
    char head[32];
    snprintf(head, sizeof head, "free %d", x->idx);
    char *s = ctfx_script(NULL, head, NULL);
    x->status = ctfx_put_script(&srv, NULL, "race2", s, NULL);
    free(s);
    return NULL;
}

Test(campaigns, unconditional_updates_are_serialised_and_none_is_lost)
{
    char *s = ctfx_script(NULL, "start", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "race2", s, NULL), 201);
    enum { N = 6 };
    struct racer rs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (struct racer){ i, -1, 0 };
        pthread_create(&th[i], NULL, race_put_free, &rs[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(rs[i].status, 200);
    }
    cr_assert_eq(ctfx_int(&srv, NULL, "race2", "version"), N + 1, "every save is a version");
    /* the newest version is what the file holds */
    struct tfx_resp r;
    char path[100];
    snprintf(path, sizeof path, "/api/v1/campaigns/race2/versions/%d", N + 1);
    cr_assert_eq(ctfx_req(&srv, "GET", path, NULL, NULL, &r), 200);
    char *disk = ctfx_read(&srv, "rules/race2.lua");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "source")), disk);
    free(disk);
    tfx_resp_free(&r);
    free(s);
}

Test(campaigns, a_file_that_cannot_be_replaced_undoes_the_save)
{
    char *s = ctfx_script(NULL, "one", NULL);
    cr_assert_eq(ctfx_create(&srv, NULL, "stuck", s, NULL), 201);
    /* make the target unreplaceable: a directory where the file was */
    tfx_unlink(&srv, "rules/stuck.lua");
    char d[400];
    snprintf(d, sizeof d, "%s/stuck.lua", srv.rules);
    cr_assert_eq(mkdir(d, 0755), 0);
    char *s2 = ctfx_script(NULL, "two", NULL);
    struct tfx_resp r;
    cr_assert_eq(ctfx_put_script(&srv, NULL, "stuck", s2, &r), 500);
    cr_assert_str_eq(tfx_err_code(&r), "file_write_failed");
    cr_assert_str_eq(ctfx_err_field(&r), "script");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_int(&srv, NULL, "stuck", "version"), 1, "the version was taken back");
    cr_assert_eq(ctfx_audit_count(&srv, NULL, "action=campaign.undo&object=campaign:stuck"), 1);
    rmdir(d);
    free(s);
    free(s2);
}

Test(campaigns, clone_copies_under_a_new_id)
{
    char *s = ctfx_script("orig", "copy me", "priority = 3,");
    cr_assert_eq(ctfx_create(&srv, NULL, "orig", s, "\"owner\":\"ann\",\"tags\":[\"t1\"]"), 201);
    cr_assert_eq(ctfx_act(&srv, NULL, "orig", "launch", NULL, NULL), 200);
    struct tfx_resp r;
    cr_assert_eq(ctfx_act(&srv, "X-Actor: bob\r\n", "orig", "clone", "{\"id\":\"orig2\"}", &r),
                 201);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "id")), "orig2");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "draft");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "owner")), "ann");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "cloned_from")), "orig");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "created_by")), "bob");
    /* the script's own id was rewritten to the new one */
    const char *src = json_string_value(json_object_get(r.json, "script"));
    cr_assert(strstr(src, "id = \"orig2\"") && strstr(src, "copy me"), "%s", src);
    tfx_resp_free(&r);
    char *disk = ctfx_read(&srv, "rules/orig2.lua");
    cr_assert(disk && strstr(disk, "\"orig2\""));
    free(disk);
    /* clone needs a fresh, valid id */
    cr_assert_eq(ctfx_act(&srv, NULL, "orig", "clone", "{\"id\":\"orig\"}", &r), 409);
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, NULL, "orig", "clone", "{\"id\":\"../evil\"}", &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "id");
    tfx_resp_free(&r);
    cr_assert_eq(ctfx_act(&srv, NULL, "orig", "clone", NULL, &r), 400);
    cr_assert_str_eq(ctfx_err_field(&r), "id");
    tfx_resp_free(&r);
    cr_assert_eq(
        ctfx_audit_count(&srv, NULL, "action=campaign.clone&object=campaign:orig2&actor=bob"), 1);
    free(s);
}

Test(campaigns, msgpack_bodies_and_replies)
{
    /* {"id":"mp","script":"..."} as msgpack: fixmap(2) */
    char *s = ctfx_script(NULL, "mp", NULL);
    size_t sl = strlen(s);
    unsigned char buf[4096];
    size_t n = 0;
    buf[n++] = 0x82;
    buf[n++] = 0xa2;
    memcpy(buf + n, "id", 2), n += 2;
    buf[n++] = 0xa2;
    memcpy(buf + n, "mp", 2), n += 2;
    buf[n++] = 0xa6;
    memcpy(buf + n, "script", 6), n += 6;
    buf[n++] = 0xda;
    buf[n++] = (unsigned char)(sl >> 8);
    buf[n++] = (unsigned char)sl;
    memcpy(buf + n, s, sl), n += sl;
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/campaigns",
                          "Content-Type: application/msgpack\r\nAccept: application/msgpack\r\n",
                          (const char *)buf, n, &r),
                 201);
    cr_assert(strstr(r.ctype, "msgpack"));
    tfx_resp_free(&r);
    char *st = ctfx_field(&srv, NULL, "mp", "status");
    cr_assert_str_eq(st, "draft");
    free(st);
    free(s);
}

Test(campaigns, the_name_follows_the_script_until_set_through_the_api)
{
    tfx_write(&srv, "rules/named.lua",
              "return { name = 'First name', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'n' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "named", "version") == 1));
    tfx_write(&srv, "rules/named.lua",
              "return { name = 'Second name', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'n' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "named", "version") == 2));
    char *name = ctfx_field(&srv, NULL, "named", "name");
    cr_assert_str_eq(name, "Second name");
    free(name);
    struct tfx_resp r;
    cr_assert_eq(
        ctfx_req(&srv, "PUT", "/api/v1/campaigns/named", NULL, "{\"name\":\"Chosen\"}", &r), 200);
    tfx_resp_free(&r);
    tfx_write(&srv, "rules/named.lua",
              "return { name = 'Third name', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'n' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "named", "version") == 3));
    name = ctfx_field(&srv, NULL, "named", "name");
    cr_assert_str_eq(name, "Chosen", "a name set through the API sticks");
    free(name);
    /* a script for a file named after another id must say its id */
    char *s = ctfx_script(NULL, "x", NULL);
    tfx_write(&srv, "rules/elsewhere.lua",
              "return { id = 'moved', channels = { 'web' },\n"
              "  variants = { { id = 'A', content = { headline = 'm' } } },\n"
              "  eligible = function() return true end }\n");
    cr_assert(CTFX_WAIT(3000, ctfx_int(&srv, NULL, "moved", "version") == 1));
    cr_assert_eq(ctfx_put_script(&srv, NULL, "moved", s, &r), 422);
    cr_assert(strstr(r.body, "set id = \\\"moved\\\""), "%s", r.body);
    tfx_resp_free(&r);
    free(s);
}
