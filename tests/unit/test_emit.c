/* test_emit.c — core/emit.c: the JSON / msgpack reply writer.  Every output
 * is read back with the real decoders (jansson, codec_msgpack_to_json). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "codec/emit.h"
#include "base/err.h"

TestSuite(emit, .timeout = 60);

/* The same document through both forms; returns what each decodes to. */
static void both(void (*write)(struct emit *), json_t **from_json, json_t **from_mp, char **text)
{
    struct buf bj = BUF_INIT, bm = BUF_INIT;
    struct emit e;
    emit_init(&e, &bj, 0);
    write(&e);
    cr_assert_eq(emit_error(&e), 0, "json form: %d", emit_error(&e));
    cr_assert_eq(e.depth, 0, "every container closed");
    emit_init(&e, &bm, 1);
    write(&e);
    cr_assert_eq(emit_error(&e), 0, "msgpack form: %d", emit_error(&e));
    json_error_t je;
    *from_json = json_loadb(bj.p, bj.len, 0, &je);
    cr_assert_not_null(*from_json, "valid JSON: %s (%s)", bj.p, je.text);
    int err = 0;
    *from_mp = codec_msgpack_to_json(bm.p, bm.len, &err);
    cr_assert_not_null(*from_mp, "valid msgpack (err %d)", err);
    *text = buf_steal(&bj);
    buf_free(&bm);
}

static void doc(struct emit *e)
{
    emit_map(e, 7);
    emit_key(e, "s", 1);
    emit_str(e, "q\"b\\s\n\t\x01 é ☃ 😀 </script>", strlen("q\"b\\s\n\t\x01 é ☃ 😀 </script>"));
    emit_key(e, "i", 1);
    emit_int(e, -123456789012345LL);
    emit_key(e, "small", 5);
    emit_array(e, 4);
    emit_int(e, 0);
    emit_int(e, 127);
    emit_int(e, -32);
    emit_int(e, -33);
    emit_end(e);
    emit_key(e, "r", 1);
    emit_array(e, 5);
    emit_real(e, 0.1);
    emit_real(e, 0.1 + 0.2);
    emit_real(e, 30.0);
    emit_real(e, 1.7976931348623157e308);
    emit_real(e, -5e-324);
    emit_end(e);
    emit_key(e, "b", 1);
    emit_array(e, 3);
    emit_bool(e, 1);
    emit_bool(e, 0);
    emit_null(e);
    emit_end(e);
    emit_key(e, "empty", 5);
    emit_map(e, 0);
    emit_end(e);
    emit_key(e, "nested", 6);
    emit_array(e, 1);
    emit_map(e, 1);
    emit_key(e, "k", 1);
    emit_array(e, 0);
    emit_end(e);
    emit_end(e);
    emit_end(e);
    emit_end(e);
}

Test(emit, json_and_msgpack_decode_to_the_same_values)
{
    json_t *a, *b;
    char *text;
    both(doc, &a, &b, &text);
    cr_expect(json_equal(a, b), "json and msgpack forms agree: %s", text);
    cr_expect_str_eq(json_string_value(json_object_get(a, "s")), "q\"b\\s\n\t\x01 é ☃ 😀 </script>");
    cr_expect_eq(json_integer_value(json_object_get(a, "i")), -123456789012345LL);
    json_t *r = json_object_get(a, "r");
    cr_expect(json_is_real(json_array_get(r, 2)), "30.0 stays a real: %s", text);
    cr_expect_eq(json_real_value(json_array_get(r, 0)), 0.1);
    cr_expect_eq(json_real_value(json_array_get(r, 1)), 0.1 + 0.2, "exact after reading back");
    cr_expect_eq(json_real_value(json_array_get(r, 3)), 1.7976931348623157e308);
    cr_expect_eq(json_real_value(json_array_get(r, 4)), -5e-324);
    cr_expect(strstr(text, "\"r\":[0.1,0.30000000000000004,30.0,"), "short when exact: %s", text);
    cr_expect(strstr(text, "\\u0001"), "control characters escaped: %s", text);
    json_decref(a);
    json_decref(b);
    free(text);
}

Test(emit, invalid_utf8_and_nul_are_errors)
{
    static const char *bad[] = { "\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\0b" };
    static const size_t len[] = { 1, 1, 2, 3, 4, 3 };
    for (int mp = 0; mp < 2; mp++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            struct buf b = BUF_INIT;
            struct emit e;
            emit_init(&e, &b, mp);
            emit_array(&e, 1);
            emit_str(&e, bad[i], len[i]);
            emit_end(&e);
            cr_expect_eq(emit_error(&e), ERR_INVAL, "case %zu (msgpack %d)", i, mp);
            emit_init(&e, &b, mp);
            emit_map(&e, 1);
            emit_key(&e, bad[i], len[i]);
            emit_null(&e);
            emit_end(&e);
            cr_expect_eq(emit_error(&e), ERR_INVAL, "key case %zu (msgpack %d)", i, mp);
            buf_free(&b);
        }
    cr_expect(emit_utf8_ok("\xf0\x9f\x98\x80", 4));
    cr_expect(!emit_utf8_ok("\xf0\x9f\x98", 3));
}

