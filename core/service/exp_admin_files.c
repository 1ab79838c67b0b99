/*
 * exp_admin_files.c — the experiments directory: loading each file in a
 * throwaway sandbox (only changed ones), keeping records in step with the
 * files (a hand edit is a new definition, audited as actor "file"; a new
 * file a new experiment; a removed one archives its experiment),
 * publishing the live set, rendering a definition as a file, and the
 * directory watch.  See exp_admin.h.
 *
 * Why records follow files and not the other way round: the marketer's
 * git history is the files; the records add what files cannot say (the
 * lifecycle, when it ran, who changed what) and keep the definition an
 * archived experiment's results still need.
 */
#include "service/exp_admin.h"
#include "service/exp_admin_internal.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "base/file.h"
#include "base/hash.h"
#include "base/id.h"
#include "base/log.h"
#include "base/tz.h"
#include "codec/codec.h"
#include "engine/rules.h"
#include "lua/luavm.h"
#include "store/audit.h"
#include "store/record.h"
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <lua.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE_BYTES (1u << 20)
#define MAX_FILES 10000

pthread_mutex_t expa_mu = PTHREAD_MUTEX_INITIALIZER;
struct expa_state expa;

/* ---------------------------------------------------------------------- */
/* small helpers                                                          */

void expa_sha256_hex(const char *p, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL))
        mdlen = 0;
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[2 * (mdlen < 32 ? mdlen : 32)] = 0;
}

json_t *expa_rec_get(struct store_txn *t, const char *id, int *rc)
{
    return record_get(t, STORE_EXPERIMENTS, id, strlen(id), rc);
}

int expa_rec_put(struct store_txn *t, const char *id, const json_t *rec)
{
    return record_put(t, STORE_EXPERIMENTS, id, strlen(id), rec);
}

int64_t expa_rec_ts(const json_t *rec, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(rec, key));
}

json_t *expa_summary(const json_t *rec)
{
    if (!rec)
        return NULL;
    json_t *s = json_deep_copy(rec);
    json_object_del(s, "head_hash");
    return s;
}

const struct expa_file *expa_file_of(const char *id)
{
    for (int i = 0; i < expa.nfiles; i++)
        if (expa.files[i].def && !strcmp(expa.files[i].def->id, id))
            return &expa.files[i];
    return NULL;
}

struct experiments_def *expa_def_of(const json_t *rec)
{
    const char *id = json_string_value(json_object_get(rec, "id"));
    const struct expa_file *f = id ? expa_file_of(id) : NULL;
    if (f)
        return experiments_def_ref(f->def);
    struct experiments_def *d = NULL;
    struct reqerr e = { 0 };
    experiments_parse(json_object_get(rec, "definition"), &d, &e);
    reqerr_clear(&e);
    return d;
}

