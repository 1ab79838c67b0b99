/*
 * segments_index.c — the membership index in STORE_SEGMENTS (key layout in
 * segments.h): customer records, member bitmaps, exact counts, the write
 * batch that keeps them in step with profile and stats writes, and the
 * read side (sizes, overlaps, member pages).
 *
 * Why bitmaps of ordinals and not one record per (segment, customer): a
 * new profile joins ~20% of 200 typical segments, and 40 B-tree inserts
 * per profile would make every write and every import several times
 * slower and the store gigabytes larger.  A 1 KiB bitmap covers 8192
 * customers; a write batch (an import block, an event chunk) touches each
 * bitmap once however many of its customers change, and a customer's own
 * record holds its segments as a bitset over slots, so decide reads one
 * value for p.segments.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "store/record.h"
#include "store/store.h"
#include "base/clock.h"
#include "base/err.h"
#include "codec/codec.h"
#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES (SEGMENTS_CHUNK_BITS / 8)

/* ---- keys ------------------------------------------------------------------ */

static size_t key_cust(unsigned char *k, const char *cust, size_t clen)
{
    k[0] = 'c';
    memcpy(k + 1, cust, clen);
    return clen + 1;
}

static void key_ord(unsigned char k[5], uint32_t ord)
{
    k[0] = 'o';
    store_be32(ord, k + 1);
}

static void key_chunk(unsigned char k[7], int slot, uint32_t no)
{
    k[0] = 'm';
    k[1] = (unsigned char)(slot >> 8);
    k[2] = (unsigned char)slot;
    store_be32(no, k + 3);
}

static void key_slot(unsigned char k[3], char tag, int slot)
{
    k[0] = (unsigned char)tag;
    k[1] = (unsigned char)(slot >> 8);
    k[2] = (unsigned char)slot;
}

/* ---- customer records ------------------------------------------------------ */

int segidx_cust_read(struct store_txn *t, const char *cust, size_t clen, struct segidx_cust *c)
{
    c->found = 0;
    c->ord = 0;
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
    if (vl < 4)
        return 0; /* unreadable: treated as a member of nothing, rewritten on change */
    c->found = 1;
    c->ord = store_get_be32(v);
    c->nbytes = (uint32_t)(vl - 4 > sizeof c->bits ? sizeof c->bits : vl - 4);
    memcpy(c->bits, (const unsigned char *)v + 4, c->nbytes);
    return 0;
}

static int cust_slot(const struct segidx_cust *c, int slot)
{
    return (uint32_t)slot / 8 < c->nbytes && (c->bits[slot / 8] >> (slot % 8)) & 1;
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
        if (cust_slot(&c, s) && g->slot_seg[s] >= 0)
            json_array_append_new(arr, json_string(g->segs[g->slot_seg[s]].id));
    segments_gen_release(g);
    return arr;
}

const char *segidx_ord_id(struct store_txn *t, uint32_t ord, size_t *len)
{
    unsigned char k[5];
    key_ord(k, ord);
    const void *v;
    if (store_get(t, STORE_SEGMENTS, k, 5, &v, len))
        return NULL;
    return v;
}

uint32_t segidx_max_ord(struct store_txn *t)
{
    const void *v;
    size_t vl;
    if (store_get(t, STORE_SEGMENTS, "#ord", 4, &v, &vl) || vl != 4)
        return 0;
    return store_get_be32(v);
}

/* ---- the write batch --------------------------------------------------------- */

struct chunk_ent {
    uint32_t no;
    uint16_t slot;
    uint8_t used, dirty;
    unsigned char *bits;
};

static size_t chunk_hash(int slot, uint32_t no)
{
    uint64_t h = ((uint64_t)(unsigned)slot << 32 | no) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20);
}

static int chunk_grow(struct segments_batch *b)
{
    size_t nc = b->chcap ? b->chcap * 2 : 64;
    struct chunk_ent *n = calloc(nc, sizeof *n);
    if (!n)
        return ERR_NOMEM;
    for (size_t i = 0; i < b->chcap; i++) {
        if (!b->ch[i].used)
            continue;
        size_t h = chunk_hash(b->ch[i].slot, b->ch[i].no) & (nc - 1);
        while (n[h].used)
            h = (h + 1) & (nc - 1);
        n[h] = b->ch[i];
    }
    free(b->ch);
    b->ch = n;
    b->chcap = nc;
    return 0;
}

