/* loyalty_rules.c — the loyalty files (loyalty/NAME.lua): load, validate, publish, poll (see loyalty_rules.h). */
#include "engine/loyalty_rules.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/file.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/tz.h"
#include "lua/luavm.h"
#include <dirent.h>
#include <event2/event.h>
#include <lua.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* a loyalty rules file is small Lua: refuse anything larger */
#define LOYALTY_MAX_FILE (4u << 20)

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct loyalty_rules_gen *g_cur;
static char g_dir[1024];
static const char *g_lib; /* rules/lib, for require */
static char g_libbuf[1024];
static struct event *g_poll;
static uint32_t g_dir_sig; /* names, sizes and mtimes of the directory's files */

void loyalty_rules_dir(const struct config *cfg, char *out, size_t cap)
{
    if (cfg->loyalty_dir) {
        snprintf(out, cap, "%s", cfg->loyalty_dir);
        return;
    }
    const char *r = cfg->rules_dir ? cfg->rules_dir : "./rules";
    const char *slash = strrchr(r, '/');
    size_t n = strlen(r);
    while (n > 1 && r[n - 1] == '/') /* "rules/" */
        n--;
    slash = memrchr(r, '/', n);
    if (!slash)
        snprintf(out, cap, "loyalty");
    else
        snprintf(out, cap, "%.*s/loyalty", (int)(slash - r), r);
}

/* --- validation --------------------------------------------------------- */

/* First line of `src` naming `word` as a field (1 when none). */
static int line_of(const char *src, size_t len, const char *word)
{
    size_t wl = strlen(word);
    int line = 1;
    for (size_t i = 0; i + wl <= len; i++) {
        if (src[i] == '\n')
            line++;
        else if (!memcmp(src + i, word, wl) &&
                 (i == 0 || !(src[i - 1] == '_' || ((src[i - 1] | 32) >= 'a' && (src[i - 1] | 32) <= 'z'))))
            return line;
    }
    return 1;
}

struct vctx {
    const char *path, *src;
    size_t len;
    json_t *errors;
    int nerr;
};

static void verr(struct vctx *v, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void verr(struct vctx *v, const char *field, const char *fmt, ...)
{
    char msg[400], full[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s:%d: %s", v->path, field ? line_of(v->src, v->len, field) : 1, msg);
    json_array_append_new(v->errors, json_string(full));
    v->nerr++;
}

static long g_budget;

static struct luavm *scratch_vm(void)
{
    long budget = g_budget ? g_budget : g_app ? g_app->cfg.instr_budget : 0;
    struct luavm_opts o = { .mem_limit = 256u << 20, .instr_budget = budget, .lib_dir = g_lib };
    struct luavm *vm;
    return luavm_new(&o, &vm) ? NULL : vm;
}

static void parse_program(lua_State *L, struct vctx *v, struct loyalty_program *p, int *has)
{
    lua_getfield(L, -1, "tiers");
    if (!lua_isnil(L, -1)) {
        *has = 1;
        int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : -1;
        if (n < 1 || n > LOYALTY_MAX_TIERS) {
            verr(v, "tiers", "tiers must be a list of 1 to %d { name = \"gold\", points = 5000 }",
                 LOYALTY_MAX_TIERS);
        } else {
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                lua_getfield(L, -1, "name");
                lua_getfield(L, -2, "points");
                const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
                double pts = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
                if (!name || !*name || strlen(name) >= LOYALTY_TIER_MAX)
                    verr(v, "tiers", "tiers[%d].name must be a name of 1-%d characters", i,
                         LOYALTY_TIER_MAX - 1);
                else if (!(pts >= 0 && pts <= 1e15) || pts != (double)(long long)pts)
                    verr(v, "tiers", "tiers[%d].points must be a whole number >= 0", i);
                else if (i > 1 && (int64_t)pts <= p->tiers[i - 2].threshold)
                    verr(v, "tiers", "tiers[%d].points must be above tiers[%d].points: list tiers from "
                                     "the lowest up", i, i - 1);
                else {
                    snprintf(p->tiers[i - 1].name, sizeof p->tiers[i - 1].name, "%s", name);
                    p->tiers[i - 1].threshold = (int64_t)pts;
                    p->ntiers = i;
                }
                lua_pop(L, 3);
            }
        }
    }
    lua_pop(L, 1);
    static const char *durs[2] = { "window", "expiry" };
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -1, durs[i]);
        if (!lua_isnil(L, -1)) {
            *has = 1;
            int64_t secs = -1;
            const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            if (i == 1 && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
                secs = 0; /* expiry = false: never */
            else if (!s || tz_parse_duration(s, &secs) || secs < 3600)
                verr(v, durs[i], "%s must be a duration of at least an hour, like \"365d\"%s", durs[i],
                     i ? " (or false: points never expire)" : "");
            if (secs >= 0)
                *(i ? &p->expiry_s : &p->window_s) = secs;
        }
        lua_pop(L, 1);
    }
}

