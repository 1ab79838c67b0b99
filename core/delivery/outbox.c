/*
 * outbox.c — the durable outbound queue and its delivery thread.
 *
 * Why the queue index carries the due time: the drain is a cursor seek to
 * "q<channel>\0" followed by a short walk that stops at the first message
 * not yet due, so a million queued messages cost nothing until they are
 * due, and a retry is just a new index entry further down.
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
 */
#include "delivery/outbox.h"
#include "store/record.h"
#include "base/hash.h"
#include "insight/events.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "engine/decide.h"
#include "base/err.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "base/metrics.h"
#include "delivery/net.h"
#include "engine/rules.h"
#include "delivery/sends.h"
#include "store/store.h"
#include "engine/throttle.h"
#include "delivery/triggers.h"
#include "base/tz.h"
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANS 32
#define MAX_MSG_BYTES (256 * 1024)
#define FLUSH_MAX 512
#define SCAN_EXTRA 2000      /* entries looked at per channel and tick beyond the free slots */
#define PARK_PER_TICK 2000
#define RELEASE_PER_TICK 2000

enum { C_QUEUED, C_DEAD, C_SENT, C_FAILED, C_DROPPED, C_HELD, NCTR };
static const char *ctr_names[NCTR] = { "queued", "dead", "sent", "failed_attempts", "dropped",
                                       "held" };

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
    int from_queue;          /* has a "q" entry to delete */
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

struct release {
    char campaign[136];
    int drop;
    struct release *next;
};

static struct {
    struct app *app;
    pthread_t thread;
    int started;
    struct event_base *base;
    struct event *wake, *tick, *flush_ev;
    struct rules_worker *rw;
    struct net *net;
    struct chanstate chans[MAX_CHANS];
    struct delivery *pend, **pend_tail;
    int npend;
    struct delivery *live;
    uint64_t *set;           /* in-flight ids: open addressing, 0 = empty */
    size_t setcap, setn;
    pthread_mutex_t mu;      /* releases */
    struct release *releases;
    int flush_armed;
    uint64_t rnd;
} G = { .mu = PTHREAD_MUTEX_INITIALIZER };

static _Atomic long g_attempts, g_sent_total, g_dead_total;

/* ---------------------------------------------------------------------- */
/* keys, counters, records                                                */

static size_t key_m(unsigned char *k, uint64_t id)
{
    k[0] = 'm';
    store_be64(id, k + 1);
    return 9;
}

static size_t key_d(unsigned char *k, uint64_t id)
{
    k[0] = 'd';
    store_be64(id, k + 1);
    return 9;
}

static size_t key_q(unsigned char *k, const char *chan, int64_t due_ms, uint64_t id)
{
    size_t n = strlen(chan);
    k[0] = 'q';
    memcpy(k + 1, chan, n);
    k[1 + n] = 0;
    store_be64((uint64_t)(due_ms < 0 ? 0 : due_ms), k + 2 + n);
    store_be64(id, k + 10 + n);
    return 18 + n;
}

static size_t key_p(unsigned char *k, const char *campaign, uint64_t id)
{
    size_t n = strlen(campaign);
    k[0] = 'P';
    memcpy(k + 1, campaign, n);
    k[1 + n] = 0;
    store_be64(id, k + 2 + n);
    return 10 + n;
}

static int ctr_read(struct store_txn *t, char fam, const char *name, int64_t out[NCTR])
{
    unsigned char k[200];
    size_t n = strlen(name);
    memset(out, 0, sizeof(int64_t) * NCTR);
    if (n > 190)
        return ERR_INVAL;
    k[0] = (unsigned char)fam;
    memcpy(k + 1, name, n);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_OUTBOX, k, n + 1, &v, &vl);
    if (rc == 0)
        memcpy(out, v, vl < sizeof(int64_t) * NCTR ? vl : sizeof(int64_t) * NCTR);
    return rc == ERR_NOTFOUND ? 0 : rc;
}

static int ctr_add(struct store_txn *wt, char fam, const char *name, const int64_t d[NCTR])
{
    int64_t cur[NCTR];
    int rc = ctr_read(wt, fam, name, cur);
    if (rc)
        return rc;
    for (int i = 0; i < NCTR; i++) {
        cur[i] += d[i];
        if (cur[i] < 0 && i != C_SENT)
            cur[i] = 0;
    }
    unsigned char k[200];
    size_t n = strlen(name);
    k[0] = (unsigned char)fam;
    memcpy(k + 1, name, n);
    return store_put(wt, STORE_OUTBOX, k, n + 1, cur, sizeof cur);
}

