#!/usr/bin/env python3
"""Checks of a mounted imagefs that the shell does badly (used by tests/integration/mount/).

usage:
  mountcheck.py reads FILE REFERENCE   reads at random offsets and lengths (pread, also past the end),
                                       backwards in 64 KiB steps, and through mmap (QEMU maps its
                                       initrd): every byte must equal REFERENCE's, and st_size its size
  mountcheck.py inodes DIR...          readdir's d_ino of every entry equals lstat's st_ino
                                       (fuse-overlayfs#391 was a mismatch between the two)
Exit status 0 when everything matches; otherwise one line per problem (at most 20) and 1.
"""
import hashlib
import mmap
import os
import random
import sys


def reads(path, ref):
    want = open(ref, "rb").read()
    problems = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size != len(want):
            return [f"{path}: st_size {size}, but the reference has {len(want)} bytes"]
        rnd = random.Random(size)
        for _ in range(300):
            off = rnd.randrange(0, size + 4096)
            n = rnd.choice([1, 3, 511, 4096, 4097, 65536, 131072 + 5, 1 << 20, rnd.randrange(1, 400000)])
            got = os.pread(fd, n, off)
            if got != want[off:off + n]:
                problems.append(f"{path}: pread({n}, {off}) returned {len(got)} bytes that differ "
                                f"from the reference's {len(want[off:off + n])}")
        off = size
        while off > 0:
            start = max(0, off - 65536)
            if os.pread(fd, off - start, start) != want[start:off]:
                problems.append(f"{path}: backwards read at {start} differs")
                break
            off = start
        if size:
            with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
                if hashlib.sha256(m).digest() != hashlib.sha256(want).digest():
                    problems.append(f"{path}: the bytes read through mmap differ from the reference")
    finally:
        os.close(fd)
    return problems


def inodes(dirs):
    problems, n = [], 0
    for d in dirs:
        with os.scandir(d) as it:
            for e in it:
                n += 1
                st = os.lstat(e.path)
                if e.inode() != st.st_ino:
                    problems.append(f"{e.path}: readdir ino {e.inode()}, lstat ino {st.st_ino}")
    if not n:
        problems.append("no entries listed")
    return problems


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("reads", "inodes"):
        sys.exit(__doc__)
    problems = reads(sys.argv[2], sys.argv[3]) if sys.argv[1] == "reads" else inodes(sys.argv[2:])
    for p in problems[:20]:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
