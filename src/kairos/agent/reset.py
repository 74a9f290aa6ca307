"""`kairos reset`: rebuild active and passive from the recovery image, wipe COS_PERSISTENT
(and, when asked, the user's files on COS_OEM), from the recovery boot.

Kairos reformats COS_STATE and then writes the slots: a power cut in between leaves no
bootable slot. Here COS_STATE is never reformatted; each slot file is replaced with the
upgrade's atomic exchange, and the boot entry the reset runs in is pinned until the end, so a
power cut at any instant leaves:

- COS_RECOVERY untouched (it is only read) and bootable;
- active.img and passive.img each either the old image whole or the new one whole;
- a device that boots the reset entry (recovery, or statereset) again, where a re-run
  converges on the end state of an uncut run.

Steps (each prints `kairos-reset: step NAME`; naming it in KAIROS_RESET_PAUSE stops the reset
there for good so a test can cut the power, and with KAIROS_RESET_STEP=1 it waits for SIGUSR1
and goes on, so a test can snapshot the disk at each; a test can also pass a hook):

Step (what is done) → what a cut right after it boots:

  preflight         boot, source, space and tools checked; nothing written → as before
  before-reset      the `before-reset` stage → as before
  image-written     the new image as cOS/transition.img: copied from the recovery image (or
                    --source through the upgrade's fetchers), synced, re-read from the disk
                    and hashed → as before (the next run deletes the stale transition.img)
  pinned            grubenv: saved_entry = this boot's entry (recovery or statereset),
                    next_entry removed; checkpointed → the reset entry, from here on
  persistent-wiped  COS_PERSISTENT unmounted and made anew as install makes it (mkfs.ext4,
                    label COS_PERSISTENT, a new UUID)
  oem-wiped         with --reset-oem: every file of /oem but grubenv (which keeps only the pin)
  flags-cleared     the boot assessment's flags (tentative, tries, failed); checkpointed
  active-replaced   records, then transition.img exchanged with active.img, the old image
                    deleted; each step checkpointed
  passive-written   active.img copied to transition.img, synced, hashed: the same bytes
  passive-replaced  records, exchange with passive.img, the old image deleted; checkpointed
  after-reset       the `after-reset` stage
  unpinned          grubenv: next_entry and saved_entry removed; checkpointed → the new
                    active image
  done              then reboot or power off when asked
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairos.agent import slotfile, slotstate
from kairos.agent.fetch import (
    FETCHERS,
    Image,
    check_slot_file,
    check_tree,
    need_space,
    run_stage_logged,
    slot_need,
    tree_bytes,
)
from kairos.agent.phases import Markers, Phases
from kairos.agent.slots import (
    ACTIVE_IMG,
    PASSIVE_IMG,
    RECOVERY_IMG,
    TRANSITION_IMG,
    image_id_of_slot,
    image_id_of_tree,
    replace,
    writable,
)
from kairos.agent.upgrade import WORK_DIR, write_slot
from kairos.agent.upgradesource import Targets, UpgradeOptions, UpgradeSource, device_arch
from kairos.disk.mounts import mount, remove_tree, tempdir
from kairos.errors import BadInput, KairosError
from kairos.run import require, run

log = logging.getLogger("kairos.reset")

STEPS = ("preflight", "before-reset", "image-written", "pinned", "persistent-wiped",
         "oem-wiped", "flags-cleared", "active-replaced", "passive-written",
         "passive-replaced", "after-reset", "unpinned", "done")
PAUSE_ENV = "KAIROS_RESET_PAUSE"
MARK = "kairos-reset: step"
SLOT_FILES = {"active": ACTIVE_IMG, "passive": PASSIVE_IMG}
PERSISTENT_LABEL = "COS_PERSISTENT"
PERSISTENT_PARTLABEL = "persistent"  # the GPT name install gives it (disk/layout.py)
# The GRUB entry each boot state comes from: pinned while the reset runs.
ENTRY_OF_BOOT = {"recovery": "recovery", "autoreset": "statereset"}
KEEP_IN_OEM = ("grubenv", "lost+found")
SPACE_HINT = ("remove files other than cOS/active.img and cOS/passive.img from COS_STATE, "
              "or reset from a smaller image")



# ------------------------------------------------------------------------------- steps

class Steps(Markers):
    """The reset's step markers (agent/phases.py; a step named in
    KAIROS_RESET_PAUSE stops there; `hook` is for tests) with the reset's names."""

    names = STEPS
    pause_env = PAUSE_ENV
    step_env = "KAIROS_RESET_STEP"
    marker = MARK
    who = "kairos-reset"
    kind = "step"


