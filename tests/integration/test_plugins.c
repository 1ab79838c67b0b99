/* test_plugins.c — the built-in outbound plugins (email, sms, push) against
 * a real receiver, consent and quiet hours at send time (injectable clock),
 * and containment: a plugin that errors, loops, returns garbage or never
 * finishes is reported while the other channels keep delivering. */
#include <criterion/criterion.h>
#include <string.h>
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv, *rcv2;

static void start(const char *extra_chan, const char *extra)
{
    rcv = rcv_start(0);
    cr_assert(rcv);
    otfx_init(&srv, rcv, extra_chan, NULL, extra);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    otfx_clock(&srv, otfx_offset_for_hour(12, 0)); /* outside every quiet hour */
}

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv_stop(rcv2);
    rcv = rcv2 = NULL;
}

TestSuite(plugins, .fini = teardown, .timeout = 90);

static json_t *entry_json(size_t i, struct rcv_entry *e)
{
    cr_assert_eq(rcv_get(rcv, i, e), 0);
    json_t *j = json_loads(e->body, 0, NULL);
    cr_assert(j, "body is not JSON: %s", e->body);
    return j;
}

/* The received request whose body contains `needle`. */
static json_t *find_body(const char *needle, struct rcv_entry *out)
{
    for (size_t i = 0; i < rcv_count(rcv); i++) {
        struct rcv_entry e;
        rcv_get(rcv, i, &e);
        if (strstr(e.body, needle)) {
            *out = e;
            return json_loads(e.body, 0, NULL);
        }
        rcv_entry_free(&e);
    }
    cr_assert_fail("no request contains %s", needle);
    return NULL;
}

Test(plugins, email_reaches_the_provider_with_parts_and_consent)
{
    start(NULL, NULL);
    struct tfx_resp r;
    const char *profiles =
        "{\"id\":\"e1\",\"email\":\"ann@example.com\",\"first_name\":\"Ann <3\",\"consent\":{\"email\":true}}\n"
        "{\"id\":\"e2\",\"first_name\":\"NoMail\",\"consent\":{\"email\":true}}\n"
        "{\"id\":\"e3\",\"email\":\"bob@example.com\",\"consent\":{\"email\":false}}\n"
        "{\"id\":\"e4\",\"email\":\"cy@example.com\"}\n"
        "{\"id\":\"e5\",\"email\":\"di@example.com\",\"opt_out\":true,\"consent\":{\"email\":true}}\n";
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n",
                          profiles, strlen(profiles), &r), 200);
    tfx_resp_free(&r);
    otfx_campaign(&srv, "mail", "'email'",
                  "subject = 'Hello {{first_name}}', body = 'Deals for {{first_name}}'", NULL);
    cr_assert(otfx_wait_campaign(&srv, "mail"));
    cr_assert_eq(otfx_action(&srv, "mail", "launch"), 200);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/campaigns/mail/sends", "sent", 1, 10000), 1);
    cr_assert(otfx_wait_idle(&srv, "mail", 15000), "the send never finished");
    cr_assert_eq(rcv_count(rcv), 1, "only the consenting customer with an address");
    struct rcv_entry e;
    json_t *b = entry_json(0, &e);
    cr_assert_str_eq(e.path, "/email");
    cr_assert(strstr(e.headers, "Authorization: Bearer mk-1"), "%s", e.headers);
    cr_assert(strstr(e.headers, "Content-Type: application/json"), "%s", e.headers);
    cr_assert_str_eq(e.key, "send:mail:email:e1");
    cr_assert_str_eq(json_string_value(json_object_get(b, "from")), "Shop <news@shop.example>");
    json_t *to = json_array_get(json_object_get(b, "to"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(to, "email")), "ann@example.com");
    cr_assert_str_eq(json_string_value(json_object_get(b, "subject")), "Hello Ann <3");
    json_t *parts = json_object_get(b, "content");
    cr_assert_eq(json_array_size(parts), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(parts, 0), "value")),
                     "Deals for Ann <3", "text part is plain text");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(parts, 1), "value")),
                     "<p>Deals for Ann &lt;3</p>", "html part is escaped HTML");
    json_decref(b);
    rcv_entry_free(&e);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/mail/sends");
    cr_assert_eq(otfx_int(s, "evaluated"), 5);
    cr_assert_eq(otfx_int(s, "queued"), 1);
    cr_assert_eq(otfx_int(s, "skipped.render_declined"), 1, "no address");
    cr_assert_eq(otfx_int(s, "skipped.consent"), 3, "withdrawn, none recorded, opted out");
    json_decref(s);
}

struct sms_case {
    const char *id, *text;
    const char *encoding;
    int segments;
};

