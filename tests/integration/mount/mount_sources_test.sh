#!/usr/bin/env bash
# An image is not its first registry (issue 17): the mount keys images by manifest digest, and
# their blobs are content-addressed, so the layers come from any repository a lookup resolved to
# that manifest, in turn. On real mounts, one registry reached directly and through
# tests/harness/faultproxy.py (the same image, the same digest, under two names):
#   - the issue's case: `ls` of the image through the proxy, the proxy stops, then rootfs/ through
#     the direct name lists and reads; the log says the direct registry served, and why the proxy
#     failed;
#   - a first registry that answers the layers with damaged bytes (digest mismatch), or with
#     HTTP 500: the image fails while it is the only way in, then the healthy name serves it, and
#     the log says which one served and why the other failed; once in, the image is read
#     through either name without asking the bad one again.
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
DIGEST=$(fixture_digest_for tiny)
# Only the layers: the config is a blob too, and a resolve that cannot read it fails outright.
LAYERS=$(layer_digests tiny | paste -sd'|')

# Mounts a fresh cache at $T/NAME; sets MNT and LOG.
fresh_mount() {
  MNT=$T/$1
  LOG=$T/$1.log
  mount_imagefs "$MNT" --cache-dir "$T/cache-$1" --log "$LOG" --platform linux/amd64
}

# The layers served through a proxy, from its log (requests that reached the registry).
layer_requests() { grep -cE "GET /v2/tiny/blobs/($LAYERS) " "$1" || true; }

# ---------------------------------------------------------------------------------------------
log "the issue's case: the first registry goes away"
start_faultproxy --target "$REG"
PROXY=$FAULTPROXY PROXY_PID=$FAULTPROXY_PID PROXY_LOG=$FAULTPROXY_LOG
fresh_mount gone
fs ls "$MNT/$PROXY/tiny:latest/" >/dev/null || fail "ls of tiny through the proxy"
assert_eq "$DIGEST" "$(fs cat "$MNT/$PROXY/tiny:latest/digest")" "digest through the proxy"
assert_eq 0 "$(layer_requests "$PROXY_LOG")" "layer requests before rootfs/ was touched"
kill "$PROXY_PID"
wait "$PROXY_PID" 2>/dev/null || true
out=$(fs ls "$MNT/$REG/tiny:latest/rootfs") || fail "ls of rootfs/ through $REG after the proxy stopped: $(tail -5 "$LOG")"
assert_contains "$out" "etc" "rootfs/ through $REG"
assert_eq tiny "$(fs cat "$MNT/$REG/tiny:latest/rootfs/etc/hostname")" "etc/hostname through $REG"
served=$(grep -F "layers of $DIGEST served by $REG/tiny" "$LOG") ||
  fail "no log line says $REG served the layers: $(tail -10 "$LOG")"
log "  log: $served"
assert_contains "$served" "after $PROXY/tiny failed" "the log line names the proxy that failed"
tried=$(grep -F "from $PROXY/tiny failed" "$LOG" | grep -F "trying $REG/tiny") ||
  fail "no log line says the proxy failed and $REG was tried next: $(tail -10 "$LOG")"
log "  log: $tried"
# The same files through the proxy's name: the image is one (its tree is built once).
assert_eq tiny "$(fs cat "$MNT/$PROXY/tiny:latest/rootfs/etc/hostname")" "etc/hostname through the proxy's name"
if grep -q "internal error" "$LOG"; then fail "the daemon logged an internal error: $(cat "$LOG")"; fi
unmount_wait "$MNT" "$MOUNT_PID"

# ---------------------------------------------------------------------------------------------
# A first registry that misbehaves on the layers ($1: faultproxy's fault arguments): it cannot
# serve the image while it is the only name known; the healthy name then can, and is preferred.
misbehaving() {
  local what=$1 name=$2
  shift 2
  log "a first registry that $what"
  start_faultproxy --target "$REG" --path "/blobs/($LAYERS)" "$@"
  local bad=$FAULTPROXY bad_log=$FAULTPROXY_LOG
  fresh_mount "$name"
  assert_eq "$DIGEST" "$(fs cat "$MNT/$bad/tiny:latest/digest")" "digest through the bad proxy"
  err=$(mount_errno_text cat "$MNT/$bad/tiny:latest/rootfs/etc/hostname")
  assert_contains "$err" "Input/output error" "etc/hostname while only the bad proxy is known"
  [ "$(layer_requests "$bad_log")" -ge 1 ] || fail "the bad proxy saw no layer request: $(cat "$bad_log")"
  # The healthy name of the same image: its lookup adds it, and the layers come from it.
  assert_eq tiny "$(fs cat "$MNT/$REG/tiny:latest/rootfs/etc/hostname")" \
    "etc/hostname through $REG after the bad proxy failed"
  served=$(grep -F "layers of $DIGEST served by $REG/tiny (after $bad/tiny failed" "$LOG") ||
    fail "no log line says $REG served after $bad failed: $(tail -10 "$LOG")"
  log "  log: $served"
  # Both names read the same tree now, without asking the bad one again.
  local before
  before=$(layer_requests "$bad_log")
  assert_eq tiny "$(fs cat "$MNT/$bad/tiny:latest/rootfs/etc/hostname")" "etc/hostname through the bad proxy's name"
  assert_eq "$before" "$(layer_requests "$bad_log")" "layer requests to the bad proxy once the image is in"
  if grep -q "internal error" "$LOG"; then fail "the daemon logged an internal error: $(cat "$LOG")"; fi
  unmount_wait "$MNT" "$MOUNT_PID"
}

misbehaving "serves damaged layers (digest mismatch)" corrupt --corrupt
assert_contains "$served" "digest mismatch" "the log says why the bad proxy failed"
misbehaving "answers the layers with HTTP 500" status500 --status 500
assert_contains "$served" "HTTP 500" "the log says why the bad proxy failed"
