"""`kairos rollback`: make the passive image the active one, for good.

Kairos's own answer is `bootentry --select fallback`, which boots passive once and then goes
back (Kairos #4676). Here the two slot files swap roles with the upgrade's flip, so the
choice lasts:

1. checks, before anything is written: the device booted a slot on COS_STATE (not recovery,
   not live media), both slot files exist, passive.img is a slot image GRUB can boot, and its
   image id is not the one the boot assessment marked failed (`kairos_failed`, or the
   `failed` list of state.yaml). Each refusal is one line with a hint, exit 2.
2. the records of state.yaml are rewritten with the roles swapped, synced, checkpointed. A
   record is matched to its file by inode, so a cut before the swap leaves them right too.
3. one renameat2(RENAME_EXCHANGE) of passive.img and active.img, the directory fsynced and
   the journal checkpointed (GRUB does not replay it): at every instant each name holds one
   whole image; the initrd covers the window before the checkpoint (docs/upgrade.md).
4. a `kairos_tentative` flag is cleared: the image that is now active was booted before, and
   a stale flag must never force a fallback later (Kairos #4303). `kairos_failed` stays: it
   names an image GRUB must still refuse.
5. a lasting or one-shot selection of `fallback` in /oem/grubenv would now boot the image the
   user just left: it goes back to `cos`.

Booted from passive, the same swap makes the running image active (nothing to reboot for).
Rollback and upgrade take the same lock, so they never interleave.

Each step prints `kairos-rollback: step NAME` (agent/phases.py): `checked`,
`records-written`, `swapped`, `flags-cleared`, `done`. KAIROS_ROLLBACK_PAUSE names steps to
stop at for good, and KAIROS_ROLLBACK_STEP=1 makes them wait for SIGUSR1, so a test can cut
the power at each. A cut up to `records-written` boots the old active image (run rollback
again); from `swapped` on, the new one (done: running it again would swap back).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kairos.agent import slotfile, slotstate
from kairos.agent.fetch import check_slot_file
from kairos.agent.phases import Markers
from kairos.agent.slots import image_id_of_slot, lock, swap_slots, writable
from kairos.agent.upgradesource import device_arch
from kairos.errors import BadInput, KairosError

if TYPE_CHECKING:
    from kairos.boot.assessment import Flags

log = logging.getLogger("kairos.rollback")

ACTIVE_IMG, PASSIVE_IMG = "cOS/active.img", "cOS/passive.img"
STEPS = ("checked", "records-written", "swapped", "flags-cleared", "done")
SLOT_FILES = {"active": ACTIVE_IMG, "passive": PASSIVE_IMG}
STATE_MOUNT = Path("/run/initramfs/cos-state")
PERSISTENT_MOUNT = Path("/usr/local")
OEM_MOUNT = Path("/oem")


@dataclass(frozen=True)
class RollbackTargets:
    """What a rollback touches, as paths (the device's, or a test's)."""

    state_dir: Path  # COS_STATE, mounted
    booted: str  # "active", "passive", or what else booted ("recovery", "livecd", "unknown")
    oem_dir: Path | None = None  # COS_OEM: grubenv
    lock_dir: Path | None = None  # COS_PERSISTENT: the upgrade's lock lives there
    remount: bool = False  # remount COS_STATE rw around the swap, ro after
    arch: str = field(default_factory=device_arch)


@dataclass
class SlotImage:
    """What one slot file holds, for the report."""

    file: str
    version: str = ""
    source: str = ""
    sha256: str = ""
    image_id: str = ""


@dataclass
class RollbackResult:
    booted: str
    active: SlotImage  # after the swap
    passive: SlotImage
    tentative_cleared: bool = False
    boot_entry_reset: bool = False
    reboot_needed: bool = False  # booted active: the running image is passive now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RollbackPlan:
    """Everything checked before the swap."""

    records: dict[str, slotstate.ImageRecord | None]
    ids: dict[str, str]  # role → image id ("" when the image names none)
    flags: Flags | None  # None: no assessment module/file to update


class Steps(Markers):
    """The rollback's step markers (see the module doc)."""

    names = STEPS
    pause_env = "KAIROS_ROLLBACK_PAUSE"
    step_env = "KAIROS_ROLLBACK_STEP"
    marker = "kairos-rollback: step"
    who = "kairos-rollback"
    kind = "step"