static int reason_add(struct store_txn *wt, const char *reason, int64_t d)
{
    unsigned char k[80];
    size_t n = strlen(reason);
    if (n > 70)
        n = 70;
    k[0] = 'r';
    memcpy(k + 1, reason, n);
    int64_t cur = 0;
    const void *v;
    size_t vl;
    int rc = store_get(wt, STORE_OUTBOX, k, n + 1, &v, &vl);
    if (rc == 0 && vl == sizeof cur)
        memcpy(&cur, v, sizeof cur);
    else if (rc && rc != ERR_NOTFOUND)
        return rc;
    cur += d;
    return store_put(wt, STORE_OUTBOX, k, n + 1, &cur, sizeof cur);
}

/* Per-flush aggregation of counter deltas. */
struct agg {
    char fam;
    char name[136];
    int64_t d[NCTR];
};
struct aggs {
    struct agg *a;
    int n, cap;
};

static void agg_add(struct aggs *s, char fam, const char *name, int ctr, int64_t delta)
{
    if (!name || !*name)
        return;
    for (int i = 0; i < s->n; i++)
        if (s->a[i].fam == fam && !strcmp(s->a[i].name, name)) {
            s->a[i].d[ctr] += delta;
            return;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        struct agg *na = realloc(s->a, sizeof *na * (size_t)cap);
        if (!na)
            return;
        s->a = na;
        s->cap = cap;
    }
    struct agg *x = &s->a[s->n++];
    memset(x, 0, sizeof *x);
    x->fam = fam;
    snprintf(x->name, sizeof x->name, "%s", name);
    x->d[ctr] = delta;
}

static void aggs_free(struct aggs *s)
{
    free(s->a);
    s->a = NULL;
    s->n = s->cap = 0;
}

static int aggs_apply(struct store_txn *wt, struct aggs *s)
{
    int rc = 0;
    for (int i = 0; i < s->n && !rc; i++) {
        if (s->a[i].fam == 'r')
            rc = reason_add(wt, s->a[i].name, s->a[i].d[0]);
        else
            rc = ctr_add(wt, s->a[i].fam, s->a[i].name, s->a[i].d);
    }
    free(s->a);
    s->a = NULL;
    s->n = s->cap = 0;
    return rc;
}

static json_t *rec_get(struct store_txn *t, uint64_t id, int *rc)
{
    unsigned char k[9];
    return record_get(t, STORE_OUTBOX, k, key_m(k, id), rc);
}

static int rec_put(struct store_txn *wt, uint64_t id, const json_t *rec)
{
    unsigned char k[9];
    return record_put(wt, STORE_OUTBOX, k, key_m(k, id), rec);
}

static const char *rec_str(const json_t *rec, const char *f)
{
    const char *s = json_string_value(json_object_get(rec, f));
    return s ? s : "";
}

/* ---------------------------------------------------------------------- */
/* enqueue (any thread, caller's write txn)                               */

int outbox_enqueue_txn(struct store_txn *wt, const struct outbox_msg *m, uint64_t *idout)
{
    if (!m || !m->key || !*m->key || !m->customer || !*m->customer || !m->channel ||
        !*m->channel || strlen(m->channel) > 32 || !m->msg)
        return ERR_INVAL;
    size_t kl = strlen(m->key);
    if (kl > OUTBOX_KEY_MAX || (m->campaign && strlen(m->campaign) > 128))
        return ERR_INVAL;
    unsigned char ik[OUTBOX_KEY_MAX + 1];
    ik[0] = 'o';
    memcpy(ik + 1, m->key, kl);
    const void *v;
    size_t vl;
    int rc = store_get(wt, STORE_IDEM, ik, kl + 1, &v, &vl);
    if (rc == 0)
        return OUTBOX_DUPLICATE;
    if (rc != ERR_NOTFOUND)
        return rc;
    uint64_t id;
    if ((rc = store_seq_next(wt, "outbox", &id)))
        return rc;
    int64_t now_ms = clock_now_ms();
    int64_t due = m->due_ms > 0 ? m->due_ms : now_ms;
    json_t *rec = json_object();
    json_object_set_new(rec, "id", json_integer((json_int_t)id));
    json_object_set_new(rec, "key", json_string(m->key));
    json_object_set_new(rec, "campaign", json_string(m->campaign ? m->campaign : ""));
    json_object_set_new(rec, "customer", json_string(m->customer));
    json_object_set_new(rec, "channel", json_string(m->channel));
    if (m->variant)
        json_object_set_new(rec, "variant", json_string(m->variant));
    if (m->tz && *m->tz)
        json_object_set_new(rec, "tz", json_string(m->tz));
    json_object_set_new(rec, "msg", json_deep_copy(m->msg));
    json_object_set_new(rec, "state", json_string("queued"));
    json_object_set_new(rec, "attempts", json_integer(0));
    json_object_set_new(rec, "due", json_integer(due));
    json_object_set_new(rec, "created", json_integer(now_ms));
    struct buf b = BUF_INIT;
    rc = codec_json_to_msgpack(rec, &b);
    json_decref(rec);
    if (rc == 0 && b.len > MAX_MSG_BYTES)
        rc = ERR_TOOBIG;
    unsigned char k[200];
    if (rc == 0)
        rc = store_put(wt, STORE_OUTBOX, k, key_m(k, id), b.p, b.len);
    buf_free(&b);
    const char *camp = m->campaign ? m->campaign : "";
    if (rc == 0)
        rc = store_put(wt, STORE_OUTBOX, k, key_q(k, m->channel, due, id), camp, strlen(camp));
    unsigned char idv[8];
    store_be64(id, idv);
    if (rc == 0)
        rc = store_put(wt, STORE_IDEM, ik, kl + 1, idv, 8);
    int64_t d[NCTR] = { 0 };
    d[C_QUEUED] = 1;
    if (rc == 0)
        rc = ctr_add(wt, 'n', m->channel, d);
    if (rc == 0 && *camp)
        rc = ctr_add(wt, 'c', camp, d);
    if (rc == 0 && idout)
        *idout = id;
    return rc;
}

