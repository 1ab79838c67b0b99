/*
 * segments_api.c — segment definitions over the API: listing, one
 * segment, create/replace (validated, then written as a file and loaded,
 * as campaign scripts are), delete.
 *
 * A definition sent over the API becomes segments_dir/<id>.lua, the same
 * file a marketer could have written, so the directory stays the one
 * source of truth (in git, reviewable) and hot reload, `promod check` and
 * the file's line numbers work the same for both.  Conditions are written
 * as JSON text inside a Lua long string: null, empty lists and key order
 * survive exactly.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "engine/cond.h"
#include "store/store.h"
#include "base/app.h"
#include "base/err.h"
#include "base/file.h"
#include "base/id.h"
#include "base/log.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static segments_user_fn g_user_fn;

void segments_set_user_check(segments_user_fn fn)
{
    g_user_fn = fn;
}

/* ---- reading --------------------------------------------------------------- */

static json_t *summary(struct store_txn *t, const struct segments_gen *g, int j)
{
    const struct segment *s = &g->segs[j];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(s->id));
    json_object_set_new(o, "name", json_string(s->name ? s->name : s->id));
    if (s->description)
        json_object_set_new(o, "description", json_string(s->description));
    json_object_set_new(o, "kind", json_string(s->lua ? "lua" : "conditions"));
    json_object_set_new(o, "file", json_string(s->path));
    uint64_t n = 0;
    if (s->slot >= 0 && t && segidx_count(t, s->slot, &n))
        n = 0;
    json_object_set_new(o, "size", json_integer((json_int_t)n));
    struct segidx_slot sl;
    const char *state = "building";
    if (t && s->slot >= 0 && segidx_slot_of(t, s->id, &sl) == s->slot && !strcmp(sl.state, "ready"))
        state = "ready";
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "time_based", json_boolean(s->time_based));
    json_t *deps = json_array();
    for (int k = 0; k < s->ndeps; k++)
        json_array_append_new(deps, json_string(g->segs[s->deps[k]].id));
    json_object_set_new(o, "depends_on", deps);
    json_object_set_new(o, "loaded_at", json_integer(s->loaded_at));
    return o;
}

json_t *segments_list_json(struct store *st)
{
    struct segments_gen *g = segments_gen_acquire();
    json_t *arr = json_array(), *errs = json_array();
    struct store_txn *t = NULL;
    if (st && store_rtxn_begin(st, &t))
        t = NULL;
    for (int j = 0; g && j < g->nseg; j++)
        json_array_append_new(arr, summary(t, g, j));
    for (int i = 0; g && i < g->nfiles; i++)
        if (g->files[i].error) {
            json_t *e = json_object();
            json_object_set_new(e, "file", json_string(g->files[i].path));
            json_t *m = json_string(g->files[i].error);
            json_object_set_new(e, "error", m ? m : json_string("(not valid UTF-8)"));
            json_array_append_new(errs, e);
        }
    store_txn_end(t);
    segments_gen_release(g);
    json_t *o = json_object();
    json_object_set_new(o, "segments", arr);
    json_object_set_new(o, "errors", errs);
    return o;
}

json_t *segments_get_json(struct store *st, const char *id, struct reqerr *err)
{
    struct segments_gen *g = segments_gen_acquire();
    int j = g ? segments_find(g, id, strlen(id)) : -1;
    if (j < 0) {
        segments_gen_release(g);
        reqerr_set(err, 404, "not_found", "id", "no segment \"%s\"", id);
        return NULL;
    }
    struct store_txn *t = NULL;
    if (st && store_rtxn_begin(st, &t))
        t = NULL;
    json_t *o = summary(t, g, j);
    store_txn_end(t);
    const struct segment *s = &g->segs[j];
    if (s->conditions)
        json_object_set(o, "conditions", s->conditions);
    json_t *src = json_stringn(s->source, s->source_len);
    json_object_set_new(o, "source", src ? src : json_string("(not valid UTF-8)"));
    json_t *used = json_array();
    for (int i = 0; i < g->nseg; i++)
        for (int k = 0; k < g->segs[i].ndeps; k++)
            if (g->segs[i].deps[k] == j)
                json_array_append_new(used, json_string(g->segs[i].id));
    json_object_set_new(o, "used_by", used);
    for (int i = 0; i < g->nfiles; i++)
        if (!strcmp(g->files[i].path, s->path) && g->files[i].error)
            json_object_set_new(o, "file_error", json_string(g->files[i].error));
    segments_gen_release(g);
    return o;
}

/* ---- writing -------------------------------------------------------------------- */