int loyalty_rules_validate(const char *path, const char *src, size_t len, json_t *errors,
                           struct loyalty_program *prog, int *has_prog, int *has_earn)
{
    struct vctx v = { path, src, len, errors, 0 };
    struct loyalty_program p = { .window_s = 365LL * 86400 };
    int has = 0;
    *has_earn = 0;
    struct luavm *vm = scratch_vm();
    if (!vm) {
        verr(&v, NULL, "out of memory");
        return ERR_NOMEM;
    }
    lua_State *L = luavm_state(vm);
    char err[512];
    if (luavm_load_chunk(vm, path, src, len, err, sizeof err)) {
        json_array_append_new(errors, json_string(err));
        luavm_free(vm);
        return ERR_LUA;
    }
    if (!lua_istable(L, -1)) {
        verr(&v, "return", "a loyalty file must return a table { tiers?, window?, expiry?, earn? }");
    } else {
        static const char *known[] = { "tiers", "window", "expiry", "earn", "description", NULL };
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            int ok = 0;
            for (int i = 0; k && known[i] && !ok; i++)
                ok = !strcmp(k, known[i]);
            if (!ok)
                verr(&v, k, "unknown field %s (tiers, window, expiry, earn, description)", k ? k : "?");
            lua_pop(L, 1);
        }
        parse_program(L, &v, &p, &has);
        lua_getfield(L, -1, "earn");
        if (lua_isfunction(L, -1))
            *has_earn = 1;
        else if (!lua_isnil(L, -1))
            verr(&v, "earn", "earn must be a function(event, p) returning points [, reason]");
        lua_pop(L, 1);
    }
    luavm_free(vm);
    if (prog && has && !v.nerr) {
        *prog = p;
        *has_prog = 1;
    } else if (has_prog) {
        *has_prog = 0;
    }
    return v.nerr ? ERR_INVAL : 0;
}

/* --- generations --------------------------------------------------------- */

static void gen_free(struct loyalty_rules_gen *g)
{
    for (int i = 0; i < g->nfiles; i++) {
        free(g->files[i].path);
        free(g->files[i].source);
        free(g->files[i].error);
    }
    free(g->files);
    free(g);
}

struct loyalty_rules_gen *loyalty_rules_acquire(void)
{
    pthread_mutex_lock(&g_lock);
    struct loyalty_rules_gen *g = g_cur;
    if (g)
        g->refs++;
    pthread_mutex_unlock(&g_lock);
    return g;
}

void loyalty_rules_release(struct loyalty_rules_gen *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g_lock);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g_lock);
    if (last)
        gen_free(g);
}

void loyalty_rules_program(struct loyalty_program *out)
{
    struct loyalty_rules_gen *g = loyalty_rules_acquire();
    if (g)
        *out = g->prog;
    else
        *out = (struct loyalty_program){ .window_s = 365LL * 86400 };
    loyalty_rules_release(g);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the directory's *.lua names, sorted; *sig = a hash of names, sizes, mtimes */
static char **list_dir(const char *dir, int *n, uint32_t *sig)
{
    *n = 0;
    *sig = HASH_FNV_INIT;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char **names = NULL;
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || de->d_name[0] == '.' || strcmp(de->d_name + l - 4, ".lua"))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn)
                break;
            names = nn;
        }
        names[(*n)++] = strdup(de->d_name);
    }
    closedir(d);
    if (*n > 1)
        qsort(names, (size_t)*n, sizeof *names, cmp_str);
    for (int i = 0; i < *n; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        struct stat st;
        long long meta[3] = { 0, 0, 0 };
        if (!stat(p, &st)) {
            meta[0] = (long long)st.st_size;
            meta[1] = (long long)st.st_mtim.tv_sec;
            meta[2] = (long long)st.st_mtim.tv_nsec;
        }
        *sig = hash_fnv1a(names[i], strlen(names[i]) + 1, *sig);
        *sig = hash_fnv1a(meta, sizeof meta, *sig);
    }
    return names;
}

