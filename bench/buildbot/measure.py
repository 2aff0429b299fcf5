#!/usr/bin/env python3
"""Dispatch-latency and throughput client for a running Buildbot master.

Started by bench/buildbot/run.sh once the master (bench/buildbot/master.cfg) and
its two workers are up. Standard library only.

    measure.py ready  --url URL                  exit 0 when the REST API answers and
                                                 both workers are connected, 1 otherwise
    measure.py run    --url URL --master-pid PID [--worker-pids P,P] [--runs 30]
                      [--bulk 200] [--mode sse|poll] [--version V]

`run` prints one `key=value` line per result (and progress on stderr):

  buildbot_version                     as passed with --version
  buildbot_mode                        sse or poll (how client-side times were taken)
  buildbot_rss_idle_kb                 master VmRSS after start-up settled, before any build
  buildbot_warmup_step_start_ms        the one warm-up build (not in the percentiles)
  buildbot_step_start_{p50,p95}_ms     trigger -> the `true` step started, over --runs
  buildbot_finish_{p50,p95}_ms         trigger -> build finished, over --runs
  buildbot_prep_start_{p50,p95}_ms     trigger -> Buildbot's implicit worker_preparation
                                       step started (the build's first step in its API)
  buildbot_{step_start,finish}_{min,max}_ms
  buildbot_runs_workers                how the one-at-a-time runs were spread, worker:count
  buildbot_200_trigger_seconds         time to send all --bulk forces (sequential POSTs)
  buildbot_200_seconds                 first force sent -> last of the --bulk builds finished
  buildbot_200_builds_per_second
  buildbot_200_builds                  distinct builds run for the --bulk requests (== --bulk
                                       unless requests were collapsed)
  buildbot_200_workers                 worker:count for the --bulk builds
  buildbot_200_max_concurrent          most builds seen running at once
  buildbot_200_master_cpu_seconds      master utime+stime over the --bulk phase
  buildbot_200_workers_cpu_seconds     both workers' utime+stime over the --bulk phase
  buildbot_rss_after_kb                master VmRSS right after the --bulk builds
  buildbot_rss_hwm_kb                  master VmHWM (peak RSS) at the end

Times are client-side, time.monotonic(): Buildbot's own timestamps are whole seconds.
Percentiles are nearest-rank (p95 of 30 samples is the 29th smallest).

--mode sse (default) subscribes to the master's server-sent events (/sse) for new and
finished builds, started steps and completed buildsets, and stamps each event when its
line arrives. --mode poll instead polls the REST API every --poll-ms (default 5 ms) over
one keep-alive connection; it costs the master CPU and is there as a cross-check.
"""

import argparse
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse

BUILDER = "bench"
SCHEDULER = "force"
STEP = "true"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Api:
    """One keep-alive HTTP connection to the master's REST API."""

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None

    def _request(self, method, path, body=None):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if resp.will_close:
                self.conn.close()
                self.conn = None
            if resp.status >= 400:
                raise RuntimeError("%s %s -> HTTP %d: %s" % (method, path, resp.status, raw[:300]))
            return json.loads(raw)

    def get(self, path):
        return self._request("GET", "/api/v2" + path)

    def force(self, builderid, reason):
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "force",
            "params": {"builderid": builderid, "reason": reason},
        }
        r = self._request("POST", "/api/v2/forceschedulers/" + SCHEDULER, body)
        if "error" in r:
            raise RuntimeError("force failed: %r" % (r["error"],))
        bsid, brids = r["result"]
        (brid,) = brids.values()
        return bsid, int(brid)


