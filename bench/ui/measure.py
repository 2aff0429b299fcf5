#!/usr/bin/env python3
"""Browser half of bench/ui.sh: time from navigation to a log's last line being visible.

    measure.py --base URL --page LABEL=PATH [--page LABEL=PATH ...] [options]

One headless Chromium session (chromedriver, Selenium) for all pages given. For each
page, --runs fresh loads (about:blank in between) after one uncounted warm-up load of
the first page (fills the HTTP cache with the UI's scripts and styles, as for a
returning user). Each load:

  1. t0 = wall clock, driver.get(URL) with pageLoadStrategy "none" (returns at once);
  2. bench/ui/watch.js, installed with CDP Page.addScriptToEvaluateOnNewDocument, runs
     in the new document before its own scripts and checks every 10 ms whether
     --marker is visible (see there), scrolling to the end while it is not if --scroll
     end; it stamps the start of the frame after the first check that sees it
     (performance.now() since navigation start, and as epoch ms);
  3. the driver polls that stamp every --poll-ms (10 ms) and, once set, reads the JS
     heap (CDP Performance.getMetrics JSHeapUsedSize) and the biggest renderer
     process's VmRSS;
  4. responsiveness: 10 requestAnimationFrame round trips; scroll to the top until
     --first is visible, back to the end until --marker is; 10 more round trips;
  5. CDP HeapProfiler.collectGarbage, then the JS heap again and the DOM nodes
     (Performance.getMetrics Nodes: the renderer's, once old documents are collected).

Reported time = the in-page stamp (epoch) - t0: from driver.get() to the frame that
paints the marker; granularity the in-page check's 10 ms plus up to one frame (~16.7 ms
at 60 Hz). Also nav_to_visible_ms (from the browser's navigation start) and seen_ms
(when the driver's poll saw it: adds up to --poll-ms plus a round trip).

Before the loads, with --signin-user, signs in through /signin (fills and submits the
form, whose hidden csrf input goes back as it came) and, with --check-status, fetches
each page once from inside the browser: a 404 is reported as <label>_status=missing and
the page is not measured.

Output: key=value lines on stdout (progress on stderr), per page LABEL:
  LABEL_status          ok | missing (HTTP 404) | http-NNN | timeout | error
  LABEL_get_to_visible_ms, LABEL_nav_to_visible_ms, LABEL_seen_ms, LABEL_heap_mb,
  LABEL_heap_gc_mb, LABEL_nodes, LABEL_renderer_rss_mb, LABEL_raf_max_ms,
  LABEL_top_ms, LABEL_end_ms, LABEL_scroll_moves, LABEL_search_ms and
  LABEL_check_ms (watch.js's own time until the stamp, see there): the median over
  the runs; each also as KEY_all=comma-separated samples ("-" where a run did not get
  that far)
Exit status 0 when every page was either measured, missing or timed out; 1 on errors.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

HERE = Path(__file__).resolve().parent


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def out(key, value):
    print("%s=%s" % (key, value), flush=True)


def make_driver(args):
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--window-size=%s" % args.window,
        "--user-data-dir=%s" % args.profile,
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=BackForwardCache,Translate,OptimizationHints,MediaRouter",
        "--password-store=basic",
    ):
        opts.add_argument(a)
    opts.page_load_strategy = "none"
    service = Service(executable_path=args.chromedriver, log_output=args.driver_log)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_script_timeout(args.timeout + 60)
    cfg = {"marker": args.marker, "first": args.first, "scroll": args.scroll}
    src = "const CFG = %s;\n%s" % (json.dumps(cfg), (HERE / "watch.js").read_text())
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": src})
    driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "timeTicks"})
    return driver, service


def js(driver, script, *a):
    """execute_script, retried while a navigation replaces the document."""
    for _ in range(500):
        try:
            return driver.execute_script(script, *a)
        except WebDriverException as e:
            if "unexpected alert" in str(e).lower():
                raise
            time.sleep(0.01)
    return driver.execute_script(script, *a)


def blank(driver):
    driver.get("about:blank")
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if driver.execute_script("return location.href") == "about:blank":
                return
        except WebDriverException:
            pass
        time.sleep(0.01)
    raise RuntimeError("about:blank did not load within 30 s")


def descendants(pid):
    """pid and every process under it (from /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children.get(p, []))
    return seen


