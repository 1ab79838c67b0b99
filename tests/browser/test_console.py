#!/usr/bin/python3
"""test_console.py — the web console in a real headless browser.

Starts the built promod on a free loopback port with fixture data (the
demo profiles plus a hostile one, the repository's campaigns plus a
hostile campaign, one whose hook fails and one that does not load, events
over two weeks, dead letters from a webhook receiver that refuses
everything) and drives
Debian's chromium through chromedriver (python3-selenium):

  - every page loads without console errors or CSP violations; the rules
    page shows the broken file's error at its line;
  - the dashboard's numbers equal the API's;
  - the lifecycle buttons change the campaign's state, and a refused one
    shows the server's 409 reason;
  - the editor shows a syntax error at its line; a save makes a version,
    the versions tab shows the diff and rolls back;
  - simulate shows the explain of a customer for the edited, unsaved script;
  - a marketer key does not see admin actions (dead-letter redrive); an
    admin key does and can use them; a decide key is turned away;
  - hostile campaign content and profile values render as text, never as
    markup; the API key never appears in a URL;
  - the experiment page shows the sample-ratio mismatch first, and the
    API's exposures, conversions, rates and lift intervals; its winner
    button concludes the experiment; the segments page shows the API's
    sizes and first members; hostile segment and experiment names are text;
  - the console's code never parses HTML strings (static check).

It writes a screenshot of each page into screenshots/ in its temporary
directory (kept, its path printed at the end); with --shots DIR into DIR
instead (`--shots docs/screenshots` refreshes the copies the README and
docs/console.md show).  A plain run leaves the tree as it found it.  Prints one line per check and "browser: N passed, M
failed"; exits 1 on any failure.

  /usr/bin/python3 tests/browser/test_console.py [--bin build/promod] [--shots DIR]
"""

import argparse
import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADMIN, MARKETER, DECIDE = "admin-key-browser", "marketer-key-browser", "decide-key-browser"
WAIT = 30  # seconds: generous, the machine is shared

HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>"
HOSTILE_PROFILE = "<img src=x onerror=window.__pwned=3>"
HOSTILE_SEGMENT = "<img src=x onerror=window.__pwned=6>"
HOSTILE_EXPERIMENT = "<svg onload=window.__pwned=7><b>exp</b>"

# a segment file (gold members) whose name is markup
GOLD_SEGMENT = """return {
  name = "%s",
  conditions = { tier = "gold" },
}
""" % HOSTILE_SEGMENT

# the campaign the fixture experiment splits: the only one on the "app"
# channel's "exp_slot" placement, so every decide there is an exposure
EXP_CAMPAIGN = """return {
  id = "exp-banner",
  name = "Experiment banner",
  channels = { "app" },
  placements = { "exp_slot" },
  priority = 10,
  variants = {
    { id = "A", weight = 50, content = { headline = "A headline" } },
    { id = "B", weight = 50, content = { headline = "B headline" } },
  },
  eligible = function(p, ctx) return true end,
}
"""

HOSTILE_CAMPAIGN = """return {
  id = "hostile",
  name = "%s",
  channels = { "web" },
  priority = 5,
  variants = {
    { id = "A", weight = 1, content = {
        headline = "<script>window.__pwned=2</script>",
        body_raw = "<img src=x onerror=window.__pwned=4>",
        greeting = "Hi {{first_name}}" } },
  },
  eligible = function(p, ctx) return true end,
}
""" % HOSTILE_NAME

FLAKY_CAMPAIGN = """return {
  id = "flaky",
  name = "A campaign whose hook fails for bronze customers",
  channels = { "web" },
  priority = 1,
  variants = { { id = "A", weight = 1, content = { headline = "flaky" } } },
  eligible = function(p, ctx)
    if p.tier == "bronze" then error("bronze customers break this hook") end
    return false, "not bronze"
  end,
}
"""

WEBHOOK_CAMPAIGN = """return {
  id = "crm-sync",
  name = "CRM sync for platinum customers",
  status = "draft",
  channels = { "webhook" },
  variants = { { id = "A", weight = 1, content = { headline = "Platinum news for {{first_name|you}}" } } },
  eligible = function(p, ctx) return p.tier == "platinum" end,
}
"""

BROKEN_CAMPAIGN = """return {
  id = "broken",
  channels = { "web" },
  priority = "high",
  variants = { { id = "A", content = { headline = "never served" } } },
  eligible = function(p, ctx) return true end,
}
"""

LC_SCRIPT = """return {
  id = "lc-demo",
  name = "Lifecycle demo",
  channels = { "web" },
  priority = 20,
  variants = {
    { id = "A", weight = 50, content = { headline = "Hello {{first_name|there}}" } },
    { id = "B", weight = 50, content = { headline = "Welcome back" } },
  },
  eligible = function(p, ctx) return true end,
}
"""


class Refuser(http.server.BaseHTTPRequestHandler):
    """The webhook's far end: refuses every message (4xx: dead at once)."""

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(400)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no")

    def log_message(self, *a):
        pass


