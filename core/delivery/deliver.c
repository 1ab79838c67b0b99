/*
 * deliver.c — the delivery thread (see deliver.h): channel state, the
 * in-flight set, deliver() as coroutines, retries, outcome batches,
 * releases and due trigger timers.  The queue itself is outbox.c.
 *
 * Why in-flight lives in memory only: persisting "in flight" would cost a
 * write per attempt and would still need a recovery pass after a crash.
 * Instead a message stays "queued" in the store until its outcome is
 * written, and the thread remembers which ids it is working on; after a
 * crash those are simply due again (at-least-once, deduped by the key).
 *
 * Why outcomes are batched: a commit per delivery would cap the drain at
 * the store's commit rate; outcomes are collected and written together
 * (non-durable commit: it survives a process crash, and losing it to a
 * power cut only means a redelivery the key dedupes).
 *
 * Why delivered messages leave through a sink: the thread sits in the
 * delivery layer, below the events module that turns them into send
 * events; main.c, which sees both, connects them.
 */
#include "delivery/deliver.h"
#include "base/app.h"
#include "base/clock.h"
#include "engine/decide.h"
#include "base/err.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "base/metrics.h"
#include "delivery/net.h"
#include "delivery/outbox.h"
#include "engine/rules.h"
#include "delivery/sends.h"
#include "store/store.h"
#include "engine/throttle.h"
#include "delivery/triggers.h"
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANS 32
#define FLUSH_MAX 512
#define SCAN_EXTRA 2000      /* entries looked at per channel and tick beyond the free slots */
#define PARK_PER_TICK 2000

enum outcome { O_NONE, O_SENT, O_RETRY, O_DEAD, O_DROP, O_PARK, O_DEFER };

struct chanstate {
    char name[40];
    int used;
    int inflight;            /* atomic: read by stats */
    int concurrency;         /* atomic: read by stats */
    double rate;             /* per second, 0 = unlimited */
    double tokens;
    uint64_t last_ns;
    int max_attempts;
    int64_t base_ms, max_ms;
    int timeout_ms, request_timeout_ms;
};

struct delivery {
    uint64_t id;
    int cs;                  /* index into G.chans */
    int64_t due_ms;          /* of its queue entry */
    char *campaign;          /* "" when none */
    json_t *rec;             /* the record (NULL for park/drop from the scan) */
    int attempts;            /* before this attempt */
    struct luavm_net_task *task;
    enum outcome out;
    const char *reason;      /* static */
    char error[300];
    int64_t new_due_ms;
    struct delivery *next;   /* pending list */
    struct delivery *lprev, *lnext; /* live list: deliver() running */
};

static struct {
    struct app *app;
    pthread_t thread;
    int started;
    struct event_base *base;
    struct event *tick, *flush_ev;
    struct rules_worker *rw;
    struct net *net;
    struct chanstate chans[MAX_CHANS];
    struct delivery *pend, **pend_tail;
    int npend;
    struct delivery *live;
    uint64_t *set;           /* in-flight ids: open addressing, 0 = empty */
    size_t setcap, setn;
    int flush_armed;
    uint64_t rnd;
    deliver_sink_fn sink;
    void *sink_ud;
} G;

static _Atomic long g_attempts, g_sent_total, g_dead_total;

static const char *rec_str(const json_t *rec, const char *f)
{
    const char *s = json_string_value(json_object_get(rec, f));
    return s ? s : "";
}

/* ---------------------------------------------------------------------- */
/* the in-flight set                                                      */

static size_t set_slot(uint64_t id, size_t cap) { return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1); }

static int set_has(uint64_t id)
{
    if (!G.setcap)
        return 0;
    for (size_t i = set_slot(id, G.setcap);; i = (i + 1) & (G.setcap - 1)) {
        if (G.set[i] == id)
            return 1;
        if (!G.set[i])
            return 0;
    }
}

static void set_add(uint64_t id)
{
    if ((G.setn + 1) * 2 > G.setcap) {
        size_t ncap = G.setcap ? G.setcap * 2 : 1024;
        uint64_t *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            abort();
        for (size_t i = 0; i < G.setcap; i++)
            if (G.set[i]) {
                size_t j = set_slot(G.set[i], ncap);
                while (ns[j])
                    j = (j + 1) & (ncap - 1);
                ns[j] = G.set[i];
            }
        free(G.set);
        G.set = ns;
        G.setcap = ncap;
    }
    size_t i = set_slot(id, G.setcap);
    while (G.set[i] && G.set[i] != id)
        i = (i + 1) & (G.setcap - 1);
    if (!G.set[i])
        G.setn++;
    G.set[i] = id;
}

