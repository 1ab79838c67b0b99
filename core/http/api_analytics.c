/* api_analytics.c — /api/v1/analytics: campaigns/{id}, dashboard, reports,
 * attribution, roi.  Parameters are checked here (unknown ones refused, so
 * a typo never silently falls back to a default); the numbers come from
 * analytics.c. */
#include "insight/analytics.h"
#include "base/id.h"
#include "http/api.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "http/router.h"
#include "service/promotions.h"
#include "base/tz.h"
#include <stdlib.h>
#include <string.h>

/* Refuse query parameters not in `allowed` (NULL-terminated). */
static int check_query(struct http_req *r, const char *const *allowed)
{
    if (!r->query)
        return 1;
    const char *p = r->query;
    while (*p) {
        size_t n = strcspn(p, "=&");
        int ok = n == 0;
        for (int i = 0; allowed[i] && !ok; i++)
            ok = strlen(allowed[i]) == n && !strncmp(p, allowed[i], n);
        if (!ok) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(n < 60 ? n : 60), p);
            http_reply_errorf(r, 400, "unknown_query", name, "unknown query parameter \"%s\"", name);
            return 0;
        }
        p += strcspn(p, "&");
        if (*p == '&')
            p++;
    }
    return 1;
}

/* A day: "2026-03-01", any ISO-8601 instant, or unix seconds. */
static int parse_day(const char *s, int64_t *day)
{
    int64_t secs;
    char *end;
    if (!s || !*s)
        return ERR_INVAL;
    long long v = strtoll(s, &end, 10);
    if (!*end && end != s && strchr(s, '-') == NULL) {
        secs = v;
    } else if (tz_parse_iso8601(s, &secs)) {
        return ERR_INVAL;
    }
    if (secs < 0 || secs > 253402300799LL) /* 0000 .. 9999-12-31 */
        return ERR_INVAL;
    *day = secs / 86400;
    return 0;
}

/* from/to from the query (or a JSON body when `b` is given); defaults: to =
 * today, from = to - (default_days - 1). */
static int get_range(struct http_req *r, json_t *b, int default_days, int64_t *from, int64_t *to)
{
    const char *names[2] = { "from", "to" };
    int64_t *dst[2] = { from, to };
    int have[2] = { 0, 0 };
    for (int i = 0; i < 2; i++) {
        char *q = NULL;
        const char *val = NULL;
        if (b) {
            json_t *v = json_object_get(b, names[i]);
            if (v && !json_is_null(v)) {
                if (json_is_integer(v)) {
                    int64_t secs = (int64_t)json_integer_value(v);
                    if (secs < 0 || secs > 253402300799LL) {
                        http_reply_errorf(r, 400, "invalid_field", names[i],
                                          "\"%s\" must be a date like \"2026-03-01\"", names[i]);
                        return 0;
                    }
                    *dst[i] = secs / 86400;
                    have[i] = 1;
                    continue;
                }
                val = json_string_value(v);
                if (!val) {
                    http_reply_errorf(r, 400, "invalid_field", names[i],
                                      "\"%s\" must be a date like \"2026-03-01\"", names[i]);
                    return 0;
                }
            }
        } else {
            val = q = http_query_get(r, names[i]);
        }
        if (val) {
            if (parse_day(val, dst[i])) {
                free(q);
                http_reply_errorf(r, 400, b ? "invalid_field" : "invalid_query", names[i],
                                  "\"%s\" must be a date like \"2026-03-01\", an ISO-8601 instant or "
                                  "unix seconds", names[i]);
                return 0;
            }
            have[i] = 1;
        }
        free(q);
    }
    if (!have[1])
        *to = clock_now() / 86400;
    if (!have[0])
        *from = *to - (default_days - 1);
    if (*from < 0)
        *from = 0;
    if (*from > *to) {
        http_reply_error(r, 400, b ? "invalid_field" : "invalid_query", "\"from\" is after \"to\"",
                         "from");
        return 0;
    }
    if (*to - *from + 1 > ANALYTICS_MAX_DAYS) {
        http_reply_errorf(r, 400, b ? "invalid_field" : "invalid_query", "from",
                          "the range spans more than %d days", ANALYTICS_MAX_DAYS);
        return 0;
    }
    return 1;
}

