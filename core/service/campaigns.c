/*
 * campaigns.c — campaign records, versions, lifecycle and approval, the
 * script files under rules/, and the reloader hooks that keep file saves
 * and API saves in one history.
 *
 * Why one mutex (g_mu) around every mutation, from the first read of the
 * record to the rename of the file: the sync hook decides "is the file on
 * disk a new version?" by comparing the file with the newest recorded
 * version.  Were an API save allowed to commit its record and rename its
 * file while the hook looked, the hook could record the old file as a new
 * version by "file".  The mutex makes (records, file) change together as
 * seen by the hook.  The reloader itself never takes g_mu: it only reads
 * the store, and records are committed before files appear.
 *
 * Lua never runs here: scripts are validated by rules_validate_campaign().
 */
#include "service/campaigns.h"
#include "base/id.h"
#include "base/app.h"
#include "store/audit.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "store/record.h"
#include "base/err.h"
#include "base/log.h"
#include "engine/rules.h"
#include "delivery/sends.h"
#include "store/store.h"
#include "base/tz.h"
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic unsigned long g_tmp_counter;

/* ===================================================================== */
/* small helpers                                                         */

static void seterr(struct campaigns_err *e, int status, const char *code, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void seterr(struct campaigns_err *e, int status, const char *code, const char *field,
                   const char *fmt, ...)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static void seterr_rc(struct campaigns_err *e, int rc, const char *what)
{
    switch (rc) {
    case ERR_FULL:
        seterr(e, 507, "storage_full", NULL, "%s: the data store is full", what);
        break;
    case ERR_NOTFOUND:
        seterr(e, 404, "not_found", NULL, "%s: not found", what);
        break;
    case ERR_NOMEM:
        seterr(e, 503, "busy", NULL, "%s: out of memory", what);
        break;
    default:
        seterr(e, 500, "internal", NULL, "%s: %s", what, err_str(rc));
        break;
    }
}

static void sha256_hex(const char *p, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL))
        mdlen = 0;
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[2 * (mdlen < 32 ? mdlen : 32)] = 0;
}

static void now_iso(char *buf, size_t len) { tz_format_iso8601(clock_now(), buf, len); }

static json_int_t jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int jeq(const json_t *o, const char *k, const char *v)
{
    const char *s = jstr(o, k);
    return s && v && !strcmp(s, v);
}

static size_t vkey(const char *id, uint64_t n, unsigned char *key)
{
    size_t l = strlen(id);
    memcpy(key, id, l);
    key[l] = 0;
    store_be64(n, key + l + 1);
    return l + 9;
}

static json_t *rec_get(struct store_txn *t, const char *id, int *rc)
{
    return record_get(t, STORE_CAMPAIGNS, id, strlen(id), rc);
}

static int rec_put(struct store_txn *t, const char *id, const json_t *rec)
{
    return record_put(t, STORE_CAMPAIGNS, id, strlen(id), rec);
}

static json_t *ver_get(struct store_txn *t, const char *id, uint64_t n, int *rc)
{
    unsigned char k[160];
    return record_get(t, STORE_VERSIONS, k, vkey(id, n, k), rc);
}

static int ver_put(struct store_txn *t, const char *id, uint64_t n, const json_t *v)
{
    unsigned char k[160];
    return record_put(t, STORE_VERSIONS, k, vkey(id, n, k), v);
}

/* The record without bulky or internal members, for audit before/after. */
static json_t *summary(const json_t *rec)
{
    if (!rec)
        return NULL;
    json_t *s = json_deep_copy(rec);
    json_object_del(s, "head_hash");
    json_object_del(s, "name_set");
    return s;
}

/* ===================================================================== */
/* paths and files                                                       */

static const char *rules_dir(void) { return g_app->cfg.rules_dir; }

/* "<rules_dir>/a/b.lua" → "a/b.lua"; 0 on success */
static int rel_of(const char *path, char *rel, size_t len)
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
static int rel_ok(const char *rel)
{
    size_t n = rel ? strlen(rel) : 0;
    if (n < 5 || rel[0] == '/' || strcmp(rel + n - 4, ".lua"))
        return 0;
    for (const char *p = rel; *p; p++)
        if (p[0] == '.' && (p == rel || p[-1] == '/'))
            return 0; /* "..", hidden files and ./ */
    return 1;
}

static void abs_of(const char *rel, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", rules_dir(), rel);
}

