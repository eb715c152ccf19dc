# Shared helpers for integration test scripts: a temp dir and processes cleaned up on exit,
# skip/fail, assertions, and the test registry and fault proxy with automatic stop.
#
# Use at the top of a test (CTest sets IMAGEFS_SOURCE_DIR and IMAGEFS_BUILD_DIR):
#   #!/usr/bin/env bash
#   set -euo pipefail
#   source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
# Exit status: 0 pass, 77 skip, anything else fail.
#
#   TEST_NAME                  the script's name, used in messages
#   TEST_TMPDIR                a fresh directory for this test, removed at exit
#                              (kept if IMAGEFS_KEEP_TMP=1)
#   log MSG...                 a progress line on stderr
#   fail MSG...                report a failure and exit 1
#   skip REASON                exit 77; when CI=true it fails instead (CI must not skip)
#   require_cmd CMD...         skip unless every CMD is on PATH
#   new_tmpdir [NAME]          create and print a new directory under TEST_TMPDIR
#   on_exit CMD [ARGS...]      run CMD at exit, last registered first, even after a failure.
#                              Call it in the test's own shell (not inside $(...)), and do not
#                              set an EXIT trap yourself.
#   assert_eq EXPECTED ACTUAL [MSG]
#   assert_contains HAYSTACK NEEDLE [MSG]      (and assert_not_contains)
#   out=$(assert_ok CMD...)    run CMD; fail showing its output unless it exits 0; prints stdout
#   out=$(assert_fails CMD...) run CMD; fail unless it exits non-zero; prints stdout+stderr
#   http_status CURL_ARGS...   print the HTTP status curl gets (000 when nothing answered)
#   start_registry MODE [ARGS...]  scripts/registry start --mode MODE ARGS (see its usage);
#                              exports its IMAGEFS_REGISTRY* / IMAGEFS_TOKEN_* variables and
#                              stops it at exit
#   load_registry DIR          export the variables of a registry started earlier (e.g. by hand)
#   stop_registry [DIR]        stop now (default: the last one started)
#   start_faultproxy ARGS...   tests/harness/faultproxy.py ARGS; exports FAULTPROXY=HOST:PORT,
#                              FAULTPROXY_PID and FAULTPROXY_LOG (its per-request log); kills it
#                              at exit
#   make_oci_layout DIR [FILE] a one-layer OCI image layout tagged "latest" whose layer holds
#                              hello.txt (or FILE as /payload); prints the manifest digest
#
# skopeo, curl and friends run with an empty credential store (REGISTRY_AUTH_FILE,
# DOCKER_CONFIG point into TEST_TMPDIR) so the user's logins never leak into a test.
# shellcheck shell=bash

