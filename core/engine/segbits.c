/*
 * segbits.c — the segment view (see segbits.h): ordinals, per-slot bitmaps
 * over them, the rows written txns leave for the commit hook, and the
 * bitmap algebra of counts and member walks.
 *
 * Why plain word bitmaps and not roaring: Debian packages CRoaring
 * (libroaring-dev 0.2.66), but a roaring container changes its kind and
 * reallocates on writes, so lock-free readers would need a lock per
 * bitmap or copy-on-write of containers on every profile write; the
 * segments that matter for counts are large (a dense 1M-member segment
 * is 128 KB either way), and a plain word can be read and written
 * atomically.  Chunks of a bitmap that never had a member are not
 * allocated, which is the compression sparse segments need.
 */
#include "engine/segbits.h"
#include "store/store.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORDS (SEGBITS_CHUNK / 64)
#define MAXORD ((uint64_t)SEGBITS_CHUNK * SEGBITS_MAXCHUNKS)

static struct {
    struct store *st;
    int live, broken;               /* atomic */
    int foreign;                    /* atomic: another process wrote the store */
    uint64_t txnid;                 /* atomic: last commit applied */
    uint64_t **slot[SEGBITS_SLOTS]; /* per slot: chunk pointers (atomic), NULL = no member yet */
    int maxslot;                    /* slots below this may have bits */
    char **ids[SEGBITS_MAXCHUNKS];  /* ordinal → id (malloc'd), NULL = free */
    uint32_t nords;                 /* atomic: ordinals handed out */
    uint32_t *freel;                /* free ordinals */
    size_t nfree, capfree;
    uint32_t *tab;                  /* id → ordinal + 1, linear probing */
    size_t tabcap, tabn;
    pthread_rwlock_t idlock;        /* ids[] pointers: readers copy under it */
    uint64_t bytes_ids, bytes_bits, applied, build_rows;
    double build_s;
    uint64_t build_t0;
} V = { .idlock = PTHREAD_RWLOCK_INITIALIZER };

/* ---- ids and ordinals ----------------------------------------------------- */

static size_t home(const char *id, size_t il)
{
    uint64_t h = hash_fnv1a(id, il, HASH_FNV_INIT);
    h = (h ^ (uint64_t)il << 32) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (V.tabcap - 1);
}

static const char *id_at(uint32_t o)
{
    return V.ids[o / SEGBITS_CHUNK][o % SEGBITS_CHUNK];
}

static int same(const char *s, const char *id, size_t il)
{
    return s && !strncmp(s, id, il) && !s[il];
}

/* Position in the table of `id`, or of the empty entry where it would go. */
static size_t find(const char *id, size_t il)
{
    size_t m = V.tabcap - 1, i = home(id, il);
    while (V.tab[i] && !same(id_at(V.tab[i] - 1), id, il))
        i = (i + 1) & m;
    return i;
}

static int tab_grow(void)
{
    size_t ncap = V.tabcap ? V.tabcap * 2 : 1 << 16;
    uint32_t *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return ERR_NOMEM;
    uint32_t *ot = V.tab;
    size_t ocap = V.tabcap;
    V.tab = nt;
    V.tabcap = ncap;
    for (size_t k = 0; k < ocap; k++)
        if (ot[k]) {
            const char *s = id_at(ot[k] - 1);
            size_t i = home(s, strlen(s));
            while (V.tab[i])
                i = (i + 1) & (ncap - 1);
            V.tab[i] = ot[k];
        }
    free(ot);
    return 0;
}

/* Remove the entry at `i` (linear probing: later entries of the run move
 * back so that every lookup still finds them). */
static void tab_del(size_t i)
{
    size_t m = V.tabcap - 1, j = i;
    V.tab[i] = 0;
    for (;;) {
        j = (j + 1) & m;
        if (!V.tab[j])
            break;
        const char *s = id_at(V.tab[j] - 1);
        size_t k = home(s, strlen(s));
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            V.tab[i] = V.tab[j];
            V.tab[j] = 0;
            i = j;
        }
    }
    V.tabn--;
}

