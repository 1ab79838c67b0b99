/*
 * rules.h — campaign files (every .lua below rules/, except rules/lib/) and
 * channel plugins (plugins/NAME.lua): loading, validation, ruleset generations, hot reload.
 *
 * A *generation* is an immutable, refcounted snapshot: every file's
 * source, load status and error, the validated campaigns and channels as C
 * structs, and the candidate index (channel → campaigns by priority).  The
 * reloader (main thread) builds a new generation aside — compiling only
 * files whose content changed, in a scratch sandbox with `promod check`'s
 * validation — and publishes it with one pointer swap.  A file that fails
 * keeps its previous good version in the new generation (a new file is
 * simply absent) and its error is reported.
 *
 * Each worker thread owns a Lua state (struct rules_worker) holding the
 * compiled tables of the generation it has adopted; between requests it
 * adopts the newest generation, recompiling only changed files, and drops
 * its reference to the old one — the last holder frees it.  Requests in
 * flight finish on the generation they started with.
 *
 * The module's files, along its seams:
 *   rules.c         generations, scanning the directories, building and
 *                   publishing a generation, reload, the directory watch
 *   rules_check.c   validation of one file (the campaign and plugin tables)
 *                   and `promod check`
 *   rules_lines.c   where each field of a file is written (file:line for
 *                   validation messages)
 *   rules_worker.c  the worker side: loading files into a worker's Lua
 *                   state, adopting generations, the hook ref cache
 *   rules_warn.c    static warnings over a rule set (promod check,
 *                   GET /api/v1/rules) and the profile sample they use
 * Which hooks a file may define, and how they are called, is the hooks
 * module's (engine/hooks.h); validation and the worker side follow its
 * table.
 *
 * Threads: rules_gen_acquire/release from any thread; rules_reload from the
 * main thread or an API handler (serialised by a mutex); rules_worker_* only
 * on the owning worker thread.
 */
#ifndef PROMOD_RULES_H
#define PROMOD_RULES_H
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include "base/config.h"
#include "engine/coupons.h"
#include "engine/hooks.h"

struct app;
struct event_base;
struct condset;
struct formula;
struct luavm;
struct store_txn;

#define RULES_MAX_WINDOWS 8
#define RULES_MAX_VARIANTS 64
#define RULES_MAX_LOCALES 32

enum rules_kind { RULES_CAMPAIGN = 0, RULES_PLUGIN = 1 };

enum campaign_status {
    CAMP_DRAFT = 0, CAMP_PENDING, CAMP_APPROVED, CAMP_ACTIVE, CAMP_PAUSED, CAMP_STOPPED,
    CAMP_ARCHIVED, CAMP_NSTATUS
};
const char *rules_status_name(enum campaign_status s);
int rules_status_parse(const char *s); /**< -1 when unknown */

/** One cap: at most `limit` in a window of `secs` seconds (0 = lifetime).
 *  `unit` is 'h', 'd', 'w' or 'L' (lifetime); `label` is the source text
 *  ("7d") used as the key in the throttle hook's counts table. */
struct rules_cap {
    long limit;
    int64_t secs;
    char unit;
    int n;
    char label[16];
};

struct rules_caps {
    struct rules_cap w[RULES_MAX_WINDOWS];
    int n;
};

struct rules_schedule {
    int64_t starts, ends;   /**< unix seconds; 0 = open */
    unsigned days;          /**< bit 1..7 = Monday..Sunday; 0 = every day */
    int hour_from, hour_to; /**< local hours [from, to); -1 = all day */
    char tz[64];            /**< zone for days/hours ("UTC") */
};

struct rules_variant {
    char *id;
    double weight;
};

