/*
 * config.c — config/promod.lua into struct config.
 *
 * The config is trusted operator input, so it runs in a plain LuaJIT state
 * (not the rule sandbox) but with only base/string/table/math opened: no io
 * or os, so a config cannot do anything but compute its table.  It still
 * runs under limits (CONFIG_MAX_INSTRUCTIONS, CONFIG_MAX_MEMORY, the JIT
 * off so the instruction hook sees every loop): a config that never ends
 * or allocates without bound is an error naming the file, not a server
 * that hangs at start.
 */
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_MAX_INSTRUCTIONS 10000000L /* a real config runs a few thousand */
#define CONFIG_MAX_MEMORY ((size_t)64 << 20)
#define CONFIG_HOOK_EVERY 10000

struct lim {
    size_t used;
    long hooks;
};

static void *lim_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lim *l = ud;
    if (nsize == 0) {
        free(ptr);
        l->used -= osize;
        return NULL;
    }
    if (nsize > osize && l->used + (nsize - osize) > CONFIG_MAX_MEMORY)
        return NULL; /* Lua raises "not enough memory" */
    void *p = realloc(ptr, nsize);
    if (p)
        l->used += nsize - osize;
    return p;
}

static void lim_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct lim *l;
    lua_getallocf(L, (void **)&l);
    if (++l->hooks > CONFIG_MAX_INSTRUCTIONS / CONFIG_HOOK_EVERY)
        luaL_error(L, "runs too long (more than %d million instructions: a loop that never ends?)",
                   (int)(CONFIG_MAX_INSTRUCTIONS / 1000000));
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort(); /* config happens once at start: no way to go on */
    return p;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = xstrdup(v);
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    c->listen_host = xstrdup("127.0.0.1");
    c->listen_port = 8080;
    c->ops_port = -1;
    c->listen_backlog = 4096;
    c->data_dir = xstrdup("./data");
    c->rules_dir = xstrdup("./rules");
    c->plugins_dir = xstrdup("./plugins");
    c->models_dir = xstrdup("./models");
    c->train_threads = 1;
    c->segments_dir = xstrdup("./segments");
    c->segments_sweep_s = 600;
    c->web_dir = xstrdup("./web");
    c->threads = 0;
    c->map_size = (size_t)1 << 30;
    c->sync_interval_ms = 1000;
    c->store_writemap = 1;
    c->store_prewarm = 1;
    c->max_body = 1 << 20;
    c->max_import_body = (size_t)64 << 20;
    c->default_limit = 3;
    c->max_limit = 50;
    c->instr_budget = 1000000;
    c->lua_mem_limit = (size_t)256 << 20;
    c->hook_time_ms = 100;
    c->load_time_ms = 500;
    c->lua_file_mem_limit = 0;
    c->lua_log_per_sec = 20;
    c->log_level = LOG_INFO;
    c->access_log = 0;
    c->require_approval = 0;
    c->test_clock = 0;
    c->global_daily_cap = 0;
    c->reload_debounce_ms = 100;
    c->event_retention_days = 90;
    c->dlog_sample = 0;
    c->dlog_retention_days = 7;
    c->dlog_queue = 16384;
    c->request_timeout = 30;
    c->header_timeout = 10;
    c->max_header = 64 << 10;
    c->coupon_velocity_customer = (struct config_rate){ 20, 60 };
    c->coupon_velocity_prefix = (struct config_rate){ 50, 60 };
    c->coupon_prefix_len = 4;
    c->source = xstrdup("(defaults)");
}

void config_free(struct config *c)
{
    free(c->listen_host);
    free(c->data_dir);
    free(c->rules_dir);
    free(c->plugins_dir);
    free(c->models_dir);
    free(c->segments_dir);
    free(c->experiments_dir);
    free(c->templates_dir);
    free(c->web_dir);
    free(c->loyalty_dir);
    free(c->source);
    free(c->tls_cert);
    free(c->tls_key);
    /* <= nkeys: an entry rejected half-way (id read, key bad) is at keys[nkeys] */
    for (int i = 0; c->keys && i <= c->nkeys; i++)
        free(c->keys[i].id);
    free(c->keys);
    if (c->channels)
        json_decref(c->channels);
    memset(c, 0, sizeof *c);
}

