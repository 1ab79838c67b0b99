/*
 * decide.c — the decision pipeline: candidates, hooks, ranking, content,
 * exact reservation, the reply (see decide.h).
 *
 * decide_run() reads as its steps; each step is a static function over
 * one struct req (the request's state), so the compiler inlines them back
 * into one body (the path is tuned: about 160k instructions per decide on
 * the reference workload, scripts/profile-decide.sh).  Hooks are called
 * through the hook layer (engine/hooks.h), which judges their results,
 * counts failures and words explain's errors; their function refs are
 * cached per campaign by the worker (rules_worker_hooks).
 *
 * Hooks get p and ctx read-only: push_profile and push_ctx register them
 * with luavm_push_readonly, and every hook is given what that pushed (a
 * hook whose file cannot write gets the tables, the others read-only
 * views); C readers (consent, quiet hours, templates) read the tables
 * themselves.
 */
#include "engine/decide.h"
#include "engine/decide_internal.h"
#include "engine/dlog.h"
#include "engine/models.h"
#include "engine/audience.h"
#include "engine/content.h"
#include "engine/coupons.h"
#include "engine/loyalty.h"
#include "engine/counters.h"
#include "engine/experiments.h"
#include "engine/formula.h"
#include "engine/hooks.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "codec/emit.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/i18n.h"
#include "codec/jscan.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "base/metrics.h"
#include "engine/rules.h"
#include "store/store.h"
#include "engine/throttle.h"
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* offers served, per campaign, kept across reloads                       */

static struct counters *g_served;

static void decide_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_offers_served_total Offers served by decide (not dry runs).\n"
                  "# TYPE promod_offers_served_total counter\n");
    const char *id;
    long n;
    int pos = 0;
    while (counters_next(g_served, &pos, &id, &n))
        if (n) {
            buf_adds(out, "promod_offers_served_total{campaign=\"");
            metrics_label(out, id);
            buf_printf(out, "\"} %ld\n", n);
        }
    decide_prune_metrics(out);
}

void decide_metrics_init(void)
{
    hooks_metrics_init(); /* promod_hook_errors_total: decide's hooks and the sends' */
    if (!g_served)
        g_served = counters_new(1);
    metrics_register(decide_collector, NULL);
}

/* ---------------------------------------------------------------------- */



#define SCRATCH_KEEP (64 * 1024) /* a buffer grown past this is given back */

static void scratch_free(void *p)
{
    struct scratch *s = p;
    if (!s)
        return;
    for (int i = 0; i < s->ccap; i++)
        buf_free(&s->cands[i].content);
    free(s->cands);
    free(s->batch);
    throttle_cust_free(&s->tc);
    throttle_resv_free(&s->rv);
    buf_free(&s->cs.text);
    buf_free(&s->cs.val);
    free(s->pwords);
    free(s);
}

static struct scratch *scratch_get(struct rules_worker *rw, int ncand)
{
    struct scratch *s = rw->scratch;
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return NULL;
        rw->scratch = s;
        rw->scratch_free = scratch_free;
    }
    if (ncand > s->ccap) {
        int cap = ncand < 16 ? 16 : ncand;
        struct cand *c = realloc(s->cands, sizeof *c * (size_t)cap);
        if (!c)
            return NULL;
        memset(c + s->ccap, 0, sizeof *c * (size_t)(cap - s->ccap));
        s->cands = c;
        s->ccap = cap;
    }
    if (ncand > s->bcap) {
        int cap = ncand < 16 ? 16 : ncand;
        struct cand **b = realloc(s->batch, sizeof *b * (size_t)cap * 3);
        if (!b)
            return NULL;
        s->batch = b;
        s->bcap = cap;
    }
    return s;
}