static void set_del(uint64_t id)
{
    if (!G.setcap)
        return;
    size_t m = G.setcap - 1, i = set_slot(id, G.setcap);
    while (G.set[i] != id) {
        if (!G.set[i])
            return;
        i = (i + 1) & m;
    }
    G.set[i] = 0;
    G.setn--;
    /* backward-shift deletion keeps probe chains intact */
    for (size_t j = (i + 1) & m; G.set[j]; j = (j + 1) & m) {
        size_t home = set_slot(G.set[j], G.setcap);
        if (((j - home) & m) >= ((j - i) & m)) {
            G.set[i] = G.set[j];
            G.set[j] = 0;
            i = j;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* channel state and settings                                             */

static double setting_num(const json_t *s, const char *k, double def, double lo, double hi)
{
    json_t *v = json_object_get(s, k);
    if (!json_is_number(v))
        return def;
    double d = json_number_value(v);
    return d < lo ? lo : d > hi ? hi : d;
}

static int chan_state(const struct rules_channel *ch)
{
    int free_slot = -1, found = -1;
    for (int i = 0; i < MAX_CHANS && found < 0; i++) {
        if (G.chans[i].used && !strcmp(G.chans[i].name, ch->name))
            found = i;
        else if (!G.chans[i].used && free_slot < 0)
            free_slot = i;
    }
    if (found >= 0)
        free_slot = found;
    if (free_slot < 0)
        return -1;
    struct chanstate *cs = &G.chans[free_slot];
    if (!cs->used) {
        memset(cs, 0, sizeof *cs);
        snprintf(cs->name, sizeof cs->name, "%s", ch->name);
        cs->last_ns = clock_mono_ns();
        __atomic_store_n(&cs->used, 1, __ATOMIC_RELEASE);
    }
    const json_t *s = ch->settings;
    __atomic_store_n(&cs->concurrency, (int)setting_num(s, "concurrency", 32, 1, 1024),
                     __ATOMIC_RELAXED);
    double rate = setting_num(s, "rate", 0, 0, 1e6);
    if (rate != cs->rate) {
        cs->rate = rate;
        cs->tokens = rate > 0 ? fmax(1, rate / 10) : 0;
    }
    cs->max_attempts = (int)setting_num(s, "max_attempts", 8, 1, 100);
    cs->base_ms = (int64_t)setting_num(s, "retry_base_ms", 1000, 1, 86400000);
    cs->max_ms = (int64_t)setting_num(s, "retry_max_ms", 3600000, 1, 7 * 86400000.0);
    cs->timeout_ms = (int)setting_num(s, "timeout_ms", 30000, 10, 600000);
    cs->request_timeout_ms = (int)setting_num(s, "request_timeout_ms", 10000, 10, 600000);
    return free_slot;
}

static double rnd01(void)
{
    if (!G.rnd)
        G.rnd = clock_mono_ns() | 1;
    G.rnd ^= G.rnd << 13;
    G.rnd ^= G.rnd >> 7;
    G.rnd ^= G.rnd << 17;
    return (double)(G.rnd >> 11) / 9007199254740992.0;
}

/* ---------------------------------------------------------------------- */
/* outcomes                                                               */

static void live_add(struct delivery *d)
{
    d->lprev = NULL;
    d->lnext = G.live;
    if (G.live)
        G.live->lprev = d;
    G.live = d;
}

static void live_del(struct delivery *d)
{
    if (d->lprev)
        d->lprev->lnext = d->lnext;
    else if (G.live == d)
        G.live = d->lnext;
    if (d->lnext)
        d->lnext->lprev = d->lprev;
    d->lprev = d->lnext = NULL;
}

static void pend_push(struct delivery *d)
{
    d->next = NULL;
    *G.pend_tail = d;
    G.pend_tail = &d->next;
    G.npend++;
    if (!G.flush_armed && G.flush_ev) {
        G.flush_armed = 1;
        event_active(G.flush_ev, EV_TIMEOUT, 0);
    }
}

static void delivery_free(struct delivery *d)
{
    free(d->campaign);
    if (d->rec)
        json_decref(d->rec);
    free(d);
}

static void set_outcome(struct delivery *d, enum outcome o, const char *reason, const char *fmt,
                        const char *arg)
{
    d->out = o;
    d->reason = reason;
    if (fmt)
        snprintf(d->error, sizeof d->error, fmt, arg ? arg : "");
    struct chanstate *cs = &G.chans[d->cs];
    if (o == O_RETRY) {
        int n = d->attempts + 1;
        if (n >= cs->max_attempts) {
            d->out = O_DEAD;
            size_t l = strlen(d->error);
            snprintf(d->error + l, sizeof d->error - l, " (gave up after %d attempts)", n);
            return;
        }
        double delay = (double)cs->base_ms * pow(2.0, n - 1);
        if (delay > (double)cs->max_ms)
            delay = (double)cs->max_ms;
        delay *= 0.5 + rnd01();
        d->new_due_ms = clock_now_ms() + (int64_t)delay;
    }
}

/* Classify what deliver() returned (or how it failed). */
static void on_deliver_done(void *ud, int rc, lua_State *co, int nres, const char *err)
{
    struct delivery *d = ud;
    d->task = NULL;
    live_del(d);
    struct chanstate *cs = &G.chans[d->cs];
    __atomic_fetch_sub(&cs->inflight, 1, __ATOMIC_RELAXED);
    g_attempts++;
    if (rc == ERR_BUSY) {
        set_outcome(d, O_RETRY, "timeout", "%s", err);
    } else if (rc == ERR_BUDGET) {
        set_outcome(d, O_DEAD, "plugin_budget", "%s", err);
    } else if (rc) {
        set_outcome(d, O_DEAD, "plugin_error", "%s", err);
    } else {
        int t1 = nres >= 1 ? lua_type(co, 1) : LUA_TNIL;
        const char *s2 = nres >= 2 && lua_type(co, 2) == LUA_TSTRING ? lua_tostring(co, 2) : NULL;
        if (t1 == LUA_TBOOLEAN && lua_toboolean(co, 1)) {
            set_outcome(d, O_SENT, NULL, NULL, NULL);
        } else if (t1 == LUA_TBOOLEAN) {
            set_outcome(d, O_DEAD, "rejected", "rejected by the plugin: %s", s2 ? s2 : "(no reason)");
        } else if (t1 == LUA_TNUMBER) {
            double st = lua_tonumber(co, 1);
            int code = st >= 100 && st <= 599 && st == floor(st) ? (int)st : 0;
            static char names[600][9]; /* "http_NNN", built once per code on this thread */
            const char *rn = "bad_return";
            if (code) {
                if (!names[code][0])
                    snprintf(names[code], sizeof names[code], "http_%d", code);
                rn = names[code];
            }
            char snippet[160];
            snprintf(snippet, sizeof snippet, "%.150s", s2 ? s2 : "");
            for (char *p = snippet; *p; p++)
                if ((unsigned char)*p < 0x20)
                    *p = ' ';
            if (code >= 200 && code < 300)
                set_outcome(d, O_SENT, NULL, NULL, NULL);
            else if (code == 408 || code == 429 || code >= 500)
                set_outcome(d, O_RETRY, rn, "provider answered: %s", snippet);
            else if (code)
                set_outcome(d, O_DEAD, rn, "provider refused: %s", snippet);
            else
                set_outcome(d, O_DEAD, "bad_return", "deliver returned %s", "a number that is not an HTTP status");
        } else if (t1 == LUA_TNIL && s2) {
            set_outcome(d, O_RETRY, strstr(s2, "timeout") ? "timeout" : "network", "%s", s2);
        } else {
            set_outcome(d, O_DEAD, "bad_return", "deliver returned %s",
                        nres ? lua_typename(co, t1) : "nothing");
        }
    }
    if (d->out == O_SENT)
        g_sent_total++;
    else if (d->out == O_DEAD)
        g_dead_total++;
    if (d->out == O_DEAD || d->out == O_RETRY)
        log_debug("outbox attempt failed", "id=%llu channel=%s reason=%s error=\"%.200s\"",
                  (unsigned long long)d->id, cs->name, d->reason ? d->reason : "?", d->error);
    pend_push(d);
}

/* Write every pending outcome in one transaction, then report the
 * delivered messages to the sink. */
static void flush(void)
{
    static const enum outbox_fate fates[] = {
        [O_SENT] = OUTBOX_SENT, [O_RETRY] = OUTBOX_RETRY, [O_DEAD] = OUTBOX_DEAD,
        [O_DROP] = OUTBOX_DROP, [O_PARK] = OUTBOX_PARK,   [O_DEFER] = OUTBOX_DEFER,
    };
    G.flush_armed = 0;
    if (!G.npend)
        return;
    struct outbox_batch *b = NULL;
    int rc = outbox_batch_begin(&b);
    struct deliver_sent *sent = G.sink ? malloc(sizeof *sent * (size_t)G.npend) : NULL;
    size_t nsent = 0;
    for (struct delivery *d = G.pend; d && !rc; d = d->next) {
        if (d->out == O_NONE)
            continue;
        struct outbox_outcome o = { .id = d->id, .channel = G.chans[d->cs].name,
                                    .campaign = d->campaign ? d->campaign : "",
                                    .due_ms = d->due_ms, .fate = fates[d->out], .rec = d->rec,
                                    .attempts = d->attempts, .reason = d->reason,
                                    .error = d->error, .new_due_ms = d->new_due_ms };
        rc = outbox_batch_add(b, &o);
        if (rc == OUTBOX_GONE) {
            rc = 0;
            continue;
        }
        if (!rc && d->out == O_SENT && sent)
            sent[nsent++] = (struct deliver_sent){ .key = rec_str(d->rec, "key"),
                                                   .customer = rec_str(d->rec, "customer"),
                                                   .campaign = o.campaign, .channel = o.channel,
                                                   .variant = rec_str(d->rec, "variant") };
    }
    if (b && !rc)
        rc = outbox_batch_commit(b);
    else if (b)
        outbox_batch_abort(b);
    if (rc)
        log_error("outbox: cannot record outcomes (they will be retried)", "n=%d err=\"%s\"",
                  G.npend, err_str(rc));
    else if (nsent)
        G.sink(G.sink_ud, sent, nsent); /* after the commit; the records are still ours */
    free(sent);
    struct delivery *d = G.pend;
    while (d) {
        struct delivery *n = d->next;
        set_del(d->id);
        delivery_free(d);
        d = n;
    }
    G.pend = NULL;
    G.pend_tail = &G.pend;
    G.npend = 0;
}

/* Move held messages of resumed / stopped campaigns, a chunk at a time. */
static void process_releases(void)
{
    char camp[OUTBOX_CAMPAIGN_MAX + 8];
    int drop;
    while (outbox_release_peek(camp, &drop)) {
        /* a release for a campaign whose gate says otherwise is stale */
        int gate = sends_gate(camp);
        int valid = drop ? gate == SENDS_GATE_STOPPED : gate != SENDS_GATE_PAUSED;
        if (valid && !outbox_release_chunk(camp, drop))
            return; /* the rest on the next tick */
        outbox_release_done(camp, drop);
    }
}

/* ---------------------------------------------------------------------- */
/* the drain                                                              */

struct cand {
    uint64_t id;
    int64_t due_ms;
    char campaign[OUTBOX_CAMPAIGN_MAX + 8];
    int gate;
};

struct qscan {
    struct cand *c;
    int n, ngo, want, seen, limit, nhold;
};

static int q_cb(void *ud, const struct outbox_due *q)
{
    struct qscan *s = ud;
    if (++s->seen > s->limit)
        return 1;
    if (set_has(q->id))
        return 0;
    int gate = *q->campaign ? sends_gate(q->campaign) : SENDS_GATE_NONE;
    int held = gate == SENDS_GATE_PAUSED || gate == SENDS_GATE_STOPPED;
    if (held && s->nhold >= PARK_PER_TICK)
        return 0;
    struct cand *c = &s->c[s->n++];
    c->id = q->id;
    c->due_ms = q->due_ms;
    c->gate = gate;
    snprintf(c->campaign, sizeof c->campaign, "%s", q->campaign);
    if (held) {
        s->nhold++;
        return 0;
    }
    return ++s->ngo >= s->want ? 1 : 0;
}

static struct delivery *delivery_new(uint64_t id, int cs, int64_t due_ms, const char *campaign)
{
    struct delivery *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->id = id;
    d->cs = cs;
    d->due_ms = due_ms;
    d->campaign = strdup(campaign ? campaign : "");
    if (!d->campaign) {
        free(d);
        return NULL;
    }
    set_add(id);
    return d;
}

/* Consent for the message's customer now; NULL = allowed. */
static const char *consent_now(struct store_txn *t, const struct rules_channel *ch, const char *cust)
{
    const void *pv;
    size_t pl;
    if (store_get(t, STORE_PROFILES, cust, strlen(cust), &pv, &pl))
        return "profile_erased";
    lua_State *L = luavm_state(G.rw->vm);
    int top = lua_gettop(L);
    const char *why = NULL;
    if (luavm_push_msgpack(L, pv, pl) == 0 && lua_istable(L, -1))
        why = decide_consent_block(L, lua_gettop(L), ch) ? "consent_withdrawn" : NULL;
    lua_settop(L, top);
    return why;
}

static void start_delivery(struct delivery *d, int chi, int ref)
{
    struct chanstate *cs = &G.chans[d->cs];
    struct rules_gen *g = G.rw->gen;
    lua_State *L = luavm_state(G.rw->vm);
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushliteral(L, "deliver");
    lua_rawget(L, -2); /* raw: no script code runs outside a call (luavm.h) */
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, top);
        set_outcome(d, O_DEAD, "no_deliver", "%s", "the channel plugin has no deliver function");
        pend_push(d);
        return;
    }
    if (luavm_push_json(L, json_object_get(d->rec, "msg")) || !lua_istable(L, -1)) {
        lua_settop(L, top);
        set_outcome(d, O_DEAD, "bad_message", "%s", "stored message is not a table");
        pend_push(d);
        return;
    }
    luavm_net_push_lib(L);
    const json_t *settings = g->chans[chi].settings;
    if (!settings || luavm_push_json(L, settings) || !lua_istable(L, -1)) {
        if (settings)
            lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_createtable(L, 0, 8);
    lua_pushstring(L, rec_str(d->rec, "key"));
    lua_setfield(L, -2, "key");
    lua_pushnumber(L, (lua_Number)d->id);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, d->attempts + 1);
    lua_setfield(L, -2, "attempt");
    lua_pushstring(L, d->campaign);
    lua_setfield(L, -2, "campaign");
    lua_pushstring(L, rec_str(d->rec, "customer"));
    lua_setfield(L, -2, "customer");
    lua_pushstring(L, cs->name);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, rec_str(d->rec, "variant"));
    lua_setfield(L, -2, "variant");
    struct luavm_net_opts o = { .timeout_ms = cs->timeout_ms,
                                .request_timeout_ms = cs->request_timeout_ms,
                                .max_requests = 8,
                                .idem_key = rec_str(d->rec, "key") };
    __atomic_fetch_add(&cs->inflight, 1, __ATOMIC_RELAXED);
    live_add(d);
    struct luavm_net_task *task = NULL;
    if (luavm_net_run(G.rw->vm, G.net, 4, &o, on_deliver_done, d, &task)) {
        live_del(d);
        __atomic_fetch_sub(&cs->inflight, 1, __ATOMIC_RELAXED);
        lua_settop(L, top);
        set_outcome(d, O_RETRY, "out_of_memory", "%s", "cannot start deliver");
        pend_push(d);
        return;
    }
    d->task = task;
    lua_settop(L, top);
}

