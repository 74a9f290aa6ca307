"""`kairos netboot`: kernel, initrd, root image and an iPXE script to boot a built image
over the network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kairos.artifacts.netboot import make_netboot


def register(sub: Any) -> None:
    p = sub.add_parser("netboot", help="write netboot files (kernel, initrd, image, iPXE script)",
                       description="Write the kernel, the initrd, the root image and an iPXE "
                                   "script of a 'kairos build' output to DIR. The script boots "
                                   "live with root=live:URL: the initrd downloads the image over "
                                   "HTTP into RAM. Serve DIR over HTTP, or try it with "
                                   "'kairos vm --netboot DIR'.")
    p.add_argument("image_dir", type=Path, metavar="IMAGE_DIR",
                   help="build output directory holding rootfs.squashfs, vmlinuz and initrd")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="directory to write (new, or an earlier 'kairos netboot' output)")
    p.add_argument("--url", metavar="URL",
                   help="http:// address DIR is served from, fixed in the script (default: "
                        "the script uses ${base-url}, set by whoever chains it)")
    p.add_argument("--cloud-config", type=Path, metavar="FILE",
                   help="cloud-config copied beside as config.yaml and passed as config_url")
    p.add_argument("--name", metavar="NAME",
                   help="file name prefix (default: Kairos's kairos-<flavor>-…-<version>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_netboot)


def _netboot(args: argparse.Namespace) -> int:
    result = make_netboot(args.image_dir, args.output, cloud_config=args.cloud_config,
                          url=args.url, name=args.name)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(f"{result.output}/{result.script} is ready "
              f"({result.rootfs_size / 2**20:.0f} MiB image); try it with: "
              f"kairos vm --netboot {result.output}")
    return 0
