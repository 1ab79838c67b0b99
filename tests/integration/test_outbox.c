/* test_outbox.c — the durable outbox against a real local receiver: delivery,
 * signatures, retries with backoff, no retry on 4xx, dead letters and
 * redrive, timeouts, refused connections, rate and concurrency limits, the
 * API's answers to malformed, hostile and concurrent input. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <string.h>
#include "base/hash.h"
#include "outbox_tfx.h"

static struct tfx_server srv;
static struct rcv *rcv;

static void start(const char *extra_chan, const char *extra)
{
    rcv = rcv_start(0);
    cr_assert(rcv, "receiver did not start");
    otfx_init(&srv, rcv, extra_chan, NULL, extra);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    rcv_stop(rcv);
    rcv = NULL;
}

TestSuite(outbox, .fini = teardown, .timeout = 60);

/* A webhook campaign over n profiles, launched. */
static void launch_webhook(const char *id, int n)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s-u", id);
    otfx_profiles(&srv, prefix, n, "\"first_name\":\"Ann%d\"");
    otfx_campaign(&srv, id, "'webhook'", NULL, NULL);
    cr_assert(otfx_wait_campaign(&srv, id), "campaign %s not loaded", id);
    cr_assert_eq(otfx_action(&srv, id, "launch"), 200);
}

static int header_value(const char *headers, const char *name, char *out, size_t len)
{
    char pat[128];
    snprintf(pat, sizeof pat, "%s: ", name);
    const char *p = strcasestr(headers, pat);
    if (!p)
        return 0;
    p += strlen(pat);
    size_t n = strcspn(p, "\n");
    snprintf(out, len, "%.*s", (int)n, p);
    return 1;
}

Test(outbox, delivers_every_message_signed_once)
{
    start(NULL, NULL);
    launch_webhook("wh", 25);
    cr_assert_eq(rcv_wait_unique(rcv, 25, 15000), 25, "not all delivered");
    cr_assert(otfx_wait_idle(&srv, "wh", 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 25, "a message was delivered twice");
    for (size_t i = 0; i < rcv_count(rcv); i++) {
        struct rcv_entry e;
        cr_assert_eq(rcv_get(rcv, i, &e), 0);
        cr_assert_str_eq(e.method, "POST");
        cr_assert_str_eq(e.path, "/hook");
        cr_assert(!strncmp(e.key, "send:wh:webhook:wh-u", 20), "key %s", e.key);
        /* signature: sha256 HMAC of "<ts>.<body>" under the configured secret */
        char ts[64], sig[200];
        cr_assert(header_value(e.headers, "X-Promod-Timestamp", ts, sizeof ts));
        cr_assert(header_value(e.headers, "X-Promod-Signature", sig, sizeof sig));
        char *signed_text = NULL;
        cr_assert(asprintf(&signed_text, "%s.%s", ts, e.body) > 0);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        HMAC(EVP_sha256(), "s3cret", 6, (unsigned char *)signed_text, strlen(signed_text), mac, &ml);
        char hex[2 * EVP_MAX_MD_SIZE + 8] = "sha256=";
        for (unsigned k = 0; k < ml; k++)
            sprintf(hex + 7 + 2 * k, "%02x", mac[k]);
        cr_assert_str_eq(sig, hex, "signature does not verify");
        free(signed_text);
        json_t *b = json_loads(e.body, 0, NULL);
        cr_assert(b, "body is not JSON: %s", e.body);
        cr_assert_str_eq(json_string_value(json_object_get(b, "id")), e.key);
        json_t *data = json_object_get(b, "data");
        cr_assert_str_eq(json_string_value(json_object_get(data, "campaign_id")), "wh");
        const char *hl = json_string_value(json_object_get(json_object_get(data, "content"), "headline"));
        cr_assert(hl && !strncmp(hl, "Hi Ann", 6), "content rendered per profile: %s", hl);
        json_decref(b);
        rcv_entry_free(&e);
    }
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "channels.webhook.sent"), 25);
    cr_assert_eq(otfx_int(o, "channels.webhook.queued"), 0);
    cr_assert_eq(otfx_int(o, "in_flight"), 0);
    cr_assert_eq(otfx_int(o, "dead"), 0);
    json_decref(o);
    o = otfx_get(&srv, "/api/v1/campaigns/wh/sends");
    cr_assert_eq(otfx_int(o, "evaluated"), 25);
    cr_assert_eq(otfx_int(o, "queued"), 25);
    cr_assert_eq(otfx_int(o, "sent"), 25);
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "done");
    json_decref(o);
    /* a second launch never sends again */
    otfx_action(&srv, "wh", "launch");
    cr_assert(otfx_wait_idle(&srv, "wh", 15000), "the second launch never finished");
    cr_assert_eq(rcv_count(rcv), 25);
}