Test(emit, non_finite_reals_and_bad_nesting_are_errors)
{
    struct buf b = BUF_INIT;
    struct emit e;
    emit_init(&e, &b, 0);
    emit_real(&e, NAN);
    cr_expect_eq(emit_error(&e), ERR_INVAL);
    emit_init(&e, &b, 1);
    emit_real(&e, INFINITY);
    cr_expect_eq(emit_error(&e), ERR_INVAL);
    emit_init(&e, &b, 0);
    emit_end(&e);
    cr_expect_eq(emit_error(&e), ERR_INVAL, "closing what was never opened");
    emit_init(&e, &b, 0);
    for (int i = 0; i < EMIT_MAX_DEPTH + 5; i++)
        emit_array(&e, 1);
    cr_expect_eq(emit_error(&e), ERR_TOOBIG);
    buf_free(&b);
}

Test(emit, long_strings_and_big_containers_in_msgpack)
{
    /* str8/str16/str32 and map16/array16 headers */
    size_t sizes[] = { 31, 32, 255, 256, 65535, 65536, 100000 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *s = malloc(sizes[k]);
        memset(s, 'x', sizes[k]);
        struct buf b = BUF_INIT;
        struct emit e;
        emit_init(&e, &b, 1);
        emit_array(&e, 20);
        for (int i = 0; i < 19; i++)
            emit_int(&e, i * 1000);
        emit_str(&e, s, sizes[k]);
        emit_end(&e);
        cr_assert_eq(emit_error(&e), 0);
        int err;
        json_t *v = codec_msgpack_to_json(b.p, b.len, &err);
        cr_assert_not_null(v, "size %zu", sizes[k]);
        cr_expect_eq(json_array_size(v), 20);
        cr_expect_eq(json_string_length(json_array_get(v, 19)), sizes[k]);
        cr_expect_eq(json_integer_value(json_array_get(v, 18)), 18000);
        json_decref(v);
        buf_free(&b);
        free(s);
    }
}

Test(emit, jansson_values_and_raw_pieces)
{
    json_t *x = json_pack("{s:[i,f,s,b,n],s:{s:f}}", "a", 1, 2.5, "t\"", 1, "o", "p", 0.1 + 0.2);
    struct buf piece = BUF_INIT, b = BUF_INIT;
    struct emit e;
    emit_init(&e, &piece, 0);
    emit_map(&e, 1);
    emit_key(&e, "pre", 3);
    emit_str(&e, "rendered", 8);
    emit_end(&e);
    emit_init(&e, &b, 0);
    emit_array(&e, 2);
    emit_json(&e, x);
    emit_raw(&e, piece.p, piece.len);
    emit_end(&e);
    cr_assert_eq(emit_error(&e), 0);
    json_t *back = json_loadb(b.p, b.len, 0, NULL);
    cr_assert_not_null(back, "%s", b.p);
    cr_expect(json_equal(json_array_get(back, 0), x), "%s", b.p);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(back, 1), "pre")), "rendered");
    json_decref(back);
    json_decref(x);
    buf_free(&piece);
    buf_free(&b);
}

/* Significant digits of a %g-style text. */
static int sig_digits(const char *t)
{
    int n = 0, started = 0;
    for (const char *p = t; *p && *p != 'e' && *p != 'E'; p++) {
        if (*p < '0' || *p > '9')
            continue;
        if (*p != '0')
            started = 1;
        if (started)
            n++;
    }
    size_t len = strlen(t);
    if (len > 2 && !strcmp(t + len - 2, ".0")) /* the ".0" that keeps it a real */
        n--;
    return n;
}

/* Scores as hooks compute them: the fast path (no printf) must read back
 * exactly, and be as short as printf's 15- or 16-digit text when those
 * read back. */
Test(emit, computed_scores_print_short_and_exact)
{
    srand(99);
    char t[32], g15[40], g16[40];
    for (int i = 0; i < 300000; i++) {
        double ltv = (double)(rand() % 1000000) / 100.0;
        double v;
        switch (i % 4) {
        case 0: v = 30 * (1 + ltv / 1000); break;
        case 1: v = 30 * (1 + ltv / 1000) * 1.5; break;
        case 2: v = ltv; break;
        default: v = ((double)rand() / RAND_MAX - 0.5) * pow(10, (rand() % 30) - 8); break;
        }
        emit_fmt_real(t, v);
        cr_assert_eq(strtod(t, NULL), v, "%s reads back (%.17g)", t, v);
        snprintf(g15, sizeof g15, "%.15g", v);
        snprintf(g16, sizeof g16, "%.16g", v);
        if (strtod(g15, NULL) == v)
            cr_assert_leq(sig_digits(t), 15, "%s vs %s", t, g15);
        else if (strtod(g16, NULL) == v)
            cr_assert_leq(sig_digits(t), 16, "%s vs %s", t, g16);
    }
    /* powers of two and their neighbours, both signs */
    for (int e2 = -30; e2 <= 60; e2++)
        for (int d = -2; d <= 2; d++)
            for (int sgn = -1; sgn <= 1; sgn += 2) {
                double v = sgn * nextafter(ldexp(1.0, e2), d < 0 ? 0 : INFINITY);
                if (d == 0)
                    v = sgn * ldexp(1.0, e2);
                emit_fmt_real(t, v);
                cr_assert_eq(strtod(t, NULL), v, "%s reads back (%.17g)", t, v);
                snprintf(g15, sizeof g15, "%.15g", v);
                if (strtod(g15, NULL) == v)
                    cr_assert_leq(sig_digits(t), 15, "%s vs %s", t, g15);
            }
}

