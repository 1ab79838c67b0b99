/*
 * replay.c — logged decides re-run on two sandboxed rule sets, and the
 * report of what the edit changes (see replay.h).
 *
 * One pass over the log in chunked read transactions (dlog_scan).  Each
 * entry is decided twice without explain (the fast path: offers come back
 * through struct decide_as_was, the reply is written as msgpack and
 * dropped); only a changed decide that goes into the report's sample is
 * decided once more on each side with explain.  The tallies are in
 * memory: per campaign (a small open-addressing table by id), customers
 * reached per campaign and side (a set of 64-bit hashes of campaign and
 * customer), and the offer times that the edited rule set's caps are
 * counted against.
 */
#include "engine/replay.h"
#include "engine/counters.h"
#include "engine/decide.h"
#include "engine/dlog.h"
#include "engine/hooks.h"
#include "engine/models.h"
#include "engine/rules.h"
#include "base/app.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "codec/codec.h"
#include <stdlib.h>
#include <string.h>


static uint64_t fnv64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV64_INIT 0xcbf29ce484222325ull

/* ---------------------------------------------------------------------- */
/* tallies                                                                 */

struct cap_track {        /* one declared cap of the edited rule set */
    const struct rules_cap *cap;
    int scope_total;
    long would_bind;
};

struct cstat {
    char *id;
    long before, after, changed, errors_before, errors_after;
    long reached_before, reached_after, fresh, lost;
    struct cap_track caps[2 * RULES_MAX_WINDOWS];
    int ncaps;
    int64_t *times;       /* the edited rule set's offers of it, in order (total caps) */
    long ntimes, captimes;
};

struct tally {
    struct cstat *c;
    int n, cap;
    int *slots;           /* id hash table: index into c, -1 = empty */
    int nslots;
};

static int tally_find(struct tally *t, const char *id, size_t len)
{
    if (t->n * 2 >= t->nslots) {
        int ns = t->nslots ? t->nslots * 2 : 256;
        int *sl = malloc(sizeof *sl * (size_t)ns);
        if (!sl)
            return -1;
        memset(sl, -1, sizeof *sl * (size_t)ns);
        for (int i = 0; i < t->n; i++) {
            uint32_t h = hash_fnv1a(t->c[i].id, strlen(t->c[i].id), HASH_FNV_INIT) & (uint32_t)(ns - 1);
            while (sl[h] >= 0)
                h = (h + 1) & (uint32_t)(ns - 1);
            sl[h] = i;
        }
        free(t->slots);
        t->slots = sl;
        t->nslots = ns;
    }
    uint32_t h = hash_fnv1a(id, len, HASH_FNV_INIT) & (uint32_t)(t->nslots - 1);
    while (t->slots[h] >= 0) {
        const char *s = t->c[t->slots[h]].id;
        if (!strncmp(s, id, len) && !s[len])
            return t->slots[h];
        h = (h + 1) & (uint32_t)(t->nslots - 1);
    }
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        struct cstat *c = realloc(t->c, sizeof *c * (size_t)cap);
        if (!c)
            return -1;
        t->c = c;
        t->cap = cap;
    }
    struct cstat *c = &t->c[t->n];
    memset(c, 0, sizeof *c);
    if (!(c->id = malloc(len + 1)))
        return -1;
    memcpy(c->id, id, len);
    c->id[len] = 0;
    t->slots[h] = t->n;
    return t->n++;
}

/* A set of 64-bit keys with a flag byte and a value each (open addressing;
 * key 0 is never stored: keys are forced odd). */
struct hset {
    uint64_t *k;
    unsigned char *f;
    int *camp;
    int64_t **times;      /* per key: offer times (customer caps), or NULL */
    int *ntimes, *captimes;
    size_t n, cap;
};

