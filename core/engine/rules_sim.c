/*
 * rules_sim.c — throwaway workers for simulations: a one-campaign
 * generation built from a script that is not saved, adopted by a worker of
 * its own (see rules_sim_start in rules.h).
 *
 * Why a generation and a worker rather than a special path through
 * decide: the simulation then runs the very code a live decide runs
 * (decide_run_worker), with the campaign compiled, validated and indexed
 * the way the loader does it.  The generation is never published, so no
 * other thread can see it; it is freed with the worker.
 */
#include "engine/rules.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/reqerr.h"
#include "lua/luavm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static char *dup_s(const char *s) { return s ? dup_n(s, strlen(s)) : NULL; }

/* The generation: files[0] the channel's plugin, files[1] the campaign;
 * every field owned as rules_gen_release expects (malloc'd copies; the
 * channel's settings are borrowed from the config, as in any generation). */
static struct rules_gen *sim_gen(const struct rules_gen *live, int chi, const char *path,
                                 const char *src, size_t len, struct rules_campaign *camp)
{
    struct rules_gen *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->refs = 1;
    g->files = calloc(2, sizeof *g->files);
    g->chans = calloc(1, sizeof *g->chans);
    g->camps = calloc(1, sizeof *g->camps);
    g->by_channel[0] = malloc(sizeof(int));
    if (!g->files || !g->chans || !g->camps || !g->by_channel[0])
        goto fail;
    const struct rules_channel *lc = &live->chans[chi];
    const struct rules_file *lf = &live->files[lc->file];
    struct rules_file *f = &g->files[g->nfiles++];
    f->path = dup_s(lf->path);
    f->kind = RULES_PLUGIN;
    f->source = lf->source ? dup_n(lf->source, lf->source_len) : NULL;
    f->source_len = lf->source_len;
    f->hash = lf->hash;
    f->loaded_at = lf->loaded_at;
    f->ok = 1;
    if (!f->path || (lf->source && !f->source))
        goto fail;
    struct rules_channel *ch = &g->chans[g->nchans++];
    *ch = *lc;
    ch->file = 0;
    ch->name = dup_s(lc->name);
    ch->consent = dup_s(lc->consent);
    ch->placements = rules_strv_dup(lc->placements, lc->nplacements);
    if (!ch->name || (lc->consent && !ch->consent))
        goto fail;
    f = &g->files[g->nfiles++];
    f->path = dup_s(path);
    f->kind = RULES_CAMPAIGN;
    f->source = dup_n(src, len);
    f->source_len = len;
    f->hash = hash_fnv1a(src, len, live->lib_hash);
    f->loaded_at = clock_now();
    f->ok = 1;
    if (!f->path || !f->source)
        goto fail;
    /* the campaign (its fields now the generation's), on channel 0 only */
    g->camps[g->ncamps++] = *camp;
    memset(camp, 0, sizeof *camp);
    struct rules_campaign *c = &g->camps[0];
    c->file = 1;
    c->channels = 1u;
    c->status = CAMP_ACTIVE;
    g->by_channel[0][0] = 0;
    g->nby_channel[0] = 1;
    uint64_t mask = 0;
    for (int j = 0; j < c->nplacements && j < 64; j++) {
        int k;
        for (k = 0; k < g->nplacement_names; k++)
            if (!strcmp(g->placement_names[k], c->placements[j]))
                break;
        if (k == g->nplacement_names) {
            if (!(g->placement_names[k] = dup_s(c->placements[j])))
                goto fail;
            g->nplacement_names++;
        }
        mask |= 1ULL << k;
    }
    c->placement_mask = mask;
    g->lib_hash = live->lib_hash;
    g->built_at = clock_now();
    return g;
fail:
    rules_gen_release(g);
    return NULL;
}

int rules_sim_start(const char *path, const char *src, size_t len, const char *channel,
                    struct reqerr *e, struct rules_worker **out, const char **camp_id)
{
    *out = NULL;
    *camp_id = NULL;
    struct rules_gen *live = rules_gen_acquire();
    if (!live)
        return reqerr_set(e, 503, "unavailable", NULL, "no rules are loaded yet");
    int chi = rules_gen_find_channel(live, channel);
    if (chi < 0) {
        rules_gen_release(live);
        return reqerr_set(e, 422, "unknown_channel", "channel",
                          "channel \"%.64s\" is not loaded (plugins/%.64s.lua)", channel, channel);
    }
    const char *names[32];
    int nn = 0;
    for (int i = 0; i < live->nchans && i < 32; i++)
        names[nn++] = live->chans[i].name;
    char lib[4200];
    snprintf(lib, sizeof lib, "%s/lib", g_app->cfg.rules_dir);
    json_t *errors = json_array();
    struct rules_campaign camp;
    int rc = rules_validate_campaign(path, src, len, names, nn, lib, errors, &camp);
    if (rc) {
        const char *first = json_string_value(json_array_get(errors, 0));
        reqerr_set(e, rc == ERR_TOOBIG ? 413 : 422, "invalid_script", "script", "%s",
                   first ? first : "the script does not validate");
        e->extra = json_pack("{s:o}", "errors", errors);
        rules_gen_release(live);
        return rc;
    }
    json_decref(errors);
    if (!(camp.channels & (1u << chi))) {
        reqerr_set(e, 422, "channel_not_listed", "channel",
                   "the script's channels do not include \"%.64s\"", channel);
        rules_campaign_free(&camp);
        rules_gen_release(live);
        return ERR_INVAL;
    }
    struct rules_gen *g = sim_gen(live, chi, path, src, len, &camp);
    rules_campaign_free(&camp); /* what sim_gen did not take */
    rules_gen_release(live);
    if (!g)
        return reqerr_set(e, 500, "internal", NULL, "out of memory building the simulation");
    struct rules_worker *rw = calloc(1, sizeof *rw);
    struct luavm_opts o = { .mem_limit = g_app->cfg.lua_mem_limit,
                            .instr_budget = g_app->cfg.instr_budget, .lib_dir = lib };
    if (!rw || luavm_new(&o, &rw->vm)) {
        free(rw);
        rules_gen_release(g);
        return reqerr_set(e, 500, "internal", NULL, "out of memory for the simulation's Lua state");
    }
    rw->sim = 1;
    rules_worker_adopt(rw, g); /* takes our reference */
    *out = rw;
    *camp_id = rw->gen->camps[0].id;
    return 0;
}

int rules_sim_worker(struct rules_gen *g, const char *rules_dir, struct rules_worker **out)
{
    *out = NULL;
    char lib[4200];
    snprintf(lib, sizeof lib, "%s/lib", rules_dir ? rules_dir : g_app->cfg.rules_dir);
    struct rules_worker *rw = calloc(1, sizeof *rw);
    struct luavm_opts o = { .mem_limit = g_app->cfg.lua_mem_limit,
                            .instr_budget = g_app->cfg.instr_budget, .lib_dir = lib };
    if (!rw || luavm_new(&o, &rw->vm)) {
        free(rw);
        rules_gen_release(g);
        return ERR_NOMEM;
    }
    rw->sim = 1;
    rules_worker_adopt(rw, g); /* takes the reference */
    *out = rw;
    return 0;
}

void rules_sim_stop(struct rules_worker *rw) { rules_worker_stop(rw); }