class Server:
    def __init__(self, binary, tmp):
        self.tmp = tmp
        self.binary = binary
        self.proc = None
        self.port = None
        self.receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuser)
        threading.Thread(target=self.receiver.serve_forever, daemon=True).start()

    def prepare(self):
        t = self.tmp
        shutil.copytree(os.path.join(ROOT, "rules"), os.path.join(t, "rules"))
        shutil.copytree(os.path.join(ROOT, "plugins"), os.path.join(t, "plugins"))
        for name, src in (("hostile.lua", HOSTILE_CAMPAIGN), ("flaky.lua", FLAKY_CAMPAIGN),
                          ("crm-sync.lua", WEBHOOK_CAMPAIGN), ("broken.lua", BROKEN_CAMPAIGN),
                          ("exp-banner.lua", EXP_CAMPAIGN)):
            with open(os.path.join(t, "rules", name), "w") as f:
                f.write(src)
        os.makedirs(os.path.join(t, "segments"))
        with open(os.path.join(t, "segments", "gold.lua"), "w") as f:
            f.write(GOLD_SEGMENT)
        with open(os.path.join(t, "promod.lua"), "w") as f:
            f.write("""return {
  listen = "127.0.0.1:0", data_dir = "data", rules_dir = "rules",
  plugins_dir = "plugins", segments_dir = "segments", web_dir = "%(web)s", threads = 2, log_level = "warn",
  reload_debounce_ms = 50,
  api_keys = {
    { id = "ops", key = "%(admin)s", role = "admin" },
    { id = "ann", key = "%(marketer)s", role = "marketer" },
    { id = "site", key = "%(decide)s", role = "decide" },
  },
  channels = { webhook = { url = "http://127.0.0.1:%(rport)d/hook", max_attempts = 1 } },
}
""" % {"t": t, "web": os.path.join(ROOT, "web"), "admin": ADMIN, "marketer": MARKETER,
       "decide": DECIDE, "rport": self.receiver.server_address[1]})
        profiles = os.path.join(t, "profiles.ndjson")
        shutil.copy(os.path.join(ROOT, "scripts", "demo", "profiles.ndjson"), profiles)
        with open(profiles, "a") as f:
            f.write(json.dumps({"id": "evil", "first_name": HOSTILE_PROFILE, "tier": "gold", "country": "FR",
                                "ltv": 900, "note": "<script>window.__pwned=5</script>"}) + "\n")
        subprocess.run([self.binary, "import", "profiles", profiles, "-c", os.path.join(t, "promod.lua")],
                       check=True, stdout=subprocess.DEVNULL, cwd=t)

    def start(self):
        portfile = os.path.join(self.tmp, "port")
        self.log = open(os.path.join(self.tmp, "server.log"), "w")
        # run in the temp tree with relative directories, so that files show
        # as "rules/x.lua" (as on a real install) in the pages and screenshots
        self.proc = subprocess.Popen([self.binary, "serve", "-c", os.path.join(self.tmp, "promod.lua"),
                                      "--port-file", portfile], stdout=self.log, stderr=self.log, cwd=self.tmp)
        deadline = time.time() + WAIT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("promod exited; see " + self.log.name)
            if os.path.exists(portfile):
                with open(portfile) as f:
                    txt = f.read().strip()
                if txt:
                    self.port = int(txt)
                    try:
                        self.call("GET", "/healthz")
                        return
                    except OSError:
                        pass
            time.sleep(0.05)
        raise RuntimeError("promod did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.receiver.shutdown()

    def call(self, method, path, body=None, key=ADMIN, raw=False, headers=None):
        data = None
        h = dict(headers or {})
        if key:
            h["Authorization"] = "Bearer " + key
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=data, method=method,
                                     headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                payload = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            payload = e.read()
            status = e.code
        if raw:
            return status, payload.decode()
        return status, (json.loads(payload) if payload else None)


def wait_for(what, fn, timeout=WAIT):
    """Poll fn until it returns a truthy value; that value, or AssertionError."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # the page may be re-rendering
            last = e
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


class Console:
    def __init__(self, srv, shots):
        self.srv = srv
        self.shots = shots
        self.profile = tempfile.mkdtemp(prefix="promod-chromium-")
        o = Options()
        o.binary_location = "/usr/bin/chromium"
        for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1360,1000", "--user-data-dir=" + self.profile):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
        self.d.set_page_load_timeout(WAIT)
        self.base = "http://127.0.0.1:%d/ui/" % srv.port
        self.logs = []

    def quit(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- helpers
    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def el(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def els(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def wait_css(self, css, timeout=WAIT):
        return wait_for(css, lambda: self.els(css) and self.els(css)[0], timeout)

    def wait_text(self, css, text, timeout=WAIT):
        return wait_for("%r in %s" % (text, css),
                        lambda: any(text in e.text for e in self.els(css)), timeout)

    def console_errors(self, allow=()):
        """Browser log entries since the last call that are errors or CSP reports."""
        bad = []
        for e in self.d.get_log("browser"):
            self.logs.append(e)
            msg = e.get("message", "")
            if any(a in msg for a in allow):
                continue
            if e.get("level") == "SEVERE" or "Content Security Policy" in msg or "Refused to" in msg:
                bad.append(msg)
        return bad

    def go(self, hash_):
        self.d.get(self.base + "#/" + hash_)
        self.wait_css("#view[data-page]")

    def sign_in(self, key):
        self.d.get(self.base)
        box = self.wait_css("#api-key")
        box.send_keys(key)
        self.el("form.signin button[type=submit]").click()

    def sign_out(self):
        self.el("#who button").click()
        self.wait_css("#api-key")

    def shot(self, name, height=None):
        """A screenshot of the page from its top, `height` CSS pixels tall
        (default: the window), however long the page is."""
        if not self.shots:
            return
        self.js("window.scrollTo(0, 0)")
        size = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        h = min(size["height"], height or 1000)
        data = self.d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": h, "scale": 1}})
        with open(os.path.join(self.shots, name + ".png"), "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def tile(self, key):
        e = self.el('[data-kpi="%s"]' % key)
        return e.get_attribute("data-value"), e.find_element(By.CSS_SELECTOR, ".tile-value").text


# ------------------------------------------------------------------------
# fixture data through the API

def seed(srv):
    now = int(time.time())
    events = []
    for d in range(13, -1, -1):
        ts = now - d * 86400
        for i in range(30 + 3 * (13 - d)):
            cust = "c%08d" % (i % 500)
            v = "A" if i % 2 else "B"
            events.append({"type": "impression", "customer_id": cust, "campaign_id": "spring-sale", "variant": v,
                           "channel": "web", "ts": ts - i})
            if i % (5 if v == "A" else 8) == 0:
                events.append({"type": "click", "customer_id": cust, "campaign_id": "spring-sale", "variant": v,
                               "channel": "web", "ts": ts - i + 1})
            if i % (15 if v == "A" else 24) == 0:
                events.append({"type": "conversion", "customer_id": cust, "campaign_id": "spring-sale",
                               "variant": v, "channel": "web", "revenue": 20 + i, "ts": ts - i + 2})
            if i % 3 == 0:
                events.append({"type": "impression", "customer_id": cust, "campaign_id": "welcome", "variant": "A",
                               "channel": "app", "ts": ts - i})
    body = "\n".join(json.dumps(e) for e in events)
    st, r = srv.call("POST", "/api/v1/events", body, headers={"Content-Type": "application/x-ndjson"})
    assert st == 200 and r["rejected"] == 0, (st, r)
    decide_burst(srv, 60)
    st, r = srv.call("POST", "/api/v1/campaigns/crm-sync/launch")
    assert st == 200, (st, r)
    wait_for("dead letters", lambda: srv.call("GET", "/api/v1/outbox")[1]["dead"] > 0)
    seed_experiment(srv)


EXP_ID = "exp-headline"
EXP_CUSTOMERS = 240


def exp_def(weights):
    return {"name": HOSTILE_EXPERIMENT, "campaign_id": "exp-banner",
            "variants": [{"id": "A", "weight": weights[0]}, {"id": "B", "weight": weights[1]}], "min_sample": 10}


def seed_experiment(srv):
    """A running experiment with exposures and conversions whose weights
    then change from 50/50 to 90/10: the exposures no longer match the
    weights, a sample-ratio mismatch the results must report."""
    st, r = srv.call("POST", "/api/v1/experiments", dict(exp_def([0.5, 0.5]), id=EXP_ID))
    assert st == 201, (st, r)
    st, r = srv.call("POST", "/api/v1/experiments/%s/start" % EXP_ID)
    assert st == 200 and r["status"] == "running", (st, r)
    for i in range(EXP_CUSTOMERS):
        st, r = srv.call("POST", "/api/v1/decide", {"customer_id": "c%08d" % i, "channel": "app",
                                                     "placement": "exp_slot"}, key=DECIDE)
        assert st == 200, (st, r)
    wait_for("exposures recorded", lambda: srv.call("GET", "/api/v1/experiments/%s/results" % EXP_ID)[1]
             ["exposures"] == EXP_CUSTOMERS)
    events = [{"type": "conversion", "customer_id": "c%08d" % i, "revenue": 10 + i % 7}
              for i in range(0, EXP_CUSTOMERS, 3)]
    st, r = srv.call("POST", "/api/v1/events", "\n".join(json.dumps(e) for e in events),
                     headers={"Content-Type": "application/x-ndjson"})
    assert st == 200 and r["rejected"] == 0, (st, r)
    st, r = srv.call("PUT", "/api/v1/experiments/" + EXP_ID, exp_def([0.9, 0.1]))
    assert st == 200, (st, r)
    res = wait_for("conversions counted", lambda: (lambda r: r if r["variants"][0]["conversions"] else None)(
        srv.call("GET", "/api/v1/experiments/%s/results" % EXP_ID)[1]))
    assert res["srm"]["mismatch"], res["srm"]


def decide_burst(srv, n, start=0):
    for i in range(n):
        st, _ = srv.call("POST", "/api/v1/decide", {"customer_id": "c%08d" % ((start + i) % 500), "channel": "web",
                                                     "placement": "home_banner"}, key=DECIDE)
        assert st == 200


class Traffic:
    """Decides and events in the background, like a site would send."""

    def __init__(self, srv):
        self.srv = srv
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop_ev.is_set():
            decide_burst(self.srv, 5, i)
            self.srv.call("POST", "/api/v1/events", {"type": "impression", "customer_id": "c%08d" % (i % 500),
                                                     "campaign_id": "welcome", "variant": "A", "channel": "web"},
                          key=DECIDE)
            i += 5
            self.stop_ev.wait(0.05)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.t.join()


# ------------------------------------------------------------------------
# the checks

def check_static_safety(c, srv):
    """No HTML parsing anywhere in the console's own code."""
    banned = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new Function|"
                        r"setAttribute\(\s*[\"']on|\.on[a-z]+\s*=")
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "web", "js")):
        for fn in files:
            p = os.path.join(dirpath, fn)
            for n, line in enumerate(open(p, encoding="utf-8"), 1):
                if banned.search(line) and not line.lstrip().startswith("//"):
                    found.append("%s:%d: %s" % (os.path.relpath(p, ROOT), n, line.strip()))
    html = open(os.path.join(ROOT, "web", "index.html")).read()
    if re.search(r"<script(?![^>]*\bsrc=)", html) or re.search(r"\son[a-z]+=|style=", html):
        found.append("web/index.html has inline script, style or handlers")
    assert not found, "\n".join(found)


