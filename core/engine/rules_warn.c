/*
 * rules_warn.c — static warnings over a rule set (`promod check`,
 * GET /api/v1/rules): things that load fine but are probably not what the
 * author meant.  Warnings never block loading; see rules.h for the list.
 *
 * Everything here reads parsed campaigns and channels and the files'
 * text (for line numbers and template placeholders); the only store access
 * is rules_sample_profiles, on a read transaction the caller opened.
 */
#include "engine/rules.h"
#include "base/tz.h"
#include "codec/codec.h"
#include "store/store.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void warn(json_t *out, const char *path, const char *src, size_t len, const char *field,
                 const char *code, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void warn(json_t *out, const char *path, const char *src, size_t len, const char *field,
                 const char *code, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = src && field ? rules_line_of(src, len, field) : 1;
    json_t *arr = json_object_get(out, path);
    if (!arr) {
        arr = json_array();
        json_object_set_new(out, path, arr);
    }
    json_array_append_new(arr, json_pack("{s:s,s:i,s:s,s:s}", "file", path, "line", line, "code",
                                         code, "message", msg));
}

/* "3/7d" */
static const char *cap_text(const struct rules_cap *c, char *b, size_t n)
{
    snprintf(b, n, "%ld/%s", c->limit, c->label[0] ? c->label : "lifetime");
    return b;
}

/* Cap `b` makes cap `a` redundant: a window at least as long with a limit
 * at most as high (strictly lower when `strict`). */
static int covers(const struct rules_cap *b, const struct rules_cap *a, int strict)
{
    int64_t wa = a->secs ? a->secs : INT64_MAX, wb = b->secs ? b->secs : INT64_MAX;
    return wb >= wa && (strict ? b->limit < a->limit : b->limit <= a->limit);
}

static int placements_overlap(const struct rules_campaign *a, const struct rules_campaign *b)
{
    if (!a->nplacements || !b->nplacements)
        return 1; /* no filter: every placement */
    for (int i = 0; i < a->nplacements; i++)
        for (int j = 0; j < b->nplacements; j++)
            if (!strcmp(a->placements[i], b->placements[j]))
                return 1;
    return 0;
}

static int chan_serves(const struct rules_channel *ch, const char *placement)
{
    if (!ch->placements)
        return 1;
    for (int i = 0; i < ch->nplacements; i++)
        if (!strcmp(ch->placements[i], placement))
            return 1;
    return 0;
}

/* A dotted path ("address.city") is present (not null) in profile `p`. */
static int path_seen(const json_t *p, const char *path, size_t len)
{
    const json_t *v = p;
    const char *s = path, *end = path + len;
    while (v && s < end) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        size_t k = dot ? (size_t)(dot - s) : (size_t)(end - s);
        char key[130];
        if (k >= sizeof key || !json_is_object(v))
            return 0;
        memcpy(key, s, k);
        key[k] = 0;
        v = json_object_get(v, key);
        s += k + (dot ? 1 : 0);
    }
    return v && !json_is_null(v);
}

/* Each {{path...}} of the file's text: a warning when no sampled profile
 * has the path.  `p.` in front of a path is the profile itself. */
static void template_attrs(json_t *out, const char *path, const char *src, size_t len,
                           const json_t *profiles, int nprof)
{
    json_t *done = json_object();
    int line = 1;
    for (size_t i = 0; i + 1 < len; i++) {
        if (src[i] == '\n')
            line++;
        if (src[i] != '{' || src[i + 1] != '{')
            continue;
        size_t j = i + 2;
        while (j < len && (src[j] == ' ' || src[j] == '\t'))
            j++;
        size_t st = j;
        while (j < len && (src[j] == '_' || src[j] == '-' || src[j] == '.' ||
                           (src[j] >= 'a' && src[j] <= 'z') || (src[j] >= 'A' && src[j] <= 'Z') ||
                           (src[j] >= '0' && src[j] <= '9')))
            j++;
        size_t k = j;
        while (k < len && (src[k] == ' ' || src[k] == '\t'))
            k++;
        if (j == st || j - st > 120 || k >= len || (src[k] != '|' && src[k] != '}'))
            continue;
        char name[130];
        memcpy(name, src + st, j - st);
        name[j - st] = 0;
        const char *look = !strncmp(name, "p.", 2) ? name + 2 : name;
        if (!strcmp(look, "coupon") || !strcmp(look, "id") || json_object_get(done, look))
            continue;
        json_object_set_new(done, look, json_true());
        int seen = 0;
        for (int p = 0; p < nprof && !seen; p++)
            seen = path_seen(json_array_get(profiles, (size_t)p), look, strlen(look));
        if (!seen) {
            json_t *arr = json_object_get(out, path);
            if (!arr) {
                arr = json_array();
                json_object_set_new(out, path, arr);
            }
            char msg[400];
            snprintf(msg, sizeof msg,
                     "template attribute {{%s}} is on none of the %d sampled profiles "
                     "(a typo, or an attribute not imported yet?)", name, nprof);
            json_array_append_new(arr, json_pack("{s:s,s:i,s:s,s:s}", "file", path, "line", line,
                                                 "code", "template_attribute_unseen", "message",
                                                 msg));
        }
        i = k;
    }
    json_decref(done);
}

