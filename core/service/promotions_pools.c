/* promotions_pools.c — coupon pools: generate, import, assign, stats and
 * budget use (see promotions.h). */
#include "service/promotions.h"
#include "service/promotions_internal.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/id.h"
#include "base/tz.h"
#include "codec/codec.h"
#include "engine/coupons.h"
#include "engine/rules.h"
#include "store/store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void promotions_campaign_budget(const struct rules_campaign *c, struct coupons_budget *out)
{
    *out = c->budget;
}

/* --- settings -------------------------------------------------------------- */

static int time_field(const json_t *o, const char *name, int64_t *out, struct reqerr *e)
{
    json_t *v = json_object_get(o, name);
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_string_value(v);
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (s && *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 15) {
        *out = strtoll(s, NULL, 10);
        return 0;
    }
    if (s && tz_parse_iso8601(s, out) == 0)
        return 0;
    return reqerr_set(e, 400, "invalid_field", name, "\"%s\" must be unix seconds or ISO-8601 text",
                      name);
}

static int count_field(const json_t *o, const char *name, long def, long *out, struct reqerr *e)
{
    json_t *v = json_object_get(o, name);
    *out = def;
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_string_value(v);
    long long n = -1;
    if (json_is_integer(v))
        n = json_integer_value(v);
    else if (s && *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 11)
        n = strtoll(s, NULL, 10);
    if (n < 0 || n > 1000000000)
        return reqerr_set(e, 400, "invalid_field", name,
                          "\"%s\" must be an integer from 0 (unlimited) to 1000000000", name);
    *out = (long)n;
    return 0;
}

/* The settings every new code gets, from the body (generate) or the query
 * (import).  `o->pool` and `o->discount` borrow from `src`. */
static int parse_opts(const json_t *src, struct coupons_opts *o, struct reqerr *e)
{
    memset(o, 0, sizeof *o);
    int rc = 0;
    o->pool = promotions_str(src, "pool", 0, 1, e, &rc);
    if (rc)
        return rc;
    if (!o->pool)
        o->pool = "default";
    if ((rc = count_field(src, "max_uses", 1, &o->max_uses, e)) ||
        (rc = count_field(src, "per_customer", 1, &o->per_customer, e)) ||
        (rc = time_field(src, "valid_from", &o->valid_from, e)) ||
        (rc = time_field(src, "valid_until", &o->valid_until, e)))
        return rc;
    if (o->valid_from && o->valid_until && o->valid_until <= o->valid_from)
        return reqerr_set(e, 400, "invalid_field", "valid_until",
                          "\"valid_until\" must be after \"valid_from\"");
    json_t *v = json_object_get(src, "shared");
    const char *s = json_string_value(v);
    if (json_is_boolean(v))
        o->shared = json_is_true(v);
    else if (s && (!strcmp(s, "true") || !strcmp(s, "false")))
        o->shared = !strcmp(s, "true");
    else if (v && !json_is_null(v))
        return reqerr_set(e, 400, "invalid_field", "shared", "\"shared\" must be true or false");
    v = json_object_get(src, "discount");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v))
            return reqerr_set(e, 400, "invalid_field", "discount",
                              "\"discount\" must be an object, e.g. {\"percent\": 20}");
        o->discount = v;
    }
    return 0;
}

/* The campaign must be loaded (a file under rules/, any status). */
static int campaign_known(const char *campaign, struct reqerr *e)
{
    if (!id_valid(campaign))
        return reqerr_set(e, 400, "invalid_field", "id", "campaign id is not valid");
    struct rules_gen *g = rules_gen_acquire();
    int i = g ? rules_gen_find_campaign(g, campaign) : -1;
    rules_gen_release(g);
    if (i < 0)
        return reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\" is loaded", campaign);
    return 0;
}

static int store_fail(struct reqerr *e, int rc, const char *what)
{
    return reqerr_set(e, rc == ERR_FULL ? 507 : 503, rc == ERR_FULL ? "storage_full" : "store_error",
                      NULL, "%s: %s", what, err_str(rc));
}

