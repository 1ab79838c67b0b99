/* test_config.c — config/promod.lua: defaults, every key, and every way an
 * operator can get it wrong (each error names the file and the key). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/err.h"
#include "fixture.h"
#include "base/log.h"

static char dir[256];
static char path[320];
static struct config cfg;
static char err[1024];

static void setup(void)
{
    tfx_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/promod.lua", dir);
    config_defaults(&cfg);
    err[0] = 0;
}

static void teardown(void)
{
    config_free(&cfg);
    tfx_rmrf(dir);
}

TestSuite(config, .init = setup, .fini = teardown, .timeout = 30);

static void write_raw(const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static int load(const char *src)
{
    write_raw(src, strlen(src));
    return config_load(&cfg, path, err, sizeof err);
}

static void load_ok(const char *src)
{
    int rc = load(src);
    cr_assert_eq(rc, 0, "config rejected: %s", err);
}

/* the error must start with the file's path and contain `want` */
static void load_fails(const char *src, const char *want)
{
    int rc = load(src);
    cr_assert_neq(rc, 0, "accepted: %s", src);
    cr_assert_eq(strncmp(err, path, strlen(path)), 0, "error does not name the file: %s", err);
    cr_assert(strstr(err, want), "error '%s' lacks '%s' (config: %s)", err, want, src);
}

/* does the key hold the digest of `secret`? */
static int same_key(const struct config_key *k, const char *secret)
{
    char hex[65], have[65];
    config_key_hash_hex(secret, strlen(secret), hex);
    for (int i = 0; i < CONFIG_KEY_DIGEST; i++)
        snprintf(have + 2 * i, 3, "%02x", k->sha256[i]);
    return strcmp(hex, have) == 0;
}

Test(config, defaults)
{
    cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
    cr_assert_eq(cfg.listen_port, 8080);
    cr_assert_str_eq(cfg.data_dir, "./data");
    cr_assert_str_eq(cfg.rules_dir, "./rules");
    cr_assert_str_eq(cfg.plugins_dir, "./plugins");
    cr_assert_str_eq(cfg.web_dir, "./web");
    cr_assert_eq(cfg.threads, 0);
    cr_assert_eq(cfg.map_size, (size_t)1 << 30);
    cr_assert_eq(cfg.map_max, 0, "the map grows as far as the disk allows");
    cr_assert_eq(cfg.store_writemap, 1);
    cr_assert_eq(cfg.store_readahead, 0);
    cr_assert_eq(cfg.store_prewarm, 1);
    cr_assert_eq(cfg.sync_interval_ms, 1000);
    cr_assert_eq(cfg.max_body, (size_t)1 << 20);
    cr_assert_eq(cfg.max_import_body, (size_t)64 << 20);
    cr_assert_eq(cfg.default_limit, 3);
    cr_assert_eq(cfg.max_limit, 50);
    cr_assert_eq(cfg.instr_budget, 1000000);
    cr_assert_eq(cfg.lua_mem_limit, (size_t)256 << 20);
    cr_assert_eq(cfg.hook_time_ms, 100);
    cr_assert_eq(cfg.load_time_ms, 500);
    cr_assert_eq(cfg.lua_file_mem_limit, 0);
    cr_assert_eq(cfg.lua_log_per_sec, 20);
    cr_assert_eq(cfg.log_level, LOG_INFO);
    cr_assert_eq(cfg.access_log, 0);
    cr_assert_eq(cfg.require_approval, 0);
    cr_assert_eq(cfg.test_clock, 0);
    cr_assert_eq(cfg.global_daily_cap, 0);
    cr_assert_eq(cfg.reload_debounce_ms, 100);
    cr_assert_eq(cfg.event_retention_days, 90);
    cr_assert_float_eq(cfg.request_timeout, 30.0, 1e-9);
    cr_assert_eq(cfg.header_timeout, 10);
    cr_assert_eq(cfg.max_header, (size_t)64 << 10);
    cr_assert_null(cfg.tls_cert);
    cr_assert_null(cfg.tls_key);
    cr_assert_eq(cfg.insecure_http, 0);
    cr_assert_eq(cfg.nkeys, 0);
    cr_assert_null(cfg.channels);
    cr_assert_str_eq(cfg.source, "(defaults)");
}

