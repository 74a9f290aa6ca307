"""Kernel command-line keys early boot honours (immucore's names and their rd.cos aliases),
booted directly with the image's own kernel and initrd so the command line is ours to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, copy_disk
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm

CMDLINE = ("root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img console=ttyS0,115200 panic=5 "
           "rd.immucore.debugrw rd.cos.overlay=tmpfs:10% "
           "rd.immucore.mount=LABEL=COS_RECOVERY:/run/kairos-test-recovery")


def test_debugrw_overlay_size_and_extra_mount(default_image: dict[str, object], disk_image: Path,
                                              keypair: tuple[Path, Path], tmp_path: Path) -> None:
    out = Path(str(default_image["output"]))
    disk = copy_disk(disk_image, tmp_path / "disk.raw")
    extra = ("-kernel", str(out / "vmlinuz"), "-initrd", str(out / "initrd"), "-append", CMDLINE)
    with VM(VMConfig(disk=disk, ssh_key=keypair[0], ssh_user="kairos", extra_args=extra,
                     cpus=GUEST_CPUS, serial_log=tmp_path / "serial.log",
                     reboot="restart")) as vm:
        vm.wait_for_ssh(BOOT_TIMEOUT)
        # rd.immucore.debugrw: the root takes writes (in RAM, gone at reboot)
        vm.ssh("sudo -n touch /usr/kairos-debugrw")
        assert vm.ssh("findmnt -no OPTIONS /").stdout.split(",")[0] == "rw"
        # rd.cos.overlay=tmpfs:10%: the overlay base is a tmpfs of a tenth of RAM
        size_kb = int(vm.ssh("df -k --output=size /run/overlay | tail -1").stdout)
        mem_kb = int(vm.ssh("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout)
        assert 0.07 * mem_kb < size_kb < 0.13 * mem_kb, (size_kb, mem_kb)
        # rd.immucore.mount=LABEL=X:/path: an extra volume, read-only as immucore mounts it
        opts = vm.ssh("findmnt -no OPTIONS /run/kairos-test-recovery").stdout
        assert opts.split(",")[0] == "ro"
        assert vm.ssh("test -f /run/kairos-test-recovery/cOS/recovery.squashfs",
                      check=False).returncode == 0
        assert_no_failed_steps(vm)
