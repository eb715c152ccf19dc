"""scripts/bench fleet: N stores (N hosts of a fleet) pulling one image at once, straight from the
upstream registry vs through one pull-through cache (docker-registry in proxy mode), measured in
the same run: the bytes the upstream served (from its access log) and the wall time until every
store holds the image. Three rounds per run: direct; through a cold mirror; through the same
mirror, warm (a second fleet, or the same fleet after a gc)."""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGEFS = os.environ.get("IMAGEFS_BIN") or os.path.join(ROOT, "build", "imagefs")
FIXTURES = os.path.join(ROOT, "scripts", "fixtures")
REGISTRY = os.path.join(ROOT, "scripts", "registry")

# distribution's access log: ... "GET /v2/NAME/blobs/sha256:... HTTP/1.1" 200 BYTES ...
BLOB_LINE = re.compile(r'"GET /v2/\S+/blobs/sha256:[0-9a-f]{64} HTTP/1\.1" 20[06] (\d+) ')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def blob_bytes(path):
    """Bytes of blob bodies a registry's access log says it served."""
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            m = BLOB_LINE.search(line)
            if m:
                total += int(m.group(1))
    return total


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Upstream:
    def __enter__(self):
        out = subprocess.run([REGISTRY, "start", "--mode", "open"], check=True, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        self.vars = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.addr = self.vars["IMAGEFS_REGISTRY"]
        self.log = self.vars["IMAGEFS_REGISTRY_LOG"]
        return self

    def __exit__(self, *exc):
        subprocess.run([REGISTRY, "stop", self.vars["IMAGEFS_REGISTRY_DIR"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Mirror:
    """docker-registry in proxy mode in front of `upstream` (an http://HOST:PORT URL)."""

    def __init__(self, upstream, directory):
        self.upstream, self.dir = upstream, directory

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        for _ in range(5):
            port = free_port()
            with open(os.path.join(self.dir, "config.yml"), "w") as f:
                f.write("version: 0.1\nlog: {level: warn, formatter: text}\n"
                        f"storage: {{filesystem: {{rootdirectory: {self.dir}/storage}}}}\n"
                        f"http: {{addr: 127.0.0.1:{port}, secret: fleet-bench}}\n"
                        f"proxy: {{remoteurl: {self.upstream}}}\n")
            self.log = os.path.join(self.dir, "registry.log")
            logf = open(self.log, "w")
            self.proc = subprocess.Popen(["docker-registry", "serve", os.path.join(self.dir, "config.yml")],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env)
            for _ in range(150):
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    self.addr = f"127.0.0.1:{port}"
                    return self
                except OSError:
                    time.sleep(0.1)
            self.proc.kill()
            self.proc.wait()
        raise SystemExit("bench: the mirror (docker-registry in proxy mode) did not start:\n" +
                         open(self.log, errors="replace").read()[-2000:])

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fleet_pull(tmp, n, ref, extra):
    """N `imagefs pull` at once into N fresh stores; returns the wall time until all ended."""
    procs = []
    start = time.perf_counter()
    for i in range(n):
        cache = os.path.join(tmp, f"store{i}")
        shutil.rmtree(cache, ignore_errors=True)
        procs.append(subprocess.Popen([IMAGEFS, "pull", "--cache-dir", cache,
                                       "--hosts-dir", os.path.join(tmp, "no-hosts")] + extra + [ref],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - start
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise SystemExit(f"bench: a fleet pull failed:\n{err.decode(errors='replace')[-2000:]}")
    return wall


def bench_fleet(args):
    image = args.image
    subprocess.run([FIXTURES, "build", image], check=True, stdout=subprocess.DEVNULL)
    rows = {"direct": [], "mirror, cold": [], "mirror, warm": []}
    with Upstream() as up, tempfile.TemporaryDirectory(prefix="imagefs-bench-fleet.") as tmp:
        os.makedirs(os.path.join(tmp, "no-hosts"))
        subprocess.run([FIXTURES, "push", "--registry", up.addr, image], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ref = f"{up.addr}/{image}"
        for run in range(args.runs):
            before = blob_bytes(up.log)
            wall = fleet_pull(tmp, args.stores, ref, [])
            rows["direct"].append((wall, blob_bytes(up.log) - before))
            with Mirror(f"http://{up.addr}", os.path.join(tmp, f"mirror{run}")) as mirror:
                via = ["--mirror", f"{up.addr}=http://{mirror.addr}"]
                for label in ("mirror, cold", "mirror, warm"):
                    before = blob_bytes(up.log)
                    wall = fleet_pull(tmp, args.stores, ref, via)
                    rows[label].append((wall, blob_bytes(up.log) - before))
            log(f"run {run + 1}: " + ", ".join(
                f"{k} {v[-1][0]:.2f}s {v[-1][1] / 2**20:.1f} MiB from the upstream" for k, v in rows.items()))
    print(f"fleet: {args.stores} stores pulling {image} at once, fresh stores each round, "
          f"median of {args.runs} runs")
    print(f"{'round':14} {'wall':>8} {'upstream bytes':>15} {'vs direct':>10}")
    direct_bytes = statistics.median(b for _, b in rows["direct"])
    direct_wall = statistics.median(w for w, _ in rows["direct"])
    for label, values in rows.items():
        wall = statistics.median(w for w, _ in values)
        sent = statistics.median(b for _, b in values)
        ratio = f"{sent / direct_bytes:9.2f}x" if direct_bytes else "       n/a"
        print(f"{label:14} {wall:7.2f}s {sent / 2**20:12.1f}MiB {ratio}  (wall {wall / direct_wall:.2f}x)")
    print("upstream bytes: blob bodies in the upstream registry's access log; "
          "'mirror, warm': a second fleet through the same mirror")
