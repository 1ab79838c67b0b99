/* api_ops.c — /healthz, /metrics, the test clock, the API key listing. */
#include "http/api.h"
#include "base/app.h"
#include "http/auth.h"
#include "base/clock.h"
#include "base/metrics.h"
#include "http/router.h"
#include "store/store.h"
#include "store/audit.h"
#include <stdlib.h>

static void h_healthz(struct http_req *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string("ok"));
    json_object_set_new(o, "uptime_s", json_integer(clock_now() - g_app->started_at));
    http_reply_json(r, 200, o);
}

static void store_collector(struct buf *out, void *ud)
{
    (void)ud;
    struct store_stat st;
    if (!g_app || !g_app->store || store_stat(g_app->store, &st))
        return;
    buf_printf(out,
               "# HELP promod_lmdb_map_size_bytes LMDB map size (address space; grows when the data fills half of it).\n"
               "# TYPE promod_lmdb_map_size_bytes gauge\n"
               "promod_lmdb_map_size_bytes %zu\n"
               "# HELP promod_lmdb_used_bytes LMDB pages in use.\n"
               "# TYPE promod_lmdb_used_bytes gauge\n"
               "promod_lmdb_used_bytes %zu\n"
               "# HELP promod_lmdb_map_usage_ratio Used share of the LMDB map.\n"
               "# TYPE promod_lmdb_map_usage_ratio gauge\n"
               "promod_lmdb_map_usage_ratio %.6f\n"
               "# HELP promod_lmdb_map_max_bytes Largest the map may grow to (map_max_mb; 0 = no limit).\n"
               "# TYPE promod_lmdb_map_max_bytes gauge\n"
               "promod_lmdb_map_max_bytes %zu\n"
               "# HELP promod_lmdb_map_growths_total Times the map grew since start.\n"
               "# TYPE promod_lmdb_map_growths_total counter\n"
               "promod_lmdb_map_growths_total %llu\n"
               "# HELP promod_store_disk_free_bytes Free bytes on the data directory's filesystem.\n"
               "# TYPE promod_store_disk_free_bytes gauge\n"
               "promod_store_disk_free_bytes %llu\n"
               "# HELP promod_store_disk_size_bytes Size of the data directory's filesystem.\n"
               "# TYPE promod_store_disk_size_bytes gauge\n"
               "promod_store_disk_size_bytes %llu\n"
               "# HELP promod_store_full_errors_total Writes refused or failed for want of room (507).\n"
               "# TYPE promod_store_full_errors_total counter\n"
               "promod_store_full_errors_total %llu\n"
               "# HELP promod_profiles Stored customer profiles.\n"
               "# TYPE promod_profiles gauge\n"
               "promod_profiles %zu\n"
               "# HELP promod_store_syncs_total fsyncs by the group syncer.\n"
               "# TYPE promod_store_syncs_total counter\n"
               "promod_store_syncs_total %llu\n"
               "# HELP promod_store_durable_commits_total Commits acknowledged after fsync.\n"
               "# TYPE promod_store_durable_commits_total counter\n"
               "promod_store_durable_commits_total %llu\n"
               "# HELP promod_store_sync_seconds_total Time the group syncer spent in fdatasync (divided by promod_store_syncs_total: the disk's flush latency).\n"
               "# TYPE promod_store_sync_seconds_total counter\n"
               "promod_store_sync_seconds_total %.6f\n",
               st.map_size, st.used_bytes, st.map_size ? (double)st.used_bytes / (double)st.map_size : 0,
               st.map_max, (unsigned long long)st.growths, (unsigned long long)st.disk_free,
               (unsigned long long)st.disk_size, (unsigned long long)st.full_errors, st.entries[STORE_PROFILES], (unsigned long long)st.syncs,
               (unsigned long long)st.durable_commits, (double)st.sync_ns / 1e9);
    buf_printf(out,
               "# HELP promod_store_write_lock_waits_total Write transactions that waited for "
               "another writer.\n"
               "# TYPE promod_store_write_lock_waits_total counter\n"
               "promod_store_write_lock_waits_total %llu\n"
               "# HELP promod_store_write_lock_wait_seconds_total Time write transactions waited "
               "for another writer.\n"
               "# TYPE promod_store_write_lock_wait_seconds_total counter\n"
               "promod_store_write_lock_wait_seconds_total %.6f\n",
               (unsigned long long)st.write_lock_waits, (double)st.write_lock_wait_ns / 1e9);
    buf_adds(out, "# HELP promod_store_entries Records per LMDB database.\n"
                  "# TYPE promod_store_entries gauge\n");
    for (int i = 0; i < STORE_NDB; i++)
        buf_printf(out, "promod_store_entries{db=\"%s\"} %zu\n", store_db_name((enum store_db)i),
                   st.entries[i]);
}