struct rules_campaign {
    char *id;
    char *name;
    int file;                       /**< index into gen->files */
    unsigned channels;              /**< bit per gen->channels index */
    char **placements;              /**< NULL = any */
    int nplacements;
    uint64_t placement_mask;        /**< bits over gen->placement_names; 0 = any placement */
    double priority;
    struct rules_schedule sched;
    struct rules_caps cust_caps, total_caps;
    struct rules_variant *variants;
    int nvariants;
    double weight_sum;
    unsigned hooks;                 /**< HOOKS_BIT() of each campaign hook the file defines */
    enum campaign_status status;    /**< effective status (store overrides file) */
    enum campaign_status file_status;
    json_t *trigger;                /**< {"event","delay","cancel_on"} or NULL */
    /* score = { model = "buy_7d", value = 25 } (value may be { model = "rev_90d" }): rank by
     * expected value, propensity x value, times priority / 50 (engine/models.h) */
    char score_model[132];          /**< "" when the score is not a model's */
    char score_value_model[132];    /**< a value model, or "" (score_value is the value) */
    double score_value;
    /* score = { base, per, boost }: a score declared in the file, worked out in C
     * (engine/formula.h); NULL when the score is a hook, a model's or the priority */
    struct formula *score_formula;
    /* audience = { segments, exclude, conditions, model, top | above }: one table, two parts.
     * The filter (segments/exclude/conditions) decides membership in decide and sends
     * (audience.h); the model part ranks the customers passing the filter for outbound sends
     * only: the N likeliest (top) or those scoring at least `above` */
    json_t *audience;               /**< {"segments"?, "exclude"?, "conditions"?}, or NULL */
    char audience_model[132];       /**< "" when the audience has no model */
    long audience_top;              /**< 0 when `above` is used */
    double audience_above;
    double cost_per_send, cost_per_impression;
    struct coupons_budget budget;   /**< money budget for coupon redemptions; amount_m 0 = none */
    char **locales;                 /**< declared content locales ("en", "fr-CA"), the first the
                                         default; NULL = content is not localized */
    int nlocales;
};

struct rules_channel {
    char *name;
    int file;
    struct rules_caps policy;       /**< per customer per channel, across campaigns */
    int quiet_from, quiet_to;       /**< local hours, -1 = none */
    char *consent;                  /**< profile consent key or NULL */
    unsigned hooks;                 /**< HOOKS_BIT() of each channel hook (render, deliver) */
    int outbound;                   /**< has deliver: messages go through the outbox */
    json_t *settings;               /**< config channels[name] (borrowed from config) */
    char **placements;              /**< the plugin's `placements` (slots it serves), or NULL
                                         when it does not say (any); for warnings only */
    int nplacements;
};

struct rules_file {
    char *path;       /**< as shown to users, e.g. "rules/spring.lua" */
    enum rules_kind kind;
    char *source;     /**< live source (last good), NULL when never loaded */
    size_t source_len;
    uint32_t hash;    /**< of the live source */
    int64_t loaded_at;
    int ok;           /**< the file on disk loaded cleanly */
    char *error;      /**< "file:line: message" for the version on disk, or NULL */
    uint32_t disk_hash;
    char *disk_source; /**< the file's text when `source` is an approved version served in
                            its place (see rules_set_source_filter), else NULL */
    size_t disk_source_len;
};

struct rules_gen {
    int refs;
    uint64_t seq;
    struct rules_file *files;
    int nfiles;
    struct rules_campaign *camps;
    int ncamps;
    struct rules_channel *chans;
    int nchans;
    int *by_channel[32];    /**< campaign indices per channel, by priority desc */
    int nby_channel[32];
    int64_t built_at;
    double build_ms;
    uint32_t lib_hash;      /**< of rules/lib: a change invalidates require caches */
    char *placement_names[64]; /**< every placement named by a campaign (first 64) */
    int nplacement_names;
    /** Per channel: the audiences of by_channel[ch]'s campaigns compiled
     *  together (member j = position j), or NULL when none declares one
     *  (engine/audience.h); and campaign index → position in by_channel[ch]
     *  (-1 when not on the channel), present with it. */
    struct condset *aud[32];
    int *aud_pos[32];
    /* Declared scores' boosts (engine/formula.h) of each channel's campaigns in one condset,
     * a member per distinct condition: boost i of position j of by_channel is member
     * boost_member[ch][boost_first[ch][j] + i] (boost_first -1: no boosts).  NULL when no
     * campaign of the channel has one. */
    struct condset *boost[32];
    int *boost_first[32], *boost_member[32];
    /** Ranking without scoring every candidate (engine/decide_prune.c):
     *  per channel, the positions whose declared score is boundable
     *  (formula_bound_key) and has the channel's most common `per`
     *  (prune_per: one of those formulas; NULL: none), as a bitset of
     *  CONDSET_WORDS(nby_channel) words, and by position their bound keys
     *  above and below (formula_bound_key, formula_low_key; 0 elsewhere). */
    uint64_t *prune_in[32];
    double *prune_hi[32], *prune_lo[32];
    const struct formula *prune_per[32];
    /** Per channel with an audience index: which of its positions may
     *  serve at all (active, and the placement targeted), as
     *  (nplacement_names + 2) bitsets of CONDSET_WORDS(nby_channel) words —
     *  row k for placement bit k, row nplacement_names for a placement no
     *  campaign names, the last row for a request without a placement — so
     *  the audience evaluation skips campaigns the cheap filters would drop
     *  anyway (rules_gen_serve_mask). */
    uint64_t *aud_serve[32];
};

