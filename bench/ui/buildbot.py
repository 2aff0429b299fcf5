#!/usr/bin/env python3
"""REST side of the Buildbot half of bench/ui.sh (standard library only).

    buildbot.py ready --url URL     exit 0 when the REST API answers and the worker is
                                    connected, 1 otherwise
    buildbot.py build --url URL [--timeout 600]
                                    force one build of builder "log" (JSON-RPC "force"
                                    on the force scheduler), wait for it to finish, and
                                    print key=value lines: bb_builderid, bb_build_number,
                                    bb_step_number, bb_log_slug, bb_log_lines,
                                    bb_build_seconds, bb_results, bb_marker_lines (lines
                                    that are exactly LAST-LINE-MARKER), bb_log_path (the web
                                    UI's route of the step's stdio log)
"""

import argparse
import json
import sys
import time
import urllib.request

BUILDER = "log"
STEP = "lines"


def api(url, path, body=None):
    req = urllib.request.Request(url.rstrip("/") + "/api/v2" + path, headers={"Accept": "application/json"})
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def ready(url):
    try:
        workers = api(url, "/workers")["workers"]
    except Exception:
        return False
    return any(w["name"] == "ui-w1" and w["connected_to"] for w in workers)


def build(url, timeout):
    (builder,) = [b for b in api(url, "/builders")["builders"] if b["name"] == BUILDER]
    bid = builder["builderid"]
    t0 = time.monotonic()
    r = api(url, "/forceschedulers/force",
            {"jsonrpc": "2.0", "id": 1, "method": "force", "params": {"builderid": bid, "reason": "bench"}})
    if "error" in r:
        raise SystemExit("force failed: %r" % (r["error"],))
    _bsid, brids = r["result"]
    (brid,) = brids.values()
    deadline = t0 + timeout
    while True:
        builds = api(url, "/buildrequests/%d/builds" % int(brid))["builds"]
        if builds and builds[0]["complete"]:
            b = builds[0]
            break
        if time.monotonic() > deadline:
            raise SystemExit("the build did not finish within %.0f s" % timeout)
        time.sleep(0.2)
    secs = time.monotonic() - t0
    (step,) = [s for s in api(url, "/builds/%d/steps" % b["buildid"])["steps"] if s["name"] == STEP]
    (slog,) = [x for x in api(url, "/steps/%d/logs" % step["stepid"])["logs"] if x["slug"] == "stdio"]
    with urllib.request.urlopen(url.rstrip("/") + "/api/v2/logs/%d/raw_inline" % slog["logid"], timeout=60) as r:
        marker = sum(1 for line in r.read().decode().splitlines() if line == "LAST-LINE-MARKER")
    print("bb_builderid=%d" % bid)
    print("bb_build_number=%d" % b["number"])
    print("bb_step_number=%d" % step["number"])
    print("bb_log_slug=%s" % slog["slug"])
    print("bb_log_lines=%d" % slog["num_lines"])
    print("bb_build_seconds=%.1f" % secs)
    print("bb_results=%s" % b["results"])
    print("bb_marker_lines=%d" % marker)
    print("bb_log_path=/#/builders/%d/builds/%d/steps/%d/logs/%s" % (bid, b["number"], step["number"], slog["slug"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["ready", "build"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    if a.cmd == "ready":
        return 0 if ready(a.url) else 1
    build(a.url, a.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
