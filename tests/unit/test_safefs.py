"""The one resolver for trees we do not own: links followed inside root, untrusted ones refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kairos.safefs import (
    UnsafePath,
    open_dir,
    read_bytes,
    resolve_in_root,
    write_atomic,
    write_file_atomic,
)


def test_resolve_keeps_absolute_links_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").symlink_to("/usr/local/etc/hosts")
    (root / "up").symlink_to("../../../..")
    assert resolve_in_root(root, "/etc/hosts") == root / "usr/local/etc/hosts"
    assert resolve_in_root(root, "/up/etc") == root / "etc"
    assert resolve_in_root(root, "/etc/hosts", follow_last=False) == root / "etc/hosts"


def test_write_follows_trusted_link_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/etc").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/hosts").symlink_to("/usr/local/etc/hosts")
    host_file = tmp_path / "usr-local-etc-hosts"  # what a host-following write would hit
    write_atomic(root, "/etc/hosts", b"127.0.0.1 x\n")
    assert (root / "usr/local/etc/hosts").read_bytes() == b"127.0.0.1 x\n"
    assert (root / "etc/hosts").is_symlink()
    assert not host_file.exists()


def test_absolute_link_never_reaches_the_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc").symlink_to(str(outside))  # absolute: means <root>/<outside> inside root
    with pytest.raises(FileNotFoundError):
        write_atomic(root, "/etc/passwd", b"x")
    write_atomic(root, "/etc/passwd", b"x", create_parents=True)
    assert not (outside / "passwd").exists()
    assert (root / str(outside).lstrip("/") / "passwd").read_bytes() == b"x"


def test_dotdot_stops_at_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_atomic(root, "/../../escape", b"x")
    assert (root / "escape").exists()
    assert not (tmp_path / "escape").exists()


def test_untrusted_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "home/u/.ssh").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/shadow").write_text("root:hash:\n")
    (root / "home/u/.ssh/authorized_keys").symlink_to("/etc/shadow")
    with pytest.raises(UnsafePath, match="not followed"):
        write_atomic(root, "/home/u/.ssh/authorized_keys", b"key\n", follow="none")
    with pytest.raises(UnsafePath):
        read_bytes(root, "/home/u/.ssh/authorized_keys", follow="none")
    assert (root / "etc/shadow").read_text() == "root:hash:\n"


def test_hard_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "secret").write_text("keep\n")
    os.link(root / "secret", root / "d/f")
    write_atomic(root, "/d/f", b"new\n")
    assert (root / "secret").read_text() == "keep\n"
    assert (root / "d/f").read_bytes() == b"new\n"


def test_read_refuses_fifo(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "p")
    with pytest.raises(UnsafePath, match="regular file"):
        read_bytes(root, "/p")
    assert read_bytes(root, "/missing") is None


def test_write_modes_and_no_temp_left(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_atomic(root, "/a/b/secret", b"s", mode=0o600, create_parents=True, dir_mode=0o700)
    assert (root / "a/b/secret").stat().st_mode & 0o777 == 0o600
    assert (root / "a").stat().st_mode & 0o777 == 0o700
    write_atomic(root, "/a/b/secret", b"t", mode=None)
    assert (root / "a/b/secret").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (root / "a/b").iterdir()) == ["secret"]


def test_open_dir_creates_and_refuses_non_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("")
    with open_dir(root, "/x/y", create=True) as fd:
        assert os.fstat(fd).st_ino == (root / "x/y").stat().st_ino
    with pytest.raises(UnsafePath, match="not a directory"), open_dir(root, "/f/z"):
        pass


def test_write_file_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_file_atomic(target, b"{}", mode=0o640)
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o777 == 0o640
