#!/usr/bin/env bash
# rootfs.erofs (issue 13), checked by the kernel: for tiny, edge, a big-directory image
# (bigdir_image.py: 3000 entries of 1-255-byte names, empty files and directories, sizes around a
# block, owners past 65535) and random layer stacks (tests/integration/overlay/random_stacks.py),
#   - `mount -t erofs -o ro,loop MNT/REF/rootfs.erofs DIR` equals `umoci unpack` of the same
#     image (treecmp.py: types, modes, owners, sizes, contents, symlinks, hardlink groups,
#     devices, xattrs, mtimes), plus /.imagefs/init, /.imagefs/init.conf and an injected file;
#   - fsck.erofs passes and dump.erofs -s shows the superblock we meant (4 KiB blocks, block
#     count = size / 4096, root nid 0);
#   - `ls -l` gives the size that reads return; `imagefs build --format erofs` writes the same
#     bytes; reads at random offsets through the mount equal the built file;
#   - `imagefs rm` takes an image's cached layouts with it (and no other image's);
#   - with --init the file is /.imagefs/init (no init.conf); --exec goes into init.conf;
#   - --level with --format erofs is a usage error (exit 2).
# IMAGEFS_EROFS_STACKS (default 4) random stacks, IMAGEFS_RANDOM_SEED (default: the day);
# IMAGEFS_EROFS_PYTHON=1 adds the python fixture (about 40 s more; passes, but the suite's budget
# is tight and mount_test already compares python's rootfs/ with umoci).
# Every loop and FUSE mount is unmounted at exit, failure or not.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo umoci jq python3 fsck.erofs dump.erofs getfattr cmp
[ "$(id -u)" = 0 ] || skip "needs root: loop mounts, owners, device nodes and security.* xattrs"
require_mount
grep -qw erofs /proc/filesystems || modprobe erofs 2>/dev/null || true
grep -qw erofs /proc/filesystems || skip "this kernel has no EROFS"

T=$TEST_TMPDIR
here=$IMAGEFS_SOURCE_DIR/tests/integration
count=${IMAGEFS_EROFS_STACKS:-4}
fixtures=(tiny edge)
[ "${IMAGEFS_EROFS_PYTHON:-0}" = 1 ] && fixtures+=(python)
seed=${IMAGEFS_RANDOM_SEED:-$(date +%Y%m%d)}

# Loop mounts made here, unmounted at exit (before the FUSE mount under them goes).
_loops=()
_umount_loops() {
  local d
  for d in "${_loops[@]}"; do
    if awk -v m="$d" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
      umount "$d" 2>/dev/null || umount -l "$d" 2>/dev/null || true
    fi
  done
}

"$FIXTURES" build --out "$FIXTURES_OUT" "${fixtures[@]}" >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures "${fixtures[@]}"
python3 "$here/erofs/bigdir_image.py" "$T/bigdir" || fail "bigdir_image.py failed"
assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$T/bigdir:latest" \
  "docker://$IMAGEFS_REGISTRY/bigdir:latest" >/dev/null
python3 "$here/overlay/random_stacks.py" "$T/layouts" "$count" "$seed" >/dev/null
for ((i = 0; i < count; i++)); do
  assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$T/layouts/stack-$i:latest" \
    "docker://$IMAGEFS_REGISTRY/stack/$i:latest" >/dev/null
done

agent=$T/agent
printf '#!/bin/sh\necho agent\n' >"$agent"
MNT=$T/mnt
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$T/mount.log" --inject "$agent:/.imagefs/agent"
on_exit _umount_loops