static uint64_t next_rand(void)
{
    static __thread uint64_t s;
    if (!s)
        s = clock_mono_ns() ^ ((uint64_t)(uintptr_t)&s << 17) ^ 0x9E3779B97F4A7C15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static json_t *xp_reason(json_t *xp, const char *reason)
{
    if (xp) {
        json_t *s = json_string(reason); /* a rule's own text: may not be UTF-8 */
        json_object_set_new(xp, "reason", s ? s : json_string("(reason is not valid UTF-8)"));
    }
    return xp;
}

/* The content hook: the index of the variant it names, or -1 with the
 * failure in explain (and counted by the hook layer).  *rc is the error. */
static int content_hook(struct rules_worker *rw, const struct rules_campaign *c, int ref, int fn,
                        int p_idx, int ctx_idx, json_t *xp, int *rc)
{
    lua_State *L = luavm_state(rw->vm);
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushliteral(L, "variants");
    lua_rawget(L, -2); /* raw: the file's table may have gained a metatable since it loaded */
    int vars = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushvalue(L, p_idx);
    lua_pushvalue(L, ctx_idx);
    lua_pushvalue(L, vars);
    struct hooks_res res;
    if (hooks_call(rw->vm, L, HOOKS_CONTENT, fn, c->id, &res) == HOOKS_FAILED) {
        hooks_explain(xp, HOOKS_CONTENT, res.msg);
        lua_settop(L, top);
        *rc = res.rc;
        return -1;
    }
    int chosen = -1;
    for (int i = 0; i < c->nvariants && chosen < 0; i++)
        if (!strcmp(c->variants[i].id, res.text))
            chosen = i;
    lua_settop(L, top);
    if (chosen < 0) {
        hooks_refuse(HOOKS_CONTENT, c->id, &res, NULL); /* an id that names no variant */
        hooks_explain(xp, HOOKS_CONTENT, res.msg);
        *rc = res.rc;
    }
    return chosen;
}

/* Default content: deterministic weighted bucketing (docs/rules.md). */
static int bucket_variant(const struct rules_campaign *c, const char *cust)
{
    double u = hash_bucket(cust, strlen(cust), c->id, strlen(c->id)) * c->weight_sum;
    double acc = 0;
    for (int i = 0; i < c->nvariants; i++) {
        acc += c->variants[i].weight;
        if (u < acc)
            return i;
    }
    return c->nvariants - 1;
}

/* Choose a variant and render its content (core/content) into cd->content
 * in the reply's wire form; 0 on success.  Stack-neutral.  `c` must be a
 * campaign of the worker's own generation (every caller's is).  `p_idx`
 * and `ctx_idx` are what the content hook gets (luavm_push_readonly's);
 * the templates and the locale lookup read the tables themselves
 * (luavm_push_original).  `forced` >= 0: that variant (an experiment's
 * assignment, or a re-render), else the content hook or weighted
 * bucketing; `code`: the customer's coupon for {{coupon}}, NULL until one
 * is assigned.  `lr` is the request's locale, looked up on first need from
 * context.locale, p.locale or `accept`. */
static int choose_content(struct rules_worker *rw, const struct rules_campaign *c, int ref,
                          const char *cust, int p_idx, int ctx_idx, struct cand *cd, int msgpack,
                          int forced, const char *code, struct content_locale *lr, const char *accept)
{
    const struct rules_gen *g = rw->gen;
    if (!g || !rw->content || c < g->camps || c >= g->camps + g->ncamps)
        return ERR_INVAL;
    int ci = (int)(c - g->camps);
    int fn = rules_worker_hooks(rw, ci)[HOOKS_CONTENT];
    int rc = 0, chosen;
    if (forced >= 0 && forced < c->nvariants) {
        chosen = forced; /* an experiment's assignment (engine/experiments.h) */
    } else if (fn != LUA_NOREF) {
        if ((chosen = content_hook(rw, c, ref, fn, p_idx, ctx_idx, cd->xp, &rc)) < 0)
            return rc;
    } else {
        chosen = bucket_variant(c, cust);
    }
    cd->variant = chosen;
    buf_reset(&cd->content);
    if (buf_reserve(&cd->content, 512)) /* one allocation for a typical offer */
        return ERR_NOMEM;
    struct scratch *scr = scratch_get(rw, 0);
    if (!scr)
        return ERR_NOMEM;
    /* compiled when the worker loaded the file (rules_worker.c compile_variants) */
    const struct rules_content *rcon = &rw->content[ci];
    int nloc = rcon->nloc > 0 ? rcon->nloc : 1, li = 0;
    struct content_prog *prog =
        (chosen * nloc) * 2 + msgpack < rcon->n ? rcon->progs[(chosen * nloc) * 2 + msgpack] : NULL;
    if (!prog)
        return ERR_NOMEM;
    cd->fmt[0] = 0;
    lua_State *L = luavm_state(rw->vm);
    int top = lua_gettop(L);
    int real = luavm_push_original(L, p_idx); /* templates read the profile itself */
    if (c->nlocales || content_uses_format(prog)) {
        const char *from;
        int real_ctx = luavm_push_original(L, ctx_idx);
        content_locale_lookup(L, real, real_ctx, accept, lr);
        lua_pop(L, 1);
        li = content_locale_pick(c->locales, c->nlocales, lr, cd->fmt, &from);
        if (li >= nloc)
            li = 0;
        prog = rcon->progs[(chosen * nloc + li) * 2 + msgpack];
        if (!prog) {
            lua_settop(L, top);
            return ERR_NOMEM;
        }
        if (cd->xp && c->nlocales) {
            json_object_set_new(cd->xp, "locale", json_string(c->locales[li]));
            json_object_set_new(cd->xp, "locale_from", json_string(from));
            if (lr->ntags)
                json_object_set_new(cd->xp, "locale_requested", json_string(lr->tags[0]));
        }
    }
    cd->li = li;
    cd->coupon = content_uses_coupon(prog);
    scr->cs.coupon = code; /* NULL until decide's reservation assigned one */
    scr->cs.locale = cd->fmt[0] ? cd->fmt : NULL;
    scr->cs.tz = lr->tz[0] ? lr->tz : NULL;
    rc = content_render(prog, L, real, &scr->cs, &cd->content);
    scr->cs.coupon = NULL;
    scr->cs.locale = scr->cs.tz = NULL; /* they point into this request */
    lua_settop(L, top);
    if (scr->cs.text.cap > SCRATCH_KEEP)
        buf_free(&scr->cs.text);
    if (scr->cs.val.cap > SCRATCH_KEEP)
        buf_free(&scr->cs.val);
    if (rc) {
        hooks_explain(cd->xp, HOOKS_CONTENT,
                      "content could not be rendered (only strings, numbers, booleans and "
                      "tables with string keys; text must be UTF-8)");
        return rc;
    }
    return 0;
}

/* {{coupon}}: the customer's code in campaign `c` — assigned in the
 * reservation's write txn `wt` (idempotent: the same code on every
 * decide), or, on a dry run, only looked up on the read snapshot `t` —
 * then the chosen variant's content rendered again with it, against the
 * profile table at `p_idx` (the original, not what hooks get).  Returns 1
 * when the candidate cannot be served (pool exhausted, store trouble). */
static int coupon_step(struct rules_worker *rw, const struct rules_campaign *c, struct cand *cd,
                       const char *cust, struct store_txn *t, struct store_txn *wt, int64_t now,
                       int p_idx, int msgpack, const char *tz)
{
    char code[COUPONS_CODE_MAX + 1];
    int fresh = 0, rc;
    if (wt) {
        rc = coupons_assign(wt, c->id, cust, now, code, &fresh);
    } else if ((rc = coupons_assigned(t, c->id, cust, code)) == ERR_NOTFOUND) {
        if (cd->xp)
            json_object_set_new(cd->xp, "coupon", json_string("assigned when served (dry run)"));
        return 0;
    }
    if (rc) {
        if (cd->xp)
            json_object_set_new(cd->xp, "capped", json_string(rc == ERR_CAPPED ? "coupon pool exhausted"
                                                                             : err_str(rc)));
        return 1;
    }
    struct scratch *scr = scratch_get(rw, 0);
    const struct rules_gen *g = rw->gen;
    const struct rules_content *rcon = &rw->content[c - g->camps];
    int nloc = rcon->nloc > 0 ? rcon->nloc : 1;
    struct content_prog *prog = rcon->progs[(cd->variant * nloc + cd->li) * 2 + msgpack];
    buf_reset(&cd->content);
    scr->cs.coupon = code;
    scr->cs.locale = cd->fmt[0] ? cd->fmt : NULL; /* as choose_content rendered it */
    scr->cs.tz = tz;
    rc = content_render(prog, luavm_state(rw->vm), p_idx, &scr->cs, &cd->content);
    scr->cs.coupon = NULL;
    scr->cs.locale = scr->cs.tz = NULL;
    if (rc) {
        hooks_explain(cd->xp, HOOKS_CONTENT, "content could not be rendered with the coupon code");
        return 1;
    }
    if (cd->xp)
        json_object_set_new(cd->xp, "coupon", json_string(fresh ? "assigned" : "assigned before"));
    return 0;
}

/* Push the throttle hook's counts table. */
static void push_counts(lua_State *L, const struct rules_campaign *c, const struct rules_channel *ch,
                        const struct throttle_counts *n)
{
    static const char *std[4] = { "1h", "1d", "7d", "30d" };
    lua_createtable(L, 0, 4);
    lua_createtable(L, 0, 6);
    for (int i = 0; i < 4; i++) {
        lua_pushnumber(L, (lua_Number)n->cust_std[i]);
        lua_setfield(L, -2, std[i]);
    }
    for (int i = 0; i < c->cust_caps.n; i++) {
        lua_pushnumber(L, (lua_Number)n->cust[i]);
        lua_setfield(L, -2, c->cust_caps.w[i].label);
    }
    lua_setfield(L, -2, "customer");
    lua_createtable(L, 0, 2);
    for (int i = 0; i < c->total_caps.n; i++) {
        lua_pushnumber(L, (lua_Number)n->total[i]);
        lua_setfield(L, -2, c->total_caps.w[i].label);
    }
    lua_setfield(L, -2, "total");
    lua_createtable(L, 0, 2);
    for (int i = 0; ch && i < ch->policy.n; i++) {
        lua_pushnumber(L, (lua_Number)n->chan[i]);
        lua_setfield(L, -2, ch->policy.w[i].label);
    }
    lua_setfield(L, -2, "channel");
    lua_pushnumber(L, (lua_Number)n->global_day);
    lua_setfield(L, -2, "global_1d");
}

/* Is consent withdrawn for this channel?  p.consent[key] == false,
 * p.consent[channel] == false, p.consent.all == false or p.opt_out == true. */
static const char *consent_block(lua_State *L, int p_idx, const struct rules_channel *ch)
{
    lua_getfield(L, p_idx, "opt_out");
    int out = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (out)
        return "consent: opted out";
    lua_getfield(L, p_idx, "consent");
    const char *why = NULL;
    if (lua_istable(L, -1)) {
        const char *keys[3] = { ch->consent, ch->name, "all" };
        int given = 0; /* the most specific recorded answer: 1 yes, -1 no */
        for (int i = 0; i < 3 && !why; i++) {
            if (!keys[i])
                continue;
            lua_getfield(L, -1, keys[i]);
            if (lua_type(L, -1) == LUA_TBOOLEAN) {
                if (!lua_toboolean(L, -1))
                    why = i == 2 ? "consent: all withdrawn" : "consent withdrawn for this channel";
                else if (!given)
                    given = 1;
            }
            lua_pop(L, 1);
        }
        /* a channel that requires consent needs a yes for it (or for all),
         * not merely a consent record about other channels */
        if (!why && ch->consent && given != 1)
            why = "consent: none recorded for this channel";
    } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        why = "consent: all withdrawn"; /* consent = false */
    } else if (ch->consent) {
        /* a channel that requires consent gets none without a record */
        why = "consent: none recorded for this channel";
    }
    lua_pop(L, 1);
    return why;
}