Test(plugins, sms_counts_gsm7_and_ucs2_segments)
{
    start(NULL, NULL);
    char a160[161], a161[162], a150e[200], c70[200], c71[200], emo70[200], emo71[200], a500[501];
    memset(a160, 'a', 160), a160[160] = 0;
    memset(a161, 'a', 161), a161[161] = 0;
    memset(a500, 'a', 500), a500[500] = 0;
    char a150[151], a69[70], a68[69];
    memset(a150, 'a', 150), a150[150] = 0;
    memset(a69, 'a', 69), a69[69] = 0;
    memset(a68, 'a', 68), a68[68] = 0;
    snprintf(a150e, sizeof a150e, "%s\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", a150);
    snprintf(c70, sizeof c70, "\xc3\xa7%s", a69);      /* ç is not GSM-7 */
    snprintf(c71, sizeof c71, "\xc3\xa7%sa", a69);
    snprintf(emo70, sizeof emo70, "\xf0\x9f\x98\x80%s", a68); /* an emoji is 2 UTF-16 units */
    snprintf(emo71, sizeof emo71, "\xf0\x9f\x98\x80%sa", a68);
    struct sms_case cases[] = {
        { "s160", a160, "gsm7", 1 },   { "s161", a161, "gsm7", 2 },   { "seur", a150e, "gsm7", 1 },
        { "sc70", c70, "ucs2", 1 },    { "sc71", c71, "ucs2", 2 },    { "se70", emo70, "ucs2", 1 },
        { "se71", emo71, "ucs2", 2 },  { "s500", a500, NULL, 0 },
    };
    size_t n = sizeof cases / sizeof cases[0];
    char body[8192];
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "{\"id\":\"%s\",\"phone\":\"+3361234567%zu\",\"msg\":\"%s\","
                                "\"consent\":{\"sms\":true}}\n",
                                cases[i].id, i, cases[i].text);
    len += (size_t)snprintf(body + len, sizeof body - len,
                            "{\"id\":\"nophone\",\"phone\":\"0612\",\"msg\":\"x\",\"consent\":{\"sms\":true}}\n");
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n",
                          body, len, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    otfx_campaign(&srv, "txt", "'sms'", "sms = '{{msg}}'", NULL);
    cr_assert(otfx_wait_campaign(&srv, "txt"));
    cr_assert_eq(otfx_action(&srv, "txt", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, n - 1, 10000), n - 1);
    for (size_t i = 0; i + 1 < n; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "send:txt:sms:%s", cases[i].id);
        struct rcv_entry e;
        json_t *b = find_body(needle, &e);
        cr_assert(b);
        cr_assert_str_eq(json_string_value(json_object_get(b, "text")), cases[i].text, "%s", cases[i].id);
        cr_assert_str_eq(json_string_value(json_object_get(b, "encoding")), cases[i].encoding,
                         "%s: %s", cases[i].id, e.body);
        cr_assert_eq(json_integer_value(json_object_get(b, "segments")), cases[i].segments,
                     "%s: %s", cases[i].id, e.body);
        cr_assert(strstr(e.headers, "Authorization: Bearer sk-1"));
        json_decref(b);
        rcv_entry_free(&e);
    }
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/txt/sends");
    cr_assert_eq(otfx_int(s, "skipped.render_declined"), 2, "too long, bad number");
    const char *le = json_string_value(json_object_get(s, "last_error"));
    cr_assert(le, "the reason is reported");
    json_decref(s);
}

Test(plugins, push_title_body_and_data)
{
    start(NULL, NULL);
    otfx_profiles(&srv, "p", 2, "\"push_token\":\"tok-%d\",\"consent\":{\"push\":true}");
    otfx_profiles(&srv, "nt", 1, "\"consent\":{\"push\":true}");
    otfx_campaign(&srv, "pn", "'push'",
                  "title = 'Sale!', body = 'Up to 30% off', url = 'https://shop.example/sale',"
                  " data = { screen = 'sale', n = 3 }", NULL);
    cr_assert(otfx_wait_campaign(&srv, "pn"));
    cr_assert_eq(otfx_action(&srv, "pn", "launch"), 200);
    cr_assert_eq(rcv_wait_unique(rcv, 2, 10000), 2);
    struct rcv_entry e;
    json_t *b = find_body("tok-1", &e);
    json_t *notif = json_object_get(b, "notification");
    cr_assert_str_eq(json_string_value(json_object_get(notif, "title")), "Sale!");
    cr_assert_str_eq(json_string_value(json_object_get(notif, "body")), "Up to 30% off");
    json_t *data = json_object_get(b, "data");
    cr_assert_str_eq(json_string_value(json_object_get(data, "screen")), "sale");
    cr_assert_str_eq(json_string_value(json_object_get(data, "n")), "3", "data values are strings");
    cr_assert_str_eq(json_string_value(json_object_get(data, "url")), "https://shop.example/sale");
    cr_assert_str_eq(json_string_value(json_object_get(data, "campaign_id")), "pn");
    cr_assert(strstr(e.headers, "Authorization: key=pk-1"));
    json_decref(b);
    rcv_entry_free(&e);
    json_t *s = otfx_get(&srv, "/api/v1/campaigns/pn/sends");
    cr_assert_eq(otfx_int(s, "skipped.render_declined"), 1, "no push token");
    json_decref(s);
}