/* printf's answer: the shortest of %.15g/%.16g/%.17g that reads back */
static void ref_real(char *out, double v)
{
    for (int p = 15; p <= 17; p++) {
        snprintf(out, 40, "%.*g", p, v);
        if (p == 17 || strtod(out, NULL) == v)
            break;
    }
    if (!strpbrk(out, ".eEn"))
        strcat(out, ".0");
}

static uint64_t xs_state = 0x9e3779b97f4a7c15ULL;
static uint64_t xs(void)
{
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return xs_state;
}

Test(emit, real_text_is_printfs_on_random_bits_and_decimal_neighbours)
{
    char t[40], r[40];
    /* random bit patterns across the fast path's range and beyond */
    for (int i = 0; i < 400000; i++) {
        uint64_t u = xs();
        double v;
        memcpy(&v, &u, sizeof v);
        if (!isfinite(v))
            continue;
        if (i % 2) /* mostly inside 1e-10 .. 1e26 */
            v = ldexp(frexp(v, &(int){ 0 }), (int)(xs() % 120) - 34);
        emit_fmt_real(t, v);
        ref_real(r, v);
        cr_assert_str_eq(t, r, "%.17g", v);
    }
    /* powers of two: the rounding interval is narrower below them (2^64's
     * 16-digit rounding lies below it, too far to read back) */
    for (int e2 = -40; e2 <= 90; e2++)
        for (int d = -1; d <= 1; d++) {
            double v = ldexp(1.0, e2);
            if (d)
                v = nextafter(v, d < 0 ? 0 : INFINITY);
            emit_fmt_real(t, v);
            ref_real(r, v);
            cr_assert_str_eq(t, r, "%.17g", v);
        }
    /* doubles next to short decimals: where the 15/16-digit candidates sit
     * at the edge of the rounding interval */
    for (int i = 0; i < 200000; i++) {
        char d[40];
        int nd = 15 + (int)(xs() % 2);
        snprintf(d, sizeof d, "%llu", (unsigned long long)(xs() % 9000000000000000ULL +
                                                            1000000000000000ULL));
        d[nd] = 0;
        char txt[64];
        snprintf(txt, sizeof txt, "%c.%se%d", d[0], d + 1, (int)(xs() % 30) - 8);
        double base = strtod(txt, NULL);
        for (int k = -2; k <= 2; k++) {
            double v = base;
            for (int j = 0; j < (k < 0 ? -k : k); j++)
                v = nextafter(v, k < 0 ? 0 : INFINITY);
            emit_fmt_real(t, v);
            ref_real(r, v);
            cr_assert_str_eq(t, r, "%.17g (near %s)", v, txt);
        }
    }
}

Test(emit, real_text)
{
    char t[32];
    emit_fmt_real(t, 87.39978);
    cr_expect_str_eq(t, "87.39978");
    emit_fmt_real(t, 30);
    cr_expect_str_eq(t, "30.0");
    emit_fmt_real(t, -0.0);
    cr_expect_str_eq(t, "-0.0");
    emit_fmt_real(t, 1e300);
    cr_expect_str_eq(t, "1e+300");
    emit_fmt_real(t, 9.9999999999999995e22);
    cr_expect_eq(strtod(t, NULL), 9.9999999999999995e22, "%s", t);
    emit_fmt_real(t, 0.000123);
    cr_expect_str_eq(t, "0.000123");
    emit_fmt_real(t, 0.0000123);
    cr_expect_str_eq(t, "1.23e-05");
    emit_fmt_real(t, 123456789012345678.0);
    cr_expect_str_eq(t, "1.2345678901234568e+17");
    emit_fmt_real(t, 5e-324);
    cr_expect_eq(strtod(t, NULL), 5e-324, "%s", t);
    /* always reads back exactly; 15 digits whenever they suffice */
    for (int i = 0; i < 200000; i++) {
        double v = (double)rand() / RAND_MAX * pow(10, (rand() % 80) - 40);
        if (i % 3 == 0)
            v = (double)(rand() % 100000) / 1000.0 * (i % 2 ? -1 : 1);
        emit_fmt_real(t, v);
        cr_assert_eq(strtod(t, NULL), v, "%s reads back", t);
        char g15[40];
        snprintf(g15, sizeof g15, "%.15g", v);
        if (strtod(g15, NULL) == v && strpbrk(g15, ".e"))
            cr_assert_str_eq(t, g15, "15 digits when they suffice");
    }
}
