#!/usr/bin/env bash
# Mirrors (issue 14) with a real pull-through cache: Debian's docker-registry in proxy mode in
# front of an upstream registry that takes Bearer tokens only. Three stores pull through the
# mirror one after another and the upstream serves no blob after the mirror's first miss; each
# host gets only its own credentials; build and export through the mirror; a mirror serving a
# corrupted layer costs a retry at the upstream and stores nothing bad; the mirror stopped,
# pulls go to the upstream; a mirror over https with its own CA that requires a client
# certificate, configured in hosts.toml; a bad hosts.toml named with its key.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mirror/mirror_lib.sh"
require_cmd docker-registry skopeo jq curl python3 openssl htpasswd

IMAGEFS_BIN=${IMAGEFS_BIN:-$IMAGEFS_SOURCE_DIR/build/imagefs}
[ -x "$IMAGEFS_BIN" ] || fail "imagefs binary not found at $IMAGEFS_BIN"
imagefs() { "$IMAGEFS_BIN" "$@"; }
# A pull whose messages (stderr: "via HOST", retries) are part of its output.
pull() { "$IMAGEFS_BIN" pull "$@" 2>&1; }
# No hosts.toml of the machine's own reaches the test.
NO_HOSTS=$(new_tmpdir no-hosts)

# --- the upstream: token auth, no anonymous pulls; an image with a 300 KB layer ---------------
start_registry token --anonymous none
UP=$IMAGEFS_REGISTRY UP_LOG=$IMAGEFS_REGISTRY_LOG UP_TOKEN_LOG=$IMAGEFS_TOKEN_LOG
UP_USER=$IMAGEFS_REGISTRY_USER UP_PASS=$IMAGEFS_REGISTRY_PASSWORD
head -c 300000 /dev/urandom >"$TEST_TMPDIR/payload"
layout=$TEST_TMPDIR/layout
manifest=$(make_oci_layout "$layout" "$TEST_TMPDIR/payload")
layer=$(jq -r '.layers[0].digest' "$layout/blobs/sha256/${manifest#sha256:}")
config=$(jq -r '.config.digest' "$layout/blobs/sha256/${manifest#sha256:}")
skopeo copy --quiet --dest-tls-verify=false --dest-creds "$UP_USER:$UP_PASS" \
  "oci:$layout:latest" "docker://$UP/app:1.0" >/dev/null 2>"$TEST_TMPDIR/push.log" ||
  fail "push failed: $(cat "$TEST_TMPDIR/push.log")"
REF=$UP/app:1.0

# --- the mirror: a pull-through cache with its own Basic credentials --------------------------
MIRROR_USER=mirror-reader MIRROR_PASS=mirror-$(openssl rand -hex 6)
start_mirror "http://$UP" --upstream-user "$UP_USER" --upstream-password "$UP_PASS" \
  --htpasswd "$MIRROR_USER:$MIRROR_PASS" --htpasswd "$UP_USER:$UP_PASS"
up_auth=$(printf '%s:%s' "$UP_USER" "$UP_PASS" | base64 -w0)
mirror_auth=$(printf '%s:%s' "$MIRROR_USER" "$MIRROR_PASS" | base64 -w0)
cat >"$DOCKER_CONFIG/config.json" <<EOF
{"auths": {"$UP": {"auth": "$up_auth"}, "$MIRROR": {"auth": "$mirror_auth"}}}
EOF

