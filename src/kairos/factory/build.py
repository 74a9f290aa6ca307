"""`kairos build`: base → packages → kairosify → squashfs + OCI image, each step cached by
a hash of its inputs. A plain ordered list of steps over one context (mkosi's shape)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kairos.artifacts.rootfs import make_squashfs, sha256_file
from kairos.errors import BadInput
from kairos.factory.base import acquire, install_packages, os_release, required_packages
from kairos.factory.bases import BaseSpec
from kairos.factory.cache import StepCache, fingerprint_path, hash_tree, input_key
from kairos.factory.inits import check_choice, resolve_init, static_init
from kairos.factory.kairosify import PKG_DIR, kairosify
from kairos.factory.release import Release
from kairos.run import require
from kairos.ui import step

log = logging.getLogger("kairos.factory")
DEFAULT_EPOCH = 1_700_000_000  # used when SOURCE_DATE_EPOCH is unset: builds stay reproducible


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
    steps: dict[str, str] = field(default_factory=dict)  # step → "built" | "cached"


@dataclass
class Context:
    opts: BuildOptions
    cache: StepCache
    result_steps: dict[str, str] = field(default_factory=dict)
    init: str | None = None  # None until known: read from the base tree for auto + a tree

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
        """Builds of the same base and init replace each other's cached steps; others stay."""
        return f"{self.opts.base} {self.service_manager}"

    def packages(self) -> list[str]:
        return sorted({*required_packages(self.service_manager), self.opts.kernel_package,
                       *self.opts.extra_packages})


def _base_key(ctx: Context) -> str:
    spec = ctx.opts.base
    if spec.kind == "debian":  # debootstrap installs the packages with the base
        return input_key("base", spec.kind, spec.value, ctx.opts.mirror, ctx.packages())
    return input_key("base", spec.kind, fingerprint_path(spec.path), ctx.opts.mirror)


def step_base(ctx: Context) -> tuple[Path, str]:
    key = _base_key(ctx)
    hit = None if ctx.opts.refresh_base else ctx.cache.lookup("base", key)
    if hit:
        ctx.result_steps["base"] = "cached"
        return hit / "tree", key
    packages = ctx.packages() if ctx.opts.base.kind == "debian" else []
    with step(f"Bringing in base {ctx.opts.base}"), ctx.cache.produce("base", key) as out:
        acquire(ctx.opts.base, out / "tree", mirror=ctx.opts.mirror, packages=packages)
    ctx.result_steps["base"] = "built"
    return ctx.cache.path("base", key) / "tree", key


def _copy_tree(src: Path, dest: Path) -> None:
    from kairos.run import run
    run(["cp", "-a", "--", f"{src}/.", str(dest)])


def step_packages(ctx: Context, base: Path, base_key: str) -> tuple[Path, str]:
    from kairos.factory.base import missing_packages
    key = input_key("packages", base_key, ctx.packages())
    hit = None if ctx.opts.rebuild else ctx.cache.lookup("packages", key)
    if hit:
        ctx.result_steps["packages"] = "cached"
        return hit / "tree", key
    if not missing_packages(base, ctx.packages()):
        ctx.result_steps["packages"] = "none needed"
        return base, base_key
    with step("Installing packages"), ctx.cache.produce("packages", key) as out:
        (out / "tree").mkdir()
        _copy_tree(base, out / "tree")
        install_packages(out / "tree", ctx.packages())
    ctx.result_steps["packages"] = "built"
    return ctx.cache.path("packages", key) / "tree", key


def _release(ctx: Context, tree: Path) -> Release:
    rel = os_release(tree)
    from kairos.factory.release import normalize_version
    return Release(version=normalize_version(ctx.opts.version), flavor=rel.get("ID", "linux"),
                   flavor_release=rel.get("VERSION_ID", "rolling"), variant=ctx.opts.variant,
                   model=ctx.opts.model,
                   family="debian" if "debian" in rel.get("ID_LIKE", rel.get("ID", "")) else
                   rel.get("ID", "linux"))


def step_kairosify(ctx: Context, tree: Path, prev_key: str) -> tuple[Path, str]:
    release = _release(ctx, tree)
    key = input_key("kairosify", prev_key, hash_tree(PKG_DIR), asdict(release),
                    ctx.opts.source_date_epoch, ctx.service_manager)
    hit = None if ctx.opts.rebuild else ctx.cache.lookup("kairosify", key)
    if hit:
        ctx.result_steps["kairosify"] = "cached"
        return hit / "tree", key
    with step(f"Kairosifying the tree ({ctx.service_manager})"), \
            ctx.cache.produce("kairosify", key, lineage=ctx.lineage) as out:
        (out / "tree").mkdir()
        _copy_tree(tree, out / "tree")
        kairosify(out / "tree", release, ctx.opts.source_date_epoch, init=ctx.service_manager)
    ctx.cache.prune("kairosify", key, lineage=ctx.lineage)
    ctx.result_steps["kairosify"] = "built"
    return ctx.cache.path("kairosify", key) / "tree", key


