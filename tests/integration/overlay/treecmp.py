#!/usr/bin/env python3
"""Compares two directory trees entry by entry: the path set, type, mode, owner, size, content
hash, symlink target, device numbers, xattrs, mtimes and hardlink groups. Used to check
`imagefs export` against `umoci unpack` (the reference) and against its own --tar output.

usage: treecmp.py OURS REFERENCE [--synthesized-after UNIX_TIME] [--no-xattrs]
                  [--no-mtimes TYPE[,TYPE...]] [--allow-extra PATH]...

--synthesized-after: directories of REFERENCE whose mtime is at or after this time were made by
the reference tool itself (umoci gives parents that no layer has an entry for the unpack time),
so their mtimes are not compared.
--no-xattrs: xattrs are not compared (a newc cpio archive cannot hold them).
--no-mtimes: mtimes of entries of these types (file dir symlink char block fifo) are not
compared (GNU cpio -idm restores neither directories' nor symlinks' mtimes).
--allow-extra: PATH (relative) and everything under it may exist in OURS only (files a test
added, such as an initramfs' /init and injected files); it is not compared.
"""
import argparse
import hashlib
import os
import stat
import sys


def describe(root):
    entries, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            d = {
                "type": {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}.get(kind, "?"),
                "mode": oct(stat.S_IMODE(st.st_mode)),
                "owner": (st.st_uid, st.st_gid),
                "mtime": st.st_mtime_ns,
            }
            if kind == stat.S_IFREG:
                d["size"] = st.st_size
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                d["sha256"] = h.hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            if kind == stat.S_IFLNK:
                d["target"] = os.readlink(full)
                del d["mode"]  # symlink modes are not kept by every filesystem
            if kind in (stat.S_IFCHR, stat.S_IFBLK):
                d["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                d["xattrs"] = {n: os.getxattr(full, n, follow_symlinks=False)
                               for n in sorted(os.listxattr(full, follow_symlinks=False))}
            except OSError:
                d["xattrs"] = {}
            entries[rel] = d
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for p in paths:
            entries[p]["hardlinks"] = group
    return entries


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("reference")
    ap.add_argument("--synthesized-after", type=float)
    ap.add_argument("--no-xattrs", action="store_true")
    ap.add_argument("--no-mtimes", default="")
    ap.add_argument("--allow-extra", action="append", default=[])
    args = ap.parse_args()
    no_mtimes = {t for t in args.no_mtimes.split(",") if t}
    extra_ok = [os.path.normpath(p) for p in args.allow_extra]
    ours, ref = describe(args.ours), describe(args.reference)
    problems = []
    for p in sorted(set(ours) | set(ref)):
        if p not in ref and any(p == e or p.startswith(e + "/") for e in extra_ok):
            continue
        if p not in ours:
            problems.append(f"missing: {p} ({ref[p]['type']})")
            continue
        if p not in ref:
            problems.append(f"extra: {p} ({ours[p]['type']})")
            continue
        a, b = dict(ours[p]), dict(ref[p])
        if (args.synthesized_after is not None and b["type"] == "dir"
                and b["mtime"] >= args.synthesized_after * 1e9):
            a.pop("mtime"), b.pop("mtime")
        if a["type"] in no_mtimes or b["type"] in no_mtimes:
            a.pop("mtime", None), b.pop("mtime", None)
        if args.no_xattrs:
            a.pop("xattrs"), b.pop("xattrs")
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"{p}: {key}: ours {a.get(key)!r}, reference {b.get(key)!r}")
    print(f"treecmp: {len(ours)} entries compared with {len(ref)}: {len(problems)} differences")
    for line in problems[:40]:
        print("  " + line)
    if len(problems) > 40:
        print(f"  ... and {len(problems) - 40} more")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
