/* models_seg.c — segment memberships as model features.
 *
 * A feature "segment.<id>" is 1 when the segment's definition (its
 * GrowthBook condition or Lua `match`, and through `$segment` the
 * definitions of the segments it references, recursively) holds for the
 * profile p the features are computed from, 0 when it does not, missing
 * when no segment <id> is loaded.  It is not read from the membership
 * index: the index holds today's memberships, while a training example
 * needs the membership its customer had at the example's time.  So p (the
 * profile attributes and p.stats, which training replays as of each
 * example) is turned back into the view segments evaluate
 * (segments_view), with `now` = the example's time in training and the
 * decide's time when serving, and segments_eval_ids evaluates the
 * definitions on it.  Training and serving go through this same function
 * with the same kind of p, so the two cannot drift apart.
 *
 * p is encoded to msgpack with its top-level "id" (the customer), "stats"
 * (the stats map) and "segments" (the index's list, which a decide puts in
 * p and a training does not have) taken apart, so that a condition sees
 * exactly what the index builder would see for the same profile and stats.
 * The buffers are per thread and reused. */
#include "engine/models.h"
#include "engine/segments.h"
#include "base/buf.h"
#include "base/err.h"
#include "codec/mpread.h"
#include "lua/luavm.h"
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ENC_DEPTH 32

struct segbufs {
    struct buf prof, stats;
};

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void bufs_free(void *p)
{
    struct segbufs *b = p;
    if (!b)
        return;
    buf_free(&b->prof);
    buf_free(&b->stats);
    free(b);
}

static void key_init(void)
{
    pthread_key_create(&g_key, bufs_free);
}

static struct segbufs *bufs(void)
{
    pthread_once(&g_once, key_init);
    struct segbufs *b = pthread_getspecific(g_key);
    if (!b && (b = calloc(1, sizeof *b)))
        pthread_setspecific(g_key, b);
    return b;
}

static int put_hdr32(struct buf *out, unsigned char tag, uint32_t n)
{
    unsigned char h[5] = { tag, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                           (unsigned char)(n >> 8), (unsigned char)n };
    return buf_add(out, h, 5);
}

static void patch32(struct buf *out, size_t at, uint32_t n)
{
    unsigned char *h = (unsigned char *)out->p + at + 1;
    h[0] = (unsigned char)(n >> 24);
    h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8);
    h[3] = (unsigned char)n;
}

static int encodable(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    return t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TTABLE;
}

static int enc(lua_State *L, int idx, struct buf *out, int depth);

/* A table: an array when its keys are exactly 1..n (n > 0), else a map
 * with string keys (number keys written as their text, as luavm_to_json
 * does); values that are not data (functions...) are left out. */
static int enc_table(lua_State *L, int idx, struct buf *out, int depth)
{
    size_t n = lua_objlen(L, idx), total = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        total++;
        lua_pop(L, 1);
    }
    int rc = 0;
    if (n > 0 && total == n) {
        if (put_hdr32(out, 0xdd, (uint32_t)n))
            return ERR_NOMEM;
        for (size_t i = 1; i <= n && !rc; i++) {
            lua_rawgeti(L, idx, (int)i);
            rc = enc(L, lua_gettop(L), out, depth + 1);
            lua_pop(L, 1);
        }
        return rc;
    }
    size_t hdr = out->len;
    if (put_hdr32(out, 0xdf, 0))
        return ERR_NOMEM;
    uint32_t cnt = 0;
    lua_pushnil(L);
    while (!rc && lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if ((kt == LUA_TSTRING || kt == LUA_TNUMBER) && encodable(L, -1)) {
            lua_pushvalue(L, -2); /* tolstring on a copy: lua_next needs the key as it is */
            size_t kl;
            const char *k = lua_tolstring(L, -1, &kl);
            rc = mpread_put_str(out, k, kl);
            lua_pop(L, 1);
            if (!rc)
                rc = enc(L, lua_gettop(L), out, depth + 1);
            cnt++;
        }
        lua_pop(L, 1);
    }
    if (rc) {
        lua_pop(L, 1); /* the key lua_next left */
        return rc;
    }
    patch32(out, hdr, cnt);
    return 0;
}

