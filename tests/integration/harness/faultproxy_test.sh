#!/usr/bin/env bash
# Shows that tests/harness/faultproxy.py injects the faults it promises (cut bodies, delays,
# error statuses, black holes, drips, endless bodies, its own exit) in front of a real open registry, and otherwise passes traffic
# through untouched, including keep-alive connections and skopeo's uploads.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
require_cmd docker-registry skopeo curl python3 jq sha256sum

proxy=$IMAGEFS_SOURCE_DIR/tests/harness/faultproxy.py
start_registry open
reg=$IMAGEFS_REGISTRY_URL

# A 4 MiB blob, uploaded in one PUT.
blob=$TEST_TMPDIR/blob
head -c $((4 << 20)) /dev/urandom >"$blob"
digest=sha256:$(sha256sum "$blob" | cut -d' ' -f1)
location=$(curl -sf -o /dev/null -D - -X POST "$reg/v2/fault/blob/blobs/uploads/" |
  tr -d '\r' | sed -n 's/^Location: //Ip')
[ -n "$location" ] || fail "no upload location"
assert_eq 201 "$(http_status -X PUT -H 'Content-Type: application/octet-stream' \
  --data-binary @"$blob" "$location&digest=$digest")"
path=/v2/fault/blob/blobs/$digest

# --- loopback only ------------------------------------------------------------------------------
assert_fails python3 "$proxy" --target 192.0.2.1:80 --lifetime 1 >/dev/null
assert_fails python3 "$proxy" --target "$IMAGEFS_REGISTRY" --listen 0.0.0.0:0 --lifetime 1 >/dev/null

# --- --drop-after cuts the first body short; a Range resume gets the rest -----------------------
log "drop"
start_faultproxy --target "$IMAGEFS_REGISTRY" --path '/blobs/sha256:' --drop-after 1000000 --drop-count 1
rc=0
got=$(curl -s -o "$TEST_TMPDIR/part" -w '%{http_code} %{size_download}' "http://$FAULTPROXY$path") || rc=$?
assert_eq 18 "$rc" "curl exit status (18: partial file)"
assert_eq "200 1000000" "$got"
got=$(curl -s -o "$TEST_TMPDIR/rest" -w '%{http_code}' -H "Range: bytes=1000000-" "http://$FAULTPROXY$path")
assert_eq 206 "$got"
assert_eq "$digest" "sha256:$(cat "$TEST_TMPDIR/part" "$TEST_TMPDIR/rest" | sha256sum | cut -d' ' -f1)" \
  "digest of the cut body plus the resumed rest"
got=$(curl -s -o "$TEST_TMPDIR/full" -w '%{http_code}' "http://$FAULTPROXY$path")
assert_eq 200 "$got"
assert_eq "$digest" "sha256:$(sha256sum "$TEST_TMPDIR/full" | cut -d' ' -f1)"
# Requests the --path does not match pass, and one connection carries several requests.
got=$(curl -s -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
  "http://$FAULTPROXY/v2/" "http://$FAULTPROXY$path")
assert_eq "200 1,200 0" "$(paste -sd, <<<"$got")" "status and new connections per request"
assert_contains "$(cat "$FAULTPROXY_LOG")" "dropped after 1000000 body bytes"

# --- --delay-ms delays the first --delay-count requests ----------------------------------------
log "delay"
start_faultproxy --target "$IMAGEFS_REGISTRY" --delay-ms 1500 --delay-count 1
slow=$(curl -s -o /dev/null -w '%{time_total}' "http://$FAULTPROXY/v2/")
fast=$(curl -s -o /dev/null -w '%{time_total}' "http://$FAULTPROXY/v2/")
python3 -c "import sys; s, f = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (s >= 1.5 and f < 1.0))" \
  "$slow" "$fast" || fail "delayed request took ${slow}s, the next ${fast}s"

# --- --status answers K requests (on one keep-alive connection), then passes -------------------
log "status"
start_faultproxy --target "$IMAGEFS_REGISTRY" --status 503 --status-count 2
got=$(curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
  "http://$FAULTPROXY/v2/" "http://$FAULTPROXY/v2/" "http://$FAULTPROXY/v2/")
assert_eq "503 1,503 0,200 0" "$(paste -sd, <<<"$got")"
start_faultproxy --target "$IMAGEFS_REGISTRY" --status 429 --status-count 1 --retry-after 2
h=$(curl -s -D - -o /dev/null "http://$FAULTPROXY/v2/" | tr -d '\r')
assert_contains "$h" "HTTP/1.1 429"
assert_contains "$h" "Retry-After: 2"
assert_eq 200 "$(http_status "http://$FAULTPROXY/v2/")"
# A request with a body gets the injected status too, and the retry goes through.
start_faultproxy --target "$IMAGEFS_REGISTRY" --status 503 --status-count 1 --path '/blobs/uploads/'
got=$(curl -s -o /dev/null -o /dev/null -w '%{http_code}\n' -X POST -d x \
  "http://$FAULTPROXY/v2/fault/other/blobs/uploads/" "http://$FAULTPROXY/v2/fault/other/blobs/uploads/")