Test(outbox, retries_5xx_with_growing_backoff)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_STATUS, 503, 3);
    launch_webhook("r5", 1);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 15000), 1, "never delivered");
    cr_assert_eq(rcv_count(rcv), 4, "3 failures then 1 success");
    struct rcv_entry e[4];
    for (int i = 0; i < 4; i++)
        rcv_get(rcv, (size_t)i, &e[i]);
    for (int i = 1; i < 4; i++)
        cr_assert_str_eq(e[i].key, e[0].key, "same idempotency key on every attempt");
    /* base 50 ms, doubling, jitter x0.5..1.5: gaps in [25,75] [50,150] [100,300] */
    int64_t g1 = e[1].t_ms - e[0].t_ms, g2 = e[2].t_ms - e[1].t_ms, g3 = e[3].t_ms - e[2].t_ms;
    /* lower bounds are exact (a retry is never due earlier); how late a
     * retry comes depends on the machine's load (up to 60 % CPU steal
     * here), so no upper bound */
    cr_assert(g1 >= 25, "gap1 %lld", (long long)g1);
    cr_assert(g2 >= 50, "gap2 %lld", (long long)g2);
    cr_assert(g3 >= 100, "gap3 %lld", (long long)g3);
    for (int i = 0; i < 4; i++)
        rcv_entry_free(&e[i]);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "failures.http_503"), 3);
    cr_assert_eq(otfx_int(o, "channels.webhook.failed_attempts"), 3);
    cr_assert_eq(otfx_int(o, "sent"), 1);
    json_decref(o);
}

Test(outbox, no_retry_on_4xx_then_dead_letter_redrive)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_STATUS, 422, 1);
    launch_webhook("d4", 1);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "dead", 1, 10000), 1);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 1, "a 4xx is not retried");
    json_t *d = otfx_get(&srv, "/api/v1/outbox/dead");
    json_t *items = json_object_get(d, "items");
    cr_assert_eq(json_array_size(items), 1);
    json_t *it = json_array_get(items, 0);
    cr_assert_str_eq(json_string_value(json_object_get(it, "reason")), "http_422");
    cr_assert_str_eq(json_string_value(json_object_get(it, "campaign")), "d4");
    cr_assert_eq(json_integer_value(json_object_get(it, "attempts")), 1);
    long id = (long)json_integer_value(json_object_get(it, "id"));
    json_decref(d);
    /* redrive: delivered once more (the receiver now says 200), list empty */
    char body[64];
    snprintf(body, sizeof body, "{\"ids\": [%ld, 999999]}", id);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/outbox/dead/redrive", body, &r), 200, "%s", r.body);
    cr_assert_eq(otfx_int(r.json, "redriven"), 1);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(r.json, "not_dead"), 0)), 999999);
    tfx_resp_free(&r);
    /* one audit entry: what was asked and how many moved */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/audit?action=outbox.redrive", NULL, &r), 200);
    json_t *ae = json_object_get(r.json, "entries");
    cr_assert_eq(json_array_size(ae), 1, "%s", r.body);
    json_t *aa = json_object_get(json_array_get(ae, 0), "after");
    cr_assert_eq(json_integer_value(json_object_get(aa, "redriven")), 1);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(aa, "ids"), 0)), id);
    tfx_resp_free(&r);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 10000), 1);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "sent", 1, 5000), 1);
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "dead"), 0);
    cr_assert_eq(otfx_int(o, "failures.http_422"), 1);
    json_decref(o);
    d = otfx_get(&srv, "/api/v1/outbox/dead");
    cr_assert_eq(json_array_size(json_object_get(d, "items")), 0);
    json_decref(d);
    /* redriving it again: it is not dead any more */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/outbox/dead/redrive", body, &r), 200);
    cr_assert_eq(otfx_int(r.json, "redriven"), 0);
    tfx_resp_free(&r);
}

