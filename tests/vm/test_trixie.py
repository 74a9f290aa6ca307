"""`--base debian:trixie`: Debian 13 bootstrapped from the host's mirror, built, and booted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import kairos, state, write_cloud_config
from tests.vm.conftest import assert_no_failed_steps

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def trixie_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("trixie") / "image"
    result: dict[str, object] = json.loads(
        kairos("build", "--base", "debian:trixie", "--no-oci", "--output", str(out), "--json").stdout)
    return result


def test_trixie_release_file_names_debian_13(trixie_image: dict[str, object]) -> None:
    release = (Path(str(trixie_image["output"])) / "kairos-release").read_text()
    assert 'KAIROS_FLAVOR="debian"' in release
    assert 'KAIROS_FLAVOR_RELEASE="13"' in release


def test_trixie_image_boots_with_the_same_layout(trixie_image: dict[str, object], boot_vm,  # type: ignore[no-untyped-def]
                                                 keypair: tuple[Path, Path], tmp_path: Path) -> None:
    cc = write_cloud_config(tmp_path / "cc.yaml", keypair[1])
    disk = tmp_path / "trixie.raw"
    kairos("disk", str(trixie_image["output"]), "--output", str(disk), "--cloud-config", str(cc))
    vm = boot_vm(disk)
    assert 'VERSION_ID="13"' in vm.ssh("cat /etc/os-release").stdout
    assert vm.ssh("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert "(admin)" in vm.ssh("id").stdout
    assert state(vm)["boot"] == "active_boot"
    assert vm.ssh("findmnt -no FSTYPE /etc").stdout.strip() == "overlay"
    assert vm.ssh("systemctl --failed --no-legend --plain").stdout.strip() == ""
    assert_no_failed_steps(vm)
    vm.ssh("echo kept > ~/trixie-kept && sudo sh -c 'echo gone > /etc/trixie-gone'")
    vm.reboot()
    assert vm.ssh("cat ~/trixie-kept").stdout.strip() == "kept"
    assert vm.ssh("test -e /etc/trixie-gone", check=False).returncode != 0
    assert_no_failed_steps(vm)
