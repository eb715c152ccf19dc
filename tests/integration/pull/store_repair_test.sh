#!/usr/bin/env bash
# A disk that rots and sizes that add up (issue 16), against a real registry: one byte of a stored
# layer changed; `verify` names the image that uses it and fails; `verify --repair` fetches it
# again, removes what was built from it, and a second verify is clean (and the archive built
# afterwards is the same bytes); `pull` of the image after another corruption repairs it instead
# of saying "already present"; `images` and `gc --max-size 2M` report the store's size as du
# counts it, and gc removes the image with its archive segments and plans.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq curl python3

"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny
R=$IMAGEFS_REGISTRY
manifest=$(fixture_manifest_digest tiny)
layer=$(jq -r '.layers[0].digest' "$FIXTURES_OUT/oci/tiny/blobs/sha256/${manifest#sha256:}")
blob() { echo "$CACHE/blobs/sha256/${1#sha256:}"; }

# Flips the lowest bit of the byte in the middle of blob $1, as a disk might.
corrupt() {
  python3 - "$(blob "$1")" <<'EOF'
import os, sys
path = sys.argv[1]
os.chmod(path, 0o644)
with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 1]))
EOF
}

# "1.5 MiB" -> bytes (what format_size printed).
to_bytes() {
  python3 -c 'import sys; n, u = sys.argv[1], sys.argv[2]
print(int(float(n) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[u]))' "$1" "$2"
}
# assert_size_like_du TEXT: the size after "the store holds " in TEXT is du -sb of the store,
# within the rounding of a 3-digit size (5%) and 16 KiB.
assert_size_like_du() {
  local said du
  said=$(grep -o 'the store holds [0-9.]* [KMGi]*B' <<<"$1" | head -1 | awk '{print $4, $5}') ||
    fail "no store size in: $1"
  # shellcheck disable=SC2086
  said=$(to_bytes $said)
  du=$(du -sb "$CACHE" | cut -f1)
  python3 -c 'import sys; s, d = int(sys.argv[1]), int(sys.argv[2])
sys.exit(0 if abs(s - d) <= d * 0.05 + 16384 else 1)' "$said" "$du" ||
    fail "the store says it holds $said bytes, du -sb says $du: $1"
}

assert_ok imagefs pull --cache-dir "$CACHE" "$R/tiny" >/dev/null
assert_ok imagefs build --cache-dir "$CACHE" "$R/tiny" -o "$TEST_TMPDIR/before.cpio.gz" >/dev/null
[ -d "$CACHE/derived/${layer#sha256:}" ] || fail "build made no layer index for $layer"
[ -n "$(ls -A "$CACHE/segments/plans")" ] || fail "build recorded no plan"

# --- verify names the image a bad blob belongs to, and fails ----------------------------------
corrupt "$layer"
out=$(assert_fails imagefs verify --cache-dir "$CACHE")
assert_contains "$out" "$layer"
assert_contains "$out" "does not match its digest"
assert_contains "$out" "$R/tiny:latest"
assert_contains "$out" "$manifest"
assert_contains "$out" "1 bad"
assert_contains "$out" "verify --repair"

# --- verify --repair fetches it again and removes what was built from it -----------------------
out=$(imagefs verify --cache-dir "$CACHE" --repair 2>&1) || fail "verify --repair failed: $out"
assert_contains "$out" "repaired $layer"
assert_contains "$out" "0 still bad"
assert_eq "$layer" "sha256:$(sha256sum "$(blob "$layer")" | cut -d' ' -f1)" "the repaired layer"
[ ! -e "$CACHE/derived/${layer#sha256:}" ] || fail "the layer index built from the bad copy stayed"
[ -z "$(ls -A "$CACHE/segments/plans")" ] || fail "plans of the image with a bad layer stayed"
out=$(assert_ok imagefs verify --cache-dir "$CACHE")
assert_contains "$out" "0 bad"
assert_ok imagefs build --cache-dir "$CACHE" "$R/tiny" -o "$TEST_TMPDIR/after.cpio.gz" >/dev/null
cmp "$TEST_TMPDIR/before.cpio.gz" "$TEST_TMPDIR/after.cpio.gz" ||
  fail "the archive built after the repair differs from the one before the corruption"

# --- pull of a present image whose layer is bad repairs it --------------------------------------
corrupt "$layer"
out=$(imagefs pull --cache-dir "$CACHE" "$R/tiny" 2>&1) || fail "pull failed: $out"
assert_contains "$out" "repaired layer 1 of"
assert_contains "$out" "$layer"
assert_contains "$out" "$R/tiny:latest $manifest"
assert_contains "$out" "its SHA-256 matches" "the sound layer was checked"
assert_ok imagefs verify --cache-dir "$CACHE" >/dev/null
# ... and a missing one is fetched again.
rm -f "$(blob "$layer")"
assert_ok imagefs pull --cache-dir "$CACHE" "$R/tiny" >/dev/null
assert_image_in_cache tiny
# A bad config (read whole, like manifests) is fetched again too.
config=$(jq -r '.config.digest' "$FIXTURES_OUT/oci/tiny/blobs/sha256/${manifest#sha256:}")
corrupt "$config"
out=$(imagefs pull --cache-dir "$CACHE" "$R/tiny" 2>&1) || fail "pull failed: $out"
assert_contains "$out" "repaired config $config"
assert_ok imagefs verify --cache-dir "$CACHE" >/dev/null

# --- sizes that add up ------------------------------------------------------------------------
assert_ok imagefs build --cache-dir "$CACHE" "$R/tiny" -o "$TEST_TMPDIR/again.cpio.gz" >/dev/null
out=$(assert_ok imagefs images --cache-dir "$CACHE")
assert_size_like_du "$out"
assert_contains "$out" "SHARED"
segments=$(find "$CACHE/segments" -type f | wc -l)
[ "$segments" -gt 2 ] || fail "expected archive segments in the store, found $segments files"
out=$(assert_ok imagefs gc --cache-dir "$CACHE" --max-size 2M)
assert_contains "$out" "removed $R/tiny:latest"
assert_size_like_du "$out"
[ -z "$(find "$CACHE/segments" -type f)" ] ||
  fail "gc removed the image but kept its archive files: $(find "$CACHE/segments" -type f | head)"
[ "$(du -sb "$CACHE" | cut -f1)" -le $((2 << 20)) ] || fail "the store is over 2M after gc: $out"
log "pass"
