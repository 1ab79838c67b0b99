/* loyalty.c — the points ledger: lots, FIFO burns, expiry, tiers (see loyalty.h). */
#include "engine/loyalty.h"
#include "base/err.h"
#include "base/id.h"
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX 128

/* --- keys ------------------------------------------------------------------- */

static int key_cust(char *k, size_t cap, char tag, const char *cust)
{
    size_t l = strlen(cust);
    if (l > ID_MAX || l + 2 > cap)
        return -1;
    k[0] = tag;
    memcpy(k + 1, cust, l);
    return (int)l + 1;
}

/* tag cust \0 be64(n) */
static int key_num(char *k, size_t cap, char tag, const char *cust, uint64_t n)
{
    int l = key_cust(k, cap, tag, cust);
    if (l < 0 || (size_t)l + 9 > cap)
        return -1;
    k[l] = 0;
    store_be64(n, (unsigned char *)k + l + 1);
    return l + 9;
}

/* tag cust \0 (prefix of the customer's family) */
static int key_pre(char *k, size_t cap, char tag, const char *cust)
{
    int l = key_cust(k, cap, tag, cust);
    if (l < 0 || (size_t)l + 1 > cap)
        return -1;
    k[l] = 0;
    return l + 1;
}

/* --- names, durations ---------------------------------------------------------- */

const char *loyalty_type_name(int type)
{
    switch (type) {
    case LOYALTY_EARN: return "earn";
    case LOYALTY_BURN: return "burn";
    case LOYALTY_ADJUST: return "adjust";
    case LOYALTY_EXPIRE: return "expire";
    default: return "?";
    }
}

int loyalty_type_parse(const char *s)
{
    if (!s)
        return 0;
    if (!strcmp(s, "earn"))
        return LOYALTY_EARN;
    if (!strcmp(s, "burn"))
        return LOYALTY_BURN;
    if (!strcmp(s, "adjust"))
        return LOYALTY_ADJUST;
    return 0;
}

int64_t loyalty_parse_duration(const char *s)
{
    if (!s || !*s)
        return -1;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n < 1 || n > 100000 || !end[0] || end[1])
        return -1;
    switch (end[0]) {
    case 'h': return n * 3600;
    case 'd': return n * 86400;
    case 'w': return n * 7 * 86400;
    case 'y': return n * 365 * 86400;
    default: return -1;
    }
}

/* --- records ------------------------------------------------------------------- */

/* summary: [0] v1 [1] balance [9] lifetime [17] next_seq [25] tier_since [33] len+tier */
int loyalty_summary_read(struct store_txn *t, const char *cust, struct loyalty_summary *out)
{
    memset(out, 0, sizeof *out);
    out->next_seq = 1;
    char k[ID_MAX + 4];
    int kl = key_cust(k, sizeof k, 's', cust);
    if (kl < 0)
        return ERR_INVAL;
    const void *vv;
    size_t vl;
    int rc = store_get(t, STORE_LOYALTY, k, (size_t)kl, &vv, &vl);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    const unsigned char *v = vv;
    if (vl < 34 || v[0] != 1 || 34 + (size_t)v[33] > vl || v[33] >= LOYALTY_TIER_MAX)
        return ERR_PARSE;
    out->balance = (int64_t)store_get_be64(v + 1);
    out->lifetime = (int64_t)store_get_be64(v + 9);
    out->next_seq = store_get_be64(v + 17);
    out->tier_since = (int64_t)store_get_be64(v + 25);
    memcpy(out->tier, v + 34, v[33]);
    out->tier[v[33]] = 0;
    return 0;
}

static int summary_put(struct store_txn *wt, const char *cust, const struct loyalty_summary *s)
{
    unsigned char v[34 + LOYALTY_TIER_MAX];
    v[0] = 1;
    store_be64((uint64_t)s->balance, v + 1);
    store_be64((uint64_t)s->lifetime, v + 9);
    store_be64(s->next_seq, v + 17);
    store_be64((uint64_t)s->tier_since, v + 25);
    size_t tl = strlen(s->tier);
    v[33] = (unsigned char)tl;
    memcpy(v + 34, s->tier, tl);
    char k[ID_MAX + 4];
    int kl = key_cust(k, sizeof k, 's', cust);
    if (kl < 0)
        return ERR_INVAL;
    return store_put(wt, STORE_LOYALTY, k, (size_t)kl, v, 34 + tl);
}