static void fsync_dir_of(const char *path)
{
    char d[4200];
    snprintf(d, sizeof d, "%s", path);
    char *slash = strrchr(d, '/');
    if (!slash)
        return;
    *slash = 0;
    int fd = open(*d ? d : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Write `data` to a hidden temp file beside `abs` (the loader skips names
 * starting with '.') and fsync it.  @return 0 or -errno. */
static int file_prepare(const char *abs, const char *data, size_t len, char *tmp, size_t tmplen)
{
    char d[4200];
    snprintf(d, sizeof d, "%s", abs);
    char *slash = strrchr(d, '/');
    if (!slash)
        return -EINVAL;
    *slash = 0;
    snprintf(tmp, tmplen, "%s/.%s.tmp-%ld-%lu", d, slash + 1, (long)getpid(),
             (unsigned long)++g_tmp_counter);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int rc = w < 0 ? -errno : -EIO;
            close(fd);
            unlink(tmp);
            return rc;
        }
        off += (size_t)w;
    }
    if (fsync(fd)) {
        int rc = -errno;
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (close(fd)) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    return 0;
}

static int file_commit(const char *tmp, const char *abs)
{
    if (rename(tmp, abs)) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    fsync_dir_of(abs);
    return 0;
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || st.st_size > (off_t)CAMPAIGNS_MAX_SCRIPT) {
        fclose(f);
        return NULL;
    }
    char *b = malloc((size_t)st.st_size + 1);
    if (!b) {
        fclose(f);
        return NULL;
    }
    size_t n = fread(b, 1, (size_t)st.st_size, f);
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

/* ===================================================================== */
/* the generation                                                        */

static const struct rules_campaign *gen_camp(const struct rules_gen *g, const char *id)
{
    int i = rules_gen_find_campaign(g, id);
    return i >= 0 ? &g->camps[i] : NULL;
}

static int gen_chan_names(const struct rules_gen *g, const char **names)
{
    int n = 0;
    for (int i = 0; g && i < g->nchans && i < 32; i++)
        names[n++] = g->chans[i].name;
    return n;
}

static json_t *channels_json(unsigned bits, const char *const *names, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n && i < 32; i++)
        if (bits & (1u << i))
            json_array_append_new(a, json_string(names[i]));
    return a;
}

/* the text of a loaded file as it is on disk (not the approved stand-in) */
static const char *gen_disk_text(const struct rules_file *f, size_t *len)
{
    if (f->disk_source) {
        *len = f->disk_source_len;
        return f->disk_source;
    }
    *len = f->source_len;
    return f->source;
}


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

/* ===================================================================== */
/* status and allowed actions                                            */

static int req_approval(void) { return g_app->cfg.require_approval; }

/* Status as users see it: the record's, else the loaded file's, else the
 * campaign's file is gone (archived) or never loaded (draft). */
static const char *eff_status(const json_t *rec, const struct rules_campaign *gc)
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
static long pending_version(const json_t *rec)
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

static unsigned allowed_mask(const char *st, long pending)
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

static json_t *allowed_json(unsigned m)
{
    json_t *a = json_array();
    for (int i = 0; i < A_N; i++)
        if (m & (1u << i))
            json_array_append_new(a, json_string(act_names[i]));
    return a;
}

static void illegal(struct campaigns_err *e, const char *action, const char *st, unsigned m,
                    const char *why)
{
    char list[200] = "";
    for (int i = 0; i < A_N; i++)
        if (m & (1u << i)) {
            if (*list)
                strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, act_names[i], sizeof list - strlen(list) - 1);
        }
    seterr(e, 409, "illegal_transition", "status",
           "cannot %s a campaign that is %s%s%s (allowed: %s)", action, st, why ? ": " : "",
           why ? why : "", *list ? list : "none");
    json_decref(e->extra);
    e->extra = json_pack("{s:s,s:o}", "current", st, "allowed", allowed_json(m));
}

/* ===================================================================== */
/* the view                                                              */

static json_t *view(struct store_txn *t, const struct rules_gen *g, const char *id,
                    const json_t *rec, int with_script)
{
    const struct rules_campaign *gc = gen_camp(g, id);
    const struct rules_file *gf = gc ? &g->files[gc->file] : NULL;
    const char *names[32];
    int nn = gen_chan_names(g, names);
    const char *st = eff_status(rec, gc);
    long pend = pending_version(rec);
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
        rel_of(gf->path, rel, sizeof rel);
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
    json_object_set_new(o, "allowed_actions", allowed_json(allowed_mask(st, pend)));
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
static json_t *view_now(const char *id, int with_script, struct campaigns_err *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "campaign");
        return NULL;
    }
    struct rules_gen *g = rules_gen_acquire();
    json_t *rec = rec_get(t, id, &rc);
    json_t *o = NULL;
    if (!rec && rc != ERR_NOTFOUND)
        seterr_rc(e, rc, "campaign");
    else if (!rec && !gen_camp(g, id))
        seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
    else
        o = view(t, g, id, rec, with_script);
    json_decref(rec);
    rules_gen_release(g);
    store_txn_end(t);
    return o;
}

/* ===================================================================== */
/* file saves → versions (the reload hook)                               */

