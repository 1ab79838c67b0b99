/* models_store.c — trained versions in LMDB.
 *
 *   STORE_MODELS "v" id \0 version(be32) → the version's metadata (JSON record)
 *                "b" id \0 version(be32) → its model bytes (predict_save)
 *                "l" id                  → {"live": n, "history": [older live versions,
 *                                           most recent last], "updated_at"}
 *                "s" id                  → the last training attempt (models_store_state_get)
 *   STORE_META   "seq:models_rev"        → revision, bumped by promotions and rollbacks
 *
 * Model bytes are kept for the newest MODELS_KEEP_BYTES versions and for
 * every version that is live or in the live history; the metadata of every
 * version is kept. */
#include "engine/models.h"
#include "base/clock.h"
#include "base/err.h"
#include "codec/codec.h"
#include "store/record.h"
#include "store/store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODELS_KEEP_BYTES 20
#define HISTORY_MAX 50

static size_t model_key(unsigned char *k, char tag, const char *id, int version)
{
    size_t l = strlen(id);
    k[0] = (unsigned char)tag;
    memcpy(k + 1, id, l);
    k[1 + l] = 0;
    store_be32((uint32_t)version, k + 2 + l);
    return l + 6;
}

static size_t lkey(unsigned char *k, const char *id)
{
    size_t l = strlen(id);
    k[0] = 'l';
    memcpy(k + 1, id, l);
    return l + 1;
}

uint64_t models_store_rev(struct store_txn *t)
{
    const void *v;
    size_t vl;
    if (store_get(t, STORE_META, "seq:models_rev", 14, &v, &vl) == 0 && vl == 8)
        return store_get_be64(v);
    return 0;
}

int models_store_bump(struct store_txn *t)
{
    uint64_t r;
    return store_seq_next(t, "models_rev", &r);
}

struct last_ud {
    int last;
    size_t plen;
};

static int last_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    struct last_ud *u = ud;
    if (kl == u->plen + 4)
        u->last = (int)store_get_be32((const unsigned char *)k + u->plen);
    return 0;
}

static int last_version(struct store_txn *t, const char *id)
{
    unsigned char p[140];
    size_t pl = model_key(p, 'v', id, 0) - 4;
    struct last_ud u = { 0, pl };
    store_scan(t, STORE_MODELS, p, pl, NULL, 0, last_cb, &u);
    return u.last;
}

static json_t *live_rec(struct store_txn *t, const char *id)
{
    unsigned char k[140];
    size_t kl = lkey(k, id);
    int rc;
    json_t *r = record_get(t, STORE_MODELS, k, kl, &rc);
    if (!r) {
        r = json_object();
        json_object_set_new(r, "live", json_integer(0));
        json_object_set_new(r, "history", json_array());
    }
    if (!json_is_array(json_object_get(r, "history")))
        json_object_set_new(r, "history", json_array());
    return r;
}

int models_store_live(struct store_txn *t, const char *id)
{
    if (strlen(id) > 128)
        return 0;
    json_t *r = live_rec(t, id);
    int v = (int)json_integer_value(json_object_get(r, "live"));
    json_decref(r);
    return v;
}

static int in_history(json_t *live, int version)
{
    if (json_integer_value(json_object_get(live, "live")) == version)
        return 1;
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(live, "history"), i, h)
        if (json_integer_value(h) == version)
            return 1;
    return 0;
}

