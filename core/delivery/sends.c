/*
 * sends.c — launching a campaign on outbound channels: the audience
 * builder thread, the send records and the gates the outbox obeys.
 *
 * Why a cursor in the send record, committed with the batch's messages:
 * a crash between two batches resumes exactly after the last committed
 * profile, and the idempotency keys cover the rest, so nobody is sent the
 * same campaign twice on the same channel.
 *
 * Why evaluation happens outside the write transaction: Lua hooks may be
 * slow, and the store has one writer; a batch is evaluated on a read
 * snapshot, then written in one short transaction that re-checks the send
 * is still running (a pause in between discards the batch, which is redone
 * on resume from the same cursor).
 */
#include "delivery/sends.h"
#include "delivery/sends_internal.h"
#include "engine/audience.h"
#include "engine/segments.h"
#include "base/id.h"
#include "store/record.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "engine/decide.h"
#include "engine/models.h"
#include "engine/hooks.h"
#include "base/err.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "delivery/outbox.h"
#include "engine/rules.h"
#include "store/store.h"
#include "engine/throttle.h"
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 2000
#define MAX_SENDS 1024
#define MAX_REASONS 20   /* distinct eligible reasons kept per send */

enum sstate { S_RUNNING, S_PAUSED, S_DONE, S_STOPPED };
static const char *state_names[] = { "running", "paused", "done", "stopped" };

struct gate {
    char campaign[136];
    enum sstate state;
    int building;            /* audience not finished */
};

static struct {
    struct app *app;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gate gates[MAX_SENDS];
    int ngates;
    int rr;                  /* round robin over building sends */
    int stop, started, loaded;
    pthread_t thread;
    struct event_base *base;
} S = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static int parse_state(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, state_names[i]))
            return i;
    return -1;
}

/* --- gates (S.mu held) -------------------------------------------------- */

static struct gate *gate_find(const char *id)
{
    for (int i = 0; i < S.ngates; i++)
        if (!strcmp(S.gates[i].campaign, id))
            return &S.gates[i];
    return NULL;
}

static void gate_set(const char *id, enum sstate st, int building)
{
    struct gate *g = gate_find(id);
    if (!g && S.ngates < MAX_SENDS) {
        g = &S.gates[S.ngates++];
        snprintf(g->campaign, sizeof g->campaign, "%s", id);
    }
    if (!g) {
        log_error("sends: too many sends tracked", "max=%d", MAX_SENDS);
        return;
    }
    g->state = st;
    g->building = building;
}

int sends_gate(const char *campaign_id)
{
    if (!campaign_id || !*campaign_id)
        return SENDS_GATE_NONE;
    pthread_mutex_lock(&S.mu);
    struct gate *g = gate_find(campaign_id);
    int r = !g ? SENDS_GATE_NONE
               : g->state == S_PAUSED ? SENDS_GATE_PAUSED
               : g->state == S_STOPPED ? SENDS_GATE_STOPPED
                                       : SENDS_GATE_OPEN;
    pthread_mutex_unlock(&S.mu);
    return r;
}

/* --- send records ------------------------------------------------------- */

static size_t rec_key(unsigned char *k, const char *id)
{
    size_t n = strlen(id);
    k[0] = 's';
    memcpy(k + 1, id, n);
    return n + 1;
}

static json_t *rec_load(struct store_txn *t, const char *id, int *rc)
{
    unsigned char k[140];
    return record_get(t, STORE_OUTBOX, k, rec_key(k, id), rc);
}

static int rec_store(struct store_txn *wt, const char *id, json_t *rec)
{
    json_object_set_new(rec, "updated_at", json_integer(clock_now()));
    unsigned char k[140];
    return record_put(wt, STORE_OUTBOX, k, rec_key(k, id), rec);
}

static void rec_inc(json_t *rec, const char *field, long n)
{
    json_object_set_new(rec, field, json_integer(json_integer_value(json_object_get(rec, field)) + n));
}

static void rec_skip(json_t *rec, const char *why, long n)
{
    json_t *sk = json_object_get(rec, "skipped");
    if (!json_is_object(sk)) {
        sk = json_object();
        json_object_set_new(rec, "skipped", sk);
    }
    json_object_set_new(sk, why, json_integer(json_integer_value(json_object_get(sk, why)) + n));
}

/* Outbound channels of a campaign in a generation (indices). */
static int outbound_channels(const struct rules_gen *g, const struct rules_campaign *c, int *out)
{
    int n = 0;
    for (int i = 0; i < g->nchans; i++)
        if ((c->channels & (1u << i)) && g->chans[i].outbound)
            out[n++] = i;
    return n;
}

