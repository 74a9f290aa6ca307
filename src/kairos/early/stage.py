"""`/usr/lib/kairos/run-stage STAGE`: what the cos-setup-* units run at boot.

The same runner as `kairos run-stage`, without the CLI around it: at boot every module
imported costs time (seconds under emulation), and a stage must never fail the unit — its
failures are logged, the boot goes on.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: run-stage STAGE\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        from kairos.stages.runner import run_stage
        run_stage(args[0], root=Path("/"))  # it logs its own summary
    except Exception as exc:  # a bad config never fails a boot unit
        logging.getLogger("kairos.stages").warning("stage %s: %s", args[0], exc)
    return 0
