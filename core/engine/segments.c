/*
 * segments.c — segment files: loading, validation (file:line errors),
 * references and cycles, generations and their publication, slot
 * assignment in the index, hot reload, `promod check`.  The API side
 * (definitions written as files, listings) is in segments_api.c.
 *
 * A file returns one table:
 *   return { id = "gold-fr", name = "...", description = "...",
 *            conditions = { tier = "gold", country = { ["$in"] = { "FR" } } } }
 * or `conditions = [[ {"tier": "gold"} ]]` (JSON text: null and empty
 * lists written exactly as GrowthBook writes them), or
 *   match = function(p) return (p.ltv or 0) > 500 end
 * Exactly one of `conditions` and `match`; `id` defaults to the file name.
 */
#include "engine/segments.h"
#include "engine/segments_internal.h"
#include "engine/cond.h"
#include "engine/condset.h"
#include "engine/segbits.h"
#include "engine/hooks.h"
#include "lua/luavm.h"
#include "store/store.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/file.h"
#include "base/hash.h"
#include "base/id.h"
#include "base/log.h"
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;   /* guards g_cur */
pthread_mutex_t segments_reload_mu = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static struct segments_gen *g_cur;
static uint64_t g_seq;
static struct app *g_appp;
static const struct config *g_cfg;

const struct config *segments_cfg(void)
{
    return g_cfg;
}

/* segments_start(app, -1): definitions only, the store's slots untouched */
static int g_defs_only;

struct segments_gen *segments_gen_peek(void)
{
    return g_cur;
}

/* ---- generations ---------------------------------------------------------- */

static void segment_clear(struct segment *s)
{
    free(s->id);
    free(s->name);
    free(s->description);
    free(s->path);
    json_decref(s->conditions);
    cond_free(s->cond);
    free(s->source);
    free(s->deps);
    memset(s, 0, sizeof *s);
}

static void gen_free(struct segments_gen *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->nseg; i++)
        segment_clear(&g->segs[i]);
    free(g->segs);
    for (int i = 0; i < g->nfiles; i++) {
        free(g->files[i].path);
        free(g->files[i].id);
        free(g->files[i].error);
    }
    free(g->files);
    condset_free(g->cs);
    free(g->ref_seg);
    for (int i = 0; i < g->nlevels; i++)
        free(g->level[i]);
    free(g->level);
    free(g->lua);
    free(g->timed);
    free(g->closure);
    segments_deps_free(g->deps);
    free(g);
}

struct segments_gen *segments_gen_acquire(void)
{
    pthread_mutex_lock(&g_lock);
    struct segments_gen *g = g_cur;
    if (g)
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_lock);
    return g;
}

void segments_gen_release(struct segments_gen *g)
{
    if (g && __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0)
        gen_free(g);
}

int segments_find(const struct segments_gen *g, const char *id, size_t len)
{
    int lo = 0, hi = g ? g->nseg - 1 : -1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const char *s = g->segs[mid].id;
        size_t sl = strlen(s);
        int c = memcmp(s, id, sl < len ? sl : len);
        if (!c)
            c = sl < len ? -1 : sl > len;
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* ---- reading a file ----------------------------------------------------------- */

/* A definition as read from a file, before the set is assembled. */
struct sdef {
    char *path;
    char *id, *name, *description;
    json_t *conditions;
    int lua;
    char *source;
    size_t source_len;
    uint32_t hash;
    char *error;          /* "file:line: message": this definition is not usable */
    int prev;             /* this is the last good version, kept for a broken file */
    char *kept_error;     /* prev: the error of the file's text on disk */
    struct cond *cond;
    int *deps, ndeps;
    int level, state;     /* cycle search: 0 new, 1 on the path, 2 done */
};

static void sdef_clear(struct sdef *d)
{
    free(d->path);
    free(d->id);
    free(d->name);
    free(d->description);
    json_decref(d->conditions);
    free(d->source);
    free(d->error);
    free(d->kept_error);
    cond_free(d->cond);
    free(d->deps);
    memset(d, 0, sizeof *d);
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* Line of field `name` in the returned table: the first line where it is
 * written as `name =` or `["name"] =`, searched from line `from`. */
static int line_of(const char *src, size_t len, const char *name, int from)
{
    size_t nl = strlen(name);
    int line = 1;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\n') {
            line++;
            continue;
        }
        if (line < from || i + nl > len || memcmp(src + i, name, nl))
            continue;
        char before = i ? src[i - 1] : ' ';
        char after = i + nl < len ? src[i + nl] : ' ';
        int ident = (before == '_' || (before >= 'a' && before <= 'z') ||
                     (before >= 'A' && before <= 'Z') || (before >= '0' && before <= '9'));
        int ident2 = (after == '_' || (after >= 'a' && after <= 'z') ||
                      (after >= 'A' && after <= 'Z') || (after >= '0' && after <= '9'));
        if (!ident && !ident2)
            return line;
    }
    return from > 1 ? from : 1;
}