static void drain_channel(int chi, int64_t now_ms)
{
    struct rules_gen *g = G.rw->gen;
    const struct rules_channel *ch = &g->chans[chi];
    int ref = G.rw->chan_refs ? G.rw->chan_refs[chi] : LUA_NOREF;
    if (!ch->outbound || ref == LUA_NOREF || ref == LUA_REFNIL)
        return;
    int csi = chan_state(ch);
    if (csi < 0)
        return;
    struct chanstate *cs = &G.chans[csi];
    int inflight = __atomic_load_n(&cs->inflight, __ATOMIC_RELAXED);
    int want = cs->concurrency - inflight;
    if (cs->rate > 0) {
        uint64_t ns = clock_mono_ns();
        double burst = fmax(1, cs->rate / 10);
        cs->tokens = fmin(burst, cs->tokens + cs->rate * (double)(ns - cs->last_ns) / 1e9);
        cs->last_ns = ns;
        if ((int)cs->tokens < want)
            want = (int)cs->tokens;
    }
    if (want <= 0)
        return;
    struct qscan s = { .want = want, .limit = want + inflight + SCAN_EXTRA };
    s.c = malloc(sizeof *s.c * (size_t)(want + PARK_PER_TICK));
    if (!s.c)
        return;
    struct store_txn *t;
    if (store_rtxn_begin(G.app->store, &t)) {
        free(s.c);
        return;
    }
    outbox_due_scan(t, ch->name, now_ms, q_cb, &s);
    struct delivery **go = malloc(sizeof *go * (size_t)(s.n + 1));
    int ngo = 0;
    int64_t now = now_ms / 1000;
    for (int i = 0; go && i < s.n; i++) {
        struct cand *c = &s.c[i];
        struct delivery *d = delivery_new(c->id, csi, c->due_ms, c->campaign);
        if (!d)
            break;
        if (c->gate == SENDS_GATE_PAUSED) {
            d->out = O_PARK;
            pend_push(d);
            continue;
        }
        if (c->gate == SENDS_GATE_STOPPED) {
            d->out = O_DROP;
            d->reason = "stopped";
            pend_push(d);
            continue;
        }
        int rc;
        d->rec = outbox_get(t, c->id, &rc);
        if (!d->rec) {
            /* an index entry without its record: drop the entry */
            d->out = O_DROP;
            d->reason = "record_missing";
            pend_push(d);
            continue;
        }
        d->attempts = (int)json_integer_value(json_object_get(d->rec, "attempts"));
        const char *tz = rec_str(d->rec, "tz");
        int64_t qend = throttle_quiet_end(ch, tz, now);
        if (qend) {
            d->out = O_DEFER;
            d->new_due_ms = qend * 1000;
            pend_push(d);
            continue;
        }
        const char *why = consent_now(t, ch, rec_str(d->rec, "customer"));
        if (why) {
            d->out = O_DROP;
            d->reason = why;
            pend_push(d);
            continue;
        }
        go[ngo++] = d;
    }
    store_txn_end(t);
    free(s.c);
    for (int i = 0; i < ngo; i++) {
        if (cs->rate > 0)
            cs->tokens -= 1;
        start_delivery(go[i], chi, ref);
    }
    free(go);
}

