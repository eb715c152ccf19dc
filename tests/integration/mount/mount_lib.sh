# Helpers for the `imagefs mount` tests (sourced after tests/integration/lib.sh and
# tests/integration/pull/pull_lib.sh).
#
#   require_mount              skip unless FUSE and fusermount3 are there; fail unless imagefs has
#                              a mount command
#   fs CMD...                  run CMD against a mount, killed after IMAGEFS_MOUNT_TIMEOUT seconds
#                              (default 120): a hung daemon fails the test instead of hanging it
#   mount_imagefs MNT ARGS...  `imagefs mount MNT ARGS...` (background mode), then require MNT in
#                              /proc/mounts as fuse.imagefs and find the daemon; MNT is unmounted
#                              and its daemon killed at exit whatever happens. Sets MOUNT_PID.
#   daemon_pid MNT             the pid of the imagefs process serving MNT (from /proc)
#   is_mounted MNT             MNT is in /proc/mounts as fuse.imagefs
#   in_proc_mounts MNT         MNT is in /proc/mounts at all
#   unmount_wait MNT [PID]     fusermount3 -u MNT, then require the daemon to exit (10 s) and MNT
#                              to leave /proc/mounts
#   wait_gone PID SECONDS      wait for PID to exit; false if it is still there
#   umoci_tree NAME [ARCH] [REGISTRY]
#                              `umoci unpack` of NAME:latest from REGISTRY (default
#                              $IMAGEFS_REGISTRY) into $TEST_TMPDIR/ref-NAME-ARCH/bundle/rootfs
#                              (zstd layers recompressed as gzip for umoci 0.4); prints that
#                              directory; the unpack time goes into ref-NAME-ARCH/start (for
#                              treecmp --synthesized-after)
#   layer_digests NAME [ARCH]  the layer digests of a fixture image, one a line
#   mount_errno_text CMD...    run CMD (with fs); print its stderr; fail if it succeeds
# shellcheck shell=bash

IMAGEFS_MOUNT_TIMEOUT=${IMAGEFS_MOUNT_TIMEOUT:-120}
TREECMP=$IMAGEFS_SOURCE_DIR/tests/integration/overlay/treecmp.py
_mount_list=()
MOUNT_PID=

require_mount() {
  require_cmd fusermount3
  [ -c /dev/fuse ] || skip "no /dev/fuse (FUSE is not available here)"
  "$IMAGEFS_BIN" help mount >/dev/null 2>&1 || fail "$IMAGEFS_BIN has no mount command yet (issue 6)"
}

fs() { timeout -k 5 "$IMAGEFS_MOUNT_TIMEOUT" "$@"; }

in_proc_mounts() {
  awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts
}

is_mounted() {
  awk -v m="$1" '$2 == m && $3 == "fuse.imagefs" { found = 1 } END { exit !found }' /proc/mounts
}

