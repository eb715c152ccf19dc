#!/imagefs-test/busybox sh
# The /init of the boot tests (`imagefs build --init check_init.sh`): checks, inside the booted
# guest, that the kernel unpacked the initramfs into exactly the tree we expect, prints one line
# per failed check and a final marker, then powers the VM off.
#
# It needs nothing from the image: it runs under a static busybox injected at
# /imagefs-test/busybox (`--inject BUSYBOX:/imagefs-test/busybox`; the edge image has no shell),
# and calls every tool as "$BB" tool.
#
# Inputs (injected files):
#   /etc/imagefs-checks        the facts to check, one per line, fields separated by '|'
#                              (blank lines and lines starting with '#' are ignored):
#     exists|PATH              PATH exists (a dangling symlink counts)
#     absent|PATH              nothing at PATH
#     type|PATH|T              T: file dir symlink char block fifo
#     mode|PATH|OCTAL          permission bits incl. setuid/setgid/sticky (stat %a), e.g. 4755, 0
#     owner|PATH|UID:GID
#     size|PATH|BYTES
#     sha256|PATH|HEX          a regular file's content
#     line|PATH|TEXT           the file's first line is TEXT
#     symlink|PATH|TARGET      PATH is a symlink whose target (readlink, unresolved) is TARGET
#     nlink|PATH|N
#     mtime|PATH|SECONDS       modification time (stat %Y; of the link itself for a symlink)
#     hardlink|PATH1|PATH2     two names of one regular file: same inode, nlink >= 2
#     dev|PATH|c or b|MAJ|MIN  a device node and its numbers
#     manifest|FILE            FILE is an expected manifest (see below): the tree must match it
#     run|EXPECTED|COMMAND     after all other checks, with /proc, /sys and /dev mounted: COMMAND
#                              (run by sh -c, stdin /dev/null, stderr with stdout) prints exactly
#                              the line EXPECTED and exits 0. COMMAND may contain '|'.
#   The kernel command line may set imagefs_checks=PATH to read another file.
#
# Output on the console (ttyS0):
#   IMAGEFS-INIT-START
#   IMAGEFS-CHECK FAIL: <check line>: <what was found>       one per failed check
#   IMAGEFS-RUN: <output line>                               the output of each run check
#   IMAGEFS-CHECKS: <n> checked, <f> failed
#   IMAGEFS-BOOT-OK   or   IMAGEFS-BOOT-FAIL <f>
#
# All checks except `run` look at the tree exactly as the kernel unpacked it: nothing is mounted
# or created before they are done.
#
# Manifests: `check_init.sh --imagefs-manifest ROOT PATHS_FILE` (on the host, with the same
# busybox given as IMAGEFS_BUSYBOX=FILE) prints the manifest of the paths listed in
# PATHS_FILE (one "./relative/path" a line) under ROOT: per entry its type, mode, owner, nlink
# (not for directories), device numbers and mtime, then sha256 of every regular file, then every
# symlink's target. The guest makes the same text with the same code and busybox and compares.

# shellcheck disable=SC3043 # busybox ash has local
BB=${IMAGEFS_BUSYBOX:-/imagefs-test/busybox}
[ -x "$BB" ] || BB=$(command -v busybox) || BB=/bin/busybox

# manifest ROOT: prints the manifest (format above) of the paths in $paths (one a line) under
# ROOT. Reads nothing but the listed entries and writes nothing.
manifest() {
  (
    cd "$1" || exit 1
    list() { printf '%s\n' "$paths" | "$BB" tr '\n' '\0'; }
    # %F is the type in words; directories' nlink depends on the filesystem: left out.
    list | "$BB" xargs -0 -r "$BB" stat -c '%F|%n|%a|%u:%g|%h|%t:%T|%Y' |
      "$BB" awk -F'|' 'BEGIN { OFS = "|" } $1 == "directory" { $5 = "-" } { print }'
    list | "$BB" xargs -0 -r "$BB" stat -c '%F|%n' | "$BB" sed -n 's/^regular file|//p' |
      "$BB" tr '\n' '\0' | "$BB" xargs -0 -r "$BB" sha256sum
    list | "$BB" xargs -0 -r "$BB" stat -c '%F|%N' | "$BB" sed -n 's/^symbolic link|//p'
  )
}

if [ "${1:-}" = --imagefs-manifest ]; then
  paths=$("$BB" cat "$3") || exit 1
  manifest "$2"
  exit $?
fi

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CHECKS=${imagefs_checks:-/etc/imagefs-checks}
checked=0
failed=0

# The firmware's last line has no newline: start a line of our own.
echo
echo IMAGEFS-INIT-START

bad() {
  failed=$((failed + 1))
  echo "IMAGEFS-CHECK FAIL: $line: $*"
}

# kind PATH: the entry's type in the words of the checks file (nothing when absent).
kind() {
  if [ -L "$1" ]; then echo symlink
  elif [ -f "$1" ]; then echo file
  elif [ -d "$1" ]; then echo dir
  elif [ -c "$1" ]; then echo char
  elif [ -b "$1" ]; then echo block
  elif [ -p "$1" ]; then echo fifo
  elif [ -e "$1" ]; then echo other
  fi
}

# want_entry PATH: fails the check (returns 1) when nothing is at PATH.
want_entry() {
  [ -n "$(kind "$1")" ] && return 0
  bad "missing"
  return 1
}

