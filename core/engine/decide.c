/* decide.c — candidate selection, hooks, ranking, content, reservation. */
#include "engine/decide.h"
#include "engine/models.h"
#include "engine/content.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "codec/emit.h"
#include "base/err.h"
#include "base/hash.h"
#include "codec/jscan.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "base/metrics.h"
#include "engine/rules.h"
#include "store/store.h"
#include "engine/throttle.h"
#include "base/tz.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* per-campaign counters, kept across reloads                             */

enum { H_ELIGIBLE, H_SCORE, H_CONTENT, H_THROTTLE, NHOOK };
static const char *hook_names[NHOOK] = { "eligible", "score", "content", "throttle" };

#define CSTAT_SLOTS 8192
struct cstat {
    char id[132];
    long errors[NHOOK];
    long budget[NHOOK];
    long served;
    long capped;
};
static struct cstat *g_cstat;
static pthread_mutex_t g_cstat_mu = PTHREAD_MUTEX_INITIALIZER;

static struct cstat *cstat_get(const char *id)
{
    if (!g_cstat)
        return NULL;
    uint32_t h = hash_fnv1a(id, strlen(id), HASH_FNV_INIT);
    for (int i = 0; i < 64; i++) {
        struct cstat *c = &g_cstat[(h + (uint32_t)i) % CSTAT_SLOTS];
        if (__atomic_load_n(&c->id[0], __ATOMIC_ACQUIRE) && !strcmp(c->id, id))
            return c;
        if (!__atomic_load_n(&c->id[0], __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&g_cstat_mu);
            if (!c->id[0]) {
                snprintf(c->id + 1, sizeof c->id - 1, "%s", id + 1);
                __atomic_store_n(&c->id[0], id[0], __ATOMIC_RELEASE);
            }
            pthread_mutex_unlock(&g_cstat_mu);
            if (!strcmp(c->id, id))
                return c;
        }
    }
    return NULL;
}

static void cstat_add(const char *id, long *(*field)(struct cstat *), long n)
{
    struct cstat *c = cstat_get(id);
    if (c)
        __atomic_fetch_add(field(c), n, __ATOMIC_RELAXED);
}

static void decide_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_hook_errors_total Hook calls that raised an error, by campaign.\n"
                  "# TYPE promod_hook_errors_total counter\n");
    for (int i = 0; i < CSTAT_SLOTS; i++) {
        struct cstat *c = &g_cstat[i];
        if (!c->id[0])
            continue;
        for (int h = 0; h < NHOOK; h++) {
            long e = __atomic_load_n(&c->errors[h], __ATOMIC_RELAXED);
            long b = __atomic_load_n(&c->budget[h], __ATOMIC_RELAXED);
            if (e) {
                buf_adds(out, "promod_hook_errors_total{campaign=\"");
                metrics_label(out, c->id);
                buf_printf(out, "\",hook=\"%s\",kind=\"error\"} %ld\n", hook_names[h], e);
            }
            if (b) {
                buf_adds(out, "promod_hook_errors_total{campaign=\"");
                metrics_label(out, c->id);
                buf_printf(out, "\",hook=\"%s\",kind=\"budget\"} %ld\n", hook_names[h], b);
            }
        }
    }
    buf_adds(out, "# HELP promod_offers_served_total Offers served by decide (not dry runs).\n"
                  "# TYPE promod_offers_served_total counter\n");
    for (int i = 0; i < CSTAT_SLOTS; i++) {
        struct cstat *c = &g_cstat[i];
        long n = c->id[0] ? __atomic_load_n(&c->served, __ATOMIC_RELAXED) : 0;
        if (n) {
            buf_adds(out, "promod_offers_served_total{campaign=\"");
            metrics_label(out, c->id);
            buf_printf(out, "\"} %ld\n", n);
        }
    }
}

void decide_metrics_init(void)
{
    if (!g_cstat)
        g_cstat = calloc(CSTAT_SLOTS, sizeof *g_cstat);
    metrics_register(decide_collector, NULL);
}