static int version_is_live_hash(struct store_txn *t, const char *id, const json_t *rec,
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

static json_t *new_version(long n, const char *hash, const char *author, const char *origin,
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

static void touch(json_t *rec, const char *actor)
{
    char at[32];
    now_iso(at, sizeof at);
    json_object_set_new(rec, "rev", json_integer(jint(rec, "rev") + 1));
    json_object_set_new(rec, "updated_at", json_string(at));
    json_object_set_new(rec, "updated_by", json_string(actor));
}

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
        sha256_hex(d, l, h);
        need = !jeq(rec, "head_hash", h) || json_is_true(json_object_get(rec, "file_missing")) ||
               (rel_of(f->path, rel, sizeof rel) == 0 && !jeq(rec, "file", rel));
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
    if (!f->ok || f->kind != RULES_CAMPAIGN || rel_of(f->path, rel, sizeof rel))
        return 0;
    size_t glen;
    const char *gtext = gen_disk_text(f, &glen);
    char h[65];
    sha256_hex(gtext, glen, h);
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
        char *disk = read_whole(f->path, &dl);
        char dh[65] = "";
        if (disk)
            sha256_hex(disk, dl, dh);
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
        json_t *v = new_version(1, h, "file", "file", gtext, glen);
        json_object_set_new(v, "live_at", json_string(at));
        rc = ver_put(t, c->id, 1, v);
        json_decref(v);
        if (!rc)
            rc = rec_put(t, c->id, rec);
        json_t *sm = summary(rec);
        if (!rc)
            rc = audit_append(t, "file", "campaign.create", obj, NULL, sm);
        json_decref(sm);
    } else {
        json_t *before = summary(rec);
        if (json_is_true(json_object_get(rec, "file_missing"))) {
            json_object_del(rec, "file_missing");
            json_t *a = json_pack("{s:s}", "file", rel);
            rc = audit_append(t, "file", "campaign.file_restored", obj, NULL, a);
            json_decref(a);
        }
        json_object_set_new(rec, "file", json_string(rel));
        if (content_new) {
            long n = (long)jint(rec, "version") + 1;
            json_t *v = new_version(n, h, "file", "file", gtext, glen);
            const char *state = "pending";
            if (!req_approval() || version_is_live_hash(t, c->id, rec, h)) {
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
            touch(rec, "file");
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
    if (rel && rel_ok(rel) && !jeq(rec, "status", "archived") &&
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
    pthread_mutex_lock(&g_mu);
    struct rules_gen *g = rules_gen_acquire();
    struct store_txn *t;
    if (!g || store_rtxn_begin(app->store, &t)) {
        rules_gen_release(g);
        pthread_mutex_unlock(&g_mu);
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
                touch(rec, "file");
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
    pthread_mutex_unlock(&g_mu);
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
        sha256_hex(src, len, h);
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
/* input checking                                                        */

static int is_finite_nonneg(const json_t *v)
{
    return json_is_number(v) && isfinite(json_number_value(v)) && json_number_value(v) >= 0 &&
           json_number_value(v) < 1e12;
}

/* Check metadata fields of a create/update/clone body.  `allowed` lists the
 * extra members the caller accepts.  Returns 0 or fills e. */
static int check_body(const json_t *b, const char *const *allowed, struct campaigns_err *e)
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)b, k, v) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            ok |= !strcmp(k, allowed[i]);
        if (!ok) {
            if (!strcmp(k, "status"))
                seterr(e, 400, "unknown_field", k,
                       "\"status\" cannot be set: use the actions "
                       "/launch, /pause, /stop, /submit, /approve, /reject");
            else
                seterr(e, 400, "unknown_field", k, "unknown field \"%.64s\"", k);
            return -1;
        }
        if (!strcmp(k, "name")) {
            if (!json_is_string(v) || !json_string_length(v) ||
                json_string_length(v) > CAMPAIGNS_MAX_NAME) {
                seterr(e, 400, "invalid_field", k, "name must be a string of 1-%d bytes",
                       CAMPAIGNS_MAX_NAME);
                return -1;
            }
        } else if (!strcmp(k, "owner")) {
            if (!json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 128)) {
                seterr(e, 400, "invalid_field", k, "owner must be a string of at most 128 bytes");
                return -1;
            }
        } else if (!strcmp(k, "description")) {
            if (!json_is_null(v) &&
                (!json_is_string(v) || json_string_length(v) > CAMPAIGNS_MAX_DESCRIPTION)) {
                seterr(e, 400, "invalid_field", k,
                       "description must be a string of at most %d bytes",
                       CAMPAIGNS_MAX_DESCRIPTION);
                return -1;
            }
        } else if (!strcmp(k, "tags")) {
            if (!json_is_array(v) || json_array_size(v) > CAMPAIGNS_MAX_TAGS) {
                seterr(e, 400, "invalid_field", k, "tags must be a list of at most %d strings",
                       CAMPAIGNS_MAX_TAGS);
                return -1;
            }
            size_t i;
            json_t *x;
            json_array_foreach (v, i, x) {
                if (!json_is_string(x) || !json_string_length(x) ||
                    json_string_length(x) > CAMPAIGNS_MAX_TAG) {
                    seterr(e, 400, "invalid_field", k, "tags[%zu] must be a string of 1-%d bytes",
                           i, CAMPAIGNS_MAX_TAG);
                    return -1;
                }
            }
        } else if (!strcmp(k, "cost")) {
            if (!json_is_object(v)) {
                seterr(e, 400, "invalid_field", k,
                       "cost must be {\"per_send\": n, \"per_impression\": n}");
                return -1;
            }
            const char *ck;
            json_t *cv;
            json_object_foreach (v, ck, cv) {
                char f[64];
                snprintf(f, sizeof f, "cost.%.40s", ck);
                if (strcmp(ck, "per_send") && strcmp(ck, "per_impression")) {
                    seterr(e, 400, "unknown_field", f,
                           "unknown field \"%s\" (use per_send, per_impression)", f);
                    return -1;
                }
                if (!is_finite_nonneg(cv)) {
                    seterr(e, 400, "invalid_field", f, "%s must be a number >= 0", f);
                    return -1;
                }
            }
        } else if (!strcmp(k, "script")) {
            if (!json_is_string(v) || !json_string_length(v)) {
                seterr(e, 400, "invalid_field", k,
                       "script must be the Lua source as a non-empty string");
                return -1;
            }
            if (json_string_length(v) > CAMPAIGNS_MAX_SCRIPT) {
                seterr(e, 413, "too_large", k, "script of %zu bytes exceeds the limit of %u",
                       json_string_length(v), CAMPAIGNS_MAX_SCRIPT);
                return -1;
            }
        } else if (!strcmp(k, "id")) {
            if (!json_is_string(v) || !id_valid(json_string_value(v))) {
                seterr(e, 400, "invalid_id", k,
                       "id must be 1-128 characters of A-Z a-z 0-9 _ - . : @, "
                       "not starting with '.'");
                return -1;
            }
        } else if (!strcmp(k, "rev") || !strcmp(k, "version")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1) {
                seterr(e, 400, "invalid_field", k, "%s must be a positive integer", k);
                return -1;
            }
        } else if (!strcmp(k, "reason")) {
            if (!json_is_string(v) || json_string_length(v) > 1000) {
                seterr(e, 400, "invalid_field", k, "reason must be a string of at most 1000 bytes");
                return -1;
            }
        }
    }
    return 0;
}

