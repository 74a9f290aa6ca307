"""VM set-up without starting QEMU: format detection, OVMF copy, cidata, cleanup, errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kairos.errors import BadInput, KairosError
from kairos.vm import VM, VMConfig
from kairos.vm.cidata import build_cidata
from kairos.vm.config import OVMF_DIR, detect_format, find_ovmf


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    return disk


@pytest.fixture
def qcow2_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    return disk


def test_detect_raw_qcow2_iso(tmp_path: Path, raw_disk: Path, qcow2_disk: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\n")
    iso = build_cidata(user_data, tmp_path / "c.iso")
    assert detect_format(raw_disk) == "raw"
    assert detect_format(qcow2_disk) == "qcow2"
    assert detect_format(iso) == "iso"


def test_missing_disk_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as err:
        detect_format(tmp_path / "nope.raw")
    assert err.value.exit_code == 2 and err.value.hint


def test_missing_ovmf_hints_the_package(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as err:
        find_ovmf(tmp_path)
    assert "apt-get install ovmf" in err.value.hint


def test_prepare_builds_private_vars_and_cidata(tmp_path: Path, raw_disk: Path) -> None:
    if not (OVMF_DIR / "OVMF_CODE_4M.fd").exists():
        pytest.skip("ovmf not installed")
    cc = tmp_path / "cc.yaml"
    cc.write_text("#cloud-config\nhostname: x\n")
    vm = VM(VMConfig(disk=raw_disk, uefi=True, cloud_config=cc))
    try:
        argv = vm.prepare()
        assert vm.workdir is not None and vm.wiring is not None
        vars_copy = vm.workdir / "OVMF_VARS.fd"
        assert vars_copy.read_bytes() == (OVMF_DIR / "OVMF_VARS_4M.fd").read_bytes()
        assert any(str(vars_copy) in a for a in argv)
        assert vm.wiring.cidata is not None and vm.wiring.cidata.is_file()
        assert 0 < vm.ssh_port < 65536
        assert vm.prepare() == argv  # resolved once, stable
        workdir = vm.workdir
    finally:
        vm.close()
    assert not workdir.exists()


def test_prepare_missing_disk(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        VM(VMConfig(disk=tmp_path / "missing.raw")).prepare()


def test_named_serial_log_survives_close(tmp_path: Path, raw_disk: Path) -> None:
    log = tmp_path / "logs" / "serial.log"
    vm = VM(VMConfig(disk=raw_disk, serial_log=log))
    vm.prepare()
    vm.close()
    assert log.exists()


def test_ssh_needs_a_key(raw_disk: Path) -> None:
    vm = VM(VMConfig(disk=raw_disk))
    try:
        vm.prepare()
        with pytest.raises(BadInput):
            vm.ssh("true")
    finally:
        vm.close()


def test_not_started_is_an_error(raw_disk: Path) -> None:
    with pytest.raises(KairosError):
        _ = VM(VMConfig(disk=raw_disk)).ssh_port
