# Helpers for the boot tests (sourced after tests/integration/lib.sh): boot an initramfs with
# Debian's kernel in QEMU and read its serial console, and check an archive's newc structure and
# compressed segments on the host.
#
#   boot_kernel                  print the kernel to boot: IMAGEFS_BOOT_KERNEL, else the newest
#                                /boot/vmlinuz-* (linux-image-amd64, installed by scripts/setup)
#   boot_initramfs INITRD [EXTRA_KERNEL_ARGS]
#                                boot INITRD; return when QEMU exits (the guest powered off, or its
#                                kernel panicked: panic=-1 reboots and -no-reboot ends QEMU), or
#                                fail after IMAGEFS_BOOT_TIMEOUT seconds (default 60). When the
#                                archive's /init cannot run (missing, or not unpacked), the kernel
#                                falls back to init=, which names nothing: it panics at once
#                                instead of running an image's /sbin/init that waits at a console. The console
#                                is in $BOOT_LOG (carriage returns and escapes removed); BOOT_SECONDS is the
#                                wall time. Returns QEMU's exit status; prints the log when QEMU
#                                fails or times out. BOOT_PANIC= (empty) leaves out panic=-1, so
#                                that only a guest that powers off ends QEMU (a panic then waits
#                                for the timeout).
#   boot_expect_ok INITRD [EXTRA_KERNEL_ARGS]
#                                boot_initramfs, then fail (printing the console) unless the guest
#                                printed IMAGEFS-BOOT-OK (tests/integration/boot/check_init.sh) and
#                                no IMAGEFS-CHECK FAIL, and the kernel did not complain about the
#                                archive ("Initramfs unpacking failed", which it may print and
#                                still run /init)
#   newc_check ARCHIVE FORMAT [--init] [--console]
#                                FORMAT gz|zst|none. Splits ARCHIVE into its gzip members or zstd
#                                frames and fails unless each one ends exactly on a cpio entry
#                                boundary (the kernel's rule, design.md decision 2), and checks the
#                                newc rules of decision 3 (see _newc_check below). --init: /init is a
#                                0755 root regular file; --console: dev/console is char 5,1.
#                                Prints one summary line: entries, members, sizes.
#
# QEMU runs with TCG, never -enable-kvm (nested KVM hangs on these machines). Machine `pc`:
# `microvm` boots as fast but its kernel hangs now and then ("tsc: Unable to calibrate against
# PIT", no HPET/PM timer under TCG), so it is not used.
# shellcheck shell=bash

IMAGEFS_BOOT_TIMEOUT=${IMAGEFS_BOOT_TIMEOUT:-60}
# shellcheck disable=SC2034 # read by the tests
BOOT_LOG='' BOOT_SECONDS=''
_boot_pid=
_boot_count=0

_boot_kill() {
  [ -n "$_boot_pid" ] || return 0
  kill "$_boot_pid" 2>/dev/null || return 0
  wait "$_boot_pid" 2>/dev/null || true
}
on_exit _boot_kill

boot_kernel() {
  local k=${IMAGEFS_BOOT_KERNEL:-}
  if [ -z "$k" ]; then
    k=$(find /boot -maxdepth 1 -name 'vmlinuz-*' -type f 2>/dev/null | sort -V | tail -n 1)
  fi
  [ -n "$k" ] || skip "no kernel in /boot (scripts/setup installs linux-image-amd64)"
  [ -r "$k" ] || skip "$k is not readable (Debian's vmlinuz is root-only: run as root)"
  echo "$k"
}

boot_initramfs() {
  local initrd=$1 extra=${2:-} kernel start end rc=0
  kernel=$(boot_kernel)
  [ -s "$initrd" ] || fail "no initramfs at $initrd"
  _boot_count=$((_boot_count + 1))
  BOOT_LOG=$TEST_TMPDIR/boot-$_boot_count.log
  start=$(date +%s.%N)
  timeout --kill-after=10 "$IMAGEFS_BOOT_TIMEOUT" \
    qemu-system-x86_64 -M pc -m 512 -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 ${BOOT_PANIC-panic=-1} quiet init=/imagefs-boot-no-init${extra:+ $extra}" \
    </dev/null >"$BOOT_LOG.raw" 2>&1 &
  _boot_pid=$!
  wait "$_boot_pid" || rc=$?
  _boot_pid=
  end=$(date +%s.%N)
  # shellcheck disable=SC2034 # read by the tests
  BOOT_SECONDS=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
  # Without carriage returns and the firmware's terminal escapes, so that our lines start lines.
  tr -d '\r' <"$BOOT_LOG.raw" | sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' >"$BOOT_LOG"
  rm -f "$BOOT_LOG.raw"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "--- console of $initrd (timed out after ${IMAGEFS_BOOT_TIMEOUT}s) ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- end of console ---" >&2
  elif [ "$rc" != 0 ]; then
    echo "--- console of $initrd (QEMU exit $rc) ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- end of console ---" >&2
  fi
  return "$rc"
}

