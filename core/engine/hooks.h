/*
 * hooks.h — the hook layer: every Lua hook a campaign file or a channel
 * plugin may define, described once, called and judged in one place.
 *
 * Owns: the hook ids and names, who defines each (a campaign or a channel
 * plugin), their arity, how their results are judged (a small verdict the
 * caller acts on: a rule returning a string from `eligible` is an error,
 * not "truthy"), the per-owner cache of hook function refs, the
 * counting of failed calls (promod_hook_errors_total{campaign,hook,kind}
 * in /metrics) and the text a failure shows in explain and in send
 * records ("<hook>: file:line: message").
 *
 * Relies on luavm (the calls, with budgets and tracebacks).  Knows nothing
 * of campaigns beyond an id: the rules module validates files against
 * hooks_table and caches refs with hooks_refs_resolve(), decide and the
 * outbound sends push the arguments and call hooks_call().
 *
 * Adding a hook (a segment's `match(p)`, a model's feature function, ...):
 * one enum value and one row of hooks_table[] (below), with an owner (add
 * one to enum hooks_owner for a new kind of file) and one of the result
 * kinds (add a kind, and its case in hooks_call(), only for a new shape of
 * result).  Validation (the field must be a function, required
 * ones must be there, the field name is known), the ref cache, error
 * counting and explain text then follow from the table; the module that
 * runs the hook pushes its arguments and acts on the verdict.
 *
 * Defaults (no hook in the file) stay with the module that owns their
 * data — priority as score and weighted bucketing in decide, caps in
 * throttle: an absent hook is a LUA_NOREF slot, tested where the default
 * applies, so the decide path pays no indirect call for them.
 *
 * Threads: hooks_call on the thread that owns the Lua state; the counters
 * and the table from any thread; hooks_metrics_init at start-up.
 */
#ifndef PROMOD_HOOKS_H
#define PROMOD_HOOKS_H
#include <jansson.h>
#include <lua.h>
#include <math.h>
#include <stddef.h>
#include "lua/luavm.h"

/** Every hook.  The order is the order of validation messages. */
enum hooks_id {
    HOOKS_ELIGIBLE,   /**< eligible(p, ctx) -> true | false/nil [, "reason"] */
    HOOKS_SCORE,      /**< score(p, ctx) -> finite number */
    HOOKS_CONTENT,    /**< content(p, ctx, variants) -> a variant table or its id */
    HOOKS_THROTTLE,   /**< throttle(p, ctx, counts) -> true | false */
    HOOKS_RENDER,     /**< render(offer, p, ctx) -> message table | nil [, "reason"] */
    HOOKS_DELIVER,    /**< deliver(msg, net, settings, meta), a coroutine run by the outbox */
    HOOKS_MATCH,      /**< match(p) -> true | false/nil: a segment's Lua predicate */
    HOOKS_N
};

/** Bit of a hook in a `hooks` mask (struct rules_campaign/rules_channel). */
#define HOOKS_BIT(h) (1u << (h))

/** Who defines a hook: which kind of file holds it. */
enum hooks_owner { HOOKS_CAMPAIGN, HOOKS_CHANNEL, HOOKS_SEGMENT };

/** How a hook's results are judged. */
enum hooks_result {
    HOOKS_R_PASSFAIL, /**< true: PASS; false or nil: DENY, with the reason string that may
                           follow (hooks_reason); anything else breaks the contract */
    HOOKS_R_NUMBER,   /**< a finite number (num); a string, NaN or inf breaks the contract */
    HOOKS_R_CHOICE,   /**< a string, or a table whose `id` is one (text = the id, read raw:
                           a metatable's __index is not consulted); the caller checks the
                           id names one of its choices (hooks_refuse when not) */
    HOOKS_R_BOOLEAN,  /**< true: PASS; false: DENY; anything else breaks the contract */
    HOOKS_R_MESSAGE,  /**< a table: PASS (left on the stack for the caller to read); nil or
                           false: DENY, with the reason that may follow (hooks_reason);
                           anything else breaks the contract */
    HOOKS_R_CALLER    /**< judged by its caller (deliver: the outbox resumes it as a coroutine) */
};

struct hooks_desc {
    const char *name;         /**< field in the file's table; label in metrics and explain */
    enum hooks_owner owner;
    int nargs, nret;          /**< arguments pushed by the caller, results judged */
    enum hooks_result result;
    int required;             /**< a file of its owner must define it */
    const char *usage;        /**< how to write it (the message for a missing required hook) */
    const char *contract;     /**< explain text for results that break the contract: a printf
                                   format whose one %s, if any, is the first result's type */
};

