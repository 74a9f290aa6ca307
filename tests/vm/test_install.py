"""Installing from the live ISO (issue 10), each onto an empty disk, then the ISO removed and
the disk booted alone:

- unattended: a cidata volume with `install.auto: true`, `device: auto`, `reboot: true` and
  a user; the machine installs itself and reboots; the user logs in over SSH into an
  installed system (active_boot, passive and recovery slots, the install config in /oem);
- interactive: `kairos interactive-install` typed key by key in a terminal (tmux, ssh -tt)."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, kairos, state, write_cloud_config
from tests.tmux import Pane
from tests.vm.conftest import assert_no_failed_steps
from tests.vm.install_flow import (
    INSTALL_TIMEOUT,
    boot_installed,
    empty_disk,
    install_config,
    run_live_install,
)

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def plain_iso(default_image: dict[str, object],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ISO with no config of its own: everything comes from the cidata volume."""
    out = tmp_path_factory.mktemp("install-iso") / "kairos.iso"
    kairos("iso", str(default_image["output"]), "-o", str(out))
    return out


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


def test_interactive_install_typed_over_ssh_boots(plain_iso: Path, keypair: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """`kairos interactive-install` in the live system, in a real terminal (tmux running
    `ssh -tt`), answered key by key: the empty disk by default, a pasted SSH key, a typed
    hostname. Then the ISO is removed and the installed disk boots; the pasted key logs in."""
    target = empty_disk(tmp_path / "target.raw")
    live_config = write_cloud_config(tmp_path / "live.yaml", keypair[1])  # no install block
    pane = Pane(f"kairos-vm-{uuid.uuid4().hex[:8]}", tmp_path / "exit-code")
    vm = VM(VMConfig(disk=plain_iso, cpus=GUEST_CPUS, cloud_config=live_config,
                     extra_disks=(target,), ssh_key=keypair[0], ssh_user="kairos",
                     serial_log=tmp_path / "serial-live.log"))
    try:
        vm.start()
        vm.wait_for_ssh(BOOT_TIMEOUT)
        pane.start(["ssh", "-tt", "-i", str(keypair[0]), "-p", str(vm.ssh_port),
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR", "kairos@127.0.0.1", "sudo", "kairos",
                    "interactive-install"], tmp_path)
        screen = pane.wait_for("Disk to install to [/dev/vda]: ", timeout=180)
        # the one candidate: not the CD it booted from, not the read-only cidata volume
        assert "1) /dev/vda (" in screen and "2) /dev/" not in screen, screen
        pane.type("")
        pane.wait_for("User name [kairos]: ")
        pane.type("")
        pane.wait_for("Login [1]: ")
        pane.type("2")
        pane.wait_for("SSH public key (the line of your .pub file): ")
        pane.type(keypair[1].read_text().strip())
        pane.wait_for("Hostname [")
        pane.type("typed-node")
        plan = pane.wait_for("Erase /dev/vda and install? [y/N]: ", timeout=180)
        assert "hostname: typed-node" in plan, plan
        pane.type("y")
        assert pane.exit_code(INSTALL_TIMEOUT) == 0, pane.screen()
        assert "Installed on /dev/vda" in pane.screen()
        vm.poweroff(timeout=300)
    finally:
        with contextlib.suppress(Exception):
            pane.tmux("kill-server")
        vm.close()
    with boot_installed(target, keypair[0], tmp_path) as (installed, _to_ssh):
        assert installed.ssh("hostname").stdout.strip() == "typed-node"
        assert state(installed)["boot"] == "active_boot"
        assert "(admin)" in installed.ssh("id").stdout
