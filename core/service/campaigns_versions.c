/*
 * campaigns_versions.c — every saved script is a version (STORE_VERSIONS,
 * never deleted): adding one (live or pending approval), listing them,
 * one version with a line diff to another, and rollback (a new version
 * with an old one's source).
 */
#include "service/campaigns.h"
#include "service/campaigns_internal.h"
#include "base/buf.h"
#include "base/err.h"
#include "store/audit.h"
#include <stdlib.h>

int campaigns_version_is_live(struct store_txn *t, const char *id, const json_t *rec,
                              const char *hash)
{
    long live = (long)jint(rec, "live_version");
    if (live <= 0)
        return 0;
    int rc;
    json_t *v = ver_get(t, id, (uint64_t)live, &rc);
    int same = v && jeq(v, "hash", hash);
    json_decref(v);
    return same;
}

json_t *campaigns_new_version(long n, const char *hash, const char *author, const char *origin,
                              const char *src, size_t len)
{
    char at[32];
    now_iso(at, sizeof at);
    json_t *v = json_object();
    json_object_set_new(v, "version", json_integer(n));
    json_object_set_new(v, "hash", json_string(hash));
    json_object_set_new(v, "author", json_string(author));
    json_object_set_new(v, "at", json_string(at));
    json_object_set_new(v, "origin", json_string(origin));
    json_object_set_new(v, "size", json_integer((json_int_t)len));
    json_object_set_new(v, "source", json_stringn(src, len));
    return v;
}

/* New version n in rec from src (write txn): live or pending per config. */
int campaigns_add_version(struct store_txn *t, const char *id, json_t *rec, const char *src,
                          size_t len, const char *hash, const char *actor, const char *origin,
                          long rollback_of, int approved_before, json_t *chans, long *n_out,
                          const char **state)
{
    char at[32];
    now_iso(at, sizeof at);
    long n = (long)jint(rec, "version") + 1;
    json_t *v = campaigns_new_version(n, hash, actor, origin, src, len);
    if (rollback_of > 0)
        json_object_set_new(v, "rollback_of", json_integer(rollback_of));
    *state = "pending";
    if (!req_approval() || approved_before || campaigns_version_is_live(t, id, rec, hash)) {
        json_object_set_new(rec, "live_version", json_integer(n));
        json_object_set_new(v, "live_at", json_string(at));
        if (chans)
            json_object_set(rec, "channels", chans);
        *state = "live";
    } else if (jint(rec, "live_version") <= 0) {
        *state = "draft";
    }
    int rc = ver_put(t, id, (uint64_t)n, v);
    json_decref(v);
    json_object_set_new(rec, "version", json_integer(n));
    json_object_set_new(rec, "head_hash", json_string(hash));
    if (jeq(rec, "status", "pending_approval")) {
        json_object_set_new(rec, "status", json_string("draft"));
        json_object_del(rec, "submitted_version");
        json_object_del(rec, "submitted_by");
    }
    *n_out = n;
    return rc;
}

/* ------------------------------------------------------------ versions */

static const char *ver_state(const json_t *rec, const json_t *v)
{
    long n = (long)jint(v, "version"), live = (long)jint(rec, "live_version");
    if (n == live)
        return "live";
    if (jstr(v, "rejected_by"))
        return "rejected";
    if (req_approval() && n > live)
        return live > 0 ? "pending" : "draft";
    return "superseded";
}

json_t *campaigns_versions(const char *id, long limit, long before, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "versions");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    if (!rec) {
        store_txn_end(t);
        if (rc == ERR_NOTFOUND)
            reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        else
            campaigns_err_rc(e, rc, "versions");
        return NULL;
    }
    long head = (long)jint(rec, "version");
    long from = before > 0 && before - 1 < head ? before - 1 : head;
    json_t *list = json_array();
    long last = 0;
    for (long n = from; n >= 1 && (long)json_array_size(list) < limit; n--) {
        json_t *v = ver_get(t, id, (uint64_t)n, &rc);
        if (!v)
            continue;
        json_object_del(v, "source");
        json_object_set_new(v, "state", json_string(ver_state(rec, v)));
        json_array_append_new(list, v);
        last = n;
    }
    store_txn_end(t);
    json_t *o = json_object();
    json_object_set_new(o, "campaign_id", json_string(id));
    json_object_set_new(o, "version", json_integer(head));
    json_object_set_new(o, "live_version", json_integer(jint(rec, "live_version")));
    json_object_set_new(o, "versions", list);
    json_object_set_new(o, "next_cursor",
                        last > 1 && (long)json_array_size(list) >= limit ? json_integer(last)
                                                                         : json_null());
    json_decref(rec);
    return o;
}

