/*
 * profiles_import.c — NDJSON bulk import of profiles, resumable.
 *
 * Two phases: parse_range() turns a range of lines into records (key +
 * msgpack value, or line number + message), write_ranges() stores them in
 * line order in batched write transactions.  Parsing is nearly all of the
 * cost (JSON parse, checks, msgpack encode; the LMDB puts are a few per
 * cent), so the offline import parses the ranges of a block on several
 * threads while one writer keeps the order of a single pass: the same
 * line numbers, the same "last line wins" for a repeated id.
 *
 * Why the progress record is written inside each batch's transaction: it
 * then says exactly which lines are stored, whatever stops the import (a
 * full disk, Ctrl-C, kill -9, a crash of the machine after which LMDB
 * comes back at an earlier commit).  Resuming from it loads nothing twice
 * and skips nothing.
 */
#include "service/profiles.h"
#include "engine/segments.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/id.h"
#include "codec/codec.h"
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct irec {
    long line;
    size_t off;    /* into the range's data buffer */
    size_t klen;   /* key bytes; 0 marks an error record */
    size_t vlen;   /* msgpack bytes, or the message's bytes for an error */
    size_t end;    /* offset in the range's input of the byte after the line */
};

struct irange {
    const char *p; /* the input lines */
    size_t len;
    long first_line;
    long end_line; /* number of the line after the range */
    uint64_t foff; /* file offset of p[0] */
    struct buf data; /* every record's key+value or message bytes */
    struct irec *recs;
    size_t n, cap;
    long lines;    /* non-blank lines */
    size_t cur_end;/* parse_range: end of the line being parsed */
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
    g->recs[g->n++] = (struct irec){ line, off, klen, vlen, g->cur_end };
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
        g->cur_end = (size_t)(p - g->p);
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

/* ---- writing, with the progress record ---------------------------------- */

struct iwriter {
    struct store *s;
    int batch;
    const struct profiles_import_opts *o; /* NULL: no progress record */
    struct profiles_import_result *res;
};

/* The progress record: the file's identity, where the stored lines end,
 * the totals over every run. */
static int put_progress(struct store_txn *t, const struct iwriter *w, long line, uint64_t off, int done)
{
    const struct profiles_import_opts *o = w->o;
    json_t *rec = o->ident ? json_deep_copy(o->ident) : json_object();
    if (!rec)
        return ERR_NOMEM;
    json_object_set_new(rec, "line", json_integer(line));
    json_object_set_new(rec, "offset", json_integer((json_int_t)off));
    json_object_set_new(rec, "imported", json_integer(o->imported_before + w->res->imported));
    json_object_set_new(rec, "failed", json_integer(o->failed_before + w->res->failed));
    json_object_set_new(rec, "done", json_boolean(done));
    json_object_set_new(rec, "updated", json_integer(clock_now()));
    char *text = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (!text)
        return ERR_NOMEM;
    int rc = store_put(t, STORE_META, o->checkpoint, strlen(o->checkpoint), text, strlen(text));
    free(text);
    return rc;
}

/* One transaction: records from (*pi, *pj) on, until `batch` of them are
 * stored or the ranges end, then the progress record, then the commit
 * (durable when it ends the ranges and `durable` is set).  (*pi, *pj) and
 * the result's position advance only once it is committed.  A range that
 * ran out of memory while parsing ends the work: its parsed records are
 * committed and *parse_rc is set. */
/* A record's put, with the customer's segment membership following it in
 * the same transaction (one segments batch per write batch: the counts are
 * written once, just before the commit). */
static int import_put(struct store_txn *t, struct segments_batch *sb, const char *key, size_t klen,
                      const char *val, size_t vlen)
{
    const void *old, *sv;
    size_t ol, sl;
    int rc = store_get(t, STORE_PROFILES, key, klen, &old, &ol);
    if (rc && rc != ERR_NOTFOUND)
        return rc;
    if (rc)
        old = NULL;
    rc = store_get(t, STORE_PSTATS, key, klen, &sv, &sl);
    if (rc && rc != ERR_NOTFOUND)
        return rc;
    if (rc)
        sv = NULL;
    if ((rc = segments_batch_customer(sb, key, klen, old, ol, val, vlen, sv, sl, sv, sl)))
        return rc;
    return store_put(t, STORE_PROFILES, key, klen, val, vlen);
}

static int write_batch(struct iwriter *w, struct irange *gs, int ng, int *pi, size_t *pj, int durable,
                       int *parse_rc)
{
    struct profiles_import_result *res = w->res;
    struct store_txn *t = NULL;
    struct segments_batch *sb = NULL;
    int i = *pi, n = 0, rc = 0;
    size_t j = *pj;
    long line = res->next_line;
    uint64_t off = res->next_offset;
    while (i < ng) {
        struct irange *g = &gs[i];
        for (; j < g->n && n < w->batch; j++) {
            const struct irec *r = &g->recs[j];
            const char *d = g->data.p + r->off;
            if (!r->klen) {
                add_error(res, r->line, d, r->vlen);
            } else {
                if (!t && (rc = store_wtxn_begin(w->s, &t)))
                    break;
                if (!sb && !(sb = segments_batch_begin(t))) {
                    rc = ERR_NOMEM;
                    break;
                }
                if ((rc = import_put(t, sb, d, r->klen, d + r->klen, r->vlen)))
                    break;
                res->imported++;
                n++;
            }
            line = r->line + 1;
            off = g->foff + r->end;
        }
        if (rc || j < g->n)
            break; /* trouble, or the batch is full in the middle of the range */
        if (g->rc) {
            *parse_rc = g->rc;
            break;
        }
        res->lines += g->lines;
        line = g->end_line;
        off = g->foff + g->len;
        i++;
        j = 0;
        if (n >= w->batch)
            break;
    }
    int final = i >= ng || *parse_rc;
    if (!rc && sb) {
        rc = segments_batch_end(sb); /* the member counts, before the commit */
        sb = NULL;
    }
    if (!rc && w->o && w->o->checkpoint && (t || line != res->next_line)) {
        if (t || (rc = store_wtxn_begin(w->s, &t)) == 0)
            rc = put_progress(t, w, line, off, 0);
    }
    if (rc) {
        segments_batch_abort(sb);
        store_txn_end(t);
        return rc;
    }
    if (t) {
        rc = store_txn_commit(t, final && durable ? STORE_DURABLE : STORE_ASYNC);
    } else if (final && durable) {
        /* earlier async batches still need to be on disk before we acknowledge */
        if ((rc = store_wtxn_begin(w->s, &t)) == 0)
            rc = store_txn_commit(t, STORE_DURABLE);
    }
    if (rc)
        return rc;
    *pi = i;
    *pj = j;
    res->next_line = line;
    res->next_offset = off;
    return 0;
}

/* Store the parsed ranges in order, a write txn per `batch` records.  A
 * batch that finds the map full is redone once the map has grown; one
 * that cannot be stored is not counted (the result's position says where
 * the stored lines end). */
static int write_ranges(struct iwriter *w, struct irange *gs, int ng, int durable)
{
    struct profiles_import_result *res = w->res;
    int i = 0, grown = 0;
    size_t j = 0;
    do {
        long imported = res->imported, failed = res->failed, lines = res->lines;
        size_t nerr = res->errors ? json_array_size(res->errors) : 0;
        int parse_rc = 0;
        int rc = write_batch(w, gs, ng, &i, &j, durable, &parse_rc);
        if (rc) {
            res->imported = imported;
            res->failed = failed;
            res->lines = lines;
            while (res->errors && json_array_size(res->errors) > nerr)
                json_array_remove(res->errors, json_array_size(res->errors) - 1);
            if (rc == ERR_FULL && grown < 8 && store_grow(w->s) == 0) {
                grown++;
                continue;
            }
            return rc;
        }
        grown = 0;
        if (parse_rc)
            return parse_rc;
    } while (i < ng);
    return 0;
}

#define IMPORT_MAX_THREADS 4

/* One block of whole lines being parsed: its ranges and their threads. */
struct iblock {
    struct irange gs[IMPORT_MAX_THREADS];
    pthread_t th[IMPORT_MAX_THREADS];
    int started[IMPORT_MAX_THREADS];
    int ng;
};

/* Split data[0..len) (whole lines, numbered from first_line, at file
 * offset foff) into up to `nthreads` ranges at line boundaries and start a
 * parsing thread for each when `spawn`; block_join() parses whatever has
 * no thread. */
static void block_start(struct iblock *k, const char *data, size_t len, long first_line, uint64_t foff,
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
        struct irange *g = &k->gs[k->ng];
        *g = (struct irange){ .p = data + at, .len = cut - at, .first_line = line, .foff = foff + at };
        for (size_t i = at; i < cut; i++)
            line += data[i] == '\n';
        g->end_line = line;
        if (cut == len && data[len - 1] != '\n')
            g->end_line++; /* a last line without its newline */
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
    res->next_line = first_line;
    res->next_offset = 0;
    block_start(&k, data, len, first_line, 0, 1, 0);
    block_join(&k);
    struct iwriter w = { s, batch > 0 ? batch : 5000, NULL, res };
    int rc = write_ranges(&w, k.gs, k.ng, 1);
    block_free(&k);
    return rc;
}

/* The offline import pipelines: while threads parse block n (one per
 * core), the calling thread writes block n-1's records (they own copies of
 * their bytes, so the read buffer is free again once block n is parsed).
 * Blocks commit asynchronously; one fsync at the end acknowledges all. */
int profiles_import_file(struct store *s, FILE *f, const struct profiles_import_opts *o,
                         struct profiles_import_result *res)
{
    static const struct profiles_import_opts none;
    if (!o)
        o = &none;
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
    long line = o->first_line > 0 ? o->first_line : 1;
    uint64_t foff = o->first_offset;
    res->next_line = line;
    res->next_offset = foff;
    res->complete = 0;
    struct iwriter w = { s, 10000, o->checkpoint ? o : NULL, res };
    int rc = 0, stopped = 0;
    for (;;) {
        if (o->stop && *o->stop) {
            stopped = 1;
            break;
        }
        size_t room = cap - have;
        size_t n = fread(blk + have, 1, room, f);
        have += n;
        int eof = 0;
        if (n < room) {
            if (ferror(f)) {
                if (errno != EINTR) {
                    rc = ERR_IO;
                    break;
                }
                clearerr(f); /* a signal: look at the stop flag, read on */
                if (n == 0)
                    continue;
            } else {
                eof = 1;
            }
        }
        size_t upto = have;
        if (!eof) {
            /* process whole lines only; keep the tail for the next block */
            while (upto > 0 && blk[upto - 1] != '\n')
                upto--;
            if (upto == 0) {
                if (have < cap)
                    continue; /* interrupted before a whole line arrived */
                /* a line longer than the block: grow */
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
            block_start(cur, blk, upto, line, foff, nthreads, 1);
        if (prev->ng) {
            rc = write_ranges(&w, prev->gs, prev->ng, 0);
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
            foff += upto;
            memmove(blk, blk + upto, have - upto);
            have -= upto;
        }
        if (eof)
            break;
    }
    if (!rc && prev->ng)
        rc = write_ranges(&w, prev->gs, prev->ng, 0);
    block_free(prev);
    /* one fsync for the whole file, with the final progress record */
    struct store_txn *t;
    int frc = store_wtxn_begin(s, &t);
    if (frc == 0 && !rc && !stopped && w.o)
        frc = put_progress(t, &w, res->next_line, res->next_offset, 1);
    if (frc == 0)
        frc = store_txn_commit(t, STORE_DURABLE);
    else
        store_txn_end(t);
    if (!rc)
        rc = frc;
    res->complete = !rc && !stopped;
    free(blk);
    free(cur);
    free(prev);
    return rc;
}

/* ---- the progress record ------------------------------------------------ */

int profiles_import_ident(const char *path, char *key, size_t keylen, json_t **ident, int *seekable)
{
    *ident = NULL;
    *seekable = 0;
    static const char prefix[] = "import:profiles:";
    if (!strcmp(path, "-")) {
        snprintf(key, keylen, "%s-", prefix);
        *ident = json_pack("{s:s}", "file", "-");
        return *ident ? 0 : ERR_NOMEM;
    }
    struct stat st;
    if (stat(path, &st))
        return -errno;
    char abs[PATH_MAX];
    if (!realpath(path, abs))
        snprintf(abs, sizeof abs, "%s", path);
    size_t al = strlen(abs);
    if (sizeof prefix + al <= 500 && sizeof prefix + al < keylen) {
        snprintf(key, keylen, "%s%s", prefix, abs);
    } else { /* a key is at most 511 bytes: name a long path by two hashes */
        snprintf(key, keylen, "%s#%08x%08x", prefix, hash_fnv1a(abs, al, 2166136261u),
                 hash_fnv1a(abs, al, 16777619u));
    }
    if (S_ISREG(st.st_mode)) {
        *seekable = 1;
        *ident = json_pack("{s:s, s:I, s:I}", "file", abs, "size", (json_int_t)st.st_size, "mtime_ns",
                           (json_int_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    } else {
        *ident = json_pack("{s:s}", "file", abs);
    }
    return *ident ? 0 : ERR_NOMEM;
}

json_t *profiles_import_progress(struct store *s, const char *key, int *rc)
{
    struct store_txn *t;
    if ((*rc = store_rtxn_begin(s, &t)))
        return NULL;
    const void *v;
    size_t vl;
    json_t *rec = NULL;
    if ((*rc = store_get(t, STORE_META, key, strlen(key), &v, &vl)) == 0) {
        rec = json_loadb(v, vl, 0, NULL);
        if (!json_is_object(rec)) {
            json_decref(rec);
            rec = NULL;
            *rc = ERR_PARSE;
        }
    }
    store_txn_end(t);
    return rec;
}