static void dispatch(void)
{
    struct rules_worker *rw = G.rw;
    rules_worker_refresh(rw);
    int64_t now_ms = clock_now_ms();
    if (G.npend >= FLUSH_MAX)
        flush();
    int fired = triggers_fire_due(rw, now_ms / 1000, 256);
    if (fired < 0)
        log_error("triggers: cannot fire timers", "err=\"%s\"", err_str(fired));
    process_releases();
    struct rules_gen *g = rw->gen;
    for (int i = 0; g && i < g->nchans; i++)
        drain_channel(i, now_ms);
    flush();
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    dispatch();
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    flush();
    dispatch();
}

static void *thread_main(void *arg)
{
    (void)arg;
    if (rules_worker_start(G.base, &G.rw)) {
        log_error("outbox: no Lua state for the delivery thread", "%s", "");
        return NULL;
    }
    struct net_opts no = { 0 };
    if (net_new(G.base, &no, &G.net)) {
        rules_worker_stop(G.rw);
        G.rw = NULL;
        return NULL;
    }
    /* channels.<name>.ca_file: a private CA some provider needs */
    const char *cname;
    json_t *cset;
    json_object_foreach(G.app->cfg.channels, cname, cset) {
        const char *ca = json_string_value(json_object_get(cset, "ca_file"));
        if (ca && net_trust(G.net, ca))
            log_error("outbox: cannot load channels.*.ca_file", "channel=%s file=\"%s\"", cname, ca);
    }
    G.tick = event_new(G.base, -1, EV_PERSIST, on_tick, NULL);
    G.flush_ev = event_new(G.base, -1, 0, on_flush, NULL);
    struct event *wake = event_new(G.base, -1, 0, on_tick, NULL);
    struct timeval tv = { 0, 20000 };
    event_add(G.tick, &tv);
    outbox_set_wake(wake);
    dispatch();
    event_base_dispatch(G.base);

    outbox_set_wake(NULL);
    /* abandon attempts in flight: they stay queued for the next run */
    flush();
    while (G.live) {
        struct delivery *d = G.live;
        live_del(d);
        if (d->task)
            luavm_net_cancel(d->task);
        __atomic_fetch_sub(&G.chans[d->cs].inflight, 1, __ATOMIC_RELAXED);
        set_del(d->id);
        delivery_free(d);
    }
    net_free(G.net);
    G.net = NULL;
    event_free(wake);
    event_free(G.tick);
    event_free(G.flush_ev);
    G.flush_ev = NULL;
    rules_worker_stop(G.rw);
    G.rw = NULL;
    return NULL;
}

