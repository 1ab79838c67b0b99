/*
 * cond_re.c — JavaScript regular expressions on PCRE2.
 *
 * GrowthBook's SDKs run $regex with JavaScript's RegExp (no flags; "i" for
 * $regexi), so the server must give a pattern the meaning JavaScript gives
 * it.  PCRE2 (Debian's libpcre2-8) is the closest engine available: the
 * same Perl-style syntax (\d \w \b, lazy quantifiers, lookahead and
 * lookbehind, non-capturing and named groups, backreferences), a JIT, and
 * match limits against catastrophic backtracking.  POSIX <regex.h> would
 * accept every pattern of the conformance file but not \d, (?:...), lazy
 * quantifiers or lookaround, which real targeting patterns use.
 *
 * Where the two dialects differ, the pattern is translated before PCRE2
 * sees it, so the meaning is JavaScript's:
 *   .            [^\n\r\x{2028}\x{2029}]   (JS line terminators)
 *   \s \S        JS's whitespace set (Unicode spaces, BOM); \S inside a
 *                class stays PCRE2's ASCII \S
 *   \v           vertical tab (PCRE2: any vertical space)
 *   \xHH \uHHHH  exactly two / four hex digits, else the letter itself;
 *                a \uD8xx\uDCxx pair is one astral character
 *   \a \e \p \h \Q \K ...  JS identity escapes: the letter itself
 *   [ in a class a literal "[" (PCRE2 would read [:alpha:])
 *   $            the end of the subject only (PCRE2_DOLLAR_ENDONLY)
 *   [] and [^]   never / any character (PCRE2_ALLOW_EMPTY_CLASS)
 * and PCRE2-only syntax is refused as JavaScript refuses it: possessive
 * quantifiers (a*+), groups other than (?: (?= (?! (?<= (?<! (?<name>,
 * and (*VERB) prefixes.
 * Remaining differences (documented in docs/segments.md): JS without the
 * "u" flag sees UTF-16 code units, so "." matches half of an astral
 * character there and a whole one here; each alternative of a lookbehind
 * must have a fixed length in PCRE2 10.42; case-insensitive matching uses
 * Unicode case folding (JS: toUpperCase canonicalisation, which differs for
 * a few letters such as U+017F); a backreference to a group that does not
 * exist is an error (JS: an octal escape).
 *
 * Matching never allocates with the JIT: the match data comes from a
 * small arena on the caller's stack through a PCRE2 general context.
 */
#include "engine/cond.h"
#include "engine/cond_impl.h"

#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/err.h"

/* Backtracking budget of one match: a pathological pattern on a hostile
 * attribute fails (no match) instead of spinning. */
#define RE_MATCH_LIMIT 1000000u
#define RE_DEPTH_LIMIT 10000u

struct cond_re {
    pcre2_code *code;
    pcre2_match_context *mctx;
    bool jit;
};

/* JavaScript's WhiteSpace and LineTerminator, as a PCRE2 class body. */
static const char JS_SPACE[] =
    "\\t\\n\\x0b\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"
    "\\x{205f}\\x{3000}\\x{feff}";

struct xl {
    struct sbuf out;
    char *msg;
    size_t msglen;
    int err;
};

static void xl_add(struct xl *x, const char *p, size_t n)
{
    if (!x->err && cond_sbuf_add(&x->out, p, n))
        x->err = ERR_NOMEM;
}
static void xl_adds(struct xl *x, const char *s) { xl_add(x, s, strlen(s)); }

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
}

static bool hexn(const char *p, size_t avail, int n, unsigned *v)
{
    if ((size_t)n > avail)
        return false;
    *v = 0;
    for (int i = 0; i < n; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0)
            return false;
        *v = *v << 4 | (unsigned)h;
    }
    return true;
}

static int refuse(struct xl *x, size_t at, const char *why)
{
    snprintf(x->msg, x->msglen, "offset %zu: %s", at, why);
    return x->err = ERR_INVAL;
}

/* Is p[0..] the rest of a {n}, {n,} or {n,m} quantifier (p at "{")? */
static size_t brace_quant(const char *p, size_t n)
{
    size_t i = 1, d = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++, d++;
    if (!d)
        return 0;
    if (i < n && p[i] == ',') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    return i < n && p[i] == '}' ? i + 1 : 0;
}