/* --- lifecycle API ------------------------------------------------------ */

static int set_state(const char *id, const char *actor, int want)
{
    if (!S.started)
        return ERR_BUSY;
    if (!id || !id_valid(id))
        return ERR_NOTFOUND;
    struct store_txn *wt;
    int rc = store_wtxn_begin(S.app->store, &wt);
    if (rc)
        return rc;
    json_t *rec = rec_load(wt, id, &rc);
    if (!rec) {
        store_txn_end(wt);
        return rc;
    }
    int cur = parse_state(json_string_value(json_object_get(rec, "state")));
    int built = json_is_true(json_object_get(rec, "built"));
    int next = cur;
    if (cur == S_STOPPED && want != S_STOPPED) {
        rc = ERR_CONFLICT;
    } else if (want == S_PAUSED) {
        next = S_PAUSED;
    } else if (want == S_RUNNING) {
        next = cur == S_PAUSED ? (built ? S_DONE : S_RUNNING) : cur;
    } else {
        next = S_STOPPED;
    }
    if (!rc && next != cur) {
        json_object_set_new(rec, "state", json_string(state_names[next]));
        char f[32];
        snprintf(f, sizeof f, "%s_at", want == S_PAUSED ? "paused" : want == S_STOPPED ? "stopped" : "resumed");
        json_object_set_new(rec, f, json_integer(clock_now()));
        if (actor)
            json_object_set_new(rec, "last_actor", json_string(actor));
        rc = rec_store(wt, id, rec);
        if (!rc)
            rc = store_txn_commit(wt, STORE_DURABLE);
        else
            store_txn_end(wt);
        wt = NULL;
        if (!rc) {
            pthread_mutex_lock(&S.mu);
            gate_set(id, (enum sstate)next, next == S_RUNNING);
            pthread_cond_broadcast(&S.cv);
            pthread_mutex_unlock(&S.mu);
            if (next == S_STOPPED)
                outbox_release(id, 1);
            else if (cur == S_PAUSED)
                outbox_release(id, 0);
            log_info("send state", "campaign=\"%s\" from=%s to=%s actor=\"%s\"", id,
                     state_names[cur < 0 ? 0 : cur], state_names[next], actor ? actor : "");
        }
    }
    if (wt)
        store_txn_end(wt);
    json_decref(rec);
    return rc;
}

int sends_start(const char *campaign_id, const char *actor)
{
    return sends_start_audience(campaign_id, actor, NULL);
}

int sends_start_audience(const char *campaign_id, const char *actor, const char *audience_id)
{
    if (!S.started)
        return ERR_BUSY;
    if (!campaign_id || !id_valid(campaign_id))
        return ERR_NOTFOUND;
    struct rules_gen *g = rules_gen_acquire();
    int ci = g ? rules_gen_find_campaign(g, campaign_id) : -1;
    if (ci < 0) {
        rules_gen_release(g);
        return ERR_NOTFOUND;
    }
    const struct rules_campaign *c = &g->camps[ci];
    int chans[32];
    int nch = outbound_channels(g, c, chans);
    if (!nch) {
        rules_gen_release(g);
        return SENDS_NOTHING;
    }
    json_t *names = json_array();
    for (int i = 0; i < nch; i++)
        json_array_append_new(names, json_string(g->chans[chans[i]].name));
    int triggered = c->trigger != NULL;
    rules_gen_release(g);

    struct store_txn *wt;
    int rc = store_wtxn_begin(S.app->store, &wt);
    if (rc) {
        json_decref(names);
        return rc;
    }
    if (audience_id) { /* it must exist (it is evaluated again as the send walks it) */
        struct segments_audience *a;
        struct reqerr e = { 0 };
        rc = segments_audience_load(wt, audience_id, &a, &e);
        reqerr_clear(&e);
        segments_audience_free(a);
        if (rc) {
            store_txn_end(wt);
            json_decref(names);
            return ERR_NOTFOUND;
        }
    }
    json_t *rec = rec_load(wt, campaign_id, &rc);
    if (rec) {
        /* launched before: never build again; a paused send resumes */
        int st = parse_state(json_string_value(json_object_get(rec, "state")));
        json_decref(rec);
        store_txn_end(wt);
        json_decref(names);
        if (st == S_PAUSED)
            return set_state(campaign_id, actor, S_RUNNING);
        return st == S_STOPPED ? ERR_CONFLICT : 0;
    }
    if (rc != ERR_NOTFOUND) {
        store_txn_end(wt);
        json_decref(names);
        return rc;
    }
    rec = json_object();
    json_object_set_new(rec, "campaign_id", json_string(campaign_id));
    json_object_set_new(rec, "state", json_string(triggered ? "done" : "running"));
    json_object_set_new(rec, "mode", json_string(triggered ? "trigger" : "audience"));
    json_object_set_new(rec, "built", json_boolean(triggered));
    json_object_set_new(rec, "channels", names);
    json_object_set_new(rec, "cursor", json_string(""));
    json_object_set_new(rec, "evaluated", json_integer(0));
    json_object_set_new(rec, "queued", json_integer(0));
    json_object_set_new(rec, "skipped", json_object());
    json_object_set_new(rec, "started_at", json_integer(clock_now()));
    json_object_set_new(rec, "actor", actor ? json_string(actor) : json_null());
    if (audience_id)
        json_object_set_new(rec, "audience_id", json_string(audience_id));
    rc = rec_store(wt, campaign_id, rec);
    json_decref(rec);
    if (!rc)
        rc = store_txn_commit(wt, STORE_DURABLE);
    else
        store_txn_end(wt);
    if (rc)
        return rc;
    pthread_mutex_lock(&S.mu);
    gate_set(campaign_id, triggered ? S_DONE : S_RUNNING, !triggered);
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    log_info("send launched", "campaign=\"%s\" mode=%s actor=\"%s\"", campaign_id,
             triggered ? "trigger" : "audience", actor ? actor : "");
    return 0;
}

