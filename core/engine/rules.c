/*
 * rules.c — loading and validating campaign files and channel plugins,
 * building and publishing ruleset generations, watching the directories,
 * and each worker's adoption of new generations.
 *
 * Why generations: a reload must never leave a worker with half a
 * ruleset, and a request must finish on the ruleset it started with.  An
 * immutable refcounted snapshot plus one pointer swap gives both without a
 * lock on the request path (the swap lock is taken once per adoption).
 */
#include "engine/rules.h"
#include "base/id.h"
#include "engine/content.h"
#include "base/app.h"
#include "base/clock.h"
#include "codec/codec.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "base/metrics.h"
#include "store/store.h"
#include "engine/tmpl.h"
#include "base/tz.h"
#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE_BYTES (1u << 20)
#define MAX_FILES 20000

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;   /* guards g_cur */
static pthread_mutex_t g_reload = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static struct rules_gen *g_cur;
static rules_source_filter_fn g_source_filter;               /* set once at start */
static rules_reload_hook_fn g_reload_hook;                   /* set once at start */
static uint64_t g_seq;                                       /* atomic: newest seq */
static __thread struct rules_worker *tl_rw;

static const char *status_names[CAMP_NSTATUS] = {
    "draft", "pending_approval", "approved", "active", "paused", "stopped", "archived" };

const char *rules_status_name(enum campaign_status s)
{
    return (unsigned)s < CAMP_NSTATUS ? status_names[s] : "?";
}

int rules_status_parse(const char *s)
{
    for (int i = 0; i < CAMP_NSTATUS; i++)
        if (s && !strcmp(s, status_names[i]))
            return i;
    return -1;
}

/* ===================================================================== */
/* generations                                                           */

static void camp_free_fields(struct rules_campaign *c)
{
    free(c->id);
    free(c->name);
    for (int j = 0; j < c->nplacements; j++)
        free(c->placements[j]);
    free(c->placements);
    for (int j = 0; j < c->nvariants; j++)
        free(c->variants[j].id);
    free(c->variants);
    if (c->trigger)
        json_decref(c->trigger);
    memset(c, 0, sizeof *c);
}

static void chan_free_fields(struct rules_channel *ch)
{
    free(ch->name);
    free(ch->consent);
    memset(ch, 0, sizeof *ch);
}

static void gen_free(struct rules_gen *g)
{
    for (int i = 0; i < g->nfiles; i++) {
        free(g->files[i].path);
        free(g->files[i].source);
        free(g->files[i].disk_source);
        free(g->files[i].error);
    }
    free(g->files);
    for (int i = 0; i < g->ncamps; i++)
        camp_free_fields(&g->camps[i]);
    free(g->camps);
    for (int i = 0; i < g->nchans; i++)
        chan_free_fields(&g->chans[i]);
    free(g->chans);
    for (int i = 0; i < 32; i++)
        free(g->by_channel[i]);
    for (int i = 0; i < g->nplacement_names; i++)
        free(g->placement_names[i]);
    free(g);
}

struct rules_gen *rules_gen_acquire(void)
{
    pthread_mutex_lock(&g_lock);
    struct rules_gen *g = g_cur;
    if (g)
        g->refs++;
    pthread_mutex_unlock(&g_lock);
    return g;
}

void rules_gen_release(struct rules_gen *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g_lock);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g_lock);
    if (last)
        gen_free(g);
}

static void gen_publish(struct rules_gen *g)
{
    pthread_mutex_lock(&g_lock);
    struct rules_gen *old = g_cur;
    g->refs = 1;
    g_cur = g;
    __atomic_store_n(&g_seq, g->seq, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_lock);
    rules_gen_release(old);
}

int rules_gen_find_campaign(const struct rules_gen *g, const char *id)
{
    for (int i = 0; g && i < g->ncamps; i++)
        if (!strcmp(g->camps[i].id, id))
            return i;
    return -1;
}

/* Is `now` inside the schedule (instants, days, hours in its zone)? */
int rules_schedule_open(const struct rules_schedule *s, int64_t now)
{
    if (s->starts && now < s->starts)
        return 0;
    if (s->ends && now > s->ends)
        return 0;
    if (s->days || s->hour_from >= 0) {
        struct tm tm;
        if (tz_local(s->tz, now, &tm))
            return 0;
        int wd = tm.tm_wday == 0 ? 7 : tm.tm_wday;
        if (s->days && !(s->days & (1u << wd)))
            return 0;
        if (s->hour_from >= 0) {
            int h = tm.tm_hour, a = s->hour_from, b = s->hour_to;
            int in = a <= b ? (h >= a && h < b) : (h >= a || h < b);
            if (!in)
                return 0;
        }
    }
    return 1;
}

uint64_t rules_gen_placement_bit(const struct rules_gen *g, const char *placement)
{
    for (int i = 0; g && i < g->nplacement_names; i++)
        if (!strcmp(g->placement_names[i], placement))
            return 1ULL << i;
    return 0;
}

int rules_gen_find_channel(const struct rules_gen *g, const char *name)
{
    for (int i = 0; g && i < g->nchans; i++)
        if (!strcmp(g->chans[i].name, name))
            return i;
    return -1;
}

/* ===================================================================== */
/* validation                                                            */

struct loc {
    char path[96];
    int line;
    int in_return;
};

struct vctx {
    const char *path;
    const char *src;
    size_t len;
    json_t *errors;
    int nerr;
    struct loc *locs;   /* field positions, built on the first error */
    int nlocs, caplocs, locs_built;
};

/* --- where is a field? -------------------------------------------------
 * Validation sees the returned table, which has no positions, yet every
 * error must say file:line.  A small Lua scanner (strings, comments, long
 * brackets, block keywords) walks the source once and records, for each
 * table field outside function bodies, its path ("variants[2].weight",
 * "schedule.ends", "caps.customer[1]") and line.  The table after `return`
 * wins over other top-level tables; a path that is not written out (a
 * default, a value built in a local) falls back to its nearest written
 * parent, and a field that is nowhere to be found reports line 1. */

enum { TK_EOF, TK_NAME, TK_STR, TK_NUM, TK_SYM };
struct tok {
    int type;
    const char *s;
    size_t n;
    int line;
};

/* At s[i] == '[': the level of a long bracket "[==[", or -1. */
static int long_level(const char *s, size_t len, size_t i)
{
    size_t j = i + 1;
    int lvl = 0;
    while (j < len && s[j] == '=') {
        lvl++;
        j++;
    }
    return j < len && s[j] == '[' ? lvl : -1;
}

static size_t skip_long(const char *s, size_t len, size_t i, int lvl, int *line)
{
    for (i += (size_t)lvl + 2; i < len; i++) {
        if (s[i] == '\n') {
            (*line)++;
        } else if (s[i] == ']') {
            size_t j = i + 1;
            int k = 0;
            while (j < len && s[j] == '=') {
                k++;
                j++;
            }
            if (k == lvl && j < len && s[j] == ']')
                return j + 1;
        }
    }
    return len;
}

static void lex(const char *s, size_t len, size_t *pos, int *line, struct tok *t)
{
    size_t i = *pos;
    for (;;) {
        while (i < len && isspace((unsigned char)s[i]))
            if (s[i++] == '\n')
                (*line)++;
        if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
            i += 2;
            int lvl = i < len && s[i] == '[' ? long_level(s, len, i) : -1;
            if (lvl >= 0)
                i = skip_long(s, len, i, lvl, line);
            else
                while (i < len && s[i] != '\n')
                    i++;
            continue;
        }
        break;
    }
    t->line = *line;
    t->s = s + i;
    t->n = 1;
    if (i >= len) {
        t->type = TK_EOF;
        t->n = 0;
        *pos = len;
        return;
    }
    unsigned char c = (unsigned char)s[i];
    size_t j = i;
    if (isalpha(c) || c == '_') {
        while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_'))
            j++;
        t->type = TK_NAME;
    } else if (isdigit(c) || (c == '.' && i + 1 < len && isdigit((unsigned char)s[i + 1]))) {
        while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '.'))
            j++;
        t->type = TK_NUM;
    } else if (c == '"' || c == '\'') {
        for (j = i + 1; j < len && s[j] != (char)c && s[j] != '\n'; j++)
            if (s[j] == '\\' && j + 1 < len && s[++j] == '\n')
                (*line)++;
        t->type = TK_STR;
        t->s = s + i + 1;
        t->n = j - i - 1;
        *pos = j < len ? j + 1 : len;
        return;
    } else if (c == '[' && long_level(s, len, i) >= 0) {
        j = skip_long(s, len, i, long_level(s, len, i), line);
        t->type = TK_STR;
        t->n = 0;
        *pos = j;
        return;
    } else {
        j = i + 1;
        if (j < len && s[j] == '=' && strchr("=~<>", c))
            j++; /* ==, ~=, <=, >=: not an assignment */
        t->type = TK_SYM;
    }
    t->n = j - i;
    *pos = j;
}

static int tok_is(const struct tok *t, int type, const char *text)
{
    return t->type == type && t->n == strlen(text) && !memcmp(t->s, text, t->n);
}

static void loc_add(struct vctx *v, const char *path, int line, int in_return)
{
    if (path[0] == '\1' || v->nlocs >= 100000)
        return; /* anonymous table (a call argument, a table inside a function) */
    if (v->nlocs == v->caplocs) {
        int cap = v->caplocs ? v->caplocs * 2 : 64;
        struct loc *n = realloc(v->locs, (size_t)cap * sizeof *n);
        if (!n)
            return;
        v->locs = n;
        v->caplocs = cap;
    }
    struct loc *l = &v->locs[v->nlocs++];
    snprintf(l->path, sizeof l->path, "%s", path);
    l->line = line;
    l->in_return = in_return;
}

#define LOC_DEPTH 64
struct lframe {
    int table;          /* 1 = table constructor, 0 = block (function, do, if, repeat) */
    int in_return;
    int pos;            /* positional items so far */
    int item_start;     /* the next token starts an item */
    char path[96];      /* this table's path ("" = the campaign table, "\1" = anonymous) */
    char key[96];       /* path of the current keyed item */
};