int outbox_has_key(struct store_txn *t, const char *key)
{
    size_t kl = strlen(key);
    if (!kl || kl > OUTBOX_KEY_MAX)
        return 0;
    unsigned char ik[OUTBOX_KEY_MAX + 1];
    ik[0] = 'o';
    memcpy(ik + 1, key, kl);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_IDEM, ik, kl + 1, &v, &vl);
    return rc == 0 ? 1 : rc == ERR_NOTFOUND ? 0 : rc;
}

void outbox_wake(void)
{
    struct event *w = __atomic_load_n(&G.wake, __ATOMIC_ACQUIRE);
    if (w)
        event_active(w, EV_TIMEOUT, 0);
}

int64_t outbox_quiet_end(const struct rules_channel *ch, const char *tz, int64_t now)
{
    if (!ch || ch->quiet_from < 0 || !throttle_quiet(ch, tz, now))
        return 0;
    struct tm tm;
    if (tz_local(tz && *tz ? tz : "UTC", now, &tm) && tz_local("UTC", now, &tm))
        return 0;
    int64_t hour0 = now - tm.tm_min * 60 - tm.tm_sec;
    for (int k = 1; k <= 26; k++) {
        int64_t t = hour0 + (int64_t)k * 3600;
        if (!throttle_quiet(ch, tz, t))
            return t;
    }
    return now + 3600;
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

/* Write every pending outcome in one transaction. */
/* The send event of a delivered message. */
static json_t *send_event(const json_t *rec, const char *chan, const char *camp)
{
    json_t *e = json_object();
    json_object_set_new(e, "type", json_string("send"));
    json_object_set_new(e, "customer_id", json_string(rec_str(rec, "customer")));
    json_object_set_new(e, "campaign_id", json_string(camp));
    json_object_set_new(e, "channel", json_string(chan));
    const char *v = rec_str(rec, "variant");
    if (*v)
        json_object_set_new(e, "variant", json_string(v));
    const char *key = rec_str(rec, "key");
    char id[140];
    if (strlen(key) <= 120) {
        snprintf(id, sizeof id, "send:%s", key);
    } else { /* event ids are at most 128 bytes: a long key is hashed */
        size_t n = strlen(key);
        snprintf(id, sizeof id, "send:h%08x%08x", hash_fnv1a(key, n, HASH_FNV_INIT),
                 hash_fnv1a(key, n, 0x01000193u));
    }
    json_object_set_new(e, "event_id", json_string(id));
    return e;
}

static void flush(void)
{
    G.flush_armed = 0;
    if (!G.npend)
        return;
    struct store_txn *wt;
    int rc = store_wtxn_begin(G.app->store, &wt);
    struct aggs ag = { 0 };
    unsigned char k[300];
    int64_t now_ms = clock_now_ms();
    json_t *sends = json_array(); /* delivered messages become send events (ROI, analytics) */
    for (struct delivery *d = G.pend; d && !rc; d = d->next) {
        const char *chan = G.chans[d->cs].name;
        const char *camp = d->campaign ? d->campaign : "";
        if (d->from_queue && d->out != O_NONE) {
            rc = store_del(wt, STORE_OUTBOX, k, key_q(k, chan, d->due_ms, d->id));
            if (rc == ERR_NOTFOUND) {
                /* redriven, released or dropped meanwhile: nothing to record */
                rc = 0;
                continue;
            }
            if (rc)
                break;
        }
        switch (d->out) {
        case O_SENT:
            rc = store_del(wt, STORE_OUTBOX, k, key_m(k, d->id));
            if (rc == ERR_NOTFOUND)
                rc = 0;
            if (*camp)
                json_array_append_new(sends, send_event(d->rec, chan, camp));
            agg_add(&ag, 'n', chan, C_QUEUED, -1);
            agg_add(&ag, 'n', chan, C_SENT, 1);
            agg_add(&ag, 'c', camp, C_QUEUED, -1);
            agg_add(&ag, 'c', camp, C_SENT, 1);
            break;
        case O_RETRY:
        case O_DEFER:
            json_object_set_new(d->rec, "due", json_integer(d->new_due_ms));
            if (d->out == O_RETRY) {
                json_object_set_new(d->rec, "attempts", json_integer(d->attempts + 1));
                json_object_set_new(d->rec, "error", json_string(d->error));
                json_object_set_new(d->rec, "reason", json_string(d->reason));
                agg_add(&ag, 'n', chan, C_FAILED, 1);
                agg_add(&ag, 'c', camp, C_FAILED, 1);
                agg_add(&ag, 'r', d->reason, 0, 1);
            }
            rc = rec_put(wt, d->id, d->rec);
            if (!rc)
                rc = store_put(wt, STORE_OUTBOX, k, key_q(k, chan, d->new_due_ms, d->id), camp,
                               strlen(camp));
            break;
        case O_DEAD:
            json_object_set_new(d->rec, "state", json_string("dead"));
            json_object_set_new(d->rec, "attempts", json_integer(d->attempts + 1));
            json_object_set_new(d->rec, "error", json_string(d->error));
            json_object_set_new(d->rec, "reason", json_string(d->reason));
            json_object_set_new(d->rec, "dead_at", json_integer(now_ms));
            rc = rec_put(wt, d->id, d->rec);
            if (!rc)
                rc = store_put(wt, STORE_OUTBOX, k, key_d(k, d->id), "", 0);
            agg_add(&ag, 'n', chan, C_QUEUED, -1);
            agg_add(&ag, 'n', chan, C_DEAD, 1);
            agg_add(&ag, 'n', chan, C_FAILED, 1);
            agg_add(&ag, 'c', camp, C_QUEUED, -1);
            agg_add(&ag, 'c', camp, C_DEAD, 1);
            agg_add(&ag, 'c', camp, C_FAILED, 1);
            agg_add(&ag, 'r', d->reason, 0, 1);
            break;
        case O_DROP:
            rc = store_del(wt, STORE_OUTBOX, k, key_m(k, d->id));
            if (rc == ERR_NOTFOUND)
                rc = 0;
            agg_add(&ag, 'n', chan, C_QUEUED, -1);
            agg_add(&ag, 'n', chan, C_DROPPED, 1);
            agg_add(&ag, 'c', camp, C_QUEUED, -1);
            agg_add(&ag, 'c', camp, C_DROPPED, 1);
            if (d->reason)
                log_info("outbox message dropped", "id=%llu channel=%s campaign=\"%s\" reason=%s",
                         (unsigned long long)d->id, chan, camp, d->reason);
            break;
        case O_PARK:
            rc = store_put(wt, STORE_OUTBOX, k, key_p(k, camp, d->id), chan, strlen(chan));
            agg_add(&ag, 'n', chan, C_HELD, 1);
            agg_add(&ag, 'c', camp, C_HELD, 1);
            break;
        case O_NONE:
            break;
        }
    }
    if (!rc)
        rc = aggs_apply(wt, &ag);
    else
        aggs_free(&ag);
    if (!rc)
        rc = store_txn_commit(wt, STORE_ASYNC);
    else
        store_txn_end(wt);
    if (rc)
        log_error("outbox: cannot record outcomes (they will be retried)", "n=%d err=\"%s\"",
                  G.npend, err_str(rc));
    if (!rc && json_array_size(sends)) {
        /* after the outcome is durable-enough: the event_id derived from the
         * message key makes a repeat after a crash a duplicate, not a recount */
        struct events_result er = { 0 };
        int erc = events_ingest_json(G.app->store, sends, &er);
        if (erc || er.rejected)
            log_warn("outbox: send events not recorded", "n=%zu rejected=%ld err=\"%s\"",
                     json_array_size(sends), er.rejected, err_str(erc));
        events_result_free(&er);
    }
    json_decref(sends);
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

/* ---------------------------------------------------------------------- */
/* releases (resume / stop of held campaigns)                             */

void outbox_release(const char *campaign, int drop)
{
    struct release *r = calloc(1, sizeof *r);
    if (!r)
        return;
    snprintf(r->campaign, sizeof r->campaign, "%s", campaign);
    r->drop = drop;
    pthread_mutex_lock(&G.mu);
    struct release **p = &G.releases;
    while (*p && strcmp((*p)->campaign, campaign))
        p = &(*p)->next;
    if (*p) {
        (*p)->drop = drop; /* the newest request wins */
        free(r);
    } else {
        *p = r;
    }
    pthread_mutex_unlock(&G.mu);
    outbox_wake();
}

struct held {
    uint64_t id;
    char chan[40];
};
struct held_scan {
    struct held *h;
    int n, max;
    size_t plen;
};

static int held_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct held_scan *s = ud;
    if (s->n >= s->max)
        return 1;
    if (klen != s->plen + 8 || vlen == 0 || vlen >= sizeof s->h[0].chan)
        return 0;
    struct held *h = &s->h[s->n++];
    h->id = store_get_be64((const unsigned char *)key + s->plen);
    memcpy(h->chan, val, vlen);
    h->chan[vlen] = 0;
    return 0;
}

/* One chunk of one release; returns 1 when the campaign has nothing held left. */
static int release_chunk(const struct release *r)
{
    struct store_txn *wt;
    if (store_wtxn_begin(G.app->store, &wt))
        return 0;
    unsigned char prefix[200];
    size_t plen = strlen(r->campaign) + 2;
    prefix[0] = 'P';
    memcpy(prefix + 1, r->campaign, plen - 1); /* includes the NUL */
    struct held_scan hs = { calloc(RELEASE_PER_TICK, sizeof(struct held)), 0, RELEASE_PER_TICK, plen };
    if (!hs.h) {
        store_txn_end(wt);
        return 0;
    }
    int rc = store_scan(wt, STORE_OUTBOX, prefix, plen, NULL, 0, held_cb, &hs);
    struct aggs ag = { 0 };
    int64_t now_ms = clock_now_ms();
    unsigned char k[300];
    for (int i = 0; i < hs.n && !rc; i++) {
        struct held *h = &hs.h[i];
        rc = store_del(wt, STORE_OUTBOX, k, key_p(k, r->campaign, h->id));
        agg_add(&ag, 'n', h->chan, C_HELD, -1);
        agg_add(&ag, 'c', r->campaign, C_HELD, -1);
        if (rc)
            break;
        if (r->drop) {
            rc = store_del(wt, STORE_OUTBOX, k, key_m(k, h->id));
            if (rc == ERR_NOTFOUND)
                rc = 0;
            agg_add(&ag, 'n', h->chan, C_QUEUED, -1);
            agg_add(&ag, 'n', h->chan, C_DROPPED, 1);
            agg_add(&ag, 'c', r->campaign, C_QUEUED, -1);
            agg_add(&ag, 'c', r->campaign, C_DROPPED, 1);
        } else {
            rc = store_put(wt, STORE_OUTBOX, k, key_q(k, h->chan, now_ms, h->id), r->campaign,
                           strlen(r->campaign));
        }
    }
    if (!rc)
        rc = aggs_apply(wt, &ag);
    else
        aggs_free(&ag);
    int done = hs.n < hs.max;
    free(hs.h);
    if (!rc)
        rc = store_txn_commit(wt, STORE_ASYNC);
    else
        store_txn_end(wt);
    if (rc) {
        log_error("outbox: release failed", "campaign=\"%s\" err=\"%s\"", r->campaign, err_str(rc));
        return 0;
    }
    return done;
}

static void process_releases(void)
{
    for (;;) {
        pthread_mutex_lock(&G.mu);
        struct release *r = G.releases;
        struct release copy;
        if (r)
            copy = *r;
        pthread_mutex_unlock(&G.mu);
        if (!r)
            return;
        /* a release for a campaign whose gate says otherwise is stale */
        int gate = sends_gate(copy.campaign);
        int valid = copy.drop ? gate == SENDS_GATE_STOPPED : gate != SENDS_GATE_PAUSED;
        int done = !valid || release_chunk(&copy);
        if (!done)
            return; /* the rest on the next tick */
        pthread_mutex_lock(&G.mu);
        struct release **p = &G.releases;
        while (*p && *p != r)
            p = &(*p)->next;
        if (*p && (*p)->drop == copy.drop) {
            *p = r->next;
            free(r);
        }
        pthread_mutex_unlock(&G.mu);
    }
}

/* ---------------------------------------------------------------------- */
/* the drain                                                              */

struct cand {
    uint64_t id;
    int64_t due_ms;
    char campaign[136];
    int gate;
};

struct qscan {
    int64_t now_ms;
    size_t plen;
    struct cand *c;
    int n, ngo, want, seen, limit, nhold;
};

static int q_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct qscan *s = ud;
    if (klen != s->plen + 16)
        return 0;
    const unsigned char *k = key;
    int64_t due = (int64_t)store_get_be64(k + s->plen);
    uint64_t id = store_get_be64(k + s->plen + 8);
    if (due > s->now_ms)
        return 1;
    if (++s->seen > s->limit)
        return 1;
    if (set_has(id))
        return 0;
    char camp[136];
    size_t n = vlen < sizeof camp - 1 ? vlen : sizeof camp - 1;
    memcpy(camp, val, n);
    camp[n] = 0;
    int gate = *camp ? sends_gate(camp) : SENDS_GATE_NONE;
    int held = gate == SENDS_GATE_PAUSED || gate == SENDS_GATE_STOPPED;
    if (held && s->nhold >= PARK_PER_TICK)
        return 0;
    struct cand *c = &s->c[s->n++];
    c->id = id;
    c->due_ms = due;
    c->gate = gate;
    memcpy(c->campaign, camp, n + 1);
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
    d->from_queue = 1;
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
    lua_getfield(L, -1, "deliver");
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
    struct qscan s = { .now_ms = now_ms, .want = want, .limit = want + inflight + SCAN_EXTRA };
    s.c = malloc(sizeof *s.c * (size_t)(want + PARK_PER_TICK));
    if (!s.c)
        return;
    unsigned char prefix[64];
    size_t nl = strlen(ch->name);
    prefix[0] = 'q';
    memcpy(prefix + 1, ch->name, nl + 1);
    s.plen = nl + 2;
    struct store_txn *t;
    if (store_rtxn_begin(G.app->store, &t)) {
        free(s.c);
        return;
    }
    store_scan(t, STORE_OUTBOX, prefix, s.plen, NULL, 0, q_cb, &s);
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
        d->rec = rec_get(t, c->id, &rc);
        if (!d->rec) {
            /* an index entry without its record: drop the entry */
            d->out = O_DROP;
            d->reason = "record_missing";
            pend_push(d);
            continue;
        }
        d->attempts = (int)json_integer_value(json_object_get(d->rec, "attempts"));
        const char *tz = rec_str(d->rec, "tz");
        int64_t qend = outbox_quiet_end(ch, tz, now);
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
    __atomic_store_n(&G.wake, wake, __ATOMIC_RELEASE);
    dispatch();
    event_base_dispatch(G.base);

    __atomic_store_n(&G.wake, NULL, __ATOMIC_RELEASE);
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

static void outbox_collector(struct buf *out, void *ud)
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

int outbox_init(struct app *app)
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
    metrics_register(outbox_collector, NULL);
    return 0;
}

