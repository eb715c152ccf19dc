#!/usr/bin/env python3
"""The load and the watch of scripts/soak (stdlib only): many concurrent readers of one imagefs
mount, `imagefs pull`s into the same store killed with SIGKILL, lookups that hang behind a black
hole or a drip, and a monitor that checks the daemon every second.

usage: load.py CONFIG.json        (scripts/soak writes CONFIG; see its keys in main())

Every reader operation is checked against a reference made outside the mount: archive bytes
against `imagefs build` output, names and types against `umoci unpack`'s tree. Randomness is
seeded (--seed): each thread draws from its own random.Random(seed, thread), so the sequence of
operations a thread tries is the same on every run; only timing differs.

Prints a summary and writes it as JSON to CONFIG["summary"]. Exit status 0 when no check failed.
"""
import errno
import json
import os
import random
import re
import subprocess
import tempfile
import sys
import threading
import time

CHUNK = 1 << 20
MAX_NOTES = 40


def err_tail(f):
    """The last words a pull wrote to stderr (the file given it when it was started)."""
    f.seek(0)
    return f.read().decode("utf-8", "backslashreplace").strip()[-300:]


class Soak:
    def __init__(self, cfg):
        self.cfg = cfg
        self.mnt = cfg["mount"]
        self.lock = threading.Lock()
        self.ops = {}          # kind -> count of finished operations
        self.errors = {}       # "kind errno" -> count (expected failures: faults, bad image)
        self.failures = []     # descriptions of failed checks
        self.failure_count = 0
        self.wrong_reads = 0
        self.wrong_bytes = 0
        self.bytes_read = 0
        self.down_errors = 0   # operations that met a dead daemon (counted with its crash)
        self.crashes = []      # (seconds into the run, log tail)
        self.stalls = []       # descriptions of operations past the stall limit
        self.inflight = {}     # thread name -> [kind, path, start, reported]
        self.samples = []      # (seconds, rss KiB, fds, threads, daemon life)
        self.latency = {}      # kind -> list of seconds
        self.pulls = {"started": 0, "killed": 0, "ok": 0, "failed": 0}
        self.pid = cfg["pid"]
        self.life = 0          # daemon lives: incremented by each remount after a crash
        self.alive = threading.Event()
        self.alive.set()
        self.start = time.monotonic()
        self.deadline = self.start + cfg["seconds"]
        self.stop = threading.Event()
        self.refs = {}         # image -> {"paths": set, "stat": {path: (type, size)}}

    # -- bookkeeping ---------------------------------------------------------------------------
    def now(self):
        return time.monotonic() - self.start

    def fail(self, what):
        with self.lock:
            self.failure_count += 1
            if len(self.failures) < MAX_NOTES:
                self.failures.append(f"{self.now():7.1f}s {what}")

    def count(self, kind, seconds=None):
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1
            if seconds is not None:
                self.latency.setdefault(kind, []).append(seconds)

    def error(self, kind, e):
        name = errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else type(e).__name__
        with self.lock:
            key = f"{kind} {name}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def begin(self, kind, path):
        with self.lock:
            self.inflight[threading.current_thread().name] = [kind, path, time.monotonic(), False]

    def end(self):
        with self.lock:
            rec = self.inflight.pop(threading.current_thread().name, None)
        return time.monotonic() - rec[2] if rec else 0.0

    # -- references ----------------------------------------------------------------------------
    def load_refs(self):
        for img in self.cfg["images"]:
            root = img["umoci_rootfs"]
            paths, st = set(), {}
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, root)
                    s = os.lstat(full)
                    kind = s.st_mode & 0o170000
                    paths.add((rel, kind))
                    st[rel] = (kind, s.st_size if kind in (0o100000, 0o120000) else None)
            self.refs[img["name"]] = {"paths": paths, "stat": st, "names": sorted(st)}

    # -- the daemon ----------------------------------------------------------------------------
    def daemon_alive(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    def sample(self):
        try:
            rss = threads = 0
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return
        with self.lock:
            self.samples.append((self.now(), rss, fds, threads, self.life))

    def log_tail(self, lines=6):
        try:
            with open(self.cfg["log"], "rb") as f:
                f.seek(max(0, os.path.getsize(self.cfg["log"]) - 8192))
                text = f.read().decode("utf-8", "backslashreplace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def remount(self):
        """After a crash: detach the dead mount and start a new daemon with the same options."""
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], stderr=subprocess.DEVNULL)
        r = subprocess.run(self.cfg["mount_cmd"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.fail(f"remount after the crash failed: {r.stdout}{r.stderr}")
            return False
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"mount" in argv and self.mnt.encode() in argv and int(p) != os.getpid():
                if os.path.basename(os.readlink(f"/proc/{p}/exe")).startswith("imagefs"):
                    self.pid = int(p)
                    return True
        self.fail("remount after the crash: no daemon found")
        return False

    def monitor(self):
        next_sample = 0.0
        while not self.stop.is_set():
            if not self.daemon_alive():
                self.alive.clear()
                tail = self.log_tail()
                with self.lock:
                    self.crashes.append((self.now(), tail))
                print(f"soak: {self.now():.1f}s: the daemon (pid {self.pid}) is gone; log tail:\n{tail}",
                      file=sys.stderr, flush=True)
                if len(self.crashes) >= self.cfg["max_crashes"] or not self.remount():
                    self.stop.set()
                    return
                self.life += 1
                self.alive.set()
            if self.now() >= next_sample:
                self.sample()
                next_sample = self.now() + self.cfg["sample_every"]
            t = time.monotonic()
            with self.lock:
                late = [(n, r) for n, r in self.inflight.items()
                        if not r[3] and t - r[2] > self.cfg["stall_limit"]]
                for _, r in late:
                    r[3] = True
            for n, r in late:
                msg = f"{r[0]} {r[1]}: no answer after {self.cfg['stall_limit']} s ({n})"
                with self.lock:
                    self.stalls.append(f"{self.now():7.1f}s {msg}")
                print(f"soak: stall: {msg}", file=sys.stderr, flush=True)
            time.sleep(0.5)

    # -- operations ----------------------------------------------------------------------------
    def run_op(self, kind, path, fn, expect_errors=()):
        """Runs fn(); an OSError with an errno in expect_errors is counted as an expected error,
        any other failure is a failed check. ENOTCONN while the daemon is dead is a crash's echo."""
        self.begin(kind, path)
        try:
            fn()
            self.count(kind, self.end())
        except OSError as e:
            self.end()
            if not self.alive.is_set() or e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                with self.lock:
                    self.down_errors += 1
            elif e.errno in expect_errors:
                self.error(kind, e)
                self.count(kind)
            else:
                self.fail(f"{kind} {path}: {e}")
        except Exception as e:  # a bug of the soak itself must show, not end the thread quietly
            self.end()
            self.fail(f"{kind} {path}: {type(e).__name__}: {e}")

    def read_archive(self, path, ref, rng, whole):
        size = os.path.getsize(ref)
        with open(path, "rb") as f, open(ref, "rb") as r:
            if whole:
                off, length = 0, size
            else:
                off = rng.randrange(0, max(1, size))
                length = rng.randint(1, 4 * CHUNK)
                f.seek(off)
                r.seek(off)
            done = 0
            while done < length:
                a = f.read(min(CHUNK, length - done))
                b = r.read(min(CHUNK, length - done))
                if a != b:
                    diff = sum(1 for x, y in zip(a, b) if x != y) + abs(len(a) - len(b))
                    with self.lock:
                        self.wrong_reads += 1
                        self.wrong_bytes += diff
                    self.fail(f"archive {path} at {off + done}: {diff} bytes differ from {ref}"
                              f" (read {len(a)}, expected {len(b)})")
                    return
                if not a:
                    break
                done += len(a)
            if whole and f.read(1):
                self.fail(f"archive {path}: longer than {ref} ({size} bytes)")
            with self.lock:
                self.bytes_read += done

    def find(self, root, name):
        seen = set()
        for dirpath, dirnames, filenames in os.walk(root, onerror=self._raise):
            for n in dirnames + filenames:
                full = os.path.join(dirpath, n)
                seen.add((os.path.relpath(full, root), os.lstat(full).st_mode & 0o170000))
        want = self.refs[name]["paths"]
        if seen != want:
            extra, missing = sorted(seen - want)[:3], sorted(want - seen)[:3]
            self.fail(f"find {root}: {len(seen ^ want)} entries differ from umoci's tree "
                      f"(extra {extra}, missing {missing})")

    @staticmethod
    def _raise(e):
        raise e

    def stat_name(self, root, name, rel):
        s = os.lstat(os.path.join(root, rel))
        kind, size = self.refs[name]["stat"][rel]
        got = (s.st_mode & 0o170000, s.st_size if kind in (0o100000, 0o120000) else None)
        if got != (kind, size):
            self.fail(f"stat {root}/{rel}: type/size {got}, umoci has {(kind, size)}")

    def must_fail(self, path, what):
        try:
            os.stat(path)
        except OSError:
            raise
        self.fail(f"{what}: {path} exists")

    def read_status(self):
        with open(os.path.join(self.mnt, ".status"), "rb") as f:
            data = f.read()
        try:
            json.loads(data)
        except ValueError as e:
            self.fail(f".status is not JSON ({e}): {data[:200]!r}")

    def read_bad(self, path):
        with open(path, "rb") as f:
            while f.read(CHUNK):
                pass
        self.fail(f"bad image: {path} was read without an error (its layer cannot be ingested)")

    def reader(self, index):
        rng = random.Random(f"{self.cfg['seed']}/reader/{index}")
        images = self.cfg["images"]
        weights = self.cfg["weights"]
        kinds = list(weights)
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.alive.wait(30)
            kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
            img = rng.choice(images)
            via = rng.choice(img["via"])
            top = os.path.join(self.mnt, via["host"], img["name"] + ":latest")
            expect = () if via["clean"] else (errno.EIO, errno.ENOENT, errno.ETIMEDOUT)
            if kind in ("archive", "range"):
                fmt = rng.choice(sorted(img["archives"]))
                path = os.path.join(top, self.cfg["archive_names"][fmt])
                self.run_op(kind, path, lambda: self.read_archive(
                    path, img["archives"][fmt], rng, kind == "archive"), expect)
            elif kind == "find":
                self.run_op(kind, top + "/rootfs", lambda: self.find(top + "/rootfs", img["name"]), expect)
            elif kind == "stat":
                rel = rng.choice(self.refs[img["name"]]["names"])
                self.run_op(kind, f"{top}/rootfs/{rel}",
                            lambda: self.stat_name(top + "/rootfs", img["name"], rel), expect)
            elif kind == "missing":
                token = "%016x" % rng.getrandbits(64)
                which = rng.randrange(5)
                if which == 0:
                    path, ok = f"{top}/rootfs/soak-missing-{token}", (errno.ENOENT,) + expect
                elif which == 1:
                    path, ok = f"{self.mnt}/{via['host']}/soak-missing-{token}:latest", (errno.ENOENT, errno.EIO)
                elif which == 2:
                    path, ok = f"{self.mnt}/{via['host']}/{img['name']}:no-{token}", (errno.ENOENT, errno.EIO)
                elif which == 3:
                    path, ok = f"{self.mnt}/{self.cfg['dead_registry']}/r{token}:latest", (errno.ENOENT, errno.EIO)
                else:
                    # Issue 11's growth case: a name under a registry directory is a directory of
                    # repositories (it may exist); any answer will do, but the daemon's memory
                    # must stay flat however many such names it is asked for.
                    path = f"{self.mnt}/{self.cfg['dead_registry']}/r{token}/x"
                    self.run_op(kind, path, lambda: os.stat(path), (errno.ENOENT, errno.EIO))
                    continue
                self.run_op(kind, path, lambda: self.must_fail(path, "a missing name"), ok)
            elif kind == "status":
                self.run_op(kind, self.mnt + "/.status", self.read_status)
            elif kind == "bad":
                bad = self.cfg["bad"]
                path = os.path.join(self.mnt, rng.choice(bad["hosts"]), bad["name"] + ":latest",
                                    rng.choice(sorted(self.cfg["archive_names"].values())))
                self.run_op(kind, path, lambda: self.read_bad(path), (errno.EIO, errno.ENOENT))

    def hung(self, index, host, name):
        """Lookups through a proxy that never answers (or drips): each must end, with an error,
        before the stall limit; meanwhile the other readers must be served."""
        rng = random.Random(f"{self.cfg['seed']}/hung/{index}")
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.alive.wait(30)
            path = os.path.join(self.mnt, host, name + ":latest", "digest")
            self.run_op("hung", path, lambda: open(path, "rb").close(),
                        (errno.EIO, errno.ETIMEDOUT, errno.ENOENT))
            time.sleep(rng.uniform(0.1, 1.0))

    def storm(self, index):
        """Lookups of names nobody has asked for before, as fast as they are answered: under a
        registry directory (issue 11: 100,000 of them grew the daemon by 112 MiB) and under a
        cached rootfs. Its memory must stay flat."""
        rng = random.Random(f"{self.cfg['seed']}/storm/{index}")
        dead, root = self.cfg["dead_registry"], self.cfg["storm_root"]
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.alive.wait(30)
            token = "%016x" % rng.getrandbits(64)
            if rng.random() < 0.5:
                path = f"{self.mnt}/{dead}/s{token}/x"
            else:
                path = f"{root}/storm-{token}"
            self.run_op("storm", path, lambda: os.stat(path), (errno.ENOENT, errno.EIO))

    def probe(self):
        """A cached image's small file, twice a second: its latency is what other users feel."""
        path = self.cfg["probe"]
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.alive.wait(30)
            self.run_op("probe", path, lambda: open(path, "rb").read())
            time.sleep(0.5)

    def puller(self, index):
        """Rounds of 1-3 concurrent `imagefs pull`s into the mount's store; most are killed
        with SIGKILL after a random time, the rest run to the end."""
        rng = random.Random(f"{self.cfg['seed']}/pull/{index}")
        pull = self.cfg["pullers"][index]
        rounds = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline - 5:
            rounds += 1
            if pull.get("reset_every") and rounds % pull["reset_every"] == 0:
                # A scratch store emptied now and then, so that its pulls keep downloading
                # layers through the fault proxies all run long.
                subprocess.run(["rm", "-rf", pull["store"]], check=False)
            procs = []
            for _ in range(rng.randint(1, 3)):
                ref = rng.choice(pull["refs"])
                # stderr to a file: a pipe nobody reads would block a chatty pull.
                errf = tempfile.TemporaryFile()
                cmd = [self.cfg["bin"], "pull", "--cache-dir", pull["store"], ref]
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
                procs.append((p, ref, errf))
                with self.lock:
                    self.pulls["started"] += 1
            time.sleep(rng.uniform(0.05, 3.0))
            for p, ref, errf in procs:
                kill = rng.random() < self.cfg["kill_fraction"]  # drawn always: the same sequence
                if kill and p.poll() is None:
                    p.kill()
                    p.wait()
                    errf.close()
                    with self.lock:
                        self.pulls["killed"] += 1
                    continue
                try:
                    p.wait(timeout=max(1.0, self.deadline + 30 - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    self.fail(f"imagefs pull {ref} still ran 30 s after the end of the soak")
                    continue
                with self.lock:
                    self.pulls["ok" if p.returncode == 0 else "failed"] += 1
                if p.returncode != 0 and ref in self.cfg["must_succeed"]:
                    self.fail(f"imagefs pull {ref} (no faults on its path) failed: {err_tail(errf)}")
                errf.close()

    # -- the run -------------------------------------------------------------------------------
    def faults(self):
        """Injected faults by kind, from the fault proxies' request logs."""
        kinds = {"status": r"\(injected\)", "drop": r"\(dropped after", "drip": r"dripping the answer",
                 "blackhole": r"-> black hole \(never answered\)"}
        out = {}
        for proxy in self.cfg["proxies"]:
            try:
                with open(proxy["log"], errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            for k, rx in kinds.items():
                n = len(re.findall(rx, text))
                if n:
                    out[k] = out.get(k, 0) + n
            if proxy.get("rate"):
                n = len(re.findall(r" GET /v2/[^ ]*/blobs/sha256:[0-9a-f]+ .*-> 200", text))
                if n:
                    out["slow"] = out.get("slow", 0) + n
        return out

    def run(self):
        self.load_refs()
        threads = [threading.Thread(target=self.monitor, name="monitor", daemon=True)]
        for i in range(self.cfg["readers"]):
            threads.append(threading.Thread(target=self.reader, args=(i,), name=f"reader{i}", daemon=True))
        for i, h in enumerate(self.cfg["hung"]):
            threads.append(threading.Thread(target=self.hung, args=(i, h["host"], h["name"]),
                                            name=f"hung{i}", daemon=True))
        threads.append(threading.Thread(target=self.probe, name="probe", daemon=True))
        for i in range(self.cfg["storms"]):
            threads.append(threading.Thread(target=self.storm, args=(i,), name=f"storm{i}", daemon=True))
        for i in range(len(self.cfg["pullers"])):
            threads.append(threading.Thread(target=self.puller, args=(i,), name=f"puller{i}", daemon=True))
        for t in threads:
            t.start()
        workers = threads[1:]
        while time.monotonic() < self.deadline and not self.stop.is_set():
            time.sleep(0.5)
        # Operations in flight get the stall limit to finish; those still running then are stalls
        # the monitor has reported (hung threads are left behind: the process exits).
        end = time.monotonic() + self.cfg["stall_limit"] + 5
        for t in workers:
            t.join(max(0.0, end - time.monotonic()))
        self.sample()
        self.stop.set()
        return self.summary()

    def summary(self):
        cfg = self.cfg
        life = [s for s in self.samples if s[4] == self.life]
        ok = True
        verdict = []
        rss_txt = fds_txt = "n/a"
        if len(life) >= 4:
            span = life[-1][0] - life[0][0]
            first = [s for s in life if s[0] <= life[0][0] + span * cfg["part"]]
            last = [s for s in life if s[0] >= life[-1][0] - span * cfg["part"]]
            rss0, rss1 = max(s[1] for s in first), max(s[1] for s in last)
            fd0, fd1 = max(s[2] for s in first), max(s[2] for s in last)
            rss_bound = rss0 * (1 + cfg["rss_growth"]) + cfg["rss_slack_mib"] * 1024
            fd_bound = fd0 + cfg["fd_slack"]
            rss_txt = (f"{rss0 / 1024:.1f} MiB (first {cfg['part']:.0%}) -> {rss1 / 1024:.1f} MiB "
                       f"(last {cfg['part']:.0%}); bound {rss_bound / 1024:.1f} MiB")
            fds_txt = f"{fd0} -> {fd1}; bound {fd_bound}"
            if rss1 > rss_bound:
                verdict.append(f"RSS grew from {rss0 / 1024:.1f} to {rss1 / 1024:.1f} MiB (bound {rss_bound / 1024:.1f})")
            if fd1 > fd_bound:
                verdict.append(f"open fds grew from {fd0} to {fd1} (bound {fd_bound})")
        else:
            verdict.append("too few RSS/fd samples of the last daemon's life to compare")
        if self.crashes:
            verdict.append(f"{len(self.crashes)} crash(es) of the daemon")
        if self.stalls:
            verdict.append(f"{len(self.stalls)} operation(s) past the stall limit of {cfg['stall_limit']} s")
        if self.failure_count:
            verdict.append(f"{self.failure_count} failed check(s)")
        probe = sorted(self.latency.get("probe", [])) or [0.0]
        if probe[-1] > cfg["probe_limit"]:
            verdict.append(f"a cached read took {probe[-1]:.1f} s (limit {cfg['probe_limit']} s)")
        ok = not verdict
        faults = self.faults()
        summary = {
            "seconds": round(self.now(), 1), "seed": cfg["seed"], "readers": cfg["readers"],
            "operations": dict(sorted(self.ops.items())), "operations_total": sum(self.ops.values()),
            "expected_errors": dict(sorted(self.errors.items())),
            "faults_injected": faults, "faults_total": sum(faults.values()),
            "pulls": self.pulls, "bytes_compared": self.bytes_read,
            "wrong_reads": self.wrong_reads, "wrong_bytes": self.wrong_bytes,
            "crashes": len(self.crashes), "crash_logs": [t for _, t in self.crashes],
            "errors_while_down": self.down_errors,
            "stalls": self.stalls, "failures": self.failures, "failure_count": self.failure_count,
            "probe_latency_s": {"p50": round(probe[len(probe) // 2], 4), "max": round(probe[-1], 3)},
            "rss": rss_txt, "fds": fds_txt,
            "samples": [list(s) for s in self.samples],
            "verdict": verdict, "ok": ok,
        }
        with open(cfg["summary"], "w") as f:
            json.dump(summary, f, indent=1)
        p = lambda *a: print(*a, flush=True)  # noqa: E731
        p(f"soak: {summary['seconds']} s, seed {cfg['seed']}, {cfg['readers']} readers, "
          f"{len(cfg['hung'])} hung-lookup threads, {cfg['storms']} lookup storms, {len(cfg['pullers'])} pullers")
        p(f"  operations     {summary['operations_total']}: "
          + ", ".join(f"{k} {v}" for k, v in summary["operations"].items()))
        p(f"  expected errs  " + (", ".join(f"{k} {v}" for k, v in summary["expected_errors"].items()) or "none"))
        p(f"  faults         {summary['faults_total']}: "
          + (", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none"))
        p(f"  pulls          started {self.pulls['started']}, killed -9 {self.pulls['killed']}, "
          f"ok {self.pulls['ok']}, failed {self.pulls['failed']}")
        p(f"  bytes compared {self.bytes_read}; wrong reads {self.wrong_reads}, wrong bytes {self.wrong_bytes}")
        p(f"  crashes        {len(self.crashes)} ({self.down_errors} operations met a dead daemon); "
          f"stalls {len(self.stalls)}; failed checks {self.failure_count}")
        p(f"  cached read    p50 {summary['probe_latency_s']['p50']} s, max {summary['probe_latency_s']['max']} s")
        p(f"  RSS            {rss_txt}")
        p(f"  open fds       {fds_txt}")
        for line in self.stalls[:10] + self.failures[:20]:
            p(f"  ! {line}")
        for t in summary["crash_logs"][:3]:
            p("  ! crash, log tail:\n    " + t.replace("\n", "\n    "))
        return ok


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    ok = Soak(cfg).run()
    sys.stdout.flush()
    # A thread stuck in a FUSE call that never returns keeps this process from being reaped, so
    # scripts/soak waits for this file, not for the process.
    with open(cfg["rc_file"] + ".tmp", "w") as f:
        f.write("0\n" if ok else "1\n")
    os.replace(cfg["rc_file"] + ".tmp", cfg["rc_file"])
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
