#!/usr/bin/env bash
# `imagefs mount` end to end (issue 6's Tests), on real mounts:
#   - a fresh cache: the top level is empty; config.json, manifest.json and digest of an image
#     equal what the registry serves, and reading them downloads no layer (the fault proxy's
#     request log);
#   - 10 concurrent cold readers of three images (archives, two of them twice, and finds): all
#     correct, and each layer downloaded once;
#   - for tiny, edge and python in gz, zst and none: the archive read through the mount equals
#     `imagefs build` with the same --init/--inject byte for byte; `stat` and `ls -l` sizes equal
#     the bytes read (known before the first read); reads at random offsets, backwards and
#     through mmap agree;
#   - rootfs/ equals `umoci unpack` (treecmp.py: types, modes, owners, sizes, contents, symlinks,
#     hardlink groups, devices, xattrs, mtimes), and so does `tar -c` of it extracted again;
#     getfattr, readlink, stat and inode numbers of edge's special entries agree with umoci's;
#     readdir's inode numbers equal lookup's;
#   - other users are kept out without --allow-other and let in with it;
#   - writes are EROFS; unknown images, tags and names are ENOENT; the top level and the registry
#     level list what the cache holds (also images pulled by another process); repositories with
#     '/' are nested directories; digest references; another platform under .platform/, and
#     --platform for the whole mount;
#   - an injected host file changed on disk is in archives opened after the change;
#   - `imagefs status` and MOUNT/.status; SIGTERM unmounts; -f with SIGINT; `fusermount3 -u` ends
#     the daemon;
#   - --ttl: a tag pushed again is re-resolved after the TTL; a digest reference is not; with the
#     registry stopped the last digest keeps serving, with a log line.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo umoci jq curl python3 getfattr tar cmp setpriv
[ "$(id -u)" = 0 ] || skip "needs root: umoci unpack restores owners, device nodes and security.* xattrs"
require_mount

here=$IMAGEFS_SOURCE_DIR/tests/integration/mount
init=$IMAGEFS_SOURCE_DIR/tests/integration/boot/check_init.sh
T=$TEST_TMPDIR
REF_CACHE=$T/refcache

"$FIXTURES" build --out "$FIXTURES_OUT" tiny edge python multiarch >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny edge python multiarch
# A repository with '/' in its name: nested directories in the mount.
assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$FIXTURES_OUT/oci/tiny:latest" \
  "docker://$REG/org/team/app:1.0" >/dev/null
# Mount A reaches the registry through the fault proxy (no faults): its log shows every request.
start_faultproxy --target "$REG" --lifetime 3600
FP=$FAULTPROXY

payload=$T/payload.bin
head -c 200000 /dev/urandom >"$payload"
archive_name() { case $1 in gz) echo initramfs.cpio.gz ;; zst) echo initramfs.cpio.zst ;; none) echo initramfs.cpio ;; esac; }

# build_ref NAME FORMAT OUT [IMAGEFS BUILD ARGS...]: the reference archive, with mount A's options,
# from a store of its own.
build_ref() {
  local name=$1 fmt=$2 out=$3
  shift 3
  assert_ok imagefs build --cache-dir "$REF_CACHE" "$REG/$name:latest" -o "$out" --format "$fmt" \
    --init "$init" --inject "$payload:/opt/imagefs/payload.bin" "$@" >/dev/null
}
# layer_gets REPO: the number of GETs of each layer of fixture REPO in the proxy log, one a line.
layer_gets() {
  local l
  for l in $(layer_digests "$1"); do
    grep -cF "GET /v2/$1/blobs/$l " "$FAULTPROXY_LOG" || true
  done
}

# ---------------------------------------------------------------------------------------------
log "mount A: fresh cache, --init and --inject, through the proxy"
MNT=$T/mnt
LOG=$T/mount.log
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG" --init "$init" \
  --inject "$payload:/opt/imagefs/payload.bin"
pidA=$MOUNT_PID
log "  daemon pid $pidA"
assert_eq "" "$(fs ls "$MNT")" "the top level of a mount of an empty cache"