/* Lines of a text as (start, length) pairs. */
struct lines {
    const char **p;
    size_t *n;
    size_t count;
};

static int split_lines(const char *s, size_t len, struct lines *l)
{
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += s[i] == '\n';
    l->p = malloc(cap * sizeof *l->p);
    l->n = malloc(cap * sizeof *l->n);
    l->count = 0;
    if (!l->p || !l->n)
        return -1;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '\n') {
            if (i > start || i < len)
                l->p[l->count] = s + start, l->n[l->count++] = i - start;
            start = i + 1;
        }
    }
    return 0;
}

#define DIFF_MAX_CELLS (4u << 20)

/* Line diff (longest common subsequence): "  same", "- old", "+ new". */
static json_t *line_diff(const char *a, size_t al, const char *b, size_t bl)
{
    struct lines x = { 0 }, y = { 0 };
    json_t *out = NULL;
    if (split_lines(a, al, &x) || split_lines(b, bl, &y))
        goto done;
    size_t n = x.count, m = y.count;
    if ((n + 1) * (m + 1) > DIFF_MAX_CELLS) {
        out = json_string("(files too large to diff here)");
        goto done;
    }
    unsigned *L = calloc((n + 1) * (m + 1), sizeof *L);
    if (!L)
        goto done;
#define AT(i, j) L[(i) * (m + 1) + (j)]
    for (size_t i = n; i-- > 0;)
        for (size_t j = m; j-- > 0;)
            AT(i, j) = x.n[i] == y.n[j] && !memcmp(x.p[i], y.p[j], x.n[i])
                           ? AT(i + 1, j + 1) + 1
                           : (AT(i + 1, j) >= AT(i, j + 1) ? AT(i + 1, j) : AT(i, j + 1));
    struct buf d = BUF_INIT;
    size_t i = 0, j = 0;
    while (i < n || j < m) {
        if (i < n && j < m && x.n[i] == y.n[j] && !memcmp(x.p[i], y.p[j], x.n[i])) {
            buf_printf(&d, "  %.*s\n", (int)x.n[i], x.p[i]);
            i++, j++;
        } else if (i < n && (j == m || AT(i + 1, j) >= AT(i, j + 1))) {
            buf_printf(&d, "- %.*s\n", (int)x.n[i], x.p[i]);
            i++;
        } else {
            buf_printf(&d, "+ %.*s\n", (int)y.n[j], y.p[j]);
            j++;
        }
    }
#undef AT
    free(L);
    out = json_stringn(d.p ? d.p : "", d.len);
    buf_free(&d);
done:
    free(x.p);
    free(x.n);
    free(y.p);
    free(y.n);
    return out ? out : json_null();
}

json_t *campaigns_version_get(const char *id, long n, long diff_to, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "version");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    json_t *v = rec ? ver_get(t, id, (uint64_t)n, &rc) : NULL;
    json_t *o = NULL;
    if (!rec) {
        reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
    } else if (!v) {
        reqerr_set(e, 404, "not_found", "version", "campaign \"%s\" has no version %ld", id, n);
    } else {
        json_object_set_new(v, "state", json_string(ver_state(rec, v)));
        if (diff_to > 0) {
            json_t *w = ver_get(t, id, (uint64_t)diff_to, &rc);
            if (!w) {
                reqerr_set(e, 404, "not_found", "diff", "campaign \"%s\" has no version %ld", id,
                           diff_to);
                json_decref(v);
                v = NULL;
            } else {
                json_t *a = json_object_get(w, "source"), *b = json_object_get(v, "source");
                json_object_set_new(v, "diff_from", json_integer(diff_to));
                json_object_set_new(v, "diff",
                                    line_diff(json_string_value(a), json_string_length(a),
                                              json_string_value(b), json_string_length(b)));
                json_decref(w);
            }
        }
        o = v;
        v = NULL;
    }
    json_decref(v);
    json_decref(rec);
    store_txn_end(t);
    return o;
}

