# The fixture images: what each layer holds. tests/fixtures/README.md documents the result and
# must change with this file.
import os
import subprocess

from . import debs, oci
from .layer import FIXED_MTIME, Entry, dir_, file, hardlink, symlink, tree_entries

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}

# Package tools that a program running in the image does not need; resolve() leaves them out
# together with what only they pull in (perl through mime-support, dpkg through install-info).
STOP = {"dpkg", "install-info", "debconf", "perl-base", "perl", "mime-support", "tar", "python3"}


def sort_entries(entries):
    """Parents before children, names in bytewise order; a later entry for a path replaces an
    earlier one."""
    by_path = {}
    for e in entries:
        by_path[e.path.rstrip("/")] = e
    return sorted(by_path.values(), key=lambda e: tuple(os.fsencode(e.path).split(b"/")))


def base_dirs():
    """The directories a Linux root needs, with their usual modes."""
    return [
        dir_("bin"), dir_("dev"), dir_("etc"), dir_("home"), dir_("proc", 0o555),
        dir_("root", 0o700), dir_("run"), dir_("sbin"), dir_("sys", 0o555), dir_("tmp", 0o1777),
        dir_("usr"), dir_("usr/bin"), dir_("usr/sbin"), dir_("var"),
    ]


def accounts(hostname):
    return [
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        file("etc/hostname", hostname + "\n"),
    ]


def busybox_applets(busybox):
    """Symlinks for every applet of the (host-runnable) busybox binary: /bin/NAME -> busybox,
    elsewhere -> /bin/busybox."""
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
    links = []
    for path in sorted(set(out.split())):
        if "/" not in path or path == "bin/busybox":
            continue  # "linuxrc" belongs to old-style initrds, not to an image
        links.append(symlink(path, "busybox" if path.startswith("bin/") else "/bin/busybox"))
    return links


class Image:
    name = ""
    description = ""
    default = True

    def __init__(self, ctx):
        self.ctx = ctx

    def inputs(self):
        """Strings that, with the builder's code, determine the image's bytes; resolving them
        must be cheap when nothing changed."""
        return []

    def build(self, layout: oci.Layout):
        raise NotImplementedError


class Context:
    def __init__(self, work, log):
        self.work, self.log = work, log

    def deb(self, name, version, arch="amd64"):
        return debs.fetch(name, version, arch, log=self.log)

    def staging(self, name, debfiles):
        d = os.path.join(self.work, name)
        debs.unpack(debfiles, d)
        return d


class Tiny(Image):
    name = "tiny"
    description = "busybox-static in two layers (binary + base dirs, then applet links + /etc files)"

    def inputs(self):
        self.versions = debs.resolve_cached("tiny", ["busybox-static"])
        return [f"{k}={v}" for k, v in sorted(self.versions.items())]

    def build(self, layout):
        st = self.ctx.staging("busybox", [self.ctx.deb("busybox-static", self.versions["busybox-static"])])
        bb = os.path.join(st, "bin", "busybox")
        l1 = sort_entries(base_dirs() + [Entry("bin/busybox", "file", 0o755, source=bb, mtime=int(os.stat(bb).st_mtime))])
        l2 = sort_entries(
            [dir_("bin"), dir_("etc"), dir_("sbin"), dir_("usr"), dir_("usr/bin"), dir_("usr/sbin")]
            + busybox_applets(bb)
            + accounts("tiny")
        )
        return layout.add_image(
            [(l1, "gzip", "busybox and base directories"), (l2, "gzip", "applet symlinks, /etc files")],
            {"Cmd": ["/bin/sh"], "Env": [PATH_ENV]},
            AMD64,
        )


# A v2 file capability blob (what `setcap cap_net_bind_service+ep` stores): magic 0x02000001
# (revision 2, effective), permitted = 1<<10 (CAP_NET_BIND_SERVICE), inheritable 0, high words 0.
CAP_NET_BIND_SERVICE = bytes.fromhex("0100000200040000000000000000000000000000")
BINARY_XATTR = b"\x00\xffbinary\x80\xfe\x00"  # not UTF-8: written with hdrcharset=BINARY