# --- metadata files without layers ------------------------------------------------------------
log "config.json, manifest.json, digest"
img=$MNT/$FP/tiny:latest
d_tiny=$(fixture_digest_for tiny)
fs cat "$img/config.json" >"$T/tiny.config.json" || fail "cat $img/config.json failed"
printf '%s\n' "$d_tiny" | cmp -s - <(fs cat "$img/digest") ||
  fail "digest: expected '$d_tiny\\n', got '$(fs cat "$img/digest" | od -c | head -3)'"
fs cat "$img/manifest.json" >"$T/tiny.manifest.json" || fail "cat $img/manifest.json failed"
assert_eq "$d_tiny" "sha256:$(sha256sum <"$T/tiny.manifest.json" | cut -d' ' -f1)" "the digest of manifest.json"
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
  "$IMAGEFS_REGISTRY_URL/v2/tiny/manifests/$d_tiny" >"$T/tiny.manifest.reg" || fail "curl of the manifest failed"
cmp -s "$T/tiny.manifest.reg" "$T/tiny.manifest.json" || fail "manifest.json differs from the registry's manifest"
cfg_digest=$(jq -r .config.digest "$T/tiny.manifest.json")
curl -sf "$IMAGEFS_REGISTRY_URL/v2/tiny/blobs/$cfg_digest" >"$T/tiny.config.reg" || fail "curl of the config failed"
cmp -s "$T/tiny.config.reg" "$T/tiny.config.json" || fail "config.json differs from the registry's config blob $cfg_digest"
for f in config.json manifest.json digest; do
  assert_eq "$(fs cat "$img/$f" | wc -c)" "$(fs stat -c %s "$img/$f")" "stat size of $f"
done
gets=$(layer_gets tiny | awk '{ n += $1 } END { print n + 0 }')
[ "$gets" = 0 ] || fail "reading config.json, manifest.json and digest of a fresh image downloaded layers: $(grep -F "/blobs/" "$FAULTPROXY_LOG")"
log "  equal to the registry's; no layer downloaded ($(grep -c ' GET ' "$FAULTPROXY_LOG") requests)"

# --- concurrent cold readers ------------------------------------------------------------------
log "10 concurrent readers of three images, cold (two pairs read the same file)"
jobs_=()
for spec in "tiny gz" "edge zst" "edge none" "python gz" "python zst" "python none" "python gz 2" "tiny gz 2"; do
  read -r name fmt second <<<"$spec"
  fs cat "$MNT/$FP/$name:latest/$(archive_name "$fmt")" >"$T/c.$name.$fmt${second:+.$second}" 2>"$T/c.$name.$fmt.err" &
  jobs_+=("$!:cat $name $fmt")
done
for name in python edge; do
  (cd "$MNT/$FP/$name:latest/rootfs" && fs find . -printf '%P|%y\n' | LC_ALL=C sort) >"$T/c.$name.find" 2>"$T/c.$name.find.err" &
  jobs_+=("$!:find $name")
done
for j in "${jobs_[@]}"; do
  wait "${j%%:*}" || fail "concurrent reader '${j#*:}' failed: $(cat "$T"/c.*.err)"
done
for name in tiny edge python; do
  gets=$(layer_gets "$name" | paste -sd' ')
  [[ " $gets " =~ ^( 1)+\ $ ]] || fail "$name: layer downloads per layer were '$gets' (each layer once)"
done
log "  all finished; each layer of tiny, edge and python downloaded once"

