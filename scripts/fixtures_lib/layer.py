# Writes layer tars entry by entry, in exactly the order and with exactly the headers given, so a
# fixture can hold what real layers hold (entries without parent directories, whiteouts placed
# anywhere, binary xattrs, long and non-ASCII names) and be byte-identical on every build.
import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field

# Every fixture timestamp that is not deliberately different: 2024-01-01T00:00:00Z.
FIXED_MTIME = 1704067200

KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}

FORMATS = {"pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT}


@dataclass
class Entry:
    """One tar entry. `path` is relative to the image root and written as given (a "./" prefix
    stays); directories get their trailing "/" from tarfile."""

    path: str
    kind: str = "file"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME
    data: bytes = b""
    source: str | None = None  # a host file whose bytes are the content (instead of data)
    link: str = ""  # symlink target, or the hardlinked path
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    fmt: str = "pax"  # header format of this one entry: pax, ustar (prefix field) or gnu


def file(path, data=b"", mode=0o644, **kw):
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", mode, data=data, **kw)


def dir_(path, mode=0o755, **kw):
    return Entry(path, "dir", mode, **kw)


def symlink(path, target, **kw):
    return Entry(path, "symlink", 0o777, link=target, **kw)


def hardlink(path, target, mode=0o644, **kw):
    return Entry(path, "hardlink", mode, link=target, **kw)


def _tarinfo(e: Entry) -> tarfile.TarInfo:
    if e.kind not in KINDS:
        raise ValueError(f"{e.path}: unknown entry kind {e.kind}")
    ti = tarfile.TarInfo(e.path)
    ti.type = KINDS[e.kind]
    ti.mode = e.mode
    ti.uid, ti.gid = e.uid, e.gid
    ti.uname = ti.gname = ""
    ti.mtime = e.mtime
    ti.linkname = e.link
    ti.devmajor, ti.devminor = e.major, e.minor
    if e.kind == "file":
        ti.size = os.path.getsize(e.source) if e.source else len(e.data)
    if e.xattrs:
        if e.fmt != "pax":
            raise ValueError(f"{e.path}: xattrs need a PAX header")
        # tarfile takes str values; surrogateescape carries arbitrary bytes through, and
        # tarfile writes them back as the same bytes (adding hdrcharset=BINARY when they are
        # not UTF-8). check_xattrs_written() verifies the result.
        ti.pax_headers = {
            "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in e.xattrs.items()
        }
    return ti


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)

    def tell(self):
        return self.size


def write_tar(entries, path) -> tuple[str, int]:
    """Writes `entries` as an uncompressed tar at `path`; returns (sha256 hex, size)."""
    with open(path, "wb") as raw:
        out = _HashingWriter(raw)
        tf = tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8")
        for e in entries:
            tf.format = FORMATS[e.fmt]
            ti = _tarinfo(e)
            if e.kind == "file" and e.source:
                with open(e.source, "rb") as src:
                    tf.addfile(ti, src)
            elif e.kind == "file":
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
        tf.close()
        return out.sha.hexdigest(), out.size


def check_xattrs_written(entries, tar_path):
    """Fails unless every xattr value appears as its exact bytes in a PAX record of the tar."""
    with open(tar_path, "rb") as f:
        blob = f.read()
    for e in entries:
        for k, v in e.xattrs.items():
            rec = b"SCHILY.xattr." + k.encode() + b"=" + v + b"\n"
            if rec not in blob:
                raise RuntimeError(f"{e.path}: xattr {k} was not written as its binary value")


def compress(tar_path, out_path, kind):
    """Compresses a tar for a layer blob: kind is "tar" (copy), "gzip" or "zstd". gzip has no
    name and mtime 0, so the same tar always gives the same bytes."""
    if kind == "tar":
        with open(tar_path, "rb") as src, open(out_path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    elif kind == "gzip":
        with open(tar_path, "rb") as src, open(out_path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                while chunk := src.read(1 << 20):
                    gz.write(chunk)
    elif kind == "zstd":
        # Single-threaded level 3: the same zstd version gives the same bytes.
        subprocess.run(["zstd", "-q", "-f", "-3", "-T1", tar_path, "-o", out_path], check=True)
    else:
        raise ValueError(f"unknown compression {kind}")


def tree_entries(root, prefix="", owner=(0, 0), dir_mtime=FIXED_MTIME, skip=()):
    """Entries for the host tree `root` (e.g. packages unpacked with dpkg -x), parents first and
    names sorted bytewise. Owners are forced to `owner`; modes and file mtimes are kept as
    unpacked; directories and symlinks get `dir_mtime` (their unpack times vary). A file seen
    again through another name becomes a hardlink to the first. `skip` holds relative paths
    left out."""
    out = []
    seen = {}

    def walk(rel):
        full = os.path.join(root, rel) if rel else root
        names = sorted(os.listdir(full), key=os.fsencode)
        for name in names:
            r = f"{rel}/{name}" if rel else name
            if r in skip:
                continue
            p = os.path.join(root, r)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            path = prefix + r
            if stat.S_ISDIR(st.st_mode):
                out.append(Entry(path, "dir", mode, *owner, mtime=dir_mtime))
                walk(r)
            elif stat.S_ISLNK(st.st_mode):
                out.append(Entry(path, "symlink", 0o777, *owner, mtime=dir_mtime, link=os.readlink(p)))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    out.append(Entry(path, "hardlink", mode, *owner, mtime=int(st.st_mtime), link=seen[key]))
                else:
                    seen[key] = path
                    out.append(Entry(path, "file", mode, *owner, mtime=int(st.st_mtime), source=p))
            else:
                raise RuntimeError(f"{p}: unexpected file type in a package tree")

    walk("")
    return out
