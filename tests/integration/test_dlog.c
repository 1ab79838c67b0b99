/*
 * test_dlog.c — the decision log: sampling 0 logs nothing and 1 logs
 * every decide; a customer's logged decides are in their export, go with
 * their erasure and are listed by GET /api/v1/decisions (cursor pages,
 * bad queries refused); retention sweeps old entries; a queue too small
 * for the traffic drops entries and counts them without failing or
 * holding back a decide; dry runs are not logged; a log written with the
 * older per-entry customer index (before the batch index) is still
 * listed, exported and erased by customer.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlog_tfx.h"
#include "engine/dlog.h"
#include "fixture.h"
#include "store/store.h"

static struct tfx_server srv;

static const char camp[] =
    "return { id = \"hello\", channels = { \"web\" },\n"
    "  variants = { { id = \"A\", content = { h = \"hi\" } } },\n"
    "  eligible = function(p, ctx) return (p.age or 0) >= 20 end }\n";

static void start(const char *cfg, int ncust)
{
    tfx_server_init(&srv, cfg);
    tfx_write(&srv, "rules/hello.lua", camp);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
    dtfx_import(&srv, ncust);
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(dlog, .fini = teardown, .timeout = 300);

static long listed(const char *query)
{
    struct tfx_resp r;
    char path[300];
    snprintf(path, sizeof path, "/api/v1/decisions?%s", query);
    cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", r.body);
    long n = (long)json_array_size(json_object_get(r.json, "decisions"));
    tfx_resp_free(&r);
    return n;
}

Test(dlog, sampling_zero_logs_nothing)
{
    start("decision_log_sample = 0,", 50);
    cr_assert_eq(dtfx_decides(&srv, 300, 50, 1), 300);
    cr_assert_eq(listed("limit=1000"), 0);
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_written_total", ""), 0);
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_dropped_total", ""), 0);
}

Test(dlog, sampling_one_logs_every_decide_and_lists_them_in_pages)
{
    start("decision_log_sample = 1,", 50);
    cr_assert_eq(dtfx_decides(&srv, 300, 50, 1), 300);
    cr_assert_eq(dtfx_wait_logged(&srv, 300), 300);
    /* pages of 70 with the cursor: every entry once, in time order */
    char q[200] = "limit=70";
    long total = 0, pages = 0, last_ts = 0;
    for (;;) {
        struct tfx_resp r;
        char path[300];
        snprintf(path, sizeof path, "/api/v1/decisions?%s", q);
        cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 200, "%s", r.body);
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(r.json, "decisions"), i, d) {
            long ts = (long)json_integer_value(json_object_get(d, "ts_ms"));
            cr_assert_geq(ts, last_ts);
            last_ts = ts;
            cr_assert_eq(strlen(json_string_value(json_object_get(d, "decision_id"))), 20);
            cr_assert(json_is_object(json_object_get(d, "profile")), "the profile as it was");
            cr_assert(json_is_object(json_object_get(json_object_get(d, "request"), "context")));
            total++;
        }
        pages++;
        json_t *next = json_object_get(r.json, "next_cursor");
        if (!json_is_string(next)) {
            tfx_resp_free(&r);
            break;
        }
        snprintf(q, sizeof q, "limit=70&cursor=%s", json_string_value(next));
        tfx_resp_free(&r);
    }
    cr_assert_eq(total, 300);
    cr_assert_eq(pages, 5);
    /* by customer: c0007 had 6 decides (300 over 50 customers) */
    cr_assert_eq(listed("customer_id=c0007&limit=1000"), 6);
    cr_assert_eq(listed("customer_id=nobody&limit=1000"), 0);
    cr_assert_eq(listed("to=1000"), 0, "nothing was logged in 1970");
    cr_assert_eq(listed("customer_id=c0007&to=1000"), 0, "not by customer either");
    cr_assert_eq(listed("customer_id=c0007&from=1000&limit=1000"), 6);
    /* a dry run is not logged */
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/decide",
                         "{\"customer_id\":\"c0007\",\"channel\":\"web\",\"dry_run\":true}", &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(listed("customer_id=c0007&limit=1000"), 6);
    /* bad queries */
    static const char *bad[] = { "cursor=zz", "cursor=0123", "from=later", "limit=0",
                                 "limit=5000", "customer_id=a%20b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[200];
        snprintf(path, sizeof path, "/api/v1/decisions?%s", bad[i]);
        cr_assert_eq(tfx_req(&srv, "GET", path, NULL, &r), 400, "%s: %s", bad[i], r.body);
        cr_assert_str_eq(tfx_err_code(&r), "invalid_query", "%s: %s", bad[i], r.body);
        tfx_resp_free(&r);
    }
}

