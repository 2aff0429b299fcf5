#!/usr/bin/env python3
"""Dispatch-latency and throughput client for a running Slipway server.

Started by bench/dispatch.sh once the server, its two runners and the `bench`
repository (one job, one busybox step `true`) are set up. Standard library only.

    dispatch_measure.py runners --url URL --count N   exit 0 when N runners are online
    dispatch_measure.py rss     --pid PID             print VmRSS (kB) once it has settled
    dispatch_measure.py run     --url URL --server-pid PID --runner-pids P,P
                                [--runs 30] [--bulk 200] [--clients 8] [--poll-ms 20]

Credentials come from SLIPWAY_USER and SLIPWAY_PASSWORD (HTTP Basic auth).

`run` prints one `key=value` line per result (progress on stderr):

  slipway_rss_idle_kb                 server VmRSS, settled, before any pipeline
  slipway_warmup_{step_start,finish}_ms   the one warm-up pipeline (not counted; it
                                      pulls busybox into one runner's cache)
  slipway_step_start_{p50,p95,min,max}_ms   trigger -> jobs[0].steps[0].started_at
  slipway_finish_{p50,p95,min,max}_ms       trigger -> pipeline finished_at
  slipway_seen_finish_{p50,p95}_ms    trigger -> the client's poll saw it finished
                                      (cross-check; quantised by --poll-ms)
  slipway_post_{p50,p95}_ms           POST /api/v1/pipelines round trip (the server
                                      fetches the repository and creates the rows in it)
  slipway_created_{p50,p95}_ms        trigger -> the pipeline's created_at
  slipway_leased_{p50,p95}_ms         trigger -> jobs[0].started_at (a runner leased it)
  slipway_lease_to_step_{p50,p95}_ms  jobs[0].started_at -> step started_at (the runner
                                      fetches and unpacks the source, reports the step)
  slipway_step_run_{p50,p95}_ms       step started_at -> step finished_at
  slipway_step_to_finish_{p50,p95}_ms step finished_at -> pipeline finished_at
  slipway_200_trigger_seconds         time to send all --bulk POSTs (--clients threads)
  slipway_200_seconds                 first POST sent -> last pipeline's finished_at
  slipway_200_seen_seconds            first POST sent -> client saw the last one finished
  slipway_200_pipelines_per_second
  slipway_200_statuses                status:count of the --bulk pipelines
  slipway_200_max_concurrent          most jobs running at once (from jobs' started_at
                                      and finished_at)
  slipway_200_{lease_to_step,step_run,job}_p50_ms  per-job p50s over the --bulk
                                      pipelines (job = leased -> job finished_at)
  slipway_200_server_cpu_seconds      server utime+stime over the --bulk phase
  slipway_200_runners_cpu_seconds     both runners' own utime+stime over it
  slipway_200_runners_children_cpu_seconds  CPU of the runners' reaped children (runc...)
  slipway_rss_after_kb                server VmRSS right after the --bulk pipelines
  slipway_rss_hwm_kb                  server VmHWM (peak RSS) at the end

Times: the client's wall clock (time.time(), ms) is taken just before each POST;
started_at/finished_at/created_at are the server's unix-millisecond stamps, from the
same clock on the same machine. Percentiles are nearest-rank, as in
bench/buildbot/measure.py (p95 of 30 samples is the 29th smallest).
"""

import argparse
import base64
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse

REPO = "bench"
DONE = ("success", "failure", "cancelled", "error")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def now_ms():
    return time.time() * 1000.0


class Api:
    """One keep-alive HTTP connection to Slipway's REST API, Basic auth."""

    def __init__(self, url, timeout=60):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None
        cred = "%s:%s" % (os.environ["SLIPWAY_USER"], os.environ["SLIPWAY_PASSWORD"])
        self.auth = "Basic " + base64.b64encode(cred.encode()).decode()

    def request(self, method, path, body=None, expect=(200,)):
        headers = {"Accept": "application/json", "Authorization": self.auth}
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
                # A POST is retried only if the connection broke before anything was
                # sent back; a kept-alive connection the server closed is the usual case.
                if attempt:
                    raise
                continue
            if resp.will_close:
                self.conn.close()
                self.conn = None
            if resp.status not in expect:
                raise RuntimeError("%s %s -> HTTP %d: %s" % (method, path, resp.status, raw[:300]))
            return json.loads(raw) if raw else None

    def get(self, path):
        return self.request("GET", "/api/v1" + path)

    def trigger(self):
        """POST a pipeline; returns (pipeline json, client ms before, client ms after)."""
        t0 = now_ms()
        p = self.request("POST", "/api/v1/pipelines", {"repo": REPO}, expect=(201,))
        return p, t0, now_ms()


