/*
 * events.c — validation, chunked ingestion (the raw log, the customer
 * index and unique markers, triggers) and the /metrics series.  What an
 * event adds to aggregates and p.stats is summed by events_agg.c; scans,
 * export, erasure and retention are events_log.c.
 *
 * Why validate everything before opening the write transaction: LMDB has
 * one writer at a time and decide's cap reservations queue behind it, so
 * the lock is held only for the stores of an already-checked chunk.
 */
#include "insight/events.h"
#include "insight/loyalty_earn.h"
#include "insight/events_agg.h"
#include "base/id.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/metrics.h"
#include "engine/rules.h"
#include "delivery/triggers.h"
#include "base/tz.h"
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* /metrics: totals since start (relaxed atomics, any thread) */
static long g_m_accepted[EVENTS_NKINDS], g_m_rejected, g_m_duplicates;

/* ---------------------------------------------------------------------- */
/* validation                                                             */

struct ev {
    long index, line;
    int kind;
    const char *type, *cust, *camp, *variant, *channel, *decision, *event_id, *order_id;
    char currency[4];
    int has_rev;
    double revenue;
    int64_t ts_ms;
    char *props_mp; /* `properties` as msgpack (owned) or NULL */
    size_t props_len;
    char sbuf[800]; /* the strings above point here (the parsed JSON is freed) */
    unsigned char ekey[16]; /* apply_chunk: its STORE_EVENTS key */
    int dup;                /* apply_chunk: its event_id was already stored */
};