/** The bitset of channel `chi`'s positions that may serve (active and the
 *  placement targeted) for `placement` (NULL: none given) with its bit
 *  `pbit` (rules_gen_placement_bit), or NULL when the channel has no
 *  audience index.  Borrowed from `g`. */
const uint64_t *rules_gen_serve_mask(const struct rules_gen *g, int chi, const char *placement,
                                     uint64_t pbit);

/** 1 when `now` is inside the schedule: between starts and ends, on one of
 *  its days and within its hours in its zone (a campaign enters and leaves
 *  the candidate set on time, without a reload). */
int rules_schedule_open(const struct rules_schedule *s, int64_t now);

/** Bit of a placement name in this generation's campaign masks: 0 when no
 *  campaign names it (then only campaigns without a placement filter
 *  match). */
uint64_t rules_gen_placement_bit(const struct rules_gen *g, const char *placement);

/* --- lifecycle (main thread) ------------------------------------------- */
int rules_start(struct app *app);            /**< first load; errors are reported, not fatal */
/** Start watching the directories, on `base` (the main thread's loop). */
void rules_attach(struct app *app, struct event_base *base);
void rules_stop(struct app *app);

/** Rescan both directories and publish a new generation if anything
 *  changed (or `force`).  Returns the number of files with errors. */
int rules_reload(struct app *app, int force);

/** A generation that is never published, for a replay's sandbox
 *  (engine/replay.h): built like a reload from `rules_dir` and
 *  `plugins_dir` (NULL: the configured ones), with `overlay` (may be NULL:
 *  a JSON object, file name below the rules directory such as
 *  "spring.lua" → source) replacing or adding campaign files; stored
 *  status overrides and approved versions apply as live, except to the
 *  overlay's files.  Any file that does not validate fails the build: its
 *  "path:line: message" strings are appended to `errors`.  Call with no
 *  store txn open.  @return a generation (one reference, for
 *  rules_worker_adopt or rules_gen_release), or NULL. */
struct rules_gen *rules_gen_sandbox(struct app *app, const char *rules_dir,
                                    const char *plugins_dir, const json_t *overlay,
                                    json_t *errors);

/** Set a campaign's status override (stored by the campaigns module) and
 *  republish so decide sees it.  Cheap: no file is recompiled. */
void rules_refresh_status(struct app *app);

/* --- generations (any thread) ------------------------------------------ */
struct rules_gen *rules_gen_acquire(void);
void rules_gen_release(struct rules_gen *g);
int rules_gen_find_campaign(const struct rules_gen *g, const char *id);
int rules_gen_find_channel(const struct rules_gen *g, const char *name);

/** GET /api/v1/rules: every file with status, hash, loaded_at, error. */
json_t *rules_status_json(void);

/* --- validation (any thread; used by check, the API and the reloader) -- */
/** Compile and validate one file's source in a throwaway sandbox.  Errors
 *  are appended to `errors` as "path:line: message" strings.  `chans`
 *  (may be NULL) names the known channels for campaign validation.
 *  @return 0 when valid. */
int rules_validate_source(const char *path, enum rules_kind kind, const char *src, size_t len,
                          const char *const *chans, int nchans, const char *lib_dir,
                          json_t *errors);

/** rules_validate_source() for a campaign that also returns what it parsed:
 *  on success *out holds the campaign (id, name, channels as bits over
 *  `chans`, schedule, file_status, cost...), owned by the caller, freed with
 *  rules_campaign_free(); on failure *out is zeroed.  @return 0 when valid,
 *  ERR_INVAL, ERR_LUA, ERR_TOOBIG, ERR_NOMEM. */
int rules_validate_campaign(const char *path, const char *src, size_t len,
                            const char *const *chans, int nchans, const char *lib_dir,
                            json_t *errors, struct rules_campaign *out);
void rules_campaign_free(struct rules_campaign *c);

/** Source filter, consulted by the reloader for every campaign file whose
 *  text on disk is valid: it may return a replacement source (malloc'd,
 *  NUL-terminated, length in *outlen; the reloader takes it) to serve
 *  instead, or NULL to serve the file.  `t` is the reloader's read txn (may
 *  be NULL), `id` the campaign id the file declares.  Used by campaigns.c so
 *  that, with require_approval, the approved version keeps serving while a
 *  newer one waits.  A replacement that fails validation or declares another
 *  id is ignored (logged).  Set once before rules_start(). */