Test(dlog, export_and_erasure_include_the_customers_logged_decides)
{
    start("decision_log_sample = 1,", 20);
    cr_assert_eq(dtfx_decides(&srv, 100, 20, 1), 100); /* 5 decides per customer */
    struct tfx_resp r;
    /* no wait for the writer: export flushes what is queued */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/profiles/c0003/export", NULL, &r), 200, "%s", r.body);
    json_t *d = json_object_get(r.json, "decisions");
    cr_assert_eq(json_array_size(d), 5, "%s", r.body);
    json_t *e0 = json_array_get(d, 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e0, "request"), "customer_id")),
                     "c0003");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e0, "profile"), "country")),
                     dtfx_country(3));
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/c0003", NULL, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(listed("customer_id=c0003&limit=1000"), 0);
    cr_assert_eq(listed("limit=1000"), 95, "the other customers' entries stay");
    for (int c = 0; c < 20; c++) { /* and stay found by customer: their index rows were kept */
        char q[80];
        snprintf(q, sizeof q, "customer_id=c%04d&limit=1000", c);
        cr_assert_eq(listed(q), c == 3 ? 0 : 5, "%s", q);
    }
    int st = tfx_req(&srv, "GET", "/api/v1/profiles/c0003/export", NULL, &r);
    cr_assert(st == 404 || json_array_size(json_object_get(r.json, "decisions")) == 0, "%d %s", st,
              r.body);
    tfx_resp_free(&r);
    /* nothing of c0003 is left anywhere in the log */
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/decisions?limit=1000", NULL, &r), 200);
    cr_assert_null(strstr(r.body, "c0003"));
    tfx_resp_free(&r);
}

Test(dlog, retention_sweeps_old_entries)
{
    start("decision_log_sample = 1, decision_log_retention_days = 1, test_clock = true,", 20);
    long now = (long)time(NULL);
    char b[64];
    snprintf(b, sizeof b, "{\"now\":%ld}", now);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(dtfx_decides(&srv, 40, 20, 1), 40);
    cr_assert_eq(dtfx_wait_logged(&srv, 40), 40);
    cr_assert_eq(listed("limit=1000"), 40);
    snprintf(b, sizeof b, "{\"now\":%ld}", now + 2 * 86400);
    cr_assert_eq(tfx_req(&srv, "POST", "/api/v1/admin/clock", b, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(dtfx_decides(&srv, 10, 20, 1), 10); /* two days later */
    double swept = 0;
    for (time_t end = time(NULL) + 120; time(NULL) < end && swept < 40;) {
        swept = dtfx_metric(&srv, "promod_decision_log_swept_total", "");
        if (swept < 40)
            usleep(50000); /* polling a condition with a deadline */
    }
    cr_assert_eq(swept, 40, "the writer sweeps the entries past the retention");
    cr_assert_eq(listed("limit=1000"), 10, "the new entries stay");
    cr_assert_eq(listed("customer_id=c0015&limit=1000"), 0, "c0015's old entries went");
    double idx = dtfx_metric(&srv, "promod_decision_log_index_entries", "");
    cr_assert(idx >= 1 && idx <= 10, "the old entries' batch index records go with them: %.0f left",
              idx);
    cr_assert_eq(listed("customer_id=c0005&limit=1000"), 1, "the new entries stay indexed");
}

Test(dlog, a_full_queue_drops_and_counts_without_failing_decides)
{
    start("decision_log_sample = 1, decision_log_queue = 16,", 100);
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_queue_capacity", ""), 16);
    int n = 4000;
    cr_assert_eq(dtfx_decides(&srv, n, 100, 1), n, "every decide is answered");
    double written = dtfx_wait_logged(&srv, n);
    double dropped = dtfx_metric(&srv, "promod_decision_log_dropped_total", "");
    cr_assert_eq(written + dropped, n, "written %.0f + dropped %.0f", written, dropped);
    cr_assert_eq(written, dtfx_metric(&srv, "promod_decision_log_entries", ""),
                 "what is counted as written is in the log");
    cr_assert_eq(dtfx_metric(&srv, "promod_store_entries", "db=\"dlog\""), 0,
                 "the log writes into its own environment, not the main one");
    cr_log_info("queue of 16: %.0f of %d decides logged, %.0f dropped", written, n, dropped);
}

struct older {
    unsigned char (*keys)[12];
    char (*cust)[16];
    int n;
};

static int older_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct older *o = ud;
    struct dlog_entry e;
    cr_assert_eq(klen, 12);
    cr_assert_eq(dlog_entry_decode(val, vlen, &e), 0);
    cr_assert_lt(e.customer_len, 16);
    o->keys = realloc(o->keys, 12 * (size_t)(o->n + 1));
    o->cust = realloc(o->cust, 16 * (size_t)(o->n + 1));
    memcpy(o->keys[o->n], key, 12);
    memcpy(o->cust[o->n], e.customer, e.customer_len);
    o->cust[o->n][e.customer_len] = 0;
    o->n++;
    return 0;
}

/* Rewrite the stopped server's log into the layout of the versions before
 * the batch index: a row customer id \0 entry key → "" per entry, no
 * batch records. */
static int make_older_layout(void)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/dlog", srv.data);
    struct store_opts so = { .dir = dir, .no_writemap = 1 };
    struct store *st;
    struct store_txn *t;
    struct older o = { 0 };
    cr_assert_eq(store_open(&so, &st), 0);
    cr_assert_eq(store_wtxn_begin(st, &t), 0);
    cr_assert_eq(store_scan(t, STORE_DLOG, NULL, 0, NULL, 0, older_cb, &o), 0);
    for (int i = 0; i < o.n; i++) {
        char k[32];
        size_t cl = strlen(o.cust[i]);
        memcpy(k, o.cust[i], cl + 1);
        memcpy(k + cl + 1, o.keys[i], 12);
        cr_assert_eq(store_put(t, STORE_DLOG_CUST, k, cl + 13, "", 0), 0);
    }
    cr_assert_gt(store_del_prefix(t, STORE_DLOG_BATCH, NULL, 0), 0, "the new layout had records");
    cr_assert_eq(store_txn_commit(t, STORE_DURABLE), 0);
    store_close(st);
    free(o.keys);
    free(o.cust);
    return o.n;
}

