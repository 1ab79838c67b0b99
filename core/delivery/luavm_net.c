/*
 * luavm_net.c — the `net` library for channel plugins, and the coroutine
 * runner that lets deliver() wait for HTTP without blocking the thread.
 *
 * deliver(msg, net, settings, meta) runs in a coroutine of the delivery
 * thread's Lua state.  net.http_post() validates its arguments, copies the
 * request into the task and yields; the runner (step) then starts the
 * request on the thread's event loop, and the completion callback resumes
 * the coroutine with (status, body) or (nil, reason).  Starting the
 * request only after the yield succeeded matters: a yield inside the
 * sandbox's pcall raises ("attempt to yield across C-call boundary"), and
 * nothing must be in flight then.
 *
 * Budgets: every resume gets fresh instruction and memory budgets
 * (luavm_resume); the whole task has a wall-clock limit, so a deliver that
 * keeps waiting never pins a delivery slot.
 */
#include "base/err.h"
#include "base/log.h"
#include "lua/luavm.h"
#include "delivery/net.h"
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 32
#define MAX_BODY (4u << 20)

struct spec {              /* a request asked for by the script, not started yet */
    char method[8];
    char *url;
    char *body;
    size_t len;
    char **hdrs;           /* name, value, ..., NULL */
};

struct luavm_net_task {
    struct luavm *vm;
    struct net *net;
    lua_State *co;
    int co_ref;
    struct net_req *req;
    struct event *timer;
    luavm_net_done_fn done;
    void *ud;
    int nreq, max_requests, request_timeout_ms, timeout_ms;
    char *idem_key;
    struct spec spec;
    int has_spec;
};

static __thread struct luavm_net_task *tl_task;
static const char NET_MT_KEY = 'n';

static void spec_clear(struct spec *s)
{
    free(s->url);
    free(s->body);
    if (s->hdrs)
        for (int i = 0; s->hdrs[i]; i++)
            free(s->hdrs[i]);
    free(s->hdrs);
    memset(s, 0, sizeof *s);
}

static void task_free(struct luavm_net_task *t)
{
    if (t->req)
        net_cancel(t->req);
    if (t->timer)
        event_free(t->timer);
    lua_State *L = luavm_state(t->vm);
    luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
    spec_clear(&t->spec);
    free(t->idem_key);
    free(t);
}

static int step(struct luavm_net_task *t, int nargs);

static void on_net_done(void *ud, const struct net_result *res)
{
    struct luavm_net_task *t = ud;
    t->req = NULL;
    lua_State *co = t->co;
    lua_settop(co, 0);
    if (res->status > 0) {
        lua_pushinteger(co, res->status);
        lua_pushlstring(co, res->body, res->len);
    } else {
        lua_pushnil(co);
        lua_pushstring(co, res->error ? res->error : "request failed");
    }
    step(t, 2);
}

static void on_task_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct luavm_net_task *t = arg;
    char err[96];
    snprintf(err, sizeof err, "deliver did not finish within %d ms", t->timeout_ms);
    if (t->req) {
        net_cancel(t->req);
        t->req = NULL;
    }
    t->done(t->ud, ERR_BUSY, t->co, 0, err);
    task_free(t);
}

/* Resume until the coroutine waits on the network (returns 1, the task
 * lives on), returns or fails (done is called, the task freed, returns 0). */
static int step(struct luavm_net_task *t, int nargs)
{
    for (;;) {
        char err[512];
        int nres = 0;
        tl_task = t;
        int rc = luavm_resume(t->vm, t->co, nargs, &nres, err, sizeof err);
        tl_task = NULL;
        if (rc == LUAVM_YIELDED && t->has_spec) {
            t->has_spec = 0;
            lua_settop(t->co, 0);
            int nrc;
            const char *const *h = (const char *const *)t->spec.hdrs;
            t->req = net_request(t->net, t->spec.method, t->spec.url, h, t->spec.body,
                                 t->spec.len, t->request_timeout_ms, on_net_done, t, &nrc);
            spec_clear(&t->spec);
            if (t->req)
                return 1; /* on_net_done resumes */
            lua_pushnil(t->co);
            lua_pushstring(t->co, nrc == ERR_INVAL ? "invalid request (url or header)"
                                                   : "out of memory");
            nargs = 2;
            continue;
        }
        if (rc == LUAVM_YIELDED) {
            rc = ERR_LUA;
            snprintf(err, sizeof err, "deliver yielded outside a net call");
        }
        if (rc == 0)
            t->done(t->ud, 0, t->co, nres, NULL);
        else
            t->done(t->ud, rc, t->co, 0, err);
        task_free(t);
        return 0;
    }
}

