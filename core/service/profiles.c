/* profiles.c — profile records and NDJSON import. */
#include "service/profiles.h"
#include "base/id.h"
#include "delivery/outbox.h"
#include "codec/codec.h"
#include "base/err.h"
#include "insight/events_log.h"
#include "engine/coupons.h"
#include "engine/loyalty.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    /* raw events first: they are found through the index deleted below */
    long ev = events_log_erase_customer(t, id);
    if (ev < 0)
        return ev;
    total += ev;
    long ob = outbox_erase_customer_txn(t, id); /* dead letters keep rendered messages */
    if (ob < 0)
        return ob;
    total += ob;
    long cp = coupons_erase_customer(t, id); /* assignments, uses; redemptions anonymised */
    if (cp < 0)
        return cp;
    total += cp;
    long ly = loyalty_erase(t, id); /* the points ledger */
    if (ly < 0)
        return ly;
    total += ly;
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

/* ---- NDJSON import ------------------------------------------------------
 *
 * Two phases: parse_range() turns a range of lines into records (key +
 * msgpack value, or line number + message), write_ranges() stores them in
 * line order in batched write transactions.  Parsing is nearly all of the
 * cost (JSON parse, checks, msgpack encode; the LMDB puts are a few per
 * cent), so the offline import parses the ranges of a block on several
 * threads while one writer keeps the order of a single pass: the same
 * line numbers, the same "last line wins" for a repeated id. */

struct irec {
    long line;
    size_t off;    /* into the range's data buffer */
    size_t klen;   /* key bytes; 0 marks an error record */
    size_t vlen;   /* msgpack bytes, or the message's bytes for an error */
};

struct irange {
    const char *p; /* the input lines */
    size_t len;
    long first_line;
    struct buf data; /* every record's key+value or message bytes */
    struct irec *recs;
    size_t n, cap;
    long lines;    /* non-blank lines */
    int rc;        /* ERR_NOMEM while parsing */
};

static void add_error(struct profiles_import_result *res, long line, const char *msg, size_t len)
{
    res->failed++;
    if (!res->errors)
        res->errors = json_array();
    if (json_array_size(res->errors) < 100) {
        json_t *e = json_object();
        json_object_set_new(e, "line", json_integer(line));
        json_t *m = json_stringn(msg, len);
        json_object_set_new(e, "message", m ? m : json_string("(message not valid UTF-8)"));
        json_array_append_new(res->errors, e);
    }
}

static int add_rec(struct irange *g, long line, const char *key, size_t klen, const void *val,
                   size_t vlen)
{
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 1024;
        struct irec *nr = realloc(g->recs, nc * sizeof *nr);
        if (!nr)
            return ERR_NOMEM;
        g->recs = nr;
        g->cap = nc;
    }
    size_t off = g->data.len;
    if (buf_add(&g->data, key, klen) || buf_add(&g->data, val, vlen))
        return ERR_NOMEM;
    g->recs[g->n++] = (struct irec){ line, off, klen, vlen };
    return 0;
}

static int add_bad(struct irange *g, long line, const char *msg)
{
    return add_rec(g, line, "", 0, msg, strlen(msg));
}

static void parse_range(struct irange *g)
{
    struct buf b = BUF_INIT;
    long line = g->first_line - 1;
    const char *p = g->p, *end = g->p + g->len;
    while (p < end && !g->rc) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        size_t ll = (size_t)(le - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        const char *q = p;
        p = nl ? nl + 1 : end;
        size_t ws = 0;
        while (ws < ll && (q[ws] == ' ' || q[ws] == '\t'))
            ws++;
        if (ws == ll)
            continue; /* blank */
        g->lines++;
        int err;
        char msg[256];
        json_t *o = codec_parse_json(q, ll, &err, msg, sizeof msg);
        if (!o) {
            g->rc = add_bad(g, line, msg);
            continue;
        }
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *field;
        if (!json_is_object(o)) {
            g->rc = add_bad(g, line, "line must be a JSON object");
        } else if (!id) {
            g->rc = add_bad(g, line, "missing string \"id\"");
        } else if (!id_valid(id)) {
            g->rc = add_bad(g, line, "invalid id (1-128 characters of A-Z a-z 0-9 _ - . : @)");
        } else if (profiles_validate(id, o, 0, msg, sizeof msg, &field)) {
            g->rc = add_bad(g, line, msg);
        } else {
            buf_reset(&b);
            char idbuf[130]; /* the key outlives the "id" member we drop */
            snprintf(idbuf, sizeof idbuf, "%s", id);
            json_object_del(o, "id"); /* id is the key, not an attribute */
            int e = codec_json_to_msgpack(o, &b);
            if (e)
                g->rc = add_bad(g, line, err_str(e));
            else if (b.len > PROFILES_MAX_ATTRS_BYTES)
                g->rc = add_bad(g, line, "profile larger than 256 KiB");
            else
                g->rc = add_rec(g, line, idbuf, strlen(idbuf), b.p, b.len);
        }
        json_decref(o);
    }
    buf_free(&b);
}