static void add_error(struct events_result *res, long index, long line, const char *code,
                      const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void add_error(struct events_result *res, long index, long line, const char *code,
                      const char *field, const char *fmt, ...)
{
    res->rejected++;
    if (!res->errors)
        res->errors = json_array();
    if (!res->errors)
        return;
    if (json_array_size(res->errors) >= EVENTS_MAX_ERRORS) {
        res->truncated = 1;
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_object();
    json_object_set_new(e, "index", json_integer(index));
    if (line > 0)
        json_object_set_new(e, "line", json_integer(line));
    json_object_set_new(e, "code", json_string(code));
    json_t *m = json_string(msg);
    json_object_set_new(e, "message", m ? m : json_string("(message not valid UTF-8)"));
    if (field) {
        json_t *f = json_string(field);
        json_object_set_new(e, "field", f ? f : json_string("(invalid UTF-8)"));
    }
    json_array_append_new(res->errors, e);
}

/* printable ASCII without spaces, 1..max bytes */
static int token_ok(const char *s, size_t max)
{
    size_t n = 0;
    if (!s || !*s)
        return 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e)
            return 0;
    return n <= max;
}

static int64_t retention_secs(void)
{
    int d = g_app ? g_app->cfg.event_retention_days : 90;
    return (int64_t)(d > 0 ? d : 90) * 86400;
}

/* Milliseconds from an ISO-8601 fraction ("...:05.123Z" → 123); 0 if none. */
static int64_t iso_millis(const char *s)
{
    size_t n = strlen(s);
    if (n < 20)
        return 0;
    for (size_t i = 19; i < n; i++) {
        if (s[i] == '.' || s[i] == ',') {
            int64_t ms = 0;
            int d = 0;
            for (size_t j = i + 1; j < n && s[j] >= '0' && s[j] <= '9'; j++, d++)
                if (d < 3)
                    ms = ms * 10 + (s[j] - '0');
            for (; d < 3; d++)
                ms *= 10;
            return ms;
        }
        if (s[i] == 'Z' || s[i] == '+' || s[i] == '-')
            break;
    }
    return 0;
}

/* Check one event; on success fill *e (taking a reference on o) and
 * return 0; else record the error and return -1. */
static int validate(json_t *o, long index, long line, int64_t now, struct ev *e,
                    struct events_result *res)
{
    memset(e, 0, sizeof *e);
    e->index = index;
    e->line = line;
    if (!json_is_object(o)) {
        add_error(res, index, line, "invalid_event", NULL, "an event must be a JSON object");
        return -1;
    }
    static const char *known[] = { "type", "customer_id", "campaign_id", "variant", "channel",
                                   "decision_id", "event_id", "order_id", "revenue", "currency",
                                   "ts", "properties", NULL };
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!ok) {
            add_error(res, index, line, "unknown_field", k,
                      "unknown field \"%.64s\" (extra data goes in \"properties\")", k);
            return -1;
        }
    }
    v = json_object_get(o, "type");
    if (!v || json_is_null(v)) {
        add_error(res, index, line, "missing_field", "type", "\"type\" is required");
        return -1;
    }
    e->type = json_string_value(v);
    e->kind = events_kind_of(e->type);
    if (e->kind < 0) {
        add_error(res, index, line, "invalid_type", "type",
                  "\"type\" must be impression, click, conversion, send, open, dismiss or a "
                  "custom name of 1-32 characters a-z 0-9 _");
        return -1;
    }
    v = json_object_get(o, "customer_id");
    if (!v || json_is_null(v)) {
        add_error(res, index, line, "missing_field", "customer_id", "\"customer_id\" is required");
        return -1;
    }
    e->cust = json_string_value(v);
    if (!id_valid(e->cust)) {
        add_error(res, index, line, "invalid_id", "customer_id",
                  "\"customer_id\" must be 1-128 characters of A-Z a-z 0-9 _ - . : @");
        return -1;
    }
    v = json_object_get(o, "campaign_id");
    if (!v || json_is_null(v)) {
        /* a conversion (an order from the shop) rarely knows which campaign
         * caused it: attribution and experiments credit it by customer */
        if (e->kind != EVENTS_CUSTOM && e->kind != EVENTS_CONVERSION) {
            add_error(res, index, line, "missing_field", "campaign_id",
                      "\"campaign_id\" is required for %s events", e->type);
            return -1;
        }
    } else {
        e->camp = json_string_value(v);
        if (!id_valid(e->camp)) {
            add_error(res, index, line, "invalid_id", "campaign_id",
                      "\"campaign_id\" must be 1-128 characters of A-Z a-z 0-9 _ - . : @");
            return -1;
        }
    }
    static const struct { const char *name; size_t max; int strict; } opt[] = {
        { "variant", 64, 1 }, { "channel", 32, 1 }, { "decision_id", 128, 0 }, { "event_id", 128, 0 },
        { "order_id", 128, 0 } };
    const char **dst[] = { &e->variant, &e->channel, &e->decision, &e->event_id, &e->order_id };
    for (int i = 0; i < 5; i++) {
        v = json_object_get(o, opt[i].name);
        if (!v || json_is_null(v))
            continue;
        const char *s = json_string_value(v);
        int ok = opt[i].strict ? (id_valid(s) && strlen(s) <= opt[i].max)
                               : token_ok(s, opt[i].max);
        if (!ok) {
            add_error(res, index, line, "invalid_field", opt[i].name,
                      opt[i].strict ? "\"%s\" must be 1-%zu characters of A-Z a-z 0-9 _ - . : @"
                                    : "\"%s\" must be 1-%zu printable characters without spaces",
                      opt[i].name, opt[i].max);
            return -1;
        }
        *dst[i] = s;
    }
    if (e->order_id && e->kind != EVENTS_CONVERSION) {
        add_error(res, index, line, "invalid_field", "order_id",
                  "\"order_id\" is only allowed on conversion events");
        return -1;
    }
    v = json_object_get(o, "revenue");
    if (v && !json_is_null(v)) {
        if (e->kind != EVENTS_CONVERSION && e->kind != EVENTS_CUSTOM) {
            add_error(res, index, line, "invalid_field", "revenue",
                      "\"revenue\" is only allowed on conversion and custom events");
            return -1;
        }
        double r = json_number_value(v);
        if (!json_is_number(v) || !isfinite(r) || r < 0 || r > 1e12) {
            add_error(res, index, line, "invalid_revenue", "revenue",
                      "\"revenue\" must be a finite number from 0 to 1e12");
            return -1;
        }
        e->has_rev = 1;
        e->revenue = r;
    }
    v = json_object_get(o, "currency");
    if (v && !json_is_null(v)) {
        const char *c = json_string_value(v);
        int ok = c && strlen(c) == 3;
        for (int i = 0; ok && i < 3; i++)
            ok = (c[i] >= 'A' && c[i] <= 'Z') || (c[i] >= 'a' && c[i] <= 'z');
        if (!ok) {
            add_error(res, index, line, "invalid_field", "currency",
                      "\"currency\" must be a 3-letter ISO 4217 code like \"EUR\"");
            return -1;
        }
        if (!e->has_rev) {
            add_error(res, index, line, "invalid_field", "currency",
                      "\"currency\" needs a \"revenue\"");
            return -1;
        }
        for (int i = 0; i < 3; i++)
            e->currency[i] = (char)(c[i] >= 'a' ? c[i] - 32 : c[i]);
        e->currency[3] = 0;
    }
    v = json_object_get(o, "ts");
    if (!v || json_is_null(v)) {
        e->ts_ms = clock_now_ms();
    } else if (json_is_string(v)) {
        int64_t secs;
        if (tz_parse_iso8601(json_string_value(v), &secs) || secs < 0) {
            add_error(res, index, line, "invalid_ts", "ts",
                      "\"ts\" must be ISO-8601 (\"2026-03-01T12:00:00Z\") or unix seconds");
            return -1;
        }
        e->ts_ms = secs * 1000 + iso_millis(json_string_value(v));
    } else if (json_is_number(v)) {
        double d = json_number_value(v);
        if (!isfinite(d) || d < 0 || d > 1e13) {
            add_error(res, index, line, "invalid_ts", "ts",
                      "\"ts\" must be unix seconds >= 0 or ISO-8601 text");
            return -1;
        }
        e->ts_ms = json_is_integer(v) ? (int64_t)json_integer_value(v) * 1000 : (int64_t)llround(d * 1000);
    } else {
        add_error(res, index, line, "invalid_ts", "ts",
                  "\"ts\" must be ISO-8601 text or unix seconds");
        return -1;
    }
    if (e->ts_ms > (now + EVENTS_FUTURE_SLACK) * 1000) {
        add_error(res, index, line, "ts_in_future", "ts",
                  "\"ts\" is more than %d seconds in the future%s", EVENTS_FUTURE_SLACK,
                  e->ts_ms > (int64_t)1e12 * 10 ? " (it looks like milliseconds; send seconds)" : "");
        return -1;
    }
    if (e->ts_ms < (now - retention_secs()) * 1000) {
        add_error(res, index, line, "ts_too_old", "ts",
                  "\"ts\" is older than the event retention (%d days)",
                  (int)(retention_secs() / 86400));
        return -1;
    }
    /* last: nothing may fail after props_mp is allocated */
    v = json_object_get(o, "properties");
    if (v && !json_is_null(v)) {
        struct buf b = BUF_INIT;
        int bad = !json_is_object(v) || codec_depth(v) > 8 || codec_json_to_msgpack(v, &b) ||
                  b.len > EVENTS_MAX_PROPS;
        if (bad) {
            buf_free(&b);
            add_error(res, index, line, "invalid_field", "properties",
                      "\"properties\" must be an object of at most %d bytes and 8 levels",
                      EVENTS_MAX_PROPS);
            return -1;
        }
        e->props_len = b.len;
        e->props_mp = buf_steal(&b);
    }
    /* own copies: the caller frees the parsed object right away (on the
     * parsing thread, not under the writer lock) */
    char *w = e->sbuf;
    const char **fields[] = { &e->type, &e->cust, &e->camp, &e->variant, &e->channel,
                              &e->decision, &e->event_id, &e->order_id };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!*fields[i])
            continue;
        size_t l = strlen(*fields[i]);
        memcpy(w, *fields[i], l + 1);
        *fields[i] = w;
        w += l + 1;
    }
    return 0;
}

