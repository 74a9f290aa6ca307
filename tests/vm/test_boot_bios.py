"""Boot the default image from a disk under BIOS and check what a Kairos user relies on.

One VM for the module, driven through its life in order: first boot, reboot with
persistence, then one-shot selections of the fallback and recovery entries. Every boot's
stage reports are checked: no step failed unless the test meant it to.

Riding on those reboots, an attack: a second user (`mallory`, added by a config in /oem
before the first reboot) replaces their ~/.ssh/authorized_keys with a symlink to /etc/shadow;
the next boot's users step must refuse it (a recorded failure), not write the key there.

Also riding on them, Kairos's custom mounts: a config in /oem (as `kairos install` leaves the
install config there) names `install.bind_mounts` and `install.ephemeral_mounts` before the
first reboot; that boot mounts them (and logs the one bad entry), files are written in both,
and after the next reboot only the one under the bind path is still there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, copy_disk, state
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm

MALLORY_CONFIG = """#cloud-config
users:
  - name: mallory
    ssh_authorized_keys:
      - {pubkey}
"""
SHADOW_STAT = "sudo -n stat -c '%U:%G %a' /etc/shadow"
# An ephemeral path inside a persistent one (/opt) and a persistent one inside an ephemeral
# one (/srv): neither is in the image, both are made in the writable layer at boot.
KEEP, SCRATCH = "/srv/kairos-keep", "/opt/kairos-scratch"
written: list[str] = []  # the custom mounts' files were written (before the passive boot)
CUSTOM_MOUNTS_CONFIG = f"""#cloud-config
install:
  bind_mounts:
    - {KEEP}
    - /proc/kairos-bad
  ephemeral_mounts:
    - {SCRATCH}/
"""
# what the attack test saw before the reboot that should have refused mallory's link
seen: dict[str, str] = {}


@pytest.fixture(scope="module")
def vm(disk_image: Path, keypair: tuple[Path, Path],
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    work = tmp_path_factory.mktemp("bios")
    disk = copy_disk(disk_image, work / "disk.raw")
    machine = VM(VMConfig(disk=disk, ssh_key=keypair[0], ssh_user="kairos",
                          cpus=GUEST_CPUS, serial_log=work / "serial.log",
                          reboot="restart")).start()
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
    assert re.search(r"\bkairos\.boot_id=[0-9a-f]{32}\b", vm.ssh("cat /proc/cmdline").stdout)
    assert vm.ssh("findmnt -no FSTYPE /tmp").stdout.strip() == "tmpfs"
    vm.ssh("touch /tmp/kairos-probe")


def test_no_unit_failed(vm: VM) -> None:
    failed = vm.ssh("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units:\n{failed}"


def test_no_stage_step_failed(vm: VM) -> None:
    stages = assert_no_failed_steps(vm)
    assert stages["boot"]["run"] >= 1, "the cloud-config's users step ran in the boot stage"


def test_state_reports_active_boot(vm: VM) -> None:
    st = state(vm)
    assert st["boot"] == "active_boot"
    # Kairos's layout of `state`: one block per partition at the top level
    assert st["persistent"]["mount_point"] == "/usr/local"  # type: ignore[index]
    assert st["oem"]["mount_point"] == "/oem"  # type: ignore[index]
    assert st["state"]["read_only"] is True  # type: ignore[index]
    assert st["state"]["mount_point"] == "/run/initramfs/cos-state"  # type: ignore[index]
    assert vm.ssh("kairos state get boot").stdout.strip() == "active_boot"


def test_reboot_keeps_persistent_paths_and_drops_etc(vm: VM, keypair: tuple[Path, Path]) -> None:
    vm.ssh("sudo -n sh -c 'echo gone > /etc/kairos-ephemeral; echo kept > /usr/local/kairos-kept'")
    # a second account for the attack check below, created by the next boot
    vm.ssh("sudo -n tee /oem/95_mallory.yaml >/dev/null",
           input=MALLORY_CONFIG.format(pubkey=keypair[1].read_text().strip()))
    vm.ssh("echo kept > ~/kairos-kept")
    vm.ssh("sudo -n tee /oem/96_custom_mounts.yaml >/dev/null", input=CUSTOM_MOUNTS_CONFIG)
    key_before = vm.ssh_host_key_fingerprint()
    mid_before = vm.ssh("cat /etc/machine-id").stdout.strip()
    vm.reboot()
    assert vm.ssh("test -e /etc/kairos-ephemeral", check=False).returncode != 0
    assert vm.ssh("cat /usr/local/kairos-kept").stdout.strip() == "kept"
    assert vm.ssh("cat ~/kairos-kept").stdout.strip() == "kept"
    assert vm.ssh_host_key_fingerprint() == key_before
    assert vm.ssh("cat /etc/machine-id").stdout.strip() == mid_before
    assert state(vm)["boot"] == "active_boot"
    assert_no_failed_steps(vm)


def test_custom_mounts_from_oem_are_mounted(vm: VM) -> None:
    """The boot after /oem/96_custom_mounts.yaml: the bind from COS_PERSISTENT, the overlay,
    and one line in early-init's log for the entry it refused."""
    assert vm.ssh(f"findmnt -no FSTYPE {KEEP}").stdout.strip() == "ext4"
    assert vm.ssh(f"findmnt -no FSTYPE {SCRATCH}").stdout.strip() == "overlay"
    log = vm.ssh("sudo -n cat /run/kairos/early-init.log").stdout
    bad = [line for line in log.splitlines() if "/proc/kairos-bad" in line]
    assert bad == ["kairos-early: install.bind_mounts entry /proc/kairos-bad skipped: it is "
                   "under /proc, which the boot owns"], bad
    vm.ssh(f"sudo -n sh -c 'echo kept > {KEEP}/f; echo gone > {SCRATCH}/f'")
    written.append(SCRATCH)