class Tracker:
    """Client-side times of build/step/buildset events, keyed by ids."""

    def __init__(self):
        self.cond = threading.Condition()
        self.brid_build = {}  # buildrequestid -> buildid
        self.builds = {}  # buildid -> dict(new, prep, step, finished, workerid, results, brid)
        self.bs_complete = {}  # buildsetid -> time
        self.running = set()
        self.max_running = 0
        self.error = None

    def _b(self, buildid):
        return self.builds.setdefault(buildid, {})

    def build_seen(self, t, msg, finished):
        with self.cond:
            bid = msg["buildid"]
            b = self._b(bid)
            b.setdefault("new", t)
            b["brid"] = msg["buildrequestid"]
            b["workerid"] = msg["workerid"]
            self.brid_build[msg["buildrequestid"]] = bid
            if finished:
                b.setdefault("finished", t)
                b["results"] = msg["results"]
                self.running.discard(bid)
            elif "finished" not in b:
                self.running.add(bid)
                self.max_running = max(self.max_running, len(self.running))
            self.cond.notify_all()

    def step_started(self, t, msg):
        with self.cond:
            b = self._b(msg["buildid"])
            key = "step" if msg["name"] == STEP else "prep" if msg["number"] == 0 else None
            if key:
                b.setdefault(key, t)
            self.cond.notify_all()

    def buildset_complete(self, t, bsid):
        with self.cond:
            self.bs_complete.setdefault(bsid, t)
            self.cond.notify_all()

    def fail(self, err):
        with self.cond:
            self.error = err
            self.cond.notify_all()

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.error:
                    raise RuntimeError("event stream failed: %s" % self.error)
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
                self.cond.wait(min(left, 1.0))


class SseListener(threading.Thread):
    """Reads the master's /sse stream and feeds the tracker."""

    PATHS = ["builds/*/new", "builds/*/finished", "steps/*/started", "buildsets/*/complete"]

    def __init__(self, url, tracker):
        super().__init__(daemon=True)
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.tracker = tracker
        self.ready = threading.Event()

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported to the waiting main thread
            self.tracker.fail(repr(e))
            self.ready.set()

    def _run(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=None)
        conn.request("GET", "/sse/listen")
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError("/sse/listen -> HTTP %d" % resp.status)
        event = None
        data = []
        while True:
            line = resp.readline()
            t = time.monotonic()
            if not line:
                raise RuntimeError("event stream closed by the master")
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip().decode())
            elif not line and event is not None:
                self._dispatch(t, event, "\n".join(data))
                event, data = None, []

    def _dispatch(self, t, event, data):
        if event == "handshake":
            for p in self.PATHS:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("GET", "/sse/add/%s/%s" % (data, p))
                r = conn.getresponse()
                body = r.read()
                conn.close()
                if r.status != 200:
                    raise RuntimeError("/sse/add %s -> HTTP %d %r" % (p, r.status, body))
            self.ready.set()
            return
        if event != "event":
            return
        ev = json.loads(data)
        key, msg = ev["key"], ev["message"]
        if key[0] == "builds" and key[-1] in ("new", "finished"):
            self.tracker.build_seen(t, msg, key[-1] == "finished")
        elif key[0] == "steps" and key[-1] == "started":
            self.tracker.step_started(t, msg)
        elif key[0] == "buildsets" and key[-1] == "complete":
            self.tracker.buildset_complete(t, int(key[1]))


def percentile(samples, p):
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%d/status" % (field, pid))


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle_rss(pid, poll=0.25, quiet_for=2.0, max_wait=20.0):
    """VmRSS once it has stayed within 256 kB for `quiet_for` seconds."""
    start = time.monotonic()
    ref, ref_t = proc_status(pid, "VmRSS"), start
    while True:
        time.sleep(poll)
        now = time.monotonic()
        rss = proc_status(pid, "VmRSS")
        if abs(rss - ref) > 256:
            ref, ref_t = rss, now
        elif now - ref_t >= quiet_for or now - start >= max_wait:
            return rss


def workers_connected(api):
    ws = api.get("/workers")["workers"]
    return [w["name"] for w in ws if w.get("connected_to")]


def builder_id(api):
    for b in api.get("/builders")["builders"]:
        if b["name"] == BUILDER:
            return b["builderid"]
    raise RuntimeError("builder %r not found" % BUILDER)


# -- poll mode: same measurements, times taken by polling the REST API --------------