LONG_DIR = "d" * 60
LONG_FILE = "f" * 60 + ".txt"  # data/long/<60>/<64>: 135 bytes
HUGE_DIR1, HUGE_DIR2 = "x" * 200, "y" * 100  # data/long/<200>/<100>/file.txt: 320 bytes
NAME255 = "n" * 251 + ".txt"  # one component of exactly 255 bytes
USTAR_DIR = "ustar_prefix_" + "p" * 80  # stored with the ustar prefix field, no PAX path
GNU_NAME = "gnu_longname_" + "g" * 140 + ".txt"  # stored as a GNU ././@LongLink entry
LONG_TARGET = "/" + "t" * 150 + "/target"  # symlink target longer than 100 bytes


class Edge(Image):
    name = "edge"
    description = "every layer feature: whiteouts, opaque dirs, hardlinks, devices, xattrs, long/UTF-8 names; 4 layers, all 3 media types"

    def build(self, layout):
        L1 = [
            dir_("etc"),
            file("etc/hostname", "edge\n"),
            file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"),
            file("etc/group", "root:x:0:\nalice:x:1000:\n"),
            dir_("tmp", 0o1777),
            dir_("home"),
            dir_("home/alice", 0o750, uid=1000, gid=1000),
            file("home/alice/notes.txt", "alice's notes\n", 0o640, uid=1000, gid=1000),
            dir_("data"),
            file("data/deleted_file.txt", "deleted by layer 2\n"),
            dir_("data/deleted_dir"),
            file("data/deleted_dir/a.txt", "a\n"),
            dir_("data/deleted_dir/sub"),
            file("data/deleted_dir/sub/b.txt", "b\n"),
            dir_("data/opaque"),
            file("data/opaque/lower.txt", "hidden by the opaque marker\n"),
            dir_("data/opaque/lower_sub"),
            file("data/opaque/lower_sub/x.txt", "x\n"),
            dir_("data/opaque_late"),
            file("data/opaque_late/lower.txt", "hidden by the late opaque marker\n"),
            file("data/file_to_dir", "a file that layer 2 replaces by a directory\n"),
            dir_("data/dir_to_file"),
            file("data/dir_to_file/inner.txt", "gone with its directory\n"),
            dir_("data/dir_to_file/inner_dir"),
            file("data/dir_to_file/inner_dir/deep.txt", "gone too\n"),
            file("data/recreated_file.txt", "version 1\n"),
            dir_("data/recreated_dir"),
            file("data/recreated_dir/old.txt", "old\n"),
            dir_("data/reborn_dir"),
            file("data/reborn_dir/stale.txt", "stale\n"),
            file("data/meta_change.txt", "same bytes, new metadata in layer 4\n"),
            file("data/lower_target.txt", "hardlinked from layer 2\n"),
            dir_("data/hardlinks"),
            file("data/hardlinks/original", "three names, one inode\n"),
            hardlink("data/hardlinks/second", "data/hardlinks/original"),
            hardlink("data/hardlinks/third", "data/hardlinks/original"),
            dir_("data/special"),
            Entry("data/special/null", "char", 0o666, major=1, minor=3),
            Entry("data/special/loop0", "block", 0o660, gid=6, major=7, minor=0),
            Entry("data/special/fifo", "fifo", 0o620),
            dir_("data/modes"),
            file("data/modes/setuid", "#!/bin/sh\n", 0o4755),
            file("data/modes/setgid", "#!/bin/sh\n", 0o2755),
            file("data/modes/private", "secret\n", 0o600),
            file("data/modes/readonly", "read only\n", 0o444),
            file("data/modes/none", "no permissions\n", 0o000),
            dir_("data/modes/setgid_dir", 0o2775),
            dir_("data/modes/sticky_dir", 0o1777),
            dir_("data/owners"),
            file("data/owners/alice_file", "alice\n", uid=1000, gid=1000),
            file("data/owners/odd_ids", "odd\n", 0o640, uid=12345, gid=54321),
            file("data/owners/big_ids", "ids beyond 8 octal digits\n", uid=4000000, gid=4000001),
            dir_("data/owners/alice_dir", 0o700, uid=1000, gid=1000),
            symlink("data/owners/alice_link", "alice_file", uid=1000, gid=1000),
            dir_("data/xattrs"),
            file("data/xattrs/net_bind", "#!/bin/sh\n", 0o755, xattrs={"security.capability": CAP_NET_BIND_SERVICE}),
            file("data/xattrs/user_attrs", "user xattrs\n", xattrs={"user.imagefs.text": b"hello xattr", "user.imagefs.binary": BINARY_XATTR}),
            dir_("data/symlinks"),
            symlink("data/symlinks/absolute", "/etc/hostname"),
            symlink("data/symlinks/relative", "../recreated_file.txt"),
            symlink("data/symlinks/dangling", "/does/not/exist"),
            symlink("data/symlinks/dangling_relative", "missing_sibling"),
            symlink("data/symlinks/dir_link", "../opaque"),
            symlink("data/symlinks/chain", "relative"),
            symlink("data/symlinks/loop", "loop"),
            symlink("data/symlinks/long_target", LONG_TARGET),
            dir_("data/long"),
            dir_(f"data/long/{LONG_DIR}"),
            file(f"data/long/{LONG_DIR}/{LONG_FILE}", "path longer than 100 bytes\n"),
            dir_(f"data/long/{HUGE_DIR1}"),
            dir_(f"data/long/{HUGE_DIR1}/{HUGE_DIR2}"),
            file(f"data/long/{HUGE_DIR1}/{HUGE_DIR2}/file.txt", "path longer than 255 bytes\n"),
            file(f"data/long/{NAME255}", "a 255-byte name\n"),
            dir_(f"data/long/{USTAR_DIR}", fmt="ustar"),
            file(f"data/long/{USTAR_DIR}/file.txt", "ustar prefix\n", fmt="ustar"),
            file(f"data/long/{GNU_NAME}", "gnu long name\n", fmt="gnu"),
            dir_("data/unicode"),
            file("data/unicode/héllo wörld.txt", "latin-1 range\n"),
            dir_("data/unicode/日本語"),
            file("data/unicode/日本語/ファイル.txt", "CJK\n"),
            file("data/unicode/emoji_😀.txt", "astral plane\n"),
            dir_("data/with space"),
            file("data/with space/a file with spaces.txt", "spaces\n"),
            file("data/with space/two  spaces .txt", "double and trailing-before-dot spaces\n"),
            file("data/empty_file", ""),
            dir_("data/empty_dir"),
            dir_("data/mtimes", mtime=1234567890),
            file("data/mtimes/epoch.txt", "1970\n", mtime=0),
            file("data/mtimes/y2001.txt", "2001\n", mtime=1000000000),
            file("data/mtimes/y2100.txt", "2100\n", mtime=4102444800),
            # No entries for implicit/ or implicit/parent/ in any layer.
            file("implicit/parent/file.txt", "my parents have no tar entries\n"),
        ]
        L2 = [
            dir_("data"),
            file("data/.wh.deleted_file.txt"),
            file("data/.wh.deleted_dir"),
            file("data/.wh.never_existed"),
            dir_("data/opaque"),
            file("data/opaque/.wh..wh..opq"),
            file("data/opaque/upper.txt", "from layer 2\n"),
            dir_("data/opaque_late"),
            file("data/opaque_late/new.txt", "from layer 2, before the marker\n"),
            file("data/opaque_late/.wh..wh..opq"),
            dir_("data/file_to_dir"),
            file("data/file_to_dir/child.txt", "now a directory\n"),
            file("data/dir_to_file", "now a file\n"),
            file("data/.wh.recreated_file.txt"),
            file("data/.wh.recreated_dir"),
            hardlink("data/upper_hardlink", "data/lower_target.txt"),
            file("data/layer2_empty", ""),
        ]
        L3 = [
            file("data/recreated_file.txt", "version 3\n", 0o600),
            dir_("data/recreated_dir", 0o700),
            file("data/recreated_dir/new.txt", "new\n"),
            file("data/.wh.reborn_dir"),
            dir_("data/reborn_dir"),
            file("data/reborn_dir/fresh.txt", "fresh\n"),
            file("data/deep/nested/path/file.txt", "no parent entries in this layer or below\n"),
            dir_("data/hardlinks3"),
            file("data/hardlinks3/a", "hardlinked in a zstd layer\n", 0o640),
            hardlink("data/hardlinks3/b", "data/hardlinks3/a", 0o640),
        ]
        L4 = [
            dir_("./"),
            dir_("./data"),
            file("./data/dup.txt", "first\n"),
            file("./data/dup.txt", "second\n"),
            file("./data/meta_change.txt", "same bytes, new metadata in layer 4\n", 0o600, uid=1000, gid=1000, mtime=1600000000),
            file("./data/latest.txt", "layer 4\n"),
        ]
        return layout.add_image(
            [
                (L1, "gzip", "base: every entry type, mode, owner, xattr and name"),
                (L2, "tar", "whiteouts, opaque dirs, type changes, hardlink to a lower layer"),
                (L3, "zstd", "recreations, implicit parents, hardlinks"),
                (L4, "gzip", "./-prefixed names, duplicate entry, metadata-only change"),
            ],
            {
                "Env": [PATH_ENV, "EDGE_GREETING=hello world"],
                "WorkingDir": "/data",
                "User": "1000:1000",
                "Labels": {"org.imagefs.fixture": "edge"},
            },
            AMD64,
        )


