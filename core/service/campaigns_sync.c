/*
 * campaigns_sync.c — the campaigns' script files under rules/ and the
 * reloader's hooks: a file saved by hand becomes a version (or a new
 * campaign, or is flagged when it disappears), the approved source is
 * served while the file holds an unapproved one, and API saves write their
 * records and their file together (campaigns_finish).
 *
 * Why one mutex (campaigns_mu) around every mutation, from the first read
 * of the record to the rename of the file: the sync hook decides "is the
 * file on disk a new version?" by comparing the file with the newest
 * recorded version.  Were an API save allowed to commit its record and
 * rename its file while the hook looked, the hook could record the old file
 * as a new version by "file".  The mutex makes (records, file) change
 * together as seen by the hook.  The reloader itself never takes the mutex:
 * it only reads the store, and records are committed before files appear.
 */
#include "service/campaigns.h"
#include "service/campaigns_internal.h"

#include "base/err.h"
#include "base/file.h"
#include "base/log.h"
#include "codec/codec.h"
#include "store/audit.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

pthread_mutex_t campaigns_mu = PTHREAD_MUTEX_INITIALIZER;

void campaigns_sha256_hex(const char *p, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL))
        mdlen = 0;
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[2 * (mdlen < 32 ? mdlen : 32)] = 0;
}

/* ===================================================================== */
/* paths and files                                                       */

/* "<rules_dir>/a/b.lua" → "a/b.lua"; 0 on success */
int campaigns_rel_of(const char *path, char *rel, size_t len)
{
    const char *rd = rules_dir();
    size_t rl = strlen(rd);
    if (strncmp(path, rd, rl) || path[rl] != '/')
        return -1;
    const char *p = path + rl;
    while (*p == '/')
        p++;
    if (snprintf(rel, len, "%s", p) >= (int)len)
        return -1;
    return 0;
}

/* a relative path we are willing to write: no "..", not absolute, .lua */
int campaigns_rel_ok(const char *rel)
{
    size_t n = rel ? strlen(rel) : 0;
    if (n < 5 || rel[0] == '/' || strcmp(rel + n - 4, ".lua"))
        return 0;
    for (const char *p = rel; *p; p++)
        if (p[0] == '.' && (p == rel || p[-1] == '/'))
            return 0; /* "..", hidden files and ./ */
    return 1;
}

/* ===================================================================== */
/* file saves → versions (the reload hook)                               */

/* Does campaign i of g need the sync to write anything? (read txn) */
static int sync_needed(struct store_txn *t, const struct rules_gen *g, int i)
{
    const struct rules_campaign *c = &g->camps[i];
    const struct rules_file *f = &g->files[c->file];
    if (!f->ok || f->kind != RULES_CAMPAIGN)
        return 0;
    int rc;
    json_t *rec = rec_get(t, c->id, &rc);
    if (!rec)
        return rc == ERR_NOTFOUND;
    int need = 0;
    if (jeq(rec, "status", "archived") && !json_is_true(json_object_get(rec, "file_missing"))) {
        need = 0;
    } else {
        size_t l;
        const char *d = gen_disk_text(f, &l);
        char h[65], rel[4096];
        campaigns_sha256_hex(d, l, h);
        need = !jeq(rec, "head_hash", h) || json_is_true(json_object_get(rec, "file_missing")) ||
               (campaigns_rel_of(f->path, rel, sizeof rel) == 0 && !jeq(rec, "file", rel));
    }
    json_decref(rec);
    return need;
}

/* Record campaign i's file as the generation saw it (write txn).  *out gets
 * the record after (new ref) when asked.  Returns 0 or a store error. */
