/*
 * exp_admin.c — experiments through the API: create, update, archive, the
 * lifecycle actions (start, stop, winner), the view and list, results and
 * recommendations (see exp_admin.h).  The directory, record sync and
 * publication are exp_admin_files.c.
 *
 * A mutation holds expa_mu from its first read to the republication: the
 * record (and its audit entry) is committed first, then the file renamed
 * into place, then the directory reloaded, so the file sync sees the
 * record of every file the API wrote and never records it as a hand edit.
 */
#include "service/exp_admin.h"
#include "service/exp_admin_internal.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/id.h"
#include "base/log.h"
#include "base/tz.h"
#include "codec/codec.h"
#include "engine/rules.h"
#include "insight/exp_results.h"
#include "store/audit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* errors and the status machine                                          */

static void store_err(struct reqerr *e, int rc, const char *what)
{
    if (rc == ERR_FULL)
        reqerr_set(e, 507, "storage_full", NULL, "%s: the data store is full", what);
    else
        reqerr_from_code(e, rc, what);
}

enum act { A_START, A_STOP, A_WINNER, A_DELETE, A_EDIT, A_N };
static const char *act_names[A_N] = { "start", "stop", "winner", "delete", "edit" };

static unsigned allowed(const char *st)
{
    if (!strcmp(st, "draft"))
        return 1u << A_START | 1u << A_DELETE | 1u << A_EDIT;
    if (!strcmp(st, "running"))
        return 1u << A_STOP | 1u << A_WINNER | 1u << A_EDIT;
    if (!strcmp(st, "stopped"))
        return 1u << A_START | 1u << A_WINNER | 1u << A_DELETE | 1u << A_EDIT;
    if (!strcmp(st, "concluded"))
        return 1u << A_DELETE;
    return 0;
}

static json_t *allowed_json(unsigned m)
{
    json_t *a = json_array();
    for (int i = 0; i < A_N; i++)
        if (m & (1u << i))
            json_array_append_new(a, json_string(act_names[i]));
    return a;
}

static void illegal(struct reqerr *e, const char *action, const char *st)
{
    unsigned m = allowed(st);
    reqerr_set(e, 409, "illegal_transition", "status",
               "cannot %s an experiment that is %s", action, st);
    e->extra = json_pack("{s:s,s:o}", "current", st, "allowed", allowed_json(m));
}

static const char *rec_status(const json_t *rec)
{
    const char *s = json_string_value(json_object_get(rec, "status"));
    return s ? s : "draft";
}

/* ---------------------------------------------------------------------- */
/* the view                                                               */

static json_t *view(const json_t *rec)
{
    json_t *v = json_deep_copy(rec);
    json_object_del(v, "head_hash");
    const char *id = json_string_value(json_object_get(rec, "id"));
    const char *st = rec_status(rec);
    const char *rel = json_string_value(json_object_get(rec, "file"));
    json_t *load = json_object();
    const struct expa_file *f = NULL;
    for (int i = 0; rel && i < expa.nfiles; i++)
        if (!strcmp(expa.files[i].rel, rel))
            f = &expa.files[i];
    if (!f)
        f = expa_file_of(id);
    if (f) {
        json_object_set_new(load, "file", json_string(f->rel));
        json_object_set_new(load, "status", json_string(!f->error ? "ok"
                                                        : f->def ? "error_previous_live"
                                                                 : "error"));
        if (f->error)
            json_object_set_new(load, "error", json_string(f->error));
    } else {
        json_object_set_new(load, "status", json_string("missing"));
    }
    json_object_set_new(v, "load", load);
    json_t *problems = json_array();
    struct experiments_def *d = expa_def_of(rec);
    if (d) {
        char field[64], msg[300];
        if (expa_check_campaigns(d, field, sizeof field, msg, sizeof msg))
            json_array_append_new(problems, json_string(msg));
    }
    json_t *why = json_object_get(expa.excluded, id);
    if (why)
        json_array_append_new(problems, json_string(json_string_value(why)));
    int live = d && (!strcmp(st, "running") || !strcmp(st, "concluded")) && !why &&
               !json_array_size(problems);
    json_object_set_new(v, "problems", problems);
    json_object_set_new(v, "live", json_boolean(live));
    json_object_set_new(v, "allowed_actions", allowed_json(allowed(st)));
    experiments_def_unref(d);
    return v;
}

