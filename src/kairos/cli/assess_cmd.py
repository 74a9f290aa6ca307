"""`kairos assess [--json]`: the boot assessment the `kairos-boot-assessment` service runs on
every boot (agent/assess.py). Exit 0: this boot is good; 1: a check failed."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from kairos.errors import EXIT_FAILURE, BadInput, KairosError

log = logging.getLogger("kairos.assess")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "assess", help="run the health checks and mark this boot good (or go back)",
        description="What the kairos-boot-assessment service runs at every boot: settle a "
                    "failed upgrade (GRUB fell back: the failed image is recorded and swapped "
                    "out of active.img), run the health checks (health_checks in "
                    "cloud-config, executables in /usr/local/lib/kairos/health.d and "
                    "/oem/health.d), then mark this boot good, or, when the image is on "
                    "trial after an upgrade, reboot so GRUB counts the try. Exit code 0 "
                    "when the boot is good, 1 when a check failed.")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # Offline and test use: partitions mounted elsewhere; never reboots the host.
    for flag in ("--state-dir", "--persistent-dir", "--root", "--run-dir", "--config-root"):
        p.add_argument(flag, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--health-dir", type=Path, action="append", help=argparse.SUPPRESS)
    p.add_argument("--booted", choices=("active", "passive"), help=argparse.SUPPRESS)
    p.set_defaults(func=assess_cmd)


def _config(args: argparse.Namespace) -> Any:
    """The checks from cloud-config. One that cannot be read is a failed check, not no
    checks: a boot whose checks are unknown is not known to be good."""
    from kairos.agent.health import AssessmentConfig, parse_config
    from kairos.config.collect import MergedConfig, collect
    if args.state_dir is not None and args.config_root is None:
        return parse_config(MergedConfig().get)
    try:
        cfg = collect(args.config_root or Path("/"), fetch=False)
    except KairosError as exc:
        return AssessmentConfig(problems=(f"cloud-config: {exc.message}",))
    return parse_config(cfg.get)


def _targets(args: argparse.Namespace) -> Any:
    from kairos.agent import assess, health
    if args.state_dir is None:
        return assess.device_targets()
    if args.booted is None:
        raise BadInput("--state-dir needs --booted", "give --booted active or passive")
    dirs = tuple(args.health_dir) if args.health_dir is not None else health.HEALTH_DIRS
    return assess.Targets(args.state_dir, args.booted, root=args.root or Path("/"),
                          run_dir=args.run_dir or Path("/run"),
                          persistent_dir=args.persistent_dir, health_dirs=dirs,
                          trusted_uid=os.geteuid())


def _no_reboot() -> None:
    log.warning("not rebooting: the partitions are not this machine's (--state-dir)")


def _summary(result: Any) -> str:
    report = result.health
    results = report.results if report is not None else []
    if result.verdict == "good":
        line = f"Boot assessment: good ({len(results)} check(s) passed)"
    else:
        bad = [r for r in results if not r.ok]
        names = ", ".join(f"{r.name} ({r.error or f'exit code {r.exit_code}'})" for r in bad)
        line = f"Boot assessment: failed: {names}"
        if result.reboot:
            line += "; rebooting so GRUB counts the try of this new image"
    if result.settled:
        line += "\nThe upgraded image failed its boot assessment: it is passive now, the " \
                "previous image active (see kairos state)"
    return line + "\n"


def assess_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.assess import assess, request_reboot
    targets = _targets(args)
    if targets is None:
        msg = "this system did not boot from a slot (active or passive): nothing to assess"
        if args.json:
            sys.stdout.write(json.dumps({"verdict": "skipped", "reason": msg}) + "\n")
        else:
            sys.stdout.write(msg + "\n")
        return 0
    reboot = _no_reboot if args.state_dir is not None else request_reboot
    result = assess(targets, _config(args), reboot=reboot)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(_summary(result))
    sys.stdout.flush()
    return 0 if result.verdict == "good" else EXIT_FAILURE