/* --- generate ------------------------------------------------------------------ */

static void prefix_field(struct reqerr *e, const char *pre)
{
    char f[sizeof e->field];
    size_t pl = strlen(pre), fl = strnlen(e->field, sizeof e->field - 1);
    if (pl + fl >= sizeof f)
        return;
    memcpy(f, pre, pl);
    memcpy(f + pl, e->field, fl + 1);
    memcpy(e->field, f, pl + fl + 1);
}

json_t *promotions_generate(const char *campaign, const json_t *body, struct reqerr *e)
{
    static const char *const known[] = { "generate", "pool", "max_uses", "per_customer",
                                         "valid_from", "valid_until", "shared", "discount", NULL };
    int rc = campaign_known(campaign, e);
    if (!rc)
        rc = promotions_fields_known(body, known, e);
    if (rc)
        return NULL;
    json_t *gen = json_object_get(body, "generate");
    if (!json_is_object(gen)) {
        reqerr_set(e, 400, gen ? "invalid_field" : "missing_field", "generate",
                   "\"generate\" must be an object: {\"count\", \"length\"?, \"prefix\"?, \"pattern\"?} "
                   "(to import codes, POST CSV or NDJSON to .../coupons/import)");
        return NULL;
    }
    static const char *const gknown[] = { "count", "length", "prefix", "pattern", NULL };
    if (promotions_fields_known(gen, gknown, e)) {
        prefix_field(e, "generate.");
        return NULL;
    }
    json_t *cv = json_object_get(gen, "count"), *lv = json_object_get(gen, "length");
    if (!json_is_integer(cv) || json_integer_value(cv) < 1 ||
        json_integer_value(cv) > COUPONS_MAX_GENERATE) {
        reqerr_set(e, 400, "invalid_field", "generate.count",
                   "\"count\" must be an integer from 1 to %d", COUPONS_MAX_GENERATE);
        return NULL;
    }
    if (lv && !json_is_integer(lv)) {
        reqerr_set(e, 400, "invalid_field", "generate.length", "\"length\" must be an integer");
        return NULL;
    }
    json_t *pv = json_object_get(gen, "prefix"), *tv = json_object_get(gen, "pattern");
    if ((pv && !json_is_string(pv)) || (tv && !json_is_string(tv))) {
        reqerr_set(e, 400, "invalid_field", pv && !json_is_string(pv) ? "generate.prefix" : "generate.pattern",
                   "\"prefix\" and \"pattern\" must be strings");
        return NULL;
    }
    long count = (long)json_integer_value(cv);
    struct coupons_pattern pat;
    if (coupons_pattern_parse(json_string_value(tv), json_string_value(pv),
                              lv ? (long)json_integer_value(lv) : 0, count, &pat, e)) {
        prefix_field(e, "generate.");
        return NULL;
    }
    struct coupons_opts o;
    if (parse_opts(body, &o, e))
        return NULL;
    int64_t now = clock_now();
    json_t *codes = json_array();
    struct store_txn *wt;
    if ((rc = store_wtxn_begin(g_app->store, &wt))) {
        json_decref(codes);
        store_fail(e, rc, "generate");
        return NULL;
    }
    char code[COUPONS_CODE_MAX + 1];
    for (long i = 0; i < count && !rc; i++) {
        int tries = 0;
        do { /* a collision with any code on the server: draw again */
            rc = coupons_pattern_make(&pat, code);
            if (!rc)
                rc = coupons_code_add(wt, campaign, &o, code, NULL, now);
        } while (rc == ERR_EXISTS && ++tries < 32);
        if (!rc)
            json_array_append_new(codes, json_string(code));
    }
    if (rc == ERR_EXISTS) {
        store_txn_end(wt);
        json_decref(codes);
        reqerr_set(e, 409, "pattern_exhausted", "generate.pattern",
                   "the pattern ran out of unused codes; make it longer");
        return NULL;
    }
    if (rc)
        store_txn_end(wt);
    else
        rc = store_txn_commit(wt, STORE_DURABLE);
    if (rc) {
        json_decref(codes);
        store_fail(e, rc, "generate");
        return NULL;
    }
    json_t *out = json_object();
    json_object_set_new(out, "campaign_id", json_string(campaign));
    json_object_set_new(out, "pool", json_string(o.pool));
    json_object_set_new(out, "created", json_integer(count));
    json_object_set_new(out, "codes", codes);
    return out;
}