json_t *rules_warnings(const struct rules_campaign *camps, int ncamps,
                       const struct rules_channel *chans, int nchans,
                       const struct rules_warn_file *files, int nfiles, const json_t *profiles,
                       int64_t now)
{
    json_t *out = json_object();
    if (!out)
        return NULL;
    int nprof = json_is_array(profiles) ? (int)json_array_size(profiles) : 0;
    char b1[64], b2[64];
    for (int i = 0; i < ncamps; i++) {
        const struct rules_campaign *c = &camps[i];
        if (c->file < 0 || c->file >= nfiles)
            continue;
        const struct rules_warn_file *f = &files[c->file];
        const char *P = f->path, *S = f->src;
        size_t L = f->len;
        /* a schedule entirely in the past */
        if (c->sched.ends && c->sched.ends <= now) {
            char iso[40];
            tz_format_iso8601(c->sched.ends, iso, sizeof iso);
            warn(out, P, S, L, "schedule.ends", "schedule_past",
                 "the schedule ended at %s: campaign \"%s\" can never be offered", iso, c->id);
        }
        /* placements no channel of the campaign serves */
        for (int k = 0; k < c->nplacements; k++) {
            int inbound = 0, served = 0;
            for (int ch = 0; ch < nchans && ch < 32; ch++) {
                if (!(c->channels & (1u << ch)) || chans[ch].outbound)
                    continue;
                inbound++;
                served |= chan_serves(&chans[ch], c->placements[k]);
            }
            if (!inbound)
                warn(out, P, S, L, "placements", "placement_unserved",
                     "placement \"%s\" is never asked for: every channel of \"%s\" sends "
                     "messages (placements apply to decide on a page or app channel)",
                     c->placements[k], c->id);
            else if (!served)
                warn(out, P, S, L, "placements", "placement_unserved",
                     "placement \"%s\" is served by no channel of \"%s\" (see the plugins' "
                     "placements lists)", c->placements[k], c->id);
        }
        /* variant weights all zero */
        if (c->nvariants > 0 && c->weight_sum <= 0)
            warn(out, P, S, L, "variants", "variant_weights_zero",
                 "every variant of \"%s\" has weight 0: %s", c->id,
                 c->hooks & HOOKS_BIT(HOOKS_CONTENT)
                     ? "only the content hook's choice is served"
                     : "without a content hook every customer gets the last variant");
        /* caps that can never bind */
        for (int a = 0; a < c->cust_caps.n; a++) {
            const struct rules_cap *ca = &c->cust_caps.w[a];
            int done = 0;
            for (int b = 0; b < c->cust_caps.n && !done; b++)
                if (b != a && covers(&c->cust_caps.w[b], ca, 0) &&
                    !(covers(ca, &c->cust_caps.w[b], 0) && b > a)) {
                    warn(out, P, S, L, "caps.customer", "cap_never_binds",
                         "customer cap %s never binds: customer cap %s is reached first",
                         cap_text(ca, b1, sizeof b1), cap_text(&c->cust_caps.w[b], b2, sizeof b2));
                    done = 1;
                }
            for (int b = 0; b < c->total_caps.n && !done; b++)
                if (covers(&c->total_caps.w[b], ca, 0)) {
                    warn(out, P, S, L, "caps.customer", "cap_never_binds",
                         "customer cap %s never binds: the campaign-wide cap %s is as low",
                         cap_text(ca, b1, sizeof b1), cap_text(&c->total_caps.w[b], b2, sizeof b2));
                    done = 1;
                }
            for (int ch = 0; ch < nchans && ch < 32 && !done; ch++) {
                if (!(c->channels & (1u << ch)))
                    continue;
                for (int b = 0; b < chans[ch].policy.n && !done; b++)
                    if (covers(&chans[ch].policy.w[b], ca, 1)) {
                        warn(out, P, S, L, "caps.customer", "cap_above_policy",
                             "customer cap %s is above channel %s's policy %s: the channel's "
                             "contact limit binds first", cap_text(ca, b1, sizeof b1),
                             chans[ch].name, cap_text(&chans[ch].policy.w[b], b2, sizeof b2));
                        done = 1;
                    }
            }
        }
        for (int a = 0; a < c->total_caps.n; a++)
            for (int b = 0; b < c->total_caps.n; b++)
                if (b != a && covers(&c->total_caps.w[b], &c->total_caps.w[a], 0) &&
                    !(covers(&c->total_caps.w[a], &c->total_caps.w[b], 0) && b > a)) {
                    warn(out, P, S, L, "caps.total", "cap_never_binds",
                         "total cap %s never binds: total cap %s is reached first",
                         cap_text(&c->total_caps.w[a], b1, sizeof b1),
                         cap_text(&c->total_caps.w[b], b2, sizeof b2));
                    break;
                }
        /* two active campaigns tied on priority where they compete */
        for (int j = 0; j < ncamps; j++) {
            const struct rules_campaign *o = &camps[j];
            if (j == i || c->status != CAMP_ACTIVE || o->status != CAMP_ACTIVE ||
                c->priority != o->priority || !(c->channels & o->channels) ||
                !placements_overlap(c, o) || (c->hooks & HOOKS_BIT(HOOKS_SCORE)) ||
                (o->hooks & HOOKS_BIT(HOOKS_SCORE)) || c->score_formula || o->score_formula)
                continue;
            const char *first = strcmp(c->id, o->id) < 0 ? c->id : o->id;
            warn(out, P, S, L, "priority", "priority_tie",
                 "same priority (%g) as active campaign \"%s\" (%s) on a shared channel and "
                 "placement, and neither has a score hook: ties are decided by id, so \"%s\" "
                 "ranks first", c->priority, o->id,
                 o->file >= 0 && o->file < nfiles ? files[o->file].path : "?", first);
        }
        if (nprof > 0 && S)
            template_attrs(out, P, S, L, profiles, nprof);
    }
    return out;
}