static long hset_slot(struct hset *s, uint64_t key, int camp)
{
    key |= 1;
    if ((s->n + 1) * 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 4096;
        struct hset ns = { calloc(nc, 8), calloc(nc, 1), calloc(nc, sizeof(int)),
                           calloc(nc, sizeof(int64_t *)), calloc(nc, sizeof(int)),
                           calloc(nc, sizeof(int)), s->n, nc };
        if (!ns.k || !ns.f || !ns.camp || !ns.times || !ns.ntimes || !ns.captimes) {
            free(ns.k), free(ns.f), free(ns.camp), free(ns.times), free(ns.ntimes);
            free(ns.captimes);
            return -1;
        }
        for (size_t i = 0; i < s->cap; i++)
            if (s->k[i]) {
                size_t j = (size_t)(s->k[i] >> 7) & (nc - 1);
                while (ns.k[j])
                    j = (j + 1) & (nc - 1);
                ns.k[j] = s->k[i], ns.f[j] = s->f[i], ns.camp[j] = s->camp[i];
                ns.times[j] = s->times[i], ns.ntimes[j] = s->ntimes[i];
                ns.captimes[j] = s->captimes[i];
            }
        free(s->k), free(s->f), free(s->camp), free(s->times), free(s->ntimes), free(s->captimes);
        *s = ns;
    }
    size_t j = (size_t)(key >> 7) & (s->cap - 1);
    while (s->k[j] && s->k[j] != key)
        j = (j + 1) & (s->cap - 1);
    if (!s->k[j]) {
        s->k[j] = key;
        s->camp[j] = camp;
        s->n++;
    }
    return (long)j;
}

static void hset_free(struct hset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->times ? s->times[i] : NULL);
    free(s->k), free(s->f), free(s->camp), free(s->times), free(s->ntimes), free(s->captimes);
}

static int push_time(int64_t **v, long *n, long *cap, int64_t t)
{
    if (*n == *cap) {
        long nc = *cap ? *cap * 2 : 4;
        int64_t *nv = realloc(*v, sizeof *nv * (size_t)nc);
        if (!nv)
            return ERR_NOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = t;
    return 0;
}

/* Offers of v (sorted by time) within the cap's window ending at `now`. */
static long in_window(const int64_t *v, long n, const struct rules_cap *cap, int64_t now)
{
    if (cap->secs <= 0)
        return n;
    long lo = 0, hi = n; /* first index with v[i] > now - secs */
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (v[mid] > now - cap->secs)
            hi = mid;
        else
            lo = mid + 1;
    }
    return n - lo;
}

/* ---------------------------------------------------------------------- */
/* the run                                                                 */

struct run {
    struct rules_worker *rw[2];   /* 0: the rule set as it is, 1: the edit */
    struct models_worker *mw[2];  /* the live model versions, served on each side's state */
    struct counters *errs[2];
    const struct replay_opts *o;
    struct tally t;
    struct hset reach;            /* campaign x customer: flags 1 before, 2 after */
    struct buf out, strs;
    struct decide_offer offs[2][REPLAY_MAX_OFFERS];
    json_t *sample;
    long *elig_reached, *elig_passed; /* the edited rule set's eligible hooks, per campaign */
    int elig_n;
    long decisions, changed, drift, failed[2], seen;
    uint32_t sample_below;
    int rc;
};

static int same_offers(const struct decide_as_was *a, const struct decide_as_was *b)
{
    if (a->noffers != b->noffers)
        return 0;
    for (int i = 0; i < a->noffers; i++)
        if (strcmp(a->offers[i].campaign, b->offers[i].campaign) ||
            strcmp(a->offers[i].variant, b->offers[i].variant))
            return 0;
    return 1;
}

/* Does the logged entry's offer list equal `a`'s? */
static int same_as_logged(const struct dlog_entry *e, const struct decide_as_was *a)
{
    if (e->noffers != a->noffers)
        return 0;
    for (int i = 0; i < e->noffers; i++) {
        const char *c, *v;
        size_t cl, vl;
        double sc;
        dlog_entry_offer(e, i, &c, &cl, &v, &vl, &sc);
        if (strlen(a->offers[i].campaign) != cl || memcmp(a->offers[i].campaign, c, cl) ||
            strlen(a->offers[i].variant) != vl || memcmp(a->offers[i].variant, v, vl))
            return 0;
    }
    return 1;
}

static int has_offer(const struct decide_as_was *a, const char *camp, const char **variant)
{
    for (int i = 0; i < a->noffers; i++)
        if (!strcmp(a->offers[i].campaign, camp)) {
            *variant = a->offers[i].variant;
            return 1;
        }
    return 0;
}

/* The edited rule set's caps on campaign `c` (first time it is seen). */
static void caps_of(struct run *R, struct cstat *s, const char *id)
{
    const struct rules_gen *g = R->rw[1]->gen;
    int ci = rules_gen_find_campaign(g, id);
    if (ci < 0 || s->ncaps)
        return;
    const struct rules_campaign *c = &g->camps[ci];
    for (int k = 0; k < c->cust_caps.n; k++)
        s->caps[s->ncaps++] = (struct cap_track){ &c->cust_caps.w[k], 0, 0 };
    for (int k = 0; k < c->total_caps.n; k++)
        s->caps[s->ncaps++] = (struct cap_track){ &c->total_caps.w[k], 1, 0 };
}

