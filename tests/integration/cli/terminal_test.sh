#!/usr/bin/env bash
# imagefs on a terminal (issue 16). Commands run on a pseudo-terminal (ptyterm.py), and the screen
# they leave is read back with its terminal emulator, as a person would see it:
#  - `pull` of two images through a slowed registry: every result line ("REF DIGEST PLATFORM")
#    and every finished layer line is on the screen exactly once, and no progress line is left;
#  - a second `pull` of an image another pull is downloading says it waits for it, shows that
#    download's progress, and ends with the layers "already present";
#  - `build` says what it does ("compressing N segments", "writing" for --format none), counts
#    "1 segment" in the singular and never says "downloading".
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo jq python3

"$FIXTURES" build --out "$FIXTURES_OUT" tiny edge >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
push_fixtures tiny edge
PTY=(python3 "$IMAGEFS_SOURCE_DIR/tests/integration/cli/ptyterm.py" --cols 120 --rows 24)

# Blob bodies at 300 KB/s: each layer of tiny takes a few seconds, drawn many times meanwhile.
start_faultproxy --target "$IMAGEFS_REGISTRY" --path '/blobs/' --rate 300000
P=$FAULTPROXY

manifest_of() { jq -c . "$FIXTURES_OUT/oci/$1/blobs/sha256/$(fixture_manifest_digest "$1" | cut -d: -f2)"; }
# count_lines TEXT REGEX: lines of TEXT matching REGEX (grep -E).
count_lines() { grep -cE -- "$2" <<<"$1" || true; }
show() { printf '%s\n' "$1" | sed 's/^/    | /' >&2; }

# --- pull: results stay on screen ----------------------------------------------------------------
rc=0
screen=$("${PTY[@]}" --raw "$TEST_TMPDIR/pull.raw" -- "$IMAGEFS_BIN" pull --cache-dir "$CACHE" \
  "$P/tiny" "$P/edge") || rc=$?
[ "$rc" = 0 ] || { show "$screen"; fail "pull on a terminal exited $rc"; }
# The test means something only if progress was drawn and erased while layers came in.
grep -qaE "[0-9.]+ [KM]iB / [0-9.]+ [KM]iB" "$TEST_TMPDIR/pull.raw" || fail "no progress was drawn on the terminal"
grep -qaE $'\033\\[[0-9]*[AF]' "$TEST_TMPDIR/pull.raw" || fail "the progress area was never redrawn"
for image in tiny edge; do
  digest=$(fixture_manifest_digest "$image")
  n=$(count_lines "$screen" "^$P/$image:latest $digest linux/amd64\$")
  [ "$n" = 1 ] || { show "$screen"; fail "$image's result line is on the screen $n times, not once"; }
  layers=$(manifest_of "$image" | jq '.layers | length')
  for ((i = 1; i <= layers; i++)); do
    layer=$(manifest_of "$image" | jq -r ".layers[$((i - 1))].digest" | cut -c1-19)
    n=$(count_lines "$screen" "^$P/$image:latest layer $i/$layers $layer: (done|already present)")
    [ "$n" = 1 ] || { show "$screen"; fail "$image layer $i is on the screen $n times, not once"; }
  done
done
n=$(count_lines "$screen" "downloading")
[ "$n" = 0 ] || { show "$screen"; fail "progress lines were left on the screen"; }
# Results come after their own layers and before the next image's.
tiny_result=$(grep -nE "^$P/tiny:latest sha256:" <<<"$screen" | cut -d: -f1)
edge_first=$(grep -nE "^$P/edge:latest layer " <<<"$screen" | head -1 | cut -d: -f1)
[ "$tiny_result" -lt "$edge_first" ] || { show "$screen"; fail "tiny's result is not above edge's layers"; }

# --- a second pull of an image being pulled waits, and says so ---------------------------------
second_cache=$TEST_TMPDIR/cache2
big_layer=$(manifest_of tiny | jq -r '.layers | max_by(.size) | .digest' | cut -d: -f2)
# wait_for_download: until the first pull holds tiny's big layer (its partial file is there).
wait_for_download() {
  for ((i = 0; i < 600; i++)); do
    compgen -G "$second_cache/tmp/$big_layer*" >/dev/null && return 0
    kill -0 "$first" 2>/dev/null || break
    sleep 0.05
  done
  fail "the first pull did not start downloading tiny's layer: $(cat "$TEST_TMPDIR/first.err")"
}
"$IMAGEFS_BIN" pull --cache-dir "$second_cache" "$P/tiny" >"$TEST_TMPDIR/first.out" \
  2>"$TEST_TMPDIR/first.err" &
