/* throttle.c — one counter record per customer, clock buckets for
 * campaign-wide budgets, exact reservation. */
#include "engine/throttle.h"
#include "base/err.h"
#include "base/tz.h"
#include <stdlib.h>
#include <string.h>

/* --- the customer record ---------------------------------------------
 * "<customer>\0s" → msgpack map { "c<campaign>": [t...], "h<channel>": [t...],
 * "g": [t...] }, each list oldest first.  One read gives every count a
 * decide needs for that customer; one write records a served offer. */

#define MAX_ENTRIES 1024            /* campaigns + channels remembered per customer */
#define MAX_AGE (366LL * 86400)     /* the longest window a cap may have */

static int cust_key(char *key, size_t cap, const char *cust)
{
    size_t cl = strlen(cust);
    if (cl + 2 > cap)
        return -1;
    memcpy(key, cust, cl);
    key[cl] = 0;
    key[cl + 1] = 's';
    return (int)(cl + 2);
}

static int pool_reserve(struct throttle_cust *tc, size_t more)
{
    if (tc->npool + more <= tc->cappool)
        return 0;
    size_t cap = tc->cappool ? tc->cappool : 64;
    while (cap < tc->npool + more)
        cap *= 2;
    int64_t *p = realloc(tc->pool, cap * sizeof *p);
    if (!p)
        return ERR_NOMEM;
    tc->pool = p;
    tc->cappool = cap;
    return 0;
}

static struct throttle_entry *entry_add(struct throttle_cust *tc, const char *key, size_t kl)
{
    if (kl >= sizeof tc->e[0].key)
        return NULL;
    if (tc->n == tc->cap) {
        int cap = tc->cap ? tc->cap * 2 : 8;
        struct throttle_entry *e = realloc(tc->e, (size_t)cap * sizeof *e);
        if (!e)
            return NULL;
        tc->e = e;
        tc->cap = cap;
    }
    struct throttle_entry *e = &tc->e[tc->n++];
    memcpy(e->key, key, kl);
    e->key[kl] = 0;
    e->off = tc->npool;
    e->ns = 0;
    return e;
}

/* Parse the record; a malformed one reads as empty (counters are advisory
 * to nobody: better to restart counting than to refuse every offer). */
static void cust_parse(struct throttle_cust *tc, const unsigned char *p, size_t len)
{
    size_t i = 0;
    uint32_t n;
    if (len < 1)
        return;
    if ((p[0] & 0xf0) == 0x80) {
        n = p[0] & 0x0f;
        i = 1;
    } else if (p[0] == 0xde && len >= 3) {
        n = (uint32_t)p[1] << 8 | p[2];
        i = 3;
    } else {
        return;
    }
    for (uint32_t k = 0; k < n && i < len; k++) {
        size_t sl;
        if ((p[i] & 0xe0) == 0xa0) {
            sl = p[i] & 0x1f;
            i++;
        } else if (p[i] == 0xd9 && i + 2 <= len) {
            sl = p[i + 1];
            i += 2;
        } else {
            goto bad;
        }
        if (i + sl > len)
            goto bad;
        struct throttle_entry *e = entry_add(tc, (const char *)p + i, sl);
        i += sl;
        if (!e || i >= len)
            goto bad;
        uint32_t m;
        if ((p[i] & 0xf0) == 0x90) {
            m = p[i] & 0x0f;
            i++;
        } else if (p[i] == 0xdc && i + 3 <= len) {
            m = (uint32_t)p[i + 1] << 8 | p[i + 2];
            i += 3;
        } else {
            goto bad;
        }
        if (m > THROTTLE_MAX_STAMPS || pool_reserve(tc, m))
            goto bad;
        for (uint32_t j = 0; j < m; j++) {
            int64_t v;
            if (i < len && p[i] <= 0x7f) {
                v = p[i];
                i++;
            } else if (i + 9 <= len && (p[i] == 0xd3 || p[i] == 0xcf)) {
                v = (int64_t)store_get_be64(p + i + 1);
                i += 9;
            } else if (i + 5 <= len && (p[i] == 0xd2 || p[i] == 0xce)) {
                uint32_t u = store_get_be32(p + i + 1);
                v = p[i] == 0xd2 ? (int64_t)(int32_t)u : (int64_t)u;
                i += 5;
            } else {
                goto bad;
            }
            tc->pool[tc->npool++] = v;
            e->ns++;
        }
    }
    return;
bad:
    tc->n = 0;
    tc->npool = 0;
}