# --- archives: bytes, sizes, offsets ----------------------------------------------------------
log "archives equal imagefs build"
for name in tiny edge python; do
  for fmt in gz zst none; do
    f=$MNT/$FP/$name:latest/$(archive_name "$fmt")
    build_ref "$name" "$fmt" "$T/b.$name.$fmt"
    for c in "$T/c.$name.$fmt" "$T/c.$name.$fmt.2"; do
      [ -f "$c" ] || continue
      cmp "$T/b.$name.$fmt" "$c" >/dev/null ||
        fail "$name.$fmt: a concurrent cold read differs from imagefs build ($(stat -c %s "$c") vs $(stat -c %s "$T/b.$name.$fmt") bytes)"
      rm -f "$c"
    done
    size=$(fs stat -c %s "$f")
    lsize=$(fs ls -l "$f" | awk '{print $5}')
    fs cat "$f" >"$T/m.$name.$fmt" || fail "cat $f failed"
    cmp "$T/b.$name.$fmt" "$T/m.$name.$fmt" >/dev/null ||
      fail "$name.$fmt: cat of $f differs from imagefs build ($(stat -c %s "$T/m.$name.$fmt") vs $(stat -c %s "$T/b.$name.$fmt") bytes): $(cmp "$T/b.$name.$fmt" "$T/m.$name.$fmt" 2>&1 | head -1)"
    read_bytes=$(stat -c %s "$T/m.$name.$fmt")
    assert_eq "$read_bytes" "$size" "$name.$fmt: stat size vs bytes read"
    assert_eq "$read_bytes" "$lsize" "$name.$fmt: ls -l size vs bytes read"
    rm -f "$T/m.$name.$fmt"
  done
  log "  $name: gz $(stat -c %s "$T/b.$name.gz"), zst $(stat -c %s "$T/b.$name.zst"), none $(stat -c %s "$T/b.$name.none") bytes: equal"