/* A Lua string literal of s. */
static int lua_quote(struct buf *b, const char *s)
{
    int rc = buf_addc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
        if (*p == '"' || *p == '\\')
            rc = buf_addc(b, '\\') || buf_addc(b, (char)*p);
        else if (*p < 0x20 || *p == 0x7f)
            rc = buf_printf(b, "\\%03u", *p);
        else
            rc = buf_addc(b, (char)*p);
    }
    return rc ? rc : buf_addc(b, '"');
}

/* A long bracket level whose closing "]=*]" does not occur in text. */
static int bracket_level(const char *text)
{
    for (int lvl = 1; lvl < 32; lvl++) {
        char close[40];
        close[0] = ']';
        memset(close + 1, '=', (size_t)lvl);
        close[lvl + 1] = ']';
        close[lvl + 2] = 0;
        if (!strstr(text, close))
            return lvl;
    }
    return -1;
}

static int file_text(struct buf *b, const char *id, const char *name, const char *desc,
                     const json_t *conditions, const char *match)
{
    int rc = buf_printf(b, "-- Segment written by the API (PUT /api/v1/segments/%s).\nreturn {\n  id = ",
                        id);
    rc = rc || lua_quote(b, id) || buf_adds(b, ",\n  name = ") || lua_quote(b, name) ||
         buf_adds(b, ",\n");
    if (!rc && desc)
        rc = buf_adds(b, "  description = ") || lua_quote(b, desc) || buf_adds(b, ",\n");
    if (!rc && conditions) {
        char *j = json_dumps(conditions, JSON_COMPACT | JSON_ENCODE_ANY);
        int lvl = j ? bracket_level(j) : -1;
        if (!j || lvl < 0) {
            free(j);
            return ERR_INVAL;
        }
        char eq[40];
        memset(eq, '=', (size_t)lvl);
        eq[lvl] = 0;
        rc = buf_printf(b, "  conditions = [%s[%s]%s],\n", eq, j, eq);
        free(j);
    }
    if (!rc && match)
        rc = buf_adds(b, "  match = ") || buf_adds(b, match) || buf_adds(b, ",\n");
    return rc || buf_adds(b, "}\n") ? ERR_NOMEM : 0;
}

struct known {
    const struct segments_gen *g;
    const char *self;
};

static int known_cb(void *ud, const char *id, size_t len)
{
    const struct known *k = ud;
    if (strlen(k->self) == len && !memcmp(k->self, id, len))
        return 1;
    return segments_find(k->g, id, len) >= 0;
}

