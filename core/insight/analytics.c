/*
 * analytics.c — sums over aggregate cells, Wilson intervals, reports,
 * attribution over raw journeys, ROI.
 *
 * Every query runs in the calling thread's read snapshot, so one answer is
 * consistent with itself even while events keep arriving.
 */
#include "insight/analytics.h"
#include "base/app.h"
#include "base/err.h"
#include "insight/events_log.h"
#include "engine/rules.h"
#include "base/tz.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void analytics_day_str(int64_t day, char *buf, size_t len)
{
    char iso[40];
    tz_format_iso8601(day * 86400, iso, sizeof iso);
    snprintf(buf, len, "%.10s", iso);
}

void analytics_wilson(long k, long n, double *p, double *lo, double *hi)
{
    if (n <= 0) {
        *p = *lo = *hi = NAN;
        return;
    }
    if (k > n)
        k = n;
    if (k < 0)
        k = 0;
    const double z = 1.959963984540054;
    double nn = (double)n, ph = (double)k / nn, z2 = z * z;
    double den = 1 + z2 / nn;
    double center = (ph + z2 / (2 * nn)) / den;
    double half = z * sqrt(ph * (1 - ph) / nn + z2 / (4 * nn * nn)) / den;
    *p = ph;
    *lo = center - half < 0 ? 0 : center - half;
    *hi = center + half > 1 ? 1 : center + half;
}

static double round6(double x) { return round(x * 1e6) / 1e6; }

static json_t *num_or_null(double x) { return isfinite(x) ? json_real(round6(x)) : json_null(); }

/* ---------------------------------------------------------------------- */
/* totals of summed cells                                                 */

struct tot {
    long n[EVENTS_NKINDS]; /* n[EVENTS_CUSTOM] = every custom type together */
    long u[EVENTS_NKINDS];
    long customers;
    double revenue;
    json_t *custom;        /* custom type → count */
};

static void tot_add(struct tot *t, const struct events_log_cell *c)
{
    const char *k;
    json_t *v;
    json_object_foreach(c->n, k, v) {
        long x = (long)json_integer_value(v);
        int kd = events_kind_of(k);
        if (kd < 0)
            kd = EVENTS_CUSTOM;
        t->n[kd] += x;
        if (kd == EVENTS_CUSTOM) {
            if (!t->custom)
                t->custom = json_object();
            json_t *cur = json_object_get(t->custom, k);
            json_object_set_new(t->custom, k, json_integer(json_integer_value(cur) + x));
        }
    }
    json_object_foreach(c->u, k, v) {
        int kd = !strcmp(k, "custom") ? EVENTS_CUSTOM : events_kind_of(k);
        if (kd >= 0)
            t->u[kd] += (long)json_integer_value(v);
    }
    t->customers += c->customers;
    t->revenue += c->revenue;
}

static long tot_count(const struct tot *t, const char *type)
{
    int kd = events_kind_of(type);
    if (kd < 0)
        return 0;
    if (kd != EVENTS_CUSTOM)
        return t->n[kd];
    return (long)json_integer_value(json_object_get(t->custom, type));
}

static json_t *rate_json(long k, long n)
{
    double p, lo, hi;
    analytics_wilson(k, n, &p, &lo, &hi);
    json_t *o = json_object();
    json_object_set_new(o, "value", num_or_null(p));
    json_object_set_new(o, "low", num_or_null(lo));
    json_object_set_new(o, "high", num_or_null(hi));
    return o;
}

static json_t *tot_json(const struct tot *t)
{
    json_t *o = json_object();
    long exposures = t->n[EVENTS_IMPRESSION] + t->n[EVENTS_SEND];
    json_object_set_new(o, "impressions", json_integer(t->n[EVENTS_IMPRESSION]));
    json_object_set_new(o, "clicks", json_integer(t->n[EVENTS_CLICK]));
    json_object_set_new(o, "conversions", json_integer(t->n[EVENTS_CONVERSION]));
    json_object_set_new(o, "sends", json_integer(t->n[EVENTS_SEND]));
    json_object_set_new(o, "opens", json_integer(t->n[EVENTS_OPEN]));
    json_object_set_new(o, "dismisses", json_integer(t->n[EVENTS_DISMISS]));
    json_object_set_new(o, "exposures", json_integer(exposures));
    json_object_set_new(o, "revenue", json_real(round6(t->revenue)));
    json_object_set_new(o, "unique_customers", json_integer(t->customers));
    json_t *u = json_object();
    for (int k = 0; k < EVENTS_NKINDS; k++)
        json_object_set_new(u, events_kind_name((enum events_kind)k), json_integer(t->u[k]));
    json_object_set_new(o, "unique_by_type", u);
    json_object_set_new(o, "ctr", rate_json(t->n[EVENTS_CLICK], exposures));
    json_object_set_new(o, "conversion_rate", rate_json(t->n[EVENTS_CONVERSION], exposures));
    json_object_set_new(o, "open_rate", rate_json(t->n[EVENTS_OPEN], t->n[EVENTS_SEND]));
    json_object_set_new(o, "custom", t->custom ? json_deep_copy(t->custom) : json_object());
    return o;
}

/* Named groups of totals (by variant, channel, report key ...). */
struct groups {
    json_t *index;   /* name → integer index */
    struct tot *v;
    json_t **keys;   /* per group: the dimension values (array) or NULL */
    size_t n, cap;
};

