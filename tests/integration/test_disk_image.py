"""`kairos disk` on a fake slot: every partition, filesystem, file and GRUB byte, no mounting."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import yaml

from kairos.agent import install as install_mod
from kairos.agent.state import PartitionState, detect_images
from kairos.artifacts.rootfs import sha256_file
from kairos.boot import grubenv
from kairos.boot.grubcfg import GrubCfgOptions, render_grub_cfg
from kairos.boot.grubinstall import boot_img_path, patch_boot_img
from kairos.disk.esp import list_fat
from kairos.disk.filesystems import FsTarget
from kairos.disk.gpt import KAIROS_DISK_GUID, read_gpt
from kairos.disk.sizes import GiB
from kairos.errors import KairosError
from kairos.run import run
from tests.integration.test_disk_helpers import (
    blkid,
    cli,
    debugfs,
    dump,
    make_image_dir,
    stat_fields,
)

pytestmark = pytest.mark.integration

CLOUD_CONFIG = "#cloud-config\nhostname: edge-1\nusers:\n- name: kairos\n"
OCI_DIGEST = "sha256:" + "d" * 64


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("disk")
    image_dir = make_image_dir(base)
    # What `kairos build` leaves beside the slot: the install's records come from them.
    slot = image_dir / "rootfs.squashfs"
    (image_dir / "build.json").write_text(json.dumps({
        "rootfs": "/build/out/rootfs.squashfs", "rootfs_sha256": sha256_file(slot),
        "rootfs_size": slot.stat().st_size, "oci_digest": OCI_DIGEST}))
    (image_dir / "kairos-release").write_text('KAIROS_VERSION="v1.2.3"\nKAIROS_ARCH="amd64"\n')
    cc = base / "cc.yaml"
    cc.write_text(CLOUD_CONFIG)
    out = base / "out" / "disk.raw"
    out.parent.mkdir()
    mp = pytest.MonkeyPatch()
    try:
        rc = cli(mp, "disk", str(image_dir), "-o", str(out), "--size", "3G",
                 "--cloud-config", str(cc), "--grub-option", "extra_cmdline=quiet",
                 "--grub-timeout", "2")
    finally:
        mp.undo()
    assert rc == 0
    parts = {e.name: e for e in read_gpt(out)}
    targets = {n: FsTarget(out, e.start_lba * 512, (e.end_lba - e.start_lba + 1) * 512)
               for n, e in parts.items()}
    return {"disk": out, "image_dir": image_dir, "cc": cc, "parts": parts, "fs": targets,
            "base": base}


def test_partition_table(built: dict) -> None:
    disk: Path = built["disk"]
    assert disk.stat().st_size == 3 * GiB
    assert list(disk.parent.iterdir()) == [disk]  # no temp files left beside it
    entries = read_gpt(disk)
    assert [(e.number, e.name, e.type_code) for e in entries] == [
        (1, "bios", "EF02"), (2, "efi", "EF00"), (3, "oem", "8300"), (4, "recovery", "8300"),
        (5, "state", "8300"), (6, "persistent", "8300")]
    assert entries[0].start_lba == 2048 and entries[0].end_lba == 4095
    sizes = {e.name: (e.end_lba - e.start_lba + 1) // 2048 for e in entries}
    assert sizes["efi"] == 64 and sizes["oem"] == 64
    info = run(["sgdisk", "--print", str(disk)]).stdout
    assert f"Disk identifier (GUID): {KAIROS_DISK_GUID}" in info
    run(["sgdisk", "--verify", str(disk)])


@pytest.mark.parametrize(("name", "label", "fstype"), [
    ("efi", "COS_GRUB", "vfat"), ("oem", "COS_OEM", "ext4"),
    ("recovery", "COS_RECOVERY", "ext4"), ("state", "COS_STATE", "ext4"),
    ("persistent", "COS_PERSISTENT", "ext4"),
])
def test_filesystem_labels(built: dict, name: str, label: str, fstype: str) -> None:
    target: FsTarget = built["fs"][name]
    found = blkid(target.path, target.offset)
    assert (found["LABEL"], found["TYPE"]) == (label, fstype)
    if fstype == "ext4":
        run(["e2fsck", "-fn", target.e2fs_spec])
    else:
        assert found["VERSION"] == "FAT32"


def test_state_has_both_slots_and_grub_cfg(built: dict, tmp_path: Path) -> None:
    state: FsTarget = built["fs"]["state"]
    slot = (built["image_dir"] / "rootfs.squashfs").read_bytes()
    active = stat_fields(state, "/cOS/active.img")
    passive = stat_fields(state, "/cOS/passive.img")
    assert active["ino"] != passive["ino"]  # two files, not two links to one
    assert int(active["size"]) == int(passive["size"]) == len(slot)
    assert dump(state, "/cOS/active.img", tmp_path / "a") == slot
    assert dump(state, "/cOS/passive.img", tmp_path / "p") == slot
    cfg = dump(state, "/grub2/grub.cfg", tmp_path / "cfg").decode()
    assert cfg == render_grub_cfg(GrubCfgOptions(timeout=2))


def test_recovery_has_the_recovery_image(built: dict, tmp_path: Path) -> None:
    recovery: FsTarget = built["fs"]["recovery"]
    want = (built["image_dir"] / "recovery.squashfs").read_bytes()
    assert dump(recovery, "/cOS/recovery.squashfs", tmp_path / "r") == want


def test_slot_records_are_written(built: dict, tmp_path: Path) -> None:
    """state.yaml on COS_STATE (active, passive) and COS_RECOVERY (recovery), in Kairos's
    shape, each record with the inode of the file it describes."""
    image_dir: Path = built["image_dir"]
    state: FsTarget = built["fs"]["state"]
    doc = yaml.safe_load(dump(state, "/state.yaml", tmp_path / "s.yaml"))
    assert list(doc) == ["date", "state"] and doc["state"]["label"] == "COS_STATE"
    slot_sha = sha256_file(image_dir / "rootfs.squashfs")
    for role, label in (("active", "COS_ACTIVE"), ("passive", "COS_PASSIVE")):
        entry = doc["state"][role]
        assert entry["source"] == f"file:{(image_dir / 'rootfs.squashfs').resolve()}"
        assert entry["source-metadata"] == {"digest": OCI_DIGEST}
        assert (entry["label"], entry["fs"], entry["version"], entry["arch"]) == (
            label, "squashfs", "v1.2.3", "amd64")
        assert entry["sha256"] == slot_sha
        fields = stat_fields(state, f"/cOS/{role}.img")
        assert (entry["inode"], entry["size"]) == (int(fields["ino"]), int(fields["size"]))
    assert stat_fields(state, "/state.yaml")["uid"] == "0"

    recovery: FsTarget = built["fs"]["recovery"]
    doc = yaml.safe_load(dump(recovery, "/state.yaml", tmp_path / "r.yaml"))
    assert list(doc) == ["date", "recovery"] and doc["recovery"]["label"] == "COS_RECOVERY"
    entry = doc["recovery"]["recovery"]
    assert entry["label"] == "COS_SYSTEM" and "source-metadata" not in entry
    assert entry["sha256"] == sha256_file(image_dir / "recovery.squashfs")
    assert entry["inode"] == int(stat_fields(recovery, "/cOS/recovery.squashfs")["ino"])

    # What `kairos state` shows of the unmounted partitions (read with debugfs).
    parts = {key: PartitionState(found=True, name=built["fs"][key].e2fs_spec)
             for key in ("state", "recovery")}
    images = detect_images(Path("/nonexistent"), parts, [], read_devices=True)
    assert {k: (v.found, v.recorded, v.version, v.digest) for k, v in images.items()} == {
        "active": (True, True, "v1.2.3", OCI_DIGEST),
        "passive": (True, True, "v1.2.3", OCI_DIGEST),
        "recovery": (True, True, "", "")}


def test_oem_has_grubenv_and_the_cloud_config(built: dict, tmp_path: Path) -> None:
    oem: FsTarget = built["fs"]["oem"]
    env = dump(oem, "/grubenv", tmp_path / "grubenv")
    assert len(env) == 1024
    assert run(["grub-editenv", str(tmp_path / "grubenv"), "list"]).stdout == \
        "extra_cmdline=quiet\n"
    assert grubenv.decode(env) == {"extra_cmdline": "quiet"}
    assert dump(oem, "/90_custom.yaml", tmp_path / "cc").decode() == CLOUD_CONFIG
    fields = stat_fields(oem, "/90_custom.yaml")
    assert (int(fields["mode"], 8) & 0o7777, fields["uid"], fields["gid"]) == (0o640, "0", "0")


def test_persistent_is_empty(built: dict) -> None:
    listing = debugfs(built["fs"]["persistent"], "ls -p /")
    names = {line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6}
    assert names == {".", "..", "lost+found"}


def test_esp_has_the_removable_media_loader(built: dict, tmp_path: Path) -> None:
    esp: FsTarget = built["fs"]["efi"]
    assert "BOOTX64  EFI" in list_fat(esp, "/EFI/BOOT")
    out = tmp_path / "BOOTX64.EFI"
    run(["mcopy", "-i", esp.mtools_spec, "::/EFI/BOOT/BOOTX64.EFI", str(out)],
        env={"MTOOLS_SKIP_CHECK": "1"})
    assert out.read_bytes()[:2] == b"MZ"


def test_mbr_and_core_img(built: dict) -> None:
    disk: Path = built["disk"]
    bios = built["parts"]["bios"]
    with open(disk, "rb") as fh:
        mbr = fh.read(512)
        fh.seek(bios.start_lba * 512)
        core_first = fh.read(512)
    assert mbr[:440] == patch_boot_img(boot_img_path().read_bytes(), bios.start_lba)[:440]
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == 2048
    assert mbr[510:512] == b"\x55\xaa"
    assert mbr[0x1BE + 4] == 0xEE  # the protective MBR partition survived
    start, count, segment = struct.unpack_from("<QHH", core_first, 0x1F4)
    assert (start, segment) == (bios.start_lba + 1, 0x820)
    assert 100 < count < 2047


def test_too_small_size_fails_with_exit_2_and_no_file(
        built: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.raw"
    rc = cli(monkeypatch, "disk", str(built["image_dir"]), "-o", str(out), "--size", "200M")
    assert rc == 2
    err = capsys.readouterr().err
    assert "disk size 200M is too small" in err and "use --size" in err
    assert list(tmp_path.iterdir()) == []


def test_qcow2_output_and_json(built: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "disk.qcow2"
    rc = cli(monkeypatch, "disk", str(built["image_dir"]), "-o", str(out), "--format", "qcow2",
             "--json")
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "qcow2" and summary["output"] == str(out)
    assert [p["name"] for p in summary["partitions"]][-1] == "persistent"
    info = json.loads(run(["qemu-img", "info", "--output=json", str(out)]).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == summary["disk_size"]
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, KairosError])
def test_failure_midway_leaves_nothing(built: dict, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, exc: type) -> None:
    def boom(*_a: object, **_k: object) -> None:
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # it was half-written
        raise exc("stop") if exc is KairosError else exc()

    monkeypatch.setattr(install_mod, "build_core_img", boom)
    from kairos.artifacts.disk import make_disk
    with pytest.raises(exc):
        make_disk(built["image_dir"], tmp_path / "disk.raw")
    assert list(tmp_path.iterdir()) == []
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if "kairos-" in line]


def test_existing_output_is_replaced_atomically(built: dict, tmp_path: Path) -> None:
    from kairos.artifacts.disk import make_disk
    out = tmp_path / "disk.raw"
    out.write_bytes(b"old")
    inode = os.stat(out).st_ino
    make_disk(built["image_dir"], out, size="2G")
    assert out.stat().st_size == 2 * GiB and os.stat(out).st_ino != inode
