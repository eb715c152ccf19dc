#!/usr/bin/env bash
# The store is private to its user (issue 12): every directory a pull and a build make is 0700,
# whatever the umask; a store made open (0755) by an older imagefs or by hand is closed the next
# time any command opens it, so another user can no longer read an image's files there (the mount
# stays the only view for others); the defaults (~/.cache/imagefs for a user, /var/lib/imagefs
# for root) are made 0700 too.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq runuser unshare
[ "$(id -u)" = 0 ] || skip "needs root: checks what user nobody can read"

"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny
ref=$IMAGEFS_REGISTRY/tiny
# nobody must be able to reach the store's parent, so that only the store's own modes stop it.
chmod 0755 "$TEST_TMPDIR"
as_nobody() { runuser -u nobody -- "$@"; }

# Directories of the store at DIR whose mode is not 700, one per line.
open_dirs() { find "$1" -type d ! -perm 0700 -printf '%m %p\n'; }

log "a new store: every directory 0700 after pull and build, even with umask 0"
(umask 0 && imagefs pull --cache-dir "$CACHE" "$ref" >/dev/null 2>&1) || fail "pull failed"
(umask 0 && imagefs build --cache-dir "$CACHE" "$ref" -o "$TEST_TMPDIR/tiny.cpio.gz" >/dev/null 2>&1) ||
  fail "build failed"
[ -d "$CACHE/segments" ] && [ -d "$CACHE/derived" ] && [ -d "$CACHE/blobs/sha256" ] ||
  fail "the store lacks the directories this test expects: $(ls "$CACHE")"
out=$(open_dirs "$CACHE")
[ -z "$out" ] || fail "store directories others can enter or read: $out"
layer=$(find "$CACHE/blobs/sha256" -type f -size +100k | head -1)
[ -n "$layer" ] || fail "no layer blob in the store"
as_nobody cat "$layer" >/dev/null 2>&1 && fail "user nobody can read $layer"

log "an existing open store is closed by the next command that opens it"
chmod 0755 "$CACHE" "$CACHE/blobs" "$CACHE/blobs/sha256"
chmod 0644 "$layer"
# The test can fail: as things were, nobody reads the layer.
as_nobody cat "$layer" >/dev/null || fail "setup: nobody cannot read the opened-up store"
assert_ok imagefs images --cache-dir "$CACHE" >/dev/null
assert_eq 700 "$(stat -c %a "$CACHE")" "store root mode after open"
as_nobody cat "$layer" >/dev/null 2>&1 && fail "user nobody still reads $layer after the store was opened"
as_nobody ls "$CACHE" >/dev/null 2>&1 && fail "user nobody still lists the store"

log "a user's default store, ~/.cache/imagefs, and its .cache are 0700"
home=$TEST_TMPDIR/home
mkdir -m 0755 "$home" && chown nobody "$home"
as_nobody env HOME="$home" XDG_CACHE_HOME= sh -c 'umask 022 && "$0" images' "$IMAGEFS_BIN" >/dev/null ||
  fail "imagefs images as nobody failed"
assert_eq 700 "$(stat -c %a "$home/.cache/imagefs")" "~/.cache/imagefs mode"
assert_eq 700 "$(stat -c %a "$home/.cache")" "~/.cache mode"

log "root's default store, /var/lib/imagefs (in a private mount namespace over a tmpfs)"
modes=$(unshare -m sh -c 'mount -t tmpfs -o mode=0755 none /var/lib && umask 022 &&
  "$0" images >/dev/null && stat -c %a /var/lib/imagefs &&
  chmod 0755 /var/lib/imagefs && "$0" images >/dev/null && stat -c %a /var/lib/imagefs' "$IMAGEFS_BIN") ||
  fail "imagefs images with the default store failed"
assert_eq "700
700" "$modes" "/var/lib/imagefs mode (new, then reopened after chmod 0755)"
log "pass"
