/* targeting.c — propensity scores and next-best-actions over the API. */
#include "engine/targeting.h"
#include "engine/decide.h"
#include "engine/models.h"
#include "engine/rules.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/reqerr.h"
#include "lua/luavm.h"
#include "store/store.h"
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define TOP_FEATURES 3

/* p as decide builds it: the stored profile (or an empty one), p.id,
 * p.stats.  Returns 1 when the customer has a profile. */
static int push_profile(lua_State *L, struct store_txn *t, const char *cust)
{
    int top = lua_gettop(L), known = 0;
    const void *v;
    size_t vl;
    if (t && store_get(t, STORE_PROFILES, cust, strlen(cust), &v, &vl) == 0 &&
        luavm_push_msgpack(L, v, vl) == 0 && lua_istable(L, -1)) {
        known = 1;
    } else {
        lua_settop(L, top);
        lua_createtable(L, 0, 2);
    }
    int p = lua_gettop(L);
    lua_pushstring(L, cust);
    lua_setfield(L, p, "id");
    if (t && store_get(t, STORE_PSTATS, cust, strlen(cust), &v, &vl) == 0 &&
        luavm_push_msgpack(L, v, vl) == 0)
        lua_setfield(L, p, "stats");
    lua_settop(L, p);
    return known;
}

static void push_ctx(lua_State *L, const json_t *context, const char *channel,
                     const char *placement, int64_t now)
{
    int top = lua_gettop(L);
    if (!context || luavm_push_json(L, context) || !lua_istable(L, -1)) {
        lua_settop(L, top);
        lua_createtable(L, 0, 3);
    }
    if (channel) {
        lua_pushstring(L, channel);
        lua_setfield(L, -2, "channel");
    }
    if (placement) {
        lua_pushstring(L, placement);
        lua_setfield(L, -2, "placement");
    }
    lua_pushnumber(L, (lua_Number)now);
    lua_setfield(L, -2, "now");
}

static struct models_worker *worker(struct reqerr *e)
{
    struct models_worker *w = models_worker_self();
    if (!w) {
        reqerr_set(e, 503, "unavailable", NULL, "model scores are computed on worker threads");
        return NULL;
    }
    models_worker_refresh(w);
    return w;
}

json_t *targeting_propensity(const struct targeting_req *q, struct reqerr *e)
{
    struct models_worker *w = worker(e);
    if (!w)
        return NULL;
    const struct models_gen *g = models_worker_gen(w);
    struct rules_gen *rg = NULL;
    const struct rules_campaign *camp = NULL;
    const char *model = q->model;
    if (q->campaign) {
        rg = rules_gen_acquire();
        int ci = rg ? rules_gen_find_campaign(rg, q->campaign) : -1;
        if (ci < 0) {
            rules_gen_release(rg);
            reqerr_set(e, 404, "campaign_not_found", "campaign", "no loaded campaign '%s'", q->campaign);
            return NULL;
        }
        camp = &rg->camps[ci];
        if (!camp->score_model[0]) {
            rules_gen_release(rg);
            reqerr_set(e, 422, "campaign_without_model", "campaign",
                       "campaign '%s' does not rank by a model (score = { model = ..., value = ... })",
                       q->campaign);
            return NULL;
        }
        model = camp->score_model;
    }
    int idx = models_gen_find(g, model);
    if (idx < 0 || !g->m[idx].live) {
        if (idx < 0)
            reqerr_set(e, 404, "model_not_found", q->campaign ? "campaign" : "model",
                       "no model '%s'", model);
        else
            reqerr_set(e, 409, "model_not_trained", q->campaign ? "campaign" : "model",
                       "model '%s' has no live version yet (POST /api/v1/models/%s/train)", model,
                       model);
        rules_gen_release(rg);
        return NULL;
    }
    const struct models_entry *me = &g->m[idx];
    struct store_txn *t = NULL;
    if (store_rtxn_begin(g_app->store, &t))
        t = NULL;
    lua_State *L = luavm_state(rules_worker_self()->vm);
    int top = lua_gettop(L);
    json_t *scores = json_array(), *errors = json_array();
    int64_t now = clock_now();
    for (int i = 0; i < q->ncustomers; i++) {
        push_profile(L, t, q->customers[i]);
        int p_idx = lua_gettop(L);
        push_ctx(L, q->context, q->channel, NULL, now);
        int ctx_idx = lua_gettop(L);
        models_decide_begin(w, p_idx, ctx_idx, now); /* one prediction per model per customer */
        double v;
        const char *why = NULL;
        json_t *row = json_object();
        json_object_set_new(row, "customer_id", json_string(q->customers[i]));
        int rc;
        if (camp) {
            double score;
            struct models_ev ev;
            rc = models_score(w, camp, p_idx, ctx_idx, NULL, &score, &ev);
            if (!rc) {
                json_object_set_new(row, "score", json_real(ev.propensity));
                json_object_set_new(row, "value", json_real(ev.value));
                json_object_set_new(row, "expected_value", json_real(ev.expected));
            } else {
                models_predict(w, idx, p_idx, ctx_idx, &v, &why); /* the reason */
            }
        } else {
            rc = models_predict(w, idx, p_idx, ctx_idx, &v, &why);
            if (!rc)
                json_object_set_new(row, "score", json_real(v));
        }
        if (rc) {
            json_decref(row);
            json_array_append_new(errors, json_pack("{s:s,s:s}", "customer_id", q->customers[i],
                                                    "message", why ? why : err_str(rc)));
        } else {
            json_array_append_new(scores, row);
        }
        lua_settop(L, top);
    }
    models_decide_end(w); /* forget this request's p */
    lua_settop(L, top);
    store_txn_end(t);
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(model));
    json_object_set_new(o, "version", json_integer(me->live_version));
    json_object_set_new(o, "predicts", json_string(me->live_def && me->live_def->regression
                                                       ? "value" : "probability"));
    if (camp)
        json_object_set_new(o, "campaign", json_string(camp->id));
    json_object_set_new(o, "scores", scores);
    json_object_set_new(o, "errors", errors);
    rules_gen_release(rg);
    return o;
}