/* entry: [0] v1 [1] type [2] points [10] remaining [18] expires_at [26] at
 *        [34] len+txid  len+reason */
static int entry_decode(const unsigned char *v, size_t vl, uint64_t seq, struct loyalty_entry *e)
{
    memset(e, 0, sizeof *e);
    if (vl < 36 || v[0] != 1)
        return ERR_PARSE;
    e->seq = seq;
    e->type = v[1];
    e->points = (int64_t)store_get_be64(v + 2);
    e->remaining = (int64_t)store_get_be64(v + 10);
    e->expires_at = (int64_t)store_get_be64(v + 18);
    e->at = (int64_t)store_get_be64(v + 26);
    size_t at = 34, l = v[at];
    if (at + 1 + l >= vl || l >= sizeof e->txid)
        return ERR_PARSE;
    memcpy(e->txid, v + at + 1, l);
    at += 1 + l;
    l = v[at];
    if (at + 1 + l > vl || l > LOYALTY_REASON_MAX)
        return ERR_PARSE;
    memcpy(e->reason, v + at + 1, l);
    return 0;
}

static int entry_get(struct store_txn *t, const char *cust, uint64_t seq, struct loyalty_entry *e)
{
    char k[ID_MAX + 12];
    int kl = key_num(k, sizeof k, 'e', cust, seq);
    const void *v;
    size_t vl;
    if (kl < 0)
        return ERR_INVAL;
    int rc = store_get(t, STORE_LOYALTY, k, (size_t)kl, &v, &vl);
    return rc ? rc : entry_decode(v, vl, seq, e);
}

static int entry_put(struct store_txn *wt, const char *cust, const struct loyalty_entry *e)
{
    unsigned char v[36 + 129 + LOYALTY_REASON_MAX + 1];
    v[0] = 1;
    v[1] = (unsigned char)e->type;
    store_be64((uint64_t)e->points, v + 2);
    store_be64((uint64_t)e->remaining, v + 10);
    store_be64((uint64_t)e->expires_at, v + 18);
    store_be64((uint64_t)e->at, v + 26);
    size_t n = 34, l = strlen(e->txid);
    v[n] = (unsigned char)l;
    memcpy(v + n + 1, e->txid, l);
    n += 1 + l;
    l = strlen(e->reason);
    v[n] = (unsigned char)l;
    memcpy(v + n + 1, e->reason, l);
    n += 1 + l;
    char k[ID_MAX + 12];
    int kl = key_num(k, sizeof k, 'e', cust, e->seq);
    if (kl < 0)
        return ERR_INVAL;
    return store_put(wt, STORE_LOYALTY, k, (size_t)kl, v, n);
}

/* append an entry: next seq, transaction index */
static int entry_append(struct store_txn *wt, const char *cust, struct loyalty_summary *s,
                        struct loyalty_entry *e)
{
    e->seq = s->next_seq++;
    int rc = entry_put(wt, cust, e);
    if (rc || !e->txid[0])
        return rc;
    char k[2 * ID_MAX + 4];
    int kl = key_pre(k, sizeof k, 't', cust);
    size_t tl = strlen(e->txid);
    if (kl < 0 || (size_t)kl + tl > sizeof k)
        return ERR_INVAL;
    memcpy(k + kl, e->txid, tl);
    unsigned char v[8];
    store_be64(e->seq, v);
    return store_put(wt, STORE_LOYALTY, k, (size_t)kl + tl, v, 8);
}

static int lot_index(struct store_txn *wt, const char *cust, uint64_t seq, int live)
{
    char k[ID_MAX + 12];
    int kl = key_num(k, sizeof k, 'l', cust, seq);
    if (kl < 0)
        return ERR_INVAL;
    if (live)
        return store_put(wt, STORE_LOYALTY, k, (size_t)kl, "", 0);
    int rc = store_del(wt, STORE_LOYALTY, k, (size_t)kl);
    return rc == ERR_NOTFOUND ? 0 : rc;
}

/* --- lots -------------------------------------------------------------------------- */

struct seqs {
    uint64_t *v;
    size_t n, cap;
    size_t plen;
};

static int seqs_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct seqs *x = ud;
    if (klen != x->plen + 8)
        return 0;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 16;
        uint64_t *p = realloc(x->v, cap * sizeof *p);
        if (!p)
            return ERR_NOMEM;
        x->v = p;
        x->cap = cap;
    }
    x->v[x->n++] = store_get_be64((const unsigned char *)key + x->plen);
    return 0;
}