/* A new ordinal for `id` (inserted at table position `pos`). */
static int64_t ord_new(const char *id, size_t il, size_t pos)
{
    uint32_t o;
    if (V.nfree) {
        o = V.freel[--V.nfree];
    } else {
        if (V.nords >= MAXORD)
            return ERR_TOOBIG;
        o = V.nords;
    }
    char **c = V.ids[o / SEGBITS_CHUNK];
    if (!c) {
        if (!(c = calloc(SEGBITS_CHUNK, sizeof *c)))
            return ERR_NOMEM;
        V.bytes_ids += SEGBITS_CHUNK * sizeof *c;
        __atomic_store_n(&V.ids[o / SEGBITS_CHUNK], c, __ATOMIC_RELEASE);
    }
    char *s = malloc(il + 1);
    if (!s)
        return ERR_NOMEM;
    memcpy(s, id, il);
    s[il] = 0;
    pthread_rwlock_wrlock(&V.idlock);
    c[o % SEGBITS_CHUNK] = s;
    pthread_rwlock_unlock(&V.idlock);
    V.bytes_ids += il + 1;
    if (o == V.nords)
        __atomic_store_n(&V.nords, o + 1, __ATOMIC_RELEASE);
    V.tab[pos] = o + 1;
    V.tabn++;
    return o;
}

static int ord_free(uint32_t o, size_t pos)
{
    if (V.nfree == V.capfree) {
        size_t nc = V.capfree ? V.capfree * 2 : 4096;
        uint32_t *nf = realloc(V.freel, nc * sizeof *nf);
        if (!nf)
            return ERR_NOMEM;
        V.freel = nf;
        V.capfree = nc;
    }
    tab_del(pos);
    char **c = V.ids[o / SEGBITS_CHUNK];
    pthread_rwlock_wrlock(&V.idlock);
    char *s = c[o % SEGBITS_CHUNK];
    c[o % SEGBITS_CHUNK] = NULL;
    pthread_rwlock_unlock(&V.idlock);
    V.bytes_ids -= strlen(s) + 1;
    free(s);
    V.freel[V.nfree++] = o;
    return 0;
}

/* ---- applying a row ----------------------------------------------------------- */

static uint64_t *chunk_get(int s, uint32_t c, int make)
{
    uint64_t **cs = V.slot[s];
    if (!cs) {
        if (!make || !(cs = calloc(SEGBITS_MAXCHUNKS, sizeof *cs)))
            return NULL;
        V.bytes_bits += SEGBITS_MAXCHUNKS * sizeof *cs;
        __atomic_store_n(&V.slot[s], cs, __ATOMIC_RELEASE);
    }
    uint64_t *w = cs[c];
    if (!w) {
        if (!make || !(w = calloc(WORDS, sizeof *w)))
            return NULL;
        V.bytes_bits += WORDS * sizeof *w;
        __atomic_store_n(&cs[c], w, __ATOMIC_RELEASE);
    }
    return w;
}

/* The customer's record is now `row` (n bytes).  Writer side only. */
static int apply_row(const char *id, size_t il, const unsigned char *row, size_t n)
{
    while (n && !row[n - 1])
        n--;
    if ((V.tabn + 1) * 2 > V.tabcap) {
        int rc = tab_grow();
        if (rc)
            return rc;
    }
    size_t pos = find(id, il);
    int64_t o = V.tab[pos] ? (int64_t)V.tab[pos] - 1 : -1;
    if (o < 0 && !n)
        return 0;
    if (o < 0 && (o = ord_new(id, il, pos)) < 0)
        return (int)o;
    int top = (int)n * 8 > V.maxslot ? (int)n * 8 : V.maxslot;
    uint32_t c = (uint32_t)o / SEGBITS_CHUNK, wi = ((uint32_t)o % SEGBITS_CHUNK) / 64;
    uint64_t bit = 1ull << (o % 64);
    for (int s = 0; s < top; s++) {
        int want = (size_t)s / 8 < n && (row[s / 8] >> (s % 8)) & 1;
        uint64_t *w = chunk_get(s, c, want);
        if (!w) {
            if (want)
                return ERR_NOMEM;
            continue;
        }
        uint64_t cur = __atomic_load_n(&w[wi], __ATOMIC_RELAXED);
        uint64_t nv = want ? cur | bit : cur & ~bit;
        if (nv != cur)
            __atomic_store_n(&w[wi], nv, __ATOMIC_RELAXED);
    }
    if (top > V.maxslot)
        V.maxslot = top;
    return n ? 0 : ord_free((uint32_t)o, pos);
}

