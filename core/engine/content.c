/* content.c — compiled variant content (see content.h). */
#include "engine/content.h"
#include "codec/emit.h"
#include "base/err.h"
#include "lua/luavm.h"
#include "engine/tmpl.h"
#include "base/i18n.h"
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct slot {
    size_t at;             /* where in code the rendered string goes */
    struct tmpl_prog *tpl; /* the template, parsed (owns a copy of its text) */
    int escape;
};

struct content_prog {
    int rc;      /* 0, or why this content cannot be rendered */
    int mp;
    int coupon;  /* a template uses {{coupon}} */
    int format;  /* a template has a format filter: rendering needs a locale */
    struct buf code;
    struct slot *slots;
    int nslots, cap;
};

#define MAX_DEPTH 16
#define RULES_CHAIN_MAX 8 /* a locale's chain: itself, its parents, the default */

static int ends_raw(const char *k, size_t n) { return n >= 4 && !memcmp(k + n - 4, "_raw", 4); }

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Does a template hold {{coupon}} (blanks and a |default allowed)? */
static int has_coupon(const char *s, size_t n)
{
    for (const char *p = s, *end = s + n; (p = memmem(p, (size_t)(end - p), "{{", 2)); p += 2) {
        const char *q = p + 2, *close = memmem(q, (size_t)(end - q), "}}", 2);
        if (!close)
            return 0;
        while (q < close && is_blank(*q))
            q++;
        const char *e = q;
        while (e < close && *e != '|' && !is_blank(*e))
            e++;
        if (e - q == 6 && !memcmp(q, "coupon", 6))
            return 1;
    }
    return 0;
}

static int add_slot(struct content_prog *p, struct emit *em, const char *s, size_t n, int escape)
{
    p->coupon |= has_coupon(s, n);
    if (p->nslots == p->cap) {
        int cap = p->cap ? p->cap * 2 : 4;
        struct slot *ns = realloc(p->slots, sizeof *ns * (size_t)cap);
        if (!ns)
            return ERR_NOMEM;
        p->slots = ns;
        p->cap = cap;
    }
    struct tmpl_prog *t = tmpl_compile(s, n);
    if (!t)
        return ERR_NOMEM;
    p->format |= tmpl_has_format(t);
    /* an empty string written through the emitter puts the separator and
     * leaves its state as after any value; the string itself ("" or 0xa0)
     * is taken back off: the slot's rendering goes there */
    emit_str(em, "", 0);
    if (emit_error(em)) {
        tmpl_prog_free(t);
        return emit_error(em);
    }
    p->code.len -= p->mp ? 1 : 2;
    p->slots[p->nslots++] = (struct slot){ p->code.len, t, escape };
    return 0;
}

static int walk(struct content_prog *p, struct emit *em, lua_State *L, int idx, int escape,
                int depth)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (tmpl_has_placeholders(s, len))
            return add_slot(p, em, s, len, escape);
        emit_str(em, s, len);
        return emit_error(em);
    }
    case LUA_TTABLE: {
        if (depth > MAX_DEPTH || !lua_checkstack(L, 4))
            return ERR_TOOBIG;
        size_t n = lua_objlen(L, idx);
        if (n > 0) {
            emit_array(em, n);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (int)i);
                int rc = walk(p, em, L, -1, escape, depth + 1);
                lua_pop(L, 1);
                if (rc)
                    return rc;
            }
            emit_end(em);
            return emit_error(em);
        }
        size_t nk = 0; /* msgpack states the count up front; JSON needs none */
        if (em->mp) {
            lua_pushnil(L);
            while (lua_next(L, idx)) {
                lua_pop(L, 1);
                nk++;
            }
        }
        emit_map(em, nk);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 2);
                return ERR_INVAL;
            }
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            emit_key(em, k, kl);
            int rc = walk(p, em, L, -1, escape && !ends_raw(k, kl), depth + 1);
            lua_pop(L, 1);
            if (rc) {
                lua_pop(L, 1);
                return rc;
            }
        }
        emit_end(em);
        return emit_error(em);
    }
    default: {
        int err;
        json_t *j = luavm_to_json(L, idx, &err);
        if (!j)
            return err ? err : ERR_INVAL;
        emit_json(em, j);
        json_decref(j);
        return emit_error(em);
    }
    }
}

