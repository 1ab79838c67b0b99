/*
 * segments_audience.c — audiences: segments combined (any of = union, all
 * of = intersection, exclude), narrowed by an ad-hoc condition and an
 * optional random holdout, counted and sampled; saved under an id so a
 * campaign send can target exactly that definition.
 *
 * With segments named and no condition, the count is bitmap algebra over
 * the in-memory view (engine/segbits.h): the sample is the members at
 * random ranks, a holdout hashes each member's id.  Otherwise, or when the
 * view cannot answer (or ?via=scan asks), candidates come from the
 * customer records of the segment index (a scan testing a few bits per
 * customer, no profile read) — a count without a condition or holdout
 * reads nothing else — or, with no segment named, every profile.  The
 * condition is evaluated on each candidate's view, as a segment's would
 * be; the holdout is
 * GrowthBook's hash (core/engine/assign.h, version 2) of the customer id
 * seeded with the audience id, so the same customers are held out every
 * time the audience is used.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "engine/segbits.h"
#include "engine/assign.h"
#include "engine/cond.h"
#include "store/record.h"
#include "store/store.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/id.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_MAX 1000

struct segments_audience {
    char id[64];
    char **ids[3];       /* any, all, exclude */
    int n[3];
    json_t *def;
    struct cond *cond;
    double holdout;
    int sample;
};

void segments_audience_free(struct segments_audience *a)
{
    if (!a)
        return;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < a->n[k]; i++)
            free(a->ids[k][i]);
        free(a->ids[k]);
    }
    json_decref(a->def);
    cond_free(a->cond);
    free(a);
}

static const char *const list_names[3] = { "any", "all", "exclude" };

int segments_audience_compile(const json_t *def, const char *seed, struct segments_audience **out,
                              struct reqerr *err)
{
    *out = NULL;
    if (!json_is_object(def))
        return reqerr_set(err, 400, "invalid_body", NULL, "an audience is a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)def, k, v) {
        if (strcmp(k, "any") && strcmp(k, "all") && strcmp(k, "exclude") && strcmp(k, "conditions") &&
            strcmp(k, "holdout") && strcmp(k, "sample") && strcmp(k, "name"))
            return reqerr_set(err, 400, "invalid_field", k,
                              "unknown field \"%s\" (an audience has any, all, exclude, conditions, "
                              "holdout, sample, name)", k);
    }
    struct segments_audience *a = calloc(1, sizeof *a);
    if (!a)
        return ERR_NOMEM;
    snprintf(a->id, sizeof a->id, "%s", seed ? seed : "");
    struct segments_gen *g = segments_gen_acquire();
    int rc = 0;
    for (int l = 0; l < 3 && !rc; l++) {
        json_t *arr = json_object_get(def, list_names[l]);
        if (!arr)
            continue;
        if (!json_is_array(arr) || json_array_size(arr) > SEGMENTS_MAX) {
            rc = reqerr_set(err, 400, "invalid_field", list_names[l],
                            "%s must be a list of segment ids", list_names[l]);
            break;
        }
        a->ids[l] = calloc(json_array_size(arr) + 1, sizeof(char *));
        if (!a->ids[l]) {
            rc = ERR_NOMEM;
            break;
        }
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            char field[64];
            snprintf(field, sizeof field, "%s[%zu]", list_names[l], i);
            if (!json_is_string(x) ||
                segments_find(g, json_string_value(x), json_string_length(x)) < 0) {
                rc = reqerr_set(err, 400, "unknown_segment", field, "%s: no segment \"%s\"", field,
                                json_is_string(x) ? json_string_value(x) : "(not a string)");
                break;
            }
            a->ids[l][a->n[l]++] = strdup(json_string_value(x));
        }
    }
    json_t *c = json_object_get(def, "conditions");
    if (!rc && c) {
        struct cond_opts o = { .mode = COND_STRICT };
        rc = cond_compile(c, &o, &a->cond, err);
        for (size_t i = 0; !rc && i < cond_nsegments(a->cond); i++) {
            const char *id = cond_segment(a->cond, i);
            if (segments_find(g, id, strlen(id)) < 0)
                rc = reqerr_set(err, 400, "unknown_segment", "conditions",
                                "conditions: no segment \"%s\"", id);
        }
    }
    json_t *h = json_object_get(def, "holdout");
    if (!rc && h) {
        a->holdout = json_number_value(h);
        if (!json_is_number(h) || !(a->holdout >= 0 && a->holdout < 1))
            rc = reqerr_set(err, 400, "invalid_field", "holdout",
                            "holdout is the share held out, a number from 0 up to (not including) 1");
    }
    json_t *s = json_object_get(def, "sample");
    a->sample = 10;
    if (!rc && s) {
        if (!json_is_integer(s) || json_integer_value(s) < 0 || json_integer_value(s) > SAMPLE_MAX)
            rc = reqerr_set(err, 400, "invalid_field", "sample",
                            "sample must be an integer from 0 to %d", SAMPLE_MAX);
        else
            a->sample = (int)json_integer_value(s);
    }
    segments_gen_release(g);
    if (!rc && !(a->def = json_deep_copy(def)))
        rc = ERR_NOMEM;
    if (rc) {
        segments_audience_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

/* ---- walking the members ------------------------------------------------------- */

struct walk {
    struct store_txn *t;
    const struct segments_audience *a;
    struct segments_gen *g;
    int slots[3][SEGMENTS_MAX];
    int ns[3];
    struct buf view;
    uint64_t *bits;      /* a customer's segments, g->nw words */
};

static int walk_init(struct walk *w, struct store_txn *t, const struct segments_audience *a)
{
    memset(w, 0, sizeof *w);
    w->t = t;
    w->a = a;
    w->g = segments_gen_acquire();
    if (!w->g)
        return ERR_NOTFOUND;
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < a->n[l]; i++) {
            int j = segments_find(w->g, a->ids[l][i], strlen(a->ids[l][i]));
            /* a segment deleted since: "in it" is never true */
            w->slots[l][w->ns[l]++] = j >= 0 ? w->g->segs[j].slot : -1;
        }
    w->bits = calloc(w->g->nw, sizeof *w->bits);
    return w->bits ? 0 : ERR_NOMEM;
}