/* ---- pending rows of a write txn ------------------------------------------------- */

struct pending {
    unsigned char *p;
    size_t len, cap;
};

static void broken(int rc)
{
    if (!__atomic_exchange_n(&V.broken, 1, __ATOMIC_RELAXED))
        log_error("segments: the in-memory view stopped (queries scan the index until a restart)",
                  "err=\"%s\"", err_str(rc));
}

static void txn_hook(void *user, uint64_t txnid)
{
    struct pending *p = user;
    if (p && txnid && !__atomic_load_n(&V.broken, __ATOMIC_RELAXED)) {
        size_t off = 0;
        while (off + 4 <= p->len) {
            size_t il = (size_t)p->p[off] << 8 | p->p[off + 1];
            size_t n = (size_t)p->p[off + 2] << 8 | p->p[off + 3];
            const unsigned char *id = p->p + off + 4;
            int rc = apply_row((const char *)id, il, id + il, n);
            if (rc) {
                broken(rc);
                break;
            }
            V.applied++;
            off += 4 + il + n;
        }
    }
    if (p) {
        free(p->p);
        free(p);
    }
    if (txnid)
        __atomic_store_n(&V.txnid, txnid, __ATOMIC_RELEASE);
}

int segbits_note(struct store_txn *t, const char *id, size_t il, const unsigned char *row,
                 size_t n)
{
    if (!__atomic_load_n(&V.live, __ATOMIC_ACQUIRE) || __atomic_load_n(&V.broken, __ATOMIC_RELAXED))
        return 0;
    void **u = store_txn_user(t);
    if (!u)
        return 0;
    struct pending *p = *u;
    if (!p && !(p = *u = calloc(1, sizeof *p))) {
        broken(ERR_NOMEM);
        return ERR_NOMEM;
    }
    size_t need = 4 + il + n;
    if (il > 0xffff || n > 0xffff)
        return ERR_TOOBIG;
    if (p->len + need > p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 1024;
        while (nc < p->len + need)
            nc *= 2;
        unsigned char *np = realloc(p->p, nc);
        if (!np) {
            broken(ERR_NOMEM);
            return ERR_NOMEM;
        }
        p->p = np;
        p->cap = nc;
    }
    unsigned char *d = p->p + p->len;
    d[0] = (unsigned char)(il >> 8);
    d[1] = (unsigned char)il;
    d[2] = (unsigned char)(n >> 8);
    d[3] = (unsigned char)n;
    memcpy(d + 4, id, il);
    if (n)
        memcpy(d + 4 + il, row, n);
    p->len += need;
    return 0;
}

/* ---- build and stop --------------------------------------------------------------- */

static void free_all(void)
{
    for (int s = 0; s < SEGBITS_SLOTS; s++) {
        if (!V.slot[s])
            continue;
        for (int c = 0; c < SEGBITS_MAXCHUNKS; c++)
            free(V.slot[s][c]);
        free(V.slot[s]);
        V.slot[s] = NULL;
    }
    for (int c = 0; c < SEGBITS_MAXCHUNKS; c++) {
        if (!V.ids[c])
            continue;
        for (int i = 0; i < SEGBITS_CHUNK; i++)
            free(V.ids[c][i]);
        free(V.ids[c]);
        V.ids[c] = NULL;
    }
    free(V.freel);
    free(V.tab);
    V.freel = NULL;
    V.tab = NULL;
    V.nfree = V.capfree = V.tabcap = V.tabn = 0;
    V.nords = 0;
    V.maxslot = 0;
    V.bytes_ids = V.bytes_bits = V.applied = V.build_rows = 0;
}

