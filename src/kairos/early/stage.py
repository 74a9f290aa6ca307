"""`/usr/lib/kairos/run-stage STAGE`: what the cos-setup-* units run at boot.

The same runner as `kairos run-stage`, without the CLI around it: at boot every module
imported costs time (seconds under emulation). A stage never fails its unit or service — a bad
config must not stop a device, and a failed unit would say less than the report — but every
run leaves its report in /run/kairos/stages/<stage>.json, failed steps included, and
`kairos state` shows them. early-init records its stages (rootfs, initramfs, fs) the same way.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kairos.stages.runner import StageReport

log = logging.getLogger("kairos.stages")


def run_and_record(stage: str, root: Path = Path("/")) -> StageReport | None:
    """Run `stage` and record its report under ROOT/run/kairos/stages. Never raises; None
    when the runner itself broke (then the report recorded says so in a failed step)."""
    try:
        from kairos.stages import runner
    except Exception as exc:  # nothing to record with: the log has to do
        log.warning("stage %s: the stage runner cannot be loaded: %s", stage, exc)
        return None
    try:
        report: StageReport | None = runner.run_stage(stage, root=root)  # logs its summary
    except Exception as exc:  # a bad config never fails a boot unit
        log.warning("stage %s: %s", stage, exc)
        report = None
        runner.save_report(runner.crashed_report(stage, exc), root)
    else:
        assert report is not None
        runner.save_report(report, root)
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: run-stage STAGE\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    run_and_record(args[0])
    return 0