/* Line of the place a condition error names ("$.and[2].age.$gt"): its
 * last attribute or operator name, after the `conditions` field. */
static int line_of_path(const char *src, size_t len, const char *path)
{
    int base = line_of(src, len, "conditions", 1);
    const char *last = NULL;
    char name[130];
    for (const char *p = path; *p; p++)
        if (*p == '.' || *p == '[')
            last = p;
    if (!last || *last != '.')
        return base;
    size_t n = strcspn(last + 1, ".[");
    if (!n || n >= sizeof name)
        return base;
    memcpy(name, last + 1, n);
    name[n] = 0;
    return line_of(src, len, name, base);
}

static void set_error(struct sdef *d, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(struct sdef *d, int line, const char *fmt, ...)
{
    char m[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    free(d->error);
    size_t n = strlen(d->path) + strlen(m) + 32;
    d->error = malloc(n);
    if (d->error)
        snprintf(d->error, n, "%s:%d: %s", d->path, line, m);
}

/* Run the file in `vm` and read its table into d (d->path, d->source set).
 * On failure d->error is set. */
static void read_def(struct luavm *vm, struct sdef *d, const char *default_id)
{
    char err[600];
    lua_State *L = luavm_state(vm);
    int top = lua_gettop(L);
    if (luavm_load_chunk(vm, d->path, d->source, d->source_len, err, sizeof err)) {
        free(d->error);
        d->error = strdup(err);
        return;
    }
    const char *src = d->source;
    size_t len = d->source_len;
    if (!lua_istable(L, -1)) {
        set_error(d, line_of(src, len, "return", 1), "a segment file must return a table");
        lua_settop(L, top);
        return;
    }
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int vt = lua_type(L, -1);
        if (!k) {
            set_error(d, 1, "the table's fields must be names (id, name, description, conditions "
                            "or match)");
        } else if (!strcmp(k, "id") || !strcmp(k, "name") || !strcmp(k, "description")) {
            size_t sl;
            const char *sv = vt == LUA_TSTRING ? lua_tolstring(L, -1, &sl) : NULL;
            size_t maxl = !strcmp(k, "description") ? 2000 : !strcmp(k, "name") ? 200 : 128;
            if (!sv || sl > maxl)
                set_error(d, line_of(src, len, k, 1), "%s must be a string of at most %zu bytes", k,
                          maxl);
            else if (!strcmp(k, "id"))
                d->id = xstrndup(sv, sl);
            else if (!strcmp(k, "name"))
                d->name = xstrndup(sv, sl);
            else
                d->description = xstrndup(sv, sl);
        } else if (!strcmp(k, "conditions")) {
            int line = line_of(src, len, "conditions", 1);
            if (vt == LUA_TSTRING) {
                json_error_t je;
                size_t sl;
                const char *sv = lua_tolstring(L, -1, &sl);
                d->conditions = json_loadb(sv, sl, JSON_REJECT_DUPLICATES, &je);
                if (!d->conditions)
                    set_error(d, line + (je.line > 1 ? je.line - 1 : 0),
                              "conditions: invalid JSON: %s", je.text);
            } else if (vt == LUA_TTABLE) {
                int e;
                d->conditions = luavm_to_json(L, -1, &e);
                if (!d->conditions)
                    set_error(d, line, "conditions: %s (values must be strings, numbers, booleans "
                                       "or tables)", err_str(e));
            } else {
                set_error(d, line, "conditions must be a table or a JSON string");
            }
            if (d->conditions && !json_is_object(d->conditions)) {
                set_error(d, line, "conditions must be an object (a table with names), as "
                                   "GrowthBook's are");
                json_decref(d->conditions);
                d->conditions = NULL;
            }
        } else if (hooks_find(HOOKS_SEGMENT, k) >= 0) { /* match (engine/hooks.h) */
            if (vt != LUA_TFUNCTION)
                set_error(d, line_of(src, len, k, 1), "%s must be a function: %s", k,
                          hooks_table[hooks_find(HOOKS_SEGMENT, k)].usage);
            else
                d->lua = 1;
        } else {
            set_error(d, line_of(src, len, k, 1),
                      "unknown field '%s' (a segment has id, name, description, and conditions or "
                      "match)", k);
        }
        lua_pop(L, 1);
        if (d->error)
            break;
    }
    lua_settop(L, top);
    if (d->error)
        return;
    if (!!d->conditions == d->lua) {
        set_error(d, 1, d->lua ? "a segment has conditions or match, not both"
                               : "a segment needs conditions = { ... } or match = function(p) ... end");
        return;
    }
    if (!d->id)
        d->id = strdup(default_id);
    if (!d->id || !id_valid(d->id))
        set_error(d, line_of(src, len, "id", 1),
                  "invalid id \"%s\" (1-128 characters of A-Z a-z 0-9 _ - . : @)", d->id ? d->id : "");
}

/* The set being assembled: ids known to conditions, then compiled. */
struct dset {
    struct sdef *d;
    int n;
};

static int find_def(const struct dset *s, const char *id, size_t len)
{
    for (int i = 0; i < s->n; i++)
        if (s->d[i].id && !s->d[i].error && strlen(s->d[i].id) == len &&
            !memcmp(s->d[i].id, id, len))
            return i;
    return -1;
}

static int known_cb(void *ud, const char *id, size_t len)
{
    return find_def(ud, id, len) >= 0;
}

/* Compile d's condition (strict; with `check_refs`, references must name
 * segments of the set).  Fills d->deps. */
static void compile_def(struct dset *s, struct sdef *d, int check_refs)
{
    cond_free(d->cond);
    d->cond = NULL;
    free(d->deps);
    d->deps = NULL;
    d->ndeps = 0;
    if (d->lua)
        return;
    struct cond_opts o = { .mode = COND_STRICT, .segment_known = check_refs ? known_cb : NULL,
                           .segment_ud = s };
    struct reqerr e = { 0 };
    if (cond_compile(d->conditions, &o, &d->cond, &e)) {
        set_error(d, line_of_path(d->source, d->source_len, e.field), "conditions: %s", e.message);
        reqerr_clear(&e);
        return;
    }
    size_t nr = cond_nsegments(d->cond);
    d->deps = calloc(nr ? nr : 1, sizeof *d->deps);
    for (size_t k = 0; d->deps && k < nr; k++) {
        const char *id = cond_segment(d->cond, k);
        int j = find_def(s, id, strlen(id));
        if (j >= 0)
            d->deps[d->ndeps++] = j;
    }
}

/* Depth-first search for cycles; d->level = 1 + max level of its deps.
 * Returns the index where a cycle closes, or -1.  Every definition on the
 * cycle gets the same message, naming it from where it closes. */
static char g_cycle[600];

static int visit(struct dset *s, int i, int *stack, int depth)
{
    struct sdef *d = &s->d[i];
    if (d->state == 2)
        return -1;
    if (d->state == 1)
        return i;
    d->state = 1;
    stack[depth] = i;
    d->level = 0;
    for (int k = 0; k < d->ndeps; k++) {
        struct sdef *e = &s->d[d->deps[k]];
        if (e->error)
            continue;
        int c = visit(s, d->deps[k], stack, depth + 1);
        if (c >= 0) {
            if (e->state == 1 && d->deps[k] == c) { /* closes here: name it once */
                size_t at = 0;
                int from = 0;
                while (from <= depth && stack[from] != c)
                    from++;
                for (int q = from; q <= depth && at < sizeof g_cycle - 140; q++)
                    at += (size_t)snprintf(g_cycle + at, sizeof g_cycle - at, "%s → ",
                                           s->d[stack[q]].id);
                snprintf(g_cycle + at, sizeof g_cycle - at, "%s", s->d[c].id);
            }
            if (!d->error)
                set_error(d, line_of_path(d->source, d->source_len, "$.segment"),
                          "segments reference each other in a cycle: %s", g_cycle);
            d->state = 2;
            return c == i ? -1 : c;
        }
        if (e->level + 1 > d->level)
            d->level = e->level + 1;
    }
    d->state = 2;
    return -1;
}

/* Compile everything, then refuse cycles, until stable: a definition that
 * fails falls back to its last good version when there is one (compiled
 * without the reference check: it was valid, and a reference it makes to
 * a segment that has gone reads as "not a member"). */
static void settle(struct dset *s, const struct segments_gen *old)
{
    for (int round = 0; round <= s->n + 1; round++) {
        for (int i = 0; i < s->n; i++)
            if (!s->d[i].error)
                compile_def(s, &s->d[i], !s->d[i].prev);
        int stack[SEGMENTS_MAX + 8];
        for (int i = 0; i < s->n; i++)
            s->d[i].state = 0;
        for (int i = 0; i < s->n; i++)
            if (!s->d[i].error && s->n <= SEGMENTS_MAX)
                visit(s, i, stack, 0);
        int changed = 0;
        for (int i = 0; i < s->n; i++) {
            struct sdef *d = &s->d[i];
            if (!d->error || d->prev || !old)
                continue;
            /* broken: does the previous generation have this file's last good version? */
            for (int j = 0; j < old->nseg; j++) {
                const struct segment *o = &old->segs[j];
                if (strcmp(o->path, d->path) || find_def(s, o->id, strlen(o->id)) >= 0)
                    continue;
                struct sdef pd = { 0 };
                pd.path = strdup(o->path);
                pd.id = strdup(o->id);
                pd.name = o->name ? strdup(o->name) : NULL;
                pd.description = o->description ? strdup(o->description) : NULL;
                pd.conditions = o->conditions ? json_incref(o->conditions) : NULL;
                pd.lua = o->lua;
                pd.source = xstrndup(o->source, o->source_len);
                pd.source_len = o->source_len;
                pd.hash = o->source_hash;
                pd.prev = 1;
                pd.kept_error = d->error; /* the file's own error stays reported */
                d->error = NULL;
                sdef_clear(d);
                *d = pd;
                changed = 1;
                break;
            }
        }
        if (!changed)
            break;
    }
}

/* ---- assembling a generation ----------------------------------------------- */

static uint64_t fnv64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int cmp_seg(const void *a, const void *b)
{
    return strcmp(((const struct segment *)a)->id, ((const struct segment *)b)->id);
}

/* Build g from the usable definitions of s (moved out of s). */
static int assemble(struct segments_gen *g, struct dset *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += s->d[i].id && !s->d[i].error;
    if (n > SEGMENTS_MAX)
        return ERR_TOOBIG;
    g->segs = calloc((size_t)(n ? n : 1), sizeof *g->segs);
    if (!g->segs)
        return ERR_NOMEM;
    int64_t now = clock_now();
    for (int i = 0; i < s->n; i++) {
        struct sdef *d = &s->d[i];
        if (!d->id || d->error)
            continue;
        struct segment *seg = &g->segs[g->nseg++];
        seg->id = d->id;
        seg->name = d->name;
        seg->description = d->description;
        seg->path = strdup(d->path);
        seg->conditions = d->conditions;
        seg->cond = d->cond;
        seg->source = d->source;
        seg->source_len = d->source_len;
        seg->source_hash = d->hash;
        seg->lua = d->lua;
        seg->level = d->level;
        seg->slot = -1;
        seg->loaded_at = now;
        d->id = d->name = d->description = d->source = NULL;
        d->conditions = NULL;
        d->cond = NULL;
    }
    qsort(g->segs, (size_t)g->nseg, sizeof *g->segs, cmp_seg);
    g->nw = CONDSET_WORDS(g->nseg ? g->nseg : 1);
    size_t nw = g->nw;
    for (int i = 0; i < SEGMENTS_SLOTS; i++)
        g->slot_seg[i] = -1;
    /* references by index, levels */
    int maxlevel = 0;
    for (int j = 0; j < g->nseg; j++) {
        struct segment *seg = &g->segs[j];
        size_t nr = seg->cond ? cond_nsegments(seg->cond) : 0;
        seg->deps = calloc(nr ? nr : 1, sizeof *seg->deps);
        if (!seg->deps)
            return ERR_NOMEM;
        for (size_t k = 0; k < nr; k++) {
            const char *id = cond_segment(seg->cond, k);
            int r = segments_find(g, id, strlen(id));
            if (r >= 0)
                seg->deps[seg->ndeps++] = r;
        }
        if (seg->level > maxlevel)
            maxlevel = seg->level;
    }
    g->nlevels = maxlevel + 1;
    g->level = calloc((size_t)g->nlevels, sizeof *g->level);
    g->lua = calloc(nw, sizeof(uint64_t));
    g->timed = calloc(nw, sizeof(uint64_t));
    g->closure = calloc(nw * (size_t)(g->nseg ? g->nseg : 1), sizeof(uint64_t));
    if (!g->level || !g->lua || !g->timed || !g->closure)
        return ERR_NOMEM;
    for (int L = 0; L < g->nlevels; L++)
        if (!(g->level[L] = calloc(nw, sizeof(uint64_t))))
            return ERR_NOMEM;
    /* by level, so references come first: fingerprints, time, closure */
    for (int L = 0; L < g->nlevels; L++)
        for (int j = 0; j < g->nseg; j++) {
            struct segment *seg = &g->segs[j];
            if (seg->level != L)
                continue;
            segbit_set(g->level[L], j);
            uint64_t fp = fnv64(seg->lua ? "lua" : "cond", 4, 0xcbf29ce484222325ull);
            if (seg->lua) {
                fp = fnv64(seg->source, seg->source_len, fp);
                segbit_set(g->lua, j);
                seg->time_based = 1;
            } else {
                char *t = json_dumps(seg->conditions, JSON_COMPACT);
                if (!t)
                    return ERR_NOMEM;
                fp = fnv64(t, strlen(t), fp);
                free(t);
                seg->time_based = cond_reads(seg->cond, "stats.recency_days", 18) ||
                                  cond_reads(seg->cond, "stats.days_since", 16);
            }
            for (int k = 0; k < seg->ndeps; k++) {
                const struct segment *dep = &g->segs[seg->deps[k]];
                fp = fnv64(&dep->fp, sizeof dep->fp, fp);
                seg->time_based |= dep->time_based;
            }
            seg->fp = fp;
            if (seg->time_based)
                segbit_set(g->timed, j);
        }
    /* closure[j]: j and everything that depends on it, transitively
     * (highest level first, so a dependent's closure is complete) */
    for (int L = g->nlevels - 1; L >= 0; L--)
        for (int j = 0; j < g->nseg; j++) {
            if (g->segs[j].level != L)
                continue;
            uint64_t *cj = g->closure + (size_t)j * nw;
            segbit_set(cj, j);
            for (int i = 0; i < g->nseg; i++)
                for (int k = 0; k < g->segs[i].ndeps; k++)
                    if (g->segs[i].deps[k] == j)
                        for (size_t w = 0; w < nw; w++)
                            cj[w] |= g->closure[(size_t)i * nw + w];
        }
    /* conditions compiled together */
    struct condset_build *b;
    int rc = condset_build_new(g->nseg, &b);
    if (rc)
        return rc;
    for (int j = 0; j < g->nseg && !rc; j++)
        if (!g->segs[j].lua)
            rc = condset_build_set(b, j, g->segs[j].conditions, NULL, 0, NULL, 0, NULL, 0, NULL);
    if (rc) {
        condset_build_free(b);
        return rc;
    }
    if ((rc = condset_build_finish(b, &g->cs)))
        return rc;
    int nrefs = condset_nrefs(g->cs);
    g->ref_seg = calloc((size_t)(nrefs ? nrefs : 1), sizeof *g->ref_seg);
    if (!g->ref_seg)
        return ERR_NOMEM;
    for (int k = 0; k < nrefs; k++) {
        const char *id = condset_ref(g->cs, k);
        g->ref_seg[k] = segments_find(g, id, strlen(id));
    }
    return segments_deps_build(g);
}

/* ---- slots in the store ------------------------------------------------------- */

static void fp_hex(uint64_t fp, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)fp);
}

