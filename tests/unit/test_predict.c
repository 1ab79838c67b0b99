/* test_predict.c — the server's own model evaluator: trees walked as
 * XGBoost walks them (float thresholds, missing values to the learnt
 * side), linear models with missing values at their centre, contributions
 * that add up to the margin, and a byte form that refuses what would make
 * evaluation read out of bounds or loop. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "base/err.h"
#include "engine/predict.h"

/* Two trees over 2 features.
 * tree 0: x0 < 0.5 ? (x1 < 2 ? 1 : 2) : 3, missing x0 goes left, missing x1 right
 * tree 1: a single leaf 0.25 */
static struct predict_model *two_trees(void)
{
    struct predict_model *m = predict_alloc(PREDICT_TREES, PREDICT_IDENTITY, 2, 2, 6);
    cr_assert_not_null(m);
    m->base = 0.5;
    m->roots[0] = 0;
    m->roots[1] = 5;
    m->nodes[0] = (struct predict_node){ .v = 0.5f, .feat = 0, .flags = PREDICT_DEFAULT_LEFT, .left = 1 };
    m->nodes[1] = (struct predict_node){ .v = 2.0f, .feat = 1, .flags = 0, .left = 3 };
    m->nodes[2] = (struct predict_node){ .v = 3.0f, .flags = PREDICT_LEAF };
    m->nodes[3] = (struct predict_node){ .v = 1.0f, .flags = PREDICT_LEAF };
    m->nodes[4] = (struct predict_node){ .v = 2.0f, .flags = PREDICT_LEAF };
    m->nodes[5] = (struct predict_node){ .v = 0.25f, .flags = PREDICT_LEAF };
    m->mean[0] = 2.0f;
    m->mean[1] = 1.5f;
    m->mean[2] = 3.0f;
    m->mean[3] = 1.0f;
    m->mean[4] = 2.0f;
    m->mean[5] = 0.25f;
    char err[128];
    cr_assert_eq(predict_check(m, err, sizeof err), 0, "%s", err);
    return m;
}

TestSuite(predict, .timeout = 30);

Test(predict, trees_follow_thresholds_and_missing_sides)
{
    struct predict_model *m = two_trees();
    struct { float x0, x1; double want; } cases[] = {
        { 0.1f, 1.0f, 0.5 + 1 + 0.25 },
        { 0.1f, 2.0f, 0.5 + 2 + 0.25 },     /* equal to the threshold goes right */
        { 0.5f, 0.0f, 0.5 + 3 + 0.25 },
        { NAN, 1.0f, 0.5 + 1 + 0.25 },      /* missing x0: default left */
        { 0.1f, NAN, 0.5 + 2 + 0.25 },      /* missing x1: default right */
        { NAN, NAN, 0.5 + 2 + 0.25 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float x[2] = { cases[i].x0, cases[i].x1 };
        cr_assert_float_eq(predict_eval(m, x), cases[i].want, 1e-9, "case %zu", i);
        double c[3];
        predict_contrib(m, x, c);
        cr_assert_float_eq(c[0] + c[1] + c[2], predict_margin(m, x), 1e-6, "case %zu", i);
    }
    /* contributions credit the feature that split: x0 = 0.1, x1 = 1 */
    float x[2] = { 0.1f, 1.0f };
    double c[3];
    predict_contrib(m, x, c);
    cr_assert_float_eq(c[2], 0.5 + 2.0 + 0.25, 1e-9); /* base + root means */
    cr_assert_float_eq(c[0], 1.5 - 2.0, 1e-9);
    cr_assert_float_eq(c[1], 1.0 - 1.5, 1e-9);
    predict_free(m);
}

Test(predict, logistic_link_and_linear_missing_values)
{
    struct predict_model *m = predict_alloc(PREDICT_LINEAR, PREDICT_LOGISTIC, 3, 0, 0);
    cr_assert_not_null(m);
    m->base = -1;
    double w[3] = { 2, -0.5, 0.25 }, c[3] = { 1, 10, 0 };
    memcpy(m->w, w, sizeof w);
    memcpy(m->center, c, sizeof c);
    float x[3] = { 0.5f, NAN, 4 };
    double margin = -1 + 2 * 0.5 + -0.5 * 10 + 0.25 * 4;
    cr_assert_float_eq(predict_margin(m, x), margin, 1e-12);
    cr_assert_float_eq(predict_eval(m, x), 1 / (1 + exp(-margin)), 1e-12);
    double ct[4];
    predict_contrib(m, x, ct);
    cr_assert_float_eq(ct[1], 0, 1e-12); /* missing: no contribution */
    cr_assert_float_eq(ct[0], 2 * (0.5 - 1), 1e-12);
    cr_assert_float_eq(ct[0] + ct[1] + ct[2] + ct[3], margin, 1e-12);
    predict_free(m);
}

Test(predict, byte_form_round_trips)
{
    struct predict_model *m = two_trees();
    struct buf b = BUF_INIT;
    cr_assert_eq(predict_save(m, &b), 0);
    struct predict_model *r;
    char err[128];
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), 0, "%s", err);
    float xs[][2] = { { 0.1f, 1 }, { NAN, 5 }, { 0.7f, NAN } };
    for (int i = 0; i < 3; i++)
        cr_assert_eq(predict_eval(r, xs[i]), predict_eval(m, xs[i]));
    predict_free(r);
    buf_free(&b);
    predict_free(m);
}

