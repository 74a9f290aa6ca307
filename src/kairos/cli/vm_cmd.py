"""`kairos vm ARTIFACT | --netboot DIR`: boot a disk image, an ISO or a `kairos netboot`
directory under QEMU (TCG) with SSH forwarded."""

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
from kairos.vm.netboot import GUEST_HOST_ADDR, find_script, min_memory

DEFAULT_MEMORY = 2048  # MiB


def register(sub: Any) -> None:
    p = sub.add_parser(
        "vm", help="boot an image in QEMU (TCG)",
        description="Boot a raw/qcow2 disk image or an ISO in QEMU without KVM. On a terminal "
                    "the serial console is interactive (Ctrl-A X quits); otherwise serial "
                    "output goes to --serial-log or to stdout. SSH is forwarded from "
                    "127.0.0.1.")
    p.add_argument("artifact", type=Path, nargs="?",
                   help="disk image (raw, qcow2) or ISO to boot (with --netboot: a disk tried "
                        "before the network, e.g. an empty install target)")
    p.add_argument("--netboot", type=Path, metavar="DIR",
                   help="boot a 'kairos netboot' directory through QEMU's PXE firmware; DIR "
                        "is served over HTTP on 127.0.0.1 only")
    p.add_argument("--uefi", action="store_true", help="boot with OVMF instead of SeaBIOS")
    p.add_argument("--memory", type=int, metavar="MiB",
                   help=f"guest memory (default {DEFAULT_MEMORY}; netboot: enough to hold the "
                        "image in RAM)")
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
    p.add_argument("--no-reboot", action="store_true",
                   help="end QEMU when the guest reboots, e.g. after an unattended install "
                        "from an ISO, so the next start boots the disk alone")
    p.set_defaults(func=run_vm)


def _console(args: argparse.Namespace) -> Console:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return "interactive"
    # No terminal (CI, a pipe): plain serial on stdout, or only into the named log file.
    return "log" if args.serial_log else "stdio"


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _memory(args: argparse.Namespace) -> int:
    """--memory, or the default; a netbooted guest holds its image in RAM, so it gets at
    least what that needs, and an explicit smaller size is refused."""
    if args.netboot is None:
        return int(args.memory or DEFAULT_MEMORY)
    need = min_memory(args.netboot)
    if args.memory is None:
        return max(DEFAULT_MEMORY, need)
    if args.memory < need:
        raise BadInput(f"--memory {args.memory} is too small to netboot {args.netboot}: the "
                       "guest keeps the image in RAM", f"give --memory {need} or more")
    return int(args.memory)


def vm_config(args: argparse.Namespace, console: Console) -> VMConfig:
    return VMConfig(disk=args.artifact, netboot=args.netboot, uefi=args.uefi,
                    memory=_memory(args), cpus=args.cpus,
                    snapshot=args.snapshot, ssh_port=args.ssh_port,
                    serial_log=args.serial_log, cloud_config=args.cloud_config,
                    console=console, extra_disks=tuple(args.disk), ssh_user=args.ssh_user,
                    reboot="exit" if args.no_reboot else "reset")


def run_vm(args: argparse.Namespace) -> int:
    artifact: Path | None = args.artifact
    if artifact is None and args.netboot is None:
        raise BadInput("nothing to boot", "give a disk image or ISO, or --netboot DIR")
    if artifact is not None and not artifact.is_file():
        raise BadInput(f"artifact {artifact} does not exist",
                       "build one with 'kairos build' or give the path of a .raw/.qcow2/.iso")
    if args.netboot is not None:
        find_script(args.netboot)
    console = _console(args)
    config = vm_config(args, console)
    # A SIGTERM (CI timeout, systemd) must still end QEMU: turn it into a normal exit.
    signal.signal(signal.SIGTERM, _terminate)
    with VM(config) as vm:
        err = sys.stderr
        err.write(f"kairos vm: QEMU pid {vm.pid}; log in with:\n"
                  f"  {ssh_hint(vm.ssh_port, args.ssh_user)}\n")
        nb = vm.wiring.netboot if vm.wiring is not None else None
        if nb is not None:
            err.write(f"  netboot: {args.netboot} served on http://127.0.0.1:{nb.http_port} "
                      f"(the guest's http://{GUEST_HOST_ADDR}:{nb.http_port})\n")
        if console == "interactive":
            err.write("  serial console below; Ctrl-A X quits, Ctrl-A C toggles the monitor\n")
        elif args.serial_log:
            err.write(f"  serial output goes to {args.serial_log}\n")
        err.flush()
        code = vm.wait_exit()
    return 0 if code == 0 else 1