/* `name` beside rules_dir: its parent (trailing slashes ignored) + name */
static const char *beside_rules(const struct config *c, const char *name, char *out, size_t len)
{
    const char *r = c->rules_dir ? c->rules_dir : "./rules";
    size_t n = strlen(r);
    while (n > 1 && r[n - 1] == '/')
        n--;
    size_t cut = n;
    while (cut > 0 && r[cut - 1] != '/')
        cut--;
    snprintf(out, len, "%.*s%s", (int)cut, r, name);
    return out;
}

const char *config_templates_dir(const struct config *c, char *out, size_t len)
{
    if (c->templates_dir) {
        snprintf(out, len, "%s", c->templates_dir);
        return out;
    }
    return beside_rules(c, "templates", out, len);
}

const char *config_experiments_dir(const struct config *c, char *out, size_t len)
{
    if (c->experiments_dir) {
        snprintf(out, len, "%s", c->experiments_dir);
        return out;
    }
    /* beside rules_dir: its parent (trailing slashes ignored) + /experiments */
    const char *r = c->rules_dir ? c->rules_dir : "./rules";
    size_t n = strlen(r);
    while (n > 1 && r[n - 1] == '/')
        n--;
    size_t cut = n;
    while (cut > 0 && r[cut - 1] != '/')
        cut--;
    if (cut == 0)
        snprintf(out, len, "experiments");
    else
        snprintf(out, len, "%.*sexperiments", (int)cut, r);
    return out;
}

int config_set_listen(struct config *c, const char *hp)
{
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp)
        return ERR_INVAL;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return ERR_INVAL;
    size_t hl = (size_t)(colon - hp);
    if (hp[0] == '[' && hl >= 2 && hp[hl - 1] == ']') { /* [::1]:8080 */
        hp++;
        hl -= 2;
    }
    char *host = strndup(hp, hl);
    if (!host)
        return ERR_NOMEM;
    free(c->listen_host);
    c->listen_host = host;
    c->listen_port = (int)port;
    return 0;
}

const char *config_role_name(enum config_role r)
{
    switch (r) {
    case ROLE_DECIDE: return "decide";
    case ROLE_CHECKOUT: return "checkout";
    case ROLE_MARKETER: return "marketer";
    case ROLE_ADMIN: return "admin";
    default: return "public";
    }
}

const struct config_key *config_find_key(const struct config *c, const char *token)
{
    unsigned char d[CONFIG_KEY_DIGEST];
    SHA256((const unsigned char *)token, strlen(token), d);
    const struct config_key *found = NULL;
    for (int i = 0; i < c->nkeys; i++) {
        /* every digest is compared in full: no early exit on a match */
        int same = CRYPTO_memcmp(d, c->keys[i].sha256, sizeof d) == 0;
        if (same && !found)
            found = &c->keys[i];
    }
    OPENSSL_cleanse(d, sizeof d);
    return found;
}

