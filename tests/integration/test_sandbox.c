/*
 * test_sandbox.c — issue 13's hostile scripts against a real server, and
 * issue 12's read-only inputs.  Each hostile script runs where a rule can
 * run — in a hook (decide), at file load (hot reload, restart), through
 * POST /api/v1/rules/validate, through `promod check` — and each time the
 * test shows, while the hostile call is provably still in flight (its
 * print() marker is in the log, its connection has no answer yet), that
 * /healthz and another campaign's decide are answered; then that the
 * hostile call ends with its budget / time / stack error.  No timing
 * asserts: every wait is for a condition with a generous deadline.
 *
 * The server has two workers.  Probes go out on 16 fresh connections (the
 * kernel spreads them over the workers' sockets); one answered while the
 * hostile call is still running is on the free worker, and the decide probe
 * reuses that kept-alive connection.  (All 16 landing on the busy worker has
 * odds of 1 in 65,536.)
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "fixture.h"

static struct tfx_server srv;

#define WEB "return { channel = 'web', policy = { customer = { { 100000, '1d' } } } }\n"
#define GOOD                                                                                    \
    "return { id = 'good', channels = { 'web' }, priority = 10,\n"                              \
    "  variants = { { id = 'A', content = { t = 'Welcome, {{first_name|friend}}' } } },\n"      \
    "  eligible = function(p, ctx) local t = {} for i = 1, 50 do t[i] = i end return #t == 50 end }\n"

/* the window in which a hostile call is in flight: its CPU time limit */
#define SLOW_LIMITS "threads = 2, hook_time_limit_ms = 4000, load_time_limit_ms = 4000," \
                    " instruction_budget = 1000000000,"

static void start(const char *config)
{
    tfx_server_init(&srv, config);
    tfx_write(&srv, "plugins/web.lua", WEB);
    tfx_write(&srv, "rules/good.lua", GOOD);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(sandbox, .fini = teardown, .timeout = 300);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* a raw HTTP/1.1 client with keep-alive                               */

struct conn {
    int fd;
    char buf[65536];
    size_t len;
};

static int conn_open(struct conn *c)
{
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static void conn_send(struct conn *c, const char *method, const char *path, const char *json)
{
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, json ? strlen(json) : 0, json ? json : "");
    cr_assert(n > 0 && (size_t)n < sizeof req);
    cr_assert_eq(send(c->fd, req, (size_t)n, MSG_NOSIGNAL), n);
}

/* Is a whole response buffered?  Returns its length (0 = not yet). */
static size_t conn_complete(struct conn *c)
{
    c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return 0;
    char *cl = strcasestr(c->buf, "Content-Length:");
    size_t body = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
    size_t total = (size_t)(end + 4 - c->buf) + body;
    return c->len >= total ? total : 0;
}

/* Read what is there without blocking; -1 when the peer closed. */
static int conn_pump(struct conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, MSG_DONTWAIT);
    if (n > 0) {
        c->len += (size_t)n;
        return 1;
    }
    if (n == 0)
        return -1;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
}

/* Wait for a whole response (deadline in seconds); its status, body in
 * *body (points into c->buf, valid until the next use). */
static int conn_wait(struct conn *c, double deadline, const char **body)
{
    double end = now_s() + deadline;
    while (!conn_complete(c)) {
        struct pollfd p = { c->fd, POLLIN, 0 };
        if (now_s() > end || poll(&p, 1, 200) < 0)
            return 0;
        if (p.revents && conn_pump(c) < 0 && !conn_complete(c))
            return 0;
    }
    *body = strstr(c->buf, "\r\n\r\n") + 4;
    return atoi(c->buf + 9);
}

