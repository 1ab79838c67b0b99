/*
 * test_coupons_race.c — coupon codes on the real server: a single-use code
 * raced by 500 connections, a money budget under 10,000 redemptions, a
 * pool of 10,000 codes given to 12,000 customers, and acknowledged
 * redemptions that survive SIGKILL.  Refusal reasons, bad input and
 * import: test_coupons_input.c.
 */
#include "coupons_tfx.h"
#include <unistd.h>

static void teardown(void) { tfx_server_cleanup(&srv); }

/* no velocity limits: these tests race one customer or one code on purpose */
#define NO_VELOCITY "coupon_velocity_customer = false, coupon_velocity_prefix = false,\n"

static void start(const char *cfg) { tfx_server_init(&srv, cfg ? cfg : NO_VELOCITY); }
static void go(void) { cr_assert_eq(tfx_server_start(&srv), 0, "server did not start"); }

TestSuite(coupons_race, .fini = teardown, .timeout = 300);

/* --- 500 simultaneous redemptions of one single-use code --------------- */

struct race {
    const char *code;
    int ok, used_up, other;
    char other_body[512];
};

static void race_one(int i, void *ud)
{
    struct race *x = ud;
    struct tfx_resp r;
    ctfx_post_counted(&r, "/api/v1/coupons/redeem",
                    "{\"code\":\"%s\",\"customer_id\":\"racer-%d\",\"order_id\":\"order-%d\","
                    "\"amount\":5,\"currency\":\"EUR\"}",
                    x->code, i, i);
    if (r.status == 200)
        __atomic_fetch_add(&x->ok, 1, __ATOMIC_RELAXED);
    else if (r.status == 422 && !strcmp(tfx_err_code(&r), "used_up"))
        __atomic_fetch_add(&x->used_up, 1, __ATOMIC_RELAXED);
    else if (__atomic_fetch_add(&x->other, 1, __ATOMIC_RELAXED) == 0)
        snprintf(x->other_body, sizeof x->other_body, "%d %s", r.status, r.body ? r.body : "");
    tfx_resp_free(&r);
}

Test(coupons_race, single_use_code_raced_by_500_succeeds_once)
{
    start(NULL);
    ctfx_campaign("race", NULL);
    go();
    json_t *g = ctfx_generate("race", 1, "\"max_uses\":1");
    struct race x = { .code = ctfx_code(g, 0) };
    ctfx_run(500, 500, race_one, &x);
    ctfx_assert_no_lost();
    cr_assert_eq(x.other, 0, "unexpected answers, first: %s", x.other_body);
    cr_assert_eq(x.ok, 1, "%d redemptions of a single-use code succeeded", x.ok);
    cr_assert_eq(x.used_up, 499);
    json_t *s = ctfx_stats("race");
    cr_assert_eq(json_integer_value(json_object_get(s, "redeemed")), 1);
    json_decref(s);
    json_decref(g);
}

/* --- a money budget under 10,000 redemptions of random amounts ----------- */

struct spend {
    const char *code;
    long long ok_milli; /* sum of acknowledged amounts */
    int ok, exhausted, other;
    char other_body[512];
};

static void spend_one(int i, void *ud)
{
    struct spend *x = ud;
    unsigned h = (unsigned)i * 2654435761u; /* 0.01 .. 9.99 EUR, scattered */
    int cents = 1 + (int)((h >> 8) % 999);
    struct tfx_resp r;
    ctfx_post_counted(&r, "/api/v1/coupons/redeem",
                    "{\"code\":\"%s\",\"customer_id\":\"shopper-%d\",\"order_id\":\"b-%d\","
                    "\"amount\":%d.%02d,\"currency\":\"EUR\"}",
                    x->code, i % 977, i, cents / 100, cents % 100);
    if (r.status == 200) {
        __atomic_fetch_add(&x->ok, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&x->ok_milli, (long long)cents * 10, __ATOMIC_RELAXED);
    } else if (r.status == 422 && !strcmp(tfx_err_code(&r), "budget_exhausted")) {
        __atomic_fetch_add(&x->exhausted, 1, __ATOMIC_RELAXED);
    } else if (__atomic_fetch_add(&x->other, 1, __ATOMIC_RELAXED) == 0) {
        snprintf(x->other_body, sizeof x->other_body, "%d %s", r.status, r.body ? r.body : "");
    }
    tfx_resp_free(&r);
}

