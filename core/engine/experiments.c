/*
 * experiments.c — experiment definitions: parsing and checking one (from
 * an API body or a file's table), the canonical form with every default
 * made explicit, metrics, namespace overlap (see experiments.h).  The live
 * set, views and assignment are experiments_pick.c; the exposure log is
 * experiments_expo.c.
 *
 * Why one parser for files and API bodies: the same definition must mean
 * the same thing whichever way it arrived, and a field named in an API
 * error ("variants[1].weight") is the same path a file's error points at.
 */
#include "engine/experiments.h"
#include "engine/assign.h"
#include "engine/cond.h"
#include "base/err.h"
#include "base/id.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *status_names[EXP_NSTATUS] = { "draft", "running", "stopped", "concluded",
                                                  "archived" };

const char *experiments_status_name(enum experiments_status s)
{
    return (unsigned)s < EXP_NSTATUS ? status_names[s] : "?";
}

int experiments_status_parse(const char *s)
{
    for (int i = 0; s && i < EXP_NSTATUS; i++)
        if (!strcmp(s, status_names[i]))
            return i;
    return -1;
}

/* ---------------------------------------------------------------------- */
/* metrics                                                                */

static int custom_type_ok(const char *t)
{
    static const char *builtin[] = { "impression", "click", "conversion", "send", "open",
                                     "dismiss", NULL };
    size_t n = strlen(t);
    if (n < 1 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
            return 0;
    for (int i = 0; builtin[i]; i++)
        if (!strcmp(t, builtin[i]))
            return 0;
    return 1;
}

int experiments_metric_parse(const char *name, struct experiments_metric *m, char *msg,
                             size_t msglen)
{
    memset(m, 0, sizeof *m);
    m->higher_is_better = 1;
    if (!name || strlen(name) >= sizeof m->name) {
        snprintf(msg, msglen, "a metric is a name of at most %zu bytes", sizeof m->name - 1);
        return -1;
    }
    if (!strcmp(name, "conversion_rate")) {
        m->kind = EXPM_CONVERSION;
    } else if (!strcmp(name, "revenue_per_customer")) {
        m->kind = EXPM_REVENUE;
    } else if (!strcmp(name, "click_rate")) {
        m->kind = EXPM_CLICK;
    } else if (!strncmp(name, "event:", 6) && custom_type_ok(name + 6)) {
        m->kind = EXPM_EVENT;
        snprintf(m->event, sizeof m->event, "%s", name + 6);
    } else {
        snprintf(msg, msglen,
                 "unknown metric \"%.48s\": use conversion_rate, revenue_per_customer, "
                 "click_rate or event:<custom type> (1-32 of a-z 0-9 _)",
                 name);
        return -1;
    }
    snprintf(m->name, sizeof m->name, "%s", name);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* parsing                                                                */

struct experiments_def *experiments_def_ref(struct experiments_def *d)
{
    if (d)
        __atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
    return d;
}

void experiments_def_unref(struct experiments_def *d)
{
    if (!d || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    cond_free(d->condition);
    for (int i = 0; i < d->nforced; i++)
        cond_free(d->forced[i].cond);
    json_decref(d->json);
    free(d);
}

int experiments_variant_index(const struct experiments_def *d, const char *id)
{
    for (int i = 0; id && i < d->nvariants; i++)
        if (!strcmp(d->variants[i], id))
            return i;
    return -1;
}

/* Experiment conditions read the stored profile; segments are not
 * evaluated at assignment time, so {"$segment": ...} is refused. */
static int no_segments(void *ud, const char *id, size_t len)
{
    (void)ud;
    (void)id;
    (void)len;
    return 0;
}

static int bad(struct reqerr *e, const char *field, const char *fmt, const char *a)
{
    return reqerr_set(e, 400, "invalid_field", field, fmt, a);
}

static int num_in(const json_t *v, double lo, double hi, double *out)
{
    if (!json_is_number(v))
        return 0;
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

static int compile_cond(const json_t *c, const char *field, struct cond **out, struct reqerr *e)
{
    if (!json_is_object(c))
        return bad(e, field, "%s must be a GrowthBook condition (a JSON object)", field);
    struct cond_opts o = { .mode = COND_STRICT, .segment_known = no_segments };
    struct reqerr ce = { 0 };
    int rc = cond_compile(c, &o, out, &ce);
    if (rc) {
        reqerr_set(e, 400, "invalid_condition", field, "%s: %s", field, ce.message);
        reqerr_clear(&ce);
        return rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVAL;
    }
    return 0;
}

static int parse_variants(const json_t *v, struct experiments_def *d, json_t *canon,
                          struct reqerr *e)
{
    if (!json_is_array(v) || json_array_size(v) < 2 ||
        json_array_size(v) > EXPERIMENTS_MAX_VARIANTS) {
        char m[120];
        snprintf(m, sizeof m, "variants must be a list of 2 to %d variants ({\"id\", \"weight\"})",
                 EXPERIMENTS_MAX_VARIANTS);
        return bad(e, "variants", "%s", m);
    }
    int nweights = 0;
    double sum = 0;
    size_t i;
    json_t *x;
    json_array_foreach (v, i, x) {
        char f[48];
        snprintf(f, sizeof f, "variants[%zu]", i);
        const char *vid = NULL;
        const json_t *w = NULL;
        if (json_is_string(x)) {
            vid = json_string_value(x);
        } else if (json_is_object(x)) {
            const char *k;
            json_t *y;
            json_object_foreach ((json_t *)x, k, y) {
                if (strcmp(k, "id") && strcmp(k, "weight")) {
                    char ff[120];
                    snprintf(ff, sizeof ff, "%s.%.64s", f, k);
                    return reqerr_set(e, 400, "unknown_field", ff,
                                      "unknown field \"%.64s\" in a variant (id, weight)", k);
                }
            }
            vid = json_string_value(json_object_get(x, "id"));
            w = json_object_get(x, "weight");
        } else {
            return bad(e, f, "%s must be {\"id\": \"A\", \"weight\": 0.5} or a variant id", f);
        }
        char fid[56];
        snprintf(fid, sizeof fid, "%s.id", f);
        if (!vid || !id_valid(vid) || strlen(vid) > EXPERIMENTS_MAX_VARIANT_ID)
            return bad(e, fid, "%s must be 1-64 characters of A-Z a-z 0-9 _ - . : @", fid);
        if (!strcmp(vid, EXPERIMENTS_HOLDOUT))
            return bad(e, fid, "%s: \"holdout\" is reserved for the held-out customers", fid);
        if (experiments_variant_index(d, vid) >= 0)
            return bad(e, fid, "%s: two variants have the same id", fid);
        snprintf(d->variants[d->nvariants], sizeof d->variants[0], "%s", vid);
        if (w && !json_is_null(w)) {
            char fw[60];
            snprintf(fw, sizeof fw, "%s.weight", f);
            double wt;
            if (!num_in(w, 0, 1e9, &wt))
                return bad(e, fw, "%s must be a finite number >= 0", fw);
            d->weights[d->nvariants] = wt;
            sum += wt;
            nweights++;
        }
        d->nvariants++;
    }
    if (nweights && nweights != d->nvariants)
        return bad(e, "variants", "%s", "give every variant a weight, or none (equal weights)");
    if (!nweights) {
        assign_equal_weights(d->nvariants, d->weights);
    } else {
        if (!(sum > 0))
            return bad(e, "variants", "%s", "the variants' weights must sum to a positive number");
        /* GrowthBook uses weights as given when they sum to 1 +- 0.01; other
         * sums are shares (50, 50), normalised here (the SDK would fall back
         * to equal weights, which is never what such a definition means) */
        if (sum < 0.99 || sum > 1.01)
            for (int k = 0; k < d->nvariants; k++)
                d->weights[k] /= sum;
    }
    json_t *arr = json_array();
    for (int k = 0; k < d->nvariants; k++)
        json_array_append_new(arr, json_pack("{s:s,s:f}", "id", d->variants[k], "weight",
                                             d->weights[k]));
    json_object_set_new(canon, "variants", arr);
    return 0;
}

static int parse_campaigns(const json_t *def, struct experiments_def *d, json_t *canon,
                           struct reqerr *e)
{
    const json_t *one = json_object_get(def, "campaign_id");
    const json_t *many = json_object_get(def, "campaigns");
    if (one && json_is_null(one))
        one = NULL;
    if (many && json_is_null(many))
        many = NULL;
    if (one && many)
        return bad(e, "campaigns", "%s", "give campaign_id or campaigns, not both");
    if (!one && !many)
        return reqerr_set(e, 400, "missing_field", "campaign_id",
                          "campaign_id (or campaigns, a list) is required: which campaign the "
                          "experiment splits");
    if (one) {
        const char *c = json_string_value(one);
        if (!c || !id_valid(c))
            return bad(e, "campaign_id", "%s must be a campaign id", "campaign_id");
        snprintf(d->campaigns[0], sizeof d->campaigns[0], "%s", c);
        d->ncampaigns = 1;
        json_object_set_new(canon, "campaign_id", json_string(c));
        return 0;
    }
    if (!json_is_array(many) || !json_array_size(many) ||
        json_array_size(many) > EXPERIMENTS_MAX_CAMPAIGNS)
        return bad(e, "campaigns", "%s must be a list of 1 to 16 campaign ids", "campaigns");
    size_t i;
    json_t *x;
    json_array_foreach (many, i, x) {
        char f[40];
        snprintf(f, sizeof f, "campaigns[%zu]", i);
        const char *c = json_string_value(x);
        if (!c || !id_valid(c))
            return bad(e, f, "%s must be a campaign id", f);
        for (int k = 0; k < d->ncampaigns; k++)
            if (!strcmp(d->campaigns[k], c))
                return bad(e, f, "%s is listed twice", f);
        snprintf(d->campaigns[d->ncampaigns++], sizeof d->campaigns[0], "%s", c);
    }
    if (d->ncampaigns == 1) {
        json_object_set_new(canon, "campaign_id", json_string(d->campaigns[0]));
    } else {
        json_t *a = json_array();
        for (int k = 0; k < d->ncampaigns; k++)
            json_array_append_new(a, json_string(d->campaigns[k]));
        json_object_set_new(canon, "campaigns", a);
    }
    return 0;
}

static int attr_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

static int parse_metrics(const json_t *def, struct experiments_def *d, json_t *canon,
                         struct reqerr *e)
{
    char msg[200];
    const json_t *m = json_object_get(def, "metric");
    const char *mn = m && !json_is_null(m) ? json_string_value(m) : "conversion_rate";
    if (!mn || experiments_metric_parse(mn, &d->metric, msg, sizeof msg))
        return bad(e, "metric", "%s", mn ? msg : "metric must be a metric name");
    json_object_set_new(canon, "metric", json_string(d->metric.name));
    const json_t *g = json_object_get(def, "guardrails");
    json_t *ga = json_array();
    json_object_set_new(canon, "guardrails", ga);
    if (!g || json_is_null(g))
        return 0;
    if (!json_is_array(g) || json_array_size(g) > EXPERIMENTS_MAX_GUARDRAILS)
        return bad(e, "guardrails", "%s must be a list of at most 8 metrics", "guardrails");
    size_t i;
    json_t *x;
    json_array_foreach (g, i, x) {
        char f[40];
        snprintf(f, sizeof f, "guardrails[%zu]", i);
        struct experiments_metric *gm = &d->guardrails[d->nguardrails];
        const char *name = NULL;
        int hib = 1;
        if (json_is_string(x)) {
            name = json_string_value(x);
        } else if (json_is_object(x)) {
            const char *k;
            json_t *y;
            json_object_foreach (x, k, y) {
                if (strcmp(k, "metric") && strcmp(k, "higher_is_better")) {
                    char ff[120];
                    snprintf(ff, sizeof ff, "%s.%.64s", f, k);
                    return reqerr_set(e, 400, "unknown_field", ff,
                                      "unknown field \"%.64s\" in a guardrail (metric, "
                                      "higher_is_better)",
                                      k);
                }
            }
            name = json_string_value(json_object_get(x, "metric"));
            const json_t *h = json_object_get(x, "higher_is_better");
            if (h && !json_is_boolean(h)) {
                char ff[80];
                snprintf(ff, sizeof ff, "%s.higher_is_better", f);
                return bad(e, ff, "%s must be true or false", ff);
            }
            hib = !h || json_is_true(h);
        }
        if (!name || experiments_metric_parse(name, gm, msg, sizeof msg))
            return bad(e, f, "%s", name ? msg : "a guardrail is a metric name or {\"metric\", "
                                                "\"higher_is_better\"}");
        gm->higher_is_better = hib;
        d->nguardrails++;
        json_array_append_new(ga, hib ? json_string(gm->name)
                                      : json_pack("{s:s,s:b}", "metric", gm->name,
                                                  "higher_is_better", 0));
    }
    return 0;
}

static int parse_namespace(const json_t *v, struct experiments_def *d, json_t *canon,
                           struct reqerr *e)
{
    if (!v || json_is_null(v))
        return 0;
    const char *msg = "namespace must be [\"name\", start, end] with 0 <= start < end <= 1";
    if (!json_is_array(v) || json_array_size(v) != 3)
        return bad(e, "namespace", "%s", msg);
    const char *ns = json_string_value(json_array_get(v, 0));
    double lo, hi;
    if (!ns || !*ns || strlen(ns) >= sizeof d->ns || !num_in(json_array_get(v, 1), 0, 1, &lo) ||
        !num_in(json_array_get(v, 2), 0, 1, &hi) || !(lo < hi))
        return bad(e, "namespace", "%s", msg);
    d->has_namespace = 1;
    snprintf(d->ns, sizeof d->ns, "%s", ns);
    d->ns_lo = lo;
    d->ns_hi = hi;
    json_object_set_new(canon, "namespace", json_pack("[s,f,f]", ns, lo, hi));
    return 0;
}

static int parse_forced(const json_t *v, struct experiments_def *d, json_t *canon,
                        struct reqerr *e)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) > EXPERIMENTS_MAX_FORCED)
        return bad(e, "forced", "%s",
                   "forced must be a list of at most 16 {\"condition\": {...}, \"variant\": \"B\"}");
    json_t *arr = json_array();
    json_object_set_new(canon, "forced", arr);
    size_t i;
    json_t *x;
    json_array_foreach (v, i, x) {
        char f[40], ff[80];
        snprintf(f, sizeof f, "forced[%zu]", i);
        if (!json_is_object(x))
            return bad(e, f, "%s must be {\"condition\": {...}, \"variant\": \"B\"}", f);
        const char *k;
        json_t *y;
        json_object_foreach (x, k, y) {
            if (strcmp(k, "condition") && strcmp(k, "variant")) {
                snprintf(ff, sizeof ff, "%.38s.%.40s", f, k);
                return reqerr_set(e, 400, "unknown_field", ff,
                                  "unknown field \"%.40s\" (condition, variant)", k);
            }
        }
        snprintf(ff, sizeof ff, "%s.variant", f);
        int vi = experiments_variant_index(d, json_string_value(json_object_get(x, "variant")));
        if (vi < 0)
            return bad(e, ff, "%s must name one of the experiment's variants", ff);
        snprintf(ff, sizeof ff, "%s.condition", f);
        int rc = compile_cond(json_object_get(x, "condition"), ff, &d->forced[d->nforced].cond, e);
        if (rc)
            return rc;
        d->forced[d->nforced++].variant = vi;
        json_array_append_new(arr, json_pack("{s:O,s:s}", "condition",
                                             json_object_get(x, "condition"), "variant",
                                             d->variants[vi]));
    }
    return 0;
}

static const char *known_fields[] = {
    "id", "name", "description", "campaign_id", "campaigns", "variants", "hash_attribute",
    "seed", "hash_version", "coverage", "namespace", "holdout", "sticky", "condition", "forced",
    "metric", "guardrails", "min_sample", "mde", "alpha", "sequential_tuning", "cuped_days",
    "status", NULL };

static int parse_into(const json_t *def, struct experiments_def *d, json_t *canon, struct reqerr *e)
{
    if (!json_is_object(def))
        return reqerr_set(e, 400, "invalid_body", NULL, "an experiment is a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)def, k, v) {
        int ok = 0;
        for (int i = 0; known_fields[i] && !ok; i++)
            ok = !strcmp(k, known_fields[i]);
        if (!ok)
            return reqerr_set(e, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
    }
    const char *id = json_string_value(json_object_get(def, "id"));
    if (!json_object_get(def, "id"))
        return reqerr_set(e, 400, "missing_field", "id", "id is required");
    if (!id || !id_valid(id))
        return bad(e, "id", "%s must be 1-128 characters of A-Z a-z 0-9 _ - . : @", "id");
    snprintf(d->id, sizeof d->id, "%s", id);
    json_object_set_new(canon, "id", json_string(id));
    v = json_object_get(def, "name");
    if (v && !json_is_null(v) && (!json_is_string(v) || !json_string_length(v) ||
                                  json_string_length(v) > 200))
        return bad(e, "name", "%s must be a string of 1-200 bytes", "name");
    json_object_set_new(canon, "name", json_string(v && json_is_string(v) ? json_string_value(v)
                                                                           : id));
    v = json_object_get(def, "description");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) > 4096)
            return bad(e, "description", "%s must be a string of at most 4096 bytes",
                       "description");
        json_object_set_new(canon, "description", json_incref(v));
    }
    int rc = parse_campaigns(def, d, canon, e);
    if (!rc)
        rc = parse_variants(json_object_get(def, "variants"), d, canon, e);
    if (!json_object_get(def, "variants") && !rc)
        return reqerr_set(e, 400, "missing_field", "variants",
                          "variants is required: [{\"id\": \"A\", \"weight\": 0.5}, ...]");
    if (rc)
        return rc;

    v = json_object_get(def, "hash_attribute");
    const char *ha = v && !json_is_null(v) ? json_string_value(v) : "id";
    if (!attr_ok(ha))
        return bad(e, "hash_attribute", "%s must be a profile attribute name (1-64 of A-Z a-z 0-9 _)",
                   "hash_attribute");
    snprintf(d->hash_attribute, sizeof d->hash_attribute, "%s", ha);
    json_object_set_new(canon, "hash_attribute", json_string(ha));

    v = json_object_get(def, "seed");
    const char *seed = v && !json_is_null(v) ? json_string_value(v) : id;
    if (!seed || !*seed || strlen(seed) > EXPERIMENTS_MAX_SEED)
        return bad(e, "seed", "%s must be a string of 1-256 bytes", "seed");
    snprintf(d->seed, sizeof d->seed, "%s", seed);
    json_object_set_new(canon, "seed", json_string(seed));

    v = json_object_get(def, "hash_version");
    d->hash_version = 2;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != 2))
            return bad(e, "hash_version", "%s must be 1 or 2 (GrowthBook's hash versions)",
                       "hash_version");
        d->hash_version = (int)json_integer_value(v);
    }
    json_object_set_new(canon, "hash_version", json_integer(d->hash_version));

    v = json_object_get(def, "coverage");
    d->coverage = 1;
    if (v && !json_is_null(v) && !num_in(v, 0, 1, &d->coverage))
        return bad(e, "coverage", "%s must be a number from 0 to 1 (the share of customers in "
                                  "the experiment)", "coverage");
    json_object_set_new(canon, "coverage", json_real(d->coverage));
    assign_bucket_ranges(d->nvariants, d->coverage, d->weights, d->nvariants, d->ranges);

    if ((rc = parse_namespace(json_object_get(def, "namespace"), d, canon, e)))
        return rc;

    v = json_object_get(def, "holdout");
    d->holdout = 0;
    if (v && !json_is_null(v) && (!num_in(v, 0, 1, &d->holdout) || d->holdout >= 1))
        return bad(e, "holdout", "%s must be a number from 0 to below 1 (the share of the "
                                 "experiment's customers that gets no offer)", "holdout");
    json_object_set_new(canon, "holdout", json_real(d->holdout));

    v = json_object_get(def, "sticky");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return bad(e, "sticky", "%s must be true or false", "sticky");
    d->sticky = json_is_true(v);
    json_object_set_new(canon, "sticky", json_boolean(d->sticky));

    v = json_object_get(def, "condition");
    if (v && !json_is_null(v)) {
        if ((rc = compile_cond(v, "condition", &d->condition, e)))
            return rc;
        json_object_set_new(canon, "condition", json_incref(v));
    }
    if ((rc = parse_forced(json_object_get(def, "forced"), d, canon, e)))
        return rc;
    if ((rc = parse_metrics(def, d, canon, e)))
        return rc;

    double x;
    v = json_object_get(def, "min_sample");
    d->min_sample = 100;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
            return bad(e, "min_sample", "%s must be a whole number of customers per arm (>= 0)",
                       "min_sample");
        d->min_sample = (long)json_integer_value(v);
    }
    json_object_set_new(canon, "min_sample", json_integer(d->min_sample));
    v = json_object_get(def, "mde");
    d->mde = 0.1;
    if (v && !json_is_null(v)) {
        if (!num_in(v, 1e-6, 10, &x))
            return bad(e, "mde", "%s must be a relative effect above 0 (0.1 = +10 %%)", "mde");
        d->mde = x;
    }
    json_object_set_new(canon, "mde", json_real(d->mde));
    v = json_object_get(def, "alpha");
    d->alpha = 0.05;
    if (v && !json_is_null(v)) {
        if (!num_in(v, 1e-6, 0.5, &x))
            return bad(e, "alpha", "%s must be a number in (0, 0.5]", "alpha");
        d->alpha = x;
    }
    json_object_set_new(canon, "alpha", json_real(d->alpha));
    v = json_object_get(def, "sequential_tuning");
    d->seq_tuning = 5000;
    if (v && !json_is_null(v)) {
        if (!num_in(v, 1, 1e12, &x))
            return bad(e, "sequential_tuning",
                       "%s must be a number >= 1 (about the total sample expected)",
                       "sequential_tuning");
        d->seq_tuning = x;
    }
    json_object_set_new(canon, "sequential_tuning", json_real(d->seq_tuning));
    v = json_object_get(def, "cuped_days");
    d->cuped_days = 14;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 365)
            return bad(e, "cuped_days", "%s must be a whole number of days from 0 to 365",
                       "cuped_days");
        d->cuped_days = (int)json_integer_value(v);
    }
    json_object_set_new(canon, "cuped_days", json_integer(d->cuped_days));
    v = json_object_get(def, "status");
    d->file_status = EXP_DRAFT;
    if (v && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (!s || (strcmp(s, "draft") && strcmp(s, "running")))
            return bad(e, "status", "%s in a definition may be \"draft\" or \"running\"", "status");
        d->file_status = (enum experiments_status)experiments_status_parse(s);
        json_object_set_new(canon, "status", json_string(s));
    }
    return 0;
}