/* The batch's copy of a member bitmap (read from the store on first use). */
static unsigned char *chunk_get(struct segments_batch *b, int slot, uint32_t no, int *rc)
{
    *rc = 0;
    if ((b->chn + 1) * 2 > b->chcap && (*rc = chunk_grow(b)))
        return NULL;
    size_t mask = b->chcap - 1, h = chunk_hash(slot, no) & mask;
    while (b->ch[h].used) {
        if (b->ch[h].slot == slot && b->ch[h].no == no)
            return b->ch[h].bits;
        h = (h + 1) & mask;
    }
    unsigned char *bits = calloc(1, CHUNK_BYTES);
    if (!bits) {
        *rc = ERR_NOMEM;
        return NULL;
    }
    unsigned char k[7];
    key_chunk(k, slot, no);
    const void *v;
    size_t vl;
    int r = store_get(b->t, STORE_SEGMENTS, k, 7, &v, &vl);
    if (r == 0)
        memcpy(bits, v, vl < CHUNK_BYTES ? vl : CHUNK_BYTES);
    else if (r != ERR_NOTFOUND) {
        free(bits);
        *rc = r;
        return NULL;
    }
    b->ch[h] = (struct chunk_ent){ no, (uint16_t)slot, 1, 0, bits };
    b->chn++;
    return bits;
}

int segidx_member(struct segments_batch *b, int slot, uint32_t ord, int on)
{
    int rc;
    uint32_t no = ord / SEGMENTS_CHUNK_BITS, bit = ord % SEGMENTS_CHUNK_BITS;
    unsigned char *bits = chunk_get(b, slot, no, &rc);
    if (!bits)
        return rc;
    unsigned char m = (unsigned char)(1u << (bit % 8));
    int was = (bits[bit / 8] & m) != 0;
    if (was == on)
        return 0;
    if (on)
        bits[bit / 8] |= m;
    else
        bits[bit / 8] &= (unsigned char)~m;
    size_t h = chunk_hash(slot, no) & (b->chcap - 1);
    while (!(b->ch[h].slot == slot && b->ch[h].no == no))
        h = (h + 1) & (b->chcap - 1);
    b->ch[h].dirty = 1;
    if (!b->listed[slot]) {
        b->listed[slot] = 1;
        b->dslots[b->nd++] = (uint16_t)slot;
    }
    b->delta[slot] += on ? 1 : -1;
    return 0;
}