static void h_campaign(struct http_req *r)
{
    static const char *const allowed[] = { "from", "to", NULL };
    const char *id = r->params[0];
    if (!check_query(r, allowed))
        return;
    if (!id_valid(id)) {
        http_reply_error(r, 400, "invalid_id",
                         "campaign ids are 1-128 characters of A-Z a-z 0-9 _ - . : @", "id");
        return;
    }
    int64_t from, to;
    if (!get_range(r, NULL, 30, &from, &to))
        return;
    struct reqerr e = { 0 };
    json_t *o = analytics_campaign(g_app->store, id, from, to, &e);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    json_t *cp = promotions_budget_json(id); /* coupon use and money budget, since launch */
    if (cp)
        json_object_set_new(o, "coupons", cp);
    http_reply_json(r, 200, o);
}

static void h_dashboard(struct http_req *r)
{
    static const char *const allowed[] = { "from", "to", "top", NULL };
    if (!check_query(r, allowed))
        return;
    int64_t from, to;
    if (!get_range(r, NULL, 30, &from, &to))
        return;
    int ok;
    long top = http_query_long(r, "top", 10, 1, 100, &ok);
    if (!ok)
        return;
    struct reqerr e = { 0 };
    json_t *o = analytics_dashboard(g_app->store, clock_now(), from, to, (int)top, &e);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    http_reply_json(r, 200, o);
}

static int str_list(struct http_req *r, json_t *v, const char *field, int max, const char **out,
                    int *n, int (*valid)(const char *), const char *what)
{
    *n = 0;
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_array(v) || (int)json_array_size(v) > max) {
        http_reply_errorf(r, 400, "invalid_field", field, "\"%s\" must be a list of at most %d names",
                          field, max);
        return 0;
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        const char *s = json_string_value(x);
        if (!s || !valid(s)) {
            http_reply_errorf(r, 400, "invalid_field", field, "%s[%zu]: unknown %s \"%.64s\"", field, i,
                              what, s ? s : "(not a string)");
            return 0;
        }
        for (int j = 0; j < *n; j++)
            if (!strcmp(out[j], s)) {
                http_reply_errorf(r, 400, "invalid_field", field, "%s[%zu]: \"%s\" is listed twice",
                                  field, i, s);
                return 0;
            }
        out[(*n)++] = s;
    }
    return 1;
}

static int check_filters(struct http_req *r, json_t *f)
{
    if (!f || json_is_null(f))
        return 1;
    if (!json_is_object(f)) {
        http_reply_error(r, 400, "invalid_field",
                         "\"filters\" must be an object like {\"campaign\": \"spring\"}", "filters");
        return 0;
    }
    const char *k;
    json_t *v;
    json_object_foreach(f, k, v) {
        if (strcmp(k, "campaign") && strcmp(k, "variant") && strcmp(k, "channel")) {
            http_reply_errorf(r, 400, "invalid_field", "filters",
                              "filters.%.64s: filter on campaign, variant or channel", k);
            return 0;
        }
        int ok = json_is_string(v);
        if (json_is_array(v) && json_array_size(v) >= 1 && json_array_size(v) <= 1000) {
            ok = 1;
            size_t i;
            json_t *x;
            json_array_foreach(v, i, x) ok &= json_is_string(x);
        }
        if (!ok) {
            http_reply_errorf(r, 400, "invalid_field", "filters",
                              "filters.%s must be a string or a list of 1-1000 strings", k);
            return 0;
        }
    }
    return 1;
}