static struct tot *groups_get(struct groups *g, const char *name, size_t *idx_out)
{
    if (!g->index)
        g->index = json_object();
    json_t *ix = json_object_get(g->index, name);
    if (ix) {
        if (idx_out)
            *idx_out = (size_t)json_integer_value(ix);
        return &g->v[json_integer_value(ix)];
    }
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 16;
        struct tot *nv = realloc(g->v, nc * sizeof *nv);
        if (!nv)
            return NULL;
        g->v = nv;
        json_t **nk = realloc(g->keys, nc * sizeof *nk);
        if (!nk)
            return NULL;
        g->keys = nk;
        g->cap = nc;
    }
    memset(&g->v[g->n], 0, sizeof g->v[g->n]);
    g->keys[g->n] = NULL;
    json_object_set_new(g->index, name, json_integer((json_int_t)g->n));
    if (idx_out)
        *idx_out = g->n;
    return &g->v[g->n++];
}

static void groups_free(struct groups *g)
{
    for (size_t i = 0; i < g->n; i++) {
        json_decref(g->v[i].custom);
        json_decref(g->keys[i]);
    }
    free(g->v);
    free(g->keys);
    json_decref(g->index);
    memset(g, 0, sizeof *g);
}

/* Sorted names of a group set (for stable output). */
static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *groups_list(struct groups *g, const char *label)
{
    json_t *arr = json_array();
    size_t n = json_object_size(g->index);
    const char **names = malloc(sizeof *names * (n ? n : 1));
    if (!names)
        return arr;
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(g->index, k, v)
        names[i++] = k;
    qsort(names, n, sizeof *names, name_cmp);
    for (i = 0; i < n; i++) {
        json_t *m = tot_json(&g->v[json_integer_value(json_object_get(g->index, names[i]))]);
        json_t *o = json_object();
        json_object_set_new(o, label, json_string(names[i]));
        json_object_update(o, m);
        json_decref(m);
        json_array_append_new(arr, o);
    }
    free(names);
    return arr;
}

/* ---------------------------------------------------------------------- */
/* one campaign                                                           */

struct camp_ctx {
    struct tot total;
    struct groups variants, channels;
    struct tot *days;
    int64_t from_day;
    long cells;
    int err;
};

static int camp_cb(void *ud, const struct events_log_cell *c)
{
    struct camp_ctx *x = ud;
    x->cells++;
    tot_add(&x->total, c);
    struct tot *t = groups_get(&x->variants, c->variant, NULL);
    struct tot *h = groups_get(&x->channels, c->channel, NULL);
    if (!t || !h)
        return ERR_NOMEM;
    tot_add(t, c);
    tot_add(h, c);
    tot_add(&x->days[c->day - x->from_day], c);
    return 0;
}

static int campaign_known(const char *id)
{
    struct rules_gen *g = rules_gen_acquire();
    int yes = g && rules_gen_find_campaign(g, id) >= 0;
    rules_gen_release(g);
    return yes;
}

static int any_cb(void *ud, const struct events_log_cell *c)
{
    (void)c;
    *(int *)ud = 1;
    return 1;
}

/* Has the campaign any aggregate at all (a retired campaign with history)? */
static int campaign_has_data(struct store *s, const char *campaign)
{
    struct store_txn *t;
    int any = 0;
    if (store_rtxn_begin(s, &t) == 0) {
        events_log_scan_cells(t, campaign, 0, INT32_MAX, any_cb, &any);
        store_txn_end(t);
    }
    return any;
}

json_t *analytics_campaign(struct store *s, const char *campaign, int64_t from_day,
                           int64_t to_day, struct reqerr *e)
{
    struct camp_ctx x;
    memset(&x, 0, sizeof x);
    x.from_day = from_day;
    x.days = calloc((size_t)(to_day - from_day + 1), sizeof *x.days);
    if (!x.days) {
        reqerr_from_code(e, ERR_NOMEM, "analytics");
        return NULL;
    }
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (!rc) {
        rc = events_log_scan_cells(t, campaign, from_day, to_day, camp_cb, &x);
        store_txn_end(t);
    }
    json_t *out = NULL;
    if (rc)
        reqerr_from_code(e, rc, "analytics");
    else if (x.cells == 0 && !campaign_known(campaign) && !campaign_has_data(s, campaign))
        reqerr_set(e, 404, "not_found", "id",
                   "no campaign \"%s\" is loaded and no event ever named it", campaign);
    else {
        out = json_object();
        char d[16];
        json_object_set_new(out, "campaign_id", json_string(campaign));
        analytics_day_str(from_day, d, sizeof d);
        json_object_set_new(out, "from", json_string(d));
        analytics_day_str(to_day, d, sizeof d);
        json_object_set_new(out, "to", json_string(d));
        json_object_set_new(out, "totals", tot_json(&x.total));
        json_object_set_new(out, "by_variant", groups_list(&x.variants, "variant"));
        json_object_set_new(out, "by_channel", groups_list(&x.channels, "channel"));
        json_t *days = json_array();
        for (int64_t dd = from_day; dd <= to_day; dd++) {
            json_t *m = tot_json(&x.days[dd - from_day]);
            json_t *o = json_object();
            analytics_day_str(dd, d, sizeof d);
            json_object_set_new(o, "day", json_string(d));
            json_object_update(o, m);
            json_decref(m);
            json_array_append_new(days, o);
        }
        json_object_set_new(out, "by_day", days);
    }
    json_decref(x.total.custom);
    for (int64_t dd = from_day; dd <= to_day; dd++)
        json_decref(x.days[dd - from_day].custom);
    free(x.days);
    groups_free(&x.variants);
    groups_free(&x.channels);
    return out;
}

