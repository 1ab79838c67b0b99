/*
 * audit.h — the append-only audit log: who changed what, when, before and
 * after.
 *
 * Owns STORE_AUDIT: key = sequence number (big-endian 8 bytes, from the
 * store sequence "audit"), value = msgpack map
 *   {"seq", "ts" (unix seconds, clock_now()), "at" (ISO-8601 UTC),
 *    "actor", "action", "object", "before", "after"}.
 * Entries are only ever added, with one exception: erasing a customer
 * (DELETE /api/v1/profiles/{id}) pseudonymises the entries that name the
 * customer (audit_append_customer) — their object becomes
 * AUDIT_ERASED_OBJECT, everything else stays.  Because the sequence is
 * taken inside the caller's write transaction an aborted change leaves no
 * entry and no gap.
 *
 * Also owns STORE_CUSTIDX "<customer>\0a" seq(be64) → "": the entries that
 * name a customer, so that export and erasure find them without scanning
 * the whole log.
 *
 * Actions are "<noun>.<verb>" ("campaign.launch", "version.approve",
 * "profile.erase", "rules.reload"); objects are "<kind>:<id>"
 * ("campaign:spring-sale", "profile:u1") or a bare kind ("rules").
 * `before`/`after` are small JSON summaries chosen by the caller; they must
 * not carry personal data (a profile erasure records the count of records
 * removed, never the profile).
 *
 * Threads: any.  audit_append() runs inside the caller's write txn (so the
 * entry commits or aborts with the change it describes); audit_log() and
 * audit_query() own their transactions.
 */
#ifndef PROMOD_AUDIT_H
#define PROMOD_AUDIT_H
#include <jansson.h>
#include <stdint.h>
#include "base/reqerr.h"
#include "store/store.h"

struct config_key;

/** Largest encoded entry; bigger before/after are replaced by
 *  {"truncated": true, "bytes": n}. */
#define AUDIT_MAX_ENTRY (64 * 1024)
/** Most entries one audit_query() returns. */
#define AUDIT_MAX_LIMIT 1000

/** Append one entry inside the write txn `t`.  `actor` NULL is recorded
 *  as "anonymous"; `object`, `before`, `after` may be NULL (stored as null).
 *  The JSON values are borrowed.  @return 0, ERR_INVAL (no action),
 *  ERR_NOMEM, ERR_FULL, ERR_STORE. */
int audit_append(struct store_txn *t, const char *actor, const char *action, const char *object,
                 const json_t *before, const json_t *after);

/** audit_append() for an entry about one customer: object
 *  "profile:<customer>", and the customer's index entry (see above) so
 *  that audit_customer_json() and audit_erase_customer() find it.  Same
 *  returns. */
int audit_append_customer(struct store_txn *t, const char *actor, const char *action,
                          const char *customer, const json_t *before, const json_t *after);

/** The object an erased customer's entries are left with (not a valid
 *  id, so it never names a real customer). */
#define AUDIT_ERASED_OBJECT "profile:.erased"

/** The entries naming `customer` (written by audit_append_customer), oldest
 *  first, as a new array (empty when none; NULL on a store error).  Read
 *  or write txn. */
json_t *audit_customer_json(struct store_txn *t, const char *customer);

/** Pseudonymise the entries naming `customer` (object becomes
 *  AUDIT_ERASED_OBJECT) and drop their index entries, inside the erasure's
 *  write txn.  @return the number of entries rewritten, or an error. */
long audit_erase_customer(struct store_txn *t, const char *customer);

/** audit_append() in its own durable write txn, for callers that have no
 *  txn of their own (an HTTP handler after a service call).  Same returns. */
int audit_log(struct store *s, const char *actor, const char *action, const char *object,
              const json_t *before, const json_t *after);

/** Who is acting: the API key's id when keys are configured (`key` is the
 *  request's authenticated key).  With no keys configured (loopback-only
 *  local use) the `X-Actor` header value when it is a valid id
 *  (id_valid), else "anonymous".  When keys are configured X-Actor is
 *  ignored.  Returns a borrowed string (the key's or the header's), or NULL
 *  when X-Actor is present but not a valid id (the caller answers 400). */
const char *audit_actor(const struct config_key *key, const char *x_actor);

struct audit_query {
    const char *actor;     /**< exact match, or NULL */
    const char *action;    /**< exact, or a prefix when it ends in '*' ("campaign.*") */
    const char *object;    /**< exact, or a prefix when it ends in '*' */
    int64_t since, until;  /**< inclusive bounds on "ts"; 0 = open */
    long limit;            /**< 1..AUDIT_MAX_LIMIT */
    uint64_t cursor;       /**< continue after this seq (0 = from the newest/oldest) */
    int ascending;         /**< 1 = oldest first, 0 = newest first */
};

/** Entries matching `q` as a new object {"entries": [...], "next_cursor":
 *  "<seq>" or null}.  At most `q->limit` entries; a query that examines
 *  AUDIT_SCAN_BUDGET entries without filling the page stops there and
 *  returns a cursor to continue from.  NULL with `e` filled when the store
 *  cannot be read (reqerr_from_code of ERR_STORE, ERR_NOMEM: 500 internal). */
#define AUDIT_SCAN_BUDGET 100000
json_t *audit_query(struct store *s, const struct audit_query *q, struct reqerr *e);

#endif
