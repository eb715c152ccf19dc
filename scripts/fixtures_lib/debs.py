# Finds, downloads (into a cache outside the repo) and unpacks Debian packages for the fixture
# images, always from Debian's own archive: a third-party apt source (nodesource) may offer a
# higher version of the same name, so versions are chosen among Debian's suites only.
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile


class FixtureError(Exception):
    pass


def cache_dir():
    d = os.environ.get("IMAGEFS_FIXTURE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "imagefs", "fixtures"
    )
    os.makedirs(d, exist_ok=True)
    return d


def codename():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "bookworm"


def _run(cmd, what, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise FixtureError(f"{what}: {' '.join(cmd[:2])} failed: {' / '.join(tail)}")
    return p.stdout


def _apt_root_opts():
    # As root, apt-get download hands the file to the _apt user, which cannot write to most
    # directories; keep the download as root instead.
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def apt_fingerprint():
    """Changes whenever `apt-get update` changed what apt knows."""
    h = hashlib.sha256()
    for p in sorted(glob.glob("/var/lib/apt/lists/*_Packages*")):
        st = os.stat(p)
        h.update(f"{p} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def madison(names):
    """{name: (version, mirror_url)} for the newest version of each name in Debian's suites."""
    if not names:
        return {}
    out = _run(["apt-cache", "madison", *sorted(names)], "looking up Debian packages")
    suite_prefix = codename()
    found = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not parts[2].endswith("Packages"):
            continue
        name, version, where = parts
        url, suite = where.split()[:2]
        if suite.split("/")[0].split("-")[0] != suite_prefix:
            continue  # not Debian's archive (e.g. nodesource's "nodistro")
        found.setdefault(name, (version, url))  # madison lists the newest first
    return found


def _dep_groups(field):
    """'a (>= 1), b | c:any' -> [['a'], ['b', 'c']]"""
    groups = []
    for g in field.split(","):
        alts = []
        for alt in g.split("|"):
            name = re.split(r"[\s(\[]", alt.strip(), maxsplit=1)[0].split(":")[0]
            if name:
                alts.append(name)
        if alts:
            groups.append(alts)
    return groups


def providers(virtual):
    """Real packages that Provide the virtual package `virtual`, as apt lists them."""
    out = _run(["apt-cache", "showpkg", virtual], f"looking up providers of {virtual}")
    names = []
    if "Reverse Provides:" in out:
        for line in out.split("Reverse Provides:", 1)[1].strip().splitlines():
            if line.strip():
                names.append(line.split()[0])
    return list(dict.fromkeys(names))


def resolve(roots, stop=(), extra=()):
    """The Depends/Pre-Depends closure of `roots` (plus `extra`) with Debian versions:
    {name: version}. For each dependency the first alternative Debian has is taken; names in
    `stop` (package tools like dpkg or perl that a running program does not need) are left out
    together with what only they would pull in."""
    versions = {}
    todo = set(roots) | set(extra)
    known = {}
    while todo:
        known.update(madison(todo - known.keys()))
        for n in sorted(todo):
            if n not in known:
                raise FixtureError(f"Debian package {n} not found in apt's lists (run apt-get update?)")
            versions[n] = known[n][0]
        show = _run(
            ["apt-cache", "show", "--no-all-versions", *[f"{n}={versions[n]}" for n in sorted(todo)]],
            "reading Debian package metadata",
        )
        groups = []
        for para in show.split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", para, re.M))
            for key in ("Pre-Depends", "Depends"):
                if key in fields:
                    groups.extend(_dep_groups(fields[key]))
        names = {n for g in groups for n in g} - known.keys()
        known.update(madison(names))
        todo = set()
        for g in groups:
            if any(n in versions for n in g):
                continue
            pick = next((n for n in g if n in known), None)
            if pick is None:  # only virtual names: take a real package that provides one
                for n in g:
                    real = providers(n)
                    known.update(madison(set(real) - known.keys()))
                    pick = next((p for p in real if p in versions), None) or next((p for p in real if p in known), None)
                    if pick:
                        break
            if pick is None:
                raise FixtureError(f"no Debian package provides any of {' | '.join(g)}")
            if pick in stop:
                continue
            todo.add(pick)
    return versions


def resolve_cached(key, roots, stop=(), extra=()):
    """resolve(), remembered per apt state so an unchanged machine needs no apt-cache call."""
    d = os.path.join(cache_dir(), "resolved")
    os.makedirs(d, exist_ok=True)
    h = hashlib.sha256(json.dumps([key, sorted(roots), sorted(stop), sorted(extra)]).encode()).hexdigest()[:16]
    p = os.path.join(d, f"{key}-{apt_fingerprint()}-{h}.json")
    if os.path.exists(p):
        with open(p) as f:
            return json.load(f)
    v = resolve(roots, stop, extra)
    with tempfile.NamedTemporaryFile("w", dir=d, delete=False) as f:
        json.dump(v, f, sort_keys=True, indent=1)
    os.replace(f.name, p)
    return v


def _deb_glob(d, name, version, arch):
    ver = version.replace(":", "%3a")
    for a in (arch, "all"):
        hits = glob.glob(os.path.join(d, glob.escape(f"{name}_{ver}_{a}.deb")))
        if hits:
            return hits[0]
    return None


def fetch(name, version, arch="amd64", apt_opts=(), log=lambda s: None):
    """Path of the cached .deb for name=version, downloading it first if needed."""
    d = os.path.join(cache_dir(), "debs")
    os.makedirs(d, exist_ok=True)
    hit = _deb_glob(d, name, version, arch)
    if hit:
        return hit
    log(f"downloading {name}={version} ({arch})")
    tmp = tempfile.mkdtemp(prefix=".dl-", dir=d)
    try:
        spec = f"{name}:{arch}={version}"
        p = subprocess.run(
            ["apt-get", "-q", *_apt_root_opts(), *apt_opts, "download", spec],
            cwd=tmp, capture_output=True, text=True,
        )
        got = glob.glob(os.path.join(tmp, "*.deb"))
        if p.returncode != 0 or len(got) != 1:
            tail = " / ".join(p.stderr.strip().splitlines()[-2:])
            raise FixtureError(f"cannot download Debian package {name}={version} ({arch}): {tail}")
        dst = os.path.join(d, os.path.basename(got[0]))
        os.replace(got[0], dst)
        return dst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack(debs, dest):
    """dpkg -x each .deb into dest (created)."""
    os.makedirs(dest, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", deb, dest], f"unpacking {os.path.basename(deb)}")


def foreign_apt_opts(arch):
    """apt options for a private apt state that knows `arch` packages of Debian's main suite,
    kept in the fixture cache, so the machine's own apt setup (dpkg architectures, sources)
    stays untouched. Runs `apt-get update` for it the first time."""
    base = os.path.join(cache_dir(), f"apt-{arch}")
    mirror = madison(["busybox-static"]).get("busybox-static", (None, "http://deb.debian.org/debian"))[1]
    os.makedirs(os.path.join(base, "lists", "partial"), exist_ok=True)
    os.makedirs(os.path.join(base, "cache", "archives", "partial"), exist_ok=True)
    os.makedirs(os.path.join(base, "parts"), exist_ok=True)
    open(os.path.join(base, "status"), "a").close()
    sources = os.path.join(base, "sources.list")
    with open(sources, "w") as f:
        f.write(
            f"deb [arch={arch} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            f"{mirror} {codename()} main\n"
        )
    opts = [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={base}/parts",
        "-o", f"Dir::Etc::PreferencesParts={base}/parts",
        "-o", f"Dir::State::Lists={base}/lists",
        "-o", f"Dir::State::status={base}/status",
        "-o", f"Dir::Cache={base}/cache",
        "-o", f"APT::Architecture={arch}",
        "-o", f"APT::Architectures::={arch}",
        "-o", "Acquire::Languages=none",
        "-o", "Acquire::Retries=1",
        "-o", "Acquire::http::Timeout=20",
        "-o", "Debug::NoLocking=1",
    ]
    stamp = os.path.join(base, "updated")
    if not os.path.exists(stamp):
        _run(["apt-get", "-q", *_apt_root_opts(), *opts, "update"], f"apt-get update for {arch}")
        open(stamp, "w").close()
    return opts


def cached_foreign(name, arch):
    """A cached .deb of `name` for `arch`, if any (the newest by file name)."""
    hits = sorted(glob.glob(os.path.join(cache_dir(), "debs", glob.escape(name) + f"_*_{arch}.deb")))
    return hits[-1] if hits else None


def fetch_foreign(name, arch, log=lambda s: None):
    """Downloads Debian's `name` for a foreign `arch` (apt-cache resolves the version)."""
    hit = cached_foreign(name, arch)
    if hit:
        return hit
    log(f"downloading {name} ({arch}) through a private apt state")
    opts = foreign_apt_opts(arch)
    out = _run(["apt-cache", *opts, "madison", name], f"looking up {name}:{arch}")
    version = next((l.split("|")[1].strip() for l in out.splitlines() if "|" in l), None)
    if not version:
        raise FixtureError(f"Debian has no {name} for {arch}")
    return fetch(name, version, arch, apt_opts=opts, log=log)