void outbox_shutdown(void)
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
    while (G.releases) {
        struct release *r = G.releases;
        G.releases = r->next;
        free(r);
    }
}

/* ---------------------------------------------------------------------- */
/* stats, dead letters, redrive (any thread)                              */

static json_t *ctr_json(const int64_t c[NCTR])
{
    json_t *o = json_object();
    for (int i = 0; i < NCTR; i++)
        json_object_set_new(o, ctr_names[i], json_integer(c[i]));
    return o;
}

struct stat_scan {
    json_t *chans, *reasons;
    int64_t tot[NCTR];
};

static int stat_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct stat_scan *s = ud;
    const char *k = key;
    if (klen < 2 || klen > 200)
        return 0;
    char name[200];
    memcpy(name, k + 1, klen - 1);
    name[klen - 1] = 0;
    if (k[0] == 'n') {
        int64_t c[NCTR] = { 0 };
        memcpy(c, val, vlen < sizeof c ? vlen : sizeof c);
        for (int i = 0; i < NCTR; i++)
            s->tot[i] += c[i];
        json_t *o = ctr_json(c);
        json_object_set_new(o, "in_flight", json_integer(0));
        json_object_set_new(s->chans, name, o);
    } else if (k[0] == 'r' && vlen == 8) {
        int64_t n;
        memcpy(&n, val, 8);
        json_object_set_new(s->reasons, name, json_integer(n));
    }
    return 0;
}

