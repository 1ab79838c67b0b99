/*
 * campaigns.c — campaign lifecycle and approval: create, update (metadata
 * and script), delete (archive), the actions launch, pause, stop, submit,
 * approve, reject and clone, the status machine behind them, and the
 * checks on what a request may set.  The view and list are in
 * campaigns_view.c, the files under rules/ and the reloader's hooks in
 * campaigns_sync.c, versions and rollback in campaigns_versions.c.
 *
 * Every mutation holds campaigns_mu from its first read of the record to
 * the rename of the file (campaigns_sync.c says why).  Lua never runs
 * here: scripts are validated by rules_validate_campaign().
 */
#include "service/campaigns.h"
#include "engine/templates.h"
#include "engine/segments.h"
#include "service/campaigns_internal.h"
#include "base/err.h"
#include "base/id.h"
#include "base/log.h"
#include "delivery/sends.h"
#include "store/audit.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ===================================================================== */
/* errors                                                                */

/* Store failures as the campaign API has always answered them: unlike
 * reqerr_from_code, out of memory is 503 busy (retry) and a full store
 * says so in words. */
void campaigns_err_rc(struct reqerr *e, int rc, const char *what)
{
    switch (rc) {
    case ERR_FULL:
        reqerr_set(e, 507, "storage_full", NULL, "%s: the data store is full", what);
        break;
    case ERR_NOTFOUND:
        reqerr_set(e, 404, "not_found", NULL, "%s: not found", what);
        break;
    case ERR_NOMEM:
        reqerr_set(e, 503, "busy", NULL, "%s: out of memory", what);
        break;
    default:
        reqerr_set(e, 500, "internal", NULL, "%s: %s", what, err_str(rc));
        break;
    }
}

/* ===================================================================== */
/* status and allowed actions                                            */

/* Status as users see it: the record's, else the loaded file's, else the
 * campaign's file is gone (archived) or never loaded (draft). */
const char *campaigns_status(const json_t *rec, const struct rules_campaign *gc)
{
    const char *s = rec ? jstr(rec, "status") : NULL;
    if (s)
        return s;
    if (gc)
        return rules_status_name(gc->status);
    if (rec && json_is_true(json_object_get(rec, "file_missing")))
        return "archived";
    return "draft";
}

/* The newest version waiting for approval, or 0. */
long campaigns_pending_version(const json_t *rec)
{
    if (!rec || !req_approval())
        return 0;
    long head = (long)jint(rec, "version"), live = (long)jint(rec, "live_version");
    if (live <= 0 || head <= live || head == (long)jint(rec, "rejected_version"))
        return 0;
    return head;
}

enum act { A_LAUNCH, A_PAUSE, A_STOP, A_SUBMIT, A_APPROVE, A_REJECT, A_CLONE, A_DELETE, A_N };
static const char *act_names[A_N] = { "launch",  "pause",  "stop",  "submit",
                                      "approve", "reject", "clone", "delete" };

unsigned campaigns_allowed(const char *st, long pending)
{
    unsigned m = 1u << A_CLONE;
    int req = req_approval();
    if (strcmp(st, "archived"))
        m |= 1u << A_DELETE;
    if (!strcmp(st, "draft")) {
        m |= 1u << A_SUBMIT;
        if (!req)
            m |= 1u << A_LAUNCH;
    } else if (!strcmp(st, "pending_approval")) {
        m |= 1u << A_APPROVE | 1u << A_REJECT;
        if (!req)
            m |= 1u << A_LAUNCH;
    } else if (!strcmp(st, "approved")) {
        m |= 1u << A_LAUNCH;
    } else if (!strcmp(st, "active")) {
        m |= 1u << A_PAUSE | 1u << A_STOP;
    } else if (!strcmp(st, "paused")) {
        m |= 1u << A_LAUNCH | 1u << A_STOP;
    }
    if (pending && (!strcmp(st, "approved") || !strcmp(st, "active") || !strcmp(st, "paused")))
        m |= 1u << A_APPROVE | 1u << A_REJECT;
    return m;
}

json_t *campaigns_allowed_json(unsigned m)
{
    json_t *a = json_array();
    for (int i = 0; i < A_N; i++)
        if (m & (1u << i))
            json_array_append_new(a, json_string(act_names[i]));
    return a;
}

void campaigns_illegal(struct reqerr *e, const char *action, const char *st, unsigned m,
                       const char *why)
{
    char list[200] = "";
    for (int i = 0; i < A_N; i++)
        if (m & (1u << i)) {
            if (*list)
                strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, act_names[i], sizeof list - strlen(list) - 1);
        }
    reqerr_set(e, 409, "illegal_transition", "status",
               "cannot %s a campaign that is %s%s%s (allowed: %s)", action, st, why ? ": " : "",
               why ? why : "", *list ? list : "none");
    e->extra = json_pack("{s:s,s:o}", "current", st, "allowed", campaigns_allowed_json(m));
}

/* ===================================================================== */
/* input checking                                                        */

static int is_finite_nonneg(const json_t *v)
{
    return json_is_number(v) && isfinite(json_number_value(v)) && json_number_value(v) >= 0 &&
           json_number_value(v) < 1e12;
}