/* ---------------------------------------------------------------------- */
/* one request                                                            */


/* "d" + 11 hex digits of the ms clock + 8 random hex digits. */
static void decision_id(char did[20])
{
    uint64_t ms = (uint64_t)clock_now_ms(), rnd = next_rand() & 0xffffffffu;
    static const char hx[] = "0123456789abcdef";
    did[0] = 'd';
    for (int i = 0; i < 11; i++)
        did[11 - i] = hx[(ms >> (4 * i)) & 15];
    for (int i = 0; i < 8; i++)
        did[19 - i] = hx[(rnd >> (4 * i)) & 15];
}

/* Step 1: the worker's generation and the channel.  The worker is the
 * calling thread's own, refreshed here, unless the caller gave one (a
 * simulation's, decide_run_worker). */
static int begin(struct req *r, struct reqerr *e)
{
    if (!r->rw) {
        r->rw = rules_worker_self();
        if (!r->rw || !r->rw->vm) {
            reqerr_set(e, 503, "unavailable", NULL, "decide runs only on worker threads");
            return ERR_INVAL;
        }
        rules_worker_refresh(r->rw);
        /* the thread's models serve its own state; a simulation brings its
         * own (decide_run_worker) */
        r->mw = models_worker_self();
        models_worker_refresh(r->mw);
    }
    r->g = r->rw->gen;
    r->chi = rules_gen_find_channel(r->g, r->q->channel);
    if (r->chi < 0) {
        reqerr_set(e, 422, "unknown_channel", "channel",
                   "channel \"%.64s\" is not loaded (plugins/%.64s.lua)", r->q->channel,
                   r->q->channel);
        return ERR_INVAL;
    }
    r->ch = &r->g->chans[r->chi];
    r->L = luavm_state(r->rw->vm);
    r->top = lua_gettop(r->L);
    const struct decide_as_was *aw = r->q->as_was;
    r->now = aw ? aw->now : clock_now();
    r->gcap = g_app->cfg.global_daily_cap;
    r->explain = r->q->explain ? json_array() : NULL;
    r->xv = experiments_view(r->g);
    if (aw)
        memcpy(r->did, aw->decision_id, 20);
    else
        decision_id(r->did);
    r->logged = !aw && !r->q->dry_run && !r->rw->sim && dlog_sampled(r->q->customer_id);
    if (aw || r->logged) /* math.random draws what the logged decide drew */
        decide_log_seed(r->L, r->did);
    return 0;
}

/* Push p: the stored profile (an empty one for an unknown customer), its
 * id, its stats, p.segments (the customer's segments, read once into
 * `ac`, which also serves the campaign audiences) and p.loyalty; then what
 * hooks are given for it (luavm_push_readonly: read-only for every hook),
 * whose index goes to *ro.  Returns p's own stack index (for C readers);
 * *mp gets the stored profile's bytes (valid while `t` lives) or NULL. */
