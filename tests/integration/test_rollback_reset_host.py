"""`kairos rollback` and `kairos reset` on the host (issue #9): real ext4 COS_STATE and
COS_RECOVERY on loop devices with squashfs slots (tests/upgrade_fixtures.py), an ext4
COS_OEM, and an ext4 COS_PERSISTENT image file that the reset formats again. debugfs reads
the filesystems as GRUB does, without replaying the journal: what GRUB must see is checked
there.

Rollback: the two slot files swap (same inodes, same bytes), the records follow, a tentative
flag goes and a failed one stays; each refusal (no passive, passive failed, booted from
recovery) is one line, exit 2, and leaves every byte as it was.

Reset: both slots hold exactly the recovery image's bytes (or a --source's), COS_PERSISTENT
is made anew (its files gone, its label kept, unmounted first when mounted), /oem is kept
(or emptied but for grubenv with --reset-oem), the assessment's flags are cleared, the
stages run, the next boot is the active one. Cut after any step: recovery is intact, each
slot is the old image or the new one, whole, the reset entry is pinned from `pinned` on, and
running it again ends exactly where an uncut run ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kairos.agent import reset as reset_mod
from kairos.agent import rollback as rollback_mod
from kairos.agent import slotstate
from kairos.agent.reset import STEPS, ResetOptions, ResetTargets, Steps
from kairos.boot import assessment, grubenv
from kairos.boot.assessment import Flags
from kairos.run import require, run
from tests.helpers import ROOT
from tests.upgrade_fixtures import (
    SLOT_FILES,
    Device,
    assert_refused,
    device,
    error_lines,
    ext4,
    kairos_cli,
    kairos_tree,
    result_json,
    sha256_file,
    squash,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts)")]

RECOVERY_SOURCE = "oci:registry.invalid/kairos/os:v0.8.0"
RECOVERY_DIGEST = "sha256:" + "8" * 64
FAILED_ID = "f" * 32


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    require("mksquashfs", "unsquashfs", "mkfs.ext4", "debugfs", "blkid", "losetup")


def image_id(path: Path) -> str:
    from kairos.agent.slotfile import slot_ids
    ids = slot_ids(path)
    return (ids.image_id or "") if ids is not None else ""


def grub_view(image: Path, directory: str = "/cOS") -> dict[str, int]:
    """name → inode of the files in `directory` as GRUB sees them (no journal replay)."""
    out = run(["debugfs", "-R", f"ls -p {directory}", str(image)]).stdout
    return {name: st[0] for name, st in slotstate.parse_debugfs_ls(out).items()}


def files_of(image: Path) -> list[str]:
    """Names at the root of an unmounted ext4 image (debugfs)."""
    out = run(["debugfs", "-R", "ls -p /", str(image)]).stdout
    names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]
    return sorted(n for n in names if n not in (".", ".."))


def fs_label(image: Path) -> str:
    return run(["blkid", "-c", "/dev/null", "-p", "-o", "value", "-s", "LABEL",
                str(image)]).stdout.strip()


def fs_uuid(image: Path) -> str:
    return run(["blkid", "-c", "/dev/null", "-p", "-o", "value", "-s", "UUID",
                str(image)]).stdout.strip()


# ------------------------------------------------------------------------------ rollback

@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Device]:
    with device(tmp_path / "dev") as d:
        yield d


def rollback_cli(dev: Device, *args: str, booted: str = "active",
                 oem: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["rollback", "--state-dir", str(dev.state), "--lock-dir", str(dev.persistent),
            "--booted", booted]
    if oem is not None:
        argv += ["--oem-dir", str(oem)]
    return kairos_cli(*argv, *args)


def test_rollback_swaps_files_records_and_flags(dev: Device, tmp_path: Path) -> None:
    active_id, passive_id = image_id(dev.active), image_id(dev.passive)
    assert active_id and passive_id and active_id != passive_id
    assessment.write(dev.state, Flags(active_id, 1, FAILED_ID))
    before = dev.snapshot()
    doc = result_json(rollback_cli(dev, "--json"))
    after = dev.snapshot()
    for a, b in (("active", "passive"), ("passive", "active")):
        assert after.files[f"state:{SLOT_FILES[a]}"] == before.files[f"state:{SLOT_FILES[b]}"]
        assert after.inodes[f"state:{SLOT_FILES[a]}"] == before.inodes[f"state:{SLOT_FILES[b]}"]
    records = dev.records()
    assert (records["active"].version, records["passive"].version) == ("v0.9.0", "v1.0.0")
    flags = assessment.read(dev.state)
    assert (flags.tentative, flags.tries, flags.failed) == ("", 0, FAILED_ID)
    assert doc["tentative_cleared"] and doc["reboot_needed"]
    assert (doc["active"]["version"], doc["passive"]["version"]) == ("v0.9.0", "v1.0.0")
    # GRUB (no journal replay) sees the swap too.
    view = grub_view(tmp_path / "dev/state.ext4")
    assert view["active.img"] == after.inodes["state:cOS/active.img"]
    assert view["passive.img"] == after.inodes["state:cOS/passive.img"]


def test_rollback_booted_passive_and_human_output(dev: Device) -> None:
    proc = rollback_cli(dev, booted="passive")
    assert proc.returncode == 0, proc.stderr
    assert "active is now v0.9.0, passive v1.0.0" in proc.stdout
    assert "reboot" not in proc.stdout


def test_rollback_refusals_change_nothing(dev: Device) -> None:
    before = dev.snapshot()
    assert_refused(dev, before, rollback_cli(dev, booted="recovery"), "recovery image")
    assessment.write(dev.state, Flags("", 0, image_id(dev.passive)))
    before = dev.snapshot()
    assert_refused(dev, before, rollback_cli(dev), "failed its boot assessment", "v0.9.0")
    assessment.write(dev.state, Flags("", 0, ""))
    slotstate.add_failed(dev.state, slotstate.FailedImage(image_id(dev.passive)))
    before = dev.snapshot()
    assert_refused(dev, before, rollback_cli(dev), "failed its boot assessment")


@pytest.mark.parametrize("step", rollback_mod.STEPS)
def test_rollback_cut_after_each_step_leaves_one_whole_order(dev: Device, tmp_path: Path,
                                                             step: str) -> None:
    """A cut after each step: GRUB sees the old order or the new one, each file whole with
    its record; before `swapped` running rollback again finishes it."""
    active_id, passive_id = image_id(dev.active), image_id(dev.passive)
    assessment.write(dev.state, Flags(active_id, 1, ""))
    before = dev.snapshot()

    def hook(name: str) -> None:
        if name == step:
            raise RollbackCut(name)
    targets = rollback_mod.RollbackTargets(dev.state, "active", lock_dir=dev.persistent)
    with pytest.raises(RollbackCut):
        rollback_mod.rollback(targets, rollback_mod.Steps(hook=hook))
    swapped = rollback_mod.STEPS.index(step) >= rollback_mod.STEPS.index("swapped")
    view = grub_view(tmp_path / "dev/state.ext4")
    now = dev.snapshot()
    first, second = ("passive", "active") if swapped else ("active", "passive")
    for role, was in (("active", first), ("passive", second)):
        assert now.files[f"state:{SLOT_FILES[role]}"] == before.files[f"state:{SLOT_FILES[was]}"]
        assert view[f"{role}.img"] == now.inodes[f"state:{SLOT_FILES[role]}"], (step, role)
    versions = {"active": "v1.0.0", "passive": "v0.9.0"}
    records = dev.records()  # matched by inode: right on both sides of the swap
    assert records["active"].version == versions[first]
    assert records["passive"].version == versions[second]
    if not swapped:
        result_json(rollback_cli(dev, "--json"))
    assert image_id(dev.active) == passive_id
    cleared = rollback_mod.STEPS.index(step) >= rollback_mod.STEPS.index("flags-cleared")
    if cleared or not swapped:
        assert not assessment.read(dev.state).tentative


class RollbackCut(BaseException):
    """A power cut right after a rollback step."""


def test_rollback_without_passive_is_refused(tmp_path: Path) -> None:
    with device(tmp_path / "dev") as d:
        d.passive.unlink()
        before = d.snapshot()
        assert_refused(d, before, rollback_cli(d), "no passive image")


# ------------------------------------------------------------------------------ reset

@dataclass
class ResetDevice:
    dev: Device
    work: Path
    oem: Path
    persistent: Path  # an ext4 image file, not mounted
    root: Path  # config root: the stages
    lock: Path

    @property
    def recovery(self) -> Path:
        assert self.dev.recovery is not None
        return self.dev.recovery

    @property
    def recovery_image(self) -> Path:
        return self.recovery / "cOS/recovery.squashfs"

    def cli(self, *args: str, booted: str = "recovery") -> subprocess.CompletedProcess[str]:
        return kairos_cli("reset", *self.argv(booted), *args)

    def argv(self, booted: str) -> list[str]:
        return ["--state-dir", str(self.dev.state), "--recovery-dir", str(self.recovery),
                "--persistent-device", str(self.persistent), "--oem-dir", str(self.oem),
                "--config-root", str(self.root), "--lock-dir", str(self.lock),
                "--booted", booted]

    def targets(self, boot: str = "recovery") -> ResetTargets:
        return ResetTargets(self.dev.state, self.recovery, boot,
                            persistent_device=self.persistent, oem_dir=self.oem,
                            stage_root=self.root, lock_dir=self.lock)

    def snapshot(self) -> dict[str, Any]:
        """Every byte a reset may touch: slots, records, flags, recovery, OEM, persistent."""
        oem = {str(p.relative_to(self.oem)): sha256_file(p)
               for p in sorted(self.oem.rglob("*")) if p.is_file()}
        snap = self.dev.snapshot()
        return {"files": snap.files, "inodes": snap.inodes, "oem": oem,
                "persistent": sha256_file(self.persistent)}


STAGES = """\
name: reset stages (test)
stages:
  before-reset:
    - files:
        - path: /run/before-reset
          content: before
  after-reset:
    - files:
        - path: /run/after-reset
          content: after
