"""`kairos build`: base → packages → kairosify → squashfs + OCI image, each step cached by
a hash of its inputs. A plain ordered list of steps over one context (mkosi's shape)."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairos.artifacts.rootfs import make_squashfs, sha256_file
from kairos.disk.mounts import remove_tree
from kairos.errors import BadInput, KairosError
from kairos.factory.base import acquire, install_packages, os_release, required_packages
from kairos.factory.bases import BaseSpec
from kairos.factory.cache import StepCache, fingerprint_path, hash_tree, input_key, pid_alive
from kairos.factory.inits import check_choice, resolve_init, static_init
from kairos.factory.kairosify import PKG_DIR, kairosify
from kairos.factory.kubeparts import Parts, PartsSpec, ensure, locked, lookup
from kairos.factory.kubeparts import cache_root as parts_root
from kairos.factory.release import Release
from kairos.factory.standard import check_variant, variant_packages
from kairos.factory.trim import Trim, TrimReport, trim_tree
from kairos.run import require, run
from kairos.safefs import rename_exchange, resolve_in_root
from kairos.ui import step

log = logging.getLogger("kairos.factory")
DEFAULT_EPOCH = 1_700_000_000  # used when SOURCE_DATE_EPOCH is unset: builds stay reproducible
DEFAULT_BASE_MAX_AGE = 7.0  # days after which a debootstrapped base is fetched again
DAY = 86400


@dataclass
class BuildOptions:
    base: BaseSpec
    version: str
    output: Path
    cache_dir: Path
    mirror: str | None = None
    kernel_package: str = "linux-image-amd64"
    extra_packages: tuple[str, ...] = ()
    compression: str = "none"
    source_date_epoch: int = DEFAULT_EPOCH
    rebuild: bool = False  # re-run every step after the base
    refresh_base: bool = False
    oci: bool = True
    model: str = "generic"
    variant: str = "core"
    init: str = "auto"  # systemd | openrc | auto (systemd for debian:*, else the base's own)
    base_max_age_days: float | None = DEFAULT_BASE_MAX_AGE  # None: never refresh by age
    trim: Trim = field(default_factory=Trim)  # modules and files removed before kairosify
    kubernetes_cache: Path | None = None  # the standard variant's parts (None: the default)


@dataclass
class BuildResult:
    output: str
    version: str
    base: str
    rootfs: str
    rootfs_sha256: str
    rootfs_size: int
    kernel: str
    initrd: str
    initrd_size: int
    oci_layout: str | None = None
    oci_archive: str | None = None
    oci_digest: str | None = None
    init: str = "systemd"  # the image's service manager
    base_made: str = ""  # when the base tree was fetched (UTC, ISO 8601)
    base_age_days: int = 0
    steps: dict[str, str] = field(default_factory=dict)  # step → "built" | "cached"
    trim: dict[str, Any] = field(default_factory=dict)  # options and counts; {}: none
    variant: str = "core"
    kubernetes: dict[str, Any] = field(default_factory=dict)  # standard: versions, parts


@dataclass
class Context:
    opts: BuildOptions
    cache: StepCache
    result_steps: dict[str, str] = field(default_factory=dict)
    init: str | None = None  # None until known: read from the base tree for auto + a tree
    clock: Callable[[], float] = time.time
    base_made: float | None = None  # when the base step used was made
    trim_report: TrimReport | None = None  # what trimming removed (also from the cache)
    parts: Parts | None = None  # the standard variant's Kubernetes parts

    def __post_init__(self) -> None:
        if self.init is None:
            self.init = static_init(self.opts.init, self.opts.base)

    @property
    def service_manager(self) -> str:
        if self.init is None:
            raise RuntimeError("the init is read from the base tree, which is not there yet")
        return self.init

    @property
    def lineage(self) -> str:
        """Builds of the same base, init and trim replace each other's cached steps; others
        stay. An untrimmed build's lineage is the one from before trimming existed."""
        line = f"{self.opts.base} {self.service_manager}"
        if self.opts.variant != "core":  # a standard build must not prune the core image
            line = f"{line} variant:{self.opts.variant}"
        return line if self.opts.trim.empty else f"{line} trim:{self.opts.trim.key}"

    def packages(self) -> list[str]:
        return sorted({*required_packages(self.service_manager), self.opts.kernel_package,
                       *self.opts.extra_packages})

    def image_packages(self) -> list[str]:
        """The base's packages plus the variant's: those are installed on top of the
        base, so every variant shares one debootstrapped base."""
        return sorted({*self.packages(), *variant_packages(self.opts.variant)})


