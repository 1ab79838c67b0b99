/*
 * test_models_truth.c — models trained by a real server on data with a
 * planted relationship (scripts/gen-model-data.py: the true probability of
 * every example is known) reach the truth:
 *   - propensity (conversion of "spring" within 7 days of an impression),
 *     with XGBoost and with logistic regression: validation AUC within 0.02
 *     of the AUC of the true probabilities on the same examples;
 *   - churn (no purchase in 90 days): the same;
 *   - value (revenue in 90 days): RMSE within 5 % of the RMSE of the true
 *     expected values.
 * The model files are in tests/models/; the validation examples are the
 * ones the version records (its time split), recomputed here from the
 * generator's own files.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "insight/train.h"
#include "models_tfx.h"

#define CUSTOMERS 12000

static struct tfx_server srv;
static char gen[300];

static void teardown(void)
{
    tfx_server_cleanup(&srv);
    if (gen[0])
        tfx_rmrf(gen);
}

TestSuite(truth, .fini = teardown, .timeout = 580);

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void copy_model(const char *name)
{
    char path[600], rel[100];
    snprintf(path, sizeof path, "%s/tests/models/%s.lua", PROMOD_SRC, name);
    snprintf(rel, sizeof rel, "models/%s.lua", name);
    size_t n;
    char *src = slurp(path, &n);
    tfx_write(&srv, rel, src);
    free(src);
}

/* Train with the clock at the generator's `now`, so that the server's
 * windows end where the generator's truth files do; returns the version. */
static json_t *train(const char *id)
{
    mtfx_clock(&srv, MTFX_NOW);
    json_t *last = mtfx_train(&srv, id, 0);
    cr_assert(json_is_true(json_object_get(last, "ok")), "%s: %s", id,
              json_string_value(json_object_get(last, "error")));
    json_decref(last);
    json_t *m = mtfx_model_get(&srv, id);
    json_t *v = json_incref(json_array_get(json_object_get(m, "versions"), 0));
    json_decref(m);
    return v;
}

static double vmetric(json_t *v, const char *k)
{
    return json_number_value(json_object_get(json_object_get(json_object_get(v, "metrics"), "validation"), k));
}

static long vwin(json_t *v, const char *k)
{
    return (long)json_integer_value(json_object_get(json_object_get(v, "window"), k));
}

Test(truth, models_reach_the_planted_truth)
{
    tfx_tmpdir(gen, sizeof gen);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "python3 %s/scripts/gen-model-data.py %s --customers %d --now %ld",
             PROMOD_SRC, gen, CUSTOMERS, MTFX_NOW);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    tfx_server_init(&srv, "test_clock = true, event_retention_days = 800, max_import_body_mb = 256,"
                          " map_size_mb = 4096,");
    cr_assert_eq(tfx_server_start(&srv), 0);
    mtfx_clock(&srv, MTFX_NOW);
    char path[400];
    size_t n;
    snprintf(path, sizeof path, "%s/profiles.ndjson", gen);
    char *d = slurp(path, &n);
    mtfx_post_ndjson(&srv, "/api/v1/profiles/import", d, n, 100000);
    free(d);
    snprintf(path, sizeof path, "%s/events.ndjson", gen);
    d = slurp(path, &n);
    mtfx_post_ndjson(&srv, "/api/v1/events", d, n, 10000); /* short requests, even under ASan */
    free(d);
    const char *files[] = { "buy_xgb", "buy_logistic", "churn", "value" };
    for (int i = 0; i < 4; i++) {
        copy_model(files[i]);
        cr_assert(mtfx_wait_model(&srv, files[i], "ok"), "%s not loaded", files[i]);
    }

    /* propensity: the impressions in the version's validation period */
    snprintf(path, sizeof path, "%s/conversion.csv", gen);
    d = slurp(path, &n);
    for (int k = 0; k < 2; k++) {
        json_t *v = train(files[k]);
        long split = vwin(v, "validation_from_ts"), to = vwin(v, "to_ts");
        long cap = 200000, m = 0;
        float *y = malloc(sizeof *y * (size_t)cap);
        double *p = malloc(sizeof *p * (size_t)cap);
        char *line = d;
        while (line && *line) {
            char cust[32];
            long ts;
            double pt;
            int lab;
            if (sscanf(line, "%31[^,],%ld,%lf,%d", cust, &ts, &pt, &lab) == 4 && ts >= split &&
                ts + 7 * MTFX_DAY <= to && m < cap) {
                y[m] = (float)lab;
                p[m] = pt;
                m++;
            }
            line = strchr(line, '\n');
            line = line ? line + 1 : NULL;
        }
        double truth = train_auc(y, p, m), auc = vmetric(v, "auc");
        long nv = (long)json_integer_value(json_object_get(json_object_get(v, "rows"), "validation"));
        cr_log_info("%s: validation AUC %.4f on %ld examples; the true probabilities %.4f on %ld",
                    files[k], auc, nv, truth, m);
        cr_assert_eq(nv, m, "the validation examples differ from the generator's");
        cr_assert(fabs(auc - truth) <= 0.02, "%s: AUC %.4f vs truth %.4f", files[k], auc, truth);
        free(y);
        free(p);
        json_decref(v);
    }
    free(d);

    /* churn and value: every customer at the snapshot now - 90 days */
    snprintf(path, sizeof path, "%s/churn.csv", gen);
    d = slurp(path, &n);
    float *y = malloc(sizeof *y * CUSTOMERS);
    double *p = malloc(sizeof *p * CUSTOMERS), se = 0;
    long m = 0;
    for (char *line = d; line && *line && m < CUSTOMERS;) {
        char cust[32];
        double pc, value, expected;
        int churned;
        if (sscanf(line, "%31[^,],%lf,%d,%lf,%lf", cust, &pc, &churned, &value, &expected) == 5) {
            y[m] = (float)churned;
            p[m] = pc;
            se += (value - expected) * (value - expected);
            m++;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    free(d);
    json_t *v = train("churn");
    cr_assert_eq(vwin(v, "validation_from_ts"), MTFX_NOW - 90 * MTFX_DAY);
    double truth = train_auc(y, p, m), auc = vmetric(v, "auc");
    cr_log_info("churn: validation AUC %.4f, the true probabilities %.4f", auc, truth);
    cr_assert(fabs(auc - truth) <= 0.02, "churn: AUC %.4f vs truth %.4f", auc, truth);
    json_decref(v);
    v = train("value");
    double oracle = sqrt(se / (double)m), rmse = vmetric(v, "rmse");
    cr_log_info("value: validation RMSE %.3f, the true expectations' %.3f", rmse, oracle);
    cr_assert(rmse <= 1.05 * oracle, "value: RMSE %.3f vs %.3f", rmse, oracle);
    json_decref(v);
    free(y);
    free(p);
}
