/*
 * outbox.c — the durable outbound queue (see outbox.h); the delivery
 * thread that drains it is deliver.c.
 *
 * Why the queue index carries the due time: the drain is a cursor seek to
 * "q<channel>\0" followed by a short walk that stops at the first message
 * not yet due, so a million queued messages cost nothing until they are
 * due, and a retry is just a new index entry further down.
 *
 * Why outcomes come in batches: a commit per delivery would cap the drain
 * at the store's commit rate; the delivery thread collects outcomes and
 * writes them together (outbox_batch_*), with the counter changes of the
 * whole batch summed per channel, campaign and reason first.
 */
#include "delivery/outbox.h"
#include "store/record.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/log.h"
#include "store/store.h"
#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MSG_BYTES (256 * 1024)
#define RELEASE_PER_TICK 2000

enum { C_QUEUED, C_DEAD, C_SENT, C_FAILED, C_DROPPED, C_HELD, NCTR };
static const char *ctr_names[NCTR] = { "queued", "dead", "sent", "failed_attempts", "dropped",
                                       "held" };

struct release {
    char campaign[OUTBOX_CAMPAIGN_MAX + 8];
    int drop;
    struct release *next;
};

static struct {
    struct event *wake;      /* the delivery thread's, or NULL */
    pthread_mutex_t mu;      /* releases */
    struct release *releases;
} Q = { .mu = PTHREAD_MUTEX_INITIALIZER };

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

static json_t *msg_get(struct store_txn *t, uint64_t id, int *rc)
{
    unsigned char k[9];
    return record_get(t, STORE_OUTBOX, k, key_m(k, id), rc);
}

static int msg_put(struct store_txn *wt, uint64_t id, const json_t *rec)
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
    struct event *w = __atomic_load_n(&Q.wake, __ATOMIC_ACQUIRE);
    if (w)
        event_active(w, EV_TIMEOUT, 0);
}