json_t *outbox_stats(int *rc)
{
    struct store_txn *t;
    if ((*rc = store_rtxn_begin(g_app->store, &t)))
        return NULL;
    struct stat_scan s = { json_object(), json_object(), { 0 } };
    *rc = store_scan(t, STORE_OUTBOX, "n", 1, NULL, 0, stat_cb, &s);
    if (!*rc)
        *rc = store_scan(t, STORE_OUTBOX, "r", 1, NULL, 0, stat_cb, &s);
    store_txn_end(t);
    if (*rc) {
        json_decref(s.chans);
        json_decref(s.reasons);
        return NULL;
    }
    long inflight = 0;
    for (int i = 0; i < MAX_CHANS; i++) {
        if (!__atomic_load_n(&G.chans[i].used, __ATOMIC_ACQUIRE))
            continue;
        int n = __atomic_load_n(&G.chans[i].inflight, __ATOMIC_RELAXED);
        inflight += n;
        json_t *o = json_object_get(s.chans, G.chans[i].name);
        if (!o) {
            int64_t z[NCTR] = { 0 };
            o = ctr_json(z);
            json_object_set_new(s.chans, G.chans[i].name, o);
        }
        json_object_set_new(o, "in_flight", json_integer(n));
        json_object_set_new(o, "concurrency",
                            json_integer(__atomic_load_n(&G.chans[i].concurrency, __ATOMIC_RELAXED)));
        json_object_set_new(o, "rate", json_real(G.chans[i].rate));
    }
    json_t *out = ctr_json(s.tot);
    json_object_set_new(out, "in_flight", json_integer(inflight));
    json_object_set_new(out, "failures", s.reasons);
    json_object_set_new(out, "channels", s.chans);
    long tp = triggers_pending();
    json_object_set_new(out, "timers_pending", json_integer(tp < 0 ? 0 : tp));
    return out;
}