/* Check metadata fields of a create/update/clone body.  `allowed` lists the
 * extra members the caller accepts.  Returns 0 or fills e. */
static int check_body(const json_t *b, const char *const *allowed, struct reqerr *e)
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)b, k, v) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            ok |= !strcmp(k, allowed[i]);
        if (!ok) {
            if (!strcmp(k, "status"))
                reqerr_set(e, 400, "unknown_field", k,
                           "\"status\" cannot be set: use the actions "
                           "/launch, /pause, /stop, /submit, /approve, /reject");
            else
                reqerr_set(e, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
            return -1;
        }
        if (!strcmp(k, "name")) {
            if (!json_is_string(v) || !json_string_length(v) ||
                json_string_length(v) > CAMPAIGNS_MAX_NAME) {
                reqerr_set(e, 400, "invalid_field", k, "name must be a string of 1-%d bytes",
                           CAMPAIGNS_MAX_NAME);
                return -1;
            }
        } else if (!strcmp(k, "owner")) {
            if (!json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 128)) {
                reqerr_set(e, 400, "invalid_field", k,
                           "owner must be a string of at most 128 bytes");
                return -1;
            }
        } else if (!strcmp(k, "description")) {
            if (!json_is_null(v) &&
                (!json_is_string(v) || json_string_length(v) > CAMPAIGNS_MAX_DESCRIPTION)) {
                reqerr_set(e, 400, "invalid_field", k,
                           "description must be a string of at most %d bytes",
                           CAMPAIGNS_MAX_DESCRIPTION);
                return -1;
            }
        } else if (!strcmp(k, "tags")) {
            if (!json_is_array(v) || json_array_size(v) > CAMPAIGNS_MAX_TAGS) {
                reqerr_set(e, 400, "invalid_field", k, "tags must be a list of at most %d strings",
                           CAMPAIGNS_MAX_TAGS);
                return -1;
            }
            size_t i;
            json_t *x;
            json_array_foreach (v, i, x) {
                if (!json_is_string(x) || !json_string_length(x) ||
                    json_string_length(x) > CAMPAIGNS_MAX_TAG) {
                    reqerr_set(e, 400, "invalid_field", k,
                               "tags[%zu] must be a string of 1-%d bytes", i, CAMPAIGNS_MAX_TAG);
                    return -1;
                }
            }
        } else if (!strcmp(k, "cost")) {
            if (!json_is_object(v)) {
                reqerr_set(e, 400, "invalid_field", k,
                           "cost must be {\"per_send\": n, \"per_impression\": n}");
                return -1;
            }
            const char *ck;
            json_t *cv;
            json_object_foreach (v, ck, cv) {
                char f[64];
                snprintf(f, sizeof f, "cost.%.40s", ck);
                if (strcmp(ck, "per_send") && strcmp(ck, "per_impression")) {
                    reqerr_set(e, 400, "unknown_field", f,
                               "unknown field \"%s\" (use per_send, per_impression)", f);
                    return -1;
                }
                if (!is_finite_nonneg(cv)) {
                    reqerr_set(e, 400, "invalid_field", f, "%s must be a number >= 0", f);
                    return -1;
                }
            }
        } else if (!strcmp(k, "script")) {
            if (!json_is_string(v) || !json_string_length(v)) {
                reqerr_set(e, 400, "invalid_field", k,
                           "script must be the Lua source as a non-empty string");
                return -1;
            }
            if (json_string_length(v) > CAMPAIGNS_MAX_SCRIPT) {
                reqerr_set(e, 413, "too_large", k, "script of %zu bytes exceeds the limit of %u",
                           json_string_length(v), CAMPAIGNS_MAX_SCRIPT);
                return -1;
            }
        } else if (!strcmp(k, "id")) {
            if (!json_is_string(v) || !id_valid(json_string_value(v))) {
                reqerr_set(e, 400, "invalid_id", k,
                           "id must be 1-128 characters of A-Z a-z 0-9 _ - . : @, "
                           "not starting with '.'");
                return -1;
            }
        } else if (!strcmp(k, "rev") || !strcmp(k, "version")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1) {
                reqerr_set(e, 400, "invalid_field", k, "%s must be a positive integer", k);
                return -1;
            }
        } else if (!strcmp(k, "reason")) {
            if (!json_is_string(v) || json_string_length(v) > 1000) {
                reqerr_set(e, 400, "invalid_field", k,
                           "reason must be a string of at most 1000 bytes");
                return -1;
            }
        }
    }
    return 0;
}

/* Validate `src` as the campaign `id` stored at `abs`.  On success fills
 * *pc (caller frees with rules_campaign_free). */
