#!/usr/bin/env bash
# What a user meets when something is wrong (issue 16), on the real binary:
#  - exit status 2 for every usage error and 1 when the work itself fails;
#  - `imagefs status PATH` on a path that is not an imagefs mount: an error, exit 1 (also --json);
#  - writes in the mount fail with EROFS, and mkdir of a name the mount already has with EEXIST
#    (the kernel checks the name before the read-only flag, on every file system);
#  - a non-root `mount --allow-other` without user_allow_other in /etc/fuse.conf says
#    fusermount3's own reason on the terminal (run as the user nobody).
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq
require_mount

# status_of EXPECTED CMD...: run CMD, require exit status EXPECTED; prints stdout+stderr.
status_of() {
  local want=$1 rc=0 out
  shift
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" = "$want" ] || fail "$* exited $rc, not $want: $out"
  printf '%s\n' "$out"
}

# says TEXT: stdin holds TEXT (all of stdin is read: no SIGPIPE for the writer under pipefail).
says() {
  local text
  text=$(cat)
  grep -qF -- "$1" <<<"$text"
}

# --- exit statuses --------------------------------------------------------------------------------
S=(--cache-dir "$TEST_TMPDIR/never-made")
touch "$TEST_TMPDIR/agent"
status_of 2 imagefs build "${S[@]}" alpine -o x --level 13 | says "--level" || fail "--level"
status_of 2 imagefs build "${S[@]}" alpine -o x --format bz2 | says bz2 || fail "--format"
status_of 2 imagefs build "${S[@]}" alpine -o x --inject ./agent | says HOST:GUEST || fail "--inject"
status_of 2 imagefs build "${S[@]}" alpine -o x --init x --exec y >/dev/null
status_of 2 imagefs build "${S[@]}" alpine -o x --init "$TEST_TMPDIR/agent" --exec y >/dev/null
status_of 2 imagefs gc "${S[@]}" --max-size 20X | says 'invalid size "20X"' || fail "--max-size"
status_of 2 imagefs pull "${S[@]}" --platform foo alpine | says 'invalid platform "foo"' || fail "--platform"
status_of 2 imagefs mount "${S[@]}" "$TEST_TMPDIR/m" --ttl abc | says "--ttl" || fail "--ttl"
status_of 2 imagefs mount "${S[@]}" "$TEST_TMPDIR/m" --threads 0 | says "--threads" || fail "--threads"
status_of 2 imagefs pull "${S[@]}" --no-such-option alpine >/dev/null
status_of 2 imagefs pull "${S[@]}" alpine --platform >/dev/null
status_of 2 imagefs pull "${S[@]}" "Not/A/Reference" | says "invalid reference" || fail "reference"
status_of 2 imagefs rm "${S[@]}" "bad@sha256:12" >/dev/null
status_of 2 imagefs export "${S[@]}" alpine >/dev/null
status_of 2 imagefs frobnicate >/dev/null
status_of 2 imagefs >/dev/null
[ ! -e "$TEST_TMPDIR/never-made" ] || fail "a usage error reached the store"
[ ! -e "$TEST_TMPDIR/m" ] || fail "a usage error made the mount point"
# The work itself failing: 1.
status_of 1 imagefs pull "${S[@]}" --registry-timeout 2 127.0.0.1:1/tiny | says "127.0.0.1:1" || fail "no registry"
status_of 0 imagefs help >/dev/null
imagefs help | says "2 bad usage" || fail "help does not document the exit statuses"

# --- status on what is not a mount ---------------------------------------------------------------
mkdir -p "$TEST_TMPDIR/plain"
out=$(status_of 1 imagefs status "$TEST_TMPDIR/plain")
assert_contains "$out" "$TEST_TMPDIR/plain is not an imagefs mount"
assert_not_contains "$out" "died"
rc=0
"$IMAGEFS_BIN" status --json "$TEST_TMPDIR/plain" >"$TEST_TMPDIR/json.out" 2>"$TEST_TMPDIR/json.err" || rc=$?
assert_eq 1 "$rc" "status --json on a directory"
assert_eq "" "$(cat "$TEST_TMPDIR/json.out")" "status --json prints no JSON for what is not a mount"
assert_contains "$(cat "$TEST_TMPDIR/json.err")" "is not an imagefs mount"
status_of 1 imagefs status "$TEST_TMPDIR/no-such-dir" | says "no such directory" || fail "missing dir"

# --- the mount: read-only, EROFS -----------------------------------------------------------------
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny
R=$IMAGEFS_REGISTRY
MNT=$TEST_TMPDIR/mnt
mount_imagefs "$MNT" --cache-dir "$CACHE" --insecure-registry "$R"
out=$(status_of 0 imagefs status "$MNT")
assert_contains "$out" "pid "
out=$(status_of 0 imagefs status --json "$MNT")
assert_eq "$(daemon_pid "$MNT")" "$(jq .pid <<<"$out")" "status --json of the mount"
status_of 1 imagefs status "$MNT/$R" | says "is not an imagefs mount" || fail "a directory inside a mount"
img=$MNT/$R/tiny:latest
fs ls "$img/rootfs/bin" >/dev/null || fail "the image does not open"
erofs="Read-only file system"
for cmd in "mkdir $img/rootfs/newdir" "mkdir $img/rootfs/etc/newdir" "touch $img/rootfs/newfile" \
  "touch $img/rootfs/bin/busybox" "rm -f $img/rootfs/bin/busybox" "rmdir $img/rootfs/etc" \
  "mv $img/rootfs/etc $img/rootfs/etc2" "ln -s x $img/rootfs/newlink" "touch $img/newfile" \
  "mkdir $img/newdir" "chmod 0777 $img/rootfs/etc"; do
  # shellcheck disable=SC2086
  out=$(mount_errno_text $cmd)
  assert_contains "$out" "$erofs" "$cmd"
done
# A name that exists: EEXIST, as on any read-only file system (the kernel answers it before it
# looks at the read-only flag, without asking the daemon).
# shellcheck disable=SC2086
out=$(mount_errno_text mkdir "$img/rootfs/etc")
assert_contains "$out" "File exists"

# --- a non-root --allow-other mount without user_allow_other ----------------------------------
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
  log "not root (or no setpriv): the non-root --allow-other check is left out"
elif grep -qE '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null; then
  log "/etc/fuse.conf has user_allow_other: the non-root --allow-other check is left out"
else
  chmod 755 "$TEST_TMPDIR"
  user_dir=$TEST_TMPDIR/nobody
  mkdir -p "$user_dir/mnt" "$user_dir/cache"
  chown -R nobody "$user_dir"
  as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env)
  _track_mount "$user_dir/mnt"
  for mode in background foreground; do
    flags=()
    [ "$mode" = foreground ] && flags=(-f)
    rc=0
    out=$(timeout -k 5 60 "${as_nobody[@]}" "$IMAGEFS_BIN" mount "$user_dir/mnt" "${flags[@]}" \
      --cache-dir "$user_dir/cache" --allow-other --allow-registry '*' 2>&1) || rc=$?
    assert_eq 1 "$rc" "--allow-other as nobody ($mode): $out"
    # fusermount3's reason, on the terminal, in the one error line.
    grep -q "^imagefs: mount.*cannot mount on $user_dir/mnt: .*user_allow_other.*/etc/fuse.conf" <<<"$out" ||
      fail "the reason is not on the terminal ($mode): $out"
    assert_not_contains "$out" "is /dev/fuse there"
  done
  assert_contains "$(cat "$user_dir/cache/mount.log")" "user_allow_other" "the log has it too"
fi
log "pass"
