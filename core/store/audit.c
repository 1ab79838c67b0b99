/*
 * audit.c — append-only audit entries in STORE_AUDIT and their query.
 *
 * Keys are the dense sequence "audit" (taken in the writer's txn, so an
 * aborted txn takes its number back): newest-first reads walk the numbers
 * down from the sequence's current value with point lookups, oldest-first
 * reads use a cursor scan.  Both stop after AUDIT_SCAN_BUDGET entries.
 */
#include "store/audit.h"
#include "base/id.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/config.h"
#include "base/err.h"
#include "base/tz.h"
#include <stdlib.h>
#include <string.h>

static json_t *jstr_or_null(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

int audit_append(struct store_txn *t, const char *actor, const char *action, const char *object,
                 const json_t *before, const json_t *after)
{
    if (!t || !action || !*action)
        return ERR_INVAL;
    uint64_t seq;
    int rc = store_seq_next(t, "audit", &seq);
    if (rc)
        return rc;
    int64_t now = clock_now();
    char iso[32];
    tz_format_iso8601(now, iso, sizeof iso);
    json_t *e = json_object();
    if (!e)
        return ERR_NOMEM;
    json_object_set_new(e, "seq", json_integer((json_int_t)seq));
    json_object_set_new(e, "ts", json_integer(now));
    json_object_set_new(e, "at", json_string(iso));
    json_object_set_new(e, "actor", jstr_or_null(actor ? actor : "anonymous"));
    json_object_set_new(e, "action", jstr_or_null(action));
    json_object_set_new(e, "object", jstr_or_null(object));
    json_object_set(e, "before", before ? (json_t *)before : json_null());
    json_object_set(e, "after", after ? (json_t *)after : json_null());
    struct buf b = BUF_INIT;
    rc = codec_json_to_msgpack(e, &b);
    if (rc == 0 && b.len > AUDIT_MAX_ENTRY) {
        /* keep the who/what/when; say the details were too big */
        size_t big = b.len;
        buf_reset(&b);
        json_t *tr = json_pack("{s:b,s:I}", "truncated", 1, "bytes", (json_int_t)big);
        json_object_set(e, "before", tr);
        json_object_set_new(e, "after", tr);
        rc = codec_json_to_msgpack(e, &b);
    }
    json_decref(e);
    if (rc == 0) {
        unsigned char key[8];
        store_be64(seq, key);
        rc = store_put(t, STORE_AUDIT, key, sizeof key, b.p, b.len);
    }
    buf_free(&b);
    return rc;
}

/* "<customer>\0a": the prefix of the customer's index entries. */
static size_t cust_prefix(char *k, const char *customer)
{
    size_t n = strlen(customer);
    memcpy(k, customer, n);
    k[n] = 0;
    k[n + 1] = 'a';
    return n + 2;
}

int audit_append_customer(struct store_txn *t, const char *actor, const char *action,
                          const char *customer, const json_t *before, const json_t *after)
{
    if (!customer || !id_valid(customer))
        return ERR_INVAL;
    char obj[160];
    snprintf(obj, sizeof obj, "profile:%s", customer);
    int rc = audit_append(t, actor, action, obj, before, after);
    if (rc)
        return rc;
    /* audit_append took the sequence's current value */
    const void *v;
    size_t vl;
    rc = store_get(t, STORE_META, "seq:audit", 9, &v, &vl);
    if (rc || vl != 8)
        return rc ? rc : ERR_STORE;
    char k[160];
    size_t pl = cust_prefix(k, customer);
    memcpy(k + pl, v, 8);
    return store_put(t, STORE_CUSTIDX, k, pl + 8, "", 0);
}

struct seqlist {
    uint64_t *v;
    size_t n, cap;
    int err;
};

static int seq_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct seqlist *l = ud;
    if (klen < 8)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) {
            l->err = ERR_NOMEM;
            return 1;
        }
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = store_get_be64((const unsigned char *)key + klen - 8);
    return 0;
}

static int customer_seqs(struct store_txn *t, const char *customer, struct seqlist *l)
{
    char k[160];
    size_t pl = cust_prefix(k, customer);
    int rc = store_scan(t, STORE_CUSTIDX, k, pl, NULL, 0, seq_cb, l);
    return rc ? rc : l->err;
}

json_t *audit_customer_json(struct store_txn *t, const char *customer)
{
    struct seqlist l = { 0 };
    if (customer_seqs(t, customer, &l)) {
        free(l.v);
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < l.n && arr; i++) {
        unsigned char key[8];
        store_be64(l.v[i], key);
        const void *v;
        size_t vl;
        if (store_get(t, STORE_AUDIT, key, sizeof key, &v, &vl))
            continue;
        json_t *e = codec_msgpack_to_json(v, vl, NULL);
        if (e)
            json_array_append_new(arr, e);
    }
    free(l.v);
    return arr;
}

