/* throttle.c — rolling-window stamps, clock buckets, exact reservation. */
#include "throttle.h"
#include "err.h"
#include "tz.h"
#include <stdlib.h>
#include <string.h>

/* --- stamp lists: msgpack array of ints, oldest first ----------------- */

static int stamps_decode(const unsigned char *p, size_t len, int64_t *out, int max)
{
    if (len < 1)
        return 0;
    size_t i = 0;
    uint32_t n;
    if ((p[0] & 0xf0) == 0x90) {
        n = p[0] & 0x0f;
        i = 1;
    } else if (p[0] == 0xdc && len >= 3) {
        n = (uint32_t)p[1] << 8 | p[2];
        i = 3;
    } else if (p[0] == 0xdd && len >= 5) {
        n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        i = 5;
    } else {
        return 0;
    }
    int k = 0;
    for (uint32_t j = 0; j < n && i < len; j++) {
        int64_t v;
        unsigned char t = p[i];
        if (t <= 0x7f) {
            v = t;
            i += 1;
        } else if ((t == 0xd3 || t == 0xcf) && i + 9 <= len) {
            uint64_t u = 0;
            for (int b = 1; b <= 8; b++)
                u = u << 8 | p[i + b];
            v = (int64_t)u;
            i += 9;
        } else if ((t == 0xd2 || t == 0xce) && i + 5 <= len) {
            uint32_t u = (uint32_t)p[i + 1] << 24 | (uint32_t)p[i + 2] << 16 |
                         (uint32_t)p[i + 3] << 8 | p[i + 4];
            v = t == 0xd2 ? (int64_t)(int32_t)u : (int64_t)u;
            i += 5;
        } else {
            break;
        }
        if (k < max)
            out[k++] = v;
    }
    return k;
}

static size_t stamps_encode(const int64_t *s, int n, unsigned char *out)
{
    size_t i = 0;
    if (n < 16) {
        out[i++] = (unsigned char)(0x90 | n);
    } else {
        out[i++] = 0xdc;
        out[i++] = (unsigned char)(n >> 8);
        out[i++] = (unsigned char)n;
    }
    for (int j = 0; j < n; j++) {
        uint64_t u = (uint64_t)s[j];
        out[i++] = 0xd3;
        for (int b = 7; b >= 0; b--)
            out[i++] = (unsigned char)(u >> (8 * b));
    }
    return i;
}

static int make_key(char *key, size_t cap, const char *cust, char kind, const char *name)
{
    size_t cl = strlen(cust), nl = name ? strlen(name) : 0;
    if (cl + nl + 2 > cap)
        return -1;
    memcpy(key, cust, cl);
    key[cl] = 0;
    key[cl + 1] = kind;
    if (nl)
        memcpy(key + cl + 2, name, nl);
    return (int)(cl + 2 + nl);
}

/* Read a stamp list; returns the count read (<= max). */
static int stamps_get(struct store_txn *t, const char *key, int klen, int64_t *s, int max)
{
    const void *v;
    size_t vl;
    if (store_get(t, STORE_COUNTERS, key, (size_t)klen, &v, &vl))
        return 0;
    return stamps_decode(v, vl, s, max);
}

