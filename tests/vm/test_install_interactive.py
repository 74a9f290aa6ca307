"""`kairos interactive-install` in the live system (issue 10), in a real terminal (tmux
running `ssh -tt`), answered key by key; the ISO is then removed and the disk it wrote boots
alone. In the other VM share from test_install.py, which holds the unattended installs."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, state, write_cloud_config
from tests.tmux import Pane
from tests.vm.install_flow import INSTALL_TIMEOUT, boot_installed, empty_disk

pytestmark = pytest.mark.vm


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
                     serial_log=tmp_path / "serial-live.log", reboot="restart"))
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