/* ------------------------------------------------------------ rollback */

json_t *campaigns_rollback(const char *id, long n, const char *actor, long if_match,
                           struct reqerr *e)
{
    /* read and validate the old source outside the lock (versions never change) */
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    json_t *v = rec ? ver_get(t, id, (uint64_t)n, &rc) : NULL;
    store_txn_end(t);
    if (!rec || !v) {
        if (!rec)
            reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        else
            reqerr_set(e, 404, "not_found", "version", "campaign \"%s\" has no version %ld", id, n);
        json_decref(rec);
        json_decref(v);
        return NULL;
    }
    json_decref(rec);
    rec = NULL;
    const char *src = jstr(v, "source");
    size_t len = json_string_length(json_object_get(v, "source"));
    char rel[4096], abs[4200], h[65], obj[200];
    if (!src || campaigns_script_path(id, rel, sizeof rel, e)) {
        if (!src)
            reqerr_set(e, 500, "internal", "version", "version %ld has no source", n);
        json_decref(v);
        return NULL;
    }
    abs_of(rel, abs, sizeof abs);
    struct rules_gen *g = rules_gen_acquire();
    struct rules_campaign pc;
    int bad = campaigns_check_script(id, abs, src, len, g, &pc, e);
    const char *names[32];
    int nn = gen_chan_names(g, names);
    json_t *chans = bad ? NULL : channels_json(pc.channels, names, nn);
    if (!bad)
        rules_campaign_free(&pc);
    rules_gen_release(g);
    if (bad) {
        json_decref(v);
        return NULL;
    }
    campaigns_sha256_hex(src, len, h);
    snprintf(obj, sizeof obj, "campaign:%s", id);
    int approved_before = jstr(v, "approved_by") || jstr(v, "live_at");
    json_t *before = NULL, *old = NULL;
    t = NULL;
    pthread_mutex_lock(&campaigns_mu);
    g = rules_gen_acquire();
    if (!(rec = campaigns_begin_change(g, id, &t, e)))
        goto fail;
    const char *st = campaigns_status(rec, gen_camp(g, id));
    if (!strcmp(st, "archived")) {
        campaigns_illegal(e, "roll back", st, campaigns_allowed(st, 0), NULL);
        goto fail;
    }
    if (campaigns_check_rev(rec, if_match, e))
        goto fail;
    if (!jeq(rec, "file", rel)) {
        reqerr_set(e, 409, "conflict", "file", "the campaign's file changed while saving; retry");
        goto fail;
    }
    if (jeq(rec, "head_hash", h)) {
        reqerr_set(e, 409, "conflict", "version",
                   "version %ld has the same script as the newest version %lld: "
                   "nothing to roll back",
                   n, (long long)jint(rec, "version"));
        goto fail;
    }
    old = json_deep_copy(rec);
    before = campaign_summary(rec);
    long nv;
    const char *state;
    rc = campaigns_add_version(t, id, rec, src, len, h, actor, "rollback", n, approved_before,
                               chans, &nv, &state);
    campaign_touch(rec, actor);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *after = campaign_summary(rec);
    json_object_set_new(after, "rollback_of", json_integer(n));
    json_object_set_new(after, "version_state", json_string(state));
    if (!rc)
        rc = audit_append(t, actor, "campaign.rollback", obj, before, after);
    json_decref(after);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        goto fail;
    }
    struct campaigns_fileop fo = { .kind = 1, .data = src, .len = len };
    snprintf(fo.abs, sizeof fo.abs, "%s", abs);
    rc = campaigns_finish(t, id, old, nv, &fo, actor, e);
    t = NULL;
    if (rc)
        goto fail;
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    json_decref(v);
    rules_reload(g_app, 0);
    return campaigns_get(id, 1, e);
fail:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    json_decref(v);
    return NULL;
}
