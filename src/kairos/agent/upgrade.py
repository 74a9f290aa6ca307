"""`kairos upgrade`: bring a new image into a slot and flip to it, surviving a power cut anywhere.

The sequence (docs/upgrade.md has the why of each step):

1. preflight: the source is checked (a registry resolves the reference, the platform, the
   signature when asked), free space on COS_PERSISTENT and COS_STATE is measured against
   what the upgrade needs, leftovers of an interrupted run are removed.
2. `before-upgrade` stage; the image is pulled into the blob cache on COS_PERSISTENT and
   unpacked into scratch there (never into RAM); the tree must be a Kairos image for this
   architecture with a kernel and an initrd.
3. the slot image is made with the build's own code (`make_squashfs`) as
   `cOS/transition.img` on COS_STATE, synced, its bytes re-read from the disk and hashed.
4. records (slotstate) are written, then the flip: booted from active, `transition.img →
   passive.img`, then one RENAME_EXCHANGE of passive.img and active.img; booted from passive,
   `transition.img → active.img`. Each step is synced and the journal checkpointed, so GRUB,
   which does not replay the journal, sees it; the initrd catches the one window where GRUB
   and the kernel disagree (see boot-path.md). Just before the new image becomes active.img,
   the boot assessment is armed (docs/lifecycle.md): GRUB gives the new image
   `boot_assessment.tries` boots to be assessed good before it goes back to the passive one.
5. `after-upgrade` stage, then reboot or power off when asked.

Every phase prints `kairos-upgrade: phase NAME` (stderr and the kernel log); naming a phase
in KAIROS_UPGRADE_PAUSE (comma-separated, or `all`) stops the upgrade there for good, so a test
can cut the power at it; with KAIROS_UPGRADE_STEP=1 it waits for SIGUSR1 and goes on instead
(a test snapshots the disk at each phase of one run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairos.agent import slotfile, slotstate
from kairos.agent.phases import Markers
from kairos.agent.upgradesource import UpgradeSource, check_arch, device_arch
from kairos.artifacts.rootfs import COMPRESSIONS, make_squashfs, squashfs_compression
from kairos.disk.mounts import remove_tree, unmount_below
from kairos.envfile import parse_env
from kairos.errors import BadInput, CommandFailed, KairosError
from kairos.run import run
from kairos.safefs import read_bytes, resolve_in_root
from kairos.ui import Progress

log = logging.getLogger("kairos.upgrade")

PHASES = ("start", "preflight", "pulling", "pull-partial", "pulled", "unpacked",
          "slot-writing", "slot-written", "slot-synced", "records-written", "staged",
          "flipped", "checkpointed", "after-upgrade", "done")
PAUSE_ENV = "KAIROS_UPGRADE_PAUSE"
STEP_ENV = "KAIROS_UPGRADE_STEP"
MARK = "kairos-upgrade: phase"

ACTIVE_IMG, PASSIVE_IMG, TRANSITION_IMG = "cOS/active.img", "cOS/passive.img", "cOS/transition.img"
RECOVERY_IMG, RECOVERY_TRANSITION = "cOS/recovery.squashfs", "cOS/transition.squashfs"
WORK_DIR = ".kairos/upgrade"  # scratch on COS_PERSISTENT
CACHE_DIR = ".kairos/cache"  # an OCI layout whose blobs/ is the blob cache
DEFAULT_CACHE_MAX = 2 << 30
# A squashfs holds its files' bytes plus inode and directory tables: at most this much per
# entry, plus a little for the superblock and id/xattr tables (the default image: 17193
# entries, 622.5 MiB of files, 621.0 MiB of squashfs).
SLOT_PER_ENTRY = 128
SLOT_SLACK = 4 << 20
# What an OCI layer grows to when unpacked, for the estimate before the pull (our images: 3.1).
UNPACK_FACTOR = 3.5
GRUB_COMPRESSIONS = ("none", "gzip", "xz", "lzo")


# ------------------------------------------------------------------------------- phases

class Phases(Markers):
    """The upgrade's phase markers (agent/phases.py has the machinery)."""

    names: tuple[str, ...] = PHASES
    pause_env = PAUSE_ENV
    step_env: str | None = STEP_ENV
    marker = MARK
    who = "kairos-upgrade"
    kind = "phase"