static void ev_release(struct ev *e, int n)
{
    for (int i = 0; i < n; i++)
        free(e[i].props_mp);
}

/* ---------------------------------------------------------------------- */
/* applying a chunk                                                       */

static int mp_write(void *data, const char *p, size_t len)
{
    return buf_add(data, p, len) ? -1 : 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str_with_body(pk, s, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pack_str(pk, k);
    pack_str(pk, v);
}

static void pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
    pack_str(pk, k);
    msgpack_pack_int64(pk, v);
}

/* The stored event: a msgpack map written straight from the validated
 * fields (what events_log_customer_list and the scans decode). */
static int pack_event(const struct ev *e, int64_t received, struct buf *b)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, mp_write);
    size_t n = 5 + !!e->camp + !!e->variant + !!e->channel + !!e->decision + !!e->event_id +
               !!e->order_id + !!e->has_rev + !!e->currency[0] + !!e->props_mp;
    msgpack_pack_map(&pk, n);
    pack_kv_str(&pk, "type", e->type);
    pack_kv_str(&pk, "customer_id", e->cust);
    if (e->camp)
        pack_kv_str(&pk, "campaign_id", e->camp);
    if (e->variant)
        pack_kv_str(&pk, "variant", e->variant);
    if (e->channel)
        pack_kv_str(&pk, "channel", e->channel);
    if (e->decision)
        pack_kv_str(&pk, "decision_id", e->decision);
    if (e->event_id)
        pack_kv_str(&pk, "event_id", e->event_id);
    if (e->order_id)
        pack_kv_str(&pk, "order_id", e->order_id);
    if (e->has_rev) {
        pack_str(&pk, "revenue");
        msgpack_pack_double(&pk, e->revenue);
    }
    if (e->currency[0])
        pack_kv_str(&pk, "currency", e->currency);
    pack_kv_int(&pk, "ts", e->ts_ms / 1000);
    pack_kv_int(&pk, "ts_ms", e->ts_ms);
    pack_kv_int(&pk, "received", received);
    if (e->props_mp) {
        pack_str(&pk, "properties");
        if (buf_add(b, e->props_mp, e->props_len))
            return ERR_NOMEM;
    }
    return b->p ? 0 : ERR_NOMEM;
}

