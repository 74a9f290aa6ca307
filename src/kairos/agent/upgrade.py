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

This module is the sequence; what it calls lives below it: the phase markers in
agent/phases.py, the source, options and targets in agent/upgradesource.py, the fetchers and
the checks of what they bring in agent/fetch.py, the flip (like every change of the slot
files) in agent/slots.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairos.agent import slotfile, slotstate
from kairos.agent.fetch import (
    CACHE_DIR,
    FETCHERS,
    GRUB_COMPRESSIONS,
    Image,
    check_tree,
    mib,
    need_space,
    refuse_failed,
    slot_dir_for,
    slot_need,
    space_hint,
    tree_bytes,
    upgrade_stage,
)
from kairos.agent.phases import Phases
from kairos.agent.slots import (
    ACTIVE_IMG,
    PASSIVE_IMG,
    RECOVERY_TRANSITION,
    TRANSITION_IMG,
    flip_recovery,
    flip_system,
    image_id_of_slot,
    image_id_of_tree,
    lock,
    writable,
)
from kairos.agent.upgradesource import Targets, UpgradeOptions
from kairos.artifacts.rootfs import make_squashfs, squashfs_compression
from kairos.disk.mounts import remove_tree, unmount_below
from kairos.errors import BadInput, CommandFailed, KairosError
from kairos.run import run
from kairos.safefs import resolve_in_root
from kairos.ui import Progress

log = logging.getLogger("kairos.upgrade")

WORK_DIR = ".kairos/upgrade"  # scratch on COS_PERSISTENT


# ------------------------------------------------------------------------------- result

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


# ------------------------------------------------------------------------------- helpers

def _clear_scratch(work: Path) -> None:
    """Leftovers of an interrupted run: mounts below the scratch dir first, then the files."""
    if work.exists():
        unmount_below(work)
        remove_tree(work)


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
                              space_hint(opts.recovery)) from None
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

        expected: slotfile.Sums | None = slotfile.copy_file(image.slot_file, dest,
                                                             progress=copied)
        progress.finish()
    else:
        _squash(image, dest, opts, phases)
        expected = None
    phases.mark("slot-written")
    fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    slotfile.fsync_dir(dest.parent)
    slotfile.checkpoint(dest.parent)
    got = slotfile.hash_on_disk(dest)
    if expected is not None and got.crc32 != expected.crc32:
        raise KairosError(f"{dest} does not hold what was written (CRC {got.crc32:08x}, "
                          f"expected {expected.crc32:08x})", "the disk may be failing; run "
                          "the upgrade again and check the kernel log")
    if squashfs_compression(dest) not in GRUB_COMPRESSIONS:
        raise KairosError(f"{dest} is not a squashfs GRUB can read", "report this as a bug")
    return got.sha256


# ------------------------------------------------------------------------------- boot entry

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
    slot_dir = slot_dir_for(opts, targets)
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
    upgrade_stage(targets, "after-upgrade")
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
        need_space(slot_dir, label, need, "the new slot image", space_hint(opts.recovery))
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
        log.info("blob cache: dropped %s (%s)", entry.digest[7:19], mib(entry.size))


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
