/* promotions.c — coupon validation, redemption and rollback for the
 * checkout, with the abuse limits in front (see promotions.h). */
#include "service/promotions.h"
#include "service/promotions_internal.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/id.h"
#include "base/limiter.h"
#include "base/metrics.h"
#include "engine/coupons.h"
#include "engine/rules.h"
#include "store/store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- metrics ---------------------------------------------------------------- */

static const char *outcomes[] = { "redeemed", "replayed", "unknown_code", "invalid", "expired",
                                  "not_yet_valid", "disabled", "not_yours", "used_up",
                                  "customer_limit", "not_eligible", "currency_mismatch",
                                  "budget_exhausted", "order_conflict", "rolled_back",
                                  "too_many_attempts", "error" };
enum { NOUT = sizeof outcomes / sizeof outcomes[0] };
static long g_redeem[NOUT], g_validate[NOUT], g_limited[2], g_rollbacks;

static int outcome_idx(const char *code)
{
    if (!strcmp(code, "invalid_field") || !strcmp(code, "missing_field") ||
        !strcmp(code, "unknown_field"))
        return 3;
    for (int i = 0; i < NOUT; i++)
        if (!strcmp(outcomes[i], code))
            return i;
    return NOUT - 1;
}


static void collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_coupon_redemptions_total Redeem calls by outcome.\n"
                  "# TYPE promod_coupon_redemptions_total counter\n");
    for (int i = 0; i < NOUT; i++) {
        long n = __atomic_load_n(&g_redeem[i], __ATOMIC_RELAXED);
        if (n || i < 2)
            buf_printf(out, "promod_coupon_redemptions_total{outcome=\"%s\"} %ld\n", outcomes[i], n);
    }
    buf_adds(out, "# HELP promod_coupon_validations_total Validate calls by outcome.\n"
                  "# TYPE promod_coupon_validations_total counter\n");
    for (int i = 0; i < NOUT; i++) {
        long n = __atomic_load_n(&g_validate[i], __ATOMIC_RELAXED);
        if (n || i == 0)
            buf_printf(out, "promod_coupon_validations_total{outcome=\"%s\"} %ld\n",
                       i == 0 ? "valid" : outcomes[i], n);
    }
    buf_printf(out, "# HELP promod_coupon_rollbacks_total Redemptions rolled back.\n"
                    "# TYPE promod_coupon_rollbacks_total counter\n"
                    "promod_coupon_rollbacks_total %ld\n",
               __atomic_load_n(&g_rollbacks, __ATOMIC_RELAXED));
    long assigned, exhausted;
    coupons_assign_counts(&assigned, &exhausted);
    buf_printf(out, "# HELP promod_coupon_assignments_total Code assignments (decide, sends, API) by outcome.\n"
                    "# TYPE promod_coupon_assignments_total counter\n"
                    "promod_coupon_assignments_total{outcome=\"assigned\"} %ld\n"
                    "promod_coupon_assignments_total{outcome=\"pool_exhausted\"} %ld\n",
               assigned, exhausted);
    const struct config *c = &g_app->cfg;
    buf_printf(out, "# HELP promod_coupon_velocity_limited_total Coupon calls refused by a velocity limit.\n"
                    "# TYPE promod_coupon_velocity_limited_total counter\n"
                    "promod_coupon_velocity_limited_total{limit=\"customer\"} %ld\n"
                    "promod_coupon_velocity_limited_total{limit=\"code_prefix\"} %ld\n",
               __atomic_load_n(&g_limited[0], __ATOMIC_RELAXED),
               __atomic_load_n(&g_limited[1], __ATOMIC_RELAXED));
    buf_printf(out, "# HELP promod_coupon_velocity_limit Configured velocity limits (calls per window; 0 = off).\n"
                    "# TYPE promod_coupon_velocity_limit gauge\n"
                    "promod_coupon_velocity_limit{limit=\"customer\",window_s=\"%ld\"} %ld\n"
                    "promod_coupon_velocity_limit{limit=\"code_prefix\",window_s=\"%ld\"} %ld\n",
               c->coupon_velocity_customer.window_s, c->coupon_velocity_customer.limit,
               c->coupon_velocity_prefix.window_s, c->coupon_velocity_prefix.limit);
}

