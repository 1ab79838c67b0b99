/*
 * rules.c — ruleset generations: scanning the rule and plugin directories,
 * building a generation (each file validated by rules_check.c), publishing
 * it, the directory watch and the module's lifecycle (see rules.h).
 *
 * Why generations: a reload must never leave a worker with half a
 * ruleset, and a request must finish on the ruleset it started with.  An
 * immutable refcounted snapshot plus one pointer swap gives both without a
 * lock on the request path (the swap lock is taken once per adoption).
 */
#include "engine/rules.h"
#include "engine/condset.h"
#include "engine/formula.h"
#include "engine/segments.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/file.h"
#include "base/hash.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "base/metrics.h"
#include "store/store.h"
#include "base/tz.h"
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILES 20000

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;   /* guards g_cur */
static pthread_mutex_t g_reload = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static struct rules_gen *g_cur;
static rules_source_filter_fn g_source_filter;               /* set once at start */
static rules_reload_hook_fn g_reload_hook;                   /* set once at start */
static uint64_t g_seq;                                       /* atomic: newest seq */

static const char *status_names[CAMP_NSTATUS] = {
    "draft", "pending_approval", "approved", "active", "paused", "stopped", "archived" };

const char *rules_status_name(enum campaign_status s)
{
    return (unsigned)s < CAMP_NSTATUS ? status_names[s] : "?";
}

int rules_status_parse(const char *s)
{
    for (int i = 0; i < CAMP_NSTATUS; i++)
        if (s && !strcmp(s, status_names[i]))
            return i;
    return -1;
}
/* ===================================================================== */
/* generations                                                           */

void rules_campaign_free(struct rules_campaign *c)
{
    free(c->id);
    free(c->name);
    for (int j = 0; j < c->nplacements; j++)
        free(c->placements[j]);
    free(c->placements);
    for (int j = 0; j < c->nvariants; j++)
        free(c->variants[j].id);
    free(c->variants);
    if (c->trigger)
        json_decref(c->trigger);
    for (int j = 0; j < c->nlocales; j++)
        free(c->locales[j]);
    free(c->locales);
    json_decref(c->audience);
    formula_free(c->score_formula);
    memset(c, 0, sizeof *c);
}

void rules_channel_free(struct rules_channel *ch)
{
    free(ch->name);
    free(ch->consent);
    for (int i = 0; i < ch->nplacements; i++)
        free(ch->placements[i]);
    free(ch->placements);
    memset(ch, 0, sizeof *ch);
}

char **rules_strv_dup(char *const *v, int n)
{
    if (!v)
        return NULL;
    char **d = calloc((size_t)n + 1, sizeof *d);
    if (!d)
        abort();
    for (int i = 0; i < n; i++)
        d[i] = rules_xstrdup(v[i]);
    return d;
}

static void gen_free(struct rules_gen *g)
{
    for (int i = 0; i < g->nfiles; i++) {
        free(g->files[i].path);
        free(g->files[i].source);
        free(g->files[i].disk_source);
        free(g->files[i].error);
    }
    free(g->files);
    for (int i = 0; i < g->ncamps; i++)
        rules_campaign_free(&g->camps[i]);
    free(g->camps);
    for (int i = 0; i < g->nchans; i++)
        rules_channel_free(&g->chans[i]);
    free(g->chans);
    for (int i = 0; i < 32; i++) {
        free(g->by_channel[i]);
        condset_free(g->aud[i]);
        free(g->aud_pos[i]);
        condset_free(g->boost[i]);
        free(g->boost_first[i]);
        free(g->boost_member[i]);
        free(g->prune_in[i]);
        free(g->prune_hi[i]);
        free(g->prune_lo[i]);
        free(g->aud_serve[i]);
    }
    for (int i = 0; i < g->nplacement_names; i++)
        free(g->placement_names[i]);
    free(g);
}

struct rules_gen *rules_gen_acquire(void)
{
    pthread_mutex_lock(&g_lock);
    struct rules_gen *g = g_cur;
    if (g)
        g->refs++;
    pthread_mutex_unlock(&g_lock);
    return g;
}

void rules_gen_release(struct rules_gen *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g_lock);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g_lock);
    if (last)
        gen_free(g);
}

static void gen_publish(struct rules_gen *g)
{
    pthread_mutex_lock(&g_lock);
    struct rules_gen *old = g_cur;
    g->refs = 1;
    g_cur = g;
    __atomic_store_n(&g_seq, g->seq, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_lock);
    rules_gen_release(old);
}

int rules_gen_find_campaign(const struct rules_gen *g, const char *id)
{
    for (int i = 0; g && i < g->ncamps; i++)
        if (!strcmp(g->camps[i].id, id))
            return i;
    return -1;
}

/* Is `now` inside the schedule (instants, days, hours in its zone)? */
int rules_schedule_open(const struct rules_schedule *s, int64_t now)
{
    if (s->starts && now < s->starts)
        return 0;
    if (s->ends && now > s->ends)
        return 0;
    if (s->days || s->hour_from >= 0) {
        struct tm tm;
        if (tz_local(s->tz, now, &tm))
            return 0;
        int wd = tm.tm_wday == 0 ? 7 : tm.tm_wday;
        if (s->days && !(s->days & (1u << wd)))
            return 0;
        if (s->hour_from >= 0) {
            int h = tm.tm_hour, a = s->hour_from, b = s->hour_to;
            int in = a <= b ? (h >= a && h < b) : (h >= a || h < b);
            if (!in)
                return 0;
        }
    }
    return 1;
}