def check_sign_in_and_key_handling(c, srv):
    c.d.get(c.base)
    c.wait_css("#api-key")
    assert not c.console_errors(), "errors on the sign-in page"
    # a decide key is turned away with the reason
    c.sign_in(DECIDE)
    c.wait_text(".signin-msg", "decide role")
    assert c.js("return sessionStorage.getItem('promod.console.key')") is None
    # a wrong key is refused (the browser logs that 401 itself)
    c.el("#api-key").send_keys("not-a-key-at-all")
    c.el("form.signin button[type=submit]").click()
    c.wait_text(".signin-msg", "not accepted")
    c.console_errors(allow=("401",))
    c.sign_in(ADMIN)
    c.wait_css('#nav a[data-page="dashboard"]')
    assert c.js("return sessionStorage.getItem('promod.console.key')") == ADMIN
    assert c.js("return localStorage.length") == 0
    assert c.d.get_cookies() == []
    c.wait_css('[data-kpi="impressions_today"]')


def check_dashboard_equals_api(c, srv):
    c.go("dashboard")
    c.wait_css('[data-kpi="impressions_today"]')
    with Traffic(srv):
        # three polls with traffic running: live rates on the chart
        wait_for("three polls", lambda: int(c.el("#view").get_attribute("data-polls") or 0) >= 3, 60)
        c.wait_css("#chart-daily canvas")
        c.shot("dashboard", 1500)
    errs = c.console_errors()
    assert not errs, errs
    c.el("#dash-refresh").click()  # the 30-day views, after the traffic

    def same():
        _, d = srv.call("GET", "/api/v1/analytics/dashboard")
        _, o = srv.call("GET", "/api/v1/outbox")
        _, m = srv.call("GET", "/metrics", raw=True)
        want = {
            "impressions_today": d["today"]["impressions"], "clicks_today": d["today"]["clicks"],
            "conversions_today": d["today"]["conversions"], "revenue_today": d["today"]["revenue"],
            "outbox_queued": o["queued"],
            "hook_errors": sum(float(x.split()[-1]) for x in m.splitlines()
                               if x.startswith("promod_hook_errors_total{")),
        }
        decides = sum(float(x.split()[-1]) for x in m.splitlines()
                      if x.startswith('promod_http_requests_total{route="/api/v1/decide"'))
        got = {k: c.tile(k) for k in want}
        bad = {k: (got[k], want[k]) for k in want if float(got[k][0]) != float(want[k])}
        if bad:
            return None
        # the shown text is the same number, formatted
        for k in ("impressions_today", "clicks_today", "conversions_today", "outbox_queued", "hook_errors"):
            assert got[k][1].replace(",", "") == str(int(want[k])), (k, got[k], want[k])
        assert got["revenue_today"][1].replace(",", "") == "%.2f" % want["revenue_today"]
        sub = c.el('[data-kpi="decides_per_s"] .tile-sub').text
        if sub.replace(",", "") != "%d since start" % decides:
            return None
        # top campaigns and 30-day totals: the API's, in its order
        rows = [r.get_attribute("data-campaign") for r in c.els("#dash-top tbody tr[data-campaign]")]
        if rows != [x["campaign_id"] for x in d["top_campaigns"]]:
            return None
        _, full = srv.call("GET", "/api/v1/analytics/dashboard")
        shown = c.el('#dash-totals [data-total="impressions"]').text.replace(",", "")
        if shown != str(full["totals"]["impressions"]):
            return None
        return want

    want = wait_for("dashboard tiles equal to the API", same, 60)
    assert want["hook_errors"] > 0, "the flaky campaign should have counted hook errors"
    assert c.els("#chart-live canvas") and c.els("#chart-daily canvas")