/* ---------------------------------------------------------------------- */
/* dashboard                                                              */

struct dash_ctx {
    struct tot total, today;
    struct groups camps;
    int64_t today_day, from_day, to_day;
};

static int dash_cb(void *ud, const struct events_log_cell *c)
{
    struct dash_ctx *x = ud;
    if (c->day == x->today_day)
        tot_add(&x->today, c);
    if (c->day < x->from_day || c->day > x->to_day)
        return 0;
    tot_add(&x->total, c);
    if (c->campaign[0]) {
        struct tot *t = groups_get(&x->camps, c->campaign, NULL);
        if (!t)
            return ERR_NOMEM;
        tot_add(t, c);
    }
    return 0;
}

static int top_cmp(const void *a, const void *b, void *arg)
{
    const struct groups *g = arg;
    const struct tot *x = &g->v[*(const size_t *)a];
    const struct tot *y = &g->v[*(const size_t *)b];
    if (x->revenue != y->revenue)
        return x->revenue < y->revenue ? 1 : -1;
    if (x->n[EVENTS_CONVERSION] != y->n[EVENTS_CONVERSION])
        return x->n[EVENTS_CONVERSION] < y->n[EVENTS_CONVERSION] ? 1 : -1;
    if (x->n[EVENTS_CLICK] != y->n[EVENTS_CLICK])
        return x->n[EVENTS_CLICK] < y->n[EVENTS_CLICK] ? 1 : -1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static json_t *rates_json(struct store_txn *t, int64_t now, int64_t secs)
{
    json_t *counts = NULL;
    double rev = 0;
    int64_t to_min = now / 60, from_min = (now - secs) / 60 + 1;
    json_t *o = json_object();
    json_object_set_new(o, "window_s", json_integer(secs));
    if (events_log_sum_minutes(t, from_min, to_min, &counts, &rev)) {
        json_object_set_new(o, "error", json_string("store"));
        return o;
    }
    long total = 0, impressions = 0, clicks = 0, sends = 0, conversions = 0;
    const char *k;
    json_t *v;
    json_t *per = json_object();
    json_object_foreach(counts, k, v) {
        long n = (long)json_integer_value(v);
        total += n;
        impressions += !strcmp(k, "impression") ? n : 0;
        clicks += !strcmp(k, "click") ? n : 0;
        sends += !strcmp(k, "send") ? n : 0;
        conversions += !strcmp(k, "conversion") ? n : 0;
        json_object_set_new(per, k, json_real(round6((double)n / (double)secs)));
    }
    json_object_set_new(o, "events", json_integer(total));
    json_object_set_new(o, "events_per_second", json_real(round6((double)total / (double)secs)));
    json_object_set_new(o, "counts", counts);
    json_object_set_new(o, "per_second", per);
    json_object_set_new(o, "revenue", json_real(round6(rev)));
    json_object_set_new(o, "ctr", rate_json(clicks, impressions + sends));
    json_object_set_new(o, "conversion_rate", rate_json(conversions, impressions + sends));
    return o;
}

json_t *analytics_dashboard(struct store *s, int64_t now, int64_t from_day, int64_t to_day,
                            int top, struct reqerr *e)
{
    struct dash_ctx x;
    memset(&x, 0, sizeof x);
    x.today_day = now / 86400;
    x.from_day = from_day;
    x.to_day = to_day;
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc) {
        reqerr_from_code(e, rc, "analytics");
        return NULL;
    }
    rc = events_log_scan_cells(t, NULL, from_day < x.today_day ? from_day : x.today_day,
                           to_day > x.today_day ? to_day : x.today_day, dash_cb, &x);
    json_t *out = NULL;
    if (rc)
        reqerr_from_code(e, rc, "analytics");
    else {
        out = json_object();
        char d[40];
        tz_format_iso8601(now, d, sizeof d);
        json_object_set_new(out, "now", json_string(d));
        analytics_day_str(from_day, d, sizeof d);
        json_object_set_new(out, "from", json_string(d));
        analytics_day_str(to_day, d, sizeof d);
        json_object_set_new(out, "to", json_string(d));
        json_object_set_new(out, "totals", tot_json(&x.total));
        json_object_set_new(out, "today", tot_json(&x.today));
        size_t n = x.camps.n;
        size_t *ord = malloc(sizeof *ord * (n ? n : 1));
        json_t *tops = json_array();
        if (ord) {
            for (size_t i = 0; i < n; i++)
                ord[i] = i;
            /* groups_get recorded names in index; recover them */
            const char **names = calloc(n ? n : 1, sizeof *names);
            const char *k;
            json_t *v;
            json_object_foreach(x.camps.index, k, v)
                if (names)
                    names[json_integer_value(v)] = k;
            qsort_r(ord, n, sizeof *ord, top_cmp, &x.camps);
            for (size_t i = 0; names && i < n && (int)i < top; i++) {
                json_t *m = tot_json(&x.camps.v[ord[i]]);
                json_t *o = json_object();
                json_object_set_new(o, "campaign_id", json_string(names[ord[i]]));
                json_object_update(o, m);
                json_decref(m);
                json_array_append_new(tops, o);
            }
            free(names);
            free(ord);
        }
        json_object_set_new(out, "top_campaigns", tops);
        json_t *rates = json_object();
        json_object_set_new(rates, "last_5m", rates_json(t, now, 300));
        json_object_set_new(rates, "last_24h", rates_json(t, now, 86400));
        json_object_set_new(out, "rates", rates);
        struct rules_gen *g = rules_gen_acquire();
        int active = 0;
        for (int i = 0; g && i < g->ncamps; i++)
            active += g->camps[i].status == CAMP_ACTIVE;
        rules_gen_release(g);
        json_object_set_new(out, "active_campaigns", json_integer(active));
    }
    store_txn_end(t);
    json_decref(x.total.custom);
    json_decref(x.today.custom);
    groups_free(&x.camps);
    return out;
}

