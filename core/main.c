/*
 * main.c — the promod command line: serve, check, import.
 *
 *   promod serve [-c config/promod.lua] [--listen HOST:PORT] [--data DIR]
 *                [--rules DIR] [--plugins DIR] [--web DIR] [--port-file FILE]
 *   promod check [--test] [--strict] [--data DIR] [DIR|FILE ...]  (rules/ plugins/ experiments/
 *                loyalty/ segments/ models/ by default; warnings, campaign tests, --strict)
 *   promod test [DIR|FILE ...]   campaign tests (rules/ by default)
 *   promod import profiles FILE.ndjson [-c CONFIG] [--data DIR] [--resume | --from-line N]
 *   promod train MODEL [--force] [--threads N] [--now TIME] [-c CONFIG] [--data DIR]
 *                [--models DIR]
 *   promod key [--role ROLE] [--id ID]
 */
#include "http/api.h"
#include "base/app.h"
#include "service/campaigns.h"
#include "base/clock.h"
#include "base/err.h"
#include "insight/events.h"
#include "insight/events_log.h"
#include "service/exp_admin.h"
#include "base/log.h"
#include "delivery/deliver.h"
#include "service/profiles.h"
#include "store/audit.h"
#include "engine/models.h"
#include "engine/rules.h"
#include "engine/dlog.h"
#include "engine/ruletest.h"
#include "service/backtest.h"
#include "insight/train.h"
#include "base/reqerr.h"
#include "base/tz.h"
#include "engine/segments.h"
#include "engine/loyalty_rules.h"
#include "service/promotions.h"
#include "delivery/sends.h"
#include "http/ratelimit.h"
#include "http/server.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct app *g_app;

static void usage(FILE *f)
{
    fprintf(f,
            "usage:\n"
            "  promod serve [-c CONFIG] [--listen HOST:PORT] [--data DIR] [--rules DIR]\n"
            "               [--plugins DIR] [--web DIR] [--port-file FILE]\n"
            "  promod check [--test] [--strict] [--data DIR] [DIR|FILE ...]\n"
            "               (default: rules/ plugins/ experiments/ loyalty/ segments/ models/)\n"
            "  promod test [DIR|FILE ...]         (campaign tests, *_test.lua; default: rules/)\n"
            "  promod import profiles FILE.ndjson [-c CONFIG] [--data DIR] [--resume | --from-line N]\n"
            "  promod train MODEL [--force] [--threads N] [--now TIME] [-c CONFIG] [--data DIR]\n"
            "               [--models DIR]\n"
            "  promod key [--role decide|checkout|marketer|admin] [--id ID]\n"
            "  promod replay [--from TIME] [--to TIME] [--rules DIR] [--data DIR] [--json]\n"
            "               [--limit N] [--sample S] [--show N] [-c CONFIG]\n"
            "               (re-runs logged decides on the configured rules/ and on DIR)\n"
            "  promod version\n");
}

struct cli {
    const char *config, *listen, *data, *rules, *plugins, *web, *port_file, *models, *threads, *now,
        *from_line;
    const char *role, *id;
    const char *from, *to, *limit, *sample, *show;
    int force, resume, json, test, strict;
    const char *args[64];
    int nargs;
};

static int parse_cli(int argc, char **argv, struct cli *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "-c") || !strcmp(a, "--config"))
            dst = &c->config;
        else if (!strcmp(a, "--listen"))
            dst = &c->listen;
        else if (!strcmp(a, "--data"))
            dst = &c->data;
        else if (!strcmp(a, "--rules"))
            dst = &c->rules;
        else if (!strcmp(a, "--plugins"))
            dst = &c->plugins;
        else if (!strcmp(a, "--web"))
            dst = &c->web;
        else if (!strcmp(a, "--port-file"))
            dst = &c->port_file;
        else if (!strcmp(a, "--models"))
            dst = &c->models;
        else if (!strcmp(a, "--threads"))
            dst = &c->threads;
        else if (!strcmp(a, "--now"))
            dst = &c->now;
        else if (!strcmp(a, "--force")) {
            c->force = 1;
            continue;
        } else if (!strcmp(a, "--from-line"))
            dst = &c->from_line;
        else if (!strcmp(a, "--role"))
            dst = &c->role;
        else if (!strcmp(a, "--id"))
            dst = &c->id;
        else if (!strcmp(a, "--from"))
            dst = &c->from;
        else if (!strcmp(a, "--to"))
            dst = &c->to;
        else if (!strcmp(a, "--limit"))
            dst = &c->limit;
        else if (!strcmp(a, "--sample"))
            dst = &c->sample;
        else if (!strcmp(a, "--show"))
            dst = &c->show;
        else if (!strcmp(a, "--json")) {
            c->json = 1;
            continue;
        } else if (!strcmp(a, "--resume")) {
            c->resume = 1;
            continue;
        } else if (!strcmp(a, "--test")) {
            c->test = 1;
            continue;
        } else if (!strcmp(a, "--strict")) {
            c->strict = 1;
            continue;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "promod: unknown option %s\n", a);
            return -1;
        }
        if (dst) {
            if (i + 1 >= argc) {
                fprintf(stderr, "promod: %s needs a value\n", a);
                return -1;
            }
            *dst = argv[++i];
        } else {
            if (c->nargs >= 64)
                return -1;
            c->args[c->nargs++] = a;
        }
    }
    return 0;
}

