/*
 * backtest.c — from a request to a replay: the body's checks, the two
 * sandboxed generations, the run (see backtest.h).
 */
#include "service/backtest.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/id.h"
#include "base/tz.h"
#include "engine/dlog.h"
#include "engine/rules.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LIMIT 100000
#define MAX_LIMIT 10000000L
#define MAX_FILES 256

int backtest_parse_time(const char *s, int64_t *ms)
{
    if (!s || !*s)
        return ERR_INVAL;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (!*end && n >= 0) {
        *ms = n;
        return 0;
    }
    int64_t secs;
    if (tz_parse_iso8601(s, &secs))
        return ERR_INVAL;
    *ms = secs * 1000;
    return 0;
}

/* A campaign file's path under rules/ ("spring.lua", "promo/summer.lua"):
 * segments of id characters, the last ending in ".lua", none starting with
 * '.', not in rules/lib. */
static int name_valid(const char *n)
{
    size_t len = strlen(n);
    if (len < 5 || len > 128 || strcmp(n + len - 4, ".lua") || !strncmp(n, "lib/", 4))
        return 0;
    char seg[130];
    for (const char *p = n;; p++) {
        size_t k = strcspn(p, "/");
        if (k == 0 || k >= sizeof seg || *p == '.')
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

json_t *backtest_run(struct app *app, const json_t *files, const char *edit_dir,
                     const struct replay_opts *o, struct reqerr *e)
{
    json_t *errors = json_array();
    struct rules_gen *base = rules_gen_sandbox(app, NULL, NULL, NULL, errors);
    if (!base) {
        const char *first = json_string_value(json_array_get(errors, 0));
        reqerr_set(e, 422, "invalid_rules", NULL,
                   "the rule set on disk does not validate, so there is nothing to compare "
                   "with: %s", first ? first : "(no message)");
        e->extra = json_pack("{s:o}", "errors", errors);
        return NULL;
    }
    struct rules_gen *edit = rules_gen_sandbox(app, edit_dir, NULL, files, errors);
    if (!edit) {
        const char *first = json_string_value(json_array_get(errors, 0));
        reqerr_set(e, 422, "invalid_rules", files ? "files" : NULL,
                   "the edited rule set does not validate: %s", first ? first : "(no message)");
        e->extra = json_pack("{s:o}", "errors", errors);
        rules_gen_release(base);
        return NULL;
    }
    json_decref(errors);
    return replay_run(dlog_store(), base, NULL, edit, edit_dir, o, e);
}

json_t *backtest_eligible(struct app *app, const char *rules_dir, int64_t now_ms,
                          struct reqerr *e)
{
    struct rules_gen *g;
    if (rules_dir) {
        json_t *errors = json_array();
        g = rules_gen_sandbox(app, rules_dir, NULL, NULL, errors);
        if (!g) {
            const char *first = json_string_value(json_array_get(errors, 0));
            reqerr_set(e, 422, "invalid_rules", NULL, "the rule set does not validate: %s",
                       first ? first : "(no message)");
            e->extra = json_pack("{s:o}", "errors", errors);
            return NULL;
        }
        json_decref(errors);
    } else if (!(g = rules_gen_acquire())) {
        reqerr_set(e, 503, "unavailable", NULL, "no rule set is loaded");
        return NULL;
    }
    struct replay_opts o = { .from_ms = now_ms - 86400000LL, .to_ms = now_ms,
                             .limit = BACKTEST_ELIG_MAX, .sample = 1 };
    long n = dlog_count(dlog_store(), o.from_ms, o.to_ms);
    if (n < 0) {
        rules_gen_release(g);
        reqerr_from_code(e, (int)n, "decision log");
        return NULL;
    }
    if (n == 0) { /* nothing logged: nothing to warn about, no sandbox to build */
        rules_gen_release(g);
        return json_pack("{s:{s:I,s:I},s:i,s:i,s:{},s:[],s:i}", "window", "from",
                         (json_int_t)o.from_ms, "to", (json_int_t)o.to_ms, "decisions", 0,
                         "failed", 0, "eligible", "warnings", "logged", 0);
    }
    if (n > BACKTEST_ELIG_MAX)
        o.sample = (double)BACKTEST_ELIG_MAX / (double)n;
    json_t *out = replay_eligible(dlog_store(), g, rules_dir, &o, e);
    if (out)
        json_object_set_new(out, "logged", json_integer(n));
    return out;
}

static struct {
    pthread_mutex_t mu;
    uint64_t seq;
    int64_t at_ms;
    json_t *res;
} g_elig = { .mu = PTHREAD_MUTEX_INITIALIZER };

json_t *backtest_eligible_live(struct app *app)
{
    struct rules_gen *g = rules_gen_acquire();
    if (!g)
        return NULL;
    uint64_t seq = g->seq;
    rules_gen_release(g);
    int64_t now = clock_now_ms();
    pthread_mutex_lock(&g_elig.mu); /* one computation at a time; the others wait for it */
    if (!g_elig.res || g_elig.seq != seq || now - g_elig.at_ms > 3600000LL ||
        now < g_elig.at_ms) {
        struct reqerr e = { 0 };
        json_t *res = backtest_eligible(app, NULL, now, &e);
        json_decref(e.extra);
        json_decref(g_elig.res);
        g_elig.res = res;
        g_elig.seq = seq;
        g_elig.at_ms = now;
    }
    json_t *out = json_incref(g_elig.res);
    pthread_mutex_unlock(&g_elig.mu);
    return out;
}

/* The file a posted script replaces: the live file of the campaign whose
 * id it declares, else "<id>.lua".  NULL with `e` filled when the script
 * does not validate. */
static char *script_file(struct app *app, const char *src, size_t len, struct reqerr *e)
{
    struct rules_gen *live = rules_gen_acquire();
    const char *names[32];
    int nn = 0;
    for (int i = 0; live && i < live->nchans && i < 32; i++)
        names[nn++] = live->chans[i].name;
    char lib[4200];
    snprintf(lib, sizeof lib, "%s/lib", app->cfg.rules_dir);
    json_t *errors = json_array();
    struct rules_campaign camp;
    int rc = rules_validate_campaign("rules/replay.lua", src, len, names, nn, lib, errors, &camp);
    char *name = NULL;
    if (rc) {
        const char *first = json_string_value(json_array_get(errors, 0));
        reqerr_set(e, rc == ERR_TOOBIG ? 413 : 422, "invalid_script", "script", "%s",
                   first ? first : "the script does not validate");
        e->extra = json_pack("{s:O}", "errors", errors);
    } else {
        int ci = live ? rules_gen_find_campaign(live, camp.id) : -1;
        size_t dl = strlen(app->cfg.rules_dir);
        const char *path = ci >= 0 ? live->files[live->camps[ci].file].path : NULL;
        if (path && !strncmp(path, app->cfg.rules_dir, dl) && path[dl] == '/')
            name = strdup(path + dl + 1);
        else if ((name = malloc(strlen(camp.id) + 5)))
            sprintf(name, "%s.lua", camp.id);
        rules_campaign_free(&camp);
    }
    json_decref(errors);
    rules_gen_release(live);
    return name;
}

static int time_field(const json_t *b, const char *k, int64_t def, int64_t *out, struct reqerr *e)
{
    const json_t *v = json_object_get(b, k);
    *out = def;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v) && backtest_parse_time(json_string_value(v), out) == 0)
        return 0;
    return reqerr_set(e, 400, "invalid_field", k,
                      "\"%s\" must be an ISO-8601 time like 2026-03-01T00:00:00Z or unix "
                      "milliseconds", k);
}

