#!/usr/bin/env python3
"""Benchmarks of imagefs against the tools it replaces, measured in the same run (scripts/bench)."""
import argparse
import json
import os
import shlex
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGEFS = os.environ.get("IMAGEFS_BIN") or os.path.join(ROOT, "build", "imagefs")
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


def many_entries_layout(path, count):
    """An image of `count` small files in 2 layers (an upper layer touches a few), written with
    the fixtures' layer writer: the `ls rootfs/` target is about an image this size."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from fixtures_lib import layer, oci
    per_dir = 300
    base = []
    for i in range(count):
        d = f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            base.append(layer.dir_(d))
        base.append(layer.file(f"{d}/f{i % per_dir:03d}", b"x" * (i % 64)))
    upper = [layer.file("d0000/f000", b"changed"), layer.file("d0001/.wh.f001")]
    lay = oci.Layout(path)
    top = lay.add_image([(base, "gzip", "many"), (upper, "gzip", "touch")], {"Cmd": ["/bin/sh"]},
                        {"os": "linux", "architecture": "amd64"})
    lay.finish(top)


def layers_bench(cache, ref):
    out = subprocess.run([os.path.join(ROOT, "build", "tests", "bench", "layers_bench"), cache, ref],
                         check=True, text=True, stdout=subprocess.PIPE).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def bench_layers(args):
    images = args.images.split(",")
    subprocess.run([FIXTURES, "build"] + images, check=True, stdout=subprocess.DEVNULL)
    rows = []
    with Registry() as reg, tempfile.TemporaryDirectory(prefix="imagefs-bench.") as tmp:
        subprocess.run([FIXTURES, "push", "--registry", reg.addr] + images, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for image in images:
            ingest, umoci = [], []
            for run in range(args.runs):
                cache = os.path.join(tmp, "cache")
                shutil.rmtree(cache, ignore_errors=True)
                subprocess.run([IMAGEFS, "pull", "--cache-dir", cache, f"{reg.addr}/{image}"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                m = layers_bench(cache, f"{reg.addr}/{image}")
                ingest.append(float(m["ingest_ms"]) / 1000)
                # umoci unpack of the same image (zstd layers recompressed as gzip, which umoci 0.4
                # needs; the recompression is not timed).
                gz = os.path.join(tmp, "gz")
                bundle = os.path.join(tmp, "bundle")
                shutil.rmtree(gz, ignore_errors=True)
                shutil.rmtree(bundle, ignore_errors=True)
                subprocess.run([FIXTURES, "gzip-copy", os.path.join(ROOT, "build", "fixtures", "oci", image), gz],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wall, _ = timed(["umoci", "unpack", "--image", f"{gz}:latest", bundle])
                umoci.append(wall)
                shutil.rmtree(bundle, ignore_errors=True)
                log(f"{image} run {run + 1}: imagefs ingest {ingest[-1]:.3f}s, umoci unpack {umoci[-1]:.3f}s")
            rows.append((image, statistics.median(ingest), statistics.median(umoci), m))

        layout = os.path.join(tmp, "many")
        many_entries_layout(layout, args.entries)
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{layout}:latest",
                        f"docker://{reg.addr}/many:latest"], check=True, stdout=subprocess.DEVNULL)
        cache = os.path.join(tmp, "cache")
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run([IMAGEFS, "pull", "--cache-dir", cache, f"{reg.addr}/many"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        layers_bench(cache, f"{reg.addr}/many")  # ingest
        many = layers_bench(cache, f"{reg.addr}/many")  # after ingest

    print(f"layers: ingest vs umoci unpack (same images, same run), median of {args.runs} runs")
    print(f"{'image':10} {'entries':>8} {'imagefs':>9} {'umoci':>9} {'ratio':>7} {'4K read cold':>13} {'warm':>9} {'peak RSS':>9}")
    for image, ours, peer, m in rows:
        print(f"{image:10} {m['entries']:>8} {ours:8.3f}s {peer:8.3f}s {peer / ours:6.2f}x "
              f"{float(m['read_4k_cold_max_ms']):10.3f}ms {float(m['read_4k_warm_max_ms']):7.3f}ms "
              f"{int(m['peak_rss_kib']) / 1024:7.1f}MiB")
    print(f"ls of the merged root of an image with {many['entries']} entries, after ingest: "
          f"{float(many['ls_root_ms']):.2f} ms (in-process, {many['ls_root_entries']} root entries)")
    print("targets: ingest at least as fast as umoci (ratio >= 1); ls < 50 ms; cold 4K read < 50 ms, "
          "warm < 1 ms; memory bounded")
    print("reads: max of 20 random 4 KiB reads of the largest file; cold = page cache dropped"
          + ("" if rows and rows[0][3].get("page_cache_dropped") == "1" else " (NOT dropped: not root)"))


def derived_layout(base_layout, path, extra_files):
    """An image = every layer of `base_layout` plus one more layer holding `extra_files`
    ({path: bytes}): a second image that shares the first one's layers."""
    import json
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from fixtures_lib import layer, oci
    idx = json.load(open(os.path.join(base_layout, "index.json")))
    blob = lambda d: os.path.join(base_layout, "blobs", "sha256", d.split(":")[1])
    manifest = json.load(open(blob(idx["manifests"][0]["digest"])))
    config = json.load(open(blob(manifest["config"]["digest"])))
    lay = oci.Layout(path)
    for d in manifest["layers"]:
        shutil.copy(blob(d["digest"]), os.path.join(lay.blobs, d["digest"].split(":")[1]))
    desc, diff = lay.add_layer([layer.file(p, data, mode=0o755) for p, data in extra_files.items()], "gzip")
    config["rootfs"]["diff_ids"].append(diff)
    config.pop("history", None)
    cfg = lay.add_bytes(oci.canonical(config), "application/vnd.oci.image.config.v1+json")
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg,
         "layers": manifest["layers"] + [desc]}
    top = lay.add_bytes(oci.canonical(m), "application/vnd.oci.image.manifest.v1+json")
    lay.finish(top)