static void join_path(char *out, size_t cap, const char *base, const char *name, size_t nl, int idx)
{
    int n; /* a path longer than the buffer is cut: it only places error messages */
    if (base[0] == '\1')
        n = snprintf(out, cap, "\1");
    else if (name)
        n = snprintf(out, cap, "%s%s%.*s", base, base[0] ? "." : "", (int)nl, name);
    else
        n = snprintf(out, cap, "%s[%d]", base, idx);
    if (n < 0 || (size_t)n >= cap) /* checking the result keeps -O2 builds' */
        out[cap - 1] = 0;           /* -Wformat-truncation quiet */
}

static void build_locs(struct vctx *v)
{
    v->locs_built = 1;
    struct lframe *st = calloc(LOC_DEPTH, sizeof *st);
    if (!st)
        return;
    int sp = 0, line = 1;
    size_t pos = 0;
    struct tok p2 = { 0 }, p1 = { 0 }, t, nx;
    lex(v->src, v->len, &pos, &line, &t);
    while (t.type != TK_EOF) {
        lex(v->src, v->len, &pos, &line, &nx);
        struct lframe *top = sp ? &st[sp - 1] : NULL;
        int in_table = top && top->table;
        if (t.type == TK_NAME && (tok_is(&t, TK_NAME, "function") || tok_is(&t, TK_NAME, "do") ||
                                  tok_is(&t, TK_NAME, "if") || tok_is(&t, TK_NAME, "repeat"))) {
            if (in_table && top->item_start) {
                top->pos++;
                top->item_start = 0;
            }
            if (sp == LOC_DEPTH)
                break;
            st[sp++] = (struct lframe){ .table = 0 };
        } else if (tok_is(&t, TK_NAME, "end") || tok_is(&t, TK_NAME, "until")) {
            if (top && !top->table)
                sp--;
        } else if (tok_is(&t, TK_SYM, "{")) {
            struct lframe f = { .table = 1, .item_start = 1 };
            if (!top) {
                /* a top-level table: the campaign table after `return`, a
                 * local, or `c.variants = {` (then its path is "variants") */
                f.in_return = tok_is(&p1, TK_NAME, "return");
                if (tok_is(&p1, TK_SYM, "=") && p2.type == TK_NAME) {
                    const char *b = p2.s;
                    int dotted = b > v->src && b[-1] == '.';
                    snprintf(f.path, sizeof f.path, "%.*s", dotted ? (int)p2.n : 0, b);
                    if (!dotted)
                        f.path[0] = 0;
                }
            } else if (!top->table) {
                f.path[0] = '\1';
            } else if (top->item_start) {
                top->pos++;
                top->item_start = 0;
                join_path(f.path, sizeof f.path, top->path, NULL, 0, top->pos);
                loc_add(v, f.path, t.line, top->in_return);
                f.in_return = top->in_return;
            } else {
                snprintf(f.path, sizeof f.path, "%s", tok_is(&p1, TK_SYM, "=") ? top->key : "\1");
                f.in_return = top->in_return;
            }
            if (sp == LOC_DEPTH)
                break;
            st[sp++] = f;
        } else if (tok_is(&t, TK_SYM, "}")) {
            if (in_table)
                sp--;
        } else if (in_table) {
            if (tok_is(&t, TK_SYM, ",") || tok_is(&t, TK_SYM, ";")) {
                top->item_start = 1;
            } else if (top->item_start) {
                top->item_start = 0;
                if (t.type == TK_NAME && tok_is(&nx, TK_SYM, "=")) {
                    join_path(top->key, sizeof top->key, top->path, t.s, t.n, 0);
                    loc_add(v, top->key, t.line, top->in_return);
                } else if (tok_is(&t, TK_SYM, "[")) {
                    snprintf(top->key, sizeof top->key, "\1"); /* [expr] = value */
                } else {
                    char p[96];
                    join_path(p, sizeof p, top->path, NULL, 0, ++top->pos);
                    loc_add(v, p, t.line, top->in_return);
                }
            }
        }
        p2 = p1;
        p1 = t;
        t = nx;
    }
    free(st);
}

static int loc_find(struct vctx *v, const char *path)
{
    int any = 0;
    for (int i = 0; i < v->nlocs; i++)
        if (!strcmp(v->locs[i].path, path)) {
            if (v->locs[i].in_return)
                return v->locs[i].line;
            if (!any)
                any = v->locs[i].line;
        }
    return any;
}

/* Line of the field at `path`, or of its nearest written parent; 0 when
 * none is written in the source. */
static int find_line(struct vctx *v, const char *path)
{
    if (!v->locs_built)
        build_locs(v);
    char p[96];
    snprintf(p, sizeof p, "%s", path);
    for (;;) {
        int line = loc_find(v, p);
        if (line)
            return line;
        char *dot = strrchr(p, '.'), *br = strrchr(p, '[');
        char *cut = !dot ? br : !br ? dot : dot > br ? dot : br;
        if (!cut || cut == p)
            return 0;
        *cut = 0;
    }
}

/* Line of the campaign/plugin field `path` in a source (1 when not written). */
static int line_of(const char *src, size_t len, const char *path)
{
    struct vctx v = { .path = "", .src = src, .len = len };
    int line = find_line(&v, path);
    free(v.locs);
    return line ? line : 1;
}

int rules_line_of(const char *src, size_t len, const char *path)
{
    return line_of(src, len, path);
}

static void verr(struct vctx *v, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void verr(struct vctx *v, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = key ? find_line(v, key) : 0;
    char full[768];
    snprintf(full, sizeof full, "%s:%d: %s", v->path, line ? line : 1, msg);
    json_array_append_new(v->errors, json_string(full));
    v->nerr++;
}

/* A field path with an index: pathf(b, "variants[%d].weight", 2). */
static const char *pathf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *pathf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return buf;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

/* caps = { { 3, "7d" }, { 1, "1d" } }: table at the top of the stack */
static void parse_caps(lua_State *L, struct vctx *v, const char *what, struct rules_caps *out)
{
    char pb[96];
    out->n = 0;
    if (!lua_istable(L, -1)) {
        verr(v, what, "%s: expected a list like { { 3, \"7d\" } }", what);
        return;
    }
    int n = (int)lua_objlen(L, -1);
    if (n > RULES_MAX_WINDOWS) {
        verr(v, what, "%s: at most %d windows", what, RULES_MAX_WINDOWS);
        return;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        double lim = lua_tonumber(L, -2);
        const char *win = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        struct rules_cap *c = &out->w[out->n];
        if (lua_type(L, -2) != LUA_TNUMBER || lim < 0 || lim != (double)(long)lim || lim > 1e12) {
            verr(v, pathf(pb, sizeof pb, "%s[%d]", what, i),
                 "%s[%d]: the count must be a whole number >= 0", what, i);
        } else if (!win) {
            verr(v, pathf(pb, sizeof pb, "%s[%d]", what, i),
                 "%s[%d]: the window must be a string like \"7d\" or \"life\"", what, i);
        } else if (!strcmp(win, "life") || !strcmp(win, "lifetime")) {
            c->limit = (long)lim;
            c->secs = 0;
            c->unit = 'L';
            c->n = 0;
            snprintf(c->label, sizeof c->label, "%s", win);
            out->n++;
        } else {
            int64_t secs;
            size_t wl = strlen(win);
            char u = wl ? win[wl - 1] : 0;
            if (tz_parse_duration(win, &secs) || (u != 'h' && u != 'd' && u != 'w') ||
                secs > 366LL * 86400) {
                verr(v, pathf(pb, sizeof pb, "%s[%d]", what, i),
                     "%s[%d]: window \"%s\" is not N[hdw] (1h .. 366d) or \"life\"",
                     what, i, win);
            } else {
                c->limit = (long)lim;
                c->secs = secs;
                c->unit = u;
                c->n = (int)(secs / (u == 'h' ? 3600 : 86400));
                snprintf(c->label, sizeof c->label, "%s", win);
                out->n++;
            }
        }
        lua_pop(L, 3);
    }
}

static const char *camp_fields[] = { "id", "name", "channels", "placements", "priority", "schedule",
                                     "caps", "variants", "eligible", "score", "content", "throttle",
                                     "status", "trigger", "cost", "description", "owner", "tags",
                                     "audience", NULL };
static const char *plugin_fields[] = { "channel", "policy", "render", "deliver", "description",
                                       NULL };

static int in_list(const char *k, const char **list)
{
    for (; *list; list++)
        if (!strcmp(k, *list))
            return 1;
    return 0;
}

static void check_unknown(lua_State *L, struct vctx *v, const char **allowed, const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            verr(v, NULL, "%s: keys must be names", what);
        } else if (!in_list(lua_tostring(L, -2), allowed)) {
            const char *k = lua_tostring(L, -2);
            verr(v, k, "unknown field '%s' in the %s (typo?)", k, what);
        }
        lua_pop(L, 1);
    }
}

static int hook_field(lua_State *L, struct vctx *v, const char *name, unsigned bit, unsigned *hooks)
{
    lua_getfield(L, -1, name);
    int t = lua_type(L, -1);
    lua_pop(L, 1);
    if (t == LUA_TFUNCTION) {
        *hooks |= bit;
        return 1;
    }
    if (t != LUA_TNIL)
        verr(v, name, "%s must be a function", name);
    return 0;
}

/* `promod check`: the campaign directory the file being validated was
 * found in (default ids are relative to it); NULL = the server's rules_dir.
 * Only the single-threaded CLI sets it. */
static const char *g_id_root;

static void default_id(const char *path, char *out, size_t len)
{
    /* "rules/a/b.lua" → "a.b": path under rules/ without .lua, '/' → '.'.
     * The server's files are "<rules_dir>/...": strip that whole prefix (an
     * absolute rules_dir would otherwise leak into the id). */
    const char *p = path;
    const char *rd = g_id_root ? g_id_root : g_app ? g_app->cfg.rules_dir : NULL;
    size_t rl = rd ? strlen(rd) : 0;
    if (rl && !strncmp(path, rd, rl) && path[rl] == '/') {
        p = path + rl + 1;
        while (*p == '/')
            p++;
    } else {
        const char *slash = strchr(p, '/');
        p = slash ? slash + 1 : p;
    }
    snprintf(out, len, "%s", p);
    size_t n = strlen(out);
    if (n > 4 && !strcmp(out + n - 4, ".lua"))
        out[n - 4] = 0;
    for (char *q = out; *q; q++)
        if (*q == '/')
            *q = '.';
}

