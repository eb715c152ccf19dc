# Writes and rewrites OCI image layouts (oci-layout, index.json, blobs/sha256): layers, configs,
# manifests and indexes as canonical JSON, so the same inputs always give the same digests.
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from . import layer

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "tar": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "2024-01-01T00:00:00Z"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Layout:
    """An OCI image layout being written at `path` (which must not exist yet)."""

    def __init__(self, path):
        self.path = path
        self.blobs = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobs)
        with open(os.path.join(path, "oci-layout"), "wb") as f:
            f.write(canonical({"imageLayoutVersion": "1.0.0"}))
        self.tmp = os.path.join(path, ".tmp")
        os.makedirs(self.tmp)

    def add_bytes(self, data: bytes, media_type, **extra):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data), **extra}

    def add_file(self, path, media_type):
        """Moves the file at `path` into the blob store."""
        digest = sha256_file(path)
        size = os.path.getsize(path)
        os.replace(path, os.path.join(self.blobs, digest))
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": size}

    def add_layer(self, entries, compression):
        """Returns (layer descriptor, diff_id)."""
        tar = os.path.join(self.tmp, "layer.tar")
        diff, _ = layer.write_tar(entries, tar)
        if any(e.xattrs for e in entries):
            layer.check_xattrs_written(entries, tar)
        blob = os.path.join(self.tmp, "layer.blob")
        layer.compress(tar, blob, compression)
        os.unlink(tar)
        return self.add_file(blob, MT_LAYER[compression]), "sha256:" + diff

    def add_image(self, layers, config, platform, history=None):
        """layers: [(entries, compression, comment)]; config: the image config's "config"
        object; platform: {"os":..., "architecture":..., ["variant":...]}. Returns the manifest
        descriptor (with platform)."""
        descs, diff_ids, hist = [], [], []
        for entries, compression, comment in layers:
            d, diff = self.add_layer(entries, compression)
            descs.append(d)
            diff_ids.append(diff)
            hist.append({"created": CREATED, "created_by": "imagefs fixtures", "comment": comment})
        cfg = {
            "created": CREATED,
            **platform,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history or hist,
        }
        cfg_desc = self.add_bytes(canonical(cfg), MT_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cfg_desc, "layers": descs}
        plat = {k: platform[k] for k in ("architecture", "os", "variant") if k in platform}
        return self.add_bytes(canonical(manifest), MT_MANIFEST, platform=plat)

    def add_index(self, manifests):
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}
        return self.add_bytes(canonical(index), MT_INDEX)

    def finish(self, top, ref="latest"):
        """Writes index.json naming `top` (a manifest or index descriptor) as `ref`."""
        top = {**top, "annotations": {REF_NAME: ref}}
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [top]}
        with open(os.path.join(self.path, "index.json"), "wb") as f:
            f.write(canonical(index))
        shutil.rmtree(self.tmp)


def read_json(layout, desc_or_name):
    if isinstance(desc_or_name, str):
        p = os.path.join(layout, desc_or_name)
    else:
        algo, hexd = desc_or_name["digest"].split(":", 1)
        p = os.path.join(layout, "blobs", algo, hexd)
    with open(p, "rb") as f:
        return json.load(f)


def image_digests(layout):
    """Every digest reachable from index.json, for comparing two builds."""
    out = []

    def visit(desc):
        out.append(desc["digest"])
        if desc["mediaType"] == MT_INDEX:
            for m in read_json(layout, desc)["manifests"]:
                visit(m)
        elif desc["mediaType"] == MT_MANIFEST:
            m = read_json(layout, desc)
            out.append(m["config"]["digest"])
            out.extend(l["digest"] for l in m["layers"])

    for m in read_json(layout, "index.json")["manifests"]:
        visit(m)
    return out


def gzip_copy(src, dst, log=lambda s: None):
    """Copies the layout `src` to `dst` with every +zstd layer recompressed as +gzip (for tools
    such as umoci 0.4 that cannot read zstd). Uncompressed contents, and so the configs'
    diff_ids, stay the same; manifests and indexes that change get new digests."""
    if not os.path.isfile(os.path.join(src, "index.json")):
        raise RuntimeError(f"{src}: not an OCI image layout (no index.json)")
    if os.path.exists(dst) and not os.path.isfile(os.path.join(dst, "oci-layout")) and os.listdir(dst):
        raise RuntimeError(f"{dst}: exists and is not an OCI image layout; not replacing it")
    work = tempfile.mkdtemp(prefix=".gzip-copy-", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        out_blobs = os.path.join(work, "blobs", "sha256")
        os.makedirs(out_blobs)

        def blob_path(layout, digest):
            algo, hexd = digest.split(":", 1)
            return os.path.join(layout, "blobs", algo, hexd)

        def copy_blob(desc):
            dstp = blob_path(work, desc["digest"])
            if not os.path.exists(dstp):
                shutil.copyfile(blob_path(src, desc["digest"]), dstp)
            return desc

        def put(data, desc):
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(out_blobs, digest), "wb") as f:
                f.write(data)
            return {**desc, "digest": "sha256:" + digest, "size": len(data)}

        def recompress(desc):
            if not desc["mediaType"].endswith("+zstd"):
                return copy_blob(desc)
            tmp = os.path.join(work, "layer.gz")
            with open(tmp, "wb") as raw:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                    p = subprocess.Popen(["zstd", "-dcq", blob_path(src, desc["digest"])], stdout=subprocess.PIPE)
                    while chunk := p.stdout.read(1 << 20):
                        gz.write(chunk)
                    if p.wait() != 0:
                        raise RuntimeError(f"zstd could not decompress layer {desc['digest']}")
            digest = sha256_file(tmp)
            os.replace(tmp, os.path.join(out_blobs, digest))
            log(f"gzip-copy: layer {desc['digest'][:19]} zstd -> gzip sha256:{digest[:12]}")
            return {
                **desc,
                "mediaType": desc["mediaType"][: -len("+zstd")] + "+gzip",
                "digest": "sha256:" + digest,
                "size": os.path.getsize(os.path.join(out_blobs, digest)),
            }

        def visit(desc):
            mt = desc["mediaType"]
            if mt == MT_INDEX:
                idx = read_json(src, desc)
                new = [visit(m) for m in idx["manifests"]]
                if new == idx["manifests"]:
                    return copy_blob(desc)
                return put(canonical({**idx, "manifests": new}), desc)
            if mt == MT_MANIFEST:
                man = read_json(src, desc)
                copy_blob(man["config"])
                layers = [recompress(l) for l in man["layers"]]
                if layers == man["layers"]:
                    return copy_blob(desc)
                return put(canonical({**man, "layers": layers}), desc)
            return copy_blob(desc)

        top = read_json(src, "index.json")
        top["manifests"] = [visit(m) for m in top["manifests"]]
        with open(os.path.join(work, "index.json"), "wb") as f:
            f.write(canonical(top))
        shutil.copyfile(os.path.join(src, "oci-layout"), os.path.join(work, "oci-layout"))
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.rename(work, dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
