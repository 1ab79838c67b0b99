/* test_coupons_batch.c — coupons_redeem_batch on real LMDB stores: a
 * batch gives every redemption the outcome it would get alone, in order
 * (refusals, replays, conflicts, used-up codes and the budget included),
 * refusals do not disturb the others, and what is stored is what the same
 * redemptions one transaction each would have stored. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "engine/coupons.h"
#include "fixture.h"
#include "store/store.h"

static char dir[2][256];
static struct store *st[2];

static void setup(void)
{
    log_set_level(LOG_ERROR);
    for (int i = 0; i < 2; i++) {
        tfx_tmpdir(dir[i], sizeof dir[i]);
        struct store_opts o = { .dir = dir[i], .sync_interval_ms = 50 };
        cr_assert_eq(store_open(&o, &st[i]), 0);
    }
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++) {
        store_close(st[i]);
        st[i] = NULL;
        tfx_rmrf(dir[i]);
    }
}

TestSuite(coupons_batch, .init = setup, .fini = teardown, .timeout = 120);

static struct coupons_budget g_budget = { .amount_m = 20000, .currency = "EUR" }; /* 20 EUR */

static void camp_active(void *ud, const char *id, struct coupons_campaign *out)
{
    (void)ud;
    (void)id;
    out->found = out->active = 1;
    out->budget = g_budget;
}

static void add_codes(struct store *s, const char *const *codes, const long *max_uses, size_t n)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(s, &wt), 0);
    for (size_t i = 0; i < n; i++) {
        struct coupons_opts o = { .pool = "p", .max_uses = max_uses[i], .per_customer = 0 };
        cr_assert_eq(coupons_code_add(wt, "camp", &o, codes[i], NULL, 1), 0);
    }
    cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
}

static void item(struct coupons_batch_item *it, const char *code, const char *cust,
                 const char *order, int64_t amount_m)
{
    memset(it, 0, sizeof *it);
    it->q = (struct coupons_req){ code, cust, order, amount_m, "EUR", 1800000000 };
}

Test(coupons_batch, each_redemption_gets_its_own_outcome_in_one_commit)
{
    static const char *const codes[] = { "ONE-1", "ONE-2", "MULTI-3" };
    static const long uses[] = { 1, 1, 5 };
    add_codes(st[0], codes, uses, 3);
    struct coupons_batch_item b[9];
    item(&b[0], "one-1", "ann", "o1", 5000);    /* redeemed */
    item(&b[1], "ONE-1", "bob", "o2", 5000);    /* used_up: b[0] took it, same txn */
    item(&b[2], "NOPE-9", "cid", "o3", 5000);   /* unknown_code */
    item(&b[3], "ONE-1", "ann", "o1", 5000);    /* the same order again: replayed */
    item(&b[4], "ONE-1", "ann", "o1", 6000);    /* same order, other amount: order_conflict */
    item(&b[5], "ONE-2", "cid", "o4", 10000);   /* redeemed: 15 of 20 EUR spent */
    item(&b[6], "MULTI-3", "dan", "o5", 6000);  /* budget_exhausted: 21 > 20 */
    item(&b[7], "MULTI-3", "dan", "o6", 5000);  /* redeemed: exactly 20 */
    item(&b[8], "MULTI-3", "eve", "o7", 0);     /* invalid amount */
    struct coupons_batch_item *p[9];
    for (int i = 0; i < 9; i++)
        p[i] = &b[i];
    cr_assert_eq(coupons_redeem_batch(st[0], p, 9, camp_active, NULL), 1, "one commit for the batch");
    static const char *const want[] = { NULL, "used_up", "unknown_code", NULL, "order_conflict",
                                        NULL, "budget_exhausted", NULL, "invalid_field" };
    uint64_t ticket = b[0].ticket;
    cr_assert_gt(ticket, 0);
    for (int i = 0; i < 9; i++) {
        if (want[i]) {
            cr_assert_neq(b[i].rc, 0, "item %d accepted", i);
            cr_assert_str_eq(b[i].e.code, want[i], "item %d: %s", i, b[i].e.message);
            cr_assert_eq(b[i].ticket, 0, "a refusal waits for nothing");
        } else {
            cr_assert_eq(b[i].rc, 0, "item %d: %s", i, b[i].e.message);
            cr_assert_eq(b[i].ticket, ticket, "every success shares the commit");
        }
        reqerr_clear(&b[i].e);
    }
    cr_assert(b[3].out.replayed);
    cr_assert_eq(b[7].out.spent_m, 20000);
    store_sync_wait(st[0], ticket);
    cr_assert_geq(store_synced(st[0]), ticket);
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st[0], &t), 0);
    struct coupons_stats s;
    cr_assert_eq(coupons_stats_read(t, "camp", &s), 0);
    struct coupons_code c;
    cr_assert_eq(coupons_code_get(t, "ONE-1", &c), 0);
    cr_assert_eq(c.uses, 1);
    cr_assert_eq(coupons_code_get(t, "MULTI-3", &c), 0);
    cr_assert_eq(c.uses, 1);
    store_txn_end(t);
    cr_assert_eq(s.v[COUPONS_REDEEMED], 3);
    cr_assert_eq(s.v[COUPONS_SPENT_M], 20000);
}

