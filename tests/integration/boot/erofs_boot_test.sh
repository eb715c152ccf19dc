#!/usr/bin/env bash
# An image's rootfs.erofs boots as a read-only root disk (issue 13): Debian's kernel in QEMU (TCG)
# with MNT/REF/rootfs.erofs straight from an imagefs mount as a read-only virtio disk
# (-drive ...,readonly=on), the kernel command line `root=/dev/vda ro rootfstype=erofs
# init=/.imagefs/init`, and a small loader initramfs (erofs_boot_lib.sh) that loads Debian's
# virtio_blk, erofs and overlay modules and switch_roots into the disk, as a distribution's
# initramfs would. The default init then runs the image's command:
#   - with docker's rules: Entrypoint + Cmd, Env, WorkingDir, User by name with its groups, what
#     showargs prints compared line by line;
#   - on a writable root: the init makes an overlay with a tmpfs upper over the read-only disk, so
#     the command (User app) writes into /work and /home/app, directories of the read-only disk,
#     while a root-owned directory refuses it with EACCES as docker's root would (not EROFS); the
#     disk itself stays read-only (/sys/block/vda/ro, and its bytes on the host are unchanged);
#   - on a kernel without overlayfs (loader.skip=overlay): tmpfs on /tmp, /var/tmp and /run,
#     /var/run left a symlink, and the rest read-only (EROFS on /work), with the init's console
#     line saying so;
#   - the same image's initramfs.cpio.gz from the mount, the control: the root is the kernel's
#     writable rootfs, which the init leaves as it is (no read-only-root line).
# The guest's checks are the image's own command (erofs-checks, a busybox script) that execs
# showargs at its end. The disk is MNT/REF/rootfs.erofs, straight from the mount.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/boot/boot_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/boot/erofs_boot_lib.sh"
require_cmd docker-registry skopeo python3 qemu-system-x86_64 gcc cpio
[ "$(id -u)" = 0 ] || skip "needs root: /boot/vmlinuz-* is root-only"
require_mount
boot_kernel >/dev/null
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" | grep -q 'statically linked' ||
  skip "no static busybox on the host (busybox-static)"

PATH_DEFAULT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The image's command: the write checks for the mode named by erofs_test.expect= on the kernel
# command line, then showargs (with what busybox's sh adds to the environment taken out again).
cat >"$TEST_TMPDIR/erofs-checks" <<'EOF'
#!/bin/sh
echo "EROFS-COMMAND-START"
expect=
for a in $(cat /proc/cmdline); do case $a in erofs_test.expect=*) expect=${a#*=} ;; esac; done
fails=0
# check WHAT EXPECTED COMMAND: COMMAND's output (stderr too) is exactly EXPECTED.
check() {
  got=$(eval "$3" 2>&1)
  if [ "$got" = "$2" ]; then
    echo "EROFS-CHECK ok: $1"
  else
    echo "EROFS-CHECK FAIL: $1: expected '$2', got '$got'"
    fails=$((fails + 1))
  fi
}
fstype() { awk -v p="$1" '$2 == p { t = $3 } END { print t }' /proc/mounts; }
check "/tmp is writable" ok 'echo x >/tmp/new && echo ok'
check "/var/run is still the image's symlink" ../run 'readlink /var/run'
[ "$expect" = initramfs ] || check "the disk is read-only" 1 'cat /sys/block/vda/ro'
case $expect in
  overlay)
    check "a root-owned directory refuses user app" "touch: /etc/new: Permission denied" 'touch /etc/new'
    check "/ is an overlay" overlay 'fstype /'
    check "the image's /work is writable" "written" 'echo written >/work/new && cat /work/new'
    check "an image file can be replaced" "replaced" 'echo replaced >/work/file && cat /work/file'
    check "the image's /home/app is writable" ok 'mkdir -p /home/app/.cache/x && echo ok'
    check "files are deleted" gone 'rm /work/file && { [ -e /work/file ] || echo gone; }'
    check "/.imagefs shows the image's own files again" "init init.conf" 'ls /.imagefs | tr "\n" " " | sed "s/ $//"'
    ;;
  initramfs)
    check "/ is the kernel's rootfs" rootfs 'fstype /'
    check "the image's /work is writable" "written" 'echo written >/work/new && cat /work/new'
    ;;
  tmpfs)
    check "/ is the erofs disk" erofs 'fstype /'
    check "a root-owned directory is read-only" "touch: /etc/new: Read-only file system" 'touch /etc/new'
    check "the image's /work is read-only" "touch: /work/new: Read-only file system" 'touch /work/new'
    check "/tmp is a tmpfs" tmpfs 'fstype /tmp'
    check "/var/tmp is a tmpfs" tmpfs 'fstype /var/tmp'
    check "/run is a tmpfs" tmpfs 'fstype /run'
    check "/var/tmp is writable" ok 'echo x >/var/tmp/new && echo ok'
    ;;
  *) check "erofs_test.expect= names overlay, tmpfs or initramfs" "one of them" "echo '$expect'" ;;
esac
echo "EROFS-CHECKS-DONE fails=$fails"
exec env -u SHLVL -u PWD -u OLDPWD /usr/bin/showargs "$@"
EOF

