"""`kairos build`: the factory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from kairos.errors import BadInput
from kairos.factory.bases import parse_base
from kairos.factory.trim import Trim

DEFAULT_CACHE = "/var/cache/kairos"
BASE_MAX_AGE_ENV = "KAIROS_BASE_MAX_AGE"


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
    p.add_argument("--variant", default="core", choices=["core", "standard"],
                   help="core (default): the OS alone; standard: plus Kubernetes (the "
                        "control plane, kubelet, containerd, etcd, Traefik), built once by "
                        "scripts/build-kubernetes and cached")
    p.add_argument("--kubernetes-cache", metavar="DIR", default=None,
                   help="where the standard variant's Kubernetes parts are cached (default "
                        "KAIROS_KUBERNETES_CACHE or /var/cache/kairos-kubernetes)")
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
    p.add_argument("--base-max-age", metavar="DAYS", default=None,
                   help="fetch a debian:* base again once it is older than DAYS days "
                        f"(default {BASE_MAX_AGE_ENV} or 7; 0: at every build; "
                        "'never': keep it until --refresh-base)")
    p.add_argument("--modules-exclude", action="append", default=[], metavar="REGEX",
                   help="remove kernel modules whose path below kernel/ without .ko "
                        "(e.g. drivers/gpu/drm/i915/i915) matches this Python regex "
                        "(re.search; repeatable); dependencies of kept modules and the "
                        "initrd's modules always stay")
    p.add_argument("--modules-include", action="append", default=[], metavar="REGEX",
                   help="keep the modules this regex matches even when --modules-exclude "
                        "matched them (repeatable)")
    p.add_argument("--remove-files", action="append", default=[], metavar="GLOB",
                   help="remove what this absolute in-image glob matches, e.g. "
                        "/usr/share/doc or '/usr/share/locale/*' (repeatable; links are "
                        "removed, never followed)")
    p.add_argument("--no-oci", action="store_true", help="skip the OCI image output")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_build)


def source_date_epoch(env: Mapping[str, str]) -> int:
    """SOURCE_DATE_EPOCH (seconds since 1970, UTC), or our fixed default when unset."""
    from kairos.factory.build import DEFAULT_EPOCH
    text = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return DEFAULT_EPOCH
    if not text.isdigit():
        raise BadInput(f"SOURCE_DATE_EPOCH='{text}' is not a number of seconds since 1970",
                       "set it to an integer, e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct), "
                       "or unset it")
    return int(text)


def base_max_age(option: str | None, env: Mapping[str, str]) -> float | None:
    """Days after which a debootstrapped base is fetched again (None: never)."""
    from kairos.factory.build import DEFAULT_BASE_MAX_AGE
    text = option if option is not None else env.get(BASE_MAX_AGE_ENV, "").strip()
    shown = "--base-max-age" if option is not None else BASE_MAX_AGE_ENV
    if not text:
        return DEFAULT_BASE_MAX_AGE
    if text.lower() == "never":
        return None
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise BadInput(f"{shown} '{text}' is not a number of days",
                       "give days as a number (0: refresh at every build) or 'never'")
    return days


def trim_options(args: argparse.Namespace) -> Trim:
    """The trim options given (BadInput for a bad regex or glob, before any work)."""
    return Trim(modules_exclude=tuple(args.modules_exclude),
                modules_include=tuple(args.modules_include),
                remove_files=tuple(args.remove_files))


def run_build(args: argparse.Namespace) -> int:
    from kairos.factory.build import BuildOptions, build
    opts = BuildOptions(
        base=parse_base(args.base), version=args.version, output=Path(args.output),
        cache_dir=Path(args.cache_dir), mirror=args.mirror, kernel_package=args.kernel_package,
        extra_packages=tuple(args.packages), compression=args.compression,
        source_date_epoch=source_date_epoch(os.environ), rebuild=args.rebuild,
        refresh_base=args.refresh_base, oci=not args.no_oci, init=args.init,
        base_max_age_days=base_max_age(args.base_max_age, os.environ),
        trim=trim_options(args), variant=args.variant,
        kubernetes_cache=Path(args.kubernetes_cache) if args.kubernetes_cache else None)
    result = build(opts)
    if args.json:
        json.dump(asdict(result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"built {result.version} in {result.output}")
        print(f"  init        {result.init}")
        print(f"  variant     {result.variant}")
        if result.kubernetes:
            k = result.kubernetes
            print(f"  kubernetes  {k.get('kubernetes_version')}, etcd {k.get('etcd_version')}, "
                  f"containerd {k.get('containerd_version')}, traefik "
                  f"{k.get('traefik_version')}; sandbox image {k.get('pause_image')}")
        print(f"  base        {result.base}, fetched {result.base_made} "
              f"({_days(result.base_age_days)} old)")
        print(f"  slot image  {result.rootfs} ({result.rootfs_size / 2**20:.0f} MiB)"
              f"  sha256:{result.rootfs_sha256[:16]}…")
        if "modules_removed" in result.trim:
            t = result.trim
            print(f"  trimmed     {t['modules_removed']} modules, {t['files_removed']} files, "
                  f"{t['bytes_freed'] / 2**20:.0f} MiB")
        if result.oci_archive:
            print(f"  OCI archive {result.oci_archive}  {result.oci_digest}")
        print("  steps: " + ", ".join(f"{k} {v}" for k, v in result.steps.items()))
    return 0


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"