int luavm_net_run(struct luavm *vm, struct net *net, int nargs, const struct luavm_net_opts *o,
                  luavm_net_done_fn done, void *ud, struct luavm_net_task **out)
{
    *out = NULL;
    lua_State *L = luavm_state(vm);
    struct luavm_net_task *t = calloc(1, sizeof *t);
    if (!t) {
        lua_pop(L, nargs + 1);
        return ERR_NOMEM;
    }
    t->vm = vm;
    t->net = net;
    t->done = done;
    t->ud = ud;
    t->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 30000;
    t->request_timeout_ms = o && o->request_timeout_ms > 0 ? o->request_timeout_ms : 10000;
    t->max_requests = o && o->max_requests > 0 ? o->max_requests : 8;
    t->idem_key = o && o->idem_key ? strdup(o->idem_key) : NULL;
    t->timer = evtimer_new(net_base(net), on_task_timeout, t);
    if (!t->timer || !lua_checkstack(L, 2)) {
        if (t->timer)
            event_free(t->timer);
        free(t->idem_key);
        free(t);
        lua_pop(L, nargs + 1);
        return ERR_NOMEM;
    }
    t->co = lua_newthread(L);
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, t->co, nargs + 1);
    struct timeval tv = { t->timeout_ms / 1000, (t->timeout_ms % 1000) * 1000 };
    evtimer_add(t->timer, &tv);
    if (step(t, nargs))
        *out = t;
    return 0;
}

void luavm_net_cancel(struct luavm_net_task *t)
{
    if (t)
        task_free(t);
}

/* ---------------------------------------------------------------------- */
/* the net library                                                        */

/* Validate and copy a request into the running task, then yield. */
static int net_call(lua_State *L, const char *method, int iurl, int ibody, int ihdr)
{
    struct luavm_net_task *t = tl_task;
    if (!t || t->co != L)
        return luaL_error(L, "net.%s is only available inside deliver()",
                          strcmp(method, "POST") ? "http_request" : "http_post");
    size_t ulen;
    const char *url = luaL_checklstring(L, iurl, &ulen);
    int btype = lua_type(L, ibody);
    if (btype != LUA_TNONE && btype != LUA_TNIL && btype != LUA_TSTRING && btype != LUA_TTABLE)
        return luaL_argerror(L, ibody, "body must be a string or a table");
    int htype = lua_type(L, ihdr);
    if (htype != LUA_TNONE && htype != LUA_TNIL && htype != LUA_TTABLE)
        return luaL_argerror(L, ihdr, "headers must be a table of name = value");
    int nh = 0, has_idem = 0, has_ct = 0;
    if (htype == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, ihdr)) {
            if (lua_type(L, -2) != LUA_TSTRING ||
                (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                return luaL_argerror(L, ihdr, "headers must map names (strings) to strings");
            const char *k = lua_tostring(L, -2);
            has_idem |= !strcasecmp(k, "Idempotency-Key");
            has_ct |= !strcasecmp(k, "Content-Type");
            lua_pop(L, 1);
            if (++nh > MAX_HEADERS)
                return luaL_argerror(L, ihdr, "too many headers (max 32)");
        }
    }
    if (t->nreq >= t->max_requests)
        return luaL_error(L, "too many net requests in one deliver (max %d)", t->max_requests);
    if (ulen > 4000 || (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))) {
        lua_pushnil(L);
        lua_pushstring(L, "invalid url: expected http:// or https://");
        return 2;
    }
    /* body → bytes (a table becomes JSON) */
    char *body = NULL;
    size_t blen = 0;
    int json_body = 0;
    if (btype == LUA_TSTRING) {
        const char *b = lua_tolstring(L, ibody, &blen);
        if (blen > MAX_BODY)
            return luaL_argerror(L, ibody, "body larger than 4 MiB");
        body = malloc(blen + 1);
        if (!body)
            return luaL_error(L, "out of memory");
        memcpy(body, b, blen);
    } else if (btype == LUA_TTABLE) {
        int jerr;
        json_t *j = luavm_to_json(L, ibody, &jerr);
        if (!j)
            return luaL_argerror(L, ibody, "body table cannot be encoded as JSON");
        body = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
        if (!body)
            return luaL_error(L, "out of memory");
        blen = strlen(body);
        if (blen > MAX_BODY) {
            free(body);
            return luaL_argerror(L, ibody, "body larger than 4 MiB");
        }
        json_body = 1;
    }
    /* from here on nothing raises before the yield: the task owns the copies */
    spec_clear(&t->spec);
    t->has_spec = 0;
    struct spec *s = &t->spec;
    s->body = body;
    s->len = blen;
    snprintf(s->method, sizeof s->method, "%s", method);
    s->url = strdup(url);
    int cap = 2 * (nh + 2) + 1, k = 0;
    s->hdrs = calloc((size_t)cap, sizeof *s->hdrs);
    if (!s->url || !s->hdrs) {
        spec_clear(s);
        lua_pushnil(L);
        lua_pushstring(L, "out of memory");
        return 2;
    }
    if (htype == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, ihdr)) {
            s->hdrs[k++] = strdup(lua_tostring(L, -2));
            s->hdrs[k++] = strdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    if (json_body && !has_ct) {
        s->hdrs[k++] = strdup("Content-Type");
        s->hdrs[k++] = strdup("application/json");
    }
    if (t->idem_key && !has_idem) {
        s->hdrs[k++] = strdup("Idempotency-Key");
        s->hdrs[k++] = strdup(t->idem_key);
    }
    for (int i = 0; i < k; i++)
        if (!s->hdrs[i]) {
            spec_clear(s);
            lua_pushnil(L);
            lua_pushstring(L, "out of memory");
            return 2;
        }
    t->has_spec = 1;
    t->nreq++;
    return lua_yield(L, 0);
}