void outbox_set_wake(struct event *ev)
{
    __atomic_store_n(&Q.wake, ev, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------------- */
/* the delivery thread's side: due entries, records, outcomes             */

struct due_scan {
    int64_t now_ms;
    size_t plen;
    outbox_due_fn fn;
    void *ud;
};

static int due_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct due_scan *s = ud;
    if (klen != s->plen + 16)
        return 0;
    const unsigned char *k = key;
    int64_t due = (int64_t)store_get_be64(k + s->plen);
    if (due > s->now_ms)
        return 1;
    char camp[OUTBOX_CAMPAIGN_MAX + 8];
    size_t n = vlen < sizeof camp - 1 ? vlen : sizeof camp - 1;
    memcpy(camp, val, n);
    camp[n] = 0;
    struct outbox_due d = { store_get_be64(k + s->plen + 8), due, camp };
    return s->fn(s->ud, &d);
}

int outbox_due_scan(struct store_txn *t, const char *channel, int64_t now_ms, outbox_due_fn fn,
                    void *ud)
{
    size_t nl = strlen(channel);
    if (nl > OUTBOX_CHANNEL_MAX)
        return ERR_INVAL;
    unsigned char prefix[OUTBOX_CHANNEL_MAX + 2];
    prefix[0] = 'q';
    memcpy(prefix + 1, channel, nl + 1);
    struct due_scan s = { now_ms, nl + 2, fn, ud };
    return store_scan(t, STORE_OUTBOX, prefix, s.plen, NULL, 0, due_cb, &s);
}

json_t *outbox_get(struct store_txn *t, uint64_t id, int *rc)
{
    return msg_get(t, id, rc);
}

struct outbox_batch {
    struct store_txn *wt;
    struct aggs ag;
    int64_t now_ms;
};

int outbox_batch_begin(struct outbox_batch **out)
{
    struct outbox_batch *b = calloc(1, sizeof *b);
    if (!b)
        return ERR_NOMEM;
    int rc = store_wtxn_begin(g_app->store, &b->wt);
    if (rc) {
        free(b);
        return rc;
    }
    b->now_ms = clock_now_ms();
    *out = b;
    return 0;
}

int outbox_batch_add(struct outbox_batch *b, const struct outbox_outcome *o)
{
    struct store_txn *wt = b->wt;
    struct aggs *ag = &b->ag;
    unsigned char k[300];
    const char *chan = o->channel, *camp = o->campaign ? o->campaign : "";
    int rc = store_del(wt, STORE_OUTBOX, k, key_q(k, chan, o->due_ms, o->id));
    if (rc == ERR_NOTFOUND) /* redriven, released or dropped meanwhile: nothing to record */
        return OUTBOX_GONE;
    if (rc)
        return rc;
    switch (o->fate) {
    case OUTBOX_SENT:
        rc = store_del(wt, STORE_OUTBOX, k, key_m(k, o->id));
        if (rc == ERR_NOTFOUND)
            rc = 0;
        agg_add(ag, 'n', chan, C_QUEUED, -1);
        agg_add(ag, 'n', chan, C_SENT, 1);
        agg_add(ag, 'c', camp, C_QUEUED, -1);
        agg_add(ag, 'c', camp, C_SENT, 1);
        break;
    case OUTBOX_RETRY:
    case OUTBOX_DEFER:
        json_object_set_new(o->rec, "due", json_integer(o->new_due_ms));
        if (o->fate == OUTBOX_RETRY) {
            json_object_set_new(o->rec, "attempts", json_integer(o->attempts + 1));
            json_object_set_new(o->rec, "error", json_string(o->error));
            json_object_set_new(o->rec, "reason", json_string(o->reason));
            agg_add(ag, 'n', chan, C_FAILED, 1);
            agg_add(ag, 'c', camp, C_FAILED, 1);
            agg_add(ag, 'r', o->reason, 0, 1);
        }
        rc = msg_put(wt, o->id, o->rec);
        if (!rc)
            rc = store_put(wt, STORE_OUTBOX, k, key_q(k, chan, o->new_due_ms, o->id), camp,
                           strlen(camp));
        break;
    case OUTBOX_DEAD:
        json_object_set_new(o->rec, "state", json_string("dead"));
        json_object_set_new(o->rec, "attempts", json_integer(o->attempts + 1));
        json_object_set_new(o->rec, "error", json_string(o->error));
        json_object_set_new(o->rec, "reason", json_string(o->reason));
        json_object_set_new(o->rec, "dead_at", json_integer(b->now_ms));
        rc = msg_put(wt, o->id, o->rec);
        if (!rc)
            rc = store_put(wt, STORE_OUTBOX, k, key_d(k, o->id), "", 0);
        agg_add(ag, 'n', chan, C_QUEUED, -1);
        agg_add(ag, 'n', chan, C_DEAD, 1);
        agg_add(ag, 'n', chan, C_FAILED, 1);
        agg_add(ag, 'c', camp, C_QUEUED, -1);
        agg_add(ag, 'c', camp, C_DEAD, 1);
        agg_add(ag, 'c', camp, C_FAILED, 1);
        agg_add(ag, 'r', o->reason, 0, 1);
        break;
    case OUTBOX_DROP:
        rc = store_del(wt, STORE_OUTBOX, k, key_m(k, o->id));
        if (rc == ERR_NOTFOUND)
            rc = 0;
        agg_add(ag, 'n', chan, C_QUEUED, -1);
        agg_add(ag, 'n', chan, C_DROPPED, 1);
        agg_add(ag, 'c', camp, C_QUEUED, -1);
        agg_add(ag, 'c', camp, C_DROPPED, 1);
        if (o->reason)
            log_info("outbox message dropped", "id=%llu channel=%s campaign=\"%s\" reason=%s",
                     (unsigned long long)o->id, chan, camp, o->reason);
        break;
    case OUTBOX_PARK:
        rc = store_put(wt, STORE_OUTBOX, k, key_p(k, camp, o->id), chan, strlen(chan));
        agg_add(ag, 'n', chan, C_HELD, 1);
        agg_add(ag, 'c', camp, C_HELD, 1);
        break;
    }
    return rc;
}

int outbox_batch_commit(struct outbox_batch *b)
{
    int rc = aggs_apply(b->wt, &b->ag);
    if (!rc)
        rc = store_txn_commit(b->wt, STORE_ASYNC);
    else
        store_txn_end(b->wt);
    free(b);
    return rc;
}

void outbox_batch_abort(struct outbox_batch *b)
{
    aggs_free(&b->ag);
    store_txn_end(b->wt);
    free(b);
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
    pthread_mutex_lock(&Q.mu);
    struct release **p = &Q.releases;
    while (*p && strcmp((*p)->campaign, campaign))
        p = &(*p)->next;
    if (*p) {
        (*p)->drop = drop; /* the newest request wins */
        free(r);
    } else {
        *p = r;
    }
    pthread_mutex_unlock(&Q.mu);
    outbox_wake();
}

int outbox_release_peek(char *campaign, int *drop)
{
    pthread_mutex_lock(&Q.mu);
    struct release *r = Q.releases;
    if (r) {
        memcpy(campaign, r->campaign, sizeof r->campaign);
        *drop = r->drop;
    }
    pthread_mutex_unlock(&Q.mu);
    return r != NULL;
}

void outbox_release_done(const char *campaign, int drop)
{
    pthread_mutex_lock(&Q.mu);
    struct release **p = &Q.releases;
    while (*p && strcmp((*p)->campaign, campaign))
        p = &(*p)->next;
    if (*p && (*p)->drop == drop) {
        struct release *r = *p;
        *p = r->next;
        free(r);
    }
    pthread_mutex_unlock(&Q.mu);
}

void outbox_release_clear(void)
{
    pthread_mutex_lock(&Q.mu);
    while (Q.releases) {
        struct release *r = Q.releases;
        Q.releases = r->next;
        free(r);
    }
    pthread_mutex_unlock(&Q.mu);
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

int outbox_release_chunk(const char *campaign, int drop)
{
    size_t cl = strlen(campaign);
    if (cl > OUTBOX_CAMPAIGN_MAX)
        return 1; /* no message can be held under a longer name */
    struct store_txn *wt;
    if (store_wtxn_begin(g_app->store, &wt))
        return 0;
    unsigned char prefix[OUTBOX_CAMPAIGN_MAX + 2];
    size_t plen = cl + 2;
    prefix[0] = 'P';
    memcpy(prefix + 1, campaign, plen - 1); /* includes the NUL */
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
        rc = store_del(wt, STORE_OUTBOX, k, key_p(k, campaign, h->id));
        agg_add(&ag, 'n', h->chan, C_HELD, -1);
        agg_add(&ag, 'c', campaign, C_HELD, -1);
        if (rc)
            break;
        if (drop) {
            rc = store_del(wt, STORE_OUTBOX, k, key_m(k, h->id));
            if (rc == ERR_NOTFOUND)
                rc = 0;
            agg_add(&ag, 'n', h->chan, C_QUEUED, -1);
            agg_add(&ag, 'n', h->chan, C_DROPPED, 1);
            agg_add(&ag, 'c', campaign, C_QUEUED, -1);
            agg_add(&ag, 'c', campaign, C_DROPPED, 1);
        } else {
            rc = store_put(wt, STORE_OUTBOX, k, key_q(k, h->chan, now_ms, h->id), campaign,
                           strlen(campaign));
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
        log_error("outbox: release failed", "campaign=\"%s\" err=\"%s\"", campaign, err_str(rc));
        return 0;
    }
    return done;
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
        json_object_set_new(s->chans, name, ctr_json(c));
    } else if (k[0] == 'r' && vlen == 8) {
        int64_t n;
        memcpy(&n, val, 8);
        json_object_set_new(s->reasons, name, json_integer(n));
    }
    return 0;
}

json_t *outbox_stats(const char *const *channels, int nchannels, int *rc)
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
    for (int i = 0; i < nchannels; i++)
        if (!json_object_get(s.chans, channels[i])) {
            int64_t z[NCTR] = { 0 };
            json_object_set_new(s.chans, channels[i], ctr_json(z));
        }
    json_t *out = ctr_json(s.tot);
    json_object_set_new(out, "failures", s.reasons);
    json_object_set_new(out, "channels", s.chans);
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
    json_t *rec = msg_get(s->t, id, &rc);
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
            rec = msg_get(wt, id, &grc);
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
        rc = msg_put(wt, id, rec);
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
    json_t *rec = msg_get(s->t, id, &rc);
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
        json_t *rec = msg_get(wt, s.ids[i], &grc);
        unsigned char k[9];
        int64_t d[NCTR] = { 0 };
        d[C_DEAD] = -1;
        if (rec) {
            const char *ch = rec_str(rec, "channel"), *camp = rec_str(rec, "campaign");
            if (*ch)
                rc = ctr_add(wt, 'n', ch, d);
            if (!rc && *camp)
                rc = ctr_add(wt, 'c', camp, d);
            json_decref(rec);
            if (rc)
                break;
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
