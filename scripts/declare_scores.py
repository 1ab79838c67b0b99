#!/usr/bin/env python3
"""declare_scores.py — a copy of a generated benchmark workload's campaign
files whose Lua `score` hooks are written as declared scores.

    python3 scripts/declare_scores.py SRC DST

SRC is a directory made by ../shared/bench/gen_workload.py (its rules/ are
read; nothing in SRC is written).  Every campaign's

    score = function(p, ctx)
      local s = 96 * (1 + (p.ltv or 0) / 1000)
      if has(p.interests, "safari") then s = s * 1.5 end
      return s
    end,

becomes the declared score with the same value (engine/formula.h, README
"Declared scores"):

    score = { base = 96, per = { ltv = 1000 },
              boost = { { when = { interests = { ["$elemMatch"] = { ["$eq"] = "safari" } } },
                          by = 1.5 } } },

so scripts/bench-segments.sh and scripts/profile-decide.sh can compare the
two forms on the same campaigns.  A file whose score is not in this shape
is refused (exit 1): the copy must be the same campaigns.
"""
import os
import re
import shutil
import sys

SCORE = re.compile(
    r'  score = function\(p, ctx\)\n'
    r'    local s = (?P<base>[0-9.]+) \* \(1 \+ \(p\.(?P<attr>\w+) or 0\) / (?P<div>[0-9.]+)\)\n'
    r'    if has\(p\.(?P<list>\w+), "(?P<item>[^"]*)"\) then s = s \* (?P<by>[0-9.]+) end\n'
    r'    return s\n'
    r'  end,\n')


def declared(m):
    return ('  score = { base = %s, per = { %s = %s },\n'
            '            boost = { { when = { %s = { ["$elemMatch"] = { ["$eq"] = "%s" } } }, by = %s } } },\n'
            % (m["base"], m["attr"], m["div"], m["list"], m["item"], m["by"]))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: declare_scores.py SRC DST")
    src, dst = sys.argv[1], sys.argv[2]
    if os.path.exists(dst):
        shutil.rmtree(dst)
    n = 0
    for root, _, files in os.walk(os.path.join(src, "rules")):
        out = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for name in files:
            with open(os.path.join(root, name)) as f:
                text = f.read()
            if name.endswith(".lua"):
                text, k = SCORE.subn(declared, text)
                if k != 1:
                    sys.exit("%s: no score hook of the generated shape" % os.path.join(root, name))
                n += 1
            with open(os.path.join(out, name), "w") as f:
                f.write(text)
    print("declared the scores of %d campaigns in %s" % (n, dst))


if __name__ == "__main__":
    main()