/* ---------------------------------------------------------------------- */
/* reports                                                                */

static const char *dim_names[] = { "campaign", "variant", "channel", "day", "week", "month", NULL };
static const char *metric_names[] = {
    "impressions", "clicks", "conversions", "sends", "opens", "dismisses", "exposures", "revenue",
    "unique_customers", "ctr", "ctr_low", "ctr_high", "conversion_rate", "conversion_rate_low",
    "conversion_rate_high", "open_rate", NULL };

int analytics_dim_valid(const char *d)
{
    for (int i = 0; d && dim_names[i]; i++)
        if (!strcmp(d, dim_names[i]))
            return 1;
    return 0;
}

int analytics_metric_valid(const char *m)
{
    if (!m)
        return 0;
    if (!strncmp(m, "count:", 6))
        return events_kind_of(m + 6) >= 0;
    for (int i = 0; metric_names[i]; i++)
        if (!strcmp(m, metric_names[i]))
            return 1;
    return 0;
}

/* Value of a dimension for a cell (into buf). */
static const char *dim_value(const char *dim, const struct events_log_cell *c, char *buf, size_t len)
{
    if (!strcmp(dim, "campaign"))
        return c->campaign;
    if (!strcmp(dim, "variant"))
        return c->variant;
    if (!strcmp(dim, "channel"))
        return c->channel;
    if (!strcmp(dim, "day")) {
        analytics_day_str(c->day, buf, len);
    } else if (!strcmp(dim, "week")) { /* ISO week start (Monday) */
        int64_t wd = (c->day + 3) % 7; /* 1970-01-01 was a Thursday: Monday = 0 */
        analytics_day_str(c->day - wd, buf, len);
    } else {
        analytics_day_str(c->day, buf, len);
        if (len > 7)
            buf[7] = 0;
    }
    return buf;
}

static int filter_match(const json_t *filters, const char *dim, const char *val)
{
    json_t *f = json_object_get(filters, dim);
    if (!f)
        return 1;
    if (json_is_string(f))
        return !strcmp(json_string_value(f), val);
    size_t i;
    json_t *v;
    json_array_foreach(f, i, v)
        if (json_is_string(v) && !strcmp(json_string_value(v), val))
            return 1;
    return 0;
}

struct rep_ctx {
    const struct analytics_report_req *q;
    struct groups g;
};

static int rep_cb(void *ud, const struct events_log_cell *c)
{
    struct rep_ctx *x = ud;
    if (x->q->filters && (!filter_match(x->q->filters, "campaign", c->campaign) ||
                          !filter_match(x->q->filters, "variant", c->variant) ||
                          !filter_match(x->q->filters, "channel", c->channel)))
        return 0;
    struct buf key = BUF_INIT;
    char vb[4][16];
    const char *vals[4];
    for (int i = 0; i < x->q->ndims; i++) {
        vals[i] = dim_value(x->q->dims[i], c, vb[i], sizeof vb[i]);
        if (buf_adds(&key, vals[i]) || buf_addc(&key, '\x1f')) {
            buf_free(&key);
            return ERR_NOMEM;
        }
    }
    size_t idx;
    struct tot *t = groups_get(&x->g, key.p ? key.p : "", &idx);
    buf_free(&key);
    if (!t)
        return ERR_NOMEM;
    if (!x->g.keys[idx]) {
        json_t *a = json_array();
        for (int i = 0; i < x->q->ndims; i++)
            json_array_append_new(a, json_string(vals[i]));
        x->g.keys[idx] = a;
    }
    tot_add(t, c);
    return 0;
}

static json_t *metric_value(const struct tot *t, const char *m)
{
    long exposures = t->n[EVENTS_IMPRESSION] + t->n[EVENTS_SEND];
    double p, lo, hi;
    if (!strncmp(m, "count:", 6))
        return json_integer(tot_count(t, m + 6));
    if (!strcmp(m, "impressions"))
        return json_integer(t->n[EVENTS_IMPRESSION]);
    if (!strcmp(m, "clicks"))
        return json_integer(t->n[EVENTS_CLICK]);
    if (!strcmp(m, "conversions"))
        return json_integer(t->n[EVENTS_CONVERSION]);
    if (!strcmp(m, "sends"))
        return json_integer(t->n[EVENTS_SEND]);
    if (!strcmp(m, "opens"))
        return json_integer(t->n[EVENTS_OPEN]);
    if (!strcmp(m, "dismisses"))
        return json_integer(t->n[EVENTS_DISMISS]);
    if (!strcmp(m, "exposures"))
        return json_integer(exposures);
    if (!strcmp(m, "revenue"))
        return json_real(round6(t->revenue));
    if (!strcmp(m, "unique_customers"))
        return json_integer(t->customers);
    if (!strcmp(m, "open_rate")) {
        analytics_wilson(t->n[EVENTS_OPEN], t->n[EVENTS_SEND], &p, &lo, &hi);
        return num_or_null(p);
    }
    long k = !strncmp(m, "ctr", 3) ? t->n[EVENTS_CLICK] : t->n[EVENTS_CONVERSION];
    analytics_wilson(k, exposures, &p, &lo, &hi);
    size_t ml = strlen(m);
    if (ml > 4 && !strcmp(m + ml - 4, "_low"))
        return num_or_null(lo);
    if (ml > 5 && !strcmp(m + ml - 5, "_high"))
        return num_or_null(hi);
    return num_or_null(p);
}