/* Give every segment of g its slot: the one it had when its id is known
 * (marked "building" again when its definition changed), a free one
 * otherwise; slots of segments that are gone become "deleting". */
static int assign_slots(struct store *st, struct segments_gen *g, int *changed)
{
    *changed = 0;
    struct segidx_slot *slots = calloc(SEGMENTS_SLOTS, sizeof *slots);
    if (!slots)
        return ERR_NOMEM;
    struct store_txn *t;
    int rc = store_wtxn_begin(st, &t);
    if (rc) {
        free(slots);
        return rc;
    }
    if ((rc = segidx_slots_load(t, slots)))
        goto fail;
    char seen[SEGMENTS_SLOTS] = { 0 };
    for (int j = 0; j < g->nseg; j++) {
        struct segment *seg = &g->segs[j];
        char fp[17];
        fp_hex(seg->fp, fp);
        int slot = -1;
        for (int s = 0; s < SEGMENTS_SLOTS && slot < 0; s++)
            if (slots[s].used && !strcmp(slots[s].id, seg->id) && strcmp(slots[s].state, "deleting"))
                slot = s;
        if (slot >= 0 && strcmp(slots[slot].fp, fp)) {
            snprintf(slots[slot].fp, sizeof slots[slot].fp, "%s", fp);
            snprintf(slots[slot].state, sizeof slots[slot].state, "building");
            slots[slot].cursor[0] = 0;
            if ((rc = segidx_slot_put(t, slot, &slots[slot])))
                goto fail;
            *changed = 1;
        }
        if (slot < 0) {
            for (int s = 0; s < SEGMENTS_SLOTS && slot < 0; s++)
                if (!slots[s].used)
                    slot = s;
            if (slot < 0) {
                log_error("segments: no free index slot (too many segments being deleted)",
                          "segment=\"%s\"", seg->id);
                continue;
            }
            memset(&slots[slot], 0, sizeof slots[slot]);
            slots[slot].used = 1;
            snprintf(slots[slot].id, sizeof slots[slot].id, "%s", seg->id);
            snprintf(slots[slot].fp, sizeof slots[slot].fp, "%s", fp);
            snprintf(slots[slot].state, sizeof slots[slot].state, "building");
            if ((rc = segidx_slot_put(t, slot, &slots[slot])))
                goto fail;
            *changed = 1;
        }
        seg->slot = slot;
        seen[slot] = 1;
        g->slot_seg[slot] = j;
    }
    for (int s = 0; s < SEGMENTS_SLOTS; s++)
        if (slots[s].used && !seen[s] && strcmp(slots[s].state, "deleting")) {
            snprintf(slots[s].state, sizeof slots[s].state, "deleting");
            if ((rc = segidx_slot_put(t, s, &slots[s])))
                goto fail;
            *changed = 1;
        }
    free(slots);
    return store_txn_commit(t, STORE_DURABLE);
fail:
    store_txn_end(t);
    free(slots);
    return rc;
}

