/*
 * sends_eval.c — one customer of an outbound send: the campaign's audience
 * filter in C, consent, eligible, the audience's model cut, content and
 * the plugin's render (sends_eval, sends_eval_cut), and enqueueing the
 * result under the caps (sends_put).  The builder thread (sends.c) and
 * triggers (triggers.c) call these; they hold no state of their own.
 */
#include "delivery/sends.h"
#include "delivery/sends_internal.h"
#include "engine/audience.h"
#include "base/app.h"
#include "base/err.h"
#include "engine/decide.h"
#include "engine/models.h"
#include "engine/hooks.h"
#include "lua/luavm.h"
#include "delivery/outbox.h"
#include "engine/rules.h"
#include "store/store.h"
#include "engine/throttle.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* --- one customer -------------------------------------------------------- */

/* Push p: the stored profile, its id and its stats; then what hooks are
 * given for it (luavm_push_readonly: read-only for every hook), whose index
 * goes to *ro.  Returns p's own stack index (for C readers), or 0 (nothing
 * pushed) when the profile does not decode to a table. */
static int push_profile(lua_State *L, struct audience_cust *ac, const char *cust, const void *pv,
                        size_t pl, const void *sv, size_t sl, int *ro)
{
    int top = lua_gettop(L);
    if (luavm_push_msgpack(L, pv, pl) || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return 0;
    }
    int p_idx = lua_gettop(L);
    lua_pushstring(L, cust);
    lua_setfield(L, p_idx, "id");
    if (sv && luavm_push_msgpack(L, sv, sl) == 0)
        lua_setfield(L, p_idx, "stats");
    lua_settop(L, p_idx);
    audience_push_segments(ac, L, p_idx); /* p.segments, before p is registered read-only */
    *ro = luavm_push_readonly(L, p_idx, "profile");
    return p_idx;
}

/* Push a send's ctx: { channel, now, campaign_id, send = true }, then
 * what hooks are given for it (luavm_push_readonly).  Returns the index of
 * what hooks get. */
static int push_ctx(lua_State *L, const struct rules_channel *ch, const struct rules_campaign *c,
                    int64_t now)
{
    lua_createtable(L, 0, 4);
    int ctx_idx = lua_gettop(L);
    lua_pushstring(L, ch->name);
    lua_setfield(L, ctx_idx, "channel");
    lua_pushnumber(L, (lua_Number)now);
    lua_setfield(L, ctx_idx, "now");
    lua_pushstring(L, c->id);
    lua_setfield(L, ctx_idx, "campaign_id");
    lua_pushboolean(L, 1);
    lua_setfield(L, ctx_idx, "send");
    return luavm_push_readonly(L, ctx_idx, "ctx"); /* C reads nothing of ctx */
}

/* The campaign's eligible hook through the hook layer, as decide runs it:
 * 0 when eligible, else 1 with *why "not_eligible" (it->reason: the
 * rule's reason, if it gave one) or "hook_error" (it->error). */