/* the customer's live lots, oldest first */
static int live_lots(struct store_txn *t, const char *cust, struct seqs *out)
{
    char pre[ID_MAX + 4];
    int pl = key_pre(pre, sizeof pre, 'l', cust);
    memset(out, 0, sizeof *out);
    if (pl < 0)
        return ERR_INVAL;
    out->plen = (size_t)pl;
    return store_scan(t, STORE_LOYALTY, pre, (size_t)pl, NULL, 0, seqs_cb, out);
}

/* Expire every lot past its expiry: an "expire" entry each. */
static int expire_due(struct store_txn *wt, const char *cust, struct loyalty_summary *s,
                      int64_t now, int64_t *expired)
{
    struct seqs l;
    int rc = live_lots(wt, cust, &l);
    for (size_t i = 0; !rc && i < l.n; i++) {
        struct loyalty_entry lot;
        if ((rc = entry_get(wt, cust, l.v[i], &lot)))
            break;
        if (!lot.expires_at || lot.expires_at > now || lot.remaining <= 0)
            continue;
        struct loyalty_entry x = { .type = LOYALTY_EXPIRE, .points = -lot.remaining, .at = now };
        snprintf(x.reason, sizeof x.reason, "points of entry %llu expired",
                 (unsigned long long)lot.seq);
        s->balance -= lot.remaining;
        *expired += lot.remaining;
        lot.remaining = 0;
        if ((rc = entry_put(wt, cust, &lot)) || (rc = lot_index(wt, cust, lot.seq, 0)) ||
            (rc = entry_append(wt, cust, s, &x)))
            break;
    }
    free(l.v);
    return rc;
}

/* Take `points` from the oldest lots. */
static int consume(struct store_txn *wt, const char *cust, int64_t points)
{
    struct seqs l;
    int rc = live_lots(wt, cust, &l);
    for (size_t i = 0; !rc && i < l.n && points > 0; i++) {
        struct loyalty_entry lot;
        if ((rc = entry_get(wt, cust, l.v[i], &lot)))
            break;
        int64_t take = lot.remaining < points ? lot.remaining : points;
        lot.remaining -= take;
        points -= take;
        if ((rc = entry_put(wt, cust, &lot)))
            break;
        if (lot.remaining <= 0)
            rc = lot_index(wt, cust, lot.seq, 0);
    }
    free(l.v);
    if (!rc && points > 0)
        rc = ERR_STORE; /* the lots do not add up to the balance: a broken invariant */
    return rc;
}

/* --- tiers -------------------------------------------------------------------------- */

struct qual {
    size_t plen;
    int64_t sum;
};

static int qual_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    struct qual *x = ud;
    if (vlen == 8)
        x->sum += (int64_t)store_get_be64(val);
    return 0;
}

static int64_t window_of(const struct loyalty_program *p)
{
    return p && p->window_s > 0 ? p->window_s : 365LL * 86400;
}

static int qualifying(struct store_txn *t, const char *cust, const struct loyalty_program *p,
                      int64_t now, int64_t *out)
{
    *out = 0;
    char pre[ID_MAX + 4], start[ID_MAX + 12];
    int pl = key_pre(pre, sizeof pre, 'd', cust);
    int64_t from = (now - window_of(p)) / 86400 + 1; /* whole days inside the window */
    int sl = key_num(start, sizeof start, 'd', cust, (uint64_t)(from > 0 ? from : 0));
    if (pl < 0 || sl < 0)
        return ERR_INVAL;
    struct qual x = { (size_t)pl, 0 };
    int rc = store_scan(t, STORE_LOYALTY, pre, (size_t)pl, start, (size_t)sl, qual_cb, &x);
    *out = x.sum;
    return rc;
}

static const char *tier_for(const struct loyalty_program *p, int64_t q)
{
    const char *t = "";
    for (int i = 0; p && i < p->ntiers; i++)
        if (q >= p->tiers[i].threshold)
            t = p->tiers[i].name;
    return t;
}

