"""`kairos vm ARTIFACT`: boot a disk image or ISO under QEMU (TCG) with SSH forwarded."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from kairos.errors import BadInput
from kairos.vm import VM, VMConfig
from kairos.vm.config import Console
from kairos.vm.net import ssh_hint


def register(sub: Any) -> None:
    p = sub.add_parser(
        "vm", help="boot an image in QEMU (TCG)",
        description="Boot a raw/qcow2 disk image or an ISO in QEMU without KVM. On a terminal "
                    "the serial console is interactive (Ctrl-A X quits); otherwise serial "
                    "output goes to --serial-log or to stdout. SSH is forwarded from "
                    "127.0.0.1.")
    p.add_argument("artifact", type=Path, help="disk image (raw, qcow2) or ISO to boot")
    p.add_argument("--uefi", action="store_true", help="boot with OVMF instead of SeaBIOS")
    p.add_argument("--memory", type=int, default=2048, metavar="MiB",
                   help="guest memory (default 2048)")
    p.add_argument("--cpus", type=int, default=2, metavar="N", help="guest CPUs (default 2)")
    p.add_argument("--ssh-port", type=int, metavar="N",
                   help="host port on 127.0.0.1 forwarded to the guest's port 22 "
                        "(default: a free one)")
    p.add_argument("--ssh-user", default="kairos", metavar="USER",
                   help="user shown in the printed ssh command (default kairos)")
    p.add_argument("--serial-log", type=Path, metavar="FILE", help="also write serial to FILE")
    p.add_argument("--cloud-config", type=Path, metavar="FILE",
                   help="hand FILE to the guest as a NoCloud cidata volume")
    p.add_argument("--disk", type=Path, action="append", default=[], metavar="FILE",
                   help="attach another disk image (repeatable), e.g. an install target")
    p.add_argument("--snapshot", action="store_true",
                   help="discard the guest's writes; the image file stays untouched")
    p.set_defaults(func=run_vm)


def _console(args: argparse.Namespace) -> Console:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return "interactive"
    # No terminal (CI, a pipe): plain serial on stdout, or only into the named log file.
    return "log" if args.serial_log else "stdio"


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_vm(args: argparse.Namespace) -> int:
    artifact: Path = args.artifact
    if not artifact.is_file():
        raise BadInput(f"artifact {artifact} does not exist",
                       "build one with 'kairos build' or give the path of a .raw/.qcow2/.iso")
    console = _console(args)
    config = VMConfig(disk=artifact, uefi=args.uefi, memory=args.memory, cpus=args.cpus,
                      snapshot=args.snapshot, ssh_port=args.ssh_port,
                      serial_log=args.serial_log, cloud_config=args.cloud_config,
                      console=console, extra_disks=tuple(args.disk), ssh_user=args.ssh_user)
    # A SIGTERM (CI timeout, systemd) must still end QEMU: turn it into a normal exit.
    signal.signal(signal.SIGTERM, _terminate)
    with VM(config) as vm:
        err = sys.stderr
        err.write(f"kairos vm: QEMU pid {vm.pid}; log in with:\n"
                  f"  {ssh_hint(vm.ssh_port, args.ssh_user)}\n")
        if console == "interactive":
            err.write("  serial console below; Ctrl-A X quits, Ctrl-A C toggles the monitor\n")
        elif args.serial_log:
            err.write(f"  serial output goes to {args.serial_log}\n")
        err.flush()
        code = vm.wait_exit()
    return 0 if code == 0 else 1
