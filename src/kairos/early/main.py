"""early-init: PID 1 right after the initrd's switch_root. Mounts the system's layout, runs the
`rootfs` and `initramfs` stages, writes the boot-mode sentinel, then execs the distro's init.

It must never stop a boot: every failure is logged and the boot goes on with less.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from kairos.early.apply import apply_plan, ensure_machine_id, find_label, is_mounted, mount
from kairos.early.plan import BootParams, make_plan, parse_cmdline, parse_env

log = logging.getLogger("kairos.early")
LAYOUT_ENV = "/run/cos/cos-layout.env"
LOG_DIR = "/run/kairos"


def _api_mounts() -> None:
    for src, target, fstype in (("proc", "/proc", "proc"), ("sysfs", "/sys", "sysfs"),
                                ("devtmpfs", "/dev", "devtmpfs"), ("tmpfs", "/run", "tmpfs")):
        if not is_mounted(target):
            mount(src, target, fstype)
    mount("tmpfs", "/tmp", "tmpfs", "mode=1777,nosuid,nodev")


def _setup_logging() -> None:
    os.makedirs(LOG_DIR, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(f"{LOG_DIR}/early-init.log")]
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.WARNING)
    handlers.append(console)
    logging.basicConfig(level=logging.DEBUG, handlers=handlers,
                        format="kairos-early: %(message)s")


def _run_stage(stage: str) -> None:
    try:
        from kairos.stages.runner import run_stage
        run_stage(stage, root=Path("/"))
    except Exception as exc:  # a bad config never stops a boot
        log.warning("stage %s failed: %s", stage, exc)


# Stages run by systemd units, checked once here: a unit whose stage has no step anywhere
# skips starting Python at all (the fs stage sits on the path to sysinit.target).
SKIPPABLE = ("fs",)
SKIP_DIR = "/run/kairos/skip-stage"


def mark_empty_stages(cmdline: str, root: Path = Path("/"), skip_dir: str = SKIP_DIR) -> list[str]:
    """Write SKIP_DIR/<stage> for each SKIPPABLE stage no file (or cmdline) has steps for."""
    if any(w in cmdline for w in ("stages", "config_url", "kairos.config", "cos.setup")):
        return []  # the kernel command line may add steps: let the unit look for itself
    try:
        from kairos.stages.loader import load_docs
        names = {name for doc in load_docs(root, None).docs
                 for name, steps in doc.stages.items() if steps}
    except Exception as exc:
        log.warning("cannot index stages: %s", exc)
        return []
    empty = [s for s in SKIPPABLE if not names & {s, f"{s}.before", f"{s}.after"}]
    os.makedirs(skip_dir, exist_ok=True)
    for stage in empty:
        Path(skip_dir, stage).write_text("no steps in any stage file at early boot\n")
    return empty


def _mount_oem(params: BootParams) -> bool:
    dev = find_label(params.oem_label, params.oem_timeout)
    if dev is None:
        log.warning("no %s partition found within %ss", params.oem_label, params.oem_timeout)
        return False
    return mount(dev, "/oem", options="rw")


def boot() -> dict[str, object]:
    timeline: dict[str, object] = {}
    t0 = time.monotonic()

    def mark(name: str) -> None:
        timeline[name] = round(time.monotonic() - t0, 3)

    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # the initrd exported PATH=/bin
    _api_mounts()
    _setup_logging()
    params = parse_cmdline(Path("/proc/cmdline").read_text())
    os.makedirs("/run/cos", exist_ok=True)
    Path(f"/run/cos/{params.mode}_mode").touch()
    timeline["mode"] = params.mode
    mark("api-mounts")
    oem = _mount_oem(params)
    timeline["oem"] = oem
    mark("oem")
    _run_stage("rootfs")
    mark("rootfs-stage")
    env = parse_env(Path(LAYOUT_ENV).read_text()) if os.path.exists(LAYOUT_ENV) else {}
    plan = make_plan(params, env)
    results = apply_plan(plan)
    timeline["mounts"] = results
    mark("layout")
    persistent = any(ok and t == "/usr/local" for t, ok in results.items())
    ensure_machine_id(persistent and params.mode in ("active", "passive"))
    _run_stage("initramfs")
    mark("initramfs-stage")
    timeline["skipped-stages"] = mark_empty_stages(Path("/proc/cmdline").read_text())
    return timeline


def main() -> None:
    timeline: dict[str, object] = {}
    try:
        timeline = boot()
    except Exception as exc:  # still hand over to init: a degraded boot beats none
        log.error("early-init failed: %s", exc)
        timeline["error"] = str(exc)
    with contextlib.suppress(OSError):
        Path(f"{LOG_DIR}/early-init.json").write_text(json.dumps(timeline, indent=1))
    init = parse_cmdline(Path("/proc/cmdline").read_text()).init
    logging.shutdown()
    os.execv(init, [init])