static void h_reports(struct http_req *r)
{
    static const char *const allowed[] = { "format", NULL };
    if (!check_query(r, allowed))
        return;
    json_t *b = http_body_json(r, JSON_OBJECT);
    if (!b)
        return;
    static const char *known[] = { "dimensions", "metrics", "filters", "from", "to", "format",
                                   "sort", "limit", NULL };
    const char *k;
    json_t *v;
    char *qformat = NULL;
    json_object_foreach(b, k, v) {
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!ok) {
            http_reply_errorf(r, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
            goto out;
        }
    }
    struct analytics_report_req q;
    memset(&q, 0, sizeof q);
    if (!str_list(r, json_object_get(b, "dimensions"), "dimensions", 4, q.dims, &q.ndims,
                  analytics_dim_valid, "dimension (campaign, variant, channel, day, week, month)") ||
        !str_list(r, json_object_get(b, "metrics"), "metrics", 40, q.metrics, &q.nmetrics,
                  analytics_metric_valid, "metric"))
        goto out;
    if (!q.nmetrics) {
        static const char *def[] = { "impressions", "clicks", "conversions", "revenue", "ctr",
                                     "conversion_rate" };
        for (int i = 0; i < 6; i++)
            q.metrics[q.nmetrics++] = def[i];
    }
    if (!check_filters(r, json_object_get(b, "filters")))
        goto out;
    q.filters = json_object_get(b, "filters");
    if (json_is_null(q.filters))
        q.filters = NULL;
    if (!get_range(r, b, 30, &q.from_day, &q.to_day))
        goto out;
    v = json_object_get(b, "sort");
    if (v && !json_is_null(v)) {
        q.sort = json_string_value(v);
        int found = 0;
        for (int i = 0; q.sort && i < q.nmetrics; i++)
            found |= !strcmp(q.metrics[i], q.sort);
        if (!found) {
            http_reply_error(r, 400, "invalid_field", "\"sort\" must name one of the report's metrics",
                             "sort");
            goto out;
        }
    }
    v = json_object_get(b, "limit");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > ANALYTICS_MAX_ROWS) {
            http_reply_errorf(r, 400, "invalid_field", "limit", "\"limit\" must be 1-%d",
                              ANALYTICS_MAX_ROWS);
            goto out;
        }
        q.limit = (long)json_integer_value(v);
    }
    int csv = 0;
    v = json_object_get(b, "format");
    qformat = http_query_get(r, "format");
    const char *fmt = qformat ? qformat : json_string_value(v);
    if ((v && !json_is_null(v) && !json_is_string(v)) ||
        (fmt && strcmp(fmt, "json") && strcmp(fmt, "csv"))) {
        http_reply_error(r, 400, "invalid_field", "\"format\" must be \"json\" or \"csv\"", "format");
        goto out;
    }
    csv = fmt && !strcmp(fmt, "csv");
    struct reqerr e = { 0 };
    json_t *rep = analytics_report(g_app->store, &q, &e);
    if (!rep) {
        http_reply_reqerr(r, &e);
        goto out;
    }
    if (csv) {
        struct buf o = BUF_INIT;
        if (analytics_report_csv(rep, &o)) {
            buf_free(&o);
            json_decref(rep);
            http_reply_error(r, 500, "internal", "out of memory rendering CSV", NULL);
            goto out;
        }
        http_add_header(r, "Content-Disposition", "attachment; filename=\"report.csv\"");
        http_reply_raw(r, 200, "text/csv; charset=utf-8", o.p ? o.p : "", o.len);
        buf_free(&o);
        json_decref(rep);
    } else {
        http_reply_json(r, 200, rep);
    }
out:
    free(qformat);
    json_decref(b);
}

