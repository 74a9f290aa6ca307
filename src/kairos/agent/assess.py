"""`kairos assess`: what the `kairos-boot-assessment` service does on every boot
(docs/lifecycle.md, "The agent's side").

1. Facts: the image id of the running root (its /boot/kairos-boot.cfg), of active.img and
   passive.img (theirs), and the flags GRUB and the upgrade keep in COS_STATE:/boot_assessment.
2. Settle: `kairos_failed` names the image in active.img and this boot runs the one in
   passive.img (GRUB gave up on the new image and fell back). The failure is noted
   (/run/cos/upgrade_failure), listed (the `failed` list of COS_STATE's state.yaml), then
   active and passive swap with the flip's RENAME_EXCHANGE, so the next boot starts from the
   good image without a refusal first. `kairos_failed` stays: it still names the failed
   image, now passive, so nothing boots it.
3. Health checks (health.py).
4. Verdict. Good: the flags are cleared when they name this image or one no slot holds
   (boot.assessment.mark_good), this slot's record says `assessment: good`, and the image
   leaves the failed list if it was on it (it was forced and has now proven itself). Failed:
   the record says `assessment: failed`; when this image is the tentative one the device
   reboots so GRUB counts the try, otherwise there is nothing to go back to.

Every write is one atomic file write (or one rename) followed by a checkpoint, and each step
first looks at the disk to see whether it is still needed: the service may be cut anywhere
and run again, and ends where an uncut run ends. COS_STATE is read-only at runtime; it is
remounted read-write only around a write (slots.writable). Slot writes take the upgrade's
lock, so an upgrade started during the checks never has its flip interleaved with a swap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kairos.agent import health, slotfile, slotstate
from kairos.agent.slots import ACTIVE_IMG, PASSIVE_IMG, lock, swap_slots, writable
from kairos.errors import KairosError
from kairos.run import run
from kairos.safefs import write_file_atomic

if TYPE_CHECKING:
    from kairos.boot.assessment import Flags

log = logging.getLogger("kairos.assess")

SLOT_FILES = {"active": ACTIVE_IMG, "passive": PASSIVE_IMG}
UPGRADE_FAILURE = "cos/upgrade_failure"  # below /run: Kairos's sentinel name
REPORT = "kairos/assessment.json"  # below /run: this boot's assessment, for `kairos state`
REBOOT_GUARD = ".kairos/assessment-reboot.json"  # below COS_PERSISTENT
GOOD, FAILED = "good", "failed"
# What a run does, in order (each write step only when the disk needs it); a test hook is
# called after each with its name.
STEPS = ("failure-noted", "failure-listed", "swapped", "checked", "flags-cleared",
         "recorded", "reported", "reboot")

Hook = Callable[[str], None]


@dataclass(frozen=True)
class Targets:
    """Where the assessment reads and writes; every path explicit so host tests run it on
    loop partitions. On a device: `device_targets()`."""

    state_dir: Path  # COS_STATE, mounted
    booted: str  # "active" or "passive": the slot this boot came from (early-init's word)
    root: Path = Path("/")  # the running root: its /boot/kairos-boot.cfg
    run_dir: Path = Path("/run")  # the upgrade_failure sentinel and this boot's report
    persistent_dir: Path | None = None  # COS_PERSISTENT: the upgrade's lock, reboot guard
    health_dirs: tuple[Path, ...] = health.HEALTH_DIRS
    remount: bool = False  # COS_STATE is mounted read-only: remount it rw around writes
    trusted_uid: int = 0  # owner health.d files must have (root; tests pass their own)


@dataclass(frozen=True)
class Facts:
    """What the decisions are made from; image ids are "" when unknown (an image without
    an image id, a missing slot file)."""

    booted: str
    booted_id: str
    active_id: str
    passive_id: str
    flags: Flags

    @property
    def slot_ids(self) -> set[str]:
        return {i for i in (self.active_id, self.passive_id) if i}


@dataclass
class AssessResult:
    verdict: str  # GOOD or FAILED
    booted: str
    image_id: str
    tentative: bool = False  # this boot was one of the new image's counted tries
    reboot: bool = False  # a reboot was asked for (a tentative image failed)
    settled: bool = False  # this run swapped a failed active image out
    upgrade_failure: bool = False  # the device runs the previous image after a failed upgrade
    steps: list[str] = field(default_factory=list)  # what this run did (STEPS), in order
    flags: dict[str, Any] = field(default_factory=dict)  # after this run
    health: health.HealthReport | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "health"}
        out["health"] = self.health.to_json() if self.health is not None else None
        return out


# -- decisions (pure) ------------------------------------------------------------------------


def failure_in_effect(f: Facts) -> bool:
    """`kairos_failed` names an image a slot still holds and this boot is another one: the
    device runs the previous image because an upgrade failed (until the next upgrade arms)."""
    failed = f.flags.failed
    return bool(failed) and failed != f.booted_id and failed in f.slot_ids


def settle_needed(f: Facts) -> bool:
    """GRUB gave up on the image in active.img and this boot runs the one in passive.img:
    swap them. After the swap active.img holds this image, so a second run does nothing."""
    failed = f.flags.failed
    return (bool(failed) and f.booted in SLOT_FILES and bool(f.booted_id)
            and f.active_id == failed and f.passive_id == f.booted_id
            and f.booted_id != failed)


def is_tentative(f: Facts) -> bool:
    return bool(f.booted_id) and f.flags.tentative == f.booted_id


def booted_role(f: Facts) -> str | None:
    """The slot whose file holds the running image: by image id (a swap or a cut may have
    renamed it since boot), the sentinel's word when the ids cannot tell."""
    if not f.booted_id:
        return f.booted if f.booted in SLOT_FILES else None
    roles = [r for r, i in (("active", f.active_id), ("passive", f.passive_id))
             if i == f.booted_id]
    if f.booted in roles:
        return f.booted
    return roles[0] if roles else None