uint64_t rules_gen_placement_bit(const struct rules_gen *g, const char *placement)
{
    for (int i = 0; g && i < g->nplacement_names; i++)
        if (!strcmp(g->placement_names[i], placement))
            return 1ULL << i;
    return 0;
}

int rules_gen_find_channel(const struct rules_gen *g, const char *name)
{
    for (int i = 0; g && i < g->nchans; i++)
        if (!strcmp(g->chans[i].name, name))
            return i;
    return -1;
}

uint64_t rules_gen_latest_seq(void)
{
    return __atomic_load_n(&g_seq, __ATOMIC_ACQUIRE);
}

char *rules_xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

void rules_set_source_filter(rules_source_filter_fn fn) { g_source_filter = fn; }

void rules_set_reload_hook(rules_reload_hook_fn fn) { g_reload_hook = fn; }

/* ===================================================================== */
/* scanning                                                              */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qsort, minus the undefined behaviour of a NULL base for an empty list */
void rules_sort_paths(char **paths, int n)
{
    if (n > 1)
        qsort(paths, (size_t)n, sizeof *paths, cmp_str);
}

void rules_flist_add(struct rules_flist *l, const char *path, enum rules_kind k)
{
    if (l->n >= MAX_FILES)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->paths = realloc(l->paths, (size_t)l->cap * sizeof *l->paths);
        l->kinds = realloc(l->kinds, (size_t)l->cap * sizeof *l->kinds);
        if (!l->paths || !l->kinds)
            abort();
    }
    l->paths[l->n] = rules_xstrdup(path);
    l->kinds[l->n] = k;
    l->n++;
}

void rules_flist_free(struct rules_flist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
    free(l->kinds);
}

/* Collect *.lua below dir; `recurse` for rules/ (skipping rules/lib). */
void rules_scan_dir(const char *dir, const char *skip, int recurse, enum rules_kind k,
                    struct rules_flist *out, int depth)
{
    if (depth > 16)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* hidden and editor temp files (.#x.lua, .x.lua.swp) */
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (recurse && (!skip || strcmp(p, skip) != 0))
                rules_scan_dir(p, skip, recurse, k, out, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            size_t n = strlen(e->d_name);
            /* campaign tests (x_test.lua below rules/) are run by `promod test`, never loaded */
            if (n > 4 && !strcmp(e->d_name + n - 4, ".lua") &&
                !(k == RULES_CAMPAIGN && rules_is_test_file(p)))
                rules_flist_add(out, p, k);
        }
    }
    closedir(d);
}

int rules_is_test_file(const char *path)
{
    size_t n = strlen(path);
    return n > 9 && !strcmp(path + n - 9, "_test.lua");
}

char *rules_read_file(const char *path, size_t *len, int *rc)
{
    return file_read_all(path, RULES_MAX_FILE_BYTES, len, rc);
}

static uint32_t lib_hash(const char *lib_dir)
{
    struct rules_flist l = { 0 };
    rules_scan_dir(lib_dir, NULL, 1, RULES_CAMPAIGN, &l, 0);
    rules_sort_paths(l.paths, l.n);
    uint32_t h = HASH_FNV_INIT;
    for (int i = 0; i < l.n; i++) {
        size_t len;
        int rc;
        char *s = rules_read_file(l.paths[i], &len, &rc);
        h = hash_fnv1a(l.paths[i], strlen(l.paths[i]), h);
        if (s)
            h = hash_fnv1a(s, len, h);
        free(s);
    }
    rules_flist_free(&l);
    return h;
}

/* ===================================================================== */
/* building a generation                                                 */

static enum campaign_status stored_status(struct store_txn *t, const char *id, int *found)
{
    *found = 0;
    const void *v;
    size_t vl;
    if (!t || store_get(t, STORE_CAMPAIGNS, id, strlen(id), &v, &vl))
        return CAMP_ACTIVE;
    int e;
    json_t *o = codec_msgpack_to_json(v, vl, &e);
    int s = rules_status_parse(json_string_value(json_object_get(o, "status")));
    json_decref(o);
    if (s < 0)
        return CAMP_ACTIVE;
    *found = 1;
    return (enum campaign_status)s;
}

static void copy_camp(struct rules_campaign *dst, const struct rules_campaign *src)
{
    *dst = *src;
}

/* Deep copy of campaign or channel `oldfile` of generation `prev` into
 * *camp / *chan for generation `g` (whose channels are all known by the
 * time campaigns are built).  Returns 1 when there was one to keep. */
