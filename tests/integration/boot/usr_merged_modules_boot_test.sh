#!/usr/bin/env bash
# A usr-merged image with a kernel-modules layer boots, and its modules are found (issue 12):
# the base layer has bin -> usr/bin, lib -> usr/lib, sbin -> usr/sbin (a static busybox and
# libc-like files under usr/lib); the upper layer, as a tar of kernel modules is made, writes
# lib/modules/<kernel>/... (the guest kernel's real overlay.ko, modules.dep) with no entry for lib
# itself. `imagefs build` makes the initramfs, QEMU boots it (TCG), and the guest's /init checks
# that /lib is still the symlink, libc is still there, /lib/modules/<kernel> and
# /usr/lib/modules/<kernel> are one directory, modules.dep reads through both, and `modprobe
# overlay` (busybox's, which looks the module up through /lib/modules/$(uname -r)/modules.dep)
# loads the module: overlay appears in /proc/filesystems. Before the fix, lib became a directory
# holding only modules/ and nothing could run.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/boot/boot_lib.sh"
require_cmd docker-registry skopeo python3 qemu-system-x86_64
[ "$(id -u)" = 0 ] || skip "needs root: /boot/vmlinuz-* is root-only"
kernel=$(boot_kernel)
kver=${kernel##*/vmlinuz-}
module=/usr/lib/modules/$kver/kernel/fs/overlayfs/overlay.ko
[ -f "$module" ] || skip "no $module (the guest kernel's modules: linux-image-amd64)"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" | grep -q 'statically linked' ||
  skip "no static busybox on the host (busybox-static)"

layout=$TEST_TMPDIR/layout
python3 - "$layout" "$busybox" "$kver" "$module" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["IMAGEFS_SOURCE_DIR"], "scripts"))
from fixtures_lib import layer as L, oci
out, busybox, kver, module = sys.argv[1:]
base = [L.dir_("usr"), L.dir_("usr/bin"), L.dir_("usr/sbin"), L.dir_("usr/lib"),
        L.dir_("usr/lib/x86_64-linux-gnu"), L.dir_("etc"), L.dir_("proc"), L.dir_("sys"),
        L.dir_("dev"), L.file("usr/bin/busybox", mode=0o755, source=busybox),
        L.symlink("usr/bin/sh", "busybox"),
        L.file("usr/lib/x86_64-linux-gnu/libc.so.6", b"libc of the base layer\n"),
        L.symlink("usr/lib/libc.so.6", "x86_64-linux-gnu/libc.so.6"),
        L.symlink("bin", "usr/bin"), L.symlink("lib", "usr/lib"), L.symlink("sbin", "usr/sbin"),
        L.symlink("lib64", "usr/lib"), L.file("etc/hostname", b"usrmerged\n")]
mods = "lib/modules/" + kver
modules = [L.file(mods + "/kernel/fs/overlayfs/overlay.ko", source=module),
           L.file(mods + "/kernel/drivers/misc/imagefs-test.ko", b"not a real module\n"),
           L.file(mods + "/modules.dep", b"kernel/fs/overlayfs/overlay.ko:\nkernel/drivers/misc/imagefs-test.ko:\n")]
lay = oci.Layout(out)
top = lay.add_image([(base, "gzip", "usr-merged base"), (modules, "gzip", "kernel modules through lib/")],
                    {"Cmd": ["/bin/sh"]}, {"os": "linux", "architecture": "amd64"})
lay.finish(top)
PY

# The guest's checks: one IMAGEFS-CHECK FAIL line per failure, IMAGEFS-BOOT-OK at the end.
cat >"$TEST_TMPDIR/init" <<EOF
#!/bin/sh
echo IMAGEFS-INIT-START
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
fails=0
check() { if eval "\$1"; then echo "IMAGEFS-CHECK ok: \$1"; else echo "IMAGEFS-CHECK FAIL: \$1"; fails=\$((fails + 1)); fi; }
check '[ -L /lib ] && [ "\$(busybox readlink /lib)" = usr/lib ]'
check '[ -L /bin ] && [ -L /sbin ] && [ -L /lib64 ]'
check '[ "\$(busybox uname -r)" = $kver ]'
check 'busybox grep -q "libc of the base layer" /lib/libc.so.6'
check 'busybox grep -q "libc of the base layer" /usr/lib/x86_64-linux-gnu/libc.so.6'
check '[ "\$(busybox ls /lib/modules/\$(busybox uname -r)/)" = "\$(busybox ls /usr/lib/modules/\$(busybox uname -r)/)" ]'
check 'busybox ls /lib/modules/\$(busybox uname -r)/ | busybox grep -qx modules.dep'
check 'busybox grep -qx "kernel/fs/overlayfs/overlay.ko:" /lib/modules/\$(busybox uname -r)/modules.dep'
check 'busybox cmp /lib/modules/\$(busybox uname -r)/modules.dep /usr/lib/modules/\$(busybox uname -r)/modules.dep'
check '[ -f /lib/modules/\$(busybox uname -r)/kernel/drivers/misc/imagefs-test.ko ]'
check '! busybox grep -qw overlay /proc/filesystems'
check 'busybox modprobe overlay'
check 'busybox grep -qw overlay /proc/filesystems'
busybox ls -l / /lib/modules/\$(busybox uname -r)/
[ "\$fails" = 0 ] && echo IMAGEFS-BOOT-OK
busybox poweroff -f
EOF

start_registry open
assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$layout:latest" \
  "docker://$IMAGEFS_REGISTRY/usrmerged/modules:latest" >/dev/null
initrd=$TEST_TMPDIR/initramfs.cpio.gz
assert_ok imagefs build --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/usrmerged/modules" -o "$initrd" \
  --format gz --init "$TEST_TMPDIR/init" >/dev/null
boot_expect_ok "$initrd"
log "console: $(grep -c '^IMAGEFS-CHECK ok' "$BOOT_LOG") checks ok in ${BOOT_SECONDS}s"
log "pass"
