#!/usr/bin/env bash
# The default /init (issue 7, design.md decision 7) end to end: archives built by `imagefs build`
# without --init, booted with Debian's kernel in QEMU (TCG), and what the image's command sees,
# printed on the console by showargs (scripts/fixtures_lib/showargs.c), compared with what docker's
# rules say for each image's config:
#   - cmd-both (Entrypoint + Cmd, Env, WorkingDir, User by name, supplementary groups), in gz, zst
#     and none; cmd-entrypoint (Entrypoint only, User uid:gid); cmd-cmd (Cmd only, found along
#     the default PATH, as root);
#   - cmd-string: Entrypoint and Cmd given as strings (docker's one-element lists); cmd-badcmd:
#     an Entrypoint and Cmd docker refuses are refused, and do not matter with --exec;
#   - overrides: --exec at build time, arguments after "--" on the kernel command line (they
#     replace Cmd), imagefs.exec= and imagefs.env= on the kernel command line;
#   - noshell, an image of one static binary (no shell, no libc, no directories): its non-zero exit
#     status; orphans reparented to PID 1 and reaped; SIGTERM sent to PID 1 reaches the command;
#   - errors, each a clear console line, a status line, and a VM that powers off: a missing program,
#     a User not in /etc/passwd, a missing WorkingDir, an image with no command at all (edge);
#   - --init FILE still replaces the default; --exec runs an injected agent;
#   - the archive's /init is the imagefs-init of this build, and /.imagefs/init.conf is there;
#   - an image of another architecture builds with a warning (the default /init is the host's).
# Every boot must end by itself (the init powers the VM off: "reboot: Power down", QEMU exits 0)
# without a kernel panic; one boot goes without panic=-1, so that nothing but a power-off ends it.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/boot/boot_lib.sh"
require_cmd docker-registry skopeo jq qemu-system-x86_64 cpio gcc
[ "$(id -u)" = 0 ] || skip "needs root: /boot/vmlinuz-* is root-only"
boot_kernel >/dev/null

images=(tiny edge multiarch cmd-both cmd-entrypoint cmd-cmd cmd-baduser cmd-badwd cmd-string
  cmd-badcmd noshell)
"$FIXTURES" build --out "$FIXTURES_OUT" "${images[@]}" >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures "${images[@]}"

PATH_DEFAULT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# build IMAGE OUT [ARGS...]: imagefs build of the pushed IMAGE.
build() {
  local name=$1 out=$2
  shift 2
  assert_ok imagefs build --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/$name" -o "$out" "$@" >/dev/null
}

# run_boot ARCHIVE [KERNEL_ARGS]: boots it and requires that QEMU ends by itself because the guest
# powered off, with no kernel panic. Sets SHOWN (showargs' lines without their prefix), EXIT_LINE
# (the init's status line) and ERRORS (its error lines).
run_boot() {
  local rc=0 why=
  boot_initramfs "$@" || rc=$?
  if [ "$rc" != 0 ]; then
    why="QEMU did not end by itself (exit $rc)"
  elif grep -q 'Kernel panic' "$BOOT_LOG"; then
    why="the kernel panicked"
  elif ! grep -q 'reboot: Power down' "$BOOT_LOG"; then
    why="the guest did not power off"
  fi
  if [ -n "$why" ]; then
    echo "--- console of $1 ${2:-} ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- end of console ---" >&2
    fail "boot of $1 ${2:-}: $why"
  fi
  # The firmware's last line has no newline: the command's first line may follow it.
  SHOWN=$(grep -o 'SHOWARGS .*' "$BOOT_LOG" | sed 's/^SHOWARGS //' || true)
  EXIT_LINE=$(grep -o 'imagefs-init: command .*' "$BOOT_LOG" || true)
  ERRORS=$(grep -o 'imagefs-init: error: .*' "$BOOT_LOG" || true)
}

