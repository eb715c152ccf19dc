#!/usr/bin/env bash
# A long-lived mount does not grow without bound (issue 11):
#   - N `stat MOUNT/a.b/<random>/x` (N = IMAGEFS_BOUNDS_N, default 100000), from one python3
#     process: the daemon's RSS (VmRSS) and open fds after the first 10% and at the end (each
#     sampled after a few seconds' pause) differ by less than 8 MiB and 4 fds, and its table of name directories (.status) is back to a few
#     entries: the kernel forgot the names and the daemon dropped them;
#   - `imagefs gc --max-size 1` while an archive is being read from the mount, with every segment
#     and plan file made to look unused for eight days: the rest of the archive still reads, and
#     the whole equals `imagefs build`'s; gc removed the image nobody had open;
#   - --idle: an image unused for the idle time is closed (a log line) and its lease released; a
#     later read reopens it; one that gc removed meanwhile is ENOENT with a log line.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq python3 cmp
require_mount

N=${IMAGEFS_BOUNDS_N:-100000}
MAX_RSS_GROWTH_KB=$((8 * 1024))
MAX_FD_GROWTH=4
T=$TEST_TMPDIR
"$FIXTURES" build --out "$FIXTURES_OUT" tiny python >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny python

MNT=$T/mnt
LOG=$T/mount.log
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG" --idle 2s
pid=$MOUNT_PID

name_dirs() { fs cat "$MNT/.status" | jq -r '.name_directories'; }

# ---------------------------------------------------------------------------------------------
log "$N stat of MOUNT/a.b/<random>/x"
t0=$(date +%s)
read -r rss0 rss1 fd0 fd1 < <(fs python3 - "$MNT" "$N" "$pid" <<'EOF'
import os, sys, time, uuid
mnt, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))
first = max(1, n // 10)
# Memory is sampled when the daemon has settled (it invalidates unknown names a second after
# their lookup and gives freed memory back every 2 s): in between, RSS swings by some MiB.
settle = 6
for i in range(n):
    # A name the store knows nothing of: a level, then an image-or-level, then x (a directory).
    os.stat(f"{mnt}/a.b/{uuid.uuid4().hex}/x")
    if i + 1 == first:
        time.sleep(settle)
        rss0, fd0 = rss(), fds()
time.sleep(settle)
print(rss0, rss(), fd0, fds())
EOF
) || fail "the stat loop failed"
secs=$(($(date +%s) - t0))
growth=$((rss1 - rss0))
log "  $N stats in $secs s; RSS after 10%: $rss0 kB, at the end: $rss1 kB (growth $growth kB); fds $fd0 -> $fd1"
is_mounted "$MNT" || fail "the mount is gone after $N stats"
[ "$growth" -lt "$MAX_RSS_GROWTH_KB" ] ||
  fail "the daemon grew by $growth kB between 10% and 100% of $N stats of unknown names (bound: $MAX_RSS_GROWTH_KB kB)"
[ $((fd1 - fd0)) -lt "$MAX_FD_GROWTH" ] || fail "the daemon's open fds went from $fd0 to $fd1"
# FORGETs come asynchronously; give the kernel a moment, then the table is back to a handful.
dirs=
for _ in 1 2 3 4 5 6 7 8 9 10; do
  dirs=$(name_dirs)
  [ "$dirs" -lt 100 ] && break
  sleep 0.5
done
log "  name directories held after the loop: $dirs"
[ "$dirs" -lt 100 ] || fail "the daemon still holds $dirs name directories after $N stats of unknown names"

fs cat "$MNT/$REG/tiny:latest/digest" >/dev/null || fail "cannot read tiny's digest"
# The registry's level was unknown at that first lookup (nothing stored yet), so the kernel is
# told to drop it within a second or so; looked up again it is known and kept for good, and with
# it tiny's directory and files: from then on the kernel reaches tiny by its inode numbers.
sleep 2
fs cat "$MNT/$REG/tiny:latest/digest" >/dev/null || fail "cannot read tiny's digest again"

