#!/usr/bin/env bash
# imagefs under systemd, without systemd: `imagefs mount -f` with a real $NOTIFY_SOCKET (a
# datagram socket of notify_listener.py) sends READY=1 only once the mount is in place, STATUS=
# lines that follow what it serves, and STOPPING=1 on SIGTERM, after which the mount is gone and
# the daemon has exited 0. With $JOURNAL_STREAM naming its stderr, every log line carries a
# syslog priority prefix ("<6>mounted ...", "<4>" for a failed lookup) and no timestamp, as
# journald expects; without it the lines keep their timestamps.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq python3
require_mount
export IMAGEFS_CONFIG=""

T=$TEST_TMPDIR
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny

MNT=$T/mnt
mkdir -p "$MNT"
SOCK=$T/notify.sock
NLOG=$T/notify.log
python3 "$IMAGEFS_SOURCE_DIR/tests/integration/service/notify_listener.py" "$SOCK" "$NLOG" "$MNT" &
LISTENER=$!
on_exit _lib_kill "$LISTENER"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || fail "the notify listener did not start"

ERR=$T/daemon.err
: >"$ERR"
# journald's stream: $JOURNAL_STREAM is DEVICE:INODE of the daemon's stderr.
JS=$(stat -c '%d:%i' "$ERR")
NOTIFY_SOCKET=$SOCK JOURNAL_STREAM=$JS "$IMAGEFS_BIN" mount -f "$MNT" --cache-dir "$T/cache" \
  --platform linux/amd64 2>>"$ERR" &
DAEMON=$!
quiet_unmount() { fusermount3 -u -z "$1" 2>/dev/null || true; }
on_exit quiet_unmount "$MNT"
on_exit _lib_kill "$DAEMON"

for _ in $(seq 200); do grep -q "READY=1" "$NLOG" && break; sleep 0.05; done
grep -q "READY=1" "$NLOG" || fail "no READY=1 within 10 s: $(cat "$NLOG" "$ERR")"
assert_eq "mounted READY=1" "$(grep READY=1 "$NLOG")" "READY=1 came once the mount was in place"
assert_contains "$(cat "$NLOG")" "STATUS=serving 0 images, 0 tasks in flight" "the first STATUS="
is_mounted "$MNT" || fail "$MNT is not mounted after READY=1"

log "a lookup shows in STATUS="
fs ls "$MNT/$REG/tiny:latest/rootfs" >/dev/null || fail "ls of tiny's rootfs: $(cat "$ERR")"
for _ in $(seq 100); do grep -q "STATUS=serving 1 image," "$NLOG" && break; sleep 0.1; done
grep -q "STATUS=serving 1 image, 0 tasks in flight" "$NLOG" ||
  fail "no STATUS= line says one image is served: $(cat "$NLOG")"
log "a failed lookup is a warning"
fs ls "$MNT/$REG/missing:latest" >/dev/null 2>&1 && fail "a missing image was found"
for _ in $(seq 50); do grep -q "last error" "$NLOG" && break; sleep 0.1; done
grep -q "STATUS=serving 1 image, 0 tasks in flight; last error: .*missing" "$NLOG" ||
  fail "no STATUS= line names the last error: $(cat "$NLOG")"

log "SIGTERM: STOPPING=1, unmounted, exit 0"
kill -TERM "$DAEMON"
rc=0
wait "$DAEMON" || rc=$?
assert_eq 0 "$rc" "the daemon's exit status after SIGTERM"
for _ in $(seq 50); do grep -q "STOPPING=1" "$NLOG" && break; sleep 0.05; done
grep -q "STOPPING=1" "$NLOG" || fail "no STOPPING=1: $(cat "$NLOG")"
in_proc_mounts "$MNT" && fail "$MNT is still mounted after SIGTERM"

log "log lines for journald"
cat "$ERR" >&2
grep -qE '^<6>mounted '"$MNT"' \(store ' "$ERR" || fail "no '<6>mounted' line"
grep -qE '^<4>.*missing' "$ERR" || fail "no '<4>' line for the failed lookup"
grep -qE '^<6>unmounted '"$MNT"' on SIGTERM' "$ERR" || fail "no '<6>unmounted ... on SIGTERM' line"
bad=$(grep -vE '^<[0-7]>' "$ERR" || true)
[ -z "$bad" ] || fail "lines without a priority prefix: $bad"

log "without \$JOURNAL_STREAM the lines keep their timestamps"
ERR2=$T/daemon2.err
"$IMAGEFS_BIN" mount -f "$MNT" --cache-dir "$T/cache" 2>"$ERR2" &
D2=$!
on_exit _lib_kill "$D2"
for _ in $(seq 200); do is_mounted "$MNT" && break; sleep 0.05; done
kill -TERM "$D2"
wait "$D2" || true
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} imagefs\[[0-9]+\]: mounted ' "$ERR2" ||
  fail "no timestamped 'mounted' line: $(cat "$ERR2")"
