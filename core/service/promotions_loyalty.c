/* promotions_loyalty.c — the loyalty API: balance, tier and history; ledger
 * transactions; tier changes emitted as events (see promotions.h). */
#include "service/promotions.h"
#include "service/promotions_internal.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/id.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/loyalty.h"
#include "engine/rules.h"
#include "insight/events.h"
#include "insight/loyalty_earn.h"
#include "engine/loyalty_rules.h"
#include <event2/event.h>
#include "store/store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long g_tx[5], g_refused, g_tier_events;

static void collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_loyalty_transactions_total Ledger entries written, by type.\n"
                  "# TYPE promod_loyalty_transactions_total counter\n");
    for (int t = LOYALTY_EARN; t <= LOYALTY_EXPIRE; t++)
        buf_printf(out, "promod_loyalty_transactions_total{type=\"%s\"} %ld\n", loyalty_type_name(t),
                   __atomic_load_n(&g_tx[t], __ATOMIC_RELAXED));
    buf_printf(out, "# HELP promod_loyalty_refused_total Ledger transactions refused.\n"
                    "# TYPE promod_loyalty_refused_total counter\n"
                    "promod_loyalty_refused_total %ld\n"
                    "# HELP promod_loyalty_tier_changes_total Tier changes emitted as events.\n"
                    "# TYPE promod_loyalty_tier_changes_total counter\n"
                    "promod_loyalty_tier_changes_total %ld\n",
               __atomic_load_n(&g_refused, __ATOMIC_RELAXED),
               __atomic_load_n(&g_tier_events, __ATOMIC_RELAXED));
}

void promotions_loyalty_init(struct app *app)
{
    (void)app;
    metrics_register(collector, NULL);
    loyalty_earn_metrics_init();
}

void promotions_loyalty_count(int type, long n)
{
    if (type >= LOYALTY_EARN && type <= LOYALTY_EXPIRE)
        __atomic_fetch_add(&g_tx[type], n, __ATOMIC_RELAXED);
}

void promotions_program(struct loyalty_program *out) { loyalty_rules_program(out); }

int promotions_tier_event(const char *customer, const struct loyalty_change *ch, int64_t now)
{
    if (!ch->tier_changed || !strcmp(ch->from, ch->to))
        return 0;
    struct loyalty_program p;
    promotions_program(&p);
    json_t *ev = loyalty_earn_tier_event(customer, ch, &p, now);
    struct events_result er = { 0 };
    int rc = events_ingest_json(g_app->store, ev, &er);
    if (rc || er.rejected)
        log_warn("loyalty: tier event not recorded", "customer=\"%s\" err=\"%s\"", customer,
                 err_str(rc));
    else
        __atomic_fetch_add(&g_tier_events, 1, __ATOMIC_RELAXED);
    events_result_free(&er);
    json_decref(ev);
    return rc;
}

/* --- the sweep: expiry and tiers of customers who do nothing -------------- */

#define SWEEP_BATCH 200

long promotions_loyalty_sweep(void)
{
    struct loyalty_program p;
    promotions_program(&p);
    int64_t now = clock_now();
    char after[129] = "";
    long done = 0;
    char (*ids)[129] = malloc(SWEEP_BATCH * sizeof *ids);
    struct change { char id[129]; struct loyalty_change ch; } *chs = malloc(SWEEP_BATCH * sizeof *chs);
    if (!ids || !chs) {
        free(ids);
        free(chs);
        return ERR_NOMEM;
    }
    for (;;) {
        struct store_txn *wt;
        int rc = store_wtxn_begin(g_app->store, &wt);
        if (rc)
            break;
        int n = loyalty_customers(wt, after, ids, SWEEP_BATCH), nch = 0;
        long expired = 0;
        for (int i = 0; i < n && !rc; i++) {
            struct loyalty_summary s;
            struct loyalty_change ch;
            rc = loyalty_refresh(wt, ids[i], &p, now, &s, &ch);
            expired += ch.expired > 0;
            if (!rc && ch.tier_changed) {
                memcpy(chs[nch].id, ids[i], sizeof chs[nch].id);
                chs[nch++].ch = ch;
            }
        }
        if (n < 0 || rc) {
            store_txn_end(wt);
            break;
        }
        if (store_txn_commit(wt, STORE_DURABLE))
            break;
        promotions_loyalty_count(LOYALTY_EXPIRE, expired);
        for (int i = 0; i < nch; i++)
            promotions_tier_event(chs[i].id, &chs[i].ch, now);
        done += n;
        if (n < SWEEP_BATCH)
            break;
        memcpy(after, ids[n - 1], sizeof after);
    }
    free(ids);
    free(chs);
    return done;
}

