"""Netboot of the default image in QEMU, as `kairos vm --netboot` does it: no disk, the NIC's
iPXE ROM gets a lease and a chain script from slirp's DHCP/TFTP, the `kairos netboot` script
loads the kernel and initrd over HTTP from this process (127.0.0.1 only), the initrd brings
the network up and downloads the slot image into RAM, and the system comes up live. The
user and key come from the netboot config, fetched by the system over HTTP (config_url)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kairos.vm.netboot import min_memory
from tests.helpers import kairos, state, write_cloud_config
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def netboot_dir(default_image: dict[str, object], keypair: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("netboot")
    cc = write_cloud_config(work / "cloud-config.yaml", keypair[1])
    out = work / "netboot"
    kairos("netboot", str(default_image["output"]), "-o", str(out), "--cloud-config", str(cc))
    return out


def test_netboot_comes_up_live(netboot_dir: Path, boot_vm) -> None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    vm = boot_vm(None, netboot=netboot_dir, memory=max(2048, min_memory(netboot_dir)))
    print(f"\nnetboot (BIOS): SSH after {time.monotonic() - start:.0f}s")
    serial = vm.serial_text()
    assert "kairos-initrd: network up on" in serial, serial[-3000:]
    assert "kairos-initrd: error" not in serial
    # booted over the network: the kernel's root is the HTTP URL of the image on our server
    cmdline = vm.ssh("cat /proc/cmdline").stdout.split()
    roots = [a for a in cmdline if a.startswith("root=live:")]
    assert len(roots) == 1 and roots[0].startswith("root=live:http://10.0.2.2:"), cmdline
    assert roots[0].endswith(".squashfs") and "netboot" in cmdline
    # live mode, as from the ISO
    assert state(vm)["boot"] == "livecd_boot"
    assert vm.ssh("test -e /run/cos/live_mode && echo yes").stdout.strip() == "yes"
    assert vm.ssh("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert vm.ssh("findmnt -no FSTYPE /").stdout.strip() == "squashfs"
    # the downloaded image in RAM where the installer looks for the live medium's image
    assert vm.ssh("findmnt -no FSTYPE /run/initramfs/live").stdout.strip() == "tmpfs"
    size = int(vm.ssh("stat -c %s /run/initramfs/live/rootfs.squashfs").stdout)
    assert size == next(netboot_dir.glob("*.squashfs")).stat().st_size
    for path in ("/etc", "/var", "/usr/local"):
        assert vm.ssh(f"findmnt -no FSTYPE {path}").stdout.strip() == "overlay", path
    assert vm.ssh("findmnt -rno SOURCE").stdout.count("/dev/vd") == 0  # no disk at all
    # the config came over HTTP via config_url: its user (with the key we log in with), its
    # hostname; and nothing failed on the way
    assert "(admin)" in vm.ssh("id").stdout
    assert vm.ssh("hostname").stdout.strip() == "kairos-test"
    settled = vm.ssh("timeout 300 systemctl is-system-running --wait", check=False).stdout
    assert settled.strip() == "running", vm.ssh("systemctl --failed --no-legend --plain").stdout
    assert_no_failed_steps(vm)