/* ---- loading a directory ---------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* *.lua directly under dir (not hidden), sorted. */
static char **list_dir(const char *dir0, int *n)
{
    *n = 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", dir0);
    for (size_t l = strlen(dir); l > 1 && dir[l - 1] == '/'; l--)
        dir[l - 1] = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char **v = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < 5 || strcmp(e->d_name + l - 4, ".lua"))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv)
                break;
            v = nv;
        }
        size_t pl = strlen(dir) + l + 2;
        if (!(v[*n] = malloc(pl)))
            break;
        snprintf(v[*n], pl, "%s/%s", dir, e->d_name);
        (*n)++;
    }
    closedir(d);
    if (v)
        qsort(v, (size_t)*n, sizeof *v, cmp_str);
    return v;
}

static struct luavm *scratch_vm(const struct config *cfg)
{
    struct luavm_opts o = { .instr_budget = cfg ? cfg->instr_budget : 0,
                            .mem_limit = 64u << 20 };
    struct luavm *vm;
    return luavm_new(&o, &vm) ? NULL : vm;
}

/* Read and validate the files (`paths`; `texts` may give the text of a
 * path instead of the disk, for the API) into s.  `old` supplies last good
 * versions and unchanged definitions. */
static void load_defs(const struct config *cfg, char **paths, int np, struct dset *s,
                      const struct segments_gen *old, const char *over_path, const char *over_text)
{
    s->d = calloc(np > 0 ? (size_t)np : 1, sizeof *s->d);
    s->n = 0;
    struct luavm *vm = NULL;
    for (int i = 0; s->d && i < np; i++) {
        struct sdef *d = &s->d[s->n++];
        d->path = strdup(paths[i]);
        int rc = 0;
        if (over_path && !strcmp(over_path, paths[i])) {
            d->source_len = strlen(over_text);
            d->source = xstrndup(over_text, d->source_len);
        } else {
            d->source = file_read_all(paths[i], SEGMENTS_MAX_SOURCE, &d->source_len, &rc);
        }
        if (!d->source) {
            set_error(d, 1, "cannot read: %s", rc == ERR_TOOBIG ? "larger than 64 KiB" : err_str(rc));
            continue;
        }
        d->hash = hash_fnv1a(d->source, d->source_len, HASH_FNV_INIT);
        if (!vm && !(vm = scratch_vm(cfg))) {
            set_error(d, 1, "out of memory");
            continue;
        }
        const char *base = strrchr(paths[i], '/');
        base = base ? base + 1 : paths[i];
        char idbuf[160];
        snprintf(idbuf, sizeof idbuf, "%.*s", (int)(strlen(base) - 4), base);
        read_def(vm, d, idbuf);
        (void)old;
    }
    luavm_free(vm);
    /* duplicate ids: the first file (in path order) keeps it */
    for (int i = 0; i < s->n; i++)
        for (int j = 0; j < i && !s->d[i].error; j++)
            if (s->d[j].id && s->d[i].id && !s->d[j].error && !strcmp(s->d[i].id, s->d[j].id))
                set_error(&s->d[i], line_of(s->d[i].source, s->d[i].source_len, "id", 1),
                          "duplicate segment id \"%s\" (also in %s)", s->d[i].id, s->d[j].path);
    settle(s, old);
}

