#!/usr/bin/env bash
# Layer checks as strict as docker's (issue 17), and a store whose disk changed a blob (issue 16),
# with crafted images pushed to a real registry and umoci 0.4 (which reads gzip layers only) as the
# reference where it has an answer:
#   - rootfs.diff_ids that do not match the layers: refused by both;
#   - a layer that is a gzip of an empty stream (skopeo's compression of a 0-byte blob): an
#     empty layer for both, the trees equal;
#   - a gzip member with a wrong CRC-32, garbage after the gzip stream: refused by both;
#   - a gzip labelled zstd: read by its magic bytes (umoci cannot read the zstd media type);
#   - a byte of a stored layer blob changed on disk: `imagefs export` says so, fetches the blob
#     again from the registry and succeeds; with the registry gone, the error stands.
set -euo pipefail
source "${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}/tests/integration/lib.sh"
source "$IMAGEFS_SOURCE_DIR/tests/integration/pull/pull_lib.sh"
require_cmd docker-registry skopeo umoci python3
[ "$(id -u)" = 0 ] || skip "needs root: umoci unpack keeps owners"

T=$TEST_TMPDIR
treecmp=$IMAGEFS_SOURCE_DIR/tests/integration/overlay/treecmp.py

# One OCI layout per case, each image a base layer plus the case's layer.
python3 - "$T/oci" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
root = sys.argv[1]

def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in sorted({n.split("/")[0] for n, _ in files}):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            t.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()

base_tar = tar_of([("etc/os-release", b"NAME=layer-checks\n"), ("bin/tool", os.urandom(200000))])
top_tar = tar_of([("app/main.txt", b"hello\n" * 1000)])
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"

def layout(name, layers):
    """layers: (blob bytes, media type, diff_id) in order."""
    out = os.path.join(root, name)
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}
    descs = [dict(blob(data), mediaType=mt) for data, mt, _ in layers]
    config = blob(json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in layers]},
    }).encode())
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": descs,
    }).encode())
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [dict(
            manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
            annotations={"org.opencontainers.image.ref.name": "latest"})]}, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
base = (gzip.compress(base_tar, mtime=0), GZ, sha(base_tar))
top_gz = gzip.compress(top_tar, mtime=0)
crc = bytearray(top_gz)
crc[-8] ^= 0x01  # the first byte of the member's CRC-32

layout("good", [base, (top_gz, GZ, sha(top_tar))])
layout("wrongdiff", [base, (top_gz, GZ, sha(top_tar + b"x"))])
layout("fewdiffs", [base, (top_gz, GZ, None)])  # fixed below: one diff_id for two layers
layout("emptygz", [base, (gzip.compress(b"", mtime=0), GZ, sha(b"")), (top_gz, GZ, sha(top_tar))])
layout("badcrc", [base, (bytes(crc), GZ, sha(top_tar))])
layout("garbage", [base, (top_gz + b"garbage", GZ, sha(top_tar))])
layout("mislabelled", [base, (top_gz, ZST, sha(top_tar))])
EOF
# fewdiffs: a config listing one diff_id for its two layers.
python3 - "$T/oci/fewdiffs" <<'EOF'
import hashlib, json, os, sys
out = sys.argv[1]
blobs = os.path.join(out, "blobs", "sha256")
index = json.load(open(os.path.join(out, "index.json")))
mdesc = index["manifests"][0]
manifest = json.load(open(os.path.join(blobs, mdesc["digest"][7:])))
config = json.load(open(os.path.join(blobs, manifest["config"]["digest"][7:])))
config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, d), "wb").write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
manifest["config"].update(put(json.dumps(config).encode()))
mdesc.update(put(json.dumps(manifest).encode()))
json.dump(index, open(os.path.join(out, "index.json"), "w"))
EOF

start_registry open
REG=$IMAGEFS_REGISTRY
for name in good wrongdiff fewdiffs emptygz badcrc garbage mislabelled; do
  assert_ok skopeo copy --dest-tls-verify=false --preserve-digests "oci:$T/oci/$name:latest" \
    "docker://$REG/checks/$name:latest" >/dev/null
done

# umoci NAME: unpacks the layout; prints its error and fails when umoci refuses the image.
umoci_unpack() { umoci unpack --image "$T/oci/$1:latest" "$T/umoci-$1" 2>&1; }

log "the good image: both unpack it, to the same tree"
assert_ok imagefs export --cache-dir "$CACHE" "$REG/checks/good" "$T/ours-good" >/dev/null
assert_ok umoci_unpack good >/dev/null
out=$(python3 "$treecmp" "$T/ours-good" "$T/umoci-good/rootfs") ||
  fail "good: imagefs export differs from umoci unpack: $out"

