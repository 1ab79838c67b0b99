/*
 * triggers.c — timers for triggered campaigns (see triggers.h).
 *
 * Why two keys per timer: the delivery thread finds due timers by a seek
 * on "T" + due time, and a cancelling event finds a customer's pending
 * timers by a seek on "C" + customer; both are deleted together.
 *
 * Why evaluation happens before the write transaction and the timer is
 * re-checked inside it: hooks run in Lua, which must not hold the single
 * writer; a cancelling event that committed meanwhile deleted the timer,
 * and then nothing is sent.
 */
#include "delivery/triggers.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/log.h"
#include "delivery/outbox.h"
#include "engine/rules.h"
#include "delivery/sends.h"
#include "store/store.h"
#include "base/tz.h"
#include <stdlib.h>
#include <string.h>

#define CUST_MAX 128
#define STALE_SECS 3600 /* a timer due longer ago than this is not created */

static size_t key_tm(unsigned char *k, int64_t due, uint64_t seq)
{
    k[0] = 'T';
    store_be64((uint64_t)(due < 0 ? 0 : due), k + 1);
    store_be64(seq, k + 9);
    return 17;
}

/* "C" customer \0 campaign \0 [seq] */
static size_t key_c(unsigned char *k, const char *cust, const char *camp, const uint64_t *seq)
{
    size_t a = strlen(cust), b = strlen(camp);
    k[0] = 'C';
    memcpy(k + 1, cust, a + 1);
    memcpy(k + 2 + a, camp, b + 1);
    size_t n = 3 + a + b;
    if (seq) {
        store_be64(*seq, k + n);
        n += 8;
    }
    return n;
}

struct pend_scan {
    uint64_t seq[64];
    int64_t due[64];
    int n;
    size_t plen;
};

static int pend_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct pend_scan *s = ud;
    if (klen != s->plen + 8 || vlen != 8)
        return 0;
    s->seq[s->n] = store_get_be64((const unsigned char *)key + s->plen);
    s->due[s->n] = (int64_t)store_get_be64(val);
    return ++s->n >= 64 ? 1 : 0;
}

static int64_t event_ts(const json_t *ev, int64_t now)
{
    json_t *ts = json_object_get(ev, "ts");
    if (json_is_integer(ts) && json_integer_value(ts) > 0)
        return json_integer_value(ts);
    if (json_is_real(ts) && json_real_value(ts) > 0)
        return (int64_t)json_real_value(ts);
    int64_t t;
    if (json_is_string(ts) && tz_parse_iso8601(json_string_value(ts), &t) == 0)
        return t;
    return now;
}