def bench_build(args):
    image = args.image
    subprocess.run([FIXTURES, "build", image], check=True, stdout=subprocess.DEVNULL)
    with Registry() as reg, tempfile.TemporaryDirectory(prefix="imagefs-bench.") as tmp:
        subprocess.run([FIXTURES, "push", "--registry", reg.addr, image], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        app = os.path.join(tmp, "app-layout")
        derived_layout(os.path.join(ROOT, "build", "fixtures", "oci", image), app,
                       {"app/main.py": b"print('hello')\n" * 1000, "app/data.bin": os.urandom(2 << 20)})
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{app}:latest",
                        f"docker://{reg.addr}/{image}-app:latest"], check=True, stdout=subprocess.DEVNULL)
        # umoci 0.4 reads no zstd: the hand-made pipeline pulls a copy of the image with its zstd
        # layers recompressed as gzip (same files, made before timing), as its user would need.
        gz = os.path.join(tmp, "gz-layout")
        subprocess.run([FIXTURES, "gzip-copy", os.path.join(ROOT, "build", "fixtures", "oci", image), gz],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{gz}:latest",
                        f"docker://{reg.addr}/{image}-gz:latest"], check=True, stdout=subprocess.DEVNULL)
        ref = f"{reg.addr}/{image}"
        agent = os.path.join(tmp, "agent")
        out = os.path.join(tmp, "out.cpio.gz")

        def imagefs_build(cache, *extra, target=ref):
            return timed([IMAGEFS, "build", "--cache-dir", cache, target, "-o", out, *extra])

        def by_hand(compressor):
            work = os.path.join(tmp, "hand")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            script = (f"skopeo copy --src-tls-verify=false docker://{ref}-gz:latest oci:{work}/oci:latest >/dev/null && "
                      f"umoci unpack --image {work}/oci:latest {work}/bundle >/dev/null && "
                      f"cd {work}/bundle/rootfs && find . | cpio -o -H newc --quiet | {compressor} > {work}/initrd")
            wall, _ = timed(["bash", "-c", script])
            shutil.rmtree(work, ignore_errors=True)
            return wall

        cold, warm, inject, pipe, pipe_pigz, second = [], [], [], [], [], []
        for run in range(args.runs):
            cache = os.path.join(tmp, "cache")
            shutil.rmtree(cache, ignore_errors=True)
            with open(agent, "wb") as f:
                f.write(os.urandom(1 << 20))
            cold.append(imagefs_build(cache, "--inject", f"{agent}:/usr/bin/agent")[0])
            warm.append(imagefs_build(cache, "--inject", f"{agent}:/usr/bin/agent")[0])
            with open(agent, "wb") as f:
                f.write(os.urandom(1 << 20))
            inject.append(imagefs_build(cache, "--inject", f"{agent}:/usr/bin/agent")[0])
            second.append(imagefs_build(cache, "--inject", f"{agent}:/usr/bin/agent", target=f"{ref}-app")[0])
            pipe.append(by_hand("gzip -6"))
            pipe_pigz.append(by_hand("pigz -6"))
            log(f"run {run + 1}: cold {cold[-1]:.3f}s warm {warm[-1]:.3f}s inject-changed {inject[-1]:.3f}s "
                f"second-image {second[-1]:.3f}s; by hand gzip {pipe[-1]:.3f}s pigz {pipe_pigz[-1]:.3f}s")

        # Sizes: our archive against gzip -6/-9 and zstd -3 of the very same cpio bytes.
        cache = os.path.join(tmp, "cache")
        sizes = {}
        for fmt, extra in (("none", []), ("gz", []), ("gz12", ["--level", "12"]), ("zst", [])):
            f = os.path.join(tmp, f"size.{fmt}")
            subprocess.run([IMAGEFS, "build", "--cache-dir", cache, ref, "-o", f, "--format",
                            fmt.replace("12", ""), *extra], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            sizes[fmt] = os.path.getsize(f)
        raw = os.path.join(tmp, "size.none")
        peer = {}
        for name, cmd in (("gzip -6", ["gzip", "-6"]), ("gzip -9", ["gzip", "-9"]), ("zstd -3", ["zstd", "-3", "-q"])):
            with open(raw, "rb") as src:
                peer[name] = len(subprocess.run(cmd, stdin=src, stdout=subprocess.PIPE, check=True).stdout)

    med = statistics.median
    print(f"build of {image} (with a 1 MiB injected agent), local registry, median of {args.runs} runs")
    print(f"  cold (empty cache)            {med(cold):7.3f}s")
    print(f"  by hand: skopeo+umoci+cpio+gzip -6  {med(pipe):7.3f}s  -> imagefs {med(pipe) / med(cold):5.2f}x faster (target >= 4x)")
    print(f"  by hand: skopeo+umoci+cpio+pigz -6  {med(pipe_pigz):7.3f}s  -> imagefs {med(pipe_pigz) / med(cold):5.2f}x faster")
    print(f"  warm (everything cached)      {med(warm):7.3f}s  -> {med(cold) / med(warm):6.1f}x faster than cold (target >= 20x)")
    print(f"  injected file changed         {med(inject):7.3f}s  -> {100 * med(inject) / med(cold):5.1f}% of cold (target < 5%)")
    print(f"  second image, base shared (+1 layer, 2 MiB) {med(second):7.3f}s  -> {100 * med(second) / med(cold):5.1f}% of cold")
    print(f"sizes of the same cpio ({sizes['none']} bytes):")
    print(f"  .cpio.gz level 6  {sizes['gz']:>10}  vs gzip -6 {peer['gzip -6']:>10}  ({100 * sizes['gz'] / peer['gzip -6'] - 100:+.1f}%, target <= 0)")
    print(f"  .cpio.gz level 12 {sizes['gz12']:>10}  vs gzip -9 {peer['gzip -9']:>10}  ({100 * sizes['gz12'] / peer['gzip -9'] - 100:+.1f}%, target <= 0)")
    print(f"  .cpio.zst         {sizes['zst']:>10}  vs zstd -3 {peer['zstd -3']:>10}  ({100 * sizes['zst'] / peer['zstd -3'] - 100:+.1f}%, target within 3%)")


# --- mount -----------------------------------------------------------------------------------

class Mount:
    """`imagefs mount` in the background (as users run it); stop() unmounts and waits for the
    daemon to exit. The daemon's pid is found in /proc by its command line."""

    def __init__(self, mnt, cache, log_file, *extra):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        subprocess.run([IMAGEFS, "mount", mnt, "--cache-dir", cache, "--log", log_file, *extra], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        self.pid = daemon_pid(mnt)
        if not self.pid:
            raise SystemExit(f"bench: no imagefs daemon serves {mnt}")

    def status_kib(self, field):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def vm_hwm_kib(self):
        return self.status_kib("VmHWM")

    def stop(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=False, stderr=subprocess.DEVNULL)
        wait_gone(self.pid)


def daemon_pid(mnt):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if "imagefs" not in os.readlink(f"/proc/{p}/exe"):
                continue
            args = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "mount" in args and mnt in args:
            return int(p)
    return None


def wait_gone(pid, seconds=15):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, 9)


def mounted(mnt):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == mnt for line in f)