static long exported(const char *id)
{
    struct tfx_resp r;
    char path[200];
    snprintf(path, sizeof path, "/api/v1/profiles/%s/export", id);
    int st = tfx_req(&srv, "GET", path, NULL, &r);
    long n = st == 200 ? (long)json_array_size(json_object_get(r.json, "decisions")) : 0;
    cr_assert(st == 200 || st == 404, "%d %s", st, r.body);
    tfx_resp_free(&r);
    return n;
}

Test(dlog, a_log_with_the_older_per_entry_index_is_still_listed_exported_and_erased)
{
    start("decision_log_sample = 1,", 20);
    cr_assert_eq(dtfx_decides(&srv, 100, 20, 1), 100); /* 5 decides per customer */
    cr_assert_eq(dtfx_wait_logged(&srv, 100), 100);
    cr_assert_eq(tfx_server_stop(&srv), 0);
    cr_assert_eq(make_older_layout(), 100);
    cr_assert_eq(tfx_server_start(&srv), 0, "the server restarts on the older layout");
    cr_assert_eq(dtfx_metric(&srv, "promod_decision_log_index_entries", ""), 100,
                 "one older index row per entry, no batch record");
    cr_assert_eq(listed("customer_id=c0003&limit=1000"), 5);
    cr_assert_eq(exported("c0003"), 5);
    /* new decides go to the batch index: both are read */
    cr_assert_eq(dtfx_decides(&srv, 20, 20, 1), 20);
    cr_assert_eq(dtfx_wait_logged(&srv, 20), 20);
    cr_assert_eq(listed("customer_id=c0003&limit=1000"), 6);
    cr_assert_eq(listed("customer_id=c0003&limit=3"), 3, "pages of the merged indexes");
    cr_assert_eq(exported("c0003"), 6);
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/c0003", NULL, &r), 200, "%s", r.body);
    tfx_resp_free(&r);
    cr_assert_eq(listed("customer_id=c0003&limit=1000"), 0);
    cr_assert_eq(exported("c0003"), 0);
    cr_assert_eq(listed("limit=1000"), 114, "the other customers' entries stay");
    cr_assert_eq(listed("customer_id=c0004&limit=1000"), 6);
    double idx = dtfx_metric(&srv, "promod_decision_log_index_entries", "");
    cr_assert(idx >= 96 && idx <= 95 + 19, "c0003's older rows went, the others and the new "
              "batch records stay: %.0f", idx);
    cr_assert_eq(tfx_req(&srv, "GET", "/api/v1/decisions?limit=1000", NULL, &r), 200);
    cr_assert_null(strstr(r.body, "c0003"));
    tfx_resp_free(&r);
}