Test(outbox, gives_up_after_max_attempts)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_STATUS, 500, 0);
    launch_webhook("gu", 2);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "dead", 2, 15000), 2);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 8, "4 attempts each (max_attempts = 4)");
    json_t *d = otfx_get(&srv, "/api/v1/outbox/dead?campaign=gu&limit=1");
    json_t *items = json_object_get(d, "items");
    cr_assert_eq(json_array_size(items), 1, "limit applies");
    cr_assert(json_is_integer(json_object_get(d, "next_after")), "a next page is announced");
    const char *err = json_string_value(json_object_get(json_array_get(items, 0), "error"));
    cr_assert(err && strstr(err, "gave up after 4 attempts"), "%s", err);
    json_decref(d);
    /* redrive everything of the campaign once the receiver is healthy */
    rcv_set(rcv, RCV_OK, 200, 0);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/outbox/dead/redrive",
                         "{\"all\": true, \"campaign\": \"gu\"}", &r), 200, "%s", r.body);
    cr_assert_eq(otfx_int(r.json, "redriven"), 2);
    tfx_resp_free(&r);
    cr_assert_eq(rcv_wait_unique(rcv, 2, 10000), 2);
}

Test(outbox, stalled_receiver_times_out_and_retries)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_STALL, 0, 1);
    launch_webhook("st", 1);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 15000), 1, "retried after the timeout");
    cr_assert_eq(rcv_count(rcv), 2);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "failures.timeout"), 1);
    json_decref(o);
}

Test(outbox, closed_connection_is_retried)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_CLOSE, 0, 2);
    launch_webhook("cc", 1);
    cr_assert_eq(rcv_wait_unique(rcv, 1, 15000), 1);
    cr_assert_eq(rcv_count(rcv), 3);
}

Test(outbox, refused_connections_wait_for_the_receiver)
{
    start("max_attempts = 50, retry_max_ms = 200,", NULL);
    int port = rcv_port(rcv);
    rcv_stop(rcv);
    rcv = NULL;
    launch_webhook("rf", 3);
    cr_assert(otfx_wait_int(&srv, "/api/v1/outbox", "failures.network", 3, 10000) >= 3,
              "refusals are counted as network failures");
    rcv = rcv_start(port);
    cr_assert(rcv, "receiver could not come back on port %d", port);
    cr_assert_eq(rcv_wait_unique(rcv, 3, 15000), 3);
}

Test(outbox, rate_limit_per_channel)
{
    start("rate = 20,", NULL);
    launch_webhook("rl", 30);
    cr_assert_eq(rcv_wait_unique(rcv, 30, 20000), 30);
    struct rcv_entry a, b;
    rcv_get(rcv, 0, &a);
    rcv_get(rcv, 29, &b);
    int64_t span = b.t_ms - a.t_ms;
    rcv_entry_free(&a);
    rcv_entry_free(&b);
    /* 30 at 20/s with a burst of 2: >= (30 - 2) / 20 s */
    cr_assert(span >= 1250, "30 messages took only %lld ms at 20/s", (long long)span);
    /* no upper bound: the limiter promises "not faster"; how much slower
     * a loaded machine delivers is not its doing */
}