int throttle_cust_load(struct store_txn *t, const char *cust, struct throttle_cust *tc)
{
    tc->n = 0; /* capacity is kept: a reused record parses without allocating */
    tc->npool = 0;
    char key[300];
    int kl = cust_key(key, sizeof key, cust);
    if (kl < 0)
        return ERR_TOOBIG;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_COUNTERS, key, (size_t)kl, &v, &vl);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    cust_parse(tc, v, vl);
    return 0;
}

void throttle_cust_free(struct throttle_cust *tc)
{
    free(tc->e);
    free(tc->pool);
    memset(tc, 0, sizeof *tc);
}

static const struct throttle_entry *entry_find(const struct throttle_cust *tc, char kind,
                                               const char *name)
{
    for (int i = 0; i < tc->n; i++)
        if (tc->e[i].key[0] == kind && !strcmp(tc->e[i].key + 1, name ? name : ""))
            return &tc->e[i];
    return NULL;
}

static long count_since(const int64_t *s, int n, int64_t since)
{
    long c = 0;
    for (int i = n - 1; i >= 0 && s[i] > since; i--)
        c++;
    return c;
}

static long entry_count(const struct throttle_cust *tc, const struct throttle_entry *e,
                        const struct rules_cap *w, int64_t now)
{
    if (!e)
        return 0;
    return w->unit == 'L' ? e->ns : count_since(tc->pool + e->off, e->ns, now - w->secs);
}

static int max_limit(const struct rules_caps *c)
{
    long m = 0;
    for (int i = 0; i < c->n; i++)
        if (c->w[i].limit > m)
            m = c->w[i].limit;
    return (int)(m > THROTTLE_MAX_STAMPS ? THROTTLE_MAX_STAMPS : m);
}

/* --- campaign-wide buckets ------------------------------------------- */

static int total_key(char *key, const char *camp, char unit, int64_t bucket)
{
    size_t cl = strlen(camp);
    key[0] = 1;
    key[1] = 't';
    memcpy(key + 2, camp, cl);
    key[2 + cl] = 0;
    key[3 + cl] = unit;
    store_be64((uint64_t)bucket, (unsigned char *)key + 4 + cl);
    return (int)(12 + cl);
}

static long bucket_get(struct store_txn *t, const char *key, int klen)
{
    const void *v;
    size_t vl;
    if (store_get(t, STORE_COUNTERS, key, (size_t)klen, &v, &vl) || vl != 8)
        return 0;
    return (long)store_get_be64(v);
}

struct bucket_sum {
    size_t plen;   /* key length without the bucket number */
    uint64_t last; /* the current bucket */
    long sum;
};

static int bucket_sum_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct bucket_sum *b = ud;
    if (klen != b->plen + 8 || vlen != 8)
        return 0;
    if (store_get_be64((const unsigned char *)key + b->plen) > b->last)
        return 1;
    b->sum += (long)store_get_be64(val);
    return 0;
}

/* Sum of the window's buckets: one range scan over the bucket keys (which
 * sort by bucket number), so a "720h" window costs what a "1d" one does
 * and no hour of it is skipped. */
static long total_count(struct store_txn *t, const char *camp, const struct rules_cap *w, int64_t now)
{
    char key[160];
    if (w->unit == 'L')
        return bucket_get(t, key, total_key(key, camp, 'L', 0));
    char u = w->unit == 'h' ? 'h' : 'd'; /* w->n counts days for 'd' and 'w' */
    int64_t cur = now / (u == 'h' ? 3600 : 86400);
    int kl = total_key(key, camp, u, cur - w->n + 1);
    struct bucket_sum b = { (size_t)kl - 8, (uint64_t)cur, 0 };
    if (store_scan(t, STORE_COUNTERS, key, (size_t)kl - 8, key, (size_t)kl, bucket_sum_cb, &b))
        return 0;
    return b.sum;
}

static int bucket_inc(struct store_txn *t, const char *camp, char unit, int64_t bucket)
{
    char key[160];
    int kl = total_key(key, camp, unit, bucket);
    unsigned char v[8];
    store_be64((uint64_t)bucket_get(t, key, kl) + 1, v);
    return store_put(t, STORE_COUNTERS, key, (size_t)kl, v, 8);
}