int models_store_put(struct store_txn *t, const char *id, json_t *meta, const void *model,
                     size_t mlen, int *version)
{
    if (strlen(id) > 128)
        return ERR_INVAL;
    int v = last_version(t, id) + 1;
    unsigned char k[140];
    json_object_set_new(meta, "version", json_integer(v));
    json_object_set_new(meta, "created_at", json_integer(clock_now()));
    int rc = record_put(t, STORE_MODELS, k, model_key(k, 'v', id, v), meta);
    if (!rc)
        rc = store_put(t, STORE_MODELS, k, model_key(k, 'b', id, v), model, mlen);
    /* keep the bytes of recent, live and once-live versions only */
    if (!rc && v > MODELS_KEEP_BYTES) {
        json_t *live = live_rec(t, id);
        int old = v - MODELS_KEEP_BYTES;
        if (!in_history(live, old)) {
            int drc = store_del(t, STORE_MODELS, k, model_key(k, 'b', id, old));
            if (drc == 0) {
                json_t *m = record_get(t, STORE_MODELS, k, model_key(k, 'v', id, old), &drc);
                if (m) {
                    json_object_set_new(m, "model_pruned", json_true());
                    drc = record_put(t, STORE_MODELS, k, model_key(k, 'v', id, old), m);
                    json_decref(m);
                }
                if (drc && drc != ERR_NOTFOUND)
                    rc = drc;
            } else if (drc != ERR_NOTFOUND) {
                rc = drc;
            }
        }
        json_decref(live);
    }
    if (!rc)
        *version = v;
    return rc;
}

int models_store_get(struct store_txn *t, const char *id, int version, json_t **meta,
                     struct predict_model **model)
{
    if (meta)
        *meta = NULL;
    if (model)
        *model = NULL;
    if (strlen(id) > 128 || version < 1)
        return ERR_NOTFOUND;
    unsigned char k[140];
    int rc;
    json_t *m = record_get(t, STORE_MODELS, k, model_key(k, 'v', id, version), &rc);
    if (!m)
        return rc;
    if (model) {
        const void *b;
        size_t bl;
        rc = store_get(t, STORE_MODELS, k, model_key(k, 'b', id, version), &b, &bl);
        if (rc) {
            json_decref(m);
            return rc;
        }
        char err[160];
        rc = predict_load(b, bl, model, err, sizeof err);
        if (rc) {
            json_decref(m);
            return rc;
        }
    }
    if (meta)
        *meta = m;
    else
        json_decref(m);
    return 0;
}

struct list_ud {
    json_t *arr;
    size_t plen;
};

static int list_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    struct list_ud *u = ud;
    (void)k;
    if (kl != u->plen + 4)
        return 0;
    json_t *m = codec_msgpack_to_json(v, vl, NULL);
    if (json_is_object(m))
        json_array_insert_new(u->arr, 0, m); /* newest first */
    else
        json_decref(m);
    return 0;
}

json_t *models_store_list(struct store_txn *t, const char *id, int limit)
{
    json_t *arr = json_array();
    if (strlen(id) > 128)
        return arr;
    unsigned char p[140];
    size_t pl = model_key(p, 'v', id, 0) - 4;
    struct list_ud u = { arr, pl };
    store_scan(t, STORE_MODELS, p, pl, NULL, 0, list_cb, &u);
    while (limit > 0 && json_array_size(arr) > (size_t)limit)
        json_array_remove(arr, json_array_size(arr) - 1);
    return arr;
}

int models_store_annotate(struct store_txn *t, const char *id, int version, const char *key,
                          json_t *value)
{
    unsigned char k[140];
    int rc;
    if (strlen(id) > 128) {
        json_decref(value);
        return ERR_NOTFOUND;
    }
    size_t kl = model_key(k, 'v', id, version);
    json_t *m = record_get(t, STORE_MODELS, k, kl, &rc);
    if (!m) {
        json_decref(value);
        return rc;
    }
    json_object_set_new(m, key, value);
    rc = record_put(t, STORE_MODELS, k, kl, m);
    json_decref(m);
    return rc;
}

/* Make `version` live; push the old live version on the history unless
 * `pop` (a rollback takes it off instead). */
