/* test_loyalty.c — the points ledger on a real LMDB store, against a model:
 * random earn / burn / adjust / expiry / replay sequences keep balance =
 * the sum of the live lots' points >= 0, burns take the oldest lots first,
 * idempotent replays and refusals change nothing, tiers follow the points
 * earned in the qualification window, up and down. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "engine/loyalty.h"
#include "fixture.h"
#include "store/store.h"

static char dir[256];
static struct store *st;

static void setup(void)
{
    log_set_level(LOG_ERROR);
    tfx_tmpdir(dir, sizeof dir);
    struct store_opts o = { .dir = dir, .sync_interval_ms = 50 };
    cr_assert_eq(store_open(&o, &st), 0);
}

static void teardown(void)
{
    store_close(st);
    st = NULL;
    tfx_rmrf(dir);
}

TestSuite(loyalty, .init = setup, .fini = teardown, .timeout = 120);

static const struct loyalty_program prog = {
    .tiers = { { "silver", 100 }, { "gold", 500 } }, .ntiers = 2,
    .window_s = 30 * 86400, .expiry_s = 10 * 86400,
};

/* --- the model ---------------------------------------------------------- */

#define MAXLOTS 4096
#define MAXTX 4096
struct lot { long long rem, expires; };
struct mtx { char id[32]; int type; long long points; };
struct model {
    struct lot lots[MAXLOTS];
    int nlots;
    long long earned_day[4096]; /* points earned by day since the start */
    struct mtx tx[MAXTX];
    int ntx;
};

static long long m_balance(const struct model *m, long long now)
{
    long long b = 0;
    for (int i = 0; i < m->nlots; i++)
        if (!m->lots[i].expires || m->lots[i].expires > now)
            b += m->lots[i].rem;
    return b;
}

static void m_expire(struct model *m, long long now)
{
    for (int i = 0; i < m->nlots; i++)
        if (m->lots[i].expires && m->lots[i].expires <= now)
            m->lots[i].rem = 0;
}

static void m_take(struct model *m, long long p)
{
    for (int i = 0; i < m->nlots && p > 0; i++) {
        long long t = m->lots[i].rem < p ? m->lots[i].rem : p;
        m->lots[i].rem -= t;
        p -= t;
    }
}

static long long m_qual(const struct model *m, long long t0, long long now)
{
    long long from = (now - prog.window_s) / 86400 + 1, q = 0;
    for (long long d = from; d <= now / 86400; d++)
        if (d >= t0 / 86400 && d - t0 / 86400 < 4096)
            q += m->earned_day[d - t0 / 86400];
    return q;
}

/* --- helpers -------------------------------------------------------------- */

/* the stored ledger of `cust` as text, to compare before and after */
static char *snapshot(const char *cust)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    int rc;
    json_t *x = loyalty_export(t, cust, &rc);
    store_txn_end(t);
    char *s = x ? json_dumps(x, JSON_SORT_KEYS) : strdup("none");
    json_decref(x);
    return s;
}

/* sum of the lots' remaining points as stored, and the summary's balance */
static void stored(const char *cust, long long *lots, long long *balance)
{
    struct store_txn *t;
    cr_assert_eq(store_rtxn_begin(st, &t), 0);
    int rc;
    json_t *x = loyalty_export(t, cust, &rc);
    store_txn_end(t);
    *lots = 0;
    *balance = 0;
    if (!x)
        return;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(x, "entries"), i, e) *lots += json_integer_value(json_object_get(e, "remaining"));
    *balance = json_integer_value(json_object_get(json_object_get(x, "summary"), "balance"));
    json_decref(x);
}

static int apply(const char *cust, int type, long long points, const char *txid, long long now,
                 struct loyalty_change *ch, int *replayed, struct reqerr *e)
{
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct loyalty_tx tx = { .type = type, .points = points, .txid = txid, .reason = "test" };
    struct loyalty_entry en;
    struct loyalty_summary after;
    int rc = loyalty_apply(wt, cust, &prog, &tx, now, &en, replayed, &after, ch, e);
    if (rc)
        store_txn_end(wt);
    else
        cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
    return rc;
}