int triggers_on_event(struct store_txn *t, const json_t *event)
{
    const char *type = json_string_value(json_object_get(event, "type"));
    const char *cust = json_string_value(json_object_get(event, "customer_id"));
    if (!type || !cust || !*cust || strlen(cust) > CUST_MAX)
        return 0;
    struct rules_gen *g = rules_gen_acquire();
    if (!g)
        return 0;
    int n = 0, rc = 0;
    int64_t now = clock_now();
    for (int i = 0; i < g->ncamps && rc >= 0; i++) {
        const struct rules_campaign *c = &g->camps[i];
        if (!c->trigger)
            continue;
        const char *on = json_string_value(json_object_get(c->trigger, "event"));
        const char *cancel = json_string_value(json_object_get(c->trigger, "cancel_on"));
        int fires = on && !strcmp(on, type), cancels = cancel && !strcmp(cancel, type);
        if (!fires && !cancels)
            continue;
        unsigned char pk[300];
        struct pend_scan ps = { .n = 0 };
        ps.plen = key_c(pk, cust, c->id, NULL);
        rc = store_scan(t, STORE_TIMERS, pk, ps.plen, NULL, 0, pend_cb, &ps);
        if (rc)
            break;
        if (cancels) {
            for (int j = 0; j < ps.n && !rc; j++) {
                unsigned char k[300];
                rc = store_del(t, STORE_TIMERS, k, key_tm(k, ps.due[j], ps.seq[j]));
                if (rc == ERR_NOTFOUND)
                    rc = 0;
                if (!rc)
                    rc = store_del(t, STORE_TIMERS, k, key_c(k, cust, c->id, &ps.seq[j]));
                if (rc == ERR_NOTFOUND)
                    rc = 0;
                n++;
            }
            if (ps.n)
                log_debug("trigger cancelled", "campaign=\"%s\" customer=\"%s\" by=%s", c->id, cust,
                          type);
            ps.n = 0;
            if (!fires)
                continue;
        }
        /* fire only for a launched campaign; one pending timer per customer */
        if (ps.n || c->status != CAMP_ACTIVE || sends_gate(c->id) != SENDS_GATE_OPEN)
            continue;
        int64_t delay = 0;
        const char *ds = json_string_value(json_object_get(c->trigger, "delay"));
        if (ds && tz_parse_duration(ds, &delay))
            delay = 0;
        int64_t due = event_ts(event, now) + delay;
        if (due < now - STALE_SECS)
            continue; /* a backfilled event: its moment has passed */
        uint64_t seq;
        if ((rc = store_seq_next(t, "timers", &seq)))
            break;
        json_t *rec = json_object();
        json_object_set_new(rec, "campaign", json_string(c->id));
        json_object_set_new(rec, "customer", json_string(cust));
        json_object_set_new(rec, "event", json_string(type));
        json_object_set_new(rec, "at", json_integer(now));
        struct buf b = BUF_INIT;
        rc = codec_json_to_msgpack(rec, &b);
        json_decref(rec);
        unsigned char k[300], dv[8];
        if (!rc)
            rc = store_put(t, STORE_TIMERS, k, key_tm(k, due, seq), b.p, b.len);
        buf_free(&b);
        store_be64((uint64_t)due, dv);
        if (!rc)
            rc = store_put(t, STORE_TIMERS, k, key_c(k, cust, c->id, &seq), dv, 8);
        if (!rc)
            n++;
    }
    rules_gen_release(g);
    return rc ? rc : n;
}

/* ---------------------------------------------------------------------- */
/* firing (delivery thread)                                               */

struct timer {
    int64_t due;
    uint64_t seq;
    char campaign[136];
    char cust[CUST_MAX + 8];
    int camp;                /* index in the generation, -1 = drop */
    struct sends_item items[32];
    int chans[32];
    int nitems;
    const char *skip[32];
    int nskip;
};

struct due_scan {
    int64_t now;
    struct timer *t;
    int n, max;
};

static int due_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct due_scan *s = ud;
    if (klen != 17)
        return 0;
    int64_t due = (int64_t)store_get_be64((const unsigned char *)key + 1);
    if (due > s->now || s->n >= s->max)
        return 1;
    struct timer *t = &s->t[s->n];
    memset(t, 0, sizeof *t);
    t->due = due;
    t->seq = store_get_be64((const unsigned char *)key + 9);
    int e;
    json_t *rec = codec_msgpack_to_json(val, vlen, &e);
    snprintf(t->campaign, sizeof t->campaign, "%s",
             json_string_value(json_object_get(rec, "campaign")) ?: "");
    snprintf(t->cust, sizeof t->cust, "%s", json_string_value(json_object_get(rec, "customer")) ?: "");
    json_decref(rec);
    s->n++;
    return 0;
}

static int peek_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    int64_t *now = ud;
    if (klen == 17 && (int64_t)store_get_be64((const unsigned char *)key + 1) <= *now)
        *now = -1;
    return 1;
}

