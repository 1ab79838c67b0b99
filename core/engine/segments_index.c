/*
 * segments_index.c — the membership index in STORE_SEGMENTS (key layout in
 * segments.h): each customer's record (its segments, a bitset over slots),
 * exact member counts, the write batch that keeps both in step with
 * profile and stats writes, and the read side (sizes, member pages,
 * overlaps).
 *
 * Why customer records and no per-segment member lists: a write that
 * changes a customer's segments must be cheap, and a per-segment list
 * (bitmaps, or a key per member) puts each of the customer's entries on
 * another page of the B-tree: a profile that moves in or out of 20 of 200
 * segments dirtied ~40 pages, and writing them back made a PUT 6-8 times
 * slower on the reference store.  Here a write changes one record and the
 * few pages the 200 counts share.  Counts stay O(1); member pages scan
 * the customer records in id order (small values, ~45 bytes each: about
 * 100 ms for a million customers, and a page of members stops as soon as
 * it is full).  Overlaps and audiences of segments are counted from the
 * in-memory view of these records (engine/segbits.h: a bitmap per slot
 * over customer ordinals), which every record written here is noted to
 * (segbits_note: applied after the commit, in commit order) and which
 * segidx_view_build makes at start; the scan stays as their fallback.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "engine/segbits.h"
#include "store/record.h"
#include "store/store.h"
#include "base/clock.h"
#include "base/err.h"
#include "codec/codec.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- keys ------------------------------------------------------------------ */

static size_t key_cust(unsigned char *k, const char *cust, size_t clen)
{
    k[0] = 'c';
    memcpy(k + 1, cust, clen);
    return clen + 1;
}

static void key_slot(unsigned char k[3], char tag, int slot)
{
    k[0] = (unsigned char)tag;
    k[1] = (unsigned char)(slot >> 8);
    k[2] = (unsigned char)slot;
}

/* ---- customer records ------------------------------------------------------ */

void segidx_cust_decode(const void *v, size_t vl, struct segidx_cust *c)
{
    c->found = 1;
    c->nbytes = (uint32_t)(vl > sizeof c->bits ? sizeof c->bits : vl);
    memcpy(c->bits, v, c->nbytes);
}

int segidx_cust_read(struct store_txn *t, const char *cust, size_t clen, struct segidx_cust *c)
{
    c->found = 0;
    c->nbytes = 0;
    if (!clen || clen > 200)
        return 0;
    unsigned char k[256];
    size_t kl = key_cust(k, cust, clen);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_SEGMENTS, k, kl, &v, &vl);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    segidx_cust_decode(v, vl, c);
    return 0;
}

void segidx_cust_to_segs(const struct segments_gen *g, const struct segidx_cust *c, uint64_t *out)
{
    memset(out, 0, g->nw * sizeof *out);
    for (uint32_t by = 0; by < c->nbytes; by++) {
        unsigned v = c->bits[by];
        while (v) {
            int bit = __builtin_ctz(v);
            v &= v - 1;
            int j = g->slot_seg[by * 8 + (uint32_t)bit];
            if (j >= 0)
                segbit_set(out, j);
        }
    }
}

int segments_customer_bits(struct store_txn *t, const struct segments_gen *g, const char *cust,
                           size_t clen, uint64_t *out)
{
    struct segidx_cust c;
    int rc = segidx_cust_read(t, cust, clen, &c);
    if (rc)
        return rc;
    segidx_cust_to_segs(g, &c, out);
    for (size_t w = 0; w < g->nw; w++)
        if (out[w])
            return 1;
    return 0;
}

json_t *segments_customer_json(struct store_txn *t, const char *cust)
{
    struct segments_gen *g = segments_gen_acquire();
    json_t *arr = json_array();
    struct segidx_cust c;
    if (!arr || segidx_cust_read(t, cust, strlen(cust), &c)) {
        json_decref(arr);
        segments_gen_release(g);
        return NULL;
    }
    for (int s = 0; g && s < SEGMENTS_SLOTS; s++)
        if (segidx_has(&c, s) && g->slot_seg[s] >= 0)
            json_array_append_new(arr, json_string(g->segs[g->slot_seg[s]].id));
    segments_gen_release(g);
    return arr;
}