def check_pages_load_clean(c, srv):
    pages = [
        ("campaigns", "#campaign-list tbody tr[data-campaign]", "campaigns"),
        ("campaigns/spring-sale", "#by-variant tbody tr", "campaign"),
        ("campaigns/spring-sale/script", "#script-editor", None),
        ("campaigns/spring-sale/versions", "#versions tbody tr", None),
        ("campaigns/spring-sale/audit", "#audit tbody tr", "audit"),
        ("outbox", "#dead-letters tbody tr[data-dead]", "outbox"),
        ("rules", "#rules-files tbody tr[data-file]", "rules"),
        ("dashboard", '[data-kpi="decides_per_s"]', None),
    ]
    for hash_, ready, shot in pages:
        c.go(hash_)
        c.wait_css(ready)
        if hash_ == "campaigns/spring-sale":
            c.wait_css("#campaign-metrics canvas")
        errs = c.console_errors()
        assert not errs, "%s: %s" % (hash_, errs)
        assert not c.els(".notice.error"), "%s shows an error: %s" % (hash_, c.el(".notice.error").text)
        if shot:
            c.shot(shot, 1400 if shot == "campaign" else None)
    # the rules page shows the broken file's error at its line
    c.go("rules")
    row = c.wait_css('#rules-files tr[data-file="rules/broken.lua"]')
    assert "rules/broken.lua:4:" in row.text and "priority" in row.text, row.text
    assert c.el('#rules-facts [data-errors]').get_attribute("data-errors") == "1"
    # filters: only active campaigns when "active" is chosen
    c.go("campaigns")
    c.wait_css("#campaign-list tbody tr[data-campaign]")
    c.el('.chip[data-status="active"]').click()
    wait_for("active filter", lambda: c.els('#campaign-list tbody tr[data-campaign]') and
             all(r.find_element(By.CSS_SELECTOR, ".badge").text == "active"
                 for r in c.els("#campaign-list tbody tr[data-campaign]")))
    # the nav follows the role: no page above it
    assert [a.get_attribute("data-page") for a in c.els("#nav a")] == ["dashboard", "campaigns", "experiments",
                                                                        "segments", "outbox", "rules"]