Test(outbox, concurrency_limit_per_channel)
{
    start("concurrency = 2,", NULL);
    rcv_set_delay(rcv, 200);
    launch_webhook("cl", 6);
    cr_assert_eq(rcv_wait_unique(rcv, 6, 20000), 6);
    /* at most 2 open at once: arrivals come in pairs ~200 ms apart */
    struct rcv_entry e0, e5;
    rcv_get(rcv, 0, &e0);
    rcv_get(rcv, 5, &e5);
    int64_t span = e5.t_ms - e0.t_ms;
    rcv_entry_free(&e0);
    rcv_entry_free(&e5);
    cr_assert(span >= 380, "6 messages at concurrency 2 with 200 ms answers took %lld ms",
              (long long)span);
}

/* --- the API under malformed and hostile input --------------------------- */

struct bad {
    const char *method, *path, *body;
    int status;
    const char *code, *field;
};

Test(outbox, api_rejects_bad_input_with_contract_errors)
{
    start(NULL, NULL);
    char many[80000];
    size_t n = (size_t)snprintf(many, sizeof many, "{\"ids\": [");
    for (int i = 1; i <= 10001; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "%s%d", i > 1 ? "," : "", i);
    snprintf(many + n, sizeof many - n, "]}");
    struct bad cases[] = {
        { "GET", "/api/v1/outbox/dead?limit=abc", NULL, 400, NULL, "limit" },
        { "GET", "/api/v1/outbox/dead?limit=0", NULL, 400, NULL, "limit" },
        { "GET", "/api/v1/outbox/dead?limit=5000", NULL, 400, NULL, "limit" },
        { "GET", "/api/v1/outbox/dead?after=-1", NULL, 400, NULL, "after" },
        { "GET", "/api/v1/outbox/dead?channel=..%2Fetc", NULL, 400, "invalid_query", "channel" },
        { "GET", "/api/v1/outbox/dead?campaign=%00x", NULL, 400, "invalid_query", "campaign" },
        { "POST", "/api/v1/outbox/dead/redrive", "not json", 400, NULL, NULL },
        { "POST", "/api/v1/outbox/dead/redrive", "[1,2]", 400, NULL, NULL },
        { "POST", "/api/v1/outbox/dead/redrive", "{}", 422, "invalid_redrive", "ids" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"ids\": \"1\"}", 422, "invalid_redrive", "ids" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"ids\": []}", 422, "invalid_redrive", "ids" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"ids\": [-1]}", 422, "invalid_redrive", "ids" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"ids\": [1.5]}", 422, "invalid_redrive", "ids" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"ids\": [1], \"all\": true}", 422, "invalid_redrive", "ids" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"all\": false}", 422, "invalid_redrive", "all" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"all\": true, \"channel\": 5}", 422, "invalid_redrive", "channel" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"all\": true, \"limit\": 0}", 422, "invalid_redrive", "limit" },
        { "POST", "/api/v1/outbox/dead/redrive", "{\"all\": true, \"drop\": 1}", 422, "unknown_field", "drop" },
        { "POST", "/api/v1/outbox/dead/redrive", many, 422, "invalid_redrive", "ids" },
        { "GET", "/api/v1/campaigns/nope/sends", NULL, 404, "not_found", "id" },
        { "GET", "/api/v1/campaigns/.bad/sends", NULL, 400, "invalid_id", "id" },
        { "DELETE", "/api/v1/outbox", NULL, 405, NULL, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bad *c = &cases[i];
        struct tfx_resp r;
        int st = tfx_req(&srv, c->method, c->path, c->body, &r);
        cr_expect_eq(st, c->status, "%s %s %.40s: got %d %s", c->method, c->path,
                     c->body ? c->body : "", st, r.body);
        json_t *e = json_object_get(r.json, "error");
        cr_expect(json_is_object(e), "%s %s: no contract error: %s", c->method, c->path, r.body);
        cr_expect(json_is_string(json_object_get(e, "message")), "message missing: %s", r.body);
        if (c->code)
            cr_expect_str_eq(tfx_err_code(&r), c->code, "%s %s: %s", c->method, c->path, r.body);
        if (c->field)
            cr_expect_str_eq(json_string_value(json_object_get(e, "field")) ?: "(none)", c->field,
                             "%s %s: %s", c->method, c->path, r.body);
        tfx_resp_free(&r);
    }
    /* none of the refused redrives left an audit entry */
    struct tfx_resp ar;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/audit?action=outbox.*", NULL, &ar), 200);
    cr_assert_eq(json_array_size(json_object_get(ar.json, "entries")), 0, "%s", ar.body);
    tfx_resp_free(&ar);
    /* an oversized body is refused before it is read */
    size_t big = 2u << 20;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    struct tfx_resp r;
    cr_assert_eq(tfx_http(&srv, "POST", "/api/v1/outbox/dead/redrive",
                          "Content-Type: application/json\r\n", huge, big, &r), 413, "%s", r.body);
    tfx_resp_free(&r);
    free(huge);
    /* the server is fine afterwards */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/outbox", NULL, &r), 200);
    tfx_resp_free(&r);
}

struct redrive_arg {
    long redriven;
};

static void *redrive_thread(void *arg)
{
    struct redrive_arg *a = arg;
    struct tfx_resp r;
    if (tfx_req(&srv, "POST", "/api/v1/outbox/dead/redrive", "{\"all\": true}", &r) == 200)
        a->redriven = otfx_int(r.json, "redriven");
    tfx_resp_free(&r);
    return NULL;
}

Test(outbox, concurrent_redrives_requeue_each_dead_letter_once)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_STATUS, 400, 0);
    launch_webhook("cr", 12);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "dead", 12, 15000), 12);
    rcv_set(rcv, RCV_OK, 200, 0);
    rcv_clear(rcv);
    pthread_t th[6];
    struct redrive_arg args[6] = { { 0 } };
    for (int i = 0; i < 6; i++)
        pthread_create(&th[i], NULL, redrive_thread, &args[i]);
    long total = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        total += args[i].redriven;
    }
    cr_assert_eq(total, 12, "each dead letter redriven exactly once (got %ld)", total);
    cr_assert_eq(rcv_wait_unique(rcv, 12, 15000), 12);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    cr_assert_eq(rcv_count(rcv), 12, "no duplicate deliveries");
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "dead"), 0);
    cr_assert_eq(otfx_int(o, "queued"), 0);
    json_decref(o);
}

