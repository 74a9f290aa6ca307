"""`kairos disk` (a bootable disk image) and `kairos install` (onto a real device)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kairos.agent.install import install, plan_for_device, refuse_if_in_use
from kairos.artifacts.disk import find_images, make_disk
from kairos.boot.grubcfg import GrubCfgOptions
from kairos.disk.sizes import format_size
from kairos.errors import BadInput
from kairos.ui import log


def _grub_options(pairs: list[str] | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--grub-option {pair!r} is not KEY=VALUE",
                           "e.g. --grub-option extra_cmdline=quiet")
        options[key] = value
    return options


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud-config", type=Path, metavar="FILE",
                   help="user cloud-config, installed as /oem/90_custom.yaml")
    p.add_argument("--grub-option", action="append", metavar="KEY=VALUE",
                   help="GRUB env value for /oem/grubenv (e.g. extra_cmdline=quiet); repeatable")
    p.add_argument("--grub-timeout", type=int, default=1, metavar="SECONDS",
                   help="how long the GRUB menu waits (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: Any) -> None:
    disk = sub.add_parser("disk", help="make a bootable raw/qcow2 disk image from a built image",
                          description="Make a bootable disk image (GPT, BIOS+UEFI GRUB, "
                                      "A/B slots, recovery) from a 'kairos build' output.")
    disk.add_argument("image_dir", type=Path, metavar="IMAGE_DIR",
                      help="build output directory holding rootfs.squashfs")
    disk.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                      help="disk image file to write")
    disk.add_argument("--size", metavar="SIZE",
                      help="disk size, e.g. 8G, 8GiB, 4096M (default: slots + 1 GiB, in GiB)")
    disk.add_argument("--format", choices=("raw", "qcow2"), default="raw")
    _add_common(disk)
    disk.set_defaults(func=_disk)

    inst = sub.add_parser("install", help="install a built image onto a disk device (erases it)",
                          description="Partition DEVICE and install the image in IMAGE_DIR "
                                      "with A/B slots, recovery and GRUB for BIOS and UEFI.")
    inst.add_argument("--device", type=Path, required=True, metavar="DEV",
                      help="the whole disk to erase, e.g. /dev/sda")
    inst.add_argument("--image", type=Path, required=True, metavar="IMAGE_DIR",
                      help="build output directory holding rootfs.squashfs")
    inst.add_argument("--yes", action="store_true", help="do not ask before erasing DEV")
    _add_common(inst)
    inst.set_defaults(func=_install)


def _disk(args: argparse.Namespace) -> int:
    result = make_disk(
        args.image_dir, args.output, size=args.size, cloud_config=args.cloud_config,
        fmt=args.format, grub_options=_grub_options(args.grub_option),
        cfg_options=GrubCfgOptions(timeout=args.grub_timeout),
    )
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(f"{result.path} ({result.format}, "
              f"{format_size(result.plan.layout.disk_size)}) is ready")
    return 0


def _confirm(device: Path) -> None:
    if not sys.stdin.isatty():
        raise BadInput(f"refusing to erase {device} without confirmation",
                       "pass --yes to install without asking")
    sys.stderr.write(f"This erases everything on {device}. Type 'yes' to continue: ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() != "yes":
        raise BadInput("installation cancelled", "answer 'yes' or pass --yes")


def _install(args: argparse.Namespace) -> int:
    slot, recovery = find_images(args.image)
    refuse_if_in_use(args.device)
    plan = plan_for_device(
        args.device, slot, recovery_image=recovery,
        cloud_configs=[args.cloud_config] if args.cloud_config else [],
        grub_options=_grub_options(args.grub_option),
        cfg_options=GrubCfgOptions(timeout=args.grub_timeout),
    )
    if not args.yes:
        _confirm(args.device)
    install(plan, args.device)
    if args.json:
        print(json.dumps({"device": str(args.device), **plan.summary()}, indent=2))
    else:
        log.info("installed on %s", args.device)
    return 0