static int keep_parsed(const struct rules_gen *prev, const struct rules_gen *g, int oldfile,
                       enum rules_kind kind, struct rules_campaign *camp, struct rules_channel *chan)
{
    if (kind == RULES_PLUGIN) {
        for (int i = 0; i < prev->nchans; i++) {
            const struct rules_channel *o = &prev->chans[i];
            if (o->file != oldfile || rules_gen_find_channel(g, o->name) >= 0 || g->nchans >= 32)
                continue;
            *chan = *o;
            chan->name = rules_xstrdup(o->name);
            chan->consent = o->consent ? rules_xstrdup(o->consent) : NULL;
            chan->placements = rules_strv_dup(o->placements, o->nplacements);
            return 1;
        }
        return 0;
    }
    for (int i = 0; i < prev->ncamps; i++) {
        const struct rules_campaign *o = &prev->camps[i];
        if (o->file != oldfile || rules_gen_find_campaign(g, o->id) >= 0)
            continue;
        unsigned bits = 0;
        for (int b = 0; b < prev->nchans; b++) {
            int k = (o->channels & (1u << b)) ? rules_gen_find_channel(g, prev->chans[b].name) : -1;
            if (k >= 0)
                bits |= 1u << k;
        }
        if (!bits)
            return 0;
        *camp = *o;
        camp->channels = bits;
        camp->id = rules_xstrdup(o->id);
        camp->name = rules_xstrdup(o->name);
        camp->placements = calloc((size_t)o->nplacements + 1, sizeof(char *));
        camp->variants = calloc((size_t)o->nvariants + 1, sizeof *camp->variants);
        if (!camp->placements || !camp->variants)
            abort();
        for (int j = 0; j < o->nplacements; j++)
            camp->placements[j] = rules_xstrdup(o->placements[j]);
        for (int j = 0; j < o->nvariants; j++) {
            camp->variants[j] = o->variants[j];
            camp->variants[j].id = rules_xstrdup(o->variants[j].id);
        }
        camp->trigger = o->trigger ? json_deep_copy(o->trigger) : NULL;
        camp->locales = rules_strv_dup(o->locales, o->nlocales);
        camp->audience = o->audience ? json_deep_copy(o->audience) : NULL;
        camp->score_formula = formula_ref(o->score_formula);
        camp->status = camp->file_status;
        return 1;
    }
    return 0;
}

/* Ids of a list in an audience ("segments", "exclude") as a C array
 * (borrowed from the JSON), NULL when absent or empty. */
static const char **aud_ids(const json_t *aud, const char *key, int *n)
{
    json_t *a = json_object_get(aud, key);
    *n = (int)json_array_size(a);
    if (!*n)
        return NULL;
    const char **ids = calloc((size_t)*n, sizeof *ids);
    if (!ids)
        abort();
    for (int i = 0; i < *n; i++)
        ids[i] = json_string_value(json_array_get(a, (size_t)i));
    return ids;
}

/* The boolean-expression index of channel `ch`: its campaigns' audiences
 * compiled together (engine/audience.h), when any declares one. */
static void build_audiences(struct rules_gen *g, int ch)
{
    int n = g->nby_channel[ch], any = 0;
    for (int j = 0; j < n; j++)
        any |= g->camps[g->by_channel[ch][j]].audience != NULL;
    if (!any)
        return;
    struct condset_build *b;
    if (condset_build_new(n, &b))
        abort();
    for (int j = 0; j < n; j++) {
        const struct rules_campaign *c = &g->camps[g->by_channel[ch][j]];
        if (!c->audience)
            continue;
        int nany, nnone;
        const char **any_ids = aud_ids(c->audience, "segments", &nany);
        const char **none_ids = aud_ids(c->audience, "exclude", &nnone);
        struct reqerr e = { 0 };
        if (condset_build_set(b, j, json_object_get(c->audience, "conditions"), NULL, 0, any_ids,
                              nany, none_ids, nnone, &e)) {
            /* validated at load, so only memory can fail here: match nobody */
            log_error("campaign audience not indexed", "campaign=\"%s\" error=\"%s\"", c->id,
                      e.message);
            static const char *nothing[1];
            if (condset_build_set(b, j, NULL, NULL, 0, nothing, 0, NULL, 0, NULL))
                abort();
        }
        reqerr_clear(&e);
        free(any_ids);
        free(none_ids);
    }
    if (condset_build_finish(b, &g->aud[ch]))
        abort();
    g->aud_pos[ch] = malloc(sizeof(int) * (size_t)(g->ncamps + 1));
    if (!g->aud_pos[ch])
        abort();
    for (int i = 0; i < g->ncamps; i++)
        g->aud_pos[ch][i] = -1;
    for (int j = 0; j < n; j++)
        g->aud_pos[ch][g->by_channel[ch][j]] = j;
}

/* g->boost[ch] (rules.h): the boosts of the channel's declared scores, one
 * condset member per distinct condition (written out with sorted keys, so
 * the same condition in 300 campaigns is evaluated once). */
struct boost_key {
    char *text;
    const json_t *cond;
    int slot;
};

static int boost_key_cmp(const void *a, const void *b)
{
    const struct boost_key *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    return c ? c : x->slot - y->slot;
}