def status_of(srv, cid):
    return srv.call("GET", "/api/v1/campaigns/" + cid)[1]["status"]


def check_lifecycle_buttons(c, srv):
    st, r = srv.call("POST", "/api/v1/campaigns", {"id": "lc-demo", "name": "Lifecycle demo", "script": LC_SCRIPT})
    assert st == 201, (st, r)
    c.go("campaigns/lc-demo")
    c.wait_css("#camp-status")
    assert c.el("#camp-status").text == "draft"
    for action, want in (("submit", "pending_approval"), ("approve", "approved"), ("launch", "active"),
                         ("pause", "paused"), ("launch", "active")):
        c.el('#lifecycle button[data-action="%s"]' % action).click()
        wait_for("%s -> %s" % (action, want), lambda: c.el("#camp-status").text == want)
        assert status_of(srv, "lc-demo") == want
        c.wait_text("#action-result", "→ " + want)
    # a refused action shows the server's reason and changes nothing
    c.el('#lifecycle button[data-action="approve"]').click()
    c.wait_text("#action-result", "409 illegal_transition")
    assert "allowed:" in c.el("#action-result").text
    assert status_of(srv, "lc-demo") == "active"
    c.el('#lifecycle button[data-action="stop"]').click()
    wait_for("stopped", lambda: c.el("#camp-status").text == "stopped")
    assert status_of(srv, "lc-demo") == "stopped"
    errs = c.console_errors(allow=("409",))
    assert not errs, errs


def set_editor(c, text):
    c.js("const a = document.getElementById('script-editor'); a.value = arguments[0];"
         "a.dispatchEvent(new Event('input'));", text)


