#!/usr/bin/env python3
"""gen-model-data.py — profiles and events with a planted relationship, for
training promod's models and checking them against the truth.

    gen-model-data.py OUT_DIR [--customers N] [--now UNIX] [--seed S]
                      [--events-per-customer K]

Writes, under OUT_DIR:
  profiles.ndjson     {"id", "tier", "age" (missing for 10%), "country", "tz"}
  events.ndjson       time-ordered events, every ts <= now
  conversion.csv      customer_id,ts,p_true,label — one row per impression of
                      campaign "spring" (the anchors of a conversion model)
  churn.csv           customer_id,p_churn,churned,value,expected_value — per
                      customer, for the snapshot now - 90 days
  meta.json           now, counts, the planted coefficients

The world (all times relative to `now`):
  * every customer opens once ~400 days ago (so every churn snapshot sees
    them), clicks campaign "news" as a Poisson process (own rate), and makes
    custom "purchase" events (with revenue) as a Poisson process whose daily
    rate depends only on tier and age: rate = base[tier] * exp(-0.01 (age - 49));
    amounts are exponential with mean amount[tier].
    => P(no purchase in the next 90 days) = exp(-90 rate): the true churn
       probability; E[revenue in 90 days] = 90 rate amount[tier].
  * impressions of campaign "spring" (properties.device mobile/desktop) at
    least 9 days apart in the last 120 days; each converts (a "conversion"
    of "spring" within 7 days) with probability
      sigmoid(-2 + 0.9 gold + 0.4 silver - 0.03 (age - 49) + 0.6 ln(1 + clicks)
              + 0.8 [a purchase in the 30 days before] + 0.3 mobile)
    where clicks counts the customer's clicks before the impression and a
    missing age counts as 49.  These are exactly the features of
    tests/models/*.lua, so a model can reach the truth.

Standard library only; deterministic for a seed.
"""
import argparse
import bisect
import json
import math
import os
import random

DAY = 86400
TIERS = ["gold", "silver", "bronze"]
BASE_RATE = {"gold": 1 / 20, "silver": 1 / 45, "bronze": 1 / 120}
AMOUNT = {"gold": 80.0, "silver": 50.0, "bronze": 30.0}
COEF = {"intercept": -2.0, "gold": 0.9, "silver": 0.4, "age": -0.03, "log_clicks": 0.6,
        "recent_buyer": 0.8, "mobile": 0.3}


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def poisson_times(rng, rate_per_day, start, end):
    """Event times of a Poisson process on [start, end)."""
    out = []
    if rate_per_day <= 0:
        return out
    t = start
    while True:
        t += rng.expovariate(rate_per_day) * DAY
        if t >= end:
            return out
        out.append(int(t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--now", type=int, default=1800000000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--clicks-per-day", type=float, default=0.03,
                    help="mean click rate (each customer's own rate is Gamma distributed)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    now = args.now
    os.makedirs(args.out, exist_ok=True)
    events = []
    conv_rows = []
    churn_rows = []
    snap = now - 90 * DAY
    nprof = 0
    with open(os.path.join(args.out, "profiles.ndjson"), "w") as pf:
        for i in range(args.customers):
            cid = "m%07d" % i
            tier = rng.choices(TIERS, weights=[20, 30, 50])[0]
            age = rng.randint(18, 80) if rng.random() >= 0.1 else None
            prof = {"id": cid, "tier": tier, "country": rng.choice(["FR", "DE", "US"]),
                    "tz": "UTC"}
            if age is not None:
                prof["age"] = age
            pf.write(json.dumps(prof) + "\n")
            nprof += 1
            a = age if age is not None else 49
            first = now - 400 * DAY + rng.randint(0, 30 * DAY)
            events.append({"type": "open", "customer_id": cid, "campaign_id": "welcome",
                           "ts": first})
            clicks = poisson_times(rng, rng.gammavariate(2.0, args.clicks_per_day / 2.0),
                                   first, now)
            for t in clicks:
                events.append({"type": "click", "customer_id": cid, "campaign_id": "news",
                               "ts": t})
            rate = BASE_RATE[tier] * math.exp(-0.01 * (a - 49))
            purchases = poisson_times(rng, rate, first, now)
            amounts = [round(rng.expovariate(1 / AMOUNT[tier]), 2) for _ in purchases]
            for t, amt in zip(purchases, amounts):
                events.append({"type": "purchase", "customer_id": cid, "revenue": amt, "ts": t})
            # churn / value truth at the snapshot now - 90d
            after = [(t, amt) for t, amt in zip(purchases, amounts) if snap < t <= snap + 90 * DAY]
            churn_rows.append((cid, math.exp(-90 * rate), 0 if after else 1,
                               sum(amt for _, amt in after), 90 * rate * AMOUNT[tier]))
            # impressions of "spring", >= 9 days apart, in the last 120 days
            t = now - 120 * DAY + rng.randint(0, 20 * DAY)
            while t < now:
                mobile = rng.random() < 0.5
                nclicks = bisect.bisect_left(clicks, t)
                k = bisect.bisect_left(purchases, t)
                recent = k > 0 and t - purchases[k - 1] < 30 * DAY
                logit = (COEF["intercept"] + COEF["gold"] * (tier == "gold") +
                         COEF["silver"] * (tier == "silver") + COEF["age"] * (a - 49) +
                         COEF["log_clicks"] * math.log(1 + nclicks) +
                         COEF["recent_buyer"] * recent + COEF["mobile"] * mobile)
                p = sigmoid(logit)
                label = 1 if rng.random() < p else 0
                events.append({"type": "impression", "customer_id": cid, "campaign_id": "spring",
                               "channel": "web", "ts": t,
                               "properties": {"device": "mobile" if mobile else "desktop"}})
                tc = t + rng.randint(60, 7 * DAY - 60)
                if label and tc <= now:  # later ones are past the data (never anchors either)
                    events.append({"type": "conversion", "customer_id": cid,
                                   "campaign_id": "spring", "channel": "web", "ts": tc,
                                   "revenue": 40.0})
                conv_rows.append((cid, t, p, label))
                t += 9 * DAY + rng.randint(0, 30 * DAY)
    events.sort(key=lambda e: e["ts"])
    with open(os.path.join(args.out, "events.ndjson"), "w") as ef:
        for e in events:
            ef.write(json.dumps(e) + "\n")
    with open(os.path.join(args.out, "conversion.csv"), "w") as cf:
        for r in conv_rows:
            cf.write("%s,%d,%.10f,%d\n" % r)
    with open(os.path.join(args.out, "churn.csv"), "w") as cf:
        for r in churn_rows:
            cf.write("%s,%.10f,%d,%.2f,%.6f\n" % r)
    with open(os.path.join(args.out, "meta.json"), "w") as mf:
        json.dump({"now": now, "customers": nprof, "events": len(events),
                   "impressions": len(conv_rows), "coefficients": COEF,
                   "purchase_rate_per_day": BASE_RATE, "amount_mean": AMOUNT}, mf, indent=1)
        mf.write("\n")


if __name__ == "__main__":
    main()