typedef char *(*rules_source_filter_fn)(struct store_txn *t, const char *id, const char *path,
                                        const char *src, size_t len, size_t *outlen);
void rules_set_source_filter(rules_source_filter_fn fn);

/** Called after every reload that published a generation, on the reloading
 *  thread, outside the reload lock (it may open a write txn; it must not be
 *  called with one open).  campaigns.c records file saves as versions here.
 *  Set once before rules_start(). */
typedef void (*rules_reload_hook_fn)(struct app *app);
void rules_set_reload_hook(rules_reload_hook_fn fn);

/** 1 when `path` names a campaign test file (ends in "_test.lua"): the
 *  loader and `promod check` skip those; `promod test` runs them
 *  (engine/ruletest.h). */
int rules_is_test_file(const char *path);

/* --- static warnings (rules_warn.c; any thread) ------------------------- */
/** A file's text, for the line numbers and template placeholders of warnings. */
struct rules_warn_file {
    const char *path;
    const char *src; /**< may be NULL */
    size_t len;
};
/** Static warnings over a rule set — things that load but are probably not
 *  meant; they never block loading.  `camps[i].file` indexes `files`; a
 *  campaign's channel bits index `chans`.  Codes: schedule_past (the
 *  schedule ends before `now`), placement_unserved (a placement on a
 *  campaign whose channels all send, or that no channel's `placements`
 *  list names), variant_weights_zero, priority_tie (two active campaigns
 *  with the same priority, a shared channel and an overlapping placement,
 *  no score hook: the lower id ranks first), cap_never_binds (a customer
 *  or total cap another cap of the campaign always reaches first),
 *  cap_above_policy (a customer cap above a channel policy's cap with at
 *  least as long a window), template_attribute_unseen (a {{path}} in the
 *  file's text that none of `profiles` has; skipped when `profiles` is
 *  NULL or empty).  @return a new object: file path → [{"file", "line",
 *  "code", "message"}] (files without warnings absent), NULL when out of
 *  memory. */
json_t *rules_warnings(const struct rules_campaign *camps, int ncamps,
                       const struct rules_channel *chans, int nchans,
                       const struct rules_warn_file *files, int nfiles, const json_t *profiles,
                       int64_t now);
/** rules_warnings over a generation. */
json_t *rules_gen_warnings(const struct rules_gen *g, const json_t *profiles, int64_t now);
/** Up to `n` profiles spread over the store (runs of n/8 from 8 start
 *  keys across the id alphabet; at most about 5n records read, never a full scan), each
 *  an object with its "id", for the template warning.  Read txn `t` (NULL
 *  gives []).  @return a new array. */
json_t *rules_sample_profiles(struct store_txn *t, int n);
/** Print warnings as "file:line: warning: message" lines; @return how many. */
int rules_warnings_print(const json_t *w, FILE *f);
#define RULES_WARN_SAMPLE 500 /**< profiles sampled for the template warning */

/** Options of `promod check` beyond the paths. */
struct rules_check_opts {
    int strict;               /**< warnings fail the check (exit status 1) */
    const json_t *profiles;   /**< sampled profiles (--data), or NULL */
    int64_t now;              /**< for the schedule warning; 0 = the clock */
};

/** `promod check`: validate the given dirs/files (default rules/ plugins/),
 *  print each problem and then each warning (rules_warnings over the files
 *  checked, with opts->profiles for the template warning), return the exit
 *  status: 1 on a problem, or on a warning with opts->strict. */
int rules_check_cli(const struct config *cfg, const char **paths, int n,
                    const struct rules_check_opts *opts);

/* --- the worker side (rules_worker.c) ----------------------------------- */
/** A campaign's variants' content as compiled in a worker (content.h),
 *  progs[(variant * nloc + locale) * 2 + msgpack] (nloc is 1 for content
 *  that is not localized; the locale index follows the campaign's
 *  `locales`); owned by the worker's loaded file. */
struct content_prog;
struct rules_content {
    struct content_prog **progs;
    int n;
    int nloc;
};