int sends_pause(const char *campaign_id, const char *actor)
{
    return set_state(campaign_id, actor, S_PAUSED);
}

int sends_resume(const char *campaign_id, const char *actor)
{
    int rc = set_state(campaign_id, actor, S_RUNNING);
    /* a campaign paused before it was ever launched starts now */
    return rc == ERR_NOTFOUND ? sends_start(campaign_id, actor) : rc;
}

int sends_stop(const char *campaign_id, const char *actor)
{
    return set_state(campaign_id, actor, S_STOPPED);
}

json_t *sends_status(const char *campaign_id, int *rc)
{
    *rc = ERR_NOTFOUND;
    if (!campaign_id || !id_valid(campaign_id))
        return NULL;
    struct store_txn *t;
    if ((*rc = store_rtxn_begin(g_app->store, &t)))
        return NULL;
    json_t *rec = rec_load(t, campaign_id, rc);
    store_txn_end(t);
    if (!rec)
        return NULL;
    json_t *cnt = outbox_campaign_counts(campaign_id, rc);
    if (!cnt) {
        json_decref(rec);
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "campaign_id", json_string(campaign_id));
    static const char *copy[] = { "state", "mode", "channels", "evaluated", "queued", "skipped",
                                  "not_eligible_reasons",
                                  "started_at", "finished_at", "paused_at", "resumed_at",
                                  "stopped_at", "actor", "last_actor", "last_error", "audience" };
    for (size_t i = 0; i < sizeof copy / sizeof copy[0]; i++) {
        json_t *v = json_object_get(rec, copy[i]);
        if (v)
            json_object_set(o, copy[i], v);
    }
    json_object_set(o, "sent", json_object_get(cnt, "sent"));
    json_object_set(o, "failed", json_object_get(cnt, "dead"));
    json_object_set(o, "failed_attempts", json_object_get(cnt, "failed_attempts"));
    json_object_set(o, "dropped", json_object_get(cnt, "dropped"));
    json_object_set(o, "pending", json_object_get(cnt, "queued"));
    json_object_set(o, "held", json_object_get(cnt, "held"));
    json_decref(cnt);
    json_decref(rec);
    *rc = 0;
    return o;
}

int sends_count_txn(struct store_txn *wt, const char *campaign_id, const char *why)
{
    int rc;
    json_t *rec = rec_load(wt, campaign_id, &rc);
    if (!rec)
        return rc == ERR_NOTFOUND ? 0 : rc;
    if (why)
        rec_skip(rec, why, 1);
    else
        rec_inc(rec, "queued", 1);
    rec_inc(rec, "evaluated", 1);
    rc = rec_store(wt, campaign_id, rec);
    json_decref(rec);
    return rc;
}

/* --- the builder thread --------------------------------------------------- */

struct item {
    char cust[132];
    int chan;
    struct sends_item it;
};