Test(config, experiments_dir_beside_the_rules_unless_set)
{
    char out[256];
    cr_assert_null(cfg.experiments_dir);
    cr_assert_str_eq(config_experiments_dir(&cfg, out, sizeof out), "./experiments");
    load_ok("return { rules_dir = '/srv/promod/rules/' }");
    cr_assert_str_eq(config_experiments_dir(&cfg, out, sizeof out), "/srv/promod/experiments");
    load_ok("return { rules_dir = 'rules' }");
    cr_assert_str_eq(config_experiments_dir(&cfg, out, sizeof out), "experiments");
    load_ok("return { experiments_dir = '/data/tests' }");
    cr_assert_str_eq(config_experiments_dir(&cfg, out, sizeof out), "/data/tests");
    load_fails("return { experiments_dir = 5 }", "experiments_dir: expected a string");
}

Test(config, web_dir_path_or_off)
{
    load_ok("return { web_dir = '/srv/promod/web' }");
    cr_assert_str_eq(cfg.web_dir, "/srv/promod/web");
    load_ok("return { web_dir = false }");
    cr_assert_null(cfg.web_dir); /* the console is off */
}

Test(config, empty_table_keeps_defaults)
{
    load_ok("return {}");
    cr_assert_eq(cfg.listen_port, 8080);
    cr_assert_str_eq(cfg.source, path);
}

Test(config, every_key)
{
    setenv("PROMOD_TEST_SITE_KEY", "site-key-from-env-123", 1);
    load_ok("-- every key the server knows\n"
            "local base = '/srv/promod'\n"
            "return {\n"
            "  listen = '0.0.0.0:9090',\n"
            "  data_dir = base .. '/data',\n"
            "  rules_dir = base .. '/rules',\n"
            "  plugins_dir = base .. '/plugins',\n"
            "  threads = 4,\n"
            "  map_size_mb = 2048,\n"
            "  map_max_mb = 65536,\n"
            "  store_writemap = false,\n"
            "  store_readahead = true,\n"
            "  store_prewarm = false,\n"
            "  sync_interval_ms = 250,\n"
            "  max_body_kb = 512,\n"
            "  max_import_body_mb = 16,\n"
            "  default_limit = 5,\n"
            "  max_limit = 20,\n"
            "  instruction_budget = 50000,\n"
            "  lua_memory_mb = 64,\n"
            "  hook_time_limit_ms = 40,\n"
            "  load_time_limit_ms = 900,\n"
            "  lua_file_memory_mb = 12,\n"
            "  lua_log_lines_per_sec = 0,\n"
            "  log_level = 'debug',\n"
            "  access_log = true,\n"
            "  require_approval = true,\n"
            "  test_clock = true,\n"
            "  global_daily_cap = 7,\n"
            "  reload_debounce_ms = 250,\n"
            "  event_retention_days = 30,\n"
            "  request_timeout = 12,\n"
            "  header_timeout = 7,\n"
            "  max_header_kb = 16,\n"
            "  tls = { cert = 'server.pem', key = 'server.key' },\n"
            "  insecure_http = true,\n"
            "  api_keys = {\n"
            "    { id = 'site', key_env = 'PROMOD_TEST_SITE_KEY', role = 'decide' },\n"
            "    { id = 'alice', key = 'marketer-key-0001', role = 'marketer' },\n"
            "    { id = 'ops', key = 'admin-key-000001', role = 'admin' },\n"
            "  },\n"
            "  channels = { email = { endpoint = 'http://127.0.0.1:8025/send', retries = 3,\n"
            "                         tls = false, ratio = 0.5, hosts = { 'a', 'b' } } },\n"
            "}\n");
    cr_assert_str_eq(cfg.listen_host, "0.0.0.0");
    cr_assert_eq(cfg.listen_port, 9090);
    cr_assert_str_eq(cfg.data_dir, "/srv/promod/data");
    cr_assert_str_eq(cfg.rules_dir, "/srv/promod/rules");
    cr_assert_str_eq(cfg.plugins_dir, "/srv/promod/plugins");
    cr_assert_eq(cfg.threads, 4);
    cr_assert_eq(cfg.map_size, (size_t)2048 << 20);
    cr_assert_eq(cfg.map_max, (size_t)65536 << 20);
    cr_assert_eq(cfg.store_writemap, 0);
    cr_assert_eq(cfg.store_readahead, 1);
    cr_assert_eq(cfg.store_prewarm, 0);
    cr_assert_eq(cfg.sync_interval_ms, 250);
    cr_assert_eq(cfg.max_body, (size_t)512 << 10);
    cr_assert_eq(cfg.max_import_body, (size_t)16 << 20);
    cr_assert_eq(cfg.default_limit, 5);
    cr_assert_eq(cfg.max_limit, 20);
    cr_assert_eq(cfg.instr_budget, 50000);
    cr_assert_eq(cfg.lua_mem_limit, (size_t)64 << 20);
    cr_assert_eq(cfg.hook_time_ms, 40);
    cr_assert_eq(cfg.load_time_ms, 900);
    cr_assert_eq(cfg.lua_file_mem_limit, (size_t)12 << 20);
    cr_assert_eq(cfg.lua_log_per_sec, 0);
    cr_assert_eq(cfg.log_level, LOG_DEBUG);
    cr_assert_eq(cfg.access_log, 1);
    cr_assert_eq(cfg.require_approval, 1);
    cr_assert_eq(cfg.test_clock, 1);
    cr_assert_eq(cfg.global_daily_cap, 7);
    cr_assert_eq(cfg.reload_debounce_ms, 250);
    cr_assert_eq(cfg.event_retention_days, 30);
    cr_assert_float_eq(cfg.request_timeout, 12.0, 1e-9);
    cr_assert_eq(cfg.header_timeout, 7);
    cr_assert_eq(cfg.max_header, (size_t)16 << 10);
    cr_assert_str_eq(cfg.tls_cert, "server.pem");
    cr_assert_str_eq(cfg.tls_key, "server.key");
    cr_assert_eq(cfg.insecure_http, 1);
    cr_assert_eq(cfg.nkeys, 3);
    cr_assert_str_eq(cfg.keys[0].id, "site");
    cr_assert(same_key(&cfg.keys[0], "site-key-from-env-123"));
    cr_assert_eq(cfg.keys[0].source, CONFIG_KEY_ENV);
    cr_assert_eq(cfg.keys[1].source, CONFIG_KEY_PLAIN);
    cr_assert_eq(cfg.keys[0].role, ROLE_DECIDE);
    cr_assert_eq(cfg.keys[1].role, ROLE_MARKETER);
    cr_assert_eq(cfg.keys[2].role, ROLE_ADMIN);
    json_t *email = json_object_get(cfg.channels, "email");
    cr_assert_str_eq(json_string_value(json_object_get(email, "endpoint")), "http://127.0.0.1:8025/send");
    cr_assert_eq(json_integer_value(json_object_get(email, "retries")), 3);
    cr_assert(json_is_false(json_object_get(email, "tls")));
    cr_assert_float_eq(json_real_value(json_object_get(email, "ratio")), 0.5, 1e-12);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(email, "hosts"), "1")), "a");
    cr_assert_str_eq(cfg.source, path);
    unsetenv("PROMOD_TEST_SITE_KEY");
}

