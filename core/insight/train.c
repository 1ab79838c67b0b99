/* train.c — one training of a model, start to finish (examples, fit,
 * validation, comparison with the live version, the stored version and
 * its promotion), and the trainer thread that runs trainings off the
 * request path: queued by the API, due by each model's `retrain`
 * schedule. */
#include "insight/train.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/reqerr.h"
#include "engine/models.h"
#include "lua/luavm.h"
#include "store/store.h"
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRONG_TYPE_SHARE 0.05   /* more wrong-typed values than this refuse the training */
#define FN_ERROR_SHARE 0.01     /* more failed feature functions than this refuse it */

static json_t *rows_json(const struct train_rows *r, const struct models_def *d)
{
    json_t *o = json_object();
    json_object_set_new(o, "customers", json_integer(r->customers));
    json_object_set_new(o, "examples", json_integer(r->anchors));
    json_object_set_new(o, "sampled", json_integer(r->n));
    json_object_set_new(o, "sampling_rate", json_real(r->rate));
    json_object_set_new(o, "train", json_integer(r->ntrain));
    json_object_set_new(o, "validation", json_integer(r->nval));
    json_object_set_new(o, "purged", json_integer(r->purged));
    json_object_set_new(o, d->regression ? "train_with_value" : "train_positives",
                        json_integer(r->pos_train));
    json_object_set_new(o, d->regression ? "validation_with_value" : "validation_positives",
                        json_integer(r->pos_val));
    if (r->fn_errors)
        json_object_set_new(o, "feature_function_errors", json_integer(r->fn_errors));
    json_t *wt = json_object();
    for (int i = 0; i < d->nfeats; i++)
        if (r->wrong_type[i])
            json_object_set_new(wt, d->feats[i].name, json_integer(r->wrong_type[i]));
    if (json_object_size(wt))
        json_object_set_new(o, "wrong_type", wt);
    else
        json_decref(wt);
    return o;
}

static json_t *iso(int64_t t)
{
    char b[32];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(b);
}

struct imp {
    int i;
    double v;
};

static int imp_cmp(const void *a, const void *b)
{
    double x = ((const struct imp *)a)->v, y = ((const struct imp *)b)->v;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Importance per feature (categorical columns summed), largest first. */
static json_t *importance_json(const struct models_def *d, const double *col)
{
    struct imp v[MODELS_MAX_FEATURES];
    for (int i = 0; i < d->nfeats; i++) {
        v[i] = (struct imp){ i, 0 };
        for (int k = 0; k < d->feats[i].ncols; k++)
            v[i].v += col[d->feats[i].col + k];
    }
    qsort(v, (size_t)d->nfeats, sizeof *v, imp_cmp);
    json_t *a = json_array();
    for (int i = 0; i < d->nfeats; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "feature", json_string(d->feats[v[i].i].name));
        json_object_set_new(o, "share", json_real(v[i].v));
        json_array_append_new(a, o);
    }
    return a;
}

static double *predict_rows(const struct predict_model *m, const float *x, long n, int nf)
{
    double *p = malloc(sizeof *p * (size_t)(n ? n : 1));
    if (p)
        for (long i = 0; i < n; i++)
            p[i] = predict_eval(m, x + i * nf);
    return p;
}

static void record_state(struct app *app, const char *id, int ok, const char *error, int version,
                         double ms, const char *trigger, json_t *extra)
{
    json_t *st = json_object();
    json_object_set_new(st, "at", json_integer(clock_now()));
    json_object_set_new(st, "ok", json_boolean(ok));
    if (error)
        json_object_set_new(st, "error", json_string(error));
    if (extra)
        json_object_set(st, "details", extra);
    if (version)
        json_object_set_new(st, "version", json_integer(version));
    json_object_set_new(st, "duration_ms", json_real(ms));
    json_object_set_new(st, "trigger", json_string(trigger ? trigger : "api"));
    struct store_txn *t;
    if (store_wtxn_begin(app->store, &t) == 0) {
        if (models_store_state_put(t, id, st) == 0)
            store_txn_commit(t, STORE_DURABLE);
        else
            store_txn_end(t);
    }
    json_decref(st);
}

static double ms_since(uint64_t t0)
{
    return (double)(clock_mono_ns() - t0) / 1e6;
}

