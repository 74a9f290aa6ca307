"""`kairos bootentry [--select ENTRY] [--json]`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from kairos.agent.bootentry import OEM_GRUBENV, list_entries, select


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bootentry", help="list boot entries or select one for the next boot")
    p.add_argument("--select", metavar="ENTRY", help="cos, fallback, recovery or statereset")
    p.add_argument("--grub-env", type=Path, default=OEM_GRUBENV, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_bootentry)


def run_bootentry(args: argparse.Namespace) -> int:
    entries = select(args.select, args.grub_env) if args.select else list_entries(args.grub_env)
    if args.json:
        print(json.dumps(asdict(entries)))
        return 0
    for e in entries.entries:
        marks = [m for m, on in (("default", e == entries.default), ("next boot", e == entries.next))
                 if on]
        print(f"{e}" + (f"  ({', '.join(marks)})" if marks else ""))
    return 0