static int sync_campaign(struct store_txn *t, const struct rules_gen *g, int i, json_t **out)
{
    const struct rules_campaign *c = &g->camps[i];
    const struct rules_file *f = &g->files[c->file];
    if (out)
        *out = NULL;
    char rel[4096];
    if (!f->ok || f->kind != RULES_CAMPAIGN || campaigns_rel_of(f->path, rel, sizeof rel))
        return 0;
    size_t glen;
    const char *gtext = gen_disk_text(f, &glen);
    char h[65];
    campaigns_sha256_hex(gtext, glen, h);
    int rc;
    json_t *rec = rec_get(t, c->id, &rc);
    if (!rec && rc != ERR_NOTFOUND)
        return rc;
    if (rec && jeq(rec, "status", "archived") &&
        !json_is_true(json_object_get(rec, "file_missing"))) {
        if (out)
            *out = rec;
        else
            json_decref(rec);
        return 0; /* deleted through the API: a file put back stays archived */
    }
    int content_new = !rec || !jeq(rec, "head_hash", h);
    if (content_new) {
        /* only what the loader validated: the file must still hold that text */
        size_t dl = 0;
        char *disk = file_read_all(f->path, CAMPAIGNS_MAX_SCRIPT, &dl, NULL);
        char dh[65] = "";
        if (disk)
            campaigns_sha256_hex(disk, dl, dh);
        free(disk);
        if (strcmp(dh, h)) {
            content_new = 0; /* changed since the build: the next reload records it */
            if (!rec)
                return 0;
        }
    }
    const char *names[32];
    int nn = gen_chan_names(g, names);
    char at[32];
    now_iso(at, sizeof at);
    char obj[200];
    snprintf(obj, sizeof obj, "campaign:%s", c->id);
    if (!rec) {
        rec = json_object();
        json_object_set_new(rec, "id", json_string(c->id));
        json_object_set_new(rec, "name", json_string(c->name ? c->name : c->id));
        json_object_set_new(rec, "origin", json_string("file"));
        json_object_set_new(rec, "file", json_string(rel));
        json_object_set_new(rec, "channels", channels_json(c->channels, names, nn));
        json_object_set_new(rec, "rev", json_integer(1));
        json_object_set_new(rec, "version", json_integer(1));
        json_object_set_new(rec, "head_hash", json_string(h));
        json_object_set_new(rec, "live_version", json_integer(1)); /* the save is the launch */
        json_object_set_new(rec, "created_at", json_string(at));
        json_object_set_new(rec, "created_by", json_string("file"));
        json_object_set_new(rec, "updated_at", json_string(at));
        json_object_set_new(rec, "updated_by", json_string("file"));
        json_t *v = campaigns_new_version(1, h, "file", "file", gtext, glen);
        json_object_set_new(v, "live_at", json_string(at));
        rc = ver_put(t, c->id, 1, v);
        json_decref(v);
        if (!rc)
            rc = rec_put(t, c->id, rec);
        json_t *sm = campaign_summary(rec);
        if (!rc)
            rc = audit_append(t, "file", "campaign.create", obj, NULL, sm);
        json_decref(sm);
    } else {
        json_t *before = campaign_summary(rec);
        if (json_is_true(json_object_get(rec, "file_missing"))) {
            json_object_del(rec, "file_missing");
            json_t *a = json_pack("{s:s}", "file", rel);
            rc = audit_append(t, "file", "campaign.file_restored", obj, NULL, a);
            json_decref(a);
        }
        json_object_set_new(rec, "file", json_string(rel));
        if (content_new) {
            long n = (long)jint(rec, "version") + 1;
            json_t *v = campaigns_new_version(n, h, "file", "file", gtext, glen);
            const char *state = "pending";
            if (!req_approval() || campaigns_version_is_live(t, c->id, rec, h)) {
                json_object_set_new(rec, "live_version", json_integer(n));
                json_object_set_new(v, "live_at", json_string(at));
                json_object_set_new(rec, "channels", channels_json(c->channels, names, nn));
                state = "live";
            } else if (jint(rec, "live_version") <= 0) {
                state = "draft";
            }
            if (!rc)
                rc = ver_put(t, c->id, (uint64_t)n, v);
            json_decref(v);
            json_object_set_new(rec, "version", json_integer(n));
            json_object_set_new(rec, "head_hash", json_string(h));
            if (!json_is_true(json_object_get(rec, "name_set")) && c->name)
                json_object_set_new(rec, "name", json_string(c->name));
            if (jeq(rec, "status", "pending_approval")) {
                json_object_set_new(rec, "status", json_string("draft"));
                json_object_del(rec, "submitted_version");
                json_object_del(rec, "submitted_by");
            }
            json_t *after = json_pack("{s:I,s:s,s:s,s:s}", "version", (json_int_t)n, "hash", h,
                                      "state", state, "file", rel);
            json_t *b = json_pack("{s:I}", "version", jint(before, "version"));
            if (!rc)
                rc = audit_append(t, "file", "version.create", obj, b, after);
            json_decref(b);
            json_decref(after);
        }
        int grc;
        json_t *was = rec_get(t, c->id, &grc);
        if (!rc && !json_equal(was, rec)) { /* nothing to write when the file caught up */
            campaign_touch(rec, "file");
            rc = rec_put(t, c->id, rec);
        }
        json_decref(was);
        json_decref(before);
    }
    if (out && !rc)
        *out = rec;
    else
        json_decref(rec);
    return rc;
}

/* A record whose file is gone (and whose campaign is not loaded from
 * another file) is flagged once; read-txn check first. */
struct missing_scan {
    const struct rules_gen *g;
    char **ids;
    int n, cap;
};

