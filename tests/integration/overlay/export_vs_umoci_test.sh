#!/usr/bin/env bash
# The differential test of the merge: for every fixture image, `imagefs export` (our layer
# ingest + lazy merge) must produce exactly the tree `umoci unpack` makes of the same image:
# paths, types, modes, owners, sizes, content hashes, symlink targets, hardlink groups, device
# numbers, xattrs and mtimes. `imagefs export --tar` must hold the same tree again.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo umoci jq python3 tar
[ "$(id -u)" = 0 ] || skip "needs root: owners, device nodes and security.* xattrs"

treecmp=$IMAGEFS_SOURCE_DIR/tests/integration/overlay/treecmp.py
"$FIXTURES" build --out "$FIXTURES_OUT" tiny edge python multiarch >/dev/null 2>&1 ||
  fail "fixtures build failed"
start_registry open
push_fixtures tiny edge python multiarch

# compare NAME [PLATFORM]: export with imagefs, unpack with umoci, compare the trees.
compare() {
  local name=$1 arch=${2:-amd64}
  local work=$TEST_TMPDIR/$name-$arch
  mkdir -p "$work"
  log "$name ($arch)"
  assert_ok imagefs export --cache-dir "$CACHE" --platform "linux/$arch" \
    "$IMAGEFS_REGISTRY/$name" "$work/ours" >/dev/null
  # The reference: the same image from the same registry, zstd layers recompressed as gzip for
  # umoci 0.4 (the diff_ids, and so the trees, are unchanged).
  assert_ok skopeo --override-arch "$arch" copy --src-tls-verify=false --preserve-digests \
    "docker://$IMAGEFS_REGISTRY/$name:latest" "oci:$work/pulled:latest" >/dev/null
  assert_ok "$FIXTURES" gzip-copy "$work/pulled" "$work/gz" >/dev/null
  local start
  start=$(date +%s)
  assert_ok umoci unpack --image "$work/gz:latest" "$work/bundle" >/dev/null
  out=$(python3 "$treecmp" "$work/ours" "$work/bundle/rootfs" --synthesized-after "$start") ||
    fail "$name ($arch): imagefs export differs from umoci unpack: $out"
  log "  $(head -1 <<<"$out")"
  # The tar export holds the same tree (GNU tar restores it, xattrs included).
  assert_ok imagefs export --cache-dir "$CACHE" --platform "linux/$arch" --tar "$work/ours.tar" \
    "$IMAGEFS_REGISTRY/$name" >/dev/null
  mkdir "$work/untarred"
  assert_ok tar -C "$work/untarred" --xattrs --xattrs-include='*' --numeric-owner -xpf "$work/ours.tar"
  out=$(python3 "$treecmp" "$work/untarred" "$work/ours") ||
    fail "$name ($arch): export --tar differs from the directory export: $out"
  rm -rf "$work"
}

compare tiny
compare edge
compare python
compare multiarch amd64
compare multiarch arm64

# export refuses a non-empty directory and says so.
mkdir -p "$TEST_TMPDIR/full" && touch "$TEST_TMPDIR/full/x"
out=$(assert_fails imagefs export --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny" "$TEST_TMPDIR/full")
assert_contains "$out" "not empty"
log "pass"
