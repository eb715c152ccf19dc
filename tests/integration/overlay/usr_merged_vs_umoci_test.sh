#!/usr/bin/env bash
# Layers that write through symlinked directories (issue 12): usr-merged stacks
# (usr_merged_stacks.py) pushed to a real registry, exported by imagefs (directory and --tar), and
# compared with `umoci unpack` of the same layout; then an entry under a symlink to a file, which
# umoci refuses, must be refused by imagefs too, naming the entry.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo umoci python3 tar
[ "$(id -u)" = 0 ] || skip "needs root: umoci unpack restores owners"

here=$IMAGEFS_SOURCE_DIR/tests/integration/overlay
python3 "$here/usr_merged_stacks.py" "$TEST_TMPDIR/layouts" >/dev/null
start_registry open
for name in issue targets samelayer markers nowhere explicit; do
  layout=$TEST_TMPDIR/layouts/$name
  log "$name"
  assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$layout:latest" \
    "docker://$IMAGEFS_REGISTRY/usrmerged/$name:latest" >/dev/null
  assert_ok imagefs export --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/usrmerged/$name" \
    "$TEST_TMPDIR/ours-$name" >/dev/null
  start=$(date +%s)
  assert_ok umoci unpack --image "$layout:latest" "$TEST_TMPDIR/bundle-$name" >/dev/null
  out=$(python3 "$here/treecmp.py" "$TEST_TMPDIR/ours-$name" "$TEST_TMPDIR/bundle-$name/rootfs" \
    --synthesized-after "$start") || fail "$name: imagefs export differs from umoci unpack: $out"
  log "  $(head -1 <<<"$out")"
  # The same tree through the tar export.
  assert_ok imagefs export --cache-dir "$CACHE" --tar "$TEST_TMPDIR/ours-$name.tar" \
    "$IMAGEFS_REGISTRY/usrmerged/$name" >/dev/null
  mkdir "$TEST_TMPDIR/untarred-$name"
  assert_ok tar -C "$TEST_TMPDIR/untarred-$name" --xattrs --xattrs-include='*' --numeric-owner \
    -xpf "$TEST_TMPDIR/ours-$name.tar"
  out=$(python3 "$here/treecmp.py" "$TEST_TMPDIR/untarred-$name" "$TEST_TMPDIR/ours-$name") ||
    fail "$name: export --tar differs from the directory export: $out"
done

# What the issue saw: /lib keeps libc, the new files are where the symlinks lead.
ours=$TEST_TMPDIR/ours-issue
[ -L "$ours/lib" ] && [ "$(readlink "$ours/lib")" = usr/lib ] || fail "lib is no longer the symlink"
[ -f "$ours/usr/lib/libc.so.6" ] && [ -f "$ours/usr/lib/x86_64/libnew.so" ] &&
  [ -f "$ours/usr/lib/file" ] && [ -f "$ours/usr/bin/added" ] && [ ! -e "$ours/usr/bin/old" ] ||
  fail "the upper layer's entries are not where the symlinks lead: $(cd "$ours" && find . | sort)"
[ -f "$TEST_TMPDIR/ours-targets/usr/lib/modules/6.1.0/modules.dep" ] ||
  fail "lib/modules did not land in usr/lib/modules"

# An entry under a symlink to a file: umoci fails (mkdir: not a directory), and so does imagefs.
python3 - "$TEST_TMPDIR/layouts/tofile" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["IMAGEFS_SOURCE_DIR"], "scripts"))
from fixtures_lib import layer, oci
lay = oci.Layout(sys.argv[1])
top = lay.add_image([([layer.dir_("usr"), layer.file("usr/file", b"f"), layer.symlink("lib", "usr/file")],
                      "gzip", "base"), ([layer.file("lib/x", b"x")], "gzip", "upper")],
                    {"Cmd": ["/bin/sh"]}, {"os": "linux", "architecture": "amd64"})
lay.finish(top)
PY
out=$(assert_fails umoci unpack --image "$TEST_TMPDIR/layouts/tofile:latest" "$TEST_TMPDIR/bundle-tofile")
assert_contains "$out" "not a directory"
assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$TEST_TMPDIR/layouts/tofile:latest" \
  "docker://$IMAGEFS_REGISTRY/usrmerged/tofile:latest" >/dev/null
out=$(assert_fails imagefs export --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/usrmerged/tofile" \
  "$TEST_TMPDIR/ours-tofile")
assert_contains "$out" "entries under lib: it leads to usr/file, which is not a directory"
log "pass"