struct batch {
    struct rules_worker *rw;
    const struct rules_gen *g;
    int camp;
    int chans[32], nch;
    int64_t now;
    struct item *items;
    int nitems;
    char last[132];
    int nprof;
    json_t *skips;           /* reason → n */
    json_t *reasons;         /* eligible's own reasons → n */
    char last_error[200];
    struct store_txn *t;
    double cutoff;           /* audience.top: the N-th best score (NAN: no ranking) */
    long tie_left;           /* customers at exactly the cutoff still to admit */
};

/* Count one of eligible's reasons in `reasons` (reason text → n): at most
 * MAX_REASONS distinct texts, the rest under "(other)"; a text that is not
 * UTF-8 (a rule may build it from anything) under a placeholder. */
static void count_reason(json_t *reasons, const char *reason, long n)
{
    json_t *probe = json_string(reason);
    const char *k = probe ? reason : "(reason is not valid UTF-8)";
    json_decref(probe);
    json_t *v = json_object_get(reasons, k);
    size_t kept = json_object_size(reasons) - (json_object_get(reasons, "(other)") != NULL);
    if (!v && kept >= MAX_REASONS) {
        k = "(other)";
        v = json_object_get(reasons, k);
    }
    json_object_set_new(reasons, k, json_integer(json_integer_value(v) + n));
}

/* One customer of the batch on each of the send's channels.  With an
 * audience.top cut (b->cutoff), a customer tied at the cut counts once,
 * while places remain, so the send reaches exactly N. */
static void eval_customer(struct batch *b, const char *cust, size_t klen, const void *val,
                          size_t vlen, const void *sv, size_t sl)
{
    int tie_taken = 0;
    for (int i = 0; i < b->nch; i++) {
        struct item *x = &b->items[b->nitems];
        const char *why;
        int rc = sends_eval_cut(b->rw, b->g, b->camp, b->chans[i], b->t, cust, val, vlen, sv, sl, b->now,
                           b->cutoff, 0, &x->it, &why);
        if (rc == 0 && !isnan(b->cutoff) && x->it.score == b->cutoff && !tie_taken) {
            if (b->tie_left > 0) {
                b->tie_left--;
                tie_taken = 1;
            } else {
                json_decref(x->it.msg);
                x->it.msg = NULL;
                rc = 1;
                why = "below_audience_score";
            }
        }
        if (rc == 0) {
            memcpy(x->cust, cust, klen + 1);
            x->chan = b->chans[i];
            b->nitems++;
        } else {
            json_object_set_new(b->skips, why,
                                json_integer(json_integer_value(json_object_get(b->skips, why)) + 1));
            if (x->it.reason[0])
                count_reason(b->reasons, x->it.reason, 1);
            if (x->it.error[0])
                snprintf(b->last_error, sizeof b->last_error, "%s", x->it.error);
        }
    }
}

static int batch_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct batch *b = ud;
    if (klen == 0 || klen >= sizeof b->last)
        return 0;
    if (b->nprof == 0 && b->last[0] && strlen(b->last) == klen && !memcmp(b->last, key, klen))
        return 0; /* the cursor itself was done in the previous batch */
    if (b->nprof >= BATCH)
        return 1;
    char cust[132];
    memcpy(cust, key, klen);
    cust[klen] = 0;
    memcpy(b->last, cust, klen + 1);
    b->nprof++;
    const void *sv = NULL;
    size_t sl = 0;
    if (store_get(b->t, STORE_PSTATS, key, klen, &sv, &sl))
        sv = NULL;
    eval_customer(b, cust, klen, val, vlen, sv, sl);
    return 0;
}

/* A member found through the segment index (the cursor is the index's). */
static int member_cb(void *ud, const char *cust, size_t clen, const char *prof, size_t plen,
                     const char *stats, size_t slen)
{
    struct batch *b = ud;
    if (clen >= sizeof b->last)
        return 0;
    char id[132];
    memcpy(id, cust, clen);
    id[clen] = 0;
    b->nprof++;
    eval_customer(b, id, clen, prof, plen, stats, slen);
    return 0;
}

/* The audience a send walks through the segment index: the saved one the
 * launch named, else the campaign's own when it names segments; NULL when
 * the send scans every profile.  *err set when a named audience is gone. */
