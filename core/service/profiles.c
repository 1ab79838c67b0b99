/* profiles.c — profile records (the NDJSON import is in profiles_import.c). */
#include "service/profiles.h"
#include "engine/dlog.h"
#include "store/audit.h"
#include "delivery/outbox.h"
#include "codec/codec.h"
#include "base/err.h"
#include "insight/events_log.h"
#include "engine/segments.h"
#include "engine/experiments.h"
#include "engine/coupons.h"
#include "engine/loyalty.h"
#include <stdlib.h>
#include <string.h>

int profiles_validate(const char *id, const json_t *attrs, int patch, char *msg, size_t msglen,
                      const char **field)
{
    *field = NULL;
    if (!json_is_object(attrs)) {
        snprintf(msg, msglen, "profile must be a JSON object");
        return ERR_INVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)attrs, k, v) {
        if (!strcmp(k, "id")) {
            if (!json_is_string(v) || strcmp(json_string_value(v), id) != 0) {
                snprintf(msg, msglen, "id in the body must match the id in the path");
                *field = "id";
                return ERR_INVAL;
            }
        } else if (!strcmp(k, "stats")) {
            snprintf(msg, msglen, "stats is derived from events and cannot be written");
            *field = "stats";
            return ERR_INVAL;
        } else if (!*k || strlen(k) > 128) {
            snprintf(msg, msglen, "attribute names must be 1-128 bytes");
            *field = k;
            return ERR_INVAL;
        }
        (void)patch;
    }
    if (codec_depth(attrs) > 16) {
        snprintf(msg, msglen, "profile nested deeper than 16 levels");
        return ERR_INVAL;
    }
    return 0;
}

/* Encode attrs without "id". */
static int encode_attrs(const json_t *attrs, struct buf *b)
{
    json_t *copy = json_object();
    if (!copy)
        return ERR_NOMEM;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)attrs, k, v) {
        if (strcmp(k, "id") != 0)
            json_object_set(copy, k, v);
    }
    int rc = codec_json_to_msgpack(copy, b);
    json_decref(copy);
    if (!rc && b->len > PROFILES_MAX_ATTRS_BYTES)
        rc = ERR_TOOBIG;
    return rc;
}

/* Segment membership follows the write in the same transaction: called
 * with the old profile (or NULL) while it is still readable, before the
 * new one is stored. */
static int follow_segments(struct store_txn *t, const char *id, const void *old, size_t ol,
                           const struct buf *b)
{
    size_t n = strlen(id);
    const void *sv;
    size_t sl;
    int rc = store_get(t, STORE_PSTATS, id, n, &sv, &sl);
    if (rc && rc != ERR_NOTFOUND)
        return rc;
    if (rc)
        sv = NULL;
    return segments_customer_txn(t, id, n, old, ol, b->p, b->len, sv, sl, sv, sl);
}

int profiles_put_txn(struct store_txn *t, const char *id, const json_t *attrs, int *created)
{
    const void *old;
    size_t ol;
    int rc = store_get(t, STORE_PROFILES, id, strlen(id), &old, &ol);
    if (rc && rc != ERR_NOTFOUND)
        return rc;
    if (created)
        *created = rc == ERR_NOTFOUND;
    if (rc)
        old = NULL;
    struct buf b = BUF_INIT;
    rc = encode_attrs(attrs, &b);
    if (!rc)
        rc = follow_segments(t, id, old, ol, &b);
    if (!rc)
        rc = store_put(t, STORE_PROFILES, id, strlen(id), b.p, b.len);
    buf_free(&b);
    return rc;
}

json_t *profiles_get_txn(struct store_txn *t, const char *id, int *rc)
{
    const void *v;
    size_t vl;
    *rc = store_get(t, STORE_PROFILES, id, strlen(id), &v, &vl);
    if (*rc)
        return NULL;
    json_t *attrs = codec_msgpack_to_json(v, vl, rc);
    if (!attrs)
        return NULL;
    json_t *out = json_object();
    json_object_set_new(out, "id", json_string(id));
    json_object_update(out, attrs);
    json_decref(attrs);
    const void *sv;
    size_t sl;
    if (store_get(t, STORE_PSTATS, id, strlen(id), &sv, &sl) == 0) {
        int e;
        json_t *st = codec_msgpack_to_json(sv, sl, &e);
        if (st)
            json_object_set_new(out, "stats", st);
    }
    *rc = 0;
    return out;
}

