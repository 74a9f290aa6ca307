"""`kairos run-stage STAGE`: run a cloud-config stage (STAGE.before, STAGE, STAGE.after).

Sources: the stage files, then the kernel command line (its config_url document and its
`stages.…=` dot notation); `--cmdline` replaces /proc/cmdline, `--cmdline ""` skips it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kairos.errors import BadInput

if TYPE_CHECKING:
    from kairos.stages.runner import UrlFetch


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run-stage",
        help="run a cloud-config stage from the stage files",
        description="Run STAGE.before, STAGE and STAGE.after from /system/oem, /oem and "
                    "/usr/local/cloud-config (below --root), then from the kernel command line: "
                    "the config at config_url= / kairos.config_url= and stages given as "
                    "stages.STAGE[0].PLUGIN...=VALUE. Give STAGE before the path options.",
    )
    p.add_argument("stage", metavar="STAGE", help="stage name, e.g. boot, network, initramfs")
    p.add_argument("--analyze", "-a", action="store_true",
                   help="only print the steps that would run, in order")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error at the first failing step or bad file")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="act on the system tree at DIR (default: /)")
    p.add_argument("--cloud-init-paths", nargs="+", action="extend", default=[], metavar="P",
                   help="more files or directories to read after the default ones")
    p.add_argument("--override-cloud-init-paths", nargs="+", action="extend", default=[],
                   metavar="P", help="read only these files or directories")
    p.add_argument("--cmdline", metavar="TEXT", default=None,
                   help="use TEXT as the kernel command line instead of ROOT/proc/cmdline "
                        "('' for none)")
    # defaults live in kairos.stages.runner.UrlFetch (short: a boot must not wait on them)
    p.add_argument("--url-timeout", type=_seconds, default=None, metavar="S",
                   help="seconds per try to fetch the command line's config_url (default 5)")
    p.add_argument("--url-tries", type=_tries, default=None, metavar="N",
                   help="tries to fetch the command line's config_url, 0 to not fetch it "
                        "(default 2)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_stage_cmd)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds from 0 to 600")
    return value


def _tries(text: str) -> int:
    if not text.isdigit() or int(text) > 10:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of tries from 0 to 10")
    return int(text)


def url_fetch(args: argparse.Namespace) -> UrlFetch:
    from kairos.stages.runner import UrlFetch

    default = UrlFetch()
    tries = default.tries if args.url_tries is None else args.url_tries
    return UrlFetch(timeout=args.url_timeout or default.timeout, tries=max(tries, 1),
                    delay=default.delay, enabled=tries > 0)


def _paths(values: list[str]) -> list[str]:
    # like Kairos's flag: repeated, or comma separated
    return [p for value in values for p in value.split(",") if p]


def stage_dirs(args: argparse.Namespace) -> list[str] | None:
    from kairos.stages.loader import DEFAULT_DIRS

    override = _paths(args.override_cloud_init_paths)
    if override:
        return override
    extra = _paths(args.cloud_init_paths)
    return [*DEFAULT_DIRS, *extra] if extra else None


def run_stage_cmd(args: argparse.Namespace) -> int:
    from kairos.stages.runner import plan_stage, run_stage

    root = Path(args.root)
    if not root.is_dir():
        raise BadInput(f"--root {args.root} is not a directory", "give an existing directory")
    dirs = stage_dirs(args)
    fetch = url_fetch(args)
    if args.analyze:
        steps = plan_stage(args.stage, root=root, dirs=dirs, cmdline=args.cmdline,
                           url_fetch=fetch)
        if args.json:
            json.dump([s.to_json() for s in steps], sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        if not steps:
            print(f"no steps for stage {args.stage}")
        for i, s in enumerate(steps, 1):
            plugins = ", ".join(s.plugins) or "nothing"
            # the source when the name does not already say it (named docs, cmdline, URLs)
            origin = "" if s.name.startswith(f"{s.source}.") else f"  from {s.source}"
            print(f"{i:3}. [{s.stage}] {s.name}  ({plugins}){origin}")
            for cond in s.conditions:
                print(f"       {cond.splitlines()[0]}")
        return 0
    report = run_stage(args.stage, root=root, dirs=dirs, strict=args.strict,
                       cmdline=args.cmdline, url_fetch=fetch)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    if args.stage == "reconcile":
        return reconcile_provider(root, strict=args.strict)
    return 0


def reconcile_provider(root: Path, *, strict: bool) -> int:
    """The reconcile stage also re-applies the Kubernetes provider (here, not in the stages
    package: the provider sits above it). Only on an image that carries Kubernetes; a
    failure is one line, and fails the command only with --strict, like a failed step."""
    from kairos.errors import KairosError
    from kairos.provider.manifest import MANIFEST
    if not (root / MANIFEST.lstrip("/")).is_file():
        return 0
    from kairos.provider.apply import apply
    try:
        apply(root)
    except KairosError as exc:
        sys.stderr.write(f"kairos: kubernetes provider: {exc.message}\n")
        return exc.exit_code if strict else 0
    return 0