static void walk_free(struct walk *w)
{
    segments_gen_release(w->g);
    buf_free(&w->view);
    free(w->bits);
}

static int seg_cb(void *ud, const char *id, size_t idlen, const char *mp, size_t len)
{
    (void)mp;
    (void)len;
    struct walk *w = ud;
    int j = segments_find(w->g, id, idlen);
    return j >= 0 && segbit_get(w->bits, j);
}

/* Does the customer pass the condition and the holdout?  1 yes, 0 held
 * out or not matching (*held says which), <0 error. */
static int admit(struct walk *w, const char *cust, size_t clen, const char *prof, size_t plen,
                 const char *stats, size_t slen, int *held)
{
    *held = 0;
    const struct segments_audience *a = w->a;
    if (a->cond) {
        int rc = segments_customer_bits(w->t, w->g, cust, clen, w->bits);
        if (rc < 0)
            return rc;
        buf_reset(&w->view);
        if ((rc = segments_view(&w->view, cust, clen, prof, plen, stats, slen, clock_now())))
            return rc;
        struct cond_env env = { .segment = seg_cb, .segment_ud = w };
        rc = cond_eval(a->cond, w->view.p, w->view.len, &env);
        if (rc != 1)
            return 0; /* no match (a malformed profile does not match either) */
    }
    if (a->holdout > 0) {
        double h;
        if (assign_hash(a->id, strlen(a->id), cust, clen, 2, &h) == 0 && h < a->holdout) {
            *held = 1;
            return 0;
        }
    }
    return 1;
}

/* Is a customer with segment record `c` a candidate (any of, all of, none
 * of the audience's segments)? */
static int candidate(const struct walk *w, const struct segidx_cust *c)
{
    int any = !w->a->n[0];
    for (int i = 0; i < w->ns[0] && !any; i++)
        any = w->slots[0][i] >= 0 && segidx_has(c, w->slots[0][i]);
    if (!any)
        return 0;
    for (int i = 0; i < w->ns[1]; i++)
        if (w->slots[1][i] < 0 || !segidx_has(c, w->slots[1][i]))
            return 0;
    for (int i = 0; i < w->ns[2]; i++)
        if (w->slots[2][i] >= 0 && segidx_has(c, w->slots[2][i]))
            return 0;
    return 1;
}

/* A customer found by scanning (no segment to start from): excluded? */
static int excluded(struct walk *w, const char *cust, size_t clen)
{
    if (!w->a->n[2])
        return 0;
    struct segidx_cust c;
    if (segidx_cust_read(w->t, cust, clen, &c))
        return 0;
    for (int i = 0; i < w->ns[2]; i++)
        if (w->slots[2][i] >= 0 && segidx_has(&c, w->slots[2][i]))
            return 1;
    return 0;
}

