"""A bootable raw or qcow2 disk image from the factory's output directory.

The image is written under a temp name beside `out` and renamed at the very end, so `out` is
either the complete new image or untouched; the temp files go on any failure, Ctrl-C included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kairos.agent.install import InstallPlan, install, plan_install
from kairos.boot.grubcfg import GrubCfgOptions
from kairos.disk.sizes import parse_size
from kairos.errors import BadInput
from kairos.run import require, run
from kairos.ui import step

DiskFormat = Literal["raw", "qcow2"]
SLOT_NAME = "rootfs.squashfs"
RECOVERY_NAME = "recovery.squashfs"


@dataclass(frozen=True)
class DiskResult:
    path: Path
    format: DiskFormat
    plan: InstallPlan

    def summary(self) -> dict[str, object]:
        return {"output": str(self.path), "format": self.format, **self.plan.summary()}


def find_images(image_dir: Path) -> tuple[Path, Path | None]:
    """(slot image, recovery image or None) in a factory output directory."""
    if not image_dir.is_dir():
        raise BadInput(f"image directory {image_dir} does not exist",
                       "give the output directory of 'kairos build'")
    slot = image_dir / SLOT_NAME
    if not slot.is_file():
        raise BadInput(f"{image_dir} has no {SLOT_NAME}",
                       "give the output directory of 'kairos build'")
    recovery = image_dir / RECOVERY_NAME
    return slot, recovery if recovery.is_file() else None


def make_disk(
    image_dir: Path,
    out: Path,
    *,
    size: str | None = None,
    cloud_config: Path | None = None,
    fmt: DiskFormat = "raw",
    grub_options: Mapping[str, object] | None = None,
    cfg_options: GrubCfgOptions | None = None,
) -> DiskResult:
    """Write a bootable disk image of the slot in `image_dir` to `out`."""
    if fmt not in ("raw", "qcow2"):
        raise BadInput(f"unknown disk format {fmt!r}", "use raw or qcow2")
    if fmt == "qcow2":
        require("qemu-img")
    out = out.absolute()
    if not out.parent.is_dir():
        raise BadInput(f"the directory of {out} does not exist", "create it first")
    if out.is_dir():
        raise BadInput(f"{out} is a directory", "give a file name for the disk image")
    slot, recovery = find_images(image_dir)
    plan = plan_install(
        slot,
        recovery_image=recovery,
        disk_size=parse_size(size) if size else None,
        cloud_configs=[cloud_config] if cloud_config else [],
        grub_options=grub_options or {},
        cfg_options=cfg_options,
    )
    tmp_raw = out.with_name(f".{out.name}.{os.getpid()}.raw.tmp")
    tmp_qcow = out.with_name(f".{out.name}.{os.getpid()}.qcow2.tmp")
    try:
        for stale in (tmp_raw, tmp_qcow):
            stale.unlink(missing_ok=True)
        install(plan, tmp_raw)
        final = tmp_raw
        if fmt == "qcow2":
            with step("converting to qcow2"):
                run(["qemu-img", "convert", "-O", "qcow2", str(tmp_raw), str(tmp_qcow)])
                _fsync(tmp_qcow)
            final = tmp_qcow
        os.replace(final, out)
        _fsync(out.parent)
    finally:
        tmp_raw.unlink(missing_ok=True)
        tmp_qcow.unlink(missing_ok=True)
    return DiskResult(out, fmt, plan)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