class Overlay:
    """fuse-overlayfs (Debian's) over an image's layers, each unpacked by GNU tar into its own
    directory, whiteouts converted to what overlayfs reads: `.wh.NAME` -> a 0/0 character device
    NAME, `.wh..wh..opq` -> trusted.overlay.opaque=y on its directory. Read-only (no upperdir)."""

    def __init__(self, layout, work, mnt):
        import json
        blob = lambda d: os.path.join(layout, "blobs", "sha256", d.split(":")[1])
        idx = json.load(open(os.path.join(layout, "index.json")))
        manifest = json.load(open(blob(idx["manifests"][0]["digest"])))
        self.lowers = []
        for i, d in enumerate(manifest["layers"]):
            lower = os.path.join(work, f"layer{i}")
            os.makedirs(lower)
            subprocess.run(["tar", "-C", lower, "-xpf", blob(d["digest"]), "--numeric-owner", "--xattrs",
                            "--xattrs-include=*"], check=True)
            self._convert_whiteouts(lower)
            self.lowers.append(lower)
        self.mnt = mnt
        os.makedirs(mnt, exist_ok=True)

    @staticmethod
    def _convert_whiteouts(root):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames + dirnames:
                if not name.startswith(".wh."):
                    continue
                path = os.path.join(dirpath, name)
                os.remove(path)
                if name == ".wh..wh..opq":
                    os.setxattr(dirpath, "trusted.overlay.opaque", b"y")
                    continue
                target = os.path.join(dirpath, name[4:])
                if os.path.lexists(target):  # recreated in this very layer: it hides the lower ones
                    if os.path.isdir(target) and not os.path.islink(target):
                        os.setxattr(target, "trusted.overlay.opaque", b"y")
                    continue
                os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(0, 0))

    def start(self):
        lowerdir = ":".join(reversed(self.lowers))  # the top layer first
        subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={lowerdir}", self.mnt], check=True,
                       stderr=subprocess.DEVNULL)
        self.pid = None

    def stop(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=True)
        for _ in range(100):
            if not mounted(self.mnt):
                return
            time.sleep(0.05)