static struct segments_audience *send_audience(struct store_txn *t, const json_t *rec,
                                               const struct rules_campaign *c, int *gone)
{
    *gone = 0;
    struct segments_audience *a = NULL;
    struct reqerr e = { 0 };
    const char *aid = json_string_value(json_object_get(rec, "audience_id"));
    if (aid) {
        if (segments_audience_load(t, aid, &a, &e))
            *gone = 1;
    } else if (c->audience && json_array_size(json_object_get(c->audience, "segments"))) {
        json_t *def = json_object();
        json_object_set(def, "any", json_object_get(c->audience, "segments"));
        if (json_object_get(c->audience, "exclude"))
            json_object_set(def, "exclude", json_object_get(c->audience, "exclude"));
        /* the conditions are the campaign's: sends_eval checks them with the rest */
        if (segments_audience_compile(def, c->id, &a, &e))
            a = NULL; /* a segment gone since the campaign loaded: scan instead */
        json_decref(def);
    }
    reqerr_clear(&e);
    return a;
}

/* audience.top: rank every eligible customer by the model's score (the
 * first outbound channel's consent) and keep the N best in a min-heap.
 * The result goes into the send record once, so a send resumed after a
 * restart keeps its cut: {"model", "top", "ranked", "cutoff" (null: fewer
 * than N eligible, no cut), "tie_left"}. */
struct rank {
    struct rules_worker *rw;
    const struct rules_gen *g;
    int camp, chan;
    int64_t now;
    double *heap;
    long n, cap, ranked;
    char last[132];
    long inchunk;
    struct store_txn *t;
};

static void heap_push(struct rank *r, double v)
{
    double *h = r->heap;
    if (r->n < r->cap) {
        long i = r->n++;
        h[i] = v;
        while (i > 0 && h[(i - 1) / 2] > h[i]) {
            double x = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = x;
            i = (i - 1) / 2;
        }
        return;
    }
    if (v <= h[0])
        return;
    h[0] = v;
    for (long i = 0;;) {
        long l = 2 * i + 1, m = i;
        if (l < r->n && h[l] < h[m])
            m = l;
        if (l + 1 < r->n && h[l + 1] < h[m])
            m = l + 1;
        if (m == i)
            break;
        double x = h[i];
        h[i] = h[m];
        h[m] = x;
        i = m;
    }
}

static void rank_one(struct rank *r, const char *cust, const void *val, size_t vlen,
                     const void *sv, size_t sl)
{
    struct sends_item it;
    const char *why;
    if (sends_eval_cut(r->rw, r->g, r->camp, r->chan, r->t, cust, val, vlen, sv, sl, r->now,
                  -INFINITY, 1, &it, &why) == 0) {
        r->ranked++;
        heap_push(r, it.score);
    }
}

static int rank_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct rank *r = ud;
    if (klen == 0 || klen >= sizeof r->last)
        return 0;
    if (r->inchunk == 0 && r->last[0] && strlen(r->last) == klen && !memcmp(r->last, key, klen))
        return 0;
    if (r->inchunk >= BATCH * 10)
        return 1;
    r->inchunk++;
    memcpy(r->last, key, klen);
    r->last[klen] = 0;
    const void *sv = NULL;
    size_t sl = 0;
    if (store_get(r->t, STORE_PSTATS, key, klen, &sv, &sl))
        sv = NULL;
    rank_one(r, r->last, val, vlen, sv, sl);
    return 0;
}

/* A member found through the segment index (the index advances r->last). */
static int rank_member_cb(void *ud, const char *cust, size_t clen, const char *prof, size_t plen,
                          const char *stats, size_t slen)
{
    struct rank *r = ud;
    if (clen >= sizeof r->last)
        return 0;
    char id[132];
    memcpy(id, cust, clen);
    id[clen] = 0;
    rank_one(r, id, prof, plen, stats, slen);
    return 0;
}

/* Rank the customers the send will walk: those of its segment audience
 * (send_audience: a saved audience or the campaign's segments) through the
 * index, else every profile; eval_impl applies the rest of the campaign's
 * audience filter (exclude, conditions) before the model scores. */