/* A model id field of the table on top (1-128 id characters), into out. */
static int model_id_field(lua_State *L, struct vctx *v, const char *key, const char *path,
                          char *out, size_t outlen)
{
    lua_getfield(L, -1, key);
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int ok = m && id_valid(m) && strlen(m) < outlen;
    if (ok)
        snprintf(out, outlen, "%s", m);
    else
        verr(v, path, "%s must be a model id (models/<id>.lua)", path);
    lua_pop(L, 1);
    return ok;
}

/* score = { model = "buy_7d", value = 25 | { model = "rev_90d" } } (table on top) */
static void parse_model_score(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "model") && strcmp(k, "value"))
            verr(v, "score", "unknown field '%s' in score (use model and value)", k);
        lua_pop(L, 1);
    }
    model_id_field(L, v, "model", "score.model", c->score_model, sizeof c->score_model);
    lua_getfield(L, -1, "value");
    c->score_value = 1;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        c->score_value = lua_tonumber(L, -1);
        if (!isfinite(c->score_value) || c->score_value < 0)
            verr(v, "score.value", "score.value must be a number >= 0 (what a response is worth)");
    } else if (lua_istable(L, -1)) {
        model_id_field(L, v, "model", "score.value.model", c->score_value_model,
                       sizeof c->score_value_model);
    } else if (!lua_isnil(L, -1)) {
        verr(v, "score.value", "score.value must be a number or { model = \"<value model>\" }");
    }
    lua_pop(L, 1);
}

/* audience = { model = "buy_7d", top = 1000 } or { model = ..., above = 0.3 } */
static void parse_audience(lua_State *L, struct vctx *v, struct rules_campaign *c)
{
    if (!lua_istable(L, -1)) {
        verr(v, "audience", "audience must be a table { model = \"id\", top = N } or "
             "{ model = \"id\", above = t }");
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "model") && strcmp(k, "top") && strcmp(k, "above"))
            verr(v, "audience", "unknown field '%s' in audience (use model with top or above)", k);
        lua_pop(L, 1);
    }
    model_id_field(L, v, "model", "audience.model", c->audience_model, sizeof c->audience_model);
    lua_getfield(L, -1, "top");
    int has_top = !lua_isnil(L, -1);
    if (has_top) {
        double n = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || n != floor(n) || n < 1 || n > 10000000)
            verr(v, "audience.top", "audience.top must be a whole number from 1 to 10000000");
        else
            c->audience_top = (long)n;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "above");
    int has_above = !lua_isnil(L, -1);
    if (has_above) {
        c->audience_above = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(c->audience_above))
            verr(v, "audience.above", "audience.above must be a number (the score a customer must "
                 "exceed)");
    }
    lua_pop(L, 1);
    if (has_top == has_above)
        verr(v, "audience", "audience needs exactly one of top (the N likeliest) or above (a "
             "score threshold)");
}

static const char *day_names[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };

static void parse_schedule(lua_State *L, struct vctx *v, struct rules_schedule *s)
{
    char pb[96];
    memset(s, 0, sizeof *s);
    s->hour_from = s->hour_to = -1;
    strcpy(s->tz, "UTC");
    if (lua_isnil(L, -1))
        return;
    if (!lua_istable(L, -1)) {
        verr(v, "schedule", "schedule must be a table { starts = ..., ends = ... }");
        return;
    }
    lua_getfield(L, -1, "tz");
    if (lua_type(L, -1) == LUA_TSTRING) {
        int off;
        if (tz_offset(lua_tostring(L, -1), 0, &off))
            verr(v, "schedule.tz", "schedule.tz: unknown time zone \"%s\"", lua_tostring(L, -1));
        else
            snprintf(s->tz, sizeof s->tz, "%s", lua_tostring(L, -1));
    } else if (!lua_isnil(L, -1)) {
        verr(v, "schedule.tz", "schedule.tz must be a zone name like \"Europe/Paris\"");
    }
    lua_pop(L, 1);
    static const char *ends[] = { "starts", "ends" };
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -1, ends[i]);
        if (lua_type(L, -1) == LUA_TSTRING) {
            int64_t t;
            if (tz_parse_iso8601(lua_tostring(L, -1), &t))
                verr(v, i ? "schedule.ends" : "schedule.starts", "schedule.%s: \"%s\" is not an ISO-8601 time like "
                                 "\"2026-03-01T00:00:00Z\"", ends[i], lua_tostring(L, -1));
            else if (i == 0)
                s->starts = t;
            else
                s->ends = t;
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            if (i == 0)
                s->starts = (int64_t)lua_tonumber(L, -1);
            else
                s->ends = (int64_t)lua_tonumber(L, -1);
        } else if (!lua_isnil(L, -1)) {
            verr(v, i ? "schedule.ends" : "schedule.starts", "schedule.%s must be an ISO-8601 string",
                 ends[i]);
        }
        lua_pop(L, 1);
    }
    if (s->starts && s->ends && s->ends <= s->starts)
        verr(v, "schedule.ends", "schedule.ends must be after schedule.starts");
    lua_getfield(L, -1, "days");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            int d = 0;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                d = (int)lua_tonumber(L, -1);
            } else if (lua_type(L, -1) == LUA_TSTRING) {
                for (int j = 0; j < 7; j++)
                    if (!strncasecmp(lua_tostring(L, -1), day_names[j], 3))
                        d = j + 1;
            }
            if (d < 1 || d > 7)
                verr(v, pathf(pb, sizeof pb, "schedule.days[%d]", i), "schedule.days[%d]: use 1-7 (Monday=1) or \"mon\"..\"sun\"", i);
            else
                s->days |= 1u << d;
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        verr(v, "schedule.days", "schedule.days must be a list like { \"mon\", \"tue\" }");
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "hours");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TNUMBER ||
            lua_tonumber(L, -2) < 0 || lua_tonumber(L, -2) > 23 || lua_tonumber(L, -1) < 0 ||
            lua_tonumber(L, -1) > 24)
            verr(v, "schedule.hours", "schedule.hours must be { from, to } with hours 0-24");
        else if ((int)lua_tonumber(L, -2) == (int)lua_tonumber(L, -1))
            verr(v, "schedule.hours", "schedule.hours { %d, %d } is an empty window (use { 0, 24 } for "
                 "all day)", (int)lua_tonumber(L, -2), (int)lua_tonumber(L, -1));
        else {
            s->hour_from = (int)lua_tonumber(L, -2);
            s->hour_to = (int)lua_tonumber(L, -1);
        }
        lua_pop(L, 2);
    } else if (!lua_isnil(L, -1)) {
        verr(v, "schedule.hours", "schedule.hours must be { from, to }");
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "starts") && strcmp(k, "ends") && strcmp(k, "days") && strcmp(k, "hours") &&
            strcmp(k, "tz"))
            verr(v, pathf(pb, sizeof pb, "schedule.%s", k), "unknown field '%s' in schedule", k);
        lua_pop(L, 1);
    }
}

/* Validate the campaign table at the top of the stack into *c. */
static void validate_campaign(lua_State *L, struct vctx *v, const char *const *chans, int nchans,
                              struct rules_campaign *c)
{
    char pb[96];
    memset(c, 0, sizeof *c);
    c->priority = 50;
    c->status = c->file_status = CAMP_ACTIVE;
    check_unknown(L, v, camp_fields, "campaign table");
    char idbuf[256];
    lua_getfield(L, -1, "id");
    if (lua_type(L, -1) == LUA_TSTRING) {
        snprintf(idbuf, sizeof idbuf, "%s", lua_tostring(L, -1));
        if (!id_valid(idbuf))
            verr(v, "id", "id \"%.64s\" must be 1-128 characters of A-Z a-z 0-9 _ - . : @", idbuf);
    } else if (lua_isnil(L, -1)) {
        default_id(v->path, idbuf, sizeof idbuf);
        if (!id_valid(idbuf))
            verr(v, NULL, "the file name gives the id \"%.64s\", which is not valid: set id = \"...\"",
                 idbuf);
    } else {
        verr(v, "id", "id must be a string");
        idbuf[0] = 0;
    }
    c->id = xstrdup(idbuf);
    lua_pop(L, 1);

    lua_getfield(L, -1, "name");
    if (lua_type(L, -1) == LUA_TSTRING)
        c->name = xstrdup(lua_tostring(L, -1));
    else if (!lua_isnil(L, -1))
        verr(v, "name", "name must be a string");
    if (!c->name)
        c->name = xstrdup(c->id);
    lua_pop(L, 1);

