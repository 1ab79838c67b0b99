/* coupons.c — codes, pools, generation and assignment (see coupons.h);
 * validation, redemption and budgets are in coupons_redeem.c. */
#include "engine/coupons.h"
#include "engine/coupons_internal.h"
#include "base/err.h"
#include "base/id.h"
#include "codec/codec.h"
#include "store/record.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* --- keys ---------------------------------------------------------------- */

int coupons_key(char *out, size_t cap, char tag, const char *a, const char *b, const char *c)
{
    size_t n = 0;
    const char *parts[3] = { a, b, c };
    if (cap < 2)
        return -1;
    out[n++] = tag;
    for (int i = 0; i < 3 && parts[i]; i++) {
        size_t l = strlen(parts[i]);
        if (n + l + 1 > cap)
            return -1;
        if (i) /* parts after the first are \0-separated */
            out[n++] = 0;
        memcpy(out + n, parts[i], l);
        n += l;
    }
    return (int)n;
}

/* --- the code record ------------------------------------------------------
 * [0] version 1  [1] flags  [2] max_uses be32  [6] per_customer be32
 * [10] uses be32  [14] valid_from be64  [22] valid_until be64
 * [30] created be64  [38] len+campaign  len+pool  len+customer */

#define CODE_FIXED 38

static size_t put_str(unsigned char *p, const char *s)
{
    size_t l = strlen(s);
    p[0] = (unsigned char)l;
    memcpy(p + 1, s, l);
    return l + 1;
}

static int get_str(const unsigned char *p, size_t len, size_t *at, char *out, size_t cap)
{
    if (*at >= len)
        return ERR_PARSE;
    size_t l = p[*at];
    if (*at + 1 + l > len || l >= cap)
        return ERR_PARSE;
    memcpy(out, p + *at + 1, l);
    out[l] = 0;
    *at += 1 + l;
    return 0;
}

int coupons_code_put(struct store_txn *wt, const struct coupons_code *c)
{
    unsigned char v[CODE_FIXED + 3 * (COUPONS_ID_MAX + 1)];
    v[0] = 1;
    v[1] = (unsigned char)c->flags;
    store_be32(c->max_uses, v + 2);
    store_be32(c->per_customer, v + 6);
    store_be32(c->uses, v + 10);
    store_be64((uint64_t)c->valid_from, v + 14);
    store_be64((uint64_t)c->valid_until, v + 22);
    store_be64((uint64_t)c->created, v + 30);
    size_t n = CODE_FIXED;
    n += put_str(v + n, c->campaign);
    n += put_str(v + n, c->pool);
    n += put_str(v + n, c->customer);
    char key[COUPONS_CODE_MAX + 2];
    int kl = coupons_key(key, sizeof key, 'k', c->code, NULL, NULL);
    if (kl < 0)
        return ERR_INVAL;
    return store_put(wt, STORE_COUPONS, key, (size_t)kl, v, n);
}

static int code_decode(const unsigned char *v, size_t len, struct coupons_code *c)
{
    if (len < CODE_FIXED + 3 || v[0] != 1)
        return ERR_PARSE;
    c->flags = v[1];
    c->max_uses = store_get_be32(v + 2);
    c->per_customer = store_get_be32(v + 6);
    c->uses = store_get_be32(v + 10);
    c->valid_from = (int64_t)store_get_be64(v + 14);
    c->valid_until = (int64_t)store_get_be64(v + 22);
    c->created = (int64_t)store_get_be64(v + 30);
    size_t at = CODE_FIXED;
    int rc = get_str(v, len, &at, c->campaign, sizeof c->campaign);
    if (!rc)
        rc = get_str(v, len, &at, c->pool, sizeof c->pool);
    if (!rc)
        rc = get_str(v, len, &at, c->customer, sizeof c->customer);
    return rc;
}

int coupons_code_normalize(const char *in, char out[COUPONS_CODE_MAX + 1])
{
    if (!in)
        return ERR_INVAL;
    while (*in == ' ' || *in == '\t')
        in++;
    size_t n = strlen(in);
    while (n && (in[n - 1] == ' ' || in[n - 1] == '\t' || in[n - 1] == '\r' || in[n - 1] == '\n'))
        n--;
    if (n < 3 || n > COUPONS_CODE_MAX)
        return ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return ERR_INVAL;
        out[i] = ch;
    }
    out[n] = 0;
    return 0;
}