int expa_check_campaigns(const struct experiments_def *d, char *fieldbuf, size_t flen, char *msg,
                         size_t mlen)
{
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    for (int i = 0; i < d->ncampaigns && !rc; i++) {
        int ci = rules_gen_find_campaign(g, d->campaigns[i]);
        if (d->ncampaigns == 1)
            snprintf(fieldbuf, flen, "campaign_id");
        else
            snprintf(fieldbuf, flen, "campaigns[%d]", i);
        if (ci < 0) {
            snprintf(msg, mlen, "campaign \"%s\" is not loaded (rules/)", d->campaigns[i]);
            rc = -1;
            break;
        }
        const struct rules_campaign *c = &g->camps[ci];
        for (int v = 0; v < d->nvariants && !rc; v++) {
            int found = 0;
            for (int k = 0; k < c->nvariants; k++)
                found |= !strcmp(c->variants[k].id, d->variants[v]);
            if (!found) {
                snprintf(fieldbuf, flen, "variants[%d].id", v);
                snprintf(msg, mlen, "campaign \"%s\" has no variant \"%s\"", c->id, d->variants[v]);
                rc = -1;
            }
        }
    }
    rules_gen_release(g);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* files                                                                  */

static void abs_of(const char *rel, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", expa.dir, rel);
}

int expa_file_prepare(const char *rel, const char *data, size_t len, char *tmp, size_t tmplen)
{
    char abs[4400];
    abs_of(rel, abs, sizeof abs);
    return file_prepare(abs, data, len, tmp, tmplen);
}

int expa_file_commit(const char *tmp, const char *rel)
{
    char abs[4400];
    abs_of(rel, abs, sizeof abs);
    return file_commit(tmp, abs);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.lua names of directory `dir` (not hidden), sorted. */
static char **scan(const char *dir, int *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    int cap = 16;
    char **v = malloc(sizeof *v * (size_t)cap);
    struct dirent *e;
    while (v && (e = readdir(d)) && *n < MAX_FILES) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < 5 || strcmp(e->d_name + l - 4, ".lua"))
            continue;
        char abs[4400];
        snprintf(abs, sizeof abs, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(abs, &st) || !S_ISREG(st.st_mode))
            continue;
        if (*n == cap) {
            char **nv = realloc(v, sizeof *v * (size_t)(cap *= 2));
            if (!nv)
                break;
            v = nv;
        }
        v[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (v && *n > 1)
        qsort(v, (size_t)*n, sizeof *v, cmp_str);
    return v;
}

/* "variants[1].weight" (JSON, from 0) → "variants[2].weight" (Lua, from 1). */
static void lua_path(const char *field, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = field; *p && o + 12 < len; p++) {
        if (*p == '[' && p[1] >= '0' && p[1] <= '9') {
            char *end;
            long i = strtol(p + 1, &end, 10);
            if (*end == ']') {
                o += (size_t)snprintf(out + o, len - o, "[%ld]", i + 1);
                p = end;
                continue;
            }
        }
        out[o++] = *p;
    }
    out[o] = 0;
}

/* Load one file's text (`path` as messages show it, `rel` its name for
 * the default id): a definition, or NULL with *err ("path:line: ..."). */
static struct experiments_def *load_text(struct luavm *vm, const char *path, const char *rel,
                                         const char *src, size_t len, char **err)
{
    char msg[6000];
    *err = NULL;
    lua_State *L = luavm_state(vm);
    int top = lua_gettop(L);
    if (luavm_load_chunk(vm, path, src, len, msg, sizeof msg)) {
        *err = strdup(msg);
        return NULL;
    }
    struct experiments_def *d = NULL;
    if (!lua_istable(L, -1)) {
        snprintf(msg, sizeof msg, "%s:1: an experiment file must return a table", path);
    } else {
        int jerr;
        json_t *j = luavm_to_json(L, -1, &jerr);
        if (!j || !json_is_object(j)) {
            snprintf(msg, sizeof msg,
                     "%s:1: an experiment file returns data only (strings, numbers, booleans, "
                     "tables): %s",
                     path, j ? "not a table of named fields" : err_str(jerr));
        } else {
            if (!json_object_get(j, "id")) {
                /* default id: the file name without .lua */
                const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
                size_t bl = strlen(base);
                char stem[256];
                snprintf(stem, sizeof stem, "%.*s", (int)(bl > 4 ? bl - 4 : 0), base);
                if (id_valid(stem))
                    json_object_set_new(j, "id", json_string(stem));
            }
            struct reqerr e = { 0 };
            if (experiments_parse(j, &d, &e)) {
                /* the field as a Lua author counts: variants[1] is the first */
                char lp[200];
                lua_path(e.field, lp, sizeof lp);
                size_t fl = strlen(e.field);
                const char *rest = *e.field && !strncmp(e.message, e.field, fl) ? e.message + fl
                                                                                : NULL;
                snprintf(msg, sizeof msg, "%s:%d: %s%s", path,
                         *lp ? rules_line_of(src, len, lp) : 1, rest ? lp : "",
                         rest ? rest : e.message);
                d = NULL;
            }
            reqerr_clear(&e);
        }
        json_decref(j);
    }
    lua_settop(L, top);
    if (!d)
        *err = strdup(msg);
    return d;
}

static void files_free(struct expa_file *f, int n)
{
    for (int i = 0; i < n; i++) {
        free(f[i].rel);
        free(f[i].error);
        experiments_def_unref(f[i].def);
    }
    free(f);
}

/* Rescan: the new file cache (changed files reloaded).  Returns errors. */
static int load_dir(void)
{
    int n = 0, errs = 0;
    char **names = scan(expa.dir, &n);
    struct expa_file *nf = calloc((size_t)(n ? n : 1), sizeof *nf);
    if (!nf) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return ERR_NOMEM;
    }
    struct luavm *vm = NULL;
    for (int i = 0; i < n; i++) {
        struct expa_file *f = &nf[i];
        f->rel = names[i];
        char path[4400];
        abs_of(f->rel, path, sizeof path);
        size_t len = 0;
        char *src = file_read_all(path, MAX_FILE_BYTES, &len, NULL);
        const struct expa_file *old = NULL;
        for (int k = 0; k < expa.nfiles; k++)
            if (!strcmp(expa.files[k].rel, f->rel))
                old = &expa.files[k];
        if (!src) {
            char m[4500];
            snprintf(m, sizeof m, "%s:1: cannot read (larger than 1 MiB, or unreadable)", path);
            f->error = strdup(m);
            f->def = old ? experiments_def_ref(old->def) : NULL;
            errs++;
            continue;
        }
        f->fnv = hash_fnv1a(src, len, HASH_FNV_INIT);
        expa_sha256_hex(src, len, f->sha);
        if (old && old->fnv == f->fnv && !strcmp(old->sha, f->sha)) {
            f->def = experiments_def_ref(old->def);
            f->error = old->error ? strdup(old->error) : NULL;
        } else {
            if (!vm) {
                struct luavm_opts o = { .mem_limit = 64u << 20,
                                        .instr_budget = g_app ? g_app->cfg.instr_budget : 0,
                                        .load_time_ms = g_app ? g_app->cfg.load_time_ms : 0 };
                if (luavm_new(&o, &vm))
                    vm = NULL;
            }
            char *err = NULL;
            struct experiments_def *d = vm ? load_text(vm, path, f->rel, src, len, &err) : NULL;
            if (!vm)
                err = strdup("out of memory");
            if (d) {
                f->def = d;
            } else {
                f->error = err;
                /* the previous good version stays live */
                f->def = old ? experiments_def_ref(old->def) : NULL;
                log_warn("experiment file rejected", "file=\"%s\" error=\"%s\" kept_previous=%s",
                         f->rel, err ? err : "?", f->def ? "yes" : "no");
                err = NULL;
            }
            free(err);
        }
        free(src);
        if (f->error)
            errs++;
        /* one id, one file */
        for (int k = 0; f->def && k < i; k++)
            if (nf[k].def && !strcmp(nf[k].def->id, f->def->id)) {
                char m[4800];
                snprintf(m, sizeof m, "%s:%d: duplicate experiment id \"%s\" (also in %s)", path,
                         1, f->def->id, nf[k].rel);
                free(f->error);
                f->error = strdup(m);
                experiments_def_unref(f->def);
                f->def = NULL;
                errs++;
                break;
            }
    }
    free(names);
    luavm_free(vm);
    files_free(expa.files, expa.nfiles);
    expa.files = nf;
    expa.nfiles = n;
    return errs;
}

