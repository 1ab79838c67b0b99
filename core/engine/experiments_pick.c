/*
 * experiments_pick.c — the published set of live experiments, each decide
 * thread's view of it, and assignment (see experiments.h).
 *
 * Why a per-thread view: decide asks "does an experiment cover this
 * campaign?" for every candidate it walks, by campaign index of its own
 * ruleset generation.  The view is that answer as an array, built when the
 * set or the generation changes; a decide then pays one atomic load and an
 * array read, and nothing at all for campaigns without an experiment.
 *
 * Assignment follows GrowthBook's runExperiment: forced variations (here:
 * by condition), the hash attribute, the namespace, the targeting
 * condition, hash(seed, value, version), the bucket ranges with coverage.
 * The steps are assign.h's, which the GrowthBook conformance cases pin.
 */
#include "engine/experiments.h"
#include "engine/assign.h"
#include "engine/cond.h"
#include "engine/rules.h"
#include "base/err.h"
#include "base/log.h"
#include <lua.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* the published set                                                      */

struct xset {
    int refs;
    uint64_t seq;
    struct experiments_live *xs; /* running first, then concluded; by id within each */
    int n;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER; /* guards g_set and refs */
static struct xset *g_set;
static uint64_t g_seq; /* atomic: the newest set's seq */

static void set_free(struct xset *s)
{
    for (int i = 0; i < s->n; i++)
        experiments_def_unref(s->xs[i].def);
    free(s->xs);
    free(s);
}

static void set_release(struct xset *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&g_mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&g_mu);
    if (last)
        set_free(s);
}

static struct xset *set_acquire(void)
{
    pthread_mutex_lock(&g_mu);
    struct xset *s = g_set;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&g_mu);
    return s;
}

static int live_cmp(const void *a, const void *b)
{
    const struct experiments_live *x = a, *y = b;
    if (x->status != y->status)
        return x->status == EXP_RUNNING ? -1 : 1;
    return strcmp(x->def->id, y->def->id);
}

int experiments_publish(const struct experiments_live *xs, int n)
{
    struct xset *s = calloc(1, sizeof *s);
    if (!s || !(s->xs = calloc((size_t)(n > 0 ? n : 1), sizeof *s->xs))) {
        free(s);
        return ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        s->xs[i] = xs[i];
        experiments_def_ref(xs[i].def);
    }
    s->n = n;
    if (n > 1)
        qsort(s->xs, (size_t)n, sizeof *s->xs, live_cmp);
    s->refs = 1;
    pthread_mutex_lock(&g_mu);
    struct xset *old = g_set;
    s->seq = (old ? old->seq : 0) + 1;
    g_set = s;
    __atomic_store_n(&g_seq, s->seq, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_mu);
    set_release(old);
    return 0;
}

void experiments_clear(void)
{
    pthread_mutex_lock(&g_mu);
    struct xset *old = g_set;
    g_set = NULL;
    __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_mu);
    set_release(old);
}

/* ---------------------------------------------------------------------- */
/* per-thread views                                                       */

/* An experiment covering one campaign: where each of its variants is in
 * the campaign's variant list. */
struct link {
    int x;                                 /* index in set->xs */
    int next;                              /* next link of the same campaign, or -1 */
    int broken;                            /* a variant is missing from the campaign */
    int vmap[EXPERIMENTS_MAX_VARIANTS];
};

struct experiments_view {
    struct xset *set;   /* a reference */
    uint64_t set_seq, gen_seq;
    int ncamps;
    int *first;         /* per campaign of the generation: first link or -1 */
    struct link *links;
    int nlinks;
};

static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

static void view_free(void *p)
{
    struct experiments_view *v = p;
    if (!v)
        return;
    set_release(v->set);
    free(v->first);
    free(v->links);
    free(v);
}

static void key_init(void) { pthread_key_create(&g_key, view_free); }