Test(coupons_race, budget_of_1000_eur_never_overspent_by_10000_redemptions)
{
    start(NULL);
    ctfx_campaign("budget", "budget = { amount = 1000, currency = \"EUR\", per = \"campaign\" },");
    go();
    /* one shared code, usable by anyone, any number of times */
    json_t *g = ctfx_generate("budget", 1, "\"shared\":true,\"max_uses\":0,\"per_customer\":0");
    struct spend x = { .code = ctfx_code(g, 0) };
    ctfx_run(10000, 16, spend_one, &x);
    ctfx_assert_no_lost();
    cr_assert_eq(x.other, 0, "unexpected answers, first: %s", x.other_body);
    cr_assert_eq(x.ok + x.exhausted, 10000);
    cr_assert_gt(x.exhausted, 0, "the budget was never reached: the test proves nothing");
    json_t *s = ctfx_stats("budget");
    json_t *b = json_object_get(s, "budget");
    cr_assert_not_null(b, "no budget in %s", json_dumps(s, 0));
    long long spent = ctfx_milli(json_object_get(b, "spent"));
    cr_assert_leq(spent, 1000000, "spent %lld thousandths of a 1,000 EUR budget", spent);
    cr_assert_eq(spent, x.ok_milli, "spent %lld but the acknowledged redemptions add up to %lld",
                 spent, x.ok_milli);
    cr_assert_eq(json_integer_value(json_object_get(s, "redeemed")), x.ok);
    cr_assert_eq(ctfx_milli(json_object_get(s, "discount_total")), x.ok_milli);
    cr_log_info("%d redemptions accepted, %d refused, %lld.%03lld EUR spent", x.ok, x.exhausted,
                spent / 1000, spent % 1000);
    json_decref(s);
    json_decref(g);
}

/* --- 10,000 codes, 12,000 customers ------------------------------------- */

struct assign {
    char (*codes)[16];
    int exhausted, other;
    char other_body[512];
};

static void assign_one(int i, void *ud)
{
    struct assign *x = ud;
    struct tfx_resp r;
    ctfx_post_counted(&r, "/api/v1/campaigns/pool/coupons/assign", "{\"customer_id\":\"cust-%05d\"}", i);
    if (r.status == 200) {
        const char *c = json_string_value(json_object_get(r.json, "code"));
        snprintf(x->codes[i], sizeof x->codes[i], "%s", c ? c : "");
    } else if (r.status == 409 && !strcmp(tfx_err_code(&r), "pool_exhausted")) {
        __atomic_fetch_add(&x->exhausted, 1, __ATOMIC_RELAXED);
    } else if (__atomic_fetch_add(&x->other, 1, __ATOMIC_RELAXED) == 0) {
        snprintf(x->other_body, sizeof x->other_body, "%d %s", r.status, r.body ? r.body : "");
    }
    tfx_resp_free(&r);
}

static int cmp16(const void *a, const void *b) { return strcmp(a, b); }

