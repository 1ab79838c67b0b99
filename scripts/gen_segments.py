#!/usr/bin/env python3
"""Generate segment files for the reference workload (../shared/bench).

Usage: gen_segments.py OUT_DIR [--segments N] [--seed S] [--lua K]

Writes OUT_DIR/seg-NNN.lua: N segments (default 200) over the reference
profile's attributes, the way a marketing team's list tends to look:
1-3 clauses each on tier, country, age, ltv, interests, days since
purchase, app use, e-mail consent, behaviour from events (p.stats: click
and conversion counts, days since last seen, revenue), every tenth one
narrowing an earlier segment with {"$segment": ...}, and K of them
(default 2) Lua predicates.  Deterministic per seed.  Standard library only.
"""
import argparse, json, os, random

TIERS = ["bronze", "silver", "gold", "platinum"]
COUNTRIES = ["FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "SE", "PL",
             "BR", "MX", "CA", "JP", "IN", "AU", "CH", "AT", "PT", "IE"]
INTERESTS = ["beach", "ski", "city", "family", "luxury", "budget", "business",
             "golf", "food", "wine", "museums", "hiking", "cruise", "kids",
             "nightlife", "spa", "shopping", "festival", "safari", "diving",
             "camping", "roadtrip", "rail", "island", "history", "art",
             "music", "sports", "photo", "yoga"]


def clause(rng):
    k = rng.choice(["tier", "country", "age", "ltv", "interest", "recency", "app",
                    "consent", "clicks", "conversions", "seen", "revenue"])
    if k == "tier":
        return {"tier": {"$in": rng.sample(TIERS, rng.randint(1, 2))}}
    if k == "country":
        return {"country": {"$in": rng.sample(COUNTRIES, rng.randint(1, 5))}}
    if k == "age":
        lo = rng.randint(18, 55)
        return {"age": {"$gte": lo, "$lte": lo + rng.randint(5, 25)}}
    if k == "ltv":
        return {"ltv": {"$gte": rng.choice([100, 250, 500, 1000, 2000])}}
    if k == "interest":
        return {"interests": {"$elemMatch": {"$eq": rng.choice(INTERESTS)}}}
    if k == "recency":
        return {"days_since_purchase": {"$lte": rng.choice([7, 30, 90, 180])}}
    if k == "app":
        return {"app_user": rng.random() < 0.7}
    if k == "consent":
        return {"consent.email": True}
    if k == "clicks":
        return {"stats.click": {"$gte": rng.choice([1, 3, 5])}}
    if k == "conversions":
        return {"stats.conversion": {"$gte": 1}}
    if k == "seen":
        return {"stats.recency_days": {"$lte": rng.choice([7, 30, 90])}}
    return {"stats.revenue": {"$gte": rng.choice([10, 50, 200])}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--segments", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--lua", type=int, default=2)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for i in range(a.segments):
        sid = "seg-%03d" % i
        path = os.path.join(a.out, sid + ".lua")
        if i < a.lua:
            lo = rng.choice([300, 600, 900])
            text = ("-- generated benchmark segment %s\nreturn {\n  name = \"Lua %d\",\n"
                    "  match = function(p) return (p.ltv or 0) > %d and p.app_user == true end,\n}\n"
                    % (sid, i, lo))
        else:
            parts = [clause(rng) for _ in range(rng.randint(1, 3))]
            cond = {"$and": parts} if len(parts) > 1 else parts[0]
            if i >= 20 and i % 10 == 0:
                cond = {"$segment": "seg-%03d" % rng.randint(a.lua, i - 1), "$and": [cond]}
            text = ("-- generated benchmark segment %s\nreturn {\n  name = \"Segment %d\",\n"
                    "  conditions = [[%s]],\n}\n" % (sid, i, json.dumps(cond, separators=(",", ":"))))
        with open(path, "w") as f:
            f.write(text)
    print("wrote %d segments to %s" % (a.segments, a.out))


if __name__ == "__main__":
    main()