/* --- import ----------------------------------------------------------------------- */

static void import_error(json_t *errs, long *failed, long line, const char *msg)
{
    (*failed)++;
    if (json_array_size(errs) >= 100)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "line", json_integer(line));
    json_object_set_new(o, "message", json_string(msg));
    json_array_append_new(errs, o);
}

/* one CSV cell: surrounding blanks and double quotes dropped */
static void csv_cell(const char *p, size_t n, char *out, size_t cap)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
        n--;
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"')
        p++, n -= 2;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

json_t *promotions_import(const char *campaign, const char *data, size_t len, int ndjson,
                          const json_t *opts, struct reqerr *e)
{
    int rc = campaign_known(campaign, e);
    static const char *const known[] = { "pool", "max_uses", "per_customer", "valid_from",
                                         "valid_until", "shared", NULL };
    if (!rc)
        rc = promotions_fields_known(opts, known, e);
    struct coupons_opts o;
    if (rc || parse_opts(opts, &o, e))
        return NULL;
    size_t cap = 1024, n = 0;
    char **codes = malloc(cap * sizeof *codes), **custs = malloc(cap * sizeof *custs);
    long *lines = malloc(cap * sizeof *lines);
    json_t *errs = json_array();
    long failed = 0, line = 0;
    const char *p = data, *end = data + len;
    rc = codes && custs && lines ? 0 : ERR_NOMEM;
    while (!rc && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        const char *s = p;
        p = nl ? nl + 1 : end;
        size_t ll = (size_t)(le - s);
        while (ll && (s[ll - 1] == '\r' || s[ll - 1] == ' '))
            ll--;
        if (!ll)
            continue;
        char code[256] = "", cust[256] = "", norm[COUPONS_CODE_MAX + 1];
        if (ndjson) {
            json_t *j = codec_parse_json(s, ll, NULL, NULL, 0);
            const char *k;
            json_t *v;
            int bad = !json_is_object(j);
            json_object_foreach(j, k, v) if (strcmp(k, "code") && strcmp(k, "customer_id")) bad = 1;
            const char *c = json_string_value(json_object_get(j, "code"));
            const char *u = json_string_value(json_object_get(j, "customer_id"));
            if (bad || !c || (json_object_get(j, "customer_id") && !u)) {
                json_decref(j);
                import_error(errs, &failed, line,
                             "expected {\"code\": \"...\", \"customer_id\"?: \"...\"}");
                continue;
            }
            snprintf(code, sizeof code, "%s", c);
            snprintf(cust, sizeof cust, "%s", u ? u : "");
            json_decref(j);
        } else {
            const char *comma = memchr(s, ',', ll);
            csv_cell(s, comma ? (size_t)(comma - s) : ll, code, sizeof code);
            if (comma) {
                const char *c2 = memchr(comma + 1, ',', (size_t)(s + ll - comma - 1));
                csv_cell(comma + 1, (size_t)((c2 ? c2 : s + ll) - comma - 1), cust, sizeof cust);
            }
            if (line == 1 && !strncasecmp(code, "code", 4) && !code[4])
                continue; /* header */
        }
        if (coupons_code_normalize(code, norm)) {
            import_error(errs, &failed, line, "code must be 3-64 letters, digits, '-' or '_'");
            continue;
        }
        if (*cust && !id_valid(cust)) {
            import_error(errs, &failed, line, "customer_id is not a valid id");
            continue;
        }
        if (n == cap) {
            cap *= 2;
            char **c2 = realloc(codes, cap * sizeof *codes);
            if (c2)
                codes = c2;
            char **u2 = c2 ? realloc(custs, cap * sizeof *custs) : NULL;
            if (u2)
                custs = u2;
            long *l2 = u2 ? realloc(lines, cap * sizeof *lines) : NULL;
            if (!l2) {
                rc = ERR_NOMEM;
                break;
            }
            lines = l2;
        }
        codes[n] = strdup(norm);
        custs[n] = *cust ? strdup(cust) : NULL;
        lines[n] = line;
        n++;
        if (!codes[n - 1] || (*cust && !custs[n - 1]))
            rc = ERR_NOMEM;
    }
    int *status = rc ? NULL : calloc(n ? n : 1, sizeof *status);
    long made = 0;
    if (!rc && !status)
        rc = ERR_NOMEM;
    struct store_txn *wt = NULL;
    if (!rc && n && !(rc = store_wtxn_begin(g_app->store, &wt))) {
        made = coupons_code_add_many(wt, campaign, &o, (const char *const *)codes,
                                     (const char *const *)custs, n, clock_now(), status);
        if (made < 0) {
            rc = (int)made;
            store_txn_end(wt);
        } else if ((rc = store_txn_commit(wt, STORE_DURABLE))) {
            made = 0;
        }
    }
    for (size_t i = 0; !rc && i < n; i++) {
        if (status[i] == ERR_EXISTS)
            import_error(errs, &failed, lines[i], "the code exists already (codes are unique on the server)");
        else if (status[i] == ERR_CONFLICT)
            import_error(errs, &failed, lines[i], "the customer has a code in this campaign already");
        else if (status[i])
            import_error(errs, &failed, lines[i], err_str(status[i]));
    }
    for (size_t i = 0; i < n; i++) {
        free(codes[i]);
        free(custs[i]);
    }
    free(codes);
    free(custs);
    free(lines);
    free(status);
    if (rc) {
        json_decref(errs);
        if (rc == ERR_NOMEM)
            reqerr_set(e, 500, "internal", NULL, "out of memory");
        else
            store_fail(e, rc, "import");
        return NULL;
    }
    if (made == 0 && failed == 0) {
        json_decref(errs);
        reqerr_set(e, 400, "empty_body", NULL, "the body holds no codes");
        return NULL;
    }
    json_t *out = json_object();
    json_object_set_new(out, "campaign_id", json_string(campaign));
    json_object_set_new(out, "pool", json_string(o.pool));
    json_object_set_new(out, "imported", json_integer(made));
    json_object_set_new(out, "failed", json_integer(failed));
    json_object_set_new(out, "errors", errs);
    return out;
}

