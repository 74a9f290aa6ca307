"""early-init mounts through mount(2) directly: binds, tmpfs with options, clean failures,
a user's custom paths (install.bind_mounts / ephemeral_mounts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kairos.early.apply import apply_bind, is_mounted, mount, mount_overlay, mount_overlay_base
from kairos.early.plan import Bind, MountPlan, Overlay

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


def _umount_all(*paths: Path) -> None:
    for p in paths:
        subprocess.run(["umount", "-l", str(p)], check=False, capture_output=True)


def test_a_users_bind_is_made_where_missing_and_never_through_a_planted_link(
        tmp_path: Path) -> None:
    """install.bind_mounts: the mount point is made when missing (inside a writable parent),
    and a link a user planted on the way (in a home, which is persistent) is refused: no
    directory made and nothing mounted where it points."""
    persistent, home, target = tmp_path / "persistent", tmp_path / "home", tmp_path / "etc"
    home.mkdir()
    target.mkdir()
    (home / "evil").symlink_to(target)
    assert mount("tmpfs", str(persistent), "tmpfs", "size=4m,mode=755")
    good = Bind(str(home / "data"), str(persistent / ".state/home-data.bind"), user=True)
    evil = Bind(str(home / "evil/sub"), str(persistent / ".state/home-evil-sub.bind"), user=True)
    try:
        assert apply_bind(good) is True
        assert is_mounted(str(home / "data"))
        (home / "data/f").write_text("kept\n")
        assert (persistent / ".state/home-data.bind/f").read_text() == "kept\n"

        assert apply_bind(evil) is False
        assert not (target / "sub").exists() and not is_mounted(str(target / "sub"))
        assert not Path(evil.store).exists()
        ov = Overlay(str(home / "evil"), str(tmp_path / "u"), str(tmp_path / "w"), user=True)
        assert mount_overlay(ov) is False and not is_mounted(str(target))

        # a store that is a link on the persistent partition is not followed either
        Path(persistent / ".state/home-other.bind").symlink_to(target)
        other = Bind(str(home / "other"), str(persistent / ".state/home-other.bind"), user=True)
        assert apply_bind(other) is False and not is_mounted(str(home / "other"))
    finally:
        _umount_all(home / "data", persistent)


def test_a_users_ephemeral_path_inside_a_persistent_one(tmp_path: Path) -> None:
    """install.ephemeral_mounts inside a persistent path (the late mounts in depth order):
    the mount point is kept in the store, what is written below it is not."""
    base, store, opt = tmp_path / "overlay", tmp_path / "store", tmp_path / "opt"
    store.mkdir()
    opt.mkdir()
    scratch = opt / "scratch"
    plan = MountPlan(overlay_base=str(base), overlay_size="4m",
                     binds=(Bind(str(opt), str(store)),),
                     ephemerals=(Overlay(str(scratch), f"{base}/opt-scratch/.overlay/upper",
                                         f"{base}/opt-scratch/.overlay/work", user=True),))
    assert mount_overlay_base(plan)
    try:
        done = [apply_bind(m) if isinstance(m, Bind) else mount_overlay(m)
                for m in plan.late_mounts()]
        assert done == [True, True]
        (scratch / "f").write_text("gone\n")
        (opt / "kept").write_text("kept\n")
        assert (store / "scratch").is_dir() and not (store / "scratch/f").exists()
        assert (store / "kept").read_text() == "kept\n"
    finally:
        _umount_all(scratch, opt, base)
    assert not (store / "scratch/f").exists()