Test(coupons_race, pool_of_10000_codes_for_12000_customers)
{
    start(NULL);
    ctfx_campaign("pool", NULL);
    go();
    json_t *g = ctfx_generate("pool", 10000, NULL);
    struct assign x = { .codes = calloc(12000, 16) };
    ctfx_run(12000, 16, assign_one, &x);
    ctfx_assert_no_lost();
    cr_assert_eq(x.other, 0, "unexpected answers, first: %s", x.other_body);
    cr_assert_eq(x.exhausted, 2000);
    int n = 0;
    for (int i = 0; i < 12000; i++)
        if (x.codes[i][0])
            memmove(x.codes[n++], x.codes[i], 16);
    cr_assert_eq(n, 10000);
    qsort(x.codes, (size_t)n, 16, cmp16);
    for (int i = 1; i < n; i++)
        cr_assert_neq(strcmp(x.codes[i - 1], x.codes[i]), 0, "code %s given twice", x.codes[i]);
    /* idempotent: a customer asking again gets the same code */
    struct tfx_resp r;
    ctfx_post(&r, "POST", "/api/v1/campaigns/pool/coupons/assign", "{\"customer_id\":\"cust-00007\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(json_is_false(json_object_get(r.json, "assigned")));
    tfx_resp_free(&r);
    json_t *s = ctfx_stats("pool");
    cr_assert_eq(json_integer_value(json_object_get(s, "assigned")), 10000);
    cr_assert_eq(json_integer_value(json_object_get(s, "free")), 0);
    json_decref(s);
    /* exactly the generated codes were given out */
    char (*gen)[16] = calloc(10000, 16);
    for (int i = 0; i < 10000; i++)
        snprintf(gen[i], 16, "%s", ctfx_code(g, (size_t)i));
    qsort(gen, 10000, 16, cmp16);
    cr_assert_eq(memcmp(gen, x.codes, (size_t)10000 * 16), 0);
    free(gen);
    free(x.codes);
    json_decref(g);
}

/* --- good and bad redemptions in the same batches ---------------------------------
 * Redemptions that reach the writer thread together share one store
 * transaction: refusals (unknown code, used up, order conflict) must get
 * their own answers and leave every other redemption in the batch as it
 * would be alone. */

#define MIX_N 400

struct mix {
    json_t *single;     /* single-use codes, one per "good" request */
    const char *hot;    /* one single-use code every "hot" request wants */
    int status[MIX_N];
    char code[MIX_N][32];
};

static void mix_one(int i, void *ud)
{
    struct mix *x = ud;
    struct tfx_resp r;
    switch (i % 4) {
    case 0: case 1: /* good: its own single-use code */
        ctfx_post_counted(&r, "/api/v1/coupons/redeem",
                        "{\"code\":\"%s\",\"customer_id\":\"m%d\",\"order_id\":\"mix-%d\","
                        "\"amount\":2,\"currency\":\"EUR\"}", ctfx_code(x->single, (size_t)(i / 4 * 2 + i % 4)), i, i);
        break;
    case 2: /* a code nobody issued */
        ctfx_post_counted(&r, "/api/v1/coupons/redeem",
                        "{\"code\":\"GHOST-%06d\",\"customer_id\":\"m%d\",\"order_id\":\"mix-%d\","
                        "\"amount\":2,\"currency\":\"EUR\"}", i, i, i);
        break;
    default: /* everybody wants the hot code: one wins */
        ctfx_post_counted(&r, "/api/v1/coupons/redeem",
                        "{\"code\":\"%s\",\"customer_id\":\"m%d\",\"order_id\":\"mix-%d\","
                        "\"amount\":2,\"currency\":\"EUR\"}", x->hot, i, i);
        break;
    }
    x->status[i] = r.status;
    snprintf(x->code[i], sizeof x->code[i], "%s", r.status == 200 ? "" : tfx_err_code(&r));
    tfx_resp_free(&r);
}

Test(coupons_race, refusals_in_a_batch_leave_the_other_redemptions_alone)
{
    start(NULL);
    ctfx_campaign("mix", "budget = { amount = 100000, currency = \"EUR\" },");
    go();
    struct mix *x = calloc(1, sizeof *x);
    x->single = ctfx_generate("mix", MIX_N / 2, "\"max_uses\":1");
    json_t *hot = ctfx_generate("mix", 1, "\"max_uses\":1");
    x->hot = ctfx_code(hot, 0);
    ctfx_run(MIX_N, 64, mix_one, x);
    ctfx_assert_no_lost();
    int good = 0, hot_ok = 0, hot_used = 0;
    for (int i = 0; i < MIX_N; i++) {
        if (i % 4 < 2) {
            cr_assert_eq(x->status[i], 200, "good redemption %d refused: %d %s", i, x->status[i], x->code[i]);
            good++;
        } else if (i % 4 == 2) {
            cr_assert_eq(x->status[i], 404, "unknown code %d: %d", i, x->status[i]);
            cr_assert_str_eq(x->code[i], "unknown_code");
        } else if (x->status[i] == 200) {
            hot_ok++;
        } else {
            cr_assert_eq(x->status[i], 422, "hot code %d: %d %s", i, x->status[i], x->code[i]);
            cr_assert_str_eq(x->code[i], "used_up");
            hot_used++;
        }
    }
    cr_assert_eq(hot_ok, 1, "the single-use hot code was redeemed %d times", hot_ok);
    cr_assert_eq(hot_used, MIX_N / 4 - 1);
    json_t *s = ctfx_stats("mix");
    cr_assert_eq(json_integer_value(json_object_get(s, "redeemed")), good + 1);
    long long spent = ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent"));
    cr_assert_eq(spent, (long long)(good + 1) * 2000, "budget spent %lld", spent);
    json_decref(s);
    /* every redemption that reached the store went through the writer */
    struct tfx_resp m;
    cr_assert_eq(tfx_req(&srv, "GET", "/metrics", NULL, &m), 200);
    double batched = 0, batches = 0, largest = 0;
    cr_assert_eq(tfx_metric(m.body, "promod_coupon_redeem_batched_total", "", &batched), 1);
    cr_assert_eq(tfx_metric(m.body, "promod_coupon_redeem_batches_total", "", &batches), 1);
    cr_assert_eq(tfx_metric(m.body, "promod_coupon_redeem_batch_largest", "", &largest), 1);
    tfx_resp_free(&m);
    cr_assert_geq(batched, MIX_N, "%g redemptions through the writer, %d sent", batched, MIX_N);
    cr_assert_leq(batches, batched);
    cr_log_info("%g redemptions in %g batches (largest %g)", batched, batches, largest);
    json_decref(hot);
    json_decref(x->single);
    free(x);
}

/* --- SIGKILL during redemption load ----------------------------------------------- */

#define KILL_THREADS 32 /* enough at once that redemptions share batches when the kill comes */
#define KILL_MAX 3000

struct kload {
    const char *shared;  /* a shared code: the budget's arithmetic */
    json_t *single;      /* single-use codes, one per odd request */
    int acked[KILL_MAX]; /* 1 = acknowledged on the shared code, 2 = on a single-use one */
    int next, stop, nacked;
};

static int kill_redeem(struct kload *x, int i, struct tfx_resp *r)
{
    const char *code = i % 2 ? ctfx_code(x->single, (size_t)i / 2) : x->shared;
    return ctfx_post(r, "POST", "/api/v1/coupons/redeem",
                     "{\"code\":\"%s\",\"customer_id\":\"k%d\",\"order_id\":\"k-%d\","
                     "\"amount\":%d.5,\"currency\":\"EUR\"}",
                     code, i, i, 1 + i % 7);
}

static void *kill_worker(void *arg)
{
    struct kload *x = arg;
    for (;;) {
        int i = __atomic_fetch_add(&x->next, 1, __ATOMIC_RELAXED);
        if (i >= KILL_MAX || __atomic_load_n(&x->stop, __ATOMIC_RELAXED))
            break;
        struct tfx_resp r;
        int st = kill_redeem(x, i, &r);
        tfx_resp_free(&r);
        if (st == 200) {
            x->acked[i] = 1 + i % 2;
            __atomic_fetch_add(&x->nacked, 1, __ATOMIC_RELEASE);
        } else if (st == 0) {
            break; /* the server is gone: this one may or may not have landed */
        }
    }
    return NULL;
}

Test(coupons_race, acknowledged_redemptions_survive_sigkill)
{
    start(NULL);
    ctfx_campaign("kill", "budget = { amount = 1000000, currency = \"EUR\" },");
    go();
    json_t *sh = ctfx_generate("kill", 1, "\"shared\":true,\"max_uses\":0,\"per_customer\":0");
    struct kload *x = calloc(1, sizeof *x);
    x->shared = ctfx_code(sh, 0);
    x->single = ctfx_generate("kill", KILL_MAX / 2, "\"max_uses\":1");
    pthread_t th[KILL_THREADS];
    for (int i = 0; i < KILL_THREADS; i++)
        pthread_create(&th[i], NULL, kill_worker, x);
    for (int spins = 0; spins < 4000 && __atomic_load_n(&x->nacked, __ATOMIC_ACQUIRE) < 300; spins++)
        usleep(5000);
    tfx_server_kill(&srv);
    __atomic_store_n(&x->stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < KILL_THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_gt(x->nacked, 0, "nothing was acknowledged before the kill");
    cr_assert_eq(tfx_server_start(&srv), 0, "no restart after SIGKILL");
    long long acked_milli = 0;
    int n = 0;
    for (int i = 0; i < KILL_MAX; i++) {
        if (!x->acked[i])
            continue;
        n++;
        acked_milli += (1 + i % 7) * 1000 + 500;
        /* the same order again: stored, so it is a replay with the same answer */
        struct tfx_resp r;
        kill_redeem(x, i, &r);
        cr_assert_eq(r.status, 200, "acknowledged redemption k-%d lost: %d %s", i, r.status, r.body);
        cr_assert(json_is_true(json_object_get(r.json, "replayed")), "k-%d redeemed anew: %s", i, r.body);
        tfx_resp_free(&r);
        if (x->acked[i] == 2) { /* a single-use code stays used */
            ctfx_post(&r, "POST", "/api/v1/coupons/validate", "{\"code\":\"%s\",\"customer_id\":\"z%d\"}",
                      ctfx_code(x->single, (size_t)i / 2), i);
            cr_assert_eq(r.status, 422, "%s", r.body);
            cr_assert_str_eq(tfx_err_code(&r), "used_up");
            tfx_resp_free(&r);
        }
    }
    /* invariants: the budget's spend is the sum of the stored redemptions,
     * which include every acknowledged one (and maybe some in flight) */
    json_t *s = ctfx_stats("kill");
    long long spent = ctfx_milli(json_object_get(json_object_get(s, "budget"), "spent"));
    long long total = ctfx_milli(json_object_get(s, "discount_total"));
    cr_assert_eq(spent, total, "budget %lld vs redemptions %lld", spent, total);
    cr_assert_geq(spent, acked_milli);
    cr_assert_geq(json_integer_value(json_object_get(s, "redeemed")), n);
    cr_log_info("%d acknowledged redemptions, all present after SIGKILL", n);
    json_decref(s);
    json_decref(x->single);
    json_decref(sh);
    free(x);
}