/* Forget the response just read (keep-alive: the next one follows). */
static void conn_next(struct conn *c)
{
    size_t n = conn_complete(c);
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* ------------------------------------------------------------------ */
/* probes while a hostile call is in flight                            */

static int log_has(const char *marker)
{
    char *log = tfx_server_log(&srv);
    int has = log && strstr(log, marker) != NULL;
    free(log);
    return has;
}

static void wait_log(const char *marker)
{
    double end = now_s() + 60;
    while (!log_has(marker)) {
        cr_assert_lt(now_s(), end, "\"%s\" never appeared in the server log", marker);
        usleep(20000);
    }
}

/* Does the hostile connection still have no answer (and is it open)? */
static int still_in_flight(struct conn *h)
{
    int r = conn_pump(h);
    return r >= 0 && h->len == 0;
}

#define DECIDE_GOOD "{\"customer_id\":\"c1\",\"channel\":\"web\",\"limit\":5,\"dry_run\":true}"

/* With the hostile call known to be running on `h`: /healthz and another
 * campaign's decide are answered before `h` gets any answer. */
static void probe_while_in_flight(struct conn *h)
{
    enum { N = 16 };
    struct conn *p = calloc(N, sizeof *p);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conn_open(&p[i]), 0);
        conn_send(&p[i], "GET", "/healthz", NULL);
    }
    int free_conn = -1;
    double end = now_s() + 60;
    while (free_conn < 0) {
        cr_assert(still_in_flight(h), "the hostile call ended before a probe was answered");
        cr_assert_lt(now_s(), end, "no probe answered");
        struct pollfd pf[N];
        for (int i = 0; i < N; i++)
            pf[i] = (struct pollfd){ p[i].fd, POLLIN, 0 };
        poll(pf, N, 100);
        for (int i = 0; i < N && free_conn < 0; i++)
            if (pf[i].revents && conn_pump(&p[i]) >= 0 && conn_complete(&p[i]))
                free_conn = i;
    }
    const char *body;
    struct conn *f = &p[free_conn];
    cr_assert_eq(conn_wait(f, 1, &body), 200);
    cr_assert_not_null(strstr(body, "\"ok\""), "%s", body);
    cr_assert(still_in_flight(h), "the hostile call ended during the probes");
    conn_next(f);
    conn_send(f, "POST", "/api/v1/decide", DECIDE_GOOD);
    cr_assert_eq(conn_wait(f, 60, &body), 200, "decide on the free worker");
    cr_assert_not_null(strstr(body, "\"campaign_id\":\"good\""), "%s", body);
    cr_assert(still_in_flight(h), "the hostile call ended during the decide probe");
    for (int i = 0; i < N; i++)
        close(p[i].fd);
    free(p);
}

/* After a hostile call: the server is alive and serves everyone. */
static void still_serving(void)
{
    cr_assert(tfx_server_alive(&srv), "the server died");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", DECIDE_GOOD, &r), 200);
    cr_assert_not_null(strstr(r.body, "\"campaign_id\":\"good\""), "%s", r.body);
    tfx_resp_free(&r);
}

/* ------------------------------------------------------------------ */
/* the hostile scripts of issue 13                                     */

struct hostile {
    const char *name;
    const char *code;   /* runs forever (or crashes) without the fixes */
    const char *error;  /* what ends it (part of the message) */
    int slow;           /* 1: in flight until the time limit; 0: ends at once */
};

static const struct hostile hostiles[] = {
    { "segfault", "local function f(s) return (string.gsub(s, '.', f)) end f('abc')",
      "C stack overflow", 0 },
    /* 10^9 instructions or 4 s of CPU, whichever comes first */
    { "wedge", "xpcall(function() while true do end end, function() while true do end end)",
      "exceeded", 1 },
    { "slow_c", "local x = ('a'):rep(20000):find('^.-.-.-b')", "time limit exceeded", 1 },
};

#define NHOSTILE (sizeof hostiles / sizeof hostiles[0])

