/*
 * templates.c — campaign templates (templates.h): reading a template's
 * declaration, checking parameter values against it, writing them as a
 * Lua literal in place of the "-- @params" line.
 */
#include "engine/templates.h"
#include "base/err.h"
#include "base/id.h"
#include "base/reqerr.h"
#include "engine/rules.h"
#include "lua/luavm.h"
#include <dirent.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEMPLATES_MARK "-- @params"
#define TEMPLATES_MAX_STR 1000
#define TEMPLATES_MAX_LIST 64

/* A template name: what a file name may be without ".lua". */
static int name_ok(const char *n)
{
    size_t k = strlen(n);
    if (k == 0 || k > 64)
        return 0;
    for (size_t i = 0; i < k; i++)
        if (!(n[i] == '_' || n[i] == '-' || (n[i] >= 'a' && n[i] <= 'z') ||
              (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9')))
            return 0;
    return 1;
}

/* Offset of the start of the "-- @params" line, or -1. */
static long mark_line(const char *src, size_t len)
{
    const char *m = strstr(src, TEMPLATES_MARK);
    if (!m || (size_t)(m - src) >= len)
        return -1;
    while (m > src && m[-1] != '\n')
        m--;
    return (long)(m - src);
}

/* The declaration: the text before the mark, run in a throwaway sandbox,
 * returning TEMPLATE.  *err gets the reason on failure. */
static json_t *read_decl(const char *path, const char *src, size_t len, char *err, size_t errlen)
{
    long at = mark_line(src, len);
    if (at < 0) {
        snprintf(err, errlen, "%s: no \"%s\" line (see docs/authoring.md)", path, TEMPLATES_MARK);
        return NULL;
    }
    size_t n = (size_t)at;
    char *chunk = malloc(n + 32);
    if (!chunk) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(chunk, src, n);
    memcpy(chunk + n, "\nreturn TEMPLATE\n", 18);
    struct luavm_opts o = { 0 };
    struct luavm *vm = NULL;
    json_t *d = NULL;
    if (luavm_new(&o, &vm)) {
        snprintf(err, errlen, "out of memory");
    } else if (!luavm_load_chunk(vm, path, chunk, n + 17, err, errlen)) {
        int rc;
        d = luavm_to_json(luavm_state(vm), -1, &rc);
        if (!json_is_object(d)) {
            snprintf(err, errlen, "%s: TEMPLATE must be a table { description, params }", path);
            json_decref(d);
            d = NULL;
        }
    }
    luavm_free(vm);
    free(chunk);
    if (!d)
        return NULL;
    /* params: a list of { name, type, default?, description } */
    json_t *ps = json_object_get(d, "params");
    if (json_is_object(ps) && json_object_size(ps) == 0)
        json_object_set_new(d, "params", ps = json_array());
    size_t i;
    json_t *p;
    int has_id = 0;
    if (!json_is_array(ps))
        goto bad;
    json_array_foreach(ps, i, p) {
        const char *pn = json_string_value(json_object_get(p, "name"));
        const char *ty = json_string_value(json_object_get(p, "type"));
        if (!pn || !ty || !name_ok(pn) ||
            (strcmp(ty, "string") && strcmp(ty, "number") && strcmp(ty, "integer") &&
             strcmp(ty, "boolean") && strcmp(ty, "strings")))
            goto bad;
        has_id |= !strcmp(pn, "id") && !strcmp(ty, "string");
        json_object_set_new(p, "required", json_boolean(!json_object_get(p, "default")));
    }
    if (!has_id)
        goto bad;
    return d;
bad:
    snprintf(err, errlen,
             "%s: TEMPLATE.params must list { name = \"...\", type = \"string|number|integer|"
             "boolean|strings\", default = ..., description = \"...\" }, one of them "
             "{ name = \"id\", type = \"string\" }", path);
    json_decref(d);
    return NULL;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
                  json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

json_t *templates_list(const char *dir)
{
    json_t *out = json_array();
    DIR *d = opendir(dir);
    if (!d || !out)
        return out;
    struct dirent *e;
    json_t *items[256];
    int n = 0;
    while ((e = readdir(d)) && n < 256) {
        size_t k = strlen(e->d_name);
        if (e->d_name[0] == '.' || k < 5 || strcmp(e->d_name + k - 4, ".lua") ||
            rules_is_test_file(e->d_name))
            continue;
        char name[80], path[4200];
        if (k - 4 >= sizeof name)
            continue;
        memcpy(name, e->d_name, k - 4);
        name[k - 4] = 0;
        if (!name_ok(name))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        int rc;
        char *src = rules_read_file(path, &len, &rc);
        json_t *t = json_pack("{s:s,s:s}", "name", name, "file", e->d_name);
        char err[600] = "";
        json_t *decl = src ? read_decl(path, src, len, err, sizeof err) : NULL;
        if (!src)
            snprintf(err, sizeof err, "%.400s: %s", path, err_str(rc));
        if (decl) {
            json_t *ds = json_object_get(decl, "description");
            json_object_set_new(t, "description",
                                json_string(json_is_string(ds) ? json_string_value(ds) : ""));
            json_object_set(t, "params", json_object_get(decl, "params"));
        } else {
            json_object_set_new(t, "error", json_string(err));
        }
        json_decref(decl);
        free(src);
        items[n++] = t;
    }
    closedir(d);
    qsort(items, (size_t)n, sizeof *items, cmp_name);
    for (int i = 0; i < n; i++)
        json_array_append_new(out, items[i]);
    return out;
}

static int add(char **b, size_t *n, size_t *cap, const char *s, size_t k)
{
    if (k > (1u << 24))
        return ERR_TOOBIG;
    if (*n + k + 1 > *cap) {
        size_t c = (*cap ? *cap * 2 : 256) + k;
        char *p = realloc(*b, c);
        if (!p)
            return ERR_NOMEM;
        *b = p;
        *cap = c;
    }
    memcpy(*b + *n, s, k);
    *n += k;
    (*b)[*n] = 0;
    return 0;
}

/* What snprintf wrote into a buffer of `cap` bytes. */
static size_t fmt_len(int r, size_t cap)
{
    return r < 0 ? 0 : (size_t)r < cap ? (size_t)r : cap - 1;
}

/* "..." with every byte but printable ASCII (and " \) written as \ddd:
 * the literal is one line and can hold no code. */
static int add_str(char **b, size_t *n, size_t *cap, const char *s, size_t k)
{
    int rc = add(b, n, cap, "\"", 1);
    for (size_t i = 0; !rc && i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            rc = add(b, n, cap, (const char *)&s[i], 1);
        else
            rc = add(b, n, cap, esc, fmt_len(snprintf(esc, sizeof esc, "\\%03u", c), sizeof esc));
    }
    return rc ? rc : add(b, n, cap, "\"", 1);
}

static int add_value(char **b, size_t *n, size_t *cap, const json_t *v)
{
    char num[40];
    switch (json_typeof(v)) {
    case JSON_STRING: return add_str(b, n, cap, json_string_value(v), json_string_length(v));
    case JSON_TRUE: return add(b, n, cap, "true", 4);
    case JSON_FALSE: return add(b, n, cap, "false", 5);
    case JSON_INTEGER:
        return add(b, n, cap, num, fmt_len(snprintf(num, sizeof num, "%lld",
                                                    (long long)json_integer_value(v)), sizeof num));
    case JSON_REAL:
        if (!isfinite(json_real_value(v)))
            return ERR_INVAL;
        return add(b, n, cap, num, fmt_len(snprintf(num, sizeof num, "%.17g", json_real_value(v)), sizeof num));
    case JSON_ARRAY: {
        int rc = add(b, n, cap, "{ ", 2);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!rc && !json_is_string(x))
                rc = ERR_INVAL;
            if (!rc)
                rc = add_value(b, n, cap, x);
            if (!rc)
                rc = add(b, n, cap, ", ", 2);
        }
        return rc ? rc : add(b, n, cap, "}", 1);
    }
    default: return ERR_INVAL;
    }
}

int templates_lua_literal(const json_t *v, char **out)
{
    char *b = NULL;
    size_t n = 0, cap = 0;
    int rc = add_value(&b, &n, &cap, v);
    if (rc) {
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

/* `v` fits the declared type; *why says how it does not. */
static int type_ok(const char *ty, const json_t *v, const char **why)
{
    if (!strcmp(ty, "string")) {
        *why = "a string of 1-1000 bytes";
        return json_is_string(v) && json_string_length(v) >= 1 &&
               json_string_length(v) <= TEMPLATES_MAX_STR;
    }
    if (!strcmp(ty, "number")) {
        *why = "a number";
        return json_is_number(v) && isfinite(json_number_value(v));
    }
    if (!strcmp(ty, "integer")) {
        *why = "an integer";
        return json_is_integer(v);
    }
    if (!strcmp(ty, "boolean")) {
        *why = "true or false";
        return json_is_boolean(v);
    }
    *why = "a list of at most 64 strings of 1-1000 bytes";
    if (!json_is_array(v) || json_array_size(v) > TEMPLATES_MAX_LIST)
        return 0;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
        if (!json_is_string(x) || json_string_length(x) < 1 ||
            json_string_length(x) > TEMPLATES_MAX_STR)
            return 0;
    return 1;
}

int templates_instantiate(const char *dir, const char *name, const json_t *params, char **src,
                          size_t *len, char *id, size_t idlen, struct reqerr *e)
{
    *src = NULL;
    if (!name_ok(name))
        return reqerr_set(e, 400, "invalid_field", "template",
                          "\"template\" is a template's name, like \"cart_abandon\" "
                          "(GET /api/v1/templates lists them)");
    if (params && !json_is_object(params))
        return reqerr_set(e, 400, "invalid_field", "params",
                          "\"params\" must be an object of parameter values");
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.lua", dir, name);
    size_t tl;
    int rc;
    char *t = rules_read_file(path, &tl, &rc);
    if (!t)
        return reqerr_set(e, 404, "unknown_template", "template",
                          "no template \"%s\" (GET /api/v1/templates lists them)", name);
    char err[600];
    json_t *decl = read_decl(path, t, tl, err, sizeof err);
    if (!decl) {
        free(t);
        return reqerr_set(e, 500, "template_broken", "template", "%s", err);
    }
    json_t *ps = json_object_get(decl, "params");
    /* every value given must be declared */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)params, k, v) {
        int found = 0;
        size_t i;
        json_t *p;
        json_array_foreach(ps, i, p)
            found |= !strcmp(json_string_value(json_object_get(p, "name")), k);
        if (!found) {
            rc = reqerr_set(e, 400, "unknown_field", "params",
                            "template \"%s\" has no parameter \"%.64s\"", name, k);
            snprintf(e->field, sizeof e->field, "params.%.100s", k);
            goto out;
        }
    }
    char *b = NULL;
    size_t n = 0, cap = 0;
    rc = add(&b, &n, &cap, "local P = { ", 12);
    size_t i;
    json_t *p;
    json_array_foreach(ps, i, p) {
        const char *pn = json_string_value(json_object_get(p, "name"));
        const char *ty = json_string_value(json_object_get(p, "type"));
        json_t *val = params ? json_object_get(params, pn) : NULL;
        if (!val || json_is_null(val))
            val = json_object_get(p, "default");
        const char *why;
        if (!val) {
            rc = reqerr_set(e, 400, "missing_field", "params",
                            "template \"%s\" needs parameter \"%s\" (%s)", name, pn,
                            json_is_string(json_object_get(p, "description"))
                                ? json_string_value(json_object_get(p, "description"))
                                : ty);
        } else if (!type_ok(ty, val, &why)) {
            rc = reqerr_set(e, 400, "invalid_field", "params",
                            "parameter \"%s\" of template \"%s\" must be %s", pn, name, why);
        } else if (!strcmp(pn, "id") && !id_valid(json_string_value(val))) {
            rc = reqerr_set(e, 400, "invalid_field", "params",
                            "parameter \"id\" must be 1-128 characters of A-Z a-z 0-9 _ - . : @");
        }
        if (rc) {
            if (e->status == 400)
                snprintf(e->field, sizeof e->field, "params.%.100s", pn);
            break;
        }
        if (!strcmp(pn, "id"))
            snprintf(id, idlen, "%s", json_string_value(val));
        rc = add(&b, &n, &cap, pn, strlen(pn));
        if (!rc)
            rc = add(&b, &n, &cap, " = ", 3);
        if (!rc)
            rc = add_value(&b, &n, &cap, val);
        if (!rc)
            rc = add(&b, &n, &cap, ", ", 2);
    }
    char tail[160];
    snprintf(tail, sizeof tail, "} %s (template %s)", TEMPLATES_MARK, name);
    if (!rc)
        rc = add(&b, &n, &cap, tail, strlen(tail));
    if (!rc) { /* the template with its @params line replaced */
        long at = mark_line(t, tl);
        const char *eol = memchr(t + at, '\n', tl - (size_t)at);
        size_t after = eol ? (size_t)(eol - t) : tl;
        char *s = NULL;
        size_t sn = 0, sc = 0;
        rc = add(&s, &sn, &sc, t, (size_t)at);
        if (!rc)
            rc = add(&s, &sn, &sc, b, n);
        if (!rc)
            rc = add(&s, &sn, &sc, t + after, tl - after);
        if (rc)
            free(s);
        else {
            *src = s;
            *len = sn;
        }
    }
    if (rc && !e->status)
        reqerr_from_code(e, rc, "template");
    free(b);
out:
    json_decref(decl);
    free(t);
    return rc;
}