static double sort_key(const json_t *v)
{
    return json_is_number(v) ? json_number_value(v) : -INFINITY;
}

static int row_cmp_metric(const void *a, const void *b, void *arg)
{
    int col = *(int *)arg;
    double x = sort_key(json_array_get(*(json_t *const *)a, (size_t)col));
    double y = sort_key(json_array_get(*(json_t *const *)b, (size_t)col));
    if (x != y)
        return x < y ? 1 : -1;
    return 0;
}

static int row_cmp_dims(const void *a, const void *b, void *arg)
{
    int ndims = *(int *)arg;
    for (int i = 0; i < ndims; i++) {
        const char *x = json_string_value(json_array_get(*(json_t *const *)a, (size_t)i));
        const char *y = json_string_value(json_array_get(*(json_t *const *)b, (size_t)i));
        int c = strcmp(x ? x : "", y ? y : "");
        if (c)
            return c;
    }
    return 0;
}

json_t *analytics_report(struct store *s, const struct analytics_report_req *q, struct reqerr *e)
{
    struct rep_ctx x;
    memset(&x, 0, sizeof x);
    x.q = q;
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc) {
        reqerr_from_code(e, rc, "report");
        return NULL;
    }
    const char *one = NULL;
    json_t *fc = q->filters ? json_object_get(q->filters, "campaign") : NULL;
    if (json_is_string(fc))
        one = json_string_value(fc);
    rc = events_log_scan_cells(t, one, q->from_day, q->to_day, rep_cb, &x);
    store_txn_end(t);
    if (rc) {
        groups_free(&x.g);
        reqerr_from_code(e, rc, "report");
        return NULL;
    }
    json_t **rows = malloc(sizeof *rows * (x.g.n ? x.g.n : 1));
    if (!rows) {
        groups_free(&x.g);
        reqerr_from_code(e, ERR_NOMEM, "report");
        return NULL;
    }
    for (size_t i = 0; i < x.g.n; i++) {
        json_t *row = x.g.keys[i] ? json_deep_copy(x.g.keys[i]) : json_array();
        for (int m = 0; m < q->nmetrics; m++)
            json_array_append_new(row, metric_value(&x.g.v[i], q->metrics[m]));
        rows[i] = row;
    }
    int sort_metric = -1;
    for (int m = 0; q->sort && m < q->nmetrics; m++)
        if (!strcmp(q->metrics[m], q->sort))
            sort_metric = m;
    int col = sort_metric >= 0 ? q->ndims + sort_metric : q->ndims;
    qsort_r(rows, x.g.n, sizeof *rows, sort_metric >= 0 ? row_cmp_metric : row_cmp_dims, &col);
    long limit = q->limit > 0 && q->limit < ANALYTICS_MAX_ROWS ? q->limit : ANALYTICS_MAX_ROWS;
    json_t *out = json_object();
    json_t *cols = json_array();
    for (int i = 0; i < q->ndims; i++)
        json_array_append_new(cols, json_string(q->dims[i]));
    for (int m = 0; m < q->nmetrics; m++)
        json_array_append_new(cols, json_string(q->metrics[m]));
    json_object_set_new(out, "columns", cols);
    json_t *arr = json_array();
    for (size_t i = 0; i < x.g.n; i++) {
        if ((long)i < limit)
            json_array_append_new(arr, rows[i]);
        else
            json_decref(rows[i]);
    }
    free(rows);
    json_object_set_new(out, "rows", arr);
    char d[16];
    analytics_day_str(q->from_day, d, sizeof d);
    json_object_set_new(out, "from", json_string(d));
    analytics_day_str(q->to_day, d, sizeof d);
    json_object_set_new(out, "to", json_string(d));
    json_object_set_new(out, "total_rows", json_integer((json_int_t)x.g.n));
    if ((long)x.g.n > limit)
        json_object_set_new(out, "truncated", json_true());
    groups_free(&x.g);
    return out;
}

static int csv_cell(struct buf *out, const json_t *v)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        /* a leading = + - @ would be a formula in a spreadsheet: quote and prefix ' */
        int formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@';
        int quote = formula || strpbrk(s, ",\"\r\n") != NULL;
        int rc = 0;
        if (quote)
            rc |= buf_addc(out, '"');
        if (formula)
            rc |= buf_addc(out, '\'');
        for (const char *p = s; *p; p++) {
            if (*p == '"')
                rc |= buf_addc(out, '"');
            rc |= buf_addc(out, *p);
        }
        if (quote)
            rc |= buf_addc(out, '"');
        return rc ? ERR_NOMEM : 0;
    }
    if (json_is_integer(v))
        return buf_printf(out, "%lld", (long long)json_integer_value(v));
    if (json_is_real(v))
        return buf_printf(out, "%.6f", json_real_value(v));
    if (json_is_boolean(v))
        return buf_adds(out, json_is_true(v) ? "true" : "false");
    return 0;
}