def poll_one(api, brid, bsid, poll_s, timeout, t0):
    """Poll until the build for `brid` is finished and its buildset complete."""
    times = {}
    buildid = None
    deadline = t0 + timeout
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("poll: build request %d not done after %.0f s" % (brid, timeout))
        if buildid is None:
            bs = api.get("/buildrequests/%d/builds" % brid)["builds"]
            if bs:
                buildid = bs[0]["buildid"]
                times["new"] = time.monotonic()
                times["workerid"] = bs[0]["workerid"]
        if buildid is not None:
            steps = api.get("/builds/%d/steps" % buildid)["steps"]
            t = time.monotonic()
            for s in steps:
                if s["started_at"] is not None:
                    key = "step" if s["name"] == STEP else "prep" if s["number"] == 0 else None
                    if key:
                        times.setdefault(key, t)
            if "step" in times:
                b = api.get("/builds/%d" % buildid)["builds"][0]
                if b["complete"]:
                    times.setdefault("finished", time.monotonic())
                    times["results"] = b["results"]
                    s = api.get("/buildsets/%d" % bsid)["buildsets"][0]
                    if s["complete"]:
                        return buildid, times
        time.sleep(poll_s)


def cmd_ready(args):
    api = Api(args.url, timeout=2)
    try:
        names = workers_connected(api)
    except Exception:
        return 1
    return 0 if len(names) >= 2 else 1


