"""`kairos state [--json]` and `kairos state get KEY`: the running device's boot, partitions,
slot images and boot assessment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from kairos.agent.state import detect_state, format_value, query


def register(sub: Any) -> None:
    p = sub.add_parser(
        "state", help="show the running system's boot mode, partitions, version and images",
        description="Report what this device booted (active_boot, passive_boot, "
                    "recovery_boot, livecd_boot, autoreset_boot or unknown), its Kairos "
                    "partitions and /etc/kairos-release, as kairos-agent state does, and "
                    "under 'images' what each slot file (active, passive, recovery) holds: "
                    "version, source, OCI digest, sha256, from the records on its partition, "
                    "and under 'assessment' the boot assessment: the image on trial and its "
                    "tries, the image GRUB refuses, the images that failed, whether this "
                    "device runs the previous image after a failed upgrade (upgrade_failure) "
                    "and this boot's verdict and checks.")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.set_defaults(func=show_state)
    actions = p.add_subparsers(dest="state_action", metavar="ACTION")
    get = actions.add_parser("get", help="print one value, e.g. boot, oem.mount_point or "
                                         "images.passive.version")
    get.add_argument("key", help="a field name; nested fields with dots (kairos.version, "
                                 "images.active.digest)")
    get.set_defaults(func=get_state)


def show_state(args: argparse.Namespace) -> int:
    data = detect_state(args.root).to_dict()
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return 0


def get_state(args: argparse.Namespace) -> int:
    data = detect_state(args.root).to_dict()
    sys.stdout.write(format_value(query(data, args.key)) + "\n")
    return 0