/* --- abuse limits ------------------------------------------------------------ */

static struct limiter *g_by_customer, *g_by_prefix;

void promotions_init(struct app *app)
{
    const struct config *c = &app->cfg;
    g_by_customer = limiter_new(c->coupon_velocity_customer.limit,
                                c->coupon_velocity_customer.window_s, 0);
    g_by_prefix = limiter_new(c->coupon_velocity_prefix.limit, c->coupon_velocity_prefix.window_s, 0);
    metrics_register(collector, NULL);
    promotions_redeemer_init();
    promotions_loyalty_init(app);
}

static int64_t mono_ms(void) { return (int64_t)(clock_mono_ns() / 1000000); }

static int limited(struct reqerr *e, long wait, const char *field, const char *what)
{
    reqerr_set(e, 429, "too_many_attempts", field, "too many coupon attempts for this %s; retry in %ld s",
               what, wait);
    e->extra = json_object();
    json_object_set_new(e->extra, "retry_after", json_integer(wait));
    return ERR_CAPPED;
}

/* the normalised code's prefix (or the raw text's, for a malformed code) */
static size_t prefix_of(const char *code, char *out, size_t cap)
{
    int n = g_app->cfg.coupon_prefix_len;
    char norm[COUPONS_CODE_MAX + 1];
    const char *s = coupons_code_normalize(code, norm) == 0 ? norm : code;
    size_t l = strlen(s);
    if (l > (size_t)n)
        l = (size_t)n;
    if (l >= cap)
        l = cap - 1;
    memcpy(out, s, l);
    out[l] = 0;
    return l;
}

/* Before the store is read: the customer's calls, and the prefix's failed
 * guesses.  0 or ERR_CAPPED with e filled. */
static int velocity_check(const char *customer, const char *code, struct reqerr *e)
{
    int64_t now = mono_ms();
    long w = limiter_take(g_by_customer, customer, strlen(customer), now);
    if (w) {
        __atomic_fetch_add(&g_limited[0], 1, __ATOMIC_RELAXED);
        return limited(e, w, "customer_id", "customer");
    }
    char pre[COUPONS_CODE_MAX + 1];
    size_t pl = prefix_of(code, pre, sizeof pre);
    if ((w = limiter_peek(g_by_prefix, pre, pl, now))) {
        __atomic_fetch_add(&g_limited[1], 1, __ATOMIC_RELAXED);
        return limited(e, w, "code", "code prefix");
    }
    return 0;
}

/* A refusal that looks like guessing spends a token of the code's prefix. */
static void count_guess(const char *code, const struct reqerr *e)
{
    if (strcmp(e->code, "unknown_code") && strcmp(e->code, "not_yours") &&
        !(strcmp(e->code, "invalid_field") == 0 && strcmp(e->field, "code") == 0))
        return;
    char pre[COUPONS_CODE_MAX + 1];
    size_t pl = prefix_of(code, pre, sizeof pre);
    limiter_take(g_by_prefix, pre, pl, mono_ms());
}

/* --- request fields ------------------------------------------------------------ */

int promotions_fields_known(const json_t *body, const char *const *known, struct reqerr *e)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!ok)
            return reqerr_set(e, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
    }
    return 0;
}

const char *promotions_str(const json_t *body, const char *name, int required, int id,
                           struct reqerr *e, int *rc)
{
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) {
        if (required)
            *rc = reqerr_set(e, 400, "missing_field", name, "\"%s\" is required", name);
        return NULL;
    }
    const char *s = json_string_value(v);
    if (!s || !*s) {
        *rc = reqerr_set(e, 400, "invalid_field", name, "\"%s\" must be a non-empty string", name);
        return NULL;
    }
    if (id && !id_valid(s)) {
        *rc = reqerr_set(e, 400, "invalid_field", name,
                         "\"%s\" must be 1-128 characters of letters, digits and _.:@-", name);
        return NULL;
    }
    return s;
}

