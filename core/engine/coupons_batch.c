/* coupons_batch.c — many redemptions in one write transaction (see
 * coupons_redeem_batch in coupons.h).
 *
 * Why: a redemption is a handful of small writes, but every LMDB commit
 * copies the whole path from the root to each touched leaf, the free-page
 * records and the meta page, and the group sync then writes every page the
 * commits dirtied (with MDB_WRITEMAP each also costs a write fault).  One
 * transaction for many redemptions shares the branch pages, the campaign's
 * stats and budget records and the commit, so far fewer pages go to disk
 * for each acknowledged redemption. */
#include "engine/coupons.h"
#include "base/err.h"
#include <string.h>

static void fail_item(struct coupons_batch_item *it, int rc, const char *what)
{
    memset(&it->out, 0, sizeof it->out);
    it->rc = rc;
    it->ticket = 0;
    reqerr_from_code(&it->e, rc, what);
}

/* each item in a transaction of its own: coupons_redeem's callers' way */
static int one_by_one(struct store *s, struct coupons_batch_item *const *items, size_t n,
                      coupons_campaign_fn camp, void *ud)
{
    int commits = 0;
    for (size_t i = 0; i < n; i++) {
        struct coupons_batch_item *it = items[i];
        struct store_txn *wt;
        it->ticket = 0;
        int rc = store_wtxn_begin(s, &wt);
        if (rc) {
            fail_item(it, rc, "redeem");
            continue;
        }
        it->rc = coupons_redeem(wt, &it->q, camp, ud, &it->out, &it->e);
        if (it->rc) {
            store_txn_end(wt); /* a refusal writes nothing; a failure is undone */
            continue;
        }
        if ((rc = store_txn_commit_ticket(wt, &it->ticket))) {
            fail_item(it, rc, "redeem");
            continue;
        }
        commits++;
    }
    return commits;
}

int coupons_redeem_batch(struct store *s, struct coupons_batch_item *const *items, size_t n,
                         coupons_campaign_fn camp, void *ud)
{
    if (n == 0)
        return 0;
    struct store_txn *wt;
    int rc = store_wtxn_begin(s, &wt);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            fail_item(items[i], rc, "redeem");
        return rc;
    }
    int broken = 0;
    for (size_t i = 0; i < n && !broken; i++) {
        struct coupons_batch_item *it = items[i];
        it->ticket = 0;
        it->rc = coupons_redeem(wt, &it->q, camp, ud, &it->out, &it->e);
        broken = it->rc && it->out.partial;
    }
    if (broken) {
        store_txn_end(wt);
        return one_by_one(s, items, n, camp, ud);
    }
    uint64_t ticket;
    if ((rc = store_txn_commit_ticket(wt, &ticket)))
        return one_by_one(s, items, n, camp, ud);
    for (size_t i = 0; i < n; i++)
        if (items[i]->rc == 0)
            items[i]->ticket = ticket;
    return 1;
}
