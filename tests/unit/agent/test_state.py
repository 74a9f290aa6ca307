"""`kairos state`: boot mode from cmdline and sentinels, partitions from lsblk + mountinfo."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from kairos.agent import state as st
from kairos.cli import state_cmd
from kairos.errors import BadInput

COMMON = "console=tty1 console=ttyS0,115200 panic=5 rd.emergency=reboot rd.cos.oemlabel=COS_OEM"


@pytest.mark.parametrize(("cmdline", "boot"), [
    (f"BOOT_IMAGE=(loop0)/boot/vmlinuz root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img "
     f"{COMMON}", st.ACTIVE),
    (f"root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img {COMMON}", st.PASSIVE),
    (f"root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs {COMMON}", st.RECOVERY),
    (f"root=LABEL=COS_RECOVERY cos-img/filename=/cOS/recovery.img {COMMON}", st.RECOVERY),
    ("root=/dev/vda1 recovery-mode", st.RECOVERY),
    (f"root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs {COMMON} kairos.reset",
     st.AUTORESET),
    ("cdroot root=live:CDLABEL=COS_LIVE rd.live.dir=/ rd.live.squashimg=rootfs.squashfs "
     "rd.cos.disable install-mode", st.LIVECD),
    ("root=live:LABEL=COS_LIVE rd.live.dir=/", st.LIVECD),
    ("rd.neednet=1 ip=dhcp rd.cos.disable root=live:http://10.0.0.1/x.squashfs netboot", st.LIVECD),
    ("kairos.ram root=LABEL=COS_ACTIVE", st.ACTIVE),
    ("BOOT_IMAGE=/boot/vmlinuz-6.1.0 root=UUID=1234 ro quiet", st.UNKNOWN),
    ("", st.UNKNOWN),
])
def test_boot_from_cmdline(cmdline: str, boot: str) -> None:
    assert st.boot_from_cmdline(cmdline) == boot


@pytest.mark.parametrize(("sentinels", "boot"), [
    (["active_mode"], st.ACTIVE),
    (["passive_mode"], st.PASSIVE),
    (["recovery_mode"], st.RECOVERY),
    (["recovery_mode", "autoreset_mode"], st.AUTORESET),
    (["live_mode"], st.LIVECD),
    ([], st.UNKNOWN),
])
def test_sentinels_when_cmdline_says_nothing(tmp_path: Path, sentinels: list[str],
                                             boot: str) -> None:
    (tmp_path / "run/cos").mkdir(parents=True)
    for name in sentinels:
        (tmp_path / "run/cos" / name).touch()
    assert st.detect_boot(tmp_path, "root=/dev/sda1") == boot


def test_cmdline_wins_over_sentinel(tmp_path: Path) -> None:
    (tmp_path / "run/cos").mkdir(parents=True)
    (tmp_path / "run/cos/recovery_mode").touch()
    assert st.detect_boot(tmp_path, "root=LABEL=COS_ACTIVE") == st.ACTIVE


def test_cmdline_read_from_root(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("root=LABEL=COS_PASSIVE\n")
    assert st.detect_boot(tmp_path) == st.PASSIVE


# A Kairos disk as lsblk (util-linux 2.38) prints it, plus the slot image on a loop device.
def part(name: str, majmin: str, label: str | None, partlabel: str | None, fstype: str | None,
         size: int, mountpoints: list[str | None], ro: bool = False) -> dict[str, Any]:
    return {"name": name, "path": f"/dev/{name}", "label": label, "partlabel": partlabel,
            "fstype": fstype, "size": size, "mountpoints": mountpoints,
            "uuid": f"fs-{name}", "partuuid": f"part-{name}", "ro": ro, "maj:min": majmin}


LSBLK = json.dumps({"blockdevices": [
    part("loop0", "7:0", "COS_ACTIVE", None, "squashfs", 700 << 20, ["/"], ro=True),
    {**part("vda", "254:0", None, None, None, 20 << 30, [None]), "children": [
        part("vda1", "254:1", None, "bios", None, 1 << 20, [None]),
        part("vda2", "254:2", "COS_GRUB", "efi", "vfat", 64 << 20, [None]),
        part("vda3", "254:3", "COS_OEM", "oem", "ext4", 64 << 20, ["/oem"]),
        part("vda4", "254:4", "COS_RECOVERY", "recovery", "ext4", 2 << 30, [None]),
        part("vda5", "254:5", "COS_STATE", "state", "ext4", 6 << 30,
             ["/run/initramfs/cos-state"]),
        part("vda6", "254:6", "COS_PERSISTENT", "persistent", "ext4", 12 << 30,
             ["/var/lib/extra", "/usr/local", "/etc/ssh"]),
    ]},
]})

MOUNTINFO = "\n".join([
    "20 1 7:0 / / ro,relatime shared:1 - squashfs /dev/loop0 ro",
    "21 20 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw",
    "30 20 254:5 / /run/initramfs/cos-state ro,relatime shared:10 - ext4 /dev/vda5 ro",
    "31 20 254:3 / /oem rw,relatime shared:11 - ext4 /dev/vda3 rw",
    # Bind mounts of persistent sub-directories come before the whole-filesystem mount.
    "32 20 254:6 /.state/var-lib-extra.bind /var/lib/extra rw,relatime - ext4 /dev/vda6 rw",
    "33 20 254:6 / /usr/local rw,relatime shared:12 - ext4 /dev/vda6 rw",
    "34 20 254:6 /.state/etc-ssh.bind /etc/ssh rw,relatime - ext4 /dev/vda6 rw",
]) + "\n"

RELEASE = """\
KAIROS_ID="kairos"
KAIROS_NAME="kairos-core-debian-bookworm"
KAIROS_VERSION="v0.1.0"
KAIROS_ARCH="amd64"
KAIROS_FLAVOR="debian"
KAIROS_FLAVOR_RELEASE="bookworm"
KAIROS_VARIANT="core"
KAIROS_MODEL="generic"
KAIROS_BUG_REPORT_URL='https://example.invalid/issues'
# a comment
KAIROS_RELEASE=v0.1.0
"""


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A fake running system: cmdline, kairos-release, sentinels, machine-id."""
    for d in ("proc/self", "etc", "run/cos", "run/systemd/system", "proc/sys/kernel"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "proc/cmdline").write_text(
        f"BOOT_IMAGE=(loop0)/boot/vmlinuz root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img"
        f" {COMMON}\n")
    (tmp_path / "proc/self/mountinfo").write_text(MOUNTINFO)
    (tmp_path / "etc/kairos-release").write_text(RELEASE)
    (tmp_path / "etc/os-release").write_text('NAME="Debian GNU/Linux"\nID=debian\n'
                                             'VERSION_ID="12"\n')
    (tmp_path / "etc/machine-id").write_text("0123456789ABCDEF0123456789abcdef\n")
    (tmp_path / "proc/sys/kernel/hostname").write_text("kairos-1234\n")
    (tmp_path / "run/cos/active_mode").touch()
    return tmp_path


