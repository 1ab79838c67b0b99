/*
 * fuzz_cond.c — the GrowthBook condition evaluator (core/engine/cond*.c)
 * and the condition sets built from it (core/engine/condset*.c): what a
 * segment definition, a campaign audience or an experiment's targeting
 * brings in, evaluated against what a customer's attributes hold.
 *
 * Input: the condition (JSON) up to the first newline, the attributes up
 * to the second, saved groups after it (all optional; `{"a":1}\n{"a":1}`
 * is a complete input).  Each part is read by codec_parse_json, as the
 * API reads them.  The condition is compiled in both modes:
 *  - lenient mode compiles every JSON document (only nesting past
 *    COND_MAX_DEPTH or memory may refuse it);
 *  - a strict refusal is ERR_INVAL or ERR_TOOBIG with a field that is a
 *    path ("$...") at the start of the message;
 *  - what strict mode accepts, lenient mode accepts, and both evaluate it
 *    the same way.
 * The attributes, encoded as msgpack, are evaluated through cond_eval,
 * cond_eval_attrs (indexed) and cond_eval_json, which must agree; the
 * attribute bytes are also handed to the evaluator raw, as msgpack (a
 * stored profile that is damaged), where the two msgpack entry points must
 * agree too.  A strict condition becomes the only member of a condset,
 * with "all of / any of / none of" tests on the segments it names (a
 * membership that is the same for the set's refs and for cond_eval's
 * callback), whose verdict must equal cond_eval's and those tests'.  The
 * dependency lists (paths, segments, groups) and cond_reads are walked.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/buf.h"
#include "base/err.h"
#include "base/reqerr.h"
#include "codec/codec.h"
#include "engine/cond.h"
#include "engine/condset.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

/* Segment membership, the same everywhere: in segment `id` when its
 * length is odd; "fail" aborts the evaluation (a store error). */
static int in_segment(const char *id, size_t len)
{
    (void)id;
    return len % 2 == 1;
}

static int segment_cb(void *ud, const char *id, size_t idlen, const char *mp, size_t len)
{
    (void)ud;
    (void)mp;
    (void)len;
    if (idlen == 4 && !memcmp(id, "fail", 4))
        return ERR_IO;
    return in_segment(id, idlen);
}

static int valid_result(int r)
{
    return r == 0 || r == 1 || r == ERR_PARSE || r == ERR_TOOBIG || r == ERR_NOMEM ||
           r == ERR_INVAL || r == ERR_IO;
}

/* cond_eval and cond_eval_attrs on the same bytes must agree (when the
 * bytes can be indexed at all). */
static int eval_both(const struct cond *c, const char *mp, size_t len, const struct cond_env *env,
                     const char *what)
{
    int r = cond_eval(c, mp, len, env);
    if (!valid_result(r))
        FAIL("cond_eval on %s: unexpected %d", what, r);
    struct cond_attrs at;
    if (cond_attrs_init(&at, mp, len) == 0) {
        int ri = cond_eval_attrs(c, &at, env);
        if (ri != r)
            FAIL("cond_eval %d and cond_eval_attrs %d differ on %s", r, ri, what);
    }
    cond_attrs_free(&at);
    return r;
}

/* A one-member condset built from the strict condition, plus membership
 * tests on the segments the condition names (the i-th in the list "all
 * of" when i % 3 == 0, "any of" when 1, "none of" when 2), agrees with
 * cond_eval and those tests on well-formed attributes. */
static void check_condset(const json_t *cj, const struct cond *c, const struct buf *mp)
{
    const char *lists[3][8];
    int nl[3] = { 0, 0, 0 };
    size_t nseg = cond_nsegments(c);
    for (size_t i = 0; i < nseg; i++) {
        const char *id = cond_segment(c, i);
        if (!strcmp(id, "fail"))
            return; /* the set cannot fail an evaluation: nothing to compare */
        if (nl[i % 3] < 8)
            lists[i % 3][nl[i % 3]++] = id;
    }
    struct condset_build *b;
    struct condset *cs = NULL;
    if (condset_build_new(1, &b))
        return;
    int rc = condset_build_set(b, 0, cj, lists[0], nl[0], nl[1] ? lists[1] : NULL, nl[1], lists[2],
                               nl[2], NULL);
    if (rc) {
        condset_build_free(b);
        if (rc == ERR_NOMEM || rc == ERR_TOOBIG)
            return;
        FAIL("condset_build_set refused a condition strict mode accepted (%d)", rc);
    }
    if (condset_build_finish(b, &cs))
        return;
    int nrefs = condset_nrefs(cs);
    uint64_t *refs = calloc(CONDSET_WORDS(nrefs) + 1, sizeof *refs);
    struct condset_scratch *sc = condset_scratch_new();
    for (int k = 0; refs && k < nrefs; k++) {
        const char *id = condset_ref(cs, k);
        if (condset_ref_find(cs, id, strlen(id)) != k)
            FAIL("condset_ref_find(\"%s\") is not %d", id, k);
        if (in_segment(id, strlen(id)))
            refs[k >> 6] |= (uint64_t)1 << (k & 63);
    }
    if (refs && sc) {
        struct cond_env env = { .segment = segment_cb };
        int want = cond_eval(c, mp->p, mp->len, &env);
        for (int i = 0; i < nl[0]; i++)
            want = want == 1 && in_segment(lists[0][i], strlen(lists[0][i]));
        if (nl[1]) {
            int any = 0;
            for (int i = 0; i < nl[1]; i++)
                any |= in_segment(lists[1][i], strlen(lists[1][i]));
            want = want == 1 && any;
        }
        for (int i = 0; i < nl[2]; i++)
            want = want == 1 && !in_segment(lists[2][i], strlen(lists[2][i]));
        uint64_t out[1] = { 0 };
        for (int round = 0; round < 2 && (want == 0 || want == 1); round++) {
            /* twice: the second time the scratch remembers the values */
            int n = condset_eval(cs, sc, mp->p, mp->len, refs, NULL, out);
            if (n == ERR_NOMEM)
                break;
            if (n < 0 || n > 1 || (int)(out[0] & 1) != n)
                FAIL("condset_eval returned %d with bit %d", n, (int)(out[0] & 1));
            if (n != want)
                FAIL("condset says %d, cond_eval and the segment lists %d (round %d)", n, want, round);
            char why[256];
            int ex = condset_explain(cs, sc, 0, mp->p, mp->len, refs, why, sizeof why);
            if (ex != ERR_NOMEM && ex != n)
                FAIL("condset_explain says %d, condset_eval %d", ex, n);
            if (ex == 0 && !why[0])
                FAIL("condset_explain gives no reason");
        }
    }
    condset_scratch_free(sc);
    free(refs);
    condset_free(cs);
}