static void *parse_thread(void *arg)
{
    parse_range(arg);
    return NULL;
}

static void range_free(struct irange *g)
{
    buf_free(&g->data);
    free(g->recs);
}

/* Store the parsed ranges in order: a write txn per `batch` records
 * (async commits); with `durable` the last commit waits for the fsync, so
 * the call returns only once every imported record is on disk. */
static int write_ranges(struct store *s, struct irange *gs, int ng, int batch, int durable,
                        struct profiles_import_result *res)
{
    struct store_txn *t = NULL;
    int rc = 0, inbatch = 0;
    for (int i = 0; i < ng && !rc; i++) {
        struct irange *g = &gs[i];
        res->lines += g->lines;
        for (size_t j = 0; j < g->n; j++) {
            const struct irec *r = &g->recs[j];
            const char *d = g->data.p + r->off;
            if (!r->klen) {
                add_error(res, r->line, d, r->vlen);
                continue;
            }
            if (!t && (rc = store_wtxn_begin(s, &t)))
                break;
            if ((rc = store_put(t, STORE_PROFILES, d, r->klen, d + r->klen, r->vlen)))
                break;
            res->imported++;
            if (++inbatch >= batch) {
                rc = store_txn_commit(t, STORE_ASYNC);
                t = NULL;
                inbatch = 0;
                if (rc)
                    break;
            }
        }
        if (!rc && g->rc)
            rc = g->rc; /* out of memory parsing: stop after what was parsed */
    }
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
        return store_txn_commit(t, durable ? STORE_DURABLE : STORE_ASYNC);
    if (!durable)
        return 0;
    /* earlier async batches still need to be on disk before we acknowledge */
    struct store_txn *w;
    if ((rc = store_wtxn_begin(s, &w)) == 0)
        rc = store_txn_commit(w, STORE_DURABLE);
    return rc;
}

#define IMPORT_MAX_THREADS 4

/* One block of whole lines being parsed: its ranges and their threads. */
struct iblock {
    struct irange gs[IMPORT_MAX_THREADS];
    pthread_t th[IMPORT_MAX_THREADS];
    int started[IMPORT_MAX_THREADS];
    int ng;
};

/* Split data[0..len) (whole lines, numbered from first_line) into up to
 * `nthreads` ranges at line boundaries and start a parsing thread for each
 * when `spawn`; block_join() parses whatever has no thread. */
static void block_start(struct iblock *k, const char *data, size_t len, long first_line,
                        int nthreads, int spawn)
{
    memset(k, 0, sizeof *k);
    if (nthreads < 1 || len < (256u << 10))
        nthreads = 1; /* not worth a thread */
    if (nthreads > IMPORT_MAX_THREADS)
        nthreads = IMPORT_MAX_THREADS;
    size_t at = 0;
    long line = first_line;
    while (at < len && k->ng < nthreads) {
        size_t want = k->ng == nthreads - 1 ? len - at : (len - at) / (size_t)(nthreads - k->ng);
        size_t cut = at + (want ? want : 1);
        while (cut < len && data[cut - 1] != '\n') /* end on a line boundary */
            cut++;
        k->gs[k->ng] = (struct irange){ .p = data + at, .len = cut - at, .first_line = line };
        for (size_t i = at; i < cut; i++)
            line += data[i] == '\n';
        k->ng++;
        at = cut;
    }
    for (int i = 0; spawn && i < k->ng; i++)
        k->started[i] = pthread_create(&k->th[i], NULL, parse_thread, &k->gs[i]) == 0;
}