    lua_getfield(L, -1, "channels");
    if (!lua_istable(L, -1) || lua_objlen(L, -1) == 0) {
        verr(v, "channels", "channels must be a non-empty list like { \"web\" }");
    } else {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *ch = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int found = -1;
            for (int j = 0; ch && j < nchans; j++)
                if (!strcmp(chans[j], ch))
                    found = j;
            if (!ch)
                verr(v, pathf(pb, sizeof pb, "channels[%d]", i), "channels[%d] must be a string", i);
            else if (chans && found < 0)
                verr(v, pathf(pb, sizeof pb, "channels[%d]", i), "unknown channel \"%s\" (loaded plugins: %d; add plugins/%s.lua)",
                     ch, nchans, ch);
            else if (found >= 0)
                c->channels |= 1u << found;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "placements");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        c->placements = calloc((size_t)n + 1, sizeof(char *));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                verr(v, pathf(pb, sizeof pb, "placements[%d]", i), "placements[%d] must be a string",
                     i);
            else
                c->placements[c->nplacements++] = xstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        verr(v, "placements", "placements must be a list of strings");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "priority");
    if (lua_type(L, -1) == LUA_TNUMBER)
        c->priority = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        verr(v, "priority", "priority must be a number");
    lua_pop(L, 1);

    lua_getfield(L, -1, "status");
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (!strcmp(s, "draft"))
            c->file_status = CAMP_DRAFT;
        else if (!strcmp(s, "active"))
            c->file_status = CAMP_ACTIVE;
        else if (!strcmp(s, "paused"))
            c->file_status = CAMP_PAUSED;
        else
            verr(v, "status", "status in a file may be \"draft\", \"active\" or \"paused\"");
        c->status = c->file_status;
    } else if (!lua_isnil(L, -1)) {
        verr(v, "status", "status must be a string");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "schedule");
    parse_schedule(L, v, &c->sched);
    lua_pop(L, 1);

    lua_getfield(L, -1, "caps");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "customer");
        if (!lua_isnil(L, -1))
            parse_caps(L, v, "caps.customer", &c->cust_caps);
        lua_pop(L, 1);
        lua_getfield(L, -1, "total");
        if (!lua_isnil(L, -1))
            parse_caps(L, v, "caps.total", &c->total_caps);
        lua_pop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "customer") && strcmp(k, "total"))
                verr(v, pathf(pb, sizeof pb, "caps.%s", k),
                     "unknown field '%s' in caps (use customer or total)", k);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        verr(v, "caps", "caps must be a table { customer = ..., total = ... }");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "variants");
    int nv = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    if (nv == 0 || nv > RULES_MAX_VARIANTS) {
        verr(v, "variants", "variants must be a list of 1-%d { id = ..., weight = ..., content = {...} }",
             RULES_MAX_VARIANTS);
    } else {
        c->variants = calloc((size_t)nv, sizeof *c->variants);
        for (int i = 1; i <= nv; i++) {
            lua_rawgeti(L, -1, i);
            if (!lua_istable(L, -1)) {
                verr(v, pathf(pb, sizeof pb, "variants[%d]", i), "variants[%d] must be a table", i);
                lua_pop(L, 1);
                continue;
            }
            struct rules_variant *var = &c->variants[c->nvariants];
            lua_getfield(L, -1, "id");
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
                verr(v, pathf(pb, sizeof pb, "variants[%d].id", i), "variants[%d].id must be a string",
                     i);
                lua_pop(L, 2);
                continue;
            }
            var->id = xstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
            json_t *idj = json_string(var->id); /* offers carry it as JSON text */
            if (!idj || !var->id[0] || strlen(var->id) > 128)
                verr(v, pathf(pb, sizeof pb, "variants[%d].id", i),
                     "variants[%d].id must be 1-128 bytes of UTF-8 text", i);
            json_decref(idj);
            for (int j = 0; j < c->nvariants; j++)
                if (!strcmp(c->variants[j].id, var->id))
                    verr(v, pathf(pb, sizeof pb, "variants[%d].id", i),
                         "variants[%d]: duplicate id \"%s\"", i, var->id);
            lua_getfield(L, -1, "weight");
            var->weight = 1;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                var->weight = lua_tonumber(L, -1);
                if (!(var->weight > 0) || var->weight > 1e9)
                    verr(v, pathf(pb, sizeof pb, "variants[%d].weight", i),
                         "variants[%d].weight must be a positive number", i);
            } else if (!lua_isnil(L, -1)) {
                verr(v, pathf(pb, sizeof pb, "variants[%d].weight", i),
                     "variants[%d].weight must be a number", i);
            }
            lua_pop(L, 1);
            lua_getfield(L, -1, "content");
            if (!lua_istable(L, -1)) {
                verr(v, pathf(pb, sizeof pb, "variants[%d].content", i),
                     "variants[%d].content must be a table of fields", i);
            } else {
                /* templates must parse */
                lua_pushnil(L);
                while (lua_next(L, -2)) {
                    if (lua_type(L, -1) == LUA_TSTRING) {
                        size_t tl;
                        const char *t = lua_tolstring(L, -1, &tl);
                        char terr[128];
                        const char *fk = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
                        if (tmpl_check(t, tl, terr, sizeof terr))
                            verr(v, pathf(pb, sizeof pb, "variants[%d].content.%s", i, fk),
                                 "variants[%d].content.%s: %s", i, fk, terr);
                    }
                    lua_pop(L, 1);
                }
                /* content must be representable as JSON */
                int jerr = 0;
                json_t *j = luavm_to_json(L, -1, &jerr);
                if (!j)
                    verr(v, pathf(pb, sizeof pb, "variants[%d].content", i),
                         "variants[%d].content holds a value JSON cannot carry "
                                       "(function, NaN, cycle)", i);
                json_decref(j);
            }
            lua_pop(L, 1);
            c->weight_sum += var->weight;
            c->nvariants++;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    if (!hook_field(L, v, "eligible", RULES_HOOK_ELIGIBLE, &c->hooks)) {
        lua_getfield(L, -1, "eligible");
        if (lua_isnil(L, -1))
            verr(v, NULL, "eligible is required: eligible = function(p, ctx) return true end");
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "score");
    int score_table = lua_istable(L, -1);
    if (score_table)
        parse_model_score(L, v, c);
    lua_pop(L, 1);
    if (!score_table)
        hook_field(L, v, "score", RULES_HOOK_SCORE, &c->hooks);
    lua_getfield(L, -1, "audience");
    if (!lua_isnil(L, -1))
        parse_audience(L, v, c);
    lua_pop(L, 1);
    lua_getfield(L, -1, "trigger");
    if (c->audience_top && !lua_isnil(L, -1))
        verr(v, "audience.top", "audience.top ranks a whole audience at launch; a triggered "
             "campaign sends one event at a time: use audience.above");
    lua_pop(L, 1);
    hook_field(L, v, "content", RULES_HOOK_CONTENT, &c->hooks);
    hook_field(L, v, "throttle", RULES_HOOK_THROTTLE, &c->hooks);

    lua_getfield(L, -1, "trigger");
    if (lua_istable(L, -1)) {
        int jerr;
        c->trigger = luavm_to_json(L, -1, &jerr);
        const char *ev = json_string_value(json_object_get(c->trigger, "event"));
        const char *delay = json_string_value(json_object_get(c->trigger, "delay"));
        int64_t secs;
        if (!ev)
            verr(v, "trigger.event", "trigger.event must name an event type");
        if (delay && tz_parse_duration(delay, &secs))
            verr(v, "trigger.delay", "trigger.delay \"%s\" is not a duration like \"1h\"", delay);
    } else if (!lua_isnil(L, -1)) {
        verr(v, "trigger", "trigger must be a table { event = ..., delay = ..., cancel_on = ... }");
    }
    lua_pop(L, 1);

    lua_getfield(L, -1, "cost");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "per_send");
        c->cost_per_send = lua_tonumber(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, -1, "per_impression");
        c->cost_per_impression = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (c->cost_per_send < 0 || c->cost_per_impression < 0)
            verr(v, "cost", "cost values must be >= 0");
    } else if (!lua_isnil(L, -1)) {
        verr(v, "cost", "cost must be a table { per_send = ..., per_impression = ... }");
    }
    lua_pop(L, 1);
}

static void validate_plugin(lua_State *L, struct vctx *v, struct rules_channel *ch)
{
    char pb[96];
    memset(ch, 0, sizeof *ch);
    ch->quiet_from = ch->quiet_to = -1;
    check_unknown(L, v, plugin_fields, "plugin table");
    lua_getfield(L, -1, "channel");
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!name || !id_valid(name) || strlen(name) > 32)
        verr(v, "channel", "channel must be a short name like \"email\"");
    ch->name = xstrdup(name ? name : "");
    lua_pop(L, 1);
    lua_getfield(L, -1, "policy");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "customer");
        if (!lua_isnil(L, -1))
            parse_caps(L, v, "policy.customer", &ch->policy);
        lua_pop(L, 1);
        lua_getfield(L, -1, "quiet_hours");
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            double a = lua_tonumber(L, -2), b = lua_tonumber(L, -1);
            if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TNUMBER || a < 0 ||
                a > 23 || b < 0 || b > 23)
                verr(v, "policy.quiet_hours", "policy.quiet_hours must be { from, to } hours 0-23");
            else {
                ch->quiet_from = (int)a;
                ch->quiet_to = (int)b;
            }
            lua_pop(L, 2);
        } else if (!lua_isnil(L, -1)) {
            verr(v, "policy.quiet_hours", "policy.quiet_hours must be { from, to }");
        }
        lua_pop(L, 1);
        lua_getfield(L, -1, "consent");
        if (lua_type(L, -1) == LUA_TSTRING)
            ch->consent = xstrdup(lua_tostring(L, -1));
        else if (!lua_isnil(L, -1))
            verr(v, "policy.consent", "policy.consent must name a consent key like \"email\"");
        lua_pop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "customer") && strcmp(k, "quiet_hours") && strcmp(k, "consent"))
                verr(v, pathf(pb, sizeof pb, "policy.%s", k), "unknown field '%s' in policy", k);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        verr(v, "policy", "policy must be a table");
    }
    lua_pop(L, 1);
    hook_field(L, v, "render", RULES_HOOK_RENDER, &ch->hooks);
    ch->outbound = hook_field(L, v, "deliver", RULES_HOOK_DELIVER, &ch->hooks);
}