static void merge_patch(json_t *target, const json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v) {
        if (json_is_null(v)) {
            json_object_del(target, k);
        } else if (json_is_object(v)) {
            json_t *cur = json_object_get(target, k);
            if (!json_is_object(cur)) {
                cur = json_object();
                json_object_set_new(target, k, cur);
            }
            merge_patch(cur, v);
        } else {
            json_object_set(target, k, v);
        }
    }
}

int profiles_patch_txn(struct store_txn *t, const char *id, const json_t *patch, json_t **merged)
{
    const void *v;
    size_t vl;
    json_t *cur;
    int rc = store_get(t, STORE_PROFILES, id, strlen(id), &v, &vl);
    if (rc == ERR_NOTFOUND) {
        v = NULL;
        cur = json_object();
    } else if (rc) {
        return rc;
    } else {
        cur = codec_msgpack_to_json(v, vl, &rc);
        if (!cur)
            return rc;
    }
    json_t *p = json_deep_copy(patch);
    json_object_del(p, "id");
    merge_patch(cur, p);
    json_decref(p);
    struct buf b = BUF_INIT;
    rc = codec_depth(cur) > 16 ? ERR_INVAL : encode_attrs(cur, &b);
    if (!rc)
        rc = follow_segments(t, id, v, vl, &b);
    if (!rc)
        rc = store_put(t, STORE_PROFILES, id, strlen(id), b.p, b.len);
    buf_free(&b);
    if (!rc && merged)
        *merged = cur;
    else
        json_decref(cur);
    return rc;
}

long profiles_erase_txn(struct store_txn *t, const char *id)
{
    size_t n = strlen(id);
    long total = 0;
    long sg = segments_erase_customer_txn(t, id); /* memberships: found through the index */
    if (sg < 0)
        return sg;
    total += sg;
    int rc = store_del(t, STORE_PROFILES, id, n);
    if (rc == 0)
        total++;
    else if (rc != ERR_NOTFOUND)
        return rc;
    rc = store_del(t, STORE_PSTATS, id, n);
    if (rc == 0)
        total++;
    else if (rc != ERR_NOTFOUND)
        return rc;
    /* raw events first: they are found through the index deleted below */
    long ev = events_log_erase_customer(t, id);
    if (ev < 0)
        return ev;
    total += ev;
    long ob = outbox_erase_customer_txn(t, id); /* dead letters keep rendered messages */
    if (ob < 0)
        return ob;
    total += ob;
    long xp = experiments_expo_erase_customer(t, id); /* first exposures (assignments) */
    if (xp < 0)
        return xp;
    total += xp;
    long cp = coupons_erase_customer(t, id); /* assignments, uses; redemptions anonymised */
    if (cp < 0)
        return cp;
    total += cp;
    long ly = loyalty_erase(t, id); /* the points ledger */
    if (ly < 0)
        return ly;
    total += ly;
    long dl = dlog_erase_customer_txn(t, id); /* logged decides (engine/dlog.h) */
    if (dl < 0)
        return dl;
    total += dl;
    /* every per-customer family keys as "<id>\0..." */
    char *prefix = malloc(n + 1);
    if (!prefix)
        return ERR_NOMEM;
    memcpy(prefix, id, n);
    prefix[n] = 0;
    static const enum store_db fams[] = { STORE_COUNTERS, STORE_CUSTIDX };
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        long d = store_del_prefix(t, fams[i], prefix, n + 1);
        if (d < 0) {
            free(prefix);
            return d;
        }
        total += d;
    }
    free(prefix);
    return total;
}

int profiles_put(struct store *s, const char *id, const json_t *attrs, int *created)
{
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = profiles_put_txn(t, id, attrs, created);
    if (rc) {
        store_txn_end(t);
        return rc;
    }
    return store_txn_commit(t, STORE_DURABLE);
}

/* The top-level names whose values differ between old and new (either
 * may be NULL = no profile), "id" left out, sorted as the objects iterate. */
