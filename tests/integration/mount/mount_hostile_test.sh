#!/usr/bin/env bash
# Hostile inputs against a real mount (issue 11): the daemon never dies, and what reaches .status,
# `imagefs status` and the log is always valid UTF-8 without control characters.
#   - an image whose layer holds a hardlink to a missing target, both names not UTF-8 (the crash
#     of the issue: the read of .status after the EIO ended the daemon);
#   - a registry whose answers hold control characters and bytes that are not UTF-8 (error bodies,
#     headers, a token realm), from a small python server;
#   - a mount point whose own path is not UTF-8;
#   after each: .status parses as JSON (python3 json.loads), `imagefs status` and
#   `imagefs status --json` work, a good image is still served and the daemon is alive.
#   - --allow-other with --allow-registry, and a second user (nobody): the allowed registry serves
#     it; another name is ENOENT with no connection reaching a listening port; its .status holds
#     no registry text; --allow-other without a list is refused.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/mount/mount_lib.sh"
require_cmd docker-registry skopeo jq python3 setpriv
[ "$(id -u)" = 0 ] || skip "needs root: the second user's requests come from setpriv"
require_mount

T=$TEST_TMPDIR
chmod 711 "$T"  # the second user must reach the mount points; nothing else here is for it
"$FIXTURES" build --out "$FIXTURES_OUT" tiny >/dev/null 2>&1 || fail "fixtures build failed"
start_registry open
REG=$IMAGEFS_REGISTRY
push_fixtures tiny
d_tiny=$(fixture_digest_for tiny)

# The image of the issue: one layer, a file and a hardlink "bad\xff\xfe" -> "gone\xe9\x1b[31m",
# whose target is in no layer. Names as raw bytes (GNU tar headers, no pax charset).
python3 - "$T/hostile-oci" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}
raw = lambda b: b.decode("utf-8", "surrogateescape")
tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                  errors="surrogateescape") as t:
    ok = tarfile.TarInfo("ok.txt")
    ok.size, ok.mode = 5, 0o644
    t.addfile(ok, io.BytesIO(b"fine\n"))
    link = tarfile.TarInfo(raw(b"bad\xff\xfe-link"))
    link.type, link.linkname, link.mode = tarfile.LNKTYPE, raw(b"gone\xe9\x1b[31m"), 0o644
    t.addfile(link)
layer_tar = tar.getvalue()
layer = blob(layer_tar)
config = blob(json.dumps({
    "architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
}).encode())
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
    "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar")],
}).encode())
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [dict(
        manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
        annotations={"org.opencontainers.image.ref.name": "latest"})]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
EOF
assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$T/hostile-oci:latest" \
  "docker://$REG/hostile:latest" >/dev/null

# A registry that answers with hostile text. Every connection it accepts is counted in its log.
cat >"$T/hostile_registry.py" <<'EOF'
import http.server, json, sys
port_file, log_file = sys.argv[1], sys.argv[2]
SECRET = "SECRET-REGISTRY-TEXT"
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        with open(log_file, "a") as f:
            f.write(self.requestline + "\n")
    def answer(self, code, body, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)  # latin-1: "\xff" goes out as the byte 0xff
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self):
        self.do_GET()
    def do_GET(self):
        p = self.path
        junk = [("X-Junk", "\xff\xfe\x1b[31m\x85"), ("Docker-Distribution-Api-Version", "registry/2.0\xff")]
        if p == "/v2/":
            return self.answer(200, b"{}", junk)
        if p.startswith("/v2/forged/"):
            # Valid JSON whose message holds an escape sequence and a whole forged log line.
            body = json.dumps({"errors": [{"code": "DENIED", "message":
                SECRET + " \x1b[2J\x1b[31mred\n2026-01-01 00:00:00 imagefs[1]: FORGED-LINE"}]})
            return self.answer(403, body.encode(), junk)
        if p.startswith("/v2/badbody/"):
            body = b'{"errors":[{"code":"DENIED","message":"\xff\xfe ' + SECRET.encode() + b'"}]}\xc3'
            return self.answer(400, body, junk)
        if p.startswith("/v2/realm/"):
            port = self.server.server_address[1]
            realm = "http://127.0.0.1:%d/token\xff\x1b[31m" % port
            return self.answer(401, b"{}", junk + [("WWW-Authenticate",
                'Bearer realm="%s",service="svc\xfe",scope="repository:realm:pull"' % realm)])
        if p.startswith("/token"):
            return self.answer(403, b"\xff\xfe no token " + SECRET.encode(), junk)
        return self.answer(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"\xff"}]}', junk)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