void config_key_hash_hex(const char *key, size_t len, char out[65])
{
    unsigned char d[CONFIG_KEY_DIGEST];
    SHA256((const unsigned char *)key, len, d);
    for (int i = 0; i < CONFIG_KEY_DIGEST; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* env(name) → string or nil: lets a config read a secret from the environment */
static int l_env(lua_State *L)
{
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

struct cerr {
    char *buf;
    size_t len;
    const char *path;
};

static int bad(struct cerr *e, const char *key, const char *what)
{
    snprintf(e->buf, e->len, "%s: %s: %s", e->path, key, what);
    return ERR_INVAL;
}

static int get_int(lua_State *L, struct cerr *e, const char *key, long lo, long hi, long *out)
{
    if (lua_type(L, -1) != LUA_TNUMBER)
        return bad(e, key, "expected a number");
    double d = lua_tonumber(L, -1);
    /* range first: casting NaN or 1e300 to long is undefined behaviour */
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(long)d) {
        char m[128];
        snprintf(m, sizeof m, "expected an integer from %ld to %ld", lo, hi);
        return bad(e, key, m);
    }
    *out = (long)d;
    return 0;
}

static int get_bool(lua_State *L, struct cerr *e, const char *key, int *out)
{
    if (lua_type(L, -1) != LUA_TBOOLEAN)
        return bad(e, key, "expected true or false");
    *out = lua_toboolean(L, -1);
    return 0;
}

static int get_str(lua_State *L, struct cerr *e, const char *key, char **out)
{
    if (lua_type(L, -1) != LUA_TSTRING)
        return bad(e, key, "expected a string");
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (n == 0 || strlen(s) != n)
        return bad(e, key, "expected a non-empty string");
    set_str(out, s);
    return 0;
}

/* { limit, "window" } or false → struct config_rate */
static int get_rate(lua_State *L, struct cerr *e, const char *key, struct config_rate *out)
{
    static const char *want = "expected { LIMIT, \"WINDOW\" } (window like \"1s\", \"10m\", \"1h\", \"1d\") or false";
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        *out = (struct config_rate){ 0, 0 };
        return 0;
    }
    if (!lua_istable(L, -1) || lua_objlen(L, -1) != 2)
        return bad(e, key, want);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    double lim = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : -1;
    const char *w = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    char *end = NULL;
    long n = w ? strtol(w, &end, 10) : 0;
    long mult = 0;
    if (end && end != w && end[0] && !end[1])
        mult = end[0] == 's' ? 1 : end[0] == 'm' ? 60 : end[0] == 'h' ? 3600 : end[0] == 'd' ? 86400 : 0;
    lua_pop(L, 2);
    if (!(lim >= 1 && lim <= 1e9) || lim != (double)(long)lim || mult == 0 || n < 1 || n > 366 * 86400)
        return bad(e, key, want);
    *out = (struct config_rate){ (long)lim, n * mult };
    return 0;
}

/* Lua table → jansson, for the free-form `channels` section. */
static json_t *to_json(lua_State *L, int idx, int depth)
{
    if (depth > 16)
        return NULL;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: return json_string(lua_tostring(L, idx));
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (d == (double)(long long)d)
            return json_integer((long long)d);
        return json_real(d);
    }
    case LUA_TTABLE: {
        json_t *o = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx < 0 ? idx - 1 : idx)) {
            char kb[32];
            const char *k;
            if (lua_type(L, -2) == LUA_TNUMBER) {
                snprintf(kb, sizeof kb, "%g", lua_tonumber(L, -2));
                k = kb;
            } else if (lua_type(L, -2) == LUA_TSTRING) {
                k = lua_tostring(L, -2);
            } else {
                lua_pop(L, 2);
                json_decref(o);
                return NULL;
            }
            json_t *v = to_json(L, lua_gettop(L), depth + 1);
            if (!v) {
                lua_pop(L, 2);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, k, v);
            lua_pop(L, 1);
        }
        return o;
    }
    default: return NULL;
    }
}

static int hexdigit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

#define KEY_SHAPE "expected a list of { id = ..., sha256 = ... (or key/key_env), role = ... }"

/* api_keys = { { id = "site", sha256 = "<64 hex>", role = "decide" }, ... }
 * One secret per entry: `sha256` (the digest `promod key` prints), `key`
 * (the secret itself, in the file: deprecated, warned about at start) or
 * `key_env` (the secret from the environment; wins over `key`).  Only the
 * digest is kept. */