/** The worker's adopted generation and its compiled tables.  `refs[i]` is a
 *  Lua registry ref of campaign i's table (LUA_NOREF when it failed to load
 *  in this worker); `chan_refs[i]` likewise for channel i.  The hook
 *  functions of each are cached as refs too (rules_worker_hooks,
 *  rules_worker_chan_hooks), so a hook call does no look-up by name. */
struct rules_worker {
    struct luavm *vm;
    struct rules_gen *gen;
    int *refs;
    int *chan_refs;
    int *hook_refs;       /**< HOOKS_N per campaign of gen (hooks_refs_resolve) */
    int *chan_hook_refs;  /**< HOOKS_N per channel of gen */
    /** Per campaign of gen: HOOKS_BIT(h) set when hook h is exactly
     *  `function(p, ctx) return true end` (luavm_fn_returns_true) — an
     *  `eligible` that always passes, which decide need not call. */
    unsigned char *hook_true;
    struct rules_content *content; /**< per campaign of gen */
    struct wfile *wfiles; /* loaded files by path/hash (internal) */
    int nwfiles, capwfiles;
    struct event *tick;
    uint32_t lib_hash;
    int ncompiled;        /**< files compiled by the last adoption */
    /** Request-path scratch kept between requests (decide's candidate
     *  arrays and buffers), freed with the worker by scratch_free. */
    void *scratch;
    void (*scratch_free)(void *);
    /** A simulation's throwaway worker (rules_sim_start): never the
     *  thread's own, never refreshed, its hook errors stay out of /metrics. */
    int sim;
    uint64_t live_seq;    /**< gen->seq, for other threads (atomic: rules_workers_live) */
};

/** Hook function refs of campaign `camp` of rw->gen, indexed by enum
 *  hooks_id: a registry ref, or LUA_NOREF when the file does not define
 *  that hook (or did not load in this worker).  Borrowed until the next
 *  adoption (rules_worker_refresh). */
static inline const int *rules_worker_hooks(const struct rules_worker *rw, int camp)
{
    return rw->hook_refs + (size_t)camp * HOOKS_N;
}

/** The same for channel `chan` of rw->gen (render, deliver). */
static inline const int *rules_worker_chan_hooks(const struct rules_worker *rw, int chan)
{
    return rw->chan_hook_refs + (size_t)chan * HOOKS_N;
}

/** A Lua state for the calling thread (a HTTP worker, the delivery or the
 *  send thread) that adopts the newest generation on `base` every 250 ms
 *  and between requests.  rules_worker_self() returns it on that thread.
 *  @return 0, ERR_NOMEM. */
int rules_worker_start(struct event_base *base, struct rules_worker **out);
/** Free the thread's Lua state (NULL is fine). */
void rules_worker_stop(struct rules_worker *rw);
/** Adopt the newest generation if there is one (call between requests). */
void rules_worker_refresh(struct rules_worker *rw);
/** Adopt generation `g` (the caller's reference passes to the worker):
 *  compile what changed, drop what went.  rules_worker_refresh() with the
 *  live generation; rules_sim_start() with an unpublished one. */
void rules_worker_adopt(struct rules_worker *rw, struct rules_gen *g);
struct rules_worker *rules_worker_self(void);

/** The newest generation every thread's worker (HTTP workers, delivery,
 *  sends: rules_worker_start) has adopted — an edit is live everywhere once
 *  this reaches its generation; 0 before any worker runs.  *nworkers (may
 *  be NULL) receives how many there are.  Any thread. */
uint64_t rules_workers_live(int *nworkers);

/** A worker whose thread runs no event loop and refreshes it before each
 *  use instead (the sends' audience builder): left out of
 *  rules_workers_live, since it never holds an old generation at work. */
void rules_worker_on_demand(struct rules_worker *rw);

/* --- simulation (rules_sim.c; any thread) ------------------------------- */
/** A throwaway worker for running decide against a script that is not
 *  saved: its generation, never published, holds the campaign compiled
 *  from `src` under `path` ("rules/spring.lua") and a copy of the live
 *  generation's channel `channel`, so consent, quiet hours and the
 *  channel's contact policy apply as they would live.  The campaign counts
 *  as active whatever its stored status (a simulation asks what the script
 *  would do once live); its schedule, placements, caps (read from the
 *  store under the campaign's id) and hooks apply.  The worker has its own
 *  Lua state (the workers' memory and instruction budgets, rules/lib for
 *  require) and is not the calling thread's rules_worker_self().
 *  @return 0 with *out (free with rules_sim_stop) and *camp_id (the
 *  campaign's id, borrowed from the worker's generation), or a negative
 *  code with `e` filled: 422 invalid_script (field "script"; the loader's
 *  "path:line: message" strings as extra "errors"; 413 past the size
 *  limit), 422 unknown_channel or channel_not_listed (field "channel"),
 *  503 before the first load, 500 out of memory. */