int segidx_new_ord(struct segments_batch *b, uint32_t *ord)
{
    if (!b->ord_loaded) {
        b->next_ord = segidx_max_ord(b->t) + 1;
        b->ord_loaded = true;
    }
    if (b->next_ord == UINT32_MAX)
        return ERR_FULL;
    *ord = b->next_ord++;
    b->ord_dirty = true;
    return 0;
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
    int rc;
    uint32_t ord = c->ord;
    if (!c->found && any && (rc = segidx_new_ord(b, &ord)))
        return rc;
    for (size_t w = 0; w < g->nw; w++) {
        uint64_t d = out[w] ^ prev[w];
        while (d) {
            int j = (int)(w * 64) + __builtin_ctzll(d);
            d &= d - 1;
            if ((rc = segidx_member(b, g->segs[j].slot, ord, segbit_get(out, j))))
                return rc;
        }
    }
    unsigned char k[256];
    if (clen > 200)
        return ERR_TOOBIG;
    size_t kl = key_cust(k, cust, clen);
    unsigned char ok[5];
    key_ord(ok, ord);
    if (!any) {
        rc = store_del(b->t, STORE_SEGMENTS, k, kl);
        if (rc == 0 || rc == ERR_NOTFOUND)
            rc = store_del(b->t, STORE_SEGMENTS, ok, 5);
        return rc == ERR_NOTFOUND ? 0 : rc;
    }
    unsigned char val[4 + SEGMENTS_SLOTS / 8];
    memset(val, 0, sizeof val);
    store_be32(ord, val);
    size_t n = 0;
    for (int j = 0; j < g->nseg; j++)
        if (segbit_get(out, j)) {
            int s = g->segs[j].slot;
            val[4 + s / 8] |= (unsigned char)(1u << (s % 8));
            if ((size_t)s / 8 + 1 > n)
                n = (size_t)s / 8 + 1;
        }
    if ((rc = store_put(b->t, STORE_SEGMENTS, k, kl, val, 4 + n)))
        return rc;
    if (!c->found)
        rc = store_put(b->t, STORE_SEGMENTS, ok, 5, cust, clen);
    return rc;
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
    for (size_t i = 0; i < b->chcap; i++)
        free(b->ch[i].bits);
    free(b->ch);
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
    for (size_t i = 0; i < b->chcap && !rc; i++) {
        struct chunk_ent *e = &b->ch[i];
        if (!e->used || !e->dirty)
            continue;
        unsigned char k[7];
        key_chunk(k, e->slot, e->no);
        bool zero = true;
        for (size_t j = 0; j < CHUNK_BYTES && zero; j += 8) {
            uint64_t w;
            memcpy(&w, e->bits + j, 8);
            zero = w == 0;
        }
        if (zero) {
            rc = store_del(b->t, STORE_SEGMENTS, k, 7);
            if (rc == ERR_NOTFOUND)
                rc = 0;
        } else {
            rc = store_put(b->t, STORE_SEGMENTS, k, 7, e->bits, CHUNK_BYTES);
        }
    }
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
    if (!rc && b->ord_dirty) {
        unsigned char val[4];
        store_be32(b->next_ord - 1, val);
        rc = store_put(b->t, STORE_SEGMENTS, "#ord", 4, val, 4);
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
    /* a batch without a generation: bitmaps and counts only */
    struct segments_batch *b = calloc(1, sizeof *b);
    if (!b)
        return ERR_NOMEM;
    b->t = wt;
    long removed = 0;
    for (int s = 0; s < SEGMENTS_SLOTS && !rc; s++)
        if (cust_slot(&c, s)) {
            rc = segidx_member(b, s, c.ord, 0);
            removed++;
        }
    unsigned char k[256], ok[5];
    size_t kl = key_cust(k, cust, clen);
    key_ord(ok, c.ord);
    if (!rc && !(rc = store_del(wt, STORE_SEGMENTS, k, kl))) {
        removed++;
        int r = store_del(wt, STORE_SEGMENTS, ok, 5);
        removed += r == 0;
        if (r && r != ERR_NOTFOUND)
            rc = r;
    }
    if (rc) {
        segments_batch_abort(b);
        return rc;
    }
    rc = segments_batch_end(b);
    return rc ? rc : removed;
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

/* ---- chunks ---------------------------------------------------------------------- */

const unsigned char *segidx_chunk(struct store_txn *t, int slot, uint32_t no)
{
    unsigned char k[7];
    key_chunk(k, slot, no);
    const void *v;
    size_t vl;
    if (store_get(t, STORE_SEGMENTS, k, 7, &v, &vl) || vl != CHUNK_BYTES)
        return NULL;
    return v;
}

struct chunks_ctx {
    segidx_chunk_fn fn;
    void *ud;
};

static int chunks_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct chunks_ctx *x = ud;
    if (klen != 7 || vlen != CHUNK_BYTES)
        return 0;
    return x->fn(x->ud, store_get_be32((const unsigned char *)key + 3), val);
}

int segidx_chunks(struct store_txn *t, int slot, uint32_t from, segidx_chunk_fn fn, void *ud)
{
    unsigned char prefix[3], start[7];
    key_slot(prefix, 'm', slot);
    key_chunk(start, slot, from);
    struct chunks_ctx x = { fn, ud };
    return store_scan(t, STORE_SEGMENTS, prefix, 3, start, 7, chunks_cb, &x);
}

/* Emptying a slot: clear its bit in each member's record, then drop the
 * bitmap.  The members are found from the bitmaps themselves. */
struct drain_ctx {
    uint32_t no;
    unsigned char bits[CHUNK_BYTES];
    int found;
};

static int first_chunk_cb(void *ud, uint32_t no, const unsigned char *bits)
{
    struct drain_ctx *x = ud;
    x->no = no;
    memcpy(x->bits, bits, CHUNK_BYTES);
    x->found = 1;
    return 1;
}

long segidx_drain_slot(struct store_txn *t, int slot, long max)
{
    long done = 0;
    while (done < max) {
        struct drain_ctx x = { 0 };
        int rc = segidx_chunks(t, slot, 0, first_chunk_cb, &x);
        if (rc)
            return rc;
        if (!x.found)
            break;
        for (uint32_t i = 0; i < SEGMENTS_CHUNK_BITS; i++) {
            if (!(x.bits[i / 8] >> (i % 8) & 1))
                continue;
            uint32_t ord = x.no * SEGMENTS_CHUNK_BITS + i;
            size_t il;
            const char *idp = segidx_ord_id(t, ord, &il);
            if (!idp)
                continue;
            char id[256];
            if (il >= sizeof id)
                continue;
            memcpy(id, idp, il);
            struct segidx_cust c;
            if ((rc = segidx_cust_read(t, id, il, &c)))
                return rc;
            if (!c.found || c.ord != ord || !cust_slot(&c, slot))
                continue;
            c.bits[slot / 8] &= (unsigned char)~(1u << (slot % 8));
            while (c.nbytes && !c.bits[c.nbytes - 1])
                c.nbytes--;
            unsigned char k[256];
            size_t kl = key_cust(k, id, il);
            if (!c.nbytes) {
                unsigned char ok[5];
                key_ord(ok, ord);
                if ((rc = store_del(t, STORE_SEGMENTS, k, kl)) ||
                    ((rc = store_del(t, STORE_SEGMENTS, ok, 5)) && rc != ERR_NOTFOUND))
                    return rc;
            } else {
                unsigned char val[4 + SEGMENTS_SLOTS / 8];
                store_be32(ord, val);
                memcpy(val + 4, c.bits, c.nbytes);
                if ((rc = store_put(t, STORE_SEGMENTS, k, kl, val, 4 + c.nbytes)))
                    return rc;
            }
            done++;
        }
        unsigned char k[7];
        key_chunk(k, slot, x.no);
        if ((rc = store_del(t, STORE_SEGMENTS, k, 7)))
            return rc;
    }
    return done;
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
    struct store_txn *t;
    int other;
    uint64_t n;
};

static int overlap_cb(void *ud, uint32_t no, const unsigned char *bits)
{
    struct overlap_ctx *x = ud;
    const unsigned char *o = segidx_chunk(x->t, x->other, no);
    if (!o)
        return 0;
    for (size_t j = 0; j < CHUNK_BYTES; j += 8) {
        uint64_t a, b;
        memcpy(&a, bits + j, 8);
        memcpy(&b, o + j, 8);
        x->n += (uint64_t)__builtin_popcountll(a & b);
    }
    return 0;
}

int segments_overlap(struct store *st, const char *a, const char *b, uint64_t *count)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    int sa = slot_for(t, a, NULL), sb = slot_for(t, b, NULL);
    if (sa < 0 || sb < 0) {
        store_txn_end(t);
        return ERR_NOTFOUND;
    }
    struct overlap_ctx x = { t, sb, 0 };
    rc = segidx_chunks(t, sa, 0, overlap_cb, &x);
    store_txn_end(t);
    *count = x.n;
    return rc;
}