static void build_boosts(struct rules_gen *g, int ch)
{
    int n = g->nby_channel[ch], nb = 0;
    for (int j = 0; j < n; j++)
        nb += formula_nboosts(g->camps[g->by_channel[ch][j]].score_formula);
    if (!nb)
        return;
    struct boost_key *keys = malloc(sizeof *keys * (size_t)nb);
    g->boost_first[ch] = malloc(sizeof(int) * (size_t)n);
    g->boost_member[ch] = malloc(sizeof(int) * (size_t)nb);
    if (!keys || !g->boost_first[ch] || !g->boost_member[ch])
        abort();
    int m = 0;
    for (int j = 0; j < n; j++) {
        const struct formula *f = g->camps[g->by_channel[ch][j]].score_formula;
        int k = formula_nboosts(f);
        g->boost_first[ch][j] = k ? m : -1;
        for (int i = 0; i < k; i++, m++) {
            keys[m].cond = formula_boost_cond(f, i);
            keys[m].text = json_dumps(keys[m].cond, JSON_COMPACT | JSON_SORT_KEYS);
            keys[m].slot = m;
            if (!keys[m].text)
                abort();
        }
    }
    qsort(keys, (size_t)nb, sizeof *keys, boost_key_cmp);
    int nd = 0;
    for (int t = 0; t < nb; t++) {
        if (t == 0 || strcmp(keys[t].text, keys[t - 1].text))
            nd++;
        g->boost_member[ch][keys[t].slot] = nd - 1;
    }
    struct condset_build *b;
    if (condset_build_new(nd, &b))
        abort();
    for (int t = 0; t < nb; t++) {
        if ((t == 0 || strcmp(keys[t].text, keys[t - 1].text)) &&
            condset_build_set(b, g->boost_member[ch][keys[t].slot], keys[t].cond, NULL, 0, NULL, 0,
                              NULL, 0, NULL))
            abort(); /* compiled at load: only memory can fail */
    }
    for (int t = 0; t < nb; t++)
        free(keys[t].text);
    free(keys);
    if (condset_build_finish(b, &g->boost[ch]))
        abort();
}

/* g->prune_*[ch] (rules.h): the candidates a decide may leave unscored
 * while better-scored ones fill the offers (engine/decide_prune.c). */
static void build_prune(struct rules_gen *g, int ch)
{
    int n = g->nby_channel[ch], best = 0;
    const struct formula *per = NULL;
    double key;
    /* the most common `per` among the boundable formulas (first of a tie) */
    for (int j = 0; j < n; j++) {
        const struct rules_campaign *c = &g->camps[g->by_channel[ch][j]];
        if (c->score_model[0] || !formula_bound_key(c->score_formula, &key) ||
            (per && formula_same_per(per, c->score_formula)))
            continue;
        int same = 0;
        for (int k = 0; k < n; k++) {
            const struct rules_campaign *d = &g->camps[g->by_channel[ch][k]];
            if (!d->score_model[0] && formula_bound_key(d->score_formula, &key) &&
                formula_same_per(c->score_formula, d->score_formula))
                same++;
        }
        if (same > best) {
            best = same;
            per = c->score_formula;
        }
        if (2 * best > n) /* a majority: no other can beat it */
            break;
    }
    if (best < 2)
        return;
    g->prune_in[ch] = calloc(CONDSET_WORDS(n), sizeof(uint64_t));
    g->prune_hi[ch] = calloc((size_t)n, sizeof(double));
    g->prune_lo[ch] = calloc((size_t)n, sizeof(double));
    if (!g->prune_in[ch] || !g->prune_hi[ch] || !g->prune_lo[ch])
        abort();
    for (int j = 0; j < n; j++) {
        const struct formula *f = g->camps[g->by_channel[ch][j]].score_formula;
        if (!g->camps[g->by_channel[ch][j]].score_model[0] && formula_bound_key(f, &key) &&
            formula_same_per(per, f)) {
            g->prune_in[ch][j >> 6] |= 1ull << (j & 63);
            g->prune_hi[ch][j] = key;
            g->prune_lo[ch][j] = formula_low_key(f);
        }
    }
    g->prune_per[ch] = per;
}

/* g->aud_serve[ch] (rules.h): per placement, the positions of the
 * channel's list that pass the status and placement filters. */
static void build_serve_masks(struct rules_gen *g, int ch)
{
    if (!g->aud[ch])
        return;
    int n = g->nby_channel[ch], np = g->nplacement_names;
    size_t nw = CONDSET_WORDS(n ? n : 1);
    uint64_t *m = calloc((size_t)(np + 2) * nw, sizeof *m);
    if (!m)
        abort();
    for (int j = 0; j < n; j++) {
        const struct rules_campaign *c = &g->camps[g->by_channel[ch][j]];
        if (c->status != CAMP_ACTIVE)
            continue;
        for (int k = 0; k < np + 2; k++)
            if (!c->placement_mask || k == np + 1 || (k < np && ((c->placement_mask >> k) & 1)))
                m[(size_t)k * nw + (size_t)(j >> 6)] |= 1ull << (j & 63);
    }
    g->aud_serve[ch] = m;
}

const uint64_t *rules_gen_serve_mask(const struct rules_gen *g, int chi, const char *placement,
                                     uint64_t pbit)
{
    if (chi < 0 || chi >= 32 || !g->aud_serve[chi])
        return NULL;
    int np = g->nplacement_names;
    size_t nw = CONDSET_WORDS(g->nby_channel[chi] ? g->nby_channel[chi] : 1);
    int k = !placement ? np + 1 : pbit ? __builtin_ctzll(pbit) : np;
    return g->aud_serve[chi] + (size_t)k * nw;
}

/* Build a new generation from disk, reusing the previous one's last good
 * sources for files that fail.  Errors are logged. Returns error count. */
/* Where a generation comes from: the configured directories (a reload),
 * or for a sandbox (rules_gen_sandbox) other directories and/or `overlay`
 * (file name below the rules directory → source, replacing or adding
 * files); a sandbox keeps no previous version of a failing file: its
 * errors go to `errors`. */