static long count_since(const int64_t *s, int n, int64_t since)
{
    long c = 0;
    for (int i = n - 1; i >= 0 && s[i] > since; i--)
        c++;
    return c;
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

static long total_count(struct store_txn *t, const char *camp, const struct rules_cap *w, int64_t now)
{
    char key[160];
    if (w->unit == 'L')
        return bucket_get(t, key, total_key(key, camp, 'L', 0));
    int64_t size = w->unit == 'h' ? 3600 : 86400;
    int n = w->unit == 'w' ? w->n : w->n; /* w->n already counts days for 'w' */
    int64_t cur = now / size;
    long sum = 0;
    for (int i = 0; i < n && i < 400; i++)
        sum += bucket_get(t, key, total_key(key, camp, w->unit == 'h' ? 'h' : 'd', cur - i));
    return sum;
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

#define THROTTLE_GLOBAL_ALWAYS 1 /* reservation re-reads everything */

static const int64_t std_windows[4] = { 3600, 86400, 7 * 86400, 30 * 86400 };

int throttle_read_shared(struct store_txn *t, const char *cust, const struct rules_channel *ch,
                         int64_t now, long global_cap, struct throttle_counts *out)
{
    memset(out, 0, sizeof *out);
    char key[512];
    static __thread int64_t s[THROTTLE_MAX_STAMPS];
    int kl, n;
    if (ch && ch->policy.n) {
        kl = make_key(key, sizeof key, cust, 'h', ch->name);
        n = kl < 0 ? 0 : stamps_get(t, key, kl, s, THROTTLE_MAX_STAMPS);
        for (int i = 0; i < ch->policy.n; i++) {
            const struct rules_cap *w = &ch->policy.w[i];
            out->chan[i] = w->unit == 'L' ? n : count_since(s, n, now - w->secs);
        }
    }
    if (global_cap <= 0) /* not recorded without a global cap */
        return 0;
    kl = make_key(key, sizeof key, cust, 'g', NULL);
    n = kl < 0 ? 0 : stamps_get(t, key, kl, s, THROTTLE_MAX_STAMPS);
    out->global_day = count_since(s, n, now - 86400);
    return 0;
}

int throttle_read(struct store_txn *t, const char *cust, const struct rules_campaign *c,
                  const struct rules_channel *ch, int64_t now, struct throttle_counts *out,
                  const struct throttle_counts *shared)
{
    if (shared) {
        *out = *shared;
    } else {
        int rc = throttle_read_shared(t, cust, ch, now, THROTTLE_GLOBAL_ALWAYS, out);
        if (rc)
            return rc;
    }
    memset(out->cust, 0, sizeof out->cust);
    memset(out->total, 0, sizeof out->total);
    memset(out->cust_std, 0, sizeof out->cust_std);
    char key[512];
    static __thread int64_t s[THROTTLE_MAX_STAMPS];
    int kl = make_key(key, sizeof key, cust, 'c', c->id);
    if (kl < 0)
        return ERR_TOOBIG;
    int n = (c->cust_caps.n || (c->hooks & RULES_HOOK_THROTTLE))
                ? stamps_get(t, key, kl, s, THROTTLE_MAX_STAMPS) : 0;
    for (int i = 0; i < c->cust_caps.n; i++) {
        const struct rules_cap *w = &c->cust_caps.w[i];
        out->cust[i] = w->unit == 'L' ? n : count_since(s, n, now - w->secs);
    }
    for (int i = 0; i < 4; i++)
        out->cust_std[i] = count_since(s, n, now - std_windows[i]);
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
            snprintf(reason, sizeof reason, "customer %s", c->cust_caps.w[i].label);
            *why = reason;
            return ERR_CAPPED;
        }
    for (int i = 0; i < c->total_caps.n; i++)
        if (n->total[i] >= c->total_caps.w[i].limit) {
            snprintf(reason, sizeof reason, "total %s", c->total_caps.w[i].label);
            *why = reason;
            return ERR_CAPPED;
        }
    for (int i = 0; ch && i < ch->policy.n; i++)
        if (n->chan[i] >= ch->policy.w[i].limit) {
            snprintf(reason, sizeof reason, "channel %s %s", ch->name, ch->policy.w[i].label);
            *why = reason;
            return ERR_CAPPED;
        }
    if (global_cap > 0 && n->global_day >= global_cap) {
        *why = "global 1d";
        return ERR_CAPPED;
    }
    return 0;
}

int throttle_needed(const struct rules_campaign *c, const struct rules_channel *ch, long global_cap)
{
    return c->cust_caps.n || c->total_caps.n || (ch && ch->policy.n) || global_cap > 0 ||
           (c->hooks & RULES_HOOK_THROTTLE);
}

/* Append `now` to a stamp list keeping the newest `keep`. */
static int stamps_push(struct store_txn *t, const char *key, int kl, int64_t now, int keep)
{
    static __thread int64_t s[THROTTLE_MAX_STAMPS + 1];
    static __thread unsigned char enc[3 + 9 * (THROTTLE_MAX_STAMPS + 1)];
    if (keep < 1)
        keep = 1;
    int n = stamps_get(t, key, kl, s, THROTTLE_MAX_STAMPS);
    /* keep order even if the clock stepped back */
    int at = n;
    while (at > 0 && s[at - 1] > now)
        at--;
    memmove(s + at + 1, s + at, sizeof(int64_t) * (size_t)(n - at));
    s[at] = now;
    n++;
    int from = n > keep ? n - keep : 0;
    size_t len = stamps_encode(s + from, n - from, enc);
    return store_put(t, STORE_COUNTERS, key, (size_t)kl, enc, len);
}

int throttle_reserve(struct store_txn *wt, const char *cust, const struct rules_campaign *c,
                     const struct rules_channel *ch, int64_t now, long global_cap,
                     const char **why)
{
    struct throttle_counts n;
    int rc = throttle_read(wt, cust, c, ch, now, &n, NULL);
    if (rc)
        return rc;
    rc = throttle_check(&n, c, ch, global_cap, why);
    if (rc)
        return rc;
    char key[512];
    int kl;
    if (c->cust_caps.n || (c->hooks & RULES_HOOK_THROTTLE)) { /* the hook reads counts */
        kl = make_key(key, sizeof key, cust, 'c', c->id);
        int keep = max_limit(&c->cust_caps);
        if ((rc = stamps_push(wt, key, kl, now, keep < 64 ? 64 : keep)))
            return rc;
    }
    if (c->total_caps.n) {
        int hour = 0, day = 0, life = 0;
        for (int i = 0; i < c->total_caps.n; i++) {
            char u = c->total_caps.w[i].unit;
            hour |= u == 'h';
            day |= u == 'd' || u == 'w';
            life |= u == 'L';
        }
        if (hour && (rc = bucket_inc(wt, c->id, 'h', now / 3600)))
            return rc;
        if (day && (rc = bucket_inc(wt, c->id, 'd', now / 86400)))
            return rc;
        if (life && (rc = bucket_inc(wt, c->id, 'L', 0)))
            return rc;
    }
    if (ch && ch->policy.n) {
        kl = make_key(key, sizeof key, cust, 'h', ch->name);
        if ((rc = stamps_push(wt, key, kl, now, max_limit(&ch->policy))))
            return rc;
    }
    if (global_cap > 0) {
        kl = make_key(key, sizeof key, cust, 'g', NULL);
        if ((rc = stamps_push(wt, key, kl, now, (int)global_cap)))
            return rc;
    }
    return 0;
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