int segbits_build_begin(struct store *st, struct store_txn *wt)
{
    (void)wt;
    free_all();
    V.st = st;
    __atomic_store_n(&V.live, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&V.broken, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&V.foreign, 0, __ATOMIC_RELAXED);
    V.build_t0 = clock_mono_ns();
    store_set_txn_hook(st, txn_hook);
    return tab_grow();
}

int segbits_build_row(const char *id, size_t il, const unsigned char *row, size_t n)
{
    V.build_rows++;
    return apply_row(id, il, row, n);
}

void segbits_build_done(int rc)
{
    V.build_s = (double)(clock_mono_ns() - V.build_t0) / 1e9;
    if (rc) {
        log_error("segments: building the in-memory view failed (queries scan the index)",
                  "err=\"%s\"", err_str(rc));
        store_set_txn_hook(V.st, NULL);
        free_all();
        return;
    }
    __atomic_store_n(&V.txnid, store_last_txnid(V.st), __ATOMIC_RELEASE);
    __atomic_store_n(&V.live, 1, __ATOMIC_RELEASE);
    log_info("segments: in-memory view built", "customers=%zu bytes=%llu seconds=%.3f", V.tabn,
             (unsigned long long)(V.bytes_ids + V.bytes_bits + V.tabcap * 4 + V.capfree * 4),
             V.build_s);
}

void segbits_stop(void)
{
    if (!V.st)
        return;
    store_set_txn_hook(V.st, NULL);
    __atomic_store_n(&V.live, 0, __ATOMIC_RELEASE);
    free_all();
    V.st = NULL;
}

int segbits_usable(void)
{
    if (!__atomic_load_n(&V.live, __ATOMIC_ACQUIRE) || __atomic_load_n(&V.broken, __ATOMIC_RELAXED))
        return 0;
    /* A commit of this process is between LMDB and the hook for a few
     * microseconds: wait for it (up to 100 ms, the thread may be
     * descheduled); a txn id that stays ahead is another process's write. */
    if (__atomic_load_n(&V.foreign, __ATOMIC_RELAXED))
        return 0;
    for (int i = 0; i < 1000; i++) {
        if (store_last_txnid(V.st) == __atomic_load_n(&V.txnid, __ATOMIC_ACQUIRE))
            return 1;
        struct timespec ts = { 0, 100000 };
        nanosleep(&ts, NULL);
    }
    if (!__atomic_exchange_n(&V.foreign, 1, __ATOMIC_RELAXED))
        log_warn("segments: another process wrote the store; overlaps and audiences scan the "
                 "index until a restart rebuilds the in-memory view",
                 "txnid=%llu", (unsigned long long)store_last_txnid(V.st));
    return 0;
}

/* ---- queries ----------------------------------------------------------------------- */

static int load_slots(const int *sl, int n, uint64_t ***out)
{
    int have = 0;
    for (int i = 0; i < n; i++) {
        out[i] = sl[i] >= 0 && sl[i] < SEGBITS_SLOTS
                     ? __atomic_load_n(&V.slot[sl[i]], __ATOMIC_ACQUIRE)
                     : NULL;
        have += out[i] != NULL;
    }
    return have;
}

/* Chunk `c` of each listed slot; @return how many are there. */
static int load_chunks(uint64_t ***s, int n, uint32_t c, const uint64_t **out)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        const uint64_t *w = s[i] ? __atomic_load_n(&s[i][c], __ATOMIC_ACQUIRE) : NULL;
        if (w)
            out[k++] = w;
    }
    return k;
}

static inline uint64_t ld(const uint64_t *w, int i)
{
    return __atomic_load_n(&w[i], __ATOMIC_RELAXED);
}