def renderer_rss_mb(service):
    """VmRSS of the biggest renderer process of this browser, MiB."""
    best = 0
    for p in descendants(service.process.pid):
        try:
            cmd = open("/proc/%d/cmdline" % p, "rb").read()
            if b"--type=renderer" not in cmd:
                continue
            for line in open("/proc/%d/status" % p):
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best / 1024


def metrics(driver):
    m = driver.execute_cdp_cmd("Performance.getMetrics", {})
    return {x["name"]: x["value"] for x in m["metrics"]}


def signin(driver, args):
    base = args.base.rstrip("/")
    driver.get(base + "/signin")
    wait = WebDriverWait(driver, 30)
    user = wait.until(EC.presence_of_element_located((By.ID, "username")))
    wait.until(EC.presence_of_element_located((By.ID, "password")))
    user.send_keys(args.signin_user)
    driver.find_element(By.ID, "password").send_keys(os.environ[args.signin_password_env])
    driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button[type=submit]").click()
    wait.until(lambda d: "/signin" not in d.execute_script("return location.pathname"))
    names = [c["name"] for c in driver.get_cookies()]
    log("signed in as %s (cookies: %s)" % (args.signin_user, ", ".join(names)))


def http_status(driver, url):
    """Status of GET url from inside the page (with its cookies), body not read."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {redirect: 'manual', cache: 'no-store'})
          .then(r => { const s = r.type === 'opaqueredirect' ? 'redirect' : r.status;
                       if (r.body) r.body.cancel(); done(String(s)); })
          .catch(e => done('error: ' + e));
        """,
        url,
    )


def one_load(driver, service, url, args, shot=None):
    """One fresh load; a dict of results, or None on timeout. shot: a PNG of the
    viewport at the end (scrolled back to the end: the marker in view)."""
    blank(driver)
    t0 = time.time()
    driver.get(url)
    deadline = t0 + args.timeout
    state = None
    while True:
        state = js(
            driver,
            "const b = window.__uiBench; return b && location.href !== 'about:blank' ? "
            "[b.visibleAt, b.visibleEpoch, b.scrollMoves, b.searchMs, b.checkMs] : null",
        )
        if state and state[0] is not None:
            break
        if time.time() > deadline:
            return None
        time.sleep(args.poll_ms / 1000)
    seen = time.time()
    m = metrics(driver)
    rss = renderer_rss_mb(service)
    r = {
        "get_to_visible_ms": state[1] - t0 * 1000,
        "nav_to_visible_ms": state[0],
        "seen_ms": (seen - t0) * 1000,
        "heap_mb": m.get("JSHeapUsedSize", 0) / 1048576,
        "renderer_rss_mb": rss,
        "scroll_moves": state[2],
        "search_ms": state[3],
        "check_ms": state[4],
    }
    limit = args.scroll_timeout * 1000
    raf = js(driver, "return window.__uiBench.rafRoundTrips(10)")
    top = js(driver, "return window.__uiBench.goTo('top', arguments[0], arguments[1])", args.first, limit)
    end = js(driver, "return window.__uiBench.goTo('end', arguments[0], arguments[1])", args.marker, limit)
    raf += js(driver, "return window.__uiBench.rafRoundTrips(10)")
    r["raf_max_ms"] = max(raf)
    r["top_ms"] = top["ms"]
    r["end_ms"] = end["ms"]
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    m = metrics(driver)
    r["heap_gc_mb"] = m.get("JSHeapUsedSize", 0) / 1048576
    r["nodes"] = m.get("Nodes", 0)  # the renderer's, old documents collected
    if shot:
        driver.save_screenshot(shot)
    return r


KEYS = [
    "get_to_visible_ms", "nav_to_visible_ms", "seen_ms", "heap_mb", "heap_gc_mb", "nodes",
    "renderer_rss_mb", "raf_max_ms", "top_ms", "end_ms", "scroll_moves", "search_ms", "check_ms",
]


