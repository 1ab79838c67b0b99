#!/usr/bin/python3
"""test_kit.py — the Prometheus and Grafana kit in deploy/.

  - `promtool check config` on the scrape config (which loads the rules),
    `promtool check rules` on the rules, `promtool test rules` on their
    unit tests;
  - the Grafana dashboard is well-formed: unique panel ids, every panel on
    the ${DS_PROMETHEUS} input with at least one query, on the 24-column
    grid; every query parses as PromQL (promtool checks them as rules);
  - every metric name the rules and the dashboard use exists: promod_*
    series in a live scrape of a real promod (after a decide, events, a
    hook error), promod:* names among the recording rules;
  - the live scrape itself passes `promtool check metrics`.

Prints one line per check and "deploy: N passed, M failed"; exits 1 on
any failure.

  /usr/bin/python3 tests/deploy/test_kit.py [--bin build/promod]
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
CONFIG = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
RULES = os.path.join(DEPLOY, "prometheus", "rules", "promod.rules.yml")
RULE_TESTS = os.path.join(DEPLOY, "prometheus", "tests", "promod.rules.test.yml")
DASHBOARD = os.path.join(DEPLOY, "grafana", "promod-dashboard.json")
NAME = re.compile(r"\bpromod[_:][A-Za-z0-9_:]*")


def promtool(*args, stdin=None):
    p = subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True)
    assert p.returncode == 0, "promtool %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr)
    return p.stdout


def rules_doc():
    with open(RULES) as f:
        return yaml.safe_load(f)


def dashboard_exprs():
    d = json.load(open(DASHBOARD))
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in d["templating"]["list"]:
        q = v.get("query")
        out.append(("variable " + v["name"], q["query"] if isinstance(q, dict) else q))
    return out


def check_promtool_config(ctx):
    out = promtool("check", "config", CONFIG)
    assert "SUCCESS" in out and "1 rule files found" in out, out


def check_promtool_rules(ctx):
    out = promtool("check", "rules", RULES)
    assert "SUCCESS" in out, out
    doc = rules_doc()
    alerts = [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]
    for want in ("PromodHighErrorRate", "PromodHookErrors", "PromodOutboxDeadLetters", "PromodDecideLatencyHigh",
                 "PromodLMDBMapFilling", "PromodLMDBMapFull", "PromodDown"):
        assert want in alerts, "alert %s missing" % want


def check_promtool_test_rules(ctx):
    out = promtool("test", "rules", RULE_TESTS)
    assert "SUCCESS" in out, out
    # every alert has a unit test
    tests = yaml.safe_load(open(RULE_TESTS))
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in rules_doc()["groups"] for r in g["rules"] if "alert" in r}
    assert alerts <= tested, "alerts without a unit test: %s" % sorted(alerts - tested)


def check_dashboard_shape(ctx):
    d = json.load(open(DASHBOARD))
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in d["__inputs"])
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert d["uid"] and d["title"]
    queries = 0
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], "panel %r has no query" % p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            queries += 1
    assert queries >= 15, queries


def check_dashboard_promql_parses(ctx):
    # each query as a recording rule: promtool parses it as PromQL
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, (title, expr) in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            m = re.match(r"label_values\((\w+),\s*(\w+)\)$", expr)
            assert m, expr
            expr = m.group(1)
        expr = expr.replace("$instance", ".*")
        rules["groups"][0]["rules"].append({"record": "dashboard:q%d" % i, "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f)
    try:
        promtool("check", "rules", f.name)
    finally:
        os.unlink(f.name)


def check_names_exist(ctx):
    scrape = ctx["scrape"]
    exported = set()
    for line in scrape.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            exported.add(m.group(1))
            if m.group(2) == "histogram":
                exported.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    recorded = {r["record"] for g in rules_doc()["groups"] for r in g["rules"] if "record" in r}
    used = {}
    for g in rules_doc()["groups"]:
        for r in g["rules"]:
            for n in NAME.findall(r["expr"]):
                used.setdefault(n, "rule %s" % (r.get("record") or r.get("alert")))
    for title, expr in dashboard_exprs():
        for n in NAME.findall(expr):
            used.setdefault(n, "panel %r" % title)
    missing = []
    for n, where in sorted(used.items()):
        if ":" in n:
            if n not in recorded:
                missing.append("%s (%s): no recording rule" % (n, where))
        elif n not in exported:
            missing.append("%s (%s): not in a live /metrics scrape" % (n, where))
    assert not missing, "\n".join(missing)
    assert len(used) >= 15, sorted(used)
    # and the rules' recorded names are all used somewhere (no dead rules)
    text = open(RULES).read() + open(DASHBOARD).read()
    for r in recorded:
        assert text.count(r) >= 2, "recording rule %s is never used" % r


def check_scrape_lints(ctx):
    promtool("check", "metrics", stdin=ctx["scrape"])


CHECKS = [check_promtool_config, check_promtool_rules, check_promtool_test_rules, check_dashboard_shape,
          check_dashboard_promql_parses, check_names_exist, check_scrape_lints]


def live_scrape(binary, tmp):
    """Start promod, make it do some of everything, return GET /metrics."""
    shutil.copytree(os.path.join(ROOT, "plugins"), os.path.join(tmp, "plugins"))
    shutil.copytree(os.path.join(ROOT, "rules"), os.path.join(tmp, "rules"))
    with open(os.path.join(tmp, "rules", "broken-hook.lua"), "w") as f:
        f.write('return { id = "broken-hook", channels = { "web" },\n'
                '  variants = { { id = "A", content = { h = "x" } } },\n'
                '  eligible = function(p, ctx) error("always") end }\n')
    cfg = os.path.join(tmp, "promod.lua")
    with open(cfg, "w") as f:
        f.write('return { listen = "127.0.0.1:0", data_dir = "%s/data", rules_dir = "%s/rules",\n'
                '  plugins_dir = "%s/plugins", threads = 2, log_level = "warn" }\n' % (tmp, tmp, tmp))
    portfile = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "server.log"), "w")
    proc = subprocess.Popen([binary, "serve", "-c", cfg, "--port-file", portfile], stdout=log, stderr=log)
    try:
        deadline = time.time() + 30
        while not (os.path.exists(portfile) and open(portfile).read().strip()):
            assert proc.poll() is None and time.time() < deadline, "promod did not start"
            time.sleep(0.05)
        base = "http://127.0.0.1:%s" % open(portfile).read().strip()

        def call(path, body=None):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
            for _ in range(300):
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.read().decode()
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError("no answer from " + path)

        call("/healthz")
        call("/api/v1/decide", {"customer_id": "c1", "channel": "web", "explain": True})
        call("/api/v1/events", {"type": "impression", "customer_id": "c1", "campaign_id": "welcome",
                                "variant": "A", "channel": "web"})
        return call("/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "promod"))
    a = ap.parse_args()
    passed = failed = 0
    tmp = tempfile.mkdtemp(prefix="promod-kit-")
    ctx = {}
    try:
        ctx["scrape"] = live_scrape(os.path.abspath(a.bin), tmp)
        assert 'promod_hook_errors_total{campaign="broken-hook"' in ctx["scrape"], "no hook error was counted"
    except Exception:
        traceback.print_exc()
        print("deploy: 0 passed, 1 failed")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for check in CHECKS:
        try:
            check(ctx)
            passed += 1
            print("PASS " + check.__name__, flush=True)
        except Exception:
            failed += 1
            print("FAIL " + check.__name__, flush=True)
            traceback.print_exc()
    print("deploy: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
