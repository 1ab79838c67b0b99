/*
 * api.h — the HTTP resources.  One api_<resource>.c per resource; each
 * exposes api_<resource>_register() which adds its routes.  Handlers parse
 * and validate, call one service module, render, and reply exactly once;
 * they never open LMDB or touch Lua directly.
 */
#ifndef PROMOD_API_H
#define PROMOD_API_H
#include "http.h"

void api_ops_register(void);
void api_profiles_register(void);
void api_decide_register(void);
void api_rules_register(void);

#endif
