/*
 * app.h — the process-wide context handlers reach: config, store, engines.
 *
 * Built once by main before the workers start and torn down after they
 * stop; read-only in between except through each member's own API.
 */
#ifndef PROMOD_APP_H
#define PROMOD_APP_H
#include "base/config.h"

struct store;
struct server;
struct rules;

struct app {
    struct config cfg;
    struct store *store;
    struct server *srv;
    struct rules *rules;   /**< campaign files and channel plugins */
    int64_t started_at;
};

extern struct app *g_app;

#endif