done
# The size is known before the first read: a fresh image's archive stat'ed first.
for pair in "python:gz" "edge:none"; do
  name=${pair%%:*} fmt=${pair#*:}
  out=$(fs python3 "$here/mountcheck.py" reads "$MNT/$FP/$name:latest/$(archive_name "$fmt")" "$T/b.$name.$fmt") ||
    fail "$name.$fmt: reads at offsets / mmap: $out"
done
log "  random offsets, backwards reads and mmap agree (python gz, edge none)"

# --- rootfs against umoci ---------------------------------------------------------------------
log "rootfs/ against umoci unpack"
for name in tiny edge python; do
  ref=$(umoci_tree "$name")
  root=$MNT/$FP/$name:latest/rootfs
  out=$(fs python3 "$TREECMP" "$root" "$ref/bundle/rootfs" --synthesized-after "$(cat "$ref/start")") ||
    fail "$name: rootfs/ differs from umoci unpack: $out"
  log "  $name: $(head -1 <<<"$out")"
  if [ -f "$T/c.$name.find" ]; then
    (cd "$ref/bundle/rootfs" && find . -printf '%P|%y\n' | LC_ALL=C sort) >"$T/r.$name.find"
    diff -q "$T/r.$name.find" "$T/c.$name.find" >/dev/null ||
      fail "$name: the concurrent find differs from umoci's tree: $(diff "$T/r.$name.find" "$T/c.$name.find" | head -20)"
  fi
  # tar -c of the mount, extracted again, is the same tree (xattrs included).
  mkdir "$T/untar-$name"
  fs tar -C "$root" --xattrs --xattrs-include='*' --numeric-owner -cf - . 2>"$T/tar.err" |
    tar -C "$T/untar-$name" --xattrs --xattrs-include='*' --numeric-owner --warning=no-timestamp -xpf - ||
    fail "$name: tar -c of rootfs failed: $(cat "$T/tar.err")"
  [ ! -s "$T/tar.err" ] || fail "$name: tar -c of rootfs complained: $(head -5 "$T/tar.err")"
  out=$(python3 "$TREECMP" "$T/untar-$name" "$ref/bundle/rootfs" --synthesized-after "$(cat "$ref/start")") ||
    fail "$name: tar -c of rootfs differs from umoci unpack: $out"
  rm -rf "$T/untar-$name"
done
log "  tar -c of each rootfs is the same tree"

log "edge: getfattr, readlink, stat, inodes"
e=$MNT/$FP/edge:latest/rootfs
r=$(umoci_tree edge)/bundle/rootfs
cd "$r"
mapfile -t entries < <(find data/xattrs data/hardlinks data/hardlinks3 data/special data/modes data/owners \
  data/symlinks data/mtimes data/upper_hardlink data/lower_target.txt data/meta_change.txt \
  home/alice etc/hostname -mindepth 0 | LC_ALL=C sort)
cd - >/dev/null
[ "${#entries[@]}" -gt 40 ] || fail "too few edge entries found in umoci's tree: ${#entries[@]}"
# stat_of ROOT: one line per entry (no size or nlink for directories: they are the filesystem's).
stat_of() {
  (cd "$1" && for p in "${entries[@]}"; do
    if [ -L "$p" ]; then
      fs stat -c '%n|%F|%u:%g|%s|%h|%Y' -- "$p"
    elif [ -d "$p" ]; then
      fs stat -c '%n|%F|%a|%u:%g|%Y' -- "$p"
    else
      fs stat -c '%n|%F|%a|%u:%g|%s|%h|%t:%T|%Y' -- "$p"
    fi
  done)
}
diff <(stat_of "$r") <(stat_of "$e") >"$T/stat.diff" || fail "edge: stat differs from umoci's (< umoci, > mount): $(head -30 "$T/stat.diff")"
getfattr_of() {
  (cd "$1" && fs getfattr -h -d -m - -e hex -- "${entries[@]}" 2>&1 | grep -v '^$')
}
diff <(getfattr_of "$r") <(getfattr_of "$e") >"$T/xattr.diff" ||
  fail "edge: getfattr differs from umoci's (< umoci, > mount): $(head -30 "$T/xattr.diff")"
assert_contains "$(getfattr_of "$e")" "security.capability=0x0100000200040000000000000000000000000000" "edge xattrs"
assert_contains "$(getfattr_of "$e")" "user.imagefs.binary=0x00ff62696e61727980fe00" "edge xattrs"
links=0
for p in "${entries[@]}"; do
  [ -L "$r/$p" ] || continue
  assert_eq "$(readlink "$r/$p")" "$(fs readlink "$e/$p")" "readlink $p"
  links=$((links + 1))
done
[ "$links" -ge 9 ] || fail "only $links symlinks compared"
ino() { fs stat -c %i "$e/$1"; }
assert_eq "$(ino data/hardlinks/original)" "$(ino data/hardlinks/second)" "inode of hardlinks/second"
assert_eq "$(ino data/hardlinks/original)" "$(ino data/hardlinks/third)" "inode of hardlinks/third"
assert_eq "$(ino data/lower_target.txt)" "$(ino data/upper_hardlink)" "inode of upper_hardlink"
[ "$(ino data/hardlinks/original)" != "$(ino data/lower_target.txt)" ] || fail "two hardlink groups share an inode"
out=$(fs python3 "$here/mountcheck.py" inodes "$e" "$e/data" "$e/data/hardlinks" "$e/data/special" \
  "$MNT/$FP/python:latest/rootfs/usr/bin" "$MNT/$FP/tiny:latest" "$MNT") || fail "readdir vs lookup inodes: $out"
log "  ${#entries[@]} entries' stat and xattrs, $links symlinks, hardlink inodes, readdir inodes agree"

# --- other users ------------------------------------------------------------------------------
log "other users are kept out without --allow-other"
chmod 711 "$TEST_TMPDIR"  # so that only the mount can say no
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
err=$(mount_errno_text "${nobody[@]}" cat "$img/digest")
assert_contains "$err" "Permission denied" "another user reading a mount without --allow-other"

# --- read-only --------------------------------------------------------------------------------
log "writes are EROFS"
erofs() {
  local err
  err=$(mount_errno_text "$@")
  assert_contains "$err" "Read-only file system" "$*"
}
erofs touch "$img/rootfs/newfile"
erofs mkdir "$img/rootfs/newdir"
erofs sh -c "echo x >'$img/rootfs/etc/hostname'"
erofs sh -c "echo x >>'$img/initramfs.cpio.gz'"
erofs rm -f "$img/rootfs/etc/hostname"
erofs chmod 600 "$img/rootfs/etc/hostname"
erofs ln -s x "$img/rootfs/newlink"
erofs mv "$img/rootfs/etc/hostname" "$img/rootfs/etc/hostname2"
# (Not at the top level: any valid name there is a directory already, so mkdir says EEXIST.)
erofs mkdir "$img/newdir"
erofs touch "$img/newfile"
erofs truncate -s 0 "$img/digest"
assert_eq tiny "$(fs cat "$img/rootfs/etc/hostname")" "etc/hostname after the writes"

# --- names ------------------------------------------------------------------------------------
log "unknown names are ENOENT"
for p in "$MNT/$FP/nope:1" "$MNT/$FP/tiny:no-such-tag" "$MNT/$FP/NotAValidName:1" \
  "$img/rootfs/no/such/file" "$img/no-such-file" "$MNT/$FP/tiny@sha256:$(printf '0%.0s' {1..64})"; do
  err=$(mount_errno_text ls "$p")
  assert_contains "$err" "No such file or directory" "ls $p"
done
grep -q "nope" "$LOG" || fail "the daemon's log does not mention the unknown image nope:1: $(tail -20 "$LOG")"
log "  $(grep -m1 nope "$LOG")"

log "listings"
top=$(fs ls "$MNT")
assert_eq "$FP" "$top" "the top level after reading images from $FP"
level2=$(fs ls "$MNT/$FP")
for name in tiny edge python; do assert_contains "$level2" "$name:latest" "ls $MNT/$FP"; done
# An image another process pulls into the same store appears at the top level.
assert_ok imagefs pull --cache-dir "$CACHE" "$REG/multiarch:latest" >/dev/null
for ((i = 0; i < 50; i++)); do
  [[ $'\n'$(fs ls "$MNT")$'\n' == *$'\n'"$REG"$'\n'* ]] && break
  sleep 0.1
done
assert_contains "$(fs ls "$MNT")" "$REG" "the top level after imagefs pull $REG/multiarch:latest by another process"
log "  top: $(fs ls "$MNT" | paste -sd' ')"
# Nested repository names: each level a directory; the levels list what is known under them.
assert_eq "$d_tiny" "$(fs cat "$MNT/$FP/org/team/app:1.0/digest")" "digest of $FP/org/team/app:1.0"
assert_eq tiny "$(fs cat "$MNT/$FP/org/team/app:1.0/rootfs/etc/hostname")" "a nested repository's rootfs"
assert_contains "$(fs ls "$MNT/$FP")" org "ls $MNT/$FP after reading org/team/app:1.0"
assert_eq team "$(fs ls "$MNT/$FP/org")" "ls $MNT/$FP/org"
assert_eq app:1.0 "$(fs ls "$MNT/$FP/org/team")" "ls $MNT/$FP/org/team"

log "digest references and platforms"
pinned=$MNT/$FP/tiny@$d_tiny
assert_eq "$d_tiny" "$(fs cat "$pinned/digest")" "digest of the digest reference"
fs test -L "$pinned/rootfs/bin/sh" || fail "$pinned/rootfs/bin/sh is not a symlink"
d_arm=$(fixture_digest_for multiarch arm64)
d_amd=$(fixture_digest_for multiarch amd64)
[ "$d_arm" != "$d_amd" ] || fail "the multiarch fixture has one manifest for both platforms"
arm=$MNT/.platform/linux-arm64/$FP/multiarch:latest
assert_eq "$d_arm" "$(fs cat "$arm/digest")" "digest of multiarch for linux-arm64"
assert_eq arm64 "$(fs cat "$arm/config.json" | jq -r .architecture)" "architecture in linux-arm64's config.json"
assert_eq "$d_amd" "$(fs cat "$MNT/$FP/multiarch:latest/digest")" "digest of multiarch for the host's platform"
build_ref multiarch gz "$T/b.arm.gz" --platform linux/arm64
fs cat "$arm/initramfs.cpio.gz" | cmp -s - "$T/b.arm.gz" || fail "multiarch linux-arm64: the archive differs from imagefs build --platform linux/arm64"
ref=$(umoci_tree multiarch arm64)
out=$(fs python3 "$TREECMP" "$arm/rootfs" "$ref/bundle/rootfs" --synthesized-after "$(cat "$ref/start")") ||
  fail "multiarch linux-arm64: rootfs/ differs from umoci unpack: $out"
log "  digest reference; linux-arm64 digest, config, archive and rootfs"

# --- an injected file changes on disk ---------------------------------------------------------
log "a changed injected file"
printf 'one more line\n' >>"$payload"
for pair in "tiny:gz" "edge:none"; do
  name=${pair%%:*} fmt=${pair#*:}
  f=$MNT/$FP/$name:latest/$(archive_name "$fmt")
  build_ref "$name" "$fmt" "$T/b2.$name.$fmt"
  cmp -s "$T/b2.$name.$fmt" "$T/b.$name.$fmt" && fail "imagefs build ignored the changed payload"
  size=$(fs stat -c %s "$f")
  fs cat "$f" >"$T/m2.$name.$fmt"
  cmp -s "$T/b2.$name.$fmt" "$T/m2.$name.$fmt" ||
    fail "$name.$fmt: after the injected file changed, the archive is not the one imagefs build now makes (read $(stat -c %s "$T/m2.$name.$fmt") bytes; before the change $(stat -c %s "$T/b.$name.$fmt"), now $(stat -c %s "$T/b2.$name.$fmt"))"
  assert_eq "$(stat -c %s "$T/b2.$name.$fmt")" "$size" "$name.$fmt: stat size after the change"
done
log "  tiny gz and edge none carry the new file"

# --- status ------------------------------------------------------------------------------------
log "status"
out=$(fs "$IMAGEFS_BIN" status 2>&1) || fail "imagefs status failed: $out"
assert_contains "$out" "$MNT" "imagefs status"
assert_contains "$out" "$pidA" "imagefs status names the daemon's pid"
out=$(fs "$IMAGEFS_BIN" status "$MNT" 2>&1) || fail "imagefs status $MNT failed: $out"
assert_contains "$out" "$MNT" "imagefs status $MNT"
fs cat "$MNT/.status" | python3 -c 'import json, sys; json.load(sys.stdin)' ||
  fail "$MNT/.status is not JSON: $(fs cat "$MNT/.status" | head -c 500)"
log "  $(head -3 <<<"$out" | paste -sd' ')"

log "SIGTERM"
kill -TERM "$pidA"
wait_gone "$pidA" 10 || fail "the daemon still runs 10 s after SIGTERM"
! in_proc_mounts "$MNT" || fail "$MNT is still in /proc/mounts after SIGTERM to the daemon"
[ -z "$(ls -A "$MNT")" ] || fail "$MNT is not an empty directory after the unmount"

# ---------------------------------------------------------------------------------------------
log "-f and SIGINT, on the same store"
MNTF=$T/mntf
mkdir -p "$MNTF"
_track_mount "$MNTF"
# (bash starts background commands with SIGINT ignored, and libfuse leaves an ignored signal
# alone: give the daemon the default disposition, as a terminal would.)
python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
  "$IMAGEFS_BIN" mount -f "$MNTF" --cache-dir "$CACHE" --log "$T/mountf.log" \
  --init "$init" --inject "$payload:/opt/imagefs/payload.bin" >"$T/mountf.out" 2>&1 &
fpid=$!
for ((i = 0; i < 300; i++)); do
  is_mounted "$MNTF" && break
  kill -0 "$fpid" 2>/dev/null || fail "imagefs mount -f exited: $(cat "$T/mountf.out")"
  sleep 0.1
done
is_mounted "$MNTF" || fail "imagefs mount -f did not mount within 30 s"
assert_eq "$d_tiny" "$(fs cat "$MNTF/$FP/tiny:latest/digest")" "digest through the -f mount"
fs cat "$MNTF/$FP/tiny:latest/initramfs.cpio.gz" | cmp -s - "$T/b2.tiny.gz" ||
  fail "a new daemon on the same store serves another tiny archive"
kill -INT "$fpid"
rc=0
timeout 15 tail --pid="$fpid" -f /dev/null || fail "imagefs mount -f still runs 15 s after SIGINT"
wait "$fpid" || rc=$?
assert_eq 0 "$rc" "exit status of imagefs mount -f after SIGINT ($(cat "$T/mountf.out"))"
! in_proc_mounts "$MNTF" || fail "$MNTF is still mounted after SIGINT"

log "--platform linux/arm64 for the whole mount"
MNTC=$T/mntc
mount_imagefs "$MNTC" --cache-dir "$CACHE" --log "$T/mountc.log" --platform linux/arm64
assert_eq "$d_arm" "$(fs cat "$MNTC/$REG/multiarch:latest/digest")" "multiarch on a linux/arm64 mount"
assert_eq "$d_amd" "$(fs cat "$MNTC/.platform/linux-amd64/$REG/multiarch:latest/digest")" \
  "multiarch under .platform/linux-amd64 on a linux/arm64 mount"
unmount_wait "$MNTC"

# ---------------------------------------------------------------------------------------------
log "mount B: --ttl 2, --allow-other, no archive options, straight to the registry"
d_edge=$(fixture_digest_for edge)
retag() {
  assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$FIXTURES_OUT/oci/$1:latest" \
    "docker://$REG/retag:latest" >/dev/null
}
retag tiny
MNTB=$T/mntb
LOGB=$T/mountb.log
mount_imagefs "$MNTB" --cache-dir "$T/cacheb" --ttl 2 --log "$LOGB" --allow-other --allow-registry "$REG"
pidB=$MOUNT_PID
grep -F " $MNTB " /proc/mounts | grep -q allow_other || fail "--allow-other is not in the mount options: $(grep -F " $MNTB " /proc/mounts)"
rt=$MNTB/$REG/retag:latest
assert_eq "$d_tiny" "$(fs cat "$rt/digest")" "retag:latest before the push"
assert_eq tiny "$(fs cat "$rt/rootfs/etc/hostname")" "retag:latest's hostname before the push"
# Without --init/--inject the archive equals a plain imagefs build.
assert_ok imagefs build --cache-dir "$REF_CACHE" "$REG/tiny:latest" -o "$T/plain.zst" --format zst >/dev/null
# The exact size before the first read (what Firecracker reads), on an image not read before.
size=$(fs stat -c %s "$MNTB/$REG/tiny:latest/initramfs.cpio.zst")
assert_eq "$(stat -c %s "$T/plain.zst")" "$size" "stat size of tiny.zst before its first read"
fs cat "$MNTB/$REG/tiny:latest/initramfs.cpio.zst" | cmp -s - "$T/plain.zst" ||
  fail "tiny.zst without options differs from a plain imagefs build"
assert_eq "$d_tiny" "$(fs "${nobody[@]}" cat "$MNTB/$REG/tiny:latest/digest")" "another user reading a mount with --allow-other"
retag edge
t0=$(date +%s.%N)
changed=
for ((i = 0; i < 60; i++)); do
  if [ "$(fs cat "$rt/digest")" = "$d_edge" ]; then changed=1; break; fi
  sleep 0.25
done
[ -n "$changed" ] || fail "retag:latest still reads $(fs cat "$rt/digest") 15 s after the tag moved (--ttl 2)"
log "  the tag moved; the mount saw it after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
assert_eq edge "$(fs cat "$rt/rootfs/etc/hostname")" "retag:latest's hostname after the push"
assert_eq "$d_tiny" "$(fs cat "$MNTB/$REG/retag@$d_tiny/digest")" "a digest reference after its tag moved"
assert_eq tiny "$(fs cat "$MNTB/$REG/retag@$d_tiny/rootfs/etc/hostname")" "a digest reference's rootfs after its tag moved"
fs cat "$rt/initramfs.cpio.gz" >/dev/null || fail "retag:latest's archive after the push"

log "  registry stopped: the last digest keeps serving"
stop_registry
lines=$(wc -l <"$LOGB")
sleep 3
assert_eq "$d_edge" "$(fs cat "$rt/digest")" "retag:latest with the registry down"
assert_eq edge "$(fs cat "$rt/rootfs/etc/hostname")" "retag:latest's rootfs with the registry down"
fs cat "$rt/config.json" | jq -e . >/dev/null || fail "config.json with the registry down"
fs cat "$rt/initramfs.cpio.gz" | gzip -t || fail "retag:latest's archive with the registry down"
new=$(tail -n +"$((lines + 1))" "$LOGB")
assert_contains "$new" "$REG" "a log line about the unreachable registry"
log "  log: $(grep -m1 -F "$REG" <<<"$new")"

log "fusermount3 -u ends the daemon"
unmount_wait "$MNTB" "$pidB"
log "pass"