/* --- assign ------------------------------------------------------------------------- */

json_t *promotions_assign(const char *campaign, const json_t *body, uint64_t *ticket,
                          struct reqerr *e)
{
    *ticket = 0;
    static const char *const known[] = { "customer_id", NULL };
    int rc = campaign_known(campaign, e);
    if (!rc)
        rc = promotions_fields_known(body, known, e);
    const char *cust = rc ? NULL : promotions_str(body, "customer_id", 1, 1, e, &rc);
    if (rc)
        return NULL;
    struct store_txn *wt;
    if ((rc = store_wtxn_begin(g_app->store, &wt))) {
        store_fail(e, rc, "assign");
        return NULL;
    }
    char code[COUPONS_CODE_MAX + 1];
    int fresh = 0;
    rc = coupons_assign(wt, campaign, cust, clock_now(), code, &fresh);
    if (rc) {
        store_txn_end(wt);
        if (rc == ERR_CAPPED) {
            reqerr_set(e, 409, "pool_exhausted", NULL,
                       "campaign %s has no free coupon code left for customer %s", campaign, cust);
        } else {
            store_fail(e, rc, "assign");
        }
        return NULL;
    }
    if ((rc = store_txn_commit_ticket(wt, ticket))) {
        store_fail(e, rc, "assign");
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "code", json_string(code));
    json_object_set_new(o, "campaign_id", json_string(campaign));
    json_object_set_new(o, "customer_id", json_string(cust));
    json_object_set_new(o, "assigned", json_boolean(fresh));
    return o;
}

