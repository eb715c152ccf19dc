#!/usr/bin/env bash
# `imagefs mount` never stalls (issue 11), on a real mount with real registries behind
# tests/harness/faultproxy.py:
#   - more lookups hung on registries than the daemon has FUSE threads (--threads 4, 14 lookups)
#     on a black hole (accepts, never answers) and a drip (1 byte a second): meanwhile reads of a
#     cached image (lookups, listings, file and archive reads) stay fast;
#   - each hung lookup ends with EIO within --registry-timeout plus slack, and the log names the
#     registry and says it did not answer; another tag of that registry, looked up within
#     --negative-ttl, fails at once without a request;
#   - concurrent lookups of one tag make one registry request (counted in the proxy's log);
#   - a storm of lookups of a missing tag within --negative-ttl makes one resolve's requests, and
#     the next lookup after the TTL asks again.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq curl python3
require_mount

T=$TEST_TMPDIR
TIMEOUT=5     # --registry-timeout
SLACK=4       # what a hung lookup may take beyond it (a loaded CI machine)
FAST=2        # the most a cached read may take while lookups hang
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"

start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny
start_faultproxy --target "$REG" --blackhole
HOLE=$FAULTPROXY HOLE_LOG=$FAULTPROXY_LOG
start_faultproxy --target "$REG" --drip 1
DRIP=$FAULTPROXY DRIP_LOG=$FAULTPROXY_LOG
start_faultproxy --target "$REG" # passes everything: its log counts the requests
COUNTED=$FAULTPROXY COUNTED_LOG=$FAULTPROXY_LOG

MNT=$T/mnt
LOG=$T/mount.log
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG" --platform linux/amd64 --threads 4 \
  --registry-timeout "$TIMEOUT" --negative-ttl 5
IMG=$MNT/$REG/tiny:latest

# The cached image: resolved, its layers in, its tree built and an archive made.
assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$IMG/digest")" "digest of tiny"
fs ls "$IMG/rootfs" >/dev/null || fail "ls of tiny's rootfs"
fs cat "$IMG/initramfs.cpio.gz" | gzip -t || fail "tiny's archive"

# Milliseconds on a monotonic-enough clock, without forking (the machine may be loaded).
now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

# Runs `stat PATH` in the background; its exit status, milliseconds and stderr go to $T/hung/N.
mkdir -p "$T/hung"
hung_pids=()
hang() {
  local n=$1 path=$2
  (
    start=$(now_ms)
    rc=0
    fs stat "$path" >/dev/null 2>"$T/hung/$n.err" || rc=$?
    echo "$rc $(($(now_ms) - start)) $path" >"$T/hung/$n"
  ) &
  hung_pids+=($!)
}

# ---------------------------------------------------------------------------------------------
log "14 hung lookups with 4 FUSE threads"
# Each in a directory of its own, looked up first: the kernel sends lookups in one directory one
# at a time (libfuse 3.14 does not ask for parallel directory operations), so a hung lookup
# holds up the other names of its directory.
for d in "$HOLE"/r{1..6} "$DRIP"/r{1..6} "$HOLE/s" ".platform/linux-amd64/$HOLE/s"; do
  fs stat "$MNT/$d" >/dev/null || fail "stat of the level $d"
done
for i in 1 2 3 4 5 6; do
  hang "hole$i" "$MNT/$HOLE/r$i/tiny:t$i"
  hang "drip$i" "$MNT/$DRIP/r$i/tiny:t$i"
done
# One tag asked twice at once, by two paths the kernel does not merge (the default platform's
# and the same platform's directory): one request.
hang same1 "$MNT/$HOLE/s/tiny:same"
hang same2 "$MNT/.platform/linux-amd64/$HOLE/s/tiny:same"
# Wait until the registries have seen them all (every lookup is now hung).
for ((i = 0; i < 50; i++)); do
  holes=$(grep -c 'black hole (never answered)' "$HOLE_LOG" || true)
  drips=$(grep -c 'dripping the answer' "$DRIP_LOG" || true)
  [ "$holes" -ge 7 ] && [ "$drips" -ge 6 ] && break
  sleep 0.1
done
log "  the black hole holds $holes requests, the drip $drips"
if [ "$holes" -lt 7 ] || [ "$drips" -lt 6 ]; then fail "the hung lookups did not reach the registries"; fi