struct scan_fwd {
    struct walk *w;
    segments_member_fn fn;
    void *ud;
    long admitted, held;
    int rc;
};

static int scan_cb(void *ud, const char *id, size_t idlen, const char *prof, size_t plen,
                   const char *stats, size_t slen)
{
    struct scan_fwd *x = ud;
    if (excluded(x->w, id, idlen))
        return 0;
    int held;
    int r = admit(x->w, id, idlen, prof, plen, stats, slen, &held);
    if (r < 0)
        return r;
    x->held += held;
    if (r == 1) {
        x->admitted++;
        if (x->fn && (r = x->fn(x->ud, id, idlen, prof, plen, stats, slen)))
            return r < 0 ? r : 1;
    }
    return 0;
}

/* A candidate from the index: its profile and stats, then the condition
 * and the holdout. */
struct index_fwd {
    struct walk *w;
    segments_member_fn fn;
    void *ud;
    int rc;
};

static int index_cb(void *ud, const char *id, size_t idlen, const struct segidx_cust *c)
{
    struct index_fwd *x = ud;
    if (!candidate(x->w, c))
        return 0;
    const void *pv = NULL, *sv = NULL;
    size_t pl = 0, sl = 0;
    if (store_get(x->w->t, STORE_PROFILES, id, idlen, &pv, &pl))
        pv = NULL;
    if (store_get(x->w->t, STORE_PSTATS, id, idlen, &sv, &sl))
        sv = NULL;
    int held;
    int r = admit(x->w, id, idlen, pv, pl, sv, sl, &held);
    if (r == 1 && x->fn)
        r = x->fn(x->ud, id, idlen, pv, pl, sv, sl);
    if (r < 0)
        x->rc = r;
    return r; /* 0 go on; the member function's 1 stops the walk */
}

long segments_audience_next(struct store_txn *t, const struct segments_audience *a, char *cursor,
                            long max, segments_member_fn fn, void *ud)
{
    struct walk w;
    int rc = walk_init(&w, t, a);
    if (rc) {
        walk_free(&w);
        return rc == ERR_NOTFOUND ? 0 : rc;
    }
    long visited;
    char last[132] = "";
    const char *after = !strncmp(cursor, "c:", 2) ? cursor + 2 : "";
    if (!a->n[0] && !a->n[1]) {
        struct scan_fwd x = { &w, fn, ud, 0, 0, 0 };
        visited = segments_customers(t, after, max, scan_cb, &x, last);
    } else {
        struct index_fwd x = { &w, fn, ud, 0 };
        visited = segidx_scan(t, after, max, index_cb, &x, last);
        if (x.rc)
            visited = x.rc;
    }
    if (visited > 0)
        snprintf(cursor, 132, "c:%.128s", last);
    walk_free(&w);
    return visited;
}

/* ---- counting (POST /api/v1/targeting/audience) ------------------------------------ */

struct tally {
    const char *by;       /* "view" or "scan" */
    uint64_t count, held;
    uint64_t seen;        /* for the reservoir */
    uint64_t rng;
    int k;
    char (*sample)[132];
    int ns;
};

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void reservoir(struct tally *t, const char *id, size_t il)
{
    t->seen++;
    if (!t->k)
        return;
    int slot = t->ns < t->k ? t->ns++ : (int)(xorshift(&t->rng) % t->seen);
    if (slot < t->k)
        snprintf(t->sample[slot], 132, "%.*s", (int)il, id);
}

static int tally_cb(void *ud, const char *id, size_t idlen, const char *prof, size_t plen,
                    const char *stats, size_t slen)
{
    (void)prof;
    (void)plen;
    (void)stats;
    (void)slen;
    struct tally *t = ud;
    t->count++;
    reservoir(t, id, idlen);
    return 0;
}

/* Count from the customer records alone (segments named, no condition, no
 * holdout): no profile is read. */
struct fast_ctx {
    struct walk *w;
    struct tally *t;
};

static int fast_cb(void *ud, const char *id, size_t idlen, const struct segidx_cust *c)
{
    struct fast_ctx *x = ud;
    if (candidate(x->w, c)) {
        x->t->count++;
        reservoir(x->t, id, idlen);
    }
    return 0;
}

static int count_fast(struct store_txn *tx, const struct segments_audience *a, struct tally *t)
{
    struct walk w;
    int rc = walk_init(&w, tx, a);
    if (rc) {
        walk_free(&w);
        return rc == ERR_NOTFOUND ? 0 : rc;
    }
    struct fast_ctx x = { &w, t };
    char last[132];
    long n = segidx_scan(tx, "", LONG_MAX, fast_cb, &x, last);
    walk_free(&w);
    return n < 0 ? (int)n : 0;
}

