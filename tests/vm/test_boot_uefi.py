"""The same disk boots under UEFI (OVMF): GRUB's EFI image on the COS_GRUB ESP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import copy_disk, state
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm


def test_uefi_boot_to_active(disk_image: Path, boot_vm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vm = boot_vm(copy_disk(disk_image, tmp_path / "disk.raw"), uefi=True)
    assert vm.ssh("test -d /sys/firmware/efi", check=False).returncode == 0, "booted via UEFI"
    assert vm.ssh("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert state(vm)["boot"] == "active_boot"
    assert "(admin)" in vm.ssh("id").stdout
    assert vm.ssh("systemctl --failed --no-legend --plain").stdout.strip() == ""
    assert_no_failed_steps(vm)
    vm.ssh("echo kept > ~/uefi-kept")
    key_before = vm.ssh_host_key_fingerprint()
    vm.reboot()
    assert vm.ssh("cat ~/uefi-kept").stdout.strip() == "kept"
    assert vm.ssh_host_key_fingerprint() == key_before
    assert_no_failed_steps(vm)