class _FetchPhases(Phases):
    """The upgrade's fetchers mark upgrade phases; inside a reset they are only logged."""

    def __init__(self) -> None:
        super().__init__("", kmsg=None)

    def mark(self, name: str) -> None:
        log.debug("fetch: %s", name)


# ------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class ResetTargets:
    """What a reset touches, as paths (the device's, or a test's)."""

    state_dir: Path  # COS_STATE, mounted (read-write, or with `remount`)
    recovery_dir: Path  # COS_RECOVERY, mounted (read-only is enough): cOS/recovery.squashfs
    boot: str  # what booted: recovery, autoreset (statereset), active, passive, livecd, unknown
    persistent_device: Path | None = None  # COS_PERSISTENT: block device (or image file)
    oem_dir: Path | None = None  # COS_OEM, mounted: grubenv and the user's configs
    stage_root: Path | None = None  # where before/after-reset run (None: not run)
    lock_dir: Path = Path("/run/kairos")  # one reset at a time; scratch mount points
    remount: bool = False  # remount COS_STATE rw around writes

    @property
    def recovery_image(self) -> Path:
        return self.recovery_dir / RECOVERY_IMG


@dataclass(frozen=True)
class ResetOptions:
    reset_persistent: bool = True  # reset.reset-persistent (Kairos's default: true)
    reset_oem: bool = False  # reset.reset-oem
    source: UpgradeSource | None = None  # None: the recovery image
    unattended: bool = False
    insecure: bool = False
    auth_file: Path | None = None
    arch: str = field(default_factory=device_arch)

    @property
    def tree_source(self) -> bool:
        """oci:, ocifile:, dir:: a tree to unpack and squash (scratch on COS_PERSISTENT)."""
        return self.source is not None and self.source.kind != "file"


@dataclass
class ResetResult:
    source: str
    boot: str
    version: str = ""
    digest: str = ""
    image_id: str = ""
    slot_sha256: str = ""
    slot_size: int = 0
    persistent_wiped: bool = False
    oem_wiped: bool = False
    flags_cleared: bool = False
    steps: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Run:
    """One reset's state as its steps go: the new image's record once it is written."""

    opts: ResetOptions
    targets: ResetTargets
    steps: Steps
    result: ResetResult
    slot_file: Path | None = None  # the source slot image, when it is a file
    release: dict[str, str] = field(default_factory=dict)
    record: slotstate.ImageRecord | None = None  # of the new image (inode: transition.img)

    @property
    def state(self) -> Path:
        return self.targets.state_dir

    @property
    def entry(self) -> str:
        return ENTRY_OF_BOOT[self.targets.boot]


# ------------------------------------------------------------------------------- checks

def check_boot(boot: str, unattended: bool) -> None:
    """Reset rewrites both slots: only from the recovery image, which it never touches. The
    statereset boot (`kairos.reset` on the command line) is for the unattended service."""
    if boot == "recovery":
        return
    if boot == "autoreset":
        if unattended:
            return
        raise BadInput("this is the automatic reset boot (statereset): the kairos-reset "
                       "service runs the reset here",
                       "wait for it; to reset by hand, boot the recovery entry, or run "
                       "kairos reset --unattended")
    if boot == "livecd":
        raise BadInput("this system runs from live media", "install it first (kairos install)")
    raise BadInput(f"this system booted {boot if boot != 'unknown' else 'an unknown image'}, "
                   "not the recovery image: reset rewrites the active and passive slots",
                   "boot recovery once (kairos bootentry --select recovery, or statereset for "
                   "an unattended reset), reboot and run kairos reset there")


def _check_slot(path: Path, what: str, arch: str) -> dict[str, str]:
    if not path.is_file():
        raise BadInput(f"there is no {what} at {path}",
                       "upgrade the recovery image (kairos upgrade --recovery), or reset "
                       "with --source")
    try:
        return check_slot_file(path, arch)
    except BadInput as exc:
        raise BadInput(f"the {what} fails its checks: {exc.message}", exc.hint) from None