/* "amount": a positive finite number with at most three decimals */
static int amount_field(const json_t *body, int required, int64_t *out, struct reqerr *e)
{
    json_t *v = json_object_get(body, "amount");
    *out = 0;
    if (!v || json_is_null(v)) {
        if (required)
            return reqerr_set(e, 400, "missing_field", "amount", "\"amount\" is required");
        return 0;
    }
    if (!json_is_number(v) || coupons_money_parse(json_number_value(v), out))
        return reqerr_set(e, 400, "invalid_field", "amount",
                          "\"amount\" must be a positive finite number with at most 3 decimals "
                          "(the discount granted, in \"currency\")");
    return 0;
}

static int currency_field(const json_t *body, int required, const char **out, struct reqerr *e)
{
    json_t *v = json_object_get(body, "currency");
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return reqerr_set(e, 400, "missing_field", "currency", "\"currency\" is required");
        return 0;
    }
    if (!coupons_currency_valid(json_string_value(v)))
        return reqerr_set(e, 400, "invalid_field", "currency",
                          "\"currency\" must be an ISO 4217 code in capitals, such as \"EUR\"");
    *out = json_string_value(v);
    return 0;
}

/* --- the campaign a code belongs to ------------------------------------------------ */

void promotions_campaign_lookup(void *ud, const char *id, struct coupons_campaign *out)
{
    struct promotions_lookup *x = ud;
    int i = x->gen ? rules_gen_find_campaign(x->gen, id) : -1;
    if (i < 0)
        return;
    const struct rules_campaign *c = &x->gen->camps[i];
    out->found = 1;
    int open = rules_schedule_open(&c->sched, x->now);
    out->active = c->status == CAMP_ACTIVE && open;
    snprintf(out->status, sizeof out->status, "%s",
             c->status != CAMP_ACTIVE ? rules_status_name(c->status) : open ? "active" : "outside its schedule");
    promotions_campaign_budget(c, &out->budget);
}

static void code_json(json_t *o, const struct coupons_code *c)
{
    json_object_set_new(o, "code", json_string(c->code));
    json_object_set_new(o, "campaign_id", json_string(c->campaign));
    json_object_set_new(o, "pool", json_string(c->pool));
    json_object_set_new(o, "uses", json_integer(c->uses));
    json_object_set_new(o, "max_uses", c->max_uses ? json_integer(c->max_uses) : json_null());
    json_object_set_new(o, "per_customer", c->per_customer ? json_integer(c->per_customer) : json_null());
    if (c->valid_from)
        json_object_set_new(o, "valid_from", json_integer(c->valid_from));
    if (c->valid_until)
        json_object_set_new(o, "valid_until", json_integer(c->valid_until));
}

static void budget_json(json_t *o, const struct coupons_outcome *r)
{
    if (!r->has_budget)
        return;
    json_t *b = json_object();
    json_object_set_new(b, "currency", json_string(r->budget.currency));
    json_object_set_new(b, "amount", coupons_money_json(r->budget.amount_m));
    json_object_set_new(b, "per", json_string(r->budget.per_day ? "1d" : "campaign"));
    json_object_set_new(b, "spent", coupons_money_json(r->spent_m));
    int64_t left = r->allowed_m - r->spent_m;
    json_object_set_new(b, "remaining", coupons_money_json(left > 0 ? left : 0));
    json_object_set_new(o, "budget", b);
}

static int store_fail(struct reqerr *e, int rc, const char *what)
{
    reqerr_from_code(e, rc, what);
    if (e->status == 500 || e->status == 404) /* a store failure is no "not found" */
        reqerr_set(e, rc == ERR_FULL ? 507 : 503, rc == ERR_FULL ? "storage_full" : "store_error",
                   NULL, "%s: %s", what, err_str(rc));
    return rc;
}

