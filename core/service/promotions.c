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
#include "codec/emit.h"
#include "codec/jscan.h"
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

/* The members of a validate or redeem body, read in place from the
 * validated text (codec/jscan): no tree is built for the checkout's
 * requests.  The checks, their order and their messages are those of
 * promotions_fields_known / promotions_str on a parsed body. */
enum { CF_CODE, CF_CUSTOMER, CF_ORDER, CF_AMOUNT, CF_CURRENCY, NCF };
static const char *const cf_names[NCF] = { "code", "customer_id", "order_id", "amount", "currency" };

struct cfields {
    struct jscan_val v[NCF]; /* len 0 = absent */
    struct buf s[NCF];       /* decoded strings */
};

static void cfields_free(struct cfields *f)
{
    for (int i = 0; i < NCF; i++)
        buf_free(&f->s[i]);
}

static int cf_absent(const struct cfields *f, int i)
{
    return f->v[i].len == 0 || jscan_type(f->v[i]) == 'n';
}

/* Collect the members; an unknown one (order_id too, unless `with_order`)
 * is 400 unknown_field.  A repeated member: the last one counts. */
static int cfields_read(struct jscan_val body, int with_order, struct cfields *f, struct reqerr *e)
{
    struct jscan_obj o;
    struct jscan_val v;
    struct buf key = BUF_INIT;
    int rc = 0;
    if (jscan_object(&o, body))
        return reqerr_set(e, 400, "invalid_body", NULL, "body must be a JSON object");
    while (jscan_next(&o, &key, &v)) {
        const char *k = key.p ? key.p : "";
        int i = 0;
        while (i < NCF && (strcmp(k, cf_names[i]) || (i == CF_ORDER && !with_order)))
            i++;
        if (i == NCF) {
            rc = reqerr_set(e, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
            break;
        }
        f->v[i] = v;
    }
    buf_free(&key);
    return rc;
}

/* promotions_str over a member */
static const char *cf_str(struct cfields *f, int i, int required, int id, struct reqerr *e, int *rc)
{
    const char *name = cf_names[i];
    if (cf_absent(f, i)) {
        if (required)
            *rc = reqerr_set(e, 400, "missing_field", name, "\"%s\" is required", name);
        return NULL;
    }
    if (jscan_type(f->v[i]) != '"' || jscan_string(f->v[i], &f->s[i]) || f->s[i].len == 0) {
        *rc = reqerr_set(e, 400, "invalid_field", name, "\"%s\" must be a non-empty string", name);
        return NULL;
    }
    if (id && !id_valid(f->s[i].p)) {
        *rc = reqerr_set(e, 400, "invalid_field", name,
                         "\"%s\" must be 1-128 characters of letters, digits and _.:@-", name);
        return NULL;
    }
    return f->s[i].p;
}

/* "amount": a positive finite number with at most three decimals */
static int amount_field(struct cfields *f, int required, int64_t *out, struct reqerr *e)
{
    *out = 0;
    if (cf_absent(f, CF_AMOUNT)) {
        if (required)
            return reqerr_set(e, 400, "missing_field", "amount", "\"amount\" is required");
        return 0;
    }
    struct jscan_val v = f->v[CF_AMOUNT];
    struct buf *t = &f->s[CF_AMOUNT];
    buf_reset(t);
    /* the literal, NUL-terminated for strtod (JSON's number grammar is a
     * subset of strtod's; integers are within int64 after jscan_check, so
     * the double is the one json_number_value would give) */
    if (jscan_type(v) != '0' || buf_add(t, v.p, v.len) ||
        coupons_money_parse(strtod(t->p, NULL), out))
        return reqerr_set(e, 400, "invalid_field", "amount",
                          "\"amount\" must be a positive finite number with at most 3 decimals "
                          "(the discount granted, in \"currency\")");
    return 0;
}

static int currency_field(struct cfields *f, int required, const char **out, struct reqerr *e)
{
    *out = NULL;
    if (cf_absent(f, CF_CURRENCY)) {
        if (required)
            return reqerr_set(e, 400, "missing_field", "currency", "\"currency\" is required");
        return 0;
    }
    struct buf *t = &f->s[CF_CURRENCY];
    if (jscan_type(f->v[CF_CURRENCY]) != '"' || jscan_string(f->v[CF_CURRENCY], t) ||
        !coupons_currency_valid(t->p))
        return reqerr_set(e, 400, "invalid_field", "currency",
                          "\"currency\" must be an ISO 4217 code in capitals, such as \"EUR\"");
    *out = t->p;
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

/* The replies are written with the emitter (codec/emit), member for member
 * in the order the jansson objects they replace had, so the bytes are the
 * same: money as an integer when whole, else a real. */
static void emit_strz(struct emit *m, const char *s) { emit_str(m, s, strlen(s)); }

static void emit_member(struct emit *m, const char *k) { emit_key(m, k, strlen(k)); }

static void emit_money(struct emit *m, int64_t v)
{
    if (v % 1000 == 0)
        emit_int(m, v / 1000);
    else
        emit_real(m, (double)v / 1000.0);
}

/* a NULL or zero limit is null */
static void emit_limit(struct emit *m, int64_t v)
{
    if (v)
        emit_int(m, v);
    else
        emit_null(m);
}

static size_t code_members(const struct coupons_code *c)
{
    return 6 + (c->valid_from != 0) + (c->valid_until != 0);
}

static void code_emit(struct emit *m, const struct coupons_code *c)
{
    emit_member(m, "code");
    emit_strz(m, c->code);
    emit_member(m, "campaign_id");
    emit_strz(m, c->campaign);
    emit_member(m, "pool");
    emit_strz(m, c->pool);
    emit_member(m, "uses");
    emit_int(m, c->uses);
    emit_member(m, "max_uses");
    emit_limit(m, c->max_uses);
    emit_member(m, "per_customer");
    emit_limit(m, c->per_customer);
    if (c->valid_from) {
        emit_member(m, "valid_from");
        emit_int(m, c->valid_from);
    }
    if (c->valid_until) {
        emit_member(m, "valid_until");
        emit_int(m, c->valid_until);
    }
}

static void budget_emit(struct emit *m, const struct coupons_outcome *r)
{
    if (!r->has_budget)
        return;
    emit_member(m, "budget");
    emit_map(m, 5);
    emit_member(m, "currency");
    emit_strz(m, r->budget.currency);
    emit_member(m, "amount");
    emit_money(m, r->budget.amount_m);
    emit_member(m, "per");
    emit_strz(m, r->budget.per_day ? "1d" : "campaign");
    emit_member(m, "spent");
    emit_money(m, r->spent_m);
    int64_t left = r->allowed_m - r->spent_m;
    emit_member(m, "remaining");
    emit_money(m, left > 0 ? left : 0);
    emit_end(m);
}

/* The emitter's verdict: 0, or 500 with e filled (out of memory, or text
 * that is not UTF-8 in a stored value). */
static int emit_done(struct emit *m, struct buf *out, struct reqerr *e)
{
    if (!emit_error(m) && (m->mp || buf_addc(out, '\n') == 0))
        return 0;
    return reqerr_set(e, 500, "internal", NULL, "reply could not be written: %s",
                      err_str(emit_error(m) ? emit_error(m) : ERR_NOMEM));
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

int promotions_validate(struct jscan_val body, struct buf *out, int msgpack, struct reqerr *e)
{
    struct cfields f = { 0 };
    int rc = cfields_read(body, 0, &f, e);
    const char *code = rc ? NULL : cf_str(&f, CF_CODE, 1, 0, e, &rc);
    const char *cust = rc ? NULL : cf_str(&f, CF_CUSTOMER, 1, 1, e, &rc);
    int64_t amount = 0;
    const char *cur = NULL;
    if (!rc)
        rc = amount_field(&f, 0, &amount, e);
    if (!rc)
        rc = currency_field(&f, 0, &cur, e);
    if (!rc)
        rc = velocity_check(cust, code, e);
    if (rc) {
        __atomic_fetch_add(&g_validate[outcome_idx(e->code)], 1, __ATOMIC_RELAXED);
        cfields_free(&f);
        return rc;
    }
    struct store_txn *t;
    if ((rc = store_rtxn_begin(g_app->store, &t))) {
        store_fail(e, rc, "validate");
        cfields_free(&f);
        return rc;
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
        cfields_free(&f);
        return rc;
    }
    cfields_free(&f);
    __atomic_fetch_add(&g_validate[0], 1, __ATOMIC_RELAXED);
    json_t *disc = pool ? json_object_get(pool, "discount") : NULL;
    struct emit m;
    emit_init(&m, out, msgpack);
    emit_map(&m, 2 + code_members(&r.c) + (disc != NULL) + (r.has_budget != 0));
    emit_member(&m, "valid");
    emit_bool(&m, 1);
    code_emit(&m, &r.c);
    emit_member(&m, "customer_uses");
    emit_int(&m, r.customer_uses);
    if (disc) {
        emit_member(&m, "discount");
        emit_json(&m, disc);
    }
    budget_emit(&m, &r);
    emit_end(&m);
    json_decref(pool);
    return emit_done(&m, out, e);
}

struct promotions_redemption *promotions_redeem_start(struct jscan_val body, struct reqerr *e)
{
    struct cfields f = { 0 };
    int rc = cfields_read(body, 1, &f, e);
    const char *code = rc ? NULL : cf_str(&f, CF_CODE, 1, 0, e, &rc);
    const char *cust = rc ? NULL : cf_str(&f, CF_CUSTOMER, 1, 1, e, &rc);
    const char *order = rc ? NULL : cf_str(&f, CF_ORDER, 1, 1, e, &rc);
    int64_t amount = 0;
    const char *cur = NULL;
    if (!rc)
        rc = amount_field(&f, 1, &amount, e);
    if (!rc)
        rc = currency_field(&f, 1, &cur, e);
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
        cfields_free(&f);
        return NULL;
    }
    /* lengths checked above (code) and by id_valid (ids: at most 128) */
    memcpy(x->code, code, f.s[CF_CODE].len + 1);
    memcpy(x->customer, cust, f.s[CF_CUSTOMER].len + 1);
    memcpy(x->order, order, f.s[CF_ORDER].len + 1);
    memcpy(x->currency, cur, 4);
    cfields_free(&f);
    x->item.q = (struct coupons_req){ .code = x->code, .customer = x->customer, .order = x->order,
                                      .amount_m = amount, .currency = x->currency };
    /* the pages the writer will need, read here (see coupons_redeem_prefetch) */
    struct store_txn *t;
    if (store_rtxn_begin(g_app->store, &t) == 0) {
        coupons_redeem_prefetch(t, &x->item.q);
        store_txn_end(t);
    }
    return x;
}

int promotions_redeem_finish(struct promotions_redemption *x, struct buf *out, int msgpack,
                             uint64_t *ticket, struct reqerr *e)
{
    struct coupons_batch_item *it = &x->item;
    *ticket = it->ticket;
    if (it->rc) {
        int rc = it->rc;
        *e = it->e; /* takes its extra */
        if (e->status >= 500)
            store_fail(e, it->rc, "redeem");
        count_guess(x->code, e);
        __atomic_fetch_add(&g_redeem[outcome_idx(e->code)], 1, __ATOMIC_RELAXED);
        free(x);
        return rc;
    }
    const struct coupons_outcome *r = &it->out;
    __atomic_fetch_add(&g_redeem[r->replayed ? 1 : 0], 1, __ATOMIC_RELAXED);
    struct emit m;
    emit_init(&m, out, msgpack);
    emit_map(&m, 7 + code_members(&r->c) + (r->has_budget != 0));
    emit_member(&m, "redeemed");
    emit_bool(&m, 1);
    emit_member(&m, "replayed");
    emit_bool(&m, r->replayed);
    code_emit(&m, &r->c);
    emit_member(&m, "order_id");
    emit_strz(&m, x->order);
    emit_member(&m, "customer_id");
    emit_strz(&m, x->customer);
    emit_member(&m, "amount");
    emit_money(&m, r->amount_m);
    emit_member(&m, "currency");
    emit_strz(&m, r->currency);
    emit_member(&m, "customer_uses");
    emit_int(&m, r->customer_uses);
    budget_emit(&m, r);
    emit_end(&m);
    free(x);
    return emit_done(&m, out, e);
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