/* --- public ----------------------------------------------------------- */

static const int64_t std_windows[4] = { 3600, 86400, 7 * 86400, 30 * 86400 };

int throttle_read_shared(const struct throttle_cust *tc, const struct rules_channel *ch,
                         int64_t now, struct throttle_counts *out)
{
    memset(out, 0, sizeof *out);
    if (ch && ch->policy.n) {
        const struct throttle_entry *e = entry_find(tc, 'h', ch->name);
        for (int i = 0; i < ch->policy.n; i++)
            out->chan[i] = entry_count(tc, e, &ch->policy.w[i], now);
    }
    const struct throttle_entry *g = entry_find(tc, 'g', NULL);
    if (g)
        out->global_day = count_since(tc->pool + g->off, g->ns, now - 86400);
    return 0;
}

int throttle_read(struct store_txn *t, const struct throttle_cust *tc,
                  const struct rules_campaign *c, const struct rules_channel *ch, int64_t now,
                  struct throttle_counts *out, const struct throttle_counts *shared)
{
    if (shared)
        *out = *shared;
    else
        throttle_read_shared(tc, ch, now, out);
    memset(out->cust, 0, sizeof out->cust);
    memset(out->total, 0, sizeof out->total);
    memset(out->cust_std, 0, sizeof out->cust_std);
    const struct throttle_entry *e = entry_find(tc, 'c', c->id);
    for (int i = 0; i < c->cust_caps.n; i++)
        out->cust[i] = entry_count(tc, e, &c->cust_caps.w[i], now);
    for (int i = 0; e && i < 4; i++)
        out->cust_std[i] = count_since(tc->pool + e->off, e->ns, now - std_windows[i]);
    if (strlen(c->id) < 140)
        for (int i = 0; i < c->total_caps.n; i++)
            out->total[i] = total_count(t, c->id, &c->total_caps.w[i], now);
    return 0;
}

int throttle_check(const struct throttle_counts *n, const struct rules_campaign *c,
                   const struct rules_channel *ch, long global_cap, const char **why)
{
    static __thread char reason[64];
    for (int i = 0; i < c->cust_caps.n; i++)
        if (n->cust[i] >= c->cust_caps.w[i].limit) {
            if (why) {
                snprintf(reason, sizeof reason, "customer %s", c->cust_caps.w[i].label);
                *why = reason;
            }
            return ERR_CAPPED;
        }
    for (int i = 0; i < c->total_caps.n; i++)
        if (n->total[i] >= c->total_caps.w[i].limit) {
            if (why) {
                snprintf(reason, sizeof reason, "total %s", c->total_caps.w[i].label);
                *why = reason;
            }
            return ERR_CAPPED;
        }
    for (int i = 0; ch && i < ch->policy.n; i++)
        if (n->chan[i] >= ch->policy.w[i].limit) {
            if (why) {
                snprintf(reason, sizeof reason, "channel %s %s", ch->name, ch->policy.w[i].label);
                *why = reason;
            }
            return ERR_CAPPED;
        }
    if (global_cap > 0 && n->global_day >= global_cap) {
        if (why)
            *why = "global 1d";
        return ERR_CAPPED;
    }
    return 0;
}

int throttle_needed(const struct rules_campaign *c, const struct rules_channel *ch, long global_cap)
{
    return c->cust_caps.n || c->total_caps.n || (ch && ch->policy.n) || global_cap > 0 ||
           (c->hooks & HOOKS_BIT(HOOKS_THROTTLE));
}

/* Encode the record as it stands, dropping entries with nothing in the last
 * MAX_AGE before `now` and, past MAX_ENTRIES, the stalest ones. */
