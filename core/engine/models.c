/* models.c — the registry of models: files scanned and parsed, live
 * versions read from the store and compiled, published as an immutable
 * refcounted generation with one pointer swap; the listing; /metrics.
 *
 * The main thread polls every second: each file is re-read and parsed only
 * when its content hash changed, and the store's models revision tells
 * whether a promotion or rollback happened (here or in another process,
 * `promod train`).  A file that fails keeps its previous definition, so
 * training goes on with what was good; a deleted file takes its model out
 * of serving (its versions stay in the store). */
#include "engine/models.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/file.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/metrics.h"
#include "lua/luavm.h"
#include "store/store.h"
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;   /* the published pointer */
static pthread_mutex_t g_reload_mu = PTHREAD_MUTEX_INITIALIZER;
static struct models_gen *g_gen;
static uint64_t g_seq;
static struct event *g_tick;

static void entry_free(struct models_entry *e)
{
    free(e->id);
    free(e->path);
    free(e->error);
    models_def_free(e->def);
    free(e->source);
    models_def_free(e->live_def);
    free(e->live_source);
    predict_free(e->live);
    json_decref(e->live_metrics);
}

static void gen_free(struct models_gen *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n; i++)
        entry_free(&g->m[i]);
    free(g->m);
    free(g);
}

struct models_gen *models_gen_acquire(void)
{
    pthread_mutex_lock(&g_mu);
    struct models_gen *g = g_gen;
    if (g)
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_mu);
    return g;
}

void models_gen_release(struct models_gen *g)
{
    if (g && __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0)
        gen_free(g);
}

uint64_t models_gen_seq(void)
{
    return __atomic_load_n(&g_seq, __ATOMIC_ACQUIRE);
}

int models_gen_find(const struct models_gen *g, const char *id)
{
    for (int i = 0; g && i < g->n; i++)
        if (!strcmp(g->m[i].id, id))
            return i;
    return -1;
}

static void publish(struct models_gen *g)
{
    g->refs = 1;
    pthread_mutex_lock(&g_mu);
    g->seq = g_seq + 1;
    __atomic_store_n(&g_seq, g->seq, __ATOMIC_RELEASE);
    struct models_gen *old = g_gen;
    g_gen = g;
    pthread_mutex_unlock(&g_mu);
    models_gen_release(old);
}

/* ---------------------------------------------------------------------- */
/* scanning                                                                */