/* Walk the chunks of `e`: per chunk, the matching words go to word_fn. */
typedef int (*chunk_fn)(void *ud, uint32_t c, const uint64_t *words);

static int walk(const struct segbits_expr *e, chunk_fn fn, void *ud)
{
    if (!e->nany && !e->nall)
        return ERR_INVAL;
    if (!segbits_usable())
        return ERR_BUSY;
    int tot = e->nany + e->nall + e->nexcl;
    void *mem = malloc((size_t)tot * (sizeof(uint64_t **) + sizeof(uint64_t *)) + 1);
    if (!mem)
        return ERR_NOMEM;
    uint64_t ***s = mem;
    const uint64_t **w = (const uint64_t **)(s + tot);
    int rc = 0;
    int hany = load_slots(e->any, e->nany, s);
    int hall = load_slots(e->all, e->nall, s + e->nany);
    load_slots(e->excl, e->nexcl, s + e->nany + e->nall);
    if ((e->nany && !hany) || hall < e->nall)
        goto out; /* a clause no one can meet: nobody */
    uint32_t nch = (__atomic_load_n(&V.nords, __ATOMIC_ACQUIRE) + SEGBITS_CHUNK - 1) / SEGBITS_CHUNK;
    uint64_t words[WORDS];
    for (uint32_t c = 0; c < nch && !rc; c++) {
        const uint64_t **wa = w, **wl = w + e->nany, **wx = w + e->nany + e->nall;
        int na = load_chunks(s, e->nany, c, wa);
        int nl = load_chunks(s + e->nany, e->nall, c, wl);
        int nx = load_chunks(s + e->nany + e->nall, e->nexcl, c, wx);
        if ((e->nany && !na) || nl < e->nall)
            continue;
        uint64_t nz = 0;
        for (int i = 0; i < WORDS; i++) {
            uint64_t v = ~0ull;
            if (e->nany) {
                v = 0;
                for (int k = 0; k < na; k++)
                    v |= ld(wa[k], i);
            }
            for (int k = 0; k < nl && v; k++)
                v &= ld(wl[k], i);
            for (int k = 0; k < nx && v; k++)
                v &= ~ld(wx[k], i);
            words[i] = v;
            nz |= v;
        }
        if (nz)
            rc = fn(ud, c, words);
    }
out:
    free(mem);
    return rc < 0 ? rc : 0;
}

static int count_fn(void *ud, uint32_t c, const uint64_t *words)
{
    (void)c;
    uint64_t *n = ud;
    for (int i = 0; i < WORDS; i++)
        *n += (uint64_t)__builtin_popcountll(words[i]);
    return 0;
}

int segbits_count(const struct segbits_expr *e, uint64_t *count)
{
    *count = 0;
    return walk(e, count_fn, count);
}

struct mctx {
    segbits_member_fn fn;
    void *ud;
};

static int member_fn(void *ud, uint32_t c, const uint64_t *words)
{
    struct mctx *x = ud;
    int r = 0;
    pthread_rwlock_rdlock(&V.idlock);
    char **ids = __atomic_load_n(&V.ids[c], __ATOMIC_ACQUIRE);
    for (int i = 0; i < WORDS && !r && ids; i++) {
        uint64_t v = words[i];
        while (v && !r) {
            int b = __builtin_ctzll(v);
            v &= v - 1;
            const char *s = ids[i * 64 + b];
            if (s)
                r = x->fn(x->ud, s, strlen(s));
        }
    }
    pthread_rwlock_unlock(&V.idlock);
    return r;
}

int segbits_members(const struct segbits_expr *e, segbits_member_fn fn, void *ud)
{
    struct mctx x = { fn, ud };
    return walk(e, member_fn, &x);
}

struct rctx {
    const uint64_t *ranks;
    int k, next;
    uint64_t seen;          /* members before the current chunk */
    segbits_member_fn fn;
    void *ud;
};