static int push_profile(lua_State *L, struct store_txn *t, const char *cust,
                        const struct decide_as_was *aw, struct audience_cust *ac, int64_t now,
                        int *ro, const char **mp, size_t *mplen, const char **smp, size_t *slen)
{
    int top = lua_gettop(L);
    const void *pv, *sv;
    size_t pl, sl;
    *mp = NULL;
    *mplen = 0;
    if (aw) { /* a replay: the customer as logged */
        pv = aw->profile, pl = aw->profile_len, sv = aw->stats, sl = aw->stats_len;
    } else {
        if (store_get(t, STORE_PROFILES, cust, strlen(cust), &pv, &pl))
            pv = NULL;
        if (store_get(t, STORE_PSTATS, cust, strlen(cust), &sv, &sl))
            sv = NULL;
    }
    *smp = sv;
    *slen = sv ? sl : 0;
    if (pv && luavm_push_msgpack(L, pv, pl) == 0 && lua_istable(L, -1)) {
        *mp = pv; /* known customer */
        *mplen = pl;
    } else {
        lua_settop(L, top);
        lua_createtable(L, 0, 2);
    }
    int p_idx = lua_gettop(L);
    lua_pushstring(L, cust);
    lua_setfield(L, p_idx, "id");
    if (sv && luavm_push_msgpack(L, sv, sl) == 0)
        lua_setfield(L, p_idx, "stats");
    lua_settop(L, p_idx);
    audience_begin(ac, t, cust, pv, pl, sv, sl, now);
    audience_push_segments(ac, L, p_idx); /* p.segments */
    if (loyalty_push_lua(L, t, cust)) /* p.loyalty: balance, tier */
        lua_setfield(L, p_idx, "loyalty");
    *ro = luavm_push_readonly(L, p_idx, "profile"); /* p is complete: it must not change now */
    return p_idx;
}

/* Push ctx: the request's context object plus channel, placement and now;
 * then what hooks are given for it (luavm_push_readonly), whose index goes
 * to *ro.  Returns ctx's own stack index. */
static int push_ctx(lua_State *L, const struct decide_req *q, int64_t now, int *ro)
{
    int top = lua_gettop(L);
    if (q->context_text &&
        jscan_push_lua(L, (struct jscan_val){ q->context_text, q->context_len }) == 0 &&
        lua_istable(L, -1)) {
    } else {
        lua_settop(L, top);
        lua_createtable(L, 0, 4);
    }
    int ctx_idx = lua_gettop(L);
    lua_pushstring(L, q->channel);
    lua_setfield(L, ctx_idx, "channel");
    if (q->placement) {
        lua_pushstring(L, q->placement);
        lua_setfield(L, ctx_idx, "placement");
    }
    lua_pushnumber(L, (lua_Number)now);
    lua_setfield(L, ctx_idx, "now");
    *ro = luavm_push_readonly(L, ctx_idx, "ctx");
    return ctx_idx;
}

/* Step 2: the read snapshot, p and ctx, whether consent or quiet hours
 * close the channel, the scratch and the customer's counters. */
static int load_customer(struct req *r, struct reqerr *e)
{
    const char *cust = r->q->customer_id;
    int rc = store_rtxn_begin(g_app->store, &r->t);
    if (rc) {
        reqerr_set(e, 503, "store_unavailable", NULL, "%s", err_str(rc));
        return rc;
    }
    r->p_idx = push_profile(r->L, r->t, cust, r->q->as_was, &r->ac, r->now, &r->p_ro, &r->pmp,
                            &r->plen, &r->smp, &r->slen);
    r->ctx_idx = push_ctx(r->L, r->q, r->now, &r->ctx_ro);
    models_decide_begin(r->mw, r->p_idx, r->ctx_idx, r->now);
    r->blocked = consent_block(r->L, r->p_idx, r->ch);
    if (!r->blocked && r->ch->quiet_from >= 0) {
        lua_getfield(r->L, r->p_idx, "tz");
        if (throttle_quiet(r->ch, lua_tostring(r->L, -1), r->now))
            r->blocked = "quiet hours for this channel";
        lua_pop(r->L, 1);
    }
    int nlist = r->g->nby_channel[r->chi];
    if (!(r->scr = scratch_get(r->rw, nlist))) {
        audience_end(&r->ac);
        store_txn_end(r->t);
        models_decide_end(r->mw);
        lua_settop(r->L, r->top);
        reqerr_set(e, 500, "internal", NULL, "%s", err_str(ERR_NOMEM));
        return ERR_NOMEM;
    }
    struct throttle_cust *tc = &r->scr->tc; /* the customer's counters: one read for the request */
    throttle_cust_load(r->t, cust, tc);
    throttle_read_shared(tc, r->ch, r->now, &r->shared);
    r->cands = r->scr->cands;
    r->batch = r->scr->batch;
    r->order = r->scr->batch + 2 * (size_t)r->scr->bcap;
    return 0;
}

/* What a hook call needs, held in registers over the candidate loop (the
 * loop makes ~85 hook calls per decide: reloading these from struct req
 * after every call into Lua was measurable). */
struct call {
    struct luavm *vm;
    lua_State *L;
    int p_idx, ctx_idx; /* what hooks get: struct req's p_ro, ctx_ro */
};

/* The cheap filters, before any Lua: status, placement, schedule.  1 when
 * campaign `c` is out (explain says why). */
static int filtered_out(const struct rules_campaign *c, const char *placement, uint64_t pbit,
                        int64_t now, json_t *xp)
{
    if (c->status != CAMP_ACTIVE) {
        if (xp) {
            char b[64];
            snprintf(b, sizeof b, "status %s", rules_status_name(c->status));
            json_object_set_new(xp, "eligible", json_false());
            xp_reason(xp, b);
        }
        return 1;
    }
    if (placement && c->placement_mask && !(c->placement_mask & pbit)) {
        if (xp) { /* a bit test: before the schedule's calendar arithmetic */
            json_object_set_new(xp, "eligible", json_false());
            xp_reason(xp, "placement not targeted");
        }
        return 1;
    }
    if (!rules_schedule_open(&c->sched, now)) {
        if (xp) {
            json_object_set_new(xp, "eligible", json_false());
            xp_reason(xp, "outside schedule");
        }
        return 1;
    }
    return 0;
}

