#!/usr/bin/env bash
# The configuration file (`imagefs help config`): every command takes its defaults from it,
# --config FILE and $IMAGEFS_CONFIG choose it, the command line wins, and an unknown key or a
# bad value stops the command with exit status 2 naming the file and line. A real mount shows
# the file's cache-dir and ttl in its status.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd jq
IMAGEFS_BIN=${IMAGEFS_BIN:-$IMAGEFS_SOURCE_DIR/build/imagefs}
T=$TEST_TMPDIR
B=$IMAGEFS_BIN

status_of() {
  local rc=0
  "$@" >"$T/out" 2>&1 || rc=$?
  echo "$rc"
}

cat >"$T/a.conf" <<CONF
# defaults for the test
cache-dir = $T/store-a
platform = linux/amd64
ttl = 42
CONF

log "--config FILE and \$IMAGEFS_CONFIG name the file; its cache-dir is used"
assert_ok "$B" images --config "$T/a.conf" >/dev/null
[ -d "$T/store-a" ] || fail "images did not use the file's cache-dir"
IMAGEFS_CONFIG=$T/a.conf assert_ok "$B" images >/dev/null
assert_ok "$B" images --config "$T/a.conf" --cache-dir "$T/store-b" >/dev/null
[ -d "$T/store-b" ] || fail "the command line's --cache-dir did not win"

log "errors name the file and line, exit status 2"
printf 'ttl = 5\n\nno-such-key = 1\n' >"$T/bad.conf"
assert_eq 2 "$(status_of "$B" images --config "$T/bad.conf")" "exit status for an unknown key"
assert_contains "$(cat "$T/out")" "$T/bad.conf:3: unknown key \"no-such-key\"" "message"
assert_eq 2 "$(status_of "$B" images --config "$T/none.conf")" "exit status for a missing file"
assert_contains "$(cat "$T/out")" "$T/none.conf" "the missing file is named"
assert_eq 2 "$(IMAGEFS_CONFIG=$T/none.conf status_of "$B" version)" "a missing \$IMAGEFS_CONFIG"
printf '# x\nttl = soon\n' >"$T/ttl.conf"
assert_eq 2 "$(status_of "$B" mount --config "$T/ttl.conf" "$T/m")" "exit status for a bad value"
assert_contains "$(cat "$T/out")" "$T/ttl.conf:2: ttl = soon: --ttl must be" "message"
# A key of another command is left alone: `images` has no --ttl.
assert_eq 0 "$(status_of "$B" images --config "$T/ttl.conf" --cache-dir "$T/store-b")" \
  "images with a mount-only key"
printf 'allow-other = yes\n' >"$T/other.conf"
assert_eq 2 "$(status_of "$B" mount --config "$T/other.conf" "$T/m")" "allow-other alone"
assert_contains "$(cat "$T/out")" "$T/other.conf:1: allow-other = yes: --allow-other lets" "message"

require_mount
log "a mount takes cache-dir and ttl from the file; the command line wins"
MNT=$T/mnt
mount_imagefs "$MNT" --config "$T/a.conf" --log "$T/mount.log"
s=$("$B" status --json "$MNT")
assert_eq 42 "$(jq -r .tag_ttl_seconds <<<"$s")" "ttl from the file"
assert_eq "$T/store-a" "$(jq -r .cache_dir <<<"$s")" "cache-dir from the file"
unmount_wait "$MNT"
mount_imagefs "$MNT" --config "$T/a.conf" --ttl 7 --log "$T/mount2.log"
assert_eq 7 "$("$B" status --json "$MNT" | jq -r .tag_ttl_seconds)" "--ttl over the file's"
unmount_wait "$MNT"