static void set(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
}

/* Defaults, then the config file, then flags. */
static int load_config(struct config *cfg, const struct cli *c)
{
    config_defaults(cfg);
    const char *path = c->config;
    if (!path && access("config/promod.lua", R_OK) == 0)
        path = "config/promod.lua";
    if (path) {
        char err[512];
        if (config_load(cfg, path, err, sizeof err)) {
            fprintf(stderr, "promod: config error: %s\n", err);
            log_error("config error", "error=\"%s\"", err);
            return -1;
        }
    }
    if (c->listen && config_set_listen(cfg, c->listen)) {
        fprintf(stderr, "promod: --listen: expected HOST:PORT\n");
        return -1;
    }
    if (c->data)
        set(&cfg->data_dir, c->data);
    if (c->rules)
        set(&cfg->rules_dir, c->rules);
    if (c->plugins)
        set(&cfg->plugins_dir, c->plugins);
    if (c->models)
        set(&cfg->models_dir, c->models);
    if (c->web)
        set(&cfg->web_dir, c->web);
    log_set_level((enum log_level)cfg->log_level);
    return 0;
}

static int open_store(struct app *app)
{
    struct store_opts so = { .dir = app->cfg.data_dir, .map_size = app->cfg.map_size,
                             .map_max = app->cfg.map_max, .no_writemap = !app->cfg.store_writemap,
                             .readahead = app->cfg.store_readahead,
                             .prewarm = app->cfg.store_prewarm,
                             .sync_interval_ms = (unsigned)app->cfg.sync_interval_ms };
    int rc = store_open(&so, &app->store);
    if (rc)
        fprintf(stderr, "promod: cannot open data dir %s: %s\n", app->cfg.data_dir, err_str(rc));
    return rc;
}

/* Each HTTP worker thread gets its own Lua state with the adopted rules. */
static int worker_init(struct worker *w)
{
    struct rules_worker *rw;
    int rc = rules_worker_start(w->base, &rw);
    if (rc == 0)
        w->ctx = rw;
    return rc;
}

static void worker_fini(struct worker *w)
{
    http_held_thread_stop();
    rules_worker_stop(w->ctx);
    w->ctx = NULL;
}

/* The delivery thread's sink: delivered messages of a campaign become
 * "send" events (ROI, analytics).  Called after their outcomes are
 * committed; the event_id derived from the message key makes a repeat
 * after a crash a duplicate, not a recount. */
static void record_sends(void *ud, const struct deliver_sent *m, size_t n)
{
    struct app *app = ud;
    json_t *evs = json_array();
    for (size_t i = 0; i < n; i++)
        if (*m[i].campaign)
            json_array_append_new(evs, events_send_event(m[i].customer, m[i].campaign,
                                                         m[i].channel, m[i].variant, m[i].key));
    if (json_array_size(evs)) {
        struct events_result er = { 0 };
        int erc = events_ingest_json(app->store, evs, &er);
        if (erc || er.rejected)
            log_warn("outbox: send events not recorded", "n=%zu rejected=%ld err=\"%s\"",
                     json_array_size(evs), er.rejected, err_str(erc));
        events_result_free(&er);
    }
    json_decref(evs);
}