int experiments_parse(const json_t *def, struct experiments_def **out, struct reqerr *e)
{
    *out = NULL;
    struct experiments_def *d = calloc(1, sizeof *d);
    json_t *canon = json_object();
    if (!d || !canon) {
        free(d);
        json_decref(canon);
        return reqerr_set(e, 503, "busy", NULL, "out of memory");
    }
    d->refs = 1;
    int rc = parse_into(def, d, canon, e);
    d->json = canon;
    if (rc) {
        experiments_def_unref(d);
        return rc < 0 ? rc : ERR_INVAL;
    }
    *out = d;
    return 0;
}

int experiments_overlap(const struct experiments_def *a, const struct experiments_def *b,
                        const char **camp)
{
    for (int i = 0; i < a->ncampaigns; i++)
        for (int j = 0; j < b->ncampaigns; j++) {
            if (strcmp(a->campaigns[i], b->campaigns[j]))
                continue;
            int clash;
            if (!a->has_namespace || !b->has_namespace)
                clash = 1; /* one of them claims all of the campaign's traffic */
            else if (strcmp(a->ns, b->ns))
                clash = 1; /* independent hashes: a customer may be in both ranges */
            else
                clash = a->ns_lo < b->ns_hi && b->ns_lo < a->ns_hi;
            if (clash) {
                *camp = a->campaigns[i];
                return 1;
            }
        }
    return 0;
}
