/*
 * rules_internal.h — private to core/engine/rules*.c: the validation
 * context of one campaign file and the checkers rules_check.c shares with
 * rules_audience.c.
 */
#ifndef PROMOD_RULES_INTERNAL_H
#define PROMOD_RULES_INTERNAL_H
#ifndef PROMOD_RULES_H
#error "include engine/rules.h before engine/rules_internal.h"
#endif
#include <jansson.h>
#include <stddef.h>

struct lua_State;

/** One file being validated: its errors ("path:line: message") and the
 *  positions of its fields (built on the first error). */
struct vctx {
    const char *path;
    json_t *errors;
    int nerr;
    struct rules_lines lines; /* field positions, built on the first error */
};

/** Record an error at the line of field `key` (NULL: line 1). */
void rules_verr(struct vctx *v, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** A field path with an index: rules_pathf(b, len, "variants[%d].weight", 2). */
const char *rules_pathf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** score = { model = "buy_7d", value = 25 | { model = "rev_90d" } } (table on top). */
void rules_parse_model_score(struct lua_State *L, struct vctx *v, struct rules_campaign *c);
/** The audience table on top, checked: the filter as JSON (NULL when it has
 *  errors or none), the model part into c->audience_model/top/above. */
json_t *rules_parse_audience(struct lua_State *L, struct vctx *v, struct rules_campaign *c);
/** `promod check`: the segment ids of segments_dir (owned; NULL = none known). */
void rules_check_set_segments(json_t *ids);

#endif