static void count_hook_error(const char *id, int hook, int rc)
{
    struct cstat *c = cstat_get(id);
    if (!c)
        return;
    if (rc == ERR_BUDGET)
        __atomic_fetch_add(&c->budget[hook], 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&c->errors[hook], 1, __ATOMIC_RELAXED);
}

static long *f_served(struct cstat *c) { return &c->served; }

/* ---------------------------------------------------------------------- */

struct cand {
    int idx;           /* campaign index in the generation */
    int rank;          /* position in the channel's index: priority desc, then id */
    double score;
    json_t *xp;        /* explain entry (borrowed from the explain array) */
    int variant;       /* chosen variant index */
    struct buf content; /* rendered content, in the reply's wire form */
    int served;        /* reserved and going into the reply */
    int hooked;        /* the throttle hook passed it on the counts in `seen` */
    struct throttle_counts seen;
};

/* What a decide needs beyond its stack, kept per worker between requests:
 * the candidate array (a few hundred bytes per campaign of the channel),
 * the offers' content buffers, the customer's parsed counter record and the
 * template scratch.  Allocating and freeing these per request cost more
 * than the malloc calls: large blocks freed each time made glibc
 * consolidate its heap on every decide. */
struct scratch {
    struct cand *cands;   /* cands[k].content stays allocated between requests */
    int ccap;
    struct cand **batch;  /* 2 * bcap: the reservation batch, then the offers */
    int bcap;
    struct throttle_cust tc;
    struct throttle_resv rv;
    struct content_scratch cs; /* template rendering */
};

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
        struct cand **b = realloc(s->batch, sizeof *b * (size_t)cap * 2);
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


