/* test_buf.c — core/buf.c and core/hash.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/hash.h"
#include "codec/jscan.h"

TestSuite(buf, .timeout = 60);

Test(buf, append_and_terminate)
{
    struct buf b = BUF_INIT;
    cr_expect_eq(buf_add(&b, "", 0), 0);
    cr_assert_not_null(b.p);
    cr_expect_str_eq(b.p, "");
    cr_expect_eq(buf_adds(&b, "abc"), 0);
    cr_expect_eq(buf_addc(&b, 'd'), 0);
    cr_expect_eq(buf_add(&b, "e\0f", 3), 0);
    cr_expect_eq(b.len, 7);
    cr_expect_eq(memcmp(b.p, "abcde\0f", 8), 0, "NUL-terminated after embedded NUL");
    cr_expect_gt(b.cap, b.len);
    buf_free(&b);
    cr_expect_null(b.p);
    cr_expect_eq(b.len, 0);
    cr_expect_eq(b.cap, 0);
}

Test(buf, growth)
{
    struct buf b = BUF_INIT;
    for (int i = 0; i < 100000; i++)
        cr_assert_eq(buf_addc(&b, (char)('a' + i % 26)), 0);
    cr_expect_eq(b.len, 100000);
    cr_expect_eq(b.p[b.len], 0);
    cr_expect_eq(b.p[99999], (char)('a' + 99999 % 26));
    buf_free(&b);
}

Test(buf, reserve_overflow)
{
    struct buf b = BUF_INIT;
    cr_expect_eq(buf_reserve(&b, (size_t)-1 / 2 + 10), ERR_NOMEM);
    cr_expect_eq(buf_adds(&b, "ok"), 0, "still usable after a refused reserve");
    cr_expect_str_eq(b.p, "ok");
    buf_free(&b);
}

Test(buf, printf)
{
    struct buf b = BUF_INIT;
    cr_expect_eq(buf_printf(&b, "%d-%s", 42, "x"), 0);
    cr_expect_eq(buf_printf(&b, "%s", ""), 0);
    char big[300];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_expect_eq(buf_printf(&b, "[%s]", big), 0);
    cr_expect_eq(b.len, 4 + 301);
    cr_expect_eq(strncmp(b.p, "42-x[zzz", 8), 0);
    cr_expect_eq(b.p[b.len - 1], ']');
    buf_free(&b);
}

Test(buf, html)
{
    struct buf b = BUF_INIT;
    const char *s = "<a href=\"x\">Tom & 'Jerry'</a>";
    cr_expect_eq(buf_add_html(&b, s, strlen(s)), 0);
    cr_expect_str_eq(b.p, "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
    buf_reset(&b);
    cr_expect_eq(buf_add_html(&b, "plain", 5), 0);
    cr_expect_str_eq(b.p, "plain");
    buf_reset(&b);
    cr_expect_eq(buf_add_html(&b, "&&", 1), 0, "length bounds the input");
    cr_expect_str_eq(b.p, "&amp;");
    buf_free(&b);
}

Test(buf, reset_and_steal)
{
    struct buf b = BUF_INIT;
    buf_reset(&b); /* on an empty buffer: no crash */
    buf_adds(&b, "hello");
    size_t cap = b.cap;
    buf_reset(&b);
    cr_expect_eq(b.len, 0);
    cr_expect_eq(b.cap, cap, "reset keeps the allocation");
    cr_expect_str_eq(b.p, "");
    buf_adds(&b, "mine");
    char *s = buf_steal(&b);
    cr_expect_str_eq(s, "mine");
    cr_expect_null(b.p);
    cr_expect_eq(b.len, 0);
    free(s);
    s = buf_steal(&b); /* never NULL, even when empty */
    cr_assert_not_null(s);
    cr_expect_str_eq(s, "");
    free(s);
}

Test(buf, fnv1a_vectors)
{
    cr_expect_eq(hash_fnv1a("", 0, HASH_FNV_INIT), 0x811C9DC5u);
    cr_expect_eq(hash_fnv1a("a", 1, HASH_FNV_INIT), 3826002220u);
    cr_expect_eq(hash_fnv1a("a", 1, HASH_FNV_INIT), 0xE40C292Cu);
    cr_expect_eq(hash_fnv1a("foobar", 6, HASH_FNV_INIT), 0xBF9CF968u);
    /* chaining equals hashing the concatenation */
    uint32_t h = hash_fnv1a("foo", 3, HASH_FNV_INIT);
    cr_expect_eq(hash_fnv1a("bar", 3, h), 0xBF9CF968u);
}

Test(buf, hash_unit_stable)
{
    double u = hash_unit("cust-1", 6, "spring", 6);
    char key[] = "cust-1/spring";
    uint32_t h = hash_fnv1a(key, strlen(key), HASH_FNV_INIT);
    cr_expect_eq(u, (double)(h % 10000u) / 10000.0);
    cr_expect_eq(hash_unit("cust-1", 6, "spring", 6), u, "deterministic");
    cr_expect(u >= 0.0 && u < 1.0);
    cr_expect_neq(hash_unit("cust-1", 6, "summer", 6), u);
}

Test(buf, hash_unit_uniform)
{
    enum { N = 100000, B = 10 };
    int count[B] = { 0 };
    char id[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof id, "customer-%d", i);
        double u = hash_unit(id, (size_t)n, "campaign-42", 11);
        cr_assert(u >= 0.0 && u < 1.0);
        count[(int)(u * B)]++;
    }
    for (int b = 0; b < B; b++) {
        double share = (double)count[b] / N;
        cr_expect(share > 0.09 && share < 0.11, "bucket %d has %.4f", b, share);
    }
}

/* A buffer's first allocation is NUL-terminated even with nothing added:
 * jscan_string of "" reserves, adds nothing, and its caller reads a C
 * string (a redeem body with "currency": "" read past the allocation). */
Test(buf, first_reserve_is_a_c_string)
{
    struct buf b = BUF_INIT;
    cr_assert_eq(buf_reserve(&b, 0), 0);
    cr_assert_not_null(b.p);
    cr_assert_eq(b.len, 0);
    cr_assert_str_eq(b.p, "");
    buf_free(&b);
    struct buf s = BUF_INIT;
    cr_assert_eq(jscan_string(jscan_whole("\"\"", 2), &s), 0);
    cr_assert_not_null(s.p);
    cr_assert_str_eq(s.p, "");
    buf_free(&s);
}
