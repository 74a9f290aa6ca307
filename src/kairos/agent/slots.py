"""The slot files on COS_STATE and COS_RECOVERY, and every change of them GRUB must see whole.

Upgrade, boot assessment, rollback and reset all change which image `active.img`,
`passive.img` or `recovery.squashfs` holds, and all the same way, with the operations here:
the records in `state.yaml` first (they follow their files by inode, so they are right at
every instant), then one rename or RENAME_EXCHANGE, each step synced and its journal
checkpointed (agent/slotfile.py), so GRUB, which does not replay the journal, sees it. A power
cut anywhere leaves each name holding one whole image (docs/upgrade.md, docs/lifecycle.md).
`lock` keeps upgrade, assessment and rollback from interleaving; `writable` remounts a
read-only partition read-write around a write.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from kairos.agent import slotfile, slotstate
from kairos.agent.phases import Phases
from kairos.errors import BadInput, KairosError
from kairos.run import run

# Under the upgrade's name, as slotfile.py: these were the upgrade's and their lines keep it.
log = logging.getLogger("kairos.upgrade")

ACTIVE_IMG, PASSIVE_IMG, TRANSITION_IMG = "cOS/active.img", "cOS/passive.img", "cOS/transition.img"
RECOVERY_IMG, RECOVERY_TRANSITION = "cOS/recovery.squashfs", "cOS/transition.squashfs"


# ------------------------------------------------------------------------------- access

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


# ------------------------------------------------------------------------------- image ids

def image_id_of_tree(tree: Path) -> str:
    """The image id an unpacked tree names (after ensure_boot_cfg), "" when none."""
    from kairos.artifacts.bootid import read_boot_ids
    ids = read_boot_ids(tree)
    return (ids.image_id or "") if ids is not None else ""


def image_id_of_slot(path: Path) -> str:
    ids = slotfile.slot_ids(path)
    return (ids.image_id or "") if ids is not None else ""


# ------------------------------------------------------------------------------- changes

def _current(part: Path, files: dict[str, str]) -> dict[str, slotstate.ImageRecord | None]:
    try:
        return slotstate.resolve(part, files)
    except (OSError, KairosError) as exc:
        log.warning("cannot read the slot records on %s: %s", part, exc)
        return dict.fromkeys(files)


def replace(new: Path, target: Path) -> None:
    """Put `new` in `target`'s place. An existing target is swapped, not overwritten: until
    the swap is checkpointed GRUB may still boot the old file's kernel, and the initrd then
    finds that file, now named like `new`, by its boot id (see boot-path.md)."""
    if target.exists():
        slotfile.exchange(new, target)
    else:
        os.rename(new, target)
    slotfile.fsync_dir(target.parent)


def flip_system(state: Path, new: slotstate.ImageRecord, booted: str, phases: Phases,
                arm: Callable[[], None] | None = None) -> None:
    """Make transition.img active in one atomic step (see agent/upgrade.py's doc). `arm` runs
    just before the step that makes the new image active.img (boot assessment)."""
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
        replace(transition, active)
    else:
        replace(transition, passive)
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


def flip_recovery(recovery: Path, new: slotstate.ImageRecord, phases: Phases) -> None:
    """Swap transition.squashfs and recovery.squashfs, then drop the old one: until the swap
    is checkpointed, the old recovery image stays on disk for the initrd to find."""
    current = _current(recovery, {"recovery": RECOVERY_IMG})
    keep = [current["recovery"]] if current["recovery"] is not None else []
    slotstate.save(recovery, "COS_RECOVERY", {"recovery": new}, keep)
    slotfile.checkpoint(recovery)
    phases.mark("records-written")
    transition, target = recovery / RECOVERY_TRANSITION, recovery / RECOVERY_IMG
    replace(transition, target)
    phases.mark("flipped")
    slotfile.checkpoint(recovery)
    transition.unlink(missing_ok=True)
    slotfile.checkpoint(recovery)
    phases.mark("checkpointed")
