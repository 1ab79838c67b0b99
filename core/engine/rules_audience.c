/*
 * rules_audience.c — the model and audience fields of a campaign file,
 * checked for the loader (rules_check.c): score = { model, value } or
 * { base, per, boost } (a declared score, engine/formula.h), and
 * audience = { segments, exclude, conditions, model, top | above }.
 */
#include "engine/rules.h"
#include "engine/rules_internal.h"
#include "engine/cond.h"
#include "engine/formula.h"
#include "base/err.h"
#include "engine/segments.h"
#include "base/id.h"
#include "base/reqerr.h"
#include "lua/luavm.h"
#include <lua.h>
#include <math.h>
#include <string.h>

/* A model id field of the table on top (1-128 id characters), into out. */
static int model_id_field(lua_State *L, struct vctx *v, const char *key, const char *path,
                          char *out, size_t outlen)
{
    lua_getfield(L, -1, key);
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int ok = m && id_valid(m) && strlen(m) < outlen;
    if (ok)
        snprintf(out, outlen, "%s", m);
    else
        rules_verr(v, path, "%s must be a model id (models/<id>.lua)", path);
    lua_pop(L, 1);
    return ok;
}

/* score = { base = 96, per = {...}, boost = {...} } (table on top): engine/formula.h */
static void parse_formula(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    int jerr;
    json_t *decl = luavm_to_json(L, -1, &jerr);
    if (!decl) {
        rules_verr(v, "score", "score holds a value JSON cannot carry (function, NaN, cycle)");
        return;
    }
    char path[200], msg[400];
    int rc = formula_compile(decl, &c->score_formula, path, sizeof path, msg, sizeof msg);
    json_decref(decl);
    if (rc == ERR_NOMEM)
        rules_verr(v, "score", "score: out of memory");
    else if (rc)
        rules_verr(v, "score", "%s: %s", path, msg);
}

/* score = { model = "buy_7d", value = 25 | { model = "rev_90d" } } (table on top), or a
 * declared score (parse_formula) */
void rules_parse_model_score(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    lua_getfield(L, -1, "model");
    int model = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!model) {
        parse_formula(L, v, c);
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "model") && strcmp(k, "value"))
            rules_verr(v, "score", "unknown field '%s' in score (use model and value)", k);
        lua_pop(L, 1);
    }
    model_id_field(L, v, "model", "score.model", c->score_model, sizeof c->score_model);
    lua_getfield(L, -1, "value");
    c->score_value = 1;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        c->score_value = lua_tonumber(L, -1);
        if (!isfinite(c->score_value) || c->score_value < 0)
            rules_verr(v, "score.value", "score.value must be a number >= 0 (what a response is worth)");
    } else if (lua_istable(L, -1)) {
        model_id_field(L, v, "model", "score.value.model", c->score_value_model,
                       sizeof c->score_value_model);
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "score.value", "score.value must be a number or { model = \"<value model>\" }");
    }
    lua_pop(L, 1);
}

/* ---- audience = { segments = {...}, exclude = {...}, conditions = {...} } ---- */

/* Segment ids `promod check` knows without a running server (set by
 * rules_check_cli from segments_dir); the server asks the live generation. */
static json_t *g_check_segments;

void rules_check_set_segments(json_t *ids)
{
    json_decref(g_check_segments);
    g_check_segments = ids;
}

static int segment_known(void *ud, const char *id, size_t len)
{
    (void)ud;
    struct segments_gen *sg = segments_gen_acquire();
    int known;
    if (sg) {
        known = segments_find(sg, id, len) >= 0;
    } else if (g_check_segments) {
        known = 0;
        size_t i;
        json_t *x;
        json_array_foreach(g_check_segments, i, x)
            known |= json_string_length(x) == len && !memcmp(json_string_value(x), id, len);
    } else {
        known = 1; /* no segments loaded anywhere to check against */
    }
    segments_gen_release(sg);
    return known;
}

/* The model part of the audience table on top: model = "id" with exactly
 * one of top = N (the N likeliest) or above = t (a score threshold).  Each
 * half without the other is an error: a model ranks only with a cut, and a
 * cut needs the model that scores. */