/* ---- the write batch --------------------------------------------------------- */

/* Count a change of `slot` (written at the end of the batch). */
static void count_change(struct segments_batch *b, int slot, int on)
{
    if (!b->listed[slot]) {
        b->listed[slot] = 1;
        b->dslots[b->nd++] = (uint16_t)slot;
    }
    b->delta[slot] += on ? 1 : -1;
}

int segidx_apply(struct segments_batch *b, const char *cust, size_t clen, struct segidx_cust *c,
                 const uint64_t *prev, const uint64_t *out)
{
    const struct segments_gen *g = b->g;
    bool any = false, changed = false;
    for (size_t w = 0; w < g->nw; w++) {
        any |= out[w] != 0;
        changed |= out[w] != prev[w];
    }
    /* bits of slots that are no longer loaded (a segment being emptied) are
     * dropped whenever the record is written anyway */
    if (!changed)
        return 0;
    for (size_t w = 0; w < g->nw; w++) {
        uint64_t d = out[w] ^ prev[w];
        while (d) {
            int j = (int)(w * 64) + __builtin_ctzll(d);
            d &= d - 1;
            count_change(b, g->segs[j].slot, segbit_get(out, j));
        }
    }
    if (clen > 200)
        return ERR_TOOBIG;
    unsigned char k[256];
    size_t kl = key_cust(k, cust, clen);
    if (!any) {
        int rc = store_del(b->t, STORE_SEGMENTS, k, kl);
        if (rc == ERR_NOTFOUND)
            rc = 0;
        return rc ? rc : segbits_note(b->t, cust, clen, NULL, 0);
    }
    unsigned char val[SEGMENTS_SLOTS / 8];
    memset(val, 0, sizeof val);
    size_t n = 0;
    for (int j = 0; j < g->nseg; j++)
        if (segbit_get(out, j)) {
            int s = g->segs[j].slot;
            val[s / 8] |= (unsigned char)(1u << (s % 8));
            if ((size_t)s / 8 + 1 > n)
                n = (size_t)s / 8 + 1;
        }
    (void)c;
    int rc = store_put(b->t, STORE_SEGMENTS, k, kl, val, n);
    return rc ? rc : segbits_note(b->t, cust, clen, val, n);
}

struct segments_batch *segments_batch_begin(struct store_txn *wt)
{
    struct segments_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->t = wt;
    b->g = segments_gen_acquire();
    if (b->g && b->g->nseg) {
        size_t nw = b->g->nw;
        b->prev = calloc(3 * nw, sizeof(uint64_t));
        b->x = segments_tls();
        if (!b->prev || !b->x) {
            segments_gen_release(b->g);
            free(b->prev);
            free(b);
            return NULL;
        }
        b->aff = b->prev + nw;
        b->out = b->aff + nw;
    }
    return b;
}

static void batch_free(struct segments_batch *b)
{
    free(b->prev);
    segments_gen_release(b->g);
    free(b);
}

void segments_batch_abort(struct segments_batch *b)
{
    if (b)
        batch_free(b);
}

int segments_batch_end(struct segments_batch *b)
{
    if (!b)
        return 0;
    int rc = 0;
    for (int i = 0; i < b->nd && !rc; i++) {
        int s = b->dslots[i];
        if (!b->delta[s])
            continue;
        uint64_t n = 0;
        if ((rc = segidx_count(b->t, s, &n)) == ERR_NOTFOUND)
            rc = 0;
        if (rc)
            break;
        int64_t v = (int64_t)n + b->delta[s];
        unsigned char k[3], val[8];
        key_slot(k, 'n', s);
        store_be64((uint64_t)(v < 0 ? 0 : v), val);
        rc = store_put(b->t, STORE_SEGMENTS, k, 3, val, 8);
    }
    batch_free(b);
    return rc;
}