def test_full_state_of_an_active_boot(device: Path) -> None:
    s = st.detect_state(device, lsblk_json=LSBLK)
    assert s.boot == st.ACTIVE and s.booted_slot == "active"
    assert s.uuid == "0123456789abcdef0123456789abcdef"
    assert s.in_ram is False

    assert s.oem == st.PartitionState(
        found=True, mounted=True, name="/dev/vda3", label="oem", filesystemlabel="COS_OEM",
        mount_point="/oem", size_bytes=64 << 20, type="ext4", read_only=False,
        uuid="part-vda3", fs_uuid="fs-vda3")
    assert s.state.mount_point == "/run/initramfs/cos-state"
    assert s.state.read_only is True  # from the mount's options
    assert s.persistent.mount_point == "/usr/local"  # not one of its bind mounts
    assert s.persistent.read_only is False and s.persistent.size_bytes == 12 << 30
    assert s.recovery.found and not s.recovery.mounted and s.recovery.mount_point == ""
    assert s.recovery.label == "recovery" and s.recovery.type == "ext4"

    assert s.kairos["version"] == "v0.1.0"
    assert s.kairos["flavor"] == "debian" and s.kairos["flavor_release"] == "bookworm"
    assert s.kairos["variant"] == "core" and s.kairos["model"] == "generic"
    assert s.kairos["arch"] == "amd64" and s.kairos["release"] == "v0.1.0"
    assert s.kairos["bug_report_url"] == "https://example.invalid/issues"
    assert s.kairos["init"] == "systemd" and s.kairos["secureboot"] is False
    assert s.system["hostname"] == "kairos-1234" and s.system["os"]["id"] == "debian"