# ------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Targets:
    """Where this device keeps what an upgrade touches."""

    state_dir: Path  # COS_STATE, mounted
    persistent_dir: Path  # COS_PERSISTENT: scratch and blob cache
    booted: str  # "active" or "passive" (which slot this system runs from)
    recovery_dir: Path | None = None  # COS_RECOVERY, mounted (for --recovery)
    oem_dir: Path | None = None  # COS_OEM: grubenv
    stage_root: Path | None = None  # where before/after-upgrade stages run (None: not run)
    remount: bool = False  # remount the slot's partition rw for the write, ro after
    root: Path = Path("/")  # the running system's root (its /boot/kairos-boot.cfg)


@dataclass(frozen=True)
class UpgradeOptions:
    source: UpgradeSource
    recovery: bool = False
    auth_file: Path | None = None
    insecure: bool = False
    verify: bool = False
    public_key: str = ""
    compression: str = "none"
    size_mib: int = 0  # upgrade.system.size: reserve at least this much for the slot
    cache_max: int = DEFAULT_CACHE_MAX
    arch: str = field(default_factory=device_arch)
    tries: int = 1  # boot_assessment.tries: boots the new image gets to be assessed good
    force: bool = False  # apply an image that failed its boot assessment before

    def __post_init__(self) -> None:
        from kairos.boot.assessment import MAX_TRIES
        if isinstance(self.tries, bool) or not 1 <= self.tries <= MAX_TRIES:
            raise BadInput(f"boot_assessment.tries is {self.tries!r}",
                           f"set it to a whole number from 1 to {MAX_TRIES}")
        if self.compression not in COMPRESSIONS:
            raise BadInput(f"compression '{self.compression}' is not supported",
                           f"use one of {', '.join(COMPRESSIONS)}")
        if self.verify and not self.public_key:
            raise BadInput("signature verification is on but no public key is configured",
                           "set upgrade.public-key (PEM text or a file path) or drop --verify")


@dataclass
class UpgradeResult:
    source: str
    slot: str  # "active" or "recovery"
    booted: str
    digest: str = ""
    version: str = ""
    arch: str = ""
    slot_sha256: str = ""
    slot_size: int = 0
    bytes_downloaded: int = 0
    layer_bytes_downloaded: int = 0
    signature: str = ""
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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


# ------------------------------------------------------------------------------- helpers

def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def need_space(path: Path, label: str, need: int, what: str, hint: str) -> None:
    have = free_bytes(path)
    if have < need:
        raise BadInput(f"not enough space on {label} ({path}): {what} needs {_mib(need)}, "
                       f"{_mib(have)} free", hint)


@contextlib.contextmanager
def lock(persistent: Path, *, wait: bool = False) -> Iterator[None]:
    """One writer of the slots at a time (upgrade, boot assessment): `wait` blocks until the
    other is done, else a second one is refused."""
    path = persistent / ".kairos"
    path.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path / "upgrade.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BadInput("another upgrade is running on this device",
                           "wait for it to finish (see `kairos state`)") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def writable(mount_dir: Path, remount: bool) -> Iterator[Path]:
    """The slot partition read-write for the write, back to read-only after (even on errors)."""
    if remount:
        run(["mount", "-o", "remount,rw", str(mount_dir)])
    try:
        yield mount_dir
    finally:
        if remount:
            res = run(["mount", "-o", "remount,ro", str(mount_dir)], check=False)
            if res.returncode != 0:
                log.warning("could not remount %s read-only (%s); it is synced and "
                            "becomes read-only at the next boot", mount_dir, res.stderr.strip())


def _clear_scratch(work: Path) -> None:
    """Leftovers of an interrupted run: mounts below the scratch dir first, then the files."""
    if work.exists():
        unmount_below(work)
        remove_tree(work)


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


def image_id_of_tree(tree: Path) -> str:
    """The image id an unpacked tree names (after ensure_boot_cfg), "" when none."""
    from kairos.artifacts.bootid import read_boot_ids
    ids = read_boot_ids(tree)
    return (ids.image_id or "") if ids is not None else ""


def image_id_of_slot(path: Path) -> str:
    ids = slotfile.slot_ids(path)
    return (ids.image_id or "") if ids is not None else ""