/* Load + validate one source in `vm`.  Leaves the stack as found. */
static int validate_in(struct luavm *vm, const char *path, enum rules_kind kind, const char *src,
                       size_t len, const char *const *chans, int nchans, json_t *errors,
                       struct rules_campaign *camp, struct rules_channel *chan)
{
    lua_State *L = luavm_state(vm);
    int top = lua_gettop(L);
    struct vctx v = { .path = path, .src = src, .len = len, .errors = errors };
    if (camp)
        memset(camp, 0, sizeof *camp);
    if (chan)
        memset(chan, 0, sizeof *chan);
    char err[1024];
    if (len > MAX_FILE_BYTES) {
        verr(&v, NULL, "file larger than %u bytes", MAX_FILE_BYTES);
        return ERR_TOOBIG;
    }
    if (memchr(src, 0, len)) {
        verr(&v, NULL, "file contains a NUL byte (binary files are not accepted)");
        return ERR_INVAL;
    }
    if (luavm_load_chunk(vm, path, src, len, err, sizeof err)) {
        /* errors without a position (memory limit, binary chunk) still get
         * the file:line: shape every consumer parses */
        size_t pl = strlen(path);
        if (!strncmp(err, path, pl) && !strncmp(err + pl, ": ", 2))
            verr(&v, NULL, "%s", err + pl + 2);
        else if (strncmp(err, path, pl) != 0 && !strstr(err, ".lua:"))
            verr(&v, NULL, "%s", err);
        else
            json_array_append_new(errors, json_string(err));
        return ERR_LUA;
    }
    if (!lua_istable(L, -1)) {
        verr(&v, NULL, "the file must return a table (return { ... })");
        lua_settop(L, top);
        return ERR_INVAL;
    }
    struct rules_campaign tmpc;
    struct rules_channel tmpch;
    if (kind == RULES_CAMPAIGN)
        validate_campaign(L, &v, chans, nchans, camp ? camp : &tmpc);
    else
        validate_plugin(L, &v, chan ? chan : &tmpch);
    lua_settop(L, top);
    free(v.locs);
    if (!camp && kind == RULES_CAMPAIGN)
        camp_free_fields(&tmpc);
    if (!chan && kind == RULES_PLUGIN)
        chan_free_fields(&tmpch);
    return v.nerr ? ERR_INVAL : 0;
}

/* Instruction budget of `promod check`'s scratch states (its config's). */
static long g_check_budget;

/* A throwaway sandbox for validation.  Loading a file there gets the same
 * instruction budget as loading it in a worker (the config's
 * instruction_budget), so a file that validates also loads where it runs. */
static struct luavm *scratch_vm(const char *lib_dir)
{
    long budget = g_check_budget ? g_check_budget : g_app ? g_app->cfg.instr_budget : 0;
    struct luavm_opts o = { .mem_limit = 512u << 20, .instr_budget = budget, .lib_dir = lib_dir };
    struct luavm *vm;
    return luavm_new(&o, &vm) ? NULL : vm;
}

int rules_validate_campaign(const char *path, const char *src, size_t len,
                            const char *const *chans, int nchans, const char *lib_dir,
                            json_t *errors, struct rules_campaign *out)
{
    memset(out, 0, sizeof *out);
    struct luavm *vm = scratch_vm(lib_dir);
    if (!vm) {
        json_array_append_new(errors, json_string("out of memory"));
        return ERR_NOMEM;
    }
    int rc = validate_in(vm, path, RULES_CAMPAIGN, src, len, chans, nchans, errors, out, NULL);
    if (rc)
        camp_free_fields(out);
    luavm_free(vm);
    return rc;
}

void rules_campaign_free(struct rules_campaign *c) { camp_free_fields(c); }

void rules_set_source_filter(rules_source_filter_fn fn) { g_source_filter = fn; }

void rules_set_reload_hook(rules_reload_hook_fn fn) { g_reload_hook = fn; }

int rules_validate_source(const char *path, enum rules_kind kind, const char *src, size_t len,
                          const char *const *chans, int nchans, const char *lib_dir,
                          json_t *errors)
{
    struct luavm *vm = scratch_vm(lib_dir);
    if (!vm) {
        json_array_append_new(errors, json_string("out of memory"));
        return ERR_NOMEM;
    }
    int rc = validate_in(vm, path, kind, src, len, chans, nchans, errors, NULL, NULL);
    luavm_free(vm);
    return rc;
}

/* ===================================================================== */
/* scanning                                                              */

struct flist {
    char **paths;
    enum rules_kind *kinds;
    int n, cap;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qsort, minus the undefined behaviour of a NULL base for an empty list */
static void sort_paths(char **paths, int n)
{
    if (n > 1)
        qsort(paths, (size_t)n, sizeof *paths, cmp_str);
}

static void flist_add(struct flist *l, const char *path, enum rules_kind k)
{
    if (l->n >= MAX_FILES)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->paths = realloc(l->paths, (size_t)l->cap * sizeof *l->paths);
        l->kinds = realloc(l->kinds, (size_t)l->cap * sizeof *l->kinds);
        if (!l->paths || !l->kinds)
            abort();
    }
    l->paths[l->n] = xstrdup(path);
    l->kinds[l->n] = k;
    l->n++;
}

static void flist_free(struct flist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
    free(l->kinds);
}

/* Collect *.lua below dir; `recurse` for rules/ (skipping rules/lib). */
static void scan_dir(const char *dir, const char *skip, int recurse, enum rules_kind k,
                     struct flist *out, int depth)
{
    if (depth > 16)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* hidden and editor temp files (.#x.lua, .x.lua.swp) */
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (recurse && (!skip || strcmp(p, skip) != 0))
                scan_dir(p, skip, recurse, k, out, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            size_t n = strlen(e->d_name);
            if (n > 4 && !strcmp(e->d_name + n - 4, ".lua"))
                flist_add(out, p, k);
        }
    }
    closedir(d);
}

static char *read_file(const char *path, size_t *len, int *rc)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = -errno;
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size > (off_t)MAX_FILE_BYTES) {
        fclose(f);
        *rc = ERR_TOOBIG;
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        *rc = ERR_NOMEM;
        return NULL;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    buf[n] = 0;
    *len = n;
    *rc = 0;
    return buf;
}

static uint32_t lib_hash(const char *lib_dir)
{
    struct flist l = { 0 };
    scan_dir(lib_dir, NULL, 1, RULES_CAMPAIGN, &l, 0);
    sort_paths(l.paths, l.n);
    uint32_t h = HASH_FNV_INIT;
    for (int i = 0; i < l.n; i++) {
        size_t len;
        int rc;
        char *s = read_file(l.paths[i], &len, &rc);
        h = hash_fnv1a(l.paths[i], strlen(l.paths[i]), h);
        if (s)
            h = hash_fnv1a(s, len, h);
        free(s);
    }
    flist_free(&l);
    return h;
}

/* ===================================================================== */
/* building a generation                                                 */

static enum campaign_status stored_status(struct store_txn *t, const char *id, int *found)
{
    *found = 0;
    const void *v;
    size_t vl;
    if (!t || store_get(t, STORE_CAMPAIGNS, id, strlen(id), &v, &vl))
        return CAMP_ACTIVE;
    int e;
    json_t *o = codec_msgpack_to_json(v, vl, &e);
    int s = rules_status_parse(json_string_value(json_object_get(o, "status")));
    json_decref(o);
    if (s < 0)
        return CAMP_ACTIVE;
    *found = 1;
    return (enum campaign_status)s;
}

static void copy_camp(struct rules_campaign *dst, const struct rules_campaign *src)
{
    *dst = *src;
}

/* Deep copy of campaign or channel `oldfile` of generation `prev` into
 * *camp / *chan for generation `g` (whose channels are all known by the
 * time campaigns are built).  Returns 1 when there was one to keep. */
static int keep_parsed(const struct rules_gen *prev, const struct rules_gen *g, int oldfile,
                       enum rules_kind kind, struct rules_campaign *camp, struct rules_channel *chan)
{
    if (kind == RULES_PLUGIN) {
        for (int i = 0; i < prev->nchans; i++) {
            const struct rules_channel *o = &prev->chans[i];
            if (o->file != oldfile || rules_gen_find_channel(g, o->name) >= 0 || g->nchans >= 32)
                continue;
            *chan = *o;
            chan->name = xstrdup(o->name);
            chan->consent = o->consent ? xstrdup(o->consent) : NULL;
            return 1;
        }
        return 0;
    }
    for (int i = 0; i < prev->ncamps; i++) {
        const struct rules_campaign *o = &prev->camps[i];
        if (o->file != oldfile || rules_gen_find_campaign(g, o->id) >= 0)
            continue;
        unsigned bits = 0;
        for (int b = 0; b < prev->nchans; b++) {
            int k = (o->channels & (1u << b)) ? rules_gen_find_channel(g, prev->chans[b].name) : -1;
            if (k >= 0)
                bits |= 1u << k;
        }
        if (!bits)
            return 0;
        *camp = *o;
        camp->channels = bits;
        camp->id = xstrdup(o->id);
        camp->name = xstrdup(o->name);
        camp->placements = calloc((size_t)o->nplacements + 1, sizeof(char *));
        camp->variants = calloc((size_t)o->nvariants + 1, sizeof *camp->variants);
        if (!camp->placements || !camp->variants)
            abort();
        for (int j = 0; j < o->nplacements; j++)
            camp->placements[j] = xstrdup(o->placements[j]);
        for (int j = 0; j < o->nvariants; j++) {
            camp->variants[j] = o->variants[j];
            camp->variants[j].id = xstrdup(o->variants[j].id);
        }
        camp->trigger = o->trigger ? json_deep_copy(o->trigger) : NULL;
        camp->status = camp->file_status;
        return 1;
    }
    return 0;
}

/* Build a new generation from disk, reusing the previous one's last good
 * sources for files that fail.  Errors are logged. Returns error count. */