static int cust_encode(struct buf *out, struct throttle_cust *tc, int64_t now)
{
    /* live entries, stalest evicted past MAX_ENTRIES */
    int live = 0;
    for (int i = 0; i < tc->n; i++) {
        struct throttle_entry *e = &tc->e[i];
        e->keep = e->ns && tc->pool[e->off + (size_t)e->ns - 1] > now - MAX_AGE;
        live += e->keep;
    }
    while (live > MAX_ENTRIES) {
        int worst = -1;
        for (int i = 0; i < tc->n; i++) {
            struct throttle_entry *e = &tc->e[i];
            if (!e->keep)
                continue;
            if (worst < 0 || tc->pool[e->off + (size_t)e->ns - 1] <
                                 tc->pool[tc->e[worst].off + (size_t)tc->e[worst].ns - 1])
                worst = i;
        }
        tc->e[worst].keep = 0;
        live--;
    }
    /* size: header + per entry key + array header + stamps */
    size_t cap = 3;
    for (int i = 0; i < tc->n; i++)
        if (tc->e[i].keep)
            cap += 2 + sizeof tc->e[i].key + 3 + 9 * (size_t)tc->e[i].ns;
    buf_reset(out);
    if (buf_reserve(out, cap))
        return ERR_NOMEM;
    unsigned char *buf = (unsigned char *)out->p, *p = buf;
    if (live < 16) {
        *p++ = (unsigned char)(0x80 | live);
    } else {
        *p++ = 0xde;
        *p++ = (unsigned char)(live >> 8);
        *p++ = (unsigned char)live;
    }
    for (int i = 0; i < tc->n; i++) {
        const struct throttle_entry *e = &tc->e[i];
        if (!e->keep)
            continue;
        size_t kl = strlen(e->key);
        if (kl < 32) {
            *p++ = (unsigned char)(0xa0 | kl);
        } else {
            *p++ = 0xd9;
            *p++ = (unsigned char)kl;
        }
        memcpy(p, e->key, kl);
        p += kl;
        if (e->ns < 16) {
            *p++ = (unsigned char)(0x90 | e->ns);
        } else {
            *p++ = 0xdc;
            *p++ = (unsigned char)(e->ns >> 8);
            *p++ = (unsigned char)e->ns;
        }
        for (int j = 0; j < e->ns; j++) {
            *p++ = 0xd3;
            store_be64((uint64_t)tc->pool[e->off + (size_t)j], p);
            p += 8;
        }
    }
    out->len = (size_t)(p - buf);
    return 0;
}

/* What a served offer counts against: kind ('c' campaign, 'h' channel, 'g'
 * global), name, and how many of the newest stamps its caps need. */
struct add { char kind; const char *name; int keep; };

/* Count `now` in the parsed record: the entry's stamps move to the end of
 * the pool with `now` inserted in order (a clock that stepped back keeps
 * them sorted) and only the newest `keep` stay — what cust_encode writes
 * for an added entry, so the record is encoded once, when the reservation
 * ends, instead of encoded and parsed again for every offer. */
static int cust_count(struct throttle_cust *tc, const struct add *a, int64_t now)
{
    struct throttle_entry *e = (struct throttle_entry *)entry_find(tc, a->kind, a->name);
    if (!e) {
        char k[sizeof tc->e[0].key];
        size_t nl = a->name ? strlen(a->name) : 0;
        if (nl + 1 >= sizeof k)
            return ERR_TOOBIG;
        k[0] = a->kind;
        memcpy(k + 1, a->name ? a->name : "", nl);
        if (!(e = entry_add(tc, k, nl + 1)))
            return ERR_TOOBIG;
    }
    int ns = e->ns, keep = a->keep < 1 ? 1 : a->keep;
    if (pool_reserve(tc, (size_t)ns + 1))
        return ERR_NOMEM;
    const int64_t *s = tc->pool + e->off; /* valid after the reserve: it may move the pool */
    int64_t *d = tc->pool + tc->npool;
    int j = 0, k = 0;
    while (j < ns && s[j] <= now)
        d[k++] = s[j++];
    d[k++] = now;
    while (j < ns)
        d[k++] = s[j++];
    int from = k > keep ? k - keep : 0;
    e->off = tc->npool + (size_t)from;
    e->ns = k - from;
    tc->npool += (size_t)k;
    return 0;
}

int throttle_resv_begin(struct throttle_resv *r, struct store_txn *wt, const char *cust)
{
    r->wt = wt;
    r->cust = cust;
    r->dirty = 0;
    int rc = throttle_cust_load(wt, cust, &r->tc);
    r->loaded = rc == 0;
    return rc;
}