static void walk_deps(const struct cond *c)
{
    for (size_t i = 0; i < cond_npaths(c); i++) {
        const char *p = cond_path(c, i);
        size_t len = strlen(p);
        if (!cond_reads(c, p, len))
            FAIL("cond_reads(\"%s\") is false for a path the condition reads", p);
        const char *dot = memchr(p, '.', len);
        if (dot && !cond_reads(c, p, (size_t)(dot - p)))
            FAIL("cond_reads(\"%.*s\") is false above \"%s\"", (int)(dot - p), p, p);
    }
    for (size_t i = 0; i < cond_nsegments(c); i++)
        (void)strlen(cond_segment(c, i));
    for (size_t i = 0; i < cond_ngroups(c); i++)
        (void)strlen(cond_group(c, i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *nl1 = memchr(p, '\n', size);
    const char *a = nl1 ? nl1 + 1 : end;
    const char *nl2 = nl1 ? memchr(a, '\n', (size_t)(end - a)) : NULL;
    const char *g = nl2 ? nl2 + 1 : end;
    size_t clen = (size_t)((nl1 ? nl1 : end) - p), alen = (size_t)((nl2 ? nl2 : end) - a),
           glen = (size_t)(end - g);

    json_t *cj = codec_parse_json(p, clen, NULL, NULL, 0);
    if (!cj)
        return 0;
    json_t *aj = alen ? codec_parse_json(a, alen, NULL, NULL, 0) : NULL;
    json_t *gj = glen ? codec_parse_json(g, glen, NULL, NULL, 0) : NULL;
    struct cond_groups *groups = NULL;
    if (gj)
        (void)cond_groups_compile(gj, &groups, NULL);

    struct cond_opts lo = { .mode = COND_LENIENT };
    struct cond_opts so = { .mode = COND_STRICT, .groups = groups };
    struct cond *lc = NULL, *sc = NULL;
    struct reqerr le = { 0 }, se = { 0 };
    int lrc = cond_compile(cj, &lo, &lc, &le);
    if (lrc && lrc != ERR_TOOBIG && lrc != ERR_NOMEM)
        FAIL("lenient mode refused a JSON document (%d: %s)", lrc, le.message);
    int src = cond_compile(cj, &so, &sc, &se);
    if (src) {
        if (src != ERR_INVAL && src != ERR_TOOBIG && src != ERR_NOMEM)
            FAIL("strict compile returned %d", src);
        if (src != ERR_NOMEM && (se.field[0] != '$' || strncmp(se.message, se.field, strlen(se.field))))
            FAIL("strict refusal without its path: field \"%s\", message \"%s\"", se.field, se.message);
    } else if (lrc) {
        FAIL("strict mode accepted what lenient mode refused (%d)", lrc);
    }

    struct cond_env env = { .groups = groups, .segment = segment_cb };
    struct buf mp = BUF_INIT;
    int have_mp = aj && codec_json_to_msgpack(aj, &mp) == 0;
    if (lc) {
        walk_deps(lc);
        if (have_mp) {
            int r = eval_both(lc, mp.p, mp.len, &env, "encoded attributes");
            int rj = cond_eval_json(lc, aj, &env);
            if (rj != r)
                FAIL("cond_eval %d and cond_eval_json %d differ", r, rj);
            if (sc) {
                int rs = eval_both(sc, mp.p, mp.len, &env, "encoded attributes (strict)");
                if (rs != r)
                    FAIL("strict %d and lenient %d evaluations differ", rs, r);
            }
        }
        /* the attribute line itself as msgpack bytes */
        (void)eval_both(lc, a, alen, &env, "raw bytes");
        if (sc)
            (void)eval_both(sc, a, alen, &env, "raw bytes (strict)");
    }
    if (sc && have_mp && json_is_object(cj) && !groups)
        check_condset(cj, sc, &mp);

    buf_free(&mp);
    cond_free(lc);
    cond_free(sc);
    reqerr_clear(&le);
    reqerr_clear(&se);
    cond_groups_free(groups);
    json_decref(gj);
    json_decref(aj);
    json_decref(cj);
    return 0;
}