/* Tally one side's offers of a decide. */
static int tally_side(struct run *R, int side, const struct decide_as_was *a,
                      const struct decide_as_was *other, uint64_t ch, int64_t now)
{
    for (int i = 0; i < a->noffers; i++) {
        const char *id = a->offers[i].campaign, *ov;
        int k = tally_find(&R->t, id, strlen(id));
        if (k < 0)
            return ERR_NOMEM;
        struct cstat *s = &R->t.c[k];
        if (side == 0)
            s->before++;
        else
            s->after++;
        if (!has_offer(other, id, &ov) || strcmp(ov, a->offers[i].variant))
            s->changed += side == 0 || !has_offer(other, id, &ov); /* once per decide */
        long j = hset_slot(&R->reach, fnv64(id, strlen(id), ch), k);
        if (j < 0)
            return ERR_NOMEM;
        R->reach.f[j] |= (unsigned char)(1 << side);
        if (side == 1) {
            caps_of(R, s, id);
            for (int c = 0; c < s->ncaps; c++) {
                struct cap_track *ct = &s->caps[c];
                long n = ct->scope_total
                             ? in_window(s->times, s->ntimes, ct->cap, now)
                             : in_window(R->reach.times[j], R->reach.ntimes[j], ct->cap, now);
                if (n >= ct->cap->limit)
                    ct->would_bind++;
            }
            if (s->ncaps) {
                long n = R->reach.ntimes[j], cap = R->reach.captimes[j];
                if (push_time(&R->reach.times[j], &n, &cap, now) ||
                    push_time(&s->times, &s->ntimes, &s->captimes, now))
                    return ERR_NOMEM;
                R->reach.ntimes[j] = (int)n;
                R->reach.captimes[j] = (int)cap;
            }
        }
    }
    return 0;
}

uint32_t replay_sample_below(const struct replay_opts *o)
{
    return (uint32_t)(o->sample * 1000000.0 + 0.5);
}

int replay_take(const struct replay_opts *o, uint32_t sample_below, long decisions,
                const struct dlog_entry *e)
{
    if (sample_below < 1000000u &&
        hash_fnv1a(e->decision_id, 20, HASH_FNV_INIT) % 1000000u >= sample_below)
        return -1;
    return o->limit && decisions >= o->limit ? 1 : 0;
}

int replay_entry_req(struct buf *strs, const struct dlog_entry *e, struct decide_req *q)
{
    buf_reset(strs);
    if (buf_reserve(strs, e->customer_len + e->channel_len + e->placement_len +
                              e->accept_language_len + 8))
        return ERR_NOMEM;
    char *p = strs->p;
    const char *src[4] = { e->customer, e->channel, e->placement, e->accept_language };
    size_t len[4] = { e->customer_len, e->channel_len, e->placement_len, e->accept_language_len };
    const char **dst[4] = { &q->customer_id, &q->channel, &q->placement, &q->accept_language };
    for (int i = 0; i < 4; i++) {
        *dst[i] = NULL;
        if (!src[i])
            continue;
        memcpy(p, src[i], len[i]);
        p[len[i]] = 0;
        *dst[i] = p;
        p += len[i] + 1;
    }
    q->context_text = e->context;
    q->context_len = e->context_len;
    q->limit = e->limit < 1 ? 1 : e->limit > REPLAY_MAX_OFFERS ? REPLAY_MAX_OFFERS : e->limit;
    q->dry_run = 1;
    return 0;
}

static int decide_side(struct run *R, int side, struct decide_req *q, int explain, json_t **reply)
{
    struct reqerr e = { 0 };
    q->explain = explain;
    buf_reset(&R->out);
    hooks_count_divert(explain ? NULL : R->errs[side]);
    int rc = decide_run_worker(R->rw[side], R->mw[side], q, &e, &R->out, !explain);
    hooks_count_divert(NULL);
    json_decref(e.extra);
    if (rc == 0 && reply) {
        int prc;
        *reply = codec_parse_json(R->out.p, R->out.len, &prc, NULL, 0);
    }
    return rc;
}

static json_t *offers_json(const json_t *reply)
{
    json_t *a = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(reply, "offers"), i, o)
        json_array_append_new(a, json_pack("{s:O?,s:O?,s:O?}", "campaign_id",
                                           json_object_get(o, "campaign_id"), "variant",
                                           json_object_get(o, "variant"), "score",
                                           json_object_get(o, "score")));
    return a;
}

