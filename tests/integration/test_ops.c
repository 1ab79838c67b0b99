/*
 * test_ops.c — what an operator touches: /healthz, /metrics, the access
 * log, SIGTERM and restart, config errors at start, and the
 * `promod import profiles` command.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"
#include "fixture.h"

static struct tfx_server srv;

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(ops, .fini = teardown, .timeout = 90);

static void start(const char *cfg)
{
    tfx_server_init(&srv, cfg);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static char *metrics(void)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &r), 200);
    cr_assert(strstr(r.ctype, "text/plain"), "content type %s", r.ctype);
    char *body = r.body;
    r.body = NULL;
    tfx_resp_free(&r);
    return body;
}

static double metric(const char *text, const char *name, const char *labels)
{
    double v = -1;
    cr_assert(tfx_metric(text, name, labels, &v), "series %s{%s} missing", name, labels);
    return v;
}

static void put(const char *id, const char *body, int want)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "PUT", path, body, &r), want, "PUT %s: %s", id, r.body);
    tfx_resp_free(&r);
}

Test(ops, healthz)
{
    start(NULL);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/healthz", NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "ok");
    cr_assert(json_is_integer(json_object_get(r.json, "uptime_s")));
    tfx_resp_free(&r);
    /* HEAD answers like GET without a body */
    static const char head[] = "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *raw = tfx_raw(&srv, head, sizeof head - 1);
    cr_assert(!strncmp(raw, "HTTP/1.1 200", 12), "%s", raw);
    free(raw);
}

Test(ops, metrics_series)
{
    start(NULL);
    put("m1", "{\"a\":1}", 201);
    put("m2", "{\"a\":2}", 201);
    put("m3", "{\"a\":3}", 201);
    put("m3", "{\"a\":4}", 200);
    struct tfx_resp r;
    tfx_req(&srv, "GET", "/no/such/route", NULL, &r);
    tfx_resp_free(&r);
    tfx_req(&srv, "GET", "/api/v1/profiles/nobody", NULL, &r);
    tfx_resp_free(&r);
    char *m = metrics();
    cr_assert(strstr(m, "# TYPE promod_http_requests_total counter"), "%s", m);
    cr_assert_eq(metric(m, "promod_http_requests_total", "route=\"/api/v1/profiles/{id}\",status=\"201\""), 3);
    cr_assert_eq(metric(m, "promod_http_requests_total", "route=\"/api/v1/profiles/{id}\",status=\"200\""), 1);
    cr_assert_eq(metric(m, "promod_http_requests_total", "route=\"/api/v1/profiles/{id}\",status=\"404\""), 1);
    cr_assert_eq(metric(m, "promod_http_requests_total", "route=\"unmatched\",status=\"404\""), 1);
    /* histogram: cumulative buckets ending in +Inf == count, and a sum */
    cr_assert(strstr(m, "# TYPE promod_http_request_duration_seconds histogram"));
    const char *lbl = "route=\"/api/v1/profiles/{id}\",status=\"201\"";
    double prev = 0;
    static const char *les[] = { "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                                 "0.025", "0.05", "0.1", "0.25", "1", "5", "+Inf" };
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        char l[200];
        snprintf(l, sizeof l, "%s,le=\"%s\"", lbl, les[i]);
        double v = metric(m, "promod_http_request_duration_seconds_bucket", l);
        cr_assert_geq(v, prev, "bucket le=%s is not cumulative", les[i]);
        prev = v;
    }
    cr_assert_eq(prev, 3, "+Inf bucket");
    cr_assert_eq(metric(m, "promod_http_request_duration_seconds_count", lbl), 3);
    double sum = metric(m, "promod_http_request_duration_seconds_sum", lbl);
    cr_assert(sum > 0 && sum < 30, "sum %f", sum);
    /* the store */
    double ratio = metric(m, "promod_lmdb_map_usage_ratio", "");
    cr_assert(ratio > 0 && ratio < 1, "map usage ratio %f", ratio);
    cr_assert_gt(metric(m, "promod_lmdb_map_size_bytes", ""), 0);
    cr_assert_eq(metric(m, "promod_lmdb_map_max_bytes", ""), 0, "no cap by default");
    cr_assert_eq(metric(m, "promod_lmdb_map_growths_total", ""), 0);
    cr_assert_eq(metric(m, "promod_store_full_errors_total", ""), 0);
    double disk_free = metric(m, "promod_store_disk_free_bytes", "");
    cr_assert(disk_free > 0 && disk_free < metric(m, "promod_store_disk_size_bytes", ""), "disk free %f", disk_free);
    cr_assert_eq(metric(m, "promod_profiles", ""), 3);
    cr_assert_eq(metric(m, "promod_store_entries", "db=\"profiles\""), 3);
    cr_assert_geq(metric(m, "promod_store_durable_commits_total", ""), 4);
    cr_assert_gt(metric(m, "promod_store_syncs_total", ""), 0);
    free(m);
    /* the count follows deletes */
    tfx_req(&srv, "DELETE", "/api/v1/profiles/m1", NULL, &r);
    tfx_resp_free(&r);
    m = metrics();
    cr_assert_eq(metric(m, "promod_profiles", ""), 2);
    free(m);
}

