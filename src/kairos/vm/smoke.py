"""A non-interactive boot check (what `scripts/demo` runs without a terminal): boot a disk,
log in over SSH, print `kairos state`, power off. Exit 0 only if all of that worked."""

from __future__ import annotations

import argparse
from pathlib import Path

from kairos.errors import KairosError
from kairos.vm.config import VMConfig
from kairos.vm.machine import VM


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kairos.vm.smoke", description=__doc__)
    ap.add_argument("disk", type=Path)
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--user", default="kairos")
    ap.add_argument("--ssh-port", type=int)
    ap.add_argument("--uefi", action="store_true")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    serial = args.disk.with_suffix(".serial.log")
    cfg = VMConfig(disk=args.disk, uefi=args.uefi, ssh_port=args.ssh_port, ssh_key=args.key,
                   ssh_user=args.user, serial_log=serial)
    try:
        with VM(cfg) as vm:
            print(f"booting {args.disk} (serial log: {serial})…", flush=True)
            took = vm.boot_time_to_ssh(args.timeout)
            print(f"SSH as {args.user} after {took:.1f}s; kairos state:", flush=True)
            print(vm.ssh("kairos state").stdout, flush=True)
            vm.poweroff(timeout=120)
    except KairosError as exc:
        exc.report("smoke")
        return 1
    print("the VM booted, answered over SSH and powered off cleanly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
