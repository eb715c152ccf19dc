#!/usr/bin/env bash
# The Debian package (scripts/package): its files and Depends, apt's view of it (`apt-get
# install --simulate ./imagefs_*.deb` must find every dependency), then installed with dpkg into
# a clean directory tree and used from there: `imagefs version`, the manual page, the unit
# verified by systemd-analyze, and an fstab line mounted with `mount --fstab FILE` through the
# installed /sbin/mount.fuse.imagefs and /etc/imagefs/imagefs.conf.
#
# Why a tree and not the host or a chroot: installing on the host would change the machine other
# tests run on (and wait for dpkg's lock); a debootstrap chroot takes minutes and the network.
# The tree's files are put where mount(8) and the helper look for them by overlay mounts in a
# private mount namespace (unshare -m), so the host never sees them, nor the mount.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd dpkg-deb dpkg-shlibdeps apt-get systemd-analyze unshare man docker-registry skopeo
require_mount
[ "$(id -u)" = 0 ] || skip "installing into a tree and mounting from fstab need root"
T=$TEST_TMPDIR
BUILD=${IMAGEFS_BUILD_DIR:-$IMAGEFS_SOURCE_DIR/build}

log "scripts/package"
deb=$(assert_ok "$IMAGEFS_SOURCE_DIR/scripts/package" --build-dir "$BUILD" --out "$T")
[ -f "$deb" ] || fail "scripts/package printed $deb, which is no file"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/imagefs ./sbin/mount.fuse.imagefs ./lib/systemd/system/imagefs.service \
  ./usr/share/man/man1/imagefs.1.gz ./usr/share/bash-completion/completions/imagefs \
  ./etc/imagefs/imagefs.conf; do
  grep -qE " $f( |$)" <<<"$contents" || fail "$f is not in the package: $contents"
done
assert_eq "/etc/imagefs/imagefs.conf" "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" "conffiles"
depends=$(dpkg-deb -f "$deb" Depends)
for d in fuse3 libfuse3-3 libcurl4 libc6 libarchive13 liblmdb0 libsystemd0; do
  [[ ", $depends," == *", $d"[\ ,]* ]] || fail "Depends lacks $d: $depends"
done

log "apt-get install --simulate ./$(basename "$deb")"
out=$(apt-get install --simulate -o Debug::NoLocking=1 "$deb" 2>&1) || fail "apt refuses the package: $out"
assert_contains "$out" "Inst imagefs " "apt would install it"
assert_not_contains "$out" "Broken" "apt's view of the dependencies"

log "dpkg --root into a clean tree"
R=$T/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
: >"$R/var/lib/dpkg/status"
# --force-depends: the tree has none of the libraries; the binary runs with the host's, which
# apt said above are the packages it depends on.
assert_ok dpkg --root="$R" --log=/dev/null --force-depends -i "$deb" >/dev/null
dpkg --root="$R" -s imagefs | grep -q '^Status: install ok installed' || fail "dpkg does not list imagefs as installed"
out=$(assert_ok "$R/usr/bin/imagefs" version)
assert_contains "$out" "imagefs $(sed -nE 's/^project\(imagefs VERSION ([0-9.]+).*/\1/p' "$IMAGEFS_SOURCE_DIR/CMakeLists.txt")" "imagefs version"
assert_eq /usr/bin/imagefs "$(readlink "$R/sbin/mount.fuse.imagefs")" "the helper's link"
LC_ALL=C MANWIDTH=120 man -l "$R/usr/share/man/man1/imagefs.1.gz" 2>&1 | grep -q "imagefs - container images" ||
  fail "the installed manual page does not render"

log "systemd-analyze verify the installed unit"
# The unit names /usr/bin/imagefs: verified as installed, with the tree's binary in its place.
mkdir -p "$T/unit"
sed "s|/usr/bin/imagefs|$R/usr/bin/imagefs|" "$R/lib/systemd/system/imagefs.service" >"$T/unit/imagefs.service"
out=$(MANPATH=$R/usr/share/man systemd-analyze verify "$T/unit/imagefs.service" 2>&1) ||
  fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned: $out"
# It would see a misspelt option: the check can fail.
sed 's/^NoNewPrivileges=/NoNewPrivilege=/' "$T/unit/imagefs.service" >"$T/unit/bad.service"
out=$(MANPATH=$R/usr/share/man systemd-analyze verify "$T/unit/bad.service" 2>&1 || true)
assert_contains "$out" "Unknown key" "systemd-analyze on a misspelt key"

log "fstab: mount --fstab FILE MOUNTPOINT through the installed helper"
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny
# The operator's edit of the installed conffile.
cat >>"$R/etc/imagefs/imagefs.conf" <<CONF

# added by the test
allow-registry = $REG
platform = linux/amd64
CONF
MNT=$T/mnt
mkdir -p "$MNT"
echo "imagefs $MNT fuse.imagefs allow_other,cache_dir=$T/cache,ttl=300,noauto,_netdev,x-systemd.automount 0 0" >"$T/fstab"
cat >"$T/inside.sh" <<'INSIDE'
set -euo pipefail
R=$1 MNT=$2 T=$3 REG=$4
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
mount -t overlay overlay -o "lowerdir=$R/sbin:/usr/sbin" /usr/sbin
mount -t overlay overlay -o "lowerdir=$R/usr/bin:/usr/bin" /usr/bin
mount -t overlay overlay -o "lowerdir=$R/etc:/etc" /etc
[ -x /sbin/mount.fuse.imagefs ] || { echo "no /sbin/mount.fuse.imagefs in the namespace"; exit 1; }
mount --fstab "$T/fstab" "$MNT"
findmnt -n -o FSTYPE,OPTIONS "$MNT"
timeout 60 cat "$MNT/$REG/tiny:latest/rootfs/etc/hostname"
/usr/bin/imagefs status --json "$MNT" >"$T/status.json"
pid=$(jq -r .pid "$T/status.json")
umount "$MNT"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then echo "the daemon $pid still runs after umount"; kill "$pid"; exit 1; fi
echo unmounted
INSIDE
out=$(timeout 120 unshare -m --propagation private bash "$T/inside.sh" "$R" "$MNT" "$T" "$REG" 2>&1) ||
  fail "the fstab mount failed: $out"
log "  $(tr '\n' ' ' <<<"$out")"
assert_contains "$out" "fuse.imagefs" "findmnt shows the mount"
assert_contains "$out" "allow_other" "allow_other reached the mount"
assert_contains "$out" "tiny" "etc/hostname read through the fstab mount"
assert_contains "$out" "unmounted" "umount ended the daemon"
assert_eq 300 "$(jq -r .tag_ttl_seconds "$T/status.json")" "ttl=300 from fstab"
assert_eq "$T/cache" "$(jq -r .cache_dir "$T/status.json")" "cache_dir from fstab"
in_proc_mounts "$MNT" && fail "the namespace's mount leaked to the host"
true