def test_a_user_plants_a_link_at_authorized_keys(vm: VM, keypair: tuple[Path, Path]) -> None:
    assert vm.ssh("id -un", user="mallory").stdout.strip() == "mallory"  # the key works
    vm.ssh("sudo -n -u mallory sh -c 'cd ~/.ssh && rm -f authorized_keys && "
           "ln -s /etc/shadow authorized_keys'")
    assert vm.ssh("sudo -n readlink ~mallory/.ssh/authorized_keys").stdout.strip() == "/etc/shadow"
    seen["shadow"] = vm.ssh(SHADOW_STAT).stdout.strip()
    assert seen["shadow"].startswith("root:"), seen
    assert keypair[1].read_text().split()[1] not in vm.ssh("sudo -n cat /etc/shadow").stdout


def test_fallback_entry_boots_the_passive_slot(vm: VM) -> None:
    vm.ssh("sudo -n kairos bootentry --select fallback")
    vm.reboot()
    assert "COS_PASSIVE" in vm.ssh("cat /proc/cmdline").stdout
    assert state(vm)["boot"] == "passive_boot"
    assert vm.ssh("test -e /run/cos/passive_mode", check=False).returncode == 0


def test_custom_mounts_after_a_reboot(vm: VM) -> None:
    """The passive boot above: what was written under the bind path is still there, what
    was written under the ephemeral path is gone, and both are mounted again."""
    assert written, "needs test_custom_mounts_from_oem_are_mounted"
    assert vm.ssh(f"cat {KEEP}/f").stdout.strip() == "kept"
    assert vm.ssh(f"test -e {SCRATCH}/f", check=False).returncode != 0
    assert vm.ssh(f"findmnt -no FSTYPE {SCRATCH}").stdout.strip() == "overlay"
    assert vm.ssh(f"findmnt -no FSTYPE {KEEP}").stdout.strip() == "ext4"


def test_the_planted_link_was_refused_not_followed(vm: VM, keypair: tuple[Path, Path]) -> None:
    """The boot after the planting (the passive one above) ran the users step as root."""
    assert seen, "needs test_a_user_plants_a_link_at_authorized_keys"
    shadow = vm.ssh("sudo -n cat /etc/shadow").stdout
    assert keypair[1].read_text().split()[1] not in shadow
    assert "ssh-" not in shadow
    assert vm.ssh(SHADOW_STAT).stdout.strip() == seen["shadow"]
    assert vm.ssh("sudo -n readlink ~mallory/.ssh/authorized_keys").stdout.strip() == "/etc/shadow"
    # refused, and visible: the boot stage's report has exactly this failure
    assert_no_failed_steps(vm, failures={"boot": ["mallory"]})
    assert "(admin)" in vm.ssh("id").stdout  # the other user's keys were still written
    vm.ssh("sudo -n rm ~mallory/.ssh/authorized_keys")  # later boots are clean again


def test_next_entry_is_one_shot(vm: VM) -> None:
    vm.reboot()
    assert state(vm)["boot"] == "active_boot"
    assert_no_failed_steps(vm)
    assert vm.ssh("id -un", user="mallory").stdout.strip() == "mallory"  # keys written again


def test_recovery_entry_boots_recovery(vm: VM) -> None:
    vm.ssh("sudo -n kairos bootentry --select recovery")
    vm.reboot()
    assert "COS_SYSTEM" in vm.ssh("cat /proc/cmdline").stdout
    assert state(vm)["boot"] == "recovery_boot"
    # recovery keeps nothing persistent: /usr/local is not the persistent partition
    assert vm.ssh("test -e /usr/local/kairos-kept", check=False).returncode != 0
    assert_no_failed_steps(vm)
