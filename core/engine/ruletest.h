/*
 * ruletest.h — campaign tests: Lua test files that call a campaign's hooks
 * with fixture profiles and contexts and assert what they return
 * (`promod test`, `promod check --test`, POST /api/v1/rules/test).
 *
 * Owns: finding test files (rules/ and its subdirectories: *_test.lua), the test API the files
 * see (campaign, test, expect, assert_eq; docs/authoring.md), running each
 * test and collecting pass/fail with "file:line: message".
 *
 * A run builds one throwaway sandbox (the one `promod check` validates
 * with: rules_scratch_vm's sandbox, rules/lib for require), loads every
 * campaign file given (validated as the loader does; a file that fails is
 * reported as an error and its tests fail), then loads each test file.
 * A test file's top level registers tests with test(name, fn); each test
 * then runs as one protected call with its own budgets (the sandbox's
 * instruction budget and time limit, raised for tests).  Hooks are called
 * the way decide calls them: p and ctx are read-only views for every hook
 * whose file could write a table.  Nothing here opens the store: no
 * counter, event, coupon or outbox message is read or written; caps,
 * schedules and audiences are not evaluated (simulate does that against
 * the store).  A campaign table may also carry its own tests:
 * `tests = { name = function(c) ... end }`, c being campaign(own id).
 *
 * Threads: any; a run is self-contained.
 */
#ifndef PROMOD_RULETEST_H
#define PROMOD_RULETEST_H
#include <jansson.h>
#include <stddef.h>

struct config;

/** One source file: a campaign or a test file. */
struct ruletest_src {
    const char *path; /**< as shown in messages ("rules/spring.lua") */
    const char *src;
    size_t len;
};

/** Run the tests of `tests` (and the inline `tests` of the campaigns)
 *  against `camps`.  `chans` names the known channels (validation of the
 *  campaigns; NULL = any), `lib_dir` the directory require loads from.
 *  @return a new object {"passed", "failed", "errors": ["file:line: ..."],
 *  "tests": [{"file", "name", "ok", "error"?}]}, or NULL when out of
 *  memory.  "errors" holds campaign or test files that did not load (each
 *  also counts as a failure). */
json_t *ruletest_run(const struct ruletest_src *camps, int ncamps,
                     const struct ruletest_src *tests, int ntests, const char *const *chans,
                     int nchans, const char *lib_dir);

/** `promod test [DIR|FILE ...]` (default: the rules directory): campaigns
 *  are the non-test *.lua files below the directories given (and beside the
 *  test files given), tests the *_test.lua files.  Prints one line per
 *  failure ("file:line: message") and a summary; returns the exit status
 *  (0 all passed, 1 a failure or an error, 1 also when no test was found
 *  and `need_tests`). */
int ruletest_cli(const struct config *cfg, const char *const *paths, int n, int need_tests);

#endif