/** The registry, indexed by enum hooks_id.  It is defined here, in the
 *  header, so that hooks_call() with a constant hook folds the hook's arity
 *  and result kind at compile time: a call through the layer costs what
 *  the hand-written call it replaced did (decide makes ~85 per request). */
static const struct hooks_desc hooks_table[HOOKS_N] = {
    [HOOKS_ELIGIBLE] = { "eligible", HOOKS_CAMPAIGN, 2, 2, HOOKS_R_PASSFAIL, 1,
                         "eligible = function(p, ctx) return true end",
                         "must return true or false (got a non-boolean)" },
    [HOOKS_SCORE] = { "score", HOOKS_CAMPAIGN, 2, 1, HOOKS_R_NUMBER, 0,
                      "score = function(p, ctx) return 50 end", "must return a finite number" },
    [HOOKS_CONTENT] = { "content", HOOKS_CAMPAIGN, 3, 1, HOOKS_R_CHOICE, 0,
                        "content = function(p, ctx, variants) return variants[1] end",
                        "must return one of the variants (or its id)" },
    [HOOKS_THROTTLE] = { "throttle", HOOKS_CAMPAIGN, 3, 1, HOOKS_R_BOOLEAN, 0,
                         "throttle = function(p, ctx, counts) return true end",
                         "must return true (allow) or false (hold back)" },
    [HOOKS_RENDER] = { "render", HOOKS_CHANNEL, 3, 2, HOOKS_R_MESSAGE, 0,
                       "render = function(offer, p, ctx) return { body = offer.content } end",
                       "must return a table or nil, got a %s" },
    [HOOKS_DELIVER] = { "deliver", HOOKS_CHANNEL, 4, 1, HOOKS_R_CALLER, 0,
                        "deliver = function(msg, net, settings, meta) return net.http_post(...) "
                        "end",
                        "" },
    [HOOKS_MATCH] = { "match", HOOKS_SEGMENT, 1, 2, HOOKS_R_PASSFAIL, 0,
                      "match = function(p) return (p.ltv or 0) > 500 end",
                      "must return true or false (got a non-boolean)" },
};

/** The hook `name` of `owner`, or -1 (e.g. for the unknown-field check). */
int hooks_find(enum hooks_owner owner, const char *name);

/* --- calling ------------------------------------------------------------ */

/** What a call came to. */
enum hooks_verdict {
    HOOKS_PASS = 0, /**< yes / a value: the hook's nret results are on the stack */
    HOOKS_DENY,     /**< no (eligible or render said no, throttle held back): the nret
                         results are on the stack; hooks_reason() reads the reason */
    HOOKS_FAILED    /**< raised, ran past a budget, or broke the contract: nothing left on
                         the stack; counted; res.msg says why */
};

struct hooks_res {
    double num;       /**< HOOKS_R_NUMBER: the value */
    const char *text; /**< HOOKS_R_CHOICE: the id, borrowed from the result on the stack
                           (valid until the caller pops it) */
    int rc;           /**< HOOKS_FAILED: ERR_LUA (raised or contract) or ERR_BUDGET */
    char msg[512];    /**< HOOKS_FAILED: "file:line: message", or the contract */
};

/** @internal The out-of-line halves of hooks_call (hooks.c): a call that
 *  raised or ran out of budget; results that break the contract (popped). */
enum hooks_verdict hooks_failed(enum hooks_id h, const char *who, int rc, struct hooks_res *res);
enum hooks_verdict hooks_broken(lua_State *L, enum hooks_id h, const char *who,
                                struct hooks_res *res);

/** Call hook `h` of `vm` (whose state is `L`): its function (registry ref
 *  `fn_ref`, pushed by the caller) is below its hooks_table[h].nargs
 *  arguments on the stack.  Runs it with luavm's budgets and judges the
 *  results by the hook's result kind.  On PASS and DENY the hook's nret
 *  results stay on the stack (the caller pops them:
 *  lua_pop(L, hooks_table[h].nret)); on FAILED nothing is left, res->msg
 *  holds the reason and the failure is counted for campaign `who` (kind
 *  "budget" for ERR_BUDGET, "error" otherwise).  The stack below the
 *  function is preserved on every path.  Inline, so that with a constant
 *  `h` only that hook's judge is compiled in. */
