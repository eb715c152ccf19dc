"""scripts/bench erofs: an image's rootfs.erofs (issue 13) against `skopeo copy + umoci unpack +
mkfs.erofs` (Debian's erofs-utils, no compression) of the same image, measured in the same run:

- `imagefs build --format erofs` cold (empty store) and warm, as ratios to the peer's median
  (targets: 5x, 50x), and the image's size against mkfs.erofs' (within 1%);
- a sequential read through the mount against cat of a regular file (>= 0.5 of its speed), and the
  first byte of the cached rootfs.erofs on a fresh daemon (< 10 ms);
- the mount as a VMM uses it (MNT/REF:latest/rootfs.erofs), each run on a fresh daemon, timed from
  open() until the first byte ("ready") and until EOF (1 MiB reads, "whole image read") in the same
  open: cold over an empty store of its own each run (the pull, ingest and layout included; target
  5x faster than the peer), warm over the store cached before (50x);
- copying the finished image with `cp --reflink=auto`: the floor of any build that writes these
  bytes (peer/cp is the most a build's ratio can reach; context for the warm build, not a target).

Then boots of python and rust in QEMU (TCG), the rootfs.erofs disk against the initramfs
.cpio.gz: time to the command's first line, and the least guest memory (-m) each boots with.

What this build of imagefs lacks (`imagefs build --format erofs`, MNT/REF/rootfs.erofs) is said
on stdout and its rows are skipped, never estimated. The boot rows then boot mkfs.erofs' image of
the same tree with the same default init (labelled so): what a read-only root disk costs a boot
does not depend on which tool laid the image out, but the row is not imagefs' own disk.
"""
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import bench
from bench import FIXTURES, IMAGEFS, ROOT, Mount, Registry, log, shell_time, timed

LOADER_INIT = os.path.join(ROOT, "tests", "integration", "boot", "loader_init.sh")
LOADER_MODULES = ("virtio_pci", "virtio_blk", "erofs", "overlay")
LINE = bench.BENCH_LINE
# The command each image boots into (given as imagefs.exec= on the kernel command line, so the
# disk and the archive are the image's own, unchanged), and the start of its first line on the
# console, which is timed.
COMMANDS = {
    "python": (f"/usr/bin/python3 -c print('{LINE}')", LINE.encode() + b"\r\n"),
    "rust": ("/usr/bin/rustc --version", b"rustc 1."),  # the firmware's last line has no newline
    "tiny": (f"/bin/echo {LINE}", LINE.encode() + b"\r\n"),
}
ERO_CMDLINE = "root=/dev/vda ro rootfstype=erofs init=/.imagefs/init"
LABEL = 56  # the width of the report's row labels, so that the figures line up


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


# --- what this build has -----------------------------------------------------------------------