int coupons_code_get(struct store_txn *t, const char *code, struct coupons_code *out)
{
    char norm[COUPONS_CODE_MAX + 1];
    if (coupons_code_normalize(code, norm))
        return ERR_NOTFOUND;
    char key[COUPONS_CODE_MAX + 2];
    int kl = coupons_key(key, sizeof key, 'k', norm, NULL, NULL);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    memcpy(out->code, norm, strlen(norm) + 1);
    return code_decode(v, vl, out);
}

/* --- stats ------------------------------------------------------------------ */

int coupons_stats_read(struct store_txn *t, const char *camp, struct coupons_stats *out)
{
    memset(out, 0, sizeof *out);
    char key[COUPONS_ID_MAX + 2];
    int kl = coupons_key(key, sizeof key, 's', camp, NULL, NULL);
    if (kl < 0)
        return ERR_INVAL;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    for (int i = 0; i < COUPONS_NSTATS && (size_t)(i + 1) * 8 <= vl; i++)
        out->v[i] = (int64_t)store_get_be64((const unsigned char *)v + 8 * i);
    return 0;
}

int coupons_stats_add(struct store_txn *wt, const char *camp, const int64_t *delta)
{
    struct coupons_stats s;
    int rc = coupons_stats_read(wt, camp, &s);
    if (rc)
        return rc;
    unsigned char v[8 * COUPONS_NSTATS];
    for (int i = 0; i < COUPONS_NSTATS; i++)
        store_be64((uint64_t)(s.v[i] + delta[i]), v + 8 * i);
    char key[COUPONS_ID_MAX + 2];
    int kl = coupons_key(key, sizeof key, 's', camp, NULL, NULL);
    return store_put(wt, STORE_COUPONS, key, (size_t)kl, v, sizeof v);
}

/* --- pools and codes --------------------------------------------------------- */

static const char *pool_of(const struct coupons_opts *o)
{
    return o && o->pool ? o->pool : "default";
}

int coupons_pool_touch(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                       long added, int64_t now)
{
    char key[2 * COUPONS_ID_MAX + 3];
    int kl = coupons_key(key, sizeof key, 'p', camp, pool_of(o), NULL);
    if (kl < 0)
        return ERR_INVAL;
    int rc;
    json_t *p = record_get(wt, STORE_COUPONS, key, (size_t)kl, &rc);
    if (!p) {
        if (rc != ERR_NOTFOUND)
            return rc;
        p = json_object();
        json_object_set_new(p, "created", json_integer(now));
        json_object_set_new(p, "codes", json_integer(0));
    }
    json_object_set_new(p, "codes",
                        json_integer(json_integer_value(json_object_get(p, "codes")) + added));
    if (o && o->discount)
        json_object_set(p, "discount", (json_t *)o->discount);
    if (o)
        json_object_set_new(p, "shared", json_boolean(o->shared));
    rc = record_put(wt, STORE_COUPONS, key, (size_t)kl, p);
    json_decref(p);
    return rc;
}

