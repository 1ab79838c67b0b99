/* profiles.c — profile records and NDJSON import. */
#include "profiles.h"
#include "codec.h"
#include "err.h"
#include "http.h"
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

int profiles_put_txn(struct store_txn *t, const char *id, const json_t *attrs, int *created)
{
    const void *old;
    size_t ol;
    int rc = store_get(t, STORE_PROFILES, id, strlen(id), &old, &ol);
    if (rc && rc != ERR_NOTFOUND)
        return rc;
    if (created)
        *created = rc == ERR_NOTFOUND;
    struct buf b = BUF_INIT;
    rc = encode_attrs(attrs, &b);
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

static void add_error(struct profiles_import_result *res, long line, const char *msg)
{
    res->failed++;
    if (!res->errors)
        res->errors = json_array();
    if (json_array_size(res->errors) < 100) {
        json_t *e = json_object();
        json_object_set_new(e, "line", json_integer(line));
        json_object_set_new(e, "message", json_string(msg));
        json_array_append_new(res->errors, e);
    }
}

int profiles_import_ndjson(struct store *s, const char *data, size_t len, long first_line,
                           int batch, struct profiles_import_result *res)
{
    if (batch <= 0)
        batch = 5000;
    struct store_txn *t = NULL;
    int rc = 0, inbatch = 0;
    struct buf b = BUF_INIT;
    long line = first_line - 1;
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        res->lines++;
        size_t ll = (size_t)(le - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        const char *q = p;
        p = nl ? nl + 1 : end;
        size_t ws = 0;
        while (ws < ll && (q[ws] == ' ' || q[ws] == '\t'))
            ws++;
        if (ws == ll) {
            res->lines--;
            continue;
        }
        int err;
        char msg[256];
        json_t *o = codec_parse_json(q, ll, &err, msg, sizeof msg);
        if (!o) {
            add_error(res, line, msg);
            continue;
        }
        json_t *idv = json_object_get(o, "id");
        const char *id = json_string_value(idv);
        const char *field;
        if (!json_is_object(o)) {
            add_error(res, line, "line must be a JSON object");
        } else if (!id) {
            add_error(res, line, "missing string \"id\"");
        } else if (!http_valid_id(id)) {
            add_error(res, line, "invalid id (1-128 characters of A-Z a-z 0-9 _ - . : @)");
        } else if (profiles_validate(id, o, 0, msg, sizeof msg, &field)) {
            add_error(res, line, msg);
        } else {
            buf_reset(&b);
            char idbuf[130]; /* the key outlives the "id" member we drop */
            snprintf(idbuf, sizeof idbuf, "%s", id);
            id = idbuf;
            json_object_del(o, "id"); /* id is the key, not an attribute */
            int e = codec_json_to_msgpack(o, &b);
            if (e) {
                add_error(res, line, err_str(e));
            } else if (b.len > PROFILES_MAX_ATTRS_BYTES) {
                add_error(res, line, "profile larger than 256 KiB");
            } else {
                if (!t && (rc = store_wtxn_begin(s, &t)))
                    goto out;
                rc = store_put(t, STORE_PROFILES, id, strlen(id), b.p, b.len);
                if (rc) {
                    json_decref(o);
                    goto out;
                }
                res->imported++;
                if (++inbatch >= batch) {
                    rc = store_txn_commit(t, STORE_ASYNC);
                    t = NULL;
                    inbatch = 0;
                    if (rc)
                        goto out;
                }
            }
        }
        json_decref(o);
    }
out:
    buf_free(&b);
    if (rc) {
        /* the failed batch is lost: count it so the caller's totals are honest */
        if (t) {
            store_txn_end(t);
            res->imported -= inbatch;
            res->failed += inbatch;
        }
        return rc;
    }
    if (t)
        return store_txn_commit(t, STORE_DURABLE);
    /* earlier async batches still need to be on disk before we acknowledge */
    struct store_txn *w;
    if ((rc = store_wtxn_begin(s, &w)) == 0)
        rc = store_txn_commit(w, STORE_DURABLE);
    return rc;
}

int profiles_import_file(struct store *s, FILE *f, struct profiles_import_result *res)
{
    size_t cap = 8 << 20, have = 0;
    char *blk = malloc(cap);
    if (!blk)
        return ERR_NOMEM;
    long line = 1;
    int rc = 0;
    for (;;) {
        size_t n = fread(blk + have, 1, cap - have, f);
        have += n;
        int eof = n == 0;
        size_t upto = have;
        if (!eof) {
            /* process whole lines only; keep the tail for the next block */
            while (upto > 0 && blk[upto - 1] != '\n')
                upto--;
            if (upto == 0) { /* a line longer than the block: grow */
                if (cap >= (256u << 20)) {
                    rc = ERR_TOOBIG;
                    break;
                }
                char *nb = realloc(blk, cap * 2);
                if (!nb) {
                    rc = ERR_NOMEM;
                    break;
                }
                blk = nb;
                cap *= 2;
                continue;
            }
        }
        if (upto) {
            long before = res->lines;
            rc = profiles_import_ndjson(s, blk, upto, line, 10000, res);
            /* count lines including blank ones for numbering */
            long nl = 0;
            for (size_t i = 0; i < upto; i++)
                nl += blk[i] == '\n';
            if (upto && blk[upto - 1] != '\n')
                nl++;
            line += nl;
            (void)before;
            if (rc)
                break;
            memmove(blk, blk + upto, have - upto);
            have -= upto;
        }
        if (eof)
            break;
    }
    free(blk);
    return rc;
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
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc)
        return rc;
    long n = profiles_erase_txn(t, id);
    if (n <= 0) {
        store_txn_end(t);
        return n == 0 ? ERR_NOTFOUND : n;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    return rc ? rc : n;
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

json_t *profiles_export(struct store *s, const char *id, int *rc)
{
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
    static const struct { enum store_db db; const char *name; } fams[] = {
        { STORE_COUNTERS, "counters" }, { STORE_CUSTIDX, "events" } };
    int any = p != NULL;
    for (size_t i = 0; i < 2; i++) {
        struct export_ctx x = { json_array(), 0 };
        store_scan(t, fams[i].db, prefix, n + 1, NULL, 0, export_cb, &x);
        any |= json_array_size(x.arr) > 0;
        json_object_set_new(out, fams[i].name, x.arr);
    }
    free(prefix);
    store_txn_end(t);
    if (!any) {
        json_decref(out);
        *rc = ERR_NOTFOUND;
        return NULL;
    }
    *rc = 0;
    return out;
}