static int day_add(struct store_txn *wt, const char *cust, int64_t now, int64_t points)
{
    char k[ID_MAX + 12];
    int kl = key_num(k, sizeof k, 'd', cust, (uint64_t)(now / 86400));
    if (kl < 0)
        return ERR_INVAL;
    const void *v;
    size_t vl;
    int64_t cur = 0;
    int rc = store_get(wt, STORE_LOYALTY, k, (size_t)kl, &v, &vl);
    if (rc == 0 && vl == 8)
        cur = (int64_t)store_get_be64(v);
    else if (rc && rc != ERR_NOTFOUND)
        return rc;
    unsigned char b[8];
    store_be64((uint64_t)(cur + points), b);
    return store_put(wt, STORE_LOYALTY, k, (size_t)kl, b, 8);
}

static int retier(struct store_txn *wt, const char *cust, const struct loyalty_program *p,
                  int64_t now, struct loyalty_summary *s, struct loyalty_change *ch)
{
    int64_t q;
    int rc = qualifying(wt, cust, p, now, &q);
    if (rc)
        return rc;
    const char *t = tier_for(p, q);
    if (strcmp(t, s->tier) != 0) {
        ch->tier_changed = 1;
        snprintf(ch->from, sizeof ch->from, "%s", s->tier);
        snprintf(ch->to, sizeof ch->to, "%s", t);
        snprintf(s->tier, sizeof s->tier, "%s", t);
        s->tier_since = now;
    }
    return 0;
}

/* --- reads ------------------------------------------------------------------------ */

int loyalty_push_lua(lua_State *L, struct store_txn *t, const char *cust)
{
    struct loyalty_summary s;
    if (loyalty_summary_read(t, cust, &s) || s.next_seq <= 1)
        return 0;
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)s.balance);
    lua_setfield(L, -2, "balance");
    lua_pushnumber(L, (lua_Number)s.lifetime);
    lua_setfield(L, -2, "lifetime");
    if (s.tier[0]) {
        lua_pushstring(L, s.tier);
        lua_setfield(L, -2, "tier");
    }
    return 1;
}

int loyalty_view(struct store_txn *t, const char *cust, const struct loyalty_program *p,
                 int64_t now, struct loyalty_summary *out, int64_t *qual)
{
    int rc = loyalty_summary_read(t, cust, out);
    if (rc)
        return rc;
    struct seqs l;
    if ((rc = live_lots(t, cust, &l)))
        return rc;
    for (size_t i = 0; !rc && i < l.n; i++) {
        struct loyalty_entry lot;
        if ((rc = entry_get(t, cust, l.v[i], &lot)))
            break;
        if (lot.expires_at && lot.expires_at <= now)
            out->balance -= lot.remaining; /* expired, not yet written down */
    }
    free(l.v);
    if (rc || (rc = qualifying(t, cust, p, now, qual)))
        return rc;
    const char *tier = tier_for(p, *qual);
    if (strcmp(tier, out->tier)) {
        snprintf(out->tier, sizeof out->tier, "%s", tier);
        out->tier_since = now;
    }
    return 0;
}

/* --- writes ---------------------------------------------------------------------- */

static int refuse_points(struct reqerr *e, const char *msg)
{
    return reqerr_set(e, 400, "invalid_field", "points", "%s", msg);
}

int loyalty_refresh(struct store_txn *wt, const char *cust, const struct loyalty_program *p,
                    int64_t now, struct loyalty_summary *after, struct loyalty_change *ch)
{
    memset(ch, 0, sizeof *ch);
    int rc = loyalty_summary_read(wt, cust, after);
    if (rc)
        return rc;
    struct loyalty_summary before = *after;
    if ((rc = expire_due(wt, cust, after, now, &ch->expired)) ||
        (rc = retier(wt, cust, p, now, after, ch)))
        return rc;
    if (memcmp(&before, after, sizeof before) == 0)
        return 0;
    return summary_put(wt, cust, after);
}