def shell_time(script):
    start = time.perf_counter()
    subprocess.run(["bash", "-c", "set -o pipefail; " + script], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def tree_listing(root):
    """Paths, types, sizes and modes, sorted: what a find/tar over the tree walks."""
    out = subprocess.run(["find", ".", "-printf", "%P|%y|%m|%U:%G|%s|%l\n"], cwd=root, check=True,
                         stdout=subprocess.PIPE).stdout.decode(errors="replace").splitlines()
    # Directory sizes are the file system's own.
    return sorted(l if l.split("|")[1] != "d" else "|".join(l.split("|")[:4]) for l in out)


def bench_mount(args):
    images = args.images.split(",")
    need = sorted(set(images) | {"python", args.rss_image})
    subprocess.run([FIXTURES, "build"] + need, check=True, stdout=subprocess.DEVNULL)
    med = statistics.median
    with Registry() as reg, tempfile.TemporaryDirectory(prefix="imagefs-bench.") as tmp:
        subprocess.run([FIXTURES, "push", "--registry", reg.addr] + need, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = os.path.join(tmp, "cache")
        mnt = os.path.join(tmp, "mnt")
        mlog = os.path.join(tmp, "mount.log")
        mounts = []

        def new_mount(*extra):
            m = Mount(mnt, cache, mlog, *extra)
            mounts.append(m)
            return m

        try:
            # Peak RSS: a daemon on an empty store pulls the image and serves find, tar and an archive.
            big = args.rss_image
            m = new_mount()
            root = f"{mnt}/{reg.addr}/{big}:latest"
            t_rss = shell_time(f"find {root}/rootfs -ls >/dev/null && tar -C {root}/rootfs -cf - . | cat >/dev/null")
            rss_tree = m.vm_hwm_kib()
            t_rss += shell_time(f"cat {root}/initramfs.cpio.gz >/dev/null")
            rss_cold = m.vm_hwm_kib()
            anon_after = m.status_kib("RssAnon")
            m.stop()
            m = new_mount()
            t_rss_warm = shell_time(f"find {root}/rootfs -ls >/dev/null && tar -C {root}/rootfs -cf - . | cat >/dev/null "
                                    f"&& cat {root}/initramfs.cpio.gz >/dev/null")
            rss_warm = m.vm_hwm_kib()
            log(f"{big}: pull + find + tar + cat gz {t_rss:.1f}s, peak RSS {rss_cold / 1024:.1f} MiB; "
                f"fresh daemon on the warm store {t_rss_warm:.1f}s, peak RSS {rss_warm / 1024:.1f} MiB")

            # Warm read of python's initramfs.cpio.gz vs cat of a regular file of the same bytes.
            py = f"{mnt}/{reg.addr}/python:latest"
            archive = f"{py}/initramfs.cpio.gz"
            subprocess.run(["cat", archive], check=True, stdout=subprocess.DEVNULL)
            regular = os.path.join(tmp, "regular.cpio.gz")
            shutil.copyfile(archive, regular)
            size = os.path.getsize(regular)
            warm_runs = max(args.runs * 3, 9)
            ours, peer = [], []
            for _ in range(warm_runs + 1):  # the first of each only warms
                ours.append(shell_time(f"cat {archive} >/dev/null"))
                peer.append(shell_time(f"cat {regular} >/dev/null"))
            ours, peer = ours[1:], peer[1:]
            log(f"warm read of {size} bytes: mount {med(ours) * 1000:.1f} ms, regular file {med(peer) * 1000:.1f} ms")
            m.stop()

            # Time to first byte of a cached image's archive on a fresh daemon (open + read 1 byte,
            # timed in this process), by tag and by digest.
            ttfb_tag, ttfb_digest, ttfb_second = [], [], []
            for _ in range(max(args.runs * 2, 5)):
                m = new_mount()
                t0 = time.perf_counter()
                fd = os.open(archive, os.O_RDONLY)
                os.read(fd, 1)
                ttfb_tag.append(time.perf_counter() - t0)
                os.close(fd)
                t0 = time.perf_counter()
                fd = os.open(archive, os.O_RDONLY)
                os.read(fd, 1)
                ttfb_second.append(time.perf_counter() - t0)
                os.close(fd)
                digest = open(f"{py}/digest").read().strip()
                m.stop()
                m = new_mount()
                path = f"{mnt}/{reg.addr}/python@{digest}/initramfs.cpio.gz"
                t0 = time.perf_counter()
                fd = os.open(path, os.O_RDONLY)
                os.read(fd, 1)
                ttfb_digest.append(time.perf_counter() - t0)
                os.close(fd)
                m.stop()
            log(f"first byte on a fresh daemon: tag {[round(x * 1000, 2) for x in ttfb_tag]} ms, "
                f"digest {[round(x * 1000, 2) for x in ttfb_digest]} ms")

            # find / tar: imagefs vs fuse-overlayfs over the same layers vs the plain unpacked tree.
            walks = {
                "find -ls": "find {root} -ls >/dev/null",
                "tar -cf /dev/null": "tar -C {root} -cf /dev/null .",
                "tar -c | cat": "tar -C {root} -cf - . | cat >/dev/null",
            }
            rows = []
            for image in images:
                work = os.path.join(tmp, f"ovl-{image}")
                layout = os.path.join(ROOT, "build", "fixtures", "oci", image)
                ovl = Overlay(layout, work, os.path.join(tmp, f"ovl-mnt-{image}"))
                gz = os.path.join(tmp, f"gz-{image}")
                bundle = os.path.join(tmp, f"bundle-{image}")
                subprocess.run([FIXTURES, "gzip-copy", layout, gz], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                subprocess.run(["umoci", "unpack", "--image", f"{gz}:latest", bundle], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                plain = os.path.join(bundle, "rootfs")
                ours_root = f"{mnt}/{reg.addr}/{image}:latest/rootfs"
                # The three trees hold the same entries (a check that the comparison is fair).
                ovl.start()
                m = new_mount()
                ref = tree_listing(plain)
                same = {"imagefs": tree_listing(ours_root) == ref, "fuse-overlayfs": tree_listing(ovl.mnt) == ref}
                m.stop()
                ovl.stop()
                for what, cmd in walks.items():
                    roots = {"imagefs": ours_root, "fuse-overlayfs": ovl.mnt, "plain": plain}
                    firsts = {tool: [] for tool in roots}
                    warm = {tool: [] for tool in roots}
                    # First walks: each on a fresh mount (page cache of the underlying files warm),
                    # --runs rounds with both file systems freshly mounted and the tools taking turns
                    # (the order rotating); then, on the last round's mounts, warm walks taking
                    # turns too: at least --runs each, more for short walks (up to 1 s of them, 40
                    # at most). Taking turns spreads the load of a shared machine over all tools.
                    order = list(roots)
                    for k in range(args.runs):
                        m = new_mount()
                        ovl.start()
                        turn = order[k % 3:] + order[:k % 3]
                        for tool in turn:
                            firsts[tool].append(shell_time(cmd.format(root=roots[tool])))
                        if k == args.runs - 1:
                            while any(len(warm[t]) < args.runs or (sum(warm[t]) < 1.0 and len(warm[t]) < 40)
                                      for t in roots):
                                for tool in turn:
                                    warm[tool].append(shell_time(cmd.format(root=roots[tool])))
                        m.stop()
                        ovl.stop()
                    res = {tool: (med(firsts[tool]), med(warm[tool])) for tool in roots}
                    log(f"{image} {what}: " + ", ".join(f"{k} {v[0]:.3f}s first, {v[1]:.3f}s warm" for k, v in res.items()))
                    rows.append((image, what, res))
                rows.append((image, "same tree", same))
                shutil.rmtree(work, ignore_errors=True)
                shutil.rmtree(bundle, ignore_errors=True)
                shutil.rmtree(gz, ignore_errors=True)
        finally:
            for m in mounts:
                if mounted(m.mnt):
                    subprocess.run(["fusermount3", "-u", "-z", m.mnt], check=False, stderr=subprocess.DEVNULL)
                if daemon_pid(m.mnt):
                    wait_gone(m.pid, 5)
            for image in images:
                d = os.path.join(tmp, f"ovl-mnt-{image}")
                if os.path.isdir(d) and mounted(d):
                    subprocess.run(["fusermount3", "-u", "-z", d], check=False, stderr=subprocess.DEVNULL)

    mib = size / 2**20
    print(f"mount: imagefs mount vs cat of a regular file, fuse-overlayfs and the plain unpacked tree (same run)")
    print(f"warm read of python's initramfs.cpio.gz ({size} bytes), median of {warm_runs}:")
    print(f"  through the mount   {med(ours) * 1000:8.2f} ms  {mib / med(ours):8.0f} MiB/s")
    print(f"  cat of a file       {med(peer) * 1000:8.2f} ms  {mib / med(peer):8.0f} MiB/s")
    print(f"  -> {med(peer) / med(ours):.2f} of cat's speed (target >= 0.5)")
    print(f"time to first byte (open + read 1 byte) of python's cached initramfs.cpio.gz, fresh daemon, "
          f"median of {len(ttfb_tag)}:")
    print(f"  by tag     {med(ttfb_tag) * 1000:7.2f} ms (max {max(ttfb_tag) * 1000:.2f})  (target < 10 ms)")
    print(f"  by digest  {med(ttfb_digest) * 1000:7.2f} ms (max {max(ttfb_digest) * 1000:.2f})  (target < 10 ms)")
    print(f"  a second open on the same daemon {med(ttfb_second) * 1000:.3f} ms")
    print(f"tree walks, seconds (first = on a fresh mount, page cache of the underlying files warm, median of "
          f"{args.runs} mounts; warm = median of {args.runs} or more runs on one mount, up to 1 s of them):")
    print(f"{'image':7} {'walk':24} {'imagefs':>9} {'fuse-overlayfs':>15} {'plain dir':>9} "
          f"{'vs overlayfs':>13} {'vs plain':>9}")
    for image, what, res in rows:
        if what == "same tree":
            print(f"{image:7} same entries as umoci unpack: "
                  + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in res.items()))
            continue
        o, f, p = res["imagefs"], res["fuse-overlayfs"], res["plain"]
        for label, i in (("first", 0), ("warm", 1)):
            print(f"{image:7} {what + ' ' + label:24} {o[i]:9.3f} {f[i]:15.3f} {p[1]:9.3f} "
                  f"{f[i] / o[i]:12.2f}x {p[1] / o[i]:8.2f}x")
    print("  (ratios: the other's time / imagefs' time; >= 1 means imagefs is at least as fast. "
          "target: >= 1 vs fuse-overlayfs; vs plain is reported. tar -cf /dev/null reads no file data "
          "(GNU tar skips it); tar -c | cat reads everything)")
    print(f"daemon peak RSS (VmHWM) serving {big}:")
    print(f"  empty store: pull, find -ls and tar -c of rootfs   {rss_tree / 1024:7.1f} MiB")
    print(f"  then cat initramfs.cpio.gz (made on this read)     {rss_cold / 1024:7.1f} MiB "
          f"(anonymous memory still held after it: {anon_after / 1024:.1f} MiB)")
    print(f"  a fresh daemon on the warm store: find, tar, cat   {rss_warm / 1024:7.1f} MiB")


BENCH_LINE = "IMAGEFS-BENCH-FIRST-LINE"
# The command each image boots into: its first line on the console is what is timed.
BOOT_COMMANDS = {
    "tiny": ["/bin/echo", BENCH_LINE],
    "python": ["/usr/bin/python3", "-c", f"print('{BENCH_LINE}')"],
}


def boot_kernel():
    kernels = sorted((f for f in os.listdir("/boot") if f.startswith("vmlinuz-")),
                     key=lambda f: [int(x) if x.isdigit() else x for x in f.replace("-", ".").split(".")])
    if not kernels:
        raise SystemExit("bench: no /boot/vmlinuz-* (scripts/setup installs linux-image-amd64)")
    return os.path.join("/boot", kernels[-1])


def boot_once(kernel, initrd, timeout=120):
    """Boots initrd in QEMU (TCG, as the boot tests do) and reads the serial console as it comes.
    Returns (seconds from QEMU's start to the first line of the command, seconds until QEMU
    exited by itself)."""
    cmd = ["qemu-system-x86_64", "-M", "pc", "-m", "512", "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet"]
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, first = b"", None
    while True:
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        if first is None and BENCH_LINE.encode() + b"\r\n" in seen:
            first = time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            p.kill()
            break
    p.wait()
    total = time.perf_counter() - start
    if first is None or p.returncode != 0:
        raise SystemExit(f"bench: booting {initrd} failed (QEMU exit {p.returncode}):\n"
                         f"{seen.decode(errors='replace')[-3000:]}")
    return first, total


def bench_boot(args):
    images = args.images.split(",")
    formats = args.formats.split(",")
    kernel = boot_kernel()
    subprocess.run([FIXTURES, "build"] + images, check=True, stdout=subprocess.DEVNULL)
    rows = []
    with Registry() as reg, tempfile.TemporaryDirectory(prefix="imagefs-bench.") as tmp:
        subprocess.run([FIXTURES, "push", "--registry", reg.addr] + images, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = os.path.join(tmp, "cache")
        for image in images:
            command = BOOT_COMMANDS[image]
            # The peer: the /init people write by hand, a busybox script that mounts what the
            # command needs and runs it (both images have busybox at /bin/sh).
            script = os.path.join(tmp, f"{image}.init")
            with open(script, "w") as f:
                f.write("#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n"
                        "mount -t devtmpfs dev /dev\n" + " ".join(shlex.quote(a) for a in command) +
                        "\npoweroff -f\n")
            for fmt in formats:
                ours, peer = os.path.join(tmp, f"{image}.{fmt}"), os.path.join(tmp, f"{image}-sh.{fmt}")
                for out, extra in ((ours, ["--exec", json.dumps(command)]), (peer, ["--init", script])):
                    subprocess.run([IMAGEFS, "build", "--cache-dir", cache, f"{reg.addr}/{image}", "-o", out,
                                    "--format", fmt, *extra], check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                first, total, sh_first = [], [], []
                for run in range(args.runs):
                    a, b = boot_once(kernel, ours)
                    c, _ = boot_once(kernel, peer)
                    first.append(a)
                    total.append(b)
                    sh_first.append(c)
                    log(f"{image}.{fmt} run {run + 1}: first line {a:.2f}s, QEMU exited {b:.2f}s; "
                        f"shell /init first line {c:.2f}s")
                med = statistics.median
                rows.append((image, fmt, os.path.getsize(ours), med(first), med(total), med(sh_first)))
    print(f"boot: QEMU start to the command's first line on the console, median of {args.runs} runs")
    print(f"(QEMU {subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True).stdout.split()[3]}, "
          f"TCG, -M pc -m 512, {os.path.basename(kernel)}, console=ttyS0 quiet)")
    print(f"{'image':8} {'format':6} {'archive':>10} {'first line':>11} {'QEMU exit':>10} {'shell /init':>12}")
    for image, fmt, size, first, total, sh_first in rows:
        print(f"{image:8} {fmt:6} {size / 2**20:8.1f}MB {first:10.2f}s {total:9.2f}s {sh_first:11.2f}s")
    print("first line: default /init running the command (--exec); QEMU exit: after the command's exit, "
          "power-off included; shell /init: a busybox script (--init) mounting proc, sys, dev and running it")


def main():
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    pull = sub.add_parser("pull", help="imagefs pull vs skopeo copy")
    pull.add_argument("--images", default="python")
    pull.add_argument("--runs", type=int, default=9)
    pull.set_defaults(func=bench_pull)
    lay = sub.add_parser("layers", help="layer ingest vs umoci unpack; ls and random reads")
    lay.add_argument("--images", default="python")
    lay.add_argument("--runs", type=int, default=3)
    lay.add_argument("--entries", type=int, default=100000)
    lay.set_defaults(func=bench_layers)
    build = sub.add_parser("build", help="imagefs build vs skopeo+umoci+cpio+gzip; warm, inject, sizes")
    build.add_argument("--image", default="python")
    build.add_argument("--runs", type=int, default=3)
    build.set_defaults(func=bench_build)
    mount = sub.add_parser("mount", help="imagefs mount: warm reads vs cat, first byte, find/tar vs fuse-overlayfs, RSS")
    mount.add_argument("--images", default="python,rust", help="images for the find/tar walks")
    mount.add_argument("--rss-image", default="rust", help="the image served while peak RSS is measured")
    mount.add_argument("--runs", type=int, default=3)
    mount.set_defaults(func=bench_mount)
    boot = sub.add_parser("boot", help="QEMU start to the command's first line, per image and format")
    boot.add_argument("--images", default="tiny,python")
    boot.add_argument("--formats", default="gz,zst,none")
    boot.add_argument("--runs", type=int, default=3)
    boot.set_defaults(func=bench_boot)
    fleet = sub.add_parser("fleet", help="N stores pulling one image at once: direct vs through one mirror")
    fleet.add_argument("--image", default="python")
    fleet.add_argument("--stores", type=int, default=3, help="stores (hosts) pulling at once")
    fleet.add_argument("--runs", type=int, default=3)
    fleet.set_defaults(func=lambda a: __import__("fleet").bench_fleet(a))
    import bench_erofs  # its own file (scripts/bench_lib/bench_erofs.py)
    bench_erofs.add_parser(sub)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
