"""Boot assessment, agent side, on the host (issue #9): real ext4 COS_STATE on a loop device
with squashfs slots (tests/upgrade_fixtures.py), GRUB's variables read and written with
GRUB's own `grub-editenv`, the checkpoints checked with debugfs (which, like GRUB, reads the
filesystem without replaying its journal).

- `kairos upgrade` arms the new image (tentative, tries, a stale failed flag cleared) just
  before it becomes active.img, booted from active or from passive; a recovery upgrade does
  not arm.
- After a fallback (GRUB counted the tries down and gave up, written here as GRUB would),
  `kairos assess` booted from passive records the failure and swaps the slots; run again it
  changes nothing; cut after any step (or inside the swap) and run again, it ends where an
  uncut run ends.
- An image that failed is refused by the next upgrade (digest or image id), exit 2, one line
  and a hint naming --force; --force applies it and arms it again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kairos.agent import assess, health, slotfile, slotstate
from kairos.agent.upgrade import upgrade
from kairos.agent.upgradesource import Targets as UpgradeTargets
from kairos.agent.upgradesource import UpgradeOptions, parse_source
from kairos.run import require, run
from tests.upgrade_fixtures import (
    Device,
    assert_refused,
    device,
    grub_env,
    grub_set,
    kairos_cli,
    kairos_tree,
    layer,
    oci_image,
    result_json,
    squash,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts)")]


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    require("mksquashfs", "unsquashfs", "mkfs.ext4", "grub-editenv", "debugfs")


@dataclass(frozen=True)
class NewImage:
    tree: Path  # what the device runs when it boots it (its /boot/kairos-boot.cfg)
    slot: Path  # the squashfs slot file (file: source)
    archive: Path  # an OCI archive of the same tree (ocifile: source)
    digest: str
    image_id: str


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> NewImage:
    work = tmp_path_factory.mktemp("v2")
    tree = kairos_tree(work / "tree", "v2.0.0")
    slot = squash(tree, work / "v2.squashfs")
    ref = oci_image([layer(tree, work / "blobs/v2.tar.gz")], work / "layout", "v2",
                    archive=work / "v2.oci.tar", version="v2.0.0")
    ids = slotfile.slot_ids(slot)
    assert ids is not None and ids.image_id
    return NewImage(tree, slot, work / "v2.oci.tar", ref.digest, ids.image_id)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Device]:
    with device(tmp_path / "dev") as d:
        yield d


def old_tree(dev: Device, role: str) -> Path:
    """The tree the fixture made slot `role` from: the root of a boot of it."""
    return dev.state.parent / "old-trees" / role


def image_id(path: Path) -> str:
    ids = slotfile.slot_ids(path)
    return (ids.image_id or "") if ids is not None else ""


def upgrade_in_process(dev: Device, source: str) -> None:
    """The upgrade without a process of its own (faster; the CLI is tested above)."""
    upgrade(UpgradeOptions(parse_source(source)),
            UpgradeTargets(dev.state, dev.persistent, "active"))


def debugfs_inodes(dev: Device) -> dict[str, int]:
    """inode of each slot name as read from the disk without replaying the journal (what
    GRUB sees)."""
    image = dev.state.parent / "state.ext4"
    out = run(["debugfs", "-R", "ls -p /cOS", str(image)]).stdout
    return {name: ino for name, (ino, _size) in slotstate.parse_debugfs_ls(out).items()}


def inodes(dev: Device) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (dev.state / "cOS").iterdir()}


# ------------------------------------------------------------------------------ arming


def test_upgrade_arms_the_new_image_and_clears_a_stale_failure(dev: Device,
                                                               v2: NewImage) -> None:
    grub_set(dev.state, kairos_failed="c" * 32)  # from an earlier upgrade
    doc = result_json(dev.upgrade(f"file:{v2.slot}"))
    assert doc["version"] == "v2.0.0"
    env = grub_env(dev.state)
    assert (env.get("kairos_tentative"), env.get("kairos_tries"), env.get("kairos_failed", "")) \
        == (v2.image_id, "1", "")
    assert image_id(dev.active) == v2.image_id
    assert dev.records()["active"].image_id == v2.image_id
    # What GRUB reads is on the disk, not only in the journal.
    assert debugfs_inodes(dev) == inodes(dev)
    assert (dev.state / "boot_assessment").stat().st_size == 1024


def test_booted_passive_arms_before_the_replace_with_tries_from_config(
        dev: Device, v2: NewImage, tmp_path: Path) -> None:
    config = tmp_path / "root/oem/90_assessment.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("#cloud-config\nboot_assessment:\n  tries: 12\n")
    args = ("--config-root", str(tmp_path / "root"))
    before = dev.snapshot()
    assert_refused(dev, before, dev.upgrade(f"dir:{v2.tree}", *args, booted="passive"),
                   "boot_assessment.tries is 12", "from 1 to 9")
    config.write_text("#cloud-config\nboot_assessment:\n  tries: 3\n")
    result_json(dev.upgrade(f"dir:{v2.tree}", *args, booted="passive"))
    env = grub_env(dev.state)
    assert (env.get("kairos_tentative"), env.get("kairos_tries")) == (v2.image_id, "3")
    assert image_id(dev.active) == v2.image_id  # the dir: tree got the same boot cfg


def test_recovery_upgrade_does_not_arm(tmp_path: Path, v2: NewImage) -> None:
    with device(tmp_path / "dev", recovery=True) as d:
        result_json(d.upgrade(f"file:{v2.slot}", "--recovery"))
        assert grub_env(d.state) == {}


# ------------------------------------------------------------------------------ settle


def fall_back(dev: Device, v2: NewImage) -> None:
    """v2 upgraded in, then GRUB: its one try spent on a boot that failed, then refused
    (kairos_failed), passive booted. Written with grub-editenv, as GRUB's save_env does."""
    upgrade_in_process(dev, f"file:{v2.slot}")
    assert grub_env(dev.state)["kairos_tries"] == "1"
    grub_set(dev.state, kairos_tries=0)  # GRUB boots the tentative image: one try spent
    grub_set(dev.state, kairos_failed=v2.image_id, kairos_tentative="")  # then gives up