static struct rules_gen *gen_build(struct app *app, int *nerrors)
{
    const struct config *cfg = &app->cfg;
    struct rules_gen *prev = rules_gen_acquire();
    struct rules_gen *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    uint64_t t0 = clock_mono_ns();
    char lib_dir[4096];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", cfg->rules_dir);
    uint32_t libh = lib_hash(lib_dir);
    struct flist fl = { 0 };
    scan_dir(cfg->plugins_dir, NULL, 0, RULES_PLUGIN, &fl, 0);
    int nplug = fl.n;
    scan_dir(cfg->rules_dir, lib_dir, 1, RULES_CAMPAIGN, &fl, 0);
    sort_paths(fl.paths, nplug);
    sort_paths(fl.paths + nplug, fl.n - nplug);
    g->files = calloc((size_t)fl.n + 1, sizeof *g->files);
    g->camps = calloc((size_t)fl.n + 1, sizeof *g->camps);
    g->chans = calloc(32, sizeof *g->chans);
    struct luavm *vm = scratch_vm(lib_dir);
    if (!g->files || !g->camps || !g->chans || !vm)
        abort();
    const char *chan_names[32];
    int errs = 0;
    struct store_txn *st = NULL;
    if (app->store)
        store_rtxn_begin(app->store, &st);
    for (int i = 0; i < fl.n; i++) {
        enum rules_kind kind = fl.kinds[i];
        if (kind == RULES_CAMPAIGN && i == nplug) {
            for (int j = 0; j < g->nchans; j++)
                chan_names[j] = g->chans[j].name;
        }
        struct rules_file *f = &g->files[g->nfiles];
        f->path = xstrdup(fl.paths[i]);
        f->kind = kind;
        size_t len = 0;
        int rc;
        char *src = read_file(fl.paths[i], &len, &rc);
        const struct rules_file *old = NULL;
        for (int j = 0; prev && j < prev->nfiles; j++)
            if (!strcmp(prev->files[j].path, f->path)) {
                old = &prev->files[j];
                break;
            }
        json_t *errors = json_array();
        struct rules_campaign camp;
        struct rules_channel chan;
        int ok = 0;
        if (!src) {
            char m[600];
            snprintf(m, sizeof m, "%s:1: cannot read: %s", f->path, err_str(rc));
            json_array_append_new(errors, json_string(m));
        } else {
            f->disk_hash = hash_fnv1a(src, len, libh);
            ok = validate_in(vm, f->path, kind, src, len, chan_names, g->nchans, errors,
                             kind == RULES_CAMPAIGN ? &camp : NULL,
                             kind == RULES_PLUGIN ? &chan : NULL) == 0;
            if (ok && kind == RULES_CAMPAIGN && rules_gen_find_campaign(g, camp.id) >= 0) {
                char m[600];
                snprintf(m, sizeof m, "%s:%d: duplicate campaign id \"%s\" (also in %s)", f->path,
                         line_of(src, len, "id"),
                         camp.id, g->files[g->camps[rules_gen_find_campaign(g, camp.id)].file].path);
                json_array_append_new(errors, json_string(m));
                ok = 0;
            }
            if (ok && kind == RULES_PLUGIN &&
                (rules_gen_find_channel(g, chan.name) >= 0 || g->nchans >= 32)) {
                char m[600];
                snprintf(m, sizeof m, "%s:%d: duplicate channel \"%s\" (or more than 32 channels)",
                         f->path, line_of(src, len, "channel"), chan.name);
                json_array_append_new(errors, json_string(m));
                ok = 0;
            }
            if (!ok) {
                if (kind == RULES_CAMPAIGN)
                    camp_free_fields(&camp);
                else
                    chan_free_fields(&chan);
            }
            /* The source filter (campaigns.c, require_approval) may serve an
             * approved version instead of a valid file still waiting for
             * approval; the file's own text is kept as disk_source. */
            if (ok && kind == RULES_CAMPAIGN && g_source_filter) {
                size_t hl = 0;
                char *held = g_source_filter(st, camp.id, f->path, src, len, &hl);
                if (held) {
                    struct rules_campaign hc;
                    json_t *e2 = json_array();
                    if (validate_in(vm, f->path, kind, held, hl, chan_names, g->nchans, e2, &hc,
                                    NULL) == 0 && !strcmp(hc.id, camp.id)) {
                        camp_free_fields(&camp);
                        camp = hc;
                        f->disk_source = src;
                        f->disk_source_len = len;
                        src = held;
                        len = hl;
                    } else {
                        camp_free_fields(&hc);
                        free(held);
                        log_warn("approved version does not validate any more; serving the file",
                                 "file=\"%s\"", f->path);
                    }
                    json_decref(e2);
                }
            }
        }
        if (ok) {
            f->ok = 1;
            f->source = src;
            f->source_len = len;
            f->hash = f->disk_source ? hash_fnv1a(src, len, libh) : f->disk_hash;
            f->loaded_at = old && old->hash == f->hash ? old->loaded_at : clock_now();
            src = NULL;
        } else {
            errs++;
            char *e = json_dumps(errors, JSON_COMPACT);
            const char *first = json_string_value(json_array_get(errors, 0));
            f->error = xstrdup(first ? first : "invalid");
            log_warn("rule file rejected", "file=\"%s\" errors=%s kept_previous=%s", f->path,
                     e ? e : "[]", old && old->source ? "yes" : "no");
            free(e);
            /* keep the previous good version live */
            if (old && old->source) {
                json_t *e2 = json_array();
                int ok2 = validate_in(vm, f->path, kind, old->source, old->source_len, chan_names,
                                      g->nchans, e2, kind == RULES_CAMPAIGN ? &camp : NULL,
                                      kind == RULES_PLUGIN ? &chan : NULL) == 0;
                json_decref(e2);
                if (ok2 && kind == RULES_CAMPAIGN && rules_gen_find_campaign(g, camp.id) >= 0)
                    ok2 = 0;
                if (!ok2) {
                    if (kind == RULES_CAMPAIGN)
                        camp_free_fields(&camp);
                    else
                        chan_free_fields(&chan);
                }
                /* The previous version may not validate any more for a
                 * reason outside the file: a rules/lib module it requires
                 * was broken or changed, a plugin went away.  The workers
                 * still run it (its hash is unchanged, so they keep the
                 * compiled table and the modules it captured): keep its
                 * parsed form from the previous generation, channels
                 * remapped by name; with no channel left it goes. */
                if (!ok2)
                    ok2 = keep_parsed(prev, g, (int)(old - prev->files), kind, &camp, &chan);
                if (ok2) {
                    f->source = malloc(old->source_len + 1);
                    memcpy(f->source, old->source, old->source_len + 1);
                    f->source_len = old->source_len;
                    f->hash = old->hash;
                    f->loaded_at = old->loaded_at;
                    ok = 1;
                }
            }
        }
        json_decref(errors);
        free(src);
        if (ok && kind == RULES_CAMPAIGN) {
            camp.file = g->nfiles;
            int found;
            enum campaign_status s = stored_status(st, camp.id, &found);
            if (found)
                camp.status = s;
            copy_camp(&g->camps[g->ncamps++], &camp);
        } else if (ok && kind == RULES_PLUGIN) {
            chan.file = g->nfiles;
            chan.settings = cfg->channels ? json_object_get(cfg->channels, chan.name) : NULL;
            g->chans[g->nchans++] = chan;
        }
        g->nfiles++;
    }
    store_txn_end(st);
    luavm_free(vm);
    flist_free(&fl);
    /* candidate index: per channel, campaigns by priority (desc), then id */
    for (int ch = 0; ch < g->nchans; ch++) {
        int *list = malloc(sizeof(int) * (size_t)(g->ncamps + 1));
        int n = 0;
        for (int i = 0; i < g->ncamps; i++)
            if (g->camps[i].channels & (1u << ch))
                list[n++] = i;
        for (int a = 1; a < n; a++) { /* insertion sort: small n, stable */
            int x = list[a], b = a - 1;
            while (b >= 0 && (g->camps[list[b]].priority < g->camps[x].priority ||
                              (g->camps[list[b]].priority == g->camps[x].priority &&
                               strcmp(g->camps[list[b]].id, g->camps[x].id) > 0))) {
                list[b + 1] = list[b];
                b--;
            }
            list[b + 1] = x;
        }
        g->by_channel[ch] = list;
        g->nby_channel[ch] = n;
    }
    /* placements as bits, so decide filters with a mask test, not strcmp */
    for (int i = 0; i < g->ncamps; i++) {
        struct rules_campaign *c = &g->camps[i];
        uint64_t mask = 0;
        for (int j = 0; j < c->nplacements; j++) {
            int k;
            for (k = 0; k < g->nplacement_names; k++)
                if (!strcmp(g->placement_names[k], c->placements[j]))
                    break;
            if (k == g->nplacement_names && k < 64)
                g->placement_names[g->nplacement_names++] = xstrdup(c->placements[j]);
            mask |= k < 64 ? (1ULL << k) : 0;
        }
        /* more than 64 distinct names: such a campaign falls back to "any" */
        c->placement_mask = c->nplacements && mask ? mask : 0;
    }
    g->built_at = clock_now();
    g->lib_hash = libh;
    g->build_ms = (double)(clock_mono_ns() - t0) / 1e6;
    g->seq = (prev ? prev->seq : 0) + 1;
    rules_gen_release(prev);
    *nerrors = errs;
    return g;
}

/* Did anything users can see change between two generations? */
static int gen_same(const struct rules_gen *a, const struct rules_gen *b)
{
    if (!a || !b || a->nfiles != b->nfiles || a->ncamps != b->ncamps)
        return 0;
    for (int i = 0; i < a->nfiles; i++)
        if (strcmp(a->files[i].path, b->files[i].path) || a->files[i].hash != b->files[i].hash ||
            a->files[i].disk_hash != b->files[i].disk_hash || a->files[i].ok != b->files[i].ok)
            return 0;
    for (int i = 0; i < a->ncamps; i++)
        if (a->camps[i].status != b->camps[i].status)
            return 0;
    return 1;
}

static _Atomic long g_reloads, g_reload_errors;

int rules_reload(struct app *app, int force)
{
    pthread_mutex_lock(&g_reload);
    int nerr;
    struct rules_gen *g = gen_build(app, &nerr);
    struct rules_gen *cur = rules_gen_acquire();
    int same = gen_same(cur, g);
    rules_gen_release(cur);
    if (same && !force) {
        gen_free(g);
    } else {
        log_info("rules loaded", "generation=%llu files=%d campaigns=%d channels=%d errors=%d ms=%.1f",
                 (unsigned long long)g->seq, g->nfiles, g->ncamps, g->nchans, nerr, g->build_ms);
        gen_publish(g);
        g_reloads++;
    }
    if (nerr)
        g_reload_errors++;
    pthread_mutex_unlock(&g_reload);
    if (!(same && !force) && g_reload_hook)
        g_reload_hook(app); /* outside the lock: the hook may write the store */
    return nerr;
}

