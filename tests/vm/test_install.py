"""Unattended installs from live media (issue 10), each onto a blank disk: the ISO with a
cidata volume, and netboot with the same config via config_url, saying `install.auto: true`,
`device: auto`, `reboot: true` and a user. The machine installs itself and reboots; the
medium is removed and the disk boots alone; the user logs in over SSH into an installed
system (active_boot, passive and recovery slots, the install config in /oem). The
interactive installer's VM test is test_install_interactive.py (the other VM share)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import kairos, state
from tests.vm.conftest import assert_no_failed_steps
from tests.vm.install_flow import (
    boot_installed,
    empty_disk,
    install_config,
    run_live_install,
)

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def netboot_install_dir(default_image: dict[str, object], keypair: tuple[Path, Path],
                        tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kairos netboot` with the same unattended-install config (fetched via config_url)."""
    work = tmp_path_factory.mktemp("install-netboot")
    config = install_config(work / "install.yaml", keypair[1])
    out = work / "netboot"
    kairos("netboot", str(default_image["output"]), "-o", str(out), "--cloud-config",
           str(config))
    return out


def test_iso_installs_itself_onto_the_empty_disk(plain_iso: Path, keypair: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    target = empty_disk(tmp_path / "target.raw")
    user_data = install_config(tmp_path / "user-data.yaml", keypair[1])
    live = run_live_install(plain_iso, target, user_data, tmp_path)
    check_installed(target, keypair, tmp_path, f"ISO: live boot to reboot {live:.0f}s")


def test_netboot_installs_itself_onto_the_empty_disk(netboot_install_dir: Path,
                                                     keypair: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    """The same config through netboot: PXE from the NIC (the blank disk has nothing to
    boot), the image over HTTP from 127.0.0.1, no disk image prepared beforehand."""
    target = empty_disk(tmp_path / "target.raw")
    live = run_live_install(netboot_install_dir, target, None, tmp_path)
    check_installed(target, keypair, tmp_path, f"netboot: live boot to reboot {live:.0f}s")


def check_installed(target: Path, keypair: tuple[Path, Path], tmp_path: Path,
                    timing: str) -> None:
    """The disk alone boots the installed system and the config's user logs in."""
    with boot_installed(target, keypair[0], tmp_path) as (vm, to_ssh):
        print(f"\nunattended install ({timing}, installed disk to SSH {to_ssh:.0f}s)")
        st: dict[str, Any] = state(vm)
        assert st["boot"] == "active_boot"
        images = st["images"]
        for slot in ("active", "passive", "recovery"):
            assert images.get(slot), f"no {slot} slot image after the install: {images}"
        assert vm.ssh("test -e /run/cos/live_mode", check=False).returncode != 0
        # the install config, with the user and the install block, is the system's now
        oem = vm.ssh("sudo cat /oem/*.yaml").stdout
        assert "install:" in oem and "kairos-test" in oem
        assert vm.ssh("hostname").stdout.strip() == "kairos-test"
        assert "(admin)" in vm.ssh("id").stdout
        # the labels an installed system has, all on the disk it was installed to
        labels = vm.ssh("lsblk -rno LABEL /dev/vda").stdout.split()
        for label in ("COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT"):
            assert label in labels, labels
        assert_no_failed_steps(vm)