assert_eq "503,202" "$(paste -sd, <<<"$got")"
# curl sends a 4 MiB PUT with "Expect: 100-continue": refused once without the body, then
# forwarded whole. (Without Content-Type: application/octet-stream, curl's default form type
# makes the registry parse the body as a form, and the digest check fails.)
start_faultproxy --target "$IMAGEFS_REGISTRY" --status 503 --status-count 1 --path '_state='
location=$(curl -sf -o /dev/null -D - -X POST "http://$FAULTPROXY/v2/fault/copy/blobs/uploads/" |
  tr -d '\r' | sed -n 's/^Location: //Ip')
got=$(for i in 1 2; do
  http_status -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$blob" "$location&digest=$digest"
  echo
done)
assert_eq "503,201" "$(paste -sd, <<<"$got")" "blob PUT through the proxy"

# --- --blackhole reads the request and never answers; --blackhole-count and --path limit it ----
log "blackhole"
start_faultproxy --target "$IMAGEFS_REGISTRY" --blackhole --blackhole-count 1 --path '^/v2/$'
rc=0
got=$(curl -s -o /dev/null -w '%{http_code} %{size_header}' --max-time 2 "http://$FAULTPROXY/v2/") || rc=$?
assert_eq 28 "$rc" "curl exit status against the black hole (28: timed out)"
assert_eq "000 0" "$got" "status and header bytes from the black hole"
# The proxy held the connection until the client left, and logged both ends.
for ((i = 0; i < 30; i++)); do
  grep -q "the client left" "$FAULTPROXY_LOG" && break
  sleep 0.1
done
assert_contains "$(cat "$FAULTPROXY_LOG")" "GET /v2/ -> black hole (never answered)"
assert_contains "$(cat "$FAULTPROXY_LOG")" "black hole: the client left after"
# Not matched by --path: answered; matched again after the count: answered.
assert_eq 404 "$(http_status --max-time 5 "http://$FAULTPROXY/v2/fault/none/manifests/x")"
assert_eq 200 "$(http_status --max-time 5 "http://$FAULTPROXY/v2/")"
assert_eq 1 "$(grep -c 'black hole (never answered)' "$FAULTPROXY_LOG")" "black-holed requests"

# --- --drip sends head and body a byte at a time at N B/s ---------------------------------------
log "drip"
full=$(curl -s -D - "http://$IMAGEFS_REGISTRY/v2/" | wc -c) # head and body, straight
start_faultproxy --target "$IMAGEFS_REGISTRY" --drip 100 --drip-count 1 --path '^/v2/$'
# Within 1 s, only part of the head has arrived: curl times out without a complete answer.
rc=0
curl -s -D "$TEST_TMPDIR/dhead" -o /dev/null --max-time 1 "http://$FAULTPROXY/v2/" || rc=$?
assert_eq 28 "$rc" "curl exit status against a drip (28: timed out)"
got=$(wc -c <"$TEST_TMPDIR/dhead")
((got < full - 10)) || fail "dripping at 100 B/s, $got of $full head bytes arrived within 1 s"
assert_contains "$(cat "$FAULTPROXY_LOG")" "dripping the answer at 100 B/s"
# The count is used up: the next request is fast. A dripped answer arrives whole, slowly.
fast=$(curl -s -o /dev/null -w '%{time_total}' "http://$FAULTPROXY/v2/")
start_faultproxy --target "$IMAGEFS_REGISTRY" --drip 200 --path '^/v2/$'
out=$(curl -s -w ' %{http_code} %{time_total}' "http://$FAULTPROXY/v2/")
read -r body code slow <<<"$out"
assert_eq "{} 200" "$body $code" "body and status of a dripped answer"
python3 -c "import sys; s, f, n = map(float, sys.argv[1:]); sys.exit(not (s >= 0.8 * n / 200 and f < 0.5))" \
  "$slow" "$fast" "$full" || fail "a dripped answer of $full bytes took ${slow}s at 200 B/s, a plain one ${fast}s"
assert_eq 200 "$(http_status --max-time 5 "http://$FAULTPROXY/v2/_catalog")" "--path limits the drip"
assert_fails python3 "$proxy" --target "$IMAGEFS_REGISTRY" --drip 0 --lifetime 1 >/dev/null

# --- --endless: the body chunked, then bytes without end ----------------------------------------
log "endless"
start_faultproxy --target "$IMAGEFS_REGISTRY" --endless --endless-count 1 --path '/blobs/sha256:'
# A client reads 8 MiB (twice the blob), then leaves.
curl -s -o "$TEST_TMPDIR/endless" --max-time 20 "http://$FAULTPROXY$path" 2>/dev/null &
curl_pid=$!
for ((i = 0; i < 200; i++)); do
  n=$(stat -c %s "$TEST_TMPDIR/endless" 2>/dev/null || echo 0)
  ((n > (8 << 20))) && break
  sleep 0.1
