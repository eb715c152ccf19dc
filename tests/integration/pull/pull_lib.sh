# Helpers shared by the `imagefs pull` tests (sourced after tests/integration/lib.sh).
# shellcheck shell=bash

IMAGEFS_BIN=${IMAGEFS_BIN:-$IMAGEFS_SOURCE_DIR/build/imagefs}
[ -x "$IMAGEFS_BIN" ] || fail "imagefs binary not found at $IMAGEFS_BIN (run scripts/setup)"
FIXTURES=$IMAGEFS_SOURCE_DIR/scripts/fixtures
FIXTURES_OUT=${IMAGEFS_BUILD_DIR:-$IMAGEFS_SOURCE_DIR/build}/fixtures

# imagefs with a cache of this test's own.
CACHE=$TEST_TMPDIR/cache
imagefs() { "$IMAGEFS_BIN" "$@"; }

# push_fixtures IMAGE... [-- EXTRA fixtures push args]: pushes to the current registry.
push_fixtures() {
  local images=() extra=()
  while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
    images+=("$1"); shift
  done
  "$FIXTURES" push --out "$FIXTURES_OUT" --registry "$IMAGEFS_REGISTRY" "${extra[@]}" \
    "${images[@]}" >/dev/null 2>"$TEST_TMPDIR/push.log" || fail "push failed: $(cat "$TEST_TMPDIR/push.log")"
}

# The manifest digest of fixture IMAGE for the default platform (amd64), from the OCI layout.
fixture_manifest_digest() {
  local layout=$FIXTURES_OUT/oci/$1 top
  top=$(jq -r '.manifests[0].digest' "$layout/index.json")
  if [ "$(jq -r '.manifests[0].mediaType' "$layout/index.json")" = application/vnd.oci.image.index.v1+json ]; then
    jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest' \
      "$layout/blobs/sha256/${top#sha256:}"
  else
    echo "$top"
  fi
}

# assert_image_in_cache IMAGE [MANIFEST_DIGEST]: the cache holds the manifest, config and every
# layer of the fixture, each file hashing to its name.
assert_image_in_cache() {
  local layout=$FIXTURES_OUT/oci/$1 manifest=${2:-$(fixture_manifest_digest "$1")} d
  local blobs=("$manifest")
  mapfile -t -O 1 blobs < <(jq -r '.config.digest, .layers[].digest' "$layout/blobs/sha256/${manifest#sha256:}")
  for d in "${blobs[@]}"; do
    local f=$CACHE/blobs/sha256/${d#sha256:}
    [ -f "$f" ] || fail "$1: blob $d missing from the cache"
    assert_eq "$d" "sha256:$(sha256sum "$f" | cut -d' ' -f1)" "$1: cached blob hashes to its name"
  done
}