static void parse_audience_model(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    lua_getfield(L, -1, "model");
    int has_model = !lua_isnil(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "top");
    int has_top = !lua_isnil(L, -1);
    if (has_top) {
        double n = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || n != floor(n) || n < 1 || n > 10000000)
            rules_verr(v, "audience.top", "audience.top must be a whole number from 1 to 10000000");
        else
            c->audience_top = (long)n;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "above");
    int has_above = !lua_isnil(L, -1);
    if (has_above) {
        c->audience_above = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(c->audience_above))
            rules_verr(v, "audience.above", "audience.above must be a number (the score a customer must "
                 "exceed)");
    }
    lua_pop(L, 1);
    if (has_model)
        model_id_field(L, v, "model", "audience.model", c->audience_model, sizeof c->audience_model);
    if (has_top && has_above)
        rules_verr(v, "audience", "audience.top and audience.above together: use one, top (the N "
             "likeliest) or above (a score threshold)");
    else if (has_model && !has_top && !has_above)
        rules_verr(v, "audience.model", "audience.model needs top (the N likeliest) or above (a score "
             "threshold)");
    else if (!has_model && (has_top || has_above))
        rules_verr(v, has_top ? "audience.top" : "audience.above",
             "audience.%s needs audience.model (the model whose score ranks the customers)",
             has_top ? "top" : "above");
}

/* The audience table on top of the stack, checked, as JSON (NULL when it
 * has errors or is empty). */
json_t *rules_parse_audience(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    char pb[96];
    int nerr = v->nerr;
    json_t *out = json_object();
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || (strcmp(k, "segments") && strcmp(k, "exclude") && strcmp(k, "conditions") &&
                   strcmp(k, "model") && strcmp(k, "top") && strcmp(k, "above")))
            rules_verr(v, k ? rules_pathf(pb, sizeof pb, "audience.%s", k) : "audience",
                 "unknown field '%s' in audience (segments, exclude, conditions, model, top, "
                 "above)", k ? k : "?");
        lua_pop(L, 1);
    }
    parse_audience_model(L, v, c);
    static const char *lists[2] = { "segments", "exclude" };
    for (int l = 0; l < 2; l++) {
        lua_getfield(L, -1, lists[l]);
        int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
        if (!lua_isnil(L, -1) && (!lua_istable(L, -1) || n > SEGMENTS_MAX)) {
            rules_verr(v, rules_pathf(pb, sizeof pb, "audience.%s", lists[l]),
                 "audience.%s must be a list of segment ids: { \"gold\", \"vip\" }", lists[l]);
        } else if (n) {
            json_t *arr = json_array();
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
                if (!id || !id_valid(id))
                    rules_verr(v, rules_pathf(pb, sizeof pb, "audience.%s[%d]", lists[l], i),
                         "audience.%s[%d] must be a segment id", lists[l], i);
                else if (!segment_known(NULL, id, strlen(id)))
                    rules_verr(v, rules_pathf(pb, sizeof pb, "audience.%s[%d]", lists[l], i),
                         "audience.%s[%d]: no segment \"%s\" (segments/*.lua)", lists[l], i, id);
                else
                    json_array_append_new(arr, json_string(id));
                lua_pop(L, 1);
            }
            json_object_set_new(out, lists[l], arr);
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "conditions");
    json_t *cond = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) { /* GrowthBook's JSON, as written in its UI */
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        json_error_t je;
        if (!(cond = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je)))
            rules_verr(v, "audience.conditions", "audience.conditions: invalid JSON: %s", je.text);
    } else if (lua_istable(L, -1)) {
        int jerr;
        if (!(cond = luavm_to_json(L, -1, &jerr)))
            rules_verr(v, "audience.conditions",
                 "audience.conditions holds a value JSON cannot carry (function, NaN, cycle)");
    } else if (!lua_isnil(L, -1)) {
        rules_verr(v, "audience.conditions", "audience.conditions must be a table or a JSON string");
    }
    lua_pop(L, 1);
    if (cond && !json_is_object(cond)) {
        rules_verr(v, "audience.conditions", "audience.conditions must be an object (names), as "
                                       "GrowthBook's conditions are");
        json_decref(cond);
        cond = NULL;
    }
    if (cond) {
        struct cond_opts o = { .mode = COND_STRICT, .segment_known = segment_known };
        struct cond *c = NULL;
        struct reqerr e = { 0 };
        if (cond_compile(cond, &o, &c, &e))
            rules_verr(v, "audience.conditions", "audience.conditions: %s", e.message);
        cond_free(c);
        reqerr_clear(&e);
        json_object_set_new(out, "conditions", cond);
    }
    if (v->nerr > nerr || !json_object_size(out)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

