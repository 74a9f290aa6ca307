"""Issue 3: one cloud-config delivered through a NoCloud `cidata` volume is fully applied on
the first boot, across several stages, and `kairos config show` prints it with its sources.
One of its steps fails on purpose: the boot goes on, and `kairos state` shows the failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.vm.machine import VM
from tests.helpers import cidata_vm, state
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm

UNIT = """[Unit]
            Description=hello from cloud-config
            [Service]
            Type=oneshot
            RemainAfterExit=yes
            ExecStart=/bin/sh -c 'echo hello > /run/kairos-cc-hello'
            [Install]
            WantedBy=multi-user.target"""


def user_data(pubkey: str) -> str:
    return f"""#cloud-config
hostname: kairos-cc
users:
  - name: kairos
    groups: [admin]
    ssh_authorized_keys:
      - {pubkey}
write_files:
  - path: /etc/kairos-cc/from-write-files
    content: written
    permissions: "0640"
stages:
  initramfs:
    - name: "sysctl and a file"
      sysctl:
        vm.swappiness: "13"
      files:
        - path: /etc/kairos-cc/from-initramfs
          content: initramfs
          permissions: 0600
  fs:
    - name: "fs marker"
      commands:
        - echo fs > /run/kairos-cc-fs
  boot:
    - name: "a systemd unit"
      files:
        - path: /etc/systemd/system/kairos-cc-hello.service
          content: |
            {UNIT}
      systemctl:
        enable: [kairos-cc-hello]
        start: [kairos-cc-hello]
      commands:
        - echo boot > /run/kairos-cc-boot
    - name: "a deliberately failing step"
      commands:
        - "false"
    - name: "after the failure"
      commands:
        - echo after > /run/kairos-cc-after-failure
  network:
    - name: "network marker"
      commands:
        - echo network > /run/kairos-cc-network
"""


@pytest.fixture(scope="module")
def vm(default_image: dict[str, object], keypair: tuple[Path, Path],
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    work = tmp_path_factory.mktemp("cidata")
    with cidata_vm(Path(str(default_image["output"])), user_data(keypair[1].read_text().strip()),
                   keypair, work, wait_for="/run/kairos-cc-network") as machine:
        yield machine


def test_user_and_key_from_cidata(vm: VM) -> None:
    assert "(admin)" in vm.ssh("id").stdout
    assert vm.ssh("hostname").stdout.strip() == "kairos-cc"


def test_every_stage_ran_on_first_boot(vm: VM) -> None:
    for stage in ("fs", "boot", "network"):
        assert vm.ssh(f"cat /run/kairos-cc-{stage}").stdout.strip() == stage
    # the fs stage ran in early-init, once, and its unit knew
    assert "early-init" in vm.ssh("cat /run/kairos/skip-stage/fs").stdout
    assert vm.ssh("cat /proc/sys/vm/swappiness").stdout.strip() == "13"
    assert vm.ssh("sudo -n cat /etc/kairos-cc/from-initramfs").stdout.strip() == "initramfs"
    assert vm.ssh("sudo -n stat -c %a /etc/kairos-cc/from-initramfs").stdout.strip() == "600"
    assert vm.ssh("sudo -n cat /etc/kairos-cc/from-write-files").stdout.strip() == "written"
    assert vm.ssh("systemctl is-active kairos-cc-hello").stdout.strip() == "active"
    assert vm.ssh("systemctl is-enabled kairos-cc-hello").stdout.strip() == "enabled"
    assert vm.ssh("cat /run/kairos-cc-hello").stdout.strip() == "hello"


def test_a_failing_step_is_shown_and_the_boot_goes_on(vm: VM) -> None:
    stages = assert_no_failed_steps(vm, failures={"boot": ["a deliberately failing step"]},
                                    expect=("rootfs", "initramfs", "fs", "boot", "network"))
    [line] = stages["boot"]["failures"]
    assert line.startswith("/oem/95_userdata") and "(boot) failed: commands: " in line, line
    assert stages["boot"]["ok"] is False and stages["network"]["ok"] is True
    # the steps after it and the later stages ran; the unit did not fail
    assert vm.ssh("cat /run/kairos-cc-after-failure").stdout.strip() == "after"
    assert vm.ssh("systemctl is-failed cos-setup-boot", check=False).stdout.strip() == "active"
    assert vm.ssh("systemctl --failed --no-legend --plain").stdout.strip() == ""
    assert state(vm)["stages"]["boot"]["failed"] == 1  # type: ignore[index]


def test_config_show_prints_it_with_sources(vm: VM) -> None:
    out = vm.ssh("sudo -n kairos config show").stdout
    assert "kairos-cc" in out
    assert "/oem/95_userdata" in out
    got = vm.ssh("sudo -n kairos config get hostname").stdout.strip()
    assert got == "kairos-cc"