static int rank_fn(void *ud, uint32_t c, const uint64_t *words)
{
    struct rctx *x = ud;
    int r = 0;
    pthread_rwlock_rdlock(&V.idlock);
    char **ids = __atomic_load_n(&V.ids[c], __ATOMIC_ACQUIRE);
    for (int i = 0; i < WORDS && !r && x->next < x->k; i++) {
        uint64_t v = words[i];
        uint64_t pc = (uint64_t)__builtin_popcountll(v);
        /* visit only the words holding a wanted rank */
        while (x->next < x->k && x->ranks[x->next] < x->seen + pc && !r) {
            uint64_t u = v;
            for (uint64_t j = x->ranks[x->next] - x->seen; j > 0; j--)
                u &= u - 1; /* drop the lower members of the word */
            const char *s = ids ? ids[i * 64 + __builtin_ctzll(u)] : NULL;
            if (s)
                r = x->fn(x->ud, s, strlen(s));
            x->next++;
        }
        x->seen += pc;
    }
    pthread_rwlock_unlock(&V.idlock);
    return x->next >= x->k ? (r ? r : 1) : r;
}

int segbits_at_ranks(const struct segbits_expr *e, const uint64_t *ranks, int k,
                     segbits_member_fn fn, void *ud)
{
    if (k <= 0)
        return 0;
    struct rctx x = { ranks, k, 0, 0, fn, ud };
    return walk(e, rank_fn, &x);
}

/* ---- figures ------------------------------------------------------------------------- */

void segbits_stats(struct segbits_stats *o)
{
    memset(o, 0, sizeof *o);
    o->live = __atomic_load_n(&V.live, __ATOMIC_ACQUIRE);
    o->broken = __atomic_load_n(&V.broken, __ATOMIC_RELAXED) ||
                __atomic_load_n(&V.foreign, __ATOMIC_RELAXED);
    o->ordinals = __atomic_load_n(&V.nords, __ATOMIC_ACQUIRE);
    /* the rest is written under the store's writer lock: read as is */
    o->customers = __atomic_load_n(&V.tabn, __ATOMIC_RELAXED);
    o->bytes = __atomic_load_n(&V.bytes_ids, __ATOMIC_RELAXED) +
               __atomic_load_n(&V.bytes_bits, __ATOMIC_RELAXED) +
               __atomic_load_n(&V.tabcap, __ATOMIC_RELAXED) * sizeof(uint32_t) +
               __atomic_load_n(&V.capfree, __ATOMIC_RELAXED) * sizeof(uint32_t);
    o->build_seconds = V.build_s;
    o->build_rows = V.build_rows;
    o->applied = __atomic_load_n(&V.applied, __ATOMIC_RELAXED);
}

void segbits_metrics(struct buf *out)
{
    struct segbits_stats s;
    segbits_stats(&s);
    buf_printf(out,
               "# HELP promod_segments_view_live 1 when overlaps and audiences are counted from "
               "the in-memory view.\n# TYPE promod_segments_view_live gauge\n"
               "promod_segments_view_live %d\n",
               s.live && !s.broken);
    buf_printf(out,
               "# HELP promod_segments_view_bytes Memory of the in-memory segment view.\n"
               "# TYPE promod_segments_view_bytes gauge\npromod_segments_view_bytes %llu\n",
               (unsigned long long)s.bytes);
    buf_printf(out,
               "# HELP promod_segments_view_customers Customers (in some segment) in the view.\n"
               "# TYPE promod_segments_view_customers gauge\npromod_segments_view_customers %llu\n",
               (unsigned long long)s.customers);
    buf_printf(out,
               "# HELP promod_segments_view_build_seconds Time the start-up build of the view "
               "took.\n# TYPE promod_segments_view_build_seconds gauge\n"
               "promod_segments_view_build_seconds %.6f\n",
               s.build_seconds);
    buf_printf(out,
               "# HELP promod_segments_view_rows_applied_total Customer rows applied after "
               "commits.\n# TYPE promod_segments_view_rows_applied_total counter\n"
               "promod_segments_view_rows_applied_total %llu\n",
               (unsigned long long)s.applied);
}