# ------------------------------------------------------------------------------- checks

def check_booted(booted: str) -> None:
    """Rollback swaps the two images on COS_STATE: only from one of them."""
    if booted in ("active", "passive"):
        return
    if booted in ("recovery", "autoreset"):
        raise BadInput("this system booted the recovery image: rollback swaps the active and "
                       "passive images and runs from one of them",
                       "boot the active or passive system (kairos bootentry --select cos), "
                       "or rebuild both from recovery with kairos reset")
    if booted == "livecd":
        raise BadInput("this system runs from live media", "install it first (kairos install)")
    raise BadInput(f"cannot tell which image this system booted ({booted})",
                   "run kairos rollback on an installed system booted from active or passive")


def read_flags(state_dir: Path) -> Flags | None:
    from kairos.boot import assessment
    try:
        return assessment.read(state_dir)
    except (OSError, KairosError) as exc:
        # An unreadable block is GRUB's problem too; the swap itself does not need it.
        log.warning("cannot read the boot assessment flags on %s: %s", state_dir, exc)
        return None


def failed_ids(state_dir: Path, flags: Flags | None) -> set[str]:
    """Image ids the assessment gave up on: GRUB's `kairos_failed` and the `failed` list the
    agent keeps in state.yaml."""
    found = {f.image_id for f in slotstate.load_failed(state_dir) if f.image_id}
    if flags is not None and flags.failed:
        found.add(flags.failed)
    return found


def _is_failed(flags: Flags | None, failed: set[str], ident: str) -> bool:
    if not ident:
        return False
    if flags is not None:
        from kairos.boot import assessment
        if assessment.is_failed(flags, ident):
            return True
    return ident in failed


def _check_bootable(path: Path, arch: str) -> None:
    try:
        check_slot_file(path, arch)
    except BadInput as exc:
        raise BadInput(f"passive.img is not an image GRUB can boot: {exc.message}",
                       "keep the active image; replace passive with kairos upgrade") from None


def _records(state_dir: Path) -> dict[str, slotstate.ImageRecord | None]:
    try:
        return slotstate.resolve(state_dir, SLOT_FILES)
    except (OSError, KairosError) as exc:
        log.warning("cannot read the slot records on %s: %s", state_dir, exc)
        return dict.fromkeys(SLOT_FILES)


def _short(ident: str) -> str:
    return ident[:12] if ident else "?"


def plan_rollback(targets: RollbackTargets) -> RollbackPlan:
    """Every check, before anything is written; BadInput (exit 2) for each refusal."""
    check_booted(targets.booted)
    state = targets.state_dir
    active, passive = state / ACTIVE_IMG, state / PASSIVE_IMG
    if slotstate.file_stat(passive) is None:
        raise BadInput(f"there is no passive image ({passive}) to roll back to",
                       "a passive image appears with the first upgrade (kairos upgrade)")
    if slotstate.file_stat(active) is None:
        raise BadInput(f"there is no active image ({active}) to swap with passive",
                       "rebuild both slots from recovery with kairos reset")
    _check_bootable(passive, targets.arch)
    ids = {"active": image_id_of_slot(active), "passive": image_id_of_slot(passive)}
    flags = read_flags(state)
    records = _records(state)
    rec = records.get("passive")
    if not ids["passive"] and rec is not None:
        ids["passive"] = rec.image_id  # an image without the cfg, named by its record
    if _is_failed(flags, failed_ids(state, flags), ids["passive"]):
        version = f" ({rec.version})" if rec is not None and rec.version else ""
        raise BadInput(f"passive.img holds image {_short(ids['passive'])}{version}, which "
                       "failed its boot assessment: GRUB would refuse to boot it",
                       "stay on the active image; upgrade to a fixed image (kairos upgrade)")
    return RollbackPlan(records, ids, flags)


# ------------------------------------------------------------------------------- swap

