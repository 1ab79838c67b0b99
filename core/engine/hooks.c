/*
 * hooks.c — the hook registry, the call and its verdict, error counting
 * and explain text (see hooks.h).
 *
 * Why one place: a hook's contract used to be written out at each call
 * site, and two sites running the same hook (decide and the outbound
 * send's audience builder) judged `eligible` differently — one read the
 * `false, "reason"` reason, the other did not, and their messages differed.
 * Here every hook is one row of data and every call goes through
 * hooks_call(), so a hook behaves the same wherever it runs.
 *
 * Cost: hooks_call() is inline (hooks.h) and, called with a constant hook,
 * compiles to the luavm_call_ref() and the one or two type checks a
 * hand-written call would make; only failures come here.  The function
 * refs are resolved once per adoption of a generation
 * (hooks_refs_resolve), so a call does one registry read and no look-up
 * by name.
 */
#include "engine/hooks.h"
#include "engine/counters.h"
#include "base/err.h"
#include "base/metrics.h"
#include "lua/luavm.h"
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

int hooks_find(enum hooks_owner owner, const char *name)
{
    for (int h = 0; h < HOOKS_N; h++)
        if (hooks_table[h].owner == owner && !strcmp(hooks_table[h].name, name))
            return h;
    return -1;
}

/* --- counting ------------------------------------------------------------ */

/* Two counters per hook and campaign: kind "error" (2h) and "budget" (2h+1). */
static struct counters *g_errors;

/* Set while a simulation's decide runs on this thread (hooks_count_pause):
 * its failures are the edited script's, not the live campaign's. */
static __thread int tl_paused;

void hooks_count_pause(int paused) { tl_paused = paused; }

/* Set while a replay's decide runs on this thread (hooks_count_divert). */
static __thread struct counters *tl_divert;

void hooks_count_divert(struct counters *to) { tl_divert = to; }

static void count_failure(const char *who, enum hooks_id h, int rc)
{
    if (tl_divert) {
        counters_add(tl_divert, who, 0, 1);
        return;
    }
    if (tl_paused)
        return;
    counters_add(g_errors, who, 2 * (int)h + (rc == ERR_BUDGET), 1);
}

static void hooks_collector(struct buf *out, void *ud)
{
    (void)ud;
    buf_adds(out, "# HELP promod_hook_errors_total Hook calls that raised an error, by campaign.\n"
                  "# TYPE promod_hook_errors_total counter\n");
    static const char *kinds[2] = { "error", "budget" };
    long v[2 * HOOKS_N];
    const char *id;
    int pos = 0;
    while (counters_next(g_errors, &pos, &id, v))
        for (int h = 0; h < HOOKS_N; h++)
            for (int k = 0; k < 2; k++) {
                if (!v[2 * h + k])
                    continue;
                buf_adds(out, "promod_hook_errors_total{campaign=\"");
                metrics_label(out, id);
                buf_printf(out, "\",hook=\"%s\",kind=\"%s\"} %ld\n", hooks_table[h].name, kinds[k],
                           v[2 * h + k]);
            }
}

void hooks_metrics_init(void)
{
    if (!g_errors)
        g_errors = counters_new(2 * HOOKS_N);
    metrics_register(hooks_collector, NULL);
}

/* --- calling (the inline half is hooks_call in hooks.h) ----------------- */

enum hooks_verdict hooks_failed(enum hooks_id h, const char *who, int rc, struct hooks_res *res)
{
    res->rc = rc;
    count_failure(who, h, rc);
    return HOOKS_FAILED;
}

/* Results that break the contract: say so with the first result's type,
 * drop them, count. */
enum hooks_verdict hooks_broken(lua_State *L, enum hooks_id h, const char *who,
                                struct hooks_res *res)
{
    const struct hooks_desc *d = &hooks_table[h];
    snprintf(res->msg, sizeof res->msg, d->contract, luaL_typename(L, -d->nret));
    lua_pop(L, d->nret);
    res->rc = ERR_LUA;
    count_failure(who, h, ERR_LUA);
    return HOOKS_FAILED;
}

enum hooks_verdict hooks_refuse(enum hooks_id h, const char *who, struct hooks_res *res,
                                const char *msg)
{
    snprintf(res->msg, sizeof res->msg, "%s", msg ? msg : hooks_table[h].contract);
    res->rc = ERR_LUA;
    count_failure(who, h, ERR_LUA);
    return HOOKS_FAILED;
}

/* --- refs ------------------------------------------------------------------ */

void hooks_refs_resolve(lua_State *L, enum hooks_owner owner, int table_ref, int *refs)
{
    for (int h = 0; h < HOOKS_N; h++)
        refs[h] = LUA_NOREF;
    if (table_ref == LUA_NOREF || table_ref == LUA_REFNIL)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, table_ref);
    for (int h = 0; h < HOOKS_N; h++) {
        if (hooks_table[h].owner != owner)
            continue;
        lua_pushstring(L, hooks_table[h].name);
        lua_rawget(L, -2); /* raw: read between calls, unarmed (luavm.h) */
        if (lua_isfunction(L, -1))
            refs[h] = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

void hooks_refs_release(lua_State *L, int *refs)
{
    for (int h = 0; h < HOOKS_N; h++) {
        luaL_unref(L, LUA_REGISTRYINDEX, refs[h]); /* LUA_NOREF is a no-op */
        refs[h] = LUA_NOREF;
    }
}

/* --- explain ----------------------------------------------------------------- */

char *hooks_text(char *out, size_t len, enum hooks_id h, const char *msg)
{
    if (!len)
        return out;
    const char *name = hooks_table[h].name;
    size_t nl = strlen(name), ml = msg ? strlen(msg) : 0;
    if (nl + 2 >= len) {
        snprintf(out, len, "%s", name);
        return out;
    }
    if (nl + 2 + ml >= len) { /* cut before a character, never inside one */
        ml = len - 1 - nl - 2;
        while (ml && ((unsigned char)msg[ml] & 0xC0) == 0x80)
            ml--;
    }
    memcpy(out, name, nl);
    memcpy(out + nl, ": ", 2);
    if (ml)
        memcpy(out + nl + 2, msg, ml);
    out[nl + 2 + ml] = 0;
    return out;
}

void hooks_explain(json_t *xp, enum hooks_id h, const char *msg)
{
    if (!xp)
        return;
    char b[600];
    json_t *s = json_string(hooks_text(b, sizeof b, h, msg)); /* NULL when not UTF-8 */
    if (!s) {
        snprintf(b, sizeof b, "%s: error (its message is not valid UTF-8)", hooks_table[h].name);
        s = json_string(b);
    }
    json_object_set_new(xp, "error", s);
}
