#!/usr/bin/env bash
# `imagefs export` cannot be redirected (issue 12), and its tars read cleanly (issue 16):
# - while an image with many directories is exported, a second process keeps swapping DIR's
#   directories for symlinks to a host directory; afterwards that host directory (a sentinel with
#   known files, modes, owners and times) is unchanged, whatever became of the export;
# - a symlink planted at DIR, DIR/etc or the --tar temporary path redirects nothing;
# - another user who may write to DIR's parent cannot plant or race anything into the export,
#   and cannot look inside DIR, which is 0700 until the export is complete (checked from a
#   export slowed under strace) and gets the image root's mode at the end;
# - `tar -tvf` (GNU tar) of an exported image prints no warning; a name that is not UTF-8 is
#   the only thing marked hdrcharset=BINARY, and it comes back byte for byte from GNU tar and
#   bsdtar.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo python3 tar runuser strace
[ "$(id -u)" = 0 ] || skip "needs root: a second user (nobody) and host files of other owners"

here=$IMAGEFS_SOURCE_DIR/tests/integration/overlay
"$FIXTURES" build --out "$FIXTURES_OUT" tiny edge >/dev/null 2>&1 || fail "fixtures build failed"
python3 - "$TEST_TMPDIR/layouts" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["IMAGEFS_SOURCE_DIR"], "scripts"))
from fixtures_lib import layer, oci
out = sys.argv[1]
platform = {"os": "linux", "architecture": "amd64"}
# many: 300 directories, each a copy of what a redirected export would leave in a host
# directory (a file named like the sentinel's, new files, a symlink, a subdirectory), with
# modes and owners of its own.
entries = [layer.dir_("./", 0o755)]
for i in range(300):
    d = f"d{i}"
    entries += [layer.dir_(d, 0o777, uid=4242, gid=4242),
                layer.file(f"{d}/victim", b"from the image\n", 0o666, uid=4242, gid=4242),
                layer.file(f"{d}/new", b"new\n", 0o4755),
                layer.symlink(f"{d}/link", "victim"),
                layer.dir_(f"{d}/sub", 0o777, uid=4242),
                layer.file(f"{d}/sub/file", b"x", 0o666)]
lay = oci.Layout(os.path.join(out, "many"))
lay.finish(lay.add_image([(entries, "gzip", "many")], {"Cmd": ["/bin/sh"]}, platform))
# names: a name and a symlink target that are not UTF-8, and UTF-8 beyond ASCII.
bad = "bad-\udcff\udcfe.txt"  # surrogateescape: the bytes ff fe
entries = [layer.dir_("./", 0o755), layer.dir_("etc"), layer.file("etc/hostname", b"names\n"),
           layer.file(bad, b"not utf-8\n"), layer.symlink("to-bad", bad),
           layer.file("h\u00e9llo w\u00f6rld.txt", b"utf-8\n"), layer.symlink("to-utf8", "h\u00e9llo w\u00f6rld.txt")]
lay = oci.Layout(os.path.join(out, "names"))
lay.finish(lay.add_image([(entries, "gzip", "names")], {"Cmd": ["/bin/sh"]}, platform))
PY
start_registry open
push_fixtures tiny edge
for name in many names; do
  assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$TEST_TMPDIR/layouts/$name:latest" \
    "docker://$IMAGEFS_REGISTRY/safety/$name:latest" >/dev/null
done
many=$IMAGEFS_REGISTRY/safety/many
assert_ok imagefs pull --cache-dir "$CACHE" "$many" "$IMAGEFS_REGISTRY/safety/names" >/dev/null
export_many() { imagefs export --cache-dir "$CACHE" "$many" "$@"; }

# Another user must reach the directories below.
chmod 0755 "$TEST_TMPDIR"
as_nobody() { runuser -u nobody -- "$@"; }

# The sentinel: a host directory of other owners, which nothing may change.
sentinel=$TEST_TMPDIR/sentinel
mkdir -m 0751 "$sentinel" "$sentinel/sub"
echo "host file" >"$sentinel/victim"
chmod 0640 "$sentinel/victim"
chmod 0705 "$sentinel/sub"
chown -R nobody:nogroup "$sentinel"
touch -d @1600000000 "$sentinel/victim" "$sentinel/sub"
describe() {
  (cd "$sentinel" && find . -printf '%p %m %U:%G %T@ %s\n' | sort && cat victim)
}
before=$(describe)
sentinel_untouched() {
  local now
  now=$(describe)
  [ "$now" = "$before" ] || fail "$1: the host directory changed: $(diff <(echo "$before") <(echo "$now"))"
}