/* ---------------------------------------------------------------------- */
/* records follow files                                                   */

struct recs {
    json_t *list; /* array of records */
};

static int recs_cb(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    struct recs *r = ud;
    json_t *o = codec_msgpack_to_json(val, vlen, NULL);
    if (json_is_object(o))
        json_array_append_new(r->list, o);
    else
        json_decref(o);
    return 0;
}

static json_t *all_records(struct store_txn *t)
{
    struct recs r = { json_array() };
    if (store_scan(t, STORE_EXPERIMENTS, NULL, 0, NULL, 0, recs_cb, &r)) {
        json_decref(r.list);
        return NULL;
    }
    return r.list;
}

static void stamp(json_t *rec, const char *what, const char *actor)
{
    char iso[40], k[40];
    int64_t now = clock_now();
    tz_format_iso8601(now, iso, sizeof iso);
    snprintf(k, sizeof k, "%s_at", what);
    json_object_set_new(rec, k, json_string(iso));
    if (actor) {
        snprintf(k, sizeof k, "%s_by", what);
        json_object_set_new(rec, k, json_string(actor));
    }
    if (!strcmp(what, "started") || !strcmp(what, "stopped") || !strcmp(what, "concluded")) {
        snprintf(k, sizeof k, "%s_ts", what);
        json_object_set_new(rec, k, json_integer(now));
    }
}