Test(outbox, metrics_count_deliveries)
{
    start(NULL, NULL);
    launch_webhook("mx", 3);
    cr_assert_eq(rcv_wait_unique(rcv, 3, 10000), 3);
    cr_assert(otfx_wait_idle(&srv, NULL, 15000), "the outbox never went idle");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double v = 0;
    cr_assert(tfx_metric(r.body, "promod_outbox_sent_total", "", &v), "series missing");
    cr_assert_eq((long)v, 3);
    tfx_resp_free(&r);
}

/* --- TLS: libevent's OpenSSL bufferevents -------------------------------- */

static void make_cert(char *cert, char *key, size_t len)
{
    snprintf(cert, len, "%s/cert.pem", srv.dir);
    snprintf(key, len, "%s/key.pem", srv.dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 2 "
             "-subj /CN=promod-test -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
             key, cert);
    cr_assert_eq(system(cmd), 0, "openssl could not make a test certificate");
}

static void start_tls(int trusted)
{
    /* a plain server first, only to get the temp dir for the certificate */
    char cert[400], key[400];
    tfx_server_init(&srv, NULL);
    make_cert(cert, key, sizeof cert);
    rcv = rcv_start_tls(0, cert, key);
    cr_assert(rcv, "TLS receiver did not start");
    char ec[1200];
    snprintf(ec, sizeof ec, "url = \"https://127.0.0.1:%d/hook\", %s%s%s", rcv_port(rcv),
             trusted ? "ca_file = \"" : "", trusted ? cert : "", trusted ? "\"," : "");
    char keep[300];
    snprintf(keep, sizeof keep, "%s", srv.dir);
    /* rebuild the config in the same tree with the TLS endpoint */
    struct tfx_server tmp;
    otfx_init(&tmp, rcv, ec, NULL, NULL);
    FILE *f = fopen(tmp.config, "r");
    char cfg[8192];
    size_t n = fread(cfg, 1, sizeof cfg - 1, f);
    cfg[n] = 0;
    fclose(f);
    /* point the config at srv's directories */
    char *fixed = malloc(strlen(cfg) * 2 + 1024);
    fixed[0] = 0;
    for (char *p = cfg; *p;) {
        char *hit = strstr(p, tmp.dir);
        if (!hit) {
            strcat(fixed, p);
            break;
        }
        strncat(fixed, p, (size_t)(hit - p));
        strcat(fixed, keep);
        p = hit + strlen(tmp.dir);
    }
    f = fopen(srv.config, "w");
    fputs(fixed, f);
    fclose(f);
    free(fixed);
    tfx_rmrf(tmp.dir);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

Test(outbox, https_to_a_trusted_tls_receiver)
{
    start_tls(1);
    launch_webhook("tls", 3);
    cr_assert_eq(rcv_wait_unique(rcv, 3, 15000), 3, "https deliveries failed");
    struct rcv_entry e;
    rcv_get(rcv, 0, &e);
    cr_assert(strstr(e.headers, "X-Promod-Signature: sha256="), "%s", e.headers);
    rcv_entry_free(&e);
}

Test(outbox, https_with_an_untrusted_certificate_is_refused)
{
    start_tls(0);
    launch_webhook("untrusted", 1);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "dead", 1, 15000), 1);
    cr_assert_eq(rcv_unique_ok(rcv), 0, "delivered to a server whose certificate is not trusted");
    json_t *d = otfx_get(&srv, "/api/v1/outbox/dead");
    const char *err = json_string_value(json_object_get(json_array_get(json_object_get(d, "items"), 0), "error"));
    cr_assert(err && strstr(err, "tls"), "%s", err);
    json_decref(d);
}