/* One code, without the pool record.  *assigned = 1 when given to a customer. */
static int add_one(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                   const char *code, const char *customer, int64_t now)
{
    struct coupons_code c;
    memset(&c, 0, sizeof c);
    if (strlen(code) > COUPONS_CODE_MAX || strlen(camp) > COUPONS_ID_MAX ||
        strlen(pool_of(o)) > COUPONS_ID_MAX || (customer && strlen(customer) > COUPONS_ID_MAX))
        return ERR_INVAL;
    char key[COUPONS_CODE_MAX + 2];
    int kl = coupons_key(key, sizeof key, 'k', code, NULL, NULL);
    const void *v;
    size_t vl;
    int rc = store_get(wt, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    if (rc == 0)
        return ERR_EXISTS;
    if (rc != ERR_NOTFOUND)
        return rc;
    snprintf(c.code, sizeof c.code, "%s", code);
    snprintf(c.campaign, sizeof c.campaign, "%s", camp);
    snprintf(c.pool, sizeof c.pool, "%s", pool_of(o));
    snprintf(c.customer, sizeof c.customer, "%s", customer ? customer : "");
    c.max_uses = (uint32_t)(o ? o->max_uses : 1);
    c.per_customer = (uint32_t)(o ? o->per_customer : 1);
    c.valid_from = o ? o->valid_from : 0;
    c.valid_until = o ? o->valid_until : 0;
    c.created = now;
    c.flags = o && o->shared ? COUPON_SHARED : 0;
    if ((rc = coupons_code_put(wt, &c)))
        return rc;
    int64_t d[COUPONS_NSTATS] = { 0 };
    d[COUPONS_CODES] = 1;
    char k2[COUPONS_ID_MAX * 2 + 8];
    if (customer && *customer) {
        /* handed out with the import: the customer's code in this campaign */
        int al = coupons_key(k2, sizeof k2, 'a', camp, customer, NULL);
        rc = store_get(wt, STORE_COUPONS, k2, (size_t)al, &v, &vl);
        if (rc == 0)
            return ERR_CONFLICT; /* the customer has a code in this campaign already */
        if (rc != ERR_NOTFOUND)
            return rc;
        if ((rc = store_put(wt, STORE_COUPONS, k2, (size_t)al, code, strlen(code))))
            return rc;
        int cl = coupons_key(k2, sizeof k2, 'c', customer, "a", camp);
        if ((rc = store_put(wt, STORE_COUPONS, k2, (size_t)cl, "", 0)))
            return rc;
        d[COUPONS_ASSIGNED] = 1;
    } else if (!(c.flags & COUPON_SHARED)) {
        int fl = coupons_key(k2, sizeof k2, 'f', camp, code, NULL);
        if ((rc = store_put(wt, STORE_COUPONS, k2, (size_t)fl, "", 0)))
            return rc;
        d[COUPONS_FREE] = 1;
    }
    return coupons_stats_add(wt, camp, d);
}

int coupons_code_add(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                     const char *code, const char *customer, int64_t now)
{
    int rc = add_one(wt, camp, o, code, customer, now);
    return rc ? rc : coupons_pool_touch(wt, camp, o, 1, now);
}

long coupons_code_add_many(struct store_txn *wt, const char *camp, const struct coupons_opts *o,
                           const char *const *codes, const char *const *customers, size_t n,
                           int64_t now, int *status)
{
    long made = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = add_one(wt, camp, o, codes[i], customers ? customers[i] : NULL, now);
        status[i] = rc;
        if (rc == 0)
            made++;
        else if (rc != ERR_EXISTS && rc != ERR_CONFLICT && rc != ERR_INVAL)
            return rc;
    }
    if (made) {
        int rc = coupons_pool_touch(wt, camp, o, made, now);
        if (rc)
            return rc;
    }
    return made;
}

struct pools_ctx {
    json_t *arr;
    size_t plen;
    int rc;
};

static int pools_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct pools_ctx *x = ud;
    int rc = 0;
    json_t *o = NULL;
    o = codec_msgpack_to_json((const char *)val, vlen, &rc);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    json_t *e = json_object();
    json_object_set_new(e, "pool", json_stringn((const char *)key + x->plen, klen - x->plen));
    json_object_update(e, o);
    json_decref(o);
    json_array_append_new(x->arr, e);
    return 0;
}

json_t *coupons_pools_json(struct store_txn *t, const char *camp, int *rc)
{
    char pre[COUPONS_ID_MAX + 3];
    int pl = coupons_key(pre, sizeof pre, 'p', camp, "", NULL);
    if (pl < 0) {
        *rc = ERR_INVAL;
        return NULL;
    }
    struct pools_ctx x = { json_array(), (size_t)pl, 0 };
    *rc = store_scan(t, STORE_COUPONS, pre, (size_t)pl, NULL, 0, pools_cb, &x);
    if (*rc) {
        json_decref(x.arr);
        return NULL;
    }
    return x.arr;
}

/* --- generation ------------------------------------------------------------ */