static int load_keys(lua_State *L, struct cerr *e, struct config *c)
{
    if (!lua_istable(L, -1))
        return bad(e, "api_keys", KEY_SHAPE);
    int n = (int)lua_objlen(L, -1), count = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        count++;
        lua_pop(L, 1);
    }
    if (count != n) /* { site = {...} } would otherwise load no key at all */
        return bad(e, "api_keys", KEY_SHAPE);
    c->keys = calloc((size_t)n + 1, sizeof *c->keys);
    if (!c->keys)
        return ERR_NOMEM;
    for (int i = 1; i <= n; i++) {
        char where[64];
        snprintf(where, sizeof where, "api_keys[%d]", i);
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1))
            return bad(e, where, "expected a table");
        struct config_key *k = &c->keys[c->nkeys];
        lua_getfield(L, -1, "id");
        if (lua_type(L, -1) != LUA_TSTRING)
            return bad(e, where, "id: expected a string");
        size_t idlen;
        const char *id = lua_tolstring(L, -1, &idlen);
        if (idlen == 0 || idlen > 64 || strlen(id) != idlen)
            return bad(e, where, "id: expected 1 to 64 characters");
        for (size_t j = 0; j < idlen; j++)
            if ((unsigned char)id[j] <= ' ' || id[j] == '"' || id[j] == '\\' || id[j] == 0x7f)
                return bad(e, where, "id: no spaces, quotes, backslashes or control characters");
        k->id = xstrdup(id);
        lua_pop(L, 1);
        /* the secret: sha256, key, key_env */
        int have = 0;
        lua_getfield(L, -1, "sha256");
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t hl;
            const char *h = lua_tolstring(L, -1, &hl);
            if (hl != 2 * CONFIG_KEY_DIGEST)
                return bad(e, where, "sha256: expected 64 hexadecimal digits (promod key prints them)");
            for (int j = 0; j < CONFIG_KEY_DIGEST; j++) {
                int hi = hexdigit((unsigned char)h[2 * j]), lo = hexdigit((unsigned char)h[2 * j + 1]);
                if (hi < 0 || lo < 0)
                    return bad(e, where, "sha256: expected 64 hexadecimal digits (promod key prints them)");
                k->sha256[j] = (unsigned char)(hi << 4 | lo);
            }
            k->source = CONFIG_KEY_SHA256;
            have = 1;
        } else if (!lua_isnil(L, -1)) {
            return bad(e, where, "sha256: expected a string");
        }
        lua_pop(L, 1);
        const char *secret = NULL;
        lua_getfield(L, -1, "key");
        if (lua_type(L, -1) == LUA_TSTRING) {
            secret = lua_tostring(L, -1);
            k->source = CONFIG_KEY_PLAIN;
        } else if (!lua_isnil(L, -1)) {
            return bad(e, where, "key: expected a string");
        }
        lua_getfield(L, -2, "key_env");
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *v = getenv(lua_tostring(L, -1));
            if (!v || !*v) {
                char m[200];
                snprintf(m, sizeof m, "key_env: environment variable %s is not set",
                         lua_tostring(L, -1));
                return bad(e, where, m);
            }
            secret = v;
            k->source = CONFIG_KEY_ENV;
        } else if (!lua_isnil(L, -1)) {
            return bad(e, where, "key_env: expected a string");
        }
        if (have && secret)
            return bad(e, where, "give one of sha256, key or key_env");
        if (!have) {
            if (!secret || strlen(secret) < 8)
                return bad(e, where, "key: missing or shorter than 8 characters");
            SHA256((const unsigned char *)secret, strlen(secret), k->sha256);
        }
        lua_pop(L, 2);
        lua_getfield(L, -1, "role");
        const char *role = lua_tostring(L, -1);
        if (!role)
            return bad(e, where, "role: expected \"decide\", \"checkout\", \"marketer\" or \"admin\"");
        if (!strcmp(role, "decide"))
            k->role = ROLE_DECIDE;
        else if (!strcmp(role, "checkout"))
            k->role = ROLE_CHECKOUT;
        else if (!strcmp(role, "marketer"))
            k->role = ROLE_MARKETER;
        else if (!strcmp(role, "admin"))
            k->role = ROLE_ADMIN;
        else
            return bad(e, where, "role: expected \"decide\", \"checkout\", \"marketer\" or \"admin\"");
        lua_pop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *f = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(f, "id") && strcmp(f, "key") && strcmp(f, "key_env") && strcmp(f, "role") &&
                strcmp(f, "sha256")) {
                char m[128];
                snprintf(m, sizeof m, "unknown field '%s'", f);
                lua_pop(L, 2);
                return bad(e, where, m);
            }
            lua_pop(L, 1);
        }
        for (int j = 0; j < c->nkeys; j++) {
            if (!strcmp(c->keys[j].id, k->id))
                return bad(e, where, "duplicate id");
            if (!memcmp(c->keys[j].sha256, k->sha256, CONFIG_KEY_DIGEST))
                return bad(e, where, "key: same key as another entry");
        }
        c->nkeys++;
        lua_pop(L, 1);
    }
    return 0;
}

/* tls = { cert = "server.pem", key = "server.key" } */
static int load_tls(lua_State *L, struct cerr *e, struct config *c)
{
    if (!lua_istable(L, -1))
        return bad(e, "tls", "expected { cert = \"FILE\", key = \"FILE\" }");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *f = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        int rc;
        if (!strcmp(f, "cert"))
            rc = get_str(L, e, "tls.cert", &c->tls_cert);
        else if (!strcmp(f, "key"))
            rc = get_str(L, e, "tls.key", &c->tls_key);
        else {
            char m[128];
            snprintf(m, sizeof m, "unknown field '%s' (expected cert and key)", f);
            rc = bad(e, "tls", m);
        }
        if (rc) {
            lua_pop(L, 2);
            return rc;
        }
        lua_pop(L, 1);
    }
    if (!c->tls_cert || !c->tls_key)
        return bad(e, "tls", "needs both cert and key");
    return 0;
}