def test_read_only_comes_from_the_mount_not_the_device(device: Path) -> None:
    # The device is writable (RO=0) but mounted ro, and the other way round.
    data = json.loads(LSBLK)
    for dev in data["blockdevices"][1]["children"]:
        dev["ro"] = dev["name"] == "vda3"
    s = st.detect_state(device, lsblk_json=json.dumps(data))
    assert s.state.read_only is True
    assert s.oem.read_only is False


def test_mount_found_when_lsblk_lacks_it(device: Path) -> None:
    data = json.loads(LSBLK)
    for dev in data["blockdevices"][1]["children"]:
        dev["mountpoints"] = [None]
    s = st.detect_state(device, lsblk_json=json.dumps(data))
    assert s.oem.mount_point == "/oem" and s.oem.mounted


def test_unmounted_partition_uses_device_ro(device: Path) -> None:
    data = json.loads(LSBLK)
    data["blockdevices"][1]["children"][3]["ro"] = True  # vda4, recovery
    s = st.detect_state(device, lsblk_json=json.dumps(data), mountinfo="")
    assert s.recovery.read_only is True and not s.recovery.mounted


def test_mount_point_with_space(device: Path) -> None:
    info = "40 20 254:3 / /mnt/my\\040oem rw,relatime - ext4 /dev/vda3 rw\n"
    s = st.detect_state(device, lsblk_json=LSBLK, mountinfo=info)
    assert s.oem.mount_point == "/mnt/my oem"


def test_no_devices_no_partitions(device: Path) -> None:
    s = st.detect_state(device, lsblk_json="")
    for p in (s.oem, s.persistent, s.recovery, s.state):
        assert p == st.PartitionState()


def test_live_boot(device: Path) -> None:
    s = st.detect_state(device, cmdline="root=live:CDLABEL=COS_LIVE rd.cos.disable",
                        lsblk_json="")
    assert s.boot == st.LIVECD and s.booted_slot is None


@pytest.mark.parametrize(("cmdline", "slot"), [
    ("root=LABEL=COS_PASSIVE", "passive"),
    ("root=LABEL=COS_SYSTEM", "recovery"),
    ("root=LABEL=COS_SYSTEM kairos.reset", "recovery"),
])
def test_booted_slot(device: Path, cmdline: str, slot: str) -> None:
    assert st.detect_state(device, cmdline=cmdline, lsblk_json="").booted_slot == slot


def test_release_falls_back_to_os_release(device: Path) -> None:
    (device / "etc/kairos-release").unlink()
    (device / "etc/os-release").write_text('NAME=Debian\nKAIROS_VERSION="v9"\n')
    k = st.detect_kairos(device)
    assert k["version"] == "v9" and k["flavor"] == ""