int analytics_report_csv(const json_t *report, struct buf *out)
{
    size_t i, j;
    json_t *v, *row;
    int rc = 0;
    json_array_foreach(json_object_get(report, "columns"), i, v) {
        if (i)
            rc |= buf_addc(out, ',');
        rc |= csv_cell(out, v);
    }
    rc |= buf_adds(out, "\r\n");
    json_array_foreach(json_object_get(report, "rows"), i, row) {
        json_array_foreach(row, j, v) {
            if (j)
                rc |= buf_addc(out, ',');
            rc |= csv_cell(out, v);
        }
        rc |= buf_adds(out, "\r\n");
    }
    return rc ? ERR_NOMEM : 0;
}

/* ---------------------------------------------------------------------- */
/* attribution                                                            */

static const char *model_names[] = { "last_touch", "first_touch", "linear", "time_decay", "position" };

int analytics_model_parse(const char *name)
{
    for (int i = 0; name && i < 5; i++)
        if (!strcmp(name, model_names[i]))
            return i;
    return -1;
}

const char *analytics_model_name(enum analytics_model m)
{
    return (unsigned)m < 5 ? model_names[m] : "?";
}

/* credit per name (campaign or channel) */
struct credit {
    json_t *index;
    double *conv, *rev;
    long *touches;
    size_t n, cap;
};

static long credit_slot(struct credit *c, const char *name)
{
    if (!c->index && !(c->index = json_object()))
        return ERR_NOMEM;
    json_t *ix = json_object_get(c->index, name);
    if (ix)
        return (long)json_integer_value(ix);
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        double *a = realloc(c->conv, nc * sizeof *a);
        if (!a)
            return ERR_NOMEM;
        c->conv = a;
        double *b = realloc(c->rev, nc * sizeof *b);
        if (!b)
            return ERR_NOMEM;
        c->rev = b;
        long *t = realloc(c->touches, nc * sizeof *t);
        if (!t)
            return ERR_NOMEM;
        c->touches = t;
        c->cap = nc;
    }
    c->conv[c->n] = c->rev[c->n] = 0;
    c->touches[c->n] = 0;
    json_object_set_new(c->index, name, json_integer((json_int_t)c->n));
    return (long)c->n++;
}

static void credit_free(struct credit *c)
{
    json_decref(c->index);
    free(c->conv);
    free(c->rev);
    free(c->touches);
    memset(c, 0, sizeof *c);
}

struct touch {
    char campaign[132];
    char channel[36];
    int64_t ts_ms;
};

struct attr_ctx {
    struct store_txn *t;
    const struct analytics_attr_req *q;
    long conversions, attributed;
    double revenue, attr_revenue;
    struct credit camps, chans;
    struct touch *touches;
    size_t nt, capt;
    int err;
};

static int touch_cb(void *ud, const struct events_log_rec *e)
{
    struct attr_ctx *x = ud;
    if ((e->kind != EVENTS_IMPRESSION && e->kind != EVENTS_CLICK && e->kind != EVENTS_SEND) ||
        !e->campaign[0])
        return 0;
    if (x->nt == x->capt) {
        size_t nc = x->capt ? x->capt * 2 : 64;
        if (nc > 1000000)
            return 1; /* a journey this long is credited on its first million touches */
        struct touch *nt = realloc(x->touches, nc * sizeof *nt);
        if (!nt)
            return ERR_NOMEM;
        x->touches = nt;
        x->capt = nc;
    }
    struct touch *t = &x->touches[x->nt++];
    snprintf(t->campaign, sizeof t->campaign, "%s", e->campaign);
    snprintf(t->channel, sizeof t->channel, "%s", e->channel);
    t->ts_ms = e->ts_ms;
    return 0;
}

/* Weight of touch i of n for the model (before normalisation). */
static double touch_weight(const struct attr_ctx *x, size_t i, size_t n, int64_t conv_ms)
{
    switch (x->q->model) {
    case ATTR_LAST: return i == n - 1;
    case ATTR_FIRST: return i == 0;
    case ATTR_LINEAR: return 1;
    case ATTR_DECAY:
        return pow(2.0, -(double)(conv_ms - x->touches[i].ts_ms) /
                            (1000.0 * (double)x->q->half_life_s));
    default: /* position: 40 % first, 40 % last, 20 % over the middle */
        if (n == 1)
            return 1;
        if (n == 2)
            return 0.5;
        return (i == 0 || i == n - 1) ? 0.4 : 0.2 / (double)(n - 2);
    }
}

