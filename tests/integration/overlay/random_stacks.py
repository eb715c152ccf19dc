#!/usr/bin/env python3
"""Writes random layer stacks as OCI image layouts, for the differential test of the merge
(random_stacks_test.sh compares `imagefs export` of each with `umoci unpack`).

usage: random_stacks.py OUT_DIR COUNT SEED

Each stack has 2-5 layers of adds, deletes (whiteouts), opaque directories (markers before or
after the directory's entries), file<->directory replacements, symlinks, hardlinks within a layer
and to a lower layer, entries without their parent directory entry, and deletes followed by
recreation in the same layer. Layers are plain tar or gzip (umoci 0.4 reads no zstd). A simple
model of the merged tree picks meaningful targets; it is not the reference (umoci is).
Bare `.wh.` entries are left out: Debian's umoci 0.4 wrongly deletes the directory.
Half the stacks have a usr-merged base (`lib -> usr/lib` in a relative, absolute or climbing form,
`bin -> /usr/bin`, `lib64 -> lib` chained) and their upper layers write files, whiteouts and
opaque markers through those symlinks, with no entry for the symlinked directories (issue 12).
Any layer may also add a symlink and write under it in the same layer (relative, absolute,
climbing or chained targets, to an existing directory or to nothing yet), and whiteouts or opaque
markers in directories no layer has (issue 17).
"""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from fixtures_lib import layer, oci  # noqa: E402

NAMES = ["a", "b", "c", "d", "e"]
# The usr-merged symlinks, and where each leads.
MERGED = {"lib": "usr/lib", "bin": "usr/bin", "lib64": "usr/lib"}
KEEP = {"usr", "usr/lib", "usr/bin", "lib", "bin", "lib64"}  # left as they are by the other ops


def real_path(p):
    """A path with a usr-merged symlink in front resolved (the model keeps real paths)."""
    head, _, rest = p.partition("/")
    return MERGED[head] + "/" + rest if rest and head in MERGED else p


def parent(p):
    return p.rsplit("/", 1)[0] if "/" in p else ""