# Meanwhile, the cached image is served at once: names never looked up before (so the daemon
# answers, not the kernel's caches), a listing, files and the archive.
timed() {
  local start took
  start=$(now_ms)
  "$@" >/dev/null 2>&1 || fail "while lookups hang: $* failed"
  took=$(($(now_ms) - start))
  ((took < FAST * 1000)) || fail "while lookups hang: $* took $took ms (limit $FAST s)"
  echo "$took"
}
took=()
took+=("$(timed fs cat "$IMG/manifest.json")")
took+=("$(timed fs cat "$IMG/config.json")")
took+=("$(timed fs find "$IMG/rootfs")")
took+=("$(timed fs sh -c "! stat '$IMG/rootfs/no-such-file' 2>/dev/null")")
took+=("$(timed fs cat "$IMG/initramfs.cpio.gz")")
took+=("$(timed fs cat "$IMG/initramfs.cpio")")
log "  cached reads took ${took[*]} ms while the lookups hung"
# Still hung: the reads did not merely come after the lookups ended.
alive=0
for p in "${hung_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
[ "$alive" -ge 10 ] || fail "only $alive of 14 lookups were still hung after the cached reads"

for p in "${hung_pids[@]}"; do wait "$p" || true; done
for f in "$T"/hung/*; do
  [[ $f == *.err ]] && continue
  read -r rc ms path <"$f"
  [ "$rc" != 0 ] || fail "the lookup of $path succeeded"
  assert_contains "$(cat "$f.err")" "Input/output error" "the lookup of $path"
  ((ms <= (TIMEOUT + SLACK) * 1000)) || fail "the lookup of $path took $ms ms (deadline $TIMEOUT s)"
  ((ms >= TIMEOUT * 1000 - 500)) || fail "the lookup of $path ended after $ms ms, before the deadline?"
done
log "  every hung lookup ended with EIO within $((TIMEOUT + SLACK)) s: $(cut -d' ' -f2 "$T"/hung/hole1 "$T"/hung/drip1 "$T"/hung/same1 | paste -sd' ') ms, ..."

# The log names each registry and says it did not answer.
for r in "$HOLE" "$DRIP"; do
  line=$(grep -F "$r" "$LOG" | grep -F "did not answer within $TIMEOUT s" | head -1) ||
    fail "no log line says $r did not answer: $(tail -20 "$LOG")"
  log "  log: $line"
done
# One request for the tag asked twice; one per tag for the others.
assert_eq 1 "$(grep -c '/s/tiny/manifests/same -> black hole (never' "$HOLE_LOG")" \
  "requests for tiny:same (two lookups at once)"
for i in 1 2 3 4 5 6; do
  assert_eq 1 "$(grep -c "/r$i/tiny/manifests/t$i -> black hole (never" "$HOLE_LOG")" \
    "black-hole requests for r$i/tiny:t$i"
done
# Within the negative TTL, another tag of the registry that did not answer fails at once.
start=$(now_ms)
err=$(mount_errno_text stat "$MNT/$HOLE/tiny:after")
took_ms=$(($(now_ms) - start))
assert_contains "$err" "Input/output error" "another tag of the black hole"
((took_ms < FAST * 1000)) || fail "another tag of the black hole took $took_ms ms"
assert_eq 0 "$(grep -c '/manifests/after' "$HOLE_LOG" || true)" "requests for tiny:after"
log "  another tag of the black hole: EIO in $took_ms ms, no request"

# ---------------------------------------------------------------------------------------------
log "a storm of lookups of a missing tag"
err=$(mount_errno_text stat "$MNT/$COUNTED/tiny:missing")
assert_contains "$err" "No such file or directory" "a missing tag"
per_resolve=$(grep -c '/manifests/missing ' "$COUNTED_LOG" || true)
[ "$per_resolve" -ge 1 ] || fail "the registry saw no request for tiny:missing: $(cat "$COUNTED_LOG")"
for i in $(seq 1 30); do
  fs stat "$MNT/$COUNTED/tiny:missing" >/dev/null 2>&1 && fail "tiny:missing exists?"
  fs stat "$MNT/.platform/linux-amd64/$COUNTED/tiny:missing" >/dev/null 2>&1 && fail "tiny:missing exists?"
done
assert_eq "$per_resolve" "$(grep -c '/manifests/missing ' "$COUNTED_LOG")" \
  "requests for tiny:missing after 61 lookups within the negative TTL"
sleep 5.5
fs stat "$MNT/$COUNTED/tiny:missing" >/dev/null 2>&1 && fail "tiny:missing exists?"
assert_eq $((2 * per_resolve)) "$(grep -c '/manifests/missing ' "$COUNTED_LOG")" \
  "requests for tiny:missing once the negative TTL is over"
log "  61 lookups, $per_resolve request(s); after the TTL, $per_resolve more"

# The daemon is alive and well, and unmounts cleanly.
assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$IMG/digest")" "digest of tiny at the end"
unmount_wait "$MNT" "$MOUNT_PID"
