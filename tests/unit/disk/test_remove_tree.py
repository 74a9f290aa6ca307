"""Deleting a temp dir never deletes through a mount point that would not go away. The real
mounts are in tests/integration/test_hostile_base.py; here the mount table is a stand-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kairos.disk import mounts
from kairos.disk.mounts import remove_tree, tempdir


def test_removes_a_plain_tree_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    top = tmp_path / "top"
    (top / "a/b").mkdir(parents=True)
    (top / "a/b/f").write_text("x")
    (top / "a/link").symlink_to(outside)
    assert remove_tree(top) is True
    assert not top.exists()
    assert (outside / "keep").exists()
    assert remove_tree(top) is True  # already gone


def test_a_mount_that_stays_is_left_with_its_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(mounts, "unmount_below", lambda path: None)  # the unmount failed
    with tempdir(parent=tmp_path) as work:
        (work / "mnt/data").mkdir(parents=True)
        (work / "mnt/data/precious").write_text("x")
        (work / "scratch").write_text("x")
        mounted = str((work / "mnt").resolve())
        monkeypatch.setattr(mounts, "mounts_below", lambda path: [mounted])
    assert (work / "mnt/data/precious").exists()
    assert "still mounted" in caplog.text
    assert not (work / "scratch").exists()
    monkeypatch.setattr(mounts, "mounts_below", lambda path: [])
    assert remove_tree(work) is True
