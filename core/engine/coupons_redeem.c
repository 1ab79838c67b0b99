/* coupons_redeem.c — validation, redemption, rollback, money budgets and
 * the customer's coupon data for export and erasure (see coupons.h). */
#include "engine/coupons.h"
#include "engine/coupons_internal.h"
#include "base/err.h"
#include "base/id.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- money ----------------------------------------------------------------- */

int coupons_money_parse(double v, int64_t *out_m)
{
    if (!isfinite(v) || v <= 0 || v >= 1e12)
        return ERR_INVAL;
    double m = v * 1000.0, r = nearbyint(m);
    if (r < 1 || fabs(m - r) > 1e-6 * fmax(1.0, fabs(m)))
        return ERR_INVAL; /* more than three decimals: refused, never rounded */
    *out_m = (int64_t)r;
    return 0;
}

json_t *coupons_money_json(int64_t m)
{
    if (m % 1000 == 0)
        return json_integer(m / 1000);
    return json_real((double)m / 1000.0);
}

int coupons_currency_valid(const char *s)
{
    return s && strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

/* --- budgets ------------------------------------------------------------------ */

static int64_t bucket_of(const struct coupons_budget *b, int64_t now)
{
    return b->per_day ? now / 86400 + 1 : 0;
}

static int bucket_key(char *key, const char *camp, int64_t bucket)
{
    int kl = coupons_key(key, COUPONS_ID_MAX + 12, 'b', camp, "", NULL);
    if (kl < 0)
        return -1;
    store_be64((uint64_t)bucket, (unsigned char *)key + kl);
    return kl + 8;
}

static int bucket_read(struct store_txn *t, const char *camp, int64_t bucket, int64_t *spent)
{
    char key[COUPONS_ID_MAX + 12];
    int kl = bucket_key(key, camp, bucket);
    *spent = 0;
    if (kl < 0)
        return ERR_INVAL;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (vl == 8)
        *spent = (int64_t)store_get_be64(v);
    return 0;
}

static int bucket_add(struct store_txn *wt, const char *camp, int64_t bucket, int64_t delta)
{
    int64_t spent;
    int rc = bucket_read(wt, camp, bucket, &spent);
    if (rc)
        return rc;
    spent += delta;
    if (spent < 0)
        spent = 0;
    char key[COUPONS_ID_MAX + 12];
    int kl = bucket_key(key, camp, bucket);
    unsigned char v[8];
    store_be64((uint64_t)spent, v);
    return store_put(wt, STORE_COUPONS, key, (size_t)kl, v, 8);
}

int coupons_budget_read(struct store_txn *t, const char *camp, const struct coupons_budget *b,
                        int64_t now, int64_t *spent_m, int64_t *allowed_m)
{
    *allowed_m = b->amount_m;
    if (b->per_day && b->pacing) {
        /* "even": by the end of UTC hour h, (h + 1) / 24 of the day's budget */
        int64_t hour = (now % 86400) / 3600;
        *allowed_m = b->amount_m * (hour + 1) / 24;
    }
    return bucket_read(t, camp, bucket_of(b, now), spent_m);
}

/* --- redemption records -----------------------------------------------------
 * [0] version 1  [1] state  [2] amount be64  [10] at be64  [18] bucket be64
 * [26] rolled_at be64  [34] currency (3)  [37] len+customer  len+campaign */

enum { R_REDEEMED = 1, R_ROLLED_BACK = 2 };
#define RED_FIXED 37

struct red {
    int state;
    int64_t amount_m, at, bucket, rolled_at;
    char currency[4];
    char customer[COUPONS_ID_MAX + 1];
    char campaign[COUPONS_ID_MAX + 1];
};

static int red_key(char *key, size_t cap, const char *code, const char *order)
{
    return coupons_key(key, cap, 'k', code, "r", order);
}

static int red_get(struct store_txn *t, const char *code, const char *order, struct red *r)
{
    char key[COUPONS_CODE_MAX + COUPONS_ID_MAX + 6];
    int kl = red_key(key, sizeof key, code, order);
    if (kl < 0)
        return ERR_NOTFOUND;
    const void *vv;
    size_t vl;
    int rc = store_get(t, STORE_COUPONS, key, (size_t)kl, &vv, &vl);
    if (rc)
        return rc;
    const unsigned char *v = vv;
    if (vl < RED_FIXED + 2 || v[0] != 1)
        return ERR_PARSE;
    memset(r, 0, sizeof *r);
    r->state = v[1];
    r->amount_m = (int64_t)store_get_be64(v + 2);
    r->at = (int64_t)store_get_be64(v + 10);
    r->bucket = (int64_t)store_get_be64(v + 18);
    r->rolled_at = (int64_t)store_get_be64(v + 26);
    memcpy(r->currency, v + 34, 3);
    size_t at = RED_FIXED;
    for (int i = 0; i < 2; i++) {
        char *dst = i ? r->campaign : r->customer;
        size_t l = v[at];
        if (at + 1 + l > vl || l > COUPONS_ID_MAX)
            return ERR_PARSE;
        memcpy(dst, v + at + 1, l);
        dst[l] = 0;
        at += 1 + l;
    }
    return 0;
}

static int red_put(struct store_txn *wt, const char *code, const char *order, const struct red *r)
{
    unsigned char v[RED_FIXED + 2 * (COUPONS_ID_MAX + 1)];
    v[0] = 1;
    v[1] = (unsigned char)r->state;
    store_be64((uint64_t)r->amount_m, v + 2);
    store_be64((uint64_t)r->at, v + 10);
    store_be64((uint64_t)r->bucket, v + 18);
    store_be64((uint64_t)r->rolled_at, v + 26);
    memcpy(v + 34, r->currency, 3);
    size_t n = RED_FIXED;
    for (int i = 0; i < 2; i++) {
        const char *s = i ? r->campaign : r->customer;
        size_t l = strlen(s);
        v[n] = (unsigned char)l;
        memcpy(v + n + 1, s, l);
        n += 1 + l;
    }
    char key[COUPONS_CODE_MAX + COUPONS_ID_MAX + 6];
    int kl = red_key(key, sizeof key, code, order);
    if (kl < 0)
        return ERR_INVAL;
    return store_put(wt, STORE_COUPONS, key, (size_t)kl, v, n);
}

/* the customer's uses of a code */
static int uses_read(struct store_txn *t, const char *code, const char *cust, int64_t *n)
{
    char key[COUPONS_CODE_MAX + COUPONS_ID_MAX + 6];
    int kl = coupons_key(key, sizeof key, 'k', code, "u", cust);
    *n = 0;
    if (kl < 0)
        return ERR_INVAL;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (vl == 4)
        *n = store_get_be32(v);
    return 0;
}

static int uses_write(struct store_txn *wt, const char *code, const char *cust, int64_t n)
{
    char key[COUPONS_CODE_MAX + COUPONS_ID_MAX + 6];
    int kl = coupons_key(key, sizeof key, 'k', code, "u", cust);
    if (kl < 0)
        return ERR_INVAL;
    if (n <= 0) {
        int rc = store_del(wt, STORE_COUPONS, key, (size_t)kl);
        return rc == ERR_NOTFOUND ? 0 : rc;
    }
    unsigned char v[4];
    store_be32((uint32_t)n, v);
    return store_put(wt, STORE_COUPONS, key, (size_t)kl, v, 4);
}

/* --- checks ---------------------------------------------------------------------- */

static void fmt_money(char *b, size_t n, int64_t m, const char *cur)
{
    snprintf(b, n, "%lld.%03lld%s%s", (long long)(m / 1000), (long long)llabs(m % 1000),
             cur && *cur ? " " : "", cur ? cur : "");
}

/* Everything but the order: the code, its window and owner, uses, the
 * customer's uses, the campaign and (with an amount) currency and budget.
 * `code` is normalised. */
static int check(struct store_txn *t, const char *code, const struct coupons_req *q,
                 coupons_campaign_fn camp, void *ud, struct coupons_outcome *out, struct reqerr *e)
{
    struct coupons_code *c = &out->c;
    int rc = coupons_code_get(t, code, c);
    if (rc == ERR_NOTFOUND)
        return reqerr_set(e, 404, "unknown_code", "code", "no coupon code \"%s\"", code);
    if (rc)
        return reqerr_from_code(e, rc, "coupon");
    if (c->flags & COUPON_DISABLED)
        return reqerr_set(e, 422, "disabled", "code", "coupon %s is disabled", code);
    if (c->valid_from && q->now < c->valid_from)
        return reqerr_set(e, 422, "not_yet_valid", "code", "coupon %s is not valid yet", code);
    if (c->valid_until && q->now > c->valid_until)
        return reqerr_set(e, 422, "expired", "code", "coupon %s has expired", code);
    if (c->customer[0] && strcmp(c->customer, q->customer) != 0)
        return reqerr_set(e, 422, "not_yours", "customer_id",
                          "coupon %s belongs to another customer", code);
    if (c->max_uses && c->uses >= c->max_uses)
        return reqerr_set(e, 422, "used_up", "code", "coupon %s is used up (%u of %u uses)", code,
                          c->uses, c->max_uses);
    if ((rc = uses_read(t, code, q->customer, &out->customer_uses)))
        return reqerr_from_code(e, rc, "coupon");
    if (c->per_customer && out->customer_uses >= c->per_customer)
        return reqerr_set(e, 422, "customer_limit", "customer_id",
                          "customer %s has used coupon %s %lld time(s), the limit", q->customer,
                          code, (long long)out->customer_uses);
    struct coupons_campaign cp;
    memset(&cp, 0, sizeof cp);
    camp(ud, c->campaign, &cp);
    if (!cp.found)
        return reqerr_set(e, 422, "not_eligible", "code", "coupon %s: campaign %s is not loaded",
                          code, c->campaign);
    if (!cp.active)
        return reqerr_set(e, 422, "not_eligible", "code", "coupon %s: campaign %s is %s", code,
                          c->campaign, cp.status[0] ? cp.status : "not active");
    out->has_budget = cp.budget.amount_m > 0;
    out->budget = cp.budget;
    if (!out->has_budget)
        return 0;
    if (q->currency && strcmp(q->currency, cp.budget.currency) != 0)
        return reqerr_set(e, 422, "currency_mismatch", "currency",
                          "campaign %s pays in %s, not %s", c->campaign, cp.budget.currency,
                          q->currency);
    if ((rc = coupons_budget_read(t, c->campaign, &cp.budget, q->now, &out->spent_m,
                                  &out->allowed_m)))
        return reqerr_from_code(e, rc, "budget");
    if (q->amount_m && out->spent_m + q->amount_m > out->allowed_m) {
        char left[48], amt[48];
        fmt_money(left, sizeof left, out->allowed_m > out->spent_m ? out->allowed_m - out->spent_m : 0,
                  cp.budget.currency);
        fmt_money(amt, sizeof amt, q->amount_m, cp.budget.currency);
        return reqerr_set(e, 422, "budget_exhausted", "amount",
                          "campaign %s's budget has %s left%s, not enough for %s", c->campaign, left,
                          cp.budget.pacing ? " at this hour (paced)" : "", amt);
    }
    return 0;
}

static int norm_or_refuse(const char *in, char code[COUPONS_CODE_MAX + 1], struct reqerr *e)
{
    if (coupons_code_normalize(in, code))
        return reqerr_set(e, 400, "invalid_field", "code",
                          "\"code\" must be 3 to %d letters, digits, '-' or '_'", COUPONS_CODE_MAX);
    return 0;
}

int coupons_validate(struct store_txn *t, const struct coupons_req *q, coupons_campaign_fn camp,
                     void *ud, struct coupons_outcome *out, struct reqerr *e)
{
    memset(out, 0, sizeof *out);
    char code[COUPONS_CODE_MAX + 1];
    int rc = norm_or_refuse(q->code, code, e);
    return rc ? rc : check(t, code, q, camp, ud, out, e);
}

void coupons_redeem_prefetch(struct store_txn *t, const struct coupons_req *q)
{
    char code[COUPONS_CODE_MAX + 1];
    if (coupons_code_normalize(q->code, code))
        return;
    struct red r;
    red_get(t, code, q->order, &r);
    struct coupons_code c;
    if (coupons_code_get(t, code, &c))
        return;
    int64_t n;
    uses_read(t, code, q->customer, &n);
    char key[COUPONS_ID_MAX * 2 + COUPONS_CODE_MAX + 8];
    const void *v;
    size_t vl;
    int kl = coupons_key(key, sizeof key, 'c', q->customer, "r", code);
    if (kl >= 0) /* where the customer's index key will go */
        store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
    kl = coupons_key(key, sizeof key, 'f', c.campaign, code, NULL);
    if (kl >= 0)
        store_get(t, STORE_COUPONS, key, (size_t)kl, &v, &vl);
}

int coupons_redeem(struct store_txn *wt, const struct coupons_req *q, coupons_campaign_fn camp,
                   void *ud, struct coupons_outcome *out, struct reqerr *e)
{
    memset(out, 0, sizeof *out);
    char code[COUPONS_CODE_MAX + 1];
    int rc = norm_or_refuse(q->code, code, e);
    if (rc)
        return rc;
    if (q->amount_m <= 0)
        return reqerr_set(e, 400, "invalid_field", "amount", "\"amount\" must be a positive number");
    if (!coupons_currency_valid(q->currency))
        return reqerr_set(e, 400, "invalid_field", "currency",
                          "\"currency\" must be an ISO 4217 code such as \"EUR\"");
    /* the order first: a repeat answers as the first time, even once the
     * code is used up by it */
    struct red r;
    rc = red_get(wt, code, q->order, &r);
    if (rc == 0) {
        if (r.state == R_ROLLED_BACK)
            return reqerr_set(e, 409, "rolled_back", "order_id",
                              "order %s's redemption of %s was rolled back", q->order, code);
        if (strcmp(r.customer, q->customer) || r.amount_m != q->amount_m ||
            memcmp(r.currency, q->currency, 3))
            return reqerr_set(e, 409, "order_conflict", "order_id",
                              "order %s redeemed %s before with another customer, amount or "
                              "currency", q->order, code);
        if ((rc = coupons_code_get(wt, code, &out->c)))
            return reqerr_from_code(e, rc, "coupon");
        out->replayed = 1;
        out->amount_m = r.amount_m;
        memcpy(out->currency, r.currency, 4);
        out->at = r.at;
        uses_read(wt, code, q->customer, &out->customer_uses);
        return 0;
    }
    if (rc != ERR_NOTFOUND)
        return reqerr_from_code(e, rc, "redemption");
    if ((rc = check(wt, code, q, camp, ud, out, e)))
        return rc;
    /* the customer's index key, checked before anything is written */
    char ckey[COUPONS_ID_MAX * 2 + COUPONS_CODE_MAX + 8];
    int ckl = coupons_key(ckey, sizeof ckey, 'c', q->customer, "r", code);
    if (ckl < 0 || ckl + 1 + strlen(q->order) > sizeof ckey)
        return reqerr_set(e, 400, "invalid_field", "order_id", "\"order_id\" is too long");
    ckey[ckl] = 0;
    memcpy(ckey + ckl + 1, q->order, strlen(q->order));
    ckl += 1 + (int)strlen(q->order);
    /* every check passed: write it all, in this one transaction; from
     * here a failure leaves the transaction half-written */
    out->partial = 1;
    struct coupons_code *c = &out->c;
    c->uses++;
    out->customer_uses++;
    int64_t bucket = out->has_budget ? bucket_of(&out->budget, q->now) : 0;
    memset(&r, 0, sizeof r);
    r.state = R_REDEEMED;
    r.amount_m = q->amount_m;
    r.at = q->now;
    r.bucket = out->has_budget ? bucket : -1;
    memcpy(r.currency, q->currency, 3);
    snprintf(r.customer, sizeof r.customer, "%s", q->customer);
    snprintf(r.campaign, sizeof r.campaign, "%s", c->campaign);
    int64_t d[COUPONS_NSTATS] = { 0 };
    d[COUPONS_REDEEMED] = 1;
    d[COUPONS_SPENT_M] = q->amount_m;
    char key[COUPONS_ID_MAX * 2 + COUPONS_CODE_MAX + 8];
    int kl;
    if ((rc = coupons_code_put(wt, c)) || (rc = uses_write(wt, code, q->customer, out->customer_uses)) ||
        (rc = red_put(wt, code, q->order, &r)))
        return reqerr_from_code(e, rc, "redemption");
    if (c->max_uses && c->uses >= c->max_uses && !c->customer[0] && !(c->flags & COUPON_SHARED)) {
        /* an unassigned code used up by a customer who had it otherwise: no
         * longer free for assignment, so counted out of `free` now.  Its
         * free-list entry stays: deleting it dirtied a random leaf of the
         * free list (and its branch) in every redemption, a third of the
         * pages a batch's flush wrote; coupons_assign drops the entry
         * when it meets it, without counting it out twice (the code is
         * used up, unassigned and not shared: only this path leaves that) */
        kl = coupons_key(key, sizeof key, 'f', c->campaign, code, NULL);
        const void *fv;
        size_t fvl;
        rc = store_get(wt, STORE_COUPONS, key, (size_t)kl, &fv, &fvl);
        if (rc == 0)
            d[COUPONS_FREE] = -1;
        else if (rc != ERR_NOTFOUND)
            return reqerr_from_code(e, rc, "redemption");
    }
    if ((rc = store_put(wt, STORE_COUPONS, ckey, (size_t)ckl, "", 0)) ||
        (out->has_budget && (rc = bucket_add(wt, c->campaign, bucket, q->amount_m))) ||
        (rc = coupons_stats_add(wt, c->campaign, d)))
        return reqerr_from_code(e, rc, "redemption");
    if (out->has_budget)
        out->spent_m += q->amount_m;
    out->amount_m = q->amount_m;
    memcpy(out->currency, q->currency, 4);
    out->at = q->now;
    out->partial = 0;
    return 0;
}

int coupons_rollback(struct store_txn *wt, const char *code_in, const char *order, int64_t now,
                     struct coupons_outcome *out, struct reqerr *e)
{
    memset(out, 0, sizeof *out);
    char code[COUPONS_CODE_MAX + 1];
    int rc = norm_or_refuse(code_in, code, e);
    if (rc)
        return rc;
    struct coupons_code *c = &out->c;
    rc = coupons_code_get(wt, code, c);
    if (rc == ERR_NOTFOUND)
        return reqerr_set(e, 404, "unknown_code", "code", "no coupon code \"%s\"", code);
    if (rc)
        return reqerr_from_code(e, rc, "coupon");
    struct red r;
    rc = red_get(wt, code, order, &r);
    if (rc == ERR_NOTFOUND)
        return reqerr_set(e, 404, "unknown_redemption", "order_id",
                          "order %s did not redeem coupon %s", order, code);
    if (rc)
        return reqerr_from_code(e, rc, "redemption");
    out->amount_m = r.amount_m;
    memcpy(out->currency, r.currency, 3);
    out->currency[3] = 0;
    out->at = r.at;
    if (r.state == R_ROLLED_BACK) {
        out->replayed = 1;
        return 0;
    }
    int was_used_up = c->max_uses && c->uses >= c->max_uses;
    if (c->uses)
        c->uses--;
    int64_t d[COUPONS_NSTATS] = { 0 };
    d[COUPONS_ROLLED_BACK] = 1;
    d[COUPONS_SPENT_M] = -r.amount_m;
    char key[COUPONS_ID_MAX * 2 + COUPONS_CODE_MAX + 8];
    if ((rc = coupons_code_put(wt, c)))
        return reqerr_from_code(e, rc, "rollback");
    if (r.customer[0]) { /* "" once the customer was erased */
        if ((rc = uses_read(wt, code, r.customer, &out->customer_uses)) ||
            (rc = uses_write(wt, code, r.customer, out->customer_uses - 1)))
            return reqerr_from_code(e, rc, "rollback");
        if (out->customer_uses)
            out->customer_uses--;
    }
    if (!c->customer[0] && !(c->flags & (COUPON_SHARED | COUPON_DISABLED)) &&
        (!c->max_uses || c->uses < c->max_uses)) {
        /* free again (an unassigned code that a redemption had used up) */
        int kl = coupons_key(key, sizeof key, 'f', c->campaign, code, NULL);
        const void *v;
        size_t vl;
        rc = store_get(wt, STORE_COUPONS, key, (size_t)kl, &v, &vl);
        if (rc == ERR_NOTFOUND) { /* dropped by an assignment, or by a release before 2026-12-04 */
            if ((rc = store_put(wt, STORE_COUPONS, key, (size_t)kl, "", 0)))
                return reqerr_from_code(e, rc, "rollback");
            d[COUPONS_FREE] = 1;
        } else if (rc) {
            return reqerr_from_code(e, rc, "rollback");
        } else if (was_used_up) {
            d[COUPONS_FREE] = 1; /* the entry its redemption left: free again */
        }
    }
    if (r.bucket >= 0 && (rc = bucket_add(wt, r.campaign, r.bucket, -r.amount_m)))
        return reqerr_from_code(e, rc, "rollback");
    r.state = R_ROLLED_BACK;
    r.rolled_at = now;
    if ((rc = red_put(wt, code, order, &r)) || (rc = coupons_stats_add(wt, r.campaign, d)))
        return reqerr_from_code(e, rc, "rollback");
    return 0;
}

/* --- the customer's data ---------------------------------------------------------- */

struct cust_ctx {
    struct store_txn *t;
    size_t plen;
    json_t *assign, *redeem;
    struct buf_keys { char **k; size_t *l; size_t n, cap; } keys; /* for erase */
    int collect;
    int rc;
};

static int keep_key(struct cust_ctx *x, const void *key, size_t klen)
{
    if (x->keys.n == x->keys.cap) {
        size_t cap = x->keys.cap ? x->keys.cap * 2 : 16;
        char **k = realloc(x->keys.k, cap * sizeof *k);
        size_t *l = k ? realloc(x->keys.l, cap * sizeof *l) : NULL;
        if (k)
            x->keys.k = k;
        if (!l)
            return ERR_NOMEM;
        x->keys.l = l;
        x->keys.cap = cap;
    }
    char *c = malloc(klen);
    if (!c)
        return ERR_NOMEM;
    memcpy(c, key, klen);
    x->keys.k[x->keys.n] = c;
    x->keys.l[x->keys.n++] = klen;
    return 0;
}

static int cust_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct cust_ctx *x = ud;
    if (x->collect)
        return keep_key(x, key, klen);
    const char *p = (const char *)key + x->plen, *end = (const char *)key + klen;
    if (p + 2 > end || p[1] != 0)
        return 0;
    char kind = p[0];
    p += 2;
    const char *z = memchr(p, 0, (size_t)(end - p));
    char a[COUPONS_CODE_MAX + COUPONS_ID_MAX + 2], b[COUPONS_ID_MAX + 1];
    size_t al = (size_t)((z ? z : end) - p);
    if (al >= sizeof a)
        return 0;
    memcpy(a, p, al);
    a[al] = 0;
    if (kind == 'a') {
        json_t *o = json_object();
        json_object_set_new(o, "campaign_id", json_string(a));
        char code[COUPONS_CODE_MAX + 1];
        const char *cust = (const char *)key + 1;
        if (coupons_assigned(x->t, a, cust, code) == 0)
            json_object_set_new(o, "code", json_string(code));
        json_array_append_new(x->assign, o);
    } else if (kind == 'r' && z) {
        size_t bl = (size_t)(end - z - 1);
        if (bl >= sizeof b)
            return 0;
        memcpy(b, z + 1, bl);
        b[bl] = 0;
        struct red r;
        if (red_get(x->t, a, b, &r))
            return 0;
        json_t *o = json_object();
        json_object_set_new(o, "code", json_string(a));
        json_object_set_new(o, "campaign_id", json_string(r.campaign));
        json_object_set_new(o, "order_id", json_string(b));
        json_object_set_new(o, "amount", coupons_money_json(r.amount_m));
        json_object_set_new(o, "currency", json_stringn(r.currency, 3));
        json_object_set_new(o, "at", json_integer(r.at));
        json_object_set_new(o, "state", json_string(r.state == R_ROLLED_BACK ? "rolled_back" : "redeemed"));
        json_array_append_new(x->redeem, o);
    }
    return 0;
}