def percentile(samples, p):
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%d/status" % (field, pid))


def proc_cpu(pid):
    """(own utime+stime, reaped children's cutime+cstime) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck, (int(fields[13]) + int(fields[14])) / tck


def settle_rss(pid, poll=0.25, quiet_for=2.0, max_wait=20.0):
    """VmRSS once it has stayed within 256 kB for `quiet_for` seconds (as measure.py)."""
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


def wait_done(api, pid, poll_s, timeout):
    """Poll GET /pipelines/{pid} until it has finished; (pipeline, client ms seen)."""
    deadline = time.monotonic() + timeout
    while True:
        p = api.get("/pipelines/%d" % pid)
        if p["status"] in DONE:
            return p, now_ms()
        if time.monotonic() > deadline:
            raise TimeoutError("pipeline %d still %s after %.0f s" % (pid, p["status"], timeout))
        time.sleep(poll_s)


def first_step(p):
    if not p["jobs"] or not p["jobs"][0]["steps"]:
        raise RuntimeError("pipeline %d has no job or no step: %r" % (p["id"], p))
    return p["jobs"][0], p["jobs"][0]["steps"][0]


def cmd_runners(args):
    api = Api(args.url, timeout=2)
    try:
        rs = api.get("/runners")
    except Exception:
        return 1
    if isinstance(rs, dict):  # tolerate {"runners": [...]}
        rs = rs.get("runners", [])
    return 0 if sum(1 for r in rs if r.get("online")) >= args.count else 1


def cmd_rss(args):
    print(settle_rss(args.pid))
    return 0


def cmd_run(args):
    api = Api(args.url)
    poll_s = args.poll_ms / 1000.0

    def emit(k, v):
        print("slipway_%s=%s" % (k, v), flush=True)

    log("waiting for the server's RSS to settle")
    emit("rss_idle_kb", settle_rss(args.server_pid))

    def one():
        p, t0, t_post = api.trigger()
        p, t_seen = wait_done(api, p["id"], poll_s, args.timeout)
        if p["status"] != "success":
            raise RuntimeError("pipeline %d ended %s: %r" % (p["id"], p["status"], p.get("error")))
        job, step = first_step(p)
        for what, v in (("step started_at", step["started_at"]), ("step finished_at", step["finished_at"]),
                        ("job started_at", job["started_at"]), ("finished_at", p["finished_at"])):
            if v is None:
                raise RuntimeError("pipeline %d: no %s: %r" % (p["id"], what, p))
        return {
            "step_start": step["started_at"] - t0,
            "finish": p["finished_at"] - t0,
            "seen_finish": t_seen - t0,
            "post": t_post - t0,
            "created": p["created_at"] - t0,
            "leased": job["started_at"] - t0,
            "lease_to_step": step["started_at"] - job["started_at"],
            "step_run": step["finished_at"] - step["started_at"],
            "step_to_finish": p["finished_at"] - step["finished_at"],
        }

    log("warm-up pipeline")
    w = one()
    emit("warmup_step_start_ms", "%.1f" % w["step_start"])
    emit("warmup_finish_ms", "%.1f" % w["finish"])

    log("%d pipelines, one at a time" % args.runs)
    samples = {}
    for i in range(args.runs):
        for k, v in one().items():
            samples.setdefault(k, []).append(v)
    if min(samples["created"]) < -5:
        raise RuntimeError("server stamps before the client's trigger time: clocks disagree? %r" % samples["created"])
    for k in ("step_start", "finish"):
        emit(k + "_p50_ms", "%.1f" % percentile(samples[k], 50))
        emit(k + "_p95_ms", "%.1f" % percentile(samples[k], 95))
        emit(k + "_min_ms", "%.1f" % min(samples[k]))
        emit(k + "_max_ms", "%.1f" % max(samples[k]))
    for k in ("seen_finish", "post", "created", "leased", "lease_to_step", "step_run", "step_to_finish"):
        emit(k + "_p50_ms", "%.1f" % percentile(samples[k], 50))
        emit(k + "_p95_ms", "%.1f" % percentile(samples[k], 95))

    if args.bulk:
        n = args.bulk
        log("%d pipelines triggered with %d client threads" % (n, args.clients))
        s0 = proc_cpu(args.server_pid)
        r0 = [proc_cpu(p) for p in args.runner_pids]
        ids = []
        errors = []
        lock = threading.Lock()
        left = [n]
        go = threading.Event()

        def client():
            c = Api(args.url)
            go.wait()
            while True:
                with lock:
                    if left[0] == 0 or errors:
                        return
                    left[0] -= 1
                try:
                    p, _, _ = c.trigger()
                except Exception as e:  # reported below
                    with lock:
                        errors.append(repr(e))
                    return
                with lock:
                    ids.append(p["id"])

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        t0 = now_ms()
        go.set()
        for t in threads:
            t.join()
        t_sent = now_ms()
        if errors:
            raise RuntimeError("%d trigger(s) failed, e.g. %s" % (len(errors), errors[0]))
        if len(set(ids)) != n:
            raise RuntimeError("%d distinct pipelines for %d triggers" % (len(set(ids)), n))

        # Pipelines finish roughly in id order: wait for each in turn, so a finished
        # one costs one GET and the server is polled only every --poll-ms.
        done = {}
        deadline = time.monotonic() + args.bulk_timeout
        for pid in sorted(ids):
            p, _ = wait_done(api, pid, poll_s, max(1.0, deadline - time.monotonic()))
            done[pid] = p
        t_seen = now_ms()
        s1 = proc_cpu(args.server_pid)
        r1 = [proc_cpu(p) for p in args.runner_pids]
        rss_after = proc_status(args.server_pid, "VmRSS")

        statuses = {}
        for p in done.values():
            statuses[p["status"]] = statuses.get(p["status"], 0) + 1
        last = max(p["finished_at"] for p in done.values())
        secs = (last - t0) / 1000.0
        events = []
        for p in done.values():
            for j in p["jobs"]:
                if j["started_at"] is not None and j["finished_at"] is not None:
                    events += [(j["started_at"], 1), (j["finished_at"], -1)]
        running = peak = 0
        for _, d in sorted(events, key=lambda e: (e[0], e[1])):
            running += d
            peak = max(peak, running)

        emit("200_trigger_seconds", "%.2f" % ((t_sent - t0) / 1000.0))
        emit("200_seconds", "%.2f" % secs)
        emit("200_seen_seconds", "%.2f" % ((t_seen - t0) / 1000.0))
        emit("200_pipelines_per_second", "%.2f" % (n / secs))
        emit("200_statuses", ",".join("%s:%d" % kv for kv in sorted(statuses.items())))
        emit("200_max_concurrent", peak)
        per = {"lease_to_step": [], "step_run": [], "job": []}
        for p in done.values():
            j = p["jobs"][0]
            st = j["steps"][0]
            if None not in (j["started_at"], j["finished_at"], st["started_at"], st["finished_at"]):
                per["lease_to_step"].append(st["started_at"] - j["started_at"])
                per["step_run"].append(st["finished_at"] - st["started_at"])
                per["job"].append(j["finished_at"] - j["started_at"])
        for k, v in per.items():
            if v:
                emit("200_%s_p50_ms" % k, "%.1f" % percentile(v, 50))
        emit("200_server_cpu_seconds", "%.2f" % (s1[0] - s0[0]))
        emit("200_runners_cpu_seconds", "%.2f" % sum(b[0] - a[0] for a, b in zip(r0, r1)))
        emit("200_runners_children_cpu_seconds", "%.2f" % sum(b[1] - a[1] for a, b in zip(r0, r1)))
        emit("rss_after_kb", rss_after)
        if statuses.get("success", 0) != n:
            bad = next(p for p in done.values() if p["status"] != "success")
            raise RuntimeError("%d of %d pipelines did not succeed, e.g. %d: %s %r"
                               % (n - statuses.get("success", 0), n, bad["id"], bad["status"], bad.get("error")))
    emit("rss_hwm_kb", proc_status(args.server_pid, "VmHWM"))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("runners")
    r.add_argument("--url", required=True)
    r.add_argument("--count", type=int, default=2)
    s = sub.add_parser("rss")
    s.add_argument("--pid", type=int, required=True)
    m = sub.add_parser("run")
    m.add_argument("--url", required=True)
    m.add_argument("--server-pid", type=int, required=True)
    m.add_argument("--runner-pids", default="", type=lambda s: [int(p) for p in s.split(",") if p])
    m.add_argument("--runs", type=int, default=30)
    m.add_argument("--bulk", type=int, default=200)
    m.add_argument("--clients", type=int, default=8)
    m.add_argument("--poll-ms", type=float, default=20.0)
    m.add_argument("--timeout", type=float, default=120.0, help="per one-at-a-time pipeline")
    m.add_argument("--bulk-timeout", type=float, default=900.0)
    args = ap.parse_args()
    return {"runners": cmd_runners, "rss": cmd_rss, "run": cmd_run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