class DebImage(Image):
    """A base layer of libraries (plus busybox for a shell) and an app layer of the program's own
    packages, from Debian's archive."""

    roots: list[str] = []
    app: set[str] = set()  # packages of the app layer; the rest of the closure is the base
    extra_base: list[str] = []
    stop: set[str] = STOP
    cmd: list[str] = []
    app_links: list[tuple[str, str]] = []  # symlinks that maintainer scripts would have made
    default = False

    def inputs(self):
        self.versions = debs.resolve_cached(self.name, self.roots, self.stop, self.extra_base + ["busybox-static"])
        return [f"{k}={v}" for k, v in sorted(self.versions.items())]

    def is_app(self, pkg):
        return pkg in self.app

    def build(self, layout):
        base_pkgs = sorted(p for p in self.versions if not self.is_app(p))
        app_pkgs = sorted(p for p in self.versions if self.is_app(p))
        self.ctx.log(f"{self.name}: base {' '.join(base_pkgs)}")
        self.ctx.log(f"{self.name}: app {' '.join(app_pkgs)}")
        base = self.ctx.staging("base", [self.ctx.deb(p, self.versions[p]) for p in base_pkgs])
        app = self.ctx.staging("app", [self.ctx.deb(p, self.versions[p]) for p in app_pkgs])
        base_entries = tree_entries(base)
        extras = base_dirs() + accounts(self.name) + busybox_applets(os.path.join(base, "bin", "busybox"))
        # Packaged entries come last so they win: base_dirs() and the applets only fill gaps.
        l1 = sort_entries(extras + base_entries)
        l2 = sort_entries(tree_entries(app) + [symlink(p, t) for p, t in self.app_links])
        return layout.add_image(
            [(l1, "gzip", "shared libraries and busybox"), (l2, "zstd", f"{self.name} packages")],
            {"Cmd": self.cmd, "Env": [PATH_ENV]},
            AMD64,
        )