/* --- stats and budget use ------------------------------------------------------------- */

static json_t *stats_json(struct store_txn *t, const char *campaign, const struct coupons_budget *b,
                          int64_t now, int with_pools, int *rc)
{
    struct coupons_stats s;
    if ((*rc = coupons_stats_read(t, campaign, &s)))
        return NULL;
    json_t *o = json_object();
    json_object_set_new(o, "campaign_id", json_string(campaign));
    json_object_set_new(o, "codes", json_integer(s.v[COUPONS_CODES]));
    json_object_set_new(o, "free", json_integer(s.v[COUPONS_FREE]));
    json_object_set_new(o, "assigned", json_integer(s.v[COUPONS_ASSIGNED]));
    json_object_set_new(o, "redeemed", json_integer(s.v[COUPONS_REDEEMED]));
    json_object_set_new(o, "rolled_back", json_integer(s.v[COUPONS_ROLLED_BACK]));
    json_object_set_new(o, "discount_total", coupons_money_json(s.v[COUPONS_SPENT_M]));
    if (b && b->amount_m) {
        int64_t spent = 0, allowed = 0;
        if ((*rc = coupons_budget_read(t, campaign, b, now, &spent, &allowed))) {
            json_decref(o);
            return NULL;
        }
        json_t *bj = json_object();
        json_object_set_new(bj, "currency", json_string(b->currency));
        json_object_set_new(bj, "amount", coupons_money_json(b->amount_m));
        json_object_set_new(bj, "per", json_string(b->per_day ? "1d" : "campaign"));
        json_object_set_new(bj, "pacing", json_string(b->pacing ? "even" : "none"));
        json_object_set_new(bj, "spent", coupons_money_json(spent));
        json_object_set_new(bj, "allowed_now", coupons_money_json(allowed));
        json_object_set_new(bj, "remaining", coupons_money_json(allowed > spent ? allowed - spent : 0));
        json_object_set_new(bj, "spent_total", coupons_money_json(s.v[COUPONS_SPENT_M]));
        json_object_set_new(o, "budget", bj);
    }
    if (with_pools) {
        json_t *p = coupons_pools_json(t, campaign, rc);
        if (!p) {
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "pools", p);
    }
    return o;
}

json_t *promotions_stats(const char *campaign, struct reqerr *e)
{
    if (campaign_known(campaign, e))
        return NULL;
    struct rules_gen *g = rules_gen_acquire();
    int i = g ? rules_gen_find_campaign(g, campaign) : -1;
    struct coupons_budget b = { 0 };
    if (i >= 0)
        promotions_campaign_budget(&g->camps[i], &b);
    rules_gen_release(g);
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    json_t *o = rc ? NULL : stats_json(t, campaign, &b, clock_now(), 1, &rc);
    store_txn_end(t);
    if (!o)
        store_fail(e, rc, "coupon stats");
    return o;
}

json_t *promotions_budget_json(const char *campaign)
{
    struct rules_gen *g = rules_gen_acquire();
    int i = g ? rules_gen_find_campaign(g, campaign) : -1;
    struct coupons_budget b = { 0 };
    if (i >= 0)
        promotions_campaign_budget(&g->camps[i], &b);
    rules_gen_release(g);
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    json_t *o = rc ? NULL : stats_json(t, campaign, &b, clock_now(), 0, &rc);
    store_txn_end(t);
    if (o && !b.amount_m && json_integer_value(json_object_get(o, "codes")) == 0 &&
        json_integer_value(json_object_get(o, "redeemed")) == 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}