int segments_batch_customer(struct segments_batch *b, const char *cust, size_t clen,
                            const char *oprof, size_t oplen, const char *nprof, size_t nplen,
                            const char *ostats, size_t oslen, const char *nstats, size_t nslen)
{
    const struct segments_gen *g = b->g;
    if (!g || !g->nseg)
        return 0;
    struct segidx_cust c;
    int rc = segidx_cust_read(b->t, cust, clen, &c);
    if (rc)
        return rc;
    segidx_cust_to_segs(g, &c, b->prev);
    if (!nprof && !nstats) { /* gone: out of everything */
        memset(b->out, 0, g->nw * sizeof *b->out);
        return segidx_apply(b, cust, clen, &c, b->prev, b->out);
    }
    struct segments_tls *x = b->x;
    int64_t now = clock_now();
    buf_reset(&x->nview);
    if ((rc = segments_view(&x->nview, cust, clen, nprof, nplen, nstats, nslen, now)))
        return rc;
    if (!oprof && !ostats) {
        segments_affected(g, NULL, 0, NULL, 0, b->aff); /* new: every segment */
    } else {
        buf_reset(&x->oview);
        if ((rc = segments_view(&x->oview, cust, clen, oprof, oplen, ostats, oslen, now)))
            return rc;
        segments_affected(g, x->oview.p, x->oview.len, x->nview.p, x->nview.len, b->aff);
    }
    if ((rc = segments_eval_view(g, x, x->nview.p, x->nview.len, b->aff, b->prev, b->out)))
        return rc;
    return segidx_apply(b, cust, clen, &c, b->prev, b->out);
}

int segments_batch_mask(struct segments_batch *b, const char *cust, size_t clen, const char *prof,
                        size_t plen, const char *stats, size_t slen, const uint64_t *mask)
{
    const struct segments_gen *g = b->g;
    if (!g || !g->nseg)
        return 0;
    struct segidx_cust c;
    int rc = segidx_cust_read(b->t, cust, clen, &c);
    if (rc)
        return rc;
    segidx_cust_to_segs(g, &c, b->prev);
    if (!prof && !stats) {
        memset(b->out, 0, g->nw * sizeof *b->out);
        return segidx_apply(b, cust, clen, &c, b->prev, b->out);
    }
    struct segments_tls *x = b->x;
    buf_reset(&x->nview);
    if ((rc = segments_view(&x->nview, cust, clen, prof, plen, stats, slen, clock_now())))
        return rc;
    /* and whatever depends on those, so references stay true */
    for (size_t w = 0; w < g->nw; w++)
        b->aff[w] = mask[w];
    for (int j = 0; j < g->nseg; j++)
        if (segbit_get(mask, j))
            for (size_t w = 0; w < g->nw; w++)
                b->aff[w] |= g->closure[(size_t)j * g->nw + w];
    if ((rc = segments_eval_view(g, x, x->nview.p, x->nview.len, b->aff, b->prev, b->out)))
        return rc;
    return segidx_apply(b, cust, clen, &c, b->prev, b->out);
}

int segments_customer_txn(struct store_txn *wt, const char *cust, size_t clen, const char *oprof,
                          size_t oplen, const char *nprof, size_t nplen, const char *ostats,
                          size_t oslen, const char *nstats, size_t nslen)
{
    struct segments_batch *b = segments_batch_begin(wt);
    if (!b)
        return ERR_NOMEM;
    int rc = segments_batch_customer(b, cust, clen, oprof, oplen, nprof, nplen, ostats, oslen,
                                     nstats, nslen);
    if (rc) {
        segments_batch_abort(b);
        return rc;
    }
    return segments_batch_end(b);
}

