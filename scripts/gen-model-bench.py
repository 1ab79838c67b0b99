#!/usr/bin/env python3
"""gen-model-bench.py — events for the model benchmarks, on the reference
workload's profiles (../shared/bench/gen_workload.py).

    gen-model-bench.py PROFILES.ndjson OUT_DIR [--events N] [--now UNIX] [--seed S]

Writes OUT_DIR/events-NNN.ndjson (500,000 events a file, time-ordered within
the whole set) and OUT_DIR/nba.lua, the model file of the benchmark: the
propensity to convert on campaign "nba" within 7 days of an impression,
200 trees of depth 6 over profile attributes and p.stats behaviour.

Every customer gets about N / customers events over the 60 days before
`now`: opens and clicks of the reference campaigns, impressions of "nba"
(at least 8 days apart) and conversions of it, with a planted probability
sigmoid(-2.2 + 0.8 gold/platinum + 0.004 (ltv capped at 500) - 0.01 (age - 45)
+ 0.6 app_user + 0.25 ln(1 + earlier clicks) - 0.004 days_since_purchase).
Standard library only; deterministic for a seed.
"""
import argparse
import json
import math
import os
import random

DAY = 86400
MODEL = """-- The benchmark's model: converting on campaign "nba" within 7 days of an
-- impression (scripts/gen-model-bench.py plants the relationship).
return {
  id = "nba",
  label = { conversion = "nba", within = "7d" },
  features = {
    { "tier", values = { "bronze", "silver", "gold", "platinum" } },
    { "country", values = { "FR", "DE", "US", "GB", "ES", "IT" } },
    "age", "ltv", "days_since_purchase", "app_user",
    "stats.click", "stats.open", "stats.impression", "stats.events",
    "stats.days_since.click", "stats.tenure",
  },
  algorithm = "xgboost",
  params = { trees = 200, depth = 6, eta = 0.1 },
  window = "60d",
  max_rows = 3000000,
}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profiles")
    ap.add_argument("out")
    ap.add_argument("--events", type=int, default=10000000)
    ap.add_argument("--now", type=int, default=0, help="default: the current time")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    now = a.now or int(__import__("time").time())
    start = now - 60 * DAY
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "nba.lua"), "w") as f:
        f.write(MODEL)
    profiles = []
    with open(a.profiles) as f:
        for line in f:
            profiles.append(json.loads(line))
    per = a.events / len(profiles)
    # (ts, line) for every event, then sorted and split
    out = []
    for p in profiles:
        cid = p["id"]
        k = max(1, int(rng.expovariate(1 / per) + 0.5))
        nimp = max(1, min(3, k // 4))
        imps = sorted(start + rng.randint(0, 50 * DAY) for _ in range(nimp))
        kept = []
        for t in imps:
            if not kept or t - kept[-1] >= 8 * DAY:
                kept.append(t)
        others = k - len(kept)
        clicks = []
        for _ in range(max(0, others)):
            t = start + rng.randint(0, 60 * DAY)
            if rng.random() < 0.5:
                clicks.append(t)
                out.append((t, '{"type":"click","customer_id":"%s","campaign_id":"bench-%03d","ts":%d}'
                            % (cid, rng.randint(0, 499), t)))
            else:
                out.append((t, '{"type":"open","customer_id":"%s","campaign_id":"bench-%03d","ts":%d}'
                            % (cid, rng.randint(0, 499), t)))
        clicks.sort()
        for t in kept:
            before = sum(1 for c in clicks if c < t)
            logit = (-2.2 + 0.8 * (p["tier"] in ("gold", "platinum")) + 0.004 * min(p["ltv"], 500)
                     - 0.01 * (p["age"] - 45) + 0.6 * p["app_user"] + 0.25 * math.log(1 + before)
                     - 0.004 * p["days_since_purchase"])
            out.append((t, '{"type":"impression","customer_id":"%s","campaign_id":"nba","channel":"web","ts":%d}'
                        % (cid, t)))
            if rng.random() < 1 / (1 + math.exp(-logit)):
                tc = t + rng.randint(600, 6 * DAY)
                if tc < now:
                    out.append((tc, '{"type":"conversion","customer_id":"%s","campaign_id":"nba",'
                                '"channel":"web","revenue":25,"ts":%d}' % (cid, tc)))
    out.sort(key=lambda x: x[0])
    n = 0
    for i in range(0, len(out), 500000):
        with open(os.path.join(a.out, "events-%03d.ndjson" % (i // 500000)), "w") as f:
            for _, line in out[i:i + 500000]:
                f.write(line)
                f.write("\n")
                n += 1
    print("wrote %d events for %d customers to %s" % (n, len(profiles), a.out))


if __name__ == "__main__":
    main()
