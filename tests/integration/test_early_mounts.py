"""early-init mounts through mount(2) directly: binds, tmpfs with options, clean failures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kairos.early.apply import apply_bind, is_mounted, mount
from kairos.early.plan import Bind

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


def test_a_failed_first_seed_is_not_published_and_the_next_boot_seeds(tmp_path: Path) -> None:
    """The persistent partition is full on the first boot: `cp -a` fails half way. No store
    may appear (it would hold a partial copy for good), nothing is bound, and once there is
    room a later boot seeds and binds it."""
    image_dir, persistent = tmp_path / "image-etc-ssh", tmp_path / "persistent"
    image_dir.mkdir()
    (image_dir / "small").write_text("small\n")
    (image_dir / "big").write_bytes(b"x" * (2 << 20))
    persistent.mkdir()
    bind = Bind(path=str(image_dir), store=str(persistent / ".state" / "etc-ssh.bind"))
    assert mount("tmpfs", str(persistent), "tmpfs", "size=1m,mode=755")
    try:
        assert apply_bind(bind) is False
        assert not Path(bind.store).exists()
        assert not Path(bind.store + ".new").exists(), "the partial copy is removed"
        assert not is_mounted(str(image_dir))
        assert (image_dir / "small").read_text() == "small\n"  # the image's path, untouched

        # the next boot, with room on the partition
        subprocess.run(["mount", "-o", "remount,size=8m", str(persistent)], check=True)
        assert apply_bind(bind) is True
        assert is_mounted(str(image_dir))
        store = Path(bind.store)
        assert (store / "big").stat().st_size == 2 << 20
        (image_dir / "written").write_text("kept\n")  # writes go to the store
        assert (store / "written").read_text() == "kept\n"
    finally:
        subprocess.run(["umount", str(image_dir)], check=False)
        subprocess.run(["umount", str(persistent)], check=False)
