/* api_rules.c — /api/v1/rules: load status, forced reload, dry-compile,
 * and a decide against a script that is not saved (simulate). */
#include "http/api.h"
#include "base/id.h"
#include "base/app.h"
#include "engine/decide.h"
#include "store/audit.h"
#include "http/router.h"
#include "engine/loyalty_rules.h"
#include "engine/rules.h"
#include "engine/ruletest.h"
#include "engine/templates.h"
#include "base/clock.h"
#include "store/store.h"
#include "service/backtest.h"
#include <stdlib.h>
#include <string.h>

/* campaign files and plugins, and the loyalty files beside them */
static json_t *status(void)
{
    json_t *o = rules_status_json();
    if (json_is_object(o))
        json_object_set_new(o, "loyalty", loyalty_rules_status_json());
    return o;
}

/* GET /api/v1/rules: each file's "warnings" (engine/rules.h rules_warnings),
 * the template warning against profiles sampled from the store. */
static void h_list(struct http_req *r)
{
    json_t *o = status();
    struct store_txn *t = NULL;
    json_t *sample = NULL;
    if (g_app->store && store_rtxn_begin(g_app->store, &t) == 0)
        sample = rules_sample_profiles(t, RULES_WARN_SAMPLE);
    store_txn_end(t);
    struct rules_gen *g = rules_gen_acquire();
    json_t *w = rules_gen_warnings(g, sample, clock_now());
    rules_gen_release(g);
    /* eligible_never_passed: the live rule set replayed on a bounded sample
     * of the last day's logged decides, cached per generation */
    json_t *el = backtest_eligible_live(g_app);
    size_t ei;
    json_t *ew;
    json_array_foreach(json_object_get(el, "warnings"), ei, ew) {
        const char *file = json_string_value(json_object_get(ew, "file"));
        json_t *arr = w && file ? json_object_get(w, file) : NULL;
        if (w && file && !arr) {
            arr = json_array();
            json_object_set_new(w, file, arr);
        }
        if (arr)
            json_array_append(arr, ew);
    }
    size_t i;
    json_t *f;
    int n = 0;
    json_array_foreach(json_object_get(o, "files"), i, f) {
        json_t *fw = w ? json_object_get(w, json_string_value(json_object_get(f, "file"))) : NULL;
        json_t *list = json_array();
        size_t k;
        json_t *x;
        json_array_foreach(fw, k, x) { /* the file is the entry's own */
            json_t *c = json_deep_copy(x);
            json_object_del(c, "file");
            json_array_append_new(list, c);
            n++;
        }
        json_object_set_new(f, "warnings", list);
    }
    json_object_set_new(o, "warnings", json_integer(n));
    json_object_set_new(o, "decisions_replayed",
                        json_integer(json_integer_value(json_object_get(el, "decisions"))));
    json_decref(el);
    json_object_set_new(o, "profiles_sampled", json_integer(sample ? (json_int_t)json_array_size(sample) : 0));
    json_decref(w);
    json_decref(sample);
    http_reply_json(r, 200, o);
}

static void h_reload(struct http_req *r)
{
    int nerr = rules_reload(g_app, 1) + loyalty_rules_reload(1);
    json_t *o = status();
    json_object_set_new(o, "errors", json_integer(nerr));
    json_t *sum = json_pack("{s:O,s:i}", "generation", json_object_get(o, "generation"), "errors", nerr);
    audit_log(g_app->store, audit_actor(r->key, http_header(r, "X-Actor")), "rules.reload", "rules",
              NULL, sum);
    json_decref(sum);
    http_reply_json(r, 200, o);
}

/* A campaign file's path under rules/ ("spring.lua", "promo/summer.lua"):
 * segments of id characters, none empty or starting with '.'. */
static int rel_name_valid(const char *n)
{
    if (strlen(n) > 128)
        return 0;
    char seg[130];
    for (const char *p = n;; p++) {
        size_t k = strcspn(p, "/");
        if (k == 0 || k >= sizeof seg)
            return 0;
        memcpy(seg, p, k);
        seg[k] = 0;
        if (!id_valid(seg))
            return 0;
        p += k;
        if (!*p)
            return 1;
    }
}