def running_role(state_dir: Path, booted: str, root: Path) -> str:
    """The slot whose file holds the running image. The boot sentinel says which entry
    booted, but a settle after a fallback (agent/assess.py) or a rollback swaps active.img
    and passive.img under a running system: the image ids decide when they can, so the
    image that runs is the one an upgrade keeps."""
    try:
        running = image_id_of_tree(root)
    except (OSError, KairosError) as exc:  # no ids to go by: the sentinel's word stands
        log.warning("cannot read the running image's id: %s", exc)
        running = ""
    if booted not in ("active", "passive") or not running:
        return booted
    roles = [role for role, name in (("active", ACTIVE_IMG), ("passive", PASSIVE_IMG))
             if image_id_of_slot(state_dir / name) == running]
    return booted if booted in roles or not roles else roles[0]


def arm_assessment(state: Path, image_id: str, tries: int) -> None:
    """Make `image_id` the tentative image with `tries` boots, in one write of the
    assessment's env block, checkpointed so GRUB sees it (docs/lifecycle.md "Arm")."""
    from kairos.boot import assessment
    if not image_id:
        log.warning("the new image names no image id in /boot/kairos-boot.cfg: its boots "
                    "are not assessed (rebuild it with kairos build)")
        return
    flags = assessment.read(state)
    assessment.write(state, assessment.arm(flags, image_id, tries))
    slotfile.checkpoint(state)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
               f"{ref} (download {_mib(missing)}, unpacked about {_mib(int(layers * UNPACK_FACTOR))})",
               "free space in /usr/local (the blob cache is /usr/local/.kairos/cache)")
    _check_state_floor(opts, targets, layers)
    phases.mark("preflight")
    _stage(targets, "before-upgrade")
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
    _stage(targets, "before-upgrade")
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
    _stage(targets, "before-upgrade")
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
    _stage(targets, "before-upgrade")
    return Image(slot_file=path, release=release, arch=release.get("KAIROS_ARCH", ""))


FETCHERS = {"oci": _fetch_oci, "ocifile": _fetch_ocifile, "dir": _fetch_dir, "file": _fetch_file}


def _slot_dir(opts: UpgradeOptions, targets: Targets) -> Path:
    if not opts.recovery:
        return targets.state_dir
    if targets.recovery_dir is None:
        raise BadInput("COS_RECOVERY is not available", "is this an installed Kairos system?")
    return targets.recovery_dir


def _check_state_floor(opts: UpgradeOptions, targets: Targets, at_least: int) -> None:
    """Before any download: the slot partition must hold at least this much (the slot is
    never smaller than its compressed layers); the exact check follows the unpack."""
    label = "COS_RECOVERY" if opts.recovery else "COS_STATE"
    slot_dir = _slot_dir(opts, targets)
    stale = slot_dir / (RECOVERY_TRANSITION if opts.recovery else TRANSITION_IMG)
    stale_size = stale.stat().st_size if stale.exists() else 0
    have = free_bytes(slot_dir) + stale_size
    need = max(at_least, opts.size_mib << 20)
    if have < need:
        raise BadInput(f"not enough space on {label} ({slot_dir}): the new image needs at "
                       f"least {_mib(need)}, {_mib(have)} free", _space_hint(opts.recovery))


def _space_hint(recovery: bool) -> str:
    if recovery:
        return "remove files other than cOS/recovery.squashfs from COS_RECOVERY"
    return ("remove files other than cOS/active.img and cOS/passive.img from COS_STATE, "
            "or use a smaller image")


def _stage(targets: Targets, stage: str) -> None:
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


# ------------------------------------------------------------------------------- write

def _watch_write(path: Path, phases: Phases, done: threading.Event) -> None:
    """Mark `slot-writing` once mksquashfs has written its first MiB (so a pause lands mid-way)."""
    while not done.wait(0.2):
        with contextlib.suppress(OSError):
            if path.stat().st_size >= (1 << 20):
                phases.mark("slot-writing")
                return


def _squash(image: Image, dest: Path, opts: UpgradeOptions, phases: Phases) -> None:
    assert image.tree is not None
    mtime = image.mtime
    if mtime is None:
        mtime = int(os.lstat(resolve_in_root(image.tree, "etc/kairos-release")).st_mtime)
    done = threading.Event()
    watcher = threading.Thread(target=_watch_write, args=(dest, phases, done), daemon=True)
    watcher.start()
    try:
        make_squashfs(image.tree, dest, mtime=mtime, compression=opts.compression)
    except CommandFailed as exc:
        dest.unlink(missing_ok=True)
        if "No space left" in exc.message or "No space left" in str(exc):
            raise KairosError(f"no space left on the slot partition while writing {dest.name}",
                              _space_hint(opts.recovery)) from None
        raise
    finally:
        done.set()
        watcher.join()
    phases.mark("slot-writing")


