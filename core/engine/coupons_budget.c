/* coupons_budget.c — a campaign file's `budget` field into struct
 * coupons_budget (see coupons_budget_parse in coupons.h). */
#include "engine/coupons.h"
#include <lua.h>
#include <stdio.h>
#include <string.h>

static int fail(char *field, size_t fl, const char *f, char *msg, size_t ml, const char *m)
{
    snprintf(field, fl, "%s", f);
    snprintf(msg, ml, "%s", m);
    return -1;
}

int coupons_budget_parse(struct lua_State *L, int idx, struct coupons_budget *out, char *field,
                         size_t fl, char *msg, size_t ml)
{
    memset(out, 0, sizeof *out);
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    if (!lua_istable(L, idx))
        return fail(field, fl, "budget", msg, ml,
                    "budget must be a table { amount = 50000, currency = \"EUR\", per = \"campaign\" | \"1d\", pacing = \"even\" }");
    static const char *known[] = { "amount", "currency", "per", "pacing", NULL };
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int ok = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        for (int i = 0; k && known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!ok) {
            char m[160];
            snprintf(m, sizeof m, "unknown field budget.%.64s (amount, currency, per, pacing)",
                     k ? k : "?");
            lua_pop(L, 2);
            return fail(field, fl, "budget", msg, ml, m);
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "amount");
    int isnum = lua_type(L, -1) == LUA_TNUMBER;
    double a = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isnum || coupons_money_parse(a, &out->amount_m))
        return fail(field, fl, "budget.amount", msg, ml,
                    "budget.amount must be a positive number with at most 3 decimals");
    lua_getfield(L, idx, "currency");
    const char *cur = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int curok = coupons_currency_valid(cur);
    if (curok)
        memcpy(out->currency, cur, 4);
    lua_pop(L, 1);
    if (!curok)
        return fail(field, fl, "budget.currency", msg, ml,
                    "budget.currency must be an ISO 4217 code in capitals, such as \"EUR\"");
    lua_getfield(L, idx, "per");
    const char *per = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int isnil = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (isnil || (per && !strcmp(per, "campaign")))
        out->per_day = 0;
    else if (per && !strcmp(per, "1d"))
        out->per_day = 1;
    else
        return fail(field, fl, "budget.per", msg, ml,
                    "budget.per must be \"campaign\" (the whole run) or \"1d\" (each UTC day)");
    lua_getfield(L, idx, "pacing");
    const char *pacing = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    isnil = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (isnil || (pacing && !strcmp(pacing, "none")))
        out->pacing = 0;
    else if (pacing && !strcmp(pacing, "even") && out->per_day)
        out->pacing = 1;
    else
        return fail(field, fl, "budget.pacing", msg, ml,
                    "budget.pacing must be \"even\" (with per = \"1d\": the day's budget is "
                    "released hour by hour) or \"none\"");
    return 0;
}