static int conv_cb(void *ud, const struct events_log_rec *e)
{
    struct attr_ctx *x = ud;
    if (e->kind != EVENTS_CONVERSION)
        return 0;
    x->conversions++;
    x->revenue += e->revenue;
    x->nt = 0;
    int rc = events_log_scan_customer(x->t, e->customer, e->ts_ms - x->q->window_s * 1000, e->key,
                                  touch_cb, x);
    if (rc)
        return rc;
    size_t n = x->nt;
    if (!n)
        return 0;
    x->attributed++;
    x->attr_revenue += e->revenue;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += touch_weight(x, i, n, e->ts_ms);
    if (!(sum > 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        double w = touch_weight(x, i, n, e->ts_ms) / sum;
        long cs = credit_slot(&x->camps, x->touches[i].campaign);
        long hs = credit_slot(&x->chans, x->touches[i].channel);
        if (cs < 0 || hs < 0)
            return ERR_NOMEM;
        x->camps.touches[cs]++;
        x->chans.touches[hs]++;
        x->camps.conv[cs] += w;
        x->camps.rev[cs] += w * e->revenue;
        x->chans.conv[hs] += w;
        x->chans.rev[hs] += w * e->revenue;
    }
    return 0;
}

static int attr_run(struct store_txn *t, const struct analytics_attr_req *q, struct attr_ctx *x)
{
    memset(x, 0, sizeof *x);
    x->t = t;
    x->q = q;
    return events_log_scan_time(t, q->from_day * 86400000LL, (q->to_day + 1) * 86400000LL, conv_cb, x);
}

static void attr_free(struct attr_ctx *x)
{
    credit_free(&x->camps);
    credit_free(&x->chans);
    free(x->touches);
}

struct rowsort {
    const char *name;
    double conv, rev;
    long touches;
};

static int rowsort_cmp(const void *a, const void *b)
{
    const struct rowsort *x = a, *y = b;
    if (x->rev != y->rev)
        return x->rev < y->rev ? 1 : -1;
    if (x->conv != y->conv)
        return x->conv < y->conv ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* Rows of a credit table, by revenue then conversions (names borrowed). */
static struct rowsort *credit_rows(const struct credit *c)
{
    struct rowsort *r = calloc(c->n ? c->n : 1, sizeof *r);
    if (!r)
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(c->index, k, v) {
        size_t i = (size_t)json_integer_value(v);
        r[i] = (struct rowsort){ k, c->conv[i], c->rev[i], c->touches[i] };
    }
    qsort(r, c->n, sizeof *r, rowsort_cmp);
    return r;
}

static void range_strs(json_t *out, int64_t from_day, int64_t to_day)
{
    char d[16];
    analytics_day_str(from_day, d, sizeof d);
    json_object_set_new(out, "from", json_string(d));
    analytics_day_str(to_day, d, sizeof d);
    json_object_set_new(out, "to", json_string(d));
}

json_t *analytics_attribution(struct store *s, const struct analytics_attr_req *q,
                              struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc) {
        reqerr_from_code(e, rc, "attribution");
        return NULL;
    }
    struct attr_ctx x;
    rc = attr_run(t, q, &x);
    store_txn_end(t);
    if (rc) {
        attr_free(&x);
        reqerr_from_code(e, rc, "attribution");
        return NULL;
    }
    json_t *out = json_object();
    json_object_set_new(out, "model", json_string(analytics_model_name(q->model)));
    json_object_set_new(out, "window_s", json_integer(q->window_s));
    if (q->model == ATTR_DECAY)
        json_object_set_new(out, "half_life_s", json_integer(q->half_life_s));
    range_strs(out, q->from_day, q->to_day);
    json_object_set_new(out, "conversions", json_integer(x.conversions));
    json_object_set_new(out, "attributed", json_integer(x.attributed));
    json_object_set_new(out, "unattributed", json_integer(x.conversions - x.attributed));
    json_object_set_new(out, "revenue", json_real(round6(x.revenue)));
    json_object_set_new(out, "attributed_revenue", json_real(round6(x.attr_revenue)));
    json_t *camps = json_array(), *chans = json_array();
    struct rowsort *r = credit_rows(&x.camps);
    for (size_t i = 0; r && i < x.camps.n; i++) {
        if (q->campaign && strcmp(q->campaign, r[i].name))
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "campaign_id", json_string(r[i].name));
        json_object_set_new(o, "conversions", json_real(round6(r[i].conv)));
        json_object_set_new(o, "revenue", json_real(round6(r[i].rev)));
        json_object_set_new(o, "touches", json_integer(r[i].touches));
        json_array_append_new(camps, o);
    }
    free(r);
    r = credit_rows(&x.chans);
    for (size_t i = 0; r && i < x.chans.n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "channel", json_string(r[i].name));
        json_object_set_new(o, "conversions", json_real(round6(r[i].conv)));
        json_object_set_new(o, "revenue", json_real(round6(r[i].rev)));
        json_object_set_new(o, "touches", json_integer(r[i].touches));
        json_array_append_new(chans, o);
    }
    free(r);
    json_object_set_new(out, "campaigns", camps);
    json_object_set_new(out, "channels", chans);
    attr_free(&x);
    return out;
}

/* ---------------------------------------------------------------------- */
/* ROI                                                                    */

struct roi_ctx {
    struct groups camps;   /* campaign → totals */
    json_t *by_chan;       /* campaign → {channel: [impressions, sends]} */
};

static int roi_cb(void *ud, const struct events_log_cell *c)
{
    struct roi_ctx *x = ud;
    if (!c->campaign[0])
        return 0;
    struct tot *t = groups_get(&x->camps, c->campaign, NULL);
    if (!t)
        return ERR_NOMEM;
    tot_add(t, c);
    if (!c->channel[0])
        return 0;
    json_t *m = json_object_get(x->by_chan, c->campaign);
    if (!m) {
        m = json_object();
        json_object_set_new(x->by_chan, c->campaign, m);
    }
    json_t *pair = json_object_get(m, c->channel);
    if (!pair) {
        pair = json_pack("[ii]", 0, 0);
        json_object_set_new(m, c->channel, pair);
    }
    long imp = (long)json_integer_value(json_object_get(c->n, "impression"));
    long snd = (long)json_integer_value(json_object_get(c->n, "send"));
    json_array_set_new(pair, 0, json_integer(json_integer_value(json_array_get(pair, 0)) + imp));
    json_array_set_new(pair, 1, json_integer(json_integer_value(json_array_get(pair, 1)) + snd));
    return 0;
}

static double chan_cost(const char *channel, const char *what)
{
    const json_t *chs = g_app ? g_app->cfg.channels : NULL;
    json_t *v = json_object_get(json_object_get(chs, channel), what);
    double d = json_number_value(v);
    return json_is_number(v) && isfinite(d) && d > 0 ? d : 0;
}