/* in a hook: eligible runs the script when ctx.attack is set */
static void hostile_in_hook(const struct hostile *h)
{
    start(SLOW_LIMITS);
    char src[1024];
    snprintf(src, sizeof src,
             "return { id = 'hostile', channels = { 'web' }, priority = 50,\n"
             "  variants = { { id = 'A', content = { t = 'x' } } },\n"
             "  eligible = function(p, ctx)\n"
             "    if not ctx.attack then return false end\n"
             "    print('HOSTILE-HOOK-%s')\n"
             "    %s\n"
             "    return true\n"
             "  end }\n", h->name, h->code);
    tfx_write(&srv, "rules/hostile.lua", src);
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r);
    tfx_resp_free(&r);
    struct conn hc;
    cr_assert_eq(conn_open(&hc), 0);
    conn_send(&hc, "POST", "/api/v1/decide",
              "{\"customer_id\":\"c1\",\"channel\":\"web\",\"limit\":5,\"dry_run\":true,"
              "\"explain\":true,\"context\":{\"attack\":true}}");
    char marker[64];
    snprintf(marker, sizeof marker, "HOSTILE-HOOK-%s", h->name);
    wait_log(marker);
    if (h->slow)
        probe_while_in_flight(&hc);
    const char *body;
    cr_assert_eq(conn_wait(&hc, 120, &body), 200, "the hostile decide got no answer");
    /* the hostile campaign is skipped with its error; the good one served */
    cr_assert_not_null(strstr(body, "\"campaign_id\":\"good\",\"variant\""), "%s", body);
    cr_assert_not_null(strstr(body, "\"error\":\"eligible: "), "%s", body);
    cr_assert_not_null(strstr(body, "rules/hostile.lua:"), "%s", body);
    cr_assert_not_null(strstr(body, h->error), "%s", body);
    close(hc.fd);
    still_serving();
}

/* at file load: hot reload of a new file, then a restart with it present */
static void hostile_at_load(const struct hostile *h)
{
    start(SLOW_LIMITS);
    char src[1024];
    snprintf(src, sizeof src,
             "print('HOSTILE-LOAD-%s')\n%s\n"
             "return { id = 'hostile', channels = { 'web' },\n"
             "  variants = { { id = 'A', content = { t = 'x' } } },\n"
             "  eligible = function() return true end }\n", h->name, h->code);
    tfx_write(&srv, "rules/hostile.lua", src);
    char marker[64];
    snprintf(marker, sizeof marker, "HOSTILE-LOAD-%s", h->name);
    wait_log(marker);
    if (h->slow) {
        /* the reloader (main thread) is busy with the file: the workers are not */
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
        tfx_resp_free(&r);
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", DECIDE_GOOD, &r), 200);
        cr_assert_not_null(strstr(r.body, "\"campaign_id\":\"good\""), "%s", r.body);
        tfx_resp_free(&r);
        /* ... and the load was still running then: its error is not out yet */
        cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
        int reported = strstr(r.body, h->error) != NULL;
        tfx_resp_free(&r);
        cr_assert_not(reported, "the load had ended already");
    }
    /* the file is reported with its error; the rest keeps serving */
    double end = now_s() + 120;
    for (;;) {
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
        int done = strstr(r.body, "rules/hostile.lua") && strstr(r.body, h->error);
        if (done)
            cr_assert_not_null(strstr(r.body, "rules/hostile.lua:"), "%s", r.body);
        tfx_resp_free(&r);
        if (done)
            break;
        cr_assert_lt(now_s(), end, "the broken file was never reported");
        usleep(50000);
    }
    still_serving();
    /* a restart with the file present listens and reports it (with a
     * shorter load limit: the fixture waits 10 s for the port) */
    cr_assert_eq(tfx_server_stop(&srv), 0, "SIGTERM did not stop the server cleanly");
    FILE *cf = fopen(srv.config, "r");
    char cfg[4096];
    size_t cl = fread(cfg, 1, sizeof cfg - 1, cf);
    fclose(cf);
    cfg[cl] = '\0';
    char *at = strstr(cfg, "load_time_limit_ms = 4000");
    cr_assert_not_null(at);
    memcpy(at, "load_time_limit_ms =  300", 25);
    cf = fopen(srv.config, "w");
    fputs(cfg, cf);
    fclose(cf);
    cr_assert_eq(tfx_server_start(&srv), 0, "the server did not come back");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert_not_null(strstr(r.body, h->error), "%s", r.body);
    tfx_resp_free(&r);
    still_serving();
}