class Python(DebImage):
    name = "python"
    description = "Debian's python3.11 (~45 MB): base layer of libraries + busybox, app layer of python packages"
    default = True
    roots = ["python3.11"]
    app = {"python3.11", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib"}
    extra_base = ["libgdbm6"]
    cmd = ["/usr/bin/python3"]
    app_links = [("usr/bin/python3", "python3.11")]


class Node(DebImage):
    name = "node"
    description = "Debian's nodejs 18 with its libraries (on demand, for benchmarks)"
    roots = ["nodejs"]
    cmd = ["/usr/bin/node"]

    def is_app(self, pkg):
        return pkg in ("nodejs", "libnode108") or pkg.startswith("node-")


class Rust(DebImage):
    name = "rust"
    description = "Debian's rustc with libstd-rust-dev, gcc and binutils to link (on demand, for benchmarks)"
    roots = ["rustc", "libstd-rust-dev"]
    cmd = ["/usr/bin/rustc", "--version"]
    app_links = [("usr/bin/cc", "gcc")]  # rustc links through "cc", an update-alternatives link

    def is_app(self, pkg):
        return pkg == "rustc" or pkg.startswith("libstd-rust")


class Multiarch(Image):
    name = "multiarch"
    description = "OCI index: linux/amd64 and linux/arm64/v8, a shared layer + a per-arch busybox layer, /etc/arch"

    def inputs(self):
        self.versions = debs.resolve_cached("tiny", ["busybox-static"])
        try:
            self.arm64_deb = debs.fetch_foreign("busybox-static", "arm64", log=self.ctx.log)
        except debs.FixtureError as e:
            self.ctx.log(f"multiarch: no arm64 busybox ({e}); the arm64 image gets a placeholder /bin/busybox")
            self.arm64_deb = None
        return [f"busybox-static={self.versions['busybox-static']}", os.path.basename(self.arm64_deb or "no-arm64-deb")]

    def build(self, layout):
        shared = sort_entries(
            base_dirs()
            + accounts("multiarch")
            + [file("etc/multiarch-shared", "this layer is shared by both platforms\n")]
        )
        amd = self.ctx.staging("amd64", [self.ctx.deb("busybox-static", self.versions["busybox-static"])])
        if self.arm64_deb:
            arm = self.ctx.staging("arm64", [self.arm64_deb])
            arm_bb = Entry("bin/busybox", "file", 0o755, source=os.path.join(arm, "bin", "busybox"))
        else:
            arm_bb = file("bin/busybox", "#!/bin/false\nplaceholder: Debian's arm64 busybox could not be downloaded\n", 0o755)
        descs = []
        for plat, bb, arch in (
            (AMD64, Entry("bin/busybox", "file", 0o755, source=os.path.join(amd, "bin", "busybox")), "amd64"),
            (ARM64, arm_bb, "arm64"),
        ):
            own = sort_entries(
                [dir_("bin"), bb, symlink("bin/sh", "busybox"), dir_("etc"),
                 file("etc/arch", arch + "\n"), file(f"etc/only-{arch}", f"only in the {arch} image\n")]
            )
            descs.append(
                layout.add_image(
                    [(shared, "gzip", "shared by both platforms"), (own, "gzip", f"{arch} busybox and /etc/arch")],
                    {"Cmd": ["/bin/sh"], "Env": [PATH_ENV]},
                    plat,
                )
            )
        return layout.add_index(descs)


SHOWARGS_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "showargs.c")


