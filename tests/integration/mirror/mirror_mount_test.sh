#!/usr/bin/env bash
# A mount honours --mirror (issue 14): the image's manifest, config and layer come from a real
# pull-through cache (docker-registry in proxy mode) in front of the upstream; the daemon's log
# and `imagefs status` name the mirror for each; a second mount with the mirror stopped serves
# the image from the upstream.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mirror/mirror_lib.sh"
require_cmd docker-registry skopeo jq curl python3 openssl
require_mount

T=$TEST_TMPDIR
NO_HOSTS=$(new_tmpdir no-hosts)
start_registry open
UP=$IMAGEFS_REGISTRY UP_LOG=$IMAGEFS_REGISTRY_LOG
manifest=$(make_oci_layout "$T/layout")
layer=$(jq -r '.layers[0].digest' "$T/layout/blobs/sha256/${manifest#sha256:}")
skopeo copy --quiet --dest-tls-verify=false "oci:$T/layout:latest" "docker://$UP/app:1.0" \
  >/dev/null 2>"$T/push.log" || fail "push failed: $(cat "$T/push.log")"
start_mirror "http://$UP"

log "a mount through the mirror"
MNT=$T/mnt LOG=$T/mnt.log
mount_imagefs "$MNT" --cache-dir "$T/cache" --log "$LOG" --platform linux/amd64 \
  --hosts-dir "$NO_HOSTS" --mirror "$UP=http://$MIRROR"
assert_eq "$manifest" "$(fs cat "$MNT/$UP/app:1.0/digest")" "digest through the mount"
assert_eq "hello from an imagefs test" "$(fs cat "$MNT/$UP/app:1.0/rootfs/hello.txt")" "a file of the image"
[ "$(blob_gets "$MIRROR_LOG" "$layer")" -ge 1 ] || fail "the mirror served no layer"
line=$(grep -F "$layer served by mirror $MIRROR" "$LOG") ||
  fail "the log does not say the mirror served the layer: $(tail -10 "$LOG")"
log "  log: $line"
grep -qF "manifest $manifest served by mirror $MIRROR" "$LOG" ||
  fail "the log does not say the mirror served the manifest: $(tail -10 "$LOG")"
status=$(assert_ok "$IMAGEFS_BIN" status "$MNT")
assert_contains "$status" "$MIRROR" "imagefs status names the mirror"
assert_contains "$status" "$layer"
unmount_wait "$MNT" "$MOUNT_PID"

log "the mirror stopped: a fresh mount serves the image from the upstream"
stop_mirror
before=$(blob_gets "$UP_LOG" "$layer")
MNT=$T/mnt2 LOG=$T/mnt2.log
mount_imagefs "$MNT" --cache-dir "$T/cache2" --log "$LOG" --platform linux/amd64 \
  --hosts-dir "$NO_HOSTS" --mirror "$UP=http://$MIRROR" --registry-timeout 10
assert_eq "hello from an imagefs test" "$(fs cat "$MNT/$UP/app:1.0/rootfs/hello.txt")" "a file of the image"
assert_eq $((before + 1)) "$(blob_gets "$UP_LOG" "$layer")" "the upstream served the layer"
if grep -qF "served by mirror" "$LOG"; then fail "a stopped mirror served: $(cat "$LOG")"; fi
unmount_wait "$MNT" "$MOUNT_PID"
log "ok"
