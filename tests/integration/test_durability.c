/*
 * test_durability.c — an acknowledged write survives SIGKILL: profiles put
 * one by one, writes in flight on many connections when the kill lands,
 * patches and deletes, and a bulk import.  The server is restarted on the
 * same data directory and every acknowledged change must be there.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "fixture.h"

static struct tfx_server srv;

static void setup(void)
{
    tfx_server_init(&srv, NULL);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not start");
}

static void teardown(void) { tfx_server_cleanup(&srv); }

TestSuite(durability, .init = setup, .fini = teardown, .timeout = 120);

static void restart_after_kill(void)
{
    tfx_server_kill(&srv);
    cr_assert_eq(tfx_server_start(&srv), 0, "server did not restart on the same data dir");
}

static json_t *get_profile(const char *id)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/profiles/%s", id);
    struct tfx_resp r;
    tfx_req(&srv, "GET", path, NULL, &r);
    json_t *o = r.status == 200 ? json_incref(r.json) : NULL;
    cr_assert(r.status == 200 || r.status == 404, "GET %s: %d", id, r.status);
    tfx_resp_free(&r);
    return o;
}

Test(durability, acknowledged_puts_survive_sigkill)
{
    enum { N = 200 };
    for (int i = 0; i < N; i++) {
        char path[64], body[128];
        snprintf(path, sizeof path, "/api/v1/profiles/d-%03d", i);
        snprintf(body, sizeof body, "{\"i\":%d,\"name\":\"customer %d\"}", i, i);
        struct tfx_resp r;
        cr_assert_eq(tfx_req(&srv, "PUT", path, body, &r), 201, "PUT %d: %s", i, r.body);
        tfx_resp_free(&r);
    }
    restart_after_kill(); /* immediately after the last acknowledgement */
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "d-%03d", i);
        json_t *p = get_profile(id);
        cr_assert_not_null(p, "acknowledged %s lost by SIGKILL", id);
        cr_assert_eq(json_integer_value(json_object_get(p, "i")), i);
        json_decref(p);
    }
}

Test(durability, patches_and_deletes_survive_sigkill)
{
    struct tfx_resp r;
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/pd-1", "{\"a\":1,\"b\":{\"c\":2}}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "PUT", "/api/v1/profiles/pd-2", "{\"x\":1}", &r), 201);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "PATCH", "/api/v1/profiles/pd-1", "{\"a\":null,\"b\":{\"d\":3}}", &r), 200);
    tfx_resp_free(&r);
    cr_assert_eq(tfx_req(&srv, "DELETE", "/api/v1/profiles/pd-2", NULL, &r), 200);
    tfx_resp_free(&r);
    restart_after_kill();
    json_t *p = get_profile("pd-1");
    json_t *want = json_loads("{\"id\":\"pd-1\",\"b\":{\"c\":2,\"d\":3}}", 0, NULL);
    cr_assert(json_equal(p, want), "after kill: %s", p ? json_dumps(p, 0) : "(gone)");
    json_decref(p);
    json_decref(want);
    cr_assert_null(get_profile("pd-2"), "an acknowledged delete came back");
}

/* Writers on several connections while the kill lands: whatever was
 * acknowledged before the kill is present afterwards. */
#define FW_THREADS 6
#define FW_MAX 400

struct fw {
    int idx;
    int acked;              /* writes 0..acked-1 were acknowledged */
};

static volatile int fw_stop;

static void *flying_writer(void *arg)
{
    struct fw *w = arg;
    for (int i = 0; i < FW_MAX && !__atomic_load_n(&fw_stop, __ATOMIC_RELAXED); i++) {
        char path[64], body[96];
        snprintf(path, sizeof path, "/api/v1/profiles/f%d-%03d", w->idx, i);
        snprintf(body, sizeof body, "{\"w\":%d,\"i\":%d}", w->idx, i);
        struct tfx_resp r;
        int st = tfx_req(&srv, "PUT", path, body, &r);
        tfx_resp_free(&r);
        if (st != 201)
            break; /* the server is gone: this write may or may not have landed */
        __atomic_store_n(&w->acked, i + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(durability, writes_in_flight_at_sigkill)
{
    pthread_t th[FW_THREADS];
    struct fw w[FW_THREADS];
    fw_stop = 0;
    for (int i = 0; i < FW_THREADS; i++) {
        w[i] = (struct fw){ i, 0 };
        pthread_create(&th[i], NULL, flying_writer, &w[i]);
    }
    /* let them get going, then kill mid-stream */
    for (int spins = 0; spins < 1000; spins++) {
        int total = 0;
        for (int i = 0; i < FW_THREADS; i++)
            total += __atomic_load_n(&w[i].acked, __ATOMIC_ACQUIRE);
        if (total >= 150)
            break;
        usleep(5000);
    }
    int acked_at_kill[FW_THREADS];
    for (int i = 0; i < FW_THREADS; i++)
        acked_at_kill[i] = __atomic_load_n(&w[i].acked, __ATOMIC_ACQUIRE);
    tfx_server_kill(&srv);
    __atomic_store_n(&fw_stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < FW_THREADS; i++)
        pthread_join(th[i], NULL);
    int total = 0;
    for (int i = 0; i < FW_THREADS; i++) {
        cr_assert_geq(w[i].acked, acked_at_kill[i]);
        total += w[i].acked;
    }
    cr_assert_gt(total, 0, "no write was acknowledged before the kill");
    cr_assert_eq(tfx_server_start(&srv), 0);
    for (int t = 0; t < FW_THREADS; t++)
        for (int i = 0; i < w[t].acked; i++) {
            char id[32];
            snprintf(id, sizeof id, "f%d-%03d", t, i);
            json_t *p = get_profile(id);
            cr_assert_not_null(p, "acknowledged %s lost (writer %d had %d acknowledged)", id, t, w[t].acked);
            cr_assert_eq(json_integer_value(json_object_get(p, "i")), i);
            json_decref(p);
        }
    cr_log_info("%d acknowledged writes, all present after SIGKILL", total);
}

Test(durability, acknowledged_import_survives_sigkill)
{
    enum { N = 5000 };
    struct buf b = BUF_INIT;
    for (int i = 0; i < N; i++)
        buf_printf(&b, "{\"id\":\"imp-%05d\",\"i\":%d,\"tags\":[\"a\",\"b\"]}\n", i, i);
    struct tfx_resp r;
    tfx_http(&srv, "POST", "/api/v1/profiles/import", "Content-Type: application/x-ndjson\r\n", b.p, b.len, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "imported")), N);
    tfx_resp_free(&r);
    buf_free(&b);
    restart_after_kill();
    /* every one of them, counted by the server itself, and a sample by value */
    struct tfx_resp m;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &m), 200);
    double n = 0;
    cr_assert(tfx_metric(m.body, "promod_profiles", "", &n), "no promod_profiles in /metrics");
    cr_assert_eq((long)n, N, "profiles after kill: %.0f", n);
    tfx_resp_free(&m);
    for (int i = 0; i < N; i += 333) {
        char id[32];
        snprintf(id, sizeof id, "imp-%05d", i);
        json_t *p = get_profile(id);
        cr_assert_not_null(p, "%s lost", id);
        cr_assert_eq(json_integer_value(json_object_get(p, "i")), i);
        json_decref(p);
    }
    json_t *p = get_profile("imp-04999");
    cr_assert_not_null(p, "the last line of the import was lost");
    json_decref(p);
}