static json_t *rank_audience(struct rules_worker *rw, const struct rules_gen *g, int ci, int chan,
                             const char *id, int *rc)
{
    const struct rules_campaign *c = &g->camps[ci];
    struct rank r = { .rw = rw, .g = g, .camp = ci, .chan = chan, .now = clock_now(),
                      .cap = c->audience_top };
    r.heap = malloc(sizeof *r.heap * (size_t)r.cap);
    if (!r.heap) {
        *rc = ERR_NOMEM;
        return NULL;
    }
    *rc = 0;
    int more;
    do {
        pthread_mutex_lock(&S.mu);
        int stop = S.stop;
        pthread_mutex_unlock(&S.mu);
        if (stop) {
            *rc = ERR_BUSY;
            break;
        }
        r.inchunk = 0;
        if ((*rc = store_rtxn_begin(S.app->store, &r.t)))
            break;
        int gone = 0, lrc = 0;
        json_t *rec = rec_load(r.t, id, &lrc);
        struct segments_audience *sa = rec ? send_audience(r.t, rec, c, &gone) : NULL;
        json_decref(rec);
        if (gone) {
            more = 0; /* the send's saved audience is gone: nobody to rank */
        } else if (sa) {
            long visited = segments_audience_next(r.t, sa, r.last, BATCH * 10, rank_member_cb, &r);
            *rc = visited < 0 ? (int)visited : 0;
            more = visited >= BATCH * 10;
        } else {
            size_t ll = strlen(r.last);
            *rc = store_scan(r.t, STORE_PROFILES, NULL, 0, ll ? r.last : NULL, ll, rank_cb, &r);
            more = r.inchunk >= BATCH * 10;
        }
        segments_audience_free(sa);
        store_txn_end(r.t);
    } while (!*rc && more);
    json_t *a = NULL;
    if (!*rc) {
        a = json_object();
        json_object_set_new(a, "model", json_string(c->audience_model));
        json_object_set_new(a, "top", json_integer(c->audience_top));
        json_object_set_new(a, "ranked", json_integer(r.ranked));
        if (r.n < r.cap) {
            json_object_set_new(a, "cutoff", json_null());
            json_object_set_new(a, "tie_left", json_integer(0));
        } else {
            long above = 0;
            for (long i = 0; i < r.n; i++)
                above += r.heap[i] > r.heap[0];
            json_object_set_new(a, "cutoff", json_real(r.heap[0]));
            json_object_set_new(a, "tie_left", json_integer(r.n - above));
        }
    }
    free(r.heap);
    return a;
}

/* Evaluate and enqueue one batch of one send.  Returns 1 when the send's
 * audience is complete (or the send ended), 0 to continue, <0 on error. */