def test_uuid_prefers_dmi(device: Path) -> None:
    (device / "sys/class/dmi/id").mkdir(parents=True)
    (device / "sys/class/dmi/id/product_uuid").write_text("5A0B8A9E-0000-4000-8000-AAAAAAAAAAAA\n")
    assert st.detect_uuid(device) == "5a0b8a9e-0000-4000-8000-aaaaaaaaaaaa"
    (device / "sys/class/dmi/id/product_uuid").write_text(
        "00000000-0000-0000-0000-000000000000\n")
    assert st.detect_uuid(device) == "0123456789abcdef0123456789abcdef"  # machine-id


def test_secureboot_efivar(device: Path) -> None:
    efivars = device / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True)
    var = efivars / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    var.write_bytes(b"\x06\x00\x00\x00\x01")
    assert st.detect_secureboot(device) is True
    var.write_bytes(b"\x06\x00\x00\x00\x00")
    assert st.detect_secureboot(device) is False


def test_query_paths() -> None:
    data = {"boot": "active_boot", "oem": {"mount_point": "/oem", "found": True}}
    assert st.query(data, "boot") == "active_boot"
    assert st.query(data, ".oem.mount_point") == "/oem"
    assert st.format_value(st.query(data, "oem.found")) == "true"
    assert st.format_value(None) == ""
    assert json.loads(st.format_value(st.query(data, "oem"))) == data["oem"]
    with pytest.raises(BadInput):
        st.query(data, "nope")
    with pytest.raises(BadInput):
        st.query(data, "boot.deeper")


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kairos")
    state_cmd.register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["state", *argv])