static int cmd_serve(const struct cli *c)
{
    static struct app app;
    g_app = &app;
    app.started_at = clock_now();
    if (load_config(&app.cfg, c))
        return 2;
    if (open_store(&app))
        return 1;
    models_init(); /* promo.predict in every Lua state: before the first one is made */
    models_start(&app);
    campaigns_start(&app); /* reloader hooks: before the first load */
    /* segments before campaigns: audiences name segments */
    if (segments_start(&app, 1))
        log_error("segments unavailable", "%s", "cannot record the index slots");
    segments_metrics_init();
    int rc = rules_start(&app);
    if (rc) {
        segments_stop(&app);
        store_close(app.store);
        return 1;
    }
    exp_admin_start(&app); /* after the rules: experiments name their campaigns */
    if (dlog_start(&app.cfg, app.store)) /* the decision log's writer */
        log_error("decision log unavailable", "%s", "cannot start its writer");
    dlog_metrics_init();
    loyalty_rules_start(&app.cfg); /* loyalty/: program and earn rules */
    app_register_routes();
    ratelimit_init(&app.cfg);
    if (sends_init(&app))
        log_error("campaign sends unavailable", "%s", "cannot start the audience builder");
    struct server_opts so = { .cfg = &app.cfg, .thread_init = worker_init,
                              .thread_fini = worker_fini };
    rc = server_start(&so, &app.srv);
    if (rc) {
        fprintf(stderr, "promod: cannot start the server: %s\n", err_str(rc));
        sends_shutdown();
        exp_admin_stop();
        dlog_stop();
        rules_stop(&app);
        segments_stop(&app);
        store_close(app.store);
        return 1;
    }
    rules_attach(&app, server_main_base(app.srv));
    models_attach(&app, server_main_base(app.srv));
    if (train_sched_start(&app))
        log_error("model training unavailable", "%s", "cannot start the trainer thread");
    segments_attach(&app, server_main_base(app.srv));
    exp_admin_attach(&app, server_main_base(app.srv));
    loyalty_rules_attach(server_main_base(app.srv));
    promotions_sweeper_start(server_main_base(app.srv));
    events_log_compactor_start(server_main_base(app.srv), app.store, app.cfg.event_retention_days);
    deliver_set_sink(record_sends, &app);
    if (deliver_start(&app)) /* after server_start: libevent is in threaded mode */
        log_error("outbox unavailable", "%s", "cannot start the delivery thread");
    if (c->port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", c->port_file);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%d\n", server_port(app.srv));
            if (server_ops_port(app.srv) >= 0) /* a second line: the ops port */
                fprintf(f, "%d\n", server_ops_port(app.srv));
            fclose(f);
            rename(tmp, c->port_file);
        }
    }
    server_run(app.srv);
    train_sched_stop();
    sends_shutdown();
    deliver_stop();
    events_log_compactor_stop();
    exp_admin_stop(); /* after the workers stopped deciding: stores queued exposures */
    promotions_sweeper_stop();
    promotions_redeemer_stop(); /* after the workers: applies what they queued */
    loyalty_rules_stop();
    dlog_stop(); /* after the workers stopped deciding: what they logged is written */
    rules_stop(&app);
    segments_stop(&app);
    server_free(app.srv);
    models_stop(&app);
    store_close(app.store);
    config_free(&app.cfg);
    log_info("stopped", "%s", "");
    return 0;
}

static volatile sig_atomic_t import_stop;

static void on_import_signal(int sig)
{
    (void)sig;
    import_stop = 1; /* a second signal (SA_RESETHAND) kills at once */
}

/* Read past the lines before `line` (a stream that cannot seek, or
 * --from-line); returns the bytes skipped, or -1 when the input ends
 * first (*seen = lines it has). */
static long long skip_lines(FILE *f, long line, long *seen)
{
    long long bytes = 0;
    *seen = 0;
    int ch;
    while (*seen < line - 1 && (ch = getc(f)) != EOF) {
        bytes++;
        *seen += ch == '\n';
    }
    return *seen < line - 1 ? -1 : bytes;
}

/* `promod import profiles FILE`: resumable.  Every batch commits a
 * progress record with its lines (profiles_import_file), so a stopped
 * import is continued with --resume from the first line it did not store
 * (checked against the file's size and mtime, and found again by its
 * offset), or from any line with --from-line. */
