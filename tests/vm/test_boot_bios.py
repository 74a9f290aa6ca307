"""Boot the default image from a disk under BIOS and check what a Kairos user relies on.

One VM for the module, driven through its life in order: first boot, reboot with
persistence, then one-shot selections of the fallback and recovery entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, copy_disk, state

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def vm(disk_image: Path, keypair: tuple[Path, Path],
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    work = tmp_path_factory.mktemp("bios")
    disk = copy_disk(disk_image, work / "disk.raw")
    machine = VM(VMConfig(disk=disk, ssh_key=keypair[0], ssh_user="kairos",
                          serial_log=work / "serial.log")).start()
    try:
        machine.wait_for_ssh(BOOT_TIMEOUT)
        yield machine
    finally:
        machine.close()


def test_cloud_config_user_is_admin_and_key_only(vm: VM) -> None:
    ident = vm.ssh("id").stdout
    assert "(admin)" in ident
    shadow = vm.ssh("sudo -n getent shadow kairos").stdout.split(":")
    assert shadow[1].startswith(("!", "*")), "no usable password: key-only"
    assert vm.ssh("hostname").stdout.strip() == "kairos-test"


def test_root_is_read_only_and_etc_var_are_overlays(vm: VM) -> None:
    opts = vm.ssh("findmnt -no OPTIONS /").stdout
    assert opts.split(",")[0] == "ro"
    assert vm.ssh("sudo -n touch /kairos-probe", check=False).returncode != 0
    for path in ("/etc", "/var", "/srv"):
        assert vm.ssh(f"findmnt -no FSTYPE {path}").stdout.strip() == "overlay", path
    assert vm.ssh("findmnt -no FSTYPE /usr/local").stdout.strip() == "ext4"
    assert "rw" in vm.ssh("findmnt -no OPTIONS /oem").stdout.split(",")
    assert "ro" in vm.ssh("findmnt -no OPTIONS /run/initramfs/cos-state").stdout.split(",")
    assert vm.ssh("test -e /run/cos/active_mode", check=False).returncode == 0
    assert vm.ssh("findmnt -no FSTYPE /tmp").stdout.strip() == "tmpfs"
    vm.ssh("touch /tmp/kairos-probe")


def test_no_unit_failed(vm: VM) -> None:
    failed = vm.ssh("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units:\n{failed}"


def test_state_reports_active_boot(vm: VM) -> None:
    st = state(vm)
    assert st["boot"] == "active_boot"
    # Kairos's layout of `state`: one block per partition at the top level
    assert st["persistent"]["mount_point"] == "/usr/local"  # type: ignore[index]
    assert st["oem"]["mount_point"] == "/oem"  # type: ignore[index]
    assert st["state"]["read_only"] is True  # type: ignore[index]
    assert st["state"]["mount_point"] == "/run/initramfs/cos-state"  # type: ignore[index]
    assert vm.ssh("kairos state get boot").stdout.strip() == "active_boot"


def test_reboot_keeps_persistent_paths_and_drops_etc(vm: VM) -> None:
    vm.ssh("sudo -n sh -c 'echo gone > /etc/kairos-ephemeral; echo kept > /usr/local/kairos-kept'")
    vm.ssh("echo kept > ~/kairos-kept")
    key_before = vm.ssh_host_key_fingerprint()
    mid_before = vm.ssh("cat /etc/machine-id").stdout.strip()
    vm.reboot()
    assert vm.ssh("test -e /etc/kairos-ephemeral", check=False).returncode != 0
    assert vm.ssh("cat /usr/local/kairos-kept").stdout.strip() == "kept"
    assert vm.ssh("cat ~/kairos-kept").stdout.strip() == "kept"
    assert vm.ssh_host_key_fingerprint() == key_before
    assert vm.ssh("cat /etc/machine-id").stdout.strip() == mid_before
    assert state(vm)["boot"] == "active_boot"


def test_fallback_entry_boots_the_passive_slot(vm: VM) -> None:
    vm.ssh("sudo -n kairos bootentry --select fallback")
    vm.reboot()
    assert "COS_PASSIVE" in vm.ssh("cat /proc/cmdline").stdout
    assert state(vm)["boot"] == "passive_boot"
    assert vm.ssh("test -e /run/cos/passive_mode", check=False).returncode == 0


def test_next_entry_is_one_shot(vm: VM) -> None:
    vm.reboot()
    assert state(vm)["boot"] == "active_boot"


def test_recovery_entry_boots_recovery(vm: VM) -> None:
    vm.ssh("sudo -n kairos bootentry --select recovery")
    vm.reboot()
    assert "COS_SYSTEM" in vm.ssh("cat /proc/cmdline").stdout
    assert state(vm)["boot"] == "recovery_boot"
    # recovery keeps nothing persistent: /usr/local is not the persistent partition
    assert vm.ssh("test -e /usr/local/kairos-kept", check=False).returncode != 0