/* Push the hook `name` of the campaign table `ref`; 0 if absent (nothing pushed). */
static int push_hook(lua_State *L, int ref, const char *name)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    if (lua_isfunction(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

static void xp_error(json_t *xp, const char *hook, const char *msg)
{
    if (!xp)
        return;
    char b[600];
    snprintf(b, sizeof b, "%s: %s", hook, msg);
    json_t *s = json_string(b); /* NULL when the message is not UTF-8 */
    if (!s) {
        snprintf(b, sizeof b, "%s: error (its message is not valid UTF-8)", hook);
        s = json_string(b);
    }
    json_object_set_new(xp, "error", s);
}

static json_t *xp_reason(json_t *xp, const char *reason)
{
    if (xp) {
        json_t *s = json_string(reason); /* a rule's own text: may not be UTF-8 */
        json_object_set_new(xp, "reason", s ? s : json_string("(reason is not valid UTF-8)"));
    }
    return xp;
}

/* Choose a variant and render its content (core/content) into cd->content
 * in the reply's wire form; 0 on success.  Stack-neutral. */
static int choose_content(struct rules_worker *rw, const struct rules_campaign *c, int ref,
                          const char *cust, int p_idx, int ctx_idx, struct cand *cd, int msgpack)
{
    lua_State *L = luavm_state(rw->vm);
    int top = lua_gettop(L);
    int chosen = -1;
    char err[512];
    if (c->hooks & RULES_HOOK_CONTENT) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_getfield(L, -1, "variants");
        int vars = lua_gettop(L);
        push_hook(L, ref, "content");
        lua_pushvalue(L, p_idx);
        lua_pushvalue(L, ctx_idx);
        lua_pushvalue(L, vars);
        int rc = luavm_call(rw->vm, 3, 1, err, sizeof err);
        if (rc) {
            count_hook_error(c->id, H_CONTENT, rc);
            xp_error(cd->xp, "content", err);
            lua_settop(L, top);
            return rc;
        }
        const char *vid = NULL;
        if (lua_type(L, -1) == LUA_TSTRING) {
            vid = lua_tostring(L, -1);
        } else if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "id");
            vid = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        for (int i = 0; vid && i < c->nvariants; i++)
            if (!strcmp(c->variants[i].id, vid))
                chosen = i;
        lua_pop(L, 1);
        if (chosen < 0) {
            count_hook_error(c->id, H_CONTENT, ERR_LUA);
            xp_error(cd->xp, "content", "must return one of the variants (or its id)");
            lua_settop(L, top);
            return ERR_LUA;
        }
    } else {
        double u = hash_bucket(cust, strlen(cust), c->id, strlen(c->id)) * c->weight_sum;
        double acc = 0;
        chosen = c->nvariants - 1;
        for (int i = 0; i < c->nvariants; i++) {
            acc += c->variants[i].weight;
            if (u < acc) {
                chosen = i;
                break;
            }
        }
    }
    lua_settop(L, top);
    cd->variant = chosen;
    buf_reset(&cd->content);
    if (buf_reserve(&cd->content, 512)) /* one allocation for a typical offer */
        return ERR_NOMEM;
    struct scratch *scr = scratch_get(rw, 0);
    if (!scr)
        return ERR_NOMEM;
    /* compiled when the worker loaded the file (rules.c compile_variants);
     * every caller (decide, sends, triggers) passes a campaign of the
     * worker's own generation */
    const struct rules_gen *g = rw->gen;
    if (!g || !rw->content || c < g->camps || c >= g->camps + g->ncamps)
        return ERR_INVAL;
    const struct rules_content *rcon = &rw->content[c - g->camps];
    struct content_prog *prog =
        2 * chosen + msgpack < rcon->n ? rcon->progs[2 * chosen + msgpack] : NULL;
    if (!prog)
        return ERR_NOMEM;
    int rc = content_render(prog, L, p_idx, &scr->cs, &cd->content);
    if (scr->cs.text.cap > SCRATCH_KEEP)
        buf_free(&scr->cs.text);
    if (scr->cs.val.cap > SCRATCH_KEEP)
        buf_free(&scr->cs.val);
    if (rc) {
        xp_error(cd->xp, "content", "content could not be rendered (only strings, numbers, booleans "
                 "and tables with string keys; text must be UTF-8)");
        return rc;
    }
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

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->rank - y->rank; /* equal scores: priority order, then id (the channel index) */
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

/* Caps on the read snapshot, then the campaign's throttle hook.  Returns 1
 * when the candidate is held back (explain says why), 0 when it may go on
 * to reservation.  Stack-neutral. */
static int cap_gate(struct rules_worker *rw, const struct rules_gen *g, struct cand *cd,
                    const struct rules_channel *ch, const char *cust, struct store_txn *t,
                    int64_t now, long gcap, const struct throttle_cust *tc,
                    const struct throttle_counts *shared, int p_idx,
                    int ctx_idx)
{
    const struct rules_campaign *c = &g->camps[cd->idx];
    json_t *xp = cd->xp;
    if (!throttle_needed(c, ch, gcap))
        return 0;
    lua_State *L = luavm_state(rw->vm);
    int ref = rw->refs[cd->idx];
    struct throttle_counts n;
    const char *why = NULL;
    char err[512];
    (void)cust;
    if (throttle_read(t, tc, c, ch, now, &n, shared) == 0 && throttle_check(&n, c, ch, gcap, &why)) {
        if (xp)
            json_object_set_new(xp, "capped", json_string(why));
        return 1;
    }
    if ((c->hooks & RULES_HOOK_THROTTLE) && push_hook(L, ref, "throttle")) {
        lua_pushvalue(L, p_idx);
        lua_pushvalue(L, ctx_idx);
        push_counts(L, c, ch, &n);
        int rc = luavm_call(rw->vm, 3, 1, err, sizeof err);
        if (rc) {
            count_hook_error(c->id, H_THROTTLE, rc);
            xp_error(xp, "throttle", err);
            return 1;
        }
        int tt = lua_type(L, -1), pass = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (tt != LUA_TBOOLEAN) {
            count_hook_error(c->id, H_THROTTLE, ERR_LUA);
            xp_error(xp, "throttle", "must return true (allow) or false (hold back)");
            return 1;
        }
        if (!pass) {
            if (xp)
                json_object_set_new(xp, "capped", json_string("throttle hook"));
            return 1;
        }
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
static int hook_recheck(struct rules_worker *rw, const struct rules_gen *g, struct cand *cd,
                        const struct rules_channel *ch, struct throttle_resv *rv,
                        int64_t now, int p_idx, int ctx_idx)
{
    if (!cd->hooked)
        return 0;
    const struct rules_campaign *c = &g->camps[cd->idx];
    struct throttle_counts n;
    if (throttle_read(rv->wt, &rv->tc, c, ch, now, &n, NULL) || !memcmp(&n, &cd->seen, sizeof n))
        return 0;
    lua_State *L = luavm_state(rw->vm);
    if (!push_hook(L, rw->refs[cd->idx], "throttle"))
        return 0;
    lua_pushvalue(L, p_idx);
    lua_pushvalue(L, ctx_idx);
    push_counts(L, c, ch, &n);
    char err[512];
    int rc = luavm_call(rw->vm, 3, 1, err, sizeof err);
    if (rc) {
        count_hook_error(c->id, H_THROTTLE, rc);
        xp_error(cd->xp, "throttle", err);
        return 1;
    }
    int tt = lua_type(L, -1), pass = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (tt != LUA_TBOOLEAN) {
        count_hook_error(c->id, H_THROTTLE, ERR_LUA);
        xp_error(cd->xp, "throttle", "must return true (allow) or false (hold back)");
        return 1;
    }
    if (!pass && cd->xp)
        json_object_set_new(cd->xp, "capped", json_string("throttle hook"));
    return !pass;
}

int decide_run(const struct decide_req *q, struct decide_err *e, struct buf *out, int msgpack)
{
    struct rules_worker *rw = rules_worker_self();
    if (!rw || !rw->vm) {
        e->status = 503;
        e->code = "unavailable";
        snprintf(e->message, sizeof e->message, "decide runs only on worker threads");
        return ERR_INVAL;
    }
    rules_worker_refresh(rw);
    struct models_worker *mw = models_worker_self();
    models_worker_refresh(mw);
    struct rules_gen *g = rw->gen;
    int chi = rules_gen_find_channel(g, q->channel);
    if (chi < 0) {
        e->status = 422;
        e->code = "unknown_channel";
        e->field = "channel";
        snprintf(e->message, sizeof e->message, "channel \"%.64s\" is not loaded (plugins/%.64s.lua)",
                 q->channel, q->channel);
        return ERR_INVAL;
    }
    const struct rules_channel *ch = &g->chans[chi];
    lua_State *L = luavm_state(rw->vm);
    int top = lua_gettop(L);
    int64_t now = clock_now();
    long gcap = g_app->cfg.global_daily_cap;
    struct store *st = g_app->store;
    json_t *explain = q->explain ? json_array() : NULL;

    /* profile → p */
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc) {
        e->status = 503;
        e->code = "store_unavailable";
        snprintf(e->message, sizeof e->message, "%s", err_str(rc));
        json_decref(explain);
        return rc;
    }
    const void *pv;
    size_t pl;
    if (store_get(t, STORE_PROFILES, q->customer_id, strlen(q->customer_id), &pv, &pl) == 0 &&
        luavm_push_msgpack(L, pv, pl) == 0 && lua_istable(L, -1)) {
        /* known customer */
    } else {
        lua_settop(L, top);
        lua_createtable(L, 0, 2);
    }
    int p_idx = lua_gettop(L);
    lua_pushstring(L, q->customer_id);
    lua_setfield(L, p_idx, "id");
    if (store_get(t, STORE_PSTATS, q->customer_id, strlen(q->customer_id), &pv, &pl) == 0 &&
        luavm_push_msgpack(L, pv, pl) == 0) {
        lua_setfield(L, p_idx, "stats");
    }
    lua_settop(L, p_idx);

    /* ctx: request context + channel, placement, now */
    if (q->context_text &&
        jscan_push_lua(L, (struct jscan_val){ q->context_text, q->context_len }) == 0 &&
        lua_istable(L, -1)) {
    } else {
        lua_settop(L, p_idx);
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
    models_decide_begin(mw, p_idx, ctx_idx, now);

    const char *blocked = consent_block(L, p_idx, ch);
    if (!blocked && ch->quiet_from >= 0) {
        lua_getfield(L, p_idx, "tz");
        const char *tz = lua_tostring(L, -1);
        if (throttle_quiet(ch, tz, now))
            blocked = "quiet hours for this channel";
        lua_pop(L, 1);
    }

    int nlist = g->nby_channel[chi];
    const int *list = g->by_channel[chi];
    struct scratch *scr = scratch_get(rw, nlist);
    if (!scr) {
        store_txn_end(t);
        models_decide_end(mw);
        lua_settop(L, top);
        json_decref(explain);
        e->status = 500;
        e->code = "internal";
        snprintf(e->message, sizeof e->message, "%s", err_str(ERR_NOMEM));
        return ERR_NOMEM;
    }
    struct throttle_counts shared;
    struct throttle_cust *tc = &scr->tc; /* the customer's counters: one read for the request */
    throttle_cust_load(t, q->customer_id, tc);
    throttle_read_shared(tc, ch, now, &shared);
    struct cand *cands = scr->cands;
    int ncand = 0;
    uint64_t pbit = q->placement ? rules_gen_placement_bit(g, q->placement) : 0;
    char err[512];
    for (int k = 0; !blocked && k < nlist; k++) {
        int i = list[k];
        const struct rules_campaign *c = &g->camps[i];
        json_t *xp = NULL;
        if (explain) {
            xp = json_object();
            json_object_set_new(xp, "campaign_id", json_string(c->id));
            json_array_append_new(explain, xp);
        }
        if (c->status != CAMP_ACTIVE) {
            if (xp) {
                char b[64];
                snprintf(b, sizeof b, "status %s", rules_status_name(c->status));
                json_object_set_new(xp, "eligible", json_false());
                xp_reason(xp, b);
            }
            continue;
        }
        if (q->placement && c->placement_mask && !(c->placement_mask & pbit)) {
            if (xp) { /* a bit test: before the schedule's calendar arithmetic */
                json_object_set_new(xp, "eligible", json_false());
                xp_reason(xp, "placement not targeted");
            }
            continue;
        }
        if (!rules_schedule_open(&c->sched, now)) {
            if (xp) {
                json_object_set_new(xp, "eligible", json_false());
                xp_reason(xp, "outside schedule");
            }
            continue;
        }
        int ref = rw->refs[i];
        if (ref == LUA_NOREF || ref == LUA_REFNIL) {
            if (xp)
                xp_error(xp, "load", "campaign not loaded in this worker");
            continue;
        }
        /* eligible */
        if (rw->fn_refs[2 * i] != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, rw->fn_refs[2 * i]);
            lua_pushvalue(L, p_idx);
            lua_pushvalue(L, ctx_idx);
            rc = luavm_call_ref(rw->vm, rw->fn_refs[2 * i], 2, 2, err, sizeof err);
            if (rc) {
                count_hook_error(c->id, H_ELIGIBLE, rc);
                if (xp) {
                    json_object_set_new(xp, "eligible", json_false());
                    xp_error(xp, "eligible", err);
                }
                continue;
            }
            int t1 = lua_type(L, -2);
            if (t1 != LUA_TBOOLEAN && t1 != LUA_TNIL) {
                lua_pop(L, 2);
                count_hook_error(c->id, H_ELIGIBLE, ERR_LUA);
                if (xp) {
                    json_object_set_new(xp, "eligible", json_false());
                    xp_error(xp, "eligible", "must return true or false (got a non-boolean)");
                }
                continue;
            }
            int yes = lua_toboolean(L, -2);
            if (!yes) {
                if (xp) {
                    json_object_set_new(xp, "eligible", json_false());
                    xp_reason(xp, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                                 : "eligible returned false");
                }
                lua_pop(L, 2);
                continue;
            }
            lua_pop(L, 2);
        }
        if (xp)
            json_object_set_new(xp, "eligible", json_true());
        /* score */
        double score = c->priority;
        if (c->score_model[0] && models_score(mw, c, p_idx, ctx_idx, xp, &score, NULL))
            continue; /* explain says why */
        if (rw->fn_refs[2 * i + 1] != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, rw->fn_refs[2 * i + 1]);
            lua_pushvalue(L, p_idx);
            lua_pushvalue(L, ctx_idx);
            rc = luavm_call_ref(rw->vm, rw->fn_refs[2 * i + 1], 2, 1, err, sizeof err);
            if (rc) {
                count_hook_error(c->id, H_SCORE, rc);
                xp_error(xp, "score", err);
                continue;
            }
            int isnum = lua_type(L, -1) == LUA_TNUMBER;
            score = lua_tonumber(L, -1);
            lua_pop(L, 1);
            if (!isnum || !isfinite(score)) {
                count_hook_error(c->id, H_SCORE, ERR_LUA);
                xp_error(xp, "score", "must return a finite number");
                continue;
            }
        }
        if (xp)
            json_object_set_new(xp, "score", json_real(score));
        struct cand *cd = &cands[ncand++];
        struct buf keep = cd->content; /* the content buffer is reused */
        *cd = (struct cand){ .idx = i, .rank = k, .score = score, .xp = xp, .variant = -1 };
        cd->content = keep;
        buf_reset(&cd->content);
    }
    if (blocked && explain) {
        json_t *x = json_object();
        json_object_set_new(x, "channel", json_string(q->channel));
        json_object_set_new(x, "reason", json_string(blocked));
        json_array_append_new(explain, x);
    }
    if (ncand > 1)
        qsort(cands, (size_t)ncand, sizeof *cands, cand_cmp);

    /* Walk the ranking: caps (read snapshot) and the throttle hook only for
     * candidates that could still be served, content for those that pass,
     * then exact reservation; repeat while reservations knock some out.
     * With explain every candidate's caps are checked, for the report. */
    int accepted = 0, next = 0;
    struct throttle_resv *rv = &scr->rv;
    rv->dirty = rv->loaded = 0;
    int limit = q->limit;
    struct cand **batch = scr->batch;
    struct cand **served = batch ? batch + ncand : NULL; /* the offers, in order */
    while (accepted < limit && next < ncand) {
        int nb = 0;
        while (nb < limit - accepted && next < ncand) {
            struct cand *cd = &cands[next++];
            if (cap_gate(rw, g, cd, ch, q->customer_id, t, now, gcap, tc, &shared, p_idx, ctx_idx))
                continue;
            const struct rules_campaign *c = &g->camps[cd->idx];
            if (choose_content(rw, c, rw->refs[cd->idx], q->customer_id, p_idx, ctx_idx, cd, msgpack) == 0)
                batch[nb++] = cd;
        }
        if (!nb)
            break;
        int need = 0;
        for (int b = 0; b < nb; b++)
            need |= throttle_needed(&g->camps[batch[b]->idx], ch, gcap);
        struct store_txn *wt = NULL;
        if (!q->dry_run && need && (rc = store_wtxn_begin(st, &wt)))
            break;
        /* the customer's record: read once in the write txn, every offer of
         * the batch counted against it in memory, written once */
        if (wt && (rc = throttle_resv_begin(rv, wt, q->customer_id))) {
            store_txn_end(wt);
            break;
        }
        for (int b = 0; b < nb; b++) {
            struct cand *cd = batch[b];
            const struct rules_campaign *c = &g->camps[cd->idx];
            const char *why = NULL;
            if (wt && throttle_needed(c, ch, gcap)) {
                if (hook_recheck(rw, g, cd, ch, rv, now, p_idx, ctx_idx))
                    continue;
                rc = throttle_resv_add(rv, c, ch, now, gcap, &why);
                if (rc) {
                    if (cd->xp)
                        json_object_set_new(cd->xp, "capped", json_string(why ? why : err_str(rc)));
                    if (rc != ERR_CAPPED) /* store trouble: serve nothing more */
                        next = ncand;
                    continue;
                }
            }
            cd->served = 1;
            served[accepted] = cd;
            if (cd->xp) {
                json_object_set_new(cd->xp, "selected", json_true());
                json_object_set_new(cd->xp, "variant", json_string(c->variants[cd->variant].id));
            }
            if (!q->dry_run)
                cstat_add(c->id, f_served, 1);
            accepted++;
        }
        if (wt) {
            rc = throttle_resv_end(rv);
            if (rc)
                store_txn_end(wt);
            else
                rc = store_txn_commit(wt, STORE_ASYNC);
            if (rc) {
                /* nothing was counted: serve nothing rather than exceed a cap */
                accepted = 0;
                log_error("cap reservation failed", "customer=\"%s\" err=\"%s\"", q->customer_id,
                          err_str(rc));
                break;
            }
        }
    }
    /* explain: report caps for the candidates the walk did not reach */
    for (int k = next; explain && k < ncand; k++)
        if (!cap_gate(rw, g, &cands[k], ch, q->customer_id, t, now, gcap, tc, &shared, p_idx,
                      ctx_idx) &&
            cands[k].xp)
            json_object_set_new(cands[k].xp, "reason", json_string("ranked below the limit"));
    store_txn_end(t);
    models_decide_end(mw);
    lua_settop(L, top);

    /* the reply: written straight into `out` in the wire form asked for */
    struct emit em;
    size_t need = 128;
    for (int k = 0; k < accepted; k++)
        need += served[k]->content.len + 160;
    buf_reserve(out, need); /* a failure shows up as the emitter's error */
    emit_init(&em, out, msgpack);
    emit_map(&em, 2 + (explain != NULL) + (q->dry_run != 0));
    /* "d" + 11 hex digits of the ms clock + 8 random hex digits */
    char did[20];
    uint64_t ms = (uint64_t)clock_now_ms(), rnd = next_rand() & 0xffffffffu;
    static const char hx[] = "0123456789abcdef";
    did[0] = 'd';
    for (int i = 0; i < 11; i++)
        did[11 - i] = hx[(ms >> (4 * i)) & 15];
    for (int i = 0; i < 8; i++)
        did[19 - i] = hx[(rnd >> (4 * i)) & 15];
    int dl = 20;
    emit_key(&em, "decision_id", 11);
    emit_str(&em, did, (size_t)dl);
    emit_key(&em, "offers", 6);
    emit_array(&em, (size_t)accepted);
    for (int k = 0; k < accepted; k++) {
        const struct cand *cd = served[k];
        const struct rules_campaign *c = &g->camps[cd->idx];
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
    if (explain) {
        emit_key(&em, "explain", 7);
        emit_json(&em, explain);
    }
    if (q->dry_run) {
        emit_key(&em, "dry_run", 7);
        emit_bool(&em, 1);
    }
    emit_end(&em);
    json_decref(explain);
    for (int k = 0; k < ncand; k++)
        if (cands[k].content.cap > SCRATCH_KEEP)
            buf_free(&cands[k].content);
    if (scr->rv.enc.cap > SCRATCH_KEEP)
        buf_free(&scr->rv.enc);
    rc = emit_error(&em);
    if (rc) {
        e->status = 500;
        e->code = "internal";
        snprintf(e->message, sizeof e->message, "reply could not be written: %s", err_str(rc));
    }
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
    int rc = choose_content(rw, c, ref, cust, p_idx, ctx_idx, &cd, 0);
    *variant = cd.variant;
    *content = NULL;
    if (rc == 0 && !(*content = codec_parse_json(cd.content.p, cd.content.len, &rc, NULL, 0)))
        rc = rc ? rc : ERR_INVAL;
    buf_free(&cd.content);
    return rc;
}