/* through POST /api/v1/rules/validate */
static void hostile_via_validate(const struct hostile *h)
{
    start(SLOW_LIMITS);
    char src[1024], body[2048];
    snprintf(src, sizeof src,
             "print('HOSTILE-VALIDATE-%s') %s return { channels = { 'web' },"
             " variants = { { id = 'A', content = {} } }, eligible = function() return true end }",
             h->name, h->code);
    json_t *j = json_pack("{s:s,s:s}", "script", src, "name", "hostile.lua");
    char *text = json_dumps(j, 0);
    snprintf(body, sizeof body, "%s", text);
    free(text);
    json_decref(j);
    struct conn hc;
    cr_assert_eq(conn_open(&hc), 0);
    conn_send(&hc, "POST", "/api/v1/rules/validate", body);
    char marker[64];
    snprintf(marker, sizeof marker, "HOSTILE-VALIDATE-%s", h->name);
    wait_log(marker);
    if (h->slow)
        probe_while_in_flight(&hc);
    const char *rb;
    cr_assert_eq(conn_wait(&hc, 120, &rb), 422, "validate's answer");
    cr_assert_not_null(strstr(rb, "rules/hostile.lua:"), "%s", rb);
    cr_assert_not_null(strstr(rb, h->error), "%s", rb);
    close(hc.fd);
    still_serving();
}

/* through `promod check`: exit 1 with file:line, no crash, no hang */
static void hostile_via_check(const struct hostile *h)
{
    tfx_server_init(&srv, "load_time_limit_ms = 1000, instruction_budget = 1000000000,");
    tfx_write(&srv, "plugins/web.lua", WEB);
    tfx_write(&srv, "rules/good.lua", GOOD);
    char src[1024];
    snprintf(src, sizeof src, "%s\nreturn { channels = { 'web' }, variants = { { id = 'A',"
                              " content = {} } }, eligible = function() return true end }\n",
             h->code);
    tfx_write(&srv, "rules/hostile.lua", src);
    char *out = NULL;
    int st = tfx_promod(&out, "check", "-c", srv.config, srv.rules, srv.plugins, (char *)NULL);
    cr_assert_eq(st, 1, "exit status %d (-1: killed by a signal):\n%s", st, out);
    cr_assert_not_null(strstr(out, "hostile.lua:1: "), "%s", out);
    cr_assert_not_null(strstr(out, h->error), "%s", out);
    free(out);
}

/* Criterion passes parameters to a fresh process as bytes: an index, not
 * pointers. */
struct hparam {
    int i;
};

static struct hparam *hparams(void)
{
    static struct hparam p[NHOSTILE];
    for (size_t i = 0; i < NHOSTILE; i++)
        p[i].i = (int)i;
    return p;
}

ParameterizedTestParameters(sandbox, in_hook) { return cr_make_param_array(struct hparam, hparams(), NHOSTILE); }
ParameterizedTest(struct hparam *p, sandbox, in_hook) { hostile_in_hook(&hostiles[p->i]); }

ParameterizedTestParameters(sandbox, at_load) { return cr_make_param_array(struct hparam, hparams(), NHOSTILE); }
ParameterizedTest(struct hparam *p, sandbox, at_load) { hostile_at_load(&hostiles[p->i]); }

ParameterizedTestParameters(sandbox, via_validate)
{
    return cr_make_param_array(struct hparam, hparams(), NHOSTILE);
}
ParameterizedTest(struct hparam *p, sandbox, via_validate) { hostile_via_validate(&hostiles[p->i]); }

ParameterizedTestParameters(sandbox, via_check) { return cr_make_param_array(struct hparam, hparams(), NHOSTILE); }
ParameterizedTest(struct hparam *p, sandbox, via_check) { hostile_via_check(&hostiles[p->i]); }

/* The wedge with the default budget: the instruction budget stops the
 * handler as well (it used to spin forever: SIGTERM could not stop it). */
Test(sandbox, wedge_with_default_budget)
{
    start(NULL);
    tfx_write(&srv, "rules/hostile.lua",
              "return { id = 'hostile', channels = { 'web' }, priority = 50,\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    xpcall(function() while true do end end, function() while true do end end)\n"
              "    return true\n  end }\n");
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                         "{\"customer_id\":\"c1\",\"channel\":\"web\",\"dry_run\":true,\"explain\":true}",
                         &r), 200);
    cr_assert_not_null(strstr(r.body, "rules/hostile.lua:4: instruction budget exceeded"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_server_stop(&srv), 0, "SIGTERM");
}