boot_expect_ok() {
  local initrd=$1 rc=0 why=
  boot_initramfs "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    fail "boot of $initrd timed out after ${IMAGEFS_BOOT_TIMEOUT}s (console above)"
  fi
  [ "$rc" = 0 ] || fail "QEMU failed (exit $rc) booting $initrd (console above)"
  if grep -q 'Initramfs unpacking failed' "$BOOT_LOG"; then
    why="the kernel rejected the archive: $(grep -m1 -o 'Initramfs unpacking failed.*' "$BOOT_LOG")"
  elif ! grep -q 'IMAGEFS-INIT-START' "$BOOT_LOG"; then
    why="/init never ran"
  elif grep -q '^IMAGEFS-CHECK FAIL' "$BOOT_LOG"; then
    why="checks failed in the guest: $(grep -c '^IMAGEFS-CHECK FAIL' "$BOOT_LOG") lines"
  elif ! grep -q '^IMAGEFS-BOOT-OK$' "$BOOT_LOG"; then
    why="no IMAGEFS-BOOT-OK"
  fi
  if [ -n "$why" ]; then
    echo "--- console of $initrd ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- end of console ---" >&2
    fail "boot of $initrd: $why"
  fi
}

newc_check() {
  python3 - "$@" <<'EOF'
"""The host-side check of an initramfs: its compressed members and its newc stream.

Members: a gzip archive is split into its members (zlib, one member at a time), a zstd archive into
its frames (by walking frame and block headers; a frame's raw size is its declared content size,
else it is decompressed alone with `zstd -dc`). The raw offset at which each member ends must be
the end of a cpio entry (after its padding): the kernel stops with "junk at the end of compressed
archive" otherwise. gzip headers may set FNAME only (the kernel skips no other optional field).

newc (design.md decision 3): magic 070701 and c_check 0; names NUL-terminated, header+name and data
padded to 4 bytes; the last entry is TRAILER!!!, followed by NULs only; no path twice; every
entry's parent directory is an earlier directory entry (the kernel creates no parents);
directories, devices and fifos have filesize 0; a symlink's target is non-empty; regular files with
nlink >= 2 are grouped by (ino, devmajor, devminor) as the kernel does, and each group has exactly
nlink members with one mode, owner and mtime, whose non-empty data all have one size.
"""
import collections
import stat
import subprocess
import sys
import zlib

path, fmt = sys.argv[1], sys.argv[2]
want_init = "--init" in sys.argv[3:]
want_console = "--console" in sys.argv[3:]
data = open(path, "rb").read()
errors = []


def die(msg):
    print(f"newc_check {path}: {msg}")
    sys.exit(1)


def split_gzip(buf):
    raws, ends, pos = [], [], 0
    while pos < len(buf):
        if buf[pos:pos + 3] != b"\x1f\x8b\x08":
            die(f"no gzip member at byte {pos} (after {len(ends)} members)")
        flags = buf[pos + 3]
        if flags & ~0x08 & 0xff:
            die(f"gzip member at byte {pos} sets header flags {flags:#x}: the kernel skips only FNAME")
        d = zlib.decompressobj(31)
        out = d.decompress(buf[pos:])
        if not d.eof:
            die(f"gzip member at byte {pos} is truncated")
        raws.append(out)
        pos = len(buf) - len(d.unused_data)
        ends.append(pos)
    return raws, ends


def split_zstd(buf):
    frames, pos = [], 0
    while pos < len(buf):
        start = pos
        if buf[pos:pos + 4] != b"\x28\xb5\x2f\xfd":
            die(f"no zstd frame at byte {pos} (after {len(frames)} frames)")
        fhd = buf[pos + 4]
        pos += 5
        fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        if not single:
            pos += 1  # window descriptor
        pos += (0, 1, 2, 4)[did_flag]
        fcs_len = (1 if single else 0, 2, 4, 8)[fcs_flag]
        fcs = int.from_bytes(buf[pos:pos + fcs_len], "little") if fcs_len else None
        if fcs_len == 2:
            fcs += 256
        pos += fcs_len
        while True:
            if pos + 3 > len(buf):
                die(f"zstd frame at byte {start} is truncated")
            h = int.from_bytes(buf[pos:pos + 3], "little")
            last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
            if btype == 3:
                die(f"zstd frame at byte {start}: reserved block type")
            pos += 3 + (1 if btype == 1 else bsize)
            if last:
                break
        pos += 4 if checksum else 0
        if pos > len(buf):
            die(f"zstd frame at byte {start} is truncated")
        frames.append((start, pos, fcs))
    raws = []
    for start, end, fcs in frames:
        raw = subprocess.run(["zstd", "-dcq"], input=buf[start:end], stdout=subprocess.PIPE,
                             check=True).stdout
        if fcs is not None and fcs != len(raw):
            die(f"zstd frame at byte {start} declares {fcs} bytes but holds {len(raw)}")
        raws.append(raw)
    return raws, [end for _, end, _ in frames]


if fmt == "gz":
    raws, _ = split_gzip(data)
elif fmt == "zst":
    raws, _ = split_zstd(data)
elif fmt == "none":
    raws = [data]
else:
    die(f"unknown format {fmt}")
raw = b"".join(raws)
member_ends, total = set(), 0
for r in raws:
    total += len(r)
    member_ends.add(total)

# Parse the newc stream.
FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")
entries, boundaries, pos, trailer_end = [], {0}, 0, None
while pos < len(raw):
    if raw[pos:pos + 6] != b"070701":
        die(f"bad magic {raw[pos:pos + 6]!r} at raw offset {pos} (after {len(entries)} entries)")
    try:
        h = {k: int(raw[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i, k in enumerate(FIELDS)}
    except ValueError:
        die(f"bad header at raw offset {pos}")
    name_end = pos + 110 + h["namesize"]
    name = raw[pos + 110:name_end]
    if h["namesize"] < 2 or name[-1:] != b"\0" or b"\0" in name[:-1]:
        die(f"bad name {name!r} at raw offset {pos}")
    name = name[:-1].decode("utf-8", "surrogateescape")
    data_start = (name_end + 3) & ~3
    data_end = data_start + h["filesize"]
    if raw[name_end:data_start].strip(b"\0") or raw[data_end:(data_end + 3) & ~3].strip(b"\0"):
        errors.append(f"{name}: padding is not NULs")
    h["name"], h["offset"], h["data"] = name, pos, raw[data_start:data_end]
    if h["check"] != 0:
        errors.append(f"{name}: c_check {h['check']} in a 070701 archive")
    pos = (data_end + 3) & ~3
    boundaries.add(pos)
    if name == "TRAILER!!!":
        trailer_end = pos
        break
    entries.append(h)
if trailer_end is None:
    die("no TRAILER!!!")
if raw[trailer_end:].strip(b"\0"):
    die(f"{len(raw) - trailer_end} bytes after TRAILER!!! that are not NULs")
boundaries.add(len(raw))

for end in sorted(member_ends):
    if end not in boundaries:
        before = max((e for e in entries if e["offset"] < end), key=lambda e: e["offset"])
        errors.append(f"a compressed member ends at raw offset {end}, inside the entry "
                      f"{before['name']!r} (offset {before['offset']})")


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/") or "."


seen, groups = {}, collections.defaultdict(list)
for e in entries:
    p, kind = norm(e["name"]), stat.S_IFMT(e["mode"])
    if p in seen:
        errors.append(f"{p}: appears twice")
    parent = p.rsplit("/", 1)[0] if "/" in p else None
    if parent is not None and seen.get(parent) != stat.S_IFDIR:
        errors.append(f"{p}: its directory {parent} is not an earlier directory entry")
    seen[p] = kind
    if kind in (stat.S_IFDIR, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK) and e["filesize"]:
        errors.append(f"{p}: filesize {e['filesize']} for a {oct(kind)} entry")
    if kind == stat.S_IFLNK and not e["data"]:
        errors.append(f"{p}: a symlink without a target")
    if kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
                    stat.S_IFIFO, stat.S_IFSOCK):
        errors.append(f"{p}: unknown file type {oct(e['mode'])}")
    if kind == stat.S_IFREG and e["nlink"] >= 2:
        groups[(e["ino"], e["devmajor"], e["devminor"])].append(e)
for key, members in groups.items():
    names = [norm(m["name"]) for m in members]
    if any(m["nlink"] != len(members) for m in members):
        errors.append(f"hardlink group {names}: nlink {[m['nlink'] for m in members]}")
    if len({(m["mode"], m["uid"], m["gid"], m["mtime"]) for m in members}) != 1:
        errors.append(f"hardlink group {names}: members differ in mode, owner or mtime")
    sizes = {m["filesize"] for m in members} - {0}
    if len(sizes) > 1 or len({m["data"] for m in members if m["filesize"]}) > 1:
        errors.append(f"hardlink group {names}: members carry different data")

by_name = {norm(e["name"]): e for e in entries}
if want_init:
    e = by_name.get("init")
    if e is None or stat.S_IFMT(e["mode"]) != stat.S_IFREG or stat.S_IMODE(e["mode"]) != 0o755 \
            or (e["uid"], e["gid"]) != (0, 0):
        errors.append(f"init is not a 0755 root regular file: {e and oct(e['mode'])}")
if want_console:
    e = by_name.get("dev/console")
    if e is None or stat.S_IFMT(e["mode"]) != stat.S_IFCHR or (e["rdevmajor"], e["rdevminor"]) != (5, 1):
        errors.append("dev/console is not a char device 5,1")

files = [e for e in entries if stat.S_IFMT(e["mode"]) == stat.S_IFREG]
big = max(files, key=lambda e: e["filesize"]) if files else None
sizes = sorted(len(r) for r in raws)
print(f"{len(entries)} entries, {len(raw)} raw bytes in {len(raws)} {fmt} member(s) "
      f"(raw sizes: smallest {sizes[0]}, median {sizes[len(sizes) // 2]}, largest {sizes[-1]}); "
      f"largest file {big['filesize'] if big else 0} bytes ({norm(big['name']) if big else '-'}); "
      f"{len(groups)} hardlink groups")
if errors:
    for line in errors[:40]:
        print("  " + line)
    if len(errors) > 40:
        print(f"  ... and {len(errors) - 40} more")
    sys.exit(1)
EOF
}