static size_t put_str0(unsigned char *p, const char *s, int nul)
{
    size_t l = s ? strlen(s) : 0;
    memcpy(p, s ? s : "", l);
    if (nul)
        p[l++] = 0;
    return l;
}

/* the tail of a marker key: day(be32) campaign \0 variant \0 channel */
static size_t marker_tail(unsigned char *p, const struct ev *e, int64_t day)
{
    size_t n = 0;
    store_be32((uint32_t)day, p);
    n += 4;
    n += put_str0(p + n, e->camp, 1);
    n += put_str0(p + n, e->variant, 1);
    n += put_str0(p + n, e->channel, 0);
    return n;
}

/* The event as triggers_on_event sees it (a new object). */
static json_t *trigger_event(const struct ev *e)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "type", json_string(e->type));
    json_object_set_new(o, "customer_id", json_string(e->cust));
    if (e->camp)
        json_object_set_new(o, "campaign_id", json_string(e->camp));
    if (e->variant)
        json_object_set_new(o, "variant", json_string(e->variant));
    if (e->channel)
        json_object_set_new(o, "channel", json_string(e->channel));
    if (e->has_rev)
        json_object_set_new(o, "revenue", json_real(e->revenue));
    json_object_set_new(o, "ts", json_integer((json_int_t)(e->ts_ms / 1000)));
    if (e->props_mp) {
        json_t *pr = codec_msgpack_to_json(e->props_mp, e->props_len, NULL);
        if (pr)
            json_object_set_new(o, "properties", pr);
    }
    return o;
}

/* Does any loaded campaign have a trigger?  (Then each event goes to
 * triggers_on_event; otherwise the per-event object is not built.) */
static int any_triggers(void)
{
    struct rules_gen *g = rules_gen_acquire();
    int yes = 0;
    for (int i = 0; g && i < g->ncamps && !yes; i++)
        yes = g->camps[i].trigger != NULL;
    rules_gen_release(g);
    return yes;
}

static int ord_by_key(const void *a, const void *b, void *arg)
{
    const struct ev *evs = arg;
    return memcmp(evs[*(const int *)a].ekey, evs[*(const int *)b].ekey, 16);
}

static int ord_by_customer(const void *a, const void *b, void *arg)
{
    const struct ev *evs = arg;
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(evs[x].cust, evs[y].cust);
    return c ? c : (x > y) - (x < y);
}

static const char SEQ_KEY[] = "events_seq";