/* A random stream of redemptions over few codes, customers and orders
 * (repeats, conflicts, used-up codes, a budget that runs out) applied in
 * random-sized batches to one store and one transaction each to the
 * other: item by item the same outcome, and the same sums at the end. */
#define NITEMS 600

Test(coupons_batch, batches_answer_as_one_transaction_each_would)
{
    const char *codes[12];
    long uses[12];
    char names[12][24];
    for (int i = 0; i < 12; i++) {
        snprintf(names[i], sizeof names[i], "PROP-%02d", i);
        codes[i] = names[i];
        uses[i] = i % 3 == 0 ? 1 : i % 3 == 1 ? 4 : 0; /* single-use, four uses, unlimited */
    }
    for (int s = 0; s < 2; s++)
        add_codes(st[s], codes, uses, 12);
    g_budget.amount_m = 400000; /* runs out part-way */
    unsigned seed = 12345;
    static struct coupons_batch_item a[NITEMS], b[NITEMS];
    static char cust[NITEMS][32], order[NITEMS][32], code[NITEMS][32];
    for (int i = 0; i < NITEMS; i++) {
        int o = (int)(rand_r(&seed) % 400); /* repeats: replays and conflicts */
        snprintf(order[i], sizeof order[i], "ord-%d", o);
        snprintf(cust[i], sizeof cust[i], "cust-%d", rand_r(&seed) % 5 ? o % 50 : (int)(rand_r(&seed) % 50));
        int k = (int)(rand_r(&seed) % 13); /* 12 = a code that does not exist */
        snprintf(code[i], sizeof code[i], "%s", k < 12 ? codes[k] : "GHOST-1");
        int64_t amt = rand_r(&seed) % 20 ? 1000 * (1 + o % 9) : 0; /* some bad amounts */
        item(&a[i], code[i], cust[i], order[i], amt);
        b[i] = a[i];
    }
    /* store 0: batches of 1..64 */
    int commits = 0;
    for (int i = 0; i < NITEMS;) {
        int n = 1 + (int)(rand_r(&seed) % 64);
        if (n > NITEMS - i)
            n = NITEMS - i;
        struct coupons_batch_item *p[64];
        for (int k = 0; k < n; k++)
            p[k] = &a[i + k];
        int rc = coupons_redeem_batch(st[0], p, (size_t)n, camp_active, NULL);
        cr_assert_eq(rc, 1, "a batch took %d commits", rc);
        commits += rc;
        i += n;
    }
    /* store 1: one transaction each */
    for (int i = 0; i < NITEMS; i++) {
        struct store_txn *wt;
        cr_assert_eq(store_wtxn_begin(st[1], &wt), 0);
        b[i].rc = coupons_redeem(wt, &b[i].q, camp_active, NULL, &b[i].out, &b[i].e);
        if (b[i].rc)
            store_txn_end(wt);
        else
            cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < NITEMS; i++) {
        cr_assert_eq(a[i].rc, b[i].rc, "item %d (%s %s %s): batch %d %s, alone %d %s", i, code[i],
                     cust[i], order[i], a[i].rc, a[i].e.code, b[i].rc, b[i].e.code);
        cr_assert_str_eq(a[i].e.code, b[i].e.code, "item %d", i);
        cr_assert_eq(a[i].out.replayed, b[i].out.replayed, "item %d", i);
        cr_assert_eq(a[i].out.c.uses, b[i].out.c.uses, "item %d", i);
        cr_assert_eq(a[i].out.spent_m, b[i].out.spent_m, "item %d", i);
        cr_assert_eq(a[i].out.customer_uses, b[i].out.customer_uses, "item %d", i);
        if (a[i].rc == 0)
            ok++;
        else
            refused++;
        reqerr_clear(&a[i].e);
        reqerr_clear(&b[i].e);
    }
    cr_assert_gt(ok, 50, "the stream should mostly redeem (%d)", ok);
    cr_assert_gt(refused, 50, "the stream should meet refusals (%d)", refused);
    struct coupons_stats s[2];
    for (int k = 0; k < 2; k++) {
        struct store_txn *t;
        cr_assert_eq(store_rtxn_begin(st[k], &t), 0);
        cr_assert_eq(coupons_stats_read(t, "camp", &s[k]), 0);
        int64_t spent, allowed;
        cr_assert_eq(coupons_budget_read(t, "camp", &g_budget, 1800000000, &spent, &allowed), 0);
        cr_assert_eq(spent, s[k].v[COUPONS_SPENT_M], "budget and stats agree");
        cr_assert_leq(spent, g_budget.amount_m, "budget overspent");
        store_txn_end(t);
    }
    for (int v = 0; v < COUPONS_NSTATS; v++)
        cr_assert_eq(s[0].v[v], s[1].v[v], "stat %d: batched %lld, alone %lld", v,
                     (long long)s[0].v[v], (long long)s[1].v[v]);
    cr_log_info("%d redemptions in %d commits: %d redeemed or replayed, %d refused", NITEMS,
                commits, ok, refused);
    g_budget.amount_m = 20000;
}