long segments_erase_customer_txn(struct store_txn *wt, const char *cust)
{
    size_t clen = strlen(cust);
    struct segidx_cust c;
    int rc = segidx_cust_read(wt, cust, clen, &c);
    if (rc)
        return rc;
    if (!c.found)
        return 0;
    /* a batch without a generation: counts only */
    struct segments_batch *b = calloc(1, sizeof *b);
    if (!b)
        return ERR_NOMEM;
    b->t = wt;
    for (int s = 0; s < SEGMENTS_SLOTS; s++)
        if (segidx_has(&c, s))
            count_change(b, s, 0);
    unsigned char k[256];
    size_t kl = key_cust(k, cust, clen);
    if ((rc = store_del(wt, STORE_SEGMENTS, k, kl)) ||
        (rc = segbits_note(wt, cust, clen, NULL, 0))) {
        segments_batch_abort(b);
        return rc;
    }
    rc = segments_batch_end(b);
    return rc ? rc : 1;
}

/* ---- slot records and counts --------------------------------------------------- */

int segidx_count(struct store_txn *t, int slot, uint64_t *count)
{
    unsigned char k[3];
    key_slot(k, 'n', slot);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_SEGMENTS, k, 3, &v, &vl);
    if (rc)
        return rc;
    *count = vl == 8 ? store_get_be64(v) : 0;
    return 0;
}

static void slot_from_json(const json_t *o, struct segidx_slot *s)
{
    memset(s, 0, sizeof *s);
    s->used = 1;
    snprintf(s->id, sizeof s->id, "%s", json_string_value(json_object_get(o, "id")) ?: "");
    snprintf(s->fp, sizeof s->fp, "%s", json_string_value(json_object_get(o, "fp")) ?: "");
    snprintf(s->state, sizeof s->state, "%s",
             json_string_value(json_object_get(o, "state")) ?: "building");
    snprintf(s->cursor, sizeof s->cursor, "%s",
             json_string_value(json_object_get(o, "cursor")) ?: "");
    s->built_at = json_integer_value(json_object_get(o, "built_at"));
}

static int slots_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct segidx_slot *slots = ud;
    if (klen != 3)
        return 0;
    const unsigned char *k = key;
    int slot = k[1] << 8 | k[2];
    if (slot >= SEGMENTS_SLOTS)
        return 0;
    int rc;
    json_t *o = codec_msgpack_to_json(val, vlen, &rc);
    if (json_is_object(o))
        slot_from_json(o, &slots[slot]);
    json_decref(o);
    return 0;
}

int segidx_slots_load(struct store_txn *t, struct segidx_slot *slots)
{
    memset(slots, 0, sizeof *slots * SEGMENTS_SLOTS);
    return store_scan(t, STORE_SEGMENTS, "S", 1, NULL, 0, slots_cb, slots);
}

int segidx_slot_put(struct store_txn *t, int slot, const struct segidx_slot *s)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", s->id, "fp", s->fp, "state", s->state,
                          "cursor", s->cursor, "built_at", (json_int_t)s->built_at);
    if (!o)
        return ERR_NOMEM;
    unsigned char k[3];
    key_slot(k, 'S', slot);
    int rc = record_put(t, STORE_SEGMENTS, k, 3, o);
    json_decref(o);
    return rc;
}

int segidx_slot_del(struct store_txn *t, int slot)
{
    unsigned char k[3];
    key_slot(k, 'S', slot);
    int rc = store_del(t, STORE_SEGMENTS, k, 3);
    if (rc == 0 || rc == ERR_NOTFOUND) {
        key_slot(k, 'n', slot);
        rc = store_del(t, STORE_SEGMENTS, k, 3);
    }
    return rc == ERR_NOTFOUND ? 0 : rc;
}

int segidx_slot_of(struct store_txn *t, const char *id, struct segidx_slot *out)
{
    struct segments_gen *g = segments_gen_acquire();
    int j = g ? segments_find(g, id, strlen(id)) : -1;
    int slot = j >= 0 ? g->segs[j].slot : -1;
    segments_gen_release(g);
    if (slot < 0)
        return -1;
    unsigned char k[3];
    key_slot(k, 'S', slot);
    int rc;
    json_t *o = record_get(t, STORE_SEGMENTS, k, 3, &rc);
    if (!o)
        return -1;
    slot_from_json(o, out);
    json_decref(o);
    return strcmp(out->id, id) ? -1 : slot;
}