/* Apply validated events in one write txn.  Returns 0 or a store error
 * (nothing of the chunk is kept then). */
static int apply_chunk(struct store *s, struct ev *evs, int n, int durable, long *accepted,
                       long *dups, long per_kind[EVENTS_NKINDS])
{
    *accepted = *dups = 0;
    memset(per_kind, 0, sizeof(long) * EVENTS_NKINDS);
    int trig = any_triggers();
    struct loyalty_earn *earn = loyalty_earn_begin(); /* NULL: no earn rules loaded */
    struct store_txn *t;
    int rc = store_wtxn_begin(s, &t);
    if (rc) {
        loyalty_earn_end(earn, 0);
        return rc;
    }
    uint64_t seq = 0;
    const void *v;
    size_t vl;
    if (store_get(t, STORE_META, SEQ_KEY, sizeof SEQ_KEY - 1, &v, &vl) == 0 && vl == 8)
        seq = store_get_be64(v);
    struct events_agg *agg = events_agg_new();
    struct buf b = BUF_INIT;
    int64_t received = clock_now();
    unsigned char key[600];
    /* 1. event ids, in arrival order (the first of two equal ids wins), and
     * sequence numbers (arrival order breaks timestamp ties) */
    int *ord = malloc(sizeof *ord * (size_t)(n ? n : 1));
    int nord = 0;
    if (!ord || !agg)
        rc = ERR_NOMEM;
    for (int i = 0; i < n && !rc; i++) {
        struct ev *e = &evs[i];
        e->dup = 0;
        /* idempotency: the event id, and a conversion's order id (the same
         * order reported twice, by a retry or by two systems, counts once) */
        char ikey[2][140];
        size_t ikl[2] = { 0, 0 };
        if (e->event_id)
            ikl[0] = (size_t)snprintf(ikey[0], sizeof ikey[0], "ev:%s", e->event_id);
        if (e->order_id)
            ikl[1] = (size_t)snprintf(ikey[1], sizeof ikey[1], "order:%s", e->order_id);
        for (int j = 0; j < 2 && !rc && !e->dup; j++) {
            if (!ikl[j])
                continue;
            rc = store_get(t, STORE_IDEM, ikey[j], ikl[j], &v, &vl);
            if (rc == 0)
                e->dup = 1;
            else if (rc == ERR_NOTFOUND)
                rc = 0;
        }
        if (rc)
            break;
        if (e->dup) {
            (*dups)++;
            continue;
        }
        seq++;
        store_be64((uint64_t)e->ts_ms, e->ekey);
        store_be64(seq, e->ekey + 8);
        for (int j = 0; j < 2 && !rc; j++)
            if (ikl[j])
                rc = store_put(t, STORE_IDEM, ikey[j], ikl[j], e->ekey, 16);
        if (rc)
            break;
        ord[nord++] = i;
    }
    /* 2. the raw log, in key order (neighbouring inserts share B-tree pages) */
    if (!rc)
        qsort_r(ord, (size_t)nord, sizeof *ord, ord_by_key, evs);
    for (int k = 0; k < nord && !rc; k++) {
        struct ev *e = &evs[ord[k]];
        buf_reset(&b);
        if (!(rc = pack_event(e, received, &b)))
            rc = store_put(t, STORE_EVENTS, e->ekey, 16, b.p, b.len);
    }
    /* 3. everything keyed by customer, customer by customer (each one's
     * events stay in arrival order) */
    if (!rc)
        qsort_r(ord, (size_t)nord, sizeof *ord, ord_by_customer, evs);
    for (int k = 0; k < nord && !rc; k++) {
        struct ev *e = &evs[ord[k]];
        const unsigned char *ekey = e->ekey;
        /* the customer's index */
        size_t cl = strlen(e->cust);
        memcpy(key, e->cust, cl);
        key[cl] = 0;
        key[cl + 1] = 'e';
        memcpy(key + cl + 2, ekey, 16);
        if ((rc = store_put(t, STORE_CUSTIDX, key, cl + 18, "", 0)))
            break;
        /* this customer's marker for the event's aggregate cell */
        int64_t day = e->ts_ms / 86400000;
        key[cl + 1] = 'u';
        size_t mkl = cl + 2 + marker_tail(key + cl + 2, e, day);
        unsigned char bits = 0;
        int found = store_get(t, STORE_CUSTIDX, key, mkl, &v, &vl);
        if (found == 0 && vl >= 1)
            bits = *(const unsigned char *)v;
        else if (found != ERR_NOTFOUND && (rc = found))
            break;
        unsigned char bit = (unsigned char)(1u << e->kind);
        int new_kind = found == ERR_NOTFOUND || !(bits & bit);
        if (new_kind) {
            bits |= bit;
            if ((rc = store_put(t, STORE_CUSTIDX, key, mkl, &bits, 1)))
                break;
        }
        /* the cell, the minute and p.stats */
        struct events_agg_ev ae = { (enum events_kind)e->kind, e->type, e->cust, e->camp,
                                    e->variant, e->channel, e->has_rev, e->revenue, e->ts_ms };
        if ((rc = events_agg_add(agg, &ae, found == ERR_NOTFOUND, new_kind)))
            break;
        if (trig || earn) {
            json_t *te = trigger_event(e);
            int tr = te ? trig ? triggers_on_event(t, te) : 0 : ERR_NOMEM;
            if (tr >= 0 && earn) /* loyalty points, in the event's own transaction */
                tr = loyalty_earn_event(earn, t, te, e->ekey, received);
            json_decref(te);
            if (tr < 0) {
                rc = tr;
                break;
            }
        }
        (*accepted)++;
        per_kind[e->kind]++;
    }
    if (!rc)
        rc = events_agg_write(agg, t);
    if (!rc) {
        unsigned char sv[8];
        store_be64(seq, sv);
        rc = store_put(t, STORE_META, SEQ_KEY, sizeof SEQ_KEY - 1, sv, 8);
    }
    events_agg_free(agg);
    buf_free(&b);
    free(ord);
    if (rc) {
        store_txn_end(t);
        *accepted = *dups = 0;
        loyalty_earn_end(earn, 0);
        return rc;
    }
    rc = store_txn_commit(t, durable);
    /* tier changes the points caused are events too (campaign triggers) */
    json_t *tiers = loyalty_earn_end(earn, rc == 0);
    if (tiers) {
        struct events_result tr = { 0 };
        events_ingest_json(s, tiers, &tr);
        events_result_free(&tr);
        json_decref(tiers);
    }
    return rc;
}