int throttle_resv_add(struct throttle_resv *r, const struct rules_campaign *c,
                      const struct rules_channel *ch, int64_t now, long global_cap, const char **why)
{
    if (!r->loaded)
        return ERR_INVAL;
    struct throttle_counts n;
    throttle_read(r->wt, &r->tc, c, ch, now, &n, NULL);
    int rc = throttle_check(&n, c, ch, global_cap, why);
    if (rc)
        return rc;
    struct add add[3];
    int nadd = 0;
    if (c->cust_caps.n || (c->hooks & HOOKS_BIT(HOOKS_THROTTLE))) { /* the hook reads counts */
        int keep = max_limit(&c->cust_caps);
        add[nadd++] = (struct add){ 'c', c->id, keep < 64 ? 64 : keep };
    }
    if (ch && ch->policy.n)
        add[nadd++] = (struct add){ 'h', ch->name, max_limit(&ch->policy) };
    if (global_cap > 0)
        add[nadd++] = (struct add){ 'g', NULL,
                                    (int)(global_cap > THROTTLE_MAX_STAMPS ? THROTTLE_MAX_STAMPS
                                                                            : global_cap) };
    /* counted in the parsed record, so the next offer of the request is
     * checked against it; encoded and written once, at the end */
    for (int a = 0; a < nadd; a++)
        if ((rc = cust_count(&r->tc, &add[a], now)))
            return rc;
    if (nadd) {
        r->dirty = 1;
        r->now = now;
    }
    if (c->total_caps.n) {
        int hour = 0, day = 0, life = 0;
        for (int i = 0; i < c->total_caps.n; i++) {
            char u = c->total_caps.w[i].unit;
            hour |= u == 'h';
            day |= u == 'd' || u == 'w';
            life |= u == 'L';
        }
        if (hour && (rc = bucket_inc(r->wt, c->id, 'h', now / 3600)))
            return rc;
        if (day && (rc = bucket_inc(r->wt, c->id, 'd', now / 86400)))
            return rc;
        if (life && (rc = bucket_inc(r->wt, c->id, 'L', 0)))
            return rc;
    }
    return 0;
}

int throttle_resv_end(struct throttle_resv *r)
{
    int rc = 0;
    if (r->dirty) {
        char key[300];
        int kl = cust_key(key, sizeof key, r->cust);
        if (kl < 0)
            rc = ERR_TOOBIG;
        else if (!(rc = cust_encode(&r->enc, &r->tc, r->now)))
            rc = store_put(r->wt, STORE_COUNTERS, key, (size_t)kl, r->enc.p, r->enc.len);
        r->dirty = 0;
    }
    return rc;
}

void throttle_resv_free(struct throttle_resv *r)
{
    throttle_cust_free(&r->tc);
    buf_free(&r->enc);
}

int throttle_reserve(struct store_txn *wt, const char *cust, const struct rules_campaign *c,
                     const struct rules_channel *ch, int64_t now, long global_cap,
                     const char **why)
{
    struct throttle_resv r = { 0 };
    int rc = throttle_resv_begin(&r, wt, cust);
    if (!rc)
        rc = throttle_resv_add(&r, c, ch, now, global_cap, why);
    if (!rc)
        rc = throttle_resv_end(&r);
    throttle_resv_free(&r);
    return rc;
}

int throttle_quiet(const struct rules_channel *ch, const char *tz, int64_t now)
{
    if (!ch || ch->quiet_from < 0)
        return 0;
    struct tm tm;
    if (tz_local(tz && *tz ? tz : "UTC", now, &tm) && tz_local("UTC", now, &tm))
        return 0;
    int h = tm.tm_hour, a = ch->quiet_from, b = ch->quiet_to;
    if (a == b)
        return 0;
    return a < b ? (h >= a && h < b) : (h >= a || h < b);
}

int64_t throttle_quiet_end(const struct rules_channel *ch, const char *tz, int64_t now)
{
    if (!ch || ch->quiet_from < 0 || !throttle_quiet(ch, tz, now))
        return 0;
    struct tm tm;
    if (tz_local(tz && *tz ? tz : "UTC", now, &tm) && tz_local("UTC", now, &tm))
        return 0;
    int64_t hour0 = now - tm.tm_min * 60 - tm.tm_sec;
    for (int k = 1; k <= 26; k++) {
        int64_t t = hour0 + (int64_t)k * 3600;
        if (!throttle_quiet(ch, tz, t))
            return t;
    }
    return now + 3600;
}
