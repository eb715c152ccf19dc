#!/usr/bin/env bash
# Credentials that rotate under a running mount (issue 16), against a Basic-auth registry and a
# token registry (tokens from the harness issuer, nothing for anonymous users), one mount:
#   (a) config.json holds wrong passwords: `ls MNT/REG/app:latest` is "Permission denied"; once
#       config.json is fixed, the same ls succeeds within --negative-ttl, without a remount;
#   (b) config.json names a credential helper (credHelpers) whose first answer for a registry is
#       a stale password and later ones the right one: the first ls of another tag succeeds at
#       once, and the helper was asked exactly twice per registry (asked again after the refusal);
#       files of the image read through the helper's credentials;
#   (c) `imagefs pull` (one process) with the same files still works, the helper again asked
#       again after its stale answer;
#   and no password reaches the daemon's log.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo curl python3 htpasswd
require_mount

T=$TEST_TMPDIR
NEGATIVE_TTL=2
make_oci_layout "$T/layout" >/dev/null

# push REGISTRY USER PASSWORD TAG...: the layout as app:TAG.
push() {
  local reg=$1 user=$2 password=$3 tag
  shift 3
  for tag in "$@"; do
    skopeo copy --dest-tls-verify=false --dest-creds "$user:$password" \
      "oci:$T/layout:latest" "docker://$reg/app:$tag" >/dev/null 2>"$T/push.log" ||
      fail "push of app:$tag to $reg failed: $(cat "$T/push.log")"
  done
}

start_registry basic
B=$IMAGEFS_REGISTRY B_USER=$IMAGEFS_REGISTRY_USER B_PASSWORD=$IMAGEFS_REGISTRY_PASSWORD
push "$B" "$B_USER" "$B_PASSWORD" latest v2 v3
start_registry token --anonymous none
K=$IMAGEFS_REGISTRY K_USER=$IMAGEFS_REGISTRY_USER K_PASSWORD=$IMAGEFS_REGISTRY_PASSWORD
K_TOKEN_LOG=$IMAGEFS_TOKEN_LOG
push "$K" "$K_USER" "$K_PASSWORD" latest v2 v3

DC=$T/docker/config.json
mkdir -p "$T/docker"
auths() { # auths PASSWORD_FOR_B PASSWORD_FOR_K
  printf '{"auths": {"%s": {"auth": "%s"}, "%s": {"auth": "%s"}}}\n' \
    "$B" "$(printf '%s:%s' "$B_USER" "$1" | base64 -w0)" \
    "$K" "$(printf '%s:%s' "$K_USER" "$2" | base64 -w0)"
}

# The daemon finds docker-credential-rotating on its PATH. It counts its calls per server in
# $T/helper/calls-SERVER and answers a stale password on the first call for a server.
mkdir -p "$T/bin" "$T/helper"
cat >"$T/bin/docker-credential-rotating" <<HELPER
#!/bin/sh
[ "\$1" = get ] || exit 1
read -r server
f="$T/helper/calls-\$(printf '%s' "\$server" | tr -c 'A-Za-z0-9' _)"
n=\$(cat "\$f" 2>/dev/null || echo 0); n=\$((n + 1)); echo \$n >"\$f"
case "\$server" in
  "$B") user=$B_USER pw=$B_PASSWORD ;;
  "$K") user=$K_USER pw=$K_PASSWORD ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
[ "\$n" -gt 1 ] || pw="stale-\$pw"
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\n' "\$server" "\$user" "\$pw"
HELPER
chmod +x "$T/bin/docker-credential-rotating"
export PATH=$T/bin:$PATH
helper_calls() { cat "$T/helper/calls-$(printf '%s' "$1" | tr -c 'A-Za-z0-9' _)" 2>/dev/null || echo 0; }

MNT=$T/mnt
LOG=$T/mount.log
# ---------------------------------------------------------------------------------------------
log "(a) wrong passwords in config.json, then fixed under the running mount"
auths "wrong-$B_PASSWORD" "wrong-$K_PASSWORD" >"$DC"
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG" --docker-config "$DC" \
  --negative-ttl "$NEGATIVE_TTL"
pid=$MOUNT_PID
for reg in "$B" "$K"; do
  err=$(mount_errno_text ls "$MNT/$reg/app:latest")
  assert_contains "$err" "Permission denied" "ls of app:latest on $reg with a wrong password"
done
failed_at=$(date +%s.%N)
grep -qF "refused the credentials for $K from $DC" "$LOG" ||
  fail "the log does not say the token service refused the credentials from $DC: $(tail -5 "$LOG")"
# Fixed in place (truncated and rewritten, as `echo > file` does).
auths "$B_PASSWORD" "$K_PASSWORD" >"$DC"
sleep "$(python3 -c "import time; print(max(0.0, $NEGATIVE_TTL + 0.2 - (time.time() - $failed_at)))")"
for reg in "$B" "$K"; do
  out=$(assert_ok fs ls "$MNT/$reg/app:latest")
  assert_contains "$out" "rootfs" "ls of app:latest on $reg after config.json was fixed"
  assert_eq "hello from an imagefs test" "$(fs cat "$MNT/$reg/app:latest/rootfs/hello.txt")" \
    "hello.txt of app:latest on $reg"
done
log "  both registries answered within ${NEGATIVE_TTL} s of the fix, without a remount"

# ---------------------------------------------------------------------------------------------
log "(b) a credential helper whose first answer is stale"
printf '{"credHelpers": {"%s": "rotating", "%s": "rotating"}}\n' "$B" "$K" >"$DC"
for reg in "$B" "$K"; do
  out=$(assert_ok fs ls "$MNT/$reg/app:v2")
  assert_contains "$out" "rootfs" "ls of app:v2 on $reg through the helper"
  assert_eq 2 "$(helper_calls "$reg")" "calls of the helper for $reg (a stale answer, refused, then asked again)"
  assert_eq "hello from an imagefs test" "$(fs cat "$MNT/$reg/app:v2/rootfs/hello.txt")" \
    "hello.txt of app:v2 on $reg (its layer fetched with the helper's credentials)"
done
assert_eq 2 "$(helper_calls "$B")" "calls of the helper for $B after reading a layer (the good answer is kept)"
grep -qE '^.* 401 ' "$K_TOKEN_LOG" || fail "the token issuer never refused the stale password: $(tail -5 "$K_TOKEN_LOG")"

for secret in "$B_PASSWORD" "$K_PASSWORD"; do
  ! grep -qF "$secret" "$LOG" || fail "the daemon's log shows a registry password"
done
unmount_wait "$MNT" "$pid"

# ---------------------------------------------------------------------------------------------
log "(c) imagefs pull with the same files"
auths "$B_PASSWORD" "$K_PASSWORD" >"$DC"
for reg in "$B" "$K"; do
  assert_ok imagefs pull --cache-dir "$T/pull-cache" --docker-config "$DC" "$reg/app:v3" >/dev/null
done
rm -f "$T/helper"/calls-*
printf '{"credHelpers": {"%s": "rotating", "%s": "rotating"}}\n' "$B" "$K" >"$DC"
for reg in "$B" "$K"; do
  assert_ok imagefs pull --cache-dir "$T/pull-cache.helper" --docker-config "$DC" "$reg/app:v3" >/dev/null
  assert_eq 2 "$(helper_calls "$reg")" "calls of the helper for $reg by imagefs pull"
done
log "PASS"
