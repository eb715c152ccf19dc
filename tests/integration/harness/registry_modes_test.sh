#!/usr/bin/env bash
# Shows that each mode of scripts/registry (open, basic, token, tls) accepts and rejects what it
# should, using curl and skopeo against the real registry; also that parallel starts don't clash.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
require_cmd docker-registry skopeo curl openssl htpasswd python3 jq

registry=$IMAGEFS_SOURCE_DIR/scripts/registry
layout=$(new_tmpdir layout)
digest=$(make_oci_layout "$layout")
src=oci:$layout:latest
# Registry 2.8 answers 404 for an index unless its type is accepted too: always send all four.
accept=(-H "Accept: application/vnd.oci.image.manifest.v1+json"
  -H "Accept: application/vnd.oci.image.index.v1+json"
  -H "Accept: application/vnd.docker.distribution.manifest.v2+json"
  -H "Accept: application/vnd.docker.distribution.manifest.list.v2+json")

headers() { curl -s -o /dev/null -D - --max-time 20 "$@" | tr -d '\r'; }
jwt_claims() { cut -d. -f2 <<<"$1" | tr '_-' '/+' | python3 -c \
  'import base64,sys; s=sys.stdin.read().strip(); print(base64.b64decode(s + "=" * (-len(s) % 4)).decode())'; }