/* model, window, half_life, from, to, campaign */
static int attr_params(struct http_req *r, struct analytics_attr_req *q)
{
    memset(q, 0, sizeof *q);
    char *model = http_query_get(r, "model");
    int m = model ? analytics_model_parse(model) : ATTR_LAST;
    free(model);
    if (m < 0) {
        http_reply_error(r, 400, "invalid_query",
                         "model must be last_touch, first_touch, linear, time_decay or position",
                         "model");
        return 0;
    }
    q->model = (enum analytics_model)m;
    static const struct { const char *name; int64_t def, lo, hi; } d[2] = {
        { "window", 7 * 86400, 60, 90 * 86400 }, { "half_life", 7 * 86400, 60, 365 * 86400 } };
    int64_t *dst[2] = { &q->window_s, &q->half_life_s };
    for (int i = 0; i < 2; i++) {
        char *s = http_query_get(r, d[i].name);
        *dst[i] = d[i].def;
        if (s && (tz_parse_duration(s, dst[i]) || *dst[i] < d[i].lo || *dst[i] > d[i].hi)) {
            free(s);
            http_reply_errorf(r, 400, "invalid_query", d[i].name,
                              "%s must be a duration like \"7d\", \"12h\" or \"30m\" from %s to %s",
                              d[i].name, "1m", i ? "365d" : "90d");
            return 0;
        }
        free(s);
    }
    if (!get_range(r, NULL, 30, &q->from_day, &q->to_day))
        return 0;
    static __thread char camp[136];
    char *c = http_query_get(r, "campaign");
    if (c) {
        if (!id_valid(c)) {
            free(c);
            http_reply_error(r, 400, "invalid_query",
                             "campaign must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "campaign");
            return 0;
        }
        snprintf(camp, sizeof camp, "%s", c);
        q->campaign = camp;
        free(c);
    }
    return 1;
}

/* attribution and ROI take the same query and differ only in the service */
static void attr_route(struct http_req *r,
                       json_t *(*fn)(struct store *, const struct analytics_attr_req *,
                                     struct reqerr *))
{
    static const char *const allowed[] = { "model", "window", "half_life", "from", "to", "campaign",
                                           NULL };
    if (!check_query(r, allowed))
        return;
    struct analytics_attr_req q;
    if (!attr_params(r, &q))
        return;
    struct reqerr e = { 0 };
    json_t *o = fn(g_app->store, &q, &e);
    if (!o) {
        http_reply_reqerr(r, &e);
        return;
    }
    http_reply_json(r, 200, o);
}

static void h_attribution(struct http_req *r) { attr_route(r, analytics_attribution); }
/* ROI: each campaign with coupons also shows the discounts its codes
 * granted (since launch: redemptions are not windowed) and its budget */
static json_t *roi_with_coupons(struct store *s, const struct analytics_attr_req *q, struct reqerr *e)
{
    json_t *o = analytics_roi(s, q, e);
    size_t i;
    json_t *c;
    json_array_foreach(o ? json_object_get(o, "campaigns") : NULL, i, c) {
        json_t *cp = promotions_budget_json(json_string_value(json_object_get(c, "campaign_id")));
        if (cp) {
            json_object_set(c, "coupon_discount_total", json_object_get(cp, "discount_total"));
            json_object_set(c, "coupon_redemptions", json_object_get(cp, "redeemed"));
            if (json_object_get(cp, "budget"))
                json_object_set(c, "budget", json_object_get(cp, "budget"));
            json_decref(cp);
        }
    }
    return o;
}

static void h_roi(struct http_req *r) { attr_route(r, roi_with_coupons); }

void api_analytics_register(void)
{
    router_add(HTTP_GET, "/api/v1/analytics/dashboard", ROLE_MARKETER, h_dashboard, 0);
    router_add(HTTP_POST, "/api/v1/analytics/reports", ROLE_MARKETER, h_reports, 0);
    router_add(HTTP_GET, "/api/v1/analytics/attribution", ROLE_MARKETER, h_attribution, 0);
    router_add(HTTP_GET, "/api/v1/analytics/roi", ROLE_MARKETER, h_roi, 0);
    router_add(HTTP_GET, "/api/v1/analytics/campaigns/{id}", ROLE_MARKETER, h_campaign, 0);
}
