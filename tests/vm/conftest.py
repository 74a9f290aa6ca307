"""VM fixtures: a disk made by `kairos disk` from the default image, booted in QEMU (TCG)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.keys import ensure_keypair
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, kairos, write_cloud_config


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def disk_image(default_image: dict[str, object], keypair: tuple[Path, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw disk with the test user's key in /oem/90_custom.yaml."""
    work = tmp_path_factory.mktemp("disk")
    cc = write_cloud_config(work / "cloud-config.yaml", keypair[1])
    out = work / "disk.raw"
    kairos("disk", str(default_image["output"]), "--output", str(out), "--cloud-config", str(cc),
           "--json")
    return out


@pytest.fixture
def boot_vm(keypair: tuple[Path, Path], tmp_path: Path) -> Iterator[object]:
    """A factory: boot_vm(disk, uefi=False) → a started VM, stopped at the end of the test."""
    started: list[VM] = []

    def start(disk: Path, *, uefi: bool = False, **kwargs: object) -> VM:
        cfg = VMConfig(disk=disk, uefi=uefi, ssh_key=keypair[0], ssh_user="kairos",
                       serial_log=tmp_path / f"serial-{len(started)}.log", **kwargs)  # type: ignore[arg-type]
        vm = VM(cfg).start()
        started.append(vm)
        vm.wait_for_ssh(BOOT_TIMEOUT)
        return vm

    yield start
    for vm in started:
        vm.close()