/* --- validate / redeem / rollback --------------------------------------------------- */

json_t *promotions_validate(const json_t *body, struct reqerr *e)
{
    static const char *const known[] = { "code", "customer_id", "amount", "currency", NULL };
    int rc = promotions_fields_known(body, known, e);
    const char *code = rc ? NULL : promotions_str(body, "code", 1, 0, e, &rc);
    const char *cust = rc ? NULL : promotions_str(body, "customer_id", 1, 1, e, &rc);
    int64_t amount = 0;
    const char *cur = NULL;
    if (!rc)
        rc = amount_field(body, 0, &amount, e);
    if (!rc)
        rc = currency_field(body, 0, &cur, e);
    if (!rc)
        rc = velocity_check(cust, code, e);
    if (rc) {
        __atomic_fetch_add(&g_validate[outcome_idx(e->code)], 1, __ATOMIC_RELAXED);
        return NULL;
    }
    struct store_txn *t;
    if ((rc = store_rtxn_begin(g_app->store, &t))) {
        store_fail(e, rc, "validate");
        return NULL;
    }
    struct promotions_lookup lk = { rules_gen_acquire(), clock_now() };
    struct coupons_req q = { .code = code, .customer = cust, .amount_m = amount, .currency = cur,
                             .now = lk.now };
    struct coupons_outcome r;
    rc = coupons_validate(t, &q, promotions_campaign_lookup, &lk, &r, e);
    json_t *pool = NULL;
    if (!rc) {
        int prc;
        json_t *pools = coupons_pools_json(t, r.c.campaign, &prc);
        for (size_t i = 0; pools && i < json_array_size(pools); i++) {
            json_t *p = json_array_get(pools, i);
            if (!strcmp(json_string_value(json_object_get(p, "pool")) ?: "", r.c.pool))
                pool = json_incref(p);
        }
        json_decref(pools);
    }
    store_txn_end(t);
    rules_gen_release(lk.gen);
    if (rc) {
        count_guess(code, e);
        __atomic_fetch_add(&g_validate[outcome_idx(e->code)], 1, __ATOMIC_RELAXED);
        json_decref(pool);
        return NULL;
    }
    __atomic_fetch_add(&g_validate[0], 1, __ATOMIC_RELAXED);
    json_t *o = json_object();
    json_object_set_new(o, "valid", json_true());
    code_json(o, &r.c);
    json_object_set_new(o, "customer_uses", json_integer(r.customer_uses));
    json_t *disc = pool ? json_object_get(pool, "discount") : NULL;
    if (disc)
        json_object_set(o, "discount", disc);
    json_decref(pool);
    budget_json(o, &r);
    return o;
}

struct promotions_redemption *promotions_redeem_start(const json_t *body, struct reqerr *e)
{
    static const char *const known[] = { "code", "customer_id", "order_id", "amount", "currency",
                                         NULL };
    int rc = promotions_fields_known(body, known, e);
    const char *code = rc ? NULL : promotions_str(body, "code", 1, 0, e, &rc);
    const char *cust = rc ? NULL : promotions_str(body, "customer_id", 1, 1, e, &rc);
    const char *order = rc ? NULL : promotions_str(body, "order_id", 1, 1, e, &rc);
    int64_t amount = 0;
    const char *cur = NULL;
    if (!rc)
        rc = amount_field(body, 1, &amount, e);
    if (!rc)
        rc = currency_field(body, 1, &cur, e);
    if (!rc)
        rc = velocity_check(cust, code, e);
    if (!rc && strlen(code) >= sizeof ((struct promotions_redemption *)0)->code) {
        /* what coupons_redeem answers for any malformed code, a guess too */
        rc = reqerr_set(e, 400, "invalid_field", "code",
                        "\"code\" must be 3 to %d letters, digits, '-' or '_'", COUPONS_CODE_MAX);
        count_guess(code, e);
    }
    struct promotions_redemption *x = rc ? NULL : calloc(1, sizeof *x);
    if (!rc && !x)
        rc = reqerr_set(e, 503, "store_error", NULL, "redeem: out of memory");
    if (rc) {
        __atomic_fetch_add(&g_redeem[outcome_idx(e->code)], 1, __ATOMIC_RELAXED);
        return NULL;
    }
    snprintf(x->code, sizeof x->code, "%s", code);
    snprintf(x->customer, sizeof x->customer, "%s", cust);
    snprintf(x->order, sizeof x->order, "%s", order);
    memcpy(x->currency, cur, 4);
    x->item.q = (struct coupons_req){ .code = x->code, .customer = x->customer, .order = x->order,
                                      .amount_m = amount, .currency = x->currency };
    return x;
}

