#!/usr/bin/env python3
"""experiment-example.py — the worked example of docs/experiments.md, end to end.

    python3 scripts/experiment-example.py [--bin build/promod] [--customers 10000]

Starts a promod server of its own (temporary directory, free port), writes
one campaign, creates and starts an experiment through the API, sends one
decide per customer (ex00001, ex00002, ...), then the conversions a shop
would report, without campaign_id and with an order id each, and prints
the counts per arm and the results' headline numbers.  Everything is
deterministic: which customer sees what is GrowthBook's hash of their id,
and who converts is a fixed rule of the customer number n and what they
were shown:

    converts when (n * 7919) % 100 < 10 (A), < 12 (B), < 8 (held out)
    revenue 20 + n % 50

so B carries a planted +20 % lift and the offer itself +25 % over nothing
(0.10 / 0.08).  Standard library only; the server is stopped at the end.
"""
import argparse, http.client, json, os, shutil, signal, subprocess, sys, tempfile, time

CAMPAIGN = """return {
  id = "spring-banner", channels = { "web" }, priority = 50,
  variants = {
    { id = "A", content = { headline = "Spring is here" } },
    { id = "B", content = { headline = "20 % off for spring" } },
  },
  eligible = function(p, ctx) return true end,
}
"""

EXPERIMENT = {
    "id": "spring-headline",
    "name": "Spring banner headline",
    "campaign_id": "spring-banner",
    "variants": [{"id": "A", "weight": 0.5}, {"id": "B", "weight": 0.5}],
    "holdout": 0.1,
    "metric": "conversion_rate",
    "guardrails": ["revenue_per_customer"],
    "min_sample": 1000,
    "mde": 0.2,
}


def call(conn, method, path, body=None):
    data = json.dumps(body) if body is not None else None
    conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
    r = conn.getresponse()
    text = r.read()
    if r.status >= 300:
        sys.exit("%s %s: %d %s" % (method, path, r.status, text[:500]))
    return json.loads(text) if text else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "promod"))
    ap.add_argument("--customers", type=int, default=10000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="promod-example-")
    try:
        os.makedirs(os.path.join(root, "rules"))
        shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "plugins"),
                        os.path.join(root, "plugins"))
        with open(os.path.join(root, "rules", "spring.lua"), "w") as f:
            f.write(CAMPAIGN)
        cfg = os.path.join(root, "promod.lua")
        with open(cfg, "w") as f:
            f.write('return { listen = "127.0.0.1:0", data_dir = "%s/data", rules_dir = "%s/rules",'
                    ' plugins_dir = "%s/plugins", log_level = "warn" }\n' % (root, root, root))
        portfile = os.path.join(root, "port")
        srv = subprocess.Popen([a.bin, "serve", "-c", cfg, "--port-file", portfile])
        for _ in range(200):
            if os.path.exists(portfile):
                break
            time.sleep(0.05)
        port = int(open(portfile).read())
        conn = http.client.HTTPConnection("127.0.0.1", port)
        call(conn, "POST", "/api/v1/experiments", EXPERIMENT)
        call(conn, "POST", "/api/v1/experiments/spring-headline/start")
        shown = {"A": 0, "B": 0, "holdout": 0}
        orders = []
        for n in range(1, a.customers + 1):
            cust = "ex%05d" % n
            r = call(conn, "POST", "/api/v1/decide", {"customer_id": cust, "channel": "web"})
            v = r["offers"][0]["variant"] if r["offers"] else "holdout"
            shown[v] += 1
            cut = {"A": 10, "B": 12, "holdout": 8}[v]
            if (n * 7919) % 100 < cut:
                orders.append({"type": "conversion", "customer_id": cust,
                               "order_id": "order-%d" % n, "revenue": 20 + n % 50})
        call(conn, "POST", "/api/v1/events", orders)
        call(conn, "POST", "/api/v1/events", orders)  # a retry: every order counts once
        res = call(conn, "GET", "/api/v1/experiments/spring-headline/results")
        print("shown:", shown, "orders:", len(orders))
        for v in res["variants"] + [res["holdout"]]:
            print("%-8s exposures %5d  conversions %4d  rate %.5f  revenue/customer %.4f  var %.4f" % (
                v["id"], v["exposures"], v["conversions"], v["conversion_rate"],
                v["revenue_per_customer"], v["revenue_variance"]))
        print("srm:", json.dumps(res["srm"]))
        for m in res["metrics"]:
            c = m["comparisons"][0]
            print("%s (%s):" % (m["metric"], m["role"]))
            print("  lift", json.dumps(c["lift"]))
            if "ztest" in c:
                print("  ztest", json.dumps(c["ztest"]))
            print("  welch", json.dumps(c["welch"]))
            print("  sequential", json.dumps(c["sequential"]))
            print("  chance_to_beat_control %.5f significant %s" % (
                c["chance_to_beat_control"], c["significant"]))
        h = res["holdout"]
        print("holdout conversion_lift", json.dumps(h["conversion_lift"]))
        print("incremental_conversions %.2f" % h["incremental_conversions"])
        print("power", json.dumps(res["power"]))
        print("recommendation", json.dumps(res["recommendation"]))
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