/* The eligible hook (none = eligible).  1 when eligible.  `always`: the
 * hook is `return true` exactly (rules_worker.hook_true), so its verdict is
 * known without the call — unless some file of the state is disabled, when
 * calls fail and the call must be made to fail the same way. */
static int eligible(const struct call *k, const struct rules_campaign *c, int fn, int always,
                    json_t *xp)
{
    if (fn != LUA_NOREF && !(always && !luavm_any_disabled(k->vm))) {
        lua_rawgeti(k->L, LUA_REGISTRYINDEX, fn);
        lua_pushvalue(k->L, k->p_idx);
        lua_pushvalue(k->L, k->ctx_idx);
        struct hooks_res res;
        enum hooks_verdict v = hooks_call(k->vm, k->L, HOOKS_ELIGIBLE, fn, c->id, &res);
        if (v != HOOKS_PASS) {
            if (xp) {
                json_object_set_new(xp, "eligible", json_false());
                const char *why = v == HOOKS_DENY ? hooks_reason(k->L) : NULL;
                if (v == HOOKS_FAILED)
                    hooks_explain(xp, HOOKS_ELIGIBLE, res.msg);
                else
                    xp_reason(xp, why ? why : "eligible returned false");
            }
            if (v == HOOKS_DENY)
                lua_pop(k->L, 2);
            return 0;
        }
        lua_pop(k->L, 2);
    }
    if (xp)
        json_object_set_new(xp, "eligible", json_true());
    return 1;
}

/* The score hook (none = the campaign's priority).  0 with *out set, or
 * -1 when the hook failed (explain says how). */
static int score(const struct call *k, const struct rules_campaign *c, int fn, json_t *xp,
                 double *out)
{
    *out = c->priority;
    if (fn != LUA_NOREF) {
        lua_rawgeti(k->L, LUA_REGISTRYINDEX, fn);
        lua_pushvalue(k->L, k->p_idx);
        lua_pushvalue(k->L, k->ctx_idx);
        struct hooks_res res;
        if (hooks_call(k->vm, k->L, HOOKS_SCORE, fn, c->id, &res) == HOOKS_FAILED) {
            hooks_explain(xp, HOOKS_SCORE, res.msg);
            return -1;
        }
        *out = res.num;
        lua_pop(k->L, 1);
    }
    if (xp)
        json_object_set_new(xp, "score", json_real(*out));
    return 0;
}

/* A declared score (engine/formula.h), read from what audiences see.  0
 * with *out set, or -1 when it failed (counted and explained as the score
 * hook's failure would be). */
static int declared_score(struct req *r, const struct rules_campaign *c, int j,
                          const uint64_t *mask, json_t *xp, double *out)
{
    size_t vl = 0;
    const char *a = audience_view(&r->ac, &vl);
    const int *first = r->g->boost_first[r->chi];
    const uint64_t *held = NULL;
    if (first && first[j] >= 0) /* all candidates' boosts in one pass, on the first */
        held = audience_boosts(&r->ac, r->g, r->chi, mask);
    const int *member = held ? r->g->boost_member[r->chi] + first[j] : NULL;
    char why[200];
    const uint64_t *in = r->g->prune_in[r->chi];
    int rc = !a ? ERR_PARSE
             : r->pm_ok && in && ((in[j >> 6] >> (j & 63)) & 1) /* its `per`: m is known */
                 ? formula_eval_m(c->score_formula, r->pm, a, vl, held, member, out, why, sizeof why)
                 : formula_eval(c->score_formula, a, vl, held, member, &r->fmemo, out, why,
                                sizeof why);
    if (rc) {
        struct hooks_res res;
        hooks_refuse(HOOKS_SCORE, c->id, &res, a ? why : "the profile cannot be read");
        hooks_explain(xp, HOOKS_SCORE, res.msg);
        return -1;
    }
    if (xp)
        json_object_set_new(xp, "score", json_real(*out));
    return 0;
}

/* The next position >= j whose bit is set in `pass` (n when none). */
static int next_pass(const uint64_t *pass, int j, int n)
{
    while (j < n) {
        uint64_t w = pass[j >> 6] >> (j & 63);
        if (w)
            return j + __builtin_ctzll(w) < n ? j + __builtin_ctzll(w) : n;
        j = (j | 63) + 1;
    }
    return n;
}

/* Consider position j of the channel's list: the cheap filters, eligible
 * and the score; a candidate appended to r->cands when it passes (explain
 * entry xp, or NULL). */
void decide_consider(struct req *r, int j, json_t *xp)
{
    const struct rules_gen *g = r->g;
    const struct rules_worker *rw = r->rw;
    int i = g->by_channel[r->chi][j];
    const struct rules_campaign *c = &g->camps[i];
    if (filtered_out(c, r->q->placement, r->pbit, r->now, xp))
        return;
    int ref = rw->refs[i];
    if (ref == LUA_NOREF || ref == LUA_REFNIL) {
        if (xp)
            json_object_set_new(xp, "error", json_string("load: campaign not loaded in this worker"));
        return;
    }
    const struct call k = { rw->vm, r->L, r->p_ro, r->ctx_ro };
    const int *hooks = rules_worker_hooks(rw, i);
    struct decide_as_was *aw = r->q->as_was;
    double s;
    int ok = eligible(&k, c, hooks[HOOKS_ELIGIBLE], rw->hook_true[i] & HOOKS_BIT(HOOKS_ELIGIBLE),
                      xp);
    if (aw && aw->elig_reached && i < aw->elig_n && hooks[HOOKS_ELIGIBLE] != LUA_NOREF) {
        aw->elig_reached[i]++; /* a replay's tally (the eligible_never_passed warning) */
        aw->elig_passed[i] += ok;
    }
    if (!ok)
        return;
    if (c->score_model[0]) { /* expected value: the decide's one prediction per model */
        if (models_score(r->mw, c, r->p_idx, r->ctx_idx, xp, &s, NULL))
            return; /* explain says why */
        if (xp)
            json_object_set_new(xp, "score", json_real(s));
    } else if (c->score_formula ? declared_score(r, c, j, r->bmask, xp, &s)
                                : score(&k, c, hooks[HOOKS_SCORE], xp, &s)) {
        return;
    }
    /* field by field: a compound literal zeroed the whole candidate
     * (~400 bytes: the experiment pick, the counts) for each of up to
     * ~50 candidates; what is not set here is written before it is read
     * (li, fmt and coupon by choose_content, seen when hooked, pick when
     * picked) */
    struct cand *cd = &r->cands[r->ncand++];
    cd->idx = i;
    cd->rank = j;
    cd->score = s;
    cd->xp = xp;
    cd->variant = -1;
    cd->served = cd->hooked = cd->coupon = cd->picked = 0;
    buf_reset(&cd->content); /* the content buffer is reused */
}

