"""VM fixtures: a disk made by `kairos disk` from the default image, booted in QEMU (TCG)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.keys import ensure_keypair
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, kairos, state, write_cloud_config


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def disk_image(default_image: dict[str, object], keypair: tuple[Path, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw disk with the test user's key in /oem/90_custom.yaml."""
    return _disk_with_key(default_image, keypair, tmp_path_factory.mktemp("disk"))


def _disk_with_key(image: dict[str, object], keypair: tuple[Path, Path], work: Path) -> Path:
    """`kairos disk` of `image` with the test user's key in /oem/90_custom.yaml."""
    cc = write_cloud_config(work / "cloud-config.yaml", keypair[1])
    out = work / "disk.raw"
    kairos("disk", str(image["output"]), "--output", str(out), "--cloud-config", str(cc),
           "--json")
    return out


@pytest.fixture
def boot_vm(keypair: tuple[Path, Path], tmp_path: Path) -> Iterator[object]:
    """A factory: boot_vm(disk, uefi=False) → a started VM, stopped at the end of the test."""
    started: list[VM] = []

    def start(disk: Path, *, uefi: bool = False, cpus: int = GUEST_CPUS, **kwargs: object) -> VM:
        cfg = VMConfig(disk=disk, uefi=uefi, ssh_key=keypair[0], ssh_user="kairos",
                       cpus=cpus, reboot="restart",
                       serial_log=tmp_path / f"serial-{len(started)}.log", **kwargs)  # type: ignore[arg-type]
        vm = VM(cfg).start()
        started.append(vm)
        vm.wait_for_ssh(BOOT_TIMEOUT)
        return vm

    yield start
    for vm in started:
        vm.close()



BOOT_STAGES = ("rootfs", "initramfs", "fs", "boot")  # recorded by the time SSH answers


def assert_no_failed_steps(vm: VM, *, failures: Mapping[str, Sequence[str]] | None = None,
                           expect: Sequence[str] = BOOT_STAGES,
                           wait_s: float = 60.0) -> dict[str, Any]:
    """This boot's stage reports (`kairos state --json`, key `stages`) show no failed step,
    except exactly the ones in `failures`: per stage, one substring per failure line, in
    order. Every stage in `expect` must have a report (waits up to `wait_s` for them).
    A unit that exits 0 says nothing about its steps; this does. Returns the stages."""
    wanted = dict(failures or {})
    deadline = time.monotonic() + wait_s
    while True:
        stages: dict[str, Any] = state(vm)["stages"]  # type: ignore[assignment]
        missing = [s for s in (*expect, *wanted) if s not in stages]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, f"no report of stage(s) {missing} this boot; got {sorted(stages)}"
    for name, summary in stages.items():
        lines: list[str] = summary["failures"]
        expected = list(wanted.get(name, ()))
        assert len(lines) == len(expected) == summary["failed"], (
            f"stage {name}: {summary['failed']} failed step(s), expected {len(expected)}:\n"
            + "\n".join(lines))
        for line, part in zip(lines, expected, strict=True):
            assert part in line, f"stage {name}: {line!r} is not the failure {part!r}"
    return stages


@pytest.fixture(scope="session")
def plain_iso(default_image: dict[str, object],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ISO with no config of its own: everything comes from the cidata volume."""
    out = tmp_path_factory.mktemp("install-iso") / "kairos.iso"
    kairos("iso", str(default_image["output"]), "-o", str(out))
    return out


# ------------------------------------------------------------------------------ upgrades

@pytest.fixture(scope="session")
def v1_image(default_image: dict[str, object],
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The default image trimmed for upgrade tests (tests/vm/upgrade_images.py), built after
    the default image so both share its base."""
    from tests.vm.upgrade_images import build_v1
    return build_v1(tmp_path_factory.mktemp("image-v1") / "image")


@pytest.fixture(scope="session")
def v2_image(v1_image: dict[str, object],
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """v1 with exactly one file different (`/etc/kairos-release`: version 0.2.0), built on
    a step cache of its own seeded with the shared base, so its prunes never evict v1's
    steps (tests/vm/upgrade_images.py)."""
    from tests.vm.upgrade_images import build_v2
    return build_v2(tmp_path_factory.mktemp("image-v2") / "image")


@pytest.fixture(scope="session")
def v1_disk(v1_image: dict[str, object], keypair: tuple[Path, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw disk of v1 with the test user's key; upgrade tests boot qcow2 overlays on it."""
    return _disk_with_key(v1_image, keypair, tmp_path_factory.mktemp("disk-v1"))
