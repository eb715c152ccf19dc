# Helpers for booting an image's rootfs.erofs (issue 13) with Debian's kernel in QEMU (sourced after
# tests/integration/lib.sh, pull/pull_lib.sh, mount/mount_lib.sh and boot/boot_lib.sh). Debian's
# kernel has virtio-blk, EROFS and overlayfs as modules, so a boot needs a small loader initramfs
# that loads them, mounts the disk and switches root into it, as a distribution's initramfs does;
# kernels built for microVMs (CONFIG_VIRTIO_BLK=y, CONFIG_EROFS_FS=y) boot the disk without one.
#
#   erofs_disk MNT REF         set EROFS_DISK to MNT/REF/rootfs.erofs, REF's read-only root disk
#                              as the mount serves it (failing the test if it cannot be stat'ed).
#   erofs_loader OUT [MODULE...]
#                              write a loader initramfs (gzip newc) to OUT: a static busybox, the
#                              kernel's modules MODULE... (default: virtio_pci virtio_blk erofs
#                              overlay) with their dependencies from modules.dep, loaded in
#                              dependency order, and /init (loader_init.sh): it mounts root= (read
#                              only, as rootfstype=) once it appears and switch_roots into it
#                              running init=. loader.skip=NAME on the kernel command line leaves a
#                              module out (loader.skip=overlay: a kernel without overlayfs).
#   boot_erofs LOADER DISK [EXTRA_KERNEL_ARGS]
#                              boot Debian's kernel with LOADER as initrd and DISK as a read-only
#                              virtio disk (-drive ...,readonly=on), kernel command line
#                              `root=/dev/vda ro rootfstype=erofs init=/.imagefs/init`; as
#                              boot_initramfs: BOOT_LOG, BOOT_SECONDS, QEMU's exit status, the
#                              console shown on failure. BOOT_MEMORY (default 512) is -m.
# shellcheck shell=bash

# shellcheck disable=SC2034 # read by the tests
EROFS_DISK=''

erofs_disk() {
  local mnt=$1 ref=$2 err
  err=$(fs stat "$mnt/$ref/rootfs.erofs" 2>&1 >/dev/null) || fail "stat $mnt/$ref/rootfs.erofs: $err"
  log "  $ref: rootfs.erofs served by the mount"
  EROFS_DISK=$mnt/$ref/rootfs.erofs
}

# _erofs_module_paths KVER NAME...: the modules' paths relative to /usr/lib/modules/KVER, each
# after its dependencies, each once.
_erofs_module_paths() {
  python3 - "$@" <<'EOF'
import os, sys
kver, names = sys.argv[1], sys.argv[2:]
base = f"/usr/lib/modules/{kver}"
deps = {}
for line in open(f"{base}/modules.dep"):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
by_name = {}
for mod in deps:
    n = os.path.basename(mod).split(".ko")[0].replace("-", "_")
    by_name[n] = mod
builtin = set()
if os.path.exists(f"{base}/modules.builtin"):
    builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_") for l in open(f"{base}/modules.builtin")}
out = []
def add(mod):
    for d in deps.get(mod, []):
        add(d)
    if mod not in out:
        out.append(mod)
for n in names:
    n = n.replace("-", "_")
    if n in by_name:
        add(by_name[n])
    elif n not in builtin:
        sys.exit(f"{n}: neither a module of {kver} (modules.dep) nor built in")
# libcrc32c needs the crc32c algorithm when it loads (crypto_alloc_shash), which no symbol names.
if any(m.endswith("/libcrc32c.ko") for m in out) and "crc32c_generic" in by_name:
    out.insert(0, by_name["crc32c_generic"])
print("\n".join(out))
EOF
}

erofs_loader() {
  local out=$1 kernel kver busybox dir m paths mods
  shift
  mods=("$@")
  [ ${#mods[@]} -gt 0 ] || mods=(virtio_pci virtio_blk erofs overlay)
  kernel=$(boot_kernel)
  kver=${kernel##*/vmlinuz-}
  [ -f "/usr/lib/modules/$kver/modules.dep" ] || skip "no /usr/lib/modules/$kver/modules.dep (linux-image-amd64)"
  busybox=$(command -v busybox || true)
  [ -n "$busybox" ] && file -L "$busybox" | grep -q 'statically linked' ||
    skip "no static busybox on the host (busybox-static)"
  paths=$(_erofs_module_paths "$kver" "${mods[@]}") ||
    fail "cannot resolve the loader's modules for $kver"
  dir=$(mktemp -d "$TEST_TMPDIR/loader.XXXXXX")
  mkdir -p "$dir/bin" "$dir/dev" "$dir/proc" "$dir/sys" "$dir/newroot" "$dir/modules"
  cp "$busybox" "$dir/bin/busybox"
  mknod -m 600 "$dir/dev/console" c 5 1
  install -m 0755 "$IMAGEFS_SOURCE_DIR/tests/integration/boot/loader_init.sh" "$dir/init"
  : >"$dir/modules/order"
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    cp "/usr/lib/modules/$kver/$m" "$dir/modules/"
    basename "$m" >>"$dir/modules/order"
  done <<<"$paths"
  (cd "$dir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6) >"$out"
  rm -rf "$dir"
}

boot_erofs() {
  local loader=$1 disk=$2 extra=${3:-} kernel start end rc=0
  kernel=$(boot_kernel)
  _boot_count=$((_boot_count + 1))
  BOOT_LOG=$TEST_TMPDIR/boot-$_boot_count.log
  start=$(date +%s.%N)
  timeout --kill-after=10 "$IMAGEFS_BOOT_TIMEOUT" \
    qemu-system-x86_64 -M pc -m "${BOOT_MEMORY:-512}" -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$loader" \
    -drive "file=$disk,if=virtio,format=raw,readonly=on" \
    -append "console=ttyS0 panic=-1 quiet root=/dev/vda ro rootfstype=erofs init=/.imagefs/init${extra:+ $extra}" \
    </dev/null >"$BOOT_LOG.raw" 2>&1 &
  _boot_pid=$!
  wait "$_boot_pid" || rc=$?
  _boot_pid=
  end=$(date +%s.%N)
  # shellcheck disable=SC2034 # read by the tests
  BOOT_SECONDS=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
  tr -d '\r' <"$BOOT_LOG.raw" | sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' >"$BOOT_LOG"
  rm -f "$BOOT_LOG.raw"
  if [ "$rc" != 0 ]; then
    echo "--- console of $disk (QEMU exit $rc$([ "$rc" = 124 ] && echo ", timed out after ${IMAGEFS_BOOT_TIMEOUT}s")) ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- end of console ---" >&2
  fi
  return "$rc"
}