EOF
python3 "$T/hostile_registry.py" "$T/hostile.port" "$T/hostile.log" &
hostile_pid=$!
on_exit kill "$hostile_pid"
for _ in $(seq 50); do [ -s "$T/hostile.port" ] && break; sleep 0.1; done
[ -s "$T/hostile.port" ] || fail "the hostile registry did not start"
EVIL=127.0.0.1:$(cat "$T/hostile.port")

# check_alive MNT PID WHAT: the daemon answers and is sane after WHAT.
check_alive() {
  local mnt=$1 pid=$2 what=$3 out
  kill -0 "$pid" 2>/dev/null || fail "the daemon died after $what: $(tail -5 "$T"/*.log 2>/dev/null)"
  out=$(fs cat "$mnt/.status") || fail "cat .status after $what failed"
  python3 -c 'import json, sys; json.loads(sys.stdin.buffer.read().decode("utf-8", "strict"))' \
    <<<"$out" || fail ".status after $what is not JSON in UTF-8: $(head -c 500 <<<"$out")"
  ! grep -q $'[\x01-\x08\x0b-\x1f\x7f]' <<<"$out" || fail ".status after $what holds control characters"
  out=$(fs "$IMAGEFS_BIN" status "$mnt" 2>&1) || fail "imagefs status after $what: $out"
  [[ $out != *"not answering"* ]] || fail "imagefs status after $what: $out"
  ! grep -q $'[\x01-\x08\x0b-\x1f\x7f]' <<<"$out" || fail "imagefs status after $what prints control characters"
  out=$(fs "$IMAGEFS_BIN" status --json "$mnt" 2>&1) || fail "imagefs status --json after $what: $out"
  python3 -c 'import json, sys; d = json.loads(sys.stdin.read()); assert d["pid"] > 0' <<<"$out" ||
    fail "imagefs status --json after $what: $(head -c 500 <<<"$out")"
  assert_eq "$d_tiny" "$(fs cat "$mnt/$REG/tiny:latest/digest")" "tiny's digest after $what"
  fs cat "$mnt/$REG/tiny:latest/initramfs.cpio.gz" | gzip -t || fail "tiny's archive after $what"
  kill -0 "$pid" 2>/dev/null || fail "the daemon died after $what"
}

# ---------------------------------------------------------------------------------------------
log "a layer with a dangling hardlink whose names are not UTF-8"
MNT=$T/mnt
LOG=$T/mount.log
mount_imagefs "$MNT" --cache-dir "$CACHE" --log "$LOG"
pid=$MOUNT_PID
err=$(mount_errno_text cat "$MNT/$REG/hostile:latest/initramfs.cpio")
assert_contains "$err" "Input/output error" "the archive of the hostile image"
mount_errno_text cat "$MNT/$REG/hostile:latest/initramfs.cpio.gz" >/dev/null
check_alive "$MNT" "$pid" "the dangling hardlink"
status=$(fs "$IMAGEFS_BIN" status "$MNT")
assert_contains "$status" 'bad\xff\xfe-link' "imagefs status names the link, escaped"
assert_contains "$(fs cat "$MNT/.status")" 'gone\\xe9\\x1b[31m' ".status names the target, escaped"
grep -qF 'gone\xe9\x1b[31m' "$LOG" || fail "the log does not name the target, escaped: $(tail -5 "$LOG")"
# The good file of the hostile image's layer does not matter; the tree fails as a whole or not:
# either way, the daemon is alive and further lookups of it fail the same way.
mount_errno_text cat "$MNT/$REG/hostile:latest/initramfs.cpio.zst" >/dev/null
check_alive "$MNT" "$pid" "the dangling hardlink, again"

# ---------------------------------------------------------------------------------------------
log "registry answers with control characters and bytes that are not UTF-8"
for name in forged badbody realm; do
  mount_errno_text ls "$MNT/$EVIL/$name:1" >/dev/null
  check_alive "$MNT" "$pid" "the registry's $name answer"
done
grep -q 'FORGED-LINE' "$LOG" || fail "the forged registry message is not in the log at all: $(tail -5 "$LOG")"
! grep -q '^2026-01-01 00:00:00 imagefs\[1\]: FORGED-LINE' "$LOG" || fail "a registry forged a log line"
! grep -q $'\x1b' "$LOG" || fail "the log holds an escape character from a registry"
LC_ALL=C grep -qP '[\x80-\xff]' "$LOG" &&
  ! python3 -c 'import sys; sys.stdin.buffer.read().decode("utf-8", "strict")' <"$LOG" &&
  fail "the log is not UTF-8"
log "  log: $(grep -m1 'FORGED-LINE' "$LOG" | head -c 300)"
unmount_wait "$MNT" "$pid"