/* Step 3: the candidates — the channel's campaigns (priority order) whose
 * audience holds (evaluated in C for the whole channel at once, before any
 * Lua: audience.h) and that pass the cheap filters, eligible and score.
 * Without explain, campaigns whose audience fails are never visited, and
 * those that could not rank among the offers are left unscored
 * (decide_prune.c). */
static void candidates(struct req *r)
{
    const struct rules_gen *g = r->g;
    const char *placement = r->q->placement;
    json_t *explain = r->explain;
    int nlist = r->blocked ? 0 : g->nby_channel[r->chi];
    r->pbit = placement ? rules_gen_placement_bit(g, placement) : 0;
    r->fmemo.n = 0; /* numbers declared scores read: this customer's */
    r->ncand = 0;
    r->pn = r->pm_ok = 0;
    /* without explain, only the positions the cheap filters let through
     * (active, placement targeted) are evaluated and visited */
    const uint64_t *serve = explain ? NULL : rules_gen_serve_mask(g, r->chi, placement, r->pbit);
    const uint64_t *pass = nlist ? audience_channel(&r->ac, g, r->chi, serve) : NULL;
    r->bmask = explain ? NULL : pass ? pass : serve;
    int defer = nlist && !explain && decide_prune_begin(r, pass ? pass : serve);
    for (int j = pass && !explain ? next_pass(pass, 0, nlist) : 0; j < nlist;
         j = pass && !explain ? next_pass(pass, j + 1, nlist) : j + 1) {
        if (defer && decide_prune_skipped(r, j))
            continue;
        json_t *xp = NULL;
        if (explain) {
            xp = json_object();
            json_object_set_new(xp, "campaign_id", json_string(g->camps[g->by_channel[r->chi][j]].id));
            json_array_append_new(explain, xp);
        }
        if (pass && !((pass[j >> 6] >> (j & 63)) & 1)) { /* only with explain */
            const struct rules_campaign *c = &g->camps[g->by_channel[r->chi][j]];
            if (filtered_out(c, placement, r->pbit, r->now, xp))
                continue;
            char why[400];
            audience_explain(&r->ac, g, r->chi, j, why, sizeof why);
            json_object_set_new(xp, "eligible", json_false());
            xp_reason(xp, why[0] ? why : "audience");
            continue;
        }
        decide_consider(r, j, xp);
    }
    if (r->blocked && explain) {
        json_t *x = json_object();
        json_object_set_new(x, "channel", json_string(r->q->channel));
        json_object_set_new(x, "reason", json_string(r->blocked));
        json_array_append_new(explain, x);
    }
}

/* Ask campaign `c`'s throttle hook (registry ref `fn`) about counts `n`.
 * 1 when it holds the candidate back (explain says why).  Stack-neutral. */
static int throttle_hook(struct rules_worker *rw, const struct rules_campaign *c, int fn,
                         json_t *xp, const struct rules_channel *ch,
                         const struct throttle_counts *n, int p_idx, int ctx_idx)
{
    lua_State *L = luavm_state(rw->vm);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushvalue(L, p_idx);
    lua_pushvalue(L, ctx_idx);
    push_counts(L, c, ch, n);
    struct hooks_res res;
    enum hooks_verdict v = hooks_call(rw->vm, L, HOOKS_THROTTLE, fn, c->id, &res);
    if (v == HOOKS_FAILED) {
        hooks_explain(xp, HOOKS_THROTTLE, res.msg);
        return 1;
    }
    lua_pop(L, 1);
    if (v == HOOKS_DENY) {
        if (xp)
            json_object_set_new(xp, "capped", json_string("throttle hook"));
        return 1;
    }
    return 0;
}

/* Caps on the read snapshot, then the campaign's throttle hook.  Returns 1
 * when the candidate is held back (explain says why), 0 when it may go on
 * to reservation.  Stack-neutral. */
static int cap_gate(struct req *r, struct cand *cd)
{
    const struct rules_campaign *c = &r->g->camps[cd->idx];
    if (r->q->as_was || !throttle_needed(c, r->ch, r->gcap))
        return 0; /* a replay counts caps itself (decide.h) */
    struct throttle_counts n;
    const char *why = NULL;
    if (throttle_read(r->t, &r->scr->tc, c, r->ch, r->now, &n, &r->shared) == 0 &&
        throttle_check(&n, c, r->ch, r->gcap, cd->xp ? &why : NULL)) {
        if (cd->xp)
            json_object_set_new(cd->xp, "capped", json_string(why));
        return 1;
    }
    int fn = rules_worker_hooks(r->rw, cd->idx)[HOOKS_THROTTLE];
    if (fn != LUA_NOREF) {
        if (throttle_hook(r->rw, c, fn, cd->xp, r->ch, &n, r->p_ro, r->ctx_ro))
            return 1;
        cd->hooked = 1;
        cd->seen = n;
    }
    return 0;
}

/* Inside the reservation's write txn: if the counts moved since the
 * throttle hook judged the read snapshot (a concurrent decide, or an
 * earlier offer of this request), ask the hook again with the fresh counts,
 * so a hook that acts as a cap is exact like declared caps.  The hook then
 * runs under the writer lock, bounded by its instruction budget.  Returns 1
 * when the candidate is held back. */
static int hook_recheck(struct req *r, struct cand *cd)
{
    if (!cd->hooked)
        return 0;
    const struct rules_campaign *c = &r->g->camps[cd->idx];
    struct throttle_resv *rv = &r->scr->rv;
    struct throttle_counts n;
    if (throttle_read(rv->wt, &rv->tc, c, r->ch, r->now, &n, NULL) ||
        !memcmp(&n, &cd->seen, sizeof n))
        return 0;
    int fn = rules_worker_hooks(r->rw, cd->idx)[HOOKS_THROTTLE];
    return throttle_hook(r->rw, c, fn, cd->xp, r->ch, &n, r->p_ro, r->ctx_ro);
}