/* Rebuild v for generation g and the newest set. */
static void view_build(struct experiments_view *v, const struct rules_gen *g, uint64_t seq)
{
    set_release(v->set);
    v->set = set_acquire();
    v->set_seq = seq;
    v->gen_seq = g->seq;
    v->nlinks = 0;
    free(v->first);
    free(v->links);
    v->first = NULL;
    v->links = NULL;
    v->ncamps = 0;
    const struct xset *s = v->set;
    if (!s || !s->n)
        return;
    int cap = 0;
    for (int i = 0; i < s->n; i++)
        cap += s->xs[i].def->ncampaigns;
    v->first = malloc(sizeof *v->first * (size_t)(g->ncamps ? g->ncamps : 1));
    v->links = calloc((size_t)cap, sizeof *v->links);
    if (!v->first || !v->links) {
        free(v->first);
        free(v->links);
        v->first = NULL;
        v->links = NULL;
        return; /* out of memory: no experiment this time; the next call retries */
    }
    v->ncamps = g->ncamps;
    for (int c = 0; c < g->ncamps; c++)
        v->first[c] = -1;
    /* links in set order (running first, by id) */
    for (int i = s->n - 1; i >= 0; i--) {
        const struct experiments_def *d = s->xs[i].def;
        for (int k = 0; k < d->ncampaigns; k++) {
            int c = rules_gen_find_campaign(g, d->campaigns[k]);
            if (c < 0)
                continue;
            struct link *l = &v->links[v->nlinks++];
            l->x = i;
            l->next = v->first[c];
            v->first[c] = (int)(l - v->links);
            const struct rules_campaign *rc = &g->camps[c];
            for (int j = 0; j < d->nvariants; j++) {
                l->vmap[j] = -1;
                for (int m = 0; m < rc->nvariants; m++)
                    if (!strcmp(rc->variants[m].id, d->variants[j]))
                        l->vmap[j] = m;
                if (l->vmap[j] < 0)
                    l->broken = 1;
            }
        }
    }
}

const struct experiments_view *experiments_view(const struct rules_gen *g)
{
    uint64_t seq = __atomic_load_n(&g_seq, __ATOMIC_ACQUIRE);
    pthread_once(&g_key_once, key_init);
    struct experiments_view *v = pthread_getspecific(g_key);
    if (!v) {
        if (!seq || !g)
            return NULL; /* nothing was ever published: no view needed */
        if (!(v = calloc(1, sizeof *v)))
            return NULL;
        pthread_setspecific(g_key, v);
    }
    if (!g)
        return NULL;
    if (v->set_seq != seq || v->gen_seq != g->seq)
        view_build(v, g, seq);
    return v->nlinks ? v : NULL;
}

int experiments_covers(const struct experiments_view *v, int camp)
{
    return v && camp >= 0 && camp < v->ncamps && v->first[camp] >= 0;
}

/* ---------------------------------------------------------------------- */
/* assignment                                                             */

/* JavaScript's String(number): the shortest text that reads back the same. */
static void js_number(double x, char *out, size_t len)
{
    if (x == (double)(long long)x && x > -1e21 && x < 1e21) {
        snprintf(out, len, "%lld", (long long)x);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(out, len, "%.*g", p, x);
        if (strtod(out, NULL) == x)
            return;
    }
}

/* The hash attribute's value as GrowthBook would hash it (its String()),
 * into buf; NULL when the customer has none (then not in the experiment). */
static const char *hash_value(const struct experiments_def *d, const struct experiments_who *w,
                              char *buf, size_t len)
{
    if (!strcmp(d->hash_attribute, "id"))
        return w->customer && *w->customer ? w->customer : NULL;
    if (!w->L)
        return NULL;
    lua_getfield(w->L, w->p_idx, d->hash_attribute);
    const char *r = NULL;
    switch (lua_type(w->L, -1)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(w->L, -1, &n);
        if (n && n < len) {
            memcpy(buf, s, n + 1);
            r = buf;
        }
        break;
    }
    case LUA_TNUMBER:
        js_number(lua_tonumber(w->L, -1), buf, len);
        r = buf;
        break;
    case LUA_TBOOLEAN:
        snprintf(buf, len, "%s", lua_toboolean(w->L, -1) ? "true" : "false");
        r = buf;
        break;
    default:
        break;
    }
    lua_pop(w->L, 1);
    return r;
}

static int cond_match(const struct cond *c, const struct experiments_who *w)
{
    static const char empty_map[] = "\x80";
    int r = w->pmp ? cond_eval(c, w->pmp, w->plen, NULL) : cond_eval(c, empty_map, 1, NULL);
    return r == 1;
}

/* Where the hash puts a customer with hash value `val`: a variant index,
 * -1 not in the experiment (*why says why), or -2 held out. */
