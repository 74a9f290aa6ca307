"""`kairos build`: the factory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from kairos.factory.bases import parse_base

DEFAULT_CACHE = "/var/cache/kairos"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("build", help="build an OS image from a base distribution")
    p.add_argument("--base", default="debian:bookworm",
                   help="debian:bookworm (default), debian:trixie, dir:PATH, tar:PATH, "
                        "ocifile:PATH, oci-layout:PATH")
    p.add_argument("--version", default="0.1.0", help="image version (semver), default 0.1.0")
    p.add_argument("-o", "--output", default="build/image", help="output directory")
    p.add_argument("--cache-dir", default=os.environ.get("KAIROS_CACHE_DIR", DEFAULT_CACHE))
    p.add_argument("--mirror", help="Debian mirror URL (default: the host's apt sources)")
    p.add_argument("--kernel-package", default="linux-image-amd64")
    p.add_argument("--init", default="auto", choices=["auto", "systemd", "openrc"],
                   help="service manager: systemd, openrc (sysvinit + OpenRC, no systemd), or "
                        "auto (default: systemd for debian:*, else what the base tree runs)")
    p.add_argument("--package", action="append", default=[], dest="packages",
                   help="extra package to install (repeatable)")
    p.add_argument("--compression", default="none", choices=["none", "xz", "gzip"],
                   help="slot image compression (default none: fastest boot, as Kairos)")
    p.add_argument("--rebuild", action="store_true",
                   help="re-run every step after the base, ignoring cached outputs")
    p.add_argument("--refresh-base", action="store_true", help="fetch the base again")
    p.add_argument("--no-oci", action="store_true", help="skip the OCI image output")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from kairos.factory.build import DEFAULT_EPOCH, BuildOptions, build
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    opts = BuildOptions(
        base=parse_base(args.base), version=args.version, output=Path(args.output),
        cache_dir=Path(args.cache_dir), mirror=args.mirror, kernel_package=args.kernel_package,
        extra_packages=tuple(args.packages), compression=args.compression,
        source_date_epoch=epoch, rebuild=args.rebuild, refresh_base=args.refresh_base,
        oci=not args.no_oci, init=args.init)
    result = build(opts)
    if args.json:
        json.dump(asdict(result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"built {result.version} in {result.output}")
        print(f"  init        {result.init}")
        print(f"  slot image  {result.rootfs} ({result.rootfs_size / 2**20:.0f} MiB)"
              f"  sha256:{result.rootfs_sha256[:16]}…")
        if result.oci_archive:
            print(f"  OCI archive {result.oci_archive}  {result.oci_digest}")
        print("  steps: " + ", ".join(f"{k} {v}" for k, v in result.steps.items()))
    return 0
