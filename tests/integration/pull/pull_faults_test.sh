#!/usr/bin/env bash
# `imagefs pull` when things go wrong: connections dropped mid-blob (resumed with Range), 5xx and
# 429 answers (retried, Retry-After honoured), a blob whose bytes do not match its digest (refused,
# nothing kept), kill -9 mid-pull (the store still verifies; the next pull finishes the job), and
# two processes pulling one image at once (each blob downloaded once between them).
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq curl python3

"$FIXTURES" build --out "$FIXTURES_OUT" tiny python >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny python

# Count of full (non-Range) and Range GETs of blobs in a proxy log.
blob_gets() { grep -cE "GET /v2/.*/blobs/sha256:" "$FAULTPROXY_LOG" || true; }

# --- a connection dropped mid-blob is resumed with a Range request ----------------------------
log "resume"
python_manifest=$FIXTURES_OUT/oci/python/blobs/sha256/$(fixture_manifest_digest python | cut -d: -f2)
big_layer=$(jq -r '.layers | max_by(.size) | .digest' "$python_manifest")
start_faultproxy --target "$IMAGEFS_REGISTRY" --path "/blobs/$big_layer" --drop-after 3000000 --drop-count 1
assert_ok imagefs pull --cache-dir "$CACHE" "$FAULTPROXY/python" >/dev/null
assert_image_in_cache python
assert_contains "$(cat "$FAULTPROXY_LOG")" "dropped after 3000000"
assert_contains "$(cat "$FAULTPROXY_LOG")" "[range bytes=3000000-]" "the client resumed where the drop left it"
rm -rf "$CACHE"

# --- 503 and 429 are retried; Retry-After is honoured -----------------------------------------
log "retry 503"
start_faultproxy --target "$IMAGEFS_REGISTRY" --status 503 --status-count 3
assert_ok imagefs pull --cache-dir "$CACHE" "$FAULTPROXY/tiny" >/dev/null
assert_image_in_cache tiny
rm -rf "$CACHE"
log "retry 429"
start_faultproxy --target "$IMAGEFS_REGISTRY" --path '/manifests/' --status 429 --status-count 1 --retry-after 2
t0=$(date +%s.%N)
assert_ok imagefs pull --cache-dir "$CACHE" "$FAULTPROXY/tiny" >/dev/null
elapsed=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")
python3 -c "import sys; sys.exit(float(sys.argv[1]) < 1.9)" "$elapsed" ||
  fail "the retry came after ${elapsed}s, before Retry-After's 2 s"
rm -rf "$CACHE"
# A registry that keeps failing gives up with an error naming the status, in bounded time.
start_faultproxy --target "$IMAGEFS_REGISTRY" --status 503
out=$(timeout 120 "$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/tiny" 2>&1) &&
  fail "pull succeeded against a registry answering 503"
assert_contains "$out" "503"

# --- a blob whose bytes do not match its digest: refused, nothing kept ------------------------
log "corrupt blob"
layer=$(jq -r '.layers[0].digest' "$FIXTURES_OUT/oci/tiny/blobs/sha256/$(fixture_manifest_digest tiny | cut -d: -f2)")
data=$(find "$IMAGEFS_REGISTRY_DIR" -path "*/blobs/sha256/*/${layer#sha256:}/data")
[ -f "$data" ] || fail "layer $layer not found in the registry's storage"
cp "$data" "$TEST_TMPDIR/good-layer"
printf 'X' | dd of="$data" bs=1 seek=1000 conv=notrunc status=none
out=$(assert_fails imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny")
assert_contains "$out" "$layer"
[ ! -e "$CACHE/blobs/sha256/${layer#sha256:}" ] || fail "a blob that does not match its digest was kept"
[ -z "$(find "$CACHE" -name "*${layer#sha256:}*" -size +0 2>/dev/null | grep -v /locks/)" ] ||
  fail "bytes of the corrupt blob were kept: $(find "$CACHE" -name "*${layer#sha256:}*")"
assert_ok imagefs verify --cache-dir "$CACHE" >/dev/null
cp "$TEST_TMPDIR/good-layer" "$data"
assert_ok imagefs pull --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny" >/dev/null
assert_image_in_cache tiny
rm -rf "$CACHE"

# --- kill -9 mid-pull: the store still verifies, the next pull finishes (resuming) ------------
log "kill -9"
# A slow link (1 MB/s) for the big layer: the kill lands while part of it is on disk.
start_faultproxy --target "$IMAGEFS_REGISTRY" --path "/blobs/$big_layer" --rate 1000000
"$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/python" >/dev/null 2>&1 &
pid=$!
sleep 3
kill -9 "$pid" || fail "the pull ended before the kill; it should take over 10 s at 1 MB/s"
wait "$pid" 2>/dev/null || true
out=$(assert_ok imagefs verify --cache-dir "$CACHE")
[ ! -e "$CACHE/blobs/sha256/${big_layer#sha256:}" ] || fail "the interrupted layer is complete"
start_faultproxy --target "$IMAGEFS_REGISTRY"
assert_ok imagefs pull --cache-dir "$CACHE" "$FAULTPROXY/python" >/dev/null
assert_contains "$(cat "$FAULTPROXY_LOG")" "[range bytes=" "the next pull resumed the partial layer"
assert_image_in_cache python
assert_ok imagefs verify --cache-dir "$CACHE" >/dev/null
rm -rf "$CACHE"

# --- two processes pulling the same image: each blob downloaded once between them -------------
log "concurrent"
start_faultproxy --target "$IMAGEFS_REGISTRY" --path '/blobs/sha256:' --delay-ms 300
"$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/python" >"$TEST_TMPDIR/a.out" 2>&1 &
a=$!
"$IMAGEFS_BIN" pull --cache-dir "$CACHE" "$FAULTPROXY/python" >"$TEST_TMPDIR/b.out" 2>&1 &
b=$!
wait "$a" || fail "first concurrent pull failed: $(cat "$TEST_TMPDIR/a.out")"
wait "$b" || fail "second concurrent pull failed: $(cat "$TEST_TMPDIR/b.out")"
assert_image_in_cache python
blobs=$(jq -r '.config.digest, .layers[].digest' "$python_manifest" | wc -l)
assert_eq "$blobs" "$(blob_gets)" "blob downloads for two concurrent pulls of $blobs blobs"
log "pass"