static int missing_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct missing_scan *m = ud;
    int rc;
    json_t *rec = codec_msgpack_to_json(val, vlen, &rc);
    if (!rec)
        return 0;
    char id[200];
    snprintf(id, sizeof id, "%.*s", (int)(klen < 199 ? klen : 199), (const char *)key);
    const char *rel = jstr(rec, "file");
    if (rel && campaigns_rel_ok(rel) && !jeq(rec, "status", "archived") &&
        !json_is_true(json_object_get(rec, "file_missing")) && !gen_camp(m->g, id)) {
        char abs[4200];
        abs_of(rel, abs, sizeof abs);
        struct stat st;
        if (stat(abs, &st) && errno == ENOENT && m->n < 10000) {
            if (m->n == m->cap) {
                m->cap = m->cap ? m->cap * 2 : 16;
                char **p = realloc(m->ids, (size_t)m->cap * sizeof *p);
                if (!p) {
                    json_decref(rec);
                    return 1;
                }
                m->ids = p;
            }
            m->ids[m->n++] = strdup(id);
        }
    }
    json_decref(rec);
    return 0;
}

static void reload_hook(struct app *app)
{
    if (!app->store)
        return;
    pthread_mutex_lock(&campaigns_mu);
    struct rules_gen *g = rules_gen_acquire();
    struct store_txn *t;
    if (!g || store_rtxn_begin(app->store, &t)) {
        rules_gen_release(g);
        pthread_mutex_unlock(&campaigns_mu);
        return;
    }
    char *need = calloc((size_t)g->ncamps + 1, 1);
    int any = 0;
    for (int i = 0; need && i < g->ncamps; i++)
        any |= need[i] = (char)sync_needed(t, g, i);
    struct missing_scan ms = { .g = g };
    store_scan(t, STORE_CAMPAIGNS, NULL, 0, NULL, 0, missing_cb, &ms);
    store_txn_end(t);
    if (need && (any || ms.n)) {
        int rc = store_wtxn_begin(app->store, &t);
        for (int i = 0; !rc && i < g->ncamps; i++)
            if (need[i])
                rc = sync_campaign(t, g, i, NULL);
        for (int i = 0; !rc && i < ms.n; i++) {
            json_t *rec = rec_get(t, ms.ids[i], &rc);
            if (!rec) {
                rc = rc == ERR_NOTFOUND ? 0 : rc;
                continue;
            }
            char abs[4200], obj[200];
            abs_of(jstr(rec, "file"), abs, sizeof abs);
            struct stat st;
            if (stat(abs, &st) && errno == ENOENT) {
                json_object_set_new(rec, "file_missing", json_true());
                campaign_touch(rec, "file");
                snprintf(obj, sizeof obj, "campaign:%s", ms.ids[i]);
                rc = rec_put(t, ms.ids[i], rec);
                json_t *a = json_pack("{s:s,s:s}", "file", jstr(rec, "file"), "status", "archived");
                if (!rc)
                    rc = audit_append(t, "file", "campaign.file_removed", obj, NULL, a);
                json_decref(a);
            }
            json_decref(rec);
        }
        if (rc) {
            store_txn_end(t);
            log_warn("could not record campaign file changes", "error=\"%s\"", err_str(rc));
        } else if ((rc = store_txn_commit(t, STORE_DURABLE))) {
            log_warn("could not record campaign file changes", "error=\"%s\"", err_str(rc));
        }
    }
    for (int i = 0; i < ms.n; i++)
        free(ms.ids[i]);
    free(ms.ids);
    free(need);
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
}

/* With require_approval: serve the live version while the file holds
 * another (see rules_set_source_filter). */
static char *source_filter(struct store_txn *t, const char *id, const char *path, const char *src,
                           size_t len, size_t *outlen)
{
    (void)path;
    if (!t || !g_app || !req_approval())
        return NULL;
    int rc;
    json_t *rec = rec_get(t, id, &rc);
    if (!rec)
        return NULL;
    long live = (long)jint(rec, "live_version");
    char *out = NULL;
    if (live > 0) {
        json_t *v = ver_get(t, id, (uint64_t)live, &rc);
        json_t *s = v ? json_object_get(v, "source") : NULL;
        char h[65];
        campaigns_sha256_hex(src, len, h);
        if (json_is_string(s) && !jeq(v, "hash", h)) {
            *outlen = json_string_length(s);
            out = malloc(*outlen + 1);
            if (out) {
                memcpy(out, json_string_value(s), *outlen);
                out[*outlen] = 0;
            }
        }
        json_decref(v);
    }
    json_decref(rec);
    return out;
}

int campaigns_start(struct app *app)
{
    (void)app;
    rules_set_source_filter(source_filter);
    rules_set_reload_hook(reload_hook);
    return 0;
}