def assess_targets(dev: Device, tmp: Path, booted: str, root: Path) -> assess.Targets:
    checks = tmp / "health.d"
    checks.mkdir(mode=0o755, exist_ok=True)
    return assess.Targets(dev.state, booted, root=root, run_dir=tmp / "run",
                          persistent_dir=dev.persistent, health_dirs=(checks,))


def outcome(dev: Device, run_dir: Path) -> dict[str, Any]:
    recs = dev.records()
    return {"inodes": inodes(dev), "grub": grub_env(dev.state),
            "ids": {r: image_id(dev.state / f"cOS/{r}.img") for r in ("active", "passive")},
            "failed": [(f.image_id, f.digest, f.version) for f in slotstate.load_failed(dev.state)],
            "records": {r: (v.version, v.assessment) if v else None for r, v in recs.items()},
            "sentinel": (run_dir / assess.UPGRADE_FAILURE).read_text()}


def test_a_failed_trial_reboots_then_the_fallback_is_settled(dev: Device, v2: NewImage,
                                                             tmp_path: Path) -> None:
    upgrade_in_process(dev, f"file:{v2.slot}")
    before = inodes(dev)
    # The first boot of v2 (GRUB counted its try): a check fails, the device must reboot.
    grub_set(dev.state, kairos_tries=0)
    t = assess_targets(dev, tmp_path, "active", v2.tree)
    bad = t.health_dirs[0] / "10-api"
    bad.write_text("#!/bin/sh\necho 'connection refused'\nexit 7\n")
    bad.chmod(0o755)
    reboots: list[int] = []
    result = assess.assess(t, health.AssessmentConfig(), reboot=lambda: reboots.append(1))
    assert (result.verdict, result.tentative, reboots) == ("failed", True, [1])
    assert dev.records()["active"].assessment == "failed"
    assert inodes(dev) == before  # nothing swapped: GRUB decides
    bad.unlink()

    # GRUB gave up and booted passive (v1): `kairos assess` as the service runs it.
    grub_set(dev.state, kairos_failed=v2.image_id, kairos_tentative="")
    run_dir = tmp_path / "run"
    args = ["assess", "--json", "--state-dir", str(dev.state), "--persistent-dir",
            str(dev.persistent), "--booted", "passive", "--root", str(old_tree(dev, "active")),
            "--run-dir", str(run_dir), "--health-dir", str(t.health_dirs[0])]
    doc = result_json(kairos_cli(*args))
    assert doc["verdict"] == "good" and doc["settled"] and doc["upgrade_failure"]
    assert doc["steps"] == ["failure-noted", "failure-listed", "swapped", "checked",
                            "recorded", "reported"]
    after = inodes(dev)
    assert (after["active.img"], after["passive.img"]) == (before["passive.img"],
                                                           before["active.img"])
    assert debugfs_inodes(dev) == after  # checkpointed: GRUB sees the swap
    env = grub_env(dev.state)
    assert env.get("kairos_failed") == v2.image_id and env.get("kairos_tentative", "") == ""
    (failed,) = slotstate.load_failed(dev.state)
    assert (failed.image_id, failed.version, failed.source) == (v2.image_id, "v2.0.0",
                                                               f"file:{v2.slot}")
    assert failed.sha256 == dev.records()["passive"].sha256
    assert (run_dir / assess.UPGRADE_FAILURE).read_text() == v2.image_id + "\n"
    assert dev.records()["active"].assessment == "good"
    # The service again (or the next boot): nothing changes.
    snap = dev.snapshot()
    again = result_json(kairos_cli(*args))
    assert again["steps"] == ["checked", "reported"] and not again["settled"]
    now = dev.snapshot()
    assert (now.files, now.inodes) == (snap.files, snap.inodes)

    # Re-applied by a person (--force) on this same boot: the boot sentinel still says
    # passive, but v1 runs from active.img now. The running image must be the one kept.
    v1_id = image_id(dev.state / "cOS/active.img")
    upgrade(UpgradeOptions(parse_source(f"file:{v2.slot}"), force=True),
            UpgradeTargets(dev.state, dev.persistent, "passive",
                           root=old_tree(dev, "active")))
    assert (image_id(dev.state / "cOS/active.img"),
            image_id(dev.state / "cOS/passive.img")) == (v2.image_id, v1_id)