json_t *backtest_http(struct app *app, const json_t *b, struct reqerr *e)
{
    static const char *known[] = { "script", "name", "files", "from", "to", "limit", "sample",
                                   "show", NULL };
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)b, k, v) {
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!ok) {
            reqerr_set(e, 400, "unknown_field", k,
                       "unknown field \"%.64s\" (expected script, name, files, from, to, limit, "
                       "sample, show)", k);
            return NULL;
        }
    }
    const json_t *script = json_object_get(b, "script"), *files = json_object_get(b, "files"),
                 *name = json_object_get(b, "name");
    if ((script != NULL) == (files != NULL)) {
        reqerr_set(e, 400, "missing_field", "script",
                   "give either \"script\" (one campaign file's Lua source) or \"files\" "
                   "({\"name.lua\": \"source\", ...}), not both");
        return NULL;
    }
    if (script && !json_is_string(script)) {
        reqerr_set(e, 400, "invalid_field", "script", "\"script\" must be the Lua source as a string");
        return NULL;
    }
    if (name && (!json_is_string(name) || !name_valid(json_string_value(name)))) {
        reqerr_set(e, 400, "invalid_field", "name",
                   "\"name\" is the file's path under rules/, like \"spring.lua\" or "
                   "\"promo/summer.lua\" (A-Z a-z 0-9 _ - . : @, ending in .lua)");
        return NULL;
    }
    if (files) {
        if (!json_is_object(files) || !json_object_size(files) ||
            json_object_size(files) > MAX_FILES) {
            reqerr_set(e, 400, "invalid_field", "files",
                       "\"files\" must be an object of 1 to %d entries {\"name.lua\": \"source\"}",
                       MAX_FILES);
            return NULL;
        }
        json_object_foreach((json_t *)files, k, v) {
            if (!name_valid(k)) {
                reqerr_set(e, 400, "invalid_field", "files",
                           "\"files\": \"%.64s\" is not a campaign file's path under rules/, like "
                           "\"spring.lua\" or \"promo/summer.lua\"", k);
                return NULL;
            }
            if (!json_is_string(v)) {
                reqerr_set(e, 400, "invalid_field", "files",
                           "\"files\": \"%.64s\" must map to the Lua source as a string", k);
                return NULL;
            }
        }
    }
    int64_t now = clock_now_ms();
    struct replay_opts o = { .limit = DEFAULT_LIMIT, .sample = 1, .show = 10 };
    if (time_field(b, "to", now, &o.to_ms, e) ||
        time_field(b, "from", o.to_ms - 86400000LL, &o.from_ms, e))
        return NULL;
    if (o.from_ms > o.to_ms) {
        reqerr_set(e, 400, "invalid_field", "from", "\"from\" is after \"to\"");
        return NULL;
    }
    const json_t *lv = json_object_get(b, "limit"), *sv = json_object_get(b, "sample"),
                 *wv = json_object_get(b, "show");
    if (lv && (!json_is_integer(lv) || json_integer_value(lv) < 1 ||
               json_integer_value(lv) > MAX_LIMIT)) {
        reqerr_set(e, 400, "invalid_field", "limit",
                   "\"limit\" must be an integer from 1 to %ld", MAX_LIMIT);
        return NULL;
    }
    if (lv)
        o.limit = (long)json_integer_value(lv);
    if (sv && (!json_is_number(sv) || !(json_number_value(sv) > 0 && json_number_value(sv) <= 1))) {
        reqerr_set(e, 400, "invalid_field", "sample",
                   "\"sample\" must be a number above 0 and at most 1");
        return NULL;
    }
    if (sv)
        o.sample = json_number_value(sv);
    if (wv && (!json_is_integer(wv) || json_integer_value(wv) < 0 || json_integer_value(wv) > 100)) {
        reqerr_set(e, 400, "invalid_field", "show", "\"show\" must be an integer from 0 to 100");
        return NULL;
    }
    if (wv)
        o.show = (int)json_integer_value(wv);
    json_t *edit = NULL;
    if (script) {
        char *fn = name ? strdup(json_string_value(name))
                        : script_file(app, json_string_value(script), json_string_length(script), e);
        if (!fn)
            return NULL;
        edit = json_object();
        json_object_set(edit, fn, (json_t *)script);
        free(fn);
    }
    json_t *out = backtest_run(app, edit ? edit : files, NULL, &o, e);
    json_decref(edit);
    return out;
}