json_t *outbox_campaign_counts(const char *campaign, int *rc)
{
    struct store_txn *t;
    if ((*rc = store_rtxn_begin(g_app->store, &t)))
        return NULL;
    int64_t c[NCTR];
    *rc = ctr_read(t, 'c', campaign, c);
    store_txn_end(t);
    return *rc ? NULL : ctr_json(c);
}

#define DEAD_PAGE_BYTES (4u << 20) /* a page of dead letters stops growing here */

struct dead_scan {
    struct store_txn *t;
    const char *channel, *campaign;
    json_t *items;
    int limit, scanned;
    uint64_t last;
    int more;
    size_t bytes;
};

static json_t *dead_item(const json_t *rec)
{
    json_t *o = json_object();
    static const char *f[] = { "id", "key", "campaign", "customer", "channel", "variant",
                               "attempts", "reason", "error", "created", "dead_at", "msg" };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        json_t *v = json_object_get(rec, f[i]);
        if (v)
            json_object_set(o, f[i], v);
    }
    return o;
}

static int dead_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct dead_scan *s = ud;
    if (klen != 9)
        return 0;
    uint64_t id = store_get_be64((const unsigned char *)key + 1);
    if ((int)json_array_size(s->items) >= s->limit) {
        s->more = 1;
        return 1;
    }
    if (++s->scanned > 200000) {
        s->more = 1;
        return 1;
    }
    unsigned char mk[9];
    const void *mv;
    size_t ml = 0;
    if (store_get(s->t, STORE_OUTBOX, mk, key_m(mk, id), &mv, &ml) == 0 && json_array_size(s->items) &&
        s->bytes + ml > DEAD_PAGE_BYTES) {
        s->more = 1;
        return 1;
    }
    s->last = id;
    int rc;
    json_t *rec = rec_get(s->t, id, &rc);
    if (!rec)
        return 0;
    if ((!s->channel || !strcmp(rec_str(rec, "channel"), s->channel)) &&
        (!s->campaign || !strcmp(rec_str(rec, "campaign"), s->campaign))) {
        json_array_append_new(s->items, dead_item(rec));
        s->bytes += ml;
    }
    json_decref(rec);
    return 0;
}

