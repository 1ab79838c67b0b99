/*
 * fuzz_tmpl.c — the content template compiler: tmpl_check, tmpl_render
 * and tmpl_compile + tmpl_run on any text, with a lookup that finds some
 * paths, misses others and fails on one.  Rendering the compiled program
 * must give exactly what tmpl_render gives, with and without escaping,
 * and a text without placeholders renders as itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/buf.h"
#include "engine/tmpl.h"

struct app;
struct app *g_app; /* main.c defines it in the server; nothing here needs one */

/* found: the path reversed with a '<' (to escape); missing: odd lengths;
 * error: "err" */
static int lookup(void *ud, const char *path, size_t len, struct buf *out)
{
    (void)ud;
    if (len == 3 && !memcmp(path, "err", 3))
        return -5;
    if (len % 2)
        return 0;
    for (size_t i = len; i > 0; i--)
        if (buf_add(out, path + i - 1, 1))
            return -1;
    return buf_add(out, "<&\"'>", 5) ? -1 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *)data;
    char err[128];
    (void)tmpl_check(t, size, err, sizeof err);
    struct tmpl_prog *prog = tmpl_compile(t, size);
    if (!prog)
        return 0;
    for (int esc = 0; esc < 2; esc++) {
        struct buf a = BUF_INIT, b = BUF_INIT, val = BUF_INIT;
        int ra = tmpl_render(t, size, esc, lookup, NULL, &a);
        int rb = tmpl_run(prog, esc, lookup, NULL, &val, &b);
        if (ra != rb || (ra == 0 && (a.len != b.len || memcmp(a.p, b.p, a.len)))) {
            fprintf(stderr, "tmpl_render (%d, %zu bytes) and tmpl_run (%d, %zu bytes) differ\n", ra, a.len,
                    rb, b.len);
            abort();
        }
        if (ra != 0 && a.len != 0)
            abort(); /* on error the output is restored */
        if (ra == 0 && !tmpl_has_placeholders(t, size) && (a.len != size || memcmp(a.p, t, size)))
            abort();
        buf_free(&a);
        buf_free(&b);
        buf_free(&val);
    }
    tmpl_prog_free(prog);
    return 0;
}