def verdict_action(f: Facts, healthy: bool) -> str:
    """"good", "reboot" (a tentative image failed: GRUB must count the try) or "failed"."""
    if healthy:
        return GOOD
    return "reboot" if is_tentative(f) else FAILED


# -- facts -----------------------------------------------------------------------------------


def read_flags(state_dir: Path) -> Flags:
    from kairos.boot import assessment
    try:
        return assessment.read(state_dir)
    except (OSError, KairosError) as exc:
        # GRUB cannot load a broken block either: for it there are no flags.
        log.warning("cannot read the boot assessment flags on %s: %s", state_dir, exc)
        return assessment.Flags("", 0, "")


def _image_id(ids: Any) -> str:
    return str(getattr(ids, "image_id", "") or "") if ids is not None else ""


def booted_image_id(root: Path) -> str:
    from kairos.artifacts.bootid import read_boot_ids
    try:
        return _image_id(read_boot_ids(root))
    except (OSError, KairosError) as exc:
        log.warning("cannot read this image's /boot/kairos-boot.cfg: %s", exc)
        return ""


def gather(t: Targets) -> Facts:
    return Facts(t.booted, booted_image_id(t.root),
                 _image_id(slotfile.slot_ids(t.state_dir / ACTIVE_IMG)),
                 _image_id(slotfile.slot_ids(t.state_dir / PASSIVE_IMG)),
                 read_flags(t.state_dir))


def flags_json(flags: Flags) -> dict[str, Any]:
    return {"tentative": flags.tentative, "tries": flags.tries, "failed": flags.failed}


# -- steps -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _slot_lock(t: Targets) -> Iterator[None]:
    if t.persistent_dir is None:
        yield
        return
    with lock(t.persistent_dir, wait=True):
        yield


def _step(result: AssessResult, hook: Hook | None, name: str) -> None:
    assert name in STEPS, name
    result.steps.append(name)
    if hook is not None:
        hook(name)


def note_failure(t: Targets, f: Facts) -> bool:
    """/run/cos/upgrade_failure (tmpfs: this boot), naming the failed image; whether it was
    written (it is left alone when it says the same already)."""
    path = t.run_dir / UPGRADE_FAILURE
    text = f"{f.flags.failed}\n".encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, text, mode=0o644)
    return True


def _failed_entry(t: Targets, f: Facts) -> slotstate.FailedImage:
    role = "active" if f.active_id == f.flags.failed else "passive"
    try:
        rec = slotstate.resolve(t.state_dir, SLOT_FILES)[role]
    except (OSError, KairosError):
        rec = None
    return slotstate.FailedImage.of(rec, f.flags.failed, slotstate.now())


def settle(t: Targets, f: Facts, result: AssessResult, hook: Hook | None) -> Facts:
    """Note, list and swap out a failed image (see the module doc); the facts after it."""
    if not failure_in_effect(f):
        return f
    result.upgrade_failure = True
    log.warning("the image %s failed its boot assessment: this device runs the previous "
                "image", f.flags.failed)
    if note_failure(t, f):
        _step(result, hook, "failure-noted")
    listed = slotstate.load_failed(t.state_dir)
    if not slotstate.is_listed(listed, image_id=f.flags.failed):
        with writable(t.state_dir, t.remount):
            slotstate.add_failed(t.state_dir, _failed_entry(t, f))
            slotfile.checkpoint(t.state_dir)
        _step(result, hook, "failure-listed")
    if settle_needed(f):
        with writable(t.state_dir, t.remount):
            swap_slots(t.state_dir)
        result.settled = True
        log.warning("active.img and passive.img swapped: the next boot starts this image")
        _step(result, hook, "swapped")
        return gather(t)
    return f


def _record_needs(t: Targets, role: str | None, verdict: str, image_id: str) -> bool:
    if role is None:
        return False
    rec = slotstate.resolve(t.state_dir, SLOT_FILES).get(role)
    if rec is None:
        log.info("the %s slot file has no record in state.yaml: its verdict is not kept", role)
        return False
    return rec.assessment != verdict or bool(image_id and rec.image_id != image_id)