struct gen_src {
    const char *rules_dir, *plugins_dir;
    const json_t *overlay;
    json_t *errors;
    int sandbox;
};

/* The overlay's source for `path` (rules_dir/NAME), or NULL. */
static const char *overlay_src(const struct gen_src *gs, const char *path, size_t *len)
{
    size_t dl = strlen(gs->rules_dir);
    if (!gs->overlay || strncmp(path, gs->rules_dir, dl) || path[dl] != '/')
        return NULL;
    const json_t *v = json_object_get(gs->overlay, path + dl + 1);
    *len = json_string_length(v);
    return json_string_value(v);
}

static struct rules_gen *gen_build(struct app *app, const struct gen_src *gs, int *nerrors)
{
    const struct config *cfg = &app->cfg;
    struct rules_gen *prev = gs->sandbox ? NULL : rules_gen_acquire();
    struct rules_gen *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    uint64_t t0 = clock_mono_ns();
    char lib_dir[4096];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", gs->rules_dir);
    uint32_t libh = lib_hash(lib_dir);
    struct rules_flist fl = { 0 };
    rules_scan_dir(gs->plugins_dir, NULL, 0, RULES_PLUGIN, &fl, 0);
    int nplug = fl.n;
    rules_scan_dir(gs->rules_dir, lib_dir, 1, RULES_CAMPAIGN, &fl, 0);
    const char *oname;
    json_t *ov;
    json_object_foreach((json_t *)gs->overlay, oname, ov) { /* files the edits add */
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", gs->rules_dir, oname);
        int found = 0;
        for (int i = nplug; i < fl.n && !found; i++)
            found = !strcmp(fl.paths[i], p);
        if (!found)
            rules_flist_add(&fl, p, RULES_CAMPAIGN);
    }
    rules_sort_paths(fl.paths, nplug);
    rules_sort_paths(fl.paths + nplug, fl.n - nplug);
    g->files = calloc((size_t)fl.n + 1, sizeof *g->files);
    g->camps = calloc((size_t)fl.n + 1, sizeof *g->camps);
    g->chans = calloc(32, sizeof *g->chans);
    struct luavm *vm = rules_scratch_vm(lib_dir);
    if (!g->files || !g->camps || !g->chans || !vm)
        abort();
    const char *chan_names[32];
    int errs = 0;
    struct store_txn *st = NULL;
    if (app->store)
        store_rtxn_begin(app->store, &st);
    for (int i = 0; i < fl.n; i++) {
        enum rules_kind kind = fl.kinds[i];
        if (kind == RULES_CAMPAIGN && i == nplug) {
            for (int j = 0; j < g->nchans; j++)
                chan_names[j] = g->chans[j].name;
        }
        struct rules_file *f = &g->files[g->nfiles];
        f->path = rules_xstrdup(fl.paths[i]);
        f->kind = kind;
        size_t len = 0;
        int rc;
        const char *osrc = kind == RULES_CAMPAIGN ? overlay_src(gs, fl.paths[i], &len) : NULL;
        char *src = osrc ? malloc(len + 1) : rules_read_file(fl.paths[i], &len, &rc);
        if (osrc && src) {
            memcpy(src, osrc, len);
            src[len] = 0;
        } else if (osrc) {
            rc = ERR_NOMEM;
        }
        const struct rules_file *old = NULL;
        for (int j = 0; prev && j < prev->nfiles; j++)
            if (!strcmp(prev->files[j].path, f->path)) {
                old = &prev->files[j];
                break;
            }
        json_t *errors = json_array();
        struct rules_campaign camp;
        struct rules_channel chan;
        int ok = 0;
        if (!src) {
            char m[600];
            snprintf(m, sizeof m, "%s:1: cannot read: %s", f->path, err_str(rc));
            json_array_append_new(errors, json_string(m));
        } else {
            f->disk_hash = hash_fnv1a(src, len, libh);
            ok = rules_validate_in(vm, f->path, kind, src, len, chan_names, g->nchans, errors,
                             kind == RULES_CAMPAIGN ? &camp : NULL,
                             kind == RULES_PLUGIN ? &chan : NULL) == 0;
            if (ok && kind == RULES_CAMPAIGN && rules_gen_find_campaign(g, camp.id) >= 0) {
                char m[600];
                snprintf(m, sizeof m, "%s:%d: duplicate campaign id \"%s\" (also in %s)", f->path,
                         rules_line_of(src, len, "id"),
                         camp.id, g->files[g->camps[rules_gen_find_campaign(g, camp.id)].file].path);
                json_array_append_new(errors, json_string(m));
                ok = 0;
            }
            if (ok && kind == RULES_PLUGIN &&
                (rules_gen_find_channel(g, chan.name) >= 0 || g->nchans >= 32)) {
                char m[600];
                snprintf(m, sizeof m, "%s:%d: duplicate channel \"%s\" (or more than 32 channels)",
                         f->path, rules_line_of(src, len, "channel"), chan.name);
                json_array_append_new(errors, json_string(m));
                ok = 0;
            }
            if (!ok) {
                if (kind == RULES_CAMPAIGN)
                    rules_campaign_free(&camp);
                else
                    rules_channel_free(&chan);
            }
            /* The source filter (campaigns.c, require_approval) may serve an
             * approved version instead of a valid file still waiting for
             * approval; the file's own text is kept as disk_source. */
            if (ok && kind == RULES_CAMPAIGN && g_source_filter && !osrc) {
                size_t hl = 0;
                char *held = g_source_filter(st, camp.id, f->path, src, len, &hl);
                if (held) {
                    struct rules_campaign hc;
                    json_t *e2 = json_array();
                    if (rules_validate_in(vm, f->path, kind, held, hl, chan_names, g->nchans, e2, &hc,
                                    NULL) == 0 && !strcmp(hc.id, camp.id)) {
                        rules_campaign_free(&camp);
                        camp = hc;
                        f->disk_source = src;
                        f->disk_source_len = len;
                        src = held;
                        len = hl;
                    } else {
                        rules_campaign_free(&hc);
                        free(held);
                        log_warn("approved version does not validate any more; serving the file",
                                 "file=\"%s\"", f->path);
                    }
                    json_decref(e2);
                }
            }
        }
        if (ok) {
            f->ok = 1;
            f->source = src;
            f->source_len = len;
            f->hash = f->disk_source ? hash_fnv1a(src, len, libh) : f->disk_hash;
            f->loaded_at = old && old->hash == f->hash ? old->loaded_at : clock_now();
            src = NULL;
        } else {
            errs++;
            if (gs->errors)
                json_array_extend(gs->errors, errors);
            char *e = json_dumps(errors, JSON_COMPACT);
            const char *first = json_string_value(json_array_get(errors, 0));
            f->error = rules_xstrdup(first ? first : "invalid");
            log_warn("rule file rejected", "file=\"%s\" errors=%s kept_previous=%s", f->path,
                     e ? e : "[]", old && old->source ? "yes" : "no");
            free(e);
            /* keep the previous good version live */
            if (old && old->source) {
                json_t *e2 = json_array();
                int ok2 = rules_validate_in(vm, f->path, kind, old->source, old->source_len, chan_names,
                                      g->nchans, e2, kind == RULES_CAMPAIGN ? &camp : NULL,
                                      kind == RULES_PLUGIN ? &chan : NULL) == 0;
                json_decref(e2);
                if (ok2 && kind == RULES_CAMPAIGN && rules_gen_find_campaign(g, camp.id) >= 0)
                    ok2 = 0;
                if (!ok2) {
                    if (kind == RULES_CAMPAIGN)
                        rules_campaign_free(&camp);
                    else
                        rules_channel_free(&chan);
                }
                /* The previous version may not validate any more for a
                 * reason outside the file: a rules/lib module it requires
                 * was broken or changed, a plugin went away.  The workers
                 * still run it (its hash is unchanged, so they keep the
                 * compiled table and the modules it captured): keep its
                 * parsed form from the previous generation, channels
                 * remapped by name; with no channel left it goes. */
                if (!ok2)
                    ok2 = keep_parsed(prev, g, (int)(old - prev->files), kind, &camp, &chan);
                if (ok2) {
                    f->source = malloc(old->source_len + 1);
                    memcpy(f->source, old->source, old->source_len + 1);
                    f->source_len = old->source_len;
                    f->hash = old->hash;
                    f->loaded_at = old->loaded_at;
                    ok = 1;
                }
            }
        }
        json_decref(errors);
        free(src);
        if (ok && kind == RULES_CAMPAIGN) {
            camp.file = g->nfiles;
            int found;
            enum campaign_status s = stored_status(st, camp.id, &found);
            if (found)
                camp.status = s;
            copy_camp(&g->camps[g->ncamps++], &camp);
        } else if (ok && kind == RULES_PLUGIN) {
            chan.file = g->nfiles;
            chan.settings = cfg->channels ? json_object_get(cfg->channels, chan.name) : NULL;
            g->chans[g->nchans++] = chan;
        }
        g->nfiles++;
    }
    store_txn_end(st);
    luavm_free(vm);
    rules_flist_free(&fl);
    /* candidate index: per channel, campaigns by priority (desc), then id */
    for (int ch = 0; ch < g->nchans; ch++) {
        int *list = malloc(sizeof(int) * (size_t)(g->ncamps + 1));
        int n = 0;
        for (int i = 0; i < g->ncamps; i++)
            if (g->camps[i].channels & (1u << ch))
                list[n++] = i;
        for (int a = 1; a < n; a++) { /* insertion sort: small n, stable */
            int x = list[a], b = a - 1;
            while (b >= 0 && (g->camps[list[b]].priority < g->camps[x].priority ||
                              (g->camps[list[b]].priority == g->camps[x].priority &&
                               strcmp(g->camps[list[b]].id, g->camps[x].id) > 0))) {
                list[b + 1] = list[b];
                b--;
            }
            list[b + 1] = x;
        }
        g->by_channel[ch] = list;
        g->nby_channel[ch] = n;
        build_audiences(g, ch);
        build_boosts(g, ch);
        build_prune(g, ch);
    }
    /* placements as bits, so decide filters with a mask test, not strcmp */
    for (int i = 0; i < g->ncamps; i++) {
        struct rules_campaign *c = &g->camps[i];
        uint64_t mask = 0;
        for (int j = 0; j < c->nplacements; j++) {
            int k;
            for (k = 0; k < g->nplacement_names; k++)
                if (!strcmp(g->placement_names[k], c->placements[j]))
                    break;
            if (k == g->nplacement_names && k < 64)
                g->placement_names[g->nplacement_names++] = rules_xstrdup(c->placements[j]);
            mask |= k < 64 ? (1ULL << k) : 0;
        }
        /* more than 64 distinct names: such a campaign falls back to "any" */
        c->placement_mask = c->nplacements && mask ? mask : 0;
    }
    for (int ch = 0; ch < g->nchans && ch < 32; ch++)
        build_serve_masks(g, ch);
    g->built_at = clock_now();
    g->lib_hash = libh;
    g->build_ms = (double)(clock_mono_ns() - t0) / 1e6;
    g->seq = (prev ? prev->seq : 0) + 1;
    rules_gen_release(prev);
    *nerrors = errs;
    return g;
}