int campaigns_check_script(const char *id, const char *abs, const char *src, size_t len,
                           const struct rules_gen *g, struct rules_campaign *pc,
                           struct reqerr *e)
{
    const char *names[32];
    int nn = gen_chan_names(g, names);
    char lib[4200];
    snprintf(lib, sizeof lib, "%s/lib", rules_dir());
    json_t *errors = json_array();
    int rc = rules_validate_campaign(abs, src, len, names, nn, lib, errors, pc);
    if (rc) {
        const char *first = json_string_value(json_array_get(errors, 0));
        reqerr_set(e, rc == ERR_TOOBIG ? 413 : 422, "invalid_script", "script", "%s",
                   first ? first : "the script does not validate");
        e->extra = json_pack("{s:o}", "errors", errors);
        return -1;
    }
    json_decref(errors);
    if (strcmp(pc->id, id)) {
        const char *base = strrchr(abs, '/');
        reqerr_set(e, 422, "invalid_script", "script",
                   "the script's id is \"%.128s\" (from its id field, or else its file name %s) "
                   "but the campaign is \"%s\": set id = \"%s\"",
                   pc->id, base ? base + 1 : abs, id, id);
        rules_campaign_free(pc);
        return -1;
    }
    return 0;
}

int campaigns_check_rev(const json_t *rec, long if_match, struct reqerr *e)
{
    if (if_match < 0 || if_match == (long)jint(rec, "rev"))
        return 0;
    reqerr_set(e, 409, "version_conflict", "If-Match",
               "the campaign changed since you read it: it is at rev %lld, you sent %ld; "
               "GET it again",
               (long long)jint(rec, "rev"), if_match);
    e->extra = json_pack("{s:I}", "current_rev", jint(rec, "rev"));
    return -1;
}

static void apply_meta(json_t *rec, const json_t *body)
{
    static const char *keys[] = { "name", "owner", "description", "tags", "cost", NULL };
    for (int i = 0; keys[i]; i++) {
        json_t *v = json_object_get(body, keys[i]);
        if (!v)
            continue;
        if (json_is_null(v)) {
            json_object_del(rec, keys[i]);
        } else if (!strcmp(keys[i], "cost")) {
            json_t *c = json_object_get(rec, "cost");
            json_t *nc = c ? json_deep_copy(c)
                           : json_pack("{s:f,s:f}", "per_send", 0.0, "per_impression", 0.0);
            json_object_update(nc, v);
            json_object_set_new(rec, "cost", nc);
        } else {
            json_object_set(rec, keys[i], v);
            if (i == 0) /* a name given here no longer follows the script's */
                json_object_set_new(rec, "name_set", json_true());
        }
    }
}

/* Create (API or clone).  `meta` holds checked metadata, src the script. */
static json_t *create_campaign(const char *id, const json_t *meta, const char *src, size_t len,
                               const char *actor, const char *origin, const char *cloned_from,
                               struct reqerr *e)
{
    char rel[300], abs[4200];
    snprintf(rel, sizeof rel, "%s.lua", id);
    if (rules_is_test_file(rel)) { /* x_test.lua is a test file: the loader skips it */
        reqerr_set(e, 400, "invalid_id", "id",
                   "ids ending in \"_test\" name campaign test files (docs/authoring.md)");
        return NULL;
    }
    abs_of(rel, abs, sizeof abs);
    struct rules_gen *g = rules_gen_acquire();
    struct rules_campaign pc;
    if (campaigns_check_script(id, abs, src, len, g, &pc, e)) {
        rules_gen_release(g);
        return NULL;
    }
    const char *names[32];
    int nn = gen_chan_names(g, names);
    json_t *chans = channels_json(pc.channels, names, nn);
    rules_gen_release(g);
    char h[65], at[32], obj[200];
    campaigns_sha256_hex(src, len, h);
    now_iso(at, sizeof at);
    snprintf(obj, sizeof obj, "campaign:%s", id);
    json_t *rec = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&campaigns_mu);
    g = rules_gen_acquire();
    const struct rules_campaign *other = gen_camp(g, id);
    struct stat st;
    int rc;
    if (other) {
        char orel[4096] = "?";
        campaigns_rel_of(g->files[other->file].path, orel, sizeof orel);
        reqerr_set(e, 409, "exists", "id", "campaign \"%s\" already exists (file %s)", id, orel);
        goto fail;
    }
    if (lstat(abs, &st) == 0) {
        reqerr_set(e, 409, "exists", "id", "the file %s already exists in rules/", rel);
        goto fail;
    }
    if ((rc = store_wtxn_begin(g_app->store, &t))) {
        campaigns_err_rc(e, rc, "campaign");
        goto fail;
    }
    json_t *old = rec_get(t, id, &rc);
    if (old) {
        reqerr_set(e, 409, "exists", "id", "campaign \"%s\" already exists%s", id,
                   jeq(old, "status", "archived")
                   ? " (archived: ids are not reused; clone it under a new id)"
                   : "");
        json_decref(old);
        goto fail;
    }
    int live = !req_approval();
    rec = json_object();
    json_object_set_new(rec, "id", json_string(id));
    json_object_set_new(rec, "name", json_string(pc.name ? pc.name : id));
    apply_meta(rec, meta); /* no "cost" here: the script's cost table applies */
    json_object_set_new(rec, "status", json_string("draft"));
    json_object_set_new(rec, "origin", json_string("api"));
    json_object_set_new(rec, "file", json_string(rel));
    json_object_set(rec, "channels", chans);
    json_object_set_new(rec, "rev", json_integer(1));
    json_object_set_new(rec, "version", json_integer(1));
    json_object_set_new(rec, "head_hash", json_string(h));
    json_object_set_new(rec, "live_version", json_integer(live));
    if (cloned_from)
        json_object_set_new(rec, "cloned_from", json_string(cloned_from));
    json_object_set_new(rec, "created_at", json_string(at));
    json_object_set_new(rec, "created_by", json_string(actor));
    json_object_set_new(rec, "updated_at", json_string(at));
    json_object_set_new(rec, "updated_by", json_string(actor));
    json_t *v = campaigns_new_version(1, h, actor, origin, src, len);
    if (live)
        json_object_set_new(v, "live_at", json_string(at));
    rc = ver_put(t, id, 1, v);
    json_decref(v);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *sm = campaign_summary(rec);
    if (!rc)
        rc = audit_append(t, actor, cloned_from ? "campaign.clone" : "campaign.create", obj, NULL,
                          sm);
    json_decref(sm);
    if (rc) {
        store_txn_end(t);
        campaigns_err_rc(e, rc, "campaign");
        goto fail_nt;
    }
    struct campaigns_fileop fo = { .kind = 1, .data = src, .len = len };
    snprintf(fo.abs, sizeof fo.abs, "%s", abs);
    rc = campaigns_finish(t, id, NULL, 1, &fo, actor, e);
    t = NULL;
    if (rc)
        goto fail_nt;
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(chans);
    rules_campaign_free(&pc);
    rules_reload(g_app, 0);
    return campaigns_get(id, 1, e);