/* ---------------------------------------------------------------------- */

static void deliver_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_printf(out,
               "# HELP promod_outbox_attempts_total Delivery attempts finished.\n"
               "# TYPE promod_outbox_attempts_total counter\npromod_outbox_attempts_total %ld\n"
               "# HELP promod_outbox_sent_total Messages delivered.\n"
               "# TYPE promod_outbox_sent_total counter\npromod_outbox_sent_total %ld\n"
               "# HELP promod_outbox_dead_total Messages moved to the dead-letter list.\n"
               "# TYPE promod_outbox_dead_total counter\npromod_outbox_dead_total %ld\n",
               (long)g_attempts, (long)g_sent_total, (long)g_dead_total);
    buf_adds(out, "# HELP promod_outbox_in_flight Deliveries in progress by channel.\n"
                  "# TYPE promod_outbox_in_flight gauge\n");
    for (int i = 0; i < MAX_CHANS; i++)
        if (__atomic_load_n(&G.chans[i].used, __ATOMIC_ACQUIRE))
            buf_printf(out, "promod_outbox_in_flight{channel=\"%s\"} %d\n", G.chans[i].name,
                       __atomic_load_n(&G.chans[i].inflight, __ATOMIC_RELAXED));
}

void deliver_set_sink(deliver_sink_fn fn, void *ud)
{
    G.sink = fn;
    G.sink_ud = ud;
}