def step_squash(ctx: Context, tree: Path, prev_key: str) -> tuple[Path, str]:
    key = input_key("squash", prev_key, ctx.opts.compression, ctx.opts.source_date_epoch)
    hit = None if ctx.opts.rebuild else ctx.cache.lookup("squash", key)
    if hit:
        ctx.result_steps["squash"] = "cached"
        return hit, key
    with step(f"Writing the slot image (squashfs, compression {ctx.opts.compression})"), \
            ctx.cache.produce("squash", key, lineage=ctx.lineage) as out:
        make_squashfs(tree, out / "rootfs.squashfs", mtime=ctx.opts.source_date_epoch,
                      compression=ctx.opts.compression)
        shutil.copyfile(tree / "boot/vmlinuz", out / "vmlinuz")
        shutil.copyfile(tree / "boot/initrd", out / "initrd")
    ctx.cache.prune("squash", key, lineage=ctx.lineage)
    ctx.result_steps["squash"] = "built"
    return ctx.cache.path("squash", key), key


def step_oci(ctx: Context, tree: Path, prev_key: str, release: Release) -> tuple[Path, str]:
    key = input_key("oci", prev_key, ctx.opts.source_date_epoch)
    hit = None if ctx.opts.rebuild else ctx.cache.lookup("oci", key)
    if hit:
        ctx.result_steps["oci"] = "cached"
        return hit, key
    from kairos.factory.ociout import write_oci
    with step("Writing the OCI image"), ctx.cache.produce("oci", key, lineage=ctx.lineage) as out:
        write_oci(tree, out, release=release, mtime=ctx.opts.source_date_epoch)
    ctx.cache.prune("oci", key, lineage=ctx.lineage)
    ctx.result_steps["oci"] = "built"
    return ctx.cache.path("oci", key), key


def _publish(src: Path, dest: Path) -> None:
    """Place a cached artifact in the output dir: a hard link when possible, else a copy."""
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    else:
        dest.unlink(missing_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dest))


def _link_or_copy(src: str, dest: str) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def preflight(opts: BuildOptions) -> None:
    """Every check before any work, all problems at once (KIWI's runtime checker)."""
    from kairos.factory.release import normalize_version
    normalize_version(opts.version)
    check_choice(opts.init)
    tools = ["mksquashfs", "busybox", "cp", "chroot"]
    if opts.base.kind == "debian":
        tools.append("debootstrap")
    require(*tools)
    if os.geteuid() != 0:
        raise BadInput("kairos build needs root (chroot, package installs, device nodes)",
                       "run it with sudo")


def build(opts: BuildOptions) -> BuildResult:
    preflight(opts)
    ctx = Context(opts, StepCache(opts.cache_dir))
    base, key = step_base(ctx)
    ctx.init = resolve_init(opts.init, opts.base, base)
    tree, key = step_packages(ctx, base, key)
    release = _release(ctx, tree)
    tree, key = step_kairosify(ctx, tree, key)
    squash, _squash_key = step_squash(ctx, tree, key)
    out = opts.output
    out.mkdir(parents=True, exist_ok=True)
    for name in ("rootfs.squashfs", "vmlinuz", "initrd"):
        _publish(squash / name, out / name)
    result = BuildResult(
        output=str(out), version=release.version, base=str(opts.base),
        rootfs=str(out / "rootfs.squashfs"), rootfs_sha256=sha256_file(out / "rootfs.squashfs"),
        rootfs_size=(out / "rootfs.squashfs").stat().st_size, kernel=str(out / "vmlinuz"),
        initrd=str(out / "initrd"), initrd_size=(out / "initrd").stat().st_size,
        init=ctx.service_manager)
    if opts.oci:
        oci, _ = step_oci(ctx, tree, key, release)
        _publish(oci / "oci", out / "oci")
        _publish(oci / "image.oci.tar", out / "image.oci.tar")
        result.oci_layout = str(out / "oci")
        result.oci_archive = str(out / "image.oci.tar")
        result.oci_digest = (oci / "digest").read_text().strip()
    result.steps = ctx.result_steps
    (out / "build.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    (out / "kairos-release").write_text(release.render())
    return result
