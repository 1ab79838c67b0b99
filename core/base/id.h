/*
 * id.h — the one rule for the ids the API and files name things by
 * (customers, campaigns, segments, experiments, channels, keys).
 *
 * An id is 1-128 bytes of [A-Za-z0-9_.:@-] and does not start with '.'
 * (so it can never name a hidden file or climb out of a directory).
 * Pure, thread-safe, no allocation.
 */
#ifndef PROMOD_ID_H
#define PROMOD_ID_H

/** @return 1 when `id` is a valid id (NULL is not). */
int id_valid(const char *id);

#endif