/* ===================================================================== */
/* the write path                                                        */

/* Commit the txn and apply the file operation; undo the records if the
 * file cannot be put in place.  `old_rec` NULL = the record was new;
 * `new_version` > 0 = a version to remove on undo. */
int campaigns_finish(struct store_txn *t, const char *id, const json_t *old_rec, long new_version,
                     struct campaigns_fileop *fo, const char *actor, struct reqerr *e)
{
    int rc;
    if (fo->kind == 1) {
        rc = file_prepare(fo->abs, fo->data, fo->len, fo->tmp, sizeof fo->tmp);
        if (rc) {
            store_txn_end(t);
            reqerr_set(e, 500, "file_write_failed", "script",
                       "could not write %s: %s (nothing was changed)", fo->abs, err_str(rc));
            return rc;
        }
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    if (rc) {
        if (fo->kind == 1)
            unlink(fo->tmp);
        campaigns_err_rc(e, rc, "campaign");
        return rc;
    }
    if (fo->kind == 0)
        return 0;
    int frc = fo->kind == 1 ? file_commit(fo->tmp, fo->abs)
                            : (unlink(fo->abs) && errno != ENOENT ? -errno : 0);
    if (!frc)
        return 0;
    /* put the records back; the audit log keeps the change and its undo */
    if (store_wtxn_begin(g_app->store, &t) == 0) {
        char obj[200];
        snprintf(obj, sizeof obj, "campaign:%s", id);
        int urc = old_rec ? rec_put(t, id, old_rec) : store_del(t, STORE_CAMPAIGNS, id, strlen(id));
        if (!urc && new_version > 0) {
            unsigned char k[160];
            urc = store_del(t, STORE_VERSIONS, k, vkey(id, (uint64_t)new_version, k));
            urc = urc == ERR_NOTFOUND ? 0 : urc;
        }
        json_t *a = json_pack("{s:s,s:s}", "file", fo->abs, "error", err_str(frc));
        if (!urc)
            urc = audit_append(t, actor, "campaign.undo", obj, NULL, a);
        json_decref(a);
        if (urc)
            store_txn_end(t);
        else
            store_txn_commit(t, STORE_DURABLE);
    }
    reqerr_set(e, 500, "file_write_failed", "script", "could not %s %s: %s (the change was undone)",
               fo->kind == 1 ? "write" : "remove", fo->abs, err_str(frc));
    return frc;
}

/* The record of `id` for a mutation: stored, or created from the loaded
 * file.  NULL with e filled (404 when neither). */
static json_t *rec_for_update(struct store_txn *t, const struct rules_gen *g, const char *id,
                              struct reqerr *e)
{
    int rc;
    json_t *rec = rec_get(t, id, &rc);
    if (rec)
        return rec;
    if (rc != ERR_NOTFOUND) {
        campaigns_err_rc(e, rc, "campaign");
        return NULL;
    }
    rc = 0;
    int i = rules_gen_find_campaign(g, id);
    if (i >= 0 && (rc = sync_campaign(t, g, i, &rec)) == 0 && rec)
        return rec;
    if (rc)
        campaigns_err_rc(e, rc, "campaign");
    else
        reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
    return NULL;
}

/* Open the write txn for a change to campaign `id` and load its record
 * (rec_for_update).  NULL with e filled; *t is NULL when the txn could not
 * be opened, else open (the caller ends it). */
json_t *campaigns_begin_change(const struct rules_gen *g, const char *id, struct store_txn **t,
                               struct reqerr *e)
{
    int rc = store_wtxn_begin(g_app->store, t);
    if (rc) {
        *t = NULL;
        campaigns_err_rc(e, rc, "campaign");
        return NULL;
    }
    return rec_for_update(*t, g, id, e);
}

/* Where a campaign's script lives: the record's file, else the loaded file. */
int campaigns_script_path(const char *id, char *rel, size_t rlen, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        return -1;
    }
    json_t *rec = rec_get(t, id, &rc);
    store_txn_end(t);
    *rel = 0;
    if (rec && jstr(rec, "file"))
        snprintf(rel, rlen, "%s", jstr(rec, "file"));
    json_decref(rec);
    if (!*rel) {
        struct rules_gen *g = rules_gen_acquire();
        const struct rules_campaign *gc = gen_camp(g, id);
        if (gc)
            campaigns_rel_of(g->files[gc->file].path, rel, rlen);
        rules_gen_release(g);
    }
    if (!*rel) {
        reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        return -1;
    }
    if (!campaigns_rel_ok(rel)) {
        reqerr_set(e, 409, "conflict", "file",
                   "the campaign's file \"%s\" cannot be written by the API", rel);
        return -1;
    }
    return 0;
}