json_t *promotions_redeem_finish(struct promotions_redemption *x, uint64_t *ticket,
                                 struct reqerr *e)
{
    struct coupons_batch_item *it = &x->item;
    *ticket = it->ticket;
    if (it->rc) {
        *e = it->e; /* takes its extra */
        if (e->status >= 500)
            store_fail(e, it->rc, "redeem");
        count_guess(x->code, e);
        __atomic_fetch_add(&g_redeem[outcome_idx(e->code)], 1, __ATOMIC_RELAXED);
        free(x);
        return NULL;
    }
    const struct coupons_outcome *r = &it->out;
    __atomic_fetch_add(&g_redeem[r->replayed ? 1 : 0], 1, __ATOMIC_RELAXED);
    json_t *o = json_object();
    json_object_set_new(o, "redeemed", json_true());
    json_object_set_new(o, "replayed", json_boolean(r->replayed));
    code_json(o, &r->c);
    json_object_set_new(o, "order_id", json_string(x->order));
    json_object_set_new(o, "customer_id", json_string(x->customer));
    json_object_set_new(o, "amount", coupons_money_json(r->amount_m));
    json_object_set_new(o, "currency", json_string(r->currency));
    json_object_set_new(o, "customer_uses", json_integer(r->customer_uses));
    budget_json(o, r);
    free(x);
    return o;
}

json_t *promotions_rollback(const char *code, const json_t *body, uint64_t *ticket,
                            struct reqerr *e)
{
    *ticket = 0;
    static const char *const known[] = { "order_id", NULL };
    int rc = promotions_fields_known(body, known, e);
    const char *order = rc ? NULL : promotions_str(body, "order_id", 1, 1, e, &rc);
    if (rc)
        return NULL;
    struct store_txn *wt;
    if ((rc = store_wtxn_begin(g_app->store, &wt))) {
        store_fail(e, rc, "rollback");
        return NULL;
    }
    struct coupons_outcome r;
    rc = coupons_rollback(wt, code, order, clock_now(), &r, e);
    if (rc) {
        store_txn_end(wt);
        if (e->status >= 500)
            store_fail(e, rc, "rollback");
        return NULL;
    }
    if ((rc = store_txn_commit_ticket(wt, ticket))) {
        store_fail(e, rc, "rollback");
        return NULL;
    }
    if (!r.replayed)
        __atomic_fetch_add(&g_rollbacks, 1, __ATOMIC_RELAXED);
    json_t *o = json_object();
    json_object_set_new(o, "rolled_back", json_true());
    json_object_set_new(o, "replayed", json_boolean(r.replayed));
    json_object_set_new(o, "code", json_string(r.c.code));
    json_object_set_new(o, "campaign_id", json_string(r.c.campaign));
    json_object_set_new(o, "order_id", json_string(order));
    json_object_set_new(o, "amount", coupons_money_json(r.amount_m));
    json_object_set_new(o, "currency", json_string(r.currency));
    json_object_set_new(o, "uses", json_integer(r.c.uses));
    return o;
}
