"""The boot assessment's decisions (agent/assess.py) and whole runs on a scratch COS_STATE.

Slot files here are plain files whose text is their image id (slotfile.slot_ids is replaced
to read it), so every case runs without root; tests/integration/test_assess_host.py runs the
same on real squashfs slots on ext4 with GRUB's own grub-editenv."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kairos.agent import assess, health, slotfile, slotstate
from kairos.agent.assess import Facts, Targets
from kairos.artifacts.bootid import BootIds
from kairos.boot import assessment
from kairos.boot.assessment import Flags
from kairos.safefs import rename_exchange

OLD, NEW, OTHER = "a" * 32, "b" * 32, "c" * 32
NO_CHECKS = health.AssessmentConfig()


def facts(booted: str = "active", booted_id: str = NEW, active: str = NEW, passive: str = OLD,
          tentative: str = "", tries: int = 0, failed: str = "") -> Facts:
    return Facts(booted, booted_id, active, passive, Flags(tentative, tries, failed))


# -- decisions -------------------------------------------------------------------------------


def test_settle_only_when_grub_fell_back_from_the_failed_active_image() -> None:
    fell_back = facts("passive", OLD, active=NEW, passive=OLD, failed=NEW)
    assert assess.settle_needed(fell_back) and assess.failure_in_effect(fell_back)
    # After the swap: the failure is still in effect (the image is passive), nothing to swap.
    swapped = facts("passive", OLD, active=OLD, passive=NEW, failed=NEW)
    assert not assess.settle_needed(swapped) and assess.failure_in_effect(swapped)
    # Booted from active: GRUB did not refuse it.
    assert not assess.settle_needed(facts("active", NEW, failed=OTHER))
    # The failed image is in no slot any more (an upgrade replaced it): nothing in effect.
    gone = facts("active", NEW, active=NEW, passive=OLD, failed=OTHER)
    assert not assess.failure_in_effect(gone) and not assess.settle_needed(gone)
    # An image without an image id cannot be told apart: nothing is swapped.
    assert not assess.settle_needed(facts("passive", "", active=NEW, passive="", failed=NEW))
    # Both slots hold the failed image: there is nothing good to swap in.
    assert not assess.settle_needed(facts("passive", NEW, active=NEW, passive=NEW, failed=NEW))


def test_tentative_role_and_verdict() -> None:
    trial = facts("active", NEW, tentative=NEW, tries=0)
    assert assess.is_tentative(trial)
    assert assess.verdict_action(trial, healthy=True) == "good"
    assert assess.verdict_action(trial, healthy=False) == "reboot"
    settled = facts("active", OLD, active=OLD, passive=NEW, tentative=NEW)
    assert not assess.is_tentative(settled)
    assert assess.verdict_action(settled, healthy=False) == "failed"
    assert not assess.is_tentative(facts(booted_id="", tentative=""))
    # The slot holding the running image, by id (a swap renamed it since boot).
    assert assess.booted_role(facts("passive", OLD, active=OLD, passive=NEW)) == "active"
    assert assess.booted_role(facts("passive", OLD, active=OLD, passive=OLD)) == "passive"
    assert assess.booted_role(facts("active", "", active="", passive="")) == "active"
    assert assess.booted_role(facts("active", OTHER)) is None


# -- whole runs ------------------------------------------------------------------------------


class Device:
    """A COS_STATE directory whose slot files hold their image id as text."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, booted: str,
                 running: str) -> None:
        self.state = tmp / "state"
        (self.state / "cOS").mkdir(parents=True)
        self.run_dir = tmp / "run"
        self.persistent = tmp / "persistent"
        self.persistent.mkdir()
        self.health = tmp / "health.d"
        self.health.mkdir(mode=0o755)
        self.running = running
        self.reboots = 0
        self.targets = Targets(self.state, booted, root=tmp / "root", run_dir=self.run_dir,
                               persistent_dir=self.persistent, health_dirs=(self.health,),
                               trusted_uid=os.geteuid())
        monkeypatch.setattr(slotfile, "slot_ids", self._ids)
        monkeypatch.setattr(assess, "booted_image_id", lambda root: self.running)

    @staticmethod
    def _ids(path: Path) -> BootIds | None:
        return BootIds("f" * 32, path.read_text()) if path.is_file() else None

    def slots(self, active: str, passive: str) -> None:
        for role, ident in (("active", active), ("passive", passive)):
            path = self.state / f"cOS/{role}.img"
            path.write_text(ident)
        roles = {role: slotstate.record_file(
            self.state / f"cOS/{role}.img", source=f"oci:registry.example/os:{ident[:4]}",
            digest=f"sha256:{ident}", sha256=f"sha-{ident}", version=f"v-{ident[:4]}",
            arch="amd64", date="2025-06-01T10:00:00Z") for role, ident in
            (("active", active), ("passive", passive))}
        slotstate.save(self.state, "COS_STATE", roles)

    def flags(self, **kw: Any) -> None:
        assessment.write(self.state, Flags(**{"tentative": "", "tries": 0, "failed": "", **kw}))

    def check(self, name: str, code: int) -> None:
        path = self.health / name
        path.write_text(f"#!/bin/sh\necho {name}\nexit {code}\n")
        path.chmod(0o755)

    def run(self, **kw: Any) -> assess.AssessResult:
        def reboot() -> None:
            self.reboots += 1
        return assess.assess(self.targets, NO_CHECKS, reboot=reboot, **kw)

    def ids(self) -> dict[str, str]:
        return {r: (self.state / f"cOS/{r}.img").read_text() for r in ("active", "passive")}

    def records(self) -> dict[str, slotstate.ImageRecord | None]:
        return slotstate.resolve(self.state, assess.SLOT_FILES)

    def outcome(self) -> dict[str, Any]:
        """What a run leaves that the next boot depends on."""
        recs = self.records()
        return {"ids": self.ids(), "flags": assessment.read(self.state),
                "failed": [f.image_id for f in slotstate.load_failed(self.state)],
                "records": {r: (v.version, v.assessment, v.image_id) if v else None
                            for r, v in recs.items()},
                "sentinel": (self.run_dir / assess.UPGRADE_FAILURE).exists()}