daemon_pid() {
  local want=$1 p exe found=
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    [[ $exe == */imagefs* ]] || continue
    # The daemon keeps the command line it was started with: imagefs mount ... MNT ...
    if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$want" &&
      tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qx mount; then
      found=${p#/proc/}
    fi
  done
  [ -n "$found" ] && echo "$found"
}

wait_gone() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    # A zombie of ours counts as gone.
    grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# At exit: every mount this test made is detached (lazily: a dead daemon's mount too) and its
# daemon ended, so that removing TEST_TMPDIR never walks into a mount.
_mount_cleanup() {
  local mnt pid
  for mnt in ${_mount_list[@]+"${_mount_list[@]}"}; do
    pid=$(daemon_pid "$mnt") || pid=
    if in_proc_mounts "$mnt"; then
      fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null
      wait_gone "$pid" 5 || kill -9 "$pid" 2>/dev/null
    fi
  done
  return 0
}
on_exit _mount_cleanup

_track_mount() {
  local m
  for m in ${_mount_list[@]+"${_mount_list[@]}"}; do [ "$m" = "$1" ] && return 0; done
  _mount_list+=("$1")
}

mount_imagefs() {
  local mnt=$1 out rc=0
  shift
  mkdir -p "$mnt"
  _track_mount "$mnt"
  out=$(timeout -k 5 "$IMAGEFS_MOUNT_TIMEOUT" "$IMAGEFS_BIN" mount "$mnt" "$@" 2>&1) || rc=$?
  [ "$rc" = 0 ] || fail "imagefs mount $mnt $* failed (exit $rc): $out"
  is_mounted "$mnt" ||
    fail "imagefs mount $mnt exited 0 but $mnt is not in /proc/mounts as fuse.imagefs: $(grep -F " $mnt " /proc/mounts)"
  MOUNT_PID=$(daemon_pid "$mnt") || fail "no imagefs process serves $mnt after imagefs mount returned"
  # Anything besides its one "mounted ... (daemon pid N, log F)" line is worth showing.
  out=$(grep -v '^imagefs: mounted ' <<<"$out" || true)
  [ -z "$out" ] || log "  imagefs mount said: $(head -c 300 <<<"$out")"
}

unmount_wait() {
  local mnt=$1 pid=${2:-} out
  [ -n "$pid" ] || pid=$(daemon_pid "$mnt") || pid=
  out=$(fs fusermount3 -u "$mnt" 2>&1) || fail "fusermount3 -u $mnt failed: $out"
  if [ -n "$pid" ]; then
    wait_gone "$pid" 10 || fail "the daemon (pid $pid) still runs 10 s after fusermount3 -u $mnt"
  fi
  ! in_proc_mounts "$mnt" || fail "$mnt is still in /proc/mounts after fusermount3 -u"
}

umoci_tree() {
  local name=$1 arch=${2:-amd64} reg=${3:-$IMAGEFS_REGISTRY} work
  work=$TEST_TMPDIR/ref-$name-$arch
  if [ ! -d "$work/bundle/rootfs" ]; then
    mkdir -p "$work"
    assert_ok skopeo --override-arch "$arch" copy --src-tls-verify=false --preserve-digests \
      "docker://$reg/$name:latest" "oci:$work/pulled:latest" >/dev/null
    assert_ok "$FIXTURES" gzip-copy "$work/pulled" "$work/gz" >/dev/null
    date +%s >"$work/start"
    assert_ok umoci unpack --image "$work/gz:latest" "$work/bundle" >/dev/null
    rm -rf "$work/pulled" "$work/gz"
  fi
  echo "$work"
}

# The manifest digest of fixture NAME for ARCH (default amd64), from its OCI layout.
fixture_digest_for() {
  local layout=$FIXTURES_OUT/oci/$1 arch=${2:-amd64} top
  top=$(jq -r '.manifests[0].digest' "$layout/index.json")
  if [ "$(jq -r '.manifests[0].mediaType' "$layout/index.json")" = application/vnd.oci.image.index.v1+json ]; then
    # An index, possibly nested (multiarch): walk down to the platform's manifest.
    local blob=$layout/blobs/sha256/${top#sha256:} mt
    while :; do
      mt=$(jq -r '.mediaType // empty' "$blob")
      if [ "$mt" = application/vnd.oci.image.index.v1+json ] || jq -e '.manifests' "$blob" >/dev/null 2>&1; then
        local next
        next=$(jq -r --arg a "$arch" '[.manifests[] | select(.platform.architecture == $a)][0].digest // empty' "$blob")
        [ -n "$next" ] || next=$(jq -r '.manifests[0].digest' "$blob")
        top=$next
        blob=$layout/blobs/sha256/${top#sha256:}
      else
        break
      fi
    done
  fi
  echo "$top"
}

layer_digests() {
  local d
  d=$(fixture_digest_for "$1" "${2:-amd64}")
  jq -r '.layers[].digest' "$FIXTURES_OUT/oci/$1/blobs/sha256/${d#sha256:}"
}

mount_errno_text() {
  local err=$TEST_TMPDIR/errno.$$ rc=0
  fs "$@" >/dev/null 2>"$err" || rc=$?
  [ "$rc" != 0 ] || fail "expected a failure, but it succeeded: $*"
  cat "$err"
  rm -f "$err"
}