static int build_batch(struct rules_worker *rw, const char *id)
{
    rules_worker_refresh(rw);
    const struct rules_gen *g = rw->gen;
    struct store *st = S.app->store;
    int ci = g ? rules_gen_find_campaign(g, id) : -1;
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    json_t *rec = rec_load(t, id, &rc);
    if (!rec) {
        store_txn_end(t);
        return 1;
    }
    if (parse_state(json_string_value(json_object_get(rec, "state"))) != S_RUNNING) {
        store_txn_end(t);
        json_decref(rec);
        return 1;
    }
    struct batch b = { .rw = rw, .g = g, .camp = ci, .now = clock_now(), .cutoff = NAN };
    snprintf(b.last, sizeof b.last, "%s", json_string_value(json_object_get(rec, "cursor")) ?: "");
    json_t *rank = json_incref(json_object_get(rec, "audience"));
    json_decref(rec);
    if (ci < 0 || !(b.nch = outbound_channels(g, &g->camps[ci], b.chans))) {
        store_txn_end(t);
        /* the campaign file is gone (or lost its outbound channels) */
        struct store_txn *wt;
        if ((rc = store_wtxn_begin(st, &wt)))
            return rc;
        rec = rec_load(wt, id, &rc);
        if (rec) {
            json_object_set_new(rec, "state", json_string("stopped"));
            json_object_set_new(rec, "last_error",
                                json_string("campaign no longer loaded with an outbound channel"));
            json_object_set_new(rec, "stopped_at", json_integer(clock_now()));
            rc = rec_store(wt, id, rec);
            json_decref(rec);
        }
        rc = rc ? rc : store_txn_commit(wt, STORE_DURABLE);
        if (rc)
            store_txn_end(wt);
        pthread_mutex_lock(&S.mu);
        gate_set(id, S_STOPPED, 0);
        pthread_mutex_unlock(&S.mu);
        outbox_release(id, 1);
        log_warn("send stopped: campaign not loaded", "campaign=\"%s\"", id);
        return 1;
    }
    if (g->camps[ci].audience_top && !rank) {
        /* rank the audience once, before the first batch, and keep the cut */
        store_txn_end(t);
        if (!(rank = rank_audience(rw, g, ci, b.chans[0], id, &rc)))
            return rc;
        struct store_txn *wt;
        if ((rc = store_wtxn_begin(st, &wt))) {
            json_decref(rank);
            return rc;
        }
        rec = rec_load(wt, id, &rc);
        if (rec) {
            json_object_set(rec, "audience", rank);
            rc = rec_store(wt, id, rec);
            json_decref(rec);
        }
        rc = rc ? rc : store_txn_commit(wt, STORE_DURABLE);
        if (rc) {
            store_txn_end(wt);
            json_decref(rank);
            return rc;
        }
        log_info("send audience ranked", "campaign=\"%s\" top=%ld ranked=%lld", id,
                 g->camps[ci].audience_top,
                 (long long)json_integer_value(json_object_get(rank, "ranked")));
        if ((rc = store_rtxn_begin(st, &t))) {
            json_decref(rank);
            return rc;
        }
    }
    if (rank) {
        json_t *cut = json_object_get(rank, "cutoff");
        b.cutoff = json_is_number(cut) ? json_number_value(cut) : -INFINITY;
        b.tie_left = (long)json_integer_value(json_object_get(rank, "tie_left"));
    }
    json_decref(rank);
    b.items = malloc(sizeof *b.items * (size_t)BATCH * (size_t)b.nch);
    b.skips = json_object();
    b.reasons = json_object();
    if (!b.items) {
        store_txn_end(t);
        json_decref(b.skips);
        json_decref(b.reasons);
        return ERR_NOMEM;
    }
    b.t = t;
    int gone;
    rec = rec_load(t, id, &rc);
    struct segments_audience *aud = rec ? send_audience(t, rec, &g->camps[ci], &gone) : NULL;
    /* a send keeps the walk it started with; the cursor means nothing to another */
    const char *mode = aud ? "index" : "profiles";
    const char *was = rec ? json_string_value(json_object_get(rec, "walk")) : NULL;
    if (was && strcmp(was, mode))
        b.last[0] = 0;
    json_decref(rec);
    int finished;
    if (rec && gone) {
        snprintf(b.last_error, sizeof b.last_error, "the send's audience no longer exists");
        finished = 1;
    } else if (aud) {
        long visited = segments_audience_next(t, aud, b.last, BATCH, member_cb, &b);
        rc = visited < 0 ? (int)visited : 0;
        finished = visited < BATCH;
    } else {
        size_t cl = strlen(b.last);
        rc = store_scan(t, STORE_PROFILES, NULL, 0, cl ? b.last : NULL, cl, batch_cb, &b);
        finished = b.nprof < BATCH;
    }
    segments_audience_free(aud);
    store_txn_end(t);
    if (!rc) {
        /* write: re-check the state, then caps + enqueue + progress */
        struct store_txn *wt;
        rc = store_wtxn_begin(st, &wt);
        if (!rc) {
            rec = rec_load(wt, id, &rc);
            if (rec && parse_state(json_string_value(json_object_get(rec, "state"))) == S_RUNNING) {
                long queued = 0;
                char key[OUTBOX_KEY_MAX + 1];
                for (int i = 0; i < b.nitems && !rc; i++) {
                    struct item *x = &b.items[i];
                    const char *chn = g->chans[x->chan].name;
                    int kl = snprintf(key, sizeof key, "send:%s:%s:%s", id, chn, x->cust);
                    const char *why = NULL;
                    if (kl >= (int)sizeof key) {
                        json_decref(x->it.msg);
                        x->it.msg = NULL;
                        why = "render_error";
                    } else {
                        rc = sends_put(wt, g, ci, x->chan, x->cust, &x->it, key, b.now, &why);
                    }
                    if (rc)
                        break;
                    if (why)
                        rec_skip(rec, why, 1);
                    else
                        queued++;
                }
                const char *k;
                json_t *v;
                json_object_foreach(b.skips, k, v)
                    rec_skip(rec, k, (long)json_integer_value(v));
                if (json_object_size(b.reasons)) {
                    json_t *rs = json_object_get(rec, "not_eligible_reasons");
                    if (!json_is_object(rs)) {
                        rs = json_object();
                        json_object_set_new(rec, "not_eligible_reasons", rs);
                    }
                    json_object_foreach(b.reasons, k, v)
                        count_reason(rs, k, (long)json_integer_value(v));
                }
                rec_inc(rec, "evaluated", b.nprof);
                rec_inc(rec, "queued", queued);
                if (!isnan(b.cutoff)) /* the places left at the cut, with the cursor */
                    json_object_set_new(json_object_get(rec, "audience"), "tie_left",
                                        json_integer(b.tie_left));
                json_object_set_new(rec, "cursor", json_string(b.last));
                json_object_set_new(rec, "walk", json_string(mode));
                if (b.last_error[0])
                    json_object_set_new(rec, "last_error", json_string(b.last_error));
                if (finished) {
                    json_object_set_new(rec, "built", json_true());
                    json_object_set_new(rec, "state", json_string("done"));
                    json_object_set_new(rec, "finished_at", json_integer(clock_now()));
                }
                if (!rc)
                    rc = rec_store(wt, id, rec);
                if (!rc)
                    rc = store_txn_commit(wt, STORE_DURABLE);
                else
                    store_txn_end(wt);
                if (!rc && finished) {
                    pthread_mutex_lock(&S.mu);
                    gate_set(id, S_DONE, 0);
                    pthread_mutex_unlock(&S.mu);
                    log_info("send audience built", "campaign=\"%s\" evaluated=%lld queued=%lld", id,
                             (long long)json_integer_value(json_object_get(rec, "evaluated")),
                             (long long)json_integer_value(json_object_get(rec, "queued")));
                }
                if (!rc)
                    outbox_wake();
            } else {
                store_txn_end(wt); /* paused or stopped meanwhile: redo later */
                finished = 1;
            }
            json_decref(rec);
        }
    }
    for (int i = 0; i < b.nitems; i++)
        json_decref(b.items[i].it.msg);
    free(b.items);
    json_decref(b.skips);
    json_decref(b.reasons);
    if (rc)
        return rc;
    return finished;
}