/* ---- counting from the in-memory view (engine/segbits.h) -------------------------- */

static int sample_cb(void *ud, const char *id, size_t il)
{
    struct tally *t = ud;
    if (t->ns < t->k)
        snprintf(t->sample[t->ns++], 132, "%.*s", (int)il, id);
    return 0;
}

/* Holdout over the members: each member's hash decides, as admit() does. */
struct hold_ctx {
    const struct segments_audience *a;
    struct tally *t;
};

static int hold_cb(void *ud, const char *id, size_t il)
{
    struct hold_ctx *x = ud;
    double h;
    if (assign_hash(x->a->id, strlen(x->a->id), id, il, 2, &h) == 0 && h < x->a->holdout) {
        x->t->held++;
        return 0;
    }
    x->t->count++;
    reservoir(x->t, id, il);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Segments named, no condition: the count is bitmap algebra; the sample is
 * members at `k` distinct random ranks; a holdout hashes every member.
 * @return 0, ERR_BUSY (the view is not usable: scan), errors. */
static int tally_view(const struct segments_audience *a, struct tally *t)
{
    struct walk w;
    int rc = walk_init(&w, NULL, a);
    if (rc) {
        walk_free(&w);
        return rc == ERR_NOTFOUND ? ERR_BUSY : rc;
    }
    struct segbits_expr e = { w.slots[0], w.slots[1], w.slots[2], w.ns[0], w.ns[1], w.ns[2] };
    if (a->holdout > 0) {
        struct hold_ctx x = { a, t };
        rc = segbits_members(&e, hold_cb, &x);
    } else if ((rc = segbits_count(&e, &t->count)) == 0 && t->k && t->count) {
        uint64_t want = t->count < (uint64_t)t->k ? t->count : (uint64_t)t->k;
        uint64_t *ranks = calloc(want, sizeof *ranks);
        if (!ranks) {
            rc = ERR_NOMEM;
        } else {
            /* Floyd's choice of `want` distinct ranks out of count */
            uint64_t n = 0;
            for (uint64_t j = t->count - want; j < t->count; j++) {
                uint64_t r = xorshift(&t->rng) % (j + 1), i;
                for (i = 0; i < n && ranks[i] != r; i++)
                    ;
                uint64_t pick = i < n ? j : r;
                ranks[n++] = pick;
            }
            qsort(ranks, n, sizeof *ranks, cmp_u64);
            rc = segbits_at_ranks(&e, ranks, (int)n, sample_cb, t);
            free(ranks);
        }
    }
    walk_free(&w);
    return rc;
}

static int tally_all(struct store *st, const struct segments_audience *a, int scan,
                     struct tally *t)
{
    t->by = "scan";
    if (!scan && (a->n[0] || a->n[1]) && !a->cond) {
        struct tally keep = *t;
        int rc = tally_view(a, t);
        if (rc != ERR_BUSY) {
            t->by = "view";
            return rc;
        }
        *t = keep; /* not usable now: the scan answers */
    }
    struct store_txn *tx;
    int rc = store_rtxn_begin(st, &tx);
    if (rc)
        return rc;
    if ((a->n[0] || a->n[1]) && !a->cond && a->holdout <= 0) {
        rc = count_fast(tx, a, t);
        store_txn_end(tx);
        return rc;
    }
    char cursor[132] = "";
    for (;;) {
        /* held-out customers are counted by a second look (admit says why) */
        long n = segments_audience_next(tx, a, cursor, 100000, tally_cb, t);
        if (n <= 0) {
            rc = (int)n;
            break;
        }
    }
    store_txn_end(tx);
    return rc;
}

static void new_id(char *out, size_t len)
{
    static __thread uint64_t s;
    if (!s)
        s = (uint64_t)clock_now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&s;
    uint64_t r = xorshift(&s);
    snprintf(out, len, "aud-%012llx", (unsigned long long)(r & 0xffffffffffffull));
}

static json_t *result_json(const char *id, const json_t *def, const struct tally *t, int64_t at)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "count", json_integer((json_int_t)t->count));
    json_t *s = json_array();
    for (int i = 0; i < t->ns; i++)
        json_array_append_new(s, json_string(t->sample[i]));
    json_object_set_new(o, "sample", s);
    json_object_set(o, "definition", (json_t *)def);
    json_object_set_new(o, "counted_at", json_integer(at));
    json_object_set_new(o, "counted_by", json_string(t->by));
    return o;
}