/* ---- scanning customer records ---------------------------------------------------- */

struct scan_ctx {
    const char *after;
    size_t alen;
    long max, n;
    segidx_cust_fn fn;
    void *ud;
    char *last;
    int rc;
};

static int scan_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct scan_ctx *x = ud;
    const char *id = (const char *)key + 1;
    size_t il = klen - 1;
    if (!il || il > 128)
        return 0;
    if (x->alen == il && !memcmp(x->after, id, il))
        return 0; /* the cursor itself was visited before */
    if (x->n >= x->max)
        return 1;
    struct segidx_cust c;
    segidx_cust_decode(val, vlen, &c);
    x->n++;
    memcpy(x->last, id, il);
    x->last[il] = 0;
    int r = x->fn(x->ud, id, il, &c);
    if (r < 0)
        x->rc = r;
    return r;
}

long segidx_scan(struct store_txn *t, const char *after, long max, segidx_cust_fn fn, void *ud,
                 char *last)
{
    unsigned char start[256];
    size_t al = after ? strlen(after) : 0;
    if (al > 200)
        return ERR_INVAL;
    size_t sl = key_cust(start, after ? after : "", al);
    struct scan_ctx x = { after, al, max, 0, fn, ud, last, 0 };
    int rc = store_scan(t, STORE_SEGMENTS, "c", 1, sl > 1 ? start : NULL, sl > 1 ? sl : 0, scan_cb,
                        &x);
    if (x.rc)
        return x.rc;
    return rc ? rc : x.n;
}

/* The in-memory view (engine/segbits.h) from every customer record, in a
 * write txn: no commit of this process can land between the scan and the
 * view going live. */
_Static_assert(SEGBITS_SLOTS == SEGMENTS_SLOTS, "the view has a bitmap per index slot");

static int build_cb(void *ud, const char *id, size_t idlen, const struct segidx_cust *c)
{
    (void)ud;
    int rc = segbits_build_row(id, idlen, c->bits, c->nbytes);
    return rc < 0 ? rc : 0;
}

int segidx_view_build(struct store *st)
{
    struct store_txn *t;
    int rc = store_wtxn_begin(st, &t);
    if (rc)
        return rc;
    if ((rc = segbits_build_begin(st, t)) == 0) {
        char last[132];
        long n = segidx_scan(t, "", LONG_MAX, build_cb, NULL, last);
        rc = n < 0 ? (int)n : 0;
    }
    segbits_build_done(rc);
    store_txn_end(t);
    return rc;
}

/* Emptying a slot: the records that have its bit are collected by a scan,
 * then rewritten without it (a put or delete inside a scan's callback
 * would move the scan's own cursor). */
struct drain_ctx {
    int slot;
    char (*ids)[132];
    long n;
};

static int drain_cb(void *ud, const char *id, size_t idlen, const struct segidx_cust *c)
{
    struct drain_ctx *x = ud;
    if (segidx_has(c, x->slot)) {
        memcpy(x->ids[x->n], id, idlen);
        x->ids[x->n++][idlen] = 0;
    }
    return 0;
}