static json_t *changed_fields(const json_t *old, const json_t *new)
{
    json_t *f = json_array();
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)new, k, v)
        if (strcmp(k, "id") && !json_equal(v, json_object_get(old, k)))
            json_array_append_new(f, json_string(k));
    json_object_foreach ((json_t *)old, k, v)
        if (strcmp(k, "id") && !json_object_get(new, k))
            json_array_append_new(f, json_string(k));
    return f;
}

static int is_consent_field(const json_t *f)
{
    size_t i;
    json_t *v;
    json_array_foreach (f, i, v)
        if (!strcmp(json_string_value(v), "consent") || !strcmp(json_string_value(v), "opt_out"))
            return 1;
    return 0;
}

int profiles_write(struct store *s, const char *actor, const char *id, const json_t *attrs, int patch,
                   int *created)
{
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    json_t *old = NULL, *merged = NULL;
    rc = store_get(t, STORE_PROFILES, id, strlen(id), &v, &vl);
    if (rc == 0)
        old = codec_msgpack_to_json(v, vl, &rc);
    else if (rc == ERR_NOTFOUND)
        rc = 0;
    int isnew = rc == 0 && !old;
    if (!rc)
        rc = patch ? profiles_patch_txn(t, id, attrs, &merged) : profiles_put_txn(t, id, attrs, NULL);
    if (!rc) {
        json_t *f = changed_fields(old, patch ? merged : attrs);
        json_t *after = json_pack("{s:s,s:b,s:o}", "op", patch ? "patch" : "put", "created", isnew,
                                  "fields", f);
        const char *act = is_consent_field(f) ? "consent.change" : patch ? "profile.patch" : "profile.put";
        rc = after ? audit_append_customer(t, actor, act, id, NULL, after) : ERR_NOMEM;
        json_decref(after);
    }
    json_decref(old);
    json_decref(merged);
    if (rc) {
        store_txn_end(t);
        return rc;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    if (!rc && created)
        *created = isnew;
    return rc;
}

json_t *profiles_get(struct store *s, const char *id, int *rc)
{
    struct store_txn *t;
    *rc = store_rtxn_begin(s, &t);
    if (*rc)
        return NULL;
    json_t *o = profiles_get_txn(t, id, rc);
    store_txn_end(t);
    return o;
}

int profiles_patch(struct store *s, const char *id, const json_t *patch, json_t **merged)
{
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = profiles_patch_txn(t, id, patch, merged);
    if (rc) {
        store_txn_end(t);
        return rc;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    if (rc && merged && *merged) {
        json_decref(*merged);
        *merged = NULL;
    }
    return rc;
}

long profiles_erase(struct store *s, const char *id)
{
    experiments_expo_flush(); /* an exposure still queued must not land after the erasure */
    dlog_flush(10000);        /* so must a decide still queued for the decision log */
    long dl = dlog_erase_customer(id); /* the log's own environment (engine/dlog.h) */
    if (dl < 0)
        return dl;
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc)
        return rc;
    /* before profiles_erase_txn, which drops the index that finds them;
     * not counted as erased: the log keeps the entries, without the id */
    long au = audit_erase_customer(t, id);
    long n = au < 0 ? au : profiles_erase_txn(t, id);
    if (n < 0 || (n == 0 && dl == 0)) {
        store_txn_end(t);
        return n == 0 ? ERR_NOTFOUND : n;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    return rc ? rc : n + dl;
}

struct export_ctx {
    json_t *arr;
    int err;
};

static int export_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct export_ctx *x = ud;
    int e;
    json_t *v = codec_msgpack_to_json(val, vlen, &e);
    if (!v) {
        /* counters and index entries may be raw bytes: show their size */
        v = json_object();
        json_object_set_new(v, "bytes", json_integer((json_int_t)vlen));
    }
    const char *k = key;
    size_t skip = strlen(k) + 1; /* "<id>\0rest" */
    json_t *o = json_object();
    json_t *ks = json_stringn_nocheck(k + skip, klen > skip ? klen - skip : 0);
    for (size_t i = 0; ks && i < json_string_length(ks); i++)
        if (((unsigned char *)json_string_value(ks))[i] < 0x20 ||
            ((unsigned char *)json_string_value(ks))[i] >= 0x80) {
            json_decref(ks);
            ks = NULL;
        }
    json_object_set_new(o, "key", ks ? ks : json_string("(binary)"));
    json_object_set_new(o, "value", v);
    json_array_append_new(x->arr, o);
    return json_array_size(x->arr) >= 100000 ? 1 : 0;
}

/* Name each exposure's experiment: the record whose "xkey" it carries. */
struct xname_ctx {
    json_t *xps;
};

static int xname_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    struct xname_ctx *x = ud;
    json_t *rec = codec_msgpack_to_json(val, vlen, NULL);
    json_t *xk = json_object_get(rec, "xkey"), *xid = json_object_get(rec, "id");
    size_t i;
    json_t *e;
    json_array_foreach (x->xps, i, e)
        if (json_is_integer(xk) && json_is_string(xid) &&
            json_integer_value(json_object_get(e, "experiment_key")) == json_integer_value(xk))
            json_object_set(e, "experiment_id", xid);
    json_decref(rec);
    return 0;
}