# ---------------------------------------------------------------------------------------------
log "gc --max-size 1 while an archive is read"
REF_CACHE=$T/ref-cache
assert_ok imagefs build --cache-dir "$REF_CACHE" "$REG/python:latest" -o "$T/build.gz" --format gz >/dev/null
ARCHIVE=$MNT/$REG/python:latest/initramfs.cpio.gz
size=$(stat -c %s "$ARCHIVE") || fail "cannot stat $ARCHIVE"
[ "$size" = "$(stat -c %s "$T/build.gz")" ] || fail "the mount's archive is $size bytes, imagefs build's $(stat -c %s "$T/build.gz")"
# tiny was used above and is idle now: closed, released to gc.
sleep 4
grep -q "closed after being idle" "$LOG" || fail "no image was closed for being idle: $(tail -5 "$LOG")"

rm -f "$T/go" "$T/half"
fs python3 - "$ARCHIVE" "$T/mount.gz" "$T/half" "$T/go" <<'EOF' &
import os, sys, time
src, out, half, go = sys.argv[1:5]
with open(src, "rb") as f, open(out, "wb") as o:
    o.write(f.read(1 << 20))
    open(half, "w").close()
    deadline = time.time() + 120
    while not os.path.exists(go):
        if time.time() > deadline:
            sys.exit("no go")
        time.sleep(0.05)
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        o.write(chunk)
EOF
reader=$!
for _ in $(seq 1 600); do [ -e "$T/half" ] && break; sleep 0.1; done
[ -e "$T/half" ] || fail "the reader did not get its first MiB"
# Every segment and plan looks unused for eight days: only the lease can keep them.
find "$CACHE" -path '*/segments/*' -type f -exec touch -d '8 days ago' {} +
segments_before=$(find "$CACHE" -path '*/segments/*' -type f | wc -l)
gc_out=$(assert_ok imagefs gc --cache-dir "$CACHE" --max-size 1 2>&1)
segments_after=$(find "$CACHE" -path '*/segments/*' -type f | wc -l)
log "  gc: $(tr '\n' ' ' <<<"$gc_out" | head -c 300)"
log "  segment and plan files: $segments_before before gc, $segments_after after"
touch "$T/go"
wait "$reader" || fail "reading $ARCHIVE across gc failed"
cmp "$T/build.gz" "$T/mount.gz" || fail "the archive read across gc differs from imagefs build's"
[ "$segments_after" -gt 0 ] || fail "gc removed every segment, those of the archive being read too"
# tiny was not leased: gc took it; python's lease (its archive is open) kept it.
assert_contains "$gc_out" "removed $REG/tiny:latest" "gc removed the idle image tiny"
assert_contains "$gc_out" "kept $(fixture_digest_for python)" "gc kept python, whose archive is open"
# Read again after the reader closed: the same bytes.
cmp "$T/build.gz" <(fs cat "$ARCHIVE") || fail "a second read after gc differs from imagefs build's"

# ---------------------------------------------------------------------------------------------
log "an idle image gc removed"
err=$(mount_errno_text cat "$MNT/$REG/tiny:latest/digest")
assert_contains "$err" "No such file or directory" "reading tiny after gc removed it"
grep -q "cannot reopen" "$LOG" || fail "no log line says tiny could not be reopened: $(tail -5 "$LOG")"
log "  log: $(grep "cannot reopen" "$LOG" | head -1)"

# ---------------------------------------------------------------------------------------------
log "ls -R, and readdir's inode numbers against stat's"
# (Last: the kernel keeps rootfs inodes it has seen, and an image whose rootfs it holds is not
# closed when idle.)
fs python3 - "$MNT/$REG" <<'EOF' || fail "inode numbers of listings differ from stat's"
import os, sys
top = sys.argv[1]
n = 0
for root, dirs, files in os.walk(top):
    with os.scandir(root) as it:
        for e in it:
            if e.inode() != os.lstat(e.path).st_ino:
                sys.exit(f"{e.path}: readdir says {e.inode()}, stat {os.lstat(e.path).st_ino}")
            n += 1
if n < 100:
    sys.exit(f"only {n} entries under {top}")
EOF
ls -R "$MNT/$REG" >/dev/null || fail "ls -R $MNT/$REG failed"

is_mounted "$MNT" || fail "the mount is gone"
unmount_wait "$MNT" "$pid"
log "ok"
