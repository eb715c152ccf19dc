#!/usr/bin/env bash
# `imagefs mount` when things go wrong (issue 6):
#   - an image on a basic-auth registry without credentials is EACCES ("Permission denied"), and
#     works with --docker-config holding them;
#   - a registry that does not answer, with nothing cached, is EIO ("Input/output error");
#   - each failure is logged in plain words naming the image and the registry, and `imagefs
#     status` shows it among recent errors;
#   - a mountpoint left stale by kill -9 ("Transport endpoint is not connected") is detected and
#     explained, or cleaned up, by the next `imagefs mount`;
#   - SIGTERM while a reader waits for a slow pull ends the daemon at once and unmounts;
#   - readers of another image are not held up by a slow pull;
#   - crash safety: kill -9 of the daemon mid-pull (a slow link through the fault proxy), and
#     again while it makes an archive; after each remount every archive equals `imagefs build`'s
#     and rootfs/ equals `umoci unpack`'s tree; `imagefs verify` passes.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo umoci jq curl python3 cmp
[ "$(id -u)" = 0 ] || skip "needs root: umoci unpack restores owners, device nodes and security.* xattrs"
require_mount

T=$TEST_TMPDIR
"$FIXTURES" build --out "$FIXTURES_OUT" tiny python >/dev/null 2>&1 || fail "fixtures build failed"

# ---------------------------------------------------------------------------------------------
log "denied and unreachable registries"
start_registry basic
BASIC=$IMAGEFS_REGISTRY BASIC_DIR=$IMAGEFS_REGISTRY_DIR
push_fixtures tiny -- --dest-creds "$IMAGEFS_REGISTRY_USER:$IMAGEFS_REGISTRY_PASSWORD"
basic_user=$IMAGEFS_REGISTRY_USER basic_password=$IMAGEFS_REGISTRY_PASSWORD
# A port where nothing listens.
down_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DOWN=127.0.0.1:$down_port

MNT=$T/mnt
LOG=$T/mount.log
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG"
pid=$MOUNT_PID

err=$(mount_errno_text ls "$MNT/$BASIC/tiny:latest")
assert_contains "$err" "Permission denied" "ls of an image on a basic-auth registry without credentials"
err=$(mount_errno_text cat "$MNT/$BASIC/tiny:latest/initramfs.cpio.gz")
assert_contains "$err" "Permission denied" "cat of an archive of a denied image"
t0=$(date +%s)
err=$(mount_errno_text ls "$MNT/$DOWN/tiny:latest")
assert_contains "$err" "Input/output error" "ls of an image on a registry that does not answer"
log "  EACCES and EIO (the unreachable registry answered in $(($(date +%s) - t0)) s)"

# The log: plain lines naming the image and the registry.
denied=$(grep -F "$BASIC" "$LOG" | grep -F tiny) || fail "no log line names $BASIC and tiny: $(tail -20 "$LOG")"
down=$(grep -F "$DOWN" "$LOG" | grep -F tiny) || fail "no log line names $DOWN and tiny: $(tail -20 "$LOG")"
log "  log: $(head -1 <<<"$denied")"
log "  log: $(head -1 <<<"$down")"
# Once each: one failed lookup is one line (a few at most, not a line per retry or per reader).
[ "$(wc -l <<<"$denied")" -le 2 ] || fail "the denied image was logged $(wc -l <<<"$denied") times: $denied"
[ "$(wc -l <<<"$down")" -le 2 ] || fail "the unreachable registry was logged $(wc -l <<<"$down") times: $down"
grep -F "$basic_password" "$LOG" && fail "the log shows the registry password"
status=$(fs "$IMAGEFS_BIN" status "$MNT" 2>&1) || fail "imagefs status failed: $status"
assert_contains "$status" "$BASIC" "imagefs status lists the recent error of $BASIC"
assert_contains "$status" "$DOWN" "imagefs status lists the recent error of $DOWN"
unmount_wait "$MNT" "$pid"

# With credentials in docker's config.json the same image mounts.
mkdir -p "$T/creds"
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$BASIC" \
  "$(printf '%s:%s' "$basic_user" "$basic_password" | base64 -w0)" >"$T/creds/config.json"
dc=$T/creds/config.json
"$IMAGEFS_BIN" help mount 2>&1 | grep -q -- '--docker-config DIR' && dc=$T/creds
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG" --docker-config "$dc"
assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$MNT/$BASIC/tiny:latest/digest")" "digest of tiny with credentials"
fs cat "$MNT/$BASIC/tiny:latest/initramfs.cpio.gz" | gzip -t || fail "tiny's archive with credentials"
unmount_wait "$MNT"
stop_registry "$BASIC_DIR"

