/*
 * metrics.h — counters and latency histograms, rendered in Prometheus
 * text format for GET /metrics.
 *
 * Every module adds its own series by registering a collector that
 * appends text at scrape time, so the numbers stay owned by the module
 * that counts them (HTTP requests by route: http/http_metrics.c).
 */
#ifndef PROMOD_METRICS_H
#define PROMOD_METRICS_H
#include <stdint.h>
#include "base/buf.h"

typedef void (*metrics_collect_fn)(struct buf *out, void *ud);
/** Register a collector (start-up only, before threads run). */
void metrics_register(metrics_collect_fn fn, void *ud);
void metrics_unregister_all(void);

/** Render every series. */
int metrics_render(struct buf *out);

/** Append a Prometheus label value with \\, " and newline escaped. */
void metrics_label(struct buf *out, const char *v);

#endif