done
kill "$curl_pid" 2>/dev/null || true
wait "$curl_pid" 2>/dev/null || true
n=$(stat -c %s "$TEST_TMPDIR/endless")
((n > (8 << 20))) || fail "an endless body stopped at $n bytes"
assert_eq "$digest" "sha256:$(head -c $((4 << 20)) "$TEST_TMPDIR/endless" | sha256sum | cut -d' ' -f1)" \
  "the blob comes first"
for ((i = 0; i < 50; i++)); do
  grep -q "endless: the client left" "$FAULTPROXY_LOG" && break
  sleep 0.1
done
assert_contains "$(cat "$FAULTPROXY_LOG")" "now sending bytes without end"
assert_contains "$(cat "$FAULTPROXY_LOG")" "endless: the client left after"
# The count is used up: the next answer is the blob, with its Content-Length.
h=$(curl -s -D - -o "$TEST_TMPDIR/full" "http://$FAULTPROXY$path" | tr -d '\r')
assert_contains "$h" "Content-Length: $((4 << 20))"
assert_eq "$digest" "sha256:$(sha256sum "$TEST_TMPDIR/full" | cut -d' ' -f1)"
# --endless-bytes ends it; the head says chunked, with no Content-Length.
start_faultproxy --target "$IMAGEFS_REGISTRY" --endless --endless-bytes 100000 --path '/blobs/sha256:'
h=$(curl -s -D - -o "$TEST_TMPDIR/bounded" --max-time 20 "http://$FAULTPROXY$path" | tr -d '\r') || true
assert_contains "$h" "Transfer-Encoding: chunked"
if grep -qi '^Content-Length:' <<<"$h"; then fail "an endless answer has a Content-Length: $h"; fi
n=$(stat -c %s "$TEST_TMPDIR/bounded")
((n >= (4 << 20) + 100000 && n < (4 << 20) + 100000 + 65536)) ||
  fail "--endless-bytes 100000 sent $n bytes after a $((4 << 20))-byte blob"
# Answers other than 2xx pass as they are.
assert_eq 404 "$(http_status --max-time 5 "http://$FAULTPROXY/v2/fault/blob/blobs/sha256:$(printf 0%.0s {1..64})")"

# --- --corrupt: same length, every bit flipped -------------------------------------------------
log "corrupt"
start_faultproxy --target "$IMAGEFS_REGISTRY" --corrupt --corrupt-count 1 --path '/blobs/sha256:'
h=$(curl -s -D - -o "$TEST_TMPDIR/corrupt" --max-time 20 "http://$FAULTPROXY$path" | tr -d '\r')
assert_contains "$h" "Content-Length: $((4 << 20))"
assert_eq $((4 << 20)) "$(stat -c %s "$TEST_TMPDIR/corrupt")" "length of a corrupted blob"
# Flipped back, the bytes are the blob's.
assert_eq "$digest" "sha256:$(python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(bytes(b ^ 255 for b in d))' "$TEST_TMPDIR/corrupt" | sha256sum | cut -d' ' -f1)" \
  "a corrupted blob flipped back"
assert_contains "$(cat "$FAULTPROXY_LOG")" "(body corrupted)"
# The count is used up: the next answer is the blob.
curl -s -o "$TEST_TMPDIR/whole" --max-time 20 "http://$FAULTPROXY$path"
assert_eq "$digest" "sha256:$(sha256sum "$TEST_TMPDIR/whole" | cut -d' ' -f1)" "after --corrupt-count"

# --- without faults, skopeo pushes and inspects through the proxy ------------------------------
log "passthrough"
layout=$(new_tmpdir layout)
idigest=$(make_oci_layout "$layout" "$blob")
start_faultproxy --target "$IMAGEFS_REGISTRY"
assert_ok skopeo copy --dest-tls-verify=false "oci:$layout:latest" "docker://$FAULTPROXY/fault/image:1" >/dev/null
out=$(assert_ok skopeo inspect --tls-verify=false "docker://$FAULTPROXY/fault/image:1")
assert_eq "$idigest" "$(jq -r .Digest <<<"$out")"

# --- --lifetime: the proxy exits by itself ------------------------------------------------------
log "lifetime"
start_faultproxy --target "$IMAGEFS_REGISTRY" --lifetime 1
for ((i = 0; i < 50; i++)); do
  kill -0 "$FAULTPROXY_PID" 2>/dev/null || break
  sleep 0.1
done
rc=0
wait "$FAULTPROXY_PID" || rc=$?
assert_eq 0 "$rc" "faultproxy exit status after --lifetime"
assert_eq 000 "$(http_status --max-time 2 "http://$FAULTPROXY/v2/")" "nothing listens after the lifetime"
