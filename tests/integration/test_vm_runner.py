"""The VM runner against real QEMU (TCG): firmware on serial, QMP, power cut, snapshot, CLI.

The guests have no OS: a blank disk is enough to see firmware, and QMP's `human-monitor-command`
lets a test write to the disk through QEMU's block layer as a guest would.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kairos.errors import KairosError
from kairos.vm import VM, VMConfig, qemu_available
from kairos.vm.cidata import build_cidata
from kairos.vm.config import OVMF_DIR
from kairos.vm.net import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86 not installed"),
]

def small(disk: Path, **kw: Any) -> VMConfig:
    """A guest that needs no more than firmware: little memory, one CPU."""
    return VMConfig(disk=disk, memory=256, cpus=1, **kw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def blank_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "blank.raw"
    # Random bytes so an unwanted write is visible; no boot signature, so firmware moves on.
    disk.write_bytes(os.urandom(4 << 20))
    return disk


def test_seabios_on_serial(blank_disk: Path) -> None:
    with VM(small(blank_disk)) as vm:
        assert re.match("SeaBIOS|iPXE|Booting", vm.wait_for_serial("SeaBIOS|iPXE|Booting", 120))
        assert vm.qmp("query-status")["status"] == "running"


def test_system_reset_shows_a_new_boot(blank_disk: Path) -> None:
    with VM(small(blank_disk)) as vm:
        vm.wait_for_serial(r"SeaBIOS \(version", 120)
        mark = vm.serial_mark()
        vm.qmp("system_reset")
        vm.wait_for_serial(r"SeaBIOS \(version", 120, since=mark)
        assert vm.serial_text().count("SeaBIOS (version") >= 2


def test_uefi_ovmf_on_serial_and_quit(blank_disk: Path) -> None:
    if not (OVMF_DIR / "OVMF_CODE_4M.fd").exists():
        pytest.skip("ovmf not installed")
    vm = VM(VMConfig(disk=blank_disk, uefi=True, memory=512, cpus=1))
    try:
        vm.start()
        # OVMF's boot manager reports each boot option it tries on the serial console.
        vm.wait_for_serial(r"BdsDxe", 300)
        vm.qmp("quit")
        assert vm.wait_exit(30) == 0
    finally:
        vm.close()


def test_kill_leaves_no_process_and_start_again(blank_disk: Path) -> None:
    with VM(small(blank_disk)) as vm:
        vm.wait_for_serial("SeaBIOS", 120)
        first = vm.pid
        assert first is not None
        vm.kill()
        assert not vm.running and gone(first)
        # Power back on: same VM, a new QEMU, and waits only see the new run's output.
        vm.start()
        second = vm.pid
        assert second is not None and second != first
        vm.wait_for_serial("SeaBIOS", 120)
        assert vm.serial_log.read().count("SeaBIOS (version") >= 2
    assert gone(second)


def test_restart_mode_starts_a_fresh_qemu_at_each_reset(blank_disk: Path) -> None:
    # reboot="restart": a reset (here QMP's, as a guest's reboot would be) ends QEMU and the
    # next look at the VM starts a new one on the same serial log; a quit stays off.
    with VM(small(blank_disk, reboot="restart")) as vm:
        vm.wait_for_serial("SeaBIOS", 120)
        first = vm.pid
        vm.qmp("system_reset")
        deadline = time.monotonic() + 60
        while vm.pid == first:
            assert vm.running, "the VM went off at a reset"
            assert time.monotonic() < deadline, "QEMU did not restart"
            time.sleep(0.2)
        assert first is not None and gone(first) and vm.restarts == 1
        vm.wait_for_serial("SeaBIOS", 120)  # only the new run's output counts
        assert vm.serial_log.read().count("SeaBIOS (version") >= 2
        second = vm.pid
        vm.qmp("quit")
        assert vm.wait_exit(30) == 0
        assert not vm.running and vm.pid == second and vm.restarts == 1


def test_exit_mode_ends_qemu_at_a_reset(blank_disk: Path) -> None:
    with VM(small(blank_disk, reboot="exit")) as vm:
        vm.wait_for_serial("SeaBIOS", 120)
        first = vm.pid
        vm.qmp("system_reset")
        assert vm.wait_exit(30) == 0
        assert not vm.running and vm.pid == first and vm.restarts == 0


def test_exit_removes_temp_files(blank_disk: Path) -> None:
    with VM(small(blank_disk)) as vm:
        workdir = vm.workdir
        assert workdir is not None and (workdir / "qmp.sock").exists()
        pid = vm.pid
    assert not workdir.exists()
    assert pid is not None and gone(pid)


def write_through_qemu(vm: VM) -> None:
    # qemu-io in the monitor writes through the block layer, as a guest's disk write would;
    # it reports on QEMU's stdout, which the VM keeps in qemu.log.
    vm.qmp("human-monitor-command", {"command-line": "qemu-io d0 \"write -P 0xab 0 64k\""})
    assert vm.workdir is not None
    assert "wrote 65536/65536" in (vm.workdir / "qemu.log").read_text()


def test_snapshot_leaves_image_byte_identical(blank_disk: Path) -> None:
    before = sha256(blank_disk)
    with VM(small(blank_disk, snapshot=True)) as vm:
        write_through_qemu(vm)
    assert sha256(blank_disk) == before


def test_without_snapshot_the_write_lands(blank_disk: Path) -> None:
    # The control for the test above: the same write does change the image.
    before = sha256(blank_disk)
    with VM(small(blank_disk)) as vm:
        write_through_qemu(vm)
    assert sha256(blank_disk) != before
    assert blank_disk.read_bytes()[:65536] == b"\xab" * 65536


def test_qcow2_and_cidata_attached(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "32M"], check=True)
    cc = tmp_path / "cc.yaml"
    cc.write_text("#cloud-config\n")
    with VM(small(disk, cloud_config=cc)) as vm:
        blocks = {b["device"]: b for b in vm.qmp("query-block")}
        assert blocks["d0"]["inserted"]["drv"] == "qcow2"
        cidata = blocks["cidata"]["inserted"]
        assert cidata["ro"] is True and cidata["file"].endswith("cidata.iso")


def test_iso_boots_as_cdrom(tmp_path: Path) -> None:
    cc = tmp_path / "cc.yaml"
    cc.write_text("#cloud-config\n")
    iso = build_cidata(cc, tmp_path / "some.iso")
    with VM(small(iso)) as vm:
        vm.wait_for_serial(r"Booting from DVD/CD", 120)


def test_wait_for_ssh_needs_a_banner(blank_disk: Path) -> None:
    # QEMU accepts connections on the forwarded port with nothing behind it: not SSH.
    with VM(small(blank_disk)) as vm:
        with pytest.raises(KairosError) as err:
            vm.wait_for_ssh(timeout=3)
        assert f"127.0.0.1:{vm.ssh_port}" in str(err.value)


def test_serial_timeout_reports_tail(blank_disk: Path) -> None:
    with VM(small(blank_disk)) as vm:
        vm.wait_for_serial("SeaBIOS", 120)
        with pytest.raises(KairosError) as err:
            vm.wait_for_serial("login:", timeout=2)
        assert "SeaBIOS" in str(err.value)


def test_poweroff_acpi_without_os_times_out_and_kills(blank_disk: Path) -> None:
    # No OS answers ACPI, so the clean shutdown fails and the VM is killed, not left behind.
    with VM(small(blank_disk)) as vm:
        vm.wait_for_serial("SeaBIOS", 120)
        pid = vm.pid
        with pytest.raises(KairosError):
            vm.poweroff(method="acpi", timeout=3)
        assert pid is not None and gone(pid)


def test_fixed_ssh_port_is_used(blank_disk: Path) -> None:
    port = free_port()
    with VM(small(blank_disk, ssh_port=port)) as vm:
        assert vm.ssh_port == port
        assert f"127.0.0.1:{port}-:22" in " ".join(vm.prepare())


CLI = ("import sys; from kairos.cli import _Parser, vm_cmd; p = _Parser(prog='kairos'); "
       "vm_cmd.register(p.add_subparsers(dest='verb')); a = p.parse_args(sys.argv[1:]); "
       "sys.exit(a.func(a))")


def test_cli_without_tty_prints_serial_and_cleans_up_on_sigterm(blank_disk: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CLI, "vm", str(blank_disk), "--memory", "256",
                             "--cpus", "1", "--snapshot"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        err = ""
        while "kairos@127.0.0.1" not in err:  # the ssh line is printed once QEMU runs
            line = proc.stderr.readline().decode()
            assert line, f"kairos vm ended early: {err}"
            err += line
        assert "ssh -o StrictHostKeyChecking=no" in err
        pid = int(re.search(r"QEMU pid (\d+)", err).group(1))  # type: ignore[union-attr]
        seen = b""
        deadline = time.monotonic() + 120
        while b"SeaBIOS" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read1(4096)  # serial arrives plainly on stdout
        assert b"SeaBIOS" in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) != 0
        assert gone(pid)
    finally:
        proc.kill()
        proc.wait()