def check_editor_errors_save_versions(c, srv):
    c.go("campaigns/lc-demo/script")
    c.wait_css("#script-editor")
    broken = LC_SCRIPT.replace('  channels = { "web" },\n', '  channels = { "web" ]\n')
    assert broken != LC_SCRIPT
    line = broken.split("\n").index('  channels = { "web" ]') + 1
    set_editor(c, broken)
    c.el("#btn-validate").click()
    mark = c.wait_css('.gutter .ln.err')
    assert mark.get_attribute("data-line") == str(line), (mark.get_attribute("data-line"), line)
    c.wait_text("#script-errors", "line %d" % line)
    # the error link selects the line in the editor
    c.el("#script-errors li button").click()
    sel = c.js("const a = document.getElementById('script-editor');"
               "return a.value.slice(a.selectionStart, a.selectionEnd)")
    assert sel == '  channels = { "web" ]', sel
    c.shot("campaign-editor-error")
    # saving a broken script is refused the same way, nothing saved
    c.el("#btn-save").click()
    c.wait_text("#script-errors", "Not saved")
    assert srv.call("GET", "/api/v1/campaigns/lc-demo")[1]["version"] == 1
    # a fixed edit validates and saves as version 2
    edited = LC_SCRIPT.replace("priority = 20", "priority = 25")
    set_editor(c, edited)
    c.el("#btn-validate").click()
    c.wait_text("#script-errors", "Valid")
    assert not c.els(".gutter .ln.err")
    c.el("#btn-save").click()
    c.wait_text("#script-errors", "Saved as version 2")
    _, camp = srv.call("GET", "/api/v1/campaigns/lc-demo")
    assert camp["version"] == 2 and "priority = 25" in camp["script"], camp
    # versions: the diff of version 2, then a rollback to version 1
    c.go("campaigns/lc-demo/versions")
    c.wait_css("#version-diff")
    assert "+   priority = 25," in c.el("#version-diff").text and "-   priority = 20," in c.el("#version-diff").text
    c.shot("campaign-versions")
    c.el('#versions tr[data-version="1"] button').click()
    c.wait_css('[data-rollback="1"]').click()
    c.el('[data-confirm-rollback="1"]').click()
    c.wait_text(".notice.ok", "Rolled back")
    _, camp = srv.call("GET", "/api/v1/campaigns/lc-demo")
    assert camp["version"] == 3 and "priority = 20" in camp["script"], camp
    errs = c.console_errors(allow=("422",))
    assert not errs, errs


def check_simulate(c, srv):
    _, camp = srv.call("GET", "/api/v1/campaigns/spring-sale")
    saved = camp["script"]
    c.go("campaigns/spring-sale/script")
    c.wait_css("#script-editor")
    # an unsaved edit: the simulation must use it
    edited = saved.replace("return p.tier == \"gold\"", "return false, \"edited: nobody\" --")
    assert edited != saved
    set_editor(c, edited)
    c.el("#sim-customer").send_keys("evil")
    c.js("document.getElementById('sim-channel').value = 'web'")
    c.el("#sim-placement").send_keys("home_banner")
    c.js("document.getElementById('sim-context').value = arguments[0]", '{"country": "FR"}')
    c.el("#btn-simulate").click()
    c.wait_css("#sim-explain tbody tr")
    text = c.el("#sim-explain").text
    assert "spring-sale" in text and "edited: nobody" in text, text
    _, api = srv.call("POST", "/api/v1/rules/simulate", {"script": edited, "name": "spring-sale.lua",
                                                         "customer_id": "evil", "channel": "web",
                                                         "placement": "home_banner", "context": {"country": "FR"}})
    assert api["explain"][0]["reason"] == "edited: nobody", api
    # the saved script is untouched and still serves evil (gold, FR)
    assert srv.call("GET", "/api/v1/campaigns/spring-sale")[1]["script"] == saved
    # back to the saved text: an offer, with the explain the API gives
    set_editor(c, saved)
    c.el("#btn-simulate").click()
    c.wait_css('#sim-offers .offer[data-campaign="spring-sale"]')
    rows = c.els("#sim-explain tbody tr")
    assert "yes (variant" in rows[0].text, rows[0].text
    # the customer's hostile name is shown as text in the profile table
    assert HOSTILE_PROFILE in c.el("#sim-profile").text
    c.shot("campaign-simulate", 1700)
    errs = c.console_errors()
    assert not errs, errs


def check_campaign_tests(c, srv):
    _, camp = srv.call("GET", "/api/v1/campaigns/spring-sale")
    c.go("campaigns/spring-sale/script")
    c.wait_css("#tests-editor")
    tests = ('local c = campaign("spring-sale")\n'
             'test("fr gold", function() expect(c:eligible({ id = "a", tier = "gold" }, { country = "FR" })).to_be(true) end)\n'
             'test("wrong", function()\n  expect(c:score({ id = "a" }, {})).to_be(-1)\nend)\n')
    c.js("document.getElementById('tests-editor').value = arguments[0]", tests)
    c.el("#btn-run-tests").click()
    c.wait_css("#tests-result tbody tr")
    rows = c.els("#tests-result tbody tr")
    assert len(rows) == 2, [r.text for r in rows]
    assert rows[0].get_attribute("data-ok") == "true", rows[0].text
    assert rows[1].get_attribute("data-ok") == "false" and "_test.lua:4: expected -1, got 50" in rows[1].text, rows[1].text
    _, api = srv.call("POST", "/api/v1/rules/test", {"script": camp["script"], "name": "spring-sale.lua",
                                                     "tests": tests})
    assert api["passed"] == 1 and api["failed"] == 1, api
    errs = c.console_errors()
    assert not errs, errs