def record_verdict(t: Targets, f: Facts, verdict: str, result: AssessResult,
                   hook: Hook | None) -> None:
    """Good: the flags cleared (mark_good) and the image off the failed list; either way the
    booted slot's record says the verdict. Each only when the disk does not say it yet."""
    from kairos.boot import assessment
    role = booted_role(f)
    new_flags = assessment.mark_good(f.flags, f.booted_id, f.slot_ids) if verdict == GOOD \
        else f.flags
    if new_flags != f.flags:
        with writable(t.state_dir, t.remount):
            assessment.write(t.state_dir, new_flags)
            slotfile.checkpoint(t.state_dir)
        _step(result, hook, "flags-cleared")
    unlist = verdict == GOOD and slotstate.is_listed(slotstate.load_failed(t.state_dir),
                                                     image_id=f.booted_id)
    if unlist or _record_needs(t, role, verdict, f.booted_id):
        changes: dict[str, str] = {"assessment": verdict}
        if f.booted_id:
            changes["image_id"] = f.booted_id
        with writable(t.state_dir, t.remount):
            if role is not None:
                slotstate.update_record(t.state_dir, "COS_STATE", SLOT_FILES, role, **changes)
            if unlist:
                slotstate.drop_failed(t.state_dir, f.booted_id)
            slotfile.checkpoint(t.state_dir)
        _step(result, hook, "recorded")
    result.flags = flags_json(new_flags)


def write_report(t: Targets, result: AssessResult) -> None:
    """This boot's assessment for `kairos state` (0600: check output may hold secrets)."""
    path = t.run_dir / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, (json.dumps(result.to_json(), indent=2) + "\n").encode(),
                      mode=0o600)


def reboot_allowed(t: Targets, f: Facts) -> bool:
    """GRUB counts a tentative image's tries down before it boots it; seeing the same count
    again after a reboot we asked for means GRUB could not save it (no `save_env` on that
    disk): rebooting again would loop for ever, so it is not done."""
    if t.persistent_dir is None:
        return True
    path = t.persistent_dir / REBOOT_GUARD
    seen = {"image_id": f.booted_id, "tries": f.flags.tries}
    try:
        last = json.loads(path.read_text())
    except (OSError, ValueError):
        last = None
    if last == seen:
        log.error("GRUB did not count down the tries of %s (still %d after the reboot "
                  "for its failed checks): not rebooting again", f.booted_id, f.flags.tries)
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file_atomic(path, json.dumps(seen).encode(), mode=0o600)
    return True


def request_reboot() -> None:
    """The device reboots (systemd and sysvinit/OpenRC both have `reboot`)."""
    run(["reboot"])


# -- the whole run ---------------------------------------------------------------------------


def assess(t: Targets, cfg: health.AssessmentConfig, *, reboot: Callable[[], None] = request_reboot,
           hook: Hook | None = None) -> AssessResult:
    """Settle, check, record; see the module doc. `reboot` is what a failed tentative image
    calls (tests pass their own); `hook` is called after each step written (tests cut there)."""
    result = AssessResult(FAILED, t.booted, "")
    with _slot_lock(t):
        facts = settle(t, gather(t), result, hook)
    result.image_id = facts.booted_id
    report = health.assess_health(cfg, t.health_dirs, trusted_uid=t.trusted_uid)
    result.health = report
    _step(result, hook, "checked")
    with _slot_lock(t):
        # The disk again: an upgrade may have run during the checks.
        facts = gather(t)
        result.upgrade_failure = result.upgrade_failure or failure_in_effect(facts)
        result.tentative = is_tentative(facts)
        action = verdict_action(facts, report.ok)
        result.verdict = GOOD if action == GOOD else FAILED
        record_verdict(t, facts, result.verdict, result, hook)
        if action == "reboot":
            result.reboot = reboot_allowed(t, facts)
    write_report(t, result)
    _step(result, hook, "reported")
    if result.reboot:
        log.warning("this image (%s) is on trial and failed its checks: rebooting so GRUB "
                    "counts the try", facts.booted_id)
        _step(result, hook, "reboot")
        reboot()
    return result


# -- device ----------------------------------------------------------------------------------


def device_targets(root: Path = Path("/")) -> Targets | None:
    """The running device's; None when this boot is not from a slot (recovery, live media:
    there is no trial to settle and no slot to record)."""
    from kairos.agent.state import SLOTS, detect_boot
    from kairos.agent.upgrade import PERSISTENT_MOUNT, STATE_MOUNT
    booted = SLOTS.get(detect_boot(root))
    if booted not in SLOT_FILES:
        return None
    if not os.path.ismount(STATE_MOUNT):
        from kairos.errors import BadInput
        raise BadInput(f"COS_STATE is not mounted at {STATE_MOUNT}",
                       "run kairos assess on an installed, booted Kairos system")
    persistent = PERSISTENT_MOUNT if os.path.ismount(PERSISTENT_MOUNT) else None
    return Targets(STATE_MOUNT, booted, root=root, persistent_dir=persistent, remount=True)
