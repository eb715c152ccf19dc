#!/usr/bin/env bash
# `imagefs pull` against a registry that never stops sending (a blob answered chunked, with bytes
# without end after the layer): the pull fails cleanly, naming the blob and the registry, with a
# partial no longer than the blob; a later pull from the healthy registry commits what was kept
# without downloading it again. A partial longer than its blob (left by an older imagefs) is
# counted by gc, images and verify and is never resumed. kill -9 of a pull before the first byte,
# during the download and after the last byte: the next pull succeeds.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq curl python3

"$FIXTURES" build --out "$FIXTURES_OUT" tiny python >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny python

python_manifest=$FIXTURES_OUT/oci/python/blobs/sha256/$(fixture_manifest_digest python | cut -d: -f2)
big_layer=$(jq -r '.layers | max_by(.size) | .digest' "$python_manifest")
big_size=$(jq -r '.layers | max_by(.size) | .size' "$python_manifest")
partial=$CACHE/tmp/${big_layer#sha256:}.partial
# Requests for the big layer in the proxy's log (an endless answer logs a second line, "-> endless:").
big_gets() { grep "GET /v2/.*/blobs/$big_layer" "$FAULTPROXY_LOG" | grep -vc -- "-> endless:" || true; }
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }

# --- endless bytes after the layer: a clean failure, a bounded partial -------------------------
log "endless"
start_faultproxy --target "$IMAGEFS_REGISTRY" --path "/blobs/$big_layer" --endless
out=$(assert_fails timeout 120 "$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/python")
assert_contains "$out" "$big_layer"
assert_contains "$out" "registry $FAULTPROXY sent more than the $big_size bytes its manifest declares"
got=$(size_of "$partial")
((got <= big_size)) || fail "the partial holds $got bytes of a $big_size-byte layer"
assert_eq 1 "$(big_gets)" "requests for the layer (an overflow is not retried)"
for ((i = 0; i < 50; i++)); do
  grep -q "endless: the client left" "$FAULTPROXY_LOG" && break
  sleep 0.1
done
assert_contains "$(cat "$FAULTPROXY_LOG")" "endless: the client left after"
extra=$(sed -n 's/.*endless: the client left after \([0-9]*\) extra bytes.*/\1/p' "$FAULTPROXY_LOG" | head -1)
((extra < 64 << 20)) || fail "the client took $extra bytes past the layer before leaving"
out=$(assert_ok imagefs verify --cache-dir "$CACHE")
assert_contains "$out" "partial downloads"

# The registry heals: the kept partial is the whole layer, verified and committed without a
# download (no Range past its end, no 416).
start_faultproxy --target "$IMAGEFS_REGISTRY"
assert_ok imagefs pull --cache-dir "$CACHE" "$FAULTPROXY/python" >/dev/null
assert_image_in_cache python
assert_eq 0 "$(big_gets)" "requests for the layer the partial held"
[ ! -e "$partial" ] || fail "the partial is still there after the pull"
rm -rf "$CACHE"

# --- a partial longer than its blob: counted, reported, never resumed --------------------------
log "long partial"
assert_ok imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny" >/dev/null
data=$(find "$IMAGEFS_REGISTRY_DIR" -path "*/blobs/sha256/*/${big_layer#sha256:}/data")
[ -f "$data" ] || fail "layer $big_layer not found in the registry's storage"
make_long_partial() {
  { cat "$data"; head -c $((3 << 20)) /dev/zero; } >"$partial"
}
make_long_partial
long=$(size_of "$partial")
err=$(imagefs images --cache-dir "$CACHE" 2>&1 >/dev/null)
assert_contains "$err" "1 partial downloads"
# gc counts it in the store's size, and over the limit removes it first.
out=$(assert_ok imagefs gc --cache-dir "$CACHE" --max-size 1G)
assert_contains "$out" "0 partial downloads"
[ -e "$partial" ] || fail "gc under its limit removed a young partial"
out=$(imagefs gc --cache-dir "$CACHE" --max-size 1 2>&1 || true)
assert_contains "$out" "1 partial downloads"
[ ! -e "$partial" ] || fail "gc over its limit kept the partial"
# verify removes a partial longer than the layer an image record declares.
start_faultproxy --target "$IMAGEFS_REGISTRY" --path "/blobs/$big_layer" --status 404
assert_fails timeout 120 "$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/python" >/dev/null
make_long_partial
out=$(imagefs verify --cache-dir "$CACHE" 2>&1)
assert_contains "$out" "removed the partial download of $big_layer"
assert_contains "$out" "longer than the $big_size bytes of its blob"
[ ! -e "$partial" ] || fail "verify kept a partial longer than its blob"
# A pull never resumes from one.
make_long_partial
start_faultproxy --target "$IMAGEFS_REGISTRY"
assert_ok imagefs pull --cache-dir "$CACHE" "$FAULTPROXY/python" >/dev/null
assert_image_in_cache python
assert_eq 1 "$(big_gets)" "downloads of the layer"
if grep -q "blobs/$big_layer \[range" "$FAULTPROXY_LOG"; then
  fail "resumed from a partial of $long bytes: $(grep "$big_layer" "$FAULTPROXY_LOG")"
fi
rm -rf "$CACHE"

# --- kill -9 at several points of a pull; the next pull succeeds -------------------------------
# kill_pull NAME SECONDS PROXY-ARGS...: starts a pull through a proxy with those faults, kills it
# after SECONDS, checks the store, then pulls from the healthy registry.
kill_pull() {
  local name=$1 after=$2
  shift 2
  log "kill -9 $name"
  start_faultproxy --target "$IMAGEFS_REGISTRY" --path "/blobs/$big_layer" "$@"
  "$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/python" >"$TEST_TMPDIR/killed.out" 2>&1 &
  local pid=$!
  sleep "$after"
  kill -9 "$pid" || fail "$name: the pull ended before the kill: $(cat "$TEST_TMPDIR/killed.out")"
  wait "$pid" 2>/dev/null || true
  [ ! -e "$CACHE/blobs/sha256/${big_layer#sha256:}" ] || fail "$name: the layer is complete"
  local held
  held=$(size_of "$partial")
  ((held <= big_size)) || fail "$name: the partial holds $held bytes of $big_size"
  assert_ok imagefs verify --cache-dir "$CACHE" >/dev/null
  assert_ok imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/python" >/dev/null
  assert_image_in_cache python
  [ ! -e "$partial" ] || fail "$name: a partial is left after the pull"
  rm -rf "$CACHE"
}
# Before the first byte of the layer.
kill_pull "before the layer" 2 --delay-ms 10000
# During the layer's download (1 MB/s).
kill_pull "during the download" 2 --rate 1000000
# After its last byte, while the registry holds the connection open before more bytes.
kill_pull "after the last byte" 4 --endless --endless-after-ms 30000
log "pass"
