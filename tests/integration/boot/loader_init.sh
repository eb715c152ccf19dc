#!/bin/busybox sh
# shellcheck shell=dash
# /init of the loader initramfs that erofs_boot_lib.sh's erofs_loader makes: what a distribution's
# initramfs does for a kernel whose disk and filesystem drivers are modules. It loads the modules
# listed in /modules/order (dependencies first), waits for the root= device, mounts it read-only
# with rootfstype=, and switch_roots into it running init= (the image's /.imagefs/init), which
# then sees a read-only root exactly as on a kernel with the drivers built in.
# Kernel command line: root= rootfstype= init= (as the kernel reads them), loader.skip=NAME
# (repeatable: leave the module NAME.ko out). Lines it prints start with "LOADER".
BB=/bin/busybox
export PATH=/bin
$BB mount -t proc proc /proc
$BB mount -t devtmpfs devtmpfs /dev
root=/dev/vda fstype=erofs init=/sbin/init skip=' '
for arg in $($BB cat /proc/cmdline); do
  case $arg in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    init=*) init=${arg#init=} ;;
    loader.skip=*) skip="$skip${arg#loader.skip=}.ko " ;;
  esac
done
die() {
  echo "LOADER FAIL: $*"
  $BB poweroff -f
  exit 1
}
while IFS= read -r m; do
  case $skip in *" $m "*) echo "LOADER: $m left out"; continue ;; esac
  $BB insmod "/modules/$m" || die "insmod $m"
done </modules/order
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1))
  [ $i -le 100 ] || die "no $root after 10 s"
  $BB usleep 100000
done
$BB mount -t "$fstype" -o ro "$root" /newroot || die "mount -t $fstype -o ro $root"
# The init mounts its own /proc and /dev in the new root.
$BB umount /proc
$BB umount /dev
exec $BB switch_root /newroot "$init"