Test(plugins, quiet_hours_follow_the_customer_time_zone)
{
    start(NULL, NULL);
    otfx_clock(&srv, otfx_offset_for_hour(22, 0)); /* 22:00 UTC: email is quiet 21-8 */
    const char *profiles =
        "{\"id\":\"utc\",\"email\":\"u@example.com\",\"consent\":{\"email\":true}}\n"
        "{\"id\":\"ny\",\"email\":\"n@example.com\",\"tz\":\"America/New_York\",\"consent\":{\"email\":true}}\n"
        "{\"id\":\"later\",\"email\":\"l@example.com\",\"consent\":{\"email\":true}}\n";
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n",
                          profiles, strlen(profiles), &r), 200);
    tfx_resp_free(&r);
    otfx_campaign(&srv, "qh", "'email'", "subject = 'Hi'", NULL);
    cr_assert(otfx_wait_campaign(&srv, "qh"));
    cr_assert_eq(otfx_action(&srv, "qh", "launch"), 200);
    /* 17:00 in New York: sent now; the UTC customers wait */
    cr_assert_eq(rcv_wait_unique(rcv, 1, 10000), 1);
    usleep(1500000);
    cr_assert_eq(rcv_count(rcv), 1, "quiet hours hold the UTC customers");
    struct rcv_entry e;
    rcv_get(rcv, 0, &e);
    cr_assert_str_eq(e.key, "send:qh:email:ny");
    rcv_entry_free(&e);
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "channels.email.queued"), 2);
    json_decref(o);
    /* one of them withdraws consent while waiting: dropped, never sent */
    cr_assert_eq(tfx_req(&srv, "PATCH", "/api/v1/profiles/later", "{\"consent\":{\"email\":false}}", &r), 200,
                 "%s", r.body);
    tfx_resp_free(&r);
    otfx_clock(&srv, otfx_offset_for_hour(8, 1) + 1800); /* 08:30 UTC the next day */
    cr_assert_eq(rcv_wait_unique(rcv, 2, 10000), 2);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 2);
    rcv_get(rcv, 1, &e);
    cr_assert_str_eq(e.key, "send:qh:email:utc");
    rcv_entry_free(&e);
    o = otfx_get(&srv, "/api/v1/campaigns/qh/sends");
    cr_assert_eq(otfx_int(o, "dropped"), 1, "consent withdrawn before delivery");
    cr_assert_eq(otfx_int(o, "pending"), 0);
    json_decref(o);
}

/* The live version (hash) of a file in GET /api/v1/rules, malloc'd ("" if absent). */
static char *file_version(const char *suffix)
{
    json_t *j = otfx_get(&srv, "/api/v1/rules");
    char *out = strdup("");
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(j, "files"), i, f) {
        const char *p = json_string_value(json_object_get(f, "file"));
        const char *v = json_string_value(json_object_get(f, "version"));
        if (p && v && strlen(p) >= strlen(suffix) && !strcmp(p + strlen(p) - strlen(suffix), suffix)) {
            free(out);
            out = strdup(v);
        }
    }
    json_decref(j);
    return out;
}