static void dset_free(struct dset *s)
{
    for (int i = 0; i < s->n; i++)
        sdef_clear(&s->d[i]);
    free(s->d);
    s->d = NULL;
    s->n = 0;
}

/* Build a generation from the directory (with an optional override of one
 * file's text, for validating an API write).  *g is NULL on out of memory. */
static int build_gen(const struct config *cfg, const struct segments_gen *old, const char *over_path,
                     const char *over_text, struct segments_gen **out, const char *drop_path)
{
    *out = NULL;
    int np;
    char **paths = list_dir(cfg->segments_dir, &np);
    if (over_path) {
        int have = 0;
        for (int i = 0; i < np; i++)
            have |= !strcmp(paths[i], over_path);
        if (!have) {
            char **nv = realloc(paths, (size_t)(np + 1) * sizeof *nv);
            if (nv) {
                paths = nv;
                paths[np++] = strdup(over_path);
            }
        }
    }
    if (drop_path)
        for (int i = 0; i < np; i++)
            if (!strcmp(paths[i], drop_path)) {
                free(paths[i]);
                paths[i] = paths[--np];
                i--;
            }
    struct dset s;
    load_defs(cfg, paths, np, &s, old, over_path, over_text);
    struct segments_gen *g = calloc(1, sizeof *g);
    int rc = g && s.d ? 0 : ERR_NOMEM;
    if (!rc) {
        g->refs = 1;
        g->built_at = clock_now();
        g->files = calloc((size_t)(s.n ? s.n : 1), sizeof *g->files);
        if (!g->files)
            rc = ERR_NOMEM;
        for (int i = 0; !rc && i < s.n; i++) {
            struct segments_file *f = &g->files[g->nfiles++];
            f->path = strdup(s.d[i].path);
            f->id = s.d[i].id ? strdup(s.d[i].id) : NULL;
            const char *e = s.d[i].error ? s.d[i].error : s.d[i].kept_error;
            f->ok = !e;
            f->error = e ? strdup(e) : NULL;
            f->hash = s.d[i].hash;
        }
    }
    if (!rc)
        rc = assemble(g, &s);
    dset_free(&s);
    for (int i = 0; i < np; i++)
        free(paths[i]);
    free(paths);
    if (rc) {
        gen_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/* ---- reload and publication ------------------------------------------------------- */

static int files_differ(const struct segments_gen *a, const struct segments_gen *b)
{
    if (!a || !b || a->nfiles != b->nfiles)
        return 1;
    for (int i = 0; i < a->nfiles; i++)
        if (strcmp(a->files[i].path, b->files[i].path) || a->files[i].hash != b->files[i].hash ||
            a->files[i].ok != b->files[i].ok)
            return 1;
    return 0;
}

static void publish(struct segments_gen *g)
{
    g->seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&g_lock);
    struct segments_gen *old = g_cur;
    g_cur = g;
    pthread_mutex_unlock(&g_lock);
    segments_gen_release(old);
}

/* Called with segments_reload_mu held. */
int segments_reload_locked(struct app *app, int force, const char *over_path, const char *over_text,
                           const char *drop_path)
{
    struct segments_gen *old = segments_gen_acquire(), *g;
    int rc = build_gen(&app->cfg, old, over_path, over_text, &g, drop_path);
    if (rc) {
        segments_gen_release(old);
        log_error("segments: reload failed", "err=\"%s\"", err_str(rc));
        return -1;
    }
    int nerr = 0;
    for (int i = 0; i < g->nfiles; i++)
        if (g->files[i].error) {
            nerr++;
            log_warn("segment file has an error", "error=\"%s\"", g->files[i].error);
        }
    if (!force && !files_differ(old, g)) {
        segments_gen_release(old);
        gen_free(g);
        return nerr;
    }
    int changed = 0;
    if (app->store && !g_defs_only && (rc = assign_slots(app->store, g, &changed))) {
        log_error("segments: cannot record index slots, keeping the previous generation",
                  "err=\"%s\"", err_str(rc));
        segments_gen_release(old);
        gen_free(g);
        return nerr + 1;
    }
    segments_gen_release(old);
    publish(g);
    log_info("segments loaded", "segments=%d files=%d errors=%d", g->nseg, g->nfiles, nerr);
    if (changed)
        segments_builder_kick();
    return nerr;
}

int segments_reload(struct app *app, int force)
{
    pthread_mutex_lock(&segments_reload_mu);
    int n = segments_reload_locked(app, force, NULL, NULL, NULL);
    pthread_mutex_unlock(&segments_reload_mu);
    return n;
}

/* Validate a prospective file text against the loaded set (API writes):
 * the generation that would result, or an error naming the problem. */
int segments_try(struct app *app, const char *path, const char *text, struct segments_gen **out,
                 const char **error)
{
    struct segments_gen *old = segments_gen_acquire();
    int rc = build_gen(&app->cfg, old, path, text, out, NULL);
    segments_gen_release(old);
    *error = NULL;
    if (rc)
        return rc;
    for (int i = 0; i < (*out)->nfiles; i++)
        if (!strcmp((*out)->files[i].path, path) && (*out)->files[i].error)
            *error = (*out)->files[i].error;
    return 0;
}

void segments_gen_discard(struct segments_gen *g)
{
    gen_free(g);
}

/* ---- watching ------------------------------------------------------------------------ */

static int g_ifd = -1;
static struct event *g_iev, *g_debounce;

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    segments_reload(arg, 0);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    char buf[8192];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    struct timeval tv = { app->cfg.reload_debounce_ms / 1000,
                          (app->cfg.reload_debounce_ms % 1000) * 1000 };
    event_add(g_debounce, &tv);
}