def _stale_size(state: Path) -> int:
    st = slotstate.file_stat(state / TRANSITION_IMG)
    return st[1] if st is not None else 0


def preflight(r: _Run) -> None:
    """Every check that needs nothing written; BadInput (exit 2) for each refusal."""
    opts, t = r.opts, r.targets
    check_boot(t.boot, opts.unattended)
    tools = ["unsquashfs"]
    if opts.reset_persistent and t.persistent_device is not None:
        tools.append("mkfs.ext4")
    if opts.tree_source:
        tools.append("mksquashfs")
    require(*tools)
    if not t.state_dir.is_dir():
        raise BadInput(f"COS_STATE is not mounted at {t.state_dir}",
                       "reset needs an installed disk (kairos install)")
    if opts.source is None:
        r.slot_file = t.recovery_image
        r.release = _check_slot(r.slot_file, "recovery image", opts.arch)
    elif opts.source.kind == "file":
        r.slot_file = opts.source.path
        r.release = _check_slot(r.slot_file, "slot image", opts.arch)
    elif t.persistent_device is None:
        raise BadInput(f"a {opts.source.kind}: source needs COS_PERSISTENT as scratch space, "
                       "and there is none", "reset from the recovery image or a file: slot image")
    if r.slot_file is not None:
        size = r.slot_file.stat().st_size
        have = free_bytes(t.state_dir) + _stale_size(t.state_dir)
        if have < size:
            raise BadInput(f"not enough space on COS_STATE ({t.state_dir}): the new image "
                           f"needs {size >> 20} MiB, {have >> 20} MiB free", SPACE_HINT)
    if opts.reset_persistent and t.persistent_device is None:
        log.warning("no COS_PERSISTENT partition found: nothing to wipe")
    if opts.reset_oem and t.oem_dir is None:
        log.warning("COS_OEM is not mounted: its files are kept")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ------------------------------------------------------------------------------- image

def _upgrade_options(r: _Run) -> UpgradeOptions:
    source = r.opts.source or UpgradeSource("file", str(r.targets.recovery_image))
    return UpgradeOptions(source=source, auth_file=r.opts.auth_file, insecure=r.opts.insecure,
                          arch=r.opts.arch)


def _recovery_record(r: _Run, sha: str) -> slotstate.ImageRecord | None:
    """The record COS_RECOVERY keeps of its image, when it describes these bytes."""
    if r.opts.source is not None:
        return None
    try:
        rec = slotstate.resolve(r.targets.recovery_dir, {"recovery": RECOVERY_IMG})["recovery"]
    except (OSError, KairosError):
        return None
    return rec if rec is not None and rec.sha256 == sha else None


def _record(r: _Run, transition: Path, image: Image, sha: str) -> slotstate.ImageRecord:
    """The new image's record: what the recovery image's own record says when it is the
    source (its registry source and digest), else the source given."""
    release = image.release or r.release
    known = _recovery_record(r, sha)
    source = known.source if known is not None else str(_upgrade_options(r).source)
    return slotstate.record_file(
        transition, source=source, digest=(known.digest if known is not None else image.digest),
        sha256=sha, version=release.get("KAIROS_VERSION") or release.get("VERSION", ""),
        arch=release.get("KAIROS_ARCH", image.arch), date=slotstate.now(),
        image_id=image_id_of_slot(transition))


@contextlib.contextmanager
def persistent_mounted(t: ResetTargets) -> Iterator[Path]:
    """COS_PERSISTENT mounted read-write at a scratch mount point, unmounted on exit."""
    if t.persistent_device is None:
        raise BadInput("COS_PERSISTENT was not found", "is this an installed system?")
    t.lock_dir.mkdir(parents=True, exist_ok=True)
    options = ["loop"] if t.persistent_device.is_file() else []
    with tempdir(prefix="reset-", parent=t.lock_dir) as tmp, \
            mount(t.persistent_device, tmp / "persistent", options=options) as mnt:
        yield mnt