/* Validate `src` as the campaign `id` stored at `abs`.  On success fills
 * *pc (caller frees with rules_campaign_free). */
static int check_script(const char *id, const char *abs, const char *src, size_t len,
                        const struct rules_gen *g, struct rules_campaign *pc,
                        struct campaigns_err *e)
{
    const char *names[32];
    int nn = gen_chan_names(g, names);
    char lib[4200];
    snprintf(lib, sizeof lib, "%s/lib", rules_dir());
    json_t *errors = json_array();
    int rc = rules_validate_campaign(abs, src, len, names, nn, lib, errors, pc);
    if (rc) {
        const char *first = json_string_value(json_array_get(errors, 0));
        seterr(e, rc == ERR_TOOBIG ? 413 : 422, "invalid_script", "script", "%s",
               first ? first : "the script does not validate");
        json_decref(e->extra);
        e->extra = json_pack("{s:o}", "errors", errors);
        return -1;
    }
    json_decref(errors);
    if (strcmp(pc->id, id)) {
        const char *base = strrchr(abs, '/');
        seterr(e, 422, "invalid_script", "script",
               "the script's id is \"%.128s\" (from its id field, or else its file name %s) but "
               "the campaign is \"%s\": set id = \"%s\"",
               pc->id, base ? base + 1 : abs, id, id);
        rules_campaign_free(pc);
        return -1;
    }
    return 0;
}

/* ===================================================================== */
/* the write path                                                        */

/* What a mutation leaves to do after its records are in the txn. */
struct fileop {
    int kind; /* 0 none, 1 write, 2 unlink */
    const char *data;
    size_t len;
    char abs[4200];
    char tmp[4300];
};

/* Commit the txn and apply the file operation; undo the records if the
 * file cannot be put in place.  `old_rec` NULL = the record was new;
 * `new_version` > 0 = a version to remove on undo. */