/* The record of `id` in txn `t` (NULL: a read txn of its own), or NULL
 * with `e` filled: 404 for an unknown id, 503/500 for the store. */
static json_t *rec_of(struct store_txn *t, const char *id, struct reqerr *e)
{
    struct store_txn *own = NULL;
    int rc = t ? 0 : store_rtxn_begin(g_app->store, &own);
    if (rc) {
        store_err(e, rc, "experiments");
        return NULL;
    }
    json_t *rec = expa_rec_get(t ? t : own, id, &rc);
    if (own)
        store_txn_end(own);
    if (!rec) {
        if (rc == ERR_NOTFOUND)
            reqerr_set(e, 404, "not_found", "id", "no experiment \"%s\"", id);
        else
            store_err(e, rc, "experiments");
    }
    return rec;
}

static json_t *view_of(const char *id, struct reqerr *e)
{
    json_t *rec = rec_of(NULL, id, e);
    if (!rec)
        return NULL;
    json_t *v = view(rec);
    json_decref(rec);
    return v;
}

json_t *exp_admin_get(const char *id, struct reqerr *e)
{
    pthread_mutex_lock(&expa_mu);
    json_t *v = view_of(id, e);
    pthread_mutex_unlock(&expa_mu);
    return v;
}

struct list_ctx {
    const char *status;
    json_t *out;
};

static int list_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen);

json_t *exp_admin_list(const char *status, struct reqerr *e)
{
    if (status && strcmp(status, "all") && experiments_status_parse(status) < 0) {
        reqerr_set(e, 400, "invalid_field", "status",
                   "status must be draft, running, stopped, concluded, archived or all");
        return NULL;
    }
    pthread_mutex_lock(&expa_mu);
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    struct list_ctx x = { status, json_array() };
    if (!rc) {
        rc = store_scan(t, STORE_EXPERIMENTS, NULL, 0, NULL, 0, list_cb, &x);
        store_txn_end(t);
    }
    json_t *errors = json_array();
    for (int i = 0; i < expa.nfiles; i++)
        if (expa.files[i].error && !expa.files[i].def)
            json_array_append_new(errors, json_pack("{s:s,s:s}", "file", expa.files[i].rel,
                                                    "error", expa.files[i].error));
    pthread_mutex_unlock(&expa_mu);
    if (rc) {
        json_decref(x.out);
        json_decref(errors);
        store_err(e, rc, "experiments");
        return NULL;
    }
    return json_pack("{s:o,s:o}", "experiments", x.out, "errors", errors);
}

static int list_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    struct list_ctx *x = ud;
    json_t *rec = codec_msgpack_to_json(val, vlen, NULL);
    if (!json_is_object(rec)) {
        json_decref(rec);
        return 0;
    }
    const char *st = rec_status(rec);
    int want = x->status ? (!strcmp(x->status, "all") || !strcmp(x->status, st))
                         : strcmp(st, "archived") != 0;
    if (want)
        json_array_append_new(x->out, view(rec));
    json_decref(rec);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* checks shared by create, update and start                              */

static int check_refs(const struct experiments_def *d, struct reqerr *e)
{
    char field[64], msg[300];
    if (expa_check_campaigns(d, field, sizeof field, msg, sizeof msg)) {
        reqerr_set(e, 400, "invalid_field", field, "%s", msg);
        return -1;
    }
    return 0;
}

/* Does `d` overlap a running experiment other than `self`? */
static int check_overlap(struct store_txn *t, const struct experiments_def *d, const char *self,
                         struct reqerr *e);

struct ov_ctx {
    const struct experiments_def *d;
    const char *self;
    struct reqerr *e;
    int clash;
};