def write_slot(image: Image, dest: Path, opts: UpgradeOptions, phases: Phases) -> str:
    """Write the slot image to `dest`, sync it and return the sha256 of what the disk holds."""
    if image.slot_file is not None:
        size = image.slot_file.stat().st_size
        progress = Progress(f"writing {dest.name}", size)

        def copied(n: int) -> None:
            progress.advance(n - progress.done)
            if n * 2 >= size:
                phases.mark("slot-writing")

        expected = slotfile.copy_file(image.slot_file, dest, progress=copied)
        progress.finish()
    else:
        _squash(image, dest, opts, phases)
        expected = ""
    phases.mark("slot-written")
    fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    slotfile.fsync_dir(dest.parent)
    slotfile.checkpoint(dest.parent)
    got = slotfile.hash_on_disk(dest)
    if expected and got != expected:
        raise KairosError(f"{dest} does not hold what was written (sha256 {got[:12]}…, "
                          f"expected {expected[:12]}…)", "the disk may be failing; run "
                          "the upgrade again and check the kernel log")
    if squashfs_compression(dest) not in GRUB_COMPRESSIONS:
        raise KairosError(f"{dest} is not a squashfs GRUB can read", "report this as a bug")
    return got


# ------------------------------------------------------------------------------- flip

def _current(part: Path, files: dict[str, str]) -> dict[str, slotstate.ImageRecord | None]:
    try:
        return slotstate.resolve(part, files)
    except (OSError, KairosError) as exc:
        log.warning("cannot read the slot records on %s: %s", part, exc)
        return dict.fromkeys(files)


def flip_system(state: Path, new: slotstate.ImageRecord, booted: str, phases: Phases,
                arm: Callable[[], None] | None = None) -> None:
    """Make transition.img active in one atomic step (see the module doc). `arm` runs just
    before the step that makes the new image active.img (boot assessment)."""
    files = {"active": ACTIVE_IMG, "passive": PASSIVE_IMG}
    current = _current(state, files)
    transition, active, passive = state / TRANSITION_IMG, state / ACTIVE_IMG, state / PASSIVE_IMG
    if booted == "passive":
        # The booted passive image is the known-good one: it stays; active is replaced.
        roles = {"active": new, "passive": current["passive"]}
        keep = [current["active"]]
    else:
        roles = {"active": new, "passive": current["active"]}
        keep = [current["passive"]]
    slotstate.save(state, "COS_STATE", {k: v for k, v in roles.items() if v is not None},
                   [r for r in keep if r is not None])
    slotfile.checkpoint(state)
    phases.mark("records-written")
    if booted == "passive" or not active.exists():
        if arm is not None:
            arm()
        _replace(transition, active)
    else:
        _replace(transition, passive)
        slotfile.checkpoint(state)
        transition.unlink(missing_ok=True)
        slotfile.checkpoint(state)
        phases.mark("staged")
        if arm is not None:
            arm()
        slotfile.exchange(passive, active)
        slotfile.fsync_dir(active.parent)
    phases.mark("flipped")
    slotfile.checkpoint(state)
    transition.unlink(missing_ok=True)  # the replaced image, when there was one
    slotfile.checkpoint(state)
    phases.mark("checkpointed")


def swap_slots(state: Path, mark: Callable[[str], None] | None = None) -> None:
    """Exchange active.img and passive.img for good, as the flip does: records first (each
    follows its file), then one RENAME_EXCHANGE, each step checkpointed so GRUB sees it. A
    cut anywhere leaves either order whole; the caller decides whether to run it again.
    `mark` is told `records-written` and `swapped` (rollback's step markers)."""
    current = _current(state, {"active": ACTIVE_IMG, "passive": PASSIVE_IMG})
    swapped = {"active": current["passive"], "passive": current["active"]}
    roles = {k: v for k, v in swapped.items() if v is not None}
    slotstate.save(state, "COS_STATE", roles,
                   slotstate.others(slotstate.read_doc(state), "COS_STATE", roles))
    slotfile.checkpoint(state)
    if mark is not None:
        mark("records-written")
    slotfile.exchange(state / PASSIVE_IMG, state / ACTIVE_IMG)
    slotfile.fsync_dir(state / "cOS")
    slotfile.checkpoint(state)
    if mark is not None:
        mark("swapped")