fail:
    store_txn_end(t);
fail_nt:
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(chans);
    rules_campaign_free(&pc);
    return NULL;
}

static const char *const create_fields[] = { "id",          "script", "name", "owner",
                                             "description", "tags",   "cost", "template",
                                             "params",      NULL };

/* {"template": "cart_abandon", "params": {...}, "id"?, name/owner/...}: the
 * template's source with the values written in (engine/templates.h), then
 * the path every created campaign takes.  A body "id" is params.id. */
static json_t *create_from_template(const json_t *body, const char *actor, struct reqerr *e)
{
    json_t *tv = json_object_get(body, "template");
    if (!json_is_string(tv)) {
        reqerr_set(e, 400, tv ? "invalid_field" : "missing_field", "template",
                   "\"template\" names the template to instantiate (GET /api/v1/templates)");
        return NULL;
    }
    if (json_object_get(body, "script")) {
        reqerr_set(e, 400, "invalid_field", "script",
                   "give either \"script\" or \"template\" with \"params\", not both");
        return NULL;
    }
    json_t *pv = json_object_get(body, "params");
    json_t *params = json_is_object(pv) ? json_deep_copy(pv) : pv ? json_incref(pv) : json_object();
    const char *bid = jstr(body, "id");
    if (bid && json_is_object(params)) {
        json_t *pid = json_object_get(params, "id");
        if (pid && !(json_is_string(pid) && !strcmp(json_string_value(pid), bid))) {
            reqerr_set(e, 400, "invalid_id", "id", "\"id\" and params.id differ");
            json_decref(params);
            return NULL;
        }
        json_object_set_new(params, "id", json_string(bid));
    }
    char dir[4096], id[160];
    config_templates_dir(&g_app->cfg, dir, sizeof dir);
    char *src = NULL;
    size_t len = 0;
    int rc = templates_instantiate(dir, json_string_value(tv), params, &src, &len, id, sizeof id, e);
    json_decref(params);
    if (rc)
        return NULL;
    json_t *v = create_campaign(id, body, src, len, actor, "api", NULL, e);
    free(src);
    return v;
}

json_t *campaigns_create(const json_t *body, const char *actor, struct reqerr *e)
{
    if (check_body(body, create_fields, e))
        return NULL;
    if (json_object_get(body, "template") || json_object_get(body, "params"))
        return create_from_template(body, actor, e);
    const char *id = jstr(body, "id");
    if (!id) {
        reqerr_set(e, 400, "missing_field", "id",
                   "\"id\" is required (1-128 characters of A-Z a-z 0-9 _ - . : @)");
        return NULL;
    }
    json_t *s = json_object_get(body, "script");
    if (!s) {
        reqerr_set(e, 400, "missing_field", "script",
                   "\"script\" (the campaign's Lua source) is required");
        return NULL;
    }
    return create_campaign(id, body, json_string_value(s), json_string_length(s), actor, "api",
                           NULL, e);
}

/* ---------------------------------------------------------------- update */

static const char *const update_fields[] = { "id",   "script", "name", "owner", "description",
                                             "tags", "cost",   "rev",  NULL };

