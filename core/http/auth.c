/* auth.c — bearer tokens to keys, and each key's last use. */
#include "http/auth.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/metrics.h"
#include <stdint.h>
#include <stdlib.h>

static const struct config *g_cfg;
static int64_t *g_last; /* per key, unix seconds, 0 = not used */
static int g_nkeys;

static void keys_collector(struct buf *out, void *ud)
{
    (void)ud;
    const struct config *c = g_cfg;
    if (!c || c->nkeys == 0)
        return;
    buf_adds(out, "# HELP promod_api_key_last_used_seconds When each API key last authenticated a "
                  "request (unix time; 0 = not since start).\n"
                  "# TYPE promod_api_key_last_used_seconds gauge\n");
    for (int i = 0; i < c->nkeys && i < g_nkeys; i++) {
        buf_adds(out, "promod_api_key_last_used_seconds{id=\"");
        metrics_label(out, c->keys[i].id);
        buf_printf(out, "\",role=\"%s\"} %lld\n", config_role_name(c->keys[i].role),
                   (long long)__atomic_load_n(&g_last[i], __ATOMIC_RELAXED));
    }
}

void auth_init(const struct config *cfg)
{
    static int registered;
    free(g_last);
    g_last = cfg->nkeys ? calloc((size_t)cfg->nkeys, sizeof *g_last) : NULL;
    g_nkeys = g_last ? cfg->nkeys : 0;
    g_cfg = cfg;
    if (!registered) {
        metrics_register(keys_collector, NULL);
        registered = 1;
    }
}

const struct config_key *auth_check(const struct config *cfg, const char *token)
{
    const struct config_key *k = config_find_key(cfg, token);
    if (k && cfg == g_cfg) {
        int i = (int)(k - cfg->keys);
        int64_t now = clock_now();
        /* one store per key per second: workers do not fight over the line */
        if (i < g_nkeys && __atomic_load_n(&g_last[i], __ATOMIC_RELAXED) != now)
            __atomic_store_n(&g_last[i], now, __ATOMIC_RELAXED);
    }
    return k;
}

json_t *auth_keys_json(const struct config *cfg)
{
    static const char *sources[] = { "sha256", "key", "key_env" };
    json_t *a = json_array();
    for (int i = 0; i < cfg->nkeys; i++) {
        const struct config_key *k = &cfg->keys[i];
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(k->id));
        json_object_set_new(o, "role", json_string(config_role_name(k->role)));
        json_object_set_new(o, "source", json_string(sources[k->source]));
        int64_t t = cfg == g_cfg && i < g_nkeys ? __atomic_load_n(&g_last[i], __ATOMIC_RELAXED) : 0;
        json_object_set_new(o, "last_used", t ? json_integer(t) : json_null());
        json_array_append_new(a, o);
    }
    return a;
}
