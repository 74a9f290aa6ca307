"""`kairos rollback [--reboot|--poweroff] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kairos.errors import BadInput


def register(sub: Any) -> None:
    p = sub.add_parser(
        "rollback", help="make the passive (previous) image the active one, for good",
        description="Swap the active and passive images in one atomic step, so every later "
                    "boot runs the image that was passive (for one boot only, use kairos "
                    "bootentry --select fallback). Refused when there is no passive image, "
                    "when it failed its boot assessment, or from the recovery system.")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--reboot", action="store_true", help="reboot when done")
    when.add_argument("--poweroff", action="store_true", help="power off when done")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # Offline and test use: act on partitions mounted elsewhere instead of the running device.
    for flag in ("--state-dir", "--oem-dir", "--lock-dir"):
        p.add_argument(flag, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--booted", help=argparse.SUPPRESS)
    p.set_defaults(func=rollback_cmd)


def _targets(args: argparse.Namespace) -> Any:
    from kairos.agent.rollback import RollbackTargets, booted_slot, device_targets
    if args.state_dir is None:
        return device_targets()
    if not args.state_dir.is_dir():
        raise BadInput(f"{args.state_dir} is not a directory", "give the mounted COS_STATE")
    return RollbackTargets(args.state_dir, args.booted or booted_slot(), oem_dir=args.oem_dir,
                           lock_dir=args.lock_dir)


def rollback_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.rollback import Steps, rollback
    from kairos.agent.upgrade import reboot_after
    result = rollback(_targets(args), Steps.from_env())
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        now = result.active.version or result.active.image_id[:12] or "the passive image"
        was = result.passive.version or result.passive.image_id[:12] or "the previous one"
        sys.stdout.write(f"Rollback completed: active is now {now}, passive {was}.\n")
        if result.reboot_needed:
            sys.stdout.write("This system still runs the previous image; reboot to run "
                             f"{now}.\n")
    sys.stdout.flush()
    reboot_after("reboot" if args.reboot else "poweroff" if args.poweroff else "")
    return 0
