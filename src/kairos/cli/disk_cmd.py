"""`kairos disk`: a bootable disk image (`kairos install`, onto a device, is install_cmd)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kairos.artifacts.disk import make_disk
from kairos.boot.grubcfg import GrubCfgOptions
from kairos.cli.install_cmd import grub_options
from kairos.disk.sizes import format_size


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


def _disk(args: argparse.Namespace) -> int:
    result = make_disk(
        args.image_dir, args.output, size=args.size, cloud_config=args.cloud_config,
        fmt=args.format, grub_options=grub_options(args.grub_option),
        cfg_options=GrubCfgOptions(timeout=args.grub_timeout),
    )
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(f"{result.path} ({result.format}, "
              f"{format_size(result.plan.layout.disk_size)}) is ready")
    return 0
