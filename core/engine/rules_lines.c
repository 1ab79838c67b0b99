/*
 * rules_lines.c — where each field of a campaign or plugin file is
 * written, so that validation can say file:line (see rules.h).
 */
#include "engine/rules.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rules_loc {
    char path[96];
    int line;
    int in_return;
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

static void loc_add(struct rules_lines *v, const char *path, int line, int in_return)
{
    if (path[0] == '\1' || v->nlocs >= 100000)
        return; /* anonymous table (a call argument, a table inside a function) */
    if (v->nlocs == v->caplocs) {
        int cap = v->caplocs ? v->caplocs * 2 : 64;
        struct rules_loc *n = realloc(v->locs, (size_t)cap * sizeof *n);
        if (!n)
            return;
        v->locs = n;
        v->caplocs = cap;
    }
    struct rules_loc *l = &v->locs[v->nlocs++];
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

static void build_locs(struct rules_lines *v)
{
    v->built = 1;
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

static int loc_find(struct rules_lines *v, const char *path)
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

int rules_lines_find(struct rules_lines *v, const char *path)
{
    if (!v->built)
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

void rules_lines_free(struct rules_lines *w)
{
    free(w->locs);
    w->locs = NULL;
    w->nlocs = w->caplocs = w->built = 0;
}

int rules_line_of(const char *src, size_t len, const char *path)
{
    struct rules_lines v = { .src = src, .len = len };
    int line = rules_lines_find(&v, path);
    rules_lines_free(&v);
    return line ? line : 1;
}