struct reqerr;
int rules_sim_start(const char *path, const char *src, size_t len, const char *channel,
                    struct reqerr *e, struct rules_worker **out, const char **camp_id);
/** Free a simulation's worker, its Lua state and its generation. */
void rules_sim_stop(struct rules_worker *rw);
/** A throwaway worker (like rules_sim_start's) adopting generation `g`
 *  (its reference passes to the worker, also on failure), whose
 *  require() reads `rules_dir`/lib (NULL: the configured rules
 *  directory's): a replay's sandbox.  Free with rules_sim_stop.
 *  @return 0, ERR_NOMEM. */
int rules_sim_worker(struct rules_gen *g, const char *rules_dir, struct rules_worker **out);

/* --- internal: shared by the module's own files (rules*.c) only ---------- */

#define RULES_MAX_FILE_BYTES (1u << 20) /**< @internal largest rule or plugin file */

/** @internal strdup that aborts when out of memory (the loader's small strings). */
char *rules_xstrdup(const char *s);
/** @internal A deep copy of n strings (NULL for NULL); aborts when out of memory. */
char **rules_strv_dup(char *const *v, int n);
/** @internal Free what a parsed channel owns and zero it. */
void rules_channel_free(struct rules_channel *ch);
/** @internal seq of the newest published generation (an atomic read). */
uint64_t rules_gen_latest_seq(void);

/** @internal File lists and reading (rules.c), for the reloader and `promod check`. */
struct rules_flist {
    char **paths;
    enum rules_kind *kinds;
    int n, cap;
};
/** @internal Append (at most 20,000 files; the path is copied). */
void rules_flist_add(struct rules_flist *l, const char *path, enum rules_kind k);
void rules_flist_free(struct rules_flist *l);
/** @internal Sort paths by strcmp (n may be 0). */
void rules_sort_paths(char **paths, int n);
/** @internal Collect the *.lua files below `dir` (not hidden ones); `recurse`
 *  into subdirectories except `skip` (rules/lib). */
void rules_scan_dir(const char *dir, const char *skip, int recurse, enum rules_kind k,
                    struct rules_flist *out, int depth);
/** @internal Read a whole file (at most RULES_MAX_FILE_BYTES), NUL-terminated,
 *  malloc'd; NULL with *rc = -errno, ERR_TOOBIG or ERR_NOMEM. */
char *rules_read_file(const char *path, size_t *len, int *rc);

/** @internal The sandbox limits of config `cfg` (instruction budget, memory,
 *  hook and load time limits, per-file memory, log rate), luavm's defaults
 *  for NULL (rules_check.c).  `lib_dir` is borrowed by the result. */
struct luavm_opts rules_vm_opts(const struct config *cfg, const char *lib_dir);
/** @internal A throwaway sandbox for validation, with the instruction budget
 *  and load time limit a worker loads files with (rules_check.c).  NULL
 *  when out of memory. */
struct luavm *rules_scratch_vm(const char *lib_dir);
/** @internal Load and validate one source in `vm`; errors appended to
 *  `errors` as "path:line: message".  With `camp` (campaign) or `chan`
 *  (plugin) non-NULL the parsed form is returned there (the caller frees
 *  it, also on failure).  Stack-neutral.  @return 0 when valid. */
int rules_validate_in(struct luavm *vm, const char *path, enum rules_kind kind, const char *src,
                      size_t len, const char *const *chans, int nchans, json_t *errors,
                      struct rules_campaign *camp, struct rules_channel *chan);

/** @internal Where the fields of a source are written (rules_lines.c):
 *  built on the first look-up, freed with rules_lines_free. */
struct rules_loc;
struct rules_lines {
    const char *src;
    size_t len;
    struct rules_loc *locs;
    int nlocs, caplocs, built;
};
/** @internal Line of the field at `path` ("variants[2].weight"), or of its
 *  nearest written parent; 0 when none is written. */
int rules_lines_find(struct rules_lines *w, const char *path);
void rules_lines_free(struct rules_lines *w);
/** @internal rules_lines_find on a source, 1 when the field is not written.
 *  Model files (models_file.c) use it for their file:line messages too. */
int rules_line_of(const char *src, size_t len, const char *path);

#endif