/***
 * net.http_post(url, body, headers) -> status, body | nil, reason
 * POST `body` (a string, or a table sent as JSON) to `url` (http:// or
 * https://) with the extra `headers` ({ ["X-Api-Key"] = settings.api_key }).
 * Waits without blocking the server; the Idempotency-Key header carries the
 * message's key unless the plugin sets it.  Failures are returned, not
 * raised: nil, "timeout" | "connection refused" | "connection failed" | ...
 *   local status, body = net.http_post(settings.endpoint, { to = msg.to }, {})
 */
static int l_net_http_post(lua_State *L) { return net_call(L, "POST", 1, 2, 3); }

/***
 * net.http_request(method, url, body, headers) -> status, body | nil, reason
 * Same as http_post with another method: "GET", "POST", "PUT", "PATCH",
 * "DELETE".
 */
static int l_net_http_request(lua_State *L)
{
    const char *m = luaL_checkstring(L, 1);
    static const char *ok[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(m, ok[i]))
            return net_call(L, ok[i], 2, 3, 4);
    return luaL_argerror(L, 1, "method must be GET, POST, PUT, PATCH or DELETE");
}

/***
 * net.json(value) -> string
 * Encode a table (or scalar) as compact JSON, e.g. to sign the exact bytes
 * that net.http_post sends:
 *   local body = net.json(payload)
 *   local sig = promo.hmac_sha256(settings.secret, body)
 * Raises for values JSON cannot carry (functions, NaN, cycles).
 */
static int push_cstr(lua_State *L)
{
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

static int l_net_json(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushcfunction(L, push_cstr); /* allocate before the malloc below */
    int jerr;
    json_t *j = luavm_to_json(L, 1, &jerr);
    if (!j)
        return luaL_argerror(L, 1, "value cannot be encoded as JSON");
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!s)
        return luaL_error(L, "out of memory");
    lua_pushlightuserdata(L, s);
    int st = lua_pcall(L, 1, 1, 0); /* a memory error must not leak s */
    free(s);
    if (st)
        return lua_error(L);
    return 1;
}

static int net_readonly(lua_State *L) { return luaL_error(L, "net is read-only"); }

void luavm_net_push_lib(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&NET_MT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 3); /* metatable */
        lua_createtable(L, 0, 2); /* the functions */
        lua_pushcfunction(L, l_net_http_post);
        lua_setfield(L, -2, "http_post");
        lua_pushcfunction(L, l_net_http_request);
        lua_setfield(L, -2, "http_request");
        lua_pushcfunction(L, l_net_json);
        lua_setfield(L, -2, "json");
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, net_readonly);
        lua_setfield(L, -2, "__newindex");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pushlightuserdata(L, (void *)&NET_MT_KEY);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_newtable(L);
    lua_insert(L, -2);
    lua_setmetatable(L, -2);
}