def _fetch_tree(r: _Run, transition: Path) -> tuple[Image, str]:
    """oci:, ocifile:, dir:: the upgrade's fetchers unpack into scratch on COS_PERSISTENT,
    the tree is squashed into transition.img by the build's own writer."""
    assert r.opts.source is not None
    opts, phases = _upgrade_options(r), _FetchPhases()
    with persistent_mounted(r.targets) as pdir:
        work = pdir / WORK_DIR
        remove_tree(work)  # leftovers of a cut run
        work.mkdir(parents=True, mode=0o700)
        try:
            image = FETCHERS[opts.source.kind](opts, Targets(r.state, pdir, "recovery"), work,
                                               phases)
            assert image.tree is not None
            from kairos.artifacts.bootid import ensure_boot_cfg
            image.release = check_tree(image.tree, opts.arch)
            ensure_boot_cfg(image.tree)
            image.image_id = image_id_of_tree(image.tree)
            need_space(r.state, "COS_STATE", slot_need(tree_bytes(image.tree), 0),
                       "the new slot image", SPACE_HINT)
            sha = write_slot(image, transition, opts, phases)
        finally:
            remove_tree(work)
    return image, sha


def write_image(r: _Run) -> None:
    """The new image as transition.img, synced, re-read from the disk and hashed."""
    transition = r.state / TRANSITION_IMG
    with writable(r.state, r.targets.remount):
        transition.parent.mkdir(exist_ok=True)
        transition.unlink(missing_ok=True)  # a half-written one from a cut run
        try:
            if r.slot_file is not None:
                image = Image(slot_file=r.slot_file, release=r.release)
                need_space(r.state, "COS_STATE", r.slot_file.stat().st_size,
                           "the new slot image", SPACE_HINT)
                sha = write_slot(image, transition, _upgrade_options(r), _FetchPhases())
            else:
                image, sha = _fetch_tree(r, transition)
        except BaseException:
            transition.unlink(missing_ok=True)
            raise
        r.record = _record(r, transition, image, sha)
    res = r.result
    res.version, res.digest, res.image_id = r.record.version, r.record.digest, r.record.image_id
    res.slot_sha256, res.slot_size, res.source = sha, r.record.size, r.record.source


# ------------------------------------------------------------------------------- grubenv

def _env_file(r: _Run) -> Path | None:
    return r.targets.oem_dir / "grubenv" if r.targets.oem_dir is not None else None


def pin(r: _Run) -> None:
    """Boot this reset entry again until the reset is done: a cut must not boot half-reset
    slots with a wiped COS_PERSISTENT."""
    from kairos.boot import grubenv
    env_file = _env_file(r)
    if env_file is None:
        log.warning("COS_OEM is not mounted: a cut reset boots the default entry")
        return
    env = grubenv.read(env_file)
    env.pop("next_entry", None)
    env["saved_entry"] = r.entry
    grubenv.write(env_file, env)
    slotfile.checkpoint(env_file.parent)  # GRUB reads COS_OEM without its journal too


def unpin(r: _Run) -> None:
    """The next boot is the (new) active image: no lasting or one-shot selection left."""
    from kairos.boot import grubenv
    env_file = _env_file(r)
    if env_file is None or not env_file.exists():
        return
    env = grubenv.read(env_file)
    if "next_entry" in env or "saved_entry" in env:
        env.pop("next_entry", None)
        env.pop("saved_entry", None)
        grubenv.write(env_file, env)
        slotfile.checkpoint(env_file.parent)


# ------------------------------------------------------------------------------- wipes