def _replace(new: Path, target: Path) -> None:
    """Put `new` in `target`'s place. An existing target is swapped, not overwritten: until
    the swap is checkpointed GRUB may still boot the old file's kernel, and the initrd then
    finds that file, now named like `new`, by its boot id (see boot-path.md)."""
    if target.exists():
        slotfile.exchange(new, target)
    else:
        os.rename(new, target)
    slotfile.fsync_dir(target.parent)


def flip_recovery(recovery: Path, new: slotstate.ImageRecord, phases: Phases) -> None:
    """Swap transition.squashfs and recovery.squashfs, then drop the old one: until the swap
    is checkpointed, the old recovery image stays on disk for the initrd to find."""
    current = _current(recovery, {"recovery": RECOVERY_IMG})
    keep = [current["recovery"]] if current["recovery"] is not None else []
    slotstate.save(recovery, "COS_RECOVERY", {"recovery": new}, keep)
    slotfile.checkpoint(recovery)
    phases.mark("records-written")
    transition, target = recovery / RECOVERY_TRANSITION, recovery / RECOVERY_IMG
    _replace(transition, target)
    phases.mark("flipped")
    slotfile.checkpoint(recovery)
    transition.unlink(missing_ok=True)
    slotfile.checkpoint(recovery)
    phases.mark("checkpointed")


def _reset_default_entry(oem: Path | None) -> None:
    """A lasting selection of another entry (saved_entry) would hide the new image."""
    if oem is None:
        return
    from kairos.boot import grubenv
    env_file = oem / "grubenv"
    if not env_file.exists():
        return
    env = grubenv.read(env_file)
    if env.get("saved_entry", "") not in ("", "cos"):
        log.info("boot entry %s was the default; the upgraded system is now",
                 env["saved_entry"])
        grubenv.set_vars(env_file, {"saved_entry": "cos"})


# ------------------------------------------------------------------------------- upgrade

def upgrade(opts: UpgradeOptions, targets: Targets, phases: Phases | None = None) -> UpgradeResult:
    """Run the whole upgrade; see the module doc. Raises BadInput (exit 2) for anything the
    user can fix, before any slot is touched."""
    phases = phases or Phases.from_env()
    phases.mark("start")
    if targets.booted not in ("active", "passive"):
        raise BadInput(f"this system booted {targets.booted}, not from a slot on COS_STATE",
                       "boot the active (or passive) system to upgrade")
    role = running_role(targets.state_dir, targets.booted, targets.root)
    if role != targets.booted:
        log.info("booted %s, but the running image is in %s.img now (settled or rolled "
                 "back since boot): it is kept as the known-good one", targets.booted, role)
        targets = dataclasses.replace(targets, booted=role)
    slot_dir = _slot_dir(opts, targets)
    work = targets.persistent_dir / WORK_DIR
    result = UpgradeResult(str(opts.source), "recovery" if opts.recovery else "active",
                           targets.booted)
    with lock(targets.persistent_dir):
        _clear_scratch(work)
        work.mkdir(parents=True, mode=0o700)
        try:
            image = FETCHERS[opts.source.kind](opts, targets, work, phases)
            if image.tree is not None:
                phases.mark("unpacked")
                image.release = check_tree(image.tree, opts.arch)
                _ensure_boot_id(image.tree)
                image.image_id = image_id_of_tree(image.tree)
                need = slot_need(tree_bytes(image.tree), opts.size_mib)
            else:
                assert image.slot_file is not None
                image.image_id = image_id_of_slot(image.slot_file)
                need = image.slot_file.stat().st_size
            refuse_failed(opts, targets, digest=image.digest, image_id=image.image_id)
            _write_and_flip(opts, targets, slot_dir, image, need, phases, result)
        finally:
            _clear_scratch(work)
        if image.keep_digests:
            _prune_cache(targets, opts, image.keep_digests)
    _reset_default_entry(targets.oem_dir)
    phases.mark("after-upgrade")
    _stage(targets, "after-upgrade")
    phases.mark("done")
    result.phases = dict(phases.times)
    return result


