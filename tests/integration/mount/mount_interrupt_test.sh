#!/usr/bin/env bash
# Requests that cannot be abandoned (issue 17), on a real mount, with registries behind
# tests/harness/faultproxy.py that answer manifests one byte every 0.5 s (--drip 2) or after 3 s:
#   - lookups of several tags of one directory reach the registry at once (FUSE_PARALLEL_DIROPS
#     is negotiated), and a cached sibling in that directory, and the directory's listing, are
#     answered while they hang;
#   - `kill -9` of callers hung on such lookups releases them within about a second (FUSE
#     interrupts answered EINTR), several at once, while the registry still drips;
#   - a caller killed before a slow lookup succeeds is released, the late answer is dropped, and
#     the name then works;
#   - a caller that handles a signal (bash with a trap) is not failed by it: its test of the path
#     gets the real answer when the lookup ends; killed afterwards while a lookup hangs, it is
#     released;
#   - the daemon keeps serving throughout, and logs no internal error;
#   - the blob stall rule cuts a registry that sends a layer at 1 byte a second (--stall-window 1):
#     the read fails with EIO after the attempts run out, not after the layer's size in seconds.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq curl python3
require_mount

T=$TEST_TMPDIR
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny
for tag in late late2; do
  assert_ok skopeo copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/tiny:latest" "docker://$REG/tiny:$tag" >/dev/null
done
# Tags t1..t9, slow and trapped drip at 2 B/s (a HEAD's answer takes minutes); others pass.
start_faultproxy --target "$REG" --drip 2 --path '/manifests/(t[0-9]|slow|trapped)'
DRIP=$FAULTPROXY DRIP_LOG=$FAULTPROXY_LOG
# Tag late answers after 3 s.
start_faultproxy --target "$REG" --delay-ms 3000 --path '/manifests/late'
DELAY=$FAULTPROXY DELAY_LOG=$FAULTPROXY_LOG

# tiny:latest through the drip proxy's name, in the store before the mount: a cached sibling of
# the hanging tags, answered without the registry.
assert_ok imagefs pull --cache-dir "$CACHE" --platform linux/amd64 "$DRIP/tiny:latest" >/dev/null
MNT=$T/mnt
LOG=$T/mount.log
# Lookups that hang must not end by themselves during the test.
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG" --platform linux/amd64 --registry-timeout 120
fs stat "$MNT/$DRIP" >/dev/null || fail "stat of $DRIP"

now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}
state_of() { sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null || echo gone; }
drips() { grep -c 'dripping the answer' "$DRIP_LOG" || true; }

# Kills PID with SIGKILL; fails unless it is gone within 1.5 s. Prints the milliseconds taken.
kill_released() {
  local pid=$1 what=$2 start took
  start=$(now_ms)
  kill -9 "$pid" 2>/dev/null || fail "$what ended before it was killed"
  wait_gone "$pid" 2 || fail "$what (pid $pid) is still there 2 s after kill -9, in state $(state_of "$pid")"
  took=$(($(now_ms) - start))
  ((took <= 1500)) || fail "$what took $took ms to go after kill -9"
  echo "$took"
}

# ---------------------------------------------------------------------------------------------
log "several lookups of one directory hang on a dripping registry at once"
before=$(drips)
pids=()
for i in 1 2 3 4; do
  stat "$MNT/$DRIP/tiny:t$i" >/dev/null 2>&1 &
  pids+=($!)
  disown $! # no "Killed" line from the shell
done
for ((i = 0; i < 50; i++)); do
  [ $(($(drips) - before)) -ge 4 ] && break
  sleep 0.1
done
reached=$(($(drips) - before))
[ "$reached" -ge 4 ] ||
  fail "only $reached of 4 lookups in one directory reached the registry (are lookups serialized per directory? FUSE_PARALLEL_DIROPS)"
log "  4 lookups of tiny:t1..t4 are at the registry together"

# Meanwhile, a cached sibling in the same directory and the directory's listing are answered.
start=$(now_ms)
assert_eq "$(fixture_digest_for tiny)" "$(fs timeout 5 cat "$MNT/$DRIP/tiny:latest/digest")" \
  "digest of the cached sibling while its directory's lookups hang"
out=$(fs timeout 5 ls "$MNT/$DRIP") || fail "ls of $DRIP while its lookups hang"
took=$(($(now_ms) - start))
((took < 2000)) || fail "the cached sibling and the listing took $took ms while lookups hung"
log "  the cached sibling and ls of the directory answered in $took ms"

sleep 2
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || fail "a lookup of a dripping tag ended within 2 s"
done
log "kill -9 of the hung callers"
times=()
for p in "${pids[@]}"; do times+=("$(kill_released "$p" "a stat hung on a dripping registry")"); done
log "  released after kill -9 in ${times[*]} ms"

# Killed all at once.
pids=()
for i in 5 6 7; do
  stat "$MNT/$DRIP/tiny:t$i" >/dev/null 2>&1 &
  pids+=($!)
  disown $! # no "Killed" line from the shell
done
sleep 2
start=$(now_ms)
kill -9 "${pids[@]}"
for p in "${pids[@]}"; do
  wait_gone "$p" 2 || fail "pid $p is still there 2 s after kill -9 (of 3 at once), in state $(state_of "$p")"
  wait "$p" 2>/dev/null || true