log "diff_ids that do not match the layers: both refuse"
out=$(assert_fails imagefs export --cache-dir "$CACHE" "$REG/checks/wrongdiff" "$T/ours-wrongdiff")
assert_contains "$out" "layer 2 of 2 (sha256:"
assert_contains "$out" "does not match the image config: its uncompressed content has diff_id"
assert_contains "$out" "rootfs.diff_ids[1] says"
ref_out=$(umoci_unpack wrongdiff) && fail "umoci unpacked wrongdiff: $ref_out"
assert_contains "$ref_out" "diffid mismatch" "umoci's reason"
[ ! -e "$T/ours-wrongdiff" ] || [ -z "$(ls -A "$T/ours-wrongdiff")" ] ||
  fail "imagefs export wrote a tree for an image it refused"

log "fewer diff_ids than layers: refused"
# (The puller already refuses this manifest when it resolves it; either refusal names the counts.)
out=$(assert_fails imagefs export --cache-dir "$CACHE" "$REG/checks/fewdiffs" "$T/ours-fewdiffs")
assert_contains "$out" "1"
ref_out=$(umoci_unpack fewdiffs) && fail "umoci unpacked fewdiffs: $ref_out"

log "a gzip of an empty stream is an empty layer for both"
assert_ok imagefs export --cache-dir "$CACHE" "$REG/checks/emptygz" "$T/ours-emptygz" >/dev/null
assert_ok umoci_unpack emptygz >/dev/null
out=$(python3 "$treecmp" "$T/ours-emptygz" "$T/umoci-emptygz/rootfs") ||
  fail "emptygz: imagefs export differs from umoci unpack: $out"
assert_eq "$(cat "$T/ours-emptygz/app/main.txt" | wc -l)" 1000

log "a wrong CRC-32, garbage after the gzip stream: both refuse"
out=$(assert_fails imagefs export --cache-dir "$CACHE" "$REG/checks/badcrc" "$T/ours-badcrc")
assert_contains "$out" "the CRC-32 in the trailer of the gzip member does not match"
ref_out=$(umoci_unpack badcrc) && fail "umoci unpacked badcrc: $ref_out"
assert_contains "$ref_out" "checksum" "umoci's reason"
out=$(assert_fails imagefs export --cache-dir "$CACHE" "$REG/checks/garbage" "$T/ours-garbage")
assert_contains "$out" "garbage after the gzip stream: 1 member ends at byte"
ref_out=$(umoci_unpack garbage) && fail "umoci unpacked garbage: $ref_out"
assert_contains "$ref_out" "discard trailing archive bits" "umoci's reason"

log "a gzip labelled zstd is read as gzip, as docker does"
assert_ok imagefs export --cache-dir "$CACHE" "$REG/checks/mislabelled" "$T/ours-mis" >/dev/null
out=$(python3 "$treecmp" "$T/ours-mis" "$T/umoci-good/rootfs") ||
  fail "mislabelled: imagefs export differs from umoci's unpack of the same layers: $out"

log "a blob the disk changed: said so, fetched again, served"
C2=$T/cache2
assert_ok imagefs pull --cache-dir "$C2" "$REG/checks/good" >/dev/null
top=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["layers"][1]["digest"][7:])' \
  "$T/oci/good/blobs/sha256/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"][7:])' "$T/oci/good/index.json")")
blob=$C2/blobs/sha256/$top
[ -f "$blob" ] || fail "no blob $blob in the store after pull"
rot() {  # flips a bit of the byte 8 bytes from the end (the gzip member's CRC-32)
  python3 - "$1" <<'EOF'
import os, sys
p = sys.argv[1]
os.chmod(p, 0o644)
with open(p, "r+b") as f:
    f.seek(-8, os.SEEK_END)
    b = f.read(1)
    f.seek(-8, os.SEEK_END)
    f.write(bytes([b[0] ^ 0x20]))
EOF
}
rot "$blob"
out=$(imagefs export --cache-dir "$C2" "$REG/checks/good" "$T/ours-refetched" 2>&1) ||
  fail "export after the blob rotted failed: $out"
assert_contains "$out" "blob sha256:$top in the store does not match its digest: the disk changed it"
assert_contains "$out" "fetched again from"
out=$(python3 "$treecmp" "$T/ours-refetched" "$T/umoci-good/rootfs") ||
  fail "after the fetch again: imagefs export differs from umoci unpack: $out"
[ "$(sha256sum <"$blob" | cut -d' ' -f1)" = "$top" ] || fail "the store's blob was not repaired"

log "a blob the disk changed, and no registry: the error stands, nothing is served"
C3=$T/cache3
assert_ok imagefs pull --cache-dir "$C3" "$REG/checks/good" >/dev/null
stop_registry
rot "$C3/blobs/sha256/$top"
out=$(assert_fails imagefs export --cache-dir "$C3" "$REG/checks/good" "$T/ours-gone")
assert_contains "$out" "blob sha256:$top in the store does not match its digest: the disk changed it"
[ ! -e "$C3/blobs/sha256/$top" ] || fail "the rotten blob is still in the store"
[ ! -e "$C3/derived/$top/layer" ] || fail "an index was left for the rotten blob"
log "ok"