static void add_sample(struct run *R, const struct dlog_entry *e, struct decide_req *q)
{
    json_t *rep[2] = { NULL, NULL };
    for (int side = 0; side < 2; side++) {
        struct decide_as_was *aw = q->as_was;
        aw->offers = R->offs[side]; /* the explain run fills the same arrays again */
        decide_side(R, side, q, 1, &rep[side]);
    }
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)e->ts_ms);
    json_t *s = json_pack("{s:s,s:s%,s:I,s:o,s:o,s:O?,s:O?}", "decision_id", e->decision_id,
                          "customer_id", e->customer, e->customer_len, "ts_ms",
                          (json_int_t)e->ts_ms, "offers_before", offers_json(rep[0]),
                          "offers_after", offers_json(rep[1]), "explain_before",
                          json_object_get(rep[0], "explain"), "explain_after",
                          json_object_get(rep[1], "explain"));
    if (s)
        json_array_append_new(R->sample, s);
    json_decref(rep[0]);
    json_decref(rep[1]);
}

static int visit(void *ud, const void *val, size_t len)
{
    struct run *R = ud;
    struct dlog_entry e;
    if (dlog_entry_decode(val, len, &e))
        return 0;
    R->seen++;
    int take = replay_take(R->o, R->sample_below, R->decisions, &e);
    if (take)
        return take > 0;
    struct decide_req q = { 0 };
    if ((R->rc = replay_entry_req(&R->strs, &e, &q)))
        return R->rc;
    struct decide_as_was aw[2];
    for (int side = 0; side < 2; side++) {
        aw[side] = (struct decide_as_was){ e.profile, e.stats, e.profile_len, e.stats_len, e.now,
                                           e.decision_id, R->offs[side], REPLAY_MAX_OFFERS, 0,
                                           side ? R->elig_reached : NULL,
                                           side ? R->elig_passed : NULL, side ? R->elig_n : 0 };
        q.as_was = &aw[side];
        if (decide_side(R, side, &q, 0, NULL)) {
            R->failed[side]++;
            aw[side].noffers = 0;
        }
    }
    R->decisions++;
    if (!same_as_logged(&e, &aw[0]))
        R->drift++;
    uint64_t ch = fnv64(e.customer, e.customer_len, FNV64_INIT);
    if ((R->rc = tally_side(R, 0, &aw[0], &aw[1], ch, e.now)) ||
        (R->rc = tally_side(R, 1, &aw[1], &aw[0], ch, e.now)))
        return R->rc;
    if (!same_offers(&aw[0], &aw[1])) {
        R->changed++;
        if ((int)json_array_size(R->sample) < R->o->show) {
            q.as_was = &aw[0];
            add_sample(R, &e, &q);
        }
    }
    return 0;
}

static void count_reach(struct run *R)
{
    for (size_t i = 0; i < R->reach.cap; i++) {
        if (!R->reach.k[i])
            continue;
        struct cstat *s = &R->t.c[R->reach.camp[i]];
        unsigned char f = R->reach.f[i];
        s->reached_before += f & 1;
        s->reached_after += (f >> 1) & 1;
        s->fresh += f == 2;
        s->lost += f == 1;
    }
}

static void count_errors(struct run *R)
{
    for (int side = 0; side < 2; side++) {
        int pos = 0;
        const char *id;
        long v;
        while (counters_next(R->errs[side], &pos, &id, &v)) {
            int k = tally_find(&R->t, id, strlen(id));
            if (k >= 0 && side == 0)
                R->t.c[k].errors_before += v;
            else if (k >= 0)
                R->t.c[k].errors_after += v;
        }
    }
}