json_t *outbox_dead_list(const char *channel, const char *campaign, uint64_t after, int limit,
                         int *rc)
{
    struct store_txn *t;
    if ((*rc = store_rtxn_begin(g_app->store, &t)))
        return NULL;
    struct dead_scan s = { t, channel, campaign, json_array(), limit, 0, 0, 0, 0 };
    unsigned char start[9];
    size_t sl = 0;
    if (after) {
        key_d(start, after + 1);
        sl = 9;
    }
    *rc = store_scan(t, STORE_OUTBOX, "d", 1, sl ? start : NULL, sl, dead_cb, &s);
    store_txn_end(t);
    if (*rc) {
        json_decref(s.items);
        return NULL;
    }
    json_t *out = json_object();
    json_object_set_new(out, "items", s.items);
    json_object_set_new(out, "next_after", s.more ? json_integer((json_int_t)s.last) : json_null());
    return out;
}

struct id_scan {
    uint64_t *ids;
    int n, max;
};

static int id_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct id_scan *s = ud;
    if (s->n >= s->max)
        return 1;
    if (klen == 9)
        s->ids[s->n++] = store_get_be64((const unsigned char *)key + 1);
    return 0;
}

long outbox_redrive(const json_t *ids, const char *channel, const char *campaign, long limit,
                    json_t **missing)
{
    if (missing)
        *missing = json_array();
    struct store_txn *wt;
    int rc = store_wtxn_begin(g_app->store, &wt);
    if (rc)
        return rc;
    struct id_scan s = { NULL, 0, 0 };
    if (ids) {
        s.max = (int)json_array_size(ids);
        s.ids = calloc((size_t)s.max + 1, sizeof *s.ids);
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v)
            s.ids[s.n++] = (uint64_t)json_integer_value(v);
    } else {
        /* filters are applied per record below, so scan a bounded window */
        s.max = (int)(limit > 0 && limit < 100000 ? limit : 100000);
        if (channel || campaign)
            s.max = 100000;
        s.ids = calloc((size_t)s.max + 1, sizeof *s.ids);
        if (s.ids)
            rc = store_scan(wt, STORE_OUTBOX, "d", 1, NULL, 0, id_cb, &s);
    }
    if (!s.ids) {
        store_txn_end(wt);
        return ERR_NOMEM;
    }
    long n = 0;
    struct aggs ag = { 0 };
    int64_t now_ms = clock_now_ms();
    unsigned char k[300];
    for (int i = 0; i < s.n && !rc && (limit <= 0 || n < limit); i++) {
        uint64_t id = s.ids[i];
        const void *v;
        size_t vl;
        int grc;
        json_t *rec = NULL;
        if (store_get(wt, STORE_OUTBOX, k, key_d(k, id), &v, &vl) == 0)
            rec = rec_get(wt, id, &grc);
        if (!rec) {
            if (missing)
                json_array_append_new(*missing, json_integer((json_int_t)id));
            continue;
        }
        const char *chan = rec_str(rec, "channel"), *camp = rec_str(rec, "campaign");
        if ((channel && strcmp(chan, channel)) || (campaign && strcmp(camp, campaign))) {
            json_decref(rec);
            continue;
        }
        json_object_set_new(rec, "state", json_string("queued"));
        json_object_set_new(rec, "attempts", json_integer(0));
        json_object_set_new(rec, "due", json_integer(now_ms));
        json_object_set_new(rec, "redriven_at", json_integer(now_ms));
        json_object_del(rec, "dead_at");
        rc = rec_put(wt, id, rec);
        if (!rc)
            rc = store_del(wt, STORE_OUTBOX, k, key_d(k, id));
        if (!rc)
            rc = store_put(wt, STORE_OUTBOX, k, key_q(k, chan, now_ms, id), camp, strlen(camp));
        agg_add(&ag, 'n', chan, C_DEAD, -1);
        agg_add(&ag, 'n', chan, C_QUEUED, 1);
        agg_add(&ag, 'c', camp, C_DEAD, -1);
        agg_add(&ag, 'c', camp, C_QUEUED, 1);
        json_decref(rec);
        n++;
    }
    free(s.ids);
    if (!rc)
        rc = aggs_apply(wt, &ag);
    else
        aggs_free(&ag);
    if (!rc)
        rc = store_txn_commit(wt, STORE_DURABLE);
    else
        store_txn_end(wt);
    if (rc)
        return rc;
    if (n)
        outbox_wake();
    return n;
}