/* A campaign an experiment covers: which variant the experiment gives
 * this customer (engine/experiments.h), or that they are held out — then
 * the campaign is not offered, and a first hold-out is logged at once
 * (the campaign would have been served here).  Returns 1 when held out. */
static int experiment_step(struct req *r, struct cand *cd)
{
    cd->picked = 0;
    const struct experiments_who w = { r->q->customer_id, r->L, r->p_idx, r->pmp, r->plen };
    struct experiments_pick *pk = &cd->pick;
    if (experiments_pick(r->xv, cd->idx, &w, r->t, pk))
        return 0; /* the experiment names a variant the campaign lost: serve as usual */
    cd->picked = 1;
    if (cd->xp) {
        json_t *x = json_pack("{s:s,s:s,s:b,s:s}", "id", pk->exp_id, "variant", pk->variant_id,
                              "in_experiment", pk->in_experiment, "why", pk->why);
        json_object_set_new(cd->xp, "experiment", x);
    }
    if (pk->outcome != EXPERIMENTS_HOLD)
        return 0;
    if (pk->log && !r->q->dry_run)
        experiments_expose(pk->xkey, EXPERIMENTS_HOLDOUT, r->q->customer_id, r->did,
                           clock_now_ms());
    xp_reason(cd->xp, "experiment holdout: no offer");
    return 1;
}

/* The next candidates in rank order, up to the room left, that pass caps
 * and the throttle hook on the read snapshot and get their content: into
 * r->batch.  Returns how many. */
static int next_batch(struct req *r)
{
    int nb = 0;
    while (nb < r->q->limit - r->accepted && decide_more(r)) {
        struct cand *cd = decide_prune_take(r);
        if (!cd)
            break;
        if (cap_gate(r, cd))
            continue;
        cd->picked = 0;
        if (experiments_covers(r->xv, cd->idx) && experiment_step(r, cd))
            continue;
        int forced = cd->picked ? cd->pick.variant : -1;
        if (choose_content(r->rw, &r->g->camps[cd->idx], r->rw->refs[cd->idx], r->q->customer_id,
                           r->p_ro, r->ctx_ro, cd, r->msgpack, forced, NULL, &r->loc,
                           r->q->accept_language) == 0)
            r->batch[nb++] = cd;
    }
    return nb;
}

/* First exposures of the offers served (after the reservation committed;
 * none for a dry run): queued for the exposure writer. */
static void log_exposures(struct req *r)
{
    if (r->q->dry_run)
        return;
    int64_t ms = 0;
    for (int k = 0; k < r->accepted; k++) {
        const struct cand *cd = r->served[k];
        if (!cd->picked || !cd->pick.log)
            continue;
        if (!ms)
            ms = clock_now_ms();
        experiments_expose(cd->pick.xkey, cd->pick.variant_id, r->q->customer_id, r->did, ms);
    }
}

/* Reserve the batch's caps exactly, in one write txn (none for a dry run
 * or when no cap applies), and take what passes as offers.  The customer's
 * record is read once in the write txn, every offer of the batch counted
 * against it in memory, and written once.  0 to go on, -1 to stop. */
static int reserve_batch(struct req *r, int nb)
{
    const struct decide_req *q = r->q;
    struct throttle_resv *rv = &r->scr->rv;
    int need = 0, rc;
    for (int b = 0; b < nb; b++)
        need |= throttle_needed(&r->g->camps[r->batch[b]->idx], r->ch, r->gcap) || r->batch[b]->coupon;
    struct store_txn *wt = NULL;
    if (!q->dry_run && need && store_wtxn_begin(g_app->store, &wt))
        return -1;
    if (wt && throttle_resv_begin(rv, wt, q->customer_id)) {
        store_txn_end(wt);
        return -1;
    }
    for (int b = 0; b < nb; b++) {
        struct cand *cd = r->batch[b];
        const struct rules_campaign *c = &r->g->camps[cd->idx];
        const char *why = NULL;
        int counted = wt && throttle_needed(c, r->ch, r->gcap);
        if (counted && hook_recheck(r, cd))
            continue;
        if (cd->coupon) {
            /* a code only for an offer that will be served: caps first */
            struct throttle_counts n;
            if (counted && throttle_read(wt, &rv->tc, c, r->ch, r->now, &n, NULL) == 0 &&
                throttle_check(&n, c, r->ch, r->gcap, &why)) {
                if (cd->xp)
                    json_object_set_new(cd->xp, "capped", json_string(why));
                continue;
            }
            if (coupon_step(r->rw, c, cd, q->customer_id, r->t, wt, r->now, r->p_idx, r->msgpack,
                            r->loc.tz[0] ? r->loc.tz : NULL))
                continue;
        }
        if (counted) {
            rc = throttle_resv_add(rv, c, r->ch, r->now, r->gcap, &why);
            if (rc) {
                if (cd->xp)
                    json_object_set_new(cd->xp, "capped", json_string(why ? why : err_str(rc)));
                if (rc != ERR_CAPPED) { /* store trouble: serve nothing more */
                    r->next = r->ncand;
                    r->pn = 0;
                }
                continue;
            }
        }
        cd->served = 1;
        r->served[r->accepted] = cd;
        if (cd->xp) {
            json_object_set_new(cd->xp, "selected", json_true());
            json_object_set_new(cd->xp, "variant", json_string(c->variants[cd->variant].id));
        }
        if (!q->dry_run)
            counters_add(g_served, c->id, 0, 1);
        r->accepted++;
    }
    if (wt) {
        rc = throttle_resv_end(rv);
        if (rc)
            store_txn_end(wt);
        else
            rc = store_txn_commit(wt, STORE_ASYNC);
        if (rc) {
            /* nothing was counted: serve nothing rather than exceed a cap */
            r->accepted = 0;
            log_error("cap reservation failed", "customer=\"%s\" err=\"%s\"", q->customer_id,
                      err_str(rc));
            return -1;
        }
    }
    return 0;
}