static void h_metrics(struct http_req *r)
{
    struct buf b = BUF_INIT;
    metrics_render(&b);
    http_reply_raw(r, 200, "text/plain; version=0.0.4", b.p, b.len);
    buf_free(&b);
}

/* POST /api/v1/admin/clock {"offset": seconds} or {"now": unix} — tests only */
static void h_clock(struct http_req *r)
{
    if (!g_app->cfg.test_clock) {
        http_reply_error(r, 403, "forbidden", "the test clock is disabled (config test_clock = true)", NULL);
        return;
    }
    if (r->method == HTTP_POST) {
        const char *actor = api_audit_actor(r);
        if (!actor)
            return;
        json_t *b = http_body_json(r, JSON_OBJECT);
        if (!b)
            return;
        json_t *off = json_object_get(b, "offset"), *now = json_object_get(b, "now");
        json_t *freeze = json_object_get(b, "freeze");
        if (freeze && !json_is_boolean(freeze)) {
            json_decref(b);
            http_reply_error(r, 400, "invalid", "\"freeze\" must be true or false", "freeze");
            return;
        }
        if (!json_is_integer(off) && !json_is_integer(now)) {
            json_decref(b);
            http_reply_error(r, 400, "invalid", "give an integer \"offset\" or \"now\"", "offset");
            return;
        }
        json_t *before = json_pack("{s:I,s:I,s:b}", "now", (json_int_t)clock_now(), "offset",
                                   (json_int_t)clock_get_offset(), "frozen", clock_frozen() != 0);
        clock_freeze(0);
        if (json_is_integer(off)) {
            clock_set_offset(json_integer_value(off));
        } else if (json_is_integer(now)) {
            clock_set_offset(json_integer_value(now) - (clock_now() - clock_get_offset()));
        }
        if (json_is_true(freeze))
            clock_freeze(clock_now());
        json_decref(b);
        json_t *after = json_pack("{s:I,s:I,s:b}", "now", (json_int_t)clock_now(), "offset",
                                  (json_int_t)clock_get_offset(), "frozen", clock_frozen() != 0);
        audit_log(g_app->store, actor, "clock.set", "clock", before, after);
        json_decref(before);
        json_decref(after);
    }
    json_t *o = json_object();
    json_object_set_new(o, "now", json_integer(clock_now()));
    json_object_set_new(o, "offset", json_integer(clock_get_offset()));
    json_object_set_new(o, "frozen", json_boolean(clock_frozen() != 0));
    http_reply_json(r, 200, o);
}

/* GET /api/v1/admin/keys: ids, roles and last use of the API keys (never
 * a key or its digest) — to see which key a rotation can retire. */
static void h_keys(struct http_req *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "keys", auth_keys_json(&g_app->cfg));
    http_reply_json(r, 200, o);
}

void api_ops_register(void)
{
    router_add(HTTP_GET, "/healthz", ROLE_PUBLIC, h_healthz, ROUTER_OPS);
    router_add(HTTP_GET, "/metrics", ROLE_PUBLIC, h_metrics, ROUTER_OPS);
    metrics_register(store_collector, NULL);
}

/* Registered last (routes.c): the router tries routes in order, so rare
 * routes before /api/v1/decide would cost every decide a pattern match
 * (~900 instructions each, measured with scripts/profile-http.sh). */
void api_ops_admin_register(void)
{
    router_add(HTTP_GET | HTTP_POST, "/api/v1/admin/clock", ROLE_ADMIN, h_clock, 0);
    router_add(HTTP_GET, "/api/v1/admin/keys", ROLE_ADMIN, h_keys, 0);
}