static int apply(lua_State *L, struct cerr *e, struct config *c)
{
    int rc = 0;
    long v;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return bad(e, "(key)", "keys must be names");
        }
        const char *k = lua_tostring(L, -2);
        if (!strcmp(k, "listen")) {
            if (lua_type(L, -1) != LUA_TSTRING || config_set_listen(c, lua_tostring(L, -1)))
                rc = bad(e, k, "expected \"HOST:PORT\"");
        } else if (!strcmp(k, "data_dir")) {
            rc = get_str(L, e, k, &c->data_dir);
        } else if (!strcmp(k, "rules_dir")) {
            rc = get_str(L, e, k, &c->rules_dir);
        } else if (!strcmp(k, "plugins_dir")) {
            rc = get_str(L, e, k, &c->plugins_dir);
        } else if (!strcmp(k, "models_dir")) {
            rc = get_str(L, e, k, &c->models_dir);
        } else if (!strcmp(k, "train_threads")) {
            if (!(rc = get_int(L, e, k, 1, 64, &v)))
                c->train_threads = (int)v;
        } else if (!strcmp(k, "segments_dir")) {
            rc = get_str(L, e, k, &c->segments_dir);
        } else if (!strcmp(k, "segments_sweep_interval")) {
            if (!(rc = get_int(L, e, k, 1, 86400, &v)))
                c->segments_sweep_s = (int)v;
        } else if (!strcmp(k, "experiments_dir")) {
            rc = get_str(L, e, k, &c->experiments_dir);
        } else if (!strcmp(k, "templates_dir")) {
            rc = get_str(L, e, k, &c->templates_dir);
        } else if (!strcmp(k, "web_dir")) {
            if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
                free(c->web_dir); /* false: no web console */
                c->web_dir = NULL;
            } else if (lua_type(L, -1) == LUA_TSTRING) {
                rc = get_str(L, e, k, &c->web_dir);
            } else {
                rc = bad(e, k, "expected a directory (string) or false");
            }
        } else if (!strcmp(k, "loyalty_dir")) {
            rc = get_str(L, e, k, &c->loyalty_dir);
        } else if (!strcmp(k, "threads")) {
            if (!(rc = get_int(L, e, k, 0, 64, &v)))
                c->threads = (int)v;
        } else if (!strcmp(k, "map_size_mb")) {
            if (!(rc = get_int(L, e, k, 16, 1L << 24, &v)))
                c->map_size = (size_t)v << 20;
        } else if (!strcmp(k, "map_max_mb")) {
            if (!(rc = get_int(L, e, k, 0, 1L << 24, &v)) && v > 0 && v < 16)
                rc = bad(e, k, "expected 0 (no limit) or an integer from 16 to 16777216");
            if (!rc)
                c->map_max = (size_t)v << 20;
        } else if (!strcmp(k, "store_writemap")) {
            rc = get_bool(L, e, k, &c->store_writemap);
        } else if (!strcmp(k, "store_readahead")) {
            rc = get_bool(L, e, k, &c->store_readahead);
        } else if (!strcmp(k, "store_prewarm")) {
            rc = get_bool(L, e, k, &c->store_prewarm);
        } else if (!strcmp(k, "sync_interval_ms")) {
            if (!(rc = get_int(L, e, k, 10, 60000, &v)))
                c->sync_interval_ms = (int)v;
        } else if (!strcmp(k, "max_body_kb")) {
            if (!(rc = get_int(L, e, k, 1, 1L << 20, &v)))
                c->max_body = (size_t)v << 10;
        } else if (!strcmp(k, "max_import_body_mb")) {
            if (!(rc = get_int(L, e, k, 1, 4096, &v)))
                c->max_import_body = (size_t)v << 20;
        } else if (!strcmp(k, "default_limit")) {
            if (!(rc = get_int(L, e, k, 1, 1000, &v)))
                c->default_limit = (int)v;
        } else if (!strcmp(k, "max_limit")) {
            if (!(rc = get_int(L, e, k, 1, 1000, &v)))
                c->max_limit = (int)v;
        } else if (!strcmp(k, "instruction_budget")) {
            if (!(rc = get_int(L, e, k, 1000, 1000000000L, &v)))
                c->instr_budget = v;
        } else if (!strcmp(k, "lua_memory_mb")) {
            if (!(rc = get_int(L, e, k, 8, 65536, &v)))
                c->lua_mem_limit = (size_t)v << 20;
        } else if (!strcmp(k, "hook_time_limit_ms")) {
            if (!(rc = get_int(L, e, k, 1, 60000, &v)))
                c->hook_time_ms = v;
        } else if (!strcmp(k, "load_time_limit_ms")) {
            if (!(rc = get_int(L, e, k, 10, 600000, &v)))
                c->load_time_ms = v;
        } else if (!strcmp(k, "lua_file_memory_mb")) {
            if (!(rc = get_int(L, e, k, 0, 65536, &v)))
                c->lua_file_mem_limit = (size_t)v << 20;
        } else if (!strcmp(k, "lua_log_lines_per_sec")) {
            if (!(rc = get_int(L, e, k, 0, 1000000, &v)))
                c->lua_log_per_sec = (int)v;
        } else if (!strcmp(k, "log_level")) {
            int lvl = lua_type(L, -1) == LUA_TSTRING ? log_level_parse(lua_tostring(L, -1)) : -1;
            if (lvl < 0)
                rc = bad(e, k, "expected \"debug\", \"info\", \"warn\", \"error\" or \"quiet\"");
            else
                c->log_level = lvl;
        } else if (!strcmp(k, "access_log")) {
            rc = get_bool(L, e, k, &c->access_log);
        } else if (!strcmp(k, "require_approval")) {
            rc = get_bool(L, e, k, &c->require_approval);
        } else if (!strcmp(k, "test_clock")) {
            rc = get_bool(L, e, k, &c->test_clock);
        } else if (!strcmp(k, "global_daily_cap")) {
            if (!(rc = get_int(L, e, k, 0, 1000000, &v)))
                c->global_daily_cap = v;
        } else if (!strcmp(k, "reload_debounce_ms")) {
            if (!(rc = get_int(L, e, k, 0, 10000, &v)))
                c->reload_debounce_ms = (int)v;
        } else if (!strcmp(k, "decision_log_sample")) {
            double d = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
            if (!(d >= 0 && d <= 1))
                rc = bad(e, k, "expected a number from 0 to 1");
            else
                c->dlog_sample = d;
        } else if (!strcmp(k, "decision_log_retention_days")) {
            if (!(rc = get_int(L, e, k, 1, 3650, &v)))
                c->dlog_retention_days = (int)v;
        } else if (!strcmp(k, "decision_log_queue")) {
            if (!(rc = get_int(L, e, k, 16, 1 << 22, &v)))
                c->dlog_queue = v;
        } else if (!strcmp(k, "event_retention_days")) {
            if (!(rc = get_int(L, e, k, 1, 36500, &v)))
                c->event_retention_days = (int)v;
        } else if (!strcmp(k, "request_timeout")) {
            if (!(rc = get_int(L, e, k, 1, 3600, &v)))
                c->request_timeout = (double)v;
        } else if (!strcmp(k, "listen_backlog")) {
            if (!(rc = get_int(L, e, k, 16, 65535, &v)))
                c->listen_backlog = (int)v;
        } else if (!strcmp(k, "ops_port")) {
            if (!(rc = get_int(L, e, k, -1, 65535, &v)))
                c->ops_port = (int)v;
        } else if (!strcmp(k, "header_timeout")) {
            if (!(rc = get_int(L, e, k, 1, 3600, &v)))
                c->header_timeout = (int)v;
        } else if (!strcmp(k, "max_header_kb")) {
            if (!(rc = get_int(L, e, k, 1, 1024, &v)))
                c->max_header = (size_t)v << 10;
        } else if (!strcmp(k, "tls")) {
            rc = load_tls(L, e, c);
        } else if (!strcmp(k, "insecure_http")) {
            rc = get_bool(L, e, k, &c->insecure_http);
        } else if (!strcmp(k, "rate_limit_per_key")) {
            rc = get_rate(L, e, k, &c->rate_per_key);
        } else if (!strcmp(k, "rate_limit_per_address")) {
            rc = get_rate(L, e, k, &c->rate_per_address);
        } else if (!strcmp(k, "coupon_velocity_customer")) {
            rc = get_rate(L, e, k, &c->coupon_velocity_customer);
        } else if (!strcmp(k, "coupon_velocity_prefix")) {
            rc = get_rate(L, e, k, &c->coupon_velocity_prefix);
        } else if (!strcmp(k, "coupon_prefix_len")) {
            if (!(rc = get_int(L, e, k, 1, 64, &v)))
                c->coupon_prefix_len = (int)v;
        } else if (!strcmp(k, "api_keys")) {
            rc = load_keys(L, e, c);
        } else if (!strcmp(k, "channels")) {
            if (!lua_istable(L, -1))
                rc = bad(e, k, "expected a table of channel settings");
            else if (!(c->channels = to_json(L, lua_gettop(L), 0)))
                rc = bad(e, k, "values must be strings, numbers, booleans or tables");
        } else {
            char m[160];
            snprintf(m, sizeof m, "unknown key (typo?)");
            rc = bad(e, k, m);
        }
        if (rc) {
            lua_settop(L, 0);
            return rc;
        }
        lua_pop(L, 1);
    }
    if (c->default_limit > c->max_limit)
        return bad(e, "default_limit", "must not exceed max_limit");
    if (c->map_max && c->map_max < c->map_size)
        return bad(e, "map_max_mb", "must not be below map_size_mb");
    return 0;
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %m", path);
        return ERR_IO;
    }
    char *src = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (1u << 20)) {
                fclose(f);
                free(src);
                snprintf(err, errlen, "%s: larger than 1 MiB", path);
                return ERR_TOOBIG;
            }
            char *p = realloc(src, cap);
            if (!p) {
                fclose(f);
                free(src);
                return ERR_NOMEM;
            }
            src = p;
        }
        size_t n = fread(src + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    int rc = config_load_source(c, src, len, path, err, errlen);
    free(src);
    return rc;
}