int coupons_pattern_parse(const char *pattern, const char *prefix, long length, long count,
                          struct coupons_pattern *out, struct reqerr *e)
{
    memset(out, 0, sizeof *out);
    if (pattern && (prefix || length)) {
        reqerr_set(e, 400, "invalid_field", "pattern",
                   "give either \"pattern\" or \"prefix\"/\"length\", not both");
        return ERR_INVAL;
    }
    char buf[COUPONS_CODE_MAX * 2 + 2];
    if (pattern) {
        snprintf(buf, sizeof buf, "%s", pattern);
    } else {
        if (length == 0)
            length = 10;
        if (length < 4 || length > 32) {
            reqerr_set(e, 400, "invalid_field", "length",
                       "\"length\" must be an integer from 4 to 32");
            return ERR_INVAL;
        }
        size_t pl = prefix ? strlen(prefix) : 0;
        if (pl + (size_t)length > COUPONS_CODE_MAX) {
            reqerr_set(e, 400, "invalid_field", "prefix",
                       "prefix and length together exceed %d characters", COUPONS_CODE_MAX);
            return ERR_INVAL;
        }
        snprintf(buf, sizeof buf, "%s", prefix ? prefix : "");
        memset(buf + pl, '#', (size_t)length);
        buf[pl + (size_t)length] = 0;
    }
    const char *field = pattern ? "pattern" : "prefix";
    size_t n = strlen(buf);
    if (n < 3 || n > COUPONS_CODE_MAX) {
        reqerr_set(e, 400, "invalid_field", field, "codes must be 3 to %d characters long",
                   COUPONS_CODE_MAX);
        return ERR_INVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        if (ch == '#') {
            out->nrandom++;
        } else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')) {
            reqerr_set(e, 400, "invalid_field", field,
                       "\"%s\" may hold only letters, digits, '-' and '_'%s", field,
                       pattern ? " besides '#' for a random character" : "");
            return ERR_INVAL;
        }
        out->tmpl[i] = ch;
    }
    out->tmpl[n] = 0;
    /* unguessable: the random part offers >= 10^6 codes per code made */
    double space = pow((double)(sizeof COUPONS_ALPHABET - 1), out->nrandom);
    if (space < (double)count * 1e6) {
        int need = (int)ceil(log((double)count * 1e6) / log((double)(sizeof COUPONS_ALPHABET - 1)));
        reqerr_set(e, 422, "too_guessable", pattern ? "pattern" : "length",
                   "%d random characters are too few for %ld codes: a guess would hit one more "
                   "often than once in a million tries; use at least %d",
                   out->nrandom, count, need);
        return ERR_INVAL;
    }
    return 0;
}

int coupons_pattern_make(const struct coupons_pattern *p, char out[COUPONS_CODE_MAX + 1])
{
    static const char alpha[] = COUPONS_ALPHABET;
    enum { NA = sizeof alpha - 1, LIMIT = 256 - 256 % NA }; /* unbiased: reject the tail */
    unsigned char rnd[128];
    size_t have = 0, used = 0;
    size_t n = strlen(p->tmpl);
    for (size_t i = 0; i < n; i++) {
        if (p->tmpl[i] != '#') {
            out[i] = p->tmpl[i];
            continue;
        }
        for (;;) {
            if (used == have) {
                ssize_t r = getrandom(rnd, sizeof rnd, 0);
                if (r <= 0)
                    return r < 0 ? -errno : ERR_IO;
                have = (size_t)r;
                used = 0;
            }
            unsigned b = rnd[used++];
            if (b < LIMIT) {
                out[i] = alpha[b % NA];
                break;
            }
        }
    }
    out[n] = 0;
    return 0;
}

/* --- assignment ------------------------------------------------------------ */

static long g_assigned, g_exhausted; /* for /metrics, whoever assigns */

void coupons_assign_counts(long *assigned, long *exhausted)
{
    *assigned = __atomic_load_n(&g_assigned, __ATOMIC_RELAXED);
    *exhausted = __atomic_load_n(&g_exhausted, __ATOMIC_RELAXED);
}