Test(ops, access_log)
{
    start("access_log = true,");
    put("al-1", "{}", 201);
    struct tfx_resp r;
    tfx_req(&srv, "GET", "/nope", NULL, &r);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_server_stop(&srv), 0);
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "msg=\"access\" method=PUT path=\"/api/v1/profiles/al-1\" "
                          "route=\"/api/v1/profiles/{id}\" status=201"), "%s", log);
    cr_assert(strstr(log, "msg=\"access\" method=GET path=\"/nope\" route=\"-\" status=404"), "%s", log);
    free(log);
}

Test(ops, no_access_log_by_default)
{
    start(NULL);
    put("al-2", "{}", 201);
    cr_assert_eq(tfx_server_stop(&srv), 0);
    char *log = tfx_server_log(&srv);
    cr_assert_null(strstr(log, "msg=\"access\""), "%s", log);
    free(log);
}

Test(ops, sigterm_exits_zero_and_restart_keeps_data)
{
    start(NULL);
    put("keep-1", "{\"v\":\"kept\"}", 201);
    cr_assert_eq(tfx_server_stop(&srv), 0, "SIGTERM exit status");
    char *log = tfx_server_log(&srv);
    cr_assert(strstr(log, "shutting down") && strstr(log, "msg=\"stopped\""), "%s", log);
    free(log);
    cr_assert_eq(tfx_server_start(&srv), 0);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/keep-1", NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "v")), "kept");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_server_stop(&srv), 0);
}

/* a config error stops the start with exit status 2 and names the key */
struct cfgcase {
    char fields[120];
    char want[80];
};