# The store holds exactly the pushed blobs, each hashing to its name.
assert_store_good() {
  local cache=$1 d
  for d in "$manifest" "$config" "$layer"; do
    local f=$cache/blobs/sha256/${d#sha256:}
    [ -f "$f" ] || fail "$d missing from $cache"
    assert_eq "${d#sha256:}" "$(sha256sum "$f" | cut -d' ' -f1)" "blob $d in $cache"
  done
}

# --- three stores through the mirror, one after another: the upstream serves each blob once ---
log "three stores through the mirror"
# (the push itself may have read blobs back: counted from here)
layer_before=$(blob_gets "$UP_LOG" "$layer") config_before=$(blob_gets "$UP_LOG" "$config")
for i in 1 2 3; do
  out=$(assert_ok pull --hosts-dir "$NO_HOSTS" --cache-dir "$TEST_TMPDIR/cache$i" \
    --mirror "$UP=http://$MIRROR" "$REF")
  assert_contains "$out" "$REF $manifest"
  assert_contains "$out" "via $MIRROR" "pull $i names the mirror"
  assert_store_good "$TEST_TMPDIR/cache$i"
  if [ "$i" = 1 ]; then
    # distribution 2.8's proxy reads a blob it lacks from the upstream twice on its first miss
    # (one stream to the client, one into its storage); never again afterwards.
    layer_first=$(blob_gets "$UP_LOG" "$layer") config_first=$(blob_gets "$UP_LOG" "$config")
    ((layer_first > layer_before && layer_first <= layer_before + 2)) ||
      fail "the first pull cost $((layer_first - layer_before)) upstream reads of the layer"
    ((config_first > config_before && config_first <= config_before + 2)) ||
      fail "the first pull cost $((config_first - config_before)) upstream reads of the config"
  fi
done
assert_eq "$layer_first" "$(blob_gets "$UP_LOG" "$layer")" "stores 2 and 3 cost the upstream no layer read"
assert_eq "$config_first" "$(blob_gets "$UP_LOG" "$config")" "stores 2 and 3 cost the upstream no config read"
assert_eq 3 "$(blob_gets "$MIRROR_LOG" "$layer")" "the mirror served the layer three times"

# --- credentials: each host gets its own, never the other's -----------------------------------
log "credentials per host"
# The mirror's htpasswd also accepts the upstream's user and password, and the upstream's token
# service logs every user that asks (user=NAME, refused or not): so a credential sent to the
# wrong host would show. The mirror saw our requests as its own user only; the upstream never
# saw the mirror's user.
grep -q "auth.user.name=$MIRROR_USER " "$MIRROR_LOG" ||
  fail "the mirror's log shows no request authenticated as $MIRROR_USER"
if grep -q "auth.user.name=$UP_USER " "$MIRROR_LOG"; then fail "the upstream's credentials reached the mirror"; fi
grep -q "user=$UP_USER " "$UP_TOKEN_LOG" || fail "the upstream's token service saw no request as $UP_USER"
if grep -q "$MIRROR_USER" "$UP_TOKEN_LOG" "$UP_LOG"; then fail "the mirror's user reached the upstream"; fi
# A mirror that refuses our credentials (wrong password) costs a fallback, not the pull, and
# the upstream still gets only its own user.
cat >"$DOCKER_CONFIG/config.json" <<EOF
{"auths": {"$UP": {"auth": "$up_auth"}, "$MIRROR": {"auth": "$(printf '%s:wrong' "$MIRROR_USER" | base64 -w0)"}}}
EOF
out=$(assert_ok pull --hosts-dir "$NO_HOSTS" --cache-dir "$TEST_TMPDIR/cache-refused" \
  --mirror "$UP=http://$MIRROR" "$REF")
assert_contains "$out" "$REF $manifest"
assert_not_contains "$out" "via $MIRROR"
assert_store_good "$TEST_TMPDIR/cache-refused"
if grep -q "$MIRROR_USER" "$UP_TOKEN_LOG" "$UP_LOG"; then fail "the mirror's user reached the upstream"; fi
cat >"$DOCKER_CONFIG/config.json" <<EOF
{"auths": {"$UP": {"auth": "$up_auth"}, "$MIRROR": {"auth": "$mirror_auth"}}}
EOF
upstream_layer_gets=$(blob_gets "$UP_LOG" "$layer")

# --- build and export honour --mirror too ---------------------------------------------------
log "build and export through the mirror"
layer_now=$(blob_gets "$UP_LOG" "$layer")
out=$(assert_ok bash -c '"$0" build --hosts-dir "$1" --cache-dir "$2" --mirror "$3" "$4" -o "$5" 2>&1' \
  "$IMAGEFS_BIN" "$NO_HOSTS" "$TEST_TMPDIR/cache-build" "$UP=http://$MIRROR" "$REF" "$TEST_TMPDIR/out.cpio.gz")
assert_contains "$out" "via $MIRROR" "build names the mirror"
gzip -t "$TEST_TMPDIR/out.cpio.gz" || fail "build's archive is not valid gzip"
out=$(assert_ok bash -c '"$0" export --hosts-dir "$1" --cache-dir "$2" --mirror "$3" "$4" "$5" 2>&1' \
  "$IMAGEFS_BIN" "$NO_HOSTS" "$TEST_TMPDIR/cache-export" "$UP=http://$MIRROR" "$REF" "$TEST_TMPDIR/exported")
assert_contains "$out" "via $MIRROR" "export names the mirror"
cmp -s "$TEST_TMPDIR/payload" "$TEST_TMPDIR/exported/payload" || fail "export's payload differs from the pushed one"
assert_eq "$layer_now" "$(blob_gets "$UP_LOG" "$layer")" "build and export cost the upstream no layer read"

# --- a corrupted layer from the mirror: a retry at the upstream, nothing bad stored -----------
log "corrupted layer from the mirror"
start_faultproxy --target "$MIRROR" --path "/blobs/$layer" --corrupt
cat >"$DOCKER_CONFIG/config.json" <<EOF
{"auths": {"$UP": {"auth": "$up_auth"}, "$FAULTPROXY": {"auth": "$mirror_auth"}}}
EOF
out=$(assert_ok pull --hosts-dir "$NO_HOSTS" --cache-dir "$TEST_TMPDIR/cache-corrupt" \
  --mirror "$UP=http://$FAULTPROXY" "$REF")
assert_contains "$out" "$REF $manifest"
assert_contains "$out" "digest mismatch" "the bad bytes are reported"
assert_store_good "$TEST_TMPDIR/cache-corrupt"
[ -z "$(ls -A "$TEST_TMPDIR/cache-corrupt/tmp" 2>/dev/null)" ] || fail "a partial file was left: $(ls "$TEST_TMPDIR/cache-corrupt/tmp")"
assert_eq $((upstream_layer_gets + 1)) "$(blob_gets "$UP_LOG" "$layer")" "the upstream served the layer after the mirror's bad bytes"
_lib_kill "$FAULTPROXY_PID"

# --- the mirror stopped: pulls go to the upstream ---------------------------------------------
log "mirror stopped"
stop_mirror
out=$(assert_ok pull --hosts-dir "$NO_HOSTS" --cache-dir "$TEST_TMPDIR/cache-down" \
  --mirror "$UP=http://$MIRROR" "$REF")
assert_contains "$out" "$REF $manifest"
assert_not_contains "$out" "via $MIRROR"
assert_store_good "$TEST_TMPDIR/cache-down"
assert_eq $((upstream_layer_gets + 2)) "$(blob_gets "$UP_LOG" "$layer")" "the upstream served the layer"

# --- https mirror with its own CA and a client certificate, from hosts.toml -------------------
log "https mirror with a client certificate"
tls=$TEST_TMPDIR/tls
make_tls_ca "$tls"
start_mirror "http://$UP" --upstream-user "$UP_USER" --upstream-password "$UP_PASS" --tls "$tls"
hosts=$(new_tmpdir certs.d)
mkdir -p "$hosts/$UP"
cp "$tls/ca.pem" "$tls/client.pem" "$tls/client.key" "$hosts/$UP/"
cat >"$hosts/$UP/hosts.toml" <<EOF
server = "http://$UP"

[host."https://$MIRROR"]
  capabilities = ["pull", "resolve"]
  ca = "ca.pem"
  client = [["client.pem", "client.key"]]
EOF
out=$(assert_ok pull --hosts-dir "$hosts" --cache-dir "$TEST_TMPDIR/cache-tls" "$REF")
assert_contains "$out" "$REF $manifest"
assert_contains "$out" "via $MIRROR" "the TLS mirror served the pull"
assert_store_good "$TEST_TMPDIR/cache-tls"
# Without the client certificate the mirror refuses the handshake: the upstream serves.
cat >"$hosts/$UP/hosts.toml" <<EOF
[host."https://$MIRROR"]
  ca = "ca.pem"
EOF
out=$(assert_ok pull --hosts-dir "$hosts" --cache-dir "$TEST_TMPDIR/cache-nocert" "$REF")
assert_contains "$out" "$REF $manifest"
assert_not_contains "$out" "via $MIRROR"
assert_contains "$out" "$MIRROR failed" "the refused mirror is named"
# A bad hosts.toml is an error naming the file and the key.
printf '[host."https://%s"]\n  capabilities = ["pull", "fetch"]\n' "$MIRROR" >"$hosts/$UP/hosts.toml"
out=$(assert_fails imagefs pull --hosts-dir "$hosts" --cache-dir "$TEST_TMPDIR/cache-bad" "$REF")
assert_contains "$out" "$hosts/$UP/hosts.toml"
assert_contains "$out" "capabilities"
assert_contains "$out" "\"fetch\""
log "ok"
