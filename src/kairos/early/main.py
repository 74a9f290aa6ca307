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
from kairos.early.custom import UserMounts, mentions, user_mounts
from kairos.early.plan import (
    BOOTED_IMAGE,
    BootParams,
    MountPlan,
    booted_params,
    make_plan,
    parse_cmdline,
    parse_env,
)
from kairos.early.stage import run_and_record

log = logging.getLogger("kairos.early")
LAYOUT_ENV = "/run/cos/cos-layout.env"
# Kairos's installer writes CUSTOM_BIND_MOUNTS / CUSTOM_EPHEMERAL_MOUNTS here (a rootfs stage).
CUSTOM_LAYOUT_ENV = "/run/cos/custom-layout.env"
LOG_DIR = "/run/kairos"
# The collector's directories (config/collect.py CONFIG_DIRS, without the live medium: a live
# boot takes no custom mounts); only looked at for the two install keys.
CONFIG_DIRS = ("/etc/kairos", "/usr/local/cloud-config", "/oem")


def _api_mounts() -> None:
    for src, target, fstype in (("proc", "/proc", "proc"), ("sysfs", "/sys", "sysfs"),
                                ("devtmpfs", "/dev", "devtmpfs"), ("tmpfs", "/run", "tmpfs")):
        if not is_mounted(target):
            mount(src, target, fstype)
    mount("tmpfs", "/tmp", "tmpfs", "mode=1777,nosuid,nodev")


def kmsg(text: str) -> None:
    """One line in the kernel log: it gets the kernel's timestamp on the console and in dmesg,
    which puts early-init's phases on the same clock as the rest of the boot."""
    with contextlib.suppress(OSError), open("/dev/kmsg", "w") as f:
        f.write(f"<6>kairos-early: {text}\n")


def _setup_logging() -> None:
    os.makedirs(LOG_DIR, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(f"{LOG_DIR}/early-init.log")]
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.WARNING)
    handlers.append(console)
    logging.basicConfig(level=logging.DEBUG, handlers=handlers,
                        format="kairos-early: %(message)s")


def _run_stage(stage: str) -> None:
    # a bad config never stops a boot; the report in /run/kairos/stages tells what failed
    run_and_record(stage, Path("/"))


# The fs stage runs "once local filesystems are mounted": here every one of them is mounted by
# early-init (the image has no fstab), so it runs right after the initramfs stage, in this
# warm interpreter, instead of a fresh Python in cos-setup-fs.service on the path to
# sysinit.target. The marker tells that unit it has nothing left to do.
SKIP_DIR = "/run/kairos/skip-stage"


def run_fs_stage(skip_dir: str = SKIP_DIR, root: Path = Path("/")) -> bool:
    if run_and_record("fs", root) is None:  # the runner broke: the unit tries again
        log.warning("stage fs failed in early-init; cos-setup-fs runs it again")
        return False
    os.makedirs(skip_dir, exist_ok=True)
    Path(skip_dir, "fs").write_text("the fs stage ran in early-init\n")
    return True


def _mount_oem(params: BootParams) -> bool:
    if params.mode == "live":
        # A live boot must not touch the disks of the machine it runs on (COS_OEM may be an
        # installed system's): /oem is RAM, where the datasource can still put user-data.
        return mount("tmpfs", "/oem", "tmpfs", "mode=755,nosuid,nodev")
    dev = find_label(params.oem_label, params.oem_timeout)
    if dev is None:
        log.warning("no %s partition found within %ss", params.oem_label, params.oem_timeout)
        return False
    return mount(dev, "/oem", options="rw")