/* A new file: a new experiment (origin "file"). */
static int record_new(struct store_txn *t, const struct expa_file *f)
{
    const struct experiments_def *d = f->def;
    uint64_t xkey;
    int rc = store_seq_next(t, "experiments", &xkey);
    if (rc)
        return rc;
    json_t *rec = json_object();
    json_object_set_new(rec, "id", json_string(d->id));
    json_object_set_new(rec, "xkey", json_integer((json_int_t)xkey));
    json_object_set_new(rec, "name", json_incref(json_object_get(d->json, "name")));
    const char *st = d->file_status == EXP_RUNNING ? "running" : "draft";
    json_object_set_new(rec, "status", json_string(st));
    json_object_set_new(rec, "definition", json_incref(d->json));
    json_object_set_new(rec, "file", json_string(f->rel));
    json_object_set_new(rec, "origin", json_string("file"));
    json_object_set_new(rec, "head_hash", json_string(f->sha));
    json_object_set_new(rec, "rev", json_integer(1));
    stamp(rec, "created", "file");
    stamp(rec, "updated", "file");
    if (d->file_status == EXP_RUNNING)
        stamp(rec, "started", NULL);
    rc = expa_rec_put(t, d->id, rec);
    char obj[160];
    snprintf(obj, sizeof obj, "experiment:%s", d->id);
    json_t *sum = expa_summary(rec);
    if (!rc)
        rc = audit_append(t, "file", "experiment.create", obj, NULL, sum);
    if (!rc && d->file_status == EXP_RUNNING)
        rc = audit_append(t, "file", "experiment.start", obj, NULL, sum);
    json_decref(sum);
    json_decref(rec);
    return rc;
}

/* A hand edit of a recorded experiment's file: the new definition. */
static int record_edit(struct store_txn *t, json_t *rec, const struct expa_file *f)
{
    json_t *before = expa_summary(rec);
    json_object_set_new(rec, "definition", json_incref(f->def->json));
    json_object_set_new(rec, "name", json_incref(json_object_get(f->def->json, "name")));
    json_object_set_new(rec, "head_hash", json_string(f->sha));
    json_object_set_new(rec, "file", json_string(f->rel));
    json_object_del(rec, "file_missing");
    json_object_set_new(rec, "rev", json_integer(json_integer_value(json_object_get(rec, "rev")) + 1));
    stamp(rec, "updated", "file");
    int rc = expa_rec_put(t, f->def->id, rec);
    char obj[160];
    snprintf(obj, sizeof obj, "experiment:%s", f->def->id);
    json_t *after = expa_summary(rec);
    if (!rc)
        rc = audit_append(t, "file", "experiment.update", obj, before, after);
    json_decref(before);
    json_decref(after);
    return rc;
}

/* A recorded experiment whose file is gone: archived. */
static int record_gone(struct store_txn *t, json_t *rec)
{
    const char *id = json_string_value(json_object_get(rec, "id"));
    json_t *before = expa_summary(rec);
    if (!strcmp(json_string_value(json_object_get(rec, "status")), "running"))
        stamp(rec, "stopped", NULL);
    json_object_set_new(rec, "status", json_string("archived"));
    json_object_set_new(rec, "file_missing", json_true());
    json_object_set_new(rec, "rev", json_integer(json_integer_value(json_object_get(rec, "rev")) + 1));
    stamp(rec, "updated", "file");
    int rc = expa_rec_put(t, id, rec);
    char obj[160];
    snprintf(obj, sizeof obj, "experiment:%s", id);
    json_t *after = expa_summary(rec);
    if (!rc)
        rc = audit_append(t, "file", "experiment.archive", obj, before, after);
    json_decref(before);
    json_decref(after);
    return rc;
}