/* Step 5: walk the ranking.  Caps (read snapshot) and the throttle hook
 * only for candidates that could still be served, content for those that
 * pass, then exact reservation; repeat while reservations knock some out. */
static void walk(struct req *r)
{
    r->scr->rv.dirty = r->scr->rv.loaded = 0;
    r->served = r->batch ? r->batch + r->scr->bcap : NULL; /* the batch: at most ncand <= bcap */
    r->next = r->accepted = 0;
    while (r->accepted < r->q->limit && decide_more(r)) {
        int nb = next_batch(r);
        if (!nb || reserve_batch(r, nb))
            break;
    }
}

/* Step 6: explain reports caps for the candidates the walk did not reach. */
static void explain_rest(struct req *r)
{
    if (r->explain)
        decide_rank_rest(r);
    for (int k = r->next; r->explain && k < r->ncand; k++)
        if (!cap_gate(r, r->order[k]) && r->order[k]->xp)
            json_object_set_new(r->order[k]->xp, "reason", json_string("ranked below the limit"));
}

/* Step 7: the reply, written straight into `out` in the wire form asked for. */
static int reply(struct req *r, struct buf *out, struct reqerr *e)
{
    struct emit em;
    size_t need = 128;
    for (int k = 0; k < r->accepted; k++)
        need += r->served[k]->content.len + 160;
    buf_reserve(out, need); /* a failure shows up as the emitter's error */
    emit_init(&em, out, r->msgpack);
    emit_map(&em, 2 + (r->explain != NULL) + (r->q->dry_run != 0));
    emit_key(&em, "decision_id", 11);
    emit_str(&em, r->did, 20);
    emit_key(&em, "offers", 6);
    emit_array(&em, (size_t)r->accepted);
    for (int k = 0; k < r->accepted; k++) {
        const struct cand *cd = r->served[k];
        const struct rules_campaign *c = &r->g->camps[cd->idx];
        const char *vid = c->variants[cd->variant].id;
        emit_map(&em, 4);
        emit_key(&em, "campaign_id", 11);
        emit_str(&em, c->id, strlen(c->id));
        emit_key(&em, "variant", 7);
        emit_str(&em, vid, strlen(vid));
        emit_key(&em, "score", 5);
        emit_real(&em, cd->score);
        emit_key(&em, "content", 7);
        emit_raw(&em, cd->content.p, cd->content.len);
        emit_end(&em);
    }
    emit_end(&em);
    if (r->explain) {
        emit_key(&em, "explain", 7);
        emit_json(&em, r->explain);
    }
    if (r->q->dry_run) {
        emit_key(&em, "dry_run", 7);
        emit_bool(&em, 1);
    }
    emit_end(&em);
    int rc = emit_error(&em);
    if (rc)
        reqerr_set(e, 500, "internal", NULL, "reply could not be written: %s", err_str(rc));
    return rc;
}

/* Give back what grew past SCRATCH_KEEP, so one huge offer does not pin
 * its memory in the worker. */
static void trim_scratch(struct req *r)
{
    for (int k = 0; k < r->ncand; k++)
        if (r->cands[k].content.cap > SCRATCH_KEEP)
            buf_free(&r->cands[k].content);
    if (r->scr->rv.enc.cap > SCRATCH_KEEP)
        buf_free(&r->scr->rv.enc);
}

static int run(struct req *r, struct reqerr *e, struct buf *out)
{
    int rc = begin(r, e);
    if (rc)
        return rc;
    if ((rc = load_customer(r, e))) {
        json_decref(r->explain);
        return rc;
    }
    candidates(r);
    decide_rank(r);
    walk(r);
    log_exposures(r);
    explain_rest(r);
    decide_log_finish(r); /* before the snapshot ends: the log copies the profile's bytes */
    audience_end(&r->ac);
    store_txn_end(r->t);
    models_decide_end(r->mw);
    lua_settop(r->L, r->top);
    rc = reply(r, out, e);
    json_decref(r->explain);
    trim_scratch(r);
    return rc;
}

int decide_run(const struct decide_req *q, struct reqerr *e, struct buf *out, int msgpack)
{
    struct req r = { .q = q, .msgpack = msgpack };
    return run(&r, e, out);
}

int decide_run_worker(struct rules_worker *rw, struct models_worker *mw,
                      const struct decide_req *q, struct reqerr *e, struct buf *out, int msgpack)
{
    struct req r = { .q = q, .msgpack = msgpack, .rw = rw, .mw = mw };
    models_worker_refresh(mw);
    hooks_count_pause(rw->sim);
    int rc = run(&r, e, out);
    hooks_count_pause(0);
    return rc;
}

const char *decide_consent_block(lua_State *L, int p_idx, const struct rules_channel *ch)
{
    return consent_block(L, p_idx, ch);
}

int decide_content(struct rules_worker *rw, const struct rules_campaign *c, int ref,
                   const char *cust, int p_idx, int ctx_idx, int *variant, json_t **content)
{
    struct cand cd = { .variant = -1 };
    struct content_locale lr = { 0 };
    int rc = choose_content(rw, c, ref, cust, p_idx, ctx_idx, &cd, 0, -1, NULL, &lr, NULL);
    if (rc == 0 && cd.coupon) {
        /* a send shows {{coupon}} too: the customer's code, assigned in a
         * write txn of its own (idempotent, so a retried send shows the same
         * code; the message's durable enqueue later flushes it too) */
        struct store_txn *wt;
        char code[COUPONS_CODE_MAX + 1];
        int fresh;
        if (!(rc = store_wtxn_begin(g_app->store, &wt))) {
            rc = coupons_assign(wt, c->id, cust, clock_now(), code, &fresh);
            if (rc)
                store_txn_end(wt);
            else
                rc = store_txn_commit(wt, STORE_ASYNC);
        }
        if (!rc) {
            buf_free(&cd.content);
            rc = choose_content(rw, c, ref, cust, p_idx, ctx_idx, &cd, 0, cd.variant, code, &lr,
                                NULL);
        }
    }
    *variant = cd.variant;
    *content = NULL;
    if (rc == 0 && !(*content = codec_parse_json(cd.content.p, cd.content.len, &rc, NULL, 0)))
        rc = rc ? rc : ERR_INVAL;
    buf_free(&cd.content);
    return rc;
}