def fmt(v):
    if v is None:
        return "-"
    return ("%.1f" % v) if isinstance(v, float) else str(v)


INTEGRAL = ("nodes", "scroll_moves")


def report(label, runs):
    for k in KEYS:
        vals = [r[k] for r in runs]
        have = [v for v in vals if v is not None]
        # a run that never got there counts as infinitely slow for the median
        if len(have) < len(vals) and k in ("top_ms", "end_ms"):
            med = None if len(have) <= len(vals) // 2 else statistics.median(have + [float("inf")] * (len(vals) - len(have)))
        else:
            med = statistics.median(have) if have else None
        if k in INTEGRAL and med is not None:
            med = int(round(med))
        out("%s_%s" % (label, k), fmt(med))
        out("%s_%s_all" % (label, k), ",".join(fmt(v) for v in vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--page", action="append", required=True, help="LABEL=PATH (may hold #fragment)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--marker", default="LAST-LINE-MARKER")
    ap.add_argument("--first", required=True, help="text of the log's first line")
    ap.add_argument("--scroll", choices=["end", "none"], default="end")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per load")
    ap.add_argument("--scroll-timeout", type=float, default=10, help="seconds per scroll check")
    ap.add_argument("--poll-ms", type=float, default=10)
    ap.add_argument("--window", default="1280,900")
    ap.add_argument("--signin-user")
    ap.add_argument("--signin-password-env", default="SLIPWAY_PASSWORD")
    ap.add_argument("--check-status", action="store_true")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--profile", required=True, help="Chromium --user-data-dir")
    ap.add_argument("--driver-log", default=os.devnull)
    ap.add_argument("--shots", help="directory for a screenshot of each page's first run, at its end")
    args = ap.parse_args()

    pages = []
    for p in args.page:
        label, _, path = p.partition("=")
        pages.append((label, args.base.rstrip("/") + path))
    driver, service = make_driver(args)
    failed = False
    try:
        out("chromium_version", driver.capabilities.get("browserVersion", "?"))
        if args.signin_user:
            signin(driver, args)
        out("viewport", driver.execute_script("return innerWidth + 'x' + innerHeight"))
        measurable = []
        for label, url in pages:
            if args.check_status:
                s = http_status(driver, url)
                log("%s: GET %s -> %s" % (label, url, s))
                if s != "200":
                    out(label + "_status", "missing" if s == "404" else "http-" + s)
                    continue
            measurable.append((label, url))
        if measurable and not args.no_warmup:
            label, url = measurable[0]
            log("warm-up load of %s (not counted)" % label)
            if one_load(driver, service, url, args) is None:
                log("  warm-up timed out after %.0f s" % args.timeout)
        for label, url in measurable:
            runs = []
            status = "ok"
            for i in range(args.runs):
                try:
                    shot = os.path.join(args.shots, label + ".png") if args.shots and i == 0 else None
                    r = one_load(driver, service, url, args, shot)
                except WebDriverException as e:
                    log("%s run %d: browser error: %s" % (label, i + 1, str(e).splitlines()[0]))
                    status, failed = "error", True
                    break
                if r is None:
                    log("%s run %d: marker not visible within %.0f s" % (label, i + 1, args.timeout))
                    status = "timeout"
                    break
                log("%s run %d: visible %.0f ms after driver.get (nav start +%.0f, driver saw it at %.0f), "
                    "heap %.1f MiB, %d nodes, renderer %.0f MiB, scroll moves %d, rAF max %.1f ms, "
                    "top %s ms, end %s ms"
                    % (label, i + 1, r["get_to_visible_ms"], r["nav_to_visible_ms"], r["seen_ms"], r["heap_mb"],
                       r["nodes"], r["renderer_rss_mb"], r["scroll_moves"], r["raf_max_ms"],
                       fmt(r["top_ms"]), fmt(r["end_ms"])))
                runs.append(r)
            out(label + "_status", status)
            if status == "timeout":
                out(label + "_timeout_s", "%.0f" % args.timeout)
            if runs:
                out(label + "_runs", len(runs))
                report(label, runs)
    finally:
        try:
            driver.quit()
        except WebDriverException:
            pass
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