static const struct expa_file *file_named(const char *rel)
{
    for (int i = 0; rel && i < expa.nfiles; i++)
        if (!strcmp(expa.files[i].rel, rel))
            return &expa.files[i];
    return NULL;
}

static int needs_sync(json_t *recs)
{
    for (int i = 0; i < expa.nfiles; i++) {
        const struct expa_file *f = &expa.files[i];
        if (!f->def)
            continue;
        json_t *rec = NULL;
        size_t k;
        json_t *r;
        json_array_foreach (recs, k, r)
            if (!strcmp(json_string_value(json_object_get(r, "id")), f->def->id))
                rec = r;
        if (!rec)
            return 1;
        const char *st = json_string_value(json_object_get(rec, "status"));
        if (st && !strcmp(st, "archived"))
            continue;
        if (!f->error && strcmp(json_string_value(json_object_get(rec, "head_hash")) ?: "", f->sha))
            return 1;
    }
    size_t k;
    json_t *r;
    json_array_foreach (recs, k, r) {
        const char *st = json_string_value(json_object_get(r, "status"));
        const char *id = json_string_value(json_object_get(r, "id"));
        if (st && strcmp(st, "archived") && !expa_file_of(id) &&
            !file_named(json_string_value(json_object_get(r, "file"))))
            return 1;
    }
    return 0;
}

static int sync_records(void)
{
    struct store_txn *rt;
    int rc = store_rtxn_begin(g_app->store, &rt);
    if (rc)
        return rc;
    json_t *recs = all_records(rt);
    store_txn_end(rt);
    if (!recs)
        return ERR_STORE;
    if (!needs_sync(recs)) {
        json_decref(recs);
        return 0;
    }
    json_decref(recs);
    struct store_txn *t;
    if ((rc = store_wtxn_begin(g_app->store, &t)))
        return rc;
    recs = all_records(t);
    rc = recs ? 0 : ERR_STORE;
    for (int i = 0; i < expa.nfiles && !rc; i++) {
        const struct expa_file *f = &expa.files[i];
        if (!f->def)
            continue;
        int grc;
        json_t *rec = expa_rec_get(t, f->def->id, &grc);
        if (!rec) {
            rc = grc == ERR_NOTFOUND ? record_new(t, f) : grc;
            continue;
        }
        const char *st = json_string_value(json_object_get(rec, "status"));
        if (st && !strcmp(st, "archived"))
            log_warn("experiment is archived: its file is not loaded", "file=\"%s\" id=\"%s\"",
                     f->rel, f->def->id);
        else if (!f->error &&
                 strcmp(json_string_value(json_object_get(rec, "head_hash")) ?: "", f->sha))
            rc = record_edit(t, rec, f);
        json_decref(rec);
    }
    size_t k;
    json_t *r;
    json_array_foreach (recs, k, r) {
        if (rc)
            break;
        const char *st = json_string_value(json_object_get(r, "status"));
        const char *id = json_string_value(json_object_get(r, "id"));
        if (st && strcmp(st, "archived") && !expa_file_of(id) &&
            !file_named(json_string_value(json_object_get(r, "file"))))
            rc = record_gone(t, r);
    }
    json_decref(recs);
    if (rc) {
        store_txn_end(t);
        return rc;
    }
    return store_txn_commit(t, STORE_DURABLE);
}

/* ---------------------------------------------------------------------- */
/* publishing                                                             */

static int start_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t sx = expa_rec_ts(x, "started_ts"), sy = expa_rec_ts(y, "started_ts");
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return strcmp(json_string_value(json_object_get(x, "id")),
                  json_string_value(json_object_get(y, "id")));
}

