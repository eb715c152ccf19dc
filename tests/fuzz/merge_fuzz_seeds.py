#!/usr/bin/env python3
"""Writes the seed corpus of merge_fuzz (tests/fuzz/corpus/merge_fuzz): layer stacks encoded as the
choices random_layer() in merge_fuzz.cpp reads. usage: merge_fuzz_seeds.py OUT_DIR"""
import sys
N = {"a": 0, "b": 1, "c": 2}
def path(p):
    parts = p.split("/")
    return [N[parts[0]], len(parts) - 1] + [N[x] for x in parts[1:]]
OPS = {"file": 0, "dir": 2, "symlink": 3, "hardlink": 5, "whiteout": 6, "opaque": 8}
def step(op, p, arg=None, mode=0, uid=0, mtime=0):
    out = [mode, uid, mtime] + path(p) + [OPS[op]]
    if op == "file": out += [arg or 1, 0]
    elif op == "symlink":
        form, target = arg  # 0 abs, 1 ./x/, 2 "/", 3 relative, 4 ../../ (base only)
        out += [form] + ([] if form == 2 else path(target))
    elif op == "hardlink": out += path(arg)
    elif op == "opaque": out += [1 if arg is None else arg]
    return out
def stack(layers):
    out = [len(layers) - 1]
    for steps in layers:
        out += [len(steps) - 1]
        for s in steps: out += s
    return bytes(out)
seeds = {
 "opaque_through_lower": [[step("dir", "a"), step("dir", "a/b"), step("file", "a/b/c"), step("symlink", "c", (3, "a/b"))],
                          [step("opaque", "c"), step("file", "c/a")]],
 "same_layer_symlink": [[step("symlink", "a", (3, "b/c")), step("file", "a/a"), step("symlink", "c", (0, "b")), step("file", "c/b"), step("hardlink", "a/b", "c/b")]],
 "whiteouts_nowhere": [[step("file", "a")], [step("whiteout", "b/c"), step("opaque", "c/a"), step("whiteout", "c/c/c")]],
 "usr_merged": [[step("dir", "b"), step("dir", "b/a"), step("file", "b/a/c"), step("symlink", "a", (4, "b/a"))],
                [step("file", "a/b/c"), step("whiteout", "a/c"), step("symlink", "c", (1, "a/b"))],
                [step("file", "c/a"), step("opaque", "a/b"), step("file", "a/a")]],
 "loop": [[step("symlink", "a", (3, "b")), step("symlink", "b", (0, "a/c"))], [step("file", "a/a")]],
 "recreate": [[step("dir", "a"), step("file", "a/a"), step("symlink", "b", (3, "a"))],
              [step("whiteout", "b"), step("file", "b/c"), step("whiteout", "a"), step("dir", "a"), step("file", "a/b")]],
}
for name, layers in seeds.items():
    open(sys.argv[1] + "/" + name, "wb").write(stack(layers))