def try_build_erofs(cache, ref, out):
    """`imagefs build REF -o OUT --format erofs`: (seconds, None), or (None, why) when it fails."""
    start = time.perf_counter()
    p = subprocess.run([IMAGEFS, "build", "--cache-dir", cache, ref, "-o", out, "--format", "erofs"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[0]
    return wall, None


def open_and_read(path, size):
    """open() of path on the mount, then one 1-byte read, then 1 MiB reads to EOF. Returns the
    seconds from open() to the first byte and to the last; checks that `size` bytes came."""
    buf = bytearray(1 << 20)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        got = len(f.read(1))
        first = time.perf_counter() - t0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            got += n
        eof = time.perf_counter() - t0
    if got != size:
        raise SystemExit(f"bench: read {got} bytes of {path}, expected {size}")
    return first, eof


# --- the peer: skopeo copy + umoci unpack + mkfs.erofs -----------------------------------------

def default_init_files(cache, ref, work):
    """The default init and /.imagefs/init.conf as imagefs' archives carry them (cpio -i of an
    uncompressed `imagefs build`): the same two files rootfs.erofs holds."""
    os.makedirs(work, exist_ok=True)
    archive = os.path.join(work, "archive.cpio")
    run([IMAGEFS, "build", "--cache-dir", cache, ref, "-o", archive, "--format", "none"])
    with open(archive, "rb") as f:
        subprocess.run(["cpio", "-id", "--quiet", "init", ".imagefs/init.conf"], stdin=f, cwd=work, check=True)
    os.remove(archive)
    return os.path.join(work, "init"), os.path.join(work, ".imagefs", "init.conf")


def by_hand(tmp, gz_ref, init_files, out):
    """The pipeline a user writes without imagefs, timed as one shell command: skopeo copy of
    the image (gzip layers: umoci 0.4 reads no zstd), umoci unpack, the default init added as
    imagefs adds it, mkfs.erofs (uncompressed: erofs-utils' default). Returns seconds."""
    work = os.path.join(tmp, "hand")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    init, conf = init_files
    script = (f"skopeo copy --src-tls-verify=false docker://{gz_ref} oci:{work}/oci:latest >/dev/null && "
              f"umoci unpack --image {work}/oci:latest {work}/bundle >/dev/null && "
              f"mkdir -p {work}/bundle/rootfs/.imagefs && "
              f"install -m 0755 {init} {work}/bundle/rootfs/.imagefs/init && "
              f"install -m 0644 {conf} {work}/bundle/rootfs/.imagefs/init.conf && "
              f"mkfs.erofs --quiet {out} {work}/bundle/rootfs")
    wall, _ = timed(["bash", "-c", script])
    shutil.rmtree(work, ignore_errors=True)
    return wall


# --- boots -------------------------------------------------------------------------------------

def module_paths(kver):
    """LOADER_MODULES with their dependencies (modules.dep), each after what it needs."""
    base = f"/usr/lib/modules/{kver}"
    deps = {}
    for line in open(f"{base}/modules.dep"):
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {os.path.basename(m).split(".ko")[0].replace("-", "_"): m for m in deps}
    out = []

    def add(mod):
        for d in deps[mod]:
            add(d)
        if mod not in out:
            out.append(mod)

    for name in LOADER_MODULES:
        if name in by_name:
            add(by_name[name])
    if any(m.endswith("/libcrc32c.ko") for m in out) and "crc32c_generic" in by_name:
        out.insert(0, by_name["crc32c_generic"])  # libcrc32c asks the crypto API for crc32c
    return [os.path.join(base, m) for m in out]


def make_loader(kernel, out, tmp):
    """The loader initramfs of tests/integration/boot/erofs_boot_lib.sh (erofs_loader): static
    busybox, Debian's virtio/erofs/overlay modules, loader_init.sh as /init."""
    kver = os.path.basename(kernel)[len("vmlinuz-"):]
    busybox = shutil.which("busybox")
    d = os.path.join(tmp, "loader")
    shutil.rmtree(d, ignore_errors=True)
    for sub in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        os.makedirs(os.path.join(d, sub))
    shutil.copy(busybox, os.path.join(d, "bin", "busybox"))
    os.mknod(os.path.join(d, "dev", "console"), 0o600 | 0o020000, os.makedev(5, 1))
    shutil.copy(LOADER_INIT, os.path.join(d, "init"))
    os.chmod(os.path.join(d, "init"), 0o755)
    names = []
    for m in module_paths(kver):
        shutil.copy(m, os.path.join(d, "modules"))
        names.append(os.path.basename(m))
    with open(os.path.join(d, "modules", "order"), "w") as f:
        f.write("\n".join(names) + "\n")
    subprocess.run(f"find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6 > {out}",
                   shell=True, cwd=d, check=True)
    shutil.rmtree(d)


def boot(kernel, memory_mib, command, initrd, disk=None, timeout=240):
    """One QEMU boot (TCG, -M pc, as the boot tests): initrd alone, or the loader initrd with disk
    as a read-only virtio disk. Returns seconds from QEMU's start to the command's first line, or
    None when the guest never printed it (out of memory, panic, timeout)."""
    command, marker = command
    append = f"console=ttyS0 panic=-1 quiet imagefs.exec=\"{command}\""
    cmd = ["qemu-system-x86_64", "-M", "pc", "-m", str(memory_mib), "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", kernel, "-initrd", initrd]
    if disk:
        cmd += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        append += " " + ERO_CMDLINE
    cmd += ["-append", append]
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, first = b"", None
    while True:
        left = timeout - (time.perf_counter() - start)
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            p.kill()  # a guest short of memory may hang rather than panic
            break
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        if first is None and marker in seen:
            first = time.perf_counter() - start
    p.wait()
    ok = first is not None and b"imagefs-init: command exited with status 0" in seen
    return first if ok else None


def least_memory(kernel, command, initrd, disk, step, high):
    """The least -m (MiB, a multiple of `step`) with which the guest runs the command, by
    bisection between 32 MiB and `high`. Returns (MiB, boots), or (None, boots) when even `high`
    fails."""
    boots = 1
    if boot(kernel, high, command, initrd, disk) is None:
        return None, boots
    lo, hi = 32 // step, high // step  # lo fails (assumed: no Debian kernel boots in 32 MiB), hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        boots += 1
        if boot(kernel, mid * step, command, initrd, disk) is not None:
            hi = mid
        else:
            lo = mid
    return hi * step, boots


# --- the bench ---------------------------------------------------------------------------------

def bench_erofs(args):
    image = args.image
    boot_images = [i for i in args.boot_images.split(",") if i]
    if args.full:
        args.runs, args.boot_runs, args.mem_step = max(args.runs, 5), max(args.boot_runs, 3), 8
    need = sorted({image} | set(boot_images))
    run([FIXTURES, "build"] + need)
    med = statistics.median
    out = []  # report lines
    skipped = []
    with Registry() as reg, tempfile.TemporaryDirectory(prefix="imagefs-bench.") as tmp:
        subprocess.run([FIXTURES, "push", "--registry", reg.addr] + need, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ref = f"{reg.addr}/{image}"
        # umoci 0.4 reads no zstd: the peer pulls a gzip copy of the same image (made untimed).
        gz = os.path.join(tmp, "gz-layout")
        run([FIXTURES, "gzip-copy", os.path.join(ROOT, "build", "fixtures", "oci", image), gz])
        run(["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{gz}:latest",
             f"docker://{ref}-gz:latest"])
        cache = os.path.join(tmp, "cache")
        init_files = default_init_files(os.path.join(tmp, "init-cache"), ref, os.path.join(tmp, "init"))

        # Build times and sizes.
        ours_file = os.path.join(tmp, "ours.erofs")
        peer_file = os.path.join(tmp, "peer.erofs")
        copy_file = os.path.join(tmp, "copy.erofs")
        cold, warm, copy, peer, why = [], [], [], [], None
        for r in range(args.runs):
            peer.append(by_hand(tmp, f"{ref}-gz:latest", init_files, peer_file))
            shutil.rmtree(cache, ignore_errors=True)
            if why is None:
                t, why = try_build_erofs(cache, ref, ours_file)
                if t is not None:
                    cold.append(t)
                    warm.append(try_build_erofs(cache, ref, ours_file)[0])
                    # The floor of any build writing these bytes: copying the finished file.
                    copy.append(timed(["cp", "--reflink=auto", ours_file, copy_file])[0])
                    os.remove(copy_file)
            log(f"run {r + 1}: by hand {peer[-1]:.3f}s"
                + (f"; imagefs build --format erofs cold {cold[-1]:.3f}s warm {warm[-1]:.3f}s; "
                   f"cp of the image {copy[-1]:.4f}s" if cold else ""))
        peer_size = os.path.getsize(peer_file)
        by_hand_s = med(peer)

        def row(label, text):
            return f"  {label:<{LABEL}} {text}"

        def vs_peer(label, seconds, target):
            """A row timed against the peer's median: seconds, then how many times faster."""
            return row(label, f"{seconds:9.4f} s  -> {by_hand_s / seconds:8.2f}x faster ({target})")

        out.append(f"rootfs.erofs of {image}, against skopeo copy + umoci unpack + mkfs.erofs "
                   f"(erofs-utils {mkfs_version()}, uncompressed, the default init added), median of {args.runs} runs")
        out.append(row("by hand", f"{by_hand_s:9.4f} s  {peer_size:>11} bytes"))
        if cold:
            ours_size = os.path.getsize(ours_file)
            out.append(vs_peer("imagefs build --format erofs, cold (empty store)", med(cold), "target >= 5x"))
            out.append(vs_peer("imagefs build --format erofs, warm", med(warm), "target >= 50x"))
            out.append(row("size", f"{ours_size:>11} bytes vs mkfs.erofs {peer_size:>11}  "
                                   f"({100 * ours_size / peer_size - 100:+.2f}%, target <= +1%)"))
        else:
            skipped.append(f"imagefs build --format erofs: {why}")
            out.append(f"  imagefs build --format erofs: NOT AVAILABLE in this build ({why}): "
                       "size, cold and warm rows skipped")

        # The mount: first byte of a cached image's rootfs.erofs on a fresh daemon; sequential read.
        mnt = os.path.join(tmp, "mnt")
        mlog = os.path.join(tmp, "mount.log")
        mcache = os.path.join(tmp, "mcache")
        disks = {}
        m = Mount(mnt, mcache, mlog)
        try:
            path = f"{mnt}/{ref}:latest/rootfs.erofs"
            if os.path.exists(path):
                subprocess.run(["cat", path], check=True, stdout=subprocess.DEVNULL)  # caches it
                regular = os.path.join(tmp, "regular.erofs")
                shutil.copyfile(path, regular)
                size = os.path.getsize(regular)
                ours_r, peer_r = [], []
                for _ in range(max(args.runs * 3, 9) + 1):  # the first of each only warms
                    ours_r.append(shell_time(f"cat {path} >/dev/null"))
                    peer_r.append(shell_time(f"cat {regular} >/dev/null"))
                ours_r, peer_r = ours_r[1:], peer_r[1:]
                m.stop()
                # Warm: a fresh daemon over the store cached above, per run.
                ttfb, warm_eof = [], []
                for _ in range(max(args.runs * 2, 5)):
                    m = Mount(mnt, mcache, mlog)
                    first, eof = open_and_read(path, size)
                    ttfb.append(first)
                    warm_eof.append(eof)
                    m.stop()
                # Cold: a fresh daemon over an empty store of its own, per run.
                cold_first, cold_eof = [], []
                for r in range(max(args.runs, 3)):
                    ccache = os.path.join(tmp, f"cold-cache-{r}")
                    m = Mount(mnt, ccache, mlog)
                    first, eof = open_and_read(path, size)
                    m.stop()
                    shutil.rmtree(ccache, ignore_errors=True)
                    cold_first.append(first)
                    cold_eof.append(eof)
                    log(f"mount, cold run {r + 1}: first byte {first:.3f}s, whole image {eof:.3f}s")
                mib = size / 2**20
                out.append(row("sequential read through the mount",
                               f"{mib / med(ours_r):8.0f} MiB/s vs cat of a regular file {mib / med(peer_r):8.0f} MiB/s "
                               f"-> {med(peer_r) / med(ours_r):.2f} of cat's speed (target >= 0.5)"))
                out.append(row("first byte of the cached rootfs.erofs on a fresh daemon",
                               f"{med(ttfb) * 1000:9.2f} ms (max {max(ttfb) * 1000:.2f}; target < 10 ms)"))
                out.append(f"  the mount as a VMM uses it, against by hand: a fresh daemon each run, open() of "
                           f"MNT/REF:latest/rootfs.erofs until its first byte (ready) or its last ({mib:.1f} MiB, 1 MiB reads);")
                out.append(f"  cold: an empty store each run (the pull, ingest and layout included), median of "
                           f"{len(cold_first)}; warm: the store cached before, median of {len(ttfb)}")
                out.append(vs_peer("mount, cold (empty store), ready", med(cold_first), "target >= 5x"))
                out.append(vs_peer("mount, cold, whole image read", med(cold_eof), "target >= 5x"))
                out.append(vs_peer("mount, warm, ready", med(ttfb), "target >= 50x"))
                out.append(vs_peer("mount, warm, whole image read", med(warm_eof), "target >= 50x"))
            else:
                skipped.append("MNT/REF/rootfs.erofs")
                out.append("  MNT/REF/rootfs.erofs: NOT AVAILABLE in this build (no such file in the mount): "
                           "first-byte and sequential-read rows skipped")
            if copy:
                out.append(row("copying the finished image alone (cp)",
                               f"{med(copy):9.4f} s  -> the most any build that writes these bytes can reach: "
                               f"peer/cp = {by_hand_s / med(copy):.1f}x (context for the warm build, not a target)"))
            # The disks to boot, while the daemon serves them (the rows above stopped theirs).
            if boot_images:
                if not bench.mounted(mnt):
                    m = Mount(mnt, mcache, mlog)
                kernel = bench.boot_kernel()
                loader = os.path.join(tmp, "loader.cpio.gz")
                make_loader(kernel, loader, tmp)
                rows = []
                for name in boot_images:
                    iref = f"{reg.addr}/{name}"
                    archive = os.path.join(tmp, f"{name}.cpio.gz")
                    run([IMAGEFS, "build", "--cache-dir", mcache, iref, "-o", archive])
                    disk = f"{mnt}/{iref}:latest/rootfs.erofs"
                    kind = "rootfs.erofs (mount)"
                    if not os.path.exists(disk):
                        disk = os.path.join(tmp, f"{name}.erofs")
                        init = default_init_files(mcache, iref, os.path.join(tmp, f"init-{name}"))
                        igz = os.path.join(tmp, f"gz-{name}")
                        run([FIXTURES, "gzip-copy", os.path.join(ROOT, "build", "fixtures", "oci", name), igz])
                        run(["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests",
                             f"oci:{igz}:latest", f"docker://{iref}-gz:latest"])
                        by_hand(tmp, f"{iref}-gz:latest", init, disk)
                        kind = "mkfs.erofs image (NOT rootfs.erofs)"
                    else:
                        os.stat(disk)  # made before QEMU's clock starts
                    cmd = COMMANDS[name]
                    for label, initrd, d in (("initramfs .cpio.gz", archive, None), (kind, loader, disk)):
                        firsts = [boot(kernel, 2048, cmd, initrd, d) for _ in range(args.boot_runs)]
                        if any(f is None for f in firsts):
                            log(f"{name} {label}: the command did not run with -m 2048")
                            rows.append((name, label, None, None))
                            continue
                        mem, n = least_memory(kernel, cmd, initrd, d, args.mem_step, 2048)
                        log(f"{name} {label}: first line {[round(f, 2) for f in firsts]} s; least -m {mem} MiB ({n} boots)")
                        rows.append((name, label, med(firsts), mem))
                out.append(f"boots: QEMU (TCG, -M pc) start to the command's first line with -m 2048, median of "
                           f"{args.boot_runs}; least -m that runs the command (bisection, {args.mem_step} MiB steps)")
                out.append(f"  the disk boots with a loader initramfs ({os.path.getsize(loader)} bytes: busybox and "
                           f"Debian's {', '.join(LOADER_MODULES)} modules) and `{ERO_CMDLINE}`")
                for name, label, first, mem in rows:
                    if first is None:
                        out.append(f"  {name:7} {label:38} the command did not run with -m 2048 (timeout 240 s)")
                    else:
                        out.append(f"  {name:7} {label:38} first line {first:6.2f}s   least -m {mem} MiB")
        finally:
            if bench.mounted(mnt):
                subprocess.run(["fusermount3", "-u", "-z", mnt], check=False, stderr=subprocess.DEVNULL)
            pid = bench.daemon_pid(mnt)
            if pid:
                bench.wait_gone(pid, 5)
    print("\n".join(out))
    if skipped:
        print("SKIPPED (not in this build of imagefs): " + "; ".join(skipped))


def mkfs_version():
    p = subprocess.run(["mkfs.erofs", "--version"], capture_output=True, text=True)
    words = (p.stdout + p.stderr).split()
    return words[1] if len(words) > 1 else "?"


def add_parser(sub):
    e = sub.add_parser("erofs", help="rootfs.erofs vs skopeo+umoci+mkfs.erofs; boots erofs vs initramfs")
    e.add_argument("--image", default="python", help="the image of the build, size and read rows")
    e.add_argument("--boot-images", default="python,rust", help="images booted (empty: no boots)")
    e.add_argument("--runs", type=int, default=3)
    e.add_argument("--boot-runs", type=int, default=1, help="boots timed per image and disk")
    e.add_argument("--mem-step", type=int, default=64, help="MiB resolution of the -m bisection")
    e.add_argument("--full", action="store_true", help="5 runs, 3 timed boots, 8 MiB memory resolution")
    e.set_defaults(func=bench_erofs)
