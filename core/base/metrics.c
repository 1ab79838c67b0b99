/* metrics.c — the collector registry behind GET /metrics: every module
 * appends its own series at scrape time (see metrics.h). */
#include "base/metrics.h"
#include <string.h>

#define MAX_COLLECTORS 32
static struct { metrics_collect_fn fn; void *ud; } collectors[MAX_COLLECTORS];
static int ncollectors;

void metrics_register(metrics_collect_fn fn, void *ud)
{
    if (ncollectors < MAX_COLLECTORS) {
        collectors[ncollectors].fn = fn;
        collectors[ncollectors].ud = ud;
        ncollectors++;
    }
}

void metrics_unregister_all(void) { ncollectors = 0; }

void metrics_label(struct buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_addc(out, '\\'), buf_addc(out, *v);
        else if (*v == '\n')
            buf_adds(out, "\\n");
        else
            buf_addc(out, *v);
    }
}

int metrics_render(struct buf *out)
{
    for (int i = 0; i < ncollectors; i++)
        collectors[i].fn(out, collectors[i].ud);
    return 0;
}