static void block_join(struct iblock *k)
{
    for (int i = 0; i < k->ng; i++) {
        if (k->started[i])
            pthread_join(k->th[i], NULL);
        else
            parse_range(&k->gs[i]);
        k->started[i] = 0;
    }
}

static void block_free(struct iblock *k)
{
    for (int i = 0; i < k->ng; i++)
        range_free(&k->gs[i]);
    k->ng = 0;
}

int profiles_import_ndjson(struct store *s, const char *data, size_t len, long first_line,
                           int batch, struct profiles_import_result *res)
{
    struct iblock k;
    block_start(&k, data, len, first_line, 1, 0);
    block_join(&k);
    int rc = write_ranges(s, k.gs, k.ng, batch > 0 ? batch : 5000, 1, res);
    block_free(&k);
    return rc;
}

/* The offline import pipelines: while threads parse block n (one per
 * core), the calling thread writes block n-1's records (they own copies of
 * their bytes, so the read buffer is free again once block n is parsed).
 * Blocks commit asynchronously; one fsync at the end acknowledges all. */
int profiles_import_file(struct store *s, FILE *f, struct profiles_import_result *res)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = ncpu < 1 ? 1 : ncpu > IMPORT_MAX_THREADS ? IMPORT_MAX_THREADS : (int)ncpu;
    size_t cap = 8 << 20, have = 0;
    char *blk = malloc(cap);
    struct iblock *cur = malloc(sizeof *cur), *prev = malloc(sizeof *prev);
    if (!blk || !cur || !prev) {
        free(blk);
        free(cur);
        free(prev);
        return ERR_NOMEM;
    }
    cur->ng = prev->ng = 0;
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
        cur->ng = 0;
        if (upto)
            block_start(cur, blk, upto, line, nthreads, 1);
        if (prev->ng) {
            rc = write_ranges(s, prev->gs, prev->ng, 10000, 0, res);
            block_free(prev);
        }
        block_join(cur);
        if (rc) {
            block_free(cur);
            break;
        }
        struct iblock *x = prev;
        prev = cur;
        cur = x;
        if (upto) {
            /* count lines including blank ones for numbering */
            for (size_t i = 0; i < upto; i++)
                line += blk[i] == '\n';
            memmove(blk, blk + upto, have - upto);
            have -= upto;
        }
        if (eof)
            break;
    }
    if (!rc && prev->ng)
        rc = write_ranges(s, prev->gs, prev->ng, 10000, 0, res);
    block_free(prev);
    if (!rc) { /* one fsync for the whole file */
        struct store_txn *w;
        if ((rc = store_wtxn_begin(s, &w)) == 0)
            rc = store_txn_commit(w, STORE_DURABLE);
    }
    free(blk);
    free(cur);
    free(prev);
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
    json_t *evs = events_log_customer_list(t, id, 1000000);
    json_t *act = events_log_customer_activity(t, id);
    any |= json_array_size(evs) > 0 || json_array_size(act) > 0;
    json_object_set_new(out, "events", evs ? evs : json_array());
    json_object_set_new(out, "activity", act ? act : json_array());
    int crc;
    json_t *cp = coupons_export_customer(t, id, &crc);
    any |= cp && (json_array_size(json_object_get(cp, "assignments")) ||
                  json_array_size(json_object_get(cp, "redemptions")));
    json_object_set_new(out, "coupons", cp ? cp : json_null());
    json_t *ly = loyalty_export(t, id, &crc);
    any |= ly != NULL;
    json_object_set_new(out, "loyalty", ly ? ly : json_null());
    store_txn_end(t);
    if (!any) {
        json_decref(out);
        *rc = ERR_NOTFOUND;
        return NULL;
    }
    *rc = 0;
    return out;
}