def random_stack(rng):
    model = {}  # path -> "file" | "dir" | "symlink": the merged view after each layer
    layers = []
    merged = rng.random() < 0.5
    for depth in range(rng.randint(2, 5)):
        entries, touched, added_files = [], set(), []
        if merged and depth == 0:
            entries += [layer.dir_("usr"), layer.dir_("usr/lib"), layer.dir_("usr/bin"),
                        layer.file("usr/lib/libc.so.6", b"libc"), layer.file("usr/bin/sh", b"sh", mode=0o755),
                        layer.symlink("lib", rng.choice(["usr/lib", "/usr/lib", "../usr/lib", "./usr//lib/"])),
                        layer.symlink("bin", "/usr/bin"), layer.symlink("lib64", "lib")]
            touched.update(KEEP | {"usr/lib/libc.so.6", "usr/bin/sh"})
        markers = []  # opaque markers, placed at random positions below

        def can_hold(p):  # every existing ancestor is a directory (umoci cannot mkdir through a file)
            q = parent(p)
            while q:
                if model.get(q, "dir") != "dir":
                    return False
                q = parent(q)
            return True

        def fresh_path():
            for _ in range(20):
                p = "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))
                if p not in touched and not any(t.startswith(p + "/") or p.startswith(t + "/") for t in touched) \
                        and can_hold(p):
                    return p
            return None

        redirects = {}  # this layer's own symlinks with entries under them: link -> real directory
        if rng.random() < 0.3:
            entries.append(layer.file("nodir%d/.wh.%s" % (depth, rng.choice(NAMES))))
        if rng.random() < 0.2:
            entries.append(layer.file("nodir%d/sub/.wh..wh..opq" % depth))
        if rng.random() < 0.5:
            # A symlink of this layer and entries under it: they go where it leads.
            dirs = [p for p in sorted(model) if model[p] == "dir" and p not in touched and p not in KEEP and
                    not any(p.startswith(t + "/") or t.startswith(p + "/") for t in touched)]
            real = rng.choice(dirs) if dirs and rng.random() < 0.6 else "new%d/deeper" % depth
            link = "s%d" % depth
            form = rng.choice(["rel", "abs", "climb", "chain"])
            target = {"rel": real, "abs": "/" + real, "climb": "../../" + real, "chain": link + "c"}[form]
            if form == "chain":
                entries.append(layer.symlink(link + "c", "/" + real))
            entries.append(layer.symlink(link, target))
            for name in rng.sample(NAMES, rng.randint(1, 3)):
                entries.append(layer.file(link + "/" + name + "-via", b"via " + link.encode()))
            touched.update({link, link + "c", real})
            redirects[link] = real
        for _ in range(rng.randint(3, 9)):
            op = rng.choice(["file", "file", "dir", "symlink", "hardlink", "whiteout", "opaque", "replace",
                             "recreate"])
            mtime = rng.choice([0, 1000000000, layer.FIXED_MTIME, 2000000000])
            existing = [p for p in sorted(model) if p not in touched and p not in KEEP and
                        not any(p.startswith(t + "/") or t.startswith(p + "/") for t in touched)]
            if merged and depth > 0 and rng.random() < 0.4:
                # Through a usr-merged symlink: a file (maybe in a new directory), or a whiteout
                # of what is there.
                link = rng.choice(sorted(MERGED))
                sub = rng.choice(["", "x86_64/", "modules/6.1/"])
                p = link + "/" + sub + rng.choice(NAMES)
                real = real_path(p)
                if real in touched or any(real.startswith(t + "/") or t.startswith(real + "/") for t in touched) \
                        or not can_hold(real):
                    continue
                if sub == "x86_64/" and model.get(real_path(parent(p))) == "dir" and rng.random() < 0.3:
                    # An opaque marker through the symlink: it empties where the symlink leads.
                    entries.append(layer.file(parent(p) + "/.wh..wh..opq"))
                    touched.add(real_path(parent(p)))
                    continue
                if model.get(real) == "file" and rng.random() < 0.5:
                    entries.append(layer.file(parent(p) + "/.wh." + p.rsplit("/", 1)[-1], mtime=mtime))
                elif model.get(real, "file") == "file":
                    entries.append(layer.file(p, rng.randbytes(rng.choice([0, 10])), mtime=mtime))
                else:
                    continue
                touched.add(real)
                continue
            if op in ("file", "dir", "symlink"):
                p = fresh_path()
                if p is None:
                    continue
                if op == "file":
                    data = rng.randbytes(rng.choice([0, 1, 100, 5000]))
                    mode = rng.choice([0o644, 0o600, 0o755, 0o4755, 0o2711, 0o444])
                    entries.append(layer.file(p, data, mode=mode, uid=rng.choice([0, 1000]), mtime=mtime))
                    added_files.append(p)
                elif op == "dir":
                    entries.append(layer.dir_(p, mode=rng.choice([0o755, 0o700, 0o1777]), mtime=mtime))
                else:
                    entries.append(layer.symlink(p, rng.choice(["a", "../b", "/c/d", "nowhere"]), mtime=mtime))
                touched.add(p)
            elif op == "hardlink":
                lower = [p for p in existing if model[p] == "file"]
                targets = added_files + lower
                p = fresh_path()
                if not targets or p is None:
                    continue
                t = rng.choice(targets)
                # umoci 0.4 makes no parents for a hardlink entry: keep its parent an existing one.
                if t == p or p.startswith(t + "/") or t.startswith(p + "/") or \
                        (parent(p) and model.get(parent(p)) != "dir"):
                    continue
                entries.append(layer.hardlink(p, t))
                touched.add(p)
                if t in lower:
                    touched.add(t)  # keep the lower target as it is in this layer
            elif op == "whiteout" and existing:
                p = rng.choice(existing)
                d = parent(p)
                entries.append(layer.file((d + "/" if d else "") + ".wh." + p.rsplit("/", 1)[-1], mtime=mtime))
                touched.add(p)
            elif op == "opaque":
                dirs = [p for p in existing if model[p] == "dir"]
                if not dirs:
                    continue
                p = rng.choice(dirs)
                markers.append(p)
                touched.add(p)
                if rng.random() < 0.7:  # and something new inside it
                    child = p + "/" + rng.choice(NAMES)
                    entries.append(layer.file(child, b"opaque child", mtime=mtime))
            elif op == "replace" and existing:
                p = rng.choice(existing)
                if model[p] == "dir":
                    entries.append(layer.file(p, b"was a directory", mtime=mtime))
                else:
                    entries.append(layer.dir_(p, mtime=mtime))
                    entries.append(layer.file(p + "/inside", b"was a file", mtime=mtime))
                touched.add(p)
            elif op == "recreate":
                dirs = [p for p in existing if model[p] == "dir"]
                if not dirs:
                    continue
                p = rng.choice(dirs)
                d = parent(p)
                entries.append(layer.file((d + "/" if d else "") + ".wh." + p.rsplit("/", 1)[-1]))
                entries.append(layer.dir_(p, mode=0o750, mtime=mtime))
                entries.append(layer.file(p + "/new", b"recreated", mtime=mtime))
                touched.add(p)
        for p in markers:
            pos = rng.randint(0, len(entries))
            entries.insert(pos, layer.file(p + "/.wh..wh..opq"))
        if not entries:
            entries.append(layer.file("keep-%d" % depth, b"x"))
        layers.append((entries, rng.choice(["tar", "gzip"]), "random layer %d" % depth))
        model = {real_path(p): kind for p, kind in apply(model, entries).items()}
        for link, real in redirects.items():  # what went under the layer's own symlinks
            for p in [p for p in model if p.startswith(link + "/")]:
                model[real + p[len(link):]] = model.pop(p)
            model[link] = "symlink"
            q = real
            while q:
                model.setdefault(q, "dir")
                q = parent(q)
    return layers


def apply(model, entries):
    """A rough model of the merged tree after one more layer, only to pick later targets."""
    m = dict(model)
    opaque = [real_path(e.path[: -len("/.wh..wh..opq")]) for e in entries if e.path.endswith("/.wh..wh..opq")]
    for d in opaque:
        for p in list(m):
            if p.startswith(d + "/"):
                del m[p]
    for e in entries:
        name = e.path.rsplit("/", 1)[-1]
        if name == ".wh..wh..opq":
            continue
        if name.startswith(".wh."):
            gone = real_path((parent(e.path) + "/" if parent(e.path) else "") + name[4:])
            for p in list(m):
                if p == gone or p.startswith(gone + "/"):
                    del m[p]
            continue
        kind = {"file": "file", "hardlink": "file", "dir": "dir", "symlink": "symlink"}[e.kind]
        if kind != "dir":
            for p in list(m):
                if p.startswith(e.path + "/"):
                    del m[p]
        m[e.path] = kind
        q = parent(e.path)
        while q:
            m.setdefault(q, "dir")
            q = parent(q)
    return m


def main():
    out, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for i in range(count):
        rng = random.Random(seed * 100003 + i)
        lay = oci.Layout(os.path.join(out, "stack-%d" % i))
        top = lay.add_image(random_stack(rng), {"Cmd": ["/bin/sh"]}, {"os": "linux", "architecture": "amd64"})
        lay.finish(top)
        print(os.path.join(out, "stack-%d" % i))


if __name__ == "__main__":
    main()