Test(config, rate_limits_and_velocity)
{
    cr_assert_eq(cfg.rate_per_key.limit, 0, "request limits are off by default");
    cr_assert_eq(cfg.rate_per_address.limit, 0);
    cr_assert_eq(cfg.coupon_velocity_customer.limit, 20);
    cr_assert_eq(cfg.coupon_velocity_customer.window_s, 60);
    cr_assert_eq(cfg.coupon_velocity_prefix.limit, 50);
    cr_assert_eq(cfg.coupon_prefix_len, 4);
    load_ok("return { rate_limit_per_key = { 2000, '1s' }, rate_limit_per_address = { 30, '10m' },\n"
            " coupon_velocity_customer = false, coupon_velocity_prefix = { 7, '2h' },\n"
            " coupon_prefix_len = 6, loyalty_dir = '/srv/loyalty' }");
    cr_assert_eq(cfg.rate_per_key.limit, 2000);
    cr_assert_eq(cfg.rate_per_key.window_s, 1);
    cr_assert_eq(cfg.rate_per_address.limit, 30);
    cr_assert_eq(cfg.rate_per_address.window_s, 600);
    cr_assert_eq(cfg.coupon_velocity_customer.limit, 0);
    cr_assert_eq(cfg.coupon_velocity_prefix.window_s, 7200);
    cr_assert_eq(cfg.coupon_prefix_len, 6);
    cr_assert_str_eq(cfg.loyalty_dir, "/srv/loyalty");
}