def showargs_inputs():
    """What the static showargs binary depends on besides its source (which code_hash covers):
    the compiler and the static libc."""
    gcc = subprocess.run(["gcc", "--version"], check=True, capture_output=True, text=True).stdout
    libc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libc6-dev"], capture_output=True, text=True).stdout
    return [gcc.splitlines()[0], f"libc6-dev={libc}"]


def build_showargs(work):
    """showargs.c linked statically: it runs in an image with no libc and no shell."""
    out = os.path.join(work, "showargs")
    subprocess.run(["gcc", "-static", "-O2", "-s", "-o", out, SHOWARGS_C], check=True)
    return out


class CmdImage(Image):
    """The default /init's test images: showargs (a static program that prints its argv,
    environment, working directory and ids) with users and groups, in one layer shared by every
    variant; each variant is a config, as docker would run it."""

    default = False
    config: dict = {}

    def inputs(self):
        return showargs_inputs()

    def build(self, layout):
        sa = build_showargs(self.ctx.work)
        entries = sort_entries(
            base_dirs()
            + [
                file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
                file("etc/group", "root:x:0:\ntty:x:5:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"),
                file("etc/hostname", "cmdtest\n"),
                dir_("home/app", 0o755, uid=1000, gid=1000),
                dir_("work", 0o755, uid=1000, gid=1000),
                Entry("usr/bin/showargs", "file", 0o755, source=sa),
            ]
        )
        return layout.add_image([(entries, "gzip", "showargs, users and groups")], self.config, AMD64)


