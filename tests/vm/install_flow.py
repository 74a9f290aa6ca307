"""The unattended install, as a user runs it: a live medium (the ISO on a CD, or netboot)
plus an empty disk plus a config (a NoCloud `cidata` volume, or netboot's config_url) that
says `install.auto: true`, `device: auto`, `reboot: true` and a user. The machine installs
itself and reboots; QEMU runs with `-no-reboot`, so that reboot ends it, and the medium is
then removed (the machine restarted from the disk alone), as a person pulls the USB stick.
Shared by tests/vm/test_install.py and benchmarks/bench_install.py (which times the same
path)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kairos.errors import KairosError
from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from kairos.vm.netboot import min_memory
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, write_cloud_config

INSTALL_TIMEOUT = 2400.0  # live boot + three slot images written under TCG on a loaded host
TARGET_SIZE = 8 << 30
AUTO_INSTALL = """install:
  auto: true
  device: auto
  reboot: true
"""
# What the installer prints on the console when it gives up (one line, see cli/__init__).
_FAILED = re.compile(r"kairos: (?:error|internal error): |Failed to start .*[Ii]nstall")


@dataclass
class Timings:
    live_to_reboot: float = 0.0  # power-on of the live medium until its reboot ends QEMU
    disk_to_ssh: float = 0.0  # power-on from the installed disk until SSH answers

    @property
    def total(self) -> float:
        return self.live_to_reboot + self.disk_to_ssh


def empty_disk(path: Path, size: int = TARGET_SIZE) -> Path:
    """A sparse raw disk with nothing on it: `device: auto` must pick it."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def install_config(path: Path, pubkey: Path) -> Path:
    """The cidata user-data: the test user with the key, and the unattended install."""
    return write_cloud_config(path, pubkey, AUTO_INSTALL)


def run_live_install(medium: Path, target: Path, user_data: Path | None, work: Path, *,
                     uefi: bool = False, timeout: float = INSTALL_TIMEOUT) -> float:
    """Boot `medium` (an ISO, or a `kairos netboot` directory: booted through the NIC, its
    config fetched from config_url) with `target` and the cidata volume (if any); wait until
    the installed system's reboot ends QEMU. Returns the seconds it took. KairosError (with
    the console's tail) when the installer reports a failure or QEMU outlives `timeout`."""
    log = work / "serial-live.log"
    if medium.is_dir():
        # the empty target is the first boot device: firmware finds nothing on it and goes
        # on to the NIC, as on a blank machine
        config = VMConfig(disk=target, netboot=medium, uefi=uefi, cpus=GUEST_CPUS,
                          memory=max(2048, min_memory(medium)), cloud_config=user_data,
                          reboot="exit", serial_log=log)
    else:
        config = VMConfig(disk=medium, uefi=uefi, cpus=GUEST_CPUS, cloud_config=user_data,
                          extra_disks=(target,), reboot="exit", serial_log=log)
    vm = VM(config)
    start = time.monotonic()
    vm.start()
    try:
        while vm.running:
            text = vm.serial_text()
            if _FAILED.search(text):
                raise KairosError("the unattended install failed:\n" + text[-4000:], "")
            if time.monotonic() - start > timeout:
                raise KairosError(f"no reboot within {timeout:.0f}s of power-on:\n"
                                  + text[-4000:], "")
            time.sleep(2)
        return time.monotonic() - start
    finally:
        vm.close()


@contextmanager
def boot_installed(target: Path, key: Path, work: Path, *,
                   uefi: bool = False) -> Iterator[tuple[VM, float]]:
    """The installed disk alone (the medium removed), booted until SSH answers as the
    cloud-config's user; yields the VM and the seconds from power-on to SSH."""
    vm = VM(VMConfig(disk=target, uefi=uefi, cpus=GUEST_CPUS, ssh_key=key, ssh_user="kairos",
                     serial_log=work / "serial-installed.log", reboot="restart"))
    start = time.monotonic()
    vm.start()
    try:
        vm.wait_for_ssh(BOOT_TIMEOUT)
        yield vm, time.monotonic() - start
    finally:
        vm.close()