struct sample_ctx {
    json_t *arr, *seen;
    int want, got;
};

static int sample_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct sample_ctx *s = ud;
    char id[520];
    if (klen >= sizeof id)
        return 0;
    memcpy(id, key, klen);
    id[klen] = 0;
    if (json_object_get(s->seen, id))
        return 0; /* taken by an earlier run: go on past it */
    int rc;
    json_t *p = codec_msgpack_to_json(val, vlen, &rc);
    if (json_is_object(p)) {
        json_object_set_new(p, "id", json_string(id));
        json_array_append_new(s->arr, p);
        json_object_set_new(s->seen, id, json_true());
    } else {
        json_decref(p);
    }
    return ++s->got >= s->want ? 1 : 0;
}

/* Runs of n/8 keys from 8 start keys spread over the characters ids are
 * made of: a spread sample at the cost of at most about 5n records (keys an
 * earlier run took are stepped over), never a full scan. */
json_t *rules_sample_profiles(struct store_txn *t, int n)
{
    json_t *arr = json_array();
    if (!arr || !t || n <= 0)
        return arr;
    static const char *const starts[8] = { "", "4", "9", "G", "O", "W", "f", "q" };
    struct sample_ctx s = { .arr = arr, .seen = json_object() };
    for (int i = 0; i < 9 && (int)json_array_size(arr) < n; i++) {
        s.got = 0;
        /* the ninth run, from the start again, fills what runs that reached
         * the end of the keys could not */
        s.want = i < 8 ? (n - (int)json_array_size(arr) + (7 - i)) / (8 - i)
                       : n - (int)json_array_size(arr);
        if (s.want > 0)
            store_scan(t, STORE_PROFILES, NULL, 0, starts[i % 8], strlen(starts[i % 8]), sample_one,
                       &s);
    }
    json_decref(s.seen);
    return arr;
}

int rules_warnings_print(const json_t *w, FILE *f)
{
    int n = 0;
    const char *k;
    json_t *arr;
    json_object_foreach((json_t *)w, k, arr) {
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            fprintf(f, "%s:%d: warning: %s\n", k, (int)json_integer_value(json_object_get(x, "line")),
                    json_string_value(json_object_get(x, "message")));
            n++;
        }
    }
    return n;
}

json_t *rules_gen_warnings(const struct rules_gen *g, const json_t *profiles, int64_t now)
{
    if (!g)
        return json_object();
    struct rules_warn_file *files = calloc((size_t)g->nfiles + 1, sizeof *files);
    if (!files)
        return NULL;
    for (int i = 0; i < g->nfiles; i++) {
        files[i].path = g->files[i].path;
        files[i].src = g->files[i].source;
        files[i].len = g->files[i].source_len;
    }
    json_t *w = rules_warnings(g->camps, g->ncamps, g->chans, g->nchans, files, g->nfiles, profiles,
                               now);
    free(files);
    return w;
}