long segidx_drain_slot(struct store_txn *t, int slot, char *cursor, long max)
{
    struct drain_ctx x = { slot, malloc((size_t)max * sizeof *x.ids), 0 };
    if (!x.ids)
        return ERR_NOMEM;
    char last[132] = "";
    long seen = segidx_scan(t, cursor, max, drain_cb, &x, last);
    int rc = seen < 0 ? (int)seen : 0;
    for (long i = 0; i < x.n && !rc; i++) {
        size_t il = strlen(x.ids[i]);
        struct segidx_cust c;
        if ((rc = segidx_cust_read(t, x.ids[i], il, &c)) || !segidx_has(&c, slot))
            continue;
        c.bits[slot / 8] &= (unsigned char)~(1u << (slot % 8));
        while (c.nbytes && !c.bits[c.nbytes - 1])
            c.nbytes--;
        unsigned char k[256];
        size_t kl = key_cust(k, x.ids[i], il);
        rc = c.nbytes ? store_put(t, STORE_SEGMENTS, k, kl, c.bits, c.nbytes)
                      : store_del(t, STORE_SEGMENTS, k, kl);
        if (!rc)
            rc = segbits_note(t, x.ids[i], il, c.bits, c.nbytes);
    }
    free(x.ids);
    if (rc)
        return rc;
    if (seen > 0)
        memcpy(cursor, last, sizeof last);
    return seen;
}

/* ---- queries ------------------------------------------------------------------------ */

static int slot_for(struct store_txn *t, const char *id, const char **state)
{
    static __thread struct segidx_slot s;
    int slot = segidx_slot_of(t, id, &s);
    if (slot >= 0 && state)
        *state = !strcmp(s.state, "ready") ? "ready" : "building";
    return slot;
}

int segments_size(struct store *st, const char *id, uint64_t *count, const char **state)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    int slot = slot_for(t, id, state);
    if (slot < 0) {
        store_txn_end(t);
        return ERR_NOTFOUND;
    }
    rc = segidx_count(t, slot, count);
    if (rc == ERR_NOTFOUND) {
        *count = 0;
        rc = 0;
    }
    store_txn_end(t);
    return rc;
}

struct overlap_ctx {
    int a, b;
    uint64_t n;
};

static int overlap_cb(void *ud, const char *id, size_t idlen, const struct segidx_cust *c)
{
    (void)id;
    (void)idlen;
    struct overlap_ctx *x = ud;
    x->n += segidx_has(c, x->a) && segidx_has(c, x->b);
    return 0;
}

int segments_overlap(struct store *st, const char *a, const char *b, int scan, uint64_t *count,
                     const char **by)
{
    *count = 0;
    *by = "scan";
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    int sa = slot_for(t, a, NULL), sb = slot_for(t, b, NULL);
    if (sa < 0 || sb < 0) {
        store_txn_end(t);
        return ERR_NOTFOUND;
    }
    if (!scan) {
        int both[2] = { sa, sb };
        struct segbits_expr e = { .all = both, .nall = 2 };
        if (segbits_count(&e, count) == 0) {
            store_txn_end(t);
            *by = "view";
            return 0;
        }
    }
    struct overlap_ctx x = { sa, sb, 0 };
    char last[132];
    long n = segidx_scan(t, "", LONG_MAX, overlap_cb, &x, last);
    store_txn_end(t);
    *count = x.n;
    return n < 0 ? (int)n : 0;
}

struct page_ctx {
    int slot, limit, n, more;
    json_t *ids;
    char last[132];
};

static int page_cb(void *ud, const char *id, size_t idlen, const struct segidx_cust *c)
{
    struct page_ctx *x = ud;
    if (!segidx_has(c, x->slot))
        return 0;
    if (x->n >= x->limit) { /* one more member exists: there is a next page */
        x->more = 1;
        return 1;
    }
    json_array_append_new(x->ids, json_stringn(id, idlen));
    memcpy(x->last, id, idlen);
    x->last[idlen] = 0;
    x->n++;
    return 0;
}

int segments_members_page(struct store *st, const char *id, const char *after, int limit,
                          json_t *ids, char *next)
{
    next[0] = 0;
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    int slot = slot_for(t, id, NULL);
    if (slot < 0) {
        store_txn_end(t);
        return ERR_NOTFOUND;
    }
    struct page_ctx x = { slot, limit, 0, 0, ids, "" };
    char last[132];
    long n = segidx_scan(t, after ? after : "", LONG_MAX, page_cb, &x, last);
    store_txn_end(t);
    if (n < 0)
        return (int)n;
    if (x.more)
        memcpy(next, x.last, sizeof x.last);
    return 0;
}