static int publish(void)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc)
        return rc;
    json_t *recs = all_records(t);
    store_txn_end(t);
    if (!recs)
        return ERR_STORE;
    size_t n = json_array_size(recs);
    json_t **order = calloc(n ? n : 1, sizeof *order);
    struct experiments_live *live = calloc(n ? n : 1, sizeof *live);
    if (!order || !live) {
        free(order);
        free(live);
        json_decref(recs);
        return ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = json_array_get(recs, i);
    qsort(order, n, sizeof *order, start_cmp); /* the earlier start keeps a contested range */
    json_decref(expa.excluded);
    expa.excluded = json_object();
    int nl = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *rec = order[i];
        const char *st = json_string_value(json_object_get(rec, "status"));
        const char *id = json_string_value(json_object_get(rec, "id"));
        int running = st && !strcmp(st, "running"), concluded = st && !strcmp(st, "concluded");
        if (!running && !concluded)
            continue;
        struct experiments_def *d = expa_def_of(rec);
        if (!d) {
            json_object_set_new(expa.excluded, id, json_string("the definition does not load"));
            continue;
        }
        int winner = concluded ? experiments_variant_index(
                                     d, json_string_value(json_object_get(rec, "winner")))
                               : -1;
        if (concluded && winner < 0) {
            json_object_set_new(expa.excluded, id, json_string("the winner is not a variant"));
            experiments_def_unref(d);
            continue;
        }
        const char *camp = NULL, *other = NULL;
        for (int k = 0; running && k < nl && !camp; k++)
            if (live[k].status == EXP_RUNNING && experiments_overlap(d, live[k].def, &camp))
                other = live[k].def->id;
        if (camp) {
            char why[400];
            snprintf(why, sizeof why, "its range overlaps running experiment \"%s\" on campaign "
                                      "\"%s\"",
                     other, camp);
            json_object_set_new(expa.excluded, id, json_string(why));
            log_warn("experiment not live", "id=\"%s\" why=\"%s\"", id, why);
            experiments_def_unref(d);
            continue;
        }
        live[nl++] = (struct experiments_live){
            d, (uint32_t)json_integer_value(json_object_get(rec, "xkey")),
            running ? EXP_RUNNING : EXP_CONCLUDED, winner,
            json_is_true(json_object_get(rec, "keep_holdout")) };
    }
    rc = experiments_publish(live, nl);
    for (int k = 0; k < nl; k++)
        experiments_def_unref(live[k].def);
    free(live);
    free(order);
    json_decref(recs);
    return rc;
}

int expa_reload_locked(void)
{
    int errs = load_dir();
    if (errs < 0)
        return errs;
    int rc = sync_records();
    if (rc)
        log_error("experiment records not synced", "err=\"%s\"", err_str(rc));
    int prc = publish();
    if (prc)
        log_error("experiments not published", "err=\"%s\"", err_str(prc));
    return rc ? rc : prc ? prc : errs;
}