static const struct loyalty_rules_file *prev_file(const struct loyalty_rules_gen *g, const char *path)
{
    for (int i = 0; g && i < g->nfiles; i++)
        if (!strcmp(g->files[i].path, path))
            return &g->files[i];
    return NULL;
}

static uint64_t g_seq;
static pthread_mutex_t g_reload = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */

static int reload_locked(int force);

int loyalty_rules_reload(int force)
{
    pthread_mutex_lock(&g_reload);
    int n = reload_locked(force);
    pthread_mutex_unlock(&g_reload);
    return n;
}

static int reload_locked(int force)
{
    int n;
    uint32_t sig;
    char **names = list_dir(g_dir, &n, &sig);
    if (!force && g_cur && sig == g_dir_sig) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return 0;
    }
    g_dir_sig = sig;
    struct loyalty_rules_gen *prev = loyalty_rules_acquire();
    struct loyalty_rules_gen *g = calloc(1, sizeof *g);
    g->files = calloc((size_t)(n ? n : 1), sizeof *g->files);
    g->refs = 1;
    g->prog = (struct loyalty_program){ .window_s = 365LL * 86400 };
    const char *prog_file = NULL;
    int nerr = 0;
    for (int i = 0; i < n; i++) {
        char full[2048], shown[2048];
        snprintf(full, sizeof full, "%s/%s", g_dir, names[i]);
        const char *base = strrchr(g_dir, '/');
        snprintf(shown, sizeof shown, "%s/%s", base ? base + 1 : g_dir, names[i]);
        struct loyalty_rules_file *f = &g->files[g->nfiles++];
        f->path = strdup(shown);
        size_t len = 0;
        char *src = file_read_all(full, LOYALTY_MAX_FILE, &len, NULL);
        if (!src) {
            f->error = strdup("cannot read the file");
            nerr++;
            continue;
        }
        f->hash = hash_fnv1a(src, len, HASH_FNV_INIT);
        const struct loyalty_rules_file *pf = prev_file(prev, shown);
        json_t *errs = json_array();
        struct loyalty_program p;
        int has_prog = 0, has_earn = 0;
        int rc = loyalty_rules_validate(shown, src, len, errs, &p, &has_prog, &has_earn);
        if (!rc && has_prog && prog_file) {
            char m[600];
            snprintf(m, sizeof m, "%.250s:1: tiers, window and expiry are already set by %.250s (one "
                                  "file holds the program)", shown, prog_file);
            json_array_append_new(errs, json_string(m));
            rc = ERR_INVAL;
        }
        if (!rc) {
            f->ok = 1;
            f->source = src;
            f->len = len;
            f->has_earn = has_earn;
            f->loaded_at = pf && pf->source && pf->len == len && !memcmp(pf->source, src, len)
                               ? pf->loaded_at : clock_now();
            if (has_prog) {
                g->prog = p;
                prog_file = f->path;
            }
        } else {
            nerr++;
            const char *m = json_string_value(json_array_get(errs, 0));
            f->error = strdup(m ? m : "invalid");
            log_warn("loyalty file not loaded", "file=\"%s\" error=\"%s\"", shown, f->error);
            free(src);
            if (pf && pf->source) { /* keep the previous good version live */
                f->source = malloc(pf->len + 1);
                memcpy(f->source, pf->source, pf->len + 1);
                f->len = pf->len;
                f->has_earn = pf->has_earn;
                f->loaded_at = pf->loaded_at;
                struct loyalty_program pp;
                int hp = 0, he = 0;
                json_t *e2 = json_array();
                if (loyalty_rules_validate(shown, f->source, f->len, e2, &pp, &hp, &he) == 0 && hp &&
                    !prog_file) {
                    g->prog = pp;
                    prog_file = f->path;
                }
                json_decref(e2);
            }
        }
        json_decref(errs);
        g->nearn += f->has_earn;
        free(names[i]);
    }
    free(names);
    loyalty_rules_release(prev);
    g->seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&g_lock);
    struct loyalty_rules_gen *old = g_cur;
    g_cur = g;
    pthread_mutex_unlock(&g_lock);
    loyalty_rules_release(old);
    log_info("loyalty files loaded", "dir=\"%s\" files=%d errors=%d earn_rules=%d tiers=%d", g_dir,
             g->nfiles, nerr, g->nearn, g->prog.ntiers);
    return nerr;
}