@contextlib.contextmanager
def _locked(lock_dir: Path | None) -> Iterator[None]:
    """The upgrade's lock: a rollback must not swap the slots under a running upgrade or
    the boot assessment's settle."""
    if lock_dir is None:
        yield
        return
    with lock(lock_dir):
        yield


def clear_tentative(state_dir: Path, flags: Flags | None) -> bool:
    """Drop a tentative flag (and its tries); `failed` stays. True when one was cleared."""
    if flags is None or not flags.tentative:
        return False
    from kairos.boot import assessment
    assessment.write(state_dir, dataclasses.replace(flags, tentative="", tries=0))
    slotfile.checkpoint(state_dir)
    return True


def reset_fallback_selection(oem_dir: Path | None) -> bool:
    """`fallback` chosen in grubenv (saved, or for the next boot) named passive.img: after the
    swap that is the image the user left, so the choice goes back to `cos`."""
    if oem_dir is None:
        return False
    from kairos.boot import grubenv
    env_file = oem_dir / "grubenv"
    if not env_file.exists():
        return False
    env = grubenv.read(env_file)
    changed = False
    if env.get("saved_entry") == "fallback":
        env["saved_entry"] = "cos"
        changed = True
    if env.get("next_entry") == "fallback":
        del env["next_entry"]
        changed = True
    if changed:
        grubenv.write(env_file, env)
        slotfile.checkpoint(oem_dir)
    return changed


def _slot_image(role: str, rec: slotstate.ImageRecord | None, ident: str) -> SlotImage:
    img = SlotImage(file=f"/{SLOT_FILES[role]}", image_id=ident)
    if rec is not None:
        img.version, img.source, img.sha256 = rec.version, rec.source, rec.sha256
    return img


def rollback(targets: RollbackTargets, steps: Steps | None = None) -> RollbackResult:
    """Swap active and passive for good; see the module doc."""
    steps = steps or Steps()
    plan = plan_rollback(targets)
    with _locked(targets.lock_dir), writable(targets.state_dir, targets.remount):
        # Re-read under the lock: an upgrade that just finished changed the files.
        plan = plan_rollback(targets)
        steps.mark("checked")
        # The flip's own swap: records first (each follows its file by inode), then one
        # RENAME_EXCHANGE, each step checkpointed so GRUB sees it.
        swap_slots(targets.state_dir, steps.mark)
        cleared = clear_tentative(targets.state_dir, plan.flags)
        steps.mark("flags-cleared")
    entry_reset = reset_fallback_selection(targets.oem_dir)
    steps.mark("done")
    log.info("rollback: active is now %s, passive %s",
             _short(plan.ids["passive"]), _short(plan.ids["active"]))
    return RollbackResult(
        booted=targets.booted,
        active=_slot_image("active", plan.records.get("passive"), plan.ids["passive"]),
        passive=_slot_image("passive", plan.records.get("active"), plan.ids["active"]),
        tentative_cleared=cleared, boot_entry_reset=entry_reset,
        reboot_needed=targets.booted == "active")


# ------------------------------------------------------------------------------- device

def booted_slot(root: Path = Path("/")) -> str:
    """active, passive, recovery, autoreset, livecd or unknown: what this system booted."""
    from kairos.agent import state
    boot = state.detect_boot(root)
    names = {state.ACTIVE: "active", state.PASSIVE: "passive", state.RECOVERY: "recovery",
             state.AUTORESET: "autoreset", state.LIVECD: "livecd"}
    return names.get(boot, "unknown")


def device_targets(root: Path = Path("/")) -> RollbackTargets:
    """The running device's partitions (checked in the order a person can act on)."""
    booted = booted_slot(root)
    check_booted(booted)
    if not os.path.ismount(STATE_MOUNT):
        raise BadInput(f"COS_STATE is not mounted at {STATE_MOUNT}",
                       "run kairos rollback on an installed, booted Kairos system")
    lock_dir = PERSISTENT_MOUNT if os.path.ismount(PERSISTENT_MOUNT) else None
    oem = OEM_MOUNT if os.path.ismount(OEM_MOUNT) else None
    return RollbackTargets(STATE_MOUNT, booted, oem_dir=oem, lock_dir=lock_dir, remount=True)