json_t *targeting_recommend(const char *customer, const char *channel, const char *placement,
                            int limit, struct reqerr *e)
{
    struct models_worker *w = worker(e);
    if (!w)
        return NULL;
    struct decide_req q = { .customer_id = customer, .channel = channel, .placement = placement,
                            .limit = limit, .explain = 1, .dry_run = 1 };
    struct buf out = BUF_INIT;
    if (decide_run(&q, e, &out, 0)) {
        buf_free(&out);
        return NULL;
    }
    json_error_t je;
    json_t *d = json_loadb(out.p, out.len, 0, &je);
    buf_free(&out);
    if (!d) {
        reqerr_set(e, 500, "internal", NULL, "decide's reply did not parse: %s", je.text);
        return NULL;
    }
    json_t *offers = json_object_get(d, "offers"), *explain = json_object_get(d, "explain");
    /* the drivers of each offer ranked by a model, from the same p and ctx */
    const struct models_gen *g = models_worker_gen(w);
    struct rules_gen *rg = rules_gen_acquire();
    struct store_txn *t = NULL;
    if (store_rtxn_begin(g_app->store, &t))
        t = NULL;
    lua_State *L = luavm_state(rules_worker_self()->vm);
    int top = lua_gettop(L);
    int64_t now = clock_now();
    push_profile(L, t, customer);
    int p_idx = lua_gettop(L);
    push_ctx(L, NULL, channel, placement, now);
    int ctx_idx = lua_gettop(L);
    json_t *recs = json_array();
    size_t i;
    json_t *of;
    json_array_foreach(offers, i, of) {
        const char *cid = json_string_value(json_object_get(of, "campaign_id"));
        json_t *r = json_object();
        json_object_set_new(r, "rank", json_integer((json_int_t)i + 1));
        json_object_set_new(r, "campaign_id", json_string(cid ? cid : ""));
        json_object_set(r, "variant", json_object_get(of, "variant"));
        json_object_set(r, "score", json_object_get(of, "score"));
        size_t k;
        json_t *xp;
        json_array_foreach(explain, k, xp) {
            const char *xid = json_string_value(json_object_get(xp, "campaign_id"));
            if (xid && cid && !strcmp(xid, cid) && json_object_get(xp, "model"))
                json_object_set(r, "model", json_object_get(xp, "model"));
        }
        int ci = cid && rg ? rules_gen_find_campaign(rg, cid) : -1;
        int mi = ci >= 0 && rg->camps[ci].score_model[0]
                     ? models_gen_find(g, rg->camps[ci].score_model) : -1;
        if (mi >= 0) {
            struct models_driver drv[TOP_FEATURES];
            float x[PREDICT_MAX_FEATURES];
            int n = 0;
            double v;
            const char *why;
            if (models_predict_explain(w, mi, p_idx, ctx_idx, &v, drv, TOP_FEATURES, &n, x,
                                       &why) == 0) {
                const struct models_def *ld = g->m[mi].live_def;
                json_t *tf = json_array();
                for (int j = 0; j < n; j++)
                    json_array_append_new(tf, json_pack("{s:s,s:o,s:f}", "feature",
                                                        ld->feats[drv[j].feature].name, "value",
                                                        models_feature_value_json(ld, drv[j].feature, x),
                                                        "contribution", drv[j].contribution));
                json_object_set_new(r, "top_features", tf);
            }
        }
        json_array_append_new(recs, r);
    }
    lua_settop(L, top);
    store_txn_end(t);
    rules_gen_release(rg);
    json_t *o = json_object();
    json_object_set_new(o, "customer_id", json_string(customer));
    json_object_set_new(o, "channel", json_string(channel));
    json_object_set_new(o, "recommendations", recs);
    json_decref(d);
    return o;
}
