"""The live ISO boots from a CD under BIOS (El Torito, GRUB's eltorito.img) and under UEFI
(OVMF, the EFI boot image) into live mode: the slot image read-only as /, every write in
RAM, /run/cos/live_mode, `kairos state` saying livecd_boot, no failed unit. The user and
key come from the ISO's own /config.yaml (`kairos iso --cloud-config`); a NoCloud cidata
volume still adds its user-data; disks labelled like an installed system's stay untouched."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import kairos, state, write_cloud_config
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def live_iso(default_image: dict[str, object], keypair: tuple[Path, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("live-iso")
    cc = write_cloud_config(work / "cloud-config.yaml", keypair[1])
    out = work / "kairos.iso"
    kairos("iso", str(default_image["output"]), "-o", str(out), "--cloud-config", str(cc))
    return out


CIDATA = """#cloud-config
stages:
  boot:
    - name: from cidata
      files:
        - path: /run/from-cidata
          content: cidata
"""


def installed_looking_disks(work: Path) -> tuple[Path, ...]:
    """Two small disks with an installed system's labels: live mode must mount neither."""
    disks = []
    for label in ("COS_OEM", "COS_PERSISTENT"):
        disk = work / f"{label}.raw"
        with open(disk, "wb") as fh:
            fh.truncate(16 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(disk)], check=True)
        disks.append(disk)
    return tuple(disks)


@pytest.mark.parametrize("uefi", [False, True], ids=["bios", "uefi"])
def test_live_iso_boots_from_a_cd(live_iso: Path, boot_vm, uefi: bool,  # type: ignore[no-untyped-def]
                                  tmp_path: Path) -> None:
    cidata = tmp_path / "user-data.yaml"
    cidata.write_text(CIDATA)
    start = time.monotonic()
    vm = boot_vm(live_iso, uefi=uefi, cloud_config=cidata,
                 extra_disks=installed_looking_disks(tmp_path))
    print(f"\nlive ISO ({'UEFI' if uefi else 'BIOS'}): SSH after {time.monotonic() - start:.0f}s")
    efi = vm.ssh("test -d /sys/firmware/efi", check=False).returncode == 0
    assert efi == uefi
    # everything started, nothing failed (the installed-only services are skipped)
    settled = vm.ssh("timeout 300 systemctl is-system-running --wait", check=False).stdout
    assert settled.strip() == "running", vm.ssh("systemctl --failed --no-legend --plain").stdout
    assert vm.ssh("systemctl --failed --no-legend --plain").stdout.strip() == ""
    assert state(vm)["boot"] == "livecd_boot"
    assert vm.ssh("test -e /run/cos/live_mode && echo yes").stdout.strip() == "yes"
    # / is the ISO's slot image, read-only; the medium itself read-only at its Kairos place
    assert vm.ssh("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert vm.ssh("findmnt -no FSTYPE /").stdout.strip() == "squashfs"
    medium = vm.ssh("findmnt -no SOURCE,FSTYPE,OPTIONS /run/initramfs/live").stdout.split()
    assert medium[:2] == ["/dev/sr0", "iso9660"] and medium[2].startswith("ro")
    assert vm.ssh("test -f /run/initramfs/live/rootfs.squashfs && echo yes").stdout.strip() \
        == "yes"
    # writable in RAM where an installed system is writable; no disk mounted at all
    for path in ("/etc", "/var", "/home", "/root", "/usr/local", "/opt", "/srv"):
        assert vm.ssh(f"findmnt -no FSTYPE {path}").stdout.strip() == "overlay", path
    assert vm.ssh("findmnt -no FSTYPE /oem").stdout.strip() == "tmpfs"
    vm.ssh("sudo sh -c 'echo x > /etc/live-test && echo x > /usr/local/live-test "
           "&& echo x > /oem/live-test' && echo x > ~/live-test")
    sources = vm.ssh("findmnt -rno SOURCE").stdout.split()
    assert not [s for s in sources if s.startswith(("/dev/vd", "/dev/sd", "/dev/nvme"))]
    assert vm.ssh("test -e /run/initramfs/cos-state", check=False).returncode != 0
    # the ISO's config made the user (with its key and group) and the hostname; the cidata
    # volume's user-data landed in /oem (RAM) and ran too
    assert "(admin)" in vm.ssh("id").stdout
    assert vm.ssh("hostname").stdout.strip() == "kairos-test"
    assert vm.ssh("cat /run/from-cidata").stdout == "cidata"
    assert vm.ssh("sudo test -e /oem/95_userdata/userdata.yaml && echo yes").stdout.strip() == "yes"
    assert_no_failed_steps(vm)