struct content_prog *content_compile(lua_State *L, int idx, int msgpack)
{
    struct content_prog *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->mp = msgpack;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    int top = lua_gettop(L);
    struct emit em;
    emit_init(&em, &p->code, msgpack);
    p->rc = walk(p, &em, L, idx, 1, 0);
    lua_settop(L, top);
    if (p->rc == ERR_NOMEM) {
        content_free(p);
        return NULL;
    }
    return p;
}

/* {{coupon}} from the scratch, every other path from the profile */
struct lookup {
    struct tmpl_lua_ctx lua;
    const char *coupon;
};

static int lookup(void *ud, const char *path, size_t len, struct buf *out)
{
    struct lookup *x = ud;
    if (len == 6 && !memcmp(path, "coupon", 6)) {
        if (!x->coupon)
            return 0;
        return buf_adds(out, x->coupon) ? ERR_NOMEM : 1;
    }
    return tmpl_lua_lookup(&x->lua, path, len, out);
}

int content_uses_coupon(const struct content_prog *p) { return p && p->coupon; }

int content_uses_format(const struct content_prog *p) { return p && p->format; }

int content_render(const struct content_prog *p, lua_State *L, int p_idx,
                   struct content_scratch *cs, struct buf *out)
{
    if (p->rc)
        return p->rc;
    size_t mark = out->len, from = 0;
    struct lookup tc = { { L, p_idx }, cs->coupon };
    int rc = 0;
    for (int i = 0; i < p->nslots && !rc; i++) {
        const struct slot *s = &p->slots[i];
        if (s->at > from && buf_add(out, p->code.p + from, s->at - from)) {
            rc = ERR_NOMEM;
            break;
        }
        from = s->at;
        buf_reset(&cs->text);
        struct tmpl_fmt fmt = { cs->locale, cs->tz };
        if ((rc = tmpl_run_fmt(s->tpl, s->escape, &fmt, lookup, &tc, &cs->val, &cs->text)))
            break;
        struct emit em; /* a lone string: no separator, the code has it */
        emit_init(&em, out, p->mp);
        emit_str(&em, cs->text.p ? cs->text.p : "", cs->text.len);
        rc = emit_error(&em);
    }
    if (!rc && p->code.len > from && buf_add(out, p->code.p + from, p->code.len - from))
        rc = ERR_NOMEM;
    if (rc) {
        out->len = mark;
        if (out->p)
            out->p[mark] = '\0';
    }
    return rc;
}

void content_free(struct content_prog *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nslots; i++)
        tmpl_prog_free(p->slots[i].tpl);
    free(p->slots);
    buf_free(&p->code);
    free(p);
}

/* --- localized content ---------------------------------------------------- */

static int locale_index(const char *k, char *const *locales, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcasecmp(k, locales[i]))
            return i;
    return -1;
}

int content_is_localized(lua_State *L, int idx, char *const *locales, int n)
{
    if (!lua_istable(L, idx) || n <= 0)
        return 0;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    int any = 0, all = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        any = 1;
        if (lua_type(L, -2) != LUA_TSTRING || locale_index(lua_tostring(L, -2), locales, n) < 0)
            all = 0;
        lua_pop(L, 1);
        if (!all) {
            lua_pop(L, 1);
            break;
        }
    }
    return any && all;
}

/* The entry of the localized table at `idx` for locale li, pushed (nil
 * when it has none of the chain). */
