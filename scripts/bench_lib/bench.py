#!/usr/bin/env python3
"""Benchmarks of imagefs against the tools it replaces, measured in the same run (scripts/bench)."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGEFS = os.path.join(ROOT, "build", "imagefs")
FIXTURES = os.path.join(ROOT, "scripts", "fixtures")
REGISTRY = os.path.join(ROOT, "scripts", "registry")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def timed(cmd, env=None):
    """Runs cmd; returns (wall seconds, peak RSS in KiB) of that one child (wait4's rusage)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss


class Registry:
    def __enter__(self):
        out = subprocess.run([REGISTRY, "start", "--mode", "open"], check=True, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        self.vars = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.addr = self.vars["IMAGEFS_REGISTRY"]
        return self

    def __exit__(self, *exc):
        subprocess.run([REGISTRY, "stop", self.vars["IMAGEFS_REGISTRY_DIR"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_pull(args):
    images = args.images.split(",")
    subprocess.run([FIXTURES, "build"] + images, check=True, stdout=subprocess.DEVNULL)
    rows = []
    with Registry() as reg, tempfile.TemporaryDirectory(prefix="imagefs-bench.") as tmp:
        subprocess.run([FIXTURES, "push", "--registry", reg.addr] + images, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for image in images:
            ours, peer, rss = [], [], []
            for run in range(args.runs):
                cache = os.path.join(tmp, "cache")
                oci = os.path.join(tmp, "oci")
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(oci, ignore_errors=True)
                wall, kib = timed([IMAGEFS, "pull", "--cache-dir", cache, f"{reg.addr}/{image}"])
                ours.append(wall)
                rss.append(kib)
                wall, _ = timed(["skopeo", "copy", "--src-tls-verify=false",
                                 f"docker://{reg.addr}/{image}:latest", f"oci:{oci}:latest"])
                peer.append(wall)
                log(f"{image} run {run + 1}: imagefs {ours[-1]:.3f}s ({kib // 1024} MiB), skopeo {peer[-1]:.3f}s")
            size = sum(os.path.getsize(os.path.join(dp, f))
                       for dp, _, fs in os.walk(os.path.join(tmp, "cache", "blobs")) for f in fs)
            rows.append((image, size, statistics.median(ours), statistics.median(peer), max(rss)))
    print(f"pull, cold cache, local registry, median of {args.runs} runs")
    print(f"{'image':10} {'blobs':>10} {'imagefs':>9} {'skopeo':>9} {'ratio':>7} {'imagefs peak RSS':>17}")
    for image, size, ours, peer, rss in rows:
        print(f"{image:10} {size / 2**20:8.1f}MB {ours:8.3f}s {peer:8.3f}s {peer / ours:6.2f}x {rss / 1024:14.1f}MiB")
    print("targets: ratio >= 1.5x on python; peak RSS < 64 MiB")


def main():
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    pull = sub.add_parser("pull", help="imagefs pull vs skopeo copy")
    pull.add_argument("--images", default="python")
    pull.add_argument("--runs", type=int, default=9)
    pull.set_defaults(func=bench_pull)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