# check NAME ROOTFS START: the erofs of $IMAGEFS_REGISTRY/NAME against umoci's unpack ROOTFS,
# made at START (unix seconds).
check() {
  local name=$1 rootfs=$2 start=$3 img file dir size out inodes
  img=$MNT/$IMAGEFS_REGISTRY/$name:latest
  file=$img/rootfs.erofs
  dir=$T/erofs-${name//\//-}
  log "$name"
  size=$(fs stat -c %s "$file") || fail "$name: stat of rootfs.erofs failed: $(tail -3 "$T/mount.log")"
  [ $((size % 4096)) = 0 ] || fail "$name: size $size is not a multiple of 4096"
  # The kernel reads it.
  mkdir -p "$dir"
  _loops+=("$dir")
  fs mount -t erofs -o ro,loop "$file" "$dir" || fail "$name: the kernel refuses to mount rootfs.erofs"
  out=$(python3 "$TREECMP" "$dir" "$rootfs" --synthesized-after "$start" \
    --allow-extra .imagefs) || fail "$name: rootfs.erofs differs from umoci unpack: $out"
  log "  $(head -1 <<<"$out")"
  [ -x "$dir/.imagefs/init" ] || fail "$name: no executable /.imagefs/init"
  if [ "$name" = tiny ]; then
    # The default init's config is made by the same code as the archives' (once is enough: an
    # initramfs of a big image costs its segments).
    fs python3 - "$img/initramfs.cpio" >"$T/init.conf" <<'EOF'
import sys
# /.imagefs/init.conf out of the initramfs (newc): the default init's config, as cpio/ makes it.
data = open(sys.argv[1], "rb").read()
pos = 0
while pos < len(data):
    h = data[pos:pos + 110]
    namesize, filesize = int(h[94:102], 16), int(h[54:62], 16)
    name = data[pos + 110:pos + 110 + namesize - 1].decode("latin-1")
    at = (pos + 110 + namesize + 3) & ~3
    if name in (".imagefs/init.conf", "/.imagefs/init.conf"):
        sys.stdout.buffer.write(data[at:at + filesize])
        break
    pos = (at + filesize + 3) & ~3
EOF
    [ -s "$T/init.conf" ] || fail "$name: no /.imagefs/init.conf in initramfs.cpio"
    cmp -s "$dir/.imagefs/init.conf" "$T/init.conf" ||
      fail "$name: /.imagefs/init.conf differs from the initramfs' one"
  fi
  [ -s "$dir/.imagefs/init.conf" ] || fail "$name: no /.imagefs/init.conf"
  cmp -s "$dir/.imagefs/agent" "$agent" || fail "$name: the injected file is not in rootfs.erofs"
  [ "$(stat -c %a "$dir/.imagefs/agent")" = 755 ] || fail "$name: the injected file is not 0755"
  inodes=$(find "$dir" -printf '%i\n' | sort -u | wc -l)
  umount "$dir" || fail "$name: umount failed"
  # fsck.erofs, and dump.erofs' view of the superblock.
  out=$(fs fsck.erofs "$file" 2>&1) || fail "$name: fsck.erofs fails: $out"
  out=$(fs dump.erofs -s "$file" 2>&1) || fail "$name: dump.erofs -s fails: $out"
  assert_contains "$out" "0xE0F5E1E2" "$name: magic"
  [ "$(awk -F: '/Filesystem blocks/ { gsub(/ /, "", $2); print $2 }' <<<"$out")" = $((size / 4096)) ] ||
    fail "$name: dump.erofs' block count is not size/4096: $out"
  [ "$(awk -F: '/root nid/ { gsub(/ /, "", $2); print $2 }' <<<"$out")" = 0 ] ||
    fail "$name: root nid is not 0: $out"
  [ "$(awk -F: '/inode count/ { gsub(/ /, "", $2); print $2 }' <<<"$out")" = "$inodes" ] ||
    fail "$name: dump.erofs' inode count is not the $inodes inodes the kernel shows: $out"
  [ "$(awk -F: '/metadata start block/ && !/xattr/ { gsub(/ /, "", $2); print $2 }' <<<"$out")" = 1 ] ||
    fail "$name: the metadata area does not start at block 1: $out"
  # build --format erofs: the same bytes; random reads through the mount agree.
  assert_ok imagefs build --cache-dir "$CACHE" --inject "$agent:/.imagefs/agent" --format erofs \
    "$IMAGEFS_REGISTRY/$name" -o "$T/built.erofs" 2>/dev/null >/dev/null
  fs cmp "$file" "$T/built.erofs" || fail "$name: build --format erofs differs from the mount's file"
  # Layer data goes out by copy_file_range; to another kind of file system (tmpfs when the store
  # is not on one) the kernel refuses it (EXDEV) and the rest goes through read: the same bytes.
  if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" != "$(stat -f -c %T "$CACHE")" ]; then
    shm=$(mktemp -d /dev/shm/imagefs-erofs-test.XXXXXX)
    assert_ok imagefs build --cache-dir "$CACHE" --inject "$agent:/.imagefs/agent" --format erofs \
      "$IMAGEFS_REGISTRY/$name" -o "$shm/built.erofs" 2>/dev/null >/dev/null
    cmp -s "$T/built.erofs" "$shm/built.erofs" ||
      { rm -rf "$shm"; fail "$name: build --format erofs to another file system differs"; }
    rm -rf "$shm"
  fi
  out=$(fs python3 - "$file" "$T/built.erofs" <<'EOF'
import os, random, sys
a, b = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
size = os.fstat(b).st_size
rng = random.Random(size)
for _ in range(300):
    off, n = rng.randrange(size + 8192), rng.choice([1, 511, 4096, 4097, 65536, 200000])
    if os.pread(a, n, off) != os.pread(b, n, off):
        print("differ at", off, n); sys.exit(1)
print("300 random reads agree")
EOF
  ) || fail "$name: random reads differ: $out"
  rm -f "$T/built.erofs"
}

# unpack LAYOUT: umoci's tree of an OCI layout (gzip or plain layers) in $T/bundle.
unpack() {
  rm -rf "$T/bundle"
  date +%s >"$T/start"
  assert_ok umoci unpack --image "$1:latest" "$T/bundle" >/dev/null
}

for name in "${fixtures[@]}"; do
  ref=$(umoci_tree "$name")
  check "$name" "$ref/bundle/rootfs" "$(cat "$ref/start")"
done
unpack "$T/bigdir"
check bigdir "$T/bundle/rootfs" "$(cat "$T/start")"
for ((i = 0; i < count; i++)); do
  unpack "$T/layouts/stack-$i"
  check "stack/$i" "$T/bundle/rootfs" "$(cat "$T/start")"
done

log "layouts are the store's: rm takes an image's layouts with it"
# layouts_of DIGEST: the layout files whose key names the image DIGEST.
layouts_of() {
  local f
  for f in "$CACHE"/segments/erofs/*; do
    [ -f "$f" ] && sed -n 2p "$f" | grep -q "^$1/erofs/" && echo "$f"
  done
  true
}
d_tiny=$(fs cat "$MNT/$IMAGEFS_REGISTRY/tiny:latest/digest")
d_edge=$(fs cat "$MNT/$IMAGEFS_REGISTRY/edge:latest/digest")
unmount_wait "$MNT"
[ -n "$(layouts_of "$d_tiny")" ] || fail "no layout of tiny under $CACHE/segments/erofs"
assert_ok imagefs rm --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/tiny" >/dev/null
[ -z "$(layouts_of "$d_tiny")" ] || fail "rm left tiny's layouts: $(layouts_of "$d_tiny")"
[ -n "$(layouts_of "$d_edge")" ] || fail "rm of tiny took edge's layouts"

log "build --format erofs with --init, and with --exec"
printf '#!/bin/sh\necho my init\n' >"$T/myinit"
assert_ok imagefs build --cache-dir "$CACHE" --format erofs --init "$T/myinit" \
  "$IMAGEFS_REGISTRY/edge" -o "$T/init.erofs" >/dev/null 2>&1
assert_ok imagefs build --cache-dir "$CACHE" --format erofs --exec "/bin/echo from exec" \
  "$IMAGEFS_REGISTRY/edge" -o "$T/exec.erofs" >/dev/null 2>&1
mkdir -p "$T/m-init" "$T/m-exec"
_loops+=("$T/m-init" "$T/m-exec")
mount -t erofs -o ro,loop "$T/init.erofs" "$T/m-init" || fail "the kernel refuses the --init image"
mount -t erofs -o ro,loop "$T/exec.erofs" "$T/m-exec" || fail "the kernel refuses the --exec image"
cmp -s "$T/m-init/.imagefs/init" "$T/myinit" || fail "--init FILE is not /.imagefs/init"
[ ! -e "$T/m-init/.imagefs/init.conf" ] || fail "--init left a /.imagefs/init.conf"
assert_contains "$(tr '\0' ' ' <"$T/m-exec/.imagefs/init.conf")" "exec 3 /bin/echo from exec"
[ -x "$T/m-exec/.imagefs/init" ] || fail "--exec: no default init"
umount "$T/m-init" "$T/m-exec"
fsck.erofs "$T/init.erofs" >/dev/null 2>&1 || fail "fsck.erofs fails on the --init image"

log "--level with --format erofs is a usage error"
rc=0
imagefs build --cache-dir "$CACHE" --format erofs --level 3 "$IMAGEFS_REGISTRY/tiny" -o "$T/x" \
  2>"$T/err" || rc=$?
[ "$rc" = 2 ] || fail "build --format erofs --level 3 exited $rc, not 2: $(cat "$T/err")"
assert_contains "$(cat "$T/err")" "--level"
log "pass"