static json_t *report(struct run *R, double secs)
{
    json_t *camps = json_object();
    for (int i = 0; i < R->t.n; i++) {
        struct cstat *s = &R->t.c[i];
        json_t *caps = json_array();
        for (int c = 0; c < s->ncaps; c++)
            json_array_append_new(caps, json_pack("{s:s,s:s,s:I,s:I}", "scope",
                                                  s->caps[c].scope_total ? "total" : "customer",
                                                  "window", s->caps[c].cap->label, "limit",
                                                  (json_int_t)s->caps[c].cap->limit, "would_bind",
                                                  (json_int_t)s->caps[c].would_bind));
        json_object_set_new(
            camps, s->id,
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "offers_before",
                      (json_int_t)s->before, "offers_after", (json_int_t)s->after,
                      "decisions_changed", (json_int_t)s->changed, "customers_reached_before",
                      (json_int_t)s->reached_before, "customers_reached_after",
                      (json_int_t)s->reached_after, "customers_new", (json_int_t)s->fresh,
                      "customers_lost", (json_int_t)s->lost, "errors_before",
                      (json_int_t)s->errors_before, "errors_after", (json_int_t)s->errors_after,
                      "caps", caps));
    }
    json_t *o = json_object();
    json_object_set_new(o, "window", json_pack("{s:I,s:I}", "from", (json_int_t)R->o->from_ms,
                                               "to", (json_int_t)R->o->to_ms));
    json_object_set_new(o, "decisions", json_integer(R->decisions));
    json_object_set_new(o, "changed", json_integer(R->changed));
    json_object_set_new(o, "changed_share",
                        json_real(R->decisions ? (double)R->changed / (double)R->decisions : 0));
    json_object_set_new(o, "drift", json_integer(R->drift));
    json_object_set_new(o, "failed", json_pack("{s:I,s:I}", "before", (json_int_t)R->failed[0],
                                               "after", (json_int_t)R->failed[1]));
    json_object_set_new(o, "seconds", json_real(secs));
    json_object_set_new(o, "decisions_per_second",
                        json_real(secs > 0 ? (double)R->decisions / secs : 0));
    json_object_set_new(o, "campaigns", camps);
    const struct rules_gen *g = R->rw[1]->gen;
    json_object_set_new(o, "eligible", replay_elig_counts(g, R->elig_reached, R->elig_passed));
    json_object_set_new(o, "warnings", replay_elig_warnings(g, R->elig_reached, R->elig_passed));
    json_object_set_new(o, "sample", json_incref(R->sample));
    return o;
}

json_t *replay_run(struct store *st, struct rules_gen *base, const char *base_dir,
                   struct rules_gen *edit, const char *edit_dir, const struct replay_opts *o,
                   struct reqerr *e)
{
    struct run R = { .o = o };
    R.sample_below = replay_sample_below(o);
    if (rules_sim_worker(base, base_dir, &R.rw[0])) {
        rules_gen_release(edit);
        reqerr_set(e, 500, "internal", NULL, "out of memory for the replay's Lua state");
        return NULL;
    }
    if (rules_sim_worker(edit, edit_dir, &R.rw[1])) {
        rules_sim_stop(R.rw[0]);
        reqerr_set(e, 500, "internal", NULL, "out of memory for the replay's Lua state");
        return NULL;
    }
    R.mw[0] = models_worker_new(R.rw[0]->vm);
    R.mw[1] = models_worker_new(R.rw[1]->vm);
    if (!R.mw[0] || !R.mw[1]) {
        models_worker_free(R.mw[0]);
        models_worker_free(R.mw[1]);
        rules_sim_stop(R.rw[0]);
        rules_sim_stop(R.rw[1]);
        reqerr_set(e, 500, "internal", NULL, "out of memory for the replay's models");
        return NULL;
    }
    R.elig_n = R.rw[1]->gen->ncamps;
    R.elig_reached = calloc((size_t)R.elig_n + 1, sizeof *R.elig_reached);
    R.elig_passed = calloc((size_t)R.elig_n + 1, sizeof *R.elig_passed);
    if (!R.elig_reached || !R.elig_passed)
        R.elig_n = 0, R.rc = ERR_NOMEM;
    R.errs[0] = counters_new(1);
    R.errs[1] = counters_new(1);
    R.sample = json_array();
    uint64_t t0 = clock_mono_ns();
    int rc = R.rc ? 0 : dlog_scan(st, o->from_ms, o->to_ms, visit, &R);
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    json_t *out = NULL;
    if (rc || R.rc) {
        reqerr_from_code(e, rc ? rc : R.rc, "replay");
    } else {
        count_reach(&R);
        count_errors(&R);
        out = report(&R, secs);
    }
    for (int i = 0; i < R.t.n; i++) {
        free(R.t.c[i].id);
        free(R.t.c[i].times);
    }
    free(R.t.c);
    free(R.t.slots);
    free(R.elig_reached);
    free(R.elig_passed);
    hset_free(&R.reach);
    buf_free(&R.out);
    buf_free(&R.strs);
    json_decref(R.sample);
    counters_free(R.errs[0]);
    counters_free(R.errs[1]);
    models_worker_free(R.mw[0]); /* before their Lua states go */
    models_worker_free(R.mw[1]);
    rules_sim_stop(R.rw[0]);
    rules_sim_stop(R.rw[1]);
    return out;
}
