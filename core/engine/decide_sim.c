/*
 * decide_sim.c — a decide against a script that is not saved (the
 * console's simulate panel, POST /api/v1/rules/simulate).
 *
 * The script gets a throwaway worker of its own (rules_sim_start: its own
 * Lua state and a one-campaign generation, never published), and the
 * live pipeline runs on it through decide_run_worker, forced to a dry run
 * with explain: nothing is reserved, no offer or hook error is counted,
 * nothing is stored.  Models are served as a live decide serves them: the
 * live versions, with a models worker of the simulation's own state (the
 * feature functions of the models that have some are loaded into it), so
 * promo.predict and score = { model = ... } answer what they would live.
 * Costs a Lua state per call (about a millisecond
 * with the demo campaigns), which is fine for a person pressing a button
 * and keeps every live worker's state untouched.
 */
#include "engine/decide.h"
#include "base/err.h"
#include "base/reqerr.h"
#include "codec/codec.h"
#include "engine/models.h"
#include "engine/rules.h"
#include <string.h>

json_t *decide_simulate(const struct decide_sim_req *s, struct reqerr *e)
{
    struct rules_worker *rw;
    const char *camp_id;
    if (rules_sim_start(s->path, s->script, s->script_len, s->q.channel, e, &rw, &camp_id))
        return NULL;
    struct decide_req q = s->q;
    q.explain = 1;
    q.dry_run = 1;
    struct buf out = BUF_INIT;
    json_t *o = NULL;
    struct models_worker *mw = models_worker_new(rw->vm);
    if (!mw) {
        rules_sim_stop(rw);
        reqerr_set(e, 500, "internal", NULL, "out of memory for the simulation's models");
        return NULL;
    }
    if (decide_run_worker(rw, mw, &q, e, &out, 0) == 0) {
        int rc = 0;
        o = codec_parse_json(out.p, out.len, &rc, NULL, 0);
        if (!o) {
            reqerr_from_code(e, rc ? rc : ERR_NOMEM, "simulation reply");
        } else {
            json_object_set_new(o, "simulated", json_true());
            json_object_set_new(o, "campaign_id", json_string(camp_id));
        }
    }
    buf_free(&out);
    models_worker_free(mw); /* before its Lua state goes */
    rules_sim_stop(rw);
    return o;
}