/* Apply `n` validated events in chunks; the last commit durable.  On a
 * store error the events of the failed chunk and after are reported. */
static int apply_all(struct store *s, struct ev *evs, int n, int last_batch, int *committed_any,
                     struct events_result *res)
{
    long acc, dups, per_kind[EVENTS_NKINDS];
    int rc = apply_chunk(s, evs, n, last_batch ? STORE_DURABLE : STORE_ASYNC, &acc, &dups, per_kind);

    if (rc) {
        for (int i = 0; i < n; i++)
            add_error(res, evs[i].index, evs[i].line, "store_error", NULL,
                      "not stored: %s", err_str(rc));
        res->store_rc = rc;
        return rc;
    }
    res->accepted += acc;
    res->duplicates += dups;
    *committed_any |= acc > 0;
    __atomic_fetch_add(&g_m_duplicates, dups, __ATOMIC_RELAXED);
    for (int k = 0; k < EVENTS_NKINDS; k++)
        if (per_kind[k])
            __atomic_fetch_add(&g_m_accepted[k], per_kind[k], __ATOMIC_RELAXED);
    return 0;
}

/* After async chunks, make them durable when the last chunk was empty. */
static int sync_tail(struct store *s)
{
    struct store_txn *w;
    int rc = store_wtxn_begin(s, &w);
    if (rc == 0)
        rc = store_txn_commit(w, STORE_DURABLE);
    return rc;
}