/* Did anything users can see change between two generations? */
static int gen_same(const struct rules_gen *a, const struct rules_gen *b)
{
    if (!a || !b || a->nfiles != b->nfiles || a->ncamps != b->ncamps)
        return 0;
    for (int i = 0; i < a->nfiles; i++)
        if (strcmp(a->files[i].path, b->files[i].path) || a->files[i].hash != b->files[i].hash ||
            a->files[i].disk_hash != b->files[i].disk_hash || a->files[i].ok != b->files[i].ok)
            return 0;
    for (int i = 0; i < a->ncamps; i++)
        if (a->camps[i].status != b->camps[i].status)
            return 0;
    return 1;
}

static _Atomic long g_reloads, g_reload_errors;

int rules_reload(struct app *app, int force)
{
    pthread_mutex_lock(&g_reload);
    int nerr;
    const struct gen_src gs = { app->cfg.rules_dir, app->cfg.plugins_dir, NULL, NULL, 0 };
    struct rules_gen *g = gen_build(app, &gs, &nerr);
    struct rules_gen *cur = rules_gen_acquire();
    int same = gen_same(cur, g);
    rules_gen_release(cur);
    if (same && !force) {
        gen_free(g);
    } else {
        log_info("rules loaded", "generation=%llu files=%d campaigns=%d channels=%d errors=%d ms=%.1f",
                 (unsigned long long)g->seq, g->nfiles, g->ncamps, g->nchans, nerr, g->build_ms);
        gen_publish(g);
        g_reloads++;
    }
    if (nerr)
        g_reload_errors++;
    pthread_mutex_unlock(&g_reload);
    if (!(same && !force) && g_reload_hook)
        g_reload_hook(app); /* outside the lock: the hook may write the store */
    return nerr;
}