# ---------------------------------------------------------------------------------------------
log "a stale mountpoint"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny python
STALE=$T/stale
mount_imagefs "$STALE" --cache-dir "$CACHE" --log "$T/stale.log"
assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$STALE/$REG/tiny:latest/digest")" "digest before the kill"
kill -9 "$MOUNT_PID"
wait_gone "$MOUNT_PID" 10 || fail "the daemon survived kill -9"
err=$(mount_errno_text ls "$STALE")
assert_contains "$err" "Transport endpoint is not connected" "ls of a mountpoint whose daemon was killed"
rc=0
out=$(timeout -k 5 "$IMAGEFS_MOUNT_TIMEOUT" "$IMAGEFS_BIN" mount "$STALE" --cache-dir "$CACHE" --log "$T/stale.log" 2>&1) || rc=$?
if [ "$rc" = 0 ]; then
  # Cleaned up: the new mount works.
  is_mounted "$STALE" || fail "imagefs mount over a stale mountpoint exited 0 but nothing is mounted"
  assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$STALE/$REG/tiny:latest/digest")" "digest after remounting over a stale mountpoint"
  [ "$(grep -cF " $STALE " /proc/mounts)" = 1 ] || fail "$STALE is mounted $(grep -cF " $STALE " /proc/mounts) times"
  log "  imagefs mount cleaned up the stale mountpoint${out:+: $(head -1 <<<"$out")}"
  unmount_wait "$STALE"
else
  assert_eq 1 "$rc" "exit status of imagefs mount over a stale mountpoint ($out)"
  assert_contains "$out" "$STALE" "the message about a stale mountpoint names it"
  [[ $out == *"fusermount3 -u"* || $out == *"not connected"* || $out == *stale* ]] ||
    fail "the message about a stale mountpoint does not explain it: $out"
  log "  explained: $(head -2 <<<"$out" | paste -sd' ')"
  fs fusermount3 -u "$STALE" || fail "fusermount3 -u of the stale mountpoint failed"
  mount_imagefs "$STALE" --cache-dir "$CACHE" --log "$T/stale.log"
  assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$STALE/$REG/tiny:latest/digest")" "digest after the cleanup"
  unmount_wait "$STALE"
fi

# ---------------------------------------------------------------------------------------------
log "kill -9 mid-pull"
manifest=$FIXTURES_OUT/oci/python/blobs/sha256/$(fixture_digest_for python | cut -d: -f2)
big_layer=$(jq -r '.layers | max_by(.size) | .digest' "$manifest")
big_size=$(jq -r '.layers | max_by(.size) | .size' "$manifest")
# 1 MB/s for the big layer: a pull of it takes over 10 s, and
# a kill lands while part of it is on disk.
start_faultproxy --target "$REG" --path "/blobs/$big_layer" --rate 1000000 --lifetime 3600
SLOW=$FAULTPROXY
C3=$T/cache3
REF_CACHE=$T/refcache
M3=$T/crash
mount_imagefs "$M3" --cache-dir "$C3" --log "$T/crash.log"
fs cat "$M3/$SLOW/python:latest/initramfs.cpio.gz" >/dev/null 2>"$T/crash-cat.err" &
reader=$!
sleep 4
kill -0 "$reader" 2>/dev/null || fail "the read ended before the kill; it should take over 10 s at 1 MB/s for $big_size bytes"
# (The proxy logs a request when it ends: the slow layer is not in its log yet.) imagefs status
# shows the pull in flight.
status=$(fs "$IMAGEFS_BIN" status "$M3" 2>&1) || fail "imagefs status during the pull: $status"
assert_contains "$status" "in flight: $SLOW/python:latest" "imagefs status during a pull"
log "  $(grep -m1 'in flight' <<<"$status")"
# Readers of another image are not held up by the slow pull.
t0=$(date +%s.%N)
fs cat "$M3/$SLOW/tiny:latest/initramfs.cpio.gz" | gzip -t || fail "tiny's archive during python's slow pull"
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
awk -v t="$took" 'BEGIN { exit !(t < 5) }' || fail "tiny's archive took $took s while python was pulled slowly (held up?)"
kill -0 "$reader" 2>/dev/null || fail "python's slow pull ended before the kill"
log "  tiny's archive read in $took s meanwhile"
partial=$(find "$C3" -type f -newer "$T/crash.log" -size +100k 2>/dev/null | head -3 | paste -sd' ')
kill -9 "$MOUNT_PID"
rc=0
wait "$reader" || rc=$?
[ "$rc" != 0 ] || fail "cat of the archive succeeded although the daemon was killed mid-pull"
log "  killed mid-pull (the reader got: $(head -c 200 "$T/crash-cat.err"); partial files: ${partial:-none seen})"
fs fusermount3 -u "$M3" 2>/dev/null || fs fusermount3 -u -z "$M3" || fail "fusermount3 -u of the dead mount failed"
out=$(fs "$IMAGEFS_BIN" verify --cache-dir "$C3" 2>&1) || fail "imagefs verify after kill -9 mid-pull: $out"