IMAGEFS_SOURCE_DIR=${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export IMAGEFS_SOURCE_DIR
TEST_NAME=$(basename "$0" .sh)
TEST_TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/imagefs-$TEST_NAME.XXXXXX")
export TEST_TMPDIR

mkdir -p "$TEST_TMPDIR/.docker"
echo '{}' >"$TEST_TMPDIR/.docker/config.json"
export DOCKER_CONFIG=$TEST_TMPDIR/.docker REGISTRY_AUTH_FILE=$TEST_TMPDIR/.docker/config.json

_lib_exit_cmds=()

log() { echo "[$TEST_NAME] $*" >&2; }

# The test's file:line that led here (the first caller outside this library).
_lib_caller() {
  local i
  for ((i = 1; i < ${#BASH_SOURCE[@]}; i++)); do
    if [ "${BASH_SOURCE[i]}" != "${BASH_SOURCE[0]}" ]; then
      echo "${BASH_SOURCE[i]##*/}:${BASH_LINENO[i - 1]}"
      return
    fi
  done
}

fail() {
  echo "[$TEST_NAME] FAIL: $* (at $(_lib_caller))" >&2
  exit 1
}

skip() {
  if [ "${CI:-}" = true ]; then
    fail "would skip, but CI=true: $*"
  fi
  echo "[$TEST_NAME] SKIP: $*" >&2
  exit 77
}

require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || skip "$c is not installed (scripts/setup installs it)"
  done
}

new_tmpdir() {
  mktemp -d "$TEST_TMPDIR/${1:-tmp}.XXXXXX"
}

on_exit() {
  _lib_exit_cmds+=("$(printf '%q ' "$@")")
}

_lib_cleanup() {
  local rc=$? i
  set +e
  for ((i = ${#_lib_exit_cmds[@]} - 1; i >= 0; i--)); do
    eval "${_lib_exit_cmds[i]}"
  done
  if [ "${IMAGEFS_KEEP_TMP:-}" = 1 ]; then
    echo "[$TEST_NAME] kept $TEST_TMPDIR" >&2
  else
    rm -rf "$TEST_TMPDIR"
  fi
  case $rc in
    0) echo "[$TEST_NAME] PASS" >&2 ;;
    77) ;;
    *) echo "[$TEST_NAME] FAILED (exit $rc)" >&2 ;;
  esac
  exit "$rc"
}
trap _lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "[$TEST_NAME] command failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

assert_eq() {
  [ "$1" = "$2" ] || fail "${3:-values differ}: expected '$1', got '$2'"
}

assert_contains() {
  [[ $1 == *"$2"* ]] || fail "${3:-missing text}: '$2' not in: $1"
}

assert_not_contains() {
  [[ $1 != *"$2"* ]] || fail "${3:-unexpected text}: '$2' found in: $1"
}

assert_ok() {
  local out err rc=0
  out=$(mktemp "$TEST_TMPDIR/out.XXXXXX") err=$(mktemp "$TEST_TMPDIR/err.XXXXXX")
  "$@" >"$out" 2>"$err" || rc=$?
  if [ "$rc" != 0 ]; then
    cat "$out" "$err" >&2
    fail "exit $rc from: $*"
  fi
  cat "$out"
  rm -f "$out" "$err"
}

assert_fails() {
  local out rc=0
  out=$(mktemp "$TEST_TMPDIR/out.XXXXXX")
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    cat "$out" >&2
    fail "expected failure, but it succeeded: $*"
  fi
  cat "$out"
  rm -f "$out"
}

http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$@" || true
}

load_registry() {
  [ -f "$1/env" ] || fail "no registry environment in $1"
  set -a
  # shellcheck disable=SC1091
  source "$1/env"
  set +a
}

start_registry() {
  local mode=$1 dir
  shift
  dir=$(mktemp -u "$TEST_TMPDIR/registry-$mode.XXXXXX")
  on_exit "$IMAGEFS_SOURCE_DIR/scripts/registry" stop "$dir"
  "$IMAGEFS_SOURCE_DIR/scripts/registry" start --mode "$mode" --dir "$dir" "$@" >/dev/null 2>"$dir.log" ||
    { cat "$dir.log" >&2; fail "scripts/registry start --mode $mode $* failed"; }
  load_registry "$dir"
}

stop_registry() {
  "$IMAGEFS_SOURCE_DIR/scripts/registry" stop "${1:-$IMAGEFS_REGISTRY_DIR}"
}

_lib_kill() {
  kill "$1" 2>/dev/null || return 0
  wait "$1" 2>/dev/null || true
}

start_faultproxy() {
  local pf
  pf=$(mktemp -u "$TEST_TMPDIR/faultproxy.XXXXXX")
  python3 "$IMAGEFS_SOURCE_DIR/tests/harness/faultproxy.py" --port-file "$pf.addr" "$@" \
    </dev/null >/dev/null 2>"$pf.log" &
  FAULTPROXY_PID=$!
  on_exit _lib_kill "$FAULTPROXY_PID"
  local i
  for ((i = 0; i < 100; i++)); do
    [ -s "$pf.addr" ] && break
    kill -0 "$FAULTPROXY_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -s "$pf.addr" ] || { cat "$pf.log" >&2; fail "faultproxy $* did not start"; }
  FAULTPROXY=$(cat "$pf.addr")
  FAULTPROXY_LOG=$pf.log
  export FAULTPROXY FAULTPROXY_PID FAULTPROXY_LOG
}

make_oci_layout() {
  python3 - "$@" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile

out = sys.argv[1]
payload = open(sys.argv[2], "rb").read() if len(sys.argv) > 2 else b"hello from an imagefs test\n"
name = "payload" if len(sys.argv) > 2 else "hello.txt"
os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}

tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(payload), 0o644, 0
    t.addfile(info, io.BytesIO(payload))
layer_tar = tar.getvalue()
layer = blob(gzip.compress(layer_tar, mtime=0))
config = blob(json.dumps({
    "architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
}).encode())
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
    "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")],
}).encode())
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [dict(
        manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
        annotations={"org.opencontainers.image.ref.name": "latest"})]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(manifest["digest"])
EOF
}