first=$!
on_exit _lib_kill "$first"
wait_for_download
rc=0
screen=$("${PTY[@]}" --raw "$TEST_TMPDIR/second.raw" -- "$IMAGEFS_BIN" pull \
  --cache-dir "$second_cache" "$P/tiny") || rc=$?
wait "$first" || fail "the first pull failed: $(cat "$TEST_TMPDIR/first.err")"
[ "$rc" = 0 ] || { show "$screen"; fail "the second pull exited $rc"; }
# While it waited it showed the other download's bytes growing (a rate needs two samples).
grep -qaE "waiting for another download [0-9.]+ [KM]iB / [0-9.]+ [KM]iB  [0-9.]+ [KM]?i?B/s" \
  "$TEST_TMPDIR/second.raw" || {
  show "$("${PTY[@]}" --replay "$TEST_TMPDIR/second.raw")"
  fail "the second pull did not show the first's progress while it waited"
}
n=$(count_lines "$screen" "^$P/tiny:latest layer [12]/2 sha256:[0-9a-f]{12}: already present: another process downloaded it\$")
[ "$n" -ge 1 ] || { show "$screen"; fail "no layer says another process downloaded it"; }
n=$(count_lines "$screen" "^$P/tiny:latest $(fixture_manifest_digest tiny) linux/amd64\$")
[ "$n" = 1 ] || { show "$screen"; fail "the second pull's result is on the screen $n times"; }
n=$(count_lines "$screen" "waiting for")
[ "$n" = 0 ] || { show "$screen"; fail "a waiting line was left on the screen"; }
assert_eq "1" "$(grep -c "^$P/tiny:latest sha256:" "$TEST_TMPDIR/first.out")" "the first pull's result"
# Off a terminal the wait is one line.
"$IMAGEFS_BIN" rm --cache-dir "$second_cache" "$P/tiny" >/dev/null
"$IMAGEFS_BIN" pull --cache-dir "$second_cache" "$P/tiny" >/dev/null 2>"$TEST_TMPDIR/first.err" &
first=$!
on_exit _lib_kill "$first"
wait_for_download
out=$("$IMAGEFS_BIN" pull --cache-dir "$second_cache" "$P/tiny" 2>&1) || fail "second pull: $out"
wait "$first" || fail "the first pull failed"
assert_contains "$out" ": waiting for another download "
assert_contains "$out" ": already present: another process downloaded it"
assert_not_contains "$out" $'\033' "no escape sequences off a terminal"

# --- build's words ------------------------------------------------------------------------------
for format in gz none; do
  rc=0
  screen=$("${PTY[@]}" --raw "$TEST_TMPDIR/build-$format.raw" -- "$IMAGEFS_BIN" build \
    --cache-dir "$CACHE" "$P/tiny" --format "$format" -o "$TEST_TMPDIR/tiny.$format") || rc=$?
  [ "$rc" = 0 ] || { show "$screen"; fail "build --format $format exited $rc"; }
  out=$("$IMAGEFS_BIN" build --cache-dir "$CACHE" "$P/tiny" --format "$format" --inject \
    "$IMAGEFS_BIN:/x" -o "$TEST_TMPDIR/tiny2.$format" 2>&1) || fail "build: $out"
  for text in "$screen" "$out"; do
    assert_not_contains "$text" "downloading" "build --format $format downloads nothing"
    assert_not_contains "$text" " 1 segments" "singular"
    if [ "$format" = none ]; then
      assert_not_contains "$text" "compress" "--format none compresses nothing"
      grep -qE "^tiny2?\.none: writing [0-9]+ segments?$|^tiny2?\.none: done " <<<"$text" ||
        { show "$text"; fail "build --format none does not say it writes segments"; }
    else
      grep -qE "^tiny2?\.gz: (compressing [0-9]+ segments?|done .*)$" <<<"$text" ||
        { show "$text"; fail "build does not say it compresses segments"; }
    fi
    grep -qE "^wrote .*tiny2?\.$format: .* \([0-9]+ segments?: " <<<"$text" || { show "$text"; fail "no wrote line"; }
  done
  # Off a terminal: one line as it starts, one as it ends.
  assert_contains "$out" "tiny2.$format: $([ "$format" = none ] && echo writing || echo compressing) 1 segment"
done
log "pass"