static struct event *g_sweep;

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    long n = promotions_loyalty_sweep();
    if (n > 0)
        log_info("loyalty sweep", "customers=%ld", n);
}

void promotions_sweeper_start(struct event_base *base)
{
    g_sweep = event_new(base, -1, EV_PERSIST, on_sweep, NULL);
    struct timeval tv = { 3600, 0 };
    if (g_sweep)
        event_add(g_sweep, &tv);
}

void promotions_sweeper_stop(void)
{
    if (g_sweep)
        event_free(g_sweep);
    g_sweep = NULL;
}

static json_t *summary_json(const char *customer, const struct loyalty_summary *s, int64_t qual,
                            const struct loyalty_program *p)
{
    json_t *o = json_object();
    json_object_set_new(o, "customer_id", json_string(customer));
    json_object_set_new(o, "balance", json_integer(s->balance));
    json_object_set_new(o, "lifetime_earned", json_integer(s->lifetime));
    json_object_set_new(o, "tier", s->tier[0] ? json_string(s->tier) : json_null());
    json_object_set_new(o, "tier_since", s->tier_since ? json_integer(s->tier_since) : json_null());
    json_object_set_new(o, "qualifying_points", json_integer(qual));
    for (int i = 0; i < p->ntiers; i++)
        if (p->tiers[i].threshold > qual) {
            json_t *n = json_object();
            json_object_set_new(n, "tier", json_string(p->tiers[i].name));
            json_object_set_new(n, "points_needed", json_integer(p->tiers[i].threshold - qual));
            json_object_set_new(o, "next_tier", n);
            break;
        }
    return o;
}