/* POST /api/v1/rules/validate {"script": "...", "kind": "campaign"|"plugin", "name": "x.lua"}
 * or a raw Lua body (Content-Type text/plain). */
static void h_validate(struct http_req *r)
{
    const char *src;
    size_t len;
    const char *name = "script.lua";
    enum rules_kind kind = RULES_CAMPAIGN;
    json_t *b = NULL;
    const char *ct = http_header(r, "Content-Type");
    if (ct && !strncasecmp(ct, "text/plain", 10)) {
        src = r->body;
        len = r->body_len;
        if (!len) {
            http_reply_error(r, 400, "empty_body", "post the Lua source", NULL);
            return;
        }
    } else {
        b = http_body_json(r, JSON_OBJECT);
        if (!b)
            return;
        const char *key;
        json_t *val;
        json_object_foreach(b, key, val) {
            if (strcmp(key, "script") && strcmp(key, "kind") && strcmp(key, "name")) {
                http_reply_errorf(r, 400, "unknown_field", key,
                                  "unknown field \"%.64s\" (expected script, kind, name)", key);
                json_decref(b);
                return;
            }
        }
        json_t *s = json_object_get(b, "script");
        if (!json_is_string(s)) {
            if (s && !json_is_null(s))
                http_reply_error(r, 400, "invalid_field", "\"script\" must be the Lua source as a string",
                                 "script");
            else
                http_reply_error(r, 400, "missing_field", "\"script\" (the Lua source) is required", "script");
            json_decref(b);
            return;
        }
        src = json_string_value(s);
        len = json_string_length(s);
        json_t *kv = json_object_get(b, "kind");
        const char *k = json_string_value(kv);
        if (k && !strcmp(k, "plugin"))
            kind = RULES_PLUGIN;
        else if ((kv && !json_is_null(kv) && !k) || (k && strcmp(k, "campaign"))) {
            http_reply_error(r, 400, "invalid_field", "\"kind\" is campaign or plugin", "kind");
            json_decref(b);
            return;
        }
        json_t *nv = json_object_get(b, "name");
        const char *n = json_string_value(nv);
        if ((nv && !json_is_null(nv) && !n) || (n && !rel_name_valid(n))) {
            http_reply_error(r, 400, "invalid_field",
                             "\"name\" is the file's path under rules/ or plugins/, like \"spring.lua\" "
                             "or \"promo/summer.lua\" (A-Z a-z 0-9 _ - . : @)", "name");
            json_decref(b);
            return;
        }
        if (n)
            name = n;
    }
    char path[300];
    snprintf(path, sizeof path, "%s/%s", kind == RULES_PLUGIN ? "plugins" : "rules", name);
    struct rules_gen *g = rules_gen_acquire();
    const char *chans[32];
    int nch = 0;
    for (int i = 0; g && i < g->nchans && i < 32; i++)
        chans[nch++] = g->chans[i].name;
    json_t *errors = json_array();
    char lib[4096];
    snprintf(lib, sizeof lib, "%s/lib", g_app->cfg.rules_dir);
    int rc = rules_validate_source(path, kind, src, len, chans, nch, lib, errors);
    rules_gen_release(g);
    json_t *o = json_object();
    json_object_set_new(o, "valid", json_boolean(rc == 0));
    json_object_set_new(o, "errors", errors);
    http_reply_json(r, rc == 0 ? 200 : 422, o);
    json_decref(b);
}

/* A string field of at most `max` bytes (1..max, no NUL); NULL when absent.
 * *bad = 1 after replying 400. */
static const char *str_field(struct http_req *r, json_t *b, const char *k, int required,
                             size_t max, int *bad)
{
    json_t *v = json_object_get(b, k);
    if (!v || json_is_null(v)) {
        if (required) {
            http_reply_errorf(r, 400, "missing_field", k, "\"%s\" is required", k);
            *bad = 1;
        }
        return NULL;
    }
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (!s || n == 0 || n > max || strlen(s) != n) {
        http_reply_errorf(r, 400, "invalid_field", k, "\"%s\" must be a string of 1-%zu bytes", k,
                          max);
        *bad = 1;
        return NULL;
    }
    return s;
}

