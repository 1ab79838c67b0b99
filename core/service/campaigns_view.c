/*
 * campaigns_view.c — a campaign as the API shows it: its record merged
 * with what the loaded ruleset generation says (status, channels, schedule,
 * load state, allowed actions), one campaign (GET) and the filtered list.
 * Reads only: a read txn and a generation reference per call.
 */
#include "service/campaigns.h"
#include "service/campaigns_internal.h"
#include "base/err.h"
#include "codec/codec.h"
#include <stdlib.h>
#include <strings.h>

static json_t *schedule_json(const struct rules_schedule *s)
{
    static const char *days[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
    json_t *o = json_object();
    char iso[32];
    if (s->starts) {
        tz_format_iso8601(s->starts, iso, sizeof iso);
        json_object_set_new(o, "starts", json_string(iso));
    } else {
        json_object_set_new(o, "starts", json_null());
    }
    if (s->ends) {
        tz_format_iso8601(s->ends, iso, sizeof iso);
        json_object_set_new(o, "ends", json_string(iso));
    } else {
        json_object_set_new(o, "ends", json_null());
    }
    json_t *d = json_array();
    for (int i = 1; i <= 7; i++)
        if (s->days & (1u << i))
            json_array_append_new(d, json_string(days[i - 1]));
    json_object_set_new(o, "days", d);
    if (s->hour_from >= 0)
        json_object_set_new(o, "hours", json_pack("[i,i]", s->hour_from, s->hour_to));
    else
        json_object_set_new(o, "hours", json_null());
    json_object_set_new(o, "tz", json_string(s->tz));
    return o;
}

static json_t *view(struct store_txn *t, const struct rules_gen *g, const char *id,
                    const json_t *rec, int with_script)
{
    const struct rules_campaign *gc = gen_camp(g, id);
    const struct rules_file *gf = gc ? &g->files[gc->file] : NULL;
    const char *names[32];
    int nn = gen_chan_names(g, names);
    const char *st = campaigns_status(rec, gc);
    long pend = campaigns_pending_version(rec);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    const char *name = rec ? jstr(rec, "name") : NULL;
    json_object_set_new(o, "name", json_string(name ? name : gc && gc->name ? gc->name : id));
    static const char *meta[] = { "owner", "description" };
    for (int i = 0; i < 2; i++) {
        json_t *v = rec ? json_object_get(rec, meta[i]) : NULL;
        json_object_set_new(o, meta[i], v ? json_incref(v) : json_null());
    }
    json_t *tags = rec ? json_object_get(rec, "tags") : NULL;
    json_object_set_new(o, "tags", tags ? json_incref(tags) : json_array());
    json_t *cost = rec ? json_object_get(rec, "cost") : NULL;
    if (cost)
        json_object_set_new(o, "cost", json_incref(cost));
    else
        json_object_set_new(o, "cost",
                            json_pack("{s:f,s:f}", "per_send", gc ? gc->cost_per_send : 0.0,
                                      "per_impression", gc ? gc->cost_per_impression : 0.0));
    json_object_set_new(o, "status", json_string(st));
    json_object_set_new(o, "origin",
                        json_string(rec && jstr(rec, "origin") ? jstr(rec, "origin") : "file"));
    char rel[4096] = "";
    if (rec && jstr(rec, "file"))
        snprintf(rel, sizeof rel, "%s", jstr(rec, "file"));
    else if (gf)
        campaigns_rel_of(gf->path, rel, sizeof rel);
    json_object_set_new(o, "file", *rel ? json_string(rel) : json_null());
    if (gc)
        json_object_set_new(o, "channels", channels_json(gc->channels, names, nn));
    else
        json_object_set_new(o, "channels",
                            rec && json_object_get(rec, "channels")
                                ? json_incref(json_object_get(rec, "channels"))
                                : json_array());
    int64_t now = clock_now();
    int insched = gc ? rules_schedule_open(&gc->sched, now) : 0;
    json_object_set_new(o, "schedule", gc ? schedule_json(&gc->sched) : json_null());
    json_object_set_new(o, "in_schedule", json_boolean(insched));
    json_object_set_new(o, "candidate", json_boolean(gc && gc->status == CAMP_ACTIVE && insched));
    json_t *ld = json_object();
    json_object_set_new(ld, "loaded", json_boolean(gc != NULL));
    json_object_set_new(ld, "ok", json_boolean(gf && gf->ok));
    json_object_set_new(ld, "error", gf && gf->error ? json_string(gf->error) : json_null());
    json_object_set_new(ld, "held_for_approval", json_boolean(gf && gf->disk_source));
    if (rec && json_is_true(json_object_get(rec, "file_missing")))
        json_object_set_new(ld, "file_missing", json_true());
    json_object_set_new(o, "load", ld);
    json_object_set_new(o, "rev", json_integer(rec ? jint(rec, "rev") : 0));
    json_object_set_new(o, "version", json_integer(rec ? jint(rec, "version") : 0));
    json_object_set_new(o, "live_version", json_integer(rec ? jint(rec, "live_version") : 0));
    json_object_set_new(o, "pending_version", pend ? json_integer(pend) : json_null());
    json_object_set_new(o, "require_approval", json_boolean(req_approval()));
    static const char *copy[] = { "submitted_version", "submitted_by", "rejected_version",
                                  "cloned_from",       "created_at",   "created_by",
                                  "updated_at",        "updated_by",   NULL };
    for (int i = 0; copy[i]; i++) {
        json_t *v = rec ? json_object_get(rec, copy[i]) : NULL;
        if (v)
            json_object_set_new(o, copy[i], json_incref(v));
    }
    json_object_set_new(o, "allowed_actions", campaigns_allowed_json(campaigns_allowed(st, pend)));
    if (with_script) {
        json_t *src = NULL;
        if (rec && t && jint(rec, "version") > 0) {
            int rc;
            json_t *v = ver_get(t, id, (uint64_t)jint(rec, "version"), &rc);
            if (v && json_is_string(json_object_get(v, "source")))
                src = json_incref(json_object_get(v, "source"));
            json_decref(v);
        }
        if (!src && gf) {
            size_t l;
            const char *d = gen_disk_text(gf, &l);
            src = json_stringn(d, l);
        }
        json_object_set_new(o, "script", src ? src : json_null());
    }
    return o;
}

/* A fresh read txn + generation, view, release. */
json_t *campaigns_get(const char *id, int with_script, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        return NULL;
    }
    struct rules_gen *g = rules_gen_acquire();
    json_t *rec = rec_get(t, id, &rc);
    json_t *o = NULL;
    if (!rec && rc != ERR_NOTFOUND)
        campaigns_err_rc(e, rc, "campaign");
    else if (!rec && !gen_camp(g, id))
        reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
    else
        o = view(t, g, id, rec, with_script);
    json_decref(rec);
    rules_gen_release(g);
    store_txn_end(t);
    return o;
}