# ---------------------------------------------------------------------------------------------
log "a mount point whose path is not UTF-8"
ODD=$T/mnt-$'\xff\xfe'-odd
mount_imagefs "$ODD" --cache-dir "$CACHE" --log "$T/odd.log"
pid=$MOUNT_PID
check_alive "$ODD" "$pid" "mounting on a path that is not UTF-8"
out=$(fs "$IMAGEFS_BIN" status --json "$ODD")
assert_contains "$(jq -r .mountpoint <<<"$out")" 'mnt-\xff\xfe-odd' ".status shows the mount point escaped"
# `imagefs status` without arguments finds every mount, this one among them.
out=$(fs "$IMAGEFS_BIN" status 2>&1) || fail "imagefs status: $out"
assert_contains "$out" 'mnt-\xff\xfe-odd' "imagefs status lists the odd mount point"
out=$(fs "$IMAGEFS_BIN" status --json 2>&1) || fail "imagefs status --json: $out"
python3 -c '
import json, sys
text, at, n = sys.stdin.read(), 0, 0
dec = json.JSONDecoder()
while text[at:].strip():
    obj, end = dec.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
    at, n = end, n + 1
assert n >= 1
' <<<"$out" || fail "imagefs status --json of every mount is not a sequence of JSON objects: $(head -c 300 <<<"$out")"
unmount_wait "$ODD" "$pid"

# ---------------------------------------------------------------------------------------------
log "--allow-other: only the allowed registries, for other users"
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
MO=$T/other
out=$(assert_fails "$IMAGEFS_BIN" mount "$MO" --cache-dir "$CACHE" --allow-other)
assert_contains "$out" "--allow-registry" "--allow-other without a registry list is refused and says why"
in_proc_mounts "$MO" && fail "--allow-other without a list mounted anyway"
# A port that listens and counts connections: no lookup of another user may reach it.
python3 - "$T/listen.port" "$T/listen.count" <<'EOF' &
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
n = 0
while True:
    c, _ = s.accept()
    n += 1
    open(sys.argv[2], "w").write(str(n))
    c.close()
EOF
listen_pid=$!
on_exit kill "$listen_pid"
for _ in $(seq 50); do [ -s "$T/listen.port" ] && break; sleep 0.1; done
LISTEN=127.0.0.1:$(cat "$T/listen.port")
printf '# registries other users may reach\n%s\n' "$REG" >"$T/allowed"
mount_imagefs "$MO" --cache-dir "$CACHE" --log "$T/other.log" --allow-other --allow-registry-file "$T/allowed"
pid=$MOUNT_PID
assert_eq "$d_tiny" "$(fs "${nobody[@]}" cat "$MO/$REG/tiny:latest/digest")" "another user reads an allowed registry"
for path in "$LISTEN/app:1" "$LISTEN/app:1/digest" "$LISTEN" "$EVIL/forged:1" "alpine:3/digest"; do
  err=$(mount_errno_text "${nobody[@]}" cat "$MO/$path")
  assert_contains "$err" "No such file or directory" "another user's lookup of $path"
done
sleep 0.5
[ ! -e "$T/listen.count" ] || fail "another user's lookup reached $LISTEN ($(cat "$T/listen.count") connections)"
# The owner may (the daemon tries, and a connection arrives).
mount_errno_text cat "$MO/$LISTEN/app:1/digest" >/dev/null || true
for _ in $(seq 50); do [ -e "$T/listen.count" ] && break; sleep 0.1; done
[ -e "$T/listen.count" ] || fail "the owner's lookup of $LISTEN never connected (the test proves nothing)"
# The owner's failure on the hostile registry: the owner sees its text, the other user does not.
mount_errno_text ls "$MO/$EVIL/forged:1" >/dev/null
mine=$(fs cat "$MO/.status")
theirs=$(fs "${nobody[@]}" cat "$MO/.status")
assert_contains "$mine" "SECRET-REGISTRY-TEXT" "the owner's .status shows the registry's text"
assert_not_contains "$theirs" "SECRET-REGISTRY-TEXT" "another user's .status shows no registry text"
assert_contains "$theirs" "$EVIL/forged:1" "another user's .status names the failed image"
assert_contains "$theirs" "EACCES" "another user's .status gives the errno class"
python3 -c 'import json, sys; json.loads(sys.stdin.read())' <<<"$theirs" || fail "another user's .status is not JSON"
# A listing shows another user only what it may look up.
listing=$(fs "${nobody[@]}" ls "$MO")
assert_contains "$listing" "${REG%%:*}" "another user's listing of the top"
kill -0 "$pid" || fail "the daemon died"
unmount_wait "$MO" "$pid"

log "pass"
