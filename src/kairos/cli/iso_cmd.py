"""`kairos iso`: a hybrid live ISO (BIOS and UEFI, CD and USB stick) from a built image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kairos.artifacts.iso import make_iso


def register(sub: Any) -> None:
    iso = sub.add_parser("iso", help="make a live ISO (BIOS+UEFI, CD or USB) from a built image",
                         description="Make a hybrid live ISO (volume COS_LIVE) from a 'kairos "
                                     "build' output: it boots into live mode, all writes in "
                                     "RAM, and carries the slot image the installer writes.")
    iso.add_argument("image_dir", type=Path, metavar="IMAGE_DIR",
                     help="build output directory holding rootfs.squashfs, vmlinuz and initrd")
    iso.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                     help="ISO file to write, e.g. kairos.iso")
    iso.add_argument("--cloud-config", type=Path, metavar="FILE",
                     help="cloud-config put on the ISO as /config.yaml (the live system and "
                          "the installer read it)")
    iso.add_argument("--overlay-iso", type=Path, metavar="DIR",
                     help="directory whose files are added to the ISO (e.g. oem/*.yaml)")
    iso.add_argument("--json", action="store_true", help="print the result as JSON")
    iso.set_defaults(func=_iso)


def _iso(args: argparse.Namespace) -> int:
    result = make_iso(args.image_dir, args.output, cloud_config=args.cloud_config,
                      overlay=args.overlay_iso)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(f"{result.path} ({result.size / 2**20:.0f} MiB, boots BIOS and UEFI) is ready")
    return 0