Test(ops, config_errors_exit_2)
{
    static const struct cfgcase cases[] = {
        { "lisen = '127.0.0.1:8080',", "lisen: unknown key" },
        { "threads = 'many',", "threads: expected a number" },
        { "api_keys = { { id = 'x', key = 'short', role = 'admin' } },", "api_keys[1]: key" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tfx_server_init(&srv, cases[i].fields);
        char *out = NULL;
        int st = tfx_promod(&out, "serve", "-c", srv.config, "--listen", "127.0.0.1:0", (char *)NULL);
        cr_assert_eq(st, 2, "%s: exit %d: %s", cases[i].fields, st, out);
        cr_assert(strstr(out, cases[i].want), "%s: output lacks '%s': %s", cases[i].fields, cases[i].want, out);
        cr_assert(strstr(out, srv.config), "the error does not name the file: %s", out);
        free(out);
        /* and the fixture sees it as a failed start */
        cr_assert_neq(tfx_server_start(&srv), 0);
        tfx_server_cleanup(&srv);
    }
    /* a runtime error in the config names file:line */
    tfx_server_init(&srv, NULL);
    tfx_write(&srv, "promod.lua", "local t = {}\nlocal x = t.missing.field\nreturn t\n");
    char *out = NULL;
    cr_assert_eq(tfx_promod(&out, "serve", "-c", srv.config, (char *)NULL), 2);
    char want[400];
    snprintf(want, sizeof want, "%s:2:", srv.config);
    cr_assert(strstr(out, want), "no file:line in: %s", out);
    free(out);
    /* a config that does not exist */
    cr_assert_eq(tfx_promod(&out, "serve", "-c", "/nonexistent/promod.lua", (char *)NULL), 2);
    cr_assert(strstr(out, "/nonexistent/promod.lua"), "%s", out);
    free(out);
}

Test(ops, cli_usage_errors)
{
    char *out = NULL;
    cr_assert_eq(tfx_promod(&out, (char *)NULL, (char *)NULL), 2); /* no arguments at all */
    cr_assert(strstr(out, "usage:"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "frobnicate", (char *)NULL), 2);
    cr_assert(strstr(out, "unknown command frobnicate"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "serve", "--bogus", (char *)NULL), 2);
    cr_assert(strstr(out, "unknown option --bogus"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "serve", "--listen", (char *)NULL), 2);
    cr_assert(strstr(out, "--listen needs a value"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "serve", "--listen", "nonsense", (char *)NULL), 2);
    cr_assert(strstr(out, "--listen"), "%s", out);
    free(out);
    cr_assert_eq(tfx_promod(&out, "import", "campaigns", "x.ndjson", (char *)NULL), 2);
    free(out);
    cr_assert_eq(tfx_promod(&out, "version", (char *)NULL), 0);
    cr_assert(strstr(out, "promod "), "%s", out);
    free(out);
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(content, f);
    fclose(f);
}

Test(ops, import_cli)
{
    tfx_server_init(&srv, NULL);
    char file[400];
    snprintf(file, sizeof file, "%s/profiles.ndjson", srv.dir);
    write_file(file, "{\"id\":\"cli-1\",\"tier\":\"gold\"}\n"
                     "\n"
                     "{\"id\":\"cli-2\",\"n\":[1,2]}\r\n"
                     "{\"tier\":\"no id\"}\n"
                     "{broken\n"
                     "{\"id\":\"cli-3\"}");
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 3, "some lines failed: exit 3, got %d: %s", st, out);
    char want[500];
    snprintf(want, sizeof want, "%s:4: missing string \"id\"", file);
    cr_assert(strstr(out, want), "no '%s' in: %s", want, out);
    snprintf(want, sizeof want, "%s:5: line 1 column", file);
    cr_assert(strstr(out, want), "no '%s' in: %s", want, out);
    cr_assert(strstr(out, "\"imported\": 3, \"failed\": 2"), "%s", out);
    free(out);
    /* a missing file */
    cr_assert_eq(tfx_promod(&out, "import", "profiles", "/nonexistent/p.ndjson", "-c", srv.config, (char *)NULL), 1);
    cr_assert(strstr(out, "/nonexistent/p.ndjson"), "%s", out);
    free(out);
    /* the server sees what the command imported */
    cr_assert_eq(tfx_server_start(&srv), 0);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/cli-2", NULL, &r), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "n")), 2);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/cli-3", NULL, &r), 200, "last line without newline");
    tfx_resp_free(&r);
}

/* The contract: import works with the server stopped or running. */
Test(ops, import_cli_while_serving)
{
    start(NULL);
    put("live-0", "{\"before\":true}", 201);
    char file[400];
    snprintf(file, sizeof file, "%s/more.ndjson", srv.dir);
    struct buf b = BUF_INIT;
    for (int i = 0; i < 2000; i++)
        buf_printf(&b, "{\"id\":\"live-%04d\",\"i\":%d}\n", i + 1, i + 1);
    write_file(file, b.p);
    buf_free(&b);
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 0, "exit %d: %s", st, out);
    cr_assert(strstr(out, "\"imported\": 2000, \"failed\": 0"), "%s", out);
    free(out);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/live-2000", NULL, &r), 200, "the running server sees the import");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "i")), 2000);
    tfx_resp_free(&r);
    put("live-after", "{}", 201);
    char *m = metrics();
    cr_assert_eq(metric(m, "promod_profiles", ""), 2002);
    free(m);
}

/* A file of several 8 MiB blocks, parsed on several threads: line numbers
 * in errors stay exact across blocks and ranges, blank lines count, and a
 * repeated id keeps the last line's value. */