/* The held-out count: customers matching everything but the holdout. */
static int count_held(struct store *st, const struct segments_audience *a, int scan,
                      uint64_t *held)
{
    *held = 0;
    if (a->holdout <= 0)
        return 0;
    struct segments_audience b = *a;
    b.holdout = 0;
    struct tally t = { 0 };
    int rc = tally_all(st, &b, scan, &t);
    *held = t.count;
    return rc;
}

json_t *segments_audience_create(struct app *app, const json_t *body, int scan,
                                 struct reqerr *err)
{
    char id[64];
    new_id(id, sizeof id);
    struct segments_audience *a;
    if (segments_audience_compile(body, id, &a, err))
        return NULL;
    struct tally t = { 0 };
    t.k = a->sample;
    t.rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)strlen(id) * 31 ^ id[5];
    t.sample = t.k ? calloc((size_t)t.k, sizeof *t.sample) : NULL;
    int rc = t.k && !t.sample ? ERR_NOMEM : tally_all(app->store, a, scan, &t);
    uint64_t matched = 0;
    if (!rc && a->holdout > 0 && !strcmp(t.by, "view"))
        matched = t.count + t.held; /* the view's holdout walk counted both */
    else if (!rc)
        rc = count_held(app->store, a, scan, &matched);
    int64_t now = clock_now();
    json_t *o = NULL;
    if (!rc) {
        o = result_json(id, a->def, &t, now);
        if (a->holdout > 0) {
            json_object_set_new(o, "matched", json_integer((json_int_t)matched));
            json_object_set_new(o, "held_out", json_integer((json_int_t)(matched - t.count)));
        }
        /* saved for sends: the definition (evaluated again when used) */
        json_t *rec = json_pack("{s:O, s:I, s:I}", "definition", a->def, "created_at",
                                (json_int_t)now, "count", (json_int_t)t.count);
        struct store_txn *tx;
        char key[80];
        int kl = snprintf(key, sizeof key, "A%s", id);
        if (!rec || (rc = store_wtxn_begin(app->store, &tx)) == 0) {
            rc = rec ? record_put(tx, STORE_SEGMENTS, key, (size_t)kl, rec) : ERR_NOMEM;
            if (rc)
                store_txn_end(tx);
            else
                rc = store_txn_commit(tx, STORE_DURABLE);
        }
        json_decref(rec);
    }
    free(t.sample);
    segments_audience_free(a);
    if (rc) {
        json_decref(o);
        reqerr_from_code(err, rc, "audience");
        return NULL;
    }
    return o;
}

int segments_audience_load(struct store_txn *t, const char *id, struct segments_audience **out,
                           struct reqerr *err)
{
    *out = NULL;
    char key[160];
    if (!id_valid(id) || strlen(id) > 120)
        return reqerr_set(err, 404, "not_found", "audience_id", "no audience \"%s\"", id);
    int kl = snprintf(key, sizeof key, "A%s", id);
    int rc;
    json_t *rec = record_get(t, STORE_SEGMENTS, key, (size_t)kl, &rc);
    if (!rec)
        return rc == ERR_NOTFOUND
                   ? reqerr_set(err, 404, "not_found", "audience_id", "no audience \"%s\"", id)
                   : reqerr_from_code(err, rc, "audience");
    rc = segments_audience_compile(json_object_get(rec, "definition"), id, out, err);
    json_decref(rec);
    return rc;
}

json_t *segments_audience_get(struct store *st, const char *id, int scan, struct reqerr *err)
{
    struct store_txn *tx;
    int rc = store_rtxn_begin(st, &tx);
    if (rc) {
        reqerr_from_code(err, rc, "audience");
        return NULL;
    }
    struct segments_audience *a;
    rc = segments_audience_load(tx, id, &a, err);
    store_txn_end(tx);
    if (rc)
        return NULL;
    struct tally t = { 0 };
    t.k = a->sample;
    t.rng = 0x9E3779B97F4A7C15ull;
    t.sample = t.k ? calloc((size_t)t.k, sizeof *t.sample) : NULL;
    rc = t.k && !t.sample ? ERR_NOMEM : tally_all(st, a, scan, &t);
    json_t *o = rc ? NULL : result_json(id, a->def, &t, clock_now());
    free(t.sample);
    segments_audience_free(a);
    if (rc)
        reqerr_from_code(err, rc, "audience");
    return o;
}