static int ov_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    struct ov_ctx *x = ud;
    json_t *rec = codec_msgpack_to_json(val, vlen, NULL);
    const char *id = json_string_value(json_object_get(rec, "id"));
    if (!id || !strcmp(id, x->self) || strcmp(rec_status(rec), "running")) {
        json_decref(rec);
        return 0;
    }
    struct experiments_def *o = expa_def_of(rec);
    const char *camp;
    if (o && experiments_overlap(x->d, o, &camp)) {
        reqerr_set(x->e, 400, "invalid_field", "namespace",
                   "running experiment \"%s\" already splits campaign \"%s\" and the ranges "
                   "overlap: give both the same namespace with disjoint ranges (e.g. "
                   "[\"%s\", 0, 0.5] and [\"%s\", 0.5, 1])",
                   id, camp, x->d->has_namespace ? x->d->ns : camp,
                   x->d->has_namespace ? x->d->ns : camp);
        x->clash = 1;
    }
    experiments_def_unref(o);
    json_decref(rec);
    return x->clash;
}

static int check_overlap(struct store_txn *t, const struct experiments_def *d, const char *self,
                         struct reqerr *e)
{
    struct ov_ctx x = { d, self, e, 0 };
    int rc = store_scan(t, STORE_EXPERIMENTS, NULL, 0, NULL, 0, ov_cb, &x);
    if (rc) {
        store_err(e, rc, "experiments");
        return -1;
    }
    return x.clash ? -1 : 0;
}

static void stamp(json_t *rec, const char *what, const char *actor)
{
    char iso[40], k[40];
    int64_t now = clock_now();
    tz_format_iso8601(now, iso, sizeof iso);
    snprintf(k, sizeof k, "%s_at", what);
    json_object_set_new(rec, k, json_string(iso));
    if (actor) {
        snprintf(k, sizeof k, "%s_by", what);
        json_object_set_new(rec, k, json_string(actor));
    }
    if (!strcmp(what, "started") || !strcmp(what, "stopped") || !strcmp(what, "concluded")) {
        snprintf(k, sizeof k, "%s_ts", what);
        json_object_set_new(rec, k, json_integer(now));
    }
}

static void bump(json_t *rec, const char *actor)
{
    json_object_set_new(rec, "rev", json_integer(json_integer_value(json_object_get(rec, "rev")) + 1));
    stamp(rec, "updated", actor);
}

/* Commit `t` (always ended), then write `text` as the file `rel` (already
 * prepared in `tmp`), then reload.  On a failed rename the record change is
 * undone by restoring `old` (NULL: the record was new). */
static int finish(struct store_txn *t, const char *id, const json_t *old, const char *tmp,
                  const char *rel, const char *actor, struct reqerr *e)
{
    int rc = store_txn_commit(t, STORE_DURABLE);
    if (rc) {
        if (tmp)
            unlink(tmp);
        store_err(e, rc, "experiments");
        return rc;
    }
    if (tmp && (rc = expa_file_commit(tmp, rel))) {
        struct store_txn *u;
        if (store_wtxn_begin(g_app->store, &u) == 0) {
            char obj[160];
            snprintf(obj, sizeof obj, "experiment:%s", id);
            int urc = old ? expa_rec_put(u, id, old)
                          : store_del(u, STORE_EXPERIMENTS, id, strlen(id));
            if (!urc)
                urc = audit_append(u, actor, "experiment.undo", obj, NULL, old);
            if (urc)
                store_txn_end(u);
            else
                store_txn_commit(u, STORE_DURABLE);
        }
        reqerr_set(e, 500, "internal", NULL, "experiments: cannot write %s: %s", rel, err_str(rc));
        expa_reload_locked();
        return rc;
    }
    expa_reload_locked();
    return 0;
}