Test(ops, import_cli_large_file_line_numbers)
{
    tfx_server_init(&srv, NULL);
    char file[400];
    snprintf(file, sizeof file, "%s/big.ndjson", srv.dir);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    enum { LINES = 120000 };
    long good = 0, bad = 0, blank = 0;
    char pad[161];
    memset(pad, 'p', 160);
    pad[160] = 0;
    for (long line = 1; line <= LINES; line++) {
        if (line == 10)
            fprintf(f, "{\"id\":\"dup\",\"v\":\"first\"}\n"), good++;
        else if (line == LINES)
            fprintf(f, "{\"id\":\"dup\",\"v\":\"last\"}\n"), good++;
        else if (line % 1009 == 0)
            fprintf(f, "\n"), blank++;
        else if (line % 997 == 0)
            fprintf(f, "{\"id\":\"bad-%ld\",\"x\":}\n", line), bad++;
        else
            fprintf(f, "{\"id\":\"big-%06ld\",\"line\":%ld,\"pad\":\"%s\"}\n", line, line, pad), good++;
    }
    fclose(f);
    struct stat stt;
    cr_assert_eq(stat(file, &stt), 0);
    cr_assert_gt(stt.st_size, 2 * (8 << 20), "the file must span several blocks");
    char *out = NULL;
    int st = tfx_promod(&out, "import", "profiles", file, "-c", srv.config, (char *)NULL);
    cr_assert_eq(st, 3, "exit %d: %.500s", st, out);
    char want[600];
    snprintf(want, sizeof want, "\"imported\": %ld, \"failed\": %ld", good, bad); /* "dup" twice */
    cr_assert(strstr(out, want), "no '%s' in the summary: %s", want, strrchr(out, '{'));
    /* the first 100 errors, each at its exact line */
    int listed = 0;
    for (long line = 997; line <= LINES && listed < 100; line += 997) {
        if (line % 1009 == 0 || line == 10)
            continue;
        snprintf(want, sizeof want, "%s:%ld: line 1 column", file, line);
        cr_assert(strstr(out, want), "error for line %ld missing or misnumbered", line);
        listed++;
    }
    cr_assert_eq(listed, 100);
    free(out);
    cr_assert_eq(tfx_server_start(&srv), 0);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/dup", NULL, &r), 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "v")), "last", "the last line wins");
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/big-119999", NULL, &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "line")), 119999);
    tfx_resp_free(&r);
    char *m = metrics();
    cr_assert_eq(metric(m, "promod_profiles", ""), (double)(good - 1), "distinct ids imported");
    free(m);
}

/* The test clock can stand still: a boundary second must not tick over
 * between setting it and the request that reads it.  Waiting for the real
 * clock to move is a condition wait (bounded), not a sleep. */
Test(ops, test_clock_freezes_and_runs_again)
{
    start("test_clock = true,");
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock",
                         "{\"now\": 1900000000, \"freeze\": true}", &r), 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "now")), 1900000000);
    cr_assert(json_is_true(json_object_get(r.json, "frozen")));
    tfx_resp_free(&r);
    /* frozen: the same second however long we look (until the real clock has
     * visibly moved on) */
    time_t t0 = time(NULL);
    while (time(NULL) < t0 + 2) {
        cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/admin/clock", NULL, &r), 200);
        cr_assert_eq(json_integer_value(json_object_get(r.json, "now")), 1900000000);
        tfx_resp_free(&r);
    }
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", "{\"freeze\": 1, \"now\": 5}", &r), 400);
    cr_assert_str_eq(tfx_err_code(&r), "invalid");
    tfx_resp_free(&r);
    /* running again from where it was set */
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", "{\"now\": 1900000000}", &r), 200);
    cr_assert(json_is_false(json_object_get(r.json, "frozen")));
    tfx_resp_free(&r);
    int moved = 0;
    for (time_t t1 = time(NULL); !moved && time(NULL) < t1 + 30;) {
        cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/admin/clock", NULL, &r), 200);
        moved = json_integer_value(json_object_get(r.json, "now")) > 1900000000;
        tfx_resp_free(&r);
    }
    cr_assert(moved, "the unfrozen clock never moved");
}