static int finish(struct store_txn *t, const char *id, const json_t *old_rec, long new_version,
                  struct fileop *fo, const char *actor, struct campaigns_err *e)
{
    int rc;
    if (fo->kind == 1) {
        rc = file_prepare(fo->abs, fo->data, fo->len, fo->tmp, sizeof fo->tmp);
        if (rc) {
            store_txn_end(t);
            seterr(e, 500, "file_write_failed", "script",
                   "could not write %s: %s (nothing was changed)", fo->abs, err_str(rc));
            return rc;
        }
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    if (rc) {
        if (fo->kind == 1)
            unlink(fo->tmp);
        seterr_rc(e, rc, "campaign");
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
    seterr(e, 500, "file_write_failed", "script", "could not %s %s: %s (the change was undone)",
           fo->kind == 1 ? "write" : "remove", fo->abs, err_str(frc));
    return frc;
}

/* The record of `id` for a mutation: stored, or created from the loaded
 * file.  NULL with e filled (404 when neither). */
static json_t *rec_for_update(struct store_txn *t, const struct rules_gen *g, const char *id,
                              struct campaigns_err *e)
{
    int rc;
    json_t *rec = rec_get(t, id, &rc);
    if (rec)
        return rec;
    if (rc != ERR_NOTFOUND) {
        seterr_rc(e, rc, "campaign");
        return NULL;
    }
    rc = 0;
    int i = rules_gen_find_campaign(g, id);
    if (i >= 0 && (rc = sync_campaign(t, g, i, &rec)) == 0 && rec)
        return rec;
    if (rc)
        seterr_rc(e, rc, "campaign");
    else
        seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
    return NULL;
}

/* Open the write txn for a change to campaign `id` and load its record
 * (rec_for_update).  NULL with e filled; *t is NULL when the txn could not
 * be opened, else open (the caller ends it). */
static json_t *begin_change(const struct rules_gen *g, const char *id, struct store_txn **t,
                            struct campaigns_err *e)
{
    int rc = store_wtxn_begin(g_app->store, t);
    if (rc) {
        *t = NULL;
        seterr_rc(e, rc, "campaign");
        return NULL;
    }
    return rec_for_update(*t, g, id, e);
}

static int check_rev(const json_t *rec, long if_match, struct campaigns_err *e)
{
    if (if_match < 0 || if_match == (long)jint(rec, "rev"))
        return 0;
    seterr(e, 409, "version_conflict", "If-Match",
           "the campaign changed since you read it: it is at rev %lld, you sent %ld; GET it again",
           (long long)jint(rec, "rev"), if_match);
    json_decref(e->extra);
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
                               struct campaigns_err *e)
{
    char rel[300], abs[4200];
    snprintf(rel, sizeof rel, "%s.lua", id);
    abs_of(rel, abs, sizeof abs);
    struct rules_gen *g = rules_gen_acquire();
    struct rules_campaign pc;
    if (check_script(id, abs, src, len, g, &pc, e)) {
        rules_gen_release(g);
        return NULL;
    }
    const char *names[32];
    int nn = gen_chan_names(g, names);
    json_t *chans = channels_json(pc.channels, names, nn);
    rules_gen_release(g);
    char h[65], at[32], obj[200];
    sha256_hex(src, len, h);
    now_iso(at, sizeof at);
    snprintf(obj, sizeof obj, "campaign:%s", id);
    json_t *rec = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&g_mu);
    g = rules_gen_acquire();
    const struct rules_campaign *other = gen_camp(g, id);
    struct stat st;
    int rc;
    if (other) {
        char orel[4096] = "?";
        rel_of(g->files[other->file].path, orel, sizeof orel);
        seterr(e, 409, "exists", "id", "campaign \"%s\" already exists (file %s)", id, orel);
        goto fail;
    }
    if (lstat(abs, &st) == 0) {
        seterr(e, 409, "exists", "id", "the file %s already exists in rules/", rel);
        goto fail;
    }
    if ((rc = store_wtxn_begin(g_app->store, &t))) {
        seterr_rc(e, rc, "campaign");
        goto fail;
    }
    json_t *old = rec_get(t, id, &rc);
    if (old) {
        seterr(e, 409, "exists", "id", "campaign \"%s\" already exists%s", id,
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
    json_t *v = new_version(1, h, actor, origin, src, len);
    if (live)
        json_object_set_new(v, "live_at", json_string(at));
    rc = ver_put(t, id, 1, v);
    json_decref(v);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *sm = summary(rec);
    if (!rc)
        rc = audit_append(t, actor, cloned_from ? "campaign.clone" : "campaign.create", obj, NULL,
                          sm);
    json_decref(sm);
    if (rc) {
        store_txn_end(t);
        seterr_rc(e, rc, "campaign");
        goto fail_nt;
    }
    struct fileop fo = { .kind = 1, .data = src, .len = len };
    snprintf(fo.abs, sizeof fo.abs, "%s", abs);
    rc = finish(t, id, NULL, 1, &fo, actor, e);
    t = NULL;
    if (rc)
        goto fail_nt;
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(chans);
    rules_campaign_free(&pc);
    rules_reload(g_app, 0);
    return view_now(id, 1, e);
fail:
    store_txn_end(t);
fail_nt:
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(chans);
    rules_campaign_free(&pc);
    return NULL;
}

static const char *const create_fields[] = { "id",          "script", "name", "owner",
                                             "description", "tags",   "cost", NULL };

json_t *campaigns_create(const json_t *body, const char *actor, struct campaigns_err *e)
{
    if (check_body(body, create_fields, e))
        return NULL;
    const char *id = jstr(body, "id");
    if (!id) {
        seterr(e, 400, "missing_field", "id",
               "\"id\" is required (1-128 characters of A-Z a-z 0-9 _ - . : @)");
        return NULL;
    }
    json_t *s = json_object_get(body, "script");
    if (!s) {
        seterr(e, 400, "missing_field", "script",
               "\"script\" (the campaign's Lua source) is required");
        return NULL;
    }
    return create_campaign(id, body, json_string_value(s), json_string_length(s), actor, "api",
                           NULL, e);
}

json_t *campaigns_get(const char *id, int with_script, struct campaigns_err *e)
{
    return view_now(id, with_script, e);
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

json_t *campaigns_list(const struct campaigns_filter *f, struct campaigns_err *e)
{
    if (f->status && strcmp(f->status, "all") && rules_status_parse(f->status) < 0) {
        seterr(e, 400, "invalid_query", "status",
               "status must be one of draft, pending_approval, "
               "approved, active, paused, stopped, archived, all");
        return NULL;
    }
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "campaigns");
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
        seterr_rc(e, rc, "campaigns");
        return NULL;
    }
    size_t n = json_array_size(c.items);
    json_t **arr = malloc((n + 1) * sizeof *arr);
    if (!arr) {
        json_decref(c.items);
        seterr_rc(e, ERR_NOMEM, "campaigns");
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

/* ---------------------------------------------------------------- update */

static const char *const update_fields[] = { "id",   "script", "name", "owner", "description",
                                             "tags", "cost",   "rev",  NULL };

/* Where a campaign's script lives: the record's file, else the loaded file. */
static int script_path(const char *id, char *rel, size_t rlen, struct campaigns_err *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "campaign");
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
            rel_of(g->files[gc->file].path, rel, rlen);
        rules_gen_release(g);
    }
    if (!*rel) {
        seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        return -1;
    }
    if (!rel_ok(rel)) {
        seterr(e, 409, "conflict", "file",
               "the campaign's file \"%s\" cannot be written by the API", rel);
        return -1;
    }
    return 0;
}

/* New version n in rec from src (write txn): live or pending per config. */
static int add_version(struct store_txn *t, const char *id, json_t *rec, const char *src,
                       size_t len, const char *hash, const char *actor, const char *origin,
                       long rollback_of, int approved_before, json_t *chans, long *n_out,
                       const char **state)
{
    char at[32];
    now_iso(at, sizeof at);
    long n = (long)jint(rec, "version") + 1;
    json_t *v = new_version(n, hash, actor, origin, src, len);
    if (rollback_of > 0)
        json_object_set_new(v, "rollback_of", json_integer(rollback_of));
    *state = "pending";
    if (!req_approval() || approved_before || version_is_live_hash(t, id, rec, hash)) {
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

json_t *campaigns_update(const char *id, const json_t *body, const char *actor, long if_match,
                         struct campaigns_err *e)
{
    if (check_body(body, update_fields, e))
        return NULL;
    if (jstr(body, "id") && strcmp(jstr(body, "id"), id)) {
        seterr(e, 400, "invalid_id", "id",
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
    if (script_path(id, rel, sizeof rel, e))
        return NULL;
    abs_of(rel, abs, sizeof abs);
    struct rules_campaign pc;
    memset(&pc, 0, sizeof pc);
    json_t *chans = NULL;
    if (src) {
        struct rules_gen *g = rules_gen_acquire();
        int bad = check_script(id, abs, src, len, g, &pc, e);
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
        sha256_hex(src, len, h);
    snprintf(obj, sizeof obj, "campaign:%s", id);
    json_t *rec = NULL, *before = NULL, *old = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&g_mu);
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    if (!(rec = begin_change(g, id, &t, e)))
        goto done;
    const char *st = eff_status(rec, gen_camp(g, id));
    if (!strcmp(st, "archived")) {
        illegal(e, "update", st, allowed_mask(st, 0), NULL);
        goto done;
    }
    if (check_rev(rec, if_match, e))
        goto done;
    if (src && !jeq(rec, "file", rel)) {
        seterr(e, 409, "conflict", "file", "the campaign's file changed while saving; retry");
        goto done;
    }
    before = summary(rec);
    old = json_deep_copy(rec); /* for an undo */
    apply_meta(rec, body);
    int new_script = src && !jeq(rec, "head_hash", h);
    long n = 0;
    const char *state = NULL;
    if (new_script) {
        rc = add_version(t, id, rec, src, len, h, actor, "api", 0, 0, chans, &n, &state);
        if (!json_is_true(json_object_get(rec, "name_set")) && pc.name)
            json_object_set_new(rec, "name", json_string(pc.name));
    }
    if (json_equal(old, rec) && !new_script) {
        store_txn_end(t); /* nothing changed: no rev, no audit */
        t = NULL;
        rules_gen_release(g);
        g = NULL;
        pthread_mutex_unlock(&g_mu);
        json_decref(rec);
        json_decref(before);
        json_decref(old);
        json_decref(chans);
        rules_campaign_free(&pc);
        return view_now(id, 1, e);
    }
    touch(rec, actor);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *after = summary(rec);
    if (new_script)
        json_object_set_new(after, "version_state", json_string(state));
    if (!rc)
        rc = audit_append(t, actor, "campaign.update", obj, before, after);
    json_decref(after);
    if (rc) {
        seterr_rc(e, rc, "campaign");
        goto done;
    }
    struct fileop fo = { .kind = new_script ? 1 : 0, .data = src, .len = len };
    snprintf(fo.abs, sizeof fo.abs, "%s", abs);
    rc = finish(t, id, old, new_script ? n : 0, &fo, actor, e);
    t = NULL;
    if (rc)
        goto done;
    rules_gen_release(g);
    g = NULL;
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    rules_campaign_free(&pc);
    rules_reload(g_app, 0);
    return view_now(id, 1, e);
done:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
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
static json_t *sends_apply(const char *id, int a, const char *from, const char *actor)
{
    int rc;
    const char *what;
    if (a == A_LAUNCH && !strcmp(from, "paused")) {
        what = "resume";
        rc = sends_resume(id, actor);
    } else if (a == A_LAUNCH) {
        what = "start";
        rc = sends_start(id, actor);
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
                              int with_script, struct campaigns_err *e)
{
    rules_reload(g_app, 0);
    json_t *sent = sends_apply(id, a, from, actor);
    json_t *out = view_now(id, with_script, e);
    if (out && sent)
        json_object_set(out, "send", sent);
    json_decref(sent);
    return out;
}

json_t *campaigns_delete(const char *id, const char *actor, long if_match, struct campaigns_err *e)
{
    char st_copy[32] = "";
    char obj[200];
    snprintf(obj, sizeof obj, "campaign:%s", id);
    json_t *rec = NULL, *old = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&g_mu);
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    if (!(rec = begin_change(g, id, &t, e)))
        goto fail;
    const char *st = eff_status(rec, gen_camp(g, id));
    if (!strcmp(st, "archived")) {
        illegal(e, "delete", st, allowed_mask(st, 0), "it is already deleted");
        goto fail;
    }
    snprintf(st_copy, sizeof st_copy, "%s", st);
    if (check_rev(rec, if_match, e))
        goto fail;
    old = json_deep_copy(rec);
    char at[32];
    now_iso(at, sizeof at);
    json_t *b = json_pack("{s:s}", "status", st);
    json_object_set_new(rec, "status", json_string("archived"));
    json_object_set_new(rec, "archived_at", json_string(at));
    json_object_set_new(rec, "archived_by", json_string(actor));
    json_object_del(rec, "file_missing");
    touch(rec, actor);
    rc = rec_put(t, id, rec);
    json_t *a = json_pack("{s:s,s:s}", "status", "archived", "file_removed", jstr(rec, "file"));
    if (!rc)
        rc = audit_append(t, actor, "campaign.delete", obj, b, a);
    json_decref(a);
    json_decref(b);
    if (rc) {
        seterr_rc(e, rc, "campaign");
        goto fail;
    }
    struct fileop fo = { .kind = 0 };
    const char *rel = jstr(rec, "file");
    if (rel && rel_ok(rel)) {
        fo.kind = 2;
        abs_of(rel, fo.abs, sizeof fo.abs);
    }
    rc = finish(t, id, old, 0, &fo, actor, e);
    t = NULL;
    if (rc)
        goto fail;
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(old);
    return publish_change(id, A_DELETE, st_copy, actor, 0, e);
fail:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(old);
    return NULL;
}

/* ------------------------------------------------------------- actions */

/* Four eyes: with require_approval the approver is neither the version's
 * author nor whoever submitted it. */
static int same_actor_refused(const json_t *rec, const json_t *ver, const char *actor,
                              struct campaigns_err *e)
{
    if (!req_approval())
        return 0;
    const char *author = jstr(ver, "author");
    const char *sub = jstr(rec, "submitted_by");
    if ((author && !strcmp(author, actor)) || (sub && !strcmp(sub, actor))) {
        seterr(e, 403, "same_actor", "actor",
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
                              struct campaigns_err *e);

json_t *campaigns_action(const char *id, const char *action, const json_t *body, const char *actor,
                         long if_match, struct campaigns_err *e)
{
    int a = -1;
    for (int i = 0; i < A_N; i++)
        if (!strcmp(action, act_names[i]))
            a = i;
    if (a < 0 || a == A_DELETE) {
        seterr(e, 404, "not_found", NULL, "no action \"%s\"", action);
        return NULL;
    }
    static const char *const none[] = { NULL };
    static const char *const with_version[] = { "version", NULL };
    static const char *const with_reason[] = { "version", "reason", NULL };
    static const char *const clone_f[] = { "id",          "name", "script", "owner",
                                           "description", "tags", "cost",   NULL };
    const char *const *allowed = a == A_APPROVE  ? with_version
                                 : a == A_REJECT ? with_reason
                                 : a == A_CLONE  ? clone_f
                                                 : none;
    if (body && check_body(body, allowed, e))
        return NULL;
    if (a == A_CLONE)
        return clone_campaign(id, body, actor, e);
    long want = body && json_object_get(body, "version") ? (long)jint(body, "version") : 0;
    char obj[200], at[32];
    snprintf(obj, sizeof obj, "campaign:%s", id);
    now_iso(at, sizeof at);
    json_t *rec = NULL, *before = NULL, *ver = NULL;
    struct store_txn *t = NULL;
    pthread_mutex_lock(&g_mu);
    struct rules_gen *g = rules_gen_acquire();
    int rc = 0;
    if (!(rec = begin_change(g, id, &t, e)))
        goto fail;
    char st[32];
    snprintf(st, sizeof st, "%s", eff_status(rec, gen_camp(g, id)));
    long pend = pending_version(rec);
    unsigned mask = allowed_mask(st, pend);
    if (!(mask & (1u << a))) {
        const char *why = NULL;
        if (a == A_LAUNCH && req_approval() &&
            (!strcmp(st, "draft") || !strcmp(st, "pending_approval")))
            why = "require_approval is on: submit it and have another key approve it first";
        else if ((a == A_APPROVE || a == A_REJECT) && !pend &&
                 (!strcmp(st, "active") || !strcmp(st, "paused") || !strcmp(st, "approved")))
            why = "no version is waiting for approval";
        illegal(e, action, st, mask, why);
        goto fail;
    }
    if (check_rev(rec, if_match, e))
        goto fail;
    before = summary(rec);
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
            illegal(e, action, st, mask & ~(1u << A_LAUNCH), "no version has been approved");
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
            seterr(e, 409, "conflict", "version",
                   "version %ld is not the one submitted (the newest is %ld)", target, head);
            goto fail;
        }
        if (target < 1 || target > head) {
            seterr(e, 404, "not_found", "version", "campaign \"%s\" has no version %ld", id,
                   target);
            goto fail;
        }
        if (!lifecycle && target == jint(rec, "live_version")) {
            seterr(e, 409, "conflict", "version", "version %ld is already live", target);
            goto fail;
        }
        if (!(ver = ver_get(t, id, (uint64_t)target, &rc))) {
            seterr_rc(e, rc, "version");
            goto fail;
        }
        if (!lifecycle && jstr(ver, "rejected_by") && a == A_REJECT) {
            seterr(e, 409, "conflict", "version", "version %ld is already rejected", target);
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
    touch(rec, actor);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *after = summary(rec);
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
        seterr_rc(e, rc, "campaign");
        goto fail;
    }
    rc = store_txn_commit(t, STORE_DURABLE);
    t = NULL;
    if (rc) {
        seterr_rc(e, rc, "campaign");
        goto fail;
    }
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(ver);
    return publish_change(id, a, st, actor, 1, e);
fail:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
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
                              struct campaigns_err *e)
{
    const char *nid = body ? jstr(body, "id") : NULL;
    if (!nid) {
        seterr(e, 400, "missing_field", "id", "clone needs {\"id\": \"new-id\"}");
        return NULL;
    }
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "campaign");
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
        seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
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

json_t *campaigns_versions(const char *id, long limit, long before, struct campaigns_err *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "versions");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    if (!rec) {
        store_txn_end(t);
        if (rc == ERR_NOTFOUND)
            seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        else
            seterr_rc(e, rc, "versions");
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

json_t *campaigns_version_get(const char *id, long n, long diff_to, struct campaigns_err *e)
{
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "version");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    json_t *v = rec ? ver_get(t, id, (uint64_t)n, &rc) : NULL;
    json_t *o = NULL;
    if (!rec) {
        seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
    } else if (!v) {
        seterr(e, 404, "not_found", "version", "campaign \"%s\" has no version %ld", id, n);
    } else {
        json_object_set_new(v, "state", json_string(ver_state(rec, v)));
        if (diff_to > 0) {
            json_t *w = ver_get(t, id, (uint64_t)diff_to, &rc);
            if (!w) {
                seterr(e, 404, "not_found", "diff", "campaign \"%s\" has no version %ld", id,
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
                           struct campaigns_err *e)
{
    /* read and validate the old source outside the lock (versions never change) */
    struct store_txn *t;
    int rc = store_rtxn_begin(g_app->store, &t);
    if (rc) {
        seterr_rc(e, rc, "campaign");
        return NULL;
    }
    json_t *rec = rec_get(t, id, &rc);
    json_t *v = rec ? ver_get(t, id, (uint64_t)n, &rc) : NULL;
    store_txn_end(t);
    if (!rec || !v) {
        if (!rec)
            seterr(e, 404, "not_found", "id", "no campaign \"%s\"", id);
        else
            seterr(e, 404, "not_found", "version", "campaign \"%s\" has no version %ld", id, n);
        json_decref(rec);
        json_decref(v);
        return NULL;
    }
    json_decref(rec);
    rec = NULL;
    const char *src = jstr(v, "source");
    size_t len = json_string_length(json_object_get(v, "source"));
    char rel[4096], abs[4200], h[65], obj[200];
    if (!src || script_path(id, rel, sizeof rel, e)) {
        if (!src)
            seterr(e, 500, "internal", "version", "version %ld has no source", n);
        json_decref(v);
        return NULL;
    }
    abs_of(rel, abs, sizeof abs);
    struct rules_gen *g = rules_gen_acquire();
    struct rules_campaign pc;
    int bad = check_script(id, abs, src, len, g, &pc, e);
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
    sha256_hex(src, len, h);
    snprintf(obj, sizeof obj, "campaign:%s", id);
    int approved_before = jstr(v, "approved_by") || jstr(v, "live_at");
    json_t *before = NULL, *old = NULL;
    t = NULL;
    pthread_mutex_lock(&g_mu);
    g = rules_gen_acquire();
    if (!(rec = begin_change(g, id, &t, e)))
        goto fail;
    const char *st = eff_status(rec, gen_camp(g, id));
    if (!strcmp(st, "archived")) {
        illegal(e, "roll back", st, allowed_mask(st, 0), NULL);
        goto fail;
    }
    if (check_rev(rec, if_match, e))
        goto fail;
    if (!jeq(rec, "file", rel)) {
        seterr(e, 409, "conflict", "file", "the campaign's file changed while saving; retry");
        goto fail;
    }
    if (jeq(rec, "head_hash", h)) {
        seterr(e, 409, "conflict", "version",
               "version %ld has the same script as the newest version %lld: "
               "nothing to roll back",
               n, (long long)jint(rec, "version"));
        goto fail;
    }
    old = json_deep_copy(rec);
    before = summary(rec);
    long nv;
    const char *state;
    rc = add_version(t, id, rec, src, len, h, actor, "rollback", n, approved_before, chans, &nv,
                     &state);
    touch(rec, actor);
    if (!rc)
        rc = rec_put(t, id, rec);
    json_t *after = summary(rec);
    json_object_set_new(after, "rollback_of", json_integer(n));
    json_object_set_new(after, "version_state", json_string(state));
    if (!rc)
        rc = audit_append(t, actor, "campaign.rollback", obj, before, after);
    json_decref(after);
    if (rc) {
        seterr_rc(e, rc, "campaign");
        goto fail;
    }
    struct fileop fo = { .kind = 1, .data = src, .len = len };
    snprintf(fo.abs, sizeof fo.abs, "%s", abs);
    rc = finish(t, id, old, nv, &fo, actor, e);
    t = NULL;
    if (rc)
        goto fail;
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    json_decref(v);
    rules_reload(g_app, 0);
    return view_now(id, 1, e);
fail:
    store_txn_end(t);
    rules_gen_release(g);
    pthread_mutex_unlock(&g_mu);
    json_decref(rec);
    json_decref(before);
    json_decref(old);
    json_decref(chans);
    json_decref(v);
    return NULL;
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