def _read_env(path: Path) -> dict[str, str]:
    try:
        return parse_env(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def _config_texts(root: Path) -> list[str]:
    """The text of every config file the collector would read (and the command line)."""
    texts = [(root / "proc/cmdline").read_text(errors="replace")
             if (root / "proc/cmdline").is_file() else ""]
    for top in CONFIG_DIRS:
        for dirpath, _dirs, files in os.walk(root / top.lstrip("/")):
            for name in files:
                path = Path(dirpath, name)
                with contextlib.suppress(OSError):
                    if name.endswith((".yaml", ".yml")) and path.stat().st_size <= 1 << 20:
                        texts.append(path.read_text(errors="replace"))
    return texts


def installed_config(root: Path = Path("/")) -> dict[str, object]:
    """The `install:` block of the collected cloud-config, read only when some config file
    names bind_mounts or ephemeral_mounts (the collector costs imports at every boot).
    config_url is not fetched: there is no network yet."""
    if not mentions(_config_texts(root)):
        return {}
    try:
        from kairos.config.collect import collect

        merged = collect(root, fetch=False)
    except Exception as exc:  # a config that cannot be merged still boots
        log.warning("custom mounts: the cloud-config cannot be read (%s); only "
                    "CUSTOM_BIND_MOUNTS / CUSTOM_EPHEMERAL_MOUNTS apply", exc)
        return {}
    block = merged.data.get("install")
    return block if isinstance(block, dict) else {}


def find_user_mounts(params: BootParams, env: dict[str, str],
                     root: Path = Path("/")) -> UserMounts:
    """The custom paths of this boot: the config's install keys, then Kairos's env files."""
    if params.mode in ("live", "recovery", "autoreset"):
        return UserMounts()
    custom_env = _read_env(root / CUSTOM_LAYOUT_ENV.lstrip("/"))
    return user_mounts(installed_config(root), custom_env, env)


def plan_boot(params: BootParams, root: Path = Path("/")) -> MountPlan:
    """This boot's mount plan, after the rootfs stage wrote the layout env; every custom
    path skipped gets its one line in the boot log."""
    env = _read_env(root / LAYOUT_ENV.lstrip("/"))
    plan = make_plan(params, env, find_user_mounts(params, env, root))
    for line in plan.warnings:
        log.warning("%s", line)
    for line in plan.notes:
        log.info("%s", line)
    return plan


def booted_mode(params: BootParams, record: str = BOOTED_IMAGE) -> BootParams:
    """The boot mode of the image the initrd mounted, which differs from the command line's
    after a boot id mismatch (the initrd said so on the console)."""
    try:
        booted = Path(record).read_text()
    except OSError:
        return params
    found = booted_params(params, booted)
    if found != params:
        log.warning("the initrd booted %s, not %s (boot id mismatch): this is a %s boot",
                    found.image, params.image, found.mode)
    return found


def boot() -> dict[str, object]:
    timeline: dict[str, object] = {}
    t0 = time.monotonic()

    def mark(name: str) -> None:
        timeline[name] = round(time.monotonic() - t0, 3)

    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # the initrd exported PATH=/bin
    _api_mounts()
    kmsg("started")
    _setup_logging()
    params = booted_mode(parse_cmdline(Path("/proc/cmdline").read_text()))
    os.makedirs("/run/cos", exist_ok=True)
    Path(f"/run/cos/{params.mode}_mode").touch()
    timeline["mode"] = params.mode
    timeline["image"] = params.image
    mark("api-mounts")
    oem = _mount_oem(params)
    timeline["oem"] = oem
    mark("oem")
    _run_stage("rootfs")
    mark("rootfs-stage")
    plan = plan_boot(params)
    results = apply_plan(plan)
    timeline["mounts"] = results
    mark("layout")
    persistent = any(ok and t == "/usr/local" for t, ok in results.items())
    ensure_machine_id(persistent and params.mode in ("active", "passive"))
    _run_stage("initramfs")
    mark("initramfs-stage")
    if params.mode != "unknown":
        timeline["fs-stage-early"] = run_fs_stage()
        mark("fs-stage")
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
    phases = " ".join(f"{k}={v}" for k, v in timeline.items() if isinstance(v, float))
    kmsg(f"handing over to {init} ({phases})")
    logging.shutdown()
    os.execv(init, [init])
