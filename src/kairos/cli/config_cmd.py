"""Verbs for cloud-config: `config show|get|validate`, `validate` and `print-schema`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from kairos.config.collect import MergedConfig, collect
from kairos.config.fetch import fetch_text, is_url
from kairos.config.paths import parse_path, resolve
from kairos.config.render import render_yaml, scalar_text
from kairos.config.schema import schema_text
from kairos.config.validate import STAGE, ValidationResult, validate_file, validate_text
from kairos.errors import EXIT_BAD_INPUT, BadInput


def _add_collect_args(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `config --root X show` and `config show --root X` both work (a subparser's
    # defaults would otherwise overwrite what was given before the action).
    quiet = argparse.SUPPRESS
    parser.add_argument("--root", default=quiet, metavar="DIR",
                        help="read the config of the system mounted at DIR (default: /)")
    parser.add_argument("--cmdline", default=quiet, metavar="TEXT",
                        help="use TEXT as the kernel command line instead of DIR/proc/cmdline")
    parser.add_argument("--no-fetch", action="store_true", default=quiet,
                        help="do not fetch config_url")
    parser.add_argument("--json", action="store_true", default=quiet, help="print JSON")


def _add_validate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE|URL", help="a cloud-config file or URL")
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings (e.g. unknown keys) as errors")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: Any) -> None:
    config = sub.add_parser("config", help="show, query and validate cloud-config",
                            description="Show the merged cloud-config of this system (the "
                            "default), query one key, or validate a file.")
    _add_collect_args(config)
    config.set_defaults(func=cmd_show)
    actions = config.add_subparsers(dest="config_action", metavar="ACTION")

    show = actions.add_parser("show", help="print the merged config with the source of each key")
    _add_collect_args(show)
    show.set_defaults(func=cmd_show)

    get = actions.add_parser("get", help="print one key of the merged config")
    get.add_argument("key", metavar="KEY", help="a dotted or indexed path: install.device, "
                     "users[0].name, users.0.name")
    _add_collect_args(get)
    get.set_defaults(func=cmd_get)

    check = actions.add_parser("validate", help="check a file or URL against the schema "
                               "(exit 0 valid, 2 invalid)")
    _add_validate_args(check)
    check.set_defaults(func=cmd_validate)

    alias = sub.add_parser("validate", help="check a cloud-config file or URL (= config validate)")
    _add_validate_args(alias)
    alias.set_defaults(func=cmd_validate)

    schema = sub.add_parser("print-schema", help="print the cloud-config JSON Schema")
    schema.set_defaults(func=cmd_print_schema)


def _collect(args: argparse.Namespace) -> MergedConfig:
    root = Path(getattr(args, "root", "/"))
    if not root.is_dir():
        raise BadInput(f"{root} is not a directory", "pass the root of a system with --root")
    return collect(root, cmdline=getattr(args, "cmdline", None),
                   fetch=not getattr(args, "no_fetch", False), validate=True)


def _print_warnings(merged: MergedConfig) -> None:
    for diag in merged.warnings:
        sys.stderr.write(f"{diag}\n")


def cmd_show(args: argparse.Namespace) -> int:
    merged = _collect(args)
    if getattr(args, "json", False):
        json.dump({"config": merged.data, "sources": merged.sources, "files": merged.files,
                   "warnings": [d.as_dict() for d in merged.warnings]},
                  sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    _print_warnings(merged)
    sys.stdout.write(render_yaml(merged.data, merged.sources, merged.files))
    return 0


def format_value(value: Any) -> str:
    """A scalar as plain text (strings unquoted), a map or list as YAML."""
    if isinstance(value, dict | list):
        text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
        return text.rstrip("\n")
    if isinstance(value, str):
        return value
    return scalar_text(value)


def cmd_get(args: argparse.Namespace) -> int:
    merged = _collect(args)
    found, value = resolve(merged.data, parse_path(args.key))
    if not found:
        raise BadInput(f"'{args.key}' is not set in the merged config",
                       "see the keys with 'kairos config show'")
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(format_value(value) + "\n")
    return 0


def _validate_source(source: str, strict: bool) -> ValidationResult:
    if is_url(source):
        return validate_text(fetch_text(source), source, strict=strict)
    return validate_file(source, strict=strict)


def _count(items: list[Any], word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    result = _validate_source(args.source, args.strict)
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        for diag in result.diagnostics:
            sys.stdout.write(f"{diag}\n")
        what = "stage file" if result.kind == STAGE else "cloud-config"
        if result.ok:
            extra = f" ({_count(result.warnings, 'warning')})" if result.warnings else ""
            sys.stdout.write(f"{result.file}: valid {what}{extra}\n")
        else:
            sys.stdout.write(f"{result.file}: invalid {what}: {_count(result.errors, 'error')}"
                             f", {_count(result.warnings, 'warning')}\n")
    return 0 if result.ok else EXIT_BAD_INPUT


def cmd_print_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0