static void *builder_main(void *arg)
{
    (void)arg;
    struct rules_worker *rw;
    if (rules_worker_start(S.base, &rw)) {
        log_error("sends: no Lua state for the audience builder", "%s", "");
        return NULL;
    }
    rules_worker_on_demand(rw); /* S.base runs no loop: build_batch refreshes it */
    pthread_mutex_lock(&S.mu);
    while (!S.stop) {
        /* next building send, round robin */
        char id[136] = "";
        for (int k = 0; k < S.ngates; k++) {
            struct gate *g = &S.gates[(S.rr + k) % S.ngates];
            if (g->building && g->state == S_RUNNING) {
                snprintf(id, sizeof id, "%s", g->campaign);
                S.rr = (S.rr + k + 1) % S.ngates;
                break;
            }
        }
        if (!id[0]) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&S.cv, &S.mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&S.mu);
        int rc = build_batch(rw, id);
        pthread_mutex_lock(&S.mu);
        if (rc == 1) {
            struct gate *g = gate_find(id);
            if (g && g->state != S_RUNNING)
                g->building = g->state == S_PAUSED; /* resumes later */
            else if (g && rc == 1)
                g->building = 0;
        } else if (rc < 0) {
            log_error("sends: batch failed (retrying)", "campaign=\"%s\" err=\"%s\"", id, err_str(rc));
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&S.cv, &S.mu, &ts);
        }
    }
    pthread_mutex_unlock(&S.mu);
    rules_worker_stop(rw);
    return NULL;
}

static int load_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)ud;
    if (klen < 2 || klen > 130)
        return 0;
    char id[136];
    memcpy(id, (const char *)key + 1, klen - 1);
    id[klen - 1] = 0;
    int e;
    json_t *rec = codec_msgpack_to_json(val, vlen, &e);
    int st = parse_state(json_string_value(json_object_get(rec, "state")));
    int built = json_is_true(json_object_get(rec, "built"));
    if (st >= 0)
        gate_set(id, (enum sstate)st, !built && st != S_STOPPED);
    json_decref(rec);
    return 0;
}

int sends_init(struct app *app)
{
    S.app = app;
    struct store_txn *t;
    int rc = store_rtxn_begin(app->store, &t);
    if (rc)
        return rc;
    pthread_mutex_lock(&S.mu);
    S.ngates = 0;
    rc = store_scan(t, STORE_OUTBOX, "s", 1, NULL, 0, load_cb, NULL);
    int resumed = 0;
    for (int i = 0; i < S.ngates; i++)
        resumed += S.gates[i].building && S.gates[i].state == S_RUNNING;
    S.stop = 0;
    pthread_mutex_unlock(&S.mu);
    store_txn_end(t);
    if (rc)
        return rc;
    S.base = event_base_new();
    if (!S.base)
        return ERR_NOMEM;
    if (pthread_create(&S.thread, NULL, builder_main, NULL)) {
        event_base_free(S.base);
        S.base = NULL;
        return ERR_NOMEM;
    }
    S.started = 1;
    if (resumed)
        log_info("sends resumed after restart", "sends=%d", resumed);
    return 0;
}

void sends_shutdown(void)
{
    if (!S.started)
        return;
    pthread_mutex_lock(&S.mu);
    S.stop = 1;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    pthread_join(S.thread, NULL);
    S.started = 0;
    event_base_free(S.base);
    S.base = NULL;
}