int events_ingest_json(struct store *s, const json_t *v, struct events_result *res)
{
    memset(res, 0, sizeof *res);
    res->errors = json_array();
    size_t total = json_is_array(v) ? json_array_size(v) : 1;
    struct ev *evs = malloc(sizeof *evs * (total < EVENTS_CHUNK ? (total ? total : 1) : EVENTS_CHUNK));
    if (!evs)
        return ERR_NOMEM;
    int64_t now = clock_now();
    int n = 0, any = 0, rc = 0, pending_async = 0;
    for (size_t i = 0; i < total; i++) {
        json_t *o = json_is_array(v) ? json_array_get(v, i) : (json_t *)v;
        if (rc) { /* a store error stopped us: the rest is not stored */
            add_error(res, (long)i, 0, "store_error", NULL, "not stored: %s", err_str(rc));
            continue;
        }
        if (validate(o, (long)i, 0, now, &evs[n], res) == 0)
            n++;
        if (n == EVENTS_CHUNK || (i + 1 == total && n)) {
            rc = apply_all(s, evs, n, i + 1 == total, &any, res);
            pending_async = i + 1 < total;
            ev_release(evs, n);
            n = 0;
        }
    }
    /* earlier chunks were committed without waiting for the disk */
    if (!rc && pending_async)
        rc = sync_tail(s);
    free(evs);
    return rc;
}

/* NDJSON is read in chunks of EVENTS_CHUNK non-blank lines.  While one
 * chunk is applied (under the writer lock), a helper thread parses and
 * validates the next one, so the two halves of the work overlap on two
 * cores.  Line and index numbers run on across chunks. */
struct pchunk {
    const char *p, *end;        /* where parsing starts / the body's end */
    long line, index;           /* lines / non-blank lines before p */
    int64_t now;
    struct ev *evs;
    int n;
    struct events_result r;     /* this chunk's validation errors */
};

/* Next non-blank line from *p: sets q and ll to it (trimmed), advances p. */
static int next_line(const char **p, const char *end, long *line, const char **q, size_t *ll)
{
    while (*p < end) {
        const char *nl = memchr(*p, '\n', (size_t)(end - *p));
        const char *le = nl ? nl : end;
        (*line)++;
        const char *s = *p;
        size_t l = (size_t)(le - s);
        *p = nl ? nl + 1 : end;
        while (l && (s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '\t'))
            l--;
        while (l && (*s == ' ' || *s == '\t')) {
            s++;
            l--;
        }
        if (l) {
            *q = s;
            *ll = l;
            return 1;
        }
    }
    return 0;
}

static void *parse_chunk(void *arg)
{
    struct pchunk *c = arg;
    const char *q;
    size_t ll;
    int lines = 0;
    while (lines < EVENTS_CHUNK && next_line(&c->p, c->end, &c->line, &q, &ll)) {
        long idx = c->index++;
        lines++;
        if (ll > EVENTS_MAX_LINE) {
            add_error(&c->r, idx, c->line, "line_too_long", NULL, "line longer than %d bytes",
                      EVENTS_MAX_LINE);
            continue;
        }
        char msg[200];
        int err;
        json_t *o = codec_parse_json(q, ll, &err, msg, sizeof msg);
        if (!o)
            add_error(&c->r, idx, c->line, "invalid_json", NULL, "%s", msg);
        else if (validate(o, idx, c->line, c->now, &c->evs[c->n], &c->r) == 0)
            c->n++;
        json_decref(o);
    }
    return NULL;
}

/* Move a chunk's validation errors into the request's result, in order. */
static void merge_errors(struct events_result *res, struct pchunk *c)
{
    res->rejected += c->r.rejected;
    res->truncated |= c->r.truncated;
    size_t i;
    json_t *e;
    json_array_foreach(c->r.errors, i, e) {
        if (json_array_size(res->errors) >= EVENTS_MAX_ERRORS) {
            res->truncated = 1;
            break;
        }
        json_array_append(res->errors, e);
    }
    json_decref(c->r.errors);
    memset(&c->r, 0, sizeof c->r);
}