def _base_key(ctx: Context) -> str:
    spec = ctx.opts.base
    if spec.kind == "debian":  # debootstrap installs the packages with the base
        return input_key("base", spec.kind, spec.value, ctx.opts.mirror, ctx.packages())
    return input_key("base", spec.kind, fingerprint_path(spec.path), ctx.opts.mirror)


def base_is_stale(made: float | None, now: float, max_age_days: float | None) -> bool:
    """Whether a base made at `made` is to be fetched again at `now`: older than the
    maximum age (0: always; None: never)."""
    if made is None or max_age_days is None:
        return False
    return max_age_days <= 0 or now - made > max_age_days * DAY


def base_age_days(made: float | None, now: float) -> int:
    return 0 if made is None else max(0, int((now - made) // DAY))


def step_base(ctx: Context) -> tuple[Path, str]:
    """The base tree and the key later steps build on: the base's inputs and when it was
    made, so a refreshed base is kairosified again."""
    key = _base_key(ctx)
    with ctx.cache.claim("base", key, reuse=not ctx.opts.refresh_base) as hit:
        if hit and _auto_refresh(ctx, key):
            _refresh_base(ctx, key)
        elif hit:
            ctx.result_steps["base"] = "cached"
        else:
            _make_base(ctx, key)
    ctx.base_made = ctx.cache.created("base", key)
    return ctx.cache.path("base", key) / "tree", input_key("base-made", key, ctx.base_made)


def _auto_refresh(ctx: Context, key: str) -> bool:
    if ctx.opts.base.kind != "debian":  # a dir/tar/OCI base is keyed by its content
        return False
    made = ctx.cache.created("base", key)
    if not base_is_stale(made, ctx.clock(), ctx.opts.base_max_age_days):
        return False
    log.info("The base is %d days old (--base-max-age %g): fetching it again",
             base_age_days(made, ctx.clock()), ctx.opts.base_max_age_days or 0)
    return True


def _refresh_base(ctx: Context, key: str) -> None:
    """Fetch the base again; when that fails (no mirror), keep building on the old one,
    which stays in place until a new one is complete."""
    try:
        _make_base(ctx, key)
    except KairosError as exc:
        log.warning("could not refresh the base (%s); building on the one from %s", exc,
                    _iso(ctx.cache.created("base", key)))
        ctx.result_steps["base"] = "cached (refresh failed)"


def _make_base(ctx: Context, key: str) -> None:
    packages = ctx.packages() if ctx.opts.base.kind == "debian" else []
    with step(f"Bringing in base {ctx.opts.base}"), ctx.cache.produce("base", key) as out:
        acquire(ctx.opts.base, out / "tree", mirror=ctx.opts.mirror, packages=packages)
    ctx.result_steps["base"] = "built"


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy_tree(src: Path, dest: Path) -> None:
    run(["cp", "-a", "--", f"{src}/.", str(dest)])


def step_packages(ctx: Context, base: Path, base_key: str) -> tuple[Path, str]:
    from kairos.factory.base import missing_packages
    key = input_key("packages", base_key, ctx.image_packages())
    if not ctx.opts.rebuild and (hit := ctx.cache.lookup("packages", key)):
        ctx.result_steps["packages"] = "cached"
        return hit / "tree", key
    if not missing_packages(base, ctx.image_packages()):
        ctx.result_steps["packages"] = "none needed"
        return base, base_key
    with ctx.cache.claim("packages", key, reuse=not ctx.opts.rebuild) as hit:
        if hit:
            ctx.result_steps["packages"] = "cached"
            return hit / "tree", key
        with step("Installing packages"), ctx.cache.produce("packages", key) as out:
            (out / "tree").mkdir()
            _copy_tree(base, out / "tree")
            install_packages(out / "tree", ctx.image_packages())
    ctx.result_steps["packages"] = "built"
    return ctx.cache.path("packages", key) / "tree", key


def _release(ctx: Context, tree: Path) -> Release:
    rel = os_release(tree)
    from kairos.factory.release import normalize_version
    release = Release(version=normalize_version(ctx.opts.version),
                      flavor=rel.get("ID", "linux"),
                      flavor_release=rel.get("VERSION_ID", "rolling"), variant=ctx.opts.variant,
                      model=ctx.opts.model,
                      family="debian" if "debian" in rel.get("ID_LIKE", rel.get("ID", "")) else
                      rel.get("ID", "linux"))
    if ctx.parts is None:
        return release
    from kairos.factory.standard import standard_release
    return standard_release(release, ctx.parts)


TRIM_REPORT = "trim.json"  # beside the kairosify step's tree: what trimming removed


def kairosify_key(ctx: Context, release: Release, prev_key: str) -> str:
    """The kairosify step's key; the trim options are in it only when there are some, so an
    untrimmed build keeps the key (and the cached steps) it had before trimming existed."""
    trim = () if ctx.opts.trim.empty else (f"trim:{ctx.opts.trim.key}",)
    # The variant is in the release; the parts' key too, so a core image is never taken for
    # a standard one, nor a standard image for one with other Kubernetes binaries.
    parts = (f"variant:{ctx.opts.variant}", f"parts:{ctx.parts.manifest.key()}") \
        if ctx.parts else ()
    return input_key("kairosify", prev_key, hash_tree(PKG_DIR), asdict(release),
                     ctx.opts.source_date_epoch, ctx.service_manager, *trim, *parts)


def _trim(ctx: Context, tree: Path, out: Path) -> None:
    with step("Trimming the tree"):
        report = trim_tree(tree, ctx.opts.trim)
    log.info("  %s", report.summary())
    (out / TRIM_REPORT).write_text(json.dumps(asdict(report)) + "\n")
    ctx.trim_report = report


KUBERNETES_RECORD = "kubernetes.json"  # beside the kairosify step's tree (standard only)


def _install_standard(ctx: Context, tree: Path, out: Path) -> None:
    from kairos.factory.standard import install_standard
    assert ctx.parts is not None
    with step("Adding the Kubernetes parts (standard variant)"), \
            locked(ctx.parts.dir.parent, exclusive=False):  # no rebuild swaps them meanwhile
        manifest = install_standard(tree, ctx.parts, mtime=ctx.opts.source_date_epoch)
    (out / KUBERNETES_RECORD).write_text(manifest.to_json())


def kubernetes_record(ctx: Context, kairosify_dir: Path) -> dict[str, Any]:
    """build.json's record of the standard variant's parts ({} for core)."""
    if ctx.parts is None:
        return {}
    try:
        record: dict[str, Any] = json.loads((kairosify_dir / KUBERNETES_RECORD).read_text())
    except (OSError, ValueError):
        record = {}
    return {**record, "parts_dir": str(ctx.parts.dir)}


def _cached_trim(ctx: Context, hit: Path) -> None:
    with contextlib.suppress(OSError, ValueError, TypeError):
        ctx.trim_report = TrimReport(**json.loads((hit / TRIM_REPORT).read_text()))


def trim_record(ctx: Context) -> dict[str, Any]:
    """The build.json record of the trim: its options and what it removed ({}: no trim)."""
    if ctx.opts.trim.empty:
        return {}
    report = asdict(ctx.trim_report) if ctx.trim_report else {}
    return {**ctx.opts.trim.as_dict(), **report}


def step_kairosify(ctx: Context, tree: Path, prev_key: str) -> tuple[Path, str]:
    release = _release(ctx, tree)
    key = kairosify_key(ctx, release, prev_key)
    with ctx.cache.claim("kairosify", key, reuse=not ctx.opts.rebuild) as hit:
        if hit:
            ctx.result_steps["kairosify"] = "cached"
            if not ctx.opts.trim.empty:
                _cached_trim(ctx, hit)
            return hit / "tree", key
        with step(f"Kairosifying the tree ({ctx.service_manager})"), \
                ctx.cache.produce("kairosify", key, lineage=ctx.lineage) as out:
            (out / "tree").mkdir()
            _copy_tree(tree, out / "tree")
            if not ctx.opts.trim.empty:  # first: the initrd is made of the modules left
                _trim(ctx, out / "tree", out)
            if ctx.parts is not None:
                _install_standard(ctx, out / "tree", out)
            kairosify(out / "tree", release, ctx.opts.source_date_epoch,
                      init=ctx.service_manager)
    ctx.cache.prune("kairosify", key, lineage=ctx.lineage)
    ctx.result_steps["kairosify"] = "built"
    return ctx.cache.path("kairosify", key) / "tree", key


def step_squash(ctx: Context, tree: Path, prev_key: str) -> tuple[Path, str]:
    key = input_key("squash", prev_key, ctx.opts.compression, ctx.opts.source_date_epoch)
    with ctx.cache.claim("squash", key, reuse=not ctx.opts.rebuild) as hit:
        if hit:
            ctx.result_steps["squash"] = "cached"
            return hit, key
        with step(f"Writing the slot image (squashfs, compression {ctx.opts.compression})"), \
                ctx.cache.produce("squash", key, lineage=ctx.lineage) as out:
            make_squashfs(tree, out / "rootfs.squashfs", mtime=ctx.opts.source_date_epoch,
                          compression=ctx.opts.compression)
            for name in ("vmlinuz", "initrd"):
                src = resolve_in_root(tree, f"boot/{name}")
                if src.is_symlink() or not src.is_file():
                    raise KairosError(f"/boot/{name} is missing in the image tree",
                                      "run the build again with --rebuild")
                shutil.copyfile(src, out / name)
    ctx.cache.prune("squash", key, lineage=ctx.lineage)
    ctx.result_steps["squash"] = "built"
    return ctx.cache.path("squash", key), key


def step_oci(ctx: Context, tree: Path, prev_key: str, release: Release) -> tuple[Path, str]:
    key = input_key("oci", prev_key, ctx.opts.source_date_epoch)
    from kairos.factory.ociout import write_oci
    with ctx.cache.claim("oci", key, reuse=not ctx.opts.rebuild) as hit:
        if hit:
            ctx.result_steps["oci"] = "cached"
            return hit, key
        with step("Writing the OCI image"), \
                ctx.cache.produce("oci", key, lineage=ctx.lineage) as out:
            write_oci(tree, out, release=release, mtime=ctx.opts.source_date_epoch)
    ctx.cache.prune("oci", key, lineage=ctx.lineage)
    ctx.result_steps["oci"] = "built"
    return ctx.cache.path("oci", key), key


def copy_out(src: Path, dest: Path) -> None:
    """Copy a cached artifact (file or directory) out of the cache: a reflink where the
    filesystem can, else a plain copy; never a hard link (editing it would edit the cache)."""
    run(["cp", "-a", "--reflink=auto", "--", str(src), str(dest)])


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A scratch directory beside `out` to assemble the output in; swapped in as a whole
    when the block succeeds, removed (the previous output untouched) when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_outputs(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    remove_tree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        swap_in(tmp, out)
    finally:
        remove_tree(tmp)


def swap_in(new: Path, out: Path) -> None:
    """Put directory `new` at `out` in one step; the old `out` (if any) is deleted after."""
    if not os.path.lexists(out):
        new.rename(out)
        return
    if rename_exchange(new, out):  # `new` now holds the old output
        remove_tree(new)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        old.rename(out)
        raise
    remove_tree(old)


def _clean_stale_outputs(out: Path) -> None:
    """What a killed build left beside `out` (invariant 5)."""
    prefix = f".{out.name}."
    for p in out.parent.iterdir():
        kind, _, pid = p.name.removeprefix(prefix).partition("-")
        if (p.name.startswith(prefix) and kind in ("tmp", "old") and pid.isdigit()
                and not pid_alive(int(pid))):
            remove_tree(p)


def check_output(out: Path) -> None:
    """The output directory is replaced as a whole: refuse anything but a new directory or
    an earlier build's output."""
    if os.path.lexists(out) and (out.is_symlink() or not out.is_dir()):
        raise BadInput(f"output '{out}' exists and is not a directory (or is a link)",
                       "give a new directory (or an earlier build's output) with -o")
    if out.is_dir() and any(out.iterdir()) and not (out / "build.json").is_file():
        raise BadInput(f"output directory '{out}' is not empty and holds no earlier build "
                       "(no build.json); the build replaces it as a whole",
                       "give a new directory with -o, or empty this one")


def preflight(opts: BuildOptions) -> None:
    """Every check before any work, all problems at once (KIWI's runtime checker)."""
    from kairos.factory.release import normalize_version
    normalize_version(opts.version)
    check_choice(opts.init)
    check_variant(opts.variant, opts.init)
    tools = ["mksquashfs", "busybox", "cp", "chroot"]
    if not opts.trim.empty:
        tools.append("depmod")
    if opts.base.kind == "debian":
        tools.append("debootstrap")
    if opts.variant == "standard":
        tools.append("apt-get")  # the Kubernetes parts, when not cached yet
    require(*tools)
    check_output(opts.output)
    if os.geteuid() != 0:
        raise BadInput("kairos build needs root (chroot, package installs, device nodes)",
                       "run it with sudo")


def build(opts: BuildOptions, *, clock: Callable[[], float] = time.time) -> BuildResult:
    preflight(opts)
    with StepCache(opts.cache_dir) as cache:
        ctx = Context(opts, cache, clock=clock)
        if opts.variant == "standard":
            ctx.parts = kubernetes_parts(opts)
        return _build(ctx)


def kubernetes_parts(opts: BuildOptions) -> Parts:
    """The standard variant's Kubernetes parts, from their cache or built once now."""
    root = parts_root(opts.kubernetes_cache)
    with step(f"Kubernetes parts for the standard variant ({root})"):
        if root.is_dir() and (hit := lookup(root, PartsSpec())):
            log.info("  cached: %s", hit.dir)
            return hit
        log.info("  not built yet: building them now, as scripts/build-kubernetes does")
        return ensure(PartsSpec(), root=root, mirror=opts.mirror)


def _build(ctx: Context) -> BuildResult:
    opts = ctx.opts
    base, key = step_base(ctx)
    ctx.init = resolve_init(opts.init, opts.base, base)
    tree, key = step_packages(ctx, base, key)
    release = _release(ctx, tree)
    tree, key = step_kairosify(ctx, tree, key)
    kubernetes = kubernetes_record(ctx, tree.parent)
    squash, _squash_key = step_squash(ctx, tree, key)
    oci = step_oci(ctx, tree, key, release)[0] if opts.oci else None
    out = opts.output
    result = BuildResult(
        output=str(out), version=release.version, base=str(opts.base),
        rootfs=str(out / "rootfs.squashfs"), rootfs_sha256=sha256_file(squash / "rootfs.squashfs"),
        rootfs_size=(squash / "rootfs.squashfs").stat().st_size, kernel=str(out / "vmlinuz"),
        initrd=str(out / "initrd"), initrd_size=(squash / "initrd").stat().st_size,
        init=ctx.service_manager, base_made=_iso(ctx.base_made),
        base_age_days=base_age_days(ctx.base_made, ctx.clock()), variant=opts.variant,
        kubernetes=kubernetes)
    with staged_output(out) as tmp:
        for name in ("rootfs.squashfs", "vmlinuz", "initrd"):
            copy_out(squash / name, tmp / name)
        if oci is not None:
            copy_out(oci / "oci", tmp / "oci")
            copy_out(oci / "image.oci.tar", tmp / "image.oci.tar")
            result.oci_layout = str(out / "oci")
            result.oci_archive = str(out / "image.oci.tar")
            result.oci_digest = (oci / "digest").read_text().strip()
        result.steps = ctx.result_steps
        result.trim = trim_record(ctx)
        (tmp / "build.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
        (tmp / "kairos-release").write_text(release.render())
    return result
