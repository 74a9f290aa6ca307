"""`kairos install --device` onto a loop device gives the same disk as `kairos disk`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kairos.disk.blockdev import reread_partitions
from kairos.disk.filesystems import FsTarget
from kairos.disk.gpt import read_gpt
from kairos.disk.loop import loop_device
from kairos.disk.mounts import mount, tempdir
from kairos.run import run
from tests.integration.test_disk_helpers import blkid, cli, dump, make_image_dir, stat_fields

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices"),
]

LABELS = {1: ("bios", None), 2: ("efi", "COS_GRUB"), 3: ("oem", "COS_OEM"),
          4: ("recovery", "COS_RECOVERY"), 5: ("state", "COS_STATE"),
          6: ("persistent", "COS_PERSISTENT")}


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return make_image_dir(tmp_path, recovery=False)


@pytest.fixture
def loop(tmp_path: Path):  # type: ignore[no-untyped-def]
    backing = tmp_path / "device.img"
    with open(backing, "wb") as fh:
        fh.truncate(3 * 1024**3)
    with loop_device(backing) as dev:
        yield dev


def test_install_onto_a_loop_device(image_dir: Path, loop: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cc = tmp_path / "cc.yaml"
    cc.write_text("#cloud-config\nhostname: dev\n")
    # A leftover filesystem signature must not survive the install.
    run(["mkfs.ext4", "-q", "-F", "-L", "OLDJUNK", str(loop)])
    rc = cli(monkeypatch, "install", "--device", str(loop), "--image", str(image_dir),
             "--cloud-config", str(cc), "--yes")
    assert rc == 0
    whole = blkid(loop)
    assert whole.get("PTTYPE") == "gpt" and "TYPE" not in whole
    entries = read_gpt(loop)
    assert [(e.number, e.name) for e in entries] == [(n, v[0]) for n, v in LABELS.items()]
    # The persistent partition takes the rest of the device.
    assert (3 * 1024**3 // 512) - entries[-1].end_lba < 2048 + 34
    nodes = reread_partitions(loop, 6)
    for number, (_name, label) in LABELS.items():
        found = blkid(nodes[number])
        assert found.get("LABEL") == label
        if number >= 3:
            run(["e2fsck", "-fn", str(nodes[number])])
    run(["fsck.vfat", "-n", str(nodes[2])])
    state = FsTarget(nodes[5], 0, 0)
    slot = (image_dir / "rootfs.squashfs").read_bytes()
    assert dump(state, "/cOS/passive.img", tmp_path / "p") == slot
    recovery = FsTarget(nodes[4], 0, 0)
    assert dump(recovery, "/cOS/recovery.squashfs", tmp_path / "r") == slot
    oem = FsTarget(nodes[3], 0, 0)
    assert stat_fields(oem, "/90_custom.yaml")["mode"].endswith("640")
    assert len(dump(oem, "/grubenv", tmp_path / "env")) == 1024


def test_a_mounted_device_is_refused(image_dir: Path, loop: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run(["sgdisk", "--new=1:2048:+16M", str(loop)])
    nodes = reread_partitions(loop, 1)
    run(["mkfs.ext4", "-q", "-F", str(nodes[1])])
    before = read_gpt(loop)
    with tempdir() as mnt, mount(nodes[1], mnt):
        rc = cli(monkeypatch, "install", "--device", str(loop), "--image", str(image_dir),
                 "--yes")
    assert rc == 2
    assert "is in use (mounted on" in capsys.readouterr().err
    assert read_gpt(loop) == before


def test_confirmation_is_required_without_a_terminal(image_dir: Path, loop: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli(monkeypatch, "install", "--device", str(loop), "--image", str(image_dir))
    assert rc == 2
    assert "without confirmation" in capsys.readouterr().err
    assert read_gpt(loop) == []