done
log "  3 killed at once, gone in $(($(now_ms) - start)) ms"

# ---------------------------------------------------------------------------------------------
log "a caller killed before a slow lookup succeeds"
stat "$MNT/$DELAY/tiny:late" >/dev/null 2>&1 &
pid=$!
disown $pid
sleep 1
took=$(kill_released "$pid" "a stat waiting on a delayed registry")
log "  released in $took ms; the lookup goes on"
for ((i = 0; i < 50; i++)); do
  grep -q '/manifests/late .*-> 200' "$DELAY_LOG" && break
  sleep 0.1
done
grep -q '/manifests/late .*-> 200' "$DELAY_LOG" || fail "the delayed registry never answered: $(cat "$DELAY_LOG")"
sleep 0.5
# The late answer was dropped; the name works (from the daemon's tag cache: no new request).
requests=$(grep -c '/manifests/late' "$DELAY_LOG")
assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$MNT/$DELAY/tiny:late/digest")" "digest of tiny:late"
assert_eq "$requests" "$(grep -c '/manifests/late' "$DELAY_LOG")" "requests for tiny:late after its lookup ended"

# ---------------------------------------------------------------------------------------------
log "a caller that handles a signal gets the real answer"
stamp=$(now_ms)
# tiny:late2 exists; the registry names it after 3 s. A signal at 1 s that the caller handles
# must not cut that short: answered EINTR, [ -e ] would say "missing" at once.
bash -c 'trap "echo usr1 >&2" USR1; if [ -e "$1" ]; then echo exists; else echo missing; fi' _ \
  "$MNT/$DELAY/tiny:late2" >"$T/trapped.out" 2>"$T/trapped.err" &
pid=$!
sleep 1
kill -USR1 "$pid"
wait "$pid" || true
took=$(($(now_ms) - stamp))
assert_eq exists "$(cat "$T/trapped.out")" "[ -e ] of tiny:late2, signalled while it was looked up"
assert_contains "$(cat "$T/trapped.err")" usr1 "the trap ran"
((took >= 2500)) || fail "the lookup ended $took ms after it began, before the registry answered"
log "  a signal the caller handles did not fail its lookup (it ended after $took ms, with the registry's answer)"

log "killed after a signal it handles"
bash -c 'trap "echo usr1 >&2" USR1; [ -e "$1" ]; echo "ended: $?"' _ "$MNT/$DRIP/tiny:trapped" \
  >"$T/trapped.out" 2>"$T/trapped.err" &
pid=$!
disown $pid
sleep 1
kill -USR1 "$pid"
sleep 1
kill -0 "$pid" 2>/dev/null || fail "a caller was released by a signal it handles: $(cat "$T/trapped.out")"
took=$(kill_released "$pid" "a caller hung after a signal it handled")
log "  still waiting after the handled signal; released $took ms after kill -9"

# ---------------------------------------------------------------------------------------------
log "the daemon keeps serving"
assert_eq tiny "$(fs cat "$MNT/$DRIP/tiny:latest/rootfs/etc/hostname")" "etc/hostname of the cached image"
assert_eq "$(fixture_digest_for tiny)" "$(fs cat "$MNT/$REG/tiny:latest/digest")" "a new lookup"
kill -0 "$MOUNT_PID" || fail "the daemon died"
if grep -q "internal error" "$LOG"; then fail "the daemon logged an internal error: $(cat "$LOG")"; fi
# Lookups of the dripping tags still wait on the registry (their callers are gone): SIGTERM ends
# the daemon at once whatever is in flight.
kill "$MOUNT_PID"
wait_gone "$MOUNT_PID" 5 || fail "the daemon still runs 5 s after SIGTERM"

# ---------------------------------------------------------------------------------------------
log "the blob stall rule cuts a layer sent at 1 byte a second"
LAYERS=$(layer_digests tiny | paste -sd'|')
start_faultproxy --target "$REG" --drip 1 --path "/blobs/($LAYERS)"
TRICKLE=$FAULTPROXY TRICKLE_LOG=$FAULTPROXY_LOG
MNT=$T/trickle
LOG=$T/trickle.log
mount_imagefs "$MNT" --cache-dir "$T/cache-trickle" --log "$LOG" --platform linux/amd64 \
  --stall-window 1
start=$(now_ms)
err=$(mount_errno_text cat "$MNT/$TRICKLE/tiny:latest/rootfs/etc/hostname")
took=$(($(now_ms) - start))
assert_contains "$err" "Input/output error" "a layer trickling at 1 B/s"
# 5 attempts of 1 s and the backoff between them (0.5 + 1 + 2 + 4 s): about 13 s.
((took < 40000)) || fail "a 1 B/s trickle took $took ms to fail"
attempts=$(grep -c 'dripping the answer at 1 B/s' "$TRICKLE_LOG" || true)
[ "$attempts" -ge 2 ] || fail "the trickle was asked $attempts times: $(cat "$TRICKLE_LOG")"
line=$(grep -F "tiny:latest: " "$LOG" | grep -F "registry $TRICKLE timed out" | tail -1) ||
  fail "no log line says the download from $TRICKLE timed out: $(tail -5 "$LOG")"
assert_contains "$line" "gave up after 5 attempts" "the log line of the trickle"
log "  EIO after $took ms and $attempts attempts; log: $line"
unmount_wait "$MNT" "$MOUNT_PID"