int config_load_source(struct config *c, const char *src, size_t len, const char *path, char *err,
                       size_t errlen)
{
    struct cerr e = { err, errlen, path };
    struct lim lim = { 0, 0 };
    lua_State *L = lua_newstate(lim_alloc, &lim);
    if (!L)
        return ERR_NOMEM;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF); /* hooks do not see JIT traces */
    lua_sethook(L, lim_hook, LUA_MASKCOUNT, CONFIG_HOOK_EVERY);
    static const luaL_Reg libs[] = {
        { "", luaopen_base }, { LUA_STRLIBNAME, luaopen_string },
        { LUA_TABLIBNAME, luaopen_table }, { LUA_MATHLIBNAME, luaopen_math }, { NULL, NULL }
    };
    for (const luaL_Reg *l = libs; l->func; l++) {
        lua_pushcfunction(L, l->func);
        lua_pushstring(L, l->name);
        lua_call(L, 1, 0);
    }
    static const char *drop[] = { "dofile", "loadfile", "load", "loadstring", "require",
                                  "module", "collectgarbage", "getfenv", "setfenv", NULL };
    for (const char **d = drop; *d; d++) {
        lua_pushnil(L);
        lua_setglobal(L, *d);
    }
    lua_pushcfunction(L, l_env);
    lua_setglobal(L, "env");
    char chunk[512];
    snprintf(chunk, sizeof chunk, "@%s", path);
    int rc = 0;
    if (len && src[0] == '\033') {
        snprintf(err, errlen, "%s: bytecode is not accepted", path);
        rc = ERR_INVAL;
    } else if (luaL_loadbuffer(L, src, len, chunk) || lua_pcall(L, 0, 1, 0)) {
        const char *m = lua_tostring(L, -1);
        if (!m)
            snprintf(err, errlen, "%s: error", path);
        else if (!strncmp(m, path, strlen(path)))
            snprintf(err, errlen, "%s", m);
        else /* "not enough memory" and the like carry no position */
            snprintf(err, errlen, "%s: %s", path, m);
        rc = ERR_INVAL;
    } else if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: must return a table", path);
        rc = ERR_INVAL;
    } else {
        rc = apply(L, &e, c);
    }
    lua_close(L);
    if (!rc)
        set_str(&c->source, path);
    return rc;
}