/* ------------------------------------------------------------------ list */

struct list_ctx {
    struct store_txn *t;
    const struct rules_gen *g;
    const struct campaigns_filter *f;
    json_t *items; /* views, in id order */
    char **seen;   /* ids with a record */
    int nseen, capseen;
};

static int ci_contains(const char *hay, const char *needle)
{
    if (!hay)
        return 0;
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, needle, n))
            return 1;
    return n == 0;
}

static int keep(const struct campaigns_filter *f, const json_t *v)
{
    const char *st = jstr(v, "status");
    if (f->status ? strcmp(f->status, "all") && strcmp(f->status, st) : !strcmp(st, "archived"))
        return 0;
    if (f->channel) {
        int on = 0;
        size_t i;
        json_t *c;
        json_array_foreach (json_object_get(v, "channels"), i, c)
            on |= !strcmp(json_string_value(c), f->channel);
        if (!on)
            return 0;
    }
    if (f->q && !ci_contains(jstr(v, "name"), f->q) && !ci_contains(jstr(v, "id"), f->q))
        return 0;
    if (f->owner && !jeq(v, "owner", f->owner))
        return 0;
    if (f->tag) {
        int has = 0;
        size_t i;
        json_t *c;
        json_array_foreach (json_object_get(v, "tags"), i, c)
            has |= !strcmp(json_string_value(c), f->tag);
        if (!has)
            return 0;
    }
    return 1;
}

