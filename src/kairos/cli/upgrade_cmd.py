"""`kairos upgrade [--source …] [--recovery] [--reboot|--poweroff]` and `upgrade list-releases`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kairos.errors import BadInput


def register(sub: Any) -> None:
    p = sub.add_parser(
        "upgrade", help="upgrade this device to a new image (A/B, power-cut safe)",
        description="Pull or read a new image, write it beside the slots, and make it active "
                    "in one atomic step; the running image becomes passive. With no --source, "
                    "the source comes from cloud-config (upgrade.source, "
                    "upgrade.system.source, upgrade.recovery-system.source).")
    p.add_argument("--source", help="oci:REGISTRY/REPO:TAG, ocifile:PATH, dir:PATH or "
                                    "file:PATH (a slot image)")
    p.add_argument("--recovery", action="store_true", default=None,
                   help="upgrade the recovery image only")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--reboot", action="store_true", default=None, help="reboot when done")
    when.add_argument("--poweroff", action="store_true", default=None,
                      help="power off when done")
    p.add_argument("--allow-insecure-registries", action="store_true", default=None,
                   help="allow plain HTTP (and unverified TLS) for the source's registry")
    p.add_argument("--auth-file", type=Path,
                   help="registry credentials (Docker config.json); default "
                        "$REGISTRY_AUTH_FILE, then /root/.docker/config.json")
    p.add_argument("--verify", action="store_true", default=None,
                   help="refuse an image without a valid signature (upgrade.public-key)")
    p.add_argument("--public-key", help="PEM public key file for --verify")
    p.add_argument("--force", action="store_true",
                   help="apply the image even if it failed its boot assessment on this "
                        "device before (it is on trial again)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # Offline and test use: act on partitions mounted elsewhere instead of the running device.
    for flag in ("--state-dir", "--persistent-dir", "--recovery-dir", "--oem-dir",
                 "--config-root"):
        p.add_argument(flag, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--booted", choices=("active", "passive"), help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.set_defaults(func=upgrade_cmd)
    actions = p.add_subparsers(dest="upgrade_action", metavar="ACTION")
    from kairos.cli.releases_cmd import add_list_releases
    add_list_releases(actions)


def _config(args: argparse.Namespace) -> Any:
    from kairos.config.collect import MergedConfig, collect
    if args.state_dir is not None and args.config_root is None:
        return MergedConfig()
    return collect(args.config_root or Path("/"), fetch=False)


def _pick(cli: Any, cfg: Any, key: str, default: Any = None) -> Any:
    if cli is not None:
        return cli
    value = cfg.get(key)
    return default if value is None else value


def _source_text(args: argparse.Namespace, cfg: Any, recovery: bool) -> str:
    if args.source:
        return str(args.source)
    keys = (("upgrade.recovery-system.source", "upgrade.recovery-system.uri") if recovery
            else ("upgrade.system.source", "upgrade.system.uri"))
    for key in ("upgrade.source", *keys):
        value = cfg.get(key)
        if value:
            return str(value)
    raise BadInput("no upgrade source given", "use --source oci:REGISTRY/REPO:TAG (or "
                   "ocifile:, dir:, file:), or set upgrade.source in cloud-config")


def _public_key(args: argparse.Namespace, cfg: Any) -> str:
    text = args.public_key or cfg.get("upgrade.public-key") or ""
    text = str(text).strip()
    if text and not text.startswith("-----BEGIN"):
        path = Path(text)
        if not path.is_file():
            raise BadInput(f"public key file {text} does not exist",
                           "give a PEM public key file or the PEM text in upgrade.public-key")
        text = path.read_text()
    return text


def _tries(cfg: Any) -> int:
    """boot_assessment.tries: boots the new image gets to be assessed good (1-9)."""
    from kairos.boot.assessment import DEFAULT_TRIES, MAX_TRIES
    value = cfg.get("boot_assessment.tries")
    if value is None:
        return int(DEFAULT_TRIES)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TRIES:
        raise BadInput(f"boot_assessment.tries is {value!r} in cloud-config",
                       f"set it to a whole number from 1 to {MAX_TRIES}")
    return value


def options(args: argparse.Namespace, cfg: Any) -> Any:
    from kairos.agent.upgradesource import UpgradeOptions, parse_source
    recovery = bool(_pick(args.recovery, cfg, "upgrade.recovery", False))
    source = parse_source(_source_text(args, cfg, recovery))
    size = cfg.get("upgrade.recovery-system.size" if recovery else "upgrade.system.size") or 0
    return UpgradeOptions(
        source=source, recovery=recovery, auth_file=args.auth_file,
        insecure=bool(_pick(args.allow_insecure_registries, cfg,
                            "upgrade.allow-insecure-registries", False)),
        verify=bool(_pick(args.verify, cfg, "upgrade.verify", False)),
        public_key=_public_key(args, cfg), size_mib=int(size), tries=_tries(cfg),
        force=bool(args.force))


@contextlib.contextmanager
def _targets(args: argparse.Namespace, recovery: bool) -> Iterator[Any]:
    from kairos.agent.upgrade import booted_slot, device_targets
    from kairos.agent.upgradesource import Targets
    if args.state_dir is None:
        with device_targets(recovery) as targets:
            yield targets
        return
    if args.persistent_dir is None:
        raise BadInput("--state-dir needs --persistent-dir", "give both")
    yield Targets(args.state_dir, args.persistent_dir, args.booted or booted_slot(),
                  recovery_dir=args.recovery_dir, oem_dir=args.oem_dir,
                  stage_root=args.config_root, root=args.root)


def upgrade_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.upgrade import reboot_after, upgrade
    cfg = _config(args)
    opts = options(args, cfg)
    reboot = bool(_pick(args.reboot, cfg, "upgrade.reboot", False))
    poweroff = bool(_pick(args.poweroff, cfg, "upgrade.poweroff", False))
    with _targets(args, opts.recovery) as targets:
        result = upgrade(opts, targets)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        what = "recovery image" if opts.recovery else "active image"
        sys.stdout.write(f"Upgrade completed: {what} is now {result.version or '?'} "
                         f"({result.digest or result.slot_sha256[:19]})\n")
        if not opts.recovery:
            sys.stdout.write("The previous image is the passive (fallback) one; "
                             "reboot to run the new one.\n")
    sys.stdout.flush()
    reboot_after("reboot" if reboot else "poweroff" if poweroff else "")
    return 0