/* ------------------------------------------------------------------ */
/* 5. a campaign keeping memory between calls                           */

Test(sandbox, memory_hog_fails_alone)
{
    start("threads = 1, lua_memory_mb = 64,");
    tfx_write(&srv, "rules/hog.lua",
              "local cache = {}\n"
              "return { id = 'hog', channels = { 'web' }, priority = 50,\n"
              "  variants = { { id = 'A', content = { t = 'hog' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    for i = 1, 50 do cache[#cache + 1] = ('x'):rep(40000) .. #cache end\n"
              "    return false, 'cached ' .. #cache\n  end }\n");
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r);
    tfx_resp_free(&r);
    int disabled = 0;
    for (int i = 0; i < 400 && !disabled; i++) {
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                             "{\"customer_id\":\"c1\",\"channel\":\"web\",\"dry_run\":true,"
                             "\"explain\":true}", &r), 200);
        /* the neighbour is served on every request */
        cr_assert_not_null(strstr(r.body, "\"campaign_id\":\"good\",\"variant\""), "decide %d: %s", i,
                           r.body);
        disabled = strstr(r.body, "rules/hog.lua: disabled: it retained") != NULL;
        tfx_resp_free(&r);
    }
    cr_assert(disabled, "the hog was never disabled");
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r), 200);
    cr_assert_not_null(strstr(r.body, "rules/hog.lua: disabled: it retained"), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "\"disabled\":"), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    char series[512];
    snprintf(series, sizeof series, "file=\"%s/hog.lua\"", srv.rules);
    double kept = 0;
    cr_assert(tfx_metric(r.body, "promod_lua_file_retained_bytes", series, &kept), "%s", r.body);
    cr_assert_gt(kept, 1 << 20);
    double n = 0;
    cr_assert(tfx_metric(r.body, "promod_lua_files_disabled_total", "", &n) && n >= 1);
    tfx_resp_free(&r);
    still_serving();
}

/* ------------------------------------------------------------------ */
/* 6. log floods                                                        */

