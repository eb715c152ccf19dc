#!/usr/bin/env bash
# The store's commands around pull: `imagefs images`, `rm`, `gc --max-size`, `verify`, and the
# errors a user meets: invalid references, unknown images and tags, a registry that is down, a
# manifest whose bytes do not match its digest.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq curl

"$FIXTURES" build --out "$FIXTURES_OUT" tiny edge >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny edge
R=$IMAGEFS_REGISTRY

# --- images lists what was pulled ---------------------------------------------------------------
out=$(assert_ok imagefs images --cache-dir "$CACHE")
assert_not_contains "$out" "$R/" "an empty cache lists no image"
assert_ok imagefs pull --cache-dir "$CACHE" "$R/tiny" "$R/edge" >/dev/null
out=$(assert_ok imagefs images --cache-dir "$CACHE")
assert_contains "$out" "REFERENCE"
tiny_line=$(grep "^$R/tiny:latest " <<<"$out") || fail "tiny missing from: $out"
assert_contains "$tiny_line" "$(fixture_manifest_digest tiny | cut -c1-19)"
assert_contains "$tiny_line" "linux/amd64"
grep -q "^$R/edge:latest " <<<"$out" || fail "edge missing from: $out"
assert_ok imagefs verify --cache-dir "$CACHE" >/dev/null

# --- rm forgets a reference; gc then frees what nothing references -----------------------------
assert_ok imagefs rm --cache-dir "$CACHE" "$R/edge" >/dev/null
out=$(assert_ok imagefs images --cache-dir "$CACHE")
assert_not_contains "$out" "$R/edge:latest"
assert_contains "$out" "$R/tiny:latest"
out=$(assert_fails imagefs rm --cache-dir "$CACHE" "$R/edge")
assert_contains "$out" "$R/edge"
edge_layer=$(jq -r '.layers[-1].digest' "$FIXTURES_OUT/oci/edge/blobs/sha256/$(fixture_manifest_digest edge | cut -d: -f2)")
assert_ok imagefs gc --cache-dir "$CACHE" --max-size 10G >/dev/null
[ ! -e "$CACHE/blobs/sha256/${edge_layer#sha256:}" ] || fail "gc kept a blob no image references"
assert_image_in_cache tiny
# Least recently used first: edge, pulled after tiny, is kept when only one of them fits.
sleep 1.1
assert_ok imagefs pull --cache-dir "$CACHE" "$R/edge" >/dev/null
edge_manifest=$FIXTURES_OUT/oci/edge/blobs/sha256/$(fixture_manifest_digest edge | cut -d: -f2)
edge_size=$(($(stat -c %s "$edge_manifest") + $(jq '[.config.size, .layers[].size] | add' "$edge_manifest")))
# --max-size bounds the whole store, as du counts it: the catalog and directories, which gc never
# removes, come on top of edge's blobs.
blob_bytes=$(find "$CACHE/blobs/sha256" "$CACHE/tmp" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
overhead=$(($(du -sb "$CACHE" | cut -f1) - blob_bytes))
out=$(assert_ok imagefs gc --cache-dir "$CACHE" --max-size "$((edge_size + overhead))")
assert_contains "$out" "$R/tiny"
out=$(assert_ok imagefs images --cache-dir "$CACHE")
assert_not_contains "$out" "$R/tiny:latest"
assert_contains "$out" "$R/edge:latest"
assert_image_in_cache edge
assert_ok imagefs gc --cache-dir "$CACHE" --max-size 1 >/dev/null
[ -z "$(ls -A "$CACHE/blobs/sha256")" ] || fail "gc --max-size 1 left blobs: $(ls "$CACHE/blobs/sha256")"
out=$(assert_fails imagefs gc --cache-dir "$CACHE" --max-size lots)
assert_contains "$out" "invalid size"

# --- errors a user meets ----------------------------------------------------------------------
out=$(assert_fails imagefs pull --cache-dir "$CACHE" "$R/Tiny")
assert_contains "$out" "invalid reference"
assert_contains "$out" "lowercase"
out=$(assert_fails imagefs pull --cache-dir "$CACHE" "$R/no-such-image")
assert_contains "$out" "no-such-image"
assert_contains "$out" "not found"
out=$(assert_fails imagefs pull --cache-dir "$CACHE" "$R/tiny:no-such-tag")
assert_contains "$out" "no-such-tag"
assert_contains "$out" "not found"
out=$(assert_fails imagefs pull --cache-dir "$CACHE" "127.0.0.1:1/tiny")
assert_contains "$out" "127.0.0.1:1"
out=$(assert_fails imagefs pull --cache-dir "$CACHE" --platform "linux/amd64/v1/extra" "$R/tiny")
assert_contains "$out" "platform"

# A manifest whose stored bytes were altered: served with its old digest, and refused.
manifest=$(fixture_manifest_digest tiny)
data=$(find "$IMAGEFS_REGISTRY_DIR" -path "*/blobs/sha256/*/${manifest#sha256:}/data")
jq -c '.annotations = {"tampered": "yes"}' "$data" >"$TEST_TMPDIR/m" && cp "$TEST_TMPDIR/m" "$data"
out=$(assert_fails imagefs pull --cache-dir "$CACHE.2" "$R/tiny")
assert_contains "$out" "$manifest"
out=$(assert_fails imagefs pull --cache-dir "$CACHE.2" "$R/tiny@$manifest")
assert_contains "$out" "$manifest"
[ ! -e "$CACHE.2/blobs/sha256/${manifest#sha256:}" ] || fail "a tampered manifest was stored"
log "pass"
