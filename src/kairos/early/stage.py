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

from kairos.boot.live import LIVE_CONFIG, LIVE_OEM_DIR, LIVE_SENTINEL

if TYPE_CHECKING:
    from kairos.stages.runner import StageReport

log = logging.getLogger("kairos.stages")


def stage_dirs(root: Path, defaults: tuple[str, ...]) -> tuple[str, ...]:
    """Where the stages come from: the runner's `defaults` (/system/oem, /oem,
    /usr/local/cloud-config); on a live boot also the ISO's /config.yaml and oem/ directory
    (`kairos iso --cloud-config`, `--overlay-iso`), right after the image's own /system/oem,
    so that the medium's config acts as the machine's user config (/oem, later, still wins)."""
    if not (root / str(LIVE_SENTINEL).lstrip("/")).exists():
        return defaults
    live = (str(LIVE_CONFIG), str(LIVE_OEM_DIR))
    head = defaults[:1] if defaults[:1] == ("/system/oem",) else ()
    return (*head, *live, *defaults[len(head):])


def run_and_record(stage: str, root: Path = Path("/")) -> StageReport | None:
    """Run `stage` and record its report under ROOT/run/kairos/stages. Never raises; None
    when the runner itself broke (then the report recorded says so in a failed step)."""
    try:
        from kairos.stages import runner
        from kairos.stages.loader import DEFAULT_DIRS
    except Exception as exc:  # nothing to record with: the log has to do
        log.warning("stage %s: the stage runner cannot be loaded: %s", stage, exc)
        return None
    try:
        report: StageReport | None = runner.run_stage(  # logs its summary
            stage, root=root, dirs=stage_dirs(root, DEFAULT_DIRS))
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