Test(sandbox, log_flood_is_rate_limited)
{
    start("threads = 1, lua_log_lines_per_sec = 20,");
    tfx_write(&srv, "rules/flood.lua",
              "return { id = 'flood', channels = { 'web' }, priority = 50,\n"
              "  variants = { { id = 'A', content = { t = 'x' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    for i = 1, 10000 do print('FLOOD', i) end\n"
              "    for i = 1, 10000 do promo.log('FLOOD', i) end\n"
              "    return false\n  end }\n");
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide", DECIDE_GOOD, &r), 200);
    cr_assert_not_null(strstr(r.body, "\"campaign_id\":\"good\""), "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    double dropped = 0;
    char series[512];
    snprintf(series, sizeof series, "file=\"%s/flood.lua\"", srv.rules);
    cr_assert(tfx_metric(r.body, "promod_lua_log_dropped_total", series, &dropped), "%s", r.body);
    tfx_resp_free(&r);
    /* at 20 lines/s with bursts of 100, nearly all 20,000 are dropped */
    cr_assert_geq(dropped, 20000 - 300, "dropped %.0f", dropped);
    char *log = tfx_server_log(&srv);
    int lines = 0;
    for (const char *p = log; (p = strstr(p, "msg=\"FLOOD ")); p++)
        lines++;
    cr_assert_leq(lines, 300, "%d flood lines reached the log", lines);
    cr_assert_not_null(strstr(log, "lua log lines dropped"), "the drop is said once");
    free(log);
}

/* ------------------------------------------------------------------ */
/* issues 12/13: read-only inputs, per-file libraries                   */

Test(sandbox, campaigns_cannot_steer_each_other)
{
    start("threads = 1,");
    tfx_write(&srv, "rules/lib/util.lua",
              "local M = {}\nfunction M.greet(n) return 'Hi ' .. n end\nreturn M\n");
    tfx_write(&srv, "rules/a_hostile.lua",
              "local util = require 'util'\n"
              "return { id = 'hostile', channels = { 'web' }, priority = 90,\n"
              "  variants = { { id = 'A', content = { t = 'hostile' } } },\n"
              "  eligible = function(p, ctx)\n"
              "    util.greet = function() return 'PWNED' end\n"
              "    local tries = {\n"
              "      function() p.first_name = 'PWNED' end,\n"
              "      function() p.stats.events = 1e9 end,\n"
              "      function() p.address.city = 'Nowhere' end,\n"
              "      function() p.tags[1] = 'x' end,\n"
              "      function() ctx.country = 'XX' end,\n"
              "      function() rawset(p, 'tier', 'x') end,\n"
              "      function() table.insert(p.tags, 'x') end,\n"
              "      function() table.remove(p.tags) end,\n"
              "      function() setmetatable(p, { __index = function() return 'PWNED' end }) end,\n"
              "    }\n"
              "    for i, f in ipairs(tries) do\n"
              "      if pcall(f) then error('write ' .. i .. ' went through') end\n"
              "    end\n"
              "    p.first_name = 'PWNED'\n"
              "  end,\n"
              "  score = function(p) p.tier = 'x' return 1 end }\n");
    tfx_write(&srv, "rules/b_lib.lua",
              "local util = require 'util'\n"
              "return { id = 'uses-lib', channels = { 'web' }, priority = 80,\n"
              "  variants = { { id = 'A', content = { t = 'lib' } } },\n"
              "  eligible = function(p) return util.greet(p.first_name) == 'Hi Ana', 'greet broken' end }\n");
    tfx_write(&srv, "rules/c_ctx.lua",
              "return { id = 'wants-fr', channels = { 'web' }, priority = 70,\n"
              "  variants = { { id = 'A', content = { t = 'fr' } } },\n"
              "  eligible = function(p, ctx) return ctx.country == 'FR', 'country ' .. tostring(ctx.country) end }\n");
    tfx_write(&srv, "rules/d_render.lua",
              "return { id = 'welcome', channels = { 'web' }, priority = 60,\n"
              "  variants = { { id = 'A', content = { t = 'Welcome, {{first_name}} of {{address.city}}!' } } },\n"
              "  eligible = function(p) return p.stats ~= nil and p.stats.events >= 1 and #p.tags == 2"
              " and p.tags[1] == 'vip' and p.tier == 'gold', 'profile changed' end,\n"
              "  score = function(p) local n = 0 for _ in pairs(p) do n = n + 1 end return n end }\n");
    struct tfx_resp r;
    tfx_req(&srv, "POST", "/api/v1/rules/reload", NULL, &r);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/c1",
                         "{\"first_name\":\"Ana\",\"tier\":\"gold\",\"tags\":[\"vip\",\"eu\"],"
                         "\"address\":{\"city\":\"Paris\"}}", &r) / 100, 2, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/events",
                         "{\"type\":\"impression\",\"customer_id\":\"c1\",\"campaign_id\":\"good\"}",
                         &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                             "{\"customer_id\":\"c1\",\"channel\":\"web\",\"limit\":10,\"dry_run\":true,"
                             "\"explain\":true,\"context\":{\"country\":\"FR\"}}", &r), 200);
        const char *b = r.body;
        cr_assert_not_null(strstr(b, "\"campaign_id\":\"uses-lib\",\"variant\""), "%s", b);
        cr_assert_not_null(strstr(b, "\"campaign_id\":\"wants-fr\",\"variant\""), "%s", b);
        cr_assert_not_null(strstr(b, "Welcome, Ana of Paris!"), "%s", b);
        cr_assert_null(strstr(b, "PWNED"), "%s", b);
        cr_assert_null(strstr(b, "went through"), "%s", b);
        cr_assert_not_null(strstr(b, "\"error\":\"eligible: "), "%s", b);
        cr_assert_not_null(strstr(b, "rules/a_hostile.lua:20: profile is read-only"), "%s", b);
        tfx_resp_free(&r);
    }
}