static int send_eligible(struct rules_worker *rw, const struct rules_campaign *c, int fn,
                         int p_idx, int ctx_idx, struct sends_item *it, const char **why)
{
    if (fn == LUA_NOREF)
        return 0;
    lua_State *L = luavm_state(rw->vm);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushvalue(L, p_idx);
    lua_pushvalue(L, ctx_idx);
    struct hooks_res res;
    enum hooks_verdict v = hooks_call(rw->vm, L, HOOKS_ELIGIBLE, fn, c->id, &res);
    if (v == HOOKS_PASS) {
        lua_pop(L, 2);
        return 0;
    }
    if (v == HOOKS_FAILED) {
        hooks_text(it->error, sizeof it->error, HOOKS_ELIGIBLE, res.msg);
        *why = "hook_error";
        return 1;
    }
    const char *reason = hooks_reason(L);
    size_t n = reason ? strlen(reason) : 0;
    if (n >= sizeof it->reason) { /* cut before a UTF-8 character, never inside one */
        n = sizeof it->reason - 1;
        while (n && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(it->reason, reason, n);
    it->reason[n] = 0;
    lua_pop(L, 2);
    *why = "not_eligible";
    return 1;
}

/* audience = { model = ..., top | above }: the customer's score, and
 * whether it clears `cutoff` (NAN: the campaign's `above`, or no cut for a
 * `top` campaign evaluated one at a time; -INFINITY: no cut, for the pass
 * that ranks).  0 = passes, 1 = *why set. */
static int audience_gate(const struct rules_campaign *c, int p_idx, int ctx_idx, int64_t now,
                         double cutoff, struct sends_item *it, const char **why)
{
    struct models_worker *mw = models_worker_self();
    models_worker_refresh(mw);
    int idx = mw ? models_gen_find(models_worker_gen(mw), c->audience_model) : -1;
    const char *mwhy = NULL;
    double score = NAN;
    models_decide_begin(mw, p_idx, ctx_idx, now);
    int rc = idx < 0 ? ERR_NOTFOUND : models_predict(mw, idx, p_idx, ctx_idx, &score, &mwhy);
    models_decide_end(mw);
    if (rc) {
        snprintf(it->error, sizeof it->error, "audience: %.180s",
                 idx < 0 ? "unknown model" : mwhy ? mwhy : err_str(rc));
        *why = "audience_model_error";
        return 1;
    }
    it->score = score;
    double cut = isnan(cutoff) ? (c->audience_top ? -INFINITY : c->audience_above) : cutoff;
    if (!(score >= cut)) {
        *why = "below_audience_score";
        return 1;
    }
    return 0;
}

int sends_eval(struct rules_worker *rw, const struct rules_gen *g, int camp, int chan,
               struct store_txn *t, const char *cust, const void *pv, size_t pl, const void *sv,
               size_t sl, int64_t now, struct sends_item *it, const char **why)
{
    return sends_eval_cut(rw, g, camp, chan, t, cust, pv, pl, sv, sl, now, NAN, 0, it, why);
}

int sends_eval_cut(struct rules_worker *rw, const struct rules_gen *g, int camp, int chan,
                   struct store_txn *t, const char *cust, const void *pv, size_t pl, const void *sv,
                   size_t sl, int64_t now, double cutoff, int score_only, struct sends_item *it,
                   const char **why)
{
    memset(it, 0, sizeof *it);
    const struct rules_campaign *c = &g->camps[camp];
    const struct rules_channel *ch = &g->chans[chan];
    int ref = rw->refs[camp];
    lua_State *L = luavm_state(rw->vm);
    int top = lua_gettop(L);
    if (!pv) {
        *why = "no_profile";
        return 1;
    }
    if (c->sched.ends && now > c->sched.ends) {
        *why = "outside_schedule";
        return 1;
    }
    if (ref == LUA_NOREF || ref == LUA_REFNIL) {
        snprintf(it->error, sizeof it->error, "campaign not loaded in the builder");
        *why = "hook_error";
        return 1;
    }
    /* the audience, in C, before any Lua */
    struct audience_cust ac;
    char aud_why[200];
    audience_begin(&ac, t, cust, pv, pl, sv, sl, now);
    if (!audience_campaign(&ac, g, chan, camp, aud_why, sizeof aud_why)) {
        audience_end(&ac);
        *why = "audience";
        return 1;
    }
    int p_ro;
    int p_idx = push_profile(L, &ac, cust, pv, pl, sv, sl, &p_ro);
    if (!p_idx) {
        audience_end(&ac);
        *why = "no_profile";
        return 1;
    }
    audience_end(&ac);
    int ctx_ro = push_ctx(L, ch, c, now);

    *why = NULL;
    if (decide_consent_block(L, p_idx, ch)) {
        *why = "consent";
        goto out;
    }
    if (send_eligible(rw, c, rules_worker_hooks(rw, camp)[HOOKS_ELIGIBLE], p_ro, ctx_ro, it, why))
        goto out;
    if (c->audience_model[0] && audience_gate(c, p_idx, ctx_ro, now, cutoff, it, why))
        goto out;
    if (score_only)
        goto out;
    json_t *content = NULL;
    int variant = 0;
    if (decide_content(rw, c, ref, cust, p_ro, ctx_ro, &variant, &content)) {
        snprintf(it->error, sizeof it->error, "content: variant could not be chosen or rendered");
        *why = "hook_error";
        goto out;
    }
    it->variant = variant;
    json_t *msg = NULL;
    int render = rules_worker_chan_hooks(rw, chan)[HOOKS_RENDER];
    if (render != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, render);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, c->id);
        lua_setfield(L, -2, "campaign_id");
        lua_pushstring(L, c->variants[variant].id);
        lua_setfield(L, -2, "variant");
        lua_pushstring(L, ch->name);
        lua_setfield(L, -2, "channel");
        if (luavm_push_json(L, content) == 0)
            lua_setfield(L, -2, "content");
        lua_pushvalue(L, p_ro);
        lua_pushvalue(L, ctx_ro);
        struct hooks_res res;
        enum hooks_verdict v = hooks_call(rw->vm, L, HOOKS_RENDER, render, c->id, &res);
        if (v == HOOKS_FAILED) {
            hooks_text(it->error, sizeof it->error, HOOKS_RENDER, res.msg);
            *why = "render_error";
        } else if (v == HOOKS_DENY) {
            const char *reason = hooks_reason(L);
            if (reason)
                snprintf(it->error, sizeof it->error, "render declined: %s", reason);
            *why = "render_declined";
        } else {
            int jerr;
            msg = luavm_to_json(L, -2, &jerr);
            if (!msg || !json_is_object(msg)) {
                json_decref(msg);
                msg = NULL;
                hooks_refuse(HOOKS_RENDER, c->id, &res,
                             "must return a table of fields (got one JSON cannot carry)");
                hooks_text(it->error, sizeof it->error, HOOKS_RENDER, res.msg);
                *why = "render_error";
            }
        }
        json_decref(content);
        if (*why)
            goto out;
    } else {
        msg = json_is_object(content) ? content : NULL;
        if (!msg) {
            json_decref(content);
            *why = "render_error";
            goto out;
        }
    }
    it->msg = msg;
    lua_getfield(L, p_idx, "tz");
    if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(it->tz, sizeof it->tz, "%s", lua_tostring(L, -1));
out:
    lua_settop(L, top);
    return *why ? 1 : 0;
}

