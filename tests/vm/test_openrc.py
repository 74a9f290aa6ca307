"""The OpenRC image (`kairos build --init openrc`: sysvinit + OpenRC, no systemd) boots under
BIOS with its cloud-config from a NoCloud `cidata` volume, and Kairos's stages run from
OpenRC services. One VM for the module, in order: first boot, then a reboot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.vm.machine import VM
from tests.helpers import cidata_vm, kairos, state
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm


def user_data(pubkey: str) -> str:
    return f"""#cloud-config
hostname: kairos-orc
users:
  - name: kairos
    groups: [admin]
    ssh_authorized_keys:
      - {pubkey}
stages:
  initramfs:
    - name: "reconcile soon, for the test (the default is 5 min after boot, then hourly)"
      files:
        - path: /etc/conf.d/cos-setup-reconcile
          content: |
            RECONCILE_DELAY=1
            RECONCILE_INTERVAL=10
  boot:
    - name: "boot stage"
      files:
        - path: /etc/kairos-orc/from-boot
          content: boot
      commands:
        - echo boot > /run/kairos-orc-boot
    - name: "a systemd step on OpenRC: warned about, not failed"
      systemctl:
        enable: [kairos-orc-nothing]
  network:
    - name: "network stage"
      commands:
        - ip route show default > /run/kairos-orc-network; ip -6 route show default >> /run/kairos-orc-network
  reconcile:
    - name: "reconcile stage"
      commands:
        - echo reconcile >> /run/kairos-orc-reconcile
"""


@pytest.fixture(scope="module")
def vm(keypair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    work = tmp_path_factory.mktemp("openrc-vm")
    image = work / "image"
    kairos("build", "--init", "openrc", "--output", str(image), "--json")  # cached steps
    # the network stage runs after every other service: give it its moment
    with cidata_vm(image, user_data(keypair[1].read_text().strip()), keypair, work,
                   wait_for="/run/kairos-orc-network", wait_s=180) as machine:
        yield machine


def test_ssh_login_as_the_cloud_config_user(vm: VM) -> None:
    assert "(admin)" in vm.ssh("id").stdout
    assert vm.ssh("hostname").stdout.strip() == "kairos-orc"


def test_sysvinit_and_openrc_without_systemd(vm: VM) -> None:
    assert vm.ssh("sudo -n readlink /proc/1/exe").stdout.strip().endswith("/sbin/init")
    assert vm.ssh("sudo -n test -d /run/openrc", check=False).returncode == 0
    assert vm.ssh("test -e /run/systemd/system", check=False).returncode != 0
    assert vm.ssh("command -v systemctl", check=False).returncode != 0
    # the loopback is up (systemd does it itself; here ifupdown's networking service)
    assert "127.0.0.1" in vm.ssh("ip -4 addr show lo").stdout


def test_root_is_read_only_without_remount_errors(vm: VM) -> None:
    assert vm.ssh("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert vm.ssh("sudo -n touch /kairos-probe", check=False).returncode != 0
    # Debian's checkroot.sh found a root entry in fstab and left / alone
    assert "/dev/root / auto ro 0 0" in vm.ssh("cat /etc/fstab").stdout
    assert "cannot remount" not in vm.serial_text()


def test_stages_ran_from_openrc_services(vm: VM) -> None:
    default = vm.ssh("sudo -n rc-status default").stdout
    for service in ("cos-setup-boot", "cos-setup-network", "cos-setup-reconcile",
                    "kairos-ssh-keygen", "ssh", "dhcpcd"):
        line = next((x for x in default.splitlines() if x.split()[:1] == [service]), "")
        assert "started" in line, f"{service}:\n{default}"
    boot_rl = vm.ssh("sudo -n rc-status boot").stdout
    assert "cos-setup-fs" in boot_rl and "started" in boot_rl
    assert vm.ssh("cat /run/kairos-orc-boot").stdout.strip() == "boot"
    assert vm.ssh("cat /etc/kairos-orc/from-boot").stdout.strip() == "boot"
    # the network stage ran once the network was up: a default route (IPv4 or IPv6, as
    # systemd's network-online) was there
    assert "default via" in vm.ssh("cat /run/kairos-orc-network").stdout
    # early-init ran fs; cos-setup-fs knew it
    assert "early-init" in vm.ssh("cat /run/kairos/skip-stage/fs").stdout
    serial = vm.serial_text()
    assert "Running the Kairos boot stage" in serial
    assert "this system runs OpenRC, not systemd" in serial  # the systemctl step's warning


def test_no_step_failed_and_the_systemctl_step_only_warned(vm: VM) -> None:
    assert_no_failed_steps(vm, expect=("rootfs", "initramfs", "fs", "boot", "network"))
    boot = json.loads(vm.ssh("cat /run/kairos/stages/boot.json").stdout)
    [step] = [r for r in boot["results"]
              if r["name"].endswith("a systemd step on OpenRC: warned about, not failed")]
    assert step["status"] == "ok", step


def test_reconcile_runs_periodically(vm: VM) -> None:
    vm.ssh("for i in $(seq 240); do [ \"$(grep -c reconcile /run/kairos-orc-reconcile "
           "2>/dev/null)\" -ge 2 ] && break; sleep 1; done")
    runs = vm.ssh("cat /run/kairos-orc-reconcile").stdout.split()
    assert runs.count("reconcile") >= 2, runs


def test_kairos_state_json(vm: VM) -> None:
    st = state(vm)
    assert st["boot"] == "active_boot"
    assert st["kairos"]["init"] == "openrc"  # type: ignore[index]
    assert st["persistent"]["mount_point"] == "/usr/local"  # type: ignore[index]
    assert vm.ssh("kairos state get kairos.init").stdout.strip() == "openrc"


def test_reboot_refreshes_kairos_services_and_keeps_the_users(vm: VM) -> None:
    """/etc/init.d and /etc/runlevels persist: Kairos's services come back from the image
    (as after an upgrade), a service the user added stays, and so do the SSH host keys."""
    vm.ssh("sudo -n sh -c 'echo \"# changed on the device\" >> /etc/init.d/cos-setup-boot; "
           "printf \"#!/sbin/openrc-run\\nstart() { echo mine > /run/kairos-orc-mine; }\\n\" "
           "> /etc/init.d/kairos-orc-mine; chmod 755 /etc/init.d/kairos-orc-mine; "
           "rc-update add kairos-orc-mine default'")
    key_before = vm.ssh_host_key_fingerprint()
    vm.reboot()
    assert "changed on the device" not in vm.ssh("cat /etc/init.d/cos-setup-boot").stdout
    assert vm.ssh("cat /run/kairos-orc-mine").stdout.strip() == "mine"
    assert vm.ssh_host_key_fingerprint() == key_before
    assert vm.ssh("cat /run/kairos-orc-boot").stdout.strip() == "boot"
    assert_no_failed_steps(vm)