int loyalty_apply(struct store_txn *wt, const char *cust, const struct loyalty_program *p,
                  const struct loyalty_tx *tx, int64_t now, struct loyalty_entry *out,
                  int *replayed, struct loyalty_summary *after, struct loyalty_change *ch,
                  struct reqerr *e)
{
    memset(out, 0, sizeof *out);
    memset(ch, 0, sizeof *ch);
    *replayed = 0;
    if (!id_valid(cust))
        return reqerr_set(e, 400, "invalid_field", "customer_id", "customer id is not valid");
    if (!tx->txid || !id_valid(tx->txid))
        return reqerr_set(e, 400, "invalid_field", "transaction_id",
                          "\"transaction_id\" must be 1-128 characters of letters, digits and _.:@-");
    if (tx->type != LOYALTY_EARN && tx->type != LOYALTY_BURN && tx->type != LOYALTY_ADJUST)
        return reqerr_set(e, 400, "invalid_field", "type",
                          "\"type\" must be \"earn\", \"burn\" or \"adjust\"");
    if (tx->points > LOYALTY_MAX_POINTS || tx->points < -LOYALTY_MAX_POINTS)
        return refuse_points(e, "\"points\" is too large");
    if (tx->type != LOYALTY_ADJUST && tx->points <= 0)
        return refuse_points(e, "\"points\" must be a positive integer");
    if (tx->type == LOYALTY_ADJUST && tx->points == 0)
        return refuse_points(e, "\"points\" of an adjustment must not be 0");
    if (tx->reason && strlen(tx->reason) > LOYALTY_REASON_MAX)
        return reqerr_set(e, 400, "invalid_field", "reason", "\"reason\" is longer than %d bytes",
                          LOYALTY_REASON_MAX);
    if (tx->expires_at && tx->expires_at <= now)
        return reqerr_set(e, 400, "invalid_field", "expires_at", "\"expires_at\" must be in the future");
    int64_t signed_pts = tx->type == LOYALTY_BURN ? -tx->points : tx->points;
    /* the transaction id first: a repeat answers as the first time */
    char k[2 * ID_MAX + 4];
    int kl = key_pre(k, sizeof k, 't', cust);
    size_t tl = strlen(tx->txid);
    memcpy(k + kl, tx->txid, tl);
    const void *v;
    size_t vl;
    int rc = store_get(wt, STORE_LOYALTY, k, (size_t)kl + tl, &v, &vl);
    if (rc == 0 && vl == 8) {
        if ((rc = entry_get(wt, cust, store_get_be64(v), out)))
            return reqerr_from_code(e, rc, "loyalty");
        if (out->type != tx->type || out->points != signed_pts)
            return reqerr_set(e, 409, "transaction_conflict", "transaction_id",
                              "transaction %s was recorded before as %s of %lld points", tx->txid,
                              loyalty_type_name(out->type), (long long)out->points);
        *replayed = 1;
        return (rc = loyalty_view(wt, cust, p, now, after, &(int64_t){ 0 })) ? reqerr_from_code(e, rc, "loyalty") : 0;
    }
    if (rc != ERR_NOTFOUND)
        return reqerr_from_code(e, rc, "loyalty");
    if ((rc = loyalty_summary_read(wt, cust, after)) ||
        (rc = expire_due(wt, cust, after, now, &ch->expired)))
        return reqerr_from_code(e, rc, "loyalty");
    struct loyalty_entry *en = out;
    en->type = tx->type;
    en->points = signed_pts;
    en->at = now;
    snprintf(en->txid, sizeof en->txid, "%s", tx->txid);
    snprintf(en->reason, sizeof en->reason, "%s", tx->reason ? tx->reason : "");
    if (signed_pts > 0) {
        /* a lot */
        en->remaining = signed_pts;
        en->expires_at = tx->expires_at ? tx->expires_at
                         : p && p->expiry_s ? now + p->expiry_s : 0;
        after->balance += signed_pts;
        if (tx->type == LOYALTY_EARN) {
            after->lifetime += signed_pts;
            if ((rc = day_add(wt, cust, now, signed_pts)))
                return reqerr_from_code(e, rc, "loyalty");
        }
        if ((rc = entry_append(wt, cust, after, en)) || (rc = lot_index(wt, cust, en->seq, 1)))
            return reqerr_from_code(e, rc, "loyalty");
    } else {
        if (-signed_pts > after->balance)
            return reqerr_set(e, 422, "insufficient_points", "points",
                              "%s of %lld points is more than the balance of %lld",
                              loyalty_type_name(tx->type), (long long)-signed_pts,
                              (long long)after->balance);
        if ((rc = consume(wt, cust, -signed_pts)))
            return reqerr_from_code(e, rc, "loyalty");
        after->balance += signed_pts;
        if ((rc = entry_append(wt, cust, after, en)))
            return reqerr_from_code(e, rc, "loyalty");
    }
    if ((rc = retier(wt, cust, p, now, after, ch)) || (rc = summary_put(wt, cust, after)))
        return reqerr_from_code(e, rc, "loyalty");
    return 0;
}

/* --- history, export, erase ------------------------------------------------------- */