/* One escape (p at the backslash); returns bytes consumed or 0 on refusal. */
static size_t escape(struct xl *x, const char *p, size_t n, size_t at, bool in_class)
{
    if (n < 2) {
        refuse(x, at, "\\ at end of pattern");
        return 0;
    }
    unsigned char c = (unsigned char)p[1];
    char tmp[32];
    unsigned v, lo;
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 't': case 'n': case 'r': case 'f':
    case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
    case '8': case '9':
        xl_add(x, p, 2);
        return 2;
    case 'b':
        xl_adds(x, in_class ? "\\x08" : "\\b"); /* backspace inside a class */
        return 2;
    case 'B':
        xl_adds(x, in_class ? "B" : "\\B");
        return 2;
    case 's':
        if (in_class)
            xl_adds(x, JS_SPACE);
        else {
            xl_adds(x, "[");
            xl_adds(x, JS_SPACE);
            xl_adds(x, "]");
        }
        return 2;
    case 'S':
        if (in_class)
            xl_adds(x, "\\S");
        else {
            xl_adds(x, "[^");
            xl_adds(x, JS_SPACE);
            xl_adds(x, "]");
        }
        return 2;
    case 'v':
        xl_adds(x, "\\x0b");
        return 2;
    case 'c':
        if (n >= 3 && (((unsigned char)p[2] | 0x20) >= 'a' && ((unsigned char)p[2] | 0x20) <= 'z')) {
            snprintf(tmp, sizeof tmp, "\\x{%x}", (unsigned char)p[2] % 32);
            xl_adds(x, tmp);
            return 3;
        }
        xl_adds(x, "\\\\c"); /* Annex B: a backslash and a "c" */
        return 2;
    case 'x':
        if (hexn(p + 2, n - 2, 2, &v)) {
            snprintf(tmp, sizeof tmp, "\\x{%x}", v);
            xl_adds(x, tmp);
            return 4;
        }
        xl_adds(x, "x");
        return 2;
    case 'u':
        if (!hexn(p + 2, n - 2, 4, &v)) {
            xl_adds(x, "u");
            return 2;
        }
        if (v >= 0xd800 && v <= 0xdbff && n >= 12 && p[6] == '\\' && p[7] == 'u' &&
            hexn(p + 8, n - 8, 4, &lo) && lo >= 0xdc00 && lo <= 0xdfff) {
            snprintf(tmp, sizeof tmp, "\\x{%x}", 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00));
            xl_adds(x, tmp);
            return 12;
        }
        if (v >= 0xd800 && v <= 0xdfff) {
            refuse(x, at, "a lone surrogate \\u escape cannot match UTF-8 text");
            return 0;
        }
        snprintf(tmp, sizeof tmp, "\\x{%x}", v);
        xl_adds(x, tmp);
        return 6;
    case 'k':
        if (n >= 3 && p[2] == '<' && !in_class) {
            xl_add(x, p, 2);
            return 2;
        }
        xl_adds(x, "k");
        return 2;
    default:
        break;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        xl_add(x, p + 1, 1); /* JS identity escape: the letter itself */
        return 2;
    }
    if (c >= 0x80) { /* identity escape of a non-ASCII character: copy it */
        size_t k = 2;
        while (k < n && ((unsigned char)p[k] & 0xc0) == 0x80)
            k++;
        xl_add(x, p + 1, k - 1);
        return k;
    }
    xl_add(x, p, 2); /* \. \/ \- \$ ...: literal punctuation in both */
    return 2;
}

static int translate(struct xl *x, const char *p, size_t n)
{
    bool in_class = false;
    enum { Q_NONE, Q_QUANT, Q_LAZY } q = Q_NONE; /* what the previous token was */
    size_t i = 0;
    while (i < n && !x->err) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\') {
            size_t k = escape(x, p + i, n - i, i, in_class);
            if (!k)
                return x->err;
            i += k;
            q = Q_NONE;
            continue;
        }
        if (in_class) {
            if (c == ']')
                in_class = false;
            if (c == '[')
                xl_adds(x, "\\[");
            else
                xl_add(x, p + i, 1);
            i++;
            continue;
        }
        switch (c) {
        case '[':
            in_class = true;
            xl_add(x, p + i, 1);
            i++;
            if (i < n && p[i] == '^')
                xl_add(x, p + i++, 1);
            if (i < n && p[i] == ']') { /* [] / [^]: JS's empty class */
                xl_add(x, p + i++, 1);
                in_class = false;
            }
            q = Q_NONE;
            continue;
        case '(':
            if (i + 1 < n && p[i + 1] == '*')
                return refuse(x, i, "nothing to repeat");
            if (i + 1 < n && p[i + 1] == '?') {
                const char *g = p + i + 2;
                size_t left = n - i - 2;
                /* (?<= (?<! and (?<name>: PCRE2 checks the name */
                bool ok = left >= 1 && (g[0] == ':' || g[0] == '=' || g[0] == '!' || g[0] == '<');
                if (!ok)
                    return refuse(x, i, "invalid group (JavaScript knows (?: (?= (?! (?<= (?<! (?<name>)");
            }
            xl_add(x, p + i, 1);
            i++;
            q = Q_NONE;
            continue;
        case '.':
            xl_adds(x, "[^\\n\\r\\x{2028}\\x{2029}]");
            i++;
            q = Q_NONE;
            continue;
        case '*': case '+': case '?':
            if (q == Q_QUANT && c == '?') { /* lazy */
                xl_add(x, p + i++, 1);
                q = Q_LAZY;
                continue;
            }
            if (q != Q_NONE)
                return refuse(x, i, c == '+' && q == Q_QUANT
                                        ? "nothing to repeat (possessive quantifiers are not JavaScript)"
                                        : "nothing to repeat");
            xl_add(x, p + i++, 1);
            q = Q_QUANT;
            continue;
        case '{': {
            size_t k = brace_quant(p + i, n - i);
            if (k) {
                if (q != Q_NONE)
                    return refuse(x, i, "nothing to repeat");
                xl_add(x, p + i, k);
                i += k;
                q = Q_QUANT;
            } else {
                xl_adds(x, "\\{"); /* Annex B: a literal brace */
                i++;
                q = Q_NONE;
            }
            continue;
        }
        case '}':
            xl_adds(x, "\\}");
            i++;
            q = Q_NONE;
            continue;
        default:
            xl_add(x, p + i, 1);
            i++;
            q = Q_NONE;
        }
    }
    return x->err;
}