Test(config, log_levels)
{
    static const char *names[] = { "debug", "info", "warn", "error", "quiet" };
    static const int levels[] = { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_QUIET };
    for (int i = 0; i < 5; i++) {
        char src[80];
        snprintf(src, sizeof src, "return { log_level = '%s' }", names[i]);
        load_ok(src);
        cr_assert_eq(cfg.log_level, levels[i], "%s", names[i]);
    }
}

Test(config, env_function_and_no_dangerous_libraries)
{
    setenv("PROMOD_TEST_DATA", "/tmp/somewhere", 1);
    unsetenv("PROMOD_TEST_UNSET");
    load_ok("return {\n"
            "  data_dir = env('PROMOD_TEST_DATA'),\n"
            "  rules_dir = env('PROMOD_TEST_UNSET') or './fallback',\n"
            "  threads = (io or os or require or dofile or loadfile or load or loadstring\n"
            "             or getfenv or setfenv or collectgarbage) and 1 or 2,\n"
            "}\n");
    cr_assert_str_eq(cfg.data_dir, "/tmp/somewhere");
    cr_assert_str_eq(cfg.rules_dir, "./fallback");
    cr_assert_eq(cfg.threads, 2, "io/os/require/load... must not be reachable from a config");
    unsetenv("PROMOD_TEST_DATA");
}

Test(config, unknown_key_named)
{
    load_fails("return {\n  lisen = '127.0.0.1:8080',\n}\n", "lisen: unknown key");
}

/* ---- wrong types and ranges: one table ---- */

struct bad {
    char src[200];
    char want[96];
};

