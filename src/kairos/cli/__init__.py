"""The one entry point `kairos` (alias `kairos-agent`): verbs only, no logic.

Each module named in VERB_MODULES has `register(subparsers)` that adds its verbs and sets
`func` on them: a callable taking the parsed args and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from kairos import __version__
from kairos.errors import EXIT_BAD_INPUT, EXIT_FAILURE, KairosError
from kairos.ui import setup_logging

VERB_MODULES: tuple[str, ...] = (
    "kairos.cli.build_cmd",
    "kairos.cli.disk_cmd",
    "kairos.cli.iso_cmd",
    "kairos.cli.netboot_cmd",
    "kairos.cli.install_cmd",
    "kairos.cli.vm_cmd",
    "kairos.cli.state_cmd",
    "kairos.cli.config_cmd",
    "kairos.cli.stages_cmd",
    "kairos.cli.bootentry_cmd",
    "kairos.cli.upgrade_cmd",
    "kairos.cli.sign_cmd",
    "kairos.cli.rollback_cmd",
    "kairos.cli.reset_cmd",
    "kairos.cli.assess_cmd",
    "kairos.cli.provider_cmd",
    "kairos.cli.kubeconfig_cmd",
)
# Which module registers each verb: a device runs `kairos run-stage` several times per boot
# under a slow CPU, so only the chosen verb's module is imported.
VERB_OWNERS: dict[str, str] = {
    "build": "kairos.cli.build_cmd",
    "disk": "kairos.cli.disk_cmd",
    "iso": "kairos.cli.iso_cmd",
    "netboot": "kairos.cli.netboot_cmd",
    "install": "kairos.cli.install_cmd",
    "manual-install": "kairos.cli.install_cmd",
    "interactive-install": "kairos.cli.install_cmd",
    "vm": "kairos.cli.vm_cmd",
    "state": "kairos.cli.state_cmd",
    "config": "kairos.cli.config_cmd",
    "validate": "kairos.cli.config_cmd",
    "print-schema": "kairos.cli.config_cmd",
    "run-stage": "kairos.cli.stages_cmd",
    "bootentry": "kairos.cli.bootentry_cmd",
    "upgrade": "kairos.cli.upgrade_cmd",
    "sign": "kairos.cli.sign_cmd",
    "rollback": "kairos.cli.rollback_cmd",
    "reset": "kairos.cli.reset_cmd",
    "assess": "kairos.cli.assess_cmd",
    "provider": "kairos.cli.provider_cmd",
    "kubeconfig": "kairos.cli.kubeconfig_cmd",
}

log = logging.getLogger("kairos")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage errors: one line and exit 2, like our BadInput.
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The verb modules to import: only the verb's own when argv names one, else all."""
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if words and words[0] in VERB_OWNERS:
        return (VERB_OWNERS[words[0]],)
    return VERB_MODULES


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="kairos", description="Build, install and run an immutable edge OS.")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    parser.add_argument("--version", action="version", version=f"kairos {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name in _modules_for(argv) if argv is not None else VERB_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    setup_logging(args.debug)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(func(args) or 0)
    except KairosError as exc:
        if args.debug:
            raise
        exc.report("kairos: error")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("kairos: interrupted\n")
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        sys.stderr.write(f"kairos: internal error: {type(exc).__name__}: {exc}\n"
                         "  hint: run again with --debug for a traceback and report it\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
