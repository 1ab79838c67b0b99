/*
 * luavm_crypto.c — promo.hmac_sha256 for scripts and plugins (OpenSSL).
 *
 * Plugins sign outbound requests with it (the webhook plugin's
 * X-Promod-Signature header); the key comes from the config through
 * deliver()'s settings argument, never from a script.
 */
#include "lua/luavm.h"
#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/***
 * promo.hmac_sha256(key, message) -> hex string
 * HMAC-SHA256 of `message` under `key` (both strings, any bytes), as 64
 * lowercase hex digits.
 *   promo.hmac_sha256("secret", body)  --> "b613679a0814d9ec..."
 * Raises on a non-string argument.
 */
static int l_promo_hmac_sha256(lua_State *L)
{
    size_t kl, ml;
    const char *k = luaL_checklstring(L, 1, &kl);
    const char *m = luaL_checklstring(L, 2, &ml);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), k, (int)kl, (const unsigned char *)m, ml, mac, &n))
        return luaL_error(L, "hmac_sha256 failed");
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)n);
    return 1;
}

void luavm_open_crypto(lua_State *L)
{
    lua_pushcfunction(L, l_promo_hmac_sha256);
    lua_setfield(L, -2, "hmac_sha256");
}
