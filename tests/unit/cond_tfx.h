/*
 * cond_tfx.h — helpers shared by the condition suites (test_cond*.c):
 * compile a condition from JSON text, evaluate it on attributes given as
 * JSON text (encoded to msgpack, as profiles are stored) and compare.
 */
#ifndef PROMOD_COND_TFX_H
#define PROMOD_COND_TFX_H
#include <criterion/criterion.h>
#include <string.h>
#include <jansson.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/reqerr.h"
#include "codec/codec.h"
#include "engine/cond.h"

#define CONDTFX_CASES PROMOD_SHARED "/conformance/growthbook-cases.json"

static inline json_t *condtfx_json(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    cr_assert(v, "test JSON does not parse: %s (%s)", text, je.text);
    return v;
}

/* Compile `cond` in `mode`; asserts success. */
static inline struct cond *condtfx_compile(const char *cond, enum cond_mode mode,
                                           const struct cond_opts *extra)
{
    json_t *j = condtfx_json(cond);
    struct cond_opts o = extra ? *extra : (struct cond_opts){ 0 };
    o.mode = mode;
    struct reqerr e = { 0 };
    struct cond *c = NULL;
    int rc = cond_compile(j, &o, &c, &e);
    cr_assert_eq(rc, 0, "compile %s (%s mode): %s", cond, mode == COND_STRICT ? "strict" : "lenient",
                 e.message);
    json_decref(j);
    reqerr_clear(&e);
    return c;
}

/* Evaluate a compiled condition on attributes given as JSON text. */
static inline int condtfx_eval(const struct cond *c, const char *attrs, const struct cond_env *env)
{
    json_t *a = condtfx_json(attrs);
    struct buf mp = BUF_INIT;
    cr_assert_eq(codec_json_to_msgpack(a, &mp), 0);
    int rc = cond_eval(c, mp.p, mp.len, env);
    int rj = cond_eval_json(c, a, env);
    cr_assert_eq(rc, rj, "msgpack and jansson entry points disagree on %s", attrs);
    struct cond_attrs at;
    cr_assert_eq(cond_attrs_init(&at, mp.p, mp.len), 0);
    int ra = cond_eval_attrs(c, &at, env);
    cond_attrs_free(&at);
    cr_assert_eq(rc, ra, "cond_eval and cond_eval_attrs disagree on %s", attrs);
    buf_free(&mp);
    json_decref(a);
    return rc;
}

/* cond (strict unless it says otherwise) on attrs must give want. */
static inline void condtfx_check_mode(const char *cond, const char *attrs, int want, enum cond_mode mode,
                                      const struct cond_env *env, const char *file, int line)
{
    struct cond *c = condtfx_compile(cond, mode, NULL);
    int got = condtfx_eval(c, attrs, env);
    cr_expect_eq(got, want, "%s:%d: %s on %s: got %d, want %d", file, line, cond, attrs, got, want);
    cond_free(c);
}

#define CHECK(cond, attrs, want) condtfx_check_mode(cond, attrs, want, COND_STRICT, NULL, __FILE__, __LINE__)
#define CHECK_LENIENT(cond, attrs, want) \
    condtfx_check_mode(cond, attrs, want, COND_LENIENT, NULL, __FILE__, __LINE__)

#endif