def _ensure_boot_id(tree: Path) -> None:
    from kairos.artifacts.bootid import ensure_boot_cfg
    ensure_boot_cfg(tree)


def _write_and_flip(opts: UpgradeOptions, targets: Targets, slot_dir: Path, image: Image,
                    need: int, phases: Phases, result: UpgradeResult) -> None:
    label = "COS_RECOVERY" if opts.recovery else "COS_STATE"
    transition = slot_dir / (RECOVERY_TRANSITION if opts.recovery else TRANSITION_IMG)
    with writable(slot_dir, targets.remount):
        transition.unlink(missing_ok=True)  # a half-written one from an interrupted run
        need_space(slot_dir, label, need, "the new slot image", _space_hint(opts.recovery))
        try:
            sha = write_slot(image, transition, opts, phases)
        except BaseException:
            transition.unlink(missing_ok=True)
            raise
        phases.mark("slot-synced")
        record = slotstate.record_file(
            transition, source=str(opts.source), digest=image.digest, sha256=sha,
            version=image.version, arch=image.release.get("KAIROS_ARCH", image.arch),
            date=_now(), image_id=image.image_id)
        if opts.recovery:
            flip_recovery(slot_dir, record, phases)  # recovery boots are never assessed
        else:
            flip_system(slot_dir, record, targets.booted, phases,
                        arm=lambda: arm_assessment(slot_dir, image.image_id, opts.tries))
    result.digest, result.version, result.arch = image.digest, record.version, record.arch
    result.slot_sha256, result.slot_size = sha, record.size
    result.bytes_downloaded = image.bytes_downloaded
    result.layer_bytes_downloaded = image.layer_bytes_downloaded
    result.signature = image.signature


def _prune_cache(targets: Targets, opts: UpgradeOptions, keep: set[str]) -> None:
    from kairos.oci.blobcache import BlobCache
    cache = BlobCache(targets.persistent_dir / CACHE_DIR / "blobs")
    for entry in cache.prune(opts.cache_max, keep=keep):
        log.info("blob cache: dropped %s (%s)", entry.digest[7:19], _mib(entry.size))


# ------------------------------------------------------------------------------- device

STATE_MOUNT = Path("/run/initramfs/cos-state")
PERSISTENT_MOUNT = Path("/usr/local")
OEM_MOUNT = Path("/oem")
RECOVERY_MOUNT = Path("/run/kairos/recovery")


def booted_slot(root: Path = Path("/")) -> str:
    from kairos.agent.state import ACTIVE, LIVECD, PASSIVE, RECOVERY, boot_from_sentinels
    boot = boot_from_sentinels(root)
    if boot == LIVECD:
        raise BadInput("this system runs from live media", "install it first (kairos install)")
    return {ACTIVE: "active", PASSIVE: "passive", RECOVERY: "recovery"}.get(boot, boot)


@contextlib.contextmanager
def device_targets(recovery: bool) -> Iterator[Targets]:
    """The running device's partitions; COS_RECOVERY is mounted for a recovery upgrade."""
    from kairos.disk.mounts import mount
    for path, label in ((STATE_MOUNT, "COS_STATE"), (PERSISTENT_MOUNT, "COS_PERSISTENT")):
        if not os.path.ismount(path):
            raise BadInput(f"{label} is not mounted at {path}",
                           "run kairos upgrade on an installed, booted Kairos system")
    booted = booted_slot()
    base = Targets(STATE_MOUNT, PERSISTENT_MOUNT, booted, oem_dir=OEM_MOUNT,
                   stage_root=Path("/"), remount=True)
    if not recovery:
        yield base
        return
    dev = run(["blkid", "-L", "COS_RECOVERY"], check=False).stdout.strip()
    if not dev:
        raise BadInput("no partition labelled COS_RECOVERY", "is this an installed system?")
    with mount(dev, RECOVERY_MOUNT, options=["rw"]) as mnt:
        yield Targets(STATE_MOUNT, PERSISTENT_MOUNT, booted, recovery_dir=mnt,
                      oem_dir=OEM_MOUNT, stage_root=Path("/"), remount=False)


def reboot_after(action: str) -> None:
    """`reboot` or `poweroff` (both exist under systemd and sysvinit)."""
    if action:
        run([action])