def cmd_run(args):
    api = Api(args.url)
    out = []

    def emit(k, v):
        line = "buildbot_%s=%s" % (k, v)
        out.append(line)
        print(line, flush=True)

    emit("version", args.version or "unknown")
    emit("mode", args.mode)
    bid = builder_id(api)
    connected = workers_connected(api)
    if len(connected) < 2:
        raise RuntimeError("only %d worker(s) connected: %s" % (len(connected), connected))
    workers = {w["workerid"]: w["name"] for w in api.get("/workers")["workers"]}

    log("waiting for the master's RSS to settle")
    emit("rss_idle_kb", settle_rss(args.master_pid))

    tracker = Tracker()
    if args.mode == "sse":
        listener = SseListener(args.url, tracker)
        listener.start()
        if not listener.ready.wait(30):
            raise RuntimeError("SSE subscription not ready after 30 s")
        if tracker.error:
            raise RuntimeError("SSE: %s" % tracker.error)

    def one(reason):
        t0 = time.monotonic()
        bsid, brid = api.force(bid, reason)
        if args.mode == "poll":
            buildid, b = poll_one(api, brid, bsid, args.poll_ms / 1000.0, args.timeout, t0)
        else:
            buildid = tracker.wait(lambda: tracker.brid_build.get(brid), args.timeout, "build of request %d" % brid)
            tracker.wait(lambda: bsid in tracker.bs_complete, args.timeout, "buildset %d complete" % bsid)
            b = tracker.builds[buildid]
        for k in ("prep", "step", "finished"):
            if k not in b:
                raise RuntimeError("build %d: no %s event seen: %r" % (buildid, k, b))
        if b.get("results") != 0:
            raise RuntimeError("build %d did not succeed: results=%r" % (buildid, b.get("results")))
        return {k: (b[k] - t0) * 1000.0 for k in ("prep", "step", "finished")}, b["workerid"]

    log("warm-up build")
    w, _ = one("warm-up")
    emit("warmup_step_start_ms", "%.1f" % w["step"])
    emit("warmup_finish_ms", "%.1f" % w["finished"])

    log("%d builds, one at a time" % args.runs)
    samples = {"prep": [], "step": [], "finished": []}
    spread = {}
    for i in range(args.runs):
        s, wid = one("latency %d" % (i + 1))
        for k in samples:
            samples[k].append(s[k])
        spread[workers.get(wid, wid)] = spread.get(workers.get(wid, wid), 0) + 1
    for k, name in (("step", "step_start"), ("finished", "finish"), ("prep", "prep_start")):
        emit(name + "_p50_ms", "%.1f" % percentile(samples[k], 50))
        emit(name + "_p95_ms", "%.1f" % percentile(samples[k], 95))
    for k, name in (("step", "step_start"), ("finished", "finish")):
        emit(name + "_min_ms", "%.1f" % min(samples[k]))
        emit(name + "_max_ms", "%.1f" % max(samples[k]))
    emit("runs_workers", ",".join("%s:%d" % kv for kv in sorted(spread.items())))

    if args.bulk:
        n = args.bulk
        log("%d builds triggered back to back" % n)
        cpu0 = proc_cpu_seconds(args.master_pid)
        wcpu0 = sum(proc_cpu_seconds(p) for p in args.worker_pids)
        if args.mode == "sse":
            with tracker.cond:
                tracker.running.clear()
                tracker.max_running = 0
        t0 = time.monotonic()
        reqs = [api.force(bid, "bulk %d" % (i + 1)) for i in range(n)]
        t_sent = time.monotonic()
        brids = {brid for _, brid in reqs}
        if len(brids) != n:
            raise RuntimeError("force returned %d distinct build requests for %d triggers" % (len(brids), n))
        if args.mode == "sse":

            def all_done():
                done = 0
                for brid in brids:
                    b = tracker.builds.get(tracker.brid_build.get(brid), {})
                    done += "finished" in b
                return done == n

            tracker.wait(all_done, args.bulk_timeout, "%d builds to finish" % n)
            t_done = max(tracker.builds[tracker.brid_build[brid]]["finished"] for brid in brids)
        else:
            deadline = t0 + args.bulk_timeout
            first = min(brids)
            while True:
                brs = api.get("/buildrequests?buildrequestid__ge=%d&field=buildrequestid&field=complete" % first)
                done = sum(1 for r in brs["buildrequests"] if r["buildrequestid"] in brids and r["complete"])
                if done == n:
                    t_done = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("only %d of %d builds done after %.0f s" % (done, n, args.bulk_timeout))
                time.sleep(args.poll_ms / 1000.0)
        cpu1 = proc_cpu_seconds(args.master_pid)
        wcpu1 = sum(proc_cpu_seconds(p) for p in args.worker_pids)
        rss_after = proc_status(args.master_pid, "VmRSS")

        # What actually ran, from the REST API: one successful build per request?
        first = min(brids)
        builds = api.get(
            "/builds?buildrequestid__ge=%d&field=buildid&field=buildrequestid&field=workerid"
            "&field=results&field=complete" % first
        )["builds"]
        ours = [b for b in builds if b["buildrequestid"] in brids]
        bad = [b for b in ours if not b["complete"] or b["results"] != 0]
        if bad:
            raise RuntimeError("%d of the bulk builds did not succeed, e.g. %r" % (len(bad), bad[0]))
        brs = api.get("/buildrequests?buildrequestid__ge=%d&field=buildrequestid&field=results" % first)
        br_results = {}
        for r in brs["buildrequests"]:
            if r["buildrequestid"] in brids:
                br_results[r["results"]] = br_results.get(r["results"], 0) + 1
        per_worker = {}
        for b in ours:
            name = workers.get(b["workerid"], b["workerid"])
            per_worker[name] = per_worker.get(name, 0) + 1

        secs = t_done - t0
        emit("200_trigger_seconds", "%.2f" % (t_sent - t0))
        emit("200_seconds", "%.2f" % secs)
        emit("200_builds_per_second", "%.2f" % (n / secs))
        emit("200_builds", len({b["buildid"] for b in ours}))
        emit("200_request_results", ",".join("%s:%d" % kv for kv in sorted(br_results.items())))
        emit("200_workers", ",".join("%s:%d" % kv for kv in sorted(per_worker.items())))
        if args.mode == "sse":
            emit("200_max_concurrent", tracker.max_running)
        emit("200_master_cpu_seconds", "%.2f" % (cpu1 - cpu0))
        emit("200_workers_cpu_seconds", "%.2f" % (wcpu1 - wcpu0))
        emit("rss_after_kb", rss_after)
    emit("rss_hwm_kb", proc_status(args.master_pid, "VmHWM"))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ready")
    r.add_argument("--url", required=True)
    m = sub.add_parser("run")
    m.add_argument("--url", required=True)
    m.add_argument("--master-pid", type=int, required=True)
    m.add_argument("--worker-pids", default="", type=lambda s: [int(p) for p in s.split(",") if p])
    m.add_argument("--runs", type=int, default=30)
    m.add_argument("--bulk", type=int, default=200)
    m.add_argument("--mode", choices=("sse", "poll"), default="sse")
    m.add_argument("--poll-ms", type=float, default=5.0)
    m.add_argument("--timeout", type=float, default=60.0, help="per one-at-a-time build")
    m.add_argument("--bulk-timeout", type=float, default=900.0)
    m.add_argument("--version", default="")
    args = ap.parse_args()
    return cmd_ready(args) if args.cmd == "ready" else cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
