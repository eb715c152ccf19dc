#!/usr/bin/env bash
# The daemon's metrics (issue 15, "Metrics") on a real mount over a loopback registry:
#   - one `cat` of initramfs.cpio.gz: imagefs_read_bytes_total{file="initramfs.cpio.gz"} equals
#     its size, one first byte timed, one archive made with its segments made (a fresh store);
#     a rootfs file read counts its bytes under file="rootfs";
#   - the layers downloaded for it: imagefs_pull_bytes_total{registry=REG} equals the sum of the
#     image's layer sizes in its manifest; resolves counted ok, and a missing tag as an error
#     (pulls_total result="error", image_errors_total errno="ENOENT", request_errors_total of the
#     lookup);
#   - imagefs_store_bytes{kind="blobs"} equals the bytes of the files under CACHE/blobs;
#   - the same text from MOUNT/.metrics, `imagefs status --prometheus MOUNT` and a scrape of
#     --metrics-listen (curl: 200, Prometheus' content type; other paths 404), and
#     `promtool check metrics` passes on all three;
#   - --metrics-listen refuses a non-loopback address without --metrics-listen-remote (a usage
#     error), and a port in use fails the mount with the kernel's reason, leaving nothing mounted.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq curl python3 promtool
require_mount

T=$TEST_TMPDIR
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny

# A free port on loopback (the kernel's choice; released at once for the daemon to take).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# value FILE SERIES: the value of the sample SERIES (name{labels} exactly as rendered), or "".
value() { awk -v s="$2" '$1 == s { print $2 }' "$1"; }
# num FILE SERIES: the value as an integer (0 when absent).
num() { awk -v s="$2" '$1 == s { v = $2 } END { printf "%.0f\n", v + 0 }' "$1"; }

PORT=$(free_port)
MNT=$T/mnt
log "mount with --metrics-listen 127.0.0.1:$PORT"
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$T/mount.log" --metrics-listen "127.0.0.1:$PORT"
grep -qF "serving metrics on http://127.0.0.1:$PORT/metrics" "$T/mount.log" ||
  fail "the log does not say where metrics are served: $(cat "$T/mount.log")"

img=$MNT/$REG/tiny:latest
log "read initramfs.cpio.gz once, a rootfs file, and a missing tag"
fs cat "$img/initramfs.cpio.gz" >"$T/tiny.gz" || fail "cat initramfs.cpio.gz failed"
gz_size=$(stat -c %s "$T/tiny.gz")
assert_eq "$gz_size" "$(fs stat -c %s "$img/initramfs.cpio.gz")" "bytes read = st_size"
busybox_size=$(fs stat -L -c %s "$img/rootfs/bin/busybox")
fs cat "$img/rootfs/bin/busybox" | cmp -s - /bin/busybox ||
  log "  (rootfs/bin/busybox differs from the host's: not a failure, only read for its bytes)"
err=$(mount_errno_text cat "$MNT/$REG/tiny:no-such-tag/digest")
assert_contains "$err" "No such file or directory" "a missing tag"

log "the three outputs"
fs cat "$MNT/.metrics" >"$T/file.prom" || fail "cat $MNT/.metrics failed"
imagefs status --prometheus "$MNT" >"$T/status.prom" 2>"$T/status.err" ||
  fail "imagefs status --prometheus failed: $(cat "$T/status.err")"
code=$(curl -s -o "$T/http.prom" -D "$T/http.headers" -w '%{http_code}' "http://127.0.0.1:$PORT/metrics") ||
  fail "curl of http://127.0.0.1:$PORT/metrics failed"
assert_eq 200 "$code" "GET /metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$T/http.headers" ||
  fail "content type of /metrics: $(grep -i content-type "$T/http.headers")"
assert_eq 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/other")" "GET /other"

for f in file status http; do
  out=$(promtool check metrics <"$T/$f.prom" 2>&1) ||
    fail "promtool check metrics failed on the $f output: $out"
  [ -s "$T/$f.prom" ] || fail "the $f output is empty"
done
log "  promtool check metrics passes on .metrics, status --prometheus and the scrape"

# The three are snapshots taken one after the other: counters never go back, and these ones
# moved by nothing in between (the scrape itself is no read of the mount).
for series in 'imagefs_read_bytes_total{file="initramfs.cpio.gz"}' 'imagefs_archives_total{file="initramfs.cpio.gz",how="made"}' \
  "imagefs_pull_bytes_total{registry=\"$REG\"}"; do
  a=$(value "$T/file.prom" "$series")
  assert_eq "$a" "$(value "$T/status.prom" "$series")" "$series: .metrics vs status --prometheus"
  assert_eq "$a" "$(value "$T/http.prom" "$series")" "$series: .metrics vs the scrape"
done