/* POST /api/v1/rules/simulate {"script", "name"?, "customer_id", "channel",
 * "placement"?, "context"?, "limit"?}: decide_simulate() (dry run, explain). */
static void h_simulate(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    static const char *known[] = { "script", "name", "customer_id", "channel", "placement",
                                   "context", "limit", NULL };
    const char *k;
    json_t *v;
    char *ctx = NULL;
    json_object_foreach(b, k, v) {
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!ok) {
            http_reply_errorf(r, 400, "unknown_field", k,
                              "unknown field \"%.64s\" (expected script, name, customer_id, "
                              "channel, placement, context, limit)", k);
            goto out;
        }
    }
    int bad = 0;
    json_t *sv = json_object_get(b, "script");
    if (!json_is_string(sv)) {
        http_reply_error(r, 400, sv && !json_is_null(sv) ? "invalid_field" : "missing_field",
                         "\"script\" (the Lua source) is required as a string", "script");
        goto out;
    }
    const char *name = str_field(r, b, "name", 0, 128, &bad);
    if (bad)
        goto out;
    if (name && !rel_name_valid(name)) {
        http_reply_error(r, 400, "invalid_field",
                         "\"name\" is the file's path under rules/, like \"spring.lua\" or "
                         "\"promo/summer.lua\" (A-Z a-z 0-9 _ - . : @)", "name");
        goto out;
    }
    struct decide_sim_req q = { .script = json_string_value(sv),
                                .script_len = json_string_length(sv) };
    q.q.limit = 1;
    q.q.customer_id = str_field(r, b, "customer_id", 1, 128, &bad);
    if (!bad)
        q.q.channel = str_field(r, b, "channel", 1, 64, &bad);
    if (!bad)
        q.q.placement = str_field(r, b, "placement", 0, 128, &bad);
    if (bad)
        goto out;
    if (!id_valid(q.q.customer_id)) {
        http_reply_error(r, 400, "invalid_id",
                         "customer_id must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "customer_id");
        goto out;
    }
    json_t *cv = json_object_get(b, "context");
    if (cv && !json_is_null(cv)) {
        if (!json_is_object(cv)) {
            http_reply_error(r, 400, "invalid_field", "\"context\" must be an object", "context");
            goto out;
        }
        if (!(ctx = json_dumps(cv, JSON_COMPACT | JSON_REAL_PRECISION(17)))) {
            http_reply_error(r, 500, "internal", "out of memory", NULL);
            goto out;
        }
        q.q.context_text = ctx;
        q.q.context_len = strlen(ctx);
    }
    json_t *lv = json_object_get(b, "limit");
    if (lv && !json_is_null(lv)) {
        if (!json_is_integer(lv) || json_integer_value(lv) < 1 ||
            json_integer_value(lv) > g_app->cfg.max_limit) {
            http_reply_errorf(r, 400, "invalid_field", "limit",
                              "\"limit\" must be an integer from 1 to %d", g_app->cfg.max_limit);
            goto out;
        }
        q.q.limit = (int)json_integer_value(lv);
    }
    char path[160];
    if (name)
        snprintf(path, sizeof path, "rules/%s", name);
    else
        snprintf(path, sizeof path, "rules/simulation.lua");
    q.path = path;
    struct reqerr e = { 0 };
    json_t *o = decide_simulate(&q, &e);
    if (o)
        http_reply_json(r, 200, o);
    else
        http_reply_reqerr(r, &e);
out:
    free(ctx);
    json_decref(b);
}

/* POST /api/v1/rules/test {"script"?, "name"?, "tests"}: the campaign tests
 * `tests` (a test file's source) against the posted script (under rules/NAME,
 * default rules/script.lua) and every live campaign file, in a throwaway
 * sandbox (engine/ruletest.h): nothing is counted or stored.  200 with the
 * results whether the tests pass or not. */