Test(loyalty, random_sequences_keep_the_invariants)
{
    struct model *m = calloc(1, sizeof *m);
    srand(20261203);
    const long long t0 = 1800000000LL;
    long long now = t0;
    const char *cust = "prop";
    int refused = 0, replays = 0, expired_seen = 0, tier_changes = 0;
    for (int step = 0; step < 1500; step++) {
        now += rand() % 7200; /* up to two hours */
        if (rand() % 50 == 0)
            now += 86400LL * (rand() % 12); /* sometimes days: lots expire */
        m_expire(m, now);
        int op = rand() % 10;
        struct reqerr e = { 0 };
        struct loyalty_change ch;
        int replayed = 0, rc = 0;
        long long before = m_balance(m, now);
        if (op < 4) { /* earn */
            long long p = 1 + rand() % 80;
            struct mtx *t = &m->tx[m->ntx % MAXTX];
            snprintf(t->id, sizeof t->id, "e%d", step);
            rc = apply(cust, LOYALTY_EARN, p, t->id, now, &ch, &replayed, &e);
            cr_assert_eq(rc, 0, "earn: %s", e.message);
            t->type = LOYALTY_EARN;
            t->points = p;
            m->ntx++;
            m->lots[m->nlots++] = (struct lot){ p, now + prog.expiry_s };
            m->earned_day[now / 86400 - t0 / 86400] += p;
        } else if (op < 7) { /* burn, sometimes too much */
            long long p = 1 + rand() % (before > 0 && rand() % 4 ? before : 200);
            char id[32];
            snprintf(id, sizeof id, "b%d", step);
            char *snap = snapshot(cust);
            rc = apply(cust, LOYALTY_BURN, p, id, now, &ch, &replayed, &e);
            if (p > before) {
                cr_assert_eq(rc, ERR_INVAL, "a burn of %lld over a balance of %lld went through", p, before);
                cr_assert_str_eq(e.code, "insufficient_points");
                cr_assert_str_eq(e.field, "points");
                char *after = snapshot(cust);
                cr_assert_str_eq(snap, after, "a refused burn changed the ledger");
                free(after);
                refused++;
            } else {
                cr_assert_eq(rc, 0, "burn: %s", e.message);
                m_take(m, p);
                struct mtx *t = &m->tx[m->ntx++ % MAXTX];
                snprintf(t->id, sizeof t->id, "%s", id);
                t->type = LOYALTY_BURN;
                t->points = -p;
            }
            free(snap);
        } else if (op < 8) { /* adjust either way */
            long long p = (rand() % 2 ? 1 : -1) * (1 + rand() % 50);
            char id[32];
            snprintf(id, sizeof id, "a%d", step);
            rc = apply(cust, LOYALTY_ADJUST, p, id, now, &ch, &replayed, &e);
            if (p < 0 && -p > before) {
                cr_assert_eq(rc, ERR_INVAL);
                refused++;
            } else {
                cr_assert_eq(rc, 0, "adjust: %s", e.message);
                if (p > 0)
                    m->lots[m->nlots++] = (struct lot){ p, now + prog.expiry_s };
                else
                    m_take(m, -p);
                struct mtx *t = &m->tx[m->ntx++ % MAXTX];
                snprintf(t->id, sizeof t->id, "%s", id);
                t->type = LOYALTY_ADJUST;
                t->points = p;
            }
        } else if (m->ntx) { /* replay an earlier transaction: nothing changes */
            struct mtx *t = &m->tx[rand() % (m->ntx < MAXTX ? m->ntx : MAXTX)];
            char *snap = snapshot(cust);
            long long pts = t->type == LOYALTY_BURN ? -t->points : t->points;
            rc = apply(cust, t->type, pts, t->id, now, &ch, &replayed, &e);
            cr_assert_eq(rc, 0, "replay of %s: %s", t->id, e.message);
            cr_assert_eq(replayed, 1);
            char *after = snapshot(cust);
            cr_assert_str_eq(snap, after, "a replay changed the ledger");
            free(after);
            /* the same id with other points is a conflict, and changes nothing too */
            rc = apply(cust, t->type, pts + (pts > 0 ? 1 : -1), t->id, now, &ch, &replayed, &e);
            cr_assert_eq(rc, ERR_CONFLICT);
            cr_assert_str_eq(e.code, "transaction_conflict");
            after = snapshot(cust);
            cr_assert_str_eq(snap, after, "a conflicting replay changed the ledger");
            free(after);
            free(snap);
            replays++;
            continue;
        }
        if (!rc) {
            expired_seen += ch.expired > 0;
            tier_changes += ch.tier_changed;
        }
        /* invariants after every step */
        long long lots, balance;
        stored(cust, &lots, &balance);
        if (!rc) { /* a write expired what was due: stored = model */
            cr_assert_eq(balance, lots, "step %d: balance %lld but lots hold %lld", step, balance, lots);
            cr_assert_eq(balance, m_balance(m, now), "step %d: balance %lld, model %lld", step, balance,
                         m_balance(m, now));
        }
        cr_assert_geq(balance, 0);
        struct store_txn *t;
        cr_assert_eq(store_rtxn_begin(st, &t), 0);
        struct loyalty_summary v;
        int64_t q;
        cr_assert_eq(loyalty_view(t, cust, &prog, now, &v, &q), 0);
        store_txn_end(t);
        cr_assert_eq(v.balance, m_balance(m, now), "step %d: view %lld, model %lld", step, v.balance,
                     m_balance(m, now));
        cr_assert_eq(q, m_qual(m, t0, now), "step %d: qualifying %lld, model %lld", step, (long long)q,
                     m_qual(m, t0, now));
        const char *want = q >= 500 ? "gold" : q >= 100 ? "silver" : "";
        cr_assert_str_eq(v.tier, want, "step %d: tier %s with %lld qualifying points", step, v.tier,
                         (long long)q);
    }
    cr_assert_gt(refused, 10);
    cr_assert_gt(replays, 10);
    cr_assert_gt(expired_seen, 0, "no lot ever expired: the sequence tests less than it claims");
    cr_assert_gt(tier_changes, 0);
    free(m);
}