static int list_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct list_ctx *c = ud;
    char id[200];
    snprintf(id, sizeof id, "%.*s", (int)(klen < 199 ? klen : 199), (const char *)key);
    int rc;
    json_t *rec = codec_msgpack_to_json(val, vlen, &rc);
    if (!rec)
        return 0;
    if (c->nseen == c->capseen) {
        c->capseen = c->capseen ? c->capseen * 2 : 64;
        char **p = realloc(c->seen, (size_t)c->capseen * sizeof *p);
        if (!p) {
            json_decref(rec);
            return ERR_NOMEM;
        }
        c->seen = p;
    }
    c->seen[c->nseen++] = strdup(id);
    json_t *v = view(c->t, c->g, id, rec, 0);
    if (keep(c->f, v))
        json_array_append(c->items, v);
    json_decref(v);
    json_decref(rec);
    return 0;
}

static int cmp_view(const void *a, const void *b)
{
    return strcmp(jstr(*(json_t *const *)a, "id"), jstr(*(json_t *const *)b, "id"));
}

json_t *campaigns_list(const struct campaigns_filter *f, struct reqerr *e)
{
    if (f->status && strcmp(f->status, "all") && rules_status_parse(f->status) < 0) {
        reqerr_set(e, 400, "invalid_query", "status",
                   "status must be one of draft, pending_approval, "
                   "approved, active, paused, stopped, archived, all");
        return NULL;
    }
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "campaigns");
        return NULL;
    }
    struct rules_gen *g = rules_gen_acquire();
    struct list_ctx c = { .t = t, .g = g, .f = f, .items = json_array() };
    rc = store_scan(t, STORE_CAMPAIGNS, NULL, 0, NULL, 0, list_cb, &c);
    /* loaded campaigns the sync has not recorded yet */
    for (int i = 0; !rc && g && i < g->ncamps; i++) {
        int seen = 0;
        for (int j = 0; j < c.nseen && !seen; j++)
            seen = !strcmp(c.seen[j], g->camps[i].id);
        if (seen)
            continue;
        json_t *v = view(t, g, g->camps[i].id, NULL, 0);
        if (keep(f, v))
            json_array_append(c.items, v);
        json_decref(v);
    }
    for (int j = 0; j < c.nseen; j++)
        free(c.seen[j]);
    free(c.seen);
    rules_gen_release(g);
    store_txn_end(t);
    if (rc) {
        json_decref(c.items);
        campaigns_err_rc(e, rc, "campaigns");
        return NULL;
    }
    size_t n = json_array_size(c.items);
    json_t **arr = malloc((n + 1) * sizeof *arr);
    if (!arr) {
        json_decref(c.items);
        campaigns_err_rc(e, ERR_NOMEM, "campaigns");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        arr[i] = json_array_get(c.items, i);
    qsort(arr, n, sizeof *arr, cmp_view);
    json_t *page = json_array();
    const char *last = NULL;
    long total = 0;
    for (size_t i = 0; i < n; i++) {
        if (f->cursor && strcmp(jstr(arr[i], "id"), f->cursor) <= 0)
            continue;
        total++;
        if ((long)json_array_size(page) < f->limit) {
            json_array_append(page, arr[i]);
            last = jstr(arr[i], "id");
        }
    }
    json_t *o = json_object();
    json_object_set_new(o, "campaigns", page);
    json_object_set_new(o, "next_cursor",
                        total > f->limit && last ? json_string(last) : json_null());
    free(arr);
    json_decref(c.items);
    return o;
}