json_t *campaigns_update(const char *id, const json_t *body, const char *actor, long if_match,
                         struct reqerr *e)
{
    if (check_body(body, update_fields, e))
        return NULL;
    if (jstr(body, "id") && strcmp(jstr(body, "id"), id)) {
        reqerr_set(e, 400, "invalid_id", "id",
                   "the body's id \"%s\" differs from the path's \"%s\" "
                   "(ids cannot change; clone instead)",
                   jstr(body, "id"), id);
        return NULL;
    }
    if (json_object_get(body, "rev") && if_match < 0)
        if_match = (long)jint(body, "rev");
    json_t *s = json_object_get(body, "script");
    const char *src = json_string_value(s);
    size_t len = s ? json_string_length(s) : 0;
    char rel[4096], abs[4200];
    if (campaigns_script_path(id, rel, sizeof rel, e))
        return NULL;
    abs_of(rel, abs, sizeof abs);
    struct rules_campaign pc;
    memset(&pc, 0, sizeof pc);
    json_t *chans = NULL;
    if (src) {
        struct rules_gen *g = rules_gen_acquire();
        int bad = campaigns_check_script(id, abs, src, len, g, &pc, e);
        const char *names[32];
        int nn = gen_chan_names(g, names);
        if (!bad)
            chans = channels_json(pc.channels, names, nn);
        rules_gen_release(g);
        if (bad)
            return NULL;
    }
    char h[65] = "", obj[200];
    if (src)
        campaigns_sha256_hex(src, len, h);
    snprintf(obj, sizeof obj, "campaign:%s", id);
    json_t *rec = NULL, *before = NULL, *old = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&campaigns_mu);
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    if (!(rec = campaigns_begin_change(g, id, &t, e)))
        goto done;
    const char *st = campaigns_status(rec, gen_camp(g, id));
    if (!strcmp(st, "archived")) {
        campaigns_illegal(e, "update", st, campaigns_allowed(st, 0), NULL);
        goto done;
    }
    if (campaigns_check_rev(rec, if_match, e))
        goto done;
    if (src && !jeq(rec, "file", rel)) {
        reqerr_set(e, 409, "conflict", "file", "the campaign's file changed while saving; retry");
        goto done;
    }
    before = campaign_summary(rec);
    old = json_deep_copy(rec); /* for an undo */
    apply_meta(rec, body);
    int new_script = src && !jeq(rec, "head_hash", h);
    long n = 0;
    const char *state = NULL;
    if (new_script) {
        rc = campaigns_add_version(t, id, rec, src, len, h, actor, "api", 0, 0, chans, &n, &state);
        if (!json_is_true(json_object_get(rec, "name_set")) && pc.name)
            json_object_set_new(rec, "name", json_string(pc.name));
    }
    if (json_equal(old, rec) && !new_script) {
        store_txn_end(t); /* nothing changed: no rev, no audit */
        t = NULL;
        rules_gen_release(g);
        g = NULL;
        pthread_mutex_unlock(&campaigns_mu);
        json_decref(rec);
        json_decref(before);
        json_decref(old);
        json_decref(chans);
        rules_campaign_free(&pc);
        return campaigns_get(id, 1, e);
    }
    campaign_touch(rec, actor);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *after = campaign_summary(rec);
    if (new_script)
        json_object_set_new(after, "version_state", json_string(state));
    if (!rc)
        rc = audit_append(t, actor, "campaign.update", obj, before, after);
    json_decref(after);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        goto done;
    }
    struct campaigns_fileop fo = { .kind = new_script ? 1 : 0, .data = src, .len = len };
    snprintf(fo.abs, sizeof fo.abs, "%s", abs);
    rc = campaigns_finish(t, id, old, new_script ? n : 0, &fo, actor, e);
    t = NULL;
    if (rc)
        goto done;
    rules_gen_release(g);
    g = NULL;
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    rules_campaign_free(&pc);
    rules_reload(g_app, 0);
    return campaigns_get(id, 1, e);
done:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    rules_campaign_free(&pc);
    return NULL;
}

/* ---------------------------------------------------------------- delete */

/* Outbound channels (email, sms, push, webhook) send when launched: tell
 * sends.c about launch/resume/pause/stop/delete, after the status is
 * committed and the generation republished (sends_start reads it).  Returns
 * {"action", "result"} for the reply, or NULL when nothing applies. */
static json_t *sends_apply(const char *id, int a, const char *from, const char *actor,
                           const char *audience_id)
{
    int rc;
    const char *what;
    if (a == A_LAUNCH && !strcmp(from, "paused")) {
        what = "resume";
        rc = sends_resume(id, actor);
    } else if (a == A_LAUNCH) {
        what = "start";
        rc = sends_start_audience(id, actor, audience_id);
    } else if (a == A_PAUSE) {
        what = "pause";
        rc = sends_pause(id, actor);
    } else if (a == A_STOP || a == A_DELETE) {
        what = "stop";
        rc = sends_stop(id, actor);
    } else {
        return NULL;
    }
    if (rc == SENDS_NOTHING || rc == ERR_NOTFOUND)
        return NULL; /* no outbound channel, or never launched: nothing to send */
    if (rc) {
        log_warn("campaign sends did not follow the lifecycle",
                 "campaign=\"%s\" action=%s error=\"%s\"", id, what, err_str(rc));
        return json_pack("{s:s,s:b,s:s}", "action", what, "ok", 0, "error", err_str(rc));
    }
    return json_pack("{s:s,s:b}", "action", what, "ok", 1);
}

/* After a committed lifecycle change: republish the ruleset, let outbound
 * sends follow the new status, and answer with the campaign's view (plus
 * "send" when a send was started, paused or stopped). */
static json_t *publish_change(const char *id, int a, const char *from, const char *actor,
                              int with_script, const char *audience_id, struct reqerr *e)
{
    rules_reload(g_app, 0);
    json_t *sent = sends_apply(id, a, from, actor, audience_id);
    json_t *out = campaigns_get(id, with_script, e);
    if (out && sent)
        json_object_set(out, "send", sent);
    json_decref(sent);
    return out;
}