log "an image of showargs, busybox and the checks, run as User app in /work"
layout=$TEST_TMPDIR/layout
python3 - "$layout" "$busybox" "$TEST_TMPDIR/erofs-checks" "$TEST_TMPDIR" "$PATH_DEFAULT" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["IMAGEFS_SOURCE_DIR"], "scripts"))
from fixtures_lib import layer as L, oci
from fixtures_lib.images import build_showargs, base_dirs
out, busybox, checks, work, path = sys.argv[1:]
showargs = build_showargs(work)
entries = base_dirs() + [
    L.dir_("usr/local"), L.dir_("usr/local/bin"), L.dir_("var/tmp", 0o1777),
    L.symlink("var/run", "../run"),
    L.file("bin/busybox", mode=0o755, source=busybox),
    L.file("usr/bin/showargs", mode=0o755, source=showargs),
    L.file("usr/local/bin/erofs-checks", mode=0o755, source=checks),
    L.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
    L.file("etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n"),
    L.file("etc/hostname", "erofsboot\n"),
    L.dir_("home/app", 0o755, uid=1000, gid=1000),
    L.dir_("work", 0o755, uid=1000, gid=1000),
    L.file("work/file", "from the image\n", uid=1000, gid=1000),
]
entries += [L.symlink(f"bin/{tool}", "busybox") for tool in
            ("sh", "cat", "echo", "awk", "touch", "mkdir", "rm", "ls", "tr", "sed", "readlink", "env")]
lay = oci.Layout(out)
top = lay.add_image([(entries, "gzip", "showargs, busybox and the erofs checks")],
                    {"Entrypoint": ["/usr/local/bin/erofs-checks", "from-entrypoint"],
                     "Cmd": ["from-cmd", "two words"], "Env": [path, "GREETING=hello world"],
                     "WorkingDir": "/work", "User": "app"},
                    {"os": "linux", "architecture": "amd64"})
lay.finish(top)
PY

start_registry open
assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$layout:latest" \
  "docker://$IMAGEFS_REGISTRY/erofs/boot:latest" >/dev/null
REF=$IMAGEFS_REGISTRY/erofs/boot:latest
MNT=$TEST_TMPDIR/mnt
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$TEST_TMPDIR/mount.log"

erofs_disk "$MNT" "$REF"
disk=$EROFS_DISK
before=$(fs sha256sum "$disk" | cut -d' ' -f1)
loader=$TEST_TMPDIR/loader.cpio.gz
erofs_loader "$loader"

shown="argc=4
argv[0]=/usr/bin/showargs
argv[1]=from-entrypoint
argv[2]=from-cmd
argv[3]=two words
env=GREETING=hello world
env=HOME=/home/app
env=HOSTNAME=erofsboot
env=PATH=$PATH_DEFAULT
cwd=/work
uid=1000 gid=1000 groups=2000
ppid=1"

# run EXPECT [KERNEL_ARGS]: boots the disk and requires the init's line for EXPECT, every check of
# the command, docker's rules in showargs' lines, status 0 and a power-off.
run() {
  local expect=$1 more=${2:-} rc=0 why='' init_line
  case $expect in
    overlay) init_line="imagefs-init: read-only root: writable through an overlay with a tmpfs upper" ;;
    tmpfs) init_line="imagefs-init: read-only root: tmpfs on /tmp /var/tmp /run, everything else read-only" ;;
    initramfs) init_line="" ;;
  esac
  if [ "$expect" = initramfs ]; then
    boot_initramfs "$MNT/$REF/initramfs.cpio.gz" "erofs_test.expect=$expect" || rc=$?
  else
    boot_erofs "$loader" "$disk" "erofs_test.expect=$expect${more:+ $more}" || rc=$?
  fi
  if [ "$rc" != 0 ]; then
    why="QEMU did not end by itself (exit $rc)"
  elif grep -q '^LOADER FAIL' "$BOOT_LOG"; then
    why="the loader failed: $(grep -m1 '^LOADER FAIL' "$BOOT_LOG")"
  elif grep -q 'Kernel panic' "$BOOT_LOG"; then
    why="the kernel panicked"
  elif [ -n "$init_line" ] && ! grep -qF "$init_line" "$BOOT_LOG"; then
    # Not -x: the firmware's last line has no newline, and the init's first line may follow it.
    why="no console line '$init_line'"
  elif [ -z "$init_line" ] && grep -q 'imagefs-init: read-only root' "$BOOT_LOG"; then
    why="the init took a writable root for a read-only one"
  elif ! grep -q 'EROFS-CHECKS-DONE fails=0' "$BOOT_LOG"; then
    why="the command's checks failed: $(grep 'EROFS-CHECK FAIL' "$BOOT_LOG" | head -5 | tr '\n' ';')"
  elif [ "$(grep -o 'SHOWARGS .*' "$BOOT_LOG" | sed 's/^SHOWARGS //')" != "$shown" ]; then
    why="the command saw other things than docker's rules say: $(diff <(echo "$shown") \
      <(grep -o 'SHOWARGS .*' "$BOOT_LOG" | sed 's/^SHOWARGS //') | tr '\n' ';')"
  elif ! grep -qF 'imagefs-init: command exited with status 0' "$BOOT_LOG"; then
    why="no 'command exited with status 0'"
  elif ! grep -q 'reboot: Power down' "$BOOT_LOG"; then
    why="the guest did not power off"
  fi
  if [ -n "$why" ]; then
    echo "--- console ($expect) ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- end of console ---" >&2
    fail "boot of $disk ($expect): $why"
  fi
  log "  $expect: ok ($(grep -c '^EROFS-CHECK ok' "$BOOT_LOG") checks, docker's rules; ${BOOT_SECONDS}s)"
}

log "boot with overlayfs: the command writes into its root through the overlay"
run overlay
log "boot without overlayfs (loader.skip=overlay): tmpfs on the scratch directories"
run tmpfs loader.skip=overlay
log "the same image as an initramfs (the control): the init leaves the writable root alone"
run initramfs

assert_eq "$before" "$(fs sha256sum "$disk" | cut -d' ' -f1)" "the disk's bytes after the boots"
log "disk: rootfs.erofs from the mount, $(fs stat -c %s "$disk") bytes, unchanged"