log "a racing swap of DIR's directories for symlinks to a host directory"
# The racer renames directories of DIR away (dN, dN/sub) and puts a symlink to the sentinel in
# their place, as fast as it can, until told to stop; it prints how many swaps it made.
cat >"$TEST_TMPDIR/racer.py" <<'PY'
import os, random, sys
out, sentinel, stop = sys.argv[1:4]
rng, swaps, k = random.Random(1), 0, 0
while not os.path.exists(stop):
    i = rng.randrange(300)
    for d in (f"{out}/d{i}", f"{out}/d{i}/sub"):
        k += 1
        try:
            if os.path.islink(f"{out}/d{i}"):
                break  # its own symlink: never go through it
            os.rename(d, f"{d}.moved{k}")
            os.symlink(sentinel, d)
            swaps += 1
        except OSError:
            pass
print(swaps)
PY
races=0 failed=0 round=0
while [ "$round" -lt 6 ] && { [ "$races" -lt 3 ] || [ "$failed" -lt 1 ]; }; do
  round=$((round + 1))
  out=$TEST_TMPDIR/race$round
  stop=$TEST_TMPDIR/stop$round
  mkdir -m 0700 "$out"
  python3 "$TEST_TMPDIR/racer.py" "$out" "$sentinel" "$stop" >"$TEST_TMPDIR/swaps$round" &
  racer=$!
  rc=0
  export_many "$out" >/dev/null 2>"$TEST_TMPDIR/export$round.err" || rc=$?
  touch "$stop"
  wait "$racer"
  swaps=$(cat "$TEST_TMPDIR/swaps$round")
  sentinel_untouched "round $round ($swaps swaps, export exit $rc)"
  # Nothing the image holds appeared anywhere but under DIR.
  [ -z "$(find "$TEST_TMPDIR" -path "$TEST_TMPDIR/race*" -prune -o -path "$CACHE" -prune -o \
    -name new -print)" ] || fail "round $round: an image file was written outside DIR"
  if [ "$rc" != 0 ]; then
    failed=$((failed + 1))
    err=$(cat "$TEST_TMPDIR/export$round.err")
    # A symlink where a directory was ("it is a symbolic link now"), or nothing at all when the
    # racer was between its rename and its symlink: either way a path of DIR is named.
    assert_contains "$err" "$out/d" "round $round: the error names where it stopped"
    assert_eq 700 "$(stat -c %a "$out")" "round $round: a failed export's DIR mode"
  fi
  [ "$swaps" -gt 0 ] && races=$((races + 1))
  log "  round $round: $swaps swaps, export exit $rc"
  rm -rf "$out"
done
[ "$races" -ge 3 ] || fail "the racer swapped nothing in $races of $round rounds: the test proved nothing"

log "a symlink planted at DIR/etc, at DIR, and at the --tar temporary file"
mkdir "$TEST_TMPDIR/planted"
ln -s "$sentinel" "$TEST_TMPDIR/planted/etc"
out=$(assert_fails export_many "$TEST_TMPDIR/planted")
assert_contains "$out" "not empty"
ln -s "$sentinel" "$TEST_TMPDIR/linkdir"
out=$(assert_fails export_many "$TEST_TMPDIR/linkdir")
assert_contains "$out" "symbolic link"
ln -s "$sentinel/victim" "$TEST_TMPDIR/out.tar.tmp"
(umask 022 && assert_ok export_many --tar "$TEST_TMPDIR/out.tar" >/dev/null)
assert_eq 644 "$(stat -c %a "$TEST_TMPDIR/out.tar")" "the tar's mode"
[ -L "$TEST_TMPDIR/out.tar.tmp" ] || fail "the planted symlink was replaced or removed"
[ -z "$(find "$TEST_TMPDIR" -maxdepth 1 -name 'out.tar.tmp.*')" ] || fail "a temporary file was left"
sentinel_untouched "planted symlinks"

log "another user who may write to DIR's parent"
shared=$TEST_TMPDIR/shared
mkdir -m 1777 "$shared"
as_nobody ln -s "$sentinel" "$shared/out"
out=$(assert_fails export_many "$shared/out")
assert_contains "$out" "symbolic link"
as_nobody mkdir -m 0777 "$shared/theirs"
out=$(assert_fails export_many "$shared/theirs")
assert_contains "$out" "belongs to uid"
sentinel_untouched "planted by another user"
# Racing the creation of DIR itself, from a parent without the sticky bit.
open_parent=$TEST_TMPDIR/open
mkdir -m 0777 "$open_parent"
as_nobody sh -c 'i=0; while [ ! -e "$2" ] && [ $i -lt 100000 ]; do
  i=$((i + 1)); mv "$1/out" "$1/old$i" 2>/dev/null; ln -s "$3" "$1/out" 2>/dev/null