class CmdBoth(CmdImage):
    name = "cmd-both"
    description = "showargs with Entrypoint and Cmd, Env, WorkingDir /work, User app (on demand, init tests)"
    config = {
        "Entrypoint": ["/usr/bin/showargs", "from-entrypoint"],
        "Cmd": ["from-cmd", "two words"],
        "Env": [PATH_ENV, "GREETING=hello world", "EMPTY="],
        "WorkingDir": "/work",
        "User": "app",
    }


class CmdEntrypoint(CmdImage):
    name = "cmd-entrypoint"
    description = "showargs as Entrypoint only, User 1000:2000 (on demand, init tests)"
    config = {"Entrypoint": ["/usr/bin/showargs", "only-entrypoint"], "Env": [PATH_ENV], "User": "1000:2000"}


class CmdCmd(CmdImage):
    name = "cmd-cmd"
    description = "showargs (found along PATH) as Cmd only, no Env, no User, WorkingDir /work (on demand, init tests)"
    config = {"Cmd": ["showargs", "only-cmd"], "WorkingDir": "/work"}


class CmdBadUser(CmdImage):
    name = "cmd-baduser"
    description = "showargs with a User that /etc/passwd lacks (on demand, init tests)"
    config = {"Cmd": ["/usr/bin/showargs"], "Env": [PATH_ENV], "User": "ghost"}


class CmdBadWorkdir(CmdImage):
    name = "cmd-badwd"
    description = "showargs with a WorkingDir the image lacks (on demand, init tests)"
    config = {"Cmd": ["/usr/bin/showargs"], "Env": [PATH_ENV], "WorkingDir": "/nonexistent"}


class CmdString(CmdImage):
    name = "cmd-string"
    description = "showargs with Entrypoint and Cmd as strings, which docker takes as lists of one (on demand, init tests)"
    config = {"Entrypoint": "/usr/bin/showargs", "Cmd": "hello world", "Env": [PATH_ENV]}


class CmdBadCmd(CmdImage):
    name = "cmd-badcmd"
    description = "showargs with a Cmd docker refuses (an object) and an Entrypoint of numbers (on demand, init tests)"
    config = {"Entrypoint": [1, 2], "Cmd": {"not": "a command"}, "Env": [PATH_ENV]}


class NoShell(Image):
    name = "noshell"
    description = "nothing but one static binary, /showargs: no shell, no libc, no directories (on demand, init tests)"
    default = False

    def inputs(self):
        return showargs_inputs()

    def build(self, layout):
        sa = build_showargs(self.ctx.work)
        return layout.add_image(
            [([Entry("showargs", "file", 0o755, source=sa)], "gzip", "one static binary")],
            {"Entrypoint": ["/showargs"], "Cmd": ["--exit", "3"]},
            AMD64,
        )


ALL = [Tiny, Edge, Python, Multiarch, Node, Rust, CmdBoth, CmdEntrypoint, CmdCmd, CmdBadUser, CmdBadWorkdir, CmdString, CmdBadCmd, NoShell]
BY_NAME = {c.name: c for c in ALL}
DEFAULT = [c.name for c in ALL if c.default]