M=$T/file.prom
log "counters against what happened"
assert_eq "$gz_size" "$(num "$M" 'imagefs_read_bytes_total{file="initramfs.cpio.gz"}')" \
  "bytes served of initramfs.cpio.gz after one cat"
[ "$(num "$M" 'imagefs_reads_total{file="initramfs.cpio.gz"}')" -ge 1 ] || fail "no read of the archive counted"
assert_eq 1 "$(num "$M" 'imagefs_first_byte_seconds_count{file="initramfs.cpio.gz"}')" "first bytes timed"
assert_eq 1 "$(num "$M" 'imagefs_opens_total{file="initramfs.cpio.gz"}')" "opens of the archive"
assert_eq 1 "$(num "$M" 'imagefs_archives_total{file="initramfs.cpio.gz",how="made"}')" "archives made"
[ "$(num "$M" 'imagefs_archive_segments_total{file="initramfs.cpio.gz",outcome="made"}')" -ge 1 ] ||
  fail "a fresh store made no segment: $(grep segments_total "$M")"
[ "$(num "$M" 'imagefs_read_bytes_total{file="rootfs"}')" -ge "$busybox_size" ] ||
  fail "rootfs bytes served $(num "$M" 'imagefs_read_bytes_total{file="rootfs"}') < bin/busybox's $busybox_size"
[ "$(num "$M" 'imagefs_lookups_total{file="initramfs.cpio.gz"}')" -ge 1 ] || fail "no lookup of the archive counted"

d=$(fixture_digest_for tiny)
layers_total=$(jq '[.layers[].size] | add' "$FIXTURES_OUT/oci/tiny/blobs/sha256/${d#sha256:}")
assert_eq "$layers_total" "$(num "$M" "imagefs_pull_bytes_total{registry=\"$REG\"}")" \
  "layer bytes downloaded = the manifest's layer sizes"
assert_eq 1 "$(num "$M" "imagefs_pulls_total{registry=\"$REG\",step=\"layers\",result=\"ok\"}")" "layer downloads"
[ "$(num "$M" "imagefs_pulls_total{registry=\"$REG\",step=\"resolve\",result=\"ok\"}")" -ge 1 ] ||
  fail "no resolve counted: $(grep pulls_total "$M")"
[ "$(num "$M" "imagefs_pulls_total{registry=\"$REG\",step=\"resolve\",result=\"error\"}")" -ge 1 ] ||
  fail "the missing tag's resolve is not counted as an error: $(grep pulls_total "$M")"
[ "$(num "$M" 'imagefs_image_errors_total{errno="ENOENT"}')" -ge 1 ] ||
  fail "the missing tag is not an image error: $(grep image_errors "$M")"
[ "$(num "$M" 'imagefs_request_errors_total{op="lookup",errno="ENOENT"}')" -ge 1 ] ||
  fail "the failed lookup is not counted: $(grep request_errors "$M")"
[ "$(num "$M" 'imagefs_pull_duration_seconds_count{step="resolve"}')" -ge 2 ] || fail "resolves not timed"
assert_eq 1 "$(num "$M" 'imagefs_images_open')" "images open"
blobs=$(find "$CACHE/blobs" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
assert_eq "$blobs" "$(num "$M" 'imagefs_store_bytes{kind="blobs"}')" "store bytes of blobs/"
[ "$(num "$M" 'imagefs_start_time_seconds')" -gt 0 ] || fail "no start time"
log "  bytes served $gz_size, layers $layers_total B, store blobs $blobs B: as counted"

log "--metrics-listen errors"
out=$(imagefs mount "$T/mnt2" --cache-dir "$T/cache2" --metrics-listen 0.0.0.0:9 2>&1) && fail "a non-loopback address was taken: $out"
assert_contains "$out" "--metrics-listen-remote" "refusal of 0.0.0.0"
out=$(imagefs mount "$T/mnt2" --cache-dir "$T/cache2" --metrics-listen 127.0.0.1 2>&1) && fail "an address without a port was taken: $out"
assert_contains "$out" "HOST:PORT" "refusal of an address without a port"
mkdir -p "$T/mnt2"
_track_mount "$T/mnt2"  # unmounted at exit should it be mounted after all
out=$(fs "$IMAGEFS_BIN" mount "$T/mnt2" --cache-dir "$T/cache2" --log "$T/mount2.log" --metrics-listen "127.0.0.1:$PORT" 2>&1) &&
  fail "a second mount took the port in use: $out"
assert_contains "$out" "Address already in use" "a port in use"
! is_mounted "$T/mnt2" || fail "$T/mnt2 is mounted although its metrics port was in use"

unmount_wait "$MNT" "$MOUNT_PID"
assert_eq 000 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/metrics" || true)" \
  "the metrics port after unmount"
log "PASS"