def _majmin(dev: Path) -> set[str]:
    """major:minor of a block device, or of the loop devices backed by an image file."""
    st = os.stat(dev)
    if stat.S_ISBLK(st.st_mode):
        return {f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"}
    out = run(["losetup", "--associated", str(dev)], check=False).stdout
    found: set[str] = set()
    for line in out.splitlines():
        loop = line.split(":", 1)[0].strip()
        if loop.startswith("/dev/"):
            found |= _majmin(Path(loop))
    return found


def mounts_of(dev: Path) -> list[str]:
    """Where `dev` is mounted (binds too), deepest first."""
    numbers = _majmin(dev)
    targets = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if fields[2] in numbers:
                targets.append(fields[4].replace("\\040", " "))
    return sorted(targets, key=lambda m: m.count("/"), reverse=True)


def unmount_all(dev: Path, label: str) -> None:
    for target in mounts_of(dev):
        res = run(["umount", target], check=False)
        if res.returncode != 0:
            # Never mkfs a filesystem something still writes to (a lazy unmount would hide it).
            raise KairosError(f"{label} is busy: cannot unmount {target} "
                              f"({res.stderr.strip() or 'in use'})",
                              f"stop what uses {target} and run kairos reset again")


def wipe_persistent(r: _Run) -> None:
    """A new, empty COS_PERSISTENT, as install makes it (same label, a new UUID)."""
    from kairos.disk import blockdev
    from kairos.disk.filesystems import FsTarget, mkfs_ext4
    dev = r.targets.persistent_device
    if not r.opts.reset_persistent or dev is None:
        return
    unmount_all(dev, PERSISTENT_LABEL)
    size = blockdev.device_size(dev) if blockdev.is_block_device(dev) else dev.stat().st_size
    mkfs_ext4(FsTarget(dev, 0, size), PERSISTENT_LABEL)
    os.sync()
    r.result.persistent_wiped = True


def wipe_oem(r: _Run) -> None:
    """Kairos reformats COS_OEM for reset-oem: every user config and the GRUB options go.
    Here its files are removed instead (the partition stays mounted for the recovery system),
    except grubenv, which keeps only the pin: the same end state, with the pin kept."""
    from kairos.boot import grubenv
    oem = r.targets.oem_dir
    if not r.opts.reset_oem or oem is None:
        return
    for entry in os.scandir(oem):
        if entry.name in KEEP_IN_OEM:
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if not remove_tree(path):
                raise KairosError(f"cannot remove {path} (something is mounted below it)",
                                  "unmount it and run kairos reset again")
        else:
            path.unlink()
    grubenv.write(oem / "grubenv", {"saved_entry": r.entry})
    slotfile.checkpoint(oem)
    r.result.oem_wiped = True


def clear_flags(r: _Run) -> None:
    """No flag may survive: the new images may even carry the id that failed before (a
    recovery image equal to a failed upgrade), and GRUB would refuse both slots."""
    from kairos.boot import assessment
    clear = assessment.Flags()
    try:
        if assessment.read(r.state) == clear:
            return
    except KairosError as exc:  # a block GRUB cannot use either: replaced
        log.warning("boot assessment flags: %s", exc.message)
    with writable(r.state, r.targets.remount):
        assessment.write(r.state, clear)
        slotfile.checkpoint(r.state)
    r.result.flags_cleared = True


# ------------------------------------------------------------------------------- slots

def place(r: _Run, role: str) -> None:
    """transition.img becomes `role`: records first (matched by inode, right at every
    instant), the exchange, then the old image deleted; each checkpointed."""
    assert r.record is not None
    transition, target = r.state / TRANSITION_IMG, r.state / SLOT_FILES[role]
    with writable(r.state, r.targets.remount):
        current = slotstate.resolve(r.state, SLOT_FILES)
        new = dataclasses.replace(r.record, inode=os.stat(transition).st_ino)
        roles = {k: v for k, v in current.items() if v is not None}
        roles[role] = new
        old = current[role]
        slotstate.save(r.state, "COS_STATE", roles, [old] if old is not None else [])
        slotfile.checkpoint(r.state)
        replace(transition, target)
        slotfile.checkpoint(r.state)
        transition.unlink(missing_ok=True)  # the old image, now named transition.img
        slotfile.checkpoint(r.state)


def copy_active(r: _Run) -> None:
    """The passive copy, from the active file just placed: the same bytes, checked twice
    (the CRC of what was read from active against what the disk holds now, and the disk's
    sha256 against the new image's record)."""
    transition, active = r.state / TRANSITION_IMG, r.state / ACTIVE_IMG
    want = r.result.slot_sha256
    with writable(r.state, r.targets.remount):
        transition.unlink(missing_ok=True)
        need_space(r.state, "COS_STATE", active.stat().st_size, "the passive copy", SPACE_HINT)
        try:
            read = slotfile.copy_file(active, transition)
            slotfile.fsync_dir(transition.parent)
            slotfile.checkpoint(r.state)
            got = slotfile.hash_on_disk(transition)
        except BaseException:
            transition.unlink(missing_ok=True)
            raise
        if (want and got.sha256 != want) or got.crc32 != read.crc32:
            transition.unlink(missing_ok=True)
            raise KairosError(f"the passive copy does not hold the new image (sha256 "
                              f"{got.sha256[:12]}…, CRC {got.crc32:08x}; expected "
                              f"{want[:12] or '-'}…, CRC {read.crc32:08x})",
                              "the disk may be failing; run kairos reset again and check "
                              "the kernel log")


# ------------------------------------------------------------------------------- reset

def _stage(r: _Run, stage: str) -> None:
    if r.targets.stage_root is not None:
        run_stage_logged(r.targets.stage_root, stage)


@contextlib.contextmanager
def _lock(lock_dir: Path) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / "reset.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput("another reset is running on this device",
                           "wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def reset(opts: ResetOptions, targets: ResetTargets, steps: Steps | None = None) -> ResetResult:
    """Run the whole reset; see the module doc. Refusals (BadInput, exit 2) come before
    anything is written."""
    steps = steps or Steps.from_env()
    result = ResetResult(str(opts.source) if opts.source else f"recovery:{RECOVERY_IMG}",
                         targets.boot)
    r = _Run(opts, targets, steps, result)
    plan: tuple[tuple[str, Callable[[_Run], None]], ...] = (
        ("preflight", preflight),
        ("before-reset", lambda run_: _stage(run_, "before-reset")),
        ("image-written", write_image),
        ("pinned", pin),
        ("persistent-wiped", wipe_persistent),
        ("oem-wiped", wipe_oem),
        ("flags-cleared", clear_flags),
        ("active-replaced", lambda run_: place(run_, "active")),
        ("passive-written", copy_active),
        ("passive-replaced", lambda run_: place(run_, "passive")),
        ("after-reset", lambda run_: _stage(run_, "after-reset")),
        ("unpinned", unpin),
    )
    with _lock(targets.lock_dir):
        for name, action in plan:
            action(r)
            steps.mark(name)
    steps.mark("done")
    result.steps = dict(steps.times)
    return result


# ------------------------------------------------------------------------------- device

STATE_RUN_MOUNT = Path("/run/initramfs/cos-state")  # in a recovery boot: COS_RECOVERY
OEM_MOUNT = Path("/oem")
LOCK_DIR = Path("/run/kairos")


def find_device(*spec: str) -> Path | None:
    """The first device blkid names for `-L LABEL` or `-t TOKEN=VALUE` (no cache: there is
    no udev in every boot)."""
    res = run(["blkid", "-c", "/dev/null", "-o", "device", *spec], check=False)
    lines = res.stdout.split()
    return Path(lines[0]) if res.returncode == 0 and lines else None


def find_persistent() -> Path | None:
    """By label, else by its GPT name: a reset cut inside mkfs leaves no label."""
    return (find_device("-l", "-t", f"LABEL={PERSISTENT_LABEL}")
            or find_device("-l", "-t", f"PARTLABEL={PERSISTENT_PARTLABEL}"))


@contextlib.contextmanager
def device_targets(unattended: bool, root: Path = Path("/")) -> Iterator[ResetTargets]:
    """The running recovery system's partitions; COS_STATE is mounted read-write for the
    reset (a recovery boot does not mount it) and unmounted after."""
    from kairos.agent.rollback import booted_slot
    boot = booted_slot(root)
    check_boot(boot, unattended)  # before anything is mounted
    state_dev = find_device("-l", "-t", "LABEL=COS_STATE")
    if state_dev is None:
        raise BadInput("no partition labelled COS_STATE",
                       "reset needs an installed disk (kairos install)")
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    oem = OEM_MOUNT if os.path.ismount(OEM_MOUNT) else None
    with tempdir(prefix="reset-state-", parent=LOCK_DIR) as tmp, \
            mount(state_dev, tmp / "state", options=["rw"]) as state:
        yield ResetTargets(state, STATE_RUN_MOUNT, boot, persistent_device=find_persistent(),
                           oem_dir=oem, stage_root=Path("/"), lock_dir=LOCK_DIR)