def check_hostile_content_is_text(c, srv):
    c.go("campaigns")
    c.wait_css('#campaign-list tr[data-campaign="hostile"]')
    assert HOSTILE_NAME in c.el('#campaign-list tr[data-campaign="hostile"]').text
    c.go("campaigns/hostile")
    c.wait_css("#camp-name")
    assert c.el("#camp-name").text == HOSTILE_NAME
    c.go("campaigns/hostile/script")
    c.wait_css("#script-editor")
    c.el("#sim-customer").send_keys("evil")
    c.el("#btn-simulate").click()
    offer = c.wait_css('#sim-offers .offer[data-campaign="hostile"]')
    fields = {e.get_attribute("data-field"): e.text for e in offer.find_elements(By.CSS_SELECTOR, "dd")}
    assert fields["headline"] == "<script>window.__pwned=2</script>", fields
    assert fields["body_raw"] == "<img src=x onerror=window.__pwned=4>", fields
    # a template value is HTML-escaped by the server, and then shown as that text
    assert fields["greeting"] == "Hi &lt;img src=x onerror=window.__pwned=3&gt;", fields
    c.go("campaigns/hostile/audit")
    c.wait_css("#audit tbody tr")
    for page in ("outbox", "dashboard"):
        c.go(page)
        c.wait_css(".tiles .tile")
    # nothing ran, nothing became markup
    assert c.js("return window.__pwned") is None
    assert c.js("return document.querySelectorAll('img').length") == 0
    assert c.js("return document.scripts.length") == 1
    # the key never went into a URL the browser requested
    urls = c.js("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
    assert not [u for u in urls if ADMIN in u or MARKETER in u], urls


def check_experiments(c, srv):
    """The list and one experiment: the API's numbers, the SRM warning above
    the results, the hostile name as text, and the winner button."""
    c.go("experiments")
    row = c.wait_css('#experiment-list tr[data-experiment="%s"]' % EXP_ID)
    assert HOSTILE_EXPERIMENT in row.text and "running" in row.text, row.text
    c.shot("experiments")
    c.go("experiments/" + EXP_ID)
    warn = c.wait_css("#srm-warning")
    c.wait_css("#exp-variants tbody tr[data-variant]")
    _, res = srv.call("GET", "/api/v1/experiments/%s/results" % EXP_ID)
    assert res["srm"]["mismatch"]
    srm_text = [w for w in res["warnings"] if "SAMPLE RATIO MISMATCH" in w]
    assert srm_text and srm_text[0] in warn.text, (warn.text, res["warnings"])
    # prominent: the first thing under the crumbs, above the name and the results
    first = c.js("const v = document.getElementById('view'); return v.children[1].id")
    assert first == "exp-srm", first
    assert c.el("#exp-name").text == HOSTILE_EXPERIMENT
    rows = {r.get_attribute("data-variant"): r for r in c.els("#exp-variants tbody tr[data-variant]")}
    assert sorted(rows) == sorted(v["id"] for v in res["variants"]), rows.keys()
    lifts = {x["variant"]: x for m in res["metrics"] if m["metric"] == res["primary_metric"]
             for x in m["comparisons"]}
    for v in res["variants"]:
        r = rows[v["id"]]
        assert int(r.get_attribute("data-exposures")) == v["exposures"], (v, r.get_attribute("data-exposures"))
        assert int(r.get_attribute("data-conversions")) == v["conversions"], v
        cells = [td.text for td in r.find_elements(By.CSS_SELECTOR, "td")]
        assert cells[2].replace(",", "") == str(v["exposures"]) and cells[3] == str(v["conversions"]), cells
        assert cells[4] == "%.2f%%" % (v["conversion_rate"] * 100), (cells, v)
        if v["id"] in lifts:  # the lift interval is the API's
            lf = lifts[v["id"]]["lift"]
            want = "%.2f%% (%.2f%% … %.2f%%)" % (lf["estimate"] * 100, lf["ci_low"] * 100, lf["ci_high"] * 100)
            assert cells[7] == want.replace("-0.00%", "0.00%") or cells[7] == want, (cells[7], want)
    assert sum(v["exposures"] for v in res["variants"]) == EXP_CUSTOMERS
    assert c.el('[data-kpi="exposures"]').get_attribute("data-value") == str(res["exposures"])
    assert len(c.els("#exp-results svg.interval-chart")) == 2
    errs = c.console_errors()
    assert not errs, errs
    c.shot("experiment", 1400)
    # declare B the winner: a confirmation first, then the state changes
    c.js("document.getElementById('winner-variant').value = 'B'")
    c.el("#btn-winner").click()
    c.wait_css("#btn-winner-confirm").click()
    wait_for("concluded", lambda: c.el("#exp-status").get_attribute("data-status") == "concluded")
    c.wait_text("#exp-result", "running → concluded")
    _, x = srv.call("GET", "/api/v1/experiments/" + EXP_ID)
    assert x["status"] == "concluded" and x["winner"] == "B", x
    assert c.el("#exp-winner-id").text == "B"
    # a second declaration is refused with the server's reason
    c.el("#btn-winner").click()
    c.wait_css("#btn-winner-confirm").click()
    c.wait_text("#exp-result", "409")
    errs = c.console_errors(allow=("409",))
    assert not errs, errs
    assert c.js("return window.__pwned") is None
    assert c.js("return document.querySelectorAll('#view img, #view b, #view svg:not(.interval-chart)').length") == 0


def check_segments(c, srv):
    """Sizes and members equal the API's; the hostile name is text."""
    _, lst = srv.call("GET", "/api/v1/segments")
    assert [x["id"] for x in lst["segments"]] == ["gold"], lst
    _, size = wait_for("segment built", lambda: (lambda r: r if r[1]["state"] == "ready" else None)(
        srv.call("GET", "/api/v1/segments/gold/size")))
    assert size["size"] > 20, size  # more members than the first page shows
    c.go("segments")
    row = c.wait_css('#segment-list tr[data-segment="gold"]')
    assert row.get_attribute("data-size") == str(size["size"]), (row.get_attribute("data-size"), size)
    assert HOSTILE_SEGMENT in row.text and str(size["size"]) in row.text.replace(",", ""), row.text
    c.shot("segments")
    c.go("segments/gold")
    c.wait_css("#segment-members li")
    _, m = srv.call("GET", "/api/v1/segments/gold/customers?limit=20")
    shown = [li.text for li in c.els("#segment-members li")]
    assert shown == m["customers"] and len(shown) == 20, (shown, m)
    assert c.el("#segment-name").text == HOSTILE_SEGMENT
    assert c.el("#segment-size").get_attribute("data-size") == str(size["size"])
    errs = c.console_errors()
    assert not errs, errs
    c.shot("segment")
    assert c.js("return window.__pwned") is None
    assert c.js("return document.querySelectorAll('#view img').length") == 0


def check_roles(c, srv):
    # admin: redrive controls, and they work
    c.go("outbox")
    c.wait_css("#dead-letters tbody tr[data-dead]")
    assert c.els("#btn-redrive-selected") and not c.els("#redrive-note")
    first = c.el("#dead-letters tbody tr[data-dead] input[type=checkbox]")
    first.click()
    c.el("#btn-redrive-selected").click()
    c.wait_text("#outbox-msg", "Redriven: 1")
    c.sign_out()
    # marketer: sees the queue and the letters, no admin action
    c.sign_in(MARKETER)
    c.wait_css('#nav a[data-page="dashboard"]')
    assert c.el(".who-id").get_attribute("data-role") == "marketer"
    c.go("outbox")
    c.wait_css("#dead-letters tbody tr[data-dead]")
    assert c.els("#redrive-note"), "the marketer is not told redrive needs admin"
    assert not c.els("#btn-redrive-selected") and not c.els("#btn-redrive-all")
    assert not c.els("#dead-letters input[type=checkbox]")
    c.shot("outbox-marketer")
    # and the server agrees: the marketer's key may not redrive
    st, r = srv.call("POST", "/api/v1/outbox/dead/redrive", {"all": True}, key=MARKETER)
    assert st == 403, (st, r)
    c.go("campaigns/spring-sale")
    c.wait_css("#lifecycle button")
    errs = c.console_errors()
    assert not errs, errs


CHECKS = [check_static_safety, check_sign_in_and_key_handling, check_dashboard_equals_api, check_pages_load_clean,
          check_lifecycle_buttons, check_editor_errors_save_versions, check_simulate, check_campaign_tests,
          check_hostile_content_is_text, check_experiments, check_segments, check_roles]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "promod"))
    ap.add_argument("--shots", default="", help="directory for the screenshots (default: screenshots/ in the "
                    "run's temp directory, kept and printed at the end)")
    a = ap.parse_args()
    passed = failed = 0
    tmp = tempfile.mkdtemp(prefix="promod-browser-")
    shots = os.path.abspath(a.shots) if a.shots else os.path.join(tmp, "screenshots")
    os.makedirs(shots, exist_ok=True)
    srv = Server(os.path.abspath(a.bin), tmp)
    c = None
    t0 = time.time()
    try:
        srv.prepare()
        srv.start()
        seed(srv)
        c = Console(srv, shots)
        for check in CHECKS:
            t = time.time()
            c.console_errors(allow=("",))  # what an earlier check left behind
            try:
                check(c, srv)
                passed += 1
                print("PASS %-40s %5.1f s" % (check.__name__, time.time() - t), flush=True)
            except Exception:
                failed += 1
                print("FAIL %-40s %5.1f s" % (check.__name__, time.time() - t), flush=True)
                traceback.print_exc()
                try:
                    c.d.save_screenshot(os.path.join(tmp, check.__name__ + ".png"))
                    print("     page: %s, screenshot %s/%s.png" % (c.d.current_url, tmp, check.__name__))
                except Exception:
                    pass
    except Exception:
        failed += 1
        traceback.print_exc()
    finally:
        if c:
            c.quit()
        srv.stop()
        if failed:
            print("server log and screenshots kept in " + tmp)
        else:  # keep only the screenshots (when they are in the temp dir)
            for name in os.listdir(tmp):
                p = os.path.join(tmp, name)
                if p == shots:
                    continue
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.remove(p)
            if not os.listdir(tmp):
                os.rmdir(tmp)
        print("screenshots: " + shots)
    print("browser: %d passed, %d failed (%.0f s)" % (passed, failed, time.time() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