/* Erasing a customer removes their dead letters (which hold the rendered
 * message), and only theirs. */
Test(outbox, erase_removes_the_customers_dead_letters)
{
    start(NULL, NULL);
    rcv_set(rcv, RCV_STATUS, 422, 2);
    launch_webhook("er", 2);
    cr_assert_eq(otfx_wait_int(&srv, "/api/v1/outbox", "dead", 2, 10000), 2);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/er-u0", NULL, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    json_t *d = otfx_get(&srv, "/api/v1/outbox/dead");
    json_t *items = json_object_get(d, "items");
    cr_assert_eq(json_array_size(items), 1, "only the other customer's dead letter is left");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "customer")), "er-u1");
    json_decref(d);
    json_t *o = otfx_get(&srv, "/api/v1/outbox");
    cr_assert_eq(otfx_int(o, "dead"), 1, "dead counters follow the erasure");
    json_decref(o);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/er-u0/export", NULL, &r), 404);
    tfx_resp_free(&r);
}

/* A delivered message is a send event: campaign analytics and ROI count it,
 * once, even though a redelivery after a crash could repeat it. */
Test(outbox, delivered_messages_count_as_send_events)
{
    start(NULL, NULL);
    launch_webhook("se", 3);
    cr_assert_eq(rcv_wait_unique(rcv, 3, 10000), 3);
    long sends = -1;
    for (int i = 0; i < 200 && sends != 3; i++) {
        json_t *a = otfx_get(&srv, "/api/v1/analytics/campaigns/se");
        sends = otfx_int(a, "totals.sends");
        json_decref(a);
        if (sends != 3)
            usleep(25000);
    }
    cr_assert_eq(sends, 3, "analytics counts each delivered message once as a send");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/se-u0/export", NULL, &r), 200);
    cr_assert(strstr(r.body, "\"send\""), "the send is in the customer's export: %s", r.body);
    tfx_resp_free(&r);
}