Test(plugins, broken_plugins_are_contained_and_reported)
{
    rcv = rcv_start(0);
    rcv2 = rcv_start(0);
    cr_assert(rcv && rcv2);
    char slow[300];
    snprintf(slow, sizeof slow,
             "slow = { url = \"http://127.0.0.1:%d/slow\", timeout_ms = 300, request_timeout_ms = 5000,"
             " retry_base_ms = 50, max_attempts = 2 },",
             rcv_port(rcv2));
    otfx_init(&srv, rcv, NULL, slow, NULL);
    tfx_write(&srv, "plugins/boom.lua",
              "return { channel = 'boom', render = function(o, p, ctx) return { n = p.id } end,\n"
              "  deliver = function(msg, net) error('provider library exploded for ' .. msg.n) end }\n");
    tfx_write(&srv, "plugins/spin.lua",
              "return { channel = 'spin', deliver = function(msg, net) while true do end end }\n");
    tfx_write(&srv, "plugins/junk.lua",
              "return { channel = 'junk', deliver = function(msg, net) return { 'not', 'a', 'status' } end }\n");
    tfx_write(&srv, "plugins/trap.lua",
              "return { channel = 'trap', deliver = function(msg, net, s)\n"
              "  local ok, err = pcall(net.http_post, 'http://127.0.0.1:1/x', 'b')\n"
              "  return ok and 200 or error(err) end }\n");
    tfx_write(&srv, "plugins/slow.lua",
              "return { channel = 'slow', deliver = function(msg, net, s)\n"
              "  return net.http_post(s.url, msg) end }\n");
    cr_assert_eq(tfx_server_start(&srv), 0);
    otfx_clock(&srv, otfx_offset_for_hour(12, 0));
    rcv_set(rcv2, RCV_STALL, 0, 0);
    otfx_profiles(&srv, "c", 5, "\"first_name\":\"C%d\"");
    otfx_campaign(&srv, "mix", "'webhook', 'boom', 'spin', 'junk', 'trap', 'slow'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, "mix"));
    cr_assert_eq(otfx_action(&srv, "mix", "launch"), 200);
    /* the healthy channel delivers everything */
    cr_assert_eq(rcv_wait_unique(rcv, 5, 15000), 5);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "dead", 25, 20000), 25);
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    char *dump = json_dumps(o, JSON_COMPACT);
    cr_assert_eq(otfx_int(o, "failures.plugin_error"), 10, "boom and trap: %s", dump);
    cr_assert_eq(otfx_int(o, "failures.plugin_budget"), 5, "%s", dump);
    cr_assert_eq(otfx_int(o, "failures.bad_return"), 5, "%s", dump);
    cr_assert_eq(otfx_int(o, "failures.timeout"), 10, "slow: 2 attempts each: %s", dump);
    cr_assert_eq(otfx_int(o, "channels.webhook.sent"), 5, "%s", dump);
    free(dump);
    json_decref(o);
    json_t *d = otfx_get(&srv, "/api/v1/outbox/dead?channel=boom");
    json_t *items = json_object_get(d, "items");
    cr_assert_eq(json_array_size(items), 5);
    const char *err = json_string_value(json_object_get(json_array_get(items, 0), "error"));
    cr_assert(err && strstr(err, "plugins/boom.lua:2:") && strstr(err, "provider library exploded"),
              "error names file:line: %s", err);
    json_decref(d);
    d = otfx_get(&srv, "/api/v1/outbox/dead?channel=trap");
    err = json_string_value(json_object_get(json_array_get(json_object_get(d, "items"), 0), "error"));
    cr_assert(err && strstr(err, "yield"), "net inside pcall is refused: %s", err);
    json_decref(d);
    /* fix the plugin (hot reload), redrive its dead letters: delivered */
    char *before = file_version("boom.lua");
    char fixed[600];
    snprintf(fixed, sizeof fixed,
             "return { channel = 'boom', render = function(o, p, ctx) return { n = p.id } end,\n"
             "  deliver = function(msg, net) return net.http_post('http://127.0.0.1:%d/boom', msg) end }\n",
             rcv_port(rcv));
    tfx_write(&srv, "plugins/boom.lua", fixed);
    int changed = 0;
    for (int i = 0; i < 100 && !changed; i++) {
        char *now = file_version("boom.lua");
        changed = strcmp(now, before) != 0;
        free(now);
        if (!changed)
            usleep(50000);
    }
    free(before);
    cr_assert(changed, "the plugin was not reloaded");
    /* the delivery thread adopts the new generation on its next tick */
    cr_assert(tfx_wait_rules_live(&srv, 15000), "a thread kept the old plugin");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/outbox/dead/redrive",
                         "{\"all\": true, \"channel\": \"boom\"}", &r), 200, "%s", r.body);
    cr_assert_eq(otfx_int(r.json, "redriven"), 5);
    tfx_resp_free(&r);
    cr_assert_eq(rcv_wait_unique(rcv, 10, 15000), 10, "the fixed plugin delivered the redriven messages");
    cr_assert(tfx_server_alive(&srv));
}

Test(plugins, promod_check_reports_plugin_problems)
{
    start(NULL, NULL);
    tfx_write(&srv, "plugins/broken.lua", "return { channel = 'broken',\n  deliver = function(msg net) end }\n");
    tfx_write(&srv, "plugins/wrong.lua", "return { channel = 'wrong', deliver = 5,\n policy = { quiet_hours = { 25, 3 } } }\n");
    char *out = NULL;
    int st = tfx_promod(&out, "check", srv.plugins, (char *)NULL);
    cr_assert_eq(st, 1, "%s", out);
    cr_assert(strstr(out, "broken.lua:2:"), "%s", out);
    cr_assert(strstr(out, "wrong.lua:"), "%s", out);
    cr_assert(strstr(out, "quiet_hours"), "%s", out);
    cr_assert(!strstr(out, "email.lua"), "the built-in plugins are clean: %s", out);
    free(out);
}
