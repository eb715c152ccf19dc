#!/usr/bin/env bash
# The manual and the completion come from the tables `imagefs help` prints: build/imagefs.1
# (made at build time by `imagefs help --man`) renders with man(1) without warnings and names
# every command and, in that command's section, every option `imagefs help COMMAND` lists; the
# bash completion (packaging/imagefs.bash) completes commands, options and the references of
# the store, including references whose registry has a port (bash splits words at ':').
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd man python3 docker-registry skopeo jq
export IMAGEFS_CONFIG=""
T=$TEST_TMPDIR
MAN=${IMAGEFS_BUILD_DIR:-$IMAGEFS_SOURCE_DIR/build}/imagefs.1
[ -s "$MAN" ] || fail "no $MAN (the imagefs_man target makes it)"
cmp -s "$MAN" <("$IMAGEFS_BIN" help --man) || fail "$MAN differs from \`imagefs help --man\`"

log "man -l renders it without warnings"
LC_ALL=C MANWIDTH=200 man --warnings -l "$MAN" >"$T/man.txt" 2>"$T/man.err" || fail "man -l failed: $(cat "$T/man.err")"
[ ! -s "$T/man.err" ] || fail "man -l warned: $(cat "$T/man.err")"
col -b <"$T/man.txt" >"$T/man.plain"

log "every command and option of \`imagefs help\` is in the manual, in its command's section"
"$IMAGEFS_BIN" help >"$T/help.txt"
for cmd in $(awk '/Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ && n++ { exit }' "$T/help.txt"); do
  "$IMAGEFS_BIN" help "$cmd" >"$T/help-$cmd.txt"
done
python3 - "$T" <<'PY' || fail "the manual lacks what help says (above)"
import glob, os, re, sys
t = sys.argv[1]
man = open(os.path.join(t, "man.plain")).read()
missing = []
commands = sorted(glob.glob(os.path.join(t, "help-*.txt")))
if len(commands) < 10:
    missing.append(f"only {len(commands)} commands found in `imagefs help`")
for path in commands:
    cmd = path[len(os.path.join(t, "help-")):-4]
    text = open(path).read()
    synopsis = text.splitlines()[0].removeprefix("usage: ")
    start = man.find("\n   " + synopsis + "\n")
    if start < 0:
        missing.append(f"{cmd}: no section headed {synopsis!r}")
        continue
    end = man.find("\n   imagefs ", start + 1)
    section = man[start:end if end > 0 else len(man)]
    for option in re.findall(r"^  (?:-., )?\s*(--[a-z-]+)", text, re.M):
        if not re.search(re.escape(option) + r"(?![a-z-])", section):
            missing.append(f"{cmd}: {option} missing from its section")
for m in missing:
    print("  " + m)
sys.exit(1 if missing else 0)
PY
for topic in "CONFIGURATION FILE" "MOUNTING FROM FSTAB" "EXIT STATUS"; do
  grep -q "^$topic" "$T/man.plain" || fail "no $topic section"
done
assert_contains "$(cat "$T/man.plain")" "$("$IMAGEFS_BIN" help config | head -1)" "help config's text"

log "bash completion"
mkdir -p "$T/bin"
ln -s "$IMAGEFS_BIN" "$T/bin/imagefs"
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny
assert_ok imagefs pull --cache-dir "$T/store" "$REG/tiny" >/dev/null

# complete LINE: what _imagefs offers for the end of LINE, words split as bash splits them
# (COMP_WORDBREAKS: blanks and ':').
complete_line() {
  PATH=$T/bin:$PATH bash -c '
    source "$1"
    COMP_LINE=$2
    COMP_POINT=${#COMP_LINE}
    read -r -a COMP_WORDS <<<"$(sed -E "s/:/ : /g" <<<"$COMP_LINE")"
    [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    _imagefs
    echo "${COMPREPLY[@]}"' _ "$IMAGEFS_SOURCE_DIR/packaging/imagefs.bash" "$1"
}
assert_eq "pull" "$(complete_line "imagefs pu")" "a command"
assert_eq "gc" "$(complete_line "imagefs g")" "a command"
assert_eq "--cache-dir --ca-file" "$(complete_line "imagefs mount --ca")" "options of mount"
assert_eq "--allow-other --allow-registry --allow-registry-file" \
  "$(complete_line "imagefs mount --allow")" "options of mount"
assert_eq "--output" "$(complete_line "imagefs build --out")" "options of build"
assert_eq "" "$(complete_line "imagefs images --allow")" "images has no --allow-other"
assert_eq "config" "$(complete_line "imagefs help conf")" "help topics"
assert_eq "linux/arm64" "$(complete_line "imagefs pull --platform linux/arm6")" "platforms"
out=$(complete_line "imagefs rm --cache-dir $T/store ")
assert_contains "$out" "$REG/tiny:latest" "references of the store"
# "127.0.0.1:PORT/ti": bash gives the words 127.0.0.1 : PORT/ti; the reply is what follows the
# last ':' of the word.
port_part=${REG#*:}
assert_eq "$port_part/tiny:latest" "$(complete_line "imagefs build --cache-dir $T/store ${REG%%:*}:${port_part}/ti")" \
  "a reference with a port"
assert_eq "latest" "$(complete_line "imagefs rm --cache-dir $T/store $REG/tiny:la")" "after the tag's ':'"