check() {
  local op=$1 p=${2:-} got t
  case $op in
    exists) want_entry "$p" ;;
    absent) t=$(kind "$p"); [ -z "$t" ] || bad "exists ($t)" ;;
    type) want_entry "$p" && { t=$(kind "$p"); [ "$t" = "$3" ] || bad "is a $t"; } ;;
    mode)
      want_entry "$p" || return
      got=$("$BB" stat -c %a "$p")
      [ "$((0$got))" = "$((0$3))" ] || bad "mode $got"
      ;;
    owner) want_entry "$p" && { got=$("$BB" stat -c %u:%g "$p"); [ "$got" = "$3" ] || bad "owner $got"; } ;;
    size) want_entry "$p" && { got=$("$BB" stat -c %s "$p"); [ "$got" = "$3" ] || bad "size $got"; } ;;
    nlink) want_entry "$p" && { got=$("$BB" stat -c %h "$p"); [ "$got" = "$3" ] || bad "nlink $got"; } ;;
    mtime) want_entry "$p" && { got=$("$BB" stat -c %Y "$p"); [ "$got" = "$3" ] || bad "mtime $got"; } ;;
    sha256)
      want_entry "$p" || return
      [ "$(kind "$p")" = file ] || { bad "not a regular file"; return; }
      got=$("$BB" sha256sum "$p") && got=${got%% *}
      [ "$got" = "$3" ] || bad "sha256 $got"
      ;;
    line)
      want_entry "$p" || return
      # Not `read <"$p"`: a failed redirection would end this shell, and so the boot.
      got=$("$BB" head -n 1 "$p" 2>&1)
      [ "$got" = "$3" ] || bad "first line '$got'"
      ;;
    symlink)
      want_entry "$p" || return
      [ -L "$p" ] || { bad "is a $(kind "$p"), not a symlink"; return; }
      got=$("$BB" readlink "$p")
      [ "$got" = "$3" ] || bad "target '$got'"
      ;;
    hardlink)
      want_entry "$p" && want_entry "$3" || return
      [ "$(kind "$p")" = file ] && [ "$(kind "$3")" = file ] || { bad "not two regular files"; return; }
      got=$("$BB" stat -c '%i %h' "$p" "$3" | "$BB" tr '\n' ' ')
      set -- $got
      [ "$1" = "$3" ] && [ "$2" -ge 2 ] || bad "inode/nlink $got"
      ;;
    dev)
      want_entry "$p" || return
      t=$(kind "$p")
      case $3 in c) [ "$t" = char ] ;; b) [ "$t" = block ] ;; *) false ;; esac || { bad "is a $t"; return; }
      got=$("$BB" stat -c '%t %T' "$p")
      [ "$((0x${got% *})):$((0x${got#* }))" = "$4:$5" ] || bad "device $((0x${got% *})):$((0x${got#* }))"
      ;;
    manifest)
      [ -f "$p" ] || { bad "no manifest file"; return; }
      # Its first section names every path once, in order.
      paths=$("$BB" sed -n 's/^[a-z ]*|\([^|]*\)|.*/\1/p' "$p")
      got=$(manifest /)
      if [ "$got" != "$("$BB" cat "$p")" ]; then
        bad "the tree differs from the manifest ($("$BB" wc -l <"$p") lines); first differences:"
        printf '%s\n' "$got" | "$BB" diff "$p" - | "$BB" head -40 | "$BB" sed 's/^/IMAGEFS-MANIFEST-DIFF: /'
      fi
      ;;
    *) bad "unknown check" ;;
  esac
}

if [ ! -f "$CHECKS" ]; then
  echo "IMAGEFS-CHECK FAIL: no checks file at $CHECKS"
  failed=1
else
  # Pass 1: the tree as unpacked.
  set -f
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; run'|'*) continue ;; esac
    checked=$((checked + 1))
    oldifs=$IFS
    IFS='|'
    # shellcheck disable=SC2086
    set -- $line
    IFS=$oldifs
    check "$@"
  done <"$CHECKS"
  set +f
fi

# Pass 2: commands, in a system set up as an init would.
"$BB" mkdir -p /proc /sys /dev
"$BB" mount -t proc proc /proc
"$BB" mount -t sysfs sysfs /sys
"$BB" mount -t devtmpfs devtmpfs /dev
if [ -f "$CHECKS" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in run'|'*) ;; *) continue ;; esac
    checked=$((checked + 1))
    rest=${line#run|}
    expected=${rest%%|*}
    command=${rest#*|}
    got=$("$BB" sh -c "$command" </dev/null 2>&1)
    rc=$?
    printf '%s\n' "$got" | "$BB" sed 's/^/IMAGEFS-RUN: /'
    [ "$rc" = 0 ] && [ "$got" = "$expected" ] || bad "exit $rc, output above"
  done <"$CHECKS"
fi

echo "IMAGEFS-CHECKS: $checked checked, $failed failed"
if [ "$failed" = 0 ]; then
  echo IMAGEFS-BOOT-OK
else
  echo "IMAGEFS-BOOT-FAIL $failed"
fi
"$BB" sync
"$BB" poweroff -f
echo o >/proc/sysrq-trigger
"$BB" sleep 10
# Still here: exiting makes the kernel panic, and with panic=-1 and QEMU's -no-reboot that ends
# the VM too.
exit 1