# check_python MNT REF: every archive and rootfs/ of python through MNT equal imagefs build / umoci.
ref=$(umoci_tree python)
check_python() {
  local img=$1/$2/python:latest fmt f out
  for fmt in gz zst none; do
    case $fmt in gz) f=initramfs.cpio.gz ;; zst) f=initramfs.cpio.zst ;; none) f=initramfs.cpio ;; esac
    [ -f "$T/b.python.$fmt" ] ||
      assert_ok imagefs build --cache-dir "$REF_CACHE" "$REG/python:latest" -o "$T/b.python.$fmt" --format "$fmt" >/dev/null
    fs cat "$img/$f" >"$T/m.python.$fmt" || fail "cat $img/$f failed"
    cmp -s "$T/b.python.$fmt" "$T/m.python.$fmt" ||
      fail "python.$fmt after the crash differs from imagefs build ($(stat -c %s "$T/m.python.$fmt") vs $(stat -c %s "$T/b.python.$fmt") bytes)"
    assert_eq "$(stat -c %s "$T/b.python.$fmt")" "$(fs stat -c %s "$img/$f")" "python.$fmt: stat size after the crash"
    rm -f "$T/m.python.$fmt"
  done
  out=$(fs python3 "$TREECMP" "$img/rootfs" "$ref/bundle/rootfs" --synthesized-after "$(cat "$ref/start")") ||
    fail "python rootfs/ after the crash differs from umoci unpack: $out"
  log "  archives equal imagefs build; rootfs: $(head -1 <<<"$out")"
}

log "  remount (a fast link) and check"
start_faultproxy --target "$REG" --lifetime 3600
FAST=$FAULTPROXY
mount_imagefs "$M3" --cache-dir "$C3" --log "$T/crash.log"
# The store is keyed by digest: the image reached through another proxy address is the same one.
check_python "$M3" "$FAST"
grep -q "range bytes=" "$FAULTPROXY_LOG" && log "  the remount resumed the partial layer with a Range request"

log "kill -9 while the daemon makes an archive"
# Layers are in the store; the zstd and plain archives are made (and their segments stored) on the
# first read: kill the daemon during a fresh gz at level 9 (not yet made).
mount_pid=$MOUNT_PID
unmount_wait "$M3" "$mount_pid"
mount_imagefs "$M3" --cache-dir "$C3" --log "$T/crash.log" --level 9
fs cat "$M3/$FAST/python:latest/config.json" >/dev/null
fs cat "$M3/$FAST/python:latest/initramfs.cpio.gz" >/dev/null 2>&1 &
reader=$!
sleep 0.4
kill -0 "$reader" 2>/dev/null || log "  (the archive was ready within 0.4 s; the kill comes after it)"
kill -9 "$MOUNT_PID"
wait "$reader" 2>/dev/null || true
fs fusermount3 -u "$M3" 2>/dev/null || fs fusermount3 -u -z "$M3" || fail "fusermount3 -u of the dead mount failed"
out=$(fs "$IMAGEFS_BIN" verify --cache-dir "$C3" 2>&1) || fail "imagefs verify after kill -9 mid-archive: $out"
mount_imagefs "$M3" --cache-dir "$C3" --log "$T/crash.log" --level 9
assert_ok imagefs build --cache-dir "$REF_CACHE" "$REG/python:latest" -o "$T/b9.gz" --level 9 >/dev/null
fs cat "$M3/$FAST/python:latest/initramfs.cpio.gz" | cmp -s - "$T/b9.gz" ||
  fail "python.gz at level 9 after kill -9 mid-archive differs from imagefs build --level 9"
unmount_wait "$M3"
mount_imagefs "$M3" --cache-dir "$C3" --log "$T/crash.log"
check_python "$M3" "$FAST"
unmount_wait "$M3"

# ---------------------------------------------------------------------------------------------
log "SIGTERM while a reader waits for a slow pull"
# 300 kB/s: the big layer would take over 40 s.
start_faultproxy --target "$REG" --path "/blobs/$big_layer" --rate 300000 --lifetime 3600
M4=$T/term
mount_imagefs "$M4" --cache-dir "$T/cache4" --log "$T/term.log"
fs cat "$M4/$FAULTPROXY/python:latest/initramfs.cpio.gz" >/dev/null 2>"$T/term-cat.err" &
reader=$!
sleep 3
kill -0 "$reader" 2>/dev/null || fail "the read ended within 3 s; it should take over 40 s at 300 kB/s"
kill -TERM "$MOUNT_PID"
wait_gone "$MOUNT_PID" 5 ||
  fail "the daemon still runs 5 s after SIGTERM while a pull was in flight (mounted: $(in_proc_mounts "$M4" && echo yes || echo no))"
! in_proc_mounts "$M4" || fail "$M4 is still mounted after SIGTERM during a pull"
rc=0
wait "$reader" || rc=$?
[ "$rc" != 0 ] || fail "the reader of an archive whose pull was cut by SIGTERM succeeded"
log "  the daemon ended; the reader got: $(head -c 200 "$T/term-cat.err")"
out=$(fs "$IMAGEFS_BIN" verify --cache-dir "$T/cache4" 2>&1) || fail "imagefs verify after SIGTERM mid-pull: $out"

log "pass"