json_t *loyalty_entry_json(const struct loyalty_entry *en)
{
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer((json_int_t)en->seq));
    json_object_set_new(o, "type", json_string(loyalty_type_name(en->type)));
    json_object_set_new(o, "points", json_integer(en->points));
    json_object_set_new(o, "at", json_integer(en->at));
    if (en->txid[0])
        json_object_set_new(o, "transaction_id", json_string(en->txid));
    if (en->reason[0]) {
        json_t *r = json_string(en->reason);
        json_object_set_new(o, "reason", r ? r : json_string("(not UTF-8)"));
    }
    if (en->points > 0 && en->type != LOYALTY_EXPIRE) {
        json_object_set_new(o, "remaining", json_integer(en->remaining));
        json_object_set_new(o, "expires_at", en->expires_at ? json_integer(en->expires_at) : json_null());
    }
    return o;
}

int loyalty_history(struct store_txn *t, const char *cust, uint64_t before, int limit,
                    json_t *arr, uint64_t *next)
{
    *next = 0;
    struct loyalty_summary s;
    int rc = loyalty_summary_read(t, cust, &s);
    if (rc)
        return rc;
    uint64_t seq = before && before <= s.next_seq ? before : s.next_seq;
    int n = 0;
    while (seq > 1 && n < limit) {
        seq--;
        struct loyalty_entry en;
        rc = entry_get(t, cust, seq, &en);
        if (rc == ERR_NOTFOUND)
            continue;
        if (rc)
            return rc;
        json_array_append_new(arr, loyalty_entry_json(&en));
        n++;
    }
    *next = seq > 1 ? seq : 0;
    return 0;
}

struct cust_list {
    char (*out)[129];
    int n, max;
    const char *after;
};

static int cust_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct cust_list *x = ud;
    size_t l = klen - 1;
    if (l > ID_MAX)
        return 0;
    char id[ID_MAX + 1];
    memcpy(id, (const char *)key + 1, l);
    id[l] = 0;
    if (x->after && *x->after && strcmp(id, x->after) <= 0)
        return 0;
    memcpy(x->out[x->n++], id, l + 1);
    return x->n >= x->max ? 1 : 0;
}

int loyalty_customers(struct store_txn *t, const char *after, char (*out)[129], int max)
{
    struct cust_list x = { out, 0, max, after };
    char start[ID_MAX + 4];
    int sl = after && *after ? key_cust(start, sizeof start, 's', after) : -1;
    int rc = store_scan(t, STORE_LOYALTY, "s", 1, sl > 0 ? start : NULL, sl > 0 ? (size_t)sl : 0,
                        cust_cb, &x);
    return rc ? rc : x.n;
}

json_t *loyalty_export(struct store_txn *t, const char *cust, int *rc)
{
    struct loyalty_summary s;
    *rc = loyalty_summary_read(t, cust, &s);
    if (*rc)
        return NULL;
    if (s.next_seq <= 1) {
        *rc = ERR_NOTFOUND;
        return NULL;
    }
    json_t *o = json_object(), *sum = json_object(), *arr = json_array();
    json_object_set_new(sum, "balance", json_integer(s.balance));
    json_object_set_new(sum, "lifetime_earned", json_integer(s.lifetime));
    json_object_set_new(sum, "tier", s.tier[0] ? json_string(s.tier) : json_null());
    json_object_set_new(sum, "tier_since", json_integer(s.tier_since));
    json_object_set_new(o, "summary", sum);
    uint64_t next;
    *rc = loyalty_history(t, cust, 0, 1 << 30, arr, &next);
    json_object_set_new(o, "entries", arr);
    if (*rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

long loyalty_erase(struct store_txn *wt, const char *cust)
{
    static const char tags[] = { 'e', 't', 'l', 'd' };
    long total = 0;
    char k[ID_MAX + 4];
    for (size_t i = 0; i < sizeof tags; i++) {
        int kl = key_pre(k, sizeof k, tags[i], cust);
        if (kl < 0)
            return ERR_INVAL;
        long d = store_del_prefix(wt, STORE_LOYALTY, k, (size_t)kl);
        if (d < 0)
            return d;
        total += d;
    }
    int kl = key_cust(k, sizeof k, 's', cust);
    int rc = store_del(wt, STORE_LOYALTY, k, (size_t)kl);
    if (rc == 0)
        total++;
    else if (rc != ERR_NOTFOUND)
        return rc;
    return total;
}