struct page_ctx {
    struct store_txn *t;
    uint64_t after;
    int limit, n;
    json_t *ids;
    uint64_t last;
    int more;
};

static int page_cb(void *ud, uint32_t no, const unsigned char *bits)
{
    struct page_ctx *x = ud;
    uint64_t base = (uint64_t)no * SEGMENTS_CHUNK_BITS;
    for (uint32_t i = 0; i < SEGMENTS_CHUNK_BITS; i++) {
        if (!(bits[i / 8] >> (i % 8) & 1) || base + i <= x->after)
            continue;
        if (x->n >= x->limit) {
            x->more = 1;
            return 1;
        }
        size_t il;
        const char *id = segidx_ord_id(x->t, (uint32_t)(base + i), &il);
        if (!id)
            continue;
        json_array_append_new(x->ids, json_stringn(id, il));
        x->n++;
        x->last = base + i;
    }
    return 0;
}

int segments_members_page(struct store *st, const char *id, uint64_t cursor, int limit, json_t *ids,
                          uint64_t *next)
{
    *next = 0;
    struct store_txn *t;
    int rc = store_rtxn_begin(st, &t);
    if (rc)
        return rc;
    int slot = slot_for(t, id, NULL);
    if (slot < 0) {
        store_txn_end(t);
        return ERR_NOTFOUND;
    }
    struct page_ctx x = { t, cursor, limit, 0, ids, 0, 0 };
    rc = segidx_chunks(t, slot, (uint32_t)(cursor / SEGMENTS_CHUNK_BITS), page_cb, &x);
    store_txn_end(t);
    if (!rc && x.more)
        *next = x.last;
    return rc;
}