void rules_refresh_status(struct app *app) { rules_reload(app, 0); }

json_t *rules_status_json(void)
{
    struct rules_gen *g = rules_gen_acquire();
    json_t *o = json_object();
    json_t *files = json_array();
    for (int i = 0; g && i < g->nfiles; i++) {
        const struct rules_file *f = &g->files[i];
        json_t *x = json_object();
        char hb[16], iso[32];
        json_object_set_new(x, "file", json_string(f->path));
        json_object_set_new(x, "kind", json_string(f->kind == RULES_PLUGIN ? "plugin" : "campaign"));
        json_object_set_new(x, "status", json_string(f->ok ? "ok" : f->source ? "error_previous_live"
                                                                               : "error"));
        if (f->source) {
            snprintf(hb, sizeof hb, "%08x", f->hash);
            json_object_set_new(x, "version", json_string(hb));
            tz_format_iso8601(f->loaded_at, iso, sizeof iso);
            json_object_set_new(x, "loaded_at", json_string(iso));
        }
        if (f->error) {
            json_t *e = json_object();
            json_object_set_new(e, "message", json_string(f->error));
            /* "path:line: message" → line */
            const char *p = f->error + strlen(f->path);
            if (!strncmp(f->error, f->path, strlen(f->path)) && *p == ':')
                json_object_set_new(e, "line", json_integer(atoi(p + 1)));
            json_object_set_new(x, "error", e);
        }
        for (int c = 0; c < g->ncamps; c++)
            if (g->camps[c].file == i)
                json_object_set_new(x, "campaign_id", json_string(g->camps[c].id));
        for (int c = 0; c < g->nchans; c++)
            if (g->chans[c].file == i)
                json_object_set_new(x, "channel", json_string(g->chans[c].name));
        json_array_append_new(files, x);
    }
    json_object_set_new(o, "generation", json_integer(g ? (json_int_t)g->seq : 0));
    json_object_set_new(o, "campaigns", json_integer(g ? g->ncamps : 0));
    json_object_set_new(o, "channels", json_integer(g ? g->nchans : 0));
    json_object_set_new(o, "build_ms", json_real(g ? g->build_ms : 0));
    json_object_set_new(o, "files", files);
    rules_gen_release(g);
    return o;
}

/* ===================================================================== */
/* watching                                                              */

static int g_ifd = -1;
static struct event *g_iev, *g_debounce;

static void add_watches(const char *dir, int depth)
{
    if (depth > 16)
        return;
    inotify_add_watch(g_ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                      IN_CREATE | IN_ATTRIB);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (!lstat(p, &st) && S_ISDIR(st.st_mode))
            add_watches(p, depth + 1);
    }
    closedir(d);
}

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct app *app = arg;
    add_watches(app->cfg.rules_dir, 0); /* new subdirectories */
    rules_reload(app, 0);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    char buf[16384];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    struct timeval tv = { app->cfg.reload_debounce_ms / 1000,
                          (app->cfg.reload_debounce_ms % 1000) * 1000 };
    event_add(g_debounce, &tv);
}

/* ===================================================================== */
/* workers                                                               */

struct wfile {
    char *path;
    uint32_t hash;
    int ref;   /* registry ref of the table the file returned */
    int seen;
    struct content_prog **progs; /* its variants' content, [2 * variant + msgpack] */
    int nprogs;
};

static void wfile_free(lua_State *L, struct wfile *w)
{
    luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
    for (int i = 0; i < w->nprogs; i++)
        content_free(w->progs[i]);
    free(w->progs);
    free(w->path);
}

/* Compile the content of every variant of the campaign table on top of the
 * stack, in both wire forms, as the file returned it: before any of its
 * hooks has run (see content.h).  A NULL entry (out of memory) makes that
 * variant fail to render.  Stack-neutral. */
static struct content_prog **compile_variants(lua_State *L, int *n)
{
    *n = 0;
    int top = lua_gettop(L);
    lua_getfield(L, -1, "variants");
    int nv = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    struct content_prog **progs = nv > 0 ? calloc((size_t)nv * 2, sizeof *progs) : NULL;
    for (int v = 0; progs && v < nv; v++) {
        lua_rawgeti(L, top + 1, v + 1);
        if (lua_istable(L, -1))
            lua_getfield(L, -1, "content");
        for (int mp = 0; mp < 2; mp++)
            progs[2 * v + mp] = content_compile(L, -1, mp);
        lua_settop(L, top + 1);
    }
    if (progs)
        *n = nv * 2;
    lua_settop(L, top);
    return progs;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rules_worker_refresh(arg);
}

int rules_worker_start(struct event_base *base, struct rules_worker **out)
{
    struct rules_worker *rw = calloc(1, sizeof *rw);
    if (!rw)
        return ERR_NOMEM;
    char lib_dir[4096];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", g_app->cfg.rules_dir);
    struct luavm_opts o = { .mem_limit = g_app->cfg.lua_mem_limit,
                            .instr_budget = g_app->cfg.instr_budget, .lib_dir = lib_dir };
    if (luavm_new(&o, &rw->vm)) {
        free(rw);
        return ERR_NOMEM;
    }
    tl_rw = rw;
    rules_worker_refresh(rw);
    rw->tick = event_new(base, -1, EV_PERSIST, on_tick, rw);
    struct timeval tv = { 0, 250000 };
    event_add(rw->tick, &tv);
    *out = rw;
    return 0;
}

void rules_worker_stop(struct rules_worker *rw)
{
    if (!rw)
        return;
    if (rw->tick)
        event_free(rw->tick);
    rules_gen_release(rw->gen);
    for (int i = 0; i < rw->nwfiles; i++)
        wfile_free(luavm_state(rw->vm), &rw->wfiles[i]);
    free(rw->wfiles);
    free(rw->refs);
    free(rw->chan_refs);
    free(rw->content);
    free(rw->fn_refs);
    if (rw->scratch_free)
        rw->scratch_free(rw->scratch);
    luavm_free(rw->vm);
    free(rw);
    tl_rw = NULL;
}

struct rules_worker *rules_worker_self(void) { return tl_rw; }

static int wfile_load(struct rules_worker *rw, const struct rules_file *f,
                      struct content_prog ***progs, int *nprogs)
{
    for (int i = 0; i < rw->nwfiles; i++) {
        struct wfile *w = &rw->wfiles[i];
        if (!strcmp(w->path, f->path) && w->hash == f->hash) {
            w->seen = 1;
            if (progs) {
                *progs = w->progs;
                *nprogs = w->nprogs;
            }
            return w->ref;
        }
    }
    lua_State *L = luavm_state(rw->vm);
    char err[512];
    int ref = LUA_NOREF, np = 0;
    struct content_prog **cp = NULL;
    rw->ncompiled++;
    if (luavm_load_chunk(rw->vm, f->path, f->source, f->source_len, err, sizeof err) == 0) {
        if (lua_istable(L, -1)) {
            cp = compile_variants(L, &np);
            ref = luaL_ref(L, LUA_REGISTRYINDEX);
        } else {
            lua_pop(L, 1);
        }
    } else {
        log_warn("worker could not load a validated file", "file=\"%s\" error=\"%s\"", f->path, err);
    }
    if (rw->nwfiles == rw->capwfiles) {
        rw->capwfiles = rw->capwfiles ? rw->capwfiles * 2 : 64;
        rw->wfiles = realloc(rw->wfiles, (size_t)rw->capwfiles * sizeof *rw->wfiles);
        if (!rw->wfiles)
            abort();
    }
    rw->wfiles[rw->nwfiles++] = (struct wfile){ xstrdup(f->path), f->hash, ref, 1, cp, np };
    if (progs) {
        *progs = cp;
        *nprogs = np;
    }
    return ref;
}

void rules_worker_refresh(struct rules_worker *rw)
{
    uint64_t seq = __atomic_load_n(&g_seq, __ATOMIC_ACQUIRE);
    if (rw->gen && rw->gen->seq == seq)
        return;
    struct rules_gen *g = rules_gen_acquire();
    if (!g)
        return;
    if (rw->gen == g) {
        rules_gen_release(g);
        return;
    }
    uint64_t t0 = clock_mono_ns();
    rw->ncompiled = 0;
    for (int i = 0; i < rw->nwfiles; i++)
        rw->wfiles[i].seen = 0;
    if (rw->gen && rw->lib_hash != g->lib_hash)
        luavm_clear_modules(rw->vm); /* files reload (their hash mixes lib's); modules must too */
    rw->lib_hash = g->lib_hash;
    int *refs = malloc(sizeof(int) * (size_t)(g->ncamps + 1));
    int *crefs = malloc(sizeof(int) * (size_t)(g->nchans + 1));
    struct rules_content *content = malloc(sizeof *content * (size_t)(g->ncamps + 1));
    if (!refs || !crefs || !content)
        abort();
    for (int i = 0; i < g->nchans; i++)
        crefs[i] = wfile_load(rw, &g->files[g->chans[i].file], NULL, NULL);
    for (int i = 0; i < g->ncamps; i++)
        refs[i] = wfile_load(rw, &g->files[g->camps[i].file], &content[i].progs, &content[i].n);
    lua_State *L = luavm_state(rw->vm);
    /* direct refs to the hot hooks: one registry lookup per call, no getfield */
    for (int i = 0; rw->gen && rw->fn_refs && i < 2 * rw->gen->ncamps; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, rw->fn_refs[i]);
    free(rw->fn_refs);
    rw->fn_refs = malloc(sizeof(int) * (size_t)(2 * g->ncamps + 1));
    if (!rw->fn_refs)
        abort();
    static const char *hot[2] = { "eligible", "score" };
    for (int i = 0; i < g->ncamps; i++)
        for (int h = 0; h < 2; h++) {
            rw->fn_refs[2 * i + h] = LUA_NOREF;
            if (refs[i] == LUA_NOREF)
                continue;
            lua_rawgeti(L, LUA_REGISTRYINDEX, refs[i]);
            lua_getfield(L, -1, hot[h]);
            if (lua_isfunction(L, -1))
                rw->fn_refs[2 * i + h] = luaL_ref(L, LUA_REGISTRYINDEX);
            else
                lua_pop(L, 1);
            lua_pop(L, 1);
        }
    /* drop files no longer live */
    int n = 0;
    for (int i = 0; i < rw->nwfiles; i++) {
        if (rw->wfiles[i].seen) {
            rw->wfiles[n++] = rw->wfiles[i];
        } else {
            wfile_free(L, &rw->wfiles[i]);
        }
    }
    rw->nwfiles = n;
    free(rw->refs);
    free(rw->chan_refs);
    free(rw->content);
    rw->refs = refs;
    rw->chan_refs = crefs;
    rw->content = content;
    rules_gen_release(rw->gen);
    rw->gen = g;
    lua_gc(L, LUA_GCCOLLECT, 0);
    log_info("worker adopted rules", "generation=%llu compiled=%d ms=%.1f lua_kb=%zu",
             (unsigned long long)g->seq, rw->ncompiled,
             (double)(clock_mono_ns() - t0) / 1e6, luavm_mem_used(rw->vm) / 1024);
}