static int no_status(const json_t *body, struct reqerr *e)
{
    if (json_object_get(body, "status")) {
        reqerr_set(e, 400, "unknown_field", "status",
                   "\"status\" cannot be set: use /start, /stop and /winner");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* create, update, delete                                                 */

json_t *exp_admin_create(const json_t *body, const char *actor, struct reqerr *e)
{
    if (no_status(body, e))
        return NULL;
    struct experiments_def *d = NULL;
    if (experiments_parse(body, &d, e))
        return NULL;
    json_t *out = NULL;
    char rel[200], tmp[4600], sha[65];
    snprintf(rel, sizeof rel, "%s.lua", d->id);
    size_t len;
    char *text = expa_render(d->json, &len);
    pthread_mutex_lock(&expa_mu);
    struct store_txn *t = NULL;
    int rc;
    if (!text) {
        reqerr_set(e, 503, "busy", NULL, "out of memory");
        goto done;
    }
    if (check_refs(d, e))
        goto done;
    char abs[4400];
    snprintf(abs, sizeof abs, "%s/%s", expa.dir, rel);
    struct stat st;
    if (expa_file_of(d->id) || !lstat(abs, &st)) {
        reqerr_set(e, 409, "exists", "id", "experiment \"%s\" already exists (%s)", d->id, rel);
        goto done;
    }
    if ((rc = store_wtxn_begin(g_app->store, &t))) {
        store_err(e, rc, "experiments");
        goto done;
    }
    json_t *old = expa_rec_get(t, d->id, &rc);
    if (old) {
        reqerr_set(e, 409, "exists", "id", "experiment \"%s\" already exists (status %s)", d->id,
                   rec_status(old));
        json_decref(old);
        goto done;
    }
    if (rc != ERR_NOTFOUND) {
        store_err(e, rc, "experiments");
        goto done;
    }
    uint64_t xkey;
    if ((rc = store_seq_next(t, "experiments", &xkey))) {
        store_err(e, rc, "experiments");
        goto done;
    }
    expa_sha256_hex(text, len, sha);
    json_t *rec = json_object();
    json_object_set_new(rec, "id", json_string(d->id));
    json_object_set_new(rec, "xkey", json_integer((json_int_t)xkey));
    json_object_set_new(rec, "name", json_incref(json_object_get(d->json, "name")));
    json_object_set_new(rec, "status", json_string("draft"));
    json_object_set_new(rec, "definition", json_incref(d->json));
    json_object_set_new(rec, "file", json_string(rel));
    json_object_set_new(rec, "origin", json_string("api"));
    json_object_set_new(rec, "head_hash", json_string(sha));
    json_object_set_new(rec, "rev", json_integer(1));
    stamp(rec, "created", actor);
    stamp(rec, "updated", actor);
    char obj[160];
    snprintf(obj, sizeof obj, "experiment:%s", d->id);
    json_t *sum = expa_summary(rec);
    rc = expa_rec_put(t, d->id, rec);
    if (!rc)
        rc = audit_append(t, actor, "experiment.create", obj, NULL, sum);
    json_decref(sum);
    json_decref(rec);
    if (rc) {
        store_err(e, rc, "experiments");
        goto done;
    }
    if ((rc = expa_file_prepare(rel, text, len, tmp, sizeof tmp))) {
        reqerr_set(e, 500, "internal", NULL, "experiments: cannot write %s: %s", rel, err_str(rc));
        goto done;
    }
    rc = finish(t, d->id, NULL, tmp, rel, actor, e);
    t = NULL;
    if (!rc)
        out = view_of(d->id, e);
done:
    store_txn_end(t);
    pthread_mutex_unlock(&expa_mu);
    free(text);
    experiments_def_unref(d);
    return out;
}

/* Open the write txn and load the record of `id`: NULL with `e` (404). */
static json_t *begin_change(const char *id, struct store_txn **t, struct reqerr *e)
{
    int rc = store_wtxn_begin(g_app->store, t);
    if (rc) {
        *t = NULL;
        store_err(e, rc, "experiments");
        return NULL;
    }
    return rec_of(*t, id, e);
}

json_t *exp_admin_update(const char *id, const json_t *body, const char *actor, struct reqerr *e)
{
    if (!json_is_object(body)) {
        reqerr_set(e, 400, "invalid_body", NULL, "an experiment is a JSON object");
        return NULL;
    }
    if (no_status(body, e))
        return NULL;
    const json_t *bid = json_object_get(body, "id");
    if (bid && (!json_is_string(bid) || strcmp(json_string_value(bid), id))) {
        reqerr_set(e, 400, "invalid_field", "id", "the body's id must be \"%s\" (ids do not change)",
                   id);
        return NULL;
    }
    json_t *b = json_deep_copy(body);
    json_object_set_new(b, "id", json_string(id));
    struct experiments_def *d = NULL;
    int prc = experiments_parse(b, &d, e);
    json_decref(b);
    if (prc)
        return NULL;
    json_t *out = NULL, *rec = NULL, *before = NULL;
    size_t len;
    char *text = expa_render(d->json, &len);
    char tmp[4600], sha[65], rel[4200];
    pthread_mutex_lock(&expa_mu);
    struct store_txn *t = NULL;
    if (!text) {
        reqerr_set(e, 503, "busy", NULL, "out of memory");
        goto done;
    }
    if (!(rec = begin_change(id, &t, e)))
        goto done;
    const char *st = rec_status(rec);
    if (!(allowed(st) & (1u << A_EDIT))) {
        illegal(e, "edit", st);
        goto done;
    }
    if (check_refs(d, e))
        goto done;
    if (!strcmp(st, "running") && check_overlap(t, d, id, e))
        goto done;
    snprintf(rel, sizeof rel, "%s", json_string_value(json_object_get(rec, "file"))
                                         ? json_string_value(json_object_get(rec, "file"))
                                         : "");
    if (!*rel)
        snprintf(rel, sizeof rel, "%s.lua", id);
    before = json_deep_copy(rec);
    expa_sha256_hex(text, len, sha);
    json_object_set_new(rec, "definition", json_incref(d->json));
    json_object_set_new(rec, "name", json_incref(json_object_get(d->json, "name")));
    json_object_set_new(rec, "head_hash", json_string(sha));
    json_object_set_new(rec, "file", json_string(rel));
    json_object_del(rec, "file_missing");
    bump(rec, actor);
    char obj[160];
    snprintf(obj, sizeof obj, "experiment:%s", id);
    json_t *sb = expa_summary(before), *sa = expa_summary(rec);
    int rc = expa_rec_put(t, id, rec);
    if (!rc)
        rc = audit_append(t, actor, "experiment.update", obj, sb, sa);
    json_decref(sb);
    json_decref(sa);
    if (rc) {
        store_err(e, rc, "experiments");
        goto done;
    }
    if ((rc = expa_file_prepare(rel, text, len, tmp, sizeof tmp))) {
        reqerr_set(e, 500, "internal", NULL, "experiments: cannot write %s: %s", rel, err_str(rc));
        goto done;
    }
    rc = finish(t, id, before, tmp, rel, actor, e);
    t = NULL;
    if (!rc)
        out = view_of(id, e);
done:
    store_txn_end(t);
    pthread_mutex_unlock(&expa_mu);
    json_decref(rec);
    json_decref(before);
    free(text);
    experiments_def_unref(d);
    return out;
}

json_t *exp_admin_delete(const char *id, const char *actor, struct reqerr *e)
{
    json_t *out = NULL, *rec = NULL;
    pthread_mutex_lock(&expa_mu);
    struct store_txn *t = NULL;
    if (!(rec = begin_change(id, &t, e)))
        goto done;
    const char *st = rec_status(rec);
    if (!(allowed(st) & (1u << A_DELETE))) {
        illegal(e, "delete", st);
        goto done;
    }
    json_t *before = expa_summary(rec);
    json_object_set_new(rec, "status", json_string("archived"));
    bump(rec, actor);
    json_t *after = expa_summary(rec);
    char obj[160];
    snprintf(obj, sizeof obj, "experiment:%s", id);
    int rc = expa_rec_put(t, id, rec);
    if (!rc)
        rc = audit_append(t, actor, "experiment.archive", obj, before, after);
    json_decref(before);
    json_decref(after);
    if (rc) {
        store_err(e, rc, "experiments");
        goto done;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    t = NULL;
    if (rc) {
        store_err(e, rc, "experiments");
        goto done;
    }
    const char *rel = json_string_value(json_object_get(rec, "file"));
    if (rel) {
        char abs[4400];
        snprintf(abs, sizeof abs, "%s/%s", expa.dir, rel);
        if (unlink(abs) && errno != ENOENT)
            log_warn("experiment file not removed", "file=\"%s\" err=\"%s\"", abs, strerror(errno));
    }
    expa_reload_locked();
    out = view_of(id, e);
done:
    store_txn_end(t);
    pthread_mutex_unlock(&expa_mu);
    json_decref(rec);
    return out;
}

/* ---------------------------------------------------------------------- */
/* start, stop, winner                                                    */

/* Results summary for the winner's audit entry: exposures per variant, SRM
 * and the recommendation (anonymous aggregates). */
static json_t *results_summary(const json_t *rec, const struct experiments_def *d);
static json_t *load_rec(const char *id, struct experiments_def **d, struct reqerr *e);

json_t *exp_admin_action(const char *id, const char *action, const json_t *body,
                         const char *actor, struct reqerr *e)
{
    int a = !strcmp(action, "start") ? A_START : !strcmp(action, "stop") ? A_STOP
                                               : !strcmp(action, "winner") ? A_WINNER : -1;
    if (a < 0) {
        reqerr_set(e, 404, "not_found", NULL, "no action \"%s\"", action);
        return NULL;
    }
    const char *winner = NULL;
    int keep = 0;
    if (body) {
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)body, k, v) {
            if (a != A_WINNER || (strcmp(k, "variant") && strcmp(k, "keep_holdout"))) {
                reqerr_set(e, 400, "unknown_field", k, "unknown field \"%.64s\"%s", k,
                           a == A_WINNER ? " (variant, keep_holdout)" : "");
                return NULL;
            }
        }
        const json_t *kh = json_object_get(body, "keep_holdout");
        if (kh && !json_is_boolean(kh)) {
            reqerr_set(e, 400, "invalid_field", "keep_holdout", "keep_holdout must be true or false");
            return NULL;
        }
        keep = json_is_true(kh);
        winner = json_string_value(json_object_get(body, "variant"));
    }
    if (a == A_WINNER && !winner) {
        reqerr_set(e, 400, "missing_field", "variant",
                   "send {\"variant\": \"<id>\"}: the variant that takes all the traffic");
        return NULL;
    }
    json_t *out = NULL, *rec = NULL, *extra = NULL;
    struct experiments_def *d = NULL;
    pthread_mutex_lock(&expa_mu);
    struct store_txn *t = NULL;
    /* checks on a read snapshot; nothing else changes records while
     * expa_mu is held, so the write below sees the same record */
    if (!(rec = load_rec(id, &d, e)))
        goto done;
    /* a copy: the record is released before the write re-reads it */
    char st[16];
    snprintf(st, sizeof st, "%s", rec_status(rec));
    if (!(allowed(st) & (1u << a))) {
        illegal(e, action, st);
        goto done;
    }
    if (a == A_START) {
        if (check_refs(d, e))
            goto done;
        struct store_txn *rt;
        int rrc = store_rtxn_begin(g_app->store, &rt);
        if (rrc) {
            store_err(e, rrc, "experiments");
            goto done;
        }
        rrc = check_overlap(rt, d, id, e);
        store_txn_end(rt);
        if (rrc)
            goto done;
    }
    if (a == A_WINNER && experiments_variant_index(d, winner) < 0) {
        reqerr_set(e, 400, "invalid_field", "variant", "\"%.64s\" is not a variant of \"%s\"",
                   winner, id);
        goto done;
    }
    if (a == A_WINNER)
        extra = results_summary(rec, d); /* the evidence, kept in the audit entry */
    json_decref(rec);
    if (!(rec = begin_change(id, &t, e)))
        goto done;
    json_t *before = expa_summary(rec);
    if (a == A_START) {
        json_object_set_new(rec, "status", json_string("running"));
        if (!json_object_get(rec, "started_ts"))
            stamp(rec, "started", actor);
    } else if (a == A_STOP) {
        json_object_set_new(rec, "status", json_string("stopped"));
        stamp(rec, "stopped", actor);
    } else {
        if (!strcmp(st, "running"))
            stamp(rec, "stopped", NULL);
        json_object_set_new(rec, "status", json_string("concluded"));
        json_object_set_new(rec, "winner", json_string(winner));
        json_object_set_new(rec, "keep_holdout", json_boolean(keep && d->holdout > 0));
        stamp(rec, "concluded", actor);
    }
    bump(rec, actor);
    json_t *after = expa_summary(rec);
    if (extra)
        json_object_set(after, "results", extra);
    char obj[160], act[40];
    snprintf(obj, sizeof obj, "experiment:%s", id);
    snprintf(act, sizeof act, "experiment.%s", action);
    int rc = expa_rec_put(t, id, rec);
    if (!rc)
        rc = audit_append(t, actor, act, obj, before, after);
    json_decref(before);
    json_decref(after);
    if (rc) {
        store_err(e, rc, "experiments");
        goto done;
    }
    rc = finish(t, id, NULL, NULL, NULL, actor, e);
    t = NULL;
    if (!rc)
        out = view_of(id, e);
done:
    store_txn_end(t);
    pthread_mutex_unlock(&expa_mu);
    json_decref(rec);
    json_decref(extra);
    experiments_def_unref(d);
    return out;
}

/* ---------------------------------------------------------------------- */
/* results and recommendations                                            */

static int64_t end_ms_of(const json_t *rec, int64_t now)
{
    const char *st = rec_status(rec);
    int64_t end = 0;
    if (!strcmp(st, "stopped"))
        end = expa_rec_ts(rec, "stopped_ts");
    else if (!strcmp(st, "concluded"))
        end = expa_rec_ts(rec, "concluded_ts");
    else if (!strcmp(st, "archived")) {
        end = expa_rec_ts(rec, "concluded_ts");
        if (!end)
            end = expa_rec_ts(rec, "stopped_ts");
    }
    /* the second of the end counts: a conversion in it is not "after" */
    return end ? (end + 1) * 1000 : (now + 1) * 1000;
}

static json_t *results_of(const json_t *rec, const struct experiments_def *d, struct reqerr *e)
{
    int64_t now = clock_now();
    struct exp_results_req q = {
        .def = d,
        .xkey = (uint32_t)json_integer_value(json_object_get(rec, "xkey")),
        .status = rec_status(rec),
        .winner = json_string_value(json_object_get(rec, "winner")),
        .started = expa_rec_ts(rec, "started_ts"),
        .end_ms = end_ms_of(rec, now),
        .now = now,
        .retention_days = g_app->cfg.event_retention_days,
    };
    return exp_results_compute(g_app->store, &q, e);
}

static json_t *results_summary(const json_t *rec, const struct experiments_def *d)
{
    struct reqerr e = { 0 };
    json_t *r = results_of(rec, d, &e);
    reqerr_clear(&e);
    if (!r)
        return NULL;
    json_t *s = json_object();
    json_object_set(s, "variants", json_object_get(r, "variants"));
    json_object_set(s, "srm", json_object_get(r, "srm"));
    json_object_set(s, "recommendation", json_object_get(r, "recommendation"));
    json_decref(r);
    return s;
}

/* Load the record and definition of `id` (read only). */
static json_t *load_rec(const char *id, struct experiments_def **d, struct reqerr *e)
{
    json_t *rec = rec_of(NULL, id, e);
    if (!rec)
        return NULL;
    if (!(*d = expa_def_of(rec))) {
        reqerr_set(e, 409, "invalid_definition", NULL,
                   "experiment \"%s\" has no definition that loads", id);
        json_decref(rec);
        return NULL;
    }
    return rec;
}

json_t *exp_admin_results(const char *id, struct reqerr *e)
{
    struct experiments_def *d = NULL;
    pthread_mutex_lock(&expa_mu);
    json_t *rec = load_rec(id, &d, e);
    pthread_mutex_unlock(&expa_mu);
    if (!rec)
        return NULL;
    json_t *r = results_of(rec, d, e);
    json_decref(rec);
    experiments_def_unref(d);
    return r;
}

struct reco_ctx {
    json_t *ids;
};

static int reco_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    struct reco_ctx *x = ud;
    json_t *rec = codec_msgpack_to_json(val, vlen, NULL);
    if (json_is_object(rec) && !strcmp(rec_status(rec), "running"))
        json_array_append_new(x->ids, json_incref(json_object_get(rec, "id")));
    json_decref(rec);
    return 0;
}