static inline enum hooks_verdict hooks_call(struct luavm *vm, lua_State *L, enum hooks_id h,
                                            int fn_ref, const char *who, struct hooks_res *res)
{
    const struct hooks_desc *d = &hooks_table[h];
    int rc = luavm_call_ref(vm, fn_ref, d->nargs, d->nret, res->msg, sizeof res->msg);
    if (rc)
        return hooks_failed(h, who, rc, res);
    int t;
    switch (d->result) {
    case HOOKS_R_PASSFAIL: /* (ok [, reason]) */
        t = lua_type(L, -2);
        if (t == LUA_TNIL)
            return HOOKS_DENY;
        if (t != LUA_TBOOLEAN)
            return hooks_broken(L, h, who, res);
        return lua_toboolean(L, -2) ? HOOKS_PASS : HOOKS_DENY;
    case HOOKS_R_NUMBER:
        if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(res->num = lua_tonumber(L, -1)))
            return hooks_broken(L, h, who, res);
        return HOOKS_PASS;
    case HOOKS_R_CHOICE: /* "id", or a table with one: the id replaces the table */
        if (lua_istable(L, -1)) {
            lua_pushliteral(L, "id");
            lua_rawget(L, -2); /* raw: no script code (an __index) runs outside the call */
            lua_replace(L, -2);
            res->text = lua_tostring(L, -1); /* a number id becomes its text in place */
        } else {
            res->text = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        }
        return res->text ? HOOKS_PASS : hooks_broken(L, h, who, res);
    case HOOKS_R_BOOLEAN:
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            return hooks_broken(L, h, who, res);
        return lua_toboolean(L, -1) ? HOOKS_PASS : HOOKS_DENY;
    case HOOKS_R_MESSAGE: /* (msg) or (nil | false [, reason]) */
        t = lua_type(L, -2);
        if (t == LUA_TTABLE)
            return HOOKS_PASS;
        if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, -2)))
            return HOOKS_DENY;
        return hooks_broken(L, h, who, res);
    case HOOKS_R_CALLER:
        break;
    }
    return HOOKS_PASS;
}

/** After a DENY of a hook whose result kind gives a reason (PASSFAIL,
 *  MESSAGE): the reason string the hook returned after its "no", or NULL.
 *  Borrowed from the stack: valid until the caller pops the results.
 *  (Separate from hooks_call so that a decide without explain does not
 *  pay for reading it.) */
static inline const char *hooks_reason(lua_State *L)
{
    return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

/** The caller found the results of a PASS unusable (a content id naming
 *  no variant, a render message JSON cannot carry): count it for `who` as
 *  an error and set res->msg to `msg` (NULL = the hook's contract).  The
 *  caller has popped the results.  @return HOOKS_FAILED. */
enum hooks_verdict hooks_refuse(enum hooks_id h, const char *who, struct hooks_res *res,
                                const char *msg);

/* --- refs ------------------------------------------------------------- */

/** Fill refs[0 .. HOOKS_N-1] from the table with registry ref `table_ref`
 *  (a loaded campaign or plugin file; read raw, so a metatable a hook set on
 *  it since runs no code here): a registry ref of each of `owner`'s
 *  hooks the table defines as a function, LUA_NOREF for the others (and
 *  for every slot when `table_ref` is LUA_NOREF / LUA_REFNIL).  The refs
 *  belong to the caller: hooks_refs_release() frees them. */
void hooks_refs_resolve(struct lua_State *L, enum hooks_owner owner, int table_ref, int *refs);

/** Release refs[0 .. HOOKS_N-1] and set them to LUA_NOREF. */
void hooks_refs_release(struct lua_State *L, int *refs);

/* --- explain and metrics --------------------------------------------------- */

/** "<hook>: <msg>" into out (always NUL-terminated), cut at a UTF-8
 *  character boundary when it does not fit.  @return out. */
char *hooks_text(char *out, size_t len, enum hooks_id h, const char *msg);

/** Set explain entry `xp`'s "error" to hooks_text() (a placeholder when
 *  `msg` is not UTF-8).  `xp` may be NULL (no explain asked). */
void hooks_explain(json_t *xp, enum hooks_id h, const char *msg);

/** Register promod_hook_errors_total with /metrics (start-up, once). */
void hooks_metrics_init(void);

/** Stop (1) or resume (0) counting failures on the calling thread: a
 *  simulation (decide_run_worker on a rules_sim worker) runs a script that
 *  is not live, whose failures must not show as the campaign's. */
void hooks_count_pause(int paused);

/** Count the calling thread's failures into `to` instead (one value per
 *  campaign: failed calls of any hook), until called with NULL: a replay
 *  (engine/replay.h) reports the errors of the rule set it runs. */
struct counters;
void hooks_count_divert(struct counters *to);

#endif
