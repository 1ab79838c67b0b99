/*
 * decide_internal.h — what decide's files share (decide.c, decide_log.c,
 * decide_rank.c):
 * a candidate, the per-worker scratch and one request's state.  Not an
 * interface: nothing outside engine/decide*.c includes it.
 */
#ifndef PROMOD_DECIDE_INTERNAL_H
#define PROMOD_DECIDE_INTERNAL_H
#ifndef PROMOD_DECIDE_H
#error "include engine/decide.h before engine/decide_internal.h"
#endif
#include "engine/audience.h"
#include "engine/content.h"
#include "engine/experiments.h"
#include "engine/formula.h"
#include "engine/rules.h"
#include "engine/throttle.h"
#include "base/i18n.h"
#include <lua.h>

struct cand {
    int idx;           /* campaign index in the generation */
    int rank;          /* position in the channel's index: priority desc, then id */
    double score;
    json_t *xp;        /* explain entry (borrowed from the explain array) */
    int variant;       /* chosen variant index */
    struct buf content; /* rendered content, in the reply's wire form */
    int served;        /* reserved and going into the reply */
    int hooked;        /* the throttle hook passed it on the counts in `seen` */
    int coupon;        /* its content shows {{coupon}}: a code is assigned when served */
    int li;            /* the locale of its content (an index into the campaign's locales) */
    char fmt[I18N_TAG_MAX]; /* the locale its format filters write in, "" = none needed */
    struct throttle_counts seen;
    int picked;        /* an experiment chose the variant (pick) */
    struct experiments_pick pick;
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
    struct cand **batch;  /* 3 * bcap: the reservation batch, the offers, then the rank
                             order (pointers: sorting the big candidates moved ~40 KB) */
    int bcap;
    struct throttle_cust tc;
    struct throttle_resv rv;
    struct content_scratch cs; /* template rendering */
    uint64_t *pwords;     /* decide_prune.c: the deferred positions and the boost mask */
    size_t pwcap;
};

/* A decide's state, handed from step to step. */
struct req {
    const struct decide_req *q;
    int msgpack;                 /* reply wire form */
    struct rules_worker *rw;
    struct models_worker *mw;    /* the worker's models: predictions once per decide */
    const struct rules_gen *g;   /* the worker's adopted generation */
    int chi;                     /* channel index in g */
    const struct rules_channel *ch;
    lua_State *L;
    int top;                     /* Lua stack height at entry, restored before the reply */
    int64_t now;
    long gcap;                   /* global daily cap (config) */
    struct store_txn *t;         /* the request's read snapshot */
    int p_idx, ctx_idx;          /* p and ctx on the Lua stack, for C readers */
    int p_ro, ctx_ro;            /* what hooks get for them (luavm_push_readonly) */
    json_t *explain;             /* array of entries, or NULL */
    const char *blocked;         /* consent or quiet hours close the channel: why */
    struct scratch *scr;
    struct throttle_counts shared; /* channel and global counts, read once */
    struct cand *cands;
    int ncand;
    int next;                    /* first candidate the walk has not reached */
    int accepted;
    struct cand **batch;         /* the reservation batch ... */
    struct cand **served;        /* ... and the offers, in order */
    struct cand **order;         /* the candidates, by rank up to `sorted` (rank(), take()) */
    int sorted;                  /* order[0 .. sorted) is final */
    uint64_t pbit;               /* the placement's bit (rules_gen_placement_bit) */
    const uint64_t *bmask;       /* positions whose boosts declared scores evaluate together */
    const uint64_t *skip;        /* positions left unscored (decide_prune.c) ... */
    double skip_bound;           /* ... none scores above this */
    int pn;                      /* how many are left unscored (0: none) */
    int pm_ok;                   /* pm: the multiplier of the channel's prune `per` */
    double pm;
    struct content_locale loc;       /* the locale the request asks for, on first need */
    struct audience_cust ac;     /* segments and campaign audiences (audience.h) */
    struct formula_memo fmemo;   /* what declared scores read (formula.h) */
    const struct experiments_view *xv; /* live experiments of r->g, or NULL */
    const char *pmp;             /* the stored profile (msgpack, in r->t), or NULL */
    size_t plen;
    const char *smp;             /* p.stats as stored (msgpack, in r->t), or NULL */
    size_t slen;
    int logged;                  /* a sampled live decide: goes to the decision log */
    char did[21];                /* the decision id */
};

/* Ranking (decide_rank.c): decide_rank() after the candidates are known;
 * decide_take() gives the next candidate in rank order (r->next <
 * r->ncand), ordering only as far as the walk gets; decide_rank_rest()
 * orders everything from r->next on (explain reports them in order). */
void decide_rank(struct req *r);
struct cand *decide_take(struct req *r);
void decide_rank_rest(struct req *r);
#define RANK_SPARE 4 /* candidates ranked beyond the limit at first (caps hold some back) */

/* Candidates (decide.c): position j of the channel's list through the
 * cheap filters, eligible and the score; appended to r->cands when it
 * passes (xp: its explain entry, or NULL). */
void decide_consider(struct req *r, int j, json_t *xp);

/* Leaving unscored the candidates that cannot rank among the offers
 * (decide_prune.c).  decide_prune_begin() before step 3's loop over
 * `universe` (the positions it visits, NULL = all): 1 when some are
 * skipped — decide_prune_skipped(j) says which, the loop leaves them out.
 * The walk asks decide_more() whether anything is left and takes
 * candidates with decide_prune_take() (NULL: none), which scores the
 * skipped ones first when one of them might rank before what it would
 * give.  Without skipping these are decide_take() over r->cands. */
int decide_prune_begin(struct req *r, const uint64_t *universe);
int decide_prune_skipped(const struct req *r, int j);
int decide_more(const struct req *r);
/* Its /metrics lines (promod_decide_unscored_total ...). */
void decide_prune_metrics(struct buf *out);
struct cand *decide_prune_take(struct req *r);

/* The decision log and replay (decide_log.c): after the walk, hand the
 * offers to a replay's caller (q->as_was) and queue a sampled live decide
 * for the decision log (engine/dlog.h). */
void decide_log_finish(struct req *r);
/* Seed the state's math.random from the decision id, so a replay draws
 * what the logged decide drew. */
void decide_log_seed(lua_State *L, const char *did);

#endif
