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

void decide_log_seed(lua_State *L, const char *did)
{
    int top = lua_gettop(L);
    lua_getglobal(L, "math");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "randomseed");
        if (lua_isfunction(L, -1)) {
            lua_pushnumber(L, (lua_Number)hash_fnv1a(did, 20, HASH_FNV_INIT));
            lua_pcall(L, 1, 0, 0);
        }
    }
    lua_settop(L, top);
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