json_t *exp_admin_recommendations(struct reqerr *e)
{
    struct reco_ctx x = { json_array() };
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (!rc) {
        rc = store_scan(t, STORE_EXPERIMENTS, NULL, 0, NULL, 0, reco_cb, &x);
        store_txn_end(t);
    }
    if (rc) {
        json_decref(x.ids);
        store_err(e, rc, "experiments");
        return NULL;
    }
    json_t *items = json_array(), *sig = json_array(), *under = json_array(),
           *srm = json_array(), *guard = json_array();
    size_t i;
    json_t *idv;
    json_array_foreach (x.ids, i, idv) {
        const char *id = json_string_value(idv);
        struct reqerr ie = { 0 };
        json_t *r = exp_admin_results(id, &ie);
        if (!r) {
            json_array_append_new(items, json_pack("{s:s,s:s}", "experiment_id", id, "error",
                                                   ie.message));
            reqerr_clear(&ie);
            continue;
        }
        json_t *reco = json_object_get(r, "recommendation");
        json_t *it = json_object();
        json_object_set_new(it, "experiment_id", json_string(id));
        json_object_set(it, "recommendation", reco);
        json_object_set(it, "srm", json_object_get(r, "srm"));
        json_object_set(it, "power", json_object_get(r, "power"));
        json_object_set(it, "guardrail_regressions", json_object_get(r, "guardrail_regressions"));
        json_t *sigv = json_array();
        json_t *m;
        size_t k;
        json_array_foreach (json_object_get(r, "metrics"), k, m) {
            if (strcmp(json_string_value(json_object_get(m, "role")), "primary"))
                continue;
            size_t c;
            json_t *cmp;
            json_array_foreach (json_object_get(m, "comparisons"), c, cmp)
                if (json_is_true(json_object_get(cmp, "significant")))
                    json_array_append_new(
                        sigv, json_pack("{s:O,s:O,s:O}", "variant", json_object_get(cmp, "variant"),
                                        "lift", json_object_get(cmp, "lift"), "sequential",
                                        json_object_get(cmp, "sequential")));
        }
        json_object_set_new(it, "significant", sigv);
        if (json_array_size(sigv))
            json_array_append_new(sig, json_string(id));
        json_t *pw = json_object_get(r, "power");
        if (json_is_true(json_object_get(pw, "underpowered")) && !json_array_size(sigv))
            json_array_append_new(under, json_pack("{s:s,s:O}", "experiment_id", id,
                                                   "days_needed",
                                                   json_object_get(pw, "days_needed")));
        if (json_is_true(json_object_get(json_object_get(r, "srm"), "mismatch")))
            json_array_append_new(srm, json_string(id));
        if (json_array_size(json_object_get(r, "guardrail_regressions")))
            json_array_append_new(guard, json_string(id));
        json_array_append_new(items, it);
        json_decref(r);
    }
    json_decref(x.ids);
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "experiments", items, "significant", sig,
                     "underpowered", under, "srm", srm, "guardrail_regressions", guard);
}