# expect WHAT EXPECTED_SHOWN EXPECTED_EXIT_LINE: the last boot's output, exactly.
expect() {
  local what=$1 shown=$2 exit_line=$3
  if [ "$SHOWN" != "$shown" ]; then
    echo "--- console ---" >&2
    cat "$BOOT_LOG" >&2
    echo "--- expected / got ---" >&2
    diff <(echo "$shown") <(echo "$SHOWN") >&2 || true
    fail "$what: the command saw other things than docker's rules say"
  fi
  assert_eq "imagefs-init: $exit_line" "$EXIT_LINE" "$what: the status line"
  log "  $what: ok ($(wc -l <<<"$SHOWN") lines; $EXIT_LINE; ${BOOT_SECONDS}s)"
}

# expect_error WHAT ERROR_LINE EXIT_LINE: the last boot failed to start the command, and said so.
expect_error() {
  assert_eq "imagefs-init: error: $2" "$ERRORS" "$1: the error line"
  assert_eq "" "$SHOWN" "$1: the command's output"
  assert_eq "imagefs-init: $3" "$EXIT_LINE" "$1: the status line"
  log "  $1: ok ($ERRORS)"
}

# --- docker's rules, image by image -------------------------------------------------------------
log "cmd-both: Entrypoint + Cmd, Env, WorkingDir, User app (uid 1000, groups from /etc/group)"
both_shown="argc=4
argv[0]=/usr/bin/showargs
argv[1]=from-entrypoint
argv[2]=from-cmd
argv[3]=two words
env=EMPTY=
env=GREETING=hello world
env=HOME=/home/app
env=HOSTNAME=cmdtest
env=PATH=$PATH_DEFAULT
cwd=/work
uid=1000 gid=1000 groups=2000
ppid=1"
for fmt in gz zst none; do
  build cmd-both "$TEST_TMPDIR/both.$fmt" --format "$fmt"
  run_boot "$TEST_TMPDIR/both.$fmt"
  expect "cmd-both.$fmt" "$both_shown" "command exited with status 0"
done

log "cmd-entrypoint: Entrypoint only, User 1000:2000 (an explicit group: no supplementary groups)"
build cmd-entrypoint "$TEST_TMPDIR/entrypoint.gz"
run_boot "$TEST_TMPDIR/entrypoint.gz"
expect cmd-entrypoint "argc=2
argv[0]=/usr/bin/showargs
argv[1]=only-entrypoint
env=HOME=/home/app
env=HOSTNAME=cmdtest
env=PATH=$PATH_DEFAULT
cwd=/
uid=1000 gid=2000 groups=
ppid=1" "command exited with status 0"

log "cmd-cmd: Cmd only, a bare name found along docker's default PATH, no Env, root"
build cmd-cmd "$TEST_TMPDIR/cmd.gz"
run_boot "$TEST_TMPDIR/cmd.gz"
expect cmd-cmd "argc=2
argv[0]=showargs
argv[1]=only-cmd
env=HOME=/root
env=HOSTNAME=cmdtest
env=PATH=$PATH_DEFAULT
cwd=/work
uid=0 gid=0 groups=
ppid=1" "command exited with status 0"

log "cmd-string: Entrypoint and Cmd as strings, each a list of one as docker decodes them"
build cmd-string "$TEST_TMPDIR/string.gz"
run_boot "$TEST_TMPDIR/string.gz"
expect cmd-string "argc=2
argv[0]=/usr/bin/showargs
argv[1]=hello world
env=HOME=/root
env=HOSTNAME=cmdtest
env=PATH=$PATH_DEFAULT
cwd=/
uid=0 gid=0 groups=
ppid=1" "command exited with status 0"