struct flist {
    char **p;
    int n, cap;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scan(const char *dir, struct flist *l, int depth)
{
    DIR *d = opendir(dir);
    if (!d || depth > 8) {
        if (d)
            closedir(d);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
            continue;
        struct stat st;
        if (stat(p, &st))
            continue;
        size_t nl = strlen(de->d_name);
        if (S_ISDIR(st.st_mode)) {
            scan(p, l, depth + 1);
        } else if (S_ISREG(st.st_mode) && nl > 4 && !strcmp(de->d_name + nl - 4, ".lua") &&
                   l->n < 10000) {
            if (l->n == l->cap) {
                l->cap = l->cap ? 2 * l->cap : 16;
                char **np = realloc(l->p, sizeof *np * (size_t)l->cap);
                if (!np)
                    break;
                l->p = np;
            }
            if (!(l->p[l->n] = strdup(p)))
                break;
            l->n++;
        }
    }
    closedir(d);
}

static const struct models_entry *prev_by_path(const struct models_gen *g, const char *path)
{
    for (int i = 0; g && i < g->n; i++)
        if (!strcmp(g->m[i].path, path))
            return &g->m[i];
    return NULL;
}

static struct models_def *def_copy_by_parse(struct luavm *vm, const char *path, const char *src,
                                            size_t len)
{
    json_t *errs = json_array();
    struct models_def *d = NULL;
    models_parse(vm, path, src, len, errs, &d, NULL);
    json_decref(errs);
    return d;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* The live version of e: reuse the previous generation's compiled copy
 * when the version is the same, else load it from the store. */
static void load_live(struct luavm *vm, struct store_txn *t, struct models_entry *e,
                      const struct models_entry *prev)
{
    int live = t ? models_store_live(t, e->id) : 0;
    if (!live)
        return;
    if (prev && prev->live_version == live && prev->live && !strcmp(prev->id, e->id)) {
        e->live_version = live;
        e->live_since = prev->live_since;
        e->live_source = dupn(prev->live_source, prev->live_source_len);
        e->live_source_len = prev->live_source_len;
        e->live_def = def_copy_by_parse(vm, prev->live_def->path, prev->live_source,
                                        prev->live_source_len);
        /* the compiled model is immutable: share it by round-tripping its
         * bytes is wasteful; load it again only when needed */
        struct buf b = BUF_INIT;
        char err[160];
        if (e->live_def && predict_save(prev->live, &b) == 0 &&
            predict_load(b.p, b.len, &e->live, err, sizeof err) == 0) {
            e->live_metrics = json_incref(prev->live_metrics);
            buf_free(&b);
            return;
        }
        buf_free(&b);
    }
    json_t *meta = NULL;
    struct predict_model *m = NULL;
    int rc = models_store_get(t, e->id, live, &meta, &m);
    const char *src = json_string_value(json_object_get(meta, "source"));
    const char *path = json_string_value(json_object_get(meta, "file"));
    if (rc || !src || !path) {
        log_error("model version unreadable", "model=\"%s\" version=%d err=\"%s\"", e->id, live,
                  rc ? err_str(rc) : "no source recorded");
        json_decref(meta);
        predict_free(m);
        return;
    }
    size_t sl = strlen(src);
    struct models_def *d = def_copy_by_parse(vm, path, src, sl);
    if (!d || d->ncols != m->nfeat) {
        log_error("model version does not parse", "model=\"%s\" version=%d", e->id, live);
        models_def_free(d);
        json_decref(meta);
        predict_free(m);
        return;
    }
    e->live_version = live;
    e->live = m;
    e->live_def = d;
    e->live_source = dupn(src, sl);
    e->live_source_len = sl;
    json_t *pr = json_object_get(meta, "promoted");
    e->live_since = json_integer_value(json_object_get(pr, "at"));
    e->live_metrics = json_incref(json_object_get(json_object_get(meta, "metrics"), "validation"));
    json_decref(meta);
}

/* The model whose live version was trained from file `path` (new string),
 * or NULL. */
static char *id_of_file(struct store_txn *t, const char *path)
{
    if (!t)
        return NULL;
    json_t *ids = models_store_ids(t);
    char *found = NULL;
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) {
        const char *s = json_string_value(id);
        int live = models_store_live(t, s);
        json_t *meta = NULL;
        if (live && models_store_get(t, s, live, &meta, NULL) == 0) {
            const char *f = json_string_value(json_object_get(meta, "file"));
            if (f && !strcmp(f, path) && !found)
                found = strdup(s);
        }
        json_decref(meta);
    }
    json_decref(ids);
    return found;
}

static int entry_same(const struct models_entry *a, const struct models_entry *b)
{
    return !strcmp(a->id, b->id) && !strcmp(a->path, b->path) && a->file_ok == b->file_ok &&
           ((!a->error && !b->error) || (a->error && b->error && !strcmp(a->error, b->error))) &&
           (a->def ? a->def->hash : 0) == (b->def ? b->def->hash : 0) &&
           a->live_version == b->live_version && (a->live != NULL) == (b->live != NULL);
}

static struct models_gen *build(struct app *app, int *nerrors)
{
    struct models_gen *prev = models_gen_acquire();
    struct models_gen *g = calloc(1, sizeof *g);
    struct luavm_opts o = { .mem_limit = 256u << 20, .instr_budget = app->cfg.instr_budget };
    struct luavm *vm = NULL;
    struct flist fl = { 0 };
    *nerrors = 0;
    if (!g || luavm_new(&o, &vm)) {
        free(g);
        models_gen_release(prev);
        return NULL;
    }
    scan(app->cfg.models_dir, &fl, 0);
    if (fl.n > 1)
        qsort(fl.p, (size_t)fl.n, sizeof *fl.p, cmp_str);
    g->m = calloc((size_t)(fl.n ? fl.n : 1), sizeof *g->m);
    struct store_txn *t = NULL;
    if (app->store && store_rtxn_begin(app->store, &t))
        t = NULL;
    g->store_rev = t ? models_store_rev(t) : 0;
    for (int i = 0; g->m && i < fl.n; i++) {
        struct models_entry *e = &g->m[g->n];
        memset(e, 0, sizeof *e);
        const struct models_entry *pe = prev_by_path(prev, fl.p[i]);
        size_t len = 0;
        int rc = 0;
        char *src = file_read_all(fl.p[i], MODELS_MAX_FILE_BYTES, &len, &rc);
        json_t *errs = json_array();
        struct models_def *d = NULL;
        uint32_t h = src ? hash_fnv1a(src, len, HASH_FNV_INIT) : 0;
        if (!src) {
            char m[600];
            snprintf(m, sizeof m, "%s:1: cannot read: %s", fl.p[i],
                     rc < 0 && rc > -4096 ? strerror(-rc) : err_str(rc));
            json_array_append_new(errs, json_string(m));
        } else if (pe && pe->file_ok && pe->def && pe->def->hash == h) {
            d = def_copy_by_parse(vm, fl.p[i], src, len); /* unchanged: same result */
        } else {
            models_parse(vm, fl.p[i], src, len, errs, &d, NULL);
        }
        if (d) {
            for (int k = 0; k < g->n; k++)
                if (g->m[k].def && !strcmp(g->m[k].def->id, d->id)) {
                    char m[600];
                    snprintf(m, sizeof m, "%s:1: model id '%s' is already defined by %s", fl.p[i],
                             d->id, g->m[k].path);
                    json_array_append_new(errs, json_string(m));
                    models_def_free(d);
                    d = NULL;
                    break;
                }
        }
        e->path = strdup(fl.p[i]);
        if (d) {
            e->file_ok = 1;
            e->def = d;
            e->source = src;
            e->source_len = len;
            src = NULL;
            e->loaded_at = pe && pe->def && pe->def->hash == h ? pe->loaded_at : clock_now();
        } else {
            (*nerrors)++;
            const char *msg = json_string_value(json_array_get(errs, 0));
            size_t ne = json_array_size(errs);
            char *all = NULL;
            if (ne > 1) { /* every problem, one per line */
                struct buf b = BUF_INIT;
                for (size_t k = 0; k < ne; k++)
                    buf_printf(&b, "%s%s", k ? "\n" : "", json_string_value(json_array_get(errs, k)));
                all = buf_steal(&b);
            }
            e->error = all ? all : strdup(msg ? msg : "invalid model file");
            log_warn("model file rejected", "file=\"%s\" error=\"%s\" kept_previous=%s", fl.p[i],
                     msg ? msg : "?", pe && pe->def ? "yes" : "no");
            if (pe && pe->def) { /* keep serving and training with the last good definition */
                e->def = def_copy_by_parse(vm, pe->path, pe->source, pe->source_len);
                e->source = dupn(pe->source, pe->source_len);
                e->source_len = pe->source_len;
                e->loaded_at = pe->loaded_at;
            }
        }
        free(src);
        json_decref(errs);
        if (!e->def) {
            /* never loaded since start: its id is the one a stored version
             * trained from this file declared, else its file name */
            char *sid = id_of_file(t, fl.p[i]);
            if (sid) {
                e->id = sid;
            } else {
                char idb[160];
                const char *base = strrchr(fl.p[i], '/');
                snprintf(idb, sizeof idb, "%s", base ? base + 1 : fl.p[i]);
                size_t il = strlen(idb);
                if (il > 4)
                    idb[il - 4] = 0;
                e->id = strdup(idb);
            }
        } else {
            e->id = strdup(e->def->id);
        }
        const struct models_entry *pl = pe && pe->id && e->id && !strcmp(pe->id, e->id) ? pe : NULL;
        /* the live version serves with its own source, whatever the file
         * on disk says now: a broken file never stops it (not even across
         * a restart) */
        load_live(vm, t, e, pl);
        g->n++;
    }
    store_txn_end(t);
    for (int i = 0; i < fl.n; i++)
        free(fl.p[i]);
    free(fl.p);
    luavm_free(vm);
    models_gen_release(prev);
    return g;
}

/* What the directory holds (paths and contents) and the store revision:
 * when both are what the published generation was built from, there is
 * nothing to do.  Reading a few small files costs far less than parsing. */
static uint32_t fingerprint(struct app *app, uint64_t *rev)
{
    struct flist fl = { 0 };
    scan(app->cfg.models_dir, &fl, 0);
    if (fl.n > 1)
        qsort(fl.p, (size_t)fl.n, sizeof *fl.p, cmp_str);
    uint32_t h = HASH_FNV_INIT;
    for (int i = 0; i < fl.n; i++) {
        size_t len = 0;
        int rc;
        char *src = file_read_all(fl.p[i], MODELS_MAX_FILE_BYTES, &len, &rc);
        h = hash_fnv1a(fl.p[i], strlen(fl.p[i]) + 1, h);
        h = src ? hash_fnv1a(src, len, h) : hash_fnv1a(&rc, sizeof rc, h);
        free(src);
        free(fl.p[i]);
    }
    free(fl.p);
    *rev = 0;
    struct store_txn *t;
    if (app->store && store_rtxn_begin(app->store, &t) == 0) {
        *rev = models_store_rev(t);
        store_txn_end(t);
    }
    return h;
}

int models_reload(struct app *app, int force)
{
    pthread_mutex_lock(&g_reload_mu);
    uint64_t rev;
    uint32_t fp = fingerprint(app, &rev);
    struct models_gen *pub = models_gen_acquire();
    if (!force && pub && pub->fp == fp && pub->store_rev == rev) {
        int nerr = 0;
        for (int i = 0; i < pub->n; i++)
            nerr += !pub->m[i].file_ok;
        models_gen_release(pub);
        pthread_mutex_unlock(&g_reload_mu);
        return nerr;
    }
    models_gen_release(pub);
    int nerr = 0;
    struct models_gen *g = build(app, &nerr);
    if (!g) {
        pthread_mutex_unlock(&g_reload_mu);
        log_error("models reload failed", "err=\"%s\"", err_str(ERR_NOMEM));
        return 1;
    }
    struct models_gen *cur = models_gen_acquire();
    int same = cur && cur->n == g->n && cur->store_rev == g->store_rev;
    for (int i = 0; same && i < g->n; i++)
        same = entry_same(&cur->m[i], &g->m[i]);
    g->fp = fp;
    if (same && !force) {
        /* e.g. a file rewritten with the same text: remember the contents
         * (fp is read only under g_reload_mu, which we hold) */
        cur->fp = fp;
        models_gen_release(cur);
        gen_free(g);
    } else {
        models_gen_release(cur);
        publish(g);
        log_info("models published", "models=%d errors=%d", g->n, nerr);
    }
    pthread_mutex_unlock(&g_reload_mu);
    return nerr;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    models_reload(arg, 0);
}

int models_start(struct app *app)
{
    return models_reload(app, 1);
}

void models_attach(struct app *app, struct event_base *base)
{
    g_tick = event_new(base, -1, EV_PERSIST, on_tick, app);
    struct timeval tv = { 1, 0 };
    if (g_tick)
        event_add(g_tick, &tv);
}

void models_stop(struct app *app)
{
    (void)app;
    if (g_tick)
        event_free(g_tick);
    g_tick = NULL;
    pthread_mutex_lock(&g_mu);
    struct models_gen *g = g_gen;
    g_gen = NULL;
    pthread_mutex_unlock(&g_mu);
    models_gen_release(g);
}

/* ---------------------------------------------------------------------- */
/* JSON                                                                    */

static json_t *dur(int64_t s)
{
    char b[32];
    if (!s)
        return json_null();
    if (s % 86400 == 0)
        snprintf(b, sizeof b, "%lldd", (long long)(s / 86400));
    else
        snprintf(b, sizeof b, "%lldh", (long long)(s / 3600));
    return json_string(b);
}

json_t *models_def_json(const struct models_def *d)
{
    static const char *srcs[] = { "attribute", "stats", "context", "function", "segment" };
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(d->id));
    json_object_set_new(o, "name", json_string(d->name));
    if (d->description)
        json_object_set_new(o, "description", json_string(d->description));
    json_t *lb = json_object();
    const struct models_label *l = &d->label;
    static const char *kinds[] = { "event", "churn", "value" };
    json_object_set_new(lb, "kind", json_string(kinds[l->kind]));
    if (l->kind == MODELS_LABEL_EVENT) {
        json_object_set_new(lb, "event", json_string(l->event));
        json_object_set_new(lb, "after", json_string(l->after));
        json_object_set_new(lb, "campaign", l->campaign ? json_string(l->campaign) : json_null());
    } else {
        json_t *ty = json_array();
        for (int i = 0; i < l->ntypes; i++)
            json_array_append_new(ty, json_string(l->types[i]));
        json_object_set_new(lb, "types", ty);
        json_object_set_new(lb, "every", dur(l->every));
        json_object_set_new(lb, "active", dur(l->active));
    }
    json_object_set_new(lb, "within", dur(l->within));
    json_object_set_new(o, "label", lb);
    json_object_set_new(o, "predicts", json_string(d->regression ? "value" : "probability"));
    json_t *fs = json_array();
    for (int i = 0; i < d->nfeats; i++) {
        const struct models_feature *f = &d->feats[i];
        json_t *fo = json_object();
        json_object_set_new(fo, "name", json_string(f->name));
        json_object_set_new(fo, "source", json_string(srcs[f->src]));
        if (f->src == MODELS_SRC_SEGMENT)
            json_object_set_new(fo, "segment", json_string(f->path[0]));
        if (f->nvalues) {
            json_t *vs = json_array();
            for (int k = 0; k < f->nvalues; k++)
                json_array_append_new(vs, json_string(f->values[k]));
            json_object_set_new(fo, "values", vs);
        }
        json_array_append_new(fs, fo);
    }
    json_object_set_new(o, "features", fs);
    json_object_set_new(o, "columns", json_integer(d->ncols));
    json_object_set_new(o, "algorithm",
                        json_string(d->algo == MODELS_XGBOOST ? "xgboost"
                                    : d->regression          ? "linear"
                                                             : "logistic"));
    json_t *p = json_object();
    if (d->algo == MODELS_XGBOOST) {
        json_object_set_new(p, "trees", json_integer(d->trees));
        json_object_set_new(p, "depth", json_integer(d->depth));
        json_object_set_new(p, "eta", json_real(d->eta));
        json_object_set_new(p, "subsample", json_real(d->subsample));
        json_object_set_new(p, "colsample", json_real(d->colsample));
        json_object_set_new(p, "min_child_weight", json_real(d->min_child_weight));
        json_object_set_new(p, "lambda", json_real(d->lambda));
    } else {
        json_object_set_new(p, "C", json_real(d->C));
        json_object_set_new(p, "tol", json_real(d->tol));
    }
    json_object_set_new(o, "params", p);
    json_object_set_new(o, "retrain", dur(d->retrain));
    json_object_set_new(o, "window", dur(d->window));
    json_object_set_new(o, "validation", json_real(d->validation));
    json_object_set_new(o, "min_positives", json_integer(d->min_positives));
    json_object_set_new(o, "max_rows", json_integer(d->max_rows));
    json_object_set_new(o, "promote", json_string(d->manual_promote ? "manual" : "auto"));
    return o;
}

json_t *models_entry_json(const struct models_entry *e)
{
    json_t *o = e->def ? models_def_json(e->def) : json_object();
    json_object_set_new(o, "id", json_string(e->id));
    json_object_set_new(o, "file", json_string(e->path));
    json_object_set_new(o, "status", json_string(e->file_ok            ? "ok"
                                                 : e->def || e->live ? "error_previous_live"
                                                                     : "error"));
    if (e->error)
        json_object_set_new(o, "error", json_string(e->error));
    if (e->loaded_at)
        json_object_set_new(o, "loaded_at", json_integer(e->loaded_at));
    json_object_set_new(o, "live_version", e->live_version ? json_integer(e->live_version)
                                                           : json_null());
    if (e->live_metrics)
        json_object_set(o, "live_metrics", e->live_metrics);
    if (e->live_def && e->def && e->live_def->feat_hash != e->def->feat_hash)
        json_object_set_new(o, "live_features_differ", json_true());
    return o;
}

json_t *models_list_json(void)
{
    struct models_gen *g = models_gen_acquire();
    json_t *a = json_array();
    for (int i = 0; g && i < g->n; i++)
        json_array_append_new(a, models_entry_json(&g->m[i]));
    models_gen_release(g);
    return a;
}
