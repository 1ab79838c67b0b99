/*
 * test_bucket.c — the default content hook: deterministic weighted
 * bucketing of customers into variants.
 *
 * decide picks variant i of a campaign when hash_bucket(customer, campaign)
 * * (sum of weights) falls in [w1 + .. + w(i-1), w1 + .. + wi).  Proved here
 * on hash_bucket directly (100k ids: weights honoured within 1%, campaigns
 * independent of each other) and through a real server's dry-run decides
 * (2,000 ids: every id gets exactly the predicted variant, the split is the
 * weights', and it does not move on repeat or reload).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fixture.h"
#include "base/hash.h"

/* The variant decide's default content hook picks, as in decide.c. */
static int pick(const char *cust, const char *camp, const double *w, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += w[i];
    double u = hash_bucket(cust, strlen(cust), camp, strlen(camp)) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += w[i];
        if (u < acc)
            return i;
    }
    return n - 1;
}

Test(bucket, stable_and_reproducible)
{
    /* reference values computed independently (Python, GrowthBook v2 hash) */
    static const struct {
        const char *cust, *camp;
        double want;
    } ref[] = { { "alice", "home-banner", 0.6354 }, { "bob", "home-banner", 0.0631 },
                { "carol", "home-banner", 0.1193 }, { "erin", "home-banner", 0.9707 },
                { "", "", 0.0 } };
    for (int i = 0; ref[i].cust[0]; i++) {
        double u = hash_bucket(ref[i].cust, strlen(ref[i].cust), ref[i].camp, strlen(ref[i].camp));
        cr_assert_float_eq(u, ref[i].want, 1e-9, "%s/%s = %.4f", ref[i].cust, ref[i].camp, u);
    }
    for (int i = 0; i < 1000; i++) {
        char id[32];
        int n = snprintf(id, sizeof id, "cust-%d", i);
        double a = hash_bucket(id, (size_t)n, "spring", 6);
        cr_assert(a >= 0 && a < 1);
        cr_assert_eq(a, hash_bucket(id, (size_t)n, "spring", 6), "same customer, same bucket");
    }
}

Test(bucket, weights_one_to_three_within_1pct)
{
    static const char *camps[] = { "spring-sale", "home-banner", "x", "exp-2" };
    const double w[2] = { 1, 3 };
    for (int c = 0; c < 4; c++) {
        long a = 0, n = 100000;
        for (long i = 0; i < n; i++) {
            char id[32];
            snprintf(id, sizeof id, "cust-%ld", i);
            a += pick(id, camps[c], w, 2) == 0;
        }
        double share = (double)a / (double)n;
        cr_assert(share > 0.24 && share < 0.26, "%s: A got %.4f of 100k, want 0.25 +- 0.01", camps[c], share);
    }
}

Test(bucket, three_variants_and_fractional_weights)
{
    const double w[3] = { 0.5, 0.5, 1.0 }; /* 25 / 25 / 50 */
    long cnt[3] = { 0 }, n = 100000;
    for (long i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%ld", i * 7919);
        cnt[pick(id, "three-way", w, 3)]++;
    }
    const double want[3] = { 0.25, 0.25, 0.5 };
    for (int k = 0; k < 3; k++) {
        double share = (double)cnt[k] / (double)n;
        cr_assert(share > want[k] - 0.01 && share < want[k] + 0.01, "variant %d: %.4f", k, share);
    }
}

Test(bucket, uniform_deciles)
{
    long dec[10] = { 0 }, n = 100000;
    for (long i = 0; i < n; i++) {
        char id[40];
        snprintf(id, sizeof id, "user-%08lx@example.com", (unsigned long)i * 2654435761u);
        dec[(int)(hash_bucket(id, strlen(id), "campaign-42", 11) * 10)]++;
    }
    for (int d = 0; d < 10; d++)
        cr_assert(dec[d] > 9500 && dec[d] < 10500, "decile %d has %ld of 100k", d, dec[d]);
}

/* Two campaigns must not bucket the same customers together: with ids
 * that differ only in their last character, P(A in both) must be the
 * product 1/4 * 1/4, not close to 0 (the single-round FNV-1a flaw). */
