/*
 * templates.h — campaign templates: ready campaign types (cart
 * abandonment, win-back, ...) as parameterized Lua files in templates_dir
 * (config_templates_dir), listed by GET /api/v1/templates and instantiated
 * as drafts by POST /api/v1/campaigns {"template", "params"}.
 *
 * A template is a campaign file in three parts (docs/authoring.md):
 *
 *   local TEMPLATE = {                 -- the declaration the server reads
 *     description = "...",
 *     params = { { name = "discount", type = "number", default = 10,
 *                  description = "..." }, ... },
 *   }
 *   local P = {} -- @params            -- replaced by the values on instantiation
 *   for _, d in ipairs(TEMPLATE.params) do if P[d.name] == nil then P[d.name] = d.default end end
 *   return { id = P.id, ... }          -- the campaign, reading P
 *
 * The file as it is is a valid campaign (every parameter at its default),
 * so `promod check templates/` and `promod test templates/` run it.  The
 * declaration is read by running the text before the "-- @params" line in
 * a throwaway sandbox and returning TEMPLATE.  Instantiation replaces that
 * one line with `local P = { ... }` written as a Lua literal: strings are
 * quoted with every byte outside printable ASCII, `"` and `\` escaped as
 * \ddd, numbers must be finite — parameter values are data, never code,
 * and the line count is kept, so the draft's line numbers are the
 * template's.
 *
 * Types: string (1-1000 bytes), number (finite), integer, boolean,
 * strings (a list of 0-64 strings).  A parameter with no default is
 * required; "id" (the campaign id) must be declared by every template.
 *
 * Threads: any (each call makes its own sandbox).
 */
#ifndef PROMOD_TEMPLATES_H
#define PROMOD_TEMPLATES_H
#include <jansson.h>
#include <stddef.h>

struct reqerr;

/** Every template of `dir`: [{"name", "file", "description", "params":
 *  [{"name", "type", "default"?, "required", "description"}]}], sorted by
 *  name; a file whose declaration does not load is listed with "error"
 *  instead of params.  @return a new array (empty when the directory is
 *  missing), NULL when out of memory. */
json_t *templates_list(const char *dir);

/** Instantiate template `name` of `dir` with `params` (a JSON object, may
 *  be NULL): on success 0, *src (malloc'd, NUL-terminated, length *len)
 *  the campaign's source and `id` (idlen bytes) its id (params.id, or the
 *  default).  Errors fill `e`: 404 unknown_template (field "template"),
 *  400 invalid_field ("template" not a name, "params" not an object, a
 *  value of the wrong type: field "params.NAME"), 400 unknown_field
 *  ("params.NAME" not declared), 400 missing_field (a required
 *  parameter), 500 when the template's declaration does not load. */
int templates_instantiate(const char *dir, const char *name, const json_t *params, char **src,
                          size_t *len, char *id, size_t idlen, struct reqerr *e);

/** Write `v` (string, number, boolean, or an array of strings) as a Lua
 *  literal to *out (malloc'd).  @return 0, ERR_INVAL (another type, a
 *  non-finite number), ERR_NOMEM. */
int templates_lua_literal(const json_t *v, char **out);

#endif