json_t *profiles_export(struct store *s, const char *id, int *rc)
{
    experiments_expo_flush(); /* exposures of decides answered before the request */
    dlog_flush(10000);        /* and their decision log entries */
    struct store_txn *t;
    *rc = store_rtxn_begin(s, &t);
    if (*rc)
        return NULL;
    json_t *out = json_object();
    int grc;
    json_t *p = profiles_get_txn(t, id, &grc);
    json_object_set_new(out, "customer_id", json_string(id));
    json_object_set_new(out, "profile", p ? p : json_null());
    size_t n = strlen(id);
    char *prefix = malloc(n + 1);
    memcpy(prefix, id, n + 1);
    int any = p != NULL;
    struct export_ctx x = { json_array(), 0 };
    store_scan(t, STORE_COUNTERS, prefix, n + 1, NULL, 0, export_cb, &x);
    any |= json_array_size(x.arr) > 0;
    json_object_set_new(out, "counters", x.arr);
    free(prefix);
    const void *sv;
    size_t sl;
    if (store_get(t, STORE_PSTATS, id, n, &sv, &sl) == 0) {
        json_t *st = codec_msgpack_to_json(sv, sl, NULL);
        any |= st != NULL;
        json_object_set_new(out, "stats", st ? st : json_null());
    }
    json_t *segs = segments_customer_json(t, id);
    any |= json_array_size(segs) > 0;
    json_object_set_new(out, "segments", segs ? segs : json_array());
    json_t *evs = events_log_customer_list(t, id, 1000000);
    json_t *act = events_log_customer_activity(t, id);
    any |= json_array_size(evs) > 0 || json_array_size(act) > 0;
    json_object_set_new(out, "events", evs ? evs : json_array());
    json_object_set_new(out, "activity", act ? act : json_array());
    json_t *xps = experiments_expo_customer(t, id); /* experiment exposures = assignments */
    any |= json_array_size(xps) > 0;
    if (json_array_size(xps)) {
        struct xname_ctx xn = { xps };
        store_scan(t, STORE_EXPERIMENTS, NULL, 0, NULL, 0, xname_cb, &xn);
    }
    json_object_set_new(out, "experiment_exposures", xps ? xps : json_array());
    int crc;
    json_t *cp = coupons_export_customer(t, id, &crc);
    any |= cp && (json_array_size(json_object_get(cp, "assignments")) ||
                  json_array_size(json_object_get(cp, "redemptions")));
    json_object_set_new(out, "coupons", cp ? cp : json_null());
    json_t *ly = loyalty_export(t, id, &crc);
    any |= ly != NULL;
    json_object_set_new(out, "loyalty", ly ? ly : json_null());
    json_t *au = audit_customer_json(t, id); /* who changed the profile, when, which fields */
    any |= json_array_size(au) > 0;
    json_object_set_new(out, "audit", au ? au : json_array());
    json_t *dl = dlog_export_customer(t, id); /* logged decides, with the profile as it was */
    any |= json_array_size(dl) > 0;
    json_object_set_new(out, "decisions", dl ? dl : json_array());
    store_txn_end(t);
    if (!any) {
        json_decref(out);
        *rc = ERR_NOTFOUND;
        return NULL;
    }
    *rc = 0;
    return out;
}