Test(bucket, campaigns_are_independent)
{
    static const char *pairs[][2] = { { "exp-1", "exp-2" }, { "a", "b" }, { "spring-sale", "summer-sale" } };
    const double w[2] = { 1, 3 };
    for (int p = 0; p < 3; p++) {
        long both = 0, n = 100000;
        for (long i = 0; i < n; i++) {
            char id[32];
            snprintf(id, sizeof id, "cust-%ld", i);
            both += pick(id, pairs[p][0], w, 2) == 0 && pick(id, pairs[p][1], w, 2) == 0;
        }
        double share = (double)both / (double)n;
        cr_assert(share > 0.0575 && share < 0.0675, "%s & %s: both A for %.4f, want 0.0625",
                  pairs[p][0], pairs[p][1], share);
    }
}

/* ---- through the server --------------------------------------------------- */

static struct tfx_server srv;

static void srv_teardown(void) { tfx_server_cleanup(&srv); }

static const char split_src[] =
    "return { id = 'split', channels = { 'web' }, priority = %d,\n"
    "  variants = { { id = 'A', weight = %d, content = { t = 'a' } },\n"
    "               { id = 'B', weight = %d, content = { t = 'b' } } },\n"
    "  eligible = function() return true end }\n";

static void write_split(int priority, int wa, int wb)
{
    char src[512];
    snprintf(src, sizeof src, split_src, priority, wa, wb);
    tfx_write(&srv, "rules/split.lua", src);
}

/* dry-run decide; the variant letter, or 0 when the call failed */
static char variant_of(const char *cust)
{
    char body[256];
    snprintf(body, sizeof body, "{\"customer_id\":\"%s\",\"channel\":\"web\",\"dry_run\":true,\"limit\":1}", cust);
    struct tfx_resp r;
    char v = 0;
    if (tfx_req(&srv, "POST", "/api/v1/decide", body, &r) == 200) {
        const char *s = json_string_value(json_object_get(json_array_get(json_object_get(r.json, "offers"), 0),
                                                          "variant"));
        v = s ? s[0] : 0;
    }
    tfx_resp_free(&r);
    return v;
}

static long generation(void)
{
    struct tfx_resp r;
    long g = -1;
    if (tfx_req(&srv, "GET", "/api/v1/rules", NULL, &r) == 200)
        g = (long)json_integer_value(json_object_get(r.json, "generation"));
    tfx_resp_free(&r);
    return g;
}

static void wait_generation_after(long g)
{
    for (int i = 0; i < 300 && generation() <= g; i++)
        usleep(10000);
    cr_assert_gt(generation(), g, "the edit was not loaded within 3 s");
    cr_assert(tfx_wait_rules_live(&srv, 15000), "a worker kept the old rules");
}

Test(bucket, server_split_is_predicted_stable_and_weighted, .fini = srv_teardown, .timeout = 120)
{
    tfx_server_init(&srv, NULL);
    write_split(50, 1, 3);
    cr_assert_eq(tfx_server_start(&srv), 0);
    const int n = 2000;
    static char first[2000];
    const double w13[2] = { 1, 3 };
    int a = 0;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        first[i] = variant_of(id);
        cr_assert(first[i] == 'A' || first[i] == 'B', "%s: decide failed", id);
        cr_assert_eq(first[i], "AB"[pick(id, "split", w13, 2)], "%s: served %c, bucketing says otherwise", id,
                     first[i]);
        a += first[i] == 'A';
    }
    /* 1:3 → 25% A; binomial sd over 2,000 is 0.97%: allow 4 sd */
    cr_assert(a > 0.21 * n && a < 0.29 * n, "A served %d of %d", a, n);
    /* a customer keeps the variant */
    for (int i = 0; i < n; i += 10) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        cr_assert_eq(variant_of(id), first[i], "%s changed variant on repeat", id);
    }
    /* ... across a reload that does not touch the weights */
    long g = generation();
    write_split(60, 1, 3);
    wait_generation_after(g);
    for (int i = 0; i < n; i += 10) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        cr_assert_eq(variant_of(id), first[i], "%s changed variant after a reload", id);
    }
    /* new weights move the split (and only customers past the new edge) */
    g = generation();
    write_split(60, 1, 1);
    wait_generation_after(g);
    const double w11[2] = { 1, 1 };
    int a2 = 0, m = 500;
    for (int i = 0; i < m; i++) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        char v = variant_of(id);
        cr_assert_eq(v, "AB"[pick(id, "split", w11, 2)], "%s", id);
        if (first[i] == 'A')
            cr_assert_eq(v, 'A', "%s: A at 1:3 stays A at 1:1 (the A range only grew)", id);
        a2 += v == 'A';
    }
    cr_assert(a2 > 0.41 * m && a2 < 0.59 * m, "A served %d of %d at 1:1", a2, m);
}