int sends_put(struct store_txn *wt, const struct rules_gen *g, int camp, int chan,
              const char *cust, struct sends_item *it, const char *key, int64_t now,
              const char **why)
{
    const struct rules_campaign *c = &g->camps[camp];
    const struct rules_channel *ch = &g->chans[chan];
    *why = NULL;
    int rc = outbox_has_key(wt, key);
    if (rc == 1) {
        *why = "duplicate";
        goto done;
    }
    if (rc < 0)
        goto done;
    long gcap = g_app->cfg.global_daily_cap;
    if (throttle_needed(c, ch, gcap)) {
        const char *w = NULL;
        rc = throttle_reserve(wt, cust, c, ch, now, gcap, &w);
        if (rc == ERR_CAPPED) {
            rc = 0;
            *why = "capped";
            goto done;
        }
        if (rc)
            goto done;
    }
    /* not before the schedule starts, and not in the customer's quiet hours */
    int64_t at = c->sched.starts > now ? c->sched.starts : now;
    int64_t qend = throttle_quiet_end(ch, it->tz, at);
    if (qend)
        at = qend;
    struct outbox_msg m = { .key = key, .campaign = c->id, .customer = cust, .channel = ch->name,
                            .variant = c->variants[it->variant].id, .tz = it->tz, .msg = it->msg,
                            .due_ms = at > now ? at * 1000 : 0 };
    rc = outbox_enqueue_txn(wt, &m, NULL);
    if (rc == OUTBOX_DUPLICATE) {
        rc = 0;
        *why = "duplicate";
    } else if (rc == ERR_TOOBIG || rc == ERR_INVAL) {
        rc = 0;
        *why = "render_error";
    }
done:
    json_decref(it->msg);
    it->msg = NULL;
    return rc;
}

