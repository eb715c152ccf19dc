#!/usr/bin/env bash
# Random layer stacks (tests/integration/overlay/random_stacks.py): each is pushed to a real
# registry, exported by imagefs, unpacked by umoci from the same layout, and the trees compared.
# IMAGEFS_RANDOM_STACKS (default 30) cases, IMAGEFS_RANDOM_SEED (default: the day) for the seed;
# a failure prints the seed and case so it can be replayed.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo umoci python3
[ "$(id -u)" = 0 ] || skip "needs root: umoci unpack restores owners"

count=${IMAGEFS_RANDOM_STACKS:-30}
seed=${IMAGEFS_RANDOM_SEED:-$(date +%Y%m%d)}
here=$IMAGEFS_SOURCE_DIR/tests/integration/overlay
log "$count stacks, seed $seed"
python3 "$here/random_stacks.py" "$TEST_TMPDIR/layouts" "$count" "$seed" >/dev/null
start_registry open
failures=0
for ((i = 0; i < count; i++)); do
  layout=$TEST_TMPDIR/layouts/stack-$i
  assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$layout:latest" \
    "docker://$IMAGEFS_REGISTRY/stack/$i:latest" >/dev/null
  assert_ok imagefs export --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/stack/$i" "$TEST_TMPDIR/ours-$i" >/dev/null
  start=$(date +%s)
  assert_ok umoci unpack --image "$layout:latest" "$TEST_TMPDIR/bundle-$i" >/dev/null
  if ! out=$(python3 "$here/treecmp.py" "$TEST_TMPDIR/ours-$i" "$TEST_TMPDIR/bundle-$i/rootfs" \
    --synthesized-after "$start"); then
    log "case $i (replay: IMAGEFS_RANDOM_SEED=$seed, stack-$i): $out"
    failures=$((failures + 1))
  fi
  rm -rf "$TEST_TMPDIR/ours-$i" "$TEST_TMPDIR/bundle-$i"
done
[ "$failures" -eq 0 ] || fail "$failures of $count random stacks differ from umoci"
log "pass: $count stacks equal umoci's"