static void h_test(struct http_req *r)
{
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) {
        if (strcmp(k, "script") && strcmp(k, "name") && strcmp(k, "tests")) {
            http_reply_errorf(r, 400, "unknown_field", k,
                              "unknown field \"%.64s\" (expected script, name, tests)", k);
            json_decref(b);
            return;
        }
    }
    json_t *sv = json_object_get(b, "script"), *tv = json_object_get(b, "tests");
    const char *n = json_string_value(json_object_get(b, "name"));
    if (!json_is_string(tv)) {
        http_reply_error(r, 400, tv ? "invalid_field" : "missing_field",
                         "\"tests\" (a test file's Lua source) is required as a string", "tests");
    } else if (sv && !json_is_string(sv)) {
        http_reply_error(r, 400, "invalid_field", "\"script\" must be the Lua source as a string",
                         "script");
    } else if ((json_object_get(b, "name") && !n) || (n && !rel_name_valid(n))) {
        http_reply_error(r, 400, "invalid_field",
                         "\"name\" is the file's path under rules/, like \"spring.lua\"", "name");
    } else {
        char path[300], tpath[300];
        snprintf(path, sizeof path, "rules/%s", n ? n : "script.lua");
        size_t stem = strlen(path);
        if (stem > 4 && !strcmp(path + stem - 4, ".lua"))
            stem -= 4; /* rules/x.lua's tests are rules/x_test.lua */
        snprintf(tpath, sizeof tpath, "%.*s_test.lua", (int)(stem > 250 ? 250 : stem), path);
        struct rules_gen *g = rules_gen_acquire();
        int nf = g ? g->nfiles : 0, nc = 0;
        struct ruletest_src *cs = calloc((size_t)nf + 2, sizeof *cs);
        const char *chans[32];
        int nch = 0;
        for (int i = 0; g && i < g->nchans && i < 32; i++)
            chans[nch++] = g->chans[i].name;
        /* the posted script first: campaign(id) finds it before a live file of that id */
        if (cs && sv)
            cs[nc++] = (struct ruletest_src){ path, json_string_value(sv), json_string_length(sv) };
        for (int i = 0; cs && i < nf; i++) {
            const struct rules_file *f = &g->files[i];
            if (f->kind == RULES_CAMPAIGN && f->source)
                cs[nc++] = (struct ruletest_src){ f->path, f->source, f->source_len };
        }
        struct ruletest_src ts = { tpath, json_string_value(tv), json_string_length(tv) };
        char lib[4096];
        snprintf(lib, sizeof lib, "%s/lib", g_app->cfg.rules_dir);
        json_t *o = cs ? ruletest_run(cs, nc, &ts, 1, chans, nch, lib) : NULL;
        rules_gen_release(g);
        free(cs);
        if (o)
            http_reply_json(r, 200, o);
        else
            http_reply_error(r, 500, "internal", "out of memory", NULL);
    }
    json_decref(b);
}

/* GET /api/v1/templates: the campaign templates with their parameters */
static void h_templates(struct http_req *r)
{
    char dir[4096];
    config_templates_dir(&g_app->cfg, dir, sizeof dir);
    json_t *l = templates_list(dir);
    if (!l) {
        http_reply_error(r, 500, "internal", "out of memory", NULL);
        return;
    }
    http_reply_json(r, 200, json_pack("{s:o}", "templates", l));
}

void api_rules_register(void)
{
    router_add(HTTP_POST, "/api/v1/rules/test", ROLE_MARKETER, h_test, 0);
    router_add(HTTP_GET, "/api/v1/templates", ROLE_MARKETER, h_templates, 0);
    router_add(HTTP_GET, "/api/v1/rules", ROLE_MARKETER, h_list, 0);
    router_add(HTTP_POST, "/api/v1/rules/reload", ROLE_MARKETER, h_reload, 0);
    router_add(HTTP_POST, "/api/v1/rules/validate", ROLE_MARKETER, h_validate, 0);
    router_add(HTTP_POST, "/api/v1/rules/simulate", ROLE_MARKETER, h_simulate, 0);
}
