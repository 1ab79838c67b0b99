/* models_api.c — what the models API asks of the registry and the store:
 * a model with its versions, one version, promotion and rollback (each in
 * one write transaction with its audit entry, then published at once). */
#include "engine/models.h"
#include "base/app.h"
#include "base/err.h"
#include "base/reqerr.h"
#include "store/audit.h"
#include "store/store.h"
#include <stdio.h>
#include <string.h>

json_t *models_describe(struct store *s, const char *id, int limit, struct reqerr *e)
{
    struct models_gen *g = models_gen_acquire();
    int idx = models_gen_find(g, id);
    json_t *o = idx >= 0 ? models_entry_json(&g->m[idx]) : NULL;
    models_gen_release(g);
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc) {
        json_decref(o);
        reqerr_from_code(e, rc, "reading the models");
        return NULL;
    }
    json_t *versions = models_store_list(t, id, limit);
    int live = models_store_live(t, id);
    store_txn_end(t);
    if (!o && !json_array_size(versions)) {
        json_decref(versions);
        reqerr_set(e, 404, "model_not_found", NULL, "no model '%s'", id);
        return NULL;
    }
    if (!o) { /* its file is gone; its versions are still here */
        o = json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "status", json_string("no_file"));
        json_object_set_new(o, "live_version", live ? json_integer(live) : json_null());
    }
    size_t i;
    json_t *v;
    json_array_foreach(versions, i, v)
        json_object_del(v, "source"); /* GET .../versions/{n} has it */
    json_object_set_new(o, "versions", versions);
    return o;
}

json_t *models_version(struct store *s, const char *id, int version, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc) {
        reqerr_from_code(e, rc, "reading the model");
        return NULL;
    }
    json_t *meta = NULL;
    rc = models_store_get(t, id, version, &meta, NULL);
    store_txn_end(t);
    if (rc) {
        if (rc == ERR_NOTFOUND)
            reqerr_set(e, 404, "version_not_found", NULL, "model '%s' has no version %d", id, version);
        else
            reqerr_from_code(e, rc, "reading the version");
        return NULL;
    }
    return meta;
}

/* promote (rollback = 0) or roll back (1) in one write txn with the audit
 * entry; *out = {"model", "live_version", "previous"}. */
static int change_live(struct app *app, const char *id, int version, const char *actor,
                       int rollback, json_t **out, struct reqerr *e)
{
    *out = NULL;
    struct store_txn *t;
    int rc = store_wtxn_begin(app->store, &t);
    if (rc)
        return reqerr_from_code(e, rc, "opening a write transaction");
    int before = models_store_live(t, id);
    int live = version;
    if (rollback) {
        rc = models_store_rollback(t, id, version, actor, &live);
    } else {
        rc = models_store_promote(t, id, version, actor, "promoted by hand");
    }
    if (rc == ERR_NOTFOUND) {
        store_txn_end(t);
        if (rollback && !version)
            return reqerr_set(e, 409, "nothing_to_roll_back", NULL,
                              "model '%s' has no earlier live version to return to", id);
        return reqerr_set(e, 404, "version_not_found", "version",
                          "model '%s' has no version %d with a stored model", id, version);
    }
    char obj[160];
    snprintf(obj, sizeof obj, "model:%s", id);
    json_t *b = json_pack("{s:i}", "live_version", before);
    json_t *a = json_pack("{s:i}", "live_version", live);
    if (!rc)
        rc = audit_append(t, actor, rollback ? "model.rollback" : "model.promote", obj, b, a);
    json_decref(b);
    json_decref(a);
    if (!rc)
        rc = store_txn_commit(t, STORE_DURABLE);
    else
        store_txn_end(t);
    if (rc)
        return reqerr_from_code(e, rc, "changing the live version");
    models_reload(app, 0);
    *out = json_pack("{s:s,s:i,s:i}", "model", id, "live_version", live, "previous", before);
    return 0;
}

int models_promote(struct app *app, const char *id, int version, const char *actor, json_t **out,
                   struct reqerr *e)
{
    return change_live(app, id, version, actor, 0, out, e);
}

int models_rollback(struct app *app, const char *id, int version, const char *actor, json_t **out,
                    struct reqerr *e)
{
    return change_live(app, id, version, actor, 1, out, e);
}
