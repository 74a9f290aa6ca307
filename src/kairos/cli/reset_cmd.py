"""`kairos reset [--reset-persistent|--no-reset-persistent] [--reset-oem] [--source IMAGE]
[--unattended] [--reboot|--poweroff] [--json]`, with Kairos's `reset:` cloud-config keys."""

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
        "reset", help="rebuild the active and passive images from recovery, wipe user data",
        description="From the recovery system: write the recovery image (or --source) to "
                    "both slots, each in one atomic step, wipe COS_PERSISTENT (unless "
                    "--no-reset-persistent) and with --reset-oem the files on /oem, clear the "
                    "boot assessment, and boot the new active image next. A power cut at any "
                    "point boots the reset entry again; running it again finishes the job. "
                    "Defaults come from cloud-config (reset.reset-persistent, reset.reset-oem, "
                    "reset.system.source, reset.reboot, reset.poweroff).")
    p.add_argument("--reset-persistent", action=argparse.BooleanOptionalAction, default=None,
                   help="wipe COS_PERSISTENT (/usr/local, /home, …); default yes")
    p.add_argument("--reset-oem", action=argparse.BooleanOptionalAction, default=None,
                   help="remove the cloud-configs and GRUB options on /oem; default no")
    p.add_argument("--source", help="instead of the recovery image: file:PATH (a slot "
                                    "image), oci:REGISTRY/REPO:TAG, ocifile:PATH or dir:PATH")
    p.add_argument("--unattended", action="store_true",
                   help="run without a person (the statereset boot's service uses it)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--reboot", action="store_true", default=None, help="reboot when done")
    when.add_argument("--poweroff", action="store_true", default=None,
                      help="power off when done")
    p.add_argument("--allow-insecure-registries", action="store_true", default=None,
                   help="allow plain HTTP (and unverified TLS) for an oci: source")
    p.add_argument("--auth-file", type=Path, help="registry credentials for an oci: source")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # Offline and test use: act on partitions given here instead of the running device's.
    for flag in ("--state-dir", "--recovery-dir", "--persistent-device", "--oem-dir",
                 "--config-root", "--lock-dir"):
        p.add_argument(flag, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--booted", help=argparse.SUPPRESS)
    p.set_defaults(func=reset_cmd)


def _config(args: argparse.Namespace) -> Any:
    from kairos.config.collect import MergedConfig, collect
    if args.state_dir is not None and args.config_root is None:
        return MergedConfig()
    return collect(args.config_root or Path("/"), fetch=False)


def _pick(cli: Any, cfg: Any, key: str, default: bool) -> bool:
    if cli is not None:
        return bool(cli)
    value = cfg.get(key)
    return default if value is None else bool(value)


def _source(args: argparse.Namespace, cfg: Any) -> Any:
    from kairos.agent.upgradesource import parse_source
    text = args.source
    for key in ("reset.source", "reset.system.source", "reset.system.uri"):
        text = text or cfg.get(key)
    return parse_source(str(text)) if text else None


def options(args: argparse.Namespace, cfg: Any) -> Any:
    from kairos.agent.reset import ResetOptions
    return ResetOptions(
        reset_persistent=_pick(args.reset_persistent, cfg, "reset.reset-persistent", True),
        reset_oem=_pick(args.reset_oem, cfg, "reset.reset-oem", False),
        source=_source(args, cfg), unattended=args.unattended,
        insecure=_pick(args.allow_insecure_registries, cfg,
                       "reset.allow-insecure-registries", False),
        auth_file=args.auth_file)


@contextlib.contextmanager
def _targets(args: argparse.Namespace) -> Iterator[Any]:
    from kairos.agent.reset import LOCK_DIR, ResetTargets, device_targets
    if args.state_dir is None:
        with device_targets(args.unattended) as targets:
            yield targets
        return
    if args.recovery_dir is None or args.booted is None:
        raise BadInput("--state-dir needs --recovery-dir and --booted", "give all three")
    yield ResetTargets(args.state_dir, args.recovery_dir, args.booted,
                       persistent_device=args.persistent_device, oem_dir=args.oem_dir,
                       stage_root=args.config_root, lock_dir=args.lock_dir or LOCK_DIR)


def reset_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.reset import reset
    from kairos.agent.upgrade import reboot_after
    cfg = _config(args)
    opts = options(args, cfg)
    reboot = _pick(args.reboot, cfg, "reset.reboot", False)
    poweroff = _pick(args.poweroff, cfg, "reset.poweroff", False)
    with _targets(args) as targets:
        result = reset(opts, targets)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        wiped = [what for what, done in (("COS_PERSISTENT", result.persistent_wiped),
                                         ("the files on /oem", result.oem_wiped)) if done]
        sys.stdout.write(f"Reset completed: active and passive are now {result.version or '?'} "
                         f"({result.source}).\n")
        sys.stdout.write(f"Wiped: {', '.join(wiped) or 'nothing'}. The next boot runs the "
                         "new active image.\n")
    sys.stdout.flush()
    reboot_after("reboot" if reboot else "poweroff" if poweroff else "")
    return 0