json_t *campaigns_delete(const char *id, const char *actor, long if_match, struct reqerr *e)
{
    char st_copy[32] = "";
    char obj[200];
    snprintf(obj, sizeof obj, "campaign:%s", id);
    json_t *rec = NULL, *old = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&campaigns_mu);
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    if (!(rec = campaigns_begin_change(g, id, &t, e)))
        goto fail;
    const char *st = campaigns_status(rec, gen_camp(g, id));
    if (!strcmp(st, "archived")) {
        campaigns_illegal(e, "delete", st, campaigns_allowed(st, 0), "it is already deleted");
        goto fail;
    }
    snprintf(st_copy, sizeof st_copy, "%s", st);
    if (campaigns_check_rev(rec, if_match, e))
        goto fail;
    old = json_deep_copy(rec);
    char at[32];
    now_iso(at, sizeof at);
    json_t *b = json_pack("{s:s}", "status", st);
    json_object_set_new(rec, "status", json_string("archived"));
    json_object_set_new(rec, "archived_at", json_string(at));
    json_object_set_new(rec, "archived_by", json_string(actor));
    json_object_del(rec, "file_missing");
    campaign_touch(rec, actor);
    rc = rec_put(t, id, rec);
    json_t *a = json_pack("{s:s,s:s}", "status", "archived", "file_removed", jstr(rec, "file"));
    if (!rc)
        rc = audit_append(t, actor, "campaign.delete", obj, b, a);
    json_decref(a);
    json_decref(b);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        goto fail;
    }
    struct campaigns_fileop fo = { .kind = 0 };
    const char *rel = jstr(rec, "file");
    if (rel && campaigns_rel_ok(rel)) {
        fo.kind = 2;
        abs_of(rel, fo.abs, sizeof fo.abs);
    }
    rc = campaigns_finish(t, id, old, 0, &fo, actor, e);
    t = NULL;
    if (rc)
        goto fail;
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(old);
    return publish_change(id, A_DELETE, st_copy, actor, 0, NULL, e);
fail:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(old);
    return NULL;
}

/* ------------------------------------------------------------- actions */

/* Four eyes: with require_approval the approver is neither the version's
 * author nor whoever submitted it. */
static int same_actor_refused(const json_t *rec, const json_t *ver, const char *actor,
                              struct reqerr *e)
{
    if (!req_approval())
        return 0;
    const char *author = jstr(ver, "author");
    const char *sub = jstr(rec, "submitted_by");
    if ((author && !strcmp(author, actor)) || (sub && !strcmp(sub, actor))) {
        reqerr_set(e, 403, "same_actor", "actor",
                   "%s cannot approve version %lld: it was %s by the same key (another key must "
                   "approve%s)",
                   actor, (long long)jint(ver, "version"),
                   author && !strcmp(author, actor) ? "written" : "submitted",
                   strcmp(actor, "anonymous") ? ""
                                          : "; with no API keys configured, send X-Actor: <name>");
        return -1;
    }
    return 0;
}

static json_t *clone_campaign(const char *id, const json_t *body, const char *actor,
                              struct reqerr *e);

/* 1 (with e set) when a launch names an audience that was never saved. */
static int launch_audience_missing(const char *aid, struct reqerr *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "audience");
        return 1;
    }
    struct segments_audience *a = NULL;
    rc = segments_audience_load(t, aid, &a, e);
    store_txn_end(t);
    segments_audience_free(a);
    return rc != 0;
}