/* ---------------------------------------------------------------------- */
/* privacy                                                                */

struct erase_scan {
    struct store_txn *t;
    const char *customer;
    uint64_t *ids;
    size_t n, cap;
    int err;
};

static int erase_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct erase_scan *s = ud;
    if (klen != 9)
        return 0;
    uint64_t id = store_get_be64((const unsigned char *)key + 1);
    int rc;
    json_t *rec = rec_get(s->t, id, &rc);
    if (!rec)
        return 0;
    int mine = !strcmp(rec_str(rec, "customer"), s->customer);
    json_decref(rec);
    if (!mine)
        return 0;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        uint64_t *p = realloc(s->ids, nc * sizeof *p);
        if (!p) {
            s->err = ERR_NOMEM;
            return ERR_NOMEM;
        }
        s->ids = p;
        s->cap = nc;
    }
    s->ids[s->n++] = id;
    return 0;
}

long outbox_erase_customer_txn(struct store_txn *wt, const char *customer)
{
    /* Queued messages are dropped by the delivery thread once the profile
     * is gone; dead letters would keep the rendered message (email address,
     * name...) forever, so they go here. */
    struct erase_scan s = { wt, customer, NULL, 0, 0, 0 };
    int rc = store_scan(wt, STORE_OUTBOX, "d", 1, NULL, 0, erase_cb, &s);
    if (rc || s.err) {
        free(s.ids);
        return rc ? rc : s.err;
    }
    long removed = 0;
    for (size_t i = 0; i < s.n; i++) {
        int grc;
        json_t *rec = rec_get(wt, s.ids[i], &grc);
        unsigned char k[9];
        int64_t d[NCTR] = { 0 };
        d[C_DEAD] = -1;
        if (rec) {
            const char *ch = rec_str(rec, "channel"), *camp = rec_str(rec, "campaign");
            if (*ch && (rc = ctr_add(wt, 'n', ch, d)))
                break;
            if (*camp && (rc = ctr_add(wt, 'c', camp, d)))
                break;
            json_decref(rec);
            rec = NULL;
        }
        if ((rc = store_del(wt, STORE_OUTBOX, k, key_m(k, s.ids[i]))) && rc != ERR_NOTFOUND)
            break;
        if ((rc = store_del(wt, STORE_OUTBOX, k, key_d(k, s.ids[i]))) && rc != ERR_NOTFOUND)
            break;
        rc = 0;
        removed += 2;
    }
    free(s.ids);
    return rc ? rc : removed;
}
