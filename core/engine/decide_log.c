/*
 * decide_log.c — where decide meets the decision log (engine/dlog.h) and
 * replay (engine/replay.h): a sampled live decide is handed to the log's
 * queue, a replayed one hands its offers back to the replay, and both
 * seed Lua's math.random from the decision id so that a hook drawing
 * random numbers draws the same ones when the decide is replayed.
 */
#include "engine/decide.h"
#include "engine/decide_internal.h"
#include "engine/dlog.h"
#include "base/clock.h"
#include "base/hash.h"
#include <string.h>

/* The state's own math.randomseed, found once per state and kept in its
 * registry (under the address of this key): a logged decide then costs a
 * registry read and a direct call, not a global lookup, a field lookup and
 * a protected call each time.  The function found first is called even if
 * a hook later replaced math.randomseed with its own, so the draws stay
 * what the log's replay draws. */
static const char seed_key = 0;

void decide_log_seed(lua_State *L, const char *did)
{
    lua_pushlightuserdata(L, (void *)&seed_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_iscfunction(L, -1)) {
        int known = !lua_isnil(L, -1); /* false: the state has no math.randomseed */
        lua_pop(L, 1);
        if (known)
            return;
        lua_pushlightuserdata(L, (void *)&seed_key);
        lua_getglobal(L, "math");
        if (lua_istable(L, -1))
            lua_getfield(L, -1, "randomseed");
        else
            lua_pushnil(L);
        lua_remove(L, -2);
        if (!lua_iscfunction(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
        }
        lua_pushvalue(L, -1);
        lua_insert(L, -3);                 /* fn key fn */
        lua_rawset(L, LUA_REGISTRYINDEX);  /* fn */
        if (!lua_iscfunction(L, -1)) {
            lua_pop(L, 1);
            return;
        }
    }
    lua_pushnumber(L, (lua_Number)hash_fnv1a(did, 20, HASH_FNV_INIT));
    lua_call(L, 1, 0); /* math.randomseed takes a number and raises no error */
}

void decide_log_finish(struct req *r)
{
    struct decide_as_was *aw = r->q->as_was;
    if (aw) {
        int n = r->accepted < aw->offers_cap ? r->accepted : aw->offers_cap;
        for (int k = 0; k < n; k++) {
            const struct cand *cd = r->served[k];
            const struct rules_campaign *c = &r->g->camps[cd->idx];
            aw->offers[k] = (struct decide_offer){ c->id, c->variants[cd->variant].id, cd->score };
        }
        aw->noffers = n;
        return;
    }
    if (!r->logged)
        return;
    struct dlog_offer offs[r->accepted > 0 ? r->accepted : 1];
    for (int k = 0; k < r->accepted; k++) {
        const struct cand *cd = r->served[k];
        const struct rules_campaign *c = &r->g->camps[cd->idx];
        offs[k] = (struct dlog_offer){ c->id, c->variants[cd->variant].id, cd->score };
    }
    const struct decide_req *q = r->q;
    const struct dlog_rec d = {
        .ts_ms = clock_now_ms(), .now = r->now, .decision_id = r->did, .gen_seq = r->g->seq,
        .customer = q->customer_id, .channel = q->channel, .placement = q->placement,
        .context = q->context_text, .context_len = q->context_len,
        .accept_language = q->accept_language, .limit = q->limit,
        .profile = r->pmp, .profile_len = r->plen, .stats = r->smp, .stats_len = r->slen,
        .offers = offs, .noffers = r->accepted,
        .considered = r->g->nby_channel[r->chi], .scored = r->ncand, .blocked = r->blocked != NULL,
    };
    dlog_submit(&d);
}
