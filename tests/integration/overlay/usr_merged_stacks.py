#!/usr/bin/env python3
"""Writes OCI image layouts whose upper layers write through symlinked directories, for
usr_merged_vs_umoci_test.sh (issue 12): a usr-merged base (bin -> usr/bin, lib -> usr/lib) and
upper layers with no entry for the symlinked directories themselves. Layers are gzip (umoci 0.4
reads no zstd).

usage: usr_merged_stacks.py OUT_DIR [CASE...]   (prints one layout path per case)
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from fixtures_lib import layer, oci  # noqa: E402


def base():
    return [
        layer.dir_("usr"), layer.dir_("usr/bin"), layer.file("usr/bin/sh", b"sh", mode=0o755),
        layer.file("usr/bin/old", b"old", mode=0o755), layer.dir_("usr/lib"),
        layer.file("usr/lib/libc.so.6", b"libc"), layer.dir_("usr/lib/x86_64"),
        layer.file("usr/lib/x86_64/ld.so", b"ld"), layer.dir_("etc"),
        layer.symlink("bin", "usr/bin"), layer.symlink("lib", "usr/lib"),
        layer.symlink("etc/alt", "../usr/lib"),
    ]


CASES = {
    # The case, as a new user tried it.
    "issue": [
        base(),
        [layer.file("bin/added", b"added", mode=0o755), layer.file("lib/x86_64/libnew.so", b"new"),
         layer.file("etc/alt/file", b"alt"), layer.file("bin/.wh.old")],
    ],
    # Absolute, chained and escaping targets, a symlink to nothing yet, and a later layer going
    # through what an earlier redirect made.
    "targets": [
        base() + [layer.symlink("lib64", "/usr/lib"), layer.symlink("a", "b"),
                  layer.symlink("b", "/lib/x86_64"), layer.symlink("etc/esc", "../../../../usr/bin"),
                  layer.symlink("opt", "usr/local/opt")],
        [layer.file("lib64/via-absolute", b"1"), layer.file("a/via-chain", b"2"),
         layer.file("etc/esc/via-dotdot", b"3"), layer.file("opt/app/run", b"4", mode=0o755)],
        [layer.file("lib/modules/6.1.0/modules.dep", b"kernel/x.ko:\n"),
         layer.file("lib/modules/6.1.0/kernel/x.ko", b"\x7fELF"), layer.file("lib/x86_64/.wh.ld.so")],
    ],
    # A symlink and entries under it in one layer (no lower symlink): relative, absolute,
    # chained, escaping with .., to the root; entries before the symlink go with what it replaces.
    "samelayer": [
        [layer.dir_("usr"), layer.dir_("etc"), layer.symlink("lib", "usr/lib"), layer.file("lib/x.so", b"x"),
         layer.symlink("abs", "/usr/abs"), layer.file("abs/1", b"1"), layer.symlink("a", "b"),
         layer.symlink("b", "/usr/chain"), layer.file("a/2", b"2"), layer.symlink("etc/esc", "../../../usr/esc"),
         layer.file("etc/esc/3", b"3"), layer.file("early/4", b"4"), layer.symlink("early", "usr/early"),
         layer.symlink("top", "/"), layer.file("top/5", b"5"), layer.hardlink("abs/6", "a/2")],
        [layer.symlink("bin", "usr/bin"), layer.file("bin/7", b"7"), layer.file("lib/8", b"8")],
    ],
    # Whiteouts and opaque markers through symlinks, the layer's own and the base's: they act
    # where the symlink leads (umoci empties usr/lib for lib/.wh..wh..opq).
    "markers": [
        base(),
        [layer.file("lib/.wh..wh..opq"), layer.file("lib/fresh", b"f"), layer.symlink("b2", "/usr/bin"),
         layer.file("b2/.wh.old"), layer.file("etc/alt/.wh..wh..opq")],
    ],
    # Whiteouts where nothing is (issue 17): no directory is made for them; a real entry beside
    # one makes its directory; a whited-out lower symlink and a new directory in its place.
    "nowhere": [
        base() + [layer.symlink("dangling", "nowhere/deep")],
        [layer.file("nodir/.wh.zz"), layer.file("n1/n2/.wh..wh..opq"), layer.file("nodir2/.wh..wh..opq"),
         layer.file("real/.wh.zz"), layer.file("real/f", b"f"), layer.file("usr/n3/.wh.zz"),
         layer.file("dangling/.wh.x"), layer.file(".wh.bin"), layer.file("bin/own", b"own")],
    ],
    # An explicit directory entry replaces the symlink (docker's rule, docs/LAYER_FORMAT.md).
    "explicit": [
        base(),
        [layer.dir_("lib", mode=0o700), layer.file("lib/own", b"own"), layer.file("bin/added", b"a")],
    ],
}


def main():
    out = sys.argv[1]
    for name in sys.argv[2:] or sorted(CASES):
        lay = oci.Layout(os.path.join(out, name))
        layers = [(entries, "gzip", "%s layer %d" % (name, i)) for i, entries in enumerate(CASES[name])]
        top = lay.add_image(layers, {"Cmd": ["/bin/sh"]}, {"os": "linux", "architecture": "amd64"})
        lay.finish(top)
        print(os.path.join(out, name))


if __name__ == "__main__":
    main()