def test_cli_json_and_yaml(device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli("--json", "--root", str(device))
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["boot"] == "active_boot" and data["kairos"]["version"] == "v0.1.0"
    assert set(data["oem"]) >= {"found", "name", "label", "filesystemlabel", "mount_point",
                                "size_bytes", "type", "read_only", "uuid"}
    args = cli("--root", str(device))
    assert args.func(args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["boot"] == "active_boot"


def test_cli_get(device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli("--root", str(device), "get", "boot")
    assert args.func(args) == 0
    assert capsys.readouterr().out == "active_boot\n"
    args = cli("--root", str(device), "get", "kairos.flavor")
    args.func(args)
    assert capsys.readouterr().out == "debian\n"


def test_runs_on_this_host() -> None:
    # The real readers (lsblk, /proc) on a machine that is not a Kairos device.
    s = st.detect_state()
    assert s.boot in st.BOOT_STATES
    assert isinstance(s.to_dict()["oem"]["found"], bool)


def test_stage_reports_show_failed_steps(device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A boot step that failed is in `kairos state --json`, from the report its run left."""
    from kairos.early.stage import run_and_record

    (device / "oem").mkdir()
    (device / "oem/50_test.yaml").write_text(
        "name: t\nstages:\n  boot:\n  - name: good\n    files: [{path: /run/x, content: x}]\n"
        "  - name: bad\n    commands: [\"false\"]\n  initramfs:\n  - name: good\n"
        "    files: [{path: /run/y, content: y}]\n")
    for name in ("boot", "initramfs"):
        run_and_record(name, device)
    (device / "run/kairos/stages/zzz.json").write_text("{broken")
    args = cli("--json", "--root", str(device))
    assert args.func(args) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert list(stages) == ["initramfs", "boot", "zzz"]  # boot order, then the rest
    assert stages["initramfs"] | {"finished": None} == {
        "ok": True, "run": 1, "skipped": 0, "failed": 0, "failures": [], "warnings": [],
        "finished": None}
    boot = stages["boot"]
    assert boot["ok"] is False and (boot["run"], boot["failed"]) == (1, 1)
    [line] = boot["failures"]
    assert line.startswith("/oem/50_test.yaml: step 't.bad' (boot) failed: commands: ")
    assert stages["zzz"]["ok"] is False and "unreadable" in stages["zzz"]["warnings"][0]
    args = cli("--root", str(device), "get", "stages.boot.failed")
    assert args.func(args) == 0
    assert capsys.readouterr().out == "1\n"


def test_no_reports_no_stages(device: Path) -> None:
    assert st.detect_state(device).stages == {}


# -- slot images ----------------------------------------------------------------------------

SLOT_RECORD = {"digest": "", "arch": "amd64", "date": "2025-06-01T10:00:00Z"}


def _slot_file(part: Path, rel: str, content: bytes) -> Path:
    path = part / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _record(path: Path, version: str, **kw: Any) -> Any:
    from kairos.agent import slotstate
    fields = {**SLOT_RECORD, "source": f"oci:registry.example/kairos/os:{version}",
              "sha256": f"sha-{version}", "version": version, **kw}
    return slotstate.record_file(path, **fields)


MOUNTINFO_RECOVERY = MOUNTINFO + (
    "35 20 254:4 / /run/kairos/recovery ro,relatime - ext4 /dev/vda4 ro\n")


@pytest.fixture
def slots(device: Path) -> Path:
    """COS_STATE at /run/initramfs/cos-state with both slots and their records (saved under
    the other roles, as a cut between an upgrade's renames leaves them), COS_RECOVERY
    mounted at /run/kairos/recovery, the root a loop mount of active.img."""
    from kairos.agent import slotstate
    state = device / "run/initramfs/cos-state"
    active = _slot_file(state, "cOS/active.img", b"A" * 4096)
    passive = _slot_file(state, "cOS/passive.img", b"P" * 2048)
    ss_active = _record(active, "v1.0.0")
    ss_passive = _record(passive, "v2.0.0", digest="sha256:" + "b" * 64)
    slotstate.save(state, "COS_STATE", {"active": ss_passive, "passive": ss_active})
    recovery = device / "run/kairos/recovery"
    rec = _slot_file(recovery, "cOS/recovery.squashfs", b"R" * 1024)
    slotstate.save(recovery, "COS_RECOVERY", {"recovery": _record(rec, "v0.9.0")})
    (device / "proc/self/mountinfo").write_text(MOUNTINFO_RECOVERY)
    loop = device / "sys/block/loop0/loop"
    loop.mkdir(parents=True)
    (loop / "backing_file").write_text("/run/initramfs/cos-state/cOS/active.img\n")
    return device


def test_images_from_the_records(slots: Path) -> None:
    s = st.detect_state(slots, lsblk_json=LSBLK)
    active, passive, recovery = (s.images[k] for k in ("active", "passive", "recovery"))
    # Each file gets the record of the image it holds, whatever role it was saved under.
    assert active == st.SlotImage(
        found=True, recorded=True, running=True, partition="COS_STATE",
        file="/cOS/active.img", label="COS_ACTIVE", fs="squashfs",
        source="oci:registry.example/kairos/os:v1.0.0", digest="", sha256="sha-v1.0.0",
        size=4096, version="v1.0.0", arch="amd64", date="2025-06-01T10:00:00Z")
    assert (passive.version, passive.digest, passive.size) == ("v2.0.0", "sha256:" + "b" * 64, 2048)
    assert passive.label == "COS_PASSIVE" and not passive.running
    assert (recovery.partition, recovery.file, recovery.label) == (
        "COS_RECOVERY", "/cOS/recovery.squashfs", "COS_SYSTEM")
    assert recovery.version == "v0.9.0" and recovery.found and recovery.recorded


def test_running_image_follows_a_rename(slots: Path) -> None:
    """After an upgrade, before the reboot: the running image is now passive.img (the kernel
    reports the loop file's current name) and the new one is active.img."""
    (slots / "sys/block/loop0/loop/backing_file").write_text(
        "/run/initramfs/cos-state/cOS/passive.img\n")
    s = st.detect_state(slots, lsblk_json=LSBLK)
    assert s.images["passive"].running and not s.images["active"].running
    assert not s.images["recovery"].running


def test_a_file_without_a_record(slots: Path) -> None:
    state = slots / "run/initramfs/cos-state"
    (state / "cOS/passive.img").unlink()
    _slot_file(state, "cOS/passive.img", b"new" * 10)  # another inode and size
    s = st.detect_state(slots, lsblk_json=LSBLK)
    assert s.images["passive"].found and not s.images["passive"].recorded
    assert s.images["passive"].size == 30 and s.images["passive"].version == ""


def test_no_partitions_no_images(device: Path) -> None:
    s = st.detect_state(device, lsblk_json="")
    assert set(s.images) == {"active", "passive", "recovery"}
    assert s.images["passive"] == st.SlotImage(partition="COS_STATE", file="/cOS/passive.img",
                                               label="COS_PASSIVE")
    # An unmounted partition of a fixture root is not read from its device.
    s = st.detect_state(device, lsblk_json=LSBLK)
    assert not s.images["recovery"].found


def test_cli_shows_and_gets_images(slots: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # lsblk of the fixture's devices (a fixture root has none of its own).
    real = st.detect_state
    monkeypatch.setattr(state_cmd, "detect_state",
                        lambda root: real(root, lsblk_json=LSBLK))
    args = cli("--json", "--root", str(slots))
    assert args.func(args) == 0
    images = json.loads(capsys.readouterr().out)["images"]
    assert list(images) == ["active", "passive", "recovery"]
    assert images["passive"]["version"] == "v2.0.0"
    args = cli("--root", str(slots), "get", "images.active.version")
    assert args.func(args) == 0
    assert capsys.readouterr().out == "v1.0.0\n"
    args = cli("--root", str(slots), "get", "images.recovery.running")
    args.func(args)
    assert capsys.readouterr().out == "false\n"


@pytest.mark.skipif(shutil.which("debugfs") is None or shutil.which("mkfs.ext4") is None,
                    reason="needs e2fsprogs")
def test_unmounted_recovery_is_read_with_debugfs(device: Path, tmp_path_factory:
                                                 pytest.TempPathFactory) -> None:
    """COS_RECOVERY is not mounted on an active boot: its records and file are read from the
    device with debugfs (nothing mounted, nothing written)."""
    from kairos.agent import slotstate
    from kairos.disk.filesystems import FsTarget, LargeFile, add_large_files, mkfs_ext4
    from kairos.run import run

    work = tmp_path_factory.mktemp("recovery-fs")
    staging = work / "staging"
    _slot_file(staging, "cOS/recovery.squashfs", b"R" * 5000)
    image = work / "recovery.ext4"
    image.write_bytes(b"")
    os.truncate(image, 16 << 20)
    target = FsTarget(image, 0, 16 << 20, fresh=True)
    mkfs_ext4(target, "COS_RECOVERY", staging)
    listing = run(["debugfs", "-R", "ls -p /cOS", str(image)]).stdout
    ino, size = slotstate.parse_debugfs_ls(listing)["recovery.squashfs"]
    record = slotstate.ImageRecord(source="file:/r", digest="", sha256="s", size=size,
                                   version="v0.5.0", arch="amd64", date="d", inode=ino)
    yml = work / "state.yaml"
    yml.write_text(slotstate.render("COS_RECOVERY", {"recovery": record}))
    add_large_files(target, [LargeFile(yml, "/state.yaml")])

    data = json.loads(LSBLK)
    vda4 = data["blockdevices"][1]["children"][3]
    vda4["path"] = str(image)
    s = st.detect_state(device, lsblk_json=json.dumps(data), read_devices=True)
    assert not s.recovery.mounted
    got = s.images["recovery"]
    assert (got.found, got.recorded, got.version, got.size) == (True, True, "v0.5.0", 5000)
    # A device that cannot be read gives no record and no error.
    vda4["path"] = str(work / "missing")
    s = st.detect_state(device, lsblk_json=json.dumps(data), read_devices=True)
    assert not s.images["recovery"].found
