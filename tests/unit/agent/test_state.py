"""`kairos state`: boot mode from cmdline and sentinels, partitions from lsblk + mountinfo."""

from __future__ import annotations

import argparse
import json
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
