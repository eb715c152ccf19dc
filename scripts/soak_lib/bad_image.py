#!/usr/bin/env python3
"""Writes the soak's bad image: an OCI layout (tag "latest") whose one layer fails to ingest.

The layer holds a good file, then a hardlink to a target no layer has. Its name is raw bytes that
are not UTF-8 (b"bad-\\xff\\xfe-link") unless --utf8 is given: the case issue 11 opens with (the
layer is refused with EIO, which is right; the error text then reaches .status and the log).

usage: bad_image.py OUT_DIR [--utf8]      prints the manifest digest
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    utf8 = "--utf8" in sys.argv[2:]
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    raw = io.BytesIO()
    # GNU format stores names as the bytes they are (surrogateescape turns \udcff back into 0xff).
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as t:
        good = b"a good file in a bad layer\n"
        info = tarfile.TarInfo("good.txt")
        info.size, info.mode, info.mtime = len(good), 0o644, 0
        t.addfile(info, io.BytesIO(good))
        link = tarfile.TarInfo("bad-link" if utf8 else b"bad-\xff\xfe-link".decode("utf-8", "surrogateescape"))
        link.type, link.mode, link.mtime = tarfile.LNKTYPE, 0o644, 0
        link.linkname = "no/such/target" if utf8 else b"no-\xff-target".decode("utf-8", "surrogateescape")
        t.addfile(link)
    layer_tar = raw.getvalue()
    layer = blob(gzip.compress(layer_tar, mtime=0))
    config = blob(json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    }, sort_keys=True).encode())
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")],
    }, sort_keys=True).encode())
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [dict(
            manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
            annotations={"org.opencontainers.image.ref.name": "latest"})]}, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(manifest["digest"])


if __name__ == "__main__":
    main()