static int enc(lua_State *L, int idx, struct buf *out, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: {
        unsigned char c = lua_toboolean(L, idx) ? 0xc3 : 0xc2;
        return buf_add(out, &c, 1);
    }
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (d == floor(d) && fabs(d) < 9.0e15)
            return mpread_put_int(out, (int64_t)d);
        unsigned char b[9] = { 0xcb };
        uint64_t u;
        memcpy(&u, &d, 8);
        for (int i = 0; i < 8; i++)
            b[1 + i] = (unsigned char)(u >> (56 - 8 * i));
        return buf_add(out, b, 9);
    }
    case LUA_TSTRING: {
        size_t l;
        const char *s = lua_tolstring(L, idx, &l);
        return mpread_put_str(out, s, l);
    }
    case LUA_TTABLE:
        if (depth < ENC_DEPTH)
            return enc_table(L, idx, out, depth);
        __attribute__((fallthrough)); /* deeper than any condition reads: nil */
    default: {
        unsigned char c = 0xc0;
        return buf_add(out, &c, 1);
    }
    }
}

/* p's attributes (without id, stats, segments) as a msgpack map. */
static int enc_profile(lua_State *L, int t, struct buf *out)
{
    size_t hdr = out->len;
    if (put_hdr32(out, 0xdf, 0))
        return ERR_NOMEM;
    uint32_t cnt = 0;
    int rc = 0;
    lua_pushnil(L);
    while (!rc && lua_next(L, t)) {
        if (lua_type(L, -2) == LUA_TSTRING && encodable(L, -1)) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            if (strcmp(k, "id") && strcmp(k, "stats") && strcmp(k, "segments")) {
                rc = mpread_put_str(out, k, kl);
                if (!rc)
                    rc = enc(L, lua_gettop(L), out, 1);
                cnt++;
            }
        }
        lua_pop(L, 1);
    }
    if (rc) {
        lua_pop(L, 1);
        return rc;
    }
    patch32(out, hdr, cnt);
    return 0;
}

int models_segment_features(lua_State *L, const struct models_def *d, int p_idx, int64_t now,
                            float *x)
{
    const char *ids[MODELS_MAX_FEATURES];
    int cols[MODELS_MAX_FEATURES], n = 0;
    for (int i = 0; i < d->nfeats; i++)
        if (d->feats[i].src == MODELS_SRC_SEGMENT) {
            ids[n] = d->feats[i].path[0];
            cols[n++] = d->feats[i].col;
            x[d->feats[i].col] = NAN;
        }
    if (!n)
        return 0;
    struct segbufs *b = bufs();
    if (!b)
        return ERR_NOMEM;
    int top = lua_gettop(L);
    if (p_idx < 0)
        p_idx = top + p_idx + 1;
    luavm_push_original(L, p_idx);
    int t = lua_gettop(L);
    if (!lua_istable(L, t)) {
        lua_settop(L, top);
        return 0;
    }
    b->prof.len = b->stats.len = 0;
    int rc = enc_profile(L, t, &b->prof);
    lua_getfield(L, t, "stats");
    int has_stats = lua_istable(L, -1);
    if (!rc && has_stats)
        rc = enc_table(L, lua_gettop(L), &b->stats, 1);
    lua_getfield(L, t, "id");
    size_t idl = 0;
    const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &idl) : "";
    int member[MODELS_MAX_FEATURES];
    if (!rc)
        rc = segments_eval_ids(id, idl, b->prof.p, b->prof.len, has_stats ? b->stats.p : NULL,
                               b->stats.len, now, ids, n, member);
    lua_settop(L, top);
    if (rc)
        return rc;
    for (int k = 0; k < n; k++)
        x[cols[k]] = member[k] < 0 ? NAN : (float)member[k];
    return 0;
}