void rules_refresh_status(struct app *app) { rules_reload(app, 0); }

struct rules_gen *rules_gen_sandbox(struct app *app, const char *rules_dir,
                                    const char *plugins_dir, const json_t *overlay,
                                    json_t *errors)
{
    const struct gen_src gs = { rules_dir ? rules_dir : app->cfg.rules_dir,
                                plugins_dir ? plugins_dir : app->cfg.plugins_dir, overlay, errors,
                                1 };
    int nerr;
    struct rules_gen *g = gen_build(app, &gs, &nerr);
    g->refs = 1; /* the caller's: gen_publish sets it for a reload's */
    if (nerr) {
        rules_gen_release(g);
        return NULL;
    }
    return g;
}

json_t *rules_status_json(void)
{
    struct rules_gen *g = rules_gen_acquire();
    json_t *o = json_object();
    json_t *files = json_array();
    for (int i = 0; g && i < g->nfiles; i++) {
        const struct rules_file *f = &g->files[i];
        json_t *x = json_object();
        char hb[16], iso[32];
        json_object_set_new(x, "file", json_string(f->path));
        json_object_set_new(x, "kind", json_string(f->kind == RULES_PLUGIN ? "plugin" : "campaign"));
        json_object_set_new(x, "status", json_string(f->ok ? "ok" : f->source ? "error_previous_live"
                                                                               : "error"));
        if (f->source) {
            snprintf(hb, sizeof hb, "%08x", f->hash);
            json_object_set_new(x, "version", json_string(hb));
            tz_format_iso8601(f->loaded_at, iso, sizeof iso);
            json_object_set_new(x, "loaded_at", json_string(iso));
        }
        if (f->error) {
            json_t *e = json_object();
            json_object_set_new(e, "message", json_string(f->error));
            /* "path:line: message" → line */
            const char *p = f->error + strlen(f->path);
            if (!strncmp(f->error, f->path, strlen(f->path)) && *p == ':')
                json_object_set_new(e, "line", json_integer(atoi(p + 1)));
            json_object_set_new(x, "error", e);
        }
        char dis[256];
        if (luavm_file_disabled(f->path, dis, sizeof dis)) /* in a worker, for its memory */
            json_object_set_new(x, "disabled", json_string(dis));
        for (int c = 0; c < g->ncamps; c++)
            if (g->camps[c].file == i)
                json_object_set_new(x, "campaign_id", json_string(g->camps[c].id));
        for (int c = 0; c < g->nchans; c++)
            if (g->chans[c].file == i)
                json_object_set_new(x, "channel", json_string(g->chans[c].name));
        json_array_append_new(files, x);
    }
    json_object_set_new(o, "generation", json_integer(g ? (json_int_t)g->seq : 0));
    int nw = 0;
    uint64_t live_gen = rules_workers_live(&nw);
    json_object_set_new(o, "live_generation", json_integer((json_int_t)live_gen));
    json_object_set_new(o, "workers", json_integer(nw));
    json_object_set_new(o, "campaigns", json_integer(g ? g->ncamps : 0));
    json_object_set_new(o, "channels", json_integer(g ? g->nchans : 0));
    json_object_set_new(o, "build_ms", json_real(g ? g->build_ms : 0));
    json_object_set_new(o, "files", files);
    rules_gen_release(g);
    return o;
}