int events_ingest_ndjson(struct store *s, const char *data, size_t len, struct events_result *res)
{
    memset(res, 0, sizeof *res);
    res->errors = json_array();
    struct pchunk ch[2];
    memset(ch, 0, sizeof ch);
    ch[0].evs = malloc(sizeof *ch[0].evs * EVENTS_CHUNK);
    ch[1].evs = malloc(sizeof *ch[1].evs * EVENTS_CHUNK);
    if (!res->errors || !ch[0].evs || !ch[1].evs) {
        free(ch[0].evs);
        free(ch[1].evs);
        return ERR_NOMEM;
    }
    int64_t now = clock_now();
    int rc = 0, any = 0, pending_async = 0;
    struct pchunk *cur = &ch[0], *nxt = &ch[1];
    cur->p = data;
    cur->end = data + len;
    cur->now = now;
    parse_chunk(cur);
    for (;;) {
        int more = cur->p < cur->end;
        pthread_t th;
        int threaded = 0;
        if (more) {
            nxt->p = cur->p;
            nxt->end = cur->end;
            nxt->line = cur->line;
            nxt->index = cur->index;
            nxt->now = now;
            nxt->n = 0;
            threaded = pthread_create(&th, NULL, parse_chunk, nxt) == 0;
        }
        merge_errors(res, cur);
        if (cur->n) {
            rc = apply_all(s, cur->evs, cur->n, !more, &any, res);
            pending_async = more;
        }
        ev_release(cur->evs, cur->n);
        cur->n = 0;
        if (!more)
            break;
        if (threaded)
            pthread_join(th, NULL);
        else
            parse_chunk(nxt);
        if (rc) {
            /* the store failed: nothing after this point is stored */
            ev_release(nxt->evs, nxt->n);
            json_decref(nxt->r.errors);
            const char *p = cur->p, *q;
            size_t ll;
            long line = cur->line, index = cur->index;
            while (next_line(&p, cur->end, &line, &q, &ll))
                add_error(res, index++, line, "store_error", NULL, "not stored: %s", err_str(rc));
            break;
        }
        struct pchunk *t = cur;
        cur = nxt;
        nxt = t;
    }
    if (!rc && pending_async)
        rc = sync_tail(s);
    free(ch[0].evs);
    free(ch[1].evs);
    return rc;
}

json_t *events_send_event(const char *customer, const char *campaign, const char *channel,
                          const char *variant, const char *key)
{
    json_t *e = json_object();
    json_object_set_new(e, "type", json_string("send"));
    json_object_set_new(e, "customer_id", json_string(customer));
    json_object_set_new(e, "campaign_id", json_string(campaign));
    json_object_set_new(e, "channel", json_string(channel));
    if (variant && *variant)
        json_object_set_new(e, "variant", json_string(variant));
    char id[140];
    if (strlen(key) <= 120) {
        snprintf(id, sizeof id, "send:%s", key);
    } else { /* event ids are at most 128 bytes: a long key is hashed */
        size_t n = strlen(key);
        snprintf(id, sizeof id, "send:h%08x%08x", hash_fnv1a(key, n, HASH_FNV_INIT),
                 hash_fnv1a(key, n, 0x01000193u));
    }
    json_object_set_new(e, "event_id", json_string(id));
    return e;
}

void events_result_free(struct events_result *res)
{
    __atomic_fetch_add(&g_m_rejected, res->rejected, __ATOMIC_RELAXED);
    json_decref(res->errors);
    res->errors = NULL;
}

/* ---------------------------------------------------------------------- */
/* /metrics                                                               */

static void events_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_events_ingested_total Events stored, by type (custom types together).\n"
                  "# TYPE promod_events_ingested_total counter\n");
    for (int k = 0; k < EVENTS_NKINDS; k++)
        buf_printf(out, "promod_events_ingested_total{type=\"%s\"} %ld\n", events_kind_name((enum events_kind)k),
                   __atomic_load_n(&g_m_accepted[k], __ATOMIC_RELAXED));
    buf_printf(out,
               "# HELP promod_events_rejected_total Events refused by validation or a store error.\n"
               "# TYPE promod_events_rejected_total counter\n"
               "promod_events_rejected_total %ld\n"
               "# HELP promod_events_duplicates_total Events skipped because their event_id was stored.\n"
               "# TYPE promod_events_duplicates_total counter\n"
               "promod_events_duplicates_total %ld\n",
               __atomic_load_n(&g_m_rejected, __ATOMIC_RELAXED),
               __atomic_load_n(&g_m_duplicates, __ATOMIC_RELAXED));
}

void events_metrics_init(void)
{
    metrics_register(events_collector, NULL);
}