json_t *promotions_loyalty_get(const char *customer, long limit, const char *cursor,
                               struct reqerr *e)
{
    if (!id_valid(customer)) {
        reqerr_set(e, 400, "invalid_field", "customer", "customer id is not valid");
        return NULL;
    }
    uint64_t before = 0;
    if (cursor && *cursor) {
        char *end;
        unsigned long long c = strtoull(cursor, &end, 10);
        if (*end || c < 2) {
            reqerr_set(e, 400, "invalid_query", "cursor", "\"cursor\" must be a value of next_cursor");
            return NULL;
        }
        before = c;
    }
    struct loyalty_program p;
    promotions_program(&p);
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    struct loyalty_summary s;
    int64_t qual = 0;
    json_t *hist = json_array();
    uint64_t next = 0;
    if (!rc)
        rc = loyalty_view(t, customer, &p, clock_now(), &s, &qual);
    if (!rc)
        rc = loyalty_history(t, customer, before, (int)limit, hist, &next);
    store_txn_end(t);
    if (rc) {
        json_decref(hist);
        reqerr_set(e, 503, "store_error", NULL, "loyalty: %s", err_str(rc));
        return NULL;
    }
    json_t *o = summary_json(customer, &s, qual, &p);
    json_object_set_new(o, "history", hist);
    if (next) {
        char c[32];
        snprintf(c, sizeof c, "%llu", (unsigned long long)next);
        json_object_set_new(o, "next_cursor", json_string(c));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    return o;
}

json_t *promotions_loyalty_post(const char *customer, const json_t *body, int may_adjust,
                                uint64_t *ticket, struct reqerr *e)
{
    *ticket = 0;
    static const char *const known[] = { "type", "points", "transaction_id", "reason", "expires_at",
                                         NULL };
    if (!id_valid(customer)) {
        reqerr_set(e, 400, "invalid_field", "customer", "customer id is not valid");
        return NULL;
    }
    int rc = promotions_fields_known(body, known, e);
    const char *type = rc ? NULL : promotions_str(body, "type", 1, 0, e, &rc);
    const char *txid = rc ? NULL : promotions_str(body, "transaction_id", 1, 1, e, &rc);
    const char *reason = NULL;
    json_t *rv = json_object_get(body, "reason");
    if (!rc && rv && !json_is_null(rv) && !(reason = json_string_value(rv)))
        rc = reqerr_set(e, 400, "invalid_field", "reason", "\"reason\" must be a string");
    struct loyalty_tx tx = { .txid = txid, .reason = reason };
    if (!rc && !(tx.type = loyalty_type_parse(type)))
        rc = reqerr_set(e, 400, "invalid_field", "type", "\"type\" must be \"earn\", \"burn\" or \"adjust\"");
    json_t *pv = json_object_get(body, "points");
    if (!rc && !pv)
        rc = reqerr_set(e, 400, "missing_field", "points", "\"points\" is required");
    if (!rc && !json_is_integer(pv))
        rc = reqerr_set(e, 400, "invalid_field", "points",
                        "\"points\" must be an integer (whole points; non-finite numbers are refused)");
    if (!rc)
        tx.points = (int64_t)json_integer_value(pv);
    json_t *xv = json_object_get(body, "expires_at");
    if (!rc && xv && !json_is_null(xv)) {
        if (!json_is_integer(xv) || json_integer_value(xv) <= 0)
            rc = reqerr_set(e, 400, "invalid_field", "expires_at", "\"expires_at\" must be unix seconds");
        else
            tx.expires_at = (int64_t)json_integer_value(xv);
    }
    if (!rc && tx.type == LOYALTY_ADJUST && !may_adjust)
        rc = reqerr_set(e, 403, "forbidden", "type",
                        "adjustments need a marketer or admin key (a checkout key may earn and burn)");
    if (rc) {
        __atomic_fetch_add(&g_refused, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    struct loyalty_program p;
    promotions_program(&p);
    int64_t now = clock_now();
    struct store_txn *wt;
    if ((rc = store_wtxn_begin(g_app->store, &wt))) {
        reqerr_set(e, 503, "store_error", NULL, "loyalty: %s", err_str(rc));
        return NULL;
    }
    struct loyalty_entry en;
    struct loyalty_summary after;
    struct loyalty_change ch;
    int replayed;
    rc = loyalty_apply(wt, customer, &p, &tx, now, &en, &replayed, &after, &ch, e);
    if (rc) {
        store_txn_end(wt); /* nothing half-applied */
        __atomic_fetch_add(&g_refused, 1, __ATOMIC_RELAXED);
        if (e->status >= 500)
            reqerr_set(e, rc == ERR_FULL ? 507 : 503, "store_error", NULL, "loyalty: %s", err_str(rc));
        return NULL;
    }
    if ((rc = store_txn_commit_ticket(wt, ticket))) {
        reqerr_set(e, rc == ERR_FULL ? 507 : 503, "store_error", NULL, "loyalty: %s", err_str(rc));
        return NULL;
    }
    if (!replayed) {
        promotions_loyalty_count(tx.type, 1);
        if (ch.expired)
            promotions_loyalty_count(LOYALTY_EXPIRE, 1);
        promotions_tier_event(customer, &ch, now);
    }
    int64_t qual = 0;
    struct store_txn *t;
    if (store_rtxn_begin(g_app->store, &t) == 0) {
        struct loyalty_summary v;
        if (loyalty_view(t, customer, &p, now, &v, &qual) == 0)
            after = v;
        store_txn_end(t);
    }
    json_t *o = summary_json(customer, &after, qual, &p);
    json_object_set_new(o, "replayed", json_boolean(replayed));
    json_object_set_new(o, "entry", loyalty_entry_json(&en));
    return o;
}