void segments_attach(struct app *app, struct event_base *base)
{
    mkdir(app->cfg.segments_dir, 0755); /* so that it can be watched; the API writes here */
    g_ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (g_ifd < 0) {
        log_warn("inotify unavailable: segment files reload only through the API", "err=\"%s\"",
                 strerror(errno));
        return;
    }
    if (inotify_add_watch(g_ifd, app->cfg.segments_dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE) < 0)
        log_warn("cannot watch the segments directory", "dir=\"%s\" err=\"%s\"",
                 app->cfg.segments_dir, strerror(errno));
    g_iev = event_new(base, g_ifd, EV_READ | EV_PERSIST, on_inotify, app);
    g_debounce = evtimer_new(base, on_debounce, app);
    if (g_iev)
        event_add(g_iev, NULL);
}

/* ---- start and stop ------------------------------------------------------------------- */

int segments_start(struct app *app, int builder)
{
    g_defs_only = builder < 0;
    g_appp = app;
    g_cfg = &app->cfg;
    int n = segments_reload(app, 1);
    if (n < 0)
        return ERR_NOMEM;
    if (builder > 0) {
        segidx_view_build(app->store); /* on failure queries scan: not fatal */
        return segments_builder_start(app);
    }
    return 0;
}

void segments_stop(struct app *app)
{
    (void)app;
    segments_builder_stop();
    segbits_stop();
    if (g_iev)
        event_free(g_iev);
    if (g_debounce)
        event_free(g_debounce);
    g_iev = g_debounce = NULL;
    if (g_ifd >= 0)
        close(g_ifd);
    g_ifd = -1;
    pthread_mutex_lock(&g_lock);
    struct segments_gen *g = g_cur;
    g_cur = NULL;
    pthread_mutex_unlock(&g_lock);
    segments_gen_release(g);
}