int triggers_fire_due(struct rules_worker *rw, int64_t now, int max)
{
    struct store *st = g_app->store;
    struct store_txn *rt;
    int rc = store_rtxn_begin(st, &rt);
    if (rc)
        return rc;
    int64_t peek = now;
    rc = store_scan(rt, STORE_TIMERS, "T", 1, NULL, 0, peek_cb, &peek);
    if (rc || peek != -1) { /* nothing due: the common case costs one seek */
        store_txn_end(rt);
        return rc;
    }
    struct due_scan ds = { now, calloc((size_t)max, sizeof(struct timer)), 0, max };
    if (!ds.t) {
        store_txn_end(rt);
        return ERR_NOMEM;
    }
    rc = store_scan(rt, STORE_TIMERS, "T", 1, NULL, 0, due_cb, &ds);
    if (rc || !ds.n) {
        store_txn_end(rt);
        free(ds.t);
        return rc;
    }
    const struct rules_gen *g = rw->gen;
    for (int i = 0; i < ds.n; i++) {
        struct timer *t = &ds.t[i];
        t->camp = g ? rules_gen_find_campaign(g, t->campaign) : -1;
        int gate = sends_gate(t->campaign);
        if (t->camp < 0 || !g->camps[t->camp].trigger || gate == SENDS_GATE_NONE ||
            gate == SENDS_GATE_STOPPED) {
            t->camp = -1;
            continue;
        }
        const struct rules_campaign *c = &g->camps[t->camp];
        const void *pv = NULL, *sv = NULL;
        size_t pl = 0, sl = 0;
        if (store_get(rt, STORE_PROFILES, t->cust, strlen(t->cust), &pv, &pl))
            pv = NULL;
        if (store_get(rt, STORE_PSTATS, t->cust, strlen(t->cust), &sv, &sl))
            sv = NULL;
        for (int ch = 0; ch < g->nchans; ch++) {
            if (!(c->channels & (1u << ch)) || !g->chans[ch].outbound)
                continue;
            const char *why;
            struct sends_item *it = &t->items[t->nitems];
            if (sends_eval(rw, g, t->camp, ch, rt, t->cust, pv, pl, sv, sl, now, it, &why) == 0) {
                t->chans[t->nitems++] = ch;
            } else {
                t->skip[t->nskip++] = why;
                if (it->error[0])
                    log_warn("triggered send skipped", "campaign=\"%s\" customer=\"%s\" error=\"%s\"",
                             t->campaign, t->cust, it->error);
            }
        }
    }
    store_txn_end(rt);

    struct store_txn *wt = NULL;
    rc = store_wtxn_begin(st, &wt);
    int consumed = 0;
    for (int i = 0; i < ds.n && !rc; i++) {
        struct timer *t = &ds.t[i];
        unsigned char k[300];
        rc = store_del(wt, STORE_TIMERS, k, key_tm(k, t->due, t->seq));
        if (rc == ERR_NOTFOUND) { /* cancelled meanwhile */
            rc = 0;
            continue;
        }
        if (!rc)
            rc = store_del(wt, STORE_TIMERS, k, key_c(k, t->cust, t->campaign, &t->seq));
        if (rc == ERR_NOTFOUND)
            rc = 0;
        consumed++;
        if (t->camp < 0) {
            log_info("trigger dropped: campaign not launched or stopped", "campaign=\"%s\" customer=\"%s\"",
                     t->campaign, t->cust);
            continue;
        }
        for (int j = 0; j < t->nskip && !rc; j++)
            rc = sends_count_txn(wt, t->campaign, t->skip[j]);
        for (int j = 0; j < t->nitems && !rc; j++) {
            char key[OUTBOX_KEY_MAX + 1];
            snprintf(key, sizeof key, "trig:%s:%s:%s:%llu", t->campaign, g->chans[t->chans[j]].name,
                     t->cust, (unsigned long long)t->seq);
            const char *why = NULL;
            rc = sends_put(wt, g, t->camp, t->chans[j], t->cust, &t->items[j], key, now, &why);
            if (!rc)
                rc = sends_count_txn(wt, t->campaign, why);
        }
    }
    if (!rc)
        rc = store_txn_commit(wt, STORE_DURABLE);
    else if (wt)
        store_txn_end(wt);
    for (int i = 0; i < ds.n; i++)
        for (int j = 0; j < ds.t[i].nitems; j++)
            json_decref(ds.t[i].items[j].msg);
    free(ds.t);
    return rc ? rc : consumed;
}

static int count_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    return ++*(long *)ud >= 10000000 ? 1 : 0;
}

long triggers_pending(void)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc)
        return rc;
    long n = 0;
    rc = store_scan(t, STORE_TIMERS, "T", 1, NULL, 0, count_cb, &n);
    store_txn_end(t);
    return rc ? rc : n;
}