int cond_re_compile(const char *pat, size_t n, bool icase, struct cond_re **out, char *msg,
                    size_t msglen)
{
    struct xl x = { .msg = msg, .msglen = msglen, .err = 0 };
    *out = NULL;
    msg[0] = 0;
    cond_sbuf_init(&x.out);
    int rc = translate(&x, pat, n);
    if (rc) {
        cond_sbuf_free(&x.out);
        return rc;
    }
    struct cond_re *re = calloc(1, sizeof *re);
    if (!re) {
        cond_sbuf_free(&x.out);
        return ERR_NOMEM;
    }
    int ecode;
    PCRE2_SIZE eoff;
    /* PCRE2_MATCH_UNSET_BACKREF: a reference to a group that has not matched
     * matches the empty string, as in JavaScript */
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY |
                    PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS | PCRE2_NEVER_BACKSLASH_C |
                    (icase ? PCRE2_CASELESS : 0);
    re->code = pcre2_compile((PCRE2_SPTR)x.out.p, x.out.len, opts, &ecode, &eoff, NULL);
    cond_sbuf_free(&x.out);
    if (!re->code) {
        PCRE2_UCHAR text[160];
        pcre2_get_error_message(ecode, text, sizeof text);
        /* offsets are into the translation; say what, not where */
        snprintf(msg, msglen, "%s", (const char *)text);
        free(re);
        return ecode == PCRE2_ERROR_NOMEMORY ? ERR_NOMEM : ERR_INVAL;
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    re->mctx = pcre2_match_context_create(NULL);
    if (!re->mctx) {
        cond_re_free(re);
        return ERR_NOMEM;
    }
    pcre2_set_match_limit(re->mctx, RE_MATCH_LIMIT);
    pcre2_set_depth_limit(re->mctx, RE_DEPTH_LIMIT);
    *out = re;
    return 0;
}

/* The match data of one call lives in this arena; the interpreter's
 * backtracking frames (no JIT) overflow to the heap. */
struct bump {
    unsigned char *base;
    size_t used, cap;
};

static void *bump_malloc(size_t size, void *ud)
{
    struct bump *b = ud;
    size = (size + 15) & ~(size_t)15;
    if (size <= b->cap - b->used) {
        void *p = b->base + b->used;
        b->used += size;
        return p;
    }
    return malloc(size);
}

static void bump_free(void *p, void *ud)
{
    struct bump *b = ud;
    if (p && ((unsigned char *)p < b->base || (unsigned char *)p >= b->base + b->cap))
        free(p);
}

int cond_re_test(const struct cond_re *re, const char *s, size_t n)
{
    alignas(16) unsigned char arena[1024];
    struct bump b = { arena, 0, sizeof arena };
    pcre2_general_context *gc = pcre2_general_context_create(bump_malloc, bump_free, &b);
    if (!gc)
        return ERR_NOMEM;
    pcre2_match_data *md = pcre2_match_data_create(1, gc);
    if (!md) {
        pcre2_general_context_free(gc);
        return ERR_NOMEM;
    }
    int rc = re->jit ? pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, 0, 0, md, re->mctx)
                     : PCRE2_ERROR_JIT_BADOPTION;
    if (rc == PCRE2_ERROR_JIT_BADOPTION || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, 0, PCRE2_NO_JIT, md, re->mctx);
    pcre2_match_data_free(md);
    pcre2_general_context_free(gc);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMEMORY)
        return ERR_NOMEM;
    return 0; /* no match, or a limit reached */
}

void cond_re_free(struct cond_re *re)
{
    if (!re)
        return;
    pcre2_match_context_free(re->mctx);
    pcre2_code_free(re->code);
    free(re);
}
