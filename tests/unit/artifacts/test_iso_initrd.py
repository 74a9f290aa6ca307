"""The initrd's side of a live boot: the modules a CD needs, and where it finds the slot image
on the medium (initrd-init.sh's live_image, run by a real shell)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.initrd import APPLETS, WANTED_MODULES
from kairos.artifacts.iso import live_cmdline

INIT = Path(__file__).resolve().parents[3] / "src/kairos/artifacts/data/initrd-init.sh"


def test_the_initrd_can_reach_a_cd_and_read_iso9660() -> None:
    for module in ("ahci", "sr_mod", "cdrom", "isofs", "loop", "squashfs", "usb_storage"):
        assert module in WANTED_MODULES
    assert {"findfs", "mount", "mkdir", "switch_root"} <= set(APPLETS)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(("live_dir", "image", "path"), [
    ("/", "rootfs.squashfs", "/live/rootfs.squashfs"),
    ("", "rootfs.squashfs", "/live/rootfs.squashfs"),
    ("/LiveOS/", "squashfs.img", "/live/LiveOS/squashfs.img"),
    ("LiveOS", "squashfs.img", "/live/LiveOS/squashfs.img"),
])
def test_live_image_path(live_dir: str, image: str, path: str) -> None:
    script = f'. "{INIT}"; live_image "$1" "$2"'
    out = subprocess.run(["sh", "-c", script, "sh", live_dir, image], check=True,
                         capture_output=True, text=True, env={"KAIROS_INITRD_LIB": "1"}).stdout
    assert out.strip() == path


def test_the_initrd_reads_the_isos_command_line() -> None:
    text = INIT.read_text()
    for token in live_cmdline().split()[:3]:  # root=live:CDLABEL=…, rd.live.dir, squashimg
        key = token.split("=", 1)[0] if not token.startswith("root=") else "root=live:CDLABEL"
        assert f"{key}=*)" in text, key
    assert "/sysroot/run/initramfs/live" in text  # boot/live.py's LIVE_DIR