"""


@pytest.fixture
def rdev(tmp_path: Path) -> Iterator[ResetDevice]:
    work = tmp_path / "dev"
    with device(work, recovery=True) as d, \
            ext4(tmp_path / "oem.ext4", tmp_path / "oem", 16, "COS_OEM") as oem:
        assert d.recovery is not None
        rec = d.recovery / "cOS/recovery.squashfs"
        # What install (or a recovery upgrade) records for the recovery image.
        slotstate.save(d.recovery, "COS_RECOVERY", {"recovery": slotstate.record_file(
            rec, source=RECOVERY_SOURCE, digest=RECOVERY_DIGEST, sha256=sha256_file(rec),
            version="v0.8.0", arch="amd64", date="2026-11-01T00:00:00Z")})
        # The state the device is in: a trial, a failure, a user choice, user files.
        assessment.write(d.state, Flags(image_id(d.active), 1, FAILED_ID))
        slotstate.add_failed(d.state, slotstate.FailedImage(FAILED_ID, version="v1.1.0"))
        grubenv.write(oem / "grubenv", {"saved_entry": "fallback", "extra_cmdline": "quiet"})
        (oem / "90_custom.yaml").write_text("#cloud-config\nhostname: test\n")
        (oem / "test").write_text("oem file\n")
        staging = tmp_path / "persistent-files"
        (staging / "home/kairos").mkdir(parents=True)
        (staging / "test").write_text("persistent file\n")
        (staging / "home/kairos/notes").write_text("notes\n")
        persistent = tmp_path / "persistent.ext4"
        with open(persistent, "wb") as fh:
            fh.truncate(32 << 20)
        run(["mkfs.ext4", "-q", "-F", "-L", "COS_PERSISTENT", "-d", str(staging),
             str(persistent)])
        root = tmp_path / "root"
        (root / "system/oem").mkdir(parents=True)
        (root / "system/oem/50_reset.yaml").write_text(STAGES)
        run(["sync"])
        yield ResetDevice(d, work, oem, persistent, root, tmp_path / "run")


def check_reset(r: ResetDevice, before: dict[str, Any], *, oem_wiped: bool = False,
                persistent_wiped: bool = True, sha: str | None = None,
                version: str = "v0.8.0") -> None:
    after = r.snapshot()
    want = sha or sha256_file(r.recovery_image)
    # Both slots hold the new image, byte for byte, as two files; nothing else in cOS.
    assert after["files"]["state:cOS/active.img"] == want
    assert after["files"]["state:cOS/passive.img"] == want
    assert after["inodes"]["state:cOS/active.img"] != after["inodes"]["state:cOS/passive.img"]
    assert sorted(p.name for p in (r.dev.state / "cOS").iterdir()) == ["active.img",
                                                                      "passive.img"]
    # COS_RECOVERY is only read.
    for key, value in before["files"].items():
        if key.startswith("recovery:"):
            assert after["files"][key] == value and after["inodes"][key] == before["inodes"][key]
    # GRUB sees both new files.
    view = grub_view(r.work / "state.ext4")
    assert view["active.img"] == after["inodes"]["state:cOS/active.img"]
    assert view["passive.img"] == after["inodes"]["state:cOS/passive.img"]
    records = r.dev.records()
    for role in ("active", "passive"):
        rec = records[role]
        assert rec is not None and (rec.version, rec.sha256) == (version, want), records
        assert rec.image_id == image_id(r.dev.active)
    if sha is None:  # from the recovery image: its own record's source and digest
        assert (records["active"].source, records["active"].digest) == \
            (RECOVERY_SOURCE, RECOVERY_DIGEST)
    # Every flag cleared; the failed list is history and stays.
    flags = assessment.read(r.dev.state)
    assert (flags.tentative, flags.tries, flags.failed) == ("", 0, "")
    assert [f.image_id for f in slotstate.load_failed(r.dev.state)] == [FAILED_ID]
    # COS_PERSISTENT: made anew (label kept) or untouched.
    if persistent_wiped:
        assert files_of(r.persistent) == ["lost+found"]
        assert fs_label(r.persistent) == "COS_PERSISTENT"
    else:
        assert after["persistent"] == before["persistent"]
    # OEM: kept, or only grubenv left; either way no entry selection is left.
    env = grubenv.read(r.oem / "grubenv")
    if oem_wiped:
        assert sorted(p.name for p in r.oem.iterdir()) == ["grubenv", "lost+found"]
        assert env == {}
    else:
        assert {k: v for k, v in after["oem"].items() if k != "grubenv"} == \
            {k: v for k, v in before["oem"].items() if k != "grubenv"}
        assert env == {"extra_cmdline": "quiet"}
    assert (r.root / "run/before-reset").read_text() == "before"
    assert (r.root / "run/after-reset").read_text() == "after"
    assert not (r.dev.state / "cOS/transition.img").exists()


def test_reset_from_recovery(rdev: ResetDevice) -> None:
    before = rdev.snapshot()
    uuid = fs_uuid(rdev.persistent)
    proc = rdev.cli("--json")
    doc = result_json(proc)
    check_reset(rdev, before)
    assert list(doc["steps"]) == list(STEPS)
    assert [line.removeprefix(reset_mod.MARK).strip() for line in proc.stderr.splitlines()
            if line.startswith(reset_mod.MARK)] == list(STEPS)
    assert doc["persistent_wiped"] and doc["flags_cleared"] and not doc["oem_wiped"]
    assert (doc["version"], doc["source"]) == ("v0.8.0", RECOVERY_SOURCE)
    assert fs_uuid(rdev.persistent) != uuid  # as install: a new filesystem, a new UUID


def test_reset_oem_and_keep_persistent_unattended(rdev: ResetDevice) -> None:
    before = rdev.snapshot()
    proc = rdev.cli("--reset-oem", "--no-reset-persistent", "--unattended", booted="autoreset")
    assert proc.returncode == 0, proc.stderr
    assert "Reset completed: active and passive are now v0.8.0" in proc.stdout
    check_reset(rdev, before, oem_wiped=True, persistent_wiped=False)


def test_reset_unmounts_a_mounted_persistent_first(rdev: ResetDevice, tmp_path: Path) -> None:
    before = rdev.snapshot()
    mnt = tmp_path / "usr-local"
    mnt.mkdir()
    run(["mount", "-o", "loop", str(rdev.persistent), str(mnt)])
    try:
        result_json(rdev.cli("--json"))
        assert not os.path.ismount(mnt)
    finally:
        if os.path.ismount(mnt):
            run(["umount", str(mnt)])
    before["persistent"] = sha256_file(rdev.persistent)  # the mount itself wrote to it
    check_reset(rdev, before)


def test_reset_from_a_file_and_a_dir_source(rdev: ResetDevice, tmp_path: Path) -> None:
    tree = kairos_tree(tmp_path / "v3", "v3.0.0")
    slot = squash(tree, tmp_path / "v3.squashfs")
    before = rdev.snapshot()
    doc = result_json(rdev.cli("--source", f"file:{slot}", "--json"))
    check_reset(rdev, before, sha=sha256_file(slot), version="v3.0.0")
    assert doc["source"] == f"file:{slot}"
    # A tree (through the upgrade's fetchers, scratch on COS_PERSISTENT) gives the same bytes.
    before = rdev.snapshot()
    (rdev.root / "run/before-reset").unlink()
    doc = result_json(rdev.cli("--source", f"dir:{tree}", "--json"))
    check_reset(rdev, before, sha=sha256_file(slot), version="v3.0.0")
    assert doc["source"] == f"dir:{tree}"


@pytest.mark.parametrize("booted, args, words", [
    ("active", (), "not the recovery image"),
    ("passive", ("--unattended",), "not the recovery image"),
    ("autoreset", (), "automatic reset boot"),
])
def test_reset_refused_outside_recovery(rdev: ResetDevice, booted: str, args: tuple[str, ...],
                                        words: str) -> None:
    before = rdev.snapshot()
    proc = rdev.cli(*args, booted=booted)
    assert proc.returncode == 2 and words in "\n".join(error_lines(proc)), proc.stderr
    assert len(error_lines(proc)) == 2
    assert rdev.snapshot() == before
    assert not (rdev.root / "run/before-reset").exists()


def test_reset_refused_when_the_recovery_image_fails_its_checks(
        rdev: ResetDevice, tmp_path: Path) -> None:
    tree = kairos_tree(tmp_path / "nokernel", "v0.8.0")
    (tree / "boot/vmlinuz").unlink()
    squash(tree, tmp_path / "nokernel.squashfs")
    run(["cp", str(tmp_path / "nokernel.squashfs"), str(rdev.recovery_image)])
    run(["sync"])
    before = rdev.snapshot()
    proc = rdev.cli()
    assert proc.returncode == 2, proc.stderr
    assert "recovery image fails its checks" in error_lines(proc)[0]
    assert "/boot/vmlinuz" in error_lines(proc)[0]
    assert rdev.snapshot() == before


# ------------------------------------------------------------------------------ cuts

class Cut(BaseException):
    """A power cut right after a step (BaseException: nothing catches it on the way out)."""


def cut_after(step: str) -> Steps:
    def hook(name: str) -> None:
        if name == step:
            raise Cut(name)
    return Steps(hook=hook)


def check_cut_state(r: ResetDevice, before: dict[str, Any], step: str) -> None:
    """What a cut right after `step` leaves: recovery intact, each slot old or new (whole),
    the reset entry pinned from `pinned` until `unpinned`."""
    now = r.snapshot()
    new = sha256_file(r.recovery_image)
    for role in ("active", "passive"):
        key = f"state:{SLOT_FILES[role]}"
        assert now["files"][key] in (before["files"][key], new), (step, role)
    for key, value in before["files"].items():
        if key.startswith("recovery:"):
            assert now["files"][key] == value
    done = STEPS.index(step)
    env = grubenv.read(r.oem / "grubenv")
    pinned = STEPS.index("pinned") <= done < STEPS.index("unpinned")
    assert (env.get("saved_entry") == "recovery") == pinned, (step, env)
    if pinned:
        assert "next_entry" not in env
    if done < STEPS.index("pinned"):
        # Nothing a boot reads has changed: slots, records, flags, persistent, OEM.
        same = {k: v for k, v in now["files"].items() if k != "state:cOS/transition.img"}
        assert same == before["files"] and now["persistent"] == before["persistent"]
        assert now["oem"] == before["oem"]


@pytest.mark.parametrize("step", STEPS[:-1])
def test_reset_cut_after_each_step_then_rerun_converges(rdev: ResetDevice, step: str) -> None:
    before = rdev.snapshot()
    opts = ResetOptions(arch="amd64")
    with pytest.raises(Cut):
        reset_mod.reset(opts, rdev.targets(), cut_after(step))
    check_cut_state(rdev, before, step)
    # The next boot is the pinned recovery entry (or, before the pin, the old system, from
    # which the person selects recovery again): the reset runs again from the start.
    result = reset_mod.reset(opts, rdev.targets(), Steps())
    assert result.version == "v0.8.0"
    check_reset(rdev, before)


def test_reset_killed_mid_way_leaves_a_stale_transition_then_converges(
        rdev: ResetDevice) -> None:
    """A real process killed (SIGKILL) while paused after the active slot was replaced, plus a
    half-written transition.img as a cut inside the passive copy leaves it."""
    before = rdev.snapshot()
    argv = [sys.executable, "-m", "kairos", "reset", *rdev.argv("recovery")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, reset_mod.PAUSE_ENV: "active-replaced"}, cwd=ROOT)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "paused at active-replaced" in line:
                break
        else:
            raise AssertionError(f"no pause (exit {proc.wait()})")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    check_cut_state(rdev, before, "active-replaced")
    stale = rdev.dev.state / "cOS/transition.img"
    stale.write_bytes(os.urandom(12345))
    result_json(rdev.cli("--json"))
    check_reset(rdev, before)