class Cut(BaseException):
    """A power cut, as far as the assessment can tell: nothing after it runs."""


@pytest.fixture(scope="module")
def uncut(tmp_path_factory: pytest.TempPathFactory, v2: NewImage) -> dict[str, Any]:
    """Where an assessment after a fallback ends when nothing interrupts it."""
    tmp = tmp_path_factory.mktemp("uncut")
    with device(tmp / "dev") as d:
        fall_back(d, v2)
        t = assess_targets(d, tmp, "passive", old_tree(d, "active"))
        assess.assess(t, health.AssessmentConfig(), reboot=_never)
        return outcome(d, t.run_dir)


def _never() -> None:
    raise AssertionError("no reboot expected")


@pytest.mark.parametrize("cut", ["failure-noted", "failure-listed", "swapped", "checked",
                                 "recorded", "inside-swap"])
def test_cut_anywhere_then_run_again_converges(cut: str, dev: Device, v2: NewImage,
                                               tmp_path: Path, uncut: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fall_back(dev, v2)
    t = assess_targets(dev, tmp_path, "passive", old_tree(dev, "active"))

    def hook(step: str) -> None:
        if step == cut:
            raise Cut(step)

    if cut == "inside-swap":
        # The records are written and checkpointed, the exchange never happens.
        def no_exchange(a: Path, b: Path) -> None:
            raise Cut("exchange")
        monkeypatch.setattr(slotfile, "exchange", no_exchange)
    with pytest.raises(Cut):
        assess.assess(t, health.AssessmentConfig(), reboot=_never, hook=hook)
    monkeypatch.undo()
    # What GRUB would see now is consistent: each name's inode as the kernel sees it.
    assert debugfs_inodes(dev) == inodes(dev)
    assess.assess(t, health.AssessmentConfig(), reboot=_never)
    got = outcome(dev, t.run_dir)
    want = dict(uncut)
    # Inode numbers differ between two devices; which file went where does not.
    assert got.pop("inodes") != {} and want.pop("inodes") != {}
    assert got == want


# ------------------------------------------------------------------------------ refusal


def test_a_failed_digest_is_refused_and_forced(dev: Device, v2: NewImage) -> None:
    slotstate.add_failed(dev.state, slotstate.FailedImage("d" * 32, v2.digest, "v2.0.0",
                                                          date="2026-11-02T10:00:00Z"))
    run(["sync"])
    before = dev.snapshot()
    proc = dev.upgrade(f"ocifile:{v2.archive}")
    text = assert_refused(dev, before, proc, "v2.0.0", v2.digest,
                          "failed its boot assessment on this device", "--force")
    assert "2026-11-02" in text
    doc = result_json(dev.upgrade(f"ocifile:{v2.archive}", "--force"))
    assert doc["digest"] == v2.digest
    env = grub_env(dev.state)
    assert (env.get("kairos_tentative"), env.get("kairos_tries")) == (v2.image_id, "1")


def test_a_failed_image_id_is_refused_and_forced(dev: Device, v2: NewImage) -> None:
    slotstate.add_failed(dev.state, slotstate.FailedImage(v2.image_id, version="v2.0.0"))
    grub_set(dev.state, kairos_failed=v2.image_id)
    run(["sync"])
    before = dev.snapshot()
    proc = dev.upgrade(f"file:{v2.slot}")
    assert_refused(dev, before, proc, "image id " + v2.image_id, "--force")
    result_json(dev.upgrade(f"file:{v2.slot}", "--force"))
    env = grub_env(dev.state)
    # Re-armed from a clean flag: GRUB boots it again, on trial.
    assert (env.get("kairos_tentative"), env.get("kairos_failed", "")) == (v2.image_id, "")
