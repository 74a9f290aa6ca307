"""early-init mounts through mount(2) directly: binds, tmpfs with options, clean failures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kairos.early.apply import is_mounted, mount

pytestmark = pytest.mark.integration


def test_bind_tmpfs_and_overlay(tmp_path: Path) -> None:
    src, bind, tmp, ovl = tmp_path / "src", tmp_path / "bind", tmp_path / "tmp", tmp_path / "ovl"
    src.mkdir()
    (src / "f").write_text("hi")
    try:
        assert mount(str(src), str(bind), options="bind")
        assert (bind / "f").read_text() == "hi"
        assert mount("tmpfs", str(tmp), "tmpfs", "size=1%,mode=700,nosuid,nodev")
        opts = subprocess.run(["findmnt", "-no", "OPTIONS", str(tmp)], capture_output=True,
                              text=True, check=True).stdout.strip().split(",")
        assert "mode=700" in opts and "nosuid" in opts and "nodev" in opts
        (tmp / "u").mkdir()
        (tmp / "w").mkdir()
        assert mount("overlay", str(ovl), "overlay",
                     f"lowerdir={src},upperdir={tmp}/u,workdir={tmp}/w")
        (ovl / "new").write_text("x")
        assert not (src / "new").exists() and (tmp / "u/new").exists()
        assert is_mounted(str(ovl))
    finally:
        for p in (ovl, tmp, bind):
            subprocess.run(["umount", str(p)], check=False)


def test_a_failed_mount_returns_false(tmp_path: Path) -> None:
    assert mount("tmpfs", str(tmp_path / "x"), "tmpfs", "no-such-option=1") is False
    assert not is_mounted(str(tmp_path / "x"))