/* ===================================================================== */
/* watching                                                              */

static int g_ifd = -1;
static struct event *g_iev, *g_debounce;

static void add_watches(const char *dir, int depth)
{
    if (depth > 16)
        return;
    inotify_add_watch(g_ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                      IN_CREATE | IN_ATTRIB);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (!lstat(p, &st) && S_ISDIR(st.st_mode))
            add_watches(p, depth + 1);
    }
    closedir(d);
}

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct app *app = arg;
    add_watches(app->cfg.rules_dir, 0); /* new subdirectories */
    rules_reload(app, 0);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    char buf[16384];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    struct timeval tv = { app->cfg.reload_debounce_ms / 1000,
                          (app->cfg.reload_debounce_ms % 1000) * 1000 };
    event_add(g_debounce, &tv);
}

/* ===================================================================== */
/* lifecycle                                                             */

static void rules_collector(struct buf *out, void *ud)
{
    (void)ud;
    struct rules_gen *g = rules_gen_acquire();
    buf_printf(out,
               "# HELP promod_rules_generation Current ruleset generation.\n"
               "# TYPE promod_rules_generation gauge\npromod_rules_generation %llu\n"
               "# HELP promod_rules_campaigns Campaigns loaded.\n"
               "# TYPE promod_rules_campaigns gauge\npromod_rules_campaigns %d\n"
               "# HELP promod_rules_reloads_total Generations published.\n"
               "# TYPE promod_rules_reloads_total counter\npromod_rules_reloads_total %ld\n"
               "# HELP promod_rules_reload_errors_total Reloads that found a broken file.\n"
               "# TYPE promod_rules_reload_errors_total counter\npromod_rules_reload_errors_total %ld\n",
               g ? (unsigned long long)g->seq : 0ULL, g ? g->ncamps : 0, (long)g_reloads,
               (long)g_reload_errors);
    int bad = 0;
    for (int i = 0; g && i < g->nfiles; i++)
        bad += !g->files[i].ok;
    buf_printf(out, "# HELP promod_rules_files_with_errors Files whose version on disk failed.\n"
                    "# TYPE promod_rules_files_with_errors gauge\npromod_rules_files_with_errors %d\n",
               bad);
    rules_gen_release(g);
}

/* Does JSON value `v` hold {"$segment": id} anywhere? */
static int names_segment(const json_t *v, const char *id, int depth)
{
    if (depth > 64)
        return 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            if (!strcmp(k, "$segment") && json_is_string(x) && !strcmp(json_string_value(x), id))
                return 1;
            if (names_segment(x, id, depth + 1))
                return 1;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (names_segment(json_array_get(v, i), id, depth + 1))
                return 1;
    }
    return 0;
}

/* For segments_delete: the first loaded campaign whose audience names
 * segment `id` ("campaign spring-sale"), or NULL. */
static char *segment_user(const char *id)
{
    struct rules_gen *g = rules_gen_acquire();
    char *who = NULL;
    for (int i = 0; g && i < g->ncamps && !who; i++) {
        const json_t *a = g->camps[i].audience;
        if (!a)
            continue;
        int uses = names_segment(json_object_get(a, "conditions"), id, 0);
        static const char *lists[2] = { "segments", "exclude" };
        for (int l = 0; l < 2 && !uses; l++) {
            json_t *arr = json_object_get(a, lists[l]);
            for (size_t k = 0; k < json_array_size(arr) && !uses; k++)
                uses = !strcmp(json_string_value(json_array_get(arr, k)), id);
        }
        if (uses) {
            size_t n = strlen(g->camps[i].id) + 32;
            if ((who = malloc(n)))
                snprintf(who, n, "campaign \"%s\"", g->camps[i].id);
        }
    }
    rules_gen_release(g);
    return who;
}

int rules_start(struct app *app)
{
    segments_set_user_check(segment_user);
    rules_reload(app, 1);
    metrics_register(rules_collector, NULL);
    luavm_metrics_init();
    return 0;
}

void rules_attach(struct app *app, struct event_base *base)
{
    g_ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (g_ifd < 0) {
        log_warn("inotify unavailable: use POST /api/v1/rules/reload", "err=\"%s\"", strerror(errno));
        return;
    }
    add_watches(app->cfg.rules_dir, 0);
    add_watches(app->cfg.plugins_dir, 0);
    g_iev = event_new(base, g_ifd, EV_READ | EV_PERSIST, on_inotify, app);
    g_debounce = evtimer_new(base, on_debounce, app);
    event_add(g_iev, NULL);
}

void rules_stop(struct app *app)
{
    (void)app;
    if (g_iev)
        event_free(g_iev);
    if (g_debounce)
        event_free(g_debounce);
    g_iev = g_debounce = NULL;
    if (g_ifd >= 0)
        close(g_ifd);
    g_ifd = -1;
    pthread_mutex_lock(&g_lock);
    struct rules_gen *g = g_cur;
    g_cur = NULL;
    pthread_mutex_unlock(&g_lock);
    rules_gen_release(g);
}