long audit_erase_customer(struct store_txn *t, const char *customer)
{
    struct seqlist l = { 0 };
    int rc = customer_seqs(t, customer, &l);
    long done = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        unsigned char key[8];
        store_be64(l.v[i], key);
        const void *v;
        size_t vl;
        int g = store_get(t, STORE_AUDIT, key, sizeof key, &v, &vl);
        if (g == ERR_NOTFOUND)
            continue;
        if (g) {
            rc = g;
            break;
        }
        json_t *e = codec_msgpack_to_json(v, vl, &rc);
        if (!e)
            break;
        json_object_set_new(e, "object", json_string(AUDIT_ERASED_OBJECT));
        struct buf b = BUF_INIT;
        rc = codec_json_to_msgpack(e, &b);
        json_decref(e);
        if (!rc)
            rc = store_put(t, STORE_AUDIT, key, sizeof key, b.p, b.len);
        buf_free(&b);
        if (!rc)
            done++;
    }
    free(l.v);
    if (rc)
        return rc;
    char k[160];
    size_t pl = cust_prefix(k, customer);
    long d = store_del_prefix(t, STORE_CUSTIDX, k, pl);
    return d < 0 ? d : done;
}

int audit_log(struct store *s, const char *actor, const char *action, const char *object,
              const json_t *before, const json_t *after)
{
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = audit_append(t, actor, action, object, before, after);
    if (rc) {
        store_txn_end(t);
        return rc;
    }
    return store_txn_commit(t, STORE_DURABLE);
}

const char *audit_actor(const struct config_key *key, const char *x_actor)
{
    if (key)
        return key->id;
    if (!x_actor)
        return "anonymous";
    return id_valid(x_actor) ? x_actor : NULL;
}

/* ---------------------------------------------------------------- query */

static int match_text(const char *want, const char *have)
{
    if (!want)
        return 1;
    if (!have)
        return 0;
    size_t n = strlen(want);
    if (n && want[n - 1] == '*')
        return strncmp(want, have, n - 1) == 0;
    return strcmp(want, have) == 0;
}

struct qstate {
    const struct audit_query *q;
    json_t *entries;
    long examined;
    uint64_t last_seq; /* last seq examined */
    int full;          /* page filled */
    int rc;
};

/* Examine one stored entry; returns 1 to stop. */
static int visit(struct qstate *st, uint64_t seq, const void *val, size_t vlen)
{
    st->examined++;
    st->last_seq = seq;
    int err;
    json_t *e = codec_msgpack_to_json(val, vlen, &err);
    if (e) {
        const struct audit_query *q = st->q;
        int64_t ts = (int64_t)json_integer_value(json_object_get(e, "ts"));
        if (match_text(q->actor, json_string_value(json_object_get(e, "actor"))) &&
            match_text(q->action, json_string_value(json_object_get(e, "action"))) &&
            match_text(q->object, json_string_value(json_object_get(e, "object"))) &&
            (!q->since || ts >= q->since) && (!q->until || ts <= q->until)) {
            json_array_append(st->entries, e);
        }
        json_decref(e);
    }
    if ((long)json_array_size(st->entries) >= st->q->limit) {
        st->full = 1;
        return 1;
    }
    return st->examined >= AUDIT_SCAN_BUDGET;
}

static int scan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct qstate *st = ud;
    if (klen != 8)
        return 0;
    return visit(st, store_get_be64(key), val, vlen);
}

json_t *audit_query(struct store *s, const struct audit_query *q, struct reqerr *e)
{
    struct store_txn *t;
    int r = store_rtxn_begin(s, &t);
    if (r) {
        reqerr_from_code(e, r, "audit");
        return NULL;
    }
    struct qstate st = { .q = q, .entries = json_array() };
    uint64_t top = 0;
    const void *v;
    size_t vl;
    if (store_get(t, STORE_META, "seq:audit", 9, &v, &vl) == 0 && vl == 8)
        top = store_get_be64(v);
    int more = 0;
    if (q->ascending) {
        unsigned char start[8];
        store_be64(q->cursor + 1, start);
        r = store_scan(t, STORE_AUDIT, NULL, 0, start, sizeof start, scan_cb, &st);
        more = st.last_seq && st.last_seq < top && (st.full || st.examined >= AUDIT_SCAN_BUDGET);
    } else {
        uint64_t from = q->cursor ? q->cursor - 1 : top;
        if (q->cursor && q->cursor - 1 > top)
            from = top;
        for (uint64_t seq = from; seq >= 1 && r == 0; seq--) {
            unsigned char key[8];
            store_be64(seq, key);
            int g = store_get(t, STORE_AUDIT, key, sizeof key, &v, &vl);
            if (g == ERR_NOTFOUND)
                continue;
            if (g) {
                r = g;
                break;
            }
            if (visit(&st, seq, v, vl))
                break;
        }
        more = st.last_seq > 1 && (st.full || st.examined >= AUDIT_SCAN_BUDGET);
    }
    store_txn_end(t);
    if (r) {
        json_decref(st.entries);
        reqerr_from_code(e, r, "audit");
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "entries", st.entries);
    if (more) {
        char c[24];
        snprintf(c, sizeof c, "%llu", (unsigned long long)st.last_seq);
        json_object_set_new(o, "next_cursor", json_string(c));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    return o;
}
