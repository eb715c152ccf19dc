#!/usr/bin/env bash
# QEMU boots archives read straight from an imagefs mount (issue 6): `-initrd
# MOUNT/REF/initramfs.cpio.gz` (and .cpio.zst, and the plain .cpio) for tiny and python, with the
# mount's --init check_init.sh and injected checks files; the guest checks the tree it unpacked
# (tests/integration/boot/check_init.sh) and prints IMAGEFS-BOOT-OK. QEMU stats and maps the file:
# the virtual file's exact size and mmap are what the boot relies on.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/boot/boot_lib.sh"
require_cmd docker-registry skopeo jq python3 qemu-system-x86_64
[ "$(id -u)" = 0 ] || skip "needs root: /boot/vmlinuz-* is root-only"
boot_kernel >/dev/null
require_mount

T=$TEST_TMPDIR
init=$IMAGEFS_SOURCE_DIR/tests/integration/boot/check_init.sh
"$FIXTURES" build --out "$FIXTURES_OUT" tiny python >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny python

# The static busybox that runs check_init.sh in the guest: tiny's own, exported with imagefs.
assert_ok imagefs export --cache-dir "$T/refcache" "$REG/tiny:latest" "$T/tiny-root" >/dev/null
busybox=$T/busybox
cp "$T/tiny-root/bin/busybox" "$busybox"
rm -rf "$T/tiny-root"
payload=$T/payload.bin
head -c 100000 /dev/urandom >"$payload"
sha() { sha256sum "$1" | cut -d' ' -f1; }

# One checks file per image, chosen with imagefs_checks= on the kernel command line.
cat >"$T/tiny.checks" <<EOF
type|/init|file
mode|/init|755
owner|/init|0:0
sha256|/init|$(sha "$init")
sha256|/opt/imagefs/payload.bin|$(sha "$payload")
mode|/opt/imagefs/payload.bin|755
dev|/dev/console|c|5|1
type|/bin/busybox|file
symlink|/bin/sh|busybox
symlink|/sbin/init|/bin/busybox
line|/etc/hostname|tiny
mtime|/etc/hostname|1704067200
mode|/tmp|1777
mode|/root|700
run|tiny-shell-ok|/bin/sh -c 'echo tiny-shell-ok'
run|root:x:0:0:root:/root:/bin/sh|/usr/bin/env /bin/busybox head -n 1 /etc/passwd
EOF
cat >"$T/python.checks" <<EOF
type|/init|file
sha256|/init|$(sha "$init")
sha256|/opt/imagefs/payload.bin|$(sha "$payload")
dev|/dev/console|c|5|1
type|/usr/bin/python3.11|file
mode|/usr/bin/python3.11|755
symlink|/usr/bin/python3|python3.11
symlink|/lib64/ld-linux-x86-64.so.2|/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
type|/usr/lib/python3.11/json/__init__.py|file
line|/etc/hostname|python
run|{"json": [1, 2], "payload": "$(sha "$payload")", "ssl": "OpenSSL"}|/usr/bin/python3 -c 'import hashlib, json, ssl; print(json.dumps({"ssl": ssl.OPENSSL_VERSION.split()[0], "json": json.loads("[1, 2]"), "payload": hashlib.sha256(open("/opt/imagefs/payload.bin", "rb").read()).hexdigest()}, sort_keys=True))'
EOF

MNT=$T/mnt
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$T/mount.log" --init "$init" \
  --inject "$busybox:/imagefs-test/busybox" --inject "$payload:/opt/imagefs/payload.bin" \
  --inject "$T/tiny.checks:/etc/imagefs-checks-tiny" --inject "$T/python.checks:/etc/imagefs-checks-python"

for name in tiny python; do
  n=$(grep -cv -e '^#' -e '^$' "$T/$name.checks")
  for f in initramfs.cpio.gz initramfs.cpio.zst initramfs.cpio; do
    initrd=$MNT/$REG/$name:latest/$f
    # The first look at the archive may pull and compress: not under QEMU's clock.
    size=$(fs stat -c %s "$initrd") || fail "stat $initrd failed"
    boot_expect_ok "$initrd" "imagefs_checks=/etc/imagefs-checks-$name"
    grep -qx "IMAGEFS-CHECKS: $n checked, 0 failed" "$BOOT_LOG" ||
      fail "$name $f: the guest did not run all $n checks: $(grep -m1 '^IMAGEFS-CHECKS:' "$BOOT_LOG")"
    log "$name $f ($size bytes): booted in $BOOT_SECONDS s; $(grep -m1 '^IMAGEFS-CHECKS:' "$BOOT_LOG")"
    [ "$name" = python ] && log "  $(grep -m1 '^IMAGEFS-RUN:' "$BOOT_LOG")"
  done
done
unmount_wait "$MNT"
log "pass"
