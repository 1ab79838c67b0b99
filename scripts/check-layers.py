#!/usr/bin/env python3
"""check-layers.py — keep core/'s includes pointing down and free of circles.

    scripts/check-layers.py [ROOT]        (ROOT defaults to the repository)

core/ is a stack of folders, lowest first (core/README.md explains each):

    base < codec < store < lua < engine < delivery < insight < service < http < main.c

A file may include headers of its own folder and of lower folders only,
always with the folder in the path ("store/store.h"), so a reader sees the
layer at the include.  Modules (a header and the .c files named after it:
luavm.h <- luavm.c, luavm_promo.c) must not depend on each other in a
circle, inside a folder or across folders.

Prints one line per problem ("core/store/audit.c:5: includes http/http.h
from a higher layer (http > store)") and exits 1 when there is any; prints
"layers: ok (N files, M modules)" and exits 0 otherwise.  Run by
scripts/test.sh; tests/layers/ holds trees it must refuse.
"""
import os
import re
import sys

LAYERS = ["base", "codec", "store", "lua", "engine", "delivery", "insight", "service", "http"]
RANK = {name: i for i, name in enumerate(LAYERS)}
TOP = len(LAYERS)  # core/main.c
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(stem, headers):
    """The module a file belongs to: its own header, else the longest
    header name that prefixes it at an underscore (luavm_promo -> luavm)."""
    if stem in headers:
        return stem
    parts = stem.split("_")
    for n in range(len(parts) - 1, 0, -1):
        cand = "_".join(parts[:n])
        if cand in headers:
            return cand
    return stem


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    core = os.path.join(root, "core")
    files = []
    for dirpath, _, names in os.walk(core):
        for n in names:
            if n.endswith((".c", ".h")):
                files.append(os.path.relpath(os.path.join(dirpath, n), core))
    files.sort()
    problems = []
    # module name -> folder, from headers (module names are unique in core/)
    headers = {}
    for f in files:
        folder, _, name = f.rpartition("/")
        if name.endswith(".h"):
            stem = name[:-2]
            if stem in headers and headers[stem] != folder:
                problems.append("core/%s: header name %s.h also in core/%s/ (names must be unique)"
                                % (f, stem, headers[stem]))
            headers[stem] = folder
    deps = {}  # module -> set of modules
    for f in files:
        folder, _, name = f.rpartition("/")
        if folder == "":
            if name != "main.c":
                problems.append("core/%s: only main.c lives at the top of core/" % f)
            rank, owner = TOP, "main"
        elif folder not in RANK:
            problems.append("core/%s: folder core/%s/ is not a known layer (%s)"
                            % (f, folder, " < ".join(LAYERS)))
            continue
        else:
            rank, owner = RANK[folder], module_of(name.rsplit(".", 1)[0], headers)
        text = open(os.path.join(core, f), encoding="utf-8", errors="replace").read()
        for m in INCLUDE.finditer(text):
            inc = m.group(1)
            line = text.count("\n", 0, m.start()) + 1
            where = "core/%s:%d" % (f, line)
            if "/" not in inc:
                problems.append("%s: include \"%s\" without its folder" % (where, inc))
                continue
            ifolder, _, iname = inc.rpartition("/")
            if not os.path.exists(os.path.join(core, inc)):
                problems.append("%s: includes %s, which does not exist" % (where, inc))
                continue
            if ifolder not in RANK:
                problems.append("%s: includes %s from outside the layers" % (where, inc))
                continue
            if RANK[ifolder] > rank:
                problems.append("%s: includes %s from a higher layer (%s > %s)"
                                % (where, inc, ifolder, folder or "main"))
            imod = iname[:-2]
            if imod != owner:
                deps.setdefault(owner, set()).add(imod)
    # circles between modules (Tarjan's strongly connected components)
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            strong(v)
    for comp in sccs:
        ties = ["%s -> %s" % (a, b) for a in comp for b in sorted(deps.get(a, ())) if b in comp]
        problems.append("circle between modules %s (%s)" % (", ".join(comp), "; ".join(ties)))
    for p in problems:
        print(p)
    if problems:
        print("layers: %d problem(s)" % len(problems))
        return 1
    print("layers: ok (%d files, %d modules)" % (len(files), len(set(headers) | set(deps))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
