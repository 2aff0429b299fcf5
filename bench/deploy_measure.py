#!/usr/bin/env python3
"""Deploy benchmark driver (see bench/deploy.sh): starts a Slipway server, a runner
and a node on this machine, then times deployments of a busybox httpd app.

Prints, in seconds (server timestamps, from a deployment's start to its end):
  floor       one instance to ready and routed, image already on the node
  rolling     3 instances replaced one by one (v1 -> v2)
  blue-green  3 new instances started, previewed, swapped (v1 -> v2)
  rollback    back to v1 inside the blue/green window (warm set: a swap), and the
              wall time from the CLI command to the deployment's end
and each against the floor.
"""

import base64
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SLIPWAY = sys.argv[1]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))

SPEC = """jobs:
  image:
    steps:
      - name: build
        build:
          image: bench/web
deploy:
  app: web
  image: bench/web
  port: 8080
  health: /healthz
  replicas: 3
  environments:
    dev:     { strategy: rolling }
    staging: { strategy: blue-green }
    one:     { strategy: rolling, replicas: 1 }
"""
# BENCH_APP=graceful (default): the shell passes SIGTERM on and exits, as a
# real service does; BENCH_APP=pid1: httpd as PID 1, which ignores SIGTERM, so
# every stop waits out the node's 10 s grace before SIGKILL.
if os.environ.get("BENCH_APP", "graceful") == "pid1":
    CMD = 'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n'
else:
    CMD = 'CMD ["sh", "-c", "httpd -f -p $PORT -h /www & trap \\"kill $!; exit 0\\" TERM; wait"]\n'
CONTAINERFILE = (
    "FROM busybox\nCOPY version /www/version\nRUN echo ok > /www/healthz\n" + CMD
)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_range(count):
    for _ in range(200):
        base = random.randint(21000, 50000)
        ok = True
        for p in range(base, base + count):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base, base + count - 1
    raise SystemExit("no free port range")


class World:
    def __init__(self, root):
        self.root = root
        self.password = "bench-" + os.urandom(6).hex()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, SLIPWAY_SERVER=self.url, SLIPWAY_USER="admin",
                        SLIPWAY_PASSWORD=self.password, SLIPWAY_ADMIN_PASSWORD=self.password,
                        SLIPWAY_LOG="warn")
        self.procs = []
        os.chmod(root, 0o711)
        self.spawn([SLIPWAY, "server", "--listen", f"127.0.0.1:{self.port}",
                    "--data-dir", f"{root}/data"], "server.log")
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the server did not start: see " + root)
                time.sleep(0.1)

    def spawn(self, args, log):
        out = open(os.path.join(self.root, log), "w")
        self.procs.append(subprocess.Popen(args, env=self.env, stdout=out, stderr=out))

    def cli(self, *args, stdin=None):
        out = subprocess.run([SLIPWAY, *args], env=self.env, capture_output=True, text=True,
                             input=stdin)
        if out.returncode != 0:
            raise SystemExit(f"slipway {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def api(self, path):
        req = urllib.request.Request(self.url + path)
        auth = base64.b64encode(f"admin:{self.password}".encode()).decode()
        req.add_header("Authorization", "Basic " + auth)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def deployment(self, id, until=("succeeded", "failed"), timeout=300):
        deadline = time.time() + timeout
        while True:
            d = self.api(f"/api/v1/deployments/{id}")
            if d["state"] in until:
                if d["state"] != "succeeded":
                    raise SystemExit(f"deployment {id} {d['state']}: {d['reason']}")
                return d
            if time.time() > deadline:
                raise SystemExit(f"deployment {id} still {d['state']}")
            time.sleep(0.05)

    def latest(self, env):
        try:
            rows = self.api(f"/api/v1/deployments?repo=bench&env={env}&limit=1")
        except urllib.error.HTTPError as e:
            if e.code == 404:  # the environment is made once its first pipeline ends
                return 0
            raise
        return rows[0]["id"] if rows else 0

    def wait_new(self, env, after):
        deadline = time.time() + 300
        while self.latest(env) <= after:
            if time.time() > deadline:
                raise SystemExit(f"no new deployment in {env}")
            time.sleep(0.05)
        return self.latest(env)

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def took(d):
    return (d["finished_at"] - d["started_at"]) / 1000.0


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=b@b", *args],
                   check=True, capture_output=True)


def main():
    root = tempfile.mkdtemp(prefix="slipway-bench-deploy-")
    world = World(root)
    node_dir = os.path.join(root, "node")
    try:
        world.cli("image", "bootstrap", "busybox")
        repo = os.path.join(root, "repo")
        os.makedirs(repo)
        git(repo, "init", "-q", "-b", "main")
        for name, text in ((".slipway.yml", SPEC), ("Containerfile", CONTAINERFILE),
                           ("version", "v1\n")):
            with open(os.path.join(repo, name), "w") as f:
                f.write(text)
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", "v1")
        world.cli("repo", "add", "bench", "--url", repo)
        token = world.cli("runner-token", "create").strip()
        world.spawn([SLIPWAY, "runner", "--token", token, "--name", "bench",
                     "--work-dir", os.path.join(root, "runner")], "runner.log")
        join = world.cli("cluster", "add", "local").strip()
        lo, hi = free_range(20)
        world.spawn([SLIPWAY, "node", "--token", join, "--name", "bench",
                     "--work-dir", node_dir, "--router-ports", f"{lo}-{hi}"], "node.log")
        world.cli("run", "bench", "--wait")
        world.deployment(world.wait_new("dev", 0))
        world.cli("promote", "bench", "--to", "staging")
        world.deployment(world.wait_new("staging", 0))
        results = {"floor": [], "rolling": [], "blue-green": [], "rollback": [],
                   "rollback command": []}
        version = 1
        for run in range(RUNS):
            # The floor: one instance of dev's digest (already on the node) to
            # ready and routed; from the second run on it replaces one.
            before = world.latest("one")
            world.cli("promote", "bench", "--to", "one")
            results["floor"].append(took(world.deployment(world.wait_new("one", before))))
            # Rolling v -> v+1 in dev.
            version += 1
            with open(os.path.join(repo, "version"), "w") as f:
                f.write(f"v{version}\n")
            git(repo, "commit", "-q", "-am", f"v{version}")
            before = world.latest("dev")
            world.cli("run", "bench", "--wait")
            results["rolling"].append(took(world.deployment(world.wait_new("dev", before))))
            # Blue/green v -> v+1 in staging.
            before = world.latest("staging")
            world.cli("promote", "bench", "--to", "staging")
            results["blue-green"].append(
                took(world.deployment(world.wait_new("staging", before))))
            # Warm rollback inside the window.
            before = world.latest("staging")
            start = time.time()
            world.cli("rollback", "bench", "--env", "staging", "--wait")
            results["rollback command"].append(time.time() - start)
            results["rollback"].append(took(world.deployment(world.wait_new("staging", before))))
            # Roll forward again so the next blue/green starts from the new digest.
            before = world.latest("staging")
            world.cli("promote", "bench", "--to", "staging")
            world.deployment(world.wait_new("staging", before))

        def median(xs):
            xs = sorted(xs)
            return xs[len(xs) // 2]

        floor = median(results["floor"])
        print(f"runs: {RUNS}")
        for name, xs in results.items():
            raw = ", ".join(f"{x:.2f}" for x in xs)
            print(f"{name:<17} median {median(xs):6.2f} s  ({median(xs) / floor:5.2f}x floor)  [{raw}]")
    finally:
        world.stop()
        subprocess.run([SLIPWAY, "node-reset", "--work-dir", node_dir], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