static int cmd_import(const struct cli *c)
{
    if (c->nargs != 3 || strcmp(c->args[1], "profiles") != 0 || (c->resume && c->from_line)) {
        usage(stderr);
        return 2;
    }
    long from = 0;
    if (c->from_line) {
        char *end;
        from = strtol(c->from_line, &end, 10);
        if (*end || from < 1) {
            fprintf(stderr, "promod: --from-line: expected a line number from 1\n");
            return 2;
        }
    }
    static struct app app;
    g_app = &app;
    if (load_config(&app.cfg, c))
        return 2;
    const char *path = c->args[2];
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "promod: cannot open %s: %m\n", path);
        return 1;
    }
    char key[512];
    json_t *ident = NULL;
    int seekable = 0;
    int rc = profiles_import_ident(path, key, sizeof key, &ident, &seekable);
    if (rc) {
        fprintf(stderr, "promod: %s: %s\n", path, err_str(rc));
        if (f != stdin)
            fclose(f);
        return 1;
    }
    if (open_store(&app)) {
        json_decref(ident);
        if (f != stdin)
            fclose(f);
        return 1;
    }
    /* the loaded segments' membership follows the import; segments new to
     * the store are filled by the server's builder when it next starts */
    if (segments_start(&app, 0))
        fprintf(stderr, "promod: segments: cannot record the index slots\n");
    struct profiles_import_opts o = { .first_line = 1, .checkpoint = key, .ident = ident,
                                      .stop = &import_stop };
    int prc, status = 0;
    json_t *prog = profiles_import_progress(app.store, key, &prc);
    long pline = prog ? (long)json_integer_value(json_object_get(prog, "line")) : 0;
    int pdone = prog && json_is_true(json_object_get(prog, "done"));
    /* the same file, unchanged since that import? */
    int same = prog && (!seekable || (json_equal(json_object_get(prog, "size"), json_object_get(ident, "size")) &&
                                      json_equal(json_object_get(prog, "mtime_ns"),
                                                 json_object_get(ident, "mtime_ns"))));
    if (c->resume && prog && !same) {
        if (pdone)
            fprintf(stderr, "promod: %s changed since it was imported completely (size or modification "
                            "time differ); import it again without --resume\n", path);
        else
            fprintf(stderr, "promod: %s changed since the import that stopped at line %ld (size or "
                            "modification time differ); to continue from that line anyway: --from-line %ld\n",
                    path, pline, pline);
        status = 2;
        goto out;
    }
    if (c->resume && prog && pdone) {
        printf("{\"imported\": 0, \"failed\": 0, \"complete\": true, \"already_imported\": %lld, "
               "\"next_line\": %ld}\n",
               (long long)json_integer_value(json_object_get(prog, "imported")), pline);
        fprintf(stderr, "promod: %s was already imported completely (%lld profiles); nothing to do\n", path,
                (long long)json_integer_value(json_object_get(prog, "imported")));
        goto out;
    }
    if (c->resume && prog) {
        o.first_line = pline > 0 ? pline : 1;
        o.imported_before = (long)json_integer_value(json_object_get(prog, "imported"));
        o.failed_before = (long)json_integer_value(json_object_get(prog, "failed"));
        json_int_t off = json_integer_value(json_object_get(prog, "offset"));
        if (seekable && off > 0) {
            /* the offset must start a line: the byte before it is a newline */
            int ok = fseeko(f, (off_t)off - 1, SEEK_SET) == 0 && getc(f) == '\n';
            if (!ok) {
                fprintf(stderr, "promod: %s: the recorded offset of line %ld is not a line start; "
                                "use --from-line %ld\n", path, pline, pline);
                status = 2;
                goto out;
            }
            o.first_offset = (uint64_t)off;
        }
        fprintf(stderr, "promod: resuming the import of %s at line %ld\n", path, o.first_line);
    } else if (c->resume) {
        fprintf(stderr, "promod: no stopped import of %s recorded in %s; importing from line 1\n", path,
                app.cfg.data_dir);
    } else if (from > 1) {
        o.first_line = from;
    } else if (prog && !pdone && same) {
        fprintf(stderr, "promod: note: an earlier import of %s stopped at line %ld; this one starts "
                        "from line 1 (--resume continues instead)\n", path, pline);
    }
    if (o.first_line > 1 && !o.first_offset) {
        long seen;
        long long skipped = skip_lines(f, o.first_line, &seen);
        if (skipped < 0) {
            fprintf(stderr, "promod: %s has only %ld lines; nothing to import from line %ld\n", path, seen,
                    o.first_line);
            status = 2;
            goto out;
        }
        o.first_offset = (uint64_t)skipped;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_import_signal;
    sa.sa_flags = SA_RESETHAND; /* no SA_RESTART: a blocked read returns to look at the flag */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct profiles_import_result res = { 0 };
    rc = profiles_import_file(app.store, f, &o, &res);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (res.imported) { /* one audit entry per run, counts only (as the API's import) */
        json_t *a = json_pack("{s:I,s:I,s:I,s:b,s:s}", "imported", (json_int_t)res.imported, "failed",
                              (json_int_t)res.failed, "lines", (json_int_t)res.lines, "complete",
                              rc == 0 && res.complete, "via", "cli");
        int arc = audit_log(app.store, "cli", "profile.import", "profiles", NULL, a);
        json_decref(a);
        if (arc)
            fprintf(stderr, "promod: the import's audit entry was not written: %s\n", err_str(arc));
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (res.errors) {
        size_t i;
        json_t *e;
        json_array_foreach(res.errors, i, e)
            fprintf(stderr, "%s:%lld: %s\n", path,
                    (long long)json_integer_value(json_object_get(e, "line")),
                    json_string_value(json_object_get(e, "message")));
        json_decref(res.errors);
    }
    printf("{\"imported\": %ld, \"failed\": %ld, \"seconds\": %.3f, \"per_second\": %.0f, "
           "\"first_line\": %ld, \"next_line\": %ld, \"complete\": %s}\n",
           res.imported, res.failed, secs, secs > 0 ? (double)res.imported / secs : 0.0, o.first_line,
           res.next_line, res.complete ? "true" : "false");
    if (rc || !res.complete) {
        fprintf(stderr, "promod: import stopped at line %ld of %s: %s\n", res.next_line, path,
                rc ? err_str(rc) : "interrupted");
        fprintf(stderr, "promod: the lines before %ld are stored (or were reported); continue with: "
                        "promod import profiles %s --resume (or --from-line %ld)\n",
                res.next_line, path, res.next_line);
        status = 1;
    } else {
        status = res.failed ? 3 : 0;
    }
out:
    segments_stop(&app);
    json_decref(prog);
    json_decref(ident);
    store_close(app.store);
    config_free(&app.cfg);
    if (f != stdin)
        fclose(f);
    return status;
}

/* A path with a "models" component, or under the config's models_dir,
 * holds model files. */
static int is_model_path(const struct config *cfg, const char *p)
{
    size_t ml = strlen(cfg->models_dir);
    if (!strncmp(p, cfg->models_dir, ml) && (p[ml] == 0 || p[ml] == '/'))
        return 1;
    const char *s = p;
    while ((s = strstr(s, "models"))) {
        if ((s == p || s[-1] == '/') && (s[6] == 0 || s[6] == '/'))
            return 1;
        s += 6;
    }
    return 0;
}

/* Is `path` an experiment file or directory: under experiments_dir, or a
 * path with an "experiments" component? */
static int is_experiment_path(const struct config *cfg, const char *path)
{
    char dir[4096];
    config_experiments_dir(cfg, dir, sizeof dir);
    size_t dl = strlen(dir);
    if (!strncmp(path, dir, dl) && (path[dl] == 0 || path[dl] == '/'))
        return 1;
    for (const char *p = path; (p = strstr(p, "experiments")); p += 11)
        if ((p == path || p[-1] == '/') && (p[11] == '/' || p[11] == 0))
            return 1;
    return 0;
}

/* promod check --data DIR: the eligible_never_passed warning of the rules
 * directory checked (`dir`, when it is one; else the configured one) over
 * a sample of the last day's decision log (service/backtest.h).  Prints
 * "file:line: warning: ..." lines; @return 1 when there is one and
 * `strict`, else 0. */
static int check_eligible(const struct config *cfg, const char *dir, int strict)
{
    static struct app eapp;
    struct stat sb;
    eapp.cfg = *cfg;
    if (!dir || stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        dir = cfg->rules_dir;
    if (open_store(&eapp))
        return 0;
    g_app = &eapp;
    int nw = 0;
    if (dlog_open(cfg) == 0) {
        models_init();
        segments_start(&eapp, 0);
        struct reqerr e = { 0 };
        json_t *res = backtest_eligible(&eapp, dir, clock_now_ms(), &e);
        if (!res) {
            fprintf(stderr, "promod check: replay of the decision log: %s\n", e.message);
        } else {
            json_t *byfile = json_object();
            size_t i;
            json_t *x;
            json_array_foreach(json_object_get(res, "warnings"), i, x) {
                const char *f = json_string_value(json_object_get(x, "file"));
                if (!json_object_get(byfile, f))
                    json_object_set_new(byfile, f, json_array());
                json_array_append(json_object_get(byfile, f), x);
            }
            nw = rules_warnings_print(byfile, stderr);
            fprintf(stderr, "promod check: %lld logged decisions of the last day replayed "
                            "(of %lld), %d eligible warnings\n",
                    (long long)json_integer_value(json_object_get(res, "decisions")),
                    (long long)json_integer_value(json_object_get(res, "logged")), nw);
            json_decref(byfile);
        }
        json_decref(res);
        json_decref(e.extra);
        segments_stop(&eapp);
        dlog_close();
    }
    store_close(eapp.store);
    eapp.store = NULL;
    g_app = NULL;
    return nw && strict ? 1 : 0;
}

static int cmd_check(const struct cli *c)
{
    struct config cfg;
    if (load_config(&cfg, c))
        return 2;
    /* model files, segment files (under segments_dir or a "segments"
     * directory), experiment files and loyalty files go to their own
     * checkers, the rest (campaigns, plugins) to the rules'.  No argument:
     * each checks its default directory (rules/ plugins/, experiments/,
     * loyalty/, segments/, the models_dir when it exists) */
    int n = c->nargs - 1, nr = 0, nl = 0, nx = 0, nm = 0, ns = 0;
    const char **rp = calloc((size_t)n + 1, sizeof *rp), **lp = calloc((size_t)n + 1, sizeof *lp),
               **xp = calloc((size_t)n + 1, sizeof *xp), **mp = calloc((size_t)n + 1, sizeof *mp),
               **sp = calloc((size_t)n + 1, sizeof *sp);
    if (!rp || !lp || !xp || !mp || !sp) {
        free(rp);
        free(lp);
        free(xp);
        free(mp);
        free(sp);
        config_free(&cfg);
        fprintf(stderr, "promod check: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        const char *a = c->args[1 + i];
        if (is_model_path(&cfg, a))
            mp[nm++] = a;
        else if (segments_is_segments_path(&cfg, a))
            sp[ns++] = a;
        else if (loyalty_rules_is_loyalty_path(&cfg, a))
            lp[nl++] = a;
        else if (is_experiment_path(&cfg, a))
            xp[nx++] = a;
        else
            rp[nr++] = a;
    }
    int seg_problems = 0, seg_files = 0;
    if (ns || !n) {
        seg_problems = segments_check_paths(&cfg, sp, ns, &seg_files);
        if (seg_files || ns)
            fprintf(stderr, "promod check: %d segment files, %d problems\n", seg_files, seg_problems);
    }
    /* --data DIR: profiles sampled from that store feed the template warning */
    struct rules_check_opts ro = { .strict = c->strict };
    json_t *sample = NULL;
    if (c->data && (!n || nr) && access(c->data, F_OK) == 0) {
        static struct app sapp;
        sapp.cfg = cfg;
        struct store_txn *t = NULL;
        if (open_store(&sapp) == 0) {
            if (store_rtxn_begin(sapp.store, &t) == 0)
                sample = rules_sample_profiles(t, RULES_WARN_SAMPLE);
            store_txn_end(t);
            store_close(sapp.store);
            sapp.store = NULL;
        }
        ro.profiles = sample;
    }
    int rc = n && !nr ? 0 : rules_check_cli(&cfg, rp, nr, &ro);
    json_decref(sample);
    /* --data DIR: and the rule set replayed on the last day's logged decides */
    if (c->data && (!n || nr) && rc != 1 && access(c->data, F_OK) == 0)
        rc |= check_eligible(&cfg, nr == 1 ? rp[0] : NULL, c->strict);
    /* --test: the campaign tests of the rule directories checked */
    if (c->test && (!n || nr)) {
        int nt = 0;
        for (int i = 0; i < nr; i++)
            if (!strstr(rp[i], "plugins"))
                rp[nt++] = rp[i];
        if (!nr || nt)
            rc |= ruletest_cli(&cfg, rp, nt, 0);
    }
    int lbad = n && !nl ? 0 : loyalty_rules_check_cli(&cfg, lp, nl);
    int xbad = n && !nx ? 0 : exp_admin_check_cli(&cfg, xp, nx);
    if (!n && access(cfg.models_dir, F_OK) == 0)
        mp[nm++] = cfg.models_dir;
    int mbad = 0;
    if (nm) {
        int nfiles = 0;
        mbad = models_check_paths(mp, nm, &nfiles);
        fprintf(stderr, "promod check: %d model files, %d problems\n", nfiles, mbad);
    }
    free(rp);
    free(lp);
    free(xp);
    free(mp);
    free(sp);
    config_free(&cfg);
    return rc ? rc : (lbad || xbad || mbad || seg_problems) ? 1 : 0;
}

/* promod test [DIR|FILE ...]: the campaign tests (engine/ruletest.h) */
static int cmd_test(const struct cli *c)
{
    struct config cfg;
    if (load_config(&cfg, c))
        return 2;
    int rc = ruletest_cli(&cfg, c->args + 1, c->nargs - 1, 1);
    config_free(&cfg);
    return rc;
}

/* promod train MODEL: one training in this process, on the data directory
 * (the server may be running: its registry picks the new version up
 * within a second). */
static int cmd_train(const struct cli *c)
{
    if (c->nargs != 2) {
        usage(stderr);
        return 2;
    }
    static struct app app;
    g_app = &app;
    if (load_config(&app.cfg, c))
        return 2;
    int threads = 0;
    if (c->threads && ((threads = atoi(c->threads)) < 1 || threads > 64)) {
        fprintf(stderr, "promod: --threads: expected 1 to 64\n");
        config_free(&app.cfg);
        return 2;
    }
    if (c->now) {
        /* train as of another time (the examples are those whose outcome
         * window had closed then): unix seconds or ISO-8601 */
        int64_t t;
        char *end;
        long long n = strtoll(c->now, &end, 10);
        if (*end == 0 && end != c->now)
            t = n;
        else if (tz_parse_iso8601(c->now, &t)) {
            fprintf(stderr, "promod: --now: expected unix seconds or ISO-8601\n");
            config_free(&app.cfg);
            return 2;
        }
        clock_set_offset(t - (int64_t)time(NULL));
    }
    if (open_store(&app)) {
        config_free(&app.cfg);
        return 1;
    }
    models_start(&app);
    /* segment features evaluate the segments' definitions (models_seg.c):
     * loaded here as the server loads them, the index left to the server */
    if (segments_start(&app, -1))
        fprintf(stderr, "promod: segments: cannot load the segment files\n");
    struct train_opts o = { .force = c->force, .actor = "cli", .trigger = "cli", .threads = threads };
    json_t *res = NULL;
    struct reqerr e = { 0 };
    int rc = train_model(&app, c->args[1], &o, &res, &e);
    if (rc) {
        fprintf(stderr, "promod train: %s: %s\n", c->args[1], e.message);
        if (e.extra) {
            char *x = json_dumps(e.extra, JSON_COMPACT);
            if (x)
                fprintf(stderr, "promod train: %s\n", x);
            free(x);
        }
        reqerr_clear(&e);
    } else {
        json_t *summary = json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "model", json_object_get(res, "model"),
                                    "version", json_object_get(res, "version"),
                                    "status", json_object_get(res, "status"),
                                    "rows", json_object_get(res, "rows"),
                                    "validation", json_object_get(json_object_get(res, "metrics"), "validation"),
                                    "decision", json_object_get(res, "decision"),
                                    "duration_ms", json_object_get(res, "duration_ms"));
        char *txt = json_dumps(summary ? summary : res, JSON_INDENT(2));
        if (txt)
            printf("%s\n", txt);
        free(txt);
        json_decref(summary);
    }
    json_decref(res);
    segments_stop(&app);
    models_stop(&app);
    store_close(app.store);
    config_free(&app.cfg);
    return rc ? 1 : 0;
}

static int random_bytes(unsigned char *p, size_t n)
{
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* promod key: a new random API key and the config entry holding only its
 * SHA-256, so the secret itself is never written to the config. */
static int cmd_key(const struct cli *c)
{
    const char *role = c->role ? c->role : "decide";
    if (strcmp(role, "decide") && strcmp(role, "checkout") && strcmp(role, "marketer") &&
        strcmp(role, "admin")) {
        fprintf(stderr, "promod: --role: expected decide, checkout, marketer or admin\n");
        return 2;
    }
    unsigned char raw[32];
    if (random_bytes(raw, sizeof raw)) {
        fprintf(stderr, "promod: no randomness: %s\n", strerror(errno));
        return 1;
    }
    char id[80];
    if (c->id) {
        size_t n = strlen(c->id);
        int ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = (unsigned char)c->id[i] > ' ' && c->id[i] != '"' && c->id[i] != '\\' && c->id[i] != 0x7f;
        if (!ok) {
            fprintf(stderr, "promod: --id: 1 to 64 characters, no spaces, quotes or backslashes\n");
            return 2;
        }
        snprintf(id, sizeof id, "%s", c->id);
    } else {
        snprintf(id, sizeof id, "%s-%02x%02x%02x%02x", role, raw[28], raw[29], raw[30], raw[31]);
    }
    /* 32 random bytes, base64url without padding: 43 characters */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char key[64] = "pmk_";
    size_t o = 4;
    for (size_t i = 0; i < sizeof raw; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (i + 1 < sizeof raw ? (unsigned)raw[i + 1] << 8 : 0) |
                     (i + 2 < sizeof raw ? raw[i + 2] : 0);
        size_t chars = i + 2 < sizeof raw ? 4 : i + 1 < sizeof raw ? 3 : 2;
        for (size_t k = 0; k < chars; k++)
            key[o++] = b64[(v >> (18 - 6 * k)) & 63];
    }
    key[o] = 0;
    char hex[65];
    config_key_hash_hex(key, o, hex);
    printf("key:    %s\n"
           "config: { id = \"%s\", sha256 = \"%s\", role = \"%s\" },\n",
           key, id, hex, role);
    fprintf(stderr, "promod: give the key to its client; add the config line to api_keys "
                    "(only the digest is stored) and restart the server\n");
    return 0;
}

/* `promod replay`: the decision log of --data replayed on the configured
 * rules directory (as it is) and on --rules DIR (the edit); prints the
 * report (service/backtest.h, engine/replay.h).  Exit 0, 1 (store or
 * replay failed), 2 (usage), 3 (a rule set does not validate). */
static int cmd_replay(const struct cli *c)
{
    if (c->nargs != 1) {
        usage(stderr);
        return 2;
    }
    static struct app app;
    g_app = &app;
    struct cli base = *c;
    base.rules = NULL; /* --rules is the edit; the configured directory is the baseline */
    if (load_config(&app.cfg, &base))
        return 2;
    struct replay_opts o = { .limit = 0, .sample = 1, .show = 10 };
    o.to_ms = clock_now_ms();
    o.from_ms = o.to_ms - 86400000LL;
    char *end = NULL;
    if ((c->to && backtest_parse_time(c->to, &o.to_ms)) ||
        (c->from && backtest_parse_time(c->from, &o.from_ms)) || o.from_ms > o.to_ms) {
        fprintf(stderr, "promod replay: --from/--to: ISO-8601 or unix milliseconds, from <= to\n");
        config_free(&app.cfg);
        return 2;
    }
    if ((c->limit && ((o.limit = strtol(c->limit, &end, 10)) < 1 || *end)) ||
        (c->sample && (!((o.sample = strtod(c->sample, &end)) > 0 && o.sample <= 1) || *end)) ||
        (c->show && ((o.show = (int)strtol(c->show, &end, 10)) < 0 || o.show > 100 || *end))) {
        fprintf(stderr, "promod replay: --limit N (>= 1), --sample S (0 < S <= 1), --show N "
                        "(0-100)\n");
        config_free(&app.cfg);
        return 2;
    }
    if (open_store(&app)) {
        config_free(&app.cfg);
        return 1;
    }
    if (dlog_open(&app.cfg)) { /* the decision log's own environment */
        store_close(app.store);
        config_free(&app.cfg);
        return 1;
    }
    models_init(); /* promo.predict in the sandboxes' Lua states */
    if (segments_start(&app, 0))
        fprintf(stderr, "promod replay: segments: cannot record the index slots\n");
    struct reqerr e = { 0 };
    json_t *rep = backtest_run(&app, NULL, c->rules, &o, &e);
    int status = 0;
    if (!rep) {
        fprintf(stderr, "promod replay: %s\n", e.message);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(e.extra, "errors"), i, m)
            fprintf(stderr, "%s\n", json_string_value(m));
        json_decref(e.extra);
        status = e.status == 422 ? 3 : 1;
    } else if (c->json) {
        char *txt = json_dumps(rep, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (txt)
            puts(txt);
        free(txt);
    } else {
        printf("replayed %lld decisions in %.1f s (%.0f/s): %lld changed (%.2f%%), drift %lld, "
               "failed %lld/%lld\n",
               (long long)json_integer_value(json_object_get(rep, "decisions")),
               json_number_value(json_object_get(rep, "seconds")),
               json_number_value(json_object_get(rep, "decisions_per_second")),
               (long long)json_integer_value(json_object_get(rep, "changed")),
               100 * json_number_value(json_object_get(rep, "changed_share")),
               (long long)json_integer_value(json_object_get(rep, "drift")),
               (long long)json_integer_value(json_object_get(json_object_get(rep, "failed"), "before")),
               (long long)json_integer_value(json_object_get(json_object_get(rep, "failed"), "after")));
        printf("%-32s %10s %10s %9s %9s %9s %7s\n", "campaign", "before", "after", "changed",
               "new", "lost", "errors");
        const char *id;
        json_t *v;
        json_object_foreach(json_object_get(rep, "campaigns"), id, v) {
            printf("%-32s %10lld %10lld %9lld %9lld %9lld %7lld\n", id,
                   (long long)json_integer_value(json_object_get(v, "offers_before")),
                   (long long)json_integer_value(json_object_get(v, "offers_after")),
                   (long long)json_integer_value(json_object_get(v, "decisions_changed")),
                   (long long)json_integer_value(json_object_get(v, "customers_new")),
                   (long long)json_integer_value(json_object_get(v, "customers_lost")),
                   (long long)json_integer_value(json_object_get(v, "errors_after")));
            size_t i;
            json_t *cp;
            json_array_foreach(json_object_get(v, "caps"), i, cp)
                if (json_integer_value(json_object_get(cp, "would_bind")))
                    printf("    %s cap %lld per %s would bind %lld times\n",
                           json_string_value(json_object_get(cp, "scope")),
                           (long long)json_integer_value(json_object_get(cp, "limit")),
                           json_string_value(json_object_get(cp, "window")),
                           (long long)json_integer_value(json_object_get(cp, "would_bind")));
        }
        size_t wi;
        json_t *w;
        json_array_foreach(json_object_get(rep, "warnings"), wi, w) /* the edit's eligible hooks */
            printf("%s:%lld: warning: %s\n", json_string_value(json_object_get(w, "file")),
                   (long long)json_integer_value(json_object_get(w, "line")),
                   json_string_value(json_object_get(w, "message")));
    }
    json_decref(rep);
    segments_stop(&app);
    dlog_close();
    store_close(app.store);
    config_free(&app.cfg);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    struct cli c;
    if (parse_cli(argc - 1, argv + 1, &c) || c.nargs < 1) {
        usage(stderr);
        return 2;
    }
    const char *cmd = c.args[0];
    if (!strcmp(cmd, "serve"))
        return cmd_serve(&c);
    if (!strcmp(cmd, "import"))
        return cmd_import(&c);
    if (!strcmp(cmd, "check"))
        return cmd_check(&c);
    if (!strcmp(cmd, "train"))
        return cmd_train(&c);
    if (!strcmp(cmd, "test"))
        return cmd_test(&c);
    if (!strcmp(cmd, "key"))
        return cmd_key(&c);
    if (!strcmp(cmd, "replay"))
        return cmd_replay(&c);
    if (!strcmp(cmd, "version")) {
        printf("promod 0.1.0\n");
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "promod: unknown command %s\n", cmd);
    usage(stderr);
    return 2;
}