struct app *segments_app(void)
{
    return g_appp;
}

/* ---- promod check ------------------------------------------------------------------------ */

static int has_component(const char *path, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = path; (p = strstr(p, name)); p += nl)
        if ((p == path || p[-1] == '/') && (p[nl] == '/' || p[nl] == 0))
            return 1;
    return 0;
}

int segments_is_segments_path(const struct config *cfg, const char *path)
{
    size_t l = strlen(cfg->segments_dir);
    while (l > 1 && cfg->segments_dir[l - 1] == '/')
        l--;
    return (!strncmp(path, cfg->segments_dir, l) && (path[l] == 0 || path[l] == '/')) ||
           has_component(path, "segments");
}

int segments_check_paths(const struct config *cfg, const char **paths, int n, int *files)
{
    char **list = NULL;
    int nl = 0, cap = 0, problems = 0;
    const char *defaults[1] = { cfg->segments_dir };
    if (!n) {
        paths = defaults;
        n = 1;
    }
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st)) {
            if (paths == defaults)
                continue; /* no segments directory: nothing to check */
            printf("%s:1: cannot read: %s\n", paths[i], strerror(errno));
            problems++;
            continue;
        }
        int k = 0;
        char **sub = S_ISDIR(st.st_mode) ? list_dir(paths[i], &k) : NULL;
        if (!S_ISDIR(st.st_mode)) {
            sub = malloc(sizeof *sub);
            if (sub && (sub[0] = strdup(paths[i])))
                k = 1;
        }
        for (int j = 0; j < k; j++) {
            if (nl == cap) {
                cap = cap ? cap * 2 : 32;
                char **nv = realloc(list, (size_t)cap * sizeof *nv);
                if (!nv)
                    break;
                list = nv;
            }
            list[nl++] = sub[j];
        }
        free(sub);
    }
    struct dset s;
    load_defs(cfg, list, nl, &s, NULL, NULL, NULL);
    for (int i = 0; i < s.n; i++)
        if (s.d[i].error) {
            printf("%s\n", s.d[i].error);
            problems++;
        }
    dset_free(&s);
    for (int i = 0; i < nl; i++)
        free(list[i]);
    free(list);
    if (files)
        *files = nl;
    return problems;
}

json_t *segments_known_ids(const struct config *cfg)
{
    int np;
    char **paths = list_dir(cfg->segments_dir, &np);
    struct dset s;
    load_defs(cfg, paths, np, &s, NULL, NULL, NULL);
    json_t *ids = json_array();
    for (int i = 0; i < s.n; i++)
        if (!s.d[i].error && s.d[i].id)
            json_array_append_new(ids, json_string(s.d[i].id));
    dset_free(&s);
    for (int i = 0; i < np; i++)
        free(paths[i]);
    free(paths);
    return ids;
}