ParameterizedTestParameters(config, rejected)
{
    static struct bad cases[] = {
        { "return { threads = 'four' }", "threads: expected a number" },
        { "return { threads = 1.5 }", "threads: expected an integer from 0 to 64" },
        { "return { threads = -1 }", "threads: expected an integer from 0 to 64" },
        { "return { threads = 65 }", "threads: expected an integer" },
        { "return { threads = 0/0 }", "threads: expected an integer" },
        { "return { threads = 1/0 }", "threads: expected an integer" },
        { "return { threads = 1e300 }", "threads: expected an integer" },
        { "return { threads = true }", "threads: expected a number" },
        { "return { map_size_mb = 1 }", "map_size_mb: expected an integer from 16" },
        { "return { map_size_mb = {} }", "map_size_mb: expected a number" },
        { "return { map_max_mb = 8 }", "map_max_mb: expected 0 (no limit) or an integer from 16" },
        { "return { map_max_mb = -1 }", "map_max_mb: expected an integer from 0" },
        { "return { map_max_mb = 512 }", "map_max_mb: must not be below map_size_mb" },
        { "return { map_size_mb = 4096, map_max_mb = 2048 }", "map_max_mb: must not be below map_size_mb" },
        { "return { store_writemap = 1 }", "store_writemap: expected true or false" },
        { "return { store_readahead = \"yes\" }", "store_readahead: expected true or false" },
        { "return { sync_interval_ms = 5 }", "sync_interval_ms: expected an integer from 10 to 60000" },
        { "return { sync_interval_ms = 60001 }", "sync_interval_ms: expected an integer" },
        { "return { max_body_kb = 0 }", "max_body_kb: expected an integer from 1" },
        { "return { max_import_body_mb = 5000 }", "max_import_body_mb: expected an integer" },
        { "return { default_limit = 0 }", "default_limit: expected an integer" },
        { "return { max_limit = 1001 }", "max_limit: expected an integer" },
        { "return { default_limit = 60 }", "default_limit: must not exceed max_limit" },
        { "return { default_limit = 10, max_limit = 5 }", "default_limit: must not exceed max_limit" },
        { "return { instruction_budget = 10 }", "instruction_budget: expected an integer" },
        { "return { lua_memory_mb = 1 }", "lua_memory_mb: expected an integer" },
        { "return { hook_time_limit_ms = 0 }", "hook_time_limit_ms: expected an integer" },
        { "return { load_time_limit_ms = 5 }", "load_time_limit_ms: expected an integer" },
        { "return { lua_file_memory_mb = -1 }", "lua_file_memory_mb: expected an integer" },
        { "return { lua_log_lines_per_sec = 'many' }", "lua_log_lines_per_sec: expected" },
        { "return { global_daily_cap = -5 }", "global_daily_cap: expected an integer" },
        { "return { reload_debounce_ms = 20000 }", "reload_debounce_ms: expected an integer" },
        { "return { event_retention_days = 0 }", "event_retention_days: expected an integer" },
        { "return { request_timeout = 0 }", "request_timeout: expected an integer" },
        { "return { request_timeout = 2.5 }", "request_timeout: expected an integer" },
        { "return { header_timeout = 0 }", "header_timeout: expected an integer from 1 to 3600" },
        { "return { max_header_kb = 2048 }", "max_header_kb: expected an integer from 1 to 1024" },
        { "return { tls = 'server.pem' }", "tls: expected { cert = \"FILE\", key = \"FILE\" }" },
        { "return { tls = { cert = 'a.pem' } }", "tls: needs both cert and key" },
        { "return { tls = { cert = 'a.pem', key = 'a.key', ca = 'x' } }", "tls: unknown field 'ca'" },
        { "return { tls = { cert = 5, key = 'a.key' } }", "tls.cert: expected a string" },
        { "return { insecure_http = 'yes' }", "insecure_http: expected true or false" },
        { "return { listen = 8080 }", "listen: expected \"HOST:PORT\"" },
        { "return { listen = 'localhost' }", "listen: expected \"HOST:PORT\"" },
        { "return { listen = ':8080' }", "listen: expected \"HOST:PORT\"" },
        { "return { listen = 'host:' }", "listen: expected \"HOST:PORT\"" },
        { "return { listen = 'host:99999' }", "listen: expected \"HOST:PORT\"" },
        { "return { listen = 'host:-1' }", "listen: expected \"HOST:PORT\"" },
        { "return { listen = 'host:80x' }", "listen: expected \"HOST:PORT\"" },
        { "return { data_dir = '' }", "data_dir: expected a non-empty string" },
        { "return { data_dir = 5 }", "data_dir: expected a string" },
        { "return { rules_dir = 'a\\0b' }", "rules_dir: expected a non-empty string" },
        { "return { plugins_dir = false }", "plugins_dir: expected a string" },
        { "return { web_dir = 5 }", "web_dir: expected a directory (string) or false" },
        { "return { web_dir = true }", "web_dir: expected a directory (string) or false" },
        { "return { web_dir = '' }", "web_dir: expected a non-empty string" },
        { "return { access_log = 'yes' }", "access_log: expected true or false" },
        { "return { access_log = 1 }", "access_log: expected true or false" },
        { "return { require_approval = 'no' }", "require_approval: expected true or false" },
        { "return { test_clock = 0 }", "test_clock: expected true or false" },
        { "return { log_level = 'loud' }", "log_level: expected \"debug\"" },
        { "return { log_level = 3 }", "log_level: expected \"debug\"" },
        { "return { channels = 5 }", "channels: expected a table" },
        { "return { channels = { web = { f = print } } }", "channels: values must be" },
        { "return { channels = { web = { [true] = 1 } } }", "channels: values must be" },
        { "return { [1] = 'x' }", "(key): keys must be names" },
        { "return { 'positional' }", "(key): keys must be names" },
        { "return { Listen = '127.0.0.1:1' }", "Listen: unknown key" },
        { "return { data = './data' }", "data: unknown key" },
        { "return { rate_limit_per_key = 100 }", "rate_limit_per_key: expected { LIMIT, \"WINDOW\" }" },
        { "return { rate_limit_per_address = { 0, '1s' } }", "rate_limit_per_address: expected" },
        { "return { rate_limit_per_address = { 10, '1x' } }", "rate_limit_per_address: expected" },
        { "return { coupon_velocity_customer = { 1.5, '1m' } }", "coupon_velocity_customer: expected" },
        { "return { coupon_velocity_prefix = { 5 } }", "coupon_velocity_prefix: expected" },
        { "return { coupon_velocity_prefix = true }", "coupon_velocity_prefix: expected" },
        { "return { coupon_prefix_len = 0 }", "coupon_prefix_len: expected an integer from 1 to 64" },
        { "return { loyalty_dir = '' }", "loyalty_dir: expected a non-empty string" },
    };
    return cr_make_param_array(struct bad, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad *c, config, rejected)
{
    load_fails(c->src, c->want);
}

/* ---- API keys ---- */

ParameterizedTestParameters(config, api_keys_rejected)
{
    static struct bad cases[] = {
        { "return { api_keys = 'secret' }", "api_keys: expected a list" },
        { "return { api_keys = { site = { id = 's', key = 'abcdefgh12', role = 'decide' } } }",
          "api_keys: expected a list" },
        { "return { api_keys = { 'abcdefgh12' } }", "api_keys[1]: expected a table" },
        { "return { api_keys = { { key = 'abcdefgh12', role = 'decide' } } }",
          "api_keys[1]: id: expected a string" },
        { "return { api_keys = { { id = 5, key = 'abcdefgh12', role = 'decide' } } }",
          "api_keys[1]: id: expected a string" },
        { "return { api_keys = { { id = 's', role = 'decide' } } }",
          "api_keys[1]: key: missing or shorter than 8" },
        { "return { api_keys = { { id = 's', key = 'short', role = 'decide' } } }",
          "api_keys[1]: key: missing or shorter than 8" },
        { "return { api_keys = { { id = 's', key = 12345678901, role = 'decide' } } }",
          "api_keys[1]: key: expected a string" },
        { "return { api_keys = { { id = 's', key = 'abcdefgh12' } } }", "api_keys[1]: role: expected" },
        { "return { api_keys = { { id = 's', key = 'abcdefgh12', role = 'root' } } }",
          "api_keys[1]: role: expected \"decide\", \"checkout\", \"marketer\" or \"admin\"" },
        { "return { api_keys = { { id = 's', key = 'abcdefgh12', role = 'decide', scope = 1 } } }",
          "api_keys[1]: unknown field 'scope'" },
        { "return { api_keys = { { id = 'a', key = 'abcdefgh12', role = 'decide' },\n"
          "                      { id = 'a', key = 'zyxwvuts98', role = 'admin' } } }",
          "api_keys[2]: duplicate id" },
        { "return { api_keys = { { id = 'a', key = 'abcdefgh12', role = 'decide' },\n"
          "                      { id = 'b', key = 'abcdefgh12', role = 'admin' } } }",
          "api_keys[2]: key: same key as another entry" },
        { "return { api_keys = { { id = 's', key_env = 'PROMOD_TEST_NOT_SET_ANYWHERE', role = 'decide' } } }",
          "api_keys[1]: key_env: environment variable PROMOD_TEST_NOT_SET_ANYWHERE is not set" },
        { "return { api_keys = { { id = 's', sha256 = 'abcd', role = 'decide' } } }",
          "api_keys[1]: sha256: expected 64 hexadecimal digits" },
        { "return { api_keys = { { id = 's', sha256 = string.rep('g', 64), role = 'decide' } } }",
          "api_keys[1]: sha256: expected 64 hexadecimal digits" },
        { "return { api_keys = { { id = 's', sha256 = 42, role = 'decide' } } }",
          "api_keys[1]: sha256: expected a string" },
        { "return { api_keys = { { id = 's', sha256 = string.rep('a', 64), key = 'abcdefgh12',"
          " role = 'decide' } } }",
          "api_keys[1]: give one of sha256, key or key_env" },
        { "return { api_keys = { { id = 'a b', key = 'abcdefgh12', role = 'decide' } } }",
          "api_keys[1]: id: no spaces" },
        { "return { api_keys = { { id = '', key = 'abcdefgh12', role = 'decide' } } }",
          "api_keys[1]: id: expected 1 to 64 characters" },
    };
    return cr_make_param_array(struct bad, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad *c, config, api_keys_rejected)
{
    unsetenv("PROMOD_TEST_NOT_SET_ANYWHERE");
    load_fails(c->src, c->want);
}

Test(config, api_key_env_set_empty_and_overriding)
{
    setenv("PROMOD_TEST_EMPTY_KEY", "", 1);
    load_fails("return { api_keys = { { id = 's', key_env = 'PROMOD_TEST_EMPTY_KEY', role = 'decide' } } }",
               "key_env: environment variable PROMOD_TEST_EMPTY_KEY is not set");
    config_free(&cfg);
    config_defaults(&cfg);
    setenv("PROMOD_TEST_SHORT_KEY", "1234", 1);
    load_fails("return { api_keys = { { id = 's', key_env = 'PROMOD_TEST_SHORT_KEY', role = 'decide' } } }",
               "key: missing or shorter than 8 characters");
    config_free(&cfg);
    config_defaults(&cfg);
    setenv("PROMOD_TEST_GOOD_KEY", "from-the-environment", 1);
    load_ok("return { api_keys = { { id = 's', key = 'in-the-file-123', key_env = 'PROMOD_TEST_GOOD_KEY',\n"
            "                        role = 'admin' } } }");
    cr_assert_eq(cfg.nkeys, 1);
    cr_assert(same_key(&cfg.keys[0], "from-the-environment"), "key_env wins over key");
    unsetenv("PROMOD_TEST_EMPTY_KEY");
    unsetenv("PROMOD_TEST_SHORT_KEY");
    unsetenv("PROMOD_TEST_GOOD_KEY");
}

/* A key given only by its digest (what `promod key` prints) authenticates
 * its secret; the digest of a plain key in another entry counts as the same
 * key. */
Test(config, sha256_keys)
{
    char hex[65], src[512];
    config_key_hash_hex("rotated-site-key-2", 18, hex);
    snprintf(src, sizeof src,
             "return { api_keys = {\n"
             "  { id = 'site-1', key = 'rotated-site-key-1', role = 'decide' },\n"
             "  { id = 'site-2', sha256 = '%s', role = 'decide' },\n"
             "  { id = 'ops', sha256 = '%s', role = 'admin' } } }",
             hex, "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08");
    load_ok(src);
    cr_assert_eq(cfg.nkeys, 3);
    cr_assert_eq(cfg.keys[1].source, CONFIG_KEY_SHA256);
    const struct config_key *k = config_find_key(&cfg, "rotated-site-key-2");
    cr_assert(k && !strcmp(k->id, "site-2"), "the hashed key authenticates");
    k = config_find_key(&cfg, "rotated-site-key-1");
    cr_assert(k && !strcmp(k->id, "site-1"), "the plain one too: two keys for one role");
    /* sha256("test"), given in upper case */
    k = config_find_key(&cfg, "test");
    cr_assert(k && k->role == ROLE_ADMIN);
    cr_assert_null(config_find_key(&cfg, hex), "the digest itself is not a key");
    config_key_hash_hex("abc", 3, hex); /* FIPS 180-2's test vector */
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    config_free(&cfg);
    config_defaults(&cfg);
    config_key_hash_hex("abcdefgh12", 10, hex);
    snprintf(src, sizeof src,
             "return { api_keys = { { id = 'a', key = 'abcdefgh12', role = 'decide' },\n"
             "                      { id = 'b', sha256 = '%s', role = 'admin' } } }", hex);
    load_fails(src, "api_keys[2]: key: same key as another entry");
}

Test(config, find_key)
{
    load_ok("return { api_keys = {\n"
            "  { id = 'site', key = 'decide-key-0001', role = 'decide' },\n"
            "  { id = 'ops', key = 'admin-key-000001', role = 'admin' } } }");
    const struct config_key *k = config_find_key(&cfg, "decide-key-0001");
    cr_assert_not_null(k);
    cr_assert_str_eq(k->id, "site");
    k = config_find_key(&cfg, "admin-key-000001");
    cr_assert_not_null(k);
    cr_assert_eq(k->role, ROLE_ADMIN);
    cr_assert_null(config_find_key(&cfg, ""));
    cr_assert_null(config_find_key(&cfg, "decide-key-000"), "a prefix of a key");
    cr_assert_null(config_find_key(&cfg, "decide-key-00011"), "a key plus a byte");
    cr_assert_null(config_find_key(&cfg, "Decide-key-0001"), "case matters");
    cr_assert_null(config_find_key(&cfg, "admin-key-000001 "));
    cr_assert_str_eq(config_role_name(ROLE_DECIDE), "decide");
    cr_assert_str_eq(config_role_name(ROLE_MARKETER), "marketer");
    cr_assert_str_eq(config_role_name(ROLE_ADMIN), "admin");
    cr_assert_str_eq(config_role_name(ROLE_PUBLIC), "public");
}

Test(config, bytecode_refused)
{
    /* LuaJIT bytecode starts with ESC 'L' 'J' */
    static const char bc[] = "\033LJ\002\012\000\000\000return {}";
    write_raw(bc, sizeof bc - 1);
    cr_assert_eq(config_load(&cfg, path, err, sizeof err), ERR_INVAL);
    cr_assert(strstr(err, "bytecode is not accepted"), "%s", err);
    cr_assert_eq(strncmp(err, path, strlen(path)), 0);
}

Test(config, runtime_error_gives_file_and_line)
{
    load_fails("local t = {}\n"
               "local x = nil\n"
               "t.threads = x.field -- line 3 indexes nil\n"
               "return t\n",
               ":3: attempt to index local 'x'");
    config_free(&cfg);
    config_defaults(&cfg);
    load_fails("local a = 1\nerror('operator says no')\n", ":2: operator says no");
}

/* A config that never ends, or eats memory, is an error naming the file
 * (not a server hanging at start). */
Test(config, runaway_config_stopped)
{
    load_fails("while true do end\nreturn {}\n", "runs too long");
    config_free(&cfg);
    config_defaults(&cfg);
    load_fails("local t = {}\nfor i = 1, 1e12 do t[i] = string.rep('x', 1000) .. i end\nreturn {}\n",
               "not enough memory");
    config_free(&cfg);
    config_defaults(&cfg);
    load_fails("error({})\n", ": error");
    config_free(&cfg);
    config_defaults(&cfg);
    /* loops of a sane size are fine */
    load_ok("local n = 0\nfor i = 1, 100000 do n = n + i end\nreturn { threads = n % 7 }\n");
    cr_assert_eq(cfg.threads, (int)((100000L * 100001L / 2) % 7));
}

Test(config, syntax_error_gives_file_and_line)
{
    load_fails("return {\n  threads = 2,\n  listen = '127.0.0.1:1'\n  data_dir = 'x',\n}\n", ":4:");
}

Test(config, must_return_a_table)
{
    load_fails("return 42", "must return a table");
    config_free(&cfg);
    config_defaults(&cfg);
    load_fails("local x = 1", "must return a table");
}

Test(config, missing_and_oversized_files)
{
    char missing[400];
    snprintf(missing, sizeof missing, "%s/nope.lua", dir);
    cr_assert_eq(config_load(&cfg, missing, err, sizeof err), ERR_IO);
    cr_assert(strstr(err, missing) && strstr(err, "cannot open"), "%s", err);
    /* a 2 MiB comment */
    size_t n = 2u << 20;
    char *big = malloc(n + 16);
    memcpy(big, "return {} --", 12);
    memset(big + 12, 'x', n);
    write_raw(big, n + 12);
    free(big);
    cr_assert_eq(config_load(&cfg, path, err, sizeof err), ERR_TOOBIG);
    cr_assert(strstr(err, "larger than 1 MiB"), "%s", err);
}

Test(config, failed_load_then_free_is_clean)
{
    /* the first key is complete, the second fails half-way: nothing leaks
     * (the ASan build checks), and the first is not half-applied garbage */
    load_fails("return { api_keys = {\n"
               "  { id = 'one', key = 'first-key-00001', role = 'decide' },\n"
               "  { id = 'two', key = 'second-key-0001', role = 'superuser' } } }",
               "api_keys[2]: role");
}

struct listen_case {
    char in[64];
    char host[48];
    int port; /* -1: rejected */
};

ParameterizedTestParameters(config, set_listen)
{
    static struct listen_case cases[] = {
        { "127.0.0.1:8080", "127.0.0.1", 8080 },
        { "0.0.0.0:0", "0.0.0.0", 0 },
        { "localhost:65535", "localhost", 65535 },
        { "[::1]:9000", "::1", 9000 },
        { "::1:9000", "::1", 9000 },
        { "host:65536", "", -1 },
        { "host:", "", -1 },
        { ":80", "", -1 },
        { "noport", "", -1 },
        { "host:8o", "", -1 },
        { "", "", -1 },
    };
    return cr_make_param_array(struct listen_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct listen_case *c, config, set_listen)
{
    int rc = config_set_listen(&cfg, c->in);
    if (c->port < 0) {
        cr_assert_eq(rc, ERR_INVAL, "'%s' accepted", c->in);
        cr_assert_str_eq(cfg.listen_host, "127.0.0.1", "a rejected value changes nothing");
        cr_assert_eq(cfg.listen_port, 8080);
    } else {
        cr_assert_eq(rc, 0, "'%s' rejected", c->in);
        cr_assert_str_eq(cfg.listen_host, c->host);
        cr_assert_eq(cfg.listen_port, c->port);
    }
}