int exp_admin_reload(void)
{
    pthread_mutex_lock(&expa_mu);
    int rc = expa_reload_locked();
    pthread_mutex_unlock(&expa_mu);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* rendering a definition as a file                                       */

struct out {
    char *p;
    size_t n, cap;
    int oom;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->n + n + 1 > o->cap) {
        size_t nc = (o->cap ? o->cap * 2 : 1024) + n;
        char *np = realloc(o->p, nc);
        if (!np) {
            o->oom = 1;
            return;
        }
        o->p = np;
        o->cap = nc;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = 0;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

static void put_str(struct out *o, const char *s)
{
    puts_(o, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char b[8];
        if (*p == '"' || *p == '\\') {
            b[0] = '\\';
            b[1] = (char)*p;
            put(o, b, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(b, sizeof b, "\\%03u", *p);
            puts_(o, b);
        } else {
            put(o, (const char *)p, 1);
        }
    }
    puts_(o, "\"");
}

static int lua_ident(const char *k)
{
    static const char *kw[] = { "and", "break", "do", "else", "elseif", "end", "false", "for",
                                "function", "if", "in", "local", "nil", "not", "or", "repeat",
                                "return", "then", "true", "until", "while", NULL };
    if (!*k || (*k >= '0' && *k <= '9'))
        return 0;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return 0;
    for (int i = 0; kw[i]; i++)
        if (!strcmp(k, kw[i]))
            return 0;
    return 1;
}

static void put_num(struct out *o, double x)
{
    char b[40];
    if (x == (double)(long long)x && fabs(x) < 1e15) {
        snprintf(b, sizeof b, "%lld", (long long)x);
    } else {
        for (int p = 1; p <= 17; p++) {
            snprintf(b, sizeof b, "%.*g", p, x);
            if (strtod(b, NULL) == x)
                break;
        }
    }
    puts_(o, b);
}

static void put_value(struct out *o, const json_t *v, int depth)
{
    size_t i;
    const char *k;
    json_t *x;
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_str(o, json_string_value(v));
        break;
    case JSON_INTEGER:
        put_num(o, (double)json_integer_value(v));
        break;
    case JSON_REAL:
        put_num(o, json_real_value(v));
        break;
    case JSON_TRUE:
        puts_(o, "true");
        break;
    case JSON_FALSE:
        puts_(o, "false");
        break;
    case JSON_ARRAY:
        puts_(o, "{ ");
        json_array_foreach (v, i, x) {
            if (i)
                puts_(o, ", ");
            put_value(o, x, depth + 1);
        }
        puts_(o, json_array_size(v) ? " }" : "}");
        break;
    case JSON_OBJECT: {
        int first = 1;
        puts_(o, "{ ");
        json_object_foreach ((json_t *)v, k, x) {
            if (!first)
                puts_(o, ", ");
            first = 0;
            if (lua_ident(k)) {
                puts_(o, k);
            } else {
                puts_(o, "[");
                put_str(o, k);
                puts_(o, "]");
            }
            puts_(o, " = ");
            put_value(o, x, depth + 1);
        }
        puts_(o, first ? "}" : " }");
        break;
    }
    default:
        puts_(o, "nil");
        break;
    }
}

char *expa_render(const json_t *canon, size_t *len)
{
    struct out o = { 0 };
    puts_(&o, "-- experiment written through the API (/api/v1/experiments); edits here are\n"
              "-- loaded live and recorded in the audit log (docs/experiments.md)\n"
              "return {\n");
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)canon, k, v) {
        if (json_is_array(v) && !json_array_size(v))
            continue; /* an empty table would read back as an object */
        puts_(&o, "  ");
        if (lua_ident(k)) {
            puts_(&o, k);
        } else {
            puts_(&o, "[");
            put_str(&o, k);
            puts_(&o, "]");
        }
        puts_(&o, " = ");
        put_value(&o, v, 1);
        puts_(&o, ",\n");
    }
    puts_(&o, "}\n");
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.n;
    return o.p;
}

/* ---------------------------------------------------------------------- */
/* start, watch, stop                                                     */

static int g_ifd = -1;
static struct event *g_iev, *g_debounce;

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    exp_admin_reload();
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    char buf[8192];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    struct timeval tv = { app->cfg.reload_debounce_ms / 1000,
                          (app->cfg.reload_debounce_ms % 1000) * 1000 };
    event_add(g_debounce, &tv);
}

int exp_admin_start(struct app *app)
{
    config_experiments_dir(&app->cfg, expa.dir, sizeof expa.dir);
    if (mkdir(expa.dir, 0755) && errno != EEXIST)
        log_warn("cannot create the experiments directory", "dir=\"%s\" err=\"%s\"", expa.dir,
                 strerror(errno));
    experiments_metrics_init();
    int rc = experiments_expo_start(app->store);
    if (rc)
        log_error("exposure log unavailable", "err=\"%s\"", err_str(rc));
    pthread_mutex_lock(&expa_mu);
    expa.started = 1;
    int lrc = expa_reload_locked();
    pthread_mutex_unlock(&expa_mu);
    log_info("experiments loaded", "dir=\"%s\" files=%d errors=%d", expa.dir, expa.nfiles,
             lrc > 0 ? lrc : 0);
    return rc ? rc : lrc < 0 ? lrc : 0;
}