int loyalty_rules_start(const struct config *cfg)
{
    loyalty_rules_dir(cfg, g_dir, sizeof g_dir);
    snprintf(g_libbuf, sizeof g_libbuf, "%s/lib", cfg->rules_dir);
    g_lib = g_libbuf;
    loyalty_rules_reload(1);
    return 0;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    loyalty_rules_reload(0);
}

void loyalty_rules_attach(struct event_base *base)
{
    g_poll = event_new(base, -1, EV_PERSIST, on_poll, NULL);
    struct timeval tv = { 0, 500000 };
    if (g_poll)
        event_add(g_poll, &tv);
}

void loyalty_rules_stop(void)
{
    if (g_poll)
        event_free(g_poll);
    g_poll = NULL;
    pthread_mutex_lock(&g_lock);
    struct loyalty_rules_gen *g = g_cur;
    g_cur = NULL;
    pthread_mutex_unlock(&g_lock);
    loyalty_rules_release(g);
}

json_t *loyalty_rules_status_json(void)
{
    json_t *a = json_array();
    struct loyalty_rules_gen *g = loyalty_rules_acquire();
    for (int i = 0; g && i < g->nfiles; i++) {
        const struct loyalty_rules_file *f = &g->files[i];
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(f->path));
        json_object_set_new(o, "kind", json_string("loyalty"));
        json_object_set_new(o, "ok", json_boolean(f->ok));
        json_object_set_new(o, "error", f->error ? json_string(f->error) : json_null());
        json_object_set_new(o, "live", json_boolean(f->source != NULL));
        json_object_set_new(o, "earn", json_boolean(f->has_earn));
        if (f->loaded_at)
            json_object_set_new(o, "loaded_at", json_integer(f->loaded_at));
        json_array_append_new(a, o);
    }
    loyalty_rules_release(g);
    return a;
}

/* --- promod check ------------------------------------------------------------ */

int loyalty_rules_is_loyalty_path(const struct config *cfg, const char *path)
{
    char dir[1024];
    loyalty_rules_dir(cfg, dir, sizeof dir);
    size_t dl = strlen(dir);
    if (!strncmp(path, dir, dl) && (path[dl] == '/' || !path[dl]))
        return 1;
    return !strncmp(path, "loyalty/", 8) || strstr(path, "/loyalty/") != NULL ||
           !strcmp(path, "loyalty");
}

static int check_one(const char *path, const char *shown)
{
    size_t len;
    char *src = file_read_all(path, LOYALTY_MAX_FILE, &len, NULL);
    if (!src) {
        printf("%s:1: cannot read the file\n", shown);
        return 1;
    }
    json_t *errs = json_array();
    int hp, he;
    int rc = loyalty_rules_validate(shown, src, len, errs, NULL, &hp, &he);
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e) printf("%s\n", json_string_value(e));
    json_decref(errs);
    free(src);
    return rc != 0;
}

int loyalty_rules_check_cli(const struct config *cfg, const char **paths, int n)
{
    g_budget = cfg->instr_budget;
    snprintf(g_libbuf, sizeof g_libbuf, "%s/lib", cfg->rules_dir);
    g_lib = g_libbuf;
    int bad = 0;
    if (n) {
        for (int i = 0; i < n; i++) {
            struct stat st;
            if (!stat(paths[i], &st) && S_ISDIR(st.st_mode)) {
                int k;
                uint32_t sig;
                char **names = list_dir(paths[i], &k, &sig);
                for (int j = 0; j < k; j++) {
                    char p[2048];
                    snprintf(p, sizeof p, "%s/%s", paths[i], names[j]);
                    bad += check_one(p, p);
                    free(names[j]);
                }
                free(names);
            } else {
                bad += check_one(paths[i], paths[i]);
            }
        }
        return bad;
    }
    char dir[1024];
    loyalty_rules_dir(cfg, dir, sizeof dir);
    int k;
    uint32_t sig;
    char **names = list_dir(dir, &k, &sig);
    for (int j = 0; j < k; j++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, names[j]);
        bad += check_one(p, p);
        free(names[j]);
    }
    free(names);
    return bad;
}