json_t *coupons_export_customer(struct store_txn *t, const char *customer, int *rc)
{
    char pre[COUPONS_ID_MAX + 3];
    int pl = coupons_key(pre, sizeof pre, 'c', customer, "", NULL);
    if (pl < 0) {
        *rc = ERR_INVAL;
        return NULL;
    }
    struct cust_ctx x = { .t = t, .plen = (size_t)pl, .assign = json_array(), .redeem = json_array() };
    *rc = store_scan(t, STORE_COUPONS, pre, (size_t)pl, NULL, 0, cust_cb, &x);
    json_t *o = json_object();
    json_object_set_new(o, "assignments", x.assign);
    json_object_set_new(o, "redemptions", x.redeem);
    if (*rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

long coupons_erase_customer(struct store_txn *wt, const char *customer)
{
    char pre[COUPONS_ID_MAX + 3];
    int pl = coupons_key(pre, sizeof pre, 'c', customer, "", NULL);
    if (pl < 0)
        return ERR_INVAL;
    struct cust_ctx x = { .t = wt, .plen = (size_t)pl, .collect = 1 };
    int rc = store_scan(wt, STORE_COUPONS, pre, (size_t)pl, NULL, 0, cust_cb, &x);
    long changed = 0;
    for (size_t i = 0; !rc && i < x.keys.n; i++) {
        const char *p = x.keys.k[i] + pl, *end = x.keys.k[i] + x.keys.l[i];
        if (p + 2 > end)
            continue;
        char kind = p[0];
        p += 2;
        const char *z = memchr(p, 0, (size_t)(end - p));
        char a[COUPONS_CODE_MAX + COUPONS_ID_MAX + 2], b[COUPONS_ID_MAX + 1];
        size_t al = (size_t)((z ? z : end) - p);
        if (al >= sizeof a)
            continue;
        memcpy(a, p, al);
        a[al] = 0;
        char key[COUPONS_ID_MAX * 2 + COUPONS_CODE_MAX + 8];
        if (kind == 'a') {
            char code[COUPONS_CODE_MAX + 1];
            struct coupons_code c;
            if (coupons_assigned(wt, a, customer, code) == 0 && coupons_code_get(wt, code, &c) == 0) {
                /* the code went out to this customer: never give it to another */
                c.customer[0] = 0;
                c.flags |= COUPON_DISABLED;
                if ((rc = coupons_code_put(wt, &c)))
                    break;
                int kl = coupons_key(key, sizeof key, 'k', code, "u", customer);
                rc = store_del(wt, STORE_COUPONS, key, (size_t)kl);
                if (rc && rc != ERR_NOTFOUND)
                    break;
                rc = 0;
            }
            int kl = coupons_key(key, sizeof key, 'a', a, customer, NULL);
            rc = store_del(wt, STORE_COUPONS, key, (size_t)kl);
            if (rc && rc != ERR_NOTFOUND)
                break;
            rc = 0;
            changed++;
        } else if (kind == 'r' && z) {
            size_t bl = (size_t)(end - z - 1);
            if (bl >= sizeof b)
                continue;
            memcpy(b, z + 1, bl);
            b[bl] = 0;
            struct red r;
            if (red_get(wt, a, b, &r) == 0) {
                r.customer[0] = 0; /* amounts stay: the budget's sums must hold */
                if ((rc = red_put(wt, a, b, &r)))
                    break;
                changed++;
            }
            int kl = coupons_key(key, sizeof key, 'k', a, "u", customer);
            rc = store_del(wt, STORE_COUPONS, key, (size_t)kl);
            if (rc && rc != ERR_NOTFOUND)
                break;
            rc = 0;
        }
    }
    for (size_t i = 0; i < x.keys.n; i++)
        free(x.keys.k[i]);
    free(x.keys.k);
    free(x.keys.l);
    if (rc)
        return rc;
    long d = store_del_prefix(wt, STORE_COUPONS, pre, (size_t)pl);
    return d < 0 ? d : changed + d;
}