/* A store that fills up in the middle of a batch: the redemption that hits
 * the full map fails half-way, so the batch is thrown away and each
 * redemption is done again alone.  Whatever each one's outcome, none is
 * half-stored: a success is there with its use, its order and its money,
 * a failure left nothing, and the stats count exactly the successes. */
Test(coupons_batch, a_store_error_mid_batch_falls_back_to_one_transaction_each)
{
    store_close(st[1]);
    tfx_rmrf(dir[1]);
    struct store_opts o = { .dir = dir[1], .sync_interval_ms = 50, .map_size = 2u << 20,
                            .map_max = 2u << 20 };
    cr_assert_eq(store_open(&o, &st[1]), 0);
    /* fill the map with single-use codes, 40 a transaction, until it refuses */
    int made = 0;
    static char codes[6000][24];
    for (int full = 0; !full && made < 6000;) {
        struct store_txn *wt;
        if (store_wtxn_begin(st[1], &wt))
            break;
        int k;
        for (k = 0; k < 40 && made + k < 6000; k++) {
            snprintf(codes[made + k], sizeof codes[0], "FILL-%05d", made + k);
            struct coupons_opts co = { .pool = "p", .max_uses = 1 };
            if (coupons_code_add(wt, "camp", &co, codes[made + k], NULL, 1)) {
                full = 1;
                break;
            }
        }
        if (full || store_txn_commit(wt, STORE_ASYNC)) {
            if (!full)
                break;
            store_txn_end(wt);
        } else {
            made += k;
        }
    }
    cr_assert_gt(made, 100, "only %d codes fit", made);
    /* redeem every one of them in one batch, with long ids: it runs out of
     * room part-way */
    int nb = made;
    static struct coupons_batch_item b[6000];
    static struct coupons_batch_item *p[6000];
    static char cust[6000][128], order[6000][128];
    for (int i = 0; i < nb; i++) {
        snprintf(cust[i], sizeof cust[i], "customer-%05d-%0100d", i, 0);
        snprintf(order[i], sizeof order[i], "order-%05d-%0100d", i, 0);
        item(&b[i], codes[i], cust[i], order[i], 10);
        p[i] = &b[i];
    }
    g_budget.amount_m = 0; /* no budget: only room decides */
    int commits = coupons_redeem_batch(st[1], p, (size_t)nb, camp_active, NULL);
    g_budget.amount_m = 20000;
    int ok = 0, failed = 0;
    for (int i = 0; i < nb; i++) {
        if (b[i].rc == 0) {
            ok++;
            cr_assert_gt(b[i].ticket, 0);
        } else {
            failed++;
            cr_assert_eq(b[i].ticket, 0);
            cr_assert_geq(b[i].e.status, 500, "item %d refused for a reason of its own: %d %s", i,
                          b[i].e.status, b[i].e.code);
        }
        reqerr_clear(&b[i].e);
    }
    cr_assert_gt(failed, 0, "a batch of %d never ran out of room: the test does not test the fallback",
                 nb);
    cr_assert_eq(commits, ok, "after a fallback each success is a commit of its own");
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st[1], &t), 0);
    for (int i = 0; i < nb; i++) {
        struct coupons_code c;
        cr_assert_eq(coupons_code_get(t, b[i].q.code, &c), 0);
        cr_assert_eq(c.uses, b[i].rc == 0 ? 1u : 0u, "item %d (rc %d): %u uses stored", i, b[i].rc,
                     c.uses);
    }
    struct coupons_stats s;
    cr_assert_eq(coupons_stats_read(t, "camp", &s), 0);
    store_txn_end(t);
    cr_assert_eq(s.v[COUPONS_REDEEMED], ok);
    cr_assert_eq(s.v[COUPONS_SPENT_M], 10 * ok);
    cr_log_info("%d codes filled the map; a batch of all of them: %d redeemed alone, %d failed for room",
                made, ok, failed);
}