int train_model(struct app *app, const char *id, const struct train_opts *o, json_t **result,
                struct reqerr *e)
{
    *result = NULL;
    uint64_t t0 = clock_mono_ns();
    const char *trigger = o && o->trigger ? o->trigger : "api";
    struct models_gen *g = models_gen_acquire();
    int idx = models_gen_find(g, id);
    if (idx < 0) {
        models_gen_release(g);
        return reqerr_set(e, 404, "model_not_found", NULL, "no model '%s' (a file in %s/)", id,
                          app->cfg.models_dir);
    }
    const struct models_entry *ent = &g->m[idx];
    if (!ent->def) {
        int rc = reqerr_set(e, 422, "model_invalid", NULL, "%s", ent->error ? ent->error
                                                                            : "the model file has errors");
        record_state(app, id, 0, e->message, 0, ms_since(t0), trigger, NULL);
        models_gen_release(g);
        return rc;
    }
    /* the file's definition, in a Lua state of its own (feature functions) */
    struct luavm_opts lo = { .mem_limit = (size_t)1 << 30, .instr_budget = app->cfg.instr_budget };
    struct luavm *vm = NULL;
    struct models_def *d = NULL;
    int table_ref = LUA_NOREF;
    int fn_refs[MODELS_MAX_FEATURES];
    struct train_rows rows;
    memset(&rows, 0, sizeof rows);
    struct train_fit_out fit;
    memset(&fit, 0, sizeof fit);
    double *pv = NULL, *pt = NULL, *pl = NULL;
    json_t *meta = NULL, *errs = json_array();
    char err[600] = "";
    int rc = luavm_new(&lo, &vm);
    if (rc) {
        rc = reqerr_set(e, 500, "internal", NULL, "out of memory for the training sandbox");
        goto fail;
    }
    if ((rc = models_parse(vm, ent->def->path, ent->source, ent->source_len, errs, &d, &table_ref))) {
        rc = reqerr_set(e, 422, "model_invalid", NULL, "%s",
                        json_string_value(json_array_get(errs, 0)) ? json_string_value(json_array_get(errs, 0))
                                                                   : "the model file does not load");
        goto fail;
    }
    if (d->nfn && models_fn_refs(luavm_state(vm), d, table_ref, fn_refs)) {
        rc = reqerr_set(e, 422, "model_invalid", NULL, "feature functions not found");
        goto fail;
    }
    int64_t now = clock_now();
    if ((rc = train_data_build(app->store, d, vm, d->nfn ? fn_refs : NULL, now, o ? o->cancel : NULL,
                               &rows, err, sizeof err))) {
        if (rc == ERR_INVAL)
            rc = reqerr_set(e, 422, strstr(err, "event type") ? "unknown_event_type" : "invalid_label",
                            "label", "%s", err);
        else if (rc == ERR_BUSY)
            rc = reqerr_set(e, 503, "cancelled", NULL, "training cancelled (server stopping)");
        else
            rc = reqerr_set(e, 500, "internal", NULL, "%s", err[0] ? err : err_str(rc));
        goto fail;
    }
    long seen = rows.n + rows.fn_errors;
    if (rows.fn_errors && (double)rows.fn_errors > FN_ERROR_SHARE * (double)seen) {
        rc = reqerr_set(e, 422, "feature_failed", NULL, "a feature function failed on %ld of %ld "
                        "examples; the first: %s", rows.fn_errors, seen, rows.fn_error);
        goto fail;
    }
    for (int i = 0; i < d->nfeats; i++)
        if (rows.wrong_type[i] && (double)rows.wrong_type[i] > WRONG_TYPE_SHARE * (double)seen) {
            const struct models_feature *f = &d->feats[i];
            rc = reqerr_set(e, 422, "feature_wrong_type", f->name,
                            "feature '%s' expects %s, but %ld of %ld examples had another type%s%s%s",
                            f->name,
                            f->nvalues ? "a string (one of its values)" : "a number or a boolean",
                            rows.wrong_type[i], seen, rows.wrong_example[i][0] ? " (" : "",
                            rows.wrong_example[i], rows.wrong_example[i][0] ? ")" : "");
            e->extra = json_pack("{s:i,s:i}", "wrong_type", (json_int_t)rows.wrong_type[i],
                                 "examples", (json_int_t)seen);
            goto fail;
        }
    long need_val = d->min_positives / 5 > 0 ? d->min_positives / 5 : 1;
    const char *what = d->regression ? "examples with an amount" : "positive examples";
    if (rows.pos_train < d->min_positives || rows.pos_val < need_val ||
        (!d->regression && (rows.ntrain - rows.pos_train < 1 || rows.nval - rows.pos_val < 1))) {
        rc = reqerr_set(e, 422, "too_few_positives", NULL,
                        "too few %s to train: %ld of %ld training examples and %ld of %ld "
                        "validation examples (need %ld and %ld: min_positives), from %ld "
                        "customers with events", what, rows.pos_train, rows.ntrain, rows.pos_val,
                        rows.nval, d->min_positives, need_val, rows.customers);
        e->extra = json_pack("{s:i,s:i,s:i,s:i,s:i}", "train_positives",
                             (json_int_t)rows.pos_train, "train", (json_int_t)rows.ntrain,
                             "validation_positives", (json_int_t)rows.pos_val, "validation",
                             (json_int_t)rows.nval, "min_positives", (json_int_t)d->min_positives);
        goto fail;
    }
    /* the fit */
    struct train_params p;
    train_params_default(&p, d->algo == MODELS_XGBOOST ? TRAIN_GBT : TRAIN_LINEAR, d->regression);
    p.trees = d->trees;
    p.depth = d->depth;
    p.eta = d->eta;
    p.subsample = d->subsample;
    p.colsample = d->colsample;
    p.min_child_weight = d->min_child_weight;
    p.lambda = d->lambda;
    p.C = d->C;
    p.tol = d->tol;
    p.threads = o && o->threads > 0 ? o->threads : app->cfg.train_threads;
    p.cancel = o ? o->cancel : NULL;
    int nf = d->ncols;
    struct train_set tr = { .n = rows.ntrain, .nfeat = nf, .x = rows.x, .y = rows.y };
    uint64_t tf = clock_mono_ns();
    if ((rc = train_fit(&tr, &p, &fit, err, sizeof err))) {
        rc = rc == ERR_BUSY ? reqerr_set(e, 503, "cancelled", NULL, "training cancelled")
                            : reqerr_set(e, 422, "training_failed", NULL, "%s", err);
        goto fail;
    }
    double fit_ms = ms_since(tf);
    const float *xv = rows.x + rows.val_start * nf, *yv = rows.y + rows.val_start;
    pv = predict_rows(fit.model, xv, rows.nval, nf);
    pt = predict_rows(fit.model, rows.x, rows.ntrain, nf);
    struct train_metrics mv, mt, ml;
    if (!pv || !pt || train_metrics_compute(yv, pv, rows.nval, d->regression, &mv) ||
        train_metrics_compute(rows.y, pt, rows.ntrain, d->regression, &mt)) {
        rc = reqerr_set(e, 500, "internal", NULL, "out of memory computing metrics");
        goto fail;
    }
    /* against the live version: on these very validation rows when it reads
     * the same features, else by its own stored validation metric */
    json_t *cmp = json_null();
    int promote = 1;
    char why[200] = "first version";
    if (ent->live) {
        int same = ent->live_def && ent->live_def->feat_hash == d->feat_hash && ent->live->nfeat == nf;
        memset(&ml, 0, sizeof ml);
        ml.regression = d->regression;
        if (same && (pl = predict_rows(ent->live, xv, rows.nval, nf)))
            train_metrics_compute(yv, pl, rows.nval, d->regression, &ml);
        else {
            ml.auc = json_number_value(json_object_get(ent->live_metrics, "auc"));
            ml.rmse = json_number_value(json_object_get(ent->live_metrics, "rmse"));
            if (!json_is_number(json_object_get(ent->live_metrics, d->regression ? "rmse" : "auc"))) {
                ml.auc = NAN;
                ml.rmse = NAN;
            }
        }
        int nw = train_metrics_not_worse(&mv, &ml, 0);
        const char *metric = d->regression ? "rmse" : "auc";
        double lv = d->regression ? ml.rmse : ml.auc, cv = d->regression ? mv.rmse : mv.auc;
        cmp = json_object();
        json_object_set_new(cmp, "version", json_integer(ent->live_version));
        json_object_set_new(cmp, "metric", json_string(metric));
        json_object_set_new(cmp, "live", isfinite(lv) ? json_real(lv) : json_null());
        json_object_set_new(cmp, "candidate", isfinite(cv) ? json_real(cv) : json_null());
        json_object_set_new(cmp, "same_rows", json_boolean(same && pl));
        json_object_set_new(cmp, "not_worse", json_boolean(nw));
        if (o && o->force) {
            snprintf(why, sizeof why, "forced");
        } else if (d->manual_promote) {
            promote = 0;
            snprintf(why, sizeof why, "promote = \"manual\": waiting for a promote call");
        } else if (!nw) {
            promote = 0;
            snprintf(why, sizeof why, "validation %s %.4f is worse than the live version's %.4f",
                     metric, cv, lv);
        } else {
            snprintf(why, sizeof why, "validation %s %.4f is not worse than the live version's %.4f",
                     metric, cv, lv);
        }
    } else if (d->manual_promote && !(o && o->force)) {
        promote = 0;
        snprintf(why, sizeof why, "promote = \"manual\": waiting for a promote call");
    }
    /* the version record */
    meta = json_object();
    json_object_set_new(meta, "model", json_string(d->id));
    json_object_set_new(meta, "file", json_string(d->path));
    json_object_set_new(meta, "source", json_stringn(ent->source, ent->source_len));
    json_object_set_new(meta, "source_hash", json_integer(d->hash));
    json_object_set_new(meta, "definition", models_def_json(d));
    json_t *cols = json_array();
    for (int i = 0; i < nf; i++)
        json_array_append_new(cols, json_string(d->colnames[i]));
    json_object_set_new(meta, "columns", cols);
    json_object_set_new(meta, "algorithm", json_string(d->algo == MODELS_XGBOOST ? "xgboost"
                                                       : d->regression          ? "linear"
                                                                                : "logistic"));
    json_t *win = json_object();
    json_object_set_new(win, "from", iso(rows.from));
    json_object_set_new(win, "to", iso(rows.to));
    json_object_set_new(win, "validation_from", iso(rows.split_at));
    json_object_set_new(win, "from_ts", json_integer(rows.from));
    json_object_set_new(win, "to_ts", json_integer(rows.to));
    json_object_set_new(win, "validation_from_ts", json_integer(rows.split_at));
    json_object_set_new(meta, "window", win);
    json_object_set_new(meta, "rows", rows_json(&rows, d));
    json_t *mets = json_object();
    json_object_set_new(mets, "validation", train_metrics_json(&mv));
    json_object_set_new(mets, "training", train_metrics_json(&mt));
    json_object_set_new(meta, "metrics", mets);
    json_object_set_new(meta, "importance", importance_json(d, fit.importance));
    json_object_set_new(meta, "compared_with", cmp);
    json_object_set_new(meta, "decision", json_pack("{s:b,s:s}", "promote", promote, "reason", why));
    json_object_set_new(meta, "trained_by", json_string(o && o->actor ? o->actor : trigger));
    json_object_set_new(meta, "trigger", json_string(trigger));
    json_object_set_new(meta, "fit_ms", json_real(fit_ms));
    json_object_set_new(meta, "duration_ms", json_real(ms_since(t0)));
    json_object_set_new(meta, "status", json_string(promote ? "live"
                                                    : d->manual_promote ? "candidate"
                                                                        : "rejected"));
    struct buf mb = BUF_INIT;
    if (predict_save(fit.model, &mb)) {
        rc = reqerr_set(e, 500, "internal", NULL, "out of memory");
        goto fail;
    }
    struct store_txn *t;
    int version = 0;
    if (!(rc = store_wtxn_begin(app->store, &t))) {
        rc = models_store_put(t, d->id, meta, mb.p, mb.len, &version);
        if (!rc && promote)
            rc = models_store_promote(t, d->id, version, o && o->actor ? o->actor : trigger, why);
        if (!rc)
            rc = store_txn_commit(t, STORE_DURABLE);
        else
            store_txn_end(t);
    }
    buf_free(&mb);
    if (rc) {
        rc = reqerr_from_code(e, rc, "storing the version");
        goto fail;
    }
    if (promote)
        json_object_set_new(meta, "promoted", json_pack("{s:I,s:s,s:s}", "at", (json_int_t)clock_now(),
                                                        "by", o && o->actor ? o->actor : trigger,
                                                        "why", why));
    json_object_del(meta, "source");
    log_info("model trained", "model=\"%s\" version=%d rows=%ld %s=%.4f promoted=%s ms=%.0f", d->id,
             version, rows.ntrain, d->regression ? "rmse" : "auc",
             d->regression ? mv.rmse : mv.auc, promote ? "yes" : "no", ms_since(t0));
    record_state(app, id, 1, NULL, version, ms_since(t0), trigger, NULL);
    *result = meta;
    meta = NULL;
    rc = 0;
    goto done;
fail:
    log_warn("model training failed", "model=\"%s\" err=\"%s\"", id, e->message);
    record_state(app, id, 0, e->message, 0, ms_since(t0), trigger, e->extra);
done:
    free(pv);
    free(pt);
    free(pl);
    json_decref(meta);
    json_decref(errs);
    train_fit_release(&fit);
    train_rows_free(&rows);
    models_def_free(d);
    luavm_free(vm);
    models_gen_release(g);
    if (!rc)
        models_reload(app, 0); /* serve the new version now, not on the next tick */
    return rc;
}