int segments_put(struct app *app, const char *id, const json_t *body, int create, json_t **out,
                 struct reqerr *err)
{
    *out = NULL;
    if (!id_valid(id))
        return reqerr_set(err, 400, "invalid_id", "id",
                          "ids are 1-128 characters of A-Z a-z 0-9 _ - . : @ and do not start with '.'");
    if (!json_is_object(body))
        return reqerr_set(err, 400, "invalid_body", NULL, "body must be a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        if (strcmp(k, "id") && strcmp(k, "name") && strcmp(k, "description") &&
            strcmp(k, "conditions") && strcmp(k, "match"))
            return reqerr_set(err, 400, "invalid_field", k,
                              "unknown field \"%s\" (a segment has id, name, description, and "
                              "conditions or match)", k);
    }
    json_t *jid = json_object_get(body, "id");
    if (jid && (!json_is_string(jid) || strcmp(json_string_value(jid), id)))
        return reqerr_set(err, 400, "invalid_field", "id", "id in the body must match the id in the path");
    json_t *jname = json_object_get(body, "name"), *jdesc = json_object_get(body, "description");
    if (jname && (!json_is_string(jname) || json_string_length(jname) > 200))
        return reqerr_set(err, 400, "invalid_field", "name", "name must be a string of at most 200 bytes");
    if (jdesc && (!json_is_string(jdesc) || json_string_length(jdesc) > 2000))
        return reqerr_set(err, 400, "invalid_field", "description",
                          "description must be a string of at most 2000 bytes");
    json_t *cond = json_object_get(body, "conditions"), *match = json_object_get(body, "match");
    if (!!cond == !!match)
        return reqerr_set(err, 400, "invalid_field", cond ? "match" : "conditions",
                          "a segment has \"conditions\" (a GrowthBook condition) or \"match\" (a Lua "
                          "predicate's source), exactly one");
    if (cond && !json_is_object(cond))
        return reqerr_set(err, 400, "invalid_condition", "$", "$: a condition is a JSON object");
    if (match && (!json_is_string(match) || !json_string_length(match) ||
                  json_string_length(match) > SEGMENTS_MAX_SOURCE / 2))
        return reqerr_set(err, 400, "invalid_field", "match",
                          "match must be the source of a Lua function: \"function(p) return ... end\"");
    pthread_mutex_lock(&segments_reload_mu);
    int rc = 0;
    struct segments_gen *cur = segments_gen_acquire(), *g = NULL;
    int j = cur ? segments_find(cur, id, strlen(id)) : -1;
    struct buf text = BUF_INIT;
    char path[4200];
    if (create && j >= 0) {
        rc = reqerr_set(err, 409, "exists", "id", "segment \"%s\" exists (PUT replaces it)", id);
        goto out;
    }
    if (cond) { /* the path inside the condition, as the API reports it */
        struct known kn = { cur, id };
        struct cond_opts o = { .mode = COND_STRICT, .segment_known = known_cb, .segment_ud = &kn };
        struct cond *c;
        if ((rc = cond_compile(cond, &o, &c, err)))
            goto out;
        cond_free(c);
    }
    if (j >= 0)
        snprintf(path, sizeof path, "%s", cur->segs[j].path);
    else
        snprintf(path, sizeof path, "%s/%s.lua", app->cfg.segments_dir, id);
    if ((rc = file_text(&text, id, jname ? json_string_value(jname) : id,
                        jdesc ? json_string_value(jdesc) : NULL, cond,
                        match ? json_string_value(match) : NULL))) {
        reqerr_from_code(err, rc, "segment");
        goto out;
    }
    const char *ferr;
    if ((rc = segments_try(app, path, text.p, &g, &ferr))) {
        reqerr_from_code(err, rc, "segment");
        goto out;
    }
    if (ferr) {
        /* "path:line: message": the message is what the API client needs */
        const char *m = ferr;
        size_t pl = strlen(path);
        if (!strncmp(m, path, pl) && m[pl] == ':') {
            m += pl + 1;
            while (*m >= '0' && *m <= '9')
                m++;
            if (m[0] == ':' && m[1] == ' ')
                m += 2;
        }
        rc = reqerr_set(err, 400, match ? "invalid_script" : "invalid_condition",
                        match ? "match" : "conditions", "%s", m);
        goto out;
    }
    int fj = segments_find(g, id, strlen(id));
    if (fj < 0) {
        rc = reqerr_set(err, 400, "invalid_segment", NULL, "the definition did not load");
        goto out;
    }
    mkdir(app->cfg.segments_dir, 0755);
    if ((rc = file_write_atomic(path, text.p, text.len))) {
        reqerr_set(err, 500, "write_failed", NULL, "cannot write %s: %s", path, err_str(rc));
        goto out;
    }
    segments_reload_locked(app, 0, NULL, NULL, NULL);
out:
    pthread_mutex_unlock(&segments_reload_mu);
    if (g)
        segments_gen_discard(g);
    segments_gen_release(cur);
    buf_free(&text);
    if (!rc && !(*out = segments_get_json(app->store, id, err)))
        rc = ERR_INVAL;
    return rc;
}

int segments_delete(struct app *app, const char *id, struct reqerr *err)
{
    pthread_mutex_lock(&segments_reload_mu);
    struct segments_gen *g = segments_gen_acquire();
    int j = g ? segments_find(g, id, strlen(id)) : -1;
    int rc = 0;
    if (j < 0) {
        rc = reqerr_set(err, 404, "not_found", "id", "no segment \"%s\"", id);
        goto out;
    }
    for (int i = 0; i < g->nseg; i++)
        for (int k = 0; k < g->segs[i].ndeps; k++)
            if (g->segs[i].deps[k] == j) {
                rc = reqerr_set(err, 409, "in_use", "id",
                                "segment \"%s\" is referenced by segment \"%s\" ($segment): change "
                                "that one first", id, g->segs[i].id);
                goto out;
            }
    char *user = g_user_fn ? g_user_fn(id) : NULL;
    if (user) {
        rc = reqerr_set(err, 409, "in_use", "id", "segment \"%s\" is used by %s", id, user);
        free(user);
        goto out;
    }
    if (unlink(g->segs[j].path) && errno != ENOENT) {
        rc = reqerr_set(err, 500, "write_failed", NULL, "cannot remove %s: %s", g->segs[j].path,
                        strerror(errno));
        goto out;
    }
    segments_reload_locked(app, 0, NULL, NULL, NULL);
out:
    segments_gen_release(g);
    pthread_mutex_unlock(&segments_reload_mu);
    return rc;
}