json_t *campaigns_action(const char *id, const char *action, const json_t *body, const char *actor,
                         long if_match, struct reqerr *e)
{
    int a = -1;
    for (int i = 0; i < A_N; i++)
        if (!strcmp(action, act_names[i]))
            a = i;
    if (a < 0 || a == A_DELETE) {
        reqerr_set(e, 404, "not_found", NULL, "no action \"%s\"", action);
        return NULL;
    }
    static const char *const none[] = { NULL };
    static const char *const with_version[] = { "version", NULL };
    static const char *const with_reason[] = { "version", "reason", NULL };
    static const char *const clone_f[] = { "id",          "name", "script", "owner",
                                           "description", "tags", "cost",   NULL };
    static const char *const with_audience[] = { "audience_id", NULL };
    const char *const *allowed = a == A_APPROVE  ? with_version
                                 : a == A_REJECT ? with_reason
                                 : a == A_CLONE  ? clone_f
                                 : a == A_LAUNCH ? with_audience
                                                 : none;
    if (body && check_body(body, allowed, e))
        return NULL;
    /* launch {"audience_id"}: a send to a saved audience (targeting/audience) */
    const char *audience_id = a == A_LAUNCH && body ? jstr(body, "audience_id") : NULL;
    if (a == A_LAUNCH && body && json_object_get(body, "audience_id") && !audience_id) {
        reqerr_set(e, 400, "invalid_field", "audience_id", "audience_id must be a string");
        return NULL;
    }
    if (audience_id && launch_audience_missing(audience_id, e))
        return NULL;
    if (a == A_CLONE)
        return clone_campaign(id, body, actor, e);
    long want = body && json_object_get(body, "version") ? (long)jint(body, "version") : 0;
    char obj[200], at[32];
    snprintf(obj, sizeof obj, "campaign:%s", id);
    now_iso(at, sizeof at);
    json_t *rec = NULL, *before = NULL, *ver = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&campaigns_mu);
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    if (!(rec = campaigns_begin_change(g, id, &t, e)))
        goto fail;
    char st[32];
    snprintf(st, sizeof st, "%s", campaigns_status(rec, gen_camp(g, id)));
    long pend = campaigns_pending_version(rec);
    unsigned mask = campaigns_allowed(st, pend);
    if (!(mask & (1u << a))) {
        const char *why = NULL;
        if (a == A_LAUNCH && req_approval() &&
            (!strcmp(st, "draft") || !strcmp(st, "pending_approval")))
            why = "require_approval is on: submit it and have another key approve it first";
        else if ((a == A_APPROVE || a == A_REJECT) && !pend &&
                 (!strcmp(st, "active") || !strcmp(st, "paused") || !strcmp(st, "approved")))
            why = "no version is waiting for approval";
        campaigns_illegal(e, action, st, mask, why);
        goto fail;
    }
    if (campaigns_check_rev(rec, if_match, e))
        goto fail;
    before = campaign_summary(rec);
    const char *verb = action, *noun = "campaign";
    const char *newst = NULL;
    long head = (long)jint(rec, "version");
    switch (a) {
    case A_SUBMIT:
        newst = "pending_approval";
        json_object_set_new(rec, "submitted_version", json_integer(head));
        json_object_set_new(rec, "submitted_by", json_string(actor));
        break;
    case A_LAUNCH:
        if (req_approval() && jint(rec, "live_version") <= 0) {
            campaigns_illegal(e, action, st, mask & ~(1u << A_LAUNCH),
                              "no version has been approved");
            goto fail;
        }
        newst = "active";
        if (!strcmp(st, "paused"))
            verb = "resume";
        break;
    case A_PAUSE:
        newst = "paused";
        break;
    case A_STOP:
        newst = "stopped";
        break;
    case A_APPROVE:
    case A_REJECT: {
        int lifecycle = !strcmp(st, "pending_approval");
        long target = want ? want : head;
        if (lifecycle && target != head) {
            reqerr_set(e, 409, "conflict", "version",
                       "version %ld is not the one submitted (the newest is %ld)", target, head);
            goto fail;
        }
        if (target < 1 || target > head) {
            reqerr_set(e, 404, "not_found", "version", "campaign \"%s\" has no version %ld", id,
                       target);
            goto fail;
        }
        if (!lifecycle && target == jint(rec, "live_version")) {
            reqerr_set(e, 409, "conflict", "version", "version %ld is already live", target);
            goto fail;
        }
        if (!(ver = ver_get(t, id, (uint64_t)target, &rc))) {
            campaigns_err_rc(e, rc, "version");
            goto fail;
        }
        if (!lifecycle && jstr(ver, "rejected_by") && a == A_REJECT) {
            reqerr_set(e, 409, "conflict", "version", "version %ld is already rejected", target);
            goto fail;
        }
        if (a == A_APPROVE && same_actor_refused(rec, ver, actor, e))
            goto fail;
        if (a == A_APPROVE) {
            json_object_set_new(ver, "approved_by", json_string(actor));
            json_object_set_new(ver, "approved_at", json_string(at));
            json_object_del(ver, "rejected_by");
            json_object_del(ver, "rejected_at");
            if (req_approval() || lifecycle) {
                if (jint(rec, "live_version") != target)
                    json_object_set_new(ver, "live_at", json_string(at));
                json_object_set_new(rec, "live_version", json_integer(target));
            }
            if (jint(rec, "rejected_version") == target)
                json_object_del(rec, "rejected_version");
            if (lifecycle)
                newst = "approved";
        } else {
            json_object_set_new(ver, "rejected_by", json_string(actor));
            json_object_set_new(ver, "rejected_at", json_string(at));
            if (jstr(body, "reason"))
                json_object_set(ver, "reason", json_object_get(body, "reason"));
            json_object_set_new(rec, "rejected_version", json_integer(target));
            if (lifecycle)
                newst = "draft";
        }
        if (lifecycle) {
            json_object_del(rec, "submitted_version");
            json_object_del(rec, "submitted_by");
        } else {
            noun = "version";
        }
        rc = ver_put(t, id, (uint64_t)target, ver);
        break;
    }
    default:
        break;
    }
    if (newst)
        json_object_set_new(rec, "status", json_string(newst));
    campaign_touch(rec, actor);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *after = campaign_summary(rec);
    if (ver)
        json_object_set_new(after, "approved_version", json_integer(jint(ver, "version")));
    if (a == A_REJECT && jstr(body, "reason"))
        json_object_set(after, "reason", json_object_get(body, "reason"));
    char act[64];
    snprintf(act, sizeof act, "%s.%s", noun, verb);
    if (!rc)
        rc = audit_append(t, actor, act, obj, before, after);
    json_decref(after);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        goto fail;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    t = NULL;
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        goto fail;
    }
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(ver);
    return publish_change(id, a, st, actor, 1, audience_id, e);
fail:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&campaigns_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(ver);
    return NULL;
}