/* Analytics' send count of a campaign, once it reaches `want` (or the deadline). */
static long wait_sends(const char *campaign, long want)
{
    char path[300];
    snprintf(path, sizeof path, "/api/v1/analytics/campaigns/%s", campaign);
    long sends = -1;
    for (int i = 0; i < 400 && sends != want; i++) {
        json_t *a = otfx_get(&srv, path);
        sends = otfx_int(a, "totals.sends");
        json_decref(a);
        if (sends != want)
            usleep(25000);
    }
    return sends;
}

/* The delivery thread reports a delivered message to the events module
 * with an event_id made from the message key: "send:<key>", or a hash of
 * the key when it is longer than 120 bytes.  Reporting the same delivery
 * again (as after a crash) is then a duplicate, not a second send. */
Test(outbox, send_event_id_is_derived_from_the_message_key)
{
    start(NULL, NULL);
    const char *cust = "customer-with-a-rather-long-id-0";
    otfx_profiles(&srv, "customer-with-a-rather-long-id-", 1, "");
    char lng[101];
    memset(lng, 'l', 100);
    lng[100] = 0;
    const char *camps[2] = { "sk", lng };
    for (int i = 0; i < 2; i++) {
        otfx_campaign(&srv, camps[i], "'webhook'", NULL, NULL);
        cr_assert(otfx_wait_campaign(&srv, camps[i]), "campaign %s not loaded", camps[i]);
        cr_assert_eq(otfx_action(&srv, camps[i], "launch"), 200);
    }
    cr_assert_eq(rcv_wait_unique(rcv, 2, 10000), 2);
    cr_assert_eq(wait_sends("sk", 1), 1);
    cr_assert_eq(wait_sends(lng, 1), 1);
    char short_key[600], long_key[600], long_id[64];
    snprintf(short_key, sizeof short_key, "send:sk:webhook:%s", cust);
    snprintf(long_key, sizeof long_key, "send:%s:webhook:%s", lng, cust);
    cr_assert_eq(rcv_count_key(rcv, short_key), 1, "the message key is %s", short_key);
    cr_assert_eq(rcv_count_key(rcv, long_key), 1, "the message key is %s", long_key);
    cr_assert_gt(strlen(long_key), 120);
    size_t n = strlen(long_key);
    snprintf(long_id, sizeof long_id, "send:h%08x%08x", hash_fnv1a(long_key, n, HASH_FNV_INIT),
             hash_fnv1a(long_key, n, 0x01000193u));
    char body[2400];
    snprintf(body, sizeof body,
             "[{\"type\":\"send\",\"customer_id\":\"%s\",\"campaign_id\":\"sk\","
             "\"channel\":\"webhook\",\"event_id\":\"send:%s\"},"
             "{\"type\":\"send\",\"customer_id\":\"%s\",\"campaign_id\":\"%s\","
             "\"channel\":\"webhook\",\"event_id\":\"%s\"},"
             "{\"type\":\"send\",\"customer_id\":\"%s\",\"campaign_id\":\"sk\","
             "\"channel\":\"webhook\",\"event_id\":\"send:%s:again\"}]",
             cust, short_key, cust, lng, long_id, cust, short_key);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/events", body, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "duplicates")), 2, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "accepted")), 1, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(wait_sends("sk", 2), 2, "the event with a new id counts");
    cr_assert_eq(wait_sends(lng, 1), 1, "the repeated report does not");
}