static int set_live(struct store_txn *t, const char *id, int version, const char *actor,
                    const char *why, int rollback)
{
    unsigned char k[140];
    const void *b;
    size_t bl;
    int rc = store_get(t, STORE_MODELS, k, model_key(k, 'b', id, version), &b, &bl);
    if (rc)
        return rc; /* no such version, or its model was pruned */
    json_t *live = live_rec(t, id);
    int old = (int)json_integer_value(json_object_get(live, "live"));
    json_t *hist = json_object_get(live, "history");
    if (old == version) {
        json_decref(live);
        return 0;
    }
    if (rollback) {
        /* everything newer in the history than the target goes: a rollback
         * to the version before the current one pops one entry */
        for (size_t i = json_array_size(hist); i-- > 0;) {
            int h = (int)json_integer_value(json_array_get(hist, i));
            json_array_remove(hist, i);
            if (h == version)
                break;
        }
    } else if (old > 0) {
        json_array_append_new(hist, json_integer(old));
        while (json_array_size(hist) > HISTORY_MAX)
            json_array_remove(hist, 0);
    }
    json_object_set_new(live, "live", json_integer(version));
    json_object_set_new(live, "updated_at", json_integer(clock_now()));
    int64_t now = clock_now();
    rc = record_put(t, STORE_MODELS, k, lkey(k, id), live);
    json_decref(live);
    if (!rc) {
        json_t *ev = json_object();
        json_object_set_new(ev, "at", json_integer(now));
        json_object_set_new(ev, "by", json_string(actor ? actor : "system"));
        json_object_set_new(ev, "why", json_string(why ? why : ""));
        rc = models_store_annotate(t, id, version, "promoted", ev);
    }
    if (!rc)
        rc = models_store_annotate(t, id, version, "status", json_string("live"));
    if (!rc && old > 0)
        rc = models_store_annotate(t, id, old, "status",
                                   json_string(rollback ? "rolled_back" : "retired"));
    if (rc == ERR_NOTFOUND)
        rc = 0; /* an old version's metadata is gone: nothing to mark */
    if (!rc)
        rc = models_store_bump(t);
    return rc;
}

int models_store_promote(struct store_txn *t, const char *id, int version, const char *actor,
                         const char *why)
{
    if (strlen(id) > 128 || version < 1)
        return ERR_NOTFOUND;
    return set_live(t, id, version, actor, why, 0);
}

int models_store_rollback(struct store_txn *t, const char *id, int version, const char *actor,
                          int *live)
{
    if (strlen(id) > 128)
        return ERR_NOTFOUND;
    json_t *lr = live_rec(t, id);
    json_t *hist = json_object_get(lr, "history");
    int target = version;
    int from_history = 0;
    if (!target) {
        size_t n = json_array_size(hist);
        target = n ? (int)json_integer_value(json_array_get(hist, n - 1)) : 0;
        from_history = 1;
    } else {
        size_t i;
        json_t *h;
        json_array_foreach(hist, i, h)
            if (json_integer_value(h) == target)
                from_history = 1;
    }
    json_decref(lr);
    if (target < 1)
        return ERR_NOTFOUND;
    char why[64];
    snprintf(why, sizeof why, "rollback");
    /* a version that was never live is promoted (it joins the history of
     * the current one); one from the history is returned to */
    int rc = set_live(t, id, target, actor, why, from_history);
    if (!rc)
        *live = target;
    return rc;
}

static int ids_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    json_t *arr = ud;
    const char *p = (const char *)k + 1;
    size_t l = strnlen(p, kl - 1);
    if (l == kl - 1 || l == 0)
        return 0;
    json_t *last = json_array_get(arr, json_array_size(arr) - 1);
    if (last && strlen(json_string_value(last)) == l && !memcmp(json_string_value(last), p, l))
        return 0;
    json_array_append_new(arr, json_stringn(p, l));
    return 0;
}

json_t *models_store_ids(struct store_txn *t)
{
    json_t *arr = json_array();
    store_scan(t, STORE_MODELS, "v", 1, NULL, 0, ids_cb, arr);
    return arr;
}

int models_store_state_put(struct store_txn *t, const char *id, const json_t *state)
{
    if (strlen(id) > 128)
        return ERR_INVAL;
    unsigned char k[140];
    size_t l = strlen(id);
    k[0] = 's';
    memcpy(k + 1, id, l);
    return record_put(t, STORE_MODELS, k, l + 1, state);
}

json_t *models_store_state_get(struct store_txn *t, const char *id)
{
    if (strlen(id) > 128)
        return NULL;
    unsigned char k[140];
    size_t l = strlen(id);
    k[0] = 's';
    memcpy(k + 1, id, l);
    int rc;
    return record_get(t, STORE_MODELS, k, l + 1, &rc);
}