int deliver_start(struct app *app)
{
    G.app = app;
    G.pend = NULL;
    G.pend_tail = &G.pend;
    G.base = event_base_new();
    if (!G.base)
        return ERR_NOMEM;
    if (pthread_create(&G.thread, NULL, thread_main, NULL)) {
        event_base_free(G.base);
        G.base = NULL;
        return ERR_NOMEM;
    }
    G.started = 1;
    metrics_register(deliver_collector, NULL);
    return 0;
}

void deliver_stop(void)
{
    if (!G.started)
        return;
    event_base_loopexit(G.base, NULL);
    pthread_join(G.thread, NULL);
    G.started = 0;
    event_base_free(G.base);
    G.base = NULL;
    free(G.set);
    G.set = NULL;
    G.setcap = G.setn = 0;
    outbox_release_clear();
}

/* ---------------------------------------------------------------------- */
/* stats (any thread)                                                     */

json_t *deliver_stats(int *rc)
{
    const char *names[MAX_CHANS];
    int idx[MAX_CHANS], n = 0;
    for (int i = 0; i < MAX_CHANS; i++)
        if (__atomic_load_n(&G.chans[i].used, __ATOMIC_ACQUIRE)) {
            idx[n] = i;
            names[n++] = G.chans[i].name;
        }
    json_t *q = outbox_stats(names, n, rc);
    if (!q)
        return NULL;
    json_t *chans = json_object_get(q, "channels");
    const char *name;
    json_t *o;
    json_object_foreach(chans, name, o)
        json_object_set_new(o, "in_flight", json_integer(0));
    long inflight = 0;
    for (int k = 0; k < n; k++) {
        const struct chanstate *cs = &G.chans[idx[k]];
        int nf = __atomic_load_n(&cs->inflight, __ATOMIC_RELAXED);
        inflight += nf;
        o = json_object_get(chans, cs->name);
        json_object_set_new(o, "in_flight", json_integer(nf));
        json_object_set_new(o, "concurrency",
                            json_integer(__atomic_load_n(&cs->concurrency, __ATOMIC_RELAXED)));
        json_object_set_new(o, "rate", json_real(cs->rate));
    }
    /* same shape as ever: "in_flight" after the counters, "timers_pending" last */
    json_t *out = json_object();
    json_t *v;
    json_object_foreach(q, name, v) {
        if (!strcmp(name, "failures"))
            json_object_set_new(out, "in_flight", json_integer(inflight));
        json_object_set(out, name, v);
    }
    json_decref(q);
    long tp = triggers_pending();
    json_object_set_new(out, "timers_pending", json_integer(tp < 0 ? 0 : tp));
    return out;
}