json_t *analytics_roi(struct store *s, const struct analytics_attr_req *q, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(s, &t);
    if (rc) {
        reqerr_from_code(e, rc, "roi");
        return NULL;
    }
    struct roi_ctx rx;
    memset(&rx, 0, sizeof rx);
    rx.by_chan = json_object();
    struct attr_ctx ax;
    rc = events_log_scan_cells(t, q->campaign, q->from_day, q->to_day, roi_cb, &rx);
    if (!rc)
        rc = attr_run(t, q, &ax);
    else
        memset(&ax, 0, sizeof ax);
    store_txn_end(t);
    if (rc) {
        attr_free(&ax);
        groups_free(&rx.camps);
        json_decref(rx.by_chan);
        reqerr_from_code(e, rc, "roi");
        return NULL;
    }
    /* every campaign with exposures or attributed revenue */
    const char *k;
    json_t *v;
    json_object_foreach(ax.camps.index, k, v)
        if (!q->campaign || !strcmp(q->campaign, k))
            groups_get(&rx.camps, k, NULL);
    struct rules_gen *g = rules_gen_acquire();
    size_t n = rx.camps.n;
    const char **names = calloc(n ? n : 1, sizeof *names);
    json_object_foreach(rx.camps.index, k, v)
        if (names)
            names[json_integer_value(v)] = k;
    struct rowsort *rows = calloc(n ? n : 1, sizeof *rows);
    json_t *list = json_array();
    double T_cost = 0, T_rev = 0, T_conv = 0;
    long T_imp = 0, T_snd = 0;
    json_t **objs = calloc(n ? n : 1, sizeof *objs);
    for (size_t i = 0; names && rows && objs && i < n; i++) {
        const struct tot *tt = &rx.camps.v[i];
        long imp = tt->n[EVENTS_IMPRESSION], snd = tt->n[EVENTS_SEND];
        double cps = 0, cpi = 0;
        int ci = g ? rules_gen_find_campaign(g, names[i]) : -1;
        if (ci >= 0) {
            cps = g->camps[ci].cost_per_send;
            cpi = g->camps[ci].cost_per_impression;
        }
        double c_camp = (double)snd * cps + (double)imp * cpi, c_chan = 0;
        json_t *cost_by_chan = json_object();
        json_t *pc;
        const char *ch;
        json_object_foreach(json_object_get(rx.by_chan, names[i]), ch, pc) {
            double cc = (double)json_integer_value(json_array_get(pc, 0)) * chan_cost(ch, "cost_per_impression") +
                        (double)json_integer_value(json_array_get(pc, 1)) * chan_cost(ch, "cost_per_send");
            c_chan += cc;
            json_object_set_new(cost_by_chan, ch, json_real(round6(cc)));
        }
        json_t *ix = json_object_get(ax.camps.index, names[i]);
        double rev = ix ? ax.camps.rev[json_integer_value(ix)] : 0;
        double conv = ix ? ax.camps.conv[json_integer_value(ix)] : 0;
        double cost = c_camp + c_chan;
        json_t *o = json_object();
        json_object_set_new(o, "campaign_id", json_string(names[i]));
        json_object_set_new(o, "impressions", json_integer(imp));
        json_object_set_new(o, "sends", json_integer(snd));
        json_object_set_new(o, "cost", json_real(round6(cost)));
        json_object_set_new(o, "cost_campaign", json_real(round6(c_camp)));
        json_object_set_new(o, "cost_channels", cost_by_chan);
        json_object_set_new(o, "attributed_revenue", json_real(round6(rev)));
        json_object_set_new(o, "attributed_conversions", json_real(round6(conv)));
        json_object_set_new(o, "roi", cost > 0 ? json_real(round6((rev - cost) / cost)) : json_null());
        json_object_set_new(o, "roas", cost > 0 ? json_real(round6(rev / cost)) : json_null());
        objs[i] = o;
        rows[i] = (struct rowsort){ names[i], conv, rev, (long)i };
        T_cost += cost;
        T_rev += rev;
        T_conv += conv;
        T_imp += imp;
        T_snd += snd;
    }
    rules_gen_release(g);
    if (rows && objs) {
        qsort(rows, n, sizeof *rows, rowsort_cmp);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(list, objs[rows[i].touches]);
    }
    free(objs);
    free(rows);
    free(names);
    json_t *out = json_object();
    json_object_set_new(out, "model", json_string(analytics_model_name(q->model)));
    json_object_set_new(out, "window_s", json_integer(q->window_s));
    range_strs(out, q->from_day, q->to_day);
    json_object_set_new(out, "campaigns", list);
    json_t *tot = json_object();
    json_object_set_new(tot, "impressions", json_integer(T_imp));
    json_object_set_new(tot, "sends", json_integer(T_snd));
    json_object_set_new(tot, "cost", json_real(round6(T_cost)));
    json_object_set_new(tot, "attributed_revenue", json_real(round6(T_rev)));
    json_object_set_new(tot, "attributed_conversions", json_real(round6(T_conv)));
    json_object_set_new(tot, "roi", T_cost > 0 ? json_real(round6((T_rev - T_cost) / T_cost)) : json_null());
    json_object_set_new(tot, "roas", T_cost > 0 ? json_real(round6(T_rev / T_cost)) : json_null());
    json_object_set_new(out, "totals", tot);
    attr_free(&ax);
    groups_free(&rx.camps);
    json_decref(rx.by_chan);
    return out;
}
