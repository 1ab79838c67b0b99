/*
 * replay_elig.c — the eligible_never_passed warning: logged decides
 * re-run on one sandboxed rule set, counting per campaign how many
 * reached its `eligible` hook and how many it let through (see replay.h).
 *
 * The decides run like a replay's (decide_run_worker, dry run, the
 * customer as logged), without explain; decide adds to the tallies in
 * struct decide_as_was.  A campaign whose hook was reached at least once
 * and never passed is probably mis-written (a typo in an attribute name,
 * a comparison the wrong way round): it reached no logged customer.
 */
#include "engine/replay.h"
#include "engine/decide.h"
#include "engine/dlog.h"
#include "engine/models.h"
#include "engine/rules.h"
#include "base/buf.h"
#include "base/err.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


json_t *replay_elig_warnings(const struct rules_gen *g, const long *reached, const long *passed)
{
    json_t *arr = json_array();
    for (int i = 0; g && i < g->ncamps; i++) {
        if (reached[i] < 1 || passed[i] > 0)
            continue;
        const struct rules_campaign *c = &g->camps[i];
        const struct rules_file *f = c->file >= 0 && c->file < g->nfiles ? &g->files[c->file] : NULL;
        int line = f && f->source ? rules_line_of(f->source, f->source_len, "eligible") : 1;
        char msg[600];
        snprintf(msg, sizeof msg,
                 "campaign \"%s\": eligible returned false (or failed) for all %ld logged "
                 "decides that reached it (0 passed)",
                 c->id, reached[i]);
        json_array_append_new(arr, json_pack("{s:s,s:i,s:s,s:s,s:s,s:I,s:I}", "file",
                                             f ? f->path : "?", "line", line, "code",
                                             "eligible_never_passed", "campaign_id", c->id,
                                             "message", msg, "reached", (json_int_t)reached[i],
                                             "passed", (json_int_t)passed[i]));
    }
    return arr;
}

json_t *replay_elig_counts(const struct rules_gen *g, const long *reached, const long *passed)
{
    json_t *o = json_object();
    for (int i = 0; g && i < g->ncamps; i++)
        if (reached[i])
            json_object_set_new(o, g->camps[i].id,
                                json_pack("{s:I,s:I}", "reached", (json_int_t)reached[i],
                                          "passed", (json_int_t)passed[i]));
    return o;
}

struct erun {
    struct rules_worker *rw;
    struct models_worker *mw;
    const struct replay_opts *o;
    long *reached, *passed;
    int n;
    long decisions, failed;
    uint32_t sample_below;
    struct buf out, strs;
    struct decide_offer offs[REPLAY_MAX_OFFERS];
    int rc;
};

static int visit(void *ud, const void *val, size_t len)
{
    struct erun *R = ud;
    struct dlog_entry e;
    if (dlog_entry_decode(val, len, &e))
        return 0; /* not an entry: skipped, like the replay does */
    int take = replay_take(R->o, R->sample_below, R->decisions, &e);
    if (take)
        return take > 0;
    struct decide_req q = { 0 };
    if ((R->rc = replay_entry_req(&R->strs, &e, &q)))
        return R->rc;
    struct decide_as_was aw = { e.profile, e.stats, e.profile_len, e.stats_len, e.now,
                                e.decision_id, R->offs, REPLAY_MAX_OFFERS, 0,
                                R->reached, R->passed, R->n };
    q.as_was = &aw;
    struct reqerr er = { 0 };
    buf_reset(&R->out);
    if (decide_run_worker(R->rw, R->mw, &q, &er, &R->out, 1))
        R->failed++;
    json_decref(er.extra);
    R->decisions++;
    return 0;
}

json_t *replay_eligible(struct store *log, struct rules_gen *g, const char *dir,
                        const struct replay_opts *o, struct reqerr *e)
{
    struct erun R = { .o = o, .n = g ? g->ncamps : 0 };
    R.sample_below = replay_sample_below(o);
    R.reached = calloc((size_t)R.n + 1, sizeof *R.reached);
    R.passed = calloc((size_t)R.n + 1, sizeof *R.passed);
    if (!g || !R.reached || !R.passed) {
        free(R.reached);
        free(R.passed);
        rules_gen_release(g);
        reqerr_set(e, 500, "internal", NULL, "out of memory for the replay");
        return NULL;
    }
    if (rules_sim_worker(g, dir, &R.rw)) { /* g's reference passes to the worker */
        free(R.reached);
        free(R.passed);
        reqerr_set(e, 500, "internal", NULL, "out of memory for the replay's Lua state");
        return NULL;
    }
    R.mw = models_worker_new(R.rw->vm);
    g = R.rw->gen; /* the worker's until rules_sim_stop */
    int rc = dlog_scan(log, o->from_ms, o->to_ms, visit, &R);
    json_t *out = NULL;
    if (rc || R.rc) {
        reqerr_from_code(e, rc ? rc : R.rc, "replay");
    } else {
        out = json_pack("{s:{s:I,s:I},s:I,s:I,s:o,s:o}", "window", "from", (json_int_t)o->from_ms,
                        "to", (json_int_t)o->to_ms, "decisions", (json_int_t)R.decisions,
                        "failed", (json_int_t)R.failed, "eligible",
                        replay_elig_counts(g, R.reached, R.passed), "warnings",
                        replay_elig_warnings(g, R.reached, R.passed));
    }
    buf_free(&R.out);
    buf_free(&R.strs);
    models_worker_free(R.mw);
    rules_sim_stop(R.rw);
    free(R.reached);
    free(R.passed);
    return out;
}
