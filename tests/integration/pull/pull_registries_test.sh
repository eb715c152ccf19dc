#!/usr/bin/env bash
# `imagefs pull` against real registries in every auth mode: anonymous, Basic from docker's
# config.json, Bearer tokens (anonymous, with credentials, expiring mid-pull), a credential
# helper, TLS with a CA of the run's own; and platform choice from a multi-arch index.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq curl python3 openssl

"$FIXTURES" build --out "$FIXTURES_OUT" tiny edge python multiarch >/dev/null 2>&1 ||
  fail "fixtures build failed"

# --- open registry, anonymous -----------------------------------------------------------------
log "open"
start_registry open
push_fixtures tiny edge multiarch
out=$(assert_ok imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny" "$IMAGEFS_REGISTRY/edge:latest")
assert_contains "$out" "$IMAGEFS_REGISTRY/tiny:latest $(fixture_manifest_digest tiny)"
assert_contains "$out" "$IMAGEFS_REGISTRY/edge:latest $(fixture_manifest_digest edge)"
assert_image_in_cache tiny
assert_image_in_cache edge
# A digest reference pulls exactly that manifest.
d=$(fixture_manifest_digest tiny)
assert_ok imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny@$d" >/dev/null

# --- multi-arch: the host's platform by default, another on request, none that is missing ----
log "multiarch"
arm=$(jq -r '.manifests[] | select(.platform.architecture == "arm64") | .digest' \
  "$FIXTURES_OUT/oci/multiarch/blobs/sha256/$(jq -r '.manifests[0].digest' "$FIXTURES_OUT/oci/multiarch/index.json" | cut -d: -f2)")
out=$(assert_ok imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/multiarch")
assert_contains "$out" "$(fixture_manifest_digest multiarch) linux/amd64"
assert_image_in_cache multiarch
out=$(assert_ok imagefs pull --cache-dir "$CACHE" --platform linux/aarch64 "$IMAGEFS_REGISTRY/multiarch")
assert_contains "$out" "$arm linux/arm64"
assert_image_in_cache multiarch "$arm"
out=$(assert_fails imagefs pull --cache-dir "$CACHE" --platform linux/s390x "$IMAGEFS_REGISTRY/multiarch")
assert_contains "$out" "linux/s390x"
assert_contains "$out" "linux/amd64"
assert_contains "$out" "linux/arm64"
stop_registry

# --- Basic auth: refused without credentials, pulled with config.json's `auths` ---------------
log "basic"
start_registry basic
push_fixtures tiny -- --dest-creds "$IMAGEFS_REGISTRY_USER:$IMAGEFS_REGISTRY_PASSWORD"
out=$(assert_fails imagefs pull --cache-dir "$CACHE.basic" "$IMAGEFS_REGISTRY/tiny")
assert_contains "$out" "unauthorized"
assert_contains "$out" "$IMAGEFS_REGISTRY"
auth=$(printf '%s:%s' "$IMAGEFS_REGISTRY_USER" "wrong-$IMAGEFS_REGISTRY_PASSWORD" | base64 -w0)
echo "{\"auths\": {\"$IMAGEFS_REGISTRY\": {\"auth\": \"$auth\"}}}" >"$DOCKER_CONFIG/config.json"
out=$(assert_fails imagefs pull --cache-dir "$CACHE.basic" "$IMAGEFS_REGISTRY/tiny")
assert_not_contains "$out" "wrong-$IMAGEFS_REGISTRY_PASSWORD" "the password never appears in errors"
assert_not_contains "$out" "$auth"
auth=$(printf '%s:%s' "$IMAGEFS_REGISTRY_USER" "$IMAGEFS_REGISTRY_PASSWORD" | base64 -w0)
echo "{\"auths\": {\"$IMAGEFS_REGISTRY\": {\"auth\": \"$auth\"}}}" >"$DOCKER_CONFIG/config.json"
CACHE=$CACHE.basic assert_ok imagefs pull --cache-dir "$CACHE.basic" "$IMAGEFS_REGISTRY/tiny" >/dev/null
CACHE=$CACHE.basic assert_image_in_cache tiny
echo '{}' >"$DOCKER_CONFIG/config.json"
stop_registry

# --- Bearer tokens: anonymous pull of a public repository, none of a private one ---------------
log "token"
start_registry token --token-ttl 4
creds="$IMAGEFS_REGISTRY_USER:$IMAGEFS_REGISTRY_PASSWORD"
push_fixtures tiny python -- --dest-creds "$creds"
skopeo copy --dest-creds "$creds" --dest-tls-verify=false --preserve-digests \
  "oci:$FIXTURES_OUT/oci/tiny:latest" "docker://$IMAGEFS_REGISTRY/private/tiny:latest" >/dev/null 2>&1 ||
  fail "push to private/tiny failed"
assert_ok imagefs pull --cache-dir "$CACHE.token" "$IMAGEFS_REGISTRY/tiny" >/dev/null
out=$(assert_fails imagefs pull --cache-dir "$CACHE.token" "$IMAGEFS_REGISTRY/private/tiny")
assert_contains "$out" "private/tiny"

# A credential helper named in config.json's credHelpers supplies the user for this registry.
mkdir -p "$TEST_TMPDIR/bin"
cat >"$TEST_TMPDIR/bin/docker-credential-imagefstest" <<HELPER
#!/bin/sh
# Test credential helper: answers \`get\` for one registry, as docker's helpers do.
[ "\$1" = get ] || exit 1
read -r server
echo "\$server" >>"$TEST_TMPDIR/helper.log"
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\n' "\$server" "$IMAGEFS_REGISTRY_USER" "$IMAGEFS_REGISTRY_PASSWORD"
HELPER
chmod +x "$TEST_TMPDIR/bin/docker-credential-imagefstest"
echo "{\"credHelpers\": {\"$IMAGEFS_REGISTRY\": \"imagefstest\"}}" >"$DOCKER_CONFIG/config.json"
# A slow blob request (held 5 s before it reaches the registry, beyond the 4 s token lifetime)
# makes the token expire mid-pull: the client must fetch a new one and carry on. Only the first
# is held: a retry held as long would meet an expired token again.
start_faultproxy --target "$IMAGEFS_REGISTRY" --path '/blobs/' --delay-ms 5000 --delay-count 1
tokens_before=$(grep -cE ' (GET|POST) .* 200 ' "$IMAGEFS_TOKEN_LOG" || true)
echo "{\"credHelpers\": {\"$FAULTPROXY\": \"imagefstest\"}}" >"$DOCKER_CONFIG/config.json"
out=$(PATH=$TEST_TMPDIR/bin:$PATH assert_ok imagefs pull --cache-dir "$CACHE.token" --max-parallel 1 \
  "$FAULTPROXY/private/tiny")
assert_contains "$(cat "$TEST_TMPDIR/helper.log")" "$FAULTPROXY" "the helper was asked"
CACHE=$CACHE.token assert_image_in_cache tiny
out=$(PATH=$TEST_TMPDIR/bin:$PATH assert_ok imagefs pull --cache-dir "$CACHE.token" --max-parallel 1 \
  "$FAULTPROXY/python")
CACHE=$CACHE.token assert_image_in_cache python
tokens=$(($(grep -cE ' (GET|POST) .* 200 ' "$IMAGEFS_TOKEN_LOG" || true) - tokens_before))
# At least one token per pull, and more for the pull whose token expired on the way.
[ "$tokens" -ge 3 ] || fail "expected fresh tokens after expiry, the issuer issued $tokens"
echo '{}' >"$DOCKER_CONFIG/config.json"
stop_registry

# --- TLS with a CA made for the run: refused without it, pulled with --ca-file -----------------
log "tls"
start_registry tls
push_fixtures tiny -- --dest-cert-dir "$IMAGEFS_REGISTRY_CERT_DIR"
out=$(assert_fails imagefs pull --cache-dir "$CACHE.tls" "localhost:${IMAGEFS_REGISTRY#*:}/tiny")
assert_contains "$out" "certificate"
assert_ok imagefs pull --cache-dir "$CACHE.tls" --ca-file "$IMAGEFS_REGISTRY_CA" \
  "localhost:${IMAGEFS_REGISTRY#*:}/tiny" >/dev/null
CACHE=$CACHE.tls assert_image_in_cache tiny
log "pass"
