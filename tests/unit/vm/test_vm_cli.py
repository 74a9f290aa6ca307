"""`kairos vm` argument handling (no QEMU is started here)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from kairos.cli import vm_cmd
from kairos.errors import BadInput


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kairos")
    vm_cmd.register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["vm", *argv])


def test_defaults() -> None:
    args = parse("disk.raw")
    assert args.artifact == Path("disk.raw")
    assert (args.uefi, vm_cmd._memory(args), args.cpus, args.ssh_port, args.snapshot) == (
        False, 2048, 2, None, False)
    assert args.netboot is None
    assert args.func is vm_cmd.run_vm


def test_all_options() -> None:
    args = parse("d.qcow2", "--uefi", "--memory", "1024", "--cpus", "1", "--ssh-port", "2222",
                 "--serial-log", "s.log", "--cloud-config", "cc.yaml", "--snapshot",
                 "--disk", "target.raw")
    assert args.uefi and args.snapshot
    assert (args.memory, args.cpus, args.ssh_port) == (1024, 1, 2222)
    assert args.serial_log == Path("s.log") and args.cloud_config == Path("cc.yaml")
    assert args.disk == [Path("target.raw")]


def test_no_reboot_ends_qemu_at_the_guests_reboot() -> None:
    # after an unattended install from an ISO: the next start boots the disk alone
    assert vm_cmd.vm_config(parse("k.iso", "--no-reboot"), "log").reboot == "exit"
    assert vm_cmd.vm_config(parse("k.iso"), "log").reboot == "reset"


def test_missing_artifact_is_bad_input(tmp_path: Path) -> None:
    args = parse(str(tmp_path / "missing.raw"))
    with pytest.raises(BadInput) as err:
        vm_cmd.run_vm(args)
    assert err.value.exit_code == 2
    assert "kairos build" in err.value.hint


def test_no_tty_uses_log_or_stdout() -> None:
    # Under pytest stdin is not a terminal.
    assert vm_cmd._console(parse("d", "--serial-log", "x.log")) == "log"
    assert vm_cmd._console(parse("d")) == "stdio"


def test_missing_artifact_exit_code_through_main(tmp_path: Path) -> None:
    # The real entry point; skipped while another verb module of the tree is not written yet.
    probe = subprocess.run([sys.executable, "-c", "import kairos.cli as c; c.build_parser()"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("kairos.cli cannot load every verb module yet")
    proc = subprocess.run([sys.executable, "-m", "kairos", "vm", str(tmp_path / "nope.raw")],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "hint:" in proc.stderr