log "cmd-badcmd: a Cmd and Entrypoint docker refuses: refused, but irrelevant with --exec"
out=$(imagefs build --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/cmd-badcmd" -o "$TEST_TMPDIR/bad.gz" 2>&1) &&
  fail "building cmd-badcmd without --exec succeeded: $out"
assert_contains "$out" "the image config is not usable for the default /init: Entrypoint holds something other than a string" \
  "the refusal of cmd-badcmd"
build cmd-badcmd "$TEST_TMPDIR/badcmd-exec.cpio" --format none --exec "/usr/bin/showargs from-exec"
mkdir "$TEST_TMPDIR/badcmd"
(cd "$TEST_TMPDIR/badcmd" && cpio -id --quiet .imagefs/init.conf <"$TEST_TMPDIR/badcmd-exec.cpio")
assert_contains "$(tr '\0' '\n' <"$TEST_TMPDIR/badcmd/.imagefs/init.conf")" \
  "$(printf 'entrypoint\n0\ncmd\n0\nenv\n1\n%s' "PATH=$PATH_DEFAULT")" "cmd-badcmd's init.conf with --exec"
log "  cmd-badcmd: refused without --exec, built with it"

# --- overrides ----------------------------------------------------------------------------------
log "overrides"
# --exec at build time: like docker run --entrypoint; the image's Cmd goes, its User stays.
build cmd-both "$TEST_TMPDIR/exec.gz" --exec "/usr/bin/showargs from-exec"
run_boot "$TEST_TMPDIR/exec.gz"
expect "build --exec" "$(sed -e 's/^argc=4$/argc=2/' -e 's/^argv\[1\]=.*/argv[1]=from-exec/' \
  -e '/^argv\[[23]\]/d' <<<"$both_shown")" "command exited with status 0"
# Words after "--" on the kernel command line replace Cmd, as docker run IMAGE ARGS.
run_boot "$TEST_TMPDIR/both.gz" '-- kernel-arg "with space"'
expect "kernel -- ARGS" "$(sed -e 's/^argv\[2\]=.*/argv[2]=kernel-arg/' \
  -e 's/^argv\[3\]=.*/argv[3]=with space/' <<<"$both_shown")" "command exited with status 0"
# imagefs.exec= replaces Entrypoint and Cmd (and the build's --exec); imagefs.env= adds to Env.
run_boot "$TEST_TMPDIR/exec.gz" 'imagefs.exec="/usr/bin/showargs from-kernel" imagefs.env=GREETING=hi imagefs.env="EXTRA=a b" -- more'
expect "imagefs.exec= imagefs.env=" "argc=3
argv[0]=/usr/bin/showargs
argv[1]=from-kernel
argv[2]=more
env=EMPTY=
env=EXTRA=a b
env=GREETING=hi
env=HOME=/home/app
env=HOSTNAME=cmdtest
env=PATH=$PATH_DEFAULT
cwd=/work
uid=1000 gid=1000 groups=2000
ppid=1" "command exited with status 0"

# --- an image without a shell: exit status, zombies, signals -----------------------------------
log "noshell: one static binary and nothing else"
build noshell "$TEST_TMPDIR/noshell.gz"
noshell_common="env=HOME=/
env=HOSTNAME=localhost
env=PATH=$PATH_DEFAULT
cwd=/
uid=0 gid=0 groups=
ppid=1"
# Without panic=-1: only the init's power-off can end this boot in time.
BOOT_PANIC='' run_boot "$TEST_TMPDIR/noshell.gz"
expect "noshell, exit 3, no panic=-1" "argc=3
argv[0]=/showargs
argv[1]=--exit
argv[2]=3
$noshell_common" "command exited with status 3"
run_boot "$TEST_TMPDIR/noshell.gz" 'imagefs.exec=/showargs -- --orphans 5'
expect "orphans are reaped" "argc=3
argv[0]=/showargs
argv[1]=--orphans
argv[2]=5
$noshell_common
orphans=5 reparented=5 reaped=5" "command exited with status 0"
run_boot "$TEST_TMPDIR/noshell.gz" '-- --term-pid1'
expect "SIGTERM to PID 1 reaches the command" "argc=2
argv[0]=/showargs
argv[1]=--term-pid1
$noshell_common" "command killed by signal 15 (SIGTERM)"

# --- errors: a clear line, a status, and the VM powers off --------------------------------------
log "errors"
run_boot "$TEST_TMPDIR/both.gz" 'imagefs.exec=/no/such/program'
expect_error "a missing program" "cannot start the command: /no/such/program does not exist in the image" \
  "command exited with status 127"
run_boot "$TEST_TMPDIR/noshell.gz" 'imagefs.exec=sh'
expect_error "a program not along PATH" "cannot start the command: \"sh\": executable file not found in PATH=$PATH_DEFAULT" \
  "command exited with status 127"
build cmd-baduser "$TEST_TMPDIR/baduser.gz"
run_boot "$TEST_TMPDIR/baduser.gz"
expect_error "a bad User" "cannot run as User \"ghost\": unable to find user ghost: no entry in the image's /etc/passwd" \
  "command exited with status 126"
build cmd-badwd "$TEST_TMPDIR/badwd.gz"
run_boot "$TEST_TMPDIR/badwd.gz"
expect_error "a missing WorkingDir" "the working directory /nonexistent does not exist in the image" \
  "command exited with status 126"
build edge "$TEST_TMPDIR/edge.gz"
run_boot "$TEST_TMPDIR/edge.gz"
expect_error "no command at all" "the image has neither Entrypoint nor Cmd: nothing to run (give one with imagefs build --exec, or imagefs.exec= at boot)" \
  "command exited with status 126"

# --- the archive, --init and --exec with an injected agent --------------------------------------
log "the archive's /init and config; --init; an injected agent"
build tiny "$TEST_TMPDIR/tiny.cpio" --format none
mkdir "$TEST_TMPDIR/x"
(cd "$TEST_TMPDIR/x" && cpio -id --quiet init .imagefs/init.conf <"$TEST_TMPDIR/tiny.cpio")
cmp "$TEST_TMPDIR/x/init" "$IMAGEFS_BUILD_DIR/init/imagefs-init" ||
  fail "the archive's /init is not this build's imagefs-init"
assert_contains "$(tr '\0' '\n' <"$TEST_TMPDIR/x/.imagefs/init.conf")" "$(printf 'cmd\n1\n/bin/sh')" \
  "tiny's init.conf"

cat >"$TEST_TMPDIR/my-init" <<'INIT'
#!/bin/sh
echo "MY-INIT ran as $0 with $(ls -a /.imagefs 2>&1 | tr '\n' ' ')"
/sbin/poweroff -f
INIT
build tiny "$TEST_TMPDIR/custom.gz" --init "$TEST_TMPDIR/my-init"
run_boot "$TEST_TMPDIR/custom.gz"
assert_contains "$(cat "$BOOT_LOG")" "MY-INIT ran as /init with ls: /.imagefs: No such file or directory" "--init FILE"
assert_eq "" "$EXIT_LINE$ERRORS" "--init FILE: the default init's lines"
log "  --init FILE: ok"

gcc -static -O2 -s -o "$TEST_TMPDIR/agent" "$IMAGEFS_SOURCE_DIR/scripts/fixtures_lib/showargs.c"
build tiny "$TEST_TMPDIR/agent.gz" --inject "$TEST_TMPDIR/agent:/opt/agent/agent" \
  --exec '["/opt/agent/agent", "--listen", "vsock:1024"]'
run_boot "$TEST_TMPDIR/agent.gz"
expect "--exec of an injected agent" "argc=3
argv[0]=/opt/agent/agent
argv[1]=--listen
argv[2]=vsock:1024
env=HOME=/root
env=HOSTNAME=tiny
env=PATH=$PATH_DEFAULT
cwd=/
uid=0 gid=0 groups=
ppid=1" "command exited with status 0"
# The default /init is a program of this machine: an image of another architecture gets a warning.
out=$(imagefs build --cache-dir "$CACHE" --platform linux/arm64 "$IMAGEFS_REGISTRY/multiarch" \
  -o "$TEST_TMPDIR/arm64.gz" 2>&1) || fail "building the arm64 image failed: $out"
assert_contains "$out" "is for linux/arm64/v8, but imagefs' default /init is built for linux/amd64" \
  "the warning for an arm64 image"
out=$(imagefs build --cache-dir "$CACHE" "$IMAGEFS_REGISTRY/multiarch" -o "$TEST_TMPDIR/amd64.gz" 2>&1) ||
  fail "building the amd64 image failed: $out"
assert_not_contains "$out" "warning" "building an amd64 image"
log "  another architecture: warned"
log "pass"