/* ===================================================================== */
/* lifecycle                                                             */

static void rules_collector(struct buf *out, void *ud)
{
    (void)ud;
    struct rules_gen *g = rules_gen_acquire();
    buf_printf(out,
               "# HELP promod_rules_generation Current ruleset generation.\n"
               "# TYPE promod_rules_generation gauge\npromod_rules_generation %llu\n"
               "# HELP promod_rules_campaigns Campaigns loaded.\n"
               "# TYPE promod_rules_campaigns gauge\npromod_rules_campaigns %d\n"
               "# HELP promod_rules_reloads_total Generations published.\n"
               "# TYPE promod_rules_reloads_total counter\npromod_rules_reloads_total %ld\n"
               "# HELP promod_rules_reload_errors_total Reloads that found a broken file.\n"
               "# TYPE promod_rules_reload_errors_total counter\npromod_rules_reload_errors_total %ld\n",
               g ? (unsigned long long)g->seq : 0ULL, g ? g->ncamps : 0, (long)g_reloads,
               (long)g_reload_errors);
    int bad = 0;
    for (int i = 0; g && i < g->nfiles; i++)
        bad += !g->files[i].ok;
    buf_printf(out, "# HELP promod_rules_files_with_errors Files whose version on disk failed.\n"
                    "# TYPE promod_rules_files_with_errors gauge\npromod_rules_files_with_errors %d\n",
               bad);
    rules_gen_release(g);
}

int rules_start(struct app *app)
{
    rules_reload(app, 1);
    metrics_register(rules_collector, NULL);
    return 0;
}

void rules_attach(struct app *app, struct event_base *base)
{
    g_ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (g_ifd < 0) {
        log_warn("inotify unavailable: use POST /api/v1/rules/reload", "err=\"%s\"", strerror(errno));
        return;
    }
    add_watches(app->cfg.rules_dir, 0);
    add_watches(app->cfg.plugins_dir, 0);
    g_iev = event_new(base, g_ifd, EV_READ | EV_PERSIST, on_inotify, app);
    g_debounce = evtimer_new(base, on_debounce, app);
    event_add(g_iev, NULL);
}

void rules_stop(struct app *app)
{
    (void)app;
    if (g_iev)
        event_free(g_iev);
    if (g_debounce)
        event_free(g_debounce);
    g_iev = g_debounce = NULL;
    if (g_ifd >= 0)
        close(g_ifd);
    g_ifd = -1;
    pthread_mutex_lock(&g_lock);
    struct rules_gen *g = g_cur;
    g_cur = NULL;
    pthread_mutex_unlock(&g_lock);
    rules_gen_release(g);
}

/* ===================================================================== */
/* promod check                                                          */

/* Does `path` have a component named `name` ("x/plugins/web.lua")? */
static int has_component(const char *path, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = path; (p = strstr(p, name)); p += nl)
        if ((p == path || p[-1] == '/') && (p[nl] == '/' || p[nl] == 0))
            return 1;
    return 0;
}

/* Copy of `dir` without trailing slashes. */
static char *dir_dup(const char *dir)
{
    char *d = xstrdup(dir);
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/')
        d[--n] = 0;
    return d;
}

int rules_check_cli(const struct config *cfg, const char **paths, int n)
{
    const char *defaults[2] = { cfg->rules_dir, cfg->plugins_dir };
    if (n == 0) {
        paths = defaults;
        n = 2;
    }
    json_t *errors = json_array();
    struct flist plugins = { 0 }, camps = { 0 };
    char *roots[64]; /* campaign directories given: default ids are relative to them */
    int nroots = 0;
    char lib_dir[4096];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", cfg->rules_dir);
    int lib_from_arg = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st)) {
            char m[600];
            snprintf(m, sizeof m, "%s:1: cannot read: %s", paths[i], strerror(errno));
            json_array_append_new(errors, json_string(m));
            continue;
        }
        /* plugins: under plugins_dir, or a path with a "plugins" component */
        size_t pl = strlen(cfg->plugins_dir);
        int is_plugin = (!strncmp(paths[i], cfg->plugins_dir, pl) &&
                         (paths[i][pl] == 0 || paths[i][pl] == '/')) ||
                        has_component(paths[i], "plugins");
        if (S_ISDIR(st.st_mode)) {
            char *root = dir_dup(paths[i]);
            char lib[4096];
            snprintf(lib, sizeof lib, "%s/lib", root);
            scan_dir(root, lib, !is_plugin, is_plugin ? RULES_PLUGIN : RULES_CAMPAIGN,
                     is_plugin ? &plugins : &camps, 0);
            struct stat ls;
            /* `require` resolves in the lib/ of the rules directory checked */
            if (!is_plugin && !lib_from_arg && !stat(lib, &ls) && S_ISDIR(ls.st_mode)) {
                snprintf(lib_dir, sizeof lib_dir, "%s", lib);
                lib_from_arg = 1;
            }
            if (!is_plugin && nroots < 64)
                roots[nroots++] = root;
            else
                free(root);
        } else {
            flist_add(is_plugin ? &plugins : &camps, paths[i],
                      is_plugin ? RULES_PLUGIN : RULES_CAMPAIGN);
        }
    }
    /* channel names come from the plugins given, else from plugins_dir */
    if (plugins.n == 0)
        scan_dir(cfg->plugins_dir, NULL, 0, RULES_PLUGIN, &plugins, 0);
    sort_paths(plugins.paths, plugins.n);
    sort_paths(camps.paths, camps.n);
    g_check_budget = cfg->instr_budget;
    struct luavm *vm = scratch_vm(lib_dir);
    if (!vm) {
        fprintf(stderr, "promod check: out of memory\n");
        return 1;
    }
    char *rules_root = dir_dup(cfg->rules_dir);
    json_t *ids = json_object(); /* campaign id → file, as the loader refuses duplicates */
    char *names[32];
    int nnames = 0, files = 0;
    for (int pass = 0; pass < 2; pass++) {
        struct flist *l = pass ? &camps : &plugins;
        for (int i = 0; i < l->n; i++) {
            size_t len;
            int rc;
            char *src = read_file(l->paths[i], &len, &rc);
            files++;
            if (!src) {
                char m[600];
                snprintf(m, sizeof m, "%s:1: cannot read: %s", l->paths[i], err_str(rc));
                json_array_append_new(errors, json_string(m));
                continue;
            }
            /* default ids: relative to the longest campaign directory given
             * that holds the file, else to rules_dir, as the server does */
            g_id_root = NULL;
            size_t best = 0;
            for (int r = 0; pass && r < nroots; r++) {
                size_t rl = strlen(roots[r]);
                if (rl > best && !strncmp(l->paths[i], roots[r], rl) && l->paths[i][rl] == '/') {
                    g_id_root = roots[r];
                    best = rl;
                }
            }
            if (pass && !g_id_root && !strncmp(l->paths[i], rules_root, strlen(rules_root)) &&
                l->paths[i][strlen(rules_root)] == '/')
                g_id_root = rules_root;
            struct rules_channel ch;
            struct rules_campaign camp;
            int ok = validate_in(vm, l->paths[i], pass ? RULES_CAMPAIGN : RULES_PLUGIN, src, len,
                                 (const char *const *)names, nnames, errors, pass ? &camp : NULL,
                                 pass ? NULL : &ch) == 0;
            g_id_root = NULL;
            char m[1200];
            if (!pass && ok) {
                int dup = 0;
                for (int k = 0; k < nnames; k++)
                    dup |= !strcmp(names[k], ch.name);
                if (dup || nnames >= 32) {
                    snprintf(m, sizeof m, "%s:%d: duplicate channel \"%s\" (or more than 32 channels)",
                             l->paths[i], line_of(src, len, "channel"), ch.name);
                    json_array_append_new(errors, json_string(m));
                } else {
                    names[nnames++] = ch.name;
                    ch.name = NULL;
                }
            }
            if (!pass)
                chan_free_fields(&ch);
            if (pass && ok) {
                const char *other = json_string_value(json_object_get(ids, camp.id));
                if (other) {
                    snprintf(m, sizeof m, "%s:%d: duplicate campaign id \"%s\" (also in %s)",
                             l->paths[i], line_of(src, len, "id"), camp.id, other);
                    json_array_append_new(errors, json_string(m));
                } else {
                    json_object_set_new(ids, camp.id, json_string(l->paths[i]));
                }
            }
            if (pass)
                camp_free_fields(&camp);
            free(src);
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
        printf("%s\n", json_string_value(e));
    size_t nerr = json_array_size(errors);
    fprintf(stderr, "promod check: %d files, %zu problems\n", files, nerr);
    json_decref(errors);
    json_decref(ids);
    for (int k = 0; k < nnames; k++)
        free(names[k]);
    for (int k = 0; k < nroots; k++)
        free(roots[k]);
    free(rules_root);
    luavm_free(vm);
    flist_free(&plugins);
    flist_free(&camps);
    return nerr ? 1 : 0;
}