static void push_pick(lua_State *L, int idx, char *const *locales, int n, int li)
{
    int chain[RULES_CHAIN_MAX], nc = 0;
    char tag[I18N_TAG_MAX];
    snprintf(tag, sizeof tag, "%s", locales[li]);
    for (;;) { /* li, its declared parents, then the default */
        int k = i18n_match(tag, locales, n);
        if (k >= 0 && nc < RULES_CHAIN_MAX)
            chain[nc++] = k;
        char *dash = strrchr(tag, '-');
        if (!dash)
            break;
        *dash = 0;
    }
    if (nc < RULES_CHAIN_MAX)
        chain[nc++] = 0;
    for (int c = 0; c < nc; c++) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (!strcasecmp(lua_tostring(L, -2), locales[chain[c]])) {
                lua_remove(L, -2); /* the key: leave the value */
                return;
            }
            lua_pop(L, 1);
        }
    }
    lua_pushnil(L);
}

static void push_loc(lua_State *L, int idx, char *const *locales, int n, int li, int depth)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    if (!lua_istable(L, idx) || depth > MAX_DEPTH || !lua_checkstack(L, 6)) {
        lua_pushvalue(L, idx);
        return;
    }
    if (content_is_localized(L, idx, locales, n)) {
        push_pick(L, idx, locales, n, li);
        if (lua_istable(L, -1)) { /* a whole content per locale may localize fields too */
            int picked = lua_gettop(L);
            push_loc(L, picked, locales, n, li, depth + 1);
            lua_remove(L, picked);
        }
        return;
    }
    lua_newtable(L);
    int dst = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);           /* key */
        push_loc(L, -2, locales, n, li, depth + 1);
        lua_rawset(L, dst);
        lua_pop(L, 1);
    }
}

void content_push_localized(lua_State *L, int idx, char *const *locales, int n, int li)
{
    push_loc(L, idx, locales, n, li, 0);
}

/* Fill `lr` once per decide: the tags the request asks for (context.locale,
 * else p.locale, else Accept-Language by preference) and p.tz. */
void content_locale_lookup(lua_State *L, int p_idx, int ctx_idx, const char *accept,
                           struct content_locale *lr)
{
    if (lr->looked)
        return;
    lr->looked = 1;
    lr->ntags = 0;
    lr->from = NULL;
    lr->tz[0] = 0;
    static const char *const from[2] = { "context", "profile" };
    int idx[2] = { ctx_idx, p_idx };
    for (int i = 0; i < 2 && !lr->ntags; i++) {
        lua_getfield(L, idx[i], "locale");
        size_t n;
        const char *t = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (t && n && n < I18N_TAG_MAX && i18n_accept(t, lr->tags, 1) == 1) {
            lr->ntags = 1;
            lr->from = from[i];
        }
        lua_pop(L, 1);
    }
    if (!lr->ntags && accept && (lr->ntags = i18n_accept(accept, lr->tags, 8)))
        lr->from = "accept-language";
    lua_getfield(L, p_idx, "tz");
    if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(lr->tz, sizeof lr->tz, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* Which of a campaign's `nlocales` locales serves the request — the first asked-for
 * tag that matches along its chain (fr-CA → fr), else the default (0) —
 * and the locale format filters write in (`fmt`): the tag asked for when
 * one matched (fr-CA writes money as Canada does, even with "fr" content),
 * else the content's. */
int content_locale_pick(char *const *locales, int nlocales, const struct content_locale *lr,
                        char *fmt, const char **from)
{
    for (int i = 0; i < lr->ntags; i++) {
        int li = nlocales ? i18n_match(lr->tags[i], locales, nlocales) : 0;
        if (li >= 0) {
            snprintf(fmt, I18N_TAG_MAX, "%s", lr->tags[i]);
            *from = lr->from;
            return li;
        }
    }
    snprintf(fmt, I18N_TAG_MAX, "%s", nlocales ? locales[0] : "en");
    *from = "default";
    return 0;
}
