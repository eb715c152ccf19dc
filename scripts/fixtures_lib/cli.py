# The scripts/fixtures command line: build (cached, reproducible), push, gzip-copy and list.
import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zlib

from . import debs, images, oci

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def log(msg):
    print(f"fixtures: {msg}", file=sys.stderr, flush=True)


def default_out():
    build = os.environ.get("IMAGEFS_BUILD_DIR") or os.path.join(REPO, "build")
    return os.path.join(build, "fixtures")


def code_hash():
    """The builder's own code and the compressors' versions: a change to either rebuilds."""
    h = hashlib.sha256()
    files = [os.path.join(REPO, "scripts", "fixtures")]
    files += sorted(os.path.join(HERE, f) for f in os.listdir(HERE) if f.endswith((".py", ".c")))
    for p in files:
        with open(p, "rb") as f:
            h.update(p.encode() + b"\0" + f.read())
    zstd = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout
    h.update(f"{zstd}\n{zlib.ZLIB_RUNTIME_VERSION}\n".encode())
    return h.hexdigest()


def check_names(names):
    for n in names:
        if n not in images.BY_NAME:
            raise debs.FixtureError(f"unknown image {n!r}; known: {', '.join(images.BY_NAME)}")
    return names


class Lock:
    """Serialises builds into one output directory (tests may run in parallel)."""

    def __init__(self, out):
        os.makedirs(out, exist_ok=True)
        self.f = open(os.path.join(out, ".lock"), "w")

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *a):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def intact(layout, index_sha256):
    """The layout still is what its stamp recorded: same index.json, every blob present."""
    index = os.path.join(layout, "index.json")
    if not os.path.exists(index) or oci.sha256_file(index) != index_sha256:
        return False
    try:
        digests = oci.image_digests(layout)
    except (OSError, ValueError, KeyError):
        return False
    return all(os.path.exists(os.path.join(layout, "blobs", *d.split(":", 1))) for d in digests)


def build(out, names):
    """Builds each image into out/oci/NAME unless its stamp says it is up to date. Returns
    {name: top-level digest}."""
    check_names(names)
    results = {}
    # The .deb cache and the private apt state are shared by every output directory.
    with Lock(out), Lock(debs.cache_dir()):
        code = code_hash()
        for name in names:
            t0 = time.monotonic()
            work = os.path.join(out, "work", name)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            img = images.BY_NAME[name](images.Context(work, log))
            key = hashlib.sha256(json.dumps([code, name, img.inputs()]).encode()).hexdigest()
            dest = os.path.join(out, "oci", name)
            stamp_path = os.path.join(out, "stamps", name + ".json")
            stamp = None
            if os.path.exists(stamp_path):
                with open(stamp_path) as f:
                    stamp = json.load(f)
            index = os.path.join(dest, "index.json")
            if stamp and stamp["key"] == key and intact(dest, stamp["index_sha256"]):
                log(f"{name}: up to date ({stamp['digest']})")
                results[name] = stamp["digest"]
                shutil.rmtree(work, ignore_errors=True)
                continue
            log(f"{name}: building")
            tmp = os.path.join(out, "oci", f".{name}.new")
            shutil.rmtree(tmp, ignore_errors=True)
            layout = oci.Layout(tmp)
            top = img.build(layout)
            layout.finish(top)
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(tmp, dest)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(os.path.dirname(stamp_path), exist_ok=True)
            with open(stamp_path + ".tmp", "w") as f:
                json.dump({"key": key, "digest": top["digest"], "index_sha256": oci.sha256_file(index)}, f)
            os.replace(stamp_path + ".tmp", stamp_path)
            log(f"{name}: built {top['digest']} in {time.monotonic() - t0:.1f}s")
            results[name] = top["digest"]
        shutil.rmtree(os.path.join(out, "work"), ignore_errors=True)
    return results


def is_loopback(registry):
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry[1:registry.index("]")]
    return host == "localhost" or host.startswith("127.") or host == "::1"


def push(out, names, registry, creds=None, cert_dir=None, tls_verify=None):
    digests = build(out, names)
    for name in names:
        src = f"oci:{os.path.join(out, 'oci', name)}:latest"
        dst = f"docker://{registry}/{name}:latest"
        # --preserve-digests keeps plain-tar and zstd layers as they are (skopeo would otherwise
        # recompress them); --all copies an index with every platform, and is harmless otherwise.
        cmd = ["skopeo", "copy", "--all", "--preserve-digests"]
        if creds:
            cmd += ["--dest-creds", creds]
        if cert_dir:
            cmd += ["--dest-cert-dir", cert_dir]
        if tls_verify is None and not cert_dir and is_loopback(registry):
            # Like docker, treat a loopback registry as insecure: skopeo then falls back to HTTP.
            tls_verify = False
        if tls_verify is not None:
            cmd += [f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
        cmd += [src, dst]
        log(f"{name}: pushing to {registry}/{name}:latest")
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise debs.FixtureError(f"pushing {name} to {registry} failed:\n{p.stdout.strip()}")
        print(f"{registry}/{name}:latest {digests[name]}")


def parse_bool(s):
    if s.lower() in ("true", "1", "yes"):
        return True
    if s.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {s!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/fixtures", description="Builds and pushes imagefs' test images.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build OCI layouts into DIR/oci/NAME (cached, reproducible)")
    b.add_argument("--out", help="output directory (default: $IMAGEFS_BUILD_DIR/fixtures or build/fixtures)")
    b.add_argument("images", nargs="*", metavar="IMAGE")
    p = sub.add_parser("push", help="build if needed, then push each image to REGISTRY/NAME:latest")
    p.add_argument("--registry", required=True, metavar="HOST:PORT")
    p.add_argument("--out")
    p.add_argument("--dest-creds", metavar="USER:PASSWORD")
    p.add_argument("--dest-cert-dir", metavar="DIR")
    p.add_argument("--tls-verify", type=parse_bool, metavar="BOOL", help="false for a plain-HTTP or self-signed registry (default: false for loopback registries without --dest-cert-dir)")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    g = sub.add_parser("gzip-copy", help="copy a layout with zstd layers recompressed as gzip")
    g.add_argument("src", metavar="SRC_LAYOUT")
    g.add_argument("dst", metavar="DST_LAYOUT")
    sub.add_parser("list", help="names and descriptions of the images")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "build":
            out = os.path.abspath(args.out or default_out())
            for name, digest in build(out, args.images or images.DEFAULT).items():
                print(f"{name} {digest} {os.path.join(out, 'oci', name)}")
        elif args.cmd == "push":
            out = os.path.abspath(args.out or default_out())
            push(out, check_names(args.images or images.DEFAULT), args.registry, args.dest_creds, args.dest_cert_dir, args.tls_verify)
        elif args.cmd == "gzip-copy":
            oci.gzip_copy(args.src, args.dst, log)
        elif args.cmd == "list":
            for c in images.ALL:
                tag = "" if c.default else " (on demand)"
                print(f"{c.name:<10} {c.description}{tag}")
    except debs.FixtureError as e:
        print(f"fixtures: error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"fixtures: error: {' '.join(map(str, e.cmd))} exited with {e.returncode}", file=sys.stderr)
        return 1
    return 0