static int place(const struct experiments_def *d, const char *val, const struct experiments_who *w,
                 const char **why)
{
    size_t vl = strlen(val);
    if (d->has_namespace &&
        !assign_in_namespace(val, vl, d->ns, strlen(d->ns), d->ns_lo, d->ns_hi)) {
        *why = "namespace";
        return -1;
    }
    if (d->condition && !cond_match(d->condition, w)) {
        *why = "condition";
        return -1;
    }
    double h;
    if (assign_hash(d->seed, strlen(d->seed), val, vl, d->hash_version, &h)) {
        *why = "hash";
        return -1;
    }
    int vi = assign_choose(h, (const double(*)[2])d->ranges, d->nvariants);
    if (vi < 0) {
        *why = "coverage";
        return -1;
    }
    if (d->holdout > 0) {
        /* an independent second hash (version 2, its own seed): which
         * customers are held out does not depend on their variant */
        char hs[EXPERIMENTS_MAX_SEED + 16];
        int n = snprintf(hs, sizeof hs, "__holdout:%s", d->seed);
        double hh;
        if (!assign_hash(hs, (size_t)n, val, vl, 2, &hh) && hh < d->holdout) {
            *why = "holdout";
            return -2;
        }
    }
    *why = "hash";
    return vi;
}

/* Forced variations: the first rule whose condition matches. */
static int forced(const struct experiments_def *d, const struct experiments_who *w)
{
    for (int i = 0; i < d->nforced; i++)
        if (cond_match(d->forced[i].cond, w))
            return d->forced[i].variant;
    return -1;
}

static void serve(struct experiments_pick *o, const struct link *l, const struct experiments_live *x,
                  int vi, const char *why)
{
    o->outcome = EXPERIMENTS_SERVE;
    o->variant = l->vmap[vi];
    o->exp_id = x->def->id;
    o->variant_id = x->def->variants[vi];
    o->xkey = x->xkey;
    o->why = why;
}

static void hold(struct experiments_pick *o, const struct experiments_live *x, const char *why)
{
    o->outcome = EXPERIMENTS_HOLD;
    o->variant = -1;
    o->exp_id = x->def->id;
    o->variant_id = EXPERIMENTS_HOLDOUT;
    o->xkey = x->xkey;
    o->why = why;
}

int experiments_pick(const struct experiments_view *v, int camp, const struct experiments_who *w,
                     struct store_txn *t, struct experiments_pick *out)
{
    memset(out, 0, sizeof *out);
    out->variant = -1;
    if (!experiments_covers(v, camp))
        return ERR_INVAL;
    const struct xset *s = v->set;
    const struct link *control = NULL; /* the first usable running experiment */
    const char *why = "namespace";
    char vbuf[160];
    int l;
    /* running experiments, in id order: the first that claims the customer */
    for (l = v->first[camp]; l >= 0; l = v->links[l].next) {
        const struct link *lk = &v->links[l];
        const struct experiments_live *x = &s->xs[lk->x];
        if (x->status != EXP_RUNNING)
            break; /* concluded ones come after every running one */
        if (lk->broken)
            continue;
        const struct experiments_def *d = x->def;
        if (!control)
            control = lk;
        int fv = d->nforced ? forced(d, w) : -1;
        if (fv >= 0) {
            serve(out, lk, x, fv, "forced");
            return 0;
        }
        struct experiments_exposure e;
        int seen = t && experiments_expo_get(t, x->xkey, w->customer, &e) == 0;
        if (seen && d->sticky) {
            if (!strcmp(e.variant, EXPERIMENTS_HOLDOUT) && d->holdout > 0) {
                hold(out, x, "sticky");
                out->in_experiment = 1;
                return 0;
            }
            int vi = experiments_variant_index(d, e.variant);
            if (vi >= 0) {
                serve(out, lk, x, vi, "sticky");
                out->in_experiment = 1;
                return 0;
            }
        }
        const char *val = hash_value(d, w, vbuf, sizeof vbuf);
        if (!val) {
            why = "no_hash_attribute";
            continue;
        }
        const char *pw;
        int vi = place(d, val, w, &pw);
        if (vi == -1) {
            why = pw;
            continue;
        }
        if (vi == -2)
            hold(out, x, pw);
        else
            serve(out, lk, x, vi, pw);
        out->in_experiment = 1;
        out->log = !seen;
        return 0;
    }
    /* concluded: the winner for everyone, a kept holdout still held */
    for (; l >= 0; l = v->links[l].next) {
        const struct link *lk = &v->links[l];
        const struct experiments_live *x = &s->xs[lk->x];
        if (lk->broken)
            continue;
        const struct experiments_def *d = x->def;
        if (x->keep_holdout && d->holdout > 0) {
            const char *val = hash_value(d, w, vbuf, sizeof vbuf);
            const char *pw;
            if (val && place(d, val, w, &pw) == -2) {
                hold(out, x, "holdout");
                return 0;
            }
        }
        serve(out, lk, x, x->winner, "winner");
        return 0;
    }
    if (!control)
        return ERR_INVAL; /* every experiment here lacks a variant in the campaign */
    /* in no experiment: GrowthBook's "not in experiment" gets variation 0 */
    serve(out, control, &s->xs[control->x], 0, why);
    return 0;
}