Test(loyalty, burns_take_the_oldest_points_first)
{
    struct reqerr e = { 0 };
    struct loyalty_change ch;
    int rp;
    long long now = 1800000000LL;
    cr_assert_eq(apply("fifo", LOYALTY_EARN, 50, "e1", now, &ch, &rp, &e), 0);
    cr_assert_eq(apply("fifo", LOYALTY_EARN, 30, "e2", now + 5 * 86400, &ch, &rp, &e), 0);
    cr_assert_eq(apply("fifo", LOYALTY_BURN, 60, "b1", now + 6 * 86400, &ch, &rp, &e), 0);
    /* e1 is gone, e2 has 20 left; at day 10 nothing of e1 can expire */
    cr_assert_eq(apply("fifo", LOYALTY_EARN, 1, "e3", now + 10 * 86400 + 1, &ch, &rp, &e), 0);
    cr_assert_eq(ch.expired, 0, "points already burnt expired again");
    cr_assert_eq(apply("fifo", LOYALTY_EARN, 1, "e4", now + 15 * 86400 + 1, &ch, &rp, &e), 0);
    cr_assert_eq(ch.expired, 20, "e2's remaining 20 points should expire on day 15: %lld", (long long)ch.expired);
    long long lots, bal;
    stored("fifo", &lots, &bal);
    cr_assert_eq(bal, 2);
    cr_assert_eq(lots, 2);
}

Test(loyalty, tiers_go_up_and_down_with_the_window)
{
    struct reqerr e = { 0 };
    struct loyalty_change ch;
    int rp;
    long long now = 1800000000LL;
    cr_assert_eq(apply("tier", LOYALTY_EARN, 120, "e1", now, &ch, &rp, &e), 0);
    cr_assert(ch.tier_changed);
    cr_assert_str_eq(ch.to, "silver");
    cr_assert_eq(apply("tier", LOYALTY_EARN, 400, "e2", now + 86400, &ch, &rp, &e), 0);
    cr_assert_str_eq(ch.from, "silver");
    cr_assert_str_eq(ch.to, "gold");
    /* burning does not lower the tier: qualification counts what was earned */
    cr_assert_eq(apply("tier", LOYALTY_BURN, 300, "b1", now + 2 * 86400, &ch, &rp, &e), 0);
    cr_assert_eq(ch.tier_changed, 0);
    /* 30 days after the first earn it leaves the window: 400 < 500, silver */
    struct store_txn *wt;
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    struct loyalty_summary s;
    cr_assert_eq(loyalty_refresh(wt, "tier", &prog, now + 30 * 86400 + 10, &s, &ch), 0);
    cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
    cr_assert(ch.tier_changed);
    cr_assert_str_eq(ch.to, "silver");
    cr_assert_eq(store_wtxn_begin(st, &wt), 0);
    cr_assert_eq(loyalty_refresh(wt, "tier", &prog, now + 31 * 86400 + 10, &s, &ch), 0);
    cr_assert_eq(store_txn_commit(wt, STORE_ASYNC), 0);
    cr_assert_str_eq(ch.to, "");
    cr_assert_str_eq(s.tier, "");
}

Test(loyalty, bad_transactions_are_refused_naming_the_field)
{
    struct { int type; long long points; const char *txid; const char *field; } bad[] = {
        { LOYALTY_EARN, 0, "t", "points" },   { LOYALTY_EARN, -3, "t", "points" },
        { LOYALTY_BURN, 0, "t", "points" },   { LOYALTY_ADJUST, 0, "t", "points" },
        { LOYALTY_EARN, 5, "a b", "transaction_id" }, { LOYALTY_EARN, 5, "", "transaction_id" },
        { 9, 5, "t", "type" }, { LOYALTY_EARN, LOYALTY_MAX_POINTS + 1, "t", "points" },
        { LOYALTY_BURN, 1, "t", "points" }, /* more than the balance (0) */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct reqerr e = { 0 };
        struct loyalty_change ch;
        int rp;
        int rc = apply("bad", bad[i].type, bad[i].points, bad[i].txid, 1800000000LL, &ch, &rp, &e);
        cr_assert_neq(rc, 0, "case %zu accepted", i);
        cr_assert_str_eq(e.field, bad[i].field, "case %zu: %s", i, e.message);
    }
    char *s = snapshot("bad");
    cr_assert_str_eq(s, "none", "refusals wrote something: %s", s);
    free(s);
}