done' racer "$open_parent" "$TEST_TMPDIR/stop-open" "$sentinel" &
racer=$!
for i in 1 2 3; do
  export_many "$open_parent/out" >/dev/null 2>&1 || true
done
touch "$TEST_TMPDIR/stop-open"
wait "$racer" || true
sentinel_untouched "a race for DIR by another user"

log "DIR is 0700 while the export runs, and the image root's mode after"
out=$TEST_TMPDIR/slow
# The 200th mkdirat waits 3 s (#1 is DIR itself, then dN and dN/sub in turn: d99 waits).
strace -f -o /dev/null -e trace=mkdirat -e inject=mkdirat:delay_enter=3000000:when=200 \
  "$IMAGEFS_BIN" export --cache-dir "$CACHE" "$many" "$out" >/dev/null 2>&1 &
exporter=$!
for _ in $(seq 200); do [ -d "$out/d50" ] && break; sleep 0.05; done
[ -d "$out/d50" ] || fail "the export did not start"
kill -0 "$exporter" 2>/dev/null || fail "the export ended before it could be looked at"
assert_eq 700 "$(stat -c %a "$out")" "DIR's mode during the export"
as_nobody ls "$out" >/dev/null 2>&1 && fail "another user lists DIR during the export"
wait "$exporter" || fail "the slowed export failed"
assert_eq 755 "$(stat -c %a "$out")" "DIR's mode after the export (the image root's)"
assert_eq 777 "$(stat -c %a "$out/d299")" "a directory's mode after the export"
assert_eq 4755 "$(stat -c %a "$out/d0/new")" "a setuid file's mode after the export"
assert_eq 4242 "$(stat -c %u "$out/d0/victim")" "an owner after the export"

log "tar -tvf of exported images prints no warning"
for name in tiny edge; do
  assert_ok imagefs export --cache-dir "$CACHE" --tar "$TEST_TMPDIR/$name.tar" \
    "$IMAGEFS_REGISTRY/$name" >/dev/null
  tar -tvf "$TEST_TMPDIR/$name.tar" >/dev/null 2>"$TEST_TMPDIR/$name.tar.err" ||
    fail "$name: GNU tar cannot list the export: $(cat "$TEST_TMPDIR/$name.tar.err")"
  [ ! -s "$TEST_TMPDIR/$name.tar.err" ] || fail "$name: GNU tar warns: $(head -3 "$TEST_TMPDIR/$name.tar.err")"
done

log "a name that is not UTF-8: marked alone, back byte for byte"
names=$IMAGEFS_REGISTRY/safety/names
assert_ok imagefs export --cache-dir "$CACHE" "$names" "$TEST_TMPDIR/names-dir" >/dev/null
assert_ok imagefs export --cache-dir "$CACHE" --tar "$TEST_TMPDIR/names.tar" "$names" >/dev/null
assert_eq 2 "$(grep -ac 'hdrcharset=BINARY' "$TEST_TMPDIR/names.tar")" \
  "hdrcharset=BINARY records (the name and the symlink target that are not UTF-8)"
tar -tvf "$TEST_TMPDIR/names.tar" >/dev/null 2>"$TEST_TMPDIR/names.err"
assert_eq 2 "$(grep -c . "$TEST_TMPDIR/names.err")" "GNU tar's warnings: $(cat "$TEST_TMPDIR/names.err")"
assert_eq 2 "$(grep -c hdrcharset "$TEST_TMPDIR/names.err")" "GNU tar warns only of hdrcharset"
bad=$(printf 'bad-\377\376.txt')
tars=(tar)
command -v bsdtar >/dev/null && tars+=(bsdtar)
for t in "${tars[@]}"; do
  mkdir "$TEST_TMPDIR/untar-$t"
  "$t" -C "$TEST_TMPDIR/untar-$t" --numeric-owner -xpf "$TEST_TMPDIR/names.tar" 2>/dev/null ||
    fail "$t cannot extract the export"
  assert_eq "not utf-8" "$(cat "$TEST_TMPDIR/untar-$t/$bad")" "$t: the file named with bytes ff fe"
  assert_eq "$bad" "$(readlink "$TEST_TMPDIR/untar-$t/to-bad")" "$t: the symlink's target"
  out=$(python3 "$here/treecmp.py" "$TEST_TMPDIR/untar-$t" "$TEST_TMPDIR/names-dir" --no-xattrs) ||
    fail "$t: the extracted tar differs from the directory export: $out"
done
log "pass"