# --- all five registries start at once, on different ports -------------------------------------
declare -A started
for spec in "open:--mode open" "basic:--mode basic" "token:--mode token" "tls:--mode tls" \
  "ttl:--mode token --token-ttl 3 --anonymous none"; do
  name=${spec%%:*}
  dir=$TEST_TMPDIR/reg-$name
  on_exit "$registry" stop "$dir"
  # shellcheck disable=SC2086
  "$registry" start --dir "$dir" ${spec#*:} >"$dir.out" 2>"$dir.err" &
  started[$name]=$!
done
for name in "${!started[@]}"; do
  wait "${started[$name]}" || { cat "$TEST_TMPDIR/reg-$name.err" >&2; fail "start of $name failed"; }
  assert_eq "$(cat "$TEST_TMPDIR/reg-$name.out")" "$("$registry" env "$TEST_TMPDIR/reg-$name")" \
    "start's stdout and DIR/env"
done
ports=$(for name in "${!started[@]}"; do grep '^IMAGEFS_REGISTRY=' "$TEST_TMPDIR/reg-$name/env"; done)
assert_eq 5 "$(sort -u <<<"$ports" | wc -l)" "distinct registry addresses"

# --- open: anonymous push, inspect and delete --------------------------------------------------
log "open"
load_registry "$TEST_TMPDIR/reg-open"
assert_eq open "$IMAGEFS_REGISTRY_MODE"
assert_contains "$IMAGEFS_REGISTRY" "127.0.0.1:"
assert_eq 200 "$(http_status "$IMAGEFS_REGISTRY_URL/v2/")"
assert_ok skopeo copy --dest-tls-verify=false "$src" "docker://$IMAGEFS_REGISTRY/open/tiny:1" >/dev/null
out=$(assert_ok skopeo inspect --tls-verify=false "docker://$IMAGEFS_REGISTRY/open/tiny:1")
assert_eq "$digest" "$(jq -r .Digest <<<"$out")" "inspected digest"
h=$(headers "${accept[@]}" "$IMAGEFS_REGISTRY_URL/v2/open/tiny/manifests/1")
assert_contains "$h" "Docker-Content-Digest: $digest"
assert_eq 404 "$(http_status "${accept[@]}" "$IMAGEFS_REGISTRY_URL/v2/open/tiny/manifests/nope")"
assert_eq 202 "$(http_status -X DELETE "$IMAGEFS_REGISTRY_URL/v2/open/tiny/manifests/$digest")" \
  "delete is enabled"
assert_eq 404 "$(http_status "${accept[@]}" "$IMAGEFS_REGISTRY_URL/v2/open/tiny/manifests/1")"

# --- basic: htpasswd ----------------------------------------------------------------------------
log "basic"
load_registry "$TEST_TMPDIR/reg-basic"
creds=$IMAGEFS_REGISTRY_USER:$IMAGEFS_REGISTRY_PASSWORD
h=$(headers "$IMAGEFS_REGISTRY_URL/v2/")
assert_contains "$h" "HTTP/1.1 401"
assert_contains "$h" 'Www-Authenticate: Basic realm="imagefs-test"'
assert_eq 401 "$(http_status -u "$IMAGEFS_REGISTRY_USER:wrong" "$IMAGEFS_REGISTRY_URL/v2/")"
assert_eq 200 "$(http_status -u "$creds" "$IMAGEFS_REGISTRY_URL/v2/")"
out=$(assert_fails skopeo copy --dest-tls-verify=false "$src" "docker://$IMAGEFS_REGISTRY/basic/tiny:1")
assert_contains "$out" "authentication required"
assert_fails skopeo copy --dest-tls-verify=false --dest-creds "$IMAGEFS_REGISTRY_USER:wrong" \
  "$src" "docker://$IMAGEFS_REGISTRY/basic/tiny:1" >/dev/null
assert_ok skopeo copy --dest-tls-verify=false --dest-creds "$creds" \
  "$src" "docker://$IMAGEFS_REGISTRY/basic/tiny:1" >/dev/null
out=$(assert_ok skopeo inspect --tls-verify=false --creds "$creds" "docker://$IMAGEFS_REGISTRY/basic/tiny:1")
assert_eq "$digest" "$(jq -r .Digest <<<"$out")"
assert_fails skopeo inspect --tls-verify=false "docker://$IMAGEFS_REGISTRY/basic/tiny:1" >/dev/null

# --- token: Docker-Hub-style Bearer flow --------------------------------------------------------
log "token"
load_registry "$TEST_TMPDIR/reg-token"
creds=$IMAGEFS_REGISTRY_USER:$IMAGEFS_REGISTRY_PASSWORD
realm=$IMAGEFS_TOKEN_REALM svc=$IMAGEFS_TOKEN_SERVICE
h=$(headers "$IMAGEFS_REGISTRY_URL/v2/")
assert_contains "$h" "HTTP/1.1 401"
assert_contains "$h" "Www-Authenticate: Bearer realm=\"$realm\",service=\"$svc\""
for repo in public/tiny private/tiny; do
  assert_ok skopeo copy --dest-tls-verify=false --dest-creds "$creds" \
    "$src" "docker://$IMAGEFS_REGISTRY/$repo:1" >/dev/null
done
out=$(assert_ok skopeo inspect --tls-verify=false "docker://$IMAGEFS_REGISTRY/public/tiny:1")
assert_eq "$digest" "$(jq -r .Digest <<<"$out")" "anonymous pull of a public repository"
assert_fails skopeo copy --dest-tls-verify=false "$src" "docker://$IMAGEFS_REGISTRY/public/anon:1" >/dev/null
assert_fails skopeo inspect --tls-verify=false "docker://$IMAGEFS_REGISTRY/private/tiny:1" >/dev/null
out=$(assert_ok skopeo inspect --tls-verify=false --creds "$creds" "docker://$IMAGEFS_REGISTRY/private/tiny:1")
assert_eq "$digest" "$(jq -r .Digest <<<"$out")"

# The token response and its JWT, as Docker Hub shapes them.
resp=$(curl -sf "$realm?service=$svc&scope=repository:private/tiny:pull&account=$IMAGEFS_REGISTRY_USER" -u "$creds")
assert_eq "true true true" "$(jq -r '[has("token"), has("access_token"), (.expires_in > 0)] | join(" ")' <<<"$resp")"
assert_contains "$(jq -r .issued_at <<<"$resp")" "Z"
claims=$(jwt_claims "$(jq -r .token <<<"$resp")")
assert_eq "$svc $IMAGEFS_REGISTRY_USER private/tiny pull" \
  "$(jq -r '[.aud, .sub, .access[0].name, (.access[0].actions | join(","))] | join(" ")' <<<"$claims")"
# Anonymous users get nothing on private/..., and the registry says insufficient_scope.
anon=$(curl -sf "$realm?service=$svc&scope=repository:private/tiny:pull" | jq -r .token)
assert_eq "[]" "$(jwt_claims "$anon" | jq -c .access)"
h=$(headers "${accept[@]}" -H "Authorization: Bearer $anon" "$IMAGEFS_REGISTRY_URL/v2/private/tiny/manifests/1")
assert_contains "$h" 'error="insufficient_scope"'
# A token for one repository does not open another.
pub=$(curl -sf -u "$creds" "$realm?service=$svc&scope=repository:public/tiny:pull" | jq -r .token)
assert_eq 200 "$(http_status "${accept[@]}" -H "Authorization: Bearer $pub" "$IMAGEFS_REGISTRY_URL/v2/public/tiny/manifests/1")"
h=$(headers "${accept[@]}" -H "Authorization: Bearer $pub" "$IMAGEFS_REGISTRY_URL/v2/private/tiny/manifests/1")
assert_contains "$h" "HTTP/1.1 401"
assert_contains "$h" 'error="insufficient_scope"'
# Wrong credentials: 401 with a JSON error.
body=$(curl -s -u "$IMAGEFS_REGISTRY_USER:wrong" -w '\n%{http_code}' "$realm?service=$svc&scope=repository:public/tiny:pull")
assert_eq 401 "$(tail -n1 <<<"$body")"
assert_eq UNAUTHORIZED "$(head -n1 <<<"$body" | jq -r '.errors[0].code')"
# OAuth2 form: password grant with a refresh token, then the refresh grant.
resp=$(curl -sf -d grant_type=password -d "username=$IMAGEFS_REGISTRY_USER" \
  --data-urlencode "password=$IMAGEFS_REGISTRY_PASSWORD" -d "service=$svc" -d client_id=imagefs-test \
  -d access_type=offline -d "scope=repository:private/tiny:pull" "$realm")
refresh=$(jq -r .refresh_token <<<"$resp")
if [ -z "$refresh" ] || [ "$refresh" = null ]; then fail "no refresh_token in $resp"; fi
resp=$(curl -sf -d grant_type=refresh_token --data-urlencode "refresh_token=$refresh" -d "service=$svc" \
  -d client_id=imagefs-test -d "scope=repository:private/tiny:pull" "$realm")
tok=$(jq -r .access_token <<<"$resp")
assert_eq 200 "$(http_status "${accept[@]}" -H "Authorization: Bearer $tok" "$IMAGEFS_REGISTRY_URL/v2/private/tiny/manifests/1")"
assert_eq 401 "$(http_status -d grant_type=refresh_token -d refresh_token=bogus -d "service=$svc" "$realm")"
assert_eq 401 "$(http_status -d grant_type=password -d "username=$IMAGEFS_REGISTRY_USER" -d password=wrong -d "service=$svc" "$realm")"
# The issuer logs every request, but never a password.
assert_contains "$(cat "$IMAGEFS_TOKEN_LOG")" "refresh_token user=$IMAGEFS_REGISTRY_USER 200"
assert_not_contains "$(cat "$IMAGEFS_TOKEN_LOG")" "$IMAGEFS_REGISTRY_PASSWORD" "password in the token log"

# --- token with --token-ttl 3 --anonymous none: expiry and no anonymous access -----------------
log "token expiry"
load_registry "$TEST_TMPDIR/reg-ttl"
realm=$IMAGEFS_TOKEN_REALM svc=$IMAGEFS_TOKEN_SERVICE
anon=$(curl -sf "$realm?service=$svc&scope=repository:public/x:pull" | jq -r .token)
h=$(headers -H "Authorization: Bearer $anon" "$IMAGEFS_REGISTRY_URL/v2/public/x/tags/list")
assert_contains "$h" 'error="insufficient_scope"' "--anonymous none"
resp=$(curl -sf -u "$IMAGEFS_REGISTRY_USER:$IMAGEFS_REGISTRY_PASSWORD" "$realm?service=$svc&scope=repository:public/x:pull")
assert_eq 3 "$(jq -r .expires_in <<<"$resp")"
tok=$(jq -r .token <<<"$resp")
# 404 NAME_UNKNOWN means the token was accepted (the repository is empty).
assert_eq 404 "$(http_status -H "Authorization: Bearer $tok" "$IMAGEFS_REGISTRY_URL/v2/public/x/tags/list")"
sleep 4.2
h=$(headers -H "Authorization: Bearer $tok" "$IMAGEFS_REGISTRY_URL/v2/public/x/tags/list")
assert_contains "$h" "HTTP/1.1 401"
assert_contains "$h" 'error="invalid_token"' "expired token"

# --- tls: https with a CA made for the run, no auth --------------------------------------------
log "tls"
load_registry "$TEST_TMPDIR/reg-tls"
assert_contains "$IMAGEFS_REGISTRY_URL" "https://"
[ -f "$IMAGEFS_REGISTRY_CERT_DIR/ca.crt" ] || fail "no ca.crt in $IMAGEFS_REGISTRY_CERT_DIR"
assert_eq 400 "$(http_status "http://$IMAGEFS_REGISTRY/v2/")" "plain HTTP to the TLS port"
rc=0
curl -s -o /dev/null "$IMAGEFS_REGISTRY_URL/v2/" || rc=$?
assert_eq 60 "$rc" "curl without the CA (60: peer certificate cannot be authenticated)"
assert_eq 200 "$(http_status --cacert "$IMAGEFS_REGISTRY_CA" "$IMAGEFS_REGISTRY_URL/v2/")"
port=${IMAGEFS_REGISTRY##*:}
assert_eq 200 "$(http_status --cacert "$IMAGEFS_REGISTRY_CA" "https://localhost:$port/v2/")" "DNS SAN"
out=$(assert_fails skopeo copy "$src" "docker://$IMAGEFS_REGISTRY/tls/tiny:1")
assert_contains "$out" "x509"
assert_ok skopeo copy --dest-cert-dir "$IMAGEFS_REGISTRY_CERT_DIR" "$src" "docker://$IMAGEFS_REGISTRY/tls/tiny:1" >/dev/null
out=$(assert_ok skopeo inspect --cert-dir "$IMAGEFS_REGISTRY_CERT_DIR" "docker://$IMAGEFS_REGISTRY/tls/tiny:1")
assert_eq "$digest" "$(jq -r .Digest <<<"$out")"
assert_fails skopeo inspect "docker://$IMAGEFS_REGISTRY/tls/tiny:1" >/dev/null

# --- stop removes processes and directory -------------------------------------------------------
pids=$(cat "$IMAGEFS_REGISTRY_DIR/pids")
stop_registry "$IMAGEFS_REGISTRY_DIR"
[ ! -e "$IMAGEFS_REGISTRY_DIR" ] || fail "stop left $IMAGEFS_REGISTRY_DIR behind"
for pid in $pids; do
  ! grep -qs docker-registry "/proc/$pid/cmdline" || fail "registry $pid still running after stop"
done