def test_a_good_boot_of_the_new_image_clears_its_trial(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dev = Device(tmp_path, monkeypatch, "active", NEW)
    dev.slots(NEW, OLD)
    dev.flags(tentative=NEW, tries=0)
    dev.check("10-ok", 0)
    result = dev.run()
    assert (result.verdict, result.tentative, result.reboot, dev.reboots) == ("good", True,
                                                                               False, 0)
    assert result.steps == ["checked", "flags-cleared", "recorded", "reported"]
    assert assessment.read(dev.state) == Flags("", 0, "")
    assert dev.records()["active"].assessment == "good"
    assert dev.records()["active"].image_id == NEW
    assert dev.records()["passive"].assessment == ""
    report = json.loads((dev.run_dir / assess.REPORT).read_text())
    assert report["verdict"] == "good" and report["health"]["results"][0]["name"] == "10-ok"
    assert (dev.run_dir / assess.REPORT).stat().st_mode & 0o777 == 0o600
    # The service again: nothing left to write.
    assert dev.run().steps == ["checked", "reported"]


def test_a_failing_image_on_trial_reboots_once_per_try(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dev = Device(tmp_path, monkeypatch, "active", NEW)
    dev.slots(NEW, OLD)
    dev.flags(tentative=NEW, tries=1)
    dev.check("10-broken", 1)
    result = dev.run()
    assert (result.verdict, result.tentative, result.reboot, dev.reboots) == ("failed", True,
                                                                               True, 1)
    assert result.steps[-1] == "reboot"
    assert assessment.read(dev.state) == Flags(NEW, 1, "")  # GRUB counts, not the agent
    assert dev.records()["active"].assessment == "failed"
    # GRUB counted the try: the next boot of it reboots again.
    dev.flags(tentative=NEW, tries=0)
    assert dev.run().reboot and dev.reboots == 2
    # GRUB did not count (it could not save its env): no reboot loop.
    assert not dev.run().reboot and dev.reboots == 2


def test_a_failing_image_not_on_trial_is_only_recorded(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dev = Device(tmp_path, monkeypatch, "active", NEW)
    dev.slots(NEW, OLD)
    dev.check("10-broken", 1)
    result = dev.run()
    assert (result.verdict, result.tentative, result.reboot, dev.reboots) == ("failed", False,
                                                                               False, 0)
    assert dev.records()["active"].assessment == "failed"
    assert result.health is not None and result.health.results[0].log == "10-broken\n"
    # Fixed: the next assessment says good.
    dev.check("10-broken", 0)
    assert dev.run().verdict == "good"
    assert dev.records()["active"].assessment == "good"


def _fell_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Device:
    """GRUB gave up on NEW in active.img and booted OLD from passive.img."""
    if not rename_exchange(*_pair(tmp_path)):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    dev = Device(tmp_path / "dev", monkeypatch, "passive", OLD)
    dev.slots(NEW, OLD)
    dev.flags(failed=NEW)
    return dev


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    a, b = tmp_path / "x", tmp_path / "y"
    a.write_text("x")
    b.write_text("y")
    return a, b


def test_settle_after_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _fell_back(tmp_path, monkeypatch)
    inode = {r: (dev.state / f"cOS/{r}.img").stat().st_ino for r in ("active", "passive")}
    result = dev.run()
    assert result.settled and result.upgrade_failure and result.verdict == "good"
    assert result.steps == ["failure-noted", "failure-listed", "swapped", "checked",
                            "recorded", "reported"]
    assert dev.ids() == {"active": OLD, "passive": NEW}
    assert (dev.state / "cOS/active.img").stat().st_ino == inode["passive"]  # renamed
    assert assessment.read(dev.state) == Flags("", 0, NEW)  # GRUB still refuses NEW
    (entry,) = slotstate.load_failed(dev.state)
    assert (entry.image_id, entry.digest, entry.version) == (NEW, f"sha256:{NEW}", "v-bbbb")
    recs = dev.records()
    assert recs["active"].version == "v-aaaa" and recs["active"].assessment == "good"
    assert recs["passive"].version == "v-bbbb"
    assert (dev.run_dir / assess.UPGRADE_FAILURE).read_text() == NEW + "\n"
    # Run again (the service restarted, or the next boot): nothing more is written.
    again = dev.run()
    assert again.steps == ["checked", "reported"] and again.upgrade_failure
    assert not again.settled and dev.ids() == {"active": OLD, "passive": NEW}


@pytest.mark.parametrize("cut", [s for s in assess.STEPS if s not in ("flags-cleared", "reboot")])
def test_settle_cut_after_any_step_converges(cut: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    class Cut(BaseException):
        pass

    def hook(step: str) -> None:
        if step == cut:
            raise Cut(step)

    uncut = _fell_back(tmp_path / "uncut", monkeypatch)
    uncut.run()
    want = uncut.outcome()
    dev = _fell_back(tmp_path / "cut", monkeypatch)
    with pytest.raises(Cut):
        dev.run(hook=hook)
    dev.run()
    assert dev.outcome() == want


def test_a_forced_image_that_proves_good_leaves_the_failed_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = Device(tmp_path, monkeypatch, "active", NEW)
    dev.slots(NEW, OLD)
    slotstate.add_failed(dev.state, slotstate.FailedImage(NEW, f"sha256:{NEW}"))
    slotstate.add_failed(dev.state, slotstate.FailedImage(OTHER))
    dev.flags(tentative=NEW, tries=0)
    assert dev.run().verdict == "good"
    assert [f.image_id for f in slotstate.load_failed(dev.state)] == [OTHER]


def test_state_shows_the_assessment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kairos state --json`: the flags, the failed list, the sentinel, this boot's verdict."""
    from kairos.agent import state as st
    root = tmp_path / "root"
    mnt = root / "run/initramfs/cos-state"
    dev = Device(tmp_path, monkeypatch, "passive", OLD)
    mnt.parent.mkdir(parents=True)
    dev.state.rename(mnt)
    dev.state = mnt
    dev.run_dir = root / "run"
    dev.targets = Targets(mnt, "passive", root=root, run_dir=root / "run",
                          persistent_dir=dev.persistent, health_dirs=(dev.health,),
                          trusted_uid=os.geteuid())
    if not rename_exchange(*_pair(tmp_path)):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    dev.slots(NEW, OLD)
    dev.flags(failed=NEW)
    dev.check("10-ok", 0)
    dev.run()
    lsblk = {"blockdevices": [{"name": "vda3", "path": "/dev/vda3", "label": "COS_STATE",
                               "maj:min": "254:3", "fstype": "ext4", "size": 1}]}
    mountinfo = "30 20 254:3 / /run/initramfs/cos-state ro,relatime - ext4 /dev/vda3 ro\n"
    data = st.detect_state(root, cmdline="root=LABEL=COS_PASSIVE", lsblk_json=json.dumps(lsblk),
                           mountinfo=mountinfo).to_dict()
    got = data["assessment"]
    assert (got["tentative"], got["tries"], got["failed"]) == ("", 0, NEW)
    assert got["upgrade_failure"] is True and got["verdict"] == "good"
    assert [c["name"] for c in got["checks"]] == ["10-ok"]
    assert [f["image-id"] for f in got["failed_images"]] == [NEW]
    assert data["images"]["active"]["assessment"] == "good"
    assert data["images"]["active"]["image_id"] == OLD
    assert json.loads(json.dumps(data)) == data


def test_cli_exit_codes_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from kairos.cli import main
    dev = Device(tmp_path, monkeypatch, "active", NEW)
    dev.slots(NEW, OLD)
    dev.flags(tentative=NEW, tries=0)
    args = ["assess", "--state-dir", str(dev.state), "--booted", "active", "--run-dir",
            str(dev.run_dir), "--health-dir", str(dev.health), "--root", str(tmp_path)]
    dev.check("10-broken", 1)
    assert main([*args, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    # Offline partitions: the host is never rebooted, the JSON says it would have been.
    assert doc["verdict"] == "failed" and doc["reboot"] is True and doc["tentative"] is True
    dev.check("10-broken", 0)
    assert main(args) == 0
    assert capsys.readouterr().out == "Boot assessment: good (1 check(s) passed)\n"


def test_a_verdict_changes_one_record_and_keeps_the_others(tmp_path: Path) -> None:
    """update_record: the booted slot's record gets the verdict (and image id); the other
    slot's and the kept ones stay as they were; records of older agents have no new keys."""
    import yaml
    part = tmp_path
    (part / "cOS").mkdir()
    recs = {}
    for role, size in (("active", 30), ("passive", 20), ("gone", 10)):
        path = part / f"cOS/{role}.img"
        path.write_bytes(b"x" * size)
        recs[role] = slotstate.record_file(path, source=f"file:/{role}", digest="",
                                           sha256=f"sha-{role}", version=role, arch="amd64",
                                           date="d")
    slotstate.save(part, "COS_STATE", {"active": recs["active"], "passive": recs["passive"]},
                   [recs["gone"]])
    slotstate.add_failed(part, slotstate.FailedImage(OTHER, version="v9"))
    assert "image-id" not in (part / "state.yaml").read_text().split("failed:")[0]
    assert slotstate.update_record(part, "COS_STATE", assess.SLOT_FILES, "active",
                                   assessment="good", image_id=NEW)
    assert not slotstate.update_record(part, "COS_STATE", assess.SLOT_FILES, "active",
                                       assessment="good", image_id=NEW)  # nothing changes
    doc = yaml.safe_load((part / "state.yaml").read_text())
    assert doc["state"]["active"]["assessment"] == "good"
    assert doc["state"]["active"]["image-id"] == NEW
    assert "assessment" not in doc["state"]["passive"]
    assert [k["version"] for k in doc["state"]["kept"]] == ["gone"]
    assert doc["failed"] == [{"image-id": OTHER, "digest": "", "version": "v9", "sha256": "",
                              "source": "", "date": ""}]
    assert slotstate.drop_failed(part, OTHER) and slotstate.load_failed(part) == []
    assert not slotstate.drop_failed(part, OTHER)
