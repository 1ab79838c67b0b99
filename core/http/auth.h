/*
 * auth.h — API keys at request time: which key a bearer token is, and
 * when each key was last used.
 *
 * The keys themselves (SHA-256 digests, roles, ids) are the config's
 * (base/config.h, config_find_key).  This module keeps one last-used
 * timestamp per key, in memory (lost at restart), updated by every worker
 * with relaxed atomics at most once a second per key, and shows it as the
 * gauge promod_api_key_last_used_seconds{id,role} and through
 * GET /api/v1/admin/keys.  Secrets and digests are never shown.
 *
 * Threads: auth_init at start-up (before the workers); the rest from any
 * thread.
 */
#ifndef PROMOD_AUTH_H
#define PROMOD_AUTH_H
#include <jansson.h>
#include "base/config.h"

/** Start tracking `cfg`'s keys (borrowed; outlives the server) and
 *  register the metrics collector (once per process). */
void auth_init(const struct config *cfg);

/** The key a bearer token belongs to, or NULL; a match is recorded as the
 *  key's last use. */
const struct config_key *auth_check(const struct config *cfg, const char *token);

/** [{"id", "role", "source", "last_used"}] for every key, in config order
 *  ("last_used": unix seconds, or null when not used since start). */
json_t *auth_keys_json(const struct config *cfg);

#endif
