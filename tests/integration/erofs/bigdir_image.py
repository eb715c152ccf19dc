#!/usr/bin/env python3
"""Writes an OCI image layout whose one layer stresses EROFS directories: a directory of 3000
entries with names of 1 to 255 bytes (odd bytes included), so its dirents span many blocks;
empty files and directories; files of sizes around the 4 KiB block; owners past 65535.

usage: bigdir_image.py OUT_DIR
"""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from fixtures_lib import layer, oci  # noqa: E402


def main():
    out = sys.argv[1]
    rng = random.Random(13)
    entries = [layer.dir_("big"), layer.dir_("empty_dir"), layer.file("empty_file", b"")]
    names = set()
    while len(names) < 3000:
        n = rng.randint(1, 255)
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_.~ +=,") for _ in range(n))
        if name in (".", "..") or name.startswith("./"):
            continue
        names.add(name)
    names.add("\u00e9t\u00e9 \u2603")  # UTF-8
    names.add("x" * 255)
    for name in sorted(names):
        entries.append(layer.file("big/" + name, name[:40].encode(), mtime=1600000000 + len(name)))
    for size in (4095, 4096, 4097, 8192 + 1):
        entries.append(layer.file("sizes/f%d" % size, bytes(rng.getrandbits(8) for _ in range(size))))
    entries.append(layer.file("owners/high", b"high ids\n", uid=100000, gid=70000))
    lay = oci.Layout(out)
    top = lay.add_image([(entries, "gzip", "big directory")], {"Cmd": ["/bin/sh"]},
                        {"os": "linux", "architecture": "amd64"})
    lay.finish(top)


if __name__ == "__main__":
    main()