/* --------------------------------------------------------------- clone */

/* Replace the first `id = "old"` (or 'old') assignment with the new id.
 * NULL when the source has none. */
static char *rewrite_id(const char *src, size_t len, const char *old, const char *nid,
                        size_t *outlen)
{
    size_t ol = strlen(old), nl = strlen(nid);
    for (size_t i = 0; i + 2 < len; i++) {
        if (src[i] != 'i' || src[i + 1] != 'd')
            continue;
        if (i > 0 && (isalnum((unsigned char)src[i - 1]) || src[i - 1] == '_' || src[i - 1] == '.'))
            continue;
        size_t j = i + 2;
        while (j < len && (src[j] == ' ' || src[j] == '\t'))
            j++;
        if (j >= len || src[j] != '=' || (j + 1 < len && src[j + 1] == '='))
            continue;
        j++;
        while (j < len && (src[j] == ' ' || src[j] == '\t'))
            j++;
        if (j >= len || (src[j] != '"' && src[j] != '\''))
            continue;
        char q = src[j];
        if (j + 1 + ol < len && !memcmp(src + j + 1, old, ol) && src[j + 1 + ol] == q) {
            size_t n = len - ol + nl;
            char *out = malloc(n + 1);
            if (!out)
                return NULL;
            memcpy(out, src, j + 1);
            memcpy(out + j + 1, nid, nl);
            memcpy(out + j + 1 + nl, src + j + 1 + ol, len - (j + 1 + ol));
            out[n] = 0;
            *outlen = n;
            return out;
        }
    }
    return NULL;
}

static json_t *clone_campaign(const char *id, const json_t *body, const char *actor,
                              struct reqerr *e)
{
    const char *nid = body ? jstr(body, "id") : NULL;
    if (!nid) {
        reqerr_set(e, 400, "missing_field", "id", "clone needs {\"id\": \"new-id\"}");
        return NULL;
    }
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        campaigns_err_rc(e, rc, "campaign");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    char *src = NULL;
    size_t len = 0;
    if (rec) {
        json_t *v = ver_get(t, id, (uint64_t)jint(rec, "version"), &rc);
        json_t *s = v ? json_object_get(v, "source") : NULL;
        if (json_is_string(s)) {
            len = json_string_length(s);
            src = malloc(len + 1);
            if (src)
                memcpy(src, json_string_value(s), len + 1);
        }
        json_decref(v);
    }
    store_txn_end(t);
    struct rules_gen *g = rules_gen_acquire();
    const struct rules_campaign *gc = gen_camp(g, id);
    if (!src && gc) {
        size_t l;
        const char *d = gen_disk_text(&g->files[gc->file], &l);
        src = malloc(l + 1);
        if (src) {
            memcpy(src, d, l);
            src[l] = 0;
            len = l;
        }
    }
    const char *oname = rec && jstr(rec, "name") ? jstr(rec, "name")
                        : gc && gc->name         ? gc->name
                                                 : id;
    char name[CAMPAIGNS_MAX_NAME + 16];
    snprintf(name, sizeof name, "%.*s (copy)", CAMPAIGNS_MAX_NAME - 7, oname);
    rules_gen_release(g);
    if (!src && !json_object_get(body, "script")) {
        json_decref(rec);
        reqerr_set(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        return NULL;
    }
    json_t *meta = json_object();
    static const char *keys[] = { "owner", "description", "tags", "cost", NULL };
    for (int i = 0; rec && keys[i]; i++)
        if (json_object_get(rec, keys[i]))
            json_object_set(meta, keys[i], json_object_get(rec, keys[i]));
    json_object_set_new(meta, "name", json_string(name));
    json_object_update(meta, (json_t *)body);
    json_object_del(meta, "id");
    json_object_del(meta, "script");
    json_t *out;
    if (json_object_get(body, "script")) {
        json_t *s = json_object_get(body, "script");
        out = create_campaign(nid, meta, json_string_value(s), json_string_length(s), actor,
                              "clone", id, e);
    } else {
        size_t nl;
        char *re = rewrite_id(src, len, id, nid, &nl);
        out = create_campaign(nid, meta, re ? re : src, re ? nl : len, actor, "clone", id, e);
        free(re);
    }
    free(src);
    json_decref(meta);
    json_decref(rec);
    return out;
}

/* ---------------------------------------------------------------- cost */

int campaigns_cost(const char *id, double *per_send, double *per_impression)
{
    *per_send = *per_impression = 0;
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc)
        return rc;
    json_t *rec = rec_get(t, id, &rc);
    store_txn_end(t);
    json_t *c = rec ? json_object_get(rec, "cost") : NULL;
    if (c) {
        *per_send = json_number_value(json_object_get(c, "per_send"));
        *per_impression = json_number_value(json_object_get(c, "per_impression"));
        json_decref(rec);
        return 0;
    }
    json_decref(rec);
    struct rules_gen *g = rules_gen_acquire();
    const struct rules_campaign *gc = gen_camp(g, id);
    if (gc) {
        *per_send = gc->cost_per_send;
        *per_impression = gc->cost_per_impression;
    }
    rules_gen_release(g);
    return gc ? 0 : ERR_NOTFOUND;
}