Test(predict, load_refuses_damaged_models)
{
    struct predict_model *m = two_trees();
    struct buf b = BUF_INIT;
    cr_assert_eq(predict_save(m, &b), 0);
    struct predict_model *r = NULL;
    char err[128];
    /* truncated, trailing byte, bad magic */
    cr_assert_eq(predict_load(b.p, b.len - 1, &r, err, sizeof err), ERR_PARSE);
    cr_assert_null(r);
    char *longer = malloc(b.len + 1);
    memcpy(longer, b.p, b.len);
    longer[b.len] = 0;
    cr_assert_eq(predict_load(longer, b.len + 1, &r, err, sizeof err), ERR_PARSE);
    free(longer);
    b.p[0] = 'X';
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), ERR_PARSE);
    b.p[0] = 'P';
    /* header 28 bytes, roots 2 * 4, then nodes of 12 bytes: node 0's left */
    size_t node0 = 28 + 8;
    uint32_t bad;
    /* a child pointing back at its parent would loop */
    bad = 0;
    memcpy(b.p + node0 + 8, &bad, 4);
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), ERR_PARSE);
    cr_assert(strstr(err, "bad split"), "%s", err);
    /* a child in the next tree */
    bad = 4;
    memcpy(b.p + node0 + 8, &bad, 4);
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), ERR_PARSE);
    bad = 1;
    memcpy(b.p + node0 + 8, &bad, 4);
    /* a feature beyond the model's */
    uint16_t f = 7;
    memcpy(b.p + node0 + 4, &f, 2);
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), ERR_PARSE);
    f = 0;
    memcpy(b.p + node0 + 4, &f, 2);
    /* a NaN threshold */
    float nan = NAN;
    memcpy(b.p + node0, &nan, 4);
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), ERR_PARSE);
    float ok = 0.5f;
    memcpy(b.p + node0, &ok, 4);
    cr_assert_eq(predict_load(b.p, b.len, &r, err, sizeof err), 0, "%s", err);
    predict_free(r);
    buf_free(&b);
    predict_free(m);
}

Test(predict, alloc_refuses_sizes_beyond_the_limits)
{
    cr_assert_null(predict_alloc(PREDICT_TREES, PREDICT_LOGISTIC, 0, 1, 1));
    cr_assert_null(predict_alloc(PREDICT_TREES, PREDICT_LOGISTIC, PREDICT_MAX_FEATURES + 1, 1, 1));
    cr_assert_null(predict_alloc(PREDICT_TREES, PREDICT_LOGISTIC, 3, PREDICT_MAX_TREES + 1, 6000));
    cr_assert_null(predict_alloc(PREDICT_TREES, PREDICT_LOGISTIC, 3, 2, 1));
    cr_assert_null(predict_alloc(7, PREDICT_LOGISTIC, 3, 1, 1));
}