int coupons_assigned(struct store_txn *t, const char *camp, const char *customer,
                     char code[COUPONS_CODE_MAX + 1])
{
    char key[2 * COUPONS_ID_MAX + 3];
    int kl = coupons_key(key, sizeof key, 'a', camp, customer, NULL);
    if (kl < 0)
        return ERR_NOTFOUND;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    if (rc)
        return rc;
    if (vl > COUPONS_CODE_MAX)
        return ERR_PARSE;
    memcpy(code, v, vl);
    code[vl] = 0;
    return 0;
}

struct first_ctx {
    char code[COUPONS_CODE_MAX + 1];
    size_t plen;
    int found;
};

static int first_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct first_ctx *x = ud;
    size_t n = klen - x->plen;
    if (n > COUPONS_CODE_MAX)
        return 0;
    memcpy(x->code, (const char *)key + x->plen, n);
    x->code[n] = 0;
    x->found = 1;
    return 1;
}

int coupons_assign(struct store_txn *wt, const char *camp, const char *customer, int64_t now,
                   char code[COUPONS_CODE_MAX + 1], int *fresh)
{
    *fresh = 0;
    if (strlen(camp) > COUPONS_ID_MAX || strlen(customer) > COUPONS_ID_MAX)
        return ERR_INVAL;
    int rc = coupons_assigned(wt, camp, customer, code);
    if (rc != ERR_NOTFOUND)
        return rc; /* 0: the same code again */
    char pre[COUPONS_ID_MAX + 3];
    int pl = coupons_key(pre, sizeof pre, 'f', camp, "", NULL);
    int64_t d[COUPONS_NSTATS] = { 0 };
    for (;;) {
        struct first_ctx x = { .plen = (size_t)pl };
        if ((rc = store_scan(wt, STORE_COUPONS, pre, (size_t)pl, NULL, 0, first_cb, &x)))
            return rc;
        if (!x.found) {
            if (d[COUPONS_FREE] && (rc = coupons_stats_add(wt, camp, d)))
                return rc;
            __atomic_fetch_add(&g_exhausted, 1, __ATOMIC_RELAXED);
            return ERR_CAPPED;
        }
        char fk[COUPONS_ID_MAX + COUPONS_CODE_MAX + 3];
        int fl = coupons_key(fk, sizeof fk, 'f', camp, x.code, NULL);
        if ((rc = store_del(wt, STORE_COUPONS, fk, (size_t)fl)))
            return rc;
        struct coupons_code c;
        rc = coupons_code_get(wt, x.code, &c);
        if (rc && rc != ERR_NOTFOUND)
            return rc;
        if (rc == 0 && c.max_uses && c.uses >= c.max_uses && !c.customer[0] &&
            !(c.flags & (COUPON_DISABLED | COUPON_SHARED)))
            continue; /* left by the redemption that used it up, which counted it out of `free` */
        d[COUPONS_FREE]--;
        if (rc == ERR_NOTFOUND)
            continue; /* a stale entry: drop it */
        if ((c.valid_until && c.valid_until < now) || c.customer[0] ||
            (c.flags & (COUPON_DISABLED | COUPON_SHARED)) || (c.max_uses && c.uses >= c.max_uses))
            continue; /* expired or no longer free: not worth giving out */
        snprintf(c.customer, sizeof c.customer, "%s", customer);
        if ((rc = coupons_code_put(wt, &c)))
            return rc;
        char k2[2 * COUPONS_ID_MAX + 8];
        int al = coupons_key(k2, sizeof k2, 'a', camp, customer, NULL);
        if ((rc = store_put(wt, STORE_COUPONS, k2, (size_t)al, c.code, strlen(c.code))))
            return rc;
        int cl = coupons_key(k2, sizeof k2, 'c', customer, "a", camp);
        if ((rc = store_put(wt, STORE_COUPONS, k2, (size_t)cl, "", 0)))
            return rc;
        d[COUPONS_ASSIGNED] = 1;
        if ((rc = coupons_stats_add(wt, camp, d)))
            return rc;
        memcpy(code, c.code, strlen(c.code) + 1);
        *fresh = 1;
        __atomic_fetch_add(&g_assigned, 1, __ATOMIC_RELAXED);
        return 0;
    }
}
