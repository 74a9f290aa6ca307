"""Fetching an upgrade's image, one fetcher per source kind (`FETCHERS`), and the checks of
what they bring.

A fetcher runs the preflight of its kind (the source resolved or inspected, an image that
failed its boot assessment refused, free space measured), marks `preflight`, runs the
`before-upgrade` stage, then brings the image: a tree unpacked into scratch on COS_PERSISTENT
(`oci:`, `ocifile:`, `dir:`) or a finished slot file (`file:`). The upgrade (agent/upgrade.py)
takes it from there; reset and the installer reuse the fetchers with their own targets, and
the checks (`check_tree`, `check_slot_file`, `tree_bytes`, `need_space`) serve them and
rollback too.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos.agent import slotfile, slotstate
from kairos.agent.phases import Phases
from kairos.agent.slots import RECOVERY_TRANSITION, TRANSITION_IMG
from kairos.agent.upgradesource import Targets, UpgradeOptions, check_arch
from kairos.artifacts.rootfs import squashfs_compression
from kairos.envfile import parse_env
from kairos.errors import BadInput, KairosError
from kairos.run import run
from kairos.safefs import read_bytes, resolve_in_root

log = logging.getLogger("kairos.upgrade")

CACHE_DIR = ".kairos/cache"  # an OCI layout whose blobs/ is the blob cache
# A squashfs holds its files' bytes plus inode and directory tables: at most this much per
# entry, plus a little for the superblock and id/xattr tables (the default image: 17193
# entries, 622.5 MiB of files, 621.0 MiB of squashfs).
SLOT_PER_ENTRY = 128
SLOT_SLACK = 4 << 20
# What an OCI layer grows to when unpacked, for the estimate before the pull (our images: 3.1).
UNPACK_FACTOR = 3.5
GRUB_COMPRESSIONS = ("none", "gzip", "xz", "lzo")


@dataclass
class Image:
    """The new image, fetched: a tree to squash, or a finished slot file."""

    tree: Path | None = None
    slot_file: Path | None = None
    digest: str = ""
    arch: str = ""
    mtime: int | None = None
    release: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0
    layer_bytes_downloaded: int = 0
    signature: str = ""
    keep_digests: set[str] = field(default_factory=set)
    image_id: str = ""  # from its /boot/kairos-boot.cfg ("" when it names none)

    @property
    def version(self) -> str:
        return self.release.get("KAIROS_VERSION") or self.release.get("VERSION", "")


# ------------------------------------------------------------------------------- checks

def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def need_space(path: Path, label: str, need: int, what: str, hint: str) -> None:
    have = free_bytes(path)
    if have < need:
        raise BadInput(f"not enough space on {label} ({path}): {what} needs {mib(need)}, "
                       f"{mib(have)} free", hint)


def read_release(tree: Path) -> dict[str, str]:
    data = read_bytes(tree, "etc/kairos-release", follow="all")
    if data is None:
        raise BadInput("the image has no /etc/kairos-release: it is not a Kairos image",
                       "upgrade to an image made by `kairos build` (or Kairos's tooling)")
    return parse_env(data.decode(errors="replace"))


def check_tree(tree: Path, arch: str) -> dict[str, str]:
    """A Kairos image for this device, with what the initrd and GRUB need."""
    release = read_release(tree)
    check_arch(release.get("KAIROS_ARCH", ""), arch, "the image")
    for rel in ("boot/vmlinuz", "boot/initrd", "usr/lib/kairos/early-init"):
        if not resolve_in_root(tree, rel).is_file():
            raise BadInput(f"the image has no /{rel}", "it cannot boot from a slot; "
                           "upgrade to an image made by `kairos build`")
    return release


def tree_bytes(tree: Path) -> int:
    """An upper bound of the slot squashfs made from `tree`: every regular file once (hard
    links once), link targets, and generous metadata per entry. Deduplication and
    compression only make the image smaller (mksquashfs keeps a block uncompressed when
    compressing does not help), so the bound holds for every compression."""
    total, entries = SLOT_SLACK, 0
    seen: set[int] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                total += st.st_size
    return total + SLOT_PER_ENTRY * entries


def slot_need(tree_size: int, size_mib: int) -> int:
    return max(tree_size, size_mib << 20)


def check_slot_file(path: Path, arch: str) -> dict[str, str]:
    """A slot image given as a file: squashfs GRUB can read, a Kairos image, with boot files."""
    comp = squashfs_compression(path)
    if comp not in GRUB_COMPRESSIONS:
        raise BadInput(f"{path} is a squashfs compressed with {comp}, which GRUB cannot read",
                       "build the image with --compression none, gzip or xz")
    raw = slotfile.squashfs_cat(path, "etc/kairos-release")
    if raw is None:
        raise BadInput(f"{path} has no /etc/kairos-release: it is not a Kairos slot image",
                       "use the rootfs.squashfs of `kairos build`")
    release = parse_env(raw.decode(errors="replace"))
    check_arch(release.get("KAIROS_ARCH", ""), arch, str(path))
    listing = run(["unsquashfs", "-l", "-no-progress", str(path), "boot/vmlinuz",
                   "boot/initrd"], check=False).stdout
    for rel in ("boot/vmlinuz", "boot/initrd"):
        if f"/{rel}" not in listing:
            raise BadInput(f"{path} has no /{rel}", "it cannot boot from a slot; "
                           "use the rootfs.squashfs of `kairos build`")
    return release


def refuse_failed(opts: UpgradeOptions, targets: Targets, *, digest: str = "",
                  image_id: str = "") -> None:
    """An image whose digest or image id is in COS_STATE's failed list (it failed its boot
    assessment here) is refused unless forced: re-applying it would only fall back again."""
    hit = slotstate.find_failed(slotstate.load_failed(targets.state_dir), digest=digest,
                                image_id=image_id)
    if hit is None:
        return
    what = f"{hit.version or 'the image'} ({hit.digest or 'image id ' + hit.image_id})"
    if opts.force:
        log.warning("%s failed its boot assessment on %s; applying it anyway (--force)",
                    what, hit.date or "an earlier boot")
        return
    raise BadInput(f"{what} failed its boot assessment on this device "
                   f"({hit.date or 'date unknown'}): not applied again",
                   "fix the image and publish a new one, or use --force to apply it anyway")


def slot_dir_for(opts: UpgradeOptions, targets: Targets) -> Path:
    """The mounted partition the new slot image goes to: COS_STATE, or COS_RECOVERY."""
    if not opts.recovery:
        return targets.state_dir
    if targets.recovery_dir is None:
        raise BadInput("COS_RECOVERY is not available", "is this an installed Kairos system?")
    return targets.recovery_dir


def _check_state_floor(opts: UpgradeOptions, targets: Targets, at_least: int) -> None:
    """Before any download: the slot partition must hold at least this much (the slot is
    never smaller than its compressed layers); the exact check follows the unpack."""
    label = "COS_RECOVERY" if opts.recovery else "COS_STATE"
    slot_dir = slot_dir_for(opts, targets)
    stale = slot_dir / (RECOVERY_TRANSITION if opts.recovery else TRANSITION_IMG)
    stale_size = stale.stat().st_size if stale.exists() else 0
    have = free_bytes(slot_dir) + stale_size
    need = max(at_least, opts.size_mib << 20)
    if have < need:
        raise BadInput(f"not enough space on {label} ({slot_dir}): the new image needs at "
                       f"least {mib(need)}, {mib(have)} free", space_hint(opts.recovery))


def space_hint(recovery: bool) -> str:
    if recovery:
        return "remove files other than cOS/recovery.squashfs from COS_RECOVERY"
    return ("remove files other than cOS/active.img and cOS/passive.img from COS_STATE, "
            "or use a smaller image")


def upgrade_stage(targets: Targets, stage: str) -> None:
    """`before-upgrade` or `after-upgrade`, where the targets run stages (a reset's: nowhere)."""
    if targets.stage_root is not None:
        run_stage_logged(targets.stage_root, stage)


def run_stage_logged(root: Path, stage: str) -> None:
    """A stage never stops an upgrade or a reset: its failures are logged, not raised."""
    from kairos.stages.runner import run_stage
    try:
        report = run_stage(stage, root=root)
    except KairosError as exc:
        log.warning("stage %s: %s", stage, exc.message)
        return
    if report.failed:
        log.warning("stage %s: %d step(s) failed (see `kairos state`)", stage,
                    len(report.failed))


def _created_epoch(config: dict[str, Any]) -> int | None:
    created = config.get("created")
    if not isinstance(created, str):
        return None
    with contextlib.suppress(ValueError):
        stamp = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
        return int(stamp.timestamp())
    return None


# ------------------------------------------------------------------------------- fetch

def _fetch_oci(opts: UpgradeOptions, targets: Targets, work: Path, phases: Phases) -> Image:
    from kairos.oci.blobcache import BlobCache
    from kairos.oci.registry import RegistryClient, write_layout
    from kairos.oci.unpack import unpack_image

    ref = opts.source.reference
    client = RegistryClient(auth_file=opts.auth_file,
                            insecure=[ref.registry] if opts.insecure else [])
    platform = f"linux/{opts.arch}"
    manifest = client.resolve(ref, platform)
    # Before a byte is downloaded: an image that failed its assessment is not pulled again.
    refuse_failed(opts, targets, digest=manifest.digest)
    image = Image(digest=manifest.digest)
    if opts.verify:
        from kairos.oci.signature import verify_manifest
        image.signature = verify_manifest(client, manifest, opts.public_key).key_id
    cache = BlobCache(targets.persistent_dir / CACHE_DIR / "blobs")
    missing = sum(d.size for d in manifest.layers if cache.lookup(d.digest, d.size) is None)
    layers = sum(d.size for d in manifest.layers)
    need_space(targets.persistent_dir, "COS_PERSISTENT", missing + int(layers * UNPACK_FACTOR),
               f"{ref} (download {mib(missing)}, unpacked about {mib(int(layers * UNPACK_FACTOR))})",
               "free space in /usr/local (the blob cache is /usr/local/.kairos/cache)")
    _check_state_floor(opts, targets, layers)
    phases.mark("preflight")
    upgrade_stage(targets, "before-upgrade")
    phases.mark("pulling")

    def on_chunk(digest: str, have: int, size: int) -> None:
        if size >= (1 << 20) and have * 2 >= size:
            phases.mark("pull-partial")

    client.on_chunk = on_chunk
    result = client.pull(ref, cache, platform)
    phases.mark("pulled")
    image.digest = result.manifest.digest
    image.bytes_downloaded = result.downloaded
    image.layer_bytes_downloaded = result.layer_bytes_downloaded
    image.keep_digests = result.digests
    layout = write_layout(result, cache, "upgrade")
    tree = work / "tree"
    info = unpack_image(layout, tree, ref="upgrade", architecture=opts.arch)
    image.tree, image.arch = tree, info.architecture
    image.mtime = _created_epoch(info.config)
    return image


def _fetch_ocifile(opts: UpgradeOptions, targets: Targets, work: Path, phases: Phases) -> Image:
    from kairos.oci.unpack import inspect_image, unpack_image

    path = opts.source.path
    if opts.verify:
        raise BadInput("signatures can only be checked for oci: sources",
                       "upgrade from the registry, or drop --verify for a local archive")
    info = inspect_image(path, architecture=opts.arch)
    check_arch(info.architecture, opts.arch, str(path))
    refuse_failed(opts, targets, digest=info.manifest_digest or "")
    size = path.stat().st_size
    need_space(targets.persistent_dir, "COS_PERSISTENT", int(size * UNPACK_FACTOR),
               f"unpacking {path.name}", "free space in /usr/local")
    _check_state_floor(opts, targets, size)
    phases.mark("preflight")
    upgrade_stage(targets, "before-upgrade")
    tree = work / "tree"
    info = unpack_image(path, tree, architecture=opts.arch)
    return Image(tree=tree, digest=info.manifest_digest or "", arch=info.architecture,
                 mtime=_created_epoch(info.config))


def _fetch_dir(opts: UpgradeOptions, targets: Targets, work: Path, phases: Phases) -> Image:
    src = opts.source.path
    if opts.verify:
        raise BadInput("signatures can only be checked for oci: sources",
                       "upgrade from the registry, or drop --verify for a local tree")
    check_tree(src, opts.arch)
    size = tree_bytes(src)
    need_space(targets.persistent_dir, "COS_PERSISTENT", size, f"a copy of {src}",
               "free space in /usr/local")
    _check_state_floor(opts, targets, size)
    phases.mark("preflight")
    upgrade_stage(targets, "before-upgrade")
    tree = work / "tree"
    # A copy we own: the slot gets its boot id file without touching the user's tree.
    run(["cp", "-a", "--one-file-system", "--", f"{src}/.", str(tree)])
    return Image(tree=tree)


def _fetch_file(opts: UpgradeOptions, targets: Targets, work: Path, phases: Phases) -> Image:
    path = opts.source.path
    if opts.verify:
        raise BadInput("signatures can only be checked for oci: sources",
                       "upgrade from the registry, or drop --verify for a slot file")
    release = check_slot_file(path, opts.arch)
    _check_state_floor(opts, targets, path.stat().st_size)
    phases.mark("preflight")
    upgrade_stage(targets, "before-upgrade")
    return Image(slot_file=path, release=release, arch=release.get("KAIROS_ARCH", ""))


FETCHERS = {"oci": _fetch_oci, "ocifile": _fetch_ocifile, "dir": _fetch_dir, "file": _fetch_file}