void exp_admin_attach(struct app *app, struct event_base *base)
{
    g_ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (g_ifd < 0 || inotify_add_watch(g_ifd, expa.dir, IN_CLOSE_WRITE | IN_MOVED_TO |
                                                             IN_MOVED_FROM | IN_DELETE |
                                                             IN_CREATE | IN_ATTRIB) < 0) {
        log_warn("experiments directory not watched: POST /api/v1/experiments/reload",
                 "dir=\"%s\" err=\"%s\"", expa.dir, strerror(errno));
        if (g_ifd >= 0)
            close(g_ifd);
        g_ifd = -1;
        return;
    }
    g_iev = event_new(base, g_ifd, EV_READ | EV_PERSIST, on_inotify, app);
    g_debounce = evtimer_new(base, on_debounce, app);
    event_add(g_iev, NULL);
}

void exp_admin_stop(void)
{
    if (g_iev)
        event_free(g_iev);
    if (g_debounce)
        event_free(g_debounce);
    g_iev = g_debounce = NULL;
    if (g_ifd >= 0)
        close(g_ifd);
    g_ifd = -1;
    experiments_expo_stop();
    experiments_clear();
    pthread_mutex_lock(&expa_mu);
    files_free(expa.files, expa.nfiles);
    expa.files = NULL;
    expa.nfiles = 0;
    json_decref(expa.excluded);
    expa.excluded = NULL;
    expa.started = 0;
    pthread_mutex_unlock(&expa_mu);
}

/* ---------------------------------------------------------------------- */
/* promod check                                                           */

int exp_admin_check_cli(const struct config *cfg, const char **paths, int n)
{
    char dir[4096];
    const char *def[1] = { config_experiments_dir(cfg, dir, sizeof dir) };
    if (n == 0) {
        paths = def;
        n = 1;
    }
    struct luavm_opts o = { .mem_limit = 64u << 20, .instr_budget = cfg->instr_budget,
                            .load_time_ms = cfg->load_time_ms };
    struct luavm *vm;
    if (luavm_new(&o, &vm)) {
        fprintf(stderr, "promod check: out of memory\n");
        return 1;
    }
    int errs = 0, files = 0;
    json_t *ids = json_object();
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st)) {
            if (paths == def)
                continue; /* no experiments directory: nothing to check */
            printf("%s:1: cannot read: %s\n", paths[i], strerror(errno));
            errs++;
            continue;
        }
        char **names = NULL;
        int nn = 0;
        if (S_ISDIR(st.st_mode)) {
            names = scan(paths[i], &nn);
        } else {
            names = malloc(sizeof *names);
            if (names) {
                names[0] = NULL;
                nn = 1;
            }
        }
        for (int k = 0; k < nn; k++) {
            char path[4400];
            if (names[k])
                snprintf(path, sizeof path, "%s/%s", paths[i], names[k]);
            else
                snprintf(path, sizeof path, "%s", paths[i]);
            size_t len = 0;
            char *src = file_read_all(path, MAX_FILE_BYTES, &len, NULL), *err = NULL;
            files++;
            struct experiments_def *d =
                src ? load_text(vm, path, names[k] ? names[k] : path, src, len, &err) : NULL;
            if (!src)
                printf("%s:1: cannot read (larger than 1 MiB, or unreadable)\n", path);
            else if (!d)
                printf("%s\n", err ? err : "invalid");
            else if (json_object_get(ids, d->id)) {
                printf("%s:1: duplicate experiment id \"%s\" (also in %s)\n", path, d->id,
                       json_string_value(json_object_get(ids, d->id)));
                experiments_def_unref(d);
                d = NULL;
            } else {
                json_object_set_new(ids, d->id, json_string(path));
            }
            errs += !d;
            experiments_def_unref(d);
            free(err);
            free(src);
            free(names[k]);
        }
        free(names);
    }
    json_decref(ids);
    luavm_free(vm);
    fprintf(stderr, "promod check: %d experiment files, %d problems\n", files, errs);
    return errs ? 1 : 0;
}
