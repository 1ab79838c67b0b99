#!/usr/bin/env python3
"""Generate the demo customer profiles loaded by scripts/run.sh.

Usage: gen_profiles.py [OUT] [--count N] [--seed S]      (default: stdout)

One profile a line, in the shape of the reference workload
(../shared/bench/gen_workload.py): {"id": "c00000042", "first_name", "tier",
"country", "age", "ltv", "days_since_purchase", "app_user", "interests",
"consent": {"email", "sms", "push"}, "email"}.  Deterministic for a given
seed: the committed scripts/demo/profiles.ndjson is this script's output
with the defaults.  Standard library only.
"""
import argparse, json, random, sys

TIERS = ["bronze", "silver", "gold", "platinum"]
COUNTRIES = ["FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "SE", "PL",
             "BR", "MX", "CA", "JP", "IN", "AU", "CH", "AT", "PT", "IE"]
INTERESTS = ["beach", "ski", "city", "family", "luxury", "budget", "business",
             "golf", "food", "wine", "museums", "hiking", "cruise", "kids",
             "nightlife", "spa", "shopping", "festival", "safari", "diving",
             "camping", "roadtrip", "rail", "island", "history", "art",
             "music", "sports", "photo", "yoga"]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Femi", "Gus", "Hana"]


def profile(rng, i):
    return {
        "id": "c%08d" % i,
        "first_name": rng.choice(NAMES),
        "tier": rng.choices(TIERS, weights=[50, 30, 15, 5])[0],
        "country": rng.choice(COUNTRIES),
        "age": rng.randint(18, 80),
        "ltv": round(rng.lognormvariate(5.5, 1.0), 2),
        "days_since_purchase": rng.randint(0, 720),
        "app_user": rng.random() < 0.4,
        "interests": rng.sample(INTERESTS, 3),
        "consent": {"email": rng.random() < 0.7, "sms": rng.random() < 0.3,
                    "push": rng.random() < 0.5},
        "email": "c%08d@example.com" % i,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="output file (default: stdout)")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    f = open(a.out, "w") if a.out else sys.stdout
    try:
        for i in range(a.count):
            f.write(json.dumps(profile(rng, i), separators=(",", ":")) + "\n")
    finally:
        if a.out:
            f.close()


if __name__ == "__main__":
    main()
