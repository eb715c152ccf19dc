# Helpers for the mirror tests: a real pull-through cache (Debian's docker-registry in proxy
# mode, `proxy: remoteurl:`) in front of a registry of scripts/registry, and counts from the
# registries' own logs. Source after tests/integration/lib.sh.
#
#   start_mirror UPSTREAM_URL [--upstream-user U --upstream-password P] [--htpasswd USER:PASS]...
#                [--tls DIR]    (DIR/server.pem, server.key, and client-ca.pem when the mirror
#                                must see a client certificate)
#       starts a mirror on a free loopback port; sets MIRROR (127.0.0.1:PORT), MIRROR_PID,
#       MIRROR_LOG, MIRROR_DIR; stops it at exit (or with stop_mirror)
#   stop_mirror                 stops the last mirror started
#   blob_gets LOG DIGEST        how many times a registry log shows DIGEST's blob served with 200
#   make_tls_ca DIR             a CA, a server certificate for 127.0.0.1 and a client certificate
#                               signed by it (ca.pem, server.pem/key, client.pem/key,
#                               client-ca.pem)
# shellcheck shell=bash

start_mirror() {
  local upstream=$1 user="" password="" htpasswd_users=() tls=""
  shift
  while (($#)); do
    case $1 in
      --upstream-user) user=$2; shift 2 ;;
      --upstream-password) password=$2; shift 2 ;;
      --htpasswd) htpasswd_users+=("$2"); shift 2 ;;
      --tls) tls=$2; shift 2 ;;
      *) fail "start_mirror: unknown option $1" ;;
    esac
  done
  MIRROR_DIR=$(mktemp -d "$TEST_TMPDIR/mirror.XXXXXX")
  local port attempt scheme=http
  [ -z "$tls" ] || scheme=https
  for attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {
      echo "version: 0.1"
      echo "log: {level: info, formatter: text}"
      echo "storage: {filesystem: {rootdirectory: $MIRROR_DIR/storage}, delete: {enabled: true}}"
      echo "http:"
      echo "  addr: 127.0.0.1:$port"
      echo "  secret: $(openssl rand -hex 16)"
      if [ -n "$tls" ]; then
        echo "  tls:"
        echo "    certificate: $tls/server.pem"
        echo "    key: $tls/server.key"
        [ ! -f "$tls/client-ca.pem" ] || echo "    clientcas: [$tls/client-ca.pem]"
      fi
      echo "proxy:"
      echo "  remoteurl: $upstream"
      if [ -n "$user" ]; then
        echo "  username: $user"
        echo "  password: $password"
      fi
      if ((${#htpasswd_users[@]})); then
        local u
        : >"$MIRROR_DIR/htpasswd"
        for u in "${htpasswd_users[@]}"; do
          htpasswd -Bb "$MIRROR_DIR/htpasswd" "${u%%:*}" "${u#*:}" 2>/dev/null
        done
        echo "auth: {htpasswd: {realm: imagefs-mirror, path: $MIRROR_DIR/htpasswd}}"
      fi
    } >"$MIRROR_DIR/config.yml"
    MIRROR_LOG=$MIRROR_DIR/registry.log
    # The registry reads REGISTRY_* variables as config overrides: start it without them.
    env $(compgen -e | grep '^REGISTRY_' | sed 's/^/-u /') \
      docker-registry serve "$MIRROR_DIR/config.yml" </dev/null >"$MIRROR_LOG" 2>&1 &
    MIRROR_PID=$!
    on_exit _lib_kill "$MIRROR_PID"
    local i ok=0
    for ((i = 0; i < 150; i++)); do
      kill -0 "$MIRROR_PID" 2>/dev/null || break
      if grep -qs "listening on" "$MIRROR_LOG"; then ok=1; break; fi
      sleep 0.1
    done
    if [ "$ok" = 1 ]; then
      MIRROR=127.0.0.1:$port
      MIRROR_URL=$scheme://$MIRROR
      export MIRROR MIRROR_URL MIRROR_PID MIRROR_LOG MIRROR_DIR
      return 0
    fi
    grep -q "address already in use" "$MIRROR_LOG" || { cat "$MIRROR_LOG" >&2; fail "the mirror did not start"; }
  done
  fail "no free port for the mirror"
}

stop_mirror() {
  _lib_kill "$MIRROR_PID"
}

# Lines like: ... "GET /v2/app/blobs/sha256:..." ... 200 ... in distribution's access log.
blob_gets() {
  local log=$1 digest=$2
  { grep -E "\"GET /v2/[^ ]*/blobs/$digest HTTP/1.1\" 200 " "$log" || true; } | wc -l | tr -d ' '
}

make_tls_ca() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imagefs mirror test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
    "basicConstraints=CA:FALSE" >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=imagefs mirror client" \
    -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
  printf '%s\n' "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE" >"$d/client.ext"
  openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/client.ext" -out "$d/client.pem" 2>/dev/null
  cp "$d/ca.pem" "$d/client-ca.pem"
}
