"""A hostile base tree (absolute links pointing out of it) against the real mounts and the
real kairosify; and temp dirs that never delete through a mount that would not go."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.disk import mounts
from kairos.disk.mounts import chroot_mounts, tempdir
from kairos.factory.kairosify import kairosify
from kairos.factory.release import Release
from tests.helpers import CACHE_DIR

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, chroot)")


@pytest.fixture
def host_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The stand-in for the build host, where the tree's links point. Not under a directory
    the tree links itself (a tree's `tmp -> /tmp/…` would be a link to itself), nor where
    kairosify cleans (tmp, var/tmp, run)."""
    parent = "/var/tmp" if "chroot" in request.node.name else "/dev/shm"
    path = Path(tempfile.mkdtemp(prefix="kairos-host-", dir=parent))
    try:
        yield path
    finally:
        mounts.unmount_below(path)
        shutil.rmtree(path)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return [line.split()[4] for line in fh]


def below(points: list[str], top: Path) -> list[str]:
    real = os.path.realpath(top)
    return [m for m in points if m == real or m.startswith(real + "/")]


def snapshot(top: Path) -> dict[str, str]:
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(top))
            if p.is_symlink():
                seen[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                seen[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                seen[rel] = "dir"
    return seen


def test_chroot_mounts_stay_inside_a_hostile_tree(tmp_path: Path, host_dir: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("proc", "sys", "dev", "run", "tmp"):
        (host_dir / name).mkdir()
        (host_dir / name / "host-file").write_text("mine\n")
        (root / name).symlink_to(host_dir / name)  # absolute: out of the tree, onto the host
    before = snapshot(host_dir)
    with chroot_mounts(root):
        points = mount_points()
        assert below(points, host_dir) == [], "a mount landed on the build host"
        inside = below(points, root)
        inner = root / str(host_dir).lstrip("/")
        for name in ("proc", "sys", "dev", "dev/pts", "run", "tmp"):
            assert str(inner / name) in inside, name
        assert (inner / "proc/self/mountinfo").is_file()
    assert below(mount_points(), root) == [] and below(mount_points(), host_dir) == []
    assert snapshot(host_dir) == before


def test_temp_dir_never_deletes_through_a_mount_left_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unmount that failed (even lazily) leaves the mount: the temp dir's removal must
    skip it, whether it is another filesystem (tmpfs) or a bind mount of the same one."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me\n")
    monkeypatch.setattr(mounts, "unmount_below", lambda path: None)
    try:
        with tempdir(parent=tmp_path) as work:
            (work / "tmpfs").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(work / "tmpfs")], check=True)
            (work / "tmpfs/on-tmpfs").write_text("keep me too\n")
            (work / "bind").mkdir()
            subprocess.run(["mount", "--bind", str(precious), str(work / "bind")], check=True)
            (work / "scratch").write_text("x\n")
        assert (precious / "data").read_text() == "keep me\n"
        assert (work / "tmpfs/on-tmpfs").read_text() == "keep me too\n"
        assert not (work / "scratch").exists()
    finally:
        monkeypatch.undo()
        mounts.unmount_below(tmp_path)
    assert below(mount_points(), tmp_path) == []


def _cached_base() -> Path | None:
    for tree in sorted(Path(CACHE_DIR).glob("steps/base-*/tree")):
        if (tree / "usr/bin/python3").exists() and (tree / "boot").is_dir():
            return tree
    return None


def test_real_kairosify_on_a_hostile_copy_of_a_real_tree(tmp_path: Path, host_dir: Path) -> None:
    base = _cached_base()
    if base is None:
        pytest.skip(f"no cached Debian base in {CACHE_DIR} (run kairos build once)")
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(root)], check=True)
    inner = root / str(host_dir).lstrip("/")
    inner.mkdir(parents=True)
    shutil.move(root / "boot", inner / "boot")  # the kernel, reached through an absolute link
    (root / "boot").symlink_to(host_dir / "boot")
    for rel, text in (("boot/vmlinuz-0-host", "host kernel\n"), ("hostname", "buildhost\n"),
                      ("release", "HOST\n"), ("log/syslog", "host log\n")):
        (host_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (host_dir / rel).write_text(text)
    for rel, target in (("etc/hostname", "hostname"), ("etc/kairos-release", "release")):
        (root / rel).unlink(missing_ok=True)
        (root / rel).symlink_to(host_dir / target)
    shutil.rmtree(root / "var/log")
    (root / "var/log").symlink_to(host_dir / "log")
    before = snapshot(host_dir)
    kairosify(root, Release(version="v9.9.9", flavor="debian", flavor_release="12"),
              1_700_000_000)
    assert snapshot(host_dir) == before, "kairosify changed the build host"
    assert (inner / "boot/initrd").stat().st_size > 100_000
    assert (inner / "boot/vmlinuz").stat().st_size > 1_000_000
    assert (root / "etc/hostname").read_text() == "localhost\n"  # replaced: its link led nowhere
    assert 'KAIROS_VERSION="v9.9.9"' in (root / "etc/kairos-release").read_text()
